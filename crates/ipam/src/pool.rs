//! Pools: parsing an Eip's address list into sorted ranges, and the rules deciding which Services a pool
//! serves.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{EntryError, PoolError};
use crate::never_allocated::{NeverAllocated, usable_parts, usable_span};
use crate::range::{AddrRange, Family, to_u128};
use crate::request::ServiceRequest;
use crate::selector::LabelSelector;

/// A pool as the user wrote it (the controller converts an `Eip` into this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The Eip's name.
    pub name: String,
    /// CIDRs, `A-B` ranges and single addresses; IPv4 and IPv6 may mix.
    pub addresses: Vec<String>,
    /// `spec.disable`: no new addresses; existing allocations stay valid.
    pub disabled: bool,
    /// `spec.autoAssign`: when false, only Services that name the pool or request one of its addresses get
    /// addresses from it.
    pub auto_assign: bool,
    /// `spec.priority`: among pools a Service may use, the lowest number is tried first; ties by name.
    pub priority: i32,
    /// `spec.namespaces`: namespaces allowed by name.
    pub namespaces: Vec<String>,
    /// `spec.namespaceSelector`: namespaces allowed by their labels.
    pub namespace_selector: Option<LabelSelector>,
    /// `spec.serviceSelector`: Services allowed by their labels.
    pub service_selector: Option<LabelSelector>,
}

impl PoolSpec {
    /// An enabled, auto-assigning pool with priority 0 that serves every namespace.
    pub fn new(name: impl Into<String>, addresses: &[&str]) -> Self {
        Self {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            disabled: false,
            auto_assign: true,
            priority: 0,
            namespaces: Vec::new(),
            namespace_selector: None,
            service_selector: None,
        }
    }
}

/// One parsed address entry: the text the user wrote and the addresses it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    /// The entry as written (trimmed).
    pub text: String,
    /// The addresses the entry spans (a CIDR without its network and broadcast addresses). Those in a
    /// [`NeverAllocated`] block are not the pool's: see [`Pool::usable`].
    pub range: AddrRange,
}

/// A validated pool. Entries are sorted by (family, first address) and never overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    name: String,
    entries: Vec<PoolEntry>,
    /// The entries minus the [`NeverAllocated`] blocks: sorted, disjoint, never empty.
    usable: Vec<AddrRange>,
    /// The [`NeverAllocated`] blocks the entries touch, in [`NeverAllocated::ALL`] order.
    left_out: Vec<&'static NeverAllocated>,
    disabled: bool,
    auto_assign: bool,
    priority: i32,
    namespaces: BTreeSet<String>,
    namespace_selector: Option<LabelSelector>,
    service_selector: Option<LabelSelector>,
    totals: [u128; 2],
}

/// Why a pool does not serve a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRefusal {
    /// `spec.namespaces` / `spec.namespaceSelector` exclude the Service's namespace.
    NamespaceNotAllowed {
        /// The Service's namespace.
        namespace: String,
        /// What exactly failed.
        detail: String,
    },
    /// `spec.serviceSelector` does not match the Service's labels.
    ServiceSelectorMismatch {
        /// The selector.
        selector: String,
        /// The first requirement that failed.
        detail: String,
    },
    /// `spec.disable` is set.
    Disabled,
    /// `spec.autoAssign` is false and the Service did not ask for this pool.
    NotAutoAssign,
}

