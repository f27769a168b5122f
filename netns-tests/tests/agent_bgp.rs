//! BGP mode of `herald agent` end to end: an API server (lab-apiserver, or the real kube-apiserver with
//! `HERALD_TEST_APISERVER=kube`), two agents and GoBGP as the rack router in network namespaces. The router must learn
//! the Service IP from both nodes (ECMP candidates), lose a node's path when that agent stops, and lose the route when
//! the Service goes away.

use std::time::Duration;

use herald_netns_tests::cluster::apiserver::ApiServer;
use herald_netns_tests::{Lab, Netns, herald_bin, require, wait_for};

const WAIT: Duration = Duration::from_secs(45);

struct Cluster {
    /// Before `lab`: stops first.
    apiserver: ApiServer,
    lab: Lab,
    router: Netns,
    nodes: Vec<(Netns, usize)>,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> String {
        self.apiserver.kubectl(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn apply(&self, yaml: &str) {
        self.apiserver.apply(yaml).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Next hops the router holds for `prefix`.
    fn next_hops(&self, prefix: &str) -> Vec<String> {
        let out = self.lab.exec(&self.router, &["gobgp", "global", "rib"]).unwrap();
        let mut hops: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(prefix))
            .filter_map(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != prefix)
                    .nth(1)
                    .map(str::to_string)
            })
            .collect();
        hops.sort();
        hops
    }
}

