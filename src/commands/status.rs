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

impl CellReport {
    /// A cell whose `cell.json` cannot be used, and why.
    fn unreadable(uuid: String, daemon: Option<u32>, error: String) -> CellReport {
        CellReport {
            uuid,
            status: "unreadable".into(),
            name: None,
            mission: None,
            daemon_pid: daemon,
            source: Source::Heartbeats,
            agents: Vec::new(),
            checkpoints: None,
            checkpointing: false,
            timers: None,
            error: Some(error),
        }
    }
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
    /// What the running daemon does to it next, and when; `null` when
    /// nothing is pending or no daemon runs (nothing happens then).
    next: Option<NextReport>,
    /// The revival question waiting for `approve`/`deny` (policy `ask`).
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<crate::records::RequestRecord>,
    /// Why it is not healthy, in the daemon's words: how its last instance
    /// ended (`exited with code 3`), a start's error, its silence.
    why: Option<String>,
    /// Where the state and the heartbeat file disagree, why: the daemon
    /// has not read the newest beat yet, a beat older than its current
    /// instance, a process still being stopped.
    note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct NextReport {
    /// `start`, `stale`, `revive`, `ask`, `dead`, `substitute`; by an
    /// operator: `approve`, `revive`.
    action: String,
    /// `daemon` or `operator`.
    by: String,
    /// Unix seconds (absent: when an operator acts).
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<f64>,
    /// Seconds from now (negative: overdue).
    #[serde(skip_serializing_if = "Option::is_none")]
    in_s: Option<f64>,
}

/// What `status` and `metrics` read of the root.
pub(crate) struct Gathered {
    reports: Vec<CellReport>,
    /// The pid of the daemon holding the root's lock.
    pub daemon: Option<u32>,
    /// The daemon's records, when this user can read them and they are
    /// that daemon's.
    pub records: Option<Records>,
    /// Why states come from somewhere else, if they do.
    note: Option<String>,
    /// This user may not read the daemon's records.
    records_unreadable: bool,
    /// Every cell of the root (`cell` unset) by status, unreadable ones
    /// as `other`.
    pub statuses: std::collections::BTreeMap<String, u64>,
}

impl Gathered {
    /// The agents, as metrics see them.
    pub(crate) fn samples(&self) -> Vec<crate::metrics::AgentSample> {
        self.reports
            .iter()
            .flat_map(|c| {
                c.agents.iter().map(|a| crate::metrics::AgentSample {
                    cell: c.uuid.clone(),
                    agent: a.name.clone(),
                    state: AgentState::BY_URGENCY
                        .into_iter()
                        .find(|s| s.as_str() == a.state)
                        .unwrap_or_default(),
                    heartbeat_age_s: a.heartbeat_age_s,
                    revive_count: a.revive_count,
                })
            })
            .collect()
    }
}

/// Reads the root (or one cell of it) as `status` shows it.
pub(crate) fn gather(ctx: &Context, cell: Option<&str>) -> Result<Gathered> {
    let now = unix_now();
    // The daemon's own records when this user can read them; otherwise
    // what the daemon published in each cell (and why, said once).
    let daemon = crate::daemon::lock::holder(&ctx.root.path);
    let state_dir = crate::records::state_dir(&ctx.config.daemon)
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "(none)".into());
    let opened = Records::open_existing(&ctx.config.daemon, &ctx.root.path);
    let records_unreadable = opened.is_err();
    let (records, note) = match opened {
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
    let mut statuses = std::collections::BTreeMap::new();
    let reports: Vec<CellReport> = {
        let records = records.as_ref();
        match cell {
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
                        *statuses
                            .entry(crate::metrics::cell_key(status.as_str()).to_string())
                            .or_default() += 1;
                        (status.is_monitored() || status == CellStatus::Provisioned)
                            .then(|| report(ctx, daemon, records, &cell, &manifest, now))
                    }
                    Listed::Unreadable { name, error } => {
                        *statuses.entry("other".to_string()).or_default() += 1;
                        Some(CellReport::unreadable(name, daemon, error.to_string()))
                    }
                })
                .collect::<Vec<_>>()
                .into_iter()
                .chain(lost(ctx, records, daemon, &mut statuses)?)
                .collect(),
        }
    };
    let mut reports = reports;
    if let Some(records) = &records {
        sent_not_taken(records, daemon, &mut reports);
    }
    Ok(Gathered {
        reports,
        daemon,
        records,
        note,
        records_unreadable,
        statuses,
    })
}

