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
    /// Cells whose files are out of date; `true`: a state changed.
    dirty: HashMap<CellId, bool>,
    /// When each cell's `state.json` was last written (monotonic seconds).
    last_written: HashMap<CellId, f64>,
    /// A dirty cell is urgent: the next tick must look.
    urgent: bool,
    /// Otherwise the dirty cells are looked at no more often than this.
    next_lazy_scan: f64,
    /// Final records of cells no longer tracked (`None`: remove it).
    forgotten: HashMap<CellId, Option<Box<CellRecord>>>,
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
            dirty: HashMap::new(),
            last_written: HashMap::new(),
            urgent: false,
            next_lazy_scan: 0.0,
            forgotten: HashMap::new(),
            in_flight: HashMap::new(),
            writing: None,
        }
    }

    pub fn mark(&mut self, cell: CellId, urgent: bool) {
        *self.dirty.entry(cell).or_default() |= urgent;
        self.urgent |= urgent;
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
    pub fn forget(&mut self, cell: CellId, record: Option<Box<CellRecord>>) {
        self.dirty.remove(&cell);
        self.last_written.remove(&cell);
        let record = record.map(|mut record| {
            record.boot_id = self.boot_id.clone();
            record.daemon_pid = Some(self.pid);
            record
        });
        self.forgotten.insert(cell, record);
        self.urgent = true;
    }

    /// Starts writing what is due (see the module doc). `lazy_after`:
    /// seconds between two `last_seen`-only writes of a cell.
    pub fn flush(&mut self, core: &Supervisor, procs: &Procs, now: f64, lazy_after: f64) {
        if self.writing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.in_flight.clear();
        if !self.urgent && now < self.next_lazy_scan {
            return;
        }
        // Between urgent changes, a scan of every dirty cell once a second
        // is enough for writes that are due only every `lazy_after`.
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
        let room = BATCH_CELLS.saturating_sub(self.forgotten.len().min(BATCH_CELLS));
        if due.len() > room {
            // Urgent first; the rest at the next tick.
            due.select_nth_unstable(room);
            due.truncate(room);
        }
        let batch = self.take(core, procs, due.into_iter().map(|(_, c)| c), now, true);
        self.urgent = self.dirty.values().any(|u| *u) || !self.forgotten.is_empty();
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
        let due: Vec<CellId> = self
            .dirty
            .iter()
            .filter(|(_, urgent)| **urgent)
            .map(|(cell, _)| cell.clone())
            .collect();
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
            batch.push(Write {
                cell,
                record: Some(record),
                state: None,
            });
        }
        for cell in due {
            let urgent = self.dirty.remove(&cell) == Some(true);
            self.last_written.insert(cell.clone(), now);
            let record = urgent
                .then(|| core.record(&cell, now))
                .flatten()
                .map(|mut r| {
                    r.boot_id = self.boot_id.clone();
                    r.daemon_pid = Some(self.pid);
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
