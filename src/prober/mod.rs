//! The address prober: every agent checks, for the Layer 2 pools it ranks first for, the next free addresses on the
//! pool's network before the allocator hands them out, and records what it found in the Eip's `status.probes`.
//!
//! Whether an address is taken is a fact about the network, not about the node that will announce it, so it can be
//! known before the address is given to a Service:
//! - the allocator hands out addresses proven free first and never one another host answers for
//!   (`herald_ipam::Allocator::set_checks`), and the Eip's `AddressConflict` condition names them;
//! - the node elected for a new Service IP that was proven free moments ago announces it at once, without the
//!   1.5 s probe it makes for any other address ([`crate::announcer::sink::mode`]).
//!
//! A check is the RFC 5227 probe without the claim (`herald_l2::InterfaceHandle::check`): three ARP probes or DAD
//! solicitations 1 s apart, then 2 s of listening; the prober never answers for the address. Who checks which pool
//! and when is decided by [`core`]; this module reads the stores, runs the checks and writes the record.

pub mod core;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use herald_api::decode::Lenient;
use herald_api::{Eip, Protocol};
use herald_election::rank::rank_nodes;
use herald_ipam::{Family, Labels, Pool};
use herald_l2::{CheckConfig, CheckOutcome, ConflictSignal};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::adapter as convert;
use crate::announcer::desired::{selected_nodes, usable_nodes};
use crate::announcer::links;
use crate::announcer::sink::Interfaces;
use crate::metrics::{CheckLabels, ProberMetrics};
use crate::service::ServiceView;
use crate::watch::Reflected;
use core::{Found, PoolView, Round, TIMING};

/// How often the pools are looked at.
const TICK: Duration = Duration::from_secs(1);
/// An answer to a check is a conflict only if no Service holds the address this long after it (the allocator may
/// have handed it out meanwhile, and its node answered).
const CONFIRM: Duration = Duration::from_secs(2);

/// What the prober reads and uses.
pub struct Prober {
    pub client: Client,
    /// This node.
    pub node: String,
    pub eips: Reflected<Eip>,
    pub services: Reflected<ServiceView>,
    pub nodes: Reflected<Node>,
    pub interfaces: Interfaces,
    /// This node's interfaces, as the announcer last read them.
    pub links: watch::Receiver<links::Links>,
    /// Woken by every Service, Eip and Node event (the addresses in use are worked out again only after one).
    pub changed: Arc<Notify>,
    /// Namespace of the election's Leases.
    pub lease_namespace: String,
    pub metrics: ProberMetrics,
}

/// How one round ended.
struct Ended {
    eip: String,
    at: Timestamp,
}

