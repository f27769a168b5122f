//! The one way Herald's controllers read the cluster: reflectors whose events wake the loops that read them.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use herald_api::Eip;
use herald_api::decode::{Lenient, Unreadable};
use k8s_openapi::api::core::v1::{Node, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::Lookup;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::lease::HeldLease;
use crate::service::ServiceView;
use crate::store::{Store, Writer};

/// The loops a reflector wakes. A loop subscribes its own `Notify`; when the loop ends and drops it, it is pruned.
#[derive(Clone, Default)]
pub struct Wakers(Arc<Mutex<Vec<Weak<Notify>>>>);

impl Wakers {
    /// Wakers that wake `notify`.
    pub fn of(notify: &Arc<Notify>) -> Self {
        let w = Self::default();
        w.subscribe(notify);
        w
    }

    /// Also wake `notify` on every event.
    pub fn subscribe(&self, notify: &Arc<Notify>) {
        self.lock().push(Arc::downgrade(notify));
    }

    fn wake(&self) {
        self.lock()
            .retain(|w| w.upgrade().inspect(|n| n.notify_one()).is_some());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Notify>>> {
        // Pushing and pruning weak pointers cannot leave the list inconsistent; keep going after a panic elsewhere.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A list request (the first list, or a re-list after 410 Gone) unanswered for this long is presumed hung and the
/// watch is started again. kube's list requests have no timeout of their own, so one request lost on the way (a
/// half-open connection) would otherwise leave the store unlisted forever. Only time with a list request in flight
/// counts (from `Init` or a page's objects to the next event), never kube's backoff after a failed attempt.
const LIST_STALL: Duration = Duration::from_secs(30);

/// Starts a reflector for `api` whose every event wakes `wakers`. Watch errors back off and resume (kube's default
/// backoff; a 410 Gone re-lists; a hung list request is restarted after 30 s); the task ends with `cancel`. No polling: reads
/// come from the returned store.
///
/// Objects are decoded one at a time ([`Lenient`]): one that Herald's types cannot hold is left out of the store,
/// named in the log and in [`Reflected::unreadable`], and never fails the list the others came in. An object that
/// was readable before keeps its last readable version in the store until it is readable again or deleted.
pub fn reflect<K>(
    api: Api<Lenient<K>>,
    config: watcher::Config,
    wakers: Wakers,
    cancel: CancellationToken,
) -> Reflected<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    reflect_as(api, config, wakers, cancel, slim)
}

/// [`reflect`], keeping each object as `keep` makes it: a type of Herald's own with only what its readers use
/// (e.g. [`ServiceView`]).
pub fn reflect_as<K, P>(
    api: Api<Lenient<K>>,
    config: watcher::Config,
    wakers: Wakers,
    cancel: CancellationToken,
    keep: fn(K) -> P,
) -> Reflected<P>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    P: Lookup + Clone + Send + Sync + 'static,
    P::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let writer = Writer::new();
    let store = writer.store();
    let (listed_tx, listed) = tokio::sync::watch::channel(false);
    let unreadable = Unreadables::default();
    let kind = K::kind(&Default::default()).to_string();
    let start = move || watcher(api.clone(), config.clone()).backoff(herald_election::kube_store::watch_backoff());
    let sink = Sink {
        writer,
        listed: listed_tx,
        unreadable: unreadable.clone(),
        seen_in_list: BTreeSet::new(),
        kind,
        keep,
    };
    tokio::spawn(drive(start, sink, wakers, cancel, LIST_STALL));
    Reflected {
        store,
        listed,
        unreadable,
    }
}

/// Implements kube's `Lookup` (what a reflector's store keys its objects by) for a cache type of Herald's own (with
/// `name` and `namespace` fields), as the Kubernetes kind it stands for: `ObjectRef`s to it name objects of that
/// kind. The stores ([`crate::store`]) key objects by namespace and name only; the cached objects carry their own
/// resourceVersion and uid.
macro_rules! cached_as {
    ($ty:ty, kind = $kind:literal, group = $group:literal, version = $version:literal, plural = $plural:literal) => {
        impl kube::runtime::reflector::Lookup for $ty {
            type DynamicType = ();

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }

            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }

            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }

            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }

            fn name(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.name.as_str().into())
            }

            fn namespace(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.namespace.as_str().into())
            }

            fn resource_version(&self) -> Option<std::borrow::Cow<'_, str>> {
                None
            }

            fn uid(&self) -> Option<std::borrow::Cow<'_, str>> {
                None
            }
        }
    };
}
pub(crate) use cached_as;

