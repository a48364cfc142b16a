//! The process side of `cell freeze|thaw|archive|destroy|leave`: a status
//! never changes without the agents' processes following (BRIEF 3, 7).
//!
//! With a daemon running, the daemon acts (it sees the edit through
//! inotify) and the command waits until the daemon's record of the cell
//! says it is done — as `systemctl stop` waits for the unit. Without one,
//! the command acts itself on the instances the daemon's records name,
//! with the same proofs (pid, start time and boot; membership of the
//! agent's cgroup) and the same unit (cgroup, or process group).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::Context;
use crate::cell::Cell;
use crate::daemon::process;
use crate::error::{Error, Result};
use crate::records::{CellRecord, Records};
use crate::supervisor::Instance;

/// What the processes of a cell (or of one agent) must come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Every process of every agent stopped by the freezer (or SIGSTOP).
    Frozen,
    /// Running again.
    Thawed,
    /// Every agent's processes gone (archive, destroy).
    Stopped,
    /// That agent's processes gone.
    Left(String),
}

impl Want {
    fn done(&self, record: &CellRecord) -> bool {
        let status = record.status.as_deref();
        match self {
            Want::Frozen => status == Some("frozen"),
            Want::Thawed => status == Some("active"),
            // Nothing running and nothing on its way out (a start in
            // flight has no instance yet, but is being stopped).
            Want::Stopped => {
                matches!(status, Some("archived" | "destroyed"))
                    && record
                        .agents
                        .values()
                        .all(|a| a.instance.is_none() && !a.stopping)
            }
            // The daemon drops an agent from its record once its
            // processes are gone (at once if it had none).
            Want::Left(agent) => !record.agents.contains_key(agent),
        }
    }

    fn what(&self) -> String {
        match self {
            Want::Frozen => "froze the cell's agents".into(),
            Want::Thawed => "thawed the cell's agents".into(),
            Want::Stopped => "stopped the cell's agents".into(),
            Want::Left(agent) => format!("stopped agent {agent}"),
        }
    }
}

/// Makes the processes follow a status change made at `since` (unix
/// seconds). Returns a note for the operator, if there is one to give.
pub fn follow(ctx: &Context, cell: &Cell, want: Want, since: f64) -> Result<Option<String>> {
    let records = Records::open_existing(&ctx.config.daemon, &ctx.root.path)
        .ok()
        .flatten();
    if let Some(pid) = crate::daemon::lock::holder(&ctx.root.path) {
        let Some(records) = records.as_ref().filter(|r| r.claimed_by() == Some(pid)) else {
            return Ok(Some(format!(
                "the daemon (pid {pid}) acts on the agents' processes; its records are not \
                 readable here, so this command cannot confirm it"
            )));
        };
        let stop = matches!(want, Want::Stopped | Want::Left(_));
        let limit = CONFIRM
            + if stop {
                ctx.config.cells.kill_grace
            } else {
                Duration::ZERO
            };
        // "Nothing of it runs" is true of an old record too; a status that
        // flips (freeze, thaw) needs one written after the change.
        let fresh = !stop;
        let daemon_runs = || crate::daemon::lock::holder(&ctx.root.path) == Some(pid);
        match wait_for_record(records, &cell.id, since, fresh, limit, daemon_runs, |r| {
            want.done(r)
        }) {
            Waited::Done => return Ok(None),
            // It went away before it was done: do it here.
            Waited::DaemonGone => {}
            Waited::TimedOut => {
                return Err(Error::refused(
                    &cell.id,
                    "confirm the change",
                    format!(
                        "the daemon (pid {pid}) has not confirmed within {:.0} s that it {}; \
                         `lazarus-pit status {}` shows where it stands",
                        limit.as_secs_f64(),
                        want.what(),
                        cell.id
                    ),
                ));
            }
        }
    }
    let Some(record) = records.and_then(|r| r.read_cell(&cell.id)) else {
        return Ok(None); // No daemon ever started anything here.
    };
    if record.boot_id != process::boot_id() {
        return Ok(None); // Another boot: none of its processes survives.
    }
    let uid = process::agent_uid(&cell.dir);
    // A container is controlled through podman, by its name.
    let container = |agent: &str| {
        record
            .agents
            .get(agent)
            .filter(|a| a.control.as_deref() == Some("podman"))
            .map(|_| process::Container::of(&ctx.config.isolation, &cell.id, agent))
    };
    let instances: Vec<(String, Instance)> = record
        .agents
        .iter()
        .filter(|(name, _)| match &want {
            Want::Left(agent) => *name == agent,
            _ => true,
        })
        .filter_map(|(name, a)| {
            let i = a.instance.as_ref()?;
            let instance = Instance {
                pid: i.pid,
                start_time: i.start_time,
            };
            process::is_alive(instance).then(|| (name.clone(), instance))
        })
        .collect();
    if instances.is_empty() {
        return Ok(None);
    }
    match want {
        Want::Frozen | Want::Thawed => {
            let frozen = want == Want::Frozen;
            for (agent, instance) in &instances {
                process::freeze_recorded(&cell.id, agent, *instance, frozen, uid, container(agent))
                    .map_err(|e| {
                        Error::refused(
                            &cell.id,
                            if frozen { "freeze" } else { "thaw" },
                            format!("agent {agent} (pid {}): {e}", instance.pid),
                        )
                    })?;
            }
        }
        Want::Stopped | Want::Left(_) => {
            let grace = ctx.config.cells.kill_grace;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let stops: Vec<_> = instances
                    .iter()
                    .map(|(agent, instance)| {
                        let box_ = container(agent);
                        let (cell, agent, instance) = (cell.id.clone(), agent.clone(), *instance);
                        tokio::spawn(async move {
                            process::stop_recorded(&cell, &agent, instance, grace, uid, box_).await;
                        })
                    })
                    .collect();
                for stop in stops {
                    let _ = stop.await;
                }
            });
            if let Some((agent, instance)) = instances.iter().find(|(_, i)| process::is_alive(*i)) {
                return Err(Error::refused(
                    &cell.id,
                    "stop its agents",
                    format!(
                        "agent {agent} (pid {}) is still running (not allowed to signal it?)",
                        instance.pid
                    ),
                ));
            }
        }
    }
    Ok(Some(format!(
        "no daemon runs: {} here ({} instance{})",
        want.what(),
        instances.len(),
        if instances.len() == 1 { "" } else { "s" }
    )))
}

