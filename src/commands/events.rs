//! `events`: print a cell's event stream (or every cell's, merged by time).

use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Context;
use crate::cell::{Cell, EVENTS, Listed};
use crate::cli::EventsArgs;
use crate::error::{Error, Result};
use crate::store::ReadError;

pub fn run(ctx: &Context, args: EventsArgs) -> Result<ExitCode> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
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
    let mut lines: Vec<(String, String)> = Vec::new();
    for cell in &cells {
        read_lines(cell, since, &mut lines)?;
    }
    if cells.len() > 1 {
        // RFC 3339 UTC with fixed precision sorts as text.
        lines.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut out = String::new();
    for (_, line) in &lines {
        if ctx.json {
            out.push_str(line);
        } else {
            out.push_str(&readable(line));
        }
        out.push('\n');
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Appends `(ts, line)` for each whole, parseable line at or after `since`.
fn read_lines(
    cell: &Cell,
    since: Option<DateTime<Utc>>,
    out: &mut Vec<(String, String)>,
) -> Result<()> {
    let file = match cell.dir.open_regular(EVENTS) {
        Ok((file, _)) => file,
        Err(ReadError::NotFound) => return Ok(()),
        Err(source) => {
            return Err(Error::Read {
                path: cell.dir.display(EVENTS),
                source,
            });
        }
    };
    for line in BufReader::new(file).lines() {
        let line = line?;
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let ts = obj
            .get("ts")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(since) = since {
            let at = DateTime::parse_from_rfc3339(&ts).map(|t| t.with_timezone(&Utc));
            if at.is_ok_and(|at| at < since) {
                continue;
            }
        }
        out.push((ts, line));
    }
    Ok(())
}

/// `--since`: RFC 3339, or unix seconds.
fn parse_since(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    s.parse::<f64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp_micros((secs * 1e6) as i64))
        .ok_or_else(|| {
            Error::Usage(format!(
                "--since {s:?}: give an RFC 3339 time (2026-01-02T03:04:05Z) or unix seconds"
            ))
        })
}

/// `ts  cell-prefix  event  key=value ...` for people.
fn readable(line: &str) -> String {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let cell = text("cell");
    let mut out = format!(
        "{}  {}  {:<19}",
        text("ts"),
        cell.get(..8).unwrap_or(&cell),
        text("event")
    );
    for (k, v) in &obj {
        if matches!(k.as_str(), "ts" | "event" | "cell") {
            continue;
        }
        match v {
            Value::String(s) => out.push_str(&format!(" {k}={s}")),
            other => out.push_str(&format!(" {k}={other}")),
        }
    }
    out.trim_end().to_string()
}
