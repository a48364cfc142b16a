//! Heartbeat files: `.lazarus/heartbeats/<agent>.json`, written by agents.
//!
//! Only `timestamp` is required, as unix seconds (float) or an RFC 3339
//! string. Agents in the wild truncate then write, so an empty or cut-off
//! file is [`HeartbeatError::Partial`]: keep the last good value and read
//! again on the next change; it is not a death and not an error to report.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// How far in the future a heartbeat may claim to be before it is clamped.
pub const FUTURE_SKEW_ALLOWANCE_S: f64 = 5.0;

/// A parsed heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heartbeat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A claim by the agent, not proof: never used to signal anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    /// Unix seconds.
    pub timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_uuid: Option<String>,
}

/// The file as written: only `timestamp` is typed strictly; the other
/// fields are informative, so a wrong type there is ignored, not an error.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(default, borrow)]
    timestamp: Option<Stamp<'a>>,
    #[serde(default, borrow)]
    agent: Option<Lenient<'a>>,
    #[serde(default, borrow)]
    pid: Option<Lenient<'a>>,
    #[serde(default, borrow)]
    cycle: Option<Lenient<'a>>,
    #[serde(default, borrow)]
    model: Option<Lenient<'a>>,
    #[serde(default, borrow)]
    status: Option<Lenient<'a>>,
    #[serde(default, borrow)]
    cell_uuid: Option<Lenient<'a>>,
}

/// `timestamp`: unix seconds or a string (parsed as RFC 3339 later).
enum Stamp<'a> {
    Seconds(f64),
    Text(Cow<'a, str>),
}

/// Any JSON value; strings and integers are kept, the rest ignored.
enum Lenient<'a> {
    Int(i64),
    Text(Cow<'a, str>),
    Other,
}

impl Lenient<'_> {
    fn text(self) -> Option<String> {
        match self {
            Lenient::Text(s) => Some(s.into_owned()),
            _ => None,
        }
    }

    fn int(self) -> Option<i64> {
        match self {
            Lenient::Int(i) => Some(i),
            _ => None,
        }
    }
}

// Hand-written visitors: serde's `untagged` would buffer each value and
// build an error for every variant that does not match, on the daemon's
// hot path.
impl<'de: 'a, 'a> Deserialize<'de> for Stamp<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Stamp<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("unix seconds or an RFC 3339 string")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Stamp::Seconds(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Stamp::Seconds(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Stamp::Seconds(v as f64))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Stamp::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Stamp::Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Lenient<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Lenient::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Lenient::Other, Lenient::Int))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient::Other)
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient::Text(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Lenient::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Lenient::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a heartbeat file's content was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeartbeatError {
    /// Empty or cut off mid-write: read again on the next change.
    #[error("is empty or half-written")]
    Partial,
    /// Whole but wrong: an `invalid_input` for the daemon.
    #[error("{0}")]
    Invalid(String),
}

impl Heartbeat {
    /// Parses a heartbeat file's bytes. This is the daemon's hot path, so
    /// it deserialises into borrowed fields and skips unknown ones instead
    /// of building a JSON tree.
    pub fn parse(bytes: &[u8]) -> Result<Heartbeat, HeartbeatError> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Err(HeartbeatError::Partial),
            // serde would take an array as the struct's fields in order.
            Some(b) if *b != b'{' => {
                return Err(HeartbeatError::Invalid("not a JSON object".into()));
            }
            Some(_) => {}
        }
        let raw: Raw<'_> = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_eof() {
                HeartbeatError::Partial
            } else if e.is_data() {
                HeartbeatError::Invalid(e.to_string())
            } else {
                HeartbeatError::Invalid(format!("not JSON: {e}"))
            }
        })?;
        let timestamp = match raw.timestamp {
            Some(Stamp::Seconds(secs)) => secs,
            Some(Stamp::Text(s)) => chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| t.timestamp_micros() as f64 / 1e6)
                .map_err(|e| {
                    HeartbeatError::Invalid(format!("timestamp {s:?} is not RFC 3339: {e}"))
                })?,
            None => return Err(HeartbeatError::Invalid("timestamp is missing".into())),
        };
        if !timestamp.is_finite() || timestamp < 0.0 {
            return Err(HeartbeatError::Invalid(format!(
                "timestamp {timestamp} is not a time"
            )));
        }
        let text = |v: Option<Lenient<'_>>| v.and_then(Lenient::text);
        Ok(Heartbeat {
            agent: text(raw.agent),
            pid: raw.pid.and_then(Lenient::int),
            timestamp,
            cycle: raw
                .cycle
                .and_then(Lenient::int)
                .and_then(|c| u64::try_from(c).ok()),
            model: text(raw.model),
            status: text(raw.status),
            cell_uuid: text(raw.cell_uuid),
        })
    }

    /// When the agent was last seen alive, given the time `now` (unix
    /// seconds) at which the file was read: its timestamp, clamped to `now`
    /// if it lies further in the future than the skew allowance.
    pub fn seen_at(&self, now: f64) -> f64 {
        if self.timestamp > now + FUTURE_SKEW_ALLOWANCE_S {
            now
        } else {
            self.timestamp
        }
    }

    /// The file's bytes, with a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_heartbeat() {
        let hb = Heartbeat::parse(
            br#"{"agent":"claude","pid":12345,"timestamp":1744000000.0,"cycle":42,
                "model":"claude-opus-4-6","status":"thinking",
                "cell_uuid":"a3f7c901-1234-4b5e-8def-000000000001"}"#,
        )
        .expect("parse");
        assert_eq!(hb.timestamp, 1744000000.0);
        assert_eq!(hb.pid, Some(12345));
        assert_eq!(hb.status.as_deref(), Some("thinking"));
    }

    #[test]
    fn only_timestamp_is_required_and_rfc3339_is_accepted() {
        let hb = Heartbeat::parse(br#"{"timestamp":"2026-04-06T00:00:01.5Z"}"#).expect("parse");
        assert_eq!(hb.timestamp, 1775433601.5);
        assert_eq!(hb.agent, None);
    }

    #[test]
    fn torn_writes_are_partial_not_invalid() {
        for torn in [
            &b""[..],
            b"  \n",
            b"{\"timestamp\": 17",
            b"{\"agent\":\"a\",",
        ] {
            assert_eq!(
                Heartbeat::parse(torn),
                Err(HeartbeatError::Partial),
                "{torn:?}"
            );
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for bad in [
            &b"hello"[..],
            b"[1]",
            b"[1775433601.5]",
            b"{}",
            b"{\"timestamp\":true}",
            b"{\"timestamp\":\"yesterday\"}",
            b"{\"timestamp\":-5}",
        ] {
            assert!(
                matches!(Heartbeat::parse(bad), Err(HeartbeatError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn informative_fields_of_the_wrong_type_are_ignored() {
        let hb = Heartbeat::parse(br#"{"timestamp":5,"pid":"abc","status":7,"extra":[1]}"#)
            .expect("parse");
        assert_eq!((hb.timestamp, hb.pid, hb.status), (5.0, None, None));
    }

    #[test]
    fn future_timestamps_are_clamped() {
        let hb = Heartbeat::parse(br#"{"timestamp":2000}"#).expect("parse");
        assert_eq!(hb.seen_at(1000.0), 1000.0);
        assert_eq!(hb.seen_at(1996.0), 2000.0);
    }
}
