//! BRIEF 3 and 7, isolation levels: `mount-namespace` agents write only
//! their workspace, bus and heartbeat, see no hidden path and no other
//! cell, have a private `/tmp`, cannot change `cell.json`, and are revived,
//! frozen and stopped like any other; `podman` agents run in a container
//! the daemon controls by name; a level the daemon cannot give is refused
//! at `cell join` and at every start (`revive_failed`), never downgraded;
//! `limits` say how each is enforced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{BIN, Env, alive, cgroup2_mount, repo_file, wait_for};
use crate::section_revival::CONFIG;
use crate::section_trust::own_by_nobody;

const LIMIT: Duration = Duration::from_secs(20);

/// A directory under `/var/tmp`: outside the cells root and, unlike the
/// tests' own temporary directories, outside `/tmp` (which a namespaced
/// agent does not share), so a write there meets the read-only
/// filesystem. Removed when dropped.
struct Outside(PathBuf);

impl Outside {
    fn new() -> Outside {
        let dir = PathBuf::from(format!(
            "/var/tmp/lazarus-pit-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("secret")).expect("outside dir");
        std::fs::write(dir.join("secret/key"), "topsecret").expect("secret");
        std::fs::write(dir.join("secret.txt"), "topsecret").expect("secret file");
        // The test agents, where a namespaced agent can run them: a
        // checkout under /tmp is not in its view (its /tmp is its own).
        std::fs::create_dir(dir.join("bin")).expect("bin");
        for script in ["agent.sh", "isolated.sh"] {
            std::fs::copy(
                repo_file(&format!("tests/{script}")),
                dir.join("bin").join(script),
            )
            .expect("copy the test agent");
        }
        Outside(dir)
    }

    /// An agent entry running (a copy of) `tests/agent.sh MODE`.
    fn agent(&self, name: &str, mode: &str) -> Value {
        json!({
            "name": name,
            "command": ["/bin/sh", self.0.join("bin/agent.sh"), mode],
        })
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The probe agent (`tests/isolated.sh`), then `tests/agent.sh MODE`.
fn probe_agent(name: &str, mode: &str, env: &Env, outside: &Outside) -> Value {
    let hidden_tmp = env.tmp.path().join("other-home");
    std::fs::create_dir_all(&hidden_tmp).expect("hidden tmp dir");
    std::fs::write(hidden_tmp.join("notes"), "private").expect("notes");
    let host_tmp = env.tmp.path().join("host-file");
    std::fs::write(&host_tmp, "host").expect("host file");
    json!({
        "name": name,
        "command": ["/bin/sh", outside.0.join("bin/isolated.sh"), mode],
        "env": {
            "OUTSIDE_FILE": outside.0.join("written-by-agent"),
            "HIDDEN_DIR": outside.0.join("secret"),
            "HIDDEN_FILE": outside.0.join("secret.txt"),
            "HIDDEN_TMP_DIR": hidden_tmp,
            "HOST_TMP_FILE": host_tmp,
        },
    })
}

fn agent(name: &str, mode: &str) -> Value {
    json!({
        "name": name,
        "command": ["/bin/sh", repo_file("tests/agent.sh"), mode],
    })
}

fn namespaced_env(outside: &Outside, extra: &str) -> Env {
    let env = Env::new();
    let hidden = [
        outside.0.join("secret"),
        outside.0.join("secret.txt"),
        env.tmp.path().join("other-home"),
    ];
    env.config(&format!(
        "{CONFIG}\n{extra}\n[isolation]\nhidden_paths = {}\n",
        json!(hidden)
    ));
    env
}

/// What a probe agent found (`name=value` lines), waited for.
fn probe(env: &Env, uuid: &str, agent: &str, pid: i32) -> HashMap<String, String> {
    let path = env
        .cell(uuid)
        .join(format!("workspace/probe-{agent}-{pid}.txt"));
    wait_for(&format!("{}", path.display()), LIMIT, || path.exists());
    std::fs::read_to_string(&path)
        .expect("probe")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn refused_read_only(found: &HashMap<String, String>, what: &str) {
    let v = &found[what];
    assert!(
        v.starts_with("fail:") && v.contains("Read-only file system"),
        "{what}: {v}"
    );
}

#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs root where unshare(CLONE_NEWNS) is permitted"
)]
fn a_namespaced_agent_writes_only_its_workspace_bus_and_heartbeat() {
    confined_to_its_cell("");
}

/// The same where the daemon has no cgroups: agents are forked, not
/// cloned into a group, and build their namespace in that other child.
#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs root where unshare(CLONE_NEWNS) is permitted"
)]
fn a_namespaced_agent_is_confined_without_cgroups_too() {
    confined_to_its_cell("[daemon]\ncgroup = \"off\"\n");
}

fn confined_to_its_cell(extra: &str) {
    let outside = Outside::new();
    let env = namespaced_env(&outside, extra);
    // A terminal on the host (an operator's, say), open while the agent runs.
    let host_pty = HostPty::open();
    let other = env.create_from(&json!({"agents": []}));
    let mut probe_a = probe_agent("a", "beat", &env, &outside);
    probe_a["env"]["HOST_PTY"] = host_pty.number.to_string().into();
    let uuid = env.create_from(&json!({
        "status": "active",
        "isolation": "mount-namespace",
        "agents": [probe_a],
    }));
    let manifest_before = std::fs::read(env.cell(&uuid).join("cell.json")).expect("cell.json");
    let _daemon = env.daemon(&[]);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    let found = probe(&env, &uuid, "a", pid);

    for what in ["workspace", "bus", "heartbeat", "dev_null"] {
        assert_eq!(found[what], "ok", "{what}: {found:#?}");
    }
    assert!(env.cell(&uuid).join("workspace/ws-written").exists());
    assert!(env.cell(&uuid).join("bus/bus-written").exists());
    // Outside the cell, and the cell's own records: read-only.
    for what in ["outside", "cell_json", "state_json", "events", "cell_top"] {
        refused_read_only(&found, what);
    }
    assert!(found["cell_json_rename"].starts_with("fail:"), "{found:#?}");
    assert!(!outside.0.join("written-by-agent").exists());
    assert_eq!(
        std::fs::read(env.cell(&uuid).join("cell.json")).expect("cell.json"),
        manifest_before
    );
    assert!(
        !std::fs::read_to_string(env.cell(&uuid).join("logs/events.jsonl"))
            .expect("events")
            .contains("forged")
    );
    // No set-id file for the host's users: its workspace is nosuid only in
    // its own view.
    assert!(found["setuid"].starts_with("fail:"), "{found:#?}");
    assert!(found["setgid"].starts_with("fail:"), "{found:#?}");
    if let Ok(meta) = std::fs::metadata(env.cell(&uuid).join("workspace/suid-true")) {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            meta.permissions().mode() & 0o6000,
            0,
            "a set-id file on the host"
        );
    }
    // The host's terminals are not in its /dev/pts (a devpts of its own).
    assert!(found["host_pty"].starts_with("fail:"), "{found:#?}");
    assert!(
        !found["pts"]
            .split_whitespace()
            .any(|p| p == host_pty.number.to_string()),
        "{found:#?}"
    );
    // And no way to undo it: no capability left, even for a root agent.
    assert_eq!(found["cap_eff"], "0000000000000000", "{found:#?}");
    assert!(found["remount"].starts_with("fail:"), "{found:#?}");
    assert!(found["umount"].starts_with("fail:"), "{found:#?}");