/// Operators' words waiting in the daemon's inbox: an `approve` or `deny`
/// just sent is not shown as a question still open, and an agent's row
/// says what it is waiting for.
fn sent_not_taken(records: &Records, daemon: Option<u32>, reports: &mut [CellReport]) {
    // The inbox is drained within milliseconds by a running daemon; a
    // long one (no daemon for days) is read only this far.
    const MOST: usize = 1000;
    for name in records.inbox().into_iter().take(MOST) {
        let Some(request) = records.peek(&name) else {
            continue;
        };
        let verb = match request.action {
            crate::records::RequestAction::Revive => "revive",
            crate::records::RequestAction::Approve => "approve",
            crate::records::RequestAction::Deny => "deny",
            _ => continue,
        };
        let Some(agent) = reports
            .iter_mut()
            .filter(|c| c.uuid == request.cell)
            .flat_map(|c| c.agents.iter_mut())
            .find(|a| a.name == request.agent)
        else {
            continue;
        };
        if verb != "revive" {
            agent.request = None;
            agent.next = None;
        }
        agent.note = Some(match daemon {
            Some(_) => format!(
                "`{verb}` sent by {}: the daemon has not taken it yet",
                request.by
            ),
            None => format!(
                "`{verb}` sent by {}: it is taken when a daemon starts",
                request.by
            ),
        });
    }
}

/// Cells that lost their `cell.json` (see [`crate::cell::Root::lost_cells`]),
/// each reported as unreadable: a check fails on them.
fn lost(
    ctx: &Context,
    records: Option<&Records>,
    daemon: Option<u32>,
    statuses: &mut std::collections::BTreeMap<String, u64>,
) -> Result<Vec<CellReport>> {
    let names = ctx
        .root
        .lost_cells(|name| records.is_some_and(|r| r.read_cell(name).is_some()))?;
    *statuses.entry("other".to_string()).or_default() += names.len() as u64;
    Ok(names
        .into_iter()
        .map(|name| {
            CellReport::unreadable(
                name,
                daemon,
                "cell.json is missing: its agents are not monitored".into(),
            )
        })
        .collect())
}

/// `status --json` of the root, or of one cell: what the HTTP API serves
/// too. `ok` is the exit code's verdict.
pub(crate) fn snapshot(ctx: &Context, cell: Option<&str>) -> Result<serde_json::Value> {
    let Gathered {
        reports,
        daemon,
        records,
        records_unreadable,
        ..
    } = gather(ctx, cell)?;
    let missing = daemon_missing(daemon, records.as_ref());
    let summary = Summary::of(&reports, missing);
    Ok(serde_json::json!({
        "daemon": daemon_json(daemon, missing, records_unreadable),
        "ok": summary.ok,
        "summary": summary,
        "pending_approvals": pending(&reports),
        "cells": reports,
    }))
}

/// No daemon, though one ran here (it published its counters; a `daemon
/// --once` pass removes them): nothing is revived, which a check must not
/// call well.
fn daemon_missing(daemon: Option<u32>, records: Option<&Records>) -> bool {
    daemon.is_none() && records.is_some_and(|r| r.read_stats().is_some())
}

