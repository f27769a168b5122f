//! Tests of BGP mode: the plan, the applier, the status texts.

use super::*;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::announcer::desired::Announcement;
use herald_api::decode::Unreadable;
use herald_api::{BgpConf, Eip, Protocol};
use herald_bgp::packet::Afi;
use herald_bgp::packet::LargeCommunity;
use k8s_openapi::api::core::v1::{Node, Secret};
use serde_json::{Value, json};

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
        services: Vec::new(),
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
    unreadable_confs: Vec<Unreadable>,
    unreadable_peers: Vec<Unreadable>,
    unreadable_secrets: Vec<Unreadable>,
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
                "protocol": "bgp", "bgp": {"communities": ["64512:100"], "largeCommunities": ["64512:1:2"], "localPref": 250}}}),
            )],
            announcements,
            unreadable_confs: vec![],
            unreadable_peers: vec![],
            unreadable_secrets: vec![],
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
            unreadable: Unreadables {
                confs: &self.unreadable_confs,
                peers: &self.unreadable_peers,
                secrets: &self.unreadable_secrets,
            },
        })
    }

    /// The plan's verdict on BgpPeer `name`: `Ok(())` valid, `Err((reason, message))`.
    fn verdict(&self, name: &str) -> Result<(), (&'static str, String)> {
        match self.plan().verdicts.get(name).expect("the peer is judged") {
            None => Ok(()),
            Some(p) => Err((p.reason, p.message.clone())),
        }
    }
}

fn unreadable<K: serde::de::DeserializeOwned>(v: Value) -> Unreadable {
    match serde_json::from_value::<Lenient<K>>(v).unwrap() {
        Lenient::Unreadable(u) => *u,
        Lenient::Read(_) => panic!("expected an unreadable object"),
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
    assert_eq!(policy.local_pref, Some(250), "the pool's LOCAL_PREF (for iBGP peers)");
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
    let p = f.plan();
    assert!(p.speaker.is_none() && p.peers.is_empty() && p.routes.is_empty());
    assert_eq!(p.conf_verdict, None);
    assert_eq!(
        p.verdicts.get("leaf-b"),
        Some(&None),
        "peers are judged without a BgpConf too"
    );
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
    // The BgpConf's listen port (one that needs no NET_BIND_SERVICE); the router's own port is unchanged.
    f.confs = vec![obj(
        json!({"metadata": {"name": "default"}, "spec": {"asn": 64512, "listenPort": 1179}}),
    )];
    let p = f.plan();
    let peer = p.peers.values().next().unwrap();
    assert_eq!((peer.port, peer.listen_port), (179, 1179));
    assert_eq!(p.verdicts.get("leaf"), Some(&None));

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
    assert_eq!(
        (peer.keepalive_time, peer.connect_retry_max),
        (None, herald_bgp::fsm::RETRY_MAX)
    );
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(
        Fixture::new().plan().peers.values().next().unwrap().families,
        [Afi::IPV4, Afi::IPV6]
    );

    // keepaliveTime and connectRetryTime (in the CRD, and read: they once were not).
    f.peers = vec![obj(
        json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500,
        "holdTime": 30, "keepaliveTime": 5, "connectRetryTime": 10}}),
    )];
    let p = f.plan();
    let peer = p.peers.values().next().unwrap();
    assert_eq!(
        (peer.hold_time, peer.keepalive_time, peer.connect_retry_max),
        (30, Some(5), std::time::Duration::from_secs(10))
    );
    assert_eq!(peer.bfd, None, "BFD is off unless asked for");

    // bfd: {} turns BFD on with 300 ms × 3; each timer can be set.
    let ms = std::time::Duration::from_millis;
    for (bfd, want) in [
        (json!({}), (ms(300), ms(300), 3)),
        (
            json!({"transmitInterval": 100, "receiveInterval": 50, "detectMultiplier": 5}),
            (ms(100), ms(50), 5),
        ),
    ] {
        f.peers = vec![obj(
            json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500, "bfd": bfd}}),
        )];
        let p = f.plan();
        let t = p.peers.values().next().unwrap().bfd.expect("BFD on");
        assert_eq!((t.desired_min_tx, t.required_min_rx, t.detect_mult), want);
    }
    // BFD is single hop: with ebgpMultihop above 1 the peer is refused, with the reason.
    f.peers = vec![obj(
        json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500, "bfd": {},
        "ebgpMultihop": 3}}),
    )];
    let p = f.plan();
    assert!(p.peers.is_empty());
    let why = format!("{:?}", p.verdicts.get("leaf"));
    assert!(why.contains("BFD runs single hop"), "{why}");
}

