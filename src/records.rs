//! The daemon's own records, kept in its state directory (BRIEF 6).
//!
//! Everything inside a cell can be written by the cell's agents, so
//! nothing there is proof of anything. What the daemon must know across
//! its own restart — the instances it started (pid, start time, boot),
//! revive counts, pending approval requests, the last cell status it
//! accounted for — lives here instead, in a directory only the daemon's
//! user can open (mode 0700): `<state_dir>/roots/<root key>/`, one per
//! cells root, holding
//!
//! - `cells/<uuid>.json`: one [`CellRecord`] per cell, written atomically;
//! - `inbox/`: operators' requests (`revive`, `approve`, `deny`) as
//!   [`Request`] files, which the daemon watches, acts on and removes.
//!
//! `.lazarus/state.json` in the cell is only a publication of the same
//! facts for people and tools; the daemon never reads it back.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::DaemonConfig;
use crate::error::{Error, Result};
use crate::state::AgentState;
use crate::store::{Dir, ReadError};

/// State directory of a root daemon.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/lazarus-pit";
/// Largest record read back: the daemon's own file, so generous (a cell
/// of 100,000 agents is about 30 MB), but bounded.
const RECORD_LIMIT: u64 = 256 * 1024 * 1024;
/// Largest inbox request read.
const REQUEST_LIMIT: u64 = 64 * 1024;

/// What the daemon knows of one cell, as of the last state change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    pub cell: String,
    /// Unix seconds of the write.
    #[serde(default)]
    pub written_at: f64,
    /// The boot the instances' start times belong to.
    #[serde(default)]
    pub boot_id: String,
    /// Pid of the daemon that wrote it.
    #[serde(default)]
    pub daemon_pid: Option<u32>,
    /// The cell status the daemon last accounted for: a
    /// `cell_status_changed` to it is in the stream (the CLI's or ours).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentRecord>,
    /// The last checkpoint the daemon took (or failed to take).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointRecord>,
    /// The answers to the last operators' checkpoint requests (two taken
    /// back to back may be written in one record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<CheckpointRecord>,
    /// A checkpoint is being taken: the agents are frozen for it (a daemon
    /// that restarts meanwhile thaws them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpointing: bool,
}

/// A checkpoint the daemon took, or tried to (`checkpoint_created`,
/// `checkpoint_failed`): what `lazarus-pit checkpoint` waits for, and
/// where `checkpoint_interval` counts from across a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Unix seconds when it was done.
    pub at: f64,
    /// `manual`, `interval`, `archive`.
    pub reason: String,
    /// The operator's request it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `checkpoints/<name>` written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CellRecord {
    /// The record as written to its file: compact JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// One agent in a [`CellRecord`]. Times are unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub state: AgentState,
    #[serde(default)]
    pub revive_count: u32,
    /// The newest heartbeat accepted (as of the record's write).
    #[serde(default)]
    pub last_seen: Option<f64>,
    /// Its claimed `timestamp`: the same claim read again is not news.
    #[serde(default)]
    pub last_claimed: Option<f64>,
    #[serde(default)]
    pub last_status: Option<String>,
    /// The process the daemon started, while it runs.
    #[serde(default)]
    pub instance: Option<InstanceRecord>,
    /// When the daemon last started it or saw it die.
    #[serde(default)]
    pub started_at: Option<f64>,
    /// Past `resurrect_after` with nothing done yet (frozen, no command).
    #[serde(default)]
    pub due: bool,
    /// Policy `ask`: the question waiting for `approve`/`deny`.
    #[serde(default)]
    pub request: Option<RequestRecord>,
    /// An operator denied its revival: only `revive` brings it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    /// Its processes are being stopped: it left `cell.json`, or its cell
    /// was archived or destroyed. Gone from the record once they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
    /// How its running instance is controlled (`cgroup`, `process-group`,
    /// `podman`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// The isolation its running instance has (observed, not configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Its running instance's `limits`, and how each is enforced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<Enforced>,
    /// Why it is not healthy: how its last instance ended, a start's
    /// error, or its silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// What happens to it next, and when (unix seconds; absent: when an
    /// operator acts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextRecord>,
    /// Set when the record is read back, not stored: the recorded
    /// instance is gone (another boot, or its pid now names someone else).
    #[serde(skip)]
    pub lost_pid: Option<i32>,
}

/// One of an agent's `limits`, as applied to its running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforced {
    /// `nofile`, `memory.max`, …
    pub name: String,
    /// The value in force (`cpu.max`: microseconds per 100 ms period).
    pub value: u64,
    /// `rlimit`, `cgroup`, `podman`, or `none` (not enforced).
    pub by: String,
    /// Why not, or what changed (lowered to the daemon's own limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_time: u64,
}

