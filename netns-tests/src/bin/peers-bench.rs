//! Herald, MetalLB and kube-vip measured side by side (issue #15): one cluster in network namespaces, one real
//! kube-apiserver, one client probing, all three load balancers running at once and the events interleaved (one on
//! Herald's IP, one on MetalLB's, one on kube-vip's, then the next run), so the machine's noise falls on all alike.
//!
//! Run as root (docs/peers.md; `scripts/bench.sh peers` does all of it):
//!
//! ```text
//! eval "$(scripts/kube-apiserver.sh build)"; export KUBE_APISERVER_BIN ETCD_BIN
//! cargo run --release -p herald-netns-tests --bin peers-bench -- [--runs 3] [--only kill,kill-node,term,link,create,load]
//!     [--sizes 100,1000] [--load-seconds 20] [--tuned]
//! ```
//!
//! Topology: `herald_netns_tests::cluster` (3 nodes, a client on the LAN, the real kube-apiserver). MetalLB v0.15.2
//! (Layer 2: controller, speakers with memberlist) and kube-vip v1.2.2 (Services mode, ARP, one Lease per Service)
//! run as processes in the node namespaces with their DaemonSets' flags ([`herald_netns_tests::cluster::peers`]).
//! Each implementation has its own Service and IP; the client probes each IP every 20 ms and `tcpdump` records
//! every answer with kernel timestamps. Prints Markdown tables.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use herald_netns_tests::bgp::{Router, RouterKind};
use herald_netns_tests::cluster::kube::ApiServerKind;
use herald_netns_tests::cluster::peers::{Implementation, KubeVipTimings, PeerBins, Peers};
use herald_netns_tests::cluster::{
    Cluster, ClusterOptions, Frame, Prober, ServiceSpec, TUNED_AGENT_ARGS, epoch_now, percentile, settle,
};
use herald_netns_tests::{require, wait_for, wait_for_every};

const PROBE: Duration = Duration::from_millis(20);
/// How long a takeover is waited for before the run counts as "none" (kube-vip's default Lease runs out after 15 s).
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one MAC alone must have answered before an event, and after one before the next.
const QUIET: Duration = Duration::from_secs(3);
/// A kubelet notices a dead container within about a second (its PLEG relists every second).
const SHORT_DELAY: Duration = Duration::from_secs(1);
/// A dead node: the node lifecycle controller marks it and its Pods not ready after `node-monitor-grace-period`.
const NODE_DELAY: Duration = Duration::from_secs(40);
/// How long after a restarted speaker a second MAC still answering counts as a stale address.
const STALE_AFTER: Duration = Duration::from_secs(10);
/// How long the load part waits for every IP of one size to answer.
const LOAD_TIMEOUT: Duration = Duration::from_secs(150);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// kill -9 of the announcing speaker; its Pod not ready 1 s later.
    Kill,
    /// kill -9 of the announcing speaker; its Node and Pod not ready 40 s later (the node died).
    KillNode,
    /// SIGTERM of the announcing speaker.
    Term,
    /// The announcing node's LAN link down.
    Link,
    /// Service creation to the first ARP answer.
    Create,
    /// Steady API requests and speaker memory at each size.
    Load,
    /// BGP mode, Herald against MetalLB's native BGP, each with a BIRD of its own: Service create → route,
    /// speaker killed → route withdrawn, many Services → all routes.
    Bgp,
}

/// Herald, MetalLB and kube-vip side by side (root; the real kube-apiserver; prints Markdown tables).
#[derive(clap::Parser, Debug)]
struct Args {
    /// Runs per event and implementation.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these parts (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Part>,
    /// Service counts of the load part.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    sizes: Vec<usize>,
    /// Services of the BGP part's scale step (at most 100: see `bgp`).
    #[arg(long, default_value_t = 100)]
    bgp_services: usize,
    /// Length of each steady-state window of the load part.
    #[arg(long, default_value_t = 20)]
    load_seconds: u64,
    /// Each project's documented faster timings instead of its defaults (Herald: renew 300 ms, takeover 1 s,
    /// deadline 600 ms; kube-vip: lease 5 s, renew 3 s, retry 1 s; MetalLB has none for Layer 2).
    #[arg(long)]
    tuned: bool,
}

/// One implementation's Service and probe.
struct Side {
    imp: Implementation,
    ip: IpAddr,
    probe: Prober,
}

