//! The pure decision core: given facts (manifests, heartbeats) and an
//! instant, what is each agent's state and what must happen next.
//!
//! No I/O and no clock: the daemon's shell feeds [`Input`]s with `now`,
//! carries out the returned [`Action`]s, and sleeps until
//! [`Supervisor::next_deadline`]. `now` and every deadline are seconds of
//! a monotonic clock, so a step of the system clock moves no deadline; the
//! wall clock enters only through [`Supervisor::set_clock`] (its offset from
//! the monotonic one), to read heartbeats' timestamps and to write times
//! into events and records. Deadlines live in one min-heap with at
//! most one live entry per agent: a heartbeat only moves an agent's
//! deadline later, so it costs no heap operation at all; the entry, when it
//! fires early, is simply pushed again at the real deadline.

pub mod agent;
mod jobs;
pub mod timers;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::cell::heartbeat::FUTURE_SKEW_ALLOWANCE_S;
use crate::cell::heartbeat::Heartbeat;
use crate::cell::lifecycle::CellStatus;
use crate::cell::manifest::Manifest;
use crate::cell::manifest::RevivePolicy;
use crate::cell::name::validate_agent_name;
use crate::cell::settings::{AgentSettings, SpawnSpec, Timing};
use crate::config::{CellsConfig, HeartbeatEvents};
use crate::events::{Event, EventKind};
use crate::records::{AgentRecord, CellRecord, InstanceRecord, RequestRecord};
use crate::state::{AgentHealth, AgentState, CellState};
use agent::{AgentSup, Change, Health, round_ms, seed_of};
pub use agent::{ExitInfo, Instance, Reason};

pub type CellId = Arc<str>;
pub type AgentId = Arc<str>;

/// A fact for the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// A cell's manifest as read now (new, changed or unchanged), with the
    /// daemon's own record of it, for the first sighting (the shell has
    /// checked which recorded instances are still alive).
    Cell {
        id: CellId,
        manifest: Box<Manifest>,
        previous: Option<Box<CellRecord>>,
    },
    /// The cell's directory is gone, or it is no longer to be monitored.
    CellGone { id: CellId },
    /// A heartbeat file parsed successfully.
    Heartbeat {
        cell: CellId,
        agent: String,
        heartbeat: Heartbeat,
    },
    /// Deadlines of these agents (from [`Supervisor::take_due`]) have come.
    Expire { due: Vec<(CellId, AgentId)> },
    /// Time passed: apply every deadline up to now (tests and `--once`).
    Tick,
    /// The configuration was reloaded.
    Config {
        cells: Box<CellsConfig>,
        heartbeats: HeartbeatEvents,
    },
    /// The daemon's instance of an agent ended (not during a kill).
    Exited {
        cell: CellId,
        agent: AgentId,
        pid: i32,
        exit: ExitInfo,
    },
    /// Answer to [`Action::Kill`]: the old instance is gone; `exited` if
    /// it was the daemon's own instance.
    Killed {
        cell: CellId,
        agent: AgentId,
        exited: Option<(i32, ExitInfo)>,
    },
    /// Answer to [`Action::Spawn`].
    Spawned {
        cell: CellId,
        agent: AgentId,
        result: Result<Instance, String>,
    },
    /// `lazarus-pit revive`: revive now, whatever the policy.
    Revive { cell: CellId, agent: AgentId },
    /// `lazarus-pit approve|deny` of a request.
    Decision {
        cell: CellId,
        agent: AgentId,
        request_id: String,
        approved: bool,
    },
    /// `lazarus-pit checkpoint`: take one now (`archive`: before `cell
    /// archive`, with `checkpoint_on_archive`).
    Checkpoint {
        cell: CellId,
        request_id: Option<String>,
        archive: bool,
    },
    /// Answer to [`Action::Checkpoint`]: the checkpoint's file name, or
    /// why there is none.
    Checkpointed {
        cell: CellId,
        result: Result<String, String>,
    },
    /// `lazarus-pit restore` replaced the cell's `workspace/` and `bus/`:
    /// running instances work on files that are gone, and are started
    /// again (when their cell is thawed, if it is frozen).
    Restored { cell: CellId },
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Append this event to the cell's `events.jsonl`.
    Emit { cell: CellId, event: Event },
    /// The cell's `state.json` is out of date. `urgent`: a state changed
    /// (write soon), not just a `last_seen` (write within a second).
    StateChanged { cell: CellId, urgent: bool },
    /// The manifest's status differs from what the daemon last saw.
    StatusObserved {
        cell: CellId,
        from: CellStatus,
        to: CellStatus,
    },
    /// The manifest's status moved out of a final one (`from`, archived or
    /// destroyed): not followed, the cell stays as it was.
    RefusedMove {
        cell: CellId,
        from: CellStatus,
        to: CellStatus,
    },
    /// A provisioned cell has agents: move it to `active`.
    Activate { cell: CellId },
    /// The cell is no longer monitored; drop its watches and keep its
    /// final record (its instances may still run).
    Forget {
        cell: CellId,
        record: Box<CellRecord>,
        /// Its last `state.json`.
        state: Option<Box<CellState>>,
    },
    /// Stop the agent's old instance if it is still alive and provably
    /// the agent's: the daemon's `instance`, or the heartbeat's
    /// `claimed_pid` if its environment proves it. SIGTERM to its process
    /// group, SIGKILL after `grace`. Always answered by [`Input::Killed`].
    Kill {
        cell: CellId,
        agent: AgentId,
        instance: Option<Instance>,
        claimed_pid: Option<i32>,
        grace: Duration,
    },
    /// Start the agent. Always answered by [`Input::Spawned`].
    Spawn {
        cell: CellId,
        agent: AgentId,
        spec: Arc<SpawnSpec>,
        attempt: u32,
        reason: Reason,
        substitute_for: Option<String>,
    },
    /// Freeze (`frozen`) or thaw every process of the agent's instance:
    /// its cell was frozen or thawed, or an instance started or adopted in
    /// a frozen cell. Not answered.
    Freeze {
        cell: CellId,
        agent: AgentId,
        instance: Instance,
        frozen: bool,
    },
    /// An agent the daemon supervised left `cell.json` and its processes
    /// are gone: record `agent_left`, unless the CLI announced (and
    /// records) the leave.
    Left { cell: CellId, agent: AgentId },
    /// A previous daemon's instance is still alive: watch it for exit.
    Adopt {
        cell: CellId,
        agent: AgentId,
        instance: Instance,
    },
    /// Take a checkpoint of the cell, off the loop, once the instances of
    /// `agents` are frozen (asked for just before). Always answered by
    /// [`Input::Checkpointed`].
    Checkpoint {
        cell: CellId,
        reason: &'static str,
        request_id: Option<String>,
        agents: Vec<AgentId>,
    },
    /// A cell timer moves the cell: rewrite `cell.json`'s status from
    /// `from` to `to` (under its lock, if it is still `from`) and record
    /// `cell_status_changed` with `reason`.
    MoveCell {
        cell: CellId,
        from: CellStatus,
        to: CellStatus,
        reason: &'static str,
    },
    /// Policy `substitute`: put a handoff packet in the substitute's inbox.
    Handoff {
        cell: CellId,
        agent: AgentId,
        substitute: String,
        reason: Reason,
        last_seen: Option<f64>,
        last_status: Option<String>,
    },
}

/// One agent and its timer bookkeeping.
#[derive(Debug, Clone)]
struct Tracked {
    sup: AgentSup,
    /// Instant of this agent's live heap entry, if any.
    timer: Option<f64>,
    /// What `state.json` was last told of it: a change of any of these is
    /// urgent (BRIEF 6: within a second).
    published: Published,
}

