//! Every Service's holding, found by the Service's key without a second copy of that key.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::Holding;
use crate::request::ServiceKey;

/// A holding, ordered and found by its request's key.
#[derive(Debug, Clone)]
struct ByKey(Box<Holding>);

impl ByKey {
    fn key(&self) -> &ServiceKey {
        &self.0.request.key
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ByKey {}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}

impl Borrow<ServiceKey> for ByKey {
    fn borrow(&self) -> &ServiceKey {
        self.key()
    }
}

/// The holdings by Service key. A map from key to holding would keep each key twice (the map's key and the
/// request's): two more strings and 48 bytes per Service. Boxed, so B-tree nodes stay small: memory per Service is
/// what it holds, not node slack.
#[derive(Debug, Clone, Default)]
pub(super) struct Holdings(BTreeSet<ByKey>);

impl Holdings {
    pub(super) fn get(&self, key: &ServiceKey) -> Option<&Holding> {
        self.0.get(key).map(|h| &*h.0)
    }

    pub(super) fn contains_key(&self, key: &ServiceKey) -> bool {
        self.0.contains(key)
    }

    pub(super) fn remove(&mut self, key: &ServiceKey) -> Option<Box<Holding>> {
        self.0.take(key).map(|h| h.0)
    }

    /// Adds `holding`, replacing the holding of the same Service if there is one.
    pub(super) fn insert(&mut self, holding: Box<Holding>) {
        self.0.replace(ByKey(holding));
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Every holding with its Service's key, in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &Holding)> + '_ {
        self.0.iter().map(|h| (h.key(), &*h.0))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Holding> + '_ {
        self.0.iter().map(|h| &*h.0)
    }
}

/// Equal when every Service holds the same, for the same request (not only the same keys).
impl PartialEq for Holdings {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.values().zip(other.values()).all(|(a, b)| a == b)
    }
}

impl Eq for Holdings {}
