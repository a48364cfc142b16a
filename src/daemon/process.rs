//! Agent processes: starting them inside their cell, knowing for sure which
//! process is whose, watching them for exit, and stopping them.
//!
//! Identity. A pid alone proves nothing (pids are recycled, and a heartbeat
//! can name any pid). A process is the agent's if the daemon started it and
//! its pid *and* start time (field 22 of `/proc/<pid>/stat`) still match,
//! on the same boot, by the daemon's own records; or — to adopt or stop a
//! process a heartbeat names — if it runs as the agent's user and its
//! environment carries this cell's `LAZARUS_CELL_UUID` and this agent's
//! `LAZARUS_AGENT`. Nothing else is ever signalled, never pid 1 or the
//! daemon itself. When agents run as another user, a process found by a
//! claim or in an adopted instance's session must run as that user (a
//! set-uid program it ran does not); the process group of an instance the
//! daemon started is the agent's by descent and goes as a whole, whoever
//! its members run as (as a cgroup will).
//!
//! Every agent runs in its own session (`setsid`), so its pid is also its
//! process group and session id. Stopping an agent the daemon started
//! signals its process group while the (possibly zombie) leader is still
//! unreaped, so the group id cannot have been reused; when the agent ends,
//! by itself or not, what is left of its group is killed too. For a process
//! adopted after a restart (not our child) the session is found in `/proc`:
//! every member that started no earlier than the leader.
//!
//! Agents' output goes to a descriptor of `logs/<agent>.log`, never to a
//! pipe, so agents keep running and logging when the daemon restarts.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::time::ClockId;
use nix::unistd::{Gid, Pid, Uid};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use super::cgroup::{AgentGroup, Cgroups, Control};
use super::limits::{Enforced, Means};
pub use super::podman::Container;
use crate::cell::manifest::Isolation;
use crate::cell::settings::SpawnSpec;
use crate::store::Dir;
use crate::supervisor::{AgentId, CellId, ExitInfo, Instance, Reason};

/// What an agent's environment takes from the daemon's, besides
/// `[cells] pass_env`: where programs are, and how to speak and tell time.
/// Everything else the daemon was given (tokens, `HOME`, systemd's
/// sockets) stays with the daemon.
const PASSED: &[&str] = &["PATH", "LANG", "TZ"];
/// `PATH` when the daemon has none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The soft `RLIMIT_NOFILE` the daemon was started with (0: unknown). The
/// daemon raises its own to the hard limit — it holds a pidfd per agent
/// and a watch per cell, and running out would blind it — and gives the
/// agents and hooks it starts the limit it was given, not its own.
static INHERITED_NOFILE: AtomicU64 = AtomicU64::new(0);

/// Raises the daemon's soft descriptor limit to its hard one (at most the
/// kernel's `nr_open`), remembering the old one for its children.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    INHERITED_NOFILE.store(soft, Ordering::Relaxed);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let want = hard.min(nr_open);
    if want > soft
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard)
    {
        tracing::debug!("cannot raise the descriptor limit to {want}: {e}");
    }
}

/// In a forked child, before exec: the descriptor limit the daemon was
/// started with. Async-signal-safe.
pub(crate) fn restore_nofile_limit() {
    let soft = INHERITED_NOFILE.load(Ordering::Relaxed);
    if soft == 0 {
        return;
    }
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard);
    }
}

/// Descriptors kept free for the daemon's own work (cells, heartbeats,
/// records, hooks) whatever the number of agents it runs.
const FD_RESERVE: u64 = 96;

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// R running, S sleeping, D disk wait, T stopped, Z zombie, …
    pub state: char,
    pub session: i32,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Clock ticks after boot at which it started.
    pub start_time: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        state: f.first()?.chars().next()?,
        session: f.get(3)?.parse().ok()?,
        cpu_ticks: num(14)? + num(15)?,
        start_time: num(22)?,
        rss_pages: num(24)?,
    })
}

pub fn stat(pid: i32) -> Option<Stat> {
    // A stat line is ~300 bytes; the command name is at most 64.
    let mut buf = [0u8; 1024];
    let mut path = [0u8; 32];
    let path = proc_path(pid, b"/stat", &mut path)?;
    let mut file = std::fs::File::open(path).ok()?;
    let n = std::io::Read::read(&mut file, &mut buf).ok()?;
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// `/proc/<pid><tail>` formatted into `buf`, without allocating: this is
/// read at every heartbeat of an agent the daemon started.
fn proc_path<'a>(pid: i32, tail: &[u8], buf: &'a mut [u8; 32]) -> Option<&'a std::path::Path> {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "/proc/{pid}").ok()?;
    cursor.write_all(tail).ok()?;
    let len = cursor.position() as usize;
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    Some(std::path::Path::new(text))
}

/// This boot's id: start times are only comparable within one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

/// Whether `instance` is alive and still the same process.
pub fn is_alive(instance: Instance) -> bool {
    stat(instance.pid).is_some_and(|s| s.start_time == instance.start_time && s.state != 'Z')
}

/// Whether the process's environment names this cell and agent (the proof
/// for a process the daemon did not start, e.g. one a previous daemon
/// started and a heartbeat names).
pub fn environ_proves(pid: i32, cell: &str, agent: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let has = |var: &str, value: &str| {
        env.split(|b| *b == 0).any(|kv| {
            kv.strip_prefix(var.as_bytes())
                .and_then(|r| r.strip_prefix(b"="))
                == Some(value.as_bytes())
        })
    };
    has("LAZARUS_CELL_UUID", cell) && has("LAZARUS_AGENT", agent)
}

/// Pids that must never be signalled, whatever any file says.
fn untouchable(pid: i32) -> bool {
    pid <= 1 || pid == std::process::id() as i32
}

/// Whether every uid of the process (real, effective, saved, filesystem)
/// is `uid`: a set-uid program an agent ran is not the agent's to stop.
pub fn runs_as(pid: i32, uid: Uid) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() == 4 && ids.iter().all(|id| id.parse() == Ok(uid.as_raw()))
        })
}

/// Sends `signal` to every process of the session `leader` started that
/// began no earlier than it (its descendants that stayed in its session)
/// and, if `uid` is given, runs as that user only; and to the leader itself
/// if `leader_held` (the caller holds the unreaped child or a pidfd, so its
/// pid cannot have been reused).
pub fn signal_session(leader: Instance, signal: Signal, leader_held: bool, uid: Option<Uid>) {
    if leader_held && !untouchable(leader.pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(leader.pid), signal);
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == leader.pid || untouchable(pid) {
            continue;
        }
        if let Some(s) = stat(pid)
            && s.session == leader.pid
            && s.start_time >= leader.start_time
            && uid.is_none_or(|uid| runs_as(pid, uid))
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
    }
}

/// The CPU time a process has used, in nanoseconds, read from its CPU-time
/// clock: one system call, no file to open — cheap enough for every
/// heartbeat of an agent the daemon started.
fn cpu_ns(clock: ClockId) -> Option<u64> {
    let t = clock.now().ok()?;
    u64::try_from(t.tv_sec())
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(t.tv_nsec()).ok()?)
}

/// What `agent_stale` says of a process, so an operator can tell hung
/// (S/D, CPU still) from busy (R, CPU moving) from stopped (T).
/// `cpu_at_beat`: CPU nanoseconds sampled at its last heartbeat.
pub fn diagnose(
    instance: Instance,
    clock: Option<ClockId>,
    cpu_at_beat: Option<u64>,
) -> Option<serde_json::Value> {
    let s = stat(instance.pid).filter(|s| s.start_time == instance.start_time)?;
    let ticks_ns = (s.cpu_ticks as f64 / clock_ticks() * 1e9) as u64;
    let precise = clock.and_then(cpu_ns);
    let cpu = precise.unwrap_or(ticks_ns);
    let mut v = serde_json::json!({
        "pid": instance.pid,
        "state": s.state.to_string(),
        "cpu_s": (cpu as f64 / 1e7).round() / 100.0,
        "rss_bytes": s.rss_pages * page_size(),
    });
    // Only the same clock on both ends compares (a tick count is coarser).
    if let (Some(before), Some(now)) = (cpu_at_beat, precise) {
        let used = now.saturating_sub(before);
        v["cpu_since_beat_s"] = serde_json::json!((used as f64 / 1e6).round() / 1000.0);
        v["cpu_advanced"] = serde_json::Value::Bool(cpu_advanced(s.state, used));
    }
    Some(v)
}

