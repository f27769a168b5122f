//! The announcer: every agent turns the cluster's state into announcements. For Layer 2 pools it declares each
//! Service IP, with the nodes eligible for it, to the per-IP Lease election (`herald-election`), which decides
//! whether this node answers; the decisions drive the ARP/NDP engine (`herald-l2`).
//!
//! Shape: four reflectors (Services, Eips and Nodes shared with the allocator, EndpointSlices; plus BgpConf, BgpPeer
//! and Secrets for BGP mode) wake one loop that owns the desired state. The
//! election task and the L2 engine are its children; on SIGTERM the election withdraws every IP (the engine stops
//! answering), then releases every lease, so other nodes take over at once.

pub mod bgp;
pub mod desired;
pub mod links;
mod sink;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_api::{BgpConf, BgpPeer, Protocol, names};
use herald_election::{
    Identity, IpDesire, KubeLeaseStore, OutagePolicy, OwnershipAgent, OwnershipConfig, OwnershipEvent,
    timing::ElectionTiming,
};
use herald_l2::{EngineConfig, Event as L2Event, L2Engine};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::{Event, EventPublisher, EventType, Reporter};
use crate::metrics::AnnouncerMetrics;
use crate::watch::{SharedStores, first_list, reflect, wait_first_lists};
use desired::{Announcement, ClusterView};
use sink::L2Sink;

/// How often link state is read (a link going down makes this node ineligible for the IPs on it).
const LINK_POLL: Duration = Duration::from_millis(500);
/// Batching window after a watch event.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// Settings of the announcer.
#[derive(Clone, Debug)]
pub struct AnnouncerConfig {
    /// This agent (`<node>/<instance>`).
    pub identity: Identity,
    /// Namespace of the Leases.
    pub namespace: String,
    /// Also handle Services without a class.
    pub default_class: bool,
    /// Election timing (`--node-renew-period`, `--takeover-after`, `--renew-deadline`).
    pub timing: ElectionTiming,
    /// `--api-outage`.
    pub outage: OutagePolicy,
    /// ARP/NDP engine settings (refresh interval, probes).
    pub l2: EngineConfig,
}

