//! IPv6 Neighbor Solicitation and Neighbor Advertisement (RFC 4861 §4.3, §4.4) in Ethernet frames, validated per
//! RFC 4861 §7.1.1 and §7.1.2.
//!
//! Only ICMPv6 directly after the IPv6 header is decoded: NDP messages carrying extension headers are dropped as
//! unsupported (the socket's BPF filter drops them already; real neighbors never send them).

use std::net::Ipv6Addr;

use etherparse::icmpv6::NeighborAdvertisementHeader;
use etherparse::{Icmpv6Slice, Icmpv6Type, IpNumber, Ipv6HeaderSlice, PacketBuilder};

use super::{DecodeError, EthernetHeader, MacAddr, Packet};

/// `ff02::1`, the link-local all-nodes group (RFC 4291 §2.7.1).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// ICMPv6 type of a Neighbor Solicitation.
pub const TYPE_NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement.
pub const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;

/// RFC 4861 §7.1: NDP messages are sent, and accepted, only with hop limit 255.
pub const HOP_LIMIT: u8 = 255;

/// ICMPv6 header (8) + target address (16): the smallest NS or NA.
const MIN_NDP_LEN: usize = 24;
const OPTION_SOURCE_LINK_LAYER_ADDRESS: u8 = 1;
const OPTION_TARGET_LINK_LAYER_ADDRESS: u8 = 2;

/// The solicited-node multicast group of `ip`: `ff02::1:ff` + its last 24 bits (RFC 4291 §2.7.1).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

fn is_solicited_node_group(ip: Ipv6Addr) -> bool {
    let o = ip.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

/// A Neighbor Solicitation and the addresses of the IPv6 packet it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// IPv6 source; `::` for a Duplicate Address Detection probe (RFC 4862 §5.4.2).
    pub source: Ipv6Addr,
    /// IPv6 destination: the target's solicited-node group, or the target itself for a NUD probe.
    pub destination: Ipv6Addr,
    pub target: Ipv6Addr,
    /// The Source Link-Layer Address option, when present.
    pub source_mac: Option<MacAddr>,
}

impl NeighborSolicitation {
    /// A Duplicate Address Detection probe (source `::`).
    pub fn is_dad(&self) -> bool {
        self.source.is_unspecified()
    }

    /// Encodes the solicitation (hop limit 255, checksum computed) in a frame from `eth_source` to
    /// `eth_destination`.
    pub fn to_frame(&self, eth_source: MacAddr, eth_destination: MacAddr) -> Vec<u8> {
        let mut body = self.target.octets().to_vec();
        if let Some(mac) = self.source_mac {
            body.extend_from_slice(&link_layer_option(OPTION_SOURCE_LINK_LAYER_ADDRESS, mac));
        }
        build(
            eth_source,
            eth_destination,
            self.source,
            self.destination,
            Icmpv6Type::NeighborSolicitation,
            &body,
        )
    }
}

/// A Neighbor Advertisement and the addresses of the IPv6 packet it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub target: Ipv6Addr,
    /// R flag: the sender is a router.
    pub router: bool,
    /// S flag: sent in response to a Neighbor Solicitation.
    pub solicited: bool,
    /// O flag: overrides an existing cache entry.
    pub override_flag: bool,
    /// The Target Link-Layer Address option, when present.
    pub target_mac: Option<MacAddr>,
}

impl NeighborAdvertisement {
    /// Encodes the advertisement (hop limit 255, checksum computed) in a frame from `eth_source` to
    /// `eth_destination`.
    pub fn to_frame(&self, eth_source: MacAddr, eth_destination: MacAddr) -> Vec<u8> {
        let mut body = self.target.octets().to_vec();
        if let Some(mac) = self.target_mac {
            body.extend_from_slice(&link_layer_option(OPTION_TARGET_LINK_LAYER_ADDRESS, mac));
        }
        let header = NeighborAdvertisementHeader {
            router: self.router,
            solicited: self.solicited,
            r#override: self.override_flag,
        };
        build(
            eth_source,
            eth_destination,
            self.source,
            self.destination,
            Icmpv6Type::NeighborAdvertisement(header),
            &body,
        )
    }
}

