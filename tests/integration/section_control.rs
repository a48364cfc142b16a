//! BRIEF 3 and 7, cells as units of control: freeze, thaw, archive,
//! destroy and leave act on the agents' processes — by cgroup where the
//! daemon can make them (then also on processes that left the agent's
//! process group), by process group otherwise — and `events.jsonl` and
//! `cell.json` always match what runs.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Daemon, Env, alive, cgroup2_mount, repo_file, wait_for};
use crate::section_revival::CONFIG;

const LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn env(extra: &str) -> Env {
    let env = Env::new();
    env.config(&format!("{CONFIG}\n{extra}"));
    env
}

pub(crate) fn agent(name: &str, mode: &str) -> Value {
    json!({
        "name": name,
        "command": ["/bin/sh", repo_file("tests/agent.sh"), mode],
    })
}

/// The pid of the grandchild an `escape` agent left in a session of its
/// own.
fn escaped(env: &Env, uuid: &str, agent: &str) -> i32 {
    pid_file(env, uuid, &format!("escaped-{agent}.pid"))
}

/// An active cell of `agents`, and a daemon watching it.
fn active_cell(env: &Env, agents: &[Value]) -> (String, Daemon) {
    let uuid = env.create_from(&json!({"status": "active", "agents": agents}));
    (uuid, env.daemon(&[]))
}

