//! BRIEF sections 4, 6 and 8: `heartbeat` and `status`, without a daemon.

use std::os::unix::fs::symlink;

use serde_json::json;

use crate::harness::{Env, read_json};

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[test]
fn heartbeat_writes_every_field_atomically() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "claude"]);
    let before = now();
    env.run(&[
        "heartbeat",
        "--cell",
        &uuid[..8],
        "--agent",
        "claude",
        "--status",
        "thinking",
        "--cycle",
        "42",
        "--model",
        "m1",
        "--pid",
        "4242",
    ])
    .success();
    let dir = env.cell(&uuid).join(".lazarus/heartbeats");
    let hb = read_json(&dir.join("claude.json"));
    assert_eq!(hb["agent"], "claude");
    assert_eq!(hb["pid"], 4242);
    assert_eq!(hb["cycle"], 42);
    assert_eq!(hb["model"], "m1");
    assert_eq!(hb["status"], "thinking");
    assert_eq!(hb["cell_uuid"], uuid);
    let ts = hb["timestamp"].as_f64().expect("float timestamp");
    assert!(ts >= before - 0.01 && ts <= now() + 0.01, "{ts}");
    // Only the heartbeat: no temp file left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["claude.json"]);
}

#[test]
fn heartbeat_defaults_come_from_the_agent_environment() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "worker"]);
    let mut cmd = env.command(&["heartbeat", "--status", "idle"]);
    cmd.env("LAZARUS_CELL_UUID", &uuid)
        .env("LAZARUS_AGENT", "worker");
    env.run_cmd(cmd, &["heartbeat"]).success();
    let hb = read_json(&env.cell(&uuid).join(".lazarus/heartbeats/worker.json"));
    assert_eq!(hb["status"], "idle");
    // Without --pid, the pid is the caller's (the agent that ran the command).
    assert_eq!(hb["pid"], std::process::id());

    env.run(&["heartbeat", "--agent", "worker"])
        .fails(2, "LAZARUS_CELL_UUID");
    env.run(&["heartbeat", "--cell", &uuid])
        .fails(2, "LAZARUS_AGENT");
}

#[test]
fn heartbeat_honours_lazarus_heartbeat_file() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "worker"]);
    let file = env.cell(&uuid).join(".lazarus/heartbeats/worker.json");
    // The daemon's environment: root not known to the agent, file path is.
    let mut cmd = env.command(&["heartbeat", "--status", "s"]);
    cmd.env_remove("LAZARUS_ROOT")
        .env("LAZARUS_ROOT", "/nonexistent-root")
        .env("LAZARUS_CELL_UUID", &uuid)
        .env("LAZARUS_AGENT", "worker")
        .env("LAZARUS_HEARTBEAT_FILE", &file);
    env.run_cmd(cmd, &["heartbeat"]).success();
    let hb = read_json(&file);
    assert_eq!(hb["agent"], "worker");
    assert_eq!(hb["cell_uuid"], uuid);
}

#[test]
fn heartbeat_never_writes_through_a_symlinked_directory() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a"]);
    let outside = tempfile::tempdir().expect("tempdir");
    let hb_dir = env.cell(&uuid).join(".lazarus/heartbeats");
    std::fs::remove_dir(&hb_dir).expect("rmdir");
    symlink(outside.path(), &hb_dir).expect("symlink");
    env.run(&["heartbeat", "--cell", &uuid, "--agent", "a"])
        .fails(1, "symlink");
    assert_eq!(std::fs::read_dir(outside.path()).expect("dir").count(), 0);
}

