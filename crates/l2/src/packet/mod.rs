//! Codec for the frames the Layer 2 responder reads and writes: ARP (RFC 826, RFC 5227) and the two Neighbor
//! Discovery messages it needs, Neighbor Solicitation and Neighbor Advertisement (RFC 4861 §4.3, §4.4).
//!
//! Decoding never panics: every hostile, truncated or invalid frame becomes a [`DecodeError`]. Frames that are
//! well-formed but not for the responder (other EtherTypes, other ICMPv6 types, other VLANs) are
//! [`DecodeError::Unsupported`], which is not counted as malformed.
//!
//! A frame is decoded as it was on the wire: the socket shell puts back the VLAN tag the kernel moved into metadata
//! ([`restore_vlan_tag`]), so the rule "a VLAN is another network" is decided here, with the rest.

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

    /// Can this be the address of a station? Not a group address and not all zeros (IEEE 802.3 §3.2.3: a source
    /// address is an individual address; Linux bridges drop frames from anything else, `is_valid_ether_addr`).
    pub fn is_station(self) -> bool {
        !self.is_group() && self != MacAddr::ZERO
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

/// Size of an IEEE 802.1Q tag (TPID and TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// The VLAN identifier bits of a tag's TCI.
const VLAN_ID_MASK: u16 = 0x0fff;

/// Is `ether_type` a VLAN tag protocol identifier (802.1Q, 802.1ad, or the old QinQ 0x9100)?
fn is_vlan_tpid(ether_type: EtherType) -> bool {
    matches!(
        ether_type,
        EtherType::VLAN_TAGGED_FRAME | EtherType::PROVIDER_BRIDGING | EtherType::VLAN_DOUBLE_TAGGED_FRAME
    )
}

/// Decodes one Ethernet II frame (no FCS), with its VLAN tag if it had one on the wire (see [`restore_vlan_tag`]).
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
    let (mut ether_type, mut payload) = (eth.ether_type(), &frame[eth.slice().len()..]);
    if is_vlan_tpid(ether_type) {
        let Some(&[tci_hi, tci_lo, type_hi, type_lo]) = payload.first_chunk::<VLAN_TAG_LEN>() else {
            return Err(DecodeError::Truncated {
                layer: "VLAN tag",
                len: payload.len(),
                need: VLAN_TAG_LEN,
            });
        };
        // IEEE 802.1Q §9.6: VLAN ID 0 is a priority tag, the frame belongs to the port's own (untagged) network, as
        // the Linux kernel treats it. Any other VLAN is another network, whose hosts are not ours to answer or to
        // count as conflicts; so is a second tag inside a priority tag.
        ether_type = EtherType(u16::from_be_bytes([type_hi, type_lo]));
        if u16::from_be_bytes([tci_hi, tci_lo]) & VLAN_ID_MASK != 0 || is_vlan_tpid(ether_type) {
            return Err(DecodeError::Unsupported(
                "frame of another VLAN (to answer on a VLAN, attach its sub-interface)",
            ));
        }
        payload = &payload[VLAN_TAG_LEN..];
    }
    if ether_type != EtherType::ARP && ether_type != EtherType::IPV6 {
        return Err(DecodeError::Unsupported("EtherType is neither ARP nor IPv6"));
    }
    // IEEE 802.3 §3.2.3: only a station sends frames; a group or zero source is forged.
    if !header.source.is_station() {
        return Err(DecodeError::Invalid("Ethernet source address (group or zero)"));
    }
    if ether_type == EtherType::ARP {
        Ok(Packet::Arp(header, arp::decode(payload)?))
    } else {
        ndp::decode(header, payload)
    }
}

