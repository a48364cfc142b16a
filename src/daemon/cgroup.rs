//! A cgroup v2 per agent (BRIEF 7): membership is the proof that a
//! process is the agent's, and freezing, stopping and killing reach every
//! descendant — also those that left the agent's process group.
//!
//! Only the core interface files are used (`cgroup.procs`,
//! `cgroup.events`, `cgroup.freeze`, `cgroup.kill`): they need no
//! controller, so this works on hybrid hosts whose v2 mount carries none.
//! The daemon works beneath a base of its own: its own cgroup (under
//! systemd, a unit with `Delegate=yes`) or `[daemon] cgroup`, plus one
//! directory per cells root, one per cell and one per agent:
//! `<base>/lazarus-pit-<root key>/<cell>/a-<agent>`.

use std::io::{ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

/// How the daemon controls agents' processes, said once in the log and
/// per agent in `state.json` / `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Cgroup,
    ProcessGroup,
    /// A container, through podman by its name.
    Podman,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Cgroup => "cgroup",
            Control::ProcessGroup => "process-group",
            Control::Podman => "podman",
        }
    }
}

/// Passes the controllers `limits` can use (memory, pids, cpu) down from
/// `dir` to its children, those that `dir` has: a group without processes
/// of its own may (cgroup v2's "no internal processes" rule). Where the
/// daemon's base has none, agents' cgroup limits are not enforced, and
/// `status` says so.
fn enable_limit_controllers(dir: &Path) {
    let Ok(available) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| matches!(*c, "memory" | "pids" | "cpu"))
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return;
    }
    if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" ")) {
        tracing::debug!(
            "cannot enable {} in {}: {e}",
            wanted.join(" "),
            dir.display()
        );
    }
}

/// The daemon's subtree of cgroups for one cells root.
#[derive(Debug)]
pub struct Cgroups {
    /// Absolute path of `<base>/lazarus-pit-<root key>`.
    dir: PathBuf,
    /// Its path inside the cgroup2 hierarchy (as `/proc/<pid>/cgroup`
    /// shows it), for membership checks.
    rel: String,
}

/// Where the cgroup2 hierarchy is mounted, if anywhere.
pub fn mount_point() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in text.lines() {
        // `... mount_point options - fstype source super_options`
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let point = PathBuf::from(unescape(left.split_whitespace().nth(4)?));
        // The canonical place wins over any other.
        if point == Path::new("/sys/fs/cgroup") {
            return Some(point);
        }
        found.get_or_insert(point);
    }
    found
}

/// `/proc/self/mountinfo` escapes spaces and the like as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path of a process (`0::<path>` in `/proc/<pid>/cgroup`).
pub fn cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

