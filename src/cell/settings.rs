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

    /// Whether the daemon has a command to start.
    pub fn can_start(&self) -> bool {
        self.spawn.is_some()
    }
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
