//! Operators and fleets: `events` (merge, formats, `--follow`), event-log
//! rotation, `status` for monitoring, metrics, completions and the man
//! page, and the packaging (systemd unit, `.deb`, fleet manifests).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A line of a cell's stream, as the daemon would write it.
fn line(cell: &str, ts: &str, event: &str, extra: Value) -> String {
    let mut obj = json!({"ts": ts, "event": event, "cell": cell});
    if let (Some(o), Some(e)) = (obj.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    obj.to_string()
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("append");
}

fn stream(env: &Env, uuid: &str) -> PathBuf {
    env.cell(uuid).join("logs/events.jsonl")
}

/// Appends one event line to the cell's stream, as another writer would.
fn add(env: &Env, cell: &str, ts: &str, event: &str, extra: Value) {
    append(
        &stream(env, cell),
        &format!("{}\n", line(cell, ts, event, extra)),
    );
}

/// Every line of a cell's stream: its generations oldest first, then
/// `events.jsonl`. Read again if a rotation moved a file meanwhile.
fn all_lines(env: &Env, uuid: &str) -> Vec<String> {
    let logs = env.cell(uuid).join("logs");
    'again: loop {
        let mut gens: Vec<u32> = std::fs::read_dir(&logs)
            .expect("logs")
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("events.jsonl.")?
                    .parse()
                    .ok()
            })
            .collect();
        gens.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for g in gens {
            match std::fs::read_to_string(logs.join(format!("events.jsonl.{g}"))) {
                Ok(text) => out.extend(text.lines().map(str::to_string)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'again,
                Err(e) => panic!("{e}"),
            }
        }
        if let Ok(text) = std::fs::read_to_string(logs.join("events.jsonl")) {
            out.extend(text.lines().map(str::to_string));
        }
        return out;
    }
}

#[test]
fn events_merges_cells_and_generations_in_time_order_byte_for_byte() {
    let env = Env::new();
    let a = env.create(&["--agent", "a"]);
    let b = env.create(&["--agent", "b"]);
    // Old lines, interleaved in time across the two cells, one cell's in a
    // rotated generation; odd spacing and key order, which --json keeps.
    std::fs::write(
        env.cell(&a).join("logs/events.jsonl.1"),
        format!(
            "{}\n{}\n",
            line(
                &a,
                "2026-01-01T00:00:01.000Z",
                "heartbeat",
                json!({"agent": "a", "status": "one"})
            ),
            line(
                &a,
                "2026-01-01T00:00:03.000Z",
                "heartbeat",
                json!({"agent": "a", "status": "three"})
            ),
        ),
    )
    .expect("gen");
    let own = std::fs::read_to_string(stream(&env, &b)).expect("b");
    std::fs::write(
        stream(&env, &b),
        format!(
            "{{ \"event\":\"heartbeat\",  \"ts\":\"2026-01-01T00:00:02.000Z\",\"cell\":\"{b}\",\"agent\":\"b\",\"status\":\"two\"}}\n{own}"
        ),
    )
    .expect("b");
    let run = env.run(&["events", "--json"]).success();
    let got: Vec<&str> = run.stdout.lines().collect();
    // Expected: every file line once, stably sorted by time, cells in
    // name order for equal times.
    let mut cells = [a.clone(), b.clone()];
    cells.sort();
    let mut expected: Vec<(String, String)> = cells
        .iter()
        .flat_map(|c| all_lines(&env, c))
        .map(|l| {
            let ts = serde_json::from_str::<Value>(&l).expect("json")["ts"]
                .as_str()
                .expect("ts")
                .to_string();
            (ts, l)
        })
        .collect();
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    let expected: Vec<&str> = expected.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(got, expected, "{run:#?}");
    assert!(
        got[0].contains("\"one\"") && got[1].contains("\"two\"") && got[2].contains("\"three\"")
    );
    // One cell alone: its generation first.
    let one = env.run(&["events", &a, "--json"]).success();
    assert_eq!(one.stdout.lines().collect::<Vec<_>>(), all_lines(&env, &a));
    // A cell whose agent broke its cell.json still shows its stream, and
    // so does one whose agent deleted it (also by itself).
    std::fs::write(env.cell(&b).join("cell.json"), "{oops").expect("break");
    let all = env.run(&["events", "--json"]).success();
    assert_eq!(all.stdout.lines().collect::<Vec<_>>(), expected);
    std::fs::remove_file(env.cell(&b).join("cell.json")).expect("delete");
    let all = env.run(&["events", "--json"]).success();
    assert_eq!(all.stdout.lines().collect::<Vec<_>>(), expected);
    let alone = env.run(&["events", &b[..8], "--json"]).success();
    assert_eq!(
        alone.stdout.lines().collect::<Vec<_>>(),
        all_lines(&env, &b)
    );
    // A line in a's stream that claims to be b's: shown as a's, with
    // claims_cell=, and never passed on as b's JSON.
    add(
        &env,
        &a,
        "2026-01-01T00:00:09.000Z",
        "agent_recovered",
        json!({"cell": b, "agent": "b"}),
    );
    let forged = env.run(&["events", "--json"]).success();
    assert!(
        !forged.stdout.contains("agent_recovered")
            && forged.stderr.contains(&format!(
                "cell {a}: a line in its stream claims to be of cell {b}"
            )),
        "{forged:#?}"
    );
    let human = env.run(&["events", &a]).success();
    assert!(
        human.stdout.lines().any(|l| l.contains(&a[..8])
            && l.contains("agent_recovered")
            && l.contains(&format!("claims_cell={b}"))),
        "{human:#?}"
    );
}

