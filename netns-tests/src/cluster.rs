//! A Herald cluster in network namespaces: an API server, one `herald agent` per node, and a client on one LAN,
//! for the Layer 2 failover and scale tests and the `failover-bench` binary.
//!
//! The API server is lab-apiserver, or the real kube-apiserver with `HERALD_TEST_APISERVER=kube` ([`apiserver`],
//! [`kube`]): then Herald is installed from `deploy/` with kubectl and the agents run as the `herald-system/herald`
//! ServiceAccount, under the real RBAC authorizer.
//!
//! ```text
//!            switch namespace: bridge `mgmt` (198.51.100.0/24)        bridge `lan` (192.0.2.0/24, 2001:db8:1::/64)
//!              |           |        |        |                          |          |          |          |
//!   api 198.51.100.1   node1 .11  node2 .12  node3 .13 (eth1)    node1 .11  node2 .12  node3 .13 (eth0)   client .100
//! ```
//!
//! Each node namespace stands in for kube-proxy in iptables/nftables mode: an nftables rule redirects TCP port 80 of
//! every address of the Eip to the node itself, where a tiny HTTP server answers with the node's name. The Service
//! IPs are on no interface, so the kernel never answers ARP or NDP for them (only Herald does). The client can
//! therefore see which node answered ARP/NDP ([`Prober`]) and which node took its traffic ([`Cluster::http_get`]).
//! ([`Cluster::expose_on_lo`] puts IPs on `lo` instead, as kube-proxy's IPVS mode does with strict ARP.)
//!
//! Node `i` (1-based) is `node<i>`, LAN MAC `02:00:00:00:00:1<i>`, LAN addresses `192.0.2.1<i>` and
//! `2001:db8:1::1<i>`, management address `198.51.100.1<i>` (metrics on port 7472). Everything lives in a [`Lab`],
//! so dropping the cluster kills every process and removes every namespace.

pub mod apiserver;
pub mod kube;
pub mod peers;
pub mod scale;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use self::apiserver::ApiServer;
use self::kube::{ApiServerKind, run_kubectl};
use crate::{Lab, Netns, ProcUsage, herald_bin, wait_for};

/// The API server's address (inside the `api` namespace, on the `mgmt` bridge).
pub const API_ADDR: &str = "198.51.100.1:6443";
const API_IP: &str = "198.51.100.1";
const API_PORT: u16 = 6443;
/// Namespace of Herald's Leases.
pub const HERALD_NAMESPACE: &str = "herald-system";
/// Name of the Eip [`Cluster::start`] creates.
pub const EIP_NAME: &str = "lab";
/// Its addresses, IPv4 then IPv6: 127 IPv4 addresses (enough for the 100-IP test) and 12,288 IPv6 addresses (the
/// 10,000-IP bench). nftables writes ranges the same way, so the kube-proxy stand-in uses these strings as they are.
pub const EIP_ADDRESSES: [&str; 2] = ["192.0.2.128-192.0.2.254", "2001:db8:1::1000-2001:db8:1::3fff"];
/// The allocator's Lease in [`HERALD_NAMESPACE`] (`herald_api::names::ALLOCATOR_LEASE`; this crate does not depend
/// on the API crate).
pub const ALLOCATOR_LEASE: &str = "herald-allocator";

/// Sets `eth0`'s MAC with the link down, so its IPv6 link-local address is made from that MAC when the link comes up,
/// as a NIC's is. Set on a link that is up, the link-local address made from the veth's random MAC would stay until
/// the first link flap and then change under a speaker that bound it (MetalLB's NDP responder kept sending from
/// the old one: `sendmsg: invalid argument`).
fn set_mac(lab: &Lab, ns: &Netns, mac: &str) -> Result<()> {
    lab.ip(ns, &["link", "set", "eth0", "down"])?;
    lab.ip(ns, &["link", "set", "eth0", "address", mac])?;
    lab.ip(ns, &["link", "set", "eth0", "up"])?;
    Ok(())
}

/// The kube-proxy stand-in of every node: TCP port 80 of the Eip's addresses goes to the node's web server.
fn kube_proxy_nft() -> String {
    format!(
        "table inet kube-proxy-lab {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat;\n    \
         ip daddr {} tcp dport 80 redirect\n    ip6 daddr {} tcp dport 80 redirect\n  }}\n}}\n",
        EIP_ADDRESSES[0], EIP_ADDRESSES[1]
    )
}
/// Herald's tuned Layer 2 timings (docs/l2.md; `herald agent` refuses unsafe ones): renew 300 ms, takeover after
/// 1 s, deadline 600 ms.
pub const TUNED_AGENT_ARGS: [&str; 6] = [
    "--node-renew-period",
    "300ms",
    "--takeover-after",
    "1s",
    "--renew-deadline",
    "600ms",
];
/// MAC of the client's LAN interface.
pub const CLIENT_MAC: &str = "02:00:00:00:00:64";

/// What a test asks of [`Cluster::start`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes (1..=9).
    pub nodes: usize,
    /// Extra `herald agent` flags for every node (timings, `--api-outage`, ...).
    pub agent_args: Vec<String>,
    /// `RUST_LOG` of the agents (`info`, or `HERALD_TEST_AGENT_LOG` when set, to debug a failing test).
    pub rust_log: String,
    /// The API server; `None`: the one `HERALD_TEST_APISERVER` chooses (a benchmark runs both side by side).
    pub apiserver: Option<ApiServerKind>,
    /// What runs the agent, before its `agent` argument: `HERALD_BIN` when empty; e.g.
    /// `scripts/image.sh run DIR --` to run the container image's entry point under the DaemonSet's security context.
    pub agent_program: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            agent_args: Vec::new(),
            rust_log: std::env::var("HERALD_TEST_AGENT_LOG").unwrap_or_else(|_| "info".into()),
            apiserver: None,
            agent_program: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// The defaults with these agent flags.
    pub fn with_args(args: &[&str]) -> Self {
        ClusterOptions {
            agent_args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// One node namespace.
pub struct Node {
    /// Kubernetes node name (`node1`).
    pub name: String,
    /// Its namespace.
    pub ns: Netns,
    /// MAC of its LAN interface `eth0`.
    pub mac: String,
    /// Management address (metrics: `<mgmt>:7472`).
    pub mgmt: String,
    /// The running agent (index into the lab's processes), if any.
    pub agent: Option<usize>,
}

/// The Service a test creates with [`Cluster::create_services`].
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    /// `SingleStack` (IPv4), `RequireDualStack`, or `IPv6` (single-stack IPv6).
    pub families: Families,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Requested IPs (`herald.dev/ips`, comma-separated), if any.
    pub ips: Option<String>,
    /// `allocateLoadBalancerNodePorts` (Herald needs none; the real server has only 2,768 node ports).
    pub node_ports: bool,
    /// `spec.loadBalancerClass`, if any.
    pub class: Option<String>,
    /// Its one TCP port (`http`): 80 unless a test shares an IP between Services.
    pub port: u16,
    /// Its Eip (`herald.dev/eip`), [`EIP_NAME`] unless a test made another.
    pub eip: String,
    /// More annotations (another load balancer's requested IPs, ...).
    pub annotations: Vec<(String, String)>,
}

/// Address families of a [`ServiceSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    V4,
    V6,
    Dual,
}

