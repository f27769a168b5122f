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
        "BGP peer {peer} is passive but Herald cannot listen on {local}: {source} ({hint})",
        hint = listen_hint(.source, .local)
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
        "BGP peer {peer} is passive and would listen on {local}, but passive peers already listen on {other} (same \
         port): give every passive peer of an address family the same source address, or none"
    )]
    ListenConflict {
        peer: IpAddr,
        local: SocketAddr,
        other: SocketAddr,
    },
    /// The peer's BFD session could not start (its receive socket, or its own sending socket).
    #[error("BGP peer {peer}: {source}")]
    Bfd {
        peer: IpAddr,
        #[source]
        source: herald_bfd::tasks::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do about a listening socket that could not be opened, by why.
fn listen_hint(source: &std::io::Error, local: &SocketAddr) -> String {
    match source.kind() {
        std::io::ErrorKind::PermissionDenied if local.port() < 1024 => format!(
            "port {} is below 1024: the agent needs the capability NET_BIND_SERVICE (add it to the container's \
             securityContext.capabilities.add), or listen on a port of 1024 or more",
            local.port()
        ),
        std::io::ErrorKind::AddrInUse => {
            "another BGP daemon on this port? use another listen port, or make the peer active only".to_string()
        }
        _ => "use another listen port, or make the peer active only".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(kind: std::io::ErrorKind, port: u16) -> String {
        Error::Listen {
            peer: "192.0.2.1".parse().unwrap(),
            local: SocketAddr::from(([0, 0, 0, 0], port)),
            source: std::io::Error::from(kind),
        }
        .to_string()
    }

    #[test]
    fn a_refused_listen_says_what_is_missing() {
        let denied = listen(std::io::ErrorKind::PermissionDenied, 179);
        assert!(
            denied.contains("0.0.0.0:179") && denied.contains("NET_BIND_SERVICE"),
            "{denied}"
        );
        assert!(!denied.contains("another BGP daemon"), "{denied}");
        let in_use = listen(std::io::ErrorKind::AddrInUse, 179);
        assert!(in_use.contains("another BGP daemon"), "{in_use}");
        assert!(!in_use.contains("NET_BIND_SERVICE"), "{in_use}");
        // Above 1024 no capability helps.
        assert!(!listen(std::io::ErrorKind::PermissionDenied, 1179).contains("NET_BIND_SERVICE"));
    }

    /// The message is written over two source lines; the line continuation must not leave a run of spaces in it.
    #[test]
    fn a_listen_conflict_reads_as_one_sentence() {
        let conflict = Error::ListenConflict {
            peer: "192.0.2.1".parse().unwrap(),
            local: "192.0.2.10:179".parse().unwrap(),
            other: "0.0.0.0:179".parse().unwrap(),
        };
        assert_eq!(
            conflict.to_string(),
            "BGP peer 192.0.2.1 is passive and would listen on 192.0.2.10:179, but passive peers already listen on \
             0.0.0.0:179 (same port): give every passive peer of an address family the same source address, or none"
        );
    }
}
