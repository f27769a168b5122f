//! The scripted conversation: the same requests, in the same order, against any API server, each step recorded
//! as a named case with its normalized outcome. It never panics on an unexpected answer: the answer is the
//! outcome, and the comparison shows it.

use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::target::{
    Reply, TABLE, Target, fields, kubectl_outcome, mask, names, outcome, outcome_class, table, table_descriptions,
    text_lines,
};

/// One step and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub name: String,
    pub outcome: Value,
}

const NS: &str = "fid";
const CM: &str = "/api/v1/namespaces/fid/configmaps";
const SVC: &str = "/api/v1/namespaces/fid/services";
const EIPS: &str = "/apis/herald.dev/v1alpha1/eips";

struct Conversation<'a> {
    t: &'a Target,
    cases: Vec<Case>,
}

impl Conversation<'_> {
    fn case(&mut self, name: &str, outcome: Value) {
        assert!(
            self.cases.iter().all(|c| c.name != name),
            "case names are unique: {name}"
        );
        self.cases.push(Case {
            name: name.to_string(),
            outcome,
        });
    }
}

/// Runs the whole conversation against `t` (a fresh server: the names are fixed). `repo` is the workspace root
/// (for `deploy/crds`).
pub async fn run(t: &Target, repo: &Path) -> Vec<Case> {
    let mut c = Conversation { t, cases: Vec::new() };
    discovery(&mut c).await;
    objects(&mut c).await;
    finalizers(&mut c).await;
    watches(&mut c).await;
    custom_resources(&mut c, repo).await;
    services(&mut c).await;
    selectors(&mut c).await;
    herald_kinds(&mut c).await;
    events(&mut c).await;
    kubectl(&mut c).await;
    c.cases
}

fn sorted(value: &Value) -> Value {
    let mut items: Vec<Value> = value.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|v| v.to_string());
    Value::Array(items)
}

/// The APIResource entries named in `wanted`, with the fields kubectl and kube-rs read.
fn resources(reply: &Reply, wanted: &[&str]) -> Value {
    let entries = reply.body["resources"].as_array().cloned().unwrap_or_default();
    let mut out = serde_json::Map::new();
    out.insert("code".to_string(), json!(reply.code));
    out.insert("groupVersion".to_string(), reply.body["groupVersion"].clone());
    for name in wanted {
        let entry = entries
            .iter()
            .find(|e| e["name"] == *name)
            .cloned()
            .unwrap_or(Value::Null);
        let or_empty = |v: &Value| if v.is_null() { json!([]) } else { sorted(v) };
        out.insert(
            name.to_string(),
            if entry.is_null() {
                json!("missing")
            } else {
                json!({
                    "singularName": entry["singularName"],
                    "namespaced": entry["namespaced"],
                    "kind": entry["kind"],
                    "verbs": sorted(&entry["verbs"]),
                    "shortNames": or_empty(&entry["shortNames"]),
                    "categories": or_empty(&entry["categories"]),
                })
            },
        );
    }
    Value::Object(out)
}

async fn discovery(c: &mut Conversation<'_>) {
    let t = c.t;
    let r = t.get("/version").await;
    c.case("discovery: /version", fields(&r, &["major", "minor"]));
    let r = t.get("/api").await;
    c.case("discovery: /api", fields(&r, &["kind", "versions"]));
    let r = t.get("/apis").await;
    let groups = r.body["groups"].as_array().cloned().unwrap_or_default();
    let preferred: serde_json::Map<String, Value> = [
        "apiextensions.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
    ]
    .iter()
    .map(|name| {
        let group = groups.iter().find(|g| g["name"] == *name);
        (
            name.to_string(),
            group.map_or(json!("missing"), |g| g["preferredVersion"]["groupVersion"].clone()),
        )
    })
    .collect();
    c.case(
        "discovery: /apis preferred versions",
        json!({"code": r.code, "kind": r.body["kind"], "groups": preferred}),
    );
    let r = t.get("/api/v1").await;
    c.case(
        "discovery: /api/v1",
        resources(
            &r,
            &[
                "namespaces",
                "namespaces/status",
                "nodes",
                "nodes/status",
                "services",
                "services/status",
                "events",
                "secrets",
                "configmaps",
                "endpoints",
            ],
        ),
    );
    for (path, wanted) in [
        ("/apis/events.k8s.io/v1", &["events"][..]),
        ("/apis/coordination.k8s.io/v1", &["leases"][..]),
        ("/apis/discovery.k8s.io/v1", &["endpointslices"][..]),
        (
            "/apis/apiextensions.k8s.io/v1",
            &["customresourcedefinitions", "customresourcedefinitions/status"][..],
        ),
    ] {
        let r = t.get(path).await;
        c.case(&format!("discovery: {path}"), resources(&r, wanted));
    }
    let r = t.get("/apis/nope.example.com/v1").await;
    c.case("discovery: unknown group version", outcome(&r));
    let r = t.get("/api/v1/nopes").await;
    c.case("get: unknown core resource", outcome(&r));
    let r = t.get("/api/v1/namespaces/default/nodes").await;
    c.case("get: cluster-scoped resource under a namespace", outcome(&r));
}

fn configmap(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "fid"}}, "data": {"k": "v"},
    })
}

