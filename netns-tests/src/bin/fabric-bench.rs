//! BGP mode in racks, timed (root only), on the topology of `herald_netns_tests::fabric` (FRR spine, FRR leaf1 over
//! node1 and node2, BIRD leaf2 over node3, agents against lab-apiserver or, with `HERALD_TEST_APISERVER=kube`, the
//! real kube-apiserver):
//!
//! - **create → route**: `kubectl apply` of a Service until the spine's kernel holds its IP over both leaves
//!   (polled every 5 ms), then delete until the route is gone; `--runs` times (default 20).
//! - **node loss → withdrawn**: node3 lost while it holds a route; time until the spine's kernel no longer sends
//!   anything to leaf2: its agent killed (kill -9: the kernel closes the session), and its rack link cut (no FIN, no
//!   RST: leaf2 waits for the hold time, 9 s here; BFD is not implemented yet). `--loss-runs` times each (default 3).
//!
//! Usage: `cargo build --release -p herald-netns-tests --bins && sudo -E HERALD_BIN=target/dist/herald
//! LAB_APISERVER_BIN=target/release/lab-apiserver target/release/fabric-bench [--runs N] [--loss-runs N]`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_netns_tests::fabric::{Fabric, HOLD_TIME, RACKS};
use herald_netns_tests::require;

const TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let mut runs = 20;
    let mut loss_runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> Result<usize> {
            args.next()
                .with_context(|| format!("{arg} needs a number"))?
                .parse()
                .with_context(|| format!("{arg}: not a number"))
        };
        match arg.as_str() {
            "--runs" => runs = value()?,
            "--loss-runs" => loss_runs = value()?,
            other => bail!("unknown argument {other} (--runs N, --loss-runs N)"),
        }
    }
    if !require(Fabric::TOOLS) {
        bail!("missing tools (see above)");
    }
    let mut f = Fabric::start("fabric-bench")?;
    let both = [RACKS[0].uplink.1, RACKS[1].uplink.1];
    let leaf1_only = [RACKS[0].uplink.1];
    // Warm up: the sessions are up and a first Service has its route.
    let warm = f.create_service("warm", TIMEOUT)?;
    let warm_prefix = format!("{warm}/32");
    f.wait_spine(&warm_prefix, &both, TIMEOUT)?;

    let mut create = Vec::new();
    for run in 0..runs {
        let name = format!("bench{run}");
        let t0 = Instant::now();
        let ip = f.create_service(&name, TIMEOUT)?;
        let prefix = format!("{ip}/32");
        f.wait_spine(&prefix, &both, TIMEOUT)
            .with_context(|| format!("run {run}"))?;
        create.push(t0.elapsed());
        f.apiserver.kubectl(&["delete", "service", &name, "--wait=false"])?;
        f.wait_spine(&prefix, &[], TIMEOUT)
            .with_context(|| format!("run {run}: after the delete"))?;
    }

    let mut killed = Vec::new();
    let mut cut = Vec::new();
    for run in 0..loss_runs {
        // kill -9 of node3's agent.
        let t0 = Instant::now();
        f.kill_agent(2)?;
        f.wait_spine(&warm_prefix, &leaf1_only, TIMEOUT)
            .with_context(|| format!("run {run}: after the kill"))?;
        killed.push(t0.elapsed());
        f.start_agent(2)?;
        f.wait_spine(&warm_prefix, &both, TIMEOUT)
            .with_context(|| format!("run {run}: node3 back"))?;
        // node3's rack link cut.
        let t0 = Instant::now();
        f.rack_link_down(2)?;
        f.wait_spine(&warm_prefix, &leaf1_only, TIMEOUT)
            .with_context(|| format!("run {run}: after the link cut"))?;
        cut.push(t0.elapsed());
        f.rack_link_up(2)?;
        f.wait_spine(&warm_prefix, &both, TIMEOUT)
            .with_context(|| format!("run {run}: node3 back after the link cut"))?;
    }

    println!(
        "\nBGP mode in racks (fabric-bench; API server: {:?})",
        f.apiserver.kind()
    );
    println!("| measurement | runs | min | p50 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (what, samples) in [
        ("Service create → route at the spine over both leaves", &mut create),
        ("kill -9 of node3's agent → its route gone from the spine", &mut killed),
        (
            &*format!("node3's rack link cut → its route gone from the spine (hold time {HOLD_TIME} s, no BFD)"),
            &mut cut,
        ),
    ] {
        if samples.is_empty() {
            continue;
        }
        samples.sort();
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        println!(
            "| {what} | {} | {} | {} | {} |",
            samples.len(),
            ms(samples[0]),
            ms(samples[samples.len() / 2]),
            ms(samples[samples.len() - 1])
        );
    }
    Ok(())
}
