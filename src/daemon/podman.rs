//! `isolation: "podman"`: the agent's command runs in a container,
//! `podman run --rm` in the foreground, so that the podman process is the
//! instance the daemon watches (its exit is the container's) and the
//! agent's output reaches `logs/<agent>.log` as for any agent.
//!
//! The container is known by a name derived from the cell and the agent
//! ([`container_name`]): stopping, killing, pausing (freeze) and
//! unpausing (thaw) go through podman by that name, not through a pid,
//! and a container of that name left by a crash is replaced at the next
//! start. Only root (the daemon) can manage root's containers, so the name
//! is the proof of ownership an agent cannot forge.
//!
//! The cell is mounted at its own path, read-only, with `workspace/`,
//! `bus/` and `.lazarus/heartbeats/` read-write on top (as for
//! `mount-namespace`); the agent runs as the cell's owner; the image is
//! never pulled (`--pull=never`). The agent's environment reaches the
//! container through an env file on a descriptor (`--env-file
//! /dev/fd/3`, a memfd), so no value appears on a command line every user
//! can read, and none reaches podman itself: podman runs with the daemon's
//! `PATH`, `LANG` and `TZ` only, so a `CONTAINERS_CONF` in an agent's
//! `env` cannot configure the root podman that starts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::IsolationConfig;

/// The podman program named by the config, or `podman`.
pub fn program(cfg: &IsolationConfig) -> PathBuf {
    cfg.podman
        .clone()
        .unwrap_or_else(|| PathBuf::from("podman"))
}

/// The podman program as an absolute path, found in the daemon's own
/// `PATH` — never the agent's: podman runs as root, and a `PATH` an agent
/// put in its `env` must not choose the program.
pub fn resolve(cfg: &IsolationConfig) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let named = program(cfg);
    let missing = || {
        format!(
            "isolation podman needs podman, and {} is not installed (set [isolation] podman \
             to its path, or install it)",
            named.display()
        )
    };
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if named.is_absolute() {
        return runnable(&named).then(|| named.clone()).ok_or_else(missing);
    }
    if named.components().count() != 1 {
        return Err(format!(
            "[isolation] podman = {:?}: give a program name or an absolute path",
            named.display()
        ));
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| super::process::DEFAULT_PATH.into());
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(&named))
        .find(|p| runnable(p))
        .ok_or_else(missing)
}

/// The container of an agent: `lazarus-<cell>-<agent>` (agent names are
/// already valid container names).
pub fn container_name(cell: &str, agent: &str) -> String {
    format!("lazarus-{cell}-{agent}")
}

/// What a `podman run` needs beyond the config.
pub struct Run<'a> {
    pub cell: &'a str,
    pub agent: &'a str,
    pub cell_dir: &'a Path,
    /// The container's user: the cell owner's uid, primary gid and
    /// supplementary groups (never the directory's group, as for any
    /// agent).
    pub user: (u32, u32, Vec<u32>),
    /// Where podman reads the agent's environment (`/dev/fd/3`).
    pub env_file: &'a str,
    /// Where podman reads the seccomp profile (`/dev/fd/4`), if there is
    /// one ([`seccomp_profile`]).
    pub seccomp: Option<&'a str>,
    /// The limits as podman options (`--ulimit`, `--memory`, …).
    pub limit_args: &'a [String],
    pub argv: &'a [String],
}

