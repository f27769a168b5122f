//! The allocator controller: Services of `type: LoadBalancer` get IPs from Eips. It runs only on the agent that
//! holds the `herald-allocator` Lease.
//!
//! Shape: three reflectors (Services, Eips, Namespaces) feed one loop that owns an [`AllocatorState`]. Every watch
//! event wakes the loop; after a short batching window it runs one pass over the whole snapshot (cheap: the
//! allocator is O(log n) per Service and the pass writes only differences), then applies the writes with bounded
//! concurrency. Failed writes are retried by the next pass with exponential backoff; nothing re-lists in a loop.
//! After each pass, and on its own timer, the loop collects unused Leases (`herald_election::gc` decides which,
//! [`UnusedLeases`] deletes them; this loop decides when and says which IPs are in use).

mod in_flight;
pub mod state;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use herald_api::decode::Lenient;
use herald_api::{Eip, names};
use herald_election::gc::{self, GcInput, LeaseView};
use herald_election::{Collected, KubeLeaseStore, UnusedLeases, naming};
use herald_ipam::ServiceKey;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;

use crate::lease::HeldLease;
use crate::store::Store;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::{Event, EventPublisher, EventType, Reporter};
use crate::metrics::{AllocatorMetrics, EipFamilyLabels, EipLabels, LeaseKindLabels, WriteLabels};
use crate::service::ServiceView;
use crate::watch::{SharedStores, Wakers, first_list, reflect, reflect_as, wait_first_lists};
use in_flight::{InFlight, WriteTarget};
pub use state::{AllocatorState, Notice, Plan, Snapshot, Target, Write};

/// How long the loop waits after a watch event for more to arrive, so a burst of Service creations is handled
/// in one pass with one Eip status write ([`batch_wait`]).
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// How long a watch event waits for more before the pass, `since_last_pass` after the last one ended: until
/// [`BATCH_WINDOW`] after that pass. Not at all after a quiet spell (a lone change, such as one `kubectl apply`, is
/// handled at once); while events keep coming, passes are that far apart and each takes whatever arrived meanwhile.
fn batch_wait(since_last_pass: Duration) -> Duration {
    BATCH_WINDOW.saturating_sub(since_last_pass)
}

/// Writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;
/// New Service writes one pass makes at most; the rest wait for the next pass, which runs at once. A burst (20,000
/// first writes at 10,000 Services) then holds only this many writes and their records at a time, not the whole
/// burst, and each batch's Services are shown by the watch before the next batch is planned.
const WRITES_PER_PASS: usize = 1000;
/// Backoff after failed writes: doubles from the first value up to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));
/// Lease deletions per sweep (a first sweep after an upgrade may find thousands; the rest go in the next ones, so
/// allocation passes are never held up for long).
const GC_DELETES_PER_SWEEP: usize = 100;
/// A Lease GET or DELETE of the collector is abandoned after this long (and retried by a later sweep).
const GC_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the allocator controller.
#[derive(Clone, Debug)]
pub struct AllocatorConfig {
    /// Also handle Services without `spec.loadBalancerClass`.
    pub default_class: bool,
    /// This agent's identity in Events (`reportingInstance`).
    pub instance: String,
    /// Namespace of Herald's Leases (the IP leases say which node announces which IP).
    pub namespace: String,
    /// Delete IP leases of unused IPs and node leases of removed Nodes after they have been so for this long
    /// (`--lease-gc-after`; zero keeps every Lease). See `herald_election::gc`.
    pub lease_gc_after: Duration,
}

