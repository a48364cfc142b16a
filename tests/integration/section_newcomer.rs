//! What a new operator trips over (issue "What a new operator trips
//! over"): agent settings from the command line (BRIEF 8 `cell join`
//! flags, `cell set`), `status` that agrees with the processes and the
//! heartbeat files, one exit-code rule, and checks that only look.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{BIN, Env, alive, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// Short deadlines for a daemon; the stale threshold is long where a test
/// must see something happen well before it.
const CONFIG: &str = "\
[cells]
heartbeat_stale_threshold = 2
resurrect_after = 3
kill_grace = 0.5
backoff_initial = 0.3
poll_interval = 5
";

fn env() -> Env {
    let env = Env::new();
    env.config(CONFIG);
    env
}

/// A shell agent: `script` with `$LP` naming the binary.
fn shell(script: &str) -> Value {
    json!(["/bin/sh", "-c", script.replace("$LP", BIN)])
}

fn status_json(env: &Env) -> Value {
    env.run(&["status", "--json"]).reported().json()
}

fn agent_report(status: &Value, agent: &str) -> Value {
    status["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["agents"].as_array().cloned().unwrap_or_default())
        .find(|a| a["name"] == agent)
        .unwrap_or_else(|| panic!("no {agent} in {status:#}"))
}

#[test]
fn join_takes_every_agent_field_as_a_flag() {
    let env = env();
    let uuid = env.create(&["--agent", "helper"]);
    env.run(&[
        "cell",
        "join",
        &uuid,
        "--agent",
        "w",
        "--revive-policy",
        "substitute",
        "--restart",
        "always",
        "--autostart",
        "false",
        "--substitute",
        "helper",
        "--stale-after",
        "30",
        "--resurrect-after",
        "1.5",
        "--isolation",
        "directory",
        "--",
        "/bin/sleep",
        "100",
    ])
    .success();
    let w = &env.manifest(&uuid)["agents"][1];
    assert_eq!(w["revive_policy"], "substitute");
    assert_eq!(w["restart"], "always");
    assert_eq!(w["autostart"], false);
    assert_eq!(w["substitutes"], json!(["helper"]));
    assert_eq!(w["heartbeat_stale_threshold"], 30, "{w}");
    assert_eq!(w["resurrect_after"], 1.5);
    assert_eq!(w["isolation"], "directory");
    assert_eq!(w["command"], json!(["/bin/sleep", "100"]));
    // A value that can never be right is a usage error; nothing is added.
    for bad in [
        ["--stale-after", "soon"],
        ["--stale-after", "-4"],
        ["--revive-policy", "maybe"],
        ["--autostart", "perhaps"],
    ] {
        let run = env.run(&["cell", "join", &uuid, "--agent", "x", bad[0], bad[1]]);
        assert_eq!(run.code, Some(2), "{run:#?}");
    }
    assert_eq!(
        env.manifest(&uuid)["agents"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn cell_set_edits_fields_and_keeps_what_it_does_not_know() {
    let env = env();
    let uuid = env.create_from(&json!({
        "name": "edits",
        "gitea_issue": 42,
        "agents": [{"name": "a", "home": "/h", "mine": {"deep": [1, 2]}}],
    }));
    let out = env
        .run(&[
            "cell",
            "set",
            &uuid,
            "--agent",
            "a",
            "revive_policy=ask",
            "stale_after=45",
            "env.MODE=fast",
            "limits.nofile=512",
        ])
        .success()
        .stdout;
    assert!(out.contains("revive_policy: (unset) -> ask"), "{out}");
    env.run(&[
        "cell",
        "set",
        "edits",
        "max_revive_attempts=7",
        "mission=ship",
    ])
    .success();
    let m = env.manifest(&uuid);
    assert_eq!(m["gitea_issue"], 42);
    assert_eq!(m["max_revive_attempts"], 7);
    assert_eq!(m["mission"], "ship");
    let a = &m["agents"][0];
    assert_eq!(a["mine"], json!({"deep": [1, 2]}));
    assert_eq!(a["home"], "/h");
    assert_eq!(a["revive_policy"], "ask");
    assert_eq!(a["heartbeat_stale_threshold"], 45);
    assert_eq!(a["env"], json!({"MODE": "fast"}));
    assert_eq!(a["limits"], json!({"nofile": 512}));
    // An empty value removes the field: the next level applies.
    env.run(&["cell", "set", &uuid, "--agent", "a", "revive_policy="])
        .success();
    assert!(
        env.manifest(&uuid)["agents"][0]
            .get("revive_policy")
            .is_none()
    );
    // Mistakes: the field, the value, the level, the agent.
    env.run(&["cell", "set", &uuid, "--agent", "a", "revive_polcy=no"])
        .fails(2, "did you mean revive_policy?");
    env.run(&["cell", "set", &uuid, "--agent", "a", "restart=sometimes"])
        .fails(2, "expected one of on-failure, always");
    env.run(&["cell", "set", &uuid, "autostart=false"])
        .fails(2, "add --agent");
    env.run(&["cell", "set", &uuid, "status=archived"])
        .fails(2, "cell freeze, thaw, archive or destroy");
    env.run(&["cell", "set", &uuid, "--agent", "ghost", "restart=always"])
        .fails(1, "no agent named \"ghost\"");
    env.run(&["cell", "set", &uuid, "nonsense"])
        .fails(2, "expected KEY=VALUE");
    assert_eq!(
        env.manifest(&uuid)["agents"][0]["heartbeat_stale_threshold"],
        45
    );
}

#[test]
fn cell_show_says_each_setting_and_where_it_comes_from() {
    let env = Env::new();
    env.config("[cells]\nresurrect_after = 90\n");
    let uuid = env.create_from(&json!({
        "revive_policy": "no",
        "agents": [{"name": "a", "heartbeat_stale_threshold": 5, "env": {"TOKEN": "s3cret"}}],
    }));
    let out = env.run(&["cell", "show", &uuid]).success().stdout;
    let line = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .to_string()
    };
    assert!(line("heartbeat_stale_threshold").contains("5s"), "{out}");
    assert!(
        line("heartbeat_stale_threshold").ends_with("(agent)"),
        "{out}"
    );
    assert!(line("revive_policy").contains("no"), "{out}");
    assert!(line("revive_policy").ends_with("(cell)"), "{out}");
    assert!(line("resurrect_after").contains("90s"), "{out}");
    assert!(line("resurrect_after").ends_with("(config)"), "{out}");
    assert!(line("max_revive_attempts").ends_with("(default)"), "{out}");
    assert!(line("env").contains("TOKEN"), "{out}");
    assert!(!out.contains("s3cret"), "env values are not shown: {out}");
}

#[test]
fn the_daemon_says_when_it_takes_a_settings_change() {
    let env = env();
    // A supervised agent: a watched one's settings only matter once it
    // has a command, so their changes are not reported.
    let uuid = env.create_from(&json!({"agents": [{"name": "a", "command": ["sleep", "300"]}]}));
    let _daemon = env.daemon(&[]);
    env.run(&[
        "cell",
        "set",
        &uuid,
        "--agent",
        "a",
        "stale_after=30",
        "restart=always",
    ])
    .success();
    let changed = env.wait_event(&uuid, "settings_changed", 1, WAIT);
    assert_eq!(changed[0]["agent"], "a");
    assert_eq!(
        changed[0]["changed"],
        json!({"heartbeat_stale_threshold": 30, "restart": "always"})
    );
    // The cell's own timers: no agent.
    env.run(&["cell", "set", &uuid, "idle_timeout=1000"])
        .success();
    let changed = env.wait_event(&uuid, "settings_changed", 2, WAIT);
    assert!(changed[1].get("agent").is_none(), "{}", changed[1]);
    assert_eq!(changed[1]["changed"], json!({"idle_timeout": 1000}));
    // Env values are secrets: named, never shown.
    let out = env
        .run(&["cell", "set", &uuid, "--agent", "a", "env.TOKEN=s3cret"])
        .success()
        .stdout;
    assert!(
        out.contains("env.TOKEN") && !out.contains("s3cret"),
        "{out}"
    );
    let changed = env.wait_event(&uuid, "settings_changed", 3, WAIT);
    assert!(!changed[2].to_string().contains("s3cret"), "{}", changed[2]);
    assert_eq!(changed[2]["changed"], json!({"env": ["TOKEN"]}));
}

#[test]
fn what_can_never_be_right_is_refused_before_the_cell_is_read() {
    let env = env();
    let uuid = env.create(&["--agent", "a"]);
    // A usage error whatever the CELL (exit 2, not "no such cell").
    env.run(&["cell", "set", "nosuch", "bogus=1"])
        .fails(2, "bogus");
    env.run(&[
        "cell",
        "join",
        "nosuch",
        "--agent",
        "b",
        "--stale-after",
        "abc",
    ])
    .fails(2, "abc");
    env.run(&["cell", "destroy", "nosuch"]).fails(2, "--yes");
    for bad in [
        "env.A B=x",
        "env.LAZARUS_AGENT=x",
        "command=[\"\"]",
        "command= ",
        "stale_after=1e-12",
    ] {
        env.run(&["cell", "set", &uuid, "--agent", "a", bad])
            .fails(2, "");
    }
    env.run(&["cell", "join", &uuid, "--agent", "b", "--", ""])
        .fails(2, "no program");
    env.run(&["cell", "join", &uuid, "--agent", "b", "--env", "1X=y"])
        .fails(2, "environment variable name");
    // A cell.json every command could no longer read is never written.
    // (One argument may hold at most 128 KiB, so the bulk comes in pieces.)
    let big = "x".repeat(120_000);
    let pairs = |from: usize| -> Vec<String> {
        (from..from + 5)
            .map(|i| format!("env.K{i}={big}"))
            .collect()
    };
    let set = |pairs: &[String]| {
        let mut args = vec!["cell", "set", &uuid, "--agent", "a"];
        args.extend(pairs.iter().map(String::as_str));
        env.run(&args)
    };
    set(&pairs(0)).success();
    set(&pairs(5)).fails(1, "more than the 1048576");
    env.run(&["cell", "show", &uuid]).success();
    let unset: Vec<String> = (0..5).map(|i| format!("env.K{i}=")).collect();
    set(&unset).success();
    // A hostile manifest is the cell's fault, not the command line's.
    env.edit_manifest(&uuid, |m| m["agents"][0]["env"] = json!("str"));
    let run = env.run(&["cell", "set", &uuid, "--agent", "a", "restart=always"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
}

#[test]
fn daemon_once_without_its_config_could_not_run() {
    let env = env();
    env.create(&[]);
    let mut cmd = env.command(&["daemon", "--once"]);
    cmd.env("LAZARUS_CONFIG", env.tmp.path().join("missing.toml"));
    let run = env.run_cmd(cmd, &["daemon", "--once"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
}

#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs root where unshare(CLONE_NEWNS) is permitted"
)]
fn a_program_the_mount_namespace_hides_is_refused() {
    let env = env();
    let uuid = env.create(&[]);
    let dir = tempfile::tempdir_in("/tmp").expect("tmp");
    let program = dir.path().join("agent.sh");
    std::fs::write(&program, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let p = program.to_str().expect("utf-8");
    env.run(&[
        "cell",
        "join",
        &uuid,
        "--agent",
        "a",
        "--isolation",
        "mount-namespace",
        "--",
        p,
    ])
    .fails(1, "private one");
    // Fine at directory isolation; then the change of level is checked.
    env.run(&["cell", "join", &uuid, "--agent", "a", "--", p])
        .success();
    env.run(&[
        "cell",
        "set",
        &uuid,
        "--agent",
        "a",
        "isolation=mount-namespace",
    ])
    .fails(1, "private one");
}

#[test]
fn status_goes_by_the_newest_beat_the_daemon_accepted() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [{"name": "a"}]}));
    env.beat(&uuid, "a", "now");
    let _daemon = env.daemon(&[]);
    wait_for("a healthy in the records", WAIT, || {
        agent_report(&status_json(&env), "a")["state"] == "healthy"
    });
    // The agent rewrites its file with an older time: the daemon keeps the
    // newest, and status neither ages it nor calls it unjudged.
    env.beat_at(&uuid, "a", crate::harness::now() - 100.0, "old");
    let a = agent_report(&status_json(&env), "a");
    assert_eq!(a["state"], "healthy", "{a}");
    assert!(a["heartbeat_age_s"].as_f64().expect("age") < 50.0, "{a}");
    assert!(
        a["note"].as_str().expect("note").contains("older time"),
        "{a}"
    );
}

#[test]
fn a_command_given_to_a_watched_agent_starts_it_at_once() {
    let env = Env::new();
    // Stale only after a minute: a start must not wait for that.
    env.config("[cells]\nheartbeat_stale_threshold = 60\nresurrect_after = 120\n");
    let uuid = env.create(&["--agent", "w"]);
    let _daemon = env.daemon(&[]);
    env.run(&[
        "cell",
        "set",
        &uuid,
        "--agent",
        "w",
        "command=exec sleep 300",
    ])
    .success();
    let started = env.wait_event(&uuid, "agent_started", 1, Duration::from_secs(10));
    let pid = started[0]["pid"].as_i64().expect("pid") as i32;
    assert!(alive(pid));
    assert!(env.events_named(&uuid, "agent_revived").is_empty());
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
}

#[test]
fn a_program_that_cannot_be_found_is_refused_at_join() {
    let env = env();
    let uuid = env.create(&[]);
    env.run(&[
        "cell",
        "join",
        &uuid,
        "--agent",
        "a",
        "--",
        "/nonexistent/agent",
    ])
    .fails(1, "its program /nonexistent/agent does not exist");
    env.run(&[
        "cell",
        "join",
        &uuid,
        "--agent",
        "a",
        "--",
        "no-such-program-xyz",
        "-v",
    ])
    .fails(1, "is not found on the PATH");
    env.run(&["cell", "join", &uuid, "--agent", "a", "--", "./run.sh"])
        .fails(1, "does not exist");
    std::fs::write(env.cell(&uuid).join("workspace/run.sh"), "#!/bin/sh\n").expect("script");
    env.run(&["cell", "join", &uuid, "--agent", "a", "--", "./run.sh"])
        .fails(1, "is not executable");
    assert!(
        env.manifest(&uuid)["agents"]
            .as_array()
            .expect("agents")
            .is_empty()
    );
    env.run(&["cell", "join", &uuid, "--agent", "a", "--", "true"])
        .success();
    // A shell line is the shell's to resolve.
    env.run(&[
        "cell",
        "join",
        &uuid,
        "--agent",
        "b",
        "--",
        "no-such-program-xyz --flag",
    ])
    .success();
    env.run(&[
        "cell",
        "set",
        &uuid,
        "--agent",
        "a",
        r#"command=["/nonexistent/x"]"#,
    ])
    .fails(1, "does not exist");
}

#[test]
fn a_start_that_fails_is_revive_failed_with_the_error_never_an_exit() {
    let env = env();
    // Written by another tool: nothing refused it at join.
    let uuid = env.create_from(&json!({"agents": [
        {"name": "a", "command": ["/nonexistent/agent"]},
    ]}));
    let _daemon = env.daemon(&[]);
    let failed = env.wait_event(&uuid, "revive_failed", 4, WAIT);
    assert!(
        failed[0]["error"]
            .as_str()
            .expect("error")
            .contains("/nonexistent/agent"),
        "{failed:?}"
    );
    assert_eq!(failed[0]["reason"], "start");
    for f in &failed[1..] {
        assert_eq!(f["reason"], "start_failed", "{f}");
    }
    env.wait_event(&uuid, "revive_exhausted", 1, WAIT);
    assert!(env.events_named(&uuid, "agent_exited").is_empty());
    wait_for("abandoned in the daemon's records", WAIT, || {
        agent_report(&status_json(&env), "a")["state"] == "abandoned"
    });
    let a = agent_report(&status_json(&env), "a");
    assert!(
        a["why"]
            .as_str()
            .expect("why")
            .starts_with("could not start:"),
        "{a}"
    );
    let table = env.run(&["status"]).reported().stdout;
    assert!(table.contains("why: could not start:"), "{table}");
}

#[test]
fn a_heartbeat_for_an_agent_the_cell_does_not_have_fails() {
    let env = env();
    let uuid = env.create(&["--agent", "worker"]);
    env.run(&["heartbeat", "--cell", &uuid, "--agent", "wroker"])
        .fails(1, "did you mean worker?");
    let file = env.cell(&uuid).join(".lazarus/heartbeats/wroker.json");
    assert!(!file.exists());
    env.run(&["heartbeat", "--cell", &uuid, "--agent", "wroker", "--force"])
        .success();
    assert!(file.exists());
    env.run(&["heartbeat", "--cell", &uuid, "--agent", "worker"])
        .success();
}

#[test]
fn cells_are_addressed_by_a_unique_name() {
    let env = env();
    let uuid = env.create(&["--name", "deploy-fix"]);
    let out = env.run(&["cell", "show", "deploy-fix"]).success().stdout;
    assert!(out.contains(&uuid), "{out}");
    env.run(&["cell", "join", "deploy-fix", "--agent", "a"])
        .success();
    env.run(&["status", "deploy-fix"]).reported();
    // A second cell of that name: said at create, and ambiguous after.
    let run = env
        .run(&["cell", "create", "--name", "deploy-fix"])
        .success();
    assert!(run.stderr.contains("also reaches"), "{run:#?}");
    let other = run.stdout.trim().to_string();
    let run = env
        .run(&["cell", "show", "deploy-fix"])
        .fails(1, "matches 2 cells");
    assert!(
        run.stderr.contains(&uuid) && run.stderr.contains(&other),
        "{run:#?}"
    );
    env.run(&["cell", "show", "no-such-name"])
        .fails(1, "no-such-name");
}

#[test]
fn a_name_never_wins_over_another_cells_id() {
    let env = env();
    let target = env.create(&[]);
    let prefix = &target[..2];
    // An agent of another cell names its cell after the target's prefix.
    let run = env.run(&["cell", "create", "--name", prefix]).success();
    assert!(run.stderr.contains("also reaches"), "{run:#?}");
    let rogue = run.stdout.trim().to_string();
    let run = env
        .run(&["cell", "show", prefix])
        .fails(1, "matches 2 cells");
    assert!(
        run.stderr.contains(&target) && run.stderr.contains(&rogue),
        "{run:#?}"
    );
    // A cell found by name alone while another's cell.json is unreadable
    // (an agent can break its own) is refused: that one may say the same.
    let named = env.create(&["--name", "prod"]);
    std::fs::write(env.cell(&target).join("cell.json"), "{\"uuid\":").expect("break");
    let run = env
        .run(&["cell", "show", "prod"])
        .fails(1, "cell.json unreadable");
    assert!(run.stderr.contains(&named), "{run:#?}");
    env.run(&["cell", "show", &named[..8]]).success();
    // A destroyed cell holds no name.
    std::fs::write(env.cell(&target).join("cell.json"), "{}").expect("mend");
    env.run(&["cell", "destroy", "prod", "--yes"]).success();
    let again = env.create(&["--name", "prod"]);
    let out = env.run(&["cell", "show", "prod"]).success().stdout;
    assert!(out.contains(&again), "{out}");
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let env = env();
    let uuid = env.create(&["--agent", "a"]);
    let run = |args: &[&str]| env.run(args);
    for (args, code) in [
        (vec!["cell", "join", &uuid, "--agent", "bad/name"], 2),
        (vec!["revive", &uuid, "bad/name"], 2),
        (vec!["heartbeat", "--cell", &uuid, "--agent", ".hidden"], 2),
        (vec!["events", "--since", "yesterday-ish"], 2),
        (
            vec!["cell", "join", &uuid, "--agent", "b", "--env", "NOEQUALS"],
            2,
        ),
        (vec!["cell", "set", &uuid, "bogus=1"], 2),
        (vec!["status", "--no-such-flag"], 2),
        (vec!["cell", "show", "feedbeef"], 1),
        (vec!["revive", &uuid, "nobody"], 1),
        (vec!["cell", "leave", &uuid, "--agent", "nobody"], 1),
    ] {
        let r = run(&args);
        assert_eq!(r.code, Some(code), "{r:#?}");
        assert!(!r.stderr.trim().is_empty(), "{r:#?}");
    }
}

#[test]
fn the_same_mistake_gets_the_same_words() {
    let env = env();
    let uuid = env.create(&["--agent", "a"]);
    for verb in ["revive", "approve", "deny"] {
        env.run(&[verb, &uuid, "nobody"])
            .fails(1, "no agent of that name is in the cell");
    }
    env.run(&["cell", "leave", &uuid, "--agent", "nobody"])
        .fails(1, "no agent of that name is in the cell");
}

#[test]
fn usage_lines_do_not_show_environment_settings_as_flags() {
    let env = env();
    // LAZARUS_ROOT and LAZARUS_CONFIG are set by the harness.
    let run = env.run(&["cell", "join"]);
    assert_eq!(run.code, Some(2));
    let usage = run
        .stderr
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("{run:#?}"))
        .to_string();
    assert!(
        !usage.contains("--root") && !usage.contains("--config"),
        "{usage}"
    );
    // And the variables still count.
    let uuid = env.create(&[]);
    assert!(env.cell(&uuid).is_dir());
}

#[test]
fn a_mistyped_config_key_gets_a_suggestion() {
    let env = Env::new();
    env.create(&[]);
    env.config("[cells]\nheartbeat_stale_treshold = 5\n[deamon]\nlog_level = \"INFO\"\n");
    let run = env.run(&["cell", "list"]).success();
    assert!(
        run.stderr
            .contains("did you mean cells.heartbeat_stale_threshold?"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("did you mean [daemon]?"), "{run:#?}");
}

#[test]
fn the_bare_command_on_a_terminal_says_what_it_does() {
    let env = env();
    env.create(&[]);
    let pty = nix::pty::openpty(None, None).expect("pty");
    let mut cmd = env.command(&[]);
    let slave = std::fs::File::from(pty.slave);
    cmd.stderr(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave));
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut said = String::new();
    let mut buf = [0u8; 4096];
    wait_for("the bare command's line on the terminal", WAIT, || {
        if let Ok(n) = master.read(&mut buf) {
            said.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        said.contains("lazarus-pit --help")
    });
    assert!(
        said.contains("running the daemon in the foreground"),
        "{said}"
    );
    assert!(said.contains(&env.root.display().to_string()), "{said}");
    let _ = child.kill();
    let _ = child.wait();
    // Not into a pipe: scripts and units get the daemon's log only.
    let daemon = env.spawn_daemon(&[]);
    daemon.wait_log("ready:", WAIT);
    assert!(
        !daemon.log().contains("in the foreground"),
        "{}",
        daemon.log()
    );
    drop(daemon);
}

#[test]
fn daemon_once_tells_unhealthy_from_could_not_run() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [{"name": "fresh"}]}));
    env.beat(&uuid, "fresh", "ok");
    env.run(&["daemon", "--once"]).success();
    let _daemon = env.daemon(&[]);
    let run = env.run(&["daemon", "--once"]);
    assert_eq!(run.code, Some(3), "another daemon holds the root: {run:#?}");
    assert!(run.stderr.contains("already runs"), "{run:#?}");
}

