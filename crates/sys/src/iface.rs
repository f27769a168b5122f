//! Interface facts from getifaddrs(3) (never /sys, which shows the namespace sysfs was *mounted* in, not the
//! caller's network namespace).
//!
//! getifaddrs returns one `AF_PACKET` entry per interface (index, hardware type, MAC, flags) plus one entry per
//! IPv4/IPv6 address; [`interfaces`] folds them into one [`InterfaceFacts`] per interface. This module has no unsafe
//! code: nix wraps the FFI.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

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
    /// IPv4 addresses configured on the interface.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses configured on the interface.
    pub ipv6: Vec<Ipv6Addr>,
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
                ipv4: Vec::new(),
                ipv6: Vec::new(),
            });
        facts.up |= entry.flags.contains(InterfaceFlags::IFF_UP);
        facts.running |= entry.flags.contains(InterfaceFlags::IFF_RUNNING);
        facts.bond_slave |= entry.flags.contains(InterfaceFlags::IFF_SLAVE);
        facts.loopback |= entry.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        let Some(address) = entry.address else {
            continue;
        };
        if let Some(link) = address.as_link_addr() {
            facts.index = u32::try_from(link.ifindex()).unwrap_or(0);
            facts.hardware_type = link.hatype();
            facts.mac = link.addr().filter(|mac| link.halen() == mac.len());
        } else if let Some(v4) = address.as_sockaddr_in() {
            facts.ipv4.push(v4.ip());
        } else if let Some(v6) = address.as_sockaddr_in6() {
            facts.ipv6.push(v6.ip());
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
    }

    #[test]
    fn unknown_interface_is_none() {
        assert_eq!(interface("hrd-no-such-if").unwrap(), None);
    }
}
