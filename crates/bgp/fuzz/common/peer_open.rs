//! The peer's OPEN the `fsm` target delivers (its op 10) and the seed writer builds its scripts around: shared, so
//! the seeds always match what the target sends. Included with `#[path]` by `fuzz_targets/fsm.rs` and
//! `examples/seeds.rs`.

use std::net::Ipv4Addr;

use herald_bgp::packet::{Afi, Capability, Message, Open, Safi};

/// An OPEN from AS `peer_asn` (AS_TRANS in `my_as` when it needs four octets) with hold time `hold`, for IPv4 and
/// IPv6 unicast, route refresh and four-octet AS numbers.
pub fn peer_open(peer_asn: u32, hold: u16) -> Message {
    Message::Open(Open {
        version: 4,
        my_as: u16::try_from(peer_asn).unwrap_or(23456),
        hold_time: hold,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(peer_asn),
        ],
    })
}
