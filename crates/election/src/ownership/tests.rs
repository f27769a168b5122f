//! Tests of the ownership core, driven against the in-memory lease store.

use std::time::Duration;

use super::*;
use crate::memory::MemoryLeaseStore;

/// Runs the core against the store until quiet at `now`; returns every action it produced.
fn drive(core: &mut OwnershipCore, store: &MemoryLeaseStore, now: Instant) -> Vec<Action> {
    let mut all = Vec::new();
    loop {
        let actions = core.poll(now);
        if actions.is_empty() {
            return all;
        }
        for a in &actions {
            let (op, result) = match a {
                Action::Get { op, name } => (*op, store.get_now(name)),
                Action::Create { op, record } => (*op, store.create_now(record)),
                Action::Replace { op, record } => (*op, store.replace_now(record)),
                _ => continue,
            };
            if let Ok(rec) = &result
                && !matches!(a, Action::Get { .. })
            {
                core.observe(now, WatchEvent::Applied(rec.clone()));
            }
            core.op_done(now, op, result);
        }
        all.extend(actions);
    }
}

fn setup() -> (OwnershipCore, MemoryLeaseStore, Instant, IpAddr) {
    let store = MemoryLeaseStore::new();
    let me = Identity::new("node-a", "1").unwrap();
    let mut core = OwnershipCore::new(me, ElectionTiming::default(), OutagePolicy::Withdraw);
    let t0 = Instant::now();
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    core.set_desired(
        t0,
        ip,
        IpDesire {
            eligible_nodes: ["node-a".to_owned()].into(),
            eip: "e".into(),
            interface: Some("eth0".into()),
        },
    )
    .unwrap();
    (core, store, t0, ip)
}

/// The announcement of `ip` among `actions`, if any.
fn announced(actions: &[Action], ip: IpAddr) -> Option<&Announce> {
    actions.iter().find_map(|a| match a {
        Action::Announce(announce) if announce.ip == ip => Some(announce),
        _ => None,
    })
}

#[test]
fn nothing_is_acquired_before_the_watch_synced_and_warmed_up() {
    let (mut core, store, t0, ip) = setup();
    let actions = drive(&mut core, &store, t0);
    assert!(announced(&actions, ip).is_none(), "{actions:?}");
    assert!(store.peek("herald-node-node-a").is_some(), "node lease created at once");
    core.observe(t0, WatchEvent::Resynced(store.snapshot()));
    assert!(
        drive(&mut core, &store, t0 + Duration::from_millis(500)).is_empty(),
        "warm-up of one R"
    );
    let actions = drive(&mut core, &store, t0 + Duration::from_millis(1000));
    assert_eq!(
        announced(&actions, ip),
        Some(&Announce {
            ip,
            interface: Some("eth0".into()),
            held_before: false
        }),
        "the first holder ever: the sink probes before answering; {actions:?}"
    );
    assert_eq!(core.holder_of(ip), Some("node-a/1"));
}

#[test]
fn a_takeover_is_announced_as_held_before_and_an_interface_change_moves_the_ip() {
    let (mut core, store, t0, ip) = setup();
    // Another agent held the IP once; its node lease is gone, so it is dead.
    let lease = LeaseRecord {
        name: "herald-ip-192-0-2-1".into(),
        holder: Some("node-b/1".into()),
        lease_duration_seconds: Some(3),
        lease_transitions: Some(1),
        ..Default::default()
    };
    store.create_now(&lease).unwrap();
    drive(&mut core, &store, t0);
    core.observe(t0, WatchEvent::Resynced(store.snapshot()));
    let mut at = t0;
    let mut takeover = None;
    while takeover.is_none() && at < t0 + Duration::from_secs(10) {
        at += Duration::from_millis(100);
        takeover = announced(&drive(&mut core, &store, at), ip).cloned();
    }
    let takeover = takeover.expect("node-a takes the IP of a dead holder over");
    assert!(takeover.held_before, "a takeover is announced at once: {takeover:?}");
    assert_eq!(store.peek("herald-ip-192-0-2-1").unwrap().lease_transitions, Some(2));

    // The IP's interface changes (e.g. the Eip's spec.interface): withdrawn, then announced on the new one.
    let desire = IpDesire {
        eligible_nodes: ["node-a".to_owned()].into(),
        eip: "e".into(),
        interface: Some("eth1".into()),
    };
    core.set_desired(at, ip, desire).unwrap();
    let actions = drive(&mut core, &store, at);
    let withdraw = actions.iter().position(|a| *a == Action::Withdraw(ip));
    let announce = actions
        .iter()
        .position(|a| matches!(a, Action::Announce(a) if a.ip == ip));
    assert!(withdraw.is_some() && withdraw < announce, "{actions:?}");
    assert_eq!(
        announced(&actions, ip).unwrap(),
        &Announce {
            ip,
            interface: Some("eth1".into()),
            held_before: true
        }
    );
    assert!(
        announced(&drive(&mut core, &store, at + Duration::from_millis(100)), ip).is_none(),
        "once"
    );
}