/// The argv of the `podman run` that starts the agent (program first).
pub fn command_line(cfg: &IsolationConfig, run: &Run<'_>) -> Result<Vec<String>, String> {
    let image = image_args(cfg)?;
    let cell = run.cell_dir.display().to_string();
    // `--volume` splits on these: a path holding one would mount
    // something else.
    if cell.contains([':', ',']) || !run.cell_dir.is_absolute() {
        return Err(format!(
            "isolation podman: the cell path {cell} cannot be mounted (it must be absolute and \
             hold no ':' or ',')"
        ));
    }
    let mut argv = vec![
        resolve(cfg)?.display().to_string(),
        "run".into(),
        "--rm".into(),
        "--replace".into(),
        "--pull=never".into(),
        format!("--name={}", container_name(run.cell, run.agent)),
        format!("--label=lazarus-pit.cell={}", run.cell),
        format!("--label=lazarus-pit.agent={}", run.agent),
        format!("--user={}:{}", run.user.0, run.user.1),
        format!("--workdir={cell}/workspace"),
        "--security-opt=no-new-privileges".into(),
        // The container's output goes straight to podman's, which is the
        // agent's log file: no copy in podman's own log store.
        "--log-driver=passthrough".into(),
        format!("--volume={cell}:{cell}:ro"),
    ];
    for rel in ["workspace", "bus", ".lazarus/heartbeats"] {
        argv.push(format!("--volume={cell}/{rel}:{cell}/{rel}:rw"));
    }
    for group in run.user.2.iter().filter(|g| **g != run.user.1) {
        argv.push(format!("--group-add={group}"));
    }
    // As under mount-namespace: the cells root shows this cell only, and
    // the hidden paths are covered, whatever the image holds.
    if let Some(root) = run.cell_dir.parent() {
        argv.push(format!(
            "--mount=type=tmpfs,destination={},tmpfs-mode=0755,tmpfs-size=1m,notmpcopyup",
            root.display()
        ));
    }
    let covered_by_another = |path: &Path| {
        cfg.hidden_paths
            .iter()
            .any(|other| other != path && path.starts_with(other))
    };
    for path in cfg.hidden_paths.iter().filter(|p| !covered_by_another(p)) {
        if run.cell_dir.starts_with(path) {
            return Err(format!(
                "[isolation] hidden_paths: {} would hide the cell itself",
                path.display()
            ));
        }
        let text = path.display().to_string();
        if text.contains([':', ',']) {
            return Err(format!(
                "[isolation] hidden_paths: {text} cannot be covered in a container (it holds ':' \
                 or ',')"
            ));
        }
        // The runtime resolves a destination inside the container's root,
        // following links: a link is skipped here (the mount would land on
        // its target, or fail every start) — list what it points to.
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                tracing::warn!(
                    "[isolation] hidden_paths: {text} is a symlink, not covered in containers; \
                     list its target instead"
                );
            }
            Ok(meta) if meta.is_dir() => argv.push(format!(
                "--mount=type=tmpfs,destination={text},ro=true,tmpfs-size=4k,notmpcopyup"
            )),
            Ok(_) => argv.push(format!("--volume=/dev/null:{text}:ro")),
            Err(_) => {}
        }
    }
    argv.push(format!("--env-file={}", run.env_file));
    if let Some(profile) = run.seccomp {
        argv.push(format!("--security-opt=seccomp={profile}"));
    }
    argv.extend(cfg.podman_args.iter().cloned());
    // After the operator's options: the agent's own limits win.
    argv.extend(run.limit_args.iter().cloned());
    argv.extend(image);
    argv.extend(run.argv.iter().cloned());
    Ok(argv)
}

/// The limits the operator's `podman_args` set (`--ulimit NAME=S:H`,
/// `--memory`, `--pids-limit`, `--cpus`), as ceilings in `limits`' units:
/// an agent's own limit can lower them, never raise them.
pub fn ceilings(cfg: &IsolationConfig) -> Vec<(String, u64)> {
    const TAKES_VALUE: &[&str] = &["--ulimit", "--memory", "-m", "--pids-limit", "--cpus"];
    let mut out = Vec::new();
    let mut args = cfg.podman_args.iter().peekable();
    while let Some(arg) = args.next() {
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, value.to_string()),
            _ if TAKES_VALUE.contains(&arg.as_str()) => match args.next() {
                Some(next) => (arg.as_str(), next.clone()),
                None => continue,
            },
            _ => continue,
        };
        let parsed = match flag {
            "--ulimit" => value.split_once('=').and_then(|(name, v)| {
                let hard = v.rsplit(':').next()?;
                Some((name.to_string(), hard.parse::<u64>().ok()?))
            }),
            "--memory" | "-m" => memory_bytes(&value).map(|b| ("memory.max".to_string(), b)),
            "--pids-limit" => value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| ("pids.max".to_string(), n)),
            "--cpus" => value
                .parse::<f64>()
                .ok()
                .filter(|c| *c > 0.0)
                .map(|c| ("cpu.max".to_string(), (c * 100_000.0).round() as u64)),
            _ => None,
        };
        out.extend(parsed);
    }
    out
}