/// How often at most a heartbeat samples its agent's cgroup CPU.
const GROUP_CPU_SAMPLE: Duration = Duration::from_secs(1);

/// CPU a process must have used since its last heartbeat to count as
/// busy: a hung loop between two beats (a fork, a `sleep`) costs
/// microseconds; a process at work, at least a scheduler tick.
pub const CPU_ADVANCE_NS: u64 = 10_000_000;

/// Whether a process is working, for the operator's "hung or busy?": it
/// used [`CPU_ADVANCE_NS`] since its last beat and is not stopped (a
/// stopped process advances nothing, whatever it did before it stopped).
pub fn cpu_advanced(state: char, used_ns: u64) -> bool {
    !matches!(state, 'T' | 't') && used_ns >= CPU_ADVANCE_NS
}

/// A pidfd: a handle on one process that cannot be confused with a later
/// process of the same pid.
pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

pub(crate) fn pidfd_signal(fd: &OwnedFd, signal: Signal) -> std::io::Result<()> {
    let signal = match signal {
        Signal::SIGKILL => rustix::process::Signal::KILL,
        Signal::SIGSTOP => rustix::process::Signal::STOP,
        Signal::SIGCONT => rustix::process::Signal::CONT,
        _ => rustix::process::Signal::TERM,
    };
    Ok(rustix::process::pidfd_send_signal(fd, signal)?)
}

/// Opens a pidfd on `instance` and checks, after opening it, that it is
/// still the same process (so the pidfd cannot refer to a recycled pid).
fn open_verified(instance: Instance) -> Option<OwnedFd> {
    let fd = pidfd_open(instance.pid).ok()?;
    is_alive(instance).then_some(fd)
}

/// Waits until the process behind `fd` has exited (a pidfd becomes
/// readable then). Falls back to looking at `/proc` if it cannot be
/// registered.
async fn exited(fd: &OwnedFd, instance: Instance) {
    // SAFETY: `fd` outlives the registration, which is dropped on return.
    let registered =
        unsafe { AsyncFd::register_with_interest(fd.as_fd(), tokio::io::Interest::READABLE) };
    match registered {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while is_alive(instance) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Messages from process tasks to the daemon's loop.
#[derive(Debug)]
pub enum ProcMsg {
    /// A start asked for by [`Procs::spawn`] ran (off the loop): the
    /// instance, or why it could not be started.
    Started {
        cell: CellId,
        agent: AgentId,
        result: Result<Instance, String>,
    },
    /// An instance ended (by itself, or because it was told to stop).
    Exited {
        cell: CellId,
        agent: AgentId,
        pid: i32,
        exit: ExitInfo,
    },
    /// A process a heartbeat claimed has been dealt with (stopped if it
    /// was provably the agent's).
    ClaimDone { cell: CellId, agent: AgentId },
}

/// One running instance the daemon watches.
struct Entry {
    instance: Instance,
    /// Its cgroup, if it runs in one (then membership is the proof, and
    /// every stop reaches the whole group).
    group: Option<AgentGroup>,
    /// Tells the watching task to stop the instance, with this grace.
    stop: Option<oneshot::Sender<Duration>>,
    /// A stop was asked for: its exit answers a kill.
    stopping: bool,
    /// `podman` isolation: the container, controlled by name.
    container: Option<Container>,
    /// Its `limits`, as enforced (empty for an adopted instance: not
    /// known).
    limits: Vec<Enforced>,
    /// The isolation it runs with, as seen in `/proc` (`None`: unknown).
    isolation: Option<Isolation>,
    /// Its CPU-time clock, and the CPU nanoseconds read from it at its
    /// last heartbeat, for the stale diagnosis.
    cpu_clock: Option<ClockId>,
    cpu_at_beat: Option<u64>,
    /// Its cgroup's CPU (every process of it: work done by a child
    /// counts), sampled at a heartbeat at most once a second — a file
    /// read, kept off most beats of the hot path — and when.
    group_cpu_at_beat: Option<(u64, std::time::Instant)>,
}

/// An instance's unit, as far as telling whether it is frozen goes.
#[derive(Debug, Clone)]
pub enum Unit {
    /// `cgroup.events` says `frozen 1`.
    Group(AgentGroup),
    /// Its leader is stopped (SIGSTOP reaches the group at once).
    Process(i32),
    /// `podman wait --condition=paused` says so.
    Container(Container),
}

impl Unit {
    /// Waits (on the blocking pool) until the unit is frozen, or `until`.
    pub fn wait_frozen(&self, until: std::time::Instant) -> bool {
        match self {
            Unit::Group(group) => group.wait_frozen(until),
            Unit::Process(pid) => loop {
                let stopped = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let state = s.rsplit_once(')')?.1.trim_start().chars().next()?;
                        Some(matches!(state, 'T' | 't'))
                    });
                match stopped {
                    Some(true) => return true,
                    None => return true, // Gone: nothing of it writes.
                    Some(false) if std::time::Instant::now() >= until => return false,
                    // Signal delivery is a matter of microseconds.
                    Some(false) => std::thread::sleep(Duration::from_millis(1)),
                }
            },
            Unit::Container(container) => {
                container.wait_paused(until.saturating_duration_since(std::time::Instant::now()))
            }
        }
    }
}

/// What to start (owned: it is started off the daemon's loop).
pub struct Start {
    pub cell: CellId,
    pub agent: AgentId,
    pub spec: Arc<SpawnSpec>,
    pub attempt: u32,
    pub reason: Reason,
    pub substitute_for: Option<String>,
    /// `[cells] pass_env`: the daemon's variables agents also get.
    pub pass_env: Arc<[String]>,
    /// `[isolation]`: hidden paths, podman.
    pub isolation: Arc<crate::config::IsolationConfig>,
    /// The agent's own token for `POST /heartbeat/{cell}/{agent}`, if the
    /// daemon has its secret.
    pub heartbeat_token: Option<String>,
}

/// A start under way off the loop: the stop channel its task will heed
/// once the instance runs.
struct Starting {
    stop: oneshot::Sender<Duration>,
    group: Option<AgentGroup>,
    container: Option<Container>,
    limits: Vec<Enforced>,
    /// The level it is started with (the daemon builds it).
    isolation: Isolation,
}

/// Every instance the daemon watches, by cell and agent: the one seam
/// through which the shell controls agents' processes (start, stop with
/// grace, freeze, thaw, prove membership, adopt, CPU time), by cgroup
/// where the daemon has cgroups, by process group otherwise.
pub struct Procs {
    tx: mpsc::UnboundedSender<ProcMsg>,
    table: HashMap<CellId, HashMap<AgentId, Entry>>,
    starting: HashMap<(CellId, AgentId), Starting>,
    cgroups: Option<Arc<Cgroups>>,
    /// The thread that forks agents, made at the first start.
    spawner: Option<Spawner>,
    pub boot_id: String,
}

impl Procs {
    pub fn new(cgroups: Option<Cgroups>) -> (Procs, mpsc::UnboundedReceiver<ProcMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let procs = Procs {
            tx,
            table: HashMap::new(),
            starting: HashMap::new(),
            cgroups: cgroups.map(Arc::new),
            spawner: None,
            boot_id: boot_id(),
        };
        (procs, rx)
    }

    /// How the agent's running instance is controlled, if it has one.
    pub fn control(&self, cell: &str, agent: &str) -> Option<Control> {
        let entry = self.table.get(cell)?.get(agent)?;
        Some(if entry.container.is_some() {
            Control::Podman
        } else if entry.group.is_some() {
            Control::Cgroup
        } else {
            Control::ProcessGroup
        })
    }

    /// The isolation the running instance has, as observed when it was
    /// started or adopted — not what `cell.json` says now.
    pub fn isolation(&self, cell: &str, agent: &str) -> Option<Isolation> {
        self.table.get(cell)?.get(agent)?.isolation
    }

    /// The running instance's `limits`, as enforced.
    pub fn limits(&self, cell: &str, agent: &str) -> Option<&[Enforced]> {
        let entry = self.table.get(cell)?.get(agent)?;
        Some(&entry.limits)
    }

    /// What tells that the agent's running instance is frozen.
    pub fn unit(&self, cell: &str, agent: &str) -> Option<Unit> {
        let entry = self.table.get(cell)?.get(agent)?;
        Some(match (&entry.container, &entry.group) {
            (Some(container), _) => Unit::Container(container.clone()),
            (None, Some(group)) => Unit::Group(group.clone()),
            (None, None) => Unit::Process(entry.instance.pid),
        })
    }

