//! The async shells: one task per protocol instance owns the sans-IO core, performs the lease operations it asks for
//! (each as a child future with a timeout), feeds it the watch, and delivers decisions. Every task is owned by a
//! handle and stops through a `CancellationToken`; channels are bounded.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::identity::{Identity, holder_node};
use crate::lease::{LeaseRecord, LeaseStore, StoreError, WatchEvent};
use crate::log_throttle::{LogThrottle, OnFailure};
use crate::metrics::{ElectionMetrics, MetricsSnapshot};
use crate::naming;
use crate::ownership::{Action, Announce, IpDesire, OpId, OutagePolicy, OwnershipCore};
use crate::timing::ElectionTiming;

mod collector;
mod leader;

pub use collector::{Collected, Sweep, UnusedLeases};
pub use leader::{LeaderLock, LeaderLockConfig, LeaderLockHandle};

/// Where announce/withdraw decisions go (the L2 engine, through the agent).
///
/// `withdraw` must complete only once the IP is no longer answered: the election releases a lease right after a
/// withdrawal, and the next holder starts announcing as soon as it sees the release.
pub trait AnnouncementSink: Send + 'static {
    /// Start answering ARP/NDP for an IP (and send the takeover burst, or probe first when no agent held it before).
    fn announce(&mut self, announce: Announce) -> impl Future<Output = ()> + Send;
    /// Stop answering ARP/NDP for `ip`; return when done.
    fn withdraw(&mut self, ip: IpAddr) -> impl Future<Output = ()> + Send;
}

/// Ownership news for Events, annotations and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnershipEvent {
    /// The holder of a desired IP changed (`holder` is `<node>/<instance>`, `node` its node part).
    OwnerChanged {
        ip: IpAddr,
        holder: Option<String>,
        node: Option<String>,
        is_self: bool,
        was_self: bool,
    },
    /// This instance withdrew `ip` because another MAC claimed it on the wire.
    WireYield { ip: IpAddr },
    /// Another instance on this node took over the node lease; this task withdrew everything and stopped.
    Superseded { by: String },
}

/// Configuration of an [`OwnershipAgent`].
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    pub identity: Identity,
    pub timing: ElectionTiming,
    pub outage: OutagePolicy,
    /// Upper bound for the graceful stop (withdraw, releases); afterwards the task withdraws what is left and ends.
    pub shutdown_timeout: Duration,
    /// Capacity of the [`OwnershipEvent`] channel (events beyond it are dropped and counted, never blocking the
    /// protocol).
    pub event_capacity: usize,
}

impl OwnershipConfig {
    /// Defaults: timing 1 s / 3 s / 2 s / 50 ms, `--api-outage=hold`, 10 s shutdown bound, 1024 events.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            timing: ElectionTiming::default(),
            outage: OutagePolicy::Hold,
            shutdown_timeout: Duration::from_secs(10),
            event_capacity: 1024,
        }
    }
}

enum Command {
    SetDesired(IpAddr, IpDesire),
    RemoveDesired(IpAddr),
    WireConflict(IpAddr),
}

/// Spawns the per-IP ownership task.
pub struct OwnershipAgent;

impl OwnershipAgent {
    /// Validates the timing and starts the task on the current tokio runtime. Cancelling `shutdown` (the agent's
    /// token; the task runs on a child of it), calling [`OwnershipHandle::shutdown`] or dropping the handle runs the
    /// graceful stop.
    pub fn spawn<S: LeaseStore, A: AnnouncementSink>(
        store: S,
        sink: A,
        config: OwnershipConfig,
        shutdown: &CancellationToken,
    ) -> Result<(OwnershipHandle, mpsc::Receiver<OwnershipEvent>)> {
        let timing = config.timing.validate()?;
        let cancel = shutdown.child_token();
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity.max(1));
        let (announced_tx, announced_rx) = watch::channel(BTreeSet::new());
        let metrics = Arc::new(ElectionMetrics::default());
        let task = OwnershipTask {
            core: OwnershipCore::new(config.identity.clone(), timing, config.outage),
            store: Arc::new(store),
            sink,
            timing,
            shutdown_timeout: config.shutdown_timeout,
            commands: cmd_rx,
            events: event_tx,
            announced: announced_tx,
            metrics: Arc::clone(&metrics),
            cancel: cancel.clone(),
            ip_ops: IpOps::default(),
            failures: LogThrottle::new(FAILURE_LOG_INTERVAL),
        };
        let join = tokio::spawn(task.run());
        Ok((
            OwnershipHandle {
                commands: cmd_tx,
                cancel,
                task: join,
                metrics,
                announced: announced_rx,
            },
            event_rx,
        ))
    }
}

