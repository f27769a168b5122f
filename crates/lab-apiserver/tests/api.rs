//! kube-rs against lab-apiserver: the write rules of `testing.md` ("lab-apiserver: what faithful means").

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Counter, CounterStatus, api_error, counter, install_counter_crd, raw, server, server_with};
use herald_lab_apiserver::Config;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::json;

fn configmap(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

fn rv<K: kube::Resource>(object: &K) -> u64 {
    object.meta().resource_version.as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn discovery_serves_builtin_groups_and_subresources() {
    let (_server, client) = server().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            found.push(format!(
                "{}/{}:{}",
                resource.group,
                resource.plural,
                caps.scope == kube::discovery::Scope::Namespaced
            ));
        }
    }
    for expected in [
        "/namespaces:false",
        "/nodes:false",
        "/services:true",
        "/events:true",
        "/secrets:true",
        "/configmaps:true",
        "discovery.k8s.io/endpointslices:true",
        "coordination.k8s.io/leases:true",
        "events.k8s.io/events:true",
        "apiextensions.k8s.io/customresourcedefinitions:false",
    ] {
        assert!(found.contains(&expected.to_string()), "{expected} not in {found:?}");
    }
    let resources = client.list_core_api_resources("v1").await.unwrap();
    let status = resources
        .resources
        .iter()
        .find(|r| r.name == "services/status")
        .expect("services/status");
    assert_eq!(status.verbs, ["get", "patch", "update"]);
    let svc = resources.resources.iter().find(|r| r.name == "services").unwrap();
    assert_eq!(svc.short_names.as_deref(), Some(&["svc".to_string()][..]));
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn errors_are_status_objects_with_kubernetes_codes() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert_eq!(api_error(cms.get("missing").await), (404, "NotFound".to_string()));
    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    assert_eq!(
        api_error(cms.create(&PostParams::default(), &configmap("a", &[])).await),
        (409, "AlreadyExists".into())
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "no-such-namespace");
    assert_eq!(
        api_error(elsewhere.create(&PostParams::default(), &configmap("a", &[])).await).0,
        404
    );
    assert_eq!(
        api_error(cms.create(&PostParams::default(), &configmap("Not_Valid", &[])).await),
        (422, "Invalid".into())
    );

    let json = [("Content-Type", "application/json")];
    let (code, status) = raw(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &json,
        b"{not json",
    )
    .await;
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str()),
        (400, Some("Status"), Some("BadRequest"))
    );
    let no_name = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#;
    let (code, status) = raw(&server, "POST", "/api/v1/namespaces/default/configmaps", &json, no_name).await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("name or generateName is required"),
        "{status}"
    );
    let wrong_kind = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#;
    let (code, _) = raw(
        &server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &json,
        wrong_kind,
    )
    .await;
    assert_eq!(code, 400);
    let (code, status) = raw(&server, "POST", "/api/v1/namespaces/default/configmaps/a", &json, b"{}").await;
    assert_eq!((code, status["reason"].as_str()), (405, Some("MethodNotAllowed")));
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    assert_eq!(api_error(cms.create(&dry, &configmap("dry", &[])).await).0, 400);
    assert_eq!(
        api_error(cms.get("dry").await).0,
        404,
        "a refused dry run wrote nothing"
    );
    // As the real server: an unknown group is its mux's plain-text 404, an unknown core resource a Status.
    let (code, body) = raw(&server, "GET", "/apis/nope.example/v1/things", &[], b"").await;
    assert_eq!((code, body.as_str()), (404, Some("404 page not found\n")));
    let (code, status) = raw(&server, "GET", "/api/v1/things", &[], b"").await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
}

