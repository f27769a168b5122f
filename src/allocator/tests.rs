//! The Service contract, rule by rule, against the pure [`AllocatorState`].

use std::net::IpAddr;
use std::sync::Arc;

use herald_api::Eip;
use herald_api::conditions::{EXHAUSTED, OVERLAPPING, READY, is_true};
use herald_api::decode::{Lenient, Unreadable};
use k8s_openapi::api::core::v1::Service;

use crate::lease::HeldLease;
use crate::service::ServiceView;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::state::{AllocatorState, Plan, Snapshot, Target, Write};

fn now() -> Time {
    Time(jiff::Timestamp::from_second(1_800_000_000).unwrap())
}

fn eip(name: &str, spec: Value) -> Arc<Eip> {
    Arc::new(
        serde_json::from_value(json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Eip",
        "metadata": {"name": name, "generation": 1}, "spec": spec}))
        .unwrap(),
    )
}

fn service(ns: &str, name: &str, created: i64, spec: Value, annotations: Value) -> Arc<ServiceView> {
    let mut s = json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]});
    s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    let ts = jiff::Timestamp::from_second(created).unwrap().to_string();
    let svc: Service = serde_json::from_value(json!({
    "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "creationTimestamp": ts,
                 "annotations": annotations},
    "spec": s}))
    .unwrap();
    Arc::new(svc.into())
}

/// Applies a plan's Service writes to the snapshot, as the API server + watch would.
fn apply(snap: &mut Snapshot, plan: &Plan) {
    for w in &plan.writes {
        match w {
            Write::ServiceIngress { service, ips } => {
                let svc = find(snap, &service.to_string());
                let mut s = (*snap.services[svc]).clone();
                s.ingress_ips = ips.clone();
                snap.services[svc] = Arc::new(s);
            }
            Write::ServiceAllocatedFrom { service, pool } => {
                let svc = find(snap, &service.to_string());
                let mut s = (*snap.services[svc]).clone();
                s.set_annotation(herald_api::names::ANNOTATION_ALLOCATED_FROM, pool.as_deref());
                snap.services[svc] = Arc::new(s);
            }
            Write::EipStatus { eip, status } => {
                // The server has the unreadable object; the store keeps its last readable version unchanged.
                if let Some(u) = snap
                    .unreadable_eips
                    .iter_mut()
                    .find(|u| u.metadata.name.as_deref() == Some(eip))
                {
                    u.status = Some(serde_json::to_value(&**status).unwrap());
                    continue;
                }
                let i = snap
                    .eips
                    .iter()
                    .position(|e| e.metadata.name.as_deref() == Some(eip))
                    .unwrap();
                let mut e = (*snap.eips[i]).clone();
                e.status = Some((**status).clone());
                snap.eips[i] = Arc::new(e);
            }
        }
    }
}

fn find(snap: &Snapshot, key: &str) -> usize {
    snap.services
        .iter()
        .position(|s| format!("{}/{}", s.namespace, s.name) == key)
        .unwrap()
}

fn ips_of(snap: &Snapshot, key: &str) -> Vec<IpAddr> {
    crate::adapter::status_ips(&snap.services[find(snap, key)])
}

fn pass(state: &mut AllocatorState, snap: &mut Snapshot) -> Plan {
    let plan = state.reconcile(snap, true, &now());
    apply(snap, &plan);
    plan
}

fn notes(plan: &Plan, reason: &str) -> Vec<String> {
    plan.notices
        .iter()
        .filter(|n| n.reason == reason)
        .map(|n| n.note.clone())
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn allocates_writes_status_and_annotation_then_is_quiet() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.10-192.0.2.12"]}))],
        ..Default::default()
    };
    snap.services.push(service("shop", "web", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "shop/web"), [ip("192.0.2.10")]);
    assert_eq!(notes(&plan, "IPAllocated"), ["allocated 192.0.2.10 from Eip 'lan'"]);
    assert_eq!(snap.services[0].annotation("herald.dev/allocated-from"), Some("lan"));
    let status = snap.eips[0].status.clone().unwrap();
    assert_eq!(
        (status.used, status.free.as_str(), status.total.as_str()),
        (1, "2", "3")
    );
    assert!(is_true(&status.conditions, READY));
    // Nothing changed: nothing written, nothing said.
    let plan = pass(&mut state, &mut snap);
    assert!(plan.writes.is_empty(), "{:?}", plan.writes);
    assert!(plan.notices.is_empty());
}

