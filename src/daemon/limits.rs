//! An agent's `limits` as they are enforced, and how: the rlimits (each
//! lowered to the daemon's own hard limit, so that an agent that can edit
//! `cell.json` never raises one), the cgroup files `memory.max`,
//! `pids.max` and `cpu.max` of the agent's own cgroup where the daemon
//! has cgroups and the controllers are enabled, and for a `podman` agent
//! podman's `--ulimit`, `--memory`, `--pids-limit` and `--cpus`. Each
//! limit says whether it holds, so that `status` can tell an operator a
//! memory limit is only written down.

use std::path::Path;

use crate::cell::manifest::CGROUP_LIMIT_NAMES;
pub use crate::records::Enforced;

/// How the instance's limits are applied.
#[derive(Debug, Clone, Copy)]
pub enum Means<'a> {
    /// rlimits in the child; cgroup files in this group, if it has one.
    Process(Option<&'a Path>),
    /// Everything through podman's options.
    Podman,
}

/// What each of `limits` (name, value) comes to under `means`. `hard` is
/// the daemon's own hard limit of an rlimit (`None`: not an rlimit).
pub fn plan(
    limits: &[(String, u64)],
    means: Means<'_>,
    hard: impl Fn(&str) -> Option<u64>,
) -> Vec<Enforced> {
    limits
        .iter()
        .map(|(name, asked)| {
            let cgroup_file = CGROUP_LIMIT_NAMES.contains(&name.as_str());
            let (value, mut note) = match hard(name) {
                Some(hard) if *asked > hard => (
                    hard,
                    Some(format!(
                        "lowered from {asked}: above the daemon's own limit or the operator's"
                    )),
                ),
                _ => (*asked, None),
            };
            let by = match (means, cgroup_file) {
                (Means::Podman, _) => "podman",
                (Means::Process(_), false) => "rlimit",
                (Means::Process(Some(group)), true) if group.join(name).exists() => "cgroup",
                (Means::Process(Some(group)), true) => {
                    note = Some(format!(
                        "the {} controller is not enabled for the agent's cgroup {}",
                        controller(name),
                        group.display()
                    ));
                    "none"
                }
                (Means::Process(None), true) => {
                    note = Some("the agent has no cgroup of its own".into());
                    "none"
                }
            };
            Enforced {
                name: name.clone(),
                value,
                by: by.into(),
                note,
            }
        })
        .collect()
}

/// The controller a cgroup limit file belongs to.
pub fn controller(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// The text a cgroup limit file takes for `value` (or, with `None`, no
/// limit).
pub fn cgroup_text(name: &str, value: Option<u64>) -> String {
    match (name, value) {
        ("cpu.max", Some(quota)) => format!("{quota} 100000"),
        ("cpu.max", None) => "max 100000".into(),
        (_, Some(v)) => v.to_string(),
        (_, None) => "max".into(),
    }
}

/// Writes the cgroup limits into the agent's group before it starts: the
/// limits it has, and "no limit" for the others (a limit removed from
/// `cell.json` does not outlive it). Files the group lacks (controller
/// not enabled) are skipped: [`plan`] says so.
pub fn apply_cgroup(group: &Path, limits: &[(String, u64)]) -> Result<(), String> {
    for name in CGROUP_LIMIT_NAMES {
        let file = group.join(name);
        if !file.exists() {
            continue;
        }
        let value = limits.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        std::fs::write(&file, cgroup_text(name, value))
            .map_err(|e| format!("cannot set {}: {e}", file.display()))?;
    }
    Ok(())
}

/// podman's options for the cgroup limits (its rlimits are `--ulimit`).
pub fn podman_args(limits: &[(String, u64)]) -> Vec<String> {
    limits
        .iter()
        .filter_map(|(name, v)| match name.as_str() {
            "memory.max" => Some(format!("--memory={v}b")),
            "pids.max" => Some(format!("--pids-limit={v}")),
            "cpu.max" => Some(format!("--cpus={}", *v as f64 / 100_000.0)),
            n if CGROUP_LIMIT_NAMES.contains(&n) => None,
            _ => Some(format!("--ulimit={name}={v}:{v}")),
        })
        .collect()
}

/// One line for people: `nofile=1024 (rlimit), memory.max=… (not
/// enforced: …)`.
pub fn describe(limits: &[Enforced]) -> String {
    limits
        .iter()
        .map(|l| {
            let value = if l.name == "cpu.max" {
                format!("{} CPUs", l.value as f64 / 100_000.0)
            } else {
                l.value.to_string()
            };
            match (l.by.as_str(), &l.note) {
                ("none", Some(why)) => format!("{}={value} (not enforced: {why})", l.name),
                ("none", None) => format!("{}={value} (not enforced)", l.name),
                (by, Some(note)) => format!("{}={value} ({by}; {note})", l.name),
                (by, None) => format!("{}={value} ({by})", l.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Vec<(String, u64)> {
        vec![
            ("nofile".into(), 1 << 40),
            ("memory.max".into(), 1 << 29),
            ("cpu.max".into(), 50_000),
        ]
    }

    #[test]
    fn rlimits_are_lowered_and_cgroup_files_hold_only_where_the_controller_is() {
        let group = tempfile::tempdir().unwrap();
        std::fs::write(group.path().join("memory.max"), "max\n").unwrap();
        let hard = |name: &str| (name == "nofile").then_some(4096);
        let plan = plan(&limits(), Means::Process(Some(group.path())), hard);
        assert_eq!(plan[0].value, 4096);
        assert_eq!(plan[0].by, "rlimit");
        assert!(plan[0].note.as_deref().unwrap().contains("lowered from"));
        assert_eq!(plan[1].by, "cgroup");
        assert_eq!(plan[2].by, "none");
        assert!(plan[2].note.as_deref().unwrap().contains("cpu controller"));
        let text = describe(&plan);
        assert!(text.contains("memory.max=536870912 (cgroup)"), "{text}");
        assert!(
            text.contains("cpu.max=0.5 CPUs (not enforced: the cpu controller"),
            "{text}"
        );
    }

    #[test]
    fn without_a_cgroup_no_cgroup_limit_holds() {
        let plan = plan(&limits(), Means::Process(None), |_| None);
        assert_eq!(plan[1].by, "none");
        assert_eq!(
            plan[1].note.as_deref(),
            Some("the agent has no cgroup of its own")
        );
        let podman = super::plan(&limits(), Means::Podman, |_| None);
        assert!(podman.iter().all(|l| l.by == "podman"));
    }

    #[test]
    fn cgroup_files_get_the_limit_or_no_limit() {
        let group = tempfile::tempdir().unwrap();
        for f in ["memory.max", "pids.max", "cpu.max"] {
            std::fs::write(group.path().join(f), "x").unwrap();
        }
        apply_cgroup(group.path(), &limits()).unwrap();
        let read = |f: &str| std::fs::read_to_string(group.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), "536870912");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "max", "a limit not asked for is lifted");
    }

    #[test]
    fn podman_gets_its_own_options() {
        assert_eq!(
            podman_args(&[
                ("nofile".into(), 64),
                ("memory.max".into(), 1024),
                ("pids.max".into(), 10),
                ("cpu.max".into(), 150_000),
            ]),
            vec![
                "--ulimit=nofile=64:64",
                "--memory=1024b",
                "--pids-limit=10",
                "--cpus=1.5"
            ]
        );
    }
}
