//! `cell leave`: remove an agent from a cell.

use std::process::ExitCode;

use super::Context;
use super::processes::Want;
use crate::cli::LeaveArgs;
use crate::error::Result;
use crate::events::{Event, EventKind};

pub fn run(ctx: &Context, args: LeaveArgs) -> Result<ExitCode> {
    super::check_agent_name(&args.agent)?;
    let cell = ctx.root.resolve(&args.cell)?;
    let since = super::status::unix_now();
    let event = cell.update(|m| {
        let Some(index) = m.agents.iter().position(|a| a.name == args.agent) else {
            return Err(super::revive::no_such_agent(
                &cell,
                m,
                &args.agent,
                "remove",
            ));
        };
        // The daemon stops its processes and leaves `agent_left` to us.
        crate::records::Records::announce_leave(
            &ctx.config.daemon,
            &ctx.root.path,
            &cell.id,
            &args.agent,
        );
        let agent = m.agents.remove(index);
        let event = Event::new(EventKind::AgentLeft)
            .with("agent", agent.name.clone())
            .with("role", agent.role.clone().unwrap_or_default());
        Ok((event, vec![]))
    })?;
    // Recorded once its processes are gone (or, if they cannot be
    // confirmed gone, still: it has left cell.json).
    let followed = super::processes::follow(ctx, &cell, Want::Left(args.agent.clone()), since);
    cell.append_events(&[event])?;
    if let Some(note) = followed? {
        eprintln!("{}: {note}", cell.id);
    }
    if !ctx.json {
        println!("{} left {}", args.agent, cell.id);
    }
    Ok(ExitCode::SUCCESS)
}