/// Puts back the VLAN tag (`tpid`, `tci`) the kernel moved out of the frame in `buf[..len]` into packet metadata
/// (`PACKET_AUXDATA`), so the frame reads as it was on the wire. Returns the new length; a frame that fills `buf`
/// loses its last 4 bytes (it was truncated anyway).
pub fn restore_vlan_tag(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> usize {
    const AT: usize = 12;
    let len = len.min(buf.len());
    if len < AT {
        return len;
    }
    let kept = len.min(buf.len().saturating_sub(VLAN_TAG_LEN));
    if kept < AT {
        return len;
    }
    buf.copy_within(AT..kept, AT + VLAN_TAG_LEN);
    buf[AT..AT + 2].copy_from_slice(&tpid.to_be_bytes());
    buf[AT + 2..AT + VLAN_TAG_LEN].copy_from_slice(&tci.to_be_bytes());
    kept + VLAN_TAG_LEN
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

    fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
        let mut buf = frame.to_vec();
        buf.resize(frame.len() + VLAN_TAG_LEN, 0);
        let len = restore_vlan_tag(&mut buf, frame.len(), tpid, tci);
        buf.truncate(len);
        buf
    }

    #[test]
    fn restoring_a_tag_gives_the_frame_as_it_was_on_the_wire() {
        let mut buf = [0u8; 24];
        buf[..18].copy_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x06, 0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(restore_vlan_tag(&mut buf, 18, 0x8100, 0x2064), 22);
        assert_eq!(
            buf[..22],
            [
                1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x81, 0x00, 0x20, 0x64, 0x08, 0x06, 0xaa, 0xbb, 0xcc, 0xdd
            ]
        );
        // A full buffer loses its tail, never overflows; a runt frame is left alone.
        let mut full = [7u8; 20];
        assert_eq!(restore_vlan_tag(&mut full, 20, 0x88a8, 5), 20);
        assert_eq!(full[12..16], [0x88, 0xa8, 0, 5]);
        assert_eq!(full[16..20], [7, 7, 7, 7]);
        let mut runt = [9u8; 8];
        assert_eq!(restore_vlan_tag(&mut runt, 8, 0x8100, 5), 8);
        assert_eq!(runt, [9u8; 8]);
        assert_eq!(restore_vlan_tag(&mut [0u8; 14], 100, 0x8100, 5), 14);
    }

    /// "A VLAN is another network": a request that came tagged is not for the untagged interface, whatever the tag
    /// protocol, and so is a double tag. A priority tag (VLAN 0) is the untagged network, as for the kernel.
    #[test]
    fn frames_of_other_vlans_are_not_ours() {
        use golden::{ARP_REQUEST, NS};
        for frame in [&ARP_REQUEST[..], &NS[..]] {
            let untagged = decode(frame).unwrap();
            for tpid in [0x8100, 0x88a8, 0x9100] {
                for tci in [100, 0x2064, 0xe001, 4095] {
                    let err = decode(&tagged(frame, tpid, tci)).unwrap_err();
                    assert!(
                        matches!(err, DecodeError::Unsupported(m) if m.contains("another VLAN")),
                        "{err}"
                    );
                }
                // Priority-tagged (VLAN 0, any priority): the same frame as untagged.
                assert_eq!(decode(&tagged(frame, tpid, 0)), Ok(untagged.clone()));
                assert_eq!(decode(&tagged(frame, tpid, 0xe000)), Ok(untagged.clone()));
                // QinQ: a VLAN tag inside a priority tag is still another VLAN.
                let inner = tagged(frame, 0x8100, 100);
                assert!(!decode(&tagged(&inner, tpid, 0)).unwrap_err().is_malformed());
            }
        }
        let mut truncated = ARP_REQUEST[..16].to_vec();
        truncated[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(decode(&truncated).unwrap_err().is_malformed());
    }

    #[test]
    fn frames_from_a_group_or_zero_source_are_invalid() {
        use golden::{ARP_REQUEST, NS};
        for frame in [&ARP_REQUEST[..], &NS[..]] {
            for source in [MacAddr::BROADCAST, MacAddr::ZERO, MacAddr([0x33, 0x33, 0, 0, 0, 1])] {
                let mut forged = frame.to_vec();
                forged[6..12].copy_from_slice(&source.0);
                assert_eq!(
                    decode(&forged),
                    Err(DecodeError::Invalid("Ethernet source address (group or zero)"))
                );
            }
        }
    }
}