impl fmt::Display for PoolRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolRefusal::NamespaceNotAllowed { namespace: _, detail } => f.write_str(detail),
            PoolRefusal::ServiceSelectorMismatch { selector, detail } => {
                write!(
                    f,
                    "the Service's labels do not match spec.serviceSelector '{selector}': {detail}"
                )
            }
            PoolRefusal::Disabled => f.write_str("the Eip is disabled (spec.disable)"),
            PoolRefusal::NotAutoAssign => {
                f.write_str("spec.autoAssign is false; name it with herald.dev/eip or request one of its IPs")
            }
        }
    }
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

    /// The Eip's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parsed entries, sorted by family then address.
    pub fn entries(&self) -> &[PoolEntry] {
        &self.entries
    }

    /// The addresses the pool gives out: its entries minus the [`NeverAllocated`] blocks, sorted by family
    /// then address.
    pub fn usable(&self) -> &[AddrRange] {
        &self.usable
    }

    /// The [`NeverAllocated`] blocks that share addresses with the entries and were taken out of them, for
    /// the Eip's status.
    pub fn left_out(&self) -> &[&'static NeverAllocated] {
        &self.left_out
    }

    /// Whether `spec.disable` is set.
    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Whether Services get addresses from this pool without asking for it.
    pub fn auto_assign(&self) -> bool {
        self.auto_assign
    }

    /// Lower is tried first.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// Number of usable addresses of `family`. Exact: with the [`NeverAllocated`] blocks out, even `::/0`
    /// counts less than `u128::MAX`.
    pub fn total(&self, family: Family) -> u128 {
        self.totals[family.index()]
    }

    /// Whether `ip` is a usable address of the pool (never one in a [`NeverAllocated`] block).
    /// O(log entries).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let key = (Family::of(ip), to_u128(ip));
        let idx = self.usable.partition_point(|r| (r.family(), r.first_raw()) <= key);
        idx > 0 && self.usable[idx - 1].contains(ip)
    }

    /// The usable ranges of one family, ascending.
    pub(crate) fn ranges(&self, family: Family) -> impl Iterator<Item = &AddrRange> + '_ {
        self.usable.iter().filter(move |r| r.family() == family)
    }

    /// Whether the pool serves the Service's namespace and labels (ignores `disable` and `autoAssign`).
    /// A pool with neither `namespaces` nor `namespaceSelector` serves all namespaces; with either or both,
    /// a namespace is served when it is listed by name **or** its labels match the selector.
    pub fn permits(&self, req: &ServiceRequest) -> Result<(), PoolRefusal> {
        let ns = &req.key.namespace;
        let open = self.namespaces.is_empty() && self.namespace_selector.is_none();
        if !open && !self.namespaces.contains(ns) {
            let by_label = self
                .namespace_selector
                .as_ref()
                .map(|s| s.mismatch(&req.namespace_labels));
            let listed = self.namespaces.iter().cloned().collect::<Vec<_>>().join(", ");
            let detail = match by_label {
                Some(None) => None,
                Some(Some(why)) if self.namespaces.is_empty() => {
                    Some(format!("namespace '{ns}' does not match spec.namespaceSelector: {why}"))
                }
                Some(Some(why)) => Some(format!(
                    "namespace '{ns}' is not in spec.namespaces [{listed}] and does not match spec.namespaceSelector: {why}"
                )),
                None => Some(format!("namespace '{ns}' is not in spec.namespaces [{listed}]")),
            };
            if let Some(detail) = detail {
                return Err(PoolRefusal::NamespaceNotAllowed {
                    namespace: ns.clone(),
                    detail,
                });
            }
        }
        if let Some(sel) = &self.service_selector
            && let Some(detail) = sel.mismatch(&req.service_labels)
        {
            return Err(PoolRefusal::ServiceSelectorMismatch {
                selector: sel.to_string(),
                detail,
            });
        }
        Ok(())
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

/// Two pools claiming the same addresses. Allocation stays safe (an address is never handed out twice), but
/// which pool an address is counted in then depends on which pool allocated it, so the controller should
/// report this on both Eips (`Overlapping` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The first pool's name and the entry that overlaps.
    pub first: (String, String),
    /// The second pool's name and the entry that overlaps.
    pub second: (String, String),
    /// The common usable addresses, from the first to the last (a [`NeverAllocated`] block inside is not
    /// counted out).
    pub range: AddrRange,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Eip '{}' ({}) and Eip '{}' ({}) overlap on {}",
            self.first.0, self.first.1, self.second.0, self.second.1, self.range
        )
    }
}