impl Prober {
    /// Checks pools until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let this = Arc::new(self);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (ended_tx, mut ended) = mpsc::channel::<Ended>(16);
        let mut running: HashSet<String> = HashSet::new();
        let mut last_round: HashMap<String, Timestamp> = HashMap::new();
        let mut seen_since: HashMap<String, Timestamp> = HashMap::new();
        // Every address a Service holds, worked out again on the first tick after a change, not on every tick.
        let mut used = HashSet::new();
        let mut stale = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = this.changed.notified() => stale = true,
                Some(e) = ended.recv() => {
                    running.remove(&e.eip);
                    last_round.insert(e.eip, e.at);
                }
                _ = tick.tick() => {
                    if stale {
                        used = this.used();
                        stale = false;
                    }
                    for round in this.due(&running, &last_round, &mut seen_since, &used) {
                        running.insert(round.eip.clone());
                        let (this, ended_tx, cancel) = (this.clone(), ended_tx.clone(), cancel.clone());
                        tokio::spawn(async move {
                            let eip = round.eip.clone();
                            tokio::select! {
                                () = cancel.cancelled() => {}
                                () = this.round(round) => {}
                            }
                            let _ = ended_tx.send(Ended { eip, at: Timestamp::now() }).await;
                        });
                    }
                }
            }
        }
    }

    /// The rounds due now, for pools without one running.
    fn due(
        &self,
        running: &HashSet<String>,
        last_round: &HashMap<String, Timestamp>,
        seen_since: &mut HashMap<String, Timestamp>,
        used: &HashSet<IpAddr>,
    ) -> Vec<Round> {
        let now = Timestamp::now();
        let eips = self.eips.state();
        seen_since.retain(|name, _| eips.iter().any(|e| e.name_any() == *name));
        let layer2: Vec<&Arc<Eip>> = eips
            .iter()
            .filter(|e| e.spec.protocol == Protocol::Layer2 && !running.contains(&e.name_any()))
            .collect();
        if layer2.is_empty() {
            return Vec::new();
        }
        let nodes = self.nodes.state();
        let usable = usable_nodes(&nodes);
        let link_state = self.links.borrow();
        let mut rounds = Vec::new();
        for eip in layer2 {
            let name = eip.name_any();
            let Some(pool) = convert::pool_spec(eip).ok().and_then(|s| Pool::parse(&s).ok()) else {
                continue;
            };
            let Some(first) = pool
                .addresses(Family::V4)
                .next()
                .or_else(|| pool.addresses(Family::V6).next())
            else {
                continue;
            };
            let since = *seen_since.entry(name.clone()).or_insert(now);
            let view = PoolView {
                eip,
                pool: &pool,
                used,
                rank: rank(eip, &usable, first, &self.node),
                interface: interface(&link_state, eip, first),
                seen_since: since,
                last_round: last_round.get(&name).copied(),
            };
            rounds.extend(core::plan(&view, &self.node, now, &TIMING));
        }
        rounds
    }

    /// Every address a Service holds.
    fn used(&self) -> HashSet<IpAddr> {
        self.services
            .state()
            .iter()
            .flat_map(|s| convert::status_ips(s))
            .collect()
    }

    /// Whether an election Lease of `ip` names a holder (one GET; an error counts as no).
    async fn held_by_herald(&self, ip: IpAddr) -> bool {
        let Ok(name) = herald_election::naming::ip_lease_name(ip) else {
            return false;
        };
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.lease_namespace);
        api.get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .is_some_and(|h| !h.is_empty())
    }

    /// Checks the round's addresses at once, then writes the record.
    async fn round(&self, round: Round) {
        let Some(handle) = self.interfaces.handle(&round.interface) else {
            return;
        };
        debug!(eip = round.eip, interface = round.interface, addresses = ?round.addresses, "checking addresses");
        let checks = round.addresses.iter().map(|&ip| {
            let handle = handle.clone();
            async move { (ip, handle.check(ip, CheckConfig::default()).await) }
        });
        let mut results = Vec::new();
        for (ip, outcome) in join_all(checks).await {
            let found = match outcome {
                Ok(CheckOutcome::Free) => Found::Free,
                // Another node probing it too (two checkers for a moment, or a node's own announcement probe).
                Ok(CheckOutcome::Taken {
                    signal: ConflictSignal::ArpProbe | ConflictSignal::DadProbe,
                    ..
                }) => Found::Nothing,
                Ok(CheckOutcome::Taken { mac, .. }) => Found::Taken(mac.to_string()),
                Ok(CheckOutcome::Abandoned) => Found::Nothing,
                Err(e) => {
                    warn!(eip = round.eip, %ip, error = %e, "cannot check address");
                    Found::Nothing
                }
            };
            results.push((ip, found));
        }
        if results.iter().any(|(_, f)| matches!(f, Found::Taken(_))) {
            tokio::time::sleep(CONFIRM).await;
        }
        let used = self.used();
        let previous = self.eips.get(None, &round.eip);
        let previous = previous
            .as_ref()
            .and_then(|e| e.status.as_ref())
            .and_then(|s| s.probes.as_ref());
        // A new answer from an address a Herald node still holds (its Service just went, and the node has not
        // withdrawn yet, or it is cut off from the API) is no other host's.
        for (ip, found) in &mut results {
            let listed = previous.is_some_and(|p| p.conflicts.iter().any(|c| c.ip == ip.to_string()));
            if matches!(found, Found::Taken(_)) && !listed && !used.contains(ip) && self.held_by_herald(*ip).await {
                debug!(eip = round.eip, %ip, "answered by the Herald node that still holds it");
                *found = Found::Nothing;
            }
        }
        for (_, found) in &results {
            let outcome = match found {
                Found::Free => "free",
                Found::Taken(_) => "taken",
                Found::Nothing => "inconclusive",
            };
            self.metrics.checks.get_or_create(&CheckLabels { outcome }).inc();
        }
        let record = core::record(
            previous,
            &self.node,
            &round.interface,
            &results,
            &used,
            Timestamp::now(),
        );
        for c in &record.conflicts {
            if !previous.is_some_and(|p| p.conflicts.iter().any(|o| o.ip == c.ip)) {
                warn!(
                    eip = round.eip,
                    ip = c.ip,
                    mac = c.mac,
                    interface = round.interface,
                    "address conflict: another host answers for this free address of the Eip; it is not handed out"
                );
            }
        }
        if let Some(p) = previous {
            for old in p
                .conflicts
                .iter()
                .filter(|o| !record.conflicts.iter().any(|c| c.ip == o.ip))
            {
                info!(
                    eip = round.eip,
                    ip = old.ip,
                    "no host answers for this address any more"
                );
            }
        }
        // Merge patch: the lists are written whole (an empty one too), the allocator's fields are left alone.
        let patch = json!({"status": {"probes": {
            "node": record.node,
            "interface": record.interface,
            "free": record.free,
            "conflicts": record.conflicts,
        }}});
        let api: Api<Lenient<Eip>> = Api::all(self.client.clone());
        match api
            .patch_status(&round.eip, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => debug!(
                eip = round.eip,
                free = record.free.len(),
                conflicts = record.conflicts.len(),
                "addresses checked"
            ),
            Err(e) => warn!(eip = round.eip, error = %e, "cannot record the address checks"),
        }
    }
}

/// This node's place among the usable nodes (name, labels) that may announce `eip`'s addresses, ranked for the
/// pool's first address (`None`: it is not among them).
fn rank(eip: &Eip, usable: &[(&str, &Labels)], first: IpAddr, me: &str) -> Option<usize> {
    rank_nodes(first, selected_nodes(eip, usable))
        .iter()
        .position(|n| *n == me)
}

/// This node's usable interface for `eip`'s addresses.
fn interface(link_state: &links::Links, eip: &Eip, first: IpAddr) -> Option<String> {
    let choice = links::interface_for(link_state, first, eip.spec.interface.as_deref());
    choice.usable.ok().and(choice.interface)
}
