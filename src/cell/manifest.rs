//! The typed `cell.json` manifest.
//!
//! Reading is tolerant (seed-era manifests, missing optional fields, an
//! unknown status) and writing is faithful: every field this program does
//! not know lands in `extra` and is written back exactly, and durations keep
//! the number the user wrote (`30` stays `30`, not `30.0`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::lifecycle::CellStatus;
use super::name::validate_agent_name;

/// A duration in seconds, integer or fractional, kept as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub Number);

impl Seconds {
    /// The value as a duration, or `None` unless it is a number of seconds
    /// from zero to ten years ([`crate::config::MAX_DURATION`]).
    pub fn duration(&self) -> Option<Duration> {
        crate::config::bounded_seconds(self.0.as_f64()?, false).ok()
    }

    /// [`Seconds::duration`], above zero.
    pub fn positive(&self) -> Option<Duration> {
        crate::config::bounded_seconds(self.0.as_f64()?, true).ok()
    }

    pub fn from_secs_f64(secs: f64) -> Option<Seconds> {
        if secs.fract() == 0.0 && (0.0..9.0e15).contains(&secs) {
            return Some(Seconds(Number::from(secs as u64)));
        }
        Number::from_f64(secs).map(Seconds)
    }
}

/// How a dead agent is handled (`revive_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevivePolicy {
    /// Revive it.
    Yes,
    /// Record `agent_dead`, nothing else.
    No,
    /// Ask an operator (`lazarus-pit approve|deny`).
    Ask,
    /// Hand its work to a substitute agent.
    Substitute,
}

/// Whether a clean exit is revived (`restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// A clean exit 0 means finished.
    #[default]
    OnFailure,
    /// Any exit is revived.
    Always,
}

/// How an agent is confined (`isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// cwd in `workspace/`, nothing more enforced.
    #[default]
    Directory,
    MountNamespace,
    Podman,
}

impl Isolation {
    pub fn parse(text: &str) -> Option<Isolation> {
        [
            Isolation::Directory,
            Isolation::MountNamespace,
            Isolation::Podman,
        ]
        .into_iter()
        .find(|i| i.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Directory => "directory",
            Isolation::MountNamespace => "mount-namespace",
            Isolation::Podman => "podman",
        }
    }
}

/// An agent's `command`: an argv array, or a string run with `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AgentCommand {
    Argv(Vec<String>),
    Shell(String),
}

impl AgentCommand {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            AgentCommand::Argv(v) => v.clone(),
            AgentCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// One entry of `agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<AgentCommand>,
    /// Extra environment; values must be strings (checked by `problems`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revive_policy: Option<RevivePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitutes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_stale_threshold: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resurrect_after: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_revive_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// rlimits for the agent process, e.g. `{"nofile": 1024}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Map<String, Value>>,
    /// Fields this program does not know, written back untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Agent {
    pub fn new(name: &str, role: Option<String>, joined_at: String) -> Agent {
        Agent {
            name: name.to_string(),
            role,
            joined_at: Some(joined_at),
            home: None,
            command: None,
            env: None,
            revive_policy: None,
            substitutes: None,
            heartbeat_stale_threshold: None,
            resurrect_after: None,
            max_revive_attempts: None,
            autostart: None,
            restart: None,
            isolation: None,
            limits: None,
            extra: Map::new(),
        }
    }
}

