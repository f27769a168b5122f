//! Scenario tests of the ownership protocol: several simulated agents, one in-memory store with resourceVersion
//! CAS, a controllable clock. The simulation asserts after every event that no IP is announced by two agents
//! (unless a test explicitly measures the overlap of a partial partition under `--api-outage=hold`).

mod support;

use std::net::IpAddr;
use std::time::Duration;

use herald_election::rank::rank_nodes;
use herald_election::{ElectionTiming, OutagePolicy};
use support::{Sim, SimConfig, ip, ms};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn three_nodes(cfg: SimConfig) -> Sim {
    let mut sim = Sim::new(cfg);
    for n in NODES {
        sim.add_agent(n);
    }
    sim
}

fn ips(n: u8) -> Vec<IpAddr> {
    (1..=n)
        .map(|i| {
            if i % 2 == 0 {
                ip(&format!("2001:db8::{i:x}"))
            } else {
                ip(&format!("192.0.2.{i}"))
            }
        })
        .collect()
}

fn index_of(sim: &Sim, node: &str) -> usize {
    sim.agents.iter().position(|a| a.node == node).expect("node")
}

#[test]
fn cold_start_gives_every_ip_to_its_rank_zero_node() {
    let (sim, all) = settled_on_three_nodes(60);
    let mut per_node = [0; 3];
    for ip in &all {
        let expected = rank_nodes(*ip, NODES)[0];
        assert_eq!(
            sim.lease_holder_node(*ip).as_deref(),
            Some(expected),
            "{ip} not on its rank-0 node"
        );
        per_node[NODES.iter().position(|n| *n == expected).expect("node")] += 1;
        assert_eq!(
            sim.lease(*ip).and_then(|l| l.lease_transitions),
            Some(1),
            "{ip} changed hands at start"
        );
    }
    assert!(
        per_node.iter().all(|n| (10..=30).contains(n)),
        "uneven spread {per_node:?}"
    );
}

#[test]
fn steady_state_writes_only_node_leases() {
    let mut sim = three_nodes(SimConfig::default());
    for ip in ips(100) {
        sim.set_desired(ip, &NODES);
    }
    sim.advance(Duration::from_secs(5));
    let before = sim.store.stats();
    sim.advance(Duration::from_secs(60));
    let after = sim.store.stats();
    let writes = (after.creates + after.replaces) - (before.creates + before.replaces);
    // 3 nodes renewing every second: 180 writes in 60 s, whatever the number of IPs.
    assert!((177..=183).contains(&writes), "{writes} writes in 60 s");
    assert_eq!(after.gets, before.gets, "no polling reads in steady state");
    sim.assert_settled();
}

#[test]
fn crash_of_the_holder_fails_over_after_takeover_delay() {
    let mut sim = three_nodes(SimConfig::default());
    let x = ip("192.0.2.10");
    sim.set_desired(x, &NODES);
    sim.advance(Duration::from_secs(3));
    let holder = sim.announcers(x)[0];
    sim.advance(ms(400)); // crash at an arbitrary point of the renew cycle
    let crash_at = sim.now;
    sim.crash(holder);
    sim.advance(Duration::from_secs(6));
    sim.assert_settled();
    let back = sim.first_announce_after(x, crash_at, Some(holder)).expect("failover") - crash_at;
    let t = ElectionTiming::default();
    // Not before T minus one renew period (the last renew may precede the crash), not after T + stagger + I/O.
    assert!(
        back >= t.takeover_after - t.node_renew_period,
        "failover after {back:?}"
    );
    assert!(back <= t.takeover_after + ms(200), "failover after {back:?}");
    assert_eq!(sim.lease(x).and_then(|l| l.lease_transitions), Some(2));
}

