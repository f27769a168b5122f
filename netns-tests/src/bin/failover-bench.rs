//! Layer 2 failover and election benchmark: what a client on the LAN sees when the announcing node dies or stops,
//! how fast a new Service becomes reachable, and how much API traffic the election costs in steady state.
//!
//! Run as root (after `cargo build --bin herald --bin lab-apiserver`, or with `HERALD_BIN` / `LAB_APISERVER_BIN`):
//!
//! ```text
//! cargo run --release -p herald-netns-tests --bin failover-bench -- [--runs 20] [--load-seconds 20] [--sizes 1000,5000,10000]
//!     [--only crash,tuned,handover,create,load,allocator] [--apiservers lab,kube]
//! ```
//!
//! Topology: `herald_netns_tests::cluster` (3 nodes, a client; lab-apiserver, or the real kube-apiserver with
//! `HERALD_TEST_APISERVER=kube`). With `--apiservers lab,kube` every part runs on one cluster per server, both up at
//! once and their runs interleaved (one event on the first, one on the second, ...), so the machine's noise falls on
//! both sides alike. The client probes the Service IP
//! every 20 ms with `arping`; `tcpdump` on the client records each probe and answer (kernel timestamps). The gap is
//! the longest time between two answers around the event. The load part is issue #19's scale measurement
//! (`herald_netns_tests::cluster::scale`): time until every IP is held and until ownership is quiet, then the steady
//! state's API requests and each agent's memory and CPU. Prints Markdown tables.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_netns_tests::cluster::kube::ApiServerKind;
use herald_netns_tests::cluster::scale::{self, ScaleLimits};
use herald_netns_tests::cluster::{
    Cluster, ClusterOptions, ServiceSpec, TUNED_AGENT_ARGS, epoch_now, percentile, settle,
};
use herald_netns_tests::{require, wait_for};

const PROBE: Duration = Duration::from_millis(20);

/// The parts of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// kill -9 of the announcing agent, default timings.
    Crash,
    /// kill -9 with the tuned timings.
    Tuned,
    /// SIGTERM of the announcing agent (clean handover).
    Handover,
    /// Service creation to the first ARP answer.
    Create,
    /// Scale: time until N IPs are held and quiet, then steady-state API requests, agent memory and CPU.
    Load,
    /// kill -9 of the allocator's leader, then a new Service: time until it has an IP.
    Allocator,
}

/// Layer 2 failover and election benchmark (root; prints Markdown tables).
#[derive(clap::Parser, Debug)]
struct Args {
    /// Runs per failover measurement.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Length of each steady-state API load window.
    #[arg(long, default_value_t = 20)]
    load_seconds: u64,
    /// Service IP counts for the load part (issue #19's sizes; each size adds Services to the last).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    sizes: Vec<usize>,
    /// Only these parts (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Part>,
    /// The API servers to compare, side by side (default: the one `HERALD_TEST_APISERVER` chooses).
    #[arg(long, value_delimiter = ',')]
    apiservers: Vec<Server>,
}

/// An API server to run the benchmark against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Server {
    /// lab-apiserver.
    Lab,
    /// The real kube-apiserver (+ etcd) of scripts/kube-apiserver.sh.
    Kube,
}

fn kind_name(kind: ApiServerKind) -> &'static str {
    match kind {
        ApiServerKind::Lab => "lab-apiserver",
        ApiServerKind::Kube => "kube-apiserver",
    }
}

