//! The announcer's API writes, made by a task of their own: the announcer's loop never waits for the API server.
//!
//! Writes wait per Service, not in a FIFO: every write queued for one Service (the IPs of a dual-stack pair, an IP
//! taken over again and again) becomes one patch, and what waits is bounded by the number of Services, so nothing is
//! dropped however many IPs are announced at once. Up to [`CONCURRENCY`] Services are written at once, never one
//! Service twice at once (its compare-and-swap would only conflict with itself). The Service is read from the
//! shared reflector, never fetched: when the patch's resourceVersion turns out stale (409), the writer waits for the
//! reflector to show the newer version (so the agent needs no `get` on Services at all).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use herald_api::names;
use herald_ipam::ServiceKey;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::Notify;
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
/// A patch whose resourceVersion is stale is tried again this many times, each on the reflector's newer copy.
const CONFLICT_RETRIES: u32 = 5;
/// How long a patch that conflicted waits for the reflector to show the Service's newer version.
const STORE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// What waits to be written about one Service.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ServiceWrites {
    /// IPs this node answers for, with the interface (the last one said wins).
    announced: BTreeMap<IpAddr, String>,
    /// `AddressConflict` notes (the same note twice is one Event).
    conflicts: BTreeSet<String>,
}

/// The writes waiting, per Service, in the order their Services started waiting.
#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<ServiceKey>,
    waiting: HashMap<ServiceKey, ServiceWrites>,
}

impl Queue {
    /// Adds `write` to what waits for its Service.
    fn push(&mut self, write: Write) {
        let service = match &write {
            Write::Announcing { service, .. } | Write::Conflict { service, .. } => service,
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
                writes.announced.insert(ip, interface);
            }
            Write::Conflict { note, .. } => {
                if writes.conflicts.len() < MAX_CONFLICTS {
                    writes.conflicts.insert(note);
                }
            }
        }
    }

    /// The first waiting Service that is not being written now (`busy`), with its writes. `busy` holds at most
    /// [`CONCURRENCY`] Services, so this looks at most that many entries past the first.
    fn pop(&mut self, busy: &HashSet<ServiceKey>) -> Option<(ServiceKey, ServiceWrites)> {
        let at = self.order.iter().position(|k| !busy.contains(k))?;
        let service = self.order.remove(at)?;
        let writes = self.waiting.remove(&service)?;
        Some((service, writes))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
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
        });
        tokio::spawn(run(queue.clone(), wake.clone(), context, stop.clone()));
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
async fn run(queue: Arc<Mutex<Queue>>, wake: Arc<Notify>, context: Arc<Context>, stop: CancellationToken) {
    let mut busy = HashSet::new();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < CONCURRENCY {
            let Some((service, writes)) = lock(&queue).pop(&busy) else {
                break;
            };
            busy.insert(service.clone());
            let context = context.clone();
            running.push(async move {
                write(&context, &service, writes).await;
                service
            });
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            Some(done) = running.next(), if !running.is_empty() => {
                busy.remove(&done);
            }
        }
    }
}

