//! The settings that govern one agent, resolved once: agent level over cell
//! level over the config's `[cells]` defaults.

use std::time::Duration;

use super::manifest::{Agent, Manifest, RestartPolicy, RevivePolicy, Seconds};
use crate::config::CellsConfig;

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
}

impl AgentSettings {
    pub fn resolve(defaults: &CellsConfig, cell: &Manifest, agent: &Agent) -> AgentSettings {
        let pick = |agent_v: &Option<Seconds>, cell_v: &Option<Seconds>, default: Duration| {
            agent_v
                .as_ref()
                .and_then(Seconds::duration)
                .or_else(|| cell_v.as_ref().and_then(Seconds::duration))
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
        }
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