    // Hidden paths are empty, outside /tmp and under it; the host's /tmp
    // is not the agent's, and the agent's is not the host's.
    assert_eq!(found["hidden_dir"], "", "{found:#?}");
    assert_eq!(found["hidden_file"], "", "{found:#?}");
    assert_eq!(found["hidden_tmp_dir"], "", "{found:#?}");
    assert!(found["host_tmp"].contains("No such file"), "{found:#?}");
    assert_eq!(found["tmp"], "ok");
    assert!(!Path::new(&format!("/tmp/agent-{uuid}")).exists());
    // Other cells are not there; its own /dev has no disks.
    assert_eq!(found["cells"].trim(), uuid, "other cell {other} visible");
    let devices: Vec<&str> = found["devices"].split_whitespace().collect();
    for d in ["null", "zero", "urandom", "tty", "pts", "shm"] {
        assert!(devices.contains(&d), "{d}: {devices:?}");
    }
    assert!(
        devices
            .iter()
            .all(|d| !d.starts_with("sd") && !d.starts_with("nvme") && *d != "mem"),
        "{devices:?}"
    );
    assert_eq!(
        found["cwd"],
        env.cell(&uuid).join("workspace").display().to_string()
    );

    // Its heartbeats reach the daemon; status shows the level.
    wait_for("healthy", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == "healthy")
    });
    let status = env.run(&["status", &uuid, "--json"]).success().json();
    assert_eq!(
        status["cells"][0]["agents"][0]["isolation"],
        "mount-namespace"
    );
    let table = env.run(&["status", &uuid]).success().stdout;
    assert!(
        table.contains("ISOLATION") && table.contains("mount-namespace"),
        "{table}"
    );
    assert_eq!(
        env.state(&uuid).expect("state")["agent_health"]["a"]["isolation"],
        "mount-namespace"
    );
}

