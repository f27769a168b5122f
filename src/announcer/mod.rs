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
pub mod sink;
pub mod state;
mod writer;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herald_api::{BgpConf, BgpPeer, names};
use herald_election::{
    Identity, KubeLeaseStore, OutagePolicy, OwnershipAgent, OwnershipConfig, OwnershipHandle, timing::ElectionTiming,
};
use herald_l2::{EngineConfig, L2Engine, Unusable};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::{EventPublisher, Reporter};
use crate::metrics::{AnnouncerMetrics, ProberMetrics};
use crate::prober;
use crate::watch::{SharedStores, first_list, reflect, wait_first_lists};
use desired::ClusterView;
use sink::{Interfaces, L2Sink};
use state::{AnnouncerCore, ElectionCommand, Notice, Placement, Plan, Stop};
use writer::Writer;

/// How often link state is read (a link going down makes this node ineligible for the IPs on it).
const LINK_POLL: Duration = Duration::from_millis(500);
/// Batching window after a watch event, at least.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// The longest a watch event waits for the recompute that includes it.
const MAX_BATCH_WINDOW: Duration = Duration::from_secs(1);
/// Each recompute is followed by at least this many times its own duration without one.
const RECOMPUTE_SPACING: u32 = 2;

/// How long to gather watch events before recomputing, given how long the last recompute took. A recompute reads
/// the whole cluster (every Service, Node, slice), so while Services are created without pause, waiting a fixed
/// 10 ms between recomputes spends a whole core on them at a few thousand Services. Waiting
/// `RECOMPUTE_SPACING` times the last recompute's duration keeps them to at most a third of a core
/// (`1 / (1 + RECOMPUTE_SPACING)`) however large the cluster; the floor keeps small clusters at 10 ms, and the cap
/// bounds how late a change is acted on (a cluster whose recompute takes over half a second is past it).
fn batch_window(last_recompute: Duration) -> Duration {
    last_recompute
        .saturating_mul(RECOMPUTE_SPACING)
        .clamp(BATCH_WINDOW, MAX_BATCH_WINDOW)
}

