//! The container image, run as the DaemonSet runs it: the OCI archive of `scripts/image.sh build` (path in
//! `HERALD_IMAGE`; `scripts/test.sh` builds it) is unpacked the way a runtime reads it, and every node's agent is its
//! entry point, started by `scripts/image.sh run` from the image's read-only root filesystem with uid 0, NET_RAW as
//! the only capability and no_new_privs (deploy/herald.yaml's securityContext). On the cluster fixture: the agents
//! elect, a Service gets an IP, its holder answers ARP and HTTP, `/healthz` and `/readyz` answer, a passive BgpPeer
//! (port 179, which needs NET_BIND_SERVICE) is reported as not listening with the capability named, and a kill -9 of
//! the holder fails over. Without `HERALD_IMAGE` the test says so and passes, unless `HERALD_REQUIRE_IMAGE=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald_netns_tests::cluster::kube::repo_file;
use herald_netns_tests::cluster::{Cluster, ClusterOptions, ServiceSpec, epoch_now, settle};
use herald_netns_tests::{require, wait_for};
use serde_json::Value;

/// The capability bit of CAP_NET_RAW.
const CAP_NET_RAW: u64 = 1 << 13;

fn image() -> Option<PathBuf> {
    match std::env::var_os("HERALD_IMAGE").filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var("HERALD_REQUIRE_IMAGE").as_deref() == Ok("1") => {
            panic!("HERALD_REQUIRE_IMAGE=1 but HERALD_IMAGE is not set: build it with scripts/image.sh build")
        }
        None => {
            eprintln!("skipped: HERALD_IMAGE is not set (scripts/image.sh build writes the archive)");
            None
        }
    }
}

fn unpack(archive: &Path, dir: &Path) -> Value {
    let out = Command::new(repo_file("scripts/image.sh"))
        .arg("unpack")
        .arg(archive)
        .arg(dir)
        .output()
        .expect("run scripts/image.sh unpack");
    assert!(
        out.status.success(),
        "unpack {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

/// `(CapEff, CapBnd, NoNewPrivs)` of a process, from /proc.
fn caps(pid: u32) -> (u64, u64, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    (hex("CapEff:"), hex("CapBnd:"), field("NoNewPrivs:"))
}

#[test]
fn image_runs_as_the_daemonset_runs_it_answers_arp_and_serves_health() {
    let Some(archive) = image() else {
        return;
    };
    if !require(&[
        "ip", "arping", "tcpdump", "kubectl", "python3", "nft", "unshare", "curl",
    ]) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("herald-image-{:06x}", rand::random::<u32>() >> 8));
    let config = unpack(&archive, &dir);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/herald"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["agent"]));
    let labels = &config["config"]["Labels"];
    for key in ["title", "version", "revision", "licenses", "created"] {
        assert!(
            labels[format!("org.opencontainers.image.{key}")].is_string(),
            "label org.opencontainers.image.{key}: {labels}"
        );
    }
    let rootfs = dir.join("rootfs");
    let entries: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !entries.iter().any(|e| e == "lib" || e == "lib64" || e == "bin"),
        "a static binary alone, no libraries or shell: {entries:?}"
    );

    let options = ClusterOptions {
        agent_program: vec![
            repo_file("scripts/image.sh").to_string_lossy().into_owned(),
            "run".into(),
            dir.to_string_lossy().into_owned(),
            "--".into(),
        ],
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start("image", &options).expect("a cluster of agents run from the image");

    // The security context: exactly NET_RAW, bounded, no_new_privs; the binary is the image's, in its own root.
    for i in 0..c.nodes.len() {
        let pid = c.lab.proc(c.nodes[i].agent.unwrap()).pid();
        let (eff, bnd, nnp) = caps(pid);
        assert_eq!(
            (eff, bnd, nnp.as_str()),
            (CAP_NET_RAW, CAP_NET_RAW, "1"),
            "node {i}: capabilities"
        );
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
        assert_eq!(
            root,
            rootfs.canonicalize().unwrap(),
            "node {i}: runs in the image's root"
        );
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root_mount = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .expect("a mount at /");
        assert!(
            root_mount
                .split_whitespace()
                .nth(5)
                .unwrap()
                .split(',')
                .any(|o| o == "ro"),
            "node {i}: read-only root: {root_mount}"
        );
    }

    c.create_services(&[ServiceSpec::v4("web")]).unwrap();
    let ip = c.wait_service_ips(&["web"], Duration::from_secs(30)).unwrap()["web"][0];
    let holder = c.wait_lease_holder(ip, Duration::from_secs(20), |_| true).unwrap();
    c.wait_announced("web", ip, &holder, Duration::from_secs(20)).unwrap();
    let h = c.node_index(&holder).unwrap();
    let probe = c.probe(ip, Duration::from_millis(20)).unwrap();
    let mac = probe
        .wait_answer(0.0, Duration::from_secs(5), |_| true)
        .expect("ARP answered");
    assert_eq!(mac, c.nodes[h].mac, "{ip} answered by its holder {holder}");
    assert_eq!(c.http_get(ip).unwrap(), holder);
    // The holder's metrics say it announces the IP; nobody else's do.
    for node in &c.nodes {
        let metrics = c
            .lab
            .sh(&c.api, &format!("curl -sf http://{}:7472/metrics", node.mgmt))
            .unwrap();
        let line = format!(
            "herald_announced_ip{{ip=\"{ip}\",node=\"{}\",mode=\"layer2\"}} 1",
            node.name
        );
        assert_eq!(
            metrics.lines().any(|l| l == line),
            node.name == holder,
            "{line} on {} (holder {holder})",
            node.name
        );
    }
    for node in &c.nodes {
        for path in ["/healthz", "/readyz"] {
            let url = format!("http://{}:7472{path}", node.mgmt);
            let out = c.lab.sh(&c.api, &format!("curl -sf {url}")).unwrap_or_default();
            assert_eq!(out.trim(), "ok", "{url}");
        }
    }

    // Passive BGP needs NET_BIND_SERVICE for port 179, which this security context lacks: the session still connects
    // out, and each node's session status says why the router cannot connect to it.
    c.apply(
        "apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {name: default}\nspec: {asn: 64512}\n---\n\
         apiVersion: herald.dev/v1alpha1\nkind: BgpPeer\nmetadata: {name: passive-router}\n\
         spec: {address: 198.51.100.254, asn: 64500, passive: true}\n---\n\
         apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata: {name: routed}\n\
         spec: {addresses: [\"203.0.113.0/28\"], protocol: bgp}\n",
    )
    .unwrap();
    let errors = || {
        c.kubectl(&[
            "get",
            "bgppeer",
            "passive-router",
            "-o",
            "jsonpath={range .status.sessions[*]}{.node}: {.lastError}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
    };
    let told = wait_for(Duration::from_secs(30), || {
        let text = errors();
        (text.matches("NET_BIND_SERVICE").count() == c.nodes.len()).then_some(text)
    });
    assert!(
        told.is_some(),
        "every node's session names the missing capability:\n{}",
        errors()
    );
    eprintln!("passive BGP without NET_BIND_SERVICE:\n{}", told.unwrap());

    // A crash of the holder: another image agent takes over.
    let killed = epoch_now();
    c.signal_agent(h, "KILL").unwrap();
    let old = c.nodes[h].mac.clone();
    let new = probe
        .wait_answer(killed, Duration::from_secs(15), |m| m != old)
        .expect("another node answers after kill -9");
    assert_ne!(new, old);
    settle(Duration::from_millis(500));
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
