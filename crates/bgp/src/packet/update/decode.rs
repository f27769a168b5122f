//! Decoding of received UPDATEs, and the RFC 7606 decision for every malformation: a session reset (a
//! [`DecodeError`] carrying the RFC 4271 §6.3 NOTIFICATION) only where the NLRI cannot be located or parsed, else
//! one of the [`ErrorHandling`] approaches that keep the session up. One pass over the message, no recursion: work and
//! memory are linear in its length (at most 4096 bytes).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{AsSegment, AsSegmentType, ErrorHandling, Malformed, Origin, PathAttribute, Update, attr_type, flag, v4};
use crate::packet::error::DecodeError;
use crate::packet::notification::UpdateSubcode;
use crate::packet::wire::{Afi, DecodeContext, Safi};

impl Update {
    pub(crate) fn decode(body: &[u8], ctx: DecodeContext) -> Result<Update, DecodeError> {
        // RFC 7606 §3(b), §3(j): a length field inconsistent with the message leaves the NLRI unlocatable.
        let (withdrawn_field, rest) = length_prefixed(body)
            .ok_or_else(|| malformed_list("the withdrawn routes length overruns the message".into()))?;
        let (attributes_field, nlri_field) = length_prefixed(rest)
            .ok_or_else(|| malformed_list("the total path attribute length overruns the message".into()))?;
        // RFC 7606 §3(i), §5.3: prefixes that do not parse leave nothing to treat as withdrawn.
        let withdrawn =
            v4_prefixes(withdrawn_field).map_err(|why| invalid_network(format!("withdrawn routes: {why}")))?;
        let nlri = v4_prefixes(nlri_field).map_err(|why| invalid_network(format!("NLRI: {why}")))?;
        let mut update = Update {
            withdrawn,
            nlri,
            ..Update::default()
        };
        let mut errors = Errors::default();
        let mut seen = [false; 256];
        // For RFC 7606 §5.2: does MP_REACH_NLRI announce something, is there anything but MP_UNREACH_NLRI?
        let mut mp_reach_announces = false;
        let mut other_than_mp_unreach = false;
        let mut rest = attributes_field;
        while let Some(&flags) = rest.first() {
            let header_len = if flags & flag::EXTENDED_LENGTH != 0 { 4 } else { 3 };
            let Some(header) = rest.get(..header_len) else {
                // RFC 7606 §4: bytes left that cannot hold an attribute header. If they may start MP_REACH_NLRI or
                // MP_UNREACH_NLRI, that attribute is unparsed, which §3(j) does not let the session survive.
                let reason = format!("{} stray bytes after the last path attribute", rest.len());
                if rest.get(1).copied().is_some_and(is_mp) {
                    return Err(malformed_list(reason));
                }
                other_than_mp_unreach = true;
                errors.add(AttrError::withdraw(UpdateSubcode::MalformedAttributeList, &[], reason));
                break;
            };
            let type_code = header[1];
            let len = match *header {
                [_, _, hi, lo] => usize::from(u16::from_be_bytes([hi, lo])),
                [_, _, len] => usize::from(len),
                _ => 0,
            };
            let Some(raw) = rest.get(..header_len + len) else {
                // RFC 7606 §4: the last attribute runs past the list; the total attribute length still locates the
                // NLRI. MP_REACH_NLRI/MP_UNREACH_NLRI cut short are not parsed (§3(j)): reset.
                let reason = format!(
                    "{} of length {len} overruns the path attributes by {} bytes",
                    AttrName(type_code),
                    header_len + len - rest.len()
                );
                if is_mp(type_code) {
                    return Err(DecodeError::new(
                        UpdateSubcode::AttributeLengthError,
                        header.to_vec(),
                        reason,
                    ));
                }
                other_than_mp_unreach = true;
                errors.add(AttrError::withdraw(UpdateSubcode::AttributeLengthError, header, reason));
                break;
            };
            rest = &rest[raw.len()..];
            let value = &raw[header_len..];
            other_than_mp_unreach |= type_code != attr_type::MP_UNREACH_NLRI;
            if std::mem::replace(&mut seen[usize::from(type_code)], true) {
                // RFC 7606 §3(g): a second MP_REACH_NLRI/MP_UNREACH_NLRI resets; other repeats are discarded.
                let reason = format!("{} appears more than once", AttrName(type_code));
                if is_mp(type_code) {
                    return Err(malformed_list(reason));
                }
                errors.add(AttrError::discard(format!("{reason}: all but the first discarded")));
                continue;
            }
            let decoded = decode_attribute(flags, type_code, value, raw, ctx, &mut errors)?;
            if type_code == attr_type::MP_REACH_NLRI {
                // A malformed one may not be parsed right (§7.11): it is taken to announce something.
                mp_reach_announces = decoded.is_none() || mp_reach_has_nlri(value);
            }
            update.attributes.extend(decoded);
        }
        let announces = !update.nlri.is_empty() || mp_reach_announces;
        if announces {
            // RFC 7606 §3(d): missing well-known mandatory attributes; NEXT_HOP only goes with the NLRI field
            // (RFC 4760 §3: MP_REACH_NLRI carries its own).
            let required = [
                (attr_type::ORIGIN, true),
                (attr_type::AS_PATH, true),
                (attr_type::NEXT_HOP, !update.nlri.is_empty()),
            ];
            for (t, needed) in required {
                if needed && !seen[usize::from(t)] {
                    let reason = format!("well-known attribute {} is missing", AttrName(t));
                    errors.add(AttrError::withdraw(
                        UpdateSubcode::MissingWellKnownAttribute,
                        &[t],
                        reason,
                    ));
                }
            }
        }
        let Some(error) = errors.0 else {
            return Ok(update);
        };
        // RFC 7606 §5.2: an UPDATE with path attributes but nothing announced cannot be trusted to have been parsed
        // right: any error but attribute discard resets the session.
        if let Some(notify) = error.notify.filter(|_| !announces && other_than_mp_unreach) {
            let reason = format!(
                "{} in an UPDATE that announces nothing (RFC 7606 §5.2: session reset)",
                error.reason
            );
            return Err(DecodeError::new(notify.subcode, notify.data, reason));
        }
        update.malformed = Some(Malformed {
            handling: error.handling,
            reason: error.reason,
        });
        Ok(update)
    }
}

