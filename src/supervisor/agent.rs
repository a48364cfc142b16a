//! One agent's health and revival as a state machine over time. Pure:
//! every function takes `now` (unix seconds) and returns what happened;
//! nothing here reads a clock, a file or `/proc`.
//!
//! Policy choices that need the agent's siblings (`substitute`) or the
//! cell's status are the [`Supervisor`](super::Supervisor)'s; what one
//! agent can decide alone — deadlines, backoff, limits, the reset of its
//! revive count — is here.

use crate::cell::manifest::RevivePolicy;
use crate::cell::settings::AgentSettings;
use crate::state::AgentState;

/// Why an agent is (re)started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// First start of an agent found not running (`agent_started`).
    Start,
    /// Silent past `resurrect_after`.
    Stale,
    /// Its process exited with failure (or at all, `restart = "always"`).
    Exited,
    /// Its first start failed (the program could not be run).
    StartFailed,
    /// `lazarus-pit revive`.
    Manual,
    /// `lazarus-pit approve` of a `revive_requested`.
    Approved,
    /// Started to take over from a dead agent (`agent_started`).
    Substitute,
    /// Started again on a restored workspace (`agent_revived`, not counted
    /// against `max_revive_attempts`).
    Restored,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Stale => "stale",
            Reason::Exited => "exited",
            Reason::StartFailed => "start_failed",
            Reason::Manual => "manual",
            Reason::Approved => "approved",
            Reason::Substitute => "substitute",
            Reason::Restored => "restored",
        }
    }

    /// Starts that are not revivals: not counted, `agent_started`.
    pub fn is_start(self) -> bool {
        matches!(self, Reason::Start | Reason::Substitute)
    }
}

/// A process the daemon started, identified beyond its pid: `start_time`
/// is field 22 of `/proc/<pid>/stat` (clock ticks since boot), which a
/// recycled pid does not share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub pid: i32,
    pub start_time: u64,
}

/// How a process ended. For a process adopted after a daemon restart the
/// kernel does not tell us (it is not our child): both are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `exited with code 3`, `killed by signal 9 (SIGKILL)`.
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(name) => format!("killed by signal {sig} ({name})"),
                Err(_) => format!("killed by signal {sig}"),
            },
            // Adopted after a daemon restart: the kernel tells its parent
            // only, and that was not this daemon.
            (None, None) => {
                "exited (code unknown: it was adopted, not started, by this daemon)".to_string()
            }
        }
    }
}

/// What happens next to an agent ([`AgentSup::next`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Next {
    /// `start`, `stale`, `revive`, `ask`, `dead`, `substitute`, or (by an
    /// operator) `approve`, `revive`.
    pub action: &'static str,
    /// An operator's move, not the daemon's.
    pub by_operator: bool,
    pub at: Option<f64>,
}

/// Where an agent stands. Each state carries the data it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Has a command and is to be started once its heartbeat has been
    /// looked at (a fresh one means it runs outside the daemon).
    Unstarted,
    /// No heartbeat from this instance yet: judged from first sight, or
    /// given `resurrect_after` of grace after the daemon (re)started it.
    Waiting { revived: bool },
    /// Beating within its stale threshold.
    Healthy,
    /// Silent past its stale threshold since `since`.
    Stale { since: f64 },
    /// Past `resurrect_after` and nothing to do now: no command to run,
    /// or its cell is frozen.
    Due { since: f64 },
    /// Revival `attempt` waits for its backoff until `at`.
    Backoff {
        attempt: u32,
        at: f64,
        reason: Reason,
    },
    /// The shell is stopping the old instance (`spawning == false`) or
    /// starting the new one; it always reports back.
    Reviving {
        attempt: u32,
        reason: Reason,
        spawning: bool,
        /// Started to take over from this dead agent.
        substitute_for: Option<Box<str>>,
    },
    /// Exited 0 under `restart = "on-failure"`: done.
    Finished,
    /// Policy `no`, or handed over to a substitute.
    Dead,
    /// An operator denied its revival: only an operator brings it back
    /// (`revive`), never an edit of `cell.json` (which its agents can make).
    Denied,
    /// Policy `ask`: waiting for `lazarus-pit approve|deny`.
    AwaitingApproval { request_id: String, reason: Reason },
    /// `max_revive_attempts` used up; waits for an operator.
    Abandoned,
}