/// An agent running as `nobody`, and another process of `nobody` outside
/// its namespace: `/proc/<pid>/root` of that process leads into the
/// host's filesystem (its view), where `nobody` may write. Landlock
/// refuses the write whatever the path, and the signal.
#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs root where unshare(CLONE_NEWNS) is permitted"
)]
fn a_namespaced_agent_cannot_reach_out_through_another_process_of_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let outside = Outside::new();
    let env = namespaced_env(&outside, "");
    let open_dir = outside.0.join("open");
    std::fs::create_dir(&open_dir).expect("open dir");
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    // A process of nobody's in the host's namespaces, its cwd the open dir.
    let neighbour = Neighbour(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sleep",
                "600",
            ])
            .current_dir(&open_dir)
            .spawn()
            .expect("setpriv"),
    );
    let uuid = env.create_from(&json!({"isolation": "mount-namespace", "agents": []}));
    own_by_nobody(&env, &uuid);
    let mut a = probe_agent("a", "beat", &env, &outside);
    a["env"]["NEIGHBOUR_PID"] = neighbour.0.id().to_string().into();
    a["env"]["NEIGHBOUR_FILE"] = open_dir
        .join("written-through-root")
        .display()
        .to_string()
        .into();
    env.edit_manifest(&uuid, |m| {
        m["status"] = "active".into();
        m["agents"] = json!([a]);
    });
    let _daemon = env.daemon(&[]);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    let found = probe(&env, &uuid, "a", pid);
    assert_eq!(env.agent_start(&uuid, "a", pid)["uid"], "65534");
    assert_eq!(found["workspace"], "ok", "{found:#?}");
    for what in ["proc_root", "proc_cwd", "signal"] {
        assert!(found[what].starts_with("fail:"), "{what}: {found:#?}");
    }
    assert!(!open_dir.join("written-through-root").exists());
    assert!(!open_dir.join("written-through-cwd").exists());
}

/// A pseudo-terminal on the host, its controlling side held open.
struct HostPty {
    _master: std::fs::File,
    number: u32,
}

impl HostPty {
    fn open() -> HostPty {
        use std::os::fd::FromRawFd;
        // SAFETY: posix_openpt and friends on a descriptor we own.
        unsafe {
            let fd = nix::libc::posix_openpt(nix::libc::O_RDWR | nix::libc::O_NOCTTY);
            assert!(fd >= 0, "posix_openpt");
            assert_eq!(nix::libc::grantpt(fd), 0);
            assert_eq!(nix::libc::unlockpt(fd), 0);
            let mut number: nix::libc::c_uint = 0;
            assert_eq!(nix::libc::ioctl(fd, nix::libc::TIOCGPTN, &mut number), 0);
            HostPty {
                _master: std::fs::File::from_raw_fd(fd),
                number,
            }
        }
    }
}

/// A bystander process, killed when dropped.
struct Neighbour(std::process::Child);

impl Drop for Neighbour {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[cfg_attr(
    not(all(mount_namespaces, cgroups)),
    ignore = "needs root where unshare(CLONE_NEWNS) is permitted, and cgroup v2 with the freezer"
)]
fn namespaced_agents_are_revived_frozen_and_stopped_like_any_other() {
    let outside = Outside::new();
    let env = namespaced_env(&outside, "");
    let uuid = env.create_from(&json!({
        "status": "active",
        "isolation": "mount-namespace",
        "agents": [outside.agent("a", "crash-once"), outside.agent("b", "hang")],
    }));
    let _daemon = env.daemon(&[]);
    // A crash is revived at once; a hang is stopped and revived.
    let revived = env.pid_of(&uuid, "agent_revived", "a", 1);
    let hung = env.pid_of(&uuid, "agent_started", "b", 1);
    let b = env.pid_of(&uuid, "agent_revived", "b", 1);
    assert!(!alive(hung), "the hung instance was stopped");
    let start = env.agent_start(&uuid, "a", revived);
    assert_eq!(start["attempt"], "1");

    // Freeze reaches namespaced agents through their cgroup.
    env.run(&["cell", "freeze", &uuid]).success();
    wait_for("frozen", LIMIT, || {
        [revived, b].iter().all(|p| cgroup_frozen(*p))
    });
    env.run(&["cell", "thaw", &uuid]).success();
    wait_for("thawed", LIMIT, || {
        [revived, b].iter().all(|p| !cgroup_frozen(*p))
    });
    // Archive stops them.
    env.run(&["cell", "archive", &uuid]).success();
    assert!(!alive(revived) && !alive(b), "archived agents still run");
}

fn cgroup_frozen(pid: i32) -> bool {
    let Some(rel) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(String::from))
        })
    else {
        return false;
    };
    let Some(mount) = cgroup2_mount() else {
        return false;
    };
    std::fs::read_to_string(
        mount
            .join(rel.trim_start_matches('/'))
            .join("cgroup.events"),
    )
    .is_ok_and(|e| e.lines().any(|l| l == "frozen 1"))
}