/// The NOTIFICATION (RFC 4271 §6.3 subcode and data) an error gets should RFC 7606 §5.2 make it a session reset.
struct Notify {
    subcode: UpdateSubcode,
    data: Vec<u8>,
}

/// An error in an UPDATE that does not by itself reset the session.
struct AttrError {
    handling: ErrorHandling,
    /// None for attribute discard, which never resets.
    notify: Option<Notify>,
    reason: String,
}

impl AttrError {
    fn withdraw(subcode: UpdateSubcode, data: &[u8], reason: String) -> Self {
        AttrError {
            handling: ErrorHandling::TreatAsWithdraw,
            notify: Some(Notify {
                subcode,
                data: data.to_vec(),
            }),
            reason,
        }
    }

    fn discard(reason: String) -> Self {
        AttrError {
            handling: ErrorHandling::AttributeDiscard,
            notify: None,
            reason,
        }
    }
}

/// The errors of one UPDATE: the first of the strongest approach (RFC 7606 §3(h)).
#[derive(Default)]
struct Errors(Option<AttrError>);

impl Errors {
    fn add(&mut self, e: AttrError) {
        if self
            .0
            .as_ref()
            .is_none_or(|kept| e.handling.strength() > kept.handling.strength())
        {
            self.0 = Some(e);
        }
    }
}

/// An attribute's name for reasons: `ORIGIN`, or `attribute 99`.
struct AttrName(u8);

impl fmt::Display for AttrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            attr_type::ORIGIN => "ORIGIN",
            attr_type::AS_PATH => "AS_PATH",
            attr_type::NEXT_HOP => "NEXT_HOP",
            attr_type::MULTI_EXIT_DISC => "MULTI_EXIT_DISC",
            attr_type::LOCAL_PREF => "LOCAL_PREF",
            attr_type::ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
            attr_type::AGGREGATOR => "AGGREGATOR",
            attr_type::COMMUNITIES => "COMMUNITIES",
            attr_type::ORIGINATOR_ID => "ORIGINATOR_ID",
            attr_type::CLUSTER_LIST => "CLUSTER_LIST",
            attr_type::MP_REACH_NLRI => "MP_REACH_NLRI",
            attr_type::MP_UNREACH_NLRI => "MP_UNREACH_NLRI",
            attr_type::EXTENDED_COMMUNITIES => "EXTENDED_COMMUNITIES",
            attr_type::AS4_PATH => "AS4_PATH",
            attr_type::AS4_AGGREGATOR => "AS4_AGGREGATOR",
            attr_type::IPV6_EXTENDED_COMMUNITIES => "IPv6 EXTENDED_COMMUNITIES",
            attr_type::LARGE_COMMUNITIES => "LARGE_COMMUNITY",
            other => return write!(f, "attribute {other}"),
        };
        f.write_str(name)
    }
}

