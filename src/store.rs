//! A reflector's store: the objects of one watch by namespace and name, and nothing beside them.
//!
//! kube-runtime's store keys every object by an `ObjectRef` of its own: two or three more strings and 104 bytes per
//! object in a table that doubles as it grows (at 10,000 Services, 1.7 MB of table and 0.4 MB of key strings, per
//! store). This one keeps each object once, as an `Arc`, in a table of pointers hashed by the object's own namespace
//! and name: 8 bytes per slot and no copy of any key.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use kube::runtime::reflector::Lookup;
use kube::runtime::watcher;

/// The namespace and name of an object: what the store keys it by.
fn key_of<K: Lookup>(object: &K) -> (Option<Cow<'_, str>>, Cow<'_, str>) {
    (object.namespace(), object.name().unwrap_or_default())
}

/// The objects, hashed by key.
struct Table<K> {
    objects: HashTable<Arc<K>>,
    hasher: std::hash::RandomState,
}

impl<K: Lookup> Table<K> {
    fn new(hasher: std::hash::RandomState) -> Self {
        Self {
            objects: HashTable::new(),
            hasher,
        }
    }

    fn hash(&self, namespace: Option<&str>, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    fn get(&self, namespace: Option<&str>, name: &str) -> Option<&Arc<K>> {
        self.objects.find(self.hash(namespace, name), |o| {
            let (ns, n) = key_of(&**o);
            ns.as_deref() == namespace && n == name
        })
    }

    fn insert(&mut self, object: K) {
        let (ns, name) = key_of(&object);
        let hash = self.hash(ns.as_deref(), &name);
        let found = self
            .objects
            .find_mut(hash, |o| key_of(&**o) == (ns.clone(), name.clone()));
        match found {
            Some(slot) => *slot = Arc::new(object),
            None => {
                let hasher = &self.hasher;
                self.objects.insert_unique(hash, Arc::new(object), |o| {
                    let (ns, name) = key_of(&**o);
                    hasher.hash_one((ns.as_deref(), &*name))
                });
            }
        }
    }

    fn remove(&mut self, namespace: Option<&str>, name: &str) {
        let hash = self.hash(namespace, name);
        let found = self.objects.find_entry(hash, |o| {
            let (ns, n) = key_of(&**o);
            ns.as_deref() == namespace && n == name
        });
        if let Ok(entry) = found {
            entry.remove();
            // A table at most a quarter full gives back its room (after a burst of deletions).
            if self.objects.capacity() > 64 && self.objects.len() < self.objects.capacity() / 4 {
                let hasher = &self.hasher;
                self.objects.shrink_to_fit(|o: &Arc<K>| {
                    let (ns, name) = key_of(&**o);
                    hasher.hash_one((ns.as_deref(), &*name))
                });
            }
        }
    }
}

/// The objects of one watch, as the last events left them. Cheap to clone: clones read the same objects.
pub struct Store<K>(Arc<RwLock<Table<K>>>);

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K: Lookup> Store<K> {
    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.read().objects.iter().cloned().collect()
    }

    /// The object `name` in `namespace` (`None` for cluster-scoped objects).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        self.read().get(namespace, name).cloned()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> RwLockReadGuard<'_, Table<K>> {
        // A panic elsewhere cannot leave the table half-changed (every change is one table operation).
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table<K>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Applies a watch's events to a [`Store`]. A (re-)list is collected aside and replaces the store's objects when it
/// is complete, so readers never see a half-listed store.
pub struct Writer<K> {
    store: Store<K>,
    listing: Option<Table<K>>,
}

impl<K: Lookup> Writer<K> {
    /// A writer and an empty store.
    pub fn new() -> Self {
        Self {
            store: Store(Arc::new(RwLock::new(Table::new(Default::default())))),
            listing: None,
        }
    }

    /// The store this writer fills.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The object `name` in `namespace`, as readers see it now.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        self.store.get(namespace, name)
    }

