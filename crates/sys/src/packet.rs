//! AF_PACKET sockets bound to one interface, classic BPF filters and link-layer multicast membership.
//!
//! The socket is opened with protocol 0 (it receives nothing), gets its BPF filter, `PACKET_IGNORE_OUTGOING` and
//! `PACKET_AUXDATA`, and only then is bound to the interface with `ETH_P_ALL`: no unfiltered frame is ever queued,
//! and our own transmissions never come back. `SO_BINDTODEVICE` does not restrict packet sockets (packet(7)); `bind`
//! with a `sockaddr_ll` does.
//!
//! Linux moves a received frame's VLAN tag out of the frame into metadata before packet sockets see it (even on a
//! veth, even without the 8021q module), so a tagged frame reads like an untagged one. A BPF filter sees the tag
//! through the ancillary loads [`SKF_AD_VLAN_TAG_PRESENT`] and [`SKF_AD_VLAN_TAG`]; a reader through
//! [`PacketSocket::recv_frame`] (`PACKET_AUXDATA`).

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub use socket2::SockFilter;

/// `PACKET_IGNORE_OUTGOING` (Linux ≥ 4.20): do not loop our own transmissions back to this socket.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Classic BPF ancillary load offset (`SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT`, linux/filter.h): loads 1 when the
/// frame arrived with a VLAN tag (now in metadata), else 0.
pub const SKF_AD_VLAN_TAG_PRESENT: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG_PRESENT) as u32;
/// Classic BPF ancillary load offset (`SKF_AD_OFF + SKF_AD_VLAN_TAG`): loads the tag's TCI (priority, DEI, VLAN ID).
pub const SKF_AD_VLAN_TAG: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG) as u32;

/// The 802.1Q TPID the kernel reports when it does not name one.
const ETH_P_8021Q: u16 = 0x8100;

/// A VLAN tag the kernel took out of a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// Tag protocol identifier: 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// Tag control information: priority (3 bits), drop eligible (1), VLAN ID (12).
    pub tci: u16,
}

/// One frame received by [`PacketSocket::recv_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes written to the buffer (the frame, without the tag the kernel took out).
    pub len: usize,
    /// The tag the frame carried on the wire, if any.
    pub vlan: Option<VlanTag>,
}