#[test]
fn withdrawal_precedes_the_release_in_the_same_batch() {
    let (mut core, store, t0, ip) = setup();
    drive(&mut core, &store, t0);
    core.observe(t0, WatchEvent::Resynced(store.snapshot()));
    drive(&mut core, &store, t0 + Duration::from_secs(1));
    assert!(core.announced().contains(&ip));
    let t1 = t0 + Duration::from_millis(1100);
    core.set_desired(
        t1,
        ip,
        IpDesire {
            eligible_nodes: NodeSet::default(),
            eip: "e".into(),
            interface: None,
        },
    )
    .unwrap();
    let batch = core.poll(t1);
    let withdraw = batch.iter().position(|a| *a == Action::Withdraw(ip)).expect("withdraw");
    let release = batch
        .iter()
        .position(|a| matches!(a, Action::Replace { record, .. } if record.name.starts_with("herald-ip-") && record.holder.is_none()))
        .expect("release");
    assert!(withdraw < release, "{batch:?}");
}

#[test]
fn graceful_stop_releases_ips_then_node_lease_then_stops() {
    let (mut core, store, t0, ip) = setup();
    drive(&mut core, &store, t0);
    core.observe(t0, WatchEvent::Resynced(store.snapshot()));
    drive(&mut core, &store, t0 + Duration::from_secs(1));
    let t1 = t0 + Duration::from_millis(1200);
    core.begin_shutdown(t1);
    let actions = drive(&mut core, &store, t1);
    let pos = |f: &dyn Fn(&Action) -> bool| actions.iter().position(f).expect("present");
    let withdraw = pos(&|a| *a == Action::Withdraw(ip));
    let ip_release = pos(&|a| matches!(a, Action::Replace { record, .. } if record.name == "herald-ip-192-0-2-1"));
    let node_release = pos(
        &|a| matches!(a, Action::Replace { record, .. } if record.name == "herald-node-node-a" && record.holder.is_none()),
    );
    let stopped = pos(&|a| *a == Action::Stopped);
    assert!(
        withdraw < ip_release && ip_release < node_release && node_release < stopped,
        "{actions:?}"
    );
    assert!(core.is_stopped());
    assert_eq!(store.peek("herald-node-node-a").unwrap().holder(), None);
    assert_eq!(store.peek("herald-ip-192-0-2-1").unwrap().holder(), None);
}

/// Holds one IP from `t0 + 1 s` (the last successful renew sent then); the renew sent at `t0 + 2 s` is answered
/// `answered` after `t0`, and no decision round ran in between. Returns what the core does then.
fn renew_answered_late(answered: Duration) -> (OwnershipCore, IpAddr, Vec<Action>) {
    let (mut core, store, t0, ip) = setup();
    drive(&mut core, &store, t0);
    core.observe(t0, WatchEvent::Resynced(store.snapshot()));
    drive(&mut core, &store, t0 + Duration::from_secs(1));
    assert!(core.announced().contains(&ip));
    let t2 = t0 + Duration::from_secs(2);
    let (op, record) = core
        .poll(t2)
        .into_iter()
        .find_map(|a| match a {
            Action::Replace { op, record } if record.name == "herald-node-node-a" => Some((op, record)),
            _ => None,
        })
        .expect("renew");
    let t3 = t0 + answered;
    let result = store.replace_now(&record);
    core.op_done(t3, op, result);
    let actions = drive(&mut core, &store, t3);
    (core, ip, actions)
}

#[test]
fn a_gap_ended_before_any_takeover_was_possible_needs_no_reassertion() {
    // Answered 2.5 s after the last successful renew was sent: past its deadline (2 s), before any other node could
    // have confirmed this one dead (3 s × 0.98 / 1.02 = 2.88 s).
    let (core, ip, actions) = renew_answered_late(Duration::from_millis(3500));
    assert!(core.announced().contains(&ip));
    assert!(
        !actions.iter().any(
            |a| matches!(a, Action::Replace { record, .. } if record.name.starts_with("herald-ip-"))
                || matches!(a, Action::Withdraw(_))
        ),
        "still announced, no write of the IP's lease: {actions:?}"
    );
    assert_eq!(core.harmless_gaps(), 1);
}

#[test]
fn renew_answered_after_the_deadline_counts_as_a_gap() {
    // Answered 2.9 s after the last successful renew was sent: another node may have taken the IP over.
    let (core, ip, actions) = renew_answered_late(Duration::from_millis(3900));
    assert_eq!(core.harmless_gaps(), 0);
    assert!(actions.contains(&Action::Withdraw(ip)), "{actions:?}");
    let reassert = actions.iter().position(|a| {
        matches!(a, Action::Replace { record, .. }
            if record.name == "herald-ip-192-0-2-1" && record.holder.as_deref() == Some("node-a/1"))
    });
    let announce = actions
        .iter()
        .position(|a| matches!(a, Action::Announce(a) if a.ip == ip && a.held_before));
    assert!(
        reassert.is_some() && reassert < announce,
        "re-asserted before announcing again, as held before: {actions:?}"
    );
}

#[test]
fn withdraw_policy_goes_silent_at_the_renew_deadline() {
    let (mut core, store, t0, ip) = setup();
    drive(&mut core, &store, t0);
    core.observe(t0, WatchEvent::Resynced(store.snapshot()));
    drive(&mut core, &store, t0 + Duration::from_secs(1));
    assert!(core.announced().contains(&ip));
    store.set_reachable("", false);
    // Last successful renew was sent at t0 + 1 s: silent exactly at t0 + 3 s.
    drive(&mut core, &store, t0 + Duration::from_millis(2999));
    assert!(core.announced().contains(&ip));
    assert!(
        core.next_wakeup().is_some_and(|w| w <= t0 + Duration::from_secs(3)),
        "wakes up for the deadline"
    );
    let actions = drive(&mut core, &store, t0 + Duration::from_secs(3));
    assert!(actions.contains(&Action::Withdraw(ip)), "{actions:?}");
}