/// The agent's handle on the ownership task.
#[derive(Debug)]
pub struct OwnershipHandle {
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    metrics: Arc<ElectionMetrics>,
    announced: watch::Receiver<BTreeSet<IpAddr>>,
}

impl OwnershipHandle {
    /// Declares or updates an IP and its eligible nodes (call again on any eligibility or link change).
    pub async fn set_desired(&self, ip: IpAddr, desire: IpDesire) -> Result<()> {
        naming::ip_lease_name(ip)?;
        self.send(Command::SetDesired(ip, desire)).await
    }

    /// The IP is no longer wanted; if held here it is withdrawn and released.
    pub async fn remove_desired(&self, ip: IpAddr) -> Result<()> {
        self.send(Command::RemoveDesired(ip)).await
    }

    /// The L2 engine saw another MAC answer for `ip`: withdraw it now.
    pub async fn wire_conflict(&self, ip: IpAddr) -> Result<()> {
        self.send(Command::WireConflict(ip)).await
    }

    /// The IPs announced right now (updated after each decision).
    pub fn announced(&self) -> watch::Receiver<BTreeSet<IpAddr>> {
        self.announced.clone()
    }

    /// Current counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The counters, shared (for a Prometheus collector that reads them at scrape time).
    pub fn metrics_handle(&self) -> Arc<ElectionMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Graceful stop: withdraw every IP, release every IP lease, release the node lease; returns when done (or after
    /// the configured shutdown timeout).
    pub async fn shutdown(self) -> Result<()> {
        self.cancel.cancel();
        self.task.await.map_err(Error::Task)
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        self.commands.send(cmd).await.map_err(|_| Error::Stopped)
    }
}

struct OwnershipTask<S, A> {
    core: OwnershipCore,
    store: Arc<S>,
    sink: A,
    timing: ElectionTiming,
    shutdown_timeout: Duration,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<OwnershipEvent>,
    announced: watch::Sender<BTreeSet<IpAddr>>,
    metrics: Arc<ElectionMetrics>,
    cancel: CancellationToken,
    /// IP-lease operations waiting for a slot, and how many are in flight; node-lease operations never wait.
    ip_ops: IpOps,
    /// Failed lease operations, logged once and then summarised (they share a cause: the API server).
    failures: LogThrottle,
}

type OpResult = (OpId, String, Result<LeaseRecord, StoreError>);

impl<S: LeaseStore, A: AnnouncementSink> OwnershipTask<S, A> {
    /// Starts `op` now if it is a node-lease operation (the renew must never queue) or an IP-lease slot is free;
    /// else it waits, as the small description it is (a started operation is a task of a few KiB: a burst of a few
    /// thousand IPs must not hold a task per waiting operation).
    fn submit(&mut self, op: LeaseOp, ops: &mut JoinSet<OpResult>) {
        if is_node_lease(op.name()) {
            self.start(op, ops, self.timing.renew_deadline);
        } else {
            self.ip_ops.waiting.push_back(op);
            self.start_waiting(ops);
        }
    }

