//! `status` / `--status`: per agent, its state, heartbeat age and revive
//! count. Works without a daemon: it reads the manifests and heartbeat
//! files itself, and takes states, counts and pids from the daemon's
//! records (or, for a user who cannot read those, from the cell's
//! published `state.json`) while the daemon that wrote them runs. Text the
//! agents wrote is escaped before it reaches the terminal.

use std::process::ExitCode;

use serde::Serialize;

use super::Context;
use crate::cell::lifecycle::CellStatus;
use crate::cell::manifest::Isolation;
use crate::cell::settings::AgentSettings;
use crate::cell::{Cell, Listed, STATE};
use crate::cli::StatusArgs;
use crate::error::Result;
use crate::records::{Enforced, Records};
use crate::state::{AgentState, CellState};
use crate::text::escape;

/// Largest `state.json` read: it is written by the daemon, but it lies in
/// the cell, where agents can replace it.
const STATE_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Debug, Serialize)]
struct CellReport {
    uuid: String,
    status: String,
    name: Option<String>,
    mission: Option<String>,
    /// Pid of the daemon running on the root (it holds the root's lock).
    daemon_pid: Option<u32>,
    /// Where `state`, `revive_count` and `pid` come from.
    source: Source,
    agents: Vec<AgentReport>,
    /// Its checkpoints: how many, the newest.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoints: Option<Checkpoints>,
    /// The daemon is taking a checkpoint (its agents are frozen for it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    checkpointing: bool,
    /// Its timers (`cell.json`, seconds), and when `max_duration` ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    timers: Option<Timers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Checkpoints {
    count: usize,
    latest: String,
}

#[derive(Debug, Serialize)]
struct Timers {
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_duration: Option<f64>,
    /// Unix seconds: `created_at` + `max_duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    archive_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_interval: Option<f64>,
}

