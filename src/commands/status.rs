//! `status` / `--status`: per agent, its state, heartbeat age and revive
//! count. Works without a daemon: it reads the manifests and heartbeat
//! files itself, and takes states and counts from `state.json` when the
//! daemon that wrote it is still running.

use std::process::ExitCode;

use serde::Serialize;

use crate::Context;
use crate::cell::lifecycle::CellStatus;
use crate::cell::settings::AgentSettings;
use crate::cell::{Cell, Listed, STATE};
use crate::cli::StatusArgs;
use crate::error::Result;
use crate::state::{AgentState, CellState};
use crate::store::AGENT_FILE_LIMIT;

#[derive(Debug, Serialize)]
struct CellReport {
    uuid: String,
    status: String,
    name: Option<String>,
    mission: Option<String>,
    /// Pid of the daemon whose `state.json` was used, if it is running.
    daemon_pid: Option<u32>,
    agents: Vec<AgentReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct AgentReport {
    name: String,
    role: Option<String>,
    state: &'static str,
    healthy: bool,
    /// Unix seconds of the last heartbeat (clamped if in the future).
    last_seen: Option<f64>,
    heartbeat_age_s: Option<f64>,
    heartbeat_status: Option<String>,
    revive_count: u32,
    pid: Option<i32>,
    /// Why the heartbeat file could not be used, if it could not.
    problem: Option<String>,
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<ExitCode> {
    let now = unix_now();
    let reports: Vec<CellReport> = match &args.cell {
        Some(prefix) => {
            let cell = ctx.root.resolve(prefix)?;
            let manifest = cell.read_manifest()?;
            vec![report(ctx, &cell, &manifest, now)]
        }
        None => ctx
            .root
            .list()?
            .into_iter()
            .filter_map(|listed| match listed {
                Listed::Cell { cell, manifest } => {
                    let status = manifest.status();
                    (status.is_monitored() || status == CellStatus::Provisioned)
                        .then(|| report(ctx, &cell, &manifest, now))
                }
                Listed::Unreadable { name, error } => Some(CellReport {
                    uuid: name,
                    status: "unreadable".into(),
                    name: None,
                    mission: None,
                    daemon_pid: None,
                    agents: Vec::new(),
                    error: Some(error.to_string()),
                }),
            })
            .collect(),
    };
    if ctx.json {
        super::print_json(&serde_json::json!({ "cells": reports }));
    } else if reports.is_empty() {
        eprintln!("no monitored cells in {}", ctx.root.path.display());
    } else {
        print!("{}", render(&reports));
    }
    Ok(ExitCode::SUCCESS)
}

fn report(
    ctx: &Context,
    cell: &Cell,
    manifest: &crate::cell::manifest::Manifest,
    now: f64,
) -> CellReport {
    let state = read_live_state(cell);
    let frozen = manifest.status() == CellStatus::Frozen;
    let agents = manifest
        .agents
        .iter()
        .map(|agent| {
            let settings = AgentSettings::resolve(&ctx.config.cells, manifest, agent);
            let (heartbeat, problem) = match cell.read_heartbeat(&agent.name) {
                Ok(hb) => (Some(hb), None),
                Err(e) if e.is_missing() || e.is_partial() => (None, None),
                Err(e) => (None, Some(e.to_string())),
            };
            let from_state = state
                .as_ref()
                .and_then(|(_, s)| s.agent_health.get(&agent.name));
            let last_seen = heartbeat.as_ref().map(|hb| hb.seen_at(now));
            let computed = match last_seen {
                _ if frozen => AgentState::Frozen,
                Some(seen) if now - seen <= settings.stale_threshold.as_secs_f64() => {
                    AgentState::Healthy
                }
                Some(_) => AgentState::Stale,
                None => AgentState::Unknown,
            };
            let agent_state = match (&state, from_state) {
                (Some((true, _)), Some(h)) => h.state,
                _ => computed,
            };
            AgentReport {
                name: agent.name.clone(),
                role: agent.role.clone(),
                state: agent_state.as_str(),
                healthy: agent_state == AgentState::Healthy,
                last_seen,
                heartbeat_age_s: last_seen.map(|seen| ((now - seen) * 1000.0).round() / 1000.0),
                heartbeat_status: heartbeat.and_then(|hb| hb.status),
                revive_count: from_state.map_or(0, |h| h.revive_count),
                pid: from_state.and_then(|h| h.pid),
                problem,
            }
        })
        .collect();
    CellReport {
        uuid: cell.id.clone(),
        status: manifest.status().as_str().to_string(),
        name: manifest.name.clone(),
        mission: manifest.mission.clone(),
        daemon_pid: state
            .as_ref()
            .filter(|(live, _)| *live)
            .and_then(|(_, s)| s.daemon_pid),
        agents,
        error: None,
    }
}

/// The cell's `state.json`, and whether the daemon that wrote it is alive.
fn read_live_state(cell: &Cell) -> Option<(bool, CellState)> {
    let bytes = cell.dir.read_file(STATE, AGENT_FILE_LIMIT * 16).ok()?;
    let state = CellState::from_slice(&bytes).ok()?;
    let live = state.daemon_pid.is_some_and(process_exists);
    Some((live, state))
}

pub(crate) fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

fn render(reports: &[CellReport]) -> String {
    let mut out = String::new();
    for (i, cell) in reports.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}  {}  {}\n",
            cell.uuid,
            cell.status,
            cell.mission.as_deref().unwrap_or("")
        ));
        if let Some(error) = &cell.error {
            out.push_str(&format!("  {error}\n"));
            continue;
        }
        match cell.daemon_pid {
            Some(pid) => out.push_str(&format!("  daemon: running (pid {pid})\n")),
            None => out.push_str("  daemon: not running (states computed from heartbeat files)\n"),
        }
        if cell.agents.is_empty() {
            out.push_str("  no agents\n");
            continue;
        }
        out.push_str(&format!(
            "  {:<20} {:<18} {:<11} {:<12} {:>7}  {}\n",
            "AGENT", "STATE", "HEARTBEAT", "STATUS", "REVIVES", "PID"
        ));
        for a in &cell.agents {
            out.push_str(&format!(
                "  {:<20} {:<18} {:<11} {:<12} {:>7}  {}\n",
                a.name,
                a.state,
                a.heartbeat_age_s.map_or_else(|| "never".into(), age),
                a.heartbeat_status.as_deref().unwrap_or("-"),
                a.revive_count,
                a.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            ));
            if let Some(problem) = &a.problem {
                out.push_str(&format!("    ! {problem}\n"));
            }
        }
    }
    out
}

/// A heartbeat age for people: `3.2s ago`, `5m 3s ago`, `2h 5m ago`.
fn age(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s ago")
    } else if s < 3600.0 {
        format!("{}m {}s ago", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h {}m ago",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(3.24), "3.2s ago");
        assert_eq!(age(303.0), "5m 3s ago");
        assert_eq!(age(7500.0), "2h 5m ago");
    }
}