/// RFC 4861 §4.6.1: type, length in units of 8 bytes (1 for Ethernet), the 6-byte address.
fn link_layer_option(kind: u8, mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [kind, 1, m[0], m[1], m[2], m[3], m[4], m[5]]
}

fn build(
    eth_source: MacAddr,
    eth_destination: MacAddr,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    icmp_type: Icmpv6Type,
    body: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(eth_source.0, eth_destination.0)
        .ipv6(source.octets(), destination.octets(), HOP_LIMIT)
        .icmpv6(icmp_type);
    let mut frame = Vec::with_capacity(builder.size(body.len()));
    // A body of at most 24 bytes always fits the IPv6 payload length, so writing into a Vec cannot fail.
    builder.write(&mut frame, body).expect("NDP frame of bounded size");
    frame
}

/// Decodes the IPv6 payload of an Ethernet frame as NS or NA, validating it (RFC 4861 §7.1.1, §7.1.2).
pub fn decode(eth: EthernetHeader, payload: &[u8]) -> Result<Packet, DecodeError> {
    let ip = Ipv6HeaderSlice::from_slice(payload).map_err(|e| match e {
        etherparse::err::ipv6::HeaderSliceError::Len(e) => DecodeError::Truncated {
            layer: "IPv6 header",
            len: payload.len(),
            need: e.required_len,
        },
        etherparse::err::ipv6::HeaderSliceError::Content(_) => DecodeError::Invalid("IPv6 version"),
    })?;
    if ip.next_header() != IpNumber::IPV6_ICMP {
        return Err(DecodeError::Unsupported(
            "IPv6 packet that is not ICMPv6 (or has extension headers)",
        ));
    }
    let rest = &payload[ip.slice().len()..];
    let declared = usize::from(ip.payload_length());
    // Anything after the IPv6 payload is Ethernet padding.
    let icmp = rest.get(..declared).ok_or(DecodeError::Truncated {
        layer: "IPv6 payload",
        len: rest.len(),
        need: declared,
    })?;
    let icmp = Icmpv6Slice::from_slice(icmp).map_err(|e| DecodeError::Truncated {
        layer: "ICMPv6 header",
        len: icmp.len(),
        need: e.required_len,
    })?;
    let kind = icmp.type_u8();
    if kind != TYPE_NEIGHBOR_SOLICITATION && kind != TYPE_NEIGHBOR_ADVERTISEMENT {
        return Err(DecodeError::Unsupported("ICMPv6 message other than NS or NA"));
    }
    if ip.hop_limit() != HOP_LIMIT {
        return Err(DecodeError::HopLimit(ip.hop_limit()));
    }
    let (source, destination) = (ip.source_addr(), ip.destination_addr());
    if !icmp.is_checksum_valid(source.octets(), destination.octets()) {
        return Err(DecodeError::Checksum);
    }
    // RFC 4291 §2.7: a multicast address is never a source; §2.5.3: nor is the loopback address outside a node. An
    // answer to such a solicitation would go to a group, or nowhere.
    if source.is_multicast() || source.is_loopback() {
        return Err(DecodeError::Invalid("NS/NA source address (multicast or loopback)"));
    }
    if icmp.code_u8() != 0 {
        return Err(DecodeError::Invalid("ICMPv6 code of NS/NA (must be 0)"));
    }
    let message = icmp.slice();
    let Some(target) = message.get(8..MIN_NDP_LEN) else {
        return Err(DecodeError::Truncated {
            layer: "NS/NA",
            len: message.len(),
            need: MIN_NDP_LEN,
        });
    };
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(target).unwrap_or_default());
    if target.is_multicast() {
        return Err(DecodeError::Invalid("NS/NA target is a multicast address"));
    }
    let (slla, tlla) = link_layer_options(&message[MIN_NDP_LEN..])?;
    if kind == TYPE_NEIGHBOR_SOLICITATION {
        // RFC 4861 §7.1.1: a DAD probe goes to a solicited-node group and carries no source link-layer address.
        if source.is_unspecified() && (!is_solicited_node_group(destination) || slla.is_some()) {
            return Err(DecodeError::Invalid(
                "DAD solicitation (source ::) to a non solicited-node group or with SLLA",
            ));
        }
        let ns = NeighborSolicitation {
            source,
            destination,
            target,
            source_mac: slla,
        };
        Ok(Packet::NeighborSolicitation(eth, ns))
    } else {
        let flags = NeighborAdvertisementHeader::from_bytes(icmp.bytes5to8());
        // RFC 4861 §7.1.2: an advertisement to a multicast group cannot be solicited.
        if destination.is_multicast() && flags.solicited {
            return Err(DecodeError::Invalid("solicited NA sent to a multicast address"));
        }
        let na = NeighborAdvertisement {
            source,
            destination,
            target,
            router: flags.router,
            solicited: flags.solicited,
            override_flag: flags.r#override,
            target_mac: tlla,
        };
        Ok(Packet::NeighborAdvertisement(eth, na))
    }
}

