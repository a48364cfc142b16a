//! Checkpoints, restore and cell timers (BRIEF 2, 3, 5, 8), through the
//! binary: `checkpoint`, `checkpoint --list`, `restore`, and the daemon's
//! `idle_timeout`, `max_duration` and `checkpoint_interval`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Env, wait_for};
use crate::section_control::{agent, env};

/// A raw archive entry: path, kind, content, link target.
type Raw<'a> = (&'a str, tar::EntryType, &'a [u8], &'a str);

const LIMIT: Duration = Duration::from_secs(20);

/// Every entry below `root`: kind, mode, content or link target.
fn tree(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.expect("walk");
        let meta = entry.path().symlink_metadata().expect("meta");
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("rel")
            .display()
            .to_string();
        let value = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("readlink");
            ('l', 0, target.display().to_string().into_bytes())
        } else if meta.is_dir() {
            ('d', meta.mode() & 0o7777, Vec::new())
        } else {
            (
                'f',
                meta.mode() & 0o7777,
                std::fs::read(entry.path()).expect("read"),
            )
        };
        out.insert(rel, value);
    }
    out
}

/// Every line of the cell's stream matches the event schema.
fn schema_valid(env: &Env, uuid: &str) {
    let schema = crate::section_schemas::validator("event");
    for event in env.events(uuid) {
        let errors: Vec<String> = schema.iter_errors(&event).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{event}: {errors:?}");
    }
}

