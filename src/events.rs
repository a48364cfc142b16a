//! The event vocabulary of `logs/events.jsonl` and the line format.
//!
//! Every line is one JSON object with `ts` (RFC 3339 UTC, milliseconds),
//! `event` and `cell` first, then the event's own fields.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// Every event name the program writes (BRIEF section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    CellCreated,
    AgentJoined,
    AgentLeft,
    Heartbeat,
    AgentStale,
    AgentRecovered,
    AgentStarted,
    AgentExited,
    AgentRevived,
    ReviveFailed,
    ReviveExhausted,
    AgentDead,
    ReviveRequested,
    ReviveApproved,
    ReviveDenied,
    AgentSubstituted,
    CellStatusChanged,
    CheckpointCreated,
    CheckpointRestored,
    /// A checkpoint could not be taken (not in BRIEF's table; its words).
    CheckpointFailed,
    InvalidInput,
    /// The daemon took an edit of an agent's settings (not in BRIEF's
    /// table): `agent`, `changed` (each setting that changed, and its new
    /// value; `env` is only named, its values may be secrets).
    SettingsChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 22] = [
        EventKind::CellCreated,
        EventKind::AgentJoined,
        EventKind::AgentLeft,
        EventKind::Heartbeat,
        EventKind::AgentStale,
        EventKind::AgentRecovered,
        EventKind::AgentStarted,
        EventKind::AgentExited,
        EventKind::AgentRevived,
        EventKind::ReviveFailed,
        EventKind::ReviveExhausted,
        EventKind::AgentDead,
        EventKind::ReviveRequested,
        EventKind::ReviveApproved,
        EventKind::ReviveDenied,
        EventKind::AgentSubstituted,
        EventKind::CellStatusChanged,
        EventKind::CheckpointCreated,
        EventKind::CheckpointRestored,
        EventKind::CheckpointFailed,
        EventKind::InvalidInput,
        EventKind::SettingsChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CellCreated => "cell_created",
            EventKind::AgentJoined => "agent_joined",
            EventKind::AgentLeft => "agent_left",
            EventKind::Heartbeat => "heartbeat",
            EventKind::AgentStale => "agent_stale",
            EventKind::AgentRecovered => "agent_recovered",
            EventKind::AgentStarted => "agent_started",
            EventKind::AgentExited => "agent_exited",
            EventKind::AgentRevived => "agent_revived",
            EventKind::ReviveFailed => "revive_failed",
            EventKind::ReviveExhausted => "revive_exhausted",
            EventKind::AgentDead => "agent_dead",
            EventKind::ReviveRequested => "revive_requested",
            EventKind::ReviveApproved => "revive_approved",
            EventKind::ReviveDenied => "revive_denied",
            EventKind::AgentSubstituted => "agent_substituted",
            EventKind::CellStatusChanged => "cell_status_changed",
            EventKind::CheckpointCreated => "checkpoint_created",
            EventKind::CheckpointRestored => "checkpoint_restored",
            EventKind::CheckpointFailed => "checkpoint_failed",
            EventKind::InvalidInput => "invalid_input",
            EventKind::SettingsChanged => "settings_changed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One event, before it gets its timestamp and cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub fields: Map<String, Value>,
}

impl Event {
    pub fn new(kind: EventKind) -> Event {
        Event {
            kind,
            fields: Map::new(),
        }
    }

    /// Adds a field (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    /// The JSON line, newline included. Own fields never shadow `ts`,
    /// `event` or `cell`.
    pub fn to_line(&self, cell: &str, at: DateTime<Utc>) -> Vec<u8> {
        let mut obj = Map::with_capacity(self.fields.len() + 3);
        obj.insert("ts".into(), Value::String(timestamp(at)));
        obj.insert("event".into(), Value::String(self.kind.as_str().into()));
        obj.insert("cell".into(), Value::String(cell.into()));
        for (k, v) in &self.fields {
            if !obj.contains_key(k) {
                obj.insert(k.clone(), v.clone());
            }
        }
        let mut line = serde_json::to_vec(&Value::Object(obj)).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// RFC 3339 UTC with milliseconds, as in every event's `ts`.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let at = DateTime::from_timestamp_millis(1_775_433_600_123).expect("time");
        let line = Event::new(EventKind::AgentJoined)
            .with("agent", "claude")
            .with("cell", "spoof")
            .to_line("u-1", at);
        assert_eq!(
            String::from_utf8(line).expect("utf8"),
            "{\"ts\":\"2026-04-06T00:00:00.123Z\",\"event\":\"agent_joined\",\"cell\":\"u-1\",\"agent\":\"claude\"}\n"
        );
    }

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }
}
