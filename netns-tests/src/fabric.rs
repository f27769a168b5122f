//! BGP mode in the rack topology OpenELB's and MetalLB's documentation describe: a spine router with a client behind
//! it, two leaf routers under it, node1 and node2 in rack1 under leaf1, node3 in rack2 under leaf2. Each leaf is a
//! `BgpPeer` selecting the nodes of its rack by label, so each node peers with its own leaf; the leaves install the
//! Service IPs by ECMP over their nodes and pass them on to the spine, which spreads traffic over both leaves. Agents
//! run in the node namespaces against an API server on a management network (lab-apiserver, or the real
//! kube-apiserver with `HERALD_TEST_APISERVER=kube`).
//!
//! ```text
//!                         client 192.0.2.200/26
//!                            │
//!                  spine (FRR, AS 64600) 192.0.2.193
//!              192.0.2.129/30 │         │ 192.0.2.133/30
//!          leaf1 (FRR, AS 64601)      leaf2 (BIRD, AS 64602)
//!          rack1 192.0.2.1/26          rack2 192.0.2.65/26
//!            │            │                 │
//!   node1 192.0.2.11  node2 192.0.2.12   node3 192.0.2.73        (AS 64512; management network 198.51.100.0/24)
//! ```
//!
//! Every node treats the whole pool as local (`ip route add local 203.0.113.0/28 dev lo`, what kube-proxy's rules
//! amount to here) and serves its name on port 8080, so a client connection shows which node it reached.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bgp::{Router, RouterKind, kernel_next_hops, serve_name};
use crate::cluster::apiserver::ApiServer;
use crate::{Lab, Netns, herald_bin, wait_for};

/// The Service pool, every node's local range.
pub const POOL: &str = "203.0.113.0/28";
/// The node label the BgpPeers select racks by (as in `deploy/examples/bgp.yaml`).
pub const RACK_LABEL: &str = "topology.kubernetes.io/rack";
/// The nodes' AS.
pub const NODE_ASN: u32 = 64512;
/// The client behind the spine.
pub const CLIENT: &str = "192.0.2.200";
/// Hold time of the nodes' sessions with their leaves (seconds): how long a leaf keeps the routes of a node that
/// vanished without closing its sessions.
pub const HOLD_TIME: u16 = 9;

/// A rack: its leaf router and its nodes.
pub struct Rack {
    pub name: &'static str,
    pub leaf_asn: u32,
    /// The leaf's address on the rack network (the BgpPeer's address).
    pub leaf: &'static str,
    /// The spine's and the leaf's ends of their link.
    pub uplink: (&'static str, &'static str),
    pub prefix_len: u8,
    /// Nodes by name and rack address.
    pub nodes: &'static [(&'static str, &'static str)],
}

/// The two racks.
pub const RACKS: [Rack; 2] = [
    Rack {
        name: "rack1",
        leaf_asn: 64601,
        leaf: "192.0.2.1",
        uplink: ("192.0.2.129", "192.0.2.130"),
        prefix_len: 26,
        nodes: &[("node1", "192.0.2.11"), ("node2", "192.0.2.12")],
    },
    Rack {
        name: "rack2",
        leaf_asn: 64602,
        leaf: "192.0.2.65",
        uplink: ("192.0.2.133", "192.0.2.134"),
        prefix_len: 26,
        nodes: &[("node3", "192.0.2.73")],
    },
];

/// One node of the fabric.
pub struct FabricNode {
    pub name: String,
    pub rack: usize,
    /// Its rack address (the next hop it announces).
    pub address: String,
    pub ns: Netns,
    /// The agent's process index in the lab, while it runs.
    pub agent: Option<usize>,
}

/// The running fabric. Dropping it stops everything and removes every namespace.
pub struct Fabric {
    /// Before `lab`: stops first.
    pub apiserver: ApiServer,
    pub lab: Lab,
    pub spine: Router,
    pub spine_ns: Netns,
    pub leaves: Vec<(Router, Netns)>,
    pub client: Netns,
    pub nodes: Vec<FabricNode>,
}

