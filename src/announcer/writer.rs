//! The announcer's API writes, made by a task of their own: the announcer's loop never waits for the API server.
//!
//! Writes wait per Service, not in a FIFO: every write queued for one Service (the IPs of a dual-stack pair, an IP
//! taken over again and again) becomes one patch, and what waits is bounded by the number of Services, so nothing is
//! dropped however many IPs are announced at once. Up to [`CONCURRENCY`] Services are written at once, never one
//! Service twice at once (its compare-and-swap would only conflict with itself). The Service is read from the
//! shared reflector, never fetched: when the patch's resourceVersion turns out stale (409), the writer waits for the
//! reflector to show the newer version (so the agent needs no `get` on Services at all).
//!
//! A write that fails (the API server down or overloaded, a reflector that does not catch up, conflicts again and
//! again) waits and is tried again, 1 s after the first failure doubling to 30 s, until it lands or its Service is
//! gone: an `announced-by` entry is never given up. What it records is decided when it is made: only the IPs this
//! node still answers for (the announcer says when it stops, [`Write::Withdrawn`]) and the Service still has, so a
//! write that waited never names this node for an IP another node took over meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use herald_api::names;
use herald_ipam::ServiceKey;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::state::Write;
use crate::adapter;
use crate::events::{Event, EventPublisher, EventType};
use crate::service::ServiceView;
use crate::store::Store;

/// Services written at once.
const CONCURRENCY: usize = 8;
/// Conflict notes kept per waiting Service; more are dropped (a network full of hosts claiming one address says
/// nothing new after the first few).
const MAX_CONFLICTS: usize = 8;
/// A patch whose resourceVersion is stale is tried again this many times, each on the reflector's newer copy, before
/// the write counts as failed (and waits its backoff).
const CONFLICT_RETRIES: u32 = 5;

/// How the writer waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterTiming {
    /// How long a patch that conflicted waits for the reflector to show the Service's newer version.
    pub catch_up: Duration,
    /// The wait after a write's first failure; it doubles with each failure in a row.
    pub retry_first: Duration,
    /// The longest wait between two tries of a failing write.
    pub retry_max: Duration,
}

impl Default for WriterTiming {
    fn default() -> Self {
        WriterTiming {
            catch_up: Duration::from_secs(5),
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl WriterTiming {
    /// The wait after `failures` failed writes in a row (at least 1).
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .retry_first
            .saturating_mul(1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX));
        doubled.min(self.retry_max)
    }
}

/// What waits to be written about one Service.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ServiceWrites {
    /// IPs this node answers for, with the interface (the last one said wins).
    announced: BTreeMap<IpAddr, String>,
    /// `AddressConflict` notes (the same note twice is one Event).
    conflicts: BTreeSet<String>,
}

/// The writes waiting, per Service: ready ones in the order their Services started waiting, failed ones until their
/// retry time.
#[derive(Debug, Default)]
struct Queue {
    /// Services ready to be written.
    order: VecDeque<ServiceKey>,
    /// What waits, per Service (ready or backing off).
    waiting: HashMap<ServiceKey, ServiceWrites>,
    /// Services whose last write failed, by when they are tried again.
    backoff: BTreeSet<(Instant, ServiceKey)>,
    /// Failed writes in a row, per Service.
    failures: HashMap<ServiceKey, u32>,
    /// The IPs this node answers for, as the announcer said (announced and not withdrawn since).
    answering: HashSet<IpAddr>,
}

impl Queue {
    /// Adds `write` to what waits for its Service.
    fn push(&mut self, write: Write) {
        let service = match &write {
            Write::Announcing { service, .. } | Write::Conflict { service, .. } => service,
            Write::Withdrawn { ip } => {
                self.answering.remove(ip);
                return;
            }
        };
        let writes = match self.waiting.get_mut(service) {
            Some(w) => w,
            None => {
                self.order.push_back(service.clone());
                self.waiting.entry(service.clone()).or_default()
            }
        };
        match write {
            Write::Announcing { ip, interface, .. } => {
                self.answering.insert(ip);
                writes.announced.insert(ip, interface);
            }
            Write::Conflict { note, .. } => {
                if writes.conflicts.len() < MAX_CONFLICTS {
                    writes.conflicts.insert(note);
                }
            }
            Write::Withdrawn { .. } => {}
        }
    }