async fn objects(c: &mut Conversation<'_>) {
    let t = c.t;
    let r = t
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .await;
    c.case("create: namespace (JSON)", outcome(&r));
    let r = t.post(CM, &configmap("a")).await;
    c.case("create: configmap", outcome(&r));
    let first_rv = r.body["metadata"]["resourceVersion"].clone();
    let r = t.get(&format!("{CM}/a")).await;
    c.case("get: configmap", outcome(&r));

    let mut changed = configmap("a");
    changed["data"] = json!({"k": "changed"});
    changed["metadata"]["resourceVersion"] = first_rv.clone();
    let r = t.put(&format!("{CM}/a"), &changed).await;
    c.case("replace: current resourceVersion", outcome(&r));
    let r = t.put(&format!("{CM}/a"), &changed).await;
    c.case("replace: stale resourceVersion (409 Conflict)", outcome(&r));
    let mut unconditional = configmap("a");
    unconditional["data"] = json!({"k": "unconditional"});
    let r = t.put(&format!("{CM}/a"), &unconditional).await;
    c.case("replace: no resourceVersion (built-in)", outcome(&r));
    let r = t.put(&format!("{CM}/a"), &configmap("b")).await;
    c.case("replace: name differs from URL", outcome(&r));
    let r = t.put(&format!("{CM}/missing"), &configmap("missing")).await;
    c.case("replace: missing object", outcome(&r));

    // kube-rs' typed API sees the same Status.
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), NS);
    let mut stale: ConfigMap = serde_json::from_value(configmap("a")).expect("configmap");
    stale.metadata.resource_version = first_rv.as_str().map(str::to_string);
    let result = api.replace("a", &PostParams::default(), &stale).await;
    c.case("kube-rs: replace stale", kube_result(result));
    let result = api.get("missing").await;
    c.case("kube-rs: get missing", kube_result(result));

    let r = t.get(&format!("{CM}/missing")).await;
    c.case("get: missing (404 NotFound)", outcome(&r));
    let r = t.post(CM, &configmap("a")).await;
    c.case("create: existing (409 AlreadyExists)", outcome(&r));
    let r = t.post("/api/v1/namespaces/missing/configmaps", &configmap("a")).await;
    c.case("create: in a missing namespace", outcome(&r));
    let r = t.post(CM, &configmap("Bad_Name")).await;
    c.case("create: invalid name (422)", outcome(&r));
    let r = t.post(CM, &json!({"metadata": {}})).await;
    c.case("create: no name", outcome(&r));
    let r = t
        .post(CM, &json!({"metadata": {"name": "with-rv", "resourceVersion": "5"}}))
        .await;
    c.case("create: with a resourceVersion", outcome(&r));
    let r = t.post(CM, &json!({"metadata": {"generateName": "gen-"}})).await;
    let name = r.body["metadata"]["name"].as_str().unwrap_or_default();
    c.case(
        "create: generateName",
        json!({"code": r.code, "prefix": name.starts_with("gen-"), "suffix length": name.len().saturating_sub(4)}),
    );
    let r = t
        .call(
            "POST",
            CM,
            "application/json",
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    c.case("create: malformed JSON", outcome_class(&r));
    let r = t
        .post(
            CM,
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}}),
        )
        .await;
    c.case("create: kind differs from URL", outcome_class(&r));
    let r = t
        .post(CM, &json!({"metadata": {"name": "other-ns", "namespace": "default"}}))
        .await;
    c.case("create: namespace differs from URL", outcome(&r));
    let r = t
        .call(
            "POST",
            CM,
            "application/yaml",
            "application/json",
            b"metadata: {name: y}\n".to_vec(),
        )
        .await;
    c.case("create: YAML body", outcome_class(&r));

    let r = t.post(CM, &configmap("doomed")).await;
    let uid = r.body["metadata"]["uid"].clone();
    let r = t
        .delete(
            &format!("{CM}/doomed"),
            Some(&json!({
                "kind": "DeleteOptions", "apiVersion": "v1",
                "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"},
            })),
        )
        .await;
    c.case(
        "delete: uid precondition fails",
        fields(&r, &["code", "reason", "details"]),
    );
    let r = t
        .delete(
            &format!("{CM}/doomed"),
            Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1"}})),
        )
        .await;
    c.case(
        "delete: resourceVersion precondition fails",
        fields(&r, &["code", "reason", "details"]),
    );
    let r = t
        .delete(
            &format!("{CM}/doomed"),
            Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}})),
        )
        .await;
    c.case("delete: built-in (Status Success)", outcome(&r));
    let r = t.delete(&format!("{CM}/doomed"), None).await;
    c.case("delete: missing", outcome(&r));
    let r = t
        .call(
            "POST",
            &format!("{CM}/a"),
            "application/json",
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    c.case("create: POST on an object URL", outcome_class(&r));
}

fn kube_result<T>(result: kube::Result<T>) -> Value {
    match result {
        Ok(_) => json!("ok"),
        Err(kube::Error::Api(status)) => {
            json!({"code": status.code, "reason": status.reason, "message": status.message})
        }
        Err(other) => json!(format!("client error: {other}")),
    }
}

