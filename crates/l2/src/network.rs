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
    /// Per solicited-node group (keyed by its low 24 bits): how many announced addresses share it, and which of the
    /// `mld` sockets holds its IP-level membership.
    groups: HashMap<[u8; 3], Group>,
    /// Hold the IP-level memberships: joining through an IPv6 socket makes the kernel send MLD reports, so
    /// MLD-snooping switches forward the solicitations to us (the link-layer membership alone does not). One socket
    /// holds only about 2,000 groups (its memberships are charged to `net.core.optmem_max`), so more are opened as
    /// needed; `None` slots are closed sockets, reused first.
    mld: Vec<Option<MldSocket>>,
}

#[derive(Debug)]
struct Group {
    addresses: usize,
    socket: usize,
}

#[derive(Debug)]
struct MldSocket {
    socket: UdpSocket,
    groups: usize,
    /// The kernel refused one more membership on this socket: do not try it again until one leaves.
    full: bool,
}

impl InterfaceSocket {
    /// Opens the filtered packet socket on `interface` (inside a tokio runtime).
    pub fn open(interface: Interface) -> Result<InterfaceSocket> {
        let filter = FILTER.map(|(code, jt, jf, k)| SockFilter::new(code, jt, jf, k));
        let socket = AsyncPacketSocket::open(interface.index, &filter).map_err(|source| Error::Socket {
            interface: interface.name.clone(),
            source,
        })?;
        Ok(InterfaceSocket {
            interface,
            socket,
            groups: HashMap::new(),
            mld: Vec::new(),
        })
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
        if let Some(group) = self.groups.get_mut(&key) {
            group.addresses += 1;
            return Ok(());
        }
        let group = solicited_node(ip);
        let name = self.interface.name.clone();
        let err = |source| Error::Multicast {
            interface: name.clone(),
            ip: ip.into(),
            source,
        };
        let socket = self.join_ip_level(group).map_err(err)?;
        if let Err(e) = self.socket.socket().join_multicast(MacAddr::ipv6_multicast(group).0) {
            self.leave_ip_level(group, socket);
            return Err(err(e));
        }
        self.groups.insert(key, Group { addresses: 1, socket });
        Ok(())
    }

    /// Undoes one [`InterfaceSocket::join`]; the last address of a group leaves it.
    pub fn leave(&mut self, ip: Ipv6Addr) {
        let key = group_key(ip);
        let Some(group) = self.groups.get_mut(&key) else {
            return;
        };
        group.addresses -= 1;
        if group.addresses > 0 {
            return;
        }
        let socket = group.socket;
        self.groups.remove(&key);
        let group = solicited_node(ip);
        if let Err(e) = self.socket.socket().leave_multicast(MacAddr::ipv6_multicast(group).0) {
            tracing::warn!(interface = %self.interface.name, %group, error = %e, "cannot leave link-layer group");
        }
        self.leave_ip_level(group, socket);
    }

    /// Joins `group` on an MLD socket with room, opening one if needed; returns the socket's slot.
    fn join_ip_level(&mut self, group: Ipv6Addr) -> io::Result<usize> {
        let index = self.interface.index;
        for (slot, mld) in self.mld.iter_mut().enumerate() {
            let Some(mld) = mld.as_mut().filter(|m| !m.full) else {
                continue;
            };
            match mld.socket.join_multicast_v6(&group, index) {
                Ok(()) => {
                    mld.groups += 1;
                    return Ok(slot);
                }
                // ENOMEM/ENOBUFS: this socket's option memory is used up; try (or open) another.
                Err(e) if matches!(e.raw_os_error(), Some(errno) if is_out_of_memory(errno)) => {
                    mld.full = true;
                }
                Err(e) => return Err(e),
            }
        }
        let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
        socket.join_multicast_v6(&group, index)?;
        let mld = MldSocket {
            socket,
            groups: 1,
            full: false,
        };
        match self.mld.iter().position(Option::is_none) {
            Some(slot) => {
                self.mld[slot] = Some(mld);
                Ok(slot)
            }
            None => {
                self.mld.push(Some(mld));
                Ok(self.mld.len() - 1)
            }
        }
    }

    fn leave_ip_level(&mut self, group: Ipv6Addr, slot: usize) {
        let Some(Some(mld)) = self.mld.get_mut(slot) else {
            return;
        };
        if let Err(e) = mld.socket.leave_multicast_v6(&group, self.interface.index) {
            tracing::warn!(interface = %self.interface.name, %group, error = %e, "cannot leave IPv6 group");
        }
        mld.groups -= 1;
        mld.full = false;
        if mld.groups == 0 {
            // Closing the socket drops whatever the kernel might still hold.
            self.mld[slot] = None;
        }
    }

    /// Number of solicited-node groups joined.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

/// ENOMEM (12) or ENOBUFS (105): the kernel's per-socket option memory is exhausted.
fn is_out_of_memory(errno: i32) -> bool {
    errno == 12 || errno == 105
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
        let ns = NeighborSolicitation {
            source: target,
            destination: target,
            target,
            source_mac: None,
        }
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
        assert_eq!(
            run_filter(&ns[..30]),
            0,
            "short frames are dropped, not read out of bounds"
        );
    }

    #[test]
    fn addresses_sharing_a_group_share_the_key() {
        let a: Ipv6Addr = "2001:db8::1:abcd".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1::1:abcd".parse().unwrap();
        assert_eq!(group_key(a), group_key(b));
        assert_ne!(group_key(a), group_key("2001:db8::2:abcd".parse().unwrap()));
    }
}