    /// Starts waiting IP-lease operations while slots are free, oldest first.
    fn start_waiting(&mut self, ops: &mut JoinSet<OpResult>) {
        while self.ip_ops.in_flight.len() < IP_OPS_IN_FLIGHT
            && let Some(op) = self.ip_ops.waiting.pop_front()
        {
            // IP-lease writes get 4× the node-lease timeout: a late answer is safe (every write is a
            // compare-and-swap), whereas giving up early turns a slow success into a retry and a 409.
            let task = self.start(op, ops, self.timing.renew_deadline * 4);
            self.ip_ops.in_flight.insert(task);
        }
    }

    /// Sends `op`; its timeout starts now. A write's renew time is stamped as it is sent.
    fn start(&self, op: LeaseOp, ops: &mut JoinSet<OpResult>, timeout: Duration) -> tokio::task::Id {
        let store = Arc::clone(&self.store);
        let task = match op {
            LeaseOp::Get { op, name } => ops.spawn(async move {
                let result = with_timeout(timeout, &name, store.get(&name)).await;
                (op, name, result)
            }),
            LeaseOp::Create { op, mut record } => {
                record.stamp(SystemTime::now());
                ops.spawn(async move {
                    let result = with_timeout(timeout, &record.name, store.create(&record)).await;
                    (op, record.name, result)
                })
            }
            LeaseOp::Replace { op, mut record } => {
                record.stamp(SystemTime::now());
                ops.spawn(async move {
                    let result = with_timeout(timeout, &record.name, store.replace(&record)).await;
                    (op, record.name, result)
                })
            }
        };
        task.id()
    }

    async fn run(mut self) {
        let node = self.core.identity().node().to_owned();
        info!(node = %node, holder = %self.core.identity(), "ownership election started");
        let mut watch = self.store.watch();
        let mut watch_open = true;
        let mut commands_open = true;
        let mut ops: JoinSet<OpResult> = JoinSet::new();
        let mut stop_deadline: Option<Instant> = None;
        let far = Duration::from_secs(3600);
        loop {
            let now = Instant::now();
            let actions = self.core.poll(now);
            if self.execute(actions, &mut ops).await {
                break;
            }
            self.start_waiting(&mut ops);
            let wake = self.core.next_wakeup().unwrap_or(now + far);
            tokio::select! {
                biased;
                () = self.cancel.cancelled(), if stop_deadline.is_none() => {
                    info!(node = %node, "graceful stop: withdrawing and releasing leases");
                    self.core.begin_shutdown(Instant::now());
                    stop_deadline = Some(Instant::now() + self.shutdown_timeout);
                }
                () = sleep_until(stop_deadline.unwrap_or(now + far)), if stop_deadline.is_some() => {
                    warn!(node = %node, timeout = ?self.shutdown_timeout,
                        "graceful stop did not finish (API unreachable?); leases will expire by observation");
                    break;
                }
                Some(done) = ops.join_next_with_id() => self.op_finished(done),
                cmd = self.commands.recv(), if commands_open => match cmd {
                    Some(Command::SetDesired(ip, desire)) => {
                        #[cfg(debug_assertions)]
                        injected_fault();
                        if let Err(e) = self.core.set_desired(Instant::now(), ip, desire) {
                            warn!(ip = %ip, error = %e, "IP ignored");
                        }
                    }
                    Some(Command::RemoveDesired(ip)) => self.core.remove_desired(Instant::now(), ip),
                    Some(Command::WireConflict(ip)) => self.wire_conflict(ip),
                    None => {
                        // Every handle is gone: nobody can drive or stop us any more, so stop gracefully.
                        commands_open = false;
                        self.cancel.cancel();
                    }
                },
                event = watch.next(), if watch_open => watch_open = self.watched(event),
                () = sleep_until(wake) => {}
            }
            // Take in whatever else is ready before deciding again: each decision round visits every IP, so a burst
            // of results or watch events (a thousand takeovers, a re-list) costs a few rounds instead of one per
            // input, and the watch is not starved behind a queue of results.
            let mut taken = 0;
            while taken < INPUT_BATCH {
                let before = taken;
                if let Some(done) = ops.try_join_next_with_id() {
                    self.op_finished(done);
                    taken += 1;
                }
                if let Some(event) = watch_open.then(|| watch.next().now_or_never()).flatten() {
                    watch_open = self.watched(event);
                    taken += 1;
                }
                if taken == before {
                    break;
                }
            }
        }
        // Whatever is still announced (shutdown timeout) is withdrawn before the task ends.
        let left: Vec<IpAddr> = self.announced.borrow().iter().copied().collect();
        for ip in left {
            self.sink.withdraw(ip).await;
        }
        self.publish_announced(BTreeSet::new());
        info!(node = %node, "ownership election stopped");
    }