/// `events`' output, failing (and killing it) if it runs past [`LIMIT`]:
/// a hang must fail the test, not the suite. Stdout is drained meanwhile.
fn events_within_limit(env: &Env, what: &str) -> String {
    let mut cmd = env.command(&["events"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::BufReader::new(out).read_to_string(&mut text);
        text
    });
    let limit = Instant::now() + LIMIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("events still reading {what} after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.join().expect("reader")
}

/// An agent can make its stream a sparse file of 100 GB for free: read as
/// zeros, that took hours. Holes are skipped, and the line they fall in is
/// corrupt.
#[test]
fn a_sparse_stream_is_read_past_its_holes() {
    let env = Env::new();
    let a = env.create(&["--agent", "a"]);
    let generation = env.cell(&a).join("logs/events.jsonl.1");
    let file = std::fs::File::create(&generation).expect("create");
    file.set_len(100 << 30).expect("sparse");
    drop(file);
    append(
        &generation,
        &format!(
            "\n{}\n",
            line(
                &a,
                "2020-01-01T00:00:00.000Z",
                "agent_dead",
                json!({"agent": "a"})
            )
        ),
    );
    let text = events_within_limit(&env, "a sparse file");
    assert!(text.contains("events.jsonl.1 line 1 is corrupt"), "{text}");
    // A byte every 64 KiB over 1 GiB (16 MiB on disk): read extent by
    // extent, at the cost of what was written.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(env.cell(&a).join("logs/events.jsonl.2")).expect("create");
        for i in (0u64..1 << 30).step_by(65536) {
            f.write_all_at(b"x", i).expect("write");
        }
    }
    let text = events_within_limit(&env, "a strided sparse file");
    assert!(
        text.contains("events.jsonl.2 line 1 is corrupt (longer than"),
        "{text}"
    );
    assert!(
        text.contains("agent_dead") && text.contains("cell_created"),
        "{text}"
    );
}

