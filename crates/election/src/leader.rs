//! A client-go-style leader lock as a sans-IO core (the single `herald-allocator` Lease).
//!
//! Semantics of client-go `tools/leaderelection` (`tryAcquireOrRenew`), with two corrections that matter for us:
//! - every write is a compare-and-swap: `replace` carries the resourceVersion of the record last read, `create`
//!   fails with AlreadyExists, so a 409 always means "lost" (kube-leader-election's merge patches let two win);
//! - expiry is judged by *local observation time*: a lease held by someone else counts as expired only when its
//!   resourceVersion has not changed for `lease_duration` on this process's monotonic clock. Remote `renewTime`
//!   is never compared with the local clock.
//!
//! The leader steps down when its last successful renew was *sent* `renew_deadline` ago, which is before any other
//! candidate can consider the lease expired (`renew_deadline·(1+ρ) + W < lease_duration·(1−ρ)`, checked by
//! [`LeaderTiming::validate`]). On stop it steps down first, then releases (holder cleared,
//! `leaseDurationSeconds: 1`), so the next candidate acquires at its next retry.

use std::time::Duration;

use tokio::time::Instant;

use crate::lease::{LeaseRecord, StoreError, WatchEvent};
use crate::ownership::OpId;
use crate::timing::{ElectionTiming, TimingError, is_safe, min_takeover_after};

/// Timing of the leader lock (client-go names).
///
/// The default follows the Layer 2 election's defaults ([`From<ElectionTiming>`]): the lease is taken over after
/// `T` = 3 s unchanged, the leader renews every `R` = 1 s and steps down `D` = 2 s after its last successful renew.
/// A crashed leader is replaced within `T + R` (≈ 3 s on average) instead of client-go's 15 s / 10 s / 2 s (≈ 16 s),
/// for one renew per second (client-go's: one per 2 s) and one read per second from every other candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTiming {
    /// How long others wait, from the last observed change, before taking an unreleased lease.
    pub lease_duration: Duration,
    /// The leader steps down when no renew sent within this time succeeded.
    pub renew_deadline: Duration,
    /// How often the leader renews and candidates retry.
    pub retry_period: Duration,
}

impl Default for LeaderTiming {
    fn default() -> Self {
        ElectionTiming::default().into()
    }
}

impl From<ElectionTiming> for LeaderTiming {
    /// The lock judged like a node lease: taken over after `--takeover-after`, renewed every `--node-renew-period`,
    /// given up after `--renew-deadline`. A valid [`ElectionTiming`] always gives a valid `LeaderTiming` (its `2·R ≤
    /// D` implies client-go's `1.2·R < D`, and the safety inequality is the same).
    fn from(t: ElectionTiming) -> Self {
        Self {
            lease_duration: t.takeover_after,
            renew_deadline: t.renew_deadline,
            retry_period: t.node_renew_period,
        }
    }
}

impl LeaderTiming {
    /// client-go's rule `renew_deadline > retry_period × 1.2`, and the same safety inequality as the ownership
    /// protocol between `renew_deadline` and `lease_duration`.
    pub fn validate(self) -> Result<Self, TimingError> {
        if self.retry_period.is_zero() {
            return Err(TimingError::Zero {
                flag: "leader retry period",
            });
        }
        if self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return Err(TimingError::RenewTooSlow {
                renew: self.retry_period,
                deadline: self.renew_deadline,
                max_renew: self.renew_deadline.div_f64(1.2),
            });
        }
        if !is_safe(self.renew_deadline, self.lease_duration) {
            return Err(TimingError::Unsafe {
                deadline: self.renew_deadline,
                takeover: self.lease_duration,
                min_takeover: min_takeover_after(self.renew_deadline),
            });
        }
        Ok(self)
    }
}

/// A lease operation requested by [`LeaderLockCore::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAction {
    Get { op: OpId, name: String },
    Create { op: OpId, record: LeaseRecord },
    Replace { op: OpId, record: LeaseRecord },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Get,
    Write { sent_at: Instant, release: bool },
}

