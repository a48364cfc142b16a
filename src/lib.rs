//! lazarus-pit keeps AI agents alive inside isolated mission cells: a
//! daemon that watches each cell's manifest and its agents' heartbeat
//! files, and the command-line client operators and agents use.
//!
//! # Layout
//!
//! - [`cli`]: clap types, parsing only.
//! - [`commands`]: one module per subcommand; each takes a
//!   [`commands::Context`]. The daemon is given its config and root, not
//!   the CLI's context: it does not depend on the commands.
//! - [`config`]: `lazarus-pit.toml`, defaults and precedence.
//! - [`cell`]: the `cell.json` model, agent names, statuses and their legal
//!   moves, heartbeats, and handles to the root and to one cell.
//! - [`store`]: the only code that touches files in a cell: symlink-safe
//!   opens, atomic replace, locked update, whole-line append.
//! - [`events`]: event names and the `events.jsonl` line format.
//! - [`json`]: the one format of the JSON documents written to files.
//! - [`state`]: the `state.json` model (published in each cell).
//! - [`records`]: the daemon's own records and the operators' inbox, in its
//!   state directory, apart from anything an agent can write.
//! - [`text`]: agent-written text made safe for a terminal.
//! - [`supervisor`]: the pure decision core — agent health over time,
//!   deadlines, the actions to take — with no I/O and no clock.
//! - [`daemon`]: the I/O shell around it: inotify, timers, signals,
//!   `state.json` writes, the root lock.
//! - [`eventlog`]: the event stream's files: locked appends, rotation.
//! - [`metrics`]: the Prometheus text of cells, agents and the daemon.
//! - [`logging`]: tracing setup for the CLI and the daemon.
//! - [`error`]: the error type and exit codes.

pub mod cell;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod error;
pub mod eventlog;
pub mod events;
pub mod http;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod records;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod text;

use std::process::ExitCode;

use cell::Root;
use cli::{CellCommand, Cli, Command};
use commands::Context;
use config::Config;
use error::Result;

/// `daemon --once`'s exit code when it could not make its pass (another
/// daemon holds the root, the root or the config is unusable); 1 means
/// it ran and an agent is not healthy.
pub const ONCE_COULD_NOT_RUN: u8 = 3;

/// Says why `daemon --once` could not make its pass; its exit code.
fn could_not_run(e: &error::Error) -> ExitCode {
    eprintln!("lazarus-pit: {}", text::escape(&e.to_string()));
    ExitCode::from(ONCE_COULD_NOT_RUN)
}

/// Runs the command line. Returns the exit code for successful runs that
/// still report a condition (e.g. `daemon --once` finding a stale agent).
pub fn run(cli: Cli) -> Result<ExitCode> {
    if (cli.list_cells || cli.status) && cli.command.is_some() {
        logging::init_cli();
        return Err(error::Error::Usage(
            "--list-cells and --status cannot be combined with a command".into(),
        ));
    }
    let bare = cli.command.is_none() && !cli.list_cells && !cli.status;
    let command = match cli.command {
        Some(c) => c,
        None if cli.list_cells => Command::Cell(CellCommand::List),
        None if cli.status => Command::Status(cli::StatusArgs { cell: None }),
        None => Command::Daemon(cli::DaemonArgs { once: false }),
    };
    // Documentation needs no config (a broken one must not hide it).
    match &command {
        Command::Completions(args) => return commands::docs::completions(args.shell),
        Command::Man => return commands::docs::man(),
        _ => {}
    }
    let loaded = Config::load(cli.config.as_deref());
    let log = match (&command, &loaded) {
        (Command::Daemon(_), Ok(loaded)) => Some(logging::init_daemon(&loaded.config.daemon)),
        _ => {
            logging::init_cli();
            None
        }
    };
    let once = matches!(command, Command::Daemon(cli::DaemonArgs { once: true }));
    let loaded = match loaded {
        Err(e) if once && e.exit_code() != 2 => return Ok(could_not_run(&e)),
        loaded => loaded?,
    };
    for key in &loaded.unknown_keys {
        let file = loaded
            .source
            .as_deref()
            .unwrap_or(std::path::Path::new("config"));
        tracing::warn!("{}: {}", file.display(), config::unknown_key_warning(key));
    }
    let root = Root::new(loaded.config.root(cli.root.as_deref()));
    // The bare command runs the daemon (the seed's command line relies on
    // it); someone trying it at a terminal is told so, not left guessing.
    if bare && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "lazarus-pit: no command given, so running the daemon in the foreground on {} \
             (Ctrl-C stops it; `lazarus-pit --help` lists the commands)",
            text::escape(&root.path.display().to_string())
        );
    }
    let ctx = Context {
        config: loaded.config,
        root,
        json: cli.json,
    };
    match command {
        Command::Daemon(args) => {
            let opts = daemon::Options {
                once: args.once,
                config_path: cli.config.clone(),
            };
            let ran = daemon::run(
                ctx.config,
                &ctx.root.path,
                opts,
                log.unwrap_or_else(logging::init_daemon_fallback),
            );
            match ran {
                // `--once` from cron or a script: "it could not run" (on a
                // host whose daemon holds the root, always) is not "an
                // agent is unhealthy".
                Err(e) if args.once && e.exit_code() != 2 => Ok(could_not_run(&e)),
                ran => ran,
            }
        }
        Command::Cell(cmd) => match cmd {
            CellCommand::Create(args) => commands::create::run(&ctx, args),
            CellCommand::List => commands::list::run(&ctx),
            CellCommand::Show(args) => commands::show::run(&ctx, args),
            CellCommand::Join(args) => commands::join::run(&ctx, args),
            CellCommand::Set(args) => commands::set::run(&ctx, args),
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
        Command::Revive(args) => commands::revive::revive(&ctx, args),
        Command::Approve(args) => commands::revive::decide(&ctx, args, true),
        Command::Deny(args) => commands::revive::decide(&ctx, args, false),
        Command::Checkpoint(args) => commands::checkpoint::run(&ctx, args),
        Command::Restore(args) => commands::checkpoint::restore(&ctx, args),
        Command::Demo => commands::demo::run(&ctx),
        Command::Metrics => commands::metrics::run(&ctx),
        Command::Serve(args) => http::serve(ctx, args.listen.as_deref()),
        Command::Completions(args) => commands::docs::completions(args.shell),
        Command::Man => commands::docs::man(),
        Command::CheckpointWorker(args) => commands::checkpoint::worker(&ctx, args),
    }
}
