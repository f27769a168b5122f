//! The responder's rules, checked with byte-exact frames and explicit time.

use super::*;
use crate::packet::ArpOperation;
use crate::packet::golden::{ARP_REPLY, ARP_REQUEST, NA, NS};

const NODE: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const OTHER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x03]);

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}
fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}
fn v6a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn responder() -> Responder {
    Responder::new(
        NODE,
        ProbeConfig::default(),
        AnnounceConfig::default(),
        Arc::new(Counters::default()),
    )
}

/// A responder already announcing `ips` (burst frames discarded).
fn announcing(ips: &[IpAddr], now: Instant) -> Responder {
    let mut r = responder();
    for ip in ips {
        r.announce(*ip, AnnounceMode::Immediately, now);
    }
    r
}

fn arp(op: ArpOperation, sender_mac: MacAddr, sender_ip: &str, target_ip: &str, eth_dst: MacAddr) -> Vec<u8> {
    ArpMessage {
        operation: op,
        sender_mac,
        sender_ip: sender_ip.parse().unwrap(),
        target_mac: MacAddr::ZERO,
        target_ip: target_ip.parse().unwrap(),
    }
    .to_frame(sender_mac, eth_dst)
}

/// The owner of `ip` answers our probe: an ARP reply unicast to us, sender = the address.
fn probe_answer(ip: &str) -> Vec<u8> {
    ArpMessage {
        operation: ArpOperation::Reply,
        sender_mac: OTHER,
        sender_ip: ip.parse().unwrap(),
        target_mac: NODE,
        target_ip: Ipv4Addr::UNSPECIFIED,
    }
    .to_frame(OTHER, NODE)
}

fn decode_arp(frame: &[u8]) -> ArpMessage {
    match decode(frame) {
        Ok(Packet::Arp(_, arp)) => arp,
        other => panic!("not ARP: {other:?}"),
    }
}

fn decode_na(frame: &[u8]) -> (EthernetHeader, NeighborAdvertisement) {
    match decode(frame) {
        Ok(Packet::NeighborAdvertisement(eth, na)) => (eth, na),
        other => panic!("not NA: {other:?}"),
    }
}

#[test]
fn answers_arp_for_announced_address_like_the_kernel() {
    let now = Instant::now();
    let mut r = announcing(&[v4("198.51.100.10")], now);
    let out = r.handle_frame(&ARP_REQUEST, now);
    assert_eq!(out.frames, vec![ARP_REPLY.to_vec()]);
    assert!(out.events.is_empty());
    let c = r.counters.snapshot();
    assert_eq!((c.requests_seen, c.requests_answered), (1, 1));
}

#[test]
fn ignores_arp_for_other_addresses_and_while_probing() {
    let now = Instant::now();
    let mut r = announcing(&[v4("198.51.100.11")], now);
    assert_eq!(r.handle_frame(&ARP_REQUEST, now), Output::default());
    r.announce(v4("198.51.100.10"), AnnounceMode::Probe, now);
    assert_eq!(
        r.handle_frame(&ARP_REQUEST, now),
        Output::default(),
        "not ours until the probe passed"
    );
    let c = r.counters.snapshot();
    assert_eq!((c.requests_seen, c.requests_answered), (2, 0));
}

#[test]
fn ignores_frames_unicast_to_another_host_and_our_own() {
    let now = Instant::now();
    let mut r = announcing(&[v4("198.51.100.10")], now);
    let to_other = arp(ArpOperation::Request, CLIENT, "198.51.100.1", "198.51.100.10", OTHER);
    assert_eq!(r.handle_frame(&to_other, now), Output::default());
    let from_us = arp(
        ArpOperation::Request,
        NODE,
        "198.51.100.1",
        "198.51.100.10",
        MacAddr::BROADCAST,
    );
    assert_eq!(r.handle_frame(&from_us, now), Output::default());
    let to_us = arp(ArpOperation::Request, CLIENT, "198.51.100.1", "198.51.100.10", NODE);
    assert_eq!(
        r.handle_frame(&to_us, now).frames.len(),
        1,
        "unicast ARP (RFC 1122 cache refresh) is answered"
    );
}

#[test]
fn answers_arp_probes_so_the_prober_sees_the_address_is_taken() {
    let now = Instant::now();
    let mut r = announcing(&[v4("198.51.100.10")], now);
    let probe = arp(
        ArpOperation::Request,
        CLIENT,
        "0.0.0.0",
        "198.51.100.10",
        MacAddr::BROADCAST,
    );
    let out = r.handle_frame(&probe, now);
    assert_eq!(out.frames.len(), 1);
    let reply = decode_arp(&out.frames[0]);
    assert_eq!(reply.operation, ArpOperation::Reply);
    assert_eq!(
        (reply.sender_mac, reply.sender_ip),
        (NODE, "198.51.100.10".parse().unwrap())
    );
    assert_eq!((reply.target_mac, reply.target_ip), (CLIENT, Ipv4Addr::UNSPECIFIED));
    assert_eq!(
        out.events,
        vec![],
        "a probe is not a claim (RFC 5227 §2.4: its sender IP is 0.0.0.0)"
    );
    assert_eq!(
        eth_destination(&out.frames[0]),
        CLIENT,
        "the reply is unicast to the prober"
    );
}