#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs root where unshare(CLONE_NEWNS) is permitted"
)]
fn a_symlink_planted_for_a_writable_directory_fails_the_start() {
    let outside = Outside::new();
    let env = namespaced_env(&outside, "");
    let uuid = env.create_from(&json!({
        "isolation": "mount-namespace",
        "agents": [],
    }));
    // An agent (at directory level, earlier) swapped bus/ for a link to
    // a directory outside: binding it would make that directory writable.
    let bus = env.cell(&uuid).join("bus");
    let _ = std::fs::remove_dir_all(&bus);
    std::os::unix::fs::symlink(outside.0.join("secret"), &bus).expect("symlink");
    env.edit_manifest(&uuid, |m| {
        m["status"] = "active".into();
        m["agents"] = json!([probe_agent("a", "beat", &env, &outside)]);
    });
    let _daemon = env.daemon(&[]);
    wait_for("revive_failed", LIMIT, || {
        !env.of_agent(&uuid, "revive_failed", "a").is_empty()
    });
    let failed = &env.of_agent(&uuid, "revive_failed", "a")[0];
    let error = failed["error"].as_str().expect("error");
    assert!(error.contains("mount-namespace"), "{error}");
    assert!(env.agent_pids().is_empty(), "the agent ran");
    assert!(!outside.0.join("secret/bus-written").exists());
}

/// A hidden path above the cells root would hide the cell from its own
/// agent: refused at join, not at every start.
#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs root where unshare(CLONE_NEWNS) is permitted"
)]
fn a_hidden_path_above_the_cells_is_refused_at_join() {
    let env = Env::new();
    env.config(&format!(
        "{CONFIG}\n[isolation]\nhidden_paths = {}\n",
        json!([env.tmp.path()])
    ));
    let uuid = env.create_from(&json!({"isolation": "mount-namespace", "agents": []}));
    env.run(&["cell", "join", &uuid, "--agent", "x", "--", "/bin/true"])
        .fails(1, "would hide the cells root");
    assert_eq!(env.manifest(&uuid)["agents"], json!([]));
}

/// The daemon as root without CAP_SYS_ADMIN (`setpriv` drops it from the
/// bounding set, so the exec'd daemon never has it).
#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs root, to run a root daemon without CAP_SYS_ADMIN"
)]
fn without_cap_sys_admin_mount_namespace_is_refused_at_join_and_at_every_start() {
    let env = Env::new();
    env.config(CONFIG);
    let uuid = env.create_from(&json!({"agents": []}));
    env.edit_manifest(&uuid, |m| {
        m["status"] = "active".into();
        let mut a = agent("a", "beat");
        a["isolation"] = "mount-namespace".into();
        m["agents"] = json!([a]);
    });
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--bounding-set=-sys_admin",
        "--inh-caps=-sys_admin",
        BIN,
        "daemon",
    ])
    .env("LAZARUS_ROOT", &env.root)
    .env("LAZARUS_CONFIG", &env.config);
    let daemon = env.spawn_daemon_cmd(cmd);
    daemon.wait_log("ready:", LIMIT);
    let failed = env.wait_event(&uuid, "revive_failed", 1, LIMIT);
    let error = failed[0]["error"].as_str().expect("error");
    assert!(
        error.contains("mount-namespace") && error.contains("CAP_SYS_ADMIN"),
        "{error}"
    );
    assert!(env.agent_pids().is_empty(), "it ran without its namespace");
    // `cell join` asks the running daemon's capabilities, not its own.
    let confined = env.create_from(&json!({"isolation": "mount-namespace", "agents": []}));
    env.run(&["cell", "join", &confined, "--agent", "x", "--", "/bin/true"])
        .fails(1, "CAP_SYS_ADMIN");
    assert_eq!(env.manifest(&confined)["agents"], json!([]));
}