async fn finalizers(c: &mut Conversation<'_>) {
    let t = c.t;
    let mut held = configmap("held");
    held["metadata"]["finalizers"] = json!(["fid.test/hold"]);
    t.post(CM, &held).await;
    let r = t.delete(&format!("{CM}/held"), None).await;
    c.case("finalizers: delete marks the object", outcome(&r));
    let r = t.get(&format!("{CM}/held")).await;
    c.case("finalizers: object kept while finalizers remain", outcome(&r));
    let r = t
        .patch(
            &format!("{CM}/held"),
            "merge",
            &json!({"metadata": {"finalizers": ["fid.test/hold", "fid.test/more"]}}),
        )
        .await;
    c.case("finalizers: adding one while deleting (422)", outcome(&r));
    let r = t
        .patch(
            &format!("{CM}/held"),
            "merge",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await;
    c.case(
        "finalizers: removing the last",
        fields(&r, &["metadata.finalizers", "metadata.deletionTimestamp"]),
    );
    let r = t.get(&format!("{CM}/held")).await;
    c.case("finalizers: gone after the last is removed", outcome_class(&r));
}

/// Event types and names, plus the shape of BOOKMARK and ERROR objects. Consecutive BOOKMARKs count as one:
/// they only move a client's resourceVersion forward, and the real server's cacher, which schedules them in 1 s
/// buckets, sends the one due 2 s before a deadline once or twice.
fn watch_events(code: u16, events: &[Value]) -> Value {
    let mut events: Vec<Value> = events
        .iter()
        .map(|e| match e["type"].as_str() {
            Some("BOOKMARK") => json!({
                "type": "BOOKMARK",
                "kind": e["object"]["kind"],
                "apiVersion": e["object"]["apiVersion"],
                "annotations": e["object"]["metadata"]["annotations"],
                "has resourceVersion": e["object"]["metadata"]["resourceVersion"].is_string(),
            }),
            Some("ERROR") => {
                let status = &e["object"];
                // "too old resource version: 1 (245)": the numbers are the server's.
                let message = status["message"].as_str().unwrap_or_default();
                let message: String = message.split(':').next().unwrap_or_default().to_string();
                json!({"type": "ERROR", "code": status["code"], "reason": status["reason"], "status": status["status"],
                       "kind": status["kind"], "message": message})
            }
            Some(kind) => json!({"type": kind, "name": e["object"]["metadata"]["name"]}),
            None => e.clone(),
        })
        .collect();
    events.dedup_by(|a, b| a["type"] == "BOOKMARK" && a == b);
    json!({"code": code, "events": events})
}

fn list_rv(reply: &Reply) -> String {
    reply.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string()
}

async fn watches(c: &mut Conversation<'_>) {
    let t = c.t;
    let (code, events) = t
        .watch(
            &format!("{CM}?watch=1&resourceVersion=1"),
            async {},
            |e| !e.is_empty(),
            Duration::from_secs(10),
        )
        .await;
    c.case("watch: from resourceVersion 1 (410 Gone)", watch_events(code, &events));
    let rv = list_rv(&t.get(CM).await);
    let (code, events) = t
        .watch(
            &format!("{CM}?watch=1&resourceVersion=10000000"),
            async {},
            |e| !e.is_empty(),
            Duration::from_secs(3),
        )
        .await;
    c.case("watch: from a future resourceVersion", watch_events(code, &events));

    let (code, events) = t
        .watch(
            &format!("{CM}?watch=1&resourceVersion={rv}"),
            async {
                t.post(CM, &configmap("w")).await;
                t.patch(&format!("{CM}/w"), "merge", &json!({"data": {"k": "w2"}}))
                    .await;
                t.delete(&format!("{CM}/w"), None).await;
            },
            |e| e.len() >= 3,
            Duration::from_secs(10),
        )
        .await;
    c.case(
        "watch: from a list's resourceVersion, in order",
        watch_events(code, &events),
    );

    let rv = list_rv(&t.get(CM).await);
    let (code, events) = t
        .watch(
            &format!("{CM}?watch=1&resourceVersion={rv}&labelSelector=tier%3Dweb&timeoutSeconds=3"),
            async {
                t.post(CM, &json!({"metadata": {"name": "moving", "labels": {"tier": "db"}}}))
                    .await;
                t.patch(
                    &format!("{CM}/moving"),
                    "merge",
                    &json!({"metadata": {"labels": {"tier": "web"}}}),
                )
                .await;
                t.patch(&format!("{CM}/moving"), "merge", &json!({"data": {"k": "v"}}))
                    .await;
                t.patch(
                    &format!("{CM}/moving"),
                    "merge",
                    &json!({"metadata": {"labels": {"tier": "db"}}}),
                )
                .await;
            },
            |e| e.len() >= 3,
            Duration::from_secs(10),
        )
        .await;
    c.case("watch: label selector transitions", watch_events(code, &events));

    // The real server sends a BOOKMARK 2 s before a watch's deadline (and about every minute).
    let rv = list_rv(&t.get(CM).await);
    let (code, events) = t
        .watch(
            &format!("{CM}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=4"),
            async {
                t.post(CM, &configmap("bookmarked")).await;
            },
            |_| false,
            Duration::from_secs(10),
        )
        .await;
    c.case("watch: bookmarks and timeoutSeconds", watch_events(code, &events));

    // kube-rs' streaming lists (`sendInitialEvents`).
    for name in ["s1", "s2"] {
        t.post(CM, &json!({"metadata": {"name": name, "labels": {"stream": "yes"}}}))
            .await;
    }
    let (code, events) = t
        .watch(
            &format!(
                "{CM}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true\
                 &labelSelector=stream%3Dyes&timeoutSeconds=10"
            ),
            async {},
            |e| e.iter().any(|e| e["type"] == "BOOKMARK"),
            Duration::from_secs(10),
        )
        .await;
    c.case("watch: sendInitialEvents", watch_events(code, &events));
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), NS);
    let config = watcher::Config::default().labels("stream=yes").streaming_lists();
    let initial = watcher(api, config)
        .take_while(|e| futures::future::ready(!matches!(e, Ok(watcher::Event::InitDone))))
        .map_ok(|e| match e {
            watcher::Event::InitApply(cm) => cm.metadata.name.unwrap_or_default(),
            watcher::Event::Init => "Init".to_string(),
            other => format!("{other:?}"),
        })
        .try_collect::<Vec<_>>();
    let outcome = match tokio::time::timeout(Duration::from_secs(10), initial).await {
        Ok(Ok(names)) => json!(names),
        Ok(Err(error)) => json!(format!("watcher error: {error}")),
        Err(_) => json!("no InitDone in 10 s"),
    };
    c.case("kube-rs: watcher streaming list", outcome);
}

