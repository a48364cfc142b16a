//! `cell list` / `--list-cells`: one line per cell, `<uuid>: <status> — <mission>`.

use std::process::ExitCode;

use serde_json::json;

use super::Context;
use crate::cell::Listed;
use crate::error::Result;
use crate::text::escape;

pub fn run(ctx: &Context) -> Result<ExitCode> {
    let cells = ctx.root.list()?;
    if ctx.json {
        let rows: Vec<_> = cells
            .iter()
            .map(|listed| match listed {
                Listed::Cell { cell, manifest } => json!({
                    "uuid": cell.id,
                    "status": manifest.status().as_str(),
                    "name": manifest.name,
                    "mission": manifest.mission,
                    "agents": manifest.agents.len(),
                    "path": cell.path(),
                }),
                Listed::Unreadable { name, error } => json!({
                    "uuid": name,
                    "error": error.to_string(),
                }),
            })
            .collect();
        super::print_json(&serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    if cells.is_empty() {
        eprintln!("no mission cells in {}", ctx.root.path.display());
    }
    let mut out = String::new();
    for listed in &cells {
        match listed {
            Listed::Cell { cell, manifest } => {
                out.push_str(&format!(
                    "{}: {} — {}\n",
                    cell.id,
                    escape(manifest.status().as_str()),
                    escape(manifest.mission.as_deref().unwrap_or(""))
                ));
            }
            Listed::Unreadable { name, error } => {
                out.push_str(&format!("{name}: [unreadable manifest]\n"));
                tracing::warn!("{error}");
            }
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
