//! The sans-IO responder's cost per frame with 10,000 announced addresses (no sockets): an ARP request answered, an
//! NS answered, and a request for an address that is not announced.
//!
//! `cargo bench -p herald-l2 --bench responder`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use herald_l2::packet::ndp::solicited_node;
use herald_l2::packet::{ArpMessage, ArpOperation, MacAddr, NeighborSolicitation};
use herald_l2::{AnnounceConfig, AnnounceMode, Counters, ProbeConfig, Responder};
use tokio::time::Instant;

const NODE: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const CLIENT: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

fn responder() -> Responder {
    let now = Instant::now();
    let mut r = Responder::new(
        NODE,
        ProbeConfig::default(),
        AnnounceConfig::default(),
        Arc::new(Counters::default()),
    );
    // 507 IPv4 documentation addresses and 9,493 IPv6 ones: 10,000 in the table.
    for net in [[198, 51, 100], [203, 0, 113]] {
        for host in 1..=254u8 {
            if [net[0], net[1], net[2], host] != [198, 51, 100, 1] {
                r.announce(
                    IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host)),
                    AnnounceMode::Immediately,
                    now,
                );
            }
        }
    }
    for i in 1..=9_493u128 {
        let ip = Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0000_0000 + i);
        r.announce(IpAddr::V6(ip), AnnounceMode::Immediately, now);
    }
    r
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    ArpMessage {
        operation: ArpOperation::Request,
        sender_mac: CLIENT,
        sender_ip: Ipv4Addr::new(198, 51, 100, 1),
        target_mac: MacAddr::ZERO,
        target_ip: target,
    }
    .to_frame(CLIENT, MacAddr::BROADCAST)
}

fn bench(c: &mut Criterion) {
    let mut r = responder();
    let now = Instant::now();
    let hit = arp_request(Ipv4Addr::new(203, 0, 113, 200));
    let miss = arp_request(Ipv4Addr::new(192, 0, 2, 200));
    let target: Ipv6Addr = "2001:db8:1::1234".parse().unwrap();
    let group = solicited_node(target);
    let ns = NeighborSolicitation {
        source: "2001:db8:1::ffff:1".parse().unwrap(),
        destination: group,
        target,
        source_mac: Some(CLIENT),
    }
    .to_frame(CLIENT, MacAddr::ipv6_multicast(group));

    let mut g = c.benchmark_group("responder, 10,000 addresses");
    g.bench_function("ARP request answered", |b| {
        b.iter(|| r.handle_frame(black_box(&hit), now))
    });
    g.bench_function("ARP request for another address", |b| {
        b.iter(|| r.handle_frame(black_box(&miss), now))
    });
    g.bench_function("NS answered (checksum checked)", |b| {
        b.iter(|| r.handle_frame(black_box(&ns), now))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
