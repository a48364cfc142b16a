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
    check(args.agent.is_some(), &pairs)?;
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
    if let Some(c) = changed
        .iter()
        .find(|c| c.key == "name" && c.before != c.after)
        && let Some(serde_json::Value::String(name)) = &c.after
    {
        warn_name_clashes(ctx, name, &cell.id);
    }
    if ctx.json {
        let changes: Vec<_> = changed
            .iter()
            .map(|c| {
                let c = c.redacted();
                json!({"key": c.key, "before": c.before, "after": c.after})
            })
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
    if let Some(name) = &args.agent {
        warn_substitutes(&cell, name);
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
            fields::assign(&mut next, agent, key, value).map_err(|e| Refusal {
                usage: e.usage,
                why: e.message,
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
        // The program, where its command or its isolation changed.
        if (before.is_none_or(|b| b.command != a.command) || level != was)
            && let Some(why) = super::program::unresolvable(
                cell,
                &next,
                a,
                &ctx.config.isolation.hidden_paths,
                super::program::daemon_path(&ctx.root.path).as_deref(),
            )
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

/// Says when a cell's new name also reaches other cells as a `CELL`
/// argument (named so, or an id starting with it): such a name is
/// ambiguous wherever it is given.
pub(crate) fn warn_name_clashes(ctx: &Context, name: &str, own: &str) {
    if name.is_empty() {
        return;
    }
    let clashes = ctx.root.name_clashes(name, own);
    if !clashes.is_empty() {
        tracing::warn!(
            "the name {} also reaches {}: give UUIDs where it would be ambiguous",
            crate::text::escape(&format!("{name:?}")),
            clashes.join(", ")
        );
    }
}

/// Every usage error of `pairs`, before any cell is read: a mistyped key
/// or value exits 2 whatever the CELL.
pub(crate) fn check(agent: bool, pairs: &[(&str, &str)]) -> Result<()> {
    for (key, value) in pairs {
        fields::parse(agent, key, value).map_err(Error::Usage)?;
    }
    Ok(())
}

/// Says what a substitute setting will not do: name an agent the cell
/// lacks (skipped when it dies), or give policy `substitute` none.
pub(crate) fn warn_substitutes(cell: &Cell, agent: &str) {
    let Ok(m) = cell.read_manifest() else {
        return;
    };
    let Some(a) = m.agent(agent) else {
        return;
    };
    for s in a.substitutes.iter().flatten() {
        if m.agent(s).is_none() {
            tracing::warn!(
                "cell {}: substitute {} of {agent} is not an agent of the cell (skipped while it is not)",
                cell.id,
                crate::text::escape(&format!("{s:?}"))
            );
        }
    }
    let policy = a.revive_policy.or(m.revive_policy);
    if policy == Some(crate::cell::manifest::RevivePolicy::Substitute)
        && a.substitutes.as_ref().is_none_or(|s| s.is_empty())
    {
        tracing::warn!(
            "cell {}: {agent} has revive_policy substitute but no substitutes: it is dead when it dies",
            cell.id
        );
    }
}