fn eip(name: &str) -> Value {
    json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "Eip", "metadata": {"name": name},
        "spec": {"addresses": ["192.0.2.0/28"]},
        "status": {"used": 3, "free": "11", "total": "14"},
    })
}

async fn custom_resources(c: &mut Conversation<'_>, repo: &Path) {
    let t = c.t;
    let crds = repo.join("deploy/crds/herald.dev.yaml");
    let crds = crds.to_string_lossy();
    let run = t.kubectl(&["apply", "-f", &crds]).await;
    c.case(
        "kubectl apply -f deploy/crds (stdout)",
        json!({"exit": run.code, "stdout": text_lines(&run.stdout)}),
    );
    c.case(
        "kubectl apply -f deploy/crds (warnings)",
        json!(text_lines(&run.stderr)),
    );
    let run = t
        .kubectl(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=30s",
            "crd/eips.herald.dev",
        ])
        .await;
    c.case("kubectl wait established", kubectl_outcome(&run));
    let r = t
        .get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/eips.herald.dev")
        .await;
    let conditions: Vec<Value> = r.body["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"type": c["type"], "status": c["status"], "reason": c["reason"]}))
        .collect();
    c.case(
        "crd: status",
        json!({
            "code": r.code,
            "conditions": sorted(&json!(conditions)),
            "acceptedNames": r.body["status"]["acceptedNames"],
            "storedVersions": r.body["status"]["storedVersions"],
            "generation": r.body["metadata"]["generation"],
        }),
    );
    let r = t.get("/apis/herald.dev").await;
    c.case(
        "discovery: /apis/herald.dev",
        fields(&r, &["kind", "name", "versions", "preferredVersion"]),
    );
    let r = t.get("/apis/herald.dev/v1alpha1").await;
    c.case(
        "discovery: /apis/herald.dev/v1alpha1",
        resources(
            &r,
            &[
                "eips",
                "eips/status",
                "bgpconfs",
                "bgpconfs/status",
                "bgppeers",
                "bgppeers/status",
            ],
        ),
    );

    let r = t.post(EIPS, &eip("pool")).await;
    c.case("eip: create drops status, sets generation", outcome(&r));
    let mut body = r.body.clone();
    body["spec"]["addresses"] = json!(["192.0.2.0/27"]);
    body["status"] = json!({"used": 1, "free": "29", "total": "30"});
    let r = t.put(&format!("{EIPS}/pool/status"), &body).await;
    c.case("eip: PUT /status ignores spec", outcome(&r));
    let mut body = r.body.clone();
    body["spec"]["addresses"] = json!(["192.0.2.0/26"]);
    body["status"] = json!({"used": 9, "free": "0", "total": "9"});
    let r = t.put(&format!("{EIPS}/pool"), &body).await;
    c.case("eip: PUT ignores status, bumps generation", outcome(&r));
    let r = t
        .patch(
            &format!("{EIPS}/pool"),
            "merge",
            &json!({"metadata": {"labels": {"team": "net"}}}),
        )
        .await;
    c.case(
        "eip: metadata change keeps generation",
        fields(&r, &["metadata.generation", "metadata.labels"]),
    );
    let r = t
        .patch(
            &format!("{EIPS}/pool/status"),
            "merge",
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Allocated",
                                               "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
        )
        .await;
    c.case(
        "eip: merge patch /status",
        fields(&r, &["metadata.generation", "spec", "status"]),
    );
    let r = t
        .patch(
            &format!("{EIPS}/pool"),
            "strategic",
            &json!({"spec": {"disable": true}}),
        )
        .await;
    c.case("eip: strategic merge patch (415)", outcome(&r));
    let r = t
        .patch(
            &format!("{EIPS}/pool"),
            "json",
            &json!([{"op": "replace", "path": "/spec/disable", "value": true}]),
        )
        .await;
    c.case("eip: JSON patch", fields(&r, &["metadata.generation", "spec"]));
    let mut no_rv = eip("pool");
    no_rv.as_object_mut().map(|o| o.remove("status"));
    let r = t.put(&format!("{EIPS}/pool"), &no_rv).await;
    c.case(
        "eip: PUT without resourceVersion (422)",
        fields(&r, &["code", "reason", "message"]),
    );
    let r = t.post(EIPS, &eip("pool")).await;
    c.case("eip: create existing", outcome(&r));
    let mut unknown = eip("pruned");
    unknown["spec"]["bogus"] = json!(1);
    let r = t.post(EIPS, &unknown).await;
    c.case(
        "eip: unknown fields pruned, defaults applied",
        fields(&r, &["spec", "status"]),
    );
    let mut invalid = eip("invalid");
    invalid["spec"]["addresses"] = json!("192.0.2.0/24");
    let r = t.post(EIPS, &invalid).await;
    c.case("eip: schema validation", outcome_class(&r));
    // Only lab-apiserver kept it (a documented difference); the cases below compare the rest.
    t.delete(&format!("{EIPS}/invalid"), None).await;

    t.post(EIPS, &eip("other")).await;
    let r = t.get_as(EIPS, TABLE).await;
    c.case("table: eips (additionalPrinterColumns)", table(&r));
    c.case("table: eips (column descriptions)", table_descriptions(&r));
    let r = t.get_as(&format!("{EIPS}/pool"), TABLE).await;
    c.case("table: one eip", table(&r));
    let run = t.kubectl(&["get", "eip"]).await;
    c.case("kubectl get eip", kubectl_outcome(&run));
    let r = t.get(&format!("{EIPS}?labelSelector=team%3Dnet")).await;
    c.case("list: eips by label", names(&r));
    let r = t.delete(&format!("{EIPS}/other"), None).await;
    c.case(
        "eip: delete (Status Success)",
        fields(&r, &["kind", "metadata.name", "metadata.deletionTimestamp"]),
    );
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    })
}