/// podman's memory sizes: a number with an optional b, k, m or g.
fn memory_bytes(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let n: u64 = digits.parse().ok()?;
    let unit = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The distribution's default container seccomp profile, where podman's
/// packages put it.
const SECCOMP_DEFAULTS: &[&str] = &[
    "/usr/share/containers/seccomp.json",
    "/etc/containers/seccomp.json",
];

/// The syscalls whose mode the profile checks, and the index of their
/// mode argument; `open`/`openat` also by their flags.
const MODE_CALLS: &[(&str, u32)] = &[
    ("chmod", 1),
    ("fchmod", 1),
    ("fchmodat", 2),
    ("fchmodat2", 2),
    ("mknod", 1),
    ("mknodat", 2),
    ("creat", 1),
];

/// The default seccomp profile with set-id modes refused, as under
/// `mount-namespace` ([`super::setid_filter`]): the workspace is the
/// host's, and not `nosuid` there. The mode-setting calls leave the
/// profile's allow-list and come back allowed only without S_ISUID and
/// S_ISGID; `openat2` answers ENOSYS. `None` (and a warning, once) if no
/// default profile is installed: podman's built-in one applies then.
pub fn seccomp_profile() -> Option<Vec<u8>> {
    static PROFILE: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    PROFILE
        .get_or_init(|| {
            let made = SECCOMP_DEFAULTS
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .and_then(|text| serde_json::from_slice(&text).ok())
                .and_then(without_set_id);
            if made.is_none() {
                tracing::warn!(
                    "no container seccomp profile found ({}): podman agents may make set-uid \
                     files in their workspace",
                    SECCOMP_DEFAULTS.join(", ")
                );
            }
            made
        })
        .clone()
}

fn without_set_id(mut profile: serde_json::Value) -> Option<Vec<u8>> {
    use serde_json::json;
    const SET_ID: u64 = 0o6000;
    const CREATING: u64 = 0o100 | 0o20000000;
    let filtered: Vec<&str> = MODE_CALLS
        .iter()
        .map(|(n, _)| *n)
        .chain(["open", "openat", "openat2"])
        .collect();
    let syscalls = profile.get_mut("syscalls")?.as_array_mut()?;
    for rule in syscalls.iter_mut() {
        if let Some(names) = rule.get_mut("names").and_then(|n| n.as_array_mut()) {
            names.retain(|n| n.as_str().is_none_or(|n| !filtered.contains(&n)));
        }
    }
    syscalls.retain(|r| r["names"].as_array().is_none_or(|n| !n.is_empty()));
    let masked = |index: u32, mask: u64| json!({"index": index, "value": mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"});
    for (name, index) in MODE_CALLS {
        syscalls.push(json!({"names": [name], "action": "SCMP_ACT_ALLOW",
                             "args": [masked(*index, SET_ID)]}));
    }
    for (name, flags, mode) in [("open", 1, 2), ("openat", 2, 3)] {
        syscalls.push(json!({"names": [name], "action": "SCMP_ACT_ALLOW",
                             "args": [masked(flags, CREATING)]}));
        syscalls.push(json!({"names": [name], "action": "SCMP_ACT_ALLOW",
                             "args": [masked(mode, SET_ID)]}));
    }
    syscalls.push(json!({"names": ["openat2"], "action": "SCMP_ACT_ERRNO",
                         "errnoRet": nix::libc::ENOSYS}));
    serde_json::to_vec(&profile).ok()
}

/// The agent's environment as podman's env file (`NAME=VALUE` lines). A
/// value podman's format cannot carry (a newline) is refused rather than
/// split into a second variable.
pub fn env_file(env: &[(String, String)]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (k, v) in env {
        if k.contains(['\n', '=', '\0']) || v.contains(['\n', '\0']) || k.is_empty() {
            return Err(format!(
                "isolation podman: the environment variable {:?} cannot be passed to a \
                 container (a newline in its name or value)",
                crate::text::escape(k)
            ));
        }
        out.extend_from_slice(format!("{k}={v}\n").as_bytes());
    }
    Ok(out)
}

/// `IMAGE`, or `--rootfs DIR`, from the config.
fn image_args(cfg: &IsolationConfig) -> Result<Vec<String>, String> {
    match (&cfg.podman_image, &cfg.podman_rootfs) {
        (_, Some(dir)) => {
            // `DIR:O`: an overlay on DIR, whose changes vanish with the
            // container (podman's own syntax).
            let text = dir.display().to_string();
            let base = Path::new(text.strip_suffix(":O").unwrap_or(&text));
            if !base.is_absolute() || !base.is_dir() {
                return Err(format!(
                    "[isolation] podman_rootfs {} is not an absolute path to a directory",
                    dir.display()
                ));
            }
            Ok(vec!["--rootfs".into(), dir.display().to_string()])
        }
        (Some(image), None) if !image.is_empty() && !image.starts_with('-') => {
            Ok(vec![image.clone()])
        }
        _ => Err(
            "isolation podman needs an image: set [isolation] podman_image (an image already \
             present, it is never pulled) or podman_rootfs (a directory)"
                .into(),
        ),
    }
}

/// Whether podman can run this config's containers here: the reason if
/// not. Tried once by running `true` in the image (a `true` the image
/// lacks still proves the runtime works); a success is remembered, a
/// failure for 30 s (an operator may be fixing it).
pub fn available(cfg: &IsolationConfig) -> Result<(), String> {
    use std::sync::Mutex;
    type Probes = Vec<(String, Result<(), String>, Instant)>;
    static PROBES: Mutex<Probes> = Mutex::new(Vec::new());
    let image = image_args(cfg)?;
    let key = format!("{:?} {:?} {:?}", program(cfg), image, cfg.podman_args);
    {
        let probes = PROBES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, result, at)) = probes.iter().find(|(k, _, _)| *k == key)
            && (result.is_ok() || at.elapsed() < Duration::from_secs(30))
        {
            return result.clone();
        }
    }
    let result = probe(cfg, image);
    let mut probes = PROBES.lock().unwrap_or_else(|e| e.into_inner());
    probes.retain(|(k, _, _)| *k != key);
    probes.push((key, result.clone(), Instant::now()));
    result
}

fn probe(cfg: &IsolationConfig, image: Vec<String>) -> Result<(), String> {
    let program = resolve(cfg)?;
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--pull=never".into(),
        "--log-driver=passthrough".into(),
    ];
    args.extend(cfg.podman_args.iter().cloned());
    args.extend(image);
    args.push("true".into());
    let mut child = Command::new(&program)
        .args(&args)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "LANG" || k == "TZ"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    // Bounded: it runs on the thread that starts every agent. Its stderr
    // is read on the side, so a chatty podman cannot block on the pipe.
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            use std::io::Read;
            let _ = stderr.take(64 * 1024).read_to_string(&mut text);
        }
        text
    });
    let until = Instant::now() + PROBE_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "isolation podman: podman did not run a container within {}s (a lock held? \
                     see `podman ps -a`)",
                    PROBE_LIMIT.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot run {}: {e}", program.display())),
        }
    };
    let text = reader.join().unwrap_or_default();
    verdict(status.code(), &text)
}

