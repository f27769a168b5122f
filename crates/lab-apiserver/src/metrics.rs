//! Request accounting, exposed at `/metrics` (Prometheus text format) and as a snapshot for in-process tests.
//! Verb names are the Kubernetes audit verbs (get, list, watch, create, update, patch, delete, deletecollection);
//! a subresource counts as `resource/subresource` (e.g. `services/status`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Requests by `(verb, resource)`.
    pub requests: BTreeMap<(String, String), u64>,
    /// Responses by HTTP status code (API requests only).
    pub responses: BTreeMap<u16, u64>,
    /// Watches currently open.
    pub open_watches: i64,
}

impl MetricsSnapshot {
    /// Requests with this verb on this resource (`"leases"`, `"services/status"`).
    pub fn requests(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests with this verb on any resource.
    pub fn requests_by_verb(&self, verb: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// All API requests.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<MetricsSnapshot>,
    open_watches: AtomicI64,
}

impl Metrics {
    pub fn record(&self, verb: &str, resource: &str, code: u16) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts
            .requests
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
        *counts.responses.entry(code).or_default() += 1;
    }

    pub fn watch_opened(&self) {
        self.open_watches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn watch_closed(&self) {
        self.open_watches.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut snapshot = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        snapshot.open_watches = self.open_watches.load(Ordering::Relaxed);
        snapshot
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let snapshot = self.snapshot();
        let mut out = String::new();
        out.push_str("# HELP lab_apiserver_requests_total API requests by Kubernetes audit verb and resource.\n");
        out.push_str("# TYPE lab_apiserver_requests_total counter\n");
        for ((verb, resource), n) in &snapshot.requests {
            let _ = writeln!(
                out,
                "lab_apiserver_requests_total{{verb=\"{verb}\",resource=\"{resource}\"}} {n}"
            );
        }
        out.push_str("# HELP lab_apiserver_responses_total API responses by HTTP status code.\n");
        out.push_str("# TYPE lab_apiserver_responses_total counter\n");
        for (code, n) in &snapshot.responses {
            let _ = writeln!(out, "lab_apiserver_responses_total{{code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP lab_apiserver_watches Watches currently open.\n");
        out.push_str("# TYPE lab_apiserver_watches gauge\n");
        let _ = writeln!(out, "lab_apiserver_watches {}", snapshot.open_watches);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_gauge() {
        let m = Metrics::default();
        m.record("update", "leases", 200);
        m.record("update", "leases", 409);
        m.watch_opened();
        let text = m.render();
        assert!(
            text.contains("lab_apiserver_requests_total{verb=\"update\",resource=\"leases\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lab_apiserver_responses_total{code=\"409\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("lab_apiserver_watches 1\n"), "{text}");
        assert_eq!(m.snapshot().requests("update", "leases"), 2);
    }
}
