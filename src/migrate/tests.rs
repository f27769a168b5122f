//! The conversion on configuration written as each project's documentation shows it (`tests/migrate/`), and on
//! input that is wrong in every way we could think of.

use std::net::IpAddr;

use herald_api::Protocol;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const METALLB_CRDS: &str = include_str!("../../tests/migrate/metallb-crds.yaml");
const METALLB_CONFIGMAP: &str = include_str!("../../tests/migrate/metallb-configmap.yaml");
const METALLB_SERVICES: &str = include_str!("../../tests/migrate/services-metallb.yaml");
const OPENELB_V1ALPHA1: &str = include_str!("../../tests/migrate/openelb-v1alpha1.yaml");
const OPENELB_V1ALPHA2: &str = include_str!("../../tests/migrate/openelb-v1alpha2.yaml");
const OPENELB_SERVICES: &str = include_str!("../../tests/migrate/services-openelb.yaml");

fn run(source: Source, files: &[&str]) -> Migration {
    let mut docs = Vec::new();
    for (i, text) in files.iter().enumerate() {
        docs.extend(parse_documents(&format!("file {i}"), text).unwrap());
    }
    migrate(source, docs, &Options::default())
}

fn eip<'a>(m: &'a Migration, name: &str) -> &'a herald_api::EipSpec {
    &m.eips
        .iter()
        .find(|e| e.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Eip {name}"))
        .spec
}

fn peer<'a>(m: &'a Migration, name: &str) -> &'a herald_api::BgpPeerSpec {
    &m.peers
        .iter()
        .find(|e| e.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no BgpPeer {name}"))
        .spec
}

fn has(m: &Migration, kind: Kind, subject: &str, text: &str) -> bool {
    m.findings
        .iter()
        .any(|f| f.kind == kind && f.subject.contains(subject) && f.message.contains(text))
}

fn outcome<'a>(m: &'a Migration, service: &str) -> &'a Outcome {
    &m.services
        .iter()
        .find(|s| s.service == service)
        .unwrap_or_else(|| panic!("no Service {service}"))
        .outcome
}

/// The output, read back as `kubectl apply` would send it and as the agent reads it: every Eip is one the
/// allocator accepts.
fn round_trip(m: &Migration, source: Source) -> Vec<Value> {
    let yaml = render_yaml(m, source).unwrap();
    let docs = parse_documents("output", &yaml).unwrap();
    assert_eq!(
        docs.len(),
        m.eips.len() + m.peers.len() + m.secrets.len() + usize::from(m.bgp_conf.is_some())
    );
    for doc in &docs {
        match kind(doc) {
            "Eip" => {
                let eip: herald_api::Eip = serde_json::from_value(doc.clone()).unwrap();
                let spec = crate::adapter::pool_spec(&eip).unwrap();
                herald_ipam::Pool::parse(&spec).unwrap_or_else(|e| panic!("{}: {e}", name(doc)));
            }
            "BgpPeer" => {
                serde_json::from_value::<herald_api::BgpPeer>(doc.clone()).unwrap();
            }
            "BgpConf" => {
                serde_json::from_value::<herald_api::BgpConf>(doc.clone()).unwrap();
            }
            "Secret" => {
                serde_json::from_value::<Secret>(doc.clone()).unwrap();
            }
            other => panic!("unexpected {other} in the output"),
        }
        assert!(doc.get("status").is_none(), "{doc}");
    }
    docs
}

