//! Addresses that are never a Service's host address, whatever a pool lists: the allocator subtracts them from
//! every pool entry and refuses requests for them.
//!
//! Only blocks that cannot work as a destination a client reaches, in any network, are listed; blocks that are
//! merely not globally routed (private space, documentation, 240.0.0.0/4, NAT64) stay the operator's call.

use std::fmt;
use std::net::IpAddr;

use crate::range::{AddrRange, Family};

/// A block of addresses Herald never allocates, with what it is and the RFC that says so.
#[derive(Debug, PartialEq, Eq)]
pub struct NeverAllocated {
    range: AddrRange,
    cidr: &'static str,
    what: &'static str,
    rfc: &'static str,
}

/// An IPv4 block; `cidr` is how it is shown (a test checks it against the numbers).
const fn v4(
    cidr: &'static str,
    first: [u8; 4],
    prefix_len: u32,
    what: &'static str,
    rfc: &'static str,
) -> NeverAllocated {
    let first = u32::from_be_bytes(first);
    let last = match u32::MAX.checked_shr(prefix_len) {
        Some(host_bits) => first | host_bits,
        None => first,
    };
    NeverAllocated {
        range: AddrRange::from_raw(Family::V4, first as u128, last as u128),
        cidr,
        what,
        rfc,
    }
}

/// An IPv6 block; `cidr` is how it is shown (a test checks it against the numbers).
const fn v6(cidr: &'static str, first: u128, prefix_len: u32, what: &'static str, rfc: &'static str) -> NeverAllocated {
    let last = match u128::MAX.checked_shr(prefix_len) {
        Some(host_bits) => first | host_bits,
        None => first,
    };
    NeverAllocated {
        range: AddrRange::from_raw(Family::V6, first, last),
        cidr,
        what,
        rfc,
    }
}

impl NeverAllocated {
    /// Every block, sorted by family, first address, then last address (the walks below rely on it).
    pub const ALL: [NeverAllocated; 11] = [
        // RFC 1122 §3.2.1.3 (a): {0, 0} is "this host on this network", only a source while a host learns
        // its address; 0.0.0.0/8 is never a destination (RFC 6890 §2.2.2).
        v4("0.0.0.0/8", [0, 0, 0, 0], 8, "'this network'", "RFC 1122 §3.2.1.3"),
        // RFC 1122 §3.2.1.3 (g): 127/8 must never appear outside a host.
        v4("127.0.0.0/8", [127, 0, 0, 0], 8, "loopback", "RFC 1122 §3.2.1.3"),
        // RFC 3927 §2.7: link-local packets are never forwarded, so clients off the link cannot reach them.
        v4("169.254.0.0/16", [169, 254, 0, 0], 16, "link-local", "RFC 3927 §2.7"),
        // RFC 5771: multicast group addresses, never a unicast host.
        v4("224.0.0.0/4", [224, 0, 0, 0], 4, "multicast", "RFC 5771"),
        // RFC 1122 §3.2.1.3 (c): {-1, -1} is the limited broadcast, delivered to every host on the link.
        v4(
            "255.255.255.255/32",
            [255, 255, 255, 255],
            32,
            "limited broadcast",
            "RFC 1122 §3.2.1.3",
        ),
        // RFC 4291 §2.5.2: the unspecified address must never be a destination.
        v6("::/128", 0, 128, "unspecified", "RFC 4291 §2.5.2"),
        // RFC 4291 §2.5.5.1: IPv4-compatible addresses are deprecated; stacks that still know them (Linux sit0)
        // send them into automatic tunnels instead of onto the link.
        v6("::/96", 0, 96, "IPv4-compatible (deprecated)", "RFC 4291 §2.5.5.1"),
        // RFC 4291 §2.5.3: loopback, never sent outside a node.
        v6("::1/128", 1, 128, "loopback", "RFC 4291 §2.5.3"),
        // RFC 4291 §2.5.5.2: IPv4-mapped addresses represent IPv4 peers inside a host's API, never on the wire.
        v6("::ffff:0:0/96", 0xffff << 32, 96, "IPv4-mapped", "RFC 4291 §2.5.5.2"),
        // RFC 4291 §2.5.6: link-local, routers must not forward them.
        v6("fe80::/10", 0xfe80 << 112, 10, "link-local", "RFC 4291 §2.5.6"),
        // RFC 4291 §2.7: multicast.
        v6("ff00::/8", 0xff00 << 112, 8, "multicast", "RFC 4291 §2.7"),
    ];