/// One cluster per API server, with these agent flags.
fn clusters(name: &str, agent_args: &[&str], kinds: &[ApiServerKind]) -> Result<Vec<(ApiServerKind, Cluster)>> {
    kinds
        .iter()
        .map(|&kind| {
            let options = ClusterOptions {
                apiserver: Some(kind),
                ..ClusterOptions::with_args(agent_args)
            };
            Ok((kind, Cluster::start(name, &options)?))
        })
        .collect()
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let runs = args.runs;
    let wants = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let kinds: Vec<ApiServerKind> = if args.apiservers.is_empty() {
        vec![ApiServerKind::from_env()]
    } else {
        args.apiservers
            .iter()
            .map(|s| match s {
                Server::Lab => ApiServerKind::Lab,
                Server::Kube => ApiServerKind::Kube,
            })
            .collect()
    };
    if !require(&["ip", "arping", "tcpdump", "kubectl", "python3", "nft"]) {
        bail!("failover-bench needs root and ip, arping, tcpdump, kubectl, python3, nft");
    }
    println!(
        "# Layer 2 failover and election (3 nodes, client probing every {} ms)\n",
        PROBE.as_millis()
    );
    let mut failover_rows = Vec::new();
    if wants(Part::Crash) {
        failover_rows.extend(failover(
            "defaults (renew 1s, takeover 3s, deadline 2s)",
            &[],
            "KILL",
            runs,
            &kinds,
        )?);
    }
    if wants(Part::Tuned) {
        failover_rows.extend(failover(
            "tuned (renew 300ms, takeover 1s, deadline 600ms)",
            &TUNED_AGENT_ARGS,
            "KILL",
            runs,
            &kinds,
        )?);
    }
    if wants(Part::Handover) {
        failover_rows.extend(failover("defaults", &[], "TERM", runs, &kinds)?);
    }
    if !failover_rows.is_empty() {
        println!("| event | timings | API server | runs | gap p50 | gap p99 | gap max | dual-answer probes |");
        println!("|---|---|---|---:|---:|---:|---:|---:|");
        for r in &failover_rows {
            println!("{r}");
        }
        println!();
    }
    if wants(Part::Create) {
        create_to_answer(runs, &kinds)?;
    }
    if wants(Part::Load) {
        api_load(&args.sizes, Duration::from_secs(args.load_seconds), &kinds)?;
    }
    if wants(Part::Allocator) {
        allocator_failover(runs, &kinds)?;
    }
    Ok(())
}

/// `runs` times on each server's cluster, interleaved, at default timings: kill -9 the agent that holds the
/// allocator's Lease, create a Service at once, and time until its status has an IP (another agent took the Lease,
/// listed, and allocated). The killed agent is restarted between runs.
fn allocator_failover(runs: usize, kinds: &[ApiServerKind]) -> Result<()> {
    let mut sides: Vec<(ApiServerKind, Cluster, Vec<f64>)> = clusters("failover-bench-alloc", &[], kinds)?
        .into_iter()
        .map(|(kind, c)| (kind, c, Vec::new()))
        .collect();
    for run in 0..runs {
        for (kind, c, times) in &mut sides {
            let holder = wait_for(Duration::from_secs(30), || c.allocator_leader().ok().flatten())
                .context("nobody holds the allocator Lease")?;
            let victim = c.node_index(&holder).context("the allocator's leader is a lab node")?;
            // A random point in the leader's renew period.
            settle(Duration::from_millis(500 + u64::from(rand::random::<u16>() % 1000)));
            let name = format!("alloc{run}");
            let t = Instant::now();
            c.signal_agent(victim, "KILL")?;
            c.create_services(&[ServiceSpec::v4(&name)])?;
            c.wait_service_ips(&[&name], Duration::from_secs(60))
                .with_context(|| format!("run {run} ({}): {name} got no IP", kind_name(*kind)))?;
            let took = t.elapsed().as_secs_f64() * 1000.0;
            eprintln!(
                "allocator failover {} run {run}: leader {holder} killed, {name} has an IP after {took:.0} ms",
                kind_name(*kind)
            );
            times.push(took);
            c.kubectl(&["delete", "svc", &name, "-n", "default", "--wait=false"])?;
            c.wait_agent_exit(victim, Duration::from_secs(10));
            c.start_agent(victim)?;
            c.wait_agent_ready(victim, Duration::from_secs(60))?;
            settle(Duration::from_secs(2));
        }
    }
    println!("\n## Allocator failover: kill -9 of the allocator's leader, then a new Service (defaults)\n");
    println!("| API server | runs | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (kind, _, mut times) in sides {
        println!(
            "| {} | {runs} | {:.0} ms | {:.0} ms | {:.0} ms |",
            kind_name(kind),
            percentile(&mut times, 50.0),
            percentile(&mut times, 99.0),
            percentile(&mut times, 100.0)
        );
    }
    Ok(())
}

