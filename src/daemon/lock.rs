//! One daemon per root: an exclusive `flock` on `<root>/.lazarus-pit.lock`,
//! which also records the holder's pid for the refusal message.

use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

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
        let file = root.open_rw(LOCK_FILE)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                lock.set_len(0)?;
                lock.rewind()?;
                writeln!(lock, "{}", std::process::id())?;
                Ok(RootLock { _lock: lock })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(Error::AlreadyRunning {
                    root: root.path().to_path_buf(),
                    pid: text.trim().parse().ok(),
                })
            }
            Err((_, e)) => Err(Error::Io(std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("{}: {e}", root.display(LOCK_FILE).display()),
            ))),
        }
    }
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
                Error::Usage(format!("pid_file {} is not a file name", path.display()))
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
