//! AF_PACKET sockets bound to one interface, classic BPF filters and link-layer multicast membership.
//!
//! The socket is opened with protocol 0 (it receives nothing), gets its BPF filter and `PACKET_IGNORE_OUTGOING`, and
//! only then is bound to the interface with `ETH_P_ALL`: no unfiltered frame is ever queued, and our own
//! transmissions never come back. `SO_BINDTODEVICE` does not restrict packet sockets (packet(7)); `bind` with a
//! `sockaddr_ll` does.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub use socket2::SockFilter;

/// `PACKET_IGNORE_OUTGOING` (Linux ≥ 4.20): do not loop our own transmissions back to this socket.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

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

    /// Waits for a frame and receives it into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.async_io(Interest::READABLE, |s| s.recv(buf)).await
    }

    /// Receives a frame if one is queued; `ErrorKind::WouldBlock` when none is.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.try_io(Interest::READABLE, |s| s.recv(buf))
    }

    /// Sends one whole frame, waiting while the socket's send buffer is full.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.fd.async_io(Interest::WRITABLE, |s| s.send(frame)).await
    }
}
