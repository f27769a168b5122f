//! The socket side of one interface: an AF_PACKET socket that only ever sees ARP and NS/NA, and the solicited-node
//! group memberships of the announced IPv6 addresses.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, UdpSocket};

use herald_sys::packet::{AsyncPacketSocket, SockFilter};

use crate::error::{Error, Result};
use crate::interface::Interface;
use crate::packet::MacAddr;
use crate::packet::ndp::solicited_node;

/// Classic BPF instructions `(code, jt, jf, k)`: accept ARP, and IPv6 whose next header is ICMPv6 with type 135 (NS) or 136 (NA); drop the rest in
/// the kernel. Offsets assume untagged frames (a VLAN sub-interface delivers them untagged). NDP with extension
/// headers is dropped; neighbors do not send it. Equivalent to
/// `tcpdump -dd 'arp or (ip6 and ip6[6] == 58 and (ip6[40] == 135 or ip6[40] == 136))'`.
pub const FILTER: [(u16, u8, u8, u32); 10] = [
    (0x28, 0, 0, 12),      // 0: ldh [12]            EtherType
    (0x15, 6, 0, 0x0806),  // 1: jeq ARP            → 8 accept
    (0x15, 0, 6, 0x86dd),  // 2: jeq IPv6, else     → 9 drop
    (0x30, 0, 0, 20),      // 3: ldb [20]            IPv6 next header
    (0x15, 0, 4, 58),      // 4: jeq ICMPv6, else   → 9 drop
    (0x30, 0, 0, 54),      // 5: ldb [54]            ICMPv6 type
    (0x15, 1, 0, 135),     // 6: jeq NS             → 8 accept
    (0x15, 0, 1, 136),     // 7: jeq NA → 8, else   → 9 drop
    (0x06, 0, 0, 0x40000), // 8: ret whole frame
    (0x06, 0, 0, 0),       // 9: ret 0 (drop)
];

/// The packet socket of one interface plus its solicited-node memberships.
#[derive(Debug)]
pub struct InterfaceSocket {
    interface: Interface,
    socket: AsyncPacketSocket,
    /// Announced IPv6 addresses per solicited-node group (keyed by the group's low 24 bits): addresses that share a
    /// group share one membership.
    groups: HashMap<[u8; 3], usize>,
    /// Holds the IP-level memberships: joining through an IPv6 socket makes the kernel send MLD reports, so
    /// MLD-snooping switches forward the solicitations to us (the link-layer membership alone does not).
    mld: Option<UdpSocket>,
}

impl InterfaceSocket {
    /// Opens the filtered packet socket on `interface` (inside a tokio runtime).
    pub fn open(interface: Interface) -> Result<InterfaceSocket> {
        let filter = FILTER.map(|(code, jt, jf, k)| SockFilter::new(code, jt, jf, k));
        let socket = AsyncPacketSocket::open(interface.index, &filter)
            .map_err(|source| Error::Socket { interface: interface.name.clone(), source })?;
        Ok(InterfaceSocket { interface, socket, groups: HashMap::new(), mld: None })
    }

    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(buf).await
    }

    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.try_recv(buf)
    }

    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.socket.send(frame).await
    }

    /// Joins the solicited-node group of `ip` (RFC 4861 §7.2.1), at link and IP level, unless an announced address
    /// sharing the group did already.
    pub fn join(&mut self, ip: Ipv6Addr) -> Result<()> {
        let key = group_key(ip);
        if let Some(count) = self.groups.get_mut(&key) {
            *count += 1;
            return Ok(());
        }
        let group = solicited_node(ip);
        let err = |source| Error::Multicast { interface: self.interface.name.clone(), ip: ip.into(), source };
        if self.mld.is_none() {
            self.mld = Some(UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).map_err(err)?);
        }
        if let Some(mld) = &self.mld {
            mld.join_multicast_v6(&group, self.interface.index).map_err(err)?;
        }
        if let Err(e) = self.socket.socket().join_multicast(MacAddr::ipv6_multicast(group).0) {
            if let Some(mld) = &self.mld {
                let _ = mld.leave_multicast_v6(&group, self.interface.index);
            }
            return Err(err(e));
        }
        self.groups.insert(key, 1);
        Ok(())
    }

    /// Undoes one [`InterfaceSocket::join`]; the last address of a group leaves it.
    pub fn leave(&mut self, ip: Ipv6Addr) {
        let key = group_key(ip);
        let Some(count) = self.groups.get_mut(&key) else { return };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.groups.remove(&key);
        let group = solicited_node(ip);
        if let Err(e) = self.socket.socket().leave_multicast(MacAddr::ipv6_multicast(group).0) {
            tracing::warn!(interface = %self.interface.name, %group, error = %e, "cannot leave link-layer group");
        }
        if let Some(mld) = &self.mld
            && let Err(e) = mld.leave_multicast_v6(&group, self.interface.index)
        {
            tracing::warn!(interface = %self.interface.name, %group, error = %e, "cannot leave IPv6 group");
        }
        if self.groups.is_empty() {
            // Closing the socket drops whatever the kernel still holds.
            self.mld = None;
        }
    }

    /// Number of solicited-node groups joined.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