#[test]
fn graceful_stop_hands_over_in_a_blink_and_releases_everything() {
    let mut sim = three_nodes(SimConfig::default());
    let all = ips(12);
    for ip in &all {
        sim.set_desired(*ip, &NODES);
    }
    sim.advance(Duration::from_secs(3));
    let a = index_of(&sim, "node-a");
    let held: Vec<IpAddr> = all
        .iter()
        .copied()
        .filter(|ip| sim.announcers(*ip) == vec![a])
        .collect();
    assert!(!held.is_empty());
    let stop_at = sim.now;
    sim.stop(a);
    sim.advance(Duration::from_secs(1));
    assert!(sim.agents[a].stopped, "graceful stop finished");
    for ip in &held {
        let back = sim.first_announce_after(*ip, stop_at, Some(a)).expect("handover") - stop_at;
        assert!(back <= ms(150), "{ip} handed over after {back:?}");
    }
    let node_lease = sim.store.peek("herald-node-node-a").expect("node lease");
    assert_eq!(node_lease.holder(), None, "node lease released");
    // Rest of the cluster keeps working without node-a.
    sim.desired.iter_mut().for_each(|(_, d)| {
        d.eligible_nodes.make_mut().remove("node-a");
    });
    sim.advance(Duration::from_secs(5));
    sim.assert_settled();
}

#[test]
fn node_joins_do_not_move_ips() {
    let mut sim = Sim::new(SimConfig::default());
    sim.add_agent("node-a");
    sim.add_agent("node-b");
    let all = ips(30);
    for ip in &all {
        sim.set_desired(*ip, &NODES); // node-c is eligible but not running yet
    }
    sim.advance(Duration::from_secs(5));
    let before: Vec<_> = all.iter().map(|ip| sim.lease(*ip)).collect();
    sim.add_agent("node-c");
    sim.advance(Duration::from_secs(10));
    let after: Vec<_> = all.iter().map(|ip| sim.lease(*ip)).collect();
    assert_eq!(before, after, "a joining node moved IPs");
    assert!(sim.agents[2].announced.is_empty());
    sim.assert_settled();
}

#[test]
fn ineligible_holder_withdraws_before_releasing() {
    let mut sim = three_nodes(SimConfig::default());
    let x = ip("198.51.100.1");
    sim.set_desired(x, &NODES);
    sim.advance(Duration::from_secs(3));
    let holder = sim.announcers(x)[0];
    let holder_node = sim.agents[holder].node.clone();
    let rest: Vec<&str> = NODES.iter().copied().filter(|n| *n != holder_node).collect();
    let change_at = sim.now;
    // The holder's link went down: only the holder knows at first.
    sim.set_desired_on(holder, x, &rest);
    let withdrawn = sim
        .decisions
        .iter()
        .find(|d| d.ip == x && !d.announce && d.agent == holder)
        .expect("withdrawn")
        .at;
    assert_eq!(withdrawn, change_at, "withdraw is immediate");
    sim.advance(Duration::from_secs(1));
    let next = sim.announcers(x);
    assert_eq!(next.len(), 1);
    assert_eq!(sim.agents[next[0]].node, rank_nodes(x, rest.iter().copied())[0]);
    let back = sim.first_announce_after(x, change_at, Some(holder)).expect("moved") - change_at;
    assert!(back <= ms(150), "moved after {back:?}");
}

#[test]
fn removed_ip_is_withdrawn_and_released() {
    let mut sim = three_nodes(SimConfig::default());
    let x = ip("203.0.113.9");
    sim.set_desired(x, &NODES);
    sim.advance(Duration::from_secs(3));
    sim.remove_desired(x);
    sim.advance(Duration::from_secs(3));
    assert!(sim.announcers(x).is_empty());
    assert_eq!(sim.lease(x).expect("lease kept").holder(), None);
}

