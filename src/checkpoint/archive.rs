//! Writing a checkpoint: a walk of the cell by descriptor, then the
//! archive, into an unnamed file linked into place once whole.
//!
//! Two passes over a cell that is frozen for the moment: the first walks
//! and hashes (the manifest must come first in the archive, and it holds
//! the digest of everything), the second writes, reopening each file below
//! the cell without following a symlink and checking it is the same file
//! with the same content. A file that changed in between fails the
//! checkpoint rather than giving an archive that disagrees with its
//! manifest (`cell.json` and `state.json`, which the daemon and the CLI
//! rewrite meanwhile, are read once).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use sha2::{Digest, Sha256};

use super::{DIR, FORMAT, Kind, MANIFEST_NAME, Manifest, SUFFIX, content_line, hex, shown};
use crate::store::Dir;

/// What the archive holds of the cell: (path, is a directory tree).
const CONTENTS: &[(&str, bool)] = &[
    ("workspace", true),
    ("bus", true),
    ("cell.json", false),
    (".lazarus/state.json", false),
];

/// A checkpoint written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Created {
    /// `checkpoints/<name>`, relative to the cell.
    pub path: String,
    pub name: String,
    /// Size of the archive.
    pub bytes: u64,
    pub manifest: Manifest,
    pub took_ms: u64,
    /// Older checkpoints removed by retention.
    pub pruned: Vec<String>,
}

/// One entry found by the walk.
struct Entry {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    size: u64,
    mtime: i64,
    uid: u32,
    gid: u32,
    ino: (u64, u64),
    /// Symlink: its target; hard link: the path stored first.
    target: Vec<u8>,
    digest: String,
    /// The content as read by the walk (`cell.json`, `state.json`).
    kept: Option<Vec<u8>>,
}

/// Options of one checkpoint.
#[derive(Debug, Clone)]
pub struct Options {
    pub cell_id: String,
    /// Why it is taken (`manual`, `interval`, `archive`), for the manifest.
    pub reason: String,
    /// Keep at most this many (0: all).
    pub keep: usize,
    /// Who owns what is written (root writing into a user's cell).
    pub owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
}

