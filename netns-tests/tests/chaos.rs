//! The chaos soak for 3 minutes (issue #16; `scripts/bench.sh chaos` runs 30): random events from a seed on a 4-node
//! cluster with Layer 2 and BGP Services, every invariant checked all along (`herald_netns_tests::chaos`). The seed
//! is printed; `HERALD_CHAOS_SEED=N` replays a run, `HERALD_CHAOS_MINUTES` sets its length. Against lab-apiserver, or
//! the real kube-apiserver with `HERALD_TEST_APISERVER=kube`.

use std::time::Duration;

use herald_netns_tests::chaos::run::{Options, run};
use herald_netns_tests::require;

#[test]
fn three_minutes_of_chaos_break_no_invariant() {
    if !require(&["ip", "kubectl", "gobgpd", "gobgp", "python3", "nft"]) {
        return;
    }
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let seed = env("HERALD_CHAOS_SEED").map(|s| s as u64).unwrap_or_else(rand::random);
    let minutes = env("HERALD_CHAOS_MINUTES").unwrap_or(3.0);
    let report = run(Options {
        seed,
        duration: Duration::from_secs_f64(minutes * 60.0),
        ..Options::default()
    })
    .unwrap_or_else(|e| panic!("chaos run with seed {seed}: {e:#}"));
    println!("{}", report.table());
    assert!(!report.events.is_empty(), "events ran");
    assert!(report.probe_answers > 0, "the client saw answers");
    assert!(
        report.violations.is_empty(),
        "seed {seed} (HERALD_CHAOS_SEED={seed} replays it): {:#?}",
        report.violations
    );
}