#[tokio::test]
async fn resource_versions_are_global_monotonic_and_stale_puts_conflict() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let a = cms
        .create(&PostParams::default(), &configmap("a", &[("n", "0")]))
        .await
        .unwrap();
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1"}})).unwrap();
    let l = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert!(rv(&l) > rv(&a), "resourceVersion is global across resources");

    let mut fresh = a.clone();
    fresh.data = Some([("n".to_string(), "1".to_string())].into());
    let updated = cms.replace("a", &PostParams::default(), &fresh).await.unwrap();
    assert!(rv(&updated) > rv(&l));
    // `a` still carries the old resourceVersion.
    assert_eq!(
        api_error(cms.replace("a", &PostParams::default(), &a).await),
        (409, "Conflict".to_string())
    );

    // Built-ins accept a PUT without resourceVersion (unconditional update).
    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    unconditional.data = Some([("n".to_string(), "2".to_string())].into());
    cms.replace("a", &PostParams::default(), &unconditional).await.unwrap();

    // Custom resources do not.
    install_counter_crd(&client).await;
    let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
    let mut c = counters.create(&PostParams::default(), &counter("c", 1)).await.unwrap();
    c.metadata.resource_version = None;
    assert_eq!(
        api_error(counters.replace("c", &PostParams::default(), &c).await),
        (422, "Invalid".to_string())
    );
}

