//! Watches and kube-rs watchers/reflectors against lab-apiserver.

mod common;

use std::time::Duration;

use common::{api_error, server, server_with};
use futures::{StreamExt, TryStreamExt};
use herald_lab_apiserver::Config;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

fn configmap(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

fn describe(event: &WatchEvent<ConfigMap>) -> String {
    match event {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.as_deref().unwrap()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.as_deref().unwrap()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.as_deref().unwrap()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

/// Collects `n` non-bookmark events (or fewer if the stream ends), with a generous safety timeout.
async fn collect(stream: impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>>, n: usize) -> Vec<String> {
    let events = stream
        .map(|e| describe(&e.expect("watch event")))
        .filter(|e| futures::future::ready(!e.starts_with("BOOKMARK")))
        .take(n)
        .collect::<Vec<_>>();
    tokio::time::timeout(Duration::from_secs(20), events)
        .await
        .expect("events in time")
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_in_order() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let a = cms.create(&pp, &configmap("a", json!({}))).await.unwrap();
    let from = a.metadata.resource_version.clone().unwrap();
    cms.create(&pp, &configmap("b", json!({}))).await.unwrap();
    // Other resources and namespaces in between are not part of this watch.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap(),
        )
        .await
        .unwrap();
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    other.create(&pp, &configmap("elsewhere", json!({}))).await.unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}})))
        .await
        .unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();

    let stream = cms.watch(&WatchParams::default(), &from).await.unwrap();
    assert_eq!(collect(stream, 3).await, ["ADDED b", "MODIFIED a", "DELETED b"]);

    // Live events after the backlog, in order.
    let now = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let stream = cms.watch(&WatchParams::default(), &now).await.unwrap();
    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            for i in 0..5 {
                cms.create(&PostParams::default(), &configmap(&format!("live-{i}"), json!({})))
                    .await
                    .unwrap();
            }
        })
    };
    let events = collect(stream, 5).await;
    writer.await.unwrap();
    assert_eq!(events, (0..5).map(|i| format!("ADDED live-{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn filtered_watch_sees_objects_enter_and_leave_the_selection() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let stream = cms
        .watch(&WatchParams::default().labels("app=web"), &start)
        .await
        .unwrap();
    let pp = PatchParams::default();
    cms.create(&PostParams::default(), &configmap("x", json!({"app": "db"})))
        .await
        .unwrap();
    cms.patch("x", &pp, &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})))
        .await
        .unwrap();
    cms.patch("x", &pp, &Patch::Merge(json!({"data": {"k": "v"}})))
        .await
        .unwrap();
    cms.patch("x", &pp, &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})))
        .await
        .unwrap();
    cms.patch("x", &pp, &Patch::Merge(json!({"data": {"k": "w"}})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &configmap("y", json!({"app": "web"})))
        .await
        .unwrap();
    assert_eq!(
        collect(stream, 4).await,
        ["ADDED x", "MODIFIED x", "DELETED x", "ADDED y"]
    );

    let stream = cms
        .watch(&WatchParams::default().fields("metadata.name=y"), &start)
        .await
        .unwrap();
    assert_eq!(collect(stream, 1).await, ["ADDED y"]);
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let stream = cms.watch(&WatchParams::default().timeout(1), "0").await.unwrap();
    // Synthetic ADDED events for existing objects (none here), then the stream closes by itself.
    let events = collect(stream, 100).await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(server.metrics().requests("watch", "configmaps"), 1);
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_is_gone() {
    let (_server, client) = server_with(Config {
        watch_history: 3,
        ..Config::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &configmap("first", json!({})))
        .await
        .unwrap();
    for i in 0..5 {
        cms.create(&PostParams::default(), &configmap(&format!("n{i}"), json!({})))
            .await
            .unwrap();
    }
    let rv = first.metadata.resource_version.unwrap();
    let stream = cms.watch(&WatchParams::default(), &rv).await.unwrap();
    assert_eq!(collect(stream, 1).await, ["ERROR 410"]);
    // A list is still fine.
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 6);
    assert_eq!(api_error(cms.get("first-missing").await).0, 404);
}

#[tokio::test]
async fn watcher_relists_after_410_and_reflector_converges() {
    let config = Config {
        watch_history: 5,
        ..Config::default()
    };
    let (server, client) = server_with(config).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("before", json!({})))
        .await
        .unwrap();

    let (store, writer) = reflector::store();
    // Short watches, so the watcher re-watches from its last resourceVersion soon.
    let wc = watcher::Config::default().timeout(1);
    let inits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = inits.clone();
    let stream = reflector::reflector(writer, watcher(cms.clone(), wc)).inspect_ok(move |event| {
        if matches!(event, watcher::Event::Init) {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let task = tokio::spawn(stream.default_backoff().for_each(|_| futures::future::ready(())));
    store.wait_until_ready().await.unwrap();
    assert_eq!(store.state().len(), 1);

    // Many writes elsewhere push the watcher's resourceVersion out of the history.
    for i in 0..20 {
        let secret = serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    // Wait until the watcher has re-listed (it got 410 on its next watch).
    tokio::time::timeout(Duration::from_secs(30), async {
        while inits.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("watcher re-listed after 410");
    assert!(server.metrics().requests("list", "configmaps") >= 2);

    cms.create(&PostParams::default(), &configmap("after", json!({})))
        .await
        .unwrap();
    cms.delete("before", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut names: Vec<String> = store.state().iter().filter_map(|c| c.metadata.name.clone()).collect();
            names.sort();
            if names == ["after"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("store converged");
    task.abort();
}

#[tokio::test]
async fn streaming_list_and_any_semantic_watchers_work() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for name in ["a", "b"] {
        cms.create(&PostParams::default(), &configmap(name, json!({})))
            .await
            .unwrap();
    }
    for wc in [
        watcher::Config::default().streaming_lists(),
        watcher::Config::default().any_semantic(),
    ] {
        let (store, writer) = reflector::store();
        let task = tokio::spawn(
            reflector::reflector(writer, watcher(cms.clone(), wc))
                .default_backoff()
                .for_each(|_| futures::future::ready(())),
        );
        tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready())
            .await
            .expect("ready")
            .unwrap();
        assert_eq!(store.state().len(), 2);
        task.abort();
    }
}

#[tokio::test]
async fn a_stalled_watcher_does_not_block_writers() {
    let config = Config {
        watch_buffer: 4,
        ..Config::default()
    };
    let (server, client) = server_with(config).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // Opened and never read.
    let _stalled = cms.watch(&WatchParams::default(), "0").await.unwrap();
    for i in 0..200 {
        cms.create(&PostParams::default(), &configmap(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 200);
    assert_eq!(server.metrics().requests("create", "configmaps"), 200);
}

#[tokio::test]
async fn quiet_watches_get_bookmarks_with_the_latest_resource_version() {
    let config = Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let (_server, client) = server_with(config).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let stream = cms.watch(&WatchParams::default(), &start).await.unwrap();
    // A write to another resource moves the global resourceVersion; the bookmark reports it.
    let secret = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap(),
        )
        .await
        .unwrap();
    let latest = secret.metadata.resource_version.unwrap();
    let mut bookmarks = stream
        .map(|e| describe(&e.unwrap()))
        .filter(|e| futures::future::ready(e.starts_with("BOOKMARK")))
        .boxed();
    let bookmark = tokio::time::timeout(Duration::from_secs(10), bookmarks.next())
        .await
        .expect("bookmark in time");
    assert_eq!(bookmark, Some(format!("BOOKMARK {latest}")));
}

#[tokio::test]
async fn absurd_watch_parameters_are_errors_not_crashes() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let path = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=18446744073709551615&resourceVersion=0";
    let watch = tokio::spawn({
        let addr = server.addr();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        }
    });
    assert_eq!(watch.await.unwrap(), "HTTP/1.1 200");
    // Each of these is refused before a watch starts (a started watch would keep `raw` reading).
    for bad in [
        "watch=1&timeoutSeconds=-1",
        "watch=1&resourceVersion=abc",
        "watch=1&labelSelector=a%20in%20b",
        "limit=x",
    ] {
        let path = format!("/api/v1/namespaces/default/configmaps?{bad}");
        let response = common::raw(&server, "GET", &path, &[], b"");
        let (code, status) = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("refused at once");
        assert_eq!(
            (code, status["reason"].as_str()),
            (400, Some("BadRequest")),
            "{bad}: {status}"
        );
    }
    // The server is still fine.
    cms.list(&ListParams::default()).await.unwrap();
}
