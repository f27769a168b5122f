//! The agent's health endpoints against lab-apiserver: `/readyz` stays 503 until the announcer has listed every
//! resource it reads, and the agent says which watch it is waiting for.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{Cluster, eip, eventually, ingress_ips, lb_service};
use herald_api::decode::Lenient;
use herald_api::{BgpConf, BgpPeer, Eip};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, PostParams};
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// The HTTP status code of `GET path` on `addr`, or `None` when nothing answers.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_every_watch_and_the_log_names_the_missing_one() {
    let mut c = Cluster::start_with_crds(|plural| plural != "bgppeers").await;
    let addr = free_port();
    let agent = c.agent("n1", &["--metrics-addr", &addr.to_string()]);
    let healthy = eventually(Duration::from_secs(20), || async {
        (http_status(addr, "/healthz") == Some(200)).then_some(())
    })
    .await;
    assert!(healthy.is_some(), "/healthz answers while the agent runs");
    assert_eq!(
        http_status(addr, "/readyz"),
        Some(503),
        "not ready: the BgpPeer CRD is missing"
    );

    let named = eventually(Duration::from_secs(30), || async {
        let log = c.log(agent, "n1");
        log.lines()
            .any(|l| l.contains("still waiting for the first list") && l.contains("BgpPeer"))
            .then_some(())
    })
    .await;
    assert!(
        named.is_some(),
        "the agent names the watch it waits for:\n{}",
        c.log(agent, "n1")
    );
    assert_eq!(http_status(addr, "/readyz"), Some(503));

    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    let bgp_peers = herald_api::crds()
        .into_iter()
        .find(|crd| crd.spec.names.plural == "bgppeers")
        .unwrap();
    crds.create(&PostParams::default(), &bgp_peers).await.unwrap();
    // The watch retries with kube's backoff (up to ~30 s between attempts is not expected this early).
    let ready = eventually(Duration::from_secs(60), || async {
        (http_status(addr, "/readyz") == Some(200)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready once the CRD exists:\n{}", c.log(agent, "n1"));
    assert!(c.log(agent, "n1").contains("announcer started"));
    assert!(c.alive(agent), "a missing CRD never stops the agent");
}

/// If the Layer 2 election task dies (a bug: injected here as a panic on its first IP, debug builds only), the agent
/// does not run on answering for nothing: it turns unready, says why and exits with an error to be restarted.
#[tokio::test]
async fn an_agent_whose_election_dies_turns_unready_and_exits_with_an_error() {
    let mut c = Cluster::start().await;
    let addr = free_port();
    let agent = c.agent_with_env(
        "n1",
        &["--metrics-addr", &addr.to_string()],
        &[("HERALD_TEST_FAULT", "election-panic")],
    );
    let ready = eventually(Duration::from_secs(30), || async {
        (http_status(addr, "/readyz") == Some(200)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready before the fault:\n{}", c.log(agent, "n1"));

    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.8/29"]}))).await;
    c.create_service(lb_service("default", "web", json!({}))).await;
    let mut unready = false;
    let exited = eventually(Duration::from_secs(30), || {
        unready |= http_status(addr, "/readyz") != Some(200);
        let status = c.exited(agent);
        async move { status }
    })
    .await;
    let log = c.log(agent, "n1");
    let status = exited.unwrap_or_else(|| panic!("the agent exits once its election died:\n{log}"));
    assert!(!status.success(), "with an error ({status}):\n{log}");
    assert!(unready, "/readyz stopped answering 200");
    assert!(
        log.contains("the Layer 2 election task ended on its own; this agent must restart"),
        "the log says why:\n{log}"
    );
}

/// The `Ready` condition of a Herald object, read leniently (the object may be one Herald cannot read).
async fn ready_condition<K>(c: &Cluster, name: &str) -> Option<Condition>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let api: Api<Lenient<K>> = Api::all(c.client.clone());
    let status = match api.get(name).await.ok()? {
        Lenient::Read(k) => serde_json::to_value(k).ok()?.get("status")?.clone(),
        Lenient::Unreadable(u) => u.status?,
    };
    let conds: Vec<Condition> = serde_json::from_value(status.get("conditions")?.clone()).ok()?;
    conds.into_iter().find(|c| c.type_ == "Ready")
}

/// Warning Events (events.k8s.io/v1) about object `name`, as `reason: note`.
async fn warnings_about(c: &Cluster, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(c.client.clone());
    let list = events
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_beside_unreadable_objects_is_ready_and_serves_everything_else() {
    let mut c = Cluster::start().await;
    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.8/29"]}))).await;
    // Stored as a server without the schema (or after a rollback) keeps them; Herald's types cannot read them.
    c.create_raw::<Eip>(eip(
        "vx",
        json!({"addresses": ["198.51.100.0/24"], "protocol": "vxlan"}),
    ))
    .await;
    c.create_raw::<BgpConf>(json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BgpConf",
        "metadata": {"name": "default"}, "spec": {"asn": "sixty-four thousand"}}))
        .await;
    c.create_raw::<BgpPeer>(json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BgpPeer",
        "metadata": {"name": "broken"}, "spec": {"address": "198.51.100.1", "asn": -1}}))
        .await;
    c.create_raw::<BgpPeer>(json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BgpPeer",
        "metadata": {"name": "as-zero"}, "spec": {"address": "198.51.100.2", "asn": 0}}))
        .await;
    c.create_raw::<BgpPeer>(json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BgpPeer",
        "metadata": {"name": "no-secret"}, "spec": {"address": "198.51.100.3", "asn": 64500,
        "passwordSecretRef": {"name": "bgp-auth"}}}))
        .await;
    // A Service that got its address from `vx` before.
    let held = c
        .create_service(lb_service(
            "default",
            "held",
            json!({"herald.dev/allocated-from": "vx"}),
        ))
        .await;
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7", "ipMode": "VIP"}]}}});
    c.services("default")
        .patch_status("held", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    drop(held);

    let addr = free_port();
    let agent = c.agent("n1", &["--metrics-addr", &addr.to_string()]);
    let ready = eventually(Duration::from_secs(30), || async {
        (http_status(addr, "/readyz") == Some(200)).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "ready despite the unreadable objects:\n{}",
        c.log(agent, "n1")
    );
    c.create_service(lb_service("default", "new", json!({}))).await;
    let new = eventually(Duration::from_secs(20), || async {
        let svc: Service = c.services("default").get("new").await.ok()?;
        Some(ingress_ips(&svc)).filter(|ips| !ips.is_empty())
    })
    .await;
    assert_eq!(
        new.as_deref(),
        Some(&["192.0.2.9".to_string()][..]),
        "new Services get IPs"
    );

    let vx = eventually(Duration::from_secs(20), || ready_condition::<Eip>(&c, "vx"))
        .await
        .unwrap();
    assert_eq!(vx.status, "False");
    assert!(
        vx.message
            .contains("cannot be read: spec.protocol: unknown variant `vxlan`"),
        "{}",
        vx.message
    );
    let svc = c.services("default").get("held").await.unwrap();
    assert_eq!(
        ingress_ips(&svc),
        ["198.51.100.7"],
        "the Service of the unreadable Eip keeps its IP"
    );

    for (peer, reason, text) in [
        ("broken", "Unreadable", "spec.asn"),
        ("as-zero", "InvalidSpec", "spec.asn 0 is reserved (RFC 7607)"),
        ("no-secret", "SecretNotFound", "Secret 'bgp-auth'"),
    ] {
        let cond = eventually(Duration::from_secs(20), || ready_condition::<BgpPeer>(&c, peer)).await;
        let cond = cond.unwrap_or_else(|| panic!("BgpPeer {peer} has a Ready condition:\n{}", c.log(agent, "n1")));
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", reason),
            "{peer}"
        );
        assert!(cond.message.contains(text), "{peer}: {}", cond.message);
        let events = eventually(Duration::from_secs(10), || async {
            Some(warnings_about(&c, peer).await).filter(|e| !e.is_empty())
        })
        .await
        .unwrap_or_default();
        assert!(
            events.iter().any(|e| e.starts_with(reason) && e.contains(text)),
            "{peer}: {events:?}"
        );
    }
    let conf = eventually(Duration::from_secs(20), || ready_condition::<BgpConf>(&c, "default"))
        .await
        .unwrap();
    assert_eq!((conf.status.as_str(), conf.reason.as_str()), ("False", "Unreadable"));

    let log = c.log(agent, "n1");
    for name in ["vx", "broken", "default"] {
        assert!(
            log.lines()
                .any(|l| l.contains("cannot read this object") && l.contains(name)),
            "the log names {name}:\n{log}"
        );
    }
    assert!(c.alive(agent));
}

