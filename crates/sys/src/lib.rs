//! The only crate in Herald allowed to use `unsafe`. Every unsafe block carries a `// SAFETY:` note.
//!
//! - [`packet`]: AF_PACKET sockets, classic BPF filters, link-layer multicast membership (Layer 2 mode).
//! - [`iface`]: interface facts (index, MAC, flags, addresses) that work inside network namespaces.
//! - [`tcp_md5`]: RFC 2385 TCP MD5 signatures (`TCP_MD5SIG`) for BGP sessions.
//! - [`udp`]: UDP datagrams with the TTL they arrived with (BFD's single-hop check).
//! - [`malloc`]: the C allocator's arenas and trimming (the agent's resident memory).

pub mod iface;
pub mod malloc;
pub mod packet;
pub mod tcp_md5;
pub mod udp;