/// `runs` times on each server's cluster, interleaved: kill (`KILL`) or stop (`TERM`) the holder's agent, measure the
/// gap, restart it. One table row per server.
fn failover(
    label: &str,
    agent_args: &[&str],
    signal: &str,
    runs: usize,
    kinds: &[ApiServerKind],
) -> Result<Vec<String>> {
    let mut sides = Vec::new();
    for (kind, mut c) in clusters("failover-bench", agent_args, kinds)? {
        c.create_services(&[ServiceSpec::v4("web")])?;
        let ip = c.wait_service_ips(&["web"], Duration::from_secs(30))?["web"][0];
        let probe = c.probe(ip, PROBE)?;
        sides.push((kind, c, ip, probe, Vec::new(), 0));
    }
    for run in 0..runs {
        for (kind, c, ip, probe, gaps, dual) in &mut sides {
            let holder = c.wait_lease_holder(*ip, Duration::from_secs(20), |_| true)?;
            let victim = c.node_index(&holder).context("holder is a lab node")?;
            let old_mac = c.nodes[victim].mac.clone();
            probe
                .wait_answer(epoch_now(), Duration::from_secs(10), |m| m == old_mac)
                .context("holder answers")?;
            settle(Duration::from_millis(500));
            let t = epoch_now();
            c.signal_agent(victim, signal)?;
            let new_mac = probe
                .wait_answer(t, Duration::from_secs(30), |m| m != old_mac)
                .with_context(|| format!("run {run} ({}): nobody took over from {holder}", kind_name(*kind)))?;
            settle(Duration::from_millis(300));
            let s = probe.stats(t - 0.5, epoch_now());
            eprintln!(
                "{signal} {label} {} run {run}: {holder} -> {}: gap {:.0} ms",
                kind_name(*kind),
                c.node_of_mac(&new_mac).unwrap_or("?"),
                s.longest_gap.as_secs_f64() * 1000.0
            );
            gaps.push(s.longest_gap.as_secs_f64() * 1000.0);
            *dual += s.double_answered;
            c.wait_agent_exit(victim, Duration::from_secs(10));
            c.start_agent(victim)?;
            c.wait_agent_ready(victim, Duration::from_secs(60))?;
            // Let the restarted node's liveness lease be seen before the next run.
            settle(Duration::from_secs(2));
        }
    }
    let event = if signal == "KILL" {
        "crash (kill -9)"
    } else {
        "clean stop (SIGTERM)"
    };
    Ok(sides
        .into_iter()
        .map(|(kind, _, _, _, mut gaps, dual)| {
            format!(
                "| {event} | {label} | {} | {runs} | {:.0} ms | {:.0} ms | {:.0} ms | {dual} |",
                kind_name(kind),
                percentile(&mut gaps, 50.0),
                percentile(&mut gaps, 99.0),
                percentile(&mut gaps, 100.0)
            )
        })
        .collect())
}

/// Times of one kind of answer: (from kubectl's start, from its return), ms.
type Timings = Vec<(f64, f64)>;

/// One create, timed: the `kubectl create` started at `start` and returned at `done`; `first` answers, per IP.
struct Created {
    start: f64,
    done: f64,
    first: Vec<f64>,
}