impl Tracked {
    /// Puts the agent down (`Dead` or `Denied`) and stops its instance if
    /// one is left: down means no process works on the cell any more.
    fn put_down(
        &mut self,
        health: Health,
        cell: &CellId,
        agent: &AgentId,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        self.sup.enter(health, now);
        if let Some(instance) = self.sup.instance {
            out.push(stop_action(
                cell,
                agent,
                instance,
                self.sup.settings.timing.kill_grace,
            ));
        }
    }
}

/// The facts of an agent that must reach `state.json` promptly — its
/// state, pid and revive count — packed into one word (an agent's state
/// is paid for 100,000 times over): state in the top byte, the count
/// (saturated at 2^24 − 1; a revival changes the state anyway) below, the
/// pid in the low half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Published(u64);

impl Published {
    fn of(sup: &AgentSup) -> Published {
        let state = sup.state() as u64;
        let count = u64::from(sup.revive_count.min((1 << 24) - 1));
        let pid = sup.instance.map_or(0, |i| u64::from(i.pid as u32));
        Published(state << 56 | count << 32 | pid)
    }
}

/// A change of the wall clock's offset from the monotonic one beyond this
/// is a step (NTP, a resumed VM), not scheduling noise.
pub const CLOCK_STEP_S: f64 = 1.0;

#[derive(Debug, Clone)]
struct CellSup {
    status: CellStatus,
    agents: BTreeMap<AgentId, Tracked>,
    /// Agents whose processes are being stopped because they left
    /// `cell.json` or their cell was archived or destroyed; the cell is
    /// forgotten once its last one is answered.
    stopping: BTreeMap<AgentId, Stopping>,
    /// When its manifest was last read.
    seen_at: f64,
    /// Its own deadlines, what they count from, and their live heap entry.
    timers: timers::CellTimers,
    clock: timers::CellClock,
    timer: Option<f64>,
    /// The checkpoint being taken, and an operator's request that came
    /// while it ran (taken next).
    job: Option<jobs::Job>,
    queued: Vec<(String, &'static str)>,
    /// The last checkpoint taken (or failed), for the record.
    last_checkpoint: Option<crate::records::CheckpointRecord>,
    /// The last answers to operators' requests, newest last.
    answered: Vec<crate::records::CheckpointRecord>,
}

impl CellSup {
    fn new(status: CellStatus, now: f64) -> CellSup {
        CellSup {
            status,
            agents: BTreeMap::new(),
            stopping: BTreeMap::new(),
            seen_at: now,
            timers: timers::CellTimers::default(),
            clock: timers::CellClock::new(now),
            timer: None,
            job: None,
            queued: Vec::new(),
            last_checkpoint: None,
            answered: Vec::new(),
        }
    }
}

/// An agent on its way out: what the shell still owes the core for it.
#[derive(Debug, Clone)]
struct Stopping {
    /// The instance being stopped (`None` while a start is in flight: the
    /// instance it brings is stopped at once).
    instance: Option<Instance>,
    /// Which answer is awaited: [`Input::Killed`], or [`Input::Spawned`].
    awaiting_spawn: bool,
    /// It left `cell.json` (`agent_left` once gone), rather than going
    /// down with its cell.
    left: bool,
}

/// A heap entry: at `at`, look at `agent` of `cell`.
#[derive(Debug, Clone, PartialEq)]
struct Timer {
    at: f64,
    cell: CellId,
    agent: AgentId,
}

impl Eq for Timer {}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at
            .total_cmp(&other.at)
            .then_with(|| self.cell.cmp(&other.cell))
            .then_with(|| self.agent.cmp(&other.agent))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Counts for `STATUS=` and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub cells: usize,
    pub agents: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}

/// Every monitored cell and agent, and their deadlines.
#[derive(Debug)]
pub struct Supervisor {
    defaults: CellsConfig,
    /// Shared by every agent's settings (one copy, not 100,000).
    timing: Arc<Timing>,
    heartbeat_events: HeartbeatEvents,
    cells: HashMap<CellId, CellSup>,
    timers: BinaryHeap<Reverse<Timer>>,
    /// Cells' own deadlines ([`timers`]), one live entry per cell (the
    /// agent name is empty).
    cell_timers: BinaryHeap<Reverse<Timer>>,
    /// Wall-clock seconds minus monotonic seconds ([`Supervisor::set_clock`]).
    wall_offset: f64,
    clock_set: bool,
}

impl Supervisor {
    pub fn new(defaults: CellsConfig, heartbeat_events: HeartbeatEvents) -> Supervisor {
        Supervisor {
            timing: Arc::new(Timing::of(&defaults)),
            defaults,
            heartbeat_events,
            cells: HashMap::new(),
            timers: BinaryHeap::new(),
            cell_timers: BinaryHeap::new(),
            wall_offset: 0.0,
            clock_set: false,
        }
    }

    /// Tells the core how far the wall clock is ahead of the monotonic
    /// clock `now` runs on. The shell calls it before every input. A change
    /// beyond [`CLOCK_STEP_S`] is a step of the system clock: it moves no
    /// deadline (they are monotonic), and every agent that was fine gets a
    /// fresh threshold instead of being judged by timestamps from either
    /// side of the step. Returns the step, if there was one.
    pub fn set_clock(&mut self, wall_offset: f64, now: f64) -> Option<f64> {
        let step = wall_offset - self.wall_offset;
        let first = !self.clock_set;
        self.wall_offset = wall_offset;
        self.clock_set = true;
        if first || step.abs() <= CLOCK_STEP_S {
            return None;
        }
        let mut keys = Vec::new();
        for (cell, c) in &mut self.cells {
            for (agent, t) in &mut c.agents {
                t.sup.clock_stepped(now);
                keys.push((cell.clone(), agent.clone()));
            }
        }
        for (cell, agent) in keys {
            self.schedule(&cell, &agent);
        }
        Some(step)
    }

    /// Unix seconds of the monotonic instant `mono`.
    fn wall(&self, mono: f64) -> f64 {
        mono + self.wall_offset
    }