/// Runs the announcer until `cancel` fires, then stops gracefully (withdraw, release) before returning. Cancels
/// `cancel` itself when another agent process takes over this node, so the whole agent stops. Sends on `started`
/// once every watch has listed (the agent is ready then).
pub async fn run(
    client: Client,
    shared: SharedStores,
    config: AnnouncerConfig,
    metrics: Arc<AnnouncerMetrics>,
    started: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let node = config.identity.node().to_string();
    let (engine, mut engine_events) = L2Engine::new(config.l2);
    let engine = Arc::new(engine);
    let (answering_tx, mut answering) = tokio::sync::mpsc::channel(1024);
    let sink = L2Sink::new(
        engine.clone(),
        Api::namespaced(client.clone(), &config.namespace),
        answering_tx,
    );
    let store = KubeLeaseStore::new(client.clone(), &config.namespace, config.timing.renew_deadline / 2);
    let ownership_config = OwnershipConfig {
        timing: config.timing,
        outage: config.outage,
        ..OwnershipConfig::new(config.identity.clone())
    };
    // The election gets its own token: on shutdown it must run its graceful stop, not be torn down.
    let election_stop = CancellationToken::new();
    let (ownership, mut ownership_events) =
        OwnershipAgent::spawn(store, sink.clone(), ownership_config, &election_stop)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    metrics.set_election(ownership.metrics_handle());
    metrics.set_layer2_announced(&node, ownership.announced());
    let counters = sink.clone();
    metrics.set_interfaces(move || counters.counters());

    let wake = Arc::new(Notify::new());
    let own = shared.subscribe(&wake);
    let (services, eips) = (shared.services.clone(), shared.eips.clone());
    shared.subscribe_nodes(&wake);
    let nodes = shared.nodes.clone();
    let slices = reflect::<EndpointSlice>(
        Api::all(client.clone()),
        Default::default(),
        own.clone(),
        cancel.clone(),
    );
    let bgp_confs = reflect::<BgpConf>(
        Api::all(client.clone()),
        Default::default(),
        own.clone(),
        cancel.clone(),
    );
    let bgp_peers = reflect::<BgpPeer>(
        Api::all(client.clone()),
        Default::default(),
        own.clone(),
        cancel.clone(),
    );
    let secrets = reflect::<Secret>(
        Api::namespaced(client.clone(), &config.namespace),
        Default::default(),
        own.clone(),
        cancel.clone(),
    );
    let lists = vec![
        first_list("Service", &services),
        first_list("Eip", &eips),
        first_list("Node", &nodes),
        first_list("EndpointSlice", &slices),
        first_list("BgpConf", &bgp_confs),
        first_list("BgpPeer", &bgp_peers),
        first_list("Secret", &secrets),
    ];
    if wait_first_lists("announcer", lists, &cancel).await? {
        info!(node, "announcer started");
        let _ = started.send(());
    }

    let reporter = Reporter {
        controller: names::CONTROLLER_NAME.into(),
        instance: Some(config.identity.holder()),
    };
    // Events are written by their own task: a slow API server never holds up the announcer.
    let events = EventPublisher::spawn(client.clone(), reporter, None, cancel.clone());
    let mut sent: BTreeMap<IpAddr, IpDesire> = BTreeMap::new();
    let mut bgp = bgp::BgpAnnouncer::default();
    // Why an IP has no eligible node, as last logged (logged once per change, not per pass).
    let mut unplaceable: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
    let mut current: BTreeMap<IpAddr, Announcement>;
    let mut link_state = links::read();
    let mut link_tick = tokio::time::interval(LINK_POLL);
    while !cancel.is_cancelled() {
        let view = ClusterView {
            services: services.state(),
            eips: eips.state(),
            nodes: nodes.state(),
            endpoint_slices: slices.state(),
        };
        current = desired::desired(&view, config.default_class);
        let mut wanted: BTreeMap<IpAddr, IpDesire> = BTreeMap::new();
        for (ip, a) in &current {
            if a.ineligible_reason != *unplaceable.get(ip).unwrap_or(&None) {
                if let Some(why) = &a.ineligible_reason {
                    warn!(%ip, eip = a.eip, "no node may announce this IP: {why}");
                }
                unplaceable.insert(*ip, a.ineligible_reason.clone());
            }
        }
        unplaceable.retain(|ip, _| current.contains_key(ip));
        for (ip, a) in current.iter().filter(|(_, a)| a.protocol == Protocol::Layer2) {
            let interface = links::interface_for(&link_state, *ip, a.interface.as_deref());
            let usable = interface.usable.is_ok();
            let mut eligible = a.eligible_nodes.clone();
            if !usable {
                // Only this node can see its links; it leaves itself out (others just wait their stagger).
                eligible.remove(&node);
            }
            sink.route(*ip, interface);
            wanted.insert(
                *ip,
                IpDesire {
                    eligible_nodes: eligible,
                    eip: a.eip.clone(),
                },
            );
        }
        for ip in sent
            .keys()
            .filter(|ip| !wanted.contains_key(ip))
            .copied()
            .collect::<Vec<_>>()
        {
            debug!(%ip, "no longer a Layer 2 Service IP");
            if ownership.remove_desired(ip).await.is_err() {
                break;
            }
            sent.remove(&ip);
        }
        for (ip, desire) in wanted {
            if sent.get(&ip) != Some(&desire) {
                if ownership.set_desired(ip, desire.clone()).await.is_err() {
                    break;
                }
                sent.insert(ip, desire);
            }
        }
        metrics.desired.set(sent.len() as i64);
        let this_node = view
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node.as_str()));
        bgp.apply(bgp::plan(&bgp::BgpView {
            node: &node,
            node_object: this_node.map(|n| n.as_ref()),
            confs: &bgp_confs.state(),
            peers: &bgp_peers.state(),
            secrets: &secrets.state(),
            eips: &view.eips,
            announcements: &current,
            unreadable: bgp::Unreadables {
                confs: &bgp_confs.unreadable(),
                peers: &bgp_peers.unreadable(),
                secrets: &secrets.unreadable(),
            },
        }))
        .await;
        metrics.set_bgp_peers(bgp.peer_watches());
        metrics.set_bgp_announced(bgp.announced_ips());
        sink.set_held_before(
            view.services
                .iter()
                .filter_map(|svc| svc.metadata.annotations.as_ref()?.get(names::ANNOTATION_ANNOUNCED_BY))
                .flat_map(|v| v.split(',').filter_map(|e| e.split_once('=')?.0.trim().parse().ok()))
                .collect(),
        );

        // Wait until something changes the desired state.
        'wait: loop {
            tokio::select! {
                _ = cancel.cancelled() => break 'wait,
                _ = wake.notified() => {
                    tokio::time::sleep(BATCH_WINDOW).await;
                    break 'wait;
                }
                _ = link_tick.tick() => {
                    bgp.report(&client, &events, &node).await;
                    let now = links::read();
                    if now != link_state {
                        link_state = now;
                        break 'wait;
                    }
                }
                Some(ev) = engine_events.recv() => {
                    if let L2Event::Announced { ip } = ev.event {
                        record_announcing(&client, &events, &current, ip, &node, &ev.interface).await;
                    }
                    if let L2Event::Conflict(c) = ev.event {
                        warn!(ip = %c.ip, mac = %c.mac, interface = ev.interface, signal = ?c.signal, refused = c.refused, "another host claims this IP");
                        if c.refused {
                            // The probe before the first announcement found the address in use: never fight a
                            // host that is not Herald. Say so on every Service of the IP.
                            let note = format!(
                                "{} is already used by host {} on {} of node {node}; Herald does not answer for it. \
                                 Remove the address from the Eip, or the host from the network",
                                c.ip, c.mac, ev.interface
                            );
                            report_conflict(&client, &events, &current, c.ip, &note).await;
                        } else {
                            let _ = ownership.wire_conflict(c.ip).await;
                        }
                    }
                }
                Some((ip, interface)) = answering.recv() => {
                    record_announcing(&client, &events, &current, ip, &node, &interface).await;
                }
                Some(ev) = ownership_events.recv() => {
                    if let OwnershipEvent::Superseded { by } = &ev {
                        // A newer agent process owns this node now (rolling update): this one must go away.
                        warn!(node, by, "another agent process took over this node; stopping");
                        cancel.cancel();
                        break 'wait;
                    }
                    log_ownership_event(&node, ev);
                }
            }
        }
    }
    info!(node, "announcer stopping: withdrawing, then releasing leases");
    bgp.shutdown(&client, &node).await;
    election_stop.cancel();
    if let Err(e) = ownership.shutdown().await {
        warn!(error = %e, "election task failed while stopping");
    }
    drop(sink);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.shutdown().await,
        Err(_) => debug!("engine still referenced; it stops when dropped"),
    }
    Ok(())
}

