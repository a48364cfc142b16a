//! BRIEF sections 5–7: the daemon, driven through the real binary with
//! sub-second thresholds. Waits are for conditions, with deadlines.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::harness::{Env, now, read_json, wait_for};

/// Generous: the machine running the tests may be busy.
const LIMIT: Duration = Duration::from_secs(15);
const STALE: f64 = 0.4;

fn fast(env: &Env) {
    env.config(&format!(
        "[cells]\nheartbeat_stale_threshold = {STALE}\nresurrect_after = 0.8\npoll_interval = 30\n"
    ));
}

fn ts(event: &Value) -> f64 {
    let t =
        chrono::DateTime::parse_from_rfc3339(event["ts"].as_str().expect("ts")).expect("rfc3339");
    t.timestamp_millis() as f64 / 1000.0
}

#[test]
fn a_cell_created_after_start_is_picked_up() {
    let env = Env::new();
    fast(&env);
    std::fs::create_dir_all(&env.root).expect("root");
    let _d = env.daemon(&[]);
    let uuid = env.create(&["--agent", "a"]);
    // Never beats: stale counted from when the daemon first saw it.
    let stale = env.wait_event(&uuid, "agent_stale", 1, LIMIT);
    assert_eq!(stale[0]["agent"], "a");
    assert_eq!(stale[0]["last_seen"], Value::Null);
    assert!(stale[0]["age_s"].as_f64().expect("age") >= STALE);
    wait_for("state.json", LIMIT, || env.state(&uuid).is_some());
}

#[test]
fn stale_no_earlier_than_the_threshold_then_recovered() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a"]);
    let _d = env.daemon(&[]);
    env.beat(&uuid, "a", "working");
    let beat_at = now();
    let stale = env.wait_event(&uuid, "agent_stale", 1, LIMIT);
    let last_seen = stale[0]["last_seen"].as_f64().expect("last_seen");
    assert!((last_seen - beat_at).abs() < 0.05, "{stale:?}");
    assert!(
        ts(&stale[0]) - last_seen >= STALE - 0.001,
        "stale too early: {stale:?}"
    );
    assert!(stale[0]["age_s"].as_f64().expect("age") >= STALE);
    env.beat(&uuid, "a", "working");
    env.wait_event(&uuid, "agent_recovered", 1, LIMIT);
    wait_for("healthy in state.json", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == "healthy")
    });
    let status = env.run(&["status", "--json"]).success().json();
    assert_eq!(status["cells"][0]["agents"][0]["state"], "healthy");
    assert!(status["cells"][0]["daemon_pid"].is_number());
}

#[test]
fn heartbeat_status_changes_become_events() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 60\n");
    let uuid = env.create(&["--agent", "a"]);
    let _d = env.daemon(&[]);
    // Each new status is waited for before the next beat; a repeated one
    // has no event of its own to wait for, and the next change is its
    // witness: had it made one, it would come before.
    let mut changes = 0;
    for (status, changed) in [
        ("thinking", true),
        ("thinking", false),
        ("coding", true),
        ("coding", false),
        ("thinking", true),
        ("done", true),
    ] {
        env.beat(&uuid, "a", status);
        if changed {
            changes += 1;
            env.wait_event(&uuid, "heartbeat", changes, LIMIT);
        }
    }
    let statuses: Vec<Value> = env
        .events_named(&uuid, "heartbeat")
        .iter()
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!("thinking"),
            json!("coding"),
            json!("thinking"),
            json!("done")
        ]
    );
}

#[test]
fn torn_heartbeats_at_20_hz_never_cause_a_false_stale() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 1.0\nresurrect_after = 2\n");
    let uuid = env.create(&["--agent", "a"]);
    env.beat(&uuid, "a", "start");
    let _d = env.daemon(&[]);
    let path = env.cell(&uuid).join(".lazarus/heartbeats/a.json");
    let start = Instant::now();
    let mut parses = 0;
    while start.elapsed() < Duration::from_secs(3) {
        // Truncate, then write in two pieces: readers may see empty or half.
        let body = json!({"agent": "a", "timestamp": now(), "status": "busy"}).to_string();
        let mut f = std::fs::File::create(&path).expect("truncate");
        let (head, tail) = body.split_at(body.len() / 2);
        f.write_all(head.as_bytes()).expect("write");
        f.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(2));
        f.write_all(tail.as_bytes()).expect("write");
        drop(f);
        // state.json always parses while heartbeats churn.
        if let Ok(text) = std::fs::read_to_string(env.cell(&uuid).join(".lazarus/state.json")) {
            serde_json::from_str::<Value>(&text).expect("state.json parses");
            parses += 1;
        }
        std::thread::sleep(Duration::from_millis(48));
    }
    assert!(parses > 10);
    assert_eq!(env.events_named(&uuid, "agent_stale"), Vec::<Value>::new());
    assert_eq!(
        env.events_named(&uuid, "invalid_input"),
        Vec::<Value>::new()
    );
}

