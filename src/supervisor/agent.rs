//! One agent's health as a state machine over time. Pure: every function
//! takes `now` (unix seconds) and returns what happened; nothing here reads
//! a clock or a file.

use crate::cell::settings::AgentSettings;
use crate::state::AgentState;

/// Where an agent stands. Each state carries the data it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// No heartbeat seen yet; judged from `since`, when the daemon first
    /// saw the agent.
    Waiting { since: f64 },
    /// Beating within its stale threshold.
    Healthy,
    /// Silent past its stale threshold since `since`.
    Stale { since: f64 },
    /// Silent past `resurrect_after` since `since`: due for revival.
    Due { since: f64 },
}

/// A change worth telling the world about.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Went stale: last good heartbeat (if any) and how old it was.
    Stale { last_seen: Option<f64>, age_s: f64 },
    /// Beat again after being stale or due.
    Recovered,
    /// Reached `resurrect_after` without a heartbeat.
    Due,
    /// A heartbeat's `status` field changed (or the first one arrived).
    Status(String),
    /// A newer heartbeat was accepted (for `events.heartbeats = "all"`).
    Beat(Option<String>),
}

/// What the supervisor knows of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSup {
    pub settings: AgentSettings,
    /// Unix seconds of the newest accepted heartbeat (clamped).
    pub last_seen: Option<f64>,
    /// `status` of the newest heartbeat that had one.
    pub last_status: Option<String>,
    pub health: Health,
    /// Revivals since the count last reset (kept across daemon restarts).
    pub revive_count: u32,
}

impl AgentSup {
    /// An agent first seen at `now`.
    pub fn new(settings: AgentSettings, now: f64) -> AgentSup {
        AgentSup {
            settings,
            last_seen: None,
            last_status: None,
            health: Health::Waiting { since: now },
            revive_count: 0,
        }
    }

    /// The instant of the next transition if no heartbeat arrives, or
    /// `None` if nothing more happens by itself.
    pub fn deadline(&self) -> Option<f64> {
        let stale = self.settings.stale_threshold.as_secs_f64();
        let revive = self.settings.resurrect_after.as_secs_f64();
        match &self.health {
            Health::Waiting { since } => Some(since + stale),
            Health::Healthy => self.last_seen.map(|seen| seen + stale),
            // Revival counts from the last sign of life: the last heartbeat,
            // or for an agent never heard from, when it went stale minus the
            // threshold (= when it was first seen).
            Health::Stale { since } => Some(self.last_seen.unwrap_or(since - stale) + revive),
            Health::Due { .. } => None,
        }
    }

    /// Applies every transition whose deadline is at or before `now`.
    /// This and [`AgentSup::heartbeat`] are the only places health moves.
    pub fn advance(&mut self, now: f64) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Some(deadline) = self.deadline().filter(|d| *d <= now) {
            match self.health {
                Health::Waiting { since } => {
                    self.health = Health::Stale { since: deadline };
                    changes.push(Change::Stale {
                        last_seen: None,
                        age_s: round_ms(now - since),
                    });
                }
                Health::Healthy => {
                    self.health = Health::Stale { since: deadline };
                    let seen = self.last_seen.unwrap_or(deadline);
                    changes.push(Change::Stale {
                        last_seen: self.last_seen,
                        age_s: round_ms(now - seen),
                    });
                }
                Health::Stale { .. } => {
                    self.health = Health::Due { since: deadline };
                    changes.push(Change::Due);
                }
                Health::Due { .. } => break,
            }
        }
        changes
    }

    /// Takes a heartbeat seen at `seen` (already clamped) carrying
    /// `status`. Heartbeats no newer than the last one change nothing, so
    /// re-reading a file (rescan, duplicate inotify events) is harmless.
    pub fn heartbeat(&mut self, seen: f64, status: Option<&str>, now: f64) -> Vec<Change> {
        if self.last_seen.is_some_and(|last| seen <= last) {
            return Vec::new();
        }
        let mut changes = Vec::new();
        self.last_seen = Some(seen);
        changes.push(Change::Beat(status.map(str::to_string)));
        if let Some(status) = status
            && self.last_status.as_deref() != Some(status)
        {
            self.last_status = Some(status.to_string());
            changes.push(Change::Status(status.to_string()));
        }
        let fresh = now - seen < self.settings.stale_threshold.as_secs_f64();
        match self.health {
            Health::Stale { .. } | Health::Due { .. } if fresh => {
                self.health = Health::Healthy;
                changes.push(Change::Recovered);
            }
            Health::Waiting { .. } => {
                // An old first heartbeat is judged at once by `advance`.
                self.health = Health::Healthy;
            }
            _ => {}
        }
        changes.extend(self.advance(now));
        changes
    }

    /// New settings (a `cell.json` edit or a config reload). The caller
    /// reschedules; `advance` applies any deadline already passed.
    pub fn set_settings(&mut self, settings: AgentSettings) {
        self.settings = settings;
    }

    /// The state name for `state.json` and `status`. `frozen_cell`: a due
    /// agent of a frozen cell waits, it is not revived.
    pub fn state(&self, frozen_cell: bool) -> AgentState {
        match self.health {
            Health::Waiting { .. } => AgentState::Unknown,
            Health::Healthy => AgentState::Healthy,
            Health::Stale { .. } => AgentState::Stale,
            Health::Due { .. } if frozen_cell => AgentState::Frozen,
            Health::Due { .. } => AgentState::Stale,
        }
    }

    pub fn is_due(&self) -> bool {
        matches!(self.health, Health::Due { .. })
    }
}

