//! The human format of `events`: one line per event — local time with
//! milliseconds, the cell's short id, the event name, then its fields as
//! `key=value` — every agent-written part escaped ([`crate::text`]), and
//! colour only when asked for ([`Style`]).

use chrono::{DateTime, Local};
use serde_json::Value;

use super::stream::Line;
use crate::text::escape;

/// Colour: only on a terminal, never with `NO_COLOR` set (no-color.org)
/// or on a `dumb` terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    pub fn for_stdout() -> Style {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Style {
            colour: std::io::stdout().is_terminal() && !no_color && !dumb,
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour && !code.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The colour of an event name: red for what needs a human, yellow for
/// trouble under way, green for recovery, cyan for the cell's life.
fn colour_of(event: &str) -> &'static str {
    match event {
        "agent_dead" | "revive_failed" | "revive_exhausted" | "revive_denied" | "invalid_input"
        | "checkpoint_failed" => "31",
        "agent_stale" | "agent_exited" | "revive_requested" => "33",
        "agent_recovered"
        | "agent_revived"
        | "agent_started"
        | "revive_approved"
        | "checkpoint_created"
        | "checkpoint_restored" => "32",
        "cell_created"
        | "cell_status_changed"
        | "agent_joined"
        | "agent_left"
        | "agent_substituted" => "36",
        _ => "",
    }
}

/// The width the event name is padded to (the longest name).
const EVENT_WIDTH: usize = 19;

/// An RFC 3339 time in local time with milliseconds; anything else as it
/// is, escaped.
pub fn local_time(ts: &str) -> String {
    match DateTime::parse_from_rfc3339(ts) {
        Ok(t) => t
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        Err(_) => escape(ts).into_owned(),
    }
}

/// Fields that hold an instant as unix seconds.
fn is_instant(key: &str) -> bool {
    matches!(key, "last_seen" | "started_at" | "since" | "at")
}

/// Unix seconds as local time with milliseconds, as [`local_time`].
pub fn local_unix(secs: f64) -> String {
    match DateTime::from_timestamp_millis((secs * 1000.0).round() as i64) {
        Some(t) if secs.is_finite() => t
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        _ => secs.to_string(),
    }
}

/// A line of the stream for people.
pub fn render(line: &Line, style: Style) -> String {
    match line {
        Line::Event {
            text, cell, claims, ..
        } => event(text, cell, claims.as_deref(), style),
        Line::Corrupt {
            cell,
            file,
            number,
            why,
            preview,
        } => {
            let at = if file == crate::eventlog::LOG {
                String::new()
            } else {
                format!("{} ", escape(file))
            };
            format!(
                "{:<23}  {}  {}",
                "-",
                short(cell),
                style.paint(
                    "31",
                    &format!("{at}line {number} is corrupt ({why}): {preview}")
                )
            )
        }
    }
}

/// What `--json` says on stderr of a corrupt line.
pub fn corrupt_note(line: &Line) -> Option<String> {
    match line {
        Line::Corrupt {
            cell,
            file,
            number,
            why,
            preview,
        } => Some(format!(
            "cell {}: {} line {number} is corrupt ({why}): {preview}",
            short(cell),
            escape(file)
        )),
        Line::Event { .. } => None,
    }
}

/// A cell's short id, escaped (a directory name is an operator's, but
/// printed raw a newline in it would split a line).
fn short(cell: &str) -> String {
    let cut = cell.char_indices().nth(8).map_or(cell.len(), |(i, _)| i);
    escape(&cell[..cut]).into_owned()
}

