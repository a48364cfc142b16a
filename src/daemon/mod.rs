//! The daemon: the I/O shell around the [`Supervisor`].
//!
//! It discovers cells with one walk of the root, then follows inotify
//! ([`watch`]): new and removed cell directories, `cell.json` writes and
//! replacements, heartbeat writes. It feeds what it reads to the core,
//! sleeps until the core's next deadline, and carries out the core's
//! actions: event lines, records and `state.json` writes ([`publish`]:
//! coalesced, off the loop), a provisioned cell's activation, stopping and
//! starting agents ([`process`]), handoff packets, notification hooks
//! ([`hooks`]). Agents' exits come back as messages on the same loop, as do
//! operators' requests (files in the inbox of its state directory, see
//! [`crate::records`], watched like heartbeats). A periodic rescan is only
//! a safety net; an inotify queue overflow triggers one at once; cells
//! whose watch cannot be added, or a root on a network filesystem, are
//! polled, and so is everything if the inotify reader stops.
//!
//! Nothing read from a cell is taken as proof: `state.json` is only
//! written, a pid in a heartbeat is a claim, and the daemon's memory across
//! restarts is its records in `state_dir` (see `spec/security.md`).

mod actions;
pub mod cgroup;
pub mod clock;
mod clone;
mod discovery;
pub mod hooks;
mod intake;
mod jobs;
pub mod limits;
pub mod lock;
pub mod podman;
pub mod process;
pub mod publish;
mod record;
mod requests;
pub mod sandbox;
mod setid_filter;
mod stats;
pub mod watch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::cell::heartbeat::{Heartbeat, HeartbeatError};
use crate::cell::lifecycle::{CellStatus, Trigger, transition};
use crate::cell::manifest::Manifest;
use crate::cell::{HEARTBEATS, MANIFEST, MANIFEST_LIMIT, heartbeat_rel};
use crate::config::{Config, WatchMode};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::logging::LogHandle;
use crate::records::{CellRecord, Records, Request, RequestAction};
use crate::store::{AGENT_FILE_LIMIT, Dir, EntryKind, ReadError};
use crate::supervisor::{Action, AgentId, CellId, Input, Instance, Reason, Supervisor};
use actions::process_control;
use clock::Clock;
use hooks::Hooks;
use intake::read_events;
use lock::{PidFile, RootLock};
use process::{ProcMsg, Procs};
use publish::Publisher;
use watch::{Batch, EventSource, FsEvent, RawEvent, WatchError, Watches};

/// How often dirty `state.json` files are considered for writing.
const FLUSH_TICK: Duration = Duration::from_millis(100);
/// An identical `invalid_input` for the same file is repeated at most
/// this often.
const INVALID_REPEAT_S: f64 = 300.0;
/// How long the daemon waits for a cell's lock: not at all. An agent can
/// hold it forever, or take it at every change it makes, and the daemon's
/// loop must never sleep on it (what needed it is retried at the next
/// rescan, or done without it).
const DAEMON_LOCK_PATIENCE: Duration = Duration::ZERO;
/// How often a missing root is looked for.
const ROOT_WAIT: Duration = Duration::from_secs(1);
/// How long an announced status move is waited for.
const EXPECTED_MOVE_S: f64 = 60.0;
/// Shortest time between two reads of one cell prompted by events.
const SCAN_SPACING: Duration = Duration::from_millis(50);

/// What the daemon was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// One discovery and reconcile pass, then exit.
    pub once: bool,
    /// The config file named on the command line, for reloads.
    pub config_path: Option<PathBuf>,
}

/// Runs the daemon until `SIGTERM`/`SIGINT` (or one pass with `--once`).
pub fn run(config: Config, root: &Path, opts: Options, log: LogHandle) -> Result<ExitCode> {
    process::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(config, root, opts, log));
    // Work still on the blocking pool (a freeze being confirmed for a
    // checkpoint, a podman command) must not hold the exit (BRIEF 7: within
    // 2 s); a checkpoint's worker process was killed with its task, its
    // agents thawed and its temp file removed.
    runtime.shutdown_timeout(SHUTDOWN_BLOCKING);
    result
}

/// How long the exit waits for work on the blocking pool.
const SHUTDOWN_BLOCKING: Duration = Duration::from_millis(1000);

/// What tells a running daemon to stop or reload: the process's signals
/// in production ([`signals`]), a channel a test holds otherwise — so the
/// whole loop runs in-process, on a paused clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// `SIGTERM`, `SIGINT`: flush and exit, leaving agents running.
    Shutdown,
    /// `SIGHUP`: reload the config.
    Reload,
}