/// Files of every kind a workspace holds, written by "the agents".
fn populate(workspace: &Path) {
    std::fs::create_dir_all(workspace.join("src/nested/deeper")).expect("mkdir");
    std::fs::create_dir(workspace.join("empty")).expect("mkdir");
    std::fs::write(workspace.join("src/lib.rs"), b"pub fn f() {}\n").expect("write");
    std::fs::write(
        workspace.join("blob"),
        (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .expect("write");
    std::fs::write(workspace.join("tool.sh"), b"#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(workspace.join("tool.sh"), PermissionsExt::from_mode(0o750))
        .expect("chmod");
    std::fs::set_permissions(
        workspace.join("src/nested"),
        PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("src/lib.rs", workspace.join("lib-link")).expect("symlink");
    std::os::unix::fs::symlink("../../../../etc/passwd", workspace.join("outward"))
        .expect("symlink");
}

#[test]
fn a_checkpoint_rolls_back_byte_for_byte_and_the_agents_start_again_on_it() {
    let env = env("");
    let uuid = env.create_from(&json!({"status": "active", "agents": [agent("a", "beat")]}));
    let daemon = env.daemon(&[]);
    env.wait_event(&uuid, "agent_started", 1, LIMIT);
    let workspace = env.cell(&uuid).join("workspace");
    // The agent's own start file is written before it beats.
    env.wait_event(&uuid, "heartbeat", 1, LIMIT);
    populate(&workspace);
    std::fs::write(env.cell(&uuid).join("bus/outbox/msg.json"), b"{}").expect("write");
    let snapshot = tree(&workspace);
    let bus = tree(&env.cell(&uuid).join("bus"));

    let run = env.run(&["checkpoint", &uuid, "--json"]).success();
    let taken = run.json();
    let path = taken["path"].as_str().expect("path").to_string();
    assert!(
        path.starts_with("checkpoints/") && path.ends_with(".tar.gz"),
        "{taken}"
    );
    assert!(env.cell(&uuid).join(&path).is_file());
    let created = env.events_named(&uuid, "checkpoint_created");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["path"], json!(path));
    for field in ["bytes", "files", "took_ms"] {
        assert!(created[0][field].is_u64(), "{field}: {:?}", created[0]);
    }
    // Taken by the daemon, which froze the agent for it and thawed it.
    assert_eq!(
        created[0]["request_id"].as_str().map(|r| r.len() > 10),
        Some(true)
    );
    let list = env
        .run(&["checkpoint", "--list", &uuid, "--json"])
        .success()
        .json();
    assert_eq!(
        list["checkpoints"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert_eq!(list["checkpoints"][0]["manifest"]["cell"], json!(uuid));

    // The mission goes on, and goes wrong.
    std::fs::remove_dir_all(workspace.join("src")).expect("rm");
    std::fs::write(workspace.join("blob"), b"clobbered").expect("write");
    std::fs::write(workspace.join("stray"), b"stray").expect("write");
    std::fs::remove_file(env.cell(&uuid).join("bus/outbox/msg.json")).expect("rm");

    // Not under running agents.
    env.run(&["restore", &uuid, "latest"])
        .fails(1, "freeze it first");
    assert!(
        workspace.join("stray").exists(),
        "a refused restore changed files"
    );

    env.run(&["cell", "freeze", &uuid]).success();
    let run = env.run(&["restore", &uuid, "latest"]).success();
    assert!(run.stdout.contains("cell thaw"), "{run:#?}");
    assert_eq!(tree(&workspace), snapshot);
    assert_eq!(tree(&env.cell(&uuid).join("bus")), bus);
    let restored = env.events_named(&uuid, "checkpoint_restored");
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["path"], json!(path));

    // Thawed, the agent's old instance (working on replaced files) is
    // stopped and started again — not counted as a revival.
    env.run(&["cell", "thaw", &uuid]).success();
    let revived = env.wait_event(&uuid, "agent_revived", 1, LIMIT);
    assert_eq!(revived[0]["reason"], json!("restored"), "{revived:?}");
    wait_for("a healthy again", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == json!("healthy"))
    });
    assert_eq!(
        env.state(&uuid).expect("state")["agent_health"]["a"]["revive_count"],
        json!(0)
    );
    drop(daemon);
}

#[test]
fn without_a_daemon_the_command_takes_it_and_retention_keeps_checkpoints_keep() {
    let env = env("checkpoints_keep = 2");
    let uuid = env.create(&["--agent", "a"]);
    std::fs::write(env.cell(&uuid).join("workspace/notes.md"), b"# notes\n").expect("write");
    let mut names = Vec::new();
    for _ in 0..3 {
        let run = env.run(&["checkpoint", &uuid, "--json"]).success();
        names.push(run.json()["name"].as_str().expect("name").to_string());
    }
    let list = env
        .run(&["checkpoint", "--list", &uuid, "--json"])
        .success()
        .json();
    let kept: Vec<&str> = list["checkpoints"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(kept, [names[1].as_str(), names[2].as_str()]);
    let created = env.events_named(&uuid, "checkpoint_created");
    assert_eq!(created.len(), 3);
    assert_eq!(created[2]["pruned"], json!([names[0]]));
    let status = env.run(&["status", &uuid]).success();
    assert!(
        status
            .stdout
            .contains(&format!("checkpoints: 2, latest {}", names[2])),
        "{status:#?}"
    );
    let human = env.run(&["checkpoint", "--list", &uuid]).success();
    assert!(
        human.stdout.contains(&names[2]) && human.stdout.contains("manual"),
        "{human:#?}"
    );
    // An active cell is refused a restore with a clear message, a frozen
    // one (no daemon) is restored.
    env.run(&["restore", &uuid, &names[1]])
        .fails(1, "freeze it first");
    std::fs::write(env.cell(&uuid).join("workspace/notes.md"), b"lost\n").expect("write");
    env.run(&["restore", &uuid, &names[1], "--force"]).success();
    assert_eq!(env.manifest(&uuid)["status"], json!("frozen"));
    assert_eq!(
        std::fs::read(env.cell(&uuid).join("workspace/notes.md")).expect("read"),
        b"# notes\n"
    );
    env.run(&["restore", &uuid, "nope.tar.gz"])
        .fails(1, "not a checkpoint name");
}

/// A gzip'd tar of a manifest and `entries` as written (the tar crate
/// would refuse to write some of them).
fn hostile(cell: &str, entries: &[Raw<'_>]) -> Vec<u8> {
    let manifest = json!({
        "format": "lazarus-pit-checkpoint/1", "cell": cell,
        "created_at": "2026-01-01T00:00:00.000Z", "files": 1, "bytes": 5, "sha256": "x",
    });
    let json = serde_json::to_vec(&manifest).expect("json");
    let mut out = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    out.append_data(&mut h, "checkpoint.json", json.as_slice())
        .expect("manifest");
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.append(&h, *data).expect("entry");
    }
    out.into_inner().expect("tar").finish().expect("gz")
}

#[test]
fn a_crafted_archive_is_refused_and_nothing_outside_the_cell_changes() {
    let env = env("");
    let uuid = env.create(&["--agent", "a"]);
    env.run(&["cell", "freeze", &uuid]).success();
    let outside = env.tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(env.cell(&uuid).join("workspace/mine"), b"mine").expect("write");
    let target = outside.display().to_string();
    let cases: Vec<(&str, Vec<Raw<'_>>)> = vec![
        (
            "\"..\"",
            vec![(
                "workspace/../../../outside/x",
                tar::EntryType::Regular,
                b"pwned",
                "",
            )],
        ),
        (
            "an absolute path",
            vec![("/tmp/lazarus-pwned", tar::EntryType::Regular, b"pwned", "")],
        ),
        (
            "through the symlink",
            vec![
                ("workspace/s", tar::EntryType::Symlink, b"", target.as_str()),
                ("workspace/s/x", tar::EntryType::Regular, b"pwned", ""),
            ],
        ),
        (
            "device node",
            vec![("workspace/null", tar::EntryType::Char, b"", "")],
        ),
    ];
    for (i, (why, entries)) in cases.into_iter().enumerate() {
        let name = format!("20260101T00000{i}.000Z.tar.gz");
        std::fs::write(
            env.cell(&uuid).join("checkpoints").join(&name),
            hostile(&uuid, &entries),
        )
        .expect("write");
        let run = env.run(&["restore", &uuid, &name]).fails(1, why);
        assert!(run.stderr.contains("nothing was changed"), "{run:#?}");
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 0, "{why}");
        assert!(!Path::new("/tmp/lazarus-pwned").exists());
        assert_eq!(
            std::fs::read(env.cell(&uuid).join("workspace/mine")).expect("read"),
            b"mine"
        );
    }
    assert!(env.events_named(&uuid, "checkpoint_restored").is_empty());
}

/// Seconds between two events' `ts`.
fn between(a: &Value, b: &Value) -> f64 {
    let t = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().expect("ts"))
            .expect("rfc3339")
            .timestamp_millis() as f64
            / 1000.0
    };
    t(b) - t(a)
}

