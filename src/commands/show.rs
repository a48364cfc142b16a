//! `cell show`: one cell's manifest, for people or (`--json`) as stored.

use std::process::ExitCode;

use super::Context;
use crate::cell::manifest::AgentCommand;
use crate::cli::CellArg;
use crate::error::Result;
use crate::text::escape;

pub fn run(ctx: &Context, args: CellArg) -> Result<ExitCode> {
    let cell = ctx.root.resolve(&args.cell)?;
    let m = cell.read_manifest()?;
    if ctx.json {
        super::print_json(&serde_json::to_value(&m).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    // Every value may have been written by an agent: escaped, all of it.
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<10} {}\n", escape(v)));
    line("uuid:", &cell.id);
    line("name:", m.name.as_deref().unwrap_or("-"));
    line("mission:", m.mission.as_deref().unwrap_or("-"));
    line("status:", m.status().as_str());
    line(
        "created:",
        &format!(
            "{} by {}",
            m.created_at.as_deref().unwrap_or("?"),
            m.created_by.as_deref().unwrap_or("?")
        ),
    );
    line("path:", &cell.path().display().to_string());
    if !m.extra.is_empty() {
        let extra: Vec<String> = m
            .extra
            .iter()
            .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
            .collect();
        line("other:", &extra.join(" "));
    }
    if m.agents.is_empty() {
        line("agents:", "none");
    } else {
        out.push_str("agents:\n");
    }
    for a in &m.agents {
        let mut desc = format!(
            "  {} ({}), joined {}",
            a.name,
            a.role.as_deref().unwrap_or("-"),
            a.joined_at.as_deref().unwrap_or("?")
        );
        match &a.command {
            Some(AgentCommand::Argv(argv)) => desc.push_str(&format!(", command {argv:?}")),
            Some(AgentCommand::Shell(s)) => desc.push_str(&format!(", command sh -c {s:?}")),
            None => desc.push_str(", watched only (no command)"),
        }
        // The limits it is started with (agent over cell).
        if let Some(spec) = crate::cell::settings::SpawnSpec::of(&m, a)
            && !spec.limits.is_empty()
        {
            let limits: Vec<String> = spec
                .limits
                .iter()
                .map(|(name, v)| match name.as_str() {
                    "cpu.max" => format!("{name}={} CPUs", *v as f64 / 100_000.0),
                    _ => format!("{name}={v}"),
                })
                .collect();
            desc.push_str(&format!(", limits {}", limits.join(" ")));
        }
        out.push_str(&escape(&desc));
        out.push('\n');
        // What the daemon applies, and from where (agent > cell > config).
        for (key, value, source) in crate::cell::settings::effective(&ctx.config.cells, &m, a) {
            out.push_str(&format!(
                "    {key:<26} {:<14} ({})\n",
                escape(&value),
                source.as_str()
            ));
        }
        if let Some(env) = a.env.as_ref().filter(|e| !e.is_empty()) {
            // Names only: values may be secrets.
            let names: Vec<&str> = env.keys().map(String::as_str).collect();
            out.push_str(&format!(
                "    {:<26} {}\n",
                "env",
                escape(&names.join(", "))
            ));
        }
    }
    for problem in m.problems() {
        out.push_str(&format!("problem:   {}\n", escape(&problem)));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
