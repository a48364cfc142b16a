//! The settings that govern one agent, resolved once: agent level over cell
//! level over the config's `[cells]` defaults.

use std::sync::Arc;
use std::time::Duration;

use super::manifest::{Agent, Isolation, Manifest, RestartPolicy, RevivePolicy, Seconds};
use crate::config::CellsConfig;

/// How to run an agent: what the daemon needs to start it, taken from its
/// `cell.json` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// The argv (a string `command` is already `/bin/sh -c STRING`).
    pub argv: Vec<String>,
    /// The agent's `env`, string values only.
    pub env: Vec<(String, String)>,
    /// `limits`: an rlimit name (`nofile`, `as`, …) and its value for soft
    /// and hard, or a cgroup file (`memory.max`, `pids.max`, `cpu.max` —
    /// this one as microseconds of CPU per 100 ms).
    pub limits: Vec<(String, u64)>,
    /// `isolation`, agent over cell.
    pub isolation: Isolation,
}

/// What applies to one agent after precedence is resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Healthy until `last_seen` + this.
    pub stale_threshold: Duration,
    /// Due for revival at `last_seen` + this.
    pub resurrect_after: Duration,
    pub revive_policy: RevivePolicy,
    pub max_revive_attempts: u32,
    pub restart: RestartPolicy,
    pub autostart: bool,
    /// `None`: the agent can be watched, not started.
    pub spawn: Option<Arc<SpawnSpec>>,
    /// Agents that take over when this one dies (`substitute`).
    pub substitutes: Box<[String]>,
    /// The config-level revival timings, one copy shared by every agent.
    pub timing: Arc<Timing>,
}

/// Revival timings that only the config sets (`[cells]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub kill_grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub reset_after: Duration,
}

impl Timing {
    pub fn of(defaults: &CellsConfig) -> Timing {
        Timing {
            kill_grace: defaults.kill_grace,
            backoff_initial: defaults.backoff_initial,
            backoff_max: defaults.backoff_max,
            reset_after: defaults.reset_after,
        }
    }
}

impl AgentSettings {
    pub fn resolve(defaults: &CellsConfig, cell: &Manifest, agent: &Agent) -> AgentSettings {
        Self::resolve_with(defaults, &Arc::new(Timing::of(defaults)), cell, agent)
    }

    /// [`AgentSettings::resolve`] sharing `timing` (built from `defaults`).
    pub fn resolve_with(
        defaults: &CellsConfig,
        timing: &Arc<Timing>,
        cell: &Manifest,
        agent: &Agent,
    ) -> AgentSettings {
        let pick = |agent_v: &Option<Seconds>, cell_v: &Option<Seconds>, default: Duration| {
            agent_v
                .as_ref()
                .and_then(Seconds::positive)
                .or_else(|| cell_v.as_ref().and_then(Seconds::positive))
                .unwrap_or(default)
        };
        AgentSettings {
            stale_threshold: pick(
                &agent.heartbeat_stale_threshold,
                &cell.heartbeat_stale_threshold,
                defaults.heartbeat_stale_threshold,
            ),
            resurrect_after: pick(
                &agent.resurrect_after,
                &cell.resurrect_after,
                defaults.resurrect_after,
            ),
            revive_policy: agent
                .revive_policy
                .or(cell.revive_policy)
                .unwrap_or(defaults.revive_policy),
            max_revive_attempts: agent
                .max_revive_attempts
                .or(cell.max_revive_attempts)
                .unwrap_or(defaults.max_revive_attempts),
            restart: agent.restart.unwrap_or_default(),
            autostart: agent.autostart.unwrap_or(true),
            spawn: SpawnSpec::of(cell, agent).map(Arc::new),
            substitutes: agent.substitutes.clone().unwrap_or_default().into(),
            timing: timing.clone(),
        }
    }

