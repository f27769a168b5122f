//! Pools: an Eip's addresses as sorted ranges, and the rules deciding which Services a pool serves.
//!
//! Reading the address list is in [`parse`], overlaps between pools in [`overlap`]; both add to [`Pool`] and
//! import this module, never the other way.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::never_allocated::NeverAllocated;
use crate::range::{AddrRange, Family, from_u128, to_u128};
use crate::request::ServiceRequest;
use crate::selector::LabelSelector;

pub(crate) mod overlap;
pub(crate) mod parse;
#[cfg(test)]
mod tests;

/// A pool as the user wrote it (the controller converts an `Eip` into this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The Eip's name.
    pub name: String,
    /// CIDRs, `A-B` ranges and single addresses; IPv4 and IPv6 may mix.
    pub addresses: Vec<String>,
    /// `spec.disable`: no new addresses; existing allocations stay valid.
    pub disabled: bool,
    /// `spec.autoAssign`: when false, only Services that name the pool or request one of its addresses get
    /// addresses from it.
    pub auto_assign: bool,
    /// `spec.priority`: among pools a Service may use, the lowest number is tried first; ties by name.
    pub priority: i32,
    /// `spec.namespaces`: namespaces allowed by name.
    pub namespaces: Vec<String>,
    /// `spec.namespaceSelector`: namespaces allowed by their labels.
    pub namespace_selector: Option<LabelSelector>,
    /// `spec.serviceSelector`: Services allowed by their labels.
    pub service_selector: Option<LabelSelector>,
}

impl PoolSpec {
    /// An enabled, auto-assigning pool with priority 0 that serves every namespace.
    pub fn new(name: impl Into<String>, addresses: &[&str]) -> Self {
        Self {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            disabled: false,
            auto_assign: true,
            priority: 0,
            namespaces: Vec::new(),
            namespace_selector: None,
            service_selector: None,
        }
    }
}

/// One parsed address entry: the text the user wrote and the addresses it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    /// The entry as written (trimmed).
    pub text: String,
    /// The addresses the entry spans (a CIDR without its network and broadcast addresses). Those in a
    /// [`NeverAllocated`] block are not the pool's: see [`Pool::usable`].
    pub range: AddrRange,
}

/// A validated pool. Entries are sorted by (family, first address) and never overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    name: String,
    entries: Vec<PoolEntry>,
    /// The entries minus the [`NeverAllocated`] blocks: sorted, disjoint, never empty.
    usable: Vec<AddrRange>,
    /// The [`NeverAllocated`] blocks the entries touch, in [`NeverAllocated::ALL`] order.
    left_out: Vec<&'static NeverAllocated>,
    disabled: bool,
    auto_assign: bool,
    priority: i32,
    namespaces: BTreeSet<String>,
    namespace_selector: Option<LabelSelector>,
    service_selector: Option<LabelSelector>,
    totals: [u128; 2],
}

/// Why a pool does not serve a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRefusal {
    /// `spec.namespaces` / `spec.namespaceSelector` exclude the Service's namespace.
    NamespaceNotAllowed {
        /// The Service's namespace.
        namespace: String,
        /// What exactly failed.
        detail: String,
    },
    /// `spec.serviceSelector` does not match the Service's labels.
    ServiceSelectorMismatch {
        /// The selector.
        selector: String,
        /// The first requirement that failed.
        detail: String,
    },
    /// `spec.disable` is set.
    Disabled,
    /// `spec.autoAssign` is false and the Service did not ask for this pool.
    NotAutoAssign,
}

impl fmt::Display for PoolRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolRefusal::NamespaceNotAllowed { namespace: _, detail } => f.write_str(detail),
            PoolRefusal::ServiceSelectorMismatch { selector, detail } => {
                write!(
                    f,
                    "the Service's labels do not match spec.serviceSelector '{selector}': {detail}"
                )
            }
            PoolRefusal::Disabled => f.write_str("the Eip is disabled (spec.disable)"),
            PoolRefusal::NotAutoAssign => {
                f.write_str("spec.autoAssign is false; name it with herald.dev/eip or request one of its IPs")
            }
        }
    }
}

impl Pool {
    /// The Eip's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parsed entries, sorted by family then address.
    pub fn entries(&self) -> &[PoolEntry] {
        &self.entries
    }