fn eth_destination(frame: &[u8]) -> MacAddr {
    match decode(frame) {
        Ok(Packet::Arp(eth, _) | Packet::NeighborSolicitation(eth, _) | Packet::NeighborAdvertisement(eth, _)) => {
            eth.destination
        }
        other => panic!("undecodable: {other:?}"),
    }
}

#[test]
fn answers_multicast_ns_like_the_kernel() {
    let now = Instant::now();
    let mut r = announcing(&[v6("2001:db8::10")], now);
    let out = r.handle_frame(&NS, now);
    assert_eq!(out.frames, vec![NA.to_vec()]);
    assert!(out.events.is_empty());
}

#[test]
fn answers_unicast_nud_probe_without_source_link_layer_option() {
    let now = Instant::now();
    let mut r = announcing(&[v6("2001:db8::10")], now);
    // RFC 4861 §7.2.2: a NUD probe goes to the cached MAC and the target address itself, and may omit SLLA.
    let nud = NeighborSolicitation {
        source: v6a("2001:db8::1"),
        destination: v6a("2001:db8::10"),
        target: v6a("2001:db8::10"),
        source_mac: None,
    }
    .to_frame(CLIENT, NODE);
    let out = r.handle_frame(&nud, now);
    assert_eq!(out.frames.len(), 1);
    let (eth, na) = decode_na(&out.frames[0]);
    assert_eq!(
        eth,
        EthernetHeader {
            destination: CLIENT,
            source: NODE
        }
    );
    assert_eq!(na.destination, v6a("2001:db8::1"));
    assert!(na.solicited && na.override_flag && !na.router);
    assert_eq!(na.target_mac, Some(NODE));
}

/// RFC 4862 §5.4.3 / RFC 4861 §7.2.4: a DAD probe for an address we answer for is answered to all-nodes; like an ARP
/// probe (RFC 5227 §2.1.1) it claims nothing, so it is no conflict: a host probing must not make the owner yield.
#[test]
fn answers_dad_probe_for_announced_address_without_a_conflict() {
    let now = Instant::now();
    let mut r = announcing(&[v6("2001:db8::10")], now);
    let group = solicited_node(v6a("2001:db8::10"));
    let dad = NeighborSolicitation {
        source: Ipv6Addr::UNSPECIFIED,
        destination: group,
        target: v6a("2001:db8::10"),
        source_mac: None,
    }
    .to_frame(OTHER, MacAddr::ipv6_multicast(group));
    let out = r.handle_frame(&dad, now);
    assert_eq!(out.frames.len(), 1);
    let (eth, na) = decode_na(&out.frames[0]);
    assert_eq!(eth.destination, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(na.destination, ALL_NODES);
    assert!(!na.solicited && na.override_flag);
    assert_eq!(na.target_mac, Some(NODE));
    assert_eq!(out.events, vec![], "a probe is not a claim");
    assert_eq!(r.counters.snapshot().conflicts, 0);
    assert!(r.is_answering(v6("2001:db8::10")));
}

#[test]
fn probes_then_announces_when_nobody_answers() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v4("192.0.2.7");
    let out = r.announce(ip, AnnounceMode::Probe, t0);
    assert_eq!(out.frames.len(), 1);
    // RFC 5227 §2.1.1: sender MAC ours, sender IP 0.0.0.0, target MAC zero, target IP the address, broadcast.
    let probe = decode_arp(&out.frames[0]);
    assert!(probe.is_probe());
    assert_eq!(
        (probe.sender_mac, probe.target_mac, probe.target_ip),
        (NODE, MacAddr::ZERO, "192.0.2.7".parse().unwrap())
    );
    assert_eq!(eth_destination(&out.frames[0]), MacAddr::BROADCAST);
    assert!(!r.is_answering(ip));

    let step = ProbeConfig::default().interval;
    assert_eq!(r.next_deadline(), Some(t0 + step));
    assert_eq!(r.poll(t0 + step / 2), Output::default(), "nothing is due yet");
    assert_eq!(r.poll(t0 + step).frames.len(), 1);
    assert_eq!(r.poll(t0 + step * 2).frames.len(), 1);
    let out = r.poll(t0 + step * 3);
    assert_eq!(out.events, vec![Event::Announced { ip, probed: true }]);
    assert_eq!(out.frames.len(), 2, "gratuitous ARP request and reply");
    // RFC 5227 §2.3: the ARP Announcement is the probe with the address as sender IP too.
    assert_eq!(
        decode_arp(&out.frames[0]),
        ArpMessage {
            sender_ip: "192.0.2.7".parse().unwrap(),
            ..probe
        }
    );
    assert_eq!(eth_destination(&out.frames[0]), MacAddr::BROADCAST);
    assert!(r.is_answering(ip));
    assert_eq!(r.counters.snapshot().probes_sent, 3);
}

