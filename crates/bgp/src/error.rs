//! Errors of the speaker's API (configuration mistakes); session failures are peer state, see
//! [`crate::PeerStatus::last_error`].

use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("BGP peer {0} is already configured")]
    PeerExists(IpAddr),
    #[error("BGP peer {0} is not configured")]
    UnknownPeer(IpAddr),
    #[error("BGP peer {peer}: {reason}")]
    InvalidPeerConfig { peer: IpAddr, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