#[test]
fn metallb_crds_become_eips_peers_and_a_bgp_conf() {
    let m = run(Source::Metallb, &[METALLB_CRDS, METALLB_SERVICES]);
    round_trip(&m, Source::Metallb);
    // Pools keep their names (Services' pool annotations keep working) and exactly their addresses.
    let lan = eip(&m, "lan");
    assert_eq!(lan.protocol, Protocol::Layer2);
    assert_eq!(
        lan.addresses,
        ["192.0.2.200-192.0.2.219", "2001:db8::200-2001:db8::21f"]
    );
    assert_eq!(
        (lan.priority, lan.namespaces.as_slice()),
        (10, &["web".to_string(), "dns".into()][..])
    );
    assert!(lan.namespace_selector.is_some() && lan.service_selector.is_some());
    // Interfaces eth0 and bond0 from one advertisement, eno1 from the catch-all one: no single interface.
    assert_eq!(lan.interface, None);
    assert!(has(&m, Kind::Differs, "lan", "bond0, eno1, eth0"));
    // avoidBuggyIPs: without .0 and .255; announced in BGP with the advertisement's attributes.
    let public = eip(&m, "public");
    assert_eq!(public.protocol, Protocol::Bgp);
    assert_eq!(public.addresses, ["203.0.113.1-203.0.113.254"]);
    let bgp = public.bgp.as_ref().unwrap();
    assert_eq!(bgp.local_pref, Some(150));
    // NO_ADVERTISE is the Community's name for 65535:65282.
    assert_eq!(bgp.communities, ["65535:65282", "64500:100"]);
    assert_eq!(bgp.large_communities, ["64500:7:42"]);
    // The /24 aggregate (to tor-a only) is reported and shapes nothing: the /32s keep bgp-pools' rack selector.
    assert!(has(
        &m,
        Kind::Dropped,
        "public-aggregate",
        "aggregationLength 24: the aggregate route for pool public"
    ));
    assert!(!has(&m, Kind::Differs, "public-aggregate", "peers tor-a only"));
    let racks = public
        .node_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref())
        .unwrap();
    assert_eq!(
        (racks[0].key.as_str(), racks[0].values.as_deref()),
        ("rack", Some(&["rack-a".into(), "rack-b".into()][..]))
    );
    assert!(has(&m, Kind::Differs, "public", "both in Layer 2"));
    // A CIDR of MetalLB's includes its network and broadcast addresses; Herald's would not: a range.
    let dual = eip(&m, "dual");
    assert_eq!(
        dual.addresses,
        ["198.51.100.64-198.51.100.127", "2001:db8:100::-2001:db8:100::f"]
    );
    assert!(!dual.auto_assign);
    // MetalLB's order: pools pinned by a serviceAllocation (by priority, 0 or none last), then all the others.
    assert_eq!((public.priority, dual.priority), (12, 12));
    assert!(dual.node_selector.is_some());

    let conf = &m.bgp_conf.as_ref().unwrap().spec;
    assert_eq!(conf.asn, 64500);
    assert_eq!(conf.overrides.len(), 1);
    assert_eq!(conf.overrides[0].router_id.as_deref(), Some("192.0.2.250"));
    let tor_a = peer(&m, "tor-a");
    assert_eq!(
        (tor_a.address.as_str(), tor_a.asn, tor_a.local_asn),
        ("192.0.2.1", 64501, None)
    );
    assert_eq!(
        (tor_a.hold_time, tor_a.keepalive_time, tor_a.connect_retry_time),
        (Some(90), Some(30), Some(10))
    );
    assert_eq!(tor_a.graceful_restart, Some(true));
    let bfd = tor_a.bfd.as_ref().unwrap();
    assert_eq!(
        (bfd.receive_interval, bfd.transmit_interval, bfd.detect_multiplier),
        (Some(150), Some(150), Some(3))
    );
    assert!(has(&m, Kind::Dropped, "fast", "echoMode"));
    assert_eq!(tor_a.password_secret_ref.as_ref().unwrap().name, "bgp-md5");
    assert!(has(
        &m,
        Kind::Action,
        "tor-a",
        "kubectl create secret generic bgp-md5 -n herald-system"
    ));
    let tor_b = peer(&m, "tor-b");
    assert_eq!((tor_b.hold_time, tor_b.ebgp_multihop), (Some(90), Some(255)));
    assert!(m.secrets.is_empty(), "the password stays in its Secret");

    // Every Service keeps its IP: the pre-v0.13 sharing annotation is read too.
    assert_eq!(m.services.len(), 6);
    for s in &m.services {
        assert!(matches!(s.outcome, Outcome::Keeps { .. }), "{s}");
    }
    assert_eq!(outcome(&m, "web/shop"), &Outcome::Keeps { eip: "dual".into() });
    let report = render_report(&m, Source::Metallb);
    assert!(
        report.contains("## Services (6 of 6 keep their IPs under Herald)"),
        "{report}"
    );
}

