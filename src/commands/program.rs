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
/// cannot be known now).
pub fn unresolvable(cell: &Cell, manifest: &Manifest, agent: &Agent) -> Option<String> {
    let Some(AgentCommand::Argv(argv)) = &agent.command else {
        return None;
    };
    let program = argv.first()?;
    if program.is_empty()
        || agent.isolation.or(manifest.isolation).unwrap_or_default() == Isolation::Podman
    {
        return None;
    }
    if program.contains('/') {
        // Relative to the agent's working directory, `workspace/`.
        let path = match Path::new(program).is_absolute() {
            true => PathBuf::from(program),
            false => cell.path().join("workspace").join(program),
        };
        return match executable(&path) {
            Ok(()) => None,
            Err(why) => Some(format!("its program {program} {why}")),
        };
    }
    let path = agent_path(agent);
    let dirs: Vec<&str> = path.split(':').filter(|d| !d.is_empty()).collect();
    if dirs
        .iter()
        .any(|d| executable(&Path::new(d).join(program)).is_ok())
    {
        return None;
    }
    Some(format!(
        "its program {program:?} is not found on PATH (agents are given the daemon's); give \
         its full path"
    ))
}

/// The `PATH` the agent will have: its own `env`'s, else the daemon's
/// (what agents are given), which the CLI sees as its own and the
/// default, joined: a program on either is not refused.
fn agent_path(agent: &Agent) -> String {
    if let Some(p) = agent
        .env
        .as_ref()
        .and_then(|e| e.get("PATH"))
        .and_then(|v| v.as_str())
    {
        return p.to_string();
    }
    let mine = std::env::var("PATH").unwrap_or_default();
    let default = crate::daemon::process::DEFAULT_PATH;
    if mine.is_empty() {
        default.to_string()
    } else {
        format!("{mine}:{default}")
    }
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
