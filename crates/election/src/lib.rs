//! Herald's Lease-based ownership protocol for Layer 2 Service IPs, and the client-go-style leader lock it is built on.
//!
//! The crate follows the sans-IO split used everywhere in Herald:
//!
//! - [`ownership::OwnershipCore`] and [`leader::LeaderLockCore`] are pure decision cores: observations, operation
//!   results and the current time go in; lease reads/writes and announce/withdraw decisions come out. They never touch
//!   a socket or a clock, so every race of the safety argument can be replayed deterministically (see `tests/`).
//! - [`lease::LeaseStore`] is the only I/O boundary: [`kube_store::KubeLeaseStore`] talks to the API server
//!   (`coordination.k8s.io/v1` Leases, compare-and-swap `replace`), [`memory::MemoryLeaseStore`] enforces the same
//!   resourceVersion semantics in memory for tests and simulations.
//! - [`gc::LeaseCollector`] is the pure core of lease garbage collection: which IP and node Leases nobody needs any
//!   more, given the Leases, what is in use, the Nodes that exist and the time.
//! - [`tasks`] holds the thin async shells the agent drives: [`tasks::OwnershipAgent`] (per-IP ownership),
//!   [`tasks::LeaderLock`] (the single `herald-allocator` lease) and [`tasks::UnusedLeases`] (deletes what the
//!   collector finds, with resourceVersion preconditions).
//!
//! The protocol is specified in `shared/design/l2-election.md` and documented as implemented in `docs/election.md`.
#![forbid(unsafe_code)]

pub mod gc;
pub mod identity;
pub mod kube_store;
pub mod leader;
pub mod lease;
pub mod log_throttle;
pub mod memory;
pub mod metrics;
pub mod naming;
pub mod node_set;
pub mod ownership;
pub mod rank;
pub mod tasks;
pub mod timing;

mod error;

pub use error::{Error, Result};
pub use identity::Identity;
pub use kube_store::KubeLeaseStore;
pub use leader::{LeaderLockCore, LeaderTiming};
pub use lease::{LeaseLabels, LeaseRecord, LeaseStore, StoreError, WatchEvent};
pub use memory::MemoryLeaseStore;
pub use metrics::{ElectionMetrics, MetricsSnapshot};
pub use node_set::NodeSet;
pub use ownership::{Action, Announce, IpDesire, OpId, OutagePolicy, OwnershipCore};
pub use tasks::{
    AnnouncementSink, Collected, LeaderLock, LeaderLockConfig, LeaderLockHandle, OwnershipAgent, OwnershipConfig,
    OwnershipEvent, OwnershipHandle, Sweep, UnusedLeases,
};
pub use timing::{ElectionTiming, TimingError};