/// How long the availability probe may take.
const PROBE_LIMIT: Duration = Duration::from_secs(60);

/// What the probe's exit says. 0: it ran; 127 "not found": the runtime
/// works, the image has no `true`. Anything else (126 is also how podman
/// reports a runtime's "permission denied", crun's setrlimit among them)
/// is a failure, said with podman's last line.
fn verdict(code: Option<i32>, stderr: &str) -> Result<(), String> {
    match code {
        Some(0) => Ok(()),
        Some(127) if stderr.contains("not found") => Ok(()),
        Some(125) if stderr.contains("image not known") || stderr.contains("no such image") => Err(
            "isolation podman: the image is not present on this host, and it is never \
                 pulled: pull or build it first ([isolation] podman_image)"
                .into(),
        ),
        _ => {
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            let status = code.map_or_else(|| "killed".to_string(), |c| format!("exit {c}"));
            Err(format!(
                "isolation podman: podman cannot run containers on this host ({status}): {}",
                crate::text::escape(last.trim())
            ))
        }
    }
}

/// Runs `podman ARGS… NAME` to control a container, bounded by `limit`.
/// Blocking: call it off the event loop.
pub fn control(program: &Path, args: &[&str], name: &str, limit: Duration) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!("podman {} {name}: {status}", args.join(" ")));
            }
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "podman {} {name}: no answer in {limit:?}",
                    args.join(" ")
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The container an instance runs in: what control goes through.
#[derive(Debug, Clone)]
pub struct Container {
    pub program: PathBuf,
    pub name: String,
}

impl Container {
    pub fn of(cfg: &IsolationConfig, cell: &str, agent: &str) -> Container {
        Container {
            program: resolve(cfg).unwrap_or_else(|_| program(cfg)),
            name: container_name(cell, agent),
        }
    }