fn session(node: &str, listening: Option<bool>, error: Option<&str>) -> herald_api::bgp::PeerSession {
    herald_api::bgp::PeerSession {
        node: node.into(),
        state: "Established".into(),
        last_transition_time: None,
        last_error: error.map(str::to_string),
        listening,
        bfd: None,
    }
}

#[test]
fn the_listening_condition_names_the_nodes_that_cannot_accept_the_routers_connections() {
    assert_eq!(listening_condition(&[]), None);
    assert_eq!(
        listening_condition(&[session("n1", None, None)]),
        None,
        "not passive: no condition"
    );
    let (ok, reason, message) =
        listening_condition(&[session("n1", Some(true), None), session("n2", Some(true), None)]).unwrap();
    assert!(ok);
    assert_eq!(reason, "Listening");
    assert_eq!(
        message,
        "every node with a session accepts the router's connections: n1, n2"
    );
    let denied = "BGP peer 198.51.100.1 is passive but Herald cannot listen on 0.0.0.0:179: Permission denied";
    let (ok, reason, message) = listening_condition(&[
        session("n1", Some(true), None),
        session("n2", Some(false), Some(denied)),
        session("n3", Some(false), Some("another")),
        session("n4", None, Some("agent stopped")),
    ])
    .unwrap();
    assert!(!ok, "a session that is up does not make a deaf node healthy");
    assert_eq!(reason, "ListenFailed");
    assert_eq!(
        message,
        format!("2 of 3 nodes cannot accept the router's connections and only connect out (n2, n3); n2: {denied}")
    );
}

#[test]
fn a_refused_listen_on_a_low_port_says_what_to_change_in_herald() {
    let error = |kind, port| herald_bgp::Error::Listen {
        peer: "198.51.100.1".parse().unwrap(),
        local: std::net::SocketAddr::from(([0, 0, 0, 0], port)),
        source: std::io::Error::from(kind),
    };
    let advice = listen_advice(&error(std::io::ErrorKind::PermissionDenied, 179));
    assert!(
        advice.contains("bgp.passive=true") && advice.contains("spec.listenPort"),
        "{advice}"
    );
    assert_eq!(listen_advice(&error(std::io::ErrorKind::AddrInUse, 179)), "");
    assert_eq!(listen_advice(&error(std::io::ErrorKind::PermissionDenied, 1179)), "");
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
    let (reason, message) = f.verdict("leaf").unwrap_err();
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.families is empty"), "{message}");
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
    let (reason, message) = f.verdict("md5").unwrap_err();
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("Secret 'bgp-auth'"), "{message}");
    f.secrets = vec![obj(
        json!({"metadata": {"name": "bgp-auth"}, "data": {"other": "czNjcmV0"}}),
    )];
    let (_, message) = f.verdict("md5").unwrap_err();
    assert!(message.contains("has no key 'password'"), "{message}");
    f.secrets = vec![obj(json!({"metadata": {"name": "bgp-auth"}, "data": {"password": ""}}))];
    let (_, message) = f.verdict("md5").unwrap_err();
    assert!(message.contains("password must be 1 to 80 bytes"), "{message}");
    f.secrets = vec![];
    f.unreadable_secrets = vec![unreadable::<Secret>(
        json!({"metadata": {"name": "bgp-auth"}, "data": {"password": "not base64!"}}),
    )];
    let (reason, _) = f.verdict("md5").unwrap_err();
    assert_eq!(reason, "SecretUnreadable");
    f.unreadable_secrets = vec![];
    f.secrets = vec![obj(
        json!({"metadata": {"name": "bgp-auth"}, "data": {"password": "czNjcmV0"}}),
    )];
    let p = f.plan();
    assert_eq!(
        p.peers.values().next().unwrap().password.as_deref(),
        Some(&b"s3cret"[..])
    );
    assert_eq!(f.verdict("md5"), Ok(()));
}

