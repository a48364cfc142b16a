//! BRIEF section 7, revival: the real daemon starting, stopping and
//! reviving a real agent program (`tests/agent.sh`) inside its cell.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Env, alive, read_json, repo_file, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// Thresholds generous enough for a loaded CI machine (agents beat every
/// 0.2 s), short enough to keep tests quick.
pub(crate) const CONFIG: &str = "\
[cells]
heartbeat_stale_threshold = 2
resurrect_after = 3
kill_grace = 0.5
backoff_initial = 0.3
backoff_max = 5
poll_interval = 5
";

/// An agent entry running `tests/agent.sh MODE`.
fn agent(name: &str, mode: &str) -> Value {
    json!({
        "name": name,
        "role": "worker",
        "command": ["/bin/sh", repo_file("tests/agent.sh"), mode],
        "env": {"CUSTOM": format!("custom-{name}"), "LAZARUS_AGENT": "spoofed"},
    })
}

fn env() -> Env {
    let env = Env::new();
    env.config(CONFIG);
    env
}

fn agent_state(env: &Env, uuid: &str, agent: &str) -> Option<String> {
    env.state(uuid)?["agent_health"][agent]["state"]
        .as_str()
        .map(str::to_string)
}

/// Every event line and the `state.json` the cell holds match the schemas.
fn assert_schemas(env: &Env, uuid: &str) {
    let events = crate::section_schemas::validator("event");
    for e in env
        .events_named(uuid, "")
        .into_iter()
        .chain(crate::harness::read_jsonl(
            &env.cell(uuid).join("logs/events.jsonl"),
        ))
    {
        let errors: Vec<String> = events.iter_errors(&e).map(|x| x.to_string()).collect();
        assert!(errors.is_empty(), "{e}: {errors:?}");
    }
    let state = env.state(uuid).expect("state.json");
    let errors: Vec<String> = crate::section_schemas::validator("state")
        .iter_errors(&state)
        .map(|x| x.to_string())
        .collect();
    assert!(errors.is_empty(), "{state:#}: {errors:?}");
}

fn ts(e: &Value) -> f64 {
    let text = e["ts"].as_str().expect("ts");
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("rfc3339")
        .timestamp_millis() as f64
        / 1000.0
}

