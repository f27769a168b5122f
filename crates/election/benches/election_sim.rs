//! Failover timing and API load of the ownership protocol, measured in the deterministic simulation of
//! `tests/support` (3 ms request and reply latency, 5 ms watch delay). Prints tables; run with
//! `cargo bench -p herald-election --bench election_sim`.
//!
//! These are protocol numbers (what the decision logic does with the given timings), not wire measurements: the
//! netns failover tests measure the real gap a client sees.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::IpAddr;
use std::time::Duration;

use herald_election::ElectionTiming;
use support::{Sim, SimConfig, ms};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn sim(timing: ElectionTiming) -> Sim {
    let mut sim = Sim::new(SimConfig {
        timing,
        ..Default::default()
    });
    for n in NODES {
        sim.add_agent_with(n, ms(5), 1.0);
    }
    sim
}

fn ips(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::from([10, 0, (i / 250) as u8, (i % 250 + 1) as u8]))
        .collect()
}

/// Gap between the holder going away and another node announcing, over `runs` runs with the event placed at
/// different phases of the renew cycle.
fn gaps(timing: ElectionTiming, runs: u32, graceful: bool) -> Vec<Duration> {
    let x = ips(1)[0];
    let mut out = Vec::new();
    for run in 0..runs {
        let mut s = sim(timing);
        s.set_desired(x, &NODES);
        s.advance(Duration::from_secs(3));
        // Spread the event over one renew period.
        s.advance(timing.node_renew_period.mul_f64(f64::from(run) / f64::from(runs)));
        let holder = s.announcers(x)[0];
        let at = s.now;
        if graceful {
            s.stop(holder);
        } else {
            s.crash(holder);
        }
        s.advance(timing.takeover_after * 3);
        let back = s.first_announce_after(x, at, Some(holder)).expect("failover");
        let gone = s
            .decisions
            .iter()
            .find(|d| d.ip == x && d.agent == holder && !d.announce)
            .map_or(at, |d| d.at);
        out.push(back - gone.max(at));
    }
    out.sort();
    out
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    let defaults = ElectionTiming::default();
    let tuned = ElectionTiming {
        node_renew_period: ms(300),
        renew_deadline: ms(700),
        takeover_after: ms(1000),
        stagger_step: ms(20),
    };
    println!("## Failover gap in simulation (3 nodes, 50 runs each)\n");
    println!("| timing (R / D / T / step) | event | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, t) in [
        ("1s / 2s / 3s / 50ms (default)", defaults),
        ("300ms / 700ms / 1s / 20ms (tuned)", tuned),
    ] {
        for (event, graceful) in [("crash (kill -9)", false), ("graceful stop", true)] {
            let g = gaps(t, 50, graceful);
            println!(
                "| {name} | {event} | {:?} | {:?} | {:?} |",
                pct(&g, 0.5),
                pct(&g, 0.99),
                g[g.len() - 1]
            );
        }
    }

    println!("\n## API requests in steady state (3 nodes, defaults, 60 s simulated)\n");
    println!(
        "| Service IPs | Herald writes/s | Herald reads/s | lease-per-Service (client-go, retry 2 s) writes/s | reads/s |"
    );
    println!("|---|---|---|---|---|");
    for n in [1u32, 100, 1000] {
        let mut s = sim(defaults);
        for x in ips(n) {
            s.set_desired(x, &NODES);
        }
        s.advance(Duration::from_secs(10));
        let before = s.store.stats();
        s.advance(Duration::from_secs(60));
        let after = s.store.stats();
        let writes = (after.creates + after.replaces - before.creates - before.replaces) as f64 / 60.0;
        let reads = (after.gets - before.gets) as f64 / 60.0;
        // client-go: the holder PUTs every retry period; each other candidate GETs every retry period.
        let per_service_writes = f64::from(n) / 2.0;
        let per_service_reads = f64::from(n) * (NODES.len() as f64 - 1.0) / 2.0;
        println!("| {n} | {writes:.2} | {reads:.2} | {per_service_writes:.1} | {per_service_reads:.1} |");
    }
}
