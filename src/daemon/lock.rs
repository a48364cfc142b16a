//! One daemon per root: an exclusive `flock` on `<root>/.lazarus-pit.lock`,
//! which also records the holder's pid for the refusal message.
//!
//! `flock` works on any descriptor, even a read-only one, so whoever can
//! open the file can hold the lock and keep every daemon from starting.
//! The file is therefore private (mode 0600, the daemon's user) from its
//! creation on: made under a temporary name and renamed into place, never
//! widened afterwards. A lock file that is not private — left by an older
//! version, or made by someone else — may be held open by anyone since,
//! so it is not used: a fresh private one replaces it. After locking, the
//! name must still lead to the locked file; if another daemon replaced it
//! in between, the attempt starts over.

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg};
use nix::sys::stat::{SFlag, fstat, fstatat};

use crate::error::{Error, Result};
use crate::store::Dir;

/// The lock file's name in the root (a dot-name: never a cell).
pub const LOCK_FILE: &str = ".lazarus-pit.lock";

/// Held for the daemon's lifetime; released by the kernel at exit, even a
/// crash, so a stale lock never blocks a restart.
pub struct RootLock {
    _lock: Flock<std::fs::File>,
}

impl RootLock {
    pub fn acquire(root: &Dir) -> Result<RootLock> {
        let io = |e: std::io::Error| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", root.display(LOCK_FILE).display()),
            ))
        };
        for _ in 0..8 {
            let file = open_private(root).map_err(io)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    if !still_named(root, &lock) {
                        continue; // replaced meanwhile: try the new one
                    }
                    lock.set_len(0).map_err(io)?;
                    lock.rewind().map_err(io)?;
                    writeln!(lock, "{}", std::process::id()).map_err(io)?;
                    return Ok(RootLock { _lock: lock });
                }
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(Error::AlreadyRunning {
                        root: root.path().to_path_buf(),
                        pid: text.trim().parse().ok(),
                    });
                }
                Err((_, e)) => return Err(io(e.into())),
            }
        }
        Err(io(std::io::Error::other(
            "the lock file keeps being replaced; is another daemon starting?",
        )))
    }
}

/// Opens the lock file if it is private — a regular file of this user's,
/// mode 0600, one link — or else puts a fresh private one in its place.
fn open_private(root: &Dir) -> std::io::Result<std::fs::File> {
    let me = nix::unistd::geteuid().as_raw();
    if let Ok(file) = root.open_existing_rw(LOCK_FILE) {
        let st = fstat(&file)?;
        let private = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
            && st.st_uid == me
            && st.st_mode & 0o077 == 0
            && st.st_nlink == 1;
        if private {
            return Ok(file);
        }
        tracing::warn!(
            "{}: not private to the daemon's user (mode {:o}, uid {}): replaced by a fresh one",
            root.display(LOCK_FILE).display(),
            st.st_mode & 0o7777,
            st.st_uid
        );
    }
    root.create_replacing(LOCK_FILE, 0o600)
}

/// Whether `LOCK_FILE` still names the file behind `lock`.
fn still_named(root: &Dir, lock: &Flock<std::fs::File>) -> bool {
    let (Ok(ours), Ok(named)) = (
        fstat(lock.as_fd()),
        fstatat(root.as_fd(), LOCK_FILE, AtFlags::AT_SYMLINK_NOFOLLOW),
    ) else {
        return false;
    };
    (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino)
}

/// The pid of the daemon holding `root`'s lock, if one does — read from
/// `/proc/locks`, which anyone may read, so it also answers for users who
/// may not open the (private) lock file. A fact about the root, not a
/// claim written by anyone.
pub fn holder(root: &Path) -> Option<u32> {
    let st = nix::sys::stat::lstat(&root.join(LOCK_FILE)).ok()?;
    crate::store::flock_holder(st.st_dev, st.st_ino)
}

/// `daemon.pid_file`: written atomically at start, removed at exit.
pub struct PidFile {
    path: std::path::PathBuf,
}

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::Io(std::io::Error::other(format!(
                    "pid_file {} is not a file name",
                    path.display()
                )))
            })?;
        let dir = Dir::open(parent).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("pid_file directory {}: {e}", parent.display()),
            ))
        })?;
        dir.write_atomic(&name, format!("{}\n", std::process::id()).as_bytes(), 0o644)?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_of_a_root_lock_is_known_to_anyone() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert_eq!(holder(tmp.path()), None, "no lock file");
        let root = Dir::open(tmp.path()).expect("root");
        let lock = RootLock::acquire(&root).expect("lock");
        assert_eq!(holder(tmp.path()), Some(std::process::id()));
        assert!(matches!(
            RootLock::acquire(&root),
            Err(Error::AlreadyRunning { pid: Some(p), .. }) if p == std::process::id()
        ));
        drop(lock);
        assert_eq!(holder(tmp.path()), None, "released");
    }
}