/// Runs the allocator until `cancel` fires (leadership lost or the agent stops).
pub async fn run(
    client: Client,
    shared: SharedStores,
    config: AllocatorConfig,
    metrics: Arc<AllocatorMetrics>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let own = shared.subscribe(&wake);
    let (services, eips) = (shared.services.clone(), shared.eips.clone());
    let namespaces = reflect::<Namespace>(
        Api::all(client.clone()),
        Default::default(),
        own.clone(),
        cancel.clone(),
    );
    let ip_leases = reflect_as(
        Api::namespaced(client.clone(), &config.namespace),
        watcher::Config::default().labels(&format!("{}=ip", naming::LEASE_KIND_LABEL)),
        own,
        cancel.clone(),
        HeldLease::from as fn(Lease) -> HeldLease,
    );
    let mut lists = vec![
        first_list("Service", &services),
        first_list("Eip", &eips),
        first_list("Namespace", &namespaces),
        first_list("IP Lease", &ip_leases),
    ];
    // The collector reads node leases and Nodes on its own timer: their events (a renew per node every second) must
    // not start allocation passes, so nothing wakes the loop for them.
    let mut collector = (!config.lease_gc_after.is_zero()).then(|| {
        let node_leases = reflect_as(
            Api::namespaced(client.clone(), &config.namespace),
            watcher::Config::default().labels(&format!("{}=node", naming::LEASE_KIND_LABEL)),
            Wakers::default(),
            cancel.clone(),
            HeldLease::from as fn(Lease) -> HeldLease,
        );
        lists.push(first_list("node Lease", &node_leases));
        lists.push(first_list("Node", &shared.nodes));
        LeaseCollection {
            unused: UnusedLeases::new(
                KubeLeaseStore::new(client.clone(), &config.namespace, GC_REQUEST_TIMEOUT),
                config.lease_gc_after,
                GC_DELETES_PER_SWEEP,
            ),
            ip_leases: ip_leases.store(),
            node_leases: node_leases.store(),
            nodes: shared.nodes.store(),
            in_use: BTreeSet::new(),
            metrics: metrics.clone(),
            next_sweep: Instant::now(),
        }
    });
    if !wait_first_lists("allocator", lists, &cancel).await? {
        return Ok(());
    }
    info!(
        lease_gc_after = ?config.lease_gc_after,
        "allocator started: Services, Eips and Namespaces listed"
    );
    // Events are written by their own task: a slow API server never holds up allocation.
    let events = EventPublisher::spawn(
        client.clone(),
        Reporter {
            controller: names::CONTROLLER_NAME.into(),
            instance: Some(config.instance.clone()),
        },
        Some(metrics.writes.clone()),
        cancel.clone(),
    );
    let mut controller = Controller {
        client,
        events,
        metrics,
        in_flight: InFlight::default(),
    };
    let mut state = AllocatorState::new();
    let mut backoff: Option<Duration> = None;
    let mut retry_at: Option<Instant> = None;
    // The per-Eip series set by the previous pass: those of a deleted Eip are removed (not the whole family cleared,
    // which a scrape in between would see empty).
    let mut eip_series: (HashSet<EipLabels>, HashSet<EipFamilyLabels>) = Default::default();
    let mut run_pass = true;
    // Writes were left for the next pass ([`WRITES_PER_PASS`]): it runs without waiting for a watch event.
    let mut more = false;
    // When the last pass ended.
    let mut last_pass = Instant::now();
    loop {
        if run_pass {
            let snapshot = Snapshot {
                services: services.state(),
                eips: eips.state(),
                namespaces: namespaces
                    .state()
                    .iter()
                    .map(|n| (n.name_any(), Arc::new(n.labels().clone())))
                    .collect(),
                ip_leases: ip_leases.state(),
                unreadable_eips: eips.unreadable(),
                unreadable_services: services.unreadable(),
            };
            let plan = state.reconcile(&snapshot, config.default_class, &Time(jiff::Timestamp::now()));
            controller.metrics.passes.inc();
            controller
                .metrics
                .services_allocated
                .set(state.allocator().service_count() as i64);
            let mut series: (HashSet<EipLabels>, HashSet<EipFamilyLabels>) = Default::default();
            for pool in state.allocator().pools() {
                if let Some(stats) = state.allocator().pool_stats(pool.name()) {
                    let used = stats.ipv4.used + stats.ipv6.used;
                    let eip = pool.name().to_string();
                    let labels = EipLabels { eip: eip.clone() };
                    controller.metrics.eip_used.get_or_create(&labels).set(used as i64);
                    series.0.insert(labels);
                    for (family, f) in [("ipv4", stats.ipv4), ("ipv6", stats.ipv6)] {
                        if f.total == 0 {
                            continue;
                        }
                        for (state, n) in [("total", f.total), ("used", f.used), ("free", f.free)] {
                            let labels = EipFamilyLabels {
                                eip: eip.clone(),
                                family,
                                state,
                            };
                            controller.metrics.eip_addresses.get_or_create(&labels).set(n as f64);
                            series.1.insert(labels);
                        }
                    }
                }
            }
            // A deleted Eip's series go, rather than stay at their last values.
            for gone in eip_series.0.difference(&series.0) {
                controller.metrics.eip_used.remove(gone);
            }
            for gone in eip_series.1.difference(&series.1) {
                controller.metrics.eip_addresses.remove(gone);
            }
            eip_series = series;
            let Applied { failed, deferred } = controller.apply(plan, &snapshot).await;
            last_pass = Instant::now();
            more = deferred > 0;
            backoff = match (failed, backoff) {
                (0, _) => None,
                (_, None) => Some(BACKOFF.0),
                (_, Some(b)) => Some((b * 2).min(BACKOFF.1)),
            };
            retry_at = backoff.map(|b| Instant::now() + b);
            if let Some(b) = backoff {
                warn!(failed, retry_in = ?b, "some API writes failed; retrying");
            }
            if let Some(c) = &mut collector {
                // In use: what the allocator holds, and what any Service still shows (a status write may lag).
                let allocated = state.allocator().allocations().flat_map(|(_, a)| a.ips.iter().copied());
                let shown = snapshot.services.iter().flat_map(|s| s.ingress_ips.iter().copied());
                let in_use: BTreeSet<IpAddr> = allocated.chain(shown).collect();
                if in_use != c.in_use {
                    c.freed(&in_use, Instant::now());
                    c.in_use = in_use;
                }
            }
        }
        // Deletions run here, between passes: an IP the next pass allocates again is written to its Service only
        // after any deletion of its lease has completed, so agents never act on a lease that is being deleted.
        // The sweep judges "in use" by the state of the pass just made.
        let gc_at = match &mut collector {
            Some(c) => {
                if Instant::now() >= c.next_sweep {
                    // A sweep waits on the API server (bounded by GC_REQUEST_TIMEOUT per request); a leader that
                    // steps down stops at once (deletes in flight carry their precondition, so they stay safe).
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        next = c.sweep() => c.next_sweep = next,
                    }
                }
                Some(c.next_sweep)
            }
            None => None,
        };
        run_pass = true;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => tokio::time::sleep(batch_wait(last_pass.elapsed())).await,
            _ = std::future::ready(()), if more => {}
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
            _ = tokio::time::sleep_until(gc_at.unwrap_or_else(Instant::now)), if gc_at.is_some() => run_pass = false,
        }
    }
    info!("allocator stopped");
    Ok(())
}

