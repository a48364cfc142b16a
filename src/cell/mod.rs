//! Mission cells: the manifest model, the on-disk layout, and handles to
//! the cells root and to one cell through which every file is touched.

pub mod fields;
pub mod heartbeat;
pub mod lifecycle;
pub mod manifest;
pub mod name;
pub mod settings;
pub mod template;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use crate::error::{Error, Result};
use crate::events::Event;
use crate::store::{AGENT_FILE_LIMIT, Dir, EntryKind, ReadError};
use heartbeat::{Heartbeat, HeartbeatError};
use lifecycle::CellStatus;
use manifest::Manifest;

/// The manifest's file name.
pub const MANIFEST: &str = "cell.json";
/// The event stream, relative to the cell.
pub const EVENTS: &str = "logs/events.jsonl";
/// Heartbeat files' directory, relative to the cell.
pub const HEARTBEATS: &str = ".lazarus/heartbeats";
/// The daemon's state file, relative to the cell.
pub const STATE: &str = ".lazarus/state.json";
/// Directories `cell create` makes (BRIEF section 2).
pub const LAYOUT: &[&str] = &[
    "workspace",
    "logs",
    "checkpoints",
    "bus/inbox",
    "bus/outbox",
    ".lazarus/heartbeats",
];
/// Largest `cell.json` read. Far above any real manifest, far below harm.
pub const MANIFEST_LIMIT: u64 = 1024 * 1024;

/// How long a command waits for a cell's lock before giving up.
pub const CLI_LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// The heartbeat file of `agent`, relative to the cell.
pub fn heartbeat_rel(agent: &str) -> String {
    format!("{HEARTBEATS}/{agent}.json")
}

/// The current time in the format of `created_at` / `joined_at`.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The cells root.
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
}

