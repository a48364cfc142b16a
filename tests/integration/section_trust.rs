//! The trust boundary (BRIEF 6 and 7, `spec/security.md`): everything in a
//! cell may have been written by a hostile agent, and none of it is proof.
//! Each test plays the attack found against an earlier version, through
//! the real binary, and checks that it changes nothing outside the cell.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::harness::{Env, alive, now, repo_file, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// The revival tests' thresholds.
use crate::section_revival::CONFIG;

const NOBODY: u32 = 65534;

fn env() -> Env {
    let env = Env::new();
    env.config(CONFIG);
    env
}

fn agent(name: &str, mode: &str) -> Value {
    json!({
        "name": name,
        "command": ["/bin/sh", repo_file("tests/agent.sh"), mode],
    })
}

fn start_time(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect(")") + 2..];
    rest.split(' ')
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("number")
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot id")
        .trim()
        .to_string()
}

/// A process the test owns, in its own session, killed when dropped.
struct Bystander(Child);

impl Bystander {
    fn start() -> Bystander {
        let mut cmd = Command::new("sleep");
        cmd.arg("9999")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
        }
        Bystander(cmd.spawn().expect("sleep"))
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `state.json` as a hostile agent writes it: its agents' "instances"
/// are the processes it wants killed.
fn forged_state(uuid: &str, victims: &[(&str, i32)]) -> String {
    let mut health = serde_json::Map::new();
    for (agent, pid) in victims {
        health.insert(
            agent.to_string(),
            json!({"healthy": true, "last_seen": now(), "revive_count": 0, "state": "healthy",
                   "pid": pid, "pid_start_time": start_time(*pid)}),
        );
    }
    json!({"cell_uuid": uuid, "daemon_pid": 1, "last_poll": now(), "boot_id": boot_id(),
           "agent_health": health})
    .to_string()
}

/// Item 1: a forged `state.json` names an unrelated root process and the
/// daemon itself as the agents' instances. Neither a cell that is
/// forgotten and found again, nor a daemon restart, nor `revive` gets
/// either of them signalled.
#[test]
fn a_forged_state_json_gets_no_process_killed() {
    let env = env();
    let victim = Bystander::start();
    let uuid = env.create_from(&json!({"agents": [agent("a", "beat"), agent("b", "beat")]}));
    let daemon = env.spawn_daemon(&[]);
    let first_a = env.pid_of(&uuid, "agent_started", "a", 1);
    env.pid_of(&uuid, "agent_started", "b", 1);
    // The cell is forgotten: its manifest moved away...
    let manifest = env.cell(&uuid).join("cell.json");
    let aside = env.tmp.path().join("cell.json.aside");
    std::fs::rename(&manifest, &aside).expect("move away");
    daemon.wait_log(&format!("cell {uuid}: no longer monitored"), WAIT);
    // ...the agent forges the state, and the manifest comes back.
    let state = env.cell(&uuid).join(".lazarus/state.json");
    let forged = forged_state(&uuid, &[("a", daemon.pid()), ("b", victim.pid())]);
    std::fs::write(&state, &forged).expect("forge");
    std::fs::rename(&aside, &manifest).expect("move back");
    // Witness: the daemon republished the cell, from its own records.
    let republished = || {
        env.state(&uuid).is_some_and(|s| {
            s["daemon_pid"] == daemon.pid() && s["agent_health"]["a"]["pid"] == first_a
        })
    };
    if !crate::harness::wait_until(WAIT, republished) {
        panic!(
            "state.json not rewritten: {:?}\n{}",
            env.state(&uuid),
            daemon.log()
        );
    }
    let adopted_victim = format!("(pid {})", victim.pid());
    assert!(!daemon.log().contains(&adopted_victim), "{}", daemon.log());
    env.run(&["revive", &uuid, "a"]).success();
    env.run(&["revive", &uuid, "b"]).success();
    env.pid_of(&uuid, "agent_revived", "a", 1);
    env.pid_of(&uuid, "agent_revived", "b", 1);
    assert!(alive(victim.pid()), "the bystander was killed");
    let mut daemon = daemon;
    assert!(daemon.running(), "the daemon signalled itself");

    // A restart with a forged state.json adopts nothing from it either.
    let (status, _) = daemon.stop(WAIT);
    assert!(status.success());
    std::fs::write(&state, forged_state(&uuid, &[("b", victim.pid())])).expect("forge");
    let daemon = env.daemon(&[]);
    wait_for("state.json rewritten by the new daemon", WAIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["daemon_pid"] == daemon.pid())
    });
    env.run(&["revive", &uuid, "b"]).success();
    env.pid_of(&uuid, "agent_revived", "b", 2);
    assert!(
        alive(victim.pid()),
        "the bystander was killed after a restart"
    );
    assert!(!daemon.log().contains(&adopted_victim), "{}", daemon.log());
}

/// Item 1, the claim: an agent the daemon did not start (it was beating
/// when the daemon came up) goes silent; its heartbeat names a root
/// process whose environment carries the agent's cell and name — what a
/// set-uid program the agent ran looks like. The agents run as `nobody`:
/// a process of another uid is never signalled on an agent's account.
#[test]
#[cfg_attr(
    not(as_root),
    ignore = "needs root: the agent must run as another user"
)]
fn a_claimed_pid_of_another_user_is_never_signalled() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [agent("a", "beat")]}));
    own_by_nobody(&env, &uuid);
    let mut cmd = Command::new("sleep");
    cmd.arg("9999")
        .env("LAZARUS_CELL_UUID", &uuid)
        .env("LAZARUS_AGENT", "a")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
    }
    let victim = Bystander(cmd.spawn().expect("sleep"));
    // "Running elsewhere": a fresh heartbeat claiming the root process.
    let hb = env.cell(&uuid).join(".lazarus/heartbeats/a.json");
    let claim = json!({"timestamp": now(), "pid": victim.pid(), "status": "working"});
    std::fs::write(&hb, claim.to_string()).expect("claim");
    let daemon = env.spawn_daemon(&[]);
    // Silent past resurrect_after: revived, after the claimed process was
    // looked at and left alone.
    env.pid_of(&uuid, "agent_revived", "a", 1);
    assert!(
        alive(victim.pid()),
        "a root process was signalled on an agent's claim"
    );
    assert!(
        daemon.log().contains("does not run as the agent's user"),
        "{}",
        daemon.log()
    );
}

