//! Herald's IP allocator: a pure function of pools and Service requests to address assignments.
//!
//! No I/O, no clock, no Kubernetes types: the allocator controller converts `Eip`s into [`PoolSpec`]s and
//! Services into [`ServiceRequest`]s, calls [`Allocator`], and writes the results back (Service status,
//! `herald.dev/allocated-from`, Events, Eip status from [`Allocator::pool_stats`]).
//!
//! ```
//! use herald_ipam::{Allocator, Pool, PoolSpec, ServiceRequest};
//!
//! let mut alloc = Allocator::new();
//! alloc.set_pool(Pool::parse(&PoolSpec::new("web", &["192.0.2.0/30"])).unwrap());
//! let a = alloc.allocate(&ServiceRequest::new("shop", "frontend")).unwrap();
//! assert_eq!(a.pool, "web");
//! assert_eq!(a.ips, ["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]);
//! ```
//!
//! See `docs/ipam.md` for the rules as users see them.

#![forbid(unsafe_code)]

mod allocator;
mod error;
mod intervals;
mod never_allocated;
mod pool;
mod range;
mod request;
mod selector;
mod sharing;

pub use allocator::restore::{Conflict, ConflictReason, ExistingAssignment};
pub use allocator::{Allocator, Eviction, EvictionReason};
pub use error::AllocError;
pub use never_allocated::NeverAllocated;
pub use pool::overlap::{Overlap, find_overlaps};
pub use pool::parse::{EntryError, PoolError, parse_entry};
pub use pool::{FamilyStats, Pool, PoolEntry, PoolRefusal, PoolSpec, PoolStats};
pub use range::{AddrRange, Family};
pub use request::{Allocation, CreationKey, IpFamilyPolicy, Protocol, ServiceKey, ServicePort, ServiceRequest};
pub use selector::{LabelOperator, LabelRequirement, LabelSelector, Labels};
pub use sharing::SharingConflict;
