//! The announcer: turns the cluster state into Layer 2 and BGP announcements.

pub mod desired;
