//! Prometheus metrics and the health endpoints (`/metrics`, `/healthz`, `/readyz`) of `herald agent`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use herald_bgp::PeerStatus;
use herald_election::ElectionMetrics;
use herald_l2::CountersSnapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::credentials::Credentials;

/// Labels of `herald_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// Labels of write counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `service_status`, `service_annotation`, `eip_status`, `event`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels naming an Eip.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EipLabels {
    /// The Eip.
    pub eip: String,
}

/// Labels of `herald_allocator_eip_addresses`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EipFamilyLabels {
    /// The Eip.
    pub eip: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// `total`, `used` or `free`.
    pub state: &'static str,
}

/// Labels naming a kind of Lease: `ip` or `node`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseKindLabels {
    /// `ip` or `node`.
    pub kind: &'static str,
}

/// Labels of `herald_address_checks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `free`, `taken` or `inconclusive`.
    pub outcome: &'static str,
}

/// The address prober's metrics.
#[derive(Clone, Debug)]
pub struct ProberMetrics {
    /// Checks of a pool's addresses (`herald_l2::InterfaceHandle::check`), by what they found.
    pub checks: Family<CheckLabels, Counter>,
}

impl ProberMetrics {
    /// What `checks` counts, by `outcome`: nobody answered; another host answers for the address (a conflict); or
    /// nothing learnt (another node probing it too, the check abandoned or failed, the answer a Herald node's).
    pub const OUTCOMES: [&'static str; 3] = ["free", "taken", "inconclusive"];

    /// Every outcome at 0.
    fn new() -> Self {
        let checks = Family::<CheckLabels, Counter>::default();
        for outcome in Self::OUTCOMES {
            checks.get_or_create(&CheckLabels { outcome }).inc_by(0);
        }
        ProberMetrics { checks }
    }
}

/// The allocator controller's metrics.
#[derive(Default)]
pub struct AllocatorMetrics {
    /// 1 while this agent holds the allocator Lease.
    pub leader: Gauge,
    /// Reconcile passes run.
    pub passes: Counter,
    /// API writes made, by kind and result.
    pub writes: Family<WriteLabels, Counter>,
    /// Services holding addresses.
    pub services_allocated: Gauge,
    /// Addresses in use per Eip.
    pub eip_used: Family<EipLabels, Gauge>,
    /// Addresses per Eip, family and state (a float: an IPv6 pool can hold more than 2^63).
    pub eip_addresses: Family<EipFamilyLabels, Gauge<f64, AtomicU64>>,
    /// Leases deleted by the garbage collector, by kind.
    pub leases_collected: Family<LeaseKindLabels, Counter>,
}

impl AllocatorMetrics {
    /// What `writes` counts, by `kind`.
    pub const WRITE_KINDS: [&'static str; 5] = [
        "service_status",
        "service_annotation",
        "eip_status",
        "event",
        "lease_delete",
    ];
    /// What `leases_collected` counts, by `kind`.
    pub const LEASE_KINDS: [&'static str; 2] = ["ip", "node"];

    /// Every counter at 0 with each of its label sets, so a rate or an alert has a series before the first event.
    fn new() -> Self {
        let m = AllocatorMetrics::default();
        for kind in Self::WRITE_KINDS {
            for result in ["ok", "error"] {
                m.writes.get_or_create(&WriteLabels { kind, result }).inc_by(0);
            }
        }
        for kind in Self::LEASE_KINDS {
            m.leases_collected.get_or_create(&LeaseKindLabels { kind }).inc_by(0);
        }
        m
    }
}

type InterfaceCounters = Box<dyn Fn() -> Vec<(String, CountersSnapshot)> + Send + Sync>;

/// The announcer's metrics. Election and ARP/NDP counters live in their crates; they are read on each scrape.
#[derive(Default)]
pub struct AnnouncerMetrics {
    /// Layer 2 IPs this agent takes part in the election for.
    pub desired: Gauge,
    election: Mutex<Option<Arc<ElectionMetrics>>>,
    interfaces: Mutex<Option<InterfaceCounters>>,
    /// Interfaces this node answers on when it wins an IP: their counters read 0 until the engine attaches them.
    l2_interfaces: Mutex<BTreeSet<String>>,
    /// Every configured BGP peer's live status (the speaker's own watch channels, read at each scrape).
    bgp_peers: Mutex<Vec<watch::Receiver<PeerStatus>>>,
    /// This node's name and the IPs it announces: Layer 2 (the election's live set) and BGP (the routes offered).
    announced: Mutex<Announced>,
}

/// What [`AnnouncerMetrics`] knows of the IPs this node announces.
#[derive(Default)]
struct Announced {
    node: String,
    layer2: Option<watch::Receiver<BTreeSet<IpAddr>>>,
    bgp: Vec<IpAddr>,
}

impl std::fmt::Debug for AnnouncerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnouncerMetrics").finish_non_exhaustive()
    }
}

