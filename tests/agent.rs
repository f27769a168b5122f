//! The agent's health endpoints against lab-apiserver: `/readyz` stays 503 until the announcer has listed every
//! resource it reads, and the agent says which watch it is waiting for.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{Cluster, eventually};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

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
