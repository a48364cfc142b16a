//! lazarus-pit keeps AI agents alive inside isolated mission cells: a
//! daemon that watches each cell's manifest and its agents' heartbeat
//! files, and the command-line client operators and agents use.
//!
//! # Layout
//!
//! - [`cli`]: clap types, parsing only.
//! - [`commands`]: one module per subcommand; each takes a [`Context`].
//! - [`config`]: `lazarus-pit.toml`, defaults and precedence.
//! - [`cell`]: the `cell.json` model, agent names, statuses and their legal
//!   moves, heartbeats, and handles to the root and to one cell.
//! - [`store`]: the only code that touches files in a cell: symlink-safe
//!   opens, atomic replace, locked update, whole-line append.
//! - [`events`]: event names and the `events.jsonl` line format.
//! - [`state`]: the daemon's `state.json` model.
//! - [`error`]: the error type and exit codes.

pub mod cell;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod events;
pub mod state;
pub mod store;
pub mod supervisor;

use std::process::ExitCode;

use cell::Root;
use cli::{CellCommand, Cli, Command};
use config::Config;
use error::Result;

/// What every command gets: the loaded configuration, the resolved cells
/// root and the output mode.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub root: Root,
    /// `--json`: machine-readable output.
    pub json: bool,
}

/// Runs the command line. Returns the exit code for successful runs that
/// still report a condition (e.g. `daemon --once` finding a stale agent).
pub fn run(cli: Cli) -> Result<ExitCode> {
    init_cli_logging();
    let loaded = Config::load(cli.config.as_deref())?;
    for key in &loaded.unknown_keys {
        let file = loaded
            .source
            .as_deref()
            .unwrap_or(std::path::Path::new("config"));
        tracing::warn!("{}: unknown key {key:?} ignored", file.display());
    }
    let root = Root::new(loaded.config.root(cli.root.as_deref()));
    let ctx = Context {
        config: loaded.config,
        root,
        json: cli.json,
    };
    if (cli.list_cells || cli.status) && cli.command.is_some() {
        return Err(error::Error::Usage(
            "--list-cells and --status cannot be combined with a command".into(),
        ));
    }
    let command = match cli.command {
        Some(c) => c,
        None if cli.list_cells => Command::Cell(CellCommand::List),
        None if cli.status => Command::Status(cli::StatusArgs { cell: None }),
        None => Command::Daemon(cli::DaemonArgs { once: false }),
    };
    match command {
        Command::Daemon(args) => commands::daemon::run(&ctx, args),
        Command::Cell(cmd) => match cmd {
            CellCommand::Create(args) => commands::create::run(&ctx, args),
            CellCommand::List => commands::list::run(&ctx),
            CellCommand::Show(args) => commands::show::run(&ctx, args),
            CellCommand::Join(args) => commands::join::run(&ctx, args),
            CellCommand::Leave(args) => commands::leave::run(&ctx, args),
            CellCommand::Freeze(args) => {
                commands::lifecycle::run(&ctx, args, cell::lifecycle::Trigger::Freeze)
            }
            CellCommand::Thaw(args) => {
                commands::lifecycle::run(&ctx, args, cell::lifecycle::Trigger::Thaw)
            }
            CellCommand::Archive(args) => {
                commands::lifecycle::run(&ctx, args, cell::lifecycle::Trigger::Archive)
            }
            CellCommand::Destroy(args) => commands::destroy::run(&ctx, args),
        },
        Command::Status(args) => commands::status::run(&ctx, args),
        Command::Heartbeat(args) => commands::heartbeat::run(&ctx, args),
        Command::Events(args) => commands::events::run(&ctx, args),
    }
}

/// Warnings and errors on stderr, without timestamps: the CLI's audience
/// is a person at a terminal. `RUST_LOG` overrides the level.
fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .try_init();
}