    /// The addresses the pool gives out: its entries minus the [`NeverAllocated`] blocks, sorted by family
    /// then address.
    pub fn usable(&self) -> &[AddrRange] {
        &self.usable
    }

    /// The [`NeverAllocated`] blocks that share addresses with the entries and were taken out of them, for
    /// the Eip's status.
    pub fn left_out(&self) -> &[&'static NeverAllocated] {
        &self.left_out
    }

    /// Whether `spec.disable` is set.
    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Whether Services get addresses from this pool without asking for it.
    pub fn auto_assign(&self) -> bool {
        self.auto_assign
    }

    /// Lower is tried first.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// Number of usable addresses of `family`. Exact: with the [`NeverAllocated`] blocks out, even `::/0`
    /// counts less than `u128::MAX`.
    pub fn total(&self, family: Family) -> u128 {
        self.totals[family.index()]
    }

    /// Whether `ip` is a usable address of the pool (never one in a [`NeverAllocated`] block).
    /// O(log entries).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let key = (Family::of(ip), to_u128(ip));
        let idx = self.usable.partition_point(|r| (r.family(), r.first_raw()) <= key);
        idx > 0 && self.usable[idx - 1].contains(ip)
    }

    /// The usable ranges of one family, ascending.
    pub(crate) fn ranges(&self, family: Family) -> impl Iterator<Item = &AddrRange> + '_ {
        self.usable.iter().filter(move |r| r.family() == family)
    }

    /// Every usable address of one family, in the order the allocator hands free ones out (ascending). Lazy: take
    /// what you need.
    pub fn addresses(&self, family: Family) -> impl Iterator<Item = IpAddr> + '_ {
        self.ranges(family)
            .flat_map(move |r| (r.first_raw()..=r.last_raw()).map(move |v| from_u128(family, v)))
    }

    /// Whether the pool serves the Service's namespace and labels (ignores `disable` and `autoAssign`).
    /// A pool with neither `namespaces` nor `namespaceSelector` serves all namespaces; with either or both,
    /// a namespace is served when it is listed by name **or** its labels match the selector.
    pub fn permits(&self, req: &ServiceRequest) -> Result<(), PoolRefusal> {
        let ns = &req.key.namespace;
        let open = self.namespaces.is_empty() && self.namespace_selector.is_none();
        if !open && !self.namespaces.contains(ns) {
            let by_label = self
                .namespace_selector
                .as_ref()
                .map(|s| s.mismatch(&req.namespace_labels));
            let listed = self.namespaces.iter().cloned().collect::<Vec<_>>().join(", ");
            let detail = match by_label {
                Some(None) => None,
                Some(Some(why)) if self.namespaces.is_empty() => {
                    Some(format!("namespace '{ns}' does not match spec.namespaceSelector: {why}"))
                }
                Some(Some(why)) => Some(format!(
                    "namespace '{ns}' is not in spec.namespaces [{listed}] and does not match spec.namespaceSelector: {why}"
                )),
                None => Some(format!("namespace '{ns}' is not in spec.namespaces [{listed}]")),
            };
            if let Some(detail) = detail {
                return Err(PoolRefusal::NamespaceNotAllowed {
                    namespace: ns.clone(),
                    detail,
                });
            }
        }
        if let Some(sel) = &self.service_selector
            && let Some(detail) = sel.mismatch(&req.service_labels)
        {
            return Err(PoolRefusal::ServiceSelectorMismatch {
                selector: sel.to_string(),
                detail,
            });
        }
        Ok(())
    }
}

/// Address counts of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyStats {
    /// Usable addresses (a /64 has 2^64 - 2; addresses in a [`NeverAllocated`] block are not counted).
    pub total: u128,
    /// Addresses held by at least one Service (a shared address counts once).
    pub used: u128,
    /// `total - used`.
    pub free: u128,
}

/// Per-family counts for an Eip's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// IPv4.
    pub ipv4: FamilyStats,
    /// IPv6.
    pub ipv6: FamilyStats,
}

impl PoolStats {
    /// The counts of `family`.
    pub fn family(&self, family: Family) -> FamilyStats {
        match family {
            Family::V4 => self.ipv4,
            Family::V6 => self.ipv6,
        }
    }
}
