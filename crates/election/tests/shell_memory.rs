//! The async shells against the in-memory store, on tokio's paused clock (deterministic, instant).

#[path = "support/shell.rs"]
mod shell;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_election::gc::{GcInput, LeaseView};
use herald_election::lease::{LeaseRecord, StoreError};
use herald_election::{
    Collected, Identity, IpDesire, LeaderLock, LeaderLockConfig, LeaderTiming, MemoryLeaseStore, OwnershipAgent,
    OwnershipConfig, OwnershipEvent, OwnershipHandle, UnusedLeases,
};
use shell::{RecordingSink, check_single_owner};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn desire() -> IpDesire {
    IpDesire {
        eligible_nodes: NODES.iter().map(|n| (*n).to_owned()).collect(),
        eip: "pool-a".into(),
        interface: None,
    }
}

fn start(
    store: &MemoryLeaseStore,
    node: &str,
    log: &Arc<Mutex<Vec<shell::Entry>>>,
) -> (OwnershipHandle, mpsc::Receiver<OwnershipEvent>) {
    let config = OwnershipConfig::new(Identity::new(node, format!("{node}-uid")).expect("identity"));
    OwnershipAgent::spawn(
        store.client(node),
        RecordingSink::new(node, log),
        config,
        &CancellationToken::new(),
    )
    .expect("spawn")
}

