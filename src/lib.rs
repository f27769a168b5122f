//! The `herald` agent's wiring: the allocator controller, the announcer, metrics and health. The binary
//! (`src/main.rs`) is the CLI around it; the protocol engines live in `crates/`.

#![forbid(unsafe_code)]

/// The version and the commit it was built from (`0.1.0 (1a2b3c4d5e6f)`), as `herald --version` prints it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HERALD_REVISION"), ")");

pub mod adapter;
pub mod agent;
pub mod allocator;
pub mod announcer;
pub mod credentials;
pub mod duration;
pub mod events;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod prober;
pub mod service;
pub mod store;
pub mod watch;