    /// The first ready Service that is not being written now (`busy`), with its writes; failed writes whose time
    /// came are ready again. `busy` holds at most [`CONCURRENCY`] Services, so this looks at most that many entries
    /// past the first.
    fn pop(&mut self, busy: &HashSet<ServiceKey>, now: Instant) -> Option<(ServiceKey, ServiceWrites)> {
        while let Some((at, _)) = self.backoff.first()
            && *at <= now
        {
            let (_, service) = self.backoff.pop_first()?;
            self.order.push_back(service);
        }
        let at = self.order.iter().position(|k| !busy.contains(k))?;
        let service = self.order.remove(at)?;
        let writes = self.waiting.remove(&service)?;
        Some((service, writes))
    }

    /// The IPs of `writes` this node still answers for.
    fn answered(&self, writes: &BTreeMap<IpAddr, String>) -> BTreeMap<IpAddr, String> {
        writes
            .iter()
            .filter(|(ip, _)| self.answering.contains(ip))
            .map(|(ip, i)| (*ip, i.clone()))
            .collect()
    }

    /// `service` was written: its failures are forgotten.
    fn succeeded(&mut self, service: &ServiceKey) {
        self.failures.remove(service);
    }

    /// Writing `service` failed: `announced` waits until `retry` after `now` (the backoff of its failures in a row),
    /// merged with what was queued for it meanwhile (the newer interface wins); when something was queued, it is
    /// ready already and goes at once. Returns the wait.
    fn failed(
        &mut self,
        service: ServiceKey,
        announced: BTreeMap<IpAddr, String>,
        now: Instant,
        timing: &WriterTiming,
    ) -> Duration {
        let failures = self.failures.entry(service.clone()).or_default();
        *failures += 1;
        let wait = timing.backoff(*failures);
        match self.waiting.get_mut(&service) {
            Some(newer) => {
                for (ip, interface) in announced {
                    newer.announced.entry(ip).or_insert(interface);
                }
            }
            None => {
                self.waiting.insert(
                    service.clone(),
                    ServiceWrites {
                        announced,
                        conflicts: BTreeSet::new(),
                    },
                );
                self.backoff.insert((now + wait, service));
            }
        }
        wait
    }

    /// When the first failed write is tried again.
    fn next_retry(&self) -> Option<Instant> {
        self.backoff.first().map(|(at, _)| *at)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.len()
    }
}

/// The sending side. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    /// Stops the writing task when the last `Writer` is dropped.
    _stop: Arc<DropGuard>,
}

/// What the writing task needs for each write.
struct Context {
    client: Client,
    services: Store<ServiceView>,
    events: EventPublisher,
    node: String,
    queue: Arc<Mutex<Queue>>,
    timing: WriterTiming,
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // Pushing to and popping from the queue cannot leave it inconsistent; keep going after a panic elsewhere.
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// Starts the writing task; it ends when `cancel` fires or every `Writer` is dropped. `services` is the
    /// reflector's store the writes start from.
    pub fn spawn(
        client: Client,
        services: Store<ServiceView>,
        events: EventPublisher,
        node: String,
        timing: WriterTiming,
        cancel: CancellationToken,
    ) -> Self {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let wake = Arc::new(Notify::new());
        let stop = cancel.child_token();
        let context = Arc::new(Context {
            client,
            services,
            events,
            node,
            queue: queue.clone(),
            timing,
        });
        tokio::spawn(run(wake.clone(), context, stop.clone()));
        Self {
            queue,
            wake,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// Queues `write` without waiting.
    pub fn send(&self, write: Write) {
        lock(&self.queue).push(write);
        self.wake.notify_one();
    }
}

/// Writes what waits, up to [`CONCURRENCY`] Services at once, until `stop`.
async fn run(wake: Arc<Notify>, context: Arc<Context>, stop: CancellationToken) {
    let mut busy = HashSet::new();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < CONCURRENCY {
            let Some((service, writes)) = lock(&context.queue).pop(&busy, Instant::now()) else {
                break;
            };
            busy.insert(service.clone());
            let context = context.clone();
            running.push(async move {
                let failed = write(&context, &service, writes).await;
                (service, failed)
            });
        }
        // A retry waits for a free slot like any write: with every slot taken, the next one to end wakes the loop.
        let retry = (running.len() < CONCURRENCY)
            .then(|| lock(&context.queue).next_retry())
            .flatten();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => {}
            Some((service, failed)) = running.next(), if !running.is_empty() => {
                busy.remove(&service);
                let mut queue = lock(&context.queue);
                match failed {
                    None => queue.succeeded(&service),
                    Some((announced, error)) => {
                        let wait = queue.failed(service.clone(), announced, Instant::now(), &context.timing);
                        warn!(%service, error = %error, retry_in = ?wait, "cannot record the announcing node; will retry");
                    }
                }
            }
        }
    }
}