/// The probe of `ip` found another host (`OTHER`), which `signal` revealed: the address is refused.
fn refused(ip: IpAddr, signal: ConflictSignal) -> Vec<Event> {
    vec![Event::Conflict(Conflict {
        ip,
        mac: OTHER,
        signal,
        refused: true,
    })]
}

#[test]
fn refuses_an_address_whose_probe_is_answered() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v4("192.0.2.7");
    r.announce(ip, AnnounceMode::Probe, t0);
    let out = r.handle_frame(&probe_answer("192.0.2.7"), t0);
    assert_eq!(out.events, refused(ip, ConflictSignal::ArpReply));
    assert!(!r.contains(ip));
    assert_eq!(r.next_deadline(), None);
    assert_eq!(
        r.poll(t0 + Duration::from_secs(10)),
        Output::default(),
        "never announced"
    );
}

/// Another host's RFC 5227 probe for `ip`: sender 0.0.0.0, broadcast.
fn foreign_arp_probe(ip: &str) -> Vec<u8> {
    arp(ArpOperation::Request, OTHER, "0.0.0.0", ip, MacAddr::BROADCAST)
}

/// Another host's RFC 4862 DAD probe for `ip`: source `::`, to the solicited-node group, no link-layer option.
fn foreign_dad_probe(ip: &str) -> Vec<u8> {
    let group = solicited_node(v6a(ip));
    NeighborSolicitation {
        source: Ipv6Addr::UNSPECIFIED,
        destination: group,
        target: v6a(ip),
        source_mac: None,
    }
    .to_frame(OTHER, MacAddr::ipv6_multicast(group))
}

#[test]
fn another_hosts_probe_starts_the_probe_over_and_the_address_is_announced_after_a_clean_round() {
    let step = ProbeConfig::default().interval;
    for (ip, foreign, signal) in [
        (
            v4("192.0.2.7"),
            foreign_arp_probe("192.0.2.7"),
            ConflictSignal::ArpProbe,
        ),
        (
            v6("2001:db8::7"),
            foreign_dad_probe("2001:db8::7"),
            ConflictSignal::DadProbe,
        ),
    ] {
        let t0 = Instant::now();
        let mut r = responder();
        r.announce(ip, AnnounceMode::Probe, t0);
        assert_eq!(r.poll(t0 + step).frames.len(), 1, "{ip}: second probe");
        // Between our second and third probe another host probes the address: it claims nothing yet.
        let out = r.handle_frame(&foreign, t0 + step * 3 / 2);
        assert_eq!(
            out,
            Output {
                frames: Vec::new(),
                events: vec![Event::ProbeRestarted { ip, mac: OTHER, signal }],
            },
            "{ip}"
        );
        assert!(r.contains(ip) && !r.is_answering(ip), "{ip}: still probing");
        // Three more probes from the first, then the wait: a whole clean round after the other host's probe.
        for n in 2..=4 {
            let out = r.poll(t0 + step * n);
            assert_eq!(
                (out.frames.len(), out.events),
                (1, Vec::new()),
                "{ip}: probe at step {n}"
            );
        }
        let out = r.poll(t0 + step * 5);
        assert_eq!(out.events, vec![Event::Announced { ip, probed: true }], "{ip}");
        assert!(r.is_answering(ip));
        let counted = r.counters.snapshot();
        assert_eq!((counted.probes_sent, counted.conflicts), (5, 0), "{ip}");
    }
}

#[test]
fn a_host_that_keeps_probing_gets_the_address_refused_and_an_answer_after_a_restart_refuses_it() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v4("192.0.2.7");
    r.announce(ip, AnnounceMode::Probe, t0);
    for n in 1..=PROBE_RESTARTS {
        let out = r.handle_frame(&foreign_arp_probe("192.0.2.7"), t0);
        assert!(
            matches!(out.events[..], [Event::ProbeRestarted { .. }]),
            "restart {n}: {out:?}"
        );
    }
    // RFC 5227 §2.1.1 once the bound is reached: the address is in use by another host.
    let out = r.handle_frame(&foreign_arp_probe("192.0.2.7"), t0);
    assert_eq!(out.events, refused(ip, ConflictSignal::ArpProbe));
    assert!(!r.contains(ip));

    // An answer to the probes that started over refuses as an answer to the first ones does.
    r.announce(ip, AnnounceMode::Probe, t0);
    r.handle_frame(&foreign_arp_probe("192.0.2.7"), t0);
    let out = r.handle_frame(&probe_answer("192.0.2.7"), t0);
    assert!(matches!(
        out.events[..],
        [Event::Conflict(Conflict {
            signal: ConflictSignal::ArpReply,
            refused: true,
            ..
        })]
    ));
    assert!(!r.contains(ip));
}

