//! `events`: print the event stream of a cell, or of every cell merged in
//! time order, and with `--follow` keep printing new lines as they are
//! written ([`follow`]).
//!
//! `--json` passes each line through byte for byte; the human format is
//! [`format`]. Reading is [`stream`]: rotated generations first, a
//! corrupt line in its place, nothing longer than a bounded line held.

mod follow;
pub mod format;
pub mod stream;

use std::io::{self, Write};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Context;
use crate::cell::Cell;
use crate::cli::EventsArgs;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::text::escape;
use format::Style;
use stream::{CellStream, Line};

pub use stream::{LINE_LIMIT, next_line};

pub fn run(ctx: &Context, args: EventsArgs) -> Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, Utc::now()))
        .transpose()?;
    let filter = Filter::new(&args.event, args.agent.clone())?;
    let mut out = Output::new(ctx.json, filter);
    let result = (|| -> Result<()> {
        let single = args.cell.is_some();
        let cells = match &args.cell {
            Some(prefix) => vec![resolve(ctx, prefix)?],
            None => all_cells(ctx)?,
        };
        if args.follow {
            raise_open_files();
            return follow::run(ctx, cells, single, since, &mut out);
        }
        raise_open_files();
        let mut streams = Vec::with_capacity(cells.len());
        for cell in &cells {
            match CellStream::open(cell, since, false) {
                Ok(s) => streams.push(s),
                Err(e) if single => {
                    return Err(Error::Io(io::Error::new(
                        e.kind(),
                        format!("cell {}: {e}", cell.id),
                    )));
                }
                // One unreadable stream hides no other.
                Err(e) => eprintln!("lazarus-pit: cell {}: {}", cell.id, escape(&e.to_string())),
            }
        }
        stream::merge(&mut streams, |line| out.line(line))?;
        out.flush()?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `events | head`: the reader had enough.
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

/// One cell's event lines since `since`, as `events CELL --json` prints
/// them, each handed to `each`; an error of `each` (enough read) stops.
pub(crate) fn cell_lines(
    cell: &Cell,
    since: Option<DateTime<Utc>>,
    each: impl FnMut(&str) -> io::Result<()> + Send + 'static,
) -> Result<()> {
    let mut out = Output::each(each);
    let mut streams = vec![
        CellStream::open(cell, since, false)
            .map_err(|e| Error::Io(io::Error::new(e.kind(), format!("cell {}: {e}", cell.id))))?,
    ];
    stream::merge(&mut streams, |line| out.line(line))?;
    Ok(())
}

/// Follows every cell of the root from now on (new cells too), as `events
/// --follow --json` does, handing each new line to `each`. Runs until
/// `each` fails; blocking, so it has a thread of its own.
/// Lines longer than `longest` are left out (and said, once a minute per
/// cell): whoever holds them for slow readers holds them by count.
pub(crate) fn follow_lines(
    ctx: &Context,
    longest: usize,
    each: impl FnMut(&str) -> io::Result<()> + Send + 'static,
) -> Result<()> {
    let mut out = Output::each(each);
    out.longest = Some(longest);
    raise_open_files();
    follow::run(ctx, all_cells(ctx)?, false, None, &mut out)
}

/// Every cell of the root, whether its `cell.json` parses or not (an agent
/// that broke its manifest must not hide its stream, or the
/// `invalid_input` said of it).
fn all_cells(ctx: &Context) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    let mut names = ctx.root.cell_names()?;
    // Cells that lost their cell.json keep their stream (the daemon's own
    // lines about them among it).
    names.extend(ctx.root.lost_cells(|_| false)?);
    names.sort();
    for name in names {
        match ctx.root.cell(&name) {
            Ok(cell) => cells.push(cell),
            Err(e) => eprintln!(
                "lazarus-pit: cell {}: {}",
                escape(&name),
                escape(&e.to_string())
            ),
        }
    }
    Ok(cells)
}

/// The cell `prefix` names, also one that lost its `cell.json` (its
/// stream is still there to read).
fn resolve(ctx: &Context, prefix: &str) -> Result<Cell> {
    match ctx.root.resolve(prefix) {
        Err(e @ Error::CellNotFound { .. }) => {
            let wanted = prefix.to_ascii_lowercase();
            let lost: Vec<String> = ctx
                .root
                .lost_cells(|_| false)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.to_ascii_lowercase().starts_with(&wanted))
                .collect();
            match lost.as_slice() {
                [one] if !wanted.is_empty() => ctx.root.cell(one),
                _ => Err(e),
            }
        }
        other => other,
    }
}