#[test]
fn follow_ends_when_its_reader_goes_and_lets_go_of_a_purged_cell() {
    let env = Env::new();
    let a = env.create(&["--agent", "a"]);
    let b = env.create(&["--agent", "b"]);
    let follow = Follow::start(&env, &["--json", "--since", "1h"]);
    follow.wait(&format!("\"cell\":\"{b}\""), LIMIT);
    follow.wait(&format!("\"cell\":\"{a}\""), LIMIT);
    let fds = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let pid = follow.child.id();
    assert!(fds(pid).iter().any(|f| f.contains(&a)), "{:?}", fds(pid));
    std::fs::remove_dir_all(env.cell(&a)).expect("purge");
    wait_for("the purged cell let go", LIMIT, || {
        !fds(pid).iter().any(|f| f.contains(&a))
    });
    // A new line in the other cell still shows.
    add(
        &env,
        &b,
        "2099-01-01T00:00:00.000Z",
        "heartbeat",
        json!({"agent": "b", "status": "still"}),
    );
    follow.wait("still", LIMIT);

    // `events -f | head -1`: the reader goes, the follower ends at once
    // (not at its next line).
    let mut cmd = env.command(&["events", "--follow"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    drop(child.stdout.take());
    let limit = Instant::now() + LIMIT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(Instant::now() < limit, "the follower outlived its reader");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(child.wait().expect("status").code(), Some(0));
}

/// An agent that deletes its cell.json must not vanish from monitoring.
#[test]
fn a_cell_that_lost_its_cell_json_fails_the_check() {
    let env = Env::new();
    let fine = env.create(&["--agent", "a"]);
    env.beat(&fine, "a", "working");
    let lost = env.create(&["--agent", "b"]);
    assert_eq!(status(&env, &[]).0, Some(0));
    std::fs::remove_file(env.cell(&lost).join("cell.json")).expect("delete");
    let (code, v, text) = status(&env, &[]);
    assert_eq!(code, Some(1), "{v:#}");
    assert!(
        v["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .any(|c| c["uuid"] == lost.as_str() && c["status"] == "unreadable"),
        "{v:#}"
    );
    assert!(text.contains("cell.json is missing"), "{text}");
    let metrics = env.run(&["metrics"]).success().stdout;
    assert!(
        metrics.contains("lazarus_pit_cells{status=\"other\"} 1"),
        "{metrics}"
    );
    // `cell list` still lists only cells (BRIEF 2).
    let list = env.run(&["cell", "list"]).success().stdout;
    assert!(!list.contains(&lost), "{list}");
}

/// `daemon --once` from cron is no daemon that went missing.
#[test]
fn status_after_a_once_pass_is_not_a_missing_daemon() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a"]);
    env.beat(&uuid, "a", "working");
    let daemon = env.daemon(&[]);
    // It has run once it published its counters (right after its scan).
    wait_for("the daemon ready", LIMIT, || {
        env.run(&["metrics"])
            .stdout
            .contains("lazarus_pit_daemon_ready 1")
    });
    drop(daemon);
    assert_eq!(status(&env, &[]).0, Some(1), "a daemon ran and is gone");
    env.beat(&uuid, "a", "working");
    env.run(&["daemon", "--once"]).success();
    let (code, v, _) = status(&env, &[]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["daemon"]["missing"], false);
}

/// Item 1 of the review: a daemon that stops leaves agents unsupervised;
/// `status` must not call that well, and what waits for an operator still
/// waits (its records say so).
#[test]
fn status_without_the_daemon_that_supervised_the_root_is_a_failure() {
    let env = Env::new();
    let uuid = env.create_from(&json!({
        "status": "active",
        "agents": [{"name": "asker", "revive_policy": "ask", "command": ["/bin/sh", "-c", "exit 3"]}]
    }));
    let mut daemon = env.daemon(&[]);
    env.wait_event(&uuid, "revive_requested", 1, LIMIT);
    wait_for("the request recorded", LIMIT, || {
        env.record(&uuid)
            .is_some_and(|r| r["agents"]["asker"]["state"] == "awaiting_approval")
    });
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    wait_for("the daemon gone", LIMIT, || !daemon.running());
    let (code, v, text) = status(&env, &[]);
    assert_eq!(code, Some(1), "{v:#}");
    assert_eq!(v["daemon"]["missing"], true);
    assert_eq!(v["cells"][0]["agents"][0]["state"], "awaiting_approval");
    assert_eq!(v["pending_approvals"][0]["agent"], "asker");
    assert!(
        text.contains("daemon: not running, though one supervised this root")
            && text.contains("no daemon supervises them"),
        "{text}"
    );
}

#[test]
fn human_events_are_one_line_each_in_local_time_and_coloured_only_on_a_terminal() {
    let env = Env::new();
    let a = env.create(&["--agent", "a"]);
    add(
        &env,
        &a,
        "2026-01-01T00:00:01.250Z",
        "agent_dead",
        json!({"agent": "a", "note": "two\nlines \u{1b}[2K"}),
    );
    let lines = all_lines(&env, &a).len();
    let mut cmd = env.command(&["events", &a]);
    cmd.env("TZ", "UTC");
    let run = env.run_cmd(cmd, &["events"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stdout.lines().count(), lines, "{}", run.stdout);
    assert!(
        !run.stdout.contains('\u{1b}'),
        "no colour into a pipe: {:?}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2026-01-01 00:00:01.250  ")
            && run.stdout.contains(&a[..8])
            && run.stdout.contains("agent=a")
            && run.stdout.contains("two\\x0alines")
            && run.stdout.contains("\\x1b[2K"),
        "{}",
        run.stdout
    );
    // On a terminal: colour, unless NO_COLOR says no.
    let on_tty = |no_color: bool| {
        let pty = nix::pty::openpty(None, None).expect("pty");
        let mut cmd = env.command(&["events", &a]);
        cmd.stdout(Stdio::from(std::fs::File::from(pty.slave)));
        cmd.env_remove("NO_COLOR").env("TERM", "xterm");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let mut child = cmd.spawn().expect("spawn");
        drop(cmd);
        let status = child.wait().expect("wait");
        assert!(status.success());
        let mut master = std::fs::File::from(pty.master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // The slave is closed: reads end with EIO once drained.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let coloured = on_tty(false);
    assert!(coloured.contains("\u{1b}[31magent_dead"), "{coloured:?}");
    let plain = on_tty(true);
    assert!(
        plain.contains("agent_dead") && !plain.contains("\u{1b}["),
        "{plain:?}"
    );
}

#[test]
fn events_filters_by_name_agent_and_since() {
    let env = Env::new();
    let a = env.create(&["--agent", "a", "--agent", "b"]);
    append(
        &stream(&env, &a),
        &format!(
            "{}\n{}\n",
            line(
                &a,
                "2020-01-01T00:00:00.000Z",
                "agent_stale",
                json!({"agent": "a"})
            ),
            line(
                &a,
                "2020-01-01T00:00:01.000Z",
                "agent_stale",
                json!({"agent": "b"})
            ),
        ),
    );
    let names = |args: &[&str]| -> Vec<(String, String)> {
        let mut all = vec!["events", "--json"];
        all.extend_from_slice(args);
        env.run(&all)
            .success()
            .stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                (
                    v["event"].as_str().unwrap_or("").to_string(),
                    v["agent"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        names(&["--event", "agent_stale", "--agent", "b"]),
        vec![("agent_stale".into(), "b".into())]
    );
    assert_eq!(
        names(&["--event", "agent_joined", "--event", "cell_created"]).len(),
        3
    );
    // --since 10m: the 2020 lines are gone, today's are there.
    let recent = names(&["--since", "10m"]);
    assert!(
        !recent.iter().any(|(e, _)| e == "agent_stale"),
        "{recent:?}"
    );
    assert!(
        recent.iter().any(|(e, _)| e == "cell_created"),
        "{recent:?}"
    );
    env.run(&["events", "--event", "agent_ded"])
        .fails(2, "did you mean agent_dead?");
    env.run(&["events", "--since", "10 parsecs"])
        .fails(2, "--since");
}

/// `events --follow`, its stdout and stderr collected line by line with
/// the time each was read.
struct Follow {
    child: Child,
    out: Arc<Mutex<Vec<(Instant, String)>>>,
    err: Arc<Mutex<String>>,
}

impl Follow {
    fn start(env: &Env, args: &[&str]) -> Follow {
        let mut all = vec!["events", "--follow"];
        all.extend_from_slice(args);
        let mut cmd = env.command(&all);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn follower");
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let (o, e) = (out.clone(), err.clone());
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                o.lock().expect("out").push((Instant::now(), l));
            }
        });
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut e = e.lock().expect("err");
                e.push_str(&l);
                e.push('\n');
            }
        });
        Follow { child, out, err }
    }

    fn lines(&self) -> Vec<String> {
        self.out
            .lock()
            .expect("out")
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Waits for a line containing `needle`; when it was read.
    #[track_caller]
    fn wait(&self, needle: &str, limit: Duration) -> Instant {
        let mut at = None;
        wait_for(&format!("followed line with {needle}"), limit, || {
            at = self
                .out
                .lock()
                .expect("out")
                .iter()
                .find(|(_, l)| l.contains(needle))
                .map(|(t, _)| *t);
            at.is_some()
        });
        at.expect("seen")
    }

    fn stderr(&self) -> String {
        self.err.lock().expect("err").clone()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_sees_appends_rotations_truncations_new_cells_and_garbage() {
    let env = Env::new();
    let a = env.create(&["--agent", "a"]);
    let follow = Follow::start(&env, &["--json", "--since", "1h"]);
    // The history first: once it is out, the follower is watching.
    follow.wait(&format!("\"cell\":\"{a}\""), LIMIT);
    let path = stream(&env, &a);
    let appended_by = |text: &str| {
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("printf '%s\\n' \"$1\" >> \"$2\"")
            .arg("sh")
            .arg(text)
            .arg(&path)
            .status()
            .expect("sh");
        assert!(status.success());
        Instant::now()
    };
    let one = line(
        &a,
        "2099-01-01T00:00:01.000Z",
        "heartbeat",
        json!({"agent": "a", "status": "one"}),
    );
    let sent = appended_by(&one);
    let seen = follow.wait("\"one\"", LIMIT);
    assert!(
        seen.duration_since(sent) < Duration::from_secs(1),
        "a line appended by another process took {:?}",
        seen.duration_since(sent)
    );
    // Rotated: renamed and made again.
    std::fs::rename(&path, env.cell(&a).join("logs/events.jsonl.1")).expect("rotate");
    appended_by(&line(
        &a,
        "2099-01-01T00:00:02.000Z",
        "heartbeat",
        json!({"agent": "a", "status": "after-rotation"}),
    ));
    follow.wait("after-rotation", LIMIT);
    // A new cell.
    let b = env.create(&["--agent", "b"]);
    follow.wait(&format!("\"cell\":\"{b}\""), LIMIT);
    // Garbage, then a good line: the good one shows, the garbage is said.
    appended_by("this is not json");
    appended_by(&line(
        &a,
        "2099-01-01T00:00:03.000Z",
        "heartbeat",
        json!({"agent": "a", "status": "after-garbage"}),
    ));
    follow.wait("after-garbage", LIMIT);
    wait_for("the garbage said", LIMIT, || {
        follow.stderr().contains("corrupt")
    });
    // A torn line is kept until it is whole: half of it, a later line in
    // another cell (witnessed), then the rest.
    let torn = line(
        &a,
        "2099-01-01T00:00:04.000Z",
        "heartbeat",
        json!({"agent": "a", "status": "torn-but-whole"}),
    );
    let (head, tail) = torn.split_at(torn.len() / 2);
    append(&path, head);
    add(
        &env,
        &b,
        "2099-01-01T00:00:05.000Z",
        "heartbeat",
        json!({"agent": "b", "status": "witness"}),
    );
    follow.wait("witness", LIMIT);
    append(&path, &format!("{tail}\n"));
    follow.wait("torn-but-whole", LIMIT);
    assert_eq!(
        follow
            .lines()
            .iter()
            .filter(|l| l.contains("torn-but-whole"))
            .count(),
        1
    );
    assert!(
        follow
            .lines()
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "--json prints only whole JSON lines: {:#?}",
        follow.lines()
    );
    assert_eq!(
        follow.stderr().matches("corrupt").count(),
        1,
        "{}",
        follow.stderr()
    );
    // Truncated in place: read again from its start.
    std::fs::write(&path, "").expect("truncate");
    appended_by(&line(
        &a,
        "2099-01-01T00:00:06.000Z",
        "heartbeat",
        json!({"agent": "a", "status": "after-truncation"}),
    ));
    follow.wait("after-truncation", LIMIT);
    // Every line shown once.
    let lines = follow.lines();
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "{lines:#?}");
}

/// Item 2: the daemon rotates between whole lines, under the lock every
/// writer takes, so no line is split, lost or doubled: neither in the
/// files nor for a follower, while heartbeats (every one an event) and
/// the CLI append at once.
#[test]
fn rotation_never_splits_loses_or_doubles_a_line_under_a_heartbeat_storm() {
    const AGENTS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let env = Env::new();
    env.config(
        "[cells]\nheartbeat_stale_threshold = 3600\nresurrect_after = 7200\n\
         [events]\nheartbeats = \"all\"\nmax_bytes = 1024\nkeep = 1000\n",
    );
    let mut args = vec![];
    for a in AGENTS {
        args.extend(["--agent", a]);
    }
    let uuid = env.create(&args);
    let daemon = env.daemon(&[]);
    let follow = Follow::start(&env, &[&uuid, "--json", "--since", "1h"]);
    follow.wait("cell_created", LIMIT);
    // The CLI appends too, beside the storm.
    let cli = {
        let root = env.root.clone();
        let config = env.config.clone();
        let uuid = uuid.clone();
        std::thread::spawn(move || {
            for _ in 0..15 {
                for args in [
                    vec!["cell", "join", &uuid, "--agent", "x"],
                    vec!["cell", "leave", &uuid, "--agent", "x"],
                ] {
                    let out = std::process::Command::new(BIN)
                        .args(&args)
                        .env("LAZARUS_ROOT", &root)
                        .env("LAZARUS_CONFIG", &config)
                        .env_remove("RUST_LOG")
                        .output()
                        .expect("cli");
                    assert!(out.status.success(), "{out:?}");
                }
            }
        })
    };
    // Every agent beats with a new status, as fast as files can be
    // written, until the CLI is done (and at least 2,000 beats).
    let base = now();
    let mut n = 0usize;
    let mut last = std::collections::HashMap::new();
    while n < 2000 || !cli.is_finished() {
        let agent = AGENTS[n % AGENTS.len()];
        env.beat_at(&uuid, agent, base + n as f64 * 0.0001, &format!("s{n}"));
        last.insert(agent, n);
        n += 1;
    }
    cli.join().expect("cli thread");
    wait_for("the last beats recorded", LIMIT, || {
        let lines = all_lines(&env, &uuid);
        last.iter().all(|(agent, n)| {
            lines
                .iter()
                .any(|l| l.contains(&format!("\"agent\":\"{agent}\",\"status\":\"s{n}\"")))
        }) && lines.iter().filter(|l| l.contains("agent_left")).count() == 15
    });
    let lines = all_lines(&env, &uuid);
    let gens = std::fs::read_dir(env.cell(&uuid).join("logs"))
        .expect("logs")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("events.jsonl."))
        })
        .count();
    assert!(
        gens >= 5,
        "the stream was rotated: {gens} generations\n{}",
        daemon.log()
    );
    for l in &lines {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("split line {l:?}: {e}"));
    }
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "a line was doubled");
    // Each agent's statuses in order: nothing lost in between mattered to
    // the daemon's order, and nothing repeats.
    for agent in AGENTS {
        let seq: Vec<usize> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "heartbeat" && v["agent"] == agent)
            .filter_map(|v| v["status"].as_str()?.strip_prefix('s')?.parse().ok())
            .collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "{agent}: {seq:?}");
    }
    // The follower saw exactly the files' lines, in their order.
    wait_until(LIMIT, || follow.lines().len() >= lines.len());
    let seen = follow.lines();
    if let Some(at) = (0..seen.len().max(lines.len())).find(|i| seen.get(*i) != lines.get(*i)) {
        panic!(
            "follower vs files differ at line {at} of {} (follower has {}):\nfollower: {:?}\nfiles:    {:?}\nstderr: {}",
            lines.len(),
            seen.len(),
            seen.get(at),
            lines.get(at),
            follow.stderr()
        );
    }
}