#[test]
fn podman_that_is_missing_is_refused_at_join_and_at_every_start() {
    let env = Env::new();
    env.config(&format!(
        "{CONFIG}\n[isolation]\npodman = \"/nonexistent/podman\"\npodman_rootfs = \"/\"\n"
    ));
    let confined = env.create_from(&json!({"isolation": "podman", "agents": []}));
    env.run(&["cell", "join", &confined, "--agent", "x", "--", "/bin/true"])
        .fails(1, "/nonexistent/podman is not installed");
    assert_eq!(env.manifest(&confined)["agents"], json!([]));
    // A hand edit: every start fails, naming the cause.
    env.edit_manifest(&confined, |m| {
        m["status"] = "active".into();
        m["agents"] = json!([agent("x", "beat")]);
    });
    let _daemon = env.daemon(&[]);
    let failed = env.wait_event(&confined, "revive_failed", 1, LIMIT);
    let error = failed[0]["error"].as_str().expect("error");
    assert!(error.contains("is not installed"), "{error}");
    assert!(env.agent_pids().is_empty());
}

/// Removes the containers of a cell when dropped (they outlive podman's
/// own process by design).
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = Command::new("podman")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=lazarus-pit.cell={}", self.0))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("podman")
                .args(["rm", "--force", "--time=0", id])
                .output();
        }
    }
}

/// What `podman container inspect --format FORMAT` says of `name` (empty
/// if there is no such container).
fn inspect(name: &str, format: &str) -> String {
    Command::new("podman")
        .args(["container", "inspect", "--format", format, name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn container_state(name: &str) -> String {
    inspect(name, "{{.State.Status}}")
}

#[test]
#[cfg_attr(
    not(podman),
    ignore = "needs root, podman and runc able to run a container on an overlay of / here"
)]
fn a_podman_agent_runs_in_a_container_the_daemon_stops_pauses_and_revives() {
    let outside = Outside::new();
    let env = podman_env(&format!(
        "hidden_paths = {}\n",
        json!([outside.0.join("secret")])
    ));
    let other = env.create_from(&json!({"agents": []}));
    let uuid = env.create_from(&json!({"isolation": "podman", "agents": []}));
    let _containers = Containers(uuid.clone());
    // Podman can run it here: `cell join` accepts the agent.
    env.run(&[
        "cell",
        "join",
        &uuid,
        "--agent",
        "boxed",
        "--",
        "/bin/sh",
        repo_file("tests/agent.sh").to_str().expect("utf-8"),
        "crash-once",
    ])
    .success();
    // The probe agent instead, with a limit below the operator's
    // `--ulimit` (the agent's own wins).
    env.edit_manifest(&uuid, |m| {
        let mut a = probe_agent("boxed", "crash-once", &env, &outside);
        // nproc above the operator's --ulimit=nproc=4096: lowered to it.
        a["limits"] = json!({"nofile": 256, "nproc": 100000});
        m["agents"] = json!([a]);
    });
    let _daemon = env.daemon(&[]);
    let name = format!("lazarus-{uuid}-boxed");
    let first = env.pid_of(&uuid, "agent_started", "boxed", 1);
    let _ = first;
    // What it found in its container: only its own cell, the hidden path
    // covered, the cell read-only but for the three directories.
    let found = wait_probe(&env, &uuid, "boxed");
    for what in ["workspace", "bus", "heartbeat"] {
        assert_eq!(found[what], "ok", "{what}: {found:#?}");
    }
    for what in ["cell_json", "state_json", "events", "cell_top"] {
        refused_read_only(&found, what);
    }
    assert_eq!(found["cells"].trim(), uuid, "other cell {other} visible");
    assert_eq!(found["hidden_dir"], "", "{found:#?}");
    // No set-id file for the host's users (the profile podman gets).
    assert!(found["setuid"].starts_with("fail:"), "{found:#?}");
    assert!(found["setgid"].starts_with("fail:"), "{found:#?}");
    assert_eq!(found["dev_null"], "ok", "{found:#?}");
    assert!(!outside.0.join("written-by-agent").exists());
    // It crashed in its container (exit 3) and was revived into a new one.
    let exited = env.wait_event(&uuid, "agent_exited", 1, LIMIT);
    assert_eq!(exited[0]["code"], 3, "{exited:#?}");
    env.wait_event(&uuid, "agent_revived", 1, LIMIT);
    wait_for("the container running", LIMIT, || {
        container_state(&name) == "running"
    });
    wait_for("healthy, controlled by podman", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]["boxed"]["state"] == "healthy"
                && s["agent_health"]["boxed"]["control"] == "podman"
        })
    });
    let status = env.run(&["status", &uuid, "--json"]).success().json();
    assert_eq!(status["cells"][0]["agents"][0]["isolation"], "podman");
    assert_eq!(status["cells"][0]["agents"][0]["control"], "podman");
    let revived = env.pid_of(&uuid, "agent_revived", "boxed", 1);
    let _ = revived;
    let starts: Vec<String> = std::fs::read_dir(env.cell(&uuid).join("workspace"))
        .expect("workspace")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("start-boxed-") && n.ends_with(".env"))
        .collect();
    assert!(!starts.is_empty());
    let start =
        std::fs::read_to_string(env.cell(&uuid).join("workspace").join(&starts[0])).expect("start");
    assert!(start.contains("nofile_hard=256"), "{start}");
    let limits = &status["cells"][0]["agents"][0]["limits"];
    let nproc = limits
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "nproc"))
        .unwrap_or_else(|| panic!("{limits:#?}"));
    assert_eq!(nproc["value"], 4096, "{limits:#?}");
    assert_eq!(nproc["by"], "podman");

    // Freeze and thaw are podman pause and unpause.
    env.run(&["cell", "freeze", &uuid]).success();
    wait_for("paused", LIMIT, || container_state(&name) == "paused");
    env.run(&["cell", "thaw", &uuid]).success();
    wait_for("running again", LIMIT, || {
        container_state(&name) == "running"
    });
    // A checkpoint pauses it for the snapshot (confirmed by podman), then
    // unpauses it.
    env.run(&["checkpoint", &uuid]).success();
    let created = env.events_named(&uuid, "checkpoint_created");
    assert!(created[0].get("not_frozen").is_none(), "{created:#?}");
    wait_for("running after the checkpoint", LIMIT, || {
        container_state(&name) == "running"
    });
    // Archive stops the container, through podman.
    env.run(&["cell", "archive", &uuid]).success();
    wait_for("the container gone", LIMIT, || {
        container_state(&name).is_empty()
    });
}

