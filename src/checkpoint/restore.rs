//! Restoring a checkpoint: check the whole archive, extract it into a
//! fresh directory of the cell, swap `workspace/` and `bus/` in.
//!
//! The archive lies in the cell, where its agents may have written it, so
//! it is read as hostile. The first pass reads every entry and refuses the
//! archive — before anything is written — if one is absolute, has a `..`
//! or an empty component, lies outside `workspace/`, `bus/` and the files
//! a checkpoint holds, would pass through a symlink the archive made (a
//! symlink entry, then a file "through" it), is a hard link to something
//! that is not a file stored before it, is a device, FIFO or any other
//! kind, carries a set-uid or set-gid bit, appears twice, or if the
//! digest of the content list differs from the manifest's (a truncated,
//! corrupted or altered archive). The second pass extracts into
//! `.lazarus-restore-<random>/` (mode 0700, so nothing else can enter it
//! meanwhile), every entry created relative to its parent's descriptor,
//! exclusively, never through a symlink, owned by the cell's owner, with
//! the mode and content the first pass checked (an archive rewritten
//! between the passes fails the restore). Only then are `workspace/` and
//! `bus/` exchanged with the new ones (`renameat2(RENAME_EXCHANGE)`: the
//! replaced ones are kept until both swaps are done, and a failed second
//! swap undoes the first).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, UtimensatFlags, futimens, mkdirat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use sha2::{Digest, Sha256};

use super::{FORMAT, Kind, MANIFEST_NAME, Manifest, content_line, hex, shown};
use crate::store::Dir;

/// The trees a restore puts back.
pub const RESTORED: &[&str] = &["workspace", "bus"];
/// Files an archive holds for the record, not restored.
const KEPT_ONLY: &[&str] = &["cell.json", ".lazarus/state.json"];
/// The extraction directory's name, before its random part.
pub const TMP_PREFIX: &str = ".lazarus-restore-";
/// Most entries an archive may have.
const MAX_ENTRIES: usize = super::MAX_ENTRIES;

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive is unsafe or damaged: nothing was changed.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A restore done.
#[derive(Debug, Clone)]
pub struct Restored {
    pub name: String,
    pub manifest: Manifest,
    /// Regular files and bytes of content put back (counted, not taken
    /// from the manifest).
    pub files: u64,
    pub bytes: u64,
    pub took_ms: u64,
}

/// One entry as the first pass checked it.
#[derive(Debug, Clone)]
pub(super) struct Checked {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    size: u64,
    mtime: u64,
    target: Vec<u8>,
    digest: String,
}

fn refused(why: impl Into<String>) -> RestoreError {
    RestoreError::Refused(why.into())
}

/// Longest path or link target an entry may have (the kernel's PATH_MAX).
const MAX_PATH: u64 = 4096;
/// Deepest path an entry may have, in components (as deep as a
/// checkpoint walks).
const MAX_COMPONENTS: usize = 256;

/// One entry with its full path and link target: the archive is read
/// raw, so a GNU long name or link is read here, bounded — never the tar
/// crate's unbounded read of an extension header into memory.
struct Item<'a, R: Read> {
    path: Vec<u8>,
    link: Option<Vec<u8>>,
    entry: tar::Entry<'a, R>,
}

fn next_item<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
) -> Option<Result<Item<'a, R>, RestoreError>> {
    let mut long_path = None;
    let mut long_link = None;
    loop {
        let mut entry = match entries.next()? {
            Ok(entry) => entry,
            Err(e) => return Some(Err(refused(format!("a damaged entry: {e}")))),
        };
        let kind = entry.header().entry_type();
        let slot = match kind {
            tar::EntryType::GNULongName => &mut long_path,
            tar::EntryType::GNULongLink => &mut long_link,
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader | tar::EntryType::GNUSparse => {
                return Some(Err(refused(
                    "it has a PAX or sparse-file header, which a checkpoint never holds",
                )));
            }
            _ => {
                let path = long_path.unwrap_or_else(|| entry.header().path_bytes().into_owned());
                let link =
                    long_link.or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
                return Some(Ok(Item { path, link, entry }));
            }
        };
        if entry.size() > MAX_PATH + 1 {
            return Some(Err(refused(format!(
                "it has an entry whose {} is longer than {MAX_PATH} bytes",
                if kind == tar::EntryType::GNULongName {
                    "name"
                } else {
                    "link target"
                }
            ))));
        }
        let mut bytes = Vec::new();
        if let Err(e) = (&mut entry).take(MAX_PATH + 1).read_to_end(&mut bytes) {
            return Some(Err(refused(format!("a damaged entry: {e}"))));
        }
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        *slot = Some(bytes);
    }
}