/// Writes a checkpoint of `cell` (the caller has frozen its agents).
pub fn create(cell: &Dir, opts: &Options) -> io::Result<Created> {
    let started = Instant::now();
    let now = chrono::Utc::now();
    let cell_dev = fstat(cell.as_fd()).map_err(io::Error::from)?.st_dev;
    let mut walk = Walk {
        apparent: 0,
        path_bytes: 0,
        more_notes: 0,
        owner: opts.owner.map(|(uid, gid)| (uid.as_raw(), gid.as_raw())),
        dev: cell_dev,
        entries: Vec::new(),
        notes: Vec::new(),
        seen: std::collections::HashMap::new(),
    };
    for (rel, tree) in CONTENTS {
        walk.top(cell, rel, *tree)?;
    }
    let manifest = walk.manifest(opts, now);
    let dir = crate::daemon::owned_dir(cell, DIR)?;
    // The content must fit where the archive goes (incompressible, the
    // archive is as large; a huge sparse file is refused, not read for
    // hours).
    let space = nix::sys::statvfs::fstatvfs(dir.as_fd()).map_err(io::Error::from)?;
    let free = space
        .blocks_available()
        .saturating_mul(space.fragment_size());
    if walk.apparent > free {
        return Err(io::Error::other(format!(
            "its files hold {} bytes and {} has {free} free",
            walk.apparent,
            dir.path().display()
        )));
    }
    remove_stale_temps(&dir);
    let stamp = super::stamp(now);
    let (name, bytes) = match anonymous_file(&dir, opts.owner)? {
        // No name until it is whole: nothing to swap, nothing left behind.
        Some(file) => {
            let (file, bytes) = write(cell, &walk.entries, &manifest, file)?;
            (link_anonymous(&dir, &file, &stamp)?, bytes)
        }
        None => {
            let (tmp, file) = new_file(&dir, opts.owner)?;
            let placed = write(cell, &walk.entries, &manifest, file)
                .and_then(|(_, bytes)| Ok((place(&dir, &tmp, &stamp)?, bytes)));
            match placed {
                Ok(placed) => placed,
                Err(e) => {
                    let _ = unlinkat(dir.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
                    return Err(e);
                }
            }
        }
    };
    let pruned = super::prune(cell, opts.keep, &name)?;
    Ok(Created {
        path: format!("{DIR}/{name}"),
        name,
        bytes,
        manifest,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        pruned,
    })
}

struct Walk {
    /// Bytes of the files' content (a sparse file's holes included: they
    /// are read, and written compressed).
    apparent: u64,
    /// Bytes of all paths so far.
    path_bytes: usize,
    /// Notes made, kept or not.
    more_notes: usize,
    /// The cell owner's uid and gid, when the walk runs as root.
    owner: Option<(u32, u32)>,
    dev: u64,
    entries: Vec<Entry>,
    notes: Vec<String>,
    /// Files with more than one link, by (dev, ino): the path stored first.
    seen: std::collections::HashMap<(u64, u64), Vec<u8>>,
}

impl Walk {
    /// One of [`CONTENTS`]: absent is fine, a symlink or the wrong kind is
    /// noted and left out.
    fn top(&mut self, cell: &Dir, rel: &str, tree: bool) -> io::Result<()> {
        let (parent_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let parent = if parent_rel.is_empty() {
            cell.try_clone()?
        } else {
            match cell.subdir(parent_rel) {
                Ok(dir) => dir,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    self.notes.push(format!("{rel}: left out: {e}"));
                    return Ok(());
                }
            }
        };
        let parent_fd: OwnedFd = parent.as_fd().try_clone_to_owned()?;
        let prefix = if parent_rel.is_empty() {
            Vec::new()
        } else {
            format!("{parent_rel}/").into_bytes()
        };
        let st = match fstatat(&parent_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(io::Error::other(format!("{rel}: {e}"))),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let wanted = if tree { SFlag::S_IFDIR } else { SFlag::S_IFREG };
        if kind != wanted {
            self.notes
                .push(format!("{rel}: left out: {}", kind_name(kind)));
            return Ok(());
        }
        self.entry(&parent_fd, &prefix, OsStr::new(name), &st, 0)
    }

    /// Adds `name` of the directory `dir` (whose archive path is
    /// `prefix`), and everything below it if it is a directory.
    fn entry(
        &mut self,
        dir: &OwnedFd,
        prefix: &[u8],
        name: &OsStr,
        st: &FileStat,
        depth: usize,
    ) -> io::Result<()> {
        let mut path = prefix.to_vec();
        path.extend_from_slice(name.as_bytes());
        // What a restore takes (it refuses longer or deeper paths).
        if path.len() > 4096 || path.iter().filter(|b| **b == b'/').count() >= 256 {
            self.note(format!(
                "{}: left out: longer than 4096 bytes or deeper than 256 levels",
                shown(&path)
            ));
            return Ok(());
        }
        self.path_bytes += path.len();
        if self.path_bytes > super::MAX_PATH_BYTES {
            return Err(io::Error::other(format!(
                "its paths add up to more than {} MiB: too many for a checkpoint",
                super::MAX_PATH_BYTES >> 20
            )));
        }
        if self.entries.len() >= super::MAX_ENTRIES {
            return Err(io::Error::other(format!(
                "more than {} entries to store (at {}): too many for a checkpoint",
                super::MAX_ENTRIES,
                shown(&path)
            )));
        }
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let mut mode = st.st_mode & 0o7777;
        if mode & 0o6000 != 0 {
            self.note(format!("{}: set-uid/set-gid bits dropped", shown(&path)));
            mode &= !0o6000;
        }
        if st.st_dev != self.dev {
            self.note(format!(
                "{}: left out: another filesystem is mounted there",
                shown(&path)
            ));
            return Ok(());
        }
        // Root reads nothing into the owner's archive that the owner could
        // not read itself (a root-only file an operator left, or one an
        // agent hard-linked where fs.protected_hardlinks is off).
        if matches!(kind, SFlag::S_IFDIR | SFlag::S_IFREG) && !self.owner_may_read(st) {
            self.note(format!(
                "{}: left out: its owner's user cannot read it (uid {}, mode {:o})",
                shown(&path),
                st.st_uid,
                st.st_mode & 0o7777
            ));
            return Ok(());
        }
        let mut entry = Entry {
            path,
            kind: Kind::File,
            mode,
            size: 0,
            mtime: st.st_mtime,
            uid: st.st_uid,
            gid: st.st_gid,
            ino: (st.st_dev, st.st_ino),
            target: Vec::new(),
            digest: "-".into(),
            kept: None,
        };
        match kind {
            SFlag::S_IFDIR => {
                let fd = open_child(dir, name, OFlag::O_DIRECTORY)?;
                same_file(&fd, st, &entry.path)?;
                entry.kind = Kind::Dir;
                let mut prefix = entry.path.clone();
                prefix.push(b'/');
                self.entries.push(entry);
                let mut names = list(&fd)?;
                names.sort();
                for child in names {
                    let cst = match fstatat(&fd, child.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) => st,
                        Err(Errno::ENOENT) => continue,
                        Err(e) => return Err(io::Error::from(e)),
                    };
                    self.entry(&fd, &prefix, &child, &cst, depth + 1)?;
                }
            }
            SFlag::S_IFREG => {
                // `cell.json` and `state.json` are always stored whole: an
                // agent linking one into its workspace must not turn it
                // into a link entry (restore takes only files there).
                if st.st_nlink > 1 && depth > 0 {
                    if let Some(first) = self.seen.get(&entry.ino) {
                        entry.kind = Kind::HardLink;
                        entry.target = first.clone();
                        entry.digest = hex(&Sha256::digest(&entry.target));
                        self.entries.push(entry);
                        return Ok(());
                    }
                    self.seen.insert(entry.ino, entry.path.clone());
                }
                let fd = open_child(dir, name, OFlag::empty())?;
                same_file(&fd, st, &entry.path)?;
                self.apparent = self
                    .apparent
                    .saturating_add(u64::try_from(st.st_size).unwrap_or(0));
                if depth == 0 {
                    // `cell.json`, `state.json`: small, and rewritten by
                    // the daemon and the CLI while the agents are frozen;
                    // kept as read now, not read again.
                    let mut bytes = Vec::new();
                    File::from(fd)
                        .take(super::MANIFEST_LIMIT + 1)
                        .read_to_end(&mut bytes)?;
                    if bytes.len() as u64 > super::MANIFEST_LIMIT {
                        self.note(format!("{}: left out: too large", shown(&entry.path)));
                        return Ok(());
                    }
                    entry.size = bytes.len() as u64;
                    entry.digest = hex(&Sha256::digest(&bytes));
                    entry.kept = Some(bytes);
                } else {
                    let (size, digest) = hash_file(File::from(fd))?;
                    entry.size = size;
                    entry.digest = digest;
                }
                self.entries.push(entry);
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(dir, name).map_err(io::Error::from)?;
                entry.kind = Kind::Symlink;
                entry.mode = 0o777;
                entry.target = target.into_vec();
                entry.digest = hex(&Sha256::digest(&entry.target));
                self.entries.push(entry);
            }
            other => self.note(format!(
                "{}: left out: {}",
                shown(&entry.path),
                kind_name(other)
            )),
        }
        Ok(())
    }

    /// A note for the manifest; past [`super::MAX_NOTES`], only counted.
    fn note(&mut self, note: String) {
        if self.notes.len() < super::MAX_NOTES {
            self.notes.push(note);
        }
        self.more_notes += 1;
    }

    /// Whether the cell's owner could read this file or list this
    /// directory itself (always, when the walk does not run as root for
    /// another user). Its primary group stands for its groups.
    fn owner_may_read(&self, st: &FileStat) -> bool {
        let Some((uid, gid)) = self.owner else {
            return true;
        };
        let dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        let need = |r: u32, x: u32| st.st_mode & r != 0 && (!dir || st.st_mode & x != 0);
        if st.st_uid == uid {
            need(0o400, 0o100)
        } else if st.st_gid == gid {
            need(0o040, 0o010)
        } else {
            need(0o004, 0o001)
        }
    }

    fn manifest(&self, opts: &Options, now: chrono::DateTime<chrono::Utc>) -> Manifest {
        let count = |k: Kind| self.entries.iter().filter(|e| e.kind == k).count() as u64;
        let lines = self
            .entries
            .iter()
            .map(|e| (e.path.clone(), line_of(e)))
            .collect();
        Manifest {
            format: FORMAT.into(),
            cell: opts.cell_id.clone(),
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            reason: opts.reason.clone(),
            files: count(Kind::File),
            dirs: count(Kind::Dir),
            symlinks: count(Kind::Symlink),
            bytes: self.entries.iter().map(|e| e.size).sum(),
            sha256: super::list_digest(lines),
            notes: {
                let mut notes = self.notes.clone();
                let more = self.more_notes.saturating_sub(self.notes.len());
                if more > 0 {
                    notes.push(format!("… and {more} more left out or changed"));
                }
                notes
            },
        }
    }
}

fn line_of(e: &Entry) -> Vec<u8> {
    content_line(e.kind, e.mode, e.size, &e.digest, &e.path)
}

/// Opens `name` of `dir` without following a symlink, non-blocking (a
/// FIFO swapped in cannot hang the walk).
fn open_child(dir: &OwnedFd, name: &OsStr, extra: OFlag) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | extra,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// The opened file is the one `stat` saw (not one swapped in between).
fn same_file(fd: &OwnedFd, st: &FileStat, path: &[u8]) -> io::Result<()> {
    let now = fstat(fd).map_err(io::Error::from)?;
    if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
        return Err(io::Error::other(format!(
            "{}: replaced while the checkpoint was taken",
            shown(path)
        )));
    }
    Ok(())
}