/// The pid an agent wrote to `workspace/<file>`, waited for.
fn pid_file(env: &Env, uuid: &str, file: &str) -> i32 {
    let path = env.cell(uuid).join("workspace").join(file);
    wait_for(&format!("{}", path.display()), LIMIT, || path.exists());
    std::fs::read_to_string(&path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn session(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(3)?.parse().ok()
}

/// The directory of the cgroup v2 group `pid` runs in.
fn cgroup_dir(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(cgroup2_mount()?.join(rel.trim_start_matches('/')))
}

fn cgroup_frozen(pid: i32) -> bool {
    cgroup_dir(pid)
        .and_then(|d| std::fs::read_to_string(d.join("cgroup.events")).ok())
        .is_some_and(|e| e.lines().any(|l| l == "frozen 1"))
}

/// Stopped by SIGSTOP, or frozen by its cgroup's freezer (which leaves
/// the `/proc` state at S).
fn frozen(pid: i32) -> bool {
    matches!(proc_state(pid), Some('T' | 't')) || cgroup_frozen(pid)
}

fn running(pid: i32) -> bool {
    alive(pid) && !frozen(pid)
}

/// A second cell with one watch-only agent that never beats: its
/// `agent_stale`, `heartbeat_stale_threshold` after it is seen, is the
/// witness that every deadline of the cells created before it has passed.
fn sentinel(env: &Env) -> String {
    env.create_from(&json!({"status": "active", "agents": [{"name": "sentinel"}]}))
}

/// Events of `uuid` after the first one named `after` that says `to`.
fn events_after(env: &Env, uuid: &str, to: &str) -> Vec<Value> {
    let events = env.events(uuid);
    let i = events
        .iter()
        .position(|e| e["event"] == "cell_status_changed" && e["to"] == to)
        .unwrap_or_else(|| panic!("no move to {to}: {events:#?}"));
    events[i + 1..].to_vec()
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn freeze_stops_every_process_even_one_that_left_its_group_and_thaw_resumes_supervision() {
    let env = env("");
    let (uuid, _daemon) = active_cell(&env, &[agent("a", "escape"), agent("b", "beat")]);
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    let b = env.pid_of(&uuid, "agent_started", "b", 1);
    let grandchild = escaped(&env, &uuid, "a");
    assert_ne!(session(grandchild), Some(a), "it left the agent's session");
    wait_for("control in state.json", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["control"] == "cgroup")
    });

    env.run(&["cell", "freeze", &uuid]).success();
    // The command returns once the daemon has acted; the kernel's freezer
    // finishes within moments.
    wait_for("every process frozen", LIMIT, || {
        [a, b, grandchild].iter().all(|p| frozen(*p))
    });
    // state.json follows the record the command waited for.
    wait_for("frozen in state.json", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["b"]["state"] == "frozen")
    });

    // Far past every deadline of the frozen agents: nothing happens.
    let witness = sentinel(&env);
    env.wait_event(&witness, "agent_stale", 1, LIMIT);
    assert!(
        [a, b, grandchild].iter().all(|p| frozen(*p)),
        "still frozen"
    );
    let since_freeze = events_after(&env, &uuid, "frozen");
    assert!(
        since_freeze.is_empty(),
        "nothing is reported or revived while frozen: {since_freeze:#?}"
    );

    env.run(&["cell", "thaw", &uuid]).success();
    wait_for("every process running again", LIMIT, || {
        [a, b, grandchild].iter().all(|p| running(*p))
    });
    // Merely stopped, not dead: beating again, not revived.
    wait_for("b healthy again", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["b"]["state"] == "healthy")
    });
    // Supervision resumed: a hang after the thaw is detected and revived.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("stop b");
    env.wait_event(&uuid, "agent_revived", 1, LIMIT);
    let stale = env.of_agent(&uuid, "agent_stale", "b");
    assert_eq!(stale.len(), 1, "{:#?}", env.events(&uuid));
    assert!(env.of_agent(&uuid, "agent_stale", "a").is_empty());
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn archive_leaves_no_process_of_the_cell_alive_and_no_further_events() {
    let env = env("");
    let (uuid, _daemon) = active_cell(&env, &[agent("a", "escape"), agent("b", "stubborn")]);
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    let b = env.pid_of(&uuid, "agent_started", "b", 1);
    let grandchild = escaped(&env, &uuid, "a");
    let group = cgroup_dir(a).expect("a's cgroup");
    let b_child = pid_file(&env, &uuid, "child-b.pid");
    // Both beating (their first `heartbeat` events are written).
    wait_for("both healthy", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]["a"]["state"] == "healthy"
                && s["agent_health"]["b"]["state"] == "healthy"
        })
    });
    env.run(&["cell", "archive", &uuid]).success();
    // When the command returns, nothing of the cell runs: not the one
    // that ignores SIGTERM, not the ones that left their group.
    for pid in [a, b, grandchild, b_child] {
        assert!(!alive(pid), "pid {pid} still runs after archive");
    }
    assert!(!group.exists(), "its cgroup is removed");
    let witness = sentinel(&env);
    env.wait_event(&witness, "agent_stale", 1, LIMIT);
    let after = events_after(&env, &uuid, "archived");
    assert!(after.is_empty(), "no events after archive: {after:#?}");
    assert_eq!(env.manifest(&uuid)["status"], "archived");
    let record = env.record(&uuid).expect("record");
    assert!(
        record["agents"]
            .as_object()
            .expect("agents")
            .values()
            .all(|a| a["instance"].is_null()),
        "{record:#}"
    );
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn destroy_stops_the_agents_then_removes_the_cell_and_nothing_outside() {
    let env = env("");
    let outside = env.tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(outside.join("keep.txt"), "keep").expect("keep");
    let uuid = env.create_from(&json!({
        "status": "active",
        "agents": [agent("a", "escape")],
    }));
    let ws = env.cell(&uuid).join("workspace");
    std::os::unix::fs::symlink(&outside, ws.join("link")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("keep.txt"), ws.join("file-link")).expect("symlink");
    let _daemon = env.daemon(&[]);
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    let grandchild = escaped(&env, &uuid, "a");
    env.run(&["cell", "destroy", &uuid, "--yes"]).success();
    assert!(!alive(a) && !alive(grandchild), "the agents go first");
    assert_eq!(
        std::fs::read_to_string(outside.join("keep.txt")).expect("outside file"),
        "keep",
        "nothing outside the cell is touched"
    );
    let cell = env.cell(&uuid);
    assert!(!cell.join("workspace").exists() && !cell.join(".lazarus").exists());
    assert!(cell.join("logs/events.jsonl").exists(), "logs/ is kept");
    assert_eq!(env.manifest(&uuid)["status"], "destroyed");
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn leave_stops_that_agent_and_only_it() {
    let env = env("");
    let (uuid, _daemon) = active_cell(&env, &[agent("a", "escape"), agent("b", "beat")]);
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    let b = env.pid_of(&uuid, "agent_started", "b", 1);
    let grandchild = escaped(&env, &uuid, "a");
    env.run(&["cell", "leave", &uuid, "--agent", "a"]).success();
    assert!(!alive(a) && !alive(grandchild), "a's processes are gone");
    assert!(running(b), "b runs on");
    let left = env.of_agent(&uuid, "agent_left", "a");
    assert_eq!(left.len(), 1, "{:#?}", env.events(&uuid));
    assert!(
        env.of_agent(&uuid, "agent_revived", "a").is_empty(),
        "not revived"
    );
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn an_agent_removed_from_cell_json_by_hand_is_stopped_and_has_left() {
    let env = env("");
    let (uuid, _daemon) = active_cell(&env, &[agent("a", "escape"), agent("b", "beat")]);
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    let grandchild = escaped(&env, &uuid, "a");
    env.edit_manifest(&uuid, |m| {
        m["agents"]
            .as_array_mut()
            .expect("agents")
            .retain(|x| x["name"] != "a");
    });
    env.wait_event(&uuid, "agent_left", 1, LIMIT);
    assert!(!alive(a) && !alive(grandchild), "gone before agent_left");
    let left = env.of_agent(&uuid, "agent_left", "a");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["observed"], true, "{left:#?}");
}

#[test]
fn without_cgroups_the_process_group_is_frozen_thawed_and_stopped() {
    let env = env("[daemon]\ncgroup = \"off\"\n");
    let (uuid, daemon) = active_cell(&env, &[agent("a", "stubborn"), agent("b", "beat")]);
    assert!(
        daemon.log().contains("controlled by process group"),
        "{}",
        daemon.log()
    );
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    let b = env.pid_of(&uuid, "agent_started", "b", 1);
    let child = pid_file(&env, &uuid, "child-a.pid");
    wait_for("control in state.json", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["control"] == "process-group")
    });
    env.run(&["cell", "freeze", &uuid]).success();
    wait_for("the process groups stopped", LIMIT, || {
        [a, b, child].iter().all(|p| frozen(*p))
    });
    let witness = sentinel(&env);
    env.wait_event(&witness, "agent_stale", 1, LIMIT);
    assert!(events_after(&env, &uuid, "frozen").is_empty());
    env.run(&["cell", "thaw", &uuid]).success();
    wait_for("running again", LIMIT, || {
        [a, b, child].iter().all(|p| running(*p))
    });
    env.run(&["cell", "leave", &uuid, "--agent", "b"]).success();
    assert!(!alive(b), "b left");
    assert!(running(a) && running(child), "a runs on");
    // a ignores SIGTERM: SIGKILL after kill_grace, its child with it.
    env.run(&["cell", "archive", &uuid]).success();
    for pid in [a, child] {
        assert!(!alive(pid), "pid {pid} still runs after archive");
    }
    assert_eq!(env.of_agent(&uuid, "agent_left", "b").len(), 1);
}