/// The leader-lock decision core. Feed it results with [`op_done`](Self::op_done), call [`poll`](Self::poll) after
/// each input and at [`next_wakeup`](Self::next_wakeup), and read [`is_leader`](Self::is_leader).
#[derive(Debug)]
pub struct LeaderLockCore {
    name: String,
    holder: String,
    timing: LeaderTiming,
    /// The last record read or written, with the local time its resourceVersion was first seen.
    observed: Option<(LeaseRecord, Instant)>,
    absent: bool,
    /// The record as read by the `Get` whose result says we should write now.
    write_ready: bool,
    last_ok_sent: Option<Instant>,
    next_at: Option<Instant>,
    in_flight: Option<(OpId, Pending)>,
    next_op: OpId,
    stopping: bool,
    released: bool,
    /// A watch on the lease has listed and reports changes: a follower then reads only when the lease would expire.
    watching: bool,
}

impl LeaderLockCore {
    /// A lock on lease `name` for identity `holder`.
    pub fn new(name: impl Into<String>, holder: impl Into<String>, timing: LeaderTiming) -> Self {
        Self {
            name: name.into(),
            holder: holder.into(),
            timing,
            observed: None,
            absent: false,
            write_ready: false,
            last_ok_sent: None,
            next_at: None,
            in_flight: None,
            next_op: 1,
            stopping: false,
            released: false,
            watching: false,
        }
    }

    /// Whether this process may act as leader at `now`: it holds the lease and a renew sent less than
    /// `renew_deadline` ago succeeded.
    pub fn is_leader(&self, now: Instant) -> bool {
        !self.stopping && self.last_ok_sent.is_some_and(|t| now < t + self.timing.renew_deadline)
    }

