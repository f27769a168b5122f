//! TCP transport of a session: an outgoing connection with source address, TTL and TCP MD5 (RFC 2385).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

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
    if let Some(ttl) = peer.ttl {
        let sock = socket2::SockRef::from(&socket);
        if peer.address.is_ipv4() {
            sock.set_ttl_v4(u32::from(ttl))?;
        } else {
            sock.set_unicast_hops_v6(u32::from(ttl))?;
        }
    }
    socket.set_nodelay(true)?;
    socket.connect(SocketAddr::new(peer.address, peer.port)).await
}