/// The annotation in which `kubectl apply` keeps a copy of the whole object as last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The object as a store keeps it: without what no Herald code reads and what is often the largest part of an
/// object. Every reader of these stores (the allocator's snapshot and Lease collection, the announcer's desired state
/// and BGP plan, the writer's announced-by record) reads only what is kept here; a new reader of another field must
/// keep that field here too (`slim_keeps_everything_herald_reads` checks the readers that exist).
/// - Any kind: `managedFields` (every field manager's field set: kubectl, the controllers, Herald's own status
///   writes) and the `kubectl apply` copy of the object in `kubectl.kubernetes.io/last-applied-configuration`.
/// - Service: not slimmed but projected, to [`ServiceView`] ([`reflect_as`]).
/// - Node: everything but its name, labels, deletion timestamp, `NetworkUnavailable` condition and addresses (what
///   the announcer reads): among what goes, `status.images` (up to 50 images with all their names: often most of a
///   Node), annotations, and the kubelet's heartbeat conditions.
/// - EndpointSlice: per endpoint only `nodeName` and `conditions` (the announcer's `externalTrafficPolicy: Local`
///   rule); annotations, addresses, `targetRef`, `hints`, `zone` and the slice's `ports` go.
/// - Lease (the allocator's IP and node Lease reflectors: Eip status and Lease collection): projected to
///   [`HeldLease`] (name, resourceVersion, holder).
///
/// Besides memory, this keeps the kinds that change most often from waking the loops for nothing: a pod moving
/// between two addresses on one node, or a kubelet heartbeat, leaves the slimmed object as it was ([`unchanged`]); so
/// does an IP Lease re-asserted by the same holder.
fn slim<K: Resource + 'static>(mut object: K) -> K {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
    let any: &mut dyn Any = &mut object;
    if let Some(node) = any.downcast_mut::<Node>() {
        node.metadata.annotations = None;
        node.spec = None;
        node.status = node.status.take().map(|status| NodeStatus {
            addresses: status.addresses,
            conditions: status
                .conditions
                .map(|c| c.into_iter().filter(|c| c.type_ == "NetworkUnavailable").collect()),
            ..Default::default()
        });
    } else if let Some(slice) = any.downcast_mut::<EndpointSlice>() {
        slice.metadata.annotations = None;
        slice.ports = None;
        for endpoint in slice.endpoints.iter_mut().flatten() {
            *endpoint = Endpoint {
                node_name: endpoint.node_name.take(),
                conditions: endpoint.conditions.take(),
                ..Default::default()
            };
        }
    }
    object
}

/// Whether a slimmed Node or EndpointSlice, or a projected Lease ([`HeldLease`]), holds nothing new compared with the
/// stored one: the same but for its resourceVersion and generation. Those kinds change often (kubelet status, pods
/// coming and going, Leases written again by their holder) in ways [`slim`] or the projection removes; any other kind
/// always counts as changed. The store still takes the
/// new version (the Lease collector deletes at the resourceVersion it saw); only the loops are not woken.
fn unchanged<K: 'static>(new: &K, stored: &K) -> bool {
    let (new, stored): (&dyn Any, &dyn Any) = (new, stored);
    let same_meta = |a: &ObjectMeta, b: &ObjectMeta| {
        let a = ObjectMeta {
            resource_version: b.resource_version.clone(),
            generation: b.generation,
            ..a.clone()
        };
        a == *b
    };
    if let (Some(a), Some(b)) = (new.downcast_ref::<Node>(), stored.downcast_ref::<Node>()) {
        return a.spec == b.spec && a.status == b.status && same_meta(&a.metadata, &b.metadata);
    }
    if let (Some(a), Some(b)) = (new.downcast_ref::<HeldLease>(), stored.downcast_ref::<HeldLease>()) {
        return (&a.name, &a.holder) == (&b.name, &b.holder);
    }
    if let (Some(a), Some(b)) = (
        new.downcast_ref::<EndpointSlice>(),
        stored.downcast_ref::<EndpointSlice>(),
    ) {
        return a.address_type == b.address_type
            && a.endpoints == b.endpoints
            && a.ports == b.ports
            && same_meta(&a.metadata, &b.metadata);
    }
    false
}

/// Objects of one kind that could not be read, by `namespace/name` (or `name`).
#[derive(Clone, Default)]
pub struct Unreadables(Arc<Mutex<BTreeMap<String, Unreadable>>>);

impl Unreadables {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Unreadable>> {
        // Inserting and removing entries cannot leave the map inconsistent; keep going after a panic elsewhere.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A reflector's store, and whether its watch has listed once.
///
/// Readiness is published by [`drive`] itself rather than read from kube-runtime's `Store::wait_until_ready`, which
/// keeps a single waker per store: of two tasks waiting on one store at once (the allocator and the announcer on the
/// shared stores of the allocator's leader) only the last to poll was woken, and the other waited forever.
#[derive(Clone)]
pub struct Reflected<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    listed: tokio::sync::watch::Receiver<bool>,
    unreadable: Unreadables,
}

impl<K: Lookup + Clone + 'static> std::ops::Deref for Reflected<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    type Target = Store<K>;