#[test]
fn state_json_always_parses_under_churn() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 5\n");
    let uuid = env.create(&["--agent", "a", "--agent", "b"]);
    let _d = env.daemon(&[]);
    let writer_env = env.cell(&uuid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let writer = std::thread::spawn(move || {
        let dir = writer_env.join(".lazarus/heartbeats");
        let mut i = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for agent in ["a", "b"] {
                let tmp = dir.join(format!(".{agent}.tmp"));
                let body = json!({"timestamp": now(), "status": format!("s{}", i % 3)});
                std::fs::write(&tmp, body.to_string()).expect("write");
                std::fs::rename(&tmp, dir.join(format!("{agent}.json"))).expect("rename");
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let state = env.cell(&uuid).join(".lazarus/state.json");
    let start = Instant::now();
    let mut reads = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(text) = std::fs::read_to_string(&state) {
            let v: Value = serde_json::from_str(&text).expect("state.json parses");
            assert_eq!(v["cell_uuid"], uuid);
            reads += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(reads > 100, "{reads}");
}

#[test]
fn an_agent_added_by_a_temp_and_rename_edit_is_picked_up() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a"]);
    env.beat(&uuid, "a", "x");
    let _d = env.daemon(&[]);
    let path = env.cell(&uuid).join("cell.json");
    let mut m = read_json(&path);
    m["agents"]
        .as_array_mut()
        .expect("agents")
        .push(json!({"name": "late"}));
    // As editors save: write a temp file, rename it over cell.json.
    let tmp = env.cell(&uuid).join(".cell.json.swp");
    std::fs::write(&tmp, m.to_string()).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    wait_for("late in state.json", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"].get("late").is_some())
    });
    let stale = env.wait_event(&uuid, "agent_stale", 2, LIMIT);
    assert!(stale.iter().any(|e| e["agent"] == "late"));
}

#[test]
fn a_provisioned_cell_becomes_active_when_an_agent_is_added_by_hand() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&[]);
    let _d = env.daemon(&[]);
    env.edit_manifest(&uuid, |m| m["agents"] = json!([{"name": "hand"}]));
    wait_for("active", LIMIT, || {
        env.manifest(&uuid)["status"] == "active"
    });
    let changes = env.wait_event(&uuid, "cell_status_changed", 1, LIMIT);
    assert_eq!(
        (changes[0]["from"].as_str(), changes[0]["to"].as_str()),
        (Some("provisioned"), Some("active"))
    );
    env.wait_event(&uuid, "agent_stale", 1, LIMIT);
    // Witness: a heartbeat written now is read after the daemon's own
    // rewrite of cell.json (inotify keeps the order), so once it is
    // recovered, a second record of the move would be there.
    env.beat(&uuid, "hand", "back");
    env.wait_event(&uuid, "agent_recovered", 1, LIMIT);
    assert_eq!(
        env.events_named(&uuid, "cell_status_changed").len(),
        1,
        "recorded once"
    );
}

#[test]
fn status_edited_to_archived_stops_monitoring() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a"]);
    env.beat(&uuid, "a", "x");
    let _d = env.daemon(&[]);
    env.edit_manifest(&uuid, |m| m["status"] = json!("archived"));
    let changed = env.wait_event(&uuid, "cell_status_changed", 2, LIMIT);
    assert_eq!(changed[1]["to"], "archived");
    assert_eq!(
        changed[1]["observed"], true,
        "a hand edit is recorded by the daemon"
    );
    // A witness cell created now, whose agent never beats, goes stale
    // later than the archived cell's agent would have (it beat before the
    // daemon started): once the witness is stale, the window is covered.
    let witness = env.create(&["--agent", "w"]);
    env.wait_event(&witness, "agent_stale", 1, LIMIT);
    assert_eq!(env.events_named(&uuid, "agent_stale"), Vec::<Value>::new());
}

