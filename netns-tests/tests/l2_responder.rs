//! `herald announce l2` against real clients (arping, ndisc6, the kernel's NUD, tcpdump) in network namespaces.
//!
//! Topology (`herald_netns_tests::l2::L2Lab`): a switch namespace with bridge br0; a client (198.51.100.1/24,
//! 2001:db8::1/64) and a node without addresses, each with eth0 on the bridge. Herald runs in the node.

use std::time::Duration;

use herald_netns_tests::l2::{L2Lab, arping, kernel_supports, maddr, ndisc6, tcpdump, until_answered};
use herald_netns_tests::{require, wait_for};

const TOOLS: &[&str] = &["ip", "arping", "ndisc6", "tcpdump", "ping"];
const STARTUP: Duration = Duration::from_secs(15);

#[test]
fn l2_answers_arp_and_ndp_for_announced_addresses_only() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-answers").unwrap();
    let herald = l2.start_herald("eth0", &["198.51.100.10", "2001:db8::10"]).unwrap();
    assert!(
        l2.wait_log(herald, "probe found no other owner", STARTUP),
        "herald never finished probing"
    );

    let (lab, client) = (&l2.lab, &l2.client);
    let macs = until_answered(10, || arping(lab, client, "eth0", "198.51.100.10", 1)).unwrap();
    assert_eq!(macs, vec![l2.node_mac.clone()], "arping 198.51.100.10");
    let macs = until_answered(10, || ndisc6(lab, client, "eth0", "2001:db8::10")).unwrap();
    assert_eq!(macs, vec![l2.node_mac.clone()], "ndisc6 2001:db8::10");

    assert!(
        arping(lab, client, "eth0", "198.51.100.99", 2).unwrap().is_empty(),
        "answered an unannounced IPv4"
    );
    assert!(
        ndisc6(lab, client, "eth0", "2001:db8::99").unwrap().is_empty(),
        "answered an unannounced IPv6"
    );
    assert!(
        l2.lab.proc(herald).exited().is_none(),
        "herald exited: {}",
        l2.lab.proc(herald).stderr()
    );
}

/// RFC 4861 §7.3.3: once an entry is STALE the kernel re-checks it with a *unicast* NS to the cached MAC; it must be
/// answered (MetalLB #2920) or the client drops the neighbor.
#[test]
fn l2_answers_unicast_nud_probes() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-nud").unwrap();
    let herald = l2.start_herald("eth0", &["--no-probe", "2001:db8::10"]).unwrap();
    assert!(l2.wait_log(herald, "announcing", STARTUP));
    let client = l2.client.clone();
    l2.lab
        .sh(&client, "sysctl -qw net.ipv6.neigh.eth0.delay_first_probe_time=1")
        .unwrap();
    let dump = tcpdump(&mut l2.lab, &client, "eth0", "icmp6 and ip6[40] == 135").unwrap();

    let lab = &l2.lab;
    let stale = format!(
        "ip -6 neigh replace 2001:db8::10 lladdr {} dev eth0 nud stale",
        l2.node_mac
    );
    lab.sh(&client, &stale).unwrap();
    // Traffic to a STALE entry moves it to DELAY, then PROBE: unicast solicitations to the cached MAC.
    let _ = lab
        .exec(&client, &["ping", "-6", "-c", "1", "-W", "1", "2001:db8::10"])
        .unwrap();
    let reachable = wait_for(Duration::from_secs(15), || {
        let out = lab
            .ip(&client, &["-6", "neigh", "show", "2001:db8::10", "dev", "eth0"])
            .ok()?;
        out.contains("REACHABLE").then_some(out)
    });
    // The kernel's probe: from its link-local address to the target itself, unicast to the cached MAC.
    let unicast_ns = format!("> {}, ethertype IPv6 (0x86dd), length 86: fe80::", l2.node_mac);
    let seen = wait_for(Duration::from_secs(5), || {
        let text = l2.lab.proc(dump).stdout();
        text.lines()
            .any(|l| l.contains(&unicast_ns) && l.contains("> 2001:db8::10: ICMP6, neighbor solicitation"))
            .then_some(())
    });
    let text = l2.lab.proc(dump).stdout();
    assert!(seen.is_some(), "no unicast NS seen:\n{text}");
    assert!(
        reachable.is_some(),
        "the unicast NUD probe was not answered; tcpdump saw:\n{text}"
    );
}

