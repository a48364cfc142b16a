//! Discovery: the walk of the root, each cell's manifest read and
//! reconciled with the core (with the daemon's own record on first
//! sight), and the watches that follow cells as they come and go.

use super::*;

impl Shell {
    /// One walk of the root: every cell is (re)read and reconciled, and
    /// cells that vanished are dropped. Idempotent: a rescan loses and
    /// duplicates nothing. Heartbeats are re-read only where inotify may
    /// have missed them (see [`Shell::scan_cell`]).
    pub(super) fn discover(&mut self) {
        self.walk(false);
    }

    /// [`Shell::discover`], re-reading every heartbeat too (events were lost).
    pub(super) fn rediscover(&mut self) {
        self.walk(true);
    }

    pub(super) fn walk(&mut self, all_heartbeats: bool) {
        let mut seen = HashSet::new();
        // A walk that failed (out of descriptors, say) saw nothing: it is
        // no proof that a cell is gone.
        let mut whole = true;
        let root = self.root_path.clone();
        for entry in walkdir::WalkDir::new(&root)
            .min_depth(1)
            .max_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_map(|e| match e {
                Ok(e) => Some(e),
                // The root itself gone: every cell with it.
                Err(e)
                    if e.depth() == 0
                        && e.io_error()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
                {
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot read the root {}: {e}; its cells are kept as they are",
                        root.display()
                    );
                    whole = false;
                    None
                }
            })
        {
            let Some(name) = entry.file_name().to_str() else {
                continue;
            };
            if name.starts_with('.') || !entry.file_type().is_dir() {
                continue;
            }
            seen.insert(name.to_string());
            self.scan(name, all_heartbeats);
        }
        if !whole {
            return;
        }
        for id in self.core.cell_ids() {
            if !seen.contains(&*id) {
                self.cell_gone(&id);
            }
        }
        // Forget the rate limits of directories that are gone.
        self.invalid.retain(|cell| seen.contains(cell));
        if !self.pruned {
            self.pruned = true;
            self.prune_records(&seen);
        }
    }

    /// Removes the records of cells that are no longer in the root and
    /// have no instance left alive (once, at start; later a cell that goes
    /// takes its record with it in [`Shell::execute`]).
    pub(super) fn prune_records(&self, present: &HashSet<String>) {
        for cell in self.records.recorded_cells() {
            if present.contains(&cell) {
                continue;
            }
            let alive = self.records.read_cell(&cell).is_some_and(|mut record| {
                self.verify_instances(&mut record);
                record.agents.values().any(|a| a.instance.is_some())
            });
            if !alive && let Err(e) = self.records.remove_cell(&cell) {
                tracing::warn!("cell {cell}: cannot remove its old record: {e}");
            }
        }
    }

    /// Reads one cell and reconciles it: manifest, watches, heartbeats.
    pub(super) fn scan_cell(&mut self, name: &str) {
        self.scan(name, true);
    }

    /// Reads one cell's manifest and reconciles it. Heartbeats are read if
    /// `heartbeats`, or if inotify cannot be trusted for this cell (new to
    /// the daemon, polled, or no inotify at all); for a watched cell the
    /// periodic rescan skips them — a missed write is caught by the re-read
    /// at the agent's deadline, and a queue overflow rescans everything.
    pub(super) fn scan(&mut self, name: &str, heartbeats: bool) {
        let cell_dir = match self.root_dir.subdir(name) {
            Ok(dir) => dir,
            // Gone, or no longer a directory: let go of it. Anything else
            // (out of descriptors, say) is no reason to drop a cell and
            // its record: keep it as it is, try again at the next rescan.
            Err(e) => match self.root_dir.entry_kind(name) {
                Ok(Some(EntryKind::Dir)) | Err(_) => {
                    tracing::warn!("cell {name}: cannot open it ({e}); kept as it is");
                    return;
                }
                Ok(_) => return self.cell_gone(name),
            },
        };
        let manifest = match cell_dir.read_file(MANIFEST, MANIFEST_LIMIT) {
            Ok(bytes) => match Manifest::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    // Keep the last good manifest: a half-saved edit must
                    // not make agents vanish. Watch the directory so the
                    // fix is seen.
                    let what = crate::error::json_problem(&e);
                    self.report_invalid(name, MANIFEST, format!("{what}: {e}"));
                    self.watch_dir_only(name);
                    return;
                }
            },
            Err(ReadError::NotFound) => {
                // Not (or no longer) a cell; watch it so a cell.json
                // written later is seen.
                self.cell_gone(name);
                self.watch_dir_only(name);
                return;
            }
            Err(e) => {
                self.report_invalid(name, MANIFEST, e.to_string());
                self.watch_dir_only(name);
                return;
            }
        };
        if !manifest.uuid.is_empty() && !manifest.uuid.eq_ignore_ascii_case(name) {
            // The directory's name is the cell's identity. A cell this
            // daemon supervises stays supervised (an agent that rewrites
            // the uuid must not take its cell out of the operator's hands:
            // `cell freeze` and the rest keep working), as does one whose
            // record names processes of ours still running (a restart
            // after such an edit). Only a directory new to us — a cell
            // copied or renamed — is not monitored.
            let ours = self.core.knows(name)
                || self.records.read_cell(name).is_some_and(|mut record| {
                    self.verify_instances(&mut record);
                    record.agents.values().any(|a| a.instance.is_some())
                });
            if !ours {
                self.report_invalid(
                    name,
                    MANIFEST,
                    format!(
                        "uuid {:?} disagrees with the directory name; the cell is not monitored",
                        manifest.uuid
                    ),
                );
                self.cell_gone(name);
                self.watch_dir_only(name);
                return;
            }
            self.report_invalid_as(
                name,
                "cell.json uuid",
                MANIFEST,
                format!(
                    "uuid {:?} disagrees with the directory name; the cell is supervised \
                     as {name}, its directory",
                    manifest.uuid
                ),
            );
        }
        let problems = manifest.problems();
        if problems.is_empty() {
            self.clear_invalid(name, MANIFEST);
        } else {
            self.report_invalid(name, MANIFEST, problems.join("; "));
        }
        let id: CellId = name.into();
        let trusted = self.core.is_monitored(name)
            && !self.polled.contains(name)
            && self
                .watches
                .as_ref()
                .is_some_and(|w| w.heartbeats_watched(name));
        // The daemon's own record, never the cell's state.json: an agent
        // can write that one.
        let previous = if self.core.knows(name) {
            None
        } else {
            let recorded = self
                .publisher
                .final_record(name)
                .map(|r| *r)
                .or_else(|| self.records.read_cell(name));
            recorded.map(|mut record| {
                self.verify_instances(&mut record);
                Box::new(record)
            })
        };
        let now = self.now();
        let actions = self.core.handle(
            Input::Cell {
                id: id.clone(),
                manifest: Box::new(manifest),
                previous,
            },
            now,
        );
        self.execute(actions);
        if self.core.is_monitored(name) {
            self.ensure_watched(&id, &cell_dir);
            if heartbeats || !trusted {
                for agent in self.core.agent_names(name) {
                    self.read_heartbeat(name, &agent);
                }
            }
        } else if self.core.knows(name) {
            // Provisioned: watch for agents joining.
            self.watch_dir_only(name);
        }
    }

    /// The cell's directory is gone or it is no longer a monitored cell.
    pub(super) fn cell_gone(&mut self, name: &str) {
        let now = self.now();
        let actions = self.core.handle(Input::CellGone { id: name.into() }, now);
        self.execute(actions);
        self.unwatch(name);
    }

    /// Watches the cell's directory and heartbeats directory (creating the
    /// latter if a tool made the cell without it).
    pub(super) fn ensure_watched(&mut self, id: &CellId, cell_dir: &Dir) {
        let Some(watches) = self.watches.as_ref() else {
            return;
        };
        if watches.heartbeats_watched(id) || self.polled.contains(id) {
            return;
        }
        if let Err(e) = owned_dir(cell_dir, HEARTBEATS) {
            self.report_invalid(id, HEARTBEATS, e.to_string());
            return;
        }
        let Some(watches) = self.watches.as_mut() else {
            return;
        };
        match watches.watch_cell(id, true) {
            Ok(()) | Err(WatchError::Gone) => {}
            Err(WatchError::Exhausted) => {
                if !self.watch_limit_warned {
                    self.watch_limit_warned = true;
                    tracing::warn!(
                        "inotify watch limit reached at cell {id}: it and further cells are \
                         polled every {:?}; raise the limit with \
                         `sysctl fs.inotify.max_user_watches=524288` (persist it in \
                         /etc/sysctl.d/) and restart the daemon",
                        self.cfg.cells.poll_interval
                    );
                }
                self.polled.insert(id.clone());
            }
            Err(WatchError::Other(e)) => {
                tracing::warn!("cell {id}: cannot watch it ({e}); it is polled");
                self.polled.insert(id.clone());
            }
        }
    }

    /// Watches only the cell directory (a provisioned cell, or a directory
    /// that may become a cell).
    pub(super) fn watch_dir_only(&mut self, name: &str) {
        if let Some(watches) = self.watches.as_mut() {
            watches.unwatch_heartbeats(name);
            let _ = watches.watch_cell(name, false);
        }
    }

    pub(super) fn unwatch(&mut self, name: &str) {
        self.polled.remove(name);
        self.last_scan.remove(name);
        if let Some(watches) = self.watches.as_mut() {
            watches.unwatch_cell(name);
        }
    }

    /// Drops, from a record, the instances that are no longer alive
    /// (another boot, or the pid's start time differs: it exited, maybe
    /// long ago, and the pid may be someone else's now). Their pid is kept
    /// as `lost_pid` so the core reports the death.
    pub(super) fn verify_instances(&self, record: &mut CellRecord) {
        let same_boot = record.boot_id == self.procs.boot_id;
        for agent in record.agents.values_mut() {
            let Some(i) = agent.instance else {
                continue;
            };
            let instance = Instance {
                pid: i.pid,
                start_time: i.start_time,
            };
            if !(same_boot && process::is_alive(instance)) {
                agent.instance = None;
                agent.lost_pid = Some(i.pid);
            }
        }
    }

    /// Moves a provisioned cell that has agents to `active`, under the
    /// cell lock and the transition table, as `cell join` would have.
    pub(super) fn activate(&mut self, name: &str) -> bool {
        let root = crate::cell::Root::new(&self.root_path);
        let result = root.cell(name).and_then(|cell| {
            cell.update_within(DAEMON_LOCK_PATIENCE, |m| {
                let from = m.status();
                match transition(&from, Trigger::Join) {
                    Ok(to) if from == CellStatus::Provisioned && !m.agents.is_empty() => {
                        m.status = Some(to.clone());
                        let event = Event::new(EventKind::CellStatusChanged)
                            .with("from", from.as_str())
                            .with("to", to.as_str());
                        Ok((true, vec![event]))
                    }
                    _ => Ok((false, Vec::new())),
                }
            })
        });
        match result {
            Ok(changed) => {
                if changed {
                    let until = self.clock.now() + EXPECTED_MOVE_S;
                    self.expected_moves
                        .entry(name.into())
                        .or_default()
                        .push((CellStatus::Active, until));
                }
                changed
            }
            Err(e) => {
                tracing::warn!("cell {name}: could not activate it: {e}");
                false
            }
        }
    }
}