fn podman_env(extra: &str) -> Env {
    let env = Env::new();
    env.config(&format!(
        "{CONFIG}\n[isolation]\npodman_rootfs = \"/:O\"\npodman_args = [\"--runtime=runc\", \
         \"--ulimit=nofile=1024:1024\", \"--ulimit=nproc=4096:4096\", \"--network=none\"]\n\
         {extra}"
    ));
    env
}

/// The first probe file an agent wrote (its pid inside a container is
/// not the daemon's).
fn wait_probe(env: &Env, uuid: &str, agent: &str) -> HashMap<String, String> {
    let ws = env.cell(uuid).join("workspace");
    let prefix = format!("probe-{agent}-");
    let mut found = None;
    wait_for("a probe file", LIMIT, || {
        found = std::fs::read_dir(&ws).ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && n.ends_with(".txt")
                })
            })
        });
        found.is_some()
    });
    std::fs::read_to_string(found.expect("probe"))
        .expect("probe")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn container_id(name: &str) -> String {
    inspect(name, "{{.Id}}")
}

/// A daemon restart adopts a running container's agent (no second start,
/// the same container); a container stopped while no daemon ran is no
/// instance: its podman process goes and the agent is revived.
#[test]
#[cfg_attr(
    not(podman),
    ignore = "needs root, podman and runc able to run a container on an overlay of / here"
)]
fn a_podman_agent_is_adopted_across_a_restart_by_its_container() {
    let env = podman_env("");
    let uuid = env.create_from(&json!({
        "status": "active",
        "isolation": "podman",
        "agents": [agent("boxed", "beat")],
    }));
    let _containers = Containers(uuid.clone());
    let name = format!("lazarus-{uuid}-boxed");
    let daemon = env.daemon(&[]);
    env.wait_event(&uuid, "agent_started", 1, LIMIT);
    wait_for("the container running", LIMIT, || {
        container_state(&name) == "running"
    });
    let id = container_id(&name);
    daemon.stop(LIMIT);
    let daemon = env.daemon(&[]);
    daemon.wait_log("adopted agent boxed", LIMIT);
    wait_for("healthy again", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["boxed"]["state"] == "healthy")
    });
    assert_eq!(container_id(&name), id, "the same container");
    assert_eq!(env.events_named(&uuid, "agent_started").len(), 1);
    assert!(env.events_named(&uuid, "agent_revived").is_empty());
    daemon.stop(LIMIT);

    // Its container removed behind the daemon's back while its podman
    // process lives on (stopped): at the next start that process is no
    // instance. It goes at once, and the agent is revived as exited (not
    // after its heartbeat went stale).
    let client = env.pid_of(&uuid, "agent_started", "boxed", 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    let removed = Command::new("podman")
        .args(["rm", "--force", "--time=0", &name])
        .output()
        .expect("podman rm");
    assert!(removed.status.success());
    let daemon = env.daemon(&[]);
    let revived = env.wait_event(&uuid, "agent_revived", 1, LIMIT);
    assert_eq!(revived[0]["reason"], "exited", "{revived:#?}");
    assert!(!alive(client), "the orphaned podman process was stopped");
    assert!(
        daemon.log().contains("does not run; its podman process"),
        "{}",
        daemon.log()
    );
    wait_for("a new container running", LIMIT, || {
        container_state(&name) == "running" && container_id(&name) != id
    });
}