/// Every pair of entries of different pools that share usable addresses, sorted by address. O(e · log e +
/// pairs found) for e entries in all, whatever their sizes.
pub fn find_overlaps<'a>(pools: impl IntoIterator<Item = &'a Pool>) -> Vec<Overlap> {
    let mut all: Vec<(&Pool, &PoolEntry)> = pools
        .into_iter()
        .flat_map(|p| p.entries.iter().map(move |e| (p, e)))
        .collect();
    all.sort_by(|a, b| (a.1.range, &a.0.name).cmp(&(b.1.range, &b.0.name)));
    let mut out = Vec::new();
    for (i, (pa, ea)) in all.iter().enumerate() {
        // Sorted by start, so only the following entries that start inside `ea` can overlap it.
        for (pb, eb) in &all[i + 1..] {
            let Some(common) = ea.range.intersection(&eb.range) else {
                break;
            };
            if pa.name == pb.name {
                continue;
            }
            // Both list 127.0.0.1, say: neither gives it out, so they do not compete for it.
            if let Some(range) = usable_span(common) {
                out.push(Overlap {
                    first: (pa.name.clone(), ea.text.clone()),
                    second: (pb.name.clone(), eb.text.clone()),
                    range,
                });
            }
        }
    }
    out
}

/// One side of an overlap: a pool and one of its entries.
type Side<'a> = (&'a Pool, &'a PoolEntry);

/// The overlaps of [`find_overlaps`] that involve `pool`, in the same order: the first `limit`, and how many
/// there are in all. Only `limit` of them are built, and finding them costs O(entries of `pool` · pools ·
/// log entries + overlaps), so an Eip's status stays cheap when hundreds of Eips all list `0.0.0.0/0`.
pub(crate) fn find_overlaps_of<'a>(
    pool: &'a Pool,
    others: impl IntoIterator<Item = &'a Pool>,
    limit: usize,
) -> (Vec<Overlap>, usize) {
    let mut found: Vec<(Side<'a>, Side<'a>, AddrRange)> = Vec::new();
    for other in others.into_iter().filter(|o| o.name != pool.name) {
        for mine in &pool.entries {
            // `other`'s entries are sorted and disjoint: the ones sharing addresses with `mine` are consecutive,
            // from the first that ends at or after `mine` starts.
            let key = (mine.range.family(), mine.range.first_raw());
            let start = other
                .entries
                .partition_point(|e| (e.range.family(), e.range.last_raw()) < key);
            for theirs in &other.entries[start..] {
                let Some(common) = mine.range.intersection(&theirs.range) else {
                    break;
                };
                let Some(range) = usable_span(common) else {
                    continue;
                };
                let (a, b) = ((pool, mine), (other, theirs));
                let (first, second) = if (mine.range, &pool.name) <= (theirs.range, &other.name) {
                    (a, b)
                } else {
                    (b, a)
                };
                found.push((first, second, range));
            }
        }
    }
    // The order find_overlaps produces: by the first side's entry, then the second's.
    let order = |x: &(Side<'a>, Side<'a>, AddrRange), y: &(Side<'a>, Side<'a>, AddrRange)| {
        let key = |(f, s, _): &(Side<'a>, Side<'a>, AddrRange)| (f.1.range, &f.0.name, s.1.range, &s.0.name);
        key(x).cmp(&key(y))
    };
    let total = found.len();
    if limit < total {
        found.select_nth_unstable_by(limit, order);
        found.truncate(limit);
    }
    found.sort_unstable_by(order);
    let listed = found
        .into_iter()
        .map(|((pa, ea), (pb, eb), range)| Overlap {
            first: (pa.name.clone(), ea.text.clone()),
            second: (pb.name.clone(), eb.text.clone()),
            range,
        })
        .collect();
    (listed, total)
}

/// Address counts of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyStats {
    /// Usable addresses (a /64 has 2^64 - 2; addresses in a [`NeverAllocated`] block are not counted).
    pub total: u128,
    /// Addresses held by at least one Service (a shared address counts once).
    pub used: u128,
    /// `total - used`.
    pub free: u128,
}

/// Per-family counts for an Eip's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// IPv4.
    pub ipv4: FamilyStats,
    /// IPv6.
    pub ipv6: FamilyStats,
}

