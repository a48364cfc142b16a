//! Logging with tracing: terse warnings for the CLI; for the daemon, the
//! level from config (`daemon.log_level`, seed spelling accepted) unless
//! `RUST_LOG` is set, text or JSON lines, reloadable on `SIGHUP`.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{DaemonConfig, LogFormat};

/// Changes the daemon's log level after a config reload.
pub struct LogHandle(Option<reload::Handle<EnvFilter, Registry>>);

impl LogHandle {
    pub fn set_level(&self, cfg: &DaemonConfig) {
        if let Some(handle) = &self.0
            && std::env::var_os("RUST_LOG").is_none()
            && let Err(e) = handle.reload(EnvFilter::new(level(cfg)))
        {
            tracing::warn!("could not change the log level: {e}");
        }
    }
}

/// A handle that changes nothing (logging was set up elsewhere).
pub fn init_daemon_fallback() -> LogHandle {
    LogHandle(None)
}

/// Warnings and errors on stderr, without timestamps: the CLI's audience
/// is a person at a terminal. `RUST_LOG` overrides the level.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .try_init();
}

/// The daemon's logging; `log_file` other than `-` appends to that file.
pub fn init_daemon(cfg: &DaemonConfig) -> LogHandle {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level(cfg)));
    let (filter, handle) = reload::Layer::new(filter);
    let file = cfg
        .log_file
        .as_deref()
        .filter(|f| *f != "-")
        .and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| eprintln!("lazarus-pit: log file {path}: {e}; logging to stderr"))
                .ok()
        });
    let ansi = file.is_none() && std::io::stderr().is_terminal();
    let writer = move || -> Box<dyn std::io::Write> {
        match &file {
            Some(f) => f.try_clone().map_or_else(
                |_| Box::new(std::io::stderr()) as Box<dyn std::io::Write>,
                |f| Box::new(f),
            ),
            None => Box::new(std::io::stderr()),
        }
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.log_format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer))
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_target(false)
                    .with_writer(writer),
            )
            .try_init(),
    };
    LogHandle(result.ok().map(|()| handle))
}

/// `daemon.log_level` as a filter directive; the seed's Python spellings
/// (`WARNING`, `CRITICAL`) are accepted.
fn level(cfg: &DaemonConfig) -> String {
    let raw = cfg
        .log_level
        .as_deref()
        .unwrap_or("info")
        .to_ascii_lowercase();
    let level = match raw.as_str() {
        "warning" => "warn".to_string(),
        "critical" | "fatal" => "error".to_string(),
        _ => raw,
    };
    // notify logs routine watch bookkeeping (a removed directory's watch)
    // as warnings; the daemon reports what matters itself.
    format!("{level},notify=error")
}
