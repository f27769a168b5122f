//! [`LeaseStore`] over the Kubernetes API (`coordination.k8s.io/v1` Leases).
//!
//! The election writes with `create` and `replace`; `replace` sends the whole object with `metadata.resourceVersion`,
//! so the API server applies it only if nobody wrote in between (optimistic concurrency; a 409 means the race was
//! lost). The lease collector's `delete` carries the judged resourceVersion as a `DeleteOptions` precondition (409
//! likewise). `get` without a resourceVersion parameter is a quorum read. The watch is one kube-runtime watcher on
//! `herald.dev/lease` with kube's default exponential backoff, so lease state is never polled.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;
use herald_api::decode::Lenient;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};

use crate::lease::{LeaseLabels, LeaseRecord, LeaseStore, StoreError, WatchEvent};
use crate::naming::LEASE_KIND_LABEL;

/// See the module documentation.
#[derive(Clone)]
pub struct KubeLeaseStore {
    api: Api<Lease>,
    /// The same Leases, decoded one at a time for the watch: a Lease that cannot be read is skipped (and named in
    /// the log) instead of failing every list and stopping the election's watch.
    watch_api: Api<Lenient<Lease>>,
    request_timeout: Duration,
}

impl KubeLeaseStore {
    /// Leases in `namespace` (the agent's own namespace). Each request is abandoned after `request_timeout`
    /// (the shells use half the renew deadline) and reported as `Unavailable`.
    pub fn new(client: kube::Client, namespace: &str, request_timeout: Duration) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            watch_api: Api::namespaced(client, namespace),
            request_timeout,
        }
    }

    async fn call<T>(
        &self,
        name: &str,
        what: &'static str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(name, what, e)),
            Err(_) => Err(StoreError::Unavailable {
                reason: format!("{what} lease {name}: no answer within {:?}", self.request_timeout),
            }),
        }
    }
}

/// Maps API errors: 404 → NotFound (Conflict for a replace: the object we read is gone), 409 → AlreadyExists on
/// create / Conflict on replace and on a delete whose precondition failed, 401/429/5xx/transport → Unavailable,
/// other 4xx → Rejected.
fn map_error(name: &str, what: &'static str, e: kube::Error) -> StoreError {
    let name = name.to_owned();
    match e {
        kube::Error::Api(status) => match status.code {
            404 if what == "replace" => StoreError::Conflict { name },
            404 => StoreError::NotFound { name },
            409 if what == "create" => StoreError::AlreadyExists { name },
            409 => StoreError::Conflict { name },
            // Authentication, not authorization: the token was revoked or expired, or its ServiceAccount deleted.
            // The agent cannot use the API at all, as in an outage; the client reads a rotated token file anew.
            401 => StoreError::Unavailable {
                reason: format!(
                    "{what} lease {name}: 401 Unauthorized: the API server does not accept this agent's credentials \
                     (ServiceAccount token revoked or expired?)"
                ),
            },
            429 | 500..=599 => StoreError::Unavailable {
                reason: format!("{what} lease {name}: {} {}", status.code, status.message),
            },
            code => StoreError::Rejected {
                name,
                reason: format!("{what}: {code} {} {}", status.reason, status.message),
            },
        },
        other => StoreError::Unavailable {
            reason: format!("{what} lease {name}: {other}"),
        },
    }
}

fn micro(t: Option<SystemTime>) -> Option<MicroTime> {
    t.and_then(|t| Timestamp::try_from(t).ok()).map(MicroTime)
}

/// Converts a record into a Lease (the whole object: `replace` is a full update).
pub fn to_lease(record: &LeaseRecord) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(record.name.clone()),
            resource_version: record.resource_version.clone(),
            labels: (!record.labels.is_empty()).then(|| BTreeMap::from(&record.labels)),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: record.holder.clone(),
            lease_duration_seconds: record.lease_duration_seconds,
            lease_transitions: record.lease_transitions,
            acquire_time: micro(record.acquire_time),
            renew_time: micro(record.renew_time),
            ..Default::default()
        }),
    }
}

/// Reads the parts of a Lease Herald uses.
pub fn from_lease(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        name: lease.metadata.name.clone().unwrap_or_default(),
        resource_version: lease.metadata.resource_version.clone(),
        labels: lease.metadata.labels.clone().map(LeaseLabels::from).unwrap_or_default(),
        holder: spec.holder_identity,
        lease_duration_seconds: spec.lease_duration_seconds,
        lease_transitions: spec.lease_transitions,
        acquire_time: spec.acquire_time.map(|t| SystemTime::from(t.0)),
        renew_time: spec.renew_time.map(|t| SystemTime::from(t.0)),
    }
}

impl LeaseStore for KubeLeaseStore {
    async fn get(&self, name: &str) -> Result<LeaseRecord, StoreError> {
        self.call(name, "get", self.api.get(name)).await.map(|l| from_lease(&l))
    }

    async fn create(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        let mut lease = to_lease(record);
        lease.metadata.resource_version = None;
        self.call(&record.name, "create", self.api.create(&PostParams::default(), &lease))
            .await
            .map(|l| from_lease(&l))
    }

