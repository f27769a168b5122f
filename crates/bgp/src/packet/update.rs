//! UPDATE (RFC 4271 §4.3): path attributes, NLRI, MP_REACH/MP_UNREACH (RFC 4760) and the packing of many prefixes
//! per message.
//!
//! Received UPDATEs are only validated (Herald is announce-only and installs nothing), following RFC 7606: only what
//! keeps the NLRI from being located or parsed resets the session (with the RFC 4271 §6.3 NOTIFICATION); any other
//! malformation is "treat-as-withdraw", "attribute discard" or "AFI/SAFI disable" ([`ErrorHandling`]), which for us
//! means it is logged, counted and the session stays up. Decoding lives in `update/decode.rs`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::wire::{AS_TRANS, Afi, HEADER_LEN, MAX_MESSAGE_LEN, Safi};

mod decode;

/// Attribute flags (RFC 4271 §4.3).
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const IPV6_EXTENDED_COMMUNITIES: u8 = 25;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// ORIGIN values (RFC 4271 §5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment types (RFC 4271 §4.3, RFC 5065 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsSegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsSegment {
    pub kind: AsSegmentType,
    pub asns: Vec<u32>,
}

/// A large community (RFC 8092): global administrator, local data 1, local data 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity(pub u32, pub u32, pub u32);

/// One path attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathAttribute {
    Origin(Origin),
    AsPath(Vec<AsSegment>),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    Communities(Vec<u32>),
    LargeCommunities(Vec<LargeCommunity>),
    /// RFC 4760 §3. `next_hop` holds the raw next-hop field (16 or 32 bytes for IPv6 unicast).
    MpReach {
        afi: Afi,
        safi: Safi,
        next_hop: Vec<u8>,
        nlri: Vec<IpNet>,
    },
    /// RFC 4760 §4. Empty `withdrawn` is the End-of-RIB marker for the family (RFC 4724 §2).
    MpUnreach {
        afi: Afi,
        safi: Safi,
        withdrawn: Vec<IpNet>,
    },
    /// RFC 6793 §3: the real AS path next to a 2-octet AS_PATH with AS_TRANS.
    As4Path(Vec<AsSegment>),
    /// Anything else, kept raw.
    Other {
        flags: u8,
        type_code: u8,
        value: Vec<u8>,
    },
}

/// An UPDATE message body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Net>,
    /// Set on decode when the UPDATE was malformed in a way RFC 7606 handles without a session reset. Ignored by
    /// encode.
    pub malformed: Option<Malformed>,
}

/// RFC 7606 §2: the ways of handling a malformed UPDATE that keep the session up. The fourth, "session reset", is a
/// [`super::DecodeError`]. Herald installs nothing it receives, so all three come down to: log, count, carry on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorHandling {
    /// The malformed attribute is ignored and the rest of the UPDATE processed.
    AttributeDiscard,
    /// The routes the UPDATE announces count as withdrawn.
    TreatAsWithdraw,
    /// RFC 4760 §7: the routes of this family are ignored for the rest of the session.
    AfiSafiDisable(Afi, Safi),
}

impl ErrorHandling {
    /// RFC 7606 §3(h): when several errors ask for different approaches, the strongest is used.
    pub(crate) fn strength(self) -> u8 {
        match self {
            ErrorHandling::AttributeDiscard => 0,
            ErrorHandling::TreatAsWithdraw => 1,
            ErrorHandling::AfiSafiDisable(..) => 2,
        }
    }
}

impl fmt::Display for ErrorHandling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorHandling::AttributeDiscard => f.write_str("attribute discard"),
            ErrorHandling::TreatAsWithdraw => f.write_str("treat-as-withdraw"),
            ErrorHandling::AfiSafiDisable(afi, safi) => write!(f, "AFI/SAFI disable (AFI {}, SAFI {})", afi.0, safi.0),
        }
    }
}