    /// Feeds one finished lease operation to the core.
    fn op_finished(&mut self, done: std::result::Result<(tokio::task::Id, OpResult), tokio::task::JoinError>) {
        // Its slot is free whether it finished or failed.
        let task = match &done {
            Ok((task, _)) => *task,
            Err(e) => e.id(),
        };
        self.ip_ops.in_flight.remove(&task);
        match done {
            Ok((_, (op, name, result))) => {
                self.count(&name, &result);
                self.core.op_done(Instant::now(), op, result);
            }
            Err(e) => warn!(error = %e, "lease operation task failed"),
        }
    }

    /// Feeds one watch item to the core; returns whether the watch is still open.
    fn watched(&mut self, event: Option<WatchEvent>) -> bool {
        match event {
            Some(WatchEvent::Error(e)) => {
                self.metrics.api_error();
                warn!(error = %e, "lease watch error; retrying with backoff");
            }
            Some(event) => self.core.observe(Instant::now(), event),
            None => {
                warn!("lease watch ended");
                return false;
            }
        }
        true
    }

    fn wire_conflict(&mut self, ip: IpAddr) {
        let before = self.core.wire_yields();
        self.core.on_wire_conflict(Instant::now(), ip);
        if self.core.wire_yields() > before {
            self.metrics.wire_yield();
            warn!(ip = %ip, node = %self.core.identity().node(), "another MAC claims this IP: withdrawing it");
            self.emit(OwnershipEvent::WireYield { ip });
        }
    }

    fn count(&mut self, name: &str, result: &Result<LeaseRecord, StoreError>) {
        match result {
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                if let Some(failures) = self.failures.success() {
                    info!(lease = name, failures, "lease operations succeed again");
                }
            }
            Err(e) if e.is_lost_race() => {
                self.metrics.lost_race();
                debug!(lease = name, "lost a lease race");
            }
            Err(e) => {
                self.metrics.api_error();
                log_failure(&mut self.failures, name, e, "lease operation failed");
            }
        }
    }

    fn emit(&self, event: OwnershipEvent) {
        if self.events.try_send(event).is_err() {
            self.metrics.event_dropped();
        }
    }

    fn publish_announced(&self, set: BTreeSet<IpAddr>) {
        self.metrics.set_announced(set.len());
        self.announced.send_replace(set);
    }

    /// Executes actions in order (withdrawals before writes); returns true when the core has stopped.
    async fn execute(&mut self, actions: Vec<Action>, ops: &mut JoinSet<OpResult>) -> bool {
        let mut stopped = false;
        let mut announced_changed = false;
        for action in actions {
            match action {
                Action::Withdraw(ip) => {
                    self.sink.withdraw(ip).await;
                    announced_changed = true;
                    info!(ip = %ip, node = %self.core.identity().node(), "withdrawn");
                }
                Action::Announce(announce) => {
                    let (ip, takeover) = (announce.ip, announce.held_before);
                    self.sink.announce(announce).await;
                    announced_changed = true;
                    info!(ip = %ip, node = %self.core.identity().node(), takeover, "announcing");
                }
                Action::OwnerChanged {
                    ip,
                    holder,
                    is_self,
                    was_self,
                } => {
                    if is_self || was_self {
                        self.metrics.ownership_change();
                    }
                    let node = holder.as_deref().map(|h| holder_node(h).to_owned());
                    info!(ip = %ip, holder = holder.as_deref().unwrap_or(""), node = node.as_deref().unwrap_or(""),
                        "IP lease holder changed");
                    self.emit(OwnershipEvent::OwnerChanged {
                        ip,
                        holder,
                        node,
                        is_self,
                        was_self,
                    });
                }
                Action::Superseded { by } => {
                    warn!(holder = %by, "another instance took this node's lease; stopping");
                    self.emit(OwnershipEvent::Superseded { by });
                }
                Action::Stopped => stopped = true,
                Action::Get { op, name } => {
                    self.metrics.read();
                    self.submit(LeaseOp::Get { op, name }, ops);
                }
                Action::Create { op, record } => {
                    self.metrics.write();
                    self.submit(LeaseOp::Create { op, record }, ops);
                }
                Action::Replace { op, record } => {
                    self.metrics.write();
                    self.submit(LeaseOp::Replace { op, record }, ops);
                }
            }
        }
        if announced_changed {
            self.publish_announced(self.core.announced().clone());
        }
        stopped
    }
}

