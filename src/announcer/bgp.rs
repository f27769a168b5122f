//! BGP mode: this node opens sessions to the `BgpPeer`s whose node selector matches it and announces every BGP-mode
//! Service IP it is eligible for, with itself as next hop; routers spread traffic over all announcing nodes (ECMP).
//!
//! [`plan`] is pure: cluster objects in, the speaker's identity, peers and routes out. [`BgpAnnouncer`] applies
//! plans as diffs: an unchanged peer keeps its session, a changed peer restarts only its own session, routes change
//! by UPDATE. Only a new node ASN or router id restarts the speaker (a BgpPeer's own `localAsn` restarts only its
//! session).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use herald_api::bgp::AddressFamily;
use herald_api::{BgpConf, BgpPeer, Eip, Protocol};
use herald_bgp::fsm::GracefulRestart;
use herald_bgp::packet::Afi;
use herald_bgp::rib::{RouteTable, parse_community, parse_large_community};
use herald_bgp::{PeerConfig, RoutePolicy, ShutdownMode, Speaker, SpeakerConfig};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::ResourceExt;
use tracing::{info, warn};

use super::desired::Announcement;
use crate::allocator::convert;

/// What BGP mode needs from the cluster.
pub struct BgpView<'a> {
    /// This node's name.
    pub node: &'a str,
    /// This node's Node object (labels for selectors, InternalIP for the router id).
    pub node_object: Option<&'a Node>,
    /// `BgpConf` objects (only `default` counts).
    pub confs: &'a [Arc<BgpConf>],
    /// Every `BgpPeer`.
    pub peers: &'a [Arc<BgpPeer>],
    /// Secrets in the agent's namespace (BGP passwords).
    pub secrets: &'a [Arc<Secret>],
    /// Every Eip (route attributes).
    pub eips: &'a [Arc<Eip>],
    /// Every IP to announce, from [`super::desired::desired`].
    pub announcements: &'a BTreeMap<IpAddr, Announcement>,
}

/// What the speaker should be doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BgpPlan {
    /// `None`: BGP mode is not configured for this node (no `BgpConf` named `default`, or no matching peer).
    pub speaker: Option<SpeakerConfig>,
    /// Peers by address.
    pub peers: BTreeMap<IpAddr, PeerConfig>,
    /// Host routes for the BGP-mode IPs this node is eligible for.
    pub routes: RouteTable,
    /// Problems a user must fix (unreadable selector, missing Secret, no router id), one line each.
    pub problems: Vec<String>,
    /// The `BgpPeer` object behind each peer address (for its status).
    pub names: BTreeMap<IpAddr, String>,
}

fn selects(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    node: Option<&Node>,
) -> bool {
    let Some(selector) = selector else { return true };
    let labels = node.map(|n| n.labels().clone()).unwrap_or_default();
    convert::label_selector(selector).is_ok_and(|s| s.matches(&labels))
}