impl AnnouncerMetrics {
    /// Exposes the election task's counters.
    pub fn set_election(&self, m: Arc<ElectionMetrics>) {
        *self.election.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
    }

    /// Exposes the IPs `node` answers ARP/NDP for, live from the election.
    pub fn set_layer2_announced(&self, node: &str, announced: watch::Receiver<BTreeSet<IpAddr>>) {
        let mut a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        a.node = node.to_string();
        a.layer2 = Some(announced);
    }

    /// The IPs this node offers its BGP peers (replacing the previous set).
    pub fn set_bgp_announced(&self, ips: Vec<IpAddr>) {
        self.announced.lock().unwrap_or_else(|e| e.into_inner()).bgp = ips;
    }

    /// Exposes these BGP peers' sessions (replacing the previous set: call it whenever the peers change).
    pub fn set_bgp_peers(&self, peers: Vec<watch::Receiver<PeerStatus>>) {
        *self.bgp_peers.lock().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    /// The interfaces this node takes part in Layer 2 elections on (replacing the previous set): each one's counters
    /// are exposed, at 0 until the engine attaches it, so alerts on them see a node that has not won an IP yet.
    pub fn set_l2_interfaces(&self, names: BTreeSet<String>) {
        *self.l2_interfaces.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// Exposes per-interface ARP/NDP counters through `read`.
    pub fn set_interfaces(&self, read: impl Fn() -> Vec<(String, CountersSnapshot)> + Send + Sync + 'static) {
        *self.interfaces.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(read));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnouncedLabels {
    ip: String,
    node: String,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerStateLabels {
    peer: String,
    state: String,
}

/// The RFC 4271 states, each a series of `herald_bgp_session_state` (1 for the current one).
const BGP_STATES: [&str; 6] = ["Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"];

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for AnnouncerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = self
            .election
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|m| m.snapshot())
            // Before the election starts every counter reads 0, like the other families.
            .unwrap_or_default();
        counter(
            &mut encoder,
            "election_lease_writes",
            "Lease creates/replaces sent",
            m.lease_writes,
        )?;
        counter(&mut encoder, "election_lease_reads", "Lease GETs sent", m.lease_reads)?;
        counter(
            &mut encoder,
            "election_lost_races",
            "Lease writes that lost a CAS race (409)",
            m.lost_races,
        )?;
        counter(
            &mut encoder,
            "election_api_errors",
            "API errors other than lost races",
            m.api_errors,
        )?;
        counter(
            &mut encoder,
            "election_ownership_changes",
            "Times this agent started/stopped holding an IP",
            m.ownership_changes,
        )?;
        counter(
            &mut encoder,
            "election_wire_yields",
            "IPs withdrawn because another MAC claimed them",
            m.wire_yields,
        )?;
        let g = ConstGauge::new(m.announced as i64);
        g.encode(encoder.encode_descriptor(
            "announced_ips",
            "IPs this agent answers ARP/NDP for",
            None,
            g.metric_type(),
        )?)?;
        let mut interfaces: BTreeMap<String, CountersSnapshot> = self
            .interfaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|read| read())
            .unwrap_or_default()
            .into_iter()
            .collect();
        for name in self.l2_interfaces.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            interfaces.entry(name.clone()).or_default();
        }
        let peers: Vec<PeerStatus> = self
            .bgp_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| r.borrow().clone())
            .collect();
        encode_bgp(&mut encoder, &peers)?;
        let (node, layer2, bgp) = {
            let a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
            let layer2: Vec<IpAddr> = a
                .layer2
                .as_ref()
                .map(|r| r.borrow().iter().copied().collect())
                .unwrap_or_default();
            (a.node.clone(), layer2, a.bgp.clone())
        };
        let g = ConstGauge::new(1i64);
        let mut family = encoder.encode_descriptor(
            "announced_ip",
            "1 for each IP this node announces, by mode (layer2: it answers ARP/NDP; bgp: it offers the route)",
            None,
            g.metric_type(),
        )?;
        for (mode, ips) in [("layer2", layer2), ("bgp", bgp)] {
            for ip in ips {
                let labels = AnnouncedLabels {
                    ip: ip.to_string(),
                    node: node.clone(),
                    mode,
                };
                ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, pick) in L2_COUNTERS {
            let c = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            for (interface, snap) in &interfaces {
                let labels = InterfaceLabels {
                    interface: interface.clone(),
                };
                ConstCounter::new(pick(snap)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Per-peer BGP series: session state, prefixes announced, messages. Every family is present (empty) with no peer.
fn encode_bgp(encoder: &mut DescriptorEncoder<'_>, peers: &[PeerStatus]) -> Result<(), std::fmt::Error> {
    let label = |p: &PeerStatus| PeerLabels {
        peer: p.address.to_string(),
    };
    let g = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(
        "bgp_session_up",
        "1 while the BGP session to the peer is Established",
        None,
        g.metric_type(),
    )?;
    for p in peers {
        ConstGauge::new(i64::from(p.state.to_string() == "Established")).encode(family.encode_family(&label(p))?)?;
    }
    let mut family = encoder.encode_descriptor(
        "bgp_session_state",
        "1 for the BGP session's current RFC 4271 state",
        None,
        g.metric_type(),
    )?;
    for p in peers {
        let current = p.state.to_string();
        for state in BGP_STATES {
            let labels = PeerStateLabels {
                peer: p.address.to_string(),
                state: state.to_string(),
            };
            ConstGauge::new(i64::from(current == state)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "bgp_announced_prefixes",
        "Prefixes announced to the peer",
        None,
        g.metric_type(),
    )?;
    for p in peers {
        ConstGauge::new(p.prefixes_sent as i64).encode(family.encode_family(&label(p))?)?;
    }
    let mut family = encoder.encode_descriptor(
        "bgp_bfd_up",
        "1 while the BFD session to the peer is Up (peers with BFD on only)",
        None,
        g.metric_type(),
    )?;
    for p in peers {
        if let Some(bfd) = p.bfd {
            ConstGauge::new(i64::from(bfd.state == herald_bfd::State::Up)).encode(family.encode_family(&label(p))?)?;
        }
    }
    for (name, help, pick) in BGP_COUNTERS {
        let c = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(name, help, None, c.metric_type())?;
        for p in peers {
            ConstCounter::new(pick(p)).encode(family.encode_family(&label(p))?)?;
        }
    }
    Ok(())
}

/// `process_*` metrics of this process from /proc (the names Prometheus' client libraries use): resident and
/// virtual memory, CPU time, open file descriptors, threads, start time.
#[derive(Debug)]
struct ProcessMetrics;

/// Clock ticks per second of the times in /proc (USER_HZ, 100 on every Linux architecture Herald runs on).
const USER_HZ: f64 = 100.0;

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessSample::read() else {
            return Ok(());
        };
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.rss_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            p.vsize_bytes,
        )?;
        gauge(&mut encoder, "process_open_fds", "Open file descriptors", p.open_fds)?;
        gauge(&mut encoder, "process_threads", "OS threads", p.threads)?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            p.start_time_seconds,
        )?;
        let c = ConstCounter::new(p.cpu_seconds);
        c.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent in seconds",
            None,
            c.metric_type(),
        )?)
    }
}

