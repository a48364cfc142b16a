//! The notification hook: `notifications.command` runs for the events in
//! `notifications.events`, with the event line on stdin.
//!
//! It must never block or crash the daemon: each run is a task, at most
//! [`MAX_RUNNING`] run at once, at most [`MAX_QUEUED`] wait (more are
//! dropped, said once in the log), and each is killed — with its process
//! group — after [`TIMEOUT`]. Failures are logged with the hook's stderr.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::config::Config;

pub const MAX_RUNNING: usize = 4;
pub const MAX_QUEUED: usize = 256;
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a failed hook's stderr is logged.
const STDERR_LIMIT: usize = 2048;

pub struct Hooks {
    argv: Option<Arc<Vec<String>>>,
    events: HashSet<String>,
    /// Settings for the shipped hooks (`[gitea]`, `[notifications]`).
    env: Arc<Vec<(String, String)>>,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    dropped_warned: Arc<AtomicBool>,
    /// Process groups of the hooks running now, killed at shutdown.
    running: Arc<Mutex<HashSet<u32>>>,
}

impl Hooks {
    pub fn new(cfg: &Config) -> Hooks {
        let n = &cfg.notifications;
        let flag = |b: bool| if b { "1" } else { "0" }.to_string();
        let mut env = vec![
            (
                "LAZARUS_OPEN_ISSUE_ON_DEATH".into(),
                flag(n.open_issue_on_death),
            ),
            (
                "LAZARUS_CLOSE_ISSUE_ON_REVIVE".into(),
                flag(n.close_issue_on_revive),
            ),
        ];
        if let Some(url) = &cfg.gitea.url {
            env.push(("LAZARUS_GITEA_URL".into(), url.clone()));
        }
        if let Some(repo) = &cfg.gitea.repo {
            env.push(("LAZARUS_GITEA_REPO".into(), repo.clone()));
        }
        if let Some(token) = cfg.gitea.token() {
            env.push(("GITEA_TOKEN".into(), token));
        }
        Hooks {
            argv: n
                .command
                .clone()
                .filter(|argv| !argv.is_empty() && !argv[0].is_empty())
                .map(Arc::new),
            events: n.events.iter().cloned().collect(),
            env: Arc::new(env),
            permits: Arc::new(Semaphore::new(MAX_RUNNING)),
            waiting: Arc::new(AtomicUsize::new(0)),
            dropped_warned: Arc::new(AtomicBool::new(false)),
            running: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Takes a reloaded configuration; hooks already running are still
    /// bounded and still killed at shutdown.
    pub fn reload(&mut self, cfg: &Config) {
        let fresh = Hooks::new(cfg);
        self.argv = fresh.argv;
        self.events = fresh.events;
        self.env = fresh.env;
    }

    /// Kills every hook still running, with its process group (shutdown:
    /// hooks must not outlive the daemon that started them).
    pub fn kill_all(&self) {
        let running = self.running.lock().map(|mut r| std::mem::take(&mut *r));
        for pid in running.unwrap_or_default() {
            kill_group(pid);
        }
    }

    /// Whether `event` runs the hook.
    pub fn wants(&self, event: &str) -> bool {
        self.argv.is_some() && self.events.contains(event)
    }

    /// Runs the hook for one event line, in the background.
    pub fn fire(
        &self,
        event: &str,
        cell: &str,
        cell_dir: &std::path::Path,
        agent: Option<&str>,
        line: &[u8],
    ) {
        let Some(argv) = self.argv.clone() else {
            return;
        };
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED + MAX_RUNNING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            if !self.dropped_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "notification hook: {} runs pending; further events are not sent to it",
                    MAX_QUEUED + MAX_RUNNING
                );
            }
            return;
        }
        let mut env = (*self.env).clone();
        env.push(("LAZARUS_EVENT".into(), event.to_string()));
        env.push(("LAZARUS_CELL_UUID".into(), cell.to_string()));
        env.push(("LAZARUS_CELL_DIR".into(), cell_dir.display().to_string()));
        if let Some(agent) = agent {
            env.push(("LAZARUS_AGENT".into(), agent.to_string()));
        }
        let line = line.to_vec();
        let (permits, waiting, warned, running) = (
            self.permits.clone(),
            self.waiting.clone(),
            self.dropped_warned.clone(),
            self.running.clone(),
        );
        let event = event.to_string();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            if let Err(e) = run(&argv, &env, &line, &running).await {
                tracing::warn!("notification hook {:?} for {event}: {e}", argv[0]);
            }
            waiting.fetch_sub(1, Ordering::Relaxed);
            warned.store(false, Ordering::Relaxed);
        });
    }
}

/// One run: the line on stdin, bounded in time, reaped in every case.
async fn run(
    argv: &[String],
    env: &[(String, String)],
    line: &[u8],
    running: &Mutex<HashSet<u32>>,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe system calls, no allocation.
    unsafe {
        cmd.pre_exec(|| {
            super::process::cloexec_from_3();
            super::process::restore_nofile_limit();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
    let pid = child.id();
    // If this run is dropped (daemon shutdown) or times out, its whole
    // group goes, not only the hook process (`kill_on_drop` alone would
    // leave a `curl` it started).
    let mut group = GroupGuard(pid);
    if let (Some(pid), Ok(mut r)) = (pid, running.lock()) {
        r.insert(pid);
    }
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let work = async {
        if let Some(stdin) = stdin.as_mut() {
            // A hook that does not read its stdin is not an error.
            let _ = stdin.write_all(line).await;
        }
        drop(stdin);
        let mut err = Vec::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.take(STDERR_LIMIT as u64).read_to_end(&mut err).await;
        }
        (child.wait().await, err)
    };
    let outcome = tokio::time::timeout(TIMEOUT, work).await;
    if let (Some(pid), Ok(mut r)) = (pid, running.lock()) {
        r.remove(&pid);
    }
    if outcome.is_ok() {
        // Reaped: the group id may belong to someone else from now on.
        group.0 = None;
    }
    match outcome {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), err)) => Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&err).trim()
        )),
        Ok((Err(e), _)) => Err(e.to_string()),
        Err(_) => Err(format!("killed after {}s", TIMEOUT.as_secs())),
    }
}

/// Kills a hook's process group when dropped, unless disarmed.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_group(pid);
        }
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 1
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