/// The `cell_status_changed` to `to`, waited for.
fn moved_to(env: &Env, uuid: &str, to: &str) -> Value {
    let find = || {
        env.events_named(uuid, "cell_status_changed")
            .into_iter()
            .find(|e| e["to"] == json!(to))
    };
    wait_for(&format!("{uuid} {to}"), LIMIT, || find().is_some());
    find().expect("moved")
}

#[test]
fn cell_timers_fire_at_their_deadlines() {
    let env = env("");
    // idle_timeout: the agent's status never changes after its first beat.
    let idle = env.create_from(&json!({
        "status": "active", "idle_timeout": 0.6, "agents": [agent("a", "beat")],
    }));
    // checkpoint_interval: snapshots of an active cell.
    let periodic = env.create_from(&json!({
        "status": "active", "checkpoint_interval": 1, "agents": [agent("b", "beat")],
    }));
    let daemon = env.daemon(&[]);
    // max_duration: counted from created_at.
    let short = env.create_from(&json!({
        "status": "active",
        "max_duration": 1.2,
        "agents": [agent("c", "beat")],
    }));

    let frozen = moved_to(&env, &idle, "frozen");
    let frozen = &frozen;
    assert_eq!(frozen["reason"], json!("idle"), "{frozen}");
    let beat = env.events_named(&idle, "heartbeat");
    let gap = between(&beat[0], frozen);
    assert!(gap >= 0.6, "frozen {gap:.3} s after the last status change");
    assert_eq!(env.manifest(&idle)["status"], json!("frozen"));
    wait_for("a frozen", LIMIT, || {
        env.state(&idle)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == json!("frozen"))
    });

    let snaps = env.wait_event(&periodic, "checkpoint_created", 2, LIMIT);
    assert!(
        snaps.iter().all(|e| e["reason"] == json!("interval")),
        "{snaps:?}"
    );
    let gap = between(&snaps[0], &snaps[1]);
    assert!(gap >= 1.0, "checkpoints {gap:.3} s apart");
    // Retention and the agent: still healthy, revive count untouched.
    assert_eq!(
        env.state(&periodic).expect("state")["agent_health"]["b"]["revive_count"],
        json!(0)
    );

    let archived = moved_to(&env, &short, "archived");
    assert_eq!(archived["reason"], json!("max_duration"));
    let at =
        chrono::DateTime::parse_from_rfc3339(archived["ts"].as_str().expect("ts")).expect("ts");
    // `cell create` stamps its own created_at (whole seconds).
    let stamped = env.manifest(&short)["created_at"]
        .as_str()
        .expect("created_at")
        .to_string();
    let created = chrono::DateTime::parse_from_rfc3339(&stamped).expect("created_at");
    let after = (at.timestamp_millis() - created.timestamp_millis()) as f64 / 1000.0;
    assert!(after >= 1.2, "archived {after:.3} s after created_at");
    // Its agent goes down with it.
    let pid = env.events_named(&short, "agent_started")[0]["pid"]
        .as_i64()
        .expect("pid") as i32;
    wait_for("c stopped", LIMIT, || !crate::harness::alive(pid));
    drop(daemon);
    for uuid in [&idle, &periodic, &short] {
        schema_valid(&env, uuid);
    }
}

