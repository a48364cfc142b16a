//! `cell set CELL [--agent NAME] KEY=VALUE...`: change cell or agent
//! settings through the same locked rewrite as every other command, so
//! fields this program does not know survive and no edit is lost to a
//! concurrent one. The daemon sees the rewrite like any edit of
//! `cell.json` and records `settings_changed` when it takes it.

use std::process::ExitCode;

use serde_json::json;

use super::Context;
use crate::cell::Cell;
use crate::cell::fields::{self, Assigned};
use crate::cell::manifest::Manifest;
use crate::cli::SetArgs;
use crate::error::{Error, Result};

pub fn run(ctx: &Context, args: SetArgs) -> Result<ExitCode> {
    if let Some(agent) = &args.agent {
        super::check_agent_name(agent)?;
    }
    let pairs: Vec<(&str, &str)> = args
        .assignments
        .iter()
        .map(|a| fields::split(a).map_err(Error::Usage))
        .collect::<Result<_>>()?;
    let cell = ctx.root.resolve(&args.cell)?;
    let target = match &args.agent {
        Some(a) => format!("agent {a:?}"),
        None => "the cell".to_string(),
    };
    let changed = cell.update(|m| {
        let base = m.clone();
        let changed = apply(ctx, &cell, &base, m, args.agent.as_deref(), &pairs)
            .map_err(|e| e.at(&cell, &target))?;
        Ok((changed, Vec::new()))
    })?;
    if ctx.json {
        let changes: Vec<_> = changed
            .iter()
            .map(|c| json!({"key": c.key, "before": c.before, "after": c.after}))
            .collect();
        super::print_json(&json!({
            "cell": cell.id,
            "agent": args.agent,
            "changed": changes,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let owner = match &args.agent {
        Some(a) => format!("{} agent {a}", cell.id),
        None => cell.id.clone(),
    };
    for c in changed.iter().filter(|c| c.before != c.after) {
        println!(
            "{}: {}",
            crate::text::escape(&owner),
            crate::text::escape(&c.describe())
        );
    }
    if changed.iter().all(|c| c.before == c.after) {
        println!("{}: nothing changed", crate::text::escape(&owner));
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets every `(key, value)` on the cell or `agent` of `m`, all or none,
/// and checks what only the whole result shows, against `base` (the
/// manifest as it was: an agent not in it is new): an isolation level the
/// daemon cannot give, a program that cannot be found.
pub(crate) fn apply(
    ctx: &Context,
    cell: &Cell,
    base: &Manifest,
    m: &mut Manifest,
    agent: Option<&str>,
    pairs: &[(&str, &str)],
) -> std::result::Result<Vec<Assigned>, Refusal> {
    let mut next = m.clone();
    let mut changed = Vec::new();
    for (key, value) in pairs {
        changed.push(
            fields::assign(&mut next, agent, key, value).map_err(|why| Refusal {
                usage: fields::is_usage(&why),
                why,
            })?,
        );
    }
    // The isolation each affected agent would start with.
    let affected: Vec<_> = next
        .agents
        .iter()
        .filter(|a| agent.is_none_or(|name| a.name == name))
        .collect();
    for a in &affected {
        let before = base.agent(&a.name);
        let level = a.isolation.or(next.isolation).unwrap_or_default();
        let was = before
            .and_then(|b| b.isolation)
            .or(base.isolation)
            .unwrap_or_default();
        if level != was || before.is_none() {
            super::isolation_usable(ctx, level).map_err(Refusal::from)?;
        }
        if before.is_none_or(|b| b.command != a.command)
            && let Some(why) = super::program::unresolvable(cell, &next, a)
        {
            return Err(why.into());
        }
    }
    if agent.is_none()
        && let Some(level) = next.isolation.filter(|l| Some(*l) != base.isolation)
    {
        super::isolation_usable(ctx, level).map_err(Refusal::from)?;
    }
    *m = next;
    Ok(changed)
}

/// Why settings were not taken: in what was typed (`usage`, exit 2) or in
/// the cell or host (exit 1).
#[derive(Debug)]
pub(crate) struct Refusal {
    usage: bool,
    why: String,
}

impl From<String> for Refusal {
    fn from(why: String) -> Refusal {
        Refusal { usage: false, why }
    }
}

impl Refusal {
    /// The command's error: "cell C: cannot set TARGET's settings: WHY".
    pub(crate) fn at(self, cell: &Cell, target: &str) -> Error {
        self.into_error(cell, &format!("set {target}'s settings"))
    }

    pub(crate) fn into_error(self, cell: &Cell, action: &str) -> Error {
        let refused = Error::refused(&cell.id, action, self.why);
        if self.usage {
            Error::Usage(refused.to_string())
        } else {
            refused
        }
    }
}