/// Writes what waited for `service`: its `announced-by` entries in one patch and an Event per IP; its conflicts as
/// Events. Returns the entries to try again, with why, when the patch failed.
async fn write(
    context: &Context,
    service: &ServiceKey,
    writes: ServiceWrites,
) -> Option<(BTreeMap<IpAddr, String>, kube::Error)> {
    let api: Api<Service> = Api::namespaced(context.client.clone(), &service.namespace);
    // The announcer planned these writes from this store: a Service missing from it now was deleted.
    let Some(stored) = context.services.get(Some(&service.namespace), &service.name) else {
        debug!(%service, "the Service is gone: nothing to record");
        return None;
    };
    let node = &context.node;
    let mut regarding = None;
    let mut failed = None;
    if !writes.announced.is_empty() {
        match record_announcer(&api, context, stored.clone(), &writes.announced).await {
            Ok((reference, recorded)) => {
                for (ip, interface) in &recorded {
                    let event = Event {
                        type_: EventType::Normal,
                        reason: "Announcing".into(),
                        note: Some(format!("node {node} answers ARP/NDP for {ip} on {interface} (layer2)")),
                        action: "Announce".into(),
                        secondary: None,
                    };
                    context.events.publish(event, reference.clone());
                }
                regarding = Some(reference);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => debug!(%service, "the Service is gone: nothing to record"),
            Err(e) => failed = Some((writes.announced, e)),
        }
    }
    let regarding = regarding.unwrap_or_else(|| stored.object_ref());
    for note in writes.conflicts {
        let event = Event {
            type_: EventType::Warning,
            reason: "AddressConflict".into(),
            note: Some(note),
            action: "Probe".into(),
            secondary: None,
        };
        context.events.publish(event, regarding.clone());
    }
    failed
}

/// Sets `ip=node` for each of `ips` that this node still answers for and the Service still has, in the Service's
/// `herald.dev/announced-by` annotation (`ip=node,ip=node`, one entry per Service IP), keeping the entries other
/// nodes wrote for its other IPs. A compare-and-swap on the resourceVersion, so two nodes recording different IPs of
/// one dual-stack Service never lose each other's entry. Returns the Service and the entries it holds now.
///
/// It starts from the reflector's copy (`stored`); when the patch conflicts, it waits for the reflector to show the
/// newer version (at most [`WriterTiming::catch_up`]) and tries again on that, at most [`CONFLICT_RETRIES`] times.
/// When that copy already holds the entries, nothing is written: the store is at most a watch event behind, and the
/// entry it shows was this node's own write or is this node's by an older holder's record that the watch has not yet
/// replaced; the latter needs a takeover back and forth within one watch delay, which only a broken watch makes
/// possible (and then every decision of this agent is that late).
async fn record_announcer(
    api: &Api<Service>,
    context: &Context,
    stored: Arc<ServiceView>,
    ips: &BTreeMap<IpAddr, String>,
) -> Result<(ObjectReference, BTreeMap<IpAddr, String>), kube::Error> {
    let mut svc = stored;
    let mut attempt = 0;
    loop {
        // Decided again on each copy: this node may have stopped answering for an IP since, the Service dropped one.
        let status_ips = adapter::status_ips(&svc);
        let mut recorded = lock(&context.queue).answered(ips);
        recorded.retain(|ip, _| status_ips.contains(ip));
        let existing = svc.annotation(names::ANNOTATION_ANNOUNCED_BY);
        let value = adapter::announced_by(existing, &status_ips, recorded.keys().copied(), &context.node);
        if recorded.is_empty() || existing == Some(value.as_str()) {
            return Ok((svc.object_ref(), recorded));
        }
        let patch = json!({"metadata": {
            "resourceVersion": svc.resource_version,
            "annotations": {names::ANNOTATION_ANNOUNCED_BY: value},
        }});
        match api
            .patch(&svc.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(patched) => return Ok((patched.object_ref(&()), recorded)),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < CONFLICT_RETRIES => {
                attempt += 1;
                let than = svc.resource_version.clone();
                match newer_copy(&context.services, &svc, than.as_deref(), context.timing.catch_up).await {
                    Some(newer) => svc = newer,
                    None => return Err(kube::Error::Api(e)),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The reflector's copy of `service` once its resourceVersion differs from `than` (at most `catch_up` later); `None`
/// if the Service is gone or the reflector did not catch up.
async fn newer_copy(
    store: &Store<ServiceView>,
    service: &ServiceView,
    than: Option<&str>,
    catch_up: Duration,
) -> Option<Arc<ServiceView>> {
    let deadline = Instant::now() + catch_up;
    loop {
        let svc = store.get(Some(&service.namespace), &service.name)?;
        if svc.resource_version.as_deref() != than {
            return Some(svc);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use kube::api::PostParams;
    use kube::runtime::watcher;

    use crate::events::Reporter;

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("default", name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn announcing(service: &str, address: &str, interface: &str) -> Write {
        Write::Announcing {
            service: key(service),
            ip: ip(address),
            interface: interface.into(),
        }
    }

    fn conflict(service: &str, note: &str) -> Write {
        Write::Conflict {
            service: key(service),
            note: note.into(),
        }
    }

    #[test]
    fn writes_for_one_service_wait_together_and_a_busy_service_waits_its_turn() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push(announcing("web", "192.0.2.1", "eth0"));
        q.push(announcing("api", "192.0.2.2", "eth0"));
        q.push(announcing("web", "2001:db8::1", "eth0"));
        q.push(announcing("web", "192.0.2.1", "eth1"));
        q.push(conflict("web", "in use"));
        q.push(conflict("web", "in use"));
        assert_eq!(q.len(), 2, "one entry per Service");
        let (service, writes) = q.pop(&HashSet::new(), now).unwrap();
        assert_eq!(service, key("web"), "the first to wait goes first");
        assert_eq!(
            writes,
            ServiceWrites {
                announced: BTreeMap::from([(ip("192.0.2.1"), "eth1".into()), (ip("2001:db8::1"), "eth0".into())]),
                conflicts: BTreeSet::from(["in use".into()]),
            }
        );
        // While web is being written, more for it waits behind api.
        q.push(announcing("web", "192.0.2.1", "eth0"));
        let busy = HashSet::from([key("web")]);
        assert_eq!(q.pop(&busy, now).unwrap().0, key("api"));
        assert!(q.pop(&busy, now).is_none(), "web is busy");
        assert_eq!(q.pop(&HashSet::new(), now).unwrap().0, key("web"));
        assert!(q.pop(&HashSet::new(), now).is_none());
        for i in 0..100 {
            q.push(conflict("web", &format!("note {i}")));
        }
        assert_eq!(q.pop(&HashSet::new(), now).unwrap().1.conflicts.len(), MAX_CONFLICTS);
    }

    #[test]
    fn ten_thousand_ips_at_once_wait_as_one_entry_per_service() {
        let now = Instant::now();
        let mut q = Queue::default();
        for i in 0..10_000u32 {
            let service = format!("s{}", i / 2);
            let v4 = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            q.push(Write::Announcing {
                service: key(&service),
                ip: v4,
                interface: "eth0".into(),
            });
        }
        assert_eq!(q.len(), 5_000);
        let mut ips = 0;
        while let Some((_, w)) = q.pop(&HashSet::new(), now) {
            ips += w.announced.len();
        }
        assert_eq!(ips, 10_000, "nothing dropped");
    }

    #[test]
    fn a_failed_write_waits_its_backoff_and_keeps_what_was_said_since() {
        let timing = WriterTiming::default();
        assert_eq!(
            [1, 2, 3, 5, 6, 40, u32::MAX].map(|n| timing.backoff(n).as_secs()),
            [1, 2, 4, 16, 30, 30, 30],
            "1 s doubling to 30 s, no overflow"
        );
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.push(announcing("web", "192.0.2.1", "eth0"));
        let (service, writes) = q.pop(&HashSet::new(), t0).unwrap();
        // The write fails: nothing is ready until its retry time.
        let wait = q.failed(service.clone(), writes.announced.clone(), t0, &timing);
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(q.next_retry(), Some(t0 + wait));
        assert!(q.pop(&HashSet::new(), t0 + wait / 2).is_none(), "backing off");
        let (_, again) = q.pop(&HashSet::new(), t0 + wait).unwrap();
        assert_eq!(again.announced, writes.announced, "the same entries, tried again");
        // Fails again while a newer write for it came (another interface, and its IPv6 address): that one goes at
        // once, the newer interface kept, the failed entry merged in.
        q.push(announcing("web", "192.0.2.1", "eth1"));
        q.push(announcing("web", "2001:db8::1", "eth1"));
        let wait = q.failed(service.clone(), again.announced, t0 + wait, &timing);
        assert_eq!(wait, Duration::from_secs(2), "doubled");
        assert_eq!(q.next_retry(), None, "not backing off: something newer is ready");
        let (_, merged) = q.pop(&HashSet::new(), t0).unwrap();
        assert_eq!(
            merged.announced,
            BTreeMap::from([(ip("192.0.2.1"), "eth1".into()), (ip("2001:db8::1"), "eth1".into())])
        );
        // Success forgets the failures: the next failure waits 1 s again.
        q.succeeded(&service);
        assert_eq!(q.failed(service, merged.announced, t0, &timing), Duration::from_secs(1));
    }

    #[test]
    fn an_ip_this_node_stopped_answering_for_is_not_recorded() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push(announcing("web", "192.0.2.1", "eth0"));
        q.push(announcing("web", "2001:db8::1", "eth0"));
        q.push(Write::Withdrawn { ip: ip("192.0.2.1") });
        let (_, writes) = q.pop(&HashSet::new(), now).unwrap();
        assert_eq!(writes.announced.len(), 2, "the queue keeps what was said");
        assert_eq!(
            q.answered(&writes.announced),
            BTreeMap::from([(ip("2001:db8::1"), "eth0".into())]),
            "what is written leaves out the withdrawn IP"
        );
        // Answered again later: recorded again.
        q.push(announcing("api", "192.0.2.1", "eth0"));
        assert_eq!(q.answered(&writes.announced).len(), 2);
    }

    async fn create_service(client: &Client, name: &str, ips: &[&str]) {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}))
        .unwrap();
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        api.create(&PostParams::default(), &svc).await.unwrap();
        let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        let status = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// Every Service's `announced-by`, by name, in one list request.
    async fn annotations(client: &Client) -> BTreeMap<String, String> {
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        let list = api.list(&Default::default()).await.unwrap();
        list.items
            .into_iter()
            .filter_map(|s| {
                let value = s.metadata.annotations?.remove(names::ANNOTATION_ANNOUNCED_BY)?;
                Some((s.metadata.name?, value))
            })
            .collect()
    }

    /// A store filled by hand, as the reflector would fill it, with every Service as it is now; then `behind`
    /// changes on the server only, so its copy in the store is stale and a patch from that copy conflicts.
    async fn store_one_change_behind(
        api: &Api<Service>,
        behind: &str,
    ) -> (crate::store::Writer<ServiceView>, Store<ServiceView>) {
        let mut store_writer = crate::store::Writer::new();
        let store = store_writer.store();
        for svc in api.list(&Default::default()).await.unwrap().items {
            store_writer.apply(watcher::Event::Apply(ServiceView::from(svc)));
        }
        let change = json!({"metadata": {"annotations": {"unrelated": "x"}}});
        api.patch(behind, &PatchParams::default(), &Patch::Merge(&change))
            .await
            .unwrap();
        (store_writer, store)
    }

    fn test_events(client: &Client, cancel: &CancellationToken) -> EventPublisher {
        let reporter = Reporter {
            controller: "test".into(),
            instance: None,
        };
        EventPublisher::spawn(client.clone(), reporter, None, cancel.clone())
    }

    #[tokio::test]
    async fn announcements_are_recorded_from_the_store_in_one_patch_per_service() {
        let lab = herald_lab_apiserver::start(Default::default()).await.unwrap();
        let client = lab.client().unwrap();
        let services = 40;
        for i in 0..services {
            create_service(&client, &format!("s{i}"), &["192.0.2.1", "2001:db8::1"]).await;
        }
        // Another node already holds the IPv6 address of s0.
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        let other = json!({"metadata": {"annotations": {names::ANNOTATION_ANNOUNCED_BY: "2001:db8::1=n2"}}});
        api.patch("s0", &PatchParams::default(), &Patch::Merge(&other))
            .await
            .unwrap();
        // s1's copy in the store is stale and its patch conflicts. The store gets s1's new version only once the
        // conflict happened (a watch event that arrives late), and the writer patches s1 again on that copy.
        let (mut store_writer, store) = store_one_change_behind(&api, "s1").await;
        let cancel = CancellationToken::new();
        let events = test_events(&client, &cancel);
        let before = lab.metrics();
        let writer = Writer::spawn(
            client.clone(),
            store,
            events,
            "n1".into(),
            WriterTiming::default(),
            cancel.clone(),
        );
        for i in 0..services {
            writer.send(announcing(&format!("s{i}"), "192.0.2.1", "eth0"));
        }
        for i in 1..services {
            writer.send(announcing(&format!("s{i}"), "2001:db8::1", "eth0"));
        }
        let conflicts = |m: &herald_lab_apiserver::MetricsSnapshot| m.responses.get(&409).copied().unwrap_or(0);
        let late_event = async {
            while conflicts(&lab.metrics()) == conflicts(&before) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let items = api.list(&Default::default()).await.unwrap().items;
            let s1 = items
                .into_iter()
                .find(|s| s.metadata.name.as_deref() == Some("s1"))
                .unwrap();
            store_writer.apply(watcher::Event::Apply(ServiceView::from(s1)));
        };
        tokio::time::timeout(Duration::from_secs(20), late_event)
            .await
            .expect("s1's patch conflicts");
        let mut want: BTreeMap<String, String> = (1..services)
            .map(|i| (format!("s{i}"), "192.0.2.1=n1,2001:db8::1=n1".to_string()))
            .collect();
        want.insert("s0".into(), "192.0.2.1=n1,2001:db8::1=n2".into());
        let done = async {
            while annotations(&client).await != want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), done)
            .await
            .expect("every Service recorded");
        let after = lab.metrics();
        let made = |verb: &str| after.requests(verb, "services") - before.requests(verb, "services");
        assert_eq!(
            (made("patch"), made("get")),
            (services as u64 + 1, 0),
            "one patch per Service; s1 patched once more on the reflector's newer copy, never read"
        );
        assert_eq!(conflicts(&after) - conflicts(&before), 1);
        cancel.cancel();
    }

    /// The reflector never shows the Service's newer version, so each try conflicts and gives up: the write waits
    /// its backoff and is tried again, as often as it takes, and lands once the reflector catches up, without the IP
    /// this node stopped answering for meanwhile.
    #[tokio::test]
    async fn a_write_that_keeps_failing_is_tried_again_until_it_lands() {
        let lab = herald_lab_apiserver::start(Default::default()).await.unwrap();
        let client = lab.client().unwrap();
        create_service(&client, "web", &["192.0.2.1", "2001:db8::1"]).await;
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        let (mut store_writer, store) = store_one_change_behind(&api, "web").await;
        let cancel = CancellationToken::new();
        let events = test_events(&client, &cancel);
        let timing = WriterTiming {
            catch_up: Duration::from_millis(50),
            retry_first: Duration::from_millis(100),
            retry_max: Duration::from_millis(200),
        };
        let before = lab.metrics();
        let writer = Writer::spawn(client.clone(), store, events, "n1".into(), timing, cancel.clone());
        writer.send(announcing("web", "192.0.2.1", "eth0"));
        writer.send(announcing("web", "2001:db8::1", "eth0"));
        let conflicts = |m: &herald_lab_apiserver::MetricsSnapshot| m.responses.get(&409).copied().unwrap_or(0);
        let failing = async {
            while conflicts(&lab.metrics()) - conflicts(&before) < 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), failing)
            .await
            .expect("the write is tried again after giving up");
        assert!(annotations(&client).await.is_empty(), "nothing recorded yet");
        // This node stops answering for the IPv6 address; then the reflector catches up.
        writer.send(Write::Withdrawn { ip: ip("2001:db8::1") });
        store_writer.apply(watcher::Event::Apply(ServiceView::from(api.get("web").await.unwrap())));
        let recorded = async {
            loop {
                if let Some(value) = annotations(&client).await.remove("web") {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let value = tokio::time::timeout(Duration::from_secs(20), recorded)
            .await
            .expect("recorded once the reflector caught up");
        assert_eq!(value, "192.0.2.1=n1", "the withdrawn IP is not recorded");
        cancel.cancel();
    }
}