#[test]
fn a_forced_restore_that_fails_leaves_the_cell_active() {
    let env = env("");
    let uuid = env.create(&["--agent", "a"]);
    env.run(&["restore", &uuid, "latest", "--force"])
        .fails(1, "no checkpoints");
    assert_eq!(env.manifest(&uuid)["status"], json!("active"));
    env.run(&["checkpoint", &uuid]).success();
    std::fs::write(
        env.cell(&uuid)
            .join("checkpoints/20260101T000000.000Z.tar.gz"),
        hostile(
            &uuid,
            &[("workspace/../x", tar::EntryType::Regular, b"x", "")],
        ),
    )
    .expect("write");
    let run = env
        .run(&["restore", &uuid, "20260101T000000.000Z.tar.gz", "--force"])
        .fails(1, "nothing was changed");
    assert!(run.stderr.contains("thawed again"), "{run:#?}");
    assert_eq!(env.manifest(&uuid)["status"], json!("active"));
}

#[test]
fn without_a_daemon_a_restore_stops_the_frozen_instances_and_the_next_daemon_starts_them() {
    let env = env("");
    let uuid = env.create_from(&json!({"status": "active", "agents": [agent("a", "beat")]}));
    let daemon = env.daemon(&[]);
    let old = env.pid_of(&uuid, "agent_started", "a", 1);
    env.run(&["checkpoint", &uuid]).success();
    env.run(&["cell", "freeze", &uuid]).success();
    daemon.stop(LIMIT);
    assert!(
        crate::harness::alive(old),
        "the daemon's stop left its agent running"
    );
    let run = env.run(&["restore", &uuid, "latest"]).success();
    assert!(run.stdout.contains("makes the daemon start"), "{run:#?}");
    wait_for("the old instance gone", LIMIT, || {
        !crate::harness::alive(old)
    });
    env.run(&["cell", "thaw", &uuid]).success();
    let _daemon = env.daemon(&[]);
    wait_for("a new instance", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]["a"]["state"] == json!("healthy")
                && s["agent_health"]["a"]["pid"]
                    .as_i64()
                    .is_some_and(|p| p as i32 != old)
        })
    });
}

