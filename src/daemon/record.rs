//! Record: event lines appended to a cell's `events.jsonl` (and to the
//! log and the notification hooks), and `invalid_input` under its rate
//! limit ([`InvalidLimit`]).

use super::*;

impl Shell {
    /// Appends an event line to the cell's stream, logs it, and runs the
    /// notification hook if it wants it. `agent_stale` of an agent whose
    /// process the daemon knows says what `/proc` says of it.
    pub(super) fn emit(&mut self, cell: &str, event: &Event) {
        let diagnosed;
        let mut event = event;
        if event.kind == EventKind::AgentStale
            && let Some(agent) = event.fields.get("agent").and_then(|a| a.as_str())
            && let Some(process) = self.procs.diagnose(cell, agent)
        {
            diagnosed = event.clone().with("process", process);
            event = &diagnosed;
        }
        tracing::info!(
            "{cell} {} {}",
            event.kind.as_str(),
            crate::text::escape(&serde_json::Value::Object(event.fields.clone()).to_string())
        );
        let line = event.to_line(cell, chrono::Utc::now());
        self.stats.event(event.kind.as_str(), &event.fields);
        self.append(cell, &line, event.kind.as_str());
        let kind = event.kind.as_str();
        if self.hooks.wants(kind) {
            let agent = event.fields.get("agent").and_then(|a| a.as_str());
            self.hooks
                .fire(kind, cell, &self.root_path.join(cell), agent, &line);
        }
    }

    /// Records `invalid_input` for a file of a cell, once per distinct
    /// error per [`INVALID_REPEAT_S`], and logs it.
    pub(super) fn report_invalid(&mut self, cell: &str, rel: &str, error: String) {
        self.report_invalid_as(cell, rel, rel, error);
    }

    /// [`Shell::report_invalid`], rate-limited under `key`.
    pub(super) fn report_invalid_as(&mut self, cell: &str, key: &str, rel: &str, error: String) {
        let now = self.clock.now();
        if !self.invalid.admit(cell, key, &error, now) {
            return;
        }
        tracing::warn!("cell {cell}: {rel}: {}", crate::text::escape(&error));
        let event = Event::new(EventKind::InvalidInput)
            .with("path", rel)
            .with("error", error);
        let line = event.to_line(cell, chrono::Utc::now());
        self.stats.event("invalid_input", &event.fields);
        self.append(cell, &line, "invalid_input");
    }

    /// Appends a line to the cell's stream, and rotates the stream if that
    /// made it too large (`[events] max_bytes`).
    fn append(&mut self, cell: &str, line: &[u8], what: &str) {
        match append_line(&self.root_dir, cell, line) {
            Ok(size) => {
                let events = &self.cfg.events;
                if let Some(max) = events.max_bytes.filter(|max| *max > 0 && size > *max) {
                    rotate(&self.root_dir, cell, max, events.keep);
                }
            }
            Err(e) => tracing::warn!("cell {cell}: could not record {what}: {e}"),
        }
    }

    pub(super) fn clear_invalid(&mut self, cell: &str, rel: &str) {
        self.invalid.clear(cell, rel);
    }
}

/// The rate limit of `invalid_input`: a file that stays broken (an agent
/// rewriting a bad heartbeat ten times a second) is reported once, and
/// again only if its error changes or [`INVALID_REPEAT_S`] passed; a file
/// that was fixed and breaks again is news at once. Pure: times are the
/// caller's.
#[derive(Debug, Default)]
pub(super) struct InvalidLimit {
    /// Per cell, per file: the last error reported and when (nested so the
    /// hot path can look up by `&str` without allocating).
    reported: HashMap<String, HashMap<String, (String, f64)>>,
}

impl InvalidLimit {
    /// Whether `error` of file `key` in `cell` is to be reported at `now`
    /// (and if so, remembers it).
    pub(super) fn admit(&mut self, cell: &str, key: &str, error: &str, now: f64) -> bool {
        if let Some((last, at)) = self.reported.get(cell).and_then(|files| files.get(key))
            && last == error
            && now - at < INVALID_REPEAT_S
        {
            return false;
        }
        self.reported
            .entry(cell.to_string())
            .or_default()
            .insert(key.to_string(), (error.to_string(), now));
        true
    }

    /// The file parsed again: a later error is news.
    pub(super) fn clear(&mut self, cell: &str, key: &str) {
        if let Some(files) = self.reported.get_mut(cell) {
            files.remove(key);
            if files.is_empty() {
                self.reported.remove(cell);
            }
        }
    }

    /// Whether anything of `cell` is remembered (the heartbeat hot path
    /// looks before it clears).
    pub(super) fn has(&self, cell: &str) -> bool {
        self.reported.contains_key(cell)
    }

    /// Forgets the cells `keep` says no to (their directories are gone).
    pub(super) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.reported.retain(|cell, _| keep(cell));
    }
}

pub(super) fn append_line(root: &Dir, cell: &str, line: &[u8]) -> std::io::Result<u64> {
    let logs = live_cell(root, cell)?.create_dirs("logs")?;
    crate::eventlog::append(&logs, &[line], std::time::Duration::ZERO)
}

/// Rotates a cell's stream that grew past `max_bytes`: tried after an
/// append made it so, and again at each later one while someone holds
/// the lock.
pub(super) fn rotate(root: &Dir, cell: &str, max_bytes: u64, keep: u32) {
    let result = live_cell(root, cell)
        .and_then(|c| c.subdir("logs"))
        .and_then(|logs| crate::eventlog::rotate(&logs, max_bytes, keep));
    match result {
        Ok(crate::eventlog::Rotated::Done {
            bytes,
            forced: false,
        }) => tracing::info!("cell {cell}: rotated events.jsonl ({bytes} bytes)"),
        Ok(crate::eventlog::Rotated::Done {
            bytes,
            forced: true,
        }) => tracing::warn!(
            "cell {cell}: rotated events.jsonl ({bytes} bytes) without its lock: someone \
             (an agent of the cell?) held the lock past twice [events] max_bytes"
        ),
        Ok(crate::eventlog::Rotated::Busy) => {
            tracing::debug!("cell {cell}: events.jsonl is locked; rotation at the next append")
        }
        Ok(crate::eventlog::Rotated::NotDue) => {}
        Err(e) => tracing::warn!("cell {cell}: could not rotate events.jsonl: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_error_is_said_once_per_period_a_new_one_at_once() {
        let mut limit = InvalidLimit::default();
        assert!(limit.admit("c", "hb", "bad", 0.0));
        assert!(!limit.admit("c", "hb", "bad", 1.0), "repeated");
        assert!(!limit.admit("c", "hb", "bad", INVALID_REPEAT_S - 0.001));
        assert!(limit.admit("c", "hb", "worse", 2.0), "a different error");
        assert!(limit.admit("c", "other", "worse", 2.0), "another file");
        assert!(limit.admit("d", "hb", "worse", 2.0), "another cell");
        assert!(
            limit.admit("c", "hb", "worse", 2.0 + INVALID_REPEAT_S),
            "after the period"
        );
    }

    #[test]
    fn a_file_fixed_and_broken_again_is_news() {
        let mut limit = InvalidLimit::default();
        assert!(limit.admit("c", "hb", "bad", 0.0));
        limit.clear("c", "hb");
        assert!(!limit.has("c"));
        assert!(limit.admit("c", "hb", "bad", 1.0));
        limit.retain(|cell| cell != "c");
        assert!(!limit.has("c"));
    }
}