/// `missing` is unknown (`null`) to a user who may not read the daemon's
/// records.
fn daemon_json(daemon: Option<u32>, missing: bool, records_unreadable: bool) -> serde_json::Value {
    let missing_json = match (daemon, records_unreadable) {
        (None, true) => serde_json::Value::Null,
        _ => missing.into(),
    };
    serde_json::json!({ "running": daemon.is_some(), "pid": daemon, "missing": missing_json })
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<ExitCode> {
    if ctx.json {
        let snapshot = snapshot(ctx, args.cell.as_deref())?;
        super::print_json(&snapshot);
        return Ok(if snapshot["ok"] == true {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let Gathered {
        reports,
        daemon,
        records,
        note,
        records_unreadable,
        ..
    } = gather(ctx, args.cell.as_deref())?;
    let missing = daemon_missing(daemon, records.as_ref());
    let summary = Summary::of(&reports, missing);
    let pending = pending(&reports);
    if reports.is_empty() {
        eprintln!("no monitored cells in {}", ctx.root.path.display());
    } else {
        // The table puts what needs a human first; JSON keeps the root's
        // and `cell.json`'s order, which scripts index by.
        let mut sorted = reports;
        sort(&mut sorted);
        print!(
            "{}",
            render(
                &sorted,
                daemon,
                missing,
                records_unreadable,
                &summary,
                &pending
            )
        );
        if let Some(note) = note
            .filter(|_| daemon.is_some() && sorted.iter().any(|r| r.source == Source::StateJson))
        {
            eprintln!("note: {note}");
        }
    }
    // For cron and monitors: 1 when an agent needs attention.
    Ok(if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What needs a human first: cells by their worst agent, then by name;
/// agents by urgency, ties in `cell.json` order.
fn sort(reports: &mut [CellReport]) {
    for cell in reports.iter_mut() {
        cell.agents.sort_by_key(|a| urgency(a.state));
    }
    let worst = |c: &CellReport| {
        if c.error.is_some() {
            return 0;
        }
        c.agents
            .iter()
            .map(|a| urgency(a.state))
            .min()
            .unwrap_or(usize::MAX)
    };
    reports.sort_by(|a, b| {
        worst(a)
            .cmp(&worst(b))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.uuid.cmp(&b.uuid))
    });
}

fn urgency(state: &str) -> usize {
    AgentState::BY_URGENCY
        .iter()
        .position(|s| s.as_str() == state)
        .unwrap_or(usize::MAX)
}

/// The count of cells and of agents per state, and whether all is well.
#[derive(Debug, Serialize)]
struct Summary {
    cells: usize,
    agents: usize,
    /// Agents per state, in urgency order, states with none left out.
    states: serde_json::Map<String, serde_json::Value>,
    /// Cells whose `cell.json` could not be read.
    unreadable: usize,
    /// No daemon runs, though one supervised this root: its agents are
    /// not revived (a failure when there are any).
    daemon_missing: bool,
    /// No agent needs attention and every cell could be read.
    ok: bool,
}

impl Summary {
    fn of(reports: &[CellReport], daemon_missing: bool) -> Summary {
        let mut states = serde_json::Map::new();
        for state in AgentState::BY_URGENCY {
            let n = reports
                .iter()
                .flat_map(|c| &c.agents)
                .filter(|a| a.state == state.as_str())
                .count();
            if n > 0 {
                states.insert(state.as_str().into(), n.into());
            }
        }
        let unreadable = reports.iter().filter(|c| c.error.is_some()).count();
        let trouble = reports.iter().flat_map(|c| &c.agents).any(|a| {
            AgentState::BY_URGENCY
                .iter()
                .any(|s| s.as_str() == a.state && s.is_trouble())
        });
        Summary {
            cells: reports.len(),
            agents: reports.iter().map(|c| c.agents.len()).sum(),
            states,
            unreadable,
            daemon_missing,
            ok: !trouble
                && unreadable == 0
                && !(daemon_missing && reports.iter().any(|c| !c.agents.is_empty())),
        }
    }

    fn line(&self) -> String {
        let mut out = format!(
            "{} {}, {} {}",
            self.cells,
            plural(self.cells, "cell", "cells"),
            self.agents,
            plural(self.agents, "agent", "agents")
        );
        if !self.states.is_empty() {
            let parts: Vec<String> = self
                .states
                .iter()
                .map(|(state, n)| format!("{n} {state}"))
                .collect();
            out.push_str(&format!(": {}", parts.join(", ")));
        }
        if self.unreadable > 0 {
            out.push_str(&format!("; {} unreadable", self.unreadable));
        }
        if self.daemon_missing && self.agents > 0 {
            out.push_str("; no daemon supervises them");
        }
        out
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// A revival question waiting for an operator.
#[derive(Debug, Serialize)]
struct Pending {
    cell: String,
    agent: String,
    request_id: String,
    reason: String,
}

fn pending(reports: &[CellReport]) -> Vec<Pending> {
    reports
        .iter()
        .flat_map(|c| {
            c.agents.iter().filter_map(|a| {
                let r = a.request.as_ref()?;
                Some(Pending {
                    cell: c.uuid.clone(),
                    agent: a.name.clone(),
                    request_id: r.id.clone(),
                    reason: r.reason.clone(),
                })
            })
        })
        .collect()
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
    next: Option<crate::records::NextRecord>,
    request: Option<crate::records::RequestRecord>,
    /// The last heartbeat the daemon accepted (its records only).
    last_seen: Option<f64>,
    /// When the daemon last started it or saw it die (its records only).
    started_at: Option<f64>,
    /// Why it is not healthy (its records only).
    why: Option<String>,
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
            // The file's heartbeat; if it is gone or unusable, the last
            // one the daemon accepted (its records, not a claim).
            // The daemon goes by the newest beat it accepted: a file
            // rewritten with an older time does not age the agent.
            let file_seen = heartbeat.as_ref().map(|(_, seen)| *seen);
            let last_seen = match (file_seen, facts.and_then(|f| f.last_seen)) {
                (Some(file), Some(daemon)) => Some(file.max(daemon)),
                (file, daemon) => file.or(daemon),
            };
            let computed = match last_seen {
                _ if frozen => AgentState::Frozen,
                Some(seen) if now - seen <= settings.stale_threshold.as_secs_f64() => {
                    AgentState::Healthy
                }
                Some(_) => AgentState::Stale,
                None => AgentState::Unknown,
            };
            let agent_state = match facts {
                // `state.json` lies where agents write: a claim that all is
                // well (healthy, unknown, exited, frozen) is believed only
                // if the heartbeat file does not say stale (an agent must not
                // hide its own hang from a monitor).
                Some(f) if source == Source::StateJson && !f.state.is_trouble() => {
                    match (f.state, computed) {
                        // No claim of well-being outlives a stale heartbeat.
                        (_, AgentState::Stale) => AgentState::Stale,
                        (AgentState::Healthy, AgentState::Unknown) => AgentState::Stale,
                        (AgentState::Frozen, c) if c != AgentState::Frozen => c,
                        (claim, _) => claim,
                    }
                }
                Some(f) => f.state,
                // No daemon: what waits for an operator stays so until
                // one answers, whoever runs (its records say).
                None => match kept.map(|k| k.state) {
                    Some(
                        state @ (AgentState::AwaitingApproval
                        | AgentState::Abandoned
                        | AgentState::Dead),
                    ) => state,
                    _ => computed,
                },
            };
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
                heartbeat_status: heartbeat.as_ref().and_then(|(hb, _)| hb.status.clone()),
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
                next: facts.and_then(|f| f.next.as_ref()).map(|n| {
                    // A healthy agent's deadline moves with every beat,
                    // which the records may not have yet: the file says.
                    let at = match (n.action.as_str(), last_seen) {
                        ("stale", Some(seen)) if agent_state == AgentState::Healthy => {
                            Some(seen + settings.stale_threshold.as_secs_f64())
                        }
                        _ => n.at,
                    };
                    NextReport {
                        action: n.action.clone(),
                        by: n.by.clone(),
                        at,
                        in_s: at.map(|at| ((at - now) * 10.0).round() / 10.0),
                    }
                }),
                request: match facts {
                    Some(f) => f.request.clone(),
                    None => kept.and_then(|k| k.request.clone()),
                }
                .filter(|_| agent_state == AgentState::AwaitingApproval),
                why: facts
                    .and_then(|f| f.why.clone())
                    .or_else(|| kept.and_then(|k| k.why.clone()))
                    .filter(|_| agent_state != AgentState::Healthy),
                note: disagreement(
                    agent_state,
                    heartbeat.as_ref().map(|(_, seen)| *seen),
                    facts,
                    settings.stale_threshold.as_secs_f64(),
                    now,
                ),
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

/// Why the daemon's state and the heartbeat file seem to disagree, when
/// they do: said, not hidden (BRIEF 8: `status` shows the truth, and a
/// moment's lag is part of it).
fn disagreement(
    state: AgentState,
    file_seen: Option<f64>,
    facts: Option<&Facts>,
    stale_after: f64,
    now: f64,
) -> Option<String> {
    let facts = facts?;
    let fresh = file_seen.is_some_and(|seen| now - seen < stale_after);
    let pid = facts.pid;
    if let (Some(file), Some(daemon)) = (file_seen, facts.last_seen)
        && file < daemon - 0.001
    {
        return Some(
            "its heartbeat file now claims an older time than a beat the daemon accepted: the \
             newest counts"
                .into(),
        );
    }
    match state {
        AgentState::Healthy if !fresh && file_seen.is_some() => Some(
            "its heartbeat is older than its stale threshold: the daemon has not judged it yet"
                .into(),
        ),
        AgentState::Healthy | AgentState::Frozen => None,
        _ if fresh
            && file_seen
                .zip(facts.last_seen)
                .is_none_or(|(file, daemon)| file > daemon + 0.001) =>
        {
            Some("a newer heartbeat than the daemon has read: it is judged in a moment".into())
        }
        _ if fresh
            && file_seen
                .zip(facts.started_at)
                .is_some_and(|(file, started)| file < started) =>
        {
            Some(
                "its heartbeat was written before its current instance started: it does not \
                 count for it"
                    .into(),
            )
        }
        AgentState::Dead | AgentState::Abandoned | AgentState::Exited if pid.is_some() => {
            Some(format!(
                "its process {} is still there: the daemon is stopping it",
                pid.unwrap_or_default()
            ))
        }
        AgentState::AwaitingApproval if pid.is_some() => Some(format!(
            "its process {} is still there, as it was: approve revives it (stopping it \
             first), deny stops it",
            pid.unwrap_or_default()
        )),
        _ => None,
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
                    next: a.next,
                    request: a.request,
                    last_seen: a.last_seen,
                    started_at: a.started_at,
                    why: a.why,
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
                // What happens next is the daemon's word, never a claim
                // read in the cell.
                next: None,
                request: None,
                last_seen: None,
                started_at: None,
                why: None,
            };
            (name, facts)
        })
        .collect();
    (Source::StateJson, facts)
}

fn render(
    reports: &[CellReport],
    daemon: Option<u32>,
    missing: bool,
    records_unreadable: bool,
    summary: &Summary,
    pending: &[Pending],
) -> String {
    let mut out = String::new();
    // Whether a daemon runs is a fact of the root: said once.
    match daemon {
        Some(pid) => out.push_str(&format!("daemon: running (pid {pid})\n")),
        None if missing => out.push_str(
            "daemon: not running, though one supervised this root (its records are in its \
             state directory): nothing is revived until one runs\n",
        ),
        None if records_unreadable => out.push_str(
            "daemon: not running (states computed from heartbeat files; nothing is revived; \
             whether one should run here is in its records, which this user may not read)\n",
        ),
        None => out.push_str(
            "daemon: not running (states computed from heartbeat files; nothing is revived)\n",
        ),
    }
    let rows: Vec<[String; 10]> = reports
        .iter()
        .flat_map(|cell| {
            cell.agents.iter().map(move |a| {
                [
                    escape(short(&cell.uuid)).into_owned(),
                    escape(&a.name).into_owned(),
                    a.state.to_string(),
                    a.heartbeat_age_s.map_or_else(|| "never".into(), age),
                    clip(&escape(a.heartbeat_status.as_deref().unwrap_or("-")), 24),
                    a.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                    a.revive_count.to_string(),
                    a.control.as_deref().unwrap_or("-").to_string(),
                    match a.isolation_configured {
                        Some(next) => format!("{} (next start: {next})", a.isolation),
                        None => a.isolation.to_string(),
                    },
                    next_text(a.next.as_ref()),
                ]
            })
        })
        .collect();
    const HEAD: [&str; 10] = [
        "CELL",
        "AGENT",
        "STATE",
        "HEARTBEAT",
        "STATUS",
        "PID",
        "REVIVES",
        "CONTROL",
        "ISOLATION",
        "NEXT",
    ];
    let mut width = HEAD.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(40);
        }
    }
    let line = |cells: [&str; 10]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            match i {
                // Numbers right-aligned.
                6 => text.push_str(&format!("{cell:>w$}  ")),
                9 => text.push_str(cell),
                _ => text.push_str(&format!("{cell:<w$}  ")),
            }
        }
        text.trim_end().to_string() + "\n"
    };
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&line(HEAD));
    }
    // Limits and problems under their agent's row.
    let mut row = rows.iter();
    for cell in reports {
        for a in &cell.agents {
            if let Some(r) = row.next() {
                out.push_str(&line(r.each_ref().map(String::as_str)));
            }
            if !a.limits.is_empty() {
                out.push_str(&format!(
                    "    limits: {}\n",
                    escape(&crate::daemon::limits::describe(&a.limits))
                ));
            }
            if let Some(why) = &a.why {
                out.push_str(&format!("    why: {}\n", escape(why)));
            }
            if let Some(note) = &a.note {
                out.push_str(&format!("    note: {}\n", escape(note)));
            }
            if let Some(problem) = &a.problem {
                out.push_str(&format!("    ! {}\n", escape(problem)));
            }
        }
    }
    out.push_str("\ncells:\n");
    for cell in reports {
        let mut facts = vec![escape(&cell.status).into_owned()];
        if let Some(name) = cell.name.as_deref().filter(|n| !n.is_empty()) {
            facts.push(format!("name {}", quoted(name)));
        }
        if let Some(mission) = cell.mission.as_deref().filter(|m| !m.is_empty()) {
            facts.push(format!("mission {}", quoted(mission)));
        }
        if cell.agents.is_empty() && cell.error.is_none() {
            facts.push("no agents".into());
        }
        out.push_str(&format!("  {}  {}\n", escape(&cell.uuid), facts.join(", ")));
        if let Some(error) = &cell.error {
            out.push_str(&format!("    ! {}\n", escape(error)));
        }
        match (daemon, cell.source) {
            (Some(_), Source::StateJson) => out.push_str(
                "    states from .lazarus/state.json, which the cell's agents can write\n",
            ),
            (Some(_), Source::Heartbeats) if cell.error.is_none() && !cell.agents.is_empty() => out
                .push_str(
                    "    the daemon is not reporting this cell yet (states computed from \
                     heartbeat files)\n",
                ),
            _ => {}
        }
        if let Some(t) = &cell.timers {
            out.push_str(&format!("    timers: {}\n", t.describe()));
        }
        if cell.checkpointing {
            out.push_str("    checkpoint: being taken (its agents are frozen meanwhile)\n");
        }
        if let Some(c) = &cell.checkpoints {
            out.push_str(&format!(
                "    checkpoints: {}, latest {}\n",
                c.count,
                escape(&c.latest)
            ));
        }
    }
    if !pending.is_empty() {
        out.push_str("\npending approval:\n");
        for p in pending {
            out.push_str(&format!(
                "  {} {}: revival asked ({}, request {}): lazarus-pit approve {} {}   (or deny)\n",
                escape(short(&p.cell)),
                escape(&p.agent),
                escape(&p.reason),
                escape(&p.request_id),
                escape(short(&p.cell)),
                escape(&p.agent),
            ));
        }
    }
    out.push('\n');
    out.push_str(&summary.line());
    out.push('\n');
    out
}