    /// Whether an instance or a start of the agent is tracked.
    pub fn has(&self, cell: &str, agent: &str) -> bool {
        self.table.get(cell).is_some_and(|a| a.contains_key(agent))
    }

    fn entry(&mut self, cell: &str, agent: &str) -> Option<&mut Entry> {
        self.table.get_mut(cell)?.get_mut(agent)
    }

    /// An exit reported by a task: `Some(true)` if it answers a stop the
    /// daemon asked for, `Some(false)` if the instance ended by itself,
    /// `None` if it is not (or no longer) tracked.
    pub fn take_exit(&mut self, cell: &str, agent: &str, pid: i32) -> Option<bool> {
        let agents = self.table.get_mut(cell)?;
        if agents.get(agent)?.instance.pid != pid {
            return None;
        }
        let entry = agents.remove(agent)?;
        if agents.is_empty() {
            self.table.remove(cell);
        }
        Some(entry.stopping)
    }

    /// Asks the task watching the agent's instance to stop it (SIGTERM to
    /// its whole unit — cgroup or session —, thawed if frozen, SIGKILL
    /// after `grace`). `false` if the daemon watches no instance of it.
    pub fn stop(&mut self, cell: &str, agent: &str, grace: Duration) -> bool {
        let Some(entry) = self.entry(cell, agent) else {
            return false;
        };
        entry.stopping = true;
        if let Some(stop) = entry.stop.take() {
            // If the task already ended, its exit is on its way and, as
            // `stopping` is set, answers the kill.
            let _ = stop.send(grace);
        }
        true
    }