#[test]
fn fifty_agents_are_frozen_and_thawed_in_one_cell() {
    let env = env("");
    let agents: Vec<Value> = (0..50).map(|i| agent(&format!("a{i}"), "beat")).collect();
    let uuid = env.create_from(&json!({"status": "active", "agents": agents}));
    let _daemon = env.daemon(&[]);
    let pids: Vec<i32> = (0..50)
        .map(|i| env.pid_of(&uuid, "agent_started", &format!("a{i}"), 1))
        .collect();
    env.run(&["cell", "freeze", &uuid]).success();
    wait_for("all 50 frozen", LIMIT, || pids.iter().all(|p| frozen(*p)));
    wait_for("all 50 frozen in state.json", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]
                .as_object()
                .is_some_and(|h| h.len() == 50 && h.values().all(|a| a["state"] == "frozen"))
        })
    });
    env.run(&["cell", "thaw", &uuid]).success();
    wait_for("all 50 running", LIMIT, || pids.iter().all(|p| running(*p)));
    wait_for("all 50 healthy", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]
                .as_object()
                .is_some_and(|h| h.values().all(|a| a["state"] == "healthy"))
        })
    });
    assert!(env.events_named(&uuid, "agent_revived").is_empty());
}

#[test]
fn without_a_daemon_the_cli_acts_on_the_recorded_instances() {
    let env = env("");
    let (uuid, daemon) = active_cell(&env, &[agent("a", "beat"), agent("b", "beat")]);
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    let b = env.pid_of(&uuid, "agent_started", "b", 1);
    wait_for("instances recorded", LIMIT, || {
        env.record(&uuid)
            .is_some_and(|r| r["agents"]["b"]["instance"]["pid"] == b)
    });
    daemon.stop(LIMIT);
    assert!(running(a) && running(b), "agents outlive the daemon");
    let run = env.run(&["cell", "freeze", &uuid]).success();
    assert!(run.stderr.contains("no daemon runs"), "{run:#?}");
    wait_for("frozen", LIMIT, || frozen(a) && frozen(b));
    env.run(&["cell", "thaw", &uuid]).success();
    wait_for("running", LIMIT, || running(a) && running(b));
    env.run(&["cell", "leave", &uuid, "--agent", "a"]).success();
    assert!(!alive(a) && running(b));
    assert_eq!(env.of_agent(&uuid, "agent_left", "a").len(), 1);
    env.run(&["cell", "archive", &uuid]).success();
    assert!(!alive(b), "archive stops what is left");
    // The next daemon settles what the record still said of it.
    let _daemon = env.daemon(&[]);
    wait_for("b exited in state.json", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]["b"]["state"] == "exited" && s["agent_health"]["b"]["pid"].is_null()
        })
    });
    let status = env.run(&["status", &uuid, "--json"]).json();
    let agents = &status["cells"][0]["agents"];
    assert_eq!(agents[0]["state"], "exited", "{status:#}");
    assert!(agents[0]["pid"].is_null(), "{status:#}");
}

