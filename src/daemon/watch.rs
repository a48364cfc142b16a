//! The bridge from notify (inotify) to the daemon's loop.
//!
//! notify's callback runs on its own thread and must never block: it only
//! classifies the raw event by path and `try_send`s a small [`FsEvent`]
//! into a bounded channel. A full channel sets the `overflow` flag, which
//! the loop answers with a full rescan — the same as an inotify queue
//! overflow (`need_rescan()`, an event without paths). Only close-after-write
//! and moved-to count as writes: the open/close-nowrite events of the
//! daemon's own reads never trigger work.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::cell::MANIFEST;
use crate::cell::name::validate_agent_name;

/// Capacity of the channel from the notify thread; beyond it, a rescan.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;

/// What a file-system change means to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsEvent {
    /// An entry of the root appeared (created or moved in): maybe a cell.
    RootEntry(String),
    /// An entry of the root went away (removed or moved out).
    RootEntryGone(String),
    /// `cell.json` of this cell was written, replaced or removed.
    Manifest(String),
    /// `.lazarus/` or its `heartbeats/` appeared.
    CellMeta(String),
    /// `.lazarus/` or its `heartbeats/` went away (its watch is gone).
    CellMetaGone(String),
    /// `heartbeats/<agent>.json` of this cell was written or replaced.
    Heartbeat { cell: String, agent: String },
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
    Other(notify::Error),
}

/// One inotify instance, non-recursive watches, symlinks not followed.
pub struct FsWatcher {
    watcher: RecommendedWatcher,
}

impl FsWatcher {
    /// Starts watching `root`; events arrive on the returned channel.
    pub fn new(
        root: &Path,
        overflow: Arc<AtomicBool>,
    ) -> notify::Result<(FsWatcher, mpsc::Receiver<FsEvent>)> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let base = root.to_path_buf();
        let handler = move |res: notify::Result<notify::Event>| {
            let send = |ev: FsEvent| {
                if tx.try_send(ev).is_err() {
                    overflow.store(true, Ordering::Release);
                }
            };
            match res {
                Ok(event) => {
                    if event.need_rescan() {
                        send(FsEvent::Rescan);
                    }
                    for path in &event.paths {
                        if let Some(ev) = classify(&base, &event.kind, path) {
                            send(ev);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("file watcher: {e}; rescanning");
                    send(FsEvent::Rescan);
                }
            }
        };
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut watcher = RecommendedWatcher::new(handler, config)?;
        watcher.watch(root, RecursiveMode::NonRecursive)?;
        // The root's own removal: the kernel reports IN_DELETE_SELF only
        // when the last reference goes, and the daemon holds the root open,
        // so watch the parent for the root's name instead.
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
            && let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive)
        {
            tracing::debug!(
                "not watching {} for the root's removal: {e}",
                parent.display()
            );
        }
        Ok((FsWatcher { watcher }, rx))
    }

    pub fn watch(&mut self, path: &Path) -> Result<(), WatchError> {
        self.watcher
            .watch(path, RecursiveMode::NonRecursive)
            .map_err(|e| match e.kind {
                notify::ErrorKind::MaxFilesWatch => WatchError::Exhausted,
                notify::ErrorKind::PathNotFound => WatchError::Gone,
                notify::ErrorKind::Io(ref io)
                    if io.kind() == std::io::ErrorKind::NotFound
                        || io.raw_os_error() == Some(nix::libc::ENOTDIR) =>
                {
                    WatchError::Gone
                }
                _ => WatchError::Other(e),
            })
    }

    /// Stops watching `path`. A path whose directory was removed or moved
    /// has already lost its watch; that is not an error.
    pub fn unwatch(&mut self, path: &Path) {
        let _ = self.watcher.unwatch(path);
    }
}