/// Makes `uuid` belong to `nobody`, and the test's root reachable for it.
pub(crate) fn own_by_nobody(env: &Env, uuid: &str) {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let status = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(env.cell(uuid))
        .status()
        .expect("chown");
    assert!(status.success());
    for dir in [env.tmp.path(), &env.root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// Item 2: when a handoff packet is written, an agent watching its inbox
/// swaps the packet's name for a hard link to a root file the moment it
/// appears. The root file must keep its owner: ownership is set on the
/// temp file's descriptor, no name is reopened.
#[test]
#[cfg_attr(
    not(as_root),
    ignore = "needs root: the cell must belong to another user"
)]
fn a_handoff_never_chowns_a_file_swapped_in_for_it() {
    use inotify::{Inotify, WatchMask};
    let env = env();
    let mut primary = agent("primary", "crash");
    primary["revive_policy"] = "substitute".into();
    primary["substitutes"] = json!(["backup"]);
    let mut backup = agent("backup", "beat");
    backup["autostart"] = false.into();
    let uuid = env.create_from(&json!({"agents": [primary, backup]}));
    let inbox = env.cell(&uuid).join("bus/inbox/backup");
    std::fs::create_dir_all(&inbox).expect("inbox");
    own_by_nobody(&env, &uuid);
    let secret = env.tmp.path().join("secret");
    std::fs::write(&secret, "root's").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // The attacker: on every packet that appears, put a hard link to the
    // secret under its name.
    let mut watcher = Inotify::init().expect("inotify");
    watcher
        .watches()
        .add(&inbox, WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE)
        .expect("watch");
    let (inbox2, secret2) = (inbox.clone(), secret.clone());
    let attacker = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut swapped = 0;
        while swapped == 0 {
            let Ok(events) = watcher.read_events_blocking(&mut buf) else {
                return swapped;
            };
            for e in events {
                let Some(name) = e.name.and_then(|n| n.to_str()).map(str::to_string) else {
                    continue;
                };
                if name.starts_with("handoff-") && name.ends_with(".json") {
                    let tmp = inbox2.join(".link");
                    let _ = std::fs::hard_link(&secret2, &tmp);
                    let _ = std::fs::rename(&tmp, inbox2.join(&name));
                    swapped += 1;
                }
            }
        }
        swapped
    });
    let _daemon = env.spawn_daemon(&[]);
    env.wait_event(&uuid, "agent_substituted", 1, WAIT);
    // The packet came (so the attacker saw it and is done).
    wait_for("the handoff packet", WAIT, || {
        std::fs::read_dir(&inbox).is_ok_and(|d| d.flatten().any(|e| e.file_name() != ".link"))
    });
    assert_eq!(attacker.join().expect("attacker"), 1, "the swap was tried");
    // The daemon's part is over once the substitute runs.
    env.pid_of(&uuid, "agent_started", "backup", 1);
    let meta = std::fs::metadata(&secret).expect("secret");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "a file outside the cell was handed to the agent's user"
    );
}

/// Item 3: one absurd number in one `cell.json` used to panic the daemon
/// at every start. Now it is `invalid_input`, the default applies, and
/// every other cell carries on — across a restart too.
#[test]
fn an_absurd_number_in_cell_json_is_invalid_input_not_a_crash() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 0.5\nresurrect_after = 600\n");
    let bad = env.create(&["--agent", "a"]);
    // By hand: `cell create` refuses such a manifest.
    env.edit_manifest(&bad, |m| {
        m["heartbeat_stale_threshold"] = json!(1e19);
        m["agents"][0]["resurrect_after"] = json!(1e300);
    });
    for restart in 1..=2 {
        let mut daemon = env.daemon(&[]);
        let invalid = env.wait_event(&bad, "invalid_input", restart, WAIT);
        assert!(
            invalid[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("ten years")),
            "{invalid:?}"
        );
        // The defaults apply to the bad cell (its agent goes stale at
        // 0.5 s), and a cell created now is watched.
        env.wait_event(&bad, "agent_stale", 1, WAIT);
        let witness = env.create(&["--agent", "w"]);
        env.wait_event(&witness, "agent_stale", 1, WAIT);
        assert!(daemon.running(), "{}", daemon.log());
        let (status, _) = daemon.stop(WAIT);
        assert!(status.success());
    }
}

/// Item 4: any local user could hold the root's lock (`flock` works on a
/// read-only descriptor) and keep the daemon from starting. The lock file
/// is private from its creation, and an old world-readable one held by
/// another user is replaced, not obeyed.
#[test]
fn the_root_lock_is_private() {
    let env = Env::new();
    std::fs::create_dir_all(&env.root).expect("root");
    let daemon = env.daemon(&[]);
    let lock = env.root.join(".lazarus-pit.lock");
    let meta = std::fs::metadata(&lock).expect("lock");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    drop(daemon);
}