/// The shell publishes an `IPAllocated`/`IPReleased` Event with its status write and stays silent while that write is
/// in flight, so each such notice must come with a status write for its Service in the same plan; the others
/// (failures, reported once by the core) never count as following a write.
#[test]
fn status_events_come_with_their_status_write() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.10-192.0.2.11"]}))],
        ..Default::default()
    };
    snap.services.push(service("shop", "web", 1, json!({}), json!({})));
    snap.services.push(service(
        "shop",
        "bad",
        2,
        json!({}),
        json!({"herald.dev/ips": "not-an-ip"}),
    ));
    let mut state = AllocatorState::new();
    let check = |plan: &Plan| {
        for n in &plan.notices {
            let Target::Service(key) = &n.target else { continue };
            let written = plan
                .writes
                .iter()
                .any(|w| matches!(w, Write::ServiceIngress { service, .. } if service == key));
            if n.follows_status_write() {
                assert!(written, "{n:?} without its write: {:?}", plan.writes);
            } else {
                assert!(!["IPAllocated", "IPReleased"].contains(&n.reason), "{n:?}");
            }
        }
    };
    // The watch has not shown the first pass's writes when the second runs: both plan the write and its Event.
    let first = state.reconcile(&snap, true, &now());
    check(&first);
    assert_eq!(notes(&first, "IPAllocated").len(), 1);
    assert_eq!(notes(&first, "AllocationFailed").len(), 1);
    let second = state.reconcile(&snap, true, &now());
    check(&second);
    assert_eq!(
        notes(&second, "IPAllocated").len(),
        1,
        "planned again; the shell stays silent"
    );
    apply(&mut snap, &second);
    // Deleting the Eip releases the address: the IPReleased Event comes with the write that clears the status.
    snap.eips.clear();
    let released = state.reconcile(&snap, true, &now());
    check(&released);
    assert_eq!(notes(&released, "IPReleased").len(), 1);
}

#[test]
fn ignores_other_classes_and_types() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.10/32"]}))],
        ..Default::default()
    };
    snap.services.push(service(
        "a",
        "other",
        1,
        json!({"loadBalancerClass": "example.com/lb"}),
        json!({}),
    ));
    snap.services
        .push(service("a", "plain", 2, json!({"type": "ClusterIP"}), json!({})));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    assert!(plan.writes.iter().all(|w| matches!(w, Write::EipStatus { .. })));
    assert!(ips_of(&snap, "a/other").is_empty());
}

#[test]
fn exhaustion_reports_then_recovers_when_an_ip_frees_up() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.10/32"]}))],
        ..Default::default()
    };
    snap.services.push(service("a", "first", 1, json!({}), json!({})));
    snap.services.push(service("a", "second", 2, json!({}), json!({})));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/first"), [ip("192.0.2.10")]);
    assert!(ips_of(&snap, "a/second").is_empty());
    let failed = notes(&plan, "AllocationFailed");
    assert_eq!(failed.len(), 1);
    assert!(failed[0].contains("lan"), "{failed:?}");
    assert!(is_true(&snap.eips[0].status.as_ref().unwrap().conditions, EXHAUSTED));
    // Reported once, not on every pass.
    assert!(notes(&pass(&mut state, &mut snap), "AllocationFailed").is_empty());
    // The first Service goes away; the second gets the address.
    snap.services.remove(find(&snap, "a/first"));
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/second"), [ip("192.0.2.10")]);
    assert_eq!(notes(&plan, "IPAllocated").len(), 1);
}

#[test]
fn restart_keeps_every_ip() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/28"]}))],
        ..Default::default()
    };
    for i in 0..5 {
        snap.services
            .push(service("a", &format!("s{i}"), i, json!({}), json!({})));
    }
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    // Someone hand-picks an IP in the middle, then the agent restarts with an empty memory.
    snap.services.push(service(
        "a",
        "late",
        10,
        json!({}),
        json!({"herald.dev/ips": "192.0.2.9"}),
    ));
    pass(&mut state, &mut snap);
    let before: Vec<_> = snap.services.iter().map(|s| crate::adapter::status_ips(s)).collect();
    let mut restarted = AllocatorState::new();
    let plan = pass(&mut restarted, &mut snap);
    assert!(
        plan.writes.iter().all(|w| matches!(w, Write::EipStatus { .. })),
        "{:?}",
        plan.writes
    );
    let after: Vec<_> = snap.services.iter().map(|s| crate::adapter::status_ips(s)).collect();
    assert_eq!(before, after);
}

#[test]
fn conflicting_records_at_rebuild_keep_the_older_service() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29"]}))],
        ..Default::default()
    };
    snap.services.push(service("a", "young", 20, json!({}), json!({})));
    snap.services.push(service("a", "old", 10, json!({}), json!({})));
    for s in snap.services.iter_mut() {
        let mut svc = (**s).clone();
        svc.ingress_ips = vec![ip("192.0.2.1")];
        *s = Arc::new(svc);
    }
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/old"), [ip("192.0.2.1")]);
    assert_eq!(
        ips_of(&snap, "a/young"),
        [ip("192.0.2.2")],
        "the loser is allocated again"
    );
    let conflict = notes(&plan, "IPConflict");
    assert_eq!(conflict.len(), 1);
    assert!(conflict[0].starts_with("a/young cannot keep 192.0.2.1"), "{conflict:?}");
}

