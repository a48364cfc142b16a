//! Reading one cell's stream: its rotated generations oldest first, then
//! `events.jsonl`, line by line, never holding more than [`LINE_LIMIT`] of
//! a line, and the streaming merge of many cells in time order.
//!
//! The stream is in the cell, where agents can write: a line may be
//! corrupt (not UTF-8, not JSON, cut off), enormous, or claim another
//! cell. A corrupt line is kept in its place, with why, and hides nothing
//! else.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::cell::Cell;
use crate::eventlog::{LOG, generation, generations};
use crate::store::ReadError;
use crate::text::escape_bytes;

/// Longest line read whole; the rest of a longer one is skipped.
pub const LINE_LIMIT: usize = 1024 * 1024;
/// How much of a corrupt line is shown.
const PREVIEW: usize = 120;

/// One line of a stream, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A JSON object. `claims`: the other cell its `cell` field names (or
    /// the field itself, if not a string), if it does not name the cell
    /// whose stream it is in (an agent can append anything to its own
    /// stream, never to another's).
    Event {
        text: String,
        /// The cell whose stream it is in.
        cell: Arc<str>,
        claims: Option<String>,
        /// It has no `cell` field (the seed's lines had none).
        unnamed: bool,
    },
    /// Anything else, with where it is and why it was not taken.
    Corrupt {
        cell: Arc<str>,
        /// `events.jsonl`, or the generation it is in.
        file: String,
        number: u64,
        why: String,
        preview: String,
    },
}

/// A line as read: at most [`LINE_LIMIT`] bytes of it, whether more were
/// skipped (`cut`), and whether it ended with a newline (`whole`).
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    pub bytes: Vec<u8>,
    pub cut: bool,
    pub whole: bool,
}

/// The next line (without its newline). `None` at the end.
pub fn next_line(reader: &mut impl BufRead) -> io::Result<Option<Raw>> {
    let mut raw = Raw {
        bytes: Vec::new(),
        cut: false,
        whole: false,
    };
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any.then_some(raw));
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        push_bounded(&mut raw, chunk);
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            raw.whole = true;
            return Ok(Some(raw));
        }
    }
}