/// Creates `spec` and times the first answer for each of `ips` (ARP for IPv4, NA for IPv6).
fn create_timed(c: &mut Cluster, spec: ServiceSpec, ips: &[IpAddr]) -> Result<Created> {
    let probes = ips
        .iter()
        .map(|ip| c.probe(*ip, Duration::from_millis(10)))
        .collect::<Result<Vec<_>>>()?;
    settle(Duration::from_millis(300));
    let start = epoch_now();
    c.create_services(&[spec])?;
    let done = epoch_now();
    let mut first = Vec::new();
    for (ip, probe) in ips.iter().zip(&probes) {
        probe
            .wait_answer(start, Duration::from_secs(30), |_| true)
            .with_context(|| format!("{ip} never answered"))?;
        first.push(probe.first_answer(start).context("an answer was seen")?);
    }
    Ok(Created { start, done, first })
}

/// Time from `kubectl create` of a Service to the first ARP answer (IPv4) and Neighbor Advertisement (IPv6), on
/// each server's cluster in turn: a dual-stack Service that gets the pool's next addresses (proven free by the
/// prober: no probe before the first answer), and, interleaved with it, one asking for a chosen address
/// (`herald.dev/ips`; nobody checked it, so its node probes it first).
fn create_to_answer(runs: usize, kinds: &[ApiServerKind]) -> Result<()> {
    struct Side {
        kind: ApiServerKind,
        c: Cluster,
        /// (from kubectl's start, from its return) per answer: IPv4, IPv6, the chosen address.
        v4: Vec<(f64, f64)>,
        v6: Vec<(f64, f64)>,
        chosen: Vec<(f64, f64)>,
    }
    let mut sides: Vec<Side> = clusters("failover-bench-create", &[], kinds)?
        .into_iter()
        .map(|(kind, c)| Side {
            kind,
            c,
            v4: Vec::new(),
            v6: Vec::new(),
            chosen: Vec::new(),
        })
        .collect();
    for run in 0..runs {
        for side in &mut sides {
            let server = kind_name(side.kind);
            let [v4, v6] = side.c.next_proven(Duration::from_secs(60))?;
            let name = format!("new{run}");
            let r = create_timed(&mut side.c, ServiceSpec::dual(&name), &[v4, v6])?;
            let got = side
                .c
                .wait_service_ips(&[&name], Duration::from_secs(10))?
                .remove(&name)
                .unwrap_or_default();
            if got != [v4, v6] {
                bail!("{name} got {got:?}, not the proven {v4} and {v6}");
            }
            let ms = |t: f64| (t - r.start) * 1000.0;
            eprintln!(
                "create {name} on {server}: ARP {v4} {:.0} ms, NA {v6} {:.0} ms (kubectl returned after {:.0} ms)",
                ms(r.first[0]),
                ms(r.first[1]),
                ms(r.done)
            );
            side.v4.push((ms(r.first[0]), (r.first[0] - r.done) * 1000.0));
            side.v6.push((ms(r.first[1]), (r.first[1] - r.done) * 1000.0));
            let ip: IpAddr = format!("192.0.2.{}", 200 + run).parse()?;
            let name = format!("chosen{run}");
            let r = create_timed(&mut side.c, ServiceSpec::v4(&name).with_ips(&ip.to_string()), &[ip])?;
            eprintln!(
                "create {name} on {server}: ARP {ip} {:.0} ms",
                (r.first[0] - r.start) * 1000.0
            );
            side.chosen
                .push(((r.first[0] - r.start) * 1000.0, (r.first[0] - r.done) * 1000.0));
        }
    }
    println!(
        "Service creation (`kubectl create`) to the first answer, {runs} runs (probing every 10 ms). Each time from \
         kubectl's start, and in brackets from its return (the create was accepted in between):\n"
    );
    println!("| API server | Service | answer | p50 | max |");
    println!("|---|---|---|---:|---:|");
    for side in &mut sides {
        let rows: [(&str, &str, &mut Timings); 3] = [
            (
                "dual-stack, next addresses (proven free)",
                "first ARP reply",
                &mut side.v4,
            ),
            ("", "first Neighbor Advertisement", &mut side.v6),
            (
                "IPv4, chosen address (probed first)",
                "first ARP reply",
                &mut side.chosen,
            ),
        ];
        for (what, answer, times) in rows {
            let mut from_start: Vec<f64> = times.iter().map(|t| t.0).collect();
            let mut from_done: Vec<f64> = times.iter().map(|t| t.1).collect();
            println!(
                "| {} | {what} | {answer} | {:.0} ms ({:.0} ms) | {:.0} ms ({:.0} ms) |",
                kind_name(side.kind),
                percentile(&mut from_start, 50.0),
                percentile(&mut from_done, 50.0),
                percentile(&mut from_start, 100.0),
                percentile(&mut from_done, 100.0)
            );
        }
    }
    println!();
    Ok(())
}