/// Restores `checkpoints/<name>` into `cell` (whose UUID is `cell_id`).
/// The caller has made sure the cell's agents are not running on it.
pub fn restore(
    cell: &Dir,
    cell_id: &str,
    name: &str,
    owner: Option<(Uid, Gid)>,
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    let (mut file, _) = super::open(cell, name)?;
    let (manifest, entries) = check(&mut file, cell_id)?;
    let space = nix::sys::statvfs::fstatvfs(cell.as_fd()).map_err(io::Error::from)?;
    let free = space
        .blocks_available()
        .saturating_mul(space.fragment_size());
    if manifest.bytes > free {
        return Err(refused(format!(
            "it holds {} bytes and the cell's filesystem has {free} free",
            manifest.bytes
        )));
    }
    file.rewind()?;
    // Restores are serialised by the cell's lock: one left here is from a
    // restore that was killed.
    for (name, _) in cell.entries()? {
        if name.starts_with(TMP_PREFIX) {
            let _ = cell.remove_tree(&name);
        }
    }
    let tmp = format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple());
    mkdirat(cell.as_fd(), tmp.as_str(), Mode::from_bits_truncate(0o700))
        .map_err(|e| io::Error::other(format!("{}: {e}", cell.display(&tmp).display())))?;
    let outcome = cell
        .subdir(&tmp)
        .map_err(RestoreError::from)
        .and_then(|dir| {
            extract(&mut file, &dir, &entries, owner)?;
            swap(cell, &dir)
        });
    // The new trees moved in, the old ones moved here: removed either way.
    if let Err(e) = cell.remove_tree(&tmp) {
        tracing::warn!("{}: not removed: {e}", cell.display(&tmp).display());
    }
    outcome?;
    let files = entries.iter().filter(|e| e.kind == Kind::File).count() as u64;
    let bytes = entries.iter().map(|e| e.size).sum();
    Ok(Restored {
        name: name.to_string(),
        manifest,
        files,
        bytes,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The first pass: every rule, every digest. Returns the manifest and the
/// entries to extract, in archive order.
pub(super) fn check(
    file: &mut File,
    cell_id: &str,
) -> Result<(Manifest, Vec<Checked>), RestoreError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&mut *file));
    let mut iter = archive
        .entries()
        .map_err(|e| refused(format!("not a readable archive: {e}")))?
        .raw(true);
    let manifest: Manifest = match next_item(&mut iter) {
        Some(Ok(first))
            if first.path == MANIFEST_NAME.as_bytes()
                && first.entry.header().entry_type() == tar::EntryType::Regular =>
        {
            let mut bytes = Vec::new();
            first
                .entry
                .take(super::MANIFEST_LIMIT + 1)
                .read_to_end(&mut bytes)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| refused(format!("its {MANIFEST_NAME} does not parse: {e}")))?
        }
        Some(Err(e)) => return Err(e),
        _ => return Err(refused(format!("its first entry is not {MANIFEST_NAME}"))),
    };
    if manifest.format != FORMAT {
        return Err(refused(format!(
            "its format {:?} is not {FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.cell != cell_id {
        return Err(refused(format!(
            "it is a checkpoint of cell {}, not of this one",
            crate::text::escape(&manifest.cell)
        )));
    }
    let mut out: Vec<Checked> = Vec::new();
    let mut lines = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut symlinks: HashSet<Vec<u8>> = HashSet::new();
    let mut files: HashSet<Vec<u8>> = HashSet::new();
    let mut bytes = 0u64;
    let mut path_bytes = 0usize;
    while let Some(item) = next_item(&mut iter) {
        let Item {
            path: raw,
            link,
            mut entry,
        } = item?;
        let path = raw.strip_suffix(b"/").unwrap_or(&raw).to_vec();
        let at = shown(&path);
        check_path(&path).map_err(|why| refused(format!("entry {at:?}: {why}")))?;
        if !seen.insert(path.clone()) {
            return Err(refused(format!("entry {at:?} appears twice")));
        }
        if out.len() >= MAX_ENTRIES {
            return Err(refused(format!("it has more than {MAX_ENTRIES} entries")));
        }
        path_bytes += path.len();
        if path_bytes > super::MAX_PATH_BYTES {
            return Err(refused(format!(
                "its paths add up to more than {} MiB",
                super::MAX_PATH_BYTES >> 20
            )));
        }
        // Through a symlink the archive made, a later entry would land
        // wherever that symlink points.
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' && symlinks.contains(&path[..i]) {
                return Err(refused(format!(
                    "entry {at:?} would be written through the symlink {:?}",
                    shown(&path[..i])
                )));
            }
        }
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| refused(format!("entry {at:?}: {e}")))?;
        let mtime = header.mtime().unwrap_or(0);
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::HardLink,
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refused(format!("entry {at:?} is a device node")));
            }
            tar::EntryType::Fifo => return Err(refused(format!("entry {at:?} is a FIFO"))),
            other => {
                return Err(refused(format!(
                    "entry {at:?} is of a kind a checkpoint never holds ({other:?})"
                )));
            }
        };
        if mode & 0o6000 != 0 {
            return Err(refused(format!(
                "entry {at:?} carries a set-uid or set-gid bit"
            )));
        }
        let kept_only = KEPT_ONLY.iter().any(|k| k.as_bytes() == path.as_slice());
        if kept_only && kind != Kind::File {
            return Err(refused(format!("entry {at:?} is not a regular file")));
        }
        if RESTORED.iter().any(|r| r.as_bytes() == path.as_slice()) && kind != Kind::Dir {
            return Err(refused(format!("entry {at:?} is not a directory")));
        }
        let mut checked = Checked {
            path: path.clone(),
            kind,
            mode: if kind == Kind::Symlink {
                0o777
            } else {
                mode & 0o7777
            },
            size: 0,
            mtime,
            target: Vec::new(),
            digest: "-".into(),
        };
        match kind {
            Kind::File => {
                // Refused before reading: a gigabyte entry costs nothing.
                if bytes.saturating_add(entry.size()) > manifest.bytes {
                    return Err(refused(format!(
                        "it holds more content than its manifest says ({} bytes)",
                        manifest.bytes
                    )));
                }
                let mut hash = Sha256::new();
                let n = copy_hashing(&mut entry, &mut io::sink(), &mut hash)?;
                bytes = bytes.saturating_add(n);
                if bytes > manifest.bytes {
                    return Err(refused(format!(
                        "it holds more content than its manifest says ({} bytes)",
                        manifest.bytes
                    )));
                }
                checked.size = n;
                checked.digest = hex(&hash.finalize());
                if !kept_only {
                    files.insert(path.clone());
                }
            }
            Kind::Symlink | Kind::HardLink => {
                let target = link.unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(refused(format!("entry {at:?} has no link target")));
                }
                if kind == Kind::HardLink && (!files.contains(&target) || kept_only) {
                    return Err(refused(format!(
                        "entry {at:?} is a hard link to {:?}, which is not a file stored before it",
                        shown(&target)
                    )));
                }
                if kind == Kind::Symlink {
                    symlinks.insert(path.clone());
                }
                checked.digest = hex(&Sha256::digest(&target));
                checked.target = target;
            }
            Kind::Dir => {}
        }
        lines.push((path.clone(), line_of(&checked)));
        if !kept_only {
            out.push(checked);
        }
    }
    if bytes != manifest.bytes || super::list_digest(lines) != manifest.sha256 {
        return Err(refused(format!(
            "its content does not match its {MANIFEST_NAME} (damaged or altered)"
        )));
    }
    Ok((manifest, out))
}

