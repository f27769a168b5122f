//! Herald's own BGP-4 codec (RFC 4271 §4): what an announce-only speaker sends, and validation of anything a peer
//! may send. Tests in `tests/packet/` hold byte vectors next to the values they decode to.
//!
//! Modules depend one way: [`wire`] and [`notification`] import no other; [`error`] uses [`notification`];
//! [`capability`] uses [`wire`]; [`update`] uses those; [`message`] uses them all. This file only re-exports.

pub mod capability;
pub mod error;
pub mod message;
pub mod notification;
pub mod update;
pub mod wire;

pub use capability::Capability;
pub use error::DecodeError;
pub use message::{Message, Open, RouteRefresh, decode_frame};
pub use notification::{
    CeaseSubcode, ErrorCode, ErrorKind, FsmSubcode, HeaderSubcode, Notification, OpenSubcode, RouteRefreshSubcode,
    UpdateSubcode,
};
pub use update::{ErrorHandling, LargeCommunity, Malformed, Origin, OutboundAttributes, PathAttribute, Update};
pub use wire::{Afi, DecodeContext, MessageType, Safi};