/// A change worth telling the world about.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Went stale: last good heartbeat (if any) and the silence so far.
    /// `late_s`: how long after its deadline (or after the agent was
    /// first seen, if that came later: a daemon restart is not lateness)
    /// it was noticed.
    Stale {
        last_seen: Option<f64>,
        age_s: f64,
        late_s: f64,
    },
    /// Beat again after being stale, dead or revived.
    Recovered,
    /// Dead for `reason`: the supervisor applies the revive policy.
    Due(Reason),
    /// A heartbeat's `status` field changed (or the first one arrived).
    Status(String),
    /// A newer heartbeat was accepted (for `events.heartbeats = "all"`).
    Beat(Option<String>),
    /// Stop the old instance, if any, then start `attempt` (0: a start).
    Revive { attempt: u32, reason: Reason },
    /// The daemon's instance ended.
    Exited { pid: i32, exit: ExitInfo },
    /// `max_revive_attempts` revivals did not help.
    Exhausted { attempts: u32 },
    /// Anything else that changes `state.json` (a reset count, finished).
    State,
}

/// What the supervisor knows of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSup {
    pub settings: AgentSettings,
    /// When the daemon first saw the agent: silence counts from here until
    /// a heartbeat comes.
    pub first_seen: f64,
    /// When the newest accepted heartbeat was written (its claimed time,
    /// or when it was read if the claim lies in the future).
    pub last_seen: Option<f64>,
    /// The `timestamp` that heartbeat claimed, as written: reading the same
    /// claim again (a re-read at a deadline, a rescan) is not a new write.
    /// NaN until the first one (it equals no claim; no `Option`, to keep an
    /// agent's state small).
    pub last_claimed: f64,
    /// `status` of the newest heartbeat that had one.
    pub last_status: Option<Box<str>>,
    /// `pid` of the newest heartbeat: a claim, never proof.
    pub claimed_pid: Option<i32>,
    pub health: Health,
    /// Revivals since the count last reset (kept across daemon restarts).
    pub revive_count: u32,
    /// Since when the agent has been healthy, for `reset_after`.
    pub healthy_since: Option<f64>,
    /// The process the daemon started, while it runs.
    pub instance: Option<Instance>,
    /// When the daemon last (re)started it, or saw its instance die:
    /// silence before `grace_from + resurrect_after` does not count, and
    /// heartbeats written before it are no sign of the current instance.
    pub grace_from: Option<f64>,
    /// The cell is frozen (its processes stopped): no deadline runs,
    /// nothing is started, nothing goes stale until it is thawed.
    pub held: bool,
    /// A restore replaced the files its running instance works on: it is
    /// started again when its cell is thawed.
    pub restart: bool,
    /// Why it is not healthy, in words for `status`: how its last instance
    /// ended, the error of a start that failed, or the silence that made
    /// it due. Cleared when it beats again.
    /// (Boxed twice: one word, most agents have none.)
    pub why: Option<Box<String>>,
}

impl AgentSup {
    /// An agent first seen at `now`. One with a command and `autostart`
    /// starts unless a fresh heartbeat arrives first.
    pub fn new(settings: AgentSettings, now: f64) -> AgentSup {
        let health = if settings.can_start() && settings.autostart {
            Health::Unstarted
        } else {
            Health::Waiting { revived: false }
        };
        AgentSup {
            settings,
            first_seen: now,
            last_seen: None,
            last_claimed: f64::NAN,
            last_status: None,
            claimed_pid: None,
            health,
            revive_count: 0,
            healthy_since: None,
            instance: None,
            grace_from: None,
            held: false,
            restart: false,
            why: None,
        }
    }