/// Source and target link-layer address options (RFC 4861 §4.6.1). Work is bounded: every option is at least 8
/// bytes long.
fn link_layer_options(mut options: &[u8]) -> Result<(Option<MacAddr>, Option<MacAddr>), DecodeError> {
    let (mut slla, mut tlla) = (None, None);
    while let Some(&[kind, units, ..]) = options.first_chunk::<2>() {
        // RFC 4861 §7.1.1, §7.1.2: every option has a length greater than zero; one that runs past the message is
        // truncated.
        if units == 0 {
            return Err(DecodeError::Invalid("NDP option of length zero"));
        }
        let Some((option, rest)) = options.split_at_checked(usize::from(units) * 8) else {
            return Err(DecodeError::Invalid("NDP option longer than the message"));
        };
        options = rest;
        let slot = match kind {
            OPTION_SOURCE_LINK_LAYER_ADDRESS => &mut slla,
            OPTION_TARGET_LINK_LAYER_ADDRESS => &mut tlla,
            // RFC 4861 §4.3, §4.4: options the receiver does not recognize (here: any other) MUST be ignored,
            // whatever their length.
            _ => continue,
        };
        // RFC 2464 §8: on Ethernet the option is one unit, type + length + the 6-byte address.
        let &[_, _, a, b, c, d, e, f] = option else {
            return Err(DecodeError::Invalid(
                "link-layer address option not 8 bytes long (Ethernet)",
            ));
        };
        let mac = MacAddr([a, b, c, d, e, f]);
        // The answer goes to this address, or it names the claimant of a conflict: a group or zero one is forged.
        if !mac.is_station() {
            return Err(DecodeError::Invalid(
                "link-layer address option (group or zero address)",
            ));
        }
        // Linux keeps the first of duplicated options (ndisc_parse_options); so does Herald.
        slot.get_or_insert(mac);
    }
    if !options.is_empty() {
        return Err(DecodeError::Invalid("NDP option longer than the message"));
    }
    Ok((slla, tlla))
}

#[cfg(test)]
mod tests {
    use super::super::decode as decode_frame;
    use super::super::golden::{NA, NS};
    use super::*;

    const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const NODE: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn decodes_a_captured_solicitation() {
        let Ok(Packet::NeighborSolicitation(eth, ns)) = decode_frame(&NS) else {
            panic!("not NS")
        };
        assert_eq!(eth.source, CLIENT);
        assert_eq!(
            eth.destination,
            MacAddr::ipv6_multicast(solicited_node(ip("2001:db8::10")))
        );
        assert_eq!(
            ns,
            NeighborSolicitation {
                source: ip("fe80::ff:fe00:2"),
                destination: ip("ff02::1:ff00:10"),
                target: ip("2001:db8::10"),
                source_mac: Some(CLIENT),
            }
        );
        assert!(!ns.is_dad());
    }

    #[test]
    fn encodes_the_same_advertisement_as_the_kernel() {
        let na = NeighborAdvertisement {
            source: ip("2001:db8::10"),
            destination: ip("fe80::ff:fe00:2"),
            target: ip("2001:db8::10"),
            router: false,
            solicited: true,
            override_flag: true,
            target_mac: Some(NODE),
        };
        assert_eq!(na.to_frame(NODE, CLIENT), NA);
        let Ok(Packet::NeighborAdvertisement(_, decoded)) = decode_frame(&NA) else {
            panic!("not NA")
        };
        assert_eq!(decoded, na);
    }

