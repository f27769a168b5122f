//! The soak itself: builds the cluster, the router, the Services and the client, then draws events and checks the
//! invariants until the time is up (see the module docs of [`super`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::IpAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::Netns;
use crate::cluster::kube::ApiServerKind;
use crate::cluster::{
    CLIENT_MAC, Cluster, ClusterOptions, EIP_ADDRESSES, EIP_NAME, HERALD_NAMESPACE, ServiceSpec, epoch_now,
};

/// What the soak runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of every random choice (events, their timing, the Services made).
    pub seed: u64,
    /// How long events are drawn.
    pub duration: Duration,
    /// The API server (`None`: `HERALD_TEST_APISERVER`).
    pub apiserver: Option<ApiServerKind>,
    /// Seconds the API server stays down in an [`Event::ApiDown`].
    pub api_down: (u64, u64),
    /// Seconds between two events.
    pub pause: (u64, u64),
    /// How often the client asks for every Layer 2 IP.
    pub probe_interval: Duration,
    /// How long a wrong state may last after a change before it is a violation.
    pub bound: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 0,
            duration: Duration::from_secs(180),
            apiserver: None,
            api_down: (30, 90),
            pause: (1, 10),
            probe_interval: Duration::from_millis(20),
            bound: Duration::from_secs(30),
        }
    }
}

/// The BGP Eip.
const BGP_EIP: &str = "routed";
const BGP_EIP_ADDRESSES: [&str; 2] = ["203.0.113.0/27", "2001:db8:2::/120"];
/// The range an [`Event::EipEdit`] adds to the Layer 2 Eip and removes again.
const SPARE_RANGE: &str = "192.0.2.96-192.0.2.99";
const ROUTER_AS: u32 = 64500;
const CLUSTER_AS: u32 = 64512;
/// The agents' memory limit in deploy/herald.yaml: more is a violation. (Its request, 80 MiB, is reported.)
const RSS_LIMIT_MIB: f64 = 256.0;

/// One event as it ran.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub kind: Kind,
    pub what: String,
    /// When it began and when its last action (the undo) was done, epoch seconds.
    pub start: f64,
    pub end: f64,
}

/// What a soak found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub apiserver: String,
    pub minutes: f64,
    pub events: Vec<EventRecord>,
    pub violations: Vec<String>,
    /// Per kind: the longest no-answer gap of any Layer 2 IP between the event's start and the next event (s).
    pub gaps: BTreeMap<Kind, Vec<f64>>,
    /// Per kind: how long after a change the Layer 2 answers matched the eligible nodes again (s).
    pub l2_settle: BTreeMap<Kind, Vec<f64>>,
    /// Per kind: how long after a change the router's routes matched the eligible nodes again (s).
    pub bgp_settle: BTreeMap<Kind, Vec<f64>>,
    /// Two MACs in one round only (a crossing answer at a hand-over), and sustained (two rounds) while the API was
    /// away (allowed by `--api-outage=hold`).
    pub crossing: u64,
    pub overlap_api_away: u64,
    pub max_rss_mib: f64,
    pub max_leases: usize,
    pub l2_ips: usize,
    pub bgp_ips: usize,
    pub probe_answers: u64,
    /// Per kind and `l2`/`bgp`: changes followed by another change before the state was right (no settle time).
    pub unsettled: BTreeMap<(Kind, &'static str), u32>,
    /// Gaps that overlapped an API outage (left out of the per-event gaps), and the longest of them (s).
    pub outage_gaps: usize,
    pub longest_outage_gap: f64,
    /// Checks skipped because the router's last answer was more than 2 s old.
    pub rib_stale: u64,
    /// The five longest gaps, each with the event before it.
    pub longest_gaps: Vec<String>,
}

impl Report {
    /// The table the binary prints and docs/testing.md shows.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chaos: seed {}, {:.1} min, {}: {} events, {} Layer 2 IPs and {} BGP IPs at the start, {} violations",
            self.seed,
            self.minutes,
            self.apiserver,
            self.events.len(),
            self.l2_ips,
            self.bgp_ips,
            self.violations.len()
        );
        let _ = writeln!(
            out,
            "\n| event | count | longest L2 gap (no API outage) p50 / p99 / max | L2 answers right again p50 / p99 / max | BGP routes right again p50 / p99 / max |\n|---|---:|---:|---:|---:|"
        );
        let fmt = |v: Option<&Vec<f64>>| match v.and_then(|v| p50_p99_max(v)) {
            Some((a, b, c)) => format!("{} / {} / {}", secs(a), secs(b), secs(c)),
            None => "-".into(),
        };
        for kind in Kind::ALL {
            let n = self.events.iter().filter(|e| e.kind == kind).count();
            if n == 0 {
                continue;
            }
            let open = |family| match self.unsettled.get(&(kind, family)) {
                Some(n) => format!(" ({n} changed again first)"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "| {kind} | {n} | {} | {}{} | {}{} |",
                fmt(self.gaps.get(&kind)),
                fmt(self.l2_settle.get(&kind)),
                open("l2"),
                fmt(self.bgp_settle.get(&kind)),
                open("bgp")
            );
        }
        let _ = writeln!(
            out,
            "\nrouter checks skipped (its answer older than 2 s): {}; client answers seen: {}; two MACs in one round only (a crossing answer): {}; two MACs for two rounds while \
             the API was away (hold): {}",
            self.rib_stale, self.probe_answers, self.crossing, self.overlap_api_away
        );
        let _ = writeln!(
            out,
            "largest agent RSS: {:.1} MiB (request 80 MiB, limit {RSS_LIMIT_MIB:.0} MiB); most Leases in {HERALD_NAMESPACE}: {}",
            self.max_rss_mib, self.max_leases
        );
        let _ = writeln!(
            out,
            "gaps that overlapped an API outage (left out of the table: a node that dies during one stays dark until the \
             API is back): {}, the longest {}",
            self.outage_gaps,
            secs(self.longest_outage_gap)
        );
        let _ = writeln!(out, "longest Layer 2 gaps (all):");
        for g in &self.longest_gaps {
            let _ = writeln!(out, "- {g}");
        }
        if self.violations.is_empty() {
            let _ = writeln!(out, "\nno invariant violated");
        } else {
            let _ = writeln!(out, "\nVIOLATIONS (seed {} replays the events):", self.seed);
            for v in &self.violations {
                let _ = writeln!(out, "- {v}");
            }
        }
        out
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}

/// A Service of the soak as it runs.
struct Live {
    spec: SvcSpec,
    /// Its IPs, once the allocator gave them.
    ips: Vec<IpAddr>,
    created: f64,
    /// A violation about it was reported (one per Service).
    reported: bool,
}