/// The result of one failover event.
struct Event {
    /// Longest time without an answer around the event, ms.
    gap: f64,
    /// Event → first answer from another node, ms (`None`: not within [`TAKEOVER_TIMEOUT`]).
    takeover: Option<f64>,
    /// Probes answered by two MACs from the event to half a second after the takeover.
    dual: usize,
    /// Two MACs still answered [`STALE_AFTER`] after the speaker was started again.
    stale: bool,
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    if !require(&["ip", "arping", "ndisc6", "tcpdump", "kubectl", "python3", "nft", "go"]) {
        bail!("peers-bench needs root and ip, arping, ndisc6, tcpdump, kubectl, python3, nft, go");
    }
    let work = std::env::temp_dir().join(format!("herald-peers-bench-{}", std::process::id()));
    let bins = PeerBins::build(&work).context("building MetalLB and kube-vip (scripts/peers.sh)")?;
    let mut agent_args = vec!["--default-class=false"];
    if args.tuned {
        agent_args.extend(TUNED_AGENT_ARGS);
    }
    let options = ClusterOptions {
        apiserver: Some(ApiServerKind::Kube),
        ..ClusterOptions::with_args(&agent_args)
    };
    let mut c = Cluster::start("peers-bench", &options)?;
    let result = run(&args, &mut c, bins);
    let _ = std::fs::remove_dir_all(&work);
    if result.is_err() {
        // Keep every process's log (and print their ends).
        c.lab.mark_failed();
    }
    result
}

fn run(args: &Args, c: &mut Cluster, bins: PeerBins) -> Result<()> {
    let wants = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let mut peers = Peers::install(c, bins)?;
    if args.tuned {
        peers.kube_vip_timings = KubeVipTimings::TUNED;
        for i in 0..c.nodes.len() {
            peers.start(c, Implementation::KubeVip, i)?;
        }
    }
    let timings = if args.tuned { "tuned" } else { "defaults" };
    println!(
        "# Herald, MetalLB and kube-vip side by side ({}; {timings}; 3 nodes, the real kube-apiserver, client probing every {} ms)\n",
        peers.versions().join(", "),
        PROBE.as_millis()
    );

    let mut sides = Vec::new();
    for imp in Implementation::ALL {
        let name = format!("l2-{}", slug(imp));
        let ip = imp.v4(0);
        c.set_endpoints(&name, &node_names(c))?;
        c.create_services(&[imp.service(&name, ip)])?;
        let probe = c.probe(ip, PROBE)?;
        probe
            .wait_answer(epoch_now(), Duration::from_secs(60), |_| true)
            .with_context(|| format!("{}: {ip} never answered", imp.name()))?;
        eprintln!("{}: {name} answers on {ip}", imp.name());
        sides.push(Side { imp, ip, probe });
    }

    let mut rows = Vec::new();
    let events: [(Part, &str); 4] = [
        (
            Part::Kill,
            "kill -9 of the announcing speaker (Pod not ready after 1 s)",
        ),
        (
            Part::KillNode,
            "kill -9 of the announcing speaker (Node and Pod not ready after 40 s)",
        ),
        (Part::Term, "SIGTERM of the announcing speaker"),
        (Part::Link, "the announcing node's LAN link down"),
    ];
    for (part, label) in events {
        if !wants(part) {
            continue;
        }
        let mut results: BTreeMap<Implementation, Vec<Event>> = BTreeMap::new();
        for run in 0..args.runs {
            // Rotate who goes first, so no implementation always follows the same one.
            for k in 0..sides.len() {
                let side = &sides[(run + k) % sides.len()];
                let e = failover(c, &mut peers, side, part)
                    .with_context(|| format!("{label}: {} run {run}", side.imp.name()))?;
                eprintln!(
                    "{label}: {} run {run}: gap {:.0} ms, takeover {}, {} probes answered twice",
                    side.imp.name(),
                    e.gap,
                    e.takeover.map_or("none".into(), |t| format!("{t:.0} ms")),
                    e.dual
                );
                results.entry(side.imp).or_default().push(e);
            }
        }
        for (imp, events) in results {
            rows.push(event_row(label, imp, &events));
        }
    }
    if !rows.is_empty() {
        println!(
            "Failover, {} runs each (gap: the longest time without an answer; takeover: the event to the first answer \
             from another node; \"none\": no other node answered within {} s, {} s with the node's delay):\n",
            args.runs,
            TAKEOVER_TIMEOUT.as_secs(),
            (NODE_DELAY + TAKEOVER_TIMEOUT).as_secs()
        );
        println!(
            "| event | implementation | gap p50 | gap max | takeover p50 | takeover max | probes answered twice | \
             two MACs {} s after the restart |",
            STALE_AFTER.as_secs()
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            println!("{r}");
        }
        println!();
    }
    if wants(Part::Create) {
        create_to_answer(c, args.runs)?;
    }
    drop(sides);
    if wants(Part::Load) {
        load(c, &peers, &args.sizes, Duration::from_secs(args.load_seconds))?;
    }
    if wants(Part::Bgp) {
        bgp(c, &mut peers, args.runs, args.bgp_services)?;
    }
    Ok(())
}

