//! `events --follow`: `tail -F` over every cell's stream, driven by
//! inotify.
//!
//! One watch per cell on its `logs/` directory (on the cell directory
//! until `logs/` exists), and one on the root for cells created
//! meanwhile. A write to `events.jsonl` wakes the follower, which reads
//! what is new from the descriptor it holds, keeps a torn last line until
//! it is whole, and then looks at the name again: a different file there
//! means a rotation (the old one is read to its end first, then the new
//! one from its start), a shorter file a truncation (read again from its
//! start). Where inotify is not available or its watches run out, the
//! cells concerned are polled, and a slow full pass every
//! [`SAFETY_NET`] catches anything an event did not say.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::Output;
use super::stream::{CellStream, Line, Raw, parse_line, push_bounded, time_of};
use crate::cell::{Cell, MANIFEST};
use crate::commands::Context;
use crate::error::{Error, Result};
use crate::eventlog::LOG;
use crate::store::{Dir, ReadError};
use crate::text::escape;

/// A full pass over every stream and the root, whatever inotify said.
const SAFETY_NET: Duration = Duration::from_secs(5);
/// How often streams without a watch are read.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// The stream below a cell directory.
const STREAM: &str = "logs/events.jsonl";

/// What a watch is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Root,
    /// A cell directory without `logs/` yet.
    CellDir(usize),
    Logs(usize),
}

/// One cell's stream being followed.
struct Tail {
    /// `None` once the cell's directory is gone (purged): its descriptors
    /// are let go, so the disk space is freed.
    cell: Option<Cell>,
    id: Arc<str>,
    /// The `events.jsonl` being read, its identity, and how far.
    file: Option<File>,
    ino: (u64, u64),
    offset: u64,
    /// Where the line being read starts, and what of it was read.
    line_start: u64,
    partial: Option<Raw>,
    /// Lines before `line_start`; unknown when following began at the
    /// end (counted the first time a corrupt line needs its number).
    number: Option<u64>,
    watch: Option<WatchDescriptor>,
    /// No watch could be had: read every [`POLL_EVERY`].
    polled: bool,
    said_truncated: bool,
    /// The last error said of this stream (said again only when it
    /// changes: a symlinked `logs/` would otherwise be said at every pass).
    said_error: Option<String>,
}

struct Follower<'a> {
    root: Option<Dir>,
    inotify: Option<Inotify>,
    by_wd: HashMap<WatchDescriptor, On>,
    tails: Vec<Tail>,
    known: HashSet<String>,
    since: Option<DateTime<Utc>>,
    out: &'a mut Output,
    watch_limit_said: bool,
}

pub(super) fn run(
    ctx: &Context,
    cells: Vec<Cell>,
    single: bool,
    since: Option<DateTime<Utc>>,
    out: &mut Output,
) -> Result<()> {
    let inotify = match Inotify::init() {
        Ok(i) => Some(i),
        Err(e) => {
            eprintln!(
                "lazarus-pit: inotify is not available ({e}); polling every {} ms",
                POLL_EVERY.as_millis()
            );
            None
        }
    };
    let mut f = Follower {
        root: None,
        inotify,
        by_wd: HashMap::new(),
        tails: Vec::new(),
        known: HashSet::new(),
        since,
        out,
        watch_limit_said: false,
    };
    if !single {
        f.root = Some(ctx.root.open()?);
        let root_path = ctx.root.path.clone();
        if let Some(wd) = f.add_watch(&root_path, WatchMask::CREATE | WatchMask::MOVED_TO) {
            f.by_wd.insert(wd, On::Root);
        }
    }
    // Watches first, then the files: a line written in between is read.
    for cell in cells {
        f.known.insert(cell.id.clone());
        let i = f.push(cell);
        f.watch_cell(i);
    }
    f.start(since)?;
    f.out.flush()?;
    f.follow()
}

