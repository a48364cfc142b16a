//! A temporary cells root and the real binary, run against it.
//!
//! Every [`Env`] has its own root, its own state directory and its own
//! config file (naming that state directory), and clears the `LAZARUS_*`
//! variables of the calling environment, so no test reads `/etc` or
//! touches `/var/missions` or `/var/lib/lazarus-pit`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lazarus-pit");

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
    /// The daemon's `[daemon] state_dir`.
    pub state: PathBuf,
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Shown in failure messages (through `Debug`).
    #[allow(dead_code)]
    pub args: Vec<String>,
}

impl Run {
    fn from_output(args: Vec<String>, out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args,
        }
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    /// Asserts `status` ran and reported: exit 0 (every agent well) or 1
    /// (an agent needs attention).
    #[track_caller]
    pub fn reported(self) -> Run {
        assert!(matches!(self.code, Some(0 | 1)), "{self:#?}");
        self
    }

    /// Asserts the exit code and that stderr mentions `needle`.
    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.code, Some(code), "{self:#?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:#?}"
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("missions");
        let config = tmp.path().join("lazarus-pit.toml");
        let state = tmp.path().join("state");
        let env = Env {
            tmp,
            root,
            config,
            state,
        };
        env.config("");
        env
    }

    /// A command for the binary with this env's root and config.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LAZARUS_") {
                cmd.env_remove(&key);
            }
        }
        cmd.args(args)
            .env("LAZARUS_ROOT", &self.root)
            .env("LAZARUS_CONFIG", &self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_cmd(self.command(args), args)
    }

    pub fn run_cmd(&self, mut cmd: Command, args: &[&str]) -> Run {
        let out = cmd.output().expect("run lazarus-pit");
        Run::from_output(args.iter().map(|s| s.to_string()).collect(), out)
    }

    /// `cell create` with `args`; returns the new UUID.
    pub fn create(&self, args: &[&str]) -> String {
        let mut all = vec!["cell", "create"];
        all.extend_from_slice(args);
        let run = self.run(&all).success();
        let uuid = run.stdout.trim().to_string();
        assert_eq!(uuid.len(), 36, "{run:#?}");
        uuid
    }

    pub fn cell(&self, uuid: &str) -> PathBuf {
        self.root.join(uuid)
    }

    pub fn manifest(&self, uuid: &str) -> Value {
        read_json(&self.cell(uuid).join("cell.json"))
    }

    /// Every line of the cell's events.jsonl, each parsed (a torn line fails).
    pub fn events(&self, uuid: &str) -> Vec<Value> {
        read_jsonl(&self.cell(uuid).join("logs/events.jsonl"))
    }

    pub fn event_names(&self, uuid: &str) -> Vec<String> {
        self.events(uuid)
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Every file below the root, relative, sorted (to prove nothing was written).
    pub fn tree(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(
            path.strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string(),
        );
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(base, &path, out);
        }
    }
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.is_empty() || text.ends_with('\n'), "last line is torn");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect()
}