    /// Freezes (or thaws) every process of the agent's instance: its
    /// cgroup's freezer, or SIGSTOP/SIGCONT to its process group and the
    /// rest of its session. `false` if the daemon watches no instance.
    pub fn freeze(&mut self, cell: &str, agent: &str, frozen: bool, uid: Option<Uid>) -> bool {
        let Some(entry) = self.entry(cell, agent) else {
            return false;
        };
        if let Some(container) = entry.container.clone() {
            // podman pause/unpause, off the loop.
            let (cell, agent) = (cell.to_string(), agent.to_string());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = container.pause(frozen) {
                    tracing::warn!("cell {cell}: agent {agent}: {e}");
                }
            });
            return true;
        }
        match &entry.group {
            Some(group) => {
                if let Err(e) = group.freeze(frozen) {
                    tracing::warn!(
                        "cell {cell}: agent {agent}: cannot {} its cgroup {}: {e}",
                        if frozen { "freeze" } else { "thaw" },
                        group.path().display()
                    );
                }
            }
            None => {
                let signal = if frozen {
                    Signal::SIGSTOP
                } else {
                    Signal::SIGCONT
                };
                signal_unit(entry.instance, signal, uid);
            }
        }
        true
    }

    /// Stops a process a heartbeat names, if and only if it runs as the
    /// agent's user (`uid`, when that is not the daemon's) and its
    /// environment proves it is this agent's; answers with
    /// [`ProcMsg::ClaimDone`].
    pub fn stop_claimed(
        &self,
        cell: &CellId,
        agent: &AgentId,
        pid: i32,
        grace: Duration,
        uid: Option<Uid>,
    ) {
        let tx = self.tx.clone();
        let (cell, agent) = (cell.clone(), agent.clone());
        tokio::spawn(async move {
            stop_claimed(&cell, &agent, pid, grace, uid).await;
            let _ = tx.send(ProcMsg::ClaimDone { cell, agent });
        });
    }

    /// Samples the instance's CPU time at a heartbeat (the daemon's hot
    /// path: one `clock_gettime`).
    pub fn sample_cpu(&mut self, cell: &str, agent: &str) {
        if let Some(entry) = self.entry(cell, agent) {
            entry.cpu_at_beat = entry.cpu_clock.and_then(cpu_ns);
            if let Some(group) = &entry.group
                && entry
                    .group_cpu_at_beat
                    .is_none_or(|(_, at)| at.elapsed() >= GROUP_CPU_SAMPLE)
            {
                entry.group_cpu_at_beat = group
                    .cpu_usage_ns()
                    .map(|ns| (ns, std::time::Instant::now()));
            }
        }
    }

    /// What `/proc` says of the agent's instance, if the daemon has one.
    pub fn diagnose(&mut self, cell: &str, agent: &str) -> Option<serde_json::Value> {
        let entry = self.entry(cell, agent)?;
        let mut d = diagnose(entry.instance, entry.cpu_clock, entry.cpu_at_beat)?;
        if let Some(group) = &entry.group
            && let Some(map) = d.as_object_mut()
        {
            let frozen = group.events().1;
            map.insert("cgroup_frozen".into(), frozen.into());
            // The whole unit's CPU: an agent whose child does the work
            // is busy, not hung.
            if let (Some((before, _)), Some(now)) = (entry.group_cpu_at_beat, group.cpu_usage_ns())
            {
                let used = now.saturating_sub(before);
                let state = map
                    .get("state")
                    .and_then(|s| s.as_str())
                    .and_then(|s| s.chars().next())
                    .unwrap_or('?');
                map.insert(
                    "cgroup_cpu_s".into(),
                    ((now as f64 / 1e7).round() / 100.0).into(),
                );
                map.insert(
                    "cpu_since_beat_s".into(),
                    ((used as f64 / 1e6).round() / 1000.0).into(),
                );
                map.insert(
                    "cpu_advanced".into(),
                    (!frozen && cpu_advanced(state, used)).into(),
                );
            }
        }
        Some(d)
    }

    /// Watches an instance the daemon's records name (started by a
    /// previous daemon, or by this one before the cell was forgotten and
    /// found again). Not our child, unless this daemon still watches it:
    /// its exit is seen through a pidfd, its exit status is unknown. If it
    /// is in the agent's cgroup, that group is its unit; otherwise, when it
    /// is stopped, the rest of its session goes too — only processes of
    /// `uid`, when agents run as another user than the daemon.
    /// `false` if it was watched already.
    pub fn adopt(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        instance: Instance,
        uid: Option<Uid>,
        container: Option<Container>,
        isolation: Option<Isolation>,
    ) -> bool {
        if self
            .entry(cell, agent)
            .is_some_and(|e| e.instance == instance)
        {
            return false; // Still watched since before: nothing to add.
        }
        let group = self
            .cgroups
            .as_ref()
            .map(|c| c.agent(cell, agent))
            .filter(|g| g.contains(instance.pid));
        let (stop_tx, stop_rx) = oneshot::channel();
        self.insert(
            cell,
            agent,
            instance,
            group.clone(),
            container.clone(),
            stop_tx,
            None,
            Vec::new(),
            isolation,
        );
        let tx = self.tx.clone();
        let (cell, agent) = (cell.clone(), agent.clone());
        tokio::spawn(async move {
            watch_adopted(instance, stop_rx, uid, group, container, (&cell, &agent)).await;
            let _ = tx.send(ProcMsg::Exited {
                cell,
                agent,
                pid: instance.pid,
                exit: ExitInfo::default(),
            });
        });
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        instance: Instance,
        group: Option<AgentGroup>,
        container: Option<Container>,
        stop: oneshot::Sender<Duration>,
        cpu_at_beat: Option<u64>,
        limits: Vec<Enforced>,
        isolation: Option<Isolation>,
    ) {
        let cpu_clock = ClockId::pid_cpu_clock_id(Pid::from_raw(instance.pid)).ok();
        let isolation = isolation.map(|level| confirmed_isolation(level, instance.pid));
        self.table.entry(cell.clone()).or_default().insert(
            agent.clone(),
            Entry {
                instance,
                group,
                stop: Some(stop),
                stopping: false,
                container,
                limits,
                isolation,
                cpu_clock,
                cpu_at_beat,
                group_cpu_at_beat: None,
            },
        );
    }

    /// Starts an agent in its cell, off the daemon's loop (user lookups
    /// and fork/exec run on the blocking pool), and watches it. Answered
    /// by [`ProcMsg::Started`] — at once if it cannot even be tried — and
    /// later, if it ran, by [`ProcMsg::Exited`].
    pub fn spawn(&mut self, root: &Arc<Dir>, start: Start) {
        // Every instance holds a descriptor (its pidfd) for as long as it
        // runs. Past the daemon's limit, less a reserve, nothing more is
        // started: a cell that asks for thousands of agents must not leave
        // the daemon unable to open the files it watches for every other.
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        let watched: usize =
            self.table.values().map(HashMap::len).sum::<usize>() + self.starting.len();
        let key = (start.cell.clone(), start.agent.clone());
        if (watched as u64).saturating_add(FD_RESERVE) >= limit || self.starting.contains_key(&key)
        {
            let error = format!(
                "the daemon has {watched} agents running and its descriptor limit is {limit}: \
                 no more are started (raise LimitNOFILE / ulimit -n for the daemon)"
            );
            let _ = self.tx.send(ProcMsg::Started {
                cell: key.0,
                agent: key.1,
                result: Err(error),
            });
            return;
        }
        let group = match &self.cgroups {
            Some(cgroups) => match cgroups.create(&start.cell, &start.agent) {
                Ok(group) => Some(group),
                Err(e) => {
                    tracing::warn!(
                        "cell {}: agent {}: cannot create its cgroup ({e}); it runs in its \
                         process group only",
                        start.cell,
                        start.agent
                    );
                    None
                }
            },
            None => None,
        };
        let container = (start.spec.isolation == Isolation::Podman)
            .then(|| Container::of(&start.isolation, &start.cell, &start.agent));
        let means = match (&container, &group) {
            (Some(_), _) => Means::Podman,
            (None, group) => Means::Process(group.as_ref().map(AgentGroup::path)),
        };
        // The most the daemon may give: its own hard rlimits, and for a
        // container what the operator's podman_args set.
        let ceilings = match means {
            Means::Podman => super::podman::ceilings(&start.isolation),
            Means::Process(_) => Vec::new(),
        };
        let plan = super::limits::plan(&start.spec.limits, means, |name| {
            let own =
                resource(name).map(|r| nix::sys::resource::getrlimit(r).map_or(u64::MAX, |l| l.1));
            let operator = ceilings.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            match (own, operator) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        for limit in plan.iter().filter(|l| l.note.is_some()) {
            tracing::warn!(
                "cell {}: agent {}: limits.{}: {}",
                start.cell,
                start.agent,
                limit.name,
                limit.note.as_deref().unwrap_or_default()
            );
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        self.starting.insert(
            key,
            Starting {
                stop: stop_tx,
                group: group.clone(),
                container: container.clone(),
                limits: plan.clone(),
                isolation: start.spec.isolation,
            },
        );
        let tx = self.tx.clone();
        let root = root.clone();
        let spawner = self.spawner.get_or_insert_with(Spawner::new).clone();
        tokio::spawn(async move {
            let (cell, agent) = (start.cell.clone(), start.agent.clone());
            let placed = group.clone();
            let (done, result) = oneshot::channel();
            spawner.run(Box::new(move || {
                let t0 = std::time::Instant::now();
                let started = super::live_cell(&root, &start.cell)
                    .map_err(|e| e.to_string())
                    .and_then(|cell_dir| spawn(&cell_dir, &start, placed.as_ref(), &plan));
                tracing::debug!("spawn of {} took {:?}", start.agent, t0.elapsed());
                let _ = done.send(started);
            }));
            let started = result
                .await
                .unwrap_or_else(|_| Err("the start was cut short".to_string()));
            let (mut child, instance) = match started {
                Ok(started) => started,
                Err(error) => {
                    let _ = tx.send(ProcMsg::Started {
                        cell,
                        agent,
                        result: Err(error),
                    });
                    return;
                }
            };
            let _ = tx.send(ProcMsg::Started {
                cell: cell.clone(),
                agent: agent.clone(),
                result: Ok(instance),
            });
            let status = watch_child(&mut child, instance, stop_rx, group, container).await;
            let exit = ExitInfo {
                code: status.as_ref().ok().and_then(|s| s.code()),
                signal: status.as_ref().ok().and_then(|s| s.signal()),
            };
            let _ = tx.send(ProcMsg::Exited {
                cell,
                agent,
                pid: instance.pid,
                exit,
            });
        });
    }

    /// The agent (or, with `None`, every agent of the cell) is no longer
    /// supervised: its empty cgroup is removed. One that still has
    /// processes (a cell whose directory went away, its agents watched on)
    /// stays: the kernel refuses, and the daemon's exit prunes it later.
    pub fn release(&self, cell: &str, agent: Option<&str>) {
        let Some(cgroups) = &self.cgroups else {
            return;
        };
        match agent {
            Some(agent) if !self.has(cell, agent) => cgroups.agent(cell, agent).remove(),
            Some(_) => {}
            None => cgroups.release_cell(cell, |agent| self.has(cell, agent)),
        }
    }

    /// A start's answer reached the loop: the instance is watched from
    /// now on (a stop asked for meanwhile is passed on).
    pub fn started(&mut self, cell: &CellId, agent: &AgentId, result: &Result<Instance, String>) {
        let Some(starting) = self.starting.remove(&(cell.clone(), agent.clone())) else {
            return;
        };
        if let Ok(instance) = result {
            self.insert(
                cell,
                agent,
                *instance,
                starting.group,
                starting.container,
                starting.stop,
                Some(0),
                starting.limits,
                Some(starting.isolation),
            );
        }
    }
}

/// The isolation a running instance has: the level the daemon built for
/// it (its own word, from its start or its records), confirmed in
/// `/proc` — a `mount-namespace` instance still in the daemon's own mount
/// namespace (a record that lies, a namespace that failed) is
/// `directory`. A differing namespace alone proves nothing (any agent can
/// make one, in a user namespace), so it never raises the level.
pub fn confirmed_isolation(level: Isolation, pid: i32) -> Isolation {
    if level != Isolation::MountNamespace {
        return level;
    }
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
    match (theirs, ours) {
        (Some(theirs), Some(ours)) if theirs == ours => Isolation::Directory,
        _ => level,
    }
}

/// Stops an instance the daemon's records name (the CLI's part when no
/// daemon runs): its cgroup if it runs in the agent's, else SIGTERM to its
/// session (of `uid`), `grace`, SIGKILL — only if it is still the recorded
/// process (pid and start time).
pub async fn stop_recorded(
    cell: &str,
    agent: &str,
    instance: Instance,
    grace: Duration,
    uid: Option<Uid>,
    container: Option<Container>,
) {
    let Some(fd) = open_verified(instance) else {
        return;
    };
    if let Some(container) = &container
        && stop_container(container, grace, &fd, instance)
            .await
            .is_none()
    {
        if let Some(group) = AgentGroup::of_instance(instance.pid, cell, agent) {
            kill_group(&group).await;
            group.remove();
        }
        return;
    }
    match AgentGroup::of_instance(instance.pid, cell, agent) {
        Some(group) => {
            stop_group(&group, grace).await;
            group.remove();
        }
        None => stop_through(&fd, instance, grace, uid).await,
    }
}

/// Freezes or thaws an instance the daemon's records name (the CLI's part
/// when no daemon runs); `false` if it is not running.
pub fn freeze_recorded(
    cell: &str,
    agent: &str,
    instance: Instance,
    frozen: bool,
    uid: Option<Uid>,
    container: Option<Container>,
) -> std::io::Result<bool> {
    if open_verified(instance).is_none() {
        return Ok(false);
    }
    if let Some(container) = container {
        container.pause(frozen).map_err(std::io::Error::other)?;
        return Ok(true);
    }
    match AgentGroup::of_instance(instance.pid, cell, agent) {
        Some(group) => group.freeze(frozen)?,
        None => signal_unit(
            instance,
            if frozen {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            },
            uid,
        ),
    }
    Ok(true)
}

/// SIGSTOP/SIGCONT/SIGTERM/SIGKILL to an instance's whole unit without a
/// cgroup: its process group (the leader's pid, while it is ours or
/// alive) and the members of its session that left the group.
fn signal_unit(instance: Instance, signal: Signal, uid: Option<Uid>) {
    if untouchable(instance.pid) || !is_alive(instance) {
        return;
    }
    let _ = nix::sys::signal::killpg(Pid::from_raw(instance.pid), signal);
    signal_session(instance, signal, false, uid);
}

/// Stops every process of a cgroup: SIGTERM to each member, the group
/// thawed (a frozen process cannot act on it), `grace` for all of them to
/// end, then `cgroup.kill`. Waits (bounded) until the group is empty.
async fn stop_group(group: &AgentGroup, grace: Duration) {
    group.signal(Signal::SIGTERM);
    let _ = group.freeze(false);
    if !group.wait_empty(grace).await {
        kill_group(group).await;
    }
}

/// `cgroup.kill`, then waits (bounded) until the group is empty.
async fn kill_group(group: &AgentGroup) {
    if group.populated() {
        if let Err(e) = group.kill() {
            tracing::warn!("cannot kill cgroup {}: {e}", group.path().display());
        }
        let _ = group.freeze(false);
        if !group.wait_empty(KILL_WAIT).await {
            tracing::warn!(
                "cgroup {} still has processes {:?} after SIGKILL",
                group.path().display(),
                KILL_WAIT
            );
            return;
        }
        // A killed group is made afresh for the next instance: this
        // kernel SIGKILLs a process cloned into a group that has seen a
        // `cgroup.kill` (its kill sequence no longer matches).
        group.remove_leaf();
    }
}

/// The one thread that forks and execs agents, one after the other: off
/// the daemon's loop, so user lookups and forks never delay a deadline,
/// and not on the blocking pool, whose threads would multiply under a
/// burst of starts — every thread and every mapping makes each fork
/// slower (the kernel copies the page tables, under the lock every other
/// thread's page faults need).
#[derive(Clone)]
struct Spawner {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Spawner {
    fn new() -> Spawner {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        // tokio's `Command` registers its children with the runtime.
        let runtime = tokio::runtime::Handle::current();
        let _ = std::thread::Builder::new()
            .name("lazarus-spawn".into())
            .spawn(move || {
                let _entered = runtime.enter();
                for job in queue {
                    job();
                }
            });
        Spawner { jobs }
    }

    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        // If the thread could not be made, the job is dropped and its
        // answer channel with it: the start reports itself cut short.
        let _ = self.jobs.send(job);
    }
}

/// An agent process the daemon started: through tokio's `Command`, or
/// cloned straight into its cgroup ([`super::clone`]).
pub(crate) enum AgentChild {
    Tokio(tokio::process::Child),
    Cloned(i32),
}

impl AgentChild {
    /// Its exit status, once it has ended (reaping it).
    async fn wait(&mut self, instance: Instance) -> std::io::Result<std::process::ExitStatus> {
        match self {
            AgentChild::Tokio(child) => child.wait().await,
            AgentChild::Cloned(pid) => {
                match pidfd_open(*pid) {
                    Ok(fd) => exited(&fd, instance).await,
                    Err(_) => {
                        while !is_zombie(*pid) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                super::clone::reap(*pid)
            }
        }
    }
}

/// How long a SIGKILLed group may take to empty before we say so.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Waits for our child to exit, or stops it when told to, then makes sure
/// its unit is gone and reaps it.
///
/// The exit is seen through a pidfd, which becomes readable when the child
/// is a zombie — before it is reaped. An unreaped zombie keeps its pid, and
/// so its process-group id, from being reused: until `wait` below, `killpg`
/// reaches exactly the agent's group, with one system call and no `/proc`
/// scan. With a cgroup, the group is the unit: a stop signals every
/// member, and whatever outlived the agent (a grandchild that called
/// `setsid`, one that ignored SIGTERM) is killed with `cgroup.kill` before
/// the agent is started again.
async fn watch_child(
    child: &mut AgentChild,
    instance: Instance,
    stop: oneshot::Receiver<Duration>,
    group: Option<AgentGroup>,
    container: Option<Container>,
) -> std::io::Result<std::process::ExitStatus> {
    let Ok(fd) = pidfd_open(instance.pid) else {
        return match child {
            AgentChild::Tokio(child) => watch_child_without_pidfd(child, instance, stop).await,
            AgentChild::Cloned(_) => child.wait(instance).await,
        };
    };
    let pgroup = Pid::from_raw(instance.pid);
    let grace = until_stopped(&fd, instance, stop, container.as_ref()).await;
    match (grace, &group) {
        (Some(grace), Some(group)) => stop_group(group, grace).await,
        (Some(grace), None) => {
            let _ = nix::sys::signal::killpg(pgroup, Signal::SIGTERM);
            let _ = nix::sys::signal::killpg(pgroup, Signal::SIGCONT);
            if tokio::time::timeout(grace, exited(&fd, instance))
                .await
                .is_err()
            {
                let _ = nix::sys::signal::killpg(pgroup, Signal::SIGKILL);
                exited(&fd, instance).await;
            }
        }
        // The daemon forgot it: it still goes, with its unit, when it ends.
        (None, _) if !is_zombie(instance.pid) => exited(&fd, instance).await,
        (None, _) => {}
    }
    // The group itself stays for the agent's next instance: removing and
    // re-creating a cgroup takes the kernel's cgroup mutex and an RCU
    // grace period each time, serialised over every agent — it is removed
    // when the agent leaves or its cell goes ([`Procs::release`]).
    match &group {
        Some(group) => kill_group(group).await,
        None => {
            let _ = nix::sys::signal::killpg(pgroup, Signal::SIGKILL);
        }
    }
    if let Some(container) = &container {
        container.remove().await;
    }
    child.wait(instance).await
}

fn is_zombie(pid: i32) -> bool {
    stat(pid).is_none_or(|s| s.state == 'Z')
}

/// [`watch_child`] on kernels without pidfds (before 5.3): the session is
/// found by scanning `/proc`, as for adopted processes.
async fn watch_child_without_pidfd(
    child: &mut tokio::process::Child,
    instance: Instance,
    stop: oneshot::Receiver<Duration>,
) -> std::io::Result<std::process::ExitStatus> {
    let grace = tokio::select! {
        status = child.wait() => return status,
        grace = stop => match grace {
            Ok(grace) => grace,
            Err(_) => return child.wait().await,
        },
    };
    signal_session(instance, Signal::SIGTERM, true, None);
    signal_session(instance, Signal::SIGCONT, true, None);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_session(instance, Signal::SIGKILL, true, None);
            child.wait().await
        }
    };
    signal_session(instance, Signal::SIGKILL, false, None);
    status
}

/// [`watch_child`] for a process we did not start, through a pidfd.
async fn watch_adopted(
    instance: Instance,
    stop: oneshot::Receiver<Duration>,
    uid: Option<Uid>,
    group: Option<AgentGroup>,
    container: Option<Container>,
    (cell, agent): (&str, &str),
) {
    let Some(fd) = open_verified(instance) else {
        if let Some(group) = &group {
            kill_group(group).await;
        }
        if let Some(container) = &container {
            container.remove().await;
        }
        return;
    };
    // A container's instance is adopted by the container's identity too:
    // its podman process without its running container (stopped behind
    // the daemon's back) is no instance, and goes.
    if let Some(container) = &container {
        let probe = container.clone();
        let (c, a) = (cell.to_string(), agent.to_string());
        let running = tokio::task::spawn_blocking(move || probe.running(&c, &a))
            .await
            .ok()
            .flatten();
        if running == Some(false) {
            tracing::info!(
                "cell {cell}: agent {agent}: its container {} does not run; its podman \
                 process (pid {}) is stopped",
                container.name,
                instance.pid
            );
            match &group {
                Some(group) => kill_group(group).await,
                None => stop_through(&fd, instance, Duration::ZERO, uid).await,
            }
            container.remove().await;
            return;
        }
    }
    let grace = until_stopped(&fd, instance, stop, container.as_ref()).await;
    match (grace, &group) {
        (Some(grace), Some(group)) => stop_group(group, grace).await,
        (Some(grace), None) => stop_through(&fd, instance, grace, uid).await,
        (None, _) if is_alive(instance) => exited(&fd, instance).await,
        (None, _) => {}
    }
    if let Some(group) = &group {
        kill_group(group).await;
    }
    if let Some(container) = &container {
        container.remove().await;
    }
}

/// Waits until the instance ends by itself (`None`) or a stop is asked
/// for: then the grace left for stopping its unit. A container is stopped
/// by podman first, which leaves none if its podman process lingers.
async fn until_stopped(
    fd: &OwnedFd,
    instance: Instance,
    stop: oneshot::Receiver<Duration>,
    container: Option<&Container>,
) -> Option<Duration> {
    let grace = tokio::select! {
        () = exited(fd, instance) => None,
        grace = stop => grace.ok(),
    };
    match (container, grace) {
        (Some(container), Some(grace)) => stop_container(container, grace, fd, instance).await,
        _ => grace,
    }
}

/// A container is stopped by podman (SIGTERM, the grace, SIGKILL); its
/// podman process then ends. `None` if it did; otherwise no grace is left
/// for stopping that process as any other.
async fn stop_container(
    container: &Container,
    grace: Duration,
    fd: &OwnedFd,
    instance: Instance,
) -> Option<Duration> {
    container.stop(grace).await;
    match tokio::time::timeout(Duration::from_secs(5), exited(fd, instance)).await {
        Ok(()) => None,
        Err(_) => Some(Duration::ZERO),
    }
}

/// SIGTERM, `grace`, SIGKILL — the leader through its pidfd (race-free),
/// the rest of its session by start time (and by `uid`, if given).
async fn stop_through(fd: &OwnedFd, instance: Instance, grace: Duration, uid: Option<Uid>) {
    let _ = pidfd_signal(fd, Signal::SIGTERM);
    signal_session(instance, Signal::SIGTERM, false, uid);
    let _ = pidfd_signal(fd, Signal::SIGCONT);
    signal_session(instance, Signal::SIGCONT, false, uid);
    if tokio::time::timeout(grace, exited(fd, instance))
        .await
        .is_err()
    {
        let _ = pidfd_signal(fd, Signal::SIGKILL);
        signal_session(instance, Signal::SIGKILL, false, uid);
        exited(fd, instance).await;
    }
    signal_session(instance, Signal::SIGKILL, false, uid);
}

async fn stop_claimed(cell: &str, agent: &str, pid: i32, grace: Duration, uid: Option<Uid>) {
    if untouchable(pid) {
        return;
    }
    let Some(s) = stat(pid) else {
        return;
    };
    let instance = Instance {
        pid,
        start_time: s.start_time,
    };
    let Some(fd) = open_verified(instance) else {
        return;
    };
    // Checked after the pidfd is open: the proof is about this process.
    if let Some(uid) = uid
        && !runs_as(pid, uid)
    {
        tracing::warn!(
            "cell {cell}: agent {agent}'s heartbeat names pid {pid}, which does not run as \
             the agent's user (uid {uid}); not signalled"
        );
        return;
    }
    if !environ_proves(pid, cell, agent) {
        tracing::warn!(
            "cell {cell}: agent {agent}'s heartbeat names pid {pid}, which is not provably \
             the agent's (its environment does not carry this cell and agent); not signalled"
        );
        return;
    }
    if s.session == pid {
        stop_through(&fd, instance, grace, uid).await;
    } else {
        let _ = pidfd_signal(&fd, Signal::SIGTERM);
        if tokio::time::timeout(grace, exited(&fd, instance))
            .await
            .is_err()
        {
            let _ = pidfd_signal(&fd, Signal::SIGKILL);
            exited(&fd, instance).await;
        }
    }
}

/// The user an agent runs as: the owner of its cell directory when the
/// daemon is root, the daemon's own user otherwise.
struct Identity {
    /// Set before exec when the daemon is root and the owner is not:
    /// uid, gid and supplementary groups.
    switch: Option<(Uid, Gid, Vec<Gid>)>,
    /// The passwd entry of whoever the agent runs as, for `HOME`, `USER`,
    /// `LOGNAME` and `SHELL` (looked up before fork: NSS is not
    /// async-signal-safe).
    user: Option<nix::unistd::User>,
    uid: Uid,
}

/// The user the agents of a cell run as, if it is not the daemon's own
/// (the daemon is root and the cell's owner is not): the only uid a process
/// may have for the daemon to signal it on an agent's account.
pub fn agent_uid(cell_dir: &Dir) -> Option<Uid> {
    super::cell_owner(cell_dir)
        .ok()
        .flatten()
        .map(|(uid, _)| uid)
        .filter(|uid| !uid.is_root())
}

fn identity(cell_dir: &Dir) -> Result<Identity, String> {
    let owner = super::cell_owner(cell_dir).map_err(|e| format!("cell directory: {e}"))?;
    let switch_to = owner.filter(|(uid, _)| !uid.is_root());
    let uid = switch_to.map_or_else(nix::unistd::geteuid, |(uid, _)| uid);
    let user = nix::unistd::User::from_uid(uid).ok().flatten();
    let switch = match (switch_to, &user) {
        (None, _) => None,
        // The owner's own primary group and groups, never the directory's
        // group: `chown user dir` leaves that one root's.
        (Some((uid, _)), Some(u)) => {
            let groups = CString::new(u.name.clone())
                .ok()
                .and_then(|name| nix::unistd::getgrouplist(&name, u.gid).ok())
                .unwrap_or_else(|| vec![u.gid]);
            Some((uid, u.gid, groups))
        }
        // A uid the user database does not know: the directory's group,
        // unless that is root's.
        (Some((uid, gid)), None) if gid.as_raw() != 0 => Some((uid, gid, vec![gid])),
        (Some((uid, _)), None) => {
            return Err(format!(
                "the cell's owner (uid {uid}) has no entry in the user database and the \
                 cell directory's group is root's: refusing to run the agent with group root \
                 (give the directory the agent's group)"
            ));
        }
    };
    Ok(Identity { switch, user, uid })
}

/// The rlimit a `limits` key names.
fn resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "as" => R::RLIMIT_AS,
        "core" => R::RLIMIT_CORE,
        "cpu" => R::RLIMIT_CPU,
        "data" => R::RLIMIT_DATA,
        "fsize" => R::RLIMIT_FSIZE,
        "memlock" => R::RLIMIT_MEMLOCK,
        "nofile" => R::RLIMIT_NOFILE,
        "nproc" => R::RLIMIT_NPROC,
        "stack" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// The agent's environment (BRIEF 7), built from nothing: from the
/// daemon's own (`daemon`), only `PATH`, `LANG`, `LC_*` and `TZ`; then
/// `HOME`, `USER`, `LOGNAME` and `SHELL` of the user the agent runs as;
/// then the variables `[cells] pass_env` names (`NAME`, or `PREFIX*`);
/// then the agent's `env`; then the `LAZARUS_*` variables, which always
/// win. Later entries replace earlier ones of the same name.
fn environment(
    daemon: &[(String, String)],
    cell_dir: &std::path::Path,
    start: &Start,
    user: Option<&nix::unistd::User>,
    uid: Uid,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v));
    };
    let passes = |k: &str, names: &[String]| {
        names.iter().any(|n| match n.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => n == k,
        })
    };
    set("PATH", DEFAULT_PATH.to_string());
    for (k, v) in daemon {
        if PASSED.contains(&k.as_str()) || k.starts_with("LC_") {
            set(k, v.clone());
        }
    }
    let name = user.map_or_else(|| uid.to_string(), |u| u.name.clone());
    set(
        "HOME",
        user.map_or_else(|| "/".into(), |u| u.dir.display().to_string()),
    );
    set("USER", name.clone());
    set("LOGNAME", name);
    set(
        "SHELL",
        user.map(|u| u.shell.display().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".into()),
    );
    for (k, v) in daemon {
        if passes(k, &start.pass_env) {
            set(k, v.clone());
        }
    }
    for (k, v) in &start.spec.env {
        set(k, v.clone());
    }
    // The daemon's own word on who and where the agent is wins over any
    // `LAZARUS_*` the agent's `env` or `pass_env` brought.
    set("LAZARUS_SUBSTITUTE_FOR", String::new());
    set("LAZARUS_CELL_UUID", start.cell.to_string());
    set("LAZARUS_CELL_DIR", cell_dir.display().to_string());
    set("LAZARUS_AGENT", start.agent.to_string());
    set(
        "LAZARUS_HEARTBEAT_FILE",
        cell_dir
            .join(crate::cell::heartbeat_rel(&start.agent))
            .display()
            .to_string(),
    );
    set("LAZARUS_REVIVE_ATTEMPT", start.attempt.to_string());
    // Its own token or none: never one its `env` brought.
    set(
        "LAZARUS_HEARTBEAT_TOKEN",
        start.heartbeat_token.clone().unwrap_or_default(),
    );
    match start.substitute_for.as_deref() {
        Some(dead) => set("LAZARUS_SUBSTITUTE_FOR", dead.to_string()),
        None => env.retain(|(k, _)| k != "LAZARUS_SUBSTITUTE_FOR"),
    }
    env.retain(|(k, v)| !(k == "LAZARUS_HEARTBEAT_TOKEN" && v.is_empty()));
    env
}

