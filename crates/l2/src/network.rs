//! The socket side of one interface: an AF_PACKET socket that only ever sees ARP and NS/NA, and the solicited-node
//! group memberships of the announced IPv6 addresses.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, UdpSocket};

use herald_sys::packet::{AsyncPacketSocket, Received, SKF_AD_VLAN_TAG, SKF_AD_VLAN_TAG_PRESENT, SockFilter};

use crate::error::{Error, Result};
use crate::interface::Interface;
use crate::packet::ndp::solicited_node;
use crate::packet::{MacAddr, restore_vlan_tag};

/// Classic BPF instructions `(code, jt, jf, k)`: accept untagged ARP, and untagged IPv6 whose next header is ICMPv6
/// with type 135 (NS) or 136 (NA); drop the rest in the kernel.
///
/// A VLAN is another network. Linux takes the tag of a received frame out of it before packet sockets see it, so a
/// frame tagged for VLAN 100 looks untagged here: the filter asks the kernel (`vlanp`, `vlan_tci` ancillary loads)
/// and drops every frame that carried a tag with a VLAN ID, keeping priority tags (VLAN 0), which the kernel treats
/// as untagged too. A tag still inline (the inner tag of QinQ) leaves an EtherType that is neither ARP nor IPv6.
/// To answer on a VLAN, attach its sub-interface (`eth0.100`), which sees its frames untagged.
///
/// NDP with extension headers is dropped; neighbors do not send it. The part after the tag check is
/// `tcpdump -dd 'arp or (ip6 and ip6[6] == 58 and (ip6[40] == 135 or ip6[40] == 136))'`.
pub const FILTER: [(u16, u8, u8, u32); 14] = [
    (0x30, 0, 0, SKF_AD_VLAN_TAG_PRESENT), // 0: ldb [vlanp]       did it come tagged?
    (0x15, 2, 0, 0),                       // 1: jeq #0             → 4 untagged
    (0x28, 0, 0, SKF_AD_VLAN_TAG),         // 2: ldh [vlan_tci]
    (0x45, 9, 0, 0x0fff),                  // 3: jset VLAN ID      → 13 drop (another VLAN)
    (0x28, 0, 0, 12),                      // 4: ldh [12]           EtherType
    (0x15, 6, 0, 0x0806),                  // 5: jeq ARP            → 12 accept
    (0x15, 0, 6, 0x86dd),                  // 6: jeq IPv6, else     → 13 drop
    (0x30, 0, 0, 20),                      // 7: ldb [20]           IPv6 next header
    (0x15, 0, 4, 58),                      // 8: jeq ICMPv6, else   → 13 drop
    (0x30, 0, 0, 54),                      // 9: ldb [54]           ICMPv6 type
    (0x15, 1, 0, 135),                     // 10: jeq NS            → 12 accept
    (0x15, 0, 1, 136),                     // 11: jeq NA → 12, else → 13 drop
    (0x06, 0, 0, 0x40000),                 // 12: ret whole frame
    (0x06, 0, 0, 0),                       // 13: ret 0 (drop)
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

    /// Waits for a frame; the VLAN tag it carried on the wire, if any, is put back in `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let received = self.socket.recv(buf).await?;
        Ok(as_on_the_wire(buf, received))
    }

    /// Like [`InterfaceSocket::recv`] if a frame is queued; `ErrorKind::WouldBlock` when none is.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let received = self.socket.try_recv(buf)?;
        Ok(as_on_the_wire(buf, received))
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