#[test]
fn a_hung_agent_is_killed_with_its_session_and_revived_in_its_cell() {
    let env = env();
    let uuid = env.create_from(&json!({"name": "hung", "agents": [agent("a", "hang-hard")]}));
    // A daemon under systemd: its notify socket must not reach agents, nor
    // a descriptor it inherited (fd 7, as socket activation would pass).
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args([
        "-c",
        "exec 7</dev/null; exec \"$0\" daemon",
        crate::harness::BIN,
    ]);
    for (key, value) in env.command(&[]).get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.env("NOTIFY_SOCKET", env.tmp.path().join("no-such-socket"));
    let _daemon = env.spawn_daemon_cmd(cmd);
    let first = env.pid_of(&uuid, "agent_started", "a", 1);
    let start = env.agent_start(&uuid, "a", first);
    assert_eq!(start["attempt"], "0");
    wait_for("the hung agent's child", WAIT, || {
        env.cell(&uuid).join("workspace/child-a.pid").exists()
    });
    let child: i32 = std::fs::read_to_string(env.cell(&uuid).join("workspace/child-a.pid"))
        .expect("child pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(alive(child));

    // Stale, with what /proc says of it; then stopped and revived.
    let stale = env.wait_event(&uuid, "agent_stale", 1, WAIT);
    assert_eq!(stale[0]["agent"], "a");
    let process = &stale[0]["process"];
    assert_eq!(process["pid"], first);
    assert!(
        ["S", "R", "D"].contains(&process["state"].as_str().expect("state")),
        "{process}"
    );
    assert!(process["rss_bytes"].as_u64().expect("rss") > 0);
    assert!(process["cpu_advanced"].is_boolean());
    let second = env.pid_of(&uuid, "agent_revived", "a", 1);
    assert_ne!(first, second);
    let revived = &env.of_agent(&uuid, "agent_revived", "a")[0];
    assert_eq!(revived["attempt"], 1);
    assert_eq!(revived["reason"], "stale");
    // It ignored SIGTERM: SIGKILL after kill_grace, and its child too.
    let exited = &env.of_agent(&uuid, "agent_exited", "a")[0];
    assert_eq!(exited["pid"], first);
    assert_eq!(exited["signal"], 9);
    assert!(!alive(first), "the hung instance is gone");
    wait_for("the child in its session to be killed", WAIT, || {
        !alive(child)
    });

    // The new instance: its own session, cwd workspace, the cell's env.
    let start = env.agent_start(&uuid, "a", second);
    let cell_dir = env.cell(&uuid).canonicalize().expect("canonical");
    assert_eq!(start["sid"], second.to_string(), "its own session");
    assert_eq!(
        start["cwd"],
        cell_dir.join("workspace").display().to_string()
    );
    assert_eq!(start["uuid"], uuid);
    assert_eq!(start["dir"], env.cell(&uuid).display().to_string());
    assert_eq!(start["agent"], "a", "LAZARUS_* win over the agent's env");
    assert_eq!(
        start["hb"],
        env.cell(&uuid)
            .join(".lazarus/heartbeats/a.json")
            .display()
            .to_string()
    );
    assert_eq!(start["attempt"], "1");
    assert_eq!(start["custom"], "custom-a");
    assert_eq!(start["notify"], "unset");
    assert_eq!(
        start["fd7"], "closed",
        "the daemon's descriptors stay its own"
    );
    env.wait_event(&uuid, "agent_recovered", 1, WAIT);

    // Both starts are in the log, each with a header naming its pid.
    let log = std::fs::read_to_string(env.cell(&uuid).join("logs/a.log")).expect("log");
    assert!(
        log.contains(&format!("starting a (start, attempt 0), pid {first}\n")),
        "{log}"
    );
    assert!(
        log.contains(&format!("reviving a (stale, attempt 1), pid {second}\n")),
        "{log}"
    );
    assert!(log.contains("agent a up, attempt 1"), "{log}");
    wait_for("state.json to show the new instance", WAIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]["a"]["pid"] == second && s["agent_health"]["a"]["revive_count"] == 1
        })
    });
    assert_schemas(&env, &uuid);
}

#[test]
fn a_crash_is_revived_at_once_and_a_clean_exit_is_finished() {
    let env = env();
    // Stale thresholds far beyond the test: only the exit can explain it.
    let uuid = env.create_from(
        &json!({"heartbeat_stale_threshold": 300, "resurrect_after": 600,
               "agents": [agent("crashy", "crash-once"), agent("done", "exit0")]}),
    );
    let _daemon = env.spawn_daemon(&[]);
    let first = env.pid_of(&uuid, "agent_started", "crashy", 1);
    let second = env.pid_of(&uuid, "agent_revived", "crashy", 1);
    let exited = &env.of_agent(&uuid, "agent_exited", "crashy")[0];
    assert_eq!(exited["pid"], first);
    assert_eq!(exited["code"], 3);
    let revived = &env.of_agent(&uuid, "agent_revived", "crashy")[0];
    assert_eq!(revived["reason"], "exited");
    assert!(
        ts(revived) - ts(exited) < 1.0,
        "revived at once: {exited} {revived}"
    );
    assert!(alive(second));

    // exit 0 under restart = on-failure: finished, not revived.
    wait_for("done to be exited", WAIT, || {
        agent_state(&env, &uuid, "done").as_deref() == Some("exited")
    });
    let done = &env.of_agent(&uuid, "agent_exited", "done")[0];
    assert_eq!(done["code"], 0);
    assert!(env.of_agent(&uuid, "agent_revived", "done").is_empty());
}

#[test]
fn a_crashed_agents_leftover_children_are_killed_before_it_restarts() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [agent("a", "crash-child")]}));
    let _daemon = env.spawn_daemon(&[]);
    let revived = env.pid_of(&uuid, "agent_revived", "a", 1);
    let child: i32 = std::fs::read_to_string(env.cell(&uuid).join("workspace/child-a.pid"))
        .expect("child pid")
        .trim()
        .parse()
        .expect("pid");
    // SIGKILL was sent before the revival; its delivery is asynchronous.
    wait_for("the crashed agent's child to go with it", WAIT, || {
        !alive(child)
    });
    assert!(alive(revived));
}

