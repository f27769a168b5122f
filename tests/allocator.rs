//! The allocator controller inside real `herald agent` processes, against lab-apiserver.

mod common;

use std::time::Duration;

use common::{Cluster, eip, eventually, ingress_ips, lb_service, taken_over};
use herald_api::Eip;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn ips_of(c: &Cluster, ns: &str, name: &str) -> Option<Vec<String>> {
    let svc = c.services(ns).get(name).await.ok()?;
    let ips = ingress_ips(&svc);
    (!ips.is_empty()).then_some(ips)
}

async fn event_note(c: &Cluster, ns: &str, name: &str, reason: &str) -> Option<String> {
    let events: Api<Event> = Api::namespaced(c.client.clone(), ns);
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items
        .into_iter()
        .find(|e| {
            e.reason.as_deref() == Some(reason) && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .and_then(|e| e.note)
}

#[tokio::test]
async fn service_gets_an_ip_with_status_annotation_event_and_eip_summary() {
    let mut c = Cluster::start().await;
    c.agent("n1", &[]);
    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.8/29", "2001:db8::/126"]})))
        .await;
    c.create_service(lb_service("default", "web", json!({}))).await;
    let ips = eventually(WAIT, || ips_of(&c, "default", "web"))
        .await
        .expect("IP allocated");
    assert_eq!(ips, ["192.0.2.9"]);
    // Two writes: the status first, then the annotation.
    let svc = taken_over(&c, "default", "web", WAIT)
        .await
        .expect("allocated-from annotation");
    assert_eq!(svc.metadata.annotations.unwrap()["herald.dev/allocated-from"], "lan");
    let ingress = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip_mode.as_deref(), Some("VIP"));
    let note = eventually(WAIT, || event_note(&c, "default", "web", "IPAllocated"))
        .await
        .expect("IPAllocated event");
    assert_eq!(note, "allocated 192.0.2.9 from Eip 'lan'");
    let eips: Api<Eip> = Api::all(c.client.clone());
    let status = eventually(WAIT, || async {
        let s = eips.get("lan").await.ok()?.status?;
        (s.used == 1).then_some(s)
    })
    .await
    .expect("Eip status counts the allocation");
    // 192.0.2.9-14 and 2001:db8::1-2 (CIDRs lose their first and last address).
    assert_eq!((status.free.as_str(), status.total.as_str()), ("7", "8"));
    // What `kubectl get eip` shows: the addresses as text, usage per family.
    assert_eq!(status.addresses, "192.0.2.8/29, 2001:db8::/126");
    assert_eq!(status.ipv4.as_ref().map(|u| u.summary.as_str()), Some("1/6"));
    assert_eq!(status.ipv6.as_ref().map(|u| u.summary.as_str()), Some("0/2"));
    assert!(herald_api::conditions::is_true(&status.conditions, "Ready"));
}

#[tokio::test]
async fn bad_input_gets_an_event_and_the_agent_keeps_going() {
    let mut c = Cluster::start().await;
    let agent = c.agent("n1", &[]);
    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.8/29"]}))).await;
    c.create_service(lb_service("default", "typo", json!({"herald.dev/ips": "192.0.2.300"})))
        .await;
    c.create_service(lb_service("default", "nopool", json!({"herald.dev/eip": "missing"})))
        .await;
    c.create_service(lb_service("default", "v6", json!({"herald.dev/ips": "2001:db8::1"})))
        .await;
    // The real server refuses a reversed range (CRD rule); a user gets one in only under an older, looser schema.
    c.create_raw::<Eip>(eip("broken", json!({"addresses": ["192.0.2.20-192.0.2.10"]})))
        .await;
    let typo = eventually(WAIT, || event_note(&c, "default", "typo", "AllocationFailed"))
        .await
        .unwrap();
    assert!(typo.contains("'192.0.2.300' is not an IP address"), "{typo}");
    let nopool = eventually(WAIT, || event_note(&c, "default", "nopool", "AllocationFailed"))
        .await
        .unwrap();
    assert!(nopool.contains("Eip 'missing'"), "{nopool}");
    let v6 = eventually(WAIT, || event_note(&c, "default", "v6", "AllocationFailed"))
        .await
        .unwrap();
    assert!(v6.contains("2001:db8::1"), "{v6}");
    // A 100 KB annotation value: the Event is written (a real server refuses notes over 1 KB) and quotes a bounded
    // excerpt; the log line too.
    let huge = "1".repeat(100_000);
    c.create_service(lb_service("default", "huge", json!({"herald.dev/ips": huge})))
        .await;
    let note = eventually(WAIT, || event_note(&c, "default", "huge", "AllocationFailed"))
        .await
        .unwrap();
    assert!(
        note.len() <= 1024 && note.contains("more bytes"),
        "{} bytes: {note:.200}",
        note.len()
    );
    let longest_line = c.log(agent, "n1").lines().map(str::len).max().unwrap_or(0);
    assert!(longest_line < 4096, "a log line of {longest_line} bytes");
    let eips: Api<Eip> = Api::all(c.client.clone());
    let ready = eventually(WAIT, || async {
        let s = eips.get("broken").await.ok()?.status?;
        s.conditions.into_iter().find(|c| c.type_ == "Ready")
    })
    .await
    .unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(ready.message.contains("192.0.2.20-192.0.2.10"), "{}", ready.message);
    assert!(c.alive(agent), "the agent must survive bad input");
    c.create_service(lb_service("default", "good", json!({}))).await;
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "good")).await.unwrap(),
        ["192.0.2.9"]
    );
}