    /// Applies one event.
    pub fn apply(&mut self, event: watcher::Event<K>) {
        match event {
            watcher::Event::Init => self.listing = Some(Table::new(Default::default())),
            watcher::Event::InitApply(object) => self
                .listing
                .get_or_insert_with(|| Table::new(Default::default()))
                .insert(object),
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_else(|| Table::new(Default::default()));
                *self.store.write() = listed;
            }
            watcher::Event::Apply(object) => self.store.write().insert(object),
            watcher::Event::Delete(object) => {
                let (ns, name) = key_of(&object);
                self.store.write().remove(ns.as_deref(), &name);
            }
        }
    }
}

impl<K: Lookup> Default for Writer<K> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn object(ns: Option<&str>, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: ns.map(Into::into),
                ..Default::default()
            },
            data: Some([("v".to_string(), value.to_string())].into()),
            ..Default::default()
        }
    }

    fn value(store: &Store<ConfigMap>, ns: Option<&str>, name: &str) -> Option<String> {
        store.get(ns, name).map(|o| o.data.as_ref().unwrap()["v"].clone())
    }

    #[test]
    fn keys_by_namespace_and_name_and_replaces_deletes() {
        let mut w = Writer::new();
        let store = w.store();
        w.apply(watcher::Event::Apply(object(Some("a"), "x", "1")));
        w.apply(watcher::Event::Apply(object(Some("b"), "x", "2")));
        w.apply(watcher::Event::Apply(object(None, "x", "3")));
        assert_eq!(value(&store, Some("a"), "x").as_deref(), Some("1"));
        assert_eq!(value(&store, Some("b"), "x").as_deref(), Some("2"));
        assert_eq!(value(&store, None, "x").as_deref(), Some("3"));
        assert_eq!(store.len(), 3);
        w.apply(watcher::Event::Apply(object(Some("a"), "x", "4")));
        assert_eq!(value(&store, Some("a"), "x").as_deref(), Some("4"));
        assert_eq!(store.len(), 3);
        w.apply(watcher::Event::Delete(object(Some("a"), "x", "")));
        assert_eq!(value(&store, Some("a"), "x"), None);
        assert_eq!(value(&store, Some("b"), "x").as_deref(), Some("2"));
        assert_eq!(store.len(), 2);
        // Deleting what is not there changes nothing.
        w.apply(watcher::Event::Delete(object(Some("c"), "x", "")));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_list_replaces_the_objects_only_when_complete() {
        let mut w = Writer::new();
        let store = w.store();
        w.apply(watcher::Event::Apply(object(Some("a"), "old", "1")));
        w.apply(watcher::Event::Init);
        w.apply(watcher::Event::InitApply(object(Some("a"), "new", "2")));
        // Readers still see the previous state while the list is under way.
        assert_eq!(value(&store, Some("a"), "old").as_deref(), Some("1"));
        assert_eq!(value(&store, Some("a"), "new"), None);
        w.apply(watcher::Event::InitDone);
        assert_eq!(value(&store, Some("a"), "old"), None);
        assert_eq!(value(&store, Some("a"), "new").as_deref(), Some("2"));
        assert_eq!(store.state().len(), 1);
    }

    #[test]
    fn many_objects_in_and_out_leave_a_small_table() {
        let mut w = Writer::new();
        let store = w.store();
        for i in 0..10_000 {
            w.apply(watcher::Event::Apply(object(Some("ns"), &format!("o{i}"), "v")));
        }
        assert_eq!(store.len(), 10_000);
        for i in 0..10_000 {
            assert!(store.get(Some("ns"), &format!("o{i}")).is_some(), "o{i}");
        }
        for i in 0..9_990 {
            w.apply(watcher::Event::Delete(object(Some("ns"), &format!("o{i}"), "")));
        }
        assert_eq!(store.len(), 10);
        assert!(store.0.read().unwrap().objects.capacity() < 1_000);
        for i in 9_990..10_000 {
            assert!(store.get(Some("ns"), &format!("o{i}")).is_some(), "o{i}");
        }
    }
}
