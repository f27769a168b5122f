//! Reading an Eip's address list: each entry into a range, the list into a [`Pool`] (sorted, disjoint, without
//! the [`NeverAllocated`] blocks), and the errors that name the Eip and entry when it cannot be read.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use super::{Pool, PoolEntry, PoolSpec};
use crate::never_allocated::{NeverAllocated, usable_parts};
use crate::range::{AddrRange, Family, to_u128};

/// Why one address entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    /// Blank entry.
    #[error("the entry is empty")]
    Empty,
    /// Not a CIDR, a range or an address.
    #[error("not an IP address, CIDR (192.0.2.0/24) or range (192.0.2.10-192.0.2.20)")]
    Malformed,
    /// One end of `A-B` is not an address.
    #[error("range end '{end}' is not an IP address")]
    BadRangeEnd {
        /// The offending end.
        end: String,
    },
    /// `A-B` with `A > B`.
    #[error("the range is reversed (first address above last); write it low-high")]
    Reversed,
    /// `A-B` with an IPv4 and an IPv6 end.
    #[error("the range mixes IPv4 and IPv6")]
    MixedFamilies,
    /// A CIDR whose address has bits set past the prefix.
    #[error("host bits are set past the prefix length; did you mean {network}?")]
    HostBitsSet {
        /// The CIDR with host bits cleared.
        network: String,
    },
}

/// Why a pool spec is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolError {
    /// `spec.addresses` is empty.
    #[error("Eip '{pool}': spec.addresses is empty; list at least one CIDR, range or address")]
    NoAddresses {
        /// The pool.
        pool: String,
    },
    /// An entry does not parse.
    #[error("Eip '{pool}': address entry '{entry}' is invalid: {reason}")]
    InvalidEntry {
        /// The pool.
        pool: String,
        /// The entry as written.
        entry: String,
        /// Why.
        #[source]
        reason: EntryError,
    },
    /// Two entries of the same pool share addresses.
    #[error("Eip '{pool}': entries '{first}' and '{second}' overlap on {common}; remove one or split them")]
    OverlappingEntries {
        /// The pool.
        pool: String,
        /// One entry.
        first: String,
        /// The other entry.
        second: String,
        /// The common addresses.
        common: AddrRange,
    },
    /// Every address listed is in a [`NeverAllocated`] block: the Eip could never give an address, which is
    /// surely a mistake, so it is treated like a typo (the previous valid version stays in use).
    #[error(
        "Eip '{pool}': every address it lists is one Herald never allocates ({}); list addresses a client can reach",
        list_blocks(.left_out)
    )]
    OnlyNeverAllocated {
        /// The pool.
        pool: String,
        /// The blocks its entries fall in.
        left_out: Vec<&'static NeverAllocated>,
    },
}

impl Pool {
    /// Validates a spec: every entry parses, the list is not empty, entries do not overlap each other, and
    /// something is left once the [`NeverAllocated`] blocks are taken out. O(entries · log entries), whatever
    /// the entries' sizes.
    pub fn parse(spec: &PoolSpec) -> Result<Pool, PoolError> {
        if spec.addresses.is_empty() {
            return Err(PoolError::NoAddresses {
                pool: spec.name.clone(),
            });
        }
        let mut entries = Vec::with_capacity(spec.addresses.len());
        for raw in &spec.addresses {
            let range = parse_entry(raw).map_err(|reason| PoolError::InvalidEntry {
                pool: spec.name.clone(),
                entry: raw.clone(),
                reason,
            })?;
            entries.push(PoolEntry {
                text: raw.trim().to_string(),
                range,
            });
        }
        entries.sort_by_key(|e| e.range);
        for pair in entries.windows(2) {
            if let Some(common) = pair[0].range.intersection(&pair[1].range) {
                return Err(PoolError::OverlappingEntries {
                    pool: spec.name.clone(),
                    first: pair[0].text.clone(),
                    second: pair[1].text.clone(),
                    common,
                });
            }
        }
        let left_out: Vec<&'static NeverAllocated> = NeverAllocated::ALL
            .iter()
            .filter(|block| touches(&entries, &block.range()))
            .collect();
        // Entries are sorted and disjoint, so their parts are too.
        let usable: Vec<AddrRange> = entries.iter().flat_map(|e| usable_parts(e.range)).collect();
        if usable.is_empty() {
            return Err(PoolError::OnlyNeverAllocated {
                pool: spec.name.clone(),
                left_out,
            });
        }
        // Cannot saturate: the blocks take at least ff00::/8 out of the IPv6 space.
        let mut totals = [0u128; 2];
        for r in &usable {
            let t = &mut totals[r.family().index()];
            *t = t.saturating_add(r.size());
        }
        Ok(Pool {
            name: spec.name.clone(),
            entries,
            usable,
            left_out,
            disabled: spec.disabled,
            auto_assign: spec.auto_assign,
            priority: spec.priority,
            namespaces: spec.namespaces.iter().cloned().collect(),
            namespace_selector: spec.namespace_selector.clone(),
            service_selector: spec.service_selector.clone(),
            totals,
        })
    }
}