impl ServiceSpec {
    /// An IPv4 Service `name` in `default`, policy Cluster.
    pub fn v4(name: &str) -> Self {
        ServiceSpec {
            name: name.into(),
            namespace: "default".into(),
            families: Families::V4,
            local: false,
            ips: None,
            node_ports: true,
            class: None,
            port: 80,
            eip: EIP_NAME.into(),
            annotations: Vec::new(),
        }
    }

    /// An IPv6 Service.
    pub fn v6(name: &str) -> Self {
        ServiceSpec {
            families: Families::V6,
            ..Self::v4(name)
        }
    }

    /// A dual-stack Service.
    pub fn dual(name: &str) -> Self {
        ServiceSpec {
            families: Families::Dual,
            ..Self::v4(name)
        }
    }

    /// With `externalTrafficPolicy: Local`.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// Asking for these IPs (`herald.dev/ips`, comma-separated).
    pub fn with_ips(mut self, ips: &str) -> Self {
        self.ips = Some(ips.into());
        self
    }

    /// With `allocateLoadBalancerNodePorts: false`, as thousands of Services must be (the node port range has 2,768).
    pub fn without_node_ports(mut self) -> Self {
        self.node_ports = false;
        self
    }

    /// With `spec.loadBalancerClass: class`.
    pub fn with_class(mut self, class: &str) -> Self {
        self.class = Some(class.into());
        self
    }

    /// With TCP port `port` instead of 80.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// With the annotation `key: value`.
    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }

    /// The manifest `kubectl apply` gets.
    pub fn yaml(&self) -> String {
        let (policy, families) = match self.families {
            Families::V4 => ("SingleStack", "[IPv4]"),
            Families::V6 => ("SingleStack", "[IPv6]"),
            Families::Dual => ("RequireDualStack", "[IPv4, IPv6]"),
        };
        let etp = if self.local { "Local" } else { "Cluster" };
        let mut ips = self
            .ips
            .as_ref()
            .map(|ips| format!("    herald.dev/ips: \"{ips}\"\n"))
            .unwrap_or_default();
        for (k, v) in &self.annotations {
            let _ = writeln!(ips, "    {k}: \"{v}\"");
        }
        let mut node_ports = if self.node_ports {
            String::new()
        } else {
            "  allocateLoadBalancerNodePorts: false\n".to_string()
        };
        if let Some(class) = &self.class {
            let _ = writeln!(node_ports, "  loadBalancerClass: {class}");
        }
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    app: {}\n  annotations:\n    herald.dev/eip: {}\n{ips}\
             spec:\n  type: LoadBalancer\n  ipFamilyPolicy: {policy}\n  ipFamilies: {families}\n  externalTrafficPolicy: {etp}\n\
             {node_ports}\x20 selector:\n    app: {}\n  ports:\n  - name: http\n    port: {}\n    protocol: TCP\n",
            self.name, self.namespace, self.name, self.eip, self.name, self.port
        )
    }
}

/// `kubectl create` calls [`Cluster::create_many_services`] runs at a time.
const CREATORS: usize = 4;

/// A Service as [`Cluster::services`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceState {
    /// `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<IpAddr>,
    /// `herald.dev/announced-by` (`IP=node,...`).
    pub announced_by: Option<String>,
    /// Changes with every write of the Service.
    pub resource_version: String,
}

/// An IP lease as [`Cluster::ip_lease_states`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpLease {
    /// The holder's node (`None`: released).
    pub holder: Option<String>,
    /// Changes with every write of the lease.
    pub resource_version: String,
}

/// The API server, the agents, the client: see the module docs.
pub struct Cluster {
    /// Before `lab`: dropped first, so the real server's `down` finds what `up` left.
    pub apiserver: ApiServer,
    pub lab: Lab,
    pub switch: Netns,
    pub api: Netns,
    pub client: Netns,
    pub nodes: Vec<Node>,
    /// Agent flags every node gets (from [`ClusterOptions::agent_args`]).
    pub agent_args: Vec<String>,
    /// [`ClusterOptions::agent_program`].
    pub agent_program: Vec<String>,
    rust_log: String,
    /// IPs put on every node's `lo` so far.
    exposed: Vec<IpAddr>,
}

