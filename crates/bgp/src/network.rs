//! TCP transport of a session: an outgoing connection with source address, TTL and TCP MD5 (RFC 2385), and the
//! listening socket of passive peers.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::neighbor::PeerConfig;

/// Connects to the peer. Socket options are set before `connect`, as TCP MD5 must sign the SYN.
pub async fn connect(peer: &PeerConfig) -> io::Result<TcpStream> {
    let socket = if peer.address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(local) = peer.local_address {
        socket
            .bind(SocketAddr::new(local, 0))
            .map_err(|e| io::Error::new(e.kind(), format!("bind to local address {local}: {e}")))?;
    }
    if let Some(key) = &peer.password {
        herald_sys::tcp_md5::set_md5sig(&socket, peer.address, key)
            .map_err(|e| io::Error::new(e.kind(), format!("set TCP MD5 key (TCP_MD5SIG): {e}")))?;
    }
    set_ttl(&socket, peer)?;
    socket.set_nodelay(true)?;
    socket.connect(SocketAddr::new(peer.address, peer.port)).await
}

fn set_ttl(socket: &impl std::os::fd::AsFd, peer: &PeerConfig) -> io::Result<()> {
    if let Some(ttl) = peer.ttl {
        let sock = socket2::SockRef::from(socket);
        if peer.address.is_ipv4() {
            sock.set_ttl_v4(u32::from(ttl))?;
        } else {
            sock.set_unicast_hops_v6(u32::from(ttl))?;
        }
    }
    Ok(())
}

/// Where the passive peer listens: its source address (else any address of its family) and its listen port.
pub fn listen_address(peer: &PeerConfig) -> SocketAddr {
    let any = if peer.address.is_ipv4() {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    SocketAddr::new(peer.local_address.unwrap_or(any), peer.listen_port)
}

/// Opens a listening socket for passive peers. SO_REUSEADDR lets a restarted speaker bind while old connections are
/// in TIME_WAIT; an IPv6 socket is IPv6-only, so IPv4 and IPv6 listeners on one port coexist and every peer
/// address is a plain IPv4 or IPv6 address (TCP MD5 keys match it).
pub fn listen(local: SocketAddr) -> io::Result<TcpListener> {
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        let socket = TcpSocket::new_v6()?;
        socket2::SockRef::from(&socket).set_only_v6(true)?;
        socket
    };
    socket.set_reuseaddr(true)?;
    socket.bind(local)?;
    socket.listen(64)
}

/// Installs a passive peer's TCP MD5 key on the listening socket (the kernel checks that address's SYNs with it and
/// the accepted socket inherits it), or with `None` removes it.
pub fn set_listener_key(listener: &TcpListener, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
    herald_sys::tcp_md5::set_md5sig(listener, peer, key.unwrap_or_default()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("set TCP MD5 key (TCP_MD5SIG) on the listening socket: {e}"),
        )
    })
}

/// Gives an accepted connection the options of our own: TTL and no Nagle delay.
pub fn accepted(stream: &TcpStream, peer: &PeerConfig) -> io::Result<()> {
    set_ttl(stream, peer)?;
    stream.set_nodelay(true)
}