    #[test]
    fn solicitation_round_trips() {
        let dad = NeighborSolicitation {
            source: Ipv6Addr::UNSPECIFIED,
            destination: solicited_node(ip("2001:db8::abcd:1234")),
            target: ip("2001:db8::abcd:1234"),
            source_mac: None,
        };
        assert_eq!(dad.destination, ip("ff02::1:ffcd:1234"));
        let frame = dad.to_frame(NODE, MacAddr::ipv6_multicast(dad.destination));
        assert_eq!(
            decode_frame(&frame),
            Ok(Packet::NeighborSolicitation(
                EthernetHeader {
                    destination: MacAddr([0x33, 0x33, 0xff, 0xcd, 0x12, 0x34]),
                    source: NODE
                },
                dad
            ))
        );
    }

    #[test]
    fn enforces_rfc_4861_validation() {
        let mut hop = NS;
        hop[21] = 64;
        assert_eq!(decode_frame(&hop), Err(DecodeError::HopLimit(64)));

        let mut checksum = NS;
        checksum[57] ^= 1;
        assert_eq!(decode_frame(&checksum), Err(DecodeError::Checksum));

        let mut zero_len_option = NS;
        zero_len_option[79] = 0;
        fix_checksum(&mut zero_len_option);
        assert!(matches!(decode_frame(&zero_len_option), Err(DecodeError::Invalid(_))));

        let mut multicast_target = NS;
        multicast_target[62] = 0xff;
        fix_checksum(&mut multicast_target);
        assert!(matches!(decode_frame(&multicast_target), Err(DecodeError::Invalid(_))));

        let mut code = NS;
        code[55] = 1;
        fix_checksum(&mut code);
        assert!(matches!(decode_frame(&code), Err(DecodeError::Invalid(_))));

        // A DAD probe must not carry a source link-layer address.
        let dad_with_slla = NeighborSolicitation {
            source: Ipv6Addr::UNSPECIFIED,
            destination: solicited_node(ip("2001:db8::10")),
            target: ip("2001:db8::10"),
            source_mac: Some(CLIENT),
        }
        .to_frame(CLIENT, MacAddr::BROADCAST);
        assert!(matches!(decode_frame(&dad_with_slla), Err(DecodeError::Invalid(_))));

        let solicited_to_all_nodes = NeighborAdvertisement {
            source: ip("2001:db8::10"),
            destination: ALL_NODES,
            target: ip("2001:db8::10"),
            router: false,
            solicited: true,
            override_flag: true,
            target_mac: Some(NODE),
        }
        .to_frame(NODE, MacAddr::ipv6_multicast(ALL_NODES));
        assert!(matches!(
            decode_frame(&solicited_to_all_nodes),
            Err(DecodeError::Invalid(_))
        ));
    }

    /// An NS with `options` after the target, from `source` to `destination`, checksum computed.
    fn ns_with(source: Ipv6Addr, destination: Ipv6Addr, options: &[u8]) -> Vec<u8> {
        let target = ip("2001:db8::10");
        let mut body = target.octets().to_vec();
        body.extend_from_slice(options);
        build(
            CLIENT,
            MacAddr::ipv6_multicast(solicited_node(target)),
            source,
            destination,
            Icmpv6Type::NeighborSolicitation,
            &body,
        )
    }

    /// RFC 4291 §2.7 / §2.5.3: no IPv6 packet comes from a multicast or the loopback address. An NS from one would
    /// be answered with a unicast NA to a group (RFC 4861 §7.2.4 sends it to the solicitation's source).
    #[test]
    fn rejects_multicast_and_loopback_sources() {
        let group = solicited_node(ip("2001:db8::10"));
        let slla = link_layer_option(OPTION_SOURCE_LINK_LAYER_ADDRESS, CLIENT);
        for source in ["ff02::1", "ff02::1:ff00:10", "ff05::2", "ff0e::1", "::1"] {
            let ns = ns_with(ip(source), group, &slla);
            assert_eq!(
                decode_frame(&ns),
                Err(DecodeError::Invalid("NS/NA source address (multicast or loopback)")),
                "NS from {source}"
            );
            let na = NeighborAdvertisement {
                source: ip(source),
                destination: ALL_NODES,
                target: ip("2001:db8::10"),
                router: false,
                solicited: false,
                override_flag: true,
                target_mac: Some(CLIENT),
            }
            .to_frame(CLIENT, MacAddr::ipv6_multicast(ALL_NODES));
            assert!(
                matches!(decode_frame(&na), Err(DecodeError::Invalid(_))),
                "NA from {source}"
            );
        }
        assert!(decode_frame(&ns_with(ip("fe80::2"), group, &slla)).is_ok());
    }

