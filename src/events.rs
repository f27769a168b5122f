//! Herald's Event publisher (events.k8s.io/v1): the one place where every Event Herald records is bounded and
//! written.
//!
//! It replaces kube-runtime's `Recorder`, whose series cache keeps every Event it wrote, keyed by the regarding
//! object, and drops old entries only when the next Event is published: under Service churn it gained an entry per
//! Service created, and an idle agent never gave that memory back. Here:
//! - the cache is bounded by age ([`SERIES_TTL`], pruned on a timer as well as on each Event) and by count
//!   ([`MAX_SERIES`]; the least recently seen series goes first);
//! - an Event identical to one written less than [`SERIES_TTL`] ago (same type, reason, action, note, regarding and
//!   related object) patches that Event's `series` instead of creating another object, as client-go's and kube's
//!   recorders do. Unlike theirs, the note is part of the identity: a Service that fails for a new reason gets a new
//!   Event, not a higher count on the old message (the API server refuses to change a note anyway);
//! - `note`, `reason`, `action` and `reportingInstance` are cut to what the API server accepts (1024 and 128 bytes),
//!   so no input, however long, gets an Event refused;
//! - publishing never waits for the API server: Events go into a bounded queue (dropped and counted when it is
//!   full) and one task writes them, each request under a timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald_api::text::{EVENT_NOTE_BYTES, truncate_bytes};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as ApiEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::WriteLabels;

/// The most bytes of `reason`, `action` and `reportingInstance` the API server accepts (events.k8s.io/v1
/// validation; a node name alone may be 253 bytes).
pub const EVENT_SHORT_FIELD_BYTES: usize = 128;
/// An Event name is a DNS subdomain: at most 253 characters.
const NAME_MAX_BYTES: usize = 253;
/// How long a series stays open for identical Events (client-go's `finishTime`, kube's `CACHE_TTL`).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// The most series remembered at once (a few hundred bytes each, plus the note). An evicted one only means that its
/// next repeat creates a new Event.
pub const MAX_SERIES: usize = 512;
/// How often series past [`SERIES_TTL`] are dropped while no Event is published.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Events waiting to be written (client-go queues 1000).
const QUEUE: usize = 1024;
/// An Event write is abandoned after this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What makes two Events occurrences of one series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    warning: bool,
    reason: String,
    action: String,
    note: Option<String>,
    /// The regarding and related objects' identifying fields, NUL-separated (no field can hold a NUL), in one
    /// allocation: the cache holds hundreds of these.
    objects: String,
}

impl SeriesKey {
    fn new(event: &Event, regarding: &ObjectReference) -> Self {
        let mut objects = String::new();
        for r in std::iter::once(regarding).chain(&event.secondary) {
            for field in [&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid] {
                objects.push_str(field.as_deref().unwrap_or_default());
                objects.push('\0');
            }
        }
        Self {
            warning: event.type_ == EventType::Warning,
            reason: event.reason.clone(),
            action: event.action.clone(),
            note: event.note.clone(),
            objects,
        }
    }
}

/// An Event written to the API that later identical ones count into.
#[derive(Debug)]
struct Series {
    namespace: String,
    name: String,
    count: i32,
    last_observed: Instant,
}

/// What to write for one occurrence of an Event.
#[derive(Debug, PartialEq, Eq)]
enum Write {
    /// A new Event object.
    Create,
    /// `series.count` of the existing Event `namespace/name`.
    Patch {
        namespace: String,
        name: String,
        count: i32,
    },
}

/// The open series, bounded by age and count. No I/O, no clock: the caller passes `now`.
#[derive(Debug)]
struct SeriesCache {
    series: HashMap<SeriesKey, Series>,
    ttl: Duration,
    max: usize,
}

impl SeriesCache {
    fn new(ttl: Duration, max: usize) -> Self {
        Self {
            series: HashMap::new(),
            ttl,
            max: max.max(1),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.series.len()
    }

    /// An occurrence of `key` at `now`: counted into its open series, or a new Event.
    fn observe(&mut self, key: &SeriesKey, now: Instant) -> Write {
        self.prune(now);
        match self.series.get_mut(key) {
            Some(s) => {
                s.count = s.count.saturating_add(1);
                s.last_observed = now;
                Write::Patch {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    count: s.count,
                }
            }
            None => Write::Create,
        }
    }

    /// The Event `namespace/name` was created for `key`: identical ones count into it from now on.
    fn created(&mut self, key: SeriesKey, namespace: String, name: String, now: Instant) {
        if self.series.len() >= self.max && !self.series.contains_key(&key) {
            let oldest = self
                .series
                .iter()
                .min_by_key(|(_, s)| s.last_observed)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.series.remove(&oldest);
            }
        }
        let series = Series {
            namespace,
            name,
            count: 1,
            last_observed: now,
        };
        self.series.insert(key, series);
    }