impl Cluster {
    /// Builds the namespaces, starts the API server, installs Herald (CRDs, `herald-system`; with the real server all
    /// of `deploy/herald.yaml`), creates the Nodes and the Eip [`EIP_NAME`], then starts one agent per node and waits
    /// until every announcer runs.
    pub fn start(test: &str, options: &ClusterOptions) -> Result<Cluster> {
        assert!((1..=9).contains(&options.nodes), "1 to 9 nodes");
        let mut lab = Lab::new(test);
        let switch = lab.netns("sw");
        let api = lab.netns("api");
        let client = lab.netns("client");
        lab.bridge(&switch, "mgmt")?;
        lab.bridge(&switch, "lan")?;
        lab.attach(&switch, "mgmt", "m-api", &api, "eth0")?;
        lab.addr(&api, "eth0", "198.51.100.1/24")?;
        lab.attach(&switch, "lan", "l-client", &client, "eth0")?;
        set_mac(&lab, &client, CLIENT_MAC)?;
        lab.addr(&client, "eth0", "192.0.2.100/24")?;
        lab.addr(&client, "eth0", "2001:db8:1::100/64")?;

        let mut nodes = Vec::new();
        for i in 1..=options.nodes {
            let name = format!("node{i}");
            let ns = lab.netns(&name);
            lab.attach(&switch, "lan", &format!("l-{name}"), &ns, "eth0")?;
            lab.attach(&switch, "mgmt", &format!("m-{name}"), &ns, "eth1")?;
            let mac = format!("02:00:00:00:00:1{i}");
            set_mac(&lab, &ns, &mac)?;
            lab.addr(&ns, "eth0", &format!("192.0.2.1{i}/24"))?;
            // Keep the IPv6 address when the link goes down (the kernel drops it by default; a node's network
            // configuration would put it back): a node whose link came back must still serve the IPv6 pool.
            lab.sh(&ns, "sysctl -qw net.ipv6.conf.eth0.keep_addr_on_down=1")?;
            lab.addr(&ns, "eth0", &format!("2001:db8:1::1{i}/64"))?;
            let mgmt = format!("198.51.100.1{i}");
            lab.addr(&ns, "eth1", &format!("{mgmt}/24"))?;
            // kube-proxy stand-in: traffic to the Eip's addresses is redirected to this node's web server.
            let nft = lab.dir().join(format!("kube-proxy-{name}.nft"));
            std::fs::write(&nft, kube_proxy_nft())?;
            lab.sh(&ns, &format!("nft -f {}", nft.display()))?;
            let www = lab.dir().join(format!("www-{name}"));
            std::fs::create_dir_all(&www)?;
            std::fs::write(www.join("index.html"), format!("{name}\n"))?;
            let www = www.to_string_lossy().into_owned();
            lab.spawn(
                &ns,
                &format!("http-{name}"),
                &[
                    "python3",
                    "-m",
                    "http.server",
                    "80",
                    "--bind",
                    "::",
                    "--directory",
                    &www,
                ],
            )?;
            nodes.push(Node {
                name,
                ns,
                mac,
                mgmt,
                agent: None,
            });
        }

        let kind = options.apiserver.unwrap_or_else(ApiServerKind::from_env);
        let apiserver = match ApiServer::start_kind(kind, &mut lab, &api, API_IP, API_PORT) {
            Ok(apiserver) => apiserver,
            Err(e) => {
                lab.mark_failed();
                return Err(e);
            }
        };
        let mut cluster = Cluster {
            apiserver,
            lab,
            switch,
            api,
            client,
            nodes,
            agent_args: options.agent_args.clone(),
            agent_program: options.agent_program.clone(),
            rust_log: options.rust_log.clone(),
            exposed: Vec::new(),
        };
        let started = (|| {
            cluster.bootstrap()?;
            for i in 0..cluster.nodes.len() {
                cluster.start_agent(i)?;
            }
            for i in 0..cluster.nodes.len() {
                cluster.wait_agent_ready(i, Duration::from_secs(60))?;
            }
            anyhow::Ok(())
        })();
        match started {
            Ok(()) => Ok(cluster),
            Err(e) => {
                // Every process's log, not only the agent the error names.
                cluster.lab.mark_failed();
                cluster.apiserver.print_failure_report();
                Err(e)
            }
        }
    }

    /// Which API server the cluster runs against.
    pub fn apiserver_kind(&self) -> ApiServerKind {
        self.apiserver.kind()
    }

    /// Starts the API server again after [`Cluster::stop_apiserver`], with all its objects, and waits until it
    /// answers.
    pub fn start_apiserver(&mut self) -> Result<()> {
        self.apiserver.restart(&mut self.lab)
    }

    /// Stops the API server, as an API outage (lab-apiserver saves its state file on SIGTERM; the real one's etcd
    /// keeps running).
    pub fn stop_apiserver(&mut self) -> Result<()> {
        self.apiserver.stop(&mut self.lab)
    }