#[test]
fn simultaneous_takeover_attempts_have_one_winner() {
    // Zero stagger: every candidate attempts at the same instant; the CAS picks exactly one.
    let timing = ElectionTiming {
        stagger_step: Duration::ZERO,
        ..Default::default()
    };
    let cfg = SimConfig {
        timing,
        ..Default::default()
    };
    let mut sim = Sim::new(cfg);
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        sim.add_agent(n);
    }
    let x = ip("192.0.2.77");
    sim.set_desired(x, &["n1", "n2", "n3", "n4", "n5"]);
    sim.advance(Duration::from_secs(3));
    let holder = sim.announcers(x)[0];
    sim.crash(holder);
    let lost_before = sim.store.stats().lost_races;
    sim.advance(Duration::from_secs(6));
    sim.assert_settled();
    assert!(
        sim.store.stats().lost_races > lost_before,
        "the candidates really raced"
    );
    assert_eq!(
        sim.lease(x).and_then(|l| l.lease_transitions),
        Some(2),
        "exactly one takeover"
    );
}

#[test]
fn old_holder_reasserting_races_takeover_cas_safely() {
    // The holder is cut off long enough to be declared dead, and reconnects at every offset around the moment the
    // others take over: either its re-assertion or the takeover wins, never both.
    // Every watch lags 150 ms, so the reconnected holder's renew succeeds before it sees the new lease holder.
    for offset_ms in (2800..=3600).step_by(20) {
        let mut sim = Sim::new(SimConfig::default());
        for n in NODES {
            sim.add_agent_with(n, ms(150), 1.0);
        }
        let x = ip("192.0.2.50");
        sim.set_desired(x, &NODES);
        sim.advance(Duration::from_secs(3));
        let holder = sim.announcers(x)[0];
        sim.partition(holder);
        sim.advance(ms(offset_ms));
        sim.heal(holder);
        sim.advance(Duration::from_secs(5));
        sim.assert_settled();
    }
}

#[test]
fn stale_watch_cannot_cause_a_takeover_of_a_live_holder() {
    // node-c's watch hangs silently: its view of node-a's node lease stops changing, so after T node-a looks dead.
    // The fresh GET before any takeover shows node-a is renewing, and nothing happens.
    let mut sim = three_nodes(SimConfig::default());
    let x = ip("192.0.2.88");
    sim.set_desired(x, &["node-a", "node-c"]);
    sim.advance(Duration::from_secs(3));
    let a = index_of(&sim, "node-a");
    let c = index_of(&sim, "node-c");
    if sim.announcers(x) != vec![a] {
        // Make node-a the holder whatever the ranking says: move x away from node-c and back.
        sim.set_desired(x, &["node-a"]);
        sim.advance(Duration::from_secs(1));
        sim.set_desired(x, &["node-a", "node-c"]);
    }
    assert_eq!(sim.announcers(x), vec![a]);
    let reads = sim.store.stats().gets;
    sim.stall_watch(c);
    sim.advance(Duration::from_secs(20));
    assert!(sim.store.stats().gets > reads, "node-c checked node-a's lease");
    assert_eq!(sim.announcers(x), vec![a]);
    sim.resume_watch(c);
    sim.advance(Duration::from_secs(5));
    assert_eq!(
        sim.lease_holder_node(x).as_deref(),
        Some("node-a"),
        "no takeover of a live holder"
    );
    sim.assert_settled();
}

#[test]
fn withdraw_mode_partitioned_holder_is_silent_before_takeover() {
    let mut sim = three_nodes(SimConfig {
        policy: OutagePolicy::Withdraw,
        ..Default::default()
    });
    let x = ip("192.0.2.60");
    sim.set_desired(x, &NODES);
    sim.advance(Duration::from_secs(3));
    let holder = sim.announcers(x)[0];
    let cut_at = sim.now;
    sim.partition(holder);
    sim.advance(Duration::from_secs(10));
    let silent = sim
        .decisions
        .iter()
        .find(|d| d.ip == x && d.agent == holder && !d.announce)
        .expect("withdrew")
        .at;
    let t = ElectionTiming::default();
    assert!(
        silent - cut_at <= t.renew_deadline,
        "withdrew {:?} after the cut",
        silent - cut_at
    );
    let taken = sim.first_announce_after(x, cut_at, Some(holder)).expect("taken over");
    assert!(taken > silent);
    // Reconnected, the old holder sees it lost and stays quiet.
    sim.heal(holder);
    sim.advance(Duration::from_secs(5));
    sim.assert_settled();
    assert!(!sim.agents[holder].announced.contains(&x));
}

