//! Herald's own BGP-4 codec (RFC 4271 §4): what an announce-only speaker sends, and validation of anything a peer
//! may send. Tests in `tests/packet/` hold byte vectors next to the values they decode to.

pub mod capability;
pub mod error;
pub mod message;
pub mod update;

pub use capability::Capability;
pub use error::DecodeError;
pub use message::{Message, Notification, Open, RouteRefresh, decode_frame};
pub use update::{ErrorHandling, LargeCommunity, Malformed, Origin, OutboundAttributes, PathAttribute, Update};

/// What decoding a peer's messages depends on, known once its session is established (before that, the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeContext {
    /// RFC 6793: both sides advertised 4-octet AS numbers, so AS_PATH and AGGREGATOR carry 4-octet ones.
    pub four_octet_as: bool,
    /// The peer is in our AS (iBGP): RFC 7606 §7.5, §7.9 and §7.10 judge LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST
    /// by it.
    pub internal: bool,
}

/// Address Family Identifier (IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier (IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    pub const UNICAST: Safi = Safi(1);
}