    /// Writing `key`'s Event failed: its next occurrence starts a new Event.
    fn forget(&mut self, key: &SeriesKey) {
        self.series.remove(key);
    }

    /// Closes the series not seen for the TTL.
    fn prune(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.series
            .retain(|_, s| now.saturating_duration_since(s.last_observed) < ttl);
        // A burst leaves a large table behind; give it back once it is mostly empty.
        if self.series.capacity() > 64 && self.series.len() < self.series.capacity() / 4 {
            self.series.shrink_to_fit();
        }
    }
}

/// `event` with every field cut to what the API server accepts.
fn bounded(mut event: Event) -> Event {
    let cut = |s: &mut String, max: usize| {
        if let std::borrow::Cow::Owned(short) = truncate_bytes(s, max) {
            *s = short;
        }
    };
    cut(&mut event.reason, EVENT_SHORT_FIELD_BYTES);
    cut(&mut event.action, EVENT_SHORT_FIELD_BYTES);
    if let Some(note) = &mut event.note {
        cut(note, EVENT_NOTE_BYTES);
    }
    event
}

/// A unique Event name for `regarding`, as client-go makes them (`<object>.<nanoseconds in hex>`), cut to a valid
/// DNS subdomain when the object's own name is long.
fn event_name(regarding: &ObjectReference, controller: &str, now: jiff::Timestamp) -> String {
    let suffix = format!(".{:x}", now.as_nanosecond());
    let base = regarding.name.as_deref().unwrap_or(controller);
    let base = truncate_bytes(base, NAME_MAX_BYTES - suffix.len());
    // Cut in the middle of a label, the name must still end it with an alphanumeric character (and the cut has
    // added `…`, which a name cannot hold).
    let base = base.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{base}{suffix}")
}

/// Limits of one publisher (the constants in production; short ones in tests).
#[derive(Clone, Copy, Debug)]
struct Limits {
    ttl: Duration,
    max: usize,
    prune_every: Duration,
    queue: usize,
}

const LIMITS: Limits = Limits {
    ttl: SERIES_TTL,
    max: MAX_SERIES,
    prune_every: PRUNE_EVERY,
    queue: QUEUE,
};

/// One Event to write, already bounded.
struct Pending {
    event: Event,
    regarding: ObjectReference,
}

/// Publishes Events without waiting for the API server. Cheap to clone; the writing task stops when `cancel` fires
/// or every clone is dropped.
#[derive(Clone)]
pub struct EventPublisher {
    queue: mpsc::Sender<Pending>,
    outcomes: Option<Family<WriteLabels, Counter>>,
    /// Events dropped since the queue last had room: a burst is logged when it starts and, with its count, when
    /// it ends.
    dropped: Arc<AtomicU64>,
}

impl EventPublisher {
    /// Starts the writing task. `outcomes`, if given, counts each Event written (`kind="event"`, `result="ok"` or
    /// `"error"`; an Event dropped because the queue is full counts as an error).
    pub fn spawn(
        client: Client,
        reporter: Reporter,
        outcomes: Option<Family<WriteLabels, Counter>>,
        cancel: CancellationToken,
    ) -> Self {
        Self::spawn_with(client, reporter, outcomes, cancel, LIMITS).0
    }

    fn spawn_with(
        client: Client,
        reporter: Reporter,
        outcomes: Option<Family<WriteLabels, Counter>>,
        cancel: CancellationToken,
        limits: Limits,
    ) -> (Self, tokio::task::JoinHandle<SeriesCache>) {
        let (queue, pending) = mpsc::channel(limits.queue.max(1));
        let instance = reporter.instance.as_deref().unwrap_or(&reporter.controller);
        let writer = EventWriter {
            client,
            controller: reporter.controller.clone(),
            instance: truncate_bytes(instance, EVENT_SHORT_FIELD_BYTES).into_owned(),
            cache: SeriesCache::new(limits.ttl, limits.max),
            outcomes: outcomes.clone(),
        };
        let task = tokio::spawn(writer.run(pending, limits.prune_every, cancel));
        let publisher = Self {
            queue,
            outcomes,
            dropped: Arc::default(),
        };
        (publisher, task)
    }

