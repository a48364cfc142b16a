//! The daemon's two clocks.
//!
//! Deadlines run on the monotonic clock (tokio's `Instant`, which a test
//! can pause and advance): seconds since the daemon's epoch are the core's
//! `now`. The wall clock — which NTP or a resumed VM can step — is read
//! only for what carries unix time: heartbeats' timestamps, events and
//! records. The core is told the offset between the two before every input
//! ([`crate::supervisor::Supervisor::set_clock`]) and notices a step there.

use std::time::Duration;

use tokio::time::Instant;

/// Reads the wall clock: the system's, or a test's.
pub type WallSource = Box<dyn Fn() -> f64 + Send>;

/// Unix seconds from the system clock.
pub fn system_wall() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub struct Clock {
    epoch: Instant,
    wall: WallSource,
}

/// How far a deadline may lie ahead and still be slept to: beyond, the
/// loop wakes after this and asks again (no instant overflows).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

impl Clock {
    pub fn system() -> Clock {
        Clock::with_wall(Box::new(system_wall))
    }

    /// A clock whose wall time comes from `wall` (tests step it).
    pub fn with_wall(wall: WallSource) -> Clock {
        Clock {
            epoch: Instant::now(),
            wall,
        }
    }

    /// Monotonic seconds since the epoch: the core's `now`.
    pub fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Unix seconds now.
    pub fn wall(&self) -> f64 {
        (self.wall)()
    }

    /// The core's clock reading: (`now`, wall minus monotonic).
    pub fn read(&self) -> (f64, f64) {
        let now = self.now();
        (now, self.wall() - now)
    }

    /// The instant to sleep until for the core's deadline `at`: never in
    /// the past beyond now, never further than [`LONGEST_SLEEP`] ahead,
    /// whatever `at` is (a deadline computed from an absurd number must
    /// not overflow an instant).
    pub fn instant(&self, at: Option<f64>) -> Instant {
        let now = Instant::now();
        let latest = now + LONGEST_SLEEP;
        let Some(at) = at.filter(|at| at.is_finite()) else {
            return latest;
        };
        match Duration::try_from_secs_f64(at.max(0.0))
            .ok()
            .and_then(|d| self.epoch.checked_add(d))
        {
            Some(instant) => instant.min(latest),
            None => latest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_are_monotonic_and_bounded() {
        let wall = std::sync::Arc::new(std::sync::Mutex::new(1_000_000.0_f64));
        let w = wall.clone();
        let clock = Clock::with_wall(Box::new(move || *w.lock().expect("wall")));
        assert_eq!(clock.read(), (0.0, 1_000_000.0));
        tokio::time::advance(Duration::from_secs(5)).await;
        // The wall clock steps forward an hour: monotonic time does not.
        *wall.lock().expect("wall") += 5.0 + 3600.0;
        let (now, offset) = clock.read();
        assert_eq!(now, 5.0);
        assert_eq!(offset, 1_003_600.0);
        let deadline = clock.instant(Some(7.5));
        assert_eq!(deadline - Instant::now(), Duration::from_millis(2500));
        // Absurd or missing deadlines are a bounded sleep, never a panic.
        for at in [Some(1e19), Some(f64::INFINITY), Some(f64::NAN), None] {
            assert_eq!(clock.instant(at) - Instant::now(), LONGEST_SLEEP, "{at:?}");
        }
        assert!(clock.instant(Some(-5.0)) <= Instant::now());
    }
}