#[test]
fn ipv6_probe_is_a_dad_solicitation_and_an_advertisement_refuses() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v6("2001:db8::abcd");
    let out = r.announce(ip, AnnounceMode::Probe, t0);
    let Ok(Packet::NeighborSolicitation(eth, ns)) = decode(&out.frames[0]) else {
        panic!("not NS")
    };
    assert!(ns.is_dad());
    assert_eq!(ns.destination, v6a("ff02::1:ff00:abcd"));
    assert_eq!(eth.destination, MacAddr([0x33, 0x33, 0xff, 0x00, 0xab, 0xcd]));
    let answer = NeighborAdvertisement {
        source: v6a("2001:db8::abcd"),
        destination: ALL_NODES,
        target: v6a("2001:db8::abcd"),
        router: false,
        solicited: false,
        override_flag: true,
        target_mac: Some(OTHER),
    }
    .to_frame(OTHER, MacAddr::ipv6_multicast(ALL_NODES));
    let out = r.handle_frame(&answer, t0);
    assert!(matches!(
        out.events[..],
        [Event::Conflict(Conflict {
            signal: ConflictSignal::NeighborAdvertisement,
            refused: true,
            mac: OTHER,
            ..
        })]
    ));
    assert!(!r.contains(ip));
}

#[test]
fn burst_then_periodic_refresh() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v6("2001:db8::10");
    let first = r.announce(ip, AnnounceMode::Immediately, t0);
    assert_eq!(first.frames.len(), 1);
    assert_eq!(
        first.events,
        [Event::Announced { ip, probed: false }],
        "answered from now on, said once, as after a probe"
    );
    assert!(
        r.announce(ip, AnnounceMode::Immediately, t0).events.is_empty(),
        "not again for an address it has"
    );
    let (eth, na) = decode_na(&first.frames[0]);
    assert_eq!(eth.destination, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(
        (na.destination, na.solicited, na.override_flag, na.target_mac),
        (ALL_NODES, false, true, Some(NODE))
    );

    // The rest of the burst: 4 more, 500 ms apart.
    let mut at = t0;
    for _ in 0..4 {
        at = r.next_deadline().unwrap();
        assert_eq!(r.poll(at).frames.len(), 1);
    }
    assert_eq!(at, t0 + Duration::from_secs(2));
    // Then every 30 s.
    assert_eq!(r.next_deadline(), Some(at + Duration::from_secs(30)));
    assert_eq!(r.poll(at + Duration::from_secs(30)).frames.len(), 1);
    assert_eq!(r.next_deadline(), Some(at + Duration::from_secs(60)));
    assert_eq!(r.counters.snapshot().gratuitous_sent, 6);
}

#[test]
fn refresh_zero_means_burst_only() {
    let t0 = Instant::now();
    let announce = AnnounceConfig {
        refresh: None,
        ..AnnounceConfig::default()
    };
    let mut r = Responder::new(NODE, ProbeConfig::default(), announce, Arc::new(Counters::default()));
    r.announce(v4("192.0.2.1"), AnnounceMode::Immediately, t0);
    let out = r.poll(t0 + Duration::from_secs(3));
    assert_eq!(out.frames.len(), 2, "one burst round is due; a late poll sends it once");
    while let Some(at) = r.next_deadline() {
        r.poll(at);
    }
    assert_eq!(r.next_deadline(), None);
    assert_eq!(r.counters.snapshot().gratuitous_sent, 10);
}

#[test]
fn reports_conflicts_while_announcing_at_most_every_defend_interval() {
    let t0 = Instant::now();
    let mut r = announcing(&[v4("198.51.100.10")], t0);
    let garp = arp(
        ArpOperation::Request,
        OTHER,
        "198.51.100.10",
        "198.51.100.10",
        MacAddr::BROADCAST,
    );
    let out = r.handle_frame(&garp, t0);
    assert!(out.frames.is_empty(), "a gratuitous ARP is not answered");
    assert_eq!(
        out.events,
        vec![Event::Conflict(Conflict {
            ip: v4("198.51.100.10"),
            mac: OTHER,
            signal: ConflictSignal::ArpRequest,
            refused: false
        })]
    );
    assert!(r.handle_frame(&garp, t0 + Duration::from_secs(1)).events.is_empty());
    assert_eq!(r.handle_frame(&garp, t0 + DEFEND_INTERVAL).events.len(), 1);
    assert_eq!(r.counters.snapshot().conflicts, 3);
    assert!(r.is_answering(v4("198.51.100.10")));
}

fn defending(ips: &[IpAddr], now: Instant) -> Responder {
    let announce = AnnounceConfig {
        on_conflict: ConflictPolicy::Defend,
        ..AnnounceConfig::default()
    };
    let mut r = Responder::new(NODE, ProbeConfig::default(), announce, Arc::new(Counters::default()));
    for ip in ips {
        r.announce(*ip, AnnounceMode::Immediately, now);
    }
    r
}

fn foreign_advertisement(ip: &str) -> Vec<u8> {
    NeighborAdvertisement {
        source: v6a(ip),
        destination: ALL_NODES,
        target: v6a(ip),
        router: false,
        solicited: false,
        override_flag: true,
        target_mac: Some(OTHER),
    }
    .to_frame(OTHER, MacAddr::ipv6_multicast(ALL_NODES))
}