/// `status` shows the isolation the running instance has, observed, not
/// the one `cell.json` says now: raising it takes a new start, and until
/// then status says both.
#[test]
#[cfg_attr(
    not(mount_namespaces),
    ignore = "needs root where unshare(CLONE_NEWNS) is permitted"
)]
fn status_shows_the_isolation_that_runs_and_the_one_that_applies_next() {
    let outside = Outside::new();
    let env = Env::new();
    env.config(CONFIG);
    // b makes a mount namespace of its own (in a user namespace, as any
    // agent can): that is no isolation the daemon gave.
    let b = json!({
        "name": "b",
        "command": ["unshare", "--user", "--map-root-user", "--mount", "/bin/sh",
                    outside.0.join("bin/agent.sh"), "beat"],
    });
    let uuid =
        env.create_from(&json!({"status": "active", "agents": [outside.agent("a", "beat"), b]}));
    let daemon = env.daemon(&[]);
    let first = env.pid_of(&uuid, "agent_started", "a", 1);
    let b_pid = env.pid_of(&uuid, "agent_started", "b", 1);
    // Reported at its start, before `unshare` has made the namespace.
    wait_for("b in a mount namespace of its own", LIMIT, || {
        std::fs::read_link(format!("/proc/{b_pid}/ns/mnt")).ok()
            != std::fs::read_link("/proc/self/ns/mnt").ok()
    });
    let level_of_b = || {
        let status = env.run(&["status", &uuid, "--json"]).reported().json();
        status["cells"][0]["agents"][1]["isolation"].clone()
    };
    wait_for("b healthy", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["b"]["state"] == "healthy")
    });
    assert_eq!(level_of_b(), "directory");
    // Across a restart (adopted) and with no daemon at all: the same.
    daemon.stop(LIMIT);
    assert_eq!(level_of_b(), "directory", "no daemon");
    let _daemon = env.daemon(&[]);
    wait_for("b adopted", LIMIT, || {
        env.record(&uuid)
            .is_some_and(|r| r["agents"]["b"]["isolation"] == "directory")
    });
    assert_eq!(level_of_b(), "directory", "adopted");
    wait_for("healthy", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["state"] == "healthy")
    });
    env.edit_manifest(&uuid, |m| m["isolation"] = "mount-namespace".into());
    wait_for("both levels in state.json", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]["a"]["isolation"] == "directory"
                && s["agent_health"]["a"]["isolation_configured"] == "mount-namespace"
        })
    });
    let status = env.run(&["status", &uuid, "--json"]).success().json();
    let a = &status["cells"][0]["agents"][0];
    assert_eq!(a["isolation"], "directory", "{a:#?}");
    assert_eq!(a["isolation_configured"], "mount-namespace", "{a:#?}");
    let table = env.run(&["status", &uuid]).success().stdout;
    assert!(
        table.contains("directory (next start: mount-namespace)"),
        "{table}"
    );
    // A new start applies it.
    env.run(&["revive", &uuid, "a"]).success();
    let second = env.pid_of(&uuid, "agent_revived", "a", 1);
    assert_ne!(first, second);
    wait_for("mount-namespace alone", LIMIT, || {
        env.state(&uuid).is_some_and(|s| {
            s["agent_health"]["a"]["isolation"] == "mount-namespace"
                && s["agent_health"]["a"].get("isolation_configured").is_none()
        })
    });
    let status = env.run(&["status", &uuid, "--json"]).reported().json();
    assert_eq!(
        status["cells"][0]["agents"][0]["isolation"],
        "mount-namespace"
    );
}