/// Parses one address entry into its usable addresses.
///
/// - `192.0.2.0/24`: the CIDR without its network and broadcast addresses (`.1-.254`); /31 and /32 keep
///   every address (RFC 3021 point-to-point links have no broadcast).
/// - IPv6 CIDRs are treated the same way: the first and last address are left out (the first is the
///   subnet-router anycast address, RFC 4291 §2.6.1) except for /127 (RFC 6164) and /128.
/// - `192.0.2.10-192.0.2.20`: both ends included; same family, first ≤ last.
/// - `192.0.2.7`: that address.
///
/// A CIDR with host bits set (`192.0.2.5/24`) is rejected rather than silently widened.
pub fn parse_entry(raw: &str) -> Result<AddrRange, EntryError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(EntryError::Empty);
    }
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| EntryError::Malformed)?;
        if net.addr() != net.network() {
            return Err(EntryError::HostBitsSet {
                network: net.trunc().to_string(),
            });
        }
        let (first, last) = (to_u128(net.network()), to_u128(net.broadcast()));
        let family = Family::of(net.addr());
        let keep_all = net.max_prefix_len() - net.prefix_len() <= 1;
        let range = if keep_all {
            AddrRange::from_raw(family, first, last)
        } else {
            AddrRange::from_raw(family, first + 1, last - 1)
        };
        return Ok(range);
    }
    if let Some((a, b)) = text.split_once('-') {
        let first: IpAddr = a.trim().parse().map_err(|_| EntryError::BadRangeEnd {
            end: a.trim().to_string(),
        })?;
        let last: IpAddr = b.trim().parse().map_err(|_| EntryError::BadRangeEnd {
            end: b.trim().to_string(),
        })?;
        if Family::of(first) != Family::of(last) {
            return Err(EntryError::MixedFamilies);
        }
        return AddrRange::new(first, last).ok_or(EntryError::Reversed);
    }
    let ip: IpAddr = text.parse().map_err(|_| EntryError::Malformed)?;
    Ok(AddrRange::from_raw(Family::of(ip), to_u128(ip), to_u128(ip)))
}

/// Whether any of the sorted, disjoint `entries` shares an address with `block`. O(log entries).
fn touches(entries: &[PoolEntry], block: &AddrRange) -> bool {
    // Disjoint and sorted by start, so sorted by end too: the first entry ending at or after the block's start
    // is the only candidate.
    let key = (block.family(), block.first_raw());
    let idx = entries.partition_point(|e| (e.range.family(), e.range.last_raw()) < key);
    entries.get(idx).is_some_and(|e| e.range.intersection(block).is_some())
}

fn list_blocks(blocks: &[&NeverAllocated]) -> String {
    blocks
        .iter()
        .map(|b| format!("{b}, {}", b.rfc()))
        .collect::<Vec<_>>()
        .join("; ")
}