    /// What differs from `before`, by `cell.json` field name, with the
    /// new value (`null`: none). Config-only timings are left out (a
    /// reload is logged on its own); `env` is named, not shown.
    pub fn changes_from(
        &self,
        before: &AgentSettings,
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value, json};
        // Seconds as written in cell.json: `30`, not `30.0`.
        let secs = |d: Duration| {
            Seconds::from_secs_f64(d.as_secs_f64()).map_or(Value::Null, |s| Value::Number(s.0))
        };
        let mut out = serde_json::Map::new();
        let mut put = |k: &str, differs: bool, v: Value| {
            if differs {
                out.insert(k.to_string(), v);
            }
        };
        put(
            "heartbeat_stale_threshold",
            self.stale_threshold != before.stale_threshold,
            secs(self.stale_threshold),
        );
        put(
            "resurrect_after",
            self.resurrect_after != before.resurrect_after,
            secs(self.resurrect_after),
        );
        put(
            "revive_policy",
            self.revive_policy != before.revive_policy,
            serde_json::to_value(self.revive_policy).unwrap_or_default(),
        );
        put(
            "max_revive_attempts",
            self.max_revive_attempts != before.max_revive_attempts,
            json!(self.max_revive_attempts),
        );
        put(
            "restart",
            self.restart != before.restart,
            serde_json::to_value(self.restart).unwrap_or_default(),
        );
        put(
            "autostart",
            self.autostart != before.autostart,
            json!(self.autostart),
        );
        put(
            "substitutes",
            self.substitutes != before.substitutes,
            json!(self.substitutes),
        );
        let spec = |s: &AgentSettings| s.spawn.as_deref().cloned();
        let (now, was) = (spec(self), spec(before));
        put(
            "command",
            now.as_ref().map(|s| &s.argv) != was.as_ref().map(|s| &s.argv),
            json!(now.as_ref().map(|s| &s.argv)),
        );
        if let (Some(now), Some(was)) = (&now, &was) {
            // Values may be secrets: only the names that changed.
            let names: std::collections::BTreeSet<&str> = now
                .env
                .iter()
                .filter(|kv| !was.env.contains(kv))
                .chain(was.env.iter().filter(|kv| !now.env.contains(kv)))
                .map(|(k, _)| k.as_str())
                .collect();
            put("env", !names.is_empty(), json!(names));
            put(
                "limits",
                now.limits != was.limits,
                json!(
                    now.limits
                        .iter()
                        .cloned()
                        .collect::<std::collections::BTreeMap<_, _>>()
                ),
            );
            put(
                "isolation",
                now.isolation != was.isolation,
                json!(now.isolation.as_str()),
            );
        }
        out
    }

    /// Whether the daemon has a command to start.
    pub fn can_start(&self) -> bool {
        self.spawn.is_some()
    }
}

/// Where an effective setting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Agent,
    Cell,
    /// The config's `[cells]`, set to something else than the default.
    Config,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Agent => "agent",
            Source::Cell => "cell",
            Source::Config => "config",
            Source::Default => "default",
        }
    }
}

