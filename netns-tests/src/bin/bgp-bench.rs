//! BGP speaker benchmark (root only): how long until a router holds 10,000 prefixes announced by Herald, and by
//! BIRD 2 announcing the same 10,000 static routes, in one run; and the speakers' memory at 10,000 prefixes.
//!
//! The router is FRR (bgpd + zebra) in its own namespace; each speaker runs in a node namespace and opens one IPv6
//! session to it. The prefixes are 10,000 IPv6 /128s in 2001:db8:1::/64 (documentation space). Each round starts a
//! speaker, polls the router's received-prefix count every 10 ms, and stops the speaker before the next round.
//!
//! Usage: `cargo build --release --bin herald -p herald && cargo run --release -p herald-netns-tests --bin bgp-bench
//! -- [rounds]` with `HERALD_BIN=target/release/herald`.

use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_netns_tests::bgp::{BgpLab, NODE_ASN, ROUTER_ASN, ROUTER_V6, Router, RouterKind, RouterSpec, node_v6};
use herald_netns_tests::{ProcUsage, require, wait_for};

const PREFIXES: u32 = 10_000;
const TIMEOUT: Duration = Duration::from_secs(120);

fn prefix(i: u32) -> String {
    format!(
        "{}/128",
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16)
    )
}

/// Prefixes the router accepted from `peer`.
fn received(router: &Router, peer: &str) -> u64 {
    let Ok(out) = router.cli("show bgp ipv6 unicast summary json") else {
        return 0;
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&out) else {
        return 0;
    };
    json["peers"][peer]["pfxRcd"].as_u64().unwrap_or(0)
}

struct Sample {
    established: Duration,
    all_received: Duration,
    rss_mib: f64,
}

/// Starts a speaker with `start`, waits for the router to hold every prefix from `peer`, stops it.
fn measure(
    bgp: &mut BgpLab,
    peer: &str,
    count: u64,
    start: impl FnOnce(&mut BgpLab) -> Result<usize>,
) -> Result<Sample> {
    let t0 = Instant::now();
    let proc = start(bgp)?;
    let router = bgp.router.as_ref().expect("router");
    wait_for(TIMEOUT, || router.established(peer).then_some(())).context("session never came up")?;
    let established = t0.elapsed();
    wait_for(TIMEOUT, || (received(router, peer) >= count).then_some(()))
        .with_context(|| format!("router holds only {} prefixes", received(router, peer)))?;
    let all_received = t0.elapsed();
    let rss_mib = ProcUsage::read(bgp.lab.pid(proc))?.rss_mib;
    bgp.lab.proc(proc).signal("INT")?;
    bgp.lab.proc(proc).wait_exit(Duration::from_secs(10));
    let router = bgp.router.as_ref().expect("router");
    wait_for(TIMEOUT, || (received(router, peer) == 0).then_some(())).context("routes not withdrawn")?;
    Ok(Sample {
        established,
        all_received,
        rss_mib,
    })
}

fn bird_speaker_config() -> String {
    let mut c = String::from("router id 192.0.2.12;\nprotocol device { }\nprotocol static s6 {\n  ipv6;\n");
    for i in 0..PREFIXES {
        let _ = writeln!(c, "  route {} blackhole;", prefix(i));
    }
    let _ = write!(
        c,
        "}}\nprotocol bgp r6 {{\n  local as {NODE_ASN};\n  neighbor {ROUTER_V6} as {ROUTER_ASN};\n  \
         ipv6 {{ import none; export all; next hop self; }};\n}}\n"
    );
    c
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    if !require(&["ip", "zebra", "bgpd", "vtysh", "bird"]) {
        bail!("the BGP benchmark needs root, FRR and BIRD");
    }
    let rounds: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let mut bgp = BgpLab::new("bgp-bench", 2)?;
    let mut spec = RouterSpec::new(RouterKind::Frr, 2);
    spec.hold_time = 90;
    bgp.start_router(spec)?;

    let prefixes: Vec<String> = (0..PREFIXES).map(prefix).collect();
    let bird_conf = bgp.lab.dir().join("speaker-bird.conf");
    std::fs::write(&bird_conf, bird_speaker_config())?;
    let bird_sock = bgp.lab.dir().join("speaker-bird.ctl");

    let mut herald = Vec::new();
    let mut bird = Vec::new();
    // Round 0 warms up (FRR finishing its start, page cache) and is not counted.
    for round in 0..=rounds {
        let h = measure(&mut bgp, &node_v6(1), u64::from(PREFIXES), |bgp| {
            let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
            bgp.start_speaker_to(1, &[ROUTER_V6], &[], &refs)
        })?;
        let b = measure(&mut bgp, &node_v6(2), u64::from(PREFIXES), |bgp| {
            let ns = bgp.nodes[1].clone();
            let conf = bird_conf.display().to_string();
            let sock = bird_sock.display().to_string();
            bgp.lab
                .spawn(&ns, "bird-speaker", &["bird", "-f", "-c", &conf, "-s", &sock])
        })?;
        eprintln!(
            "round {round}{}: herald {:?} (established {:?}, {:.1} MiB), bird {:?} (established {:?}, {:.1} MiB)",
            if round == 0 { " (warm-up)" } else { "" },
            h.all_received,
            h.established,
            h.rss_mib,
            b.all_received,
            b.established,
            b.rss_mib
        );
        if round > 0 {
            herald.push(h);
            bird.push(b);
        }
    }
    let idle = measure(&mut bgp, &node_v6(1), 1, |bgp| {
        bgp.start_speaker_to(1, &[ROUTER_V6], &[], &[&prefix(0)])
    })?;
    let h_all = median(herald.iter().map(|s| s.all_received).collect());
    let b_all = median(bird.iter().map(|s| s.all_received).collect());
    let h_xfer = median(herald.iter().map(|s| s.all_received - s.established).collect());
    let b_xfer = median(bird.iter().map(|s| s.all_received - s.established).collect());
    let h_rss = herald.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let b_rss = bird.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    println!("| speaker | start → router holds 10,000 (median of {rounds}) | Established → 10,000 | RSS at 10,000 |");
    println!("|---|---|---|---|");
    println!(
        "| Herald | {:.0} ms | {:.0} ms | {:.1} MiB |",
        ms(h_all),
        ms(h_xfer),
        h_rss
    );
    println!(
        "| BIRD 2.0.12 | {:.0} ms | {:.0} ms | {:.1} MiB |",
        ms(b_all),
        ms(b_xfer),
        b_rss
    );
    println!("| Herald, 1 prefix | | | {:.1} MiB |", idle.rss_mib);
    println!(
        "\nHerald / BIRD time ratio: {:.2} (start → 10,000), {:.2} (Established → 10,000)",
        ms(h_all) / ms(b_all),
        ms(h_xfer) / ms(b_xfer)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