#[tokio::test]
async fn restart_keeps_every_ip_and_writes_nothing() {
    let mut c = Cluster::start().await;
    let first = c.agent("n1", &[]);
    c.create_eip(eip("lan", json!({"addresses": ["198.51.100.0/27"]})))
        .await;
    for i in 0..12 {
        c.create_service(lb_service("default", &format!("s{i}"), json!({})))
            .await;
    }
    // Every Service holds its IP before one is freed: the allocator writes its statuses one by one, in its own order
    // (creation time, then name: "s11" before "s4"), so one Service holding an IP says nothing of the others.
    eventually(WAIT, || async {
        let list = c.services("default").list(&ListParams::default()).await.ok()?;
        let held = list.items.iter().filter(|s| !ingress_ips(s).is_empty()).count();
        (held == 12).then_some(())
    })
    .await
    .expect("all allocated");
    // Free a hole in the middle, so a reshuffle would show.
    let hole = ips_of(&c, "default", "s4").await.unwrap();
    c.services("default")
        .delete("s4", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = c.services("default").list(&ListParams::default()).await.unwrap();
    c.stop(first, "KILL");
    c.agent("n1", &[]);
    // The new process becomes leader (after the killed one's lease expires) and allocates a new Service...
    c.create_service(lb_service("default", "after", json!({}))).await;
    let after_ip = eventually(WAIT, || ips_of(&c, "default", "after"))
        .await
        .expect("new agent allocates");
    assert_eq!(after_ip, hole, "the freed hole is reused");
    // ...without touching any existing Service.
    for svc in before.items {
        let now = c
            .services("default")
            .get(&svc.metadata.name.clone().unwrap())
            .await
            .unwrap();
        assert_eq!(
            now.metadata.resource_version, svc.metadata.resource_version,
            "{:?} rewritten",
            svc.metadata.name
        );
    }
}

/// `<node>/<instance>` of the agent holding the allocator's Lease.
async fn allocator_holder(c: &Cluster) -> String {
    let lease = c.leases().get("herald-allocator").await.unwrap();
    lease.spec.unwrap().holder_identity.unwrap()
}

#[tokio::test]
async fn two_agents_one_allocator_and_failover() {
    let mut c = Cluster::start().await;
    let a = c.agent("n1", &[]);
    let b = c.agent("n2", &[]);
    c.create_eip(eip("lan", json!({"addresses": ["203.0.113.0/28"]}))).await;
    c.create_service(lb_service("default", "one", json!({}))).await;
    eventually(WAIT, || ips_of(&c, "default", "one"))
        .await
        .expect("allocated");
    let holder = allocator_holder(&c).await;
    let (leader, leader_node, other_node) = if holder.starts_with("n1/") {
        (a, "n1", "n2")
    } else {
        (b, "n2", "n1")
    };
    let led = |node: &str, i: usize| c.log(i, node).contains("became leader");
    assert!(led(leader_node, leader), "the lease holder logs that it leads");
    assert!(
        !led(other_node, if leader == a { b } else { a }),
        "only one agent leads"
    );
    c.stop(leader, "KILL");
    c.create_service(lb_service("default", "two", json!({}))).await;
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "two")).await.unwrap(),
        ["203.0.113.2"]
    );
    let holder = allocator_holder(&c).await;
    assert!(holder.starts_with(&format!("{other_node}/")), "{holder}");
}