async fn services(c: &mut Conversation<'_>) {
    let t = c.t;
    let web = format!("{SVC}/web");
    let r = t.post(SVC, &service("web")).await;
    c.case("service: create (defaults, status dropped)", outcome(&r));
    let r = t
        .post(
            SVC,
            &json!({"metadata": {"name": "plain"}, "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}}),
        )
        .await;
    c.case("service: create ClusterIP (defaults)", outcome(&r));
    let r = t
        .patch(
            &format!("{web}/status"),
            "merge",
            &json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}, "spec": {"selector": {"x": "y"}}}),
        )
        .await;
    c.case(
        "service: merge patch /status (spec ignored, ipMode defaulted)",
        fields(&r, &["spec.selector", "status", "metadata.generation"]),
    );
    let r = t
        .patch(
            &format!("{web}/status"),
            "merge",
            &json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.8", "ipMode": null}]}}}),
        )
        .await;
    c.case("service: status ingress without ipMode", fields(&r, &["status"]));
    let r = t
        .patch(
            &format!("{SVC}/plain/status"),
            "merge",
            &json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9", "ipMode": "VIP"}]}}}),
        )
        .await;
    c.case("service: ingress on a ClusterIP service (422)", outcome(&r));
    let mut body = r.body.clone();
    body["status"] = json!({"loadBalancer": {}});
    body["spec"]["selector"] = json!({"app": "web", "tier": "front"});
    let r = t.put(&web, &body).await;
    c.case(
        "service: PUT keeps status",
        fields(&r, &["spec.selector", "status", "metadata.generation"]),
    );
    let r = t
        .patch(
            &web,
            "merge",
            &json!({"metadata": {"labels": {"team": "a"}}, "spec": {"selector": {"tier": null}}}),
        )
        .await;
    c.case(
        "patch: merge on a service",
        fields(&r, &["metadata.labels", "spec.selector"]),
    );
    let r = t
        .patch(
            &web,
            "json",
            &json!([{"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}},
                    {"op": "replace", "path": "/spec/ports/0/targetPort", "value": 8081}]),
        )
        .await;
    c.case(
        "patch: JSON patch on a service",
        fields(&r, &["metadata.annotations", "spec.ports"]),
    );
    let r = t
        .patch(
            &web,
            "json",
            &json!([{"op": "test", "path": "/spec/type", "value": "ClusterIP"}]),
        )
        .await;
    c.case(
        "patch: JSON patch test fails",
        fields(&r, &["code", "reason", "status"]),
    );
    let r = t
        .patch(
            &web,
            "strategic",
            &json!({"spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
        )
        .await;
    c.case("patch: strategic merge adds a port by key", fields(&r, &["spec.ports"]));
    let r = t
        .patch(
            &web,
            "strategic",
            &json!({"spec": {
                "$setElementOrder/ports": [{"port": 443}, {"port": 80}],
                "ports": [{"port": 443, "targetPort": 9443}],
            }}),
        )
        .await;
    c.case("patch: strategic merge $setElementOrder", fields(&r, &["spec.ports"]));
    let r = t
        .patch(
            &web,
            "strategic",
            &json!({"spec": {"ports": [{"port": 443, "$patch": "delete"}]}}),
        )
        .await;
    c.case("patch: strategic merge deletes a port", fields(&r, &["spec.ports"]));
    let r = t
        .patch(
            &web,
            "strategic",
            &json!({"metadata": {"labels": {"team": null, "tier": "front"}}}),
        )
        .await;
    c.case("patch: strategic merge on labels", fields(&r, &["metadata.labels"]));
    let r = t
        .patch(
            &web,
            "merge",
            &json!({"metadata": {"resourceVersion": "1"}, "spec": {"selector": {"x": "y"}}}),
        )
        .await;
    c.case("patch: stale resourceVersion (409)", outcome(&r));
    let r = t
        .patch(
            &format!("{SVC}/missing"),
            "merge",
            &json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await;
    c.case("patch: missing object", outcome(&r));
    let r = t
        .call(
            "PATCH",
            &web,
            "application/apply-patch+yaml",
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    c.case("patch: server-side apply", outcome_class(&r));

    let api: Api<Service> = Api::namespaced(t.client.clone(), NS);
    let result = api
        .get_status("web")
        .await
        .map(|s| json!({"type": s.spec.and_then(|s| s.type_), "ingress": s.status.map(|s| mask(&json!(s)))}));
    c.case(
        "kube-rs: get_status",
        match result {
            Ok(v) => v,
            Err(e) => kube_result::<()>(Err(e)),
        },
    );
    let r = t.get(&format!("{SVC}?fieldSelector=spec.type%3DLoadBalancer")).await;
    c.case("list: services by spec.type", names(&r));
    let r = t.get_as(SVC, TABLE).await;
    c.case("table: services", table(&r));
    c.case("table: services (column descriptions)", table_descriptions(&r));
    let r = t
        .get_as(
            "/api/v1/namespaces?labelSelector=kubernetes.io%2Fmetadata.name%3Dfid",
            TABLE,
        )
        .await;
    c.case("table: namespaces", table(&r));
    c.case("table: namespaces (column descriptions)", table_descriptions(&r));
    let run = t.kubectl(&["get", "svc", "-n", NS, "-o", "wide"]).await;
    c.case("kubectl get svc -o wide", kubectl_outcome(&run));

    // Leaving LoadBalancer: node ports, LB-only defaults and the load-balancer status go.
    t.post(SVC, &service("leaving")).await;
    t.patch(
        &format!("{SVC}/leaving/status"),
        "merge",
        &json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.3"}]}}}),
    )
    .await;
    let r = t
        .patch(
            &format!("{SVC}/leaving"),
            "merge",
            &json!({"spec": {"type": "ClusterIP"}}),
        )
        .await;
    c.case("service: LoadBalancer to ClusterIP", fields(&r, &["spec", "status"]));
    let r = t
        .patch(
            &format!("{SVC}/leaving"),
            "merge",
            &json!({"spec": {"type": "NodePort"}}),
        )
        .await;
    c.case(
        "service: ClusterIP to NodePort (node ports allocated)",
        fields(&r, &["spec"]),
    );
    let mut dual = service("dual");
    dual["spec"]["ipFamilyPolicy"] = json!("RequireDualStack");
    let r = t.post(SVC, &dual).await;
    c.case(
        "service: RequireDualStack",
        fields(&r, &["code", "reason", "message", "spec.ipFamilies", "spec.clusterIPs"]),
    );
    // Only lab-apiserver (a dual-stack cluster) created it: a documented difference.
    t.delete(&format!("{SVC}/dual"), None).await;
    let mut headless = service("headless");
    headless["spec"] = json!({"clusterIP": "None", "ports": [{"port": 80}]});
    let r = t.post(SVC, &headless).await;
    c.case("service: headless without selector", fields(&r, &["code", "spec"]));
}

async fn selectors(c: &mut Conversation<'_>) {
    let t = c.t;
    for (name, labels) in [
        ("sel-a", json!({"suite": "sel", "tier": "web"})),
        ("sel-b", json!({"suite": "sel", "tier": "db"})),
        ("sel-c", json!({"suite": "sel", "tier": "web", "canary": "true"})),
        ("sel-d", json!({"suite": "sel"})),
    ] {
        t.post(CM, &json!({"metadata": {"name": name, "labels": labels}})).await;
    }
    for (what, query) in [
        ("label =", "labelSelector=suite%3Dsel,tier%3Dweb"),
        ("label in, !key", "labelSelector=suite%3Dsel,tier+in+(web,db),!canary"),
        ("label !=", "labelSelector=suite%3Dsel,tier!%3Dweb"),
        ("label notin", "labelSelector=suite%3Dsel,tier+notin+(web)"),
        ("label exists", "labelSelector=canary"),
        ("field metadata.name", "fieldSelector=metadata.name%3Dsel-b"),
        (
            "field metadata.name !=",
            "labelSelector=suite%3Dsel&fieldSelector=metadata.name!%3Dsel-b",
        ),
        (
            "field metadata.namespace",
            "labelSelector=suite%3Dsel&fieldSelector=metadata.namespace%3Dfid",
        ),
        ("unsupported field (400)", "fieldSelector=spec.foo%3Dbar"),
        ("malformed label selector (400)", "labelSelector=tier+in+web"),
        ("limit", "labelSelector=suite%3Dsel&limit=2"),
    ] {
        let r = t.get(&format!("{CM}?{query}")).await;
        let mut outcome = names(&r);
        if r.code == 200 {
            outcome["continue"] = json!(r.body["metadata"]["continue"].is_string());
            outcome["remainingItemCount"] = r.body["metadata"]["remainingItemCount"].clone();
        } else {
            outcome = fields(&r, &["reason", "message"]);
        }
        c.case(&format!("list: {what}"), outcome);
        if what == "limit" {
            let token = r.body["metadata"]["continue"].as_str().unwrap_or_default().to_string();
            let r = t.get(&format!("{CM}?{query}&continue={token}")).await;
            c.case("list: continue", names(&r));
        }
    }
    let r = t
        .get(
            "/api/v1/configmaps?labelSelector=suite%3Dsel&fieldSelector=metadata.namespace%3Dfid,metadata.name%3Dsel-c",
        )
        .await;
    c.case("list: all namespaces, field selector on namespace", names(&r));
}

/// Leases (leader election), Nodes and EndpointSlices, as Herald reads and writes them.
async fn herald_kinds(c: &mut Conversation<'_>) {
    let t = c.t;
    let leases = "/apis/coordination.k8s.io/v1/namespaces/fid/leases";
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "herald-leader"},
        "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                 "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z"},
    });
    let r = t.post(leases, &lease).await;
    c.case("lease: create", outcome(&r));
    let first = r.body.clone();
    let mut renewed = first.clone();
    renewed["spec"]["renewTime"] = json!("2026-01-01T00:00:05Z");
    let r = t.put(&format!("{leases}/herald-leader"), &renewed).await;
    c.case("lease: renew (RFC 3339 time without fraction)", outcome(&r));
    let mut stolen = first.clone();
    stolen["spec"]["holderIdentity"] = json!("node-b");
    let r = t.put(&format!("{leases}/herald-leader"), &stolen).await;
    c.case("lease: take over with a stale resourceVersion (409)", outcome(&r));

    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}},
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"},
                                 {"type": "Hostname", "address": "node-a"}],
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok",
                                   "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    });
    let r = t.post("/api/v1/nodes", &node).await;
    c.case("node: create with status", fields(&r, &["metadata", "status"]));
    c.case("node: create (spec)", fields(&r, &["spec"]));
    let r = t
        .patch(
            "/api/v1/nodes/node-a/status",
            "strategic",
            &json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}}),
        )
        .await;
    c.case(
        "node: strategic merge patch /status conditions",
        fields(&r, &["status.conditions"]),
    );
    let r = t
        .patch(
            "/api/v1/nodes/node-a",
            "merge",
            &json!({"spec": {"unschedulable": true}}),
        )
        .await;
    c.case(
        "node: cordon (merge patch)",
        fields(&r, &["spec.unschedulable", "metadata.generation"]),
    );
    let r = t.get("/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue").await;
    c.case("list: nodes by spec.unschedulable", names(&r));
    let r = t.get_as("/api/v1/nodes", TABLE).await;
    c.case("table: nodes", table(&r));

    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.20"], "conditions": {"ready": true}, "nodeName": "node-a"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    });
    let r = t
        .post("/apis/discovery.k8s.io/v1/namespaces/fid/endpointslices", &slice)
        .await;
    c.case("endpointslice: create", outcome(&r));
    let r = t
        .get("/apis/discovery.k8s.io/v1/namespaces/fid/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb")
        .await;
    c.case("list: endpointslices by service label", names(&r));

    // kubectl get -w: a watch answered with Tables.
    let rv = list_rv(&t.get(SVC).await);
    let (plain_code, events) = t
        .watch(
            &format!("{SVC}?watch=1&resourceVersion={rv}&timeoutSeconds=5"),
            async {
                t.patch(
                    &format!("{SVC}/plain"),
                    "merge",
                    &json!({"metadata": {"labels": {"watched": "yes"}}}),
                )
                .await;
            },
            |e| !e.is_empty(),
            Duration::from_secs(10),
        )
        .await;
    let (code, table_events) = t
        .watch_as(
            &format!("{SVC}?watch=1&resourceVersion={rv}&timeoutSeconds=5"),
            TABLE,
            |e| !e.is_empty(),
            Duration::from_secs(10),
        )
        .await;
    let table_events: Vec<Value> = table_events
        .iter()
        .map(|e| {
            let reply = Reply {
                code: 200,
                body: e["object"].clone(),
            };
            json!({"type": e["type"], "table": table(&reply)})
        })
        .collect();
    c.case(
        "watch: as Table (kubectl get -w)",
        json!({"code": code, "events": table_events, "plain": watch_events(plain_code, &events)}),
    );
}