    /// Queues `event` about `regarding` (its note, reason and action cut to what the API server accepts). Never
    /// waits: when the queue is full the Event is dropped, counted and logged.
    pub fn publish(&self, event: Event, regarding: ObjectReference) {
        let pending = Pending {
            event: bounded(event),
            regarding,
        };
        match self.queue.try_send(pending) {
            Ok(()) => {
                let dropped = self.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    warn!(
                        dropped,
                        "the Event queue has room again; Events dropped while it was full: {dropped}"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Full(p)) => {
                count_outcome(&self.outcomes, "error");
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(
                        reason = p.event.reason,
                        object = p.regarding.name.as_deref().unwrap_or_default(),
                        "the API server is not keeping up with Events; dropping Events until it does"
                    );
                }
            }
            // The writing task has stopped (the agent or this controller is stopping).
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn count_outcome(outcomes: &Option<Family<WriteLabels, Counter>>, result: &'static str) {
    if let Some(family) = outcomes {
        family.get_or_create(&WriteLabels { kind: "event", result }).inc();
    }
}

/// The writing task: owns the series cache and makes the API requests, one at a time.
struct EventWriter {
    client: Client,
    controller: String,
    instance: String,
    cache: SeriesCache,
    outcomes: Option<Family<WriteLabels, Counter>>,
}

impl EventWriter {
    /// Writes queued Events until `cancel` fires or every publisher is dropped; returns the cache (for tests).
    async fn run(
        mut self,
        mut pending: mpsc::Receiver<Pending>,
        prune_every: Duration,
        cancel: CancellationToken,
    ) -> SeriesCache {
        let mut prune = tokio::time::interval(prune_every);
        prune.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = prune.tick() => self.cache.prune(Instant::now()),
                next = pending.recv() => {
                    let Some(p) = next else { break };
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.write(p) => {}
                    }
                }
            }
        }
        self.cache
    }

    async fn write(&mut self, p: Pending) {
        let key = SeriesKey::new(&p.event, &p.regarding);
        let now = Instant::now();
        let result = match self.cache.observe(&key, now) {
            Write::Patch { namespace, name, count } => {
                let series = EventSeries {
                    count,
                    last_observed_time: MicroTime(jiff::Timestamp::now()),
                };
                let api: Api<ApiEvent> = Api::namespaced(self.client.clone(), &namespace);
                let patch = json!({ "series": series });
                match timed(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))).await {
                    // The Event is gone (expired, or deleted): start a new one, as client-go does.
                    Err(WriteError::Api(kube::Error::Api(status))) if status.code == 404 => {
                        self.cache.forget(&key);
                        self.create(key, &p, now).await
                    }
                    Err(e) => {
                        self.cache.forget(&key);
                        Err(e)
                    }
                    Ok(_) => Ok(()),
                }
            }
            Write::Create => self.create(key, &p, now).await,
        };
        match result {
            Ok(()) => count_outcome(&self.outcomes, "ok"),
            Err(e) => {
                count_outcome(&self.outcomes, "error");
                warn!(
                    reason = p.event.reason,
                    object = p.regarding.name.as_deref().unwrap_or_default(),
                    namespace = p.regarding.namespace.as_deref().unwrap_or_default(),
                    error = %e,
                    "cannot record Event"
                );
            }
        }
    }

    async fn create(&mut self, key: SeriesKey, p: &Pending, now: Instant) -> Result<(), WriteError> {
        let wall = jiff::Timestamp::now();
        // A cluster-scoped object's Events live in `default` (the API server accepts only it or kube-system).
        let namespace = p.regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let name = event_name(&p.regarding, &self.controller, wall);
        let event = ApiEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(wall)),
            type_: Some(
                match p.event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            reason: Some(p.event.reason.clone()),
            action: Some(p.event.action.clone()),
            note: p.event.note.clone(),
            regarding: Some(p.regarding.clone()),
            related: p.event.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<ApiEvent> = Api::namespaced(self.client.clone(), &namespace);
        timed(api.create(&PostParams::default(), &event)).await?;
        self.cache.created(key, namespace, name, now);
        Ok(())
    }
}

/// Why an Event write failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Api(kube::Error),
    #[error("no answer from the API server within {WRITE_TIMEOUT:?}")]
    TimedOut,
}