#[test]
fn max_attempts_with_growing_gaps_then_exhausted_until_revive() {
    let env = env();
    let uuid = env.create_from(&json!({"max_revive_attempts": 3, "agents": [agent("a", "crash")]}));
    let _daemon = env.spawn_daemon(&[]);
    let exhausted = env.wait_event(&uuid, "revive_exhausted", 1, WAIT);
    assert_eq!(exhausted[0]["attempts"], 3);
    wait_for("abandoned", WAIT, || {
        agent_state(&env, &uuid, "a").as_deref() == Some("abandoned")
    });
    let revived = env.of_agent(&uuid, "agent_revived", "a");
    assert_eq!(revived.len(), 3, "exactly max_revive_attempts revivals");
    let exited = env.of_agent(&uuid, "agent_exited", "a");
    assert_eq!(exited.len(), 4);
    // Gap from each death to its revival: 0, then 0.3 s, then 0.6 s.
    let gaps: Vec<f64> = (0..3).map(|i| ts(&revived[i]) - ts(&exited[i])).collect();
    assert!(gaps[0] < 0.3, "{gaps:?}");
    assert!(
        gaps[1] >= 0.29 && gaps[2] >= 0.59 && gaps[2] > gaps[1],
        "{gaps:?}"
    );
    for (i, r) in revived.iter().enumerate() {
        assert_eq!(r["attempt"], i + 1);
    }
    assert_eq!(env.events_named(&uuid, "revive_exhausted").len(), 1);

    // An operator's revive: a fresh count, reason manual.
    env.run(&["revive", &uuid, "a"]).success();
    wait_for("manual revival", WAIT, || {
        env.of_agent(&uuid, "agent_revived", "a").len() == 4
    });
    let manual = &env.of_agent(&uuid, "agent_revived", "a")[3];
    assert_eq!(manual["reason"], "manual");
    assert_eq!(manual["attempt"], 1);
    assert_schemas(&env, &uuid);
    assert_eq!(
        env.inbox(),
        Vec::<String>::new(),
        "the revive request is consumed"
    );
}

#[test]
fn policy_no_records_agent_dead() {
    let env = env();
    let uuid = env.create_from(&json!({"revive_policy": "no", "agents": [agent("a", "crash")]}));
    let _daemon = env.spawn_daemon(&[]);
    env.wait_event(&uuid, "agent_dead", 1, WAIT);
    wait_for("dead", WAIT, || {
        agent_state(&env, &uuid, "a").as_deref() == Some("dead")
    });
    assert!(env.of_agent(&uuid, "agent_revived", "a").is_empty());
}

#[test]
fn policy_ask_waits_for_approve_or_deny() {
    let env = env();
    let uuid = env.create_from(
        &json!({"revive_policy": "ask", "agents": [agent("a", "crash-once"), agent("b", "crash")]}),
    );
    // Before any daemon used this root, the CLI says so (a wrong config
    // is the likely cause), instead of dropping a request nobody reads.
    env.run(&["approve", &uuid, "a"])
        .fails(1, "no daemon has used this cells root");
    let _daemon = env.spawn_daemon(&[]);
    let requested = env.wait_event(&uuid, "revive_requested", 2, WAIT);
    let id_a = requested
        .iter()
        .find(|e| e["agent"] == "a")
        .expect("a asked")["request_id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for("awaiting approval", WAIT, || {
        agent_state(&env, &uuid, "a").as_deref() == Some("awaiting_approval")
    });
    // The question is in the daemon's own record (where `approve` looks),
    // and published in state.json for people and tools.
    let record = env.record(&uuid).expect("record");
    assert_eq!(record["agents"]["a"]["request"]["id"], id_a.as_str());
    assert_eq!(
        env.state(&uuid).expect("state")["agent_health"]["a"]["request_id"],
        id_a.as_str()
    );

    env.run(&["approve", &uuid, "a"]).success();
    let approved = env.wait_event(&uuid, "revive_approved", 1, WAIT);
    assert_eq!(approved[0]["request_id"], id_a.as_str());
    env.pid_of(&uuid, "agent_revived", "a", 1);
    assert_eq!(
        env.of_agent(&uuid, "agent_revived", "a")[0]["reason"],
        "approved"
    );
    wait_for("the answer to be consumed", WAIT, || env.inbox().is_empty());

    env.run(&["deny", &uuid, "b"]).success();
    env.wait_event(&uuid, "revive_denied", 1, WAIT);
    wait_for("b dead", WAIT, || {
        agent_state(&env, &uuid, "b").as_deref() == Some("dead")
    });
    assert!(env.of_agent(&uuid, "agent_revived", "b").is_empty());
    assert_schemas(&env, &uuid);
}