/// An events.k8s.io/v1 Event as kube-rs' `Recorder` writes it.
fn new_event(regarding_uid: &Value) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.new", "namespace": NS},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "herald.dev/allocator",
        "reportingInstance": "herald-node-a",
        "action": "Allocate",
        "reason": "Allocated",
        "note": "allocated 192.0.2.7 from pool",
        "type": "Normal",
        "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": NS, "name": "web", "uid": regarding_uid},
    })
}

async fn events(c: &mut Conversation<'_>) {
    let t = c.t;
    let uid = t.get(&format!("{SVC}/web")).await.body["metadata"]["uid"].clone();
    let r = t
        .post("/apis/events.k8s.io/v1/namespaces/fid/events", &new_event(&uid))
        .await;
    c.case("events: create events.k8s.io/v1", outcome(&r));
    let r = t.get("/api/v1/namespaces/fid/events/web.new").await;
    c.case("events: events.k8s.io/v1 Event read as v1", outcome(&r));
    let r = t
        .post(
            "/api/v1/namespaces/fid/events",
            &json!({
                "metadata": {"name": "web.old", "namespace": NS},
                "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": NS, "name": "web", "uid": uid},
                "reason": "Conflict", "message": "address in use", "type": "Warning",
                "source": {"component": "herald"}, "count": 2,
                "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z",
            }),
        )
        .await;
    c.case("events: create v1", outcome(&r));
    let r = t.get("/apis/events.k8s.io/v1/namespaces/fid/events/web.old").await;
    c.case("events: v1 Event read as events.k8s.io/v1", outcome(&r));
    let r = t
        .get("/api/v1/namespaces/fid/events?fieldSelector=involvedObject.name%3Dweb")
        .await;
    c.case("events: v1 list by involvedObject.name", names(&r));
    let r = t
        .get("/apis/events.k8s.io/v1/namespaces/fid/events?fieldSelector=regarding.name%3Dweb")
        .await;
    c.case("events: events.k8s.io list by regarding.name", names(&r));
    let r = t
        .get("/api/v1/namespaces/fid/events?fieldSelector=reason%3DAllocated")
        .await;
    c.case("events: v1 list by reason", names(&r));
    let rv = list_rv(&t.get("/apis/events.k8s.io/v1/namespaces/fid/events").await);
    let (code, events) = t
        .watch(
            &format!("/apis/events.k8s.io/v1/namespaces/fid/events?watch=1&resourceVersion={rv}"),
            async {
                t.post(
                    "/api/v1/namespaces/fid/events",
                    &json!({"metadata": {"name": "web.watched"}, "reason": "Seen", "message": "m", "type": "Normal",
                            "involvedObject": {"kind": "Service", "namespace": NS, "name": "web"}}),
                )
                .await;
            },
            |e| !e.is_empty(),
            Duration::from_secs(10),
        )
        .await;
    let shapes: Vec<Value> = events
        .iter()
        .map(|e| json!({"type": e["type"], "object": mask(&e["object"])}))
        .collect();
    c.case(
        "events: a v1 Event in an events.k8s.io watch",
        json!({"code": code, "events": shapes}),
    );
    let mut invalid = new_event(&uid);
    invalid["metadata"]["name"] = json!("web.invalid");
    invalid.as_object_mut().map(|o| o.remove("action"));
    let r = t.post("/apis/events.k8s.io/v1/namespaces/fid/events", &invalid).await;
    c.case(
        "events: events.k8s.io/v1 without action (422)",
        fields(&r, &["code", "reason", "message"]),
    );
    let r = t
        .patch(
            "/apis/events.k8s.io/v1/namespaces/fid/events/web.new",
            "merge",
            &json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:02:00.000000Z"}}),
        )
        .await;
    c.case("events: events.k8s.io/v1 series patch", fields(&r, &["series", "note"]));
    let r = t.get("/api/v1/namespaces/fid/events/web.new").await;
    c.case("events: series read as v1", fields(&r, &["series", "count", "message"]));
    // Only the conversation's own Events (all about Service `web`): the real server's
    // controllers write Events of their own at times of their choosing (e.g. the ClusterIP
    // repair loop's `ClusterIPNotAllocated` about a Service created a moment earlier), and
    // an extra row is not a difference between the servers.
    let r = t
        .get_as(
            "/api/v1/namespaces/fid/events?fieldSelector=involvedObject.name%3Dweb",
            TABLE,
        )
        .await;
    c.case("table: v1 events", table(&r));
    c.case("table: v1 events (column descriptions)", table_descriptions(&r));
    let r = t
        .get_as(
            "/apis/events.k8s.io/v1/namespaces/fid/events?fieldSelector=regarding.name%3Dweb",
            TABLE,
        )
        .await;
    c.case("table: events.k8s.io events", table(&r));
    let run = t
        .kubectl(&["get", "events", "-A", "--field-selector", "involvedObject.name=web"])
        .await;
    c.case("kubectl get events -A", kubectl_outcome(&run));
    let run = t.kubectl(&["describe", "svc", "web", "-n", NS]).await;
    c.case("kubectl describe svc", kubectl_outcome(&run));
}