/// Inputs (operation results, watch events) taken in after the one that woke the task, before the next decision
/// round. Bounded so that timers and commands are still served during a long burst.
const INPUT_BATCH: usize = 256;

/// Fault injection for the agent's own tests, in debug builds only: with `HERALD_TEST_FAULT=election-panic` the task
/// panics on its first IP, as a bug would kill it (the agent must then turn unready and exit, not run on answering
/// for nothing).
#[cfg(debug_assertions)]
fn injected_fault() {
    if std::env::var("HERALD_TEST_FAULT").as_deref() == Ok("election-panic") {
        panic!("fault injected by HERALD_TEST_FAULT=election-panic");
    }
}

/// While lease operations keep failing, one log line per this interval after the first.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Logs a failed lease operation: the first of a series in full, then a summary per [`FAILURE_LOG_INTERVAL`].
fn log_failure(throttle: &mut LogThrottle, lease: &str, error: &StoreError, what: &str) {
    match throttle.failure(Instant::now()) {
        OnFailure::First => warn!(
            lease,
            error = %error,
            "{what} (while failures go on, one line per {} s)",
            FAILURE_LOG_INTERVAL.as_secs()
        ),
        OnFailure::Summary { failures } => warn!(
            lease,
            error = %error,
            failures,
            "{what}: still failing ({failures} failures in the last {} s; the latest is shown)",
            FAILURE_LOG_INTERVAL.as_secs()
        ),
        OnFailure::Quiet => debug!(lease, error = %error, "{what}"),
    }
}

/// IP-lease operations in flight at once per agent. A burst (a thousand new Services, a mass takeover) must not
/// starve the node-lease renew, whose lateness would itself look like a liveness gap.
const IP_OPS_IN_FLIGHT: usize = 32;

/// A lease operation the core asked for, not started yet.
enum LeaseOp {
    Get { op: OpId, name: String },
    Create { op: OpId, record: LeaseRecord },
    Replace { op: OpId, record: LeaseRecord },
}

impl LeaseOp {
    fn name(&self) -> &str {
        match self {
            LeaseOp::Get { name, .. } => name,
            LeaseOp::Create { record, .. } | LeaseOp::Replace { record, .. } => &record.name,
        }
    }
}

/// IP-lease operations: those waiting for a slot ([`IP_OPS_IN_FLIGHT`]), oldest first, and the tasks of those in
/// flight.
#[derive(Default)]
struct IpOps {
    waiting: std::collections::VecDeque<LeaseOp>,
    in_flight: std::collections::HashSet<tokio::task::Id>,
}

fn is_node_lease(name: &str) -> bool {
    name.starts_with(naming::NODE_LEASE_PREFIX)
}

async fn with_timeout(
    timeout: Duration,
    name: &str,
    fut: impl Future<Output = Result<LeaseRecord, StoreError>>,
) -> Result<LeaseRecord, StoreError> {
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable {
            reason: format!("lease {name}: no answer within {timeout:?}"),
        })
    })
}
