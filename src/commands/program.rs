//! Whether an agent's program can be found, checked when it is added or
//! its command changes: a typo is refused there, in the operator's
//! terminal, instead of failing at every start the daemon tries.
//!
//! Only what can be known now is checked: an argv's program (a shell
//! line is the shell's to resolve), outside a container (podman runs the
//! image's), found the way `execve` would find it at the start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cell::Cell;
use crate::cell::manifest::{Agent, AgentCommand, Isolation, Manifest};

/// Why the agent's program cannot be started, or `None` if it can (or
/// cannot be known now). `hidden`: the config's `[isolation]
/// hidden_paths`; `daemon_path`: the running daemon's `PATH`, if it can
/// be read (agents are given it).
pub fn unresolvable(
    cell: &Cell,
    manifest: &Manifest,
    agent: &Agent,
    hidden: &[PathBuf],
    daemon_path: Option<&str>,
) -> Option<String> {
    let Some(AgentCommand::Argv(argv)) = &agent.command else {
        return None;
    };
    let program = argv.first()?;
    let level = agent.isolation.or(manifest.isolation).unwrap_or_default();
    if program.is_empty() || level == Isolation::Podman {
        return None;
    }
    // What a mount namespace shows it: not a private /tmp's or /dev/shm's
    // old contents, not a hidden path — except the cell itself.
    let unseen = |path: &Path| -> Option<String> {
        if level != Isolation::MountNamespace {
            return None;
        }
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let cell_dir = std::fs::canonicalize(cell.path()).unwrap_or_else(|_| cell.path().into());
        if real.starts_with(&cell_dir) {
            return None;
        }
        let private = [Path::new("/tmp"), Path::new("/dev/shm")];
        if let Some(p) = private.iter().find(|p| real.starts_with(p)) {
            return Some(format!(
                "is under {}, which mount-namespace isolation replaces with a private one",
                p.display()
            ));
        }
        hidden.iter().find(|h| real.starts_with(h)).map(|h| {
            format!(
                "is under {} ([isolation] hidden_paths), which mount-namespace isolation hides",
                h.display()
            )
        })
    };
    if program.contains('/') {
        // Relative to the agent's working directory, `workspace/`.
        let path = match Path::new(program).is_absolute() {
            true => PathBuf::from(program),
            false => cell.path().join("workspace").join(program),
        };
        return match executable(&path) {
            Ok(()) => unseen(&path).map(|why| format!("its program {program} {why}")),
            Err(why) => Some(format!("its program {program} {why}")),
        };
    }
    let path = agent_path(agent, daemon_path);
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| executable(p).is_ok() && unseen(p).is_none());
    if found.is_some() {
        return None;
    }
    Some(format!(
        "its program {program:?} is not found on the PATH agents are given ({}); give its \
         full path",
        if daemon_path.is_some() {
            "the daemon's"
        } else {
            "the daemon's, which this user cannot read: this one's and the default were tried"
        }
    ))
}

/// The `PATH` the agent will have: its own `env`'s, else the daemon's
/// (what agents are given); where that cannot be read, the CLI's own and
/// the default, joined: a program on either is not refused.
fn agent_path(agent: &Agent, daemon_path: Option<&str>) -> String {
    if let Some(p) = agent
        .env
        .as_ref()
        .and_then(|e| e.get("PATH"))
        .and_then(|v| v.as_str())
    {
        return p.to_string();
    }
    let default = crate::daemon::process::DEFAULT_PATH;
    if let Some(p) = daemon_path {
        return if p.is_empty() {
            default.into()
        } else {
            p.into()
        };
    }
    let mine = std::env::var("PATH").unwrap_or_default();
    if mine.is_empty() {
        default.to_string()
    } else {
        format!("{mine}:{default}")
    }
}

/// The `PATH` of the daemon holding `root`'s lock, if it runs and this
/// user may read its environment (root, or its own user).
pub fn daemon_path(root: &Path) -> Option<String> {
    let pid = crate::daemon::lock::holder(root)?;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"PATH="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
    )
}

/// `Ok` for a file someone may execute; else what is wrong with it.
fn executable(path: &Path) -> Result<(), &'static str> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist"),
        Err(_) => Err("cannot be read"),
        Ok(m) if m.is_dir() => Err("is a directory"),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("is not executable (chmod +x)"),
        Ok(_) => Ok(()),
    }
}
