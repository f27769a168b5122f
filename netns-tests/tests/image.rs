//! The container image, run as the DaemonSet runs it: the OCI archive of `scripts/image.sh build` (path in
//! `HERALD_IMAGE`; `scripts/test.sh` builds it) is unpacked the way a runtime reads it, and every node's agent is its
//! entry point, started by `scripts/image.sh run` from the image's read-only root filesystem with uid 0,
//! no_new_privs and exactly the capabilities that the Helm chart's `helm template` renders (the rest of the rendered
//! securityContext is checked to be what `image.sh run` emulates). On the cluster fixture, chart defaults (NET_RAW
//! only): the agents elect, a Service gets an IP, its holder answers ARP and HTTP, `/healthz` and `/readyz` answer,
//! a kill -9 of the holder fails over. Then BGP with GoBGP as the router: active sessions under NET_RAW alone; a
//! passive BgpPeer on port 179 reported as not listening (condition `Listening` False, NET_BIND_SERVICE named); a
//! BgpConf `listenPort` of 1179 accepted under NET_RAW alone; the chart's `bgp.passive=true` (NET_BIND_SERVICE
//! added) listening on 179, the router's connections accepted. A second test runs the image under a real container
//! runtime (podman, runc, the default seccomp profile) instead of the emulation. Without `HERALD_IMAGE` the tests
//! say so and pass, unless `HERALD_REQUIRE_IMAGE=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald_netns_tests::cluster::kube::{self, ContainerSecurity, repo_file};
use herald_netns_tests::cluster::{Cluster, ClusterOptions, Prober, ServiceSpec, epoch_now, settle};
use herald_netns_tests::{require, wait_for};
use serde_json::Value;

/// The capability bit of CAP_NET_RAW.
const CAP_NET_RAW: u64 = 1 << 13;
/// The capability bit of CAP_NET_BIND_SERVICE.
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
/// The router's address on the management LAN.
const ROUTER: &str = "198.51.100.254";

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

/// The fields of a process's /proc status: `field("CapEff:")`.
fn proc_status(pid: &str) -> Option<impl Fn(&str) -> String + use<>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(move |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    })
}

/// `(CapEff, CapBnd, NoNewPrivs)` of a process, from /proc.
fn caps(pid: u32) -> (u64, u64, String) {
    let field = proc_status(&pid.to_string()).expect("the process runs");
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    (hex("CapEff:"), hex("CapBnd:"), field("NoNewPrivs:"))
}