    /// The block holding `ip`, the narrowest if several do (`::1` is loopback before it is in `::/96`).
    /// O(blocks), and there are 11.
    pub fn containing(ip: IpAddr) -> Option<&'static NeverAllocated> {
        NeverAllocated::ALL
            .iter()
            .filter(|b| b.range.contains(ip))
            .min_by_key(|b| b.range.size())
    }

    /// The addresses of the block.
    pub fn range(&self) -> AddrRange {
        self.range
    }

    /// What the block is, e.g. `loopback`.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The RFC (and section) that gives the block its meaning.
    pub fn rfc(&self) -> &'static str {
        self.rfc
    }
}

/// `127.0.0.0/8 loopback`, as the Eip's status lists it.
impl fmt::Display for NeverAllocated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.cidr, self.what)
    }
}

/// The parts of `range` outside every [`NeverAllocated`] block, ascending. At most a handful of pieces (one
/// more than the blocks `range` crosses), whatever the size of `range`.
pub(crate) fn usable_parts(range: AddrRange) -> Vec<AddrRange> {
    let family = range.family();
    let mut parts = Vec::new();
    // Next candidate address; `None` once past the end of the address space.
    let mut next = Some(range.first_raw());
    for block in blocks_of(family) {
        let Some(from) = next else { break };
        let (lo, hi) = (block.first_raw(), block.last_raw());
        if hi < from || lo > range.last_raw() {
            continue;
        }
        if lo > from {
            parts.push(AddrRange::from_raw(family, from, lo - 1));
        }
        // `hi >= from` here, so this never moves back (a block nested in an earlier one was skipped above).
        next = hi.checked_add(1);
    }
    if let Some(from) = next
        && from <= range.last_raw()
    {
        parts.push(AddrRange::from_raw(family, from, range.last_raw()));
    }
    parts
}

/// From the first to the last address of `range` outside every [`NeverAllocated`] block, or `None` when
/// nothing is left: what [`usable_parts`] spans, without allocating.
pub(crate) fn usable_span(range: AddrRange) -> Option<AddrRange> {
    let family = range.family();
    let mut first = Some(range.first_raw());
    // Ascending starts: once a block pushes `first` past its end, only blocks starting later can hold it.
    for block in blocks_of(family) {
        if let Some(f) = first
            && block.first_raw() <= f
            && f <= block.last_raw()
        {
            first = block.last_raw().checked_add(1);
        }
    }
    let mut last = Some(range.last_raw());
    // Descending starts, the mirror image.
    for block in blocks_of(family).rev() {
        if let Some(l) = last
            && block.first_raw() <= l
            && l <= block.last_raw()
        {
            last = block.first_raw().checked_sub(1);
        }
    }
    match (first, last) {
        (Some(f), Some(l)) if f <= l => Some(AddrRange::from_raw(family, f, l)),
        _ => None,
    }
}

/// The blocks of one family, in [`NeverAllocated::ALL`] order.
fn blocks_of(family: Family) -> impl DoubleEndedIterator<Item = AddrRange> {
    NeverAllocated::ALL
        .iter()
        .map(|b| b.range)
        .filter(move |b| b.family() == family)
}