#[tokio::test]
async fn a_killed_allocator_leader_is_replaced_within_seconds_at_default_timing() {
    let mut c = Cluster::start().await;
    let a = c.agent_at_default_timing("n1", &[]);
    let b = c.agent_at_default_timing("n2", &[]);
    c.create_eip(eip("lan", json!({"addresses": ["203.0.113.0/28"]}))).await;
    c.create_service(lb_service("default", "one", json!({}))).await;
    eventually(WAIT, || ips_of(&c, "default", "one"))
        .await
        .expect("allocated");
    let holder = allocator_holder(&c).await;
    let (leader, other_node) = if holder.starts_with("n1/") {
        (a, "n2")
    } else {
        (b, "n1")
    };
    // The kill lands at a random point of the leader's renew period.
    tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1000)).await;
    c.stop(leader, "KILL");
    let killed = std::time::Instant::now();
    c.create_service(lb_service("default", "two", json!({}))).await;
    let ips = eventually(WAIT, || ips_of(&c, "default", "two"))
        .await
        .expect("allocated after the kill");
    let took = killed.elapsed();
    eprintln!("allocator failover: the Service created at the kill -9 of the leader got its IP {took:?} after it");
    assert_eq!(ips, ["203.0.113.2"]);
    // Client-go's timings (15 s lease) took about 16 s; the election's (3 s) take about 3 s plus the new leader's
    // first lists. The bound only catches a regression on a busy machine.
    assert!(took <= Duration::from_secs(8), "failover took {took:?}");
    let holder = c
        .leases()
        .get("herald-allocator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert!(
        holder.is_some_and(|h| h.starts_with(&format!("{other_node}/"))),
        "the other agent holds the allocator Lease"
    );
}

#[tokio::test]
async fn eip_delete_moves_services_to_another_pool() {
    let mut c = Cluster::start().await;
    c.agent("n1", &[]);
    c.create_eip(eip("first", json!({"addresses": ["192.0.2.1/32"], "priority": 1})))
        .await;
    c.create_service(lb_service("default", "web", json!({}))).await;
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "web")).await.unwrap(),
        ["192.0.2.1"]
    );
    c.create_eip(eip("second", json!({"addresses": ["198.51.100.1/32"], "priority": 2})))
        .await;
    Api::<Eip>::all(c.client.clone())
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    let moved = eventually(WAIT, || async {
        let ips = ips_of(&c, "default", "web").await?;
        (ips == ["198.51.100.1"]).then_some(ips)
    })
    .await;
    assert!(moved.is_some(), "the Service moves to the remaining pool");
    let svc = c.services("default").get("web").await.unwrap();
    assert_eq!(svc.metadata.annotations.unwrap()["herald.dev/allocated-from"], "second");
}

#[tokio::test]
async fn specific_ip_sharing_and_dual_stack() {
    let mut c = Cluster::start().await;
    c.agent("n1", &[]);
    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.0/29", "2001:db8::/125"]})))
        .await;
    // A specific IP.
    c.create_service(lb_service("default", "pinned", json!({"herald.dev/ips": "192.0.2.5"})))
        .await;
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "pinned")).await.unwrap(),
        ["192.0.2.5"]
    );
    // Sharing: same key, disjoint ports → same IP; overlapping port → refused with the reason.
    c.create_service(lb_service("default", "http", json!({"herald.dev/sharing-key": "k"})))
        .await;
    let mut dns = lb_service("default", "dns", json!({"herald.dev/sharing-key": "k"}));
    dns["spec"]["ports"] = json!([{"port": 53, "protocol": "UDP"}]);
    c.create_service(dns).await;
    let http = eventually(WAIT, || ips_of(&c, "default", "http")).await.unwrap();
    assert_eq!(eventually(WAIT, || ips_of(&c, "default", "dns")).await.unwrap(), http);
    // A third Service with the key but an overlapping port gets its own IP, unless it insists on the shared one.
    let ask = json!({"herald.dev/sharing-key": "k", "herald.dev/ips": http[0]});
    c.create_service(lb_service("default", "clash", ask)).await;
    let refused = eventually(WAIT, || event_note(&c, "default", "clash", "AllocationFailed"))
        .await
        .unwrap();
    assert!(
        refused.contains("80/TCP") && refused.contains("default/http"),
        "{refused}"
    );
    // Dual-stack in ipFamilies order.
    let mut dual = lb_service("default", "dual", json!({}));
    dual["spec"]["ipFamilyPolicy"] = json!("RequireDualStack");
    dual["spec"]["ipFamilies"] = json!(["IPv6", "IPv4"]);
    c.create_service(dual).await;
    let ips = eventually(WAIT, || ips_of(&c, "default", "dual")).await.unwrap();
    assert_eq!(ips.len(), 2);
    assert!(ips[0].contains(':') && !ips[1].contains(':'), "{ips:?}");
}