#[test]
#[cfg_attr(
    not(as_root),
    ignore = "needs root: the lock must be held by another user"
)]
fn another_user_cannot_keep_the_daemon_from_starting() {
    let env = Env::new();
    std::fs::create_dir_all(&env.root).expect("root");
    for dir in [env.tmp.path(), &env.root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // A lock file as an older version left it: world-readable...
    let lock = env.root.join(".lazarus-pit.lock");
    std::fs::write(&lock, "").expect("lock");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // ...held by `nobody`.
    // In a group of its own, with no descriptor of ours: flock's child
    // holds the lock too, and the whole group goes when the test ends.
    let holder = Group(
        Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .args(["sleep", "9999"])
            .uid(NOBODY)
            .gid(NOBODY)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("flock"),
    );
    wait_for("nobody to hold the lock", WAIT, || {
        std::fs::read_to_string("/proc/locks").is_ok_and(|l| {
            let ino = std::fs::metadata(&lock).map(|m| m.ino()).unwrap_or(0);
            l.lines().any(|line| line.contains(&format!(":{ino} ")))
        })
    });
    let daemon = env.daemon(&[]);
    // Its replacement cannot even be opened by `nobody`.
    let open = Command::new("flock")
        .args(["-n", "-x"])
        .arg(&lock)
        .arg("true")
        .uid(NOBODY)
        .gid(NOBODY)
        .stderr(Stdio::null())
        .status()
        .expect("flock");
    assert!(!open.success(), "nobody could open the new lock file");
    drop(daemon);
    drop(holder);
}

/// A process group the test started, killed whole when dropped (a panic
/// included), so nothing outlives the test holding its output open.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// Item 5: agents used to inherit the daemon's whole environment, secrets
/// included. They get the clean one of BRIEF 7 plus `[cells] pass_env`.
#[test]
fn agents_get_a_clean_environment() {
    let env = Env::new();
    env.config(&format!(
        "{CONFIG}pass_env = [\"PASSED_ON\", \"PASSED_PREFIX_*\"]\n"
    ));
    let uuid = env.create_from(&json!({"agents": [agent("a", "beat")]}));
    let mut cmd = env.command(&["daemon"]);
    cmd.env("GITEA_TOKEN", "secret-token")
        .env("SOME_DAEMON_SECRET", "x")
        .env("HOME", "/daemon/home")
        .env("USER", "daemon-user")
        .env("PASSED_ON", "yes")
        .env("PASSED_PREFIX_ONE", "1")
        .env("LC_TIME", "C")
        .env("TZ", "UTC")
        .env("NOTIFY_SOCKET", "/run/systemd/notify");
    let _daemon = env.spawn_daemon_cmd(cmd);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    let start = env.agent_start(&uuid, "a", pid);
    let names: Vec<&str> = start["names"].split_whitespace().collect();
    for secret in [
        "GITEA_TOKEN",
        "SOME_DAEMON_SECRET",
        "NOTIFY_SOCKET",
        "RUST_LOG",
    ] {
        assert!(
            !names.contains(&secret),
            "{secret} reached the agent: {names:?}"
        );
    }
    for passed in ["PASSED_ON", "PASSED_PREFIX_ONE", "LC_TIME", "TZ", "PATH"] {
        assert!(names.contains(&passed), "{passed} is missing: {names:?}");
    }
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("passwd")
        .expect("user");
    assert_eq!(
        start["home"],
        me.dir.display().to_string(),
        "HOME of the agent's user"
    );
    assert_eq!(start["user"], me.name);
    assert_eq!(start["logname"], me.name);
    let allowed = [
        "PATH",
        "LANG",
        "TZ",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PASSED_ON",
        "PASSED_PREFIX_ONE",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    for name in &names {
        assert!(
            allowed.contains(name) || name.starts_with("LC_") || name.starts_with("LAZARUS_"),
            "{name} is not part of an agent's environment: {names:?}"
        );
    }
}

/// Item 6: under policy `ask`, an agent answered its own question by
/// writing the decision into its cell. Decisions come only from the
/// daemon's inbox in `state_dir`.
#[test]
fn an_agent_cannot_approve_its_own_revival() {
    let env = env();
    let mut a = agent("a", "crash");
    a["revive_policy"] = "ask".into();
    let uuid = env.create_from(&json!({"agents": [a, {"name": "witness"}]}));
    let daemon = env.spawn_daemon(&[]);
    let asked = env.wait_event(&uuid, "revive_requested", 1, WAIT);
    let id = asked[0]["request_id"].as_str().expect("id").to_string();
    // The agent approves itself every way it could find: the old requests
    // directory, a state.json that says so.
    let requests = env.cell(&uuid).join(".lazarus/requests");
    std::fs::create_dir_all(&requests).expect("mkdir");
    let forged = json!({"request_id": id, "agent": "a", "status": "pending",
                        "decision": "approved", "decided_by": "root"});
    std::fs::write(requests.join(format!("{id}.json")), forged.to_string()).expect("forge");
    std::fs::write(
        requests.join("revive-a-1.json"),
        json!({"action": "revive", "agent": "a"}).to_string(),
    )
    .expect("forge");
    // Witness: a heartbeat written after the forgery is seen, and the
    // cell is read again (an agent added by hand reaches the record).
    env.beat(&uuid, "witness", "after-the-forgery");
    env.wait_event(&uuid, "heartbeat", 2, WAIT);
    env.edit_manifest(&uuid, |m| {
        m["agents"]
            .as_array_mut()
            .expect("agents")
            .push(json!({"name": "late"}))
    });
    wait_for("the cell read again", WAIT, || {
        env.record(&uuid).is_some_and(|r| {
            r["agents"]["late"].is_object() && r["agents"]["a"]["state"] == "awaiting_approval"
        })
    });
    assert!(
        env.of_agent(&uuid, "agent_revived", "a").is_empty(),
        "{}",
        daemon.log()
    );
    assert!(env.events_named(&uuid, "revive_approved").is_empty());
    // The operator's approve goes through.
    env.run(&["approve", &uuid, "a"]).success();
    env.pid_of(&uuid, "agent_revived", "a", 1);
}

/// Item 7: one heartbeat stamped an hour ahead kept an agent `healthy`
/// forever (the claim was clamped to "now" at every re-read). Silence is
/// counted from when the write was seen — by the daemon, and by `status`
/// without one (from the file's change time).
#[test]
fn a_future_stamped_heartbeat_does_not_hide_a_hang() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 1\nresurrect_after = 600\n");
    let uuid = env.create(&["--agent", "a"]);
    env.beat_at(&uuid, "a", now() + 3600.0, "from-the-future");
    // Without a daemon: stale a second after the write.
    wait_for("status to say stale", WAIT, || {
        env.run(&["status", "--json"]).reported().json()["cells"][0]["agents"][0]["state"]
            == "stale"
    });
    // With one: agent_stale, and state.json agrees.
    env.beat_at(&uuid, "a", now() + 3600.0 + 1.0, "from-the-future");
    let _daemon = env.daemon(&[]);
    env.wait_event(&uuid, "agent_stale", 1, WAIT);
    wait_for("state.json stale", WAIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == "stale")
    });
}