type Commands = tokio::sync::mpsc::UnboundedReceiver<Command>;

/// The process's signals as [`Command`]s.
fn signals() -> Result<Commands> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                _ = term.recv() => Command::Shutdown,
                _ = int.recv() => Command::Shutdown,
                _ = hup.recv() => Command::Reload,
            };
            if tx.send(command).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// How a session over one root ended.
enum Ended {
    Shutdown,
    RootGone,
}

async fn serve(config: Config, root: &Path, opts: Options, log: LogHandle) -> Result<ExitCode> {
    let mut commands = signals()?;
    let _pid_file = match &config.daemon.pid_file {
        Some(path) if !opts.once => Some(PidFile::create(path)?),
        _ => None,
    };
    let mut config = config;
    let mut ready_sent = false;
    let mut http_started = false;
    loop {
        let Some(root_dir) = wait_for_root(root, opts.once, &mut commands).await? else {
            return Ok(ExitCode::SUCCESS);
        };
        let _lock = RootLock::acquire(&root_dir)?;
        let records = Records::open(&config.daemon, root)?;
        // The web face, once the root is ours (a second daemon refused by
        // the lock must not take the port first). A pass from cron has none.
        if let Some(listen) = config
            .http
            .listen
            .as_deref()
            .filter(|_| !opts.once && !http_started)
        {
            crate::http::start_in_daemon(&config, root, listen)?;
            http_started = true;
        }
        if let Err(e) = records.claim(std::process::id()) {
            tracing::warn!(
                "{}: cannot record the daemon's pid: {e}",
                records.path().display()
            );
        }
        let mut shell = Shell::new(config.clone(), root_dir, records, Clock::system())?;
        if opts.once {
            // Passes from cron: no daemon is missed between them.
            let _ = shell.records.remove_stats();
            let requests = shell.take_inbox();
            shell.discover();
            shell.apply_requests(requests);
            shell.expire_due();
            shell.settle().await;
            shell.settle_jobs().await;
            shell.finish().await;
            return Ok(if shell.core.all_healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        match shell
            .run(&opts, &mut commands, &log, &mut ready_sent)
            .await?
        {
            Ended::Shutdown => return Ok(ExitCode::SUCCESS),
            Ended::RootGone => config = shell.cfg,
        }
    }
}

/// Opens the root, waiting for it to exist (saying so once). `None` if a
/// shutdown signal came first.
async fn wait_for_root(
    path: &std::path::Path,
    once: bool,
    commands: &mut Commands,
) -> Result<Option<Arc<Dir>>> {
    let mut warned = false;
    loop {
        match Dir::open(path) {
            Ok(dir) => {
                if warned {
                    tracing::info!("cells root {} exists now", path.display());
                }
                return Ok(Some(Arc::new(dir)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !once => {
                if !warned {
                    tracing::warn!(
                        "cells root {} does not exist; waiting for it to be created",
                        path.display()
                    );
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(ROOT_WAIT) => {}
                    command = commands.recv() => {
                        if command != Some(Command::Reload) {
                            return Ok(None);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::RootMissing(path.to_path_buf()));
            }
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cells root {}: {e}", path.display()),
                )));
            }
        }
    }
}

/// The daemon's state over one root.
struct Shell {
    cfg: Config,
    root_path: PathBuf,
    root_dir: Arc<Dir>,
    core: Supervisor,
    clock: Clock,
    /// The daemon's own records and the operators' inbox.
    records: Arc<Records>,
    /// inotify watches; `None` when polling.
    watches: Option<Watches>,
    /// Cells that could not be watched (watch limit): polled instead.
    polled: HashSet<CellId>,
    watch_limit_warned: bool,
    /// The rate limit of `invalid_input`.
    invalid: record::InvalidLimit,
    /// Records and `state.json` files to write.
    publisher: Publisher,
    /// Reused buffers of the heartbeat read.
    read_buf: Vec<u8>,
    path_buf: String,
    /// The agents' processes the daemon started or adopted.
    procs: Procs,
    proc_rx: tokio::sync::mpsc::UnboundedReceiver<ProcMsg>,
    hooks: Hooks,
    /// Whether the records of cells no longer in the root were pruned.
    pruned: bool,
    /// Cells events asked to read again, and when each was last read.
    pending_scans: std::collections::BTreeSet<String>,
    last_scan: HashMap<CellId, f64>,
    /// When the next pending scan is due (monotonic), if one waits.
    scan_again_at: Option<f64>,
    /// Status moves announced (and recorded) by the CLI, until when.
    expected_moves: HashMap<CellId, Vec<(CellStatus, f64)>>,
    /// Leaves announced by the CLI (which records them), until when.
    expected_leaves: HashMap<(CellId, AgentId), f64>,
    /// Checkpoints done by their worker processes come back here.
    jobs_tx: jobs::JobTx,
    jobs_rx: jobs::JobRx,
    /// How many are under way.
    jobs_running: usize,
    /// What `lazarus-pit metrics` and `[metrics] textfile` report.
    stats: crate::metrics::DaemonStats,
    /// Where agents' heartbeat tokens come from (`LAZARUS_HEARTBEAT_TOKEN`).
    heartbeat_secret: Option<crate::http::auth::Secret>,
}

impl Shell {
    fn new(cfg: Config, root_dir: Arc<Dir>, records: Records, clock: Clock) -> Result<Shell> {
        let core = Supervisor::new(cfg.cells.clone(), cfg.events.heartbeats);
        let (procs, proc_rx) = Procs::new(process_control(&cfg, root_dir.path())?);
        let hooks = Hooks::new(&cfg);
        let records = Arc::new(records);
        let publisher = Publisher::new(root_dir.clone(), records.clone(), procs.boot_id.clone());
        let (jobs_tx, jobs_rx) = tokio::sync::mpsc::unbounded_channel();
        // Without it agents still run; they cannot beat over HTTP.
        let heartbeat_secret = match crate::http::auth::Secret::load_or_create(&cfg.daemon) {
            Ok(secret) => Some(secret),
            Err(e) => {
                tracing::warn!("no heartbeat tokens for agents: {e}");
                None
            }
        };
        Ok(Shell {
            heartbeat_secret,
            jobs_tx,
            jobs_rx,
            jobs_running: 0,
            stats: crate::metrics::DaemonStats::new(
                std::process::id(),
                crate::commands::status::unix_now(),
            ),
            procs,
            proc_rx,
            hooks,
            root_path: root_dir.path().to_path_buf(),
            cfg,
            root_dir,
            core,
            clock,
            records,
            watches: None,
            polled: HashSet::new(),
            watch_limit_warned: false,
            invalid: record::InvalidLimit::default(),
            publisher,
            read_buf: Vec::new(),
            path_buf: String::new(),
            pruned: false,
            pending_scans: std::collections::BTreeSet::new(),
            last_scan: HashMap::new(),
            scan_again_at: None,
            expected_moves: HashMap::new(),
            expected_leaves: HashMap::new(),
        })
    }

    /// The core's `now`, telling it first where the wall clock stands (a
    /// step of the system clock is noticed there, and said here).
    fn now(&mut self) -> f64 {
        let (now, offset) = self.clock.read();
        if let Some(step) = self.core.set_clock(offset, now) {
            tracing::warn!(
                "the system clock stepped by {step:+.3} s: deadlines run on the monotonic \
                 clock and are unaffected; every agent that was healthy gets a fresh threshold"
            );
        }
        now
    }

    /// The user a cell's agents run as, if not the daemon's (see
    /// [`process::agent_uid`]).
    fn agent_uid(&self, cell: &str) -> Option<nix::unistd::Uid> {
        self.root_dir
            .subdir(cell)
            .ok()
            .and_then(|dir| process::agent_uid(&dir))
    }

    /// The watching loop.
    async fn run(
        &mut self,
        opts: &Options,
        commands: &mut Commands,
        log: &LogHandle,
        ready_sent: &mut bool,
    ) -> Result<Ended> {
        let mut events = self.start_watching();
        // Notices of status moves first: a move the CLI made (and
        // recorded) while no daemon ran is not recorded again at discovery.
        let requests = self.take_inbox();
        self.discover();
        self.apply_requests(requests);
        self.flush();
        self.write_first_metrics();
        let s = self.core.summary();
        tracing::info!(
            "ready: {} cells, {} agents in {} ({})",
            s.cells,
            s.agents,
            self.root_path.display(),
            if events.is_some() {
                "inotify"
            } else {
                "polling"
            }
        );
        if !*ready_sent {
            *ready_sent = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
        self.report_status();
        let mut rescan = rescan_timer(self.cfg.cells.poll_interval);
        let mut flush = tokio::time::interval(FLUSH_TICK);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metrics = tokio::time::interval(crate::metrics::PERIOD);
        metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watchdog_every = sd_notify::watchdog_enabled().map(|usec| usec / 2);
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        let ended = loop {
            let deadline = self.clock.instant(self.core.next_deadline());
            // Biased, in this order: commands (signals); deadlines before file events,
            // so a daemon that falls behind on events still reports on time
            // (one firing handles everything due, so events are not starved
            // in turn).
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Reload) => {
                        let before = self.cfg.cells.poll_interval;
                        self.reload(opts, log);
                        if self.cfg.cells.poll_interval != before {
                            rescan = rescan_timer(self.cfg.cells.poll_interval);
                        }
                    }
                    // Told to, or nobody left to tell it anything.
                    Some(Command::Shutdown) | None => break Ended::Shutdown,
                },
                _ = tokio::time::sleep_until(deadline) => self.expire_due(),
                _ = tokio::time::sleep_until(self.clock.instant(self.scan_again_at)),
                    if self.scan_again_at.is_some() => self.scan_pending(),
                Some(msg) = self.proc_rx.recv() => self.on_proc(msg),
                Some(done) = self.jobs_rx.recv() => self.on_job(done),
                batch = read_events(&mut events) => {
                    if self.on_batch(batch, &mut events) {
                        break Ended::RootGone;
                    }
                }
                _ = rescan.tick() => {
                    if self.root_removed() {
                        break Ended::RootGone;
                    }
                    self.discover();
                    self.read_inbox();
                    self.report_status();
                }
                _ = flush.tick() => self.flush(),
                _ = metrics.tick() => self.write_metrics(),
                _ = watchdog.tick(), if watchdog_every.is_some() => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        };
        match ended {
            Ended::RootGone => tracing::error!(
                "cells root {} was removed; waiting for it to come back",
                self.root_path.display()
            ),
            Ended::Shutdown => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                self.hooks.kill_all();
                self.abandon_checkpoints();
            }
        }
        self.finish().await;
        self.metrics_down();
        Ok(ended)
    }

    /// Starts writing the records and `state.json` files that are due.
    fn flush(&mut self) {
        let now = self.now();
        let lazy_after = self.cfg.cells.poll_interval.as_secs_f64();
        self.publisher
            .flush(&self.core, &self.procs, now, lazy_after);
    }

    /// Shutdown and `--once`: every state change not written yet is
    /// written before the daemon goes.
    async fn finish(&mut self) {
        let now = self.now();
        self.publisher.finish(&self.core, &self.procs, now).await;
    }

    fn reload(&mut self, opts: &Options, log: &LogHandle) {
        match Config::load(opts.config_path.as_deref()) {
            Ok(loaded) => {
                for key in &loaded.unknown_keys {
                    tracing::warn!("config: {}", crate::config::unknown_key_warning(key));
                }
                if loaded.config.root(None) != self.cfg.root(None) {
                    tracing::warn!("config: cells.root changed; restart the daemon to use it");
                }
                log.set_level(&loaded.config.daemon);
                self.cfg = loaded.config;
                self.hooks.reload(&self.cfg);
                let now = self.now();
                let actions = self.core.handle(
                    Input::Config {
                        cells: Box::new(self.cfg.cells.clone()),
                        heartbeats: self.cfg.events.heartbeats,
                    },
                    now,
                );
                self.execute(actions);
                // Re-resolve every agent's settings against the new defaults.
                self.discover();
                tracing::info!("configuration reloaded");
            }
            Err(e) => tracing::error!("configuration not reloaded: {e}"),
        }
    }

    fn report_status(&self) {
        let s = self.core.summary();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
            "{} cells, {} agents, {} healthy, {} not",
            s.cells, s.agents, s.healthy, s.unhealthy
        ))]);
    }
}