fn line_of(c: &Checked) -> Vec<u8> {
    content_line(c.kind, c.mode, c.size, &c.digest, &c.path)
}

/// The rules for a path inside the archive.
fn check_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("an empty path");
    }
    if path.len() as u64 > MAX_PATH {
        return Err("a path longer than 4096 bytes");
    }
    if path.iter().filter(|b| **b == b'/').count() >= MAX_COMPONENTS {
        return Err("a path deeper than 256 components");
    }
    if path.starts_with(b"/") {
        return Err("an absolute path");
    }
    if path.contains(&0) {
        return Err("a NUL byte in its path");
    }
    for part in path.split(|b| *b == b'/') {
        match part {
            b".." => return Err("a \"..\" component"),
            b"." | b"" => return Err("an empty or \".\" component"),
            _ => {}
        }
    }
    let top = path.split(|b| *b == b'/').next().unwrap_or_default();
    if RESTORED.iter().any(|r| r.as_bytes() == top)
        || KEPT_ONLY.iter().any(|k| k.as_bytes() == path)
    {
        Ok(())
    } else {
        Err("outside what a checkpoint holds (workspace/, bus/, cell.json, .lazarus/state.json)")
    }
}

/// Copies `from` to `to`, hashing; returns the byte count.
fn copy_hashing(from: &mut impl Read, to: &mut impl Write, hash: &mut Sha256) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let got = match from.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..got]);
        to.write_all(&buf[..got])?;
        n += got as u64;
    }
}