fn is_mp(type_code: u8) -> bool {
    matches!(type_code, attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI)
}

/// (Optional, Transitive) of the attributes Herald recognizes: RFC 4271 §5, RFC 1997, RFC 4456, RFC 4760, RFC 4360,
/// RFC 6793, RFC 5701, RFC 8092.
fn expected_flags(type_code: u8) -> Option<(bool, bool)> {
    Some(match type_code {
        attr_type::ORIGIN
        | attr_type::AS_PATH
        | attr_type::NEXT_HOP
        | attr_type::LOCAL_PREF
        | attr_type::ATOMIC_AGGREGATE => (false, true),
        attr_type::MULTI_EXIT_DISC
        | attr_type::ORIGINATOR_ID
        | attr_type::CLUSTER_LIST
        | attr_type::MP_REACH_NLRI
        | attr_type::MP_UNREACH_NLRI => (true, false),
        attr_type::AGGREGATOR
        | attr_type::COMMUNITIES
        | attr_type::EXTENDED_COMMUNITIES
        | attr_type::AS4_PATH
        | attr_type::AS4_AGGREGATOR
        | attr_type::IPV6_EXTENDED_COMMUNITIES
        | attr_type::LARGE_COMMUNITIES => (true, true),
        _ => return None,
    })
}

