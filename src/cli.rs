//! Command-line types (BRIEF section 8). Parsing only: every command's
//! behaviour lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lazarus-pit",
    version,
    about = "Keeps AI agents alive inside isolated mission cells.",
    long_about = "Keeps AI agents alive inside isolated mission cells.\n\n\
        Without a command, runs the daemon (same as `lazarus-pit daemon`)."
)]
pub struct Cli {
    /// Config file [default: /etc/lazarus-pit/lazarus-pit.toml if present]
    #[arg(long, global = true, env = "LAZARUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Cells root [default: cells.root from the config, else /var/missions]
    #[arg(long, global = true, env = "LAZARUS_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Machine-readable output (JSON) for commands that print
    #[arg(long, global = true)]
    pub json: bool,

    /// List every cell and exit (same as `cell list`)
    #[arg(long, conflicts_with = "status")]
    pub list_cells: bool,

    /// Print agent health and exit (same as `status`)
    #[arg(long)]
    pub status: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor daemon
    Daemon(DaemonArgs),
    /// Create, inspect and change mission cells
    #[command(subcommand)]
    Cell(CellCommand),
    /// Per agent: state, heartbeat age, revives (works without a daemon)
    Status(StatusArgs),
    /// Write this agent's heartbeat file atomically (for shell agents)
    Heartbeat(HeartbeatArgs),
    /// Print the event stream of a cell, or of every cell merged by time
    Events(EventsArgs),
    /// Revive an agent now, whatever its policy (resets an abandoned agent)
    Revive(AgentArgs),
    /// Approve a pending revival request (policy "ask")
    Approve(AgentArgs),
    /// Deny a pending revival request: the agent stays dead
    Deny(AgentArgs),
    /// Snapshot a cell's workspace/ and bus/ into checkpoints/ (or list them)
    Checkpoint(CheckpointArgs),
    /// Roll a frozen or archived cell's workspace/ and bus/ back to a checkpoint
    Restore(RestoreArgs),
    /// A guided run on a temporary root: agents hang, crash, come back, and roll back
    Demo,
    /// Prometheus text of the root's cells and agents (and the daemon's counters)
    Metrics,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the manual page lazarus-pit(1) (roff; `lazarus-pit man | man -l -`)
    Man,
    /// The daemon's own: writes one checkpoint and prints what it wrote
    /// (JSON), so the archive's work and memory stay out of the daemon
    #[command(hide = true)]
    CheckpointWorker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The cell's UUID
    pub cell: String,
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub keep: usize,
    /// The daemon's pid: the worker dies with it
    #[arg(long)]
    pub parent: u32,
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Cell UUID or a unique prefix of one
    pub cell: String,
    /// List the cell's checkpoints instead of taking one
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Cell UUID or a unique prefix of one
    pub cell: String,
    /// A checkpoint's file name (see `checkpoint --list`), or `latest`
    pub checkpoint: String,
    /// Freeze an active cell first (its agents start again on the restored
    /// files when it is thawed)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Cell UUID or a unique prefix of one
    pub cell: String,
    /// Agent name
    pub agent: String,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// One discovery and reconcile pass, then exit (0: all healthy, 1: not)
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum CellCommand {
    /// Create a cell and print its UUID
    Create(CreateArgs),
    /// List cells: "<uuid>: <status> — <mission>"
    List,
    /// Show one cell's manifest
    Show(CellArg),
    /// Add an agent to a cell
    Join(JoinArgs),
    /// Remove an agent from a cell
    Leave(LeaveArgs),
    /// Stop reviving a cell's agents (they stay monitored)
    Freeze(CellArg),
    /// Resume reviving a frozen cell's agents
    Thaw(CellArg),
    /// Stop monitoring a cell and keep it as it is
    Archive(CellArg),
    /// Remove a cell's working files, keeping cell.json and logs/ as the audit trail
    Destroy(DestroyArgs),
}

#[derive(Debug, Args)]
pub struct CellArg {
    /// Cell UUID or a unique prefix of one
    pub cell: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Human-readable name
    #[arg(long)]
    pub name: Option<String>,
    /// What the mission is for
    #[arg(long)]
    pub mission: Option<String>,
    /// Who creates it [default: $SUDO_USER, $USER, or the uid]
    #[arg(long, value_name = "WHO")]
    pub by: Option<String>,
    /// An agent to add, with an optional role (repeatable)
    #[arg(long = "agent", value_name = "NAME[:ROLE]")]
    pub agents: Vec<String>,
    /// A cell.json (or filled mission-proposal.md) to start from
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Cell UUID or a unique prefix of one
    pub cell: String,
    /// Agent name: 1-64 of [A-Za-z0-9._-], not starting with '.'
    #[arg(long)]
    pub agent: String,
    /// The agent's role in the mission
    #[arg(long)]
    pub role: Option<String>,
    /// Extra environment for the agent's command (repeatable)
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Command that runs the agent (after `--`); one argument containing
    /// spaces is run with /bin/sh -c
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Cell UUID or a unique prefix of one
    pub cell: String,
    #[arg(long)]
    pub agent: String,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Cell UUID or a unique prefix of one
    pub cell: String,
    /// Confirm: destroying removes workspace/, bus/, checkpoints/ and .lazarus/
    #[arg(long)]
    pub yes: bool,
    /// Remove the whole cell directory, logs and manifest included
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this cell (UUID or unique prefix)
    pub cell: Option<String>,
}

#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// Cell UUID or prefix [default: $LAZARUS_CELL_UUID]
    #[arg(long, env = "LAZARUS_CELL_UUID")]
    pub cell: Option<String>,
    /// Agent name [default: $LAZARUS_AGENT]
    #[arg(long, env = "LAZARUS_AGENT")]
    pub agent: Option<String>,
    /// What the agent is doing (e.g. thinking, idle)
    #[arg(long)]
    pub status: Option<String>,
    /// The agent's work-loop counter
    #[arg(long)]
    pub cycle: Option<u64>,
    /// Model the agent runs on
    #[arg(long)]
    pub model: Option<String>,
    /// Pid to record [default: the parent process, i.e. the calling agent]
    #[arg(long)]
    pub pid: Option<i64>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Cell UUID or prefix [default: every cell, merged by time]
    pub cell: Option<String>,
    /// Only events at or after this time: a duration back from now (10m,
    /// 2h, 1d), an RFC 3339 time, or unix seconds
    #[arg(long, value_name = "TS|DURATION")]
    pub since: Option<String>,
    /// Keep printing new events as they are written (from now, or from
    /// --since), new cells and rotated logs included, until interrupted
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events of this name (repeatable)
    #[arg(long = "event", value_name = "NAME")]
    pub event: Vec<String>,
    /// Only events of this agent
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
}