/// [`crate::supervisor::agent::Next`], as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextRecord {
    pub action: String,
    /// `daemon` or `operator`.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    /// Why the agent died (`stale`, `exited`).
    pub reason: String,
}

/// An operator's word to the daemon, dropped in the inbox by the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub action: RequestAction,
    pub cell: String,
    pub agent: String,
    /// For `approve` and `deny`: the request answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For `status`: the status the CLI is about to write into `cell.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestAction {
    Revive,
    Approve,
    Deny,
    /// Not a decision but a notice: the CLI moves the cell's status and
    /// records `cell_status_changed` itself, so the daemon, seeing the
    /// move, does not record it again.
    Status,
    /// A notice: the CLI removes `agent` from `cell.json` and records
    /// `agent_left` itself once the agent's processes are gone.
    Leave,
    /// Take a checkpoint of the cell now (`request_id` names the request).
    Checkpoint,
    /// A notice: the CLI restored a checkpoint into the cell; its agents'
    /// running instances work on replaced files and are started again.
    Restored,
}

impl RequestAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestAction::Revive => "revive",
            RequestAction::Approve => "approve",
            RequestAction::Deny => "deny",
            RequestAction::Status => "status",
            RequestAction::Leave => "leave",
            RequestAction::Checkpoint => "checkpoint",
            RequestAction::Restored => "restored",
        }
    }
}

/// The configured state directory, or the default for this user: the
/// system one for root, the XDG state home for anyone else (so the demo
/// and the quick start work unprivileged) — never a shared directory like
/// `/tmp`, where anyone could put something in its place.
pub fn state_dir(cfg: &DaemonConfig) -> Result<PathBuf> {
    if let Some(dir) = &cfg.state_dir {
        return Ok(dir.clone());
    }
    let me = nix::unistd::geteuid();
    if me.is_root() {
        return Ok(PathBuf::from(SYSTEM_STATE_DIR));
    }
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_STATE_HOME")
        .and_then(absolute)
        .or_else(|| {
            let home = std::env::var_os("HOME")
                .and_then(absolute)
                .or_else(|| Some(nix::unistd::User::from_uid(me).ok()??.dir))?;
            Some(home.join(".local/state"))
        })
        .map(|dir| dir.join("lazarus-pit"))
        .ok_or_else(|| {
            Error::Io(std::io::Error::other(
                "no state directory: set [daemon] state_dir, or HOME or XDG_STATE_HOME",
            ))
        })
}

/// The part of `state_dir` that belongs to one cells root: a readable
/// slug of its canonical path plus a hash of it, so two roots never share
/// records and an operator can tell which is which.
pub fn root_key(root: &Path) -> String {
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let text = canonical.to_string_lossy();
    let mut slug: String = text
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if slug.is_empty() || slug.starts_with('.') {
        slug.insert(0, 'r');
    }
    slug.truncate(64);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{slug}-{h:016x}")
}

/// The state directory itself, checked as [`Records::open`] checks it
/// (ours, private, parents no one else can write) and created if missing:
/// where the HTTP face keeps its secret and the operator's token.
pub fn private_state_dir(cfg: &DaemonConfig) -> Result<PathBuf> {
    let base = state_dir(cfg)?;
    safe_ancestors(&base)?;
    private_dir(&base)?;
    Ok(base)
}

/// The records of one cells root.
#[derive(Debug)]
pub struct Records {
    path: PathBuf,
    cells: Dir,
    inbox: Dir,
}

impl Records {
    /// Opens the records of `root`, creating what is missing (mode 0700).
    /// What is in them is taken as the daemon's own word, so a directory
    /// that another user owns, that others may enter, that is a symlink,
    /// or whose parents others may write to (and so replace it), is
    /// refused — never "repaired": a chmod through a planted symlink, or of
    /// a shared directory named by mistake, would be worse.
    pub fn open(cfg: &DaemonConfig, root: &Path) -> Result<Records> {
        let base = state_dir(cfg)?;
        safe_ancestors(&base)?;
        let path = base.join("roots").join(root_key(root));
        for dir in [base.clone(), base.join("roots"), path.clone()] {
            private_dir(&dir)?;
        }
        for sub in ["cells", "inbox"] {
            private_dir(&path.join(sub))?;
        }
        let root_file = path.join("root");
        if !root_file.exists() {
            let dir = Dir::open(&path).map_err(|e| state_error(&path, e))?;
            let text = format!("{}\n", root.display());
            dir.write_atomic("root", text.as_bytes(), 0o600)
                .map_err(|e| state_error(&root_file, e))?;
        }
        Records::at(path)
    }

