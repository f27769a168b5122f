//! The allocator controller: Services of `type: LoadBalancer` get IPs from Eips. It runs only on the agent that
//! holds the `herald-allocator` Lease.
//!
//! Shape: three reflectors (Services, Eips, Namespaces) feed one loop that owns an [`AllocatorState`]. Every watch
//! event wakes the loop; after a short batching window it runs one pass over the whole snapshot (cheap: the
//! allocator is O(log n) per Service and the pass writes only differences), then applies the writes with bounded
//! concurrency. Failed writes are retried by the next pass with exponential backoff; nothing re-lists in a loop.

pub mod convert;
pub mod state;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use herald_api::{Eip, names};
use herald_election::naming;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::{AllocatorMetrics, EipLabels, WriteLabels};
use crate::watch::{SharedStores, first_list, reflect, wait_first_lists};
pub use state::{AllocatorState, Notice, Plan, Snapshot, Target, Write};

/// How long the loop waits after a watch event for more to arrive, so a burst of Service creations is handled
/// in one pass with one Eip status write.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Writes in flight at once.
const WRITE_CONCURRENCY: usize = 16;
/// Backoff after failed writes: doubles from the first value up to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));

/// Settings of the allocator controller.
#[derive(Clone, Debug)]
pub struct AllocatorConfig {
    /// Also handle Services without `spec.loadBalancerClass`.
    pub default_class: bool,
    /// This agent's identity in Events (`reportingInstance`).
    pub instance: String,
    /// Namespace of Herald's Leases (the IP leases say which node announces which IP).
    pub namespace: String,
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
    let namespaces = reflect(
        Api::<Namespace>::all(client.clone()),
        Default::default(),
        own.clone(),
        cancel.clone(),
    );
    let ip_leases = reflect(
        Api::<Lease>::namespaced(client.clone(), &config.namespace),
        watcher::Config::default().labels(&format!("{}=ip", naming::LEASE_KIND_LABEL)),
        own,
        cancel.clone(),
    );
    let lists = vec![
        first_list("Service", &services),
        first_list("Eip", &eips),
        first_list("Namespace", &namespaces),
        first_list("Lease", &ip_leases),
    ];
    if !wait_first_lists("allocator", lists, &cancel).await? {
        return Ok(());
    }
    info!("allocator started: Services, Eips and Namespaces listed");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: names::CONTROLLER_NAME.into(),
            instance: Some(config.instance.clone()),
        },
    );
    let mut controller = Controller {
        client,
        recorder,
        metrics,
        in_flight: HashMap::new(),
    };
    let mut state = AllocatorState::new();
    let mut backoff: Option<Duration> = None;
    loop {
        let snapshot = Snapshot {
            services: services.state(),
            eips: eips.state(),
            namespaces: namespaces
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect(),
            ip_holders: ip_leases
                .state()
                .iter()
                .filter_map(|l| {
                    let holder = l.spec.as_ref()?.holder_identity.as_deref().filter(|h| !h.is_empty())?;
                    Some((l.name_any(), herald_election::identity::holder_node(holder).to_string()))
                })
                .collect(),
        };
        let plan = state.reconcile(&snapshot, config.default_class, &Time(jiff::Timestamp::now()));
        controller.metrics.passes.inc();
        controller
            .metrics
            .services_allocated
            .set(state.allocator().service_count() as i64);
        for pool in state.allocator().pools() {
            if let Some(stats) = state.allocator().pool_stats(pool.name()) {
                let used = stats.ipv4.used + stats.ipv6.used;
                controller
                    .metrics
                    .eip_used
                    .get_or_create(&EipLabels {
                        eip: pool.name().to_string(),
                    })
                    .set(used as i64);
            }
        }
        let failed = controller.apply(plan, &snapshot).await;
        backoff = match (failed, backoff) {
            (0, _) => None,
            (_, None) => Some(BACKOFF.0),
            (_, Some(b)) => Some((b * 2).min(BACKOFF.1)),
        };
        if let Some(b) = backoff {
            warn!(failed, retry_in = ?b, "some API writes failed; retrying");
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => tokio::time::sleep(BATCH_WINDOW).await,
            _ = tokio::time::sleep(backoff.unwrap_or(Duration::MAX)), if backoff.is_some() => {}
        }
    }
    info!("allocator stopped");
    Ok(())
}