#[test]
fn daemon_once_exits_1_for_an_unhealthy_agent() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [{"name": "old"}]}));
    // Its last heartbeat is a minute old: stale at first sight.
    env.beat_at(&uuid, "old", crate::harness::now() - 60.0, "x");
    let run = env.run(&["daemon", "--once"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
}

#[test]
fn deny_stops_a_hung_instance_and_status_agrees() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [{
        "name": "careful",
        "revive_policy": "ask",
        "command": shell("$LP heartbeat; kill -STOP $$"),
    }]}));
    let daemon = env.daemon(&[]);
    let pid = env.pid_of(&uuid, "agent_started", "careful", 1);
    env.wait_event(&uuid, "revive_requested", 1, WAIT);
    wait_for("the question in the daemon's records", WAIT, || {
        status_json(&env)["pending_approvals"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    assert!(alive(pid), "asking kills nothing");
    // Sent, not yet taken: the question is no longer shown as open.
    daemon.signal(nix::sys::signal::SIGSTOP);
    env.run(&["deny", &uuid, "careful"]).success();
    let status = status_json(&env);
    daemon.signal(nix::sys::signal::SIGCONT);
    let careful = agent_report(&status, "careful");
    assert!(
        careful["note"]
            .as_str()
            .expect("note")
            .contains("`deny` sent"),
        "{careful}"
    );
    assert_eq!(status["pending_approvals"], json!([]), "{status:#}");
    let exited = env.wait_event(&uuid, "agent_exited", 1, WAIT);
    assert_eq!(exited[0]["pid"], pid);
    wait_for("the denied instance to be gone", WAIT, || !alive(pid));
    wait_for("status to say dead, with no pid", WAIT, || {
        let a = agent_report(&status_json(&env), "careful");
        a["state"] == "dead" && a["pid"].is_null()
    });
    let a = agent_report(&status_json(&env), "careful");
    assert_eq!(a["why"], "its revival was denied by an operator", "{a}");
    assert!(env.events_named(&uuid, "agent_revived").is_empty());
}

#[test]
fn cpu_advanced_tells_a_stopped_process_from_a_busy_one() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [
        {"name": "stopped", "command": shell("$LP heartbeat; kill -STOP $$")},
        {"name": "busy", "command": shell("$LP heartbeat; while :; do :; done")},
    ]}));
    let _daemon = env.daemon(&[]);
    let stale = env.wait_event(&uuid, "agent_stale", 2, WAIT);
    let process = |agent: &str| {
        stale
            .iter()
            .find(|e| e["agent"] == agent)
            .map(|e| e["process"].clone())
            .unwrap_or_else(|| panic!("{stale:?}"))
    };
    let stopped = process("stopped");
    assert_eq!(stopped["state"], "T", "{stopped}");
    assert_eq!(stopped["cpu_advanced"], false, "{stopped}");
    let busy = process("busy");
    assert_eq!(busy["state"], "R", "{busy}");
    assert_eq!(busy["cpu_advanced"], true, "{busy}");
    assert!(
        busy["cpu_since_beat_s"].as_f64().expect("cpu") > 0.5,
        "{busy}"
    );
}

