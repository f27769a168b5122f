//! Errors of the speaker's API (configuration mistakes); session failures are peer state, see
//! [`crate::PeerStatus::last_error`].

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("BGP peer {0} is already configured")]
    PeerExists(IpAddr),
    #[error("BGP peer {0} is not configured")]
    UnknownPeer(IpAddr),
    #[error("BGP peer {peer}: {reason}")]
    InvalidPeerConfig { peer: IpAddr, reason: String },
    /// A passive peer's listening socket could not be opened or given the peer's TCP MD5 key.
    #[error(
        "BGP peer {peer} is passive but Herald cannot listen on {local}: {source} (another BGP daemon on this port? \
         use another listen port, or make the peer active only)"
    )]
    Listen {
        peer: IpAddr,
        local: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Passive peers of one family would need a wildcard and a specific listening socket on the same port, which the
    /// kernel refuses.
    #[error(
        "BGP peer {peer} is passive and would listen on {local}, but passive peers already listen on {other} (same          port): give every passive peer of an address family the same source address, or none"
    )]
    ListenConflict {
        peer: IpAddr,
        local: SocketAddr,
        other: SocketAddr,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