/// Identifies the object a write goes to, to avoid repeating a write the watch has not reflected yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum WriteTarget {
    Ingress(String),
    AllocatedFrom(String),
    EipStatus(String),
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
    recorder: Recorder,
    metrics: Arc<AllocatorMetrics>,
    /// The last write per target with the resourceVersion the object had then. While the reflector still shows
    /// that resourceVersion, the same write is not repeated.
    in_flight: HashMap<WriteTarget, (Write, Option<String>)>,
}

impl Controller {
    /// Makes the plan's writes and Events; returns how many writes failed.
    async fn apply(&mut self, plan: Plan, snap: &Snapshot) -> usize {
        let services: HashMap<String, &Arc<Service>> = snap
            .services
            .iter()
            .map(|s| (state::service_key(s).to_string(), s))
            .collect();
        let eips: HashMap<String, &Arc<Eip>> = snap.eips.iter().map(|e| (e.name_any(), e)).collect();
        let mut writes = Vec::new();
        for w in plan.writes {
            let (target, rv) = match &w {
                Write::ServiceIngress { service, .. } => {
                    let k = service.to_string();
                    let rv = services.get(&k).and_then(|s| s.resource_version());
                    (WriteTarget::Ingress(k), rv)
                }
                Write::ServiceAllocatedFrom { service, .. } => {
                    let k = service.to_string();
                    let rv = services.get(&k).and_then(|s| s.resource_version());
                    (WriteTarget::AllocatedFrom(k), rv)
                }
                Write::EipStatus { eip, .. } => (
                    WriteTarget::EipStatus(eip.clone()),
                    eips.get(eip).and_then(|e| e.resource_version()),
                ),
            };
            if self.in_flight.get(&target) == Some(&(w.clone(), rv.clone())) {
                debug!(?target, "write already made; waiting for the watch to show it");
                continue;
            }
            writes.push((target, rv, w));
        }
        let client = self.client.clone();
        let results: Vec<Outcome> = futures::stream::iter(writes)
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
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut failed = 0;
        for Outcome {
            target,
            rv,
            write,
            result,
        } in results
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
                    self.in_flight.insert(target, (write, rv));
                }
                Err(e) => {
                    failed += 1;
                    self.metrics
                        .writes
                        .get_or_create(&WriteLabels { kind, result: "error" })
                        .inc();
                    warn!(?target, error = %e, "write failed");
                    self.in_flight.remove(&target);
                }
            }
        }
        // Forget targets whose objects are gone, so the map stays bounded by the number of objects.
        self.in_flight.retain(|t, _| match t {
            WriteTarget::Ingress(k) | WriteTarget::AllocatedFrom(k) => services.contains_key(k),
            WriteTarget::EipStatus(n) => eips.contains_key(n),
        });
        for notice in plan.notices {
            self.publish(&notice, &services, &eips).await;
        }
        failed
    }

    async fn publish(
        &self,
        notice: &Notice,
        services: &HashMap<String, &Arc<Service>>,
        eips: &HashMap<String, &Arc<Eip>>,
    ) {
        let reference = match &notice.target {
            Target::Service(key) => services.get(&key.to_string()).map(|s| s.object_ref(&())),
            Target::Eip(name) => eips.get(name).map(|e| e.object_ref(&())),
        };
        let Some(reference) = reference else { return };
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
        let result = if let Err(e) = self.recorder.publish(&event, &reference).await {
            warn!(error = %e, "cannot record Event");
            "error"
        } else {
            "ok"
        };
        self.metrics
            .writes
            .get_or_create(&WriteLabels { kind: "event", result })
            .inc();
    }
}

async fn execute(client: &Client, write: &Write) -> Result<(), kube::Error> {
    let params = PatchParams::default();
    match write {
        Write::ServiceIngress { service, ips } => {
            let api: Api<Service> = Api::namespaced(client.clone(), &service.namespace);
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress(ips)}}});
            api.patch_status(&service.name, &params, &Patch::Merge(&patch)).await?;
        }
        Write::ServiceAllocatedFrom { service, pool } => {
            let api: Api<Service> = Api::namespaced(client.clone(), &service.namespace);
            let patch = json!({"metadata": {"annotations": {names::ANNOTATION_ALLOCATED_FROM: pool}}});
            api.patch(&service.name, &params, &Patch::Merge(&patch)).await?;
        }
        Write::EipStatus { eip, status } => {
            let api: Api<Eip> = Api::all(client.clone());
            let mut value = serde_json::to_value(status).unwrap_or_default();
            if let Some(obj) = value.as_object_mut() {
                // Fields skipped when empty must still be cleared by the merge patch.
                obj.entry("announcers").or_insert(json!(null));
                obj.entry("announcersOmitted").or_insert(json!(null));
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
