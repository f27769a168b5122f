//! The crate's error type.

use crate::lease::StoreError;
use crate::timing::TimingError;

/// Errors returned by the election shells and constructors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The timing flags break the safety or liveness inequality; the message names the flags to change.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// A node name or instance id cannot be used to build a Lease name or holder identity.
    #[error("invalid identity {value:?}: {reason}")]
    Identity { value: String, reason: &'static str },
    /// An IP address cannot be owned through a Lease (see [`crate::naming::ip_slug`]).
    #[error("IP {ip} cannot be announced: {reason}")]
    InvalidIp { ip: std::net::IpAddr, reason: &'static str },
    /// The election task has stopped (after `shutdown()` or because it was superseded); the command was not applied.
    #[error("the election task has stopped")]
    Stopped,
    /// The election task panicked or was aborted.
    #[error("the election task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// A lease store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
