//! This node's interfaces, as the announcer needs them: which one carries an IP (the Eip's `interface`, or the one
//! whose configured subnet holds the IP), and whether it is up. Read with getifaddrs, which works inside network
//! namespaces (unlike /sys).

use std::collections::BTreeMap;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;

/// One interface's state and configured subnets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    /// Administratively up and with a carrier.
    pub up: bool,
    /// Can carry ARP/NDP at all: not loopback, not `NOARP` (kube-proxy's `kube-ipvs0` dummy is `NOARP`).
    pub arp_capable: bool,
    /// Configured addresses with their prefix lengths.
    pub subnets: Vec<(IpAddr, u8)>,
}

/// Every interface by name.
pub type Links = BTreeMap<String, Link>;

/// Reads the interfaces now. Errors become an empty map (nothing will be announced) and a log line.
pub fn read() -> Links {
    let mut links = Links::new();
    let addrs = match getifaddrs() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list interfaces");
            return links;
        }
    };
    for ifa in addrs {
        use nix::net::if_::InterfaceFlags as F;
        let flags = ifa.flags;
        let link = links.entry(ifa.interface_name.clone()).or_default();
        link.arp_capable = !flags.intersects(F::IFF_LOOPBACK | F::IFF_NOARP);
        link.up = flags.contains(F::IFF_UP) && flags.contains(F::IFF_RUNNING) && link.arp_capable;
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let pair = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            Some((IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones() as u8))
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            Some((IpAddr::V6(a.ip()), u128::from(m.ip()).count_ones() as u8))
        } else {
            None
        };
        if let Some(p) = pair {
            link.subnets.push(p);
        }
    }
    links
}

/// The interface to answer for `ip` on: `preferred` when given, else the ARP-capable interface with the longest
/// configured prefix containing `ip`. Never chosen by: loopback or `NOARP` interfaces, link-local subnets, and host
/// addresses (/32, /128) — kube-proxy in IPVS mode (and Herald's tests, standing in for kube-proxy) put the Service IP
/// itself on `kube-ipvs0` or `lo`, which says nothing about the LAN it must be announced on.
pub fn interface_for(links: &Links, ip: IpAddr, preferred: Option<&str>) -> Option<String> {
    if let Some(name) = preferred {
        return Some(name.to_string());
    }
    links
        .iter()
        .filter(|(_, link)| link.arp_capable)
        .flat_map(|(name, link)| link.subnets.iter().map(move |s| (name, *s)))
        .filter(|(_, (addr, len))| {
            let host_route = *len >= if addr.is_ipv4() { 32 } else { 128 };
            !host_route && contains(*addr, *len, ip) && !is_link_local(*addr) && !addr.is_loopback()
        })
        .max_by_key(|(_, (_, len))| *len)
        .map(|(name, _)| name.clone())
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        let mut l = Links::new();
        let link = |up, subnets: &[(&str, u8)]| Link {
            up,
            arp_capable: true,
            subnets: subnets.iter().map(|(a, l)| (a.parse().unwrap(), *l)).collect(),
        };
        l.insert("eth0".into(), link(true, &[("192.0.2.5", 24), ("fe80::1", 64)]));
        l.insert("eth1".into(), link(true, &[("192.0.2.130", 25)]));
        l.insert("eth2".into(), link(false, &[("2001:db8::5", 64)]));
        // kube-proxy IPVS: Service IPs on a NOARP dummy; the lab's kube-proxy stand-in: on lo.
        l.insert(
            "kube-ipvs0".into(),
            Link {
                arp_capable: false,
                ..link(false, &[("192.0.2.10", 32), ("192.0.2.0", 24)])
            },
        );
        l.insert(
            "lo".into(),
            Link {
                arp_capable: false,
                ..link(true, &[("127.0.0.1", 8), ("192.0.2.100", 32)])
            },
        );
        l.insert(
            "dummy0".into(),
            link(true, &[("192.0.2.101", 32), ("2001:db8::201", 128)]),
        );
        l
    }

    #[test]
    fn longest_prefix_wins_and_explicit_interface_overrides() {
        let l = links();
        assert_eq!(
            interface_for(&l, "192.0.2.10".parse().unwrap(), None).as_deref(),
            Some("eth0")
        );
        assert_eq!(
            interface_for(&l, "192.0.2.200".parse().unwrap(), None).as_deref(),
            Some("eth1")
        );
        assert_eq!(
            interface_for(&l, "2001:db8::10".parse().unwrap(), None).as_deref(),
            Some("eth2")
        );
        assert_eq!(interface_for(&l, "198.51.100.1".parse().unwrap(), None), None);
        assert_eq!(
            interface_for(&l, "fe80::9".parse().unwrap(), None),
            None,
            "never by link-local subnet"
        );
        assert_eq!(
            interface_for(&l, "198.51.100.1".parse().unwrap(), Some("vlan7")).as_deref(),
            Some("vlan7")
        );
    }

    #[test]
    fn service_ip_on_lo_or_a_dummy_never_wins_over_the_lan() {
        let l = links();
        for ip in ["192.0.2.10", "192.0.2.100", "192.0.2.101"] {
            assert_eq!(
                interface_for(&l, ip.parse().unwrap(), None).as_deref(),
                Some("eth0"),
                "{ip}"
            );
        }
        assert_eq!(
            interface_for(&l, "2001:db8::201".parse().unwrap(), None).as_deref(),
            Some("eth2")
        );
    }
}