#[test]
fn policy_substitute_hands_over_to_a_healthy_agent() {
    let env = env();
    let mut a = agent("a", "crash");
    a["revive_policy"] = "substitute".into();
    a["substitutes"] = json!(["ghost", "b"]);
    let uuid = env.create_from(&json!({"agents": [a, agent("b", "beat")]}));
    let _daemon = env.spawn_daemon(&[]);
    let sub = env.wait_event(&uuid, "agent_substituted", 1, WAIT);
    // b may not have beaten yet when a first dies: then it is started for
    // a (it is down); either way b takes over and gets the packet.
    assert_eq!(sub[0]["agent"], "a");
    assert_eq!(sub[0]["substitute"], "b");
    let inbox = env.cell(&uuid).join("bus/inbox/b");
    wait_for("the handoff packet", WAIT, || {
        std::fs::read_dir(&inbox).is_ok_and(|mut d| d.next().is_some())
    });
    let packet = std::fs::read_dir(&inbox)
        .expect("inbox")
        .flatten()
        .next()
        .expect("packet")
        .path();
    let packet = read_json(&packet);
    assert_eq!(packet["dead_agent"], "a");
    assert_eq!(packet["substitute"], "b");
    assert_eq!(packet["cell"], uuid.as_str());
    assert_eq!(packet["reason"], "exited");
    assert!(env.of_agent(&uuid, "agent_revived", "a").is_empty());
    wait_for("state.json", WAIT, || env.state(&uuid).is_some());
    assert_schemas(&env, &uuid);
}

#[test]
fn a_substitute_that_is_down_is_started_for_the_dead_agent() {
    let env = env();
    let mut a = agent("a", "crash");
    a["revive_policy"] = "substitute".into();
    a["substitutes"] = json!(["b"]);
    let mut b = agent("b", "beat");
    b["autostart"] = false.into();
    let uuid = env.create_from(&json!({"agents": [a, b]}));
    let _daemon = env.spawn_daemon(&[]);
    let started = env.pid_of(&uuid, "agent_started", "b", 1);
    let start = env.agent_start(&uuid, "b", started);
    assert_eq!(start["substitute_for"], "a");
    let sub = &env.events_named(&uuid, "agent_substituted")[0];
    assert_eq!(sub["started"], true);
}

#[test]
fn a_daemon_restart_adopts_running_agents() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [agent("a", "crash-once")]}));
    let daemon = env.spawn_daemon(&[]);
    let running = env.pid_of(&uuid, "agent_revived", "a", 1);
    wait_for("state.json with the instance", WAIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["pid"] == running)
    });
    let (status, _) = daemon.stop(Duration::from_secs(5));
    assert!(status.success());
    assert!(alive(running), "agents outlive the daemon");

    let daemon = env.spawn_daemon(&[]);
    daemon.wait_log(&format!("adopted agent a (pid {running})"), WAIT);
    // Give it a witnessed moment: the first state.json of the new daemon.
    wait_for("the new daemon's state.json", WAIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["daemon_pid"] == daemon.pid())
    });
    assert_eq!(env.of_agent(&uuid, "agent_started", "a").len(), 1);
    assert_eq!(env.of_agent(&uuid, "agent_revived", "a").len(), 1);
    let state = env.state(&uuid).expect("state");
    assert_eq!(state["agent_health"]["a"]["pid"], running);
    assert_eq!(state["agent_health"]["a"]["revive_count"], 1);

    // The adopted instance is still watched for exit (through a pidfd).
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(running),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let exited = env.wait_event(&uuid, "agent_exited", 2, WAIT);
    assert_eq!(exited[1]["pid"], running);
    let again = env.pid_of(&uuid, "agent_revived", "a", 2);
    let revived = &env.of_agent(&uuid, "agent_revived", "a")[1];
    assert_eq!(revived["attempt"], 2, "the count survived the restart");
    assert!(alive(again));
    assert_schemas(&env, &uuid);
}