impl Cgroups {
    /// Sets up the daemon's subtree beneath `base` (a path in the cgroup2
    /// hierarchy, or the daemon's own cgroup if `None`). The error says
    /// why cgroups cannot be used, for the one log line of the fallback.
    pub fn open(base: Option<&Path>, root_key: &str) -> Result<Cgroups, String> {
        let mount = mount_point().ok_or("no cgroup2 filesystem is mounted")?;
        let base = match base {
            // Resolved (`..`, symlinks) before it is checked to be beneath
            // the mount, and it must be a cgroup itself.
            Some(base) => {
                let resolved =
                    std::fs::canonicalize(base).map_err(|e| format!("{}: {e}", base.display()))?;
                if !resolved.join("cgroup.procs").is_file() {
                    return Err(format!("{} is not a cgroup", base.display()));
                }
                resolved
            }
            None => {
                let own = cgroup_of(std::process::id() as i32)
                    .ok_or("the daemon's own cgroup v2 is unknown")?;
                mount.join(own.trim_start_matches('/'))
            }
        };
        let rel_base = base
            .strip_prefix(&mount)
            .map_err(|_| format!("{} is not beneath {}", base.display(), mount.display()))?;
        let name = format!("lazarus-pit-{root_key}");
        let dir = base.join(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cannot create a cgroup in {} ({e}; run as root, or under systemd with \
                     Delegate=yes)",
                    base.display()
                ));
            }
        }
        for needed in [
            "cgroup.procs",
            "cgroup.freeze",
            "cgroup.kill",
            "cgroup.events",
        ] {
            if !dir.join(needed).exists() {
                return Err(format!(
                    "the kernel's cgroup v2 has no {needed} (Linux 5.14 or later is needed)"
                ));
            }
        }
        // Writable by us: a read-only delegation is no delegation.
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            return Err(format!("cannot write {}: {e}", dir.display()));
        }
        let rel = format!("/{}", rel_base.join(&name).display())
            .replace("//", "/")
            .trim_end_matches('/')
            .to_string();
        Ok(Cgroups { dir, rel })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The group of one agent (it may not exist).
    pub fn agent(&self, cell: &str, agent: &str) -> AgentGroup {
        let sub = format!("{}/a-{agent}", cell_dir_name(cell));
        AgentGroup {
            path: self.dir.join(&sub),
            rel: format!("{}/{sub}", self.rel),
        }
    }

    /// Creates the agent's group (and its cell's), or finds it: it is
    /// kept from one instance of the agent to the next.
    pub fn create(&self, cell: &str, agent: &str) -> std::io::Result<AgentGroup> {
        let group = self.agent(cell, agent);
        if group.path.join("cgroup.procs").exists() {
            return Ok(group);
        }
        // The base too: the CLI removes it with the last group it empties.
        mkdir(&self.dir)?;
        enable_limit_controllers(&self.dir);
        if let Some(parent) = group.path.parent() {
            mkdir(parent)?;
            enable_limit_controllers(parent);
        }
        mkdir(&group.path)?;
        Ok(group)
    }

    /// Removes the empty groups of a cell's agents, but those `running`
    /// says are still watched, and the cell's own if it is then empty.
    pub fn release_cell(&self, cell: &str, running: impl Fn(&str) -> bool) {
        let dir = self.dir.join(cell_dir_name(cell));
        if let Ok(agents) = std::fs::read_dir(&dir) {
            for agent in agents.flatten() {
                let name = agent.file_name().to_string_lossy().into_owned();
                if let Some(agent_name) = name.strip_prefix("a-")
                    && agent.file_type().is_ok_and(|t| t.is_dir())
                    && !running(agent_name)
                {
                    let _ = std::fs::remove_dir(agent.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }

    /// Removes the empty groups of agents nobody runs any more (a daemon
    /// that crashed left them; the kernel refuses to remove populated ones,
    /// which stay for their agents to be adopted or stopped).
    pub fn prune(&self, keep: impl Fn(&str, &str) -> bool) {
        let Ok(cells) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for cell in cells.flatten() {
            if !cell.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let cell_name = cell.file_name().to_string_lossy().into_owned();
            if let Ok(agents) = std::fs::read_dir(cell.path()) {
                for agent in agents.flatten() {
                    let name = agent.file_name().to_string_lossy().into_owned();
                    if let Some(agent_name) = name.strip_prefix("a-")
                        && agent.file_type().is_ok_and(|t| t.is_dir())
                        && !keep(&cell_name, agent_name)
                    {
                        let _ = std::fs::remove_dir(agent.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(cell.path());
        }
    }
}

impl Drop for Cgroups {
    /// The daemon leaves: the groups of agents that still run stay (they
    /// are adopted by the next daemon), the empty ones go.
    fn drop(&mut self) {
        self.prune(|_, _| false);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A cell's directory name in the hierarchy: its UUID as it is (no dot,
/// so never the name of an interface file), anything else hashed.
fn cell_dir_name(cell: &str) -> String {
    if uuid::Uuid::parse_str(cell).is_ok() && !cell.contains('.') {
        cell.to_string()
    } else {
        // FNV-1a: stable across runs, so a restarted daemon finds it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in cell.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("x-{h:016x}")
    }
}

fn mkdir(path: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// One agent's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentGroup {
    path: PathBuf,
    /// As `/proc/<pid>/cgroup` names it.
    rel: String,
}

impl AgentGroup {
    /// The agent's group that `pid` runs in, if it runs in one a daemon
    /// made for this agent of this cell (`…/lazarus-pit-<key>/<cell>/
    /// a-<agent>`): how the CLI, without a daemon, finds the unit of an
    /// instance the daemon's records name.
    pub fn of_instance(pid: i32, cell: &str, agent: &str) -> Option<AgentGroup> {
        let rel = cgroup_of(pid)?;
        let tail = format!("/{}/a-{agent}", cell_dir_name(cell));
        let base = rel.strip_suffix(&tail)?;
        let last = base.rsplit('/').next()?;
        if !last.starts_with("lazarus-pit-") {
            return None;
        }
        let path = mount_point()?.join(rel.trim_start_matches('/'));
        Some(AgentGroup { path, rel })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The group's directory, for `clone3`'s `CLONE_INTO_CGROUP`.
    pub fn open_dir(&self) -> std::io::Result<OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
            .open(&self.path)?;
        Ok(dir.into())
    }

    /// `cgroup.procs`, opened for a child to write `0` into before it
    /// execs: it then runs, and everything it starts, in this group.
    pub fn procs_for_child(&self) -> std::io::Result<OwnedFd> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))?;
        Ok(file.into())
    }

    fn write(&self, name: &str, value: &[u8]) -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join(name))?
            .write_all(value)
    }

    /// `cgroup.events`: (populated, frozen). A group that is gone is
    /// empty and not frozen.
    pub fn events(&self) -> (bool, bool) {
        let text = std::fs::read_to_string(self.path.join("cgroup.events")).unwrap_or_default();
        let flag = |key: &str| {
            text.lines()
                .any(|l| l.strip_prefix(key).is_some_and(|v| v.trim() == "1"))
        };
        (flag("populated "), flag("frozen "))
    }

    /// CPU used by every process the group ever held, in nanoseconds
    /// (`cpu.stat` `usage_usec`, there without the cpu controller).
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.path.join("cpu.stat")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .and_then(|us| us.checked_mul(1000))
    }

    pub fn populated(&self) -> bool {
        self.events().0
    }

    /// Freezes (or thaws) every process in the group: the kernel's
    /// freezer, which a process cannot ignore or notice. Done when
    /// `cgroup.events` says `frozen 1`.
    pub fn freeze(&self, frozen: bool) -> std::io::Result<()> {
        self.write("cgroup.freeze", if frozen { b"1" } else { b"0" })
    }

    /// Waits until `cgroup.events` says `frozen 1` (or the group is gone),
    /// or `until`: woken by the kernel's notification of a change of that
    /// file (`POLLPRI`), not by polling.
    pub fn wait_frozen(&self, until: std::time::Instant) -> bool {
        use std::io::{Read, Seek};
        use std::os::fd::AsFd;
        let Ok(mut file) = std::fs::File::open(self.path.join("cgroup.events")) else {
            return true; // Gone: nothing of it runs.
        };
        loop {
            let mut text = String::new();
            if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
                return true;
            }
            if text
                .lines()
                .any(|l| l.strip_prefix("frozen ").is_some_and(|v| v.trim() == "1"))
            {
                return true;
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [nix::poll::PollFd::new(
                file.as_fd(),
                nix::poll::PollFlags::POLLPRI,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        }
    }

    /// SIGKILL to every process in the group, atomically (no process can
    /// fork its way out).
    pub fn kill(&self) -> std::io::Result<()> {
        self.write("cgroup.kill", b"1")
    }

    /// The pids in the group now.
    pub fn members(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether `pid` is in this group: the proof of ownership.
    pub fn contains(&self, pid: i32) -> bool {
        cgroup_of(pid).is_some_and(|g| g == self.rel)
    }

    /// Sends `signal` to every member, each through a pidfd opened first
    /// and checked for membership after (so a pid that was recycled
    /// meanwhile is not signalled).
    pub fn signal(&self, signal: Signal) {
        for pid in self.members() {
            if pid <= 1 || pid == std::process::id() as i32 {
                continue;
            }
            let Ok(fd) = super::process::pidfd_open(pid) else {
                continue;
            };
            if self.contains(pid) {
                let _ = super::process::pidfd_signal(&fd, signal);
            }
        }
    }

    /// Waits until no process is left in the group, or `limit` passed:
    /// `true` if it is empty. Woken by inotify on `cgroup.events` (the
    /// kernel signals every change of it); polled only if that fails.
    pub async fn wait_empty(&self, limit: Duration) -> bool {
        self.wait_for(limit, |(populated, _)| !populated).await
    }

    async fn wait_for(&self, limit: Duration, done: impl Fn((bool, bool)) -> bool) -> bool {
        let until = tokio::time::Instant::now() + limit;
        // Subscribed before the first look, so no change is missed.
        let mut changes = hub().and_then(|h| h.subscribe(&self.path.join("cgroup.events")));
        loop {
            if done(self.events()) {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            match &mut changes {
                Some(rx) => {
                    if let Ok(Err(_)) = tokio::time::timeout_at(until, rx.changed()).await {
                        changes = None; // The group is gone: look once more.
                    }
                }
                None => tokio::time::sleep(Duration::from_millis(20).min(limit)).await,
            }
        }
    }

    /// Makes the group's directory again after [`AgentGroup::remove_leaf`].
    pub fn recreate(&self) -> std::io::Result<()> {
        mkdir(&self.path)
    }

    /// Removes the group's own directory if it is empty (not its cell's).
    pub fn remove_leaf(&self) {
        let _ = std::fs::remove_dir(&self.path);
    }

    /// Removes the group if it is empty (the kernel refuses otherwise),
    /// and its cell's if that is empty too.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir(&self.path);
        let cell = self.path.parent();
        if let Some(cell) = cell {
            let _ = std::fs::remove_dir(cell);
        }
        if let Some(base) = cell.and_then(Path::parent)
            && base
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("lazarus-pit-"))
        {
            let _ = std::fs::remove_dir(base);
        }
    }
}

/// One inotify instance for every `cgroup.events` the process waits on,
/// read by a thread of its own, for the life of the process. Not one per
/// wait: closing an inotify instance waits for an SRCU grace period (10 to
/// 20 ms here), and a hundred agents stopped at once would each pay it in
/// turn on the daemon's loop.
struct Hub {
    inotify: nix::sys::inotify::Inotify,
    changes: std::sync::Mutex<
        std::collections::HashMap<
            nix::sys::inotify::WatchDescriptor,
            tokio::sync::watch::Sender<u64>,
        >,
    >,
}

static HUB: std::sync::OnceLock<Option<&'static Hub>> = std::sync::OnceLock::new();

fn hub() -> Option<&'static Hub> {
    *HUB.get_or_init(|| {
        use nix::sys::inotify::{InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
        let hub: &'static Hub = Box::leak(Box::new(Hub {
            inotify,
            changes: std::sync::Mutex::new(std::collections::HashMap::new()),
        }));
        std::thread::Builder::new()
            .name("lazarus-cgroups".into())
            .spawn(move || hub.read())
            .ok()?;
        Some(hub)
    })
}

impl Hub {
    /// A receiver that sees every change of the file from now on.
    fn subscribe(&self, path: &Path) -> Option<tokio::sync::watch::Receiver<u64>> {
        use nix::sys::inotify::AddWatchFlags;
        let wd = self
            .inotify
            .add_watch(path, AddWatchFlags::IN_MODIFY)
            .ok()?;
        let mut changes = self.changes.lock().ok()?;
        Some(
            changes
                .entry(wd)
                .or_insert_with(|| tokio::sync::watch::channel(0).0)
                .subscribe(),
        )
    }

    fn read(&self) {
        use nix::sys::inotify::AddWatchFlags;
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("reading cgroup events: {e}; waits poll from now on");
                    return;
                }
            };
            let Ok(mut changes) = self.changes.lock() else {
                return;
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The group was removed: its waiters see the sender go.
                    changes.remove(&event.wd);
                } else if let Some(tx) = changes.get(&event.wd) {
                    tx.send_modify(|n| *n += 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/sys/fs/cgroup"), "/sys/fs/cgroup");
    }

    #[test]
    fn cell_groups_never_look_like_interface_files() {
        let id = "0b9c2a4e-8f51-4c1e-9d35-3f6f0f4c2b11";
        assert_eq!(cell_dir_name(id), id);
        assert!(cell_dir_name("cgroup.procs").starts_with("x-"));
        assert!(cell_dir_name(&"y".repeat(255)).len() < 20);
    }
}