/// Ownership news that needs no action here: answering is recorded once the engine answers (the sink reports
/// takeovers, the engine reports passed probes), and a displaced process is handled in the loop.
fn log_ownership_event(node: &str, ev: OwnershipEvent) {
    match ev {
        OwnershipEvent::OwnerChanged {
            ip,
            is_self: false,
            was_self: true,
            holder,
            ..
        } => {
            info!(%ip, node, new_holder = holder.as_deref().unwrap_or(""), "no longer announcing");
        }
        OwnershipEvent::OwnerChanged { .. } => {}
        OwnershipEvent::WireYield { ip } => warn!(%ip, node, "withdrew: another MAC answers for this IP"),
        OwnershipEvent::Superseded { .. } => {}
    }
}

/// Records that this node answers for `ip`: the `herald.dev/announced-by` entry and an `Announcing` Event on every
/// Service of the IP.
async fn record_announcing(
    client: &Client,
    events: &EventPublisher,
    current: &BTreeMap<IpAddr, Announcement>,
    ip: IpAddr,
    node: &str,
    interface: &str,
) {
    let Some(a) = current.get(&ip) else { return };
    info!(%ip, node, interface, "announcing");
    for svc in &a.services {
        let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace);
        let obj = match record_announcer(&api, &svc.name, ip, node).await {
            Ok(obj) => obj,
            Err(e) => {
                warn!(service = %svc, error = %e, "cannot record the announcing node");
                continue;
            }
        };
        let event = Event {
            type_: EventType::Normal,
            reason: "Announcing".into(),
            note: Some(format!("node {node} answers ARP/NDP for {ip} on {interface} (layer2)")),
            action: "Announce".into(),
            secondary: None,
        };
        events.publish(event, obj.object_ref(&()));
    }
}

