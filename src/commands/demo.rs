//! `demo`: a guided run on a temporary root. It creates a cell with two
//! shell agents, runs the real daemon (this binary, as a child) with short
//! thresholds, prints the cell's event stream as it is written, then hangs
//! one agent (SIGSTOP) and kills the other (SIGKILL), so the user watches
//! stale detection, revival with a new pid, and recovery; then it takes a
//! checkpoint, wrecks a file, and rolls the mission back. Every step waits
//! for the event it expects, with a deadline; nothing sleeps.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchMask};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::Context;
use crate::error::{Error, Result};

/// The whole demo must finish within this.
const BUDGET: Duration = Duration::from_secs(30);

/// The demo's config; its records go to `state_dir` inside its own
/// temporary directory, so it needs no privilege and leaves nothing.
const CONFIG: &str = "\
[daemon]
log_level = \"warn\"
state_dir = \"STATE_DIR\"

[cells]
heartbeat_stale_threshold = 1.5
resurrect_after = 3
kill_grace = 1
backoff_initial = 0.5
poll_interval = 5
";

/// Each agent: beat, work a little, repeat. `$0` is this binary.
const AGENT_LOOP: &str = "while :; do \"$0\" heartbeat --status working || exit 1; sleep 0.4; done";

pub fn run(_ctx: &Context) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let tmp = tempfile::Builder::new().prefix("lazarus-demo-").tempdir()?;
    let mut demo = Demo::start(&exe, tmp.path())?;
    let outcome = demo.script();
    demo.stop();
    drop(tmp);
    match outcome {
        Ok(()) => {
            println!(
                "\nDone: both agents were brought back inside their cell, and the mission rolled back \
                 to its snapshot. The temporary root is removed."
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

struct Demo {
    exe: PathBuf,
    root: PathBuf,
    config: PathBuf,
    cell: String,
    daemon: Option<Child>,
    events: Option<Follower>,
    started: Instant,
    /// The latest pid of each agent, from the events.
    pids: Vec<(String, i32)>,
    /// Events (name, agent) printed since the demo last acted.
    seen: Vec<(String, String)>,
}

impl Demo {
    fn start(exe: &Path, dir: &Path) -> Result<Demo> {
        let root = dir.join("missions");
        std::fs::create_dir(&root)?;
        let config = dir.join("lazarus-pit.toml");
        let state = dir
            .join("state")
            .display()
            .to_string()
            .replace('\\', "\\\\");
        std::fs::write(&config, CONFIG.replace("STATE_DIR", &state))?;
        let template = dir.join("demo-cell.json");
        let argv = json!(["/bin/sh", "-c", AGENT_LOOP, exe]);
        std::fs::write(
            &template,
            serde_json::to_vec_pretty(&json!({
                "name": "demo",
                "mission": "show lazarus-pit reviving agents",
                "agents": [
                    {"name": "scout", "role": "researcher", "command": argv},
                    {"name": "scribe", "role": "writer", "command": argv},
                ],
            }))
            .unwrap_or_default(),
        )?;
        let mut demo = Demo {
            exe: exe.to_path_buf(),
            root,
            config,
            cell: String::new(),
            daemon: None,
            events: None,
            started: Instant::now(),
            pids: Vec::new(),
            seen: Vec::new(),
        };
        let out = demo
            .command()
            .args(["cell", "create", "--by", "demo", "--template"])
            .arg(&template)
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(Error::Io(std::io::Error::other("demo: cell create failed")));
        }
        demo.cell = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let events = demo.root.join(&demo.cell).join("logs/events.jsonl");
        demo.events = Some(Follower::open(&events)?);
        println!("lazarus-pit demo");
        println!("  root    {}", demo.root.display());
        println!("  cell    {}", demo.cell);
        println!(
            "  agents  scout, scribe: shell loops that run `lazarus-pit heartbeat` every 0.4 s"
        );
        println!("  daemon  stale after 1.5 s of silence, revived after 3 s, 1 s grace to stop\n");
        demo.daemon = Some(
            demo.command()
                .arg("daemon")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()?,
        );
        Ok(demo)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--config")
            .arg(&self.config)
            .env_remove("LAZARUS_HEARTBEAT_FILE")
            .env_remove("NOTIFY_SOCKET");
        cmd
    }

    fn script(&mut self) -> Result<()> {
        self.wait_for("cell_created", None)?;
        for agent in ["scout", "scribe"] {
            self.wait_for("heartbeat", Some(agent))?;
        }
        let scout = self.pid("scout")?;
        self.say(&format!(
            "hanging scout: SIGSTOP to its process group (pid {scout}); it stops beating"
        ));
        killpg(Pid::from_raw(scout), Signal::SIGSTOP).map_err(std::io::Error::from)?;
        self.wait_for("agent_stale", Some("scout"))?;
        self.wait_for("agent_revived", Some("scout"))?;
        self.wait_for("agent_recovered", Some("scout"))?;
        let scribe = self.pid("scribe")?;
        self.say(&format!(
            "crashing scribe: SIGKILL to pid {scribe}; no need to wait for staleness"
        ));
        killpg(Pid::from_raw(scribe), Signal::SIGKILL).map_err(std::io::Error::from)?;
        self.wait_for("agent_exited", Some("scribe"))?;
        self.wait_for("agent_revived", Some("scribe"))?;
        self.wait_for("agent_recovered", Some("scribe"))?;
        self.say("snapshot: `lazarus-pit checkpoint` (the agents are frozen for the moment)");
        let workspace = self.root.join(&self.cell).join("workspace");
        std::fs::write(workspace.join("plan.md"), "# plan\n1. fix the bug\n")?;
        self.run(&["checkpoint", &self.cell.clone()])?;
        self.wait_for("checkpoint_created", None)?;
        self.say("scribe wrecks the workspace: plan.md overwritten");
        std::fs::write(workspace.join("plan.md"), "rm -rf everything\n")?;
        self.say("roll back: `cell freeze`, `restore latest`, `cell thaw`");
        let cell = self.cell.clone();
        self.run(&["cell", "freeze", &cell])?;
        self.run(&["restore", &cell, "latest"])?;
        self.run(&["cell", "thaw", &cell])?;
        self.wait_for("checkpoint_restored", None)?;
        self.wait_for("agent_revived", Some("scout"))?;
        self.wait_for("agent_revived", Some("scribe"))?;
        let plan = std::fs::read_to_string(workspace.join("plan.md"))?;
        self.say(&format!(
            "plan.md is back: {:?}; the agents run again on the restored workspace",
            plan.lines().last().unwrap_or_default()
        ));
        Ok(())
    }

    /// Runs one of this binary's commands on the demo's root, quietly.
    fn run(&self, args: &[&str]) -> Result<()> {
        let out = self.command().args(args).output()?;
        if !out.status.success() {
            return Err(Error::Io(std::io::Error::other(format!(
                "demo: `lazarus-pit {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))));
        }
        Ok(())
    }

    /// Prints an action of the demo; events before it no longer count.
    fn say(&mut self, text: &str) {
        self.seen.clear();
        println!("{:>8}  » {text}", self.elapsed());
    }

    fn elapsed(&self) -> String {
        format!("+{:.2}s", self.started.elapsed().as_secs_f64())
    }

    fn pid(&self, agent: &str) -> Result<i32> {
        self.pids
            .iter()
            .rev()
            .find(|(a, _)| a == agent)
            .map(|(_, pid)| *pid)
            .ok_or_else(|| Error::Io(std::io::Error::other(format!("demo: no pid for {agent}"))))
    }

    /// Prints events until `event` (of `agent`) has been seen since the
    /// demo last acted.
    fn wait_for(&mut self, event: &str, agent: Option<&str>) -> Result<()> {
        let deadline = self.started + BUDGET;
        let matches = |(e, a): &(String, String)| e == event && agent.is_none_or(|w| w == a);
        loop {
            if self.seen.iter().any(matches) {
                return Ok(());
            }
            let Some(follower) = self.events.as_mut() else {
                return Ok(());
            };
            let Some(line) = follower.next(deadline)? else {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("demo: no {event} within {}s", BUDGET.as_secs()),
                )));
            };
            let name = line["event"].as_str().unwrap_or_default();
            let who = line["agent"].as_str();
            if let (Some(a), Some(pid)) = (who, line["pid"].as_i64())
                && matches!(name, "agent_started" | "agent_revived")
            {
                self.pids.push((a.to_string(), pid as i32));
            }
            println!("{:>8}  {}", self.elapsed(), describe(&line));
            self.seen
                .push((name.to_string(), who.unwrap_or_default().to_string()));
        }
    }

    /// Archives the cell, which stops every agent process (and removes
    /// the agents' cgroups), then stops the daemon; agents that are still
    /// there (the archive failed) are killed by process group.
    fn stop(&mut self) {
        if self.daemon.is_some() && !self.cell.is_empty() {
            let archived = self
                .command()
                .args(["cell", "archive", &self.cell])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .status();
            if archived.is_ok_and(|s| s.success()) {
                println!(
                    "{:>8}  cell archived: every agent process stopped",
                    self.elapsed()
                );
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(daemon.id() as i32), Signal::SIGTERM);
            let _ = daemon.wait();
        }
        // Each agent leads its own process group (the daemon made it a
        // session); SIGKILL also ends a stopped one.
        for (_, pid) in &self.pids {
            let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

/// One event as a readable line.
fn describe(v: &Value) -> String {
    let event = v["event"].as_str().unwrap_or("?");
    let agent = v["agent"].as_str().unwrap_or("");
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| v[k].to_string();
    let detail = match event {
        "cell_created" => format!("cell {} by {}", s("name"), s("by")),
        "cell_status_changed" => format!("{} -> {}", s("from"), s("to")),
        "agent_started" => format!("pid {}", n("pid")),
        "heartbeat" => format!("status {}", s("status")),
        "agent_stale" => {
            let p = &v["process"];
            let process = if p.is_object() {
                format!(
                    "; process state {} (T = stopped), cpu {} s",
                    p["state"].as_str().unwrap_or("?"),
                    p["cpu_s"]
                )
            } else {
                String::new()
            };
            format!("silent for {} s{process}", n("age_s"))
        }
        "agent_exited" => match v.get("signal") {
            Some(sig) => format!("pid {} killed by signal {sig}", n("pid")),
            None => format!("pid {} exit code {}", n("pid"), n("code")),
        },
        "agent_revived" => format!(
            "new pid {}, attempt {}, reason {}",
            n("pid"),
            n("attempt"),
            s("reason")
        ),
        "agent_recovered" => "beating again".to_string(),
        "checkpoint_created" => format!("{}, {} files", s("path"), n("files")),
        "checkpoint_restored" => s("path"),
        _ => String::new(),
    };
    format!("{agent:<7} {event:<20} {detail}")
}

/// Reads the lines appended to a file as they are written, woken by
/// inotify on its directory.
struct Follower {
    reader: BufReader<std::fs::File>,
    inotify: Inotify,
    partial: String,
}

impl Follower {
    fn open(path: &Path) -> Result<Follower> {
        let inotify = Inotify::init()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        inotify
            .watches()
            .add(dir, WatchMask::MODIFY | WatchMask::CREATE)?;
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Follower {
            reader: BufReader::new(file),
            inotify,
            partial: String::new(),
        })
    }

    /// The next whole line as JSON, or `None` at the deadline.
    fn next(&mut self, deadline: Instant) -> Result<Option<Value>> {
        let mut buf = [0u8; 4096];
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line)?;
            if n > 0 {
                self.partial.push_str(&line);
                if self.partial.ends_with('\n') {
                    let whole = std::mem::take(&mut self.partial);
                    if let Ok(v) = serde_json::from_str(&whole) {
                        return Ok(Some(v));
                    }
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let fd = std::os::fd::AsFd::as_fd(&self.inotify);
            let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            let timeout = nix::poll::PollTimeout::try_from(left.as_millis().min(60_000) as u32)
                .unwrap_or(nix::poll::PollTimeout::MAX);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) => {}
                Ok(_) => {
                    let _ = self.inotify.read_events(&mut buf);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        }
    }
}
