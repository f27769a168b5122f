//! Who checks which addresses when, and what a round makes of the record: pure, with explicit times.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use herald_api::Eip;
use herald_api::eip::{AddressProbes, HostConflict, ProvenFree};
use herald_ipam::Pool;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::core::*;
use crate::adapter as convert;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn eip(spec: serde_json::Value, probes: Option<AddressProbes>) -> Eip {
    let mut eip: Eip = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "Eip", "metadata": {"name": "lan"}, "spec": spec,
    }))
    .unwrap();
    if let Some(p) = probes {
        eip.status.get_or_insert_with(Default::default).probes = Some(p);
    }
    eip
}

fn lan(probes: Option<AddressProbes>) -> Eip {
    eip(
        json!({"addresses": ["192.0.2.10-192.0.2.20", "2001:db8::10-2001:db8::20"]}),
        probes,
    )
}

fn probes(node: &str, free: &[(&str, i64)], conflicts: &[(&str, &str, i64)]) -> AddressProbes {
    AddressProbes {
        node: node.into(),
        interface: "eth0".into(),
        free: free
            .iter()
            .map(|(ip, t)| ProvenFree {
                ip: (*ip).into(),
                time: Time(at(*t)),
            })
            .collect(),
        conflicts: conflicts
            .iter()
            .map(|(ip, mac, t)| HostConflict {
                ip: (*ip).into(),
                mac: (*mac).into(),
                time: Time(at(*t)),
            })
            .collect(),
    }
}

fn pool(eip: &Eip) -> Pool {
    Pool::parse(&convert::pool_spec(eip).unwrap()).unwrap()
}

struct Case {
    eip: Eip,
    used: HashSet<IpAddr>,
    rank: Option<usize>,
    interface: Option<String>,
    last_round: Option<Timestamp>,
}

impl Case {
    fn new(eip: Eip) -> Self {
        Self {
            eip,
            used: HashSet::new(),
            rank: Some(0),
            interface: Some("eth0".into()),
            last_round: None,
        }
    }

    fn plan(&self, me: &str, now: i64) -> Option<Round> {
        let pool = pool(&self.eip);
        let view = PoolView {
            eip: &self.eip,
            pool: &pool,
            used: &self.used,
            rank: self.rank,
            interface: self.interface.clone(),
            seen_since: at(0),
            last_round: self.last_round,
        };
        plan(&view, me, at(now), &TIMING)
    }
}

#[test]
fn the_first_ranked_node_checks_the_next_two_free_addresses_of_each_family_at_once() {
    let mut case = Case::new(lan(None));
    case.used = [ip("192.0.2.10"), ip("2001:db8::11")].into();
    let round = case.plan("node1", 0).expect("rank 0 checks at once");
    assert_eq!(round.eip, "lan");
    assert_eq!(round.interface, "eth0");
    assert_eq!(
        round.addresses,
        [
            ip("192.0.2.11"),
            ip("192.0.2.12"),
            ip("2001:db8::10"),
            ip("2001:db8::12")
        ]
    );
    // The others wait their turn: rank 2 after 2 staggers.
    case.rank = Some(2);
    assert_eq!(case.plan("node3", 19), None);
    assert!(case.plan("node3", 20).is_some());
}

#[test]
fn nothing_to_check_without_an_interface_a_rank_or_a_layer2_pool() {
    let mut case = Case::new(lan(None));
    case.interface = None;
    assert_eq!(case.plan("node1", 0), None, "not on the pool's network");
    let mut case = Case::new(lan(None));
    case.rank = None;
    assert_eq!(case.plan("node1", 0), None, "may not announce the pool");
    let case = Case::new(eip(
        json!({"addresses": ["192.0.2.10-192.0.2.20"], "protocol": "bgp"}),
        None,
    ));
    assert_eq!(case.plan("node1", 0), None, "BGP addresses are not on a LAN");
    let case = Case::new(eip(
        json!({"addresses": ["192.0.2.10-192.0.2.20"], "disable": true}),
        None,
    ));
    assert_eq!(case.plan("node1", 0), None, "a disabled pool gives nothing");
    let mut case = Case::new(eip(json!({"addresses": ["192.0.2.10"]}), None));
    case.used = [ip("192.0.2.10")].into();
    assert_eq!(case.plan("node1", 0), None, "an exhausted pool");
}

