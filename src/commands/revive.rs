//! `revive`, `approve`, `deny`: an operator's word on a dead agent.
//!
//! They talk to the daemon through the inbox of its state directory (see
//! [`crate::records`]), which only root and the daemon's user can write:
//! nothing an agent writes in its cell counts as an operator's decision.
//! `approve`/`deny` answer the request the daemon recorded for
//! `revive_requested` and record `revive_approved`/`revive_denied` with
//! `by`. Requests wait in the inbox while the daemon is down: it acts on
//! them when it starts.

use std::process::ExitCode;

use serde_json::json;

use super::Context;
use crate::cell::manifest::Manifest;
use crate::cell::{Cell, now_rfc3339};
use crate::cli::AgentArgs;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::records::{Records, Request, RequestAction};
use crate::state::AgentState;

/// `lazarus-pit revive CELL AGENT`: revive now, whatever the policy, and
/// give an abandoned agent a fresh count.
pub fn revive(ctx: &Context, args: AgentArgs) -> Result<ExitCode> {
    let posted = request_revival(ctx, &args.cell, &args.agent, &super::create::current_user())?;
    report(ctx, &posted);
    Ok(ExitCode::SUCCESS)
}

/// `lazarus-pit approve|deny CELL AGENT`.
pub fn decide(ctx: &Context, args: AgentArgs, approve: bool) -> Result<ExitCode> {
    let posted = answer(
        ctx,
        &args.cell,
        &args.agent,
        approve,
        &super::create::current_user(),
    )?;
    report(ctx, &posted);
    Ok(ExitCode::SUCCESS)
}

/// A request handed to the daemon: in which cell, through which records,
/// what it was (for people), and its file in the inbox.
pub(crate) struct Posted {
    pub cell: Cell,
    pub records: Records,
    pub what: String,
    pub file: String,
}

/// Asks the daemon to revive `agent` now, whatever its policy; `by` is
/// who asks (a user, or the HTTP API's caller).
pub(crate) fn request_revival(ctx: &Context, cell: &str, agent: &str, by: &str) -> Result<Posted> {
    super::check_agent_name(agent)?;
    let cell = ctx.root.resolve(cell)?;
    let manifest = cell.read_manifest()?;
    let Some(found) = manifest.agents.iter().find(|a| a.name == agent) else {
        return Err(no_such_agent(&cell, &manifest, agent, "revive"));
    };
    if found.command.is_none() {
        return Err(Error::refused(
            &cell.id,
            format!("revive agent {agent:?}"),
            "it has no command in cell.json, so the daemon can only watch it",
        ));
    }
    let records = daemon_records(ctx, &cell, &format!("revive agent {agent:?}"))?;
    let file = post(&records, RequestAction::Revive, &cell, agent, None, by)?;
    Ok(Posted {
        cell,
        records,
        what: format!("revival of {agent} requested"),
        file,
    })
}

/// Answers the revival request the daemon recorded for `agent`, and
/// records `revive_approved` or `revive_denied` with `by`.
pub(crate) fn answer(
    ctx: &Context,
    cell: &str,
    agent: &str,
    approve: bool,
    by: &str,
) -> Result<Posted> {
    super::check_agent_name(agent)?;
    let cell = ctx.root.resolve(cell)?;
    let verb = if approve { "approve" } else { "deny" };
    // The same words as `revive` for the same mistake. An unreadable
    // cell.json does not stop an answer to a question the daemon asked.
    if let Ok(m) = cell.read_manifest()
        && m.agent(agent).is_none()
    {
        return Err(no_such_agent(&cell, &m, agent, verb));
    }
    let records = daemon_records(ctx, &cell, &format!("{verb} the revival of {agent:?}"))?;
    // The pending question, from the daemon's record — never from a file
    // in the cell.
    let pending = records
        .read_cell(&cell.id)
        .and_then(|r| r.agents.get(agent).cloned())
        .filter(|a| a.state == AgentState::AwaitingApproval)
        .and_then(|a| a.request);
    let Some(pending) = pending else {
        return Err(Error::refused(
            &cell.id,
            format!("{verb} the revival of {agent:?}"),
            "no revival request is pending for it",
        ));
    };
    let action = if approve {
        RequestAction::Approve
    } else {
        RequestAction::Deny
    };
    let file = post(&records, action, &cell, agent, Some(&pending.id), by)?;
    let kind = if approve {
        EventKind::ReviveApproved
    } else {
        EventKind::ReviveDenied
    };
    cell.append_events(&[Event::new(kind)
        .with("agent", agent)
        .with("request_id", pending.id.as_str())
        .with("by", by)])?;
    let decision = if approve { "approved" } else { "denied" };
    Ok(Posted {
        cell,
        records,
        what: format!("{} {decision}", pending.id),
        file,
    })
}