/// Checks one attribute (the first of its type): RFC 7606 §3(c) and §7, RFC 6793 §4.1 and §6, RFC 8092 §6.
/// `Ok(Some)`: keep it. `Ok(None)`: dropped, its error recorded in `errors`. `Err`: the session must be reset.
fn decode_attribute(
    flags: u8,
    type_code: u8,
    value: &[u8],
    raw: &[u8],
    ctx: DecodeContext,
    errors: &mut Errors,
) -> Result<Option<PathAttribute>, DecodeError> {
    let optional = flags & flag::OPTIONAL != 0;
    let transitive = flags & flag::TRANSITIVE != 0;
    let Some(expected) = expected_flags(type_code) else {
        if !optional {
            // RFC 4271 §6.3, which RFC 7606 leaves as it is.
            return Err(DecodeError::new(
                UpdateSubcode::UnrecognizedWellKnownAttribute,
                raw.to_vec(),
                format!("unrecognized well-known attribute {type_code}"),
            ));
        }
        // RFC 4271 §5: unrecognized optional attributes are accepted (an announce-only speaker passes nothing on).
        return Ok(Some(PathAttribute::Other {
            flags,
            type_code,
            value: value.to_vec(),
        }));
    };
    let name = AttrName(type_code);
    let len = value.len();
    if (optional, transitive) != expected {
        let reason = format!("{name} has attribute flags {flags:#04x}");
        // RFC 7606 §3(c): treat-as-withdraw, except where the attribute's specification says otherwise: §5.3 for
        // MP_REACH_NLRI/MP_UNREACH_NLRI.
        if is_mp(type_code) {
            return mp_error(value, UpdateSubcode::AttributeFlagsError, raw, reason).and_then(|e| reject(errors, e));
        }
        return reject(
            errors,
            AttrError::withdraw(UpdateSubcode::AttributeFlagsError, raw, reason),
        );
    }
    let wrong_length = |want: &str| {
        let reason = format!("{name} of length {len}, expected {want}");
        AttrError::withdraw(UpdateSubcode::AttributeLengthError, raw, reason)
    };
    let discard = |why: &str| AttrError::discard(format!("{name} {why}: discarded"));
    let other = || PathAttribute::Other {
        flags,
        type_code,
        value: value.to_vec(),
    };
    let attribute = match type_code {
        // RFC 7606 §7.1.
        attr_type::ORIGIN => match *value {
            [0] => PathAttribute::Origin(Origin::Igp),
            [1] => PathAttribute::Origin(Origin::Egp),
            [2] => PathAttribute::Origin(Origin::Incomplete),
            [v] => {
                let reason = format!("ORIGIN value {v} is undefined");
                return reject(
                    errors,
                    AttrError::withdraw(UpdateSubcode::InvalidOriginAttribute, raw, reason),
                );
            }
            _ => return reject(errors, wrong_length("1")),
        },
        // RFC 7606 §7.2.
        attr_type::AS_PATH => match as_path(value, if ctx.four_octet_as { 4 } else { 2 }) {
            Err(why) => {
                return reject(
                    errors,
                    AttrError::withdraw(UpdateSubcode::MalformedAsPath, &[], format!("malformed AS_PATH: {why}")),
                );
            }
            // RFC 5065 §5: confederation segments from a peer outside our confederation (Herald is in none) make a
            // malformed AS_PATH, which RFC 7606 §3(e) treats as withdraw.
            Ok(segments) if !ctx.internal && segments.iter().any(is_confederation) => {
                let reason = "AS_PATH from an external peer has confederation segments".to_string();
                return reject(errors, AttrError::withdraw(UpdateSubcode::MalformedAsPath, &[], reason));
            }
            Ok(segments) => PathAttribute::AsPath(segments),
        },
        // RFC 7606 §7.3.
        attr_type::NEXT_HOP => match *value {
            [a, b, c, d] => PathAttribute::NextHop(Ipv4Addr::new(a, b, c, d)),
            _ => return reject(errors, wrong_length("4")),
        },
        // RFC 7606 §7.4.
        attr_type::MULTI_EXIT_DISC => match *value {
            [a, b, c, d] => PathAttribute::MultiExitDisc(u32::from_be_bytes([a, b, c, d])),
            _ => return reject(errors, wrong_length("4")),
        },
        // RFC 7606 §7.5.
        attr_type::LOCAL_PREF if !ctx.internal => return reject(errors, discard("from an external peer")),
        attr_type::LOCAL_PREF => match *value {
            [a, b, c, d] => PathAttribute::LocalPref(u32::from_be_bytes([a, b, c, d])),
            _ => return reject(errors, wrong_length("4")),
        },
        // RFC 7606 §7.6.
        attr_type::ATOMIC_AGGREGATE if len != 0 => {
            return reject(errors, discard(&format!("of length {len}, expected 0")));
        }
        // RFC 7606 §7.7.
        attr_type::AGGREGATOR => {
            let want = if ctx.four_octet_as { 8 } else { 6 };
            if len != want {
                return reject(errors, discard(&format!("of length {len}, expected {want}")));
            }
            other()
        }
        // RFC 7606 §7.8.
        attr_type::COMMUNITIES => {
            if !nonzero_multiple(len, 4) {
                return reject(errors, wrong_length("a non-zero multiple of 4"));
            }
            PathAttribute::Communities(value.chunks_exact(4).map(be_u32).collect())
        }
        // RFC 7606 §7.9, §7.10.
        attr_type::ORIGINATOR_ID | attr_type::CLUSTER_LIST if !ctx.internal => {
            return reject(errors, discard("from an external peer"));
        }
        attr_type::ORIGINATOR_ID if len != 4 => return reject(errors, wrong_length("4")),
        attr_type::CLUSTER_LIST if !nonzero_multiple(len, 4) => {
            return reject(errors, wrong_length("a non-zero multiple of 4"));
        }
        // RFC 7606 §7.11, §7.12, §5.3.
        attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI => {
            let decoded = if type_code == attr_type::MP_REACH_NLRI {
                mp_reach(value)
            } else {
                mp_unreach(value)
            };
            match decoded {
                Ok(attribute) => attribute,
                Err(why) => {
                    let reason = format!("malformed {name}: {why}");
                    return mp_error(value, UpdateSubcode::OptionalAttributeError, raw, reason)
                        .and_then(|e| reject(errors, e));
                }
            }
        }
        // RFC 7606 §7.14.
        attr_type::EXTENDED_COMMUNITIES if !nonzero_multiple(len, 8) => {
            return reject(errors, wrong_length("a non-zero multiple of 8"));
        }
        // RFC 7606 §7.15.
        attr_type::IPV6_EXTENDED_COMMUNITIES if !nonzero_multiple(len, 20) => {
            return reject(errors, wrong_length("a non-zero multiple of 20"));
        }
        // RFC 8092 §6.
        attr_type::LARGE_COMMUNITIES => {
            if !nonzero_multiple(len, 12) {
                return reject(errors, wrong_length("a non-zero multiple of 12"));
            }
            let cs = value.chunks_exact(12).map(|c| {
                let (g, rest) = c.split_at(4);
                let (a, b) = rest.split_at(4);
                super::LargeCommunity(be_u32(g), be_u32(a), be_u32(b))
            });
            PathAttribute::LargeCommunities(cs.collect())
        }
        // RFC 6793 §4.1: never sent between 4-octet speakers; discarded if it is.
        attr_type::AS4_PATH | attr_type::AS4_AGGREGATOR if ctx.four_octet_as => {
            return reject(errors, discard("from a 4-octet AS peer"));
        }
        // RFC 6793 §6.
        attr_type::AS4_AGGREGATOR if len != 8 => {
            return reject(errors, discard(&format!("of length {len}, expected 8")));
        }
        attr_type::AS4_PATH => {
            let decoded = if len < 6 || !len.is_multiple_of(2) {
                Err(format!("length {len}"))
            } else {
                as_path(value, 4)
            };
            match decoded {
                Err(why) => {
                    return reject(
                        errors,
                        AttrError::discard(format!("malformed AS4_PATH ({why}): discarded")),
                    );
                }
                // RFC 6793 §6: confederation segments are dropped, the rest of the attribute kept.
                Ok(mut segments) => {
                    if segments.iter().any(is_confederation) {
                        segments.retain(|s| !is_confederation(s));
                        errors.add(AttrError::discard(
                            "AS4_PATH has confederation segments: those discarded".to_string(),
                        ));
                    }
                    PathAttribute::As4Path(segments)
                }
            }
        }
        // Recognized, well formed, and of no use to an announce-only speaker.
        _ => other(),
    };
    Ok(Some(attribute))
}

