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

#[test]
fn defends_against_dad_probe_and_reports_it() {
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
    assert_eq!(
        out.events,
        vec![Event::Conflict(Conflict {
            ip: v6("2001:db8::10"),
            mac: OTHER,
            signal: ConflictSignal::DadProbe,
            refused: false
        })]
    );
    assert!(
        r.is_answering(v6("2001:db8::10")),
        "the caller decides whether to yield"
    );
}

#[test]
fn probes_then_announces_when_nobody_answers() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v4("192.0.2.7");
    let out = r.announce(ip, AnnounceMode::Probe, t0);
    assert_eq!(out.frames.len(), 1);
    let probe = decode_arp(&out.frames[0]);
    assert!(probe.is_probe());
    assert_eq!(
        (probe.sender_mac, probe.target_ip),
        (NODE, "192.0.2.7".parse().unwrap())
    );
    assert!(!r.is_answering(ip));

    let step = ProbeConfig::default().interval;
    assert_eq!(r.next_deadline(), Some(t0 + step));
    assert_eq!(r.poll(t0 + step / 2), Output::default(), "nothing is due yet");
    assert_eq!(r.poll(t0 + step).frames.len(), 1);
    assert_eq!(r.poll(t0 + step * 2).frames.len(), 1);
    let out = r.poll(t0 + step * 3);
    assert_eq!(out.events, vec![Event::Announced { ip }]);
    assert_eq!(out.frames.len(), 2, "gratuitous ARP request and reply");
    assert!(r.is_answering(ip));
    assert_eq!(r.counters.snapshot().probes_sent, 3);
}

#[test]
fn refuses_an_address_whose_probe_is_answered() {
    let t0 = Instant::now();
    let mut r = responder();
    let ip = v4("192.0.2.7");
    r.announce(ip, AnnounceMode::Probe, t0);
    // The owner answers the probe: a reply unicast to us, sender = the address.
    let answer = ArpMessage {
        operation: ArpOperation::Reply,
        sender_mac: OTHER,
        sender_ip: "192.0.2.7".parse().unwrap(),
        target_mac: NODE,
        target_ip: Ipv4Addr::UNSPECIFIED,
    }
    .to_frame(OTHER, NODE);
    let out = r.handle_frame(&answer, t0);
    assert_eq!(
        out.events,
        vec![Event::Conflict(Conflict {
            ip,
            mac: OTHER,
            signal: ConflictSignal::ArpReply,
            refused: true
        })]
    );
    assert!(!r.contains(ip));
    assert_eq!(r.next_deadline(), None);
    assert_eq!(
        r.poll(t0 + Duration::from_secs(10)),
        Output::default(),
        "never announced"
    );
}

#[test]
fn simultaneous_arp_probe_refuses_the_address() {
    let t0 = Instant::now();
    let mut r = responder();
    r.announce(v4("192.0.2.7"), AnnounceMode::Probe, t0);
    let probe = arp(ArpOperation::Request, OTHER, "0.0.0.0", "192.0.2.7", MacAddr::BROADCAST);
    let out = r.handle_frame(&probe, t0);
    assert!(matches!(
        out.events[..],
        [Event::Conflict(Conflict {
            signal: ConflictSignal::ArpProbe,
            refused: true,
            ..
        })]
    ));
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
    assert_eq!(r.handle_frame(&garp, t0 + CONFLICT_REPORT_INTERVAL).events.len(), 1);
    assert_eq!(r.counters.snapshot().conflicts, 3);
    assert!(r.is_answering(v4("198.51.100.10")));
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
        let mut r = announcing(&[v4("198.51.100.10"), v6("2001:db8::10")], t0);
        r.announce(v4("198.51.100.1"), AnnounceMode::Probe, t0);
        let out = r.handle_frame(frame, t0);
        // Whatever came in, what goes out is well-formed: decodable and at least the Ethernet minimum.
        for reply in &out.frames {
            assert!(reply.len() >= crate::packet::MIN_FRAME_LEN);
            assert!(decode(reply).is_ok(), "responder built an undecodable frame");
        }
        assert!(out.frames.len() <= 1);
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
