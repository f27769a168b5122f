//! BGP mode in racks, timed (root only), on the topology of `herald_netns_tests::fabric` (FRR spine, FRR leaf1 over
//! node1 and node2, BIRD leaf2 over node3, agents against lab-apiserver or, with `HERALD_TEST_APISERVER=kube`, the
//! real kube-apiserver):
//!
//! - **create → route**: `kubectl apply` of a Service until the spine's kernel holds its IP over both leaves
//!   (polled every 5 ms), then delete until the route is gone; `--runs` times (default 20).
//! - **node loss → withdrawn**: node3 lost while it holds a route; time until the spine's kernel no longer sends
//!   anything to leaf2: its agent killed (kill -9: the kernel closes the session), and its rack link cut (no FIN, no
//!   RST: leaf2 waits for the hold time, 9 s here, or BFD). `--loss-runs` times each (default 3).
//! - **link cut, BFD against hold time**: node3's rack link cut → its route gone from the spine (BIRD's BFD at leaf2),
//!   node1's → its route gone from leaf1 (FRR's bfdd), each without BFD (hold time 9 s) and with BFD at 300 ms × 3,
//!   interleaved in each run (BgpPeer `spec.bfd` switched between them).
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
    let (mut cut, mut cut_bfd, mut cut1_hold, mut cut1_bfd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
        // The rack links of node3 (to the spine's view) and node1 (to leaf1's), without and then with BFD.
        for (bfd, cut3, cut1) in [("null", &mut cut, &mut cut1_hold), ("{}", &mut cut_bfd, &mut cut1_bfd)] {
            f.set_bfd(bfd)?;
            for (r, node) in [(1, "192.0.2.73"), (0, "192.0.2.11")] {
                f.leaves[r].0.wait_bfd(node, bfd != "null", TIMEOUT)?;
            }
            // BIRD takes the BGP session down when Herald's BFD says AdminDown (see docs/bgp.md): let it come
            // back before the cut.
            f.wait_spine(&warm_prefix, &both, TIMEOUT)?;
            f.wait(
                TIMEOUT,
                "node1 and node2 under leaf1",
                |f| (f.leaf_hops(0, &warm_prefix).len() == 2).then_some(()),
                |f| format!("{:?}", f.leaf_hops(0, &warm_prefix)),
            )?;
            std::thread::sleep(Duration::from_secs(2));
            f.wait_spine(&warm_prefix, &both, TIMEOUT)?;
            let t0 = Instant::now();
            f.rack_link_down(2)?;
            f.wait_spine(&warm_prefix, &leaf1_only, TIMEOUT)
                .with_context(|| format!("run {run}: after node3's link cut (BFD {bfd})"))?;
            cut3.push(t0.elapsed());
            f.rack_link_up(2)?;
            f.wait_spine(&warm_prefix, &both, TIMEOUT)
                .with_context(|| format!("run {run}: node3 back after the link cut"))?;
            let t0 = Instant::now();
            f.rack_link_down(0)?;
            f.wait(
                TIMEOUT,
                &format!("run {run}: node1's route leaves leaf1 (BFD {bfd})"),
                |f| (f.leaf_hops(0, &warm_prefix) == ["192.0.2.12"]).then_some(()),
                |f| format!("{:?}", f.leaf_hops(0, &warm_prefix)),
            )?;
            cut1.push(t0.elapsed());
            f.rack_link_up(0)?;
            f.wait(
                TIMEOUT,
                &format!("run {run}: node1 back under leaf1"),
                |f| (f.leaf_hops(0, &warm_prefix).len() == 2).then_some(()),
                |f| format!("{:?}", f.leaf_hops(0, &warm_prefix)),
            )?;
        }
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
            &*format!(
                "node3's rack link cut → its route gone from the spine (BIRD leaf2; hold time {HOLD_TIME} s, no BFD)"
            ),
            &mut cut,
        ),
        (
            "node3's rack link cut → its route gone from the spine (BIRD leaf2; BFD 300 ms × 3)",
            &mut cut_bfd,
        ),
        (
            &*format!("node1's rack link cut → its route gone from leaf1 (FRR; hold time {HOLD_TIME} s, no BFD)"),
            &mut cut1_hold,
        ),
        (
            "node1's rack link cut → its route gone from leaf1 (FRR bfdd; BFD 300 ms × 3)",
            &mut cut1_bfd,
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