#[test]
fn hold_mode_keeps_announcing_through_a_full_api_outage() {
    let mut sim = three_nodes(SimConfig {
        policy: OutagePolicy::Hold,
        ..Default::default()
    });
    let all = ips(9);
    for ip in &all {
        sim.set_desired(*ip, &NODES);
    }
    sim.advance(Duration::from_secs(3));
    let owners: Vec<Vec<usize>> = all.iter().map(|ip| sim.announcers(*ip)).collect();
    let leases: Vec<_> = all.iter().map(|ip| sim.lease(*ip)).collect();
    for i in 0..3 {
        sim.partition(i);
    }
    let decisions_before = sim.decisions.len();
    sim.advance(Duration::from_secs(60));
    assert_eq!(
        sim.decisions.len(),
        decisions_before,
        "no announce/withdraw during the outage"
    );
    for i in 0..3 {
        sim.heal(i);
    }
    sim.advance(Duration::from_secs(5));
    let owners_after: Vec<Vec<usize>> = all.iter().map(|ip| sim.announcers(*ip)).collect();
    assert_eq!(owners, owners_after, "no ownership change");
    for (ip, before) in all.iter().zip(leases) {
        let after = sim.lease(*ip).expect("lease");
        assert_eq!(after.holder, before.expect("lease").holder, "{ip}");
        assert_eq!(after.lease_transitions, Some(1));
    }
    assert_eq!(
        sim.decisions.len(),
        decisions_before,
        "not even a blip after the API returned"
    );
    sim.assert_settled();
}

#[test]
fn hold_mode_outage_ending_at_different_times_moves_nothing() {
    // The API comes back for each node at a different moment. A node that
    // reconnects first must not take over from nodes that simply have not renewed yet: observation windows restart
    // when an agent's own watch or renewals come back.
    for gap_ms in [0u64, 100, 300, 700, 1500] {
        let mut sim = Sim::new(SimConfig {
            policy: OutagePolicy::Hold,
            ..Default::default()
        });
        for n in NODES {
            sim.add_agent_with(n, ms(5), 1.0);
        }
        let all = ips(12);
        for ip in &all {
            sim.set_desired(*ip, &NODES);
        }
        sim.advance(Duration::from_secs(3));
        let leases: Vec<_> = all.iter().map(|ip| sim.lease(*ip)).collect();
        for i in 0..3 {
            sim.partition(i);
        }
        sim.advance(Duration::from_secs(20));
        for i in 0..3 {
            sim.heal(i);
            sim.advance(ms(gap_ms));
        }
        sim.advance(Duration::from_secs(10));
        sim.assert_settled();
        let after: Vec<_> = all.iter().map(|ip| sim.lease(*ip).map(|l| l.holder)).collect();
        let before: Vec<_> = leases.into_iter().map(|l| l.map(|l| l.holder)).collect();
        assert_eq!(
            before, after,
            "ownership moved after an outage healed with {gap_ms} ms between nodes"
        );
    }
}

#[test]
fn hold_mode_node_crashed_during_outage_is_replaced_after_the_outage() {
    let mut sim = Sim::new(SimConfig {
        policy: OutagePolicy::Hold,
        ..Default::default()
    });
    for n in NODES {
        sim.add_agent_with(n, ms(5), 1.0);
    }
    let all = ips(12);
    for ip in &all {
        sim.set_desired(*ip, &NODES);
    }
    sim.advance(Duration::from_secs(3));
    let c = index_of(&sim, "node-c");
    let c_ips: Vec<IpAddr> = all
        .iter()
        .copied()
        .filter(|ip| sim.announcers(*ip) == vec![c])
        .collect();
    assert!(!c_ips.is_empty());
    for i in 0..3 {
        sim.partition(i);
    }
    sim.advance(Duration::from_secs(5));
    sim.crash(c);
    sim.advance(Duration::from_secs(5));
    let heal_at = sim.now;
    sim.heal(0);
    sim.advance(ms(400));
    sim.heal(1);
    sim.advance(Duration::from_secs(10));
    sim.assert_settled();
    for ip in &c_ips {
        let back = sim.first_announce_after(*ip, heal_at, Some(c)).expect("replaced") - heal_at;
        assert!(
            back <= Duration::from_secs(4),
            "{ip} replaced {back:?} after the API returned"
        );
    }
    for ip in all.iter().filter(|ip| !c_ips.contains(ip)) {
        assert_eq!(sim.lease(*ip).and_then(|l| l.lease_transitions), Some(1), "{ip} moved");
    }
}

