//! `herald announce l2` against crafted frames: what arrives tagged for another VLAN is neither answered nor taken for
//! a conflict, while the same frame untagged is (so each check can fail).
//!
//! This kernel has no 8021q module, so no VLAN interface can send the frames: a raw AF_PACKET socket (python3) in the
//! client namespace writes them whole, tag included. On the way to the node the kernel moves the tag into packet
//! metadata, as it does for every received frame, so the node's packet socket sees an untagged-looking frame: exactly
//! the case Herald's filter must catch. Topology: `herald_netns_tests::l2::L2Lab` (client and node on bridge br0 in
//! a switch namespace; Herald in the node).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use herald_netns_tests::l2::{L2Lab, arping, ndisc6, until_answered};
use herald_netns_tests::{require, wait_for};

const TOOLS: &[&str] = &["ip", "arping", "ndisc6", "python3"];
const STARTUP: Duration = Duration::from_secs(15);

const IP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// A host that claims the addresses (RFC 7042 §2.1.1 documentation MAC).
const OTHER: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x53, 0x01];

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// Sends the frames given in hex on an interface, every `every` seconds (once if 0) for `seconds`, and prints, one
/// hex line each, the frames received meanwhile (not its own).
const RAW_HOST: &str = r#"
import select, socket, sys, time
iface, seconds, every = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
frames = [bytes.fromhex(h) for h in sys.argv[4:]]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 3))  # ETH_P_ALL
end = time.monotonic() + seconds
due = time.monotonic()
while True:
    now = time.monotonic()
    if now >= end:
        break
    if due is not None and now >= due:
        for f in frames:
            s.send(f)
        due = now + every if every > 0 else None
    wait = min(end, due if due is not None else end) - now
    if select.select([s], [], [], max(0.0, wait))[0]:
        data, addr = s.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            print(data.hex(), flush=True)
"#;

/// How a crafted frame is tagged: `(TPID, TCI)` from the outside in.
type Tags = &'static [(u16, u16)];

const UNTAGGED: Tags = &[];
/// The cases that are another network: 802.1Q, 802.1ad, QinQ, and a VLAN tag inside a priority tag.
const OTHER_VLANS: [(&str, Tags); 5] = [
    ("802.1Q VLAN 100", &[(ETH_P_8021Q, 100)]),
    ("802.1Q VLAN 100, priority 5", &[(ETH_P_8021Q, 0xa064)]),
    ("802.1ad VLAN 100", &[(ETH_P_8021AD, 100)]),
    ("QinQ 100/200", &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)]),
    (
        "VLAN 200 inside a priority tag",
        &[(ETH_P_8021Q, 0), (ETH_P_8021Q, 200)],
    ),
];
/// IEEE 802.1Q priority tag (VLAN ID 0): the untagged network, as the kernel treats it.
const PRIORITY_TAG: Tags = &[(ETH_P_8021Q, 0xa000)];

fn ethernet(destination: [u8; 6], source: [u8; 6], tags: Tags, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = [destination, source].concat();
    for (tpid, tci) in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

/// An Ethernet/IPv4 ARP message (RFC 826), target hardware address zero.
fn arp(operation: u16, sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4];
    arp.extend_from_slice(&operation.to_be_bytes());
    arp.extend_from_slice(&sender_mac);
    arp.extend_from_slice(&sender_ip.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target_ip.octets());
    arp
}

/// An IPv6 packet (hop limit 255) carrying the ICMPv6 message `icmp`, whose checksum is filled in.
fn icmpv6(source: Ipv6Addr, destination: Ipv6Addr, mut icmp: Vec<u8>) -> Vec<u8> {
    let len = u16::try_from(icmp.len()).unwrap();
    let mut pseudo = [source.octets(), destination.octets()].concat();
    pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    if pseudo.len() % 2 == 1 {
        pseudo.push(0);
    }
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[58, 255]);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    packet.extend_from_slice(&icmp);
    packet
}

/// Type (135 NS, 136 NA), flags, target, and a link-layer address option of `option_type` for `mac` if given.
fn ndp(kind: u8, flags: u8, target: Ipv6Addr, option: Option<(u8, [u8; 6])>) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0, flags, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    if let Some((option_type, mac)) = option {
        icmp.extend_from_slice(&[option_type, 1]);
        icmp.extend_from_slice(&mac);
    }
    icmp
}

fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    bytes.try_into().unwrap()
}

/// An ARP request for [`IP4`] from `requester` (so its answer can be told apart), broadcast.
fn arp_request(client: [u8; 6], requester: Ipv4Addr, tags: Tags) -> Vec<u8> {
    ethernet([0xff; 6], client, tags, ETH_P_ARP, &arp(1, client, requester, IP4))
}

/// A multicast NS for [`IP6`] from `requester`, with its source link-layer address.
fn neighbor_solicitation(client: [u8; 6], requester: Ipv6Addr, tags: Tags) -> Vec<u8> {
    let group = solicited_node(IP6);
    let ns = icmpv6(requester, group, ndp(135, 0, IP6, Some((1, client))));
    ethernet(multicast_mac(group), client, tags, ETH_P_IPV6, &ns)
}

/// Runs the raw host in the client namespace for `seconds`, sending `frames` once, or every `every` seconds;
/// returns what it received.
fn exchange(l2: &L2Lab, frames: &[Vec<u8>], seconds: f64, every: f64) -> Vec<Vec<u8>> {
    let mut cmd = vec![
        "python3".to_string(),
        "-c".to_string(),
        RAW_HOST.to_string(),
        "eth0".to_string(),
        seconds.to_string(),
        every.to_string(),
    ];
    cmd.extend(frames.iter().map(|f| hex(f)));
    let out = l2.lab.exec(&l2.client, &cmd).unwrap();
    assert!(
        out.status.success(),
        "raw host failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            (0..l.len() / 2)
                .map(|i| u8::from_str_radix(&l[2 * i..2 * i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

/// The IPv4 addresses whose ARP requests the node answered (its unicast replies: target IP).
fn arp_answered(frames: &[Vec<u8>], node: [u8; 6]) -> Vec<Ipv4Addr> {
    frames
        .iter()
        .filter(|f| f.len() >= 42 && f[6..12] == node && f[0] & 1 == 0 && f[12..14] == [0x08, 0x06] && f[21] == 2)
        .map(|f| Ipv4Addr::new(f[38], f[39], f[40], f[41]))
        .collect()
}

/// The IPv6 addresses whose solicitations the node answered (its solicited NAs: IPv6 destination).
fn ns_answered(frames: &[Vec<u8>], node: [u8; 6]) -> Vec<Ipv6Addr> {
    frames
        .iter()
        .filter(|f| f.len() >= 78 && f[6..12] == node && f[12..14] == [0x86, 0xdd] && f[54] == 136)
        .filter(|f| f[58] & 0x40 != 0) // Solicited
        .map(|f| Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap()))
        .collect()
}

/// Herald, without probing, answering [`IP4`] and [`IP6`] in a fresh lab; `None` if the test must skip.
fn announcing(test: &str, args: &[&str]) -> Option<(L2Lab, usize)> {
    if !require(TOOLS) {
        return None;
    }
    let mut l2 = L2Lab::new(test).unwrap();
    let mut all = args.to_vec();
    all.extend(["198.51.100.10", "2001:db8::10"]);
    let herald = l2.start_herald("eth0", &all).unwrap();
    assert!(l2.wait_log(herald, "announcing", STARTUP), "herald did not start");
    Some((l2, herald))
}

/// A request that arrives tagged for another VLAN is not for the untagged interface: no answer (the node used to
/// answer it untagged, into the wrong network). The same request untagged, or with a priority tag only, is
/// answered, which proves the frames reach Herald.
#[test]
fn l2_does_not_answer_requests_from_other_vlans() {
    let Some((mut l2, herald)) = announcing("l2-vlan-requests", &["--no-probe", "--refresh-interval", "0"]) else {
        return;
    };
    let node = parse_mac(&l2.node_mac);
    let client = parse_mac(&l2.lab.mac(&l2.client, "eth0").unwrap());
    // Each case asks from its own address, so each answer says which request it answers.
    let mut cases: Vec<(&str, Tags, bool)> = vec![("untagged", UNTAGGED, true), ("priority tag", PRIORITY_TAG, true)];
    cases.extend(OTHER_VLANS.iter().map(|(name, tags)| (*name, *tags, false)));
    let v4 = |n: usize| Ipv4Addr::new(198, 51, 100, 100 + n as u8);
    let v6 = |n: usize| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100 + n as u16);
    let mut frames = Vec::new();
    for (n, (_, tags, _)) in cases.iter().enumerate() {
        frames.push(arp_request(client, v4(n), tags));
        frames.push(neighbor_solicitation(client, v6(n), tags));
    }
    let seen = exchange(&l2, &frames, 2.0, 0.0);
    let (arp, ns) = (arp_answered(&seen, node), ns_answered(&seen, node));
    for (n, (name, _, answered)) in cases.iter().enumerate() {
        assert_eq!(arp.contains(&v4(n)), *answered, "ARP request, {name}: answered {arp:?}");
        assert_eq!(ns.contains(&v6(n)), *answered, "NS, {name}: answered {ns:?}");
    }
    let log = l2.lab.proc(herald).stderr();
    assert!(!log.contains("panicked") && !log.contains("address conflict"), "{log}");
}

/// A host of another VLAN using the address is no conflict: it neither refuses the address while Herald probes
/// (gratuitous ARP, ARP probe, NA, DAD probe, all tagged, sent throughout the probe) nor counts as a claim once it
/// is announced; the address keeps being answered. The same claims untagged are conflicts.
#[test]
fn l2_ignores_claims_from_other_vlans() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-vlan-claims").unwrap();
    let claims = |tags: Tags| {
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let group = solicited_node(IP6);
        vec![
            ethernet([0xff; 6], OTHER, tags, ETH_P_ARP, &arp(1, OTHER, IP4, IP4)), // gratuitous ARP
            ethernet([0xff; 6], OTHER, tags, ETH_P_ARP, &arp(2, OTHER, IP4, IP4)), // its reply form
            ethernet(
                [0xff; 6],
                OTHER,
                tags,
                ETH_P_ARP,
                &arp(1, OTHER, Ipv4Addr::UNSPECIFIED, IP4),
            ), // probe
            ethernet(
                multicast_mac(all_nodes),
                OTHER,
                tags,
                ETH_P_IPV6,
                &icmpv6(IP6, all_nodes, ndp(136, 0x20, IP6, Some((2, OTHER)))), // unsolicited NA, O=1
            ),
            ethernet(
                multicast_mac(group),
                OTHER,
                tags,
                ETH_P_IPV6,
                &icmpv6(Ipv6Addr::UNSPECIFIED, group, ndp(135, 0, IP6, None)), // DAD probe
            ),
        ]
    };
    let tagged: Vec<String> = OTHER_VLANS
        .iter()
        .flat_map(|(_, tags)| claims(tags))
        .map(|f| hex(&f))
        .collect();
    // The other VLAN's host claims the addresses every 100 ms for 8 s, from before Herald starts probing (3 probes
    // 500 ms apart, then 500 ms) until after it is done.
    let mut cmd = vec!["python3", "-c", RAW_HOST, "eth0", "8", "0.1"];
    cmd.extend(tagged.iter().map(String::as_str));
    let client = l2.client.clone();
    let vlan_host = l2.lab.spawn(&client, "vlan-host", &cmd).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let herald = l2.start_herald("eth0", &["198.51.100.10", "2001:db8::10"]).unwrap();
    let probed = wait_for(STARTUP, || {
        let log = l2.lab.proc(herald).stderr();
        (log.matches("probe found no other owner").count() == 2).then_some(())
    });
    let log = l2.lab.proc(herald).stderr();
    assert!(probed.is_some(), "the probe did not pass:\n{log}");
    assert!(
        l2.lab.proc(vlan_host).exited().is_none(),
        "the tagged claims stopped before the probe ended; the test proves nothing"
    );
    assert!(l2.lab.proc(vlan_host).wait_exit(Duration::from_secs(10)).is_some());
    let log = l2.lab.proc(herald).stderr();
    assert!(
        !log.contains("address conflict"),
        "a host of another VLAN was a conflict:\n{log}"
    );

    // Still the node's addresses.
    let (lab, client) = (&l2.lab, &l2.client);
    let macs = until_answered(10, || arping(lab, client, "eth0", "198.51.100.10", 1)).unwrap();
    assert_eq!(macs, vec![l2.node_mac.clone()]);
    let macs = until_answered(10, || ndisc6(lab, client, "eth0", "2001:db8::10")).unwrap();
    assert_eq!(macs, vec![l2.node_mac.clone()]);

    // The same claims untagged are conflicts: the check above can fail.
    exchange(&l2, &claims(UNTAGGED), 0.5, 0.0);
    let conflicts = wait_for(Duration::from_secs(5), || {
        let log = l2.lab.proc(herald).stderr();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("another host claims an announced address"))
            .map(str::to_string)
            .collect();
        (lines.iter().any(|l| l.contains("198.51.100.10")) && lines.iter().any(|l| l.contains("2001:db8::10")))
            .then_some(lines)
    });
    assert!(
        conflicts.is_some(),
        "untagged claims were not seen as conflicts:\n{}",
        l2.lab.proc(herald).stderr()
    );
}

/// The announcements `node` broadcast for [`IP4`] (ARP request, sender = target = the address, target MAC zero)
/// and [`IP6`] (unsolicited NA: S=0, O=1).
fn announcements(frames: &[Vec<u8>], node: [u8; 6]) -> (usize, usize) {
    let from_node = |f: &&Vec<u8>| f.len() >= 42 && f[6..12] == node && f[..6] == [0xff; 6];
    let arp = frames
        .iter()
        .filter(from_node)
        .filter(|f| f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] && f[28..32] == IP4.octets())
        .filter(|f| f[32..38] == [0; 6] && f[38..42] == IP4.octets())
        .count();
    let na = frames
        .iter()
        .filter(|f| f.len() >= 78 && f[6..12] == node && f[12..14] == [0x86, 0xdd] && f[54] == 136)
        .filter(|f| f[58] & 0x60 == 0x20 && f[62..78] == IP6.octets())
        .count();
    (arp, na)
}