#[test]
fn l2_second_interface_of_the_node_does_not_answer() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-second-if").unwrap();
    let (switch, node) = (l2.switch.clone(), l2.node.clone());
    l2.lab.attach(&switch, "br0", "p-node1", &node, "eth1").unwrap();
    let eth1_mac = l2.lab.mac(&node, "eth1").unwrap();
    let herald = l2.start_herald("eth0", &["198.51.100.10", "2001:db8::10"]).unwrap();
    assert!(l2.wait_log(herald, "probe found no other owner", STARTUP));

    let (lab, client) = (&l2.lab, &l2.client);
    let macs = until_answered(10, || arping(lab, client, "eth0", "198.51.100.10", 3)).unwrap();
    assert_eq!(
        macs,
        vec![l2.node_mac.clone()],
        "only eth0 answers (eth1 is {eth1_mac})"
    );
    let macs = until_answered(10, || ndisc6(lab, client, "eth0", "2001:db8::10")).unwrap();
    assert_eq!(
        macs,
        vec![l2.node_mac.clone()],
        "only eth0 answers (eth1 is {eth1_mac})"
    );
}

#[test]
fn l2_sends_gratuitous_burst_and_periodic_refresh() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-garp").unwrap();
    let client = l2.client.clone();
    let dump = tcpdump(&mut l2.lab, &client, "eth0", "arp or (icmp6 and ip6[40] == 136)").unwrap();
    let herald = l2
        .start_herald(
            "eth0",
            &[
                "--no-probe",
                "--refresh-interval",
                "1s",
                "198.51.100.10",
                "2001:db8::10",
            ],
        )
        .unwrap();
    assert!(l2.wait_log(herald, "announcing", STARTUP));

    let garp_requests = |text: &str| {
        text.lines()
            .filter(|l| l.contains("Request who-has 198.51.100.10 tell 198.51.100.10"))
            .count()
    };
    let garp_replies = |text: &str| text.lines().filter(|l| l.contains("Reply 198.51.100.10 is-at")).count();
    let unsolicited_na = |text: &str| {
        text.lines()
            .filter(|l| l.contains("> ff02::1: ICMP6") && l.contains("neighbor advertisement, tgt is 2001:db8::10"))
            .count()
    };
    // The burst: 5 rounds over 2 s.
    let burst = wait_for(Duration::from_secs(10), || {
        let text = l2.lab.proc(dump).stdout();
        (garp_requests(&text) >= 5 && garp_replies(&text) >= 5 && unsolicited_na(&text) >= 5).then_some(text)
    });
    assert!(
        burst.is_some(),
        "no gratuitous burst seen:\n{}",
        l2.lab.proc(dump).stdout()
    );
    let after_burst = l2.lab.proc(dump).stdout();
    let (req0, na0) = (garp_requests(&after_burst), unsolicited_na(&after_burst));
    // Then the refresh, every second: at least two more rounds within a generous window.
    let refreshed = wait_for(Duration::from_secs(15), || {
        let text = l2.lab.proc(dump).stdout();
        (garp_requests(&text) >= req0 + 2 && unsolicited_na(&text) >= na0 + 2).then_some(())
    });
    assert!(
        refreshed.is_some(),
        "no periodic refresh after the burst:\n{}",
        l2.lab.proc(dump).stdout()
    );
    let text = l2.lab.proc(dump).stdout();
    assert!(
        text.contains(&format!("{} > ff:ff:ff:ff:ff:ff", l2.node_mac)),
        "gratuitous ARP is broadcast from the node"
    );
    assert!(
        text.contains(&format!("{} > 33:33:00:00:00:01", l2.node_mac)),
        "unsolicited NA goes to all-nodes"
    );
}

