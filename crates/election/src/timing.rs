//! Timing of the ownership protocol and the inequality that makes it safe.
//!
//! Symbols (flags in parentheses):
//! - `R` node-lease renew period (`--node-renew-period`, default 1 s),
//! - `D` renew deadline (`--renew-deadline`, default 2 s): a holder that has not *sent* a renew that then succeeded
//!   within `D` is in a *liveness gap* (with `--api-outage=withdraw` it stops announcing),
//! - `T` takeover delay (`--takeover-after`, default 3 s): another node takes over only after observing the holder's
//!   node lease unchanged for `T` on its own monotonic clock,
//! - `step` candidate stagger (default 50 ms).
//!
//! Safety (two nodes never announce together while the API is reachable) needs the holder to be silent before anyone
//! may take over. The holder's last successful renew was sent at `s`; observers saw its effect at `o >= s`. The
//! holder is silent at `s + D + W` on its clock; a taker acts no earlier than `o + T` on its clock. With clock *rates*
//! off by at most `ρ` (offsets do not matter: only local durations are compared), real time gives
//!
//! ```text
//! D·(1 + ρ) + W  <  T·(1 − ρ)        W = WITHDRAW_BUDGET = 100 ms, ρ = CLOCK_RATE_MARGIN = 2 %
//! ```
//!
//! Defaults: 2 s·1.02 + 0.1 s = 2.14 s < 3 s·0.98 = 2.94 s. `R` does not appear (observations can only be *late*,
//! which delays takeovers), but liveness needs `2·R <= D`: one lost renew must not open a gap.

use std::time::Duration;

/// Bound on the relative clock-rate difference between two nodes' monotonic clocks (2 %, far above NTP-disciplined
/// drift, which is < 0.05 %; VMs that are paused are covered by the deadline being measured from the last send).
pub const CLOCK_RATE_MARGIN: f64 = 0.02;

/// Time budget between the deadline passing and the IP being gone from the wire (task wake-up and the L2 engine
/// dropping the IP from its responder table).
pub const WITHDRAW_BUDGET: Duration = Duration::from_millis(100);

/// Timing of the per-IP ownership protocol (see the module docs for the inequality it must satisfy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTiming {
    /// `R`: how often each node renews its node lease (`--node-renew-period`).
    pub node_renew_period: Duration,
    /// `T`: how long a node lease must be observed unchanged before its IPs are taken over (`--takeover-after`).
    pub takeover_after: Duration,
    /// `D`: how long after the last successful renew a holder may keep announcing under
    /// `--api-outage=withdraw`; also the threshold of a liveness gap (`--renew-deadline`).
    pub renew_deadline: Duration,
    /// Delay between successive candidates: rank `k` acts `k × stagger_step` after rank 0 could have.
    pub stagger_step: Duration,
}

impl Default for ElectionTiming {
    fn default() -> Self {
        Self {
            node_renew_period: Duration::from_secs(1),
            takeover_after: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            stagger_step: Duration::from_millis(50),
        }
    }
}

/// Timing flags that would make the protocol unsafe or flappy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimingError {
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error(
        "--node-renew-period ({renew:?}) must be at most half of --renew-deadline ({deadline:?}) so that one lost \
         renew does not stop announcements; lower --node-renew-period to {max_renew:?} or raise --renew-deadline"
    )]
    RenewTooSlow {
        renew: Duration,
        deadline: Duration,
        max_renew: Duration,
    },
    #[error(
        "unsafe timing: --renew-deadline ({deadline:?}) × 1.02 + 100ms withdraw budget must be below \
         --takeover-after ({takeover:?}) × 0.98, otherwise a node cut off from the API could still be announcing when \
         another takes over; raise --takeover-after to at least {min_takeover:?} or lower --renew-deadline"
    )]
    Unsafe {
        deadline: Duration,
        takeover: Duration,
        min_takeover: Duration,
    },
    #[error(
        "--stagger-step ({step:?}) must be below --takeover-after ({takeover:?}); candidates would wait longer than a \
         failover"
    )]
    StaggerTooLong { step: Duration, takeover: Duration },
}

/// Smallest `T` that satisfies `D·(1 + ρ) + W < T·(1 − ρ)` for a given `D`, rounded up to the millisecond
/// (plus one so the inequality is strict).
pub fn min_takeover_after(deadline: Duration) -> Duration {
    let need = (deadline.as_secs_f64() * (1.0 + CLOCK_RATE_MARGIN) + WITHDRAW_BUDGET.as_secs_f64())
        / (1.0 - CLOCK_RATE_MARGIN);
    Duration::from_millis((need * 1000.0).ceil() as u64 + 1)
}

/// Whether `deadline` and `takeover` satisfy the safety inequality.
pub(crate) fn is_safe(deadline: Duration, takeover: Duration) -> bool {
    deadline.as_secs_f64() * (1.0 + CLOCK_RATE_MARGIN) + WITHDRAW_BUDGET.as_secs_f64()
        < takeover.as_secs_f64() * (1.0 - CLOCK_RATE_MARGIN)
}

