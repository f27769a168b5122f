//! UDP datagrams with the TTL (IPv4) or hop limit (IPv6) they arrived with, for protocols that accept only
//! packets from a direct neighbor by their TTL of 255 (GTSM, RFC 5082; BFD single hop, RFC 5881 §5).

use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt,
    sockopt::{Ipv4RecvTtl, Ipv6RecvHopLimit},
};

/// Asks the kernel to pass each datagram's TTL (hop limit) to [`recv_with_ttl`] on this socket of family `v4`/v6.
pub fn receive_ttl(socket: &impl AsFd, v4: bool) -> io::Result<()> {
    if v4 {
        setsockopt(socket, Ipv4RecvTtl, &true)?;
    } else {
        setsockopt(socket, Ipv6RecvHopLimit, &true)?;
    }
    Ok(())
}

/// One received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    /// The IP TTL or hop limit it arrived with; `None` if the kernel did not say (no [`receive_ttl`]).
    pub ttl: Option<u8>,
}

/// Receives one datagram into `buf` without blocking (`WouldBlock` when there is none). A datagram longer than
/// `buf` is truncated; `len` is what was copied.
pub fn recv_with_ttl(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    // Room for one int-sized control message (cmsghdr 16 bytes + 4 bytes, aligned), with margin.
    let mut control = [0u8; 64];
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::MSG_DONTWAIT)?;
    let mut ttl = None;
    for cmsg in msg.cmsgs()? {
        match cmsg {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => ttl = u8::try_from(t).ok(),
            _ => {}
        }
    }
    let from = msg
        .address
        .and_then(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()))
            } else {
                a.as_sockaddr_in6()
                    .map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port()))
            }
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP source address"))?;
    Ok(Datagram {
        len: msg.bytes,
        from,
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// The TTL a sender sets is the TTL the receiver reads, on loopback, for both families.
    #[test]
    fn the_ttl_of_the_sender_is_read() {
        for (any, local) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            let rx = match UdpSocket::bind(any) {
                Ok(s) => s,
                // A machine without IPv6 on loopback.
                Err(_) => continue,
            };
            let v4 = rx.local_addr().unwrap().is_ipv4();
            receive_ttl(&rx, v4).unwrap();
            let tx = UdpSocket::bind(local).unwrap();
            let sock = socket2::SockRef::from(&tx);
            for ttl in [255u8, 7] {
                if v4 {
                    sock.set_ttl_v4(u32::from(ttl)).unwrap();
                } else {
                    sock.set_unicast_hops_v6(u32::from(ttl)).unwrap();
                }
                tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
                let mut buf = [0u8; 16];
                let got = loop {
                    match recv_with_ttl(&rx, &mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                        other => break other.unwrap(),
                    }
                };
                assert_eq!(&buf[..got.len], b"hello");
                assert_eq!(got.ttl, Some(ttl));
                assert_eq!(got.from, tx.local_addr().unwrap());
            }
        }
    }
}