fn node_ipv4(node: Option<&Node>) -> Option<Ipv4Addr> {
    let addresses = node?.status.as_ref()?.addresses.as_ref()?;
    addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// Computes the plan for this node.
pub fn plan(view: &BgpView<'_>) -> BgpPlan {
    let mut out = BgpPlan::default();
    let Some(conf) = view.confs.iter().find(|c| c.name_any() == "default") else {
        return out;
    };
    let spec = &conf.spec;
    let rack = spec
        .overrides
        .iter()
        .find(|o| selects(Some(&o.node_selector), view.node_object));
    let asn = rack.and_then(|o| o.asn).unwrap_or(spec.asn);
    let router_id = rack
        .and_then(|o| o.router_id.as_deref())
        .or(spec.router_id.as_deref())
        .and_then(|r| r.parse().ok())
        .or_else(|| node_ipv4(view.node_object));
    let Some(router_id) = router_id else {
        out.problems.push(format!(
            "node {}: no BGP router id: set BgpConf.spec.routerId (or an override), or give the Node an IPv4 InternalIP",
            view.node
        ));
        return out;
    };
    let gr = spec.graceful_restart.as_ref().filter(|g| g.enabled);
    for peer in view
        .peers
        .iter()
        .filter(|p| selects(p.spec.node_selector.as_ref(), view.node_object))
    {
        let p = &peer.spec;
        let Ok(address) = p.address.parse::<IpAddr>() else {
            out.problems.push(format!(
                "BgpPeer {}: spec.address '{}' is not an IP address",
                peer.name_any(),
                p.address
            ));
            continue;
        };
        let mut config = PeerConfig::new(address, p.asn);
        config.port = p.port;
        // Per-session local AS (OPEN, iBGP/eBGP, AS_PATH of this session only); the BgpConf's ASN otherwise.
        config.local_asn = p.local_asn;
        // Passive peers also get their connections accepted, on port 179 of the session's source address (or any).
        config.passive = p.passive;
        config.families = families(&p.families);
        if config.families.is_empty() {
            out.problems.push(format!(
                "BgpPeer {}: spec.families is empty, so there is nothing to announce; not connecting (list ipv4, ipv6 \
                 or both)",
                peer.name_any()
            ));
            continue;
        }
        config.hold_time = p
            .hold_time
            .map_or(config.hold_time, |h| h.min(u32::from(u16::MAX)) as u16);
        config.ttl = p.ebgp_multihop;
        config.local_address = p.source_address.as_deref().and_then(|a| a.parse().ok());
        if p.graceful_restart.unwrap_or(gr.is_some()) {
            config.graceful_restart = Some(GracefulRestart {
                restart_time: gr.map_or(120, |g| g.restart_time),
                restarting: false,
            });
        }
        if let Some(secret_ref) = &p.password_secret_ref {
            let secret = view.secrets.iter().find(|s| s.name_any() == secret_ref.name);
            match secret.and_then(|s| s.data.as_ref()?.get(&secret_ref.key)) {
                Some(bytes) => config.password = Some(bytes.0.clone()),
                None => {
                    out.problems.push(format!(
                        "BgpPeer {}: Secret '{}' with key '{}' not found in the agent's namespace; not connecting",
                        peer.name_any(),
                        secret_ref.name,
                        secret_ref.key
                    ));
                    continue;
                }
            }
        }
        out.peers.insert(address, config);
        out.names.insert(address, peer.name_any());
    }
    if out.peers.is_empty() {
        return out;
    }
    out.speaker = Some(SpeakerConfig {
        local_asn: asn,
        router_id,
    });
    let eips: BTreeMap<String, &Arc<Eip>> = view.eips.iter().map(|e| (e.name_any(), e)).collect();
    for (ip, a) in view.announcements {
        if a.protocol != Protocol::Bgp || !a.eligible_nodes.contains(view.node) {
            continue;
        }
        let policy = eips
            .get(&a.eip)
            .and_then(|e| e.spec.bgp.as_ref())
            .map(route_policy)
            .unwrap_or_default();
        out.routes.insert(IpNet::from(*ip), policy);
    }
    out
}

/// A BgpPeer's families as the speaker's, in a fixed order and without duplicates.
fn families(families: &[AddressFamily]) -> Vec<Afi> {
    [(AddressFamily::Ipv4, Afi::IPV4), (AddressFamily::Ipv6, Afi::IPV6)]
        .into_iter()
        .filter(|(f, _)| families.contains(f))
        .map(|(_, afi)| afi)
        .collect()
}

/// An Eip's `spec.bgp` as route attributes. The CRD's patterns keep malformed values out; any that get through are
/// skipped (the same parsers as `herald announce bgp`).
fn route_policy(bgp: &herald_api::eip::EipBgp) -> RoutePolicy {
    RoutePolicy {
        communities: bgp.communities.iter().filter_map(|c| parse_community(c).ok()).collect(),
        large_communities: bgp
            .large_communities
            .iter()
            .filter_map(|c| parse_large_community(c).ok())
            .collect(),
        ..Default::default()
    }
}

/// Applies plans to a speaker.
#[derive(Default)]
pub struct BgpAnnouncer {
    speaker: Option<(SpeakerConfig, Speaker)>,
    problems: Vec<String>,
    /// Some peer negotiates graceful restart: stop without Cease so routers keep the routes across a restart.
    graceful: bool,
    /// `BgpPeer` name per peer address, from the last plan.
    names: BTreeMap<IpAddr, String>,
    /// The session state last written to each `BgpPeer`'s status: (state, last error).
    reported: BTreeMap<IpAddr, (String, Option<String>)>,
    /// Why each peer was last refused (or runs without its passive side), so a refusal is logged once, not on every
    /// wake.
    refused: BTreeMap<IpAddr, String>,
    /// Passive peers that could not listen and run connecting out only, by the configuration that failed: that
    /// configuration is not tried again (which would restart the running session on every wake) until it changes.
    active_only: BTreeMap<IpAddr, PeerConfig>,
}

impl BgpAnnouncer {
    /// Brings the speaker in line with `plan`.
    pub async fn apply(&mut self, plan: BgpPlan) {
        self.graceful = plan.peers.values().any(|p| p.graceful_restart.is_some());
        self.names = plan.names.clone();
        if plan.problems != self.problems {
            for p in &plan.problems {
                warn!("{p}");
            }
            self.problems = plan.problems.clone();
        }
        let Some(config) = plan.speaker else {
            if let Some((_, speaker)) = self.speaker.take() {
                info!("BGP mode no longer configured for this node: withdrawing and closing sessions");
                speaker.shutdown(ShutdownMode::Withdraw).await;
            }
            return;
        };
        if self.speaker.as_ref().is_some_and(|(c, _)| *c != config)
            && let Some((_, old)) = self.speaker.take()
        {
            info!(asn = config.local_asn, router_id = %config.router_id, "BGP identity changed: restarting the speaker");
            old.shutdown(ShutdownMode::Withdraw).await;
        }
        let (_, speaker) = self.speaker.get_or_insert_with(|| {
            info!(asn = config.local_asn, router_id = %config.router_id, "starting the BGP speaker");
            (config.clone(), Speaker::new(config))
        });
        let current: Vec<IpAddr> = speaker.peers().iter().map(|p| p.address).collect();
        for address in current.into_iter().filter(|a| !plan.peers.contains_key(a)) {
            if let Err(e) = speaker.remove_peer(address).await {
                warn!(peer = %address, error = %e, "cannot remove BGP peer");
            }
        }
        let mut refused = BTreeMap::new();
        let mut active_only = BTreeMap::new();
        for peer in plan.peers.into_values() {
            let address = peer.address;
            let active = PeerConfig {
                passive: false,
                ..peer.clone()
            };
            let error = if self.active_only.get(&address) == Some(&peer) {
                // Still the configuration that could not listen: keep its session (connecting out) as it is.
                active_only.insert(address, peer);
                match speaker.set_peer(active).await {
                    Ok(()) => self.refused.get(&address).cloned().unwrap_or_default(),
                    Err(e) => e.to_string(),
                }
            } else {
                match speaker.set_peer(peer.clone()).await {
                    Ok(()) => continue,
                    // Passive means "also accept": without a listening socket the session still connects out.
                    Err(e @ (herald_bgp::Error::Listen { .. } | herald_bgp::Error::ListenConflict { .. })) => {
                        active_only.insert(address, peer);
                        match speaker.set_peer(active).await {
                            Ok(()) => format!("{e}; connecting out only"),
                            Err(e) => e.to_string(),
                        }
                    }
                    Err(e) => e.to_string(),
                }
            };
            if self.refused.get(&address) != Some(&error) {
                warn!(peer = %address, error, "BGP peer refused");
            }
            refused.insert(address, error);
        }
        self.refused = refused;
        self.active_only = active_only;
        if *speaker.routes() != plan.routes {
            info!(routes = plan.routes.len(), "BGP routes changed");
            speaker.set_routes(plan.routes);
        }
    }

    /// Writes this node's session entry into each `BgpPeer`'s status when its state changed since the last write
    /// (never periodically). Other nodes' entries are kept: each write is a compare-and-swap on the resourceVersion.
    pub async fn report(&mut self, client: &kube::Client, node: &str) {
        let Some((_, speaker)) = &self.speaker else { return };
        for status in speaker.peers() {
            let now = (status.state.to_string(), status.last_error.clone());
            if self.reported.get(&status.address) == Some(&now) {
                continue;
            }
            let Some(name) = self.names.get(&status.address) else {
                continue;
            };
            let api: kube::Api<BgpPeer> = kube::Api::all(client.clone());
            match write_session(&api, name, node, &now.0, now.1.as_deref()).await {
                Ok(()) => {
                    info!(peer = %status.address, node, state = now.0, "BGP session state");
                    self.reported.insert(status.address, now);
                }
                Err(e) => warn!(peer = %status.address, error = %e, "cannot write BgpPeer status"),
            }
        }
        self.reported.retain(|a, _| self.names.contains_key(a));
    }

    /// Stops the speaker. With graceful restart negotiated, routers keep the routes for the restart time (an agent
    /// upgrade loses no traffic); otherwise the sessions close with Cease and routers withdraw at once.
    pub async fn shutdown(self, client: &kube::Client, node: &str) {
        if let Some((_, speaker)) = self.speaker {
            let api: kube::Api<BgpPeer> = kube::Api::all(client.clone());
            for name in self.names.values() {
                if let Err(e) = write_session(&api, name, node, "Idle", Some("agent stopped")).await {
                    warn!(peer = name, error = %e, "cannot write BgpPeer status");
                }
            }
            let mode = if self.graceful {
                ShutdownMode::GracefulRestart
            } else {
                ShutdownMode::Withdraw
            };
            info!(?mode, "stopping the BGP speaker");
            speaker.shutdown(mode).await;
        }
    }
}

/// Sets `node`'s entry in a BgpPeer's `status.sessions` and recomputes the counts (CAS, retried on conflict).
async fn write_session(
    api: &kube::Api<BgpPeer>,
    name: &str,
    node: &str,
    state: &str,
    error: Option<&str>,
) -> Result<(), kube::Error> {
    use herald_api::bgp::{BgpPeerStatus, PeerSession};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::{Patch, PatchParams};
    let mut attempt = 0;
    loop {
        let peer = api.get_status(name).await?;
        let mut status: BgpPeerStatus = peer.status.clone().unwrap_or_default();
        status.sessions.retain(|s| s.node != node);
        status.sessions.push(PeerSession {
            node: node.to_string(),
            state: state.to_string(),
            last_transition_time: Some(Time(jiff::Timestamp::now())),
            last_error: error.map(str::to_string),
        });
        status.sessions.sort_by(|a, b| a.node.cmp(&b.node));
        status.session_count = status.sessions.len() as u32;
        status.established = status.sessions.iter().filter(|s| s.state == "Established").count() as u32;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": peer.metadata.resource_version},
            "status": status,
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => attempt += 1,
            other => return other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_bgp::packet::LargeCommunity;
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn node(labels: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels},
            "status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "198.51.100.11"}]}}))
        .unwrap()
    }

    fn announcement(eip: &str, protocol: Protocol, nodes: &[&str]) -> Announcement {
        Announcement {
            eip: eip.into(),
            protocol,
            interface: None,
            services: BTreeSet::new(),
            eligible_nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ineligible_reason: None,
        }
    }

    struct Fixture {
        node: Node,
        confs: Vec<Arc<BgpConf>>,
        peers: Vec<Arc<BgpPeer>>,
        secrets: Vec<Arc<Secret>>,
        eips: Vec<Arc<Eip>>,
        announcements: BTreeMap<IpAddr, Announcement>,
    }

    impl Fixture {
        fn new() -> Self {
            let mut announcements = BTreeMap::new();
            announcements.insert(
                "203.0.113.10".parse().unwrap(),
                announcement("routed", Protocol::Bgp, &["n1", "n2"]),
            );
            announcements.insert(
                "203.0.113.11".parse().unwrap(),
                announcement("routed", Protocol::Bgp, &["n2"]),
            );
            announcements.insert(
                "192.0.2.10".parse().unwrap(),
                announcement("lan", Protocol::Layer2, &["n1"]),
            );
            Fixture {
                node: node(json!({"rack": "a"})),
                confs: vec![obj(json!({"metadata": {"name": "default"}, "spec": {"asn": 64512,
                    "overrides": [{"nodeSelector": {"matchLabels": {"rack": "b"}}, "asn": 64513}]}}))],
                peers: vec![
                    obj(
                        json!({"metadata": {"name": "leaf-a"}, "spec": {"address": "198.51.100.1", "asn": 64500,
                        "nodeSelector": {"matchLabels": {"rack": "a"}}}}),
                    ),
                    obj(
                        json!({"metadata": {"name": "leaf-b"}, "spec": {"address": "198.51.100.2", "asn": 64501,
                        "nodeSelector": {"matchLabels": {"rack": "b"}}}}),
                    ),
                ],
                secrets: vec![],
                eips: vec![obj(
                    json!({"metadata": {"name": "routed"}, "spec": {"addresses": ["203.0.113.0/24"],
                    "protocol": "bgp", "bgp": {"communities": ["64512:100"], "largeCommunities": ["64512:1:2"]}}}),
                )],
                announcements,
            }
        }

        fn plan(&self) -> BgpPlan {
            plan(&BgpView {
                node: "n1",
                node_object: Some(&self.node),
                confs: &self.confs,
                peers: &self.peers,
                secrets: &self.secrets,
                eips: &self.eips,
                announcements: &self.announcements,
            })
        }
    }

    #[test]
    fn rack_peer_router_id_and_eligible_bgp_routes() {
        let f = Fixture::new();
        let p = f.plan();
        let speaker = p.speaker.unwrap();
        assert_eq!(speaker.local_asn, 64512);
        assert_eq!(
            speaker.router_id,
            "198.51.100.11".parse::<Ipv4Addr>().unwrap(),
            "from the InternalIP"
        );
        assert_eq!(
            p.peers.keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["198.51.100.1"],
            "only its rack's leaf"
        );
        let routes: Vec<String> = p.routes.keys().map(ToString::to_string).collect();
        assert_eq!(
            routes,
            ["203.0.113.10/32"],
            "not the IP it is ineligible for, not the layer2 IP"
        );
        let policy = &p.routes.values().next().unwrap();
        assert_eq!(policy.communities, [64512 << 16 | 100]);
        assert_eq!(policy.large_communities, [LargeCommunity(64512, 1, 2)]);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn rack_override_and_no_conf_means_no_speaker() {
        let mut f = Fixture::new();
        f.node = node(json!({"rack": "b"}));
        let p = f.plan();
        assert_eq!(p.speaker.unwrap().local_asn, 64513);
        assert_eq!(p.peers.keys().next().unwrap().to_string(), "198.51.100.2");
        f.confs.clear();
        assert_eq!(f.plan(), BgpPlan::default());
    }

    #[test]
    fn passive_families_and_local_asn_reach_the_peer_config() {
        let mut f = Fixture::new();
        f.peers = vec![obj(
            json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500,
            "passive": true, "families": ["ipv6", "ipv4", "ipv6"], "localAsn": 65001}}),
        )];
        let p = f.plan();
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let peer = p.peers.values().next().unwrap();
        assert!(peer.passive);
        assert_eq!(peer.listen_port, 179);
        assert_eq!(peer.families, [Afi::IPV4, Afi::IPV6]);
        assert_eq!(peer.local_asn, Some(65001));
        assert_eq!(p.speaker.unwrap().local_asn, 64512, "the speaker keeps the node's ASN");

        // Defaults: connect out only, both families, the node's ASN.
        f.peers = vec![obj(
            json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500,
            "families": ["ipv4"]}}),
        )];
        let p = f.plan();
        let peer = p.peers.values().next().unwrap();
        assert!(!peer.passive);
        assert_eq!(peer.families, [Afi::IPV4]);
        assert_eq!(peer.local_asn, None);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(
            Fixture::new().plan().peers.values().next().unwrap().families,
            [Afi::IPV4, Afi::IPV6]
        );
    }

    #[test]
    fn empty_families_is_a_problem_and_skips_the_peer() {
        let mut f = Fixture::new();
        f.peers = vec![obj(
            json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500,
            "families": []}}),
        )];
        let p = f.plan();
        assert!(p.peers.is_empty());
        assert!(p.problems[0].contains("spec.families is empty"), "{:?}", p.problems);
    }

    #[test]
    fn missing_password_secret_is_a_problem_and_skips_the_peer() {
        let mut f = Fixture::new();
        f.peers = vec![obj(
            json!({"metadata": {"name": "md5"}, "spec": {"address": "198.51.100.1", "asn": 64500,
            "passwordSecretRef": {"name": "bgp-auth"}}}),
        )];
        let p = f.plan();
        assert!(p.peers.is_empty() && p.speaker.is_none());
        assert!(p.problems[0].contains("Secret 'bgp-auth'"), "{:?}", p.problems);
        f.secrets = vec![obj(
            json!({"metadata": {"name": "bgp-auth"}, "data": {"password": "czNjcmV0"}}),
        )];
        let p = f.plan();
        assert_eq!(
            p.peers.values().next().unwrap().password.as_deref(),
            Some(&b"s3cret"[..])
        );
    }

    #[tokio::test]
    async fn a_passive_peer_that_cannot_listen_connects_out_and_is_not_restarted_on_every_wake() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = PeerConfig::new("127.0.0.2".parse().unwrap(), 64500);
        peer.passive = true;
        peer.local_address = Some("127.0.0.1".parse().unwrap());
        peer.listen_port = taken.local_addr().unwrap().port();
        let plan = |peer: &PeerConfig| BgpPlan {
            speaker: Some(SpeakerConfig {
                local_asn: 64512,
                router_id: Ipv4Addr::new(192, 0, 2, 11),
            }),
            peers: BTreeMap::from([(peer.address, peer.clone())]),
            ..Default::default()
        };
        let mut announcer = BgpAnnouncer::default();
        announcer.apply(plan(&peer)).await;
        let speaker = &announcer.speaker.as_ref().unwrap().1;
        assert_eq!(speaker.peers().len(), 1, "the session runs, connecting out");
        assert!(announcer.refused[&peer.address].contains("connecting out only"));
        let session = speaker.watch_peer(peer.address).unwrap();
        for _ in 0..3 {
            announcer.apply(plan(&peer)).await;
        }
        assert!(
            session.has_changed().is_ok(),
            "the same session: never restarted by a wake"
        );
        // A changed configuration is tried again (here: a free port, so it listens now).
        drop(taken);
        peer.hold_time = 30;
        announcer.apply(plan(&peer)).await;
        assert!(announcer.refused.is_empty(), "{:?}", announcer.refused);
        assert!(session.has_changed().is_err(), "the changed peer got a new session");
        announcer
            .speaker
            .take()
            .unwrap()
            .1
            .shutdown(ShutdownMode::Withdraw)
            .await;
    }
}