#[test]
fn a_cli_status_change_is_not_recorded_twice() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a"]);
    env.beat(&uuid, "a", "x");
    let d = env.daemon(&[]);
    env.run(&["cell", "freeze", &uuid]).success();
    // Witness: a heartbeat written after the freeze is read after it.
    env.beat(&uuid, "a", "after-the-freeze");
    wait_for("the heartbeat after the freeze", LIMIT, || {
        env.events_named(&uuid, "heartbeat")
            .iter()
            .any(|e| e["status"] == "after-the-freeze")
    });
    let changes = env.events_named(&uuid, "cell_status_changed");
    assert_eq!(
        changes.len(),
        2,
        "create + freeze, not a third: {changes:?}\n{}",
        d.log()
    );
    // Monitoring goes on in a frozen cell; a due agent is held as frozen.
    wait_for("frozen", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == "frozen")
    });
}

#[test]
fn a_second_daemon_is_refused_and_sigterm_exits_promptly() {
    let env = Env::new();
    fast(&env);
    let pid_file = env.tmp.path().join("lp.pid");
    env.config(&format!(
        "[daemon]\npid_file = {:?}\n",
        pid_file.to_str().expect("utf8")
    ));
    env.create(&["--agent", "a"]);
    let d = env.daemon(&[]);
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file").trim(),
        d.pid().to_string()
    );
    let second = env.run(&["daemon"]);
    assert_eq!(second.code, Some(1), "{second:#?}");
    assert!(
        second.stderr.contains(&format!("pid {}", d.pid())),
        "{second:#?}"
    );
    let (status, took) = d.stop(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!pid_file.exists(), "pid file removed");
}