    async fn replace(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        if record.resource_version.is_none() {
            // Without a resourceVersion the API server would apply the write unconditionally: never send that.
            return Err(StoreError::Conflict {
                name: record.name.clone(),
            });
        }
        let lease = to_lease(record);
        self.call(
            &record.name,
            "replace",
            self.api.replace(&record.name, &PostParams::default(), &lease),
        )
        .await
        .map(|l| from_lease(&l))
    }

    async fn delete(&self, name: &str, resource_version: &str) -> Result<(), StoreError> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version.to_owned()),
                uid: None,
            }),
            ..Default::default()
        };
        self.call(name, "delete", self.api.delete(name, &params))
            .await
            .map(|_| ())
    }

    fn watch(&self) -> BoxStream<'static, WatchEvent> {
        self.watch_with(watcher::Config::default().labels(LEASE_KIND_LABEL))
    }

    fn watch_one(&self, name: &str) -> BoxStream<'static, WatchEvent> {
        self.watch_with(watcher::Config::default().fields(&format!("metadata.name={name}")))
    }
}

/// Retry policy of every watch the agent runs: 0.5 s doubling to 5 s, each wait up to twice that with jitter
/// (so at most 10 s), reset after 60 s without an error.
///
/// client-go's reflectors (and kube-runtime's default) go up to 30 s, and up to 60 s with jitter: after an API
/// outage of a minute an agent could stay blind for another minute, still answering for an IP whose Service moved
/// (the chaos soak found it: an `externalTrafficPolicy: Local` Service's endpoints moved 7 s after the API came
/// back, and the old holder kept answering for 47 s more). A failed connection costs the server nothing, and a
/// few watches per node retrying every 5–10 s is a small load next to the relists that follow anyway.
pub fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(
        kube::runtime::watcher::ExponentialBackoff::from(exponential),
        Duration::from_secs(60),
    )
}

impl KubeLeaseStore {
    /// A watch of the leases `config` selects, as [`WatchEvent`]s.
    fn watch_with(&self, config: watcher::Config) -> BoxStream<'static, WatchEvent> {
        let mut buffer: Option<Vec<LeaseRecord>> = None;
        watcher(self.watch_api.clone(), config)
            .backoff(watch_backoff())
            .filter_map(move |event| {
                let out = match event {
                    Ok(watcher::Event::Init) => {
                        buffer = Some(Vec::new());
                        None
                    }
                    Ok(watcher::Event::InitApply(lease)) => {
                        if let Some(lease) = readable(lease) {
                            buffer.get_or_insert_with(Vec::new).push(from_lease(&lease));
                        }
                        None
                    }
                    Ok(watcher::Event::InitDone) => Some(WatchEvent::Resynced(buffer.take().unwrap_or_default())),
                    Ok(watcher::Event::Apply(lease)) => readable(lease).map(|l| WatchEvent::Applied(from_lease(&l))),
                    Ok(watcher::Event::Delete(lease)) => Some(WatchEvent::Deleted {
                        name: lease.meta().name.clone().unwrap_or_default(),
                    }),
                    Err(e) => Some(WatchEvent::Error(StoreError::Unavailable {
                        reason: format!("lease watch: {e}"),
                    })),
                };
                std::future::ready(out)
            })
            .boxed()
    }
}

/// The Lease, or `None` (logged) when it could not be read. An unreadable Lease is never taken for a free one: its
/// create fails with AlreadyExists and its read with an error, so no write can go around it.
fn readable(lease: Lenient<Lease>) -> Option<Lease> {
    match lease {
        Lenient::Read(lease) => Some(lease),
        Lenient::Unreadable(u) => {
            tracing::warn!(
                lease = u.display_name(),
                reason = u.reason,
                "cannot read this Lease; skipping it"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_round_trip_keeps_every_field() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let record = LeaseRecord {
            name: "herald-ip-192-0-2-1".into(),
            resource_version: Some("42".into()),
            labels: [("herald.dev/lease".to_owned(), "ip".to_owned())].into(),
            holder: Some("n1/abc".into()),
            lease_duration_seconds: Some(3),
            lease_transitions: Some(2),
            acquire_time: Some(now),
            renew_time: Some(now),
        };
        assert_eq!(from_lease(&to_lease(&record)), record);
    }

    #[test]
    fn status_codes_map_to_store_errors() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                reason: "R".into(),
                ..Default::default()
            }))
        };
        assert!(matches!(map_error("x", "get", api(404)), StoreError::NotFound { .. }));
        assert!(matches!(
            map_error("x", "replace", api(404)),
            StoreError::Conflict { .. }
        ));
        assert!(matches!(
            map_error("x", "create", api(409)),
            StoreError::AlreadyExists { .. }
        ));
        assert!(matches!(
            map_error("x", "replace", api(409)),
            StoreError::Conflict { .. }
        ));
        assert!(matches!(
            map_error("x", "delete", api(404)),
            StoreError::NotFound { .. }
        ));
        assert!(matches!(
            map_error("x", "delete", api(409)),
            StoreError::Conflict { .. }
        ));
        assert!(matches!(
            map_error("x", "replace", api(503)),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            map_error("x", "replace", api(403)),
            StoreError::Rejected { .. }
        ));
        let e = map_error("x", "replace", api(401));
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        assert!(
            e.to_string().contains("does not accept this agent's credentials"),
            "{e}"
        );
    }
}
