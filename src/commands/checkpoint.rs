//! `checkpoint CELL`, `checkpoint --list CELL`, `restore CELL CHECKPOINT`.
//!
//! With a daemon supervising the cell, the daemon takes the checkpoint (it
//! freezes the agents and holds their deadlines meanwhile, so nothing goes
//! stale because the snapshot took long): the command hands it a request
//! through the inbox of `state_dir` and waits for the daemon's record to
//! name the result. Without one, the command freezes the instances the
//! records name itself, with the same proofs, and thaws them after.
//!
//! A restore is done here, under the cell's lock, on a cell whose agents
//! do not run (frozen, archived, or provisioned); the daemon is told (a
//! notice in its inbox, read when it starts if it is down) so the frozen
//! instances, which work on files that are gone, are started again when
//! the cell is thawed.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::Context;
use super::processes::{Want, follow};
use crate::cell::Cell;
use crate::cell::lifecycle::{CellStatus, Trigger};
use crate::checkpoint::{self, archive, restore};
use crate::cli::{CheckpointArgs, RestoreArgs};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::records::{Records, Request, RequestAction};
use crate::supervisor::Instance;

/// How long `checkpoint` waits for the daemon to take one.
const DAEMON_PATIENCE: Duration = Duration::from_secs(3600);
/// How long it waits for the daemon to start on the request.
const TAKEN_PATIENCE: Duration = Duration::from_secs(10);

