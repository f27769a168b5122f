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
        ["Addresses", "Protocol", "Used", "Free", "Total", "Ready", "Age"]
    );
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