/// A malformed UPDATE the session survives: how it was handled (the strongest approach its errors asked for) and
/// the first error that asked for it. The reason names attributes and numbers, never more than a few bytes of what
/// the peer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub handling: ErrorHandling,
    pub reason: String,
}

impl Update {
    /// The End-of-RIB marker (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an empty MP_UNREACH otherwise.
    pub fn end_of_rib(afi: Afi) -> Update {
        if afi == Afi::IPV4 {
            Update::default()
        } else {
            Update {
                attributes: vec![PathAttribute::MpUnreach {
                    afi,
                    safi: Safi::UNICAST,
                    withdrawn: Vec::new(),
                }],
                ..Update::default()
            }
        }
    }

    /// Is this an End-of-RIB marker, and for which family?
    pub fn end_of_rib_family(&self) -> Option<Afi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Afi::IPV4),
            [PathAttribute::MpUnreach { afi, withdrawn, .. }] if withdrawn.is_empty() => Some(*afi),
            _ => None,
        }
    }

    pub(crate) fn encode_body(&self, four_octet_as: bool, out: &mut Vec<u8>) {
        let mut withdrawn = Vec::new();
        for p in &self.withdrawn {
            encode_prefix(&IpNet::V4(*p), &mut withdrawn);
        }
        out.extend((withdrawn.len() as u16).to_be_bytes());
        out.extend(withdrawn);
        let mut attrs = Vec::new();
        for a in &self.attributes {
            a.encode(four_octet_as, &mut attrs);
        }
        out.extend((attrs.len() as u16).to_be_bytes());
        out.extend(attrs);
        for p in &self.nlri {
            encode_prefix(&IpNet::V4(*p), out);
        }
    }
}