#[test]
fn l2_sigterm_withdraws_and_leaves_groups() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-sigterm").unwrap();
    let herald = l2.start_herald("eth0", &["198.51.100.10", "2001:db8::10"]).unwrap();
    assert!(l2.wait_log(herald, "probe found no other owner", STARTUP));
    let node = l2.node.clone();
    let groups = maddr(&l2.lab, &node, "eth0").unwrap();
    assert!(
        groups.contains("33:33:ff:00:00:10"),
        "link-layer solicited-node group not joined:\n{groups}"
    );
    assert!(
        groups.contains("ff02::1:ff00:10"),
        "IPv6 solicited-node group not joined (no MLD):\n{groups}"
    );
    let (lab, client) = (&l2.lab, &l2.client);
    assert_eq!(
        until_answered(10, || arping(lab, client, "eth0", "198.51.100.10", 1)).unwrap(),
        vec![l2.node_mac.clone()]
    );

    l2.lab.proc(herald).signal("TERM").unwrap();
    let code = l2.lab.proc(herald).wait_exit(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "herald did not exit cleanly: {}",
        l2.lab.proc(herald).stderr()
    );
    let groups = maddr(&l2.lab, &node, "eth0").unwrap();
    assert!(
        !groups.contains("33:33:ff:00:00:10") && !groups.contains("ff02::1:ff00:10"),
        "groups left:\n{groups}"
    );
    let (lab, client) = (&l2.lab, &l2.client);
    assert!(
        arping(lab, client, "eth0", "198.51.100.10", 2).unwrap().is_empty(),
        "still answering ARP"
    );
    assert!(
        ndisc6(lab, client, "eth0", "2001:db8::10").unwrap().is_empty(),
        "still answering NDP"
    );
}

#[test]
fn l2_refuses_addresses_used_by_another_host() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-conflict").unwrap();
    let other = l2.lab.netns("other");
    let switch = l2.switch.clone();
    l2.lab.attach(&switch, "br0", "p-other", &other, "eth0").unwrap();
    l2.lab.addr(&other, "eth0", "198.51.100.20/24").unwrap();
    l2.lab.addr(&other, "eth0", "2001:db8::20/64").unwrap();
    let other_mac = l2.lab.mac(&other, "eth0").unwrap();

    let herald = l2.start_herald("eth0", &["198.51.100.20", "2001:db8::20"]).unwrap();
    let code = l2.lab.proc(herald).wait_exit(Duration::from_secs(20));
    let log = l2.lab.proc(herald).stderr();
    assert!(
        matches!(code, Some(c) if c != 0),
        "herald must fail when every address is taken; exit {code:?}:\n{log}"
    );
    assert!(
        log.contains("address conflict") && log.contains(&other_mac),
        "no clear conflict message:\n{log}"
    );
    assert!(log.contains("198.51.100.20") && log.contains("2001:db8::20"), "{log}");
    // The real owner still owns them.
    let (lab, client) = (&l2.lab, &l2.client);
    assert_eq!(
        arping(lab, client, "eth0", "198.51.100.20", 2).unwrap(),
        vec![other_mac.clone()]
    );
    assert_eq!(ndisc6(lab, client, "eth0", "2001:db8::20").unwrap(), vec![other_mac]);
}

#[test]
fn l2_works_on_a_vlan_interface() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-vlan").unwrap();
    let (client, node) = (l2.client.clone(), l2.node.clone());
    if !kernel_supports(&l2.lab, &node, "vlan", Some("eth0")) {
        return;
    }
    for ns in [&client, &node] {
        l2.lab
            .ip(
                ns,
                &[
                    "link", "add", "link", "eth0", "name", "eth0.100", "type", "vlan", "id", "100",
                ],
            )
            .unwrap();
        l2.lab.ip(ns, &["link", "set", "eth0.100", "up"]).unwrap();
    }
    l2.lab.addr(&client, "eth0.100", "203.0.113.1/24").unwrap();
    l2.lab.addr(&client, "eth0.100", "2001:db8:100::1/64").unwrap();
    l2.lab.addr(&client, "eth0", "203.0.113.2/24").unwrap();
    let vlan_mac = l2.lab.mac(&node, "eth0.100").unwrap();
    let herald = l2
        .start_herald("eth0.100", &["203.0.113.10", "2001:db8:100::10"])
        .unwrap();
    assert!(
        l2.wait_log(herald, "probe found no other owner", STARTUP),
        "{}",
        l2.lab.proc(herald).stderr()
    );

    let lab = &l2.lab;
    let macs = until_answered(10, || arping(lab, &client, "eth0.100", "203.0.113.10", 1)).unwrap();
    assert_eq!(macs, vec![vlan_mac.clone()], "ARP on VLAN 100");
    let macs = until_answered(10, || ndisc6(lab, &client, "eth0.100", "2001:db8:100::10")).unwrap();
    assert_eq!(macs, vec![vlan_mac], "NDP on VLAN 100");
    // Untagged, the address is not answered: Herald listens on VLAN 100 only.
    assert!(
        arping(lab, &client, "eth0", "203.0.113.10", 2).unwrap().is_empty(),
        "answered outside the VLAN"
    );
}

