//! The files of a cell's event stream: `logs/events.jsonl` and its rotated
//! generations `events.jsonl.1` (newest) … `events.jsonl.N`.
//!
//! Every writer (the daemon and the CLI) appends a whole line with one
//! `O_APPEND` write while it holds a shared `flock` on the file; the daemon
//! rotates while it holds an exclusive one, and only between two appends.
//! An appender that got its lock re-checks that the name still means the
//! file it opened, so no line lands in a generation after the rename: a
//! follower (`tail -F`, a log shipper, `events --follow`) that reads the
//! old file to its end and then the new one sees every line once.
//!
//! The lock is on a file in the cell, which the cell's agents can open too:
//! one that holds it costs the rotation (tried again at the next append),
//! never an event — an appender waits a bounded time, then writes anyway
//! (a rotation holds the lock for microseconds, so a longer hold is not
//! one).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::store::{Dir, EntryKind};

/// The stream's file name, in `logs/`.
pub const LOG: &str = "events.jsonl";
/// How long the CLI waits for a lock held exclusively (the daemon waits
/// not at all: its loop serves every cell).
pub const CLI_PATIENCE: Duration = Duration::from_millis(500);
/// Rotated generations beyond this number are never read.
pub const MAX_GENERATIONS: u32 = 1000;

/// The name of generation `n` (1 is the newest).
pub fn generation(n: u32) -> String {
    format!("{LOG}.{n}")
}

/// The generation number `name` stands for, if it is one.
pub fn generation_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(LOG)?.strip_prefix('.')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n <= MAX_GENERATIONS)
}

/// The generations present in `logs`, newest (1) first.
pub fn generations(logs: &Dir) -> io::Result<Vec<u32>> {
    let mut found: Vec<u32> = logs
        .entries()?
        .into_iter()
        .filter(|(_, kind)| *kind == EntryKind::File)
        .filter_map(|(name, _)| generation_of(&name))
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// Appends `lines` (each one whole line, newline included) to the stream
/// in `logs`, each with a single write, under the stream's shared lock.
/// `patience`: how long to wait for a lock someone holds exclusively
/// before writing without it. Returns the file's size after the writes.
pub fn append(logs: &Dir, lines: &[&[u8]], patience: Duration) -> io::Result<u64> {
    let file = open_current(logs, patience)?;
    for line in lines {
        crate::store::write_line(&file, line, &logs.display(LOG))?;
    }
    Ok(nix::sys::stat::fstat(file.as_fd())
        .map(|st| st.st_size as u64)
        .unwrap_or(0))
}

/// A descriptor of the current `events.jsonl`, appending, with the shared
/// lock held when it could be had within `patience`.
fn open_current(logs: &Dir, patience: Duration) -> io::Result<Locked> {
    // A rotation between the open and the lock renames the file opened:
    // open again. Bounded, since an agent can rename it as often as it likes.
    for _ in 0..8 {
        let file = logs.open_append(LOG)?;
        let locked = match lock(file, FlockArg::LockSharedNonblock, patience) {
            Ok(locked) => Locked::Held(locked),
            Err(file) => return Ok(Locked::Unheld(file)),
        };
        if same_file(logs, &locked)? {
            return Ok(locked);
        }
    }
    logs.open_append(LOG).map(Locked::Unheld)
}

/// Whether `LOG` in `logs` is the file `file` is open on.
fn same_file(logs: &Dir, file: &impl AsFd) -> io::Result<bool> {
    let open = nix::sys::stat::fstat(file.as_fd())?;
    Ok(match logs.stat_nofollow(LOG) {
        Ok(named) => named.st_dev == open.st_dev && named.st_ino == open.st_ino,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    })
}

/// An open `events.jsonl`, with or without its lock.
enum Locked {
    Held(Flock<File>),
    Unheld(File),
}

impl std::ops::Deref for Locked {
    type Target = File;
    fn deref(&self) -> &File {
        match self {
            Locked::Held(f) => f,
            Locked::Unheld(f) => f,
        }
    }
}

impl AsFd for Locked {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        (**self).as_fd()
    }
}

