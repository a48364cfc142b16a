//! Checkpoints: a cell's `workspace/`, `bus/`, `cell.json` and
//! `.lazarus/state.json` as `checkpoints/<UTC timestamp>.tar.gz`, and the
//! way back (`restore`).
//!
//! Both directions treat the cell as written by an attacker: the walk that
//! archives opens every component relative to its parent's descriptor and
//! never follows a symlink (a symlink is stored as one), and the extraction
//! refuses the whole archive before writing anything if one entry could
//! land outside the tree it is restored into, or would be a device, or
//! carries a set-id bit (see [`restore`] and `spec/security.md`).
//!
//! The archive's first entry is `checkpoint.json` ([`Manifest`]), so a
//! listing reads one header instead of the whole archive. Its `sha256` is
//! over the sorted content list (one line per entry: kind, mode, size,
//! content digest, path), which restore recomputes before it changes
//! anything.

pub mod archive;
pub mod restore;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Dir;

/// The directory of a cell's checkpoints.
pub const DIR: &str = "checkpoints";
/// The manifest's name inside an archive.
pub const MANIFEST_NAME: &str = "checkpoint.json";
/// The format written into every manifest.
pub const FORMAT: &str = "lazarus-pit-checkpoint/1";
/// Suffix of every checkpoint file.
pub const SUFFIX: &str = ".tar.gz";
/// Most entries a checkpoint may hold (walked or restored): what bounds
/// the memory either takes.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Most bytes all of a checkpoint's paths may add up to (what the walk
/// and the restore hold in memory for them).
pub const MAX_PATH_BYTES: usize = 32 << 20;
/// Most notes a manifest carries (the rest are counted).
pub const MAX_NOTES: usize = 100;
/// Largest `checkpoint.json` read back.
pub const MANIFEST_LIMIT: u64 = 16 * 1024 * 1024;

/// `checkpoint.json`: what the archive holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub cell: String,
    /// RFC 3339 UTC with milliseconds.
    pub created_at: String,
    /// Why it was taken: `manual`, `interval`, `archive`.
    #[serde(default)]
    pub reason: String,
    /// Regular files (a hard link counts once).
    pub files: u64,
    #[serde(default)]
    pub dirs: u64,
    #[serde(default)]
    pub symlinks: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Hex SHA-256 of the sorted content list (see [`content_line`]).
    pub sha256: String,
    /// What was left out, and why (FIFOs, sockets, devices, other
    /// filesystems, set-id bits dropped).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What an entry of the content list is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// A second name of a file stored earlier.
    HardLink,
}

impl Kind {
    fn letter(self) -> &'static str {
        match self {
            Kind::Dir => "d",
            Kind::File => "f",
            Kind::Symlink => "l",
            Kind::HardLink => "h",
        }
    }
}

/// One line of the content list: `<kind> <mode, octal> <size> <digest>
/// <path>\n`, where the digest is the SHA-256 of a file's content, of a
/// symlink's or hard link's target, and `-` for a directory. Sorted by the
/// path's bytes, the lines' SHA-256 is the manifest's `sha256`.
pub fn content_line(kind: Kind, mode: u32, size: u64, digest: &str, path: &[u8]) -> Vec<u8> {
    let mut line = format!("{} {:o} {size} {digest} ", kind.letter(), mode & 0o7777).into_bytes();
    line.extend_from_slice(path);
    line.push(b'\n');
    line
}

