//! Writing what the core knows: each cell's record in `state_dir` (the
//! daemon's own word, read back after a restart) and its published
//! `.lazarus/state.json` (for people and tools, never read back).
//!
//! Both are written atomically, off the daemon's loop, one batch at a
//! time, in that order — so whenever `state.json` shows a state, the
//! record already holds it. A state change (`urgent`) is written at the
//! next tick: within [`super::FLUSH_TICK`], far inside BRIEF's second. A
//! `last_seen` that merely moved rewrites only `state.json`, at most every
//! `poll_interval`: heartbeats arrive by the thousand per second and each
//! write costs an fsync, so a heartbeat storm must not become a write
//! storm (`status` reads heartbeat ages from the heartbeat files anyway).
//! A batch holds at most [`BATCH_CELLS`] cells, urgent ones first, already
//! serialised: the memory it takes stays small at 10,000 cells.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::process::Procs;
use crate::cell::{MANIFEST, STATE};
use crate::records::{CellRecord, Records};
use crate::state::CellState;
use crate::store::Dir;
use crate::supervisor::{CellId, Supervisor};

/// Cells per batch. Each costs two fsyncs, so a batch is tens of
/// milliseconds of disk at most; the next one follows at the next tick.
const BATCH_CELLS: usize = 512;

/// One cell's writes in a batch, serialised.
struct Write {
    cell: CellId,
    record: Option<RecordWrite>,
    state: Option<Vec<u8>>,
}

enum RecordWrite {
    Put(Vec<u8>),
    Remove,
}

pub struct Publisher {
    root: Arc<Dir>,
    records: Arc<Records>,
    boot_id: String,
    pid: u32,
    /// Which cells are due when.
    policy: FlushPolicy,
    /// Final records of cells no longer tracked (`None`: remove it).
    forgotten: HashMap<CellId, Option<Box<CellRecord>>>,
    /// Last `state.json` of forgotten cells, serialised.
    final_states: HashMap<CellId, Vec<u8>>,
    /// Final records in the batch being written: until it is done, the
    /// record on disk may be older than these.
    in_flight: HashMap<CellId, Box<CellRecord>>,
    writing: Option<JoinHandle<()>>,
}

impl Publisher {
    pub fn new(root: Arc<Dir>, records: Arc<Records>, boot_id: String) -> Publisher {
        Publisher {
            root,
            records,
            boot_id,
            pid: std::process::id(),
            policy: FlushPolicy::default(),
            forgotten: HashMap::new(),
            final_states: HashMap::new(),
            in_flight: HashMap::new(),
            writing: None,
        }
    }

    pub fn mark(&mut self, cell: CellId, urgent: bool) {
        self.policy.mark(cell, urgent);
    }

    /// The final record of a forgotten cell that may not have reached the
    /// disk yet: a cell found again right after it was forgotten must be
    /// restored from this, not from an older file.
    pub fn final_record(&mut self, cell: &str) -> Option<Box<CellRecord>> {
        if self.writing.as_ref().is_none_or(|h| h.is_finished()) {
            self.in_flight.clear();
        }
        self.forgotten
            .get(cell)
            .cloned()
            .flatten()
            .or_else(|| self.in_flight.get(cell).cloned())
    }

    /// The cell is no longer tracked: its `state.json` is left as it is,
    /// and its record is written one last time — the status it leaves on
    /// (archived, say) is in it, and its instances may still run and be
    /// adopted when it is seen again — or removed if there is nothing left
    /// to remember.
    pub fn forget(
        &mut self,
        cell: CellId,
        record: Option<Box<CellRecord>>,
        state: Option<Box<CellState>>,
    ) {
        self.policy.forget(&cell);
        let record = record.map(|mut record| {
            record.boot_id = self.boot_id.clone();
            record.daemon_pid = Some(self.pid);
            record
        });
        if let Some(mut state) = state {
            state.daemon_pid = Some(self.pid);
            state
                .extra
                .insert("boot_id".into(), self.boot_id.clone().into());
            self.final_states.insert(cell.clone(), state.to_bytes());
        }
        self.forgotten.insert(cell, record);
        self.policy.urgent = true;
    }

