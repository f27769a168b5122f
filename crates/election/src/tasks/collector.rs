//! The lease collector's shell: deletes the Leases [`LeaseCollector`] finds unused, each only after a fresh check of
//! its holder and with the judged resourceVersion as precondition.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::gc::{self, Collect, GcInput, LeaseCollector, LeaseView};
use crate::lease::{LeaseStore, StoreError};

/// Lease deletions in flight at once.
const GC_DELETES_IN_FLIGHT: usize = 16;

/// How one deletion went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    /// Deleted at the judged resourceVersion.
    Deleted,
    /// The precondition failed or the Lease is gone: someone wrote or deleted it meanwhile.
    Kept(StoreError),
    /// The holder's node lease changed after all (our watch is behind); the Lease's window starts again.
    HolderRenewed,
    /// The read or the delete failed; a later sweep tries again.
    Failed(StoreError),
}

/// What one sweep did.
#[derive(Debug)]
pub struct Sweep {
    /// Each Lease that was due, with what became of it.
    pub results: Vec<(Collect, Collected)>,
    /// When to sweep next (see [`gc::next_sweep`]).
    pub next: Instant,
}

/// The shell of the lease collector ([`LeaseCollector`]): asks the core what is due, checks holders and deletes
/// through a [`LeaseStore`], each delete conditional on the judged resourceVersion. The caller decides when it runs
/// (only while leading, at [`Sweep::next`]) and says what is in use; it counts the results.
pub struct UnusedLeases<S> {
    core: LeaseCollector,
    store: S,
    /// At most this many deletions per sweep (a first sweep after an upgrade may find thousands; the rest go in the
    /// next ones, so the caller is never held up for long).
    per_sweep: usize,
    /// Sweeps in a row in which a deletion failed: the next sweep backs off exponentially.
    failed_sweeps: u32,
    /// A refusal (403: a Role without `delete`) is reported once with the fix, not on every sweep.
    rejected_reported: bool,
}

impl<S: LeaseStore> UnusedLeases<S> {
    /// A collector that deletes, through `store`, Leases found collectable for `grace`, at most `per_sweep` a sweep.
    pub fn new(store: S, grace: Duration, per_sweep: usize) -> Self {
        Self {
            core: LeaseCollector::new(grace),
            store,
            per_sweep: per_sweep.max(1),
            failed_sweeps: 0,
            rejected_reported: false,
        }
    }

    /// See [`LeaseCollector::in_use_until`].
    pub fn in_use_until<'a>(&mut self, freed: impl IntoIterator<Item = (&'a str, &'a str)>, now: Instant) {
        self.core.in_use_until(freed, now);
    }

    /// One sweep at `now`: observe `input`, check and delete what is due.
    pub async fn sweep(&mut self, input: &GcInput, now: Instant) -> Sweep {
        let mut due = self.core.sweep(input, now);
        due.truncate(self.per_sweep);
        let store = &self.store;
        let results: Vec<(Collect, Collected)> = futures::stream::iter(due)
            .map(|c| async move {
                let result = delete_unused(store, &c).await;
                (c, result)
            })
            .buffer_unordered(GC_DELETES_IN_FLIGHT)
            .collect()
            .await;
        let mut failed = false;
        for (c, result) in &results {
            let kind = c.kind.as_str();
            match result {
                Collected::Deleted => info!(lease = %c.name, kind, reason = %c.reason, "deleted an unused Lease"),
                Collected::Kept(why) => debug!(lease = %c.name, kind, why = %why, "Lease changed meanwhile; kept"),
                Collected::HolderRenewed => {
                    debug!(lease = %c.name, "the holder renewed after all; kept");
                    self.core.postpone(&c.name, now);
                }
                Collected::Failed(e @ StoreError::Rejected { .. }) => {
                    failed = true;
                    if !std::mem::replace(&mut self.rejected_reported, true) {
                        warn!(
                            lease = %c.name,
                            error = %e,
                            "cannot delete unused Leases: grant the agent's Role `delete` on coordination.k8s.io \
                             leases (deploy/herald.yaml), or run with --lease-gc-after=0"
                        );
                    }
                }
                Collected::Failed(e) => {
                    failed = true;
                    warn!(lease = %c.name, error = %e, "cannot delete an unused Lease; retrying later");
                }
            }
        }
        self.failed_sweeps = if failed {
            self.failed_sweeps.saturating_add(1)
        } else {
            0
        };
        let next = gc::next_sweep(now, self.core.next_due(input), self.core.grace(), self.failed_sweeps);
        Sweep { results, next }
    }
}

/// Deletes one due Lease: first the holder check (a quorum read of the holder's node lease), then a delete with the
/// judged resourceVersion as precondition.
async fn delete_unused<S: LeaseStore>(store: &S, c: &Collect) -> Collected {
    if let Some(check) = &c.holder_check {
        let fresh = match store.get(&check.node_lease).await {
            Ok(record) => Some(LeaseView::from(&record)),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Collected::Failed(e),
        };
        if !check.passes(fresh.as_ref()) {
            return Collected::HolderRenewed;
        }
    }
    match store.delete(&c.name, &c.resource_version).await {
        Ok(()) => Collected::Deleted,
        Err(e @ (StoreError::Conflict { .. } | StoreError::NotFound { .. })) => Collected::Kept(e),
        Err(e) => Collected::Failed(e),
    }
}