#[test]
fn a_pid_written_in_a_heartbeat_is_never_signalled_without_proof() {
    let env = env();
    let mut bystander = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("sleep");
    let victim = bystander.id() as i32;
    let mut a = agent("a", "beat");
    a["autostart"] = false.into();
    let uuid = env.create_from(&json!({"agents": [a]}));
    // "a" runs outside the daemon and claims the bystander's pid.
    let hb = env.cell(&uuid).join(".lazarus/heartbeats/a.json");
    std::fs::write(
        &hb,
        json!({"timestamp": crate::harness::now(), "pid": victim}).to_string(),
    )
    .expect("heartbeat");
    let _daemon = env.spawn_daemon(&[]);
    // Silent: stale, due, "stopped" (not: no proof), started anew.
    env.pid_of(&uuid, "agent_revived", "a", 1);
    assert!(alive(victim), "the bystander was not signalled");
    assert!(env.of_agent(&uuid, "agent_exited", "a").is_empty());
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn the_notification_hook_gets_the_event_line_and_environment() {
    let env = env();
    let out = env.tmp.path().join("hook-out");
    std::fs::create_dir(&out).expect("dir");
    env.config(&format!(
        "{CONFIG}\n[notifications]\ncommand = [\"/bin/sh\", \"-c\", \
         'cat > \"$0/$LAZARUS_EVENT.json.tmp\"; env | grep ^LAZARUS_ > \"$0/$LAZARUS_EVENT.env\"; \
         mv \"$0/$LAZARUS_EVENT.json.tmp\" \"$0/$LAZARUS_EVENT.json\"', \"{}\"]\n",
        out.display()
    ));
    let uuid = env.create_from(&json!({"agents": [agent("a", "crash-once")]}));
    let _daemon = env.spawn_daemon(&[]);
    let file = out.join("agent_revived.json");
    wait_for("the hook's output", WAIT, || file.exists());
    let line = std::fs::read_to_string(&file).expect("hook stdin");
    assert!(
        line.ends_with('\n') && line.lines().count() == 1,
        "{line:?}"
    );
    let event: Value = serde_json::from_str(&line).expect("one JSON line");
    assert_eq!(event["event"], "agent_revived");
    assert_eq!(event["cell"], uuid.as_str());
    assert_eq!(event["agent"], "a");
    let vars = std::fs::read_to_string(out.join("agent_revived.env")).expect("env");
    assert!(vars.contains("LAZARUS_EVENT=agent_revived"), "{vars}");
    assert!(
        vars.contains(&format!("LAZARUS_CELL_UUID={uuid}")),
        "{vars}"
    );
    assert!(vars.contains("LAZARUS_AGENT=a"), "{vars}");
    // agent_started is not among the default events.
    assert!(!out.join("agent_started.json").exists());
}

#[test]
fn demo_exits_zero_and_cleans_up() {
    let env = Env::new();
    let run = env.run(&["demo"]).success();
    for needle in [
        "agent_stale",
        "agent_revived",
        "agent_recovered",
        "reason stale",
        "reason exited",
        "checkpoint_created",
        "checkpoint_restored",
        "reason restored",
        "plan.md is back",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
    let root = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("root"))
        .expect("root line")
        .trim()
        .to_string();
    assert!(!std::path::Path::new(&root).exists(), "{root} removed");
}

/// Runs a shipped hook with a fake `curl` that records its arguments
/// (separated by NUL, calls by RS) and answers like Gitea.
fn run_hook(env: &Env, hook: &str, event: &str, vars: &[(&str, &str)]) -> Vec<Vec<String>> {
    let bin = env.tmp.path().join("bin");
    let log = env.tmp.path().join("curl.log");
    std::fs::create_dir_all(&bin).expect("bin");
    let curl = bin.join("curl");
    std::fs::write(
        &curl,
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> \"$CURL_LOG\"\n\
         printf '\\036' >> \"$CURL_LOG\"\necho '{\"id\":9,\"number\":42,\"title\":\"t\"}'\n",
    )
    .expect("curl");
    std::process::Command::new("chmod")
        .args(["+x", curl.to_str().expect("utf-8")])
        .status()
        .expect("chmod");
    let line = json!({"ts": "2026-11-22T00:00:00.000Z", "event": event, "cell": "c-1",
                      "agent": "a", "note": "a \"quoted\" \\ value"})
    .to_string();
    let mut cmd = std::process::Command::new(repo_file(&format!("templates/hooks/{hook}")));
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .env("CURL_LOG", &log)
    .env("LAZARUS_EVENT", event)
    .env("LAZARUS_CELL_UUID", "c-1")
    .env("LAZARUS_AGENT", "a")
    .env("LAZARUS_HOOK_STATE", env.tmp.path().join("hook-state"))
    .envs(vars.iter().copied())
    .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("hook");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{line}\n").as_bytes())
        .expect("stdin");
    assert!(
        child.wait().expect("wait").success(),
        "{hook} {event} failed"
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_file(&log).ok();
    calls
        .split('\x1e')
        .filter(|c| !c.is_empty())
        .map(|l| {
            l.split('\0')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The argument after `flag` in one curl call.
fn arg_after<'a>(call: &'a [String], flag: &str) -> &'a str {
    let i = call.iter().position(|a| a == flag).expect(flag);
    &call[i + 1]
}

#[test]
fn the_shipped_gitea_hook_opens_and_closes_one_issue_per_agent() {
    let env = Env::new();
    let gitea = [
        ("LAZARUS_GITEA_URL", "https://gitea.example/"),
        ("LAZARUS_GITEA_REPO", "owner/repo"),
        ("GITEA_TOKEN", "s3cret"),
    ];
    let calls = run_hook(&env, "gitea-issue.sh", "revive_exhausted", &gitea);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let open = &calls[0];
    assert_eq!(arg_after(open, "-X"), "POST");
    assert!(open.contains(&"Authorization: token s3cret".to_string()));
    assert_eq!(
        open.last().map(String::as_str),
        Some("https://gitea.example/api/v1/repos/owner/repo/issues")
    );
    let body: Value = serde_json::from_str(arg_after(open, "-d")).expect("valid JSON body");
    assert!(
        body["title"]
            .as_str()
            .expect("title")
            .contains("agent a of cell c-1")
    );
    assert!(
        body["body"]
            .as_str()
            .expect("body")
            .contains(r#""note":"a \"quoted\" \\ value""#)
    );
    // Still down: no second issue.
    assert!(run_hook(&env, "gitea-issue.sh", "agent_dead", &gitea).is_empty());
    // Revived: a comment, then the issue (number 42 from the reply) closed.
    let calls = run_hook(&env, "gitea-issue.sh", "agent_revived", &gitea);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0]
            .last()
            .expect("url")
            .ends_with("/issues/42/comments")
    );
    serde_json::from_str::<Value>(arg_after(&calls[0], "-d")).expect("valid JSON comment");
    assert_eq!(arg_after(&calls[1], "-X"), "PATCH");
    assert!(calls[1].last().expect("url").ends_with("/issues/42"));
    assert_eq!(arg_after(&calls[1], "-d"), r#"{"state": "closed"}"#);
    assert!(run_hook(&env, "gitea-issue.sh", "agent_recovered", &gitea).is_empty());
}

#[test]
fn the_shipped_telegram_hook_posts_to_the_chat() {
    let env = Env::new();
    let calls = run_hook(
        &env,
        "telegram.sh",
        "agent_stale",
        &[
            ("TELEGRAM_BOT_TOKEN", "123:abc"),
            ("TELEGRAM_CHAT_ID", "-1001"),
            ("TELEGRAM_API", "https://tg.example"),
        ],
    );
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(
        call.last().map(String::as_str),
        Some("https://tg.example/bot123:abc/sendMessage")
    );
    assert!(call.contains(&"chat_id=-1001".to_string()), "{call:?}");
    let text = call.iter().find(|a| a.starts_with("text=")).expect("text");
    assert!(text.contains("agent a of cell c-1 went silent"), "{text}");
    assert!(text.contains(r#""event":"agent_stale""#), "{text}");
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root: the agent runs as another user")]
fn as_root_an_agent_runs_as_the_owner_of_its_cell() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "built as root, run as root"
    );
    let env = env();
    let uuid = env.create_from(&json!({"agents": [agent("a", "beat")]}));
    // The cell belongs to `nobody`; the test root's parents must let it in.
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(env.cell(&uuid))
        .status()
        .expect("chown");
    assert!(status.success());
    std::process::Command::new("chmod")
        .args(["755"])
        .arg(env.tmp.path())
        .arg(&env.root)
        .status()
        .expect("chmod");
    let _daemon = env.spawn_daemon(&[]);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    let start = env.agent_start(&uuid, "a", pid);
    assert_eq!(start["uid"], "65534");
    assert_eq!(start["gid"], "65534");
    // It can beat into its own cell.
    env.wait_event(&uuid, "heartbeat", 1, WAIT);
    let log = env.cell(&uuid).join("logs/a.log");
    let meta = std::fs::metadata(&log).expect("log");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), 65534, "its log belongs to it too");
}

#[test]
fn an_agent_beating_fresh_at_start_is_watched_not_started() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [agent("a", "beat"), agent("b", "beat")]}));
    // "a" already runs somewhere: its heartbeat is fresh.
    std::fs::write(
        env.cell(&uuid).join(".lazarus/heartbeats/a.json"),
        json!({"timestamp": crate::harness::now()}).to_string(),
    )
    .expect("heartbeat");
    let _daemon = env.spawn_daemon(&[]);
    // b is started; by then a has been judged (they are read in one pass).
    env.pid_of(&uuid, "agent_started", "b", 1);
    wait_for("a healthy in state.json", WAIT, || {
        agent_state(&env, &uuid, "a").as_deref() == Some("healthy")
    });
    assert!(env.of_agent(&uuid, "agent_started", "a").is_empty());
    // Watched until it dies: silent, it is revived (its command is known).
    let revived = env.pid_of(&uuid, "agent_revived", "a", 1);
    assert_eq!(
        env.of_agent(&uuid, "agent_revived", "a")[0]["reason"],
        "stale"
    );
    assert!(alive(revived));
}

