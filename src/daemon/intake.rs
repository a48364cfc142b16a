//! Intake: what inotify, the safety-net rescan and the deadlines bring,
//! turned into the core's inputs — heartbeat reads above all (the hot
//! path), coalesced rescans of cells, and the fall back to polling.

use super::*;

impl Shell {
    /// What the inotify reader brought; `true` if the root is gone. When
    /// the reader has stopped for good, `events` is dropped: polling from
    /// then on, never a loop of reads that return at once.
    pub(super) fn on_batch(&mut self, batch: Batch, events: &mut Option<EventSource>) -> bool {
        match batch {
            Batch::Events(batch) => {
                if self.on_raw_events(batch) {
                    return true;
                }
            }
            Batch::Failed(e) => {
                tracing::warn!("reading inotify events: {e}; rescanning");
                self.rediscover();
            }
            Batch::Ended => {
                *events = None;
                self.fall_back_to_polling();
            }
        }
        let now = self.now();
        self.core.rearm_early(now + watch::COALESCE.as_secs_f64());
        false
    }

    /// The inotify reader is gone (it cannot be restarted without losing
    /// events): every cell is polled from now on, said once.
    pub(super) fn fall_back_to_polling(&mut self) {
        tracing::warn!(
            "inotify stopped delivering events; polling {} every {:?} from now on \
             (restart the daemon to use inotify again)",
            self.root_path.display(),
            self.cfg.cells.poll_interval
        );
        self.watches = None;
        self.rediscover();
    }

    /// Whether the root directory we hold has been unlinked (the safety net
    /// for the parent watch, and the only check when polling).
    pub(super) fn root_removed(&self) -> bool {
        nix::sys::stat::fstat(self.root_dir.as_fd()).is_ok_and(|st| st.st_nlink == 0)
    }