/// What [`Controller::apply`] did.
struct Applied {
    /// Writes that failed.
    failed: usize,
    /// Writes left for the next pass.
    deferred: usize,
}

/// One write made: where, at which resourceVersion of the object, what, and how it went.
struct Outcome {
    target: WriteTarget,
    rv: Option<String>,
    write: Write,
    result: Result<(), kube::Error>,
}

struct Controller {
    client: Client,
    events: EventPublisher,
    metrics: Arc<AllocatorMetrics>,
    /// Writes the watch has not shown yet: not repeated meanwhile.
    in_flight: InFlight,
}

impl Controller {
    /// Makes the plan's writes (the Eips' all, the Services' up to [`WRITES_PER_PASS`] new ones) and Events.
    async fn apply(&mut self, plan: Plan, snap: &Snapshot) -> Applied {
        // Only the Services this pass writes to, tells of, or has writes in flight for: a pass that writes a handful
        // never indexes every Service.
        let mut wanted: HashSet<(&str, &str)> = HashSet::new();
        let writes_to = plan.writes.iter().filter_map(|w| match w {
            Write::ServiceIngress { service, .. } | Write::ServiceAllocatedFrom { service, .. } => Some(service),
            Write::EipStatus { .. } => None,
        });
        let told = plan.notices.iter().filter_map(|n| match &n.target {
            Target::Service(key) => Some(key),
            Target::Eip(_) => None,
        });
        let pending = self.in_flight.targets().filter_map(|t| match t {
            WriteTarget::Ingress(key) | WriteTarget::AllocatedFrom(key) => Some(key),
            WriteTarget::EipStatus(_) => None,
        });
        for key in writes_to.chain(told).chain(pending) {
            wanted.insert((key.namespace.as_str(), key.name.as_str()));
        }
        let services: HashMap<(&str, &str), &Arc<ServiceView>> = snap
            .services
            .iter()
            .map(|s| ((s.namespace.as_str(), s.name.as_str()), s))
            .filter(|(k, _)| wanted.contains(k))
            .collect();
        let service = |key: &ServiceKey| services.get(&(key.namespace.as_str(), key.name.as_str())).copied();
        let eips: HashMap<String, &Arc<Eip>> = snap.eips.iter().map(|e| (e.name_any(), e)).collect();
        let mut writes = Vec::new();
        let mut service_writes = 0;
        // Services whose status write is still in flight (its Event went out when it was made) or left for the next
        // pass (its Event goes out with it).
        let mut status_later: HashSet<&ServiceKey> = HashSet::new();
        let mut deferred = 0;
        for w in &plan.writes {
            let (target, rv) = match w {
                Write::ServiceIngress { service: key, .. } => {
                    let rv = service(key).and_then(|s| s.resource_version.clone());
                    (WriteTarget::Ingress(key.clone()), rv)
                }
                Write::ServiceAllocatedFrom { service: key, .. } => {
                    let rv = service(key).and_then(|s| s.resource_version.clone());
                    (WriteTarget::AllocatedFrom(key.clone()), rv)
                }
                Write::EipStatus { eip, .. } => (
                    WriteTarget::EipStatus(eip.clone()),
                    eips.get(eip).and_then(|e| e.resource_version()),
                ),
            };
            let made = self.in_flight.already_made(&target, w, &rv);
            let later = !made && !matches!(w, Write::EipStatus { .. }) && service_writes >= WRITES_PER_PASS;
            if made || later {
                if let Write::ServiceIngress { service, .. } = w {
                    status_later.insert(service);
                }
                if made {
                    debug!(?target, "write already made; waiting for the watch to show it");
                } else {
                    deferred += 1;
                }
                continue;
            }
            if !matches!(w, Write::EipStatus { .. }) {
                service_writes += 1;
            }
            writes.push((target, rv, w.clone()));
        }
        if deferred > 0 {
            debug!(made = service_writes, deferred, "Service writes left for the next pass");
        }
        let client = self.client.clone();
        // Outcomes are handled as they arrive, never collected: a burst of 20,000 writes holds only the ones in flight.
        let mut outcomes = futures::stream::iter(writes)
            .map(|(target, rv, write)| {
                let client = client.clone();
                async move {
                    let result = execute(&client, &write).await;
                    Outcome {
                        target,
                        rv,
                        write,
                        result,
                    }
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY);
        let mut failed = 0;
        while let Some(Outcome {
            target,
            rv,
            write,
            result,
        }) = outcomes.next().await
        {
            let kind = match &write {
                Write::ServiceIngress { .. } => "service_status",
                Write::ServiceAllocatedFrom { .. } => "service_annotation",
                Write::EipStatus { .. } => "eip_status",
            };
            match result {
                Ok(()) => {
                    self.metrics
                        .writes
                        .get_or_create(&WriteLabels { kind, result: "ok" })
                        .inc();
                    self.in_flight.made(target, write, rv);
                }
                Err(e) => {
                    failed += 1;
                    self.metrics
                        .writes
                        .get_or_create(&WriteLabels { kind, result: "error" })
                        .inc();
                    warn!(?target, error = %e, "write failed");
                    self.in_flight.failed(&target);
                }
            }
        }
        self.in_flight.forget_shown(|t| match t {
            WriteTarget::Ingress(k) | WriteTarget::AllocatedFrom(k) => service(k).map(|s| s.resource_version.clone()),
            WriteTarget::EipStatus(n) => eips.get(n).map(|e| e.resource_version()),
        });
        for notice in plan.notices {
            // The Event of a status write goes out with the write; a pass that finds it in flight or leaves it for
            // the next pass is silent.
            if let Target::Service(key) = &notice.target
                && notice.follows_status_write()
                && status_later.contains(key)
            {
                continue;
            }
            let reference = match &notice.target {
                Target::Service(key) => service(key).map(|s| s.object_ref()),
                Target::Eip(name) => eips.get(name).map(|e| e.object_ref(&())),
            };
            if let Some(reference) = reference {
                self.publish(&notice, reference);
            }
        }
        Applied { failed, deferred }
    }

    fn publish(&self, notice: &Notice, reference: ObjectReference) {
        if notice.warning {
            warn!(target = ?notice.target, reason = notice.reason, "{}", notice.note);
        } else {
            info!(target = ?notice.target, reason = notice.reason, "{}", notice.note);
        }
        let event = Event {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.into(),
            note: Some(notice.note.clone()),
            action: "Allocate".into(),
            secondary: None,
        };
        self.events.publish(event, reference);
    }
}

/// The allocator's side of lease collection: what the reflectors show and what is in use go to [`UnusedLeases`]
/// (election), which decides and deletes; this counts the results.
struct LeaseCollection {
    unused: UnusedLeases<KubeLeaseStore>,
    ip_leases: Store<HeldLease>,
    node_leases: Store<HeldLease>,
    nodes: Store<k8s_openapi::api::core::v1::Node>,
    /// The IPs in use, as of the last pass (addresses, not lease names: no string per IP, made again every pass).
    in_use: BTreeSet<IpAddr>,
    metrics: Arc<AllocatorMetrics>,
    /// Sweeps run between passes once this is reached (so a busy allocator does not sweep after every pass).
    next_sweep: Instant,
}

impl LeaseCollection {
    /// Tells the collector which IP leases the pass just freed (in use before, not in `in_use`), with the version
    /// the watch shows of each.
    fn freed(&mut self, in_use: &BTreeSet<IpAddr>, now: Instant) {
        let freed = gc::lease_names(self.in_use.difference(in_use).copied());
        if freed.is_empty() {
            return;
        }
        let leases = self.ip_leases.state();
        let shown: HashMap<&str, &str> = leases
            .iter()
            .filter(|l| freed.contains(&l.name))
            .map(|l| (l.name.as_str(), l.resource_version.as_deref().unwrap_or_default()))
            .collect();
        let with_versions = freed
            .iter()
            .map(|name| (name.as_str(), shown.get(name.as_str()).copied().unwrap_or_default()));
        self.unused.in_use_until(with_versions, now);
    }

    /// One sweep; returns when to sweep next.
    async fn sweep(&mut self) -> Instant {
        let view = |l: &Arc<HeldLease>| LeaseView::from(&**l);
        let input = GcInput {
            ip_leases: self.ip_leases.state().iter().map(view).collect(),
            node_leases: self.node_leases.state().iter().map(view).collect(),
            nodes: self.nodes.state().iter().map(|n| n.name_any()).collect(),
            ips_in_use: gc::lease_names(self.in_use.iter().copied()),
        };
        let sweep = self.unused.sweep(&input, Instant::now()).await;
        for (c, result) in &sweep.results {
            let result = match result {
                Collected::Deleted => {
                    let kind = c.kind.as_str();
                    self.metrics
                        .leases_collected
                        .get_or_create(&LeaseKindLabels { kind })
                        .inc();
                    "ok"
                }
                Collected::Failed(_) => "error",
                Collected::Kept(_) | Collected::HolderRenewed => continue,
            };
            self.metrics
                .writes
                .get_or_create(&WriteLabels {
                    kind: "lease_delete",
                    result,
                })
                .inc();
        }
        sweep.next
    }
}

async fn execute(client: &Client, write: &Write) -> Result<(), kube::Error> {
    let params = PatchParams::default();
    match write {
        Write::ServiceIngress { service, ips } => {
            // Lenient: the answer is not needed, and an object Herald cannot read must still take the write.
            let api: Api<Lenient<Service>> = Api::namespaced(client.clone(), &service.namespace);
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress(ips)}}});
            api.patch_status(&service.name, &params, &Patch::Merge(&patch)).await?;
        }
        Write::ServiceAllocatedFrom { service, pool } => {
            let api: Api<Lenient<Service>> = Api::namespaced(client.clone(), &service.namespace);
            let patch = json!({"metadata": {"annotations": {names::ANNOTATION_ALLOCATED_FROM: pool}}});
            api.patch(&service.name, &params, &Patch::Merge(&patch)).await?;
        }
        Write::EipStatus { eip, status } => {
            let api: Api<Lenient<Eip>> = Api::all(client.clone());
            let mut value = serde_json::to_value(status).unwrap_or_default();
            if let Some(obj) = value.as_object_mut() {
                // Fields skipped when empty must still be cleared by the merge patch.
                obj.entry("announcers").or_insert(json!(null));
                obj.entry("announcersOmitted").or_insert(json!(null));
                // The prober's: a copy from the reflector could undo its newer write.
                obj.remove("probes");
            }
            api.patch_status(eip, &params, &Patch::Merge(&json!({ "status": value })))
                .await?;
        }
    }
    Ok(())
}

fn ingress(ips: &[IpAddr]) -> serde_json::Value {
    ips.iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect()
}
