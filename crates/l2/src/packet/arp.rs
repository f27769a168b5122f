//! ARP for IPv4 over Ethernet (RFC 826), with the probe and announcement forms of RFC 5227 §2.1 and §2.3.

use std::net::Ipv4Addr;

use etherparse::{ArpEthIpv4Packet, ArpHardwareId, ArpPacketSlice, EtherType, PacketBuilder};

use super::{DecodeError, MacAddr, pad};

/// ARP operation (RFC 826 `ar$op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOperation {
    Request,
    Reply,
}

/// An Ethernet/IPv4 ARP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpMessage {
    pub operation: ArpOperation,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpMessage {
    /// RFC 5227 §2.1.1: an ARP probe carries sender IP 0.0.0.0.
    pub fn is_probe(&self) -> bool {
        self.operation == ArpOperation::Request && self.sender_ip.is_unspecified()
    }

    /// A gratuitous ARP (RFC 5227 §2.3 announcement, or the reply form): sender IP equals target IP.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Encodes the message in an Ethernet frame from `eth_source` to `eth_destination`, padded to 60 bytes.
    pub fn to_frame(&self, eth_source: MacAddr, eth_destination: MacAddr) -> Vec<u8> {
        let arp = ArpEthIpv4Packet {
            operation: match self.operation {
                ArpOperation::Request => etherparse::ArpOperation::REQUEST,
                ArpOperation::Reply => etherparse::ArpOperation::REPLY,
            },
            sender_mac: self.sender_mac.0,
            sender_ipv4: self.sender_ip.octets(),
            target_mac: self.target_mac.0,
            target_ipv4: self.target_ip.octets(),
        };
        let builder = PacketBuilder::ethernet2(eth_source.0, eth_destination.0).arp(arp.into());
        let mut frame = Vec::with_capacity(super::MIN_FRAME_LEN);
        // Writing fixed-size headers into a Vec cannot fail.
        builder.write_to_vec(&mut frame).expect("ARP frame of fixed size");
        pad(frame)
    }
}

