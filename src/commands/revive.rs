//! `revive`, `approve`, `deny`: an operator's word on a dead agent.
//!
//! They talk to the daemon through files in the cell's
//! `.lazarus/requests/`, which it watches: `revive` drops a request there;
//! `approve`/`deny` answer, in place, the question the daemon wrote for
//! `revive_requested`, and record `revive_approved`/`revive_denied`. Files
//! survive a daemon that is down: it acts on them when it starts.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::Context;
use crate::cell::{Cell, REQUESTS, STATE, now_rfc3339};
use crate::cli::AgentArgs;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::state::CellState;
use crate::store::AGENT_FILE_LIMIT;

/// `lazarus-pit revive CELL AGENT`: revive now, whatever the policy, and
/// give an abandoned agent a fresh count.
pub fn revive(ctx: &Context, args: AgentArgs) -> Result<ExitCode> {
    super::check_agent_name(&args.agent)?;
    let cell = ctx.root.resolve(&args.cell)?;
    let manifest = cell.read_manifest()?;
    let Some(agent) = manifest.agents.iter().find(|a| a.name == args.agent) else {
        return Err(no_such_agent(&cell, &args.agent));
    };
    if agent.command.is_none() {
        return Err(Error::refused(
            &cell.id,
            format!("revive agent {:?}", args.agent),
            "it has no command in cell.json, so the daemon can only watch it",
        ));
    }
    let millis = chrono::Utc::now().timestamp_millis();
    let name = format!("revive-{}-{millis}.json", args.agent);
    let body = json!({
        "action": "revive",
        "agent": args.agent,
        "requested_by": super::create::current_user(),
        "requested_at": now_rfc3339(),
    });
    write_json(&cell, &name, &body)?;
    report(
        ctx,
        &cell,
        &format!("revival of {} requested", args.agent),
        &name,
    );
    Ok(ExitCode::SUCCESS)
}

/// `lazarus-pit approve|deny CELL AGENT`.
pub fn decide(ctx: &Context, args: AgentArgs, approve: bool) -> Result<ExitCode> {
    super::check_agent_name(&args.agent)?;
    let cell = ctx.root.resolve(&args.cell)?;
    let verb = if approve { "approve" } else { "deny" };
    let _lock = cell.dir.lock(crate::cell::CLI_LOCK_PATIENCE)?;
    let Some((name, mut request)) = pending(&cell, &args.agent) else {
        return Err(Error::refused(
            &cell.id,
            format!("{verb} the revival of {:?}", args.agent),
            "no revival request is pending for it",
        ));
    };
    let decision = if approve { "approved" } else { "denied" };
    let by = super::create::current_user();
    request["decision"] = decision.into();
    request["decided_by"] = by.clone().into();
    request["decided_at"] = now_rfc3339().into();
    let request_id = request["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    write_json(&cell, &name, &request)?;
    let kind = if approve {
        EventKind::ReviveApproved
    } else {
        EventKind::ReviveDenied
    };
    cell.append_events(&[Event::new(kind)
        .with("agent", args.agent.as_str())
        .with("request_id", request_id.as_str())
        .with("by", by)])?;
    report(ctx, &cell, &format!("{request_id} {decision}"), &name);
    Ok(ExitCode::SUCCESS)
}

/// The agent's unanswered request, if any (the newest, should there be
/// several).
fn pending(cell: &Cell, agent: &str) -> Option<(String, Value)> {
    let dir = cell.dir.subdir(REQUESTS).ok()?;
    let mut found: Vec<(String, Value)> = dir
        .entries()
        .ok()?
        .into_iter()
        .filter(|(name, _)| name.ends_with(".json") && !name.starts_with('.'))
        .filter_map(|(name, _)| {
            let bytes = dir.read_file(&name, AGENT_FILE_LIMIT).ok()?;
            let v: Value = serde_json::from_slice(&bytes).ok()?;
            (v["agent"] == agent && v["status"] == "pending" && v.get("decision").is_none())
                .then_some((name, v))
        })
        .collect();
    found.sort_by(|a, b| {
        a.1["requested_at"]
            .as_str()
            .cmp(&b.1["requested_at"].as_str())
    });
    found.pop()
}

fn write_json(cell: &Cell, name: &str, body: &Value) -> Result<()> {
    cell.dir.create_dirs(REQUESTS)?.write_atomic(
        name,
        &crate::store::json_document(body),
        0o644,
    )?;
    Ok(())
}

fn no_such_agent(cell: &Cell, agent: &str) -> Error {
    Error::refused(
        &cell.id,
        format!("act on agent {agent:?}"),
        "no agent of that name is in the cell",
    )
}

/// Says what was done, and whether a daemon is there to act on it.
fn report(ctx: &Context, cell: &Cell, what: &str, file: &str) {
    let daemon = cell
        .dir
        .read_file(STATE, AGENT_FILE_LIMIT * 16)
        .ok()
        .and_then(|b| CellState::from_slice(&b).ok())
        .and_then(|s| s.daemon_pid)
        .filter(|pid| super::status::process_exists(*pid));
    if ctx.json {
        super::print_json(&json!({
            "cell": cell.id,
            "request": format!("{REQUESTS}/{file}"),
            "daemon_pid": daemon,
        }));
        return;
    }
    println!("{what} in {}", cell.id);
    if daemon.is_none() {
        eprintln!(
            "warning: no daemon is running for this cell; it will act on this when it starts"
        );
    }
}
