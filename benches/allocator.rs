//! Allocator controller benchmark: time from Service creation to IP in status (p50/p99) with 1 and with 1,000
//! Services created at once, and API requests per Service allocated (from lab-apiserver's request counters).
//!
//! Run: `cargo bench --bench allocator` (prints a table). The controller runs in-process against an in-process
//! lab-apiserver over real HTTP; Services are created by 32 concurrent clients.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use herald::allocator::{self, AllocatorConfig};
use herald::metrics::Metrics;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(n: usize) -> (Duration, Duration, Duration, f64, f64) {
    let lab = herald_lab_apiserver::start(Default::default()).await.unwrap();
    let client = lab.client().unwrap();
    for crd in herald_api::crds() {
        Api::<CustomResourceDefinition>::all(client.clone())
            .create(&PostParams::default(), &crd)
            .await
            .unwrap();
    }
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "bench"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let eip = serde_json::from_value(json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Eip",
        "metadata": {"name": "pool"}, "spec": {"addresses": ["2001:db8::/112", "198.51.100.0/24"]}}))
    .unwrap();
    Api::<herald_api::Eip>::all(client.clone())
        .create(&PostParams::default(), &eip)
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let metrics = Metrics::new();
    let config = AllocatorConfig {
        default_class: true,
        instance: "bench".into(),
        namespace: "default".into(),
        // Allocation only: the Lease collector's watches would not change what is measured.
        lease_gc_after: Duration::ZERO,
    };
    let shared = herald::watch::SharedStores::start(&client, &cancel);
    tokio::spawn(allocator::run(
        client.clone(),
        shared,
        config,
        metrics.allocator.clone(),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Watch Services and note when each gets its IP.
    let services: Api<Service> = Api::namespaced(client.clone(), "bench");
    let allocated = Arc::new(tokio::sync::Mutex::new(HashMap::<String, Instant>::new()));
    let seen = allocated.clone();
    let watch = tokio::spawn(async move {
        let stream = watcher(services, watcher::Config::default()).applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(svc)) = stream.try_next().await {
            let has_ip = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .is_some_and(|i| !i.is_empty());
            if has_ip {
                seen.lock()
                    .await
                    .entry(svc.metadata.name.unwrap())
                    .or_insert_with(Instant::now);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = lab.metrics();
    let services: Api<Service> = Api::namespaced(client.clone(), "bench");
    let created: HashMap<String, Instant> = futures::stream::iter(0..n)
        .map(|i| {
            let services = services.clone();
            async move {
                let name = format!("svc-{i}");
                let svc: Service = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "bench"},
                    "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"],
                             "ports": [{"port": 80}]}}))
                .unwrap();
                let t = Instant::now();
                services.create(&PostParams::default(), &svc).await.unwrap();
                (name, t)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while allocated.lock().await.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let trailing status writes (Eip summary) land before counting requests.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = lab.metrics();
    let done = allocated.lock().await.clone();
    assert_eq!(done.len(), n, "every Service allocated within 120 s");
    let mut lat: Vec<Duration> = created
        .iter()
        .map(|(k, t)| done[k].saturating_duration_since(*t))
        .collect();
    lat.sort();
    let total = *done.values().max().unwrap() - *created.values().min().unwrap();
    // Requests by the allocator only: writes (patch/create) and its own reads; the benchmark's creates and its
    // watch are excluded.
    let writes = (after.requests_by_verb("patch") - before.requests_by_verb("patch")) as f64
        + (after.requests("create", "events") - before.requests("create", "events")) as f64;
    let all = (after.total_requests() - before.total_requests()) as f64 - n as f64;
    cancel.cancel();
    watch.abort();
    (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        total,
        writes / n as f64,
        all / n as f64,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| Services created at once | p50 creation→IP | p99 creation→IP | all allocated after | writes/Service | API requests/Service |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in [1usize, 1000] {
        let (p50, p99, total, writes, all) = rt.block_on(run(n));
        println!("| {n} | {p50:.1?} | {p99:.1?} | {total:.1?} | {writes:.2} | {all:.2} |");
    }
}
