//! Which interface answers for an address, and whether it can: one rule for `L2Engine::attach` and for the agent's
//! announcer, so a node never declares itself eligible for an IP on an interface the engine would refuse.
//!
//! Sans-IO: [`interface_for`] and [`usable`] decide from [`InterfaceFacts`] read by `herald_sys::iface` (getifaddrs,
//! which works inside network namespaces, unlike /sys); [`interfaces`] is the only reader.

use std::net::IpAddr;

pub use herald_sys::iface::InterfaceFacts;

use crate::error::{Error, Result, Unusable};
use crate::packet::MacAddr;

/// An interface the engine answers on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
}

impl Interface {
    /// Looks `name` up in this network namespace and applies [`usable`].
    pub fn lookup(name: &str) -> Result<Interface> {
        Ok(usable(&interfaces()?, name)?)
    }
}

/// Every interface of the caller's network namespace, sorted by name.
pub fn interfaces() -> Result<Vec<InterfaceFacts>> {
    herald_sys::iface::interfaces().map_err(Error::ListInterfaces)
}

/// Which interface of this node would answer for an IP, and whether the engine can answer there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceChoice {
    /// The interface named (the Eip's `spec.interface`), else the one whose configured subnet holds the IP; `None`
    /// when no interface's does.
    pub interface: Option<String>,
    /// What `L2Engine::attach` would attach, or why it would refuse.
    pub usable: std::result::Result<Interface, Unusable>,
}

/// The interface to answer for `ip` on, and whether it is usable: `named` when given, else the longest configured
/// prefix containing `ip` among the interfaces that can carry ARP/NDP at all ([`can_carry_arp`]: Ethernet, not
/// `NOARP`, not a bond slave). Link-local subnets, loopback addresses and host addresses (/32, /128) never decide:
/// kube-proxy in IPVS mode (and Herald's tests, standing in for kube-proxy) put the Service IP itself on
/// `kube-ipvs0` or `lo`, which says nothing about the LAN it must be announced on. A down link is still the choice
/// (the IP belongs there), reported unusable until it comes back.
pub fn interface_for(interfaces: &[InterfaceFacts], ip: IpAddr, named: Option<&str>) -> InterfaceChoice {
    let interface = match named {
        Some(name) => Some(name.to_string()),
        None => interfaces
            .iter()
            .filter(|facts| can_carry_arp(facts).is_ok())
            .flat_map(|facts| facts.addresses.iter().map(move |subnet| (facts, *subnet)))
            .filter(|(_, (addr, len))| {
                let host_address = *len >= if addr.is_ipv4() { 32 } else { 128 };
                !host_address && !is_link_local(*addr) && !addr.is_loopback() && contains(*addr, *len, ip)
            })
            .max_by_key(|(_, (_, len))| *len)
            .map(|(facts, _)| facts.name.clone()),
    };
    let usable = match &interface {
        Some(name) => usable(interfaces, name),
        None => Err(Unusable::NoSubnet(ip)),
    };
    InterfaceChoice { interface, usable }
}

/// Whether ARP/NDP can be answered on interface `name` now: it exists, [`can_carry_arp`], is up with a carrier, and
/// has a MAC address. Physical interfaces, VLAN sub-interfaces, bridges, bonds, veth and macvlan qualify.
pub fn usable(interfaces: &[InterfaceFacts], name: &str) -> std::result::Result<Interface, Unusable> {
    let facts = interfaces
        .iter()
        .find(|facts| facts.name == name)
        .ok_or_else(|| Unusable::NoSuchInterface(name.to_string()))?;
    can_carry_arp(facts)?;
    if !facts.up {
        return Err(Unusable::InterfaceDown(name.to_string()));
    }
    if !facts.running {
        return Err(Unusable::NoCarrier(name.to_string()));
    }
    let mac = facts
        .mac
        .filter(|m| *m != [0; 6])
        .ok_or_else(|| Unusable::NoMacAddress(name.to_string()))?;
    Ok(Interface {
        name: facts.name.clone(),
        index: facts.index,
        mac: MacAddr(mac),
    })
}

