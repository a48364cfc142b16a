//! Cell jobs: checkpoints taken off the loop, by a worker process (a 1 GB
//! workspace must not delay another cell's deadline, nor grow the
//! daemon), and the status moves a cell's timers ask for.

use std::time::{Duration, Instant};

use super::*;
use crate::checkpoint::archive::{self, Created};

/// How long a checkpoint waits for the kernel to confirm that the
/// agents it froze are frozen before it archives anyway (and says so).
const FREEZE_CONFIRM: Duration = Duration::from_secs(5);
/// How long `daemon --once` waits for a checkpoint it started.
const ONCE_JOB_LIMIT: Duration = Duration::from_secs(600);

/// Runs `checkpoint-worker` for the cell; killed if the daemon stops.
async fn run_worker(
    root: &std::path::Path,
    cell: &str,
    reason: &str,
    keep: &str,
) -> std::io::Result<Created> {
    let parent = std::process::id().to_string();
    let out = tokio::process::Command::new("/proc/self/exe")
        .arg0("lazarus-pit")
        .arg("--config")
        .arg("/dev/null")
        .arg("--root")
        .arg(root)
        .args([
            "checkpoint-worker",
            cell,
            "--reason",
            reason,
            "--keep",
            keep,
            "--parent",
            &parent,
        ])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.lines().last().unwrap_or("").trim();
        let line = line.strip_prefix("lazarus-pit: ").unwrap_or(line);
        return Err(std::io::Error::other(if line.is_empty() {
            format!("the checkpoint worker ended with {}", out.status)
        } else {
            line.to_string()
        }));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        std::io::Error::other(format!(
            "the checkpoint worker's answer does not parse: {e}"
        ))
    })
}

/// A checkpoint that ran in a worker process.
#[derive(Debug)]
pub(super) struct JobDone {
    cell: CellId,
    reason: &'static str,
    request_id: Option<String>,
    /// Agents whose freeze the kernel did not confirm in time.
    unconfirmed: Vec<String>,
    result: std::io::Result<Created>,
}

pub(super) type JobTx = tokio::sync::mpsc::UnboundedSender<JobDone>;
pub(super) type JobRx = tokio::sync::mpsc::UnboundedReceiver<JobDone>;

