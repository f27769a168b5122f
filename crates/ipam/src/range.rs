//! Address arithmetic. Both families are handled as `u128` so one code path serves IPv4 and IPv6; an IPv4
//! address occupies the low 32 bits. Ranges are inclusive on both ends.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The other family.
    pub fn other(self) -> Self {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    /// Index into per-family arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`to_u128`]. For IPv4 only the low 32 bits are used; callers pass values that came from
/// IPv4 addresses, so nothing is lost.
pub(crate) fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    family: Family,
    first: u128,
    last: u128,
}

impl AddrRange {
    /// The range `first..=last`, or `None` when the families differ or `first > last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<Self> {
        let family = Family::of(first);
        if family != Family::of(last) || to_u128(first) > to_u128(last) {
            return None;
        }
        Some(Self::from_raw(family, to_u128(first), to_u128(last)))
    }

    pub(crate) const fn from_raw(family: Family, first: u128, last: u128) -> Self {
        debug_assert!(first <= last);
        Self { family, first, last }
    }

    /// The family of both ends.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The lowest address.
    pub fn first(&self) -> IpAddr {
        from_u128(self.family, self.first)
    }

    /// The highest address.
    pub fn last(&self) -> IpAddr {
        from_u128(self.family, self.last)
    }

    pub(crate) fn first_raw(&self) -> u128 {
        self.first
    }

    pub(crate) fn last_raw(&self) -> u128 {
        self.last
    }

    /// Number of addresses; saturates at `u128::MAX` for the whole IPv6 space (2^128 addresses).
    pub fn size(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&to_u128(ip))
    }

    /// The common part of two ranges, if any.
    pub fn intersection(&self, other: &AddrRange) -> Option<AddrRange> {
        if self.family != other.family {
            return None;
        }
        let first = self.first.max(other.first);
        let last = self.last.min(other.last);
        (first <= last).then(|| Self::from_raw(self.family, first, last))
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first())
        } else {
            write!(f, "{}-{}", self.first(), self.last())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn u128_round_trip_keeps_family() {
        for s in [
            "0.0.0.0",
            "192.0.2.7",
            "255.255.255.255",
            "::",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            let a = ip(s);
            assert_eq!(from_u128(Family::of(a), to_u128(a)), a);
        }
    }

    #[test]
    fn range_rejects_reversed_and_mixed() {
        assert!(AddrRange::new(ip("192.0.2.9"), ip("192.0.2.1")).is_none());
        assert!(AddrRange::new(ip("192.0.2.1"), ip("2001:db8::1")).is_none());
        let r = AddrRange::new(ip("192.0.2.1"), ip("192.0.2.9")).unwrap();
        assert_eq!(r.size(), 9);
        assert!(r.contains(ip("192.0.2.9")));
        assert!(!r.contains(ip("192.0.2.10")));
        // An IPv6 address whose low bits equal an IPv4 address in the range is not in it.
        assert!(!r.contains(ip("::c000:205")));
    }

    #[test]
    fn whole_v6_space_size_saturates() {
        let r = AddrRange::new(ip("::"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).unwrap();
        assert_eq!(r.size(), u128::MAX);
    }

    #[test]
    fn intersection_and_display() {
        let a = AddrRange::new(ip("192.0.2.1"), ip("192.0.2.100")).unwrap();
        let b = AddrRange::new(ip("192.0.2.50"), ip("192.0.2.200")).unwrap();
        assert_eq!(a.intersection(&b).unwrap().to_string(), "192.0.2.50-192.0.2.100");
        let c = AddrRange::new(ip("192.0.2.100"), ip("192.0.2.100")).unwrap();
        assert_eq!(a.intersection(&c).unwrap().to_string(), "192.0.2.100");
        let d = AddrRange::new(ip("2001:db8::1"), ip("2001:db8::5")).unwrap();
        assert!(a.intersection(&d).is_none());
    }
}
