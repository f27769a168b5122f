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

    /// Each node's session as the router sees it: when it came up (and how often it went down), per neighbor. The
    /// same value later means the session was never reset in between.
    fn session_starts(&self) -> Vec<(String, String)> {
        let out = self.lab.exec(&self.router, &["gobgp", "neighbor", "-j"]).unwrap();
        let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut starts: Vec<(String, String)> = peers
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let address = p["state"]["neighbor_address"]
                    .as_str()
                    .or(p["conf"]["neighbor_address"].as_str())
                    .unwrap_or_default()
                    .to_string();
                let established = p["state"]["session_state"] == 6 || p["state"]["session_state"] == "ESTABLISHED";
                let start = format!(
                    "established={established} up={} flops={}",
                    p["timers"]["state"]["uptime"], p["state"]["flops"]
                );
                (address, start)
            })
            .collect();
        starts.sort();
        starts
    }

    /// The IPv4 address the Service was given.
    fn service_ip(&self, name: &str) -> String {
        self.kubectl(&[
            "get",
            "service",
            name,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ])
    }

    /// One EndpointSlice for `service` with a ready endpoint on each of `nodes` (`n1` at 198.51.100.11, ...).
    fn endpoints(&self, service: &str, nodes: &[usize]) {
        let endpoints: Vec<String> = nodes
            .iter()
            .map(|i| {
                format!(r#"{{"addresses": ["198.51.100.1{i}"], "nodeName": "n{i}", "conditions": {{"ready": true}}}}"#)
            })
            .collect();
        self.apply(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: default, \
             labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{port: 80, protocol: TCP}}]\n\
             endpoints: [{}]\n",
            endpoints.join(", ")
        ));
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

/// `externalTrafficPolicy: Local` in BGP mode: only nodes with a ready local endpoint announce the IP, and the
/// announcements follow the endpoints. None of the changes on the way (endpoints moving, another Service and an Eip
/// created and deleted, a pool's communities and LOCAL_PREF changed, a BgpPeer for another router added) resets a
/// session: the router sees each node's session up since the same moment, never dropped.
#[test]
fn local_policy_follows_the_endpoints_and_no_change_resets_a_session() {
    if !require(&["ip", "kubectl", "gobgpd", "gobgp"]) {
        return;
    }
    let c = start();
    let (n1, n2) = ("198.51.100.11".to_string(), "198.51.100.12".to_string());
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: local, namespace: default}\n\
         spec: {type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80}]}\n",
    );
    c.endpoints("local", &[2]);
    let ip = wait_for(WAIT, || Some(c.service_ip("local")).filter(|ip| !ip.is_empty())).expect("an IP");
    let prefix = format!("{ip}/32");
    let hops_become = |want: &[&String], what: &str| {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let got = wait_for(WAIT, || Some(c.next_hops(&prefix)).filter(|h| *h == want));
        assert!(
            got.is_some(),
            "{what}: want {want:?}, router has {:?}",
            c.next_hops(&prefix)
        );
    };
    hops_become(&[&n2], "only the node with the endpoint");
    let established = wait_for(WAIT, || {
        let s = c.session_starts();
        (s.len() == 2 && s.iter().all(|(_, v)| v.starts_with("established=true"))).then_some(s)
    });
    let before = established.unwrap_or_else(|| panic!("both sessions up: {:?}", c.session_starts()));
    println!("sessions at the router: {before:?}");
    assert!(
        before.iter().all(|(_, v)| !v.contains("up=null")),
        "the router tells when each session came up: {before:?}"
    );

    c.endpoints("local", &[1]);
    hops_become(&[&n1], "the endpoint moved to n1: so did the route");
    c.endpoints("local", &[1, 2]);
    hops_become(&[&n1, &n2], "endpoints on both nodes");
    c.endpoints("local", &[]);
    hops_become(&[], "no ready endpoint: nobody announces");
    c.endpoints("local", &[2]);
    hops_become(&[&n2], "back on n2");

    // Changes that concern no session's OPEN: routes come and go by UPDATE only.
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: default}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    let other = wait_for(WAIT, || Some(c.service_ip("other")).filter(|ip| !ip.is_empty())).expect("an IP");
    let other_prefix = format!("{other}/32");
    let both = vec![n1.clone(), n2.clone()];
    assert!(
        wait_for(WAIT, || Some(c.next_hops(&other_prefix)).filter(|h| *h == both)).is_some(),
        "a Cluster-policy Service from both nodes: {:?}",
        c.next_hops(&other_prefix)
    );
    c.apply(
        "apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata: {name: spare}\n\
         spec: {addresses: [\"192.0.2.64/28\"], protocol: bgp}\n",
    );
    c.apply(
        "apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata: {name: routed}\n\
         spec: {addresses: [\"203.0.113.0/28\"], protocol: bgp, bgp: {communities: [\"64512:300\"], localPref: 200}}\n",
    );
    let tagged = wait_for(WAIT, || {
        let out = c
            .lab
            .exec(&c.router, &["gobgp", "global", "rib", "-a", "ipv4", &other_prefix])
            .unwrap();
        let rib = String::from_utf8_lossy(&out.stdout).to_string();
        rib.contains("64512:300").then_some(rib)
    });
    assert!(tagged.is_some(), "the pool's community reaches the router by UPDATE");
    c.apply(
        "apiVersion: herald.dev/v1alpha1\nkind: BgpPeer\nmetadata: {name: other-router}\n\
         spec: {address: 198.51.100.253, asn: 64501}\n",
    );
    c.kubectl(&["delete", "eip", "spare"]);
    c.kubectl(&["delete", "service", "other"]);
    assert!(
        wait_for(WAIT, || c.next_hops(&other_prefix).is_empty().then_some(())).is_some(),
        "the deleted Service's route is withdrawn"
    );
    hops_become(&[&n2], "the Local Service still from n2 alone");
    // Give a reset a chance to show: a restarted session would be re-established within a few seconds.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(c.session_starts(), before, "no session was reset");
    for (ns, _) in &c.nodes {
        let metrics = c.lab.sh(ns, "curl -s 127.0.0.1:7472/metrics").unwrap();
        let line = r#"herald_bgp_sessions_established_total{peer="198.51.100.254"} 1"#;
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}