/// The label the load and BGP parts put on their Services and EndpointSlices, to delete them in one request.
const SET_LABEL: &str = "herald.dev/bench-set";

/// `yaml` (a Service or EndpointSlice with a `labels:` block) with [`SET_LABEL`]`: set`.
fn labelled(yaml: &str, set: &str) -> String {
    yaml.replacen("  labels:\n", &format!("  labels:\n    {SET_LABEL}: {set}\n"), 1)
}

fn slug(imp: Implementation) -> &'static str {
    match imp {
        Implementation::Herald => "herald",
        Implementation::MetalLb => "metallb",
        Implementation::KubeVip => "kubevip",
    }
}

fn node_names(c: &Cluster) -> Vec<&str> {
    c.nodes.iter().map(|n| n.name.as_str()).collect()
}

/// The node whose MAC answered last for the side's IP (waits for an answer).
fn announcer(c: &Cluster, side: &Side) -> Result<(usize, String)> {
    let mac = side
        .probe
        .wait_answer(epoch_now(), Duration::from_secs(10), |_| true)
        .with_context(|| format!("{} does not answer", side.ip))?;
    let node = c.node_of_mac(&mac).with_context(|| format!("{mac} is no node's"))?;
    Ok((c.node_index(node).expect("a node"), mac))
}

/// Waits up to `timeout` until the side's IP has been answered by one MAC only, and the same one, for `quiet`.
fn wait_stable(side: &Side, quiet: Duration, timeout: Duration) -> Result<()> {
    wait_for(timeout, || {
        let since = epoch_now() - quiet.as_secs_f64();
        let macs: std::collections::BTreeSet<String> = side
            .probe
            .frames()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Answer { at, mac } if at >= since => Some(mac),
                _ => None,
            })
            .collect();
        (macs.len() == 1).then_some(())
    })
    .with_context(|| format!("{} never settled on one MAC", side.ip))
}

