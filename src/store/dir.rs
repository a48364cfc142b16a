//! A directory held open by file descriptor, and every file operation the
//! program performs inside a cell, relative to it.
//!
//! Agents can write into their cell, so any path below a cell may have been
//! replaced by a symlink, a FIFO or a huge file. Resolving every path with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the cell's directory
//! descriptor means no operation here can leave the cell, whatever an agent
//! put there. Kernels without `openat2` (before 5.6) get an equivalent walk,
//! one `O_NOFOLLOW` component at a time.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, OpenHow, ResolveFlag, openat, openat2, renameat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

use super::ReadError;

/// Largest agent-writable file the program reads (a heartbeat).
pub const AGENT_FILE_LIMIT: u64 = 64 * 1024;

/// Levels of a tree [`Dir::remove_tree`] descends before it moves the rest
/// up: each level holds a descriptor (two while listing).
pub const REMOVE_DEPTH: usize = 32;

/// Cleared the first time `openat2` answers `ENOSYS`, so old kernels pay
/// for the probe once.
static HAVE_OPENAT2: AtomicBool = AtomicBool::new(true);

/// An open directory. `path` is kept for messages only: no operation
/// resolves it again after [`Dir::open`].
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens `path` as a directory, refusing a symlink as its last component.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path this directory was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `rel` below this directory (for messages).
    pub fn display(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `rel` (a relative path of plain components) without following
    /// any symlink and without leaving this directory.
    fn open_beneath(&self, rel: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
        check_relative(rel)?;
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        if HAVE_OPENAT2.load(Ordering::Relaxed) {
            let how = OpenHow::new().flags(flags).mode(mode).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
            match openat2(&self.fd, rel, how) {
                Err(Errno::ENOSYS) => HAVE_OPENAT2.store(false, Ordering::Relaxed),
                other => return other,
            }
        }
        self.open_walking(rel, flags, mode)
    }

    /// The pre-5.6 equivalent of `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`.
    fn open_walking(&self, rel: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
        let mut parts = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .peekable();
        let mut current: Option<OwnedFd> = None;
        while let Some(part) = parts.next() {
            let at = current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            if parts.peek().is_none() {
                return openat(at, part, flags, mode);
            }
            let next = openat(
                at,
                part,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            current = Some(next);
        }
        // `rel` named this directory itself.
        nix::unistd::dup(&self.fd)
    }

    /// Opens the directory `rel` below this one.
    pub fn subdir(&self, rel: &str) -> io::Result<Dir> {
        let fd = self
            .open_beneath(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| {
                // O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR: say why.
                let e = match e {
                    Errno::ENOTDIR if self.is_symlink(rel) => Errno::ELOOP,
                    other => other,
                };
                errno_io(e, &self.display(rel))
            })?;
        Ok(Dir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// A second handle on this directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Whether `rel` is itself a symlink (for error messages only).
    fn is_symlink(&self, rel: &str) -> bool {
        nix::sys::stat::fstatat(&self.fd, rel, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
    }

    /// Creates the directories of `rel` that are missing (like `mkdir -p`,
    /// but never through a symlink) and opens the last one.
    pub fn create_dirs(&self, rel: &str) -> io::Result<Dir> {
        check_relative(rel).map_err(|e| errno_io(e, &self.display(rel)))?;
        let mut dir = self.try_clone()?;
        for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
            match mkdirat(&dir.fd, part, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno_io(e, &dir.display(part))),
            }
            dir = dir.subdir(part)?;
        }
        Ok(dir)
    }

    /// Creates the directory `name` (one component, mode 0755) unless it
    /// exists; `true` if it was created now.
    pub fn make_dir(&self, name: &str) -> io::Result<bool> {
        check_relative(name).map_err(|e| errno_io(e, &self.display(name)))?;
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(errno_io(e, &self.display(name))),
        }
    }

    /// Opens an agent-writable path read-only: below this directory, no
    /// symlink on the way, and non-blocking so a FIFO cannot hang us.
    fn open_agent_file(&self, rel: &str) -> Result<OwnedFd, ReadError> {
        self.open_beneath(
            rel,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(ReadError::from_open)
    }

    /// Opens an agent-writable file for reading, safely: no symlink
    /// anywhere below this directory, `O_NONBLOCK` so a FIFO cannot hang
    /// us, regular files only. Returns the file and its size.
    pub fn open_regular(&self, rel: &str) -> Result<(File, u64), ReadError> {
        let fd = self.open_agent_file(rel)?;
        let st = fstat(&fd).map_err(|e| ReadError::Io(e.into()))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFREG {
            return Err(ReadError::NotRegular(file_kind(kind)));
        }
        Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
    }

    /// Reads a whole agent-writable file of at most `limit` bytes (see
    /// [`Dir::open_regular`]).
    pub fn read_file(&self, rel: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let (mut file, size) = self.open_regular(rel)?;
        if size > limit {
            return Err(ReadError::TooLarge { size, limit });
        }
        // Read the size fstat gave, usually in one read(2): this is the
        // daemon's hot path. A file that grows meanwhile is cut at that
        // size (a torn read the parser reports as partial; the writer's
        // close brings another event), never read past the limit.
        let mut buf = vec![0; usize::try_from(size).unwrap_or(0)];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Opens (creating if needed, mode 0644) the regular file `rel` for
    /// reading and writing, without following symlinks.
    pub fn open_rw(&self, rel: &str) -> io::Result<File> {
        let fd = self
            .open_beneath(
                rel,
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
                Mode::from_bits_truncate(0o644),
            )
            .map_err(|e| errno_io(e, &self.display(rel)))?;
        Ok(File::from(fd))
    }

    /// Opens the existing regular file `rel` for reading and writing,
    /// without following symlinks and without creating it.
    pub fn open_existing_rw(&self, rel: &str) -> io::Result<File> {
        let fd = self
            .open_beneath(
                rel,
                OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
                Mode::empty(),
            )
            .map_err(|e| errno_io(e, &self.display(rel)))?;
        Ok(File::from(fd))
    }

    /// A new file under a temp name nobody can guess or have made before
    /// (`O_EXCL`, no symlink followed) for `name`, opened with `access`.
    fn create_temp(&self, name: &str, mode: u32, access: OFlag) -> io::Result<(String, File)> {
        let tmp = format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let fd = openat(
            &self.fd,
            tmp.as_str(),
            access | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| errno_io(e, &self.display(&tmp)))?;
        Ok((tmp, File::from(fd)))
    }

    /// Puts a new, empty file of `mode` at `name` (a single component),
    /// replacing whatever is there — a file, a symlink — by rename, and
    /// returns it open for reading and writing. The file never existed
    /// under `name` with any other mode.
    pub fn create_replacing(&self, name: &str, mode: u32) -> io::Result<File> {
        let (tmp, file) = self.create_temp(name, mode, OFlag::O_RDWR)?;
        let placed = nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode))
            .and_then(|()| renameat(&self.fd, tmp.as_str(), &self.fd, name));
        if let Err(e) = placed {
            let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(errno_io(e, &self.display(name)));
        }
        Ok(file)
    }

    /// Reads an agent-writable file into `buf`, returning how many bytes
    /// it holds, safely and in as few system calls as possible — this is
    /// the daemon's hot path: `openat2` (no symlinks, nothing outside this
    /// directory, no blocking on a FIFO), one `read` of at most `buf.len()`
    /// bytes, `close`. The file may hold at most `buf.len() - 1` bytes: a
    /// read that fills the buffer is refused as too large (so is a device
    /// that reads forever). A regular file's short read is its end; the
    /// kind of file is checked with `fstat` only when the read comes back
    /// empty or fails, so a FIFO, directory or device is still refused with
    /// its kind named. `buf` is reused as is: it is never cleared.
    pub fn read_agent_file(&self, rel: &str, buf: &mut [u8]) -> Result<usize, ReadError> {
        let limit = buf.len().saturating_sub(1);
        let fd = self.open_agent_file(rel)?;
        let n = loop {
            match nix::unistd::read(&fd, buf) {
                Err(Errno::EINTR) => {}
                other => break other,
            }
        };
        let n = match n {
            Ok(n) if n > 0 => n,
            // Empty, or unreadable: say what kind of file it is.
            result => {
                let st = fstat(&fd).map_err(|e| ReadError::Io(e.into()))?;
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                if kind != SFlag::S_IFREG {
                    return Err(ReadError::NotRegular(file_kind(kind)));
                }
                result.map_err(|e| ReadError::Io(e.into()))?
            }
        };
        if n > limit {
            return Err(ReadError::TooLarge {
                size: u64::try_from(n).unwrap_or(u64::MAX),
                limit: limit as u64,
            });
        }
        Ok(n)
    }

    /// Replaces the file `name` (a single component) with `data` atomically:
    /// temp file in this directory, fsync, rename over `name`, fsync of the
    /// directory. A crash at any point leaves either the old or the new
    /// file, never a torn one.
    pub fn write_atomic(&self, name: &str, data: &[u8], mode: u32) -> io::Result<()> {
        self.write_atomic_owned(name, data, mode, None)
    }

    /// [`Dir::write_atomic`], handing the file to `owner` (uid, gid). The
    /// owner and mode are set on the temp file's descriptor before the
    /// rename, never by reopening `name`: an agent that owns this
    /// directory could swap that name for a hard link to any file between
    /// the rename and a reopen.
    pub fn write_atomic_owned(
        &self,
        name: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    ) -> io::Result<()> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a file name"),
            ));
        }
        let (tmp, mut file) = self.create_temp(name, mode, OFlag::O_WRONLY)?;
        let result = (|| {
            if let Some((uid, gid)) = owner {
                nix::unistd::fchown(&file, Some(uid), Some(gid)).map_err(io::Error::from)?;
                // chown clears set-id bits; the mode is set again after it.
                nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode))
                    .map_err(io::Error::from)?;
            }
            file.write_all(data)?;
            file.sync_all()?;
            drop(file);
            renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(io::Error::from)?;
            fsync(&self.fd).map_err(io::Error::from)
        })();
        if result.is_err() {
            let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.display(name).display())))
    }

    /// Appends one line to `rel` (created if missing) with a single
    /// `O_APPEND` write, so concurrent writers never interleave and readers
    /// never see half a line from a write that succeeded.
    pub fn append_line(&self, rel: &str, line: &[u8]) -> io::Result<()> {
        write_line(&self.open_append(rel)?, line, &self.display(rel))
    }

    /// Opens the regular file `rel` (created if missing, mode 0644) for
    /// appending only, without following symlinks: the descriptor agents'
    /// output goes to, and event lines are written through. A file with
    /// more than one link is refused: it may be a hard link an agent made
    /// to a file outside the cell, which a daemon running as root must not
    /// write to.
    pub fn open_append(&self, rel: &str) -> io::Result<File> {
        let fd = self
            .open_beneath(
                rel,
                OFlag::O_WRONLY
                    | OFlag::O_APPEND
                    | OFlag::O_CREAT
                    | OFlag::O_NOCTTY
                    | OFlag::O_NONBLOCK,
                Mode::from_bits_truncate(0o644),
            )
            .map_err(|e| errno_io(e, &self.display(rel)))?;
        let st = fstat(&fd).map_err(io::Error::from)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(io::Error::other(format!(
                "{}: not a regular file",
                self.display(rel).display()
            )));
        }
        if st.st_nlink > 1 {
            return Err(io::Error::other(format!(
                "{}: has {} hard links (maybe to a file outside the cell), refused",
                self.display(rel).display(),
                st.st_nlink
            )));
        }
        Ok(File::from(fd))
    }

    /// Takes an exclusive `flock` on this directory, waiting at most
    /// `patience` for it. The lock is released when the guard drops.
    /// Locking the directory itself (not a file in it) survives `cell.json`
    /// being replaced by rename and needs no extra file in the cell.
    ///
    /// The wait is bounded because anyone who can open the directory (an
    /// agent in its cell) can take the lock and keep it: that must cost a
    /// clear error, never a hung daemon or CLI.
    pub fn lock(&self, patience: std::time::Duration) -> io::Result<DirLock> {
        let start = std::time::Instant::now();
        let mut fd = self.fd.try_clone()?;
        loop {
            match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(DirLock(lock)),
                Err((back, Errno::EWOULDBLOCK)) if start.elapsed() < patience => {
                    fd = back;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    let holder = fstat(&self.fd)
                        .ok()
                        .and_then(|st| super::flock_holder(st.st_dev, st.st_ino))
                        .map_or_else(|| "another process".into(), super::describe_process);
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "{} is locked by {holder} (waited {:.1} s)",
                            self.path.display(),
                            patience.as_secs_f64()
                        ),
                    ));
                }
                Err((_, e)) => return Err(errno_io(e, &self.path)),
            }
        }
    }

    /// Lists the entries of this directory with their kind as `readdir`
    /// reports it (no extra `stat`).
    pub fn entries(&self) -> io::Result<Vec<(String, EntryKind)>> {
        Ok(self
            .read_names()?
            .into_iter()
            .map(|(name, kind)| {
                let kind = match kind {
                    Some(nix::dir::Type::Directory) => EntryKind::Dir,
                    Some(nix::dir::Type::File) => EntryKind::File,
                    Some(nix::dir::Type::Symlink) => EntryKind::Symlink,
                    Some(_) => EntryKind::Other,
                    None => EntryKind::Unknown,
                };
                (name.to_string_lossy().into_owned(), kind)
            })
            .collect())
    }

    /// The names in this directory as the kernel has them (bytes, not
    /// necessarily UTF-8), with their `d_type`.
    fn read_names(&self) -> io::Result<Vec<(std::ffi::OsString, Option<nix::dir::Type>)>> {
        use std::os::unix::ffi::OsStringExt;
        // A fresh open, not a dup: a dup would share (and consume) the offset.
        let fd = self
            .open_beneath(".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| errno_io(e, &self.path))?;
        let dir = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(io::Error::from)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push((
                    std::ffi::OsString::from_vec(name.to_vec()),
                    entry.file_type(),
                ));
            }
        }
        Ok(out)
    }

    /// What `name` (one component) is, without following a symlink:
    /// `None` if there is nothing by that name. Any other failure (out of
    /// descriptors, say) is an error, never taken for "gone".
    pub fn entry_kind(&self, name: &str) -> io::Result<Option<EntryKind>> {
        match nix::sys::stat::fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(
                match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                    SFlag::S_IFDIR => EntryKind::Dir,
                    SFlag::S_IFREG => EntryKind::File,
                    SFlag::S_IFLNK => EntryKind::Symlink,
                    _ => EntryKind::Other,
                },
            )),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(errno_io(e, &self.display(name))),
        }
    }

    /// Whether `rel` exists below this directory, reached without symlinks.
    pub fn exists_beneath(&self, rel: &str) -> bool {
        self.open_beneath(rel, OFlag::O_PATH, Mode::empty()).is_ok()
    }

    /// Removes `name` (a single component) and, if it is a directory,
    /// everything below it, never following a symlink: a symlink is
    /// removed, not its target. Files that appear while it works (the
    /// daemon or an agent still writing) are removed too: a directory
    /// found not empty is emptied again, a bounded number of times. A tree
    /// of any depth is removed with a bounded number of descriptors:
    /// below [`REMOVE_DEPTH`] levels, a directory is first moved up into
    /// this one (under a dot-name) and removed from there.
    pub fn remove_tree(&self, name: &str) -> io::Result<()> {
        let mut queue = vec![std::ffi::OsString::from(name)];
        while let Some(next) = queue.pop() {
            self.remove_below(&next, self, 0, &mut queue)?;
        }
        Ok(())
    }

    /// One step of [`Dir::remove_tree`]: `name` of this directory, at
    /// `depth` below `top`; subtrees too deep go to `queue`, moved into
    /// `top`.
    fn remove_below(
        &self,
        name: &std::ffi::OsStr,
        top: &Dir,
        depth: usize,
        queue: &mut Vec<std::ffi::OsString>,
    ) -> io::Result<()> {
        const ROUNDS: usize = 100;
        let st =
            match nix::sys::stat::fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            {
                Ok(st) => st,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(errno_io(e, &self.path.join(name))),
            };
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(errno_io(e, &self.path.join(name))),
            };
        }
        if depth >= REMOVE_DEPTH {
            // Moved up: the descriptors of the levels above are let go.
            let moved = format!(".lazarus-removing-{}", uuid::Uuid::new_v4().simple());
            return match renameat(&self.fd, name, &top.fd, moved.as_str()) {
                Ok(()) => {
                    queue.push(moved.into());
                    Ok(())
                }
                Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(errno_io(e, &self.path.join(name))),
            };
        }
        let child = match openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Dir {
                fd,
                path: self.path.join(name),
            },
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(errno_io(e, &self.path.join(name))),
        };
        for _ in 0..ROUNDS {
            for (entry, _) in child.read_names()? {
                child.remove_below(&entry, top, depth + 1, queue)?;
            }
            match unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => return Ok(()),
                Err(Errno::ENOTEMPTY) => continue,
                Err(e) => return Err(errno_io(e, &self.path.join(name))),
            }
        }
        Err(io::Error::other(format!(
            "{}: still not empty after {ROUNDS} rounds: something keeps writing into it",
            self.path.join(name).display()
        )))
    }

    /// `fsync` of this directory: renames and unlinks in it are durable.
    pub fn sync(&self) -> io::Result<()> {
        fsync(&self.fd).map_err(|e| errno_io(e, &self.path))
    }

    /// `lstat` of the plain name `name` of this directory (a symlink is
    /// described, never followed).
    pub fn stat_nofollow(&self, name: &str) -> io::Result<nix::sys::stat::FileStat> {
        nix::sys::stat::fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| errno_io(e, &self.display(name)))
    }

    /// Renames `from` to `to` (single components of this directory).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        renameat(&self.fd, from, &self.fd, to).map_err(|e| errno_io(e, &self.display(from)))
    }

    /// Removes the file `name` of this directory (a plain name, not a
    /// path); a missing file is not an error.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        if name.contains('/') || name == ".." || name == "." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?}: not a plain file name"),
            ));
        }
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno_io(e, &self.display(name))),
        }
    }
}

