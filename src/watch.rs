//! The one way Herald's controllers read the cluster: reflectors whose events wake the loops that read them.

use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use herald_api::Eip;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

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

/// Starts a reflector for `api` whose every event wakes `wakers`. Watch errors back off and resume (kube's default
/// backoff; a 410 Gone re-lists); the task ends with `cancel`. No polling: reads come from the returned store.
pub fn reflect<K>(api: Api<K>, config: watcher::Config, wakers: Wakers, cancel: CancellationToken) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    let kind = K::kind(&Default::default()).to_string();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = stream.try_next() => match ev {
                    Ok(Some(_)) => wakers.wake(),
                    Ok(None) => break,
                    Err(e) => warn!(kind, error = %e, "watch error; retrying with backoff"),
                }
            }
        }
    });
    reader
}

/// How long a loop waits for its watches' first lists before it says which ones it is still waiting for.
const SLOW_FIRST_LIST: std::time::Duration = std::time::Duration::from_secs(10);

/// A watch's first list, named for the log.
pub struct FirstList {
    kind: &'static str,
    listed: BoxFuture<'static, Result<(), WriterDropped>>,
}

/// The first list of `store`'s watch.
pub fn first_list<K>(kind: &'static str, store: &Store<K>) -> FirstList
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let store = store.clone();
    FirstList {
        kind,
        listed: Box::pin(async move { store.wait_until_ready().await }),
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
                r.map_err(|e| anyhow::anyhow!("the {kind} watch stopped before its first list: {e}"))?;
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
    pub services: Store<Service>,
    /// Every Eip.
    pub eips: Store<Eip>,
    wakers: Wakers,
}

impl SharedStores {
    /// Starts the shared watches; they stop with `cancel`.
    pub fn start(client: &Client, cancel: &CancellationToken) -> Self {
        let wakers = Wakers::default();
        Self {
            services: reflect(
                Api::all(client.clone()),
                Default::default(),
                wakers.clone(),
                cancel.clone(),
            ),
            eips: reflect(
                Api::all(client.clone()),
                Default::default(),
                wakers.clone(),
                cancel.clone(),
            ),
            wakers,
        }
    }

    /// Wakes `notify` on every Service and Eip event; returns wakers for the loop's own reflectors.
    pub fn subscribe(&self, notify: &Arc<Notify>) -> Wakers {
        self.wakers.subscribe(notify);
        Wakers::of(notify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
