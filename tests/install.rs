//! Installing Herald on the real kube-apiserver: `deploy/release.yaml` (the Helm chart's defaults with the CRDs) in
//! one `kubectl apply`, and the chart rendered with other values accepted by the server (server-side dry-run):
//! passive BGP (NET_BIND_SERVICE added), election timings, the API-outage policy, scheduling. Runs with
//! `HERALD_TEST_APISERVER=kube` and says that it skips otherwise.

#[allow(dead_code)] // the driver serves the netns tests too; this file uses a part of it
#[path = "../netns-tests/src/cluster/kube.rs"]
mod kube_apiserver;

use kube_apiserver::{ApiServerKind, ContainerSecurity, KubeApiServer, repo_file};
use serde_json::Value;

/// `helm template` of the chart with `sets` (`key=value`).
fn render(sets: &[&str]) -> String {
    kube_apiserver::helm_template(sets).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn release_manifest_installs_in_one_apply_and_the_chart_renders_what_the_server_accepts() {
    if ApiServerKind::from_env() != ApiServerKind::Kube {
        eprintln!("skipped: installing needs the real kube-apiserver (HERALD_TEST_APISERVER=kube)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("herald-install-{:08x}", rand::random::<u32>()));
    let kube = KubeApiServer::start_on_host(&dir).expect("start kube-apiserver");

    // One file, one apply: CRDs, namespace, RBAC, DaemonSet. Warnings would show on stderr.
    let release = repo_file("deploy/release.yaml");
    let out = kube
        .kubectl(&["apply", "-f", &release.to_string_lossy()], None)
        .expect("kubectl apply -f deploy/release.yaml");
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/eips.herald.dev created",
        "namespace/herald-system created",
        "clusterrole.rbac.authorization.k8s.io/herald created",
        "daemonset.apps/herald created",
    ] {
        assert!(out.contains(object), "{object} in:\n{out}");
    }
    let ds: Value = serde_json::from_str(
        &kube
            .kubectl(
                &["get", "daemonset", "herald", "-n", "herald-system", "-o", "json"],
                None,
            )
            .unwrap(),
    )
    .unwrap();
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "herald:0.1.0");
    assert_eq!(
        container["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_RAW"])
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // Other values: the server accepts every object (dry run; the PodMonitor/ServiceMonitor kinds need the Prometheus
    // Operator's CRDs, which `helm lint` checks instead).
    let variants: [&[&str]; 3] = [
        &["bgp.passive=true"],
        &[
            "election.nodeRenewPeriod=300ms",
            "election.takeoverAfter=1s",
            "election.renewDeadline=600ms",
            "apiOutage=withdraw",
            "logFormat=text",
            "metrics.port=9472",
        ],
        &[
            "image.repository=registry.example/herald",
            "image.tag=1.2.3",
            "nodeSelector.kubernetes\\.io/os=linux",
            "priorityClassName=",
        ],
    ];
    for sets in variants {
        let manifest = render(sets);
        let out = kube
            .kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest))
            .unwrap_or_else(|e| panic!("server-side dry run of the chart with {sets:?}: {e:#}"));
        assert!(
            out.contains("daemonset.apps/herald configured (server dry run)"),
            "{sets:?}: {out}"
        );
    }
    let passive = ContainerSecurity::of_daemonset(&render(&["bgp.passive=true"])).unwrap();
    assert_eq!(passive.add, ["NET_RAW", "NET_BIND_SERVICE"]);
    let timings = render(variants[1]);
    for arg in [
        "--node-renew-period=300ms",
        "--takeover-after=1s",
        "--renew-deadline=600ms",
        "--api-outage=withdraw",
        "--log-format=text",
        "--metrics-addr=0.0.0.0:9472",
    ] {
        assert!(timings.contains(arg), "{arg} in:\n{timings}");
    }
    drop(kube);
    let _ = std::fs::remove_dir_all(&dir);
}
