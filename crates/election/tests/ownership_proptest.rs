//! Property tests: random schedules of crashes, restarts, graceful stops, partitions, hung watches, eligibility
//! changes and random latencies/watch delays/clock rates. The simulation checks after every event that no IP is
//! announced by two agents; at the end, with everything reconnected, every IP must have exactly one announcer.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use herald_election::{ElectionTiming, OutagePolicy};
use proptest::prelude::*;
use support::{Sim, SimConfig, ip, ms};

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];

#[derive(Debug, Clone)]
enum Step {
    Advance(u64),
    Crash(usize),
    Restart(usize),
    Stop(usize),
    Partition(usize),
    Heal(usize),
    StallWatch(usize),
    ResumeWatch(usize),
    /// Eligible nodes of IP `.0` become the nodes in bit mask `.1` (on every agent).
    Eligible(usize, u8),
    /// Agent `.0` alone sees its own link for IP `.1` go down.
    LinkDown(usize, usize),
    WireConflict(usize, usize),
    /// The API server goes away for everyone / comes back for everyone.
    OutageAll,
    HealAll,
}

fn step(partitions: bool) -> impl Strategy<Value = Step> {
    let agent = 0..NODES.len();
    let ipi = 0..the_ips().len();
    let common = prop_oneof![
        6 => (10u64..1500).prop_map(Step::Advance),
        1 => agent.clone().prop_map(Step::Crash),
        1 => agent.clone().prop_map(Step::Restart),
        1 => agent.clone().prop_map(Step::Stop),
        1 => agent.clone().prop_map(Step::StallWatch),
        1 => agent.clone().prop_map(Step::ResumeWatch),
        1 => (ipi.clone(), 0u8..16).prop_map(|(i, m)| Step::Eligible(i, m)),
        1 => (agent.clone(), ipi.clone()).prop_map(|(a, i)| Step::LinkDown(a, i)),
        1 => (agent.clone(), ipi).prop_map(|(a, i)| Step::WireConflict(a, i)),
        1 => Just(Step::OutageAll),
        1 => Just(Step::HealAll),
    ];
    if partitions {
        prop_oneof![
            10 => common,
            1 => agent.clone().prop_map(Step::Partition),
            1 => agent.prop_map(Step::Heal),
        ]
        .boxed()
    } else {
        common.boxed()
    }
}

#[derive(Debug, Clone)]
struct World {
    watch_delays: Vec<u64>,
    rates: Vec<f64>,
    request_latency: u64,
    reply_latency: u64,
    stagger: u64,
}