/// RFC 5227 §2.4 (c): `herald announce l2` keeps its addresses whatever happens, so when another host claims one
/// it broadcasts one ARP Announcement (one unsolicited NA for IPv6) to pull caches back, and no second one within
/// DEFEND_INTERVAL (10 s) however often the other host insists. The same claims tagged for another VLAN are not
/// defended against.
#[test]
fn l2_announce_defends_its_addresses_once_per_defend_interval() {
    let Some((mut l2, herald)) = announcing("l2-defend", &["--no-probe", "--refresh-interval", "0"]) else {
        return;
    };
    let node = parse_mac(&l2.node_mac);
    // Let the takeover burst (5 rounds over 2 s) end: what the node announces afterwards is a defence.
    std::thread::sleep(Duration::from_secs(3));
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let claims = |tags: Tags| {
        vec![
            ethernet([0xff; 6], OTHER, tags, ETH_P_ARP, &arp(1, OTHER, IP4, IP4)),
            ethernet(
                multicast_mac(all_nodes),
                OTHER,
                tags,
                ETH_P_IPV6,
                &icmpv6(IP6, all_nodes, ndp(136, 0x20, IP6, Some((2, OTHER)))),
            ),
        ]
    };
    // Tagged for another VLAN: nothing to defend.
    let seen = exchange(&l2, &claims(&[(ETH_P_8021Q, 100)]), 1.0, 0.0);
    assert_eq!(announcements(&seen, node), (0, 0), "defended against another VLAN");
    // Untagged, every 200 ms for 3 s: one defence each, at once.
    let seen = exchange(&l2, &claims(UNTAGGED), 3.0, 0.2);
    assert_eq!(
        announcements(&seen, node),
        (1, 1),
        "one defence per address within DEFEND_INTERVAL"
    );
    // Still answering for both.
    let (lab, client) = (&l2.lab, &l2.client);
    assert_eq!(
        arping(lab, client, "eth0", "198.51.100.10", 1).unwrap(),
        vec![l2.node_mac.clone()]
    );
    let log = l2.lab.proc(herald).stderr();
    assert!(log.contains("another host claims an announced address"), "{log}");
}