#[test]
fn image_runs_as_the_daemonset_runs_it_answers_arp_and_serves_health() {
    let Some(archive) = image() else {
        return;
    };
    if !require(&[
        "ip", "arping", "tcpdump", "kubectl", "python3", "nft", "unshare", "curl", "ss", "gobgpd", "gobgp",
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
        agent_program: program_for_chart(&dir, &[]).0,
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

    let (ip, holder, h, probe) = web_answered_by_its_holder(&mut c);
    // The holder's metrics say it announces the IP; nobody else's do. Every node shows its LAN interface's ARP/NDP
    // counters, the nodes that hold nothing (so never attached the interface) at 0.
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
        let conflicts = r#"herald_l2_conflicts_total{interface="eth0"} 0"#;
        assert!(
            metrics.lines().any(|l| l == conflicts),
            "{conflicts} on {} (holder {holder})",
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

    // A crash of the holder: another image agent takes over.
    let killed = epoch_now();
    c.signal_agent(h, "KILL").unwrap();
    let old = c.nodes[h].mac.clone();
    let new = probe
        .wait_answer(killed, Duration::from_secs(15), |m| m != old)
        .expect("another node answers after kill -9");
    assert_ne!(new, old);
    c.start_agent(h).unwrap();
    c.wait_agent_ready(h, Duration::from_secs(30)).unwrap();

    bgp_under_the_charts_capabilities(&mut c, &dir);
    settle(Duration::from_millis(500));
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Everything a test's podman store holds (containers, their mounts, the store) goes when this does.
struct EngineStore(PathBuf);

impl Drop for EngineStore {
    fn drop(&mut self) {
        let _ = Command::new(repo_file("scripts/image.sh"))
            .arg("engine-clean")
            .arg(&self.0)
            .status();
    }
}

/// `(CapEff, NoNewPrivs, Seccomp)` of the `herald` process in network namespace `ns`, if one runs there.
fn herald_in(ns: &str) -> Option<(u64, String, String)> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "herald"))
        .and_then(|pid| {
            let field = proc_status(pid)?;
            Some((
                u64::from_str_radix(&field("CapEff:"), 16).ok()?,
                field("NoNewPrivs:"),
                field("Seccomp:"),
            ))
        })
}

/// The image under a real container runtime, which `image.sh run` only emulates: podman with runc, its default
/// seccomp profile (RuntimeDefault), the DaemonSet's hostNetwork, capabilities as the chart renders them, read-only
/// root, no-new-privileges. The agents elect, the holder answers ARP and HTTP, and SIGTERM (forwarded by the
/// runtime, as a kubelet's stop is) hands the IP over.
#[test]
fn image_runs_under_a_container_runtime_with_its_default_seccomp_profile() {
    let Some(archive) = image() else {
        return;
    };
    if !require(&[
        "ip", "arping", "tcpdump", "kubectl", "python3", "nft", "curl", "podman", "runc", "conmon", "nsenter",
    ]) {
        return;
    }
    let store = EngineStore(std::env::temp_dir().join(format!("herald-engine-{:06x}", rand::random::<u32>() >> 8)));
    let rendered = kube::helm_template(&[]).unwrap_or_else(|e| panic!("{e:#}"));
    let security = ContainerSecurity::of_daemonset(&rendered).unwrap();
    let mut program = vec![
        repo_file("scripts/image.sh").to_string_lossy().into_owned(),
        "engine-run".into(),
    ];
    for cap in &security.add {
        program.extend(["--cap-add".into(), cap.clone()]);
    }
    program.extend([
        store.0.to_string_lossy().into_owned(),
        archive.to_string_lossy().into_owned(),
        "--".into(),
    ]);
    let options = ClusterOptions {
        nodes: 2,
        agent_program: program,
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start("engine", &options).expect("a cluster of agents run by podman");
    for node in &c.nodes {
        let (eff, nnp, seccomp) = herald_in(node.ns.name()).expect("herald runs in the node's network namespace");
        assert_eq!(
            (eff, nnp.as_str(), seccomp.as_str()),
            (cap_bits(&security.add), "1", "2"),
            "{}: capabilities, no_new_privs, seccomp filter mode",
            node.name
        );
    }
    let (_, _, h, probe) = web_answered_by_its_holder(&mut c);
    let stopped = epoch_now();
    c.signal_agent(h, "TERM").unwrap();
    let old = c.nodes[h].mac.clone();
    let new = probe
        .wait_answer(stopped, Duration::from_secs(10), |m| m != old)
        .expect("the other node answers after SIGTERM through the runtime");
    assert_ne!(new, old);
    assert_eq!(
        c.wait_agent_exit(h, Duration::from_secs(10)),
        Some(0),
        "the agent stopped cleanly"
    );
    drop(c);
    drop(store);
}

/// A Service `web` gets an IP, its Lease holder answers ARP for it (watched by the returned prober) and serves HTTP:
/// `(ip, holder, holder's index, prober)`.
fn web_answered_by_its_holder(c: &mut Cluster) -> (std::net::IpAddr, String, usize, Prober) {
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
    (ip, holder, h, probe)
}

/// The capability bits of `names` (as the chart's `capabilities.add` writes them).
fn cap_bits(names: &[String]) -> u64 {
    names.iter().fold(0, |bits, name| {
        bits | match name.as_str() {
            "NET_RAW" => CAP_NET_RAW,
            "NET_BIND_SERVICE" => CAP_NET_BIND_SERVICE,
            other => panic!("the chart adds {other}, which this test does not know"),
        }
    })
}

/// `scripts/image.sh run` with the capabilities the chart renders with `sets`, after checking that the rest of the
/// rendered securityContext is what `image.sh run` emulates; and the capability bits the agent must end up with.
fn program_for_chart(dir: &Path, sets: &[&str]) -> (Vec<String>, u64) {
    let rendered = kube::helm_template(sets).unwrap_or_else(|e| panic!("{e:#}"));
    let security = ContainerSecurity::of_daemonset(&rendered).unwrap();
    let emulated = ContainerSecurity {
        run_as_user: Some(0),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        drop: vec!["ALL".into()],
        add: security.add.clone(),
    };
    assert_eq!(
        security, emulated,
        "the chart ({sets:?}) renders a securityContext that scripts/image.sh run does not emulate"
    );
    let mut program = vec![
        repo_file("scripts/image.sh").to_string_lossy().into_owned(),
        "run".into(),
    ];
    for cap in &security.add {
        program.extend(["--cap-add".into(), cap.clone()]);
    }
    program.extend([dir.to_string_lossy().into_owned(), "--".into()]);
    (program, cap_bits(&security.add))
}

/// A GoBGP router at `ROUTER` on the management LAN, peering with every node (connecting to `port`).
fn start_router(c: &mut Cluster, rt: &herald_netns_tests::Netns, port: u16) -> usize {
    let mut conf = "[global.config]\n  as = 64500\n  router-id = \"198.51.100.254\"\n".to_string();
    for node in &c.nodes {
        conf.push_str(&format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = 64512\n\
             [neighbors.transport.config]\n    remote-port = {port}\n\
             [neighbors.timers.config]\n    connect-retry = 1\n",
            node.mgmt
        ));
    }
    let file = c.lab.dir().join(format!("gobgpd-{port}.toml"));
    std::fs::write(&file, conf).unwrap();
    c.lab
        .spawn(rt, &format!("gobgpd-{port}"), &["gobgpd", "-f", file.to_str().unwrap()])
        .unwrap()
}

/// Nodes whose session the router holds Established.
fn established(c: &Cluster, rt: &herald_netns_tests::Netns) -> usize {
    let out = c.lab.sh(rt, "gobgp neighbor").unwrap_or_default();
    out.lines().filter(|l| l.contains("Establ")).count()
}

/// The local port of each node's established connection with the router (the listen port when the router connected
/// in).
fn session_ports(c: &Cluster) -> Vec<String> {
    c.nodes
        .iter()
        .map(|n| {
            let out = c
                .lab
                .sh(&n.ns, &format!("ss -Htn state established dst {ROUTER}"))
                .unwrap_or_default();
            out.split_whitespace()
                .nth(2)
                .and_then(|local| local.rsplit_once(':'))
                .map(|(_, port)| port.to_string())
                .unwrap_or_default()
        })
        .collect()
}

/// Waits until the router holds every node's session on connections it opened to `port` (the nodes' own are
/// dropped), and the BgpPeer says every node listens.
fn wait_router_connected_in(c: &Cluster, rt: &herald_netns_tests::Netns, port: &str, case: &str) {
    let nodes = c.nodes.len();
    let inbound = wait_for(Duration::from_secs(45), || {
        (established(c, rt) == nodes && session_ports(c).iter().all(|p| p == port) && listening(c).0 == "True")
            .then_some(())
    });
    assert!(
        inbound.is_some(),
        "{case}: the router connects in to every node; ports {:?}, condition {:?}\n{}",
        session_ports(c),
        listening(c),
        c.lab.sh(rt, "gobgp neighbor").unwrap_or_default()
    );
}

/// The BgpPeer's `Listening` condition: `(status, message)`.
fn listening(c: &Cluster) -> (String, String) {
    let peer = c.get_json(&["bgppeer", "passive-router"]).unwrap_or_default();
    let cond = peer["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Listening"))
        .cloned()
        .unwrap_or_default();
    (
        cond["status"].as_str().unwrap_or_default().to_string(),
        cond["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// BGP under exactly the capabilities the chart renders for it: active BGP needs nothing more than Layer 2's
/// NET_RAW; a passive peer on port 179 needs NET_BIND_SERVICE (the chart's `bgp.passive=true`), or a listen port of
/// 1024 or more on the BgpConf. Without it the BgpPeer says so (condition `Listening` False, the capability named)
/// while its sessions connect out; with it the router's own connections are accepted (the nodes' connections to the
/// router are dropped, so only an accepted connection can make a session).
fn bgp_under_the_charts_capabilities(c: &mut Cluster, dir: &Path) {
    let rt = c.lab.netns("rt");
    let switch = c.switch.clone();
    c.lab.attach(&switch, "mgmt", "m-rt", &rt, "eth0").unwrap();
    c.lab.addr(&rt, "eth0", &format!("{ROUTER}/24")).unwrap();
    let (default_program, default_caps) = program_for_chart(dir, &[]);
    assert_eq!(default_caps, CAP_NET_RAW, "the chart's default: NET_RAW only");
    assert_eq!(
        c.agent_program, default_program,
        "the agents run as the chart's defaults say"
    );
    let router = start_router(c, &rt, 179);
    c.apply(&format!(
        "apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {{name: default}}\nspec: {{asn: 64512}}\n---\n\
         apiVersion: herald.dev/v1alpha1\nkind: BgpPeer\nmetadata: {{name: passive-router}}\n\
         spec: {{address: {ROUTER}, asn: 64500, passive: true, holdTime: 9}}\n---\n\
         apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata: {{name: routed}}\n\
         spec: {{addresses: [\"203.0.113.0/28\"], protocol: bgp}}\n"
    ))
    .unwrap();
    let nodes = c.nodes.len();

    // 1. Chart defaults, port 179: active BGP works under NET_RAW alone; the passive side cannot listen, and the
    //    BgpPeer says so instead of looking healthy.
    let up = wait_for(Duration::from_secs(45), || (established(c, &rt) == nodes).then_some(()));
    assert!(
        up.is_some(),
        "sessions connect out under NET_RAW only:\n{}",
        c.lab.sh(&rt, "gobgp neighbor").unwrap_or_default()
    );
    let told = wait_for(Duration::from_secs(30), || {
        let (status, message) = listening(c);
        (status == "False" && message.starts_with(&format!("{nodes} of {nodes} nodes cannot accept")))
            .then_some(message)
    });
    let (_, message) = listening(c);
    let told = told.unwrap_or_else(|| panic!("Listening False on every node; got: {message}"));
    assert!(
        told.contains("NET_BIND_SERVICE") && told.contains("bgp.passive=true") && told.contains("spec.listenPort"),
        "the condition names the capability and both ways out: {told}"
    );
    let table = c.kubectl(&["get", "bgppeer", "passive-router"]).unwrap();
    assert!(
        table.lines().next().unwrap().contains("LISTENING") && table.lines().nth(1).unwrap().contains("False"),
        "kubectl get bgppeer shows it:\n{table}"
    );
    eprintln!("passive BGP on port 179 without NET_BIND_SERVICE: {told}");

    // From here on only the router's connections can make a session.
    for node in &c.nodes {
        c.lab
            .sh(
                &node.ns,
                &format!(
                    "nft add table inet herald_test; \
                     nft add chain inet herald_test out '{{ type filter hook output priority 0; }}'; \
                     nft add rule inet herald_test out ip daddr {ROUTER} tcp dport 179 drop"
                ),
            )
            .unwrap();
    }

    // 2. Chart defaults, BgpConf listenPort 1179: no capability needed; the router connects in.
    c.lab.proc(router).signal("TERM").unwrap();
    c.lab.proc(router).wait_exit(Duration::from_secs(10));
    let router = start_router(c, &rt, 1179);
    c.apply("apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {name: default}\nspec: {asn: 64512, listenPort: 1179}\n")
        .unwrap();
    wait_router_connected_in(c, &rt, "1179", "listen port 1179 under NET_RAW only");

    // 3. The chart with bgp.passive=true (NET_BIND_SERVICE added), port 179: the agents listen there.
    let (passive_program, passive_caps) = program_for_chart(dir, &["bgp.passive=true"]);
    assert_eq!(passive_caps, CAP_NET_RAW | CAP_NET_BIND_SERVICE);
    c.agent_program = passive_program;
    c.lab.proc(router).signal("TERM").unwrap();
    c.lab.proc(router).wait_exit(Duration::from_secs(10));
    c.apply("apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {name: default}\nspec: {asn: 64512}\n")
        .unwrap();
    for i in 0..nodes {
        c.start_agent(i).unwrap();
    }
    for i in 0..nodes {
        c.wait_agent_ready(i, Duration::from_secs(30)).unwrap();
        let pid = c.lab.proc(c.nodes[i].agent.unwrap()).pid();
        let (eff, bnd, _) = caps(pid);
        assert_eq!((eff, bnd), (passive_caps, passive_caps), "node {i}: capabilities");
    }
    start_router(c, &rt, 179);
    wait_router_connected_in(c, &rt, "179", "port 179 with NET_BIND_SERVICE");
    eprintln!("passive BGP with the chart's bgp.passive=true: {}", listening(c).1);
}