/// How long a watch event waits for the recompute that includes it, `since_last` after the last recompute ended:
/// until the window after that recompute. Not at all when it is already longer ago (a lone change, such as one new
/// Service, is acted on at once); the spacing rule holds either way.
fn recompute_delay(last_recompute: Duration, since_last: Duration) -> Duration {
    batch_window(last_recompute).saturating_sub(since_last)
}

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
/// once every watch has listed (the agent is ready then). Returns an error when the election task ends on its own:
/// without it this agent answers for nothing, and it must be restarted rather than look healthy.
pub async fn run(
    client: Client,
    shared: SharedStores,
    config: AnnouncerConfig,
    metrics: Arc<AnnouncerMetrics>,
    prober_metrics: ProberMetrics,
    started: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let node = config.identity.node().to_string();
    let (engine, mut engine_events) = L2Engine::new(config.l2);
    let engine = Arc::new(engine);
    let interfaces = Interfaces::new(engine.clone());
    let checked = shared.eips.clone();
    let sink = L2Sink::new(interfaces.clone(), move |ip| {
        let eips = checked.state();
        let now = k8s_openapi::jiff::Timestamp::now();
        prober::core::is_proven_free(eips.iter().map(|e| &**e), ip, now, prober::core::TIMING.valid)
    });
    let counters = interfaces.clone();
    metrics.set_interfaces(move || counters.counters());
    let store = KubeLeaseStore::new(client.clone(), &config.namespace, config.timing.renew_deadline / 2);
    let ownership_config = OwnershipConfig {
        timing: config.timing,
        outage: config.outage,
        ..OwnershipConfig::new(config.identity.clone())
    };
    // The election gets its own token: on shutdown it must run its graceful stop, not be torn down.
    let election_stop = CancellationToken::new();
    let (ownership, mut ownership_events) = OwnershipAgent::spawn(store, sink, ownership_config, &election_stop)
        .context("cannot start the Layer 2 election")?;
    metrics.set_election(ownership.metrics_handle());
    metrics.set_layer2_announced(&node, ownership.announced());

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
    let mut link_state = links::read();
    // The prober reads the interfaces as this loop last did.
    let (links_tx, links_rx) = tokio::sync::watch::channel(link_state.clone());
    // Without probes (`--no-probe`) nobody wants to know which addresses are free.
    if config.l2.probe.count > 0 {
        let changed = Arc::new(Notify::new());
        shared.subscribe(&changed);
        shared.subscribe_nodes(&changed);
        tokio::spawn(
            prober::Prober {
                client: client.clone(),
                node: node.clone(),
                eips: eips.clone(),
                services: services.clone(),
                nodes: nodes.clone(),
                interfaces: interfaces.clone(),
                links: links_rx,
                changed,
                metrics: prober_metrics,
                lease_namespace: config.namespace.clone(),
            }
            .run(cancel.clone()),
        );
    }

    let reporter = Reporter {
        controller: names::CONTROLLER_NAME.into(),
        instance: Some(config.identity.holder()),
    };
    // Events and Service annotations are written by tasks of their own: a slow API server never holds up the loop.
    let events = EventPublisher::spawn(client.clone(), reporter, None, cancel.clone());
    let writer = Writer::spawn(
        client.clone(),
        services.store(),
        events.clone(),
        node.clone(),
        writer::WriterTiming::default(),
        cancel.clone(),
    );
    let mut core = AnnouncerCore::new(&node);
    let mut bgp = bgp::BgpAnnouncer::default();
    // BGP status (sessions, conditions) is written by a task of its own too.
    let reporter_stop = cancel.child_token();
    let reporter = bgp.spawn_reporter(
        client.clone(),
        events.clone(),
        node.clone(),
        LINK_POLL,
        reporter_stop.clone(),
    );
    let mut link_tick = tokio::time::interval(LINK_POLL);
    let mut stop = None;
    let mut changed = true;
    // When the gathered watch events are recomputed (`None`: no event waits), how long the last recompute took, and
    // when it ended.
    let mut recompute_at: Option<Instant> = None;
    let mut last_recompute = Duration::ZERO;
    let mut recomputed_at = Instant::now();
    while !cancel.is_cancelled() && stop.is_none() {
        if changed {
            changed = false;
            recompute_at = None;
            let started = Instant::now();
            let view = ClusterView {
                services: services.state(),
                eips: eips.state(),
                nodes: nodes.state(),
                endpoint_slices: slices.state(),
            };
            let place = |ip: IpAddr, preferred: Option<&str>| {
                let choice = links::interface_for(&link_state, ip, preferred);
                Placement {
                    interface: choice.interface,
                    usable: choice.usable.is_ok(),
                    // No interface holding the IP's subnet is not worth a line: nodes on other networks see that for
                    // every IP of every other network.
                    why: choice
                        .usable
                        .err()
                        .filter(|why| !matches!(why, Unusable::NoSubnet(_)))
                        .map(|why| why.to_string()),
                }
            };
            // The last announcements go before the new ones are computed, so the two are never held together (a
            // few MB each at 10,000 IPs, on every agent).
            core.forget_announcements();
            let plan = core.cluster(desired::desired(&view, config.default_class), place);
            stop = execute(plan, &node, &ownership, &writer).await;
            metrics.desired.set(core.desired_l2() as i64);
            metrics.set_l2_interfaces(core.l2_interfaces());
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
                announcements: core.current(),
                unreadable: bgp::Unreadables {
                    confs: &bgp_confs.unreadable(),
                    peers: &bgp_peers.unreadable(),
                    secrets: &secrets.unreadable(),
                },
            }))
            .await;
            metrics.set_bgp_peers(bgp.peer_watches());
            metrics.set_bgp_announced(bgp.announced_ips());
            // Wall time, waits on the election's queue included: an election slow to take the commands spaces the
            // recomputes out too.
            last_recompute = started.elapsed();
            recomputed_at = Instant::now();
            continue;
        }
        // Wait until something changes. Watch events are gathered until `recompute_at`, while the engine's and the
        // election's news are handled as they come.
        let plan = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => {
                recompute_at.get_or_insert_with(|| {
                    Instant::now() + recompute_delay(last_recompute, recomputed_at.elapsed())
                });
                continue;
            }
            _ = tokio::time::sleep_until(recompute_at.unwrap_or_else(Instant::now)), if recompute_at.is_some() => {
                changed = true;
                continue;
            }
            _ = link_tick.tick() => {
                let now = links::read();
                if now != link_state {
                    links_tx.send_replace(now.clone());
                    link_state = now;
                    changed = true;
                }
                continue;
            }
            Some(ev) = engine_events.recv() => core.engine(&ev),
            ev = ownership_events.recv() => match ev {
                Some(ev) => core.ownership(&ev),
                None => core.election_ended(),
            },
        };
        stop = execute(plan, &node, &ownership, &writer).await;
    }
    if let Some(Stop::Superseded { by }) = &stop {
        // A newer agent process owns this node now (rolling update): this one must go away.
        warn!(node, by, "another agent process took over this node; stopping");
        cancel.cancel();
    }
    info!(node, "announcer stopping: withdrawing, then releasing leases");
    // The reporter ends first: its last write must not come after the shutdown's.
    reporter_stop.cancel();
    let _ = reporter.await;
    bgp.shutdown(&client, &node).await;
    election_stop.cancel();
    if let Err(e) = ownership.shutdown().await {
        warn!(error = %e, "election task failed while stopping");
    }
    // Shut down in place: the metrics still hold the engine (its counters), so waiting for the last reference would
    // never stop it cleanly before the process exits.
    engine.shutdown().await;
    match stop {
        Some(Stop::ElectionEnded) => {
            anyhow::bail!("the Layer 2 election task ended on its own; this agent must restart")
        }
        _ => Ok(()),
    }
}

