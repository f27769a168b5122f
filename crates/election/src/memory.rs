//! An in-memory [`LeaseStore`] with the API server's resourceVersion semantics, for tests and simulations.
//!
//! Every write bumps one store-wide revision (like etcd), `create` of an existing name is `AlreadyExists`, `replace`
//! with a stale or missing resourceVersion is `Conflict`, as is a `delete` whose resourceVersion precondition fails;
//! `get` (and `delete`) of a missing name is `NotFound`. Handles made with
//! [`MemoryLeaseStore::client`] share the data but can be cut off individually ([`MemoryLeaseStore::set_reachable`])
//! to model partitions: their calls fail with `Unavailable` and their watch delivers nothing until it resyncs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use crate::lease::{LeaseRecord, LeaseStore, StoreError, WatchEvent};
use crate::naming::LEASE_KIND_LABEL;

/// Request counters of a [`MemoryLeaseStore`] (all clients together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub gets: u64,
    pub creates: u64,
    pub replaces: u64,
    pub deletes: u64,
    /// Writes refused with `Conflict` or `AlreadyExists`.
    pub lost_races: u64,
}

struct Inner {
    leases: BTreeMap<String, LeaseRecord>,
    revision: u64,
    unreachable: BTreeSet<String>,
    stats: StoreStats,
    /// Each change with the clients that were partitioned when it happened (they never see it, only a resync).
    changes: broadcast::Sender<(WatchEvent, Arc<BTreeSet<String>>)>,
}

/// See the module documentation.
#[derive(Clone)]
pub struct MemoryLeaseStore {
    inner: Arc<Mutex<Inner>>,
    client: Arc<str>,
}