/// Whether `ip` is never a host address, by what std says about it: an oracle for tests, written
/// independently of the table.
#[cfg(test)]
pub(crate) fn std_says_never(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.octets()[0] == 0 || a.is_loopback() || a.is_link_local() || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped().is_some()
                || a.segments()[..6] == [0; 6]
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn parts(first: &str, last: &str) -> Vec<String> {
        usable_parts(AddrRange::new(ip(first), ip(last)).unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn table_is_written_as_cidrs_in_address_order() {
        let shown: Vec<String> = NeverAllocated::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "0.0.0.0/8 'this network'",
                "127.0.0.0/8 loopback",
                "169.254.0.0/16 link-local",
                "224.0.0.0/4 multicast",
                "255.255.255.255/32 limited broadcast",
                "::/128 unspecified",
                "::/96 IPv4-compatible (deprecated)",
                "::1/128 loopback",
                "::ffff:0:0/96 IPv4-mapped",
                "fe80::/10 link-local",
                "ff00::/8 multicast",
            ]
        );
        for b in &NeverAllocated::ALL {
            let net: ipnet::IpNet = b.cidr.parse().unwrap();
            assert_eq!(
                (net.network(), net.broadcast()),
                (b.range.first(), b.range.last()),
                "{b}"
            );
        }
        assert!(
            NeverAllocated::ALL.is_sorted_by_key(|b| b.range),
            "sorted by family, first, last"
        );
    }

    #[test]
    fn the_narrowest_block_names_an_address() {
        let named = |s: &str| NeverAllocated::containing(ip(s)).map(|b| b.what());
        assert_eq!(named("127.0.0.1"), Some("loopback"));
        assert_eq!(named("0.0.0.0"), Some("'this network'"));
        assert_eq!(named("255.255.255.255"), Some("limited broadcast"));
        assert_eq!(named("255.255.255.254"), None, "240.0.0.0/4 stays allocatable");
        assert_eq!(named("::"), Some("unspecified"));
        assert_eq!(named("::1"), Some("loopback"));
        assert_eq!(named("::192.0.2.1"), Some("IPv4-compatible (deprecated)"));
        assert_eq!(named("::ffff:192.0.2.1"), Some("IPv4-mapped"));
        assert_eq!(named("fe80::1"), Some("link-local"));
        assert_eq!(named("ff02::1"), Some("multicast"));
        assert_eq!(named("2001:db8::1"), None);
        assert_eq!(named("192.0.2.1"), None);
    }

    #[test]
    fn parts_skip_every_block_and_keep_the_rest() {
        assert_eq!(
            parts("0.0.0.0", "255.255.255.255"),
            [
                "1.0.0.0-126.255.255.255",
                "128.0.0.0-169.253.255.255",
                "169.255.0.0-223.255.255.255",
                "240.0.0.0-255.255.255.254"
            ]
        );
        assert_eq!(
            parts("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            [
                "::1:0:0-::fffe:ffff:ffff",
                "::1:0:0:0-fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "fec0::-feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            ]
        );
        assert_eq!(parts("127.0.0.1", "127.0.0.9"), Vec::<String>::new());
        assert_eq!(
            parts("126.255.255.254", "128.0.0.1"),
            ["126.255.255.254-126.255.255.255", "128.0.0.0-128.0.0.1"]
        );
        assert_eq!(parts("192.0.2.1", "192.0.2.9"), ["192.0.2.1-192.0.2.9"]);
        assert_eq!(
            parts("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn agrees_with_std_around_every_block_edge() {
        let mut probes = Vec::new();
        for b in &NeverAllocated::ALL {
            for edge in [b.range.first_raw(), b.range.last_raw()] {
                for delta in -3i64..=3 {
                    let v = edge.checked_add_signed(i128::from(delta));
                    let max = match b.range.family() {
                        Family::V4 => u128::from(u32::MAX),
                        Family::V6 => u128::MAX,
                    };
                    if let Some(v) = v.filter(|v| *v <= max) {
                        probes.push(crate::range::from_u128(b.range.family(), v));
                    }
                }
            }
        }
        probes.push(IpAddr::V4(Ipv4Addr::new(240, 0, 0, 1)));
        probes.push(IpAddr::V6(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 1)));
        for &p in &probes {
            assert_eq!(NeverAllocated::containing(p).is_some(), std_says_never(p), "{p}");
            let one = AddrRange::new(p, p).unwrap();
            assert_eq!(usable_parts(one).is_empty(), std_says_never(p), "{p}");
        }
        // The span agrees with the parts for every range between two probes.
        for &p in &probes {
            for &q in &probes {
                let Some(r) = AddrRange::new(p, q) else { continue };
                let parts = usable_parts(r);
                let spanned = parts
                    .first()
                    .zip(parts.last())
                    .map(|(a, b)| AddrRange::new(a.first(), b.last()).unwrap());
                assert_eq!(usable_span(r), spanned, "{r}");
            }
        }
    }
}