    /// Starts writing what is due (see the module doc). `lazy_after`:
    /// seconds between two `last_seen`-only writes of a cell.
    pub fn flush(&mut self, core: &Supervisor, procs: &Procs, now: f64, lazy_after: f64) {
        if self.writing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.in_flight.clear();
        let room = BATCH_CELLS.saturating_sub(self.forgotten.len().min(BATCH_CELLS));
        let Some(due) = self.policy.due(now, lazy_after, room) else {
            return;
        };
        let batch = self.take(core, procs, due.into_iter(), now, true);
        self.policy.urgent = self.policy.any_urgent() || !self.forgotten.is_empty();
        if batch.is_empty() {
            return;
        }
        let (root, records) = (self.root.clone(), self.records.clone());
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write(&root, &records, batch);
        }));
    }

    /// Shutdown and `--once`: waits for the batch in flight, then writes —
    /// on this thread — every state change not written yet. `last_seen`
    /// refreshes are not written: the next daemon reads the heartbeat
    /// files, and at thousands of cells their fsyncs alone would break the
    /// shutdown deadline.
    pub async fn finish(&mut self, core: &Supervisor, procs: &Procs, now: f64) {
        if let Some(handle) = self.writing.take() {
            // The final write must not be overtaken by an older one.
            let _ = handle.await;
        }
        self.in_flight.clear();
        let due = self.policy.urgent_cells();
        for chunk in due.chunks(BATCH_CELLS) {
            let batch = self.take(core, procs, chunk.iter().cloned(), now, false);
            write(&self.root, &self.records, batch);
        }
        let batch = self.take(core, procs, std::iter::empty(), now, false);
        write(&self.root, &self.records, batch);
    }

    /// Takes the forgotten records and the `due` cells out of the dirty
    /// set, serialised for writing. `track`: remember the forgotten
    /// records until the batch is written (it runs off the loop).
    fn take(
        &mut self,
        core: &Supervisor,
        procs: &Procs,
        due: impl Iterator<Item = CellId>,
        now: f64,
        track: bool,
    ) -> Vec<Write> {
        let mut batch = Vec::new();
        for (cell, record) in std::mem::take(&mut self.forgotten) {
            let record = match record {
                Some(record) => {
                    let bytes = record.to_bytes();
                    if track {
                        self.in_flight.insert(cell.clone(), record);
                    }
                    RecordWrite::Put(bytes)
                }
                None => RecordWrite::Remove,
            };
            let state = self.final_states.remove(&cell);
            batch.push(Write {
                cell,
                record: Some(record),
                state,
            });
        }
        for cell in due {
            let urgent = self.policy.taken(&cell, now);
            let record = urgent
                .then(|| core.record(&cell, now))
                .flatten()
                .map(|mut r| {
                    r.boot_id = self.boot_id.clone();
                    r.daemon_pid = Some(self.pid);
                    for (agent, a) in &mut r.agents {
                        a.control = procs.control(&cell, agent).map(|c| c.as_str().into());
                        a.limits = procs.limits(&cell, agent).unwrap_or_default().to_vec();
                        a.isolation = procs.isolation(&cell, agent).map(|i| i.as_str().into());
                    }
                    RecordWrite::Put(r.to_bytes())
                });
            let state = core.snapshot(&cell, self.pid, now).map(|mut state| {
                state
                    .extra
                    .insert("boot_id".into(), self.boot_id.clone().into());
                // How each running agent's processes are controlled.
                for (agent, health) in &mut state.agent_health {
                    if let Some(control) = procs.control(&cell, agent) {
                        health
                            .extra
                            .insert("control".into(), control.as_str().into());
                    }
                    if let Some(limits) = procs.limits(&cell, agent).filter(|l| !l.is_empty()) {
                        health.extra.insert(
                            "limits".into(),
                            serde_json::to_value(limits).unwrap_or_default(),
                        );
                    }
                    // The level it runs with; the configured one when that
                    // differs (it applies at the next start) or nothing runs.
                    let configured = core.isolation(&cell, agent);
                    let running = procs.isolation(&cell, agent);
                    if let Some(level) = running.or(configured) {
                        health
                            .extra
                            .insert("isolation".into(), level.as_str().into());
                    }
                    if let (Some(running), Some(configured)) = (running, configured)
                        && running != configured
                    {
                        health
                            .extra
                            .insert("isolation_configured".into(), configured.as_str().into());
                    }
                }
                state.to_bytes()
            });
            batch.push(Write {
                cell,
                record,
                state,
            });
        }
        batch
    }
}

/// When each dirty cell is written (see the module doc). Pure: instants
/// are the caller's (monotonic seconds).
#[derive(Debug, Default)]
struct FlushPolicy {
    /// Cells whose files are out of date; `true`: a state changed.
    dirty: HashMap<CellId, bool>,
    /// When each cell's `state.json` was last written.
    last_written: HashMap<CellId, f64>,
    /// A dirty cell is urgent (or a final record waits): the next tick
    /// must look.
    urgent: bool,
    /// Otherwise the dirty cells are looked at no more often than this.
    next_lazy_scan: f64,
}

impl FlushPolicy {
    fn mark(&mut self, cell: CellId, urgent: bool) {
        *self.dirty.entry(cell).or_default() |= urgent;
        self.urgent |= urgent;
    }

    fn forget(&mut self, cell: &CellId) {
        self.dirty.remove(cell);
        self.last_written.remove(cell);
    }