    /// When to poll next without other input: the next retry, or the renew deadline (to step down on time).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let deadline = self.last_ok_sent.map(|t| t + self.timing.renew_deadline);
        match (
            self.next_at.filter(|_| self.in_flight.is_none()),
            deadline.filter(|_| !self.stopping),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Steps down at once and releases the lease if held. [`is_done`](Self::is_done) turns true when finished.
    pub fn begin_release(&mut self, now: Instant) {
        self.stopping = true;
        self.next_at = Some(now);
    }

    /// The release has finished (or there was nothing to release).
    pub fn is_done(&self) -> bool {
        self.released
    }

    /// The result of operation `op`.
    pub fn op_done(&mut self, now: Instant, op: OpId, result: Result<LeaseRecord, StoreError>) {
        let Some((expected, pending)) = self.in_flight else {
            return;
        };
        if expected != op {
            return;
        }
        self.in_flight = None;
        let retry = self.timing.retry_period;
        match (pending, result) {
            (Pending::Get, Ok(record)) => {
                self.observe(now, record);
                let (record, observed_at) = self.observed.as_ref().expect("just observed");
                let expires = *observed_at + self.timing.lease_duration;
                let free = match record.holder() {
                    None => true,
                    Some(h) if h == self.holder => true,
                    // Expired only by local observation: unchanged for lease_duration since we first saw this rv.
                    Some(_) => now >= expires,
                };
                self.absent = false;
                self.write_ready = free;
                // The next read at the moment the lease would expire; without a working watch to report renewals
                // meanwhile, at the next retry if that comes first.
                self.next_at = Some(if free {
                    now
                } else if self.watching {
                    expires
                } else {
                    (now + retry).min(expires)
                });
            }
            (Pending::Get, Err(StoreError::NotFound { .. })) => {
                self.observed = None;
                self.absent = true;
                self.write_ready = true;
                self.next_at = Some(now);
            }
            (Pending::Get, Err(_)) => self.next_at = Some(now + retry),
            (Pending::Write { sent_at, release }, Ok(record)) => {
                self.observe(now, record);
                self.absent = false;
                if release {
                    self.released = true;
                } else if !self.stopping {
                    self.last_ok_sent = Some(sent_at);
                }
                self.next_at = Some(sent_at + retry);
            }
            (Pending::Write { release, .. }, Err(e)) => {
                if e.is_lost_race() || matches!(e, StoreError::NotFound { .. }) {
                    // Someone else wrote the lease: not leader any more (client-go: "failed to renew").
                    self.last_ok_sent = None;
                    self.observed = None;
                }
                if release {
                    self.released = true;
                }
                // Otherwise keep last_ok_sent: the deadline decides when we step down. A leader retries a failed renew
                // after a quarter period (like a node-lease renew), so one failure does not run into the deadline.
                let pause = if self.last_ok_sent.is_some() {
                    (retry / 4).max(Duration::from_millis(50)).min(retry)
                } else {
                    retry
                };
                self.next_at = Some(now + pause);
            }
        }
    }

    /// A watch event on the leases (any lease; only this lock's counts). A renewal is seen when it happens instead of
    /// at the next read, and a follower reads the lease only when it would expire: none in the steady state, while
    /// the watch works (an error falls back to a read every retry period until it lists again). Taking over still
    /// needs a read showing the same resourceVersion for `lease_duration`, so a watch that is behind or silent can
    /// delay a takeover, never cause one.
    pub fn watched(&mut self, now: Instant, event: &WatchEvent) {
        let record = match event {
            WatchEvent::Applied(r) if r.name == self.name => Some(r.clone()),
            WatchEvent::Resynced(all) => {
                self.watching = true;
                all.iter().find(|r| r.name == self.name).cloned()
            }
            WatchEvent::Deleted { name } if *name == self.name => None,
            WatchEvent::Error(_) => {
                self.watching = false;
                return;
            }
            _ => return,
        };
        if self.stopping || self.is_leader(now) {
            return;
        }
        let wake = match record {
            Some(record) => {
                self.observe(now, record);
                let (record, observed_at) = self.observed.as_ref().expect("just observed");
                match record.holder() {
                    Some(h) if h != self.holder => *observed_at + self.timing.lease_duration,
                    // Released (or ours from an earlier life): read it now.
                    _ => now,
                }
            }
            // Deleted: read it now (the read says NotFound and we create it).
            None => now,
        };
        // Replaces the planned read: a renewal moves the expiry, and the read only ever serves a takeover.
        self.next_at = Some(wake);
    }

    fn observe(&mut self, now: Instant, record: LeaseRecord) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(old, _)| old.resource_version != record.resource_version);
        let at = if changed {
            now
        } else {
            self.observed.as_ref().map_or(now, |(_, t)| *t)
        };
        self.observed = Some((record, at));
    }

    fn record(&self, release: bool) -> LeaseRecord {
        let prev = self.observed.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
        let same = prev.holder() == Some(self.holder.as_str());
        let mut record = LeaseRecord {
            name: self.name.clone(),
            resource_version: if self.absent {
                None
            } else {
                prev.resource_version.clone()
            },
            labels: prev.labels.clone(),
            holder: Some(self.holder.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            lease_transitions: Some(prev.lease_transitions.unwrap_or(0) + i32::from(!same && prev.holder().is_some())),
            acquire_time: if same { prev.acquire_time } else { None },
            renew_time: None,
        };
        if release {
            record.holder = None;
            record.lease_duration_seconds = Some(1);
            record.lease_transitions = prev.lease_transitions;
        }
        record
    }

    fn next_op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    /// The next lease operation, if one is due.
    pub fn poll(&mut self, now: Instant) -> Option<LockAction> {
        if self.in_flight.is_some() || self.released || self.next_at.is_some_and(|t| now < t) {
            return None;
        }
        if self.stopping {
            let held = self
                .observed
                .as_ref()
                .is_some_and(|(r, _)| r.holder() == Some(self.holder.as_str()));
            if !held {
                self.released = true;
                return None;
            }
            let op = self.next_op();
            self.in_flight = Some((
                op,
                Pending::Write {
                    sent_at: now,
                    release: true,
                },
            ));
            return Some(LockAction::Replace {
                op,
                record: self.record(true),
            });
        }
        let op = self.next_op();
        // Fast path as in client-go: a current leader renews with its cached record, without reading first.
        if self.write_ready || self.is_leader(now) {
            self.write_ready = false;
            self.in_flight = Some((
                op,
                Pending::Write {
                    sent_at: now,
                    release: false,
                },
            ));
            let record = self.record(false);
            return Some(if self.absent {
                LockAction::Create { op, record }
            } else {
                LockAction::Replace { op, record }
            });
        }
        self.in_flight = Some((op, Pending::Get));
        Some(LockAction::Get {
            op,
            name: self.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryLeaseStore;

    struct Candidate {
        core: LeaderLockCore,
        store: MemoryLeaseStore,
        reads: u64,
        /// The simulated watch has listed.
        listed: bool,
    }

    /// client-go's component defaults, which the allocator used before it followed the election's timing.
    const CLIENT_GO: LeaderTiming = LeaderTiming {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    impl Candidate {
        fn new(store: &MemoryLeaseStore, id: &str) -> Self {
            Self::with_timing(store, id, LeaderTiming::default())
        }

        fn with_timing(store: &MemoryLeaseStore, id: &str, timing: LeaderTiming) -> Self {
            Self {
                core: LeaderLockCore::new("herald-allocator", id, timing),
                store: store.client(id),
                reads: 0,
                listed: false,
            }
        }

        /// Reads this candidate sent.
        fn store_reads(&self) -> u64 {
            self.reads
        }

        /// Runs polls and operations until nothing is due at `now`; with `watch`, first tells the core the lease as it
        /// is now (a watch that reports every write at once).
        fn step(&mut self, now: Instant, watch: bool) {
            if watch {
                let lease = self.store.peek("herald-allocator");
                let event = match lease {
                    // A watch starts with its list.
                    _ if !self.listed => WatchEvent::Resynced(lease.into_iter().collect()),
                    Some(record) => WatchEvent::Applied(record),
                    None => WatchEvent::Deleted {
                        name: "herald-allocator".into(),
                    },
                };
                self.listed = true;
                self.core.watched(now, &event);
            }
            while let Some(action) = self.core.poll(now) {
                let (op, result) = match action {
                    LockAction::Get { op, name } => {
                        self.reads += 1;
                        (op, self.store.get_now(&name))
                    }
                    LockAction::Create { op, record } => (op, self.store.create_now(&record)),
                    LockAction::Replace { op, record } => (op, self.store.replace_now(&record)),
                };
                self.core.op_done(now, op, result);
            }
        }
    }

    fn run_watching(
        cands: &mut [Candidate],
        start: Instant,
        until: Duration,
        watch: bool,
        mut check: impl FnMut(Instant, &[Candidate]),
    ) {
        let mut t = Duration::ZERO;
        while t <= until {
            let now = start + t;
            for c in cands.iter_mut() {
                c.step(now, watch);
            }
            check(now, cands);
            t += Duration::from_millis(100);
        }
    }

    #[test]
    fn defaults_validate_and_bad_ones_do_not() {
        assert!(LeaderTiming::default().validate().is_ok());
        assert!(CLIENT_GO.validate().is_ok());
        let bad = LeaderTiming {
            renew_deadline: Duration::from_millis(14_500),
            ..CLIENT_GO
        };
        assert!(matches!(bad.validate(), Err(TimingError::Unsafe { .. })));
        let bad = LeaderTiming {
            retry_period: Duration::from_secs(9),
            ..CLIENT_GO
        };
        assert!(matches!(bad.validate(), Err(TimingError::RenewTooSlow { .. })));
    }

    #[test]
    fn default_timing_is_the_elections() {
        let t = LeaderTiming::default();
        assert_eq!(
            (t.lease_duration, t.renew_deadline, t.retry_period),
            (Duration::from_secs(3), Duration::from_secs(2), Duration::from_secs(1)),
            "--takeover-after, --renew-deadline, --node-renew-period"
        );
        // Any timing the election accepts is a valid lock timing.
        let tuned = ElectionTiming {
            node_renew_period: Duration::from_millis(300),
            renew_deadline: Duration::from_millis(700),
            takeover_after: Duration::from_millis(1000),
            stagger_step: Duration::from_millis(20),
        };
        assert!(LeaderTiming::from(tuned.validate().unwrap()).validate().is_ok());
    }

    /// Runs three candidates until one leads, crashes it `phase` after a whole second, and returns how long the
    /// others took to take over. Asserts that there is never more than one leader, old and new included.
    fn takeover_after_crash(timing: LeaderTiming, phase: Duration) -> Duration {
        takeover_after_crash_watching(timing, phase, false)
    }

    fn takeover_after_crash_watching(timing: LeaderTiming, phase: Duration, watch: bool) -> Duration {
        let store = MemoryLeaseStore::new();
        let mut cands = vec![
            Candidate::with_timing(&store, "a", timing),
            Candidate::with_timing(&store, "b", timing),
            Candidate::with_timing(&store, "c", timing),
        ];
        let start = Instant::now();
        let crash_at = start + Duration::from_secs(20) + phase;
        run_watching(&mut cands, start, crash_at - start, watch, |now, cs| {
            let leaders = cs.iter().filter(|c| c.core.is_leader(now)).count();
            assert!(leaders <= 1, "two leaders at {:?}", now - start);
        });
        let leader = cands.iter().position(|c| c.core.is_leader(crash_at)).expect("a leader");
        // Crash the leader: it stops running but still believes it leads until its deadline, which is before the
        // others may take over.
        let crashed = cands.remove(leader);
        let mut first_new = None;
        run_watching(&mut cands, crash_at, Duration::from_secs(30), watch, |now, cs| {
            let others = cs.iter().filter(|c| c.core.is_leader(now)).count();
            assert!(others <= 1);
            if others == 1 {
                assert!(
                    !crashed.core.is_leader(now),
                    "old and new leader overlap at {:?}",
                    now - crash_at
                );
                first_new.get_or_insert(now - crash_at);
            }
        });
        first_new.expect("someone took over")
    }

    #[test]
    fn exactly_one_leader_and_takeover_after_crash_by_local_observation() {
        let gap = takeover_after_crash(CLIENT_GO, Duration::ZERO);
        assert!(
            gap >= Duration::from_secs(13) && gap <= Duration::from_secs(20),
            "takeover after {gap:?}"
        );
    }

    #[test]
    fn at_default_timing_a_crashed_leader_is_replaced_within_takeover_after_plus_one_renew_period() {
        // Whatever the phase of the crash within the renew period, the lease is taken over between T − R (the leader
        // renewed just before dying) and T + R (a candidate saw the last renew up to one retry late) after the crash.
        let t = LeaderTiming::default();
        for phase_ms in (0..1000).step_by(100) {
            let gap = takeover_after_crash(t, Duration::from_millis(phase_ms));
            assert!(
                gap > t.lease_duration - t.retry_period && gap <= t.lease_duration + t.retry_period,
                "crash {phase_ms} ms into a period: takeover after {gap:?}"
            );
        }
    }

    #[test]
    fn with_a_watch_a_crashed_leader_is_replaced_within_takeover_after() {
        // Renewals seen as they happen and the takeover read due when the lease would expire: the lease is taken over
        // between T − R and T after the crash (plus this harness's 100 ms step), never two leaders.
        let t = LeaderTiming::default();
        let step = Duration::from_millis(100);
        for phase_ms in (0..1000).step_by(100) {
            let gap = takeover_after_crash_watching(t, Duration::from_millis(phase_ms), true);
            assert!(
                gap > t.lease_duration - t.retry_period && gap <= t.lease_duration + step,
                "crash {phase_ms} ms into a period: takeover after {gap:?}"
            );
        }
    }

    #[test]
    fn with_a_watch_a_follower_reads_nothing_while_the_leader_renews() {
        let store = MemoryLeaseStore::new();
        let mut leader = Candidate::new(&store, "a");
        let mut follower = Candidate::new(&store, "b");
        let start = Instant::now();
        leader.step(start, false);
        let mut reads = 0;
        let mut t = start;
        while t < start + Duration::from_secs(30) {
            t += Duration::from_millis(100);
            leader.step(t, false);
            follower.step(t, true);
            if follower.store_reads() > reads {
                reads = follower.store_reads();
                assert!(t < start + Duration::from_secs(2), "a read at {:?}", t - start);
            }
        }
        assert!(leader.core.is_leader(t) && !follower.core.is_leader(t));
        // Without a watch: a read every retry period.
        let mut polling = Candidate::new(&store, "c");
        let before = polling.store_reads();
        for i in 1..=100 {
            leader.step(t + Duration::from_millis(100 * i), false);
            polling.step(t + Duration::from_millis(100 * i), false);
        }
        assert!(
            polling.store_reads() - before >= 9,
            "{} reads in 10 s",
            polling.store_reads() - before
        );
    }

    #[test]
    fn a_silent_watch_never_causes_a_takeover() {
        // The watch last reported the lease long ago; the leader kept renewing. The read at "expiry" shows a newer
        // resourceVersion, so the follower waits again instead of taking over.
        let store = MemoryLeaseStore::new();
        let mut leader = Candidate::new(&store, "a");
        let mut follower = Candidate::new(&store, "b");
        let start = Instant::now();
        leader.step(start, false);
        assert!(leader.core.is_leader(start));
        follower.core.watched(
            start,
            &WatchEvent::Resynced(vec![store.peek("herald-allocator").unwrap()]),
        );
        let mut t = start;
        while t < start + Duration::from_secs(20) {
            t += Duration::from_millis(100);
            leader.step(t, false);
            follower.step(t, false);
            assert!(leader.core.is_leader(t), "the leader renews throughout");
            assert!(
                !follower.core.is_leader(t),
                "no takeover of a renewed lease at {:?}",
                t - start
            );
        }
    }

    #[test]
    fn remote_timestamps_are_ignored() {
        // A lease whose renewTime is far in the past but that we just saw for the first time is not expired.
        let store = MemoryLeaseStore::new();
        let old = std::time::SystemTime::UNIX_EPOCH;
        store
            .create_now(&LeaseRecord {
                name: "herald-allocator".into(),
                holder: Some("z".into()),
                renew_time: Some(old),
                acquire_time: Some(old),
                lease_duration_seconds: Some(15),
                ..Default::default()
            })
            .unwrap();
        let mut c = Candidate::with_timing(&store, "a", CLIENT_GO);
        let start = Instant::now();
        c.step(start, false);
        assert!(!c.core.is_leader(start));
        c.step(start + Duration::from_secs(14), false);
        assert!(!c.core.is_leader(start + Duration::from_secs(14)));
        c.step(start + Duration::from_secs(16), false);
        assert!(c.core.is_leader(start + Duration::from_secs(16)));
        assert_eq!(store.peek("herald-allocator").unwrap().lease_transitions, Some(1));
    }

    #[test]
    fn cut_off_leader_steps_down_before_anyone_may_take_over() {
        let store = MemoryLeaseStore::new();
        let mut a = Candidate::new(&store, "a");
        let mut b = Candidate::new(&store, "b");
        let start = Instant::now();
        a.step(start, false);
        assert!(a.core.is_leader(start));
        store.set_reachable("a", false);
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(40) {
            let now = start + t;
            a.step(now, false);
            b.step(now, false);
            assert!(!(a.core.is_leader(now) && b.core.is_leader(now)), "overlap at {t:?}");
            if t >= LeaderTiming::default().renew_deadline {
                assert!(!a.core.is_leader(now), "a must step down by the renew deadline");
            }
            t += Duration::from_millis(50);
        }
        assert!(b.core.is_leader(start + Duration::from_secs(40)));
        // Reconnected, the old leader learns it lost (409 on its stale resourceVersion) and stays a follower.
        store.set_reachable("a", true);
        let now = start + Duration::from_secs(41);
        a.step(now, false);
        b.step(now, false);
        assert!(!a.core.is_leader(now) && b.core.is_leader(now));
    }

    #[test]
    fn release_hands_over_at_the_next_retry() {
        let store = MemoryLeaseStore::new();
        let mut a = Candidate::new(&store, "a");
        let mut b = Candidate::new(&store, "b");
        let start = Instant::now();
        a.step(start, false);
        b.step(start, false);
        assert!(a.core.is_leader(start) && !b.core.is_leader(start));
        let stop = start + Duration::from_secs(1);
        a.core.begin_release(stop);
        assert!(!a.core.is_leader(stop), "steps down before releasing");
        a.step(stop, false);
        assert!(a.core.is_done());
        assert_eq!(store.peek("herald-allocator").unwrap().holder(), None);
        let next = start + Duration::from_secs(2);
        b.step(next, false);
        assert!(b.core.is_leader(next));
    }
}