impl PoolStats {
    /// The counts of `family`.
    pub fn family(&self, family: Family) -> FamilyStats {
        match family {
            Family::V4 => self.ipv4,
            Family::V6 => self.ipv6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{LabelOperator, LabelRequirement};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(s: &str) -> String {
        parse_entry(s).unwrap().to_string()
    }

    #[test]
    fn cidrs_drop_network_and_broadcast_except_point_to_point() {
        assert_eq!(range("192.0.2.0/24"), "192.0.2.1-192.0.2.254");
        assert_eq!(range("192.0.2.0/30"), "192.0.2.1-192.0.2.2");
        assert_eq!(range("192.0.2.0/31"), "192.0.2.0-192.0.2.1");
        assert_eq!(range("192.0.2.9/32"), "192.0.2.9");
        assert_eq!(range("2001:db8::/64"), "2001:db8::1-2001:db8::ffff:ffff:ffff:fffe");
        assert_eq!(range("2001:db8::/126"), "2001:db8::1-2001:db8::2");
        assert_eq!(range("2001:db8::/127"), "2001:db8::-2001:db8::1");
        assert_eq!(range("2001:db8::5/128"), "2001:db8::5");
        assert_eq!(parse_entry("2001:db8::/64").unwrap().size(), (1u128 << 64) - 2);
    }

    #[test]
    fn ranges_and_single_addresses() {
        assert_eq!(range(" 192.0.2.10 - 192.0.2.20 "), "192.0.2.10-192.0.2.20");
        assert_eq!(range("192.0.2.10-192.0.2.10"), "192.0.2.10");
        assert_eq!(range("2001:db8::1-2001:db8::ff"), "2001:db8::1-2001:db8::ff");
        assert_eq!(range("198.51.100.3"), "198.51.100.3");
        assert_eq!(range("2001:db8::3"), "2001:db8::3");
    }

    #[test]
    fn bad_entries_are_rejected_with_the_reason() {
        assert_eq!(parse_entry("  "), Err(EntryError::Empty));
        assert_eq!(parse_entry("192.0.2.300"), Err(EntryError::Malformed));
        assert_eq!(parse_entry("192.0.2.0/33"), Err(EntryError::Malformed));
        assert_eq!(parse_entry("fish"), Err(EntryError::Malformed));
        assert_eq!(
            parse_entry("192.0.2.5/24"),
            Err(EntryError::HostBitsSet {
                network: "192.0.2.0/24".into()
            })
        );
        assert_eq!(parse_entry("192.0.2.9-192.0.2.1"), Err(EntryError::Reversed));
        assert_eq!(parse_entry("192.0.2.1-2001:db8::1"), Err(EntryError::MixedFamilies));
        assert_eq!(
            parse_entry("192.0.2.1-x"),
            Err(EntryError::BadRangeEnd { end: "x".into() })
        );
    }

    #[test]
    fn pool_errors_name_the_pool_entry_and_reason() {
        let err = Pool::parse(&PoolSpec::new("web", &["192.0.2.0/24", "192.0.2.9-192.0.2.1"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Eip 'web': address entry '192.0.2.9-192.0.2.1' is invalid: the range is reversed (first address above last); write it low-high"
        );
        let err = Pool::parse(&PoolSpec::new("web", &["192.0.2.5/24"])).unwrap_err();
        assert!(err.to_string().contains("did you mean 192.0.2.0/24?"), "{err}");
        let err = Pool::parse(&PoolSpec::new("web", &[])).unwrap_err();
        assert_eq!(err, PoolError::NoAddresses { pool: "web".into() });
        let err = Pool::parse(&PoolSpec::new("web", &["192.0.2.0/28", "192.0.2.10-192.0.2.20"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Eip 'web': entries '192.0.2.0/28' and '192.0.2.10-192.0.2.20' overlap on 192.0.2.10-192.0.2.14; remove one or split them"
        );
    }

    #[test]
    fn mixed_pool_counts_each_family_and_tells_membership() {
        let pool = Pool::parse(&PoolSpec::new(
            "mixed",
            &["2001:db8::/64", "192.0.2.0/24", "198.51.100.7", "192.0.2.255"],
        ))
        .unwrap();
        assert_eq!(pool.total(Family::V4), 254 + 1 + 1);
        assert_eq!(pool.total(Family::V6), (1u128 << 64) - 2);
        assert!(
            pool.contains(ip("192.0.2.255")),
            "listed single address next to the CIDR"
        );
        assert!(!pool.contains(ip("192.0.2.0")), "network address excluded");
        assert!(pool.contains(ip("198.51.100.7")));
        assert!(!pool.contains(ip("198.51.100.8")));
        assert!(pool.contains(ip("2001:db8::ffff:0:0:1")));
        assert!(!pool.contains(ip("2001:db8:1::1")));
        let texts: Vec<_> = pool.entries().iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["192.0.2.0/24", "192.0.2.255", "198.51.100.7", "2001:db8::/64"]);
    }

    fn left_out(addresses: &[&str]) -> Vec<String> {
        let pool = Pool::parse(&PoolSpec::new("p", addresses)).unwrap();
        pool.left_out().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn never_allocated_blocks_are_taken_out_of_every_kind_of_entry() {
        let pool = Pool::parse(&PoolSpec::new("p", &["0.0.0.0/0", "::/0"])).unwrap();
        // The CIDR already leaves out 0.0.0.0 and 255.255.255.255 (network, broadcast), `::` and the last
        // address; then 0/8, 127/8, 169.254/16, 224/4 and ::/96, ::ffff:0:0/96, fe80::/10, ff00::/8 go.
        let v4 = (1u128 << 32) - 2 - ((1 << 24) - 1) - (1 << 24) - (1 << 16) - (1 << 28);
        assert_eq!(pool.total(Family::V4), v4);
        assert_eq!(v4, 3_992_911_871);
        let v6 = u128::MAX - 1 - ((1 << 32) - 1) - (1 << 32) - (1 << 118) - ((1 << 120) - 1);
        assert_eq!(pool.total(Family::V6), v6);
        assert_eq!(v6, 338_620_831_926_207_318_622_244_848_597_827_846_144);
        for never in [
            "0.0.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "239.255.255.255",
            "::1",
            "::192.0.2.1",
            "::ffff:192.0.2.1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(!pool.contains(ip(never)), "{never}");
        }
        for host in [
            "1.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "223.255.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "::1:0:0",
            "2001:db8::1",
            "fec0::1",
            "feff::1",
        ] {
            assert!(pool.contains(ip(host)), "{host}");
        }

        // Ranges and single addresses, not only CIDRs.
        let pool = Pool::parse(&PoolSpec::new(
            "p",
            &["126.255.255.254-128.0.0.1", "169.254.0.1", "ff02::1", "2001:db8::1"],
        ))
        .unwrap();
        let usable: Vec<String> = pool.usable().iter().map(ToString::to_string).collect();
        assert_eq!(
            usable,
            ["126.255.255.254-126.255.255.255", "128.0.0.0-128.0.0.1", "2001:db8::1"]
        );
        assert_eq!((pool.total(Family::V4), pool.total(Family::V6)), (4, 1));
        assert_eq!(pool.entries().len(), 4, "entries stay as written");
    }

    #[test]
    fn left_out_names_only_the_blocks_the_entries_touch() {
        assert_eq!(
            left_out(&["0.0.0.0/0"]),
            [
                "0.0.0.0/8 'this network'",
                "127.0.0.0/8 loopback",
                "169.254.0.0/16 link-local",
                "224.0.0.0/4 multicast",
            ],
            "255.255.255.255 is already left out as the CIDR's broadcast address"
        );
        assert_eq!(
            left_out(&["255.255.0.0-255.255.255.255"]),
            ["255.255.255.255/32 limited broadcast"]
        );
        assert_eq!(
            left_out(&["::/0"]),
            [
                "::/96 IPv4-compatible (deprecated)",
                "::1/128 loopback",
                "::ffff:0:0/96 IPv4-mapped",
                "fe80::/10 link-local",
                "ff00::/8 multicast",
            ],
            "`::` itself is already left out as the CIDR's first address"
        );
        assert_eq!(
            left_out(&["10.0.0.0/8", "169.254.7.7", "2001:db8::/64"]),
            ["169.254.0.0/16 link-local"]
        );
        assert!(left_out(&["192.0.2.0/24", "240.0.0.0/5", "2001:db8::/32"]).is_empty());
    }

    #[test]
    fn a_pool_of_only_never_allocated_addresses_is_invalid() {
        let err = Pool::parse(&PoolSpec::new("lo", &["127.0.0.0/8"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Eip 'lo': every address it lists is one Herald never allocates (127.0.0.0/8 loopback, RFC 1122 §3.2.1.3); list addresses a client can reach"
        );
        let err = Pool::parse(&PoolSpec::new("odd", &["::1", "224.0.0.0/24", "fe80::/64"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Eip 'odd': every address it lists is one Herald never allocates (224.0.0.0/4 multicast, RFC 5771; \
::/96 IPv4-compatible (deprecated), RFC 4291 §2.5.5.1; ::1/128 loopback, RFC 4291 §2.5.3; fe80::/10 link-local, RFC 4291 §2.5.6); \
list addresses a client can reach"
        );
        assert!(
            Pool::parse(&PoolSpec::new("lo", &["127.0.0.0/8", "192.0.2.1"])).is_ok(),
            "one usable address is enough"
        );
    }

    #[test]
    fn pools_sharing_only_never_allocated_addresses_do_not_overlap() {
        let a = Pool::parse(&PoolSpec::new("a", &["0.0.0.0/0"])).unwrap();
        let b = Pool::parse(&PoolSpec::new("b", &["127.0.0.1", "192.0.2.1"])).unwrap();
        let c = Pool::parse(&PoolSpec::new("c", &["127.0.0.1", "198.51.100.1"])).unwrap();
        assert!(find_overlaps([&b, &c]).is_empty());
        let z = Pool::parse(&PoolSpec::new("z", &["0.0.0.0/0"])).unwrap();
        let found: Vec<String> = find_overlaps([&a, &z]).iter().map(|o| o.to_string()).collect();
        assert_eq!(
            found,
            ["Eip 'a' (0.0.0.0/0) and Eip 'z' (0.0.0.0/0) overlap on 1.0.0.0-255.255.255.254"]
        );
        let found: Vec<String> = find_overlaps([&a, &b]).iter().map(|o| o.to_string()).collect();
        assert_eq!(
            found,
            ["Eip 'a' (0.0.0.0/0) and Eip 'b' (192.0.2.1) overlap on 192.0.2.1"]
        );
    }

    #[test]
    fn overlaps_between_pools_name_both_and_the_range() {
        let a = Pool::parse(&PoolSpec::new("a", &["192.0.2.0/24", "2001:db8::/120"])).unwrap();
        let b = Pool::parse(&PoolSpec::new("b", &["192.0.2.200-192.0.2.255", "198.51.100.0/24"])).unwrap();
        let c = Pool::parse(&PoolSpec::new("c", &["2001:db8::80"])).unwrap();
        let found: Vec<String> = find_overlaps([&a, &b, &c]).iter().map(|o| o.to_string()).collect();
        assert_eq!(
            found,
            [
                "Eip 'a' (192.0.2.0/24) and Eip 'b' (192.0.2.200-192.0.2.255) overlap on 192.0.2.200-192.0.2.254",
                "Eip 'a' (2001:db8::/120) and Eip 'c' (2001:db8::80) overlap on 2001:db8::80",
            ]
        );
        assert!(find_overlaps([&b, &c]).is_empty());
    }

    #[test]
    fn permits_by_namespace_name_or_labels_and_service_labels() {
        let mut spec = PoolSpec::new("p", &["192.0.2.0/24"]);
        spec.namespaces = vec!["prod".into()];
        spec.namespace_selector = Some(LabelSelector {
            match_labels: [("team".to_string(), "web".to_string())].into(),
            match_expressions: vec![],
        });
        spec.service_selector = Some(LabelSelector {
            match_labels: Default::default(),
            match_expressions: vec![LabelRequirement {
                key: "expose".into(),
                operator: LabelOperator::Exists,
            }],
        });
        let pool = Pool::parse(&spec).unwrap();

        let mut req = ServiceRequest::new("prod", "s");
        req.service_labels.insert("expose".into(), "yes".into());
        assert_eq!(pool.permits(&req), Ok(()), "listed by name");

        req.key.namespace = "other".into();
        req.namespace_labels.insert("team".into(), "web".into());
        assert_eq!(pool.permits(&req), Ok(()), "selected by label");

        req.namespace_labels.insert("team".into(), "db".into());
        assert_eq!(
            pool.permits(&req).unwrap_err().to_string(),
            "namespace 'other' is not in spec.namespaces [prod] and does not match spec.namespaceSelector: label 'team' is 'db', not 'web'"
        );

        req.key.namespace = "prod".into();
        req.service_labels.clear();
        assert_eq!(
            pool.permits(&req).unwrap_err().to_string(),
            "the Service's labels do not match spec.serviceSelector 'expose': label 'expose' is missing"
        );
    }
}