#[test]
fn withdraw_mode_full_api_outage_withdraws_and_recovers() {
    let mut sim = three_nodes(SimConfig {
        policy: OutagePolicy::Withdraw,
        ..Default::default()
    });
    let all = ips(6);
    for ip in &all {
        sim.set_desired(*ip, &NODES);
    }
    sim.advance(Duration::from_secs(3));
    for i in 0..3 {
        sim.partition(i);
    }
    sim.advance(Duration::from_secs(3));
    assert!(
        all.iter().all(|ip| sim.announcers(*ip).is_empty()),
        "withdrawn after the deadline"
    );
    for i in 0..3 {
        sim.heal(i);
    }
    sim.advance(Duration::from_secs(5));
    sim.assert_settled();
}

fn partial_partition(wire_yield: bool) -> Sim {
    let cfg = SimConfig {
        policy: OutagePolicy::Hold,
        strict: false,
        wire_yield,
        ..Default::default()
    };
    let mut sim = three_nodes(cfg);
    let x = ip("192.0.2.70");
    sim.set_desired(x, &NODES);
    sim.advance(Duration::from_secs(3));
    let holder = sim.announcers(x)[0];
    sim.partition(holder);
    sim.advance(Duration::from_secs(20));
    sim
}

#[test]
fn hold_mode_partial_partition_overlap_ends_on_the_wire() {
    let sim = partial_partition(true);
    assert_eq!(sim.overlaps, 1, "one overlap, when the new holder announced");
    assert!(sim.max_overlap <= ms(5), "overlap lasted {:?}", sim.max_overlap);
    let x = ip("192.0.2.70");
    assert_eq!(sim.announcers(x).len(), 1);
    assert_eq!(sim.agents.iter().map(|a| a.core.wire_yields()).sum::<u64>(), 1);
}

#[test]
fn hold_mode_partial_partition_without_wire_yield_overlaps() {
    // Control: the overlap above is really ended by the on-wire yield.
    let sim = partial_partition(false);
    assert!(
        sim.max_overlap >= Duration::from_secs(15),
        "overlap lasted {:?}",
        sim.max_overlap
    );
}

#[test]
fn hold_mode_partitioned_holder_comes_back_and_yields_to_the_new_owner() {
    let mut sim = partial_partition(true);
    let x = ip("192.0.2.70");
    let old = (0..3)
        .find(|i| !sim.store.is_reachable(&sim.agents[*i].node.clone()))
        .expect("cut");
    sim.heal(old);
    sim.advance(Duration::from_secs(40)); // past the yield hold-off: the re-assertion CAS must fail
    sim.assert_settled();
    assert!(!sim.agents[old].announced.contains(&x));
}

#[test]
fn on_wire_conflict_withdraws_at_once_and_reasserts_after_holdoff() {
    let mut sim = three_nodes(SimConfig::default());
    let x = ip("192.0.2.99");
    sim.set_desired(x, &NODES);
    sim.advance(Duration::from_secs(3));
    let holder = sim.announcers(x)[0];
    let at = sim.now;
    sim.wire_conflict(holder, x); // e.g. a foreign host answered for the IP
    assert!(sim.announcers(x).is_empty(), "withdrawn immediately");
    assert_eq!(sim.agents[holder].core.wire_yields(), 1);
    sim.advance(Duration::from_secs(29));
    assert!(sim.announcers(x).is_empty(), "still yielding during the hold-off");
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.announcers(x), vec![holder], "re-asserted after {:?}", sim.now - at);
}

