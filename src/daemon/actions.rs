//! Actions: the core's decisions carried out — events, state writes,
//! activation, and every process operation through the one seam
//! ([`super::process::Procs`]) — and the answers fed back to it.

use std::sync::Arc;

use super::*;

impl Shell {
    fn isolation_cfg(&self) -> Arc<crate::config::IsolationConfig> {
        Arc::new(self.cfg.isolation.clone())
    }

    /// Carries out the core's actions. Answers the core owes itself at
    /// once (nothing to kill, a spawn's result) are fed back here, in order.
    pub(super) fn execute(&mut self, actions: Vec<Action>) {
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
                Action::Forget {
                    cell,
                    record,
                    state,
                } => {
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
                    // Its last state.json says how it was left (not if the
                    // directory is gone: nothing is written into it).
                    let state = state.filter(|_| !gone);
                    self.publisher.forget(cell.clone(), record, state);
                    self.procs.release(&cell, None);
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
                    let heartbeat_token = self
                        .heartbeat_secret
                        .as_ref()
                        .map(|s| s.agent_token(&cell, &agent));
                    self.procs.spawn(
                        &self.root_dir,
                        process::Start {
                            heartbeat_token,
                            cell,
                            agent,
                            spec,
                            attempt,
                            reason,
                            substitute_for,
                            pass_env: self.cfg.cells.pass_env.clone().into(),
                            isolation: self.isolation_cfg(),
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
                    self.procs.release(&cell, Some(&agent));
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
                    // A container is controlled through podman, by name.
                    let container = (self.core.isolation(&cell, &agent)
                        == Some(crate::cell::manifest::Isolation::Podman))
                    .then(|| super::podman::Container::of(&self.cfg.isolation, &cell, &agent));
                    // The level a previous daemon built, from its records.
                    let isolation = self
                        .records
                        .read_cell(&cell)
                        .and_then(|r| r.agents.get(&*agent)?.isolation.clone())
                        .and_then(|l| crate::cell::manifest::Isolation::parse(&l));
                    if self
                        .procs
                        .adopt(&cell, &agent, instance, uid, container, isolation)
                    {
                        tracing::info!("cell {cell}: adopted agent {agent} (pid {})", instance.pid);
                    }
                }
                Action::Checkpoint {
                    cell,
                    reason,
                    request_id,
                    agents,
                } => self.start_checkpoint(cell, reason, request_id, agents),
                Action::MoveCell {
                    cell,
                    from,
                    to,
                    reason,
                } => self.move_cell(&cell, from, to, reason),
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
    pub(super) fn on_proc(&mut self, msg: ProcMsg) {
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
    pub(super) async fn settle(&mut self) {
        let limit = self.cfg.cells.kill_grace + Duration::from_secs(5);
        let until = tokio::time::Instant::now() + limit;
        while self.core.reviving() {
            match tokio::time::timeout_at(until, self.proc_rx.recv()).await {
                Ok(Some(msg)) => self.on_proc(msg),
                _ => break,
            }
        }
    }
}

/// Policy `substitute`: a handoff packet in the substitute's
/// `bus/inbox/`, written atomically, readable by the substitute's user.
pub(super) fn write_handoff(
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
        &crate::json::document(&packet),
        0o644,
        cell_owner(&cell_dir)?,
    )
}

/// The safety-net rescan's timer: first tick one period from now.
/// The cgroups agents run in, if the daemon can create them (said once
/// in the log either way, see [`cgroup`]).
///
/// A base that `[daemon] cgroup` names explicitly and that cannot be used
/// is an error (the daemon does not start), never a quiet downgrade.
pub(super) fn process_control(
    cfg: &Config,
    root: &std::path::Path,
) -> Result<Option<cgroup::Cgroups>> {
    use crate::config::CgroupSetting;
    let base = match &cfg.daemon.cgroup {
        CgroupSetting::Off => {
            tracing::info!(
                "[daemon] cgroup = \"off\": agents are controlled by process group \
                 (a process that leaves its group escapes freeze and stop)"
            );
            return Ok(None);
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
            Ok(Some(cgroups))
        }
        Err(e) if let Some(base) = base => Err(Error::Io(std::io::Error::other(format!(
            "[daemon] cgroup = {:?} cannot be used: {e} (use \"auto\", \"off\", or a cgroup \
             the daemon may create groups in)",
            base.display().to_string()
        )))),
        Err(e) => {
            tracing::warn!(
                "cgroups are not available ({e}): agents are controlled by process group \
                 (a process that leaves its group escapes freeze and stop)"
            );
            Ok(None)
        }
    }
}