fn list(fd: &OwnedFd) -> io::Result<Vec<OsString>> {
    let fresh = openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let dir = nix::dir::Dir::from_fd(fresh).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    Ok(names)
}

fn hash_file(mut file: File) -> io::Result<(u64, String)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hash.finalize())))
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFLNK => "a symlink (never followed)",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "not a file",
    }
}

/// How long a temp file must have gone unwritten before it counts as left
/// by a checkpoint that was cut short (one being written is touched all
/// the time).
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the temp files of a cell's checkpoints under way, which the
/// process abandons (a daemon stopping).
pub fn remove_temps(cell: &Dir) {
    if let Ok(dir) = cell.subdir(DIR) {
        remove_temps_older(&dir, std::time::Duration::ZERO);
    }
}

/// Removes the temp files of checkpoints that were cut short (a daemon
/// stopped, a crash).
fn remove_stale_temps(dir: &Dir) {
    remove_temps_older(dir, STALE_TEMP);
}

fn remove_temps_older(dir: &Dir, limit: std::time::Duration) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for (name, _) in entries {
        if !(name.starts_with(".tmp-") && name.ends_with(SUFFIX)) {
            continue;
        }
        let old = fstatat(dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .and_then(|st| {
                let mtime = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(st.st_mtime).ok()?);
                std::time::SystemTime::now().duration_since(mtime).ok()
            })
            .is_some_and(|age| age >= limit);
        if old {
            let _ = dir.remove_file(&name);
        }
    }
}

