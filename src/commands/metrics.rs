//! `metrics`: the Prometheus text of the root's cells and agents (what
//! `status` reads), and of the running daemon's counters when its records
//! can be read.

use std::process::ExitCode;

use super::Context;
use crate::error::Result;

pub fn run(ctx: &Context) -> Result<ExitCode> {
    print!("{}", text(ctx)?);
    Ok(ExitCode::SUCCESS)
}

/// The Prometheus text exposition, as `metrics` prints it and the HTTP
/// API's `/metrics` serves it.
pub(crate) fn text(ctx: &Context) -> Result<String> {
    let gathered = super::status::gather(ctx, None)?;
    // The counters count only if the daemon holding the root wrote them,
    // lately: a daemon that stopped publishing (hung, stopped) is not ready.
    let now = super::status::unix_now();
    let stats = gathered
        .records
        .as_ref()
        .and_then(|r| r.read_stats())
        .filter(|s| Some(s.pid) == gathered.daemon);
    let fresh = stats
        .as_ref()
        .is_some_and(|s| now - s.written_at <= crate::metrics::STALE_AFTER);
    let text = crate::metrics::render(
        &gathered.statuses,
        &gathered.samples(),
        gathered.daemon.is_some(),
        stats.as_ref(),
        fresh,
    );
    Ok(text)
}