#[test]
fn bare_lazarus_pit_runs_the_daemon() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a"]);
    let mut cmd = env.command(&[]);
    cmd.env("RUST_LOG", "info")
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.wait_event(&uuid, "agent_stale", 1, LIMIT);
    }));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGTERM,
    );
    let status = child.wait().expect("wait");
    assert!(found.is_ok());
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_deleted_cell_does_not_stop_the_daemon() {
    let env = Env::new();
    fast(&env);
    let doomed = env.create(&["--agent", "a"]);
    let d = env.daemon(&[]);
    std::fs::remove_dir_all(env.cell(&doomed)).expect("rm");
    let other = env.create(&["--agent", "b"]);
    env.wait_event(&other, "agent_stale", 1, LIMIT);
    assert!(!env.cell(&doomed).exists(), "never recreated by the daemon");
    let (status, _) = d.stop(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn hostile_inputs_become_invalid_input_and_others_carry_on() {
    let env = Env::new();
    fast(&env);
    let good = env.create(&["--agent", "ok"]);
    let bad = env.create(&[
        "--agent", "link", "--agent", "fifo", "--agent", "dir", "--agent", "big",
    ]);
    let hb = env.cell(&bad).join(".lazarus/heartbeats");
    let outside = env.tmp.path().join("outside.json");
    std::fs::write(&outside, json!({"timestamp": now() + 1e6}).to_string()).expect("write");
    symlink(&outside, hb.join("link.json")).expect("symlink");
    nix::unistd::mkfifo(&hb.join("fifo.json"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
    std::fs::create_dir(hb.join("dir.json")).expect("mkdir");
    let f = std::fs::File::create(hb.join("big.json")).expect("create");
    f.set_len(50 * 1024 * 1024).expect("50 MB");
    let corrupt = env.create(&["--agent", "c"]);
    std::fs::write(
        env.cell(&corrupt).join("cell.json"),
        "{ \"agents\": [ garbage",
    )
    .expect("write");
    let huge = env.create(&["--agent", "h"]);
    std::fs::write(
        env.cell(&huge).join("cell.json"),
        vec![b' '; 2 * 1024 * 1024],
    )
    .expect("write");
    let mismatch = env.create(&["--agent", "m"]);
    env.edit_manifest(&mismatch, |m| {
        m["uuid"] = json!("00000000-0000-4000-8000-000000000000");
    });

    let d = env.daemon(&[]);
    env.beat(&good, "ok", "fine");
    let invalid = env.wait_event(&bad, "invalid_input", 4, LIMIT);
    let mut paths: Vec<&str> = invalid
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            ".lazarus/heartbeats/big.json",
            ".lazarus/heartbeats/dir.json",
            ".lazarus/heartbeats/fifo.json",
            ".lazarus/heartbeats/link.json"
        ]
    );
    let by_path =
        |p: &str| invalid.iter().find(|e| e["path"] == p).expect("event")["error"].to_string();
    assert!(by_path(".lazarus/heartbeats/link.json").contains("symlink"));
    assert!(by_path(".lazarus/heartbeats/fifo.json").contains("FIFO"));
    assert!(by_path(".lazarus/heartbeats/big.json").contains("bytes"));
    for cell in [&corrupt, &huge, &mismatch] {
        let e = env.wait_event(cell, "invalid_input", 1, LIMIT);
        assert_eq!(e[0]["path"], "cell.json");
    }
    // The symlinked heartbeat (far in the future) was not believed.
    wait_for("link stale", LIMIT, || {
        env.events_named(&bad, "agent_stale")
            .iter()
            .any(|e| e["agent"] == "link")
    });
    // The good cell carries on. Its agent beat after the daemon started, so
    // it goes stale after the mismatched cell's agent (never heard from)
    // would have, had that cell been monitored: it is not.
    env.wait_event(&good, "agent_stale", 1, LIMIT);
    assert_eq!(
        env.events_named(&mismatch, "agent_stale"),
        Vec::<Value>::new()
    );
    // Writing the same bad file again is not reported again (rate limit).
    std::fs::write(
        env.cell(&corrupt).join("cell.json"),
        "{ \"agents\": [ garbage",
    )
    .expect("write");
    // Witness: a heartbeat written after it, in another cell, is read
    // after it (one inotify queue, in order).
    env.beat(&good, "ok", "after-the-rewrite");
    wait_for("the witness heartbeat", LIMIT, || {
        env.events_named(&good, "heartbeat")
            .iter()
            .any(|e| e["status"] == "after-the-rewrite")
    });
    assert_eq!(env.events_named(&corrupt, "invalid_input").len(), 1);
    let mut d = d;
    assert!(d.running());
    // A fixed manifest is taken up.
    let fixed = json!({"uuid": corrupt, "status": "active", "agents": [{"name": "c"}]});
    std::fs::write(env.cell(&corrupt).join("cell.json"), fixed.to_string()).expect("write");
    env.wait_event(&corrupt, "agent_stale", 1, LIMIT);
}

#[test]
fn a_missing_root_is_waited_for_and_a_removed_root_survived() {
    let env = Env::new();
    fast(&env);
    let d = env.spawn_daemon(&[]);
    d.wait_log("does not exist; waiting", LIMIT);
    std::fs::create_dir_all(&env.root).expect("mkdir");
    d.wait_log("ready:", LIMIT);
    let first = env.create(&["--agent", "a"]);
    env.wait_event(&first, "agent_stale", 1, LIMIT);
    std::fs::remove_dir_all(&env.root).expect("rm root");
    d.wait_log("was removed; waiting", LIMIT);
    std::fs::create_dir_all(&env.root).expect("mkdir");
    let second = env.create(&["--agent", "b"]);
    env.wait_event(&second, "agent_stale", 1, LIMIT);
    let (status, _) = d.stop(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn once_reports_and_exits_by_health() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a", "--agent", "b"]);
    env.beat(&uuid, "a", "ok");
    env.beat_at(&uuid, "b", now() - 60.0, "old");
    let run = env.run(&["daemon", "--once"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let stale = env.events_named(&uuid, "agent_stale");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0]["agent"], "b");
    let state = env.state(&uuid).expect("state written");
    assert_eq!(state["agent_health"]["a"]["state"], "healthy");
    assert_eq!(state["agent_health"]["b"]["state"], "stale");
    // Run again (cron): nothing new is reported for the same silence.
    env.run(&["daemon", "--once"]);
    assert_eq!(env.events_named(&uuid, "agent_stale").len(), 1);
    env.beat(&uuid, "b", "back");
    let run = env.run(&["daemon", "--once"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(env.events_named(&uuid, "agent_recovered").len(), 1);
}

#[test]
fn sighup_reloads_thresholds_without_losing_state() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 600\n");
    let uuid = env.create(&["--agent", "a"]);
    env.beat(&uuid, "a", "x");
    let d = env.daemon(&[]);
    // Witness: a cell whose own threshold is 0.3 s, first seen after a's
    // last beat, goes stale; a, silent for longer, is not (600 s apply).
    let witness = env.create(&["--agent", "w"]);
    env.edit_manifest(&witness, |m| m["heartbeat_stale_threshold"] = json!(0.3));
    env.wait_event(&witness, "agent_stale", 1, LIMIT);
    assert_eq!(env.events_named(&uuid, "agent_stale"), Vec::<Value>::new());
    env.config("[cells]\nheartbeat_stale_threshold = 0.3\n");
    d.signal(Signal::SIGHUP);
    d.wait_log("configuration reloaded", LIMIT);
    let stale = env.wait_event(&uuid, "agent_stale", 1, LIMIT);
    assert!(
        stale[0]["last_seen"].is_number(),
        "last_seen kept across the reload"
    );
}

#[test]
fn poll_mode_still_sees_heartbeats_and_never_false_stale() {
    let env = Env::new();
    env.config(
        "[cells]\nwatch = \"poll\"\npoll_interval = 0.2\nheartbeat_stale_threshold = 0.6\nresurrect_after = 5\n",
    );
    let uuid = env.create(&["--agent", "a"]);
    env.beat(&uuid, "a", "one");
    let d = env.daemon(&[]);
    assert!(d.log().contains("polling"), "{}", d.log());
    // Beats faster than the threshold but unseen by inotify: the check at
    // the deadline re-reads the file, so no false stale.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        env.beat(&uuid, "a", "one");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(env.events_named(&uuid, "agent_stale"), Vec::<Value>::new());
    env.wait_event(&uuid, "agent_stale", 1, LIMIT);
    env.beat(&uuid, "a", "two");
    env.wait_event(&uuid, "agent_recovered", 1, LIMIT);
}

#[test]
fn a_restarted_daemon_does_not_repeat_stale() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a"]);
    env.beat_at(&uuid, "a", now() - 30.0, "gone");
    let d = env.daemon(&[]);
    env.wait_event(&uuid, "agent_stale", 1, LIMIT);
    wait_for("state written", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == "stale")
    });
    d.stop(Duration::from_secs(5));
    let d = env.daemon(&[]);
    // The new daemon has read the cell (and would have reported then)
    // once it has written its own state.json.
    let pid = d.pid();
    wait_for("state.json of the new daemon", LIMIT, || {
        env.state(&uuid).is_some_and(|s| s["daemon_pid"] == pid)
    });
    assert_eq!(
        env.events_named(&uuid, "agent_stale").len(),
        1,
        "{}",
        d.log()
    );
}

#[test]
fn daemon_output_matches_the_schemas() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a", "--agent", "b"]);
    let _d = env.daemon(&[]);
    env.beat(&uuid, "a", "x");
    env.wait_event(&uuid, "agent_stale", 2, LIMIT);
    env.beat(&uuid, "a", "y");
    env.wait_event(&uuid, "agent_recovered", 1, LIMIT);
    std::fs::write(
        env.cell(&uuid).join(".lazarus/heartbeats/b.json"),
        "not json",
    )
    .expect("write");
    env.wait_event(&uuid, "invalid_input", 1, LIMIT);
    wait_for("state.json", LIMIT, || env.state(&uuid).is_some());
    let state_schema = crate::section_schemas::validator("state");
    let state = env.state(&uuid).expect("state");
    assert!(state_schema.is_valid(&state), "{state:#}");
    let event_schema = crate::section_schemas::validator("event");
    for event in env.events(&uuid) {
        assert!(event_schema.is_valid(&event), "{event}");
    }
}