impl Default for MemoryLeaseStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLeaseStore {
    /// An empty store; this handle is the client named `""`.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(4096);
        let inner = Inner {
            leases: BTreeMap::new(),
            revision: 0,
            unreachable: BTreeSet::new(),
            stats: StoreStats::default(),
            changes,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            client: Arc::from(""),
        }
    }

    /// A handle on the same data for the client `name` (whose reachability can be controlled).
    pub fn client(&self, name: &str) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            client: Arc::from(name),
        }
    }

    /// Cuts client `name` off from the store, or reconnects it.
    pub fn set_reachable(&self, name: &str, reachable: bool) {
        let mut inner = self.lock();
        if reachable {
            inner.unreachable.remove(name);
        } else {
            inner.unreachable.insert(name.to_owned());
        }
    }

    /// Whether client `name` can reach the store.
    pub fn is_reachable(&self, name: &str) -> bool {
        !self.lock().unreachable.contains(name)
    }

    /// Request counters.
    pub fn stats(&self) -> StoreStats {
        self.lock().stats
    }

    /// Every lease, regardless of reachability (for assertions).
    pub fn snapshot(&self) -> Vec<LeaseRecord> {
        self.lock().leases.values().cloned().collect()
    }

    /// One lease, regardless of reachability (for assertions).
    pub fn peek(&self, name: &str) -> Option<LeaseRecord> {
        self.lock().leases.get(name).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock can only come from a test assertion; keep the data usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reachable(&self, inner: &Inner) -> Result<(), StoreError> {
        if inner.unreachable.contains(&*self.client) {
            Err(StoreError::Unavailable {
                reason: format!("client {:?} is partitioned from the store", self.client),
            })
        } else {
            Ok(())
        }
    }

    /// Synchronous `get` (for sans-IO simulations).
    pub fn get_now(&self, name: &str) -> Result<LeaseRecord, StoreError> {
        let mut inner = self.lock();
        self.reachable(&inner)?;
        inner.stats.gets += 1;
        inner
            .leases
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound { name: name.to_owned() })
    }

    /// Synchronous `create`.
    pub fn create_now(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        let mut inner = self.lock();
        self.reachable(&inner)?;
        inner.stats.creates += 1;
        if inner.leases.contains_key(&record.name) {
            inner.stats.lost_races += 1;
            return Err(StoreError::AlreadyExists {
                name: record.name.clone(),
            });
        }
        Ok(Self::commit(&mut inner, record))
    }

    /// Synchronous `replace` (compare-and-swap on the resourceVersion).
    pub fn replace_now(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        let mut inner = self.lock();
        self.reachable(&inner)?;
        inner.stats.replaces += 1;
        let current = inner.leases.get(&record.name).map(|l| l.resource_version.clone());
        if current.is_none() || current != Some(record.resource_version.clone()) || record.resource_version.is_none() {
            inner.stats.lost_races += 1;
            return Err(StoreError::Conflict {
                name: record.name.clone(),
            });
        }
        Ok(Self::commit(&mut inner, record))
    }

    /// Synchronous `delete` with a resourceVersion precondition.
    pub fn delete_now(&self, name: &str, resource_version: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        self.reachable(&inner)?;
        inner.stats.deletes += 1;
        let current = inner.leases.get(name).map(|l| l.rv().to_owned());
        match current {
            None => Err(StoreError::NotFound { name: name.to_owned() }),
            Some(rv) if rv != resource_version => {
                inner.stats.lost_races += 1;
                Err(StoreError::Conflict { name: name.to_owned() })
            }
            Some(_) => {
                inner.leases.remove(name);
                inner.revision += 1;
                let cut = Arc::new(inner.unreachable.clone());
                let _ = inner.changes.send((WatchEvent::Deleted { name: name.to_owned() }, cut));
                Ok(())
            }
        }
    }

    fn commit(inner: &mut Inner, record: &LeaseRecord) -> LeaseRecord {
        inner.revision += 1;
        let mut stored = record.clone();
        stored.resource_version = Some(inner.revision.to_string());
        inner.leases.insert(stored.name.clone(), stored.clone());
        let cut = Arc::new(inner.unreachable.clone());
        let _ = inner.changes.send((WatchEvent::Applied(stored.clone()), cut));
        stored
    }

    fn labelled(inner: &Inner) -> Vec<LeaseRecord> {
        inner
            .leases
            .values()
            .filter(|l| l.labels.contains_key(LEASE_KIND_LABEL))
            .cloned()
            .collect()
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn watch_one(&self, name: &str) -> BoxStream<'static, WatchEvent> {
        let name = name.to_owned();
        // The lease from every event about it; a resync holds it alone.
        self.watch_changes(false)
            .filter_map(move |event| {
                let out = match event {
                    WatchEvent::Applied(r) if r.name == name => Some(WatchEvent::Applied(r)),
                    WatchEvent::Deleted { name: n } if n == name => Some(WatchEvent::Deleted { name: n }),
                    WatchEvent::Resynced(all) => Some(WatchEvent::Resynced(
                        all.into_iter().filter(|r| r.name == name).collect(),
                    )),
                    WatchEvent::Error(e) => Some(WatchEvent::Error(e)),
                    _ => None,
                };
                std::future::ready(out)
            })
            .boxed()
    }

    async fn get(&self, name: &str) -> Result<LeaseRecord, StoreError> {
        self.get_now(name)
    }

    async fn create(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        self.create_now(record)
    }

    async fn replace(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        self.replace_now(record)
    }

    async fn delete(&self, name: &str, resource_version: &str) -> Result<(), StoreError> {
        self.delete_now(name, resource_version)
    }

    fn watch(&self) -> BoxStream<'static, WatchEvent> {
        self.watch_changes(true)
    }
}

