//! Writes the seed corpora of the `decode` and `responder` targets, `seeds/<target>/`, from Herald's own encoders:
//! `cargo run --manifest-path crates/l2/fuzz/Cargo.toml --example seeds`. Frames for the addresses the `responder`
//! target holds (198.51.100.10 and 2001:db8::10 announced, .11 and ::11 being probed), so a run starts with the
//! answers, the conflicts and the probes covered.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use herald_l2::packet::ndp::{ALL_NODES, solicited_node};
use herald_l2::packet::{ArpMessage, ArpOperation, MacAddr, NeighborAdvertisement, NeighborSolicitation};

const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const OTHER_HOST: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x03]);

fn arp(operation: ArpOperation, sender: MacAddr, sender_ip: &str, target_ip: &str) -> ArpMessage {
    ArpMessage {
        operation,
        sender_mac: sender,
        sender_ip: sender_ip.parse().unwrap(),
        target_mac: MacAddr::ZERO,
        target_ip: target_ip.parse().unwrap(),
    }
}

fn ns(source: Ipv6Addr, target: &str, source_mac: Option<MacAddr>) -> NeighborSolicitation {
    let target: Ipv6Addr = target.parse().unwrap();
    NeighborSolicitation {
        source,
        destination: solicited_node(target),
        target,
        source_mac,
    }
}

fn main() {
    let client6: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let request = arp(ArpOperation::Request, CLIENT, "198.51.100.2", "198.51.100.10");
    let request_frame = request.to_frame(CLIENT, MacAddr::BROADCAST);
    // The same request with an 802.1Q priority tag (VLAN 0), as the socket shell restores it.
    let mut tagged = request_frame[..12].to_vec();
    tagged.extend([0x81, 0x00, 0x00, 0x00]);
    tagged.extend(&request_frame[12..]);
    let solicitation = ns(client6, "2001:db8::10", Some(CLIENT));
    let dad = ns(Ipv6Addr::UNSPECIFIED, "2001:db8::11", None);
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("arp-request", request_frame),
        ("arp-request-priority-tagged", tagged),
        (
            "arp-probe",
            arp(ArpOperation::Request, OTHER_HOST, "0.0.0.0", "198.51.100.11").to_frame(OTHER_HOST, MacAddr::BROADCAST),
        ),
        (
            "arp-reply-conflict",
            ArpMessage {
                operation: ArpOperation::Reply,
                sender_mac: OTHER_HOST,
                sender_ip: Ipv4Addr::new(198, 51, 100, 10),
                target_mac: MacAddr::BROADCAST,
                target_ip: Ipv4Addr::new(198, 51, 100, 10),
            }
            .to_frame(OTHER_HOST, MacAddr::BROADCAST),
        ),
        (
            "arp-gratuitous",
            arp(ArpOperation::Request, OTHER_HOST, "198.51.100.11", "198.51.100.11")
                .to_frame(OTHER_HOST, MacAddr::BROADCAST),
        ),
        (
            "ns",
            solicitation.to_frame(CLIENT, MacAddr::ipv6_multicast(solicitation.destination)),
        ),
        (
            "ns-dad",
            dad.to_frame(OTHER_HOST, MacAddr::ipv6_multicast(dad.destination)),
        ),
        (
            "na-unsolicited",
            NeighborAdvertisement {
                source: "fe80::3".parse().unwrap(),
                destination: ALL_NODES,
                target: "2001:db8::10".parse().unwrap(),
                router: false,
                solicited: false,
                override_flag: true,
                target_mac: Some(OTHER_HOST),
            }
            .to_frame(OTHER_HOST, MacAddr::ipv6_multicast(ALL_NODES)),
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for target in ["decode", "responder"] {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        for (name, frame) in &frames {
            herald_l2::packet::decode(frame).unwrap_or_else(|e| panic!("seed {name}: {e}"));
            std::fs::write(dir.join(target).join(name), frame).unwrap();
        }
    }
}