fn status(env: &Env, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let json = env.run(&all);
    let mut human = vec!["status"];
    human.extend_from_slice(args);
    let text = env.run(&human);
    assert_eq!(json.code, text.code, "{json:#?}\n{text:#?}");
    (json.code, json.json(), text.stdout)
}

#[test]
fn status_exit_code_and_json_tell_monitoring_what_needs_attention() {
    let env = Env::new();
    let fine = env.create(&["--agent", "a", "--name", "fine"]);
    env.beat(&fine, "a", "working");
    let (code, v, text) = status(&env, &[]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["daemon"]["running"], false);
    assert_eq!(v["summary"]["cells"], 1);
    assert_eq!(v["summary"]["states"], json!({"healthy": 1}));
    let agent = &v["cells"][0]["agents"][0];
    for key in [
        "name",
        "state",
        "healthy",
        "heartbeat_age_s",
        "last_seen",
        "revive_count",
        "pid",
        "control",
        "isolation",
        "next",
    ] {
        assert!(agent.get(key).is_some(), "{key} missing: {agent:#}");
    }
    assert!(
        text.contains("daemon: not running") && text.contains("1 cell, 1 agent: 1 healthy"),
        "{text}"
    );
    // A silent agent: exit 1, for cron and monitors.
    let silent = env.create(&["--agent", "s", "--name", "silent"]);
    env.beat_at(&silent, "s", now() - 3600.0, "working");
    let (code, v, text) = status(&env, &[]);
    assert_eq!(code, Some(1), "{v:#}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["summary"]["states"], json!({"stale": 1, "healthy": 1}));
    // The table puts the worst first; JSON keeps the root's order.
    let rows: Vec<&str> = text.lines().filter(|l| l.contains(" working ")).collect();
    assert!(
        rows[0].starts_with(&silent[..8]) && rows[0].contains("stale"),
        "{text}"
    );
    assert!(rows[1].starts_with(&fine[..8]), "{text}");
    let mut order = [fine.clone(), silent.clone()];
    order.sort();
    assert_eq!(v["cells"][0]["uuid"], order[0].as_str());
    assert!(
        text.contains("2 cells, 2 agents: 1 stale, 1 healthy"),
        "{text}"
    );
    // One cell: its own verdict.
    assert_eq!(status(&env, &[&fine]).0, Some(0));
    assert_eq!(status(&env, &[&silent]).0, Some(1));
}

#[test]
fn status_shows_pending_approvals_and_what_happens_next() {
    let env = Env::new();
    env.config(
        "[cells]\nheartbeat_stale_threshold = 30\nresurrect_after = 60\nbackoff_initial = 0.1\n",
    );
    let uuid = env.create_from(&json!({
        "status": "active",
        "agents": [
            {"name": "asker", "revive_policy": "ask", "command": ["/bin/sh", "-c", "exit 3"]},
            {"name": "beater", "command": ["/bin/sh", "-c", "exec sleep 600"]},
        ]
    }));
    let _daemon = env.daemon(&[]);
    env.wait_event(&uuid, "revive_requested", 1, LIMIT);
    // A beat counts for the instance the daemon started once it runs.
    env.pid_of(&uuid, "agent_started", "beater", 1);
    env.beat(&uuid, "beater", "busy");
    wait_for("the request and the beat in status", LIMIT, || {
        let v = env.run(&["status", "--json"]).json();
        v["pending_approvals"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
            && v["cells"][0]["agents"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["name"] == "beater" && a["state"] == "healthy")
            })
    });
    let (code, v, text) = status(&env, &[]);
    assert_eq!(code, Some(1));
    let pending = &v["pending_approvals"][0];
    assert_eq!(pending["agent"], "asker");
    assert_eq!(pending["cell"], uuid.as_str());
    assert!(
        pending["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let agents = v["cells"][0]["agents"].as_array().expect("agents");
    assert_eq!(agents[0]["name"], "asker", "cell.json's order: {v:#}");
    assert_eq!(agents[0]["next"]["action"], "approve");
    assert_eq!(agents[0]["next"]["by"], "operator");
    let beater = &agents[1];
    assert_eq!(beater["next"]["action"], "stale");
    let in_s = beater["next"]["in_s"].as_f64().expect("in_s");
    assert!((25.0..=30.0).contains(&in_s), "stale in {in_s}");
    assert!(
        text.contains("pending approval:")
            && text.contains(&format!("lazarus-pit approve {} asker", &uuid[..8]))
            && text.contains("approve (operator)")
            && text.contains("stale in 2"),
        "{text}"
    );
}

#[cfg_attr(
    not(promtool),
    ignore = "promtool (Debian's prometheus package) is not installed"
)]
#[test]
fn metrics_pass_promtool() {
    metrics_text_is_valid_and_the_daemon_writes_its_textfile(true);
}