    /// The records as they are, for the CLI (`approve`, `deny`, `revive`,
    /// `status`): `None` if no daemon has used this root with this
    /// `state_dir` yet; an error naming the directory if this user may not
    /// read them (they are root's, or the daemon's user's).
    pub fn open_existing(cfg: &DaemonConfig, root: &Path) -> Result<Option<Records>> {
        let path = state_dir(cfg)?.join("roots").join(root_key(root));
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(state_error(&path, e)),
        }
        Records::at(path).map(Some)
    }

    /// Records that the daemon `pid` now uses these records (read by the
    /// CLI to tell whether the daemon that holds the root's lock is the one
    /// that reads this inbox).
    pub fn claim(&self, pid: u32) -> std::io::Result<()> {
        let dir = Dir::open(&self.path)?;
        dir.write_atomic("daemon.pid", format!("{pid}\n").as_bytes(), 0o600)
    }

    /// The pid of the daemon that last used these records.
    pub fn claimed_by(&self) -> Option<u32> {
        std::fs::read_to_string(self.path.join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn at(path: PathBuf) -> Result<Records> {
        let open = |sub: &str| {
            let p = path.join(sub);
            Dir::open(&p).map_err(|e| state_error(&p, e))
        };
        Ok(Records {
            cells: open("cells")?,
            inbox: open("inbox")?,
            path,
        })
    }

    /// `<state_dir>/roots/<key>`, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The inbox directory (watched by the daemon).
    pub fn inbox_path(&self) -> PathBuf {
        self.path.join("inbox")
    }

    /// A second handle, for writers off the daemon's loop.
    pub fn try_clone(&self) -> std::io::Result<Records> {
        Ok(Records {
            path: self.path.clone(),
            cells: self.cells.try_clone()?,
            inbox: self.inbox.try_clone()?,
        })
    }

    /// The record of `cell`, if there is one that parses. A record that
    /// does not parse is logged and treated as absent: the daemon then
    /// judges the cell afresh, as on first sight.
    pub fn read_cell(&self, cell: &str) -> Option<CellRecord> {
        let name = record_name(cell)?;
        match self.cells.read_file(&name, RECORD_LIMIT) {
            Ok(bytes) => match serde_json::from_slice::<CellRecord>(&bytes) {
                Ok(record) if record.cell == cell => Some(record),
                Ok(_) => {
                    tracing::warn!("{}: names another cell; ignored", self.display(&name));
                    None
                }
                Err(e) => {
                    tracing::warn!("{}: {e}; ignored", self.display(&name));
                    None
                }
            },
            Err(ReadError::NotFound) => None,
            Err(e) => {
                tracing::warn!("{}: {e}; ignored", self.display(&name));
                None
            }
        }
    }

    /// Writes the daemon's counters ([`crate::metrics::STATS_FILE`]).
    pub fn write_stats(&self, stats: &crate::metrics::DaemonStats) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(stats).map_err(std::io::Error::other)?;
        Dir::open(&self.path)?.write_atomic(crate::metrics::STATS_FILE, &bytes, 0o600)
    }

    /// Removes the counters: a `daemon --once` pass says no daemon is
    /// meant to run on this root between passes.
    pub fn remove_stats(&self) -> std::io::Result<()> {
        Dir::open(&self.path)?.remove_file(crate::metrics::STATS_FILE)
    }

    /// The daemon's counters, if it wrote them and they parse.
    pub fn read_stats(&self) -> Option<crate::metrics::DaemonStats> {
        let bytes = Dir::open(&self.path)
            .ok()?
            .read_file(crate::metrics::STATS_FILE, RECORD_LIMIT)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn write_cell(&self, record: &CellRecord) -> std::io::Result<()> {
        self.write_cell_bytes(&record.cell, &record.to_bytes())
    }

    /// Writes a record already serialised ([`CellRecord::to_bytes`]).
    pub fn write_cell_bytes(&self, cell: &str, bytes: &[u8]) -> std::io::Result<()> {
        let name = record_name(cell).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{cell:?} is not a cell id"),
            )
        })?;
        self.cells.write_atomic(&name, bytes, 0o600)
    }

    pub fn remove_cell(&self, cell: &str) -> std::io::Result<()> {
        match record_name(cell) {
            Some(name) => self.cells.remove_file(&name),
            None => Ok(()),
        }
    }

    /// Cells that have a record.
    pub fn recorded_cells(&self) -> Vec<String> {
        self.cells
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, _)| {
                let cell = name.strip_suffix(".json")?;
                record_name(cell).map(|_| cell.to_string())
            })
            .collect()
    }

    /// Tells the daemon, best effort, that the CLI is about to move a cell
    /// to `to` (and records that move itself). A user who may not write
    /// the inbox gets the move recorded twice, the daemon's copy marked
    /// `observed`; nothing worse.
    pub fn announce_move(cfg: &DaemonConfig, root: &Path, cell: &str, to: &str) {
        if let Ok(Some(records)) = Records::open_existing(cfg, root) {
            let _ = records.post(&Request {
                action: RequestAction::Status,
                cell: cell.to_string(),
                agent: String::new(),
                request_id: None,
                to: Some(to.to_string()),
                by: String::new(),
                at: String::new(),
            });
        }
    }

    /// Tells the daemon (if one ever ran for this root) that the CLI
    /// removes `agent` from `cell` and records `agent_left` itself.
    pub fn announce_leave(cfg: &DaemonConfig, root: &Path, cell: &str, agent: &str) {
        if let Ok(Some(records)) = Records::open_existing(cfg, root) {
            let _ = records.post(&Request {
                action: RequestAction::Leave,
                cell: cell.to_string(),
                agent: agent.to_string(),
                request_id: None,
                to: None,
                by: String::new(),
                at: String::new(),
            });
        }
    }

    /// Drops a request in the inbox (atomically: the daemon sees it whole
    /// or not at all). Returns its file name.
    pub fn post(&self, request: &Request) -> std::io::Result<String> {
        let name = format!(
            "{}-{}-{}-{}.json",
            chrono::Utc::now().timestamp_micros(),
            request.action.as_str(),
            request.cell,
            uuid::Uuid::new_v4().simple()
        );
        let mut bytes = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        self.inbox.write_atomic(&name, &bytes, 0o600)?;
        Ok(name)
    }

    /// Names of the requests waiting in the inbox, oldest first.
    pub fn inbox(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inbox
            .entries()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| is_request_name(name))
            .collect();
        names.sort();
        names
    }

    /// Reads one inbox request and leaves it there (for `status`: an
    /// answer sent that the daemon has not taken yet).
    pub fn peek(&self, name: &str) -> Option<Request> {
        if !is_request_name(name) {
            return None;
        }
        let bytes = self.inbox.read_file(name, REQUEST_LIMIT).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Reads and removes one inbox request. `None` if it is gone already;
    /// an unreadable one is removed and reported as the error.
    pub fn take(&self, name: &str) -> Option<std::result::Result<Request, String>> {
        if !is_request_name(name) {
            return None;
        }
        let result = match self.inbox.read_file(name, REQUEST_LIMIT) {
            Ok(bytes) => serde_json::from_slice::<Request>(&bytes).map_err(|e| e.to_string()),
            Err(ReadError::NotFound) => return None,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = self.inbox.remove_file(name) {
            tracing::warn!(
                "{}: cannot remove it: {e}",
                self.inbox.display(name).display()
            );
        }
        Some(result)
    }

    fn display(&self, name: &str) -> String {
        self.cells.display(name).display().to_string()
    }
}

/// Whether an inbox entry is a finished request (temp files start with a
/// dot).
pub fn is_request_name(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.') && !name.contains('/')
}

/// The record file of a cell id, if it can be one (a directory name of
/// the root that is not a dot-name).
fn record_name(cell: &str) -> Option<String> {
    let ok = !cell.is_empty()
        && !cell.starts_with('.')
        && cell
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| format!("{cell}.json"))
}