#[test]
fn agents_get_no_signal_the_daemon_was_started_ignoring() {
    let env = env("");
    let uuid = env.create_from(&json!({"status": "active", "agents": [agent("a", "beat")]}));
    let mut cmd = env.command(&["daemon"]);
    // SAFETY: one async-signal-safe call in the child before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::libc::signal(nix::libc::SIGQUIT, nix::libc::SIG_IGN);
            nix::libc::signal(nix::libc::SIGUSR1, nix::libc::SIG_IGN);
            Ok(())
        });
    }
    let daemon = env.spawn_daemon_cmd(cmd);
    daemon.wait_log("ready:", LIMIT);
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    let status = std::fs::read_to_string(format!("/proc/{a}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("SigIgn:"), "0000000000000000", "{status}");
    assert_eq!(field("SigBlk:"), "0000000000000000", "{status}");
}

#[test]
fn freezing_twice_or_thawing_an_active_cell_is_a_clear_error() {
    let env = env("");
    let uuid = env.create(&["--agent", "a"]);
    env.run(&["cell", "thaw", &uuid]).fails(1, "thaw");
    env.run(&["cell", "freeze", &uuid]).success();
    env.run(&["cell", "freeze", &uuid]).fails(1, "frozen");
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn a_freeze_while_agents_are_being_started_freezes_them_all() {
    let env = env("");
    std::fs::create_dir_all(&env.root).expect("root");
    let _daemon = env.daemon(&[]);
    let agents: Vec<Value> = (0..20).map(|i| agent(&format!("a{i}"), "beat")).collect();
    let uuid = env.create_from(&json!({"status": "active", "agents": agents}));
    // At once: some starts are in flight, some not begun.
    env.run(&["cell", "freeze", &uuid]).success();
    let started: Vec<i32> = env
        .events_named(&uuid, "agent_started")
        .iter()
        .filter_map(|e| e["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    wait_for("every started agent frozen", LIMIT, || {
        started.iter().all(|p| frozen(*p))
    });
    env.run(&["cell", "thaw", &uuid]).success();
    let pids: Vec<i32> = (0..20)
        .map(|i| env.pid_of(&uuid, "agent_started", &format!("a{i}"), 1))
        .collect();
    wait_for("all 20 running", LIMIT, || pids.iter().all(|p| running(*p)));
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn an_agent_that_rewrites_the_cells_uuid_stays_under_control() {
    let env = env("");
    let (uuid, _daemon) = active_cell(&env, &[agent("a", "beat")]);
    let a = env.pid_of(&uuid, "agent_started", "a", 1);
    env.edit_manifest(&uuid, |m| {
        m["uuid"] = json!("11111111-2222-4333-8444-555555555555");
    });
    env.wait_event(&uuid, "invalid_input", 1, LIMIT);
    env.run(&["cell", "freeze", &uuid]).success();
    wait_for("frozen", LIMIT, || frozen(a));
    env.run(&["cell", "destroy", &uuid, "--yes"]).success();
    assert!(!alive(a), "destroy stopped it");
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn an_archived_cells_agents_show_as_exited_everywhere() {
    let env = env("");
    let (uuid, _daemon) = active_cell(&env, &[agent("a", "beat")]);
    env.pid_of(&uuid, "agent_started", "a", 1);
    wait_for("control in status", LIMIT, || {
        env.run(&["status", &uuid, "--json"]).json()["cells"][0]["agents"][0]["control"] == "cgroup"
    });
    let table = env.run(&["status", &uuid]).success().stdout;
    assert!(
        table.contains("CONTROL") && table.contains("cgroup"),
        "{table}"
    );
    env.run(&["cell", "archive", &uuid]).success();
    wait_for("state.json final", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]["a"]["state"] == "exited" && s["agent_health"]["a"]["pid"].is_null()
        })
    });
    let status = env.run(&["status", &uuid, "--json"]).json();
    assert_eq!(
        status["cells"][0]["agents"][0]["state"], "exited",
        "{status:#}"
    );
}

#[test]
fn an_explicit_cgroup_base_that_cannot_be_used_stops_the_daemon_from_starting() {
    let env = env("[daemon]\ncgroup = \"/nonexistent/lazarus\"\n");
    std::fs::create_dir_all(&env.root).expect("root");
    let out = env.run(&["daemon"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("cgroup"), "{out:#?}");
}
