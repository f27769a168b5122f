//! Which interfaces the engine may answer on, from getifaddrs (works inside network namespaces).

use crate::error::{Error, Result};
use crate::packet::MacAddr;

/// An interface the engine answers on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
}

impl Interface {
    /// Looks `name` up and checks that ARP/NDP can be answered on it: it exists, carries Ethernet frames (physical,
    /// VLAN sub-interface, bridge, bond, veth, macvlan), is up with a carrier, and is not enslaved to a bond (whose
    /// master receives the frames).
    pub fn lookup(name: &str) -> Result<Interface> {
        let facts = herald_sys::iface::interface(name)
            .map_err(Error::ListInterfaces)?
            .ok_or_else(|| Error::NoSuchInterface(name.to_string()))?;
        if facts.hardware_type != herald_sys::iface::ARPHRD_ETHER {
            return Err(Error::NotEthernet {
                name: name.to_string(),
                hardware_type: facts.hardware_type,
            });
        }
        if facts.bond_slave {
            return Err(Error::BondSlave(name.to_string()));
        }
        if !facts.up {
            return Err(Error::InterfaceDown(name.to_string()));
        }
        if !facts.running {
            return Err(Error::NoCarrier(name.to_string()));
        }
        let mac = facts
            .mac
            .filter(|m| *m != [0; 6])
            .ok_or_else(|| Error::NoMacAddress(name.to_string()))?;
        Ok(Interface {
            name: facts.name,
            index: facts.index,
            mac: MacAddr(mac),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_refused_as_not_ethernet() {
        let err = Interface::lookup("lo").unwrap_err();
        assert!(matches!(err, Error::NotEthernet { .. }), "{err}");
        assert!(err.to_string().contains("not an Ethernet interface"));
    }

    #[test]
    fn unknown_interface_is_refused() {
        let err = Interface::lookup("hrd-missing0").unwrap_err();
        assert!(matches!(err, Error::NoSuchInterface(_)));
        assert!(err.to_string().contains("ip link"));
    }
}