/// The daemon's wall clock is its monotonic one plus an offset it
/// corrects only on steps beyond a second: its stamps may trail ours by
/// that much.
const CLOCK_SLACK_S: f64 = crate::supervisor::CLOCK_STEP_S;

/// How long the daemon may take to confirm, beyond `kill_grace` for stops:
/// it writes a changed record within a fraction of a second.
const CONFIRM: Duration = Duration::from_secs(5);

/// How a wait for the daemon ended.
pub(crate) enum Waited {
    Done,
    /// The daemon let go of the root's lock first.
    DaemonGone,
    TimedOut,
}

/// Waits until the daemon's record of `cell` satisfies `done` — one
/// written at or after `since` if `fresh` (a status that flips back and
/// forth needs a new word) —, or `limit` passed, or the daemon is gone
/// (`daemon_runs`). Woken by inotify on the records' directory (records
/// are replaced by rename); looked at again every 250 ms in any case.
pub(crate) fn wait_for_record(
    records: &Records,
    cell: &str,
    since: f64,
    fresh: bool,
    limit: Duration,
    daemon_runs: impl Fn() -> bool,
    mut done: impl FnMut(&CellRecord) -> bool,
) -> Waited {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let until = Instant::now() + limit;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
    if let Some(i) = &inotify {
        let _ = i.add_watch(
            &records.path().join("cells"),
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        );
    }
    loop {
        if records
            .read_cell(cell)
            .is_some_and(|r| done(&r) && (r.written_at >= since - CLOCK_SLACK_S || !fresh))
        {
            return Waited::Done;
        }
        if !daemon_runs() {
            return Waited::DaemonGone;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Waited::TimedOut;
        }
        let slice = left.min(Duration::from_millis(250));
        match &inotify {
            Some(i) => {
                let mut fds = [nix::poll::PollFd::new(
                    i.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let ms = u16::try_from(slice.as_millis()).unwrap_or(250);
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
                let _ = i.read_events();
            }
            None => std::thread::sleep(slice),
        }
    }
}