    /// The cells to write at `now`, at most `room`, urgent ones first —
    /// or `None` if nothing needs a look yet: between urgent changes the
    /// dirty cells are scanned once a second, and a cell whose only change
    /// is a `last_seen` is written at most every `lazy_after`.
    fn due(&mut self, now: f64, lazy_after: f64, room: usize) -> Option<Vec<CellId>> {
        if !self.urgent && now < self.next_lazy_scan {
            return None;
        }
        self.next_lazy_scan = now + 1.0;
        let last_written = &self.last_written;
        let mut due: Vec<(bool, CellId)> = self
            .dirty
            .iter()
            .filter(|(cell, urgent)| {
                **urgent
                    || last_written
                        .get(*cell)
                        .is_none_or(|at| now - at >= lazy_after)
            })
            .map(|(cell, urgent)| (!*urgent, cell.clone()))
            .collect();
        if due.len() > room {
            // Urgent first (`false` sorts first); the rest at the next tick.
            due.select_nth_unstable(room);
            due.truncate(room);
        }
        Some(due.into_iter().map(|(_, c)| c).collect())
    }

    /// The cell is being written at `now`; whether a state of it changed
    /// (its record is written too).
    fn taken(&mut self, cell: &CellId, now: f64) -> bool {
        self.last_written.insert(cell.clone(), now);
        self.dirty.remove(cell) == Some(true)
    }

    fn any_urgent(&self) -> bool {
        self.dirty.values().any(|u| *u)
    }

    fn urgent_cells(&self) -> Vec<CellId> {
        self.dirty
            .iter()
            .filter(|(_, urgent)| **urgent)
            .map(|(cell, _)| cell.clone())
            .collect()
    }
}

/// Writes a batch: each record before its cell's `state.json`.
fn write(root: &Dir, records: &Records, batch: Vec<Write>) {
    for w in batch {
        let result = match &w.record {
            Some(RecordWrite::Put(bytes)) => records.write_cell_bytes(&w.cell, bytes),
            Some(RecordWrite::Remove) => records.remove_cell(&w.cell),
            None => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!("cell {}: could not write the daemon's record: {e}", w.cell);
        }
        if let Some(bytes) = w.state
            && let Err(e) = write_state(root, &w.cell, &bytes)
        {
            tracing::warn!("cell {}: could not write {STATE}: {e}", w.cell);
        }
    }
}

/// Publishes `state.json`, only into a cell that still has its manifest:
/// the daemon never writes into a directory being deleted, nor re-creates
/// one.
fn write_state(root: &Dir, cell: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = root.subdir(cell)?;
    if !dir.exists_beneath(MANIFEST) {
        return Ok(());
    }
    dir.subdir(".lazarus")?
        .write_atomic("state.json", bytes, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(name: &str) -> CellId {
        name.into()
    }

    #[test]
    fn a_state_change_is_written_at_the_next_tick() {
        let mut p = FlushPolicy::default();
        assert_eq!(p.due(0.0, 15.0, 10), Some(vec![]));
        p.mark(cell("a"), true);
        assert_eq!(
            p.due(0.1, 15.0, 10),
            Some(vec![cell("a")]),
            "not a second later"
        );
        assert!(p.taken(&cell("a"), 0.1), "its record too");
        p.urgent = p.any_urgent();
        assert_eq!(p.due(0.2, 15.0, 10), None, "nothing urgent: no look yet");
    }

    #[test]
    fn a_last_seen_alone_is_written_at_most_every_lazy_period() {
        let mut p = FlushPolicy::default();
        p.mark(cell("a"), false);
        assert_eq!(p.due(0.0, 15.0, 10), Some(vec![cell("a")]), "first write");
        assert!(!p.taken(&cell("a"), 0.0), "state.json only");
        p.urgent = p.any_urgent();
        p.mark(cell("a"), false);
        assert_eq!(p.due(0.5, 15.0, 10), None, "scanned once a second");
        assert_eq!(p.due(1.0, 15.0, 10), Some(vec![]), "looked at, not due");
        assert_eq!(p.due(14.9, 15.0, 10), Some(vec![]));
        assert_eq!(p.due(15.0, 15.0, 10), None, "the next scan is a second on");
        assert_eq!(p.due(15.9, 15.0, 10), Some(vec![cell("a")]));
    }

    #[test]
    fn a_full_batch_takes_urgent_cells_first() {
        let mut p = FlushPolicy::default();
        for i in 0..5 {
            p.mark(cell(&format!("lazy{i}")), false);
        }
        p.mark(cell("u1"), true);
        p.mark(cell("u2"), true);
        let mut due = p.due(0.0, 15.0, 2).expect("due");
        due.sort();
        assert_eq!(due, vec![cell("u1"), cell("u2")]);
        for c in &due {
            p.taken(c, 0.0);
        }
        p.urgent = p.any_urgent();
        assert!(!p.urgent);
        assert_eq!(
            p.due(1.0, 15.0, 10).map(|d| d.len()),
            Some(5),
            "the rest next"
        );
    }

    #[test]
    fn a_forgotten_cell_is_not_written() {
        let mut p = FlushPolicy::default();
        p.mark(cell("a"), true);
        p.forget(&cell("a"));
        assert_eq!(p.due(0.0, 15.0, 10), Some(vec![]));
        assert!(p.urgent_cells().is_empty());
    }
}
