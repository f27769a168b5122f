//! The lease model the cores reason about, and the store trait the shells do I/O through.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use futures::stream::BoxStream;

/// The parts of a `coordination.k8s.io/v1` Lease that Herald reads and writes.
///
/// `resource_version` is the compare-and-swap precondition of [`LeaseStore::replace`]; `None` on records passed to
/// [`LeaseStore::create`]. The wall-clock fields are informational (for `kubectl`); no decision reads them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    pub name: String,
    pub resource_version: Option<String>,
    pub labels: LeaseLabels,
    /// `spec.holderIdentity`; `None` (or empty) means free.
    pub holder: Option<String>,
    pub lease_duration_seconds: Option<i32>,
    pub lease_transitions: Option<i32>,
    pub acquire_time: Option<SystemTime>,
    pub renew_time: Option<SystemTime>,
}

/// A Lease's labels, as a short sorted list: a Lease has two or three, and every agent keeps a record of every IP
/// lease (a `BTreeMap` would cost a B-tree node of about half a KiB each).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseLabels(Vec<(String, String)>);

impl LeaseLabels {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).ok().map(|i| self.0[i].1.as_str())
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: String, value: String) {
        match self.position(&key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    /// Removes every label.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// No labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

impl FromIterator<(String, String)> for LeaseLabels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut labels = LeaseLabels::default();
        for (k, v) in iter {
            labels.insert(k, v);
        }
        labels.0.shrink_to_fit();
        labels
    }
}

impl From<BTreeMap<String, String>> for LeaseLabels {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique.
        LeaseLabels(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for LeaseLabels {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<&LeaseLabels> for BTreeMap<String, String> {
    fn from(labels: &LeaseLabels) -> Self {
        labels.0.iter().cloned().collect()
    }
}

impl LeaseRecord {
    /// The holder, with an empty string read as "no holder".
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }

    /// The resourceVersion, or `""` when unknown.
    pub fn rv(&self) -> &str {
        self.resource_version.as_deref().unwrap_or("")
    }

    /// Fills the informational wall-clock fields before a write: `renewTime` = now, `acquireTime` = now when the
    /// holder changed (the core clears it then), nothing when the lease is released.
    pub fn stamp(&mut self, now: SystemTime) {
        if self.holder().is_some() {
            self.renew_time = Some(now);
            self.acquire_time.get_or_insert(now);
        } else {
            self.acquire_time = None;
            self.renew_time = None;
        }
    }
}

/// Why a lease operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `get` of a lease that does not exist (HTTP 404).
    #[error("lease {name} does not exist")]
    NotFound { name: String },
    /// `create` of a lease that exists already (HTTP 409 AlreadyExists): someone else created it first.
    #[error("lease {name} already exists (created concurrently by another agent)")]
    AlreadyExists { name: String },
    /// `replace` whose resourceVersion is stale (HTTP 409 Conflict, or 404 because it was deleted): the lease changed
    /// since it was read, the write lost the race.
    #[error("lease {name} changed since it was read (resourceVersion conflict); the write lost the race")]
    Conflict { name: String },
    /// The API server could not be reached or answered 429/5xx, or the request timed out. Retried with backoff.
    #[error("lease API unavailable: {reason}")]
    Unavailable { reason: String },
    /// The API server refused the request (403 Forbidden, 422 Invalid, ...). Needs a fix of RBAC or input.
    #[error(
        "lease {name} rejected by the API server: {reason} (check the agent's RBAC for coordination.k8s.io leases)"
    )]
    Rejected { name: String, reason: String },
}

impl StoreError {
    /// Lost a race (AlreadyExists/Conflict) as opposed to a failure to talk to the API.
    pub fn is_lost_race(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. } | Self::Conflict { .. })
    }
}

/// What the lease watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A lease was created or changed.
    Applied(LeaseRecord),
    /// A lease was deleted.
    Deleted { name: String },
    /// The watch (re)listed: this is the complete set of labelled leases; any other is gone.
    Resynced(Vec<LeaseRecord>),
    /// The watch failed; it is retried with backoff by the store.
    Error(StoreError),
}

/// Lease persistence with resourceVersion compare-and-swap, as the API server provides it.
///
/// Implementations: [`crate::KubeLeaseStore`] (API server) and [`crate::MemoryLeaseStore`] (tests, simulations).
pub trait LeaseStore: Send + Sync + 'static {
    /// Reads one lease with a linearizable (quorum) read. `NotFound` when absent.
    fn get(&self, name: &str) -> impl Future<Output = Result<LeaseRecord, StoreError>> + Send;
    /// Creates a lease (`resource_version` ignored). `AlreadyExists` when it exists.
    fn create(&self, record: &LeaseRecord) -> impl Future<Output = Result<LeaseRecord, StoreError>> + Send;
    /// Replaces a lease if its resourceVersion still equals `record.resource_version`; `Conflict` otherwise.
    fn replace(&self, record: &LeaseRecord) -> impl Future<Output = Result<LeaseRecord, StoreError>> + Send;
    /// Deletes a lease only if its resourceVersion still equals `resource_version` (the version that was judged; a
    /// `DeleteOptions` precondition on the API server): `Conflict` when it was written since, `NotFound` when it is
    /// gone. A holder change is a write, so the holder is covered too. Only the lease collector deletes.
    fn delete(&self, name: &str, resource_version: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// One watch on every lease labelled `herald.dev/lease`, starting with a [`WatchEvent::Resynced`]. The stream
    /// never ends on errors: it reports them and retries with backoff.
    fn watch(&self) -> BoxStream<'static, WatchEvent>;
    /// One watch on the lease `name` alone, labelled or not (the leader lock's), starting with a
    /// [`WatchEvent::Resynced`] holding it (empty while it does not exist). Never ends on errors, like [`watch`].
    ///
    /// [`watch`]: LeaseStore::watch
    fn watch_one(&self, name: &str) -> BoxStream<'static, WatchEvent>;
}

/// Compares two resourceVersions: `Some` ordering when both are decimal integers (etcd revisions, as every API server
/// in practice uses), `None` when they are opaque. Used only to ignore watch events older than a write result the
/// agent already knows; correctness never depends on it (the CAS does).
pub fn rv_cmp(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    Some(a.parse::<u64>().ok()?.cmp(&b.parse::<u64>().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_labels_stay_sorted_unique_and_round_trip() {
        let mut labels: LeaseLabels = [
            ("herald.dev/lease".to_owned(), "ip".to_owned()),
            ("herald.dev/eip".to_owned(), "a".to_owned()),
        ]
        .into();
        labels.insert("herald.dev/eip".into(), "b".into());
        labels.insert("herald.dev/ip".into(), "192-0-2-1".into());
        assert_eq!(labels.get("herald.dev/eip"), Some("b"), "insert replaces");
        assert!(labels.contains_key("herald.dev/lease") && !labels.contains_key("herald.dev/node"));
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["herald.dev/eip", "herald.dev/ip", "herald.dev/lease"]);
        let map = BTreeMap::from(&labels);
        assert_eq!(LeaseLabels::from(map.clone()), labels);
        assert_eq!(map.len(), 3);
        labels.clear();
        assert!(labels.is_empty());
    }
}
