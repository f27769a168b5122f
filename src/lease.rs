//! A Lease as the allocator's caches keep it: its name, resourceVersion and holder.
//!
//! The allocator's leader watches every IP lease (one per Service IP) for two things only: who holds each IP (the
//! Eips' `announcers`) and, for the lease collector, each lease's resourceVersion and holder. A `k8s_openapi` `Lease`
//! costs about a KiB in a store even slimmed (its fixed size alone is 496 bytes); this type keeps those three fields.
//! Not the namespace: every Lease Herald watches is in its own namespace (one watch, one namespace), so the store
//! keys them by name alone.

use herald_election::gc::LeaseView;
use k8s_openapi::api::coordination::v1::Lease;

/// One Lease, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeldLease {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `spec.holderIdentity`, `None` when empty.
    pub holder: Option<String>,
}

impl From<Lease> for HeldLease {
    fn from(lease: Lease) -> Self {
        HeldLease {
            name: lease.metadata.name.unwrap_or_default(),
            resource_version: lease.metadata.resource_version,
            holder: lease.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty()),
        }
    }
}

impl From<&HeldLease> for LeaseView {
    fn from(lease: &HeldLease) -> Self {
        LeaseView {
            name: lease.name.clone(),
            resource_version: lease.resource_version.clone().unwrap_or_default(),
            holder: lease.holder.clone(),
        }
    }
}

/// The store's key: the name alone (see the module's documentation).
impl kube::runtime::reflector::Lookup for HeldLease {
    type DynamicType = ();

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Lease".into()
    }

    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "coordination.k8s.io".into()
    }

    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "leases".into()
    }

    fn name(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.name.as_str().into())
    }

    fn namespace(&self) -> Option<std::borrow::Cow<'_, str>> {
        None
    }

    fn resource_version(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.resource_version.as_deref().map(Into::into)
    }

    fn uid(&self) -> Option<std::borrow::Cow<'_, str>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_name_version_and_holder_and_reads_an_empty_holder_as_none() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "herald-ip-192-0-2-1", "namespace": "herald-system", "resourceVersion": "9",
                "labels": {"herald.dev/lease": "ip"}},
            "spec": {"holderIdentity": "n1/a", "leaseDurationSeconds": 3}}))
        .unwrap();
        let held = HeldLease::from(lease.clone());
        assert_eq!(
            LeaseView::from(&held),
            LeaseView {
                name: "herald-ip-192-0-2-1".into(),
                resource_version: "9".into(),
                holder: Some("n1/a".into())
            }
        );
        let mut free = lease;
        free.spec.as_mut().unwrap().holder_identity = Some(String::new());
        assert_eq!(HeldLease::from(free).holder, None);
    }
}