/// What a raw event on `path` means, or `None` if it means nothing to us.
pub fn classify(root: &Path, kind: &EventKind, path: &Path) -> Option<FsEvent> {
    let written = matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
    );
    let appeared = written || matches!(kind, EventKind::Create(CreateKind::Folder));
    let gone = matches!(
        kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
    );
    if !(appeared || gone) {
        return None;
    }
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let cell = |name: &str| (!name.starts_with('.') && !name.is_empty()).then(|| name.to_string());
    match parts.as_slice() {
        [] if gone => Some(FsEvent::RootGone),
        [name] if appeared && !written => cell(name).map(FsEvent::RootEntry),
        // A directory moved in arrives as a rename-to.
        [name] if matches!(kind, EventKind::Modify(ModifyKind::Name(RenameMode::To))) => {
            cell(name).map(FsEvent::RootEntry)
        }
        [name] if gone => cell(name).map(FsEvent::RootEntryGone),
        [name, file] if *file == MANIFEST && (written || gone) => cell(name).map(FsEvent::Manifest),
        [name, ".lazarus"] | [name, ".lazarus", "heartbeats"] if gone => {
            cell(name).map(FsEvent::CellMetaGone)
        }
        [name, ".lazarus"] | [name, ".lazarus", "heartbeats"] => cell(name).map(FsEvent::CellMeta),
        [name, ".lazarus", "heartbeats", file] if written => {
            let agent = file.strip_suffix(".json")?;
            validate_agent_name(agent).ok()?;
            Some(FsEvent::Heartbeat {
                cell: cell(name)?,
                agent: agent.to_string(),
            })
        }
        _ => None,
    }
}

/// The paths watched for one cell.
pub fn cell_paths(root: &Path, cell: &str) -> [PathBuf; 2] {
    let dir = root.join(cell);
    let heartbeats = dir.join(crate::cell::HEARTBEATS);
    [dir, heartbeats]
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, RemoveKind};

    fn c(kind: EventKind, rel: &str) -> Option<FsEvent> {
        let root = Path::new("/r");
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        classify(root, &kind, &path)
    }

    const CLOSE_WRITE: EventKind = EventKind::Access(AccessKind::Close(AccessMode::Write));
    const MOVED_TO: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    const MOVED_FROM: EventKind = EventKind::Modify(ModifyKind::Name(RenameMode::From));

    #[test]
    fn heartbeats_on_close_write_and_rename_only() {
        let hb = Some(FsEvent::Heartbeat {
            cell: "u".into(),
            agent: "claude".into(),
        });
        assert_eq!(c(CLOSE_WRITE, "u/.lazarus/heartbeats/claude.json"), hb);
        assert_eq!(c(MOVED_TO, "u/.lazarus/heartbeats/claude.json"), hb);
        for noise in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Create(CreateKind::File),
        ] {
            assert_eq!(c(noise, "u/.lazarus/heartbeats/claude.json"), None);
        }
        // Temp files of atomic writers, and hostile names, are not agents.
        assert_eq!(
            c(CLOSE_WRITE, "u/.lazarus/heartbeats/.claude.json.tmp"),
            None
        );
        assert_eq!(
            c(CLOSE_WRITE, "u/.lazarus/heartbeats/claude.json.tmp"),
            None
        );
        assert_eq!(c(CLOSE_WRITE, "u/.lazarus/heartbeats/.json"), None);
    }

    #[test]
    fn manifests_written_in_place_or_replaced() {
        let m = Some(FsEvent::Manifest("u".into()));
        assert_eq!(c(CLOSE_WRITE, "u/cell.json"), m);
        assert_eq!(c(MOVED_TO, "u/cell.json"), m);
        assert_eq!(c(EventKind::Remove(RemoveKind::File), "u/cell.json"), m);
        assert_eq!(c(CLOSE_WRITE, "u/.cell.json.123.tmp"), None);
        assert_eq!(c(CLOSE_WRITE, "u/notes.txt"), None);
    }

    #[test]
    fn cells_appear_and_go() {
        assert_eq!(
            c(EventKind::Create(CreateKind::Folder), "u"),
            Some(FsEvent::RootEntry("u".into()))
        );
        assert_eq!(c(MOVED_TO, "u"), Some(FsEvent::RootEntry("u".into())));
        assert_eq!(c(MOVED_TO, ".creating-u"), None);
        assert_eq!(
            c(EventKind::Remove(RemoveKind::Folder), "u"),
            Some(FsEvent::RootEntryGone("u".into()))
        );
        assert_eq!(c(MOVED_FROM, "u"), Some(FsEvent::RootEntryGone("u".into())));
        assert_eq!(
            c(EventKind::Remove(RemoveKind::Other), ""),
            Some(FsEvent::RootGone)
        );
        assert_eq!(
            c(
                EventKind::Remove(RemoveKind::Folder),
                "u/.lazarus/heartbeats"
            ),
            Some(FsEvent::CellMetaGone("u".into()))
        );
        assert_eq!(
            c(EventKind::Create(CreateKind::Folder), "u/.lazarus"),
            Some(FsEvent::CellMeta("u".into()))
        );
    }
}