#[test]
fn bad_annotation_is_reported_and_loses_nothing() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29"]}))],
        ..Default::default()
    };
    snap.services.push(service("a", "web", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/web"), [ip("192.0.2.1")]);
    // A typo in the annotation.
    let i = find(&snap, "a/web");
    let mut svc = (*snap.services[i]).clone();
    svc.set_annotation("herald.dev/ips", Some("192.0.2.x"));
    snap.services[i] = Arc::new(svc);
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/web"), [ip("192.0.2.1")], "keeps its IP");
    assert_eq!(
        notes(&plan, "AllocationFailed"),
        ["annotation herald.dev/ips: '192.0.2.x' is not an IP address (expected ip[,ip])"]
    );
    // An IP outside every pool: refused precisely, the old IP kept.
    let mut svc = (*snap.services[i]).clone();
    svc.set_annotation("herald.dev/ips", Some("198.51.100.1"));
    snap.services[i] = Arc::new(svc);
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/web"), [ip("192.0.2.1")]);
    let failed = notes(&plan, "AllocationFailed");
    assert!(
        failed[0].contains("198.51.100.1") && failed[0].contains("keeping 192.0.2.1"),
        "{failed:?}"
    );
}

#[test]
fn unknown_pool_and_wrong_family_are_explained() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29"]}))],
        ..Default::default()
    };
    snap.services
        .push(service("a", "nopool", 1, json!({}), json!({"herald.dev/eip": "nope"})));
    snap.services.push(service(
        "a",
        "v6",
        2,
        json!({"ipFamilies": ["IPv4"]}),
        json!({"herald.dev/ips": "2001:db8::1"}),
    ));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    let failed = notes(&plan, "AllocationFailed");
    assert!(
        failed
            .iter()
            .any(|n| n.contains("Eip 'nope'") && n.contains("does not exist")),
        "{failed:?}"
    );
    assert!(failed.iter().any(|n| n.contains("2001:db8::1")), "{failed:?}");
    assert!(ips_of(&snap, "a/nopool").is_empty());
}

#[test]
fn eip_shrink_moves_services_and_delete_moves_or_releases() {
    let mut snap = Snapshot {
        eips: vec![
            eip("a", json!({"addresses": ["192.0.2.1-192.0.2.2"], "priority": 1})),
            eip("b", json!({"addresses": ["198.51.100.1/32"], "priority": 2})),
        ],
        ..Default::default()
    };
    snap.services.push(service("x", "one", 1, json!({}), json!({})));
    snap.services.push(service("x", "two", 2, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "x/two"), [ip("192.0.2.2")]);
    // Shrink pool a: x/two's address leaves it; it moves to pool b.
    snap.eips[0] = eip("a", json!({"addresses": ["192.0.2.1/32"], "priority": 1}));
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "x/two"), [ip("198.51.100.1")]);
    assert!(
        notes(&plan, "IPAllocated")[0].contains("no longer in the Eip"),
        "{:?}",
        plan.notices
    );
    // Delete pool a: x/one has nowhere to go and loses its IP, with an Event.
    snap.eips.remove(0);
    let plan = pass(&mut state, &mut snap);
    assert!(ips_of(&snap, "x/one").is_empty());
    assert_eq!(notes(&plan, "IPReleased").len(), 1);
    assert_eq!(notes(&plan, "AllocationFailed").len(), 1);
}

#[test]
fn why_a_service_moved_is_told_with_its_write_even_when_the_write_waits_for_a_later_pass() {
    let mut snap = Snapshot {
        eips: vec![
            eip("a", json!({"addresses": ["192.0.2.1-192.0.2.2"], "priority": 1})),
            eip("b", json!({"addresses": ["198.51.100.1/32"], "priority": 2})),
        ],
        ..Default::default()
    };
    snap.services.push(service("x", "one", 1, json!({}), json!({})));
    snap.services.push(service("x", "two", 2, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    snap.eips[0] = eip("a", json!({"addresses": ["192.0.2.1/32"], "priority": 1}));
    // The controller leaves the write for later (a burst larger than one pass writes): the plan is not applied.
    let first = state.reconcile(&snap, true, &now());
    let moved = notes(&first, "IPAllocated");
    assert_eq!(moved.len(), 1, "{:?}", first.notices);
    assert!(moved[0].contains("no longer in the Eip"), "{moved:?}");
    // The next pass plans the same write, and its Event still says why.
    let plan = pass(&mut state, &mut snap);
    assert_eq!(notes(&plan, "IPAllocated"), moved);
    assert_eq!(ips_of(&snap, "x/two"), [ip("198.51.100.1")]);
    // Once the status shows it, the reason is forgotten: a later change of the Service says nothing of it.
    snap.eips[1] = eip("b", json!({"addresses": ["198.51.100.1-198.51.100.2"], "priority": 2}));
    let mut two = (*snap.services[1]).clone();
    two.set_annotation("herald.dev/ips", Some("198.51.100.2"));
    snap.services[1] = Arc::new(two);
    let plan = pass(&mut state, &mut snap);
    assert_eq!(notes(&plan, "IPAllocated"), ["allocated 198.51.100.2 from Eip 'b'"]);
}

#[test]
fn disabled_pool_keeps_existing_ips_but_gives_no_new_ones() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29"]}))],
        ..Default::default()
    };
    snap.services.push(service("a", "old", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    snap.eips[0] = eip("lan", json!({"addresses": ["192.0.2.0/29"], "disable": true}));
    snap.services.push(service("a", "new", 2, json!({}), json!({})));
    pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/old"), [ip("192.0.2.1")]);
    assert!(ips_of(&snap, "a/new").is_empty());
    let ready = snap.eips[0]
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .cloned()
        .unwrap();
    assert_eq!(ready.reason, "Disabled");
}

#[test]
fn invalid_eip_edit_keeps_serving_and_says_why() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29"]}))],
        ..Default::default()
    };
    snap.services.push(service("a", "web", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    snap.eips[0] = eip("lan", json!({"addresses": ["192.0.2.9-192.0.2.1"]}));
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/web"), [ip("192.0.2.1")]);
    let invalid: Vec<_> = plan
        .notices
        .iter()
        .filter(|n| n.target == Target::Eip("lan".into()))
        .collect();
    assert_eq!(invalid.len(), 1);
    assert!(invalid[0].note.contains("192.0.2.9-192.0.2.1"), "{}", invalid[0].note);
    let status = snap.eips[0].status.clone().unwrap();
    assert!(!is_true(&status.conditions, READY));
}

/// An Eip as the watch hands over one Herald cannot read: `protocol: vxlan` (e.g. after a rollback).
fn unreadable_eip(name: &str) -> Unreadable {
    let v = json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Eip",
        "metadata": {"name": name, "generation": 2, "resourceVersion": "9"},
        "spec": {"addresses": ["198.51.100.0/24"], "protocol": "vxlan"}});
    match serde_json::from_value::<Lenient<Eip>>(v).unwrap() {
        Lenient::Unreadable(u) => *u,
        Lenient::Read(_) => panic!("vxlan is not a protocol"),
    }
}