/// Seconds rounded to milliseconds, for event fields.
pub fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::manifest::{RestartPolicy, RevivePolicy};
    use std::time::Duration;

    fn settings(stale: f64, revive: f64) -> AgentSettings {
        AgentSettings {
            stale_threshold: Duration::from_secs_f64(stale),
            resurrect_after: Duration::from_secs_f64(revive),
            revive_policy: RevivePolicy::Yes,
            max_revive_attempts: 3,
            restart: RestartPolicy::OnFailure,
            autostart: true,
        }
    }

    fn agent() -> AgentSup {
        AgentSup::new(settings(60.0, 120.0), 1000.0)
    }

    #[test]
    fn an_agent_never_heard_from_goes_stale_then_due_from_first_sight() {
        let mut a = agent();
        assert_eq!(a.deadline(), Some(1060.0));
        assert_eq!(a.advance(1059.999), vec![]);
        assert_eq!(a.state(false), AgentState::Unknown);
        assert_eq!(
            a.advance(1060.0),
            vec![Change::Stale {
                last_seen: None,
                age_s: 60.0
            }]
        );
        assert_eq!(a.deadline(), Some(1120.0));
        assert_eq!(a.advance(1120.0), vec![Change::Due]);
        assert!(a.is_due());
        assert_eq!(a.deadline(), None);
        assert_eq!(a.advance(5000.0), vec![]);
    }

    #[test]
    fn heartbeats_move_the_deadline_and_recover() {
        let mut a = agent();
        let c = a.heartbeat(1010.0, Some("thinking"), 1010.0);
        assert_eq!(
            c,
            vec![
                Change::Beat(Some("thinking".into())),
                Change::Status("thinking".into())
            ]
        );
        assert_eq!(a.state(false), AgentState::Healthy);
        assert_eq!(a.deadline(), Some(1070.0));
        // Same status again: a beat, no status change.
        assert_eq!(
            a.heartbeat(1020.0, Some("thinking"), 1020.0),
            vec![Change::Beat(Some("thinking".into()))]
        );
        assert_eq!(a.deadline(), Some(1080.0));
        let c = a.advance(1080.5);
        assert_eq!(
            c,
            vec![Change::Stale {
                last_seen: Some(1020.0),
                age_s: 60.5
            }]
        );
        assert_eq!(
            a.deadline(),
            Some(1140.0),
            "due at last_seen + resurrect_after"
        );
        let c = a.heartbeat(1100.0, Some("thinking"), 1100.0);
        assert_eq!(
            c,
            vec![Change::Beat(Some("thinking".into())), Change::Recovered]
        );
        assert_eq!(a.state(false), AgentState::Healthy);
    }

    #[test]
    fn a_due_agent_recovers_too() {
        let mut a = agent();
        a.advance(2000.0);
        assert!(a.is_due());
        let c = a.heartbeat(2001.0, None, 2001.0);
        assert_eq!(c, vec![Change::Beat(None), Change::Recovered]);
    }

    #[test]
    fn old_or_repeated_heartbeats_change_nothing() {
        let mut a = agent();
        a.heartbeat(1010.0, Some("s"), 1010.0);
        assert_eq!(a.heartbeat(1010.0, Some("other"), 1011.0), vec![]);
        assert_eq!(a.heartbeat(1005.0, Some("other"), 1011.0), vec![]);
        assert_eq!(a.last_status.as_deref(), Some("s"));
    }

    #[test]
    fn a_first_heartbeat_that_is_already_old_is_stale_at_once() {
        let mut a = agent();
        let c = a.heartbeat(900.0, None, 1000.0);
        assert_eq!(
            c,
            vec![
                Change::Beat(None),
                Change::Stale {
                    last_seen: Some(900.0),
                    age_s: 100.0
                }
            ]
        );
        // And so old it is due as well.
        let mut b = agent();
        let c = b.heartbeat(800.0, None, 1000.0);
        assert_eq!(c.last(), Some(&Change::Due));
    }

    #[test]
    fn a_stale_heartbeat_does_not_recover() {
        let mut a = agent();
        a.heartbeat(1000.0, None, 1000.0);
        a.advance(1061.0);
        // Newer, but still older than the threshold.
        assert_eq!(a.heartbeat(1000.5, None, 1062.0), vec![Change::Beat(None)]);
        assert_eq!(a.state(false), AgentState::Stale);
    }

    #[test]
    fn lowering_the_threshold_applies_at_once() {
        let mut a = agent();
        a.heartbeat(1000.0, None, 1000.0);
        a.set_settings(settings(5.0, 10.0));
        assert_eq!(a.deadline(), Some(1005.0));
        let c = a.advance(1011.0);
        assert_eq!(
            c,
            vec![
                Change::Stale {
                    last_seen: Some(1000.0),
                    age_s: 11.0
                },
                Change::Due
            ]
        );
    }

    #[test]
    fn frozen_cells_hold_due_agents() {
        let mut a = agent();
        a.advance(2000.0);
        assert_eq!(a.state(true), AgentState::Frozen);
        assert_eq!(a.state(false), AgentState::Stale);
    }
}
