//! GCRA rate limiting, sans-IO: the caller passes the time, the limiter answers allow or wait.
//!
//! The generic cell rate algorithm keeps one number per key, the theoretical arrival time (TAT)
//! of the next request. A key with `rate` requests per second and `burst` may send `burst`
//! requests at once and then one every `1/rate` seconds; a refused request learns exactly how long
//! to wait (`Retry-After`). Keys are bounded: idle keys are dropped when the table is full.

use std::collections::HashMap;
use std::time::Duration;

/// Keys tracked at most; idle ones are dropped first when full.
pub const KEYS_MAX: usize = 100_000;

/// A rate: sustained requests per second and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per second (at least 1).
    pub per_second: u32,
    /// Requests allowed at once (at least 1).
    pub burst: u32,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused; try again after this long.
    Wait(Duration),
}

/// One GCRA limiter over many keys (callers, orgs, regions).
#[derive(Debug, Default)]
pub struct Limiter {
    tat: HashMap<String, Duration>,
}

impl Limiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides one request by `key` at time `now` (any monotonic clock) under `rate`.
    pub fn check(&mut self, key: &str, rate: Rate, now: Duration) -> Decision {
        let decision = self.admit(key, rate, now);
        if decision == Decision::Allow {
            self.charge(key, rate, 1, now);
        }
        decision
    }

    /// Like [`Limiter::check`] for a cost known only afterwards (bytes of an answer): whether
    /// `key` may start one more unit of work at `now`, without charging anything yet.
    pub fn admit(&mut self, key: &str, rate: Rate, now: Duration) -> Decision {
        let (interval, tolerance) = Self::shape(rate);
        if !self.tat.contains_key(key) && self.tat.len() >= KEYS_MAX {
            self.tat.retain(|_, tat| *tat > now);
            if self.tat.len() >= KEYS_MAX {
                return Decision::Wait(interval);
            }
        }
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let allowed_from = tat.saturating_sub(tolerance);
        if now < allowed_from {
            Decision::Wait(allowed_from - now)
        } else {
            Decision::Allow
        }
    }

    /// Charges `units` (bytes, say) to `key` after the work was done; a large charge pushes
    /// the key's next admission out by as long as the rate needs to pay it off.
    pub fn charge(&mut self, key: &str, rate: Rate, units: u64, now: Duration) {
        let (interval, _) = Self::shape(rate);
        if !self.tat.contains_key(key) && self.tat.len() >= KEYS_MAX {
            return;
        }
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let cost = interval.saturating_mul(u32::try_from(units).unwrap_or(u32::MAX));
        self.tat.insert(key.to_owned(), tat.saturating_add(cost));
    }

    fn shape(rate: Rate) -> (Duration, Duration) {
        let per_second = rate.per_second.max(1);
        let burst = rate.burst.max(1);
        let interval = Duration::from_nanos(1_000_000_000 / u64::from(per_second));
        (interval, interval * (burst - 1))
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 10,
        burst: 3,
    };

    #[test]
    fn burst_then_steady_rate_then_exact_wait() {
        let mut limiter = Limiter::new();
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(limiter.check("acme", RATE, t0), Decision::Allow);
        }
        // The fourth at once must wait one interval (100 ms).
        assert_eq!(
            limiter.check("acme", RATE, t0),
            Decision::Wait(Duration::from_millis(100))
        );
        assert_eq!(
            limiter.check("acme", RATE, t0 + Duration::from_millis(100)),
            Decision::Allow
        );
        // Other keys are independent.
        assert_eq!(limiter.check("globex", RATE, t0), Decision::Allow);
        // After a long pause the full burst is back.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(limiter.check("acme", RATE, later), Decision::Allow);
        }
    }

    #[test]
    fn sustained_rate_holds_over_a_second() {
        let mut limiter = Limiter::new();
        let mut allowed = 0;
        for ms in 0..1000 {
            if limiter.check("k", RATE, Duration::from_millis(10_000 + ms)) == Decision::Allow {
                allowed += 1;
            }
        }
        // Burst of 3 plus 10 per second, give or take the edge.
        assert!((12..=13).contains(&allowed), "{allowed}");
    }

    #[test]
    fn the_key_table_is_bounded() {
        let mut limiter = Limiter::new();
        let now = Duration::from_secs(1);
        for i in 0..KEYS_MAX {
            assert_eq!(limiter.check(&format!("k{i}"), RATE, now), Decision::Allow);
        }
        // Full of active keys: a new key waits instead of growing the table.
        assert!(matches!(limiter.check("new", RATE, now), Decision::Wait(_)));
        assert_eq!(limiter.len(), KEYS_MAX);
        // Once they are idle, new keys fit again.
        assert_eq!(
            limiter.check("new", RATE, now + Duration::from_secs(1)),
            Decision::Allow
        );
        assert!(limiter.len() < KEYS_MAX);
    }

    #[test]
    fn charges_after_the_fact_hold_back_the_next_admission() {
        let mut limiter = Limiter::new();
        // 1,000 bytes a second, 2,000 at once.
        let rate = Rate {
            per_second: 1_000,
            burst: 2_000,
        };
        let now = Duration::from_secs(10);
        assert_eq!(limiter.admit("a", rate, now), Decision::Allow);
        limiter.charge("a", rate, 1_500, now);
        assert_eq!(limiter.admit("a", rate, now), Decision::Allow);
        limiter.charge("a", rate, 3_000, now);
        // 4,500 bytes charged, 2,000 tolerated: 2.5 s to wait.
        let Decision::Wait(wait) = limiter.admit("a", rate, now) else {
            panic!("admitted over budget");
        };
        assert!((wait.as_secs_f64() - 2.501).abs() < 0.01, "{wait:?}");
        assert_eq!(limiter.admit("a", rate, now + wait), Decision::Allow);
        // Another key is not affected.
        assert_eq!(limiter.admit("b", rate, now), Decision::Allow);
    }
}
