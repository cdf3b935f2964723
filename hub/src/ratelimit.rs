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
        let per_second = rate.per_second.max(1);
        let burst = rate.burst.max(1);
        let interval = Duration::from_nanos(1_000_000_000 / u64::from(per_second));
        let tolerance = interval * (burst - 1);
        if !self.tat.contains_key(key) && self.tat.len() >= KEYS_MAX {
            // Keys whose TAT has passed behave exactly like new keys: dropping them changes nothing.
            self.tat.retain(|_, tat| *tat > now);
            if self.tat.len() >= KEYS_MAX {
                return Decision::Wait(interval);
            }
        }
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let allowed_from = tat.saturating_sub(tolerance);
        if now < allowed_from {
            return Decision::Wait(allowed_from - now);
        }
        self.tat.insert(key.to_owned(), tat + interval);
        Decision::Allow
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
}
