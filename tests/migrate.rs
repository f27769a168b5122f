//! `herald migrate` against an API server (lab-apiserver, or the real kube-apiserver with
//! `HERALD_TEST_APISERVER=kube`, where the CRDs' schemas and CEL rules are enforced): what it writes for each
//! project's documented configuration applies cleanly and reads back unchanged, and an agent started on Services
//! that hold the old project's IPs keeps every one of them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Cluster, eventually, ingress_ips, taken_over};
use herald_api::{BgpConf, BgpPeer, Eip, Protocol};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn example(name: &str) -> String {
    format!("{}/tests/migrate/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `herald migrate ARGS`: the YAML and the report.
fn herald_migrate(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("migrate")
        .args(args)
        .output()
        .expect("run herald migrate");
    let (yaml, report) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "herald migrate {args:?} failed: {report}");
    (yaml, report)
}

fn documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn name_of(doc: &Value) -> String {
    doc["metadata"]["name"].as_str().unwrap().to_string()
}

/// Creates every object of the output, as `kubectl apply -f` would; each must be accepted and read back as sent
/// (nothing pruned by the schema, nothing refused by a rule).
async fn apply(c: &Cluster, yaml: &str) -> Vec<Value> {
    let docs = documents(yaml);
    assert!(!docs.is_empty());
    for doc in &docs {
        match doc["kind"].as_str().unwrap() {
            "Eip" => create_same::<Eip>(Api::all(c.client.clone()), doc).await,
            "BgpPeer" => create_same::<BgpPeer>(Api::all(c.client.clone()), doc).await,
            "BgpConf" => create_same::<BgpConf>(Api::all(c.client.clone()), doc).await,
            "Secret" => create_same::<Secret>(Api::namespaced(c.client.clone(), "herald-system"), doc).await,
            other => panic!("herald migrate wrote a {other}"),
        }
    }
    docs
}

/// Creates `doc`; the server must store its `spec` unchanged.
async fn create_same<K>(api: Api<K>, doc: &Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let sent: K = serde_json::from_value(doc.clone()).unwrap();
    let what = format!("{} {}", doc["kind"], name_of(doc));
    let stored = api
        .create(&PostParams::default(), &sent)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stored = serde_json::to_value(&stored).unwrap();
    assert_eq!(stored.get("spec"), doc.get("spec"), "{what} read back");
}

/// Deletes what [`apply`] created.
async fn remove(c: &Cluster, docs: &[Value]) {
    let dp = DeleteParams::default();
    for doc in docs {
        let name = name_of(doc);
        match doc["kind"].as_str().unwrap() {
            "Eip" => drop(Api::<Eip>::all(c.client.clone()).delete(&name, &dp).await),
            "BgpPeer" => drop(Api::<BgpPeer>::all(c.client.clone()).delete(&name, &dp).await),
            "BgpConf" => drop(Api::<BgpConf>::all(c.client.clone()).delete(&name, &dp).await),
            _ => drop(
                Api::<Secret>::namespaced(c.client.clone(), "herald-system")
                    .delete(&name, &dp)
                    .await,
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_configuration_of_every_documented_form_applies_cleanly() {
    let c = Cluster::start().await;
    let sets: [(&str, &[&str]); 4] = [
        ("metallb", &["metallb-crds.yaml"]),
        ("metallb", &["metallb-configmap.yaml"]),
        ("openelb", &["openelb-v1alpha2.yaml"]),
        ("openelb", &["openelb-v1alpha1.yaml"]),
    ];
    for (source, files) in sets {
        let paths: Vec<String> = files.iter().map(|f| example(f)).collect();
        let mut args = vec!["--from", source];
        args.extend(paths.iter().map(String::as_str));
        let (yaml, report) = herald_migrate(&args);
        assert!(report.contains(&format!("herald migrate --from {source}")), "{report}");
        let docs = apply(&c, &yaml).await;
        eprintln!("{files:?}: {} objects applied", docs.len());
        remove(&c, &docs).await;
    }
}

/// Namespaces, then the Services as the old project left them: created, then their status written (a create
/// drops the status), as MetalLB's controller wrote it.
async fn services_of(c: &Cluster, path: &str) -> Vec<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for doc in documents(&text) {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let _ = Api::<Namespace>::all(c.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await;
        let svc: Service = serde_json::from_value(doc.clone()).unwrap();
        let name = name_of(&doc);
        let api = c.services(&ns);
        api.create(&PostParams::default(), &svc).await.unwrap();
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": doc["status"]})),
        )
        .await
        .unwrap();
        let ips = ingress_ips(&api.get(&name).await.unwrap());
        assert!(!ips.is_empty(), "{ns}/{name} holds its IPs");
        out.push((ns, name, ips));
    }
    out
}

/// A Service holding an address no pool has.
const STRAY: &str = "apiVersion: v1
kind: Service
metadata: {name: stray, namespace: default}
spec:
  type: LoadBalancer
  ports: [{port: 80, protocol: TCP}]
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.250}]
";

/// The `kubectl annotate service NAME -n NS --overwrite KEY=VALUE` commands of the report's "To do", as patches.
async fn run_annotate_commands(c: &Cluster, report: &str) -> usize {
    let mut n = 0;
    for part in report.split("`kubectl annotate service ").skip(1) {
        let command = part.split('`').next().unwrap();
        let words: Vec<&str> = command.split_whitespace().collect();
        let [name, "-n", ns, "--overwrite", pair] = words[..] else {
            panic!("unexpected command: {command}")
        };
        let (key, value) = pair.split_once('=').unwrap();
        c.services(ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .unwrap();
        n += 1;
    }
    n
}

/// The Services of `services` (as the old project left them) and the configuration of `config`, migrated; the
/// report's commands run; then an agent: every Service keeps its IPs, from an Eip of the mode the old project
/// announced it in (`layer2`: the Eips announced in Layer 2).
async fn keeps_every_ip(source: &str, config: &str, services: &str, layer2: &[&str], commands: usize) {
    let mut c = Cluster::start().await;
    let mut held = services_of(&c, &example(services)).await;
    // And one whose address is in no pool of the old project's any more: the report says it loses it.
    let stray = c.dir.join("stray.yaml").to_string_lossy().into_owned();
    std::fs::write(&stray, STRAY).unwrap();
    held.extend(services_of(&c, &stray).await);
    let (yaml, report) = herald_migrate(&["--from", source, &example(config), &example(services), &stray]);
    apply(&c, &yaml).await;
    assert_eq!(run_annotate_commands(&c, &report).await, commands, "{report}");
    assert!(report.contains("- default/stray: LOSES 198.51.100.250"), "{report}");
    c.agent("node-a", &[]);
    let eips: Api<Eip> = Api::all(c.client.clone());
    let (stray, held): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, name, _)| name == "stray");
    // The report was right about the one it said loses its address: Herald gives it another.
    let (ns, name, before) = &stray[0];
    let moved = eventually(WAIT, || async {
        let ips = ingress_ips(&c.services(ns).get(name).await.ok()?);
        (!ips.is_empty() && &ips != before).then_some(ips)
    })
    .await;
    assert!(
        moved.is_some(),
        "{ns}/{name} keeps {before:?} although the report said it loses it"
    );
    for (ns, name, before) in &held {
        // Herald has taken the Service over once it records the Eip it holds the IPs from.
        let svc = taken_over(&c, ns, name, WAIT)
            .await
            .unwrap_or_else(|| panic!("{ns}/{name} never taken over: {}", c.log(0, "node-a")));
        assert_eq!(&ingress_ips(&svc), before, "{ns}/{name} keeps its IPs");
        let from = &svc.metadata.annotations.as_ref().unwrap()["herald.dev/allocated-from"];
        let eip = eips.get(from).await.unwrap();
        let expected = if layer2.contains(&from.as_str()) {
            Protocol::Layer2
        } else {
            Protocol::Bgp
        };
        assert_eq!(eip.spec.protocol, expected, "{ns}/{name} from Eip {from}");
    }
    // And they stay: a second look after the allocator has run its passes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (ns, name, before) in &held {
        let svc = c.services(ns).get(name).await.unwrap();
        assert_eq!(&ingress_ips(&svc), before, "{ns}/{name} still holds its IPs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_metallb_services_keeps_every_ip_in_the_same_mode() {
    keeps_every_ip("metallb", "metallb-crds.yaml", "services-metallb.yaml", &["lan"], 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_services_of_the_metallb_configmap_keeps_every_ip() {
    keeps_every_ip(
        "metallb",
        "metallb-configmap.yaml",
        "services-metallb.yaml",
        &["lan"],
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_openelb_services_keeps_every_ip_once_the_report_s_commands_ran() {
    // OpenELB shared 203.0.113.53 between two Services without a key: the report's two commands give them one.
    keeps_every_ip(
        "openelb",
        "openelb-v1alpha2.yaml",
        "services-openelb.yaml",
        &["eip-layer2"],
        2,
    )
    .await;
}

/// A CustomResourceDefinition of the old project's, open to any content (the test needs its objects stored, not
/// checked).
fn open_crd(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": if namespaced { "Namespaced" } else { "Cluster" },
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    })
}

/// Creates the CRDs, then the objects of `file` (and their namespaces).
async fn store(c: &Cluster, crds: &[Value], file: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject};
    use kube::core::GroupVersionKind;
    let api: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    for crd in crds {
        api.create(&PostParams::default(), &serde_json::from_value(crd.clone()).unwrap())
            .await
            .unwrap();
    }
    if let Some(kube) = c.kube() {
        kube.wait_crds_established(Duration::from_secs(60)).unwrap();
    }
    let text = std::fs::read_to_string(example(file)).unwrap();
    for doc in documents(&text) {
        let (group, version) = doc["apiVersion"]
            .as_str()
            .unwrap()
            .rsplit_once('/')
            .unwrap_or(("", "v1"));
        let kind = doc["kind"].as_str().unwrap();
        let plural = crds
            .iter()
            .find(|c| c["spec"]["names"]["kind"] == kind)
            .map(|c| c["spec"]["names"]["plural"].as_str().unwrap().to_string())
            .unwrap_or_else(|| format!("{}s", kind.to_lowercase()));
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
        let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => {
                let _ = Api::<Namespace>::all(c.client.clone())
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
                    )
                    .await;
                Api::namespaced_with(c.client.clone(), ns, &resource)
            }
            None => Api::all_with(c.client.clone(), &resource),
        };
        // The server may take a moment to serve a new CRD.
        eventually(WAIT, || async {
            api.create(&PostParams::default(), &object).await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("{kind} {} not stored", name_of(&doc)));
    }
}

/// `herald migrate --from-cluster` as cluster-admin: the YAML documents.
fn migrate_from_cluster(c: &Cluster, source: &str) -> Vec<Value> {
    let kubeconfig = c
        .kube()
        .map_or(c.kubeconfig.clone(), |k| k.admin_kubeconfig().to_path_buf());
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["migrate", "--from", source, "--from-cluster"])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    documents(&String::from_utf8(out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_cluster_reads_what_the_files_hold() {
    let c = Cluster::start().await;
    let metallb = [
        open_crd("metallb.io", "v1beta1", "IPAddressPool", "ipaddresspools", true),
        open_crd("metallb.io", "v1beta1", "L2Advertisement", "l2advertisements", true),
        open_crd("metallb.io", "v1beta1", "BGPAdvertisement", "bgpadvertisements", true),
        open_crd("metallb.io", "v1beta2", "BGPPeer", "bgppeers", true),
        open_crd("metallb.io", "v1beta1", "BFDProfile", "bfdprofiles", true),
        open_crd("metallb.io", "v1beta1", "Community", "communities", true),
    ];
    store(&c, &metallb, "metallb-crds.yaml").await;
    let from_files = documents(&herald_migrate(&["--from", "metallb", &example("metallb-crds.yaml")]).0);
    assert_eq!(migrate_from_cluster(&c, "metallb"), from_files);
    // OpenELB v1alpha2 (its CRDs are cluster-scoped).
    let openelb = [
        open_crd("network.kubesphere.io", "v1alpha2", "Eip", "eips", false),
        open_crd("network.kubesphere.io", "v1alpha2", "BgpConf", "bgpconfs", false),
        open_crd("network.kubesphere.io", "v1alpha2", "BgpPeer", "bgppeers", false),
    ];
    store(&c, &openelb, "openelb-v1alpha2.yaml").await;
    let from_files = documents(&herald_migrate(&["--from", "openelb", &example("openelb-v1alpha2.yaml")]).0);
    assert_eq!(migrate_from_cluster(&c, "openelb"), from_files);
    drop(c);
    // MetalLB before v0.13: its ConfigMap.
    let c = Cluster::start().await;
    store(&c, &[], "metallb-configmap.yaml").await;
    let from_files = documents(&herald_migrate(&["--from", "metallb", &example("metallb-configmap.yaml")]).0);
    assert_eq!(migrate_from_cluster(&c, "metallb"), from_files);
}
