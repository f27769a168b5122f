//! Who holds a lease: `<node>/<instance-id>`.

use std::fmt;

use crate::error::{Error, Result};
use crate::naming;

/// The identity of one agent process: the Kubernetes node it runs on and an instance id that is unique per process
/// (the pod UID, or [`Identity::random_instance_id`]). Written as `<node>/<instance>` into `holderIdentity`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    node: String,
    instance: String,
}

impl Identity {
    /// Builds an identity; the node name must fit into a Lease name (`herald-node-<node>`, at most 253 characters of
    /// lowercase alphanumerics, `-` and `.`), the instance id must be non-empty and contain no `/`.
    pub fn new(node: impl Into<String>, instance: impl Into<String>) -> Result<Self> {
        let node = node.into();
        let instance = instance.into();
        if !naming::is_dns_subdomain(&naming::node_lease_name(&node)) {
            return Err(Error::Identity {
                value: node,
                reason: "the node name must be a DNS subdomain of at most 241 characters (it becomes part of the \
                         Lease name herald-node-<node>)",
            });
        }
        if instance.is_empty() || instance.contains('/') || instance.len() > 128 {
            return Err(Error::Identity {
                value: instance,
                reason: "the instance id must be 1..=128 characters without '/'",
            });
        }
        Ok(Self { node, instance })
    }

    /// A random instance id for processes that have no pod UID (`HERALD_INSTANCE_ID` unset): 16 hex digits from the
    /// standard library's randomly keyed hasher, the process id and the wall clock.
    pub fn random_instance_id() -> String {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        format!("{:016x}", h.finish())
    }

    /// The node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The per-process instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The `holderIdentity` string, `<node>/<instance>`.
    pub fn holder(&self) -> String {
        format!("{}/{}", self.node, self.instance)
    }

    /// The name of this node's liveness lease.
    pub fn node_lease_name(&self) -> String {
        naming::node_lease_name(&self.node)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.instance)
    }
}

/// The node part of a `holderIdentity` (`<node>/<instance>`); a holder without `/` is taken as a bare node name.
pub fn holder_node(holder: &str) -> &str {
    holder.split_once('/').map_or(holder, |(node, _)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_round_trips() {
        let id = Identity::new("node-a.example", "uid-1").unwrap();
        assert_eq!(id.holder(), "node-a.example/uid-1");
        assert_eq!(holder_node(&id.holder()), "node-a.example");
        assert_eq!(id.node_lease_name(), "herald-node-node-a.example");
    }

    #[test]
    fn bad_identities_are_refused() {
        assert!(Identity::new("Node_A", "x").is_err());
        assert!(Identity::new("a".repeat(250), "x").is_err());
        assert!(Identity::new("a", "").is_err());
        assert!(Identity::new("a", "x/y").is_err());
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(Identity::random_instance_id(), Identity::random_instance_id());
    }
}
