//! Bidirectional Forwarding Detection for Herald's BGP sessions: RFC 5880 in asynchronous mode, for single-hop
//! sessions as RFC 5881 runs them over UDP.
//!
//! - [`packet`]: the control packet codec, with the checks RFC 5880 §6.8.6 makes before a packet reaches a session.
//! - [`session`]: one session's state machine and timers, sans-IO (packets and the time in, packets to send and state
//!   changes out), tested without sockets or clocks.
//! - [`tasks`]: the async shell: UDP port 3784, TTL 255 both ways, one task per session, a status each owner (a
//!   BGP peer) watches to take its session down when BFD goes down (RFC 5882).
#![forbid(unsafe_code)]

pub mod packet;
pub mod session;
pub mod tasks;

pub use packet::{ControlPacket, DecodeError, Diag, State};
pub use session::{Action, Ignored, Session, Timers};
pub use tasks::{Bfd, SessionHandle, SessionStatus};
