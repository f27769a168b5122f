//! How often a failure that repeats is logged: the first one at once, then one summary per interval while it goes on,
//! and one line when it ends. During an API outage or with revoked credentials every lease operation fails, a few
//! times a second per node; a line each time would bury the one that says why. Pure: the caller passes the time.

use std::time::Duration;

use tokio::time::Instant;

/// What the caller logs for a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The first failure after a success (or ever): log it in full.
    First,
    /// The interval has passed: log it, with the number of failures since the last line (this one included).
    Summary { failures: u64 },
    /// Counted, not logged.
    Quiet,
}

/// One kind of repeating failure.
#[derive(Clone, Debug)]
pub struct LogThrottle {
    interval: Duration,
    /// Failures since the last success, and since the last line logged; when that line was logged.
    failing: Option<(u64, u64, Instant)>,
}

impl LogThrottle {
    /// At most one line per `interval` while a failure repeats.
    pub fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval,
            failing: None,
        }
    }

    /// A failure at `now`.
    pub fn failure(&mut self, now: Instant) -> OnFailure {
        match &mut self.failing {
            None => {
                self.failing = Some((1, 0, now));
                OnFailure::First
            }
            Some((total, unlogged, logged_at)) => {
                *total += 1;
                *unlogged += 1;
                if now.duration_since(*logged_at) >= self.interval {
                    let failures = *unlogged;
                    *unlogged = 0;
                    *logged_at = now;
                    OnFailure::Summary { failures }
                } else {
                    OnFailure::Quiet
                }
            }
        }
    }

    /// A success: the number of failures it ends, when it ends any (log that it recovered).
    pub fn success(&mut self) -> Option<u64> {
        self.failing.take().map(|(total, _, _)| total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_one_summary_per_interval_then_recovery() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(30));
        assert_eq!(t.success(), None, "nothing failed");
        assert_eq!(t.failure(t0), OnFailure::First);
        // Four a second for 29.75 s: all quiet.
        let mut quiet = 0;
        for i in 1..120 {
            match t.failure(t0 + Duration::from_millis(250 * i)) {
                OnFailure::Quiet => quiet += 1,
                other => panic!("at {i}: {other:?}"),
            }
        }
        assert_eq!(quiet, 119);
        assert_eq!(
            t.failure(t0 + Duration::from_secs(30)),
            OnFailure::Summary { failures: 120 }
        );
        assert_eq!(t.failure(t0 + Duration::from_secs(31)), OnFailure::Quiet);
        assert_eq!(
            t.failure(t0 + Duration::from_secs(60)),
            OnFailure::Summary { failures: 2 }
        );
        assert_eq!(t.success(), Some(123));
        assert_eq!(t.success(), None);
        // A new failure after the recovery is news again.
        assert_eq!(t.failure(t0 + Duration::from_secs(61)), OnFailure::First);
    }
}