/// An unnamed file in `checkpoints/` (`O_TMPFILE`) for the archive, or
/// `None` where the filesystem has none.
fn anonymous_file(
    dir: &Dir,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> io::Result<Option<File>> {
    let fd = match openat(
        dir.as_fd(),
        ".",
        OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => fd,
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("{}: {e}", dir.path().display()))),
    };
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(&fd, Some(uid), Some(gid)).map_err(io::Error::from)?;
    }
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o640)).map_err(io::Error::from)?;
    Ok(Some(File::from(fd)))
}

/// Gives the finished unnamed file its name (`linkat` never replaces).
fn link_anonymous(dir: &Dir, file: &File, stamp: &str) -> io::Result<String> {
    use std::os::fd::AsRawFd;
    let source = format!("/proc/self/fd/{}", file.as_raw_fd());
    first_free_name(dir, stamp, |name| {
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            source.as_str(),
            dir.as_fd(),
            name,
            AtFlags::AT_SYMLINK_FOLLOW,
        )
    })
}

/// Puts the archive at `<stamp>.tar.gz`, or `<stamp>-N` if a checkpoint
/// of that millisecond exists: `put` must fail with `EEXIST` rather than
/// replace a file.
fn first_free_name(
    dir: &Dir,
    stamp: &str,
    put: impl Fn(&str) -> nix::Result<()>,
) -> io::Result<String> {
    for n in 0..1000 {
        let name = if n == 0 {
            format!("{stamp}{SUFFIX}")
        } else {
            format!("{stamp}-{n}{SUFFIX}")
        };
        match put(&name) {
            Ok(()) => return Ok(name),
            Err(Errno::EEXIST) => continue,
            Err(e) => {
                return Err(io::Error::other(format!(
                    "{}: {e}",
                    dir.display(&name).display()
                )));
            }
        }
    }
    Err(io::Error::other(format!(
        "{}: a thousand checkpoints of the same millisecond",
        dir.path().display()
    )))
}

/// Opens a temp file in `checkpoints/` for the archive (where the
/// filesystem has no `O_TMPFILE`).
fn new_file(
    dir: &Dir,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> io::Result<(String, File)> {
    let tmp = format!(".tmp-{}{SUFFIX}", uuid::Uuid::new_v4().simple());
    let fd = openat(
        dir.as_fd(),
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| io::Error::other(format!("{}: {e}", dir.display(&tmp).display())))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(&fd, Some(uid), Some(gid)).map_err(io::Error::from)?;
    }
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o640)).map_err(io::Error::from)?;
    Ok((tmp, File::from(fd)))
}

