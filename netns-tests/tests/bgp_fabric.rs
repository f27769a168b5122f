//! BGP mode in racks (`herald_netns_tests::fabric`): each node peers with its own leaf, the spine holds the Service
//! IP by ECMP over both leaves and leaf1 over node1 and node2, and client connections through the spine reach all
//! three nodes. A node lost (its agent killed, then its rack link cut) leaves the leaf and the spine, and the client
//! keeps reaching the others.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_netns_tests::fabric::{Fabric, HOLD_TIME, RACKS};
use herald_netns_tests::require;

const WAIT: Duration = Duration::from_secs(60);

fn hops(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// node3 is out of the fabric: leaf2 has no route for `ip` within `timeout`, the spine sends everything to leaf1,
/// and 100 client connections all reach node1 and node2.
fn node3_is_out(f: &Fabric, ip: &str, timeout: Duration, case: &str) {
    let prefix = format!("{ip}/32");
    f.wait(
        timeout,
        &format!("{case}: node3's route leaves leaf2"),
        |f| f.leaf_hops(1, &prefix).is_empty().then_some(()),
        |f| format!("{:?}", f.leaf_hops(1, &prefix)),
    )
    .unwrap();
    f.wait_spine(&prefix, &[RACKS[0].uplink.1], WAIT)
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let (spread, failed) = f.client_spread(ip, 100).unwrap();
    assert_eq!(failed, 0, "{case}: no connection fails: {spread:?}");
    assert_eq!(
        spread.keys().map(String::as_str).collect::<Vec<_>>(),
        ["node1", "node2"],
        "{case}: nodes 1 and 2 answer: {spread:?}"
    );
}

/// Established sessions per node of a BgpPeer, from its status.
fn sessions(f: &Fabric, peer: &str) -> BTreeMap<String, String> {
    session_field(f, peer, "state")
}

#[test]
fn racks_spread_traffic_over_every_node_and_a_lost_node_leaves_the_fabric() {
    if !require(Fabric::TOOLS) {
        return;
    }
    let mut f = Fabric::start("bgp-fabric").expect("the fabric starts");
    let ip = f.create_service("web", WAIT).expect("the Service gets an IP");
    let prefix = format!("{ip}/32");
    let (leaf1_up, leaf2_up) = (RACKS[0].uplink.1, RACKS[1].uplink.1);

    // Each leaf holds the IP over its own nodes, the spine over both leaves.
    f.wait(
        WAIT,
        "leaf1 holds the IP over node1 and node2",
        |f| (f.leaf_hops(0, &prefix) == hops(&["192.0.2.11", "192.0.2.12"])).then_some(()),
        |f| format!("{:?}", f.leaf_hops(0, &prefix)),
    )
    .unwrap();
    f.wait(
        WAIT,
        "leaf2 holds the IP over node3",
        |f| (f.leaf_hops(1, &prefix) == hops(&["192.0.2.73"])).then_some(()),
        |f| format!("{:?}", f.leaf_hops(1, &prefix)),
    )
    .unwrap();
    f.wait_spine(&prefix, &[leaf1_up, leaf2_up], WAIT).unwrap();
    // Every node's session, each with its own leaf only.
    f.wait(
        WAIT,
        "kubectl get bgppeer shows every node's session",
        |f| {
            let (a, b) = (sessions(f, "leaf1"), sessions(f, "leaf2"));
            let up = |m: &BTreeMap<String, String>, nodes: &[&str]| {
                m.len() == nodes.len()
                    && nodes
                        .iter()
                        .all(|n| m.get(*n).map(String::as_str) == Some("Established"))
            };
            (up(&a, &["node1", "node2"]) && up(&b, &["node3"])).then_some(())
        },
        |f| format!("leaf1 {:?}, leaf2 {:?}", sessions(f, "leaf1"), sessions(f, "leaf2")),
    )
    .unwrap();

    // 300 connections from behind the spine reach all three nodes.
    let (spread, failed) = f.client_spread(&ip, 300).unwrap();
    assert_eq!(failed, 0, "no connection fails: {spread:?}");
    println!("300 connections through the spine: {spread:?}");
    for node in ["node1", "node2", "node3"] {
        assert!(
            spread.get(node).is_some_and(|n| *n > 0),
            "{node} answered some of 300: {spread:?}"
        );
    }

    // kill -9 of node3's agent: its kernel closes the session, leaf2 and then the spine drop the route.
    f.kill_agent(2).unwrap();
    node3_is_out(&f, &ip, WAIT, "after the kill");

    // node3 comes back, then its rack link goes down: no FIN, no RST; leaf2 drops it when the hold time runs out.
    f.start_agent(2).unwrap();
    f.wait_spine(&prefix, &[leaf1_up, leaf2_up], WAIT).unwrap();
    f.rack_link_down(2).unwrap();
    // Within its hold time (and some slack for a busy machine).
    node3_is_out(
        &f,
        &ip,
        Duration::from_secs(u64::from(HOLD_TIME) * 3),
        "after the link cut",
    );
}

/// A clean stop (SIGTERM, as in a rolling update) in BGP mode, with BFD on, loses no connection of a client probing
/// through the spine every 20 ms: without graceful restart the agent withdraws its routes first and then closes, so the leaf
/// moves the traffic while the node still forwards; with graceful restart (BgpConf) it closes without a
/// NOTIFICATION, the leaf keeps the node's routes while the agent restarts, and the new agent takes them over.
#[test]
fn a_clean_stop_loses_no_connection_with_or_without_graceful_restart() {
    if !require(Fabric::TOOLS) {
        return;
    }
    let mut f = Fabric::start("bgp-fabric-stop").expect("the fabric starts");
    // With BFD on, as a user who has it would run: a stopping agent ends its BFD sessions after the BGP session
    // (AdminDown after the Cease; nothing at all with graceful restart, so that the leaf's BFD times out only after
    // the closed connection put the session in graceful restart). A multiplier of 5: the leaf times a stopped agent out
    // after 1.5 s, before its successor starts, and a loaded CI machine does not time a running one out.
    f.set_bfd(r#"{"detectMultiplier": 5}"#).unwrap();
    let ip = f.create_service("web", WAIT).expect("the Service gets an IP");
    let prefix = format!("{ip}/32");
    let leaf1_hops = |f: &Fabric| format!("{:?}", f.leaf_hops(0, &prefix));
    let over = |nodes: &'static [&'static str]| {
        let prefix = prefix.clone();
        move |f: &Fabric| (f.leaf_hops(0, &prefix) == hops(nodes)).then_some(())
    };
    let both = &["192.0.2.11", "192.0.2.12"];
    f.wait(WAIT, "leaf1 over node1 and node2", over(both), leaf1_hops)
        .unwrap();
    f.wait_spine(&prefix, &[RACKS[0].uplink.1, RACKS[1].uplink.1], WAIT)
        .unwrap();
    f.leaves[0].0.wait_bfd("192.0.2.11", true, WAIT).unwrap();
    let probe = f.start_probe(&ip).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // Without graceful restart: withdraw, then close.
    f.stop_agent(0).unwrap();
    f.wait(WAIT, "node1's route leaves leaf1", over(&["192.0.2.12"]), leaf1_hops)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    f.start_agent(0).unwrap();
    f.wait(WAIT, "node1 back under leaf1", over(both), leaf1_hops).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let without = f.probe(probe);
    f.lab.proc(probe).signal("KILL").unwrap();

    // Graceful restart on: every session is renegotiated with the capability (each withdraws first; the probe is
    // not running: all of a rack's nodes renegotiate at once, see the note in docs/bgp.md).
    f.apiserver
        .apply(&format!(
            "apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {{name: default}}\n\
             spec: {{asn: {}, gracefulRestart: {{enabled: true, restartTime: 60}}}}\n",
            herald_netns_tests::fabric::NODE_ASN
        ))
        .unwrap();
    let graceful = |f: &Fabric| {
        let out = f.leaves[0]
            .0
            .cli("show bgp neighbors 192.0.2.11 json")
            .unwrap_or_default();
        out.contains("\"gracefulRestartInfo\"") && out.contains("\"bgpState\":\"Established\"")
    };
    f.wait(
        WAIT,
        "node1's session with leaf1 renegotiated with graceful restart",
        |f| graceful(f).then_some(()),
        |f| {
            f.leaves[0]
                .0
                .cli("show bgp neighbors 192.0.2.11 json")
                .unwrap_or_default()
        },
    )
    .unwrap();
    f.wait(WAIT, "leaf1 over node1 and node2", over(both), leaf1_hops)
        .unwrap();
    f.wait_spine(&prefix, &[RACKS[0].uplink.1, RACKS[1].uplink.1], WAIT)
        .unwrap();

    // With graceful restart: a clean stop leaves node1's route at the leaf while the agent is away.
    f.leaves[0].0.wait_bfd("192.0.2.11", true, WAIT).unwrap();
    let probe = f.start_probe(&ip).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    f.stop_agent(0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        f.leaf_hops(0, &prefix),
        hops(both),
        "leaf1 keeps node1's route (stale) while its agent restarts"
    );
    f.start_agent(0).unwrap();
    f.wait(WAIT, "node1 under leaf1 again", over(both), leaf1_hops).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let with = f.probe(probe);

    for (case, report) in [("without graceful restart", &without), ("with graceful restart", &with)] {
        println!(
            "the client's view {case}, a line a second:\n{}",
            report.lines.join("\n")
        );
        assert!(report.lines.len() >= 5, "{case}: the probe ran throughout: {report:?}");
        assert_eq!(report.lost, 0, "{case}: no connection lost: {report:?}");
        assert!(
            ["node1", "node2", "node3"]
                .iter()
                .all(|n| report.answered.get(*n).is_some_and(|c| *c > 0)),
            "{case}: every node answered: {:?}",
            report.answered
        );
    }
}

/// One BgpPeer field of each node's session (`{.node}={.<field>}`), from its status.
fn session_field(f: &Fabric, peer: &str, field: &str) -> BTreeMap<String, String> {
    let rows = f
        .apiserver
        .kubectl(&[
            "get",
            "bgppeer",
            peer,
            "-o",
            &format!(r#"jsonpath={{range .status.sessions[*]}}{{.node}}={{.{field}}}{{"\n"}}{{end}}"#),
        ])
        .unwrap_or_default();
    rows.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

/// Native BFD against FRR's bfdd (leaf1) and BIRD's BFD (leaf2): turning it on, and changing its timers, resets no
/// BGP session; a node whose rack link is cut (no FIN, no RST, the leaf's port stays up) leaves its leaf by BFD
/// (300 ms × 5 here: 1.5 s), well within the BGP hold time, and comes back when the link does.
#[test]
fn bfd_takes_a_cut_node_out_before_the_hold_time_and_changes_reset_no_session() {
    if !require(Fabric::TOOLS) {
        return;
    }
    let f = Fabric::start("bgp-fabric-bfd").expect("the fabric starts");
    let ip = f.create_service("web", WAIT).expect("the Service gets an IP");
    let prefix = format!("{ip}/32");
    let (leaf1_up, leaf2_up) = (RACKS[0].uplink.1, RACKS[1].uplink.1);
    let nodes = [(0, "192.0.2.11"), (0, "192.0.2.12"), (1, "192.0.2.73")];
    f.wait(
        WAIT,
        "leaf1 over node1 and node2",
        |f| (f.leaf_hops(0, &prefix) == hops(&["192.0.2.11", "192.0.2.12"])).then_some(()),
        |f| format!("{:?}", f.leaf_hops(0, &prefix)),
    )
    .unwrap();
    f.wait_spine(&prefix, &[leaf1_up, leaf2_up], WAIT).unwrap();
    for (r, node) in nodes {
        assert!(!f.leaves[r].0.bfd_up(node), "BFD is off until the BgpPeer asks for it");
    }
    let marks: Vec<String> = nodes.iter().map(|(r, n)| f.leaf_session_mark(*r, n)).collect();
    assert!(marks.iter().all(|m| !m.is_empty()), "session marks: {marks:?}");

    // BFD on: every router's BFD session comes up, and the BgpPeers count them.
    // Multiplier 5 (1.5 s at 300 ms): still far below the hold time, and a debug-built agent busy starting up on a
    // loaded CI machine is not timed out by the router (seen twice at × 3, right after the session came up).
    f.set_bfd(r#"{"detectMultiplier": 5}"#).unwrap();
    for (r, node) in nodes {
        f.leaves[r].0.wait_bfd(node, true, WAIT).unwrap();
    }
    f.wait(
        WAIT,
        "kubectl get bgppeer shows BFD Up on every node",
        |f| {
            let up = |peer: &str, n: usize| {
                let m = session_field(f, peer, "bfd");
                m.len() == n && m.values().all(|s| s == "Up")
            };
            (up("leaf1", 2) && up("leaf2", 1)).then_some(())
        },
        |f| {
            format!(
                "{:?} {:?}",
                session_field(f, "leaf1", "bfd"),
                session_field(f, "leaf2", "bfd")
            )
        },
    )
    .unwrap();
    // New timers: a Poll sequence, no new BFD or BGP session.
    f.set_bfd(r#"{"transmitInterval": 200, "receiveInterval": 200, "detectMultiplier": 5}"#)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    for (r, node) in nodes {
        assert!(
            f.leaves[r].0.bfd_up(node),
            "BFD with {node} stayed up across the timer change"
        );
    }
    f.set_bfd(r#"{"detectMultiplier": 5}"#).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<String> = nodes.iter().map(|(r, n)| f.leaf_session_mark(*r, n)).collect();
    assert_eq!(
        marks, after,
        "turning BFD on and changing its timers reset no BGP session"
    );
    // Cut node3's (BIRD) and node1's (FRR) rack links: BFD takes each out, not the hold time.
    for (i, r, node, others) in [(2, 1, "192.0.2.73", &[][..]), (0, 0, "192.0.2.11", &["192.0.2.12"][..])] {
        let started = std::time::Instant::now();
        f.rack_link_down(i).unwrap();
        f.wait(
            Duration::from_secs(u64::from(HOLD_TIME) * 3),
            &format!("{node}'s route leaves its leaf"),
            |f| (f.leaf_hops(r, &prefix) == hops(others)).then_some(()),
            |f| format!("{:?}", f.leaf_hops(r, &prefix)),
        )
        .unwrap();
        let took = started.elapsed();
        let why = f.leaf_last_reset(r, node);
        println!("{node}: link cut → route gone at its leaf in {took:?} (leaf says: {why})");
        assert!(
            why.to_lowercase().contains("bfd"),
            "the leaf dropped {node} because of BFD: {why:?}"
        );
        assert!(
            took < Duration::from_secs(u64::from(HOLD_TIME)),
            "{node} left before the hold time ({HOLD_TIME} s): {took:?}"
        );
    }
    f.wait_spine(&prefix, &[leaf1_up], WAIT).unwrap();
    let (spread, failed) = f.client_spread(&ip, 100).unwrap();
    assert_eq!(failed, 0, "node2 serves everything: {spread:?}");
    // The nodes' side went down too (their BFD heard nothing): each agent took its BGP session down by BFD, and
    // says so in its metrics.
    for (i, leaf) in [(2, RACKS[1].leaf), (0, RACKS[0].leaf)] {
        let metrics = f.lab.sh(&f.nodes[i].ns, "curl -s 127.0.0.1:7472/metrics").unwrap();
        for series in [
            format!("herald_bgp_bfd_downs_total{{peer=\"{leaf}\"}} 1"),
            format!("herald_bgp_bfd_up{{peer=\"{leaf}\"}} 0"),
        ] {
            assert!(metrics.contains(&series), "{series} on node{}:\n{metrics}", i + 1);
        }
    }

    // Links back: BFD and BGP come back, and so do the routes.
    f.rack_link_up(2).unwrap();
    f.rack_link_up(0).unwrap();
    for (r, node) in nodes {
        f.leaves[r].0.wait_bfd(node, true, WAIT).unwrap();
    }
    f.wait_spine(&prefix, &[leaf1_up, leaf2_up], WAIT).unwrap();
    f.wait(
        WAIT,
        "leaf1 over node1 and node2 again",
        |f| (f.leaf_hops(0, &prefix) == hops(&["192.0.2.11", "192.0.2.12"])).then_some(()),
        |f| format!("{:?}", f.leaf_hops(0, &prefix)),
    )
    .unwrap();
}
