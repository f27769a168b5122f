//! Addresses proven free before they are handed out (issue #17), end to end: three agents, a client and a squatter
//! (a host that is not Herald and already uses a pool's next free IPv4 and IPv6 address) on one LAN.
//!
//! The node that ranks first for the pool checks its next free addresses (RFC 5227 probes, DAD solicitations) and
//! records them in the Eip's `status.probes`; the squatter's addresses appear there as conflicts with its MAC and
//! under the `AddressConflict` condition. A Service then gets the next addresses, never the squatter's, and its node
//! answers for them without a probe of its own. When the squatter leaves, the conflict goes.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use herald_netns_tests::cluster::{Cluster, ClusterOptions, ServiceSpec, epoch_now};
use herald_netns_tests::{require, wait_for_every};
use serde_json::Value;

const SQUATTER_MAC: &str = "02:00:00:00:00:77";
const POOL: &str = "checked";

fn start(test: &str) -> Option<Cluster> {
    if !require(&["ip", "arping", "ndisc6", "tcpdump", "kubectl", "python3", "nft", "curl"]) {
        return None;
    }
    Some(Cluster::start(test, &ClusterOptions::default()).expect("start the cluster"))
}

/// The Eip's `status.probes`, once `done` says it is what the test waits for.
fn wait_probes(c: &Cluster, timeout: Duration, mut done: impl FnMut(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_for_every(timeout, Duration::from_millis(200), || {
        last = c.get_json(&["eip", POOL]).ok()?["status"].clone();
        done(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("Eip {POOL} status never got there: {last:#}"))
}

fn listed(status: &Value, list: &str) -> Vec<String> {
    status["probes"][list]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| e["ip"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn a_squatted_address_is_never_handed_out_and_a_proven_one_is_answered_at_once() {
    let Some(mut c) = start("l2-proven") else {
        return;
    };
    // The squatter: its own host on the LAN, using the pool's first address of each family.
    let squatter = c.lab.netns("squat");
    let switch = c.switch.clone();
    c.lab.attach(&switch, "lan", "l-squat", &squatter, "eth0").unwrap();
    c.lab
        .sh(
            &squatter,
            &format!(
                "ip link set eth0 down && ip link set eth0 address {SQUATTER_MAC} && ip link set eth0 up && \
                 ip addr add 192.0.2.40/24 dev eth0 && ip addr add 2001:db8:1::40/64 dev eth0 nodad"
            ),
        )
        .unwrap();
    c.apply(&format!(
        "apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata:\n  name: {POOL}\nspec:\n  protocol: layer2\n  \
         addresses: [192.0.2.40-192.0.2.49, 2001:db8:1::40-2001:db8:1::49]\n"
    ))
    .unwrap();

    // Checked within seconds of the Eip's creation: the squatter's addresses taken, the next two of each family free.
    let status = wait_probes(&c, Duration::from_secs(30), |s| {
        listed(s, "conflicts").len() == 2 && listed(s, "free").len() == 4
    });
    println!("status.probes: {:#}", status["probes"]);
    assert_eq!(listed(&status, "conflicts"), ["192.0.2.40", "2001:db8:1::40"]);
    assert!(
        status["probes"]["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["mac"] == SQUATTER_MAC),
        "the squatter's MAC: {status:#}"
    );
    let mut free = listed(&status, "free");
    free.sort();
    assert_eq!(free, ["192.0.2.41", "192.0.2.42", "2001:db8:1::41", "2001:db8:1::42"]);
    // The checking node counted what it found.
    let checker = status["probes"]["node"].as_str().unwrap_or_default().to_string();
    let node = &c.nodes[c
        .node_index(&checker)
        .unwrap_or_else(|| panic!("checked by {checker}, not a lab node"))];
    let metrics = c
        .lab
        .sh(&node.ns, &format!("curl -s {}:7472/metrics", node.mgmt))
        .unwrap();
    let checks = |outcome: &str| {
        let series = format!("herald_address_checks_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default()
    };
    assert!(
        checks("taken") >= 2.0 && checks("free") >= 4.0,
        "{checker}: taken {}, free {}",
        checks("taken"),
        checks("free")
    );
    let status = wait_probes(&c, Duration::from_secs(10), |s| {
        condition(s, "AddressConflict").0 == "True"
    });
    let (_, message) = condition(&status, "AddressConflict");
    assert!(
        message.contains("192.0.2.40 (host 02:00:00:00:00:77)") && message.contains("2001:db8:1::40"),
        "{message}"
    );

    // A dual-stack Service gets the proven addresses, and its node answers without probing first.
    let mut spec = ServiceSpec::dual("web");
    spec.eip = POOL.into();
    let created = Instant::now();
    let since = epoch_now();
    c.create_services(&[spec]).unwrap();
    let v4: IpAddr = "192.0.2.41".parse().unwrap();
    let v6: IpAddr = "2001:db8:1::41".parse().unwrap();
    let probes = [
        c.probe(v4, Duration::from_millis(10)).unwrap(),
        c.probe(v6, Duration::from_millis(10)).unwrap(),
    ];
    let ips = c
        .wait_service_ips(&["web"], Duration::from_secs(30))
        .unwrap()
        .remove("web")
        .unwrap();
    assert_eq!(ips, [v4, v6], "the squatter's addresses are never handed out");
    for (ip, p) in [v4, v6].iter().zip(&probes) {
        let mac = p
            .wait_answer(since, Duration::from_secs(10), |m| m != SQUATTER_MAC)
            .unwrap_or_else(|| panic!("nobody answers for {ip}"));
        assert!(c.node_of_mac(&mac).is_some(), "{ip} answered by a node, not {mac}");
        println!(
            "{ip}: first answer {:.0} ms after the create",
            created.elapsed().as_secs_f64() * 1000.0
        );
    }
    let holder = c.wait_lease_holder(v4, Duration::from_secs(5), |_| true).unwrap();
    let i = c.node_index(&holder).unwrap();
    let log = c.agent_log(i);
    assert!(
        log.lines()
            .any(|l| l.contains("answering ARP/NDP") && l.contains("ip=192.0.2.41") && l.contains("mode=Immediately")),
        "{holder} announced the proven address without a probe of its own"
    );

    // The squatter leaves: its addresses are checked again and the conflict goes (the writer refreshes every 30 s).
    c.lab
        .sh(
            &squatter,
            "ip addr del 192.0.2.40/24 dev eth0 && ip addr del 2001:db8:1::40/64 dev eth0",
        )
        .unwrap();
    let status = wait_probes(&c, Duration::from_secs(60), |s| {
        listed(s, "conflicts").is_empty() && condition(s, "AddressConflict").0 == "False"
    });
    assert!(
        listed(&status, "free").contains(&"192.0.2.40".to_string()),
        "{status:#}"
    );
}
