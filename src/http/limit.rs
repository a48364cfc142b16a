//! Rate limits: a token bucket per caller (an agent, the operator, or an
//! address that keeps failing to authenticate), so one noisy or hostile
//! caller cannot starve the rest or guess tokens quickly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// How many callers are remembered at most; beyond it, the idle ones are
/// forgotten (a full bucket is what a forgotten caller gets back anyway).
const MOST_CALLERS: usize = 65_536;

/// Requests per second, and the burst allowed above that.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `who`'s allowance at `now`: false when it has
    /// none left (the caller gets 429).
    pub fn allow(&self, who: &str, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() >= MOST_CALLERS && !buckets.contains_key(who) {
            let full = self.rate.burst / self.rate.per_sec;
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < full);
            if buckets.len() >= MOST_CALLERS {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets
            .entry(who.to_string())
            .or_insert((self.rate.burst, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate.per_sec).min(self.rate.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let l = Limiter::new(Rate {
            per_sec: 10.0,
            burst: 3.0,
        });
        let t = Instant::now();
        assert!((0..3).all(|_| l.allow("a", t)));
        assert!(!l.allow("a", t), "the burst is spent");
        assert!(l.allow("b", t), "another caller has its own");
        assert!(!l.allow("a", t + Duration::from_millis(50)));
        assert!(l.allow("a", t + Duration::from_millis(101)));
        assert!((0..3).all(|_| l.allow("a", t + Duration::from_secs(10))));
        assert!(
            !l.allow("a", t + Duration::from_secs(10)),
            "never above the burst"
        );
    }
}