    /// `podman stop --time GRACE`: SIGTERM, then SIGKILL after the grace.
    pub async fn stop(&self, grace: Duration) {
        let me = self.clone();
        let secs = grace.as_secs_f64().ceil().max(0.0) as u64;
        let _ = tokio::task::spawn_blocking(move || {
            let time = format!("--time={secs}");
            if let Err(e) = control(
                &me.program,
                &["stop", &time],
                &me.name,
                grace + Duration::from_secs(10),
            ) {
                tracing::debug!("{e}");
            }
        })
        .await;
    }

    /// After the podman process ended: a container it left running (its
    /// client was killed) goes too.
    pub async fn remove(&self) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = control(
                &me.program,
                &["rm", "--force", "--time=0", "--ignore"],
                &me.name,
                Duration::from_secs(10),
            );
        })
        .await;
    }

    /// Whether the container runs and is this agent's (its labels):
    /// `None` if podman cannot say. Blocking.
    pub fn running(&self, cell: &str, agent: &str) -> Option<bool> {
        let out = Command::new(&self.program)
            .args([
                "container",
                "inspect",
                "--format",
                "{{.State.Running}} {{index .Config.Labels \"lazarus-pit.cell\"}} \
                 {{index .Config.Labels \"lazarus-pit.agent\"}}",
            ])
            .arg(&self.name)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return Some(false); // No such container.
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Some(text.split_whitespace().collect::<Vec<_>>() == ["true", cell, agent])
    }

    /// Waits (blocking, at most `limit`) until the container is paused:
    /// `podman wait --condition=paused`.
    pub fn wait_paused(&self, limit: Duration) -> bool {
        control(
            &self.program,
            &["wait", "--condition=paused"],
            &self.name,
            limit,
        )
        .is_ok()
    }

    /// `podman pause` / `podman unpause`. Blocking.
    pub fn pause(&self, frozen: bool) -> Result<(), String> {
        let verb = if frozen { "pause" } else { "unpause" };
        control(&self.program, &[verb], &self.name, Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IsolationConfig {
        IsolationConfig {
            podman: Some(PathBuf::from("/bin/sh")),
            hidden_paths: vec![
                PathBuf::from("/etc"),
                PathBuf::from("/etc/hostname"),
                PathBuf::from("/proc/version"),
            ],
            podman_rootfs: Some(PathBuf::from("/")),
            podman_args: vec!["--network=none".into()],
            ..IsolationConfig::default()
        }
    }

    #[test]
    fn the_command_line_mounts_the_cell_at_its_path_and_passes_env_in_a_file() {
        let limits = vec!["--ulimit=nofile=512:512".to_string()];
        let argv = vec!["/bin/agent".to_string(), "--flag".to_string()];
        let run = Run {
            cell: "c0ffee00-0000-4000-8000-000000000000",
            agent: "scout",
            cell_dir: Path::new("/var/missions/c0ffee00-0000-4000-8000-000000000000"),
            user: (1000, 1000, vec![1000, 27]),
            env_file: "/dev/fd/3",
            seccomp: Some("/dev/fd/4"),
            limit_args: &limits,
            argv: &argv,
        };
        let line = command_line(&cfg(), &run).unwrap();
        let cell = "/var/missions/c0ffee00-0000-4000-8000-000000000000";
        let expected: Vec<String> = [
            "/bin/sh",
            "run",
            "--rm",
            "--replace",
            "--pull=never",
            "--name=lazarus-c0ffee00-0000-4000-8000-000000000000-scout",
            "--label=lazarus-pit.cell=c0ffee00-0000-4000-8000-000000000000",
            "--label=lazarus-pit.agent=scout",
            "--user=1000:1000",
            &format!("--workdir={cell}/workspace"),
            "--security-opt=no-new-privileges",
            "--log-driver=passthrough",
            &format!("--volume={cell}:{cell}:ro"),
            &format!("--volume={cell}/workspace:{cell}/workspace:rw"),
            &format!("--volume={cell}/bus:{cell}/bus:rw"),
            &format!("--volume={cell}/.lazarus/heartbeats:{cell}/.lazarus/heartbeats:rw"),
            "--group-add=27",
            "--mount=type=tmpfs,destination=/var/missions,tmpfs-mode=0755,tmpfs-size=1m,notmpcopyup",
            "--mount=type=tmpfs,destination=/etc,ro=true,tmpfs-size=4k,notmpcopyup",
            "--volume=/dev/null:/proc/version:ro",
            "--env-file=/dev/fd/3",
            "--security-opt=seccomp=/dev/fd/4",
            "--network=none",
            "--ulimit=nofile=512:512",
            "--rootfs",
            "/",
            "/bin/agent",
            "--flag",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(line, expected);
    }

    #[test]
    fn a_cell_path_that_volume_syntax_would_split_is_refused() {
        let argv = vec!["/bin/agent".to_string()];
        let run = Run {
            cell: "c",
            agent: "a",
            cell_dir: Path::new("/srv/x:/etc/c"),
            user: (0, 0, Vec::new()),
            env_file: "/dev/fd/3",
            seccomp: None,
            limit_args: &[],
            argv: &argv,
        };
        assert!(command_line(&cfg(), &run).unwrap_err().contains("':'"));
    }

    #[test]
    fn an_image_is_used_when_no_rootfs_is_set_and_one_of_them_is_required() {
        let with_image = IsolationConfig {
            podman_image: Some("localhost/agent:1".into()),
            ..IsolationConfig::default()
        };
        assert_eq!(image_args(&with_image).unwrap(), vec!["localhost/agent:1"]);
        let none = IsolationConfig::default();
        assert!(image_args(&none).unwrap_err().contains("podman_image"));
        let option = IsolationConfig {
            podman_image: Some("--privileged".into()),
            ..IsolationConfig::default()
        };
        assert!(image_args(&option).is_err(), "an option is not an image");
        let relative = IsolationConfig {
            podman_rootfs: Some("rootfs".into()),
            ..IsolationConfig::default()
        };
        assert!(image_args(&relative).unwrap_err().contains("absolute"));
    }

    #[test]
    fn a_missing_podman_is_one_clear_sentence() {
        let cfg = IsolationConfig {
            podman: Some("/nonexistent/podman".into()),
            ..cfg()
        };
        let e = available(&cfg).unwrap_err();
        assert!(e.contains("/nonexistent/podman is not installed"), "{e}");
    }

    #[test]
    fn the_env_file_holds_each_variable_on_its_line_and_refuses_newlines() {
        let env = vec![
            ("A".to_string(), "1 2".to_string()),
            ("B".into(), "x=y".into()),
        ];
        assert_eq!(env_file(&env).unwrap(), b"A=1 2\nB=x=y\n");
        let sneaky = vec![("A".to_string(), "1\nCONTAINERS_CONF=/x".to_string())];
        assert!(env_file(&sneaky).unwrap_err().contains("newline"));
    }

    #[test]
    fn the_probe_tells_a_runtime_that_fails_from_an_image_without_true() {
        assert!(verdict(Some(0), "").is_ok());
        let missing = "Error: crun: executable file `true` not found in $PATH: No such file or \
                       directory: OCI runtime attempted to invoke a command that was not found";
        assert!(verdict(Some(127), missing).is_ok());
        let crun = "Error: crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted: OCI \
                    permission denied";
        let e = verdict(Some(126), crun).unwrap_err();
        assert!(
            e.contains("cannot run containers on this host (exit 126)"),
            "{e}"
        );
        assert!(e.contains("setrlimit"), "{e}");
        let e = verdict(Some(125), "Error: localhost/x: image not known").unwrap_err();
        assert!(
            e.contains("not present on this host, and it is never pulled"),
            "{e}"
        );
    }

    #[test]
    fn the_operators_podman_args_are_ceilings() {
        let cfg = IsolationConfig {
            podman_args: vec![
                "--ulimit=nofile=1024:2048".into(),
                "--ulimit".into(),
                "nproc=64".into(),
                "--memory=512m".into(),
                "--pids-limit=100".into(),
                "--cpus".into(),
                "1.5".into(),
                "--network=none".into(),
            ],
            ..IsolationConfig::default()
        };
        assert_eq!(
            ceilings(&cfg),
            vec![
                ("nofile".to_string(), 2048),
                ("nproc".into(), 64),
                ("memory.max".into(), 512 << 20),
                ("pids.max".into(), 100),
                ("cpu.max".into(), 150_000),
            ]
        );
        assert_eq!(memory_bytes("1g"), Some(1 << 30));
        assert_eq!(memory_bytes("100"), Some(100));
        assert_eq!(memory_bytes("x"), None);
    }

    #[test]
    fn container_names_are_per_cell_and_agent() {
        assert_eq!(container_name("u", "a.b-c_d"), "lazarus-u-a.b-c_d");
    }
}