impl Fabric {
    /// Tools the fabric needs.
    pub const TOOLS: &'static [&'static str] = &["ip", "kubectl", "bird", "birdc", "zebra", "bgpd", "vtysh", "python3"];

    /// Builds the topology, starts the routers, the API server with Herald's CRDs, the Node objects (labelled by
    /// rack), the BgpConf, one BgpPeer per leaf, a BGP Eip, and an agent on every node.
    pub fn start(test: &str) -> Result<Fabric> {
        let mut lab = Lab::new(test);
        let sw = lab.netns("sw");
        let api = lab.netns("api");
        let spine_ns = lab.netns("spine");
        let client = lab.netns("client");
        for bridge in ["mgmt", "rack1", "rack2"] {
            lab.bridge(&sw, bridge)?;
        }
        lab.attach(&sw, "mgmt", "m-api", &api, "eth0")?;
        lab.addr(&api, "eth0", "198.51.100.1/24")?;
        lab.veth(&spine_ns, "eth0", &client, "eth0")?;
        lab.addr(&spine_ns, "eth0", "192.0.2.193/26")?;
        lab.addr(&client, "eth0", &format!("{CLIENT}/26"))?;
        lab.ip(&client, &["route", "add", "default", "via", "192.0.2.193"])?;
        forwarding(&lab, &spine_ns, false)?;

        let mut leaves = Vec::new();
        let mut nodes = Vec::new();
        for (r, rack) in RACKS.iter().enumerate() {
            let leaf_ns = lab.netns(&format!("leaf{}", r + 1));
            let uplink = format!("eth{}", r + 1);
            lab.veth(&spine_ns, &uplink, &leaf_ns, "eth1")?;
            lab.addr(&spine_ns, &uplink, &format!("{}/30", rack.uplink.0))?;
            lab.addr(&leaf_ns, "eth1", &format!("{}/30", rack.uplink.1))?;
            lab.attach(&sw, rack.name, &format!("l-leaf{}", r + 1), &leaf_ns, "eth0")?;
            lab.addr(&leaf_ns, "eth0", &format!("{}/{}", rack.leaf, rack.prefix_len))?;
            lab.ip(&leaf_ns, &["route", "add", "default", "via", rack.uplink.0])?;
            forwarding(&lab, &leaf_ns, true)?;
            for (name, address) in rack.nodes {
                let i = nodes.len() + 1;
                let ns = lab.netns(name);
                lab.attach(&sw, rack.name, &format!("r-{name}"), &ns, "eth0")?;
                lab.addr(&ns, "eth0", &format!("{address}/{}", rack.prefix_len))?;
                lab.attach(&sw, "mgmt", &format!("m-{name}"), &ns, "eth1")?;
                lab.addr(&ns, "eth1", &format!("198.51.100.1{i}/24"))?;
                lab.ip(&ns, &["route", "add", "default", "via", rack.leaf])?;
                lab.ip(&ns, &["route", "add", "local", POOL, "dev", "lo"])?;
                serve_name(&mut lab, &ns, name, "0.0.0.0")?;
                nodes.push(FabricNode {
                    name: name.to_string(),
                    rack: r,
                    address: address.to_string(),
                    ns,
                    agent: None,
                });
            }
            leaves.push(leaf_ns);
        }

        let spine = Router::start_with_config(&mut lab, &spine_ns, RouterKind::Frr, "spine", SPINE_CONFIG)?;
        let leaf1 = Router::start_with_config(&mut lab, &leaves[0], RouterKind::Frr, "leaf1", LEAF1_CONFIG)?;
        let leaf2 = Router::start_with_config(&mut lab, &leaves[1], RouterKind::Bird, "leaf2", LEAF2_CONFIG)?;

        let mut apiserver = ApiServer::start(&mut lab, &api, "198.51.100.1", 6443).context("start the API server")?;
        apiserver.install_herald().context("install Herald")?;
        let mut fabric = Fabric {
            apiserver,
            lab,
            spine,
            spine_ns,
            leaves: vec![(leaf1, leaves[0].clone()), (leaf2, leaves[1].clone())],
            client,
            nodes,
        };
        fabric.configure()?;
        for i in 0..fabric.nodes.len() {
            fabric.start_agent(i)?;
        }
        Ok(fabric)
    }

    /// Node objects labelled by rack, the BgpConf, one BgpPeer per leaf selecting its rack, the BGP Eip.
    fn configure(&self) -> Result<()> {
        for (i, node) in self.nodes.iter().enumerate() {
            let rack = RACKS[node.rack].name;
            self.apiserver.apply(&format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {}, labels: {{{RACK_LABEL}: {rack}}}}}\n",
                node.name
            ))?;
            let status = format!(
                r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"198.51.100.1{}"}}]}}}}"#,
                i + 1
            );
            self.apiserver.kubectl(&[
                "patch",
                "node",
                &node.name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status,
            ])?;
        }
        let mut objects = format!(
            "apiVersion: herald.dev/v1alpha1\nkind: BgpConf\nmetadata: {{name: default}}\nspec: {{asn: {NODE_ASN}}}\n---\n\
             apiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata: {{name: routed}}\n\
             spec: {{addresses: [\"{POOL}\"], protocol: bgp}}\n"
        );
        for (r, rack) in RACKS.iter().enumerate() {
            objects.push_str(&format!(
                "---\napiVersion: herald.dev/v1alpha1\nkind: BgpPeer\nmetadata: {{name: leaf{}}}\n\
                 spec: {{address: {}, asn: {}, holdTime: {HOLD_TIME}, \
                 nodeSelector: {{matchLabels: {{{RACK_LABEL}: {}}}}}}}\n",
                r + 1,
                rack.leaf,
                rack.leaf_asn,
                rack.name
            ));
        }
        self.apiserver.apply(&objects)
    }

    /// Sets `spec.bfd` of both BgpPeers (a JSON object such as `{}` or `{"transmitInterval": 100}`; `null` turns
    /// BFD off). The routers always run BFD towards the nodes (`scripts/lab/bgp/`); their sessions come up when this
    /// turns it on.
    pub fn set_bfd(&self, bfd: &str) -> Result<()> {
        for r in 1..=RACKS.len() {
            self.apiserver.kubectl(&[
                "patch",
                "bgppeer",
                &format!("leaf{r}"),
                "--type=merge",
                "-p",
                &format!(r#"{{"spec":{{"bfd":{bfd}}}}}"#),
            ])?;
        }
        Ok(())
    }

    /// Leaf `r`'s view of its session with the node at `address`: FRR's neighbor JSON, or BIRD's `show protocols
    /// all` of the node's protocol (named after the node).
    fn leaf_view(&self, r: usize, address: &str) -> (RouterKind, &str, String) {
        let (router, _) = &self.leaves[r];
        let name = self.node_name(address);
        let command = match router.spec.kind {
            RouterKind::Frr => format!("show bgp neighbor {address} json"),
            _ => format!("show protocols all {name}"),
        };
        (router.spec.kind, name, router.cli(&command).unwrap_or_default())
    }

    /// Times leaf `r`'s BGP session with the node at `address` was established (FRR's count; BIRD's time of the
    /// last change of its protocol, which changes with every new session): equal before and after means no reset.
    pub fn leaf_session_mark(&self, r: usize, address: &str) -> String {
        match self.leaf_view(r, address) {
            (RouterKind::Frr, _, out) => json_scalar(&out, "connectionsEstablished").unwrap_or_default(),
            // `node3      BGP        ---        up     07:01:02.345  Established`
            (_, name, out) => out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .map(|l| l.split_whitespace().skip(4).take(2).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }

    /// Why leaf `r` last closed its session with the node at `address`: FRR's `"lastResetDueTo":"BGP Notification
    /// send"` and, for a NOTIFICATION, which one (`"lastNotificationReason":"Cease/BFD Down"`); BIRD's last error.
    pub fn leaf_last_reset(&self, r: usize, address: &str) -> String {
        match self.leaf_view(r, address) {
            (RouterKind::Frr, _, out) => ["lastResetDueTo", "lastNotificationReason"]
                .iter()
                .filter_map(|key| json_scalar(&out, key))
                .collect::<Vec<_>>()
                .join("; "),
            (_, _, out) => out
                .lines()
                .find_map(|l| l.trim().strip_prefix("Last error:"))
                .map(|e| e.trim().to_string())
                .unwrap_or_default(),
        }
    }

    /// The name of the node at rack address `address` (BIRD's protocol names are the nodes' names).
    fn node_name(&self, address: &str) -> &str {
        let node = self.nodes.iter().find(|n| n.address == address);
        node.map(|n| n.name.as_str()).unwrap_or_default()
    }

    /// Starts node `i`'s agent.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let herald = herald_bin();
        let node = &self.nodes[i];
        let cmd = [
            herald.to_str().unwrap_or_default(),
            "agent",
            "--node-name",
            &node.name,
            "--metrics-addr",
            "127.0.0.1:7472",
        ];
        let kubeconfig = self.apiserver.agent_kubeconfig().display().to_string();
        let env = [("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "info")];
        let label = format!("agent-{}", node.name);
        let ns = node.ns.clone();
        let idx = self.lab.spawn_env(&ns, &label, &cmd, &env)?;
        self.nodes[i].agent = Some(idx);
        Ok(())
    }

    /// Creates the LoadBalancer Service `name` (port 8080) in `default` and returns its IP once it has one.
    pub fn create_service(&self, name: &str, timeout: Duration) -> Result<String> {
        self.apiserver.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{type: LoadBalancer, ports: [{{port: 8080}}]}}\n"
        ))?;
        crate::wait_for_every(timeout, Duration::from_millis(5), || {
            self.apiserver
                .kubectl(&[
                    "get",
                    "service",
                    name,
                    "-o",
                    "jsonpath={.status.loadBalancer.ingress[0].ip}",
                ])
                .ok()
                .filter(|ip| !ip.is_empty())
        })
        .with_context(|| format!("Service {name} got no IP"))
    }

    /// kill -9 of node `i`'s agent: its process is gone, its TCP sessions are closed by its kernel.
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        let idx = self.nodes[i].agent.take().context("the agent is not running")?;
        self.lab.proc(idx).signal("KILL")?;
        if self.lab.proc(idx).wait_exit(Duration::from_secs(10)).is_none() {
            bail!("{}'s agent did not die", self.nodes[i].name);
        }
        Ok(())
    }

    /// SIGTERM to node `i`'s agent (a clean stop, as in a rolling update), and its exit.
    pub fn stop_agent(&mut self, i: usize) -> Result<()> {
        let idx = self.nodes[i].agent.take().context("the agent is not running")?;
        self.lab.proc(idx).signal("TERM")?;
        if self.lab.proc(idx).wait_exit(Duration::from_secs(15)).is_none() {
            bail!("{}'s agent did not stop on SIGTERM", self.nodes[i].name);
        }
        Ok(())
    }

    /// Node `i`'s rack link down (its agent keeps running but can reach nothing on the rack: no FIN, no RST).
    pub fn rack_link_down(&self, i: usize) -> Result<()> {
        self.lab
            .ip(&self.nodes[i].ns, &["link", "set", "eth0", "down"])
            .map(|_| ())
    }

    /// Node `i`'s rack link up again, with its default route (the kernel dropped it with the link; a node's network
    /// manager would put it back).
    pub fn rack_link_up(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        self.lab.ip(&node.ns, &["link", "set", "eth0", "up"])?;
        self.lab
            .ip(&node.ns, &["route", "replace", "default", "via", RACKS[node.rack].leaf])
            .map(|_| ())
    }

    /// Next hops of `prefix` in the kernel table of the spine.
    pub fn spine_hops(&self, prefix: &str) -> Vec<String> {
        kernel_next_hops(&self.lab, &self.spine_ns, prefix).unwrap_or_default()
    }

    /// Waits until the spine's kernel holds `prefix` over exactly the leaves at `uplinks` (their addresses towards
    /// the spine; none: no route).
    pub fn wait_spine(&self, prefix: &str, uplinks: &[&str], timeout: Duration) -> Result<()> {
        let mut want: Vec<String> = uplinks.iter().map(|u| u.to_string()).collect();
        want.sort();
        crate::wait_for_every(timeout, Duration::from_millis(5), || {
            (self.spine_hops(prefix) == want).then_some(())
        })
        .with_context(|| {
            format!(
                "the spine holds {prefix} via {:?}, not {want:?}",
                self.spine_hops(prefix)
            )
        })
    }

    /// Next hops of `prefix` in the kernel table of leaf `r` (0-based).
    pub fn leaf_hops(&self, r: usize, prefix: &str) -> Vec<String> {
        kernel_next_hops(&self.lab, &self.leaves[r].1, prefix).unwrap_or_default()
    }

    /// `connections` TCP connections from the client to `ip:8080`, each from its own source port: how many each node
    /// answered, and how many failed.
    pub fn client_spread(
        &self,
        ip: &str,
        connections: usize,
    ) -> Result<(std::collections::BTreeMap<String, usize>, usize)> {
        let script = format!(
            "import socket, collections\n\
             seen = collections.Counter()\n\
             failed = 0\n\
             for i in range({connections}):\n\
             \x20   try:\n\
             \x20       s = socket.create_connection(('{ip}', 8080), timeout=1)\n\
             \x20       seen[s.recv(64).decode().strip()] += 1\n\
             \x20       s.close()\n\
             \x20   except OSError:\n\
             \x20       failed += 1\n\
             print(failed, ' '.join(f'{{k}}={{v}}' for k, v in sorted(seen.items())))\n"
        );
        let out = self.lab.exec(&self.client, &["python3", "-c", &script])?;
        if !out.status.success() {
            bail!("client: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut words = text.split_whitespace();
        let failed = words.next().and_then(|w| w.parse().ok()).context("client output")?;
        let seen = words
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        Ok((seen, failed))
    }

    /// Starts the client's continuous probe of `ip:8080`: a new connection every 20 ms, and one line a second on its
    /// stdout saying which nodes answered and how many attempts were lost in that second (the live view of the
    /// client, read with [`Fabric::probe`]). Returns the process index.
    pub fn start_probe(&mut self, ip: &str) -> Result<usize> {
        let client = self.client.clone();
        self.lab.spawn(&client, "probe", &["python3", "-u", "-c", PROBE, ip])
    }

    /// What probe `idx` saw so far: its lines, the connections each node answered, and the attempts lost.
    pub fn probe(&mut self, idx: usize) -> ProbeReport {
        let lines: Vec<String> = self.lab.proc(idx).stdout().lines().map(String::from).collect();
        let mut report = ProbeReport {
            lines,
            ..ProbeReport::default()
        };
        for line in &report.lines {
            for (key, value) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
                let Ok(n) = value.parse::<usize>() else { continue };
                match key {
                    "lost" => report.lost += n,
                    "t" => {}
                    node => *report.answered.entry(node.to_string()).or_default() += n,
                }
            }
        }
        report
    }

    /// Waits until `check` holds, with a description of what was last seen on failure.
    pub fn wait(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Fabric) -> Option<()>,
        seen: impl Fn(&Fabric) -> String,
    ) -> Result<()> {
        wait_for(timeout, || check(self)).with_context(|| format!("{what}; last seen: {}", seen(self)))
    }
}