/// RFC 7606 §5.3, §7.11: an incorrect MP_REACH_NLRI/MP_UNREACH_NLRI asks for "AFI/SAFI disable" or a session reset.
/// Herald disables the family (RFC 4760 §7: its routes are ignored for the session, as Herald ignores every received
/// route anyway) and resets only when the attribute is too short to name the family.
fn mp_error(value: &[u8], subcode: UpdateSubcode, raw: &[u8], reason: String) -> Result<AttrError, DecodeError> {
    match *value {
        [a, b, safi, ..] => Ok(AttrError {
            handling: ErrorHandling::AfiSafiDisable(Afi(u16::from_be_bytes([a, b])), Safi(safi)),
            notify: Some(Notify {
                subcode,
                data: raw.to_vec(),
            }),
            reason,
        }),
        _ => Err(DecodeError::new(subcode, raw.to_vec(), reason)),
    }
}

/// Records the error of an attribute that is dropped.
fn reject(errors: &mut Errors, e: AttrError) -> Result<Option<PathAttribute>, DecodeError> {
    errors.add(e);
    Ok(None)
}

fn is_confederation(segment: &AsSegment) -> bool {
    matches!(segment.kind, AsSegmentType::ConfedSequence | AsSegmentType::ConfedSet)
}

/// The length rule of list attributes (communities, cluster list): RFC 7606 §4 makes a zero length malformed too.
fn nonzero_multiple(len: usize, of: usize) -> bool {
    len != 0 && len.is_multiple_of(of)
}

