//! `cell destroy --yes`: tear a cell down. Marks it `destroyed` first (so
//! the daemon lets go of it), then removes `workspace/`, `bus/`,
//! `checkpoints/` and `.lazarus/` without following any symlink out of the
//! cell. `cell.json` and `logs/` stay as the audit trail; `--purge`
//! removes the whole directory.

use std::process::ExitCode;

use crate::Context;
use crate::cell::lifecycle::Trigger;
use crate::cli::DestroyArgs;
use crate::error::{Error, Result};

/// What a destroy removes; everything else stays.
const REMOVED: &[&str] = &["workspace", "bus", "checkpoints", ".lazarus"];

pub fn run(ctx: &Context, args: DestroyArgs) -> Result<ExitCode> {
    let cell = ctx.root.resolve(&args.cell)?;
    if !args.yes {
        return Err(Error::Usage(format!(
            "refusing to destroy cell {} without --yes",
            cell.id
        )));
    }
    let marked = super::lifecycle::apply(&cell, Trigger::Destroy);
    // A purge goes ahead even if the cell was already destroyed or its
    // manifest is unreadable: the directory is going away.
    if !args.purge {
        marked?;
    }
    for name in REMOVED {
        cell.dir.remove_tree(name)?;
    }
    if args.purge {
        let root = ctx.root.open()?;
        root.remove_tree(&cell.id)?;
        println!("{}: purged", cell.id);
    } else {
        println!("{}: destroyed (cell.json and logs/ kept)", cell.id);
    }
    Ok(ExitCode::SUCCESS)
}