impl ElectionTiming {
    /// Checks the liveness and safety inequalities; returns the timing unchanged when they hold.
    pub fn validate(self) -> Result<Self, TimingError> {
        for (flag, value) in [
            ("--node-renew-period", self.node_renew_period),
            ("--takeover-after", self.takeover_after),
            ("--renew-deadline", self.renew_deadline),
        ] {
            if value.is_zero() {
                return Err(TimingError::Zero { flag });
            }
        }
        if self.node_renew_period * 2 > self.renew_deadline {
            return Err(TimingError::RenewTooSlow {
                renew: self.node_renew_period,
                deadline: self.renew_deadline,
                max_renew: self.renew_deadline / 2,
            });
        }
        if !is_safe(self.renew_deadline, self.takeover_after) {
            return Err(TimingError::Unsafe {
                deadline: self.renew_deadline,
                takeover: self.takeover_after,
                min_takeover: min_takeover_after(self.renew_deadline),
            });
        }
        if self.stagger_step >= self.takeover_after {
            return Err(TimingError::StaggerTooLong {
                step: self.stagger_step,
                takeover: self.takeover_after,
            });
        }
        Ok(self)
    }

    /// Delay before retrying a node-lease renew that failed (a quarter of `R`, at least 50 ms), so a single failed
    /// write is retried well before the deadline.
    pub fn renew_retry(&self) -> Duration {
        (self.node_renew_period / 4)
            .max(Duration::from_millis(50))
            .min(self.node_renew_period)
    }

    /// Whether a liveness gap that ended with a renew answered `since_last_ok` after the last successful renew was
    /// *sent* can have let another node take over any IP of this one. A taker confirms a holder dead with a read of
    /// its node lease served no earlier than `T` (its clock) after the holder's last write it observed, which was sent
    /// no earlier than that renew; the renew that ends the gap took effect before its answer arrived. If that is
    /// before any such read (`since_last_ok·(1 + ρ) < T·(1 − ρ)`), every read showed the new resourceVersion and no
    /// takeover was possible: the IPs asserted before the gap need no new assertion.
    pub fn gap_is_harmless(&self, since_last_ok: Duration) -> bool {
        since_last_ok.as_secs_f64() * (1.0 + CLOCK_RATE_MARGIN)
            < self.takeover_after.as_secs_f64() * (1.0 - CLOCK_RATE_MARGIN)
    }

    /// Whole seconds written to `leaseDurationSeconds` of node and IP leases (informational for humans and
    /// `kubectl`; Herald itself only trusts local observation times).
    pub fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.takeover_after.as_secs_f64().ceil() as u64)
            .unwrap_or(i32::MAX)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_harmless_only_while_no_takeover_check_can_have_been_served() {
        let t = ElectionTiming::default();
        // T = 3 s, ρ = 2 %: 3 × 0.98 / 1.02 = 2.882 s.
        assert!(t.gap_is_harmless(Duration::from_millis(2_500)));
        assert!(t.gap_is_harmless(Duration::from_millis(2_880)));
        assert!(!t.gap_is_harmless(Duration::from_millis(2_890)));
        assert!(!t.gap_is_harmless(Duration::from_secs(10)));
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ElectionTiming::default().validate(), Ok(ElectionTiming::default()));
    }

    #[test]
    fn tuned_timing_for_sub_1_5s_failover_is_valid() {
        let t = ElectionTiming {
            node_renew_period: ms(300),
            renew_deadline: ms(700),
            takeover_after: ms(1000),
            stagger_step: ms(20),
        };
        assert!(t.validate().is_ok());
    }

    #[test]
    fn deadline_too_close_to_takeover_is_refused_with_flags_named() {
        let t = ElectionTiming {
            takeover_after: ms(2100),
            ..Default::default()
        };
        let err = t.validate().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TimingError::Unsafe { .. }), "{msg}");
        for flag in ["--renew-deadline", "--takeover-after"] {
            assert!(msg.contains(flag), "{msg}");
        }
        // The suggested minimum is itself accepted, and one millisecond less is not.
        let min = min_takeover_after(ms(2000));
        assert_eq!(min, ms(2185));
        assert!(
            ElectionTiming {
                takeover_after: min,
                ..Default::default()
            }
            .validate()
            .is_ok()
        );
        assert!(!is_safe(ms(2000), ms(2183)));
    }

    #[test]
    fn renew_period_must_leave_room_for_one_retry() {
        let t = ElectionTiming {
            node_renew_period: ms(1500),
            ..Default::default()
        };
        let msg = t.validate().unwrap_err().to_string();
        assert!(
            msg.contains("--node-renew-period") && msg.contains("--renew-deadline"),
            "{msg}"
        );
    }

    #[test]
    fn zero_and_stagger_are_refused() {
        let t = ElectionTiming {
            node_renew_period: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(
            t.validate(),
            Err(TimingError::Zero {
                flag: "--node-renew-period"
            })
        );
        let t = ElectionTiming {
            stagger_step: ms(3000),
            ..Default::default()
        };
        assert!(matches!(t.validate(), Err(TimingError::StaggerTooLong { .. })));
    }

    #[test]
    fn lease_duration_rounds_up() {
        assert_eq!(ElectionTiming::default().lease_duration_seconds(), 3);
        let t = ElectionTiming {
            takeover_after: ms(1200),
            ..Default::default()
        };
        assert_eq!(t.lease_duration_seconds(), 2);
    }
}
