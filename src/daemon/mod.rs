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

pub mod cgroup;
pub mod clock;
pub mod hooks;
pub mod lock;
pub mod process;
pub mod publish;
pub mod watch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::Context;
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
use clock::Clock;
use hooks::Hooks;
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
pub fn run(ctx: Context, opts: Options, log: LogHandle) -> Result<ExitCode> {
    process::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(ctx, opts, log))
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// How a session over one root ended.
enum Ended {
    Shutdown,
    RootGone,
}

async fn serve(ctx: Context, opts: Options, log: LogHandle) -> Result<ExitCode> {
    let mut signals = Signals::new()?;
    let _pid_file = match &ctx.config.daemon.pid_file {
        Some(path) if !opts.once => Some(PidFile::create(path)?),
        _ => None,
    };
    let mut config = ctx.config;
    let mut ready_sent = false;
    loop {
        let Some(root_dir) = wait_for_root(&ctx.root.path, opts.once, &mut signals).await? else {
            return Ok(ExitCode::SUCCESS);
        };
        let _lock = RootLock::acquire(&root_dir)?;
        let records = Records::open(&config.daemon, &ctx.root.path)?;
        if let Err(e) = records.claim(std::process::id()) {
            tracing::warn!(
                "{}: cannot record the daemon's pid: {e}",
                records.path().display()
            );
        }
        let mut shell = Shell::new(config.clone(), root_dir, records, Clock::system());
        if opts.once {
            let requests = shell.take_inbox();
            shell.discover();
            shell.apply_requests(requests);
            shell.expire_due();
            shell.settle().await;
            shell.finish().await;
            return Ok(if shell.core.all_healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        match shell
            .run(&opts, &mut signals, &log, &mut ready_sent)
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
    signals: &mut Signals,
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
                    _ = signals.term.recv() => return Ok(None),
                    _ = signals.int.recv() => return Ok(None),
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
    /// Per cell, per file: the last `invalid_input` reported and when
    /// (nested so the hot path can look up by `&str` without allocating).
    invalid: HashMap<String, HashMap<String, (String, f64)>>,
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
}

impl Shell {
    fn new(cfg: Config, root_dir: Arc<Dir>, records: Records, clock: Clock) -> Shell {
        let core = Supervisor::new(cfg.cells.clone(), cfg.events.heartbeats);
        let (procs, proc_rx) = Procs::new(process_control(&cfg, root_dir.path()));
        let hooks = Hooks::new(&cfg);
        let records = Arc::new(records);
        let publisher = Publisher::new(root_dir.clone(), records.clone(), procs.boot_id.clone());
        Shell {
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
            invalid: HashMap::new(),
            publisher,
            read_buf: Vec::new(),
            path_buf: String::new(),
            pruned: false,
            pending_scans: std::collections::BTreeSet::new(),
            last_scan: HashMap::new(),
            scan_again_at: None,
            expected_moves: HashMap::new(),
            expected_leaves: HashMap::new(),
        }
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
        signals: &mut Signals,
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
        let watchdog_every = sd_notify::watchdog_enabled().map(|usec| usec / 2);
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        let ended = loop {
            let deadline = self.clock.instant(self.core.next_deadline());
            // Biased, in this order: signals; deadlines before file events,
            // so a daemon that falls behind on events still reports on time
            // (one firing handles everything due, so events are not starved
            // in turn).
            tokio::select! {
                biased;
                _ = signals.term.recv() => break Ended::Shutdown,
                _ = signals.int.recv() => break Ended::Shutdown,
                _ = signals.hup.recv() => {
                    let before = self.cfg.cells.poll_interval;
                    self.reload(opts, log);
                    if self.cfg.cells.poll_interval != before {
                        rescan = rescan_timer(self.cfg.cells.poll_interval);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => self.expire_due(),
                _ = tokio::time::sleep_until(self.clock.instant(self.scan_again_at)),
                    if self.scan_again_at.is_some() => self.scan_pending(),
                Some(msg) = self.proc_rx.recv() => self.on_proc(msg),
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
            }
        }
        self.finish().await;
        Ok(ended)
    }

    /// What the inotify reader brought; `true` if the root is gone. When
    /// the reader has stopped for good, `events` is dropped: polling from
    /// then on, never a loop of reads that return at once.
    fn on_batch(&mut self, batch: Batch, events: &mut Option<EventSource>) -> bool {
        match batch {
            Batch::Events(batch) => {
                if self.on_raw_events(batch) {
                    return true;
                }
            }
            Batch::Failed(e) => {
                tracing::warn!("reading inotify events: {e}; rescanning");
                self.rediscover();
            }
            Batch::Ended => {
                *events = None;
                self.fall_back_to_polling();
            }
        }
        let now = self.now();
        self.core.rearm_early(now + watch::COALESCE.as_secs_f64());
        false
    }

    /// The inotify reader is gone (it cannot be restarted without losing
    /// events): every cell is polled from now on, said once.
    fn fall_back_to_polling(&mut self) {
        tracing::warn!(
            "inotify stopped delivering events; polling {} every {:?} from now on \
             (restart the daemon to use inotify again)",
            self.root_path.display(),
            self.cfg.cells.poll_interval
        );
        self.watches = None;
        self.rediscover();
    }

    /// Whether the root directory we hold has been unlinked (the safety net
    /// for the parent watch, and the only check when polling).
    fn root_removed(&self) -> bool {
        nix::sys::stat::fstat(self.root_dir.as_fd()).is_ok_and(|st| st.st_nlink == 0)
    }

    /// Sets up inotify unless polling is asked for or the root's
    /// filesystem does not deliver inotify events.
    fn start_watching(&mut self) -> Option<EventSource> {
        let mode = self.cfg.cells.watch;
        let network = network_filesystem(&self.root_path);
        if mode == WatchMode::Poll || (mode == WatchMode::Auto && network.is_some()) {
            tracing::warn!(
                "polling {} every {:?}{}: inotify is not used",
                self.root_path.display(),
                self.cfg.cells.poll_interval,
                network
                    .map(|fs| format!(" (a {fs} filesystem)"))
                    .unwrap_or_default()
            );
            return None;
        }
        match watch::watch_root(&self.root_path) {
            Ok((mut watches, source)) => {
                let inbox = self.records.inbox_path();
                if let Err(e) = watches.watch_inbox(&inbox) {
                    tracing::warn!(
                        "cannot watch {} ({e:?}); operators' requests are read every {:?}",
                        inbox.display(),
                        self.cfg.cells.poll_interval
                    );
                }
                self.watches = Some(watches);
                Some(source)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} with inotify ({e}); polling every {:?} instead",
                    self.root_path.display(),
                    self.cfg.cells.poll_interval
                );
                None
            }
        }
    }

    /// One walk of the root: every cell is (re)read and reconciled, and
    /// cells that vanished are dropped. Idempotent: a rescan loses and
    /// duplicates nothing. Heartbeats are re-read only where inotify may
    /// have missed them (see [`Shell::scan_cell`]).
    fn discover(&mut self) {
        self.walk(false);
    }

    /// [`Shell::discover`], re-reading every heartbeat too (events were lost).
    fn rediscover(&mut self) {
        self.walk(true);
    }

    fn walk(&mut self, all_heartbeats: bool) {
        let mut seen = HashSet::new();
        for entry in walkdir::WalkDir::new(&self.root_path)
            .min_depth(1)
            .max_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_map(|e| e.ok())
        {
            let Some(name) = entry.file_name().to_str() else {
                continue;
            };
            if name.starts_with('.') || !entry.file_type().is_dir() {
                continue;
            }
            seen.insert(name.to_string());
            self.scan(name, all_heartbeats);
        }
        for id in self.core.cell_ids() {
            if !seen.contains(&*id) {
                self.cell_gone(&id);
            }
        }
        // Forget the rate limits of directories that are gone.
        self.invalid.retain(|cell, _| seen.contains(cell));
        if !self.pruned {
            self.pruned = true;
            self.prune_records(&seen);
        }
    }

    /// Removes the records of cells that are no longer in the root and
    /// have no instance left alive (once, at start; later a cell that goes
    /// takes its record with it in [`Shell::execute`]).
    fn prune_records(&self, present: &HashSet<String>) {
        for cell in self.records.recorded_cells() {
            if present.contains(&cell) {
                continue;
            }
            let alive = self.records.read_cell(&cell).is_some_and(|mut record| {
                self.verify_instances(&mut record);
                record.agents.values().any(|a| a.instance.is_some())
            });
            if !alive && let Err(e) = self.records.remove_cell(&cell) {
                tracing::warn!("cell {cell}: cannot remove its old record: {e}");
            }
        }
    }

    /// Reads one cell and reconciles it: manifest, watches, heartbeats.
    fn scan_cell(&mut self, name: &str) {
        self.scan(name, true);
    }

    /// Reads one cell's manifest and reconciles it. Heartbeats are read if
    /// `heartbeats`, or if inotify cannot be trusted for this cell (new to
    /// the daemon, polled, or no inotify at all); for a watched cell the
    /// periodic rescan skips them — a missed write is caught by the re-read
    /// at the agent's deadline, and a queue overflow rescans everything.
    fn scan(&mut self, name: &str, heartbeats: bool) {
        let cell_dir = match self.root_dir.subdir(name) {
            Ok(dir) => dir,
            // Gone, or no longer a directory: let go of it. Anything else
            // (out of descriptors, say) is no reason to drop a cell and
            // its record: keep it as it is, try again at the next rescan.
            Err(e) => match self.root_dir.entry_kind(name) {
                Ok(Some(EntryKind::Dir)) | Err(_) => {
                    tracing::warn!("cell {name}: cannot open it ({e}); kept as it is");
                    return;
                }
                Ok(_) => return self.cell_gone(name),
            },
        };
        let manifest = match cell_dir.read_file(MANIFEST, MANIFEST_LIMIT) {
            Ok(bytes) => match Manifest::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    // Keep the last good manifest: a half-saved edit must
                    // not make agents vanish. Watch the directory so the
                    // fix is seen.
                    self.report_invalid(name, MANIFEST, format!("invalid JSON: {e}"));
                    self.watch_dir_only(name);
                    return;
                }
            },
            Err(ReadError::NotFound) => {
                // Not (or no longer) a cell; watch it so a cell.json
                // written later is seen.
                self.cell_gone(name);
                self.watch_dir_only(name);
                return;
            }
            Err(e) => {
                self.report_invalid(name, MANIFEST, e.to_string());
                self.watch_dir_only(name);
                return;
            }
        };
        if !manifest.uuid.is_empty() && !manifest.uuid.eq_ignore_ascii_case(name) {
            self.report_invalid(
                name,
                MANIFEST,
                format!(
                    "uuid {:?} disagrees with the directory name; the cell is not monitored",
                    manifest.uuid
                ),
            );
            self.cell_gone(name);
            self.watch_dir_only(name);
            return;
        }
        let problems = manifest.problems();
        if problems.is_empty() {
            self.clear_invalid(name, MANIFEST);
        } else {
            self.report_invalid(name, MANIFEST, problems.join("; "));
        }
        let id: CellId = name.into();
        let trusted = self.core.is_monitored(name)
            && !self.polled.contains(name)
            && self
                .watches
                .as_ref()
                .is_some_and(|w| w.heartbeats_watched(name));
        // The daemon's own record, never the cell's state.json: an agent
        // can write that one.
        let previous = if self.core.knows(name) {
            None
        } else {
            let recorded = self
                .publisher
                .final_record(name)
                .map(|r| *r)
                .or_else(|| self.records.read_cell(name));
            recorded.map(|mut record| {
                self.verify_instances(&mut record);
                Box::new(record)
            })
        };
        let now = self.now();
        let actions = self.core.handle(
            Input::Cell {
                id: id.clone(),
                manifest: Box::new(manifest),
                previous,
            },
            now,
        );
        self.execute(actions);
        if self.core.is_monitored(name) {
            self.ensure_watched(&id, &cell_dir);
            if heartbeats || !trusted {
                for agent in self.core.agent_names(name) {
                    self.read_heartbeat(name, &agent);
                }
            }
        } else if self.core.knows(name) {
            // Provisioned: watch for agents joining.
            self.watch_dir_only(name);
        }
    }

    /// The cell's directory is gone or it is no longer a monitored cell.
    fn cell_gone(&mut self, name: &str) {
        let now = self.now();
        let actions = self.core.handle(Input::CellGone { id: name.into() }, now);
        self.execute(actions);
        self.unwatch(name);
    }

    /// Watches the cell's directory and heartbeats directory (creating the
    /// latter if a tool made the cell without it).
    fn ensure_watched(&mut self, id: &CellId, cell_dir: &Dir) {
        let Some(watches) = self.watches.as_ref() else {
            return;
        };
        if watches.heartbeats_watched(id) || self.polled.contains(id) {
            return;
        }
        if let Err(e) = owned_dir(cell_dir, HEARTBEATS) {
            self.report_invalid(id, HEARTBEATS, e.to_string());
            return;
        }
        let Some(watches) = self.watches.as_mut() else {
            return;
        };
        match watches.watch_cell(id, true) {
            Ok(()) | Err(WatchError::Gone) => {}
            Err(WatchError::Exhausted) => {
                if !self.watch_limit_warned {
                    self.watch_limit_warned = true;
                    tracing::warn!(
                        "inotify watch limit reached at cell {id}: it and further cells are \
                         polled every {:?}; raise the limit with \
                         `sysctl fs.inotify.max_user_watches=524288` (persist it in \
                         /etc/sysctl.d/) and restart the daemon",
                        self.cfg.cells.poll_interval
                    );
                }
                self.polled.insert(id.clone());
            }
            Err(WatchError::Other(e)) => {
                tracing::warn!("cell {id}: cannot watch it ({e}); it is polled");
                self.polled.insert(id.clone());
            }
        }
    }

    /// Watches only the cell directory (a provisioned cell, or a directory
    /// that may become a cell).
    fn watch_dir_only(&mut self, name: &str) {
        if let Some(watches) = self.watches.as_mut() {
            watches.unwatch_heartbeats(name);
            let _ = watches.watch_cell(name, false);
        }
    }

    fn unwatch(&mut self, name: &str) {
        self.polled.remove(name);
        self.last_scan.remove(name);
        if let Some(watches) = self.watches.as_mut() {
            watches.unwatch_cell(name);
        }
    }

    /// Reads one heartbeat file and feeds a good one to the core. A torn
    /// write is skipped silently: the writer's close brings another event.
    fn read_heartbeat(&mut self, cell: &str, agent: &str) {
        use std::fmt::Write;
        let mut rel = std::mem::take(&mut self.path_buf);
        rel.clear();
        let _ = write!(rel, "{cell}/{HEARTBEATS}/{agent}.json");
        let mut buf = std::mem::take(&mut self.read_buf);
        if buf.is_empty() {
            // Zeroed once, then reused as is for every read.
            buf = vec![0; AGENT_FILE_LIMIT as usize + 1];
        }
        let result = self
            .root_dir
            .read_agent_file(&rel, &mut buf)
            .map_err(|e| match e {
                ReadError::NotFound => None,
                other => Some(format!("heartbeat file {other}")),
            })
            .and_then(|n| {
                Heartbeat::parse(&buf[..n]).map_err(|e| match e {
                    HeartbeatError::Partial => None,
                    HeartbeatError::Invalid(msg) => Some(format!("heartbeat {msg}")),
                })
            });
        self.read_buf = buf;
        self.path_buf = rel;
        match result {
            Ok(heartbeat) => {
                if self.invalid.contains_key(cell) {
                    self.clear_invalid(cell, &heartbeat_rel(agent));
                }
                let now = self.now();
                let actions = self.core.heartbeat(cell, agent, &heartbeat, now);
                if !actions.is_empty() {
                    self.procs.sample_cpu(cell, agent);
                    self.execute(actions);
                }
            }
            Err(None) => {}
            Err(Some(error)) => self.report_invalid(cell, &heartbeat_rel(agent), error),
        }
    }

    /// Handles a batch of raw inotify events; `true` if the root is gone.
    fn on_raw_events(&mut self, batch: Vec<RawEvent>) -> bool {
        let mut root_gone = false;
        // One look per written file per batch: every read happens after the
        // batch was gathered, so the first look already sees the latest
        // content. Keyed by the raw event, before any allocation.
        let mut written = HashSet::with_capacity(batch.len());
        for raw in &batch {
            if raw.is_file_write()
                && let Some(name) = raw.name.as_deref()
                && !written.insert((&raw.wd, name))
            {
                continue;
            }
            let Some(ev) = self.watches.as_mut().and_then(|w| w.interpret(raw)) else {
                continue;
            };
            if ev == FsEvent::Rescan {
                tracing::warn!("inotify queue overflowed: events were lost; rescanning every cell");
            }
            root_gone |= self.on_fs_event(ev);
        }
        if !root_gone {
            self.scan_pending();
        }
        root_gone
    }

    /// Reads the cells events asked for, each once; a cell read less than
    /// [`SCAN_SPACING`] ago waits for its turn (a timer), so no cell can
    /// keep the daemon busy re-reading it while others wait.
    fn scan_pending(&mut self) {
        let now = self.clock.now();
        let spacing = SCAN_SPACING.as_secs_f64();
        let mut later: Option<f64> = None;
        for name in std::mem::take(&mut self.pending_scans) {
            match self.last_scan.get(name.as_str()) {
                Some(at) if now - at < spacing => {
                    later = Some(later.map_or(at + spacing, |l| l.min(at + spacing)));
                    self.pending_scans.insert(name);
                }
                _ => {
                    self.last_scan.insert(name.as_str().into(), now);
                    // Heartbeats only where the watch cannot be trusted
                    // (a new cell, `.lazarus` re-created): a watched one's
                    // come as events, and a new agent's is read at its
                    // first deadline, before anything is decided.
                    self.scan(&name, false);
                }
            }
        }
        self.scan_again_at = later;
    }

    fn on_fs_event(&mut self, ev: FsEvent) -> bool {
        match ev {
            FsEvent::Heartbeat { cell, agent } => {
                if self.core.is_monitored(&cell) {
                    self.read_heartbeat(&cell, &agent);
                }
            }
            FsEvent::Inbox(name) => self.read_request(&name),
            FsEvent::RootEntry(name) | FsEvent::Manifest(name) | FsEvent::CellMeta(name) => {
                // Read once at the end of the batch, however many events
                // name it (an agent renaming `.lazarus` in a loop).
                self.pending_scans.insert(name);
            }
            FsEvent::CellMetaGone(_) => {
                // The kernel dropped that watch (bookkept in `interpret`).
                // Nothing is re-created now — the cell may be being deleted;
                // the next rescan repairs a live cell.
            }
            FsEvent::RootEntryGone(name) => self.cell_gone(&name),
            FsEvent::Rescan => self.rediscover(),
            FsEvent::RootGone => {
                for id in self.core.cell_ids() {
                    self.cell_gone(&id);
                }
                return true;
            }
        }
        false
    }

    /// Deadlines have come: re-read those agents' heartbeats first (an
    /// event inotify lost, or a polled cell, must not make a live agent
    /// stale), then let the core apply what is still due.
    fn expire_due(&mut self) {
        let now = self.now();
        let due = self.core.take_due(now);
        for (cell, agent) in &due {
            self.read_heartbeat(cell, agent);
        }
        let now = self.now();
        let actions = self.core.handle(Input::Expire { due }, now);
        self.execute(actions);
    }

    /// Carries out the core's actions. Answers the core owes itself at
    /// once (nothing to kill, a spawn's result) are fed back here, in order.
    fn execute(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        let mut rescan = Vec::new();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Emit { cell, event } => self.emit(&cell, &event),
                Action::StateChanged { cell, urgent } => self.publisher.mark(cell, urgent),
                Action::StatusObserved { cell, from, to } => {
                    // Recorded already by whoever announced it (the CLI, or
                    // this daemon activating a cell); else a hand edit.
                    if !self.announced(&cell, &to) {
                        let event = Event::new(EventKind::CellStatusChanged)
                            .with("from", from.as_str())
                            .with("to", to.as_str())
                            .with("observed", true);
                        self.emit(&cell, &event);
                    }
                }
                Action::RefusedMove { cell, from, to } => {
                    let error = format!(
                        "status {:?} after {:?} is not a legal move (a cell that is {from} \
                         stays so): the daemon keeps it {from} and does not supervise it",
                        to.as_str(),
                        from.as_str()
                    );
                    // Its own rate limit: the manifest's may be cleared by
                    // every read of a manifest that parses.
                    self.report_invalid_as(&cell, "cell.json status", MANIFEST, error);
                }
                Action::Activate { cell } => {
                    if self.activate(&cell) {
                        rescan.push(cell);
                    }
                }
                Action::Forget { cell, record } => {
                    // Its instances keep running and stay watched: if the
                    // cell is seen again, its record names them and they
                    // are adopted, not doubled. A cell whose directory is
                    // gone, with nothing left running, leaves no record.
                    let gone = matches!(
                        self.root_dir.entry_kind(&cell),
                        Ok(None | Some(EntryKind::File | EntryKind::Symlink | EntryKind::Other))
                    );
                    let running = record.agents.values().any(|a| a.instance.is_some());
                    tracing::info!(
                        "cell {cell}: no longer monitored{}",
                        if running {
                            " (its running agents are still watched)"
                        } else {
                            ""
                        }
                    );
                    let record = (!gone || running).then_some(record);
                    self.publisher.forget(cell.clone(), record);
                    if gone {
                        self.unwatch(&cell);
                    } else {
                        // Still a directory of the root: keep its watch, so
                        // a manifest that comes back is seen at once.
                        self.polled.remove(&*cell);
                        self.watch_dir_only(&cell);
                    }
                }
                Action::Kill {
                    cell,
                    agent,
                    instance,
                    claimed_pid,
                    grace,
                } => {
                    // Answered later by the watching task's exit, or by the
                    // claim check; at once if there is nothing to stop.
                    if instance.is_some() && self.procs.stop(&cell, &agent, grace) {
                        continue;
                    }
                    if let Some(pid) = claimed_pid.filter(|p| instance.is_none_or(|i| i.pid != *p))
                    {
                        let uid = self.agent_uid(&cell);
                        self.procs.stop_claimed(&cell, &agent, pid, grace, uid);
                        continue;
                    }
                    let exited = None;
                    let now = self.now();
                    queue.extend(self.core.handle(
                        Input::Killed {
                            cell,
                            agent,
                            exited,
                        },
                        now,
                    ));
                }
                Action::Spawn {
                    cell,
                    agent,
                    spec,
                    attempt,
                    reason,
                    substitute_for,
                } => {
                    // Answered by the start's message (off the loop).
                    self.procs.spawn(
                        &self.root_dir,
                        process::Start {
                            cell,
                            agent,
                            spec,
                            attempt,
                            reason,
                            substitute_for,
                            pass_env: self.cfg.cells.pass_env.clone().into(),
                        },
                    );
                }
                Action::Freeze {
                    cell,
                    agent,
                    instance: _,
                    frozen,
                } => {
                    let uid = self.agent_uid(&cell);
                    self.procs.freeze(&cell, &agent, frozen, uid);
                }
                Action::Left { cell, agent } => {
                    if !self.announced_leave(&cell, &agent) {
                        let event = Event::new(EventKind::AgentLeft)
                            .with("agent", &*agent)
                            .with("observed", true);
                        self.emit(&cell, &event);
                    }
                }
                Action::Adopt {
                    cell,
                    agent,
                    instance,
                } => {
                    let uid = self.agent_uid(&cell);
                    if self.procs.adopt(&cell, &agent, instance, uid) {
                        tracing::info!("cell {cell}: adopted agent {agent} (pid {})", instance.pid);
                    }
                }
                Action::Handoff {
                    cell,
                    agent,
                    substitute,
                    reason,
                    last_seen,
                    last_status,
                } => {
                    if let Err(e) = write_handoff(
                        &self.root_dir,
                        &cell,
                        &agent,
                        &substitute,
                        reason,
                        last_seen,
                        last_status,
                    ) {
                        tracing::warn!("cell {cell}: handoff of {agent} to {substitute}: {e}");
                    }
                }
            }
        }
        for cell in rescan {
            self.scan_cell(&cell);
        }
    }

    /// A message from a process task: an exit, or a stop that completed.
    fn on_proc(&mut self, msg: ProcMsg) {
        let input = match msg {
            ProcMsg::Started {
                cell,
                agent,
                result,
            } => {
                self.procs.started(&cell, &agent, &result);
                if let Err(e) = &result {
                    tracing::warn!("cell {cell}: cannot start agent {agent}: {e}");
                }
                Input::Spawned {
                    cell,
                    agent,
                    result,
                }
            }
            ProcMsg::Exited {
                cell,
                agent,
                pid,
                exit,
            } => match self.procs.take_exit(&cell, &agent, pid) {
                Some(true) => Input::Killed {
                    cell,
                    agent,
                    exited: Some((pid, exit)),
                },
                Some(false) => Input::Exited {
                    cell,
                    agent,
                    pid,
                    exit,
                },
                None => return,
            },
            ProcMsg::ClaimDone { cell, agent } => Input::Killed {
                cell,
                agent,
                exited: None,
            },
        };
        let now = self.now();
        let actions = self.core.handle(input, now);
        self.execute(actions);
    }

    /// `--once`: waits (bounded) until every kill and start under way has
    /// been answered, so the pass ends with agents running, not half-done.
    async fn settle(&mut self) {
        let limit = self.cfg.cells.kill_grace + Duration::from_secs(5);
        let until = tokio::time::Instant::now() + limit;
        while self.core.reviving() {
            match tokio::time::timeout_at(until, self.proc_rx.recv()).await {
                Ok(Some(msg)) => self.on_proc(msg),
                _ => break,
            }
        }
    }

    /// Drops, from a record, the instances that are no longer alive
    /// (another boot, or the pid's start time differs: it exited, maybe
    /// long ago, and the pid may be someone else's now). Their pid is kept
    /// as `lost_pid` so the core reports the death.
    fn verify_instances(&self, record: &mut CellRecord) {
        let same_boot = record.boot_id == self.procs.boot_id;
        for agent in record.agents.values_mut() {
            let Some(i) = agent.instance else {
                continue;
            };
            let instance = Instance {
                pid: i.pid,
                start_time: i.start_time,
            };
            if !(same_boot && process::is_alive(instance)) {
                agent.instance = None;
                agent.lost_pid = Some(i.pid);
            }
        }
    }

    /// Acts on every request waiting in the inbox (at each rescan, and
    /// when polling).
    fn read_inbox(&mut self) {
        let requests = self.take_inbox();
        self.apply_requests(requests);
    }

    /// Takes every request out of the inbox; notices of status moves are
    /// taken in at once, the rest returned (in order) to be applied.
    fn take_inbox(&mut self) -> Vec<Request> {
        let mut requests = Vec::new();
        for name in self.records.inbox() {
            if let Some(request) = self.take_request(&name) {
                match request.action {
                    RequestAction::Status => self.expect_move(&request),
                    RequestAction::Leave => self.expect_leave(&request),
                    _ => requests.push(request),
                }
            }
        }
        requests
    }

    fn apply_requests(&mut self, requests: Vec<Request>) {
        for request in requests {
            self.apply_request(request);
        }
    }

    /// One request from the inbox, removed from it.
    fn take_request(&mut self, name: &str) -> Option<Request> {
        match self.records.take(name)? {
            Ok(request) => Some(request),
            Err(e) => {
                tracing::warn!(
                    "request {}: {e}; ignored",
                    self.records.inbox_path().join(name).display()
                );
                None
            }
        }
    }

    /// The inbox file `name`, as it arrives (an inotify event).
    fn read_request(&mut self, name: &str) {
        if let Some(request) = self.take_request(name) {
            match request.action {
                RequestAction::Status => self.expect_move(&request),
                RequestAction::Leave => self.expect_leave(&request),
                _ => self.apply_request(request),
            }
        }
    }

    /// The CLI is moving a cell to `to` and records it itself.
    fn expect_move(&mut self, request: &Request) {
        let Some(to) = request.to.as_deref() else {
            return;
        };
        let until = self.clock.now() + EXPECTED_MOVE_S;
        self.expected_moves
            .entry(request.cell.as_str().into())
            .or_default()
            .push((CellStatus::parse(to), until));
    }

    /// The CLI removes an agent and records `agent_left` itself.
    fn expect_leave(&mut self, request: &Request) {
        let until = self.clock.now() + EXPECTED_MOVE_S;
        self.expected_leaves.insert(
            (request.cell.as_str().into(), request.agent.as_str().into()),
            until,
        );
    }

    /// Whether the leave of `agent` was announced; used up.
    fn announced_leave(&mut self, cell: &CellId, agent: &AgentId) -> bool {
        let now = self.clock.now();
        self.expected_leaves.retain(|_, until| *until > now);
        self.expected_leaves
            .remove(&(cell.clone(), agent.clone()))
            .is_some()
    }

    /// Whether a move of `cell` to `to` was announced (and so recorded by
    /// whoever made it); the announcement is used up.
    fn announced(&mut self, cell: &str, to: &CellStatus) -> bool {
        let now = self.clock.now();
        let Some(moves) = self.expected_moves.get_mut(cell) else {
            return false;
        };
        moves.retain(|(_, until)| *until > now);
        let found = moves.iter().position(|(s, _)| s == to);
        if let Some(i) = found {
            moves.remove(i);
        }
        if moves.is_empty() {
            self.expected_moves.remove(cell);
        }
        found.is_some()
    }

    /// One operator's request from the inbox of `state_dir` — the only
    /// place the daemon takes `revive`, `approve` and `deny` from: nothing
    /// an agent writes in its cell counts as an operator's decision.
    fn apply_request(&mut self, request: Request) {
        let (cell, agent): (CellId, AgentId) =
            (request.cell.as_str().into(), request.agent.as_str().into());
        if !self.core.knows(&cell) || !self.core.agent_names(&cell).contains(&agent) {
            tracing::warn!(
                "{} of agent {agent} in cell {cell} by {}: no such monitored agent; ignored",
                request.action.as_str(),
                request.by
            );
            return;
        }
        tracing::info!(
            "cell {cell}: {} of agent {agent} by {}",
            request.action.as_str(),
            request.by
        );
        let input = match request.action {
            RequestAction::Revive => Input::Revive { cell, agent },
            RequestAction::Approve | RequestAction::Deny => {
                let Some(request_id) = request
                    .request_id
                    .or_else(|| self.core.pending_request(&cell, &agent).map(str::to_string))
                else {
                    return;
                };
                Input::Decision {
                    cell,
                    agent,
                    request_id,
                    approved: request.action == RequestAction::Approve,
                }
            }
            RequestAction::Status | RequestAction::Leave => return,
        };
        let now = self.now();
        let actions = self.core.handle(input, now);
        self.execute(actions);
    }

    /// Moves a provisioned cell that has agents to `active`, under the
    /// cell lock and the transition table, as `cell join` would have.
    fn activate(&mut self, name: &str) -> bool {
        let root = crate::cell::Root::new(&self.root_path);
        let result = root.cell(name).and_then(|cell| {
            cell.update_within(DAEMON_LOCK_PATIENCE, |m| {
                let from = m.status();
                match transition(&from, Trigger::Join) {
                    Ok(to) if from == CellStatus::Provisioned && !m.agents.is_empty() => {
                        m.status = Some(to.clone());
                        let event = Event::new(EventKind::CellStatusChanged)
                            .with("from", from.as_str())
                            .with("to", to.as_str());
                        Ok((true, vec![event]))
                    }
                    _ => Ok((false, Vec::new())),
                }
            })
        });
        match result {
            Ok(changed) => {
                if changed {
                    let until = self.clock.now() + EXPECTED_MOVE_S;
                    self.expected_moves
                        .entry(name.into())
                        .or_default()
                        .push((CellStatus::Active, until));
                }
                changed
            }
            Err(e) => {
                tracing::warn!("cell {name}: could not activate it: {e}");
                false
            }
        }
    }

    /// Appends an event line to the cell's stream, logs it, and runs the
    /// notification hook if it wants it. `agent_stale` of an agent whose
    /// process the daemon knows says what `/proc` says of it.
    fn emit(&mut self, cell: &str, event: &Event) {
        let diagnosed;
        let mut event = event;
        if event.kind == EventKind::AgentStale
            && let Some(agent) = event.fields.get("agent").and_then(|a| a.as_str())
            && let Some(process) = self.procs.diagnose(cell, agent)
        {
            diagnosed = event.clone().with("process", process);
            event = &diagnosed;
        }
        tracing::info!(
            "{cell} {} {}",
            event.kind.as_str(),
            crate::text::escape(&serde_json::Value::Object(event.fields.clone()).to_string())
        );
        let line = event.to_line(cell, chrono::Utc::now());
        if let Err(e) = append_line(&self.root_dir, cell, &line) {
            tracing::warn!("cell {cell}: could not record {}: {e}", event.kind.as_str());
        }
        let kind = event.kind.as_str();
        if self.hooks.wants(kind) {
            let agent = event.fields.get("agent").and_then(|a| a.as_str());
            self.hooks
                .fire(kind, cell, &self.root_path.join(cell), agent, &line);
        }
    }

    /// Records `invalid_input` for a file of a cell, once per distinct
    /// error per [`INVALID_REPEAT_S`], and logs it.
    fn report_invalid(&mut self, cell: &str, rel: &str, error: String) {
        self.report_invalid_as(cell, rel, rel, error);
    }

    /// [`Shell::report_invalid`], rate-limited under `key`.
    fn report_invalid_as(&mut self, cell: &str, key: &str, rel: &str, error: String) {
        let now = self.clock.now();
        if let Some((last, at)) = self.invalid.get(cell).and_then(|files| files.get(key))
            && *last == error
            && now - at < INVALID_REPEAT_S
        {
            return;
        }
        tracing::warn!("cell {cell}: {rel}: {}", crate::text::escape(&error));
        self.invalid
            .entry(cell.to_string())
            .or_default()
            .insert(key.to_string(), (error.clone(), now));
        let event = Event::new(EventKind::InvalidInput)
            .with("path", rel)
            .with("error", error);
        let _ = append_event(&self.root_dir, cell, &event);
    }

    fn clear_invalid(&mut self, cell: &str, rel: &str) {
        if let Some(files) = self.invalid.get_mut(cell) {
            files.remove(rel);
            if files.is_empty() {
                self.invalid.remove(cell);
            }
        }
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
                    tracing::warn!("config: unknown key {key:?} ignored");
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

/// The safety-net rescan's timer: first tick one period from now.
/// The cgroups agents run in, if the daemon can create them (said once
/// in the log either way, see [`cgroup`]).
fn process_control(cfg: &Config, root: &std::path::Path) -> Option<cgroup::Cgroups> {
    use crate::config::CgroupSetting;
    let base = match &cfg.daemon.cgroup {
        CgroupSetting::Off => {
            tracing::info!(
                "[daemon] cgroup = \"off\": agents are controlled by process group \
                 (a process that leaves its group escapes freeze and stop)"
            );
            return None;
        }
        CgroupSetting::Auto => None,
        CgroupSetting::Base(path) => Some(path.as_path()),
    };
    match cgroup::Cgroups::open(base, &crate::records::root_key(root)) {
        Ok(cgroups) => {
            // Empty groups a previous daemon left behind.
            cgroups.prune(|_, _| false);
            tracing::info!(
                "agents run in a cgroup each, beneath {}",
                cgroups.path().display()
            );
            Some(cgroups)
        }
        Err(e) => {
            tracing::warn!(
                "cgroups are not available ({e}): agents are controlled by process group \
                 (a process that leaves its group escapes freeze and stop)"
            );
            None
        }
    }
}

fn rescan_timer(period: Duration) -> tokio::time::Interval {
    let period = period.max(Duration::from_millis(100));
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

async fn read_events(source: &mut Option<EventSource>) -> Batch {
    match source {
        Some(source) => source.read().await,
        None => std::future::pending().await,
    }
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

fn append_event(root: &Dir, cell: &str, event: &Event) -> std::io::Result<()> {
    append_line(root, cell, &event.to_line(cell, chrono::Utc::now()))
}

fn append_line(root: &Dir, cell: &str, line: &[u8]) -> std::io::Result<()> {
    live_cell(root, cell)?
        .create_dirs("logs")?
        .append_line("events.jsonl", line)
}

/// Policy `substitute`: a handoff packet in the substitute's
/// `bus/inbox/`, written atomically, readable by the substitute's user.
fn write_handoff(
    root: &Dir,
    cell: &str,
    agent: &str,
    substitute: &str,
    reason: Reason,
    last_seen: Option<f64>,
    last_status: Option<String>,
) -> std::io::Result<()> {
    let now = chrono::Utc::now();
    let packet = serde_json::json!({
        "type": "handoff",
        "cell": cell,
        "dead_agent": agent,
        "substitute": substitute,
        "reason": reason.as_str(),
        "last_heartbeat": last_seen,
        "last_status": last_status,
        "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let cell_dir = live_cell(root, cell)?;
    let inbox = owned_dir(&cell_dir, &format!("bus/inbox/{substitute}"))?;
    let name = format!("handoff-{agent}-{}.json", now.timestamp_millis());
    // Owner and mode are set on the temp file's descriptor before the
    // rename: nothing is reopened by name afterwards, so an agent swapping
    // the name for a hard link cannot get another file chowned.
    inbox.write_atomic_owned(
        &name,
        &crate::store::json_document(&packet),
        0o644,
        cell_owner(&cell_dir)?,
    )
}

/// The name of the root's filesystem type if it does not deliver inotify
/// events for changes made elsewhere (network and FUSE filesystems).
fn network_filesystem(root: &std::path::Path) -> Option<&'static str> {
    const KINDS: &[(i64, &str)] = &[
        (0x6969, "NFS"),
        (0x517B, "SMB"),
        (0xFF53_4D42, "CIFS"),
        (0xFE53_4D42, "SMB2"),
        (0x6573_5546, "FUSE"),
        (0x00C3_6400, "Ceph"),
        (0x0102_1997, "9p"),
        (0x5346_414F, "AFS"),
    ];
    let fs = nix::sys::statfs::statfs(root).ok()?;
    #[allow(clippy::unnecessary_cast)]
    let kind = fs.filesystem_type().0 as i64;
    KINDS
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| *name)
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
            "[daemon]\nstate_dir = {:?}\n[cells]\n{cells_toml}\n",
            tmp.path().join("state")
        );
        let (cfg, _) = Config::parse(&text, std::path::Path::new("t.toml")).expect("config");
        let records = Records::open(&cfg.daemon, &root).expect("records");
        let root_dir = Arc::new(Dir::open(&root).expect("root"));
        let wall = Arc::new(Mutex::new(1_000_000.0));
        let w = wall.clone();
        let clock = Clock::with_wall(Box::new(move || *w.lock().expect("wall")));
        Fixture {
            shell: Shell::new(cfg, root_dir, records, clock),
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
}