#[test]
fn systemd_hears_ready_status_and_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new();
    fast(&env);
    env.create(&["--agent", "a"]);
    let socket_path = env.tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind");
    socket.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut cmd = env.command(&["daemon"]);
    cmd.env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut heard = String::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while !(heard.contains("READY=1") && heard.contains("STATUS=") && heard.contains("WATCHDOG=1"))
    {
        assert!(start.elapsed() < LIMIT, "heard only {heard:?}");
        let n = socket.recv(&mut buf).expect("datagram");
        heard.push_str(&String::from_utf8_lossy(&buf[..n]));
        heard.push('\n');
    }
    assert!(heard.contains("1 cells, 1 agents"), "{heard}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGTERM,
    );
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[test]
fn a_cell_renamed_while_watched_is_let_go() {
    let env = Env::new();
    fast(&env);
    let uuid = env.create(&["--agent", "a"]);
    env.beat(&uuid, "a", "x");
    let mut d = env.daemon(&[]);
    let moved = "0000aaaa-0000-4000-8000-000000000001";
    std::fs::rename(env.cell(&uuid), env.cell(moved)).expect("rename");
    // Under its new name its uuid disagrees with the directory: refused.
    let refused = env.wait_event(moved, "invalid_input", 1, LIMIT);
    assert!(
        refused[0]["error"]
            .as_str()
            .expect("error")
            .contains("disagrees")
    );
    // Witness: a cell created now goes stale later than the moved cell's
    // agent (it beat before the daemon started) would have, had it been
    // monitored.
    let witness = env.create(&["--agent", "w"]);
    env.wait_event(&witness, "agent_stale", 1, LIMIT);
    assert_eq!(env.events_named(moved, "agent_stale"), Vec::<Value>::new());
    assert!(d.running());
    // Moved back, it is monitored again.
    std::fs::rename(env.cell(moved), env.cell(&uuid)).expect("rename");
    env.wait_event(&uuid, "agent_stale", 1, LIMIT);
}

