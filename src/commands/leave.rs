//! `cell leave`: remove an agent from a cell.

use std::process::ExitCode;

use crate::Context;
use crate::cli::LeaveArgs;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};

pub fn run(ctx: &Context, args: LeaveArgs) -> Result<ExitCode> {
    super::check_agent_name(&args.agent)?;
    let cell = ctx.root.resolve(&args.cell)?;
    cell.update(|m| {
        let Some(index) = m.agents.iter().position(|a| a.name == args.agent) else {
            return Err(Error::refused(
                &cell.id,
                format!("remove agent {:?}", args.agent),
                "no agent of that name is in the cell",
            ));
        };
        let agent = m.agents.remove(index);
        let event = Event::new(EventKind::AgentLeft)
            .with("agent", agent.name.clone())
            .with("role", agent.role.clone().unwrap_or_default());
        Ok(((), vec![event]))
    })?;
    if !ctx.json {
        println!("{} left {}", args.agent, cell.id);
    }
    Ok(ExitCode::SUCCESS)
}