fn spawn(
    cell_dir: &Dir,
    start: &Start,
    group: Option<&AgentGroup>,
    enforced: &[Enforced],
) -> Result<(AgentChild, Instance), String> {
    let mut sandbox = match start.spec.isolation {
        Isolation::MountNamespace => Some(super::sandbox::prepare(
            cell_dir,
            &start.isolation.hidden_paths,
        )?),
        Isolation::Directory | Isolation::Podman => None,
    };
    let podman = start.spec.isolation == Isolation::Podman;
    if podman {
        super::podman::available(&start.isolation)?;
        for rel in ["bus", ".lazarus/heartbeats"] {
            super::owned_dir(cell_dir, rel).map_err(|e| format!("{rel}: {e}"))?;
        }
    }
    let who = identity(cell_dir)?;
    if start.spec.isolation != Isolation::Directory && who.switch.is_none() && who.uid.is_root() {
        tracing::warn!(
            "cell {}: agent {} runs as root (the cell directory is root's): its {} isolation \
             holds for the filesystem, but root-only services on sockets still trust it; give \
             the cell a non-root owner (chown -R USER: the cell) for a boundary",
            start.cell,
            start.agent,
            start.spec.isolation.as_str()
        );
    }
    let workspace = super::owned_dir(cell_dir, "workspace").map_err(|e| e.to_string())?;
    let logs = super::owned_dir(cell_dir, "logs").map_err(|e| e.to_string())?;
    let log_name = format!("{}.log", start.agent);
    let log = logs
        .open_append(&log_name)
        .map_err(|e| format!("log file: {e}"))?;
    if let Some((uid, gid, _)) = &who.switch {
        let _ = nix::unistd::fchown(log.as_fd(), Some(*uid), Some(*gid));
    }
    let daemon_env: Vec<(String, String)> = std::env::vars().collect();
    let mut env = environment(
        &daemon_env,
        cell_dir.path(),
        start,
        who.user.as_ref(),
        who.uid,
    );
    let applied = |by: &str| -> Vec<(String, u64)> {
        enforced
            .iter()
            .filter(|l| l.by == by)
            .map(|l| (l.name.clone(), l.value))
            .collect()
    };
    let limits: Vec<(nix::sys::resource::Resource, u64)> = applied("rlimit")
        .into_iter()
        .filter_map(|(name, v)| Some((resource(&name)?, v)))
        .collect();
    let mut env_fd: Option<OwnedFd> = None;
    let mut seccomp_fd: Option<OwnedFd> = None;
    // A container's command is podman's: limits become its --ulimit, the
    // container's user the cell's owner; podman itself runs as the daemon.
    let (argv, limits, ids) = if podman {
        let limit_args = super::limits::podman_args(&applied("podman"));
        env_fd = Some(memfd_with(&super::podman::env_file(&env)?)?);
        let seccomp = super::podman::seccomp_profile()
            .map(|p| memfd_with(&p))
            .transpose()?;
        let seccomp_arg = seccomp.is_some().then_some("/dev/fd/4");
        seccomp_fd = seccomp;
        // podman itself (root) gets nothing of the agent's environment:
        // the daemon's own PATH, LANG, LC_* and TZ.
        env = daemon_env
            .iter()
            .filter(|(k, _)| PASSED.contains(&k.as_str()) || k.starts_with("LC_"))
            .cloned()
            .collect();
        let user = match &who.switch {
            Some((uid, gid, groups)) => (
                uid.as_raw(),
                gid.as_raw(),
                groups.iter().map(|g| g.as_raw()).collect(),
            ),
            None => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
                Vec::new(),
            ),
        };
        let run = super::podman::Run {
            cell: &start.cell,
            agent: &start.agent,
            cell_dir: cell_dir.path(),
            user,
            env_file: "/dev/fd/3",
            seccomp: seccomp_arg,
            limit_args: &limit_args,
            argv: &start.spec.argv,
        };
        (
            super::podman::command_line(&start.isolation, &run)?,
            Vec::new(),
            None,
        )
    } else {
        (start.spec.argv.clone(), limits, who.switch)
    };
    let argv = &argv;
    // The header is written by the child itself, right before exec, so it
    // precedes anything the agent prints; only the pid is filled in there.
    let header = format!(
        "--- {} lazarus-pit: {} {} ({}, attempt {}), pid ",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        if start.reason.is_start() {
            "starting"
        } else {
            "reviving"
        },
        start.agent,
        start.reason.as_str(),
        start.attempt,
    )
    .into_bytes();
    let ws_fd = workspace.as_fd().as_raw_fd();
    let start_error = |kind: std::io::ErrorKind, e: &dyn std::fmt::Display| match kind {
        std::io::ErrorKind::NotFound => format!("command not found: {}", argv[0]),
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied: {} (or the cell's workspace)", argv[0])
        }
        _ => format!("cannot start {}: {e}", argv[0]),
    };
    // Into the agent's cgroup. A group a previous instance left populated
    // (nothing tracks those processes any more) is emptied first.
    let mut procs_fd = None;
    if let Some(group) = group {
        if group.populated() {
            // Leftovers nothing tracks: killed, and the group made afresh
            // (see `kill_group`). Bounded: this thread starts every agent.
            let _ = group.kill();
            let until = std::time::Instant::now() + Duration::from_secs(2);
            while group.populated() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            group.remove_leaf();
            group
                .recreate()
                .map_err(|e| format!("cannot make cgroup {}: {e}", group.path().display()))?;
        }
        super::limits::apply_cgroup(group.path(), &applied("cgroup"))?;
        let dir = group
            .open_dir()
            .map_err(|e| format!("cannot enter cgroup {}: {e}", group.path().display()))?;
        let nul = |e: std::ffi::NulError| format!("a NUL byte in the command or environment: {e}");
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        let prepared = super::clone::Prepared {
            programs: super::clone::candidates(&argv[0], path)
                .into_iter()
                .map(CString::new)
                .collect::<Result<_, _>>()
                .map_err(nul)?,
            argv: argv
                .iter()
                .map(|a| CString::new(a.as_str()))
                .collect::<Result<_, _>>()
                .map_err(nul)?,
            envp: env
                .iter()
                .map(|(k, v)| CString::new(format!("{k}={v}")))
                .collect::<Result<_, _>>()
                .map_err(nul)?,
            stdin: std::fs::File::open("/dev/null")
                .map_err(|e| e.to_string())?
                .into(),
            stdout: log.try_clone().map_err(|e| e.to_string())?.into(),
            stderr: log.try_clone().map_err(|e| e.to_string())?.into(),
            workspace: ws_fd,
            limits: limits.clone(),
            ids: ids.clone(),
            header: header.clone(),
            sandbox: sandbox.take(),
            fds: [
                env_fd.as_ref().map(|fd| fd.as_raw_fd()),
                seccomp_fd.as_ref().map(|fd| fd.as_raw_fd()),
            ],
        };
        match super::clone::spawn_into(dir.as_fd(), &prepared) {
            super::clone::Outcome::Started(pid) => {
                let start_time = stat(pid).map(|s| s.start_time).unwrap_or_default();
                return Ok((AgentChild::Cloned(pid), Instance { pid, start_time }));
            }
            super::clone::Outcome::Failed(errno, Some(step)) => {
                return Err(super::sandbox::failure(step, errno));
            }
            super::clone::Outcome::Failed(errno, None) => {
                let e = std::io::Error::from(errno);
                return Err(start_error(e.kind(), &e));
            }
            super::clone::Outcome::Unsupported(errno) => {
                sandbox = prepared.sandbox;
                // The child moves itself into the group instead.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        "clone3 into a cgroup is not available ({errno}); agents move into \
                         their cgroup after fork, which is slower"
                    );
                });
                procs_fd =
                    Some(group.procs_for_child().map_err(|e| {
                        format!("cannot enter cgroup {}: {e}", group.path().display())
                    })?);
            }
        }
    }
    let procs_raw = procs_fd.as_ref().map(|fd: &OwnedFd| fd.as_raw_fd());
    let fds = [
        env_fd.as_ref().map(|fd| fd.as_raw_fd()),
        seccomp_fd.as_ref().map(|fd| fd.as_raw_fd()),
    ];
    let namespaced = sandbox.is_some();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls on data prepared before the
    // fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_raw {
                nix::unistd::write(std::os::fd::BorrowedFd::borrow_raw(fd), b"0")?;
            }
            nix::unistd::setsid()?;
            match &sandbox {
                Some(plan) => super::sandbox::enter(plan)
                    .map_err(|(_, errno)| std::io::Error::from_raw_os_error(errno))?,
                None => nix::unistd::fchdir(std::os::fd::BorrowedFd::borrow_raw(ws_fd))?,
            }
            default_signals();
            cloexec_from_3();
            pass_fds(&fds)?;
            restore_nofile_limit();
            for (resource, value) in &limits {
                nix::sys::resource::setrlimit(*resource, *value, *value)?;
            }
            if let Some((uid, gid, groups)) = &ids {
                become_user(*uid, *gid, groups)?;
            }
            write_header(&header);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        if namespaced {
            format!(
                "cannot start {} in its mount namespace (the namespace setup or the exec \
                 failed): {e}",
                argv[0]
            )
        } else {
            start_error(e.kind(), &e)
        }
    })?;
    let pid = child.id().ok_or("the agent exited before it was seen")? as i32;
    // Unreaped, so /proc/<pid> exists even if it already exited.
    let start_time = stat(pid).map(|s| s.start_time).unwrap_or_default();
    Ok((AgentChild::Tokio(child), Instance { pid, start_time }))
}