/// The frame in `buf` as it was on the wire: with the VLAN tag the kernel moved into metadata put back, so the
/// decoder drops a frame of another VLAN even if the filter let it through. Returns its length.
fn as_on_the_wire(buf: &mut [u8], received: Received) -> usize {
    match received.vlan {
        Some(tag) => restore_vlan_tag(buf, received.len, tag.tpid, tag.tci),
        None => received.len.min(buf.len()),
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

    /// Runs the classic BPF program on a frame the way the kernel does, `vlan_tci` being the tag the kernel took out
    /// of it (`None`: it came untagged). Only the opcodes the filter uses are known.
    fn run_filter(frame: &[u8], vlan_tci: Option<u16>) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = FILTER[pc];
            let at = k as usize;
            // Loads at SKF_AD_OFF (-0x1000) and above read packet metadata; the kernel ignores their size.
            if matches!(code, 0x20 | 0x28 | 0x30) && k >= 0xffff_f000 {
                acc = match k {
                    SKF_AD_VLAN_TAG_PRESENT => u32::from(vlan_tci.is_some()),
                    SKF_AD_VLAN_TAG => u32::from(vlan_tci.unwrap_or(0)),
                    other => panic!("ancillary load {other:#x} not handled by the test interpreter"),
                };
                pc += 1;
                continue;
            }
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
                0x45 => {
                    pc += 1 + usize::from(if acc & k != 0 { jt } else { jf });
                    continue;
                }
                0x06 => return k,
                other => panic!("opcode {other:#x} not handled by the test interpreter"),
            }
            pc += 1;
        }
    }

    fn frames() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
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
        (arp, ns, na)
    }

    #[test]
    fn filter_accepts_arp_ns_na_only() {
        let (arp, ns, na) = frames();
        assert_ne!(run_filter(&arp, None), 0);
        assert_ne!(run_filter(&ns, None), 0);
        assert_ne!(run_filter(&na, None), 0);

        let mut echo = na.clone();
        echo[54] = 128; // ICMPv6 echo request
        assert_eq!(run_filter(&echo, None), 0);
        let mut udp = na.clone();
        udp[20] = 17;
        assert_eq!(run_filter(&udp, None), 0);
        let mut ipv4 = arp.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(run_filter(&ipv4, None), 0);
        assert_eq!(
            run_filter(&ns[..30], None),
            0,
            "short frames are dropped, not read out of bounds"
        );
    }

    /// A VLAN is another network: what came tagged with a VLAN ID is dropped, whatever its priority, and so is a tag
    /// left inline (QinQ's inner tag). A priority tag (VLAN 0) is the untagged network.
    #[test]
    fn filter_drops_frames_of_other_vlans() {
        let (arp, ns, na) = frames();
        for frame in [&arp, &ns, &na] {
            for tci in [1, 100, 0x0fff, 0x2064, 0xe001, 0x1001] {
                assert_eq!(run_filter(frame, Some(tci)), 0, "VLAN tag {tci:#06x}");
            }
            for priority_only in [0, 0x2000, 0xe000, 0x1000] {
                assert_ne!(
                    run_filter(frame, Some(priority_only)),
                    0,
                    "priority tag {priority_only:#06x}"
                );
            }
            for tpid in [[0x81, 0x00], [0x88, 0xa8], [0x91, 0x00]] {
                let mut inline = frame[..12].to_vec();
                inline.extend_from_slice(&tpid);
                inline.extend_from_slice(&[0x00, 0x64]);
                inline.extend_from_slice(&frame[12..]);
                assert_eq!(run_filter(&inline, None), 0, "inline tag {tpid:02x?}");
                assert_eq!(run_filter(&inline, Some(0)), 0, "inline tag inside a priority tag");
            }
        }
    }

    #[test]
    fn frames_are_read_as_they_were_on_the_wire() {
        use herald_sys::packet::VlanTag;
        let (arp, ..) = frames();
        let mut buf = arp.clone();
        buf.resize(100, 0);
        let untagged = Received {
            len: arp.len(),
            vlan: None,
        };
        assert_eq!(as_on_the_wire(&mut buf, untagged), arp.len());
        assert_eq!(buf[..arp.len()], arp[..]);
        let tagged = Received {
            len: arp.len(),
            vlan: Some(VlanTag { tpid: 0x8100, tci: 100 }),
        };
        let len = as_on_the_wire(&mut buf, tagged);
        assert_eq!(len, arp.len() + 4);
        assert_eq!(buf[12..16], [0x81, 0x00, 0x00, 0x64]);
        assert!(
            matches!(
                crate::packet::decode(&buf[..len]),
                Err(crate::packet::DecodeError::Unsupported(_))
            ),
            "a frame of VLAN 100 is not decoded as ours"
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