#[tokio::test]
async fn concurrent_compare_and_swap_writers_lose_no_increment() {
    const WRITERS: u64 = 16;
    const INCREMENTS: u64 = 5;
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("counter", &[("n", "0")]))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..INCREMENTS {
                loop {
                    let mut cm = cms.get("counter").await.unwrap();
                    let n: u64 = cm.data.as_ref().unwrap()["n"].parse().unwrap();
                    cm.data = Some([("n".to_string(), (n + 1).to_string())].into());
                    match cms.replace("counter", &PostParams::default(), &cm).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(status)) if status.code == 409 => conflicts += 1,
                        Err(other) => panic!("unexpected error {other}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let final_value = cms.get("counter").await.unwrap().data.unwrap()["n"].clone();
    assert_eq!(final_value, (WRITERS * INCREMENTS).to_string());
    let metrics = server.metrics();
    assert_eq!(
        metrics.requests("update", "configmaps"),
        WRITERS * INCREMENTS + conflicts
    );
    assert_eq!(metrics.responses.get(&409).copied().unwrap_or(0), conflicts);
}

#[tokio::test]
async fn status_subresource_and_generation_rules() {
    let (_server, client) = server().await;
    install_counter_crd(&client).await;
    let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
    let mut with_status = counter("c", 1);
    with_status.status = Some(CounterStatus {
        seen: 99,
        conditions: vec![],
    });
    let created = counters.create(&PostParams::default(), &with_status).await.unwrap();
    assert_eq!(
        created.status, None,
        "create drops status when there is a status subresource"
    );
    assert_eq!(created.metadata.generation, Some(1));

    // Status writes change only status and never bump generation.
    let patched = counters
        .patch_status(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"value": 7}, "status": {"seen": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.value, 1);
    assert_eq!(patched.status.as_ref().unwrap().seen, 1);
    assert_eq!(patched.metadata.generation, Some(1));

    // Main-resource writes leave status alone; spec changes bump generation.
    let mut replaced = patched.clone();
    replaced.spec.value = 2;
    replaced.status = Some(CounterStatus {
        seen: 1000,
        conditions: vec![],
    });
    let replaced = counters.replace("c", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().seen, 1);
    assert_eq!(replaced.metadata.generation, Some(2));

    // Metadata-only changes do not bump generation.
    let labelled = counters
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));

    // PUT on /status with a changed spec: spec ignored.
    let mut status_put = labelled.clone();
    status_put.spec.value = 50;
    status_put.status = Some(CounterStatus {
        seen: 5,
        conditions: vec![],
    });
    let after = counters
        .replace_status("c", &PostParams::default(), &status_put)
        .await
        .unwrap();
    assert_eq!((after.spec.value, after.status.unwrap().seen), (2, 5));

    // Services: status is written through /status only.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    }))
    .unwrap();
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    assert!(svc.status.unwrap().load_balancer.unwrap().ingress.is_none());
    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
    services
        .patch("web", &PatchParams::default(), &Patch::Merge(&ingress))
        .await
        .unwrap();
    let svc = services.get("web").await.unwrap();
    assert!(
        svc.status.unwrap().load_balancer.unwrap().ingress.is_none(),
        "main resource ignores status"
    );
    let svc = services
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&ingress))
        .await
        .unwrap();
    let ingress = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm = configmap("held", &[]);
    cm.metadata.finalizers = Some(vec!["herald.dev/ip".to_string(), "other/x".to_string()]);
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let deleted = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = deleted.left().expect("object returned while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    assert!(rv(&marked) > rv(&created));
    // No new finalizers on an object being deleted.
    let add = json!({"metadata": {"finalizers": ["herald.dev/ip", "other/x", "new/one"]}});
    assert_eq!(
        api_error(cms.patch("held", &PatchParams::default(), &Patch::Merge(&add)).await).0,
        422
    );
    // Removing one finalizer keeps it; removing the last deletes it.
    let one = json!([{"op": "replace", "path": "/metadata/finalizers", "value": ["other/x"]}]);
    let json_patch: json_patch::Patch = serde_json::from_value(one).unwrap();
    cms.patch("held", &PatchParams::default(), &Patch::Json::<()>(json_patch))
        .await
        .unwrap();
    assert!(cms.get("held").await.unwrap().metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_error(cms.get("held").await).0, 404);

    // Without finalizers, delete removes at once; built-ins answer with a Success status.
    cms.create(&PostParams::default(), &configmap("plain", &[]))
        .await
        .unwrap();
    let status = cms
        .delete("plain", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .expect("status");
    assert_eq!(status.status, Some(kube::core::response::StatusSummary::Success));
    // Preconditions.
    let c = cms
        .create(&PostParams::default(), &configmap("pre", &[]))
        .await
        .unwrap();
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(api_error(cms.delete("pre", &wrong).await).0, 409);
    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: c.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    cms.delete("pre", &right).await.unwrap();
}

#[tokio::test]
async fn patch_types() {
    let (server, client) = server().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let pp = PatchParams::default();

    // Strategic merge: ports merge by port, labels merge, null deletes.
    let smp = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"ports": [{"port": 80, "name": "web"}]}});
    let svc = services.patch("web", &pp, &Patch::Strategic(smp)).await.unwrap();
    let labels = svc.metadata.labels.clone().unwrap();
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["b", "c"]);
    let ports = svc.spec.unwrap().ports.unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].name.as_deref(), Some("web"));

    // Merge patch replaces lists.
    let svc = services
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"spec": {"ports": [{"port": 8080, "protocol": "UDP"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap().len(), 1);

    // JSON patch; a failing test op is 422.
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}])).unwrap();
    let svc = services.patch("web", &pp, &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(svc.metadata.annotations.unwrap()["x"], "y");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/type", "value": "ClusterIP"}])).unwrap();
    assert_eq!(
        api_error(services.patch("web", &pp, &Patch::Json::<()>(failing)).await).0,
        422
    );

    // A resourceVersion in a patch is a precondition.
    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"z": "1"}}});
    assert_eq!(
        api_error(services.patch("web", &pp, &Patch::Merge(stale)).await),
        (409, "Conflict".to_string())
    );

    // Strategic merge on status.conditions merges by type.
    install_counter_crd(&client).await;
    let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
    counters.create(&PostParams::default(), &counter("c", 1)).await.unwrap();
    assert_eq!(
        api_error(
            counters
                .patch("c", &pp, &Patch::Strategic(json!({"spec": {"value": 2}})))
                .await
        )
        .0,
        415,
        "strategic merge is refused for custom resources"
    );
    let apply = PatchParams::apply("test");
    assert_eq!(
        api_error(
            counters
                .patch("c", &apply, &Patch::Apply(json!({"spec": {"value": 2}})))
                .await
        )
        .0,
        415
    );
    let (code, status) = raw(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/services/web/status",
        &[("Content-Type", "application/strategic-merge-patch+json")],
        br#"{"status":{"conditions":[{"type":"A","status":"True"},{"type":"B","status":"False"}]}}"#,
    )
    .await;
    assert_eq!(code, 200, "{status}");
    let (_, status) = raw(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/services/web/status",
        &[("Content-Type", "application/strategic-merge-patch+json")],
        br#"{"status":{"conditions":[{"type":"B","status":"True"}]}}"#,
    )
    .await;
    assert_eq!(
        status["status"]["conditions"],
        json!([{"type": "A", "status": "True"}, {"type": "B", "status": "True"}])
    );
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "db"})),
        ("c", json!({})),
    ] {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let select = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(cms.list(&select("app=web")).await.unwrap()), ["a"]);
    assert_eq!(names(cms.list(&select("app!=web")).await.unwrap()), ["b", "c"]);
    assert_eq!(names(cms.list(&select("app in (web,db)")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(cms.list(&select("app notin (web)")).await.unwrap()), ["b", "c"]);
    assert_eq!(names(cms.list(&select("tier")).await.unwrap()), ["a"]);
    assert_eq!(names(cms.list(&select("!app")).await.unwrap()), ["c"]);
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name!=b"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.namespace=default"))
                .await
                .unwrap()
        )
        .len(),
        3
    );
    assert_eq!(
        api_error(cms.list(&ListParams::default().fields("spec.nope=1")).await).0,
        400
    );
    assert_eq!(api_error(cms.list(&select("app in web")).await).0, 400);

    // Paging: limit + continue.
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(second), ["c"]);

    // Services support spec.type.
    let (code, _) = raw(
        &server,
        "GET",
        "/api/v1/services?fieldSelector=spec.type%3DLoadBalancer",
        &[],
        b"",
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn generate_name_and_namespaces() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"generateName": "herald-"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let name = created.metadata.name.unwrap();
    assert!(
        name.starts_with("herald-") && name.len() == "herald-".len() + 5,
        "{name}"
    );
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-public", "kube-system"]);
}