#[test]
fn the_metallb_configmap_converts_like_the_crds() {
    let m = run(Source::Metallb, &[METALLB_CONFIGMAP, METALLB_SERVICES]);
    round_trip(&m, Source::Metallb);
    assert_eq!(eip(&m, "lan").protocol, Protocol::Layer2);
    assert_eq!(eip(&m, "public").protocol, Protocol::Bgp);
    assert_eq!(eip(&m, "public").addresses, ["203.0.113.1-203.0.113.254"]);
    assert!(has(&m, Kind::Dropped, "address-pools[1]", "aggregation-length 24"));
    // web/shop names pool `dual`, which this configuration has not.
    assert!(has(
        &m,
        Kind::Action,
        "web/shop",
        "names pool 'dual', which is not in the output"
    ));
    // The plain-text password: a Secret in Herald's namespace, and the reference.
    assert_eq!(m.secrets.len(), 1);
    let secret = &m.secrets[0];
    assert_eq!(secret.metadata.namespace.as_deref(), Some("herald-system"));
    let peer_a = peer(&m, "peer-192-0-2-1");
    assert_eq!(
        peer_a.password_secret_ref.as_ref().map(|r| r.name.as_str()),
        secret.metadata.name.as_deref()
    );
    assert_eq!(
        (peer_a.hold_time, peer_a.source_address.as_deref()),
        (Some(120), Some("192.0.2.11"))
    );
    assert!(has(&m, Kind::Action, "peers[0]", "plain text"));
    for s in &m.services {
        assert!(matches!(s.outcome, Outcome::Keeps { .. }), "{s}");
    }
}