#[test]
fn the_checking_node_keeps_its_pool_and_refreshes_it_others_take_over_a_stale_record() {
    let checked = [
        ("192.0.2.10", 100),
        ("192.0.2.11", 100),
        ("2001:db8::10", 100),
        ("2001:db8::11", 100),
    ];
    let mut case = Case::new(lan(Some(probes("node2", &checked, &[]))));
    case.rank = Some(1);
    assert_eq!(case.plan("node2", 129), None, "fresh");
    assert!(case.plan("node2", 130).is_some(), "the writer refreshes after 30 s");
    case.rank = Some(0);
    assert_eq!(case.plan("node1", 139), None, "rank 0 leaves it to the writer");
    assert!(
        case.plan("node1", 140).is_some(),
        "… until it has been stale for a stagger"
    );
    case.rank = Some(3);
    assert_eq!(case.plan("node4", 169), None);
    assert!(case.plan("node4", 170).is_some());
}

#[test]
fn used_up_proofs_make_the_writer_check_the_next_addresses_at_once_but_not_too_often() {
    let checked = [
        ("192.0.2.10", 100),
        ("192.0.2.11", 100),
        ("2001:db8::10", 100),
        ("2001:db8::11", 100),
    ];
    let mut case = Case::new(lan(Some(probes("node1", &checked, &[]))));
    assert_eq!(case.plan("node1", 101), None);
    // The allocator handed out 192.0.2.10: 192.0.2.12 is next and unchecked.
    case.used = [ip("192.0.2.10")].into();
    let round = case.plan("node1", 101).expect("checked at once");
    assert_eq!(round.addresses[..2], [ip("192.0.2.11"), ip("192.0.2.12")]);
    case.last_round = Some(at(99));
    assert_eq!(case.plan("node1", 103), None, "5 s between rounds");
    assert!(case.plan("node1", 104).is_some());
}

#[test]
fn recorded_conflicts_are_never_candidates_and_are_checked_again() {
    let conflicts = [("192.0.2.10", "02:00:00:00:00:99", 100)];
    let case = Case::new(lan(Some(probes("node1", &[], &conflicts))));
    let round = case.plan("node1", 130).unwrap();
    assert_eq!(
        round.addresses,
        [
            ip("192.0.2.11"),
            ip("192.0.2.12"),
            ip("2001:db8::10"),
            ip("2001:db8::11"),
            ip("192.0.2.10")
        ]
    );
    assert_eq!(taken(&case.eip), [ip("192.0.2.10")].into());
}

#[test]
fn proofs_expire_and_are_looked_up_by_address() {
    let e = lan(Some(probes("node1", &[("192.0.2.11", 100), ("2001:db8::10", 50)], &[])));
    let valid = TIMING.valid;
    assert_eq!(proven_free(&e, at(120), valid), [ip("192.0.2.11")].into());
    assert!(is_proven_free([&e], ip("192.0.2.11"), at(159), valid));
    assert!(!is_proven_free([&e], ip("192.0.2.11"), at(160), valid), "60 s old");
    assert!(!is_proven_free([&e], ip("192.0.2.12"), at(120), valid));
    // A clock ahead of ours writes times in our future: as good as now.
    assert!(is_proven_free([&e], ip("192.0.2.11"), at(90), valid));
    assert_eq!(age(at(90), &Time(at(100))), Duration::ZERO);
}

#[test]
fn a_round_records_free_and_taken_addresses_and_keeps_what_it_could_not_settle() {
    let previous = probes(
        "node2",
        &[("192.0.2.10", 100)],
        &[
            ("192.0.2.15", "02:00:00:00:00:15", 90),
            ("192.0.2.16", "02:00:00:00:00:16", 90),
        ],
    );
    let results = [
        (ip("192.0.2.11"), Found::Free),
        (ip("192.0.2.12"), Found::Taken("02:00:00:00:00:12".into())),
        // A Service got it meanwhile: its node answered, no conflict.
        (ip("192.0.2.13"), Found::Taken("02:00:00:00:00:01".into())),
        (ip("192.0.2.14"), Found::Nothing),
        // Gone: free again.
        (ip("192.0.2.15"), Found::Free),
        // Not settled: kept as it was.
        (ip("192.0.2.16"), Found::Nothing),
    ];
    let used = [ip("192.0.2.13")].into();
    let r = record(Some(&previous), "node1", "eth1", &results, &used, at(200));
    assert_eq!(
        r,
        probes(
            "node1",
            &[("192.0.2.11", 200), ("192.0.2.15", 200)],
            &[
                ("192.0.2.12", "02:00:00:00:00:12", 200),
                ("192.0.2.16", "02:00:00:00:00:16", 90)
            ]
        )
        .with_interface("eth1")
    );
}

trait WithInterface {
    fn with_interface(self, interface: &str) -> Self;
}

impl WithInterface for AddressProbes {
    fn with_interface(mut self, interface: &str) -> Self {
        self.interface = interface.into();
        self
    }
}