/// RFC 5227 §2.4 (c): a host that keeps its address after a conflicting ARP broadcasts one ARP Announcement (its own
/// IP and MAC as sender, target IP its own, target MAC zero), and no second one within DEFEND_INTERVAL.
#[test]
fn defends_a_kept_ipv4_address_once_per_defend_interval() {
    let t0 = Instant::now();
    let ip = v4("198.51.100.10");
    let mut r = defending(&[ip], t0);
    let before = r.counters.snapshot().gratuitous_sent;
    // Every kind of conflicting ARP: a gratuitous request, a reply, a request for another address from ours.
    let claims = [
        arp(
            ArpOperation::Request,
            OTHER,
            "198.51.100.10",
            "198.51.100.10",
            MacAddr::BROADCAST,
        ),
        arp(
            ArpOperation::Reply,
            OTHER,
            "198.51.100.10",
            "198.51.100.1",
            MacAddr::BROADCAST,
        ),
        arp(
            ArpOperation::Request,
            OTHER,
            "198.51.100.10",
            "198.51.100.1",
            MacAddr::BROADCAST,
        ),
    ];
    for (n, claim) in claims.iter().enumerate() {
        let at = t0 + DEFEND_INTERVAL * (2 * n as u32 + 1);
        let out = r.handle_frame(claim, at);
        assert_eq!(out.frames.len(), 1, "claim {n}: one defence");
        assert_eq!(eth_destination(&out.frames[0]), MacAddr::BROADCAST);
        assert_eq!(
            decode_arp(&out.frames[0]),
            ArpMessage {
                operation: ArpOperation::Request,
                sender_mac: NODE,
                sender_ip: "198.51.100.10".parse().unwrap(),
                target_mac: MacAddr::ZERO,
                target_ip: "198.51.100.10".parse().unwrap(),
            }
        );
        assert!(matches!(
            out.events[..],
            [Event::Conflict(Conflict {
                refused: false,
                mac: OTHER,
                ..
            })]
        ));
        // The other host insists: no second defence (nor report) within DEFEND_INTERVAL, and the address is kept.
        for later in [
            Duration::ZERO,
            Duration::from_secs(1),
            DEFEND_INTERVAL - Duration::from_millis(1),
        ] {
            assert_eq!(
                r.handle_frame(claim, at + later),
                Output::default(),
                "claim {n} again after {later:?}"
            );
        }
        assert!(r.is_answering(ip));
    }
    assert_eq!(r.counters.snapshot().gratuitous_sent - before, 3);
    assert_eq!(r.counters.snapshot().conflicts, 3 * 4);
}

/// The same for IPv6: an unsolicited, overriding NA with our link-layer address to all-nodes (RFC 4861 §7.2.6).
#[test]
fn defends_a_kept_ipv6_address_once_per_defend_interval() {
    let t0 = Instant::now();
    let ip = v6("2001:db8::10");
    let mut r = defending(&[ip], t0);
    let from_ours = NeighborSolicitation {
        source: v6a("2001:db8::10"),
        destination: solicited_node(v6a("2001:db8::1")),
        target: v6a("2001:db8::1"),
        source_mac: Some(OTHER),
    }
    .to_frame(OTHER, MacAddr::ipv6_multicast(solicited_node(v6a("2001:db8::1"))));
    for (n, claim) in [foreign_advertisement("2001:db8::10"), from_ours].iter().enumerate() {
        let at = t0 + DEFEND_INTERVAL * (2 * n as u32 + 1);
        let out = r.handle_frame(claim, at);
        assert_eq!(out.frames.len(), 1, "claim {n}");
        let (eth, na) = decode_na(&out.frames[0]);
        assert_eq!(
            (eth.source, eth.destination),
            (NODE, MacAddr::ipv6_multicast(ALL_NODES))
        );
        assert_eq!(
            na,
            NeighborAdvertisement {
                source: v6a("2001:db8::10"),
                destination: ALL_NODES,
                target: v6a("2001:db8::10"),
                router: false,
                solicited: false,
                override_flag: true,
                target_mac: Some(NODE),
            }
        );
        assert_eq!(out.events.len(), 1);
        assert_eq!(r.handle_frame(claim, at + Duration::from_secs(5)), Output::default());
        assert!(r.is_answering(ip));
    }
}

/// The election yields an address on a conflict (RFC 5227 §2.4 (a)): nothing is sent, or the other claimant (maybe
/// the node that took the address over) would yield too.
#[test]
fn yielding_owner_sends_no_defence() {
    let t0 = Instant::now();
    let mut r = announcing(&[v4("198.51.100.10"), v6("2001:db8::10")], t0);
    let garp = arp(
        ArpOperation::Request,
        OTHER,
        "198.51.100.10",
        "198.51.100.10",
        MacAddr::BROADCAST,
    );
    for claim in [garp, foreign_advertisement("2001:db8::10")] {
        let out = r.handle_frame(&claim, t0);
        assert!(out.frames.is_empty());
        assert_eq!(out.events.len(), 1);
    }
}