/// One descriptor per cell stays open for the merge: as many as the hard
/// limit allows (a root can hold 10,000 cells).
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// `--event` and `--agent`.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    events: Vec<String>,
    agent: Option<String>,
}

impl Filter {
    fn new(events: &[String], agent: Option<String>) -> Result<Filter> {
        for name in events {
            if EventKind::parse(name).is_none() {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                let hint = match crate::text::closest(name, &names) {
                    Some(near) => format!("did you mean {near}?"),
                    None => format!("known: {}", names.join(", ")),
                };
                return Err(Error::Usage(format!(
                    "--event {:?} is not an event name; {hint}",
                    name
                )));
            }
        }
        Ok(Filter {
            events: events.to_vec(),
            agent,
        })
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.agent.is_none()
    }

    /// Whether an event line passes. A corrupt line always does: what it
    /// is cannot be told, and hiding it could hide an attack.
    fn admits(&self, line: &Line) -> bool {
        let Line::Event { text, .. } = line else {
            return true;
        };
        if self.is_empty() {
            return true;
        }
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        let field = |k: &str| obj.get(k).and_then(Value::as_str);
        (self.events.is_empty()
            || field("event").is_some_and(|e| self.events.iter().any(|w| w == e)))
            && self
                .agent
                .as_deref()
                .is_none_or(|want| field("agent") == Some(want))
    }
}

/// Where lines go: stdout, buffered, in the chosen format; or, for the
/// HTTP API, each JSON line handed to a function.
pub(crate) struct Output {
    json: bool,
    style: Style,
    filter: Filter,
    out: Sink,
    /// The longest line handed on, if any is too long.
    longest: Option<usize>,
}

/// `text` (a JSON object) with `cell` added.
fn with_cell(text: &str, cell: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, Value>>(text) {
        Ok(mut obj) => {
            obj.insert("cell".into(), cell.into());
            Value::Object(obj).to_string()
        }
        Err(_) => text.to_string(),
    }
}

/// A note on a bad line handed on, in the log: at most one a minute per
/// cell and `kind`, with how many were left unsaid.
fn say_throttled(cell: &str, kind: &str, note: String) {
    if let Some(unsaid) = NOTES.admit(&format!("{cell}\0{kind}"), std::time::Instant::now()) {
        let more = if unsaid > 0 {
            format!(" ({unsaid} more such of this cell unsaid in the last minute)")
        } else {
            String::new()
        };
        tracing::warn!("{note}{more}");
    }
}

/// Notes on bad lines of each cell, for lines handed on.
static NOTES: Throttle = Throttle::new(std::time::Duration::from_secs(60));

/// At most one note per key per `every`.
struct Throttle {
    every: std::time::Duration,
    said: std::sync::Mutex<Option<std::collections::HashMap<String, (std::time::Instant, u64)>>>,
}

impl Throttle {
    const fn new(every: std::time::Duration) -> Throttle {
        Throttle {
            every,
            said: std::sync::Mutex::new(None),
        }
    }