fn start() -> Cluster {
    let mut lab = Lab::new("agent-bgp");
    let sw = lab.netns("sw");
    let api = lab.netns("api");
    let router = lab.netns("rt");
    lab.bridge(&sw, "mgmt").unwrap();
    lab.attach(&sw, "mgmt", "pa", &api, "eth0").unwrap();
    lab.attach(&sw, "mgmt", "pr", &router, "eth0").unwrap();
    lab.addr(&api, "eth0", "198.51.100.1/24").unwrap();
    lab.addr(&router, "eth0", "198.51.100.254/24").unwrap();
    let mut neighbors = String::new();
    let mut node_ns = Vec::new();
    for i in 1..=2 {
        let ns = lab.netns(&format!("n{i}"));
        lab.attach(&sw, "mgmt", &format!("p{i}"), &ns, "eth0").unwrap();
        lab.addr(&ns, "eth0", &format!("198.51.100.1{i}/24")).unwrap();
        neighbors.push_str(&format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"198.51.100.1{i}\"\n    peer-as = 64512\n"
        ));
        node_ns.push(ns);
    }
    let gobgp_conf = lab.dir().join("gobgpd.toml");
    std::fs::write(
        &gobgp_conf,
        format!("[global.config]\n  as = 64500\n  router-id = \"198.51.100.254\"\n{neighbors}"),
    )
    .unwrap();
    lab.spawn(&router, "gobgpd", &["gobgpd", "-f", gobgp_conf.to_str().unwrap()])
        .unwrap();
    let mut apiserver = ApiServer::start(&mut lab, &api, "198.51.100.1", 6443).expect("start the API server");
    // The CRDs and herald-system; against the real server all of deploy/herald.yaml and the agents' token.
    apiserver.install_herald().expect("install Herald");
    let mut cluster = Cluster {
        apiserver,
        lab,
        router,
        nodes: Vec::new(),
    };
    for i in 1..=2 {
        cluster.apply(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n{i}}}\n"));
        let status = format!(r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"198.51.100.1{i}"}}]}}}}"#);
        cluster.kubectl(&[
            "patch",
            "node",
            &format!("n{i}"),
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }
    cluster.apply(
        "apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {name: default}\nspec: {asn: 64512}\n---\n\
         apiVersion: herald.dev/v1alpha1\nkind: BgpPeer\nmetadata: {name: rack-router}\n\
         spec: {address: 198.51.100.254, asn: 64500, holdTime: 9}\n---\n\
         apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata: {name: routed}\n\
         spec: {addresses: [\"203.0.113.0/28\"], protocol: bgp}\n",
    );
    let herald = herald_bin();
    for (i, ns) in node_ns.into_iter().enumerate() {
        let node = format!("n{}", i + 1);
        let cmd = [
            herald.to_str().unwrap(),
            "agent",
            "--node-name",
            &node,
            "--metrics-addr",
            "127.0.0.1:7472",
        ];
        let kubeconfig = cluster.apiserver.agent_kubeconfig().to_str().unwrap().to_string();
        let env = [("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "info")];
        let idx = cluster
            .lab
            .spawn_env(&ns, &format!("agent-{node}"), &cmd, &env)
            .unwrap();
        cluster.nodes.push((ns, idx));
    }
    cluster
}

#[test]
fn agents_announce_bgp_service_ips_from_every_node_and_withdraw() {
    if !require(&["ip", "kubectl", "gobgpd", "gobgp"]) {
        return;
    }
    let mut c = start();
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    let both = ["198.51.100.11".to_string(), "198.51.100.12".to_string()];
    let hops = wait_for(WAIT, || Some(c.next_hops("203.0.113.1/32")).filter(|h| h == &both));
    assert!(
        hops.is_some(),
        "the router learns the Service IP from both nodes: {:?}",
        c.next_hops("203.0.113.1/32")
    );
    let established = || c.kubectl(&["get", "bgppeer", "rack-router", "-o", "jsonpath={.status.established}"]);
    assert!(
        wait_for(WAIT, || (established() == "2").then_some(())).is_some(),
        "BgpPeer status: {}",
        established()
    );
    // Each agent's metrics show its session and what it announces.
    let metrics = c.lab.sh(&c.nodes[1].0, "curl -s 127.0.0.1:7472/metrics").unwrap();
    for line in [
        r#"herald_bgp_session_up{peer="198.51.100.254"} 1"#,
        r#"herald_bgp_session_state{peer="198.51.100.254",state="Established"} 1"#,
        r#"herald_bgp_session_state{peer="198.51.100.254",state="Idle"} 0"#,
        r#"herald_bgp_announced_prefixes{peer="198.51.100.254"} 1"#,
        r#"herald_bgp_sessions_established_total{peer="198.51.100.254"} 1"#,
        // A counter of something that has not happened is there, at 0.
        r#"herald_bgp_notifications_received_total{peer="198.51.100.254"} 0"#,
        r#"herald_announced_ip{ip="203.0.113.1",node="n2",mode="bgp"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains("herald_build_info{version=\""), "{metrics}");
    // The allocator's leader (one of the two) counts the pool per family.
    let leader = (0..2)
        .map(|i| c.lab.sh(&c.nodes[i].0, "curl -s 127.0.0.1:7472/metrics").unwrap())
        .find(|m| m.lines().any(|l| l == "herald_allocator_leader 1"))
        .expect("one agent leads the allocator");
    for line in [
        r#"herald_allocator_eip_addresses{eip="routed",family="ipv4",state="total"} 14.0"#,
        r#"herald_allocator_eip_addresses{eip="routed",family="ipv4",state="used"} 1.0"#,
        r#"herald_allocator_eip_addresses{eip="routed",family="ipv4",state="free"} 13.0"#,
    ] {
        assert!(leader.lines().any(|l| l == line), "{line} in:\n{leader}");
    }
    assert!(leader.contains("process_resident_memory_bytes "), "{leader}");

    // A clean stop of one agent withdraws its path (no graceful restart configured).
    let idx = c.nodes[0].1;
    c.lab.proc(idx).signal("TERM").unwrap();
    assert!(
        c.lab.proc(idx).wait_exit(Duration::from_secs(15)).is_some(),
        "agent stops on SIGTERM"
    );
    let one = ["198.51.100.12".to_string()];
    let hops = wait_for(WAIT, || Some(c.next_hops("203.0.113.1/32")).filter(|h| h == &one));
    assert!(
        hops.is_some(),
        "only the remaining node's path: {:?}",
        c.next_hops("203.0.113.1/32")
    );
    let n1 = c.kubectl(&[
        "get",
        "bgppeer",
        "rack-router",
        "-o",
        "jsonpath={.status.sessions[?(@.node==\"n1\")].state}",
    ]);
    assert_eq!(n1, "Idle", "the stopped node says so");
    assert_eq!(
        c.kubectl(&["get", "bgppeer", "rack-router", "-o", "jsonpath={.status.established}"]),
        "1"
    );

    // The Service goes away: the route goes away.
    c.kubectl(&["delete", "service", "web"]);
    let gone = wait_for(WAIT, || c.next_hops("203.0.113.1/32").is_empty().then_some(()));
    assert!(gone.is_some(), "route withdrawn: {:?}", c.next_hops("203.0.113.1/32"));
}
