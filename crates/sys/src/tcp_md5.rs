//! RFC 2385 TCP MD5 signature option (`TCP_MD5SIG`) for BGP sessions.
//!
//! The kernel signs every segment to (and checks every segment from) `peer` with `key`. A peer without the key, or
//! with another one, never sees our SYN: the kernel drops unsigned or badly signed segments silently, so a mismatch
//! looks like a peer that does not answer. Callers should say so in their state reason.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::SockAddr;

/// Longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = libc::TCP_MD5SIG_MAXKEYLEN;

/// `struct tcp_md5sig` from `linux/tcp.h`; the libc crate has the option number but not the struct.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MAX_KEY_LEN],
}

/// Installs (or with an empty `key`, removes) the MD5 key for segments to and from `peer` on `socket`.
///
/// Call it on the socket before `connect` (active side) or on the listening socket before `accept` (passive side).
/// The port of `peer` is ignored by the kernel. Errors: a key longer than 80 bytes (`InvalidInput`), a kernel
/// without `CONFIG_TCP_MD5SIG` (`ENOPROTOOPT`), or an address family that does not match the socket.
pub fn set_md5sig(socket: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 key is {} bytes, the kernel accepts at most {MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    // SAFETY: `tcp_md5sig` is plain old data (integers and byte arrays); all-zero is a valid value of it.
    let mut sig: TcpMd5Sig = unsafe { mem::zeroed() };
    let addr = SockAddr::from(SocketAddr::new(peer, 0));
    let len = (addr.len() as usize).min(mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `addr.as_ptr()` points to `addr.len()` initialised bytes of a sockaddr, `sig.addr` is a
    // sockaddr_storage of at least that size (`len` is clamped to it), and the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(addr.as_ptr().cast::<u8>(), (&raw mut sig.addr).cast::<u8>(), len);
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: the fd is valid for the lifetime of `socket`; we pass a pointer to a fully initialised
    // `tcp_md5sig` and its exact size, which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast::<libc::c_void>(),
            mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layout_matches_linux() {
        // linux/tcp.h: 128 (sockaddr_storage) + 1 + 1 + 2 + 4 + 80.
        assert_eq!(mem::size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn rejects_overlong_key() {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let err = set_md5sig(&sock, "192.0.2.1".parse().unwrap(), &[b'k'; 81]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn sets_key_on_tcp_socket() {
        let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        match set_md5sig(&sock, "2001:db8::1".parse().unwrap(), b"secret") {
            Ok(()) => {}
            // Kernels built without CONFIG_TCP_MD5SIG.
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
            Err(e) => panic!("setsockopt TCP_MD5SIG: {e}"),
        }
    }
}