fn group_key(ip: Ipv6Addr) -> [u8; 3] {
    let o = ip.octets();
    [o[13], o[14], o[15]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ndp::ALL_NODES;
    use crate::packet::{ArpMessage, ArpOperation, NeighborAdvertisement, NeighborSolicitation};

    /// Runs the classic BPF program on a frame (the opcodes the filter uses only).
    fn run_filter(frame: &[u8]) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = FILTER[pc];
            let at = k as usize;
            match code {
                0x28 => match frame.get(at..at + 2) {
                    Some(b) => acc = u32::from(u16::from_be_bytes([b[0], b[1]])),
                    None => return 0,
                },
                0x30 => match frame.get(at) {
                    Some(b) => acc = u32::from(*b),
                    None => return 0,
                },
                0x15 => {
                    pc += 1 + usize::from(if acc == k { jt } else { jf });
                    continue;
                }
                0x06 => return k,
                other => panic!("opcode {other:#x} not handled by the test interpreter"),
            }
            pc += 1;
        }
    }

    #[test]
    fn filter_accepts_arp_ns_na_only() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let arp = ArpMessage {
            operation: ArpOperation::Request,
            sender_mac: mac,
            sender_ip: "192.0.2.1".parse().unwrap(),
            target_mac: MacAddr::ZERO,
            target_ip: "192.0.2.2".parse().unwrap(),
        }
        .to_frame(mac, MacAddr::BROADCAST);
        let target: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let ns = NeighborSolicitation { source: target, destination: target, target, source_mac: None }
            .to_frame(mac, mac);
        let na = NeighborAdvertisement {
            source: target,
            destination: ALL_NODES,
            target,
            router: false,
            solicited: false,
            override_flag: true,
            target_mac: None,
        }
        .to_frame(mac, mac);
        assert_ne!(run_filter(&arp), 0);
        assert_ne!(run_filter(&ns), 0);
        assert_ne!(run_filter(&na), 0);

        let mut echo = na.clone();
        echo[54] = 128; // ICMPv6 echo request
        assert_eq!(run_filter(&echo), 0);
        let mut udp = na.clone();
        udp[20] = 17;
        assert_eq!(run_filter(&udp), 0);
        let mut ipv4 = arp.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(run_filter(&ipv4), 0);
        assert_eq!(run_filter(&ns[..30]), 0, "short frames are dropped, not read out of bounds");
    }

    #[test]
    fn addresses_sharing_a_group_share_the_key() {
        let a: Ipv6Addr = "2001:db8::1:abcd".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1::1:abcd".parse().unwrap();
        assert_eq!(group_key(a), group_key(b));
        assert_ne!(group_key(a), group_key("2001:db8::2:abcd".parse().unwrap()));
    }
}