/// The second pass, into `dest` (fresh, mode 0700): entries as the first
/// pass checked them, in the same order.
pub(super) fn extract(
    file: &mut File,
    dest: &Dir,
    entries: &[Checked],
    owner: Option<(Uid, Gid)>,
) -> Result<(), RestoreError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&mut *file));
    let mut expected = entries.iter();
    let mut dirs: Vec<&Checked> = Vec::new();
    let mut cache = Parents::new(dest)?;
    let mut iter = archive.entries()?.raw(true);
    let mut first = true;
    while let Some(item) = next_item(&mut iter) {
        let Item {
            path: raw, entry, ..
        } = item?;
        if std::mem::take(&mut first) {
            continue; // checkpoint.json
        }
        let path = raw.strip_suffix(b"/").unwrap_or(&raw).to_vec();
        if KEPT_ONLY.iter().any(|k| k.as_bytes() == path.as_slice()) {
            continue;
        }
        // What the check saw, or the archive changed since: never more
        // content than it counted.
        let Some(want) = expected
            .next()
            .filter(|w| w.path == path && (w.kind != Kind::File || entry.size() == w.size))
        else {
            return Err(altered());
        };
        let mut entry = entry.take(want.size);
        let (parent, name) = cache.parent_of(&path, owner)?;
        let name = OsStr::from_bytes(name);
        match want.kind {
            Kind::Dir => {
                match mkdirat(&parent, name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    // Made already as the parent of an earlier entry.
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io::Error::from(e).into()),
                }
                dirs.push(want);
            }
            Kind::File => {
                let fd = openat(
                    &parent,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(io::Error::from)?;
                let mut out = File::from(fd);
                let mut hash = Sha256::new();
                let n = copy_hashing(&mut entry, &mut out, &mut hash)?;
                if n != want.size || hex(&hash.finalize()) != want.digest {
                    return Err(altered());
                }
                finish(&out, want, owner)?;
            }
            Kind::Symlink => {
                nix::unistd::symlinkat(OsStr::from_bytes(&want.target), &parent, name)
                    .map_err(io::Error::from)?;
                if let Some((uid, gid)) = owner {
                    nix::unistd::fchownat(
                        &parent,
                        name,
                        Some(uid),
                        Some(gid),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(io::Error::from)?;
                }
                let t = TimeSpec::new(i64::try_from(want.mtime).unwrap_or(0), 0);
                let _ = utimensat(&parent, name, &t, &t, UtimensatFlags::NoFollowSymlink);
            }
            Kind::HardLink => {
                let (tparent, tname) = cache.parent_of(&want.target, owner)?;
                nix::unistd::linkat(
                    &tparent,
                    OsStr::from_bytes(tname),
                    &parent,
                    name,
                    AtFlags::empty(),
                )
                .map_err(io::Error::from)?;
            }
        }
    }
    if expected.next().is_some() {
        return Err(altered());
    }
    for top in RESTORED {
        match mkdirat(dest.as_fd(), *top, Mode::from_bits_truncate(0o755)) {
            Ok(()) => {
                if let Some((uid, gid)) = owner {
                    nix::unistd::fchownat(
                        dest.as_fd(),
                        *top,
                        Some(uid),
                        Some(gid),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(io::Error::from)?;
                }
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(io::Error::from(e).into()),
        }
    }
    // Directories last, deepest first: a read-only one would have refused
    // its own entries, and writing into one moves its mtime.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.len()));
    for d in dirs {
        let (parent, name) = cache.parent_of(&d.path, owner)?;
        let fd = openat(
            &parent,
            OsStr::from_bytes(name),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io::Error::other(format!("{}: {e}", shown(&d.path))))?;
        finish(&File::from(fd), d, owner)?;
    }
    Ok(())
}

fn altered() -> RestoreError {
    refused("the archive changed while it was being restored")
}

/// Owner, mode and mtime of an extracted file or directory.
fn finish(file: &File, c: &Checked, owner: Option<(Uid, Gid)>) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(file, Some(uid), Some(gid)).map_err(io::Error::from)?;
    }
    nix::sys::stat::fchmod(file, Mode::from_bits_truncate(c.mode)).map_err(io::Error::from)?;
    let t = TimeSpec::new(i64::try_from(c.mtime).unwrap_or(0), 0);
    futimens(file, &t, &t).map_err(io::Error::from)?;
    Ok(())
}

