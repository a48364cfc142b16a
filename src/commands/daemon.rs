//! `daemon` (and bare `lazarus-pit`): the supervisor.

use std::process::ExitCode;

use crate::Context;
use crate::cli::DaemonArgs;
use crate::error::{Error, Result};

pub fn run(_ctx: &Context, _args: DaemonArgs) -> Result<ExitCode> {
    Err(Error::Usage(
        "the daemon is not part of this build yet; use the cell, status and heartbeat commands"
            .into(),
    ))
}