/// Another host's probes for [`IP4`] and [`IP6`] (or for `ip4`/`ip6`): an RFC 5227 ARP probe and an RFC 4862 DAD
/// solicitation, untagged.
fn probes_for(ip4: Ipv4Addr, ip6: Ipv6Addr) -> Vec<String> {
    let group = solicited_node(ip6);
    [
        ethernet(
            [0xff; 6],
            OTHER,
            UNTAGGED,
            ETH_P_ARP,
            &arp(1, OTHER, Ipv4Addr::UNSPECIFIED, ip4),
        ),
        ethernet(
            multicast_mac(group),
            OTHER,
            UNTAGGED,
            ETH_P_IPV6,
            &icmpv6(Ipv6Addr::UNSPECIFIED, group, ndp(135, 0, ip6, None)),
        ),
    ]
    .iter()
    .map(|f| hex(f))
    .collect()
}

/// A host probing an address while Herald probes it too claims nothing: Herald starts its probe over and takes the
/// address after a round without one (Herald's own address checks meet the probe of a Service that was just given
/// the address checked; RFC 5227's "neither may have it" left such a Service IP held and answered by nobody). A host
/// that keeps probing gets the address refused, as the RFC says.
#[test]
fn l2_probing_starts_over_when_another_host_probes_the_same_address_and_refuses_one_that_never_stops() {
    if !require(TOOLS) {
        return;
    }
    let mut l2 = L2Lab::new("l2-probe-race").unwrap();
    let (kept4, kept6) = (
        Ipv4Addr::new(198, 51, 100, 11),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11),
    );
    let client = l2.client.clone();
    // Like one address check: a probe of each family every second, four times (at most PROBE_RESTARTS).
    let once = probes_for(IP4, IP6);
    let mut cmd = vec!["python3", "-c", RAW_HOST, "eth0", "3.5", "1.0"];
    cmd.extend(once.iter().map(String::as_str));
    let checker = l2.lab.spawn(&client, "checker", &cmd).unwrap();
    // A host that probes every 300 ms for 5 s, all through Herald's probes.
    let always = probes_for(kept4, kept6);
    let mut cmd = vec!["python3", "-c", RAW_HOST, "eth0", "5", "0.3"];
    cmd.extend(always.iter().map(String::as_str));
    let stubborn = l2.lab.spawn(&client, "stubborn", &cmd).unwrap();
    let herald = l2
        .start_herald(
            "eth0",
            &["198.51.100.10", "2001:db8::10", "198.51.100.11", "2001:db8::11"],
        )
        .unwrap();
    let settled = wait_for(STARTUP, || {
        let log = l2.lab.proc(herald).stderr();
        (log.matches("probe found no other owner").count() == 2 && log.matches("it is NOT announced").count() == 2)
            .then_some(())
    });
    let log = l2.lab.proc(herald).stderr();
    assert!(settled.is_some(), "two addresses announced, two refused:\n{log}");
    assert!(
        l2.lab.proc(stubborn).exited().is_none(),
        "the stubborn host stopped before the probes ended; the test proves nothing"
    );
    let lines = |needle: &str, ip: &str| {
        log.lines()
            .filter(|l| l.contains(needle) && l.split_whitespace().any(|w| w == format!("ip={ip}")))
            .count()
    };
    for ip in ["198.51.100.10", "2001:db8::10"] {
        assert!(
            lines("probing again", ip) >= 1,
            "{ip}: the checker's probes were not seen:\n{log}"
        );
        assert_eq!(lines("probe found no other owner", ip), 1, "{ip}:\n{log}");
    }
    for ip in ["198.51.100.11", "2001:db8::11"] {
        assert_eq!(lines("probing again", ip), 4, "{ip}: PROBE_RESTARTS restarts:\n{log}");
        assert_eq!(lines("it is NOT announced", ip), 1, "{ip}:\n{log}");
    }
    assert!(l2.lab.proc(checker).wait_exit(Duration::from_secs(10)).is_some());
    assert!(l2.lab.proc(stubborn).wait_exit(Duration::from_secs(10)).is_some());

    // Answered by the node; the refused addresses by nobody.
    let (lab, client) = (&l2.lab, &l2.client);
    let macs = until_answered(10, || arping(lab, client, "eth0", "198.51.100.10", 1)).unwrap();
    assert_eq!(macs, vec![l2.node_mac.clone()]);
    let macs = until_answered(10, || ndisc6(lab, client, "eth0", "2001:db8::10")).unwrap();
    assert_eq!(macs, vec![l2.node_mac.clone()]);
    assert!(arping(lab, client, "eth0", "198.51.100.11", 2).unwrap().is_empty());
    assert!(ndisc6(lab, client, "eth0", "2001:db8::11").unwrap().is_empty());
}
