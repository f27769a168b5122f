//! The kube-rs shell against lab-apiserver (an in-process API server with real resourceVersion semantics).

#[path = "support/shell.rs"]
mod shell;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use herald_election::gc::{GcInput, LeaseView};
use herald_election::lease::{LeaseRecord, LeaseStore, StoreError, WatchEvent};
use herald_election::{
    Collected, ElectionTiming, Identity, IpDesire, KubeLeaseStore, LeaderLock, LeaderLockConfig, LeaderTiming,
    OwnershipAgent, OwnershipConfig, UnusedLeases,
};
use shell::{RecordingSink, check_single_owner};
use tokio_util::sync::CancellationToken;

async fn lab() -> (herald_lab_apiserver::Running, kube::Client) {
    let server = herald_lab_apiserver::start(herald_lab_apiserver::Config::default())
        .await
        .expect("lab-apiserver");
    let client = server.client().expect("client");
    (server, client)
}

fn store(client: &kube::Client) -> KubeLeaseStore {
    KubeLeaseStore::new(client.clone(), "default", Duration::from_secs(2))
}

fn lease(name: &str, holder: &str) -> LeaseRecord {
    LeaseRecord {
        name: name.into(),
        labels: [("herald.dev/lease".to_owned(), "ip".to_owned())].into(),
        holder: Some(holder.into()),
        lease_duration_seconds: Some(3),
        ..Default::default()
    }
}

#[tokio::test]
async fn kube_store_maps_cas_outcomes() {
    let (server, client) = lab().await;
    let s = store(&client);
    assert!(matches!(s.get("herald-ip-x").await, Err(StoreError::NotFound { .. })));
    let mut a = lease("herald-ip-x", "n1/1");
    a.stamp(std::time::SystemTime::now());
    let a = s.create(&a).await.expect("create");
    assert!(a.resource_version.is_some());
    assert!(a.renew_time.is_some(), "microtime round-trips");
    assert!(matches!(
        s.create(&lease("herald-ip-x", "n2/1")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let mut b = a.clone();
    b.holder = Some("n2/1".into());
    let b = s.replace(&b).await.expect("replace with current rv");
    assert_ne!(a.resource_version, b.resource_version);
    let mut stale = a.clone();
    stale.holder = Some("n3/1".into());
    assert!(
        matches!(s.replace(&stale).await, Err(StoreError::Conflict { .. })),
        "stale rv must lose"
    );
    stale.resource_version = None;
    assert!(
        matches!(s.replace(&stale).await, Err(StoreError::Conflict { .. })),
        "no rv is never sent"
    );
    assert_eq!(s.get("herald-ip-x").await.expect("get").holder(), Some("n2/1"));
    server.shutdown().await;
}

/// The watch's first event is a resync holding only `herald-ip-a`; a Lease created then arrives as `Applied`.
async fn watch_lists_only_a_then_streams_b(s: &KubeLeaseStore) {
    let mut watch = s.watch();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch lists")
        .expect("open");
    match first {
        WatchEvent::Resynced(all) => {
            assert_eq!(all.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["herald-ip-a"]);
        }
        other => panic!("expected a resync first, got {other:?}"),
    }
    s.create(&lease("herald-ip-b", "n1/1")).await.expect("create");
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("event")
        .expect("open");
    assert!(matches!(next, WatchEvent::Applied(l) if l.name == "herald-ip-b"));
}

#[tokio::test]
async fn kube_store_watch_lists_then_streams() {
    let (server, client) = lab().await;
    let s = store(&client);
    s.create(&lease("herald-ip-a", "n1/1")).await.expect("create");
    let mut unlabelled = lease("not-herald", "x");
    unlabelled.labels.clear();
    s.create(&unlabelled).await.expect("create");
    watch_lists_only_a_then_streams_b(&s).await;
    server.shutdown().await;
}

#[tokio::test]
async fn kube_store_watch_skips_a_lease_it_cannot_read() {
    let (server, client) = lab().await;
    let s = store(&client);
    s.create(&lease("herald-ip-a", "n1/1")).await.expect("create");
    // Stored by something that does not check the schema: a duration Herald cannot read.
    let raw: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "herald-ip-bad", "labels": {"herald.dev/lease": "ip"}},
        "spec": {"holderIdentity": "n2/1", "leaseDurationSeconds": "three"}}))
    .expect("object");
    let resource = kube::discovery::ApiResource::erase::<k8s_openapi::api::coordination::v1::Lease>(&());
    kube::Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), "default", &resource)
        .create(&Default::default(), &raw)
        .await
        .expect("create raw");
    watch_lists_only_a_then_streams_b(&s).await;
    server.shutdown().await;
}