/// One reading of /proc/self.
#[derive(Debug, PartialEq)]
struct ProcessSample {
    rss_bytes: f64,
    vsize_bytes: f64,
    cpu_seconds: f64,
    open_fds: f64,
    threads: f64,
    start_time_seconds: f64,
}

impl ProcessSample {
    fn read() -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Self::parse(&stat, &status, &boot, open_fds)
    }

    /// From the text of /proc/self/stat, /proc/self/status and /proc/stat (pure, for the tests).
    fn parse(stat: &str, status: &str, proc_stat: &str, open_fds: usize) -> Option<ProcessSample> {
        // The command name (field 2) is in parentheses and may hold spaces: count fields after its `)`.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
        // proc(5) numbering: state is field 3, i.e. fields[0]; utime 14, stime 15, starttime 22, vsize 23.
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        };
        let btime = proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<f64>()
            .ok()?;
        Some(ProcessSample {
            rss_bytes: kib("VmRSS:")? * 1024.0,
            vsize_bytes: field(23)?,
            cpu_seconds: (field(14)? + field(15)?) / USER_HZ,
            open_fds: open_fds as f64,
            threads: kib("Threads:")?,
            start_time_seconds: btime + field(22)? / USER_HZ,
        })
    }
}

type PickPeer = fn(&PeerStatus) -> u64;
const BGP_COUNTERS: [(&str, &str, PickPeer); 6] = [
    (
        "bgp_sessions_established",
        "Times the session reached Established",
        |p| p.established_count,
    ),
    ("bgp_updates_sent", "UPDATE messages sent", |p| p.updates_sent),
    ("bgp_updates_received", "UPDATE messages received", |p| {
        p.updates_received
    }),
    ("bgp_notifications_sent", "NOTIFICATION messages sent", |p| {
        p.notifications_sent
    }),
    ("bgp_notifications_received", "NOTIFICATION messages received", |p| {
        p.notifications_received
    }),
    ("bgp_bfd_downs", "Times BFD took the session down", |p| p.bfd_downs),
];

