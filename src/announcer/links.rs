//! This node's interfaces, as the announcer reads them. Which one carries an IP and whether the engine can answer on
//! it is decided by `herald_l2::interface` (the rule `L2Engine::attach` applies too).

pub use herald_l2::interface::{InterfaceChoice, InterfaceFacts, interface_for};

/// Every interface by name, as read from the kernel.
pub type Links = Vec<InterfaceFacts>;

/// Reads the interfaces now. Errors become an empty list (nothing will be announced) and a log line.
pub fn read() -> Links {
    herald_l2::interface::interfaces().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list interfaces");
        Links::new()
    })
}
