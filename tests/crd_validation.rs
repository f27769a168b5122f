//! Herald's CRDs on the real kube-apiserver: objects Herald would refuse are refused at `kubectl apply` with a
//! message naming the field and the fix, and what Herald accepts is accepted. The schema bounds and CEL rules
//! (`crates/api`) are enforced by the real server only (lab-apiserver prunes and defaults but does not validate), so
//! these tests run with `HERALD_TEST_APISERVER=kube` and say that they skip otherwise.
//!
//! Every Eip sent is also read the way the allocator reads it (`adapter::pool_spec`, then
//! `herald_ipam::Pool::parse`), so the tables show that the server refuses what Herald refuses, accepts what Herald
//! accepts, and where the two differ on purpose.

#[allow(dead_code)] // the driver serves the netns tests too; this file uses a part of it
#[path = "../netns-tests/src/cluster/kube.rs"]
mod kube_apiserver;

use std::path::PathBuf;
use std::time::Duration;

use kube_apiserver::{ApiServerKind, KubeApiServer, repo_file};
use serde_json::{Value, json};

/// A real kube-apiserver with Herald's CRDs applied. The directory (logs, audit log) is removed when the test
/// passes and kept when it fails.
struct Server {
    kube: Option<KubeApiServer>,
    dir: PathBuf,
}