/// Every setting that governs `agent`, as text, with where it comes from
/// (agent > cell > config > default), for `cell show`. The same
/// precedence as [`AgentSettings::resolve`], which the daemon uses.
pub fn effective(
    defaults: &CellsConfig,
    cell: &Manifest,
    agent: &Agent,
) -> Vec<(&'static str, String, Source)> {
    let builtin = CellsConfig::default();
    let secs = |d: Duration| {
        format!(
            "{}s",
            super::manifest::Seconds::from_secs_f64(d.as_secs_f64())
                .map_or_else(|| d.as_secs_f64().to_string(), |s| s.0.to_string())
        )
    };
    let pick = |a: Option<String>, c: Option<String>, config: String, default: String| match (a, c)
    {
        (Some(v), _) => (v, Source::Agent),
        (None, Some(v)) => (v, Source::Cell),
        (None, None) if config != default => (config, Source::Config),
        (None, None) => (config, Source::Default),
    };
    let valid_secs = |s: &Option<Seconds>| s.as_ref().and_then(Seconds::positive).map(secs);
    let policy = |p: RevivePolicy| {
        serde_json::to_value(p)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let (v, s) = pick(
        agent.revive_policy.map(policy),
        cell.revive_policy.map(policy),
        policy(defaults.revive_policy),
        policy(builtin.revive_policy),
    );
    out.push(("revive_policy", v, s));
    let (v, s) = pick(
        valid_secs(&agent.heartbeat_stale_threshold),
        valid_secs(&cell.heartbeat_stale_threshold),
        secs(defaults.heartbeat_stale_threshold),
        secs(builtin.heartbeat_stale_threshold),
    );
    out.push(("heartbeat_stale_threshold", v, s));
    let (v, s) = pick(
        valid_secs(&agent.resurrect_after),
        valid_secs(&cell.resurrect_after),
        secs(defaults.resurrect_after),
        secs(builtin.resurrect_after),
    );
    out.push(("resurrect_after", v, s));
    let (v, s) = pick(
        agent.max_revive_attempts.map(|n| n.to_string()),
        cell.max_revive_attempts.map(|n| n.to_string()),
        defaults.max_revive_attempts.to_string(),
        builtin.max_revive_attempts.to_string(),
    );
    out.push(("max_revive_attempts", v, s));
    let restart = |r: RestartPolicy| match r {
        RestartPolicy::OnFailure => "on-failure".to_string(),
        RestartPolicy::Always => "always".to_string(),
    };
    out.push(match agent.restart {
        Some(r) => ("restart", restart(r), Source::Agent),
        None => (
            "restart",
            restart(RestartPolicy::default()),
            Source::Default,
        ),
    });
    out.push(match agent.autostart {
        Some(b) => ("autostart", b.to_string(), Source::Agent),
        None => ("autostart", "true".to_string(), Source::Default),
    });
    out.push(match (agent.isolation, cell.isolation) {
        (Some(i), _) => ("isolation", i.as_str().to_string(), Source::Agent),
        (None, Some(i)) => ("isolation", i.as_str().to_string(), Source::Cell),
        (None, None) => (
            "isolation",
            Isolation::default().as_str().to_string(),
            Source::Default,
        ),
    });
    if let Some(subs) = agent.substitutes.as_ref().filter(|s| !s.is_empty()) {
        out.push(("substitutes", subs.join(", "), Source::Agent));
    }
    out
}

impl SpawnSpec {
    /// The agent's command, or `None` if it has none (or an empty one).
    /// `limits` of the agent override those of the cell, name by name.
    pub fn of(cell: &Manifest, agent: &Agent) -> Option<SpawnSpec> {
        let argv = agent.command.as_ref()?.argv();
        if argv.is_empty() || argv[0].is_empty() {
            return None;
        }
        let env = agent
            .env
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .filter(|(k, _)| !k.is_empty() && !k.contains('=') && !k.contains('\0'))
            .collect();
        let mut limits: Vec<(String, u64)> = Vec::new();
        for (k, v) in cell.limits.iter().chain(agent.limits.iter()).flatten() {
            if let Some(v) = super::manifest::limit_value(k, v) {
                limits.retain(|(name, _)| name != k);
                limits.push((k.clone(), v));
            }
        }
        let isolation = agent.isolation.or(cell.isolation).unwrap_or_default();
        Some(SpawnSpec {
            argv,
            env,
            limits,
            isolation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_over_cell_over_config() {
        let m = Manifest::from_slice(
            br#"{"heartbeat_stale_threshold":30,"resurrect_after":90,"revive_policy":"ask",
                "agents":[{"name":"a","heartbeat_stale_threshold":0.5},{"name":"b"}]}"#,
        )
        .expect("parse");
        let d = CellsConfig::default();
        let a = AgentSettings::resolve(&d, &m, &m.agents[0]);
        let b = AgentSettings::resolve(&d, &m, &m.agents[1]);
        assert_eq!(a.stale_threshold, Duration::from_millis(500));
        assert_eq!(b.stale_threshold, Duration::from_secs(30));
        assert_eq!(a.resurrect_after, Duration::from_secs(90));
        assert_eq!(a.revive_policy, RevivePolicy::Ask);
        assert_eq!(a.max_revive_attempts, 3);
        assert!(a.autostart);
    }
}
