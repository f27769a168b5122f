//! The one way Herald's controllers read the cluster: a reflector per kind that wakes the owning loop.

use std::sync::Arc;

use futures::TryStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Starts a reflector for `api` whose every event wakes `wake`. Watch errors back off and resume (kube's default
/// backoff; a 410 Gone re-lists); the task ends with `cancel`. No polling: reads come from the returned store.
pub fn reflect<K>(api: Api<K>, config: watcher::Config, wake: Arc<Notify>, cancel: CancellationToken) -> Store<K>
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
                    Ok(Some(_)) => wake.notify_one(),
                    Ok(None) => break,
                    Err(e) => warn!(kind, error = %e, "watch error; retrying with backoff"),
                }
            }
        }
    });
    reader
}