#[test]
fn openelb_v1alpha2_becomes_eips_peers_and_a_bgp_conf() {
    let m = run(Source::Openelb, &[OPENELB_V1ALPHA2, OPENELB_SERVICES]);
    round_trip(&m, Source::Openelb);
    // The default Eip: Layer 2 on its interface, handed out unasked, after every other Eip.
    let l2 = eip(&m, "eip-layer2");
    assert_eq!(
        (l2.protocol, l2.interface.as_deref(), l2.auto_assign),
        (Protocol::Layer2, Some("eth0"), true)
    );
    assert_eq!(l2.priority, 21);
    // OpenELB's CIDR includes .0 (which it hands out first) and .255; its default protocol is bgp.
    let bgp = eip(&m, "eip-bgp");
    assert_eq!((bgp.protocol, bgp.priority, bgp.auto_assign), (Protocol::Bgp, 5, true));
    assert_eq!(bgp.addresses, ["203.0.113.0-203.0.113.255"]);
    // Bound to web (and a workspace label); dns added, as its Services asked for addresses of the Eip.
    assert_eq!(bgp.namespaces, ["web", "dns"]);
    assert!(has(&m, Kind::Differs, "eip-bgp", "namespace dns added"));
    let v6 = eip(&m, "eip-bgp-v6");
    assert_eq!(
        (v6.protocol, v6.addresses.as_slice()),
        (Protocol::Bgp, &["2001:db8:100::-2001:db8:100::ff".to_string()][..])
    );
    // vip (keepalived) becomes Layer 2; can_reach: is Herald's default; unbound and not default: not unasked.
    let vip = eip(&m, "eip-vip");
    assert_eq!(
        (vip.protocol, vip.interface.as_deref(), vip.disable, vip.auto_assign),
        (Protocol::Layer2, None, true, false)
    );
    assert!(has(&m, Kind::Differs, "eip-vip", "keepalived"));

    let conf = &m.bgp_conf.as_ref().unwrap().spec;
    assert_eq!(
        (conf.asn, conf.listen_port, conf.router_id.as_deref()),
        (64500, Some(17900), None)
    );
    assert_eq!(conf.overrides.len(), 2, "asPerRack");
    let rack = conf.overrides[0].node_selector.match_labels.as_ref().unwrap();
    assert_eq!(
        rack.get("openelb.kubesphere.io/rack").map(String::as_str),
        Some("leaf1")
    );
    assert_eq!(conf.overrides[0].asn, Some(64511));
    assert!(
        conf.graceful_restart
            .as_ref()
            .is_some_and(|g| g.enabled && g.restart_time == 120)
    );
    let leaf1 = peer(&m, "bgppeer-leaf1");
    assert_eq!(leaf1.families, [herald_api::bgp::AddressFamily::Ipv4]);
    assert_eq!(
        (leaf1.hold_time, leaf1.keepalive_time, leaf1.connect_retry_time),
        (Some(90), Some(30), Some(10))
    );
    assert!(leaf1.node_selector.is_some());
    let leaf2 = peer(&m, "bgppeer-leaf2");
    assert!(leaf2.passive);
    assert_eq!((leaf2.ebgp_multihop, leaf2.graceful_restart), (Some(2), Some(true)));
    assert_eq!(leaf2.families.len(), 2);
    assert_eq!(m.secrets.len(), 1, "the plain-text authPassword");
    assert_eq!(
        leaf2.password_secret_ref.as_ref().unwrap().name,
        "herald-bgp-bgppeer-leaf2"
    );
    assert!(has(&m, Kind::Differs, "BgpPeers", "ADD-PATH"));

    // dns-tcp and dns-udp shared 203.0.113.53 without a key (OpenELB shares any repeated request).
    assert!(has(
        &m,
        Kind::Action,
        "dns/dns-udp",
        "herald.dev/sharing-key=shared-203.0.113.53"
    ));
    let Outcome::Loses { reason } = outcome(&m, "dns/dns-udp") else {
        panic!("{:?}", m.services)
    };
    assert!(reason.contains("sharing-key commands"), "{reason}");
    assert!(has(&m, Kind::Action, "legacy/porter-svc", "finalizer"));
    let kept = m
        .services
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Keeps { .. }))
        .count();
    assert_eq!(kept, 5, "{:?}", m.services);
}

#[test]
fn openelb_v1alpha1_is_read_too() {
    let m = run(Source::Openelb, &[OPENELB_V1ALPHA1]);
    round_trip(&m, Source::Openelb);
    // PorterLB v0.3 skipped .0 and .255 unless usingKnownIPs; every Eip was handed out unasked.
    let bgp = eip(&m, "eip-bgp");
    assert_eq!(
        (bgp.protocol, bgp.addresses.as_slice()),
        (Protocol::Bgp, &["203.0.113.1-203.0.113.254".to_string()][..])
    );
    assert!(bgp.auto_assign);
    assert_eq!(eip(&m, "eip-layer2").addresses, ["192.0.2.200-192.0.2.219"]);
    let single = eip(&m, "eip-single");
    assert_eq!(
        (single.protocol, single.disable, single.addresses.as_slice()),
        (Protocol::Bgp, true, &["198.51.100.7".to_string()][..])
    );
    // Any BgpConf name did in v0.3; routerID (capital) and port.
    let conf = &m.bgp_conf.as_ref().unwrap().spec;
    assert_eq!(
        (conf.asn, conf.router_id.as_deref(), conf.listen_port),
        (64500, Some("192.0.2.10"), Some(17900))
    );
    let sample = peer(&m, "bgppeer-sample");
    assert_eq!(
        (sample.asn, sample.passive, sample.families.as_slice()),
        (64501, true, &[herald_api::bgp::AddressFamily::Ipv4][..])
    );
    assert!(has(&m, Kind::Differs, "bgppeer-sample", "usingPortForward"));
    assert!(has(&m, Kind::Dropped, "bgppeer-sample", "addPaths"));
    assert!(m.findings.iter().all(|f| f.kind != Kind::Skipped), "{:?}", m.findings);
}

