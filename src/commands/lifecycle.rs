//! `cell freeze`, `cell thaw`, `cell archive`: status moves checked
//! against the one table of legal transitions.

use std::process::ExitCode;

use serde_json::json;

use crate::Context;
use crate::cell::lifecycle::{CellStatus, check_transition};
use crate::cli::CellArg;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};

/// The status move a command asks for.
#[derive(Debug, Clone, Copy)]
pub enum Move {
    Freeze,
    Thaw,
    Archive,
}

impl Move {
    fn target(self) -> CellStatus {
        match self {
            Move::Freeze => CellStatus::Frozen,
            Move::Thaw => CellStatus::Active,
            Move::Archive => CellStatus::Archived,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Move::Freeze => "freeze",
            Move::Thaw => "thaw",
            Move::Archive => "archive",
        }
    }
}

pub fn run(ctx: &Context, args: CellArg, mv: Move) -> Result<ExitCode> {
    let cell = ctx.root.resolve(&args.cell)?;
    let from = set_status(&cell, mv.target(), mv.verb())?;
    if ctx.json {
        super::print_json(&json!({
            "cell": cell.id, "from": from.as_str(), "to": mv.target().as_str()
        }));
    } else {
        println!("{}: {from} → {}", cell.id, mv.target());
    }
    Ok(ExitCode::SUCCESS)
}

/// Moves the cell to `to` under the cell lock, recording
/// `cell_status_changed`; returns the previous status.
pub(crate) fn set_status(
    cell: &crate::cell::Cell,
    to: CellStatus,
    verb: &str,
) -> Result<CellStatus> {
    cell.update(|m| {
        let from = m.status();
        check_transition(&from, &to).map_err(|reason| Error::refused(&cell.id, verb, reason))?;
        m.status = Some(to.clone());
        let event = Event::new(EventKind::CellStatusChanged)
            .with("from", from.as_str())
            .with("to", to.as_str());
        Ok((from, vec![event]))
    })
}