/// `time  cell  event  key=value …`. The cell shown is the stream's; a
/// line that names another (`claims`) says so as `claims_cell=`.
fn event(line: &str, cell: &str, claims: Option<&str>, style: Style) -> String {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
        return escape(line).into_owned();
    };
    let text = |k: &str| escape(obj.get(k).and_then(Value::as_str).unwrap_or("?")).into_owned();
    let name = text("event");
    let ts = obj.get("ts").and_then(Value::as_str).unwrap_or("?");
    let mut out = format!(
        "{}  {}  {}",
        style.paint("2", &format!("{:<23}", local_time(ts))),
        short(cell),
        style.paint(
            colour_of(&name),
            &format!("{name:<width$}", width = EVENT_WIDTH)
        )
    );
    if let Some(other) = claims {
        out.push_str(&format!(" claims_cell={}", escape(other)));
    }
    // The agent first: it is what a reader looks for.
    let fields = obj
        .iter()
        .filter(|(k, _)| k.as_str() == "agent")
        .chain(obj.iter().filter(|(k, _)| k.as_str() != "agent"));
    for (k, v) in fields {
        if matches!(k.as_str(), "ts" | "event" | "cell") {
            continue;
        }
        let value = match v {
            // Unix seconds are for programs: people get a local time.
            Value::Number(n) if is_instant(k) && n.as_f64().is_some() => {
                format!("\"{}\"", local_unix(n.as_f64().unwrap_or_default()))
            }
            // Quoted when it holds spaces or nothing: a value padded with
            // blanks cannot pass for the start of another line.
            Value::String(s) if s.is_empty() || s.contains(char::is_whitespace) => {
                format!("\"{}\"", escape(s).replace('"', "\\\""))
            }
            Value::String(s) => escape(s).into_owned(),
            other => escape(&other.to_string()).into_owned(),
        };
        out.push_str(&format!(" {}={value}", escape(k)));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style { colour: false };

    fn ev(text: &str, cell: &str, claims: Option<&str>) -> Line {
        Line::Event {
            text: text.into(),
            cell: cell.into(),
            claims: claims.map(str::to_string),
            unnamed: false,
        }
    }

    #[test]
    fn human_output_escapes_agent_text() {
        let line = r#"{"ts":"t","event":"heartbeat","cell":"c","status":"\u001b[2K\u001b[1Aok","agent":"a"}"#;
        assert_eq!(
            render(&ev(line, "c", None), PLAIN),
            "t                        c  heartbeat           agent=a status=\\x1b[2K\\x1b[1Aok"
        );
        assert_eq!(
            render(
                &ev(
                    r#"{"ts":"t","event":"agent_dead","cell":"victim"}"#,
                    "mine",
                    Some("victim")
                ),
                PLAIN
            ),
            "t                        mine  agent_dead          claims_cell=victim"
        );
    }

    #[test]
    fn times_are_local_with_milliseconds() {
        let local = |ts: &str| {
            DateTime::parse_from_rfc3339(ts)
                .expect("time")
                .with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        };
        let shown = local_time("2026-12-02T04:05:06.789Z");
        assert_eq!(shown, format!("{}.789", local("2026-12-02T04:05:06Z")));
        // The same instant written with another offset reads the same.
        assert_eq!(local_time("2026-12-02T06:05:06.789+02:00"), shown);
        assert_eq!(local_time("not\x1ba time"), "not\\x1ba time");
        // An epoch field reads as the same local time, never raw.
        let line = r#"{"ts":"2026-12-02T04:05:06.789Z","event":"agent_stale","cell":"c","agent":"a","last_seen":1796184306.789,"age_s":12.5}"#;
        let text = render(&ev(line, "c", None), PLAIN);
        let seen = local_unix(1796184306.789);
        assert!(text.contains(&format!("last_seen=\"{seen}\"")), "{text}");
        assert!(!text.contains("1796184306"), "{text}");
        assert!(text.contains("age_s=12.5"), "{text}");
    }

    #[test]
    fn colour_only_when_asked() {
        let line = ev(
            r#"{"ts":"t","event":"agent_dead","cell":"c","agent":"a"}"#,
            "c",
            None,
        );
        assert!(!render(&line, PLAIN).contains('\x1b'));
        let coloured = render(&line, Style { colour: true });
        assert!(coloured.contains("\x1b[31magent_dead"), "{coloured:?}");
    }
}