/// Octets a prefix takes in NLRI.
pub fn prefix_wire_len(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

fn encode_prefix(p: &IpNet, out: &mut Vec<u8>) {
    let n = prefix_wire_len(p) - 1;
    out.push(p.prefix_len());
    match p.trunc().network() {
        IpAddr::V4(a) => out.extend(&a.octets()[..n]),
        IpAddr::V6(a) => out.extend(&a.octets()[..n]),
    }
}

fn encode_as_path(segments: &[AsSegment], four_octet_as: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for seg in segments {
        // RFC 4271 §4.3: at most 255 ASNs per segment; longer sequences are split.
        for chunk in seg.asns.chunks(255) {
            v.push(seg.kind as u8);
            v.push(chunk.len() as u8);
            for &asn in chunk {
                if four_octet_as {
                    v.extend(asn.to_be_bytes());
                } else {
                    // RFC 6793 §4.2.2: ASNs that need 4 octets become AS_TRANS; AS4_PATH carries the truth.
                    v.extend(u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
                }
            }
        }
    }
    v
}

impl PathAttribute {
    fn encode(&self, four_octet_as: bool, out: &mut Vec<u8>) {
        const WELL_KNOWN: u8 = flag::TRANSITIVE;
        const OPT_TRANS: u8 = flag::OPTIONAL | flag::TRANSITIVE;
        let (flags, type_code, value): (u8, u8, Vec<u8>) = match self {
            PathAttribute::Origin(o) => (WELL_KNOWN, attr_type::ORIGIN, vec![*o as u8]),
            PathAttribute::AsPath(segs) => (WELL_KNOWN, attr_type::AS_PATH, encode_as_path(segs, four_octet_as)),
            PathAttribute::NextHop(a) => (WELL_KNOWN, attr_type::NEXT_HOP, a.octets().to_vec()),
            PathAttribute::MultiExitDisc(m) => (flag::OPTIONAL, attr_type::MULTI_EXIT_DISC, m.to_be_bytes().to_vec()),
            PathAttribute::LocalPref(l) => (WELL_KNOWN, attr_type::LOCAL_PREF, l.to_be_bytes().to_vec()),
            PathAttribute::Communities(cs) => (
                OPT_TRANS,
                attr_type::COMMUNITIES,
                cs.iter().flat_map(|c| c.to_be_bytes()).collect(),
            ),
            PathAttribute::LargeCommunities(cs) => (
                OPT_TRANS,
                attr_type::LARGE_COMMUNITIES,
                cs.iter()
                    .flat_map(|c| [c.0, c.1, c.2])
                    .flat_map(u32::to_be_bytes)
                    .collect(),
            ),
            PathAttribute::MpReach {
                afi,
                safi,
                next_hop,
                nlri,
            } => {
                let mut v = afi.0.to_be_bytes().to_vec();
                v.extend([safi.0, next_hop.len() as u8]);
                v.extend(next_hop);
                v.push(0);
                for p in nlri {
                    encode_prefix(p, &mut v);
                }
                (flag::OPTIONAL, attr_type::MP_REACH_NLRI, v)
            }
            PathAttribute::MpUnreach { afi, safi, withdrawn } => {
                let mut v = afi.0.to_be_bytes().to_vec();
                v.push(safi.0);
                for p in withdrawn {
                    encode_prefix(p, &mut v);
                }
                (flag::OPTIONAL, attr_type::MP_UNREACH_NLRI, v)
            }
            PathAttribute::As4Path(segs) => (OPT_TRANS, attr_type::AS4_PATH, encode_as_path(segs, true)),
            PathAttribute::Other {
                flags,
                type_code,
                value,
            } => (*flags & !flag::EXTENDED_LENGTH, *type_code, value.clone()),
        };
        // MP attributes always use the extended length so packing can count their size without a threshold.
        let is_mp = matches!(type_code, attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI);
        if value.len() > 255 || is_mp {
            out.extend([flags | flag::EXTENDED_LENGTH, type_code]);
            out.extend((value.len() as u16).to_be_bytes());
        } else {
            out.extend([flags, type_code, value.len() as u8]);
        }
        out.extend(value);
    }
}

/// What a session attaches to every route it announces (resolved from the route's policy and the session: AS path,
/// next hop, LOCAL_PREF).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboundAttributes {
    pub origin: Origin,
    /// One AS_SEQUENCE; empty on iBGP.
    pub as_path: Vec<u32>,
    pub next_hop: IpAddr,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
}

impl OutboundAttributes {
    /// The attributes in type-code order, without NEXT_HOP/MP_REACH (the family decides those).
    fn common(&self, four_octet_as: bool) -> Vec<PathAttribute> {
        let mut attrs = vec![PathAttribute::Origin(self.origin)];
        let segments: Vec<AsSegment> = if self.as_path.is_empty() {
            Vec::new()
        } else {
            vec![AsSegment {
                kind: AsSegmentType::Sequence,
                asns: self.as_path.clone(),
            }]
        };
        attrs.push(PathAttribute::AsPath(segments.clone()));
        if let Some(med) = self.med {
            attrs.push(PathAttribute::MultiExitDisc(med));
        }
        if let Some(lp) = self.local_pref {
            attrs.push(PathAttribute::LocalPref(lp));
        }
        if !self.communities.is_empty() {
            attrs.push(PathAttribute::Communities(self.communities.clone()));
        }
        if !four_octet_as && self.as_path.iter().any(|&a| a > u32::from(u16::MAX)) {
            attrs.push(PathAttribute::As4Path(segments));
        }
        if !self.large_communities.is_empty() {
            attrs.push(PathAttribute::LargeCommunities(self.large_communities.clone()));
        }
        attrs
    }
}

fn encoded_len(attrs: &[PathAttribute], four_octet_as: bool) -> usize {
    let mut v = Vec::new();
    for a in attrs {
        a.encode(four_octet_as, &mut v);
    }
    v.len()
}

/// Space for NLRI/withdrawn routes in a message whose other parts take `fixed` bytes.
fn budget(fixed: usize) -> usize {
    MAX_MESSAGE_LEN - HEADER_LEN - 4 - fixed
}

/// Splits `prefixes` into runs that fit `budget` bytes of NLRI each.
fn pack(prefixes: &[IpNet], budget: usize) -> Vec<Vec<IpNet>> {
    let mut out: Vec<Vec<IpNet>> = Vec::new();
    let mut used = budget; // forces a new run on the first prefix
    for p in prefixes {
        let n = prefix_wire_len(p);
        if used + n > budget {
            out.push(Vec::new());
            used = 0;
        }
        used += n;
        if let Some(run) = out.last_mut() {
            run.push(*p);
        }
    }
    out
}

/// UPDATEs announcing `prefixes` (all of one family, the family of `attrs.next_hop` for IPv4) with `attrs`, as few
/// messages as fit in 4096 bytes each. IPv6 goes in MP_REACH_NLRI with the global next hop (RFC 2545 §3).
pub fn announce_updates(attrs: &OutboundAttributes, prefixes: &[IpNet], four_octet_as: bool) -> Vec<Update> {
    let Some(first) = prefixes.first() else {
        return Vec::new();
    };
    let common = attrs.common(four_octet_as);
    match (first, attrs.next_hop) {
        (IpNet::V4(_), IpAddr::V4(nh)) => {
            let mut attributes = common;
            attributes.insert(2, PathAttribute::NextHop(nh));
            let fixed = encoded_len(&attributes, four_octet_as);
            pack(prefixes, budget(fixed))
                .into_iter()
                .map(|run| Update {
                    attributes: attributes.clone(),
                    nlri: run.into_iter().filter_map(v4).collect(),
                    ..Update::default()
                })
                .collect()
        }
        (IpNet::V6(_), IpAddr::V6(nh)) => {
            let afi = Afi::IPV6;
            let empty = PathAttribute::MpReach {
                afi,
                safi: Safi::UNICAST,
                next_hop: nh.octets().to_vec(),
                nlri: vec![],
            };
            let fixed = encoded_len(&common, four_octet_as) + encoded_len(std::slice::from_ref(&empty), four_octet_as);
            pack(prefixes, budget(fixed))
                .into_iter()
                .map(|run| {
                    // RFC 4760 §3: MP_REACH_NLRI is an optional attribute; placed by type code after ORIGIN..COMMUNITIES.
                    let mut attributes = common.clone();
                    let at = attributes
                        .iter()
                        .position(|a| matches!(a, PathAttribute::As4Path(_) | PathAttribute::LargeCommunities(_)))
                        .unwrap_or(attributes.len());
                    attributes.insert(
                        at,
                        PathAttribute::MpReach {
                            afi,
                            safi: Safi::UNICAST,
                            next_hop: nh.octets().to_vec(),
                            nlri: run,
                        },
                    );
                    Update {
                        attributes,
                        ..Update::default()
                    }
                })
                .collect()
        }
        // A next hop of the other family needs RFC 8950 extended next hop, which Herald does not negotiate.
        _ => Vec::new(),
    }
}

/// UPDATEs withdrawing `prefixes` (all of one family).
pub fn withdraw_updates(prefixes: &[IpNet]) -> Vec<Update> {
    let Some(first) = prefixes.first() else {
        return Vec::new();
    };
    match first {
        IpNet::V4(_) => pack(prefixes, budget(0))
            .into_iter()
            .map(|run| Update {
                withdrawn: run.into_iter().filter_map(v4).collect(),
                ..Update::default()
            })
            .collect(),
        IpNet::V6(_) => pack(prefixes, budget(4 + 3))
            .into_iter()
            .map(|run| Update {
                attributes: vec![PathAttribute::MpUnreach {
                    afi: Afi::IPV6,
                    safi: Safi::UNICAST,
                    withdrawn: run,
                }],
                ..Update::default()
            })
            .collect(),
    }
}

fn v4(p: IpNet) -> Option<Ipv4Net> {
    match p {
        IpNet::V4(p) => Some(p),
        IpNet::V6(_) => None,
    }
}
