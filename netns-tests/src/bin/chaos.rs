//! The chaos soak (issue #16): a 4-node cluster (Layer 2 and BGP Services, 40 IPs, some sharing one, some
//! `externalTrafficPolicy: Local`), a client probing every Layer 2 IP every 20 ms and a GoBGP router, under random
//! events drawn from `--seed`: agents killed, stopped and restarted, links flapping, a node cut off from the API, the
//! API server down or restarted, Node labels, Eip edits, Services created, changed and deleted, endpoints moving.
//! Invariants are checked all along; the run fails on any violation and prints the seed that replays it.
//!
//! Run as root (after `cargo build --bin herald --bin lab-apiserver`, or with `HERALD_BIN` / `LAB_APISERVER_BIN`):
//!
//! ```text
//! cargo run --release -p herald-netns-tests --bin chaos -- [--minutes 30] [--seed N] [--apiserver lab|kube]
//! ```
//!
//! `scripts/bench.sh chaos` runs it for 30 minutes against each server; CI runs 3 minutes (`netns-tests/tests/chaos.rs`).

use std::time::Duration;

use anyhow::Result;
use herald_netns_tests::chaos::run::{Options, run};
use herald_netns_tests::cluster::kube::ApiServerKind;
use herald_netns_tests::require;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Server {
    Lab,
    Kube,
}

#[derive(clap::Parser, Debug)]
#[command(about = "Herald's chaos soak (network namespaces; root)")]
struct Args {
    /// How long events are drawn, in minutes.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seed of every random choice; a random one (printed) when not given.
    #[arg(long)]
    seed: Option<u64>,
    /// The API server (default: `HERALD_TEST_APISERVER`, else lab-apiserver).
    #[arg(long, value_enum)]
    apiserver: Option<Server>,
    /// Shortest and longest API outage, seconds (`30-90`).
    #[arg(long, default_value = "30-90", value_parser = parse_range)]
    api_down: (u64, u64),
    /// Shortest and longest pause between two events, seconds (`1-10`).
    #[arg(long, default_value = "1-10", value_parser = parse_range)]
    pause: (u64, u64),
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').ok_or("expected LOW-HIGH, e.g. 30-90")?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|e| format!("{a}: {e}"))?,
        b.trim().parse().map_err(|e| format!("{b}: {e}"))?,
    );
    if a > b {
        return Err(format!("{a} is more than {b}"));
    }
    Ok((a, b))
}

fn main() -> Result<()> {
    let args: Args = clap::Parser::parse();
    if !require(&["ip", "kubectl", "gobgpd", "gobgp", "python3", "nft"]) {
        anyhow::bail!("missing tools (see above)");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let opts = Options {
        seed,
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        apiserver: args.apiserver.map(|s| match s {
            Server::Lab => ApiServerKind::Lab,
            Server::Kube => ApiServerKind::Kube,
        }),
        api_down: args.api_down,
        pause: args.pause,
        ..Options::default()
    };
    let report = run(opts)?;
    println!("\n{}", report.table());
    if !report.violations.is_empty() {
        anyhow::bail!(
            "{} invariant violations (replay with --seed {seed})",
            report.violations.len()
        );
    }
    Ok(())
}