/// The first value of `"key":` in a router's JSON output, a number or a string (without its quotes): FRR's
/// neighbor JSON nests deeply and only these scalars are wanted.
fn json_scalar(text: &str, key: &str) -> Option<String> {
    let marker = format!("\"{key}\":");
    let rest = &text[text.find(&marker)? + marker.len()..];
    Some(match rest.strip_prefix('"') {
        Some(string) => string.chars().take_while(|c| *c != '"').collect(),
        None => rest.chars().take_while(char::is_ascii_digit).collect(),
    })
}

/// What a client probe saw ([`Fabric::probe`]).
#[derive(Debug, Default)]
pub struct ProbeReport {
    /// One line a second: `t=12 node1=24 node3=25 lost=0`.
    pub lines: Vec<String>,
    /// Connections each node answered.
    pub answered: std::collections::BTreeMap<String, usize>,
    /// Attempts that failed (refused, reset, or no answer within a second).
    pub lost: usize,
}

/// The client's probe (`python3 -c PROBE IP`), shared with `scripts/lab.sh up --mode bgp`.
const PROBE: &str = include_str!("../../scripts/lab/probe.py");

impl Drop for Fabric {
    fn drop(&mut self) {
        // FRR's run directory (sockets, pid files) lives outside the lab directory.
        for role in ["spine", "leaf1"] {
            let _ = fs::remove_dir_all(PathBuf::from("/var/run/frr").join(format!("hrdt{}{role}", self.lab.id())));
        }
    }
}

