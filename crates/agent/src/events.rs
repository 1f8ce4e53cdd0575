//! How many events the agent writes: like the kubelet's event QPS limit, a burst of
//! `BURST` and then `PER_SECOND`; the rest are dropped (logged), so starting 10,000 pods does
//! not write 10,000 events.

use std::time::Instant;

const BURST: f64 = 100.0;
const PER_SECOND: f64 = 50.0;

pub(crate) struct EventBudget {
    tokens: f64,
    at: Instant,
}

impl Default for EventBudget {
    fn default() -> Self {
        EventBudget { tokens: BURST, at: Instant::now() }
    }
}

impl EventBudget {
    /// Whether one more event may be written now.
    pub(crate) fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + refill).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            tracing::debug!("event dropped: more than {PER_SECOND} a second");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_a_steady_rate() {
        let t0 = Instant::now();
        let mut budget = EventBudget { tokens: BURST, at: t0 };
        assert_eq!((0..1000).filter(|_| budget.take_at(t0)).count(), 100);
        assert_eq!((0..1000).filter(|_| budget.take_at(t0 + Duration::from_secs(1))).count(), 50);
    }
}
