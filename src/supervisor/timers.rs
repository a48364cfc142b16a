//! A cell's own deadlines (BRIEF 3): `idle_timeout`, `max_duration` and
//! `checkpoint_interval`, as a pure function of the cell's facts and
//! `now` — the same monotonic seconds as the agents' deadlines, on the
//! same timer.

use crate::cell::lifecycle::CellStatus;
use crate::cell::manifest::Manifest;

/// The shortest `checkpoint_interval` honoured, in seconds (an agent can
/// edit `cell.json` at isolation `directory`).
pub const MIN_CHECKPOINT_INTERVAL: f64 = 1.0;

/// The timers `cell.json` sets, in seconds. Zero (or absent) is off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CellTimers {
    /// No heartbeat `status` change from any agent for this long: freeze.
    pub idle: Option<f64>,
    /// This long after `created_at`: archive.
    pub max_duration: Option<f64>,
    /// Take a checkpoint of an active cell this often.
    pub interval: Option<f64>,
}

impl CellTimers {
    pub fn of(m: &Manifest) -> CellTimers {
        let secs = |s: &Option<crate::cell::manifest::Seconds>| {
            s.as_ref()
                .and_then(|s| s.positive())
                .map(|d| d.as_secs_f64())
        };
        CellTimers {
            idle: secs(&m.idle_timeout),
            max_duration: secs(&m.max_duration),
            // Each checkpoint reads and writes the whole workspace as root,
            // outside the agents' limits: not more often than this.
            interval: secs(&m.checkpoint_interval).map(|s| s.max(MIN_CHECKPOINT_INTERVAL)),
        }
    }

    pub fn any(&self) -> bool {
        self.idle.is_some() || self.max_duration.is_some() || self.interval.is_some()
    }
}

/// What a cell timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellDue {
    /// `idle_timeout`: freeze, reason `idle`.
    Idle,
    /// `max_duration`: archive, reason `max_duration`.
    MaxDuration,
    /// `checkpoint_interval`: a checkpoint, reason `interval`.
    Checkpoint,
}

/// The instants the timers count from (monotonic seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellClock {
    /// `created_at`, or when the daemon first saw the cell if it has none.
    pub created: f64,
    /// The last heartbeat `status` change of any agent, or when the cell
    /// last became active (first sight, a thaw).
    pub activity: f64,
    /// The last checkpoint, or when the cell was first seen.
    pub last_checkpoint: f64,
    /// A move or a checkpoint was asked for and is not seen done yet:
    /// nothing fires again before this.
    pub busy_until: f64,
}

impl CellClock {
    pub fn new(now: f64) -> CellClock {
        CellClock {
            created: now,
            activity: now,
            last_checkpoint: now,
            busy_until: f64::NEG_INFINITY,
        }
    }
}

/// The next cell deadline, and what it is for. `checkpointing`: a
/// checkpoint runs (its end re-arms the timers).
pub fn next(
    timers: &CellTimers,
    clock: &CellClock,
    status: &CellStatus,
    checkpointing: bool,
) -> Option<(f64, CellDue)> {
    if checkpointing {
        return None;
    }
    let active = *status == CellStatus::Active;
    let live = matches!(
        status,
        CellStatus::Provisioned | CellStatus::Active | CellStatus::Frozen
    );
    [
        (
            timers.max_duration.filter(|_| live),
            clock.created,
            CellDue::MaxDuration,
        ),
        (
            timers.idle.filter(|_| active),
            clock.activity,
            CellDue::Idle,
        ),
        (
            timers.interval.filter(|_| active),
            clock.last_checkpoint,
            CellDue::Checkpoint,
        ),
    ]
    .into_iter()
    .filter_map(|(secs, from, due)| Some((from + secs?, due)))
    // The earliest; at a tie, the one listed first (retiring beats
    // freezing beats a checkpoint).
    .min_by(|a, b| a.0.total_cmp(&b.0))
    .map(|(at, due)| (at.max(clock.busy_until), due))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers(idle: Option<f64>, max: Option<f64>, interval: Option<f64>) -> CellTimers {
        CellTimers {
            idle,
            max_duration: max,
            interval,
        }
    }

    #[test]
    fn each_timer_counts_from_its_own_basis() {
        let mut clock = CellClock::new(100.0);
        clock.created = 50.0;
        let active = CellStatus::Active;
        assert_eq!(
            next(&timers(Some(30.0), None, None), &clock, &active, false),
            Some((130.0, CellDue::Idle))
        );
        assert_eq!(
            next(&timers(None, Some(60.0), None), &clock, &active, false),
            Some((110.0, CellDue::MaxDuration))
        );
        clock.last_checkpoint = 120.0;
        assert_eq!(
            next(&timers(None, None, Some(5.0)), &clock, &active, false),
            Some((125.0, CellDue::Checkpoint))
        );
        // Activity moves only the idle deadline.
        clock.activity = 200.0;
        assert_eq!(
            next(
                &timers(Some(30.0), Some(60.0), None),
                &clock,
                &active,
                false
            ),
            Some((110.0, CellDue::MaxDuration))
        );
    }

    #[test]
    fn a_frozen_cell_neither_idles_nor_checkpoints_but_still_retires() {
        let clock = CellClock::new(0.0);
        let t = timers(Some(1.0), Some(10.0), Some(2.0));
        assert_eq!(
            next(&t, &clock, &CellStatus::Frozen, false),
            Some((10.0, CellDue::MaxDuration))
        );
        assert_eq!(next(&t, &clock, &CellStatus::Archived, false), None);
        assert_eq!(next(&t, &clock, &CellStatus::Active, true), None);
    }

    #[test]
    fn a_move_in_flight_holds_the_timers_back() {
        let mut clock = CellClock::new(0.0);
        clock.busy_until = 15.0;
        assert_eq!(
            next(
                &timers(Some(1.0), None, None),
                &clock,
                &CellStatus::Active,
                false
            ),
            Some((15.0, CellDue::Idle))
        );
    }
}