fn ready_of(status: &Option<Value>) -> (String, String) {
    let conds = &status.as_ref().unwrap()["conditions"];
    let ready = conds.as_array().unwrap().iter().find(|c| c["type"] == READY).unwrap();
    (
        ready["status"].as_str().unwrap().into(),
        ready["message"].as_str().unwrap().into(),
    )
}

#[test]
fn an_unreadable_eip_at_start_keeps_its_services_ips_and_blocks_nothing_else() {
    // The allocator starts while Eip `vx` cannot be read; its Services recorded IPs from it before.
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29"]}))],
        unreadable_eips: vec![unreadable_eip("vx")],
        ..Default::default()
    };
    let mut held = service("a", "held", 1, json!({}), json!({"herald.dev/allocated-from": "vx"}));
    Arc::make_mut(&mut held).ingress_ips = vec![ip("198.51.100.7")];
    snap.services.push(held);
    snap.services.push(service("a", "new", 2, json!({}), json!({})));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/held"), [ip("198.51.100.7")], "nothing is lost");
    assert!(notes(&plan, "IPReleased").is_empty(), "{:?}", plan.notices);
    assert_eq!(ips_of(&snap, "a/new"), [ip("192.0.2.1")], "other Eips keep working");
    let invalid = notes(&plan, "InvalidEip");
    assert_eq!(invalid.len(), 1, "{:?}", plan.notices);
    assert!(
        invalid[0].contains("cannot be read: spec.protocol: unknown variant `vxlan`"),
        "{}",
        invalid[0]
    );
    let (ready, message) = ready_of(&snap.unreadable_eips[0].status);
    assert_eq!(ready, "False");
    assert!(
        message.contains("its Services keep the addresses they hold"),
        "{message}"
    );
    // The status write is seen; the next pass writes nothing and says nothing again.
    let plan = pass(&mut state, &mut snap);
    assert!(plan.writes.is_empty() && plan.notices.is_empty(), "{plan:?}");
    // A Service may not take new addresses from it.
    snap.services
        .push(service("a", "wants-vx", 3, json!({}), json!({"herald.dev/eip": "vx"})));
    pass(&mut state, &mut snap);
    assert!(ips_of(&snap, "a/wants-vx").is_empty());
    // Fixed: the real spec applies (198.51.100.7 is in it, so the Service keeps it).
    snap.unreadable_eips.clear();
    snap.eips.push(eip("vx", json!({"addresses": ["198.51.100.0/24"]})));
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/held"), [ip("198.51.100.7")]);
    assert_eq!(ips_of(&snap, "a/wants-vx"), [ip("198.51.100.1")]);
    assert!(notes(&plan, "IPReleased").is_empty(), "{:?}", plan.notices);
}

#[test]
fn an_invalid_eip_at_start_keeps_its_services_ips() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.9-192.0.2.1"]}))],
        ..Default::default()
    };
    let mut held = service("a", "held", 1, json!({}), json!({"herald.dev/allocated-from": "lan"}));
    Arc::make_mut(&mut held).ingress_ips = vec![ip("192.0.2.5")];
    snap.services.push(held);
    let plan = pass(&mut AllocatorState::new(), &mut snap);
    assert_eq!(ips_of(&snap, "a/held"), [ip("192.0.2.5")]);
    assert!(notes(&plan, "IPReleased").is_empty(), "{:?}", plan.notices);
}