#[test]
fn a_checkpoint_right_after_join_is_taken_and_one_before_archive_says_so() {
    let env = env("checkpoint_on_archive = true");
    std::fs::create_dir_all(&env.root).expect("root");
    let _daemon = env.daemon(&[]);
    for _ in 0..3 {
        let uuid = env.create(&[]);
        let script = crate::harness::repo_file("tests/agent.sh");
        env.run(&[
            "cell",
            "join",
            &uuid,
            "--agent",
            "a",
            "--",
            "/bin/sh",
            script.to_str().expect("utf-8"),
            "beat",
        ])
        .success();
        env.run(&["checkpoint", &uuid]).success();
        let run = env.run(&["cell", "archive", &uuid]).success();
        assert!(run.stderr.contains("checkpoint checkpoints/"), "{run:#?}");
        let reasons: Vec<Value> = env
            .events_named(&uuid, "checkpoint_created")
            .iter()
            .map(|e| e["reason"].clone())
            .collect();
        assert_eq!(reasons, [json!("manual"), json!("archive")]);
    }
    // An agent that breaks checkpoints/ cannot veto the archive.
    let uuid = env.create(&["--agent", "b"]);
    let dir = env.cell(&uuid).join("checkpoints");
    std::fs::remove_dir(&dir).expect("rmdir");
    std::fs::write(&dir, b"not a directory").expect("write");
    let run = env.run(&["cell", "archive", &uuid]).success();
    assert!(
        run.stderr.contains("no checkpoint before the archive"),
        "{run:#?}"
    );
    assert_eq!(env.manifest(&uuid)["status"], json!("archived"));
}

#[test]
fn checkpoints_asked_for_at_once_are_each_answered() {
    let env = env("");
    let uuid = env.create_from(&json!({"status": "active", "agents": [agent("a", "beat")]}));
    let _daemon = env.daemon(&[]);
    env.wait_event(&uuid, "agent_started", 1, LIMIT);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = env.command(&["checkpoint", &uuid]);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("spawn")
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One taken after several requests answers them all.
    let created = env.events_named(&uuid, "checkpoint_created").len();
    assert!((2..=3).contains(&created), "{created} checkpoints");
}

/// Whether a process is frozen: its cgroup's `cgroup.events` says so
/// (the freezer), or it is stopped (SIGSTOP, where there is no cgroup of
/// the agent's).
fn frozen(pid: i32) -> bool {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        });
    if let (Some(mount), Some(rel)) = (crate::harness::cgroup2_mount(), own)
        && rel.contains("/a-")
    {
        let events = std::fs::read_to_string(
            mount
                .join(rel.trim_start_matches('/'))
                .join("cgroup.events"),
        )
        .unwrap_or_default();
        return events.lines().any(|l| l == "frozen 1");
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ")?.1.chars().next())
        == Some('T')
}

/// BRIEF 7: SIGTERM exits within 2 s, leaving agents running — also
/// during a checkpoint, whose worker is killed, its temp file removed and
/// its frozen agents thawed.
#[test]
fn sigterm_during_a_checkpoint_exits_at_once_and_leaves_the_agents_running_thawed() {
    let env = env("");
    let uuid = env.create_from(&json!({"status": "active", "agents": [agent("a", "beat")]}));
    let daemon = env.daemon(&[]);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    // Slow to read, free to store: gigabytes of holes.
    let sparse = std::fs::File::create(env.cell(&uuid).join("workspace/sparse")).expect("create");
    sparse.set_len(1 << 30).expect("truncate");
    let mut cli = env.command(&["checkpoint", &uuid]);
    cli.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let cli = cli.spawn().expect("checkpoint");
    daemon.wait_log("taking a checkpoint", LIMIT);
    wait_for("a frozen for the checkpoint", LIMIT, || frozen(pid));
    let (status, took) = daemon.stop(LIMIT);
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    let out = cli.wait_with_output().expect("cli");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("none was kept"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The agent runs on, not frozen; nothing of the checkpoint is left.
    assert!(crate::harness::alive(pid));
    assert!(!frozen(pid), "left frozen");
    let left: Vec<_> = std::fs::read_dir(env.cell(&uuid).join("checkpoints"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}