#[test]
fn an_invalid_peer_is_explained_and_the_others_still_peer() {
    let mut f = Fixture::new();
    let peer = |name: &str, spec: Value| obj::<BgpPeer>(json!({"metadata": {"name": name}, "spec": spec}));
    f.peers = vec![
        peer("asn0", json!({"address": "198.51.100.1", "asn": 0})),
        peer(
            "trans",
            json!({"address": "198.51.100.2", "asn": 64500, "localAsn": 23456}),
        ),
        peer("hold", json!({"address": "198.51.100.3", "asn": 64500, "holdTime": 2})),
        peer(
            "source",
            json!({"address": "198.51.100.4", "asn": 64500, "sourceAddress": "eth0"}),
        ),
        peer("mcast", json!({"address": "224.0.0.5", "asn": 64500})),
        peer(
            "selector",
            json!({"address": "198.51.100.6", "asn": 64500,
            "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "Near"}]}}),
        ),
        peer("good", json!({"address": "198.51.100.7", "asn": 64500})),
    ];
    let p = f.plan();
    assert_eq!(
        p.peers.keys().map(ToString::to_string).collect::<Vec<_>>(),
        ["198.51.100.7"]
    );
    assert!(p.speaker.is_some());
    let expect = [
        ("asn0", "spec.asn 0 is reserved (RFC 7607)"),
        ("trans", "spec.localAsn 23456 is AS_TRANS"),
        ("hold", "hold time 2s is not allowed"),
        ("source", "spec.sourceAddress 'eth0' is not an IP address"),
        ("mcast", "spec.address '224.0.0.5' is not a router's IP address"),
        ("selector", "spec.nodeSelector"),
    ];
    for (name, text) in expect {
        let (reason, message) = f.verdict(name).unwrap_err();
        assert_eq!(reason, "InvalidSpec", "{name}");
        assert!(message.contains(text), "{name}: {message}");
    }
    assert_eq!(f.verdict("good"), Ok(()));
}

#[test]
fn unreadable_objects_are_judged_and_an_unreadable_conf_turns_bgp_off() {
    let mut f = Fixture::new();
    f.unreadable_peers = vec![unreadable::<BgpPeer>(
        json!({"metadata": {"name": "broken"}, "spec": {"address": "198.51.100.9", "asn": "many"}}),
    )];
    let (reason, message) = f.verdict("broken").unwrap_err();
    assert_eq!(reason, "Unreadable");
    assert!(message.contains("spec.asn"), "{message}");
    assert_eq!(f.plan().peers.len(), 1, "the readable peer still peers");

    f.unreadable_confs = vec![unreadable::<BgpConf>(
        json!({"metadata": {"name": "default"}, "spec": {"asn": 64512, "gracefulRestart": {"restartTime": "2m"}}}),
    )];
    let p = f.plan();
    assert!(
        p.speaker.is_none() && p.peers.is_empty(),
        "settings unknown: BGP mode is off"
    );
    let conf = p.conf_verdict.unwrap().unwrap();
    assert_eq!(conf.reason, "Unreadable");
    assert!(
        conf.message.contains("spec.gracefulRestart.restartTime"),
        "{}",
        conf.message
    );
}

#[test]
fn failed_status_writes_back_off_and_a_success_resets() {
    let mut retry = Retry::default();
    let t0 = tokio::time::Instant::now();
    let s = std::time::Duration::from_secs;
    let refused: Result<(), ()> = Err(());
    assert!(retry.due("BgpPeer a", t0));
    retry.record("BgpPeer a".into(), t0, &refused);
    assert!(!retry.due("BgpPeer a", t0 + s(0)) && retry.due("BgpPeer a", t0 + s(1)));
    assert!(retry.due("BgpPeer b", t0), "other objects are not held up");
    let mut at = t0;
    for _ in 0..20 {
        retry.record("BgpPeer a".into(), at, &refused);
        at += s(1);
    }
    assert!(
        !retry.due("BgpPeer a", at + s(200)) && retry.due("BgpPeer a", at + s(300)),
        "at most 5 minutes"
    );
    retry.record("BgpPeer a".into(), at, &Ok::<(), ()>(()));
    assert!(retry.due("BgpPeer a", at));
}

#[test]
fn an_invalid_conf_is_explained() {
    let mut f = Fixture::new();
    for (spec, text) in [
        (json!({"asn": 0}), "spec.asn 0 is reserved"),
        (
            json!({"asn": 64512, "routerId": "router-1"}),
            "spec.routerId 'router-1' is not an IPv4 address",
        ),
        (
            json!({"asn": 64512, "overrides": [{"nodeSelector": {}, "asn": 0}]}),
            "spec.overrides[0].asn 0",
        ),
        (
            json!({"asn": 64512, "routerId": "0.0.0.0"}),
            "spec.routerId 0.0.0.0 is not a BGP identifier (RFC 6286",
        ),
        (
            json!({"asn": 64512, "overrides": [{"nodeSelector": {}, "routerId": "0.0.0.0"}]}),
            "spec.overrides[0].routerId 0.0.0.0 is not a BGP identifier",
        ),
    ] {
        f.confs = vec![obj(json!({"metadata": {"name": "default"}, "spec": spec}))];
        let p = f.plan();
        assert!(p.speaker.is_none());
        let problem = p.conf_verdict.unwrap().unwrap();
        assert!(problem.message.contains(text), "{}", problem.message);
    }
    f.confs = vec![obj(json!({"metadata": {"name": "default"}, "spec": {"asn": 64512}}))];
    assert_eq!(f.plan().conf_verdict, Some(None));
}

async fn stop(mut announcer: BgpAnnouncer) {
    if let Some((_, speaker)) = announcer.speaker.take() {
        speaker.shutdown(ShutdownMode::Withdraw).await;
    }
}

/// A plan for a speaker of AS 64512 with `peer` alone.
fn one_peer_plan(peer: &PeerConfig) -> BgpPlan {
    BgpPlan {
        speaker: Some(SpeakerConfig {
            local_asn: 64512,
            router_id: Ipv4Addr::new(192, 0, 2, 11),
        }),
        peers: BTreeMap::from([(peer.address, peer.clone())]),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_passive_peer_that_cannot_listen_connects_out_and_is_not_restarted_on_every_wake() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = PeerConfig::new("127.0.0.2".parse().unwrap(), 64500);
    peer.passive = true;
    peer.local_address = Some("127.0.0.1".parse().unwrap());
    peer.listen_port = taken.local_addr().unwrap().port();
    let plan = one_peer_plan;
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
    stop(announcer).await;
}

#[tokio::test]
async fn a_peer_whose_bfd_cannot_start_runs_without_it_says_why_and_is_not_restarted() {
    // Port 3784 held here (or by someone else: taken either way), as FRR's bfdd on the node would hold it.
    let _taken = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, herald_bfd::tasks::PORT));
    let mut peer = PeerConfig::new("127.0.0.2".parse().unwrap(), 64500);
    peer.bfd = Some(herald_bfd::Timers::default());
    let plan = one_peer_plan(&peer);
    let mut announcer = BgpAnnouncer::default();
    announcer.apply(plan.clone()).await;
    let speaker = &announcer.speaker.as_ref().unwrap().1;
    assert_eq!(speaker.peers().len(), 1, "the BGP session runs");
    let why = &announcer.refused[&peer.address];
    assert!(
        why.contains("another BFD daemon") && why.contains("running without BFD"),
        "{why}"
    );
    let session = speaker.watch_peer(peer.address).unwrap();
    for _ in 0..3 {
        announcer.apply(plan.clone()).await;
    }
    assert!(
        session.has_changed().is_ok(),
        "BFD is tried again on each wake, the BGP session never restarted"
    );
    assert!(announcer.refused[&peer.address].contains("running without BFD"));
    stop(announcer).await;
}
