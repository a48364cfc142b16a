//! `events`: print a cell's event stream (or every cell's, merged by time).
//!
//! The stream is in the cell, where agents can write: a line may be
//! corrupt (not UTF-8, not JSON, cut off), enormous, or full of terminal
//! escapes. A corrupt line is shown as such, in its place, and hides
//! nothing else; no line is read beyond [`LINE_LIMIT`]; human output is
//! escaped ([`crate::text`]).

use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Context;
use crate::cell::{Cell, EVENTS, Listed};
use crate::cli::EventsArgs;
use crate::error::{Error, Result};
use crate::store::ReadError;
use crate::text::{escape, escape_bytes};

/// Longest line read whole; the rest of a longer one is skipped.
pub const LINE_LIMIT: usize = 1024 * 1024;
/// How much of a corrupt line is shown.
const PREVIEW: usize = 120;

/// One line of a stream, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A JSON object; `ts` is its timestamp ("" if it has none). `claims`:
    /// the other cell its `cell` field names, if it does not name the
    /// cell whose stream it is in (an agent can append anything to its
    /// own stream, never to another's).
    Event {
        ts: String,
        text: String,
        /// The cell whose stream it is in.
        cell: std::sync::Arc<str>,
        claims: Option<String>,
    },
    /// Anything else, with where it is and why it was not taken.
    Corrupt {
        cell: String,
        number: u64,
        why: String,
        preview: String,
    },
}

pub fn run(ctx: &Context, args: EventsArgs) -> Result<ExitCode> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let single = args.cell.is_some();
    let cells: Vec<Cell> = match &args.cell {
        Some(prefix) => vec![ctx.root.resolve(prefix)?],
        None => ctx
            .root
            .list()?
            .into_iter()
            .filter_map(|l| match l {
                Listed::Cell { cell, .. } => Some(cell),
                Listed::Unreadable { .. } => None,
            })
            .collect(),
    };
    // (ts to sort by, line): a corrupt line sorts with the line before it.
    let mut lines: Vec<(String, Line)> = Vec::new();
    for cell in &cells {
        match read_lines(cell, since) {
            Ok(found) => lines.extend(found),
            Err(e) if single => return Err(e),
            // One unreadable stream hides no other.
            Err(e) => eprintln!("lazarus-pit: {e}"),
        }
    }
    if cells.len() > 1 {
        // RFC 3339 UTC with fixed precision sorts as text; stable, so each
        // file's own order is kept among equal times.
        lines.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut out = String::new();
    for (_, line) in &lines {
        match line {
            Line::Event { text, claims, .. } if ctx.json => {
                if let Some(other) = claims {
                    eprintln!(
                        "lazarus-pit: a line in another cell's stream claims to be of cell {}",
                        escape(other)
                    );
                }
                out.push_str(text);
                out.push('\n');
            }
            Line::Event {
                text, cell, claims, ..
            } => {
                out.push_str(&readable(text, cell, claims.as_deref()));
                out.push('\n');
            }
            Line::Corrupt {
                cell,
                number,
                why,
                preview,
            } => {
                let note = format!(
                    "{}: line {number} is corrupt ({why}): {preview}",
                    cell.get(..8).unwrap_or(cell)
                );
                if ctx.json {
                    eprintln!("lazarus-pit: cell {note}");
                } else {
                    out.push_str(&format!("{:<24}  {note}\n", "-"));
                }
            }
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Every line of the cell's stream at or after `since`, each as an event
/// or as a corrupt line (corrupt lines are kept whatever `since` says:
/// their time is unknown).
fn read_lines(cell: &Cell, since: Option<DateTime<Utc>>) -> Result<Vec<(String, Line)>> {
    let file = match cell.dir.open_regular(EVENTS) {
        Ok((file, _)) => file,
        Err(ReadError::NotFound) => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: cell.dir.display(EVENTS),
                source,
            });
        }
    };
    let mut out = Vec::new();
    let mut last_ts = String::new();
    let mut reader = BufReader::new(file);
    let mut number = 0;
    let id: std::sync::Arc<str> = cell.id.as_str().into();
    while let Some((bytes, cut)) = next_line(&mut reader)? {
        number += 1;
        let line = parse_line(&id, number, &bytes, cut);
        match &line {
            Line::Event { ts, .. } => {
                if !ts.is_empty() {
                    last_ts = ts.clone();
                }
                if let Some(since) = since {
                    let at = DateTime::parse_from_rfc3339(ts).map(|t| t.with_timezone(&Utc));
                    if at.is_ok_and(|at| at < since) {
                        continue;
                    }
                }
            }
            Line::Corrupt { .. } => {}
        }
        out.push((last_ts.clone(), line));
    }
    Ok(out)
}

/// The next line (without its newline) and whether it was longer than
/// [`LINE_LIMIT`] (the rest is skipped, never held in memory). `None` at
/// the end.
pub fn next_line(reader: &mut impl BufRead) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    let mut line = Vec::new();
    let mut cut = false;
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any.then_some((line, cut)));
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = LINE_LIMIT.saturating_sub(line.len());
        if chunk.len() > room {
            cut = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some((line, cut)));
        }
    }
}

