//! `cell create`: make a cell with its whole layout and print its UUID.
//!
//! The cell is built under a hidden temporary name and renamed into place
//! when complete, so neither the daemon nor a listing ever sees half a
//! cell, and a crash leaves only a dot-directory that is not a cell.

use std::process::ExitCode;

use serde_json::json;

use super::Context;
use crate::cell::lifecycle::{CellStatus, Trigger, transition};
use crate::cell::manifest::{Agent, Manifest};
use crate::cell::{Cell, LAYOUT, MANIFEST, now_rfc3339, template};
use crate::cli::CreateArgs;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::store::Dir;

pub fn run(ctx: &Context, args: CreateArgs) -> Result<ExitCode> {
    // Everything is checked before anything is written.
    let flag_agents = args
        .agents
        .iter()
        .map(|spec| parse_agent_spec(spec))
        .collect::<Result<Vec<_>>>()?;
    let now = now_rfc3339();
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut manifest = match &args.template {
        Some(path) => template::load(path)?,
        None => Manifest::new(String::new(), String::new()),
    };
    manifest.uuid = uuid.clone();
    manifest.created_at = Some(now.clone());
    manifest.created_by = Some(args.by.clone().unwrap_or_else(current_user));
    if args.name.is_some() {
        manifest.name = args.name.clone();
    }
    if args.mission.is_some() {
        manifest.mission = args.mission.clone();
    }
    for agent in &mut manifest.agents {
        if agent.joined_at.is_none() {
            agent.joined_at = Some(now.clone());
        }
        if agent.role.is_none() {
            agent.role = Some(super::DEFAULT_ROLE.into());
        }
    }
    for (name, role) in flag_agents {
        manifest
            .agents
            .push(Agent::new(&name, Some(role), now.clone()));
    }
    for agent in &manifest.agents {
        super::check_agent_name(&agent.name)?;
    }
    let mut problems = manifest.problems();
    // As `cell join`: an agent is never added with an isolation level the
    // daemon cannot give (it would never start).
    for agent in &manifest.agents {
        let level = agent.isolation.or(manifest.isolation).unwrap_or_default();
        if let Err(why) = super::isolation_usable(ctx, level) {
            problems.push(format!("agent {:?}: {why}", agent.name));
        }
    }
    if !problems.is_empty() {
        let path = args
            .template
            .clone()
            .unwrap_or_else(|| "cell create".into());
        return Err(Error::InvalidManifest { path, problems });
    }
    manifest.status = Some(if manifest.agents.is_empty() {
        CellStatus::Provisioned
    } else {
        transition(&CellStatus::Provisioned, Trigger::Join).unwrap_or(CellStatus::Active)
    });

    let mut events = vec![
        Event::new(EventKind::CellCreated)
            .with("by", manifest.created_by.clone().unwrap_or_default())
            .with("uuid", uuid.clone())
            .with("name", manifest.name.clone().unwrap_or_default()),
    ];
    for agent in &manifest.agents {
        events.push(
            Event::new(EventKind::AgentJoined)
                .with("agent", agent.name.clone())
                .with("role", agent.role.clone().unwrap_or_default()),
        );
    }
    if !manifest.agents.is_empty() {
        events.push(
            Event::new(EventKind::CellStatusChanged)
                .with("from", "provisioned")
                .with("to", "active"),
        );
    }

    let root_path = &ctx.root.path;
    std::fs::create_dir_all(root_path).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cells root {}: {e}", root_path.display()),
        ))
    })?;
    let root = ctx.root.open()?;
    let staging = format!(".creating-{uuid}");
    let cell = build(&root, &staging, &uuid, &manifest, &events).inspect_err(|_| {
        let _ = root.remove_tree(&staging);
    })?;
    nix::fcntl::renameat(root.as_fd(), staging.as_str(), root.as_fd(), uuid.as_str())
        .map_err(std::io::Error::from)?;
    nix::unistd::fsync(root.as_fd()).map_err(std::io::Error::from)?;
    drop(cell);
    if let Some(name) = manifest.name.as_deref() {
        super::set::warn_name_clashes(ctx, name, &uuid);
    }

    if ctx.json {
        super::print_json(&json!({
            "uuid": uuid,
            "path": root_path.join(&uuid),
            "manifest": manifest,
        }));
    } else {
        println!("{uuid}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes the layout, the event stream and finally `cell.json` under
/// `staging`.
fn build(
    root: &Dir,
    staging: &str,
    uuid: &str,
    manifest: &Manifest,
    events: &[Event],
) -> Result<Cell> {
    let dir = root.create_dirs(staging)?;
    for sub in LAYOUT {
        dir.create_dirs(sub)?;
    }
    for agent in &manifest.agents {
        dir.create_dirs(&format!("bus/inbox/{}", agent.name))?;
    }
    let cell = Cell {
        id: uuid.to_string(),
        dir,
    };
    cell.append_events(events)?;
    cell.dir
        .write_atomic(MANIFEST, &manifest.to_bytes(), 0o644)?;
    Ok(cell)
}

/// `NAME[:ROLE]`, the role defaulting to [`super::DEFAULT_ROLE`].
fn parse_agent_spec(spec: &str) -> Result<(String, String)> {
    let (name, role) = match spec.split_once(':') {
        Some((n, r)) if !r.is_empty() => (n, r),
        Some((n, _)) => (n, super::DEFAULT_ROLE),
        None => (spec, super::DEFAULT_ROLE),
    };
    super::check_agent_name(name)?;
    Ok((name.to_string(), role.to_string()))
}

/// Who is creating the cell: the invoking user behind sudo, else the
/// user, else the uid's name in the password database.
pub(crate) fn current_user() -> String {
    let uid = nix::unistd::getuid();
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid:{uid}"))
}