/// `cell.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Absent in some seed-era manifests, which meant `active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CellStatus>,
    #[serde(default)]
    pub agents: Vec<Agent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revive_policy: Option<RevivePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_revive_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_stale_threshold: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resurrect_after: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<Seconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Map<String, Value>>,
    /// Fields this program does not know (`gitea_issue`, `repo`, a user's
    /// nested objects), written back untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    /// A new, empty manifest.
    pub fn new(uuid: String, created_at: String) -> Manifest {
        Manifest {
            uuid,
            name: None,
            mission: None,
            created_at: Some(created_at),
            created_by: None,
            status: Some(CellStatus::Provisioned),
            agents: Vec::new(),
            revive_policy: None,
            max_revive_attempts: None,
            heartbeat_stale_threshold: None,
            resurrect_after: None,
            idle_timeout: None,
            max_duration: None,
            checkpoint_interval: None,
            isolation: None,
            limits: None,
            extra: Map::new(),
        }
    }

    /// Parses `cell.json`; the error is serde's, with line and column.
    pub fn from_slice(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The manifest as written to disk: pretty, with a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::json::document(self)
    }

    /// The status, with a missing one read as `active` (seed behaviour).
    pub fn status(&self) -> CellStatus {
        self.status.clone().unwrap_or(CellStatus::Active)
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// Every problem with the manifest at once (Horust-style), so a user
    /// fixes them in one go. An empty list means valid.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let CellStatus::Unknown(s) = self.status() {
            out.push(format!(
                "status {s:?} is not one of provisioned, active, frozen, archived, destroyed"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for agent in &self.agents {
            if let Err(e) = validate_agent_name(&agent.name) {
                out.push(format!("agent {:?}: {e}", agent.name));
            }
            if !seen.insert(agent.name.as_str()) {
                out.push(format!("agent {:?} is listed twice", agent.name));
            }
            if let Some(env) = &agent.env {
                for (k, v) in env {
                    if !v.is_string() {
                        out.push(format!(
                            "agent {:?}: env {k:?} must be a string",
                            agent.name
                        ));
                    }
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        out.push(format!(
                            "agent {:?}: {k:?} is not a valid environment variable name",
                            agent.name
                        ));
                    }
                }
            }
            if let Some(AgentCommand::Argv(argv)) = &agent.command
                && argv.is_empty()
            {
                out.push(format!("agent {:?}: command is an empty list", agent.name));
            }
            // A substitute that has left the cell is skipped at revival
            // time, not an error: `cell leave` must not break the manifest.
            if agent.substitutes.iter().flatten().any(|s| s == &agent.name) {
                out.push(format!("agent {:?} cannot substitute itself", agent.name));
            }
            for (field, value) in [
                (
                    "heartbeat_stale_threshold",
                    &agent.heartbeat_stale_threshold,
                ),
                ("resurrect_after", &agent.resurrect_after),
            ] {
                if value.as_ref().is_some_and(|s| s.positive().is_none()) {
                    out.push(format!(
                        "agent {:?}: {field} must be a positive number of seconds, at most ten years",
                        agent.name
                    ));
                }
            }
            limit_problems(
                &format!("agent {:?}: ", agent.name),
                &agent.limits,
                &mut out,
            );
        }
        for (field, value, positive) in [
            (
                "heartbeat_stale_threshold",
                &self.heartbeat_stale_threshold,
                true,
            ),
            ("resurrect_after", &self.resurrect_after, true),
            ("idle_timeout", &self.idle_timeout, false),
            ("max_duration", &self.max_duration, false),
            ("checkpoint_interval", &self.checkpoint_interval, false),
        ] {
            let bad = |s: &Seconds| {
                if positive {
                    s.positive().is_none()
                } else {
                    s.duration().is_none()
                }
            };
            if value.as_ref().is_some_and(bad) {
                out.push(format!(
                    "{field} must be a {} number of seconds, at most ten years",
                    if positive { "positive" } else { "non-negative" }
                ));
            }
        }
        limit_problems("", &self.limits, &mut out);
        out
    }
}

/// The rlimits `limits` may name (`RLIMIT_<NAME>` in lower case).
pub const LIMIT_NAMES: &[&str] = &[
    "as", "core", "cpu", "data", "fsize", "memlock", "nofile", "nproc", "stack",
];

/// The cgroup limits `limits` may name, by their cgroup file: bytes
/// (`memory.max`), processes (`pids.max`), CPUs, fractional
/// (`cpu.max`, e.g. `0.5`).
pub const CGROUP_LIMIT_NAMES: &[&str] = &["memory.max", "pids.max", "cpu.max"];

/// The most CPUs `cpu.max` may give (its quota must fit the kernel's).
pub const MAX_CPUS: f64 = 4096.0;

/// A `limits` entry as the daemon applies it: an integer (for `cpu.max`,
/// microseconds of CPU per 100 ms period), or `None` if it is invalid.
pub fn limit_value(name: &str, value: &Value) -> Option<u64> {
    if name == "cpu.max" {
        let cpus = value.as_f64()?;
        return (cpus > 0.0 && cpus <= MAX_CPUS)
            .then(|| ((cpus * 100_000.0).round() as u64).max(1_000));
    }
    // No processes at all, or no memory, can only mean it never starts
    // (and podman reads 0 as "no limit").
    if CGROUP_LIMIT_NAMES.contains(&name) {
        return value.as_u64().filter(|v| *v >= 1);
    }
    if LIMIT_NAMES.contains(&name) {
        return value.as_u64();
    }
    None
}