fn be_u32(b: &[u8]) -> u32 {
    match *b {
        [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        [a, b] => u32::from(u16::from_be_bytes([a, b])),
        _ => 0,
    }
}

/// RFC 7606 §7.2 (RFC 6793 §6 for AS4_PATH): segments of `width`-octet ASNs.
fn as_path(mut v: &[u8], width: usize) -> Result<Vec<AsSegment>, String> {
    let mut segments = Vec::new();
    while !v.is_empty() {
        let [kind, count, ref rest @ ..] = *v else {
            return Err("1 byte after the last segment".to_string());
        };
        let kind = match kind {
            1 => AsSegmentType::Set,
            2 => AsSegmentType::Sequence,
            3 => AsSegmentType::ConfedSequence,
            4 => AsSegmentType::ConfedSet,
            other => return Err(format!("segment type {other} is undefined")),
        };
        if count == 0 {
            return Err("a segment of length 0".to_string());
        }
        let n = usize::from(count) * width;
        let Some(asns) = rest.get(..n) else {
            return Err(format!("a segment of {count} ASNs overruns the attribute"));
        };
        segments.push(AsSegment {
            kind,
            asns: asns.chunks_exact(width).map(be_u32).collect(),
        });
        v = &rest[n..];
    }
    Ok(segments)
}

/// RFC 7606 §5.2: whether a well-formed MP_REACH_NLRI announces something.
fn mp_reach_has_nlri(value: &[u8]) -> bool {
    match *value {
        [_, _, _, nh_len, ref rest @ ..] => rest.len() > usize::from(nh_len) + 1,
        _ => false,
    }
}

/// RFC 4760 §3, checked per RFC 7606 §5.3 and §7.11.
fn mp_reach(value: &[u8]) -> Result<PathAttribute, String> {
    let [a, b, safi, nh_len, _, ..] = *value else {
        return Err(format!("length {}, at least 5 expected", value.len()));
    };
    let rest = &value[4..];
    let (afi, safi, nh_len) = (Afi(u16::from_be_bytes([a, b])), Safi(safi), usize::from(nh_len));
    // The next hop, one reserved octet, then the NLRI.
    let Some((next_hop, [_reserved, nlri @ ..])) = rest.split_at_checked(nh_len) else {
        return Err(format!("next hop length {nh_len} leaves no room for the NLRI"));
    };
    let next_hop_lengths: &[usize] = match (afi, safi) {
        (Afi::IPV4, Safi::UNICAST) => &[4],
        // RFC 2545 §3: global, or global and link-local.
        (Afi::IPV6, Safi::UNICAST) => &[16, 32],
        // A family we never negotiate: nothing to check the next hop or NLRI against.
        _ => {
            return Ok(PathAttribute::MpReach {
                afi,
                safi,
                next_hop: next_hop.to_vec(),
                nlri: Vec::new(),
            });
        }
    };
    if !next_hop_lengths.contains(&nh_len) {
        return Err(format!(
            "a next hop of {nh_len} bytes for AFI {} SAFI {}",
            afi.0, safi.0
        ));
    }
    Ok(PathAttribute::MpReach {
        afi,
        safi,
        next_hop: next_hop.to_vec(),
        nlri: prefixes(nlri, afi)?,
    })
}

/// RFC 4760 §4, checked per RFC 7606 §5.3.
fn mp_unreach(value: &[u8]) -> Result<PathAttribute, String> {
    let [a, b, safi, ref withdrawn @ ..] = *value else {
        return Err(format!("length {}, at least 3 expected", value.len()));
    };
    let (afi, safi) = (Afi(u16::from_be_bytes([a, b])), Safi(safi));
    let withdrawn = match (afi, safi) {
        (Afi::IPV4 | Afi::IPV6, Safi::UNICAST) => prefixes(withdrawn, afi)?,
        _ => Vec::new(),
    };
    Ok(PathAttribute::MpUnreach { afi, safi, withdrawn })
}

/// Splits a field with a 2-octet length in front from what follows it.
fn length_prefixed(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = buf.split_first_chunk::<2>()?;
    rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))
}

fn malformed_list(reason: String) -> DecodeError {
    DecodeError::new(
        UpdateSubcode::MalformedAttributeList,
        Vec::new(),
        format!("malformed UPDATE: {reason}"),
    )
}

fn invalid_network(reason: String) -> DecodeError {
    DecodeError::new(UpdateSubcode::InvalidNetworkField, Vec::new(), reason)
}

fn v4_prefixes(field: &[u8]) -> Result<Vec<Ipv4Net>, String> {
    Ok(prefixes(field, Afi::IPV4)?.into_iter().filter_map(v4).collect())
}

/// RFC 4271 §4.3, RFC 4760 §5: (length, prefix) pairs with the fewest octets for the prefix; RFC 7606 §5.3 says when
/// they are syntactically incorrect.
fn prefixes(mut field: &[u8], afi: Afi) -> Result<Vec<IpNet>, String> {
    let max = if afi == Afi::IPV4 { 32 } else { 128 };
    let mut out = Vec::new();
    while let Some((&bits, rest)) = field.split_first() {
        if bits > max {
            return Err(format!("prefix length {bits} is longer than {max}"));
        }
        let n = usize::from(bits).div_ceil(8);
        let Some(bytes) = rest.get(..n) else {
            return Err(format!("a prefix of length {bits} is cut off"));
        };
        let net = if afi == Afi::IPV4 {
            let mut o = [0u8; 4];
            o[..n].copy_from_slice(bytes);
            Ipv4Net::new(Ipv4Addr::from(o), bits).map(|p| IpNet::V4(p.trunc()))
        } else {
            let mut o = [0u8; 16];
            o[..n].copy_from_slice(bytes);
            Ipv6Net::new(Ipv6Addr::from(o), bits).map(|p| IpNet::V6(p.trunc()))
        };
        out.push(net.map_err(|e| e.to_string())?);
        field = &rest[n..];
    }
    Ok(out)
}
