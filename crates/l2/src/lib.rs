//! Herald's Layer 2 engine: answers ARP (IPv4) and Neighbor Discovery (IPv6) for LoadBalancer addresses.
//!
//! - [`interface`]: which interface answers for an address and whether it can: one rule for the engine and the agent.
//! - [`packet`]: the ARP and NS/NA codec (etherparse underneath), never panicking on hostile frames.
//! - [`responder`]: the sans-IO core of one interface: frames and time in, frames and [`Event`]s out.
//! - [`network`]: the AF_PACKET socket with its BPF filter, and solicited-node group memberships.
//! - [`tasks`]: [`L2Engine`] and [`InterfaceHandle`], the async shell the agent and `herald announce l2` drive.
//!
//! The wire rules and their RFC references are in `docs/l2.md`.
#![forbid(unsafe_code)]

pub mod counters;
pub mod error;
pub mod events;
pub mod interface;
pub mod network;
pub mod packet;
pub mod responder;
pub mod tasks;

pub use counters::{Counters, CountersSnapshot};
pub use error::{Error, Result, Unusable};
pub use events::{CheckOutcome, Conflict, ConflictSignal, Event};
pub use interface::{Interface, InterfaceChoice, InterfaceFacts};
pub use packet::MacAddr;
pub use responder::{AnnounceConfig, AnnounceMode, CheckConfig, ConflictPolicy, ProbeConfig, Responder};
pub use tasks::{EngineConfig, EngineEvent, InterfaceHandle, InterfaceStatus, L2Engine};