async fn kubectl(c: &mut Conversation<'_>) {
    let t = c.t;
    for (name, args) in [
        ("kubectl create namespace (protobuf)", &["create", "namespace", "x"][..]),
        (
            "kubectl create service loadbalancer (protobuf)",
            &["create", "service", "loadbalancer", "lb", "--tcp=80:80", "-n", NS][..],
        ),
        (
            "kubectl create service clusterip (protobuf)",
            &["create", "service", "clusterip", "ci", "--tcp=5678:8080", "-n", NS][..],
        ),
        (
            "kubectl create configmap (protobuf)",
            &["create", "configmap", "kc", "--from-literal=a=b", "-n", NS][..],
        ),
        (
            "kubectl create secret (protobuf)",
            &["create", "secret", "generic", "ks", "--from-literal=a=b", "-n", NS][..],
        ),
        (
            "kubectl expose",
            &[
                "expose",
                "service",
                "lb",
                "--name=exposed",
                "--port=81",
                "--target-port=8081",
                "-n",
                NS,
            ][..],
        ),
        ("kubectl label", &["label", "svc", "lb", "team=a", "-n", NS][..]),
        ("kubectl annotate", &["annotate", "svc", "lb", "note=x", "-n", NS][..]),
        (
            "kubectl label --overwrite",
            &["label", "svc", "lb", "team=b", "--overwrite", "-n", NS][..],
        ),
        (
            "kubectl patch (strategic)",
            &[
                "patch",
                "svc",
                "lb",
                "-n",
                NS,
                "-p",
                r#"{"spec":{"ports":[{"port":80,"targetPort":8080}]}}"#,
            ][..],
        ),
        (
            "kubectl get svc lb -o jsonpath",
            &[
                "get",
                "svc",
                "lb",
                "-n",
                NS,
                "-o",
                concat!(
                    "jsonpath={.metadata.labels} {.metadata.annotations} {.spec.ports[*].name} {.spec.ports[*].port} ",
                    "{.spec.ports[*].targetPort} {.spec.ports[*].protocol} {.spec.type} {.spec.ipFamilies} ",
                    "{.spec.ipFamilyPolicy} {.spec.externalTrafficPolicy}"
                ),
            ][..],
        ),
        (
            "kubectl get namespace x",
            &["get", "namespace", "x", "--show-labels"][..],
        ),
        (
            "kubectl get configmap kc",
            &["get", "configmap", "kc", "-n", NS, "-o", "jsonpath={.data}"][..],
        ),
        (
            "kubectl get secret ks",
            &["get", "secret", "ks", "-n", NS, "-o", "jsonpath={.data} {.type}"][..],
        ),
        ("kubectl delete svc", &["delete", "svc", "exposed", "-n", NS][..]),
        ("kubectl delete missing", &["delete", "svc", "exposed", "-n", NS][..]),
        ("kubectl get svc", &["get", "svc", "-n", NS][..]),
        ("kubectl create existing", &["create", "namespace", "x"][..]),
        (
            "kubectl delete namespace --wait=false",
            &["delete", "namespace", "x", "--wait=false"][..],
        ),
    ] {
        let run = t.kubectl(args).await;
        c.case(name, kubectl_outcome(&run));
    }
    let r = t.get("/api/v1/namespaces/x").await;
    c.case(
        "namespace: after delete",
        fields(&r, &["code", "reason", "status.phase", "metadata.deletionTimestamp"]),
    );
    let manifest = concat!(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"applied","namespace":"fid"},"#,
        r#""spec":{"ports":[{"name":"a","port":1}]}}"#
    );
    for round in ["create", "unchanged"] {
        let run = t.kubectl_with_input(&["apply", "-f", "-"], manifest).await;
        c.case(&format!("kubectl apply ({round})"), kubectl_outcome(&run));
    }
    let changed = manifest.replace(r#""port":1}"#, r#""port":1},{"name":"b","port":2}"#);
    let run = t.kubectl_with_input(&["apply", "-f", "-"], &changed).await;
    c.case("kubectl apply (configured)", kubectl_outcome(&run));
    let r = t.get(&format!("{SVC}/applied")).await;
    c.case(
        "kubectl apply: result",
        fields(&r, &["spec.ports", "metadata.annotations"]),
    );
}