#[test]
fn status_says_why_an_agent_is_down_and_what_comes_next() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [
        {"name": "crashy", "revive_policy": "no", "command": shell("exit 3")},
    ]}));
    let _daemon = env.daemon(&[]);
    env.wait_event(&uuid, "agent_dead", 1, WAIT);
    wait_for("the daemon's record of crashy's death", WAIT, || {
        agent_report(&status_json(&env), "crashy")["why"] == "exited with code 3"
    });
    let table = env.run(&["status"]).reported().stdout;
    assert!(table.contains("why: exited with code 3"), "{table}");
    assert!(table.contains("revive (operator)"), "{table}");
}

#[test]
fn status_says_so_when_the_daemon_has_not_read_a_heartbeat_yet() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [{"name": "late"}]}));
    let daemon = env.daemon(&[]);
    env.wait_event(&uuid, "agent_stale", 1, WAIT);
    wait_for("the stale state in the daemon's records", WAIT, || {
        agent_report(&status_json(&env), "late")["state"] == "stale"
    });
    daemon.signal(nix::sys::signal::SIGSTOP);
    env.beat(&uuid, "late", "back");
    let a = agent_report(&status_json(&env), "late");
    daemon.signal(nix::sys::signal::SIGCONT);
    assert_eq!(a["state"], "stale", "the daemon's word: {a}");
    assert!(
        a["note"]
            .as_str()
            .expect("note")
            .contains("newer heartbeat than the daemon has read"),
        "{a}"
    );
    env.wait_event(&uuid, "agent_recovered", 1, WAIT);
}