/// Carries out a plan of the core: logs its notices, tells the election (in order), queues the writes. Returns why
/// to stop, if the plan or the election says so.
async fn execute(plan: Plan, node: &str, ownership: &OwnershipHandle, writer: &Writer) -> Option<Stop> {
    for notice in plan.notices {
        match notice {
            Notice::Unplaceable { ip, eip, why } => warn!(%ip, eip, "no node may announce this IP: {why}"),
            Notice::Announcing { ip, interface } => info!(%ip, node, interface, "announcing"),
            Notice::Conflict {
                ip,
                mac,
                interface,
                refused,
            } => warn!(%ip, mac, interface, refused, "another host claims this IP"),
            Notice::NoLongerAnnouncing { ip, new_holder } => {
                info!(%ip, node, new_holder, "no longer announcing");
            }
            Notice::WireYield { ip } => warn!(%ip, node, "withdrew: another MAC answers for this IP"),
            Notice::CannotAnswer { ip, why } => {
                info!(%ip, node, "this node cannot answer for this IP and is not a candidate for it: {why}");
            }
        }
    }
    for command in plan.election {
        let sent = match command {
            ElectionCommand::Set(ip, desire) => ownership.set_desired(ip, desire).await,
            ElectionCommand::Remove(ip) => {
                debug!(%ip, "no longer a Layer 2 Service IP");
                ownership.remove_desired(ip).await
            }
            ElectionCommand::WireConflict(ip) => ownership.wire_conflict(ip).await,
        };
        if sent.is_err() {
            return Some(Stop::ElectionEnded);
        }
    }
    for write in plan.writes {
        writer.send(write);
    }
    plan.stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recomputes_take_at_most_a_third_of_the_time_and_changes_wait_at_most_a_second() {
        let ms = Duration::from_millis;
        assert_eq!(
            batch_window(Duration::ZERO),
            BATCH_WINDOW,
            "a small cluster batches 10 ms"
        );
        assert_eq!(batch_window(ms(3)), BATCH_WINDOW);
        assert_eq!(
            batch_window(ms(40)),
            ms(80),
            "a 40 ms recompute is followed by 80 ms without one"
        );
        for last in [ms(6), ms(40), ms(200), ms(499)] {
            let share = last.as_secs_f64() / (last + batch_window(last)).as_secs_f64();
            assert!(share <= 1.0 / 3.0 + 1e-9, "{last:?}: {share}");
        }
        assert_eq!(batch_window(ms(700)), MAX_BATCH_WINDOW);
        assert_eq!(batch_window(Duration::MAX), MAX_BATCH_WINDOW, "no overflow");
    }

    #[test]
    fn a_lone_change_is_acted_on_at_once_and_a_burst_in_windows() {
        let ms = Duration::from_millis;
        assert_eq!(recompute_delay(ms(1), ms(500)), Duration::ZERO, "after a quiet spell");
        assert_eq!(recompute_delay(ms(1), ms(3)), ms(7), "the rest of the window");
        assert_eq!(
            recompute_delay(ms(200), ms(300)),
            ms(100),
            "a 200 ms recompute is still followed by 400 ms without one"
        );
        assert_eq!(recompute_delay(ms(200), ms(400)), Duration::ZERO);
    }
}