    fn deref(&self) -> &Store<K> {
        &self.store
    }
}

impl<K: Lookup + Clone + 'static> Reflected<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The store alone.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The objects that could not be read, in name order.
    pub fn unreadable(&self) -> Vec<Unreadable> {
        self.unreadable.lock().values().cloned().collect()
    }
}

/// Where [`drive`] puts what the watch of `K` says: the store of `P` (what `keep` makes of each object), the
/// first-list signal and the unreadable objects.
struct Sink<K, P: Lookup + Clone + 'static>
where
    P::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer: Writer<P>,
    listed: tokio::sync::watch::Sender<bool>,
    unreadable: Unreadables,
    /// Names listed since the last `Init`: an unreadable object missing from a new list is gone.
    seen_in_list: BTreeSet<String>,
    kind: String,
    keep: fn(K) -> P,
}

impl<K, P> Sink<K, P>
where
    K: Resource + Clone + 'static,
    P: Lookup + Clone + 'static,
    P::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    /// Applies one watch event to the store. Returns whether the loops must hear of it: not for an object that
    /// changed in nothing Herald keeps ([`unchanged`]).
    fn apply(&mut self, event: watcher::Event<Lenient<K>>) -> bool {
        let mut news = true;
        let event = match event {
            watcher::Event::Init => {
                self.seen_in_list.clear();
                Some(watcher::Event::Init)
            }
            watcher::Event::InitApply(object) => {
                self.seen_in_list.insert(key_of(object.meta()));
                // A re-list replaces the store: an object unreadable now keeps its last readable version.
                self.readable(object).map(watcher::Event::InitApply)
            }
            watcher::Event::InitDone => {
                let seen = std::mem::take(&mut self.seen_in_list);
                self.unreadable.lock().retain(|name, _| seen.contains(name));
                Some(watcher::Event::InitDone)
            }
            watcher::Event::Apply(object) => match object {
                Lenient::Read(object) => {
                    let was_unreadable = self.unreadable.lock().remove(&key_of(object.meta())).is_some();
                    let object = (self.keep)(object);
                    let stored = self
                        .writer
                        .get(object.namespace().as_deref(), &object.name().unwrap_or_default());
                    news = was_unreadable || stored.is_none_or(|stored| !unchanged(&object, &stored));
                    Some(watcher::Event::Apply(object))
                }
                // The store keeps the last readable version.
                Lenient::Unreadable(u) => {
                    self.record(*u);
                    None
                }
            },
            watcher::Event::Delete(object) => {
                self.unreadable.lock().remove(&key_of(object.meta()));
                match object {
                    Lenient::Read(object) => Some(watcher::Event::Delete((self.keep)(object))),
                    Lenient::Unreadable(u) => self.last_readable(&u).map(watcher::Event::Delete),
                }
            }
        };
        if let Some(event) = event {
            let listed = matches!(event, watcher::Event::InitDone);
            self.writer.apply(event);
            if listed {
                self.listed.send_replace(true);
            }
        }
        news
    }

    /// The object to keep in the store: the object itself, or for an unreadable one its last readable version.
    fn readable(&mut self, object: Lenient<K>) -> Option<P> {
        match object {
            Lenient::Read(object) => {
                self.unreadable.lock().remove(&key_of(object.meta()));
                Some((self.keep)(object))
            }
            Lenient::Unreadable(u) => {
                let kept = self.last_readable(&u);
                self.record(*u);
                kept
            }
        }
    }

    fn last_readable(&self, u: &Unreadable) -> Option<P> {
        let name = u.metadata.name.as_deref()?;
        self.writer
            .get(u.metadata.namespace.as_deref(), name)
            .map(|k| (*k).clone())
    }

    /// Remembers `u`, saying so in the log when the reason is new (not on every write to the object, such as
    /// Herald's own status writes).
    fn record(&self, mut u: Unreadable) {
        u.metadata.managed_fields = None;
        if let Some(annotations) = &mut u.metadata.annotations {
            annotations.remove(LAST_APPLIED);
        }
        let name = key_of(&u.metadata);
        let mut unreadable = self.unreadable.lock();
        let known = unreadable.get(&name).is_some_and(|old| old.reason == u.reason);
        if !known {
            warn!(
                kind = self.kind,
                object = u.display_name(),
                reason = u.reason,
                "cannot read this object: it is left out (everything else is read); fix or delete it"
            );
        }
        unreadable.insert(name, u);
    }
}