/// Item 8: `limits` were applied before dropping privileges, so an agent
/// that can edit `cell.json` raised its own hard limits above the
/// daemon's. They are lowered to the daemon's own.
#[test]
fn limits_never_raise_the_daemons_hard_limits() {
    let env = env();
    let mut a = agent("a", "beat");
    a["limits"] = json!({"nofile": 100000});
    let uuid = env.create_from(&json!({"agents": [a]}));
    let mut cmd = env.command(&["daemon"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 512, 512)
                .map_err(Into::into)
        });
    }
    let daemon = env.spawn_daemon_cmd(cmd);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    let start = env.agent_start(&uuid, "a", pid);
    assert_eq!(start["nofile_hard"], "512", "{}", daemon.log());
}

/// Item 9: agent-written text reached the operator's terminal raw, so an
/// agent could erase lines or retitle the window. Human output escapes it.
#[test]
fn terminal_escapes_in_agent_text_are_shown_not_obeyed() {
    let env = Env::new();
    let evil = "ok\u{1b}[2K\u{1b}[1A\u{1b}]0;pwned\u{7}\u{9b}2J\u{202e}";
    let uuid = env.create(&["--agent", "a", "--mission", evil, "--name", evil]);
    env.beat(&uuid, "a", evil);
    env.edit_manifest(&uuid, |m| m["agents"][0]["role"] = evil.into());
    // The daemon records the status in an event.
    let d = env.daemon(&[]);
    env.wait_event(&uuid, "heartbeat", 1, WAIT);
    drop(d);
    for args in [
        vec!["status"],
        vec!["status", uuid.as_str()],
        vec!["events"],
        vec!["events", uuid.as_str()],
        vec!["cell", "list"],
        vec!["--list-cells"],
        vec!["cell", "show", uuid.as_str()],
    ] {
        // `status` exits 1 here: the daemon that supervised the root is gone.
        let run = env.run(&args).reported();
        for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
            assert!(
                !run.stdout.contains(bad) && !run.stderr.contains(bad),
                "`{}` printed {bad:?} raw:\n{}",
                args.join(" "),
                run.stdout
            );
        }
        assert!(
            run.stdout.contains("\\x1b[2K"),
            "`{}`: {}",
            args.join(" "),
            run.stdout
        );
    }
    // --json is for machines: JSON's own escaping, lines as stored.
    let json = env.run(&["events", &uuid, "--json"]).success();
    assert!(json.stdout.contains("\\u001b[2K"), "{}", json.stdout);
}

/// Item 10: one corrupt line (not UTF-8) made `events` fail for every
/// cell, and a huge line was read whole. A corrupt line is shown as such,
/// in its place, and hides nothing else.
#[test]
fn a_corrupt_event_line_hides_nothing_else() {
    let env = Env::new();
    let broken = env.create(&["--agent", "a"]);
    let fine = env.create(&["--agent", "b"]);
    let stream = env.cell(&broken).join("logs/events.jsonl");
    let mut bytes = std::fs::read(&stream).expect("events");
    bytes.extend_from_slice(b"\xff\xfe not utf-8 \x1b[2K\n");
    bytes.extend_from_slice(&vec![b'x'; 3 * 1024 * 1024]);
    bytes.push(b'\n');
    bytes.extend_from_slice(
        b"{\"ts\":\"2099-01-01T00:00:00.000Z\",\"event\":\"after\",\"cell\":\"c\"}\n",
    );
    std::fs::write(&stream, bytes).expect("write");
    let run = env.run(&["events"]).success();
    assert!(
        run.stdout.contains("line 4 is corrupt (not UTF-8)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("line 5 is corrupt (longer than"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(" after"),
        "the line after is shown: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&fine[..8]) && run.stdout.contains("agent_joined"),
        "the other cell is shown: {}",
        run.stdout
    );
    assert!(run.stdout.len() < 64 * 1024, "the huge line is not printed");
    // One cell's stream alone: the same.
    let one = env.run(&["events", &broken]).success();
    assert!(one.stdout.contains("corrupt"));
    // --json: the good lines as they are, the corrupt ones said on stderr.
    let json = env.run(&["events", &broken, "--json"]).success();
    for line in json.stdout.lines() {
        serde_json::from_str::<Value>(line).expect("only JSON on stdout");
    }
    assert!(json.stderr.contains("corrupt"), "{}", json.stderr);
}

/// Item 11: state of a cell above ~7,000 agents was lost at a restart (it
/// was read back with a 1 MiB limit). The daemon's own record holds it:
/// a restart repeats no `agent_stale`.
#[test]
fn a_large_cell_keeps_its_state_across_a_restart() {
    const AGENTS: usize = 8000;
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 0.3\nresurrect_after = 3600\n");
    let agents: Vec<Value> = (0..AGENTS)
        .map(|i| json!({"name": format!("agent-{i:05}")}))
        .collect();
    let big = env.create_from(&json!({"agents": agents}));
    let daemon = env.daemon(&[]);
    env.wait_event(&big, "agent_stale", AGENTS, WAIT * 3);
    wait_for("the record of every stale agent", WAIT, || {
        env.record(&big).is_some_and(|r| {
            r["agents"]
                .as_object()
                .is_some_and(|a| a.len() == AGENTS && a.values().all(|v| v["state"] == "stale"))
        })
    });
    let (status, _) = daemon.stop(WAIT);
    assert!(status.success());
    let _daemon = env.daemon(&[]);
    // Witness: a cell created now goes stale 0.3 s after it is seen, later
    // than any restored agent of the big cell would be reported again.
    let witness = env.create(&["--agent", "w"]);
    env.wait_event(&witness, "agent_stale", 1, WAIT);
    assert_eq!(env.events_named(&big, "agent_stale").len(), AGENTS);
}

/// Item 11, the other half: a cell forgotten (its manifest moved away) and
/// found again used to get a second instance of its running agent.
#[test]
fn a_rediscovered_cell_does_not_double_its_agent() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [agent("a", "beat")]}));
    let daemon = env.spawn_daemon(&[]);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    let manifest = env.cell(&uuid).join("cell.json");
    let aside = env.tmp.path().join("aside.json");
    std::fs::rename(&manifest, &aside).expect("away");
    daemon.wait_log(&format!("cell {uuid}: no longer monitored"), WAIT);
    std::fs::rename(&aside, &manifest).expect("back");
    wait_for(
        "the cell monitored again, its instance adopted",
        WAIT,
        || {
            env.state(&uuid).is_some_and(|s| {
                s["agent_health"]["a"]["pid"] == pid && s["agent_health"]["a"]["state"] == "healthy"
            })
        },
    );
    // It still runs, and it is the only one: nothing was started.
    assert!(alive(pid));
    assert_eq!(env.of_agent(&uuid, "agent_started", "a").len(), 1);
    assert!(env.of_agent(&uuid, "agent_revived", "a").is_empty());
    assert_eq!(env.agent_pids().len(), 1, "{:?}", env.agent_pids());
    // And it is still watched: a crash is seen and revived.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    env.pid_of(&uuid, "agent_revived", "a", 1);
}