/// Open parent directories of the extraction, by path, so a tree of many
/// files in one directory is not walked again for each.
struct Parents<'a> {
    dest: &'a Dir,
    open: HashMap<Vec<u8>, OwnedFd>,
}

impl<'a> Parents<'a> {
    fn new(dest: &'a Dir) -> io::Result<Parents<'a>> {
        Ok(Parents {
            dest,
            open: HashMap::new(),
        })
    }

    /// The parent directory of `path` (made if missing, mode 0700 until
    /// its own entry sets it) and the last component.
    fn parent_of<'p>(
        &mut self,
        path: &'p [u8],
        owner: Option<(Uid, Gid)>,
    ) -> io::Result<(OwnedFd, &'p [u8])> {
        let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        if parent.is_empty() {
            return Ok((self.dest.as_fd().try_clone_to_owned()?, name));
        }
        if let Some(fd) = self.open.get(parent) {
            return Ok((fd.try_clone()?, name));
        }
        if self.open.len() > 64 {
            self.open.clear(); // bounded descriptors
        }
        let mut fd: OwnedFd = self.dest.as_fd().try_clone_to_owned()?;
        for part in parent.split(|b| *b == b'/') {
            let part = OsStr::from_bytes(part);
            match mkdirat(&fd, part, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    if let Some((uid, gid)) = owner {
                        nix::unistd::fchownat(
                            &fd,
                            part,
                            Some(uid),
                            Some(gid),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(io::Error::from)?;
                    }
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
            fd = openat(
                &fd,
                part,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io::Error::other(format!("{}: {e}", shown(parent))))?;
        }
        self.open.insert(parent.to_vec(), fd.try_clone()?);
        Ok((fd, name))
    }
}

/// Exchanges `workspace/` and `bus/` of the cell with those in `new`: the
/// old ones end up in `new`. All or nothing.
fn swap(cell: &Dir, new: &Dir) -> Result<(), RestoreError> {
    let mut done: Vec<(&str, bool)> = Vec::new();
    for top in RESTORED {
        let exists = cell.entry_kind(top)?.is_some();
        let result = if exists {
            renameat2(
                new.as_fd(),
                *top,
                cell.as_fd(),
                *top,
                RenameFlags::RENAME_EXCHANGE,
            )
        } else {
            renameat2(
                new.as_fd(),
                *top,
                cell.as_fd(),
                *top,
                RenameFlags::RENAME_NOREPLACE,
            )
        };
        if let Err(e) = result {
            for (undo, exchanged) in done.into_iter().rev() {
                let flags = if exchanged {
                    RenameFlags::RENAME_EXCHANGE
                } else {
                    RenameFlags::RENAME_NOREPLACE
                };
                let _ = renameat2(cell.as_fd(), undo, new.as_fd(), undo, flags);
            }
            return Err(io::Error::other(format!(
                "cannot swap {} in: {e}; nothing was changed",
                cell.display(top).display()
            ))
            .into());
        }
        done.push((top, exists));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        assert!(check_path(b"workspace/a/b").is_ok());
        assert!(check_path(b"bus").is_ok());
        assert!(check_path(b"cell.json").is_ok());
        assert!(check_path(b"/etc/passwd").is_err());
        assert!(check_path(b"workspace/../../x").is_err());
        assert!(check_path(b"workspace//x").is_err());
        assert!(check_path(b"workspace/./x").is_err());
        assert!(check_path(b"logs/events.jsonl").is_err());
        assert!(check_path(b".lazarus/heartbeats/a.json").is_err());
        assert!(check_path(b"").is_err());
    }
}