fn limit_problems(prefix: &str, limits: &Option<Map<String, Value>>, out: &mut Vec<String>) {
    for (name, value) in limits.iter().flatten() {
        if !LIMIT_NAMES.contains(&name.as_str()) && !CGROUP_LIMIT_NAMES.contains(&name.as_str()) {
            out.push(format!(
                "{prefix}limits: {name:?} is not one of {}, {}",
                LIMIT_NAMES.join(", "),
                CGROUP_LIMIT_NAMES.join(", ")
            ));
        } else if limit_value(name, value).is_none() {
            out.push(if name == "cpu.max" {
                format!("{prefix}limits: cpu.max must be a number of CPUs above 0 and at most {MAX_CPUS}, not {value}")
            } else if CGROUP_LIMIT_NAMES.contains(&name.as_str()) {
                format!("{prefix}limits: {name} must be a positive integer, not {value}")
            } else {
                format!("{prefix}limits: {name} must be a non-negative integer, not {value}")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{
  "uuid": "a3f7c901-1234-4b5e-8def-000000000001",
  "name": "optional human-readable name",
  "mission": "Short description of the mission objective",
  "created_at": "2026-04-06T00:00:00Z",
  "created_by": "agent-name or username",
  "status": "active",
  "agents": [
    {
      "name": "claude",
      "role": "developer",
      "joined_at": "2026-04-06T00:01:00Z",
      "home": "/root/wizards/claude"
    }
  ],
  "gitea_issue": 879,
  "repo": "Timmy_Foundation/the-nexus"
}"#;

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("json")
    }

    #[test]
    fn seed_manifest_round_trips_exactly() {
        let m = Manifest::from_slice(SEED.as_bytes()).expect("parse");
        assert_eq!(m.status(), CellStatus::Active);
        assert_eq!(m.agents[0].name, "claude");
        assert_eq!(value(&m.to_bytes()), value(SEED.as_bytes()));
    }

    #[test]
    fn unknown_fields_and_numbers_survive() {
        let src = r#"{"uuid":"u","status":"frozen","heartbeat_stale_threshold":30,
            "resurrect_after":1.5,"custom":{"nested":[1,2.50,{"x":null}]},
            "agents":[{"name":"a","command":"run.sh","mine":true,"env":{"K":"V"}}]}"#;
        let m = Manifest::from_slice(src.as_bytes()).expect("parse");
        assert_eq!(
            m.heartbeat_stale_threshold
                .as_ref()
                .and_then(Seconds::duration),
            Some(Duration::from_secs(30))
        );
        let out = String::from_utf8(m.to_bytes()).expect("utf8");
        assert!(out.contains("\"heartbeat_stale_threshold\": 30,"), "{out}");
        assert_eq!(value(out.as_bytes()), value(src.as_bytes()));
    }

    #[test]
    fn tolerant_of_missing_fields_and_unknown_status() {
        let m = Manifest::from_slice(br#"{"status":"exploded"}"#).expect("parse");
        assert_eq!(m.status(), CellStatus::Unknown("exploded".into()));
        assert!(m.agents.is_empty());
        assert_eq!(m.problems().len(), 1);
        let m = Manifest::from_slice(b"{}").expect("parse");
        assert_eq!(m.status(), CellStatus::Active);
        assert!(!String::from_utf8_lossy(&m.to_bytes()).contains("status"));
    }

    #[test]
    fn command_string_or_argv() {
        let m = Manifest::from_slice(
            br#"{"agents":[{"name":"a","command":"echo hi"},{"name":"b","command":["x","y"]}]}"#,
        )
        .expect("parse");
        assert_eq!(
            m.agents[0].command.as_ref().map(AgentCommand::argv),
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(
            m.agents[1].command.as_ref().map(AgentCommand::argv),
            Some(vec!["x".into(), "y".into()])
        );
    }

    #[test]
    fn problems_are_reported_together() {
        let m = Manifest::from_slice(
            br#"{"resurrect_after":-1,"agents":[{"name":"../x"},{"name":"a","env":{"K":1},
              "substitutes":["ghost","a"]},{"name":"a"}]}"#,
        )
        .expect("parse");
        let p = m.problems();
        assert_eq!(p.len(), 5, "{p:#?}");
    }

    #[test]
    fn absurd_numbers_are_problems_not_durations() {
        let m = Manifest::from_slice(
            br#"{"heartbeat_stale_threshold":1e19,"resurrect_after":0,"max_duration":-1,
              "limits":{"nofile":-5,"bogus":1},
              "agents":[{"name":"a","resurrect_after":1e300,"limits":{"cpu":1.5}}]}"#,
        )
        .expect("parse");
        assert_eq!(
            m.heartbeat_stale_threshold
                .as_ref()
                .and_then(Seconds::duration),
            None
        );
        let p = m.problems();
        assert_eq!(p.len(), 7, "{p:#?}");
    }

    #[test]
    fn cgroup_limits_take_positive_integers_and_cpus() {
        let m = Manifest::from_slice(
            br#"{"limits":{"pids.max":0,"memory.max":1.5,"cpu.max":50000},
              "agents":[{"name":"a","limits":{"pids.max":64,"memory.max":1048576,"cpu.max":0.5}}]}"#,
        )
        .expect("parse");
        let p = m.problems();
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p.iter()
                .any(|p| p.contains("pids.max must be a positive integer"))
        );
        assert!(
            p.iter()
                .any(|p| p.contains("cpu.max must be a number of CPUs"))
        );
        assert_eq!(
            limit_value("cpu.max", &serde_json::json!(0.5)),
            Some(50_000)
        );
        assert_eq!(limit_value("pids.max", &serde_json::json!(0)), None);
    }

    #[test]
    fn bad_policy_is_an_error_naming_the_value() {
        let err = Manifest::from_slice(br#"{"revive_policy":"maybe"}"#).unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }
}