    /// Sets up inotify unless polling is asked for or the root's
    /// filesystem does not deliver inotify events.
    pub(super) fn start_watching(&mut self) -> Option<EventSource> {
        let mode = self.cfg.cells.watch;
        let network = network_filesystem(&self.root_path);
        if mode == WatchMode::Poll || (mode == WatchMode::Auto && network.is_some()) {
            tracing::warn!(
                "polling {} every {:?}{}: inotify is not used",
                self.root_path.display(),
                self.cfg.cells.poll_interval,
                network
                    .map(|fs| format!(" (a {fs} filesystem)"))
                    .unwrap_or_default()
            );
            return None;
        }
        match watch::watch_root(&self.root_path) {
            Ok((mut watches, source)) => {
                let inbox = self.records.inbox_path();
                if let Err(e) = watches.watch_inbox(&inbox) {
                    tracing::warn!(
                        "cannot watch {} ({e:?}); operators' requests are read every {:?}",
                        inbox.display(),
                        self.cfg.cells.poll_interval
                    );
                }
                self.watches = Some(watches);
                Some(source)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} with inotify ({e}); polling every {:?} instead",
                    self.root_path.display(),
                    self.cfg.cells.poll_interval
                );
                None
            }
        }
    }

    /// Reads one heartbeat file and feeds a good one to the core. A torn
    /// write is skipped silently: the writer's close brings another event.
    pub(super) fn read_heartbeat(&mut self, cell: &str, agent: &str) {
        use std::fmt::Write;
        let mut rel = std::mem::take(&mut self.path_buf);
        rel.clear();
        let _ = write!(rel, "{cell}/{HEARTBEATS}/{agent}.json");
        let mut buf = std::mem::take(&mut self.read_buf);
        if buf.is_empty() {
            // Zeroed once, then reused as is for every read.
            buf = vec![0; AGENT_FILE_LIMIT as usize + 1];
        }
        let result = self
            .root_dir
            .read_agent_file(&rel, &mut buf)
            .map_err(|e| match e {
                ReadError::NotFound => None,
                other => Some(format!("heartbeat file {other}")),
            })
            .and_then(|n| {
                Heartbeat::parse(&buf[..n]).map_err(|e| match e {
                    HeartbeatError::Partial => None,
                    HeartbeatError::Invalid(msg) => Some(format!("heartbeat {msg}")),
                })
            });
        self.read_buf = buf;
        self.path_buf = rel;
        match result {
            Ok(heartbeat) => {
                if self.invalid.has(cell) {
                    self.clear_invalid(cell, &heartbeat_rel(agent));
                }
                let now = self.now();
                self.stats.heartbeats += 1;
                let actions = self.core.heartbeat(cell, agent, &heartbeat, now);
                if !actions.is_empty() {
                    self.procs.sample_cpu(cell, agent);
                    self.execute(actions);
                }
            }
            Err(None) => {}
            Err(Some(error)) => self.report_invalid(cell, &heartbeat_rel(agent), error),
        }
    }

    /// Handles a batch of raw inotify events; `true` if the root is gone.
    pub(super) fn on_raw_events(&mut self, batch: Vec<RawEvent>) -> bool {
        let mut root_gone = false;
        // One look per written file per batch: every read happens after the
        // batch was gathered, so the first look already sees the latest
        // content. Keyed by the raw event, before any allocation.
        let mut written = HashSet::with_capacity(batch.len());
        for raw in &batch {
            if raw.is_file_write()
                && let Some(name) = raw.name.as_deref()
                && !written.insert((&raw.wd, name))
            {
                continue;
            }
            let Some(ev) = self.watches.as_mut().and_then(|w| w.interpret(raw)) else {
                continue;
            };
            if ev == FsEvent::Rescan {
                tracing::warn!("inotify queue overflowed: events were lost; rescanning every cell");
            }
            root_gone |= self.on_fs_event(ev);
        }
        if !root_gone {
            self.scan_pending();
        }
        root_gone
    }

    /// Reads the cells events asked for, each once; a cell read less than
    /// [`SCAN_SPACING`] ago waits for its turn (a timer), so no cell can
    /// keep the daemon busy re-reading it while others wait.
    pub(super) fn scan_pending(&mut self) {
        let now = self.clock.now();
        let spacing = SCAN_SPACING.as_secs_f64();
        let mut later: Option<f64> = None;
        for name in std::mem::take(&mut self.pending_scans) {
            match self.last_scan.get(name.as_str()) {
                Some(at) if now - at < spacing => {
                    later = Some(later.map_or(at + spacing, |l| l.min(at + spacing)));
                    self.pending_scans.insert(name);
                }
                _ => {
                    self.last_scan.insert(name.as_str().into(), now);
                    // Heartbeats only where the watch cannot be trusted
                    // (a new cell, `.lazarus` re-created): a watched one's
                    // come as events, and a new agent's is read at its
                    // first deadline, before anything is decided.
                    self.scan(&name, false);
                }
            }
        }
        self.scan_again_at = later;
    }

    pub(super) fn on_fs_event(&mut self, ev: FsEvent) -> bool {
        match ev {
            FsEvent::Heartbeat { cell, agent } => {
                if self.core.is_monitored(&cell) {
                    self.read_heartbeat(&cell, &agent);
                }
            }
            FsEvent::Inbox(name) => self.read_request(&name),
            FsEvent::RootEntry(name) | FsEvent::Manifest(name) | FsEvent::CellMeta(name) => {
                // Read once at the end of the batch, however many events
                // name it (an agent renaming `.lazarus` in a loop).
                self.pending_scans.insert(name);
            }
            FsEvent::CellMetaGone(_) => {
                // The kernel dropped that watch (bookkept in `interpret`).
                // Nothing is re-created now — the cell may be being deleted;
                // the next rescan repairs a live cell.
            }
            FsEvent::RootEntryGone(name) => self.cell_gone(&name),
            FsEvent::Rescan => self.rediscover(),
            FsEvent::RootGone => {
                for id in self.core.cell_ids() {
                    self.cell_gone(&id);
                }
                return true;
            }
        }
        false
    }

    /// Deadlines have come: re-read those agents' heartbeats first (an
    /// event inotify lost, or a polled cell, must not make a live agent
    /// stale), then let the core apply what is still due.
    pub(super) fn expire_due(&mut self) {
        let now = self.now();
        let due = self.core.take_due(now);
        for (cell, agent) in &due {
            self.read_heartbeat(cell, agent);
        }
        let now = self.now();
        let actions = self.core.handle(Input::Expire { due }, now);
        self.execute(actions);
    }
}

pub(super) async fn read_events(source: &mut Option<EventSource>) -> Batch {
    match source {
        Some(source) => source.read().await,
        None => std::future::pending().await,
    }
}

/// The name of the root's filesystem type if it does not deliver inotify
/// events for changes made elsewhere (network and FUSE filesystems).
pub(super) fn network_filesystem(root: &std::path::Path) -> Option<&'static str> {
    const KINDS: &[(i64, &str)] = &[
        (0x6969, "NFS"),
        (0x517B, "SMB"),
        (0xFF53_4D42, "CIFS"),
        (0xFE53_4D42, "SMB2"),
        (0x6573_5546, "FUSE"),
        (0x00C3_6400, "Ceph"),
        (0x0102_1997, "9p"),
        (0x5346_414F, "AFS"),
    ];
    let fs = nix::sys::statfs::statfs(root).ok()?;
    #[allow(clippy::unnecessary_cast)]
    let kind = fs.filesystem_type().0 as i64;
    KINDS
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| *name)
}