#[tokio::test]
async fn crds_register_and_remove_resources() {
    let (_server, client) = server().await;
    install_counter_crd(&client).await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (resource, caps) = discovery
        .resolve_gvk(&kube::core::GroupVersionKind::gvk("lab.test", "v1", "Counter"))
        .expect("served");
    assert_eq!(resource.plural, "counters");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(sub, _)| sub.plural.ends_with("status")));
    let list = client.list_api_group_resources("lab.test/v1").await.unwrap();
    let counters_entry = list.resources.iter().find(|r| r.name == "counters").unwrap();
    assert_eq!(counters_entry.short_names.as_deref(), Some(&["ctr".to_string()][..]));
    assert_eq!(counters_entry.categories.as_deref(), Some(&["lab".to_string()][..]));

    let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
    counters.create(&PostParams::default(), &counter("c", 1)).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("counters.lab.test").await.unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    crds.delete("counters.lab.test", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_error(counters.get("c").await).0, 404);
    assert!(client.list_api_group_resources("lab.test/v1").await.is_err());
    // Re-creating the CRD serves an empty resource: its objects went with it.
    install_counter_crd(&client).await;
    assert!(counters.list(&ListParams::default()).await.unwrap().items.is_empty());
    // Invalid CRDs are refused.
    let mut bad = common::Counter::crd_for_test();
    bad.spec.scope = "Sideways".to_string();
    bad.metadata.name = Some("others.lab.test".to_string());
    bad.spec.names.plural = "others".to_string();
    assert_eq!(api_error(crds.create(&PostParams::default(), &bad).await).0, 422);
}

