//! `cell freeze`, `cell thaw`, `cell archive`: status moves checked
//! against the one table of legal transitions
//! ([`crate::cell::lifecycle::ALLOWED_TRANSITIONS`]).

use std::process::ExitCode;

use serde_json::json;

use super::Context;
use super::processes::{Want, follow};
use crate::cell::Cell;
use crate::cell::lifecycle::{CellStatus, Trigger, transition};
use crate::cli::CellArg;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};

pub fn run(ctx: &Context, args: CellArg, trigger: Trigger) -> Result<ExitCode> {
    let cell = ctx.root.resolve(&args.cell)?;
    if trigger == Trigger::Archive
        && ctx.config.cells.checkpoint_on_archive
        && cell.read_manifest()?.status().is_monitored()
    {
        // `[cells] checkpoint_on_archive`: the snapshot first. One that
        // fails (its agents can break checkpoints/) does not stop the
        // archive: archiving is how a mission is stopped.
        match super::checkpoint::take(ctx, &cell, "archive") {
            Ok(taken) => eprintln!(
                "{}: checkpoint {}",
                cell.id,
                taken["path"].as_str().unwrap_or_default()
            ),
            Err(e) => eprintln!("warning: no checkpoint before the archive: {e}"),
        }
    }
    let since = super::status::unix_now();
    let (from, to) = apply(ctx, &cell, trigger)?;
    let want = match trigger {
        Trigger::Freeze => Some(Want::Frozen),
        Trigger::Thaw => Some(Want::Thawed),
        Trigger::Archive | Trigger::Destroy => Some(Want::Stopped),
        Trigger::Join => None,
    };
    if let Some(want) = want
        && let Some(note) = follow(ctx, &cell, want, since)?
    {
        eprintln!("{}: {note}", cell.id);
    }
    if ctx.json {
        super::print_json(&json!({
            "cell": cell.id, "from": from.as_str(), "to": to.as_str()
        }));
    } else {
        println!("{}: {from} → {to}", cell.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Applies `trigger` under the cell lock, recording `cell_status_changed`
/// (and telling the daemon first, so it does not record it again);
/// returns the statuses before and after.
pub(crate) fn apply(
    ctx: &Context,
    cell: &Cell,
    trigger: Trigger,
) -> Result<(CellStatus, CellStatus)> {
    cell.update(|m| {
        let from = m.status();
        let to = transition(&from, trigger)
            .map_err(|reason| Error::refused(&cell.id, trigger.verb(), reason))?;
        crate::records::Records::announce_move(
            &ctx.config.daemon,
            &ctx.root.path,
            &cell.id,
            to.as_str(),
        );
        m.status = Some(to.clone());
        let event = Event::new(EventKind::CellStatusChanged)
            .with("from", from.as_str())
            .with("to", to.as_str());
        Ok(((from, to), vec![event]))
    })
}