#[test]
fn new_instance_on_the_same_node_supersedes_the_old_one_safely() {
    let mut sim = three_nodes(SimConfig::default());
    let all = ips(12);
    for ip in &all {
        sim.set_desired(*ip, &NODES);
    }
    sim.advance(Duration::from_secs(3));
    // A second process for node-a starts while the first still runs (e.g. a pod replaced without waiting).
    let old = index_of(&sim, "node-a");
    let twin = sim.add_agent("node-a");
    sim.advance(Duration::from_secs(10));
    assert!(
        sim.agents[old].superseded && sim.agents[old].stopped,
        "old instance stepped aside"
    );
    sim.assert_settled();
    assert!(
        !sim.agents[twin].announced.is_empty(),
        "new instance took over node-a's IPs"
    );
}

#[test]
fn restart_with_new_instance_takes_back_its_ips_after_takeover_delay() {
    let mut sim = three_nodes(SimConfig::default());
    let all = ips(12);
    for ip in &all {
        sim.set_desired(*ip, &NODES);
    }
    sim.advance(Duration::from_secs(3));
    let a = index_of(&sim, "node-a");
    sim.restart(a);
    sim.advance(Duration::from_secs(10));
    sim.assert_settled();
}

#[test]
fn clock_rate_differences_within_margin_stay_safe() {
    // Holder's clock runs 1 % slow (its deadline is late), the others' 1 % fast (their T is early).
    for partitioned in 0..3 {
        let mut sim = Sim::new(SimConfig {
            policy: OutagePolicy::Withdraw,
            ..Default::default()
        });
        for (i, n) in NODES.iter().enumerate() {
            let rate = if i == partitioned { 0.99 } else { 1.01 };
            sim.add_agent_with(n, ms(2), rate);
        }
        for ip in ips(12) {
            sim.set_desired(ip, &NODES);
        }
        sim.advance(Duration::from_secs(3));
        sim.partition(partitioned);
        sim.advance(Duration::from_secs(10));
        sim.heal(partitioned);
        sim.advance(Duration::from_secs(5));
        sim.assert_settled();
    }
}

// ----- takeover checks are per node, not per IP ---------------------------------------------------------------------

/// Three nodes wanting `n` IPs, after 5 s: every IP has its one announcer.
fn settled_on_three_nodes(n: u8) -> (Sim, Vec<IpAddr>) {
    let mut sim = three_nodes(SimConfig::default());
    let all = ips(n);
    for ip in &all {
        sim.set_desired(*ip, &NODES);
    }
    sim.advance(Duration::from_secs(5));
    sim.assert_settled();
    (sim, all)
}

/// The IPs whose lease names `node`.
fn held_by(sim: &Sim, all: &[IpAddr], node: &str) -> Vec<IpAddr> {
    all.iter()
        .copied()
        .filter(|ip| sim.lease_holder_node(*ip).as_deref() == Some(node))
        .collect()
}

#[test]
fn takeover_of_a_dead_node_reads_its_node_lease_once_per_survivor() {
    // 90 IPs over 3 nodes; node-a (about 30 IPs) is killed. Each survivor takes over its share after exactly one
    // GET of node-a's lease, shared by all the IPs it takes (rank 0 at once, rank 1 one stagger step later).
    let (mut sim, all) = settled_on_three_nodes(90);
    let a = index_of(&sim, "node-a");
    let moved = held_by(&sim, &all, "node-a");
    assert!(moved.len() >= 10, "node-a holds only {} IPs", moved.len());
    sim.advance(ms(300));
    let crash_at = sim.now;
    sim.crash(a);
    sim.advance(Duration::from_secs(6));
    sim.assert_settled();
    assert!(held_by(&sim, &all, "node-a").is_empty(), "every IP left node-a");
    for survivor in ["node-b", "node-c"] {
        let i = index_of(&sim, survivor);
        assert_eq!(
            sim.reads_of(i, "herald-node-node-a", crash_at),
            1,
            "{survivor} read node-a's lease once for {} IPs: {:?}",
            moved.len(),
            sim.reads
        );
        assert!(
            !held_by(&sim, &moved, survivor).is_empty(),
            "{survivor} took a share of node-a's IPs"
        );
    }
}