async fn timed<T>(request: impl Future<Output = Result<T, kube::Error>>) -> Result<T, WriteError> {
    match tokio::time::timeout(WRITE_TIMEOUT, request).await {
        Ok(result) => result.map_err(WriteError::Api),
        Err(_) => Err(WriteError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use kube::api::ListParams;

    fn key(name: &str, note: &str) -> SeriesKey {
        SeriesKey::new(&event(note), &service_ref(name))
    }

    fn service_ref(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn event(note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: "AllocationFailed".into(),
            note: Some(note.into()),
            action: "Allocate".into(),
            secondary: None,
        }
    }

    fn patch(name: &str, count: i32) -> Write {
        Write::Patch {
            namespace: "default".into(),
            name: name.into(),
            count,
        }
    }

    #[test]
    fn every_field_is_cut_to_what_the_api_server_accepts() {
        // A 100 KB annotation value quoted whole, with multi-byte characters around the cut.
        let long = format!("bad value '{}'", "é🦀".repeat(100 * 1024 / 6));
        let e = bounded(Event {
            reason: "R".repeat(300),
            action: "ä".repeat(100),
            ..event(&long)
        });
        let note = e.note.unwrap();
        assert!(note.len() <= 1024, "note of {} bytes", note.len());
        assert!(note.ends_with('…'), "the cut is marked");
        assert!(
            long.starts_with(note.trim_end_matches('…')),
            "a prefix, cut at a character boundary"
        );
        assert!(note.len() > 1000, "as much as fits is kept");
        assert!(e.reason.len() <= 128 && e.reason.ends_with('…'));
        assert!(e.action.len() <= 128 && e.action.starts_with("ää"));
        let short = bounded(event("fine"));
        assert_eq!(
            (short.note.as_deref(), short.reason.as_str()),
            (Some("fine"), "AllocationFailed")
        );
    }

    #[test]
    fn event_names_are_dns_subdomains_however_long_the_object_name() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(event_name(&service_ref("web"), "herald", now), "web.17979cfe362a0000");
        let long = service_ref(&format!("{}-{}", "a".repeat(232), "b".repeat(20)));
        let name = event_name(&long, "herald", now);
        assert!(name.len() <= 253, "{} bytes", name.len());
        assert!(
            name.ends_with("a.17979cfe362a0000"),
            "no '-' or '…' before the suffix: {name}"
        );
        let cluster_scoped = ObjectReference::default();
        assert!(event_name(&cluster_scoped, "herald", now).starts_with("herald."));
    }

    #[tokio::test(start_paused = true)]
    async fn an_identical_event_counts_into_its_series_and_a_new_note_is_a_new_event() {
        let mut cache = SeriesCache::new(SERIES_TTL, MAX_SERIES);
        let k = key("web", "allocated 192.0.2.9");
        assert_eq!(cache.observe(&k, Instant::now()), Write::Create);
        cache.created(k.clone(), "default".into(), "web.1".into(), Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(cache.observe(&k, Instant::now()), patch("web.1", 2));
        assert_eq!(cache.observe(&k, Instant::now()), patch("web.1", 3));
        assert_eq!(
            cache.observe(&key("web", "released 192.0.2.9"), Instant::now()),
            Write::Create
        );
        assert_eq!(
            cache.observe(&key("db", "allocated 192.0.2.9"), Instant::now()),
            Write::Create
        );
        // The same name, another object (deleted and created again): another series.
        let recreated = ObjectReference {
            uid: Some("uid-web-2".into()),
            ..service_ref("web")
        };
        let again = SeriesKey::new(&event("allocated 192.0.2.9"), &recreated);
        assert_eq!(cache.observe(&again, Instant::now()), Write::Create);
        let related = Event {
            secondary: Some(service_ref("db")),
            ..event("allocated 192.0.2.9")
        };
        let related = SeriesKey::new(&related, &service_ref("web"));
        assert_eq!(
            cache.observe(&related, Instant::now()),
            Write::Create,
            "another related object"
        );
        cache.forget(&k);
        assert_eq!(cache.observe(&k, Instant::now()), Write::Create, "after a failed write");
    }

    #[tokio::test(start_paused = true)]
    async fn a_series_closes_after_the_ttl_even_when_nothing_else_is_published() {
        let mut cache = SeriesCache::new(SERIES_TTL, MAX_SERIES);
        for i in 0..500 {
            cache.created(
                key(&format!("svc-{i}"), "n"),
                "default".into(),
                format!("e{i}"),
                Instant::now(),
            );
        }
        let k = key("svc-0", "n");
        tokio::time::advance(SERIES_TTL - Duration::from_secs(1)).await;
        assert_eq!(
            cache.observe(&k, Instant::now()),
            patch("e0", 2),
            "a repeat keeps its series open"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        // The timer's prune, with no Event published.
        cache.prune(Instant::now());
        assert_eq!(cache.len(), 1, "only the series seen again is still open");
        tokio::time::advance(SERIES_TTL).await;
        cache.prune(Instant::now());
        assert_eq!(cache.len(), 0);
        assert!(cache.series.capacity() <= 64, "the table's memory is given back too");
        assert_eq!(cache.observe(&k, Instant::now()), Write::Create);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_holds_at_most_max_series_and_evicts_the_least_recently_seen() {
        let mut cache = SeriesCache::new(SERIES_TTL, 3);
        for name in ["a", "b", "c"] {
            cache.created(key(name, "n"), "default".into(), name.into(), Instant::now());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(
            cache.observe(&key("a", "n"), Instant::now()),
            patch("a", 2),
            "a is now the most recent"
        );
        cache.created(key("d", "n"), "default".into(), "d".into(), Instant::now());
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.observe(&key("b", "n"), Instant::now()),
            Write::Create,
            "b was the least recently seen"
        );
        for name in ["a", "c", "d"] {
            assert!(
                matches!(cache.observe(&key(name, "n"), Instant::now()), Write::Patch { .. }),
                "{name}"
            );
        }
        for i in 0..10_000 {
            cache.created(
                key(&format!("s{i}"), "n"),
                "default".into(),
                format!("s{i}"),
                Instant::now(),
            );
        }
        assert_eq!(cache.len(), 3);
    }

    async fn api_events(client: &Client) -> Vec<ApiEvent> {
        let api: Api<ApiEvent> = Api::namespaced(client.clone(), "default");
        api.list(&ListParams::default()).await.unwrap().items
    }

    #[tokio::test]
    async fn events_reach_the_api_bounded_counted_in_series_and_idle_series_are_pruned() {
        let lab = herald_lab_apiserver::start(Default::default()).await.unwrap();
        let client = lab.client().unwrap();
        let limits = Limits {
            ttl: Duration::from_millis(300),
            prune_every: Duration::from_millis(50),
            ..LIMITS
        };
        let reporter = Reporter {
            controller: "herald".into(),
            // `<node>/<pod uid>` with a node name of the longest kind.
            instance: Some(format!("{}/0b7c4d2e", "n".repeat(253))),
        };
        let outcomes = Family::<WriteLabels, Counter>::default();
        let cancel = CancellationToken::new();
        let (publisher, task) =
            EventPublisher::spawn_with(client.clone(), reporter, Some(outcomes.clone()), cancel.clone(), limits);
        let huge = "x".repeat(100 * 1024);
        publisher.publish(event(&huge), service_ref("web"));
        publisher.publish(event(&huge), service_ref("web"));
        publisher.publish(event("another reason"), service_ref("web"));
        let ok = || {
            outcomes
                .get_or_create(&WriteLabels {
                    kind: "event",
                    result: "ok",
                })
                .get()
        };
        for _ in 0..200 {
            if ok() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ok(), 3, "every write accepted");
        let mut events = api_events(&client).await;
        events.sort_by_key(|e| e.note.as_ref().map(String::len));
        assert_eq!(events.len(), 2, "the repeat counted into the first Event's series");
        let big = &events[1];
        let note = big.note.as_deref().unwrap();
        assert!(
            note.len() <= 1024 && note.ends_with('…'),
            "note of {} bytes",
            note.len()
        );
        assert_eq!(big.series.as_ref().map(|s| s.count), Some(2));
        assert!(big.reporting_instance.as_ref().unwrap().len() <= 128);
        assert_eq!(events[0].series, None);

        // Idle past the TTL: the timer empties the cache, no Event needed.
        tokio::time::sleep(Duration::from_millis(600)).await;
        drop(publisher);
        let cache = task.await.unwrap();
        assert_eq!(cache.len(), 0, "series pruned while idle");
        cancel.cancel();
    }

    #[tokio::test]
    async fn publishing_never_waits_for_a_slow_api_server() {
        // A server that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let outcomes = Family::<WriteLabels, Counter>::default();
        let cancel = CancellationToken::new();
        let publisher = EventPublisher::spawn(client, "herald".into(), Some(outcomes.clone()), cancel.clone());
        let start = std::time::Instant::now();
        for i in 0..5 * QUEUE {
            publisher.publish(event("n"), service_ref(&format!("svc-{i}")));
        }
        assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
        let dropped = outcomes
            .get_or_create(&WriteLabels {
                kind: "event",
                result: "error",
            })
            .get();
        assert!(
            dropped as usize >= 3 * QUEUE,
            "beyond the queue, Events are dropped ({dropped})"
        );
        assert_eq!(
            publisher.dropped.load(Ordering::Relaxed),
            dropped,
            "counted for the log line too (the announcer has no metric for them)"
        );
        cancel.cancel();
    }
}