#[test]
fn metrics_text_is_valid_prometheus_and_the_daemon_writes_its_textfile() {
    metrics_text_is_valid_and_the_daemon_writes_its_textfile(false);
}

fn promtool(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(out.status.success(), "promtool: {out:?}\n{text}");
}

fn metrics_text_is_valid_and_the_daemon_writes_its_textfile(with_promtool: bool) {
    let env = Env::new();
    let textfile = env.tmp.path().join("textfile/lazarus-pit.prom");
    std::fs::create_dir_all(textfile.parent().expect("dir")).expect("mkdir");
    env.config(&format!(
        "[cells]\nheartbeat_stale_threshold = 0.5\nresurrect_after = 3600\n[metrics]\ntextfile = {:?}\n",
        textfile.display().to_string()
    ));
    let uuid = env.create(&["--agent", "a", "--agent", "quiet"]);
    let check = |text: &str| {
        lazarus_pit::metrics::validate(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        if with_promtool {
            promtool(text);
        }
    };
    // No daemon: the cells and agents, and no invented counters.
    let text = env.run(&["metrics"]).success().stdout;
    check(&text);
    assert!(
        text.contains("lazarus_pit_daemon_up 0") && !text.contains("heartbeats_total"),
        "{text}"
    );
    assert!(
        text.contains("lazarus_pit_agents{state=\"unknown\"} 2"),
        "{text}"
    );
    let mut daemon = env.daemon(&[]);
    env.beat(&uuid, "a", "working");
    env.wait_event(&uuid, "agent_stale", 2, LIMIT);
    // The daemon's counters, once it published them (every 10 s, and at
    // start): the stale-detection lateness was measured.
    wait_for("the daemon's counters", Duration::from_secs(30), || {
        let text = env.run(&["metrics"]).success().stdout;
        text.contains("lazarus_pit_stale_detection_lateness_seconds_count 2")
    });
    let text = env.run(&["metrics"]).success().stdout;
    check(&text);
    for needle in [
        "lazarus_pit_daemon_up 1",
        "lazarus_pit_daemon_ready 1",
        "lazarus_pit_events_total{event=\"agent_stale\"} 2",
        "lazarus_pit_agents{state=\"stale\"} 2",
        "lazarus_pit_watch_mode{mode=\"inotify\"} 1",
        &format!("lazarus_pit_agent_heartbeat_age_seconds{{cell=\"{uuid}\",agent=\"a\"}}"),
        "lazarus_pit_daemon_resident_memory_bytes ",
        "lazarus_pit_daemon_cpu_seconds_total ",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let beats = text
        .lines()
        .find_map(|l| l.strip_prefix("lazarus_pit_heartbeats_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(beats.is_some_and(|n| n >= 1), "{text}");
    let file = std::fs::read_to_string(&textfile).expect("textfile");
    check(&file);
    assert!(file.contains("lazarus_pit_daemon_up 1"), "{file}");
    // Nothing but the textfile was left in its directory.
    let names: Vec<String> = std::fs::read_dir(textfile.parent().expect("dir"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["lazarus-pit.prom".to_string()]);
    // Stopped: the textfile says so.
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    wait_for("the daemon gone", LIMIT, || !daemon.running());
    let file = std::fs::read_to_string(&textfile).expect("textfile");
    check(&file);
    assert!(
        file.contains("lazarus_pit_daemon_up 0") && file.contains("lazarus_pit_daemon_ready 0"),
        "{file}"
    );
}

/// The committed copies in `packaging/` are what the binary generates
/// (`UPDATE_PACKAGING=1` rewrites them).
#[test]
fn packaging_completions_and_man_page_are_current() {
    let env = Env::new();
    let update = std::env::var_os("UPDATE_PACKAGING").is_some();
    for (args, file) in [
        (
            vec!["completions", "bash"],
            "packaging/completions/lazarus-pit.bash",
        ),
        (
            vec!["completions", "zsh"],
            "packaging/completions/_lazarus-pit",
        ),
        (
            vec!["completions", "fish"],
            "packaging/completions/lazarus-pit.fish",
        ),
        (vec!["man"], "packaging/man/lazarus-pit.1"),
    ] {
        // No config is read: a broken one hides no documentation.
        let mut cmd = env.command(&args);
        cmd.env("LAZARUS_CONFIG", "/nonexistent/lazarus-pit.toml");
        let run = env.run_cmd(cmd, &args);
        assert_eq!(run.code, Some(0), "{run:#?}");
        assert!(run.stdout.len() > 1000, "{run:#?}");
        assert!(
            !run.stdout.contains("checkpoint-worker"),
            "{file} offers the hidden worker"
        );
        let path = repo_file(file);
        if update {
            std::fs::write(&path, &run.stdout).expect("update");
        }
        let committed = std::fs::read_to_string(&path).expect("committed copy");
        assert!(
            committed == run.stdout,
            "{file} is out of date: run UPDATE_PACKAGING=1 cargo test packaging"
        );
    }
    let bash = std::process::Command::new("bash")
        .arg("-n")
        .arg(repo_file("packaging/completions/lazarus-pit.bash"))
        .status()
        .expect("bash");
    assert!(bash.success(), "the bash completion parses");
    let man = std::fs::read_to_string(repo_file("packaging/man/lazarus-pit.1")).expect("man");
    for needle in [
        ".TH lazarus-pit 1",
        ".SH COMMANDS",
        "lazarus\\-pit events",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
    ] {
        assert!(man.contains(needle), "{needle} missing in the man page");
    }
}

fn unit() -> String {
    std::fs::read_to_string(repo_file("packaging/lazarus-pit.service")).expect("unit")
}

#[test]
fn the_systemd_unit_never_kills_agents_and_notifies() {
    let unit = unit();
    let keys: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| keys.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    assert_eq!(get("Type"), Some("notify"));
    assert_eq!(
        get("KillMode"),
        Some("process"),
        "a restart must leave agents running"
    );
    assert_eq!(get("Delegate"), Some("yes"));
    assert_eq!(get("Restart"), Some("on-failure"));
    assert_eq!(get("ExecReload"), Some("/bin/kill -HUP $MAINPID"));
    assert_eq!(get("ExecStart"), Some("/usr/bin/lazarus-pit daemon"));
    assert_eq!(
        Some(format!("/var/lib/{}", get("StateDirectory").unwrap_or("?")).as_str()),
        Some(lazarus_pit::records::SYSTEM_STATE_DIR)
    );
    assert!(get("WatchdogSec").is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s > 0)));
    // The stop timeout leaves the daemon its 2 s.
    assert!(get("TimeoutStopSec").is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s >= 3)));
    let tmpfiles = std::fs::read_to_string(repo_file("packaging/lazarus-pit.tmpfiles.conf"))
        .expect("tmpfiles");
    let dirs: Vec<Vec<&str>> = tmpfiles
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(dirs.contains(&vec![
        "d",
        lazarus_pit::config::DEFAULT_ROOT,
        "0755",
        "root",
        "root",
        "-"
    ]));
    assert!(dirs.contains(&vec![
        "d",
        lazarus_pit::records::SYSTEM_STATE_DIR,
        "0700",
        "root",
        "root",
        "-"
    ]));
}

#[cfg_attr(not(systemd_analyze), ignore = "systemd-analyze is not installed")]
#[test]
fn the_systemd_unit_verifies() {
    let env = Env::new();
    let unit = unit().replace("/usr/bin/lazarus-pit", BIN);
    let path = env.tmp.path().join("lazarus-pit.service");
    std::fs::write(&path, unit).expect("unit");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
}

/// The package's files, from `[package.metadata.deb]`.
const DEB_PATHS: &[&str] = &[
    "./usr/bin/lazarus-pit",
    "./usr/lib/systemd/system/lazarus-pit.service",
    "./usr/lib/tmpfiles.d/lazarus-pit.conf",
    "./etc/lazarus-pit/lazarus-pit.toml",
    "./usr/share/man/man1/lazarus-pit.1.gz",
    "./usr/share/bash-completion/completions/lazarus-pit",
    "./usr/share/zsh/vendor-completions/_lazarus-pit",
    "./usr/share/fish/vendor_completions.d/lazarus-pit.fish",
];

#[test]
fn the_deb_metadata_names_files_that_exist() {
    let cargo: toml::Table = std::fs::read_to_string(repo_file("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("toml");
    let deb = &cargo["package"]["metadata"]["deb"];
    for asset in deb["assets"].as_array().expect("assets") {
        let src = asset[0].as_str().expect("src");
        if !src.starts_with("target/") {
            assert!(repo_file(src).exists(), "{src} is missing");
        }
    }
    assert_eq!(
        deb["conf-files"][0].as_str(),
        Some(lazarus_pit::config::SYSTEM_CONFIG)
    );
    assert_eq!(deb["systemd-units"]["enable"].as_bool(), Some(false));
    // The default config the package installs loads, and names the
    // defaults.
    let loaded = lazarus_pit::config::Config::load(Some(&repo_file("templates/lazarus-pit.toml")))
        .expect("template loads");
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
}

#[cfg_attr(
    not(cargo_deb),
    ignore = "cargo-deb is not installed (cargo install cargo-deb)"
)]
#[test]
fn the_deb_holds_binary_unit_tmpfiles_config_man_page_and_completions() {
    let env = Env::new();
    let out_dir = env.tmp.path().join("deb");
    // Built from the binary under test (the dev profile's), not a release
    // build of its own, and compressed fast: xz of a debug binary keeps
    // both cores busy for 20 s, starving the other tests' daemons.
    let out = std::process::Command::new("cargo")
        .args([
            "deb",
            "--no-build",
            "--no-strip",
            "--fast",
            "--profile",
            "dev",
            "-o",
        ])
        .arg(&out_dir)
        .current_dir(repo_file(""))
        .output()
        .expect("cargo deb");
    assert!(out.status.success(), "{out:?}");
    let deb = std::fs::read_dir(&out_dir)
        .expect("out")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let list = std::process::Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .expect("dpkg-deb");
    let listing = String::from_utf8_lossy(&list.stdout);
    for path in DEB_PATHS {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing:\n{listing}"
        );
    }
    let conffiles = std::process::Command::new("dpkg-deb")
        .args(["--info"])
        .arg(&deb)
        .arg("conffiles")
        .output()
        .expect("dpkg-deb");
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout).trim(),
        lazarus_pit::config::SYSTEM_CONFIG
    );
}