#[test]
fn single_candidate_takes_over_many_ips_with_one_read() {
    let mut sim = Sim::new(SimConfig::default());
    sim.add_agent("node-a");
    let all = ips(40);
    for ip in &all {
        sim.set_desired(*ip, &["node-a", "node-b"]);
    }
    sim.advance(Duration::from_secs(3));
    assert_eq!(held_by(&sim, &all, "node-a").len(), all.len());
    let b = sim.add_agent("node-b");
    sim.advance(Duration::from_secs(2));
    assert_eq!(
        held_by(&sim, &all, "node-a").len(),
        all.len(),
        "a joining node moves nothing"
    );
    let crash_at = sim.now;
    sim.crash(0);
    sim.advance(Duration::from_secs(5));
    sim.assert_settled();
    assert_eq!(held_by(&sim, &all, "node-b").len(), all.len());
    let reads: Vec<_> = sim.reads.iter().filter(|r| r.at >= crash_at).collect();
    assert_eq!(reads.len(), 1, "one GET for 40 takeovers: {reads:?}");
    assert_eq!(reads[0].agent, b);
    assert_eq!(reads[0].name, "herald-node-node-a");
}

#[test]
fn live_holders_are_never_checked_even_with_slow_watches_and_skewed_clocks() {
    // All holders stay live for 120 s: no node-lease GET, no takeover check, no IP-lease write, with watches
    // lagging by up to 1.5 s (less than T − R) and clock rates 1 % apart.
    let mut sim = Sim::new(SimConfig::default());
    sim.add_agent_with("node-a", Duration::ZERO, 1.0);
    sim.add_agent_with("node-b", ms(300), 0.99);
    sim.add_agent_with("node-c", ms(1500), 1.01);
    let all = ips(120);
    for ip in &all {
        sim.set_desired(*ip, &NODES);
    }
    sim.advance(Duration::from_secs(8));
    sim.assert_settled();
    let from = sim.now;
    let before = sim.store.stats();
    sim.advance(Duration::from_secs(120));
    let after = sim.store.stats();
    let reads: Vec<_> = sim.reads.iter().filter(|r| r.at >= from).collect();
    assert!(reads.is_empty(), "reads while every holder was live: {reads:?}");
    assert_eq!(after.gets, before.gets);
    let writes = (after.creates + after.replaces) - (before.creates + before.replaces);
    assert!(
        (357..=363).contains(&writes),
        "{writes} writes in 120 s (node renews only)"
    );
    sim.assert_settled();
}

#[test]
fn hung_watch_costs_one_read_per_node_per_takeover_delay_not_per_ip() {
    // node-c's watch hangs for 20 s while node-a and node-b hold about 60 IPs. node-c sees both as dead every T and
    // reads each node lease once to learn otherwise: O(nodes) reads, not O(IPs), and no takeover.
    let (mut sim, all) = settled_on_three_nodes(90);
    let c = index_of(&sim, "node-c");
    let before: Vec<Option<String>> = all.iter().map(|ip| sim.lease_holder_node(*ip)).collect();
    let from = sim.now;
    sim.stall_watch(c);
    sim.advance(Duration::from_secs(20));
    for node in ["node-a", "node-b"] {
        let n = sim.reads_of(c, &format!("herald-node-{node}"), from);
        // One read each time the frozen view reaches T (≈ every T after the last read): about 20 s / 3 s.
        assert!((1..=8).contains(&n), "{n} reads of {node}'s lease in 20 s");
    }
    sim.resume_watch(c);
    sim.advance(Duration::from_secs(5));
    let after: Vec<Option<String>> = all.iter().map(|ip| sim.lease_holder_node(*ip)).collect();
    assert_eq!(before, after, "nothing moved");
    sim.assert_settled();
}
