//! Measures the daemon against the targets of BRIEF section 10, on the
//! real binary, and prints the figures recorded in BENCHMARKS.md.
//!
//!     cargo bench --bench daemon                 # 1,000 cells × 10 agents
//!     cargo bench --bench daemon -- --scale      # 10,000 cells × 10 agents
//!     cargo bench --bench daemon -- --started --cells 100   # agents started by the daemon
//!
//! Load run: every agent beats every 2 s (atomic writes, spread evenly);
//! after a warm-up, one agent in each of 100 cells stops beating and the
//! delay between its stale deadline (last heartbeat + threshold) and the
//! `ts` of its `agent_stale` line is collected. CPU is the daemon's
//! utime+stime over the steady window divided by heartbeats written.
//! Scale run: discovery time (spawn to "ready"), RSS after it, and
//! `--list-cells` wall time over 10,000 cells.
//!
//!     cargo bench --bench daemon -- --revival    # revival latency
//!     cargo bench --bench daemon -- --shutdown   # SIGTERM to exit, 10,000 cells on disk
//!
//!     cargo bench --bench daemon -- --checkpoint [--mib 1024]   # a big checkpoint vs other cells' deadlines
//!     cargo bench --bench daemon -- --follow [--cells 1000] [--lines 5000]   # events --follow latency
//!
//! Follow run: `lazarus-pit events --follow --json` over `--cells` cells;
//! lines are appended to random cells (about 1,000 a second, every 500th
//! cell's stream rotated by rename now and then); measured: from each
//! write to the follower printing it, and lines lost or doubled.
//!
//! Checkpoint run: one cell holds a workspace of `--mib` MiB of
//! incompressible files; while the daemon checkpoints it (asked by
//! `lazarus-pit checkpoint`, as an operator would), agents of 50 other
//! cells stop beating one after another, so their stale deadlines fall
//! inside the checkpoint's window. Measured: the checkpoint's size and
//! time, and how late each of those `agent_stale` lines is.
//!
//! Revival run: the daemon starts real agent processes (this benchmark
//! binary in `--probe-agent` mode: it notes the instant it runs, then
//! waits to be killed). Half the agents never beat and are revived at each
//! deadline (`resurrect_after` after their start); the other half are
//! killed with SIGKILL one after another. Measured: from the deadline, or
//! from the kill, to the instant the new process runs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test: this build's, or `LAZARUS_BENCH_BIN` (to compare
/// two builds in the same hour on a host whose speed drifts).
fn bin() -> String {
    std::env::var("LAZARUS_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lazarus-pit").into())
}
const BEAT_EVERY: f64 = 2.0;
const STALE: f64 = 5.0;
const VICTIM_CELLS: usize = 100;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn uuid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

fn agent(j: usize) -> String {
    format!("agent-{j}")
}

/// Writes `cells` cells of `agents` agents each, with a heartbeat apiece
/// — or, if `started`, with a command (the probe) and no heartbeat, so the
/// daemon starts every agent itself.
fn populate(root: &Path, cells: usize, agents: usize, started: bool) {
    let ts = now();
    let probe = std::env::current_exe().expect("exe");
    for i in 0..cells {
        let id = uuid(i);
        let dir = root.join(&id);
        std::fs::create_dir_all(dir.join(".lazarus/heartbeats")).expect("mkdir");
        std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
        std::fs::create_dir_all(dir.join("workspace")).expect("mkdir");
        let list: Vec<Value> = (0..agents)
            .map(|j| match started {
                true => json!({"name": agent(j), "role": "bench",
                               "command": [&probe, "--probe-agent"]}),
                false => json!({"name": agent(j), "role": "bench"}),
            })
            .collect();
        let manifest = json!({"uuid": id, "status": "active", "mission": format!("bench {i}"), "agents": list});
        std::fs::write(dir.join("cell.json"), manifest.to_string()).expect("cell.json");
        for j in (0..agents).filter(|_| !started) {
            write_beat(&dir, &agent(j), ts);
        }
    }
}

fn write_beat(cell: &Path, agent: &str, ts: f64) {
    let dir = cell.join(".lazarus/heartbeats");
    let tmp = dir.join(format!(".{agent}.tmp"));
    std::fs::write(
        &tmp,
        format!("{{\"agent\":\"{agent}\",\"timestamp\":{ts:.6},\"status\":\"working\"}}"),
    )
    .expect("write");
    std::fs::rename(&tmp, dir.join(format!("{agent}.json"))).expect("rename");
}

struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(root: &Path, config: &Path) -> Daemon {
        let mut child = Command::new(bin())
            .args(["daemon"])
            .env("LAZARUS_ROOT", root)
            .env("LAZARUS_CONFIG", config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !line.contains(" agent_stale ") {
                    let mut log = sink.lock().expect("log");
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        Daemon { child, log }
    }

    fn wait_ready(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        while !self.log.lock().expect("log").contains("ready:") {
            assert!(
                start.elapsed() < limit,
                "daemon not ready:\n{}",
                self.log.lock().expect("log")
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        start.elapsed()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime in seconds.
    fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let after = &stat[stat.rfind(')').expect(")") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 =
            fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        ticks / hz
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// (steal, total) jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (fields.get(7).copied().unwrap_or(0), fields.iter().sum())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn event_ts(e: &Value) -> f64 {
    let t = chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().unwrap_or("")).expect("ts");
    t.timestamp_micros() as f64 / 1e6
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--probe-agent") {
        return probe_agent();
    }
    if args.iter().any(|a| a == "--revival") {
        let agents = arg("--agents").and_then(|v| v.parse().ok()).unwrap_or(20);
        let seconds = arg("--seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10.0);
        return revival(agents, seconds);
    }
    if args.iter().any(|a| a == "--follow") {
        let cells = arg("--cells").and_then(|v| v.parse().ok()).unwrap_or(1000);
        let lines = arg("--lines").and_then(|v| v.parse().ok()).unwrap_or(5000);
        return follow(cells, lines);
    }
    if args.iter().any(|a| a == "--checkpoint") {
        let mib = arg("--mib").and_then(|v| v.parse().ok()).unwrap_or(1024);
        return checkpoint(mib);
    }
    if args.iter().any(|a| a == "--shutdown") {
        return shutdown(
            arg("--cells")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000),
        );
    }
    if args.iter().any(|a| a == "--scale") {
        return scale(
            arg("--cells")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000),
        );
    }
    let cells: usize = arg("--cells").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let agents: usize = arg("--agents").and_then(|v| v.parse().ok()).unwrap_or(10);
    let steady: f64 = arg("--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    load(cells, agents, steady, args.iter().any(|a| a == "--started"));
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

/// Where the root goes: `--dir DIR`, else a temp dir in `/dev/shm` (the
/// daemon's own cost, without the disk's), else the system temp dir.
/// A benchmark's temporary directory (its root is `missions` in it). When
/// dropped, whatever still runs in the cgroups its daemons made for that
/// root is killed and the groups are removed (the daemon leaves running
/// agents and their groups behind by design).
struct Tmp(tempfile::TempDir);

impl std::ops::Deref for Tmp {
    type Target = tempfile::TempDir;
    fn deref(&self) -> &tempfile::TempDir {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let Some(mount) = std::fs::read_to_string("/proc/mounts").ok().and_then(|m| {
            m.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
            })
        }) else {
            return;
        };
        let root = self.0.path().join("missions");
        let base = mount.join(format!(
            "lazarus-pit-{}",
            lazarus_pit::records::root_key(&root)
        ));
        let dirs = |p: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        };
        let groups: Vec<PathBuf> = dirs(&base).iter().flat_map(|c| dirs(c)).collect();
        for g in &groups {
            let _ = std::fs::write(g.join("cgroup.kill"), "1");
        }
        let until = Instant::now() + Duration::from_secs(5);
        for g in &groups {
            while std::fs::read_to_string(g.join("cgroup.events"))
                .is_ok_and(|e| e.contains("populated 1"))
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::remove_dir(g);
            if let Some(cell) = g.parent() {
                let _ = std::fs::remove_dir(cell);
            }
        }
        let _ = std::fs::remove_dir(&base);
    }
}

fn tempdir() -> Tmp {
    let base = arg("--dir").map(PathBuf::from).or_else(|| {
        Path::new("/dev/shm")
            .is_dir()
            .then(|| PathBuf::from("/dev/shm"))
    });
    Tmp(match base {
        Some(dir) => tempfile::tempdir_in(dir).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    })
}

fn fs_type(path: &Path) -> String {
    let out = Command::new("df").arg("-T").arg(path).output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// A temporary root and a config file for it: `cells` (TOML after the
/// state directory's `[daemon]` table).
fn bench_root(cells: &str) -> (Tmp, PathBuf, PathBuf) {
    let tmp = tempdir();
    let root = tmp.path().join("missions");
    let config = tmp.path().join("bench.toml");
    std::fs::write(&config, format!("{}{cells}", state_dir(tmp.path()))).expect("config");
    (tmp, root, config)
}

/// The `[daemon]` section that keeps a benchmark's records in its own
/// temporary directory (never `/var/lib/lazarus-pit`).
fn state_dir(tmp: &Path) -> String {
    // `LAZARUS_BENCH_CGROUP=off`: agents controlled by process group, to
    // compare with a cgroup each.
    let cgroup = std::env::var("LAZARUS_BENCH_CGROUP").unwrap_or_else(|_| "auto".into());
    format!(
        "[daemon]\nstate_dir = {:?}\ncgroup = {cgroup:?}\n",
        tmp.join("state")
    )
}

fn load(cells: usize, agents: usize, steady: f64, started: bool) {
    let (tmp, root, config) = bench_root(&format!(
        "[cells]\nheartbeat_stale_threshold = {STALE}\nresurrect_after = 3600\n[events]\nheartbeats = \"none\"\n"
    ));
    println!(
        "lazarus-pit daemon benchmark — {cells} cells × {agents} agents, beating every {BEAT_EVERY} s"
    );
    println!("machine: {}", machine());
    println!("root: {} ({})", root.display(), fs_type(tmp.path()));
    populate(&root, cells, agents, started);

    let daemon = Daemon::start(&root, &config);
    let ready = daemon.wait_ready(Duration::from_secs(120));
    if started {
        println!(
            "agents: started by the daemon (probe processes): each heartbeat also samples /proc"
        );
        let dirs: Vec<PathBuf> = (0..cells).map(|i| root.join(uuid(i))).collect();
        let up = || {
            dirs.iter()
                .map(|d| (0..agents).map(|j| ups(d, &agent(j)).len()).sum::<usize>())
                .sum::<usize>()
        };
        let limit = Instant::now() + Duration::from_secs(120);
        while up() < cells * agents {
            assert!(
                Instant::now() < limit,
                "only {} of {} agents started",
                up(),
                cells * agents
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!(
        "discovery: ready {:.0} ms after spawn",
        ready.as_secs_f64() * 1000.0
    );

    // Writers: every agent beats every BEAT_EVERY seconds, phases spread.
    let dirs: Vec<PathBuf> = (0..cells).map(|i| root.join(uuid(i))).collect();
    let total = cells * agents;
    let victims: Vec<usize> = (0..VICTIM_CELLS.min(cells))
        .map(|i| i * (cells / VICTIM_CELLS.min(cells)).max(1))
        .collect();
    let stop_victims = Arc::new(AtomicBool::new(false));
    let stop_all = Arc::new(AtomicBool::new(false));
    let beats = Arc::new(AtomicU64::new(0));
    let last_victim_beat: Arc<Mutex<HashMap<usize, f64>>> = Arc::default();
    let mut is_victim = vec![false; cells];
    for &v in &victims {
        is_victim[v] = true;
    }
    let writer = {
        let (stop_victims, stop_all, beats, last) = (
            stop_victims.clone(),
            stop_all.clone(),
            beats.clone(),
            last_victim_beat.clone(),
        );
        let dirs = dirs.clone();
        std::thread::spawn(move || {
            // Round robin: agent k beats at start + (k + n·total)·gap.
            let gap = BEAT_EVERY / total as f64;
            let start = now();
            let mut slot: u64 = 0;
            while !stop_all.load(Ordering::Relaxed) {
                let due = start + slot as f64 * gap;
                let wait = due - now();
                if wait > 0.001 {
                    std::thread::sleep(Duration::from_secs_f64(wait));
                }
                let k = (slot % total as u64) as usize;
                slot += 1;
                let (cell, a) = (k / agents, k % agents);
                let victim = a == 0 && is_victim[cell];
                if victim && stop_victims.load(Ordering::Relaxed) {
                    continue;
                }
                let ts = now();
                write_beat(&dirs[cell], &agent(a), ts);
                if victim {
                    last.lock().expect("last").insert(cell, ts);
                }
                beats.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Warm-up, then the steady window for CPU per heartbeat.
    std::thread::sleep(Duration::from_secs(3));
    let (cpu0, beats0, t0) = (daemon.cpu(), beats.load(Ordering::Relaxed), Instant::now());
    let steal0 = cpu_jiffies();
    std::thread::sleep(Duration::from_secs_f64(steady));
    let (cpu1, beats1, window) = (daemon.cpu(), beats.load(Ordering::Relaxed), t0.elapsed());
    let steal1 = cpu_jiffies();
    let steal = (steal1.0 - steal0.0) as f64 / (steal1.1 - steal0.1).max(1) as f64 * 100.0;
    let handled = beats1 - beats0;
    let rate = handled as f64 / window.as_secs_f64();
    let cpu_per_beat = (cpu1 - cpu0) / handled as f64;

    // Stale detection: the victims stop beating.
    let stopped_at = now();
    stop_victims.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(STALE + BEAT_EVERY + 3.0));
    let last = last_victim_beat.lock().expect("last").clone();
    let mut delays = Vec::new();
    let mut false_stale = 0;
    for (i, dir) in (0..cells).zip(&dirs) {
        let Ok(text) = std::fs::read_to_string(dir.join("logs/events.jsonl")) else {
            continue;
        };
        for line in text.lines() {
            let e: Value = serde_json::from_str(line).expect("event line");
            if e["event"] != "agent_stale" {
                continue;
            }
            match (e["agent"].as_str(), last.get(&i)) {
                (Some("agent-0"), Some(seen)) if event_ts(&e) >= stopped_at => {
                    delays.push((event_ts(&e) - (seen + STALE)) * 1000.0)
                }
                _ => false_stale += 1,
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    let hwm = daemon.status_kib("VmHWM:");
    let rss = daemon.status_kib("VmRSS:");
    stop_all.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    daemon.stop();
    for dir in &dirs {
        for j in 0..agents {
            for (pid, _) in ups(dir, &agent(j)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| heartbeats handled | {handled} in {:.1} s ({rate:.0}/s) | — |",
        window.as_secs_f64()
    );
    println!(
        "| daemon CPU per heartbeat | {:.2} µs | ≤ 10 µs |",
        cpu_per_beat * 1e6
    );
    println!(
        "| agent_stale after its deadline (n = {}) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | p99 ≤ 50 ms |",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN)
    );
    println!("| false agent_stale (agents still beating) | {false_stale} | 0 |");
    println!("| host steal time during the window | {steal:.0} % | — |");
    println!(
        "| daemon peak RSS (VmHWM) | {:.1} MiB (now {:.1} MiB) | — |",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    println!(
        "| discovery of {cells} cells (spawn to ready) | {:.0} ms | — |",
        ready.as_secs_f64() * 1000.0
    );
}

fn scale(cells: usize) {
    let agents = 10;
    let (tmp, root, config) =
        bench_root("[cells]\nheartbeat_stale_threshold = 600\n[events]\nheartbeats = \"none\"\n");
    println!("lazarus-pit scale benchmark — {cells} cells × {agents} agents");
    println!("machine: {}", machine());
    println!("root: {} ({})", root.display(), fs_type(tmp.path()));
    populate(&root, cells, agents, false);

    let list_start = Instant::now();
    let out = Command::new(bin())
        .args(["--list-cells"])
        .env("LAZARUS_ROOT", &root)
        .env("LAZARUS_CONFIG", &config)
        .output()
        .expect("list");
    let list = list_start.elapsed();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), cells);

    let daemon = Daemon::start(&root, &config);
    let ready = daemon.wait_ready(Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(2));
    let hwm = daemon.status_kib("VmHWM:");
    let rss = daemon.status_kib("VmRSS:");

    // Reaction to a new cell: one whose agent's heartbeat is already old,
    // so the daemon reports agent_stale as soon as it has read the cell.
    let mut reactions = Vec::new();
    for n in 0..20 {
        let id = uuid(cells + 1 + n);
        let staging = root.join(format!(".staging-{n}"));
        std::fs::create_dir_all(staging.join(".lazarus/heartbeats")).expect("mkdir");
        std::fs::create_dir_all(staging.join("logs")).expect("mkdir");
        let manifest = json!({"uuid": id, "status": "active", "agents": [{"name": "a"}]});
        std::fs::write(staging.join("cell.json"), manifest.to_string()).expect("write");
        write_beat(&staging, "a", now() - 3600.0);
        let at = now();
        std::fs::rename(&staging, root.join(&id)).expect("rename");
        let events = root.join(&id).join("logs/events.jsonl");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&events)
                && let Some(line) = text.lines().find(|l| l.contains("agent_stale"))
            {
                let e: Value = serde_json::from_str(line).expect("line");
                reactions.push((event_ts(&e) - at) * 1000.0);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no reaction to {id}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    reactions.sort_by(f64::total_cmp);
    daemon.stop();
    // A restart: now every cell has a record in state_dir to read back.
    let daemon = Daemon::start(&root, &config);
    let restart = daemon.wait_ready(Duration::from_secs(300));
    daemon.stop();

    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| discovery of {cells} cells (spawn to ready) | {:.0} ms | ≤ 2 s |",
        ready.as_secs_f64() * 1000.0
    );
    println!(
        "| discovery of {cells} cells at a restart, with their records | {:.0} ms | ≤ 2 s |",
        restart.as_secs_f64() * 1000.0
    );
    println!(
        "| daemon RSS at {cells} × {agents} | {:.1} MiB (peak {:.1} MiB) | ≤ 100 MiB |",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "| `--list-cells` over {cells} cells | {:.0} ms | ≤ 0.5 s |",
        list.as_secs_f64() * 1000.0
    );
    println!(
        "| reaction to a new cell (n = {}) | p50 {:.1} ms, p99 {:.1} ms | p99 ≤ 100 ms |",
        reactions.len(),
        percentile(&reactions, 0.5),
        percentile(&reactions, 0.99)
    );
}

/// Shutdown run: `cells` cells × 10 agents, on disk (the benchmark's
/// target directory, or `--dir`), every agent beating once after the
/// daemon has written its first state (so every cell has a `last_seen`
/// not yet written), plus one real state change in every hundredth cell
/// just before SIGTERM. Measured: SIGTERM to exit, against BRIEF's 2 s.
fn shutdown(cells: usize) {
    let agents = 10;
    let base = arg("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("dir");
    let tmp = tempfile::tempdir_in(&base).expect("tempdir");
    let root = tmp.path().join("missions");
    let config = tmp.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "{}[cells]\nheartbeat_stale_threshold = 600\n[events]\nheartbeats = \"none\"\n",
            state_dir(tmp.path())
        ),
    )
    .expect("config");
    println!("lazarus-pit shutdown benchmark — {cells} cells × {agents} agents");
    println!("machine: {}", machine());
    println!("root: {} ({})", root.display(), fs_type(tmp.path()));
    populate(&root, cells, agents, false);
    let daemon = Daemon::start(&root, &config);
    daemon.wait_ready(Duration::from_secs(300));
    let state = |i: usize| root.join(uuid(i)).join(".lazarus/state.json");
    let start = Instant::now();
    while !(0..cells).all(|i| state(i).exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "state.json not written"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every agent beats once: every cell has a last_seen to refresh.
    let ts = now();
    for i in 0..cells {
        for j in 0..agents {
            write_beat(&root.join(uuid(i)), &agent(j), ts);
        }
    }
    // A state change in every hundredth cell: an agent joins it.
    for i in (0..cells).step_by(100) {
        let path = root.join(uuid(i)).join("cell.json");
        let mut m: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        if let Some(list) = m["agents"].as_array_mut() {
            list.push(json!({"name": "late", "role": "bench"}));
        }
        std::fs::write(&path, m.to_string()).expect("write");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut daemon = daemon;
    let pid = daemon.pid() as i32;
    let stop = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = daemon.child.wait().expect("wait");
    let took = stop.elapsed();
    assert!(status.success(), "{status:?}");
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| SIGTERM to exit, {cells} cells on {} | {:.0} ms | ≤ 2 s |",
        fs_type(tmp.path()),
        took.as_secs_f64() * 1000.0
    );
}

/// An agent for the revival run: appends "pid unix-time" to
/// `workspace/up-<agent>.log`, then waits for a signal.
fn probe_agent() {
    let up = now();
    let dir = std::env::var("LAZARUS_CELL_DIR").expect("LAZARUS_CELL_DIR");
    let agent = std::env::var("LAZARUS_AGENT").expect("LAZARUS_AGENT");
    let path = Path::new(&dir).join(format!("workspace/up-{agent}.log"));
    let line = format!("{} {up:.6}\n", std::process::id());
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("up log");
    f.write_all(line.as_bytes()).expect("write");
    drop(f);
    loop {
        nix::unistd::pause();
    }
}

/// The "pid time" lines an agent's instances wrote, in order.
fn ups(cell: &Path, agent: &str) -> Vec<(i64, f64)> {
    std::fs::read_to_string(cell.join(format!("workspace/up-{agent}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, t) = l.split_once(' ')?;
            Some((pid.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

fn revival(agents: usize, seconds: f64) {
    const RESURRECT: f64 = 1.0;
    let (tmp, root, config) = bench_root(
        "[cells]\nheartbeat_stale_threshold = 0.5\nresurrect_after = 1\nkill_grace = 5\n\
             backoff_initial = 0\nbackoff_max = 0\nmax_revive_attempts = 1000000\n\
             reset_after = 1000000\npoll_interval = 30\n[events]\nheartbeats = \"none\"\n",
    );
    let probe = std::env::current_exe().expect("exe");
    let make = |i: usize, crash: bool| {
        let id = uuid(i);
        let dir = root.join(&id);
        std::fs::create_dir_all(dir.join("workspace")).expect("mkdir");
        let mut manifest = json!({"uuid": id, "status": "active", "agents": [
            {"name": "probe", "command": [probe, "--probe-agent"]}]});
        // `LAZARUS_BENCH_ISOLATION=mount-namespace`: what a namespace costs
        // a start.
        if let Ok(level) = std::env::var("LAZARUS_BENCH_ISOLATION") {
            manifest["isolation"] = level.into();
        }
        if crash {
            // Never stale within the run: only the kill explains a revival.
            manifest["heartbeat_stale_threshold"] = 3600.into();
            manifest["resurrect_after"] = 3600.into();
        }
        std::fs::write(dir.join("cell.json"), manifest.to_string()).expect("cell.json");
        dir
    };
    std::fs::create_dir_all(&root).expect("root");
    let stale_cells: Vec<PathBuf> = (0..agents).map(|i| make(i, false)).collect();
    let crash_cells: Vec<PathBuf> = (agents..2 * agents).map(|i| make(i, true)).collect();
    println!("machine: {}", machine());
    println!(
        "revival run: {agents} agents revived at each deadline (resurrect_after {RESURRECT} s), \
         {agents} killed one by one, {seconds} s, root on {}",
        fs_type(tmp.path())
    );
    let daemon = Daemon::start(&root, &config);
    daemon.wait_ready(Duration::from_secs(30));
    let (steal0, total0) = cpu_jiffies();
    // Kill crash agents round-robin, each once its current instance runs.
    let mut kills: HashMap<i64, f64> = HashMap::new();
    let mut killed_last: HashMap<usize, i64> = HashMap::new();
    let start = Instant::now();
    let every =
        Duration::from_secs_f64(seconds / (agents as f64 * 5.0)).max(Duration::from_millis(20));
    let mut i = 0;
    while start.elapsed().as_secs_f64() < seconds {
        let k = i % agents;
        i += 1;
        if let Some(&(pid, _)) = ups(&crash_cells[k], "probe").last()
            && killed_last.get(&k) != Some(&pid)
        {
            let t = now();
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                kills.insert(pid, t);
                killed_last.insert(k, pid);
            }
        }
        std::thread::sleep(every);
    }
    let (steal1, total1) = cpu_jiffies();
    daemon.stop();
    println!(
        "host steal time during the run: {:.0} %",
        100.0 * (steal1 - steal0) as f64 / (total1 - total0).max(1) as f64
    );
    // Every agent outlives the daemon by design: kill them all.
    for cell in stale_cells.iter().chain(&crash_cells) {
        for (pid, _) in ups(cell, "probe") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let mut after_deadline = Vec::new();
    for cell in &stale_cells {
        let up: HashMap<i64, f64> = ups(cell, "probe").into_iter().collect();
        let starts: Vec<Value> = read_events(cell)
            .into_iter()
            .filter(|e| e["event"] == "agent_started" || e["event"] == "agent_revived")
            .collect();
        for pair in starts.windows(2) {
            let deadline = event_ts(&pair[0]) + RESURRECT;
            if let Some(t) = pair[1]["pid"].as_i64().and_then(|p| up.get(&p)) {
                after_deadline.push((t - deadline) * 1000.0);
            }
        }
    }
    let mut after_crash = Vec::new();
    for cell in &crash_cells {
        for e in read_events(cell)
            .iter()
            .filter(|e| e["event"] == "agent_exited")
        {
            let Some(&killed_at) = e["pid"].as_i64().and_then(|p| kills.get(&p)) else {
                continue;
            };
            let up = ups(cell, "probe");
            let next = up
                .iter()
                .position(|(p, _)| Some(*p) == e["pid"].as_i64())
                .and_then(|i| up.get(i + 1));
            if let Some((_, t)) = next {
                after_crash.push((t - killed_at) * 1000.0);
            }
        }
    }
    for (what, mut v) in [
        (
            "revival after its deadline (deadline -> new process runs)",
            after_deadline,
        ),
        (
            "revival after a crash (SIGKILL -> new process runs)",
            after_crash,
        ),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "{what}: n={}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms   [target p99 <= 100 ms]",
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
}

fn read_events(cell: &Path) -> Vec<Value> {
    std::fs::read_to_string(cell.join("logs/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Pseudo-random bytes (xorshift): what gzip cannot shrink.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn checkpoint(mib: usize) {
    const CELLS: usize = 50;
    const STALE_S: f64 = 1.0;
    let (tmp, root, config) = bench_root(&format!(
        "[cells]\nheartbeat_stale_threshold = {STALE_S}\nresurrect_after = 3600\n[events]\nheartbeats = \"none\"\n"
    ));
    println!("lazarus-pit checkpoint benchmark — a {mib} MiB workspace vs {CELLS} other cells");
    println!("machine: {}", machine());
    println!("root: {} ({})", root.display(), fs_type(tmp.path()));
    // Cell 0 is the big one; cells 1..=CELLS have one agent each.
    populate(&root, CELLS + 1, 1, false);
    let big = root.join(uuid(0)).join("workspace");
    let file_mib = 8;
    for f in 0..mib.div_ceil(file_mib) {
        let dir = big.join(format!("d{}", f % 16));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join(format!("f{f}.bin")),
            noise(f as u64 + 1, file_mib << 20),
        )
        .expect("write");
    }
    let daemon = Daemon::start(&root, &config);
    daemon.wait_ready(Duration::from_secs(120));
    let dirs: Vec<PathBuf> = (1..=CELLS).map(|i| root.join(uuid(i))).collect();
    // Everyone beats every 0.2 s; victim i stops when told to.
    let stop_at: Arc<Mutex<Vec<Option<f64>>>> = Arc::new(Mutex::new(vec![None; CELLS]));
    let last: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(vec![0.0; CELLS]));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop_at, last, done, dirs) =
            (stop_at.clone(), last.clone(), done.clone(), dirs.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for (i, dir) in dirs.iter().enumerate() {
                    let t = now();
                    if stop_at.lock().expect("stop")[i].is_some_and(|s| t >= s) {
                        continue;
                    }
                    write_beat(dir, &agent(0), t);
                    last.lock().expect("last")[i] = t;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Victims stop so that their deadlines spread over the next seconds.
    let asked = now();
    {
        let mut stops = stop_at.lock().expect("stop");
        for (i, s) in stops.iter_mut().enumerate() {
            *s = Some(asked + i as f64 * 0.2);
        }
    }
    let out = Command::new(bin())
        .args(["checkpoint", &uuid(0), "--json"])
        .env("LAZARUS_ROOT", &root)
        .env("LAZARUS_CONFIG", &config)
        .output()
        .expect("checkpoint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answered = now();
    let quiet = asked + CELLS as f64 * 0.2 + STALE_S + 1.0 - now();
    std::thread::sleep(Duration::from_secs_f64(quiet.max(STALE_S + 1.0)));
    done.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let events = read_events(&root.join(uuid(0)));
    let created = events
        .iter()
        .find(|e| e["event"] == "checkpoint_created")
        .expect("checkpoint_created");
    let took = created["took_ms"].as_f64().unwrap_or(f64::NAN);
    let bytes = created["bytes"].as_f64().unwrap_or(f64::NAN);
    let finished = event_ts(created);
    let started = finished - took / 1000.0;
    let last = last.lock().expect("last").clone();
    let mut during = Vec::new();
    let mut after = Vec::new();
    // agent_stale of an agent that beat again after it: the writer (this
    // process) fell behind, on a disk busy with the archive.
    let mut early = 0;
    for (i, dir) in dirs.iter().enumerate() {
        let deadline = last[i] + STALE_S;
        for e in read_events(dir)
            .iter()
            .filter(|e| e["event"] == "agent_stale" && event_ts(e) >= asked)
        {
            if event_ts(e) < last[i] {
                early += 1;
                continue;
            }
            let late = (event_ts(e) - deadline) * 1000.0;
            if deadline >= started && deadline <= finished {
                during.push(late);
            } else {
                after.push(late);
            }
            break;
        }
    }
    daemon.stop();
    during.sort_by(f64::total_cmp);
    after.sort_by(f64::total_cmp);
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| checkpoint of {mib} MiB (incompressible) | {:.0} MiB archive in {:.1} s ({:.0} MiB/s); the command returned after {:.1} s | — |",
        bytes / 1048576.0,
        took / 1000.0,
        mib as f64 / (took / 1000.0),
        answered - asked
    );
    println!(
        "| other cells' agent_stale, deadline during the checkpoint (n = {}) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | p99 ≤ 50 ms |",
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| the same, deadline outside it (n = {}) | p50 {:.1} ms, max {:.1} ms | — |",
        after.len(),
        percentile(&after, 0.5),
        after.last().copied().unwrap_or(f64::NAN)
    );
    println!("| agent_stale of agents whose writer fell behind (beat again after) | {early} | — |");
}

/// `events --follow`: how soon a line written to any of `cells` streams
/// is printed, with rotations among them.
fn follow(cells: usize, lines: usize) {
    use std::io::Write;
    let (_tmp, root, config) = bench_root("");
    populate(&root, cells, 1, false);
    for i in 0..cells {
        std::fs::write(root.join(uuid(i)).join("logs/events.jsonl"), "").expect("stream");
    }
    let mut child = Command::new(bin())
        .args(["events", "--follow", "--json"])
        .env("LAZARUS_ROOT", &root)
        .env("LAZARUS_CONFIG", &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("follower");
    let stdout = child.stdout.take().expect("stdout");
    let seen: Arc<Mutex<HashMap<u64, (Instant, usize)>>> = Arc::new(Mutex::new(HashMap::new()));
    let ready = Arc::new(AtomicBool::new(false));
    {
        let seen = seen.clone();
        let ready = ready.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["event"] == "bench_ready" {
                    ready.store(true, Ordering::Release);
                } else if let Some(n) = v["seq"].as_u64() {
                    let mut seen = seen.lock().expect("seen");
                    seen.entry(n).or_insert((at, 0)).1 += 1;
                }
            }
        });
    }
    let append = |cell: usize, text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(root.join(uuid(cell)).join("logs/events.jsonl"))
            .expect("open");
        f.write_all(text.as_bytes()).expect("append");
    };
    let start = Instant::now();
    while !ready.load(Ordering::Acquire) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "follower never ready"
        );
        append(
            0,
            &format!(
                "{{\"ts\":\"2026-01-01T00:00:00.000Z\",\"event\":\"bench_ready\",\"cell\":\"{}\"}}\n",
                uuid(0)
            ),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let setup = start.elapsed();
    let mut written: Vec<Instant> = Vec::with_capacity(lines);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let began = Instant::now();
    for n in 0..lines {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let cell = (rng % cells as u64) as usize;
        if n % 500 == 499 {
            // A rotation, as the daemon makes it.
            let logs = root.join(uuid(cell)).join("logs");
            let _ = std::fs::rename(logs.join("events.jsonl"), logs.join("events.jsonl.1"));
        }
        // About 1,000 lines a second.
        let due = began + Duration::from_micros(n as u64 * 1000);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        written.push(Instant::now());
        append(
            cell,
            &format!(
                "{{\"ts\":\"2026-01-01T00:00:01.000Z\",\"event\":\"heartbeat\",\"cell\":\"{}\",\"seq\":{n}}}\n",
                uuid(cell)
            ),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().expect("seen").len() < lines && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let seen = seen.lock().expect("seen");
    let mut lat: Vec<f64> = (0..lines)
        .filter_map(|n| {
            seen.get(&(n as u64))
                .map(|(at, _)| at.duration_since(written[n]).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).expect("number"));
    let doubled = seen.values().filter(|(_, k)| *k > 1).count();
    println!(
        "events --follow over {cells} cells ({} rotations), {lines} lines at ~1,000/s",
        lines / 500
    );
    println!(
        "  follower ready after {:.2} s (watches on every cell)",
        setup.as_secs_f64()
    );
    println!(
        "  write -> printed: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!("  lost {}, doubled {doubled}", lines - seen.len());
}
