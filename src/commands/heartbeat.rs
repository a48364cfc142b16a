//! `heartbeat`: write this agent's heartbeat file atomically, for agents
//! written in shell. Defaults come from the environment the daemon gives
//! its agents; `LAZARUS_HEARTBEAT_FILE`, when set, names the file exactly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Context;
use crate::cell::HEARTBEATS;
use crate::cell::heartbeat::Heartbeat;
use crate::cli::HeartbeatArgs;
use crate::error::{Error, Result};
use crate::store::Dir;

pub fn run(ctx: &Context, args: HeartbeatArgs) -> Result<ExitCode> {
    let explicit_file = std::env::var_os("LAZARUS_HEARTBEAT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let agent = match (&args.agent, &explicit_file) {
        (Some(a), _) => a.clone(),
        (None, Some(file)) => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        (None, None) => {
            return Err(Error::Usage(
                "no agent: pass --agent or set LAZARUS_AGENT".into(),
            ));
        }
    };
    super::check_agent_name(&agent)?;
    let mut heartbeat = Heartbeat {
        agent: Some(agent.clone()),
        pid: Some(
            args.pid
                .unwrap_or_else(|| i64::from(nix::unistd::getppid().as_raw())),
        ),
        timestamp: (super::status::unix_now() * 1000.0).round() / 1000.0,
        cycle: args.cycle,
        model: args.model,
        status: args.status,
        cell_uuid: None,
    };
    match explicit_file {
        Some(file) => {
            heartbeat.cell_uuid = args.cell;
            let (dir, name) = split(&file)?;
            dir.write_atomic(&name, &heartbeat.to_bytes(), 0o644)?;
        }
        None => {
            let Some(prefix) = &args.cell else {
                return Err(Error::Usage(
                    "no cell: pass --cell or set LAZARUS_CELL_UUID".into(),
                ));
            };
            let cell = ctx.root.resolve(prefix)?;
            // A typo in an agent's loop must not go unnoticed: its beats
            // would land in a file nobody reads while it is declared dead.
            if let Ok(m) = cell.read_manifest()
                && m.agent(&agent).is_none()
            {
                if !args.force {
                    return Err(super::revive::no_such_agent(
                        &cell,
                        &m,
                        &agent,
                        "write a heartbeat for",
                    ));
                }
                tracing::warn!(
                    "cell {}: {agent:?} is not an agent of this cell; the daemon ignores its heartbeat until it joins",
                    cell.id
                );
            }
            write(&cell, &agent, &mut heartbeat)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// [`write`] for the HTTP API, which may run as root and writes into an
/// agent's cell: the heartbeats directory must exist (root never makes
/// one there: the agent could no longer write in it), and the file goes
/// to the directory's owner, as if the agent had written it, so an agent
/// that truncates and rewrites its file in place still can.
pub(crate) fn write_as_owner(
    cell: &crate::cell::Cell,
    agent: &str,
    heartbeat: &mut Heartbeat,
) -> Result<()> {
    heartbeat.cell_uuid = Some(cell.id.clone());
    let dir = cell.dir.subdir(HEARTBEATS)?;
    let owner = if nix::unistd::geteuid().is_root() {
        let st = nix::sys::stat::fstat(dir.as_fd()).map_err(std::io::Error::from)?;
        Some((
            nix::unistd::Uid::from_raw(st.st_uid),
            nix::unistd::Gid::from_raw(st.st_gid),
        ))
    } else {
        None
    };
    dir.write_atomic_owned(
        &format!("{agent}.json"),
        &heartbeat.to_bytes(),
        0o644,
        owner,
    )?;
    Ok(())
}

/// Writes `agent`'s heartbeat file in `cell` atomically (never through a
/// symlink: the directories are opened without following one), stamped
/// with the cell's UUID. `heartbeat` and the HTTP API's heartbeat POST.
pub(crate) fn write(
    cell: &crate::cell::Cell,
    agent: &str,
    heartbeat: &mut Heartbeat,
) -> Result<()> {
    heartbeat.cell_uuid = Some(cell.id.clone());
    let dir = cell.dir.create_dirs(HEARTBEATS)?;
    dir.write_atomic(&format!("{agent}.json"), &heartbeat.to_bytes(), 0o644)?;
    Ok(())
}

/// The directory (opened without following a final symlink) and file name
/// of `file`.
fn split(file: &Path) -> Result<(Dir, String)> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::Usage(format!(
                "LAZARUS_HEARTBEAT_FILE {} does not name a file",
                file.display()
            ))
        })?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = Dir::open(parent).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("heartbeat directory {}: {e}", parent.display()),
        ))
    })?;
    Ok((dir, name))
}