/// Records an `AddressConflict` Warning Event on every Service of `ip`.
async fn report_conflict(
    client: &Client,
    events: &EventPublisher,
    current: &BTreeMap<IpAddr, Announcement>,
    ip: IpAddr,
    note: &str,
) {
    let Some(a) = current.get(&ip) else { return };
    for svc in &a.services {
        let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace);
        let Ok(obj) = api.get(&svc.name).await else { continue };
        let event = Event {
            type_: EventType::Warning,
            reason: "AddressConflict".into(),
            note: Some(note.to_string()),
            action: "Probe".into(),
            secondary: None,
        };
        events.publish(event, obj.object_ref(&()));
    }
}

/// Sets `ip=node` in the Service's `herald.dev/announced-by` annotation (`ip=node,ip=node`, one entry per Service
/// IP), keeping the entries other nodes wrote for its other IPs. A compare-and-swap on the resourceVersion, retried on
/// conflict, so two nodes recording different IPs of one dual-stack Service never lose each other's entry.
async fn record_announcer(api: &Api<Service>, name: &str, ip: IpAddr, node: &str) -> Result<Service, kube::Error> {
    let mut attempt = 0;
    loop {
        let svc = api.get(name).await?;
        let current_ips = crate::allocator::convert::status_ips(&svc);
        let existing = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::ANNOTATION_ANNOUNCED_BY));
        let value = announced_by(existing.map(String::as_str), &current_ips, ip, node);
        if existing == Some(&value) {
            return Ok(svc);
        }
        let patch = json!({"metadata": {
            "resourceVersion": svc.metadata.resource_version,
            "annotations": {names::ANNOTATION_ANNOUNCED_BY: value},
        }});
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => attempt += 1,
            other => return other,
        }
    }
}

/// The new `herald.dev/announced-by` value: `ip=node` set, entries for IPs the Service no longer has dropped, sorted.
fn announced_by(existing: Option<&str>, service_ips: &[IpAddr], ip: IpAddr, node: &str) -> String {
    let mut entries: BTreeMap<IpAddr, String> = existing
        .unwrap_or_default()
        .split(',')
        .filter_map(|e| {
            let (i, n) = e.trim().split_once('=')?;
            Some((i.parse().ok()?, n.to_string()))
        })
        .filter(|(i, _)| service_ips.contains(i))
        .collect();
    entries.insert(ip, node.to_string());
    entries
        .iter()
        .map(|(i, n)| format!("{i}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::announced_by;

    #[test]
    fn announced_by_keeps_other_ips_and_drops_stale_ones() {
        let ips = ["192.0.2.200".parse().unwrap(), "2001:db8:1::200".parse().unwrap()];
        assert_eq!(announced_by(None, &ips, ips[0], "node2"), "192.0.2.200=node2");
        let v = announced_by(Some("192.0.2.200=node2"), &ips, ips[1], "node1");
        assert_eq!(v, "192.0.2.200=node2,2001:db8:1::200=node1");
        let v = announced_by(Some("192.0.2.9=old,192.0.2.200=node2,garbage"), &ips, ips[0], "node3");
        assert_eq!(v, "192.0.2.200=node3", "entries for IPs the Service no longer has go");
    }
}