#[test]
fn an_eip_that_turns_unreadable_keeps_serving_and_its_status_converges() {
    let mut snap = Snapshot {
        eips: vec![eip("vx", json!({"addresses": ["198.51.100.0/29"]}))],
        ..Default::default()
    };
    snap.services.push(service("a", "web", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    // The store keeps the last readable version; the watch reports the object unreadable.
    snap.unreadable_eips.push(unreadable_eip("vx"));
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/web"), [ip("198.51.100.1")]);
    let (ready, message) = ready_of(&snap.unreadable_eips[0].status);
    assert_eq!(ready, "False");
    assert!(message.contains("still serving the previous addresses"), "{message}");
    assert_eq!(notes(&plan, "InvalidEip").len(), 1);
    for _ in 0..3 {
        let plan = pass(&mut state, &mut snap);
        assert!(plan.writes.is_empty() && plan.notices.is_empty(), "{plan:?}");
    }
}

#[test]
fn an_unreadable_service_is_reported_once() {
    let v = json!({"metadata": {"name": "odd", "namespace": "a", "resourceVersion": "3"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": "http"}]}});
    let Lenient::Unreadable(u) = serde_json::from_value::<Lenient<Service>>(v).unwrap() else {
        panic!("a port must be a number")
    };
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29"]}))],
        unreadable_services: vec![*u],
        ..Default::default()
    };
    snap.services.push(service("a", "web", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    let reported: Vec<_> = plan
        .notices
        .iter()
        .filter(|n| n.reason == "UnreadableService")
        .collect();
    assert_eq!(reported.len(), 1, "{:?}", plan.notices);
    assert_eq!(
        reported[0].target,
        Target::Service(herald_ipam::ServiceKey::new("a", "odd"))
    );
    assert!(reported[0].note.contains("spec.ports[0].port"), "{}", reported[0].note);
    assert_eq!(ips_of(&snap, "a/web"), [ip("192.0.2.1")]);
    let plan = pass(&mut state, &mut snap);
    assert!(plan.notices.is_empty(), "{:?}", plan.notices);
}

#[test]
fn overlapping_pools_are_reported_on_both() {
    let mut snap = Snapshot {
        eips: vec![
            eip("a", json!({"addresses": ["192.0.2.0/28"]})),
            eip("b", json!({"addresses": ["192.0.2.8/29"]})),
        ],
        ..Default::default()
    };
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    for e in &snap.eips {
        let c = e
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == OVERLAPPING)
            .cloned()
            .unwrap();
        assert_eq!(c.status, "True");
        assert!(
            c.message.contains("Eip 'a'") && c.message.contains("Eip 'b'"),
            "{}",
            c.message
        );
    }
}

#[test]
fn sharing_and_dual_stack() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29", "2001:db8::/125"]}))],
        ..Default::default()
    };
    snap.services.push(service(
        "a",
        "http",
        1,
        json!({}),
        json!({"herald.dev/sharing-key": "k"}),
    ));
    snap.services.push(service(
        "a",
        "dns",
        2,
        json!({"ports": [{"port": 53, "protocol": "UDP"}]}),
        json!({"herald.dev/sharing-key": "k"}),
    ));
    snap.services.push(service(
        "a",
        "clash",
        3,
        json!({}),
        json!({"herald.dev/sharing-key": "k", "herald.dev/ips": "192.0.2.1"}),
    ));
    snap.services.push(service(
        "a",
        "dual",
        4,
        json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]}),
        json!({}),
    ));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/http"), ips_of(&snap, "a/dns"), "shared");
    assert!(ips_of(&snap, "a/clash").is_empty());
    let refused = notes(&plan, "AllocationFailed");
    assert!(
        refused.iter().any(|n| n.contains("80/TCP") && n.contains("a/http")),
        "{refused:?}"
    );
    let dual = ips_of(&snap, "a/dual");
    assert_eq!(dual.len(), 2);
    assert!(dual[0].is_ipv6() && dual[1].is_ipv4(), "ipFamilies order: {dual:?}");
}

#[test]
fn type_change_releases_and_cleans_up() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/29"]}))],
        ..Default::default()
    };
    snap.services.push(service("a", "web", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    let mut svc = (*snap.services[0]).clone();
    svc.type_ = Some("ClusterIP".into());
    snap.services[0] = Arc::new(svc);
    pass(&mut state, &mut snap);
    assert!(ips_of(&snap, "a/web").is_empty());
    assert!(snap.services[0].annotation("herald.dev/allocated-from").is_none());
    assert_eq!(state.allocator().service_count(), 0);
}

#[test]
fn namespace_rules_use_namespace_labels() {
    let mut snap = Snapshot {
        eips: vec![eip(
            "team",
            json!({"addresses": ["192.0.2.0/29"],
            "namespaceSelector": {"matchLabels": {"team": "blue"}}}),
        )],
        ..Default::default()
    };
    snap.namespaces.insert(
        "blue".into(),
        std::sync::Arc::new([("team".to_string(), "blue".to_string())].into()),
    );
    snap.namespaces.insert(
        "red".into(),
        std::sync::Arc::new([("team".to_string(), "red".to_string())].into()),
    );
    snap.services.push(service("blue", "ok", 1, json!({}), json!({})));
    snap.services.push(service("red", "no", 2, json!({}), json!({})));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "blue/ok").len(), 1);
    assert!(ips_of(&snap, "red/no").is_empty());
    let failed = notes(&plan, "AllocationFailed");
    assert!(failed[0].contains("red/no") && failed[0].contains("team"), "{failed:?}");
}

