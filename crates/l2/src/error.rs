//! Errors of the Layer 2 engine, each saying what to change.

use std::io;
use std::net::IpAddr;

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list the network interfaces: {0}")]
    ListInterfaces(#[source] io::Error),
    #[error(transparent)]
    Unusable(#[from] Unusable),
    #[error("cannot open a packet socket on {interface:?}: {source} (Herald needs CAP_NET_RAW)")]
    Socket {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot join the solicited-node group of {ip} on {interface:?}: {source} (is IPv6 disabled on the \
         interface?)"
    )]
    Multicast {
        interface: String,
        ip: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("{ip} cannot be announced: {why}")]
    InvalidAddress { ip: IpAddr, why: &'static str },
    #[error("the responder of interface {0:?} has stopped (engine shut down)")]
    Stopped(String),
}

/// Why ARP/NDP cannot be answered for an address on an interface of this node: the rule of
/// [`crate::interface::usable`], which both `L2Engine::attach` and the agent's announcer apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("interface {0:?} does not exist in this network namespace (see `ip link`)")]
    NoSuchInterface(String),
    #[error(
        "interface {name:?} is not an Ethernet interface (hardware type {hardware_type}): Layer 2 mode answers \
         ARP/NDP on Ethernet links only (physical, VLAN, bridge, bond, veth, macvlan)"
    )]
    NotEthernet { name: String, hardware_type: u16 },
    #[error(
        "interface {0:?} does not do ARP/NDP (NOARP: a tunnel, or a placeholder such as kube-proxy's kube-ipvs0): \
         name the LAN interface instead"
    )]
    NoArp(String),
    #[error("interface {0:?} is a bond slave (its frames belong to the bond): name the bond interface instead")]
    BondSlave(String),
    #[error("interface {0:?} is down: bring it up (`ip link set {0} up`) or pick another interface")]
    InterfaceDown(String),
    #[error("interface {0:?} has no carrier (operationally down): check the cable or the peer")]
    NoCarrier(String),
    #[error("interface {0:?} has no Ethernet MAC address")]
    NoMacAddress(String),
    #[error(
        "no interface of this node that can answer ARP/NDP has a configured subnet containing {0} (loopback, NOARP \
         and non-Ethernet interfaces, bond slaves, link-local subnets and host addresses do not count): name the \
         interface in the Eip's spec.interface"
    )]
    NoSubnet(IpAddr),
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
