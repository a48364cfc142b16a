//! `completions SHELL` and `man`: generated from the command-line
//! definition itself ([`crate::cli::Cli`]), so they never drift from it.
//! Copies are committed in `packaging/` for the package; a test checks
//! they are current.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::Result;

/// The command line without its hidden subcommands (the daemon's own
/// `checkpoint-worker`): `clap_complete` offers hidden subcommands, and
/// `clap::Command` has no way to remove one, so the root is built again
/// from `Cli`'s own arguments and its visible subcommands.
fn visible() -> clap::Command {
    let full = Cli::command();
    let mut root = clap::Command::new("lazarus-pit").version(env!("CARGO_PKG_VERSION"));
    if let Some(about) = full.get_about() {
        root = root.about(about.clone());
    }
    root.args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut cmd = visible();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "lazarus-pit", &mut out);
    write_out(&out)
}

/// What the generated page lacks: files, environment, exit status.
const EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success. For \fBstatus\fR: every monitored agent is healthy (or not judged yet, frozen, or finished).
.TP
\fB1\fR
A failure, said in one sentence on standard error. For \fBstatus\fR: an agent is stale, reviving, dead, abandoned or awaiting approval, or a cell is unreadable.
.TP
\fB2\fR
A usage error.
.SH ENVIRONMENT
.TP
\fBLAZARUS_ROOT\fR
The cells root, below \fB\-\-root\fR and above \fBcells.root\fR of the config.
.TP
\fBLAZARUS_CONFIG\fR
The config file, below \fB\-\-config\fR.
.TP
\fBLAZARUS_CELL_UUID\fR, \fBLAZARUS_AGENT\fR
Set by the daemon in every agent's environment; \fBheartbeat\fR defaults to them.
.TP
\fBNO_COLOR\fR
When set and not empty, \fBevents\fR never colours its output.
.SH FILES
.TP
\fI/etc/lazarus\-pit/lazarus\-pit.toml\fR
The configuration (TOML); absent: defaults.
.TP
\fI/var/missions\fR
The default cells root: one directory per mission cell, named by its UUID, with \fIcell.json\fR, \fIlogs/events.jsonl\fR and \fI.lazarus/\fR.
.TP
\fI/var/lib/lazarus\-pit\fR
The daemon's state directory when it runs as root (\fB[daemon] state_dir\fR): its records, and the inbox of operators' requests.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1). The README and spec/mission\-cell\-spec.md of the source tree.
"#;

pub fn man() -> Result<ExitCode> {
    let mut root = Cli::command();
    root.build();
    let page = clap_mangen::Man::new(root.clone());
    let mut out = Vec::new();
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    page.render_options_section(&mut out)?;
    // One page for every command: their synopses and options here, not
    // in lazarus-pit-<command>(1) pages nobody installs.
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_section(&mut out, sub);
    }
    out.extend_from_slice(EXTRA.as_bytes());
    page.render_version_section(&mut out)?;
    write_out(&out)
}

/// A command's synopsis, description and options (and its own
/// subcommands', for `cell`).
fn command_section(out: &mut Vec<u8>, cmd: &clap::Command) {
    use std::fmt::Write;
    if cmd.get_name() == "help" {
        return;
    }
    if cmd.has_subcommands() {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            command_section(out, sub);
        }
        return;
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let mut text = String::new();
    let _ = writeln!(text, ".SS \"{}\"", roff(usage));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(text, "{}", roff(&about.to_string()));
    }
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || arg.is_global_set() || arg.get_id() == "help" {
            continue;
        }
        let name = match (arg.get_short(), arg.get_long()) {
            (Some(s), Some(l)) => format!("\\fB\\-{s}\\fR, \\fB\\-\\-{}\\fR", roff(l)),
            (None, Some(l)) => format!("\\fB\\-\\-{}\\fR", roff(l)),
            (Some(s), None) => format!("\\fB\\-{s}\\fR"),
            (None, None) => format!("\\fI{}\\fR", roff(arg.get_id().as_str()).to_uppercase()),
        };
        let value = match (
            arg.get_long().or(arg.get_short().map(|_| "")),
            arg.get_value_names(),
        ) {
            (Some(_), Some(names)) if arg.get_action().takes_values() => names
                .iter()
                .map(|n| format!(" \\fI{}\\fR", roff(n)))
                .collect::<String>(),
            _ => String::new(),
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| roff(&h.to_string()))
            .unwrap_or_default();
        let _ = writeln!(text, ".TP\n{name}{value}\n{help}");
    }
    out.extend_from_slice(text.as_bytes());
}

/// Text made safe for roff: backslashes, hyphens, and a leading dot or
/// quote (a request) escaped.
fn roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if !out.is_empty() {
            out.push('\n');
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        for c in line.chars() {
            match c {
                '\\' => out.push_str("\\e"),
                '-' => out.push_str("\\-"),
                c => out.push(c),
            }
        }
    }
    out
}

fn write_out(bytes: &[u8]) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}