    /// RFC 4861 §4.3: options the receiver does not recognize are ignored, whatever their length; only a zero
    /// length or one running past the message invalidates it (§7.1.1).
    #[test]
    fn ignores_unrecognized_options_of_any_length() {
        let group = solicited_node(ip("2001:db8::10"));
        let slla = link_layer_option(OPTION_SOURCE_LINK_LAYER_ADDRESS, CLIENT);
        for other in [
            vec![3, 1, 0, 0, 0, 0, 0, 0], // Prefix Information, 1 unit instead of 4
            vec![5, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // MTU, 2 units instead of 1
            vec![14, 1, 1, 2, 3, 4, 5, 6], // Nonce (RFC 3971)
            vec![200, 1, 0, 0, 0, 0, 0, 0], // unassigned
        ] {
            let mut options = other.clone();
            options.extend_from_slice(&slla);
            let Ok(Packet::NeighborSolicitation(_, ns)) = decode_frame(&ns_with(ip("fe80::2"), group, &options)) else {
                panic!("NS with option {other:?} dropped")
            };
            assert_eq!(ns.source_mac, Some(CLIENT));
        }
        let truncated = [1, 2, 2, 0, 0, 0, 0, 2]; // SLLA claiming 16 bytes in 8
        assert!(matches!(
            decode_frame(&ns_with(ip("fe80::2"), group, &truncated)),
            Err(DecodeError::Invalid(_))
        ));
        let zero_after_valid = [&slla[..], &[200, 0, 0, 0, 0, 0, 0, 0]].concat();
        assert!(matches!(
            decode_frame(&ns_with(ip("fe80::2"), group, &zero_after_valid)),
            Err(DecodeError::Invalid(_))
        ));
        let trailing_byte = [&slla[..], &[1]].concat();
        assert!(matches!(
            decode_frame(&ns_with(ip("fe80::2"), group, &trailing_byte)),
            Err(DecodeError::Invalid(_))
        ));
    }

    /// RFC 2464 §8: an Ethernet link-layer address option is exactly one unit; and the address must be a station's,
    /// since the answer is sent to it (SLLA) or it names the claimant of a conflict (TLLA).
    #[test]
    fn link_layer_options_must_carry_one_station_address() {
        let group = solicited_node(ip("2001:db8::10"));
        let long_slla = [1, 2, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            decode_frame(&ns_with(ip("fe80::2"), group, &long_slla)),
            Err(DecodeError::Invalid(_))
        ));
        for mac in [MacAddr::BROADCAST, MacAddr::ZERO, MacAddr([0x33, 0x33, 0, 0, 0, 1])] {
            let slla = link_layer_option(OPTION_SOURCE_LINK_LAYER_ADDRESS, mac);
            assert!(
                matches!(
                    decode_frame(&ns_with(ip("fe80::2"), group, &slla)),
                    Err(DecodeError::Invalid(_))
                ),
                "SLLA {mac}"
            );
            let na = NeighborAdvertisement {
                source: ip("2001:db8::10"),
                destination: ALL_NODES,
                target: ip("2001:db8::10"),
                router: false,
                solicited: false,
                override_flag: true,
                target_mac: Some(mac),
            }
            .to_frame(CLIENT, MacAddr::ipv6_multicast(ALL_NODES));
            assert!(matches!(decode_frame(&na), Err(DecodeError::Invalid(_))), "TLLA {mac}");
        }
        // Duplicated options: the first counts, as in Linux.
        let other = MacAddr([0x02, 0, 0, 0, 0, 0x09]);
        let twice = [
            link_layer_option(OPTION_SOURCE_LINK_LAYER_ADDRESS, CLIENT),
            link_layer_option(OPTION_SOURCE_LINK_LAYER_ADDRESS, other),
        ]
        .concat();
        let Ok(Packet::NeighborSolicitation(_, ns)) = decode_frame(&ns_with(ip("fe80::2"), group, &twice)) else {
            panic!("not NS")
        };
        assert_eq!(ns.source_mac, Some(CLIENT));
    }