/// What an interface is, whatever its state: it carries Ethernet frames (loopback, tun, WireGuard, IPoIB do not),
/// does ARP/NDP (not `NOARP`), and is not enslaved to a bond (whose master receives the frames).
pub fn can_carry_arp(facts: &InterfaceFacts) -> std::result::Result<(), Unusable> {
    if facts.hardware_type != herald_sys::iface::ARPHRD_ETHER {
        return Err(Unusable::NotEthernet {
            name: facts.name.clone(),
            hardware_type: facts.hardware_type,
        });
    }
    if facts.noarp {
        return Err(Unusable::NoArp(facts.name.clone()));
    }
    if facts.bond_slave {
        return Err(Unusable::BondSlave(facts.name.clone()));
    }
    Ok(())
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

    /// `ARPHRD_LOOPBACK`, `ARPHRD_NONE` (tun, WireGuard), `ARPHRD_INFINIBAND` (IPoIB: ARP, but not Ethernet).
    const LOOPBACK: u16 = 772;
    const NONE: u16 = 65534;
    const INFINIBAND: u16 = 32;

    /// An Ethernet interface that is up, with a carrier and a MAC: what physical, VLAN, bridge and bond interfaces
    /// look like in getifaddrs.
    fn eth(name: &str, index: u32, addresses: &[(&str, u8)]) -> InterfaceFacts {
        InterfaceFacts {
            name: name.into(),
            index,
            hardware_type: herald_sys::iface::ARPHRD_ETHER,
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            up: true,
            running: true,
            bond_slave: false,
            loopback: false,
            noarp: false,
            addresses: addresses.iter().map(|(a, l)| (a.parse().unwrap(), *l)).collect(),
        }
    }

    fn node() -> Vec<InterfaceFacts> {
        vec![
            eth("eth0", 2, &[("192.0.2.5", 24), ("fe80::1", 64)]),
            eth("eth1", 3, &[("192.0.2.130", 25)]),
            InterfaceFacts {
                up: false,
                running: false,
                ..eth("eth2", 4, &[("2001:db8::5", 64)])
            },
            eth("eth3", 5, &[("2001:db8:1::5", 64)]),
            InterfaceFacts {
                running: false,
                ..eth("eth4", 6, &[("198.51.100.5", 24)])
            },
            // kube-proxy IPVS: Service IPs on a NOARP dummy; the lab's kube-proxy stand-in: on lo.
            InterfaceFacts {
                noarp: true,
                ..eth("kube-ipvs0", 7, &[("192.0.2.10", 32), ("192.0.2.0", 24)])
            },
            InterfaceFacts {
                hardware_type: LOOPBACK,
                loopback: true,
                mac: Some([0; 6]),
                ..eth("lo", 1, &[("127.0.0.1", 8), ("192.0.2.100", 32), ("::1", 128)])
            },
            eth("dummy0", 8, &[("192.0.2.101", 32), ("2001:db8::201", 128)]),
            // More specific than eth0, but not Ethernet: never chosen by subnet.
            InterfaceFacts {
                hardware_type: NONE,
                noarp: true,
                mac: None,
                ..eth("wg0", 9, &[("192.0.2.0", 28)])
            },
            InterfaceFacts {
                hardware_type: INFINIBAND,
                mac: None,
                ..eth("ib0", 10, &[("192.0.2.0", 29)])
            },
            // bond0 over the slave eth5 (the slave keeps no address; give it one to show it never wins), a VLAN on
            // the bond, and a bridge.
            eth("bond0", 11, &[("203.0.113.5", 24)]),
            InterfaceFacts {
                bond_slave: true,
                ..eth("eth5", 12, &[("203.0.113.0", 25)])
            },
            eth("bond0.100", 13, &[("203.0.114.5", 24)]),
            eth("br0", 14, &[("2001:db8:2::1", 64)]),
            InterfaceFacts {
                mac: Some([0; 6]),
                ..eth("nomac0", 15, &[])
            },
        ]
    }

    fn choice(ip: &str, named: Option<&str>) -> InterfaceChoice {
        interface_for(&node(), ip.parse().unwrap(), named)
    }

    /// The interface chosen, and why it is unusable (`None`: usable).
    fn outcome(ip: &str, named: Option<&str>) -> (Option<String>, Option<Unusable>) {
        let c = choice(ip, named);
        if let Ok(i) = &c.usable {
            assert_eq!(Some(&i.name), c.interface.as_ref(), "{ip}");
        }
        (c.interface, c.usable.err())
    }

    fn usable_on(ip: &str, named: Option<&str>, want: &str) {
        let c = choice(ip, named);
        assert_eq!(c.interface.as_deref(), Some(want), "{ip} {named:?}");
        assert!(c.usable.is_ok(), "{ip} {named:?}: {:?}", c.usable);
    }

    #[test]
    fn ipv4_longest_configured_prefix_wins() {
        usable_on("192.0.2.10", None, "eth0");
        usable_on("192.0.2.200", None, "eth1");
        let c = choice("192.0.2.200", None);
        assert_eq!(
            c.usable,
            Ok(Interface {
                name: "eth1".into(),
                index: 3,
                mac: MacAddr([2, 0, 0, 0, 0, 3])
            })
        );
    }

    #[test]
    fn ipv6_subnet_match() {
        usable_on("2001:db8:1::10", None, "eth3");
        usable_on("2001:db8:2::10", None, "br0");
        assert_eq!(
            outcome("fe80::9", None),
            (None, Some(Unusable::NoSubnet("fe80::9".parse().unwrap()))),
            "never by link-local subnet"
        );
    }

    #[test]
    fn an_ip_in_no_subnet_has_no_interface() {
        let (interface, why) = outcome("100.64.0.1", None);
        assert_eq!(interface, None);
        let why = why.unwrap();
        assert_eq!(why, Unusable::NoSubnet("100.64.0.1".parse().unwrap()));
        assert!(why.to_string().contains("spec.interface"), "{why}");
    }

    #[test]
    fn an_explicit_interface_overrides_the_subnet() {
        usable_on("192.0.2.10", Some("eth1"), "eth1");
        usable_on("100.64.0.1", Some("eth0"), "eth0");
        assert_eq!(
            outcome("100.64.0.1", Some("vlan7")),
            (Some("vlan7".into()), Some(Unusable::NoSuchInterface("vlan7".into())))
        );
    }

    #[test]
    fn a_down_link_is_chosen_but_unusable() {
        assert_eq!(
            outcome("2001:db8::10", None),
            (Some("eth2".into()), Some(Unusable::InterfaceDown("eth2".into())))
        );
        assert_eq!(
            outcome("198.51.100.10", None),
            (Some("eth4".into()), Some(Unusable::NoCarrier("eth4".into())))
        );
        assert_eq!(
            outcome("192.0.2.10", Some("nomac0")).1,
            Some(Unusable::NoMacAddress("nomac0".into()))
        );
    }

    #[test]
    fn non_ethernet_and_noarp_links_are_refused() {
        let (_, why) = outcome("192.0.2.1", Some("wg0"));
        assert_eq!(
            why,
            Some(Unusable::NotEthernet {
                name: "wg0".into(),
                hardware_type: NONE
            })
        );
        assert!(why.unwrap().to_string().contains("not an Ethernet interface"));
        for name in ["lo", "ib0"] {
            assert!(
                matches!(outcome("192.0.2.1", Some(name)).1, Some(Unusable::NotEthernet { .. })),
                "{name}"
            );
        }
        assert_eq!(
            outcome("192.0.2.10", Some("kube-ipvs0")).1,
            Some(Unusable::NoArp("kube-ipvs0".into()))
        );
    }

    /// The bug this rule fixes: an Eip naming a bond member made the node eligible, won it the election, and the
    /// engine then refused the interface, so nobody answered for the IP.
    #[test]
    fn a_bond_member_is_refused_and_the_bond_accepted() {
        let (interface, why) = outcome("203.0.113.10", Some("eth5"));
        assert_eq!(interface.as_deref(), Some("eth5"));
        let why = why.expect("a bond member is not usable");
        assert_eq!(why, Unusable::BondSlave("eth5".into()));
        assert!(why.to_string().contains("name the bond interface"), "{why}");
        // By subnet, the bond wins even over a more specific subnet on its member.
        usable_on("203.0.113.10", None, "bond0");
        usable_on("203.0.113.10", Some("bond0"), "bond0");
    }

    #[test]
    fn bond_vlan_and_bridge_interfaces_are_accepted() {
        usable_on("203.0.114.10", None, "bond0.100");
        usable_on("203.0.114.10", Some("bond0.100"), "bond0.100");
        usable_on("2001:db8:2::10", Some("br0"), "br0");
    }

    #[test]
    fn service_ip_on_lo_a_dummy_or_a_tunnel_never_wins_over_the_lan() {
        for ip in ["192.0.2.10", "192.0.2.100", "192.0.2.101", "192.0.2.1"] {
            usable_on(ip, None, "eth0");
        }
        assert_eq!(outcome("2001:db8::201", None).0.as_deref(), Some("eth2"));
    }

    /// The engine and the announcer apply one rule: on this host's real interfaces, `lo` is refused by both alike.
    #[test]
    fn loopback_is_refused_by_lookup_and_by_interface_for() {
        let err = Interface::lookup("lo").unwrap_err();
        assert!(matches!(err, Error::Unusable(Unusable::NotEthernet { .. })), "{err}");
        assert!(err.to_string().contains("not an Ethernet interface"));
        let choice = interface_for(&interfaces().unwrap(), "192.0.2.1".parse().unwrap(), Some("lo"));
        assert!(matches!(choice.usable, Err(Unusable::NotEthernet { .. })));
    }

    #[test]
    fn unknown_interface_is_refused() {
        let err = Interface::lookup("hrd-missing0").unwrap_err();
        assert!(matches!(err, Error::Unusable(Unusable::NoSuchInterface(_))));
        assert!(err.to_string().contains("ip link"));
    }
}