type Pick = fn(&CountersSnapshot) -> u64;
const L2_COUNTERS: [(&str, &str, Pick); 6] = [
    (
        "l2_requests_seen",
        "ARP requests and Neighbor Solicitations received",
        |s| s.requests_seen,
    ),
    ("l2_requests_answered", "Requests answered for announced IPs", |s| {
        s.requests_answered
    }),
    (
        "l2_gratuitous_sent",
        "Gratuitous ARP and unsolicited NA frames sent",
        |s| s.gratuitous_sent,
    ),
    (
        "l2_conflicts",
        "Frames from another host claiming one of our IPs",
        |s| s.conflicts,
    ),
    ("l2_malformed_dropped", "Malformed frames dropped", |s| {
        s.malformed_dropped
    }),
    ("l2_send_errors", "Frames the socket refused to send", |s| s.send_errors),
];

/// Everything `/metrics` shows, and the readiness flag.
pub struct Metrics {
    registry: Registry,
    /// Allocator metrics.
    pub allocator: Arc<AllocatorMetrics>,
    /// Announcer metrics.
    pub announcer: Arc<AnnouncerMetrics>,
    /// Address prober metrics.
    pub prober: ProberMetrics,
    /// Whether the API server accepts the agent's credentials (not ready while it does not).
    pub credentials: Arc<Credentials>,
    ready: AtomicBool,
}

