//! The daemon's counters ([`crate::metrics::DaemonStats`]), published every
//! [`crate::metrics::PERIOD`] in its records directory for `lazarus-pit
//! metrics`, and with `[metrics] textfile` as Prometheus text for
//! node_exporter. Samples are taken on the loop; rendering and writing
//! happen off it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Shell;
use crate::metrics::render;

/// Whether the last write failed (so a lasting failure is said once, and
/// its end too).
static FAILING: AtomicBool = AtomicBool::new(false);

impl Shell {
    /// Publishes the counters once, on the loop, before the daemon says it
    /// is ready: from then on `status` knows a daemon ran here.
    pub(super) fn write_first_metrics(&mut self) {
        self.refresh_stats();
        if let Err(e) = self.records.write_stats(&self.stats) {
            tracing::warn!("could not write metrics: {e}");
        }
    }

    /// Publishes the counters (and the textfile), off the loop.
    pub(super) fn write_metrics(&mut self) {
        let now = self.now();
        self.refresh_stats();
        let stats = self.stats.clone();
        let records = Arc::clone(&self.records);
        let textfile = self.cfg.metrics.textfile.clone().map(|path| {
            let (cells, agents) = self.core.samples(now);
            (path, cells, agents)
        });
        tokio::task::spawn_blocking(move || {
            let mut result = records.write_stats(&stats).map_err(|e| {
                format!(
                    "{}: {e}",
                    records.path().join(crate::metrics::STATS_FILE).display()
                )
            });
            if let Some((path, cells, agents)) = textfile {
                let text = render(&cells, &agents, true, Some(&stats), true);
                result = result.and(write_textfile(&path, &text));
            }
            match result {
                Ok(()) => {
                    if FAILING.swap(false, Ordering::Relaxed) {
                        tracing::info!("metrics are written again");
                    }
                }
                Err(e) => {
                    if !FAILING.swap(true, Ordering::Relaxed) {
                        tracing::warn!("could not write metrics: {e}");
                    }
                }
            }
        });
    }

    /// The figures that are read, not counted: time, CPU, memory, how the
    /// root is watched.
    fn refresh_stats(&mut self) {
        self.stats.written_at = crate::commands::status::unix_now();
        self.stats.sample_process();
        self.stats.polled_cells = self.polled.len() as u64;
        self.stats.watch = match (&self.watches, self.polled.is_empty()) {
            (None, _) => "poll",
            (Some(_), true) => "inotify",
            (Some(_), false) => "mixed",
        }
        .into();
    }

    /// At shutdown: the textfile says the daemon is down (node_exporter
    /// would otherwise serve the last figures as current).
    pub(super) fn metrics_down(&mut self) {
        if let Some(path) = self.cfg.metrics.textfile.clone() {
            let now = self.now();
            let (cells, agents) = self.core.samples(now);
            if let Err(e) = write_textfile(&path, &render(&cells, &agents, false, None, false)) {
                tracing::warn!("could not write metrics: {e}");
            }
        }
    }
}

/// Writes `text` to `path` whole: a temporary file beside it (not named
/// `*.prom`, so the collector never reads it half written), then a rename.
fn write_textfile(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let said = |e: std::io::Error| format!("{}: {e}", path.display());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".lazarus-pit-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(said)?;
    tmp.write_all(text.as_bytes()).map_err(said)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(said)?;
    tmp.as_file().sync_all().map_err(said)?;
    tmp.persist(path).map_err(|e| said(e.error))?;
    Ok(())
}