pub fn run(ctx: &Context, args: CheckpointArgs) -> Result<ExitCode> {
    let cell = ctx.root.resolve(&args.cell)?;
    if args.list {
        return list(ctx, &cell);
    }
    let taken = take(ctx, &cell, "manual")?;
    if ctx.json {
        super::print_json(&taken);
    } else {
        for note in taken["notes"].as_array().into_iter().flatten() {
            eprintln!("{}: note: {}", cell.id, note.as_str().unwrap_or_default());
        }
        println!(
            "{}: {} ({} files, archive {} bytes{})",
            cell.id,
            taken["path"].as_str().unwrap_or_default(),
            taken["files"],
            taken["bytes"],
            taken["took_ms"]
                .as_u64()
                .map(|ms| format!(", {ms} ms"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list(ctx: &Context, cell: &Cell) -> Result<ExitCode> {
    let listed = checkpoint::list(&cell.dir)?;
    if ctx.json {
        super::print_json(&json!({ "cell": cell.id, "checkpoints": listed }));
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        println!("{}: no checkpoints", cell.id);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:<24} {:>10} {:>7}  REASON",
        "CHECKPOINT", "CREATED", "SIZE", "FILES"
    );
    for c in listed {
        match &c.manifest {
            Some(m) => println!(
                "{:<32} {:<24} {:>10} {:>7}  {}",
                c.name,
                crate::text::escape(&m.created_at),
                human_size(c.size),
                m.files,
                crate::text::escape(&m.reason)
            ),
            None => println!(
                "{:<32} {:<24} {:>10} {:>7}  unreadable: {}",
                c.name,
                "?",
                human_size(c.size),
                "?",
                c.problem.as_deref().unwrap_or_default()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Takes a checkpoint of `cell` (through its daemon if one supervises
/// it); returns what `--json` prints.
pub(crate) fn take(ctx: &Context, cell: &Cell, reason: &str) -> Result<serde_json::Value> {
    let status = cell.read_manifest()?.status();
    if status == CellStatus::Destroyed {
        return Err(Error::refused(
            &cell.id,
            "take a checkpoint",
            "it is destroyed: its workspace is gone",
        ));
    }
    let records = Records::open_existing(&ctx.config.daemon, &ctx.root.path)
        .ok()
        .flatten();
    let daemon = crate::daemon::lock::holder(&ctx.root.path)
        .filter(|pid| records.as_ref().and_then(Records::claimed_by) == Some(*pid));
    if let (Some(pid), Some(records)) = (daemon, records.as_ref())
        && status.is_monitored()
    {
        return through_daemon(ctx, cell, records, pid, reason);
    }
    if let Some(pid) = crate::daemon::lock::holder(&ctx.root.path)
        && status.is_monitored()
    {
        return Err(Error::refused(
            &cell.id,
            "take a checkpoint",
            format!(
                "the daemon (pid {pid}) supervises it, and its records are not readable here \
                 (give this command the daemon's config, --config or LAZARUS_CONFIG)"
            ),
        ));
    }
    locally(ctx, cell, &status, records.as_ref(), reason)
}

fn through_daemon(
    ctx: &Context,
    cell: &Cell,
    records: &Records,
    pid: u32,
    reason: &str,
) -> Result<serde_json::Value> {
    let request_id = format!("checkpoint_{}", uuid::Uuid::new_v4().simple());
    let request = Request {
        action: RequestAction::Checkpoint,
        cell: cell.id.clone(),
        agent: String::new(),
        request_id: Some(request_id.clone()),
        // Before an archive (`checkpoint_on_archive`), or an operator's.
        to: (reason == "archive").then(|| "archive".to_string()),
        by: super::create::current_user(),
        at: crate::cell::now_rfc3339(),
    };
    records.post(&request).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot hand the request to the daemon: {e}"),
        ))
    })?;
    let asked = std::time::Instant::now();
    let daemon_runs = || crate::daemon::lock::holder(&ctx.root.path) == Some(pid);
    let answered = |r: &crate::records::CellRecord| {
        r.checkpoint
            .iter()
            .chain(&r.answered)
            .find(|c| c.request_id.as_deref() == Some(request_id.as_str()))
            .cloned()
    };
    // First, that the daemon took the request (it says so in its record
    // within moments); then, however long the archive takes, the answer.
    let taken = super::processes::wait_for_record(
        records,
        &cell.id,
        0.0,
        false,
        TAKEN_PATIENCE,
        daemon_runs,
        |r| r.checkpointing || answered(r).is_some(),
    );
    if let super::processes::Waited::TimedOut = taken {
        return Err(Error::refused(
            &cell.id,
            "take a checkpoint",
            format!(
                "the daemon (pid {pid}) has not started on the request within {} s (does it \
                 supervise this cell? its log says why not)",
                TAKEN_PATIENCE.as_secs()
            ),
        ));
    }
    let mut answer = None;
    let waited = super::processes::wait_for_record(
        records,
        &cell.id,
        0.0,
        false,
        DAEMON_PATIENCE,
        daemon_runs,
        |r| {
            answer = answered(r);
            answer.is_some()
        },
    );
    let Some(done) = answer else {
        return Err(Error::refused(
            &cell.id,
            "take a checkpoint",
            match waited {
                super::processes::Waited::DaemonGone => format!(
                    "the daemon (pid {pid}) stopped before the checkpoint was done; none was kept"
                ),
                _ => format!("the daemon (pid {pid}) has not answered"),
            },
        ));
    };
    match (done.name, done.error) {
        (Some(name), _) => {
            let (file, size) = checkpoint::open(&cell.dir, &name)?;
            let manifest = checkpoint::read_manifest(file)?;
            Ok(json!({
                "cell": cell.id,
                "path": format!("{}/{name}", checkpoint::DIR),
                "name": name,
                "bytes": size,
                "files": manifest.files,
                "took_ms": u64::try_from(asked.elapsed().as_millis()).unwrap_or(u64::MAX),
                "notes": manifest.notes,
                "by": "daemon",
            }))
        }
        (None, error) => Err(Error::refused(
            &cell.id,
            "take a checkpoint",
            error.unwrap_or_else(|| "the daemon gave no reason".into()),
        )),
    }
}

/// No daemon supervises the cell: freeze what its records name as
/// running, archive, thaw.
fn locally(
    ctx: &Context,
    cell: &Cell,
    status: &CellStatus,
    records: Option<&Records>,
    reason: &str,
) -> Result<serde_json::Value> {
    let running = if *status == CellStatus::Active {
        running_instances(ctx, cell, records)
    } else {
        Vec::new()
    };
    let uid = crate::daemon::process::agent_uid(&cell.dir);
    let mut frozen = Vec::new();
    let mut failure = None;
    for (agent, instance, container) in &running {
        match crate::daemon::process::freeze_recorded(
            &cell.id,
            agent,
            *instance,
            true,
            uid,
            container.clone(),
        ) {
            Ok(true) => frozen.push((agent, instance, container)),
            Ok(false) => {}
            Err(e) => {
                failure = Some(format!("cannot freeze agent {agent}: {e}"));
                break;
            }
        }
    }
    let created = match failure {
        Some(why) => Err(std::io::Error::other(why)),
        None => archive::create(
            &cell.dir,
            &archive::Options {
                cell_id: cell.id.clone(),
                reason: reason.to_string(),
                keep: ctx.config.cells.checkpoints_keep as usize,
                owner: crate::daemon::cell_owner(&cell.dir).ok().flatten(),
            },
        ),
    };
    for (agent, instance, container) in frozen {
        let _ = crate::daemon::process::freeze_recorded(
            &cell.id,
            agent,
            *instance,
            false,
            uid,
            container.clone(),
        );
    }
    let by = super::create::current_user();
    match created {
        Ok(c) => {
            let mut event = Event::new(EventKind::CheckpointCreated)
                .with("path", c.path.as_str())
                .with("bytes", c.bytes)
                .with("files", c.manifest.files)
                .with("took_ms", c.took_ms)
                .with("reason", reason)
                .with("by", by.as_str());
            if !c.pruned.is_empty() {
                event = event.with("pruned", c.pruned.clone());
            }
            cell.append_events(&[event])?;
            Ok(json!({
                "cell": cell.id,
                "path": c.path,
                "name": c.name,
                "bytes": c.bytes,
                "files": c.manifest.files,
                "took_ms": c.took_ms,
                "pruned": c.pruned,
                "notes": c.manifest.notes,
            }))
        }
        Err(e) => {
            let _ = cell.append_events(&[Event::new(EventKind::CheckpointFailed)
                .with("error", e.to_string())
                .with("reason", reason)
                .with("by", by.as_str())]);
            Err(Error::refused(&cell.id, "take a checkpoint", e.to_string()))
        }
    }
}

type Running = Vec<(String, Instance, Option<crate::daemon::process::Container>)>;

/// The live instances the daemon's records name for this cell (this boot,
/// pid and start time verified).
fn running_instances(ctx: &Context, cell: &Cell, records: Option<&Records>) -> Running {
    let Some(record) = records.and_then(|r| r.read_cell(&cell.id)) else {
        return Vec::new();
    };
    if record.boot_id != crate::daemon::process::boot_id() {
        return Vec::new();
    }
    record
        .agents
        .iter()
        .filter_map(|(name, a)| {
            let i = a.instance.as_ref()?;
            let instance = Instance {
                pid: i.pid,
                start_time: i.start_time,
            };
            let container = (a.control.as_deref() == Some("podman")).then(|| {
                crate::daemon::process::Container::of(&ctx.config.isolation, &cell.id, name)
            });
            crate::daemon::process::is_alive(instance).then(|| (name.clone(), instance, container))
        })
        .collect()
}

/// `checkpoint-worker`: the daemon's checkpoint, in a process of its own
/// (the daemon has frozen the agents). Prints the result as JSON.
pub fn worker(ctx: &Context, args: crate::cli::WorkerArgs) -> Result<ExitCode> {
    // Killed with the daemon, also if it is killed itself: nothing of a
    // checkpoint it can no longer record is written on behalf of nobody.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != args.parent as i32 {
        return Err(Error::Usage(
            "checkpoint-worker is the daemon's own (its parent is gone)".into(),
        ));
    }
    let cell = ctx.root.cell(&args.cell)?;
    let created = archive::create(
        &cell.dir,
        &archive::Options {
            cell_id: cell.id.clone(),
            reason: args.reason,
            keep: args.keep,
            owner: crate::daemon::cell_owner(&cell.dir).ok().flatten(),
        },
    )?;
    println!(
        "{}",
        serde_json::to_string(&created).map_err(|e| Error::Io(std::io::Error::other(e)))?
    );
    Ok(ExitCode::SUCCESS)
}

/// `restore CELL CHECKPOINT|latest [--force]`.
pub fn restore(ctx: &Context, args: RestoreArgs) -> Result<ExitCode> {
    let cell = ctx.root.resolve(&args.cell)?;
    let status = cell.read_manifest()?.status();
    let refuse = |why: String| Error::refused(&cell.id, "restore a checkpoint", why);
    match status {
        CellStatus::Frozen | CellStatus::Archived | CellStatus::Provisioned => {}
        CellStatus::Active if args.force => {}
        CellStatus::Active => {
            return Err(refuse(format!(
                "it is active, and its agents would run on files replaced under them: \
                 freeze it first (`lazarus-pit cell freeze {}`), or pass --force to \
                 freeze it now",
                cell.id
            )));
        }
        other => return Err(refuse(format!("it is {other}"))),
    }
    // The checkpoint is found before anything is frozen.
    let name = match args.checkpoint.as_str() {
        "latest" => {
            checkpoint::latest(&cell.dir)?.ok_or_else(|| refuse("it has no checkpoints".into()))?
        }
        given => given
            .strip_prefix(&format!("{}/", checkpoint::DIR))
            .unwrap_or(given)
            .to_string(),
    };
    checkpoint::open(&cell.dir, &name).map_err(|e| refuse(e.to_string()))?;
    let forced = status == CellStatus::Active;
    if forced {
        let since = super::status::unix_now();
        super::lifecycle::apply(ctx, &cell, Trigger::Freeze)?;
        if let Some(note) = follow(ctx, &cell, Want::Frozen, since)? {
            eprintln!("{}: {note}", cell.id);
        }
    }
    let result = restore_frozen(ctx, &cell, &name, status, forced);
    if result.is_err() && forced {
        // Nothing was restored: the cell goes back to what it was.
        let since = super::status::unix_now();
        if super::lifecycle::apply(ctx, &cell, Trigger::Thaw).is_ok() {
            let _ = follow(ctx, &cell, Want::Thawed, since);
            eprintln!("{}: thawed again (nothing was restored)", cell.id);
        }
    }
    result
}

/// The restore itself, of a cell whose agents do not run.
fn restore_frozen(
    ctx: &Context,
    cell: &Cell,
    name: &str,
    status: CellStatus,
    forced: bool,
) -> Result<ExitCode> {
    // Serialised against every rewrite of cell.json (a thaw waits).
    let _lock = cell.dir.lock(crate::cell::CLI_LOCK_PATIENCE)?;
    let now = cell.read_manifest()?.status();
    if now != status && !(forced && now == CellStatus::Frozen) {
        return Err(Error::refused(
            &cell.id,
            "restore a checkpoint",
            format!("it became {now} meanwhile"),
        ));
    }
    let records = Records::open_existing(&ctx.config.daemon, &ctx.root.path)
        .ok()
        .flatten();
    let daemon = crate::daemon::lock::holder(&ctx.root.path)
        .filter(|pid| records.as_ref().and_then(Records::claimed_by) == Some(*pid));
    if daemon.is_some()
        && records
            .as_ref()
            .and_then(|r| r.read_cell(&cell.id))
            .is_some_and(|r| r.checkpointing)
    {
        return Err(Error::refused(
            &cell.id,
            "restore a checkpoint",
            "the daemon is taking a checkpoint of it; try again when it is done",
        ));
    }
    let owner = crate::daemon::cell_owner(&cell.dir).ok().flatten();
    let restored = restore::restore(&cell.dir, &cell.id, name, owner).map_err(|e| match e {
        restore::RestoreError::Refused(why) => Error::refused(
            &cell.id,
            format!("restore {name}"),
            format!("{why}; nothing was changed"),
        ),
        restore::RestoreError::Io(e) => Error::refused(
            &cell.id,
            format!("restore {name}"),
            format!("{e}; nothing was changed"),
        ),
    })?;
    let by = super::create::current_user();
    let mut stopped = false;
    if now == CellStatus::Frozen {
        match (&records, daemon) {
            // The daemon starts the frozen instances again on the
            // restored files when the cell is thawed.
            (Some(records), Some(_)) => {
                let notice = Request {
                    action: RequestAction::Restored,
                    cell: cell.id.clone(),
                    agent: String::new(),
                    request_id: None,
                    to: None,
                    by: by.clone(),
                    at: crate::cell::now_rfc3339(),
                };
                if let Err(e) = records.post(&notice) {
                    eprintln!(
                        "warning: cannot tell the daemon about the restore ({e}): restart the \
                         cell's agents with `lazarus-pit revive`"
                    );
                }
            }
            // No daemon to do it at the thaw: the instances its records
            // name are stopped now (they work on files that are gone).
            _ => {
                let since = super::status::unix_now();
                if let Some(note) = follow(ctx, cell, Want::Stopped, since)? {
                    eprintln!("{}: {note}", cell.id);
                    stopped = true;
                }
            }
        }
    }
    // The files are restored and the daemon told: a stream an agent broke
    // (events.jsonl replaced by a directory) is said, not a failure.
    if let Err(e) = cell.append_events(&[Event::new(EventKind::CheckpointRestored)
        .with("path", format!("{}/{name}", checkpoint::DIR))
        .with("files", restored.files)
        .with("bytes", restored.bytes)
        .with("took_ms", restored.took_ms)
        .with("by", by.as_str())])
    {
        eprintln!("warning: restored, but checkpoint_restored was not recorded: {e}");
    }
    if ctx.json {
        super::print_json(&json!({
            "cell": cell.id,
            "restored": format!("{}/{name}", checkpoint::DIR),
            "files": restored.files,
            "bytes": restored.bytes,
            "status": now.as_str(),
        }));
    } else {
        println!(
            "{}: restored {}/{name} ({} files, {} bytes of content)",
            cell.id,
            checkpoint::DIR,
            restored.files,
            restored.bytes
        );
        if now == CellStatus::Frozen {
            println!(
                "the cell stays frozen: `lazarus-pit cell thaw {}` {}",
                cell.id,
                if stopped || daemon.is_none() {
                    "makes the daemon start its agents on the restored workspace"
                } else {
                    "starts its agents again on the restored workspace"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
