//! Codec for the frames the Layer 2 responder reads and writes: ARP (RFC 826, RFC 5227) and the two Neighbor
//! Discovery messages it needs, Neighbor Solicitation and Neighbor Advertisement (RFC 4861 §4.3, §4.4).
//!
//! Decoding never panics: every hostile, truncated or invalid frame becomes a [`DecodeError`]. Frames that are
//! well-formed but not for the responder (other EtherTypes, other ICMPv6 types, VLAN tags) are
//! [`DecodeError::Unsupported`], which is not counted as malformed.

pub mod arp;
#[cfg(test)]
pub(crate) mod golden;
pub mod ndp;

use std::fmt;
use std::net::Ipv6Addr;

use etherparse::{EtherType, Ethernet2HeaderSlice};

pub use arp::{ArpMessage, ArpOperation};
pub use ndp::{NeighborAdvertisement, NeighborSolicitation};

/// Ethernet frames shorter than this (without the FCS) are padded (IEEE 802.3 minimum of 64 bytes with FCS).
pub const MIN_FRAME_LEN: usize = 60;

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00` (the unknown target hardware address of an ARP request).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Group (multicast or broadcast) address: the I/G bit of the first octet is set.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The Ethernet address IPv6 multicast `group` maps to: `33:33` + its last 32 bits (RFC 2464 §7).
    pub fn ipv6_multicast(group: Ipv6Addr) -> MacAddr {
        let o = group.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut mac {
            let part = parts
                .next()
                .ok_or_else(|| format!("`{s}` is not a MAC address (too few octets)"))?;
            *octet = u8::from_str_radix(part, 16).map_err(|_| format!("`{s}` is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("`{s}` is not a MAC address (too many octets)"));
        }
        Ok(MacAddr(mac))
    }
}

/// The Ethernet header fields the responder needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetHeader {
    pub destination: MacAddr,
    pub source: MacAddr,
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Arp(EthernetHeader, ArpMessage),
    NeighborSolicitation(EthernetHeader, NeighborSolicitation),
    NeighborAdvertisement(EthernetHeader, NeighborAdvertisement),
}

/// Why a frame was not decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Well-formed but not something the responder handles.
    #[error("unsupported frame: {0}")]
    Unsupported(&'static str),
    /// The frame ends before a header or message does.
    #[error("truncated {layer}: {len} bytes, need {need}")]
    Truncated {
        layer: &'static str,
        len: usize,
        need: usize,
    },
    /// A field has a value the RFCs forbid.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// RFC 4861 §7.1: the IP hop limit of a Neighbor Discovery message must be 255 (proves it was not routed).
    #[error("neighbor discovery message with hop limit {0}, not 255")]
    HopLimit(u8),
    /// The ICMPv6 checksum does not match.
    #[error("bad ICMPv6 checksum")]
    Checksum,
}

impl DecodeError {
    /// `true` for frames that are broken or hostile (counted as malformed), `false` for frames that are simply not
    /// for the responder.
    pub fn is_malformed(&self) -> bool {
        !matches!(self, DecodeError::Unsupported(_))
    }
}

/// Decodes one Ethernet II frame (no FCS), as an AF_PACKET socket delivers it.
pub fn decode(frame: &[u8]) -> Result<Packet, DecodeError> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| DecodeError::Truncated {
        layer: "Ethernet header",
        len: frame.len(),
        need: etherparse::Ethernet2Header::LEN,
    })?;
    let header = EthernetHeader {
        destination: MacAddr(eth.destination()),
        source: MacAddr(eth.source()),
    };
    let payload = &frame[eth.slice().len()..];
    match eth.ether_type() {
        EtherType::ARP => Ok(Packet::Arp(header, arp::decode(payload)?)),
        EtherType::IPV6 => ndp::decode(header, payload),
        EtherType::VLAN_TAGGED_FRAME | EtherType::VLAN_DOUBLE_TAGGED_FRAME | EtherType::PROVIDER_BRIDGING => Err(
            DecodeError::Unsupported("VLAN-tagged frame (bind to the VLAN sub-interface)"),
        ),
        _ => Err(DecodeError::Unsupported("EtherType is neither ARP nor IPv6")),
    }
}

/// Pads a frame with zeros to the Ethernet minimum ([`MIN_FRAME_LEN`]).
fn pad(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < MIN_FRAME_LEN {
        frame.resize(MIN_FRAME_LEN, 0);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_display_and_parse_round_trip() {
        let mac: MacAddr = "02:00:5e:10:00:0a".parse().unwrap();
        assert_eq!(mac, MacAddr([0x02, 0, 0x5e, 0x10, 0, 0x0a]));
        assert_eq!(mac.to_string(), "02:00:5e:10:00:0a");
        assert!("02:00:5e:10:00".parse::<MacAddr>().is_err());
        assert!("02:00:5e:10:00:0a:01".parse::<MacAddr>().is_err());
        assert!("zz:00:5e:10:00:0a".parse::<MacAddr>().is_err());
    }

    #[test]
    fn multicast_mac_of_solicited_node_group() {
        let group: Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
        assert_eq!(
            MacAddr::ipv6_multicast(group),
            MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        );
        assert!(MacAddr::BROADCAST.is_group());
        assert!(!MacAddr([2, 0, 0, 0, 0, 1]).is_group());
    }

    #[test]
    fn short_and_foreign_frames_are_rejected() {
        assert!(matches!(decode(&[]), Err(DecodeError::Truncated { .. })));
        assert!(decode(&[0u8; 13]).unwrap_err().is_malformed());
        let mut ipv4 = vec![0u8; 60];
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            decode(&ipv4),
            Err(DecodeError::Unsupported("EtherType is neither ARP nor IPv6"))
        );
        let mut vlan = vec![0u8; 60];
        vlan[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(!decode(&vlan).unwrap_err().is_malformed());
    }
}
