//! Interface facts from getifaddrs(3) (never /sys, which shows the namespace sysfs was *mounted* in, not the
//! caller's network namespace).
//!
//! getifaddrs returns one `AF_PACKET` entry per interface (index, hardware type, MAC, flags) plus one entry per
//! IPv4/IPv6 address (with its netmask); [`interfaces`] folds them into one [`InterfaceFacts`] per interface. This
//! module has no unsafe code: nix wraps the FFI. What the facts mean for Layer 2 (which interface answers for an IP,
//! and whether it can) is decided in `herald-l2`'s `interface` module.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use nix::net::if_::InterfaceFlags;

/// `ARPHRD_ETHER`: the link carries Ethernet frames (also VLAN sub-interfaces, bridges, bonds, veth, macvlan).
pub const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;

/// What the kernel says about one network interface in the caller's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceFacts {
    /// Interface name (`eth0`, `eth0.100`, `br0`).
    pub name: String,
    /// Interface index (`if_nametoindex`).
    pub index: u32,
    /// Link-layer hardware type (`ARPHRD_*`, from the `AF_PACKET` address).
    pub hardware_type: u16,
    /// Link-layer address; `None` when the interface has none or it is not 6 bytes long.
    pub mac: Option<[u8; 6]>,
    /// `IFF_UP`: administratively up.
    pub up: bool,
    /// `IFF_RUNNING`: operationally up (carrier).
    pub running: bool,
    /// `IFF_SLAVE`: enslaved to a bond or team; frames belong to the master.
    pub bond_slave: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// `IFF_NOARP`: no ARP/NDP on this link (tunnels, WireGuard, kube-proxy's `kube-ipvs0` dummy).
    pub noarp: bool,
    /// IPv4 and IPv6 addresses configured on the interface, each with its prefix length, in getifaddrs order.
    pub addresses: Vec<(IpAddr, u8)>,
}

/// All interfaces of the caller's network namespace, sorted by name.
pub fn interfaces() -> io::Result<Vec<InterfaceFacts>> {
    let mut by_name: BTreeMap<String, InterfaceFacts> = BTreeMap::new();
    for entry in nix::ifaddrs::getifaddrs()? {
        let facts = by_name
            .entry(entry.interface_name.clone())
            .or_insert_with(|| InterfaceFacts {
                name: entry.interface_name.clone(),
                index: 0,
                hardware_type: 0,
                mac: None,
                up: false,
                running: false,
                bond_slave: false,
                loopback: false,
                noarp: false,
                addresses: Vec::new(),
            });
        facts.up |= entry.flags.contains(InterfaceFlags::IFF_UP);
        facts.running |= entry.flags.contains(InterfaceFlags::IFF_RUNNING);
        facts.bond_slave |= entry.flags.contains(InterfaceFlags::IFF_SLAVE);
        facts.loopback |= entry.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        facts.noarp |= entry.flags.contains(InterfaceFlags::IFF_NOARP);
        let Some(address) = entry.address else {
            continue;
        };
        if let Some(link) = address.as_link_addr() {
            facts.index = u32::try_from(link.ifindex()).unwrap_or(0);
            facts.hardware_type = link.hatype();
            facts.mac = link.addr().filter(|mac| link.halen() == mac.len());
        } else if let Some(v4) = address.as_sockaddr_in() {
            let len = entry
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| m.ip().to_bits().count_ones());
            facts.addresses.push((IpAddr::V4(v4.ip()), prefix_len(len, 32)));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            let len = entry
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map(|m| m.ip().to_bits().count_ones());
            facts.addresses.push((IpAddr::V6(v6.ip()), prefix_len(len, 128)));
        }
    }
    // Interfaces without an AF_PACKET entry (rare: some tunnels) still get their index.
    for facts in by_name.values_mut() {
        if facts.index == 0 {
            facts.index = nix::net::if_::if_nametoindex(facts.name.as_str()).unwrap_or(0);
        }
    }
    Ok(by_name.into_values().collect())
}

/// A netmask's prefix length; a missing netmask counts as a host address (`max`), which never defines a subnet.
fn prefix_len(ones: Option<u32>, max: u8) -> u8 {
    ones.and_then(|n| u8::try_from(n).ok()).unwrap_or(max)
}

/// The facts of one interface, or `None` when no interface has that name in this network namespace.
pub fn interface(name: &str) -> io::Result<Option<InterfaceFacts>> {
    Ok(interfaces()?.into_iter().find(|i| i.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_is_not_ethernet() {
        let lo = interface("lo").unwrap().expect("every network namespace has lo");
        assert!(lo.loopback);
        assert!(lo.index > 0);
        assert_ne!(lo.hardware_type, ARPHRD_ETHER);
        if lo.up {
            // Not in a fresh network namespace, where lo is down and has no address.
            assert!(
                lo.addresses.contains(&("127.0.0.1".parse().unwrap(), 8)),
                "{:?}",
                lo.addresses
            );
        }
    }

    #[test]
    fn unknown_interface_is_none() {
        assert_eq!(interface("hrd-no-such-if").unwrap(), None);
    }
}