    /// Whether to say a note of `key` now: `Some(n)` with the notes left
    /// unsaid since the last one, or `None` to leave it unsaid.
    fn admit(&self, key: &str, now: std::time::Instant) -> Option<u64> {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        let said = said.get_or_insert_with(Default::default);
        match said.get_mut(key) {
            Some((at, unsaid)) if now.duration_since(*at) < self.every => {
                *unsaid += 1;
                None
            }
            Some((at, unsaid)) => {
                let n = std::mem::take(unsaid);
                *at = now;
                Some(n)
            }
            None => {
                said.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// What takes each JSON line, for the HTTP API.
type EachLine = Box<dyn FnMut(&str) -> io::Result<()> + Send>;

enum Sink {
    Stdout(io::BufWriter<io::Stdout>),
    Each(EachLine),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(out) => out.write(buf),
            // Lines reach `Each` through `Output::line`, whole.
            Sink::Each(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::Each(_) => Ok(()),
        }
    }
}

impl Output {
    fn new(json: bool, filter: Filter) -> Output {
        Output {
            json,
            style: Style::for_stdout(),
            filter,
            out: Sink::Stdout(io::BufWriter::with_capacity(64 * 1024, io::stdout())),
            longest: None,
        }
    }

    /// JSON lines, each handed to `each` (an error stops the reading).
    fn each(each: impl FnMut(&str) -> io::Result<()> + Send + 'static) -> Output {
        Output {
            json: true,
            style: Style::for_stdout(),
            filter: Filter::default(),
            out: Sink::Each(Box::new(each)),
            longest: None,
        }
    }

    /// Writes one line (or, with `--json`, says a corrupt one on stderr).
    pub(crate) fn line(&mut self, line: &Line) -> io::Result<()> {
        if !self.filter.admits(line) {
            return Ok(());
        }
        match line {
            // A line in one cell's stream that names another cell is not
            // that cell's (an agent writes only its own stream): not passed
            // on as JSON, where a consumer would take its `cell` at its word.
            Line::Event {
                cell,
                claims: Some(other),
                ..
            } if self.json => {
                let note = format!(
                    "cell {}: a line in its stream claims to be of cell {}; left out",
                    escape(cell),
                    escape(&other.chars().take(80).collect::<String>())
                );
                self.note(cell, "claims", note);
                Ok(())
            }
            Line::Event { cell, text, .. }
                if self.longest.is_some_and(|most| text.len() > most) =>
            {
                let note = format!(
                    "cell {}: an event line of {} bytes is over the {} the event stream \
                     carries; left out of it (the cell's events hold it)",
                    escape(cell),
                    text.len(),
                    self.longest.unwrap_or_default()
                );
                self.note(cell, "long", note);
                Ok(())
            }
            Line::Event {
                text,
                cell,
                unnamed,
                ..
            } if self.json => match &mut self.out {
                // Handed on, every line names its cell (BRIEF 5): a line
                // without one (the seed's format) gets the stream's.
                Sink::Each(each) if *unnamed => {
                    // Written again, numbers may grow (`1e15` is
                    // `1000000000000000.0`): the limit is on what is sent.
                    let text = with_cell(text, cell);
                    match self.longest {
                        Some(most) if text.len() > most => {
                            let note = format!(
                                "cell {}: an event line of {} bytes is over the {most} the \
                                 event stream carries; left out of it (the cell's events hold it)",
                                escape(cell),
                                text.len()
                            );
                            say_throttled(cell, "long", note);
                            Ok(())
                        }
                        _ => each(&text),
                    }
                }
                Sink::Each(each) => each(text),
                out => {
                    out.write_all(text.as_bytes())?;
                    out.write_all(b"\n")
                }
            },
            Line::Corrupt { cell, .. } if self.json => {
                if let Some(note) = format::corrupt_note(line) {
                    self.note(cell, "corrupt", note);
                }
                Ok(())
            }
            _ => {
                self.out
                    .write_all(format::render(line, self.style).as_bytes())?;
                self.out.write_all(b"\n")
            }
        }
    }

    /// Says a note on a bad line on stderr. Lines handed on (the web face,
    /// which may run in the daemon) say at most one a minute per cell and
    /// `kind` of note, with how many were left unsaid: an agent writing
    /// garbage into its stream must not fill the journal.
    fn note(&self, cell: &str, kind: &str, note: String) {
        if !matches!(self.out, Sink::Each(_)) {
            eprintln!("lazarus-pit: {note}");
            return;
        }
        say_throttled(cell, kind, note);
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `--since`: RFC 3339, unix seconds, or a duration back from `now`
/// (`90s`, `10m`, `2h`, `1d`, `1h30m`, `1.5h`).
pub(crate) fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let unix = s
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs >= 0.0);
    let at = match unix {
        Some(secs) => DateTime::from_timestamp_micros((secs * 1e6) as i64),
        None => crate::text::duration_secs(s)
            .and_then(|secs| chrono::Duration::try_milliseconds((secs * 1000.0) as i64))
            .and_then(|d| now.checked_sub_signed(d)),
    };
    at.ok_or_else(|| {
        Error::Usage(format!(
            "--since {s:?}: give a duration back from now (10m, 2h, 1d, 1h30m), an RFC 3339 \
             time (2026-01-02T03:04:05Z) or unix seconds"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_of_bad_lines_are_said_once_a_minute_per_cell_with_a_count() {
        let throttle = Throttle::new(std::time::Duration::from_secs(60));
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        assert_eq!(throttle.admit("a", at(0)), Some(0));
        assert_eq!(throttle.admit("a", at(1)), None);
        assert_eq!(throttle.admit("a", at(59)), None);
        // Another cell is said at once.
        assert_eq!(throttle.admit("b", at(2)), Some(0));
        assert_eq!(throttle.admit("a", at(60)), Some(2));
        assert_eq!(throttle.admit("a", at(61)), None);
        assert_eq!(throttle.admit("a", at(200)), Some(1));
    }

    #[test]
    fn since_takes_durations_times_and_epochs() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let at = |s: &str| parse_since(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("10m").ok(), Some("2026-12-02T11:50:00+00:00".into()));
        assert_eq!(at("1h30m").ok(), Some("2026-12-02T10:30:00+00:00".into()));
        assert_eq!(at("1.5h").ok(), Some("2026-12-02T10:30:00+00:00".into()));
        assert_eq!(at("2d").ok(), Some("2026-11-30T12:00:00+00:00".into()));
        assert_eq!(
            at("2026-12-01T00:00:00Z").ok(),
            Some("2026-12-01T00:00:00+00:00".into())
        );
        assert_eq!(at("0").ok(), Some("1970-01-01T00:00:00+00:00".into()));
        for bad in ["yesterday", "m", "10x", "", "-5m", "1e400m", "5m3"] {
            assert!(at(bad).is_err(), "{bad:?}");
        }
    }

    fn event(text: &str) -> Line {
        Line::Event {
            text: text.into(),
            cell: "c".into(),
            claims: None,
            unnamed: false,
        }
    }

    #[test]
    fn filters_by_event_and_agent_and_keep_corrupt_lines() {
        let f = Filter::new(
            &["agent_dead".into(), "agent_stale".into()],
            Some("a".into()),
        )
        .expect("filter");
        assert!(f.admits(&event(r#"{"event":"agent_dead","agent":"a"}"#)));
        assert!(!f.admits(&event(r#"{"event":"agent_dead","agent":"b"}"#)));
        assert!(!f.admits(&event(r#"{"event":"heartbeat","agent":"a"}"#)));
        assert!(f.admits(&Line::Corrupt {
            cell: "c".into(),
            file: "events.jsonl".into(),
            number: 1,
            why: "x".into(),
            preview: String::new(),
        }));
        let err = Filter::new(&["agent_ded".into()], None).expect_err("unknown");
        assert!(
            err.to_string().contains("did you mean agent_dead?"),
            "{err}"
        );
    }
}