impl MemoryLeaseStore {
    /// The store's changes as a watch would deliver them: every lease, or only the labelled ones.
    fn watch_changes(&self, labelled_only: bool) -> BoxStream<'static, WatchEvent> {
        let rx = self.lock().changes.subscribe();
        let this = self.clone();
        // State: receiver, and whether the next delivered event must be a full resync (start, lag, partition).
        futures::stream::unfold((rx, true), move |(mut rx, mut resync)| {
            let this = this.clone();
            async move {
                loop {
                    if resync {
                        let inner = this.lock();
                        if this.reachable(&inner).is_ok() {
                            let all = if labelled_only {
                                Self::labelled(&inner)
                            } else {
                                inner.leases.values().cloned().collect()
                            };
                            drop(inner);
                            return Some((WatchEvent::Resynced(all), (rx, false)));
                        }
                    }
                    let (event, cut) = match rx.recv().await {
                        Ok(change) => change,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            resync = true;
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    if cut.contains(&*this.client) || !this.is_reachable(&this.client) {
                        resync = true;
                        continue;
                    }
                    if resync {
                        continue; // the resync at the top of the loop includes this change
                    }
                    let labelled = match &event {
                        WatchEvent::Applied(l) => !labelled_only || l.labels.contains_key(LEASE_KIND_LABEL),
                        _ => true,
                    };
                    if labelled {
                        return Some((event, (rx, false)));
                    }
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, holder: &str) -> LeaseRecord {
        LeaseRecord {
            name: name.into(),
            holder: Some(holder.into()),
            ..Default::default()
        }
    }

    #[test]
    fn cas_semantics() {
        let s = MemoryLeaseStore::new();
        assert_eq!(s.get_now("x"), Err(StoreError::NotFound { name: "x".into() }));
        let a = s.create_now(&lease("x", "a")).unwrap();
        assert_eq!(a.rv(), "1");
        assert_eq!(
            s.create_now(&lease("x", "b")),
            Err(StoreError::AlreadyExists { name: "x".into() })
        );
        let mut b = a.clone();
        b.holder = Some("b".into());
        let b = s.replace_now(&b).unwrap();
        assert_eq!(b.rv(), "2");
        // Stale resourceVersion, and no resourceVersion at all, both lose.
        let mut stale = a.clone();
        stale.holder = Some("c".into());
        assert_eq!(s.replace_now(&stale), Err(StoreError::Conflict { name: "x".into() }));
        stale.resource_version = None;
        assert_eq!(s.replace_now(&stale), Err(StoreError::Conflict { name: "x".into() }));
        assert_eq!(s.get_now("x").unwrap().holder(), Some("b"));
        assert_eq!(s.stats().lost_races, 3);
    }

    #[test]
    fn delete_only_removes_the_judged_version() {
        let s = MemoryLeaseStore::new();
        let a = s.create_now(&lease("x", "a")).unwrap();
        let mut b = a.clone();
        b.holder = Some("b".into());
        let b = s.replace_now(&b).unwrap();
        assert_eq!(
            s.delete_now("x", a.rv()),
            Err(StoreError::Conflict { name: "x".into() })
        );
        assert_eq!(
            s.peek("x").unwrap().holder(),
            Some("b"),
            "written since it was judged: kept"
        );
        assert_eq!(s.delete_now("x", b.rv()), Ok(()));
        assert_eq!(s.peek("x"), None);
        assert_eq!(
            s.delete_now("x", b.rv()),
            Err(StoreError::NotFound { name: "x".into() })
        );
        assert_eq!(s.stats().deletes, 3);
    }

    #[test]
    fn partitioned_client_is_unavailable() {
        let s = MemoryLeaseStore::new();
        let c = s.client("n1");
        s.set_reachable("n1", false);
        assert!(matches!(c.get_now("x"), Err(StoreError::Unavailable { .. })));
        assert!(s.create_now(&lease("x", "a")).is_ok());
        s.set_reachable("n1", true);
        assert_eq!(c.get_now("x").unwrap().holder(), Some("a"));
    }

    #[tokio::test]
    async fn watch_starts_with_resync_and_resyncs_after_partition() {
        let s = MemoryLeaseStore::new();
        let mut l = lease("herald-node-a", "a/1");
        l.labels.insert(LEASE_KIND_LABEL.into(), "node".into());
        s.create_now(&l).unwrap();
        let c = s.client("n1");
        let mut w = c.watch();
        assert!(matches!(w.next().await, Some(WatchEvent::Resynced(v)) if v.len() == 1));
        let mut l2 = l.clone();
        l2.name = "herald-node-b".into();
        s.create_now(&l2).unwrap();
        assert!(matches!(w.next().await, Some(WatchEvent::Applied(r)) if r.name == "herald-node-b"));
        s.set_reachable("n1", false);
        l2.name = "herald-node-c".into();
        s.create_now(&l2).unwrap();
        s.set_reachable("n1", true);
        l2.name = "herald-node-d".into();
        s.create_now(&l2).unwrap();
        assert!(matches!(w.next().await, Some(WatchEvent::Resynced(v)) if v.len() == 4));
    }
}