fn fast_timing() -> ElectionTiming {
    ElectionTiming {
        node_renew_period: Duration::from_millis(300),
        renew_deadline: Duration::from_millis(700),
        takeover_after: Duration::from_millis(1000),
        stagger_step: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn ownership_agents_over_the_api_elect_and_hand_over() {
    let (server, client) = lab().await;
    let nodes = ["node-a", "node-b", "node-c"];
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for n in nodes {
        let mut config = OwnershipConfig::new(Identity::new(n, Identity::random_instance_id()).expect("identity"));
        config.timing = fast_timing();
        let cancel = CancellationToken::new();
        let (h, _events) =
            OwnershipAgent::spawn(store(&client), RecordingSink::new(n, &log), config, &cancel).expect("spawn");
        handles.push((n, h, cancel));
    }
    let ips: Vec<IpAddr> = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"]
        .iter()
        .map(|s| s.parse().expect("ip"))
        .collect();
    let desire = IpDesire {
        eligible_nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        eip: "pool".into(),
        interface: None,
    };
    for (_, h, _) in &handles {
        for ip in &ips {
            h.set_desired(*ip, desire.clone()).await.expect("set");
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let owners = check_single_owner(&log.lock().expect("log"));
    assert_eq!(owners.len(), ips.len(), "{owners:?}");

    // Graceful stop of one owner hands its IPs over.
    let victim = owners[&ips[0]].clone();
    let idx = handles.iter().position(|(n, _, _)| *n == victim).expect("victim");
    let (_, h, _) = handles.remove(idx);
    h.shutdown().await.expect("shutdown");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let owners = check_single_owner(&log.lock().expect("log"));
    assert_eq!(owners.len(), ips.len(), "{owners:?}");
    assert!(owners.values().all(|n| *n != victim));

    // Dropping every handle of an agent stops it gracefully too (no leaked task, leases released).
    let (dropped, h, _cancel) = handles.remove(0);
    drop(h);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let owners = check_single_owner(&log.lock().expect("log"));
    assert_eq!(owners.len(), ips.len(), "{owners:?}");
    assert!(owners.values().all(|n| *n != dropped && *n != victim));
    let node_lease = store(&client)
        .get(&format!("herald-node-{dropped}"))
        .await
        .expect("node lease");
    assert_eq!(node_lease.holder(), None, "released on drop");

    // Steady state: only the remaining node lease renews (≈ 1/R writes/s), no IP lease writes.
    let before = server.metrics();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = server.metrics();
    let updates = after.requests("update", "leases") - before.requests("update", "leases");
    let creates = after.requests("create", "leases") - before.requests("create", "leases");
    let gets = after.requests("get", "leases") - before.requests("get", "leases");
    assert!(
        (7..=12).contains(&updates),
        "{updates} lease updates in 3 s from one node at R = 300 ms"
    );
    assert_eq!(
        (creates, gets),
        (0, 0),
        "no IP lease writes and no polling in steady state"
    );

    for (_, h, _) in handles {
        h.shutdown().await.expect("shutdown");
    }
    assert!(check_single_owner(&log.lock().expect("log")).is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn leader_lock_over_the_api() {
    let (server, client) = lab().await;
    let timing = LeaderTiming {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1200),
        retry_period: Duration::from_millis(300),
    };
    let spawn = |id: &str| {
        let config = LeaderLockConfig {
            timing,
            ..LeaderLockConfig::allocator(id)
        };
        LeaderLock::spawn(store(&client), config, &CancellationToken::new()).expect("spawn")
    };
    let mut a = spawn("a");
    let term = tokio::time::timeout(Duration::from_secs(5), a.acquired())
        .await
        .expect("a leads")
        .expect("term");
    let mut b = spawn("b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.is_leader() && !b.is_leader(), "one leader");
    a.shutdown().await.expect("shutdown");
    assert!(term.is_cancelled());
    let b_term = tokio::time::timeout(Duration::from_secs(1), b.acquired())
        .await
        .expect("b takes over at once");
    assert!(b_term.is_some());
    b.shutdown().await.expect("shutdown");
    server.shutdown().await;
}

/// Writes a change to `record` (an update without one keeps the resourceVersion).
async fn rewrite(s: &KubeLeaseStore, record: &LeaseRecord) -> LeaseRecord {
    let mut next = record.clone();
    next.lease_transitions = Some(record.lease_transitions.unwrap_or(0) + 1);
    s.replace(&next).await.expect("rewrite")
}

#[tokio::test]
async fn unused_leases_are_deleted_only_at_the_judged_version_and_after_the_holder_check() {
    let (server, client) = lab().await;
    let s = store(&client);
    let grace = Duration::from_secs(60);
    let mut gc = UnusedLeases::new(store(&client), grace, 100);
    // The collector's clock is its input: each sweep says when it happens.
    let t0 = tokio::time::Instant::now();
    let at = |n: u32| t0 + grace * n;
    let results = |sweep: herald_election::Sweep| sweep.results.into_iter().map(|(_, r)| r).collect::<Vec<_>>();

    // A released lease of an unused IP, judged at one version and written again since (an agent re-acquired the
    // IP; this collector's watch has not shown it yet): kept.
    let mut released = lease("herald-ip-192-0-2-1", "n1/a");
    released.holder = None;
    let judged = s.create(&released).await.expect("create");
    let mut input = GcInput {
        ip_leases: vec![LeaseView::from(&judged)],
        ..Default::default()
    };
    assert!(
        gc.sweep(&input, at(0)).await.results.is_empty(),
        "first sight starts the window"
    );
    let current = rewrite(&s, &judged).await;
    assert!(matches!(
        results(gc.sweep(&input, at(1)).await)[..],
        [Collected::Kept(StoreError::Conflict { .. })]
    ));
    assert!(s.get("herald-ip-192-0-2-1").await.is_ok());
    // The watch catches up: a new window, then deleted at that version. Deleting again finds it gone: kept.
    input.ip_leases = vec![LeaseView::from(&current)];
    assert!(gc.sweep(&input, at(1)).await.results.is_empty());
    assert_eq!(results(gc.sweep(&input, at(2)).await), [Collected::Deleted]);
    assert!(matches!(
        s.get("herald-ip-192-0-2-1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        results(gc.sweep(&input, at(3)).await)[..],
        [Collected::Kept(StoreError::NotFound { .. })]
    ));

    // Held by n1/a, whose node lease this collector saw unchanged for the grace period, but which renewed after
    // all: the fresh read of the node lease keeps the IP lease.
    let held = s.create(&lease("herald-ip-192-0-2-2", "n1/a")).await.expect("create");
    let mut node = lease("herald-node-n1", "n1/a");
    node.labels.insert("herald.dev/lease".into(), "node".into());
    let seen = s.create(&node).await.expect("create");
    let mut input = GcInput {
        ip_leases: vec![LeaseView::from(&held)],
        node_leases: vec![LeaseView::from(&seen)],
        nodes: ["n1".to_owned()].into(),
        ..Default::default()
    };
    assert!(gc.sweep(&input, at(4)).await.results.is_empty());
    let renewed = rewrite(&s, &seen).await;
    assert_eq!(results(gc.sweep(&input, at(5)).await), [Collected::HolderRenewed]);
    assert!(s.get("herald-ip-192-0-2-2").await.is_ok());
    // It stops renewing: once its node lease is seen unchanged for the grace period, the IP lease goes.
    input.node_leases = vec![LeaseView::from(&renewed)];
    assert!(
        gc.sweep(&input, at(5)).await.results.is_empty(),
        "the window started again"
    );
    assert_eq!(results(gc.sweep(&input, at(6)).await), [Collected::Deleted]);
    assert!(matches!(
        s.get("herald-ip-192-0-2-2").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        s.get("herald-node-n1").await.is_ok(),
        "its Node exists: the node lease stays"
    );
    server.shutdown().await;
}
