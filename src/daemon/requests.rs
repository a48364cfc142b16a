//! Requests: operators' words from the inbox of `state_dir` (revive,
//! approve, deny) and the CLI's notices of moves it records itself (status
//! moves, leaves), so nothing is recorded twice.

use super::*;

impl Shell {
    /// Acts on every request waiting in the inbox (at each rescan, and
    /// when polling).
    pub(super) fn read_inbox(&mut self) {
        let requests = self.take_inbox();
        self.apply_requests(requests);
    }

    /// Takes every request out of the inbox; notices of status moves are
    /// taken in at once, the rest returned (in order) to be applied.
    pub(super) fn take_inbox(&mut self) -> Vec<Request> {
        let mut requests = Vec::new();
        for name in self.records.inbox() {
            if let Some(request) = self.take_request(&name) {
                match request.action {
                    RequestAction::Status => self.expect_move(&request),
                    RequestAction::Leave => self.expect_leave(&request),
                    _ => requests.push(request),
                }
            }
        }
        requests
    }

    pub(super) fn apply_requests(&mut self, requests: Vec<Request>) {
        for request in requests {
            self.apply_request(request);
        }
    }

    /// One request from the inbox, removed from it.
    pub(super) fn take_request(&mut self, name: &str) -> Option<Request> {
        match self.records.take(name)? {
            Ok(request) => Some(request),
            Err(e) => {
                tracing::warn!(
                    "request {}: {e}; ignored",
                    self.records.inbox_path().join(name).display()
                );
                None
            }
        }
    }

    /// The inbox file `name`, as it arrives (an inotify event).
    pub(super) fn read_request(&mut self, name: &str) {
        if let Some(request) = self.take_request(name) {
            match request.action {
                RequestAction::Status => self.expect_move(&request),
                RequestAction::Leave => self.expect_leave(&request),
                _ => self.apply_request(request),
            }
        }
    }

    /// The CLI is moving a cell to `to` and records it itself.
    pub(super) fn expect_move(&mut self, request: &Request) {
        let Some(to) = request.to.as_deref() else {
            return;
        };
        let until = self.clock.now() + EXPECTED_MOVE_S;
        self.expected_moves
            .entry(request.cell.as_str().into())
            .or_default()
            .push((CellStatus::parse(to), until));
    }

    /// The CLI removes an agent and records `agent_left` itself.
    pub(super) fn expect_leave(&mut self, request: &Request) {
        let until = self.clock.now() + EXPECTED_MOVE_S;
        self.expected_leaves.insert(
            (request.cell.as_str().into(), request.agent.as_str().into()),
            until,
        );
    }

    /// Whether the leave of `agent` was announced; used up.
    pub(super) fn announced_leave(&mut self, cell: &CellId, agent: &AgentId) -> bool {
        let now = self.clock.now();
        self.expected_leaves.retain(|_, until| *until > now);
        self.expected_leaves
            .remove(&(cell.clone(), agent.clone()))
            .is_some()
    }

    /// Whether a move of `cell` to `to` was announced (and so recorded by
    /// whoever made it); the announcement is used up.
    pub(super) fn announced(&mut self, cell: &str, to: &CellStatus) -> bool {
        let now = self.clock.now();
        let Some(moves) = self.expected_moves.get_mut(cell) else {
            return false;
        };
        moves.retain(|(_, until)| *until > now);
        let found = moves.iter().position(|(s, _)| s == to);
        if let Some(i) = found {
            moves.remove(i);
        }
        if moves.is_empty() {
            self.expected_moves.remove(cell);
        }
        found.is_some()
    }

    /// One operator's request from the inbox of `state_dir` — the only
    /// place the daemon takes `revive`, `approve` and `deny` from: nothing
    /// an agent writes in its cell counts as an operator's decision.
    pub(super) fn apply_request(&mut self, request: Request) {
        let (cell, agent): (CellId, AgentId) =
            (request.cell.as_str().into(), request.agent.as_str().into());
        if let RequestAction::Checkpoint | RequestAction::Restored = request.action {
            return self.apply_cell_request(request, cell);
        }
        if !self.core.knows(&cell) || !self.core.agent_names(&cell).contains(&agent) {
            tracing::warn!(
                "{} of agent {agent} in cell {cell} by {}: no such monitored agent; ignored",
                request.action.as_str(),
                request.by
            );
            return;
        }
        tracing::info!(
            "cell {cell}: {} of agent {agent} by {}",
            request.action.as_str(),
            request.by
        );
        let input = match request.action {
            RequestAction::Revive => Input::Revive { cell, agent },
            RequestAction::Approve | RequestAction::Deny => {
                let Some(request_id) = request
                    .request_id
                    .or_else(|| self.core.pending_request(&cell, &agent).map(str::to_string))
                else {
                    return;
                };
                Input::Decision {
                    cell,
                    agent,
                    request_id,
                    approved: request.action == RequestAction::Approve,
                }
            }
            RequestAction::Status
            | RequestAction::Leave
            | RequestAction::Checkpoint
            | RequestAction::Restored => return,
        };
        let now = self.now();
        let actions = self.core.handle(input, now);
        self.execute(actions);
    }

    /// A request about the whole cell: `checkpoint`, or the notice of a
    /// `restore`.
    fn apply_cell_request(&mut self, request: Request, cell: CellId) {
        if !self.core.is_monitored(&cell) && uuid::Uuid::parse_str(&cell).is_ok() {
            // A cell the CLI just made or changed, whose inotify events are
            // still on their way: read it now rather than drop the request.
            self.scan_cell(&cell);
        }
        if !self.core.is_monitored(&cell) {
            tracing::warn!(
                "{} of cell {cell} by {}: not a monitored cell; ignored",
                request.action.as_str(),
                request.by
            );
            return;
        }
        tracing::info!("cell {cell}: {} by {}", request.action.as_str(), request.by);
        let input = if request.action == RequestAction::Checkpoint {
            Input::Checkpoint {
                cell,
                request_id: request.request_id,
                archive: request.to.as_deref() == Some("archive"),
            }
        } else {
            Input::Restored { cell }
        };
        let now = self.now();
        let actions = self.core.handle(input, now);
        self.execute(actions);
    }
}
