//! UPDATE (RFC 4271 §4.3): path attributes, NLRI, MP_REACH/MP_UNREACH (RFC 4760) and the packing of many prefixes
//! per message.
//!
//! Received UPDATEs are only validated (Herald is announce-only and installs nothing). Errors follow RFC 7606: what
//! breaks the framing of the message (attribute list, NLRI, MP_REACH/MP_UNREACH) resets the session with the RFC 4271
//! §6.3 NOTIFICATION; a malformed individual attribute makes the UPDATE "treat-as-withdraw", which for us means it is
//! counted and dropped without a reset.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::{DecodeError, subcode};
use super::message::{AS_TRANS, HEADER_LEN, MAX_MESSAGE_LEN};
use super::{Afi, Safi};

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
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
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
    /// Set on decode when RFC 7606 "treat-as-withdraw" applies: the reason. Ignored by encode.
    pub treat_as_withdraw: Option<String>,
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

    pub(crate) fn decode(body: &[u8], four_octet_as: bool) -> Result<Update, DecodeError> {
        let malformed = |what: &str| {
            DecodeError::update(
                subcode::MALFORMED_ATTRIBUTE_LIST,
                Vec::new(),
                format!("malformed UPDATE: {what}"),
            )
        };
        let wlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let withdrawn_field = body
            .get(2..2 + wlen)
            .ok_or_else(|| malformed("withdrawn routes overrun the message"))?;
        let rest = &body[2 + wlen..];
        if rest.len() < 2 {
            return Err(malformed("no total path attribute length"));
        }
        let alen = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let attrs_field = rest
            .get(2..2 + alen)
            .ok_or_else(|| malformed("path attributes overrun the message"))?;
        let nlri_field = &rest[2 + alen..];

        let mut update = Update {
            withdrawn: decode_v4_prefixes(withdrawn_field)?,
            nlri: decode_v4_prefixes(nlri_field)?,
            ..Update::default()
        };
        let mut seen = [false; 256];
        let mut rest = attrs_field;
        while !rest.is_empty() {
            if rest.len() < 3 {
                return Err(malformed("truncated attribute header"));
            }
            let (flags, type_code) = (rest[0], rest[1]);
            let (len, hdr) = if flags & flag::EXTENDED_LENGTH != 0 {
                if rest.len() < 4 {
                    return Err(malformed("truncated attribute header"));
                }
                (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4)
            } else {
                (usize::from(rest[2]), 3)
            };
            let value = rest.get(hdr..hdr + len).ok_or_else(|| {
                DecodeError::update(
                    subcode::ATTRIBUTE_LENGTH_ERROR,
                    rest[..hdr].to_vec(),
                    format!("attribute {type_code} of length {len} overruns the attribute list"),
                )
            })?;
            let raw = &rest[..hdr + len];
            rest = &rest[hdr + len..];
            let is_mp = matches!(type_code, attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI);
            if std::mem::replace(&mut seen[usize::from(type_code)], true) {
                // RFC 7606 §3.g: duplicates are discarded, except MP_REACH/MP_UNREACH which reset the session.
                if is_mp {
                    return Err(malformed("MP_REACH_NLRI or MP_UNREACH_NLRI appears twice"));
                }
                continue;
            }
            match decode_attribute(flags, type_code, value, raw, four_octet_as) {
                Ok(Some(attr)) => update.attributes.push(attr),
                Ok(None) => {}
                Err(AttrError::Reset(e)) => return Err(e),
                Err(AttrError::TreatAsWithdraw(reason)) => {
                    update.treat_as_withdraw.get_or_insert(reason);
                }
            }
        }
        // RFC 4271 §6.3 / RFC 7606 §3.d: missing well-known attributes make the UPDATE treat-as-withdraw.
        let has = |t: u8| seen[usize::from(t)];
        let reach = !update.nlri.is_empty() || has(attr_type::MP_REACH_NLRI);
        if reach && update.treat_as_withdraw.is_none() {
            for (t, name) in [(attr_type::ORIGIN, "ORIGIN"), (attr_type::AS_PATH, "AS_PATH")] {
                if !has(t) {
                    update.treat_as_withdraw = Some(format!("missing well-known attribute {name}"));
                }
            }
            if !update.nlri.is_empty() && !has(attr_type::NEXT_HOP) {
                update.treat_as_withdraw = Some("missing well-known attribute NEXT_HOP".to_string());
            }
        }
        Ok(update)
    }
}

enum AttrError {
    Reset(DecodeError),
    TreatAsWithdraw(String),
}