/// One line of a stream, taken apart.
pub fn parse_line(cell: &std::sync::Arc<str>, number: u64, bytes: &[u8], cut: bool) -> Line {
    let corrupt = |why: String| Line::Corrupt {
        cell: cell.to_string(),
        number,
        why,
        preview: preview(bytes),
    };
    if cut {
        return corrupt(format!("longer than {LINE_LIMIT} bytes"));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return corrupt("not UTF-8".into());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Line::Event {
            ts: obj
                .get("ts")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            text: text.to_string(),
            cell: cell.clone(),
            claims: match obj.get("cell").and_then(Value::as_str) {
                Some(named) if named == &**cell => None,
                Some(named) => Some(named.to_string()),
                None => None,
            },
        },
        Ok(_) => corrupt("not a JSON object".into()),
        Err(e) => corrupt(format!("not JSON: {e}")),
    }
}

/// The start of a corrupt line, escaped.
fn preview(bytes: &[u8]) -> String {
    let mut text = escape_bytes(&bytes[..bytes.len().min(PREVIEW)]);
    if bytes.len() > PREVIEW {
        text.push('…');
    }
    text
}

/// `--since`: RFC 3339, or unix seconds.
fn parse_since(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    s.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite())
        .and_then(|secs| DateTime::from_timestamp_micros((secs * 1e6) as i64))
        .ok_or_else(|| {
            Error::Usage(format!(
                "--since {s:?}: give an RFC 3339 time (2026-01-02T03:04:05Z) or unix seconds"
            ))
        })
}

/// `ts  cell-prefix  event  key=value ...` for people, every agent-written
/// part escaped. The cell shown is the stream's; a line that names another
/// (`claims`) says so as `claims_cell=`.
fn readable(line: &str, cell: &str, claims: Option<&str>) -> String {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
        return escape(line).into_owned();
    };
    let text = |k: &str| escape(obj.get(k).and_then(Value::as_str).unwrap_or("?")).into_owned();
    let mut out = format!(
        "{}  {}  {:<19}",
        text("ts"),
        cell.get(..8).unwrap_or(cell),
        text("event")
    );
    if let Some(other) = claims {
        out.push_str(&format!(" claims_cell={}", escape(other)));
    }
    for (k, v) in &obj {
        if matches!(k.as_str(), "ts" | "event" | "cell") {
            continue;
        }
        let value = match v {
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

    fn lines(input: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut reader = BufReader::with_capacity(16, input);
        let mut out = Vec::new();
        while let Some(line) = next_line(&mut reader).expect("read") {
            out.push(line);
        }
        out
    }

    #[test]
    fn lines_are_split_and_a_torn_last_line_is_kept() {
        assert_eq!(
            lines(b"a\nbb\n\nccc"),
            vec![
                (b"a".to_vec(), false),
                (b"bb".to_vec(), false),
                (b"".to_vec(), false),
                (b"ccc".to_vec(), false)
            ]
        );
    }

    #[test]
    fn a_huge_line_is_cut_not_held() {
        let mut input = vec![b'x'; LINE_LIMIT + 10];
        input.extend_from_slice(b"\n{}\n");
        let got = lines(&input);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.len(), LINE_LIMIT);
        assert!(got[0].1);
        assert_eq!(got[1], (b"{}".to_vec(), false));
    }

    #[test]
    fn corrupt_lines_say_why_and_show_themselves_escaped() {
        let c: std::sync::Arc<str> = "c".into();
        let Line::Corrupt { why, preview, .. } = parse_line(&c, 3, b"\xff\x1b[2Kjunk", false)
        else {
            panic!()
        };
        assert_eq!(why, "not UTF-8");
        assert_eq!(preview, "\u{fffd}\\x1b[2Kjunk");
        assert!(matches!(
            parse_line(&c, 1, b"[1]", false),
            Line::Corrupt { .. }
        ));
        assert!(matches!(
            parse_line(&c, 1, br#"{"ts":"t","event":"e","cell":"c"}"#, false),
            Line::Event { claims: None, .. }
        ));
        // A line that names another cell is shown under its own stream's.
        let Line::Event { claims, .. } = parse_line(
            &c,
            1,
            br#"{"ts":"t","event":"agent_dead","cell":"other"}"#,
            false,
        ) else {
            panic!()
        };
        assert_eq!(claims.as_deref(), Some("other"));
    }

    #[test]
    fn human_output_escapes_agent_text() {
        let line = r#"{"ts":"t","event":"heartbeat","cell":"c","agent":"a","status":"\u001b[2K\u001b[1Aok"}"#;
        assert_eq!(
            readable(line, "c", None),
            "t  c  heartbeat           agent=a status=\\x1b[2K\\x1b[1Aok"
        );
        assert_eq!(
            readable(
                r#"{"ts":"t","event":"agent_dead","cell":"victim"}"#,
                "mine",
                Some("victim")
            ),
            "t  mine  agent_dead          claims_cell=victim"
        );
    }
}