impl Server {
    /// `None` (after saying so) unless the real server was chosen.
    fn start(test: &str) -> Option<Server> {
        let kind = ApiServerKind::from_env();
        if kind != ApiServerKind::Kube {
            eprintln!(
                "{test}: skipped: CRD validation needs the real kube-apiserver ({}; set {}=kube)",
                kind.env_setting(),
                kube_apiserver::APISERVER_ENV
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!("herald-crd-validation-{:08x}", rand::random::<u32>()));
        let kube = KubeApiServer::start_on_host(&dir).expect("start kube-apiserver");
        eprintln!(
            "{test}: {} at {}, files in {}",
            kind.describe(),
            kube.server(),
            dir.display()
        );
        let crds = repo_file("deploy/crds/herald.dev.yaml");
        let out = kube
            .kubectl_cmd(&["apply", "-f", &crds.to_string_lossy()])
            .output()
            .expect("run kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the API server refuses the CRDs: {stderr}");
        // The server warns about what it ignores, such as formats it does not know (`uint32`, ...).
        assert!(stderr.trim().is_empty(), "applying the CRDs warns: {stderr}");
        kube.wait_crds_established(Duration::from_secs(60))
            .expect("CRDs established");
        Some(Server { kube: Some(kube), dir })
    }

    fn kube(&self) -> &KubeApiServer {
        self.kube.as_ref().expect("running")
    }

    /// `kubectl apply` of one object: `Ok` when created, else the field errors the server gave, one per line.
    fn apply(&self, object: &Value) -> Result<(), Vec<String>> {
        match self.kube().kubectl(&["apply", "-f", "-"], Some(&object.to_string())) {
            Ok(_) => Ok(()),
            Err(e) => Err(field_errors(&format!("{e:#}"))),
        }
    }

    /// Stops the server and removes its directory (only reached when the test passed).
    fn finish(mut self) {
        drop(self.kube.take());
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The field errors of kubectl's `The Eip "x" is invalid: ERROR` or `... is invalid: \n* ERROR\n* ERROR`, without
/// the note the server adds when schema errors kept it from running the CEL rules.
fn field_errors(kubectl_error: &str) -> Vec<String> {
    let Some((_, errors)) = kubectl_error.split_once(" is invalid: ") else {
        return vec![format!("not a validation error: {kubectl_error}")];
    };
    let mut errors: Vec<String> = errors
        .lines()
        .map(|l| l.trim().trim_start_matches("* ").to_string())
        .filter(|l| !l.is_empty() && !l.contains("some validation rules were not checked"))
        .collect();
    errors.sort();
    errors
}

/// What the allocator makes of an Eip: `Ok`, or the message its `Ready` condition would show.
fn herald_reads(eip: &Value) -> Result<(), String> {
    let eip: herald_api::Eip = serde_json::from_value(eip.clone()).map_err(|e| e.to_string())?;
    let spec = herald::adapter::pool_spec(&eip)?;
    herald_ipam::Pool::parse(&spec).map(drop).map_err(|e| e.to_string())
}

fn eip(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Eip", "metadata": {"name": name}, "spec": spec})
}

fn bgp_conf(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BgpConf", "metadata": {"name": name}, "spec": spec})
}

fn bgp_peer(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": name}, "spec": spec})
}

const NOT_AN_ENTRY: &str = "not a CIDR, range or IP: write e.g. 192.0.2.0/24, 192.0.2.10-192.0.2.20 or 2001:db8::1";
const HOST_BITS: &str =
    "host bits are set past the prefix length: write the network address (192.0.2.0/24, not 192.0.2.5/24)";
const MIXED: &str = "the range mixes IPv4 and IPv6: give each family its own entry";
const REVERSED: &str =
    "the range is reversed (first address above last): write it low-high, e.g. 192.0.2.10-192.0.2.20";
const ROUTER_ID: &str = "not an IPv4 address: the BGP identifier is written as one, e.g. 192.0.2.11";

#[test]
fn invalid_objects_are_refused_with_what_to_fix() {
    let Some(server) = Server::start("invalid_objects_are_refused_with_what_to_fix") else {
        return;
    };
    let mut failures = Vec::new();
    let mut expect_refused = |what: &str, object: Value, expected: &[&str]| {
        let mut expected: Vec<String> = expected.iter().map(|e| e.to_string()).collect();
        expected.sort();
        match server.apply(&object) {
            Ok(()) => failures.push(format!("{what}: accepted, expected {expected:#?}")),
            Err(errors) if errors != expected => {
                failures.push(format!("{what}: the server said {errors:#?}\nexpected {expected:#?}"))
            }
            Err(_) => {}
        }
    };

    // Eip address entries the allocator refuses too, each with the server's message.
    let entries = [
        ("192.0.2.0/33", NOT_AN_ENTRY),
        ("300.1.2.3/24", NOT_AN_ENTRY),
        ("2001:db8::/129", NOT_AN_ENTRY),
        ("fish", NOT_AN_ENTRY),
        ("192.0.2.300", NOT_AN_ENTRY),
        ("192.0.2.1-x", NOT_AN_ENTRY),
        ("192.0.2.1-192.0.2.2-192.0.2.3", NOT_AN_ENTRY),
        ("192.0.2.0/24-192.0.2.9", NOT_AN_ENTRY),
        ("fe80::1%eth0", NOT_AN_ENTRY),
        ("192.0.2.5/24", HOST_BITS),
        ("2001:db8::1/64", HOST_BITS),
        ("192.0.2.1-2001:db8::1", MIXED),
        ("192.0.2.10-192.0.2.5", REVERSED),
        ("192.0.2.10 - 9.255.255.255", REVERSED),
    ];
    for (i, (entry, message)) in entries.into_iter().enumerate() {
        let object = eip(&format!("entry-{i}"), json!({"addresses": ["198.51.100.0/24", entry]}));
        assert!(
            herald_reads(&object).is_err(),
            "{entry}: the allocator accepts it, the CRD must too"
        );
        expect_refused(
            entry,
            object,
            &[&format!("spec.addresses[1]: Invalid value: \"{entry}\": {message}")],
        );
    }
    expect_refused(
        "Eip without addresses",
        eip("empty", json!({"addresses": []})),
        &["spec.addresses: Invalid value: 0: spec.addresses in body should have at least 1 items"],
    );
    expect_refused(
        "Eip with an unknown protocol",
        eip("vxlan", json!({"addresses": ["192.0.2.0/24"], "protocol": "vxlan"})),
        &[r#"spec.protocol: Unsupported value: "vxlan": supported values: "layer2", "bgp""#],
    );
    expect_refused(
        "Eip with bad communities",
        eip(
            "communities",
            json!({"addresses": ["192.0.2.0/24"],
                   "bgp": {"communities": ["70000:1"], "largeCommunities": ["64512:1", "4294967296:0:0"]}}),
        ),
        &[
            r#"spec.bgp.communities[0]: Invalid value: "70000:1": not a community: write ASN:VALUE with both parts 0-65535, e.g. 64512:100"#,
            r#"spec.bgp.largeCommunities[0]: Invalid value: "64512:1": not a large community (RFC 8092): write GLOBAL:DATA1:DATA2, each 0-4294967295, e.g. 64512:1:2"#,
            r#"spec.bgp.largeCommunities[1]: Invalid value: "4294967296:0:0": not a large community (RFC 8092): write GLOBAL:DATA1:DATA2, each 0-4294967295, e.g. 64512:1:2"#,
        ],
    );
    let long_namespace = eip(
        "namespaces",
        json!({"addresses": ["192.0.2.0/24"], "namespaces": ["n".repeat(64)]}),
    );
    assert!(herald_reads(&long_namespace).is_err());
    expect_refused(
        "Eip naming a namespace no namespace can have",
        long_namespace,
        &["spec.namespaces[0]: Too long: may not be more than 63 bytes"],
    );

    expect_refused(
        "BgpPeer with ASN 0 and hold time 1",
        bgp_peer("asn-0", json!({"address": "192.0.2.1", "asn": 0, "holdTime": 1})),
        &[
            "spec.asn: Invalid value: 0: spec.asn in body should be greater than or equal to 1",
            "spec.holdTime: Invalid value: 1: holdTime must be 0 or at least 3 seconds (RFC 4271 §4.2)",
        ],
    );
    expect_refused(
        "BgpPeer with a name for an address",
        bgp_peer("name", json!({"address": "router-1", "asn": 64500})),
        &[
            r#"spec.address: Invalid value: "router-1": not an IP address: give the router's address, e.g. 192.0.2.1 or 2001:db8::1"#,
        ],
    );
    for (i, address) in ["0.0.0.0", "::", "224.0.0.5", "ff02::2"].into_iter().enumerate() {
        expect_refused(
            address,
            bgp_peer(&format!("not-unicast-{i}"), json!({"address": address, "asn": 64500})),
            &[&format!(
                "spec.address: Invalid value: \"{address}\": the unspecified address or a multicast address, \
                 not a router's: give the router's unicast address"
            )],
        );
    }
    expect_refused(
        "BgpPeer with a source address of the other family",
        bgp_peer(
            "source",
            json!({"address": "192.0.2.1", "asn": 64500, "sourceAddress": "2001:db8::11", "families": []}),
        ),
        &[
            "spec.families: Invalid value: 0: spec.families in body should have at least 1 items",
            "spec.sourceAddress: Invalid value: sourceAddress 2001:db8::11 and address 192.0.2.1 are of different \
             IP families: give a source address of the router's family, or leave it out",
        ],
    );
    expect_refused(
        "BgpPeer with a name for a source address",
        bgp_peer(
            "source-name",
            json!({"address": "192.0.2.1", "asn": 64500, "sourceAddress": "eth0"}),
        ),
        &[
            r#"spec.sourceAddress: Invalid value: "eth0": not an IP address: give an address of the node to connect from, e.g. 192.0.2.11, or leave it out"#,
        ],
    );

    expect_refused(
        "BgpConf with ASN 0, router ID 300.1.2.3 and listen port 0",
        bgp_conf("default", json!({"asn": 0, "routerId": "300.1.2.3", "listenPort": 0})),
        &[
            "spec.asn: Invalid value: 0: spec.asn in body should be greater than or equal to 1",
            &format!(r#"spec.routerId: Invalid value: "300.1.2.3": {ROUTER_ID}"#),
            "spec.listenPort: Invalid value: 0: spec.listenPort in body should be greater than or equal to 1",
        ],
    );
    expect_refused(
        "BgpConf not named default",
        bgp_conf("rack-a", json!({"asn": 64512})),
        &["<nil>: Invalid value: the BgpConf must be named 'default'"],
    );
    expect_refused(
        "BgpConf with a bad override",
        bgp_conf(
            "default",
            json!({"asn": 64512, "routerId": "2001:db8::1",
                   "overrides": [{"nodeSelector": {}, "asn": 0, "routerId": "rack-1"}]}),
        ),
        &[
            &format!(r#"spec.routerId: Invalid value: "2001:db8::1": {ROUTER_ID}"#),
            "spec.overrides[0].asn: Invalid value: 0: spec.overrides[0].asn in body should be greater than or equal to 1",
            &format!(r#"spec.overrides[0].routerId: Invalid value: "rack-1": {ROUTER_ID}"#),
        ],
    );

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    server.finish();
}

#[test]
fn what_herald_accepts_is_accepted() {
    let Some(server) = Server::start("what_herald_accepts_is_accepted") else {
        return;
    };
    let mut failures = Vec::new();
    let mut expect_accepted = |what: &str, object: Value| {
        if object["kind"] == "Eip"
            && let Err(e) = herald_reads(&object)
        {
            panic!("{what}: the allocator refuses it: {e}");
        }
        if let Err(errors) = server.apply(&object) {
            failures.push(format!("{what}: refused: {errors:#?}"));
        }
    };

    // Every form docs/ipam.md shows, both families, in one pool as users mix them.
    let entries = [
        "192.0.2.0/24",
        "203.0.113.0/31",
        "198.51.100.7/32",
        "198.51.100.10-198.51.100.20",
        "198.51.100.30 - 198.51.100.40",
        "198.51.100.50-198.51.100.50",
        "9.255.255.255-10.0.0.0",
        "203.0.113.7",
        "2001:db8::/64",
        "2001:db8:1::/127",
        "2001:db8:2::5/128",
        "2001:db8:3::1-2001:db8:3::ff",
        "2001:DB8:4::1",
        "64:ff9b::192.0.2.1",
        "2001:db8:5:0:0:0:0:1",
    ];
    expect_accepted("Eip of every form", eip("forms", json!({"addresses": entries})));
    expect_accepted(
        "Eip with every field",
        eip(
            "full",
            json!({"addresses": ["0.0.0.0/0", "::/0"], "protocol": "bgp", "interface": "eth0", "disable": true,
                   "autoAssign": false, "priority": -5, "namespaces": ["n".repeat(63)],
                   "namespaceSelector": {"matchLabels": {"team": "a"}},
                   "serviceSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                   "nodeSelector": {"matchLabels": {"rack": "a"}},
                   "bgp": {"communities": ["0:0", "64512:100", "65535:65535"],
                           "largeCommunities": ["4294967295:4294967295:4294967295", "64512:1:2"],
                           "localPref": 4294967295u32}}),
        ),
    );
    // The costliest entries: as many as allowed, each as long as allowed, each an IPv4 range (every rule runs to the
    // end). The server's per-object CEL budget must not be reached. The allocator accepts the pool.
    let longest: Vec<String> = (0..herald_api::eip::MAX_ADDRESSES)
        .map(|i| {
            let (first, last) = (
                format!("10.{}.{}.1", i / 256, i % 256),
                format!("10.{}.{}.200", i / 256, i % 256),
            );
            let pad = herald_api::eip::MAX_ADDRESS_ENTRY - first.len() - last.len() - 1;
            format!("{first}{}-{}{last}", " ".repeat(pad / 2), " ".repeat(pad - pad / 2))
        })
        .collect();
    assert!(longest.iter().all(|e| e.len() == herald_api::eip::MAX_ADDRESS_ENTRY));
    expect_accepted(
        "Eip of 1024 entries of 128 characters",
        eip(
            "longest",
            json!({"addresses": longest, "bgp": {"communities": vec!["65535:65535"; 1024],
                   "largeCommunities": vec!["4294967295:4294967295:4294967295"; 1024]}}),
        ),
    );

    expect_accepted(
        "BgpConf",
        bgp_conf(
            "default",
            json!({"asn": 4200000000u32, "routerId": "192.0.2.11", "gracefulRestart": {"restartTime": 4095}, "listenPort": 1179,
                   "overrides": [{"nodeSelector": {"matchLabels": {"rack": "b"}}, "asn": 64513, "routerId": "192.0.2.12"},
                                 {"nodeSelector": {}}]}),
        ),
    );
    expect_accepted(
        "BgpPeer over IPv4",
        bgp_peer(
            "v4",
            json!({"address": "192.0.2.1", "asn": 64500, "localAsn": 4294967295u32, "port": 1790, "holdTime": 0,
                   "keepaliveTime": 30, "connectRetryTime": 3600, "sourceAddress": "192.0.2.11", "ebgpMultihop": 255,
                   "families": ["ipv4"], "gracefulRestart": true, "passive": true,
                   "passwordSecretRef": {"name": "bgp"}, "nodeSelector": {"matchLabels": {"rack": "a"}}}),
        ),
    );
    expect_accepted(
        "BgpPeer over IPv6, nulls for the optional fields",
        bgp_peer(
            "v6",
            json!({"address": "2001:db8::1", "asn": 1, "holdTime": 3, "sourceAddress": "2001:db8::11",
                   "localAsn": null, "keepaliveTime": null}),
        ),
    );
    expect_accepted(
        "BgpPeer with the least",
        bgp_peer("least", json!({"address": "fe80::1", "asn": 65535})),
    );

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    server.finish();
}

/// Where the API server and Herald differ on purpose, pinned so that a change on either side is seen.
#[test]
fn where_the_server_and_herald_differ_on_purpose() {
    let Some(server) = Server::start("where_the_server_and_herald_differ_on_purpose") else {
        return;
    };
    // Spellings CEL's ip()/cidr() refuse and the allocator reads: IPv4-mapped IPv6 (addresses Herald never allocates)
    // and leading zeros (ipnet reads `010.0.0.0/8` as 10.0.0.0/8; others read it as octal).
    for (i, entry) in ["::ffff:192.0.2.1", "::ffff:192.0.2.0/120", "010.0.0.0/8", "10.0.0.0/08"]
        .into_iter()
        .enumerate()
    {
        let object = eip(
            &format!("spelling-{i}"),
            json!({"addresses": ["198.51.100.0/24", entry]}),
        );
        assert_eq!(herald_reads(&object), Ok(()), "{entry}: the allocator refuses it now");
        assert_eq!(
            server.apply(&object),
            Err(vec![format!(
                "spec.addresses[1]: Invalid value: \"{entry}\": {NOT_AN_ENTRY}"
            )]),
            "{entry}"
        );
    }
    // CEL cannot order IPv6 addresses: a reversed IPv6 range is accepted and reported in the Eip's Ready condition.
    let reversed = eip("reversed-v6", json!({"addresses": ["2001:db8::ff-2001:db8::1"]}));
    assert!(herald_reads(&reversed).is_err());
    assert_eq!(server.apply(&reversed), Ok(()));
    // AS_TRANS is refused by the agent (InvalidSpec), not by a CEL rule: crates/api/src/bgp.rs says why.
    let as_trans = bgp_peer(
        "as-trans",
        json!({"address": "192.0.2.1", "asn": 23456, "localAsn": 23456}),
    );
    assert_eq!(server.apply(&as_trans), Ok(()));
    server.finish();
}