/// The flags a known attribute must carry (optional, transitive), RFC 4271 §5 and the defining RFCs.
fn expected_flags(type_code: u8) -> Option<(bool, bool)> {
    Some(match type_code {
        attr_type::ORIGIN | attr_type::AS_PATH | attr_type::NEXT_HOP | attr_type::LOCAL_PREF => (false, true),
        attr_type::ATOMIC_AGGREGATE => (false, true),
        attr_type::MULTI_EXIT_DISC | attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI => (true, false),
        attr_type::COMMUNITIES | attr_type::AS4_PATH | attr_type::LARGE_COMMUNITIES => (true, true),
        _ => return None,
    })
}

fn decode_attribute(
    flags: u8,
    type_code: u8,
    value: &[u8],
    raw: &[u8],
    four_octet_as: bool,
) -> Result<Option<PathAttribute>, AttrError> {
    let is_mp = matches!(type_code, attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI);
    let reset = |sub: u8, reason: String| AttrError::Reset(DecodeError::update(sub, raw.to_vec(), reason));
    let taw = |reason: String| AttrError::TreatAsWithdraw(reason);
    let optional = flags & flag::OPTIONAL != 0;
    if let Some((opt, trans)) = expected_flags(type_code) {
        let transitive = flags & flag::TRANSITIVE != 0;
        // RFC 4271 §6.3: the Transitive bit of optional non-transitive attributes must be 0, of well-known ones 1.
        if optional != opt || (!opt && !transitive) || (opt && !trans && transitive) {
            let reason = format!("attribute {type_code} has flags {flags:#04x}");
            return Err(if is_mp {
                reset(subcode::ATTRIBUTE_FLAGS_ERROR, reason)
            } else {
                taw(reason)
            });
        }
    } else if !optional {
        // RFC 4271 §6.3: an unrecognized well-known attribute.
        return Err(reset(
            subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
            format!("unrecognized well-known attribute {type_code}"),
        ));
    }
    let len_err = |name: &str| taw(format!("{name} attribute has length {}", value.len()));
    let u32_at = |v: &[u8]| u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    Ok(Some(match type_code {
        attr_type::ORIGIN => match value {
            [0] => PathAttribute::Origin(Origin::Igp),
            [1] => PathAttribute::Origin(Origin::Egp),
            [2] => PathAttribute::Origin(Origin::Incomplete),
            [v] => return Err(taw(format!("invalid ORIGIN value {v}"))),
            _ => return Err(len_err("ORIGIN")),
        },
        attr_type::AS_PATH => PathAttribute::AsPath(
            decode_as_path(value, four_octet_as).ok_or_else(|| taw("malformed AS_PATH".to_string()))?,
        ),
        attr_type::AS4_PATH => match decode_as_path(value, true) {
            Some(p) => PathAttribute::As4Path(p),
            // RFC 7606 §7.1 via RFC 6793 §6: a malformed AS4_PATH is discarded, the UPDATE kept.
            None => return Ok(None),
        },
        attr_type::NEXT_HOP => match value {
            [a, b, c, d] => PathAttribute::NextHop(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => return Err(len_err("NEXT_HOP")),
        },
        attr_type::MULTI_EXIT_DISC if value.len() == 4 => PathAttribute::MultiExitDisc(u32_at(value)),
        attr_type::MULTI_EXIT_DISC => return Err(len_err("MULTI_EXIT_DISC")),
        // RFC 7606 §7.5: LOCAL_PREF from an eBGP peer is discarded; we ignore its value either way.
        attr_type::LOCAL_PREF if value.len() == 4 => PathAttribute::LocalPref(u32_at(value)),
        attr_type::LOCAL_PREF => return Err(len_err("LOCAL_PREF")),
        attr_type::COMMUNITIES if !value.is_empty() && value.len().is_multiple_of(4) => {
            PathAttribute::Communities(value.chunks_exact(4).map(u32_at).collect())
        }
        attr_type::COMMUNITIES => return Err(len_err("COMMUNITIES")),
        attr_type::LARGE_COMMUNITIES if !value.is_empty() && value.len().is_multiple_of(12) => {
            PathAttribute::LargeCommunities(
                value
                    .chunks_exact(12)
                    .map(|c| LargeCommunity(u32_at(c), u32_at(&c[4..]), u32_at(&c[8..])))
                    .collect(),
            )
        }
        attr_type::LARGE_COMMUNITIES => return Err(len_err("LARGE_COMMUNITIES")),
        attr_type::MP_REACH_NLRI => decode_mp_reach(value).map_err(|reason| {
            reset(
                subcode::OPTIONAL_ATTRIBUTE_ERROR,
                format!("malformed MP_REACH_NLRI: {reason}"),
            )
        })?,
        attr_type::MP_UNREACH_NLRI => decode_mp_unreach(value).map_err(|reason| {
            reset(
                subcode::OPTIONAL_ATTRIBUTE_ERROR,
                format!("malformed MP_UNREACH_NLRI: {reason}"),
            )
        })?,
        _ => PathAttribute::Other {
            flags,
            type_code,
            value: value.to_vec(),
        },
    }))
}

fn decode_as_path(mut v: &[u8], four_octet_as: bool) -> Option<Vec<AsSegment>> {
    let width = if four_octet_as { 4 } else { 2 };
    let mut segments = Vec::new();
    while !v.is_empty() {
        let (&kind, &count) = (v.first()?, v.get(1)?);
        let kind = match kind {
            1 => AsSegmentType::Set,
            2 => AsSegmentType::Sequence,
            3 => AsSegmentType::ConfedSequence,
            4 => AsSegmentType::ConfedSet,
            _ => return None,
        };
        // RFC 7606 §7.2: a zero-length segment is malformed.
        if count == 0 {
            return None;
        }
        let body = v.get(2..2 + usize::from(count) * width)?;
        let asns = body
            .chunks_exact(width)
            .map(|c| {
                if width == 4 {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        segments.push(AsSegment { kind, asns });
        v = &v[2 + usize::from(count) * width..];
    }
    Some(segments)
}

fn decode_mp_reach(value: &[u8]) -> Result<PathAttribute, String> {
    if value.len() < 5 {
        return Err(format!("{} bytes", value.len()));
    }
    let afi = Afi(u16::from_be_bytes([value[0], value[1]]));
    let safi = Safi(value[2]);
    let nh_len = usize::from(value[3]);
    let next_hop = value
        .get(4..4 + nh_len)
        .ok_or("next hop overruns the attribute")?
        .to_vec();
    // One reserved octet (RFC 4760 §3), then NLRI.
    let nlri_field = value.get(5 + nh_len..).ok_or("no reserved octet")?;
    let nlri = match (afi, safi) {
        (Afi::IPV6, Safi::UNICAST) => {
            if !matches!(nh_len, 16 | 32) {
                return Err(format!("IPv6 next hop of {nh_len} bytes"));
            }
            decode_prefixes(nlri_field, Afi::IPV6).map_err(|e| e.reason)?
        }
        (Afi::IPV4, Safi::UNICAST) => decode_prefixes(nlri_field, Afi::IPV4).map_err(|e| e.reason)?,
        // A family we never negotiated: nothing to validate the NLRI against.
        _ => Vec::new(),
    };
    Ok(PathAttribute::MpReach {
        afi,
        safi,
        next_hop,
        nlri,
    })
}

fn decode_mp_unreach(value: &[u8]) -> Result<PathAttribute, String> {
    if value.len() < 3 {
        return Err(format!("{} bytes", value.len()));
    }
    let afi = Afi(u16::from_be_bytes([value[0], value[1]]));
    let safi = Safi(value[2]);
    let withdrawn = match (afi, safi) {
        (Afi::IPV4 | Afi::IPV6, Safi::UNICAST) => decode_prefixes(&value[3..], afi).map_err(|e| e.reason)?,
        _ => Vec::new(),
    };
    Ok(PathAttribute::MpUnreach { afi, safi, withdrawn })
}

fn decode_v4_prefixes(field: &[u8]) -> Result<Vec<Ipv4Net>, DecodeError> {
    Ok(decode_prefixes(field, Afi::IPV4)?
        .into_iter()
        .filter_map(|p| match p {
            IpNet::V4(p) => Some(p),
            IpNet::V6(_) => None,
        })
        .collect())
}

/// RFC 4271 §4.3 / RFC 4760 §5: (length, prefix) pairs with the fewest octets for the prefix.
fn decode_prefixes(mut field: &[u8], afi: Afi) -> Result<Vec<IpNet>, DecodeError> {
    let max = if afi == Afi::IPV4 { 32 } else { 128 };
    let invalid = |reason: String| DecodeError::update(subcode::INVALID_NETWORK_FIELD, Vec::new(), reason);
    let mut out = Vec::new();
    while let Some((&bits, rest)) = field.split_first() {
        if bits > max {
            return Err(invalid(format!("prefix length {bits} is longer than {max}")));
        }
        let n = usize::from(bits).div_ceil(8);
        let bytes = rest
            .get(..n)
            .ok_or_else(|| invalid(format!("prefix of length {bits} is truncated")))?;
        let net = if afi == Afi::IPV4 {
            let mut o = [0u8; 4];
            o[..n].copy_from_slice(bytes);
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(o), bits)
                    .map_err(|e| invalid(e.to_string()))?
                    .trunc(),
            )
        } else {
            let mut o = [0u8; 16];
            o[..n].copy_from_slice(bytes);
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(o), bits)
                    .map_err(|e| invalid(e.to_string()))?
                    .trunc(),
            )
        };
        out.push(net);
        field = &rest[n..];
    }
    Ok(out)
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