/// Item 12: an isolation level the daemon cannot give used to be ignored
/// (the agent ran unconfined). It is refused: `revive_failed` naming the
/// level, the agent never runs; `cell create` and `cell join` refuse too.
/// Here: `podman` with no image configured (section_isolation has the
/// other causes: no podman, no CAP_SYS_ADMIN).
#[test]
fn an_isolation_level_that_cannot_be_given_is_refused() {
    let env = env();
    let mut a = agent("a", "beat");
    a["isolation"] = "podman".into();
    // `cell create` refuses to add such an agent...
    let template = env.tmp.path().join("isolated.json");
    std::fs::write(&template, json!({"agents": [a]}).to_string()).expect("template");
    env.run(&[
        "cell",
        "create",
        "--template",
        template.to_str().expect("utf-8"),
    ])
    .fails(1, "podman_image");
    // ...and a hand edit of cell.json (an agent can make it) never starts it.
    let uuid = env.create_from(&json!({"agents": []}));
    env.edit_manifest(&uuid, |m| {
        let mut a = agent("a", "beat");
        a["isolation"] = "podman".into();
        m["agents"] = json!([a]);
    });
    let _daemon = env.spawn_daemon(&[]);
    wait_for("revive_failed", WAIT, || {
        !env.of_agent(&uuid, "revive_failed", "a").is_empty()
    });
    let failed = env.of_agent(&uuid, "revive_failed", "a");
    let error = failed[0]["error"].as_str().expect("error");
    assert!(error.contains("podman"), "{error}");
    assert!(
        env.agent_pids().is_empty(),
        "an agent ran without its isolation"
    );
    let confined = env.create_from(&json!({"isolation": "podman", "agents": []}));
    env.run(&["cell", "join", &confined, "--agent", "x"])
        .fails(1, "podman_image");
    assert_eq!(env.manifest(&confined)["agents"], json!([]));
}

/// Item 13: a never-seen agent that starts beating stayed `unknown` in
/// state.json for up to `poll_interval`. BRIEF 6: within a second.
#[test]
fn a_first_heartbeat_reaches_state_json_within_a_second() {
    let env = Env::new();
    env.config("[cells]\npoll_interval = 60\nheartbeat_stale_threshold = 60\n");
    let uuid = env.create(&["--agent", "a"]);
    let _daemon = env.daemon(&[]);
    wait_for("state.json with a unknown", WAIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == "unknown")
    });
    env.beat(&uuid, "a", "hello");
    // It is written at the next flush tick (100 ms); the deadline leaves
    // room for a loaded machine and is far below the old poll_interval.
    wait_for("healthy in state.json", Duration::from_secs(3), || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == "healthy")
    });
    let status = env.run(&["status", "--json"]).success().json();
    assert_eq!(status["cells"][0]["agents"][0]["state"], "healthy");
}