/// A raw Ethernet socket bound to one interface. Frames are sent and received whole, Ethernet header included.
#[derive(Debug)]
pub struct PacketSocket {
    socket: Socket,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a socket on interface `ifindex` that receives only the frames `filter` accepts (all frames when the
    /// filter is empty). `nonblocking` selects the socket mode (use `true` for [`AsyncPacketSocket`]).
    pub fn open(ifindex: u32, filter: &[SockFilter], nonblocking: bool) -> io::Result<PacketSocket> {
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface index 0 is not an interface",
            ));
        }
        // Protocol 0: nothing is received until `bind` below names a protocol.
        let ty = if nonblocking {
            Type::RAW.nonblocking()
        } else {
            Type::RAW
        };
        let socket = Socket::new(Domain::PACKET, ty, None)?;
        if !filter.is_empty() {
            socket.attach_filter(filter)?;
        }
        let s = PacketSocket { socket, ifindex };
        s.set_int_option(libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        s.set_int_option(libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        s.bind()?;
        Ok(s)
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends one whole frame (Ethernet header included) on the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sent = self.socket.send(frame)?;
        if sent != frame.len() {
            return Err(io::Error::other(format!("short send: {sent} of {} bytes", frame.len())));
        }
        Ok(())
    }

    /// Receives one frame into `buf` and returns its length (a frame longer than `buf` is truncated).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.socket).read(buf)
    }

    /// Receives one frame into `buf` (truncated if longer) with the VLAN tag the kernel took out of it, if any
    /// (`PACKET_AUXDATA`: `TP_STATUS_VLAN_VALID`, `tp_vlan_tci`, `tp_vlan_tpid`).
    pub fn recv_frame(&self, buf: &mut [u8]) -> io::Result<Received> {
        // Room for one control message carrying a `tpacket_auxdata` (CMSG_SPACE(20) = 40 bytes on 64-bit Linux),
        // aligned for `cmsghdr`.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `msghdr` is a plain C struct for which all-zero bytes is a valid value (no name, no iovec yet).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: `msg` points at one iovec describing `buf` (valid for writes of `buf.len()` bytes) and at `control`
        // (valid for writes of `msg_controllen` bytes); all three outlive the call. The fd is owned by
        // `self.socket` and open.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &raw mut msg, 0) };
        let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        let mut vlan = None;
        // SAFETY: `msg` was filled in by a successful `recvmsg`: `msg_control`/`msg_controllen` describe the
        // control messages the kernel wrote into `control`, which CMSG_FIRSTHDR/CMSG_NXTHDR never walk past.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
        while !cmsg.is_null() {
            // SAFETY: a non-null pointer from CMSG_FIRSTHDR/CMSG_NXTHDR points at a whole `cmsghdr` inside
            // `control`, which is aligned for it.
            let header = unsafe { &*cmsg };
            let needed = size_of::<libc::tpacket_auxdata>();
            // SAFETY: CMSG_LEN only computes a length.
            let full = unsafe { libc::CMSG_LEN(needed as libc::c_uint) } as usize;
            if header.cmsg_level == libc::SOL_PACKET
                && header.cmsg_type == libc::PACKET_AUXDATA
                && header.cmsg_len as usize >= full
            {
                // SAFETY: the message's data holds at least `size_of::<tpacket_auxdata>()` bytes (`cmsg_len` was
                // checked above) inside `control`; `read_unaligned` does not need the data to be aligned.
                let aux: libc::tpacket_auxdata =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::tpacket_auxdata>()) };
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        ETH_P_8021Q
                    };
                    vlan = Some(VlanTag {
                        tpid,
                        tci: aux.tp_vlan_tci,
                    });
                }
            }
            // SAFETY: as for CMSG_FIRSTHDR; `cmsg` is the current, valid header of `msg`.
            cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
        }
        Ok(Received { len, vlan })
    }

    /// Sets a receive timeout for a blocking socket (`None`: wait forever).
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)
    }

    /// Accepts frames sent to the link-layer multicast address `mac` on this interface (`PACKET_ADD_MEMBERSHIP`).
    /// The kernel counts memberships per socket and drops them when the socket closes.
    pub fn join_multicast(&self, mac: [u8; 6]) -> io::Result<()> {
        self.membership(libc::PACKET_ADD_MEMBERSHIP, mac)
    }

    /// Undoes one [`PacketSocket::join_multicast`] (`PACKET_DROP_MEMBERSHIP`).
    pub fn leave_multicast(&self, mac: [u8; 6]) -> io::Result<()> {
        self.membership(libc::PACKET_DROP_MEMBERSHIP, mac)
    }

    fn membership(&self, option: libc::c_int, mac: [u8; 6]) -> io::Result<()> {
        let mut address = [0u8; 8];
        address[..6].copy_from_slice(&mac);
        let mreq = libc::packet_mreq {
            mr_ifindex: self.ifindex_c()?,
            mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
            mr_alen: 6,
            mr_address: address,
        };
        // SAFETY: `mreq` is a valid, initialized `packet_mreq` that outlives the call, and the length passed is its
        // exact size; the fd is owned by `self.socket` and open.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_PACKET,
                option,
                (&raw const mreq).cast(),
                size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn bind(&self) -> io::Result<()> {
        // SAFETY: `sockaddr_ll` is a plain C struct for which all-zero bytes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = self.ifindex_c()?;
        // SAFETY: `addr` is a valid, initialized `sockaddr_ll` that outlives the call, and the length passed is its
        // exact size; the fd is owned by `self.socket` and open.
        let rc = unsafe {
            libc::bind(
                self.socket.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_int_option(&self, level: libc::c_int, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` is a valid `c_int` that outlives the call and the length passed is its size; the fd is
        // owned by `self.socket` and open.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                level,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn ifindex_c(&self) -> io::Result<libc::c_int> {
        libc::c_int::try_from(self.ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// A nonblocking [`PacketSocket`] driven by the tokio reactor.
#[derive(Debug)]
pub struct AsyncPacketSocket {
    fd: AsyncFd<PacketSocket>,
}

impl AsyncPacketSocket {
    /// Opens a nonblocking [`PacketSocket`] and registers it with the current tokio runtime (call from inside one).
    pub fn open(ifindex: u32, filter: &[SockFilter]) -> io::Result<AsyncPacketSocket> {
        let socket = PacketSocket::open(ifindex, filter, true)?;
        // SAFETY: `PacketSocket` owns its fd (through `socket2::Socket`); the fd is neither closed nor replaced while
        // the `AsyncFd` owns the socket, and it is deregistered before it is closed when the `AsyncFd` drops.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(AsyncPacketSocket { fd })
    }

    /// The underlying socket (membership changes, interface index).
    pub fn socket(&self) -> &PacketSocket {
        self.fd.get_ref()
    }

    /// Waits for a frame and receives it into `buf`, with its VLAN tag ([`PacketSocket::recv_frame`]).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.fd.async_io(Interest::READABLE, |s| s.recv_frame(buf)).await
    }

    /// Receives a frame if one is queued; `ErrorKind::WouldBlock` when none is.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.fd.try_io(Interest::READABLE, |s| s.recv_frame(buf))
    }

    /// Sends one whole frame, waiting while the socket's send buffer is full.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.fd.async_io(Interest::WRITABLE, |s| s.send(frame)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Runs `test` on a thread moved into a new, empty network namespace (gone when the thread ends; the host's
    /// network is never touched) with `lo` up. Returns `None` without the privilege to create one.
    fn in_new_netns<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        std::thread::spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("SKIPPED: cannot create a network namespace ({e}); needs root");
                return None;
            }
            // Children inherit the calling thread's namespace.
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            if !up.is_ok_and(|s| s.success()) {
                eprintln!("SKIPPED: cannot bring lo up with `ip` in the new namespace");
                return None;
            }
            Some(test())
        })
        .join()
        .expect("test thread")
    }

    /// Linux takes a received frame's VLAN tag out of it before packet sockets see it (here on `lo`, without the
    /// 8021q module): `recv_frame` must still report it, or a frame of another VLAN passes for an untagged one.
    #[test]
    fn recv_frame_reports_the_vlan_tag_the_kernel_took_out() {
        let Some(received) = in_new_netns(|| {
            let lo = nix::net::if_::if_nametoindex("lo").expect("lo");
            let socket = PacketSocket::open(lo, &[], false).expect("packet socket on lo (needs CAP_NET_RAW)");
            socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let header = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
            let payload = [0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1];
            let tagged = [&header[..], &[0x81, 0x00, 0x20, 0x64], &payload].concat();
            let untagged = [&header[..], &payload].concat();
            let mut out = Vec::new();
            for frame in [&tagged, &untagged] {
                socket.send(frame).expect("send on lo");
                let mut buf = [0u8; 128];
                let received = socket.recv_frame(&mut buf).expect("the frame comes back on lo");
                out.push((received, buf[..received.len].to_vec()));
            }
            out
        }) else {
            return;
        };
        let payload = [0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1];
        let (tagged, bytes) = &received[0];
        assert_eq!(
            tagged.vlan,
            Some(VlanTag {
                tpid: 0x8100,
                tci: 0x2064
            })
        );
        assert_eq!(bytes[12..], payload, "the kernel took the tag out of the frame");
        let (untagged, bytes) = &received[1];
        assert_eq!(untagged.vlan, None);
        assert_eq!(bytes[12..], payload);
    }
}