#[test]
fn configmap_peers_to_one_router_get_distinct_names_and_pool_names_become_object_names() {
    let config = "peers:\n- {peer-address: 192.0.2.1, peer-asn: 64501, my-asn: 64500, source-address: 192.0.2.11}\n\
                  - {peer-address: 192.0.2.1, peer-asn: 64501, my-asn: 64500, source-address: 192.0.2.12}\n\
                  address-pools:\n- {name: My_Pool, protocol: bgp, addresses: [192.0.2.0/28]}\n";
    let docs = vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "config", "namespace": "metallb-system"},
                           "data": {"config": config}})];
    let m = migrate(Source::Metallb, docs, &Options::default());
    let names: Vec<&str> = m.peers.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
    assert_eq!(names, ["peer-192-0-2-1", "peer-192-0-2-1-2"]);
    assert_eq!(eip(&m, "my-pool").protocol, Protocol::Bgp);
    assert!(has(
        &m,
        Kind::Action,
        "address-pools[0]",
        "'My_Pool' is not a valid object name"
    ));
    assert!(has(&m, Kind::Differs, "peers[0]", "source address 192.0.2.11"));
    round_trip(&m, Source::Metallb);
}

#[test]
fn a_keepalive_time_alone_gives_metallb_s_hold_time_and_openelb_zero_timers_are_defaults() {
    let docs = vec![
        json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "k"},
                           "spec": {"peerAddress": "192.0.2.1", "myASN": 64500, "peerASN": 64501, "keepaliveTime": "20s"}}),
    ];
    let m = migrate(Source::Metallb, docs, &Options::default());
    assert_eq!(
        (peer(&m, "k").keepalive_time, peer(&m, "k").hold_time),
        (Some(20), Some(60))
    );
    let docs = vec![
        json!({"apiVersion": "network.kubesphere.io/v1alpha2", "kind": "BgpPeer", "metadata": {"name": "z"},
                           "spec": {"conf": {"peerAs": 64501, "neighborAddress": "192.0.2.1"},
                                    "timers": {"config": {"holdTime": "0", "keepaliveInterval": "0", "connectRetry": "0"}}}}),
    ];
    let m = migrate(Source::Openelb, docs, &Options::default());
    let z = peer(&m, "z");
    assert_eq!(
        (z.hold_time, z.keepalive_time, z.connect_retry_time),
        (None, None, None)
    );
}

#[test]
fn an_openelb_bgp_conf_not_named_default_did_nothing_and_is_not_converted() {
    let docs = vec![
        json!({"apiVersion": "network.kubesphere.io/v1alpha2", "kind": "BgpConf",
                           "metadata": {"name": "other"}, "spec": {"as": 64500}}),
    ];
    let m = migrate(Source::Openelb, docs, &Options::default());
    assert!(m.bgp_conf.is_none());
    assert!(has(
        &m,
        Kind::Skipped,
        "BgpConf other",
        "only the BgpConf named default"
    ));
}