/// Item 14: `cell destroy --yes --purge` failed with "Directory not empty"
/// while the daemon (and a beating agent) wrote into the cell.
#[test]
fn destroy_works_while_the_daemon_writes_into_the_cell() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 0.2\nresurrect_after = 600\n");
    let cells: Vec<String> = (0..6)
        .map(|_| env.create(&["--agent", "a", "--agent", "b"]))
        .collect();
    let _daemon = env.daemon(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beaters: Vec<_> = cells
        .iter()
        .map(|uuid| {
            let dir = env.cell(uuid).join(".lazarus/heartbeats");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for agent in ["a", "b"] {
                        i += 1;
                        let body = json!({"timestamp": now(), "status": format!("s{}", i % 3)});
                        let _ = std::fs::write(dir.join(format!("{agent}.json")), body.to_string());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    for uuid in &cells {
        env.wait_event(uuid, "heartbeat", 3, WAIT);
    }
    for (i, uuid) in cells.iter().enumerate() {
        if i % 2 == 0 {
            env.run(&["cell", "destroy", uuid, "--yes", "--purge"])
                .success();
            assert!(!env.cell(uuid).exists(), "purged");
        } else {
            env.run(&["cell", "destroy", uuid, "--yes"]).success();
            let mut left: Vec<String> = std::fs::read_dir(env.cell(uuid))
                .expect("cell")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, ["cell.json", "logs"], "only the audit trail is kept");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in beaters {
        let _ = b.join();
    }
    // Nothing of the purged cells is left in the root either.
    let names: Vec<String> = std::fs::read_dir(&env.root)
        .expect("root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".lazarus-pit.lock"))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// Item 17: shutdown rewrote every monitored cell's `state.json`, with an
/// fsync each. Only what is out of date is written.
#[test]
fn shutdown_writes_only_what_is_out_of_date() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 600\n");
    let cells: Vec<String> = (0..20).map(|_| env.create(&["--agent", "a"])).collect();
    let daemon = env.daemon(&[]);
    for uuid in &cells {
        wait_for("state.json", WAIT, || env.state(uuid).is_some());
    }
    let written: Vec<(std::time::SystemTime, u64)> = cells
        .iter()
        .map(|uuid| {
            let m = std::fs::metadata(env.cell(uuid).join(".lazarus/state.json")).expect("state");
            (m.modified().expect("mtime"), m.ino())
        })
        .collect();
    let (status, _) = daemon.stop(WAIT);
    assert!(status.success());
    for (uuid, before) in cells.iter().zip(written) {
        let m = std::fs::metadata(env.cell(uuid).join(".lazarus/state.json")).expect("state");
        assert_eq!(
            (m.modified().expect("mtime"), m.ino()),
            before,
            "cell {uuid}: state.json rewritten at shutdown though nothing changed"
        );
    }
}

/// Item 18: whether the CLI already recorded a status move was read from
/// the last 64 KiB of `events.jsonl`; a window that began inside a UTF-8
/// character made the daemon record the move a second time.
#[test]
fn a_cli_status_move_is_recorded_once_whatever_the_stream_holds() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 600\n");
    let cells: Vec<String> = (0..3).map(|_| env.create(&["--agent", "a"])).collect();
    for (i, uuid) in cells.iter().enumerate() {
        // A long line of 3-byte characters (an agent can append anything):
        // with three different lengths, the 64 KiB window of the old
        // check starts inside a character for at least two of them.
        let stream = env.cell(uuid).join("logs/events.jsonl");
        let mut text = std::fs::read_to_string(&stream).expect("events");
        text.push_str(&format!(
            "{{\"ts\":\"2026-01-01T00:00:00.000Z\",\"event\":\"note\",\"cell\":\"{uuid}\",\"x\":\"{}{}\"}}\n",
            "€".repeat(40_000),
            "a".repeat(i)
        ));
        std::fs::write(&stream, text).expect("write");
    }
    let _daemon = env.daemon(&[]);
    for uuid in &cells {
        env.run(&["cell", "freeze", uuid]).success();
    }
    for uuid in &cells {
        // Witness: the daemon has taken the move in (its record says so).
        wait_for("the move accounted for", WAIT, || {
            env.record(uuid).is_some_and(|r| r["status"] == "frozen")
        });
        let moves = env.events_named(uuid, "cell_status_changed");
        assert_eq!(moves.len(), 2, "create and freeze, once each: {moves:?}");
    }
}

/// The state directory is the daemon's alone.
#[test]
fn the_state_directory_is_private_to_the_daemon() {
    let env = Env::new();
    let uuid = env.create(&["--agent", "a"]);
    let _daemon = env.daemon(&[]);
    wait_for("a record", WAIT, || env.record(&uuid).is_some());
    for dir in [env.state.clone(), env.records_dir().expect("records")] {
        let meta = std::fs::metadata(&dir).expect("dir");
        assert_eq!(meta.mode() & 0o777, 0o700, "{}", dir.display());
    }
    let record = env
        .records_dir()
        .expect("records")
        .join(format!("cells/{uuid}.json"));
    assert_eq!(std::fs::metadata(record).expect("record").mode() & 0o077, 0);
    assert!(
        !Path::new(&env.cell(&uuid))
            .join(".lazarus/requests")
            .exists()
    );
}

/// Found by the review: an agent ran with the cell directory's group,
/// which `chown user dir` leaves root's. It runs with its user's own.
#[test]
#[cfg_attr(
    not(as_root),
    ignore = "needs root: the agent must run as another user"
)]
fn an_agent_never_gets_the_directorys_root_group() {
    let env = env();
    let uuid = env.create_from(&json!({"agents": [agent("a", "beat")]}));
    // The owner only, as operators often do: the group stays root's.
    let status = Command::new("chown")
        .args(["-R", &NOBODY.to_string()])
        .arg(env.cell(&uuid))
        .status()
        .expect("chown");
    assert!(status.success());
    for dir in [env.tmp.path(), &env.root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    assert_eq!(std::fs::metadata(env.cell(&uuid)).expect("meta").gid(), 0);
    let _daemon = env.spawn_daemon(&[]);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    let start = env.agent_start(&uuid, "a", pid);
    let nobody = nix::unistd::User::from_uid(NOBODY.into())
        .expect("passwd")
        .expect("nobody");
    assert_eq!(start["uid"], NOBODY.to_string());
    assert_eq!(
        start["gid"],
        nobody.gid.to_string(),
        "nobody's own group, not root's"
    );
}

/// Found by the review: a cell asking for more agents than the daemon has
/// descriptors made it drop other cells as "gone" and stop reading their
/// heartbeats. Past its limit (less a reserve) it starts no more; every
/// other cell stays supervised.
#[test]
fn a_cell_with_too_many_agents_cannot_blind_the_daemon() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 60\nresurrect_after = 600\n");
    let watched = env.create(&["--agent", "v"]);
    let hostile: Vec<Value> = (0..200)
        .map(|i| json!({"name": format!("a{i}"), "command": ["sleep", "300"]}))
        .collect();
    let hostile = env.create_from(&json!({"agents": hostile}));
    let mut cmd = env.command(&["daemon"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 160, 160)
                .map_err(Into::into)
        });
    }
    let daemon = env.spawn_daemon_cmd(cmd);
    daemon.wait_log("ready:", WAIT);
    wait_for("the start refused past the limit", WAIT, || {
        env.events_named(&hostile, "revive_failed").iter().any(|e| {
            e["error"]
                .as_str()
                .is_some_and(|m| m.contains("descriptor limit"))
        })
    });
    // The other cell is still watched: a new status is seen.
    env.beat(&watched, "v", "still-watched");
    wait_for("the watched cell's heartbeat", WAIT, || {
        env.events_named(&watched, "heartbeat")
            .iter()
            .any(|e| e["status"] == "still-watched")
    });
    assert!(
        !daemon
            .log()
            .contains(&format!("cell {watched}: no longer monitored")),
        "{}",
        daemon.log()
    );
    let started = env.events_named(&hostile, "agent_started").len();
    assert!(started > 0 && started < 200, "{started} started");
}