#[tokio::test]
async fn exhaustion_recovers_when_an_ip_frees_up_and_namespace_rules_hold() {
    let mut c = Cluster::start().await;
    c.agent("n1", &[]);
    c.create_eip(eip(
        "tiny",
        json!({"addresses": ["198.51.100.7/32"], "namespaces": ["default"]}),
    ))
    .await;
    c.create_service(lb_service("default", "first", json!({}))).await;
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "first")).await.unwrap(),
        ["198.51.100.7"]
    );
    c.create_service(lb_service("default", "second", json!({}))).await;
    let full = eventually(WAIT, || event_note(&c, "default", "second", "AllocationFailed"))
        .await
        .unwrap();
    assert!(full.contains("tiny"), "{full}");
    let eips: Api<Eip> = Api::all(c.client.clone());
    let exhausted = eventually(WAIT, || async {
        let s = eips.get("tiny").await.ok()?.status?;
        herald_api::conditions::is_true(&s.conditions, "Exhausted").then_some(())
    })
    .await;
    assert!(exhausted.is_some(), "Exhausted condition");
    // Another namespace may not use the pool at all.
    let ns = serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(c.client.clone())
        .create(&Default::default(), &ns)
        .await
        .unwrap();
    c.create_service(lb_service("other", "outsider", json!({}))).await;
    let why = eventually(WAIT, || event_note(&c, "other", "outsider", "AllocationFailed"))
        .await
        .unwrap();
    assert!(why.contains("other/outsider"), "{why}");
    // The first Service goes away: the second gets the address.
    c.services("default")
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "second")).await.unwrap(),
        ["198.51.100.7"]
    );
    assert!(ips_of(&c, "other", "outsider").await.is_none());
}

#[tokio::test]
async fn disabled_eip_keeps_existing_ips_and_gives_no_new_ones() {
    let mut c = Cluster::start().await;
    c.agent("n1", &[]);
    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.0/29"]}))).await;
    c.create_service(lb_service("default", "old", json!({}))).await;
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "old")).await.unwrap(),
        ["192.0.2.1"]
    );
    let eips: Api<Eip> = Api::all(c.client.clone());
    let patch = json!({"spec": {"disable": true}});
    eips.patch("lan", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    let ready = eventually(WAIT, || async {
        let s = eips.get("lan").await.ok()?.status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "Disabled")
    })
    .await;
    assert!(ready.is_some(), "Ready reason Disabled");
    c.create_service(lb_service("default", "new", json!({}))).await;
    let why = eventually(WAIT, || event_note(&c, "default", "new", "AllocationFailed"))
        .await
        .unwrap();
    assert!(why.contains("disabled"), "{why}");
    assert_eq!(ips_of(&c, "default", "old").await.unwrap(), ["192.0.2.1"]);
}

/// Agent flags for the Lease collector tests: a 4 s grace period (which needs the tuned election timings: the grace
/// may not be shorter than --takeover-after). Checks that a Lease was kept long enough compare with a time taken
/// before the grace period could start, so a slow machine only makes them pass later, never fail.
const FAST_GC: [&str; 8] = [
    "--node-renew-period",
    "300ms",
    "--renew-deadline",
    "700ms",
    "--takeover-after",
    "1s",
    "--lease-gc-after",
    "4s",
];
/// The grace period of [`FAST_GC`].
const GRACE: Duration = Duration::from_secs(4);

async fn lease_exists(c: &Cluster, name: &str) -> bool {
    c.leases().get_opt(name).await.unwrap().is_some()
}

/// `Some(())` once the Lease is gone.
async fn gone(c: &Cluster, name: &str) -> Option<()> {
    (!lease_exists(c, name).await).then_some(())
}

