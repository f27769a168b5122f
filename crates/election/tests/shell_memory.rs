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