#[test]
fn status_shows_state_age_and_revives_without_a_daemon() {
    let env = Env::new();
    let uuid = env.create(&[
        "--mission",
        "M",
        "--agent",
        "fresh",
        "--agent",
        "old",
        "--agent",
        "silent",
    ]);
    env.run(&[
        "heartbeat",
        "--cell",
        &uuid,
        "--agent",
        "fresh",
        "--status",
        "coding",
    ])
    .success();
    let hb_dir = env.cell(&uuid).join(".lazarus/heartbeats");
    std::fs::write(
        hb_dir.join("old.json"),
        json!({"timestamp": now() - 3600.0, "status": "lost"}).to_string(),
    )
    .expect("write");
    let v = env.run(&["status", "--json"]).reported().json();
    let agents = &v["cells"][0]["agents"];
    assert_eq!(v["cells"][0]["uuid"], uuid);
    assert_eq!(v["cells"][0]["daemon_pid"], json!(null));
    assert_eq!(agents[0]["state"], "healthy");
    assert_eq!(agents[0]["healthy"], true);
    assert_eq!(agents[0]["heartbeat_status"], "coding");
    assert!(agents[0]["heartbeat_age_s"].as_f64().expect("age") < 30.0);
    assert_eq!(agents[1]["state"], "stale");
    assert!(agents[1]["heartbeat_age_s"].as_f64().expect("age") >= 3599.0);
    assert_eq!(agents[2]["state"], "unknown");
    assert_eq!(agents[2]["last_seen"], json!(null));

    let table = env.run(&["--status"]).reported().stdout;
    assert!(table.contains("daemon: not running"), "{table}");
    for needle in [
        "fresh",
        "healthy",
        "coding",
        "old",
        "stale",
        "1h 0m ago",
        "silent",
        "never",
    ] {
        assert!(table.contains(needle), "{needle} missing in\n{table}");
    }
    let one = env.run(&["status", &uuid[..6], "--json"]).reported().json();
    assert_eq!(one["cells"].as_array().map(Vec::len), Some(1));
}

#[test]
fn status_uses_cell_thresholds_and_clamps_future_heartbeats() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a", "--agent", "b"]);
    env.edit_manifest(&uuid, |m| m["heartbeat_stale_threshold"] = json!(5));
    let hb_dir = env.cell(&uuid).join(".lazarus/heartbeats");
    std::fs::write(
        hb_dir.join("a.json"),
        json!({"timestamp": now() - 10.0}).to_string(),
    )
    .expect("write");
    std::fs::write(
        hb_dir.join("b.json"),
        json!({"timestamp": now() + 1e6}).to_string(),
    )
    .expect("write");
    let v = env.run(&["status", "--json"]).reported().json();
    let agents = &v["cells"][0]["agents"];
    assert_eq!(agents[0]["state"], "stale", "10 s old with a 5 s threshold");
    assert_eq!(agents[1]["state"], "healthy");
    assert!(
        agents[1]["last_seen"].as_f64().expect("seen") <= now() + 1.0,
        "clamped"
    );
}

#[test]
fn status_refuses_a_symlinked_heartbeat() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a"]);
    let outside = tempfile::tempdir().expect("tempdir");
    let target = outside.path().join("hb.json");
    std::fs::write(
        &target,
        json!({"timestamp": now(), "status": "forged"}).to_string(),
    )
    .expect("write");
    symlink(&target, env.cell(&uuid).join(".lazarus/heartbeats/a.json")).expect("symlink");
    let v = env.run(&["status", "--json"]).success().json();
    let a = &v["cells"][0]["agents"][0];
    assert_eq!(a["state"], "unknown");
    assert_eq!(a["heartbeat_status"], json!(null));
    assert!(
        a["problem"].as_str().expect("problem").contains("symlink"),
        "{a}"
    );
    let table = env.run(&["status"]).success().stdout;
    assert!(table.contains("symlink, refused"), "{table}");
}