/// Found by the review: `status` showed a forged `state.json` as the
/// daemon's word ("daemon: running (pid 1)", every agent healthy). Whether
/// a daemon runs is read from the root's lock; without one, states are
/// computed from the heartbeat files.
#[test]
fn status_is_not_fooled_by_a_forged_state_json() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 600\n");
    let uuid = env.create(&["--agent", "a"]);
    let forged = json!({"cell_uuid": uuid, "daemon_pid": 1, "last_poll": now(),
                        "agent_health": {"a": {"healthy": true, "last_seen": now(), "revive_count": 7,
                                               "state": "healthy", "pid": 1}}});
    std::fs::write(
        env.cell(&uuid).join(".lazarus/state.json"),
        forged.to_string(),
    )
    .expect("forge");
    let status = env.run(&["status", "--json"]).success().json();
    let cell = &status["cells"][0];
    assert_eq!(
        cell["daemon_pid"],
        Value::Null,
        "no daemon holds the root's lock"
    );
    assert_eq!(cell["source"], "heartbeats");
    assert_eq!(cell["agents"][0]["state"], "unknown", "never beat");
    assert_eq!(cell["agents"][0]["revive_count"], 0);
    let text = env.run(&["status"]).success().stdout;
    assert!(text.contains("daemon: not running"), "{text}");
    // With the daemon: its own records, and its real pid.
    let daemon = env.daemon(&[]);
    wait_for("the record", WAIT, || env.record(&uuid).is_some());
    let status = env.run(&["status", "--json"]).success().json();
    assert_eq!(status["cells"][0]["daemon_pid"], daemon.pid());
    assert_eq!(status["cells"][0]["source"], "records");
    assert_eq!(status["cells"][0]["agents"][0]["revive_count"], 0);
}

/// The same, for a user who cannot read the daemon's records: the states
/// shown come from `state.json`, and `status` says so.
#[test]
#[cfg_attr(
    not(as_root),
    ignore = "needs root: status must run as a user who cannot read the records"
)]
fn status_says_where_its_states_come_from() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 600\n");
    let uuid = env.create(&["--agent", "a"]);
    for dir in [env.tmp.path(), &env.root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let daemon = env.daemon(&[]);
    wait_for("state.json", WAIT, || env.state(&uuid).is_some());
    let mut cmd = env.command(&["status"]);
    cmd.uid(NOBODY).gid(NOBODY);
    let run = env.run_cmd(cmd, &["status"]).success();
    assert!(
        run.stdout
            .contains(&format!("daemon: running (pid {})", daemon.pid()))
            && run.stdout.contains("which the cell's agents can write"),
        "{run:#?}"
    );
}

/// Found by the review: `revive` and `approve` run without the daemon's
/// config dropped a request where no daemon looks (or said "no request
/// pending" when one was). They say which state directory they looked in.
#[test]
fn operator_commands_say_when_they_miss_the_daemons_state_directory() {
    let env = env();
    let mut a = agent("a", "crash");
    a["revive_policy"] = "ask".into();
    let uuid = env.create_from(&json!({"agents": [a]}));
    let _daemon = env.spawn_daemon(&[]);
    env.wait_event(&uuid, "revive_requested", 1, WAIT);
    let other = env.tmp.path().join("elsewhere.toml");
    std::fs::write(
        &other,
        format!(
            "[daemon]\nstate_dir = {:?}\n",
            env.tmp.path().join("other-state")
        ),
    )
    .expect("config");
    for verb in ["approve", "revive"] {
        let mut cmd = env.command(&[verb, &uuid, "a"]);
        cmd.env("LAZARUS_CONFIG", &other);
        env.run_cmd(cmd, &[verb]).fails(
            1,
            "no daemon has used this cells root with the state directory",
        );
    }
    assert!(
        !env.tmp.path().join("other-state").exists(),
        "nothing created there"
    );
}

/// Found by a second review: an agent renaming its `.lazarus` in a loop
/// made the daemon re-read its whole cell (manifest and every heartbeat)
/// for each event, and every other cell waited for minutes. Each cell is
/// read at most once per batch and per 50 ms.
#[test]
fn a_rename_flood_in_one_cell_does_not_stall_the_others() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 600\n");
    let agents: Vec<Value> = (0..2000)
        .map(|i| json!({"name": format!("a{i}")}))
        .collect();
    let noisy = env.create_from(&json!({"agents": agents}));
    let quiet = env.create(&["--agent", "q"]);
    let daemon = env.daemon(&[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let dir = env.cell(&noisy);
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::rename(dir.join(".lazarus"), dir.join(".x"));
                let _ = std::fs::rename(dir.join(".x"), dir.join(".lazarus"));
                n += 1;
            }
            n
        })
    };
    // While it goes on, the quiet cell's heartbeats are seen.
    for i in 0..5 {
        let status = format!("during-the-flood-{i}");
        env.beat(&quiet, "q", &status);
        let seen = crate::harness::wait_until(Duration::from_secs(5), || {
            env.events_named(&quiet, "heartbeat")
                .iter()
                .any(|e| e["status"] == status.as_str())
        });
        if !seen {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!(
                "a heartbeat of another cell waited > 5 s:\n{}",
                daemon.log()
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(flood.join().expect("flood") > 100, "the flood ran");
    let (status, took) = daemon.stop(WAIT);
    assert!(status.success());
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
}

/// Found by a second review: an agent's 5,000-deep tree in its workspace
/// made `cell destroy` fail (one descriptor per level), leaving the cell
/// marked destroyed and nothing removed. Removal holds a bounded number of
/// descriptors, whatever the depth.
#[test]
fn destroy_removes_a_tree_of_any_depth() {
    let env = Env::new();
    let kept = env.create(&["--agent", "a"]);
    let purged = env.create(&["--agent", "a"]);
    for uuid in [&kept, &purged] {
        let mut deep = env.cell(uuid).join("workspace");
        for _ in 0..500 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).expect("deep tree");
        std::fs::write(deep.join("f"), "x").expect("file");
    }
    let limited = |args: &[&str]| {
        let mut cmd = env.command(args);
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 64, 64)
                    .map_err(Into::into)
            });
        }
        env.run_cmd(cmd, args)
    };
    limited(&["cell", "destroy", &kept, "--yes"]).success();
    assert!(!env.cell(&kept).join("workspace").exists());
    limited(&["cell", "destroy", &purged, "--yes", "--purge"]).success();
    assert!(!env.cell(&purged).exists());
    let left: Vec<String> = std::fs::read_dir(&env.root)
        .expect("root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&kept),
        "nothing half-removed is left in the root"
    );
    // A cell whose status an agent set to destroyed by hand: destroying it
    // again finishes the job instead of refusing.
    let again = env.create(&["--agent", "a"]);
    env.edit_manifest(&again, |m| m["status"] = "destroyed".into());
    env.run(&["cell", "destroy", &again, "--yes"]).success();
    assert!(!env.cell(&again).join("workspace").exists());
}

