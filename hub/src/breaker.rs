//! A circuit breaker per upstream (another region's hub, a node, an agent endpoint), sans-IO.
//!
//! Closed: calls go through and consecutive failures are counted. After `failures_to_open` in a
//! row it opens: calls are refused at once for `open_for`. Then one probe call is let through
//! (half-open): success closes the breaker, failure opens it again. Every change of state is
//! returned to the caller, for its metrics and logs. Time is an argument.

use std::time::Duration;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the given time.
    Open {
        /// When a probe may go.
        until: Duration,
    },
    /// One probe is out; other calls are refused until it answers.
    HalfOpen,
}

impl BreakerState {
    /// A label for metrics: `closed`, `open` or `half_open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// The settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures_to_open: u32,
    /// How long it stays open before a probe.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            open_for: Duration::from_secs(10),
        }
    }
}

/// One upstream's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            failures: 0,
        }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Failures in a row since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether a call may go now; `Some(new state)` when asking changed the state (an open
    /// breaker whose time is up lets this call through as the probe).
    pub fn allow(&mut self, now: Duration) -> (bool, Option<BreakerState>) {
        match self.state {
            BreakerState::Closed => (true, None),
            BreakerState::HalfOpen => (false, None),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                (true, Some(self.state))
            }
            BreakerState::Open { .. } => (false, None),
        }
    }

    /// Reports a call that succeeded; returns the new state if it changed.
    pub fn success(&mut self) -> Option<BreakerState> {
        self.failures = 0;
        if self.state == BreakerState::Closed {
            return None;
        }
        self.state = BreakerState::Closed;
        Some(self.state)
    }

    /// Reports a call that failed; returns the new state if it changed.
    pub fn failure(&mut self, now: Duration) -> Option<BreakerState> {
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.failures >= self.config.failures_to_open,
            BreakerState::Open { .. } => false,
        };
        if !open {
            return None;
        }
        self.state = BreakerState::Open {
            until: now + self.config.open_for,
        };
        Some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes() {
        let mut breaker = Breaker::new(BreakerConfig {
            failures_to_open: 3,
            open_for: secs(10),
        });
        assert_eq!(breaker.failure(secs(0)), None);
        assert_eq!(breaker.success(), None);
        assert_eq!(breaker.failure(secs(1)), None);
        assert_eq!(breaker.failure(secs(1)), None);
        assert_eq!(
            breaker.failure(secs(2)),
            Some(BreakerState::Open { until: secs(12) })
        );
        assert_eq!(breaker.allow(secs(5)), (false, None));
        // Time is up: one probe goes, others wait for it.
        assert_eq!(
            breaker.allow(secs(12)),
            (true, Some(BreakerState::HalfOpen))
        );
        assert_eq!(breaker.allow(secs(12)), (false, None));
        // The probe fails: open again.
        assert_eq!(
            breaker.failure(secs(13)),
            Some(BreakerState::Open { until: secs(23) })
        );
        assert_eq!(
            breaker.allow(secs(23)),
            (true, Some(BreakerState::HalfOpen))
        );
        assert_eq!(breaker.success(), Some(BreakerState::Closed));
        assert_eq!(breaker.allow(secs(24)), (true, None));
        assert_eq!(breaker.state().as_str(), "closed");
    }
}
