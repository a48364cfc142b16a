//! A cell's own decisions: its timers (`idle_timeout`, `max_duration`,
//! `checkpoint_interval`), the checkpoints it takes, and what a restore
//! means for its running agents. Pure, like the rest of the core: the
//! shell takes the checkpoint and rewrites `cell.json`
//! ([`Action::Checkpoint`], [`Action::MoveCell`]).

use std::cmp::Reverse;

use super::timers::{self, CellDue, CellTimers};
use super::*;
use crate::records::CheckpointRecord;

/// How long a move a timer asked for may take to be seen (the shell
/// rewrites `cell.json` and reads it back at once; an agent holding the
/// cell's lock delays it) before the timer asks again.
const MOVE_RETRY_S: f64 = 10.0;

/// How many answers to checkpoint requests the record keeps.
const ANSWERS_KEPT: usize = 16;

/// A checkpoint being taken.
#[derive(Debug, Clone)]
pub(super) struct Job {
    reason: &'static str,
    request_id: Option<String>,
    /// Requests that came while another checkpoint ran: this one, taken
    /// after them all, answers them too.
    also: Vec<String>,
    /// `max_duration` with `checkpoint_on_archive`: archive once it is done.
    then_archive: bool,
}

/// Takes the timers of a manifest just read into the cell; on first sight,
/// also what they count from (`created_at`; the last checkpoint the
/// daemon's record names).
pub(super) fn observe_timers(
    cell: &mut CellSup,
    manifest: &Manifest,
    previous: Option<&CellRecord>,
    first: bool,
    status: &CellStatus,
    now: f64,
    wall_offset: f64,
) {
    cell.timers = CellTimers::of(manifest);
    if first {
        if let Some(created) = manifest
            .created_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            let wall = created.timestamp_millis() as f64 / 1000.0;
            cell.clock.created = wall - wall_offset;
        }
        if let Some(last) = previous.and_then(|p| p.checkpoint.clone()) {
            cell.clock.last_checkpoint = (last.at - wall_offset).min(now);
            cell.last_checkpoint = Some(last);
        }
    }
    if cell.status != *status {
        // The move a timer asked for (or any other) is seen.
        cell.clock.busy_until = f64::NEG_INFINITY;
        if *status == CellStatus::Active {
            // Thawed or activated: idleness counts afresh.
            cell.clock.activity = now;
        }
    }
}

/// A timer's move of the cell to `to`; the timers wait for it to be seen.
fn move_cell(
    id: &CellId,
    c: &mut CellSup,
    to: CellStatus,
    reason: &'static str,
    now: f64,
) -> Action {
    c.clock.busy_until = now + MOVE_RETRY_S;
    Action::MoveCell {
        cell: id.clone(),
        from: c.status.clone(),
        to,
        reason,
    }
}

impl Supervisor {
    /// Pushes a heap entry for the cell's next own deadline unless one at
    /// or before it is live.
    pub(super) fn schedule_cell(&mut self, id: &CellId) {
        let Some(c) = self.cells.get_mut(id) else {
            return;
        };
        let Some((at, _)) = timers::next(&c.timers, &c.clock, &c.status, c.job.is_some()) else {
            return;
        };
        if c.timer.is_some_and(|live| live <= at) {
            return;
        }
        c.timer = Some(at);
        self.cell_timers.push(Reverse(Timer {
            at,
            cell: id.clone(),
            agent: "".into(),
        }));
    }

    /// Acts on every cell deadline that has come by `now`.
    pub(super) fn expire_cells(&mut self, now: f64, out: &mut Vec<Action>) {
        while self
            .cell_timers
            .peek()
            .is_some_and(|Reverse(t)| t.at <= now)
        {
            let Some(Reverse(timer)) = self.cell_timers.pop() else {
                break;
            };
            let id = timer.cell;
            let Some(c) = self
                .cells
                .get_mut(&id)
                .filter(|c| c.timer == Some(timer.at))
            else {
                continue; // An obsolete entry.
            };
            c.timer = None;
            match timers::next(&c.timers, &c.clock, &c.status, c.job.is_some()) {
                Some((at, due)) if at <= now => self.cell_due(&id, due, now, out),
                _ => {}
            }
            self.schedule_cell(&id);
        }
    }

    fn cell_due(&mut self, id: &CellId, due: CellDue, now: f64, out: &mut Vec<Action>) {
        let on_archive = self.defaults.checkpoint_on_archive;
        let Some(c) = self.cells.get_mut(id) else {
            return;
        };
        match due {
            CellDue::Idle => out.push(move_cell(id, c, CellStatus::Frozen, "idle", now)),
            CellDue::MaxDuration if on_archive && c.status != CellStatus::Provisioned => {
                self.begin_checkpoint(id, "archive", None, true, now, out);
            }
            CellDue::MaxDuration => {
                out.push(move_cell(id, c, CellStatus::Archived, "max_duration", now));
            }
            CellDue::Checkpoint => self.begin_checkpoint(id, "interval", None, false, now, out),
        }
    }

