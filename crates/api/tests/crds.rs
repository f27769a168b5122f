//! `deploy/crds/herald.dev.yaml` must be exactly what `herald crds` prints. Regenerate it with
//! `cargo run -- crds > deploy/crds/herald.dev.yaml` (or run this test with `HERALD_UPDATE_CRDS=1`).

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn deployed_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds/herald.dev.yaml")
}

#[test]
fn deploy_crds_match_generated() {
    let generated = herald_api::crds_yaml().expect("render CRDs");
    if std::env::var_os("HERALD_UPDATE_CRDS").is_some() {
        std::fs::write(deployed_path(), &generated).expect("write deploy/crds/herald.dev.yaml");
    }
    let deployed = std::fs::read_to_string(deployed_path()).expect("read deploy/crds/herald.dev.yaml");
    assert!(
        !deployed.contains("imum: 1.0"),
        "integer bounds are written as integers"
    );
    assert!(
        deployed == generated,
        "deploy/crds/herald.dev.yaml is out of date: run `cargo run -- crds > deploy/crds/herald.dev.yaml`"
    );
}

fn crd(kind: &str) -> serde_json::Value {
    let crd: CustomResourceDefinition = herald_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("crd");
    serde_json::to_value(crd).unwrap()
}

#[test]
fn eip_crd_has_the_promised_shape() {
    let eip = crd("Eip");
    assert_eq!(eip["spec"]["group"], "herald.dev");
    assert_eq!(eip["spec"]["scope"], "Cluster");
    let version = &eip["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object(), "status subresource");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Addresses",
            "Protocol",
            "IPv4 used",
            "IPv6 used",
            "Ready",
            "Used",
            "Free",
            "Total",
            "Age"
        ]
    );
    // Text, not a JSON array; both-family counts only with `-o wide`.
    let columns = version["additionalPrinterColumns"].as_array().unwrap();
    assert_eq!(columns[0]["jsonPath"], ".status.addresses");
    assert_eq!(columns[2]["jsonPath"], ".status.ipv4.summary");
    for wide in &columns[5..8] {
        assert_eq!(wide["priority"], 1, "{wide}");
    }
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["addresses"]["minItems"], 1);
    assert_eq!(
        spec["properties"]["protocol"]["enum"],
        serde_json::json!(["layer2", "bgp"])
    );
    assert_eq!(spec["properties"]["autoAssign"]["default"], true);
    let conditions = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
}

