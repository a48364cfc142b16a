//! The pure decision core: given facts (manifests, heartbeats) and an
//! instant, what is each agent's state and what must happen next.
//!
//! No I/O and no clock: the daemon's shell feeds [`Input`]s with `now`
//! (unix seconds), carries out the returned [`Action`]s, and sleeps until
//! [`Supervisor::next_deadline`]. Deadlines live in one min-heap with at
//! most one live entry per agent: a heartbeat only moves an agent's
//! deadline later, so it costs no heap operation at all; the entry, when it
//! fires early, is simply pushed again at the real deadline.

pub mod agent;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::cell::heartbeat::Heartbeat;
use crate::cell::lifecycle::CellStatus;
use crate::cell::manifest::Manifest;
use crate::cell::name::validate_agent_name;
use crate::cell::settings::AgentSettings;
use crate::config::{CellsConfig, HeartbeatEvents};
use crate::events::{Event, EventKind};
use crate::state::{AgentHealth, AgentState, CellState};
use agent::{AgentSup, Change, Health};

pub type CellId = Arc<str>;
pub type AgentId = Arc<str>;

/// A fact for the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// A cell's manifest as read now (new, changed or unchanged), with the
    /// `state.json` a previous daemon left, for the first sighting.
    Cell {
        id: CellId,
        manifest: Box<Manifest>,
        previous: Option<Box<CellState>>,
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
    /// A provisioned cell has agents: move it to `active`.
    Activate { cell: CellId },
    /// The cell is no longer monitored; drop its watches.
    Forget { cell: CellId },
}

/// One agent and its timer bookkeeping.
#[derive(Debug, Clone)]
struct Tracked {
    sup: AgentSup,
    /// Instant of this agent's live heap entry, if any.
    timer: Option<f64>,
}

#[derive(Debug, Clone)]
struct CellSup {
    status: CellStatus,
    agents: BTreeMap<AgentId, Tracked>,
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
    heartbeat_events: HeartbeatEvents,
    cells: HashMap<CellId, CellSup>,
    timers: BinaryHeap<Reverse<Timer>>,
}

