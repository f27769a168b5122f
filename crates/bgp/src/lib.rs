//! Herald's announce-only BGP-4 speaker.
//!
//! - [`packet`]: the codec (RFC 4271, 4760, 6793, 2918, 4724, 1997, 8092), validating everything a peer sends.
//! - [`fsm`]: the sans-IO session state machine (RFC 4271 §8): events in, actions out, no sockets or clocks.
//! - [`rib`]: the routes to announce and per-session Adj-RIB-Out diffs packed into UPDATEs.
//! - [`neighbor`]: per-peer configuration and the status it reports.
//! - [`network`]: TCP connect with source address, TTL and TCP MD5.
//! - [`tasks`]: the tokio task that owns one peer's socket and timers.
//! - [`instance`]: [`Speaker`], the handle the agent and `herald announce bgp` drive.
#![forbid(unsafe_code)]

pub mod error;
pub mod fsm;
pub mod instance;
pub mod neighbor;
pub mod network;
pub mod packet;
pub mod rib;
pub mod tasks;

pub use error::{Error, Result};
pub use instance::{ShutdownMode, Speaker, SpeakerConfig};
pub use neighbor::{MalformedUpdates, PeerConfig, PeerStatus};
pub use rib::RoutePolicy;