impl Metrics {
    /// A registry with every Herald metric registered under the `herald_` prefix.
    pub fn new() -> Arc<Self> {
        // Herald's own metrics under `herald_`; the process metrics under their conventional `process_` names.
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessMetrics));
        let registry = root.sub_registry_with_prefix("herald");
        let allocator = Arc::new(AllocatorMetrics::new());
        let a = registry.sub_registry_with_prefix("allocator");
        a.register(
            "leader",
            "1 while this agent holds the allocator Lease",
            allocator.leader.clone(),
        );
        a.register("passes", "Reconcile passes", allocator.passes.clone());
        a.register("writes", "API writes by kind and result", allocator.writes.clone());
        a.register(
            "services_allocated",
            "Services holding addresses",
            allocator.services_allocated.clone(),
        );
        a.register(
            "eip_used_addresses",
            "Addresses in use per Eip",
            allocator.eip_used.clone(),
        );
        a.register(
            "eip_addresses",
            "Addresses per Eip, family (ipv4, ipv6) and state (total, used, free); the allocator's leader only",
            allocator.eip_addresses.clone(),
        );
        a.register(
            "leases_collected",
            "Unused IP leases and leases of removed nodes deleted, by kind",
            allocator.leases_collected.clone(),
        );
        let announcer = Arc::new(AnnouncerMetrics::default());
        registry.register(
            "desired_l2_ips",
            "Layer 2 IPs this agent takes part in the election for",
            announcer.desired.clone(),
        );
        registry.register_collector(Box::new(announcer.clone()));
        let prober = ProberMetrics::new();
        registry.register(
            "address_checks",
            "Checks of Layer 2 pools' next free addresses by outcome (free, taken: another host answers, inconclusive)",
            prober.checks.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: env!("HERALD_REVISION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the version and commit of this binary",
            build,
        );
        let credentials = Arc::new(Credentials::default());
        let api = registry.sub_registry_with_prefix("api");
        api.register(
            "credentials_rejected",
            "1 while the API server rejects the agent's credentials (401 Unauthorized: token revoked or expired)",
            credentials.rejected_gauge.clone(),
        );
        api.register(
            "unauthorized_responses",
            "API responses 401 Unauthorized",
            credentials.unauthorized.clone(),
        );
        Arc::new(Self {
            registry: root,
            allocator,
            announcer,
            prober,
            credentials,
            ready: AtomicBool::new(false),
        })
    }

    /// Marks the agent ready (`/readyz` answers 200).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The registry, for components that register their own metrics before the server starts.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.credentials.rejected() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the API server rejects this agent's credentials (401 Unauthorized)",
        )
    } else if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `cancel` fires.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, cancel: CancellationToken) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_sample_parses_proc() {
        // A command name with spaces and a parenthesis, as /proc allows.
        let stat = "4242 (herald (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 150 0 0 20 0 7 0 123400 \
                    52428800 2000 18446744073709551615";
        let status = "Name:\therald\nVmRSS:\t   20480 kB\nThreads:\t7\n";
        let proc_stat = "cpu  1 2 3\nbtime 1764633600\nprocesses 9\n";
        let p = ProcessSample::parse(stat, status, proc_stat, 12).unwrap();
        assert_eq!(
            p,
            ProcessSample {
                rss_bytes: 20480.0 * 1024.0,
                vsize_bytes: 52428800.0,
                cpu_seconds: 4.0,
                open_fds: 12.0,
                threads: 7.0,
                start_time_seconds: 1764633600.0 + 1234.0,
            }
        );
        assert_eq!(ProcessSample::parse("garbage", status, proc_stat, 1), None);
    }

    /// An interface this node takes part in elections on has its ARP/NDP counters at 0 before the engine attaches
    /// it (the node won no IP yet); an attached one shows the engine's counts.
    #[test]
    fn interface_counters_are_exposed_before_the_first_ip_is_won() {
        let m = Metrics::new();
        m.announcer.set_interfaces(|| {
            vec![(
                "eth1".to_string(),
                CountersSnapshot {
                    conflicts: 2,
                    ..Default::default()
                },
            )]
        });
        m.announcer
            .set_l2_interfaces(BTreeSet::from(["eth0".to_string(), "eth1".to_string()]));
        let text = m.encode().unwrap();
        for line in [
            "herald_l2_conflicts_total{interface=\"eth0\"} 0",
            "herald_l2_requests_seen_total{interface=\"eth0\"} 0",
            "herald_l2_conflicts_total{interface=\"eth1\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        m.announcer.set_l2_interfaces(BTreeSet::new());
        let text = m.encode().unwrap();
        assert!(!text.contains("interface=\"eth0\""), "a gone interface goes:\n{text}");
    }

    /// A refused listen keeps its cause as the error's source (the log's `{e:#}` and a caller's `downcast` see
    /// the OS error), not flattened into text.
    #[tokio::test]
    async fn a_refused_listen_keeps_its_cause() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = serve(addr, Metrics::new(), CancellationToken::new()).await.unwrap_err();
        assert_eq!(e.to_string(), format!("cannot listen on --metrics-addr {addr}"));
        let cause = e.chain().nth(1).and_then(|c| c.downcast_ref::<std::io::Error>());
        assert_eq!(cause.map(|c| c.kind()), Some(std::io::ErrorKind::AddrInUse), "{e:#}");
    }

    #[test]
    fn every_family_is_exposed_before_its_first_event() {
        let m = Metrics::new();
        let text = m.encode().unwrap();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "herald_build_info",
            "herald_api_credentials_rejected 0",
            "herald_api_unauthorized_responses_total 0",
            "# TYPE herald_bgp_session_up gauge",
            "# TYPE herald_l2_requests_seen counter",
            "herald_allocator_passes_total 0",
            "herald_allocator_writes_total{kind=\"service_status\",result=\"ok\"} 0",
            "herald_allocator_writes_total{kind=\"lease_delete\",result=\"error\"} 0",
            "herald_allocator_leases_collected_total{kind=\"node\"} 0",
            "herald_election_lease_writes_total 0",
            "herald_election_wire_yields_total 0",
            "herald_announced_ips 0",
            "herald_address_checks_total{outcome=\"taken\"} 0",
        ] {
            assert!(text.contains(name), "{name} in:\n{text}");
        }
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1e6, "this test process has some memory: {rss}");
    }
}