impl Supervisor {
    pub fn new(defaults: CellsConfig, heartbeat_events: HeartbeatEvents) -> Supervisor {
        Supervisor {
            defaults,
            heartbeat_events,
            cells: HashMap::new(),
            timers: BinaryHeap::new(),
        }
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
            Input::CellGone { id } => {
                if self.cells.remove(&id).is_some() {
                    out.push(Action::Forget { cell: id });
                }
            }
            Input::Heartbeat {
                cell,
                agent,
                heartbeat,
            } => return self.heartbeat(&cell, &agent, &heartbeat, now),
            Input::Expire { due } => {
                for (cell, agent) in due {
                    self.expire(&cell, &agent, now, &mut out);
                }
            }
            Input::Tick => {
                let due = self.take_due(now);
                return self.handle(Input::Expire { due }, now);
            }
            Input::Config { cells, heartbeats } => {
                self.defaults = *cells;
                self.heartbeat_events = heartbeats;
                // Thresholds in cell.json still win; re-resolve on the next
                // sighting of each manifest (the shell rescans on reload).
            }
        }
        out
    }

    /// The earliest instant anything can happen without a new input.
    pub fn next_deadline(&self) -> Option<f64> {
        self.timers.peek().map(|Reverse(t)| t.at)
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

    /// The cell's `state.json` as of `now`.
    pub fn snapshot(&self, cell: &str, daemon_pid: u32, now: f64) -> Option<CellState> {
        let c = self.cells.get(cell)?;
        let frozen = c.status == CellStatus::Frozen;
        let agent_health = c
            .agents
            .iter()
            .map(|(name, t)| {
                let state = t.sup.state(frozen);
                let mut extra = Map::new();
                if let Some(status) = &t.sup.last_status {
                    extra.insert("heartbeat_status".into(), Value::String(status.clone()));
                }
                if t.sup.is_due() {
                    extra.insert("revive_due".into(), Value::Bool(true));
                }
                let health = AgentHealth {
                    healthy: state == AgentState::Healthy,
                    last_seen: t.sup.last_seen,
                    revive_count: t.sup.revive_count,
                    state,
                    pid: None,
                    extra,
                };
                (name.to_string(), health)
            })
            .collect();
        Some(CellState {
            cell_uuid: cell.to_string(),
            daemon_pid: Some(daemon_pid),
            last_poll: Some(now),
            agent_health,
            extra: Map::new(),
        })
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

    /// Every agent of every monitored cell is healthy (`daemon --once`).
    pub fn all_healthy(&self) -> bool {
        self.summary().unhealthy == 0
    }

    fn observe_cell(
        &mut self,
        id: CellId,
        manifest: &Manifest,
        previous: Option<&CellState>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let status = manifest.status();
        let known = self.cells.get(&id).map(|c| c.status.clone());
        if let Some(from) = &known
            && *from != status
        {
            out.push(Action::StatusObserved {
                cell: id.clone(),
                from: from.clone(),
                to: status.clone(),
            });
        }
        let tracked = status.is_monitored() || status == CellStatus::Provisioned;
        if !tracked {
            if self.cells.remove(&id).is_some() {
                out.push(Action::Forget { cell: id });
            }
            return;
        }
        if status == CellStatus::Provisioned && !manifest.agents.is_empty() {
            out.push(Action::Activate { cell: id.clone() });
        }
        let defaults = self.defaults.clone();
        let cell = self.cells.entry(id.clone()).or_insert_with(|| CellSup {
            status: status.clone(),
            agents: BTreeMap::new(),
        });
        let mut changed = known.as_ref() != Some(&status);
        cell.status = status.clone();
        let mut wanted: BTreeMap<AgentId, AgentSettings> = BTreeMap::new();
        if status.is_monitored() {
            for agent in &manifest.agents {
                if validate_agent_name(&agent.name).is_ok() {
                    let settings = AgentSettings::resolve(&defaults, manifest, agent);
                    wanted.entry(agent.name.as_str().into()).or_insert(settings);
                }
            }
        }
        let before = cell.agents.len();
        cell.agents.retain(|name, _| wanted.contains_key(name));
        changed |= cell.agents.len() != before;
        let mut to_check = Vec::new();
        for (name, settings) in wanted {
            match cell.agents.get_mut(&name) {
                Some(t) if t.sup.settings == settings => {}
                Some(t) => {
                    t.sup.set_settings(settings);
                    to_check.push(name);
                }
                None => {
                    let mut sup = AgentSup::new(settings, now);
                    if let Some(prev) = previous.and_then(|p| p.agent_health.get(&*name)) {
                        restore(&mut sup, prev, now);
                    }
                    cell.agents
                        .insert(name.clone(), Tracked { sup, timer: None });
                    changed = true;
                    to_check.push(name);
                }
            }
        }
        for name in to_check {
            self.expire(&id, &name, now, out);
        }
        if changed {
            out.push(Action::StateChanged {
                cell: id,
                urgent: true,
            });
        }
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
        let changes = t.sup.heartbeat(hb.seen_at(now), hb.status.as_deref(), now);
        if changes.is_empty() {
            return out;
        }
        self.apply(&cell_id, &agent_id, changes, &mut out);
        self.schedule(&cell_id, &agent_id);
        out
    }

    /// Applies the deadlines of one agent that have come, and arms its
    /// next one.
    fn expire(&mut self, cell: &CellId, agent: &AgentId, now: f64, out: &mut Vec<Action>) {
        let Some(t) = self.tracked(cell, agent) else {
            return;
        };
        let changes = t.sup.advance(now);
        self.apply(cell, agent, changes, out);
        self.schedule(cell, agent);
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

    /// Turns an agent's changes into events and state updates.
    fn apply(&self, cell: &CellId, agent: &AgentId, changes: Vec<Change>, out: &mut Vec<Action>) {
        let mut urgent = None;
        for change in changes {
            let event = |kind| Event::new(kind).with("agent", &**agent);
            match change {
                Change::Stale { last_seen, age_s } => {
                    out.push(Action::Emit {
                        cell: cell.clone(),
                        event: event(EventKind::AgentStale)
                            .with("last_seen", last_seen.map_or(Value::Null, Value::from))
                            .with("age_s", age_s),
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
                Change::Due => urgent = Some(true),
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
            }
        }
        if let Some(urgent) = urgent {
            out.push(Action::StateChanged {
                cell: cell.clone(),
                urgent,
            });
        }
    }
}

/// Seeds an agent from the `state.json` of a previous daemon, so a restart
/// neither repeats `agent_stale` nor forgets revive counts.
fn restore(sup: &mut AgentSup, prev: &AgentHealth, now: f64) {
    sup.revive_count = prev.revive_count;
    sup.last_seen = prev.last_seen;
    sup.last_status = prev
        .extra
        .get("heartbeat_status")
        .and_then(Value::as_str)
        .map(str::to_string);
    let due = prev.extra.get("revive_due").and_then(Value::as_bool) == Some(true);
    sup.health = match prev.state {
        AgentState::Healthy if prev.last_seen.is_some() => Health::Healthy,
        AgentState::Stale | AgentState::Frozen if due => Health::Due { since: now },
        AgentState::Stale | AgentState::Frozen => Health::Stale { since: now },
        _ => {
            sup.last_seen = None;
            Health::Waiting { since: now }
        }
    };
}

#[cfg(test)]
mod tests;
