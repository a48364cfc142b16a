//! `cell join`: add an agent to a cell. The first join moves a
//! `provisioned` cell to `active`.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use super::Context;
use crate::cell::lifecycle::{Trigger, transition};
use crate::cell::manifest::{Agent, AgentCommand};
use crate::cell::now_rfc3339;
use crate::cli::JoinArgs;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};

pub fn run(ctx: &Context, args: JoinArgs) -> Result<ExitCode> {
    super::check_agent_name(&args.agent)?;
    let env = parse_env(&args.env)?;
    let settings = args.settings.assignments();
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    super::set::check(true, &pairs)?;
    let command = match args.command.as_slice() {
        [] => None,
        [program, ..] if program.trim().is_empty() => {
            return Err(Error::Usage(
                "the command after -- has no program (an empty first argument)".into(),
            ));
        }
        [one] if one.contains(char::is_whitespace) => Some(AgentCommand::Shell(one.clone())),
        argv => Some(AgentCommand::Argv(argv.to_vec())),
    };
    let cell = ctx.root.resolve(&args.cell)?;
    let role = args.role.unwrap_or_else(|| super::DEFAULT_ROLE.to_string());
    let agent = cell.update(|m| {
        let status = m.status();
        if !status.accepts_members() {
            return Err(Error::refused(
                &cell.id,
                format!("add agent {:?}", args.agent),
                format!("the cell is {status}"),
            ));
        }
        if m.agent(&args.agent).is_some() {
            return Err(Error::refused(
                &cell.id,
                format!("add agent {:?}", args.agent),
                "an agent of that name is already in the cell",
            ));
        }
        let mut agent = Agent::new(&args.agent, Some(role.clone()), now_rfc3339());
        agent.command = command;
        agent.env = env;
        // The flags go through the same checks as `cell set`, and so do
        // the isolation it would start with (an agent never runs without
        // the isolation it is given: a level the daemon cannot provide is
        // refused here, not at its start) and its program.
        let mut next = m.clone();
        next.agents.push(agent);
        super::set::apply(ctx, &cell, m, &mut next, Some(&args.agent), &pairs)
            .map_err(|e| e.into_error(&cell, &format!("add agent {:?}", args.agent)))?;
        let agent = next.agents.last().cloned().expect("pushed above");
        m.agents.push(agent.clone());
        let mut events = vec![
            Event::new(EventKind::AgentJoined)
                .with("agent", args.agent.clone())
                .with("role", role.clone()),
        ];
        if let Ok(to) = transition(&status, Trigger::Join) {
            crate::records::Records::announce_move(
                &ctx.config.daemon,
                &ctx.root.path,
                &cell.id,
                to.as_str(),
            );
            m.status = Some(to.clone());
            events.push(
                Event::new(EventKind::CellStatusChanged)
                    .with("from", status.as_str())
                    .with("to", to.as_str()),
            );
        }
        Ok((agent, events))
    })?;
    // The inbox is a convenience for the message bus; the join stands
    // without it.
    if let Err(e) = cell.dir.create_dirs(&format!("bus/inbox/{}", agent.name)) {
        tracing::warn!(
            "cell {}: could not create the inbox of {}: {e}",
            cell.id,
            agent.name
        );
    }
    super::set::warn_substitutes(&cell, &agent.name);
    if ctx.json {
        super::print_json(&json!({ "cell": cell.id, "agent": agent }));
    } else {
        println!("{} joined {}", agent.name, cell.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `K=V` pairs into the manifest's `env` object.
fn parse_env(pairs: &[String]) -> Result<Option<Map<String, Value>>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut env = Map::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                // The same names `cell set env.K=V` takes.
                crate::cell::fields::parse(true, &format!("env.{k}"), v)
                    .map_err(|e| Error::Usage(format!("--env {pair:?}: {e}")))?;
                env.insert(k.to_string(), Value::String(v.to_string()));
            }
            _ => {
                return Err(Error::Usage(format!(
                    "--env {pair:?}: expected KEY=VALUE with a non-empty KEY"
                )));
            }
        }
    }
    Ok(Some(env))
}
