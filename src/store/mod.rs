//! Durable, symlink-safe storage primitives, written once and shared by the
//! CLI and the daemon: atomic replace, locked manifest update, whole-line
//! event append, and bounded reads of agent-writable files.

mod dir;

pub use dir::{AGENT_FILE_LIMIT, Dir, DirLock, EntryKind, write_line};

use nix::errno::Errno;

/// The pid holding an exclusive `flock` on the file `(dev, ino)`, from
/// `/proc/locks` (which anyone may read). Waiters (`->`) hold nothing.
pub fn flock_holder(dev: u64, ino: u64) -> Option<u32> {
    let id = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 8958 fe:00:10010682 0 EOF"
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(3) == Some(&"WRITE") && f.get(5) == Some(&id.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// `pid N (uid U, name)` for messages about who holds something.
pub fn describe_process(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    match (field("Uid:"), field("Name:")) {
        (Some(uid), Some(name)) => format!("pid {pid} (uid {uid}, {})", crate::text::escape(&name)),
        _ => format!("pid {pid}"),
    }
}

/// Why a safe read of an agent-writable file failed. Each way has its own
/// variant so callers can tell "not there yet" from "hostile".
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("does not exist")]
    NotFound,
    #[error("is or passes through a symlink, refused")]
    Symlink,
    #[error("lies outside the cell, refused")]
    OutsideCell,
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is {size} bytes, more than the {limit} allowed")]
    TooLarge { size: u64, limit: u64 },
    #[error("a path component is not a directory")]
    NotADirectory,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    fn from_open(e: Errno) -> ReadError {
        match e {
            Errno::ENOENT => ReadError::NotFound,
            Errno::ELOOP => ReadError::Symlink,
            Errno::EXDEV => ReadError::OutsideCell,
            Errno::ENOTDIR => ReadError::NotADirectory,
            other => ReadError::Io(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Dir::open(tmp.path()).expect("open");
        (tmp, dir)
    }

    #[test]
    fn reads_a_regular_file() {
        let (tmp, d) = dir();
        std::fs::create_dir(tmp.path().join("a")).expect("mkdir");
        std::fs::write(tmp.path().join("a/f.json"), b"{}").expect("write");
        assert_eq!(d.read_file("a/f.json", 10).expect("read"), b"{}");
    }

    #[test]
    fn refuses_symlinked_file_and_symlinked_directory() {
        let (tmp, d) = dir();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"x").expect("write");
        symlink(outside.path().join("secret"), tmp.path().join("link")).expect("symlink");
        symlink(outside.path(), tmp.path().join("dirlink")).expect("symlink");
        assert!(matches!(d.read_file("link", 10), Err(ReadError::Symlink)));
        assert!(matches!(
            d.read_file("dirlink/secret", 10),
            Err(ReadError::Symlink)
        ));
        assert!(matches!(
            d.read_file("../x", 10),
            Err(ReadError::OutsideCell)
        ));
    }

    #[test]
    fn refuses_fifo_directory_and_huge_file_without_blocking() {
        let (tmp, d) = dir();
        nix::unistd::mkfifo(&tmp.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkfifo");
        std::fs::create_dir(tmp.path().join("sub")).expect("mkdir");
        std::fs::write(tmp.path().join("big"), vec![b'x'; 100]).expect("write");
        assert!(matches!(
            d.read_file("fifo", 10),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            d.read_file("sub", 10),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(
            d.read_file("big", 10),
            Err(ReadError::TooLarge {
                size: 100,
                limit: 10
            })
        ));
        assert!(matches!(d.read_file("none", 10), Err(ReadError::NotFound)));
    }

    #[test]
    fn the_hot_path_reader_refuses_the_same_things() {
        let (tmp, d) = dir();
        let mut buf = vec![0u8; 101];
        std::fs::write(tmp.path().join("ok"), b"{\"timestamp\":1}").expect("write");
        let n = d.read_agent_file("ok", &mut buf).expect("read");
        assert_eq!(&buf[..n], b"{\"timestamp\":1}");
        std::fs::write(tmp.path().join("empty"), b"").expect("write");
        assert_eq!(d.read_agent_file("empty", &mut buf).expect("read"), 0);
        std::fs::write(tmp.path().join("big"), vec![b'x'; 101]).expect("write");
        assert!(matches!(
            d.read_agent_file("big", &mut buf),
            Err(ReadError::TooLarge { .. })
        ));
        std::fs::write(tmp.path().join("exact"), vec![b'x'; 100]).expect("write");
        assert_eq!(
            d.read_agent_file("exact", &mut buf).expect("at the limit"),
            100
        );
        nix::unistd::mkfifo(&tmp.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkfifo");
        assert!(matches!(
            d.read_agent_file("fifo", &mut buf),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        std::fs::create_dir(tmp.path().join("sub")).expect("mkdir");
        assert!(matches!(
            d.read_agent_file("sub", &mut buf),
            Err(ReadError::NotRegular("a directory"))
        ));
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("t"), b"x").expect("write");
        symlink(outside.path().join("t"), tmp.path().join("link")).expect("symlink");
        assert!(matches!(
            d.read_agent_file("link", &mut buf),
            Err(ReadError::Symlink)
        ));
        assert!(matches!(
            d.read_agent_file("/dev/zero", &mut buf),
            Err(ReadError::OutsideCell)
        ));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let (tmp, d) = dir();
        d.write_atomic("f", b"one", 0o644).expect("write");
        d.write_atomic("f", b"two", 0o644).expect("write");
        assert_eq!(std::fs::read(tmp.path().join("f")).expect("read"), b"two");
        assert_eq!(
            d.entries().expect("entries"),
            vec![("f".to_string(), EntryKind::File)]
        );
    }

    #[test]
    fn atomic_write_replaces_a_symlink_instead_of_writing_through_it() {
        let (tmp, d) = dir();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("target"), b"keep").expect("write");
        symlink(outside.path().join("target"), tmp.path().join("f")).expect("symlink");
        d.write_atomic("f", b"new", 0o644).expect("write");
        assert_eq!(
            std::fs::read(outside.path().join("target")).expect("read"),
            b"keep"
        );
        assert!(!tmp.path().join("f").is_symlink());
    }

    #[test]
    fn create_dirs_refuses_a_symlink_on_the_way() {
        let (tmp, d) = dir();
        let outside = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), tmp.path().join("logs")).expect("symlink");
        assert!(d.create_dirs("logs/deeper").is_err());
        assert!(!outside.path().join("deeper").exists());
        assert!(d.append_line("logs/events.jsonl", b"{}\n").is_err());
        assert!(!outside.path().join("events.jsonl").exists());
    }

    #[test]
    fn remove_tree_removes_links_not_their_targets() {
        let (tmp, d) = dir();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("precious"), b"x").expect("write");
        std::fs::create_dir_all(tmp.path().join("w/deep")).expect("mkdir");
        std::fs::write(tmp.path().join("w/deep/f"), b"x").expect("write");
        symlink(outside.path(), tmp.path().join("w/escape")).expect("symlink");
        d.remove_tree("w").expect("remove");
        assert!(!tmp.path().join("w").exists());
        assert!(outside.path().join("precious").exists());
    }

    #[test]
    fn remove_tree_takes_a_tree_of_any_depth_with_few_descriptors() {
        let (tmp, d) = dir();
        let mut deep = tmp.path().join("w");
        for _ in 0..300 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).expect("mkdir");
        std::fs::write(deep.join("f"), b"x").expect("write");
        // With fewer descriptors than levels, as a hostile agent would
        // arrange it: the old recursion needed one per level.
        d.remove_tree("w").expect("remove");
        assert!(!tmp.path().join("w").exists());
        assert_eq!(
            d.entries().expect("entries"),
            Vec::new(),
            "nothing moved up is left"
        );
        // No descriptor left open below the tree (counted by where they
        // point, not how many: other tests run in this process too).
        // (`d` itself holds the root of the temporary directory.)
        let leaked: Vec<_> = std::fs::read_dir("/proc/self/fd")
            .expect("fds")
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|target| target.starts_with(tmp.path()) && target != tmp.path())
            .collect();
        assert!(leaked.is_empty(), "descriptors leaked: {leaked:?}");
    }

    #[test]
    fn a_held_lock_is_waited_for_only_so_long() {
        let (tmp, d) = dir();
        // flock belongs to an open file description: a second open stands
        // for another process.
        let other = Dir::open(tmp.path()).expect("open");
        let held = other.lock(std::time::Duration::ZERO).expect("free");
        let start = std::time::Instant::now();
        let err = d.lock(std::time::Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        // The message names who holds it (here: this very process).
        assert!(
            err.to_string()
                .contains(&format!("is locked by pid {}", std::process::id())),
            "{err}"
        );
        assert!(start.elapsed() >= std::time::Duration::from_millis(50));
        drop(held);
        d.lock(std::time::Duration::ZERO).expect("free again");
    }

    #[test]
    fn append_writes_whole_lines() {
        let (tmp, d) = dir();
        d.create_dirs("logs").expect("mkdir");
        d.append_line("logs/e.jsonl", b"{\"a\":1}\n")
            .expect("append");
        d.append_line("logs/e.jsonl", b"{\"a\":2}\n")
            .expect("append");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("logs/e.jsonl")).expect("read"),
            "{\"a\":1}\n{\"a\":2}\n"
        );
    }

    #[test]
    fn append_refuses_a_hard_link_to_a_file_outside() {
        let (tmp, d) = dir();
        let outside =
            tempfile::NamedTempFile::new_in(tmp.path().parent().expect("parent")).expect("outside");
        d.create_dirs("logs").expect("mkdir");
        std::fs::hard_link(outside.path(), tmp.path().join("logs/agent.log")).expect("link");
        let err = d
            .append_line("logs/agent.log", b"pwned\n")
            .expect_err("refused");
        assert!(err.to_string().contains("hard links"), "{err}");
        assert_eq!(std::fs::read(outside.path()).expect("read"), b"");
    }
}