    /// Feeds one fact at instant `now`.
    pub fn handle(&mut self, input: Input, now: f64) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Cell {
                id,
                manifest,
                previous,
            } => self.observe_cell(id, &manifest, previous.as_deref(), now, &mut out),
            Input::CellGone { id } => self.forget(id, &mut out),
            Input::Heartbeat {
                cell,
                agent,
                heartbeat,
            } => return self.heartbeat(&cell, &agent, &heartbeat, now),
            Input::Expire { due } => {
                for (cell, agent) in due {
                    self.expire(&cell, &agent, now, &mut out);
                }
                self.expire_cells(now, &mut out);
            }
            Input::Tick => {
                let due = self.take_due(now);
                return self.handle(Input::Expire { due }, now);
            }
            Input::Config { cells, heartbeats } => {
                self.timing = Arc::new(Timing::of(&cells));
                self.defaults = *cells;
                self.heartbeat_events = heartbeats;
                // Thresholds in cell.json still win; re-resolve on the next
                // sighting of each manifest (the shell rescans on reload).
            }
            Input::Exited {
                cell,
                agent,
                pid,
                exit,
            } => {
                if self.stopping_instance(&cell, &agent) == Some(pid) {
                    self.answer_stopping(&cell, &agent, Ok(None), &mut out);
                } else if let Some(t) = self.tracked(&cell, &agent) {
                    let changes = t.sup.exited(pid, exit, now);
                    self.settle(&cell, &agent, changes, now, &mut out);
                }
            }
            Input::Killed {
                cell,
                agent,
                exited,
            } => self.killed(&cell, &agent, exited, now, &mut out),
            Input::Spawned {
                cell,
                agent,
                result,
            } => self.spawned(&cell, &agent, result, now, &mut out),
            Input::Revive { cell, agent } => self.revive(&cell, &agent, now, &mut out),
            Input::Decision {
                cell,
                agent,
                request_id,
                approved,
            } => self.decide(&cell, &agent, request_id, approved, now, &mut out),
            Input::Checkpoint {
                cell,
                request_id,
                archive,
            } => {
                let reason = if archive { "archive" } else { "manual" };
                self.request_checkpoint(&cell, request_id, reason, now, &mut out);
            }
            Input::Checkpointed { cell, result } => {
                self.checkpointed(&cell, result, now, &mut out);
            }
            Input::Restored { cell } => self.restored(&cell, now, &mut out),
        }
        out
    }

    /// The earliest instant anything can happen without a new input.
    pub fn next_deadline(&self) -> Option<f64> {
        let agents = self.timers.peek().map(|Reverse(t)| t.at);
        let cells = self.cell_timers.peek().map(|Reverse(t)| t.at);
        match (agents, cells) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    /// Removes and returns the agents whose deadline has really come by
    /// `now`, so the shell can re-read their heartbeat files (a missed
    /// inotify event must never make a live agent stale) before
    /// [`Input::Expire`]. An entry that fired early because heartbeats
    /// moved its agent's deadline later is simply re-armed.
    pub fn take_due(&mut self, now: f64) -> Vec<(CellId, AgentId)> {
        let mut due = Vec::new();
        for (timer, deadline) in self.pop_live(now) {
            if deadline.is_some_and(|d| d <= now) {
                due.push((timer.cell, timer.agent));
            } else {
                self.schedule(&timer.cell, &timer.agent);
            }
        }
        due
    }

    /// Re-arms now, instead of when they fire, the heap entries due by
    /// `until` whose agent's deadline has moved later (heartbeats came).
    /// The shell calls this while it is awake anyway, so the timer wakes
    /// it only for real deadlines: without it, every agent would cost one
    /// wake-up per stale threshold just to be re-armed.
    pub fn rearm_early(&mut self, until: f64) {
        for (timer, deadline) in self.pop_live(until) {
            if deadline.is_some_and(|d| d > timer.at) {
                self.schedule(&timer.cell, &timer.agent);
            } else if let Some(t) = self.tracked(&timer.cell, &timer.agent) {
                // A real deadline: put it back as it was.
                t.timer = Some(timer.at);
                self.timers.push(Reverse(timer));
            }
        }
    }

    /// Pops the heap entries at or before `until` that are their agent's
    /// live entry (obsolete ones are dropped), disarming each, with the
    /// agent's current deadline.
    fn pop_live(&mut self, until: f64) -> Vec<(Timer, Option<f64>)> {
        let mut out = Vec::new();
        while self.timers.peek().is_some_and(|Reverse(t)| t.at <= until) {
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            if let Some(t) = self
                .tracked(&timer.cell, &timer.agent)
                .filter(|t| t.timer == Some(timer.at))
            {
                t.timer = None;
                let deadline = t.sup.deadline();
                out.push((timer, deadline));
            }
        }
        out
    }

    fn tracked(&mut self, cell: &str, agent: &str) -> Option<&mut Tracked> {
        self.cells.get_mut(cell)?.agents.get_mut(agent)
    }

    /// Whether the daemon monitors this cell's agents.
    pub fn is_monitored(&self, cell: &str) -> bool {
        self.cells
            .get(cell)
            .is_some_and(|c| c.status.is_monitored())
    }

    /// Whether the core tracks this cell at all (monitored or provisioned).
    pub fn knows(&self, cell: &str) -> bool {
        self.cells.contains_key(cell)
    }

    /// Ids of every tracked cell.
    pub fn cell_ids(&self) -> Vec<CellId> {
        self.cells.keys().cloned().collect()
    }

    /// Names of a cell's agents.
    pub fn agent_names(&self, cell: &str) -> Vec<AgentId> {
        self.cells
            .get(cell)
            .map(|c| c.agents.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The isolation its `cell.json` gives an agent that can be started.
    pub fn isolation(&self, cell: &str, agent: &str) -> Option<crate::cell::manifest::Isolation> {
        let t = self.cells.get(cell)?.agents.get(agent)?;
        t.sup.settings.spawn.as_ref().map(|s| s.isolation)
    }

    /// The pending request of an agent, if it awaits approval.
    pub fn pending_request(&self, cell: &str, agent: &str) -> Option<&str> {
        match &self.cells.get(cell)?.agents.get(agent)?.sup.health {
            Health::AwaitingApproval { request_id, .. } => Some(request_id),
            _ => None,
        }
    }

    /// Whether any agent is being killed, stopped or started (the shell
    /// owes the core an answer).
    pub fn reviving(&self) -> bool {
        self.cells.values().any(|c| {
            !c.stopping.is_empty()
                || c.agents
                    .values()
                    .any(|t| matches!(t.sup.health, Health::Reviving { .. }))
        })
    }

    /// The instance of an agent on its way out, if it has one.
    fn stopping_instance(&self, cell: &str, agent: &str) -> Option<i32> {
        let s = self.cells.get(cell)?.stopping.get(agent)?;
        s.instance.map(|i| i.pid)
    }

    /// The cell's `state.json` as of `now` (times in unix seconds).
    pub fn snapshot(&self, cell: &str, daemon_pid: u32, now: f64) -> Option<CellState> {
        let c = self.cells.get(cell)?;
        let agent_health = c
            .agents
            .iter()
            .map(|(name, t)| (name.to_string(), self.snapshot_agent(&t.sup)))
            .collect();
        Some(CellState {
            cell_uuid: cell.to_string(),
            daemon_pid: Some(daemon_pid),
            last_poll: Some(self.wall(now)),
            agent_health,
            extra: Map::new(),
        })
    }

    /// The daemon's own record of the cell, for `state_dir` (the shell
    /// adds the boot id and its pid).
    pub fn record(&self, cell: &str, now: f64) -> Option<CellRecord> {
        let c = self.cells.get(cell)?;
        Some(self.record_of(cell, c, now))
    }

    fn record_of(&self, cell: &str, c: &CellSup, now: f64) -> CellRecord {
        let wall = |t: f64| self.wall(t);
        let agents = c
            .agents
            .iter()
            .map(|(name, t)| {
                let sup = &t.sup;
                let request = match &sup.health {
                    Health::AwaitingApproval { request_id, reason } => Some(RequestRecord {
                        id: request_id.clone(),
                        reason: reason.as_str().to_string(),
                    }),
                    _ => None,
                };
                let record = AgentRecord {
                    state: sup.state(),
                    revive_count: sup.revive_count,
                    last_seen: sup.last_seen.map(wall),
                    last_claimed: Some(sup.last_claimed).filter(|c| !c.is_nan()),
                    last_status: sup.last_status.as_deref().map(str::to_string),
                    instance: sup.instance.map(|i| InstanceRecord {
                        pid: i.pid,
                        start_time: i.start_time,
                    }),
                    started_at: sup.grace_from.map(wall),
                    due: sup.is_due(),
                    request,
                    denied: sup.health == Health::Denied,
                    stopping: false,
                    control: None,
                    isolation: None,
                    limits: Vec::new(),
                    why: sup.why.as_deref().cloned(),
                    next: sup.next().map(|n| crate::records::NextRecord {
                        action: n.action.to_string(),
                        by: if n.by_operator { "operator" } else { "daemon" }.to_string(),
                        at: n.at.map(wall),
                    }),
                    lost_pid: None,
                };
                (name.to_string(), record)
            })
            .map(|(name, mut record)| {
                // An agent whose processes are being stopped: the instance
                // is still there until they are gone.
                if let Some(s) = c.stopping.get(name.as_str()) {
                    record.stopping = true;
                    record.instance = s.instance.map(|i| InstanceRecord {
                        pid: i.pid,
                        start_time: i.start_time,
                    });
                }
                (name, record)
            })
            .chain(
                c.stopping
                    .iter()
                    .filter(|(name, _)| !c.agents.contains_key(*name))
                    .map(|(name, s)| {
                        let record = AgentRecord {
                            instance: s.instance.map(|i| InstanceRecord {
                                pid: i.pid,
                                start_time: i.start_time,
                            }),
                            stopping: true,
                            ..AgentRecord::default()
                        };
                        (name.to_string(), record)
                    }),
            )
            .collect();
        CellRecord {
            cell: cell.to_string(),
            written_at: self.wall(now),
            status: Some(c.status.as_str().to_string()),
            agents,
            checkpoint: c.last_checkpoint.clone(),
            checkpointing: c.job.is_some(),
            answered: c.answered.clone(),
            ..CellRecord::default()
        }
    }

    /// Stops tracking a cell, handing its final record and `state.json`
    /// to the shell.
    fn forget(&mut self, id: CellId, out: &mut Vec<Action>) {
        if let Some(c) = self.cells.get(&id) {
            // `now` only stamps the record; the last state change is what counts.
            let record = Box::new(self.record_of(&id, c, c.seen_at));
            // The shell stamps its own pid on it.
            let state = self.snapshot(&id, 0, c.seen_at).map(Box::new);
            self.cells.remove(&id);
            out.push(Action::Forget {
                cell: id,
                record,
                state,
            });
        }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in self.cells.values().filter(|c| c.status.is_monitored()) {
            s.cells += 1;
            for t in c.agents.values() {
                s.agents += 1;
                if t.sup.health == Health::Healthy {
                    s.healthy += 1;
                } else {
                    s.unhealthy += 1;
                }
            }
        }
        s
    }

    /// What the metrics say of the cells and agents it tracks at `now`:
    /// cells per status, and each agent of a monitored cell.
    pub fn samples(&self, now: f64) -> (BTreeMap<String, u64>, Vec<crate::metrics::AgentSample>) {
        let mut cells = BTreeMap::new();
        let mut agents = Vec::new();
        for (id, c) in &self.cells {
            *cells
                .entry(crate::metrics::cell_key(c.status.as_str()).to_string())
                .or_default() += 1;
            if !c.status.is_monitored() {
                continue;
            }
            for (name, t) in &c.agents {
                agents.push(crate::metrics::AgentSample {
                    cell: id.to_string(),
                    agent: name.to_string(),
                    state: t.sup.state(),
                    heartbeat_age_s: t.sup.last_seen.map(|seen| round_ms(now - seen)),
                    revive_count: t.sup.revive_count,
                });
            }
        }
        (cells, agents)
    }

    /// Every agent of every monitored cell is healthy (`daemon --once`).
    pub fn all_healthy(&self) -> bool {
        self.summary().unhealthy == 0
    }

    /// One agent's entry in `state.json`.
    fn snapshot_agent(&self, sup: &AgentSup) -> AgentHealth {
        let state = sup.state();
        let mut extra = Map::new();
        if let Some(status) = &sup.last_status {
            extra.insert("heartbeat_status".into(), Value::String(status.to_string()));
        }
        if sup.is_due() {
            extra.insert("revive_due".into(), Value::Bool(true));
        }
        if let Some(instance) = sup.instance {
            extra.insert("pid_start_time".into(), Value::from(instance.start_time));
        }
        if let Some(grace) = sup.grace_from {
            extra.insert("started_at".into(), Value::from(round_ms(self.wall(grace))));
        }
        match &sup.health {
            Health::AwaitingApproval { request_id, reason } => {
                extra.insert("request_id".into(), Value::from(request_id.as_str()));
                extra.insert("reason".into(), Value::from(reason.as_str()));
            }
            Health::Backoff { attempt, at, .. } => {
                extra.insert("next_attempt".into(), Value::from(*attempt));
                extra.insert(
                    "next_attempt_at".into(),
                    Value::from(round_ms(self.wall(*at))),
                );
            }
            _ => {}
        }
        AgentHealth {
            healthy: state == AgentState::Healthy,
            last_seen: sup.last_seen.map(|t| round_ms(self.wall(t))),
            revive_count: sup.revive_count,
            state,
            pid: sup.instance.map(|i| i.pid),
            extra,
        }
    }

    fn observe_cell(
        &mut self,
        id: CellId,
        manifest: &Manifest,
        previous: Option<&CellRecord>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let status = manifest.status();
        let known = self.cells.get(&id).map(|c| c.status.clone());
        // What the daemon last accounted for: what it saw a moment ago, or,
        // on first sight, what its record says (a move made while no
        // daemon ran is news too).
        let accounted = known.clone().or_else(|| {
            previous
                .and_then(|p| p.status.as_deref())
                .map(CellStatus::parse)
        });
        if let Some(from) = &accounted
            && *from != status
        {
            // Archived and destroyed are final (the transition table has
            // no way back): an edit of cell.json — which the cell's agents
            // can make — does not bring a cell back under supervision.
            if from.is_final() && !CellStatus::can_move(from, &status) {
                out.push(Action::RefusedMove {
                    cell: id,
                    from: from.clone(),
                    to: status,
                });
                return;
            }
            out.push(Action::StatusObserved {
                cell: id.clone(),
                from: from.clone(),
                to: status.clone(),
            });
        }
        let tracked = status.is_monitored() || status == CellStatus::Provisioned;
        if !tracked {
            if status.is_final() {
                // Archived or destroyed: its agents go down with it, and
                // it is forgotten once their processes are gone.
                self.retire(&id, status, previous, now, out);
            } else {
                // Its final record says the status it leaves on.
                if let Some(c) = self.cells.get_mut(&id) {
                    c.status = status.clone();
                }
                self.forget(id, out);
            }
            return;
        }
        if status == CellStatus::Provisioned && !manifest.agents.is_empty() {
            out.push(Action::Activate { cell: id.clone() });
        }
        let defaults = self.defaults.clone();
        let timing = self.timing.clone();
        let offset = self.wall_offset;
        let first = !self.cells.contains_key(&id);
        let cell = self
            .cells
            .entry(id.clone())
            .or_insert_with(|| CellSup::new(status.clone(), now));
        cell.seen_at = now;
        let mut changed = known.as_ref() != Some(&status);
        let timers_before = (!first).then_some(cell.timers);
        jobs::observe_timers(cell, manifest, previous, first, &status, now, offset);
        if let Some(before) = timers_before
            && before != cell.timers
        {
            // The cell's own settings: `settings_changed` without an agent.
            let mut diff = serde_json::Map::new();
            for (key, was, is) in [
                ("idle_timeout", before.idle, cell.timers.idle),
                (
                    "max_duration",
                    before.max_duration,
                    cell.timers.max_duration,
                ),
                ("checkpoint_interval", before.interval, cell.timers.interval),
            ] {
                if was != is {
                    let secs = is
                        .and_then(crate::cell::manifest::Seconds::from_secs_f64)
                        .map_or(Value::Null, |s| Value::Number(s.0));
                    diff.insert(key.into(), secs);
                }
            }
            out.push(Action::Emit {
                cell: id.clone(),
                event: Event::new(EventKind::SettingsChanged)
                    .with("changed", serde_json::Value::Object(diff)),
            });
        }
        cell.status = status.clone();
        // A checkpoint holds the agents like a freeze, until it is done.
        let held = status == CellStatus::Frozen || cell.job.is_some();
        let mut wanted: BTreeMap<AgentId, AgentSettings> = BTreeMap::new();
        if status.is_monitored() {
            for agent in &manifest.agents {
                if validate_agent_name(&agent.name).is_ok() {
                    let settings = AgentSettings::resolve_with(&defaults, &timing, manifest, agent);
                    wanted.entry(agent.name.as_str().into()).or_insert(settings);
                }
            }
        }
        // Agents that left cell.json: their processes are stopped.
        let gone: Vec<AgentId> = cell
            .agents
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(t) = cell.agents.remove(&name) {
                changed = true;
                stop_agent(&id, &mut cell.stopping, name, &t.sup, true, out);
            }
        }
        // Agents a previous daemon started that left cell.json while no
        // daemon ran: stopped now.
        if let Some(prev) = previous {
            for (name, record) in &prev.agents {
                let name: AgentId = name.as_str().into();
                if let Some(i) = record
                    .instance
                    .as_ref()
                    .filter(|_| !wanted.contains_key(&name))
                    && !cell.stopping.contains_key(&name)
                {
                    adopt_to_stop(
                        &id,
                        name,
                        i,
                        timing.kill_grace,
                        true,
                        &mut cell.stopping,
                        out,
                    );
                }
            }
        }
        let mut to_check = Vec::new();
        let mut to_arm = Vec::new();
        let mut restored = Vec::new();
        for (name, settings) in wanted {
            match cell.agents.get_mut(&name) {
                Some(t) if t.sup.settings == settings && t.sup.held == held => {}
                Some(t) => {
                    if t.sup.held != held {
                        let changes = t.sup.hold(held, now);
                        if !changes.is_empty() {
                            restored.push((name.clone(), changes));
                        }
                        if let Some(instance) = t.sup.instance {
                            out.push(Action::Freeze {
                                cell: id.clone(),
                                agent: name.clone(),
                                instance,
                                frozen: held,
                            });
                        }
                    }
                    if t.sup.settings != settings {
                        let diff = settings.changes_from(&t.sup.settings);
                        if !diff.is_empty() {
                            out.push(Action::Emit {
                                cell: id.clone(),
                                event: Event::new(EventKind::SettingsChanged)
                                    .with("agent", &*name)
                                    .with("changed", serde_json::Value::Object(diff)),
                            });
                        }
                        t.sup.set_settings(settings, now);
                        changed = true;
                    }
                    to_check.push(name);
                }
                None => {
                    let mut sup = AgentSup::new(settings, now);
                    sup.held = held;
                    if let Some(prev) = previous.and_then(|p| p.agents.get(&*name)) {
                        let mut changes = restore(&mut sup, prev, now, offset);
                        if !held && previous.is_some_and(|p| p.checkpointing) {
                            // Frozen for a checkpoint by a daemon that ended
                            // before the thaw: thawed now, with the grace a
                            // thaw gives (its silence was the freeze's).
                            sup.held = true;
                            changes.extend(sup.hold(false, now));
                        }
                        if let Some(instance) = sup.instance {
                            out.push(Action::Adopt {
                                cell: id.clone(),
                                agent: name.clone(),
                                instance,
                            });
                            if held {
                                // Frozen it stays, whoever froze it.
                                out.push(Action::Freeze {
                                    cell: id.clone(),
                                    agent: name.clone(),
                                    instance,
                                    frozen: true,
                                });
                            } else if previous.is_some_and(|p| p.checkpointing) {
                                // A daemon that froze it for a checkpoint
                                // and ended before the thaw.
                                out.push(Action::Freeze {
                                    cell: id.clone(),
                                    agent: name.clone(),
                                    instance,
                                    frozen: false,
                                });
                            }
                        }
                        restored.push((name.clone(), changes));
                    }
                    let published = Published::of(&sup);
                    cell.agents.insert(
                        name.clone(),
                        Tracked {
                            sup,
                            timer: None,
                            published,
                        },
                    );
                    changed = true;
                    // Only armed: a start waits until the shell has read
                    // the agent's heartbeat (a fresh one means it runs).
                    to_arm.push(name);
                }
            }
        }
        for (name, changes) in restored {
            self.apply(&id, &name, changes, now, out);
        }
        for name in to_check {
            self.expire(&id, &name, now, out);
        }
        for name in to_arm {
            self.rearm(&id, &name, out);
        }
        self.schedule_cell(&id);
        if changed {
            out.push(Action::StateChanged {
                cell: id,
                urgent: true,
            });
        }
    }

    /// The cell was archived or destroyed: every agent's processes are
    /// stopped (SIGTERM to the whole unit, `kill_grace`, SIGKILL), and the
    /// cell is forgotten once the last is gone. Idempotent: a cell already
    /// retiring waits for the answers it is owed.
    fn retire(
        &mut self,
        id: &CellId,
        status: CellStatus,
        previous: Option<&CellRecord>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        if !self.cells.contains_key(id) {
            // First sight (a daemon start): instances its record names
            // still alive — a stop cut short by a crash — are stopped now.
            let Some(prev) = previous else {
                return;
            };
            if !prev.agents.values().any(|a| a.instance.is_some()) {
                // Its agents were stopped without this daemon (by the CLI,
                // or they died): a record that still says otherwise is
                // settled, and `state.json` with it.
                if prev
                    .agents
                    .values()
                    .any(|a| a.state != AgentState::Exited || a.lost_pid.is_some() || a.stopping)
                {
                    let (record, state) = settled(id, prev, &status, self.wall(now));
                    out.push(Action::Forget {
                        cell: id.clone(),
                        record: Box::new(record),
                        state: Some(Box::new(state)),
                    });
                }
                return;
            }
            let mut stopping = BTreeMap::new();
            for (name, record) in &prev.agents {
                if let Some(i) = &record.instance {
                    let name: AgentId = name.as_str().into();
                    adopt_to_stop(
                        id,
                        name,
                        i,
                        self.timing.kill_grace,
                        false,
                        &mut stopping,
                        out,
                    );
                }
            }
            let mut c = CellSup::new(status, now);
            c.stopping = stopping;
            self.cells.insert(id.clone(), c);
            out.push(Action::StateChanged {
                cell: id.clone(),
                urgent: true,
            });
            return;
        }
        let Some(cell) = self.cells.get_mut(id) else {
            return;
        };
        cell.status = status;
        cell.seen_at = now;
        // The agents stay in its record, held (no deadline runs) and
        // `exited`: their instances are being stopped, their work in this
        // cell is over.
        for (name, t) in cell.agents.iter_mut() {
            if !cell.stopping.contains_key(name) {
                stop_agent(id, &mut cell.stopping, name.clone(), &t.sup, false, out);
            }
            t.sup.held = true;
            t.sup.instance = None;
            if !matches!(t.sup.health, Health::Reviving { .. }) {
                t.sup.enter(Health::Finished, now);
            }
        }
        if cell.stopping.is_empty() {
            self.forget(id.clone(), out);
        } else {
            out.push(Action::StateChanged {
                cell: id.clone(),
                urgent: true,
            });
        }
    }

    /// An answer for an agent on its way out; `true` if it was one.
    fn answer_stopping(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        answer: Result<Option<Instance>, ()>,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(c) = self.cells.get_mut(cell) else {
            return false;
        };
        let Some(s) = c.stopping.get_mut(agent) else {
            return false;
        };
        match answer {
            // A start that was in flight brought an instance: stop it too.
            Ok(Some(instance)) if s.awaiting_spawn => {
                s.instance = Some(instance);
                s.awaiting_spawn = false;
                out.push(stop_action(cell, agent, instance, self.timing.kill_grace));
                return true;
            }
            Ok(Some(_)) => return true,
            // Killed, or a start that failed: gone.
            Ok(None) | Err(()) => {}
        }
        let left = c.stopping.remove(agent).is_some_and(|s| s.left);
        if left {
            out.push(Action::Left {
                cell: cell.clone(),
                agent: agent.clone(),
            });
        }
        out.push(Action::StateChanged {
            cell: cell.clone(),
            urgent: true,
        });
        if c.stopping.is_empty() && !c.status.is_monitored() && c.status != CellStatus::Provisioned
        {
            self.forget(cell.clone(), out);
        }
        true
    }

    /// A heartbeat of `agent` in `cell` ([`Input::Heartbeat`] without the
    /// allocations: this is the daemon's hot path).
    pub fn heartbeat(&mut self, cell: &str, agent: &str, hb: &Heartbeat, now: f64) -> Vec<Action> {
        let mut out = Vec::new();
        let Some((cell_id, c)) = self.cells.get_key_value(cell) else {
            return out;
        };
        if !c.status.is_monitored() {
            return out;
        }
        let Some((agent_id, _)) = c.agents.get_key_value(agent) else {
            return out;
        };
        let (cell_id, agent_id) = (cell_id.clone(), agent_id.clone());
        let Some(t) = self
            .cells
            .get_mut(&cell_id)
            .and_then(|c| c.agents.get_mut(&agent_id))
        else {
            return out;
        };
        let pid = hb.pid.and_then(|p| i32::try_from(p).ok());
        // The claim on the monotonic clock; one from the future counts
        // from now, when it was read.
        let claimed = hb.timestamp - self.wall_offset;
        let seen = if claimed > now + FUTURE_SKEW_ALLOWANCE_S {
            now
        } else {
            claimed
        };
        let changes = t
            .sup
            .heartbeat(seen, hb.timestamp, hb.status.as_deref(), pid, now);
        if changes.is_empty() {
            return out;
        }
        if changes.iter().any(|c| matches!(c, Change::Status(_)))
            && let Some(c) = self.cells.get_mut(&cell_id)
        {
            // Not idle: its deadline moves later, and its heap entry is
            // re-armed when it fires (no heap operation here).
            c.clock.activity = now;
        }
        self.settle(&cell_id, &agent_id, changes, now, &mut out);
        out
    }

    /// Applies the deadlines of one agent that have come, and arms its
    /// next one.
    fn expire(&mut self, cell: &CellId, agent: &AgentId, now: f64, out: &mut Vec<Action>) {
        let Some(t) = self.tracked(cell, agent) else {
            return;
        };
        let changes = t.sup.advance(now);
        self.settle(cell, agent, changes, now, out);
    }

    /// Applies an agent's changes and arms its next deadline.
    fn settle(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        changes: Vec<Change>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        self.apply(cell, agent, changes, now, out);
        self.rearm(cell, agent, out);
    }

    /// After any change to an agent: arm its next deadline, and mark its
    /// cell urgently dirty if a published fact moved. Every path that
    /// changes an agent ends here, so no change of `state`, `pid` or
    /// `revive_count` can wait for a lazy write.
    fn rearm(&mut self, cell: &CellId, agent: &AgentId, out: &mut Vec<Action>) {
        self.schedule(cell, agent);
        if let Some(t) = self.tracked(cell, agent) {
            let now = Published::of(&t.sup);
            if now != t.published {
                t.published = now;
                out.push(Action::StateChanged {
                    cell: cell.clone(),
                    urgent: true,
                });
            }
        }
    }

    /// Pushes a heap entry for the agent's deadline unless an entry at or
    /// before it is already live (it will re-arm when it fires).
    fn schedule(&mut self, cell: &CellId, agent: &AgentId) {
        let Some(t) = self.tracked(cell, agent) else {
            return;
        };
        let Some(at) = t.sup.deadline() else {
            return;
        };
        if t.timer.is_some_and(|live| live <= at) {
            return;
        }
        t.timer = Some(at);
        self.timers.push(Reverse(Timer {
            at,
            cell: cell.clone(),
            agent: agent.clone(),
        }));
    }

    /// The old instance is gone: start the new one.
    fn killed(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        exited: Option<(i32, ExitInfo)>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        if self.answer_stopping(cell, agent, Ok(None), out) {
            return;
        }
        let Some(t) = self.tracked(cell, agent) else {
            return;
        };
        let mut changes = match exited {
            Some((pid, exit)) => t.sup.exited(pid, exit, now),
            None => Vec::new(),
        };
        if t.sup.killed() {
            let Health::Reviving {
                attempt,
                reason,
                ref substitute_for,
                ..
            } = t.sup.health
            else {
                return;
            };
            let substitute_for = substitute_for.as_deref().map(str::to_string);
            match t.sup.settings.spawn.clone() {
                Some(spec) => out.push(Action::Spawn {
                    cell: cell.clone(),
                    agent: agent.clone(),
                    spec,
                    attempt,
                    reason,
                    substitute_for,
                }),
                None => {
                    // The command was removed from cell.json meanwhile.
                    t.sup.enter(Health::Due { since: now }, now);
                    changes.push(Change::State);
                }
            }
        }
        self.settle(cell, agent, changes, now, out);
    }

    fn spawned(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        result: Result<Instance, String>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let answer = result.as_ref().map(|i| Some(*i)).map_err(|_| ());
        if self.answer_stopping(cell, agent, answer, out) {
            return;
        }
        let Some(t) = self.tracked(cell, agent) else {
            return;
        };
        let Health::Reviving {
            attempt, reason, ..
        } = t.sup.health
        else {
            return;
        };
        let event = |kind| Event::new(kind).with("agent", &**agent);
        match result {
            Ok(instance) => {
                t.sup.spawned(instance, now);
                if t.sup.held {
                    // Started while its cell was being frozen: it is
                    // frozen too, like every other process of the cell.
                    out.push(Action::Freeze {
                        cell: cell.clone(),
                        agent: agent.clone(),
                        instance,
                        frozen: true,
                    });
                }
                let ev = if reason.is_start() {
                    event(EventKind::AgentStarted).with("pid", instance.pid)
                } else {
                    event(EventKind::AgentRevived)
                        .with("pid", instance.pid)
                        .with("attempt", attempt)
                        .with("reason", reason.as_str())
                };
                let ev = if reason == Reason::Substitute {
                    ev.with("reason", reason.as_str())
                } else {
                    ev
                };
                out.push(Action::Emit {
                    cell: cell.clone(),
                    event: ev,
                });
                out.push(Action::StateChanged {
                    cell: cell.clone(),
                    urgent: true,
                });
            }
            Err(error) => {
                let changes = t.sup.spawn_failed(&error, now, seed_of(cell, agent));
                out.push(Action::Emit {
                    cell: cell.clone(),
                    event: event(EventKind::ReviveFailed)
                        .with("error", error)
                        .with("attempt", attempt)
                        .with("reason", reason.as_str()),
                });
                self.apply(cell, agent, changes, now, out);
            }
        }
        self.rearm(cell, agent, out);
    }

    /// `lazarus-pit revive`.
    fn revive(&mut self, cell: &CellId, agent: &AgentId, now: f64, out: &mut Vec<Action>) {
        let Some(t) = self.tracked(cell, agent) else {
            return;
        };
        if matches!(t.sup.health, Health::Reviving { .. }) {
            return;
        }
        if !t.sup.settings.can_start() {
            out.push(Action::Emit {
                cell: cell.clone(),
                event: Event::new(EventKind::ReviveFailed)
                    .with("agent", &**agent)
                    .with("error", "the agent has no command to run")
                    .with("reason", Reason::Manual.as_str()),
            });
            return;
        }
        let changes = t.sup.force_revival(Reason::Manual, now);
        self.settle(cell, agent, changes, now, out);
    }

    /// `lazarus-pit approve|deny`. An answer to a request that is no
    /// longer pending changes nothing.
    fn decide(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        request_id: String,
        approved: bool,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let Some(t) = self.tracked(cell, agent) else {
            return;
        };
        if !matches!(&t.sup.health, Health::AwaitingApproval { request_id: r, .. } if *r == request_id)
        {
            return;
        }
        if approved {
            let changes = t.sup.force_revival(Reason::Approved, now);
            self.apply(cell, agent, changes, now, out);
        } else {
            t.put_down(Health::Denied, cell, agent, now, out);
            t.sup.why = Some(Box::new("its revival was denied by an operator".into()));
        }
        self.rearm(cell, agent, out);
    }

    /// Turns an agent's changes into events, state updates and process
    /// actions; a death goes through the revive policy.
    fn apply(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        changes: Vec<Change>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let mut urgent = None;
        let offset = self.wall_offset;
        for change in changes {
            let event = |kind| Event::new(kind).with("agent", &**agent);
            match change {
                Change::Stale {
                    last_seen,
                    age_s,
                    late_s,
                } => {
                    let last_seen = last_seen.map(|t| round_ms(t + offset));
                    out.push(Action::Emit {
                        cell: cell.clone(),
                        event: event(EventKind::AgentStale)
                            .with("last_seen", last_seen.map_or(Value::Null, Value::from))
                            .with("age_s", age_s)
                            .with("late_ms", (late_s * 1e5).round() / 100.0),
                    });
                    urgent = Some(true);
                }
                Change::Recovered => {
                    out.push(Action::Emit {
                        cell: cell.clone(),
                        event: event(EventKind::AgentRecovered),
                    });
                    urgent = Some(true);
                }
                Change::Due(reason) => {
                    self.on_due(cell, agent, reason, now, out);
                    urgent = Some(true);
                }
                Change::Status(status) => {
                    if self.heartbeat_events == HeartbeatEvents::Changes {
                        out.push(Action::Emit {
                            cell: cell.clone(),
                            event: event(EventKind::Heartbeat).with("status", status),
                        });
                    }
                }
                Change::Beat(status) => {
                    if self.heartbeat_events == HeartbeatEvents::All {
                        out.push(Action::Emit {
                            cell: cell.clone(),
                            event: event(EventKind::Heartbeat)
                                .with("status", status.map_or(Value::Null, Value::from)),
                        });
                    }
                    urgent.get_or_insert(false);
                }
                Change::Revive { .. } => {
                    if let Some(t) = self.tracked(cell, agent) {
                        out.push(Action::Kill {
                            cell: cell.clone(),
                            agent: agent.clone(),
                            instance: t.sup.instance,
                            claimed_pid: t.sup.claimed_pid,
                            grace: t.sup.settings.timing.kill_grace,
                        });
                    }
                    urgent = Some(true);
                }
                Change::Exited { pid, exit } => {
                    let mut ev = event(EventKind::AgentExited).with("pid", pid);
                    ev = match (exit.code, exit.signal) {
                        (_, Some(signal)) => ev.with("signal", signal),
                        (Some(code), None) => ev.with("code", code),
                        (None, None) => ev.with("code", Value::Null),
                    };
                    out.push(Action::Emit {
                        cell: cell.clone(),
                        event: ev,
                    });
                    urgent = Some(true);
                }
                Change::Exhausted { attempts } => {
                    out.push(Action::Emit {
                        cell: cell.clone(),
                        event: event(EventKind::ReviveExhausted).with("attempts", attempts),
                    });
                    // Given up on: like a dead agent, no process of it is
                    // left working on the cell (a hung one still runs).
                    if let Some(t) = self.tracked(cell, agent)
                        && let Some(instance) = t.sup.instance
                    {
                        out.push(stop_action(
                            cell,
                            agent,
                            instance,
                            t.sup.settings.timing.kill_grace,
                        ));
                    }
                    urgent = Some(true);
                }
                Change::State => urgent = Some(true),
            }
        }
        if let Some(urgent) = urgent {
            out.push(Action::StateChanged {
                cell: cell.clone(),
                urgent,
            });
        }
    }

    /// The agent is dead for `reason`: apply its revive policy. A frozen
    /// cell holds it as it is until thawed.
    fn on_due(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        reason: Reason,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let offset = self.wall_offset;
        let Some(t) = self.tracked(cell, agent) else {
            return;
        };
        if t.sup.held {
            return;
        }
        let event = |kind| Event::new(kind).with("agent", &**agent);
        let can_start = t.sup.settings.can_start();
        match t.sup.settings.revive_policy {
            RevivePolicy::No => {
                t.put_down(Health::Dead, cell, agent, now, out);
                out.push(Action::Emit {
                    cell: cell.clone(),
                    event: event(EventKind::AgentDead).with("reason", reason.as_str()),
                });
            }
            // Without a command there is nothing to revive or ask about:
            // the agent stays stale, watched.
            RevivePolicy::Yes | RevivePolicy::Ask if !can_start => {}
            RevivePolicy::Yes => {
                let changes = t.sup.schedule_revival(reason, now, seed_of(cell, agent));
                self.apply(cell, agent, changes, now, out);
            }
            RevivePolicy::Ask => {
                let wall_ms = ((now + offset) * 1000.0) as u64;
                let request_id = format!("revive_{wall_ms}_{agent}");
                t.sup.enter(
                    Health::AwaitingApproval {
                        request_id: request_id.clone(),
                        reason,
                    },
                    now,
                );
                out.push(Action::Emit {
                    cell: cell.clone(),
                    event: event(EventKind::ReviveRequested)
                        .with("request_id", request_id)
                        .with("reason", reason.as_str()),
                });
            }
            RevivePolicy::Substitute => self.substitute(cell, agent, reason, now, out),
        }
    }

    /// Policy `substitute`: the first healthy substitute (or, failing
    /// that, one the daemon is already starting) gets a handoff packet; if
    /// there is none, the first one that is down and can be started is
    /// started (and gets the packet). The dead agent is `dead`.
    fn substitute(
        &mut self,
        cell: &CellId,
        agent: &AgentId,
        reason: Reason,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.cells.get(cell) else {
            return;
        };
        let Some(dead) = c.agents.get(agent) else {
            return;
        };
        let subs = &dead.sup.settings.substitutes;
        let candidate = |pred: &dyn Fn(&AgentSup) -> bool| {
            subs.iter()
                .filter(|s| **s != **agent)
                .find_map(|s| {
                    c.agents
                        .get_key_value(s.as_str())
                        .filter(|(_, t)| pred(&t.sup))
                })
                .map(|(name, _)| name.clone())
        };
        // Healthy first; then one already on its way up (started by the
        // daemon, not beating yet); then one that is down and can start.
        let healthy = candidate(&|s| s.health == Health::Healthy)
            .or_else(|| candidate(&|s| s.is_coming_up()));
        let (substitute, start) = match healthy {
            Some(s) => (Some(s), false),
            None => (
                // Not one an operator denied: only an operator starts it.
                candidate(&|s| {
                    s.settings.can_start() && s.is_down() && !s.held && s.health != Health::Denied
                }),
                true,
            ),
        };
        let offset = self.wall_offset;
        let last_seen = dead.sup.last_seen.map(|t| round_ms(t + offset));
        let last_status = dead.sup.last_status.as_deref().map(str::to_string);
        let event = |kind| Event::new(kind).with("agent", &**agent);
        if let Some(t) = self.tracked(cell, agent) {
            // Its work is handed over: a hung instance does not stay behind.
            t.put_down(Health::Dead, cell, agent, now, out);
        }
        let Some(substitute) = substitute else {
            out.push(Action::Emit {
                cell: cell.clone(),
                event: event(EventKind::AgentDead)
                    .with("reason", reason.as_str())
                    .with("error", "no substitute is healthy or can be started"),
            });
            return;
        };
        out.push(Action::Handoff {
            cell: cell.clone(),
            agent: agent.clone(),
            substitute: substitute.to_string(),
            reason,
            last_seen,
            last_status,
        });
        out.push(Action::Emit {
            cell: cell.clone(),
            event: event(EventKind::AgentSubstituted)
                .with("substitute", &*substitute)
                .with("reason", reason.as_str())
                .with("started", start),
        });
        if start && let Some(t) = self.tracked(cell, &substitute) {
            let changes = t.sup.start_as_substitute(agent, now);
            self.settle(cell, &substitute, changes, now, out);
        }
    }
}

/// Moves an agent that is leaving (`left`) or going down with its cell
/// into `stopping`, and asks for its processes to be stopped. One with
/// nothing running leaves at once.
fn stop_agent(
    cell: &CellId,
    stopping: &mut BTreeMap<AgentId, Stopping>,
    name: AgentId,
    sup: &AgentSup,
    left: bool,
    out: &mut Vec<Action>,
) {
    // A kill or start in flight is answered first; an instance a start
    // brings is stopped when it arrives.
    let in_flight = match sup.health {
        Health::Reviving { spawning, .. } => Some(spawning),
        _ => None,
    };
    if sup.instance.is_none() && in_flight.is_none() {
        if left {
            out.push(Action::Left {
                cell: cell.clone(),
                agent: name,
            });
        }
        return;
    }
    if in_flight.is_none()
        && let Some(instance) = sup.instance
    {
        out.push(stop_action(
            cell,
            &name,
            instance,
            sup.settings.timing.kill_grace,
        ));
    }
    stopping.insert(
        name,
        Stopping {
            instance: sup.instance,
            awaiting_spawn: in_flight == Some(true),
            left,
        },
    );
}

/// The record of an archived or destroyed cell whose agents are all gone,
/// and its last `state.json`: every agent `exited`, no instance.
fn settled(
    cell: &str,
    prev: &CellRecord,
    status: &CellStatus,
    wall_now: f64,
) -> (CellRecord, CellState) {
    let mut record = prev.clone();
    record.status = Some(status.as_str().to_string());
    record.written_at = wall_now;
    for a in record.agents.values_mut() {
        a.state = AgentState::Exited;
        a.instance = None;
        a.stopping = false;
        a.due = false;
        a.request = None;
        a.control = None;
        a.isolation = None;
        a.limits.clear();
        a.lost_pid = None;
    }
    let agent_health = record
        .agents
        .iter()
        .map(|(name, a)| {
            let health = AgentHealth {
                healthy: false,
                last_seen: a.last_seen,
                revive_count: a.revive_count,
                state: AgentState::Exited,
                pid: None,
                extra: Map::new(),
            };
            (name.clone(), health)
        })
        .collect();
    let state = CellState {
        cell_uuid: cell.to_string(),
        daemon_pid: None,
        last_poll: Some(wall_now),
        agent_health,
        extra: Map::new(),
    };
    (record, state)
}

/// An instance a previous daemon's record names, still alive, whose agent
/// is gone (`left` cell.json) or whose cell was archived meanwhile: watched
/// again, and stopped.
fn adopt_to_stop(
    cell: &CellId,
    agent: AgentId,
    recorded: &InstanceRecord,
    grace: Duration,
    left: bool,
    stopping: &mut BTreeMap<AgentId, Stopping>,
    out: &mut Vec<Action>,
) {
    let instance = Instance {
        pid: recorded.pid,
        start_time: recorded.start_time,
    };
    out.push(Action::Adopt {
        cell: cell.clone(),
        agent: agent.clone(),
        instance,
    });
    out.push(stop_action(cell, &agent, instance, grace));
    stopping.insert(
        agent,
        Stopping {
            instance: Some(instance),
            awaiting_spawn: false,
            left,
        },
    );
}

fn stop_action(cell: &CellId, agent: &AgentId, instance: Instance, grace: Duration) -> Action {
    Action::Kill {
        cell: cell.clone(),
        agent: agent.clone(),
        instance: Some(instance),
        claimed_pid: None,
        grace,
    }
}

/// Seeds an agent from the daemon's own record, so a restart neither
/// repeats events nor forgets revive counts, pending requests or the
/// instances it started. The shell has already checked which of those
/// instances are alive: a dead one's pid arrives as `lost_pid`, and its
/// death is reported now. Recorded times are unix seconds (`offset` turns
/// them into monotonic ones).
fn restore(sup: &mut AgentSup, prev: &AgentRecord, now: f64, offset: f64) -> Vec<Change> {
    let mono = |wall: f64| (wall - offset).min(now);
    sup.revive_count = prev.revive_count;
    sup.last_seen = prev.last_seen.map(mono);
    sup.last_claimed = prev.last_claimed.unwrap_or(f64::NAN);
    sup.last_status = prev.last_status.as_deref().map(Into::into);
    sup.why = prev.why.clone().map(Box::new);
    sup.grace_from = prev.started_at.map(mono);
    sup.instance = prev.instance.map(|i| Instance {
        pid: i.pid,
        start_time: i.start_time,
    });
    // Seeding, not a move: the agent is new to this daemon.
    sup.health = match prev.state {
        AgentState::Healthy if prev.last_seen.is_some() => {
            sup.healthy_since = Some(now);
            Health::Healthy
        }
        AgentState::Stale | AgentState::Frozen if prev.due => Health::Due { since: now },
        AgentState::Stale | AgentState::Frozen => Health::Stale { since: now },
        AgentState::Exited => Health::Finished,
        AgentState::Dead if prev.denied => Health::Denied,
        AgentState::Dead => Health::Dead,
        AgentState::Abandoned => Health::Abandoned,
        AgentState::AwaitingApproval if prev.request.is_some() => {
            let request = prev.request.as_ref();
            Health::AwaitingApproval {
                request_id: request.map(|r| r.id.clone()).unwrap_or_default(),
                reason: match request.map(|r| r.reason.as_str()) {
                    Some("exited") => Reason::Exited,
                    _ => Reason::Stale,
                },
            }
        }
        AgentState::Reviving if sup.instance.is_some() => Health::Waiting { revived: true },
        // A revival that was under way when the daemon stopped: decide
        // again (its attempt was counted).
        AgentState::Reviving => {
            sup.health = Health::Due { since: now };
            return vec![Change::Due(Reason::Stale)];
        }
        _ if sup.instance.is_some() => Health::Waiting { revived: false },
        // Judged afresh, as if first seen (a fresh heartbeat keeps an
        // autostart agent from being started twice).
        _ => {
            sup.last_seen = None;
            sup.last_claimed = f64::NAN;
            sup.health.clone()
        }
    };
    match prev.lost_pid {
        Some(pid)
            if !matches!(
                sup.health,
                Health::Finished | Health::Dead | Health::Denied | Health::Abandoned
            ) =>
        {
            // It died while no daemon watched; how, nobody can tell.
            sup.instance = Some(Instance { pid, start_time: 0 });
            sup.exited(pid, ExitInfo::default(), now)
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