fn rescan_timer(period: Duration) -> tokio::time::Interval {
    let period = period.max(Duration::from_millis(100));
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Who must own what the daemon creates in a cell: the owner of the cell
/// directory, when the daemon runs as root (otherwise what it creates is
/// the daemon's user's anyway, which is the cell's).
pub(crate) fn cell_owner(
    cell_dir: &Dir,
) -> std::io::Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let st = nix::sys::stat::fstat(cell_dir.as_fd()).map_err(std::io::Error::from)?;
    Ok(Some((
        nix::unistd::Uid::from_raw(st.st_uid),
        nix::unistd::Gid::from_raw(st.st_gid),
    )))
}

/// Opens the directory `rel` of a cell, creating what is missing of it,
/// each directory created handed to the cell's owner. An existing one is
/// left as it is. A directory is handed over only if it is still the one
/// just made (owned by the daemon's user): if an agent swapped another in
/// between, that one is not chowned.
pub(crate) fn owned_dir(cell_dir: &Dir, rel: &str) -> std::io::Result<Dir> {
    if let Ok(dir) = cell_dir.subdir(rel) {
        return Ok(dir);
    }
    let owner = cell_owner(cell_dir)?;
    let me = nix::unistd::geteuid();
    let mut dir = cell_dir.try_clone()?;
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let created = dir.make_dir(part)?;
        let next = dir.subdir(part)?;
        if created && let Some((uid, gid)) = owner {
            let st = nix::sys::stat::fstat(next.as_fd()).map_err(std::io::Error::from)?;
            if st.st_uid == me.as_raw() {
                nix::unistd::fchown(next.as_fd(), Some(uid), Some(gid))
                    .map_err(std::io::Error::from)?;
            }
        }
        dir = next;
    }
    Ok(dir)
}

