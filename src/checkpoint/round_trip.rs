//! A checkpoint and its restore, and the archives restore must refuse.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::archive::{self, Options};
use super::restore::{RestoreError, restore};
use crate::store::Dir;

/// A raw archive entry: path, kind, mode, content, link target.
type Raw<'a> = (&'a [u8], tar::EntryType, u32, &'a [u8], &'a [u8]);

const CELL: &str = "3b0c5a52-2a39-4c41-9b43-d1a3d2f1a9aa";

/// What a tree is, entry by entry: kind, mode, content or target, mtime.
fn tree(root: &Path) -> BTreeMap<Vec<u8>, (String, u32, Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.expect("walk");
        let meta = entry.path().symlink_metadata().expect("meta");
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("rel")
            .as_os_str()
            .as_bytes()
            .to_vec();
        let (kind, data) = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("link");
            ("l", target.into_os_string().into_vec())
        } else if meta.is_dir() {
            ("d", Vec::new())
        } else {
            ("f", std::fs::read(entry.path()).expect("read"))
        };
        let mtime = if kind == "l" { 0 } else { meta.mtime() };
        out.insert(rel, (kind.to_string(), meta.mode() & 0o7777, data, mtime));
    }
    out
}

fn cell() -> (tempfile::TempDir, Dir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let c = tmp.path().join("cell");
    for d in [
        "workspace",
        "bus/inbox/a",
        "bus/outbox",
        ".lazarus",
        "checkpoints",
    ] {
        std::fs::create_dir_all(c.join(d)).expect("mkdir");
    }
    std::fs::write(c.join("cell.json"), br#"{"uuid":"x"}"#).expect("manifest");
    let dir = Dir::open(&c).expect("open");
    (tmp, dir)
}

fn take(dir: &Dir, keep: usize) -> super::archive::Created {
    take_for(dir, keep, None)
}

/// A checkpoint taken (as root) for a cell owned by `owner`.
fn take_for(
    dir: &Dir,
    keep: usize,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> super::archive::Created {
    archive::create(
        dir,
        &Options {
            cell_id: CELL.into(),
            reason: "manual".into(),
            keep,
            owner,
        },
    )
    .expect("checkpoint")
}

#[test]
fn a_restore_gives_back_the_tree_byte_for_byte() {
    let (_tmp, dir) = cell();
    let w = dir.path().join("workspace");
    std::fs::create_dir_all(w.join("src/deep/er")).expect("mkdir");
    std::fs::create_dir(w.join("empty")).expect("mkdir");
    std::fs::write(w.join("src/main.rs"), b"fn main() {}\n").expect("write");
    std::fs::write(
        w.join("bin.dat"),
        (0..=255u8).cycle().take(300_000).collect::<Vec<_>>(),
    )
    .expect("write");
    std::fs::write(w.join("run.sh"), b"#!/bin/sh\n").expect("write");
    std::fs::set_permissions(w.join("run.sh"), PermissionsExt::from_mode(0o750)).expect("chmod");
    std::fs::write(w.join("ro"), b"read only").expect("write");
    std::fs::set_permissions(w.join("ro"), PermissionsExt::from_mode(0o444)).expect("chmod");
    std::fs::set_permissions(w.join("src/deep"), PermissionsExt::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::symlink("src/main.rs", w.join("rel-link")).expect("symlink");
    std::os::unix::fs::symlink("/nonexistent/../x", w.join("dangling")).expect("symlink");
    std::os::unix::fs::symlink("./a//b", w.join("odd-target")).expect("symlink");
    std::fs::hard_link(w.join("src/main.rs"), w.join("hard")).expect("link");
    let odd = OsString::from_vec(b"na\xffme\n".to_vec());
    std::fs::write(w.join(&odd), b"odd name").expect("write");
    std::fs::write(dir.path().join("bus/inbox/a/packet.json"), b"{}").expect("write");
    let before = tree(&w);
    let bus_before = tree(&dir.path().join("bus"));

    let created = take(&dir, 10);
    assert!(created.manifest.files >= 6, "{:?}", created.manifest);

    // Change everything, then roll back.
    std::fs::remove_dir_all(w.join("src")).expect("rm");
    std::fs::write(w.join("bin.dat"), b"overwritten").expect("write");
    std::fs::write(w.join("new"), b"new").expect("write");
    std::fs::remove_file(dir.path().join("bus/inbox/a/packet.json")).expect("rm");
    restore(&dir, CELL, &created.name, None).expect("restore");

    assert_eq!(tree(&w), before);
    assert_eq!(tree(&dir.path().join("bus")), bus_before);
    let a = std::fs::metadata(w.join("hard")).expect("meta");
    let b = std::fs::metadata(w.join("src/main.rs")).expect("meta");
    assert_eq!(a.ino(), b.ino(), "a hard link is restored as one");
    // Nothing of the extraction is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".lazarus-restore")
        })
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn what_is_not_a_file_is_left_out_and_said() {
    let (_tmp, dir) = cell();
    let w = dir.path().join("workspace");
    nix::unistd::mkfifo(
        &w.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    std::fs::write(w.join("suid"), b"x").expect("write");
    std::fs::set_permissions(w.join("suid"), PermissionsExt::from_mode(0o4755)).expect("chmod");
    let created = take(&dir, 10);
    let notes = created.manifest.notes.join("\n");
    assert!(notes.contains("fifo: left out: a FIFO"), "{notes}");
    assert!(notes.contains("set-uid/set-gid bits dropped"), "{notes}");
    restore(&dir, CELL, &created.name, None).expect("restore");
    assert!(!w.join("fifo").exists());
    let mode = std::fs::metadata(w.join("suid")).expect("meta").mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[test]
fn cell_json_linked_into_the_workspace_keeps_the_checkpoint_restorable() {
    let (_tmp, dir) = cell();
    std::fs::hard_link(dir.path().join("cell.json"), dir.path().join("workspace/x")).expect("link");
    let created = take(&dir, 10);
    restore(&dir, CELL, &created.name, None).expect("restore");
    assert_eq!(
        std::fs::read(dir.path().join("workspace/x")).expect("read"),
        br#"{"uuid":"x"}"#
    );
}

#[test]
fn retention_keeps_the_newest() {
    let (_tmp, dir) = cell();
    let names: Vec<String> = (0..4).map(|_| take(&dir, 3).name).collect();
    assert_eq!(super::names(&dir).expect("names"), names[1..].to_vec());
    let listed = super::list(&dir).expect("list");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|l| l.manifest.is_some()));
}

/// A gzip'd tar whose entries are written raw (paths the `tar` crate
/// would refuse to write), after a manifest that matches them.
fn crafted(dir: &Dir, entries: &[Raw<'_>]) -> String {
    let mut lines = Vec::new();
    let mut bytes = 0;
    let mut headers = Vec::new();
    for (path, kind, mode, data, link) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        headers.push((h, *data));
        bytes += data.len() as u64;
        let k = match kind {
            tar::EntryType::Directory => super::Kind::Dir,
            tar::EntryType::Symlink => super::Kind::Symlink,
            tar::EntryType::Link => super::Kind::HardLink,
            _ => super::Kind::File,
        };
        let digest = if k == super::Kind::File {
            super::hex(&<sha2::Sha256 as sha2::Digest>::digest(data))
        } else if link.is_empty() {
            "-".into()
        } else {
            super::hex(&<sha2::Sha256 as sha2::Digest>::digest(link))
        };
        let line = super::content_line(k, *mode, data.len() as u64, &digest, path);
        lines.push((path.to_vec(), line));
    }
    let manifest = super::Manifest {
        format: super::FORMAT.into(),
        cell: CELL.into(),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        reason: "manual".into(),
        files: 1,
        dirs: 0,
        symlinks: 0,
        bytes,
        sha256: super::list_digest(lines),
        notes: Vec::new(),
    };
    let json = serde_json::to_vec(&manifest).expect("json");
    let mut out = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    out.append_data(&mut h, super::MANIFEST_NAME, json.as_slice())
        .expect("manifest");
    // Headers as they are: `append` checks nothing.
    for (h, data) in headers {
        out.append(&h, data).expect("append");
    }
    let bytes = out.into_inner().expect("tar").finish().expect("gz");
    let name = "20260101T000000.000Z.tar.gz".to_string();
    std::fs::write(dir.path().join("checkpoints").join(&name), bytes).expect("write");
    name
}

fn refused(dir: &Dir, name: &str) -> String {
    let w = dir.path().join("workspace");
    let before = tree(&w);
    match restore(dir, CELL, name, None) {
        Err(RestoreError::Refused(why)) => {
            assert_eq!(tree(&w), before, "a refused archive changed the workspace");
            why
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn hostile_archives_are_refused_and_nothing_changes() {
    use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
    let (tmp, dir) = cell();
    std::fs::write(dir.path().join("workspace/keep"), b"mine").expect("write");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let target = outside.as_os_str().as_bytes().to_vec();
    let cases: Vec<(&str, Vec<Raw<'_>>)> = vec![
        (
            "\"..\"",
            vec![(b"workspace/../../outside/x", Regular, 0o644, b"pwned", b"")],
        ),
        ("absolute", vec![(b"/tmp/x", Regular, 0o644, b"pwned", b"")]),
        (
            "through the symlink",
            vec![
                (b"workspace/s", Symlink, 0o777, b"", &target),
                (b"workspace/s/pwned", Regular, 0o644, b"pwned", b""),
            ],
        ),
        (
            "device node",
            vec![(b"workspace/null", Char, 0o666, b"", b"")],
        ),
        (
            "device node",
            vec![(b"workspace/sda", Block, 0o660, b"", b"")],
        ),
        ("FIFO", vec![(b"workspace/p", Fifo, 0o644, b"", b"")]),
        (
            "set-uid",
            vec![(b"workspace/sh", Regular, 0o4755, b"#!", b"")],
        ),
        (
            "set-uid or set-gid",
            vec![(b"workspace/d", Directory, 0o2755, b"", b"")],
        ),
        (
            "hard link",
            vec![(b"workspace/h", Link, 0o644, b"", b"/etc/passwd")],
        ),
        (
            "outside what a checkpoint holds",
            vec![(b"logs/events.jsonl", Regular, 0o644, b"{}", b"")],
        ),
        (
            "twice",
            vec![
                (b"workspace/a", Regular, 0o644, b"1", b""),
                (b"workspace/a", Regular, 0o644, b"2", b""),
            ],
        ),
    ];
    for (why, entries) in cases {
        let name = crafted(&dir, &entries);
        let said = refused(&dir, &name);
        assert!(said.contains(why), "{why}: {said}");
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 0, "{why}");
    }
    // A plain archive whose content differs from its manifest.
    let good = take(&dir, 10);
    let path = dir.path().join("checkpoints").join(&good.name);
    let mut bytes = std::fs::read(&path).expect("read");
    let n = bytes.len();
    bytes.truncate(n - 40);
    std::fs::write(&path, &bytes).expect("write");
    let said = refused(&dir, &good.name);
    assert!(!said.is_empty());
    // Another cell's checkpoint.
    let good = take(&dir, 10);
    match restore(&dir, "another-cell", &good.name, None) {
        Err(RestoreError::Refused(why)) => assert!(why.contains("not of this one"), "{why}"),
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(
        std::fs::read(dir.path().join("workspace/keep")).expect("read"),
        b"mine"
    );
}

/// An archive of `workspace/` and one file `workspace/z` of `z` bytes,
/// with its manifest.
fn with_file(dir: &Dir, z: &[u8]) -> String {
    crafted(
        dir,
        &[
            (b"workspace", tar::EntryType::Directory, 0o755, b"", b""),
            (b"workspace/z", tar::EntryType::Regular, 0o644, z, b""),
        ],
    )
}

#[test]
fn an_archive_rewritten_after_the_check_writes_no_more_than_was_checked() {
    let (_tmp, dir) = cell();
    let name = with_file(&dir, b"1");
    let path = dir.path().join("checkpoints").join(&name);
    let mut checked = std::fs::File::open(&path).expect("open");
    let (_, entries) = super::restore::check(&mut checked, CELL).expect("check");
    // The agent rewrites it: the same entries, but z is 8 MiB now.
    let big = vec![0u8; 8 << 20];
    with_file(&dir, &big);
    let dest_path = dir.path().join(".dest");
    std::fs::create_dir(&dest_path).expect("mkdir");
    let dest = Dir::open(&dest_path).expect("dest");
    let mut rewritten = std::fs::File::open(&path).expect("open");
    match super::restore::extract(&mut rewritten, &dest, &entries, None) {
        Err(RestoreError::Refused(why)) => assert!(why.contains("changed"), "{why}"),
        other => panic!("not refused: {other:?}"),
    }
    let written = std::fs::metadata(dest_path.join("workspace/z")).map_or(0, |m| m.len());
    assert!(written <= 1, "{written} bytes written of a 1-byte entry");
}

#[test]
fn a_huge_extension_header_is_refused_without_reading_it() {
    let (_tmp, dir) = cell();
    // A GNU long name that says it is a gigabyte long.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_size(1 << 30);
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for raw in [h.as_bytes().as_slice(), &[b'a'; 4096 * 4]] {
        std::io::Write::write_all(&mut gz, raw).expect("write");
    }
    let name = "20260101T000000.000Z.tar.gz";
    std::fs::write(
        dir.path().join("checkpoints").join(name),
        gz.finish().expect("gz"),
    )
    .expect("write");
    let said = refused(&dir, name);
    assert!(
        said.contains("first entry is not") || said.contains("longer"),
        "{said}"
    );
    // The listing reads a bounded first header too.
    let listed = super::list(&dir).expect("list");
    assert!(listed[0].manifest.is_none() && listed[0].problem.is_some());
}

#[test]
fn names_dated_in_the_future_neither_push_real_checkpoints_out_nor_are_latest() {
    let (_tmp, dir) = cell();
    let first = take(&dir, 2).name;
    for day in 1..=3 {
        let planted = format!("209901{day:02}T000000.000Z.tar.gz");
        std::fs::copy(
            dir.path().join("checkpoints").join(&first),
            dir.path().join("checkpoints").join(planted),
        )
        .expect("plant");
    }
    // A directory of a checkpoint's name is not one.
    std::fs::create_dir(dir.path().join("checkpoints/20000101T000000.000Z.tar.gz")).expect("mkdir");
    let second = take(&dir, 2);
    assert!(second.pruned.is_empty(), "{:?}", second.pruned);
    let third = take(&dir, 2);
    assert_eq!(third.pruned, [first]);
    assert_eq!(super::latest(&dir).expect("latest"), Some(third.name));
}

#[test]
fn workspace_and_bus_must_be_directories_in_an_archive() {
    let (_tmp, dir) = cell();
    let name = crafted(
        &dir,
        &[(b"workspace", tar::EntryType::Symlink, 0o777, b"", b"/etc")],
    );
    let said = refused(&dir, &name);
    assert!(said.contains("not a directory"), "{said}");
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root (a file of another user)")]
fn a_file_its_owner_cannot_read_is_left_out_hard_linked_or_not() {
    let (tmp, dir) = cell();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"root's").expect("write");
    std::os::unix::fs::chown(&secret, Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600)).expect("chmod");
    std::fs::hard_link(&secret, dir.path().join("workspace/leak")).expect("link");
    let owner = Some((
        nix::unistd::Uid::from_raw(65534),
        nix::unistd::Gid::from_raw(65534),
    ));
    let created = take_for(&dir, 10, owner);
    let notes = created.manifest.notes.join("\n");
    assert!(
        notes.contains("workspace/leak: left out: its owner's user cannot read it"),
        "{notes}"
    );
    // Only cell.json was read.
    assert_eq!(created.manifest.files, 1);
    // The same with its other name gone (one link left): still not read.
    std::fs::remove_file(&secret).expect("rm");
    let created = take_for(&dir, 10, owner);
    assert!(
        created
            .manifest
            .notes
            .iter()
            .any(|n| n.contains("workspace/leak: left out")),
        "{:?}",
        created.manifest.notes
    );
    assert_eq!(created.manifest.files, 1);
}