/// One event on the node announcing `side`'s IP, then everything put back.
fn failover(c: &mut Cluster, peers: &mut Peers, side: &Side, part: Part) -> Result<Event> {
    let imp = side.imp;
    wait_stable(side, QUIET, Duration::from_secs(60))?;
    let (victim, old_mac) = announcer(c, side)?;
    // A random point in the renew period.
    settle(Duration::from_millis(300 + u64::from(rand::random::<u16>() % 1000)));
    let t = epoch_now();
    match part {
        Part::Kill | Part::KillNode => peers.signal(c, imp, victim, "KILL")?,
        Part::Term => peers.signal(c, imp, victim, "TERM")?,
        Part::Link => c.set_lan(victim, false)?,
        _ => unreachable!(),
    }
    // The kubelet stand-in: after its delay, the dead speaker's Pod (and with a dead node, the Node) not ready.
    let delay = match part {
        Part::Kill | Part::Term => Some(SHORT_DELAY),
        Part::KillNode => Some(NODE_DELAY),
        _ => None,
    };
    let mut flipped = false;
    // With a dead node, long enough to see what the Node and Pod turning not ready do.
    let timeout = if part == Part::KillNode {
        NODE_DELAY + TAKEOVER_TIMEOUT
    } else {
        TAKEOVER_TIMEOUT
    };
    let takeover = wait_for(timeout, || {
        if let Some(d) = delay
            && !flipped
            && epoch_now() - t >= d.as_secs_f64()
        {
            flipped = true;
            let done = if part == Part::KillNode {
                peers.set_node_ready(c, victim, false)
            } else {
                peers.set_pod_ready(c, &format!("speaker-{}", c.nodes[victim].name), Some(victim), false)
            };
            if let Err(e) = done {
                eprintln!("kubelet stand-in: {e:#}");
            }
        }
        side.probe.frames().into_iter().find_map(|f| match f {
            Frame::Answer { at, mac } if at >= t && mac != old_mac => Some((at - t) * 1000.0),
            _ => None,
        })
    });
    settle(Duration::from_millis(500));
    let s = side.probe.stats(t - 0.5, epoch_now());
    // Put everything back: the link, the speaker (as the kubelet restarts it), the Pod and Node ready.
    match part {
        Part::Link => c.set_lan(victim, true)?,
        _ => {
            peers.wait_exit(c, imp, victim, Duration::from_secs(15));
            peers.start(c, imp, victim)?;
            if imp == Implementation::Herald {
                c.wait_agent_ready(victim, Duration::from_secs(60))?;
            }
        }
    }
    if flipped || part == Part::KillNode {
        peers.set_node_ready(c, victim, true)?;
    }
    // The restarted speaker joins; an implementation may move the IP back: let that happen before the next event.
    settle(Duration::from_secs(3));
    let mut stale = false;
    if wait_stable(side, QUIET, STALE_AFTER).is_err() {
        // Still two MACs 10 s after the speaker was back: kube-vip's address left on the killed node's interface.
        stale = true;
        if imp == Implementation::KubeVip {
            let removed = peers.remove_stale_kube_vip_address(c, &format!("l2-{}", slug(imp)), side.ip)?;
            eprintln!(
                "{}: {} still answered twice; removed it from {removed:?}",
                imp.name(),
                side.ip
            );
        }
        wait_stable(side, QUIET, Duration::from_secs(60))?;
    }
    Ok(Event {
        gap: s.longest_gap.as_secs_f64() * 1000.0,
        takeover,
        dual: s.double_answered,
        stale,
    })
}

fn event_row(label: &str, imp: Implementation, events: &[Event]) -> String {
    let mut gaps: Vec<f64> = events.iter().map(|e| e.gap).collect();
    let mut takeovers: Vec<f64> = events.iter().filter_map(|e| e.takeover).collect();
    let missing = events.len() - takeovers.len();
    let takeover = |p: f64, takeovers: &mut Vec<f64>| {
        if takeovers.is_empty() {
            "none".to_string()
        } else if missing > 0 && p >= 100.0 {
            format!("none in {missing} of {}", events.len())
        } else {
            format!("{:.0} ms", percentile(takeovers, p))
        }
    };
    format!(
        "| {label} | {} | {:.0} ms | {:.0} ms | {} | {} | {} | {} of {} |",
        imp.name(),
        percentile(&mut gaps, 50.0),
        percentile(&mut gaps, 100.0),
        takeover(50.0, &mut takeovers),
        takeover(100.0, &mut takeovers),
        events.iter().map(|e| e.dual).sum::<usize>(),
        events.iter().filter(|e| e.stale).count(),
        events.len()
    )
}

/// `runs` times for each implementation, interleaved: an EndpointSlice, then `kubectl apply` of a Service; the time
/// to the first ARP answer. MetalLB and kube-vip are asked for a known IP; Herald's Service twice, once as users create
/// one (no IP asked for: it gets the pool's next address, which its checks proved free) and once asking for an
/// address of its own choosing that nobody checked (Herald probes it before the first answer).
fn create_to_answer(c: &mut Cluster, runs: usize) -> Result<()> {
    const HERALD_NEXT: &str = "Herald, next address (proven free)";
    const HERALD_CHOSEN: &str = "Herald, chosen address (probed)";
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        for k in 0..Implementation::ALL.len() {
            let imp = Implementation::ALL[(run + k) % Implementation::ALL.len()];
            let cases: Vec<(&str, &str)> = match imp {
                Implementation::Herald => vec![(HERALD_NEXT, "next"), (HERALD_CHOSEN, "chosen")],
                _ => vec![(imp.name(), "new")],
            };
            for (label, kind) in cases {
                let name = format!("{kind}-{}-{run}", slug(imp));
                let (ip, spec) = match kind {
                    "next" => {
                        let [v4, _] = c.next_proven(Duration::from_secs(60))?;
                        (v4, imp.allocated_service(&name))
                    }
                    // The far end of Herald's share: no check reaches it.
                    "chosen" => (imp.v4(100 + run as u32), imp.service(&name, imp.v4(100 + run as u32))),
                    _ => (imp.v4(1 + run as u32), imp.service(&name, imp.v4(1 + run as u32))),
                };
                let ms = create_once(c, &name, ip, spec)?;
                eprintln!("create {name} ({ip}), {label}: first ARP answer after {ms:.0} ms");
                times.entry(label.to_string()).or_default().push(ms);
            }
        }
    }
    println!(
        "Service creation (`kubectl apply`, its EndpointSlice already there) to the first ARP answer, {runs} runs \
         (probing every 10 ms):\n"
    );
    println!("| implementation | p50 | max |");
    println!("|---|---:|---:|");
    for (label, mut t) in times {
        println!(
            "| {label} | {:.0} ms | {:.0} ms |",
            percentile(&mut t, 50.0),
            percentile(&mut t, 100.0)
        );
    }
    println!();
    Ok(())
}