/// Appends `chunk` to the line, up to [`LINE_LIMIT`].
pub fn push_bounded(raw: &mut Raw, chunk: &[u8]) {
    let room = LINE_LIMIT.saturating_sub(raw.bytes.len());
    if chunk.len() > room {
        raw.cut = true;
    }
    raw.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

/// One line of a stream, taken apart.
pub fn parse_line(cell: &Arc<str>, file: &str, number: u64, raw: &Raw) -> Line {
    let corrupt = |why: String| Line::Corrupt {
        cell: cell.clone(),
        file: file.to_string(),
        number,
        why,
        preview: preview(&raw.bytes),
    };
    if raw.cut {
        return corrupt(format!("longer than {LINE_LIMIT} bytes"));
    }
    let Ok(text) = std::str::from_utf8(&raw.bytes) else {
        return corrupt("not UTF-8".into());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Line::Event {
            text: text.to_string(),
            cell: cell.clone(),
            // A `cell` that is not a string names no cell of ours: taken
            // at its word by a consumer, `["<another uuid>"]` would.
            claims: match obj.get("cell") {
                Some(Value::String(named)) if named == &**cell => None,
                Some(Value::String(named)) => Some(named.clone()),
                Some(other) => Some(other.to_string()),
                None => None,
            },
            unnamed: !obj.contains_key("cell"),
        },
        Ok(_) => corrupt("not a JSON object".into()),
        Err(_) if !raw.whole => corrupt("cut off: no newline at its end".into()),
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

/// An event line's time, if its `ts` is one.
pub fn time_of(text: &str) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Ts<'a> {
        #[serde(borrow)]
        ts: Option<std::borrow::Cow<'a, str>>,
    }
    let ts = serde_json::from_str::<Ts>(text).ok()?.ts?;
    DateTime::parse_from_rfc3339(&ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A file read past its holes: an agent can make its stream a sparse file
/// of terabytes for free (`truncate -s 100G`, or a byte every 64 KiB),
/// which would take hours to read as zeros. A file that is mostly holes
/// (an event log never is) is read extent by extent (`SEEK_DATA`,
/// `SEEK_HOLE`), so reading costs what the agent really wrote; each hole
/// reads as one NUL, which keeps the line it falls in corrupt. Elsewhere
/// a chunk that comes back all NUL asks where data resumes. Data itself
/// never asks: `SEEK_DATA` is not trusted with bytes just appended.
pub struct Holes {
    file: File,
    sparse: bool,
}

impl Holes {
    pub fn new(file: File) -> Holes {
        let sparse = is_sparse(&file);
        Holes { file, sparse }
    }

    pub fn into_file(self) -> File {
        self.file
    }
}

/// Whether `file` is larger than a line and less than half allocated.
pub fn is_sparse(file: &File) -> bool {
    nix::sys::stat::fstat(file).is_ok_and(|st| {
        st.st_size > LINE_LIMIT as i64 && st.st_blocks.saturating_mul(512) < st.st_size / 2
    })
}

/// Where data resumes at or after `pos` (`pos` itself when the filesystem
/// cannot tell); `None` when only a hole is left.
pub fn next_data(file: &File, pos: u64) -> io::Result<Option<u64>> {
    let Ok(at) = i64::try_from(pos) else {
        return Ok(Some(pos));
    };
    match nix::unistd::lseek(file, at, nix::unistd::Whence::SeekData) {
        Ok(found) => Ok(Some(found as u64)),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        // No SEEK_DATA here (EINVAL): every byte is data.
        Err(_) => Ok(Some(pos)),
    }
}

/// Where the data at `pos` ends (the next hole, or the end).
pub fn next_hole(file: &File, pos: u64) -> u64 {
    i64::try_from(pos)
        .ok()
        .and_then(|at| nix::unistd::lseek(file, at, nix::unistd::Whence::SeekHole).ok())
        .map_or(u64::MAX, |h| h as u64)
}

/// Whether `chunk` (a full read of `want` bytes) is all NUL: a hole, most
/// likely.
pub fn looks_like_hole(chunk: &[u8], want: usize) -> bool {
    chunk.len() == want && want >= 4096 && chunk.iter().all(|b| *b == 0)
}

impl io::Read for Holes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let pos = self.file.stream_position()?;
        if self.sparse {
            let Some(data) = next_data(&self.file, pos)? else {
                return Ok(0);
            };
            if data > pos {
                self.file.seek(io::SeekFrom::Start(data))?;
                buf[0] = 0;
                return Ok(1);
            }
            let extent = next_hole(&self.file, data).saturating_sub(data).max(1);
            let want = buf.len().min(usize::try_from(extent).unwrap_or(usize::MAX));
            self.file.seek(io::SeekFrom::Start(data))?;
            return self.file.read(&mut buf[..want]);
        }
        let n = self.file.read(buf)?;
        if looks_like_hole(&buf[..n], buf.len()) {
            let at = pos + n as u64;
            let size = nix::sys::stat::fstat(&self.file)?.st_size as u64;
            let to = next_data(&self.file, at)?.unwrap_or(size);
            if to > at {
                self.file.seek(io::SeekFrom::Start(to))?;
            }
        }
        Ok(n)
    }
}

/// What the reader of one file of a stream holds.
struct Part {
    name: String,
    reader: BufReader<Holes>,
    number: u64,
}

/// Where reading `events.jsonl` stopped: what a follower goes on from.
#[derive(Debug)]
pub struct Resume {
    pub file: File,
    /// Lines read so far (for line numbers).
    pub number: u64,
    /// A last line without its newline yet.
    pub partial: Option<Raw>,
}

/// One cell's stream, read in order.
pub struct CellStream {
    pub cell: Arc<str>,
    parts: VecDeque<Part>,
    /// The time of the last event line read: corrupt lines, and lines whose
    /// `ts` is not a time, sort with it.
    last: Option<DateTime<Utc>>,
    since: Option<DateTime<Utc>>,
    /// Follow: keep a torn last line of `events.jsonl` for later, and the
    /// file itself ([`CellStream::resume`]).
    follow: bool,
    resume: Option<Resume>,
}

impl CellStream {
    /// Opens every file of the cell's stream. They are opened newest
    /// first and told apart by inode, so a rotation while they are opened
    /// costs neither a line nor a duplicate.
    pub fn open(cell: &Cell, since: Option<DateTime<Utc>>, follow: bool) -> io::Result<Self> {
        let id: Arc<str> = cell.id.as_str().into();
        let mut parts = VecDeque::new();
        let mut seen = Vec::new();
        let logs = match cell.dir.subdir("logs") {
            Ok(logs) => Some(logs),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(logs) = logs {
            let mut names = vec![LOG.to_string()];
            names.extend(generations(&logs)?.into_iter().map(generation));
            for name in names {
                let file = match logs.open_regular(&name) {
                    Ok((file, _)) => file,
                    Err(ReadError::NotFound) => continue,
                    Err(ReadError::Io(e)) => return Err(e),
                    Err(e) => {
                        return Err(io::Error::other(format!(
                            "{}: {e}",
                            logs.display(&name).display()
                        )));
                    }
                };
                let st = nix::sys::stat::fstat(&file)?;
                if seen.contains(&(st.st_dev, st.st_ino)) {
                    continue;
                }
                seen.push((st.st_dev, st.st_ino));
                parts.push_front(Part {
                    name,
                    reader: BufReader::with_capacity(64 * 1024, Holes::new(file)),
                    number: 0,
                });
            }
        }
        Ok(CellStream {
            cell: id,
            parts,
            last: None,
            since,
            follow,
            resume: None,
        })
    }

    /// The next line at or after `since`, with the time it sorts by.
    pub fn next_line(&mut self) -> io::Result<Option<(Option<DateTime<Utc>>, Line)>> {
        loop {
            let Some(part) = self.parts.front_mut() else {
                return Ok(None);
            };
            let raw = next_line(&mut part.reader)?;
            let current = part.name == LOG && self.parts.len() == 1;
            let raw = match raw {
                Some(raw) if self.follow && current && !raw.whole => {
                    self.finish(Some(raw))?;
                    continue;
                }
                Some(raw) => raw,
                None => {
                    self.finish(None)?;
                    continue;
                }
            };
            let Some(part) = self.parts.front_mut() else {
                return Ok(None);
            };
            part.number += 1;
            let line = parse_line(&self.cell, &part.name, part.number, &raw);
            if let Line::Event { text, .. } = &line
                && let Some(at) = time_of(text)
            {
                self.last = Some(at);
            }
            if let (Some(since), Some(at)) = (self.since, self.last)
                && at < since
            {
                continue;
            }
            return Ok(Some((self.last, line)));
        }
    }

    /// The front file is read: on to the next, keeping `events.jsonl`
    /// itself for a follower.
    fn finish(&mut self, partial: Option<Raw>) -> io::Result<()> {
        let Some(part) = self.parts.pop_front() else {
            return Ok(());
        };
        if self.follow && part.name == LOG && self.parts.is_empty() {
            // At the end nothing is left in the buffer: the file's offset
            // is where reading stopped.
            let mut file = part.reader.into_inner().into_file();
            file.stream_position()?;
            self.resume = Some(Resume {
                file,
                number: part.number,
                partial,
            });
        }
        Ok(())
    }

    /// Where `events.jsonl` was left, once the stream is read.
    pub fn resume(&mut self) -> Option<Resume> {
        self.resume.take()
    }
}

/// Merges the streams in time order (stable: a cell's own order is kept,
/// and equal times keep the order of `streams`), handing each line to
/// `emit` as it goes; only one line per stream is held. A stream that
/// fails to read is said on stderr and drops out; `emit`'s errors stop the
/// merge.
pub fn merge(
    streams: &mut [CellStream],
    mut emit: impl FnMut(&Line) -> io::Result<()>,
) -> io::Result<()> {
    // Lines without a time (before a stream's first event) come first;
    // each stream has one line in the heap, so its own order is kept.
    type Key = (Option<DateTime<Utc>>, usize);
    let mut heads: Vec<Option<Line>> = vec![None; streams.len()];
    let mut heap: BinaryHeap<Reverse<Key>> = BinaryHeap::new();
    let pull = |i: usize,
                streams: &mut [CellStream],
                heads: &mut Vec<Option<Line>>,
                heap: &mut BinaryHeap<Reverse<Key>>| match streams[i].next_line() {
        Ok(Some((at, line))) => {
            heads[i] = Some(line);
            heap.push(Reverse((at, i)));
        }
        Ok(None) => {}
        Err(e) => eprintln!(
            "lazarus-pit: cell {}: {}",
            streams[i].cell,
            crate::text::escape(&e.to_string())
        ),
    };
    for i in 0..streams.len() {
        pull(i, streams, &mut heads, &mut heap);
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        if let Some(line) = heads[i].take() {
            emit(&line)?;
        }
        pull(i, streams, &mut heads, &mut heap);
    }
    Ok(())
}