impl Timers {
    fn of(manifest: &crate::cell::manifest::Manifest) -> Option<Timers> {
        let t = crate::supervisor::timers::CellTimers::of(manifest);
        if !t.any() {
            return None;
        }
        let created = manifest
            .created_at
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map(|c| c.timestamp_millis() as f64 / 1000.0);
        Some(Timers {
            idle_timeout: t.idle,
            max_duration: t.max_duration,
            archive_at: t.max_duration.zip(created).map(|(m, c)| c + m),
            checkpoint_interval: t.interval,
        })
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.idle_timeout {
            parts.push(format!("idle_timeout {s} s (then frozen)"));
        }
        if let Some(s) = self.max_duration {
            let when = self
                .archive_at
                .and_then(|at| chrono::DateTime::from_timestamp_millis((at * 1000.0) as i64))
                .map(|at| {
                    format!(
                        " at {}",
                        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                })
                .unwrap_or_default();
            parts.push(format!("max_duration {s} s (then archived{when})"));
        }
        if let Some(s) = self.checkpoint_interval {
            parts.push(format!("checkpoint_interval {s} s"));
        }
        parts.join(", ")
    }
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
    /// How the daemon controls its running instance: `cgroup` (every
    /// process it starts, also those that leave its process group) or
    /// `process-group` (where the daemon has no cgroups).
    control: Option<String>,
    /// The isolation its running instance has (`directory`,
    /// `mount-namespace`, `podman`), as the daemon observed it; with
    /// nothing running, the one `cell.json` gives (agent over cell).
    isolation: &'static str,
    /// What `cell.json` gives, when that differs from what runs: it
    /// applies at the next start.
    #[serde(skip_serializing_if = "Option::is_none")]
    isolation_configured: Option<&'static str>,
    /// Its `limits`, and how each is enforced on its running instance
    /// (`rlimit`, `cgroup`, `podman`, `none`); `unknown` while nothing of
    /// it runs under a daemon that says.
    limits: Vec<Enforced>,
    /// Why the heartbeat file could not be used, if it could not.
    problem: Option<String>,
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<ExitCode> {
    let now = unix_now();
    // The daemon's own records when this user can read them; otherwise
    // what the daemon published in each cell (and why, said once).
    let daemon = crate::daemon::lock::holder(&ctx.root.path);
    let state_dir = crate::records::state_dir(&ctx.config.daemon)
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "(none)".into());
    let (records, note) = match Records::open_existing(&ctx.config.daemon, &ctx.root.path) {
        Ok(Some(r)) if daemon.is_none() || r.claimed_by() == daemon => (Some(r), None),
        Ok(Some(_)) => (
            None,
            Some(format!(
                "the running daemon does not use the state directory {state_dir}: give this \
                 command its config"
            )),
        ),
        Ok(None) => (
            None,
            Some(format!(
                "no daemon records for this root in {state_dir}: give this command the \
                 daemon's config"
            )),
        ),
        Err(_) => (
            None,
            Some(format!(
                "the daemon's records in {state_dir} are open only to root and the daemon's user"
            )),
        ),
    };
    let records = records.as_ref();
    let reports: Vec<CellReport> = match &args.cell {
        Some(prefix) => {
            let cell = ctx.root.resolve(prefix)?;
            let manifest = cell.read_manifest()?;
            vec![report(ctx, daemon, records, &cell, &manifest, now)]
        }
        None => ctx
            .root
            .list()?
            .into_iter()
            .filter_map(|listed| match listed {
                Listed::Cell { cell, manifest } => {
                    let status = manifest.status();
                    (status.is_monitored() || status == CellStatus::Provisioned)
                        .then(|| report(ctx, daemon, records, &cell, &manifest, now))
                }
                Listed::Unreadable { name, error } => Some(CellReport {
                    uuid: name,
                    status: "unreadable".into(),
                    name: None,
                    mission: None,
                    daemon_pid: daemon,
                    source: Source::Heartbeats,
                    agents: Vec::new(),
                    checkpoints: None,
                    checkpointing: false,
                    timers: None,
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
        if let Some(note) = note
            .filter(|_| daemon.is_some() && reports.iter().any(|r| r.source == Source::StateJson))
        {
            eprintln!("note: {note}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the daemon says of an agent.
struct Facts {
    state: AgentState,
    revive_count: u32,
    pid: Option<i32>,
    control: Option<String>,
    limits: Vec<Enforced>,
    /// The running instance's isolation, observed.
    isolation: Option<Isolation>,
}

fn report(
    ctx: &Context,
    daemon: Option<u32>,
    records: Option<&Records>,
    cell: &Cell,
    manifest: &crate::cell::manifest::Manifest,
    now: f64,
) -> CellReport {
    let (source, facts) = daemon_facts(daemon, records, cell);
    // Without a daemon, its records still know revive counts, and which
    // of the agents it started still run.
    let remembered = match source {
        Source::Heartbeats => records.and_then(|r| r.read_cell(&cell.id)),
        _ => None,
    };
    let this_boot = remembered
        .as_ref()
        .is_some_and(|r| r.boot_id == crate::daemon::process::boot_id());
    let seen: std::collections::HashMap<&str, usize> =
        manifest
            .agents
            .iter()
            .fold(std::collections::HashMap::new(), |mut m, a| {
                *m.entry(a.name.as_str()).or_default() += 1;
                m
            });
    let frozen = manifest.status() == CellStatus::Frozen;
    let agents = manifest
        .agents
        .iter()
        .map(|agent| {
            let settings = AgentSettings::resolve(&ctx.config.cells, manifest, agent);
            let (heartbeat, problem) = match cell.read_heartbeat_seen(&agent.name, now) {
                Ok(hb) => (Some(hb), None),
                Err(e) if e.is_missing() || e.is_partial() => (None, None),
                Err(e) => (None, Some(e.to_string())),
            };
            let facts = facts.get(&agent.name);
            let kept = remembered.as_ref().and_then(|r| r.agents.get(&agent.name));
            let problem = match seen.get(agent.name.as_str()) {
                Some(n) if *n > 1 => Some(match problem {
                    Some(p) => format!("{p}; listed {n} times in cell.json (the first counts)"),
                    None => format!("listed {n} times in cell.json (the first counts)"),
                }),
                _ => problem,
            };
            let last_seen = heartbeat.as_ref().map(|(_, seen)| *seen);
            let computed = match last_seen {
                _ if frozen => AgentState::Frozen,
                Some(seen) if now - seen <= settings.stale_threshold.as_secs_f64() => {
                    AgentState::Healthy
                }
                Some(_) => AgentState::Stale,
                None => AgentState::Unknown,
            };
            let agent_state = facts.map_or(computed, |f| f.state);
            let configured = agent.isolation.or(manifest.isolation).unwrap_or_default();
            // What runs: the daemon's word, or (no daemon) its record of
            // the instance still running, confirmed in /proc.
            let running = facts.and_then(|f| f.isolation).or_else(|| {
                let kept = kept?;
                let i = kept.instance?;
                let instance = crate::supervisor::Instance {
                    pid: i.pid,
                    start_time: i.start_time,
                };
                (this_boot && crate::daemon::process::is_alive(instance)).then_some(())?;
                let level = Isolation::parse(kept.isolation.as_deref()?)?;
                Some(crate::daemon::process::confirmed_isolation(level, i.pid))
            });
            AgentReport {
                name: agent.name.clone(),
                role: agent.role.clone(),
                state: agent_state.as_str(),
                healthy: agent_state == AgentState::Healthy,
                last_seen,
                heartbeat_age_s: last_seen.map(|seen| ((now - seen) * 1000.0).round() / 1000.0),
                heartbeat_status: heartbeat.and_then(|(hb, _)| hb.status),
                revive_count: facts
                    .map(|f| f.revive_count)
                    .or(kept.map(|k| k.revive_count))
                    .unwrap_or(0),
                pid: facts.and_then(|f| f.pid).or_else(|| {
                    let i = kept?.instance?;
                    let instance = crate::supervisor::Instance {
                        pid: i.pid,
                        start_time: i.start_time,
                    };
                    (this_boot && crate::daemon::process::is_alive(instance)).then_some(i.pid)
                }),
                control: facts.and_then(|f| f.control.clone()),
                // An instance the daemon runs but cannot vouch for (adopted
                // without a record of its level) is `unknown`, not what
                // cell.json says.
                isolation: match (running, facts.and_then(|f| f.pid)) {
                    (Some(level), _) => level.as_str(),
                    (None, Some(_)) => "unknown",
                    (None, None) => configured.as_str(),
                },
                isolation_configured: match (running, facts.and_then(|f| f.pid)) {
                    (Some(level), _) if level != configured => Some(configured.as_str()),
                    (None, Some(_)) => Some(configured.as_str()),
                    _ => None,
                },
                limits: match facts.map(|f| &f.limits).filter(|l| !l.is_empty()) {
                    Some(limits) => limits.clone(),
                    None => settings
                        .spawn
                        .as_ref()
                        .map(|spec| {
                            spec.limits
                                .iter()
                                .map(|(name, value)| Enforced {
                                    name: name.clone(),
                                    value: *value,
                                    by: "unknown".into(),
                                    note: Some("no running instance reported".into()),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                },
                problem,
            }
        })
        .collect();
    CellReport {
        uuid: cell.id.clone(),
        status: manifest.status().as_str().to_string(),
        name: manifest.name.clone(),
        mission: manifest.mission.clone(),
        daemon_pid: daemon,
        source,
        agents,
        checkpoints: crate::checkpoint::names(&cell.dir)
            .ok()
            .filter(|names| !names.is_empty())
            .and_then(|names| {
                Some(Checkpoints {
                    count: names.len(),
                    latest: crate::checkpoint::latest(&cell.dir).ok()??,
                })
            }),
        timers: Timers::of(manifest),
        checkpointing: daemon.is_some()
            && records
                .and_then(|r| r.read_cell(&cell.id))
                .is_some_and(|r| r.checkpointing),
        error: None,
    }
}

/// Where the states shown come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    /// The running daemon's own records (`state_dir`).
    Records,
    /// The cell's published `state.json`: the daemon wrote it, but the
    /// cell's agents can write there too, so it is shown as such.
    #[serde(rename = "state.json")]
    StateJson,
    /// No daemon runs: computed from the heartbeat files.
    Heartbeats,
}

/// The running daemon — the one holding the root's lock — and its facts
/// about the cell's agents: from its records if this user can read them,
/// else from the cell's `state.json` if that names the same daemon.
fn daemon_facts(
    daemon: Option<u32>,
    records: Option<&Records>,
    cell: &Cell,
) -> (Source, std::collections::HashMap<String, Facts>) {
    let none = (Source::Heartbeats, std::collections::HashMap::new());
    let Some(pid) = daemon else {
        return none;
    };
    if let Some(records) = records.filter(|r| r.claimed_by() == Some(pid)) {
        let Some(record) = records.read_cell(&cell.id) else {
            return none;
        };
        let facts = record
            .agents
            .into_iter()
            .map(|(name, a)| {
                let facts = Facts {
                    state: a.state,
                    revive_count: a.revive_count,
                    pid: a.instance.map(|i| i.pid),
                    control: a.control,
                    limits: a.limits,
                    isolation: a.isolation.as_deref().and_then(Isolation::parse),
                };
                (name, facts)
            })
            .collect();
        return (Source::Records, facts);
    }
    let Some(state) = cell
        .dir
        .read_file(STATE, STATE_LIMIT)
        .ok()
        .and_then(|bytes| CellState::from_slice(&bytes).ok())
        .filter(|s| s.daemon_pid == Some(pid))
    else {
        return none;
    };
    let facts = state
        .agent_health
        .into_iter()
        .map(|(name, h)| {
            let facts = Facts {
                state: h.state,
                revive_count: h.revive_count,
                pid: h.pid,
                control: h
                    .extra
                    .get("control")
                    .and_then(|c| c.as_str())
                    .filter(|c| matches!(*c, "cgroup" | "process-group" | "podman"))
                    .map(str::to_string),
                isolation: h
                    .extra
                    .get("isolation")
                    .and_then(|c| c.as_str())
                    .and_then(Isolation::parse),
                // Written where agents can write: shown, escaped, as a claim.
                limits: h
                    .extra
                    .get("limits")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default(),
            };
            (name, facts)
        })
        .collect();
    (Source::StateJson, facts)
}

fn render(reports: &[CellReport]) -> String {
    let mut out = String::new();
    for (i, cell) in reports.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}  {}  {}\n",
            escape(&cell.uuid),
            escape(&cell.status),
            escape(cell.mission.as_deref().unwrap_or(""))
        ));
        if let Some(error) = &cell.error {
            out.push_str(&format!("  {}\n", escape(error)));
            continue;
        }
        match (cell.daemon_pid, cell.source) {
            (Some(pid), Source::Records) => {
                out.push_str(&format!("  daemon: running (pid {pid})\n"))
            }
            (Some(pid), Source::StateJson) => out.push_str(&format!(
                "  daemon: running (pid {pid}); states from .lazarus/state.json, which the \
                 cell's agents can write\n"
            )),
            (Some(pid), Source::Heartbeats) => out.push_str(&format!(
                "  daemon: running (pid {pid}), not reporting this cell yet \
                 (states computed from heartbeat files)\n"
            )),
            (None, _) => {
                out.push_str("  daemon: not running (states computed from heartbeat files)\n")
            }
        }
        if let Some(t) = &cell.timers {
            out.push_str(&format!("  timers: {}\n", t.describe()));
        }
        if cell.checkpointing {
            out.push_str("  checkpoint: being taken (its agents are frozen meanwhile)\n");
        }
        if let Some(c) = &cell.checkpoints {
            out.push_str(&format!(
                "  checkpoints: {}, latest {}\n",
                c.count,
                escape(&c.latest)
            ));
        }
        if cell.agents.is_empty() {
            out.push_str("  no agents\n");
            continue;
        }
        out.push_str(&format!(
            "  {:<20} {:<18} {:<11} {:<12} {:>7}  {:<8} {:<14} {}\n",
            "AGENT", "STATE", "HEARTBEAT", "STATUS", "REVIVES", "PID", "CONTROL", "ISOLATION"
        ));
        for a in &cell.agents {
            out.push_str(&format!(
                "  {:<20} {:<18} {:<11} {:<12} {:>7}  {:<8} {:<14} {}\n",
                escape(&a.name),
                a.state,
                a.heartbeat_age_s.map_or_else(|| "never".into(), age),
                escape(a.heartbeat_status.as_deref().unwrap_or("-")),
                a.revive_count,
                a.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                a.control.as_deref().unwrap_or("-"),
                match a.isolation_configured {
                    Some(next) => format!("{} (next start: {next})", a.isolation),
                    None => a.isolation.to_string(),
                },
            ));
            if !a.limits.is_empty() {
                out.push_str(&format!(
                    "    limits: {}\n",
                    escape(&crate::daemon::limits::describe(&a.limits))
                ));
            }
            if let Some(problem) = &a.problem {
                out.push_str(&format!("    ! {}\n", escape(problem)));
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