/// Renames the finished temp file into place, never over another file.
fn place(dir: &Dir, tmp: &str, stamp: &str) -> io::Result<String> {
    first_free_name(dir, stamp, |name| {
        nix::fcntl::renameat2(
            dir.as_fd(),
            tmp,
            dir.as_fd(),
            name,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
    })
}

/// Writes the archive; returns its size.
fn write(
    cell: &Dir,
    entries: &[Entry],
    manifest: &Manifest,
    file: File,
) -> io::Result<(File, u64)> {
    let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let json = crate::json::document(
        &serde_json::to_value(manifest).map_err(|e| io::Error::other(e.to_string()))?,
    );
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(json.len() as u64);
    header.set_mtime(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0));
    tar.append_data(&mut header, MANIFEST_NAME, json.as_slice())?;
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(e.mode);
        header.set_mtime(u64::try_from(e.mtime).unwrap_or(0));
        header.set_uid(u64::from(e.uid));
        header.set_gid(u64::from(e.gid));
        let path = OsStr::from_bytes(&e.path);
        match e.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, path, io::empty())?;
            }
            Kind::File if e.kept.is_some() => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(e.size);
                let bytes = e.kept.as_deref().unwrap_or_default();
                tar.append_data(&mut header, path, bytes)?;
            }
            Kind::File => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(e.size);
                let rel = std::str::from_utf8(&e.path).ok();
                let file = reopen(cell, &e.path, rel)?;
                let st = fstat(file.as_fd()).map_err(io::Error::from)?;
                if (st.st_dev, st.st_ino) != e.ino || u64::try_from(st.st_size).ok() != Some(e.size)
                {
                    return Err(changed(&e.path));
                }
                let mut check = Checked {
                    inner: file.take(e.size),
                    hash: Sha256::new(),
                    read: 0,
                };
                tar.append_data(&mut header, path, &mut check)?;
                if check.read != e.size || hex(&check.hash.finalize()) != e.digest {
                    return Err(changed(&e.path));
                }
            }
            Kind::Symlink | Kind::HardLink => {
                header.set_entry_type(if e.kind == Kind::Symlink {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                header.set_size(0);
                if e.target.len() < 100 && !e.target.contains(&0) {
                    // As written, byte for byte (append_link would
                    // normalise "./x" and "a//b").
                    header.set_link_name_literal(&e.target)?;
                    tar.append_data(&mut header, path, io::empty())?;
                } else {
                    tar.append_link(&mut header, path, OsStr::from_bytes(&e.target))?;
                }
            }
        }
    }
    let gz = tar.into_inner()?;
    let buffered = gz.finish()?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// Opens a file the walk found, again below the cell with no symlink on
/// the way (non-UTF-8 paths walk one component at a time).
fn reopen(cell: &Dir, path: &[u8], rel: Option<&str>) -> io::Result<File> {
    if let Some(rel) = rel {
        return cell
            .open_regular(rel)
            .map(|(f, _)| f)
            .map_err(|e| io::Error::other(format!("{}: {e}", shown(path))));
    }
    let mut fd: OwnedFd = cell.as_fd().try_clone_to_owned()?;
    let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        fd = open_child(
            &fd,
            OsStr::from_bytes(part),
            if last {
                OFlag::empty()
            } else {
                OFlag::O_DIRECTORY
            },
        )?;
    }
    Ok(File::from(fd))
}

fn changed(path: &[u8]) -> io::Error {
    io::Error::other(format!(
        "{}: changed while the checkpoint was taken (is something outside the agents' \
         processes writing into the cell?)",
        shown(path)
    ))
}

/// A reader that hashes what passes through it.
struct Checked<R> {
    inner: R,
    hash: Sha256,
    read: u64,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Where `O_TMPFILE` is missing: a temp file, renamed without ever
    /// replacing a checkpoint of the same millisecond.
    #[test]
    fn the_fallback_names_never_replace_one_another() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = Dir::open(tmp.path()).expect("dir");
        let mut names = Vec::new();
        for body in [b"first".as_slice(), b"second"] {
            let (temp, mut file) = new_file(&dir, None).expect("temp");
            file.write_all(body).expect("write");
            names.push(place(&dir, &temp, "20260101T000000.000Z").expect("place"));
        }
        assert_eq!(
            names,
            [
                "20260101T000000.000Z.tar.gz",
                "20260101T000000.000Z-1.tar.gz"
            ]
        );
        assert_eq!(
            std::fs::read(tmp.path().join(&names[0])).expect("read"),
            b"first"
        );
        // And the unnamed file, linked the same way.
        let file = anonymous_file(&dir, None)
            .expect("open")
            .expect("O_TMPFILE");
        let name = link_anonymous(&dir, &file, "20260101T000000.000Z").expect("link");
        assert_eq!(name, "20260101T000000.000Z-2.tar.gz");
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(left.is_empty());
    }
}