/// Decodes the ARP payload of an Ethernet frame (trailing padding is ignored).
pub fn decode(payload: &[u8]) -> Result<ArpMessage, DecodeError> {
    let arp = ArpPacketSlice::from_slice(payload).map_err(|e| DecodeError::Truncated {
        layer: "ARP message",
        len: payload.len(),
        need: e.required_len,
    })?;
    if arp.hw_addr_type() != ArpHardwareId::ETHERNET || arp.proto_addr_type() != EtherType::IPV4 {
        return Err(DecodeError::Unsupported("ARP for other than Ethernet/IPv4"));
    }
    if arp.hw_addr_size() != 6 || arp.proto_addr_size() != 4 {
        return Err(DecodeError::Invalid("ARP address lengths for Ethernet/IPv4"));
    }
    let operation = match arp.operation() {
        etherparse::ArpOperation::REQUEST => ArpOperation::Request,
        etherparse::ArpOperation::REPLY => ArpOperation::Reply,
        _ => {
            return Err(DecodeError::Unsupported("ARP operation other than request or reply"));
        }
    };
    let mac = |b: &[u8]| MacAddr(b.try_into().unwrap_or_default());
    let ip = |b: &[u8]| Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap_or_default());
    let message = ArpMessage {
        operation,
        sender_mac: mac(arp.sender_hw_addr()),
        sender_ip: ip(arp.sender_protocol_addr()),
        target_mac: mac(arp.target_hw_addr()),
        target_ip: ip(arp.target_protocol_addr()),
    };
    // RFC 826: the reply goes to the sender hardware address, and RFC 5227 §2.4 blames it for a conflict; a group or
    // zero address is no station (RFC 1812 §3.3.2: such an ARP is not to be believed).
    if !message.sender_mac.is_station() {
        return Err(DecodeError::Invalid("ARP sender hardware address (group or zero)"));
    }
    // RFC 1112 §4, RFC 919 §7, RFC 1122 §3.2.1.3: a multicast, limited broadcast or loopback address is never a
    // source (Linux drops these requests as martians).
    let sender = message.sender_ip;
    if sender.is_multicast() || sender.is_broadcast() || sender.is_loopback() {
        return Err(DecodeError::Invalid(
            "ARP sender IP address (multicast, broadcast or loopback)",
        ));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::super::golden::{ARP_REPLY as REPLY, ARP_REQUEST as REQUEST};
    use super::super::{EthernetHeader, Packet, decode as decode_frame};
    use super::*;

    const OURS: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    const CLIENT: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]);

    #[test]
    fn decodes_a_captured_request() {
        let Ok(Packet::Arp(eth, arp)) = decode_frame(&REQUEST) else {
            panic!("not ARP")
        };
        assert_eq!(
            eth,
            EthernetHeader {
                destination: MacAddr::BROADCAST,
                source: CLIENT
            }
        );
        assert_eq!(
            arp,
            ArpMessage {
                operation: ArpOperation::Request,
                sender_mac: CLIENT,
                sender_ip: Ipv4Addr::new(198, 51, 100, 1),
                target_mac: MacAddr::ZERO,
                target_ip: Ipv4Addr::new(198, 51, 100, 10),
            }
        );
        assert!(!arp.is_probe());
        assert!(!arp.is_gratuitous());
    }

    #[test]
    fn encodes_a_reply_byte_for_byte() {
        let reply = ArpMessage {
            operation: ArpOperation::Reply,
            sender_mac: OURS,
            sender_ip: Ipv4Addr::new(198, 51, 100, 10),
            target_mac: CLIENT,
            target_ip: Ipv4Addr::new(198, 51, 100, 1),
        };
        assert_eq!(reply.to_frame(OURS, CLIENT), REPLY);
    }

    #[test]
    fn round_trips_and_recognizes_probes() {
        let probe = ArpMessage {
            operation: ArpOperation::Request,
            sender_mac: OURS,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(192, 0, 2, 7),
        };
        let frame = probe.to_frame(OURS, MacAddr::BROADCAST);
        assert_eq!(frame.len(), 60);
        let Ok(Packet::Arp(_, decoded)) = decode_frame(&frame) else {
            panic!("not ARP")
        };
        assert_eq!(decoded, probe);
        assert!(decoded.is_probe());
    }

    #[test]
    fn rejects_truncated_and_foreign_arp() {
        for len in 14..42 {
            assert!(
                decode_frame(&REQUEST[..len]).unwrap_err().is_malformed(),
                "length {len}"
            );
        }
        let mut other_hw = REQUEST;
        other_hw[15] = 6; // IEEE 802 hardware type
        assert_eq!(
            decode_frame(&other_hw),
            Err(DecodeError::Unsupported("ARP for other than Ethernet/IPv4"))
        );
        let mut bad_len = REQUEST;
        bad_len[18] = 8;
        assert!(decode_frame(&bad_len).is_err());
        let mut rarp = REQUEST;
        rarp[21] = 3;
        assert!(!decode_frame(&rarp).unwrap_err().is_malformed());
    }

    /// RFC 826 / RFC 5227 §2: only Ethernet (htype 1, hlen 6) carrying IPv4 (ptype 0x0800, plen 4) is ours.
    #[test]
    fn drops_every_other_hardware_and_protocol_combination() {
        for (at, value) in [
            (14, [0x00, 0x06]), // htype IEEE 802
            (14, [0x00, 0x00]),
            (16, [0x86, 0xdd]), // ptype IPv6
            (16, [0x08, 0x06]),
        ] {
            let mut frame = REQUEST;
            frame[at..at + 2].copy_from_slice(&value);
            assert_eq!(
                decode_frame(&frame),
                Err(DecodeError::Unsupported("ARP for other than Ethernet/IPv4")),
                "bytes {at}: {value:?}"
            );
        }
        for (hlen, plen) in [(8, 4), (0, 4), (6, 16), (6, 0), (4, 6)] {
            let mut frame = REQUEST;
            frame[18] = hlen;
            frame[19] = plen;
            assert!(decode_frame(&frame).is_err(), "hlen {hlen}, plen {plen}");
            assert!(!matches!(decode_frame(&frame), Ok(Packet::Arp(..))));
        }
    }

    #[test]
    fn rejects_impossible_senders() {
        for mac in [MacAddr::BROADCAST, MacAddr::ZERO, MacAddr([0x01, 0x00, 0x5e, 0, 0, 1])] {
            let mut frame = REQUEST;
            frame[22..28].copy_from_slice(&mac.0);
            assert_eq!(
                decode_frame(&frame),
                Err(DecodeError::Invalid("ARP sender hardware address (group or zero)")),
                "{mac}"
            );
        }
        for ip in ["224.0.0.1", "239.1.2.3", "255.255.255.255", "127.0.0.1"] {
            let mut frame = REQUEST;
            frame[28..32].copy_from_slice(&ip.parse::<Ipv4Addr>().unwrap().octets());
            assert!(matches!(decode_frame(&frame), Err(DecodeError::Invalid(_))), "{ip}");
        }
        // A probe's sender is 0.0.0.0 (RFC 5227 §2.1.1): valid.
        let mut probe = REQUEST;
        probe[28..32].copy_from_slice(&[0, 0, 0, 0]);
        assert!(decode_frame(&probe).is_ok());
    }
}