/// What a directory entry of the root turned out to be.
#[derive(Debug)]
pub enum Listed {
    Cell {
        cell: Cell,
        manifest: Box<Manifest>,
    },
    /// Has a `cell.json` that could not be read or parsed.
    Unreadable {
        name: String,
        error: Error,
    },
}

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root { path: path.into() }
    }

    pub fn open(&self) -> Result<Dir> {
        Dir::open(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::RootMissing(self.path.clone()),
            _ => Error::Io(std::io::Error::new(
                e.kind(),
                format!("cells root {}: {e}", self.path.display()),
            )),
        })
    }

    /// Names of the root's cells, sorted: real directories (never symlinks)
    /// that hold a `cell.json`. Anything else is not a cell and is ignored.
    pub fn cell_names(&self) -> Result<Vec<String>> {
        self.dirs(|root, name| root.exists_beneath(&format!("{name}/{MANIFEST}")))
    }

    /// Directories of the root that were cells and lost their `cell.json`:
    /// real directories without one for which `was_cell` says yes, or
    /// that hold `logs/` (a cell's audit trail). Sorted. `status` and
    /// `events` show them (an agent that deletes its manifest must not
    /// vanish from monitoring); `cell list` does not (they are not cells).
    pub fn lost_cells(&self, was_cell: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        self.dirs(|root, name| {
            !root.exists_beneath(&format!("{name}/{MANIFEST}"))
                && root.entry_kind(name).ok().flatten() == Some(EntryKind::Dir)
                && (root.exists_beneath(&format!("{name}/logs")) || was_cell(name))
        })
    }

    /// The root's directories not hidden (`.`-named) that `keep` says yes
    /// to, sorted.
    fn dirs(&self, keep: impl Fn(&Dir, &str) -> bool) -> Result<Vec<String>> {
        let root = self.open()?;
        let mut names: Vec<String> = root
            .entries()?
            .into_iter()
            .filter(|(name, kind)| {
                !name.starts_with('.')
                    && matches!(kind, EntryKind::Dir | EntryKind::Unknown)
                    && keep(&root, name)
            })
            .map(|(name, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every cell with its manifest, or why its manifest is unreadable.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let root = self.open()?;
        Ok(self
            .cell_names()?
            .into_iter()
            .map(|name| {
                let opened = root.subdir(&name).map_err(Error::Io).map(|dir| Cell {
                    id: name.clone(),
                    dir,
                });
                match opened.and_then(|cell| Ok((cell.read_manifest()?, cell))) {
                    Ok((manifest, cell)) => Listed::Cell {
                        cell,
                        manifest: Box::new(manifest),
                    },
                    Err(error) => Listed::Unreadable { name, error },
                }
            })
            .collect())
    }

    /// Opens the cell named exactly `name`.
    pub fn cell(&self, name: &str) -> Result<Cell> {
        let dir = self.open()?.subdir(name)?;
        Ok(Cell {
            id: name.to_string(),
            dir,
        })
    }

    /// Finds the cell whose id is `given`, or the one cell whose id starts
    /// with it or whose `name` is it. Unknown and ambiguous ones are
    /// errors; the latter lists the candidates. A name is in `cell.json`,
    /// which the cell's agents can write, so a name never wins over
    /// another cell's id prefix (both match: ambiguous), destroyed cells
    /// hold no name, and a cell found by name alone is refused while
    /// another cell's `cell.json` cannot be read (it may say the same).
    pub fn resolve(&self, given: &str) -> Result<Cell> {
        if given.is_empty() {
            return Err(Error::BadCellId(given.to_string()));
        }
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        let id_like = !given.starts_with('.') && given.chars().all(ok_char);
        let wanted = given.to_ascii_lowercase();
        // A whole id (what agents pass on every `heartbeat`) needs no
        // listing of the root, which holds thousands of cells.
        if id_like
            && let Ok(cell) = self.cell(&wanted)
            && cell.dir.exists_beneath(MANIFEST)
        {
            return Ok(cell);
        }
        let ids = self.cell_names()?;
        if id_like && let Some(exact) = ids.iter().find(|n| n.to_ascii_lowercase() == wanted) {
            return self.cell(exact);
        }
        let by_prefix: Vec<&String> = ids
            .iter()
            .filter(|n| id_like && n.to_ascii_lowercase().starts_with(&wanted))
            .collect();
        let names = self.names_of(&ids);
        let by_name: Vec<&String> = names
            .iter()
            .filter(|(_, name)| name.as_ref().is_ok_and(|n| n.as_deref() == Some(given)))
            .map(|(id, _)| *id)
            .collect();
        let mut candidates: Vec<String> = by_prefix.iter().map(|s| s.to_string()).collect();
        for id in &by_name {
            if !candidates.contains(id) {
                candidates.push(id.to_string());
            }
        }
        if candidates.len() == 1 && by_prefix.is_empty() {
            let unreadable: Vec<String> = names
                .iter()
                .filter(|(_, name)| name.is_err())
                .map(|(id, _)| format!("{id} (cell.json unreadable)"))
                .collect();
            if !unreadable.is_empty() {
                candidates.extend(unreadable);
            }
        }
        match candidates.as_slice() {
            [] => Err(Error::CellNotFound {
                prefix: given.to_string(),
                root: self.path.clone(),
            }),
            [one] => self.cell(one),
            _ => Err(Error::AmbiguousCell {
                prefix: given.to_string(),
                candidates,
            }),
        }
    }

    /// Each cell's `name`, destroyed cells' as none (they hold no name),
    /// or the error reading its `cell.json`.
    fn names_of<'a>(&self, ids: &'a [String]) -> Vec<(&'a String, Result<Option<String>>)> {
        ids.iter()
            .map(|id| {
                let name = self.cell(id).and_then(|c| c.read_manifest()).map(|m| {
                    (m.status() != CellStatus::Destroyed)
                        .then_some(m.name)
                        .flatten()
                });
                (id, name)
            })
            .collect()
    }

    /// The other cells (by id) that `name` would also reach as a `CELL`
    /// argument: named so, or whose id starts with it. For `cell create`
    /// and `cell set name=`, which warn about them.
    pub fn name_clashes(&self, name: &str, own: &str) -> Vec<String> {
        let ids = self.cell_names().unwrap_or_default();
        let lower = name.to_ascii_lowercase();
        self.names_of(&ids)
            .into_iter()
            .filter(|(id, n)| {
                id.as_str() != own
                    && (id.to_ascii_lowercase().starts_with(&lower)
                        || n.as_ref().is_ok_and(|n| n.as_deref() == Some(name)))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// One opened cell directory. Every path below it is resolved from its
/// descriptor without following symlinks (see [`Dir`]).
#[derive(Debug)]
pub struct Cell {
    /// The directory name: the cell's UUID.
    pub id: String,
    pub dir: Dir,
}

impl Cell {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Reads and parses `cell.json`.
    pub fn read_manifest(&self) -> Result<Manifest> {
        let path = self.dir.display(MANIFEST);
        let bytes = self
            .dir
            .read_file(MANIFEST, MANIFEST_LIMIT)
            .map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
        Manifest::from_slice(&bytes).map_err(|source| Error::Json { path, source })
    }

    /// Writes `cell.json` atomically. Callers hold the cell lock.
    /// Writes `cell.json`, never larger than every reader accepts (one
    /// that large would lock every command out of the cell).
    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let bytes = manifest.to_bytes();
        if bytes.len() as u64 > MANIFEST_LIMIT {
            return Err(Error::refused(
                &self.id,
                "rewrite cell.json",
                format!(
                    "it would be {} bytes, more than the {MANIFEST_LIMIT} a cell.json may have",
                    bytes.len()
                ),
            ));
        }
        Ok(self.dir.write_atomic(MANIFEST, &bytes, 0o644)?)
    }

    /// Locked read-modify-write of `cell.json`: `change` gets the current
    /// manifest and returns its result plus the events to record. The file
    /// is rewritten (atomically) only if the manifest changed, and the
    /// events are appended before the lock is released, so the order of
    /// lines in `events.jsonl` is the order of the changes.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Manifest) -> Result<(T, Vec<Event>)>,
    ) -> Result<T> {
        self.update_within(CLI_LOCK_PATIENCE, change)
    }

    /// [`Cell::update`], waiting at most `patience` for the cell lock.
    pub fn update_within<T>(
        &self,
        patience: Duration,
        change: impl FnOnce(&mut Manifest) -> Result<(T, Vec<Event>)>,
    ) -> Result<T> {
        let _lock = self.dir.lock(patience)?;
        let before = self.read_manifest()?;
        let mut manifest = before.clone();
        let (out, events) = change(&mut manifest)?;
        if manifest != before {
            self.write_manifest(&manifest)?;
        }
        self.append_events(&events)?;
        Ok(out)
    }

    /// Appends events to `logs/events.jsonl`, creating `logs/` if a cell
    /// made by another tool lacks it.
    pub fn append_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let logs = self.dir.create_dirs("logs")?;
        let lines: Vec<Vec<u8>> = events
            .iter()
            .map(|event| event.to_line(&self.id, Utc::now()))
            .collect();
        let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        crate::eventlog::append(&logs, &lines, crate::eventlog::CLI_PATIENCE)?;
        Ok(())
    }

    /// Reads an agent's heartbeat file safely and parses it.
    pub fn read_heartbeat(&self, agent: &str) -> Result<Heartbeat, HeartbeatReadError> {
        self.read_heartbeat_seen(agent, f64::INFINITY)
            .map(|(hb, _)| hb)
    }

    /// [`Cell::read_heartbeat`], with when it was written as far as can be
    /// told at `now` (unix seconds): its timestamp, unless that lies in the
    /// future — then the file's change time, which the kernel sets and an
    /// agent cannot, so a heartbeat stamped a year ahead ages like any
    /// other.
    pub fn read_heartbeat_seen(
        &self,
        agent: &str,
        now: f64,
    ) -> Result<(Heartbeat, f64), HeartbeatReadError> {
        use std::io::Read;
        let rel = heartbeat_rel(agent);
        let (file, size) = self
            .dir
            .open_regular(&rel)
            .map_err(HeartbeatReadError::File)?;
        if size > AGENT_FILE_LIMIT {
            return Err(HeartbeatReadError::File(ReadError::TooLarge {
                size,
                limit: AGENT_FILE_LIMIT,
            }));
        }
        let changed = nix::sys::stat::fstat(&file)
            .map(|st| st.st_ctime as f64 + st.st_ctime_nsec as f64 / 1e9)
            .unwrap_or(now);
        let mut bytes = Vec::new();
        file.take(AGENT_FILE_LIMIT)
            .read_to_end(&mut bytes)
            .map_err(|e| HeartbeatReadError::File(ReadError::Io(e)))?;
        let hb = Heartbeat::parse(&bytes).map_err(HeartbeatReadError::Content)?;
        let seen = if hb.timestamp > now + heartbeat::FUTURE_SKEW_ALLOWANCE_S {
            changed.min(now)
        } else {
            hb.timestamp
        };
        Ok((hb, seen))
    }
}

/// Why an agent's heartbeat could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatReadError {
    #[error("heartbeat file {0}")]
    File(ReadError),
    #[error("heartbeat {0}")]
    Content(HeartbeatError),
}

impl HeartbeatReadError {
    /// No heartbeat yet: not an error worth reporting.
    pub fn is_missing(&self) -> bool {
        matches!(self, HeartbeatReadError::File(ReadError::NotFound))
    }

    /// A torn write: keep the last good value, read again later.
    pub fn is_partial(&self) -> bool {
        matches!(self, HeartbeatReadError::Content(HeartbeatError::Partial))
    }
}
