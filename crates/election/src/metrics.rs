//! Counters the agent exports to Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one election task (shared with its handle; cheap to read at any time).
#[derive(Debug, Default)]
pub struct ElectionMetrics {
    lease_writes: AtomicU64,
    lease_reads: AtomicU64,
    lost_races: AtomicU64,
    api_errors: AtomicU64,
    ownership_changes: AtomicU64,
    wire_yields: AtomicU64,
    announced: AtomicU64,
    events_dropped: AtomicU64,
}

/// A point-in-time copy of [`ElectionMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Lease creates and replaces sent (node renews, IP acquisitions, re-assertions, releases).
    pub lease_writes: u64,
    /// Lease GETs sent (own-lease recovery, takeover checks, refreshes after a lost race).
    pub lease_reads: u64,
    /// Writes that lost a compare-and-swap race (409).
    pub lost_races: u64,
    /// API calls and watch errors other than lost races (unreachable, 5xx, timeouts, RBAC).
    pub api_errors: u64,
    /// Times this instance started or stopped holding an IP lease.
    pub ownership_changes: u64,
    /// On-wire yields (another MAC claimed an IP this instance announced).
    pub wire_yields: u64,
    /// IPs announced now (gauge).
    pub announced: u64,
    /// Ownership events dropped because the event channel was full.
    pub events_dropped: u64,
}

impl ElectionMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            lease_writes: g(&self.lease_writes),
            lease_reads: g(&self.lease_reads),
            lost_races: g(&self.lost_races),
            api_errors: g(&self.api_errors),
            ownership_changes: g(&self.ownership_changes),
            wire_yields: g(&self.wire_yields),
            announced: g(&self.announced),
            events_dropped: g(&self.events_dropped),
        }
    }

    pub(crate) fn write(&self) {
        self.lease_writes.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn read(&self) {
        self.lease_reads.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn lost_race(&self) {
        self.lost_races.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn api_error(&self) {
        self.api_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn ownership_change(&self) {
        self.ownership_changes.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn wire_yield(&self) {
        self.wire_yields.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn set_announced(&self, n: usize) {
        self.announced.store(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn event_dropped(&self) {
        self.events_dropped.fetch_add(1, Ordering::Relaxed);
    }
}
