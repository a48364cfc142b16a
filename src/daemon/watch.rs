//! inotify, read directly on the daemon's loop.
//!
//! One inotify instance, non-recursive watches, `IN_DONT_FOLLOW`, and a
//! mask per kind of directory so the kernel queues only what matters:
//! close-after-write and moved-to of the files we read, creation and
//! removal of the directories we track. The daemon's own reads (opens,
//! closes without write) generate no events at all. A queue overflow
//! (`IN_Q_OVERFLOW`) means events were lost: [`FsEvent::Rescan`].
//!
//! A small reader thread blocks in `poll(2)` on the inotify descriptor and
//! hands the loop whole batches: when events keep coming it lets them
//! gather for [`COALESCE`], so thousands of heartbeats a second cost the
//! loop a hundred wake-ups, not thousands (an idle daemon still reacts at
//! once). It never drops anything: if the loop falls behind, the thread
//! waits, the kernel queue fills, and the overflow event brings a rescan.
//!
//! We measured the alternatives (BENCHMARKS.md): the `notify` crate's
//! inotify backend watches with a fixed mask (open, modify, attrib, …) and
//! calls back once per event — about seven events and two thread wake-ups
//! per heartbeat; registering the descriptor with tokio wakes the runtime
//! on every new event, even while it is coalescing.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::mpsc;

/// How long a busy stream of events gathers before the loop is woken.
/// Deadlines are separate timers and stay exact; only a recovery can be
/// seen this late.
pub const COALESCE: Duration = Duration::from_millis(10);

use crate::cell::name::validate_agent_name;
use crate::cell::{HEARTBEATS, MANIFEST};

/// What a file-system change means to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsEvent {
    /// A directory appeared in the root (created or moved in): maybe a cell.
    RootEntry(String),
    /// A directory of the root went away (removed or moved out).
    RootEntryGone(String),
    /// `cell.json` of this cell was written, replaced or removed.
    Manifest(String),
    /// `.lazarus/` or its `heartbeats/` appeared.
    CellMeta(String),
    /// `.lazarus/` or its `heartbeats/` went away (its watch is gone).
    CellMetaGone(String),
    /// `heartbeats/<agent>.json` of this cell was written or replaced.
    Heartbeat { cell: String, agent: String },
    /// A request was dropped in the inbox of the daemon's state
    /// directory (`revive`, `approve`, `deny`).
    Inbox(String),
    /// The root itself was removed or moved.
    RootGone,
    /// Events were lost (queue overflow): rebuild from disk.
    Rescan,
}

/// Why a watch could not be added.
#[derive(Debug)]
pub enum WatchError {
    /// `fs.inotify.max_user_watches` is exhausted.
    Exhausted,
    /// The path is gone or is not a directory.
    Gone,
    Other(std::io::Error),
}

/// What a watch descriptor watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Root,
    /// The root's parent, for the root's own removal.
    Parent,
    CellDir(String),
    Heartbeats(String),
    /// The operators' inbox in the daemon's state directory.
    Inbox,
}

/// Flags every watch carries: never follow a symlink, directories only,
/// and no events for files already unlinked.
fn base() -> WatchMask {
    WatchMask::DONT_FOLLOW | WatchMask::ONLYDIR | WatchMask::EXCL_UNLINK
}

fn mask_of(target: &Target) -> WatchMask {
    let own = WatchMask::DELETE_SELF | WatchMask::MOVE_SELF;
    base()
        | match target {
            Target::Root => {
                WatchMask::CREATE
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
                    | own
            }
            Target::Parent => WatchMask::DELETE | WatchMask::MOVED_FROM,
            Target::CellDir(_) => {
                WatchMask::CLOSE_WRITE
                    | WatchMask::MOVED_TO
                    | WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
            }
            Target::Heartbeats(_) => WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | own,
            Target::Inbox => WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO,
        }
}

/// One raw inotify event, owned.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub wd: WatchDescriptor,
    pub mask: EventMask,
    pub name: Option<OsString>,
}

impl RawEvent {
    /// A file (not a directory) was written or moved in under `name`.
    pub fn is_file_write(&self) -> bool {
        self.mask
            .intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO)
            && !self.mask.contains(EventMask::ISDIR)
    }
}