fn state_error(path: &Path, e: std::io::Error) -> Error {
    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (it belongs to the daemon's user: run this as root or as that user)"
    } else {
        ""
    };
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("state directory {}: {e}{hint}", path.display()),
    ))
}

/// Makes sure `dir` is a directory of this user's that no one else can
/// enter, creating it (mode 0700) if it is missing; refuses a symlink,
/// another owner, or a mode that lets others in.
fn private_dir(dir: &Path) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
            {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(state_error(dir, e)),
            }
            std::fs::symlink_metadata(dir).map_err(|e| state_error(dir, e))?
        }
        Err(e) => return Err(state_error(dir, e)),
    };
    if meta.file_type().is_symlink() {
        return Err(refused(dir, "is a symlink (give the real path)"));
    }
    if !meta.file_type().is_dir() {
        return Err(refused(dir, "is not a directory"));
    }
    if meta.uid() != me {
        return Err(refused(
            dir,
            &format!(
                "is owned by uid {}, not by the daemon's user (uid {me})",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refused(
            dir,
            &format!(
                "has mode {:o}, which lets others in (make it 0700: chmod 700 {})",
                meta.mode() & 0o7777,
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses a state directory below a directory that others could write to
/// without the sticky bit (they could move ours away and put theirs in its
/// place), or that belongs to someone other than root or this user.
fn safe_ancestors(base: &Path) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let absolute = std::path::absolute(base).map_err(|e| state_error(base, e))?;
    for dir in absolute.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue; // created below, by us
        };
        let shared = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
        if shared || (meta.uid() != 0 && meta.uid() != me) {
            return Err(refused(
                base,
                &format!(
                    "lies below {} (mode {:o}, uid {}), which others could change",
                    dir.display(),
                    meta.mode() & 0o7777,
                    meta.uid()
                ),
            ));
        }
    }
    Ok(())
}

fn refused(dir: &Path, why: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("state directory {} {why}: refused", dir.display()),
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn cfg(dir: &Path) -> DaemonConfig {
        DaemonConfig {
            state_dir: Some(dir.to_path_buf()),
            ..DaemonConfig::default()
        }
    }

    #[test]
    fn roots_get_their_own_readable_keys() {
        let a = root_key(Path::new("/var/missions"));
        let b = root_key(Path::new("/srv/missions"));
        assert!(a.starts_with("var-missions-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, root_key(Path::new("/var/missions")));
        assert!(!root_key(Path::new("/")).starts_with('.'));
    }

    #[test]
    fn the_directory_is_private_and_records_round_trip() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = tmp.path().join("state");
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).expect("root");
        let records = Records::open(&cfg(&state), &root).expect("open");
        for dir in [state.clone(), records.path().to_path_buf()] {
            let mode = std::fs::metadata(&dir).expect("meta").mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        let mut record = CellRecord {
            cell: "c-1".into(),
            status: Some("active".into()),
            ..CellRecord::default()
        };
        record.agents.insert(
            "a".into(),
            AgentRecord {
                state: AgentState::Healthy,
                revive_count: 2,
                instance: Some(InstanceRecord {
                    pid: 42,
                    start_time: 7,
                }),
                ..AgentRecord::default()
            },
        );
        records.write_cell(&record).expect("write");
        assert_eq!(records.read_cell("c-1"), Some(record));
        assert_eq!(records.recorded_cells(), vec!["c-1".to_string()]);
        assert_eq!(records.read_cell("../x"), None);
        records.remove_cell("c-1").expect("remove");
        assert_eq!(records.read_cell("c-1"), None);
    }

    #[test]
    fn a_wide_mode_is_refused_never_changed_and_requests_are_taken_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = Records::open(&cfg(&state), tmp.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
        assert_eq!(
            std::fs::metadata(&state).expect("meta").mode() & 0o777,
            0o755,
            "left as it was"
        );
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let records = Records::open(&cfg(&state), tmp.path()).expect("open");
        let request = Request {
            action: RequestAction::Approve,
            cell: "c".into(),
            agent: "a".into(),
            request_id: Some("r1".into()),
            to: None,
            by: "op".into(),
            at: "now".into(),
        };
        let name = records.post(&request).expect("post");
        let operator = Records::open_existing(&cfg(&state), tmp.path())
            .expect("cli")
            .expect("exists");
        assert_eq!(operator.inbox(), vec![name.clone()]);
        assert_eq!(records.take(&name), Some(Ok(request)));
        assert_eq!(records.take(&name), None);
        assert!(records.inbox().is_empty());
    }

    #[test]
    fn symlinks_and_shared_parents_are_refused_and_nothing_is_chmodded() {
        let tmp = tempfile::tempdir().expect("tmp");
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        // Another user plants a link where the state directory will be.
        let link = shared.join("lp-state");
        std::os::unix::fs::symlink(&shared, &link).expect("symlink");
        let err = Records::open(&cfg(&link), tmp.path()).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(
            std::fs::metadata(&shared).expect("meta").mode() & 0o7777,
            0o1777,
            "the link's target is left alone"
        );
        // Below a directory others may write to without the sticky bit.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = Records::open(&cfg(&open.join("state")), tmp.path()).unwrap_err();
        assert!(err.to_string().contains("others could change"), "{err}");
        // A link below the state directory.
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::symlink(&shared, state.join("roots")).expect("symlink");
        let err = Records::open(&cfg(&state), tmp.path()).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
