//! A set of node names shared by every IP that has it: the IPs of one pool usually have the same eligible nodes, so
//! thousands of [`IpDesire`](crate::IpDesire)s (and the announcer's copies of them) point at one set instead of
//! each holding its own.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// An immutable, cheaply cloned set of node names. Compared and hashed by content.
#[derive(Debug, Clone, Default)]
pub struct NodeSet(Arc<BTreeSet<String>>);

impl NodeSet {
    /// The set to change (copied first if another holder shares it).
    pub fn make_mut(&mut self) -> &mut BTreeSet<String> {
        Arc::make_mut(&mut self.0)
    }

    /// Both are the same allocation (then they are equal without comparing names).
    pub fn same(&self, other: &NodeSet) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for NodeSet {
    type Target = BTreeSet<String>;

    fn deref(&self) -> &BTreeSet<String> {
        &self.0
    }
}

impl Borrow<BTreeSet<String>> for NodeSet {
    fn borrow(&self) -> &BTreeSet<String> {
        &self.0
    }
}

impl PartialEq for NodeSet {
    fn eq(&self, other: &Self) -> bool {
        self.same(other) || self.0 == other.0
    }
}

impl Eq for NodeSet {}

impl Hash for NodeSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `BTreeSet<String>` hashes, so that a `HashSet<NodeSet>` can be looked up by a plain set.
        self.0.hash(state);
    }
}

impl From<BTreeSet<String>> for NodeSet {
    fn from(set: BTreeSet<String>) -> Self {
        NodeSet(Arc::new(set))
    }
}

impl<const N: usize> From<[String; N]> for NodeSet {
    fn from(names: [String; N]) -> Self {
        NodeSet(Arc::new(names.into()))
    }
}

impl FromIterator<String> for NodeSet {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        NodeSet(Arc::new(iter.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn equal_by_content_and_found_by_a_plain_set() {
        let a: NodeSet = ["n1".to_owned(), "n2".to_owned()].into();
        let b: NodeSet = ["n2", "n1"].iter().map(|n| n.to_string()).collect();
        assert!(!a.same(&b));
        assert_eq!(a, b);
        let mut interned = HashSet::new();
        interned.insert(a.clone());
        let plain: BTreeSet<String> = b.iter().cloned().collect();
        assert!(interned.get(&plain).is_some_and(|found| found.same(&a)));
        let mut c = a.clone();
        c.make_mut().remove("n1");
        assert_eq!(a.len(), 2, "changing a copy leaves the shared set alone");
        assert_ne!(a, c);
    }
}