#[test]
fn l2_refuses_unusable_interfaces_with_clear_errors() {
    if !require(&["ip"]) {
        return;
    }
    let mut l2 = L2Lab::new("l2-bad-if").unwrap();
    let node = l2.node.clone();
    // An Ethernet interface left down: one end of a veth pair.
    l2.lab
        .ip(
            &node,
            &["link", "add", "down0", "type", "veth", "peer", "name", "down1"],
        )
        .unwrap();
    let mut cases = vec![
        ("lo", "not an Ethernet interface"),
        ("nosuch0", "does not exist"),
        ("down0", "is down"),
    ];
    if kernel_supports(&l2.lab, &node, "bond", None) {
        l2.lab.ip(&node, &["link", "add", "bond0", "type", "bond"]).unwrap();
        l2.lab
            .ip(
                &node,
                &["link", "add", "slave0", "type", "veth", "peer", "name", "slave1"],
            )
            .unwrap();
        l2.lab.ip(&node, &["link", "set", "slave0", "master", "bond0"]).unwrap();
        l2.lab.ip(&node, &["link", "set", "bond0", "up"]).unwrap();
        l2.lab.ip(&node, &["link", "set", "slave1", "up"]).unwrap();
        cases.push(("slave0", "bond slave"));
    }
    for (iface, expect) in cases {
        let herald = l2.start_herald(iface, &["198.51.100.10"]).unwrap();
        let code = l2.lab.proc(herald).wait_exit(Duration::from_secs(10));
        let log = l2.lab.proc(herald).stderr();
        assert!(matches!(code, Some(c) if c != 0), "{iface}: exit {code:?}\n{log}");
        assert!(log.contains(expect), "{iface}: expected `{expect}` in:\n{log}");
        assert!(!log.contains("panicked"), "{iface}: {log}");
    }
    let herald = l2.start_herald("eth0", &["300.1.2.3"]).unwrap();
    let code = l2.lab.proc(herald).wait_exit(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(2),
        "clap rejects a bad address: {}",
        l2.lab.proc(herald).stderr()
    );
    let herald = l2.start_herald("eth0", &["224.0.0.5"]).unwrap();
    let code = l2.lab.proc(herald).wait_exit(Duration::from_secs(10));
    assert!(matches!(code, Some(c) if c != 0));
    assert!(l2.lab.proc(herald).stderr().contains("multicast"));
}

/// On a bridge interface (the node's eth0 enslaved to br-node), Herald answers with the bridge's MAC; the bridge is
/// promiscuous, so this also checks that frames unicast to other hosts are not answered.
#[test]
fn l2_works_on_a_bridge_interface() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-bridge").unwrap();
    let node = l2.node.clone();
    l2.lab.bridge(&node, "br-node").unwrap();
    l2.lab.ip(&node, &["link", "set", "eth0", "master", "br-node"]).unwrap();
    let bridge_mac = l2.lab.mac(&node, "br-node").unwrap();
    let herald = l2.start_herald("br-node", &["198.51.100.10", "2001:db8::10"]).unwrap();
    assert!(
        l2.wait_log(herald, "probe found no other owner", STARTUP),
        "{}",
        l2.lab.proc(herald).stderr()
    );

    let (lab, client) = (&l2.lab, &l2.client);
    let macs = until_answered(10, || arping(lab, client, "eth0", "198.51.100.10", 1)).unwrap();
    assert_eq!(macs, vec![bridge_mac.clone()], "ARP on a bridge");
    let macs = until_answered(10, || ndisc6(lab, client, "eth0", "2001:db8::10")).unwrap();
    assert_eq!(macs, vec![bridge_mac], "NDP on a bridge");
}