/// Opens a cell that still has its manifest: the daemon never writes into
/// a directory that is being deleted, nor re-creates one.
fn live_cell(root: &Dir, cell: &str) -> std::io::Result<Dir> {
    let dir = root.subdir(cell)?;
    if !dir.exists_beneath(MANIFEST) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: no {MANIFEST} (cell removed?)", dir.path().display()),
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A shell over a fresh root with one cell (`agents`), whose wall
    /// clock the test sets.
    struct Fixture {
        _tmp: tempfile::TempDir,
        shell: Shell,
        cell: String,
        dir: PathBuf,
        wall: Arc<Mutex<f64>>,
    }

    fn fixture(agents: &[&str], cells_toml: &str) -> Fixture {
        fixture_with(agents, cells_toml, false)
    }

    /// `moving`: the wall clock moves with tokio's (paused) clock, as the
    /// system's does with the monotonic one — for driving the whole loop.
    /// Otherwise the test sets it.
    fn fixture_with(agents: &[&str], cells_toml: &str, moving: bool) -> Fixture {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        let cell = "00000000-0000-4000-8000-000000000001".to_string();
        let dir = root.join(&cell);
        std::fs::create_dir_all(dir.join(HEARTBEATS)).expect("mkdir");
        let agents: Vec<serde_json::Value> = agents
            .iter()
            .map(|a| serde_json::json!({ "name": a }))
            .collect();
        let manifest = serde_json::json!({"uuid": cell, "status": "active", "agents": agents});
        std::fs::write(dir.join(MANIFEST), manifest.to_string()).expect("manifest");
        let text = format!(
            "[daemon]\nstate_dir = {:?}\ncgroup = \"off\"\n[cells]\n{cells_toml}\n",
            tmp.path().join("state")
        );
        let (cfg, _) = Config::parse(&text, std::path::Path::new("t.toml")).expect("config");
        let records = Records::open(&cfg.daemon, &root).expect("records");
        let root_dir = Arc::new(Dir::open(&root).expect("root"));
        let wall = Arc::new(Mutex::new(1_000_000.0));
        let w = wall.clone();
        let clock = if moving {
            let start = tokio::time::Instant::now();
            let base = *wall.lock().expect("wall");
            Clock::with_wall(Box::new(move || {
                base + (tokio::time::Instant::now() - start).as_secs_f64()
            }))
        } else {
            Clock::with_wall(Box::new(move || *w.lock().expect("wall")))
        };
        Fixture {
            shell: Shell::new(cfg, root_dir, records, clock).expect("shell"),
            _tmp: tmp,
            cell,
            dir,
            wall,
        }
    }

    impl Fixture {
        /// An agent's heartbeat, stamped with the wall clock now.
        fn beat(&mut self, agent: &str) {
            let ts = *self.wall.lock().expect("wall");
            let body = serde_json::json!({ "timestamp": ts });
            std::fs::write(self.dir.join(heartbeat_rel(agent)), body.to_string()).expect("beat");
            self.shell.read_heartbeat(&self.cell.clone(), agent);
        }

        /// Monotonic and wall time move on together by `secs`.
        async fn pass(&mut self, secs: f64) {
            tokio::time::advance(Duration::from_secs_f64(secs)).await;
            *self.wall.lock().expect("wall") += secs;
            self.shell.expire_due();
        }

        fn events(&self, name: &str) -> Vec<serde_json::Value> {
            let text =
                std::fs::read_to_string(self.dir.join(crate::cell::EVENTS)).unwrap_or_default();
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|e| e["event"] == name)
                .collect()
        }
    }

    /// Item 16 of "Trust boundary", through the shell: the system clock
    /// steps an hour forward, then two back, while an agent keeps beating
    /// (its timestamps jump with the clock). No agent goes stale; one that
    /// stops beating is stale on time, in monotonic seconds.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_step_makes_no_agent_stale() {
        let mut f = fixture(
            &["a", "quiet"],
            "heartbeat_stale_threshold = 10\nresurrect_after = 600",
        );
        f.shell.discover();
        f.beat("a");
        f.beat("quiet");
        for step in [3600.0, -7200.0] {
            f.pass(4.0).await;
            f.beat("a");
            *f.wall.lock().expect("wall") += step;
            f.pass(4.0).await;
            f.beat("a");
        }
        // t = 16. One more beat of a at 20; nobody is stale.
        f.pass(4.0).await;
        f.beat("a");
        assert_eq!(f.events("agent_stale"), Vec::<serde_json::Value>::new());
        // The quiet one is stale 10 s after the fresh threshold the last
        // step gave it (at 16), the beating one 10 s after its last beat.
        f.pass(6.0).await;
        let stale = f.events("agent_stale");
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0]["agent"], "quiet");
        f.pass(3.0).await;
        assert_eq!(f.events("agent_stale").len(), 1, "a beat at 20");
        f.pass(2.0).await;
        let stale = f.events("agent_stale");
        assert_eq!(stale.len(), 2, "a stopped at 20: stale at 30");
        // Its last_seen is its last claim, in unix time of the clock now.
        let wall = *f.wall.lock().expect("wall");
        assert_eq!(stale[1]["last_seen"], serde_json::json!(wall - 11.0));
    }

    /// Item 15: when the inotify reader stops for good, the daemon polls
    /// (and says so) instead of rescanning on every turn of its loop.
    #[tokio::test]
    async fn a_stopped_inotify_reader_means_polling() {
        let mut f = fixture(&["a"], "heartbeat_stale_threshold = 60");
        let mut events = f.shell.start_watching();
        assert!(events.is_some() && f.shell.watches.is_some());
        f.shell.discover();
        assert!(!f.shell.on_batch(Batch::Ended, &mut events));
        assert!(events.is_none(), "no source left to return at once");
        assert!(f.shell.watches.is_none(), "every cell is polled");
        // Polled: a heartbeat is read at the next rescan.
        let ts = *f.wall.lock().expect("wall");
        std::fs::write(
            f.dir.join(heartbeat_rel("a")),
            serde_json::json!({ "timestamp": ts }).to_string(),
        )
        .expect("beat");
        f.shell.discover();
        let snap = f.shell.core.snapshot(&f.cell, 1, 0.0).expect("snap");
        assert_eq!(
            snap.agent_health["a"].state,
            crate::state::AgentState::Healthy
        );
    }

    /// The whole loop in-process, on a paused clock: a deadline fires on
    /// time to the millisecond (not at a poll), nothing fires before it,
    /// and a shutdown command flushes the state and ends the loop.
    #[tokio::test(start_paused = true)]
    async fn the_loop_meets_deadlines_on_a_paused_clock_and_shuts_down_on_command() {
        let mut f = fixture_with(
            &["quiet"],
            "heartbeat_stale_threshold = 10\npoll_interval = 3600",
            true,
        );
        let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
        let opts = Options {
            once: false,
            config_path: None,
        };
        let log = crate::logging::init_daemon_fallback();
        let mut ready = false;
        let events = f.dir.join(crate::cell::EVENTS);
        let state = f.dir.join(crate::cell::STATE);
        let stale = || {
            std::fs::read_to_string(&events)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("agent_stale"))
                .count()
        };
        let driver = async {
            tokio::time::sleep(Duration::from_millis(9_990)).await;
            assert_eq!(stale(), 0, "not before its threshold");
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(stale(), 1, "at its threshold, not at the next poll");
            tx.send(Command::Shutdown).expect("send");
        };
        let (ended, ()) = tokio::join!(f.shell.run(&opts, &mut commands, &log, &mut ready), driver);
        assert!(matches!(ended, Ok(Ended::Shutdown)));
        assert!(ready, "READY=1 after the first scan");
        let published = std::fs::read_to_string(&state).expect("state.json");
        assert!(
            published.contains("\"stale\""),
            "flushed on shutdown: {published}"
        );
    }
}