#[test]
fn eip_status_lists_announcing_nodes_from_ip_leases() {
    let mut snap = Snapshot {
        eips: vec![eip("lan", json!({"addresses": ["192.0.2.10-192.0.2.12"]}))],
        ..Default::default()
    };
    snap.services.push(service("a", "web", 1, json!({}), json!({})));
    snap.services.push(service("a", "api", 2, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    assert!(snap.eips[0].status.as_ref().unwrap().announcers.is_empty());
    for (ip, holder) in [
        ("192-0-2-10", Some("node-a/1f2e")),
        ("192-0-2-11", Some("node-b/3c4d")),
        ("192-0-2-12", None),
    ] {
        snap.ip_leases.push(Arc::new(HeldLease {
            name: format!("herald-ip-{ip}"),
            resource_version: Some("7".into()),
            holder: holder.map(Into::into),
        }));
    }
    let plan = pass(&mut state, &mut snap);
    assert_eq!(plan.writes.len(), 1, "only the Eip status changes");
    let status = snap.eips[0].status.clone().unwrap();
    let listed: Vec<(String, String)> = status.announcers.into_iter().map(|a| (a.ip, a.node)).collect();
    assert_eq!(
        listed,
        [
            ("192.0.2.10".into(), "node-a".into()),
            ("192.0.2.11".into(), "node-b".into())
        ]
    );
}

#[test]
fn eip_status_lists_the_first_announcers_in_address_order_and_counts_the_rest() {
    let mut snap = Snapshot {
        eips: vec![
            eip("lan", json!({"addresses": ["192.0.2.0/25"]})),
            eip("other", json!({"addresses": ["198.51.100.0/30"], "priority": 1})),
        ],
        ..Default::default()
    };
    // Created newest first, so address order and creation order differ.
    for i in 0..70 {
        snap.services
            .push(service("a", &format!("s{i}"), 100 - i, json!({}), json!({})));
    }
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    for i in 1..=70 {
        snap.ip_leases.push(Arc::new(HeldLease {
            name: format!("herald-ip-192-0-2-{i}"),
            holder: Some(format!("node-{}/00ff", i % 3)),
            ..Default::default()
        }));
    }
    pass(&mut state, &mut snap);
    let status = snap.eips[0].status.clone().unwrap();
    let listed: Vec<String> = status.announcers.iter().map(|a| a.ip.clone()).collect();
    let expected: Vec<String> = (1..=64).map(|i| format!("192.0.2.{i}")).collect();
    assert_eq!(listed, expected);
    assert_eq!(status.announcers[0].node, "node-1");
    assert_eq!(status.announcers_omitted, 6);
    let other = snap.eips[1].status.clone().unwrap();
    assert!(
        other.announcers.is_empty() && other.announcers_omitted == 0,
        "{other:?}"
    );
}

// ---- never-allocated addresses (loopback, multicast, link-local, ...) ----

fn condition(snap: &Snapshot, eip: usize, type_: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let status = snap.eips[eip].status.as_ref().unwrap();
    status.conditions.iter().find(|c| c.type_ == type_).cloned().unwrap()
}

#[test]
fn eip_status_counts_host_addresses_only_and_says_what_was_left_out() {
    let mut snap = Snapshot {
        eips: vec![
            eip("all", json!({"addresses": ["0.0.0.0/0", "::/0"]})),
            eip(
                "lan",
                json!({"addresses": ["192.0.2.0/29", "169.254.0.1"], "priority": 1}),
            ),
        ],
        ..Default::default()
    };
    snap.services.push(service("a", "web", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/web"), [ip("1.0.0.0")], "never 0.0.0.1");
    let status = snap.eips[0].status.clone().unwrap();
    // 2^32 and 2^128 addresses without the blocks: exact decimal strings, no overflow.
    assert_eq!(status.total, "338620831926207318622244848601820758015");
    assert_eq!(status.ipv4.as_ref().unwrap().total, "3992911871");
    assert_eq!(status.ipv4.as_ref().unwrap().free, "3992911870");
    assert_eq!(
        status.ipv6.as_ref().unwrap().total,
        "338620831926207318622244848597827846144"
    );
    assert_eq!(
        condition(&snap, 0, READY).message,
        "338620831926207318622244848601820758015 addresses (left out: 0.0.0.0/8 'this network', 127.0.0.0/8 loopback, \
169.254.0.0/16 link-local, 224.0.0.0/4 multicast, ::/96 IPv4-compatible (deprecated), ::1/128 loopback, \
::ffff:0:0/96 IPv4-mapped, fe80::/10 link-local, ff00::/8 multicast)"
    );
    assert_eq!(
        condition(&snap, 1, READY).message,
        "6 addresses (left out: 169.254.0.0/16 link-local)",
        "only the blocks the Eip touches"
    );
    let overlap = condition(&snap, 0, OVERLAPPING);
    assert!(
        overlap.message.contains("overlap on 192.0.2.1-192.0.2.6") && !overlap.message.contains("169.254"),
        "a never-allocated address is no overlap: {}",
        overlap.message
    );
}

#[test]
fn eip_of_only_never_allocated_addresses_is_invalid_and_an_edit_to_it_loses_nothing() {
    let mut snap = Snapshot {
        eips: vec![
            eip("lo", json!({"addresses": ["127.0.0.0/8"]})),
            eip("lan", json!({"addresses": ["192.0.2.0/29"]})),
        ],
        ..Default::default()
    };
    snap.services.push(service("a", "web", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    let message = "Eip 'lo': every address it lists is one Herald never allocates (127.0.0.0/8 loopback, \
RFC 1122 §3.2.1.3); list addresses a client can reach";
    let ready = condition(&snap, 0, READY);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert_eq!(ready.message, message);
    assert_eq!(notes(&plan, "InvalidEip"), [message]);
    assert_eq!(snap.eips[0].status.as_ref().unwrap().total, "0");
    assert_eq!(ips_of(&snap, "a/web"), [ip("192.0.2.1")]);

    // Editing a working Eip into multicast only is treated like a typo: the Service keeps its address.
    snap.eips[1] = eip("lan", json!({"addresses": ["224.0.0.0/24"]}));
    pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "a/web"), [ip("192.0.2.1")]);
    let ready = condition(&snap, 1, READY);
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.ends_with(
            "(224.0.0.0/4 multicast, RFC 5771); list addresses a client can reach; still serving the previous addresses"
        ),
        "{}",
        ready.message
    );
}

#[test]
fn services_holding_never_allocated_ips_from_an_older_herald_move_with_the_reason() {
    let mut snap = Snapshot {
        eips: vec![eip("all", json!({"addresses": ["0.0.0.0/0"]}))],
        ..Default::default()
    };
    // What the previous version wrote: 0.0.0.1 (first of 0.0.0.0/0) and a requested 127.0.0.1.
    snap.services.push(service(
        "a",
        "first",
        1,
        json!({}),
        json!({"herald.dev/allocated-from": "all"}),
    ));
    snap.services.push(service(
        "a",
        "pinned",
        2,
        json!({}),
        json!({"herald.dev/allocated-from": "all", "herald.dev/ips": "127.0.0.1"}),
    ));
    for (s, held) in snap.services.iter_mut().zip(["0.0.0.1", "127.0.0.1"]) {
        let mut svc = (**s).clone();
        svc.ingress_ips = vec![ip(held)];
        *s = Arc::new(svc);
    }
    let mut state = AllocatorState::new();
    let plan = pass(&mut state, &mut snap);
    let first = "a/first cannot keep 0.0.0.1: 0.0.0.1 is in 0.0.0.0/8 'this network' (RFC 1122 §3.2.1.3), which is \
never a Service's address";
    let pinned = "a/pinned cannot keep 127.0.0.1: 127.0.0.1 is in 127.0.0.0/8 loopback (RFC 1122 §3.2.1.3), which \
is never a Service's address";
    assert_eq!(notes(&plan, "IPConflict"), [first, pinned]);
    assert_eq!(ips_of(&snap, "a/first"), [ip("1.0.0.0")]);
    assert_eq!(
        notes(&plan, "IPAllocated"),
        [format!("allocated 1.0.0.0 from Eip 'all' ({first})")]
    );
    // The request itself is for loopback: refused, and the address is taken back.
    assert!(ips_of(&snap, "a/pinned").is_empty());
    assert_eq!(
        notes(&plan, "AllocationFailed"),
        [
            "a/pinned requests 127.0.0.1, which is in 127.0.0.0/8 loopback (RFC 1122 §3.2.1.3) and never a Service's \
address, whatever an Eip lists; request another address in herald.dev/ips or spec.loadBalancerIP"
        ]
    );
    assert_eq!(notes(&plan, "IPReleased"), [format!("released 127.0.0.1 ({pinned})")]);
    // Settled: the next pass is quiet.
    let plan = pass(&mut state, &mut snap);
    assert!(plan.notices.is_empty(), "{:?}", plan.notices);
}

#[test]
fn many_overlapping_whole_space_eips_list_a_few_overlaps_each() {
    let mut snap = Snapshot {
        eips: (0..8)
            .map(|i| eip(&format!("e{i}"), json!({"addresses": ["0.0.0.0/0"]})))
            .collect(),
        ..Default::default()
    };
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    let overlap = condition(&snap, 3, OVERLAPPING);
    assert_eq!(
        overlap.message,
        "Eip 'e0' (0.0.0.0/0) and Eip 'e3' (0.0.0.0/0) overlap on 1.0.0.0-255.255.255.254; \
Eip 'e1' (0.0.0.0/0) and Eip 'e3' (0.0.0.0/0) overlap on 1.0.0.0-255.255.255.254; \
Eip 'e2' (0.0.0.0/0) and Eip 'e3' (0.0.0.0/0) overlap on 1.0.0.0-255.255.255.254; \
Eip 'e3' (0.0.0.0/0) and Eip 'e4' (0.0.0.0/0) overlap on 1.0.0.0-255.255.255.254; \
Eip 'e3' (0.0.0.0/0) and Eip 'e5' (0.0.0.0/0) overlap on 1.0.0.0-255.255.255.254; and 2 more"
    );
}

/// An Eip as the prober left it: `free` proven free and `conflicts` answered by other hosts, `age` seconds ago.
fn checked(spec: Value, free: &[&str], conflicts: &[&str], age: i64) -> Arc<Eip> {
    let mut e = (*eip("lan", spec)).clone();
    let time = Time(jiff::Timestamp::from_second(1_800_000_000 - age).unwrap());
    e.status = Some(herald_api::EipStatus {
        probes: Some(herald_api::eip::AddressProbes {
            node: "node1".into(),
            interface: "eth0".into(),
            free: free
                .iter()
                .map(|ip| herald_api::eip::ProvenFree {
                    ip: (*ip).into(),
                    time: time.clone(),
                })
                .collect(),
            conflicts: conflicts
                .iter()
                .map(|ip| herald_api::eip::HostConflict {
                    ip: (*ip).into(),
                    mac: "02:00:00:00:00:99".into(),
                    time: time.clone(),
                })
                .collect(),
        }),
        ..Default::default()
    });
    Arc::new(e)
}

#[test]
fn proven_free_addresses_go_first_and_addresses_other_hosts_answer_for_never() {
    let spec = json!({"addresses": ["192.0.2.10-192.0.2.20"]});
    let mut snap = Snapshot {
        eips: vec![checked(spec.clone(), &["192.0.2.13"], &["192.0.2.10"], 10)],
        ..Default::default()
    };
    snap.services.push(service("shop", "a", 1, json!({}), json!({})));
    snap.services.push(service("shop", "b", 2, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "shop/a"), [ip("192.0.2.13")], "proven free first");
    assert_eq!(
        ips_of(&snap, "shop/b"),
        [ip("192.0.2.11")],
        "then the lowest no host answers for"
    );
    let status = snap.eips[0].status.clone().unwrap();
    let conflict = status.conditions.iter().find(|c| c.type_ == "AddressConflict").unwrap();
    assert_eq!(
        (conflict.status.as_str(), conflict.reason.as_str()),
        ("True", "HostAnswers")
    );
    assert!(
        conflict.message.contains("192.0.2.10 (host 02:00:00:00:00:99)") && conflict.message.contains("node node1"),
        "{}",
        conflict.message
    );
    assert!(status.probes.is_some(), "the prober's record is left as it is");
    assert!(pass(&mut state, &mut snap).writes.is_empty(), "quiet afterwards");

    // A proof 60 s old proves nothing: the lowest free address comes first again.
    let mut snap = Snapshot {
        eips: vec![checked(spec.clone(), &["192.0.2.13"], &[], 60)],
        ..Default::default()
    };
    snap.services.push(service("shop", "a", 1, json!({}), json!({})));
    let mut state = AllocatorState::new();
    pass(&mut state, &mut snap);
    assert_eq!(ips_of(&snap, "shop/a"), [ip("192.0.2.10")]);
    let status = snap.eips[0].status.clone().unwrap();
    let conflict = status.conditions.iter().find(|c| c.type_ == "AddressConflict").unwrap();
    assert_eq!(
        (conflict.status.as_str(), conflict.reason.as_str()),
        ("False", "NoConflict")
    );

    // BGP pools are not checked and have no such condition.
    let mut snap = Snapshot {
        eips: vec![eip(
            "lan",
            json!({"addresses": ["192.0.2.10-192.0.2.20"], "protocol": "bgp"}),
        )],
        ..Default::default()
    };
    pass(&mut AllocatorState::new(), &mut snap);
    let status = snap.eips[0].status.clone().unwrap();
    assert!(!status.conditions.iter().any(|c| c.type_ == "AddressConflict"));
}

#[test]
fn a_lone_change_is_allocated_at_once_and_a_burst_in_windows() {
    use super::{BATCH_WINDOW, batch_wait};
    use std::time::Duration;
    assert_eq!(
        batch_wait(Duration::from_secs(5)),
        Duration::ZERO,
        "after a quiet spell"
    );
    assert_eq!(batch_wait(BATCH_WINDOW), Duration::ZERO);
    assert_eq!(batch_wait(Duration::ZERO), BATCH_WINDOW, "right after a pass");
    assert_eq!(
        batch_wait(Duration::from_millis(15)),
        Duration::from_millis(5),
        "passes are a window apart"
    );
}
