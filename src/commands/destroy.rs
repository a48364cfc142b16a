//! `cell destroy --yes`: tear a cell down. Marks it `destroyed` first (so
//! the daemon lets go of it), then removes `workspace/`, `bus/`,
//! `checkpoints/` and `.lazarus/` without following any symlink out of the
//! cell. `cell.json` and `logs/` stay as the audit trail; `--purge`
//! removes the whole directory: first renamed out of the root's cells (a
//! dot-name, which is never a cell), so neither the daemon nor anyone
//! looking sees a half-removed cell, then removed. Files written into it
//! meanwhile (by the daemon, or an agent still running) are removed too.

use std::process::ExitCode;

use super::Context;
use super::processes::Want;
use crate::cell::lifecycle::{CellStatus, Trigger};
use crate::cli::DestroyArgs;
use crate::error::{Error, Result};

/// What a destroy removes; everything else stays.
const REMOVED: &[&str] = &["workspace", "bus", "checkpoints", ".lazarus"];

pub fn run(ctx: &Context, args: DestroyArgs) -> Result<ExitCode> {
    // A usage error whatever the CELL: the full id when it resolves.
    if !args.yes {
        let named = ctx
            .root
            .resolve(&args.cell)
            .map_or(args.cell.clone(), |c| c.id);
        return Err(Error::Usage(format!(
            "refusing to destroy cell {named} without --yes"
        )));
    }
    let cell = ctx.root.resolve(&args.cell)?;
    let since = super::status::unix_now();
    let marked = super::lifecycle::apply(ctx, &cell, Trigger::Destroy);
    // First what archive does to the agents: nothing is removed from under
    // a running agent.
    if let Some(note) = super::processes::follow(ctx, &cell, Want::Stopped, since)? {
        eprintln!("{}: {note}", cell.id);
    }
    if args.purge {
        // A purge goes ahead even if the cell was already destroyed or its
        // manifest is unreadable: the directory is going away.
        let root = ctx.root.open()?;
        let gone = format!(
            ".lazarus-destroying-{}-{}",
            cell.id,
            uuid::Uuid::new_v4().simple()
        );
        root.rename(&cell.id, &gone)?;
        root.remove_tree(&gone)?;
        println!("{}: purged", cell.id);
    } else {
        // Destroying a destroyed cell again finishes the job (its status may
        // have been set by hand, by anyone who can write cell.json).
        if let Err(e) = marked
            && !cell
                .read_manifest()
                .is_ok_and(|m| m.status() == CellStatus::Destroyed)
        {
            return Err(e);
        }
        for name in REMOVED {
            cell.dir.remove_tree(name)?;
        }
        println!("{}: destroyed (cell.json and logs/ kept)", cell.id);
    }
    Ok(ExitCode::SUCCESS)
}