#[test]
fn bad_input_is_reported_and_loses_nothing_else() {
    let docs = vec![
        json!("just a string"),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "bad"},
               "spec": {"addresses": ["fish", "192.0.2.9-192.0.2.1"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "wrong-type"},
               "spec": {"addresses": "192.0.2.0/24", "autoAssign": "perhaps"}}),
        json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "no-asn"},
               "spec": {"peerAddress": "192.0.2.1", "myASN": 64500}}),
        json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "slow"},
               "spec": {"peerAddress": "192.0.2.1", "myASN": 64500, "peerASN": 64501, "holdTime": "1.5s"}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "good"},
               "spec": {"addresses": ["192.0.2.0/28"]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config"},
               "data": {"config": "address-pools: [{name: p, protocol: carrier-pigeon, addresses: [192.0.2.0/30]}]"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": "nonsense"}),
    ];
    let m = migrate(Source::Metallb, docs, &Options::default());
    assert_eq!(m.eips.len(), 1, "only the good pool: {:?}", m.findings);
    assert_eq!(eip(&m, "good").addresses, ["192.0.2.0-192.0.2.15"]);
    assert!(has(&m, Kind::Skipped, "bad", "'fish'"));
    assert!(has(&m, Kind::Skipped, "bad", "reversed"));
    assert!(has(
        &m,
        Kind::Skipped,
        "wrong-type",
        "spec.autoAssign: not true or false"
    ));
    assert!(has(&m, Kind::Skipped, "no-asn", "spec.peerASN is missing"));
    assert!(has(&m, Kind::Skipped, "slow", "not a whole number of seconds"));
    assert!(has(&m, Kind::Skipped, "Deployment", "not MetalLB configuration"));
    assert!(has(&m, Kind::Skipped, "ConfigMap", "carrier-pigeon"));
    assert!(has(&m, Kind::Skipped, "Service", "not a readable Service"));
    assert!(
        parse_documents("x.yaml", "a: [unclosed")
            .unwrap_err()
            .starts_with("x.yaml: not YAML")
    );
}

/// Found by the `migrate` fuzz target: a pool listing a namespace name no namespace can have (longer than a DNS label)
/// became an Eip that Herald refuses whole. Such a pool is now reported and left out, and a Service in such a
/// namespace no longer widens an OpenELB Eip to it.
#[test]
fn impossible_namespace_names_never_reach_an_eip() {
    let long = "n".repeat(64);
    let docs = vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "pinned"},
               "spec": {"addresses": ["192.0.2.0/28"], "serviceAllocation": {"namespaces": ["web", long]}}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "good"},
               "spec": {"addresses": ["192.0.2.16/28"], "serviceAllocation": {"namespaces": ["n".repeat(63)]}}}),
    ];
    let m = migrate(Source::Metallb, docs, &Options::default());
    assert_eq!(m.eips.len(), 1, "only the good pool: {:?}", m.findings);
    assert_eq!(eip(&m, "good").namespaces, ["n".repeat(63)]);
    assert!(has(
        &m,
        Kind::Skipped,
        "pinned",
        "spec.serviceAllocation.namespaces[1]: 'nnn"
    ));
    round_trip(&m, Source::Metallb);

    let docs = vec![
        json!({"apiVersion": "network.kubesphere.io/v1alpha2", "kind": "Eip", "metadata": {"name": "bound"},
               "spec": {"address": "192.0.2.0/28", "namespaces": [long]}}),
        json!({"apiVersion": "network.kubesphere.io/v1alpha2", "kind": "Eip", "metadata": {"name": "web"},
               "spec": {"address": "192.0.2.16/28", "namespaces": ["web"]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": long},
               "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.17"}]}}}),
    ];
    let m = migrate(Source::Openelb, docs, &Options::default());
    assert_eq!(m.eips.len(), 1, "only the Eip bound to web: {:?}", m.findings);
    assert_eq!(eip(&m, "web").namespaces, ["web"]);
    assert!(has(&m, Kind::Skipped, "bound", "spec.namespaces[0]: 'nnn"));
    round_trip(&m, Source::Openelb);
}

/// Found by the `migrate` fuzz target: a pool of multicast addresses only became an Eip that Herald refuses (it
/// never allocates them). Every Eip Herald would refuse is now reported and not written.
#[test]
fn eips_herald_refuses_are_reported_and_not_written() {
    let docs = vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "multicast"},
               "spec": {"addresses": ["230.0.113.0/24"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "good"},
               "spec": {"addresses": ["192.0.2.0/28"]}}),
    ];
    let m = migrate(Source::Metallb, docs, &Options::default());
    assert_eq!(m.eips.len(), 1, "only the good pool: {:?}", m.findings);
    assert_eq!(eip(&m, "good").addresses, ["192.0.2.0-192.0.2.15"]);
    assert!(has(&m, Kind::Skipped, "Eip multicast", "Herald would refuse this Eip"));
    round_trip(&m, Source::Metallb);
}