    /// An operator's `checkpoint`: now, or right after the one running.
    pub(super) fn request_checkpoint(
        &mut self,
        id: &CellId,
        request_id: Option<String>,
        reason: &'static str,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.cells.get_mut(id) else {
            return;
        };
        if c.job.is_some() {
            // One taken after the request, not the one already under way
            // (one for every request that comes meanwhile).
            c.queued.push((request_id.unwrap_or_default(), reason));
            return;
        }
        self.begin_checkpoint(id, reason, request_id, false, now, out);
    }

    /// Holds the cell's agents (frozen, no deadline runs) and asks the
    /// shell for the checkpoint.
    fn begin_checkpoint(
        &mut self,
        id: &CellId,
        reason: &'static str,
        request_id: Option<String>,
        then_archive: bool,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.cells.get_mut(id) else {
            return;
        };
        let mut agents = Vec::new();
        for (name, t) in &mut c.agents {
            if !t.sup.held {
                t.sup.hold(true, now);
                if let Some(instance) = t.sup.instance {
                    out.push(Action::Freeze {
                        cell: id.clone(),
                        agent: name.clone(),
                        instance,
                        frozen: true,
                    });
                }
            }
            if t.sup.instance.is_some() {
                agents.push(name.clone());
            }
        }
        c.job = Some(Job {
            reason,
            request_id: request_id.clone(),
            also: Vec::new(),
            then_archive,
        });
        out.push(Action::Checkpoint {
            cell: id.clone(),
            reason,
            request_id,
            agents,
        });
        out.push(Action::StateChanged {
            cell: id.clone(),
            urgent: true,
        });
    }

    /// The checkpoint is written (or failed): the agents run on, unless
    /// the cell was frozen meanwhile; `max_duration` archives now.
    pub(super) fn checkpointed(
        &mut self,
        id: &CellId,
        result: Result<String, String>,
        now: f64,
        out: &mut Vec<Action>,
    ) {
        let wall = self.wall(now);
        let Some(c) = self.cells.get_mut(id) else {
            return;
        };
        let Some(job) = c.job.take() else {
            return;
        };
        c.clock.last_checkpoint = now;
        let (name, error) = match result {
            Ok(name) => (Some(name), None),
            Err(e) => (None, Some(e)),
        };
        let done = CheckpointRecord {
            at: wall,
            reason: job.reason.to_string(),
            request_id: job.request_id.clone(),
            name,
            error,
        };
        for request in job.request_id.iter().chain(&job.also) {
            if c.answered.len() >= ANSWERS_KEPT {
                c.answered.remove(0);
            }
            c.answered.push(CheckpointRecord {
                request_id: Some(request.clone()),
                ..done.clone()
            });
        }
        c.last_checkpoint = Some(done);
        let mut released = Vec::new();
        if c.status == CellStatus::Active {
            for (agent, t) in &mut c.agents {
                let changes = t.sup.hold(false, now);
                if let Some(instance) = t.sup.instance {
                    out.push(Action::Freeze {
                        cell: id.clone(),
                        agent: agent.clone(),
                        instance,
                        frozen: false,
                    });
                }
                released.push((agent.clone(), changes));
            }
        }
        if job.then_archive && matches!(c.status, CellStatus::Active | CellStatus::Frozen) {
            out.push(move_cell(id, c, CellStatus::Archived, "max_duration", now));
        }
        let queued = std::mem::take(&mut c.queued);
        for (agent, changes) in released {
            self.settle(id, &agent, changes, now, out);
        }
        out.push(Action::StateChanged {
            cell: id.clone(),
            urgent: true,
        });
        if let Some(((first, reason), rest)) = queued.split_first() {
            let request = Some(first.clone()).filter(|r| !r.is_empty());
            self.begin_checkpoint(id, reason, request, false, now, out);
            if let Some(job) = self.cells.get_mut(id).and_then(|c| c.job.as_mut()) {
                job.also = rest
                    .iter()
                    .map(|(r, _)| r.clone())
                    .filter(|r| !r.is_empty())
                    .collect();
            }
        }
        self.schedule_cell(id);
    }

    /// The cells a checkpoint is being taken of.
    pub fn checkpointing_cells(&self) -> Vec<CellId> {
        self.cells
            .iter()
            .filter(|(_, c)| c.job.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The agents held (and frozen) for a checkpoint under way, in cells
    /// that are active: what a daemon that stops now must thaw.
    pub fn held_for_checkpoint(&self) -> Vec<(CellId, AgentId)> {
        let mut out = Vec::new();
        for (id, c) in &self.cells {
            if c.job.is_some() && c.status == CellStatus::Active {
                for (agent, t) in &c.agents {
                    if t.sup.instance.is_some() {
                        out.push((id.clone(), agent.clone()));
                    }
                }
            }
        }
        out
    }

    /// A restore replaced the files the cell's running instances work on:
    /// each is started again — now, or when its cell is thawed.
    pub(super) fn restored(&mut self, id: &CellId, now: f64, out: &mut Vec<Action>) {
        let Some(c) = self.cells.get_mut(id) else {
            return;
        };
        let mut now_due = Vec::new();
        for (agent, t) in &mut c.agents {
            if t.sup.instance.is_none() || !t.sup.settings.can_start() {
                continue;
            }
            if t.sup.held {
                t.sup.restart = true;
            } else {
                now_due.push(agent.clone());
            }
        }
        for agent in now_due {
            if let Some(t) = self.tracked(id, &agent) {
                let changes = vec![t.sup.restart_after_restore(now)];
                self.settle(id, &agent, changes, now, out);
            }
        }
        out.push(Action::StateChanged {
            cell: id.clone(),
            urgent: true,
        });
    }
}