/// A conflict while probing refuses the address whatever the policy: it was never ours.
#[test]
fn defending_owner_still_refuses_an_address_in_use() {
    let t0 = Instant::now();
    let mut r = defending(&[], t0);
    r.announce(v4("192.0.2.7"), AnnounceMode::Probe, t0);
    let garp = arp(
        ArpOperation::Request,
        OTHER,
        "192.0.2.7",
        "192.0.2.7",
        MacAddr::BROADCAST,
    );
    let out = r.handle_frame(&garp, t0);
    assert!(out.frames.is_empty());
    assert!(matches!(
        out.events[..],
        [Event::Conflict(Conflict { refused: true, .. })]
    ));
}

/// A VLAN is another network: a request that came tagged is not answered on the untagged interface, and a host of
/// another VLAN using the address is no conflict. A priority tag (VLAN 0) is the untagged network.
#[test]
fn frames_of_other_vlans_are_neither_answered_nor_conflicts() {
    let t0 = Instant::now();
    let mut r = defending(&[v4("198.51.100.10"), v6("2001:db8::10")], t0);
    let garp = arp(
        ArpOperation::Request,
        OTHER,
        "198.51.100.10",
        "198.51.100.10",
        MacAddr::BROADCAST,
    );
    let na = foreign_advertisement("2001:db8::10");
    for frame in [&ARP_REQUEST[..], &NS[..], &garp, &na] {
        for tci in [100, 0x2064, 4095] {
            let tagged = tag(frame, 0x8100, tci);
            assert_eq!(r.handle_frame(&tagged, t0), Output::default(), "VLAN {tci:#x}");
            assert_eq!(r.handle_frame(&tag(frame, 0x88a8, tci), t0), Output::default());
        }
    }
    assert_eq!(r.counters.snapshot().conflicts, 0);
    assert_eq!(
        r.counters.snapshot().malformed_dropped,
        0,
        "another VLAN's frames are not malformed"
    );
    assert_eq!(
        r.handle_frame(&tag(&ARP_REQUEST, 0x8100, 0xa000), t0).frames,
        vec![ARP_REPLY.to_vec()]
    );
    assert_eq!(r.handle_frame(&tag(&NS, 0x8100, 0), t0).frames, vec![NA.to_vec()]);
}

fn tag(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut buf = frame.to_vec();
    buf.resize(frame.len() + 4, 0);
    let len = crate::packet::restore_vlan_tag(&mut buf, frame.len(), tpid, tci);
    buf.truncate(len);
    buf
}

/// RFC 4291 §2.7: a solicitation from a multicast source is invalid; answering it sent a "solicited" NA to a group.
#[test]
fn ignores_solicitations_from_multicast_sources() {
    let t0 = Instant::now();
    let mut r = announcing(&[v6("2001:db8::10")], t0);
    let group = solicited_node(v6a("2001:db8::10"));
    for source in ["ff02::1", "ff02::2", "ff02::1:ff00:10", "ff05::1:3", "::1"] {
        let ns = NeighborSolicitation {
            source: v6a(source),
            destination: group,
            target: v6a("2001:db8::10"),
            source_mac: Some(CLIENT),
        }
        .to_frame(CLIENT, MacAddr::ipv6_multicast(group));
        assert_eq!(r.handle_frame(&ns, t0), Output::default(), "NS from {source}");
    }
    assert_eq!(r.counters.snapshot().requests_answered, 0);
    assert_eq!(r.counters.snapshot().malformed_dropped, 5);
}

/// RFC 826: the reply goes to the sender hardware address; one that is a group (or zero) address would turn a
/// unicast reply into a broadcast, and names no host for a conflict.
#[test]
fn ignores_arp_from_impossible_senders() {
    let t0 = Instant::now();
    let mut r = announcing(&[v4("198.51.100.10")], t0);
    for sender in [MacAddr::BROADCAST, MacAddr::ZERO, MacAddr([0x01, 0, 0x5e, 0, 0, 1])] {
        let mut request = ARP_REQUEST;
        request[22..28].copy_from_slice(&sender.0);
        assert_eq!(r.handle_frame(&request, t0), Output::default(), "sender {sender}");
        let mut garp = arp(
            ArpOperation::Request,
            OTHER,
            "198.51.100.10",
            "198.51.100.10",
            MacAddr::BROADCAST,
        );
        garp[22..28].copy_from_slice(&sender.0);
        assert_eq!(r.handle_frame(&garp, t0), Output::default(), "claim from {sender}");
    }
    assert_eq!(r.counters.snapshot().conflicts, 0);
}