/// Found by a second review: moves out of archived or destroyed made by
/// editing cell.json (its agents can) were followed silently, putting the
/// cell back under supervision. They are refused and reported.
#[test]
fn a_hand_edit_cannot_bring_an_archived_cell_back() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 0.3\nresurrect_after = 600\n");
    let uuid = env.create(&["--agent", "a"]);
    let _daemon = env.daemon(&[]);
    env.wait_event(&uuid, "agent_stale", 1, WAIT);
    env.run(&["cell", "archive", &uuid]).success();
    wait_for("archived in the record", WAIT, || {
        env.record(&uuid).is_some_and(|r| r["status"] == "archived")
    });
    env.edit_manifest(&uuid, |m| m["status"] = "active".into());
    let refused = env.wait_event(&uuid, "invalid_input", 1, WAIT);
    assert!(
        refused[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a legal move")),
        "{refused:?}"
    );
    // Witness: a cell created now goes stale; the archived one's agent,
    // silent for longer, is not supervised again.
    let witness = env.create(&["--agent", "w"]);
    env.wait_event(&witness, "agent_stale", 1, WAIT);
    assert_eq!(env.events_named(&uuid, "agent_stale").len(), 1);
}

/// Found by a second review: an agent appended a forged
/// `cell_status_changed` to its stream, then froze its cell by editing
/// cell.json, and the daemon — which looked for the CLI's line in the
/// stream — recorded nothing. It records every move nobody announced to
/// it through its inbox.
#[test]
fn a_forged_status_line_does_not_hide_a_status_move() {
    let env = Env::new();
    env.config("[cells]\nheartbeat_stale_threshold = 600\n");
    let uuid = env.create(&["--agent", "a"]);
    let _daemon = env.daemon(&[]);
    wait_for("the record", WAIT, || env.record(&uuid).is_some());
    let stream = env.cell(&uuid).join("logs/events.jsonl");
    let mut text = std::fs::read_to_string(&stream).expect("events");
    text.push_str(&format!(
        "{{\"ts\":\"2026-01-01T00:00:00.000Z\",\"event\":\"cell_status_changed\",\"cell\":\"{uuid}\",\"from\":\"active\",\"to\":\"frozen\",\"by\":\"root\"}}\n"
    ));
    std::fs::write(&stream, text).expect("forge");
    env.edit_manifest(&uuid, |m| m["status"] = "frozen".into());
    wait_for("the move recorded as observed", WAIT, || {
        env.events_named(&uuid, "cell_status_changed")
            .iter()
            .any(|e| e["to"] == "frozen" && e["observed"] == true)
    });
}

/// Found by a second review: after an operator's `deny`, the agent edited
/// its own entry in cell.json and was started afresh. A denial stands
/// until an operator's `revive`.
#[test]
fn a_denied_agent_is_not_restarted_by_an_edit_of_its_entry() {
    let env = env();
    let mut a = agent("a", "crash");
    a["revive_policy"] = "ask".into();
    let uuid = env.create_from(&json!({"agents": [a, {"name": "witness"}]}));
    let _daemon = env.spawn_daemon(&[]);
    wait_for("the request in the record", WAIT, || {
        env.record(&uuid)
            .is_some_and(|r| r["agents"]["a"]["state"] == "awaiting_approval")
    });
    env.run(&["deny", &uuid, "a"]).success();
    wait_for("dead", WAIT, || {
        env.record(&uuid)
            .is_some_and(|r| r["agents"]["a"]["state"] == "dead")
    });
    let starts = env.of_agent(&uuid, "agent_started", "a").len();
    // The agent changes its own policy and environment.
    env.edit_manifest(&uuid, |m| {
        m["agents"][0]["revive_policy"] = "yes".into();
        m["agents"][0]["env"] = json!({"X": "1"});
        m["agents"][1]["role"] = "edited".into();
    });
    // Witness: the same edit reached the daemon (the witness agent's new
    // entry is in the record), and a heartbeat after it was read.
    env.beat(&uuid, "witness", "after-the-edit");
    wait_for("the witness heartbeat", WAIT, || {
        env.events_named(&uuid, "heartbeat")
            .iter()
            .any(|e| e["status"] == "after-the-edit")
    });
    assert_eq!(env.of_agent(&uuid, "agent_started", "a").len(), starts);
    assert!(env.of_agent(&uuid, "agent_revived", "a").is_empty());
    // The operator's revive does bring it back.
    env.run(&["revive", &uuid, "a"]).success();
    env.pid_of(&uuid, "agent_revived", "a", 1);
}