    fn bootstrap(&mut self) -> Result<()> {
        self.apiserver.install_herald()?;
        // What a kubelet would register. The real server keeps the status a Node is created with (only a kubelet or
        // the node lifecycle controller would change it) and adds the `node.kubernetes.io/not-ready` taint.
        let mut yaml = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = write!(
                yaml,
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {0}\n  labels:\n    kubernetes.io/hostname: {0}\n\
                 status:\n  addresses:\n  - type: InternalIP\n    address: 192.0.2.1{1}\n  - type: Hostname\n    address: {0}\n  \
                 conditions:\n  - type: Ready\n    status: \"True\"\n",
                node.name,
                i + 1
            );
        }
        let _ = write!(
            yaml,
            "---\napiVersion: herald.dev/v1alpha1\nkind: Eip\nmetadata:\n  name: {EIP_NAME}\nspec:\n  protocol: layer2\n  \
             addresses:\n  - {}\n  - {}\n",
            EIP_ADDRESSES[0], EIP_ADDRESSES[1]
        );
        self.apply(&yaml)
    }

    /// Starts node `i`'s agent (0-based) with the cluster's flags plus `extra`, killing a running one first.
    pub fn start_agent_with(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        if let Some(old) = self.nodes[i].agent.take() {
            self.lab.proc(old).kill_and_wait();
        }
        let node = &self.nodes[i];
        let mut cmd: Vec<OsString> = if self.agent_program.is_empty() {
            vec![herald_bin().into()]
        } else {
            self.agent_program.iter().map(OsString::from).collect()
        };
        cmd.push("agent".into());
        for a in [
            "--node-name",
            &node.name,
            "--namespace",
            HERALD_NAMESPACE,
            "--metrics-addr",
            &format!("{}:7472", node.mgmt),
        ] {
            cmd.push(a.into());
        }
        cmd.extend(self.agent_args.iter().map(OsString::from));
        cmd.extend(extra.iter().map(OsString::from));
        let (ns, label) = (node.ns.clone(), format!("agent-{}", node.name));
        let kubeconfig = self.apiserver.agent_kubeconfig().to_string_lossy().into_owned();
        let env = [
            ("KUBECONFIG", kubeconfig.as_str()),
            ("RUST_LOG", self.rust_log.as_str()),
            ("NO_COLOR", "1"),
        ];
        let idx = self.lab.spawn_env(&ns, &label, &cmd, &env)?;
        self.nodes[i].agent = Some(idx);
        Ok(())
    }

    /// Starts node `i`'s agent with the cluster's flags.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        self.start_agent_with(i, &[])
    }

    /// Waits until node `i`'s agent logged that its announcer runs.
    pub fn wait_agent_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let name = self.nodes[i].name.clone();
        let idx = self.nodes[i].agent.context("agent not started")?;
        let p = self.lab.proc(idx);
        let ok = wait_for(timeout, || {
            if p.exited().is_some() {
                return Some(false);
            }
            p.stderr().contains("announcer started").then_some(true)
        });
        match ok {
            Some(true) => Ok(()),
            Some(false) => bail!("agent on {name} exited: {}", tail(&p.stderr(), 20)),
            None => bail!("agent on {name} not ready after {timeout:?}: {}", tail(&p.stderr(), 20)),
        }
    }

    /// Sends `sig` (`KILL`, `TERM`, `STOP`, `CONT`) to node `i`'s agent.
    pub fn signal_agent(&mut self, i: usize, sig: &str) -> Result<()> {
        let idx = self.nodes[i].agent.context("agent not started")?;
        self.lab.proc(idx).signal(sig)
    }

    /// Waits for node `i`'s agent to exit; returns its exit code (-1 when killed by a signal).
    pub fn wait_agent_exit(&mut self, i: usize, timeout: Duration) -> Option<i32> {
        let idx = self.nodes[i].agent?;
        self.lab.proc(idx).wait_exit(timeout)
    }

    /// Everything node `i`'s current agent logged.
    pub fn agent_log(&mut self, i: usize) -> String {
        match self.nodes[i].agent {
            Some(idx) => self.lab.proc(idx).stderr(),
            None => String::new(),
        }
    }

    /// Runs `kubectl` in the `api` namespace (cluster-admin); returns stdout, or fails with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.apiserver.kubectl(args)
    }

    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        self.apiserver.apply(yaml)
    }

    /// The lowest IPv4 and IPv6 address the checks of Eip [`EIP_NAME`] proved free that no Service holds: what the
    /// allocator hands out next. Waits until there are both (the prober checks the next ones after each allocation,
    /// about 4 s).
    pub fn next_proven(&self, timeout: Duration) -> Result<[IpAddr; 2]> {
        wait_for(timeout, || {
            let status = self.get_json(&["eip", EIP_NAME]).ok()?["status"].clone();
            let held: Vec<IpAddr> = self.services().ok()?.values().flat_map(|s| s.ips.clone()).collect();
            let free: Vec<IpAddr> = status["probes"]["free"]
                .as_array()?
                .iter()
                .filter_map(|f| f["ip"].as_str()?.parse().ok())
                .filter(|ip| !held.contains(ip))
                .collect();
            let v4 = free.iter().filter(|ip| ip.is_ipv4()).min()?;
            let v6 = free.iter().filter(|ip| ip.is_ipv6()).min()?;
            Some([*v4, *v6])
        })
        .context("the Eip never showed a proven-free IPv4 and IPv6 address")
    }

    /// `kubectl get <what> -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let text = self.kubectl(&all)?;
        serde_json::from_str(&text).context("kubectl printed invalid JSON")
    }

    /// Creates the Services (one `kubectl apply`).
    pub fn create_services(&self, specs: &[ServiceSpec]) -> Result<()> {
        let yaml: Vec<String> = specs.iter().map(ServiceSpec::yaml).collect();
        self.apply(&yaml.join("---\n"))
    }

    /// Creates many new Services fast: `kubectl create` (one POST each; `apply` first GETs every object), 500 per
    /// call, [`CREATORS`] calls at a time. Fails if one exists already. Without kubectl's own validation, which costs
    /// it 40 ms of CPU per object against the real server (its OpenAPI schema); the server still validates.
    pub fn create_many_services(&self, specs: &[ServiceSpec]) -> Result<()> {
        let docs: Vec<String> = specs.iter().map(ServiceSpec::yaml).collect();
        self.create_many(&docs)
    }

    /// Creates the objects of `docs` (one YAML document each) as [`Cluster::create_many_services`] does.
    pub fn create_many(&self, docs: &[String]) -> Result<()> {
        let args = ["create", "--validate=false", "-o", "name", "-f", "-"];
        let chunks: Vec<String> = docs.chunks(500).map(|chunk| chunk.join("---\n")).collect();
        for wave in chunks.chunks(CREATORS) {
            std::thread::scope(|scope| {
                let calls: Vec<_> = wave
                    .iter()
                    .map(|yaml| {
                        let cmd = self.apiserver.kubectl_cmd(&args);
                        scope.spawn(move || run_kubectl(cmd, &args, Some(yaml)))
                    })
                    .collect();
                calls.into_iter().try_for_each(|call| {
                    call.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a kubectl create thread panicked")))
                        .map(drop)
                })
            })?;
        }
        Ok(())
    }

    /// `kubectl get --raw PATH`, parsed: a list straight from the server (kubectl's own decoding and printing of
    /// thousands of objects costs more than the server's answer).
    fn get_raw(&self, path: &str) -> Result<Value> {
        let text = self.kubectl(&["get", "--raw", path])?;
        serde_json::from_str(&text).with_context(|| format!("GET {path}: invalid JSON"))
    }

    /// Deletes every Service and EndpointSlice in `default` labelled `key=value`, one request each
    /// (deletecollection), without waiting for them to be gone.
    pub fn delete_labelled(&self, key: &str, value: &str) -> Result<()> {
        for path in [
            "/api/v1/namespaces/default/services",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        ] {
            self.kubectl(&["delete", "--raw", &format!("{path}?labelSelector={key}%3D{value}")])?;
        }
        Ok(())
    }

    /// Every Service in `default` by name: its ingress IPs and its `herald.dev/announced-by` annotation.
    pub fn services(&self) -> Result<BTreeMap<String, ServiceState>> {
        let list = self.get_raw("/api/v1/namespaces/default/services")?;
        let mut out = BTreeMap::new();
        for svc in list["items"].as_array().into_iter().flatten() {
            let Some(name) = svc["metadata"]["name"].as_str() else {
                continue;
            };
            let ips = svc["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str()?.parse().ok())
                .collect();
            let announced_by = svc["metadata"]["annotations"]["herald.dev/announced-by"]
                .as_str()
                .map(str::to_string);
            let resource_version = svc["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.insert(
                name.to_string(),
                ServiceState {
                    ips,
                    announced_by,
                    resource_version,
                },
            );
        }
        Ok(out)
    }

    /// Waits until every Service in `names` (namespace `default`) has its ingress IPs; returns them by Service.
    pub fn wait_service_ips(&mut self, names: &[&str], timeout: Duration) -> Result<BTreeMap<String, Vec<IpAddr>>> {
        let found = wait_for(timeout, || {
            let services = self.services().ok()?;
            names
                .iter()
                .map(|name| {
                    let ips = &services.get(*name)?.ips;
                    (!ips.is_empty()).then(|| (name.to_string(), ips.clone()))
                })
                .collect()
        })
        .with_context(|| format!("Services {names:?} got no IP within {timeout:?}"))?;
        Ok(found)
    }

    /// Puts `ips` on every node's `lo` with `arp_ignore=1`/`arp_announce=2` on its LAN interface (what kube-proxy's
    /// IPVS mode does for LoadBalancer IPs with strict ARP: the kernel accepts the traffic but never answers ARP
    /// for them).
    pub fn expose_on_lo(&mut self, ips: &[IpAddr]) -> Result<()> {
        let new: Vec<IpAddr> = ips.iter().filter(|ip| !self.exposed.contains(ip)).copied().collect();
        if new.is_empty() {
            return Ok(());
        }
        for node in &self.nodes {
            self.lab.sh(
                &node.ns,
                "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
                 net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2",
            )?;
        }
        let mut batch = String::new();
        for ip in &new {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(batch, "addr add {ip}/{len} dev lo");
        }
        let path = self.lab.dir().join("expose.batch");
        std::fs::write(&path, batch)?;
        let path = path.to_string_lossy().into_owned();
        for node in &self.nodes {
            self.lab.ip(&node.ns, &["-batch", &path])?;
        }
        self.exposed.extend(new);
        Ok(())
    }

    /// Creates or replaces the EndpointSlice of Service `svc` (namespace `default`) with one ready endpoint on
    /// each node in `nodes` (none: an empty slice).
    pub fn set_endpoints(&self, svc: &str, nodes: &[&str]) -> Result<()> {
        self.apply(&self.endpoints_yaml(svc, nodes)?)
    }

    /// The EndpointSlice [`Cluster::set_endpoints`] writes.
    pub fn endpoints_yaml(&self, svc: &str, nodes: &[&str]) -> Result<String> {
        let mut yaml = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {svc}-lab\n  namespace: default\n  \
             labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- name: http\n  port: 80\n  \
             protocol: TCP\nendpoints:\n"
        );
        if nodes.is_empty() {
            yaml.push_str("[]\n");
        }
        for node in nodes {
            let i = self.node_index(node).with_context(|| format!("no node {node}"))?;
            let _ = write!(
                yaml,
                "- addresses: [\"203.0.113.{}\"]\n  nodeName: {node}\n  conditions:\n    ready: true\n    serving: true\n",
                i + 1
            );
        }
        // `endpoints:` followed by `[]` on its own line is not valid YAML; write the empty list inline.
        Ok(yaml.replace("endpoints:\n[]\n", "endpoints: []\n"))
    }

    /// Index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The node whose LAN MAC is `mac`.
    pub fn node_of_mac(&self, mac: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.mac.eq_ignore_ascii_case(mac))
            .map(|n| n.name.as_str())
    }

    /// Holder node of every IP lease (`None`: released), keyed by the lease's `herald.dev/ip` label.
    pub fn ip_leases(&self) -> Result<BTreeMap<String, Option<String>>> {
        Ok(self
            .ip_lease_states()?
            .into_iter()
            .map(|(slug, lease)| (slug, lease.holder))
            .collect())
    }

    /// Every IP lease, keyed by its `herald.dev/ip` label.
    pub fn ip_lease_states(&self) -> Result<BTreeMap<String, IpLease>> {
        let list = self.get_raw(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/{HERALD_NAMESPACE}/leases?labelSelector=herald.dev%2Flease%3Dip"
        ))?;
        let mut out = BTreeMap::new();
        for lease in list["items"].as_array().into_iter().flatten() {
            let Some(slug) = lease["metadata"]["labels"]["herald.dev/ip"].as_str() else {
                continue;
            };
            let holder = lease["spec"]["holderIdentity"]
                .as_str()
                .filter(|h| !h.is_empty())
                .map(|h| h.split('/').next().unwrap_or(h).to_string());
            let resource_version = lease["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.insert(
                slug.to_string(),
                IpLease {
                    holder,
                    resource_version,
                },
            );
        }
        Ok(out)
    }

    /// The node holding the allocator's Lease ([`ALLOCATOR_LEASE`]), if any.
    pub fn allocator_leader(&self) -> Result<Option<String>> {
        let holder = self.kubectl(&[
            "get",
            "lease",
            ALLOCATOR_LEASE,
            "-n",
            HERALD_NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        Ok(holder.split('/').next().filter(|n| !n.is_empty()).map(str::to_string))
    }

    /// Memory and CPU time of node `i`'s agent (the process the lab started: the agent itself unless
    /// [`ClusterOptions::agent_program`] wraps it).
    pub fn agent_usage(&self, i: usize) -> Result<ProcUsage> {
        let idx = self.nodes[i].agent.context("agent not started")?;
        ProcUsage::read(self.lab.pid(idx)).with_context(|| format!("the agent on {}", self.nodes[i].name))
    }

    /// The node holding `ip`'s lease.
    pub fn lease_holder(&self, ip: IpAddr) -> Result<Option<String>> {
        Ok(self.ip_leases()?.remove(&ip_slug(ip)).flatten())
    }

    /// Waits until `ip`'s lease names a holder satisfying `pred`; returns it.
    pub fn wait_lease_holder(
        &self,
        ip: IpAddr,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        wait_for(timeout, || self.lease_holder(ip).ok().flatten().filter(|h| pred(h))).with_context(|| {
            format!(
                "no acceptable holder for {ip} within {timeout:?} (now {:?})",
                self.lease_holder(ip)
            )
        })
    }

    /// The `herald.dev/announced-by` annotation of Service `svc` in `default`.
    pub fn announced_by(&self, svc: &str) -> Result<Option<String>> {
        let v = self.get_json(&["svc", "-n", "default", svc])?;
        Ok(v["metadata"]["annotations"]["herald.dev/announced-by"]
            .as_str()
            .map(str::to_string))
    }

    /// Waits until Service `svc`'s `herald.dev/announced-by` says `node` announces `ip` (the holder answers and has
    /// recorded it).
    pub fn wait_announced(&self, svc: &str, ip: IpAddr, node: &str, timeout: Duration) -> Result<()> {
        let want = format!("{ip}={node}");
        wait_for(timeout, || {
            let by = self.announced_by(svc).ok()??;
            by.split(',').any(|entry| entry.trim() == want).then_some(())
        })
        .with_context(|| {
            format!(
                "{svc}: announced-by never named {want} (now {:?})",
                self.announced_by(svc)
            )
        })
    }

    /// Drops all traffic between node `i` and the API server (both directions), as a partial partition.
    pub fn cut_api(&self, i: usize) -> Result<()> {
        let script = "table inet herald-cut {\n  chain out { type filter hook output priority 0; ip daddr 198.51.100.1 drop; }\n  \
                      chain in { type filter hook input priority 0; ip saddr 198.51.100.1 drop; }\n}\n";
        let path = self.lab.dir().join("cut.nft");
        std::fs::write(&path, script)?;
        self.lab.sh(&self.nodes[i].ns, &format!("nft -f {}", path.display()))?;
        Ok(())
    }

    /// Undoes [`Cluster::cut_api`].
    pub fn restore_api(&self, i: usize) -> Result<()> {
        self.lab.sh(&self.nodes[i].ns, "nft delete table inet herald-cut")?;
        Ok(())
    }

    /// Sets node `i`'s LAN interface down or up.
    pub fn set_lan(&self, i: usize, up: bool) -> Result<()> {
        self.lab.ip(
            &self.nodes[i].ns,
            &["link", "set", "eth0", if up { "up" } else { "down" }],
        )?;
        Ok(())
    }

    /// `GET http://<ip>/` from the client (with python3, which the nodes' web servers need anyway): the name of the
    /// node that served it.
    pub fn http_get(&self, ip: IpAddr) -> Result<String> {
        let url = match ip {
            IpAddr::V4(v4) => format!("http://{v4}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]/"),
        };
        let get = "import sys, urllib.request\n\
                   print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())";
        let out = self.lab.exec(&self.client, &["python3", "-c", get, &url])?;
        if !out.status.success() {
            bail!("GET {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Requests the API server served so far: `(audit verb, resource[/subresource]) -> count`, from
    /// lab-apiserver's `/metrics` or the real server's audit log.
    pub fn api_requests(&self) -> Result<BTreeMap<(String, String), u64>> {
        self.apiserver.request_counts()
    }

    /// Every MAC that answers ARP (IPv4) or NDP (IPv6) for each of `ips`, asked twice each from the client, 25
    /// addresses at a time in parallel.
    pub fn answering_macs(&self, ips: &[IpAddr]) -> Result<BTreeMap<IpAddr, Vec<String>>> {
        let mut result: BTreeMap<IpAddr, Vec<String>> = ips.iter().map(|ip| (*ip, Vec::new())).collect();
        let mut add = |ip: IpAddr, mac: &str| {
            let macs = result.entry(ip).or_default();
            let mac = mac.to_lowercase();
            if !macs.contains(&mac) {
                macs.push(mac);
            }
        };
        let v4: Vec<IpAddr> = ips.iter().filter(|ip| ip.is_ipv4()).copied().collect();
        for chunk in v4.chunks(25) {
            let mut script = String::new();
            for ip in chunk {
                let _ = writeln!(script, "arping -i eth0 -c 2 -W 0.2 {ip} 2>&1 &");
            }
            script.push_str("wait\n");
            let out = self.lab.exec(&self.client, &["sh", "-c", &script])?;
            // "60 bytes from 02:00:00:00:00:12 (192.0.2.200): index=0 time=..."
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(rest) = line.split(" bytes from ").nth(1) else {
                    continue;
                };
                let mut words = rest.split_whitespace();
                let (Some(mac), Some(ip)) = (words.next(), words.next()) else {
                    continue;
                };
                if let Ok(ip) = ip.trim_matches(|c| c == '(' || c == ')' || c == ':').parse() {
                    add(ip, mac);
                }
            }
        }
        let v6: Vec<IpAddr> = ips.iter().filter(|ip| ip.is_ipv6()).copied().collect();
        for chunk in v6.chunks(25) {
            // ndisc6 only sends the solicitations: the answers are read from a capture, as the client's kernel sees
            // them. ndisc6 itself ignores some Neighbor Advertisements the kernel accepts (MetalLB's, sent from a
            // link-local address with only the Solicited flag), and stops at the first answer.
            let mut script = String::from(
                "d=$(mktemp -d)
tcpdump -l -n -e -tt -i eth0 'icmp6 and ip6[40] == 136' >$d/out 2>$d/err &
t=$!
\
                 i=0; until grep -q listening $d/err || [ $i -ge 500 ]; do sleep 0.01; i=$((i+1)); done
pids=\n",
            );
            for ip in chunk {
                let _ = writeln!(
                    script,
                    "ndisc6 -m -n -r 2 -w 150 {ip} eth0 >/dev/null 2>&1 & pids=\"$pids $!\""
                );
            }
            script.push_str("wait $pids\nsleep 0.05\nkill $t; wait $t\ncat $d/out\nrm -rf $d\n");
            let out = self.lab.exec(&self.client, &["sh", "-c", &script])?;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(target) = line
                    .split("tgt is ")
                    .nth(1)
                    .and_then(|r| r.split([',', ' ']).next())
                    .and_then(|t| t.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                if let Some(Frame::Answer { mac, .. }) = parse_frame(line, target)
                    && chunk.contains(&target)
                {
                    add(target, &mac);
                }
            }
        }
        Ok(result)
    }

    /// Starts a [`Prober`] on the client for `ip`, probing every `interval`.
    pub fn probe(&self, ip: IpAddr, interval: Duration) -> Result<Prober> {
        Prober::start(&self.client, ip, interval)
    }
}

/// The `herald.dev/ip` label value of an IP lease: the agent's own naming (`herald_election::naming`).
pub fn ip_slug(ip: IpAddr) -> String {
    herald_election::naming::ip_slug(ip).expect("test IPs are valid Service IPs")
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Seconds since the Unix epoch, as tcpdump's `-tt` timestamps are.
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One frame the client saw, about the probed IP.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// The client asked (ARP request / Neighbor Solicitation).
    Request { at: f64 },
    /// An answer to the client (ARP reply / solicited NA addressed to it) from `mac`.
    Answer { at: f64, mac: String },
    /// An unsolicited claim (gratuitous ARP, unsolicited NA) from `mac`.
    Claim { at: f64, mac: String },
}

impl Frame {
    /// When the client's kernel saw it (tcpdump timestamp, epoch seconds).
    pub fn at(&self) -> f64 {
        match self {
            Frame::Request { at } | Frame::Answer { at, .. } | Frame::Claim { at, .. } => *at,
        }
    }
}

/// A real client probing one IP every `interval` (`arping` for IPv4, `ndisc6` in a loop for IPv6) while
/// `tcpdump` on the client records every request and answer with kernel timestamps. The probes only generate
/// requests; who answered (and when) is read from the capture, so two answers to one probe are seen even when the
/// client tool itself stops at the first.
pub struct Prober {
    ip: IpAddr,
    interval: Duration,
    tcpdump: Child,
    client: Child,
    frames: Arc<Mutex<Vec<Frame>>>,
    reader: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the capture, waits until it listens, then starts the probes.
    pub fn start(client: &Netns, ip: IpAddr, interval: Duration) -> Result<Prober> {
        let filter = match ip {
            IpAddr::V4(_) => "arp",
            IpAddr::V6(_) => "icmp6 and (ip6[40] == 135 or ip6[40] == 136)",
        };
        let mut tcpdump = Command::new("ip")
            .args([
                "netns",
                "exec",
                client.name(),
                "tcpdump",
                "--immediate-mode",
                "-l",
                "-n",
                "-e",
                "-tt",
            ])
            .args(["-i", "eth0", filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start tcpdump")?;
        let mut stderr = BufReader::new(tcpdump.stderr.take().context("tcpdump stderr")?);
        let mut line = String::new();
        loop {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                bail!("tcpdump exited before listening");
            }
            if line.contains("listening on") {
                break;
            }
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let stdout = tcpdump.stdout.take().context("tcpdump stdout")?;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = frames.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(frame) = parse_frame(&line, ip) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(frame);
                }
            }
        });
        let secs = format!("{:.3}", interval.as_secs_f64());
        let probe = match ip {
            IpAddr::V4(_) => format!("exec arping -i eth0 -W {secs} {ip} >/dev/null 2>&1"),
            // ndisc6 stops at the first answer; -w bounds one probe. The sleep makes up the rest of the interval.
            IpAddr::V6(_) => {
                let wait_ms = (interval.as_millis() as u64).max(5);
                format!(
                    "while :; do ndisc6 -q -n -r 1 -w {wait_ms} {ip} eth0 >/dev/null 2>&1; sleep {:.3}; done",
                    interval.as_secs_f64() / 2.0
                )
            }
        };
        let client = Command::new("ip")
            .args(["netns", "exec", client.name(), "sh", "-c", &probe])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("start the probe client")?;
        Ok(Prober {
            ip,
            interval,
            tcpdump,
            client,
            frames,
            reader: Some(reader),
        })
    }

    /// The probed IP.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Every frame recorded so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until some probe after `since` (epoch seconds) was answered by a MAC satisfying `pred`; returns the
    /// MAC.
    pub fn wait_answer(&self, since: f64, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> Option<String> {
        wait_for(timeout, || {
            self.frames().into_iter().find_map(|f| match f {
                Frame::Answer { at, mac } if at >= since && pred(&mac) => Some(mac),
                _ => None,
            })
        })
    }

    /// When (epoch seconds) the first answer at or after `since` came, if one came.
    pub fn first_answer(&self, since: f64) -> Option<f64> {
        self.frames()
            .iter()
            .filter_map(|f| match f {
                Frame::Answer { at, .. } if *at >= since => Some(*at),
                _ => None,
            })
            .min_by(f64::total_cmp)
    }

    /// Statistics of the probes sent in `[from, to]` (epoch seconds).
    pub fn stats(&self, from: f64, to: f64) -> ProbeStats {
        ProbeStats::compute(&self.frames(), from, to, self.interval)
    }

    /// Stops the probes and the capture (also done on drop).
    pub fn stop(&mut self) {
        // The probe is a process group (sh + arping/ndisc6): end all of it, while its leader is surely ours (not yet
        // reaped, so the group id cannot have been reused).
        if matches!(self.client.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.client.id())])
                .status();
        }
        let _ = self.client.kill();
        let _ = self.client.wait();
        let _ = self.tcpdump.kill();
        let _ = self.tcpdump.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Parses one line of `tcpdump -n -e -tt` about `ip`.
pub fn parse_frame(line: &str, ip: IpAddr) -> Option<Frame> {
    let mut words = line.split_whitespace();
    let at: f64 = words.next()?.parse().ok()?;
    let src = words.next()?.to_lowercase();
    let _arrow = words.next()?;
    let dst = words.next()?.trim_end_matches(',').to_lowercase();
    let to_client = dst == CLIENT_MAC;
    let from_client = src == CLIENT_MAC;
    let after = |key: &str| -> Option<IpAddr> {
        line.split(key)
            .nth(1)?
            .split([' ', ','])
            .find(|w| !w.is_empty())?
            .parse()
            .ok()
    };
    if line.contains("ethertype ARP") {
        if let Some(target) = after("Request who-has ") {
            let sender = after(" tell ");
            if from_client && target == ip {
                return Some(Frame::Request { at });
            }
            // Gratuitous request: sender and target are the claimed IP.
            if !from_client && target == ip && sender == Some(ip) {
                return Some(Frame::Claim { at, mac: src });
            }
            return None;
        }
        if after("Reply ") == Some(ip) {
            return Some(if to_client {
                Frame::Answer { at, mac: src }
            } else {
                Frame::Claim { at, mac: src }
            });
        }
        return None;
    }
    if line.contains("neighbor solicitation") {
        return (from_client && after("who has ") == Some(ip)).then_some(Frame::Request { at });
    }
    if line.contains("neighbor advertisement") && after("tgt is ") == Some(ip) {
        return Some(if to_client {
            Frame::Answer { at, mac: src }
        } else {
            Frame::Claim { at, mac: src }
        });
    }
    None
}

/// What a client saw over a time window.
#[derive(Clone, Debug, Default)]
pub struct ProbeStats {
    /// Requests the client sent.
    pub requests: usize,
    /// Requests with at least one answer.
    pub answered: usize,
    /// Longest time without any answer: from the last answer before to the first answer after (if the window ends
    /// without an answer, up to the window's last request).
    pub longest_gap: Duration,
    /// When that gap started (epoch seconds).
    pub gap_start: f64,
    /// Requests answered by two or more different MACs.
    pub double_answered: usize,
    /// Windows (start, end, epoch seconds) of consecutive requests answered by two or more MACs.
    pub dual_windows: Vec<(f64, f64)>,
    /// Answers per MAC.
    pub answers_by_mac: BTreeMap<String, usize>,
    /// The MACs in the order they answered, consecutive repeats folded: (MAC, first answer, last answer).
    pub runs: Vec<(String, f64, f64)>,
}

impl ProbeStats {
    /// Computes the statistics of the requests in `[from, to]`; answers belong to the latest request before them.
    pub fn compute(frames: &[Frame], from: f64, to: f64, interval: Duration) -> ProbeStats {
        let mut frames: Vec<&Frame> = frames.iter().collect();
        frames.sort_by(|a, b| a.at().total_cmp(&b.at()));
        // (request time, answering MACs with the first answer time)
        let mut requests: Vec<(f64, Vec<(String, f64)>)> = Vec::new();
        for f in frames {
            match f {
                Frame::Request { at } if *at >= from && *at <= to => requests.push((*at, Vec::new())),
                Frame::Answer { at, mac } => {
                    if let Some((_, macs)) = requests.last_mut()
                        && !macs.iter().any(|(m, _)| m == mac)
                    {
                        macs.push((mac.clone(), *at));
                    }
                }
                _ => {}
            }
        }
        let mut s = ProbeStats {
            requests: requests.len(),
            ..Default::default()
        };
        let mut last_answer: Option<f64> = None;
        let mut window: Option<(f64, f64)> = None;
        for (at, macs) in &requests {
            if macs.is_empty() {
                continue;
            }
            s.answered += 1;
            let first = macs.iter().map(|(_, t)| *t).fold(f64::INFINITY, f64::min);
            let gap_from = last_answer.unwrap_or(from.max(requests[0].0));
            if first - gap_from > s.longest_gap.as_secs_f64() {
                s.longest_gap = Duration::from_secs_f64(first - gap_from);
                s.gap_start = gap_from;
            }
            last_answer = Some(macs.iter().map(|(_, t)| *t).fold(f64::NEG_INFINITY, f64::max));
            for (mac, t) in macs {
                *s.answers_by_mac.entry(mac.clone()).or_default() += 1;
                match s.runs.last_mut() {
                    Some((m, _, last)) if m == mac => *last = *t,
                    _ => s.runs.push((mac.clone(), *t, *t)),
                }
            }
            if macs.len() > 1 {
                s.double_answered += 1;
                window = Some(match window {
                    Some((start, _)) => (start, *at),
                    None => (*at, *at),
                });
            } else if let Some(w) = window.take() {
                s.dual_windows.push(w);
            }
        }
        if let Some(w) = window {
            s.dual_windows.push(w);
        }
        // An unanswered tail counts as a gap too (the IP went dark and stayed dark).
        let last = last_answer.unwrap_or(from);
        if let Some(last_req) = requests.last().map(|r| r.0)
            && last_req - last > s.longest_gap.as_secs_f64() + interval.as_secs_f64()
        {
            s.longest_gap = Duration::from_secs_f64(last_req - last);
            s.gap_start = last;
        }
        s
    }

    /// Total length of the dual-answer windows (each counted as at least one probe interval).
    pub fn dual_time(&self, interval: Duration) -> Duration {
        self.dual_windows
            .iter()
            .map(|(a, b)| Duration::from_secs_f64(b - a) + interval)
            .sum()
    }

    /// The last MAC that answered.
    pub fn last_mac(&self) -> Option<&str> {
        self.runs.last().map(|(m, _, _)| m.as_str())
    }
}

/// Formats a duration in milliseconds.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Waits `d` while the probes run (a named sleep reads better in tests).
pub fn settle(d: Duration) {
    std::thread::sleep(d);
}

/// Nearest-rank percentile of `values` (sorted in place), `p` in 0..=100.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil().max(1.0) as usize;
    values[rank.min(values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: &str = "192.0.2.200";

    fn ip() -> IpAddr {
        IP.parse().unwrap()
    }

    #[test]
    fn parses_arp_requests_answers_and_claims() {
        let req = "1795242801.185304 02:00:00:00:00:64 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 58: \
                   Request who-has 192.0.2.200 tell 192.0.2.100, length 44";
        assert_eq!(parse_frame(req, ip()), Some(Frame::Request { at: 1795242801.185304 }));
        let reply = "1795242801.185404 02:00:00:00:00:12 > 02:00:00:00:00:64, ethertype ARP (0x0806), length 60: \
                     Reply 192.0.2.200 is-at 02:00:00:00:00:12, length 46";
        assert_eq!(
            parse_frame(reply, ip()),
            Some(Frame::Answer {
                at: 1795242801.185404,
                mac: "02:00:00:00:00:12".into()
            })
        );
        let garp = "1795242802.0 02:00:00:00:00:13 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 60: \
                    Request who-has 192.0.2.200 tell 192.0.2.200, length 46";
        assert_eq!(
            parse_frame(garp, ip()),
            Some(Frame::Claim {
                at: 1795242802.0,
                mac: "02:00:00:00:00:13".into()
            })
        );
        let other = "1795242801.1 02:00:00:00:00:64 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 58: \
                     Request who-has 192.0.2.201 tell 192.0.2.100, length 44";
        assert_eq!(parse_frame(other, ip()), None);
    }

    #[test]
    fn parses_ndp() {
        let v6: IpAddr = "2001:db8:1::1000".parse().unwrap();
        let ns = "1.5 02:00:00:00:00:64 > 33:33:ff:00:10:00, ethertype IPv6 (0x86dd), length 86: 2001:db8:1::100 > \
                  ff02::1:ff00:1000: ICMP6, neighbor solicitation, who has 2001:db8:1::1000, length 32";
        assert_eq!(parse_frame(ns, v6), Some(Frame::Request { at: 1.5 }));
        let na = "1.6 02:00:00:00:00:11 > 02:00:00:00:00:64, ethertype IPv6 (0x86dd), length 86: 2001:db8:1::1000 > \
                  2001:db8:1::100: ICMP6, neighbor advertisement, tgt is 2001:db8:1::1000, length 32";
        assert_eq!(
            parse_frame(na, v6),
            Some(Frame::Answer {
                at: 1.6,
                mac: "02:00:00:00:00:11".into()
            })
        );
    }

    fn req(at: f64) -> Frame {
        Frame::Request { at }
    }

    fn ans(at: f64, mac: &str) -> Frame {
        Frame::Answer { at, mac: mac.into() }
    }

    #[test]
    fn gap_and_dual_windows() {
        let iv = Duration::from_millis(20);
        let mut frames = vec![req(0.00), ans(0.001, "a"), req(0.02), ans(0.021, "a")];
        // Nothing for ~1 s, then b.
        for k in 2..50 {
            frames.push(req(k as f64 * 0.02));
        }
        frames.extend([
            req(1.00),
            ans(1.001, "b"),
            req(1.02),
            ans(1.021, "b"),
            ans(1.022, "a"),
            req(1.04),
        ]);
        frames.push(ans(1.041, "b"));
        let s = ProbeStats::compute(&frames, 0.0, 2.0, iv);
        assert_eq!(s.requests, 53);
        assert_eq!(s.answered, 5);
        assert!((s.longest_gap.as_secs_f64() - 0.98).abs() < 1e-6, "{:?}", s.longest_gap);
        assert_eq!(s.double_answered, 1);
        assert_eq!(s.dual_windows, vec![(1.02, 1.02)]);
        assert_eq!(
            s.runs.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            ["a", "b", "a", "b"]
        );
    }

    #[test]
    fn unanswered_tail_is_a_gap() {
        let frames = vec![req(0.0), ans(0.001, "a"), req(0.5), req(1.0), req(1.5)];
        let s = ProbeStats::compute(&frames, 0.0, 2.0, Duration::from_millis(20));
        assert!((s.longest_gap.as_secs_f64() - 1.499).abs() < 1e-6);
    }

    #[test]
    fn percentiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 50.0), 3.0);
        assert_eq!(percentile(&mut v, 99.0), 5.0);
    }
}