/// RFC 4861 §4.3: an NS carrying an option Herald does not use, of whatever length, is still answered.
#[test]
fn answers_solicitations_with_unrecognized_options() {
    let t0 = Instant::now();
    let mut r = announcing(&[v6("2001:db8::10")], t0);
    // The golden NS with a 1-unit Prefix Information option (4 units when it means something) before its SLLA.
    let mut ns = NS[..78].to_vec();
    ns.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
    ns.extend_from_slice(&NS[78..]);
    ns[18..20].copy_from_slice(&40u16.to_be_bytes());
    ns[56..58].copy_from_slice(&[0, 0]);
    let icmp = etherparse::Icmpv6Slice::from_slice(&ns[54..]).unwrap();
    let sum = icmp
        .header()
        .icmp_type
        .calc_checksum(
            ns[22..38].try_into().unwrap(),
            ns[38..54].try_into().unwrap(),
            icmp.payload(),
        )
        .unwrap();
    ns[56..58].copy_from_slice(&sum.to_be_bytes());
    assert!(decode(&ns).is_ok(), "{:?}", decode(&ns));
    assert_eq!(r.handle_frame(&ns, t0).frames, vec![NA.to_vec()]);
}

#[test]
fn withdraw_stops_answers_and_timers() {
    let t0 = Instant::now();
    let mut r = announcing(&[v4("198.51.100.10"), v6("2001:db8::10")], t0);
    assert!(r.withdraw(v4("198.51.100.10")));
    assert!(!r.withdraw(v4("198.51.100.10")));
    assert_eq!(r.handle_frame(&ARP_REQUEST, t0), Output::default());
    assert!(r.withdraw(v6("2001:db8::10")));
    assert_eq!(r.handle_frame(&NS, t0), Output::default());
    assert_eq!(r.next_deadline(), None);
    assert_eq!(r.addresses().count(), 0);
}

#[test]
fn malformed_frames_are_counted_and_dropped() {
    let t0 = Instant::now();
    let mut r = announcing(&[v6("2001:db8::10")], t0);
    let mut bad_checksum = NS;
    bad_checksum[60] ^= 0xff;
    assert_eq!(r.handle_frame(&bad_checksum, t0), Output::default());
    assert_eq!(r.handle_frame(&NS[..50], t0), Output::default());
    let mut routed = NS;
    routed[21] = 254;
    assert_eq!(r.handle_frame(&routed, t0), Output::default());
    assert_eq!(r.counters.snapshot().malformed_dropped, 3);
}

#[test]
fn lookups_scale_to_many_addresses() {
    let t0 = Instant::now();
    let mut r = responder();
    for i in 0..10_000u32 {
        r.announce(
            IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0000_0000_0000_0000_0001_0000u128 + u128::from(i),
            )),
            AnnounceMode::Immediately,
            t0,
        );
    }
    r.announce(v6("2001:db8::10"), AnnounceMode::Immediately, t0);
    assert_eq!(r.handle_frame(&NS, t0).frames, vec![NA.to_vec()]);
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    fn golden() -> Vec<Vec<u8>> {
        vec![ARP_REQUEST.to_vec(), ARP_REPLY.to_vec(), NS.to_vec(), NA.to_vec()]
    }

    fn check(frame: &[u8]) {
        let t0 = Instant::now();
        for mut r in [
            announcing(&[v4("198.51.100.10"), v6("2001:db8::10")], t0),
            defending(&[v4("198.51.100.10"), v6("2001:db8::10")], t0),
        ] {
            r.announce(v4("198.51.100.1"), AnnounceMode::Probe, t0);
            let out = r.handle_frame(frame, t0);
            // Whatever came in, what goes out is well-formed: decodable, at least the Ethernet minimum, from us, and
            // bounded: an answer and at most one defence.
            for reply in &out.frames {
                assert!(reply.len() >= crate::packet::MIN_FRAME_LEN);
                let Ok(
                    Packet::Arp(eth, _) | Packet::NeighborSolicitation(eth, _) | Packet::NeighborAdvertisement(eth, _),
                ) = decode(reply)
                else {
                    panic!("responder built an undecodable frame")
                };
                assert_eq!(eth.source, NODE);
            }
            assert!(out.frames.len() <= 2);
            // A frame that came with a VLAN tag is never answered, whatever it is (priority tags aside).
            let vlan_id = frame
                .get(12..16)
                .filter(|tag| matches!(tag[..2], [0x81, 0x00] | [0x88, 0xa8] | [0x91, 0x00]))
                .map(|tag| u16::from_be_bytes([tag[2], tag[3]]) & 0x0fff);
            if vlan_id.is_some_and(|id| id != 0) {
                assert_eq!(out, Output::default(), "answered a frame of another VLAN");
            }
        }
    }

    proptest! {
        #[test]
        fn random_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            check(&frame);
        }

        #[test]
        fn mutated_frames_never_panic(
            which in 0usize..4,
            flips in proptest::collection::vec((0usize..100, any::<u8>()), 1..6),
            cut in 0usize..100,
        ) {
            let mut frame = golden()[which].clone();
            for (at, value) in flips {
                if let Some(b) = frame.get_mut(at) {
                    *b = value;
                }
            }
            frame.truncate(cut.max(14));
            check(&frame);
        }

        #[test]
        fn tagged_frames_are_never_answered(
            which in 0usize..4,
            tpid in prop_oneof![Just(0x8100u16), Just(0x88a8), Just(0x9100)],
            tci in 1u16..,
        ) {
            prop_assume!(tci & 0x0fff != 0);
            check(&tag(&golden()[which], tpid, tci));
        }

        #[test]
        fn random_arp_and_ndp_payloads_never_panic(
            ether_type in prop_oneof![Just([0x08u8, 0x06]), Just([0x86, 0xdd])],
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut frame = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 9];
            frame.extend_from_slice(&ether_type);
            frame.extend_from_slice(&body);
            check(&frame);
        }
    }
}