#[test]
fn status_tolerates_half_written_and_hostile_heartbeats() {
    let env = Env::new();
    let uuid = env.create(&[
        "--agent", "torn", "--agent", "fifo", "--agent", "huge", "--agent", "dir",
    ]);
    let hb_dir = env.cell(&uuid).join(".lazarus/heartbeats");
    std::fs::write(hb_dir.join("torn.json"), "{\"timestamp\": 17").expect("write");
    nix::unistd::mkfifo(&hb_dir.join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
    std::fs::write(hb_dir.join("huge.json"), vec![b' '; 200_000]).expect("write");
    std::fs::create_dir(hb_dir.join("dir.json")).expect("mkdir");
    let v = env.run(&["status", "--json"]).success().json();
    let agents = v["cells"][0]["agents"].as_array().expect("agents").clone();
    assert_eq!(
        agents[0]["problem"],
        json!(null),
        "a torn write is not a problem"
    );
    assert!(agents[1]["problem"].as_str().expect("p").contains("FIFO"));
    assert!(agents[2]["problem"].as_str().expect("p").contains("bytes"));
    assert!(
        agents[3]["problem"]
            .as_str()
            .expect("p")
            .contains("directory")
    );
    assert!(agents.iter().all(|a| a["state"] == "unknown"));
}

#[test]
fn status_takes_states_from_the_state_file_of_the_daemon_holding_the_lock() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a"]);
    let state = json!({
        "cell_uuid": uuid, "daemon_pid": std::process::id(), "last_poll": now(),
        "agent_health": {"a": {"healthy": false, "last_seen": null, "revive_count": 2,
                               "state": "reviving", "pid": 777}}
    });
    std::fs::write(
        env.cell(&uuid).join(".lazarus/state.json"),
        state.to_string(),
    )
    .expect("write");
    // Naming a live process is not enough: no daemon holds the root's lock.
    let v = env.run(&["status", "--json"]).success().json();
    assert_eq!(v["cells"][0]["daemon_pid"], json!(null));
    assert_eq!(v["cells"][0]["agents"][0]["state"], "unknown");
    // The test process stands in for a running daemon: it takes the lock.
    let root = lazarus_pit::store::Dir::open(&env.root).expect("root");
    let _lock = lazarus_pit::daemon::lock::RootLock::acquire(&root).expect("lock");
    let v = env.run(&["status", "--json"]).reported().json();
    let a = &v["cells"][0]["agents"][0];
    assert_eq!(v["cells"][0]["daemon_pid"], std::process::id());
    assert_eq!(
        v["cells"][0]["source"], "state.json",
        "its records are not there"
    );
    assert_eq!(a["state"], "reviving");
    assert_eq!(a["revive_count"], 2);
    assert_eq!(a["pid"], 777);
    // A forged "healthy" for an agent whose heartbeat is an hour old (an
    // agent hiding its hang from a monitor) is not believed: the heartbeat
    // file says stale, and so do the table, the exit code and the metrics.
    let mut forged = state.clone();
    forged["agent_health"]["a"] = json!({"healthy": true, "last_seen": now(), "revive_count": 0, "state": "healthy", "pid": null});
    std::fs::write(
        env.cell(&uuid).join(".lazarus/state.json"),
        forged.to_string(),
    )
    .expect("write");
    env.beat_at(&uuid, "a", now() - 3600.0, "hung");
    let run = env.run(&["status", "--json"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.json()["cells"][0]["agents"][0]["state"], "stale");
    let metrics = env.run(&["metrics"]).success().stdout;
    assert!(
        metrics.contains("lazarus_pit_agents{state=\"stale\"} 1")
            && metrics.contains("lazarus_pit_agents{state=\"healthy\"} 0"),
        "{metrics}"
    );
    // Nor any other claim that all is well.
    for claim in ["exited", "frozen", "unknown"] {
        forged["agent_health"]["a"]["state"] = claim.into();
        forged["agent_health"]["a"]["healthy"] = false.into();
        std::fs::write(
            env.cell(&uuid).join(".lazarus/state.json"),
            forged.to_string(),
        )
        .expect("write");
        let run = env.run(&["status", "--json"]);
        assert_eq!(run.code, Some(1), "{claim}: {run:#?}");
        assert_eq!(
            run.json()["cells"][0]["agents"][0]["state"],
            "stale",
            "{claim}"
        );
    }
}

#[test]
fn status_skips_archived_cells_unless_named() {
    let env = Env::new();
    let live = env.create(&["--agent", "a"]);
    let old = env.create(&["--agent", "a"]);
    env.run(&["cell", "archive", &old]).success();
    let v = env.run(&["status", "--json"]).success().json();
    assert_eq!(v["cells"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["cells"][0]["uuid"], live);
    let v = env.run(&["status", &old, "--json"]).success().json();
    assert_eq!(v["cells"][0]["status"], "archived");
}

#[test]
fn events_prints_the_stream() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a"]);
    let raw = env.run(&["events", &uuid, "--json"]).success().stdout;
    assert_eq!(raw.lines().count(), 3);
    let readable = env.run(&["events", &uuid]).success().stdout;
    assert!(
        readable.contains("agent_joined") && readable.contains("agent=a"),
        "{readable}"
    );
    let none = env
        .run(&["events", "--since", "2999-01-01T00:00:00Z"])
        .success()
        .stdout;
    assert_eq!(none, "");
    env.run(&["events", "--since", "yesterday"])
        .fails(2, "--since");
}