/// Creates `spec` (named `name`) with its EndpointSlice and returns the milliseconds from `kubectl apply` to the
/// first ARP answer for `ip`; deletes both again. Fails if `ip` is not answered within 60 s.
fn create_once(c: &mut Cluster, name: &str, ip: IpAddr, spec: ServiceSpec) -> Result<f64> {
    c.set_endpoints(name, &node_names(c))?;
    let probe = c.probe(ip, Duration::from_millis(10))?;
    settle(Duration::from_millis(300));
    let t = epoch_now();
    c.create_services(&[spec])?;
    probe
        .wait_answer(t, Duration::from_secs(60), |_| true)
        .with_context(|| format!("{ip} never answered ({name})"))?;
    let first = probe.first_answer(t).context("an answer was seen")?;
    drop(probe);
    c.kubectl(&["delete", "svc", name, "-n", "default", "--wait=false"])?;
    c.kubectl(&[
        "delete",
        "endpointslice",
        &format!("{name}-lab"),
        "-n",
        "default",
        "--wait=false",
    ])?;
    settle(Duration::from_secs(1));
    Ok((first - t) * 1000.0)
}

/// For each implementation in turn: grow to each size of IPv6 Services (with EndpointSlices), wait until every IP
/// answers, then count its API requests over `window` and read its speakers' memory; its Services are deleted before
/// the next implementation's (one implementation under load at a time).
fn load(c: &mut Cluster, peers: &Peers, sizes: &[usize], window: Duration) -> Result<()> {
    let mut rows = Vec::new();
    for imp in Implementation::ALL {
        let mut created = 0;
        let mut names = Vec::new();
        for &n in sizes {
            let t = epoch_now();
            let mut services = Vec::new();
            let mut slices = Vec::new();
            for k in created..n {
                let name = format!("load-{}-{k}", slug(imp));
                let set = format!("load-{}", slug(imp));
                let service = imp.service(&name, imp.v6(k as u32)).without_node_ports();
                services.push(labelled(&service.yaml(), &set));
                slices.push(labelled(&c.endpoints_yaml(&name, &node_names(c))?, &set));
                names.push(name);
            }
            c.create_many(&slices)?;
            c.create_many(&services)?;
            let ips: Vec<IpAddr> = (0..n as u32).map(|k| imp.v6(k)).collect();
            let mut answering = 0;
            let answered = wait_for(LOAD_TIMEOUT, || {
                let macs = c.answering_macs(&ips).ok()?;
                answering = macs.values().filter(|m| !m.is_empty()).count();
                eprintln!("{} at {n}: {answering} of {n} IPs answer", imp.name());
                (answering == n).then(|| epoch_now() - t)
            });
            created = n;
            settle(Duration::from_secs(10));
            let before = peers.requests(c, imp)?;
            let t0 = epoch_now();
            settle(window);
            let after = peers.requests(c, imp)?;
            let secs = epoch_now() - t0;
            let (writes, reads) = split(&after, &before);
            let mut rss = Vec::new();
            let mut gone = Vec::new();
            for i in 0..c.nodes.len() {
                match peers.usage(c, imp, i) {
                    Ok(u) => rss.push(u.rss_mib),
                    Err(_) => {
                        let code = peers.process(c, imp, i).and_then(|idx| c.lab.proc(idx).exited());
                        gone.push(format!("{} (exit status {code:?})", c.nodes[i].name));
                    }
                }
            }
            if !gone.is_empty() {
                // Keep every process's log for a look at why (and print their ends at the end).
                eprintln!("{} at {n}: speakers not running on {}", imp.name(), gone.join(", "));
                c.lab.mark_failed();
            }
            let all = match answered {
                Some(s) => format!("{s:.1} s"),
                None => format!("{answering} of {n} answer at {} s", LOAD_TIMEOUT.as_secs()),
            };
            let memory = match rss.len() {
                0 => "not running".to_string(),
                k => {
                    let range = format!(
                        "{:.0}–{:.0}",
                        rss.iter().copied().fold(f64::INFINITY, f64::min),
                        rss.iter().copied().fold(0.0, f64::max)
                    );
                    if k < c.nodes.len() {
                        format!("{range} ({} not running)", c.nodes.len() - k)
                    } else {
                        range
                    }
                }
            };
            rows.push(format!(
                "| {n} | {} | {all} | {:.1} | {:.1} | {memory} |",
                imp.name(),
                writes / secs,
                reads / secs,
            ));
            eprintln!("{}", rows.last().expect("a row"));
        }
        c.delete_labelled(SET_LABEL, &format!("load-{}", slug(imp)))?;
        settle(Duration::from_secs(5));
    }
    println!(
        "Scale: N single-stack IPv6 Services (each with an EndpointSlice), one implementation at a time; \"all answer\" \
         counts from the first create until every IP answers NDP; then over {} s the implementation's API requests per \
         second (the audit log, its ServiceAccounts only) and its speakers' resident memory (min–max over the 3 nodes, \
         MiB):\n",
        window.as_secs()
    );
    println!("| Services | implementation | all answer after | writes/s | reads/s | speaker RSS (MiB) |");
    println!("|---:|---|---:|---:|---:|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    Ok(())
}

type Counts = BTreeMap<(String, String), u64>;

/// Writes and reads between two counts.
fn split(after: &Counts, before: &Counts) -> (f64, f64) {
    let mut writes = 0.0;
    let mut reads = 0.0;
    for (key, n) in after {
        let d = n.saturating_sub(before.get(key).copied().unwrap_or(0)) as f64;
        match key.0.as_str() {
            "get" | "list" | "watch" => reads += d,
            _ => writes += d,
        }
    }
    (writes, reads)
}

/// The routers' AS; the nodes are AS 64512 (both implementations).
const ROUTER_ASN: u32 = 64500;
/// Herald's BGP addresses (its Eip `routed`) and MetalLB's (its IPAddressPool `routed`): 100 each, IPv4.
const HERALD_BGP: (&str, [u8; 3], u8) = ("198.51.100.128-198.51.100.227", [198, 51, 100], 128);
const METALLB_BGP: (&str, [u8; 3], u8) = ("203.0.113.16-203.0.113.115", [203, 0, 113], 16);
const BGP_IPS: usize = 100;

/// The `k`-th BGP address of `imp`.
fn bgp_ip(imp: Implementation, k: usize) -> IpAddr {
    let (_, net, base) = if imp == Implementation::Herald {
        HERALD_BGP
    } else {
        METALLB_BGP
    };
    assert!(k < BGP_IPS);
    IpAddr::from([net[0], net[1], net[2], base + k as u8])
}

/// The `k`-th BGP Service of `imp`, asking for `bgp_ip(k)`, in its Eip `routed` (Herald) or IPAddressPool
/// `routed` (MetalLB).
fn bgp_service(imp: Implementation, name: &str, k: usize) -> herald_netns_tests::cluster::ServiceSpec {
    let mut spec = imp.service(name, bgp_ip(imp, k)).without_node_ports();
    spec.eip = "routed".into();
    spec
}

/// BIRD 2 peering with every node (passive neighbours at their LAN addresses), importing everything, exporting
/// nothing, holding no kernel routes: what the test reads is its BGP table.
fn bird_config(router_id: &str, nodes: usize) -> String {
    let mut conf = format!("router id {router_id};\nprotocol device {{ scan time 10; }}\n");
    for i in 1..=nodes {
        let peer = format!("192.0.2.1{i}");
        conf.push_str(&format!(
            "protocol bgp n{} {{\n  local as {ROUTER_ASN};\n  neighbor {peer} as 64512;\n  ipv4 {{ import all; export none; }};\n}}\n",
            peer.replace('.', "_")
        ));
    }
    conf
}

/// Next hops of `prefix` at `router` (BIRD's `show route for`).
fn next_hops(router: &Router, ip: IpAddr) -> Vec<String> {
    let text = router.route(&format!("{ip}/32"));
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Networks and routes in the router's table (`show route count`: "N of M routes for K networks").
fn route_count(router: &Router) -> (u64, u64) {
    let text = router.cli("show route count").unwrap_or_default();
    let words: Vec<&str> = text.split_whitespace().collect();
    let num = |after: &str| {
        words
            .windows(2)
            .find(|w| w[1] == after)
            .and_then(|w| w[0].parse().ok())
            .unwrap_or(0)
    };
    (num("networks"), num("routes"))
}

/// BGP mode, Herald against MetalLB's native BGP, each towards its own BIRD on the LAN (same version, same
/// configuration), interleaved.
///
/// The scale step runs at 100 Services, not 1,000: MetalLB's native BGP mode announces IPv4 prefixes only, every IPv4
/// Service needs an IPv4 cluster IP too, and the documentation ranges the lab may use hold 768 IPv4 addresses in all
/// (the cluster's IPv4 Service range is 203.0.113.128/25).
fn bgp(c: &mut Cluster, peers: &mut Peers, runs: usize, services: usize) -> Result<()> {
    if services > BGP_IPS || runs > services {
        bail!("--bgp-services must be at most {BGP_IPS} and at least --runs");
    }
    let imps = [Implementation::Herald, Implementation::MetalLb];
    let nodes = c.nodes.len();
    let mut routers = BTreeMap::new();
    for (imp, addr, role) in [(imps[0], "192.0.2.1", "h"), (imps[1], "192.0.2.2", "m")] {
        let ns = c.lab.netns(&format!("r{role}"));
        let switch = c.switch.clone();
        c.lab.attach(&switch, "lan", &format!("l-r{role}"), &ns, "eth0")?;
        c.lab.addr(&ns, "eth0", &format!("{addr}/24"))?;
        let router = Router::start_with_config(&mut c.lab, &ns, RouterKind::Bird, role, &bird_config(addr, nodes))?;
        routers.insert(imp, router);
    }
    c.apply(&format!(
        "apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {{name: default}}\nspec: {{asn: 64512}}\n---\n\
         apiVersion: herald.dev/v1alpha1\nkind: BgpPeer\nmetadata: {{name: router}}\nspec: {{address: 192.0.2.1, asn: {ROUTER_ASN}}}\n---\n\
         apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata: {{name: routed}}\nspec: {{addresses: [\"{}\"], protocol: bgp}}\n",
        HERALD_BGP.0
    ))?;
    peers.metallb_bgp(c, "192.0.2.2", METALLB_BGP.0)?;
    for (imp, router) in &routers {
        for i in 1..=nodes {
            router
                .wait_established(&format!("192.0.2.1{i}"), Duration::from_secs(60))
                .with_context(|| format!("{}: node{i}'s BGP session", imp.name()))?;
        }
    }
    let all_hops: Vec<String> = (1..=nodes).map(|i| format!("192.0.2.1{i}")).collect();
    let mut create: BTreeMap<Implementation, Vec<f64>> = BTreeMap::new();
    let mut withdraw: BTreeMap<Implementation, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        for k in 0..imps.len() {
            let imp = imps[(run + k) % imps.len()];
            let router = &routers[&imp];
            // Service create → the route at the router (from any node), then from every node.
            let name = format!("bgp-{}-{run}", slug(imp));
            c.set_endpoints(&name, &node_names(c))?;
            let ip = bgp_ip(imp, run);
            let t = epoch_now();
            c.create_services(&[bgp_service(imp, &name, run)])?;
            wait_for(Duration::from_secs(60), || {
                (!next_hops(router, ip).is_empty()).then_some(())
            })
            .with_context(|| format!("{}: {ip} never reached the router", imp.name()))?;
            let ms = (epoch_now() - t) * 1000.0;
            eprintln!("BGP create {name} ({ip}) for {}: route after {ms:.0} ms", imp.name());
            create.entry(imp).or_default().push(ms);
            wait_for(Duration::from_secs(60), || {
                (next_hops(router, ip) == all_hops).then_some(())
            })
            .with_context(|| format!("{}: {ip} not from every node", imp.name()))?;
            // kill -9 of node1's speaker → node1 gone as a next hop.
            settle(Duration::from_millis(300 + u64::from(rand::random::<u16>() % 1000)));
            let t = epoch_now();
            peers.signal(c, imp, 0, "KILL")?;
            wait_for(Duration::from_secs(300), || {
                (!next_hops(router, ip).contains(&all_hops[0])).then_some(())
            })
            .with_context(|| format!("{}: node1 never withdrawn for {ip}", imp.name()))?;
            let ms = (epoch_now() - t) * 1000.0;
            eprintln!(
                "BGP kill -9 of node1's {} speaker: {ip} via node1 withdrawn after {ms:.0} ms",
                imp.name()
            );
            withdraw.entry(imp).or_default().push(ms);
            peers.wait_exit(c, imp, 0, Duration::from_secs(10));
            peers.start(c, imp, 0)?;
            router.wait_established(&all_hops[0], Duration::from_secs(120))?;
            wait_for(Duration::from_secs(60), || {
                (next_hops(router, ip) == all_hops).then_some(())
            })
            .with_context(|| format!("{}: node1 never came back for {ip}", imp.name()))?;
        }
    }
    println!("BGP mode (BIRD 2 as the router, one per implementation; 3 nodes), {runs} runs each:\n");
    println!("| event | implementation | p50 | max |");
    println!("|---|---|---:|---:|");
    for (label, table) in [
        ("Service create → route at the router", &mut create),
        ("kill -9 of node1's speaker → its route withdrawn", &mut withdraw),
    ] {
        for (imp, times) in table.iter_mut() {
            println!(
                "| {label} | {} | {:.0} ms | {:.0} ms |",
                imp.name(),
                percentile(times, 50.0),
                percentile(times, 100.0)
            );
        }
    }
    println!();

    // Scale: `services` Services → every route from every node at the router; one implementation at a
    // time.
    let mut rows = Vec::new();
    for imp in imps {
        let router = &routers[&imp];
        let names: Vec<String> = (runs..services).map(|k| format!("bgp-{}-{k}", slug(imp))).collect();
        let mut slices = Vec::new();
        let mut specs = Vec::new();
        let set = format!("bgp-{}", slug(imp));
        for (k, name) in (runs..services).zip(&names) {
            slices.push(labelled(&c.endpoints_yaml(name, &node_names(c))?, &set));
            specs.push(labelled(&bgp_service(imp, name, k).yaml(), &set));
        }
        c.create_many(&slices)?;
        let t = epoch_now();
        c.create_many(&specs)?;
        let networks = services as u64;
        let done = wait_for_every(Duration::from_secs(300), Duration::from_millis(100), || {
            (route_count(router) == (networks, networks * nodes as u64)).then(|| epoch_now() - t)
        });
        let rss: Vec<f64> = (0..nodes)
            .filter_map(|i| peers.usage(c, imp, i).ok())
            .map(|u| u.rss_mib)
            .collect();
        let (n, r) = route_count(router);
        rows.push(format!(
            "| {services} | {} | {} | {:.0}–{:.0} |",
            imp.name(),
            match done {
                Some(s) => format!("{s:.1} s"),
                None => format!("only {n} networks, {r} routes after 300 s"),
            },
            rss.iter().copied().fold(f64::INFINITY, f64::min),
            rss.iter().copied().fold(0.0, f64::max)
        ));
        eprintln!("{}", rows.last().expect("a row"));
        c.delete_labelled(SET_LABEL, &set)?;
        settle(Duration::from_secs(5));
    }
    println!(
        "Many BGP Services, each with its own IPv4 address, created with `kubectl create` after their EndpointSlices \
         (MetalLB's native mode announces IPv4 only, and IPv4 cluster IPs from the documentation ranges run out above \
         a hundred): time until the router has every route from every node, and the speakers' resident memory then \
         (MiB, min–max over the nodes):\n"
    );
    println!("| Services | implementation | all routes at the router after | speaker RSS (MiB) |");
    println!("|---|---|---:|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    Ok(())
}