#[test]
fn people_read_times_not_epochs() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [{"name": "quiet"}]}));
    env.beat(&uuid, "quiet", "x");
    let _daemon = env.daemon(&[]);
    let stale = env.wait_event(&uuid, "agent_stale", 1, WAIT);
    let epoch = stale[0]["last_seen"].as_f64().expect("last_seen");
    let out = env.run(&["events", &uuid]).success().stdout;
    let line = out
        .lines()
        .find(|l| l.contains("agent_stale"))
        .unwrap_or_else(|| panic!("{out}"));
    let whole = format!("{}", epoch as u64);
    assert!(!line.contains(&whole), "{line}");
    assert!(line.contains("last_seen=\""), "{line}");
}

#[test]
#[cfg_attr(
    not(cgroups),
    ignore = "needs root and a cgroup2 mount with cgroup.freeze and cgroup.kill"
)]
fn cpu_advanced_counts_the_work_of_an_agents_children() {
    let env = env();
    // The agent's shell waits (S) while its child burns a CPU.
    let uuid = env.create_from(&json!({"agents": [
        {"name": "parent", "revive_policy": "no",
         "command": shell("$LP heartbeat; sh -c 'while :; do :; done'")},
    ]}));
    let _daemon = env.daemon(&[]);
    let stale = env.wait_event(&uuid, "agent_stale", 1, WAIT);
    let process = &stale[0]["process"];
    assert_eq!(process["state"], "S", "{process}");
    assert_eq!(process["cpu_advanced"], true, "{process}");
    assert!(
        process["cgroup_cpu_s"].as_f64().expect("cgroup cpu") > 0.5,
        "{process}"
    );
}