#[test]
fn a_hook_that_hangs_blocks_neither_revivals_nor_shutdown() {
    let env = env();
    env.config(&format!(
        "{CONFIG}\n[notifications]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 60 & wait\"]\n\
         events = [\"agent_started\", \"agent_exited\", \"agent_revived\"]\n"
    ));
    let uuid = env.create_from(&json!({"max_revive_attempts": 8, "agents": [agent("a", "crash")]}));
    let daemon = env.spawn_daemon(&[]);
    // Far more hook runs than may run at once: revivals go on regardless.
    env.pid_of(&uuid, "agent_revived", "a", 6);
    let (status, took) = daemon.stop(Duration::from_secs(5));
    assert!(status.success());
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The hooks went with the daemon, children included (their group).
    let here = std::env::current_dir().expect("cwd");
    let leftovers = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter(|p| {
                std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0060\x00")
                    && std::fs::read_link(p.path().join("cwd"))
                        .is_ok_and(|cwd| cwd.starts_with(&here))
            })
            .map(|p| std::fs::read_to_string(p.path().join("stat")).unwrap_or_default())
            .collect()
    };
    let limit = std::time::Instant::now() + WAIT;
    while !leftovers().is_empty() {
        assert!(
            std::time::Instant::now() < limit,
            "hook processes outlived the daemon: {:#?}",
            leftovers()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_agent_joining_a_watched_cell_is_started_at_once() {
    let env = env();
    let uuid = env.create(&["--agent", "watcher"]);
    let daemon = env.spawn_daemon(&[]);
    daemon.wait_log("ready:", WAIT);
    let script = repo_file("tests/agent.sh");
    env.run(&[
        "cell",
        "join",
        &uuid,
        "--agent",
        "late",
        "--env",
        "CUSTOM=joined",
        "--",
        "/bin/sh",
        script.to_str().expect("utf-8"),
        "beat",
    ])
    .success();
    let pid = env.pid_of(&uuid, "agent_started", "late", 1);
    let start = env.agent_start(&uuid, "late", pid);
    assert_eq!(start["custom"], "joined");
    assert_eq!(start["attempt"], "0");
    env.wait_event(&uuid, "heartbeat", 1, WAIT);
}