/// Forwarding on, and ECMP hashing on ports too, so that the connections of one client spread over the next hops.
/// A leaf (`leaf`) hashes other fields than the spine (source address and port only, not the whole 5-tuple): with one
/// hash everywhere, a leaf would send every flow the spine gave it to the same node, since the spine chose it by the
/// same hash (polarization; real fabrics seed each switch differently, which a network namespace cannot: the seed
/// is the same in every namespace).
fn forwarding(lab: &Lab, ns: &Netns, leaf: bool) -> Result<()> {
    let hash = if leaf {
        "net.ipv4.fib_multipath_hash_policy=3 net.ipv4.fib_multipath_hash_fields=0x11"
    } else {
        "net.ipv4.fib_multipath_hash_policy=1"
    };
    lab.sh(
        ns,
        &format!("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 {hash}"),
    )
    .map(|_| ())
}

/// The routers' configurations, shared with `scripts/lab.sh up --mode bgp` (the same topology and addresses).
const SPINE_CONFIG: &str = include_str!("../../scripts/lab/bgp/spine.frr.conf");
const LEAF1_CONFIG: &str = include_str!("../../scripts/lab/bgp/leaf1.frr.conf");
const LEAF2_CONFIG: &str = include_str!("../../scripts/lab/bgp/leaf2.bird.conf");

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared router configurations name the addresses and ASes the fixture builds.
    #[test]
    fn router_configs_match_the_topology() {
        for rack in &RACKS {
            assert!(SPINE_CONFIG.contains(&format!("neighbor {} remote-as {}", rack.uplink.1, rack.leaf_asn)));
        }
        for (config, rack) in [(LEAF1_CONFIG, &RACKS[0]), (LEAF2_CONFIG, &RACKS[1])] {
            assert!(config.contains(rack.uplink.0), "{}: the spine", rack.name);
            for (_, address) in rack.nodes {
                assert!(config.contains(&format!("{address} ")), "{}: {address}", rack.name);
            }
            assert!(config.contains(&format!("{HOLD_TIME}")), "{}: hold time", rack.name);
        }
    }
}