    /// RFC 4861 §7.1.2: the advertisements read for conflict detection are validated like solicitations.
    #[test]
    fn enforces_rfc_4861_advertisement_validation() {
        let na = |target: &str, destination: Ipv6Addr, solicited: bool| {
            NeighborAdvertisement {
                source: ip("2001:db8::10"),
                destination,
                target: ip(target),
                router: false,
                solicited,
                override_flag: true,
                target_mac: Some(CLIENT),
            }
            .to_frame(CLIENT, MacAddr::ipv6_multicast(ALL_NODES))
        };
        assert!(decode_frame(&na("2001:db8::10", ALL_NODES, false)).is_ok());
        assert!(decode_frame(&na("2001:db8::10", ip("fe80::1"), true)).is_ok());
        // Target multicast; solicited to a group (all-nodes or any other).
        assert!(matches!(
            decode_frame(&na("ff02::1", ALL_NODES, false)),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode_frame(&na("2001:db8::10", ip("ff02::2"), true)),
            Err(DecodeError::Invalid(_))
        ));
        let good = na("2001:db8::10", ALL_NODES, false);
        let mut hop = good.clone();
        hop[21] = 1;
        assert_eq!(decode_frame(&hop), Err(DecodeError::HopLimit(1)));
        let mut checksum = good.clone();
        checksum[60] ^= 1;
        assert_eq!(decode_frame(&checksum), Err(DecodeError::Checksum));
        let mut code = good.clone();
        code[55] = 3;
        fix_checksum(&mut code);
        assert!(matches!(decode_frame(&code), Err(DecodeError::Invalid(_))));
        let mut short = good[..74].to_vec();
        short[18..20].copy_from_slice(&20u16.to_be_bytes());
        fix_checksum(&mut short);
        assert!(
            matches!(decode_frame(&short), Err(DecodeError::Truncated { layer: "NS/NA", .. })),
            "20 bytes < 24"
        );
    }

    /// RFC 4861 §7.1.1: a solicitation from `::` (DAD) goes to a solicited-node group; to any other destination,
    /// unicast or all-nodes, it is invalid.
    #[test]
    fn dad_solicitation_only_to_a_solicited_node_group() {
        for destination in ["2001:db8::10", "ff02::1", "ff02::2"] {
            let ns = ns_with(Ipv6Addr::UNSPECIFIED, ip(destination), &[]);
            assert!(
                matches!(decode_frame(&ns), Err(DecodeError::Invalid(_))),
                "DAD NS to {destination}"
            );
        }
        let ns = ns_with(Ipv6Addr::UNSPECIFIED, solicited_node(ip("2001:db8::10")), &[]);
        assert!(decode_frame(&ns).is_ok());
    }

    #[test]
    fn truncation_at_every_length_is_an_error() {
        for len in 14..NS.len() {
            assert!(decode_frame(&NS[..len]).unwrap_err().is_malformed(), "length {len}");
        }
        // Ethernet padding after the IPv6 payload is ignored.
        let mut padded = NS.to_vec();
        padded.extend_from_slice(&[0; 10]);
        assert!(decode_frame(&padded).is_ok());
    }

    fn fix_checksum(frame: &mut [u8]) {
        frame[56..58].copy_from_slice(&[0, 0]);
        let icmp = Icmpv6Slice::from_slice(&frame[54..]).unwrap();
        let sum = icmp
            .header()
            .icmp_type
            .calc_checksum(
                frame[22..38].try_into().unwrap(),
                frame[38..54].try_into().unwrap(),
                icmp.payload(),
            )
            .unwrap();
        frame[56..58].copy_from_slice(&sum.to_be_bytes());
    }
}
