//! `.lazarus/state.json`: what the daemon knows of a cell's agents,
//! published in the cell. Written only by the daemon, never read back by it
//! (agents can write there too: see [`crate::records`]); `status` reads it
//! when the daemon's own records are not open to the user.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An agent's state as the daemon sees it (BRIEF section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Not judged yet (no heartbeat, grace period running).
    #[default]
    Unknown,
    Healthy,
    Stale,
    Reviving,
    Exited,
    Dead,
    AwaitingApproval,
    Abandoned,
    Frozen,
}

impl AgentState {
    /// Every state, in the order `status` sorts them: what needs a human
    /// first.
    pub const BY_URGENCY: [AgentState; 9] = [
        AgentState::Abandoned,
        AgentState::AwaitingApproval,
        AgentState::Dead,
        AgentState::Stale,
        AgentState::Reviving,
        AgentState::Unknown,
        AgentState::Healthy,
        AgentState::Exited,
        AgentState::Frozen,
    ];

    /// Whether a monitor should be told: the agent is not doing its work
    /// and no operator chose that. `unknown` (not judged yet), `exited`
    /// (finished with success under `restart = "on-failure"`) and `frozen`
    /// (an operator's choice) are not.
    pub fn is_trouble(self) -> bool {
        matches!(
            self,
            AgentState::Stale
                | AgentState::Reviving
                | AgentState::Dead
                | AgentState::AwaitingApproval
                | AgentState::Abandoned
        )
    }

    /// Its place in [`AgentState::BY_URGENCY`].
    pub fn urgency(self) -> usize {
        AgentState::BY_URGENCY
            .iter()
            .position(|s| *s == self)
            .unwrap_or(AgentState::BY_URGENCY.len())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Unknown => "unknown",
            AgentState::Healthy => "healthy",
            AgentState::Stale => "stale",
            AgentState::Reviving => "reviving",
            AgentState::Exited => "exited",
            AgentState::Dead => "dead",
            AgentState::AwaitingApproval => "awaiting_approval",
            AgentState::Abandoned => "abandoned",
            AgentState::Frozen => "frozen",
        }
    }
}

/// One agent's entry in `agent_health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub healthy: bool,
    /// Unix seconds of the last good heartbeat (clamped), if any.
    pub last_seen: Option<f64>,
    #[serde(default)]
    pub revive_count: u32,
    #[serde(default)]
    pub state: AgentState,
    /// Pid of the instance the daemon started; `null` if none (always
    /// present: BRIEF 6 lists it).
    #[serde(default)]
    pub pid: Option<i32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The whole `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellState {
    pub cell_uuid: String,
    pub daemon_pid: Option<u32>,
    /// Unix seconds of the daemon's last pass over this cell.
    pub last_poll: Option<f64>,
    #[serde(default)]
    pub agent_health: BTreeMap<String, AgentHealth>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CellState {
    pub fn from_slice(bytes: &[u8]) -> Result<CellState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        crate::json::document(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_state_file_loads() {
        let s = CellState::from_slice(
            br#"{"cell_uuid":"a3f7c901-1234-4b5e-8def-000000000001","daemon_pid":99001,
                "last_poll":1744000000.0,"agent_health":{"claude":{"healthy":true,
                "last_seen":1744000000.0,"revive_count":0}}}"#,
        )
        .expect("parse");
        assert_eq!(s.agent_health["claude"].state, AgentState::Unknown);
        assert!(s.agent_health["claude"].healthy);
    }

    #[test]
    fn states_serialise_as_documented() {
        assert_eq!(
            serde_json::to_string(&AgentState::AwaitingApproval).expect("ser"),
            "\"awaiting_approval\""
        );
    }
}
