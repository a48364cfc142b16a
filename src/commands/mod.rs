//! One module per subcommand, named for the verb. Each exposes
//! `run(&Context, args) -> Result<ExitCode>`.

pub mod checkpoint;
pub mod create;
pub mod demo;
pub mod destroy;
pub mod docs;
pub mod events;
pub mod heartbeat;
pub mod join;
pub mod leave;
pub mod lifecycle;
pub mod list;
pub mod metrics;
pub mod processes;
pub mod program;
pub mod revive;
pub mod set;
pub mod show;
pub mod status;

use crate::cell::Root;
use crate::config::Config;
use crate::error::{Error, Result};

/// What every command gets: the loaded configuration, the resolved cells
/// root and the output mode.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub root: Root,
    /// `--json`: machine-readable output.
    pub json: bool,
}

/// Prints a JSON value on stdout, pretty, with a final newline.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Checks an agent name, as a user-facing error.
pub(crate) fn check_agent_name(name: &str) -> Result<()> {
    crate::cell::name::validate_agent_name(name).map_err(|reason| Error::InvalidAgentName {
        name: name.to_string(),
        reason,
    })
}

/// The role recorded when none is given.
pub(crate) const DEFAULT_ROLE: &str = "agent";

/// Whether the daemon of this root (or, with none running, this process)
/// can run agents at `level`: an agent is never added with a level it
/// would not start with. The reason if not.
pub(crate) fn isolation_usable(
    ctx: &Context,
    level: crate::cell::manifest::Isolation,
) -> std::result::Result<(), String> {
    use crate::cell::manifest::Isolation;
    match level {
        Isolation::Directory => Ok(()),
        Isolation::MountNamespace => {
            let pid = crate::daemon::lock::holder(&ctx.root.path).unwrap_or(std::process::id());
            crate::daemon::sandbox::available_in(pid)?;
            // A hidden path above the cells would hide the cell itself.
            let root = std::fs::canonicalize(&ctx.root.path).unwrap_or(ctx.root.path.clone());
            match ctx
                .config
                .isolation
                .hidden_paths
                .iter()
                .find(|p| root.starts_with(p) || ctx.root.path.starts_with(p))
            {
                Some(p) => Err(format!(
                    "[isolation] hidden_paths: {} would hide the cells root {} from its agents",
                    p.display(),
                    ctx.root.path.display()
                )),
                None => Ok(()),
            }
        }
        Isolation::Podman => crate::daemon::podman::available(&ctx.config.isolation),
    }
}