/// Writes one whole line (newline included) to a file opened `O_APPEND`,
/// with a single `write(2)`: concurrent writers never interleave, and a
/// short write is an error, never a line finished by a second write.
pub fn write_line(file: &File, line: &[u8], path: &Path) -> io::Result<()> {
    debug_assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
    let written = (&*file).write(line)?;
    if written != line.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "{}: short append ({written} of {} bytes)",
                path.display(),
                line.len()
            ),
        ));
    }
    Ok(())
}

/// An entry's kind, from `readdir`'s `d_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    Other,
    /// The filesystem does not report types; `stat` to know.
    Unknown,
}

/// Guard of [`Dir::lock`].
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] Flock<OwnedFd>);

/// Refuses absolute paths and `..` before the kernel sees them, so the
/// fallback walk has the same guarantees as `RESOLVE_BENEATH`.
fn check_relative(rel: &str) -> Result<(), Errno> {
    if rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
        return Err(Errno::EXDEV);
    }
    Ok(())
}

fn file_kind(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFLNK => "a symlink",
        _ => "not a regular file",
    }
}

/// An errno turned into an `io::Error` whose message names the path.
fn errno_io(e: Errno, path: &Path) -> io::Error {
    let what = match e {
        Errno::ELOOP => "is or passes through a symlink, refused".to_string(),
        Errno::EXDEV => "lies outside the cell, refused".to_string(),
        other => io::Error::from(other).to_string(),
    };
    io::Error::new(
        io::Error::from(e).kind(),
        format!("{}: {what}", path.display()),
    )
}