#[test]
fn bgp_crds_validate_asn_and_hold_time() {
    let peer = crd("BgpPeer");
    let spec = &peer["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["asn"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(spec["asn"]["maximum"].as_f64(), Some(4294967295.0));
    let rules = spec["holdTime"]["x-kubernetes-validations"].to_string();
    assert!(rules.contains("self == 0 || self >= 3"), "{rules}");
    let conf = crd("BgpConf");
    let top = conf["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"].to_string();
    assert!(top.contains("self.metadata.name == 'default'"), "{top}");
}

#[test]
fn eip_defaults_apply_on_deserialize() {
    let eip: herald_api::EipSpec = serde_json::from_value(serde_json::json!({"addresses": ["192.0.2.0/24"]})).unwrap();
    assert_eq!(eip.protocol, herald_api::Protocol::Layer2);
    assert!(eip.auto_assign);
    assert!(!eip.disable);
}

/// Every schema node of a CRD's version 0, with its path (`spec.addresses[]`, `spec.bgp.communities[]`).
fn nodes(crd: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn walk(path: String, node: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        out.push((path.clone(), node.clone()));
        for (name, child) in node["properties"].as_object().into_iter().flatten() {
            let sep = if path.is_empty() { "" } else { "." };
            walk(format!("{path}{sep}{name}"), child, out);
        }
        if node["items"].is_object() {
            walk(format!("{path}[]"), &node["items"], out);
        }
    }
    let mut out = Vec::new();
    walk(
        String::new(),
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        &mut out,
    );
    out
}

/// The messages of the CEL rules at `path` of kind `kind`, in order.
fn rule_messages(kind: &str, path: &str) -> Vec<String> {
    let crd = crd(kind);
    let node = nodes(&crd)
        .into_iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("{kind} has no {path}"))
        .1;
    node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["message"]
                .as_str()
                .or(r["messageExpression"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn no_unsigned_integer_format_is_left() {
    // Kubernetes knows int32 and int64; the real server warns about uint8..uint64 on every apply.
    for kind in ["Eip", "BgpConf", "BgpPeer"] {
        for (path, node) in nodes(&crd(kind)) {
            let format = node["format"].as_str().unwrap_or("");
            assert!(!format.starts_with("uint"), "{kind} {path}: format {format}");
        }
    }
    let deployed = std::fs::read_to_string(deployed_path()).expect("read deploy/crds/herald.dev.yaml");
    assert!(
        !deployed.contains("format: uint"),
        "deploy/crds/herald.dev.yaml still has a uint format"
    );
    // The bounds stay and say the same.
    let status = &crd("BgpPeer")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert_eq!(status["properties"]["established"]["minimum"].as_f64(), Some(0.0));
}

#[test]
fn cel_rules_sit_on_the_fields_herald_checks() {
    let starts = |kind: &str, path: &str, expected: &[&str]| {
        let messages = rule_messages(kind, path);
        assert_eq!(messages.len(), expected.len(), "{kind} {path}: {messages:?}");
        for (m, e) in messages.iter().zip(expected) {
            assert!(m.contains(e), "{kind} {path}: {m:?} does not say {e:?}");
        }
    };
    starts(
        "Eip",
        "spec.addresses[]",
        &[
            "not a CIDR, range or IP",
            "host bits are set",
            "mixes IPv4 and IPv6",
            "the range is reversed",
        ],
    );
    starts("Eip", "spec.bgp.communities[]", &["not a community"]);
    starts("Eip", "spec.bgp.largeCommunities[]", &["not a large community"]);
    starts("BgpConf", "", &["named 'default'"]);
    starts("BgpConf", "spec.routerId", &["not an IPv4 address"]);
    starts("BgpConf", "spec.overrides[].routerId", &["not an IPv4 address"]);
    starts("BgpPeer", "spec", &["different IP families"]);
    starts("BgpPeer", "spec.address", &["not an IP address", "multicast"]);
    starts("BgpPeer", "spec.sourceAddress", &["not an IP address"]);
    starts("BgpPeer", "spec.holdTime", &["0 or at least 3"]);
    // AS_TRANS is left to the agent (crates/api/src/bgp.rs says why).
    starts("BgpPeer", "spec.asn", &[]);
    // The CEL rules replace the patterns, which would add a second, vaguer error for the same value.
    let eip = crd("Eip");
    let addresses = &nodes(&eip)
        .into_iter()
        .find(|(p, _)| p == "spec.addresses[]")
        .unwrap()
        .1;
    assert!(addresses["pattern"].is_null(), "{addresses}");
    let peer = crd("BgpPeer");
    let families = &nodes(&peer).into_iter().find(|(p, _)| p == "spec.families").unwrap().1;
    assert_eq!(families["minItems"], 1, "the announcer refuses an empty families list");
}

#[test]
fn every_cel_rule_has_a_message_and_a_bounded_cost() {
    // The API server refuses a CRD whose rules' estimated cost exceeds its budget; the estimate is bounded only when
    // the strings a rule reads have maxLength and every list above it has maxItems.
    for kind in ["Eip", "BgpConf", "BgpPeer"] {
        let all = nodes(&crd(kind));
        for (path, node) in &all {
            let Some(rules) = node["x-kubernetes-validations"].as_array() else {
                continue;
            };
            for rule in rules {
                assert!(
                    rule["message"].is_string() || rule["messageExpression"].is_string(),
                    "{kind} {path}: rule without a message: {rule}"
                );
            }
            if node["type"] == "string" {
                assert!(
                    node["maxLength"].is_u64(),
                    "{kind} {path}: a rule on a string without maxLength"
                );
            }
            // Every list on the way down: `a[].b[]` has the lists `a` and `a[].b`.
            for (i, _) in path.match_indices("[]") {
                let list = &path[..i];
                let list_node = &all.iter().find(|(p, _)| p == list).unwrap().1;
                assert!(
                    list_node["maxItems"].is_u64(),
                    "{kind} {path}: list {list} has no maxItems"
                );
            }
        }
    }
}