impl Follower<'_> {
    fn push(&mut self, cell: Cell) -> usize {
        self.tails.push(Tail {
            id: cell.id.as_str().into(),
            cell: Some(cell),
            file: None,
            ino: (0, 0),
            offset: 0,
            line_start: 0,
            partial: None,
            number: Some(0),
            watch: None,
            polled: false,
            said_truncated: false,
            said_error: None,
        });
        self.tails.len() - 1
    }

    fn add_watch(&mut self, path: &std::path::Path, mask: WatchMask) -> Option<WatchDescriptor> {
        let inotify = self.inotify.as_mut()?;
        let mask = mask | WatchMask::ONLYDIR | WatchMask::DONT_FOLLOW;
        match inotify.watches().add(path, mask) {
            Ok(wd) => Some(wd),
            Err(e) => {
                if e.raw_os_error() == Some(nix::libc::ENOSPC) && !self.watch_limit_said {
                    self.watch_limit_said = true;
                    eprintln!(
                        "lazarus-pit: out of inotify watches (fs.inotify.max_user_watches): \
                         cells beyond the limit are polled every {} ms",
                        POLL_EVERY.as_millis()
                    );
                }
                None
            }
        }
    }

    /// Watches the cell's `logs/`, or its directory while it has none.
    fn watch_cell(&mut self, i: usize) {
        if let Some(old) = self.tails[i].watch.take() {
            self.by_wd.remove(&old);
            if let Some(inotify) = self.inotify.as_mut() {
                let _ = inotify.watches().remove(old);
            }
        }
        let Some(cell) = self.tails[i].cell.as_ref() else {
            return;
        };
        let dir = cell.dir.path().to_path_buf();
        let has_logs = cell.dir.exists_beneath("logs");
        let (path, mask, on) = if has_logs {
            (
                dir.join("logs"),
                WatchMask::MODIFY
                    | WatchMask::CREATE
                    | WatchMask::MOVED_TO
                    | WatchMask::MOVED_FROM
                    | WatchMask::DELETE
                    | WatchMask::DELETE_SELF,
                On::Logs(i),
            )
        } else {
            (
                dir,
                WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::DELETE_SELF,
                On::CellDir(i),
            )
        };
        match self.add_watch(&path, mask) {
            Some(wd) => {
                self.by_wd.insert(wd.clone(), on);
                self.tails[i].watch = Some(wd);
                self.tails[i].polled = false;
            }
            None => self.tails[i].polled = true,
        }
    }

    /// The history (`--since`), merged in time order, then every stream
    /// positioned where it goes on from: where the history ended, or the
    /// end of the file.
    fn start(&mut self, since: Option<DateTime<Utc>>) -> Result<()> {
        if since.is_some() {
            let mut streams: Vec<(usize, CellStream)> = Vec::new();
            for (i, tail) in self.tails.iter().enumerate() {
                let Some(cell) = tail.cell.as_ref() else {
                    continue;
                };
                match CellStream::open(cell, since, true) {
                    Ok(s) => streams.push((i, s)),
                    Err(e) => {
                        eprintln!("lazarus-pit: cell {}: {}", tail.id, escape(&e.to_string()))
                    }
                }
            }
            let (index, mut only): (Vec<usize>, Vec<CellStream>) = streams.into_iter().unzip();
            let out = &mut *self.out;
            super::stream::merge(&mut only, |line| out.line(line))?;
            for (i, mut s) in index.into_iter().zip(only) {
                if let Some(resume) = s.resume() {
                    let tail = &mut self.tails[i];
                    let st = nix::sys::stat::fstat(resume.file.as_fd()).map_err(io::Error::from)?;
                    let mut file = resume.file;
                    let offset = file.stream_position()?;
                    let held = resume.partial.as_ref().map_or(0, |p| p.bytes.len() as u64);
                    tail.ino = (st.st_dev, st.st_ino);
                    tail.offset = offset;
                    tail.line_start = offset - held.min(offset);
                    tail.partial = resume.partial;
                    tail.number = Some(resume.number);
                    tail.file = Some(file);
                }
            }
        } else {
            for tail in &mut self.tails {
                let _ = tail.open_at_end();
            }
        }
        Ok(())
    }

    /// Waits for changes and prints what they wrote, until stdout goes.
    fn follow(&mut self) -> Result<()> {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut last_pass = Instant::now();
        let mut last_poll = Instant::now();
        loop {
            let any_polled = self.inotify.is_none() || self.tails.iter().any(|t| t.polled);
            let wait = if any_polled { POLL_EVERY } else { SAFETY_NET };
            // Stdout is watched too: a reader that went (`| head -1`)
            // ends the follow at once, not at the next line.
            let stdout = std::io::stdout();
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            let (ready, closed) = {
                let mut fds = vec![PollFd::new(stdout.as_fd(), PollFlags::empty())];
                if let Some(inotify) = &self.inotify {
                    fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) => {
                        let gone = PollFlags::POLLERR | PollFlags::POLLHUP;
                        (
                            fds.get(1)
                                .and_then(|f| f.revents())
                                .is_some_and(|r| r.contains(PollFlags::POLLIN)),
                            fds[0].revents().is_some_and(|r| r.intersects(gone)),
                        )
                    }
                    Err(nix::errno::Errno::EINTR) => (false, false),
                    Err(e) => return Err(Error::Io(e.into())),
                }
            };
            if closed {
                return Ok(());
            }
            let mut due: HashSet<usize> = HashSet::new();
            let mut gone: Vec<usize> = Vec::new();
            let mut new_names: Vec<String> = Vec::new();
            let mut everything = false;
            if ready && let Some(inotify) = self.inotify.as_mut() {
                loop {
                    match inotify.read_events(&mut buffer) {
                        Ok(events) => {
                            for e in events {
                                if e.mask.contains(EventMask::Q_OVERFLOW) {
                                    everything = true;
                                    continue;
                                }
                                let name = e.name.and_then(|n| n.to_str()).unwrap_or("");
                                match self.by_wd.get(&e.wd).copied() {
                                    Some(On::Root) => new_names.push(name.to_string()),
                                    Some(On::CellDir(i)) if name == "logs" => {
                                        due.insert(i);
                                    }
                                    Some(On::Logs(i)) if name == LOG => {
                                        due.insert(i);
                                        // Removed: maybe with its cell (whose
                                        // directory we pin, so no event of
                                        // its own comes).
                                        if e.mask.contains(EventMask::DELETE) {
                                            gone.push(i);
                                        }
                                    }
                                    _ => {}
                                }
                                // Deleted while we hold files in it: the watch
                                // goes only once we let go (IGNORED), so its
                                // removal (DELETE_SELF) is the sign.
                                if e.mask
                                    .intersects(EventMask::IGNORED | EventMask::DELETE_SELF)
                                {
                                    if let Some(On::Logs(i) | On::CellDir(i)) =
                                        self.by_wd.remove(&e.wd)
                                    {
                                        gone.push(i);
                                    }
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::Io(e)),
                    }
                }
            }
            if last_pass.elapsed() >= SAFETY_NET {
                everything = true;
            }
            if everything {
                gone.extend(0..self.tails.len());
                last_pass = Instant::now();
                new_names.extend(self.root_names());
                due.extend(0..self.tails.len());
            } else if any_polled && last_poll.elapsed() >= POLL_EVERY {
                last_poll = Instant::now();
                let polled = self.inotify.is_none();
                due.extend(
                    self.tails
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| polled || t.polled)
                        .map(|(i, _)| i),
                );
                if polled {
                    new_names.extend(self.root_names());
                }
            }
            for name in new_names {
                if let Some(i) = self.adopt(&name) {
                    due.insert(i);
                }
            }
            let mut due: Vec<usize> = due.into_iter().collect();
            due.sort_unstable();
            for i in due {
                if matches!(
                    self.tails[i].watch.as_ref().and_then(|w| self.by_wd.get(w)),
                    Some(On::CellDir(_)) | None
                ) && self.tails[i]
                    .cell
                    .as_ref()
                    .is_some_and(|c| c.dir.exists_beneath("logs"))
                {
                    self.watch_cell(i);
                }
                let since = self.since;
                let out = &mut *self.out;
                self.tails[i].pump(since, |line| out.line(line))?;
            }
            self.out.flush()?;
            // A watch went with its directory: if the cell itself is gone,
            // let go of it (what it still held was read above).
            for i in gone {
                self.release_if_gone(i);
            }
        }
    }

    /// Lets go of a cell whose directory was removed; a cell made again
    /// under the name is followed anew.
    fn release_if_gone(&mut self, i: usize) {
        let tail = &mut self.tails[i];
        let removed = tail
            .cell
            .as_ref()
            .is_some_and(|c| nix::sys::stat::fstat(c.dir.as_fd()).is_ok_and(|st| st.st_nlink == 0));
        if removed {
            if let Some(wd) = tail.watch.take()
                && let Some(inotify) = self.inotify.as_mut()
            {
                self.by_wd.remove(&wd);
                let _ = inotify.watches().remove(wd);
            }
            tail.cell = None;
            tail.file = None;
            tail.partial = None;
            tail.polled = false;
            self.known.remove(&*tail.id);
        } else if tail.cell.is_some()
            && tail
                .watch
                .as_ref()
                .is_none_or(|w| !self.by_wd.contains_key(w))
        {
            // Only its watch went (`logs/` removed): watch again.
            self.watch_cell(i);
        }
    }

    /// The root's entries that may be cells (for the safety net and
    /// polling).
    fn root_names(&self) -> Vec<String> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        root.entries()
            .map(|entries| entries.into_iter().map(|(name, _)| name).collect())
            .unwrap_or_default()
    }

    /// Starts following a cell that appeared in the root (from its first
    /// line: all of it is new). `None` if it is not a new cell.
    fn adopt(&mut self, name: &str) -> Option<usize> {
        if name.is_empty() || name.starts_with('.') || self.known.contains(name) {
            return None;
        }
        let root = self.root.as_ref()?;
        let dir = root.subdir(name).ok()?;
        if !dir.exists_beneath(MANIFEST) && !dir.exists_beneath("logs") {
            // Not a cell (yet): a later event or pass looks again.
            return None;
        }
        self.known.insert(name.to_string());
        let i = self.push(Cell {
            id: name.to_string(),
            dir,
        });
        self.watch_cell(i);
        Some(i)
    }
}