    /// Moves the agent to `to` at `now`: every change of its health goes
    /// through here, checked against [`allowed`] (in debug builds), and
    /// keeps `healthy_since` — which the revive count's reset runs from —
    /// true to it: set when the agent becomes healthy, cleared otherwise.
    pub fn enter(&mut self, to: Health, now: f64) {
        debug_assert!(
            allowed(&self.health, &to),
            "illegal agent transition {:?} -> {to:?}",
            self.health
        );
        match (&self.health, &to) {
            (Health::Healthy, Health::Healthy) => {}
            (_, Health::Healthy) => self.healthy_since = Some(now),
            _ => self.healthy_since = None,
        }
        self.health = to;
    }

    /// The last sign of life silence is counted from.
    fn basis(&self) -> f64 {
        let seen = self.last_seen.unwrap_or(self.first_seen);
        self.grace_from.map_or(seen, |g| seen.max(g))
    }

    /// When the revive count resets, if it is to.
    fn reset_at(&self) -> Option<f64> {
        let since = self.healthy_since?;
        (self.revive_count > 0).then_some(since + self.settings.timing.reset_after.as_secs_f64())
    }

    /// The instant of the next transition if nothing is reported, or
    /// `None` if nothing more happens by itself.
    pub fn deadline(&self) -> Option<f64> {
        if self.held {
            return None;
        }
        let stale = self.settings.stale_threshold.as_secs_f64();
        let revive = self.settings.resurrect_after.as_secs_f64();
        match &self.health {
            Health::Unstarted => Some(self.first_seen),
            Health::Waiting { .. } => Some(match self.grace_from {
                Some(g) => g + revive,
                None => self.basis() + stale,
            }),
            Health::Healthy => {
                let stale_at = self.basis() + stale;
                Some(self.reset_at().map_or(stale_at, |r| r.min(stale_at)))
            }
            Health::Stale { .. } => Some(self.basis() + revive),
            Health::Backoff { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// Applies every transition whose deadline is at or before `now`.
    pub fn advance(&mut self, now: f64) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Some(deadline) = self.deadline().filter(|d| *d <= now) {
            match self.health {
                Health::Unstarted => {
                    changes.push(self.begin_revival(0, Reason::Start, now));
                    break;
                }
                Health::Healthy if self.reset_at().is_some_and(|r| r <= deadline) => {
                    self.revive_count = 0;
                    changes.push(Change::State);
                }
                Health::Waiting { .. } | Health::Healthy => {
                    self.enter(Health::Stale { since: deadline }, now);
                    changes.push(Change::Stale {
                        last_seen: self.last_seen,
                        age_s: round_ms(now - self.basis()),
                        late_s: (now - deadline.max(self.first_seen)).max(0.0),
                    });
                }
                Health::Stale { .. } => {
                    self.why = Some(Box::new(format!(
                        "silent past resurrect_after ({}s)",
                        round_ms(self.settings.resurrect_after.as_secs_f64())
                    )));
                    self.enter(Health::Due { since: deadline }, now);
                    changes.push(Change::Due(Reason::Stale));
                    break;
                }
                Health::Backoff {
                    attempt, reason, ..
                } => {
                    changes.push(self.begin_revival(attempt, reason, now));
                    break;
                }
                _ => break,
            }
        }
        changes
    }

    /// Takes a heartbeat that claims `claimed` and was written at `seen`
    /// (the claim, or the time it was read if the claim lies in the
    /// future), carrying `status`. The same claim read again changes
    /// nothing — so a rescan or a duplicate event is harmless, and a claim
    /// far in the future is counted from when it was first read, not again
    /// at every re-read. Heartbeats no newer than the last one change
    /// nothing either.
    pub fn heartbeat(
        &mut self,
        seen: f64,
        claimed: f64,
        status: Option<&str>,
        pid: Option<i32>,
        now: f64,
    ) -> Vec<Change> {
        if self.last_claimed == claimed {
            return Vec::new();
        }
        self.last_claimed = claimed;
        if self.last_seen.is_some_and(|last| seen <= last) {
            return Vec::new();
        }
        let mut changes = Vec::new();
        self.last_seen = Some(seen);
        if pid.is_some() {
            self.claimed_pid = pid;
        }
        changes.push(Change::Beat(status.map(str::to_string)));
        if let Some(status) = status
            && self.last_status.as_deref() != Some(status)
        {
            self.last_status = Some(status.into());
            changes.push(Change::Status(status.to_string()));
        }
        // Fresh, and not written before the current instance was started.
        let fresh = now - seen < self.settings.stale_threshold.as_secs_f64()
            && self.grace_from.is_none_or(|g| seen >= g);
        match &self.health {
            Health::Waiting { revived } if fresh => {
                if *revived {
                    changes.push(Change::Recovered);
                }
                self.become_healthy(now);
            }
            Health::Waiting { .. } if self.grace_from.is_none() => {
                // An old first heartbeat: judged at once by `advance`.
                self.become_healthy(now);
            }
            Health::Unstarted if fresh => self.become_healthy(now),
            Health::Stale { .. }
            | Health::Due { .. }
            | Health::Backoff { .. }
            | Health::Finished
            | Health::Dead
            | Health::Denied
            | Health::AwaitingApproval { .. }
            | Health::Abandoned
                if fresh =>
            {
                self.become_healthy(now);
                changes.push(Change::Recovered);
            }
            _ => {}
        }
        changes.extend(self.advance(now));
        changes
    }

    /// Its cell is frozen (`true`) or thawed. A thawed agent gets a fresh
    /// grace period from `now`: its processes were stopped, so its silence
    /// says nothing — a healthy one has its stale threshold afresh, a stale
    /// or due one whose process is there `resurrect_after` before it is
    /// revived. One whose process ended while frozen is due at once (the
    /// returned change). A hang after the thaw is judged as usual.
    pub fn hold(&mut self, held: bool, now: f64) -> Vec<Change> {
        if self.held == held {
            return Vec::new();
        }
        self.held = held;
        if held {
            return Vec::new();
        }
        self.grace_from = Some(self.grace_from.map_or(now, |g| g.max(now)));
        if std::mem::take(&mut self.restart) && self.instance.is_some() && self.settings.can_start()
        {
            return vec![self.restart_after_restore(now)];
        }
        match self.health {
            Health::Due { .. } if self.instance.is_none() && self.settings.can_start() => {
                vec![Change::Due(Reason::Exited)]
            }
            Health::Stale { .. } | Health::Due { .. } => {
                self.enter(Health::Waiting { revived: false }, now);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The wall clock stepped: silence so far is not held against an agent
    /// that was fine (its heartbeats may carry either side of the step),
    /// it gets a fresh threshold from `now`. Agents already stale stay so.
    pub fn clock_stepped(&mut self, now: f64) {
        if matches!(self.health, Health::Healthy | Health::Waiting { .. }) {
            self.grace_from = Some(self.grace_from.map_or(now, |g| g.max(now)));
        }
    }

    fn become_healthy(&mut self, now: f64) {
        self.why = None;
        self.enter(Health::Healthy, now);
    }

    /// The daemon's instance `pid` ended at `now`. Anything else's exit is
    /// ignored. A heartbeat it wrote before dying (read after its exit) is
    /// no sign of life: only heartbeats from `now` on count.
    pub fn exited(&mut self, pid: i32, exit: ExitInfo, now: f64) -> Vec<Change> {
        if self.instance.is_none_or(|i| i.pid != pid) {
            return Vec::new();
        }
        self.instance = None;
        self.grace_from = Some(self.grace_from.map_or(now, |g| g.max(now)));
        let mut changes = vec![Change::Exited { pid, exit }];
        if matches!(
            self.health,
            Health::Reviving { .. } | Health::Dead | Health::Denied | Health::Abandoned
        ) {
            // We are replacing it anyway, or stopped it: it stays dead,
            // for the reason it died.
            return changes;
        }
        self.why = Some(Box::new(exit.describe()));
        if exit.success()
            && self.settings.restart == crate::cell::manifest::RestartPolicy::OnFailure
        {
            self.enter(Health::Finished, now);
            changes.push(Change::State);
        } else {
            let since = self.basis();
            self.enter(Health::Due { since }, now);
            changes.push(Change::Due(Reason::Exited));
        }
        changes
    }

    /// Policy `yes` (and the revival half of `ask`): revive after backoff,
    /// or give up once `max_revive_attempts` revivals are spent.
    pub fn schedule_revival(&mut self, reason: Reason, now: f64, jitter_seed: u64) -> Vec<Change> {
        if self.revive_count >= self.settings.max_revive_attempts {
            self.enter(Health::Abandoned, now);
            return vec![Change::Exhausted {
                attempts: self.revive_count,
            }];
        }
        let attempt = self.revive_count + 1;
        let delay = backoff(&self.settings, attempt, jitter_seed);
        if delay <= 0.0 {
            return vec![self.begin_revival(attempt, reason, now)];
        }
        self.enter(
            Health::Backoff {
                attempt,
                at: now + delay,
                reason,
            },
            now,
        );
        vec![Change::State]
    }

    /// Revives now, whatever the policy and the count (`revive`,
    /// `approve`). An operator's revival of an abandoned agent starts its
    /// count afresh.
    pub fn force_revival(&mut self, reason: Reason, now: f64) -> Vec<Change> {
        if matches!(self.health, Health::Abandoned) {
            self.revive_count = 0;
        }
        vec![self.begin_revival(self.revive_count + 1, reason, now)]
    }

    /// Starts it to take over from `dead` (not a revival of its own).
    pub fn start_as_substitute(&mut self, dead: &str, now: f64) -> Vec<Change> {
        let change = self.begin_revival(0, Reason::Substitute, now);
        if let Health::Reviving { substitute_for, .. } = &mut self.health {
            *substitute_for = Some(dead.into());
        }
        vec![change]
    }

    /// Its instance works on files a restore replaced: stop it and start
    /// it again, whatever its policy, without counting a revival.
    pub fn restart_after_restore(&mut self, now: f64) -> Change {
        self.restart = false;
        // The attempt it would be, though it is not counted.
        self.begin_revival(self.revive_count + 1, Reason::Restored, now)
    }

    fn begin_revival(&mut self, attempt: u32, reason: Reason, now: f64) -> Change {
        if !reason.is_start() && reason != Reason::Restored {
            self.revive_count = self.revive_count.max(attempt);
        }
        self.enter(
            Health::Reviving {
                attempt,
                reason,
                spawning: false,
                substitute_for: None,
            },
            now,
        );
        Change::Revive { attempt, reason }
    }

    /// The old instance is gone (or there was none): start the new one.
    pub fn killed(&mut self) -> bool {
        // Only the first answer starts the new instance: a second kill of
        // the same old one (a stop for a denial, then a revive) must not
        // start a second.
        if let Health::Reviving { spawning, .. } = &mut self.health
            && !*spawning
        {
            *spawning = true;
            return true;
        }
        false
    }

    /// The new instance runs: it gets `resurrect_after` of grace.
    pub fn spawned(&mut self, instance: Instance, now: f64) {
        let revived = matches!(self.health, Health::Reviving { reason, .. } if !reason.is_start());
        self.instance = Some(instance);
        self.grace_from = Some(now);
        self.enter(Health::Waiting { revived }, now);
    }

    /// The new instance could not be started. It counts as an attempt;
    /// the next one follows the backoff (a start that failed is retried
    /// as revival 1).
    pub fn spawn_failed(&mut self, error: &str, now: f64, jitter_seed: u64) -> Vec<Change> {
        let Health::Reviving { reason, .. } = self.health else {
            return Vec::new();
        };
        self.why = Some(Box::new(format!("could not start: {error}")));
        // A first start that failed is retried as a revival, for what it
        // is: not an exit (nothing ran).
        let reason = if reason.is_start() {
            Reason::StartFailed
        } else {
            reason
        };
        self.schedule_revival(reason, now, jitter_seed)
    }

    /// New settings (a `cell.json` edit or a config reload). An agent that
    /// was abandoned, dead or finished starts afresh when its entry changes
    /// — not one an operator denied: an agent can edit its own entry.
    ///
    /// An agent that gains a command (it was only watched) is started as
    /// a first start when nothing of it runs: not yet beating, or silent —
    /// not at its next stale deadline.
    pub fn set_settings(&mut self, settings: AgentSettings, now: f64) {
        let gained = !self.settings.can_start() && settings.can_start();
        self.settings = settings;
        if gained
            && self.settings.autostart
            && self.instance.is_none()
            && matches!(
                self.health,
                Health::Waiting { revived: false } | Health::Stale { .. } | Health::Due { .. }
            )
        {
            self.first_seen = now;
            self.enter(Health::Unstarted, now);
            return;
        }
        if matches!(
            self.health,
            Health::Abandoned | Health::Dead | Health::Finished
        ) {
            self.revive_count = 0;
            self.first_seen = now;
            self.grace_from = Some(now);
            let fresh = if self.settings.can_start() && self.instance.is_none() {
                Health::Unstarted
            } else {
                Health::Waiting { revived: false }
            };
            self.enter(fresh, now);
        }
    }

    /// The state name for `state.json` and `status`.
    pub fn state(&self) -> AgentState {
        let live = !matches!(
            self.health,
            Health::Finished
                | Health::Dead
                | Health::Denied
                | Health::Abandoned
                | Health::Reviving { .. }
        );
        if self.held && live {
            return AgentState::Frozen;
        }
        match self.health {
            Health::Unstarted | Health::Waiting { revived: false } => AgentState::Unknown,
            Health::Waiting { revived: true } => AgentState::Reviving,
            Health::Healthy => AgentState::Healthy,
            Health::Stale { .. } => AgentState::Stale,
            Health::Due { .. } => AgentState::Stale,
            Health::Backoff { .. } | Health::Reviving { .. } => AgentState::Reviving,
            Health::Finished => AgentState::Exited,
            Health::Dead | Health::Denied => AgentState::Dead,
            Health::AwaitingApproval { .. } => AgentState::AwaitingApproval,
            Health::Abandoned => AgentState::Abandoned,
        }
    }

    /// What happens to it next, by whom, and when (core time; `None`:
    /// when an operator acts). `None` when nothing is pending: it is
    /// frozen, dead, finished, or past `resurrect_after` with nothing to
    /// run. What `status` shows as "next".
    pub fn next(&self) -> Option<Next> {
        if self.held {
            return None;
        }
        let stale = self.settings.stale_threshold.as_secs_f64();
        let daemon = |action, at| {
            Some(Next {
                action,
                by_operator: false,
                at: Some(at),
            })
        };
        let operator = |action| {
            Some(Next {
                action,
                by_operator: true,
                at: None,
            })
        };
        match &self.health {
            Health::Unstarted => daemon("start", self.first_seen),
            Health::Waiting { .. } => daemon("stale", self.deadline()?),
            Health::Healthy => daemon("stale", self.basis() + stale),
            Health::Stale { .. } => {
                let at = self.deadline()?;
                match self.settings.revive_policy {
                    RevivePolicy::Yes if self.settings.can_start() => daemon("revive", at),
                    RevivePolicy::Yes => None,
                    RevivePolicy::No => daemon("dead", at),
                    RevivePolicy::Ask => daemon("ask", at),
                    RevivePolicy::Substitute => daemon("substitute", at),
                }
            }
            Health::Backoff { at, .. } => daemon("revive", *at),
            Health::AwaitingApproval { .. } => operator("approve"),
            // Only `lazarus-pit revive` brings these back (a dead one of
            // policy `no` whose command can run).
            Health::Abandoned | Health::Denied => operator("revive"),
            Health::Dead if self.settings.can_start() => operator("revive"),
            _ => None,
        }
    }

    pub fn is_due(&self) -> bool {
        matches!(self.health, Health::Due { .. })
    }

    /// Whether the daemon could start a copy of it now without doubling it.
    /// Started by the daemon and not beating yet, or being started.
    pub fn is_coming_up(&self) -> bool {
        matches!(self.health, Health::Reviving { .. })
            || (self.instance.is_some() && matches!(self.health, Health::Waiting { .. }))
    }

    pub fn is_down(&self) -> bool {
        self.instance.is_none()
            && !matches!(
                self.health,
                Health::Healthy | Health::Reviving { .. } | Health::Waiting { revived: true }
            )
    }
}

/// The one table of an agent's legal moves (the agent-level counterpart
/// of [`crate::cell::lifecycle::ALLOWED_TRANSITIONS`]); [`AgentSup::enter`]
/// checks every move against it in debug builds, so a test that drives the
/// core down a path the table does not have fails.
///
/// Whatever the state: an exit of its instance makes it due or finished
/// (a hung or dead agent's process may still run, and end), a fresh
/// heartbeat makes it healthy, and an operator's `revive` (or a start)
/// makes it reviving. Nothing else is a move: a denied agent stays denied
/// until an operator or a heartbeat says otherwise, an abandoned one does
/// not go stale again.
pub fn allowed(from: &Health, to: &Health) -> bool {
    use Health as H;
    match (from, to) {
        // (A start that failed is retried at once: reviving again.)
        (_, H::Due { .. } | H::Finished | H::Healthy | H::Reviving { .. }) => true,
        // Silence.
        (H::Waiting { .. } | H::Healthy, H::Stale { .. }) => true,
        // A thaw.
        (H::Stale { .. } | H::Due { .. }, H::Waiting { revived: false }) => true,
        // The policies of a due agent, and a start that failed.
        (H::Due { .. } | H::Reviving { .. }, H::Backoff { .. } | H::Abandoned) => true,
        (H::Due { .. }, H::Dead | H::AwaitingApproval { .. }) => true,
        (H::AwaitingApproval { .. }, H::Denied) => true,
        // The new instance runs.
        (H::Reviving { .. }, H::Waiting { .. }) => true,
        // A watched agent given a command is started.
        (H::Waiting { revived: false } | H::Stale { .. } | H::Due { .. }, H::Unstarted) => true,
        // An edit of its entry starts a finished, dead or abandoned one
        // afresh (never a denied one).
        (H::Finished | H::Dead | H::Abandoned, H::Unstarted | H::Waiting { revived: false }) => {
            true
        }
        _ => false,
    }
}

/// Seconds before revival `attempt`: none for the first (a crash is
/// answered at once), then `backoff_initial × 2^(attempt-2)` capped at
/// `backoff_max`, plus up to 10 % of jitter so agents that died together
/// do not restart in lockstep. The jitter is derived from `seed` (the
/// agent's identity), not drawn, so the core stays deterministic.
pub fn backoff(settings: &AgentSettings, attempt: u32, seed: u64) -> f64 {
    if attempt <= 1 {
        return 0.0;
    }
    let initial = settings.timing.backoff_initial.as_secs_f64();
    let max = settings.timing.backoff_max.as_secs_f64();
    let exp = (attempt - 2).min(62);
    let base = (initial * f64::from(2u32).powi(exp as i32)).min(max);
    let mixed = seed ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let fraction = (splitmix(mixed) >> 11) as f64 / (1u64 << 53) as f64;
    base + base * 0.1 * fraction
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable seed from a cell and agent name (FNV-1a).
pub fn seed_of(cell: &str, agent: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cell.bytes().chain([0]).chain(agent.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Seconds rounded to milliseconds, for event fields.
pub fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
