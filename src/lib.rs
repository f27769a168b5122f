//! The `herald` agent's wiring: the allocator controller, the announcer, metrics and health. The binary
//! (`src/main.rs`) is the CLI around it; the protocol engines live in `crates/`.

#![forbid(unsafe_code)]

pub mod agent;
pub mod allocator;
pub mod announcer;
pub mod credentials;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod watch;
