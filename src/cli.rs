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
    // The environment fallbacks are applied after parsing
    // ([`Cli::apply_env`]): clap's own `env` counts a set variable as a
    // given flag and prints it in usage lines as if it were required.
    /// Config file [env: LAZARUS_CONFIG] [default:
    /// /etc/lazarus-pit/lazarus-pit.toml if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Cells root [env: LAZARUS_ROOT] [default: cells.root from the config,
    /// else /var/missions]
    #[arg(long, global = true, value_name = "DIR")]
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

impl Cli {
    /// Fills what the command line left out from the environment
    /// (`LAZARUS_CONFIG`, `LAZARUS_ROOT`, and `heartbeat`'s
    /// `LAZARUS_CELL_UUID` / `LAZARUS_AGENT`). An empty variable counts as
    /// unset.
    pub fn apply_env(&mut self) {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        self.config = self
            .config
            .take()
            .or_else(|| var("LAZARUS_CONFIG").map(PathBuf::from));
        self.root = self
            .root
            .take()
            .or_else(|| var("LAZARUS_ROOT").map(PathBuf::from));
        if let Some(Command::Heartbeat(hb)) = &mut self.command {
            let text = |name| var(name).map(|v| v.to_string_lossy().into_owned());
            hb.cell = hb.cell.take().or_else(|| text("LAZARUS_CELL_UUID"));
            hb.agent = hb.agent.take().or_else(|| text("LAZARUS_AGENT"));
        }
    }
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
    /// The HTTP API and live dashboard (loopback only unless told otherwise)
    Serve(ServeArgs),
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
pub struct ServeArgs {
    /// Address and port to listen on [default: `[http] listen`, else
    /// 127.0.0.1:7600]. Beyond loopback, put a TLS proxy in front.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
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
    /// Cell UUID, unique prefix or name
    pub cell: String,
    /// List the cell's checkpoints instead of taking one
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Cell UUID, unique prefix or name
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
    /// Cell UUID, unique prefix or name
    pub cell: String,
    /// Agent name
    pub agent: String,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// One discovery and reconcile pass, then exit. It acts like the
    /// daemon: it starts, revives and stops agents. Exit 0: all healthy,
    /// 1: an agent is not, 3: it could not run (another daemon holds the
    /// root, an unusable root or config). For a check that only looks, use
    /// `status`.
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
    /// Change a cell's or an agent's settings (KEY=VALUE, fields of cell.json)
    Set(SetArgs),
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
    /// Cell UUID, unique prefix or name
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
    /// Cell UUID, unique prefix or name
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
    #[command(flatten)]
    pub settings: AgentFlags,
    /// Command that runs the agent (after `--`); one argument containing
    /// spaces is run with /bin/sh -c
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The agent fields of `cell.json` (BRIEF 3) as flags of `cell join`;
/// `cell set` takes the same as KEY=VALUE.
#[derive(Debug, Args, Default)]
pub struct AgentFlags {
    /// What happens when it dies: yes, no, ask, substitute [default: the
    /// cell's, else the config's]
    #[arg(long, value_name = "POLICY", value_parser = ["yes", "no", "ask", "substitute"])]
    pub revive_policy: Option<String>,
    /// on-failure (a clean exit 0 means finished) or always
    #[arg(long, value_name = "WHEN", value_parser = ["on-failure", "always"])]
    pub restart: Option<String>,
    /// Start it as soon as the daemon sees it (true, false) [default: true]
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub autostart: Option<bool>,
    /// An agent of the cell that takes over when this one dies (repeatable;
    /// with --revive-policy substitute)
    #[arg(long = "substitute", value_name = "NAME")]
    pub substitutes: Vec<String>,
    /// Stale when its last heartbeat is older than this many seconds
    /// (heartbeat_stale_threshold)
    #[arg(long, value_name = "SECONDS")]
    pub stale_after: Option<String>,
    /// Due for revival this many seconds after its last heartbeat
    #[arg(long, value_name = "SECONDS")]
    pub resurrect_after: Option<String>,
    /// directory, mount-namespace or podman [default: the cell's]
    #[arg(long, value_name = "LEVEL", value_parser = ["directory", "mount-namespace", "podman"])]
    pub isolation: Option<String>,
}

impl AgentFlags {
    /// The flags given, as `cell.json` field names and the text given.
    pub fn assignments(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut put = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                out.push((k, v.clone()));
            }
        };
        put("revive_policy", &self.revive_policy);
        put("restart", &self.restart);
        put("autostart", &self.autostart.map(|b| b.to_string()));
        put("heartbeat_stale_threshold", &self.stale_after);
        put("resurrect_after", &self.resurrect_after);
        put("isolation", &self.isolation);
        if !self.substitutes.is_empty() {
            out.push(("substitutes", self.substitutes.join(",")));
        }
        out
    }
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Cell UUID, unique prefix or name
    pub cell: String,
    /// Change this agent's settings instead of the cell's
    #[arg(long)]
    pub agent: Option<String>,
    /// Fields to set, e.g. revive_policy=ask heartbeat_stale_threshold=30
    /// (an empty VALUE removes the field, so the next level applies)
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub assignments: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Cell UUID, unique prefix or name
    pub cell: String,
    #[arg(long)]
    pub agent: String,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Cell UUID, unique prefix or name
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
    /// Only this cell (UUID, unique prefix or name)
    pub cell: Option<String>,
}

#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// Cell UUID, unique prefix or name [default: $LAZARUS_CELL_UUID]
    #[arg(long)]
    pub cell: Option<String>,
    /// Agent name [default: $LAZARUS_AGENT]
    #[arg(long)]
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
    /// Write it even though the cell lists no agent of that name (the
    /// daemon ignores such a heartbeat until the agent joins)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Cell UUID, unique prefix or name [default: every cell, merged by time]
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
