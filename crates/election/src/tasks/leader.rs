//! The leader-lock task: the single `herald-allocator` Lease, held by one agent at a time ([`LeaderLockCore`] decides,
//! this shell performs its reads and writes and hands out a token per leadership term).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{FAILURE_LOG_INTERVAL, log_failure, with_timeout};
use crate::error::{Error, Result};
use crate::leader::{LeaderLockCore, LeaderTiming, LockAction};
use crate::lease::{LeaseRecord, LeaseStore, StoreError};
use crate::log_throttle::LogThrottle;
use crate::naming;
use crate::ownership::OpId;

/// Configuration of a [`LeaderLock`].
#[derive(Debug, Clone)]
pub struct LeaderLockConfig {
    /// Lease name (default `herald-allocator`).
    pub lease_name: String,
    /// `holderIdentity` (e.g. [`Identity::holder`]).
    pub holder: String,
    pub timing: LeaderTiming,
}

impl LeaderLockConfig {
    /// The allocator's lock with the election's default timing (3 s / 2 s / 1 s, see [`LeaderTiming`]).
    pub fn allocator(holder: impl Into<String>) -> Self {
        Self {
            lease_name: naming::ALLOCATOR_LEASE.to_owned(),
            holder: holder.into(),
            timing: LeaderTiming::default(),
        }
    }
}

/// Spawns the leader-lock task.
pub struct LeaderLock;

impl LeaderLock {
    /// Validates the timing and starts competing for the lease. Cancelling `shutdown` (the task runs on a child of
    /// it) or calling [`LeaderLockHandle::shutdown`] steps down and releases the lease.
    pub fn spawn<S: LeaseStore>(
        store: S,
        config: LeaderLockConfig,
        shutdown: &CancellationToken,
    ) -> Result<LeaderLockHandle> {
        let timing = config.timing.validate()?;
        let cancel = shutdown.child_token();
        let (leading_tx, leading_rx) = watch::channel(false);
        let (term_tx, term_rx) = watch::channel(None);
        let core = LeaderLockCore::new(config.lease_name.clone(), config.holder.clone(), timing);
        let task = tokio::spawn(run_leader(
            core,
            Arc::new(store),
            config,
            leading_tx,
            term_tx,
            cancel.clone(),
        ));
        Ok(LeaderLockHandle {
            leading: leading_rx,
            term: term_rx,
            cancel,
            task,
        })
    }
}

/// Handle on a [`LeaderLock`] task.
#[derive(Debug)]
pub struct LeaderLockHandle {
    leading: watch::Receiver<bool>,
    term: watch::Receiver<Option<CancellationToken>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl LeaderLockHandle {
    /// Whether this process leads right now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// A watch of the leadership flag.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Waits until this process leads and returns a token that is cancelled the moment leadership ends (deadline
    /// passed, lost race, shutdown). `None` once the lock has stopped.
    pub async fn acquired(&mut self) -> Option<CancellationToken> {
        let term = self
            .term
            .wait_for(|t| t.as_ref().is_some_and(|t| !t.is_cancelled()))
            .await
            .ok()?;
        term.clone()
    }

    /// Runs `work` during every leadership term: `work` gets the term's token and must return soon after it is
    /// cancelled. Returns when the lock stops.
    pub async fn run_while_leader<F, Fut>(&mut self, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        while let Some(term) = self.acquired().await {
            work(term).await;
        }
    }

    /// Steps down, releases the lease and waits for the task to end.
    pub async fn shutdown(self) -> Result<()> {
        self.cancel.cancel();
        self.task.await.map_err(Error::Task)
    }
}

async fn run_leader<S: LeaseStore>(
    mut core: LeaderLockCore,
    store: Arc<S>,
    config: LeaderLockConfig,
    leading: watch::Sender<bool>,
    term: watch::Sender<Option<CancellationToken>>,
    cancel: CancellationToken,
) {
    let lease = config.lease_name.as_str();
    let timeout = config.timing.renew_deadline / 2;
    let mut ops: JoinSet<(OpId, Result<LeaseRecord, StoreError>)> = JoinSet::new();
    let mut stop_deadline: Option<Instant> = None;
    let mut failures = LogThrottle::new(FAILURE_LOG_INTERVAL);
    // The lease's own watch: renewals seen as they happen, so a dead leader is replaced `lease_duration` after its
    // last renewal instead of up to a retry period later. Reads still decide every takeover.
    let mut watch = store.watch_one(lease);
    loop {
        let now = Instant::now();
        // Step down (cancel the term) before any release write is sent.
        let is_leader = core.is_leader(now);
        if leading.send_if_modified(|l| std::mem::replace(l, is_leader) != is_leader) {
            if is_leader {
                info!(lease, holder = %config.holder, "became leader");
                term.send_replace(Some(CancellationToken::new()));
            } else {
                info!(lease, holder = %config.holder, "stepped down");
                if let Some(t) = term.send_replace(None) {
                    t.cancel();
                }
            }
        }
        if let Some(action) = core.poll(now) {
            let store = Arc::clone(&store);
            ops.spawn(async move {
                match action {
                    LockAction::Get { op, name } => (op, with_timeout(timeout, &name, store.get(&name)).await),
                    LockAction::Create { op, mut record } => {
                        record.stamp(SystemTime::now());
                        (op, with_timeout(timeout, &record.name, store.create(&record)).await)
                    }
                    LockAction::Replace { op, mut record } => {
                        record.stamp(SystemTime::now());
                        (op, with_timeout(timeout, &record.name, store.replace(&record)).await)
                    }
                }
            });
        }
        if core.is_done() {
            break;
        }
        let wake = core.next_wakeup().unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            biased;
            () = cancel.cancelled(), if stop_deadline.is_none() => {
                core.begin_release(Instant::now());
                stop_deadline = Some(Instant::now() + config.timing.renew_deadline);
            }
            () = sleep_until(stop_deadline.unwrap_or(wake)), if stop_deadline.is_some() => {
                warn!(lease, "could not release the leader lease in time; it expires by observation");
                break;
            }
            Some(done) = ops.join_next() => match done {
                Ok((op, result)) => {
                    match &result {
                        Err(e) if !e.is_lost_race() && !matches!(e, StoreError::NotFound { .. }) => {
                            log_failure(&mut failures, lease, e, "leader lease operation failed");
                        }
                        _ => {
                            if let Some(failures) = failures.success() {
                                info!(lease, failures, "leader lease operations succeed again");
                            }
                        }
                    }
                    core.op_done(Instant::now(), op, result);
                }
                Err(e) => warn!(lease, error = %e, "leader lease task failed"),
            },
            Some(event) = watch.next() => core.watched(Instant::now(), &event),
            () = sleep_until(wake) => {}
        }
    }
    leading.send_replace(false);
    if let Some(t) = term.send_replace(None) {
        t.cancel();
    }
}