impl Shell {
    /// [`Action::Checkpoint`]: the freeze is confirmed on the blocking
    /// pool, then the archive is written by a child process (this binary's
    /// `checkpoint-worker`), so neither its time nor its memory is the
    /// daemon's; the answer comes back as a [`JobDone`].
    pub(super) fn start_checkpoint(
        &mut self,
        cell: CellId,
        reason: &'static str,
        request_id: Option<String>,
        agents: Vec<AgentId>,
    ) {
        let units: Vec<(String, process::Unit)> = agents
            .iter()
            .filter_map(|a| Some((a.to_string(), self.procs.unit(&cell, a)?)))
            .collect();
        let keep = self.cfg.cells.checkpoints_keep.to_string();
        let root = self.root_path.clone();
        let tx = self.jobs_tx.clone();
        tracing::info!("cell {cell}: taking a checkpoint ({reason})");
        self.jobs_running += 1;
        tokio::spawn(async move {
            let unconfirmed = tokio::task::spawn_blocking(move || {
                let until = Instant::now() + FREEZE_CONFIRM;
                units
                    .iter()
                    .filter(|(_, unit)| !unit.wait_frozen(until))
                    .map(|(agent, _)| agent.clone())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let result = run_worker(&root, &cell, reason, &keep).await;
            let _ = tx.send(JobDone {
                cell,
                reason,
                request_id,
                unconfirmed,
                result,
            });
        });
    }

    /// A checkpoint is done: its event, then the core's answer.
    pub(super) fn on_job(&mut self, done: JobDone) {
        self.jobs_running = self.jobs_running.saturating_sub(1);
        let JobDone {
            cell,
            reason,
            request_id,
            unconfirmed,
            result,
        } = done;
        let with_request = |e: Event| match &request_id {
            Some(id) => e.with("request_id", id.as_str()),
            None => e,
        };
        let answer = match result {
            Ok(created) => {
                let mut event = Event::new(EventKind::CheckpointCreated)
                    .with("path", created.path.as_str())
                    .with("bytes", created.bytes)
                    .with("files", created.manifest.files)
                    .with("took_ms", created.took_ms)
                    .with("reason", reason);
                if !created.pruned.is_empty() {
                    event = event.with("pruned", created.pruned.clone());
                }
                if !unconfirmed.is_empty() {
                    event = event.with("not_frozen", unconfirmed);
                }
                tracing::info!(
                    "cell {cell}: checkpoint {} ({} bytes, {} files, {} ms)",
                    created.path,
                    created.bytes,
                    created.manifest.files,
                    created.took_ms
                );
                self.emit(&cell, &with_request(event));
                Ok(created.name)
            }
            Err(e) => {
                tracing::warn!("cell {cell}: checkpoint failed: {e}");
                // A worker that died (killed, out of memory) leaves its temp
                // file; one checkpoint runs per cell, so any there is its.
                if let Ok(dir) = live_cell(&self.root_dir, &cell) {
                    archive::remove_temps(&dir);
                }
                let event = Event::new(EventKind::CheckpointFailed)
                    .with("error", e.to_string())
                    .with("reason", reason);
                self.emit(&cell, &with_request(event));
                Err(e.to_string())
            }
        };
        let now = self.now();
        let actions = self.core.handle(
            Input::Checkpointed {
                cell,
                result: answer,
            },
            now,
        );
        self.execute(actions);
    }

    /// Shutdown with checkpoints under way: their temp files are removed
    /// and their agents thawed now (the worker is killed with its task).
    pub(super) fn abandon_checkpoints(&mut self) {
        for cell in self.core.checkpointing_cells() {
            if let Ok(dir) = live_cell(&self.root_dir, &cell) {
                archive::remove_temps(&dir);
            }
        }
        for (cell, agent) in self.core.held_for_checkpoint() {
            tracing::warn!("cell {cell}: checkpoint abandoned at shutdown; agent {agent} thawed");
            let uid = self.agent_uid(&cell);
            self.procs.freeze(&cell, &agent, false, uid);
        }
    }

    /// `--once`: waits (bounded) for the checkpoints under way.
    pub(super) async fn settle_jobs(&mut self) {
        let until = tokio::time::Instant::now() + ONCE_JOB_LIMIT;
        while self.jobs_running > 0 {
            match tokio::time::timeout_at(until, self.jobs_rx.recv()).await {
                Ok(Some(done)) => self.on_job(done),
                _ => break,
            }
        }
    }

    /// [`Action::MoveCell`]: a cell timer's status move, made like the
    /// CLI's (locked rewrite, `cell_status_changed` with its `reason`),
    /// then read back at once so the core follows it. If an agent holds
    /// the cell's lock, the timer asks again later.
    pub(super) fn move_cell(
        &mut self,
        name: &CellId,
        from: CellStatus,
        to: CellStatus,
        reason: &'static str,
    ) {
        let trigger = match to {
            CellStatus::Frozen => Trigger::Freeze,
            CellStatus::Archived => Trigger::Archive,
            _ => return,
        };
        let root = crate::cell::Root::new(&self.root_path);
        let result = root.cell(name).and_then(|cell| {
            cell.update_within(DAEMON_LOCK_PATIENCE, |m| {
                let now = m.status();
                if now != from {
                    return Ok((false, Vec::new())); // Moved meanwhile.
                }
                let to = transition(&now, trigger)
                    .map_err(|reason| Error::refused(name, trigger.verb(), reason))?;
                m.status = Some(to.clone());
                let event = Event::new(EventKind::CellStatusChanged)
                    .with("from", now.as_str())
                    .with("to", to.as_str())
                    .with("reason", reason)
                    .with("by", "lazarus-pit");
                Ok((true, vec![event]))
            })
        });
        match result {
            Ok(true) => {
                tracing::info!("cell {name}: {from} → {to} ({reason})");
                let until = self.clock.now() + EXPECTED_MOVE_S;
                self.expected_moves
                    .entry(name.clone())
                    .or_default()
                    .push((to, until));
                self.scan_cell(name);
            }
            Ok(false) => self.scan_cell(name),
            Err(e) => tracing::warn!("cell {name}: cannot move it to {to} ({reason}): {e}"),
        }
    }
}