/// Writes what waited for `service`: its `announced-by` entries in one patch and an Event per IP; its conflicts as
/// Events.
async fn write(context: &Context, service: &ServiceKey, writes: ServiceWrites) {
    let api: Api<Service> = Api::namespaced(context.client.clone(), &service.namespace);
    // The announcer planned these writes from this store: a Service missing from it now was deleted.
    let Some(stored) = context.services.get(Some(&service.namespace), &service.name) else {
        debug!(%service, "the Service is gone: nothing to record");
        return;
    };
    let node = &context.node;
    let mut regarding = None;
    if !writes.announced.is_empty() {
        match record_announcer(&api, &context.services, stored.clone(), &writes.announced, node).await {
            Ok(reference) => {
                for (ip, interface) in &writes.announced {
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
            Err(e) => warn!(%service, error = %e, "cannot record the announcing node"),
        }
    }
    if writes.conflicts.is_empty() {
        return;
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
}

/// Sets `ip=node` for each of `ips` in the Service's `herald.dev/announced-by` annotation (`ip=node,ip=node`, one
/// entry per Service IP), keeping the entries other nodes wrote for its other IPs. A compare-and-swap on the
/// resourceVersion, so two nodes recording different IPs of one dual-stack Service never lose each other's entry.
///
/// It starts from the reflector's copy (`stored`); when the patch conflicts, it waits for the reflector to show the
/// newer version (at most [`STORE_CATCH_UP`]) and tries again on that. When that copy already holds the entries, nothing is written: the store
/// is at most a watch event behind, and the entry it shows was this node's own write or is this node's by an older
/// holder's record that the watch has not yet replaced; the latter needs a takeover back and forth within one watch
/// delay, which only a broken watch makes possible (and then every decision of this agent is that late).
async fn record_announcer(
    api: &Api<Service>,
    store: &Store<ServiceView>,
    stored: Arc<ServiceView>,
    ips: &BTreeMap<IpAddr, String>,
    node: &str,
) -> Result<ObjectReference, kube::Error> {
    let mut svc = stored;
    let mut attempt = 0;
    loop {
        let existing = svc.annotation(names::ANNOTATION_ANNOUNCED_BY);
        let value = adapter::announced_by(existing, &adapter::status_ips(&svc), ips.keys().copied(), node);
        if existing == Some(value.as_str()) {
            return Ok(svc.object_ref());
        }
        let patch = json!({"metadata": {
            "resourceVersion": svc.resource_version,
            "annotations": {names::ANNOTATION_ANNOUNCED_BY: value},
        }});
        match api
            .patch(&svc.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(patched) => return Ok(patched.object_ref(&())),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < CONFLICT_RETRIES => {
                attempt += 1;
                match newer_copy(store, &svc, svc.resource_version.as_deref()).await {
                    Some(newer) => svc = newer,
                    None => return Err(kube::Error::Api(e)),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The reflector's copy of `service` once its resourceVersion differs from `than` (at most [`STORE_CATCH_UP`]
/// later); `None` if the Service is gone or the reflector did not catch up.
async fn newer_copy(store: &Store<ServiceView>, service: &ServiceView, than: Option<&str>) -> Option<Arc<ServiceView>> {
    let deadline = tokio::time::Instant::now() + STORE_CATCH_UP;
    loop {
        let svc = store.get(Some(&service.namespace), &service.name)?;
        if svc.resource_version.as_deref() != than {
            return Some(svc);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
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
        let mut q = Queue::default();
        q.push(announcing("web", "192.0.2.1", "eth0"));
        q.push(announcing("api", "192.0.2.2", "eth0"));
        q.push(announcing("web", "2001:db8::1", "eth0"));
        q.push(announcing("web", "192.0.2.1", "eth1"));
        q.push(conflict("web", "in use"));
        q.push(conflict("web", "in use"));
        assert_eq!(q.len(), 2, "one entry per Service");
        let (service, writes) = q.pop(&HashSet::new()).unwrap();
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
        assert_eq!(q.pop(&busy).unwrap().0, key("api"));
        assert!(q.pop(&busy).is_none(), "web is busy");
        assert_eq!(q.pop(&HashSet::new()).unwrap().0, key("web"));
        assert!(q.pop(&HashSet::new()).is_none());
        for i in 0..100 {
            q.push(conflict("web", &format!("note {i}")));
        }
        assert_eq!(q.pop(&HashSet::new()).unwrap().1.conflicts.len(), MAX_CONFLICTS);
    }

    #[test]
    fn ten_thousand_ips_at_once_wait_as_one_entry_per_service() {
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
        while let Some((_, w)) = q.pop(&HashSet::new()) {
            ips += w.announced.len();
        }
        assert_eq!(ips, 10_000, "nothing dropped");
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
        // The store as the reflector would fill it, by hand: it shows every Service as it is now; then s1 changes,
        // so the store's copy of s1 is stale and its patch conflicts. The store gets s1's new version only once the
        // conflict happened (a watch event that arrives late), and the writer patches s1 again on that copy.
        let mut store_writer = crate::store::Writer::new();
        let store = store_writer.store();
        for svc in api.list(&Default::default()).await.unwrap().items {
            store_writer.apply(watcher::Event::Apply(ServiceView::from(svc)));
        }
        let behind = json!({"metadata": {"annotations": {"unrelated": "x"}}});
        api.patch("s1", &PatchParams::default(), &Patch::Merge(&behind))
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let reporter = Reporter {
            controller: "test".into(),
            instance: None,
        };
        let events = EventPublisher::spawn(client.clone(), reporter, None, cancel.clone());
        let before = lab.metrics();
        let writer = Writer::spawn(client.clone(), store, events, "n1".into(), cancel.clone());
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
}