/// Against the real kube-apiserver only (lab-apiserver authenticates nobody): an agent whose ServiceAccount token is
/// revoked (the Secret it is bound to deleted) says so once in its log, reports not ready on `/readyz`, keeps running
/// (no restart loop) and keeps its Service's IP; with a fresh token in its token file it is ready again without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_makes_the_agent_not_ready_without_a_restart_loop() {
    let mut c = Cluster::start().await;
    let Some(kube) = c.kube() else {
        eprintln!(
            "skipped: needs the real kube-apiserver (HERALD_TEST_APISERVER=kube); lab-apiserver has no authentication"
        );
        return;
    };
    let secret = "agent-token-binding";
    let kubeconfig = kube.bound_token_kubeconfig(secret).unwrap();
    let token_file = kube.dir().join(format!("token-{secret}"));
    c.kubeconfig = kubeconfig;
    c.create_eip(eip("lan", json!({"addresses": ["192.0.2.8/29"]}))).await;
    c.create_service(lb_service("default", "web", json!({}))).await;
    let addr = free_port();
    let agent = c.agent("n1", &["--metrics-addr", &addr.to_string()]);
    let ip = eventually(Duration::from_secs(30), || async {
        let svc = c.services("default").get("web").await.ok()?;
        ingress_ips(&svc).into_iter().next()
    })
    .await
    .unwrap_or_else(|| panic!("the Service got an IP:\n{}", c.log(agent, "n1")));
    let ready = eventually(Duration::from_secs(30), || async {
        (http_status(addr, "/readyz") == Some(200)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready with a valid token:\n{}", c.log(agent, "n1"));

    c.kube()
        .unwrap()
        .kubectl(&["delete", "secret", secret, "-n", "herald-system"], None)
        .unwrap();
    let not_ready = eventually(Duration::from_secs(30), || async {
        (http_status(addr, "/readyz") == Some(503)).then_some(())
    })
    .await;
    assert!(
        not_ready.is_some(),
        "not ready once the token is revoked:\n{}",
        c.log(agent, "n1")
    );
    // Long enough for many failed lease renewals (four a second) and a restart loop, were there one.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(c.alive(agent), "a revoked token never stops the agent");
    assert_eq!(
        http_status(addr, "/healthz"),
        Some(200),
        "alive: no liveness-probe restart either"
    );
    assert_eq!(http_status(addr, "/readyz"), Some(503));
    let log = c.log(agent, "n1");
    let said = log
        .lines()
        .filter(|l| l.contains("rejects this agent's credentials (401 Unauthorized)"))
        .count();
    assert_eq!(said, 1, "said once, clearly:\n{log}");
    let failures = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("lease operation failed"))
        .count();
    assert!(
        failures <= 4,
        "failed lease operations are summarised, not logged one by one ({failures} lines):\n{log}"
    );
    let svc = c.services("default").get("web").await.unwrap();
    assert_eq!(ingress_ips(&svc), [ip], "the Service keeps its IP");

    // A fresh token in the file (as the kubelet rotates a projected token): read anew within about a minute.
    c.kube().unwrap().write_bound_token(secret, &token_file).unwrap();
    let ready_again = eventually(Duration::from_secs(150), || async {
        (http_status(addr, "/readyz") == Some(200)).then_some(())
    })
    .await;
    assert!(
        ready_again.is_some(),
        "ready again with a fresh token, without a restart:\n{}",
        c.log(agent, "n1")
    );
    assert!(c.log(agent, "n1").contains("accepts this agent's credentials again"));
    assert!(c.alive(agent));
}