fn world() -> impl Strategy<Value = World> {
    (
        proptest::collection::vec(0u64..300, NODES.len()),
        proptest::collection::vec(0.99f64..1.01, NODES.len()),
        1u64..60,
        1u64..60,
        0u64..100,
    )
        .prop_map(|(watch_delays, rates, request_latency, reply_latency, stagger)| World {
            watch_delays,
            rates,
            request_latency,
            reply_latency,
            stagger,
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// Eight IPs over four nodes, so that a node usually holds several and takeover checks are shared between them.
fn the_ips() -> [IpAddr; 8] {
    [
        ip("192.0.2.1"),
        ip("192.0.2.2"),
        ip("192.0.2.3"),
        ip("192.0.2.4"),
        ip("2001:db8::1"),
        ip("2001:db8::2"),
        ip("2001:db8::3"),
        ip("2001:db8::4"),
    ]
}

fn mask_nodes(mask: u8) -> Vec<&'static str> {
    NODES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

fn run(policy: OutagePolicy, strict: bool, w: &World, steps: &[Step]) -> Sim {
    run_with(policy, strict, false, w, steps)
}

fn run_with(policy: OutagePolicy, strict: bool, decide_every_ip: bool, w: &World, steps: &[Step]) -> Sim {
    let timing = ElectionTiming {
        stagger_step: ms(w.stagger),
        ..Default::default()
    };
    let cfg = SimConfig {
        timing,
        policy,
        strict,
        request_latency: ms(w.request_latency),
        reply_latency: ms(w.reply_latency),
        decide_every_ip,
        ..Default::default()
    };
    let mut sim = Sim::new(cfg);
    for (i, n) in NODES.iter().enumerate() {
        sim.add_agent_with(n, ms(w.watch_delays[i]), w.rates[i]);
    }
    for x in the_ips() {
        sim.set_desired(x, &NODES);
    }
    sim.advance(Duration::from_secs(3));
    for s in steps {
        match *s {
            Step::Advance(d) => sim.advance(ms(d)),
            Step::Crash(i) => {
                if sim.agents[i].alive {
                    sim.crash(i);
                }
            }
            Step::Restart(i) => sim.restart(i),
            Step::Stop(i) => sim.stop(i),
            Step::Partition(i) => sim.partition(i),
            Step::Heal(i) => sim.heal(i),
            Step::StallWatch(i) => sim.stall_watch(i),
            Step::ResumeWatch(i) => {
                if sim.agents[i].watch_stalled {
                    sim.resume_watch(i);
                }
            }
            Step::Eligible(x, mask) => sim.set_desired(the_ips()[x], &mask_nodes(mask)),
            Step::LinkDown(i, x) => {
                if sim.agents[i].alive {
                    let ip = the_ips()[x];
                    let mut nodes: Vec<&str> = sim.desired[&ip].eligible_nodes.iter().map(String::as_str).collect();
                    nodes.retain(|n| *n != NODES[i]);
                    let nodes: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
                    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
                    sim.set_desired_on(i, ip, &refs);
                }
            }
            Step::OutageAll => (0..NODES.len()).for_each(|i| sim.partition(i)),
            Step::HealAll => (0..NODES.len()).for_each(|i| sim.heal(i)),
            Step::WireConflict(i, x) => {
                if sim.agents[i].alive {
                    sim.wire_conflict(i, the_ips()[x]);
                }
            }
        }
    }
    // Everything reconnects and every agent sees the same desired state again; give failovers and the on-wire
    // yield hold-off time to run out.
    for i in 0..NODES.len() {
        sim.heal(i);
        if sim.agents[i].watch_stalled {
            sim.resume_watch(i);
        }
    }
    for (x, d) in sim.desired.clone() {
        let nodes: Vec<&str> = d.eligible_nodes.iter().map(String::as_str).collect();
        sim.set_desired(x, &nodes);
    }
    sim.advance(Duration::from_secs(35));
    sim.assert_settled();
    sim
}

proptest! {
    // 40 cases per property by default; `PROPTEST_CASES=1000 cargo test ...` for a longer local run.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// `--api-outage=withdraw`: safe even with partitions (the holder is silent before anyone may take over).
    #[test]
    fn withdraw_mode_never_two_announcers(w in world(), steps in proptest::collection::vec(step(true), 1..40)) {
        run(OutagePolicy::Withdraw, true, &w, &steps);
    }

    /// `--api-outage=hold` with the API reachable, or gone for everyone at once: never two announcers.
    #[test]
    fn hold_mode_api_reachable_never_two_announcers(
        w in world(),
        steps in proptest::collection::vec(step(false), 1..40),
    ) {
        run(OutagePolicy::Hold, true, &w, &steps);
    }

    /// `--api-outage=hold` with partitions: any overlap is ended by the on-wire yield within the wire delay.
    #[test]
    fn hold_mode_partition_overlap_bounded_by_wire_yield(
        w in world(),
        steps in proptest::collection::vec(step(true), 1..40),
    ) {
        let sim = run(OutagePolicy::Hold, false, &w, &steps);
        prop_assert!(sim.max_overlap <= sim.cfg.wire_delay, "overlap lasted {:?}", sim.max_overlap);
    }

    /// A decision round visits only the IPs that are due; visiting every IP in every round must decide exactly the
    /// same: the same announcements and withdrawals at the same times, the same reads, the same leases in the end.
    #[test]
    fn deciding_only_due_ips_decides_as_deciding_every_ip(
        w in world(),
        steps in proptest::collection::vec(step(true), 1..40),
    ) {
        let due = run_with(OutagePolicy::Hold, false, false, &w, &steps);
        let every = run_with(OutagePolicy::Hold, false, true, &w, &steps);
        prop_assert_eq!(&due.decisions, &every.decisions);
        prop_assert_eq!(&due.reads, &every.reads);
        prop_assert_eq!(due.store.snapshot(), every.store.snapshot());
    }
}