/// Waits until `cond` holds, checking every 10 ms, failing after `limit`.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `cond` comes to hold within `limit` (checked every 10 ms), for
/// tests that say more than "timed out" when it does not.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The repository's own files (schemas, templates, spec).
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A daemon started by a test: killed by pid when dropped if still running.
pub struct Daemon {
    pub child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Env {
    /// Writes the config file, with this env's `[daemon] state_dir`
    /// added unless `toml` names one (text that is not TOML is written as
    /// it is).
    pub fn config(&self, toml: &str) {
        let text = match toml.parse::<toml::Table>() {
            Ok(mut table) => {
                let daemon = table
                    .entry("daemon")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(daemon) = daemon.as_table_mut() {
                    daemon
                        .entry("state_dir")
                        .or_insert_with(|| toml::Value::String(self.state.display().to_string()));
                }
                toml::to_string(&table).expect("toml")
            }
            Err(_) => toml.to_string(),
        };
        std::fs::write(&self.config, text).expect("config");
    }

    /// Requests waiting in the daemon's inbox (its `state_dir`).
    pub fn inbox(&self) -> Vec<String> {
        let Some(dir) = self.records_dir() else {
            return Vec::new();
        };
        let mut names: Vec<String> = std::fs::read_dir(dir.join("inbox"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// `<state_dir>/roots/<key>`: the records of this env's root.
    pub fn records_dir(&self) -> Option<PathBuf> {
        let roots = self.state.join("roots");
        Some(std::fs::read_dir(&roots).ok()?.flatten().next()?.path())
    }

    /// The daemon's record of a cell (its `state_dir`), if written.
    pub fn record(&self, uuid: &str) -> Option<Value> {
        let dir = self.records_dir()?;
        let text = std::fs::read_to_string(dir.join("cells").join(format!("{uuid}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Starts `lazarus-pit daemon` (plus `args`) and waits until it has
    /// made its first scan.
    pub fn daemon(&self, args: &[&str]) -> Daemon {
        let daemon = self.spawn_daemon(args);
        daemon.wait_log("ready:", Duration::from_secs(20));
        daemon
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        let mut all = vec!["daemon"];
        all.extend_from_slice(args);
        self.spawn_daemon_cmd(self.command(&all))
    }

    /// Starts a prepared daemon command, collecting its log.
    pub fn spawn_daemon_cmd(&self, mut cmd: Command) -> Daemon {
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn daemon");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        Daemon { child, log }
    }

    /// `cell create --template` from a partial cell.json; the new UUID.
    pub fn create_from(&self, cell: &Value) -> String {
        let path = self
            .tmp
            .path()
            .join(format!("tpl-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, cell.to_string()).expect("template");
        self.create(&["--template", path.to_str().expect("utf-8")])
    }

    /// Events named `name` of `agent` in the cell's stream.
    pub fn of_agent(&self, uuid: &str, name: &str, agent: &str) -> Vec<Value> {
        self.events_named(uuid, name)
            .into_iter()
            .filter(|e| e["agent"] == agent)
            .collect()
    }

    /// The `pid` of the n-th (1-based) event named `name` of `agent`,
    /// waited for (20 s at most).
    #[track_caller]
    pub fn pid_of(&self, uuid: &str, name: &str, agent: &str, n: usize) -> i32 {
        wait_for(
            &format!("{n} × {name} of {agent}"),
            Duration::from_secs(20),
            || self.of_agent(uuid, name, agent).len() >= n,
        );
        self.of_agent(uuid, name, agent)[n - 1]["pid"]
            .as_i64()
            .expect("pid") as i32
    }

    /// Events named `name` in the cell's stream (empty if no stream yet).
    pub fn events_named(&self, uuid: &str, name: &str) -> Vec<Value> {
        let path = self.cell(uuid).join("logs/events.jsonl");
        if !path.exists() {
            return Vec::new();
        }
        read_jsonl(&path)
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// Waits until the cell's stream has at least `n` events named `name`.
    #[track_caller]
    pub fn wait_event(&self, uuid: &str, name: &str, n: usize, limit: Duration) -> Vec<Value> {
        wait_for(&format!("{n} × {name}"), limit, || {
            self.events_named(uuid, name).len() >= n
        });
        self.events_named(uuid, name)
    }

    /// The cell's state.json, if it exists and parses.
    pub fn state(&self, uuid: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.cell(uuid).join(".lazarus/state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Edits the cell's `cell.json` by hand, as an operator or another tool
    /// would: read it, change it, write it back in place. Returns the
    /// written manifest.
    pub fn edit_manifest(&self, uuid: &str, change: impl FnOnce(&mut Value)) -> Value {
        let path = self.cell(uuid).join("cell.json");
        let mut m = read_json(&path);
        change(&mut m);
        std::fs::write(&path, m.to_string()).expect("write cell.json");
        m
    }

    /// Writes a heartbeat file for `agent` with timestamp `ts` (atomically).
    pub fn beat_at(&self, uuid: &str, agent: &str, ts: f64, status: &str) {
        let dir = self.cell(uuid).join(".lazarus/heartbeats");
        let tmp = dir.join(format!(".{agent}.tmp"));
        let body = serde_json::json!({"agent": agent, "timestamp": ts, "status": status});
        std::fs::write(&tmp, body.to_string()).expect("write");
        std::fs::rename(&tmp, dir.join(format!("{agent}.json"))).expect("rename");
    }

    pub fn beat(&self, uuid: &str, agent: &str, status: &str) {
        self.beat_at(uuid, agent, now(), status);
    }
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    #[track_caller]
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "no {needle:?} in the daemon's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then waits (at most `limit`) for the exit status.
    #[track_caller]
    pub fn stop(mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        self.signal(nix::sys::signal::Signal::SIGTERM);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "daemon did not exit within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Env {
    /// Pids of every agent instance the test agent (`tests/agent.sh`)
    /// recorded under this root, by agent name, in order of start.
    pub fn agent_pids(&self) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for cell in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let ws = cell.path().join("workspace");
            for f in std::fs::read_dir(&ws).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name
                    .strip_prefix("start-")
                    .and_then(|r| r.strip_suffix(".env"))
                    && let Some((agent, pid)) = rest.rsplit_once('-')
                    && let Ok(pid) = pid.parse()
                {
                    let modified = f.metadata().and_then(|m| m.modified()).ok();
                    out.push((modified, agent.to_string(), pid));
                }
            }
        }
        out.sort();
        out.into_iter().map(|(_, a, p)| (a, p)).collect()
    }

    /// What an agent instance recorded at its start (`key=value` lines).
    pub fn agent_start(
        &self,
        uuid: &str,
        agent: &str,
        pid: i32,
    ) -> std::collections::HashMap<String, String> {
        let path = self
            .cell(uuid)
            .join(format!("workspace/start-{agent}-{pid}.env"));
        // The daemon reports the start before the agent's first line runs.
        wait_for(
            &format!("{} to be written", path.display()),
            Duration::from_secs(10),
            || path.exists(),
        );
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

impl Drop for Env {
    /// Kills every agent the daemons of this test started (they outlive a
    /// daemon by design): each leads its own session, so its process group
    /// goes with it. Only processes whose environment names this root.
    fn drop(&mut self) {
        let root = self.root.display().to_string();
        // From the agents' own records, and from the daemon's events (an
        // agent may not have written its record yet).
        let mut pids: Vec<i32> = self.agent_pids().into_iter().map(|(_, p)| p).collect();
        for cell in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let events = cell.path().join("logs/events.jsonl");
            // A test may leave a FIFO there (an agent's trick): never
            // block on it.
            if !std::fs::symlink_metadata(&events).is_ok_and(|m| m.is_file()) {
                continue;
            }
            for e in std::fs::read_to_string(events).unwrap_or_default().lines() {
                if let Ok(v) = serde_json::from_str::<Value>(e)
                    && (v["event"] == "agent_started" || v["event"] == "agent_revived")
                    && let Some(pid) = v["pid"].as_i64()
                {
                    pids.push(pid as i32);
                }
            }
        }
        // Whatever runs in the cgroups the daemons made for this root
        // (agents' processes that left their group among them).
        kill_cgroups(&self.root);
        for pid in pids {
            let ours = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0).any(|kv| {
                    kv.starts_with(b"LAZARUS_CELL_DIR=") && kv[17..].starts_with(root.as_bytes())
                })
            });
            if ours {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Kills every process in the cgroups of this root's daemons
/// (`lazarus-pit-<root key>` beneath any cgroup2 directory the tests use)
/// and removes them.
fn kill_cgroups(root: &Path) {
    let Some(mount) = cgroup2_mount() else {
        return;
    };
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let name = format!("lazarus-pit-{}", lazarus_pit::records::root_key(&canonical));
    let base = mount.join(&name);
    let groups: Vec<PathBuf> = std::fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|cell| {
            std::fs::read_dir(cell.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
        })
        .collect();
    for group in &groups {
        let _ = std::fs::write(group.join("cgroup.kill"), "1");
    }
    for group in &groups {
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(group.join("cgroup.events"))
                .map_or(true, |e| e.contains("populated 0"))
        });
        let _ = std::fs::remove_dir(group);
        if let Some(cell) = group.parent() {
            let _ = std::fs::remove_dir(cell);
        }
    }
    let _ = std::fs::remove_dir(&base);
}

/// Where cgroup v2 is mounted, if it is.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}