/// `namespace/name`, or `name`.
fn key_of(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match &meta.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Feeds the watch streams `start` makes into `sink`, waking `wakers` on every event, until `cancel`; the sink's
/// `listed` turns true at the first complete list. A list request unanswered for `stall` is abandoned and a new
/// stream started.
async fn drive<K, P, S>(
    mut start: impl FnMut() -> S,
    mut sink: Sink<K, P>,
    wakers: Wakers,
    cancel: CancellationToken,
    stall: Duration,
) where
    K: Resource + Clone + 'static,
    P: Lookup + Clone + 'static,
    P::DynamicType: Eq + std::hash::Hash + Clone + Default,
    S: futures::Stream<Item = Result<watcher::Event<Lenient<K>>, watcher::Error>>,
{
    let kind = sink.kind.clone();
    loop {
        let mut stream = std::pin::pin!(start());
        // After `Init` (and after each page's objects) kube sends a list request; after an error it backs off first.
        let mut list_in_flight = false;
        loop {
            let deadline = list_in_flight.then(|| tokio::time::sleep(stall));
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = async { match deadline { Some(d) => d.await, None => std::future::pending().await } } => {
                    warn!(kind, stall_seconds = stall.as_secs(), "list request unanswered; starting the watch again");
                    break;
                }
                ev = stream.try_next() => match ev {
                    Ok(Some(ev)) => {
                        list_in_flight = matches!(ev, watcher::Event::Init | watcher::Event::InitApply(_));
                        if sink.apply(ev) {
                            wakers.wake();
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        list_in_flight = false;
                        warn!(kind, error = %e, "watch error; retrying with backoff");
                    }
                }
            }
        }
    }
}

/// How long a loop waits for its watches' first lists before it says which ones it is still waiting for.
const SLOW_FIRST_LIST: std::time::Duration = std::time::Duration::from_secs(10);

/// A watch's first list, named for the log.
pub struct FirstList {
    kind: &'static str,
    listed: BoxFuture<'static, Result<(), tokio::sync::watch::error::RecvError>>,
}

/// The first list of a reflector's watch.
pub fn first_list<K>(kind: &'static str, reflected: &Reflected<K>) -> FirstList
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let mut listed = reflected.listed.clone();
    FirstList {
        kind,
        listed: Box::pin(async move { listed.wait_for(|l| *l).await.map(|_| ()) }),
    }
}

/// Waits until every watch in `lists` has listed once (`Ok(true)`) or `cancel` fires (`Ok(false)`). While it waits,
/// it warns every 10 s naming the watches that have not listed yet, so a hung request is visible in the log.
pub async fn wait_first_lists(
    loop_name: &str,
    lists: Vec<FirstList>,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut pending: Vec<&'static str> = lists.iter().map(|l| l.kind).collect();
    let mut waiting: FuturesUnordered<_> = lists
        .into_iter()
        .map(|l| async move { (l.kind, l.listed.await) })
        .collect();
    let mut slow = tokio::time::interval_at(tokio::time::Instant::now() + SLOW_FIRST_LIST, SLOW_FIRST_LIST);
    while !pending.is_empty() {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            Some((kind, r)) = waiting.next() => {
                r.with_context(|| format!("the {kind} watch stopped before its first list"))?;
                pending.retain(|k| *k != kind);
            }
            _ = slow.tick() => warn!(loop_name, waiting_for = ?pending, "still waiting for the first list of these watches"),
        }
    }
    Ok(true)
}

/// The watches both the allocator and the announcer read, started once per agent so the allocator's leader does not
/// watch Services and Eips twice.
#[derive(Clone)]
pub struct SharedStores {
    /// Every Service.
    pub services: Reflected<ServiceView>,
    /// Every Eip.
    pub eips: Reflected<Eip>,
    /// Every Node. Its events wake only the loops that ask for them ([`SharedStores::subscribe_nodes`]): Node status
    /// churn must not start allocation passes.
    pub nodes: Reflected<Node>,
    wakers: Wakers,
    node_wakers: Wakers,
}

impl SharedStores {
    /// Starts the shared watches; they stop with `cancel`.
    pub fn start(client: &Client, cancel: &CancellationToken) -> Self {
        let wakers = Wakers::default();
        let node_wakers = Wakers::default();
        Self {
            services: reflect_as(
                Api::all(client.clone()),
                Default::default(),
                wakers.clone(),
                cancel.clone(),
                ServiceView::from as fn(Service) -> ServiceView,
            ),
            eips: reflect(
                Api::all(client.clone()),
                Default::default(),
                wakers.clone(),
                cancel.clone(),
            ),
            nodes: reflect(
                Api::all(client.clone()),
                Default::default(),
                node_wakers.clone(),
                cancel.clone(),
            ),
            wakers,
            node_wakers,
        }
    }