/// The readable side: batches of raw events from the reader thread.
pub struct EventSource {
    rx: mpsc::Receiver<std::io::Result<Vec<RawEvent>>>,
    stop: Arc<AtomicBool>,
}

/// What [`EventSource::read`] brings.
#[derive(Debug)]
pub enum Batch {
    Events(Vec<RawEvent>),
    /// One read failed; the reader goes on (events may be lost: rescan).
    Failed(std::io::Error),
    /// The reader has stopped for good: nothing will come any more, and
    /// every further read would return at once.
    Ended,
}

impl EventSource {
    /// The next batch of events (waits for it).
    pub async fn read(&mut self) -> Batch {
        match self.rx.recv().await {
            Some(Ok(events)) => Batch::Events(events),
            Some(Err(e)) => Batch::Failed(e),
            None => Batch::Ended,
        }
    }

    /// A source that is fed by hand (tests of the daemon's loop).
    #[cfg(test)]
    pub fn manual() -> (mpsc::Sender<std::io::Result<Vec<RawEvent>>>, EventSource) {
        let (tx, rx) = mpsc::channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        (tx, EventSource { rx, stop })
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The reader thread: poll, let a busy stream gather, drain, send.
fn reader(
    mut inotify: Inotify,
    tx: mpsc::Sender<std::io::Result<Vec<RawEvent>>>,
    stop: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut last_batch = Instant::now() - COALESCE;
    while !stop.load(Ordering::Acquire) {
        let ready = {
            let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(500u16))
        };
        match ready {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        }
        let since = last_batch.elapsed();
        if since < COALESCE {
            std::thread::sleep(COALESCE - since);
        }
        let mut batch = Vec::new();
        let result = loop {
            match inotify.read_events(&mut buffer) {
                Ok(events) => batch.extend(events.map(|e| RawEvent {
                    wd: e.wd,
                    mask: e.mask,
                    name: e.name.map(OsStr::to_os_string),
                })),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(batch),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        last_batch = Instant::now();
        if tx.blocking_send(result).is_err() {
            return; // the daemon's loop is gone
        }
    }
}

/// The watch side: adds and removes watches and knows what each is for.
#[derive(Debug, Clone, Default)]
struct CellWatches {
    dir: Option<WatchDescriptor>,
    heartbeats: Option<WatchDescriptor>,
}

pub struct Watches {
    watches: inotify::Watches,
    /// The root, open: a cell's directories are found from it without
    /// following any symlink, and watched through their descriptor.
    root_dir: crate::store::Dir,
    root_name: OsString,
    targets: HashMap<WatchDescriptor, Target>,
    /// Per cell: the watches of its directory and heartbeats.
    cells: HashMap<String, CellWatches>,
}

/// Starts watching `root` (and its parent, for the root's removal).
pub fn watch_root(root: &Path) -> std::io::Result<(Watches, EventSource)> {
    let inotify = Inotify::init()?;
    let mut w = Watches {
        watches: inotify.watches(),
        root_dir: crate::store::Dir::open(root)?,
        root_name: root
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default(),
        targets: HashMap::new(),
        cells: HashMap::new(),
    };
    w.add(root, Target::Root).map_err(|e| match e {
        WatchError::Other(io) => io,
        WatchError::Exhausted => std::io::Error::other("inotify watch limit reached"),
        WatchError::Gone => std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    // The kernel reports IN_DELETE_SELF for the root only when its last
    // reference goes, and the daemon holds it open: watch the parent for
    // the root's name instead.
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
        && w.add(parent, Target::Parent).is_err()
    {
        tracing::debug!("not watching {} for the root's removal", parent.display());
    }
    let (tx, rx) = mpsc::channel(64);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("inotify".into())
        .spawn(move || reader(inotify, tx, flag))?;
    Ok((w, EventSource { rx, stop }))
}

impl Watches {
    fn add(&mut self, path: &Path, target: Target) -> Result<WatchDescriptor, WatchError> {
        self.add_with(path, target, mask_of)
    }

    /// Watches the directory `rel` below the root. `inotify_add_watch`
    /// takes a path and follows symlinks in every component but the last:
    /// an agent that swapped its `.lazarus` for a link to another cell's
    /// would get that cell's heartbeats watched — and reported — as its
    /// own. So the directory is opened first, below the root and without
    /// any symlink, and watched through its descriptor.
    fn add_beneath(&mut self, rel: &str, target: Target) -> Result<WatchDescriptor, WatchError> {
        // Missing, not a directory, a symlink — or not openable now: not
        // watched (the cell is then read at every rescan instead).
        let Ok(dir) = self.root_dir.subdir(rel) else {
            return Err(WatchError::Gone);
        };
        use std::os::fd::AsRawFd;
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
        // Through the descriptor's magic link, which must be followed.
        self.add_with(&path, target, |t| mask_of(t) & !WatchMask::DONT_FOLLOW)
    }

    fn add_with(
        &mut self,
        path: &Path,
        target: Target,
        mask: impl Fn(&Target) -> WatchMask,
    ) -> Result<WatchDescriptor, WatchError> {
        match self.watches.add(path, mask(&target)) {
            Ok(wd) => {
                // One inode, one descriptor: a second target for a watched
                // directory would take its events away from the first.
                if let Some(existing) = self.targets.get(&wd)
                    && *existing != target
                {
                    return Err(WatchError::Other(std::io::Error::other(format!(
                        "the directory is already watched as {existing:?}"
                    ))));
                }
                self.targets.insert(wd.clone(), target);
                Ok(wd)
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => Err(WatchError::Exhausted),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || matches!(
                        e.raw_os_error(),
                        Some(nix::libc::ENOTDIR | nix::libc::ELOOP)
                    ) =>
            {
                Err(WatchError::Gone)
            }
            Err(e) => Err(WatchError::Other(e)),
        }
    }

    /// Watches the operators' inbox (in the daemon's state directory).
    pub fn watch_inbox(&mut self, path: &Path) -> Result<(), WatchError> {
        self.add(path, Target::Inbox).map(|_| ())
    }

    /// Watches a cell's directory, and its heartbeats directory if
    /// `monitored`. Adding what is already watched costs nothing.
    pub fn watch_cell(&mut self, cell: &str, monitored: bool) -> Result<(), WatchError> {
        let mut w = self.cells.get(cell).cloned().unwrap_or_default();
        if w.dir.is_none() {
            w.dir = Some(self.add_beneath(cell, Target::CellDir(cell.to_string()))?);
            self.cells.insert(cell.to_string(), w.clone());
        }
        if monitored && w.heartbeats.is_none() {
            let rel = format!("{cell}/{HEARTBEATS}");
            w.heartbeats = Some(self.add_beneath(&rel, Target::Heartbeats(cell.to_string()))?);
            self.cells.insert(cell.to_string(), w);
        }
        Ok(())
    }

    /// Whether the cell's heartbeats are watched.
    pub fn heartbeats_watched(&self, cell: &str) -> bool {
        self.cells.get(cell).is_some_and(|w| w.heartbeats.is_some())
    }

    /// Stops watching a cell's heartbeats (keeps its directory watch).
    pub fn unwatch_heartbeats(&mut self, cell: &str) {
        if let Some(w) = self.cells.get_mut(cell)
            && let Some(wd) = w.heartbeats.take()
        {
            self.targets.remove(&wd);
            let _ = self.watches.remove(wd);
        }
    }

    /// Stops watching a cell. A watch whose directory is already gone was
    /// removed by the kernel; that is not an error.
    pub fn unwatch_cell(&mut self, cell: &str) {
        if let Some(w) = self.cells.remove(cell) {
            for wd in [w.dir, w.heartbeats].into_iter().flatten() {
                self.targets.remove(&wd);
                let _ = self.watches.remove(wd);
            }
        }
    }

    /// What a raw event means, with the bookkeeping for watches the kernel
    /// dropped (`IN_IGNORED`).
    pub fn interpret(&mut self, raw: &RawEvent) -> Option<FsEvent> {
        if raw.mask.contains(EventMask::Q_OVERFLOW) {
            return Some(FsEvent::Rescan);
        }
        let target = self.targets.get(&raw.wd)?.clone();
        if raw.mask.contains(EventMask::IGNORED) {
            self.targets.remove(&raw.wd);
            match &target {
                Target::Heartbeats(cell) => {
                    if let Some(w) = self.cells.get_mut(cell) {
                        w.heartbeats = None;
                    }
                }
                Target::CellDir(cell) => {
                    self.cells.remove(cell);
                }
                Target::Root | Target::Parent | Target::Inbox => {}
            }
        }
        classify(&target, raw.mask, raw.name.as_deref(), &self.root_name)
    }
}

/// What an event on a watched directory means (pure; see the tests).
pub fn classify(
    target: &Target,
    mask: EventMask,
    name: Option<&OsStr>,
    root_name: &OsStr,
) -> Option<FsEvent> {
    let written = mask.intersects(EventMask::CLOSE_WRITE | EventMask::MOVED_TO);
    let appeared = mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
    let removed = mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM);
    let self_gone =
        mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED);
    let is_dir = mask.contains(EventMask::ISDIR);
    let name = name.and_then(OsStr::to_str);
    let cell_name = |n: &str| (!n.is_empty() && !n.starts_with('.')).then(|| n.to_string());
    match target {
        Target::Root if self_gone => Some(FsEvent::RootGone),
        Target::Root if is_dir && appeared => cell_name(name?).map(FsEvent::RootEntry),
        Target::Root if is_dir && removed => cell_name(name?).map(FsEvent::RootEntryGone),
        Target::Root => None,
        Target::Parent if removed && name.map(OsStr::new) == Some(root_name) => {
            Some(FsEvent::RootGone)
        }
        Target::Parent => None,
        Target::CellDir(cell) => match name? {
            n if n == MANIFEST && (written || removed) => Some(FsEvent::Manifest(cell.clone())),
            ".lazarus" if is_dir && appeared => Some(FsEvent::CellMeta(cell.clone())),
            ".lazarus" if is_dir && removed => Some(FsEvent::CellMetaGone(cell.clone())),
            _ => None,
        },
        Target::Heartbeats(cell) if self_gone => Some(FsEvent::CellMetaGone(cell.clone())),
        Target::Heartbeats(cell) if written && !is_dir => {
            let agent = name?.strip_suffix(".json")?;
            validate_agent_name(agent).ok()?;
            Some(FsEvent::Heartbeat {
                cell: cell.clone(),
                agent: agent.to_string(),
            })
        }
        Target::Heartbeats(_) => None,
        Target::Inbox if written && !is_dir => {
            let name = name?;
            crate::records::is_request_name(name).then(|| FsEvent::Inbox(name.to_string()))
        }
        Target::Inbox => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(target: Target, mask: EventMask, name: &str) -> Option<FsEvent> {
        let name = (!name.is_empty()).then(|| OsStr::new(name));
        classify(&target, mask, name, OsStr::new("missions"))
    }

    fn hb() -> Target {
        Target::Heartbeats("u".into())
    }

    fn dir() -> Target {
        Target::CellDir("u".into())
    }

    #[test]
    fn heartbeats_on_close_write_and_rename_only() {
        let want = Some(FsEvent::Heartbeat {
            cell: "u".into(),
            agent: "claude".into(),
        });
        assert_eq!(c(hb(), EventMask::CLOSE_WRITE, "claude.json"), want);
        assert_eq!(c(hb(), EventMask::MOVED_TO, "claude.json"), want);
        for noise in [
            EventMask::OPEN,
            EventMask::CLOSE_NOWRITE,
            EventMask::MODIFY,
            EventMask::CREATE,
        ] {
            assert_eq!(c(hb(), noise, "claude.json"), None, "{noise:?}");
        }
        // Temp files of atomic writers, and hostile names, are not agents.
        for name in [".claude.json.tmp", "claude.json.tmp", ".json", "../x.json"] {
            assert_eq!(c(hb(), EventMask::CLOSE_WRITE, name), None, "{name}");
        }
        assert_eq!(
            c(hb(), EventMask::MOVED_TO | EventMask::ISDIR, "claude.json"),
            None
        );
        assert_eq!(
            c(hb(), EventMask::DELETE_SELF, ""),
            Some(FsEvent::CellMetaGone("u".into()))
        );
    }

    #[test]
    fn manifests_written_in_place_replaced_or_removed() {
        let m = Some(FsEvent::Manifest("u".into()));
        for mask in [
            EventMask::CLOSE_WRITE,
            EventMask::MOVED_TO,
            EventMask::DELETE,
            EventMask::MOVED_FROM,
        ] {
            assert_eq!(c(dir(), mask, "cell.json"), m, "{mask:?}");
        }
        assert_eq!(c(dir(), EventMask::CLOSE_WRITE, ".cell.json.123.tmp"), None);
        assert_eq!(
            c(dir(), EventMask::CREATE, "cell.json"),
            None,
            "wait for the close"
        );
        assert_eq!(
            c(dir(), EventMask::CREATE | EventMask::ISDIR, ".lazarus"),
            Some(FsEvent::CellMeta("u".into()))
        );
        assert_eq!(
            c(dir(), EventMask::DELETE | EventMask::ISDIR, ".lazarus"),
            Some(FsEvent::CellMetaGone("u".into()))
        );
    }

    #[test]
    fn cells_appear_and_go_and_the_root_too() {
        let d = EventMask::ISDIR;
        assert_eq!(
            c(Target::Root, EventMask::CREATE | d, "u"),
            Some(FsEvent::RootEntry("u".into()))
        );
        assert_eq!(
            c(Target::Root, EventMask::MOVED_TO | d, "u"),
            Some(FsEvent::RootEntry("u".into()))
        );
        assert_eq!(
            c(Target::Root, EventMask::MOVED_TO | d, ".creating-u"),
            None
        );
        assert_eq!(c(Target::Root, EventMask::CREATE, "file"), None);
        assert_eq!(
            c(Target::Root, EventMask::DELETE | d, "u"),
            Some(FsEvent::RootEntryGone("u".into()))
        );
        assert_eq!(
            c(Target::Root, EventMask::MOVED_FROM | d, "u"),
            Some(FsEvent::RootEntryGone("u".into()))
        );
        assert_eq!(
            c(Target::Root, EventMask::DELETE_SELF, ""),
            Some(FsEvent::RootGone)
        );
        assert_eq!(
            c(Target::Parent, EventMask::DELETE | d, "missions"),
            Some(FsEvent::RootGone)
        );
        assert_eq!(c(Target::Parent, EventMask::DELETE | d, "other"), None);
    }

    /// Found by a review: a watch added by path follows symlinks in every
    /// component but the last, so a cell whose `.lazarus` is a link to
    /// another cell's got that cell's heartbeats reported as its own.
    #[test]
    fn a_cells_watch_never_lands_in_another_cell() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("b/.lazarus/heartbeats")).expect("mkdir");
        std::fs::create_dir_all(root.join("a")).expect("mkdir");
        std::os::unix::fs::symlink(root.join("b/.lazarus"), root.join("a/.lazarus"))
            .expect("symlink");
        let (mut w, _source) = watch_root(root).expect("watch");
        w.watch_cell("b", true).expect("b");
        let b = w.cells["b"].heartbeats.clone().expect("b's heartbeats");
        assert!(matches!(w.watch_cell("a", true), Err(WatchError::Gone)));
        assert!(!w.heartbeats_watched("a"));
        assert_eq!(
            w.targets[&b],
            Target::Heartbeats("b".into()),
            "b keeps its watch"
        );
        // Watched in the other order, the link is refused all the same.
        let (mut w, _source) = watch_root(root).expect("watch");
        assert!(matches!(w.watch_cell("a", true), Err(WatchError::Gone)));
        w.watch_cell("b", true).expect("b");
        assert!(w.heartbeats_watched("b") && !w.heartbeats_watched("a"));
    }

    #[test]
    fn masks_ask_only_for_what_matters() {
        let hb = mask_of(&hb());
        assert!(hb.contains(WatchMask::DONT_FOLLOW | WatchMask::ONLYDIR));
        assert!(!hb.intersects(
            WatchMask::OPEN | WatchMask::MODIFY | WatchMask::ACCESS | WatchMask::CREATE
        ));
        assert!(
            !mask_of(&dir()).intersects(WatchMask::OPEN | WatchMask::MODIFY | WatchMask::ACCESS)
        );
    }
}