/// A config a manifest carries: it loads without unknown keys and names
/// the binary's default root and state directory.
fn config_with_defaults(text: &str, what: &str) -> lazarus_pit::config::Config {
    let (config, unknown) = lazarus_pit::config::Config::parse(text, Path::new(what))
        .unwrap_or_else(|e| panic!("{what}'s config: {e}"));
    assert!(unknown.is_empty(), "{what}: {unknown:?}");
    assert_eq!(
        config.root(None),
        PathBuf::from(lazarus_pit::config::DEFAULT_ROOT),
        "{what}"
    );
    assert_eq!(
        config.daemon.state_dir.as_deref(),
        Some(Path::new(lazarus_pit::records::SYSTEM_STATE_DIR)),
        "{what}"
    );
    config
}

fn yaml_docs(rel: &str) -> Vec<yaml_rust2::Yaml> {
    let text = std::fs::read_to_string(repo_file(rel)).expect("manifest");
    yaml_rust2::YamlLoader::load_from_str(&text).expect("YAML parses")
}

#[test]
fn the_fleet_manifests_parse_and_name_the_binarys_defaults() {
    let docs = yaml_docs("packaging/kubernetes/daemonset.yaml");
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let host_paths: Vec<&str> = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_vec()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for path in [
        lazarus_pit::config::DEFAULT_ROOT,
        lazarus_pit::records::SYSTEM_STATE_DIR,
    ] {
        assert!(
            host_paths.contains(&path),
            "hostPath {path}: {host_paths:?}"
        );
        assert!(mounts.contains(&path), "mount {path}: {mounts:?}");
    }
    let config_env = container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("LAZARUS_CONFIG"))
        .and_then(|e| e["value"].as_str());
    assert_eq!(config_env, Some(lazarus_pit::config::SYSTEM_CONFIG));
    assert!(mounts.contains(&"/etc/lazarus-pit"));
    assert_eq!(
        container["securityContext"]["privileged"].as_bool(),
        Some(true)
    );
    assert!(
        container["readinessProbe"]["exec"]["command"][2]
            .as_str()
            .is_some_and(
                |c| c.contains("lazarus-pit metrics") && c.contains("lazarus_pit_daemon_ready 1")
            )
    );
    // The config it mounts loads, with the same root and state directory.
    let cm = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .expect("a ConfigMap");
    let toml_text = cm["data"]["lazarus-pit.toml"].as_str().expect("config");
    let config = config_with_defaults(toml_text, "the ConfigMap");
    let textfile = config.metrics.textfile.expect("textfile");
    assert!(
        mounts.iter().any(|m| textfile.starts_with(m)),
        "{textfile:?} not mounted"
    );

    // Nomad: a system job running the binary with its own config.
    let nomad: hcl::Body = hcl::from_str(
        &std::fs::read_to_string(repo_file("packaging/nomad/lazarus-pit.nomad.hcl")).expect("job"),
    )
    .expect("HCL parses");
    let job: Value = hcl::from_body(nomad).expect("job");
    let job = &job["job"]["lazarus-pit"];
    assert_eq!(job["type"], "system");
    let task = &job["group"]["lazarus-pit"]["task"]["daemon"];
    assert_eq!(task["driver"], "raw_exec");
    assert_eq!(task["config"]["command"], "/usr/bin/lazarus-pit");
    assert_eq!(task["kill_signal"], "SIGTERM");
    let data = task["template"]["data"].as_str().expect("template");
    config_with_defaults(data, "the Nomad job");

    // Vector: every cell's stream, and rotated generations, told apart by
    // inode.
    let vector: toml::Table = std::fs::read_to_string(repo_file("packaging/vector.toml"))
        .expect("vector")
        .parse()
        .expect("TOML parses");
    let source = &vector["sources"]["lazarus_events"];
    assert_eq!(source["type"].as_str(), Some("file"));
    let include: Vec<&str> = source["include"]
        .as_array()
        .expect("include")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        include.contains(
            &format!(
                "{}/*/{}",
                lazarus_pit::config::DEFAULT_ROOT,
                lazarus_pit::cell::EVENTS
            )
            .as_str()
        ),
        "{include:?}"
    );
    assert_eq!(
        source["fingerprint"]["strategy"].as_str(),
        Some("device_and_inode")
    );
    assert_eq!(
        vector["transforms"]["lazarus_parse"]["inputs"][0].as_str(),
        Some("lazarus_events")
    );
}