/// What the client last saw of one Layer 2 IP.
#[derive(Default)]
struct Seen {
    mac: Option<String>,
    down: bool,
}

/// The client process.
struct Probe {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Probe {
    fn add(&mut self, ip: IpAddr) {
        let _ = writeln!(self.stdin, "+{ip}");
        let _ = self.stdin.flush();
    }

    fn remove(&mut self, ip: IpAddr) {
        let _ = writeln!(self.stdin, "-{ip}");
        let _ = self.stdin.flush();
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The router's routes, polled in the background: prefix address → next-hop nodes (`usize::MAX`: not a node).
/// With the time (epoch seconds) the router was asked, before it answered.
type Rib = Arc<Mutex<Option<(f64, BTreeMap<IpAddr, BTreeSet<usize>>)>>>;

struct RibPoller {
    rib: Rib,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RibPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The node of a next hop the router shows.
fn hop_node(hop: &str) -> usize {
    (1..=NODES)
        .find(|i| hop == format!("192.0.2.1{i}") || hop == format!("2001:db8:1::1{i}"))
        .map(|i| i - 1)
        .unwrap_or(usize::MAX)
}

/// `gobgp global rib -a FAMILY` lines: `*> 203.0.113.1/32  192.0.2.11  64512 ...` (one line per path).
fn parse_rib(text: &str, into: &mut BTreeMap<IpAddr, BTreeSet<usize>>) {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(pos) = words
            .iter()
            .position(|w| w.contains('/') && w.parse::<ipnet_like::Net>().is_ok())
        else {
            continue;
        };
        let (Some(prefix), Some(hop)) = (words.get(pos), words.get(pos + 1)) else {
            continue;
        };
        if let Ok(net) = prefix.parse::<ipnet_like::Net>() {
            into.entry(net.0).or_default().insert(hop_node(hop));
        }
    }
}

/// A host prefix (`203.0.113.1/32`): the routes Herald announces.
mod ipnet_like {
    use std::net::IpAddr;
    use std::str::FromStr;

    pub struct Net(pub IpAddr);

    impl FromStr for Net {
        type Err = ();
        fn from_str(s: &str) -> Result<Net, ()> {
            let (addr, len) = s.split_once('/').ok_or(())?;
            let _: u8 = len.parse().map_err(drop)?;
            Ok(Net(addr.parse().map_err(drop)?))
        }
    }
}

/// The undo of a fault, due later.
#[derive(Clone, Copy, Debug)]
enum Undo {
    Restart(usize),
    LinkUp(usize),
    RestoreApi(usize),
    StartApi,
}

struct Pending {
    due: Instant,
    undo: Undo,
    /// Index of the event in the report.
    event: usize,
    kind: Kind,
}

struct Soak {
    c: Cluster,
    router: Netns,
    opts: Options,
    rng: StdRng,
    svcs: Vec<Option<Live>>,
    nodes: [NodeFacts; NODES],
    api_down: bool,
    /// Until when two MACs are allowed (the API away from some node, and a moment after).
    api_away_until: f64,
    /// When a Service's IPs last changed (given, or the Service deleted): the Eip status follows within seconds.
    last_ip_change: f64,
    /// The kind of the event that made the last change, for the settle statistics, while the state is not right.
    pending_l2: Option<(Kind, f64)>,
    pending_bgp: Option<(Kind, f64)>,
    seen: BTreeMap<IpAddr, Seen>,
    gaps: Vec<(IpAddr, f64, f64)>,
    /// Wrong states: key → since when.
    wrong: BTreeMap<String, f64>,
    /// Wrong states already reported as violations (until they are right again).
    reported: BTreeSet<String>,
    report: Report,
    probe: Probe,
    rib: RibPoller,
    spare_range: bool,
    communities: bool,
    log_seen: [usize; NODES],
    last_api_check: Instant,
    last_slow_check: Instant,
    current: Kind,
    pending: Vec<Pending>,
    /// API server outages (stopped, until started again), epoch seconds.
    api_outages: Vec<(f64, f64)>,
    /// Which Service held each IP (the last one), for the report.
    ip_owner: BTreeMap<IpAddr, String>,
}

/// Runs the soak; the report lists every violation (the caller decides what a violation means).
pub fn run(opts: Options) -> Result<Report> {
    println!(
        "chaos: seed {} (replay: --seed {}), {:?}, events every {}–{} s",
        opts.seed, opts.seed, opts.duration, opts.pause.0, opts.pause.1
    );
    let mut soak = Soak::start(opts)?;
    let result = soak.soak();
    if result.is_err() || !soak.report.violations.is_empty() {
        soak.c.lab.mark_failed();
        soak.c.apiserver.print_failure_report();
    }
    result?;
    Ok(std::mem::take(&mut soak.report))
}

impl Soak {
    fn start(opts: Options) -> Result<Soak> {
        let options = ClusterOptions {
            nodes: NODES,
            apiserver: opts.apiserver,
            ..Default::default()
        };
        let mut c = Cluster::start("chaos", &options)?;
        let router = c.lab.netns("rt");
        let switch = c.switch.clone();
        c.lab.attach(&switch, "lan", "l-rt", &router, "eth0")?;
        c.lab.addr(&router, "eth0", "192.0.2.1/24")?;
        c.lab.addr(&router, "eth0", "2001:db8:1::1/64")?;
        let mut conf = format!("[global.config]\n  as = {ROUTER_AS}\n  router-id = \"192.0.2.1\"\n");
        for i in 1..=NODES {
            for (addr, family) in [
                (format!("192.0.2.1{i}"), "ipv4-unicast"),
                (format!("2001:db8:1::1{i}"), "ipv6-unicast"),
            ] {
                let _ = write!(
                    conf,
                    "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {CLUSTER_AS}\n  \
                     [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n"
                );
            }
        }
        let path = c.lab.dir().join("gobgpd.toml");
        std::fs::write(&path, conf)?;
        c.lab
            .spawn(&router, "gobgpd", &["gobgpd", "-f", &path.to_string_lossy()])?;
        c.apply(&format!(
            "apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {{name: default}}\nspec: {{asn: {CLUSTER_AS}}}\n---\n\
             apiVersion: herald.dev/v1alpha1\nkind: BgpPeer\nmetadata: {{name: rt4}}\n\
             spec: {{address: 192.0.2.1, asn: {ROUTER_AS}, holdTime: 9, families: [ipv4]}}\n---\n\
             apiVersion: herald.dev/v1alpha1\nkind: BgpPeer\nmetadata: {{name: rt6}}\n\
             spec: {{address: \"2001:db8:1::1\", asn: {ROUTER_AS}, holdTime: 9, families: [ipv6]}}\n---\n{}",
            bgp_eip_yaml(false)
        ))?;

        let mut rng = StdRng::seed_from_u64(opts.seed);
        let specs = initial_services(&mut rng);
        let yaml: Vec<String> = specs.iter().map(service_yaml).collect();
        c.apply(&yaml.join("---\n"))?;
        for s in specs.iter().filter(|s| s.local) {
            set_endpoints(&c, s)?;
        }
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let ips = c.wait_service_ips(&names, Duration::from_secs(120))?;
        let now = epoch_now();
        let svcs: Vec<Option<Live>> = specs
            .into_iter()
            .map(|spec| {
                let ips = ips.get(&spec.name).cloned().unwrap_or_default();
                Some(Live {
                    spec,
                    ips,
                    created: now,
                    reported: false,
                })
            })
            .collect();
        let l2: BTreeSet<IpAddr> = svcs
            .iter()
            .flatten()
            .filter(|s| s.spec.mode == Mode::L2)
            .flat_map(|s| s.ips.clone())
            .collect();
        let bgp: BTreeSet<IpAddr> = svcs
            .iter()
            .flatten()
            .filter(|s| s.spec.mode == Mode::Bgp)
            .flat_map(|s| s.ips.clone())
            .collect();
        let probe = start_probe(&c, &l2, opts.probe_interval)?;
        let rib = start_rib_poller(&router);
        let report = Report {
            seed: opts.seed,
            apiserver: c.apiserver_kind().describe().to_string(),
            l2_ips: l2.len(),
            bgp_ips: bgp.len(),
            ..Default::default()
        };
        println!(
            "chaos: {} Services, {} Layer 2 IPs (probed every {:?}), {} BGP IPs",
            svcs.len(),
            l2.len(),
            opts.probe_interval,
            bgp.len()
        );
        Ok(Soak {
            c,
            router,
            rng,
            svcs,
            nodes: [NodeFacts::default(); NODES],
            api_down: false,
            api_away_until: 0.0,
            last_ip_change: now,
            pending_l2: Some((Kind::Create, now)),
            pending_bgp: Some((Kind::Create, now)),
            seen: l2.iter().map(|ip| (*ip, Seen::default())).collect(),
            gaps: Vec::new(),
            wrong: BTreeMap::new(),
            reported: BTreeSet::new(),
            report,
            probe,
            rib,
            spare_range: false,
            communities: false,
            log_seen: [0; NODES],
            last_api_check: Instant::now(),
            last_slow_check: Instant::now(),
            current: Kind::Create,
            pending: Vec::new(),
            ip_owner: BTreeMap::new(),
            api_outages: Vec::new(),
            opts,
        })
    }

    fn soak(&mut self) -> Result<()> {
        // Everything announced before the first event.
        self.wait_right(Duration::from_secs(90))
            .context("the cluster did not settle before the first event")?;
        self.pending_l2 = None;
        self.pending_bgp = None;
        let start = Instant::now();
        let start_epoch = epoch_now();
        let mut next = Instant::now();
        loop {
            self.tick();
            while let Some(pos) = self.pending.iter().position(|p| p.due <= Instant::now()) {
                let p = self.pending.remove(pos);
                self.current = p.kind;
                self.undo(p.undo)?;
                self.report.events[p.event].end = epoch_now();
            }
            let drawing = start.elapsed() < self.opts.duration;
            if !drawing && self.pending.is_empty() {
                break;
            }
            let situation = self.situation();
            let event = if drawing && Instant::now() >= next {
                draw(&mut self.rng, &situation, self.opts.api_down)
            } else {
                None
            };
            if let Some(event) = event {
                self.current = event.kind();
                let (t0, started) = (epoch_now(), Instant::now());
                let (what, undo) = self.apply(&event)?;
                println!(
                    "chaos: {:>6.1} s  #{:<3} {}: {what}",
                    t0 - start_epoch,
                    self.report.events.len() + 1,
                    event.kind()
                );
                if let Some((after, undo)) = undo {
                    self.pending.push(Pending {
                        due: Instant::now() + after,
                        undo,
                        event: self.report.events.len(),
                        kind: event.kind(),
                    });
                }
                self.report.events.push(EventRecord {
                    kind: event.kind(),
                    what,
                    start: t0,
                    end: epoch_now(),
                });
                let pause = self
                    .rng
                    .random_range(self.opts.pause.0 * 1000..=self.opts.pause.1 * 1000);
                // Every 1–10 s from one event's start to the next one's.
                next = started + Duration::from_millis(pause);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The end: everything right again within the bound.
        let end = epoch_now();
        if let Err(e) = self.wait_right(self.opts.bound + Duration::from_secs(10)) {
            self.violation(format!("after the last event: {e:#}"));
        }
        self.tick();
        self.report.minutes = (end - start_epoch) / 60.0;
        // Gaps per event: from its start to the next one's. A gap that overlaps an API outage is counted apart: a
        // node that dies during one keeps its IPs dark until the API is back (docs/election.md), by design.
        let outages = self.api_outages.clone();
        let (during, outside): (Vec<_>, Vec<_>) = self
            .gaps
            .iter()
            .copied()
            .partition(|(_, from, to)| outages.iter().any(|(a, b)| from < b && to > a));
        self.report.outage_gaps = during.len();
        self.report.longest_outage_gap = during.iter().map(|(_, a, b)| b - a).fold(0.0, f64::max);
        let events = self.report.events.clone();
        for (i, e) in events.iter().enumerate() {
            let next = events.get(i + 1).map(|n| n.start).unwrap_or(end);
            // A gap begins at the last answer before it, which may come a round before the event's clock read.
            let gap = longest_gap(&outside, e.start - 0.1, next - 0.1);
            self.report.gaps.entry(e.kind).or_default().push(gap);
        }
        // The longest gaps, with the event before each.
        let mut gaps = self.gaps.clone();
        gaps.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)));
        for (ip, from, to) in gaps.into_iter().take(5) {
            let before = events.iter().enumerate().rev().find(|(_, e)| e.start - 0.1 <= from);
            let event = before
                .map(|(i, e)| {
                    format!(
                        "#{} {}: {} (began {:.1} s before)",
                        i + 1,
                        e.kind,
                        e.what,
                        from - e.start
                    )
                })
                .unwrap_or_else(|| "before the first event".into());
            let svc = self.ip_owner.get(&ip).cloned().unwrap_or_default();
            self.report.longest_gaps.push(format!(
                "{ip} ({svc}): {} at {:.1} s, after {event}",
                secs(to - from),
                from - start_epoch
            ));
        }
        Ok(())
    }

    fn situation(&self) -> Situation {
        Situation {
            services: self
                .svcs
                .iter()
                .map(|s| s.as_ref().map(|s| (s.spec.churn, s.spec.local)))
                .collect(),
            created: self
                .svcs
                .iter()
                .filter(|s| s.as_ref().is_none_or(|s| s.spec.churn))
                .count(),
            excluded: (0..NODES).filter(|&i| self.nodes[i].excluded).collect(),
            busy: self
                .pending
                .iter()
                .filter_map(|p| match p.undo {
                    Undo::Restart(n) | Undo::LinkUp(n) | Undo::RestoreApi(n) => Some(n),
                    Undo::StartApi => None,
                })
                .collect(),
            api_down: self.api_down,
        }
    }

    /// Marks a change of what is expected: the settle clocks start again.
    fn changed(&mut self) {
        let now = epoch_now();
        for (pending, kind) in [(self.pending_l2, "l2"), (self.pending_bgp, "bgp")] {
            if let Some((k, _)) = pending {
                *self.report.unsettled.entry((k, kind)).or_default() += 1;
            }
        }
        self.pending_l2 = Some((self.current, now));
        self.pending_bgp = Some((self.current, now));
    }

    fn violation(&mut self, what: String) {
        let last = self
            .report
            .events
            .last()
            .map(|e| format!(" (last event #{}: {}: {})", self.report.events.len(), e.kind, e.what))
            .unwrap_or_default();
        let line = format!("{:.1}: {what}{last}", epoch_now());
        println!("chaos: VIOLATION {line}");
        self.report.violations.push(line);
    }

    /// Starts one event; returns what it did, and the undo of a fault with when it is due.
    fn apply(&mut self, event: &Event) -> Result<(String, Option<(Duration, Undo)>)> {
        let name = |i: usize| format!("node{}", i + 1);
        let what = match event {
            Event::Kill { node, down } | Event::Term { node, down } => {
                let i = *node;
                let sig = if matches!(event, Event::Kill { .. }) {
                    "KILL"
                } else {
                    "TERM"
                };
                // An agent stopped before it is ready may die of the signal itself (its handler is not installed
                // yet): it announces nothing, so that is no failure.
                let ready = self.c.agent_log(i).contains("announcer started");
                self.c.signal_agent(i, sig)?;
                let exit = self.c.wait_agent_exit(i, Duration::from_secs(20));
                if exit.is_none() {
                    self.violation(format!("{}'s agent did not exit within 20 s of SIG{sig}", name(i)));
                    self.c.signal_agent(i, "KILL")?;
                    self.c.wait_agent_exit(i, Duration::from_secs(5));
                }
                if sig == "TERM" && ready && exit.is_some_and(|code| code != 0) {
                    self.violation(format!("{}'s agent exited with {exit:?} on SIGTERM", name(i)));
                }
                self.nodes[i].running = false;
                self.changed();
                let what = format!("{}, restarted after {:.1} s", name(i), down.as_secs_f64());
                return Ok((what, Some((*down, Undo::Restart(i)))));
            }
            Event::LinkFlap { node, down } => {
                self.c.set_lan(*node, false)?;
                self.nodes[*node].link_up = false;
                self.changed();
                let what = format!("{} for {:.1} s", name(*node), down.as_secs_f64());
                return Ok((what, Some((*down, Undo::LinkUp(*node)))));
            }
            Event::CutApi { node, down } => {
                self.c.cut_api(*node)?;
                self.nodes[*node].cut = true;
                self.api_away_until = f64::INFINITY;
                self.changed();
                let what = format!("{} for {:.1} s", name(*node), down.as_secs_f64());
                return Ok((what, Some((*down, Undo::RestoreApi(*node)))));
            }
            Event::ApiDown { down } => {
                self.api_away_until = f64::INFINITY;
                self.api_down = true;
                self.api_outages.push((epoch_now(), f64::INFINITY));
                self.c.stop_apiserver()?;
                self.changed();
                return Ok((
                    format!("for {:.1} s", down.as_secs_f64()),
                    Some((*down, Undo::StartApi)),
                ));
            }
            Event::ApiRestart => {
                self.api_away_until = f64::INFINITY;
                self.api_down = true;
                let t = Instant::now();
                let t0 = epoch_now();
                self.c.stop_apiserver()?;
                self.start_apiserver()?;
                self.api_outages.push((t0, epoch_now()));
                self.api_down = false;
                // Nobody could write the Eips' status meanwhile: their time starts again now.
                self.forget_wrong("eip ");
                self.api_back();
                self.changed();
                return Ok((format!("back after {:.1} s", t.elapsed().as_secs_f64()), None));
            }
            Event::ExcludeNode { node } => {
                let excluded = !self.nodes[*node].excluded;
                let label = "node.kubernetes.io/exclude-from-external-load-balancers";
                let arg = if excluded {
                    format!("{label}=true")
                } else {
                    format!("{label}-")
                };
                self.kubectl(&["label", "node", &name(*node), &arg, "--overwrite"])?;
                self.nodes[*node].excluded = excluded;
                self.changed();
                format!(
                    "{} {}",
                    name(*node),
                    if excluded { "excluded" } else { "included again" }
                )
            }
            Event::EipEdit { bgp: true } => {
                self.communities = !self.communities;
                self.apply_yaml(&bgp_eip_yaml(self.communities))?;
                self.changed();
                format!(
                    "{BGP_EIP}: communities {}",
                    if self.communities { "set" } else { "removed" }
                )
            }
            Event::EipEdit { bgp: false } => {
                let (lo, hi): (IpAddr, IpAddr) = ("192.0.2.96".parse()?, "192.0.2.99".parse()?);
                let in_use = self
                    .svcs
                    .iter()
                    .flatten()
                    .flat_map(|s| s.ips.iter())
                    .any(|ip| (lo..=hi).contains(ip));
                if self.spare_range && in_use {
                    format!("{EIP_NAME}: {SPARE_RANGE} kept (a Service holds an address of it)")
                } else {
                    self.spare_range = !self.spare_range;
                    self.apply_yaml(&l2_eip_yaml(self.spare_range))?;
                    self.changed();
                    format!(
                        "{EIP_NAME}: {SPARE_RANGE} {}",
                        if self.spare_range { "added" } else { "removed" }
                    )
                }
            }
            Event::Create { spec } => {
                self.apply_yaml(&service_yaml(spec))?;
                if spec.local {
                    set_endpoints(&self.c, spec)?;
                }
                self.svcs.push(Some(Live {
                    spec: spec.clone(),
                    ips: Vec::new(),
                    created: epoch_now(),
                    reported: false,
                }));
                self.changed();
                describe(spec)
            }
            Event::Change { service } => {
                let live = self.svcs[*service].as_mut().context("changed a deleted Service")?;
                live.spec.port = if live.spec.port == 80 { 8080 } else { 80 };
                let yaml = service_yaml(&live.spec);
                let what = format!("{}: port {}", live.spec.name, live.spec.port);
                self.apply_yaml(&yaml)?;
                self.changed();
                what
            }
            Event::Delete { service } => {
                let live = self.svcs[*service].take().context("deleted twice")?;
                self.last_ip_change = epoch_now();
                self.kubectl(&["delete", "service", &live.spec.name, "-n", "default", "--wait=false"])?;
                if live.spec.local {
                    let slice = format!("{}-lab", live.spec.name);
                    self.kubectl(&["delete", "endpointslice", &slice, "-n", "default", "--wait=false"])?;
                }
                for ip in &live.ips {
                    if self.seen.remove(ip).is_some() {
                        self.probe.remove(*ip);
                    }
                }
                self.changed();
                format!("{} ({})", live.spec.name, join(&live.ips))
            }
            Event::MoveEndpoints { service, nodes } => {
                let live = self.svcs[*service].as_mut().context("moved a deleted Service")?;
                live.spec.endpoints = nodes.clone();
                let spec = live.spec.clone();
                set_endpoints(&self.c, &spec)?;
                self.changed();
                format!(
                    "{} to {}",
                    spec.name,
                    nodes.iter().map(|&n| name(n)).collect::<Vec<_>>().join(", ")
                )
            }
        };
        Ok((what, None))
    }

    /// The API server is back for this node or all: two MACs are allowed a moment longer (a holder that kept
    /// answering sees the other's claim), unless another part of the API is still away.
    /// Drops the wrong states of one kind (`"eip "`, …): what was seen before says nothing about now.
    fn forget_wrong(&mut self, kind: &str) {
        let keys: Vec<String> = self.wrong.keys().filter(|k| k.starts_with(kind)).cloned().collect();
        for k in keys {
            self.wrong.remove(&k);
            self.reported.remove(&episode(&k));
        }
    }

    fn api_back(&mut self) {
        if !self.api_down && self.nodes.iter().all(|n| !n.cut) {
            self.api_away_until = epoch_now() + 2.0;
        }
    }

    /// Starts the API server again; a start that fails is tried twice more (the harness's problem, not Herald's:
    /// printed, not counted as a violation).
    fn start_apiserver(&mut self) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.c.start_apiserver() {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 => {
                    println!("chaos: starting the API server failed (attempt {attempt}), again in 2 s: {e:#}");
                    self.wait(Duration::from_secs(2));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Undoes a fault.
    fn undo(&mut self, undo: Undo) -> Result<()> {
        match undo {
            Undo::Restart(i) => {
                self.c.start_agent(i)?;
                self.log_seen[i] = 0;
                self.nodes[i].running = true;
            }
            Undo::LinkUp(i) => {
                self.c.set_lan(i, true)?;
                self.nodes[i].link_up = true;
            }
            Undo::RestoreApi(i) => {
                self.c.restore_api(i)?;
                self.nodes[i].cut = false;
                self.api_back();
            }
            Undo::StartApi => {
                self.start_apiserver()?;
                if let Some(last) = self.api_outages.last_mut() {
                    last.1 = epoch_now();
                }
                self.api_down = false;
                self.forget_wrong("eip ");
                self.api_back();
            }
        }
        self.changed();
        Ok(())
    }

    /// kubectl, retried for 30 s (the API server may be starting again).
    fn kubectl(&mut self, args: &[&str]) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.c.kubectl(args) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => self.wait(Duration::from_secs(1)),
            }
        }
    }

