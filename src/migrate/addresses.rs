//! Pool entries of MetalLB and OpenELB as Herald entries holding exactly the same addresses.
//!
//! A Herald CIDR leaves out its network and broadcast addresses (except /31, /32, /127, /128); MetalLB's and
//! OpenELB's hand out every address, and MetalLB's `avoidBuggyIPs` skips every IPv4 address ending in `.0` or `.255`, wherever it is in
//! the pool. So an entry whose meaning differs becomes ranges (`first-last`), which mean the same to everyone.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// The most entries one converted source entry may become (Herald's Eip takes at most 1,024 in all).
pub const MAX_SPLIT: usize = 256;

/// `entry` (a CIDR, a `first-last` range or one address) as Herald entries with the same addresses. With
/// `avoid_buggy`, IPv4 addresses ending in `.0` or `.255` are left out (ranges split per /24); the error names what
/// cannot be read, or a split that would need more than [`MAX_SPLIT`] entries.
pub fn convert(entry: &str, avoid_buggy: bool) -> Result<Vec<String>, String> {
    let (first, last) = bounds(entry)?;
    let v4 = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Some((u32::from(a), u32::from(b))),
        _ => None,
    };
    if let (true, Some((a, b))) = (avoid_buggy, v4) {
        // One range per /24 at most: count before splitting (0.0.0.0/0 would be 16.7 million).
        let blocks = (b >> 8) - (a >> 8) + 1;
        if blocks as usize > MAX_SPLIT {
            return Err(format!(
                "'{entry}' without the addresses ending in .0 and .255 takes up to {blocks} ranges, more than \
                 {MAX_SPLIT}"
            ));
        }
        let parts = split_buggy(a, b);
        return Ok(parts
            .into_iter()
            .map(|(a, b)| text(IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b))))
            .collect());
    }
    // The entry as written when Herald reads it the same way.
    let trimmed = entry.trim();
    if herald_ipam::parse_entry(trimmed).is_ok_and(|r| r.first() == first && r.last() == last) {
        return Ok(vec![trimmed.to_string()]);
    }
    Ok(vec![text(first, last)])
}

/// First and last address of `entry` as MetalLB and OpenELB read it (a CIDR: every address, the network and
/// broadcast addresses included).
fn bounds(entry: &str) -> Result<(IpAddr, IpAddr), String> {
    let trimmed = entry.trim();
    if trimmed.contains('/') {
        let net: IpNet = trimmed
            .parse()
            .map_err(|_| format!("'{trimmed}' is not a CIDR, range or address"))?;
        let net = net.trunc();
        return Ok((net.network(), net.broadcast()));
    }
    if let Some((a, b)) = trimmed.split_once('-') {
        let parse = |s: &str| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("'{trimmed}': '{}' is not an IP address", s.trim()))
        };
        let (first, last) = (parse(a)?, parse(b)?);
        if first.is_ipv4() != last.is_ipv4() {
            return Err(format!("'{trimmed}' mixes IPv4 and IPv6"));
        }
        if first > last {
            return Err(format!("'{trimmed}' is reversed (first address above last)"));
        }
        return Ok((first, last));
    }
    let ip: IpAddr = trimmed
        .parse()
        .map_err(|_| format!("'{trimmed}' is not a CIDR, range or address"))?;
    Ok((ip, ip))
}

/// `first-last`, or the one address.
fn text(first: IpAddr, last: IpAddr) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// `first..=last` without the addresses ending in `.0` or `.255`, as ranges.
fn split_buggy(first: u32, last: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut start = first;
    loop {
        let block_end = start | 0xff;
        let lo = if start & 0xff == 0 { start + 1 } else { start };
        let end = block_end.min(last);
        let hi = if end & 0xff == 0xff { end - 1 } else { end };
        if lo <= hi {
            out.push((lo, hi));
        }
        if block_end >= last {
            return out;
        }
        start = block_end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(entry: &str) -> Vec<String> {
        convert(entry, false).unwrap()
    }

    #[test]
    fn metallb_cidrs_keep_their_network_and_broadcast_addresses() {
        assert_eq!(all("192.0.2.0/24"), ["192.0.2.0-192.0.2.255"]);
        assert_eq!(all("2001:db8::/120"), ["2001:db8::-2001:db8::ff"]);
        // Herald reads these the same way: kept as written.
        assert_eq!(all("192.0.2.7/32"), ["192.0.2.7/32"]);
        assert_eq!(all("192.0.2.6/31"), ["192.0.2.6/31"]);
        assert_eq!(all("192.0.2.10-192.0.2.20"), ["192.0.2.10-192.0.2.20"]);
        assert_eq!(all(" 192.0.2.10 - 192.0.2.20 "), ["192.0.2.10 - 192.0.2.20"]);
        assert_eq!(all("192.0.2.9"), ["192.0.2.9"]);
    }

    #[test]
    fn avoid_buggy_ips_leaves_out_every_dot_zero_and_dot_255() {
        assert_eq!(
            convert("198.51.100.0/23", true).unwrap(),
            ["198.51.100.1-198.51.100.254", "198.51.101.1-198.51.101.254"]
        );
        // Not the network and broadcast addresses: the addresses ending in .0 and .255.
        assert_eq!(convert("192.0.2.128/25", true).unwrap(), ["192.0.2.128-192.0.2.254"]);
        assert_eq!(convert("192.0.2.255-192.0.2.255", true).unwrap(), Vec::<String>::new());
        // IPv6 has no such addresses.
        assert_eq!(convert("2001:db8::/126", true).unwrap(), ["2001:db8::-2001:db8::3"]);
        assert!(convert("10.0.0.0/8", true).unwrap_err().contains("more than 256"));
        assert!(convert("0.0.0.0/0", true).unwrap_err().contains("16777216 ranges"));
    }

    #[test]
    fn unreadable_entries_are_named() {
        assert!(convert("fish", false).unwrap_err().contains("'fish'"));
        assert!(convert("192.0.2.9-192.0.2.1", false).unwrap_err().contains("reversed"));
        assert!(convert("192.0.2.1-2001:db8::1", false).unwrap_err().contains("mixes"));
    }

    #[test]
    fn converted_entries_hold_the_same_addresses_for_herald() {
        for entry in ["192.0.2.0/24", "192.0.2.0/30", "2001:db8::/64", "192.0.2.3"] {
            for out in all(entry) {
                let r = herald_ipam::parse_entry(&out).unwrap();
                let (a, b) = bounds(entry).unwrap();
                assert_eq!((r.first(), r.last()), (a, b), "{entry} -> {out}");
            }
        }
    }
}