impl Tail {
    /// Opens `events.jsonl` and goes to its end (or to the start of a torn
    /// last line there, so that line is read whole once it is).
    fn open_at_end(&mut self) -> io::Result<()> {
        let Some(mut file) = self.open_current()? else {
            return Ok(());
        };
        let size = file.seek(SeekFrom::End(0))?;
        let look = size.min(64 * 1024);
        let mut tail = vec![0u8; look as usize];
        file.read_exact_at(&mut tail, size - look)?;
        let start = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => size - look + i as u64 + 1,
            None if look == size => 0,
            None => size,
        };
        file.seek(SeekFrom::Start(start))?;
        self.set_file(file, start, None)?;
        Ok(())
    }

    fn open_current(&self) -> io::Result<Option<File>> {
        let Some(cell) = self.cell.as_ref() else {
            return Ok(None);
        };
        match cell.dir.open_regular(STREAM) {
            Ok((file, _)) => Ok(Some(file)),
            Err(ReadError::NotFound) => Ok(None),
            Err(ReadError::Io(e)) => Err(e),
            Err(e) => Err(io::Error::other(format!(
                "{}: {e}",
                cell.dir.display(STREAM).display()
            ))),
        }
    }

    fn set_file(&mut self, file: File, offset: u64, number: Option<u64>) -> io::Result<()> {
        let st = nix::sys::stat::fstat(file.as_fd())?;
        self.ino = (st.st_dev, st.st_ino);
        self.file = Some(file);
        self.offset = offset;
        self.line_start = offset;
        self.partial = None;
        self.number = number;
        self.said_truncated = false;
        Ok(())
    }

    /// Reads what is new, then follows a rotation or truncation.
    fn pump(
        &mut self,
        since: Option<DateTime<Utc>>,
        mut emit: impl FnMut(&Line) -> io::Result<()>,
    ) -> io::Result<()> {
        // Bounded: each round moves to a newer file.
        for _ in 0..16 {
            if self.file.is_none() {
                match self.open_current() {
                    Ok(Some(file)) => {
                        self.said_error = None;
                        self.set_file(file, 0, Some(0))?
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        let error = e.to_string();
                        if self.said_error.as_deref() != Some(error.as_str()) {
                            eprintln!("lazarus-pit: cell {}: {}", self.id, escape(&error));
                            self.said_error = Some(error);
                        }
                        return Ok(());
                    }
                }
            }
            self.read_new(since, &mut emit)?;
            let now_there = match self.open_current() {
                Ok(Some(file)) => file,
                // Renamed away, not yet made again: the next append
                // creates it, and its event brings us back.
                Ok(None) | Err(_) => return Ok(()),
            };
            let st = nix::sys::stat::fstat(now_there.as_fd())?;
            if (st.st_dev, st.st_ino) == self.ino {
                return Ok(());
            }
            // Rotated: what the old file still holds comes first; a line
            // it left torn stays so.
            self.read_new(since, &mut emit)?;
            if let Some(raw) = self.partial.take() {
                self.emit_raw(raw, since, &mut emit)?;
            }
            // Rotated more than once since the last read: the generations
            // between the old file and the new one are read whole, oldest
            // first.
            for missed in self.missed_generations(&now_there)? {
                self.set_file(missed, 0, Some(0))?;
                self.read_new(since, &mut emit)?;
                if let Some(raw) = self.partial.take() {
                    self.emit_raw(raw, since, &mut emit)?;
                }
            }
            self.set_file(now_there, 0, Some(0))?;
        }
        Ok(())
    }

    /// The generations newer than the file being read (`self.ino`) and
    /// older than `current`, oldest first. They are opened newest first
    /// and told apart by inode, so a rotation meanwhile costs neither a
    /// file nor a duplicate.
    fn missed_generations(&mut self, current: &File) -> io::Result<Vec<File>> {
        let Some(logs) = self.cell.as_ref().and_then(|c| c.dir.subdir("logs").ok()) else {
            return Ok(Vec::new());
        };
        let st = nix::sys::stat::fstat(current.as_fd())?;
        let mut seen = vec![(st.st_dev, st.st_ino)];
        let mut missed = Vec::new();
        let mut found = false;
        // A rotation under way leaves one name of the chain missing for a
        // moment (it renames from the top down): a gap of a name or two is
        // stepped over, and the scan is made again before giving up.
        'scan: for _ in 0..3 {
            let mut gap = 0;
            for n in 1..=crate::eventlog::MAX_GENERATIONS {
                let file = match logs.open_regular(&crate::eventlog::generation(n)) {
                    Ok((file, _)) => file,
                    Err(_) if gap < 2 => {
                        gap += 1;
                        continue;
                    }
                    Err(_) => break,
                };
                gap = 0;
                let st = nix::sys::stat::fstat(file.as_fd())?;
                let id = (st.st_dev, st.st_ino);
                if id == self.ino {
                    found = true;
                    break 'scan;
                }
                if !seen.contains(&id) {
                    seen.push(id);
                    missed.push(file);
                }
            }
        }
        if !found {
            // Removed before it could be found again (`keep` is small, or
            // someone else moved it): what lies between cannot be told.
            eprintln!(
                "lazarus-pit: cell {}: events.jsonl was rotated away faster than it was read; \
                 lines may be missing",
                self.id
            );
            return Ok(Vec::new());
        }
        missed.reverse();
        Ok(missed)
    }

    fn read_new(
        &mut self,
        since: Option<DateTime<Utc>>,
        emit: &mut impl FnMut(&Line) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let size = nix::sys::stat::fstat(file.as_fd())?.st_size as u64;
        let sparse = super::stream::is_sparse(file);
        if size < self.offset {
            // Emptied (`: > events.jsonl`) or cut to a line or so: read
            // again from the start. Cut to more than that (an agent
            // shrinking its file over and over to make us re-read it): go
            // on from where it ends now.
            let again = size <= super::stream::LINE_LIMIT as u64;
            if !self.said_truncated {
                eprintln!(
                    "lazarus-pit: cell {}: events.jsonl was truncated; reading it {}",
                    self.id,
                    if again {
                        "from its start"
                    } else {
                        "from its new end"
                    }
                );
            }
            self.offset = if again { 0 } else { size };
            self.line_start = self.offset;
            self.partial = None;
            self.number = if again { Some(0) } else { None };
            self.said_truncated = true;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Some(file) = self.file.as_ref() else {
                return Ok(());
            };
            // A mostly-holes file: read extent by extent, each hole as
            // one NUL.
            let mut limit = buf.len();
            if sparse {
                let Some(data) = super::stream::next_data(file, self.offset)? else {
                    return Ok(());
                };
                if data > self.offset {
                    let raw = self.partial.get_or_insert_with(|| Raw {
                        bytes: Vec::new(),
                        cut: false,
                        whole: false,
                    });
                    push_bounded(raw, &[0]);
                    self.offset = data;
                }
                let extent = super::stream::next_hole(file, data)
                    .saturating_sub(data)
                    .max(1);
                limit = limit.min(usize::try_from(extent).unwrap_or(usize::MAX));
            }
            let n = match file.read_at(&mut buf[..limit], self.offset) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let base = self.offset;
            self.offset += n as u64;
            // A hole (an agent's sparse file): skipped past, its zeros read
            // once.
            if !sparse && super::stream::looks_like_hole(&buf[..n], buf.len()) {
                let to = match super::stream::next_data(file, self.offset)? {
                    Some(to) => to,
                    // Only a hole is left: on to the end.
                    None => nix::sys::stat::fstat(file.as_fd())?.st_size as u64,
                };
                self.offset = self.offset.max(to);
            }
            let mut rest = &buf[..n];
            let mut at = base;
            while !rest.is_empty() {
                let raw = self.partial.get_or_insert_with(|| Raw {
                    bytes: Vec::new(),
                    cut: false,
                    whole: false,
                });
                match rest.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        push_bounded(raw, &rest[..i]);
                        raw.whole = true;
                        let raw = self.partial.take().unwrap_or_else(|| Raw {
                            bytes: Vec::new(),
                            cut: false,
                            whole: true,
                        });
                        at += i as u64 + 1;
                        rest = &rest[i + 1..];
                        self.emit_raw(raw, since, emit)?;
                        self.line_start = at;
                    }
                    None => {
                        push_bounded(raw, rest);
                        rest = &[];
                    }
                }
            }
        }
    }

    fn emit_raw(
        &mut self,
        raw: Raw,
        since: Option<DateTime<Utc>>,
        emit: &mut impl FnMut(&Line) -> io::Result<()>,
    ) -> io::Result<()> {
        let line = parse_line(&self.id, LOG, 0, &raw);
        let line = match line {
            Line::Corrupt { .. } => {
                let number = self.line_number()?;
                parse_line(&self.id, LOG, number, &raw)
            }
            event => event,
        };
        if let Some(n) = self.number.as_mut() {
            *n += 1;
        }
        if let (Line::Event { text, .. }, Some(since)) = (&line, since)
            && time_of(text).is_some_and(|at| at < since)
        {
            return Ok(());
        }
        emit(&line)
    }

    /// The number of the line starting at `line_start` (counted from the
    /// file once, when following began at its end).
    fn line_number(&mut self) -> io::Result<u64> {
        if let Some(n) = self.number {
            return Ok(n + 1);
        }
        let Some(file) = self.file.as_ref() else {
            return Ok(0);
        };
        let mut count = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut pos = 0u64;
        while pos < self.line_start {
            let want = buf.len().min((self.line_start - pos) as usize);
            let n = file.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            count += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            pos += n as u64;
        }
        self.number = Some(count);
        Ok(count + 1)
    }
}