    /// Wakes `notify` on every Service and Eip event; returns wakers for the loop's own reflectors.
    pub fn subscribe(&self, notify: &Arc<Notify>) -> Wakers {
        self.wakers.subscribe(notify);
        Wakers::of(notify)
    }

    /// Also wakes `notify` on every Node event.
    pub fn subscribe_nodes(&self, notify: &Arc<Notify>) {
        self.node_wakers.subscribe(notify);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::api::coordination::v1::Lease;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    type Item = Result<watcher::Event<Lenient<Service>>, watcher::Error>;

    /// `drive` fed by scripted watch streams: start `n` yields `script(n)`, then nothing forever (a request that
    /// never answers). Stall timeout 30 s.
    struct Scripted {
        store: Reflected<Service>,
        starts: Arc<AtomicUsize>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Scripted {
        fn run(script: fn(usize) -> Vec<Item>) -> Self {
            let starts = Arc::new(AtomicUsize::new(0));
            let counter = starts.clone();
            Self::spawn(starts, move || {
                let n = counter.fetch_add(1, SeqCst);
                futures::stream::iter(script(n)).chain(futures::stream::pending())
            })
        }

        /// `drive` over the streams `start` makes (`starts` counts them, if `start` does).
        fn spawn<S>(starts: Arc<AtomicUsize>, start: impl FnMut() -> S + Send + 'static) -> Self
        where
            S: futures::Stream<Item = Item> + Send + 'static,
        {
            let writer = Writer::<Service>::new();
            let store = writer.store();
            let (listed_tx, listed) = tokio::sync::watch::channel(false);
            let unreadable = Unreadables::default();
            let sink = Sink {
                writer,
                listed: listed_tx,
                unreadable: unreadable.clone(),
                seen_in_list: BTreeSet::new(),
                kind: "Service".into(),
                keep: slim,
            };
            let cancel = CancellationToken::new();
            let task = tokio::spawn(drive(
                start,
                sink,
                Wakers::default(),
                cancel.clone(),
                Duration::from_secs(30),
            ));
            Self {
                store: Reflected {
                    store,
                    listed,
                    unreadable,
                },
                starts,
                cancel,
                task,
            }
        }

        /// Resolves once the store has listed.
        async fn listed(&self) {
            let cancel = CancellationToken::new();
            let done = wait_first_lists("test", vec![first_list("Service", &self.store)], &cancel).await;
            assert!(done.unwrap());
        }

        /// Stops `drive`; returns how many streams it started.
        async fn stop(self) -> usize {
            self.cancel.cancel();
            self.task.await.unwrap();
            self.starts.load(SeqCst)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_list_is_started_again() {
        // The first stream starts its list and hangs; the second lists.
        let w = Scripted::run(|n| match n {
            0 => vec![Ok(watcher::Event::Init)],
            _ => vec![Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)],
        });
        tokio::time::timeout(Duration::from_secs(29), w.listed())
            .await
            .expect_err("not listed while the first list hangs");
        tokio::time::timeout(Duration::from_secs(5), w.listed())
            .await
            .expect("listed by the second stream");
        assert_eq!(w.stop().await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_list_keeps_its_backoff() {
        // The list failed; kube now sleeps its backoff, which may be longer than the stall timeout.
        let w = Scripted::run(|_| vec![Ok(watcher::Event::Init), Err(watcher::Error::NoResourceVersion)]);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(w.stop().await, 1, "backing off is not a hung request");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_watch_is_left_alone() {
        let w = Scripted::run(|_| vec![Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)]);
        w.listed().await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(w.stop().await, 1, "no events after the list is normal");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_loop_waiting_on_one_store_sees_its_first_list() {
        // The allocator and the announcer wait on the shared stores at the same time; both must go on.
        let (events, stream) = futures::channel::mpsc::unbounded::<Item>();
        let mut stream = Some(stream);
        let w = Scripted::spawn(Arc::default(), move || {
            stream.take().expect("one stream: the list never stalls here")
        });
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (reflected, cancel) = (w.store.clone(), CancellationToken::new());
                tokio::spawn(
                    async move { wait_first_lists("test", vec![first_list("Service", &reflected)], &cancel).await },
                )
            })
            .collect();
        // Every waiter is waiting before the list completes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        events.unbounded_send(Ok(watcher::Event::Init)).unwrap();
        events.unbounded_send(Ok(watcher::Event::InitDone)).unwrap();
        for w in waiters {
            let listed = tokio::time::timeout(Duration::from_secs(5), w).await;
            assert!(
                matches!(listed, Ok(Ok(Ok(true)))),
                "a waiter never saw the list: {listed:?}"
            );
        }
        w.stop().await;
    }

    /// A Service as the API sends it; `port: "http"` is a value `Service` cannot hold.
    fn service(name: &str, version: &str, readable: bool) -> Lenient<Service> {
        let port = if readable {
            serde_json::json!(80)
        } else {
            serde_json::json!("http")
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
            "spec": {"ports": [{"port": port}]}}))
        .unwrap()
    }

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    const LAST_APPLIED_JSON: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"}}"#;

    /// A Service as `kubectl apply` and the controllers leave it, with every field Herald reads set.
    fn full_service() -> Service {
        from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"team": "a"},
                "annotations": {LAST_APPLIED: LAST_APPLIED_JSON, "herald.dev/eip": "lan",
                    "herald.dev/sharing-key": "k", "herald.dev/allocated-from": "lan",
                    "herald.dev/announced-by": "192.0.2.1=n1", "metallb.io/loadBalancerIPs": "192.0.2.1"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1"}]},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "herald.dev/lb", "externalTrafficPolicy": "Local",
                "ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"], "selector": {"app": "web"},
                "loadBalancerIP": "192.0.2.1",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP"}]},
                "conditions": [{"type": "Ready", "status": "True", "reason": "R", "message": "m",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}))
    }

    fn full_node(name: &str, heartbeat: &str, image: &str) -> Node {
        from_json(serde_json::json!({
            "metadata": {"name": name, "uid": "n-u1", "resourceVersion": heartbeat, "labels": {"rack": "1"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", LAST_APPLIED: "{}"}},
            "spec": {"podCIDR": "10.244.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "198.51.100.1"}],
                "conditions": [
                    {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat},
                    {"type": "NetworkUnavailable", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "images": [{"names": [image], "sizeBytes": 1000}],
                "nodeInfo": {"architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "c", "kernelVersion": "k",
                    "kubeProxyVersion": "", "kubeletVersion": "v", "machineID": "m", "operatingSystem": "linux",
                    "osImage": "o", "systemUUID": "s"},
                "capacity": {"cpu": "2"}}}))
    }

    fn full_slice(version: &str, address: &str, ready: bool) -> EndpointSlice {
        from_json(serde_json::json!({
            "metadata": {"name": "web-x", "namespace": "shop", "resourceVersion": version, "generation": 3,
                "labels": {"kubernetes.io/service-name": "web"},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": version}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "nodeName": "n1", "zone": "z",
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "p1"}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    }

    /// Every reader of the stores gets from a slimmed object what it gets from the whole one (Services are projected
    /// instead: `service::tests`).
    #[test]
    fn slim_keeps_everything_herald_reads() {
        use crate::announcer::desired::{ClusterView, desired, node_usable};

        let svc = ServiceView::from(full_service());
        let node = full_node("n1", "2026-01-01T00:00:00Z", "nginx");
        let slim_node = slim(node.clone());
        assert_eq!(node_usable(&slim_node), node_usable(&node));
        assert_eq!(slim_node.metadata.labels, node.metadata.labels);
        let addresses = |n: &Node| n.status.as_ref().unwrap().addresses.clone();
        assert_eq!(
            addresses(&slim_node),
            addresses(&node),
            "the BGP router id and next hop"
        );

        let eip: herald_api::Eip = from_json(serde_json::json!({"metadata": {"name": "lan"},
            "spec": {"addresses": ["192.0.2.0/24"], "nodeSelector": {"matchLabels": {"rack": "1"}}}}));
        let slice = full_slice("1", "10.0.0.1", true);
        let view = |svc: ServiceView, node: Node, slice: EndpointSlice| ClusterView {
            services: vec![Arc::new(svc)],
            eips: vec![Arc::new(eip.clone())],
            nodes: vec![Arc::new(node)],
            endpoint_slices: vec![Arc::new(slice)],
        };
        let whole = desired(&view(svc.clone(), node, slice.clone()), false);
        assert_eq!(whole[&"192.0.2.1".parse().unwrap()].eligible_nodes.len(), 1);
        assert_eq!(desired(&view(svc, slim_node, slim(slice)), false), whole);
    }

    #[test]
    fn slim_drops_the_bulk() {
        let svc = ServiceView::from(full_service());
        assert!(!svc.annotations.iter().any(|(k, _)| k == LAST_APPLIED));
        let node = slim(full_node("n1", "2026-01-01T00:00:00Z", "nginx"));
        let status = node.status.unwrap();
        assert_eq!((status.images, status.node_info, status.capacity), (None, None, None));
        assert_eq!(status.conditions.unwrap().len(), 1, "only NetworkUnavailable");
        assert_eq!((node.spec, node.metadata.annotations), (None, None));
        let slice = slim(full_slice("1", "10.0.0.1", true));
        let endpoint = &slice.endpoints.as_ref().unwrap()[0];
        assert_eq!((endpoint.target_ref.as_ref(), endpoint.addresses.len()), (None, 0));
        assert_eq!(endpoint.node_name.as_deref(), Some("n1"));
        assert_eq!((slice.ports, slice.metadata.annotations), (None, None));
    }

    /// A Sink for kind `K` alone (no watch): what `apply` stores and whether it wakes the loops.
    fn sink<K>() -> (Sink<K, K>, Store<K>)
    where
        K: Lookup + Resource + Clone + 'static,
        <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone + Default,
    {
        sink_as(slim)
    }

    /// A Sink for kind `K` kept as `P`.
    fn sink_as<K, P>(keep: fn(K) -> P) -> (Sink<K, P>, Store<P>)
    where
        K: Resource + Clone + 'static,
        P: Lookup + Clone + 'static,
        P::DynamicType: Eq + std::hash::Hash + Clone + Default,
    {
        let writer = Writer::<P>::new();
        let store = writer.store();
        let sink = Sink {
            writer,
            listed: tokio::sync::watch::channel(false).0,
            unreadable: Unreadables::default(),
            seen_in_list: BTreeSet::new(),
            kind: "test".into(),
            keep,
        };
        (sink, store)
    }

    #[test]
    fn heartbeats_and_pod_addresses_wake_nobody() {
        fn apply<K>(object: K) -> watcher::Event<Lenient<K>> {
            watcher::Event::Apply(Lenient::Read(object))
        }
        let (mut nodes, store) = sink::<Node>();
        assert!(
            nodes.apply(apply(full_node("n1", "2026-01-01T00:00:00Z", "nginx"))),
            "new"
        );
        assert!(
            !nodes.apply(apply(full_node("n1", "2026-01-01T00:00:10Z", "redis"))),
            "a heartbeat and another image"
        );
        let kept = store.get(None, "n1").unwrap();
        assert_eq!(
            kept.metadata.resource_version.as_deref(),
            Some("2026-01-01T00:00:10Z"),
            "the store still takes the newest version"
        );
        let mut relabelled = full_node("n1", "2026-01-01T00:00:20Z", "redis");
        relabelled.metadata.labels = None;
        assert!(nodes.apply(apply(relabelled)), "labels are read");
        assert!(
            nodes.apply(apply(full_node("n2", "2026-01-01T00:00:20Z", "redis"))),
            "another node"
        );

        let (mut slices, _) = sink::<EndpointSlice>();
        assert!(slices.apply(apply(full_slice("1", "10.0.0.1", true))));
        assert!(
            !slices.apply(apply(full_slice("2", "10.0.0.2", true))),
            "a new pod on the same node"
        );
        assert!(
            slices.apply(apply(full_slice("3", "10.0.0.2", false))),
            "readiness is read"
        );

        let (mut eips, _) = sink::<Eip>();
        let eip: Eip = from_json(serde_json::json!({"metadata": {"name": "lan"}, "spec": {"addresses": []}}));
        assert!(eips.apply(apply(eip.clone())));
        assert!(eips.apply(apply(eip)), "any other kind always wakes");
    }

    fn ip_lease(version: &str, holder: &str, renewed: &str) -> Lease {
        from_json(serde_json::json!({
            "metadata": {"name": "herald-ip-192-0-2-1", "namespace": "herald-system", "resourceVersion": version,
                "labels": {"herald.dev/lease": "ip"}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3, "leaseTransitions": 1,
                "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": renewed}}))
    }

    /// The allocator reads a Lease's holder (Eip status) and resourceVersion (collection): the same holder writing
    /// its Lease again (a re-assertion) wakes no allocation pass, a new holder does, and the store keeps the newest
    /// resourceVersion either way.
    #[test]
    fn a_lease_rewritten_by_its_holder_wakes_nobody() {
        fn apply<K>(object: K) -> watcher::Event<Lenient<K>> {
            watcher::Event::Apply(Lenient::Read(object))
        }
        let (mut leases, store) = sink_as(HeldLease::from as fn(Lease) -> HeldLease);
        assert!(leases.apply(apply(ip_lease("1", "n1/a", "2026-01-01T00:00:00.000000Z"))));
        assert!(
            !leases.apply(apply(ip_lease("2", "n1/a", "2026-01-01T00:00:05.000000Z"))),
            "re-asserted"
        );
        let kept = store.get(None, "herald-ip-192-0-2-1").unwrap();
        assert_eq!(
            (kept.resource_version.as_deref(), kept.holder.as_deref()),
            (Some("2"), Some("n1/a"))
        );
        assert!(
            leases.apply(apply(ip_lease("3", "n2/b", "2026-01-01T00:00:06.000000Z"))),
            "taken over"
        );
        assert!(
            leases.apply(apply(ip_lease("4", "", "2026-01-01T00:00:07.000000Z"))),
            "released"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stores_keep_no_managed_fields() {
        fn managed(name: &str, version: &str) -> Lenient<Service> {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "resourceVersion": version,
                    "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}}}}]},
                "spec": {"ports": [{"port": 80}]}}))
            .unwrap()
        }
        let w = Scripted::run(|_| {
            vec![
                Ok(watcher::Event::Init),
                Ok(watcher::Event::InitApply(managed("a", "1"))),
                Ok(watcher::Event::InitDone),
                Ok(watcher::Event::Apply(managed("b", "2"))),
            ]
        });
        w.listed().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        for name in ["a", "b"] {
            let svc = w.store.get(Some("ns"), name).expect("in the store");
            assert_eq!(svc.metadata.managed_fields, None, "{name}: listed and watched alike");
        }
        w.stop().await;
    }

    fn version_in_store(w: &Scripted, name: &str) -> Option<String> {
        w.store
            .get(Some("ns"), name)
            .and_then(|s| s.metadata.resource_version.clone())
    }

    fn unreadable_names(w: &Scripted) -> Vec<String> {
        w.store.unreadable().iter().map(Unreadable::display_name).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn one_unreadable_object_is_left_out_and_the_rest_is_listed() {
        let w = Scripted::run(|_| {
            vec![
                Ok(watcher::Event::Init),
                Ok(watcher::Event::InitApply(service("a", "1", true))),
                Ok(watcher::Event::InitApply(service("bad", "2", false))),
                Ok(watcher::Event::InitApply(service("c", "3", true))),
                Ok(watcher::Event::InitDone),
            ]
        });
        tokio::time::timeout(Duration::from_secs(5), w.listed())
            .await
            .expect("listed despite the bad object");
        assert_eq!(w.store.state().len(), 2);
        assert_eq!(version_in_store(&w, "bad"), None);
        assert_eq!(unreadable_names(&w), ["ns/bad"]);
        let reason = &w.store.unreadable()[0].reason;
        assert!(reason.starts_with("spec.ports[0].port: invalid type"), "{reason}");
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_that_turns_unreadable_keeps_its_last_readable_version() {
        let w = Scripted::run(|_| {
            vec![
                Ok(watcher::Event::Init),
                Ok(watcher::Event::InitApply(service("a", "1", true))),
                Ok(watcher::Event::InitApply(service("b", "2", true))),
                Ok(watcher::Event::InitApply(service("gone", "3", false))),
                Ok(watcher::Event::InitDone),
                Ok(watcher::Event::Apply(service("a", "5", false))),
                Ok(watcher::Event::Apply(service("b", "6", false))),
                Ok(watcher::Event::Delete(service("b", "7", false))),
                // A re-list (as after 410 Gone): `a` is still unreadable, `gone` is no more.
                Ok(watcher::Event::Init),
                Ok(watcher::Event::InitApply(service("a", "5", false))),
                Ok(watcher::Event::InitDone),
            ]
        });
        w.listed().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            version_in_store(&w, "a"),
            Some("1".into()),
            "the last readable version stays, through a re-list too"
        );
        assert_eq!(
            version_in_store(&w, "b"),
            None,
            "an unreadable object's delete removes it"
        );
        assert_eq!(
            unreadable_names(&w),
            ["ns/a"],
            "what a re-list no longer has is forgotten"
        );
        w.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_object_is_read_again() {
        let w = Scripted::run(|_| {
            vec![
                Ok(watcher::Event::Init),
                Ok(watcher::Event::InitApply(service("a", "1", false))),
                Ok(watcher::Event::InitDone),
                Ok(watcher::Event::Apply(service("a", "2", true))),
            ]
        });
        w.listed().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(version_in_store(&w, "a"), Some("2".into()));
        assert!(unreadable_names(&w).is_empty());
        w.stop().await;
    }

    #[tokio::test]
    async fn wakes_every_subscriber_and_forgets_ended_loops() {
        let wakers = Wakers::default();
        let (a, b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        wakers.subscribe(&a);
        wakers.subscribe(&b);
        wakers.wake();
        // notify_one stores a permit, so both loops see the event even though neither was waiting yet.
        tokio::time::timeout(std::time::Duration::from_secs(1), async {
            tokio::join!(a.notified(), b.notified())
        })
        .await
        .expect("both subscribers woken");
        drop(b);
        wakers.wake();
        assert_eq!(wakers.lock().len(), 1, "the ended loop's Notify is pruned");
    }
}