#[test]
fn a_check_probes_at_rfc_5227_timing_answers_nothing_and_ends_free() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v4("192.0.2.7");
    let config = CheckConfig::default();
    let out = r.check(ip, config, t0);
    assert_eq!(out.frames.len(), 1);
    assert!(decode_arp(&out.frames[0]).is_probe());
    assert!(r.is_checking(ip) && !r.is_answering(ip));
    // Asked for meanwhile: not ours, not answered.
    let request = arp(
        ArpOperation::Request,
        CLIENT,
        "192.0.2.1",
        "192.0.2.7",
        MacAddr::BROADCAST,
    );
    assert_eq!(r.handle_frame(&request, t0), Output::default());
    assert_eq!(r.next_deadline(), Some(t0 + config.interval));
    assert_eq!(r.poll(t0 + config.interval).frames.len(), 1);
    let last = t0 + config.interval * 2;
    assert_eq!(r.poll(last).frames.len(), 1);
    assert_eq!(
        r.next_deadline(),
        Some(last + config.wait),
        "ANNOUNCE_WAIT after the last probe"
    );
    let out = r.poll(last + config.wait);
    assert_eq!(out.frames, Vec::<Vec<u8>>::new(), "a check never announces");
    assert_eq!(
        out.events,
        vec![Event::Checked {
            ip,
            outcome: CheckOutcome::Free
        }]
    );
    assert!(!r.contains(ip));
    assert_eq!(r.next_deadline(), None);
    assert_eq!(r.counters.snapshot().probes_sent, 3);
}

#[test]
fn a_check_answered_by_another_host_ends_taken_and_is_no_conflict_of_ours() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v4("192.0.2.7");
    r.check(ip, CheckConfig::default(), t0);
    let out = r.handle_frame(&probe_answer("192.0.2.7"), t0);
    assert_eq!(
        out.events,
        vec![Event::Checked {
            ip,
            outcome: CheckOutcome::Taken {
                mac: OTHER,
                signal: ConflictSignal::ArpReply
            }
        }]
    );
    assert!(!r.contains(ip));
    assert_eq!(r.counters.snapshot().conflicts, 0);

    // IPv6: the owner's advertisement answers the DAD solicitation.
    let ip = v6("2001:db8::abcd");
    let out = r.check(ip, CheckConfig::default(), t0);
    let Ok(Packet::NeighborSolicitation(_, ns)) = decode(&out.frames[0]) else {
        panic!("not NS")
    };
    assert!(ns.is_dad());
    let out = r.handle_frame(&foreign_advertisement("2001:db8::abcd"), t0);
    assert!(matches!(
        out.events[..],
        [Event::Checked {
            outcome: CheckOutcome::Taken {
                signal: ConflictSignal::NeighborAdvertisement,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn a_check_sees_another_prober_and_ends_when_the_address_is_announced_or_withdrawn() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v4("192.0.2.7");
    r.check(ip, CheckConfig::default(), t0);
    let probe = arp(ArpOperation::Request, OTHER, "0.0.0.0", "192.0.2.7", MacAddr::BROADCAST);
    assert!(matches!(
        r.handle_frame(&probe, t0).events[..],
        [Event::Checked {
            outcome: CheckOutcome::Taken {
                signal: ConflictSignal::ArpProbe,
                ..
            },
            ..
        }]
    ));

    // Announced while checked: the check is abandoned and the address answered at once.
    r.check(ip, CheckConfig::default(), t0);
    assert_eq!(
        r.check(ip, CheckConfig::default(), t0),
        Output::default(),
        "one check at a time"
    );
    let out = r.announce(ip, AnnounceMode::Immediately, t0);
    assert_eq!(
        out.events,
        vec![
            Event::Checked {
                ip,
                outcome: CheckOutcome::Abandoned
            },
            Event::Announced { ip, probed: false }
        ]
    );
    assert!(r.is_answering(ip));
    // A check of an answered address ends at once; the address stays answered.
    assert_eq!(
        r.check(ip, CheckConfig::default(), t0).events,
        vec![Event::Checked {
            ip,
            outcome: CheckOutcome::Abandoned
        }]
    );
    assert!(r.is_answering(ip));
    // Withdrawn while checked: gone, no event (the caller asked).
    let other = v4("192.0.2.8");
    r.check(other, CheckConfig::default(), t0);
    assert!(r.withdraw(other));
    assert!(!r.contains(other));
}