#[tokio::test(start_paused = true)]
async fn agents_elect_one_owner_and_hand_over_on_shutdown() {
    let store = MemoryLeaseStore::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut agents: Vec<_> = NODES.iter().map(|n| start(&store, n, &log)).collect();
    let ips: Vec<IpAddr> = (1..=9).map(|i| format!("192.0.2.{i}").parse().expect("ip")).collect();
    for (handle, _) in &agents {
        for ip in &ips {
            handle.set_desired(*ip, desire()).await.expect("set");
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let owners = check_single_owner(&log.lock().expect("log"));
    assert_eq!(owners.len(), ips.len(), "every IP announced once: {owners:?}");
    // The handle's view agrees with the sink's.
    let (a_handle, mut a_events) = agents.remove(0);
    let a_announced: BTreeSet<IpAddr> = a_handle.announced().borrow().clone();
    let expected: BTreeSet<IpAddr> = owners
        .iter()
        .filter(|(_, n)| *n == "node-a")
        .map(|(ip, _)| *ip)
        .collect();
    assert_eq!(a_announced, expected);
    assert!(!expected.is_empty(), "node-a holds some of the 9 IPs");
    let mut self_changes = 0;
    while let Ok(ev) = a_events.try_recv() {
        if let OwnershipEvent::OwnerChanged {
            is_self: true, node, ..
        } = ev
        {
            assert_eq!(node.as_deref(), Some("node-a"));
            self_changes += 1;
        }
    }
    assert_eq!(self_changes, expected.len());
    let m = a_handle.metrics();
    assert_eq!(m.announced, expected.len() as u64);
    assert!(m.lease_writes >= 5 + expected.len() as u64, "{m:?}");

    // Graceful stop: returns only when everything is released; the others take over at once.
    let stop_at = tokio::time::Instant::now();
    a_handle.shutdown().await.expect("shutdown");
    assert!(tokio::time::Instant::now() - stop_at < Duration::from_millis(100));
    assert_eq!(store.peek("herald-node-node-a").expect("node lease").holder(), None);
    for ip in &expected {
        let lease = store
            .peek(&herald_election::naming::ip_lease_name(*ip).expect("name"))
            .expect("lease");
        assert_ne!(
            lease.holder().map(|h| h.starts_with("node-a/")),
            Some(true),
            "{ip} still held by node-a"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let owners = check_single_owner(&log.lock().expect("log"));
    assert_eq!(owners.len(), ips.len());
    assert!(owners.values().all(|n| n != "node-a"));
    for (handle, _) in agents {
        handle.shutdown().await.expect("shutdown");
    }
    assert!(
        check_single_owner(&log.lock().expect("log")).is_empty(),
        "everything withdrawn at the end"
    );
}

#[tokio::test(start_paused = true)]
async fn wire_conflict_withdraws_and_reports() {
    let store = MemoryLeaseStore::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (handle, mut events) = start(&store, "node-a", &log);
    let ip: IpAddr = "2001:db8::7".parse().expect("ip");
    handle
        .set_desired(
            ip,
            IpDesire {
                eligible_nodes: ["node-a".to_owned()].into(),
                eip: "v6".into(),
                interface: None,
            },
        )
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(handle.announced().borrow().contains(&ip));
    handle.wire_conflict(ip).await.expect("conflict");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!handle.announced().borrow().contains(&ip));
    assert_eq!(handle.metrics().wire_yields, 1);
    let mut saw_yield = false;
    while let Ok(ev) = events.try_recv() {
        saw_yield |= ev == OwnershipEvent::WireYield { ip };
    }
    assert!(saw_yield);
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn invalid_ip_and_bad_timing_are_refused() {
    let store = MemoryLeaseStore::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (handle, _events) = start(&store, "node-a", &log);
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
    assert!(handle.set_desired(mapped, desire()).await.is_err());
    handle.shutdown().await.expect("shutdown");

    let mut config = OwnershipConfig::new(Identity::new("node-b", "x").expect("identity"));
    config.timing.takeover_after = Duration::from_secs(2);
    let err = OwnershipAgent::spawn(
        store.clone(),
        RecordingSink::new("node-b", &log),
        config,
        &CancellationToken::new(),
    )
    .expect_err("unsafe timing");
    assert!(err.to_string().contains("--takeover-after"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn leader_lock_has_one_leader_and_hands_over_on_shutdown() {
    let store = MemoryLeaseStore::new();
    let timing = LeaderTiming::default();
    let spawn = |id: &str| {
        let config = LeaderLockConfig {
            timing,
            ..LeaderLockConfig::allocator(id)
        };
        LeaderLock::spawn(store.client(id), config, &CancellationToken::new()).expect("spawn")
    };
    let mut a = spawn("a");
    let term = tokio::time::timeout(Duration::from_secs(5), a.acquired())
        .await
        .expect("a leads")
        .expect("term");
    let mut b = spawn("b");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(a.is_leader() && !b.is_leader());
    assert!(!term.is_cancelled());
    let stop_at = tokio::time::Instant::now();
    a.shutdown().await.expect("shutdown");
    assert!(term.is_cancelled(), "the term ends when the leader stops");
    // The lease was released: b acquires at its next retry (1 s), not after the lease duration (3 s).
    let b_term = tokio::time::timeout(Duration::from_secs(3), b.acquired())
        .await
        .expect("b leads fast");
    assert!(tokio::time::Instant::now() - stop_at <= timing.retry_period * 2);
    assert!(b_term.is_some());
    b.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn leader_lock_steps_down_when_cut_off() {
    let store = MemoryLeaseStore::new();
    let config = LeaderLockConfig::allocator("a");
    let mut a = LeaderLock::spawn(store.client("a"), config, &CancellationToken::new()).expect("spawn");
    let term = a.acquired().await.expect("term");
    let cut_at = tokio::time::Instant::now();
    store.set_reachable("a", false);
    term.cancelled().await;
    let after = tokio::time::Instant::now() - cut_at;
    assert!(
        after <= LeaderTiming::default().renew_deadline,
        "stepped down {after:?} after the cut"
    );
    assert!(!a.is_leader());
    a.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn unused_lease_deletions_that_fail_are_retried_later_and_back_off() {
    let store = MemoryLeaseStore::new();
    let released = store
        .create_now(&LeaseRecord {
            name: "herald-ip-192-0-2-1".into(),
            ..Default::default()
        })
        .expect("create");
    let grace = Duration::from_secs(60);
    let mut gc = UnusedLeases::new(store.client("gc"), grace, 100);
    let input = GcInput {
        ip_leases: vec![LeaseView::from(&released)],
        ..Default::default()
    };
    let t0 = tokio::time::Instant::now();
    let first = gc.sweep(&input, t0).await;
    assert!(first.results.is_empty());
    assert_eq!(
        first.next,
        t0 + grace / 2,
        "nothing due: look again within half the grace period"
    );
    store.set_reachable("gc", false);
    let failed = gc.sweep(&input, t0 + grace).await;
    assert!(matches!(
        failed.results[..],
        [(_, Collected::Failed(StoreError::Unavailable { .. }))]
    ));
    assert_eq!(
        failed.next,
        t0 + grace + grace / 4,
        "one failed sweep: twice the shortest pause"
    );
    assert!(store.peek("herald-ip-192-0-2-1").is_some());
    store.set_reachable("gc", true);
    let done = gc.sweep(&input, failed.next).await;
    assert!(matches!(done.results[..], [(_, Collected::Deleted)]));
    assert!(store.peek("herald-ip-192-0-2-1").is_none());
    assert_eq!(
        store.stats().deletes,
        1,
        "the partitioned attempt never reached the store"
    );
}

/// A store whose every call takes `DELAY` and that counts the IP-lease calls in flight (the highest count too) and
/// the node-lease writes.
#[derive(Clone)]
struct SlowStore {
    inner: MemoryLeaseStore,
    counts: Arc<Mutex<SlowCounts>>,
}

#[derive(Default)]
struct SlowCounts {
    ip_in_flight: usize,
    ip_most: usize,
    node_writes: usize,
}

impl SlowStore {
    const DELAY: Duration = Duration::from_millis(50);

    async fn call<T>(&self, name: &str, fut: impl std::future::Future<Output = T>) -> T {
        let ip = !name.starts_with(herald_election::naming::NODE_LEASE_PREFIX);
        if ip {
            let mut c = self.counts.lock().expect("counts");
            c.ip_in_flight += 1;
            c.ip_most = c.ip_most.max(c.ip_in_flight);
        } else {
            self.counts.lock().expect("counts").node_writes += 1;
        }
        tokio::time::sleep(Self::DELAY).await;
        let out = fut.await;
        if ip {
            self.counts.lock().expect("counts").ip_in_flight -= 1;
        }
        out
    }
}

impl herald_election::LeaseStore for SlowStore {
    async fn get(&self, name: &str) -> Result<LeaseRecord, StoreError> {
        self.call(name, self.inner.get(name)).await
    }
    async fn create(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        self.call(&record.name, self.inner.create(record)).await
    }
    async fn replace(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        self.call(&record.name, self.inner.replace(record)).await
    }
    async fn delete(&self, name: &str, resource_version: &str) -> Result<(), StoreError> {
        self.call(name, self.inner.delete(name, resource_version)).await
    }
    fn watch(&self) -> futures::stream::BoxStream<'static, herald_election::lease::WatchEvent> {
        self.inner.watch()
    }
    fn watch_one(&self, name: &str) -> futures::stream::BoxStream<'static, herald_election::lease::WatchEvent> {
        self.inner.watch_one(name)
    }
}

/// A burst of 2,000 IPs on a slow API server: at most 32 IP-lease requests are in flight at any moment, the rest wait
/// as queued descriptions, not as tasks (a task of a few KiB per waiting request was 20 MB at the peak of a burst of
/// 10,000), every IP is won in the end, and the node lease is renewed all along.
#[tokio::test(start_paused = true)]
async fn a_burst_of_ips_keeps_32_lease_requests_in_flight_and_the_node_lease_renewed() {
    let memory = MemoryLeaseStore::new();
    let store = SlowStore {
        inner: memory.client("node-a"),
        counts: Arc::default(),
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let config = OwnershipConfig::new(Identity::new("node-a", "node-a-uid").expect("identity"));
    let (handle, _events) = OwnershipAgent::spawn(
        store.clone(),
        RecordingSink::new("node-a", &log),
        config,
        &CancellationToken::new(),
    )
    .expect("spawn");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let renewals_before = store.counts.lock().expect("counts").node_writes;
    let ips: Vec<IpAddr> = (1..=2000u32)
        .map(|i| format!("2001:db8::{i:x}").parse().expect("ip"))
        .collect();
    for ip in &ips {
        handle.set_desired(*ip, desire()).await.expect("set");
    }
    // Mid-burst, the waiting operations are not tasks: a few dozen tasks are alive, not one per IP.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    assert!(alive < 100, "{alive} tasks alive during the burst");
    // 2,000 creates at 32 at a time, 50 ms each: about 3 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let owners = check_single_owner(&log.lock().expect("log"));
    assert_eq!(owners.len(), ips.len(), "every IP won");
    let counts = store.counts.lock().expect("counts");
    assert!(
        counts.ip_most <= 32,
        "{} IP-lease requests in flight at once",
        counts.ip_most
    );
    assert!(
        counts.ip_most >= 16,
        "the burst runs in parallel ({} at most)",
        counts.ip_most
    );
    assert!(
        counts.node_writes >= renewals_before + 5,
        "the node lease was renewed during the burst ({} renewals before, {} after)",
        renewals_before,
        counts.node_writes
    );
}