fn short(uuid: &str) -> &str {
    let cut = uuid.char_indices().nth(8).map_or(uuid.len(), |(i, _)| i);
    &uuid[..cut]
}

/// At most `max` characters of `text` (the rest as `…`): one agent's long
/// status must not widen every row.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) if text[i..].chars().count() > 1 => format!("{}…", &text[..i]),
        _ => text.to_string(),
    }
}

/// Agent-written text in quotes, escaped.
fn quoted(text: &str) -> String {
    format!("\"{}\"", escape(text).replace('"', "\\\""))
}

/// `revive in 4.2s`, `stale in 58s`, `revive overdue 0.3s`, `approve (operator)`.
fn next_text(next: Option<&NextReport>) -> String {
    let Some(n) = next else {
        return "-".into();
    };
    if n.by == "operator" {
        return format!("{} (operator)", n.action);
    }
    match n.in_s {
        Some(s) if s >= 0.0 => format!("{} in {}", n.action, duration(s)),
        Some(s) => format!("{} due {} ago", n.action, duration(-s)),
        None => n.action.clone(),
    }
}

/// `4.2s`, `5m 3s`, `2h 5m`.
fn duration(secs: f64) -> String {
    let text = age(secs);
    text.trim_end_matches(" ago").to_string()
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
    fn long_statuses_are_clipped() {
        assert_eq!(super::clip("short", 24), "short");
        assert_eq!(super::clip("abcdef", 4), "abc…");
        assert_eq!(super::clip("abcd", 4), "abcd");
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(3.24), "3.2s ago");
        assert_eq!(age(303.0), "5m 3s ago");
        assert_eq!(age(7500.0), "2h 5m ago");
    }
}