#[test]
fn an_agent_holding_the_cell_lock_hangs_neither_daemon_nor_cli() {
    use nix::fcntl::{Flock, FlockArg};
    let env = Env::new();
    fast(&env);
    let held = env.create(&[]);
    let other = env.create(&["--agent", "b"]);
    let d = env.daemon(&[]);
    // The "agent" takes the lock of its cell directory and keeps it.
    let dir = std::fs::File::open(env.cell(&held)).expect("open dir");
    let _lock = Flock::lock(dir, FlockArg::LockExclusive).expect("flock");
    // Activating the provisioned cell needs the lock: the daemon gives up
    // quickly and carries on with everything else.
    let add_agent = |m: &mut Value| m["agents"] = json!([{"name": "a"}]);
    env.edit_manifest(&held, add_agent);
    env.beat(&other, "b", "working");
    env.wait_event(&other, "heartbeat", 1, LIMIT);
    env.wait_event(&other, "agent_stale", 1, LIMIT);
    let start = Instant::now();
    let run = env.run(&["cell", "join", &held, "--agent", "x"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    // The message names the holder (here the test process itself).
    assert!(
        run.stderr
            .contains(&format!("is locked by pid {}", std::process::id())),
        "{run:#?}"
    );
    assert!(start.elapsed() < Duration::from_secs(15));
    drop(_lock);
    // Once the lock is free, the next rescan activates it (the test's
    // poll_interval is long, so nudge it with an edit).
    env.edit_manifest(&held, add_agent);
    wait_for("activated", LIMIT, || {
        env.manifest(&held)["status"] == "active"
    });
    drop(d);
}

#[test]
fn json_logs_for_log_shippers() {
    let env = Env::new();
    env.config(&format!(
        "[daemon]\nlog_format = \"json\"\n[cells]\nheartbeat_stale_threshold = {STALE}\n"
    ));
    let uuid = env.create(&["--agent", "a"]);
    let d = env.daemon(&[]);
    env.wait_event(&uuid, "agent_stale", 1, LIMIT);
    d.wait_log("agent_stale", LIMIT);
    let log = d.log();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{v}"
        );
    }
    assert!(log.contains("ready:"));
}

/// inotify limits are per user namespace: the daemon runs in one whose
/// limit leaves room for the root and one cell only.
#[test]
fn exhausted_inotify_watches_fall_back_to_polling() {
    let env = Env::new();
    env.config(
        "[cells]\nheartbeat_stale_threshold = 0.5\nresurrect_after = 60\npoll_interval = 0.3\n",
    );
    let cells: Vec<String> = (0..3).map(|_| env.create(&["--agent", "a"])).collect();
    for cell in &cells {
        env.beat(cell, "a", "x");
    }
    // The harness's environment (root, config), on an `unshare` command.
    let template = env.command(&[]);
    let mut cmd = {
        let mut c = std::process::Command::new("unshare");
        c.args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            // root + parent + one cell (directory + heartbeats) = 4 watches.
            "echo 4 > /proc/sys/user/max_inotify_watches && exec \"$0\" daemon",
            crate::harness::BIN,
        ]);
        for (k, v) in template.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    };
    cmd.stdin(std::process::Stdio::null());
    let d = env.spawn_daemon_cmd(cmd);
    d.wait_log("ready:", LIMIT);
    d.wait_log("max_user_watches", LIMIT);
    assert_eq!(
        d.log().matches("watch limit reached").count(),
        1,
        "one warning:\n{}",
        d.log()
    );
    // Every cell, watched or polled, goes stale when silent and recovers
    // when it beats again (polled ones within a poll interval).
    for cell in &cells {
        env.wait_event(cell, "agent_stale", 1, LIMIT);
    }
    for cell in &cells {
        env.beat(cell, "a", "back");
    }
    for cell in &cells {
        env.wait_event(cell, "agent_recovered", 1, LIMIT);
    }
    drop(d);
}