/// The daemon's records of this root. None yet means no daemon has used
/// this root with this state directory: most likely the CLI was not given
/// the daemon's config, and a request dropped there would never be read.
fn daemon_records(ctx: &Context, cell: &Cell, action: &str) -> Result<Records> {
    match Records::open_existing(&ctx.config.daemon, &ctx.root.path)? {
        Some(records) => Ok(records),
        None => Err(Error::refused(
            &cell.id,
            action,
            format!(
                "no daemon has used this cells root with the state directory {} (give this \
                 command the daemon's config, --config or LAZARUS_CONFIG, for its \
                 [daemon] state_dir; or start the daemon once)",
                crate::records::state_dir(&ctx.config.daemon)?.display()
            ),
        )),
    }
}

fn post(
    records: &Records,
    action: RequestAction,
    cell: &Cell,
    agent: &str,
    request_id: Option<&str>,
    by: &str,
) -> Result<String> {
    let request = Request {
        action,
        cell: cell.id.clone(),
        agent: agent.to_string(),
        request_id: request_id.map(str::to_string),
        to: None,
        by: by.to_string(),
        at: now_rfc3339(),
    };
    records.post(&request).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot hand the request to the daemon: {e}"),
        ))
    })
}

/// "cell C: cannot VERB agent "x": no agent of that name is in the cell
/// (its agents: a, b; did you mean a?)": one sentence for every command
/// that names an agent the cell does not have.
pub(crate) fn no_such_agent(cell: &Cell, manifest: &Manifest, agent: &str, verb: &str) -> Error {
    let names: Vec<&str> = manifest.agents.iter().map(|a| a.name.as_str()).collect();
    let mut why = "no agent of that name is in the cell".to_string();
    match crate::text::closest(agent, &names) {
        Some(close) => why.push_str(&format!(" (did you mean {close}?)")),
        None if names.is_empty() => why.push_str(" (it has no agents)"),
        None if names.len() <= 10 => why.push_str(&format!(" (its agents: {})", names.join(", "))),
        None => {}
    }
    Error::refused(&cell.id, format!("{verb} agent {agent:?}"), why)
}

/// Says what was done, and whether a daemon is there to act on it: the one
/// holding the root's lock, and reading these records.
fn report(ctx: &Context, posted: &Posted) {
    let Posted {
        cell,
        records,
        what,
        file,
    } = posted;
    let running = crate::daemon::lock::holder(&ctx.root.path);
    let daemon = running.filter(|pid| records.claimed_by() == Some(*pid));
    if ctx.json {
        super::print_json(&json!({
            "cell": cell.id,
            "request": records.inbox_path().join(file),
            "daemon_pid": daemon,
        }));
        return;
    }
    println!("{what} in {}", cell.id);
    match (running, daemon) {
        (_, Some(_)) => {}
        (Some(pid), None) => eprintln!(
            "warning: the daemon running on this root (pid {pid}) uses another state \
             directory than {}: it will not see this request (give this command the \
             daemon's config)",
            records.path().display()
        ),
        (None, None) => eprintln!(
            "warning: no daemon is running on this root; it will act on this when it starts"
        ),
    }
}