/// Takes `how` (a non-blocking flock) on `file`, trying for `patience`.
/// The file back if it could not be had.
fn lock(file: File, how: FlockArg, patience: Duration) -> Result<Flock<File>, File> {
    let start = Instant::now();
    let mut file = file;
    loop {
        match Flock::lock(file, how) {
            Ok(locked) => return Ok(locked),
            Err((back, Errno::EWOULDBLOCK)) if start.elapsed() < patience => {
                file = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((back, _)) => return Err(back),
        }
    }
}

/// What a rotation did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotated {
    /// The file is not over the size (or no longer the file that was).
    NotDue,
    /// Someone holds the lock: try at the next append.
    Busy,
    /// `events.jsonl` is now `events.jsonl.1`, of this many bytes;
    /// `forced`: without the lock, which someone held past twice the size.
    Done { bytes: u64, forced: bool },
}

/// Rotates the stream in `logs` if `events.jsonl` is larger than
/// `max_bytes`: generation `keep` is removed (a file or symlink; anything
/// else an agent made of it is moved aside, never walked: this runs on the
/// daemon's loop), each other one moves up by one, and `events.jsonl`
/// becomes `events.jsonl.1`; the next append creates a new one. With
/// `keep` 0 the full file is removed. Never waits for the lock; past
/// twice `max_bytes` it rotates without it (a lock held that long is no
/// appender's, and the daemon, not the agent, pays for the disk).
pub fn rotate(logs: &Dir, max_bytes: u64, keep: u32) -> io::Result<Rotated> {
    let file = logs.open_append(LOG)?;
    let st = nix::sys::stat::fstat(file.as_fd())?;
    let size = st.st_size as u64;
    if size <= max_bytes {
        return Ok(Rotated::NotDue);
    }
    let (_locked, forced) = match lock(file, FlockArg::LockExclusiveNonblock, Duration::ZERO) {
        Ok(locked) => {
            if !same_file(logs, &*locked)? {
                return Ok(Rotated::NotDue);
            }
            (Some(locked), false)
        }
        Err(_) if size <= max_bytes.saturating_mul(2) => return Ok(Rotated::Busy),
        Err(_) => (None, true),
    };
    let keep = keep.min(MAX_GENERATIONS);
    if keep == 0 {
        logs.remove_file(LOG)?;
    } else {
        set_aside(logs, &generation(keep))?;
        for n in (1..keep).rev() {
            match logs.rename(&generation(n), &generation(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        logs.rename(LOG, &generation(1))?;
    }
    logs.sync()?;
    Ok(Rotated::Done {
        bytes: size,
        forced,
    })
}

/// Removes `name` of `logs` if it is a file or a symlink (one unlink);
/// anything else (a directory an agent made there, of any size) is
/// renamed to a hidden name beside it (one rename), left to the cell.
fn set_aside(logs: &Dir, name: &str) -> io::Result<()> {
    match logs.entry_kind(name)? {
        None => Ok(()),
        Some(EntryKind::File | EntryKind::Symlink) => logs.remove_file(name),
        Some(_) => logs.rename(
            name,
            &format!(".{name}.set-aside-{}", uuid::Uuid::new_v4().simple()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = Dir::open(tmp.path()).expect("open");
        (tmp, dir)
    }

    fn read(tmp: &tempfile::TempDir, name: &str) -> String {
        std::fs::read_to_string(tmp.path().join(name)).unwrap_or_default()
    }

    #[test]
    fn generation_names() {
        assert_eq!(generation(3), "events.jsonl.3");
        assert_eq!(generation_of("events.jsonl.3"), Some(3));
        for bad in [
            "events.jsonl",
            "events.jsonl.",
            "events.jsonl.03",
            "events.jsonl.x",
            "events.jsonl.1001",
            "events.jsonl.99999999999999999999",
        ] {
            assert_eq!(generation_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn rotation_shifts_generations_and_keeps_n() {
        let (tmp, dir) = logs();
        for round in 0..5 {
            let line = format!("{round}\n");
            append(&dir, &[line.as_bytes()], Duration::ZERO).expect("append");
            assert_eq!(
                rotate(&dir, 0, 3).expect("rotate"),
                Rotated::Done {
                    bytes: 2,
                    forced: false
                }
            );
        }
        assert_eq!(generations(&dir).expect("list"), vec![1, 2, 3]);
        assert_eq!(read(&tmp, "events.jsonl.1"), "4\n");
        assert_eq!(read(&tmp, "events.jsonl.3"), "2\n");
        assert!(!tmp.path().join("events.jsonl").exists());
    }

    #[test]
    fn rotation_waits_for_the_size_and_never_for_the_lock() {
        let (tmp, dir) = logs();
        append(&dir, &[b"a\n"], Duration::ZERO).expect("append");
        assert_eq!(rotate(&dir, 2, 2).expect("rotate"), Rotated::NotDue);
        // Someone (an agent) holds a shared lock: no rotation, no wait.
        let held = Flock::lock(
            File::open(tmp.path().join(LOG)).expect("open"),
            FlockArg::LockSharedNonblock,
        )
        .expect("lock");
        append(&dir, &[b"b\n"], Duration::ZERO).expect("append beside a shared lock");
        assert_eq!(rotate(&dir, 2, 2).expect("rotate"), Rotated::Busy);
        drop(held);
        assert_eq!(
            rotate(&dir, 2, 2).expect("rotate"),
            Rotated::Done {
                bytes: 4,
                forced: false
            }
        );
        assert_eq!(read(&tmp, "events.jsonl.1"), "a\nb\n");
    }

    #[test]
    fn an_exclusive_lock_held_by_someone_else_costs_no_event() {
        let (tmp, dir) = logs();
        append(&dir, &[b"a\n"], Duration::ZERO).expect("append");
        let _held = Flock::lock(
            File::open(tmp.path().join(LOG)).expect("open"),
            FlockArg::LockExclusiveNonblock,
        )
        .expect("lock");
        append(&dir, &[b"b\n"], Duration::from_millis(20)).expect("append");
        assert_eq!(read(&tmp, LOG), "a\nb\n");
    }

    #[test]
    fn a_generation_an_agent_made_a_directory_is_set_aside_not_walked() {
        let (tmp, dir) = logs();
        std::fs::create_dir_all(tmp.path().join("events.jsonl.2/deep")).expect("mkdir");
        std::fs::write(tmp.path().join("events.jsonl.2/deep/f"), "x").expect("write");
        append(&dir, &[b"a\n"], Duration::ZERO).expect("append");
        assert_eq!(
            rotate(&dir, 0, 2).expect("rotate"),
            Rotated::Done {
                bytes: 2,
                forced: false
            }
        );
        assert!(!tmp.path().join("events.jsonl.2").exists());
        assert_eq!(read(&tmp, "events.jsonl.1"), "a\n");
        let aside: Vec<String> = std::fs::read_dir(tmp.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".events.jsonl.2.set-aside-"))
            .collect();
        assert_eq!(aside.len(), 1, "moved aside, whole");
    }

    #[test]
    fn a_lock_held_past_twice_the_size_no_longer_stops_rotation() {
        let (tmp, dir) = logs();
        append(&dir, &[b"aaa\n"], Duration::ZERO).expect("append");
        let _held = Flock::lock(
            File::open(tmp.path().join(LOG)).expect("open"),
            FlockArg::LockSharedNonblock,
        )
        .expect("lock");
        assert_eq!(rotate(&dir, 3, 2).expect("rotate"), Rotated::Busy);
        append(&dir, &[b"bbb\n"], Duration::ZERO).expect("append");
        assert_eq!(
            rotate(&dir, 3, 2).expect("rotate"),
            Rotated::Done {
                bytes: 8,
                forced: true
            }
        );
        assert_eq!(read(&tmp, "events.jsonl.1"), "aaa\nbbb\n");
    }

    #[test]
    fn keep_zero_drops_the_full_file() {
        let (tmp, dir) = logs();
        append(&dir, &[b"a\n"], Duration::ZERO).expect("append");
        assert_eq!(
            rotate(&dir, 0, 0).expect("rotate"),
            Rotated::Done {
                bytes: 2,
                forced: false
            }
        );
        assert!(generations(&dir).expect("list").is_empty());
        assert!(!tmp.path().join(LOG).exists());
    }
}