/// Issue #19's scale measurement with `n` Service IPs (IPv6 single-stack Services) on 3 nodes, for each size on each
/// server's cluster in turn (both clusters up for the whole part; each size adds Services to the last).
fn api_load(sizes: &[usize], window: Duration, kinds: &[ApiServerKind]) -> Result<()> {
    let sides = clusters("failover-bench-load", &[], kinds)?;
    let mut rows = Vec::new();
    let mut created = 0;
    for &n in sizes {
        for (kind, c) in &sides {
            let limits = ScaleLimits::generous(n, window);
            let r = scale::grow(c, created, n, &limits)
                .with_context(|| format!("{n} Service IPs on {}", kind_name(*kind)))?;
            let nodes = c.nodes.len() as f64;
            let nf = n as f64;
            let held = match (r.held_after, r.held_after_first_create) {
                (Some(t), Some(first)) => format!("{:.1} s ({:.1} s)", t.as_secs_f64(), first.as_secs_f64()),
                _ => format!("only {} after {:.0} s", r.held, limits.held.as_secs_f64()),
            };
            let quiet = match r.quiet_after {
                Some(t) => format!("{:.0} s", t.as_secs_f64()),
                None => format!("not within {:.0} s", limits.quiet.as_secs_f64()),
            };
            let startup = |key: &str| r.startup_requests.get(key).copied().unwrap_or(0);
            let added = (n - created).max(1) as f64;
            rows.push(format!(
                "| {n} | {} | {:.1} s | {held} | {quiet} | {} ({:.2}/IP) | {} | {:.1} | {:.1} | {} | {} | {:.1} | {:.1} |",
                kind_name(*kind),
                r.created_in.as_secs_f64(),
                startup("get leases"),
                startup("get leases") as f64 / added,
                startup("create leases"),
                r.writes_per_s,
                r.reads_per_s,
                r.rss_column(),
                r.cpu_column(),
                nf / 2.0,
                nf * (nodes - 1.0) / (1.6 * 2.0)
            ));
        }
        created = n;
    }
    println!(
        "Scale with N single-stack IPv6 Service IPs on 3 nodes (Layer 2). Services created with `kubectl create`, 4 \
         calls of 500 at a time; \"all IPs held\" counts from the end of creation (in parentheses: from the first \
         create); \"quiet\" is the end of the first {} s window in which no IP lease and no Service was written; the \
         agents' Lease GETs and creates from the first create until then (lab-apiserver `/metrics`). Then \
         over {} s: the agents' API requests per second (lab-apiserver `/metrics`; kube-apiserver: its audit log, the \
         agents' ServiceAccount only), each agent's resident set (peak so far from VmHWM / at the end of the window, \
         MiB) and its CPU (% of one core); `*` marks the allocator's leader. Last, a lease-per-Service design renewing \
         every 2 s (N/2 writes/s, N·(M−1)/(1.6·2) reads/s):\n",
        scale::QUIET_WINDOW.as_secs(),
        window.as_secs()
    );
    println!(
        "| Service IPs | API server | created in | all IPs held after | quiet after | Lease GETs until quiet | Lease \
         creates | Herald writes/s | Herald reads/s | RSS peak/steady per agent (MiB) | CPU % per agent | \
         lease-per-Service writes/s | lease-per-Service reads/s |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!();
    Ok(())
}