/// Arbitrary JSON where the objects' fields are.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(i64::MAX)),
        Just(Value::from(true)),
        Just(Value::from("100000000000000000000000000000h1h")),
        any::<u32>().prop_map(Value::from),
        "[0-9a-z.:/ -]{0,24}".prop_map(Value::from),
        prop_oneof![
            Just("192.0.2.0/24"),
            Just("2001:db8::/64"),
            Just("192.0.2.1-192.0.2.9"),
            Just("90s"),
            Just("large:1:2:3")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("addresses".to_string()),
                    Just("spec".to_string()),
                    Just("peerASN".to_string()),
                    Just("myASN".to_string()),
                    Just("peerAddress".to_string()),
                    Just("nodeSelectors".to_string()),
                    Just("matchLabels".to_string()),
                    Just("ipAddressPools".to_string()),
                    Just("communities".to_string()),
                    Just("conf".to_string()),
                    Just("address".to_string()),
                    Just("protocol".to_string()),
                    Just("serviceAllocation".to_string()),
                    Just("priority".to_string()),
                    Just("holdTime".to_string()),
                    Just("keepaliveTime".to_string()),
                    Just("aggregationLength".to_string()),
                    Just("avoidBuggyIPs".to_string()),
                    Just("timers".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the objects hold, the conversion returns (no panic) and what it writes is what Herald accepts.
    #[test]
    fn any_object_converts_or_is_reported(
        api in prop_oneof![
            Just(("metallb.io/v1beta1", "IPAddressPool")),
            Just(("metallb.io/v1beta1", "L2Advertisement")),
            Just(("metallb.io/v1beta1", "BGPAdvertisement")),
            Just(("metallb.io/v1beta2", "BGPPeer")),
            Just(("metallb.io/v1beta1", "BFDProfile")),
            Just(("metallb.io/v1beta1", "Community")),
            Just(("network.kubesphere.io/v1alpha2", "Eip")),
            Just(("network.kubesphere.io/v1alpha2", "BgpPeer")),
            Just(("network.kubesphere.io/v1alpha2", "BgpConf")),
            Just(("network.kubesphere.io/v1alpha1", "BgpPeer")),
            Just(("v1", "Service")),
        ],
        spec in json_value(),
        source in prop_oneof![Just(Source::Metallb), Just(Source::Openelb)],
    ) {
        let object = json!({"apiVersion": api.0, "kind": api.1, "metadata": {"name": "x", "namespace": "n"},
                            "spec": spec, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        let m = migrate(source, vec![object], &Options::default());
        let yaml = render_yaml(&m, source).unwrap();
        for doc in parse_documents("output", &yaml).unwrap() {
            if kind(&doc) == "Eip" {
                let eip: herald_api::Eip = serde_json::from_value(doc).unwrap();
                let spec = crate::adapter::pool_spec(&eip).unwrap();
                prop_assert!(herald_ipam::Pool::parse(&spec).is_ok());
            }
        }
        let _ = render_report(&m, source);
    }
}

#[test]
fn addresses_of_a_service_outside_every_eip_are_reported_as_lost() {
    let docs = vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"},
               "spec": {"addresses": ["192.0.2.0/28"]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "far", "namespace": "default"},
               "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other", "namespace": "default"},
               "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb", "ports": [{"port": 80}]}}),
    ];
    let m = migrate(Source::Metallb, docs, &Options::default());
    let Outcome::Loses { reason } = outcome(&m, "default/far") else {
        panic!("{:?}", m.services)
    };
    assert!(reason.contains("198.51.100.7 is in no Eip"), "{reason}");
    assert_eq!(m.services[0].ips, ["198.51.100.7".parse::<IpAddr>().unwrap()]);
    assert!(matches!(outcome(&m, "default/other"), Outcome::NotHandled { .. }));
}