/// The SHA-256 of sorted content lines (sorted here by path).
pub fn list_digest(mut lines: Vec<(Vec<u8>, Vec<u8>)>) -> String {
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hash = Sha256::new();
    for (_, line) in &lines {
        hash.update(line);
    }
    hex(&hash.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A file name of `checkpoints/` that is a checkpoint: the UTC timestamp
/// this program writes, `YYYYMMDDTHHMMSS.mmmZ[-N].tar.gz`. Anything else
/// there (temp files, an agent's junk) is neither listed nor pruned.
pub fn is_checkpoint_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(SUFFIX) else {
        return false;
    };
    // Bytes, not chars: a name is anything an agent put there.
    let (Some(stamp), Some(extra)) = (stem.get(..20), stem.get(20..)) else {
        return false;
    };
    stamp.len() == 20
        && chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ").is_ok()
        && (extra.is_empty()
            || extra
                .strip_prefix('-')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// The timestamp part of a checkpoint name for `now`.
pub fn stamp(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// One checkpoint of a cell, as `checkpoint --list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub name: String,
    /// Size of the archive.
    pub size: u64,
    /// From its manifest, if it reads.
    pub manifest: Option<Manifest>,
    /// Why the manifest does not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The cell's checkpoints, oldest first (their names sort by time).
pub fn names(cell: &Dir) -> io::Result<Vec<String>> {
    let dir = match cell.subdir(DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = dir
        .entries()?
        .into_iter()
        .filter(|(name, _)| is_checkpoint_name(name))
        // Regular files only (a directory of that name is an agent's).
        .filter(|(name, kind)| match kind {
            crate::store::EntryKind::File => true,
            crate::store::EntryKind::Unknown => dir.open_regular(name).is_ok(),
            _ => false,
        })
        .map(|(name, _)| name)
        .collect();
    // By time, then by the `-N` of a second checkpoint in one millisecond.
    names.sort_by_key(|name| {
        let stem = name.strip_suffix(SUFFIX).unwrap_or(name);
        let (stamp, n) = (stem.get(..20).unwrap_or(stem), stem.get(20..).unwrap_or(""));
        let n: u32 = n
            .strip_prefix('-')
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (stamp.to_string(), n)
    });
    Ok(names)
}

/// Whether a checkpoint's name dates it later than a minute from now:
/// not one this program wrote (an agent can put any name there), so
/// neither `latest` nor what retention keeps.
pub fn is_future(name: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::NaiveDateTime::parse_from_str(name.get(..20).unwrap_or(name), "%Y%m%dT%H%M%S%.3fZ")
        .is_ok_and(|t| t.and_utc() > now + chrono::Duration::seconds(60))
}

/// The newest checkpoint not dated in the future (`restore … latest`).
pub fn latest(cell: &Dir) -> io::Result<Option<String>> {
    let now = chrono::Utc::now();
    Ok(names(cell)?.into_iter().rev().find(|n| !is_future(n, now)))
}

/// Lists the cell's checkpoints with what their manifests say.
pub fn list(cell: &Dir) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for name in names(cell)? {
        let (manifest, problem, size) = match open(cell, &name) {
            Ok((file, size)) => match read_manifest(file) {
                Ok(m) => (Some(m), None, size),
                Err(e) => (None, Some(e.to_string()), size),
            },
            Err(e) => (None, Some(e.to_string()), 0),
        };
        out.push(Listed {
            name,
            size,
            manifest,
            problem,
        });
    }
    Ok(out)
}

/// Opens `checkpoints/<name>` safely (no symlink, a regular file).
pub fn open(cell: &Dir, name: &str) -> io::Result<(File, u64)> {
    if name.contains('/') || !is_checkpoint_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a checkpoint name (YYYYMMDDTHHMMSS.mmmZ.tar.gz)"),
        ));
    }
    cell.open_regular(&format!("{DIR}/{name}"))
        .map_err(|e| io::Error::other(format!("{}: {e}", cell.display(DIR).join(name).display())))
}

/// The manifest of an archive: its first entry.
pub fn read_manifest(file: File) -> io::Result<Manifest> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    // Raw: an extension header (a GNU long name) is not read into memory.
    let mut entries = archive.entries()?.raw(true);
    let Some(first) = entries.next() else {
        return Err(io::Error::other("an empty archive"));
    };
    let first = first?;
    if first.header().entry_type() != tar::EntryType::Regular
        || first.path_bytes().as_ref() != MANIFEST_NAME.as_bytes()
    {
        return Err(io::Error::other(format!(
            "its first entry is not {MANIFEST_NAME}"
        )));
    }
    let mut bytes = Vec::new();
    first.take(MANIFEST_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MANIFEST_LIMIT {
        return Err(io::Error::other(format!("{MANIFEST_NAME} is too large")));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::other(format!("{MANIFEST_NAME} does not parse: {e}")))
}

/// Removes the oldest checkpoints beyond `keep` (0 keeps all), never
/// `written` (the one just taken) and never one dated in the future (an
/// agent's, which must not push real ones out); returns the names removed.
pub fn prune(cell: &Dir, keep: usize, written: &str) -> io::Result<Vec<String>> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let now = chrono::Utc::now();
    let names: Vec<String> = names(cell)?
        .into_iter()
        .filter(|n| n != written && !is_future(n, now))
        .collect();
    let excess = names.len().saturating_sub(keep.saturating_sub(1));
    let dir = cell.subdir(DIR)?;
    let mut removed = Vec::new();
    for name in names.into_iter().take(excess) {
        // One that cannot be removed is left (and the next is not
        // removed in its place).
        if dir.remove_file(&name).is_ok() {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Lossy text of a path for messages, escaped, and cut if it is long (a
/// hostile path can be kilobytes).
pub(crate) fn shown(path: &[u8]) -> String {
    const SHOWN: usize = 160;
    let text = crate::text::escape(&OsStr::from_bytes(path).to_string_lossy()).into_owned();
    if text.len() <= SHOWN {
        return text;
    }
    let mut cut = SHOWN;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &text[..cut], path.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_timestamps() {
        assert!(is_checkpoint_name("20261202T023456.123Z.tar.gz"));
        assert!(is_checkpoint_name("20261202T023456.123Z-2.tar.gz"));
        assert!(!is_checkpoint_name("20261302T023456.123Z.tar.gz"));
        assert!(!is_checkpoint_name(".tmp-x.tar.gz"));
        assert!(!is_checkpoint_name("20261202T023456.123Z-.tar.gz"));
        assert!(!is_checkpoint_name("../20261202T023456.123Z.tar.gz"));
        // A multi-byte character across byte 20 is no panic.
        assert!(!is_checkpoint_name("2026120201234567890é.tar.gz"));
        assert!(!is_future(
            "2026120201234567890é.tar.gz",
            chrono::Utc::now()
        ));
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 5_000_000).expect("time");
        assert!(is_checkpoint_name(&format!("{}{SUFFIX}", stamp(now))));
    }

    #[test]
    fn the_content_digest_ignores_walk_order() {
        let a = (b"a".to_vec(), content_line(Kind::Dir, 0o755, 0, "-", b"a"));
        let b = (b"b".to_vec(), content_line(Kind::File, 0o644, 3, "x", b"b"));
        assert_eq!(
            list_digest(vec![a.clone(), b.clone()]),
            list_digest(vec![b, a])
        );
    }
}

#[cfg(test)]
mod round_trip;