    fn apply_yaml(&mut self, yaml: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.c.apply(yaml) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => self.wait(Duration::from_secs(1)),
            }
        }
    }

    /// Waits `d`, checking the invariants all along.
    fn wait(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            self.tick();
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// Waits until every invariant with a bound holds, or fails after `timeout`.
    fn wait_right(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            self.tick();
            if self.wrong.is_empty() && self.svcs.iter().flatten().all(|s| !s.ips.is_empty()) {
                return Ok(());
            }
            if Instant::now() > end {
                bail!(
                    "still wrong after {timeout:?}: {:?}",
                    self.wrong.keys().collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One round of checks.
    fn tick(&mut self) {
        self.read_probe();
        let read_logs = self.last_api_check.elapsed() >= Duration::from_secs(2);
        if read_logs && !self.api_down {
            self.check_services();
        }
        if read_logs {
            self.last_api_check = Instant::now();
        }
        if self.last_slow_check.elapsed() >= Duration::from_secs(10) && !self.api_down {
            self.last_slow_check = Instant::now();
            self.check_slow();
        }
        self.check_agents(read_logs);
        let now = epoch_now();
        let l2_right = self.check_l2(now);
        let bgp_right = self.check_bgp(now);
        if l2_right && let Some((kind, at)) = self.pending_l2.take() {
            self.report.l2_settle.entry(kind).or_default().push(now - at);
        }
        if bgp_right && let Some((kind, at)) = self.pending_bgp.take() {
            self.report.bgp_settle.entry(kind).or_default().push(now - at);
        }
        // Wrong states past the bound.
        let bound = self.opts.bound.as_secs_f64();
        let late: Vec<String> = self
            .wrong
            .iter()
            // With the API server down nobody can write an Eip's status: no verdict on it until it is back.
            .filter(|(key, _)| !(self.api_down && key.starts_with("eip ")))
            .filter(|(key, since)| now - **since > bound && !self.reported.contains(&episode(key)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in late {
            let mut what = format!("wrong for more than {bound:.0} s: {key}");
            if key.starts_with("bgp ") {
                let out = self
                    .c
                    .lab
                    .exec(&self.router, &["gobgp", "neighbor"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let _ = write!(what, "; the router's neighbors now:\n{out}");
            }
            self.violation(what);
            self.reported.insert(episode(&key));
        }
    }

    fn read_probe(&mut self) {
        while let Ok(line) = self.probe.lines.try_recv() {
            let Some(line) = ProbeLine::parse(&line) else {
                continue;
            };
            match line {
                ProbeLine::Answer { ip, mac, .. } => {
                    self.report.probe_answers += 1;
                    let seen = self.seen.entry(ip).or_default();
                    seen.mac = Some(mac);
                    seen.down = false;
                }
                ProbeLine::Gap { ip, from, to } => self.gaps.push((ip, from, to)),
                ProbeLine::Down { ip, .. } => {
                    if let Some(seen) = self.seen.get_mut(&ip) {
                        seen.down = true;
                    }
                }
                ProbeLine::Multi {
                    at,
                    ip,
                    macs,
                    sustained,
                } => {
                    if !sustained {
                        self.report.crossing += 1;
                    } else if at <= self.api_away_until {
                        self.report.overlap_api_away += 1;
                    } else {
                        let who: Vec<String> = macs
                            .iter()
                            .map(|m| self.c.node_of_mac(m).unwrap_or(m).to_string())
                            .collect();
                        self.violation(format!(
                            "two MACs answered for {ip} with the API reachable: {}",
                            who.join(", ")
                        ));
                    }
                }
            }
        }
    }

    /// Layer 2: every IP answered by an eligible node (or by none when none is eligible). Returns whether all are.
    fn check_l2(&mut self, now: f64) -> bool {
        let undecided = undecided(&self.nodes, self.api_down);
        let mut checks = Vec::new();
        for live in self.svcs.iter().flatten().filter(|s| s.spec.mode == Mode::L2) {
            let eligible = eligible(&self.nodes, live.spec.local, &live.spec.endpoints);
            for ip in &live.ips {
                let seen = self.seen.get(ip);
                let answering = seen.filter(|s| !s.down).and_then(|s| s.mac.as_deref()).map(|mac| {
                    self.c
                        .node_of_mac(mac)
                        .and_then(|n| self.c.node_index(n))
                        .unwrap_or(usize::MAX)
                });
                let right = match answering {
                    Some(n) => eligible.contains(&n) || undecided.contains(&n),
                    None => eligible.iter().all(|n| undecided.contains(n)),
                };
                let who = match answering {
                    Some(usize::MAX) => "an unknown MAC".to_string(),
                    Some(n) => format!("node{}", n + 1),
                    None => "nobody".to_string(),
                };
                let key = format!(
                    "{ip} ({}) answered by {who}, eligible {:?}",
                    live.spec.name,
                    eligible.iter().map(|n| n + 1).collect::<Vec<_>>()
                );
                checks.push((key, !right));
            }
        }
        self.record_checks("l2 ", checks, now)
    }

    /// Records a family of checks (`(detail, wrong)`; keys are `family` + detail, the detail's first word the IP or
    /// object): wrong ones are kept with the time they first went wrong. Returns whether every check was right.
    fn record_checks(&mut self, family: &str, checks: Vec<(String, bool)>, now: f64) -> bool {
        let current: BTreeSet<String> = checks
            .iter()
            .filter(|c| c.1)
            .map(|c| format!("{family}{}", c.0))
            .collect();
        // The detail may change while the IP stays wrong (another node answering): keep when it first went wrong.
        let mut since: BTreeMap<String, f64> = BTreeMap::new();
        let stale: Vec<String> = self
            .wrong
            .keys()
            .filter(|k| k.starts_with(family) && !current.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            if let Some(t) = self.wrong.remove(&key) {
                since.insert(ip_of(&key), t);
            }
        }
        let all_right = current.is_empty();
        // An IP right again ends its episode: the next wrong state is reported again.
        let open: BTreeSet<String> = current.iter().map(|k| episode(k)).collect();
        self.reported.retain(|e| !e.starts_with(family) || open.contains(e));
        for key in current {
            let t = since.get(&ip_of(&key)).copied().unwrap_or(now);
            self.wrong.entry(key).or_insert(t);
        }
        all_right
    }

    /// BGP: the router's next hops for every BGP IP are the eligible nodes.
    fn check_bgp(&mut self, now: f64) -> bool {
        let Some((asked, rib)) = self.rib.rib.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return true;
        };
        // An old answer (the router's CLI slow on a busy machine) says nothing about now: no verdict, and no wrong
        // state carried over it.
        if now - asked > 2.0 {
            self.report.rib_stale += 1;
            self.forget_wrong("bgp ");
            return self.pending_bgp.is_none();
        }
        let undecided = undecided(&self.nodes, self.api_down);
        let mut checks = Vec::new();
        let mut ours = BTreeSet::new();
        for live in self.svcs.iter().flatten().filter(|s| s.spec.mode == Mode::Bgp) {
            let eligible = eligible(&self.nodes, live.spec.local, &live.spec.endpoints);
            for ip in &live.ips {
                ours.insert(*ip);
                let have = rib.get(ip).cloned().unwrap_or_default();
                let right = routes_ok(&have, &eligible, &undecided);
                let detail = format!(
                    "{ip} ({}) routed to nodes {:?}, eligible {:?}",
                    live.spec.name,
                    have.iter().map(|n| n.wrapping_add(1)).collect::<Vec<_>>(),
                    eligible.iter().map(|n| n + 1).collect::<Vec<_>>()
                );
                checks.push((detail, !right));
            }
        }
        // Routes for IPs no Service holds (a deleted Service's) must go too: no node is eligible for them. A node
        // cut off from the API cannot learn of the deletion, so its route is judged from when it is back.
        for (ip, hops) in &rib {
            if !ours.contains(ip) {
                let detail = format!(
                    "{ip} (no Service) still routed to nodes {:?}",
                    hops.iter().map(|n| n.wrapping_add(1)).collect::<Vec<_>>()
                );
                checks.push((detail, !routes_ok(hops, &BTreeSet::new(), &undecided)));
            }
        }
        self.record_checks("bgp ", checks, now)
    }

    /// The Services' IPs: given once, never changed or taken away; a shared IP shared.
    fn check_services(&mut self) {
        let Ok(list) = self.c.services() else {
            return;
        };
        let now = epoch_now();
        let bound = self.opts.bound.as_secs_f64();
        let mut problems = Vec::new();
        let mut added = Vec::new();
        let mut ip_changed = false;
        for live in self.svcs.iter_mut().flatten() {
            let have = list.get(&live.spec.name).map(|s| s.ips.clone()).unwrap_or_default();
            if live.ips.is_empty() {
                if !have.is_empty() {
                    live.ips = have.clone();
                    ip_changed = true;
                    if live.spec.mode == Mode::L2 {
                        added.extend(have);
                    }
                } else if now - live.created > bound && !live.reported {
                    live.reported = true;
                    problems.push(format!("{} got no IP within {bound:.0} s", live.spec.name));
                }
                continue;
            }
            let (mut a, mut b) = (have.clone(), live.ips.clone());
            a.sort();
            b.sort();
            if a != b && !live.reported {
                live.reported = true;
                problems.push(format!(
                    "{} {} its IPs: had {}, has {}",
                    live.spec.name,
                    if have.is_empty() { "lost" } else { "changed" },
                    join(&live.ips),
                    join(&have)
                ));
            }
        }
        // Sharing: the Services of one key hold the same IPs.
        let mut keys: BTreeMap<String, Vec<(String, Vec<IpAddr>)>> = BTreeMap::new();
        for live in self.svcs.iter().flatten() {
            if let Some(k) = &live.spec.sharing {
                keys.entry(k.clone())
                    .or_default()
                    .push((live.spec.name.clone(), live.ips.clone()));
            }
        }
        for (key, members) in keys {
            if members
                .windows(2)
                .any(|w| w[0].1 != w[1].1 && !w[0].1.is_empty() && !w[1].1.is_empty())
            {
                problems.push(format!("sharing key {key}: different IPs {members:?}"));
            }
        }
        if ip_changed {
            self.last_ip_change = now;
        }
        for ip in added {
            self.seen.entry(ip).or_default();
            self.probe.add(ip);
        }
        for live in self.svcs.iter().flatten() {
            for ip in &live.ips {
                self.ip_owner.insert(*ip, owner(&live.spec));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Eip status against a recount, Leases, memory.
    fn check_slow(&mut self) {
        let now = epoch_now();
        // Eip status: each family's used count equals the Services' distinct IPs in the pool. Only when nothing
        // changed for 5 s (the status follows within seconds).
        if now - self.last_ip_change <= 5.0 {
            // No evidence either way: an earlier mismatch is not carried over a change.
            self.forget_wrong("eip ");
        } else {
            let mut ranges: Vec<(&str, Vec<(IpAddr, IpAddr)>)> = vec![
                (
                    EIP_NAME,
                    vec![
                        range("192.0.2.128", "192.0.2.254"),
                        range("2001:db8:1::1000", "2001:db8:1::3fff"),
                    ],
                ),
                (
                    BGP_EIP,
                    vec![
                        range("203.0.113.0", "203.0.113.31"),
                        range("2001:db8:2::", "2001:db8:2::ff"),
                    ],
                ),
            ];
            if self.spare_range {
                ranges[0].1.push(range("192.0.2.96", "192.0.2.99"));
            }
            let held: BTreeSet<IpAddr> = self.svcs.iter().flatten().flat_map(|s| s.ips.clone()).collect();
            let mut checks = Vec::new();
            for (eip, ranges) in ranges {
                let Ok(v) = self.c.get_json(&["eip", eip]) else {
                    return;
                };
                for (family, v6) in [("ipv4", false), ("ipv6", true)] {
                    let count = held
                        .iter()
                        .filter(|ip| ip.is_ipv6() == v6 && ranges.iter().any(|(lo, hi)| (lo..=hi).contains(ip)))
                        .count() as u64;
                    let status = v["status"][family]["used"].as_u64().unwrap_or(0);
                    let detail = format!("{eip}/{family}: Eip status.{family}.used {status}, recount {count}");
                    checks.push((detail, status != count));
                }
            }
            self.record_checks("eip ", checks, now);
        }
        // Leases: one per Layer 2 IP, one per node, the allocator's; a deleted Service's go.
        if let Ok(v) = self.c.get_json(&["lease", "-n", HERALD_NAMESPACE]) {
            let n = v["items"].as_array().map_or(0, Vec::len);
            self.report.max_leases = self.report.max_leases.max(n);
            let l2 = self.seen.len();
            let bound = l2 + NODES + 1 + 16;
            if n > bound {
                self.violation(format!(
                    "{n} Leases in {HERALD_NAMESPACE} for {l2} Layer 2 IPs (more than {bound})"
                ));
            }
        }
        for i in 0..NODES {
            if self.nodes[i].running
                && let Ok(usage) = self.c.agent_usage(i)
            {
                self.report.max_rss_mib = self.report.max_rss_mib.max(usage.rss_mib);
                if usage.rss_mib > RSS_LIMIT_MIB {
                    self.violation(format!("node{}'s agent uses {:.0} MiB", i + 1, usage.rss_mib));
                }
            }
        }
    }

    /// Agents: none exits unasked, none panics.
    fn check_agents(&mut self, read_logs: bool) {
        for i in 0..NODES {
            if !self.nodes[i].running {
                continue;
            }
            let Some(idx) = self.c.nodes[i].agent else {
                continue;
            };
            let exited = self.c.lab.proc(idx).exited();
            if read_logs || exited.is_some() {
                let log = self.c.lab.proc(idx).stderr();
                let new = log.get(self.log_seen[i]..).unwrap_or_default();
                if let Some(line) = new.lines().find(|l| l.contains("panicked")) {
                    let line = line.to_string();
                    self.violation(format!("node{}'s agent panicked: {line}", i + 1));
                }
                self.log_seen[i] = log.len();
            }
            if let Some(code) = exited {
                self.violation(format!("node{}'s agent exited unasked ({code}); restarting it", i + 1));
                if let Err(e) = self.c.start_agent(i) {
                    self.violation(format!("node{}'s agent does not start again: {e:#}", i + 1));
                    self.nodes[i].running = false;
                }
                self.log_seen[i] = 0;
            }
        }
    }
}

/// A wrong state's episode: its family and IP or object (`bgp 203.0.113.1`), reported once however its detail
/// changes.
fn episode(key: &str) -> String {
    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// The IP a check key is about (its second word).
fn ip_of(key: &str) -> String {
    key.split_whitespace().nth(1).unwrap_or(key).to_string()
}

fn range(lo: &str, hi: &str) -> (IpAddr, IpAddr) {
    (
        lo.parse().expect("a valid address"),
        hi.parse().expect("a valid address"),
    )
}

fn join(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "none".into();
    }
    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

/// A Service as the longest gaps name it: `l2-v4-1, Local on node1, node3`.
fn owner(spec: &SvcSpec) -> String {
    if spec.local {
        let nodes: Vec<String> = spec.endpoints.iter().map(|n| format!("node{}", n + 1)).collect();
        format!("{}, Local on {}", spec.name, nodes.join(", "))
    } else {
        spec.name.clone()
    }
}

fn describe(spec: &SvcSpec) -> String {
    format!(
        "{} ({:?}, {:?}{})",
        spec.name,
        spec.mode,
        spec.fam,
        if spec.local { ", Local" } else { "" }
    )
}

/// The Services every run starts with: 40 IPs.
/// - Layer 2: 8 IPv4 (2 Local), 5 IPv6 (1 Local), 4 dual-stack (1 Local), an IPv4 pair and an IPv6 pair sharing
///   one IP each: 23 IPs.
/// - BGP: 6 IPv4 (2 Local), 4 IPv6 (1 Local), 3 dual-stack (1 Local), an IPv4 pair sharing one IP: 17 IPs.
fn initial_services(rng: &mut StdRng) -> Vec<SvcSpec> {
    let mut out = Vec::new();
    let mut add = |rng: &mut StdRng, mode: Mode, fam: Fam, n: usize, local: usize, prefix: &str| {
        for i in 0..n {
            out.push(SvcSpec::new(
                rng,
                format!("{prefix}-{}", i + 1),
                mode,
                fam,
                i < local,
                false,
            ));
        }
    };
    add(rng, Mode::L2, Fam::V4, 8, 2, "l2-v4");
    add(rng, Mode::L2, Fam::V6, 5, 1, "l2-v6");
    add(rng, Mode::L2, Fam::Dual, 4, 1, "l2-dual");
    add(rng, Mode::Bgp, Fam::V4, 6, 2, "bgp-v4");
    add(rng, Mode::Bgp, Fam::V6, 4, 1, "bgp-v6");
    add(rng, Mode::Bgp, Fam::Dual, 3, 1, "bgp-dual");
    for (mode, fam, key) in [
        (Mode::L2, Fam::V4, "l2-shared-v4"),
        (Mode::L2, Fam::V6, "l2-shared-v6"),
        (Mode::Bgp, Fam::V4, "bgp-shared-v4"),
    ] {
        for (i, port) in [(1, 80), (2, 81)] {
            out.push(SvcSpec {
                name: format!("{key}-{i}"),
                mode,
                fam,
                local: false,
                endpoints: Vec::new(),
                sharing: Some(key.to_string()),
                port,
                churn: false,
            });
        }
    }
    out
}

fn service_yaml(spec: &SvcSpec) -> String {
    let mut s = match spec.fam {
        Fam::V4 => ServiceSpec::v4(&spec.name),
        Fam::V6 => ServiceSpec::v6(&spec.name),
        Fam::Dual => ServiceSpec::dual(&spec.name),
    }
    .with_port(spec.port);
    s.local = spec.local;
    s.eip = match spec.mode {
        Mode::L2 => EIP_NAME.into(),
        Mode::Bgp => BGP_EIP.into(),
    };
    if let Some(key) = &spec.sharing {
        s = s.with_annotation("herald.dev/sharing-key", key);
    }
    s.yaml()
}

fn set_endpoints(c: &Cluster, spec: &SvcSpec) -> Result<()> {
    let names: Vec<String> = spec.endpoints.iter().map(|n| format!("node{}", n + 1)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    c.set_endpoints(&spec.name, &names)
}

fn l2_eip_yaml(spare: bool) -> String {
    let spare = if spare {
        format!("  - {SPARE_RANGE}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata:\n  name: {EIP_NAME}\nspec:\n  protocol: layer2\n  \
         addresses:\n  - {}\n  - {}\n{spare}",
        EIP_ADDRESSES[0], EIP_ADDRESSES[1]
    )
}

fn bgp_eip_yaml(communities: bool) -> String {
    let bgp = if communities {
        "  bgp:\n    communities: [\"64512:100\"]\n"
    } else {
        ""
    };
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata:\n  name: {BGP_EIP}\nspec:\n  protocol: bgp\n  \
         addresses: [\"{}\", \"{}\"]\n{bgp}",
        BGP_EIP_ADDRESSES[0], BGP_EIP_ADDRESSES[1]
    )
}

/// Starts `probe.py` on the client for `ips`.
fn start_probe(c: &Cluster, ips: &BTreeSet<IpAddr>, interval: Duration) -> Result<Probe> {
    let script = c.lab.dir().join("chaos-probe.py");
    std::fs::write(&script, include_str!("probe.py"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", c.client.name(), "python3", "-u"])
        .arg(&script)
        .args(["eth0", CLIENT_MAC, "192.0.2.100", "2001:db8:1::100"])
        .arg(format!("{}", interval.as_secs_f64()))
        .args(ips.iter().map(IpAddr::to_string))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("start the chaos client (python3)")?;
    let stdin = child.stdin.take().context("client stdin")?;
    let stdout = child.stdout.take().context("client stdout")?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Probe {
        child,
        stdin,
        lines: rx,
    })
}

/// Polls the router's routes every 500 ms.
fn start_rib_poller(router: &Netns) -> RibPoller {
    let rib: Rib = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let (ns, sink, flag) = (router.name().to_string(), rib.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            let mut map = BTreeMap::new();
            let mut ok = true;
            let asked = epoch_now();
            for family in ["ipv4", "ipv6"] {
                match Command::new("ip")
                    .args(["netns", "exec", &ns, "gobgp", "global", "rib", "-a", family])
                    .output()
                {
                    Ok(out) if out.status.success() => parse_rib(&String::from_utf8_lossy(&out.stdout), &mut map),
                    _ => ok = false,
                }
            }
            if ok {
                *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some((asked, map));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    RibPoller {
        rib,
        stop,
        thread: Some(thread),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rib_lines() {
        let text = "   Network              Next Hop             AS_PATH              Age        Attrs\n\
                    *> 203.0.113.1/32       192.0.2.11           64512                00:00:05   [{Origin: i}]\n\
                    *  203.0.113.1/32       192.0.2.13           64512                00:00:04   [{Origin: i}]\n\
                    *> 2001:db8:2::5/128    2001:db8:1::12       64512                00:00:04   [{Origin: i}]\n\
                    *> 198.51.100.0/24      198.51.100.9         64999                00:00:04   [{Origin: i}]\n";
        let mut map = BTreeMap::new();
        parse_rib(text, &mut map);
        assert_eq!(map[&"203.0.113.1".parse::<IpAddr>().unwrap()], [0, 2].into());
        assert_eq!(map[&"2001:db8:2::5".parse::<IpAddr>().unwrap()], [1].into());
        assert_eq!(map[&"198.51.100.0".parse::<IpAddr>().unwrap()], [usize::MAX].into());
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn forty_ips_of_every_kind() {
        let specs = initial_services(&mut StdRng::seed_from_u64(1));
        let ips = |mode: Mode| {
            let mut n = 0;
            let mut keys = BTreeSet::new();
            for s in specs.iter().filter(|s| s.mode == mode) {
                if let Some(k) = &s.sharing
                    && !keys.insert(k.clone())
                {
                    continue;
                }
                n += if s.fam == Fam::Dual { 2 } else { 1 };
            }
            n
        };
        assert_eq!((ips(Mode::L2), ips(Mode::Bgp)), (23, 17));
        assert!(specs.iter().any(|s| s.local && s.mode == Mode::Bgp));
        assert!(specs.iter().filter(|s| s.local).all(|s| s.endpoints.len() == 2));
        assert!(service_yaml(&specs[0]).contains("externalTrafficPolicy: Local"));
        let shared = specs.iter().find(|s| s.sharing.is_some()).unwrap();
        assert!(service_yaml(shared).contains("herald.dev/sharing-key: \"l2-shared-v4\""));
    }
}