/// A sealed-off memory file holding `data`, for a child to read (the
/// podman env file).
fn memfd_with(data: &[u8]) -> Result<OwnedFd, String> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create on a C string; the descriptor is ours.
    let fd = unsafe { nix::libc::memfd_create(c"lazarus-env".as_ptr(), nix::libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(data).map_err(|e| format!("memfd: {e}"))?;
    Ok(file.into())
}

/// In a forked child: `fds` become descriptors 3, 4, … in order, open
/// across exec (moved above 9 first, so that none overwrites another).
/// Async-signal-safe.
pub(crate) fn pass_fds(fds: &[Option<std::os::fd::RawFd>; 2]) -> std::io::Result<()> {
    let mut high = [-1; 2];
    for (i, fd) in fds.iter().enumerate() {
        if let Some(fd) = fd {
            // SAFETY: plain system calls on integers.
            high[i] = unsafe { nix::libc::fcntl(*fd, nix::libc::F_DUPFD_CLOEXEC, 10) };
            if high[i] < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    for (i, fd) in high.iter().enumerate() {
        // SAFETY: as above; dup2 leaves the new descriptor open on exec.
        if *fd >= 0 && unsafe { nix::libc::dup2(*fd, 3 + i as i32) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Becomes `uid`/`gid` with `groups`, in a child before exec, by raw
/// system calls. Not glibc's `setuid`: in a multithreaded process it asks
/// every other thread to change too (credentials are per thread in
/// Linux) and waits for each; in a child made by a raw `clone3`
/// ([`super::clone`]) those threads are not there, and it waited forever
/// (seen under load: agents of a non-root cell never started). The child
/// has one thread, so one thread's change is the whole process's.
///
/// # Safety
/// Only in a single-threaded child before exec.
pub(crate) unsafe fn become_user(
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: &[nix::unistd::Gid],
) -> std::io::Result<()> {
    // `Gid` is a transparent `gid_t` (nix's own setgroups casts the same).
    let list = groups.as_ptr().cast::<nix::libc::gid_t>();
    // SAFETY: raw system calls on integers and a slice prepared before
    // the fork; nothing is allocated or locked.
    unsafe {
        if nix::libc::syscall(nix::libc::SYS_setgroups, groups.len(), list) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let g = gid.as_raw();
        if nix::libc::syscall(nix::libc::SYS_setresgid, g, g, g) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let u = uid.as_raw();
        if nix::libc::syscall(nix::libc::SYS_setresuid, u, u, u) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Every signal back to its default action, in a forked child: a signal
/// the daemon ignores (SIGPIPE, or one ignored by whoever started it, a
/// nohup's SIGHUP) stays ignored across exec otherwise. Async-signal-safe.
pub(crate) fn default_signals() {
    /// The kernel's `struct sigaction` (not libc's): the raw call also
    /// resets the signals libc keeps for itself (32 and 33), which a
    /// parent may have ignored.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: nix::libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in 1..=64 {
        if signal != nix::libc::SIGKILL && signal != nix::libc::SIGSTOP {
            // SAFETY: a system call on a struct on our stack.
            unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_rt_sigaction,
                    signal,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
    }
}

/// Marks every descriptor from 3 up close-on-exec, in a forked child: only
/// stdin, stdout and stderr cross into an agent or hook. Descriptors the
/// daemon inherited (socket activation, a parent shell's pipes) would
/// otherwise leak into every agent. Marking instead of closing keeps the
/// standard library's exec-error pipe working until exec. Async-signal-safe.
pub(crate) fn cloexec_from_3() {
    const CLOSE_RANGE_CLOEXEC: nix::libc::c_uint = 1 << 2;
    // SAFETY: plain system calls on integers; nothing is dereferenced.
    unsafe {
        if nix::libc::syscall(
            nix::libc::SYS_close_range,
            3 as nix::libc::c_uint,
            nix::libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        // Before Linux 5.11: one fcntl per descriptor the process may
        // hold — every number below its RLIMIT_NOFILE (a daemon under
        // systemd has a million), bounded so that a limit of "infinity"
        // does not loop for hours.
        let mut limit = nix::libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max = if nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.clamp(4096, 1 << 24) as i32
        } else {
            1 << 16
        };
        for fd in 3..max {
            nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC);
        }
    }
}

/// Writes `header` + the pid + newline to fd 1 (the log), without
/// allocating or locking (it runs between fork and exec).
pub(crate) fn write_header(header: &[u8]) {
    let mut buf = [0u8; 16];
    let mut n = std::process::id();
    let mut i = buf.len();
    buf[i - 1] = b'\n';
    i -= 1;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: fd 1 is open in the child (the log) for its whole life.
    let out = unsafe { std::os::fd::BorrowedFd::borrow_raw(1) };
    for mut part in [header, &buf[i..]] {
        while !part.is_empty() {
            match nix::unistd::write(out, part) {
                Ok(0) | Err(_) => return,
                Ok(n) => part = &part[n..],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = "4242 (evil) S 1 2 (x) R 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 1 0 987654 1000000 321 18446744073709551615";
        // The name "evil) S 1 2 (x" would shift every field if split on the
        // first ')'.
        let s = parse_stat(line).expect("parse");
        assert_eq!(s.state, 'R');
        assert_eq!(s.session, 4242);
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.start_time, 987654);
        assert_eq!(s.rss_pages, 321);
    }

    #[test]
    fn only_a_running_process_that_used_a_tick_has_advanced() {
        assert!(cpu_advanced('R', CPU_ADVANCE_NS));
        assert!(cpu_advanced('S', 50 * CPU_ADVANCE_NS), "busy between polls");
        assert!(!cpu_advanced('S', 40_000), "a loop's fork and sleep");
        assert!(!cpu_advanced('T', 50 * CPU_ADVANCE_NS), "stopped");
        assert!(!cpu_advanced('t', 50 * CPU_ADVANCE_NS), "traced");
    }

    #[test]
    fn our_own_process_is_alive_and_identified() {
        let me = stat(std::process::id() as i32).expect("own stat");
        let instance = Instance {
            pid: std::process::id() as i32,
            start_time: me.start_time,
        };
        assert!(is_alive(instance));
        assert!(!is_alive(Instance {
            start_time: me.start_time + 1,
            ..instance
        }));
        assert!(!boot_id().is_empty());
    }

    #[test]
    fn the_fast_stat_reads_what_the_kernel_says() {
        let pid = std::process::id() as i32;
        let mut buf = [0u8; 32];
        assert_eq!(
            proc_path(pid, b"/stat", &mut buf),
            Some(std::path::Path::new(&format!("/proc/{pid}/stat")))
        );
        let fast = stat(pid).expect("stat");
        let slow = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read"))
            .expect("parse");
        assert_eq!(
            (fast.session, fast.start_time),
            (slow.session, slow.start_time)
        );
        assert!(stat(i32::MAX).is_none());
    }

    #[test]
    fn pid_one_and_self_are_never_signalled() {
        assert!(untouchable(1));
        assert!(untouchable(0));
        assert!(untouchable(-5));
        assert!(untouchable(std::process::id() as i32));
    }
}
