//! Counters of one interface's responder, for metrics. Plain atomics: the responder task writes, anyone reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared between an interface's responder and its handles.
#[derive(Debug, Default)]
pub struct Counters {
    requests_seen: AtomicU64,
    requests_answered: AtomicU64,
    gratuitous_sent: AtomicU64,
    probes_sent: AtomicU64,
    conflicts: AtomicU64,
    malformed_dropped: AtomicU64,
    send_errors: AtomicU64,
    events_dropped: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// ARP requests and Neighbor Solicitations received (for any address).
    pub requests_seen: u64,
    /// Requests answered for an announced address.
    pub requests_answered: u64,
    /// Gratuitous ARP frames (request and reply forms) and unsolicited Neighbor Advertisements sent.
    pub gratuitous_sent: u64,
    /// ARP probes and DAD-style Neighbor Solicitations sent before announcing.
    pub probes_sent: u64,
    /// Frames from another host claiming one of our addresses (while probing or announcing).
    pub conflicts: u64,
    /// Truncated, invalid or hostile frames dropped.
    pub malformed_dropped: u64,
    /// Frames the socket refused to send.
    pub send_errors: u64,
    /// Events dropped because the engine's event channel was full.
    pub events_dropped: u64,
}

impl Counters {
    /// Reads every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            requests_seen: get(&self.requests_seen),
            requests_answered: get(&self.requests_answered),
            gratuitous_sent: get(&self.gratuitous_sent),
            probes_sent: get(&self.probes_sent),
            conflicts: get(&self.conflicts),
            malformed_dropped: get(&self.malformed_dropped),
            send_errors: get(&self.send_errors),
            events_dropped: get(&self.events_dropped),
        }
    }

    pub(crate) fn request_seen(&self) {
        self.requests_seen.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn request_answered(&self) {
        self.requests_answered.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn gratuitous_sent(&self, frames: u64) {
        self.gratuitous_sent.fetch_add(frames, Ordering::Relaxed);
    }
    pub(crate) fn probe_sent(&self) {
        self.probes_sent.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn malformed(&self) {
        self.malformed_dropped.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn send_error(&self) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn event_dropped(&self) {
        self.events_dropped.fetch_add(1, Ordering::Relaxed);
    }
}