/// podman runs as root: a `PATH` in an agent's `env` (which a
/// `directory`-level agent can write) must not choose the program, nor
/// reach podman's own environment.
#[test]
fn an_agents_path_never_chooses_the_podman_the_daemon_runs() {
    let env = podman_env("");
    let uuid = env.create_from(&json!({"agents": []}));
    let _containers = Containers(uuid.clone());
    let ws = env.cell(&uuid).join("workspace");
    let marker = env.tmp.path().join("fake-podman-ran");
    let fake = ws.join("podman");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nid > {}\nexit 1\n", marker.display()),
    )
    .expect("fake podman");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    env.edit_manifest(&uuid, |m| {
        m["status"] = "active".into();
        m["isolation"] = "podman".into();
        let mut a = agent("boxed", "beat");
        a["env"] = json!({"PATH": format!("{}:/usr/bin:/bin", ws.display())});
        m["agents"] = json!([a]);
    });
    let _daemon = env.daemon(&[]);
    // Started in a container (podman here), or refused (none): either
    // way, by the daemon's podman.
    wait_for("a start or a refusal", LIMIT, || {
        !env.events_named(&uuid, "agent_started").is_empty()
            || !env.events_named(&uuid, "revive_failed").is_empty()
    });
    if cfg!(podman) {
        env.wait_event(&uuid, "agent_started", 1, LIMIT);
        wait_for("the container running", LIMIT, || {
            container_state(&format!("lazarus-{uuid}-boxed")) == "running"
        });
    }
    assert!(!marker.exists(), "the agent's podman ran as root");
}

#[test]
fn limits_say_how_each_is_enforced() {
    let env = Env::new();
    env.config(CONFIG);
    let uuid = env.create_from(&json!({
        "status": "active",
        "limits": {"nofile": 256, "memory.max": 268435456},
        "agents": [agent("a", "beat")],
    }));
    let _daemon = env.daemon(&[]);
    let pid = env.pid_of(&uuid, "agent_started", "a", 1);
    // The rlimit holds in the agent.
    assert_eq!(env.agent_start(&uuid, "a", pid)["nofile_hard"], "256");
    wait_for("limits in state.json", LIMIT, || {
        env.state(&uuid)
            .is_some_and(|s| s["agent_health"]["a"]["limits"].is_array())
    });
    let status = env.run(&["status", &uuid, "--json"]).success().json();
    let limits = status["cells"][0]["agents"][0]["limits"]
        .as_array()
        .expect("limits")
        .clone();
    let of = |name: &str| {
        limits
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {limits:#?}"))
            .clone()
    };
    assert_eq!(of("nofile")["by"], "rlimit");
    assert_eq!(of("nofile")["value"], 256);
    // memory.max holds exactly where the agent's cgroup has the file; and
    // status says which.
    let group_file = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(String::from))
        })
        .zip(cgroup2_mount())
        .map(|(rel, mount)| mount.join(rel.trim_start_matches('/')).join("memory.max"));
    match group_file.filter(|f| f.exists()) {
        Some(file) => {
            assert_eq!(of("memory.max")["by"], "cgroup");
            assert_eq!(
                std::fs::read_to_string(file).expect("memory.max").trim(),
                "268435456"
            );
        }
        None => {
            assert_eq!(of("memory.max")["by"], "none");
            assert!(of("memory.max")["note"].is_string());
        }
    }
    let table = env.run(&["status", &uuid]).success().stdout;
    assert!(
        table.contains("limits: nofile=256 (rlimit), memory.max=268435456"),
        "{table}"
    );
    // `cell show` says what it is started with.
    let shown = env.run(&["cell", "show", &uuid]).success().stdout;
    assert!(
        shown.contains(", limits nofile=256 memory.max=268435456")
            && shown.contains("isolation                  directory"),
        "{shown}"
    );
}