#[tokio::test]
async fn table_output_for_custom_and_builtin_resources() {
    let (server, client) = server().await;
    install_counter_crd(&client).await;
    let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
    counters
        .create(&PostParams::default(), &counter("c", 42))
        .await
        .unwrap();
    let status = json!({"status": {"seen": 1, "conditions": [{"type": "Ready", "status": "True"}]}});
    counters
        .patch_status("c", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let table = [(
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )];
    let (code, t) = raw(
        &server,
        "GET",
        "/apis/lab.test/v1/namespaces/default/counters",
        &table,
        b"",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(t["kind"], "Table");
    let columns: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Value", "Ready", "Age"]);
    let cells = &t["rows"][0]["cells"];
    assert_eq!(
        (&cells[0], &cells[1], &cells[2]),
        (&json!("c"), &json!(42), &json!("True"))
    );
    assert!(cells[3].as_str().unwrap().ends_with('s'), "age like 0s: {cells}");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
    )
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let (_, t) = raw(&server, "GET", "/api/v1/namespaces/default/services/web", &table, b"").await;
    let columns: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    assert_eq!(t["rows"][0]["cells"][3], "<pending>");
    assert_eq!(t["rows"][0]["cells"][4], "80:30000/TCP");
}

#[tokio::test]
async fn metrics_count_requests_by_audit_verb() {
    let (server, client) = server().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {}})).unwrap();
    let lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    leases.replace("l", &PostParams::default(), &lease).await.unwrap();
    leases.get("l").await.unwrap();
    leases.list(&ListParams::default()).await.unwrap();
    leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "x"}})),
        )
        .await
        .unwrap();
    leases.delete("l", &DeleteParams::default()).await.unwrap();
    let m = server.metrics();
    for verb in ["create", "update", "get", "list", "patch", "delete"] {
        assert_eq!(m.requests(verb, "leases"), 1, "{verb}: {m:?}");
    }
    let (code, text) = raw(&server, "GET", "/metrics", &[], b"").await;
    assert_eq!(code, 200);
    let text = text.as_str().unwrap().to_string();
    assert!(
        text.contains("lab_apiserver_requests_total{verb=\"update\",resource=\"leases\"} 1"),
        "{text}"
    );
    assert!(text.contains("lab_apiserver_watches 0"), "{text}");
    assert_eq!(raw(&server, "GET", "/healthz", &[], b"").await.0, 200);
}

#[tokio::test]
async fn state_file_keeps_objects_and_resource_version_across_restarts() {
    let dir = std::env::temp_dir().join(format!("lab-apiserver-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    let config = Config {
        state_file: Some(path.clone()),
        ..Config::default()
    };
    let (server, client) = server_with(config.clone()).await;
    install_counter_crd(&client).await;
    let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
    let created = counters
        .create(&PostParams::default(), &counter("kept", 3))
        .await
        .unwrap();
    let before = server.resource_version();
    server.shutdown().await;

    let (server, client) = server_with(config).await;
    assert_eq!(server.resource_version(), before);
    let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
    let kept = counters.get("kept").await.unwrap();
    assert_eq!(kept.metadata.uid, created.metadata.uid);
    assert_eq!(kept.spec.value, 3);
    let updated = counters
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"value": 4}})),
        )
        .await
        .unwrap();
    assert!(rv(&updated) > before);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn state_file_writes_are_spaced_while_changes_continue_and_shutdown_saves_the_rest() {
    let dir = std::env::temp_dir().join(format!("lab-apiserver-spaced-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    let config = Config {
        state_file: Some(path.clone()),
        state_write_delay: Duration::from_millis(10),
        state_write_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let (server, client) = server_with(config).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &configmap("first", &[]))
        .await
        .unwrap();
    // The first write comes a delay after the first change.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no state file 10 s after a change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let written = std::fs::read_to_string(&path).unwrap();
    // The next one waits for the interval, however many changes come in between...
    cms.create(&PostParams::default(), &configmap("second", &[]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        written,
        "written again within the interval"
    );
    // ...but shutdown writes at once.
    server.shutdown().await;
    let last = std::fs::read_to_string(&path).unwrap();
    assert!(last.contains("\"second\""), "shutdown saved the last change");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn kube_event_recorder_creates_then_patches_series() {
    use k8s_openapi::api::events::v1::Event as KubeEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (server, client) = server().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer"}})).unwrap();
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    let reporter = Reporter {
        controller: "herald".into(),
        instance: Some("node-1".into()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "IPAllocated".into(),
        note: Some("192.0.2.1".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&svc, &());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), "default");
    let list = events
        .list(&ListParams::default().fields("regarding.name=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    let m = server.metrics();
    assert_eq!((m.requests("create", "events"), m.requests("patch", "events")), (1, 1));
}