#[tokio::test]
async fn unused_ip_leases_are_collected_after_the_grace_period_and_used_or_held_ones_kept() {
    let mut c = Cluster::start().await;
    // The agent's instance id is fixed so a test Lease can name it as a live holder.
    let mut args = vec!["--instance-id", "live"];
    args.extend(FAST_GC);
    c.agent("n1", &args);
    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.8/29"]}))).await;
    c.create_service(lb_service("default", "gone", json!({}))).await;
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "gone")).await.unwrap(),
        ["192.0.2.9"]
    );
    c.create_service(lb_service("default", "kept", json!({}))).await;
    assert_eq!(
        eventually(WAIT, || ips_of(&c, "default", "kept")).await.unwrap(),
        ["192.0.2.10"]
    );
    // Released leases of both IPs (as the election leaves them), and two leases of an IP no Service uses: one held
    // by an instance that has no node lease (a crashed agent), one by the running agent (alive: it renews).
    c.create_lease("herald-ip-192-0-2-9", "ip", None).await;
    c.create_lease("herald-ip-192-0-2-10", "ip", None).await;
    c.create_lease("herald-ip-192-0-2-11", "ip", Some("n7/crashed")).await;
    c.create_lease("herald-ip-192-0-2-12", "ip", Some("n1/live")).await;
    // The IP is in use until the Service goes: its grace period cannot start before this.
    let unused_from = std::time::Instant::now();
    c.services("default")
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || gone(&c, "herald-ip-192-0-2-9")).await.is_some(),
        "the lease of the deleted Service's IP is collected"
    );
    assert!(
        unused_from.elapsed() >= GRACE,
        "deleted {:?} after the Service, before the grace period",
        unused_from.elapsed()
    );
    assert!(
        eventually(WAIT, || gone(&c, "herald-ip-192-0-2-11")).await.is_some(),
        "a lease held by a dead instance is collected"
    );
    // Several grace periods later the others are still there: the IP is in use, or its holder is alive.
    tokio::time::sleep(GRACE * 2).await;
    assert!(lease_exists(&c, "herald-ip-192-0-2-10").await, "lease of an IP in use");
    assert!(lease_exists(&c, "herald-ip-192-0-2-12").await, "lease of a live holder");
    assert!(lease_exists(&c, "herald-node-n1").await, "the live agent's node lease");
    let log = c.log(0, "n1");
    assert!(
        log.contains("deleted an unused Lease") && log.contains("herald-ip-192-0-2-9"),
        "each deletion is logged"
    );
}

#[tokio::test]
async fn a_lease_written_again_within_each_grace_period_is_kept_until_it_goes_quiet() {
    let mut c = Cluster::start().await;
    c.agent("n1", &FAST_GC);
    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.8/29"]}))).await;
    // A lease of an unused IP whose holder has no node lease: collectable, but agents keep writing it (acquire,
    // release, acquire...). Every write starts the grace period again, and a delete judged on an older version fails.
    c.create_lease("herald-ip-192-0-2-13", "ip", None).await;
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut lease = c
            .leases()
            .get("herald-ip-192-0-2-13")
            .await
            .expect("lease kept while written");
        let spec = lease.spec.as_mut().unwrap();
        spec.holder_identity = (i % 2 == 0).then(|| "n7/crashed".to_string());
        spec.lease_transitions = Some(i);
        c.leases()
            .replace("herald-ip-192-0-2-13", &Default::default(), &lease)
            .await
            .expect("no one else writes this lease");
    }
    assert!(
        eventually(WAIT, || gone(&c, "herald-ip-192-0-2-13")).await.is_some(),
        "collected once nobody writes it"
    );
}

#[tokio::test]
async fn node_leases_of_removed_nodes_are_collected_and_live_ones_kept() {
    let mut c = Cluster::start().await;
    c.agent("n1", &FAST_GC);
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client.clone());
    let node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n8"}})).unwrap();
    nodes.create(&Default::default(), &node).await.unwrap();
    // n8 exists but its agent is stopped; n9 was removed from the cluster.
    c.create_lease("herald-node-n8", "node", Some("n8/old")).await;
    let created = std::time::Instant::now();
    c.create_lease("herald-node-n9", "node", Some("n9/old")).await;
    assert!(
        eventually(WAIT, || gone(&c, "herald-node-n9")).await.is_some(),
        "the lease of a removed node is collected"
    );
    assert!(
        created.elapsed() >= GRACE,
        "deleted {:?} after it was written, before the grace period",
        created.elapsed()
    );
    tokio::time::sleep(GRACE * 2).await;
    assert!(
        lease_exists(&c, "herald-node-n8").await,
        "a Node that exists keeps its lease"
    );
    assert!(
        lease_exists(&c, "herald-node-n1").await,
        "a renewing agent keeps its lease (it has no Node object here)"
    );
    nodes.delete("n8", &DeleteParams::default()).await.unwrap();
    assert!(
        eventually(WAIT, || gone(&c, "herald-node-n8")).await.is_some(),
        "collected once its Node is removed"
    );
    assert!(lease_exists(&c, "herald-node-n1").await);
}
