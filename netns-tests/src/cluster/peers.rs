//! MetalLB and kube-vip beside Herald on one [`Cluster`] and one real kube-apiserver (issue #15, docs/peers.md):
//! their binaries from `scripts/peers.sh`, their CRDs and RBAC from their own manifests, their processes in the node
//! namespaces with the flags and environment their DaemonSets give them, and a kubelet stand-in that writes the Pods
//! those DaemonSets would have.
//!
//! The three run at once and never see each other's Services: Herald takes `loadBalancerClass: herald.dev/lb`
//! (its agents run with `--default-class=false`), MetalLB (at its defaults) the Services without a class, kube-vip
//! (`lb_class_only`) `kube-vip.io/kube-vip-class`. Each has its own addresses on the LAN ([`Implementation::v4`],
//! [`Implementation::v6`]).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::kube::repo_file;
use super::{Cluster, ServiceSpec};

/// MetalLB's namespace (its manifests').
pub const METALLB_NAMESPACE: &str = "metallb-system";
/// kube-vip's ServiceAccount (`kube-vip manifest rbac`).
pub const KUBE_VIP_ACCOUNT: &str = "kube-system/kube-vip";
/// MetalLB's ServiceAccounts.
pub const METALLB_ACCOUNTS: [&str; 2] = ["metallb-system/controller", "metallb-system/speaker"];
/// Herald's (deploy/herald.yaml).
pub const HERALD_ACCOUNT: &str = super::kube::AGENT_SERVICE_ACCOUNT;

/// One of the load balancers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Implementation {
    Herald,
    MetalLb,
    KubeVip,
}

impl Implementation {
    pub const ALL: [Implementation; 3] = [Implementation::Herald, Implementation::MetalLb, Implementation::KubeVip];

    pub fn name(self) -> &'static str {
        match self {
            Implementation::Herald => "Herald",
            Implementation::MetalLb => "MetalLB",
            Implementation::KubeVip => "kube-vip",
        }
    }

    /// The ServiceAccounts whose API requests are this implementation's.
    pub fn accounts(self) -> &'static [&'static str] {
        match self {
            Implementation::Herald => &[HERALD_ACCOUNT],
            Implementation::MetalLb => &METALLB_ACCOUNTS,
            Implementation::KubeVip => &[KUBE_VIP_ACCOUNT],
        }
    }

    /// The `n`-th IPv4 address of its share of the LAN (Herald: its Eip `lab`, 192.0.2.128/25; MetalLB: its
    /// IPAddressPool, 192.0.2.64/27; kube-vip: assigned by the harness from 192.0.2.32/27).
    pub fn v4(self, n: u32) -> IpAddr {
        let (base, len) = match self {
            Implementation::Herald => (128, 127),
            Implementation::MetalLb => (64, 32),
            Implementation::KubeVip => (32, 32),
        };
        assert!(n < len, "{} has {len} IPv4 addresses", self.name());
        IpAddr::from([192, 0, 2, (base + n) as u8])
    }

    /// The `n`-th IPv6 address of its share (Herald `2001:db8:1::1000`…`3fff`, MetalLB `::4000`…`7fff`, kube-vip
    /// `::8000`…`bfff`).
    pub fn v6(self, n: u32) -> IpAddr {
        let base: u16 = match self {
            Implementation::Herald => 0x1000,
            Implementation::MetalLb => 0x4000,
            Implementation::KubeVip => 0x8000,
        };
        assert!(n < 0x3000, "12,288 IPv6 addresses each");
        IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, base + n as u16])
    }

    /// A Herald Service asking for no IP: the allocator gives it the next address of the Eip. Herald only (the
    /// others are always asked for one, as kube-vip needs without its cloud provider).
    pub fn allocated_service(self, name: &str) -> ServiceSpec {
        assert_eq!(self, Implementation::Herald, "only Herald allocates here");
        ServiceSpec::v4(name).with_class(HERALD_CLASS)
    }

    /// A Service for this implementation asking for `ip` (each project's own way of asking), with one endpoint on
    /// every node (MetalLB and kube-vip announce only Services with ready endpoints; Herald's get them too).
    pub fn service(self, name: &str, ip: IpAddr) -> ServiceSpec {
        let base = if ip.is_ipv4() {
            ServiceSpec::v4(name)
        } else {
            ServiceSpec::v6(name)
        };
        match self {
            Implementation::Herald => base.with_class(HERALD_CLASS).with_ips(&ip.to_string()),
            Implementation::MetalLb => base.with_annotation("metallb.io/loadBalancerIPs", &ip.to_string()),
            Implementation::KubeVip => base
                .with_class(KUBE_VIP_CLASS)
                .with_annotation("kube-vip.io/loadbalancerIPs", &ip.to_string()),
        }
    }
}

/// Herald's class (`herald_api::names`).
pub const HERALD_CLASS: &str = "herald.dev/lb";
/// kube-vip's class.
pub const KUBE_VIP_CLASS: &str = "kube-vip.io/kube-vip-class";

/// The peers' binaries and manifests (`scripts/peers.sh build` and `manifests`).
#[derive(Clone, Debug)]
pub struct PeerBins {
    pub metallb_controller: PathBuf,
    pub metallb_speaker: PathBuf,
    pub kube_vip: PathBuf,
    /// `metallb.yaml` and `kube-vip.yaml`.
    pub manifests: PathBuf,
    /// `metallb v0.15.2`, `kube-vip v1.2.2`.
    pub versions: Vec<String>,
}

impl PeerBins {
    /// Builds them (cached after the first time) and writes the manifests into `dir`.
    pub fn build(dir: &Path) -> Result<PeerBins> {
        let script = repo_file("scripts/peers.sh");
        let run = |args: &[&str]| -> Result<String> {
            let out = Command::new(&script)
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("run {}", script.display()))?;
            if !out.status.success() {
                bail!("scripts/peers.sh {} failed", args.join(" "));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let vars = run(&["build"])?;
        let var = |k: &str| -> Result<PathBuf> {
            vars.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(PathBuf::from)
                .with_context(|| format!("scripts/peers.sh build printed no {k}"))
        };
        run(&["manifests", &dir.to_string_lossy()])?;
        Ok(PeerBins {
            metallb_controller: var("METALLB_CONTROLLER_BIN")?,
            metallb_speaker: var("METALLB_SPEAKER_BIN")?,
            kube_vip: var("KUBE_VIP_BIN")?,
            manifests: dir.to_path_buf(),
            versions: run(&["versions"])?.lines().map(str::to_string).collect(),
        })
    }
}

/// kube-vip's leader election timings (`vip_leaseduration`, `vip_renewdeadline`, `vip_retryperiod`, seconds).
#[derive(Clone, Copy, Debug)]
pub struct KubeVipTimings {
    pub lease: u32,
    pub renew: u32,
    pub retry: u32,
}

impl KubeVipTimings {
    /// Its defaults (`kube-vip manifest daemonset` sets none).
    pub const DEFAULT: KubeVipTimings = KubeVipTimings {
        lease: 15,
        renew: 10,
        retry: 2,
    };
    /// The faster timings its documentation gives (`--leaseDuration 5 --leaseRenewDuration 3 --leaseRetry 1`).
    pub const TUNED: KubeVipTimings = KubeVipTimings {
        lease: 5,
        renew: 3,
        retry: 1,
    };
}

/// MetalLB's and kube-vip's processes on a [`Cluster`]: index into the lab's processes per node.
pub struct Peers {
    bins: PeerBins,
    controller: Option<usize>,
    speakers: Vec<Option<usize>>,
    kube_vips: Vec<Option<usize>>,
    controller_kubeconfig: PathBuf,
    speaker_kubeconfig: PathBuf,
    kube_vip_kubeconfig: PathBuf,
    ml_secret: PathBuf,
    /// kube-vip's timings for the instances started next.
    pub kube_vip_timings: KubeVipTimings,
}

impl Peers {
    /// Installs MetalLB and kube-vip on `c` (its API server must be the real one) from their manifests, writes an
    /// IPAddressPool and L2Advertisement for MetalLB, the Pods their DaemonSets would have, and starts MetalLB's
    /// controller (in the API server's namespace) and both speakers on every node.
    pub fn install(c: &mut Cluster, bins: PeerBins) -> Result<Peers> {
        let kube = c
            .apiserver
            .kube()
            .context("MetalLB and kube-vip need the real kube-apiserver (HERALD_TEST_APISERVER=kube)")?;
        for file in ["metallb.yaml", "kube-vip.yaml"] {
            let path = bins.manifests.join(file);
            c.kubectl(&["apply", "-f", &path.to_string_lossy()])?;
        }
        kube.wait_crds_established(Duration::from_secs(60))?;
        let [controller_sa, speaker_sa] = METALLB_ACCOUNTS;
        let controller_kubeconfig = kube.sa_kubeconfig(controller_sa)?;
        let speaker_kubeconfig = kube.sa_kubeconfig(speaker_sa)?;
        let kube_vip_kubeconfig = kube.sa_kubeconfig(KUBE_VIP_ACCOUNT)?;
        let v4 = format!("{}-{}", Implementation::MetalLb.v4(0), Implementation::MetalLb.v4(31));
        let v6 = format!(
            "{}-{}",
            Implementation::MetalLb.v6(0),
            Implementation::MetalLb.v6(0x2fff)
        );
        c.apply(&format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: lab\n  namespace: {METALLB_NAMESPACE}\n\
             spec:\n  addresses:\n  - {v4}\n  - {v6}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\n\
             metadata:\n  name: lab\n  namespace: {METALLB_NAMESPACE}\nspec:\n  ipAddressPools: [lab]\n"
        ))?;
        // The memberlist key the DaemonSet mounts from the Secret `memberlist`.
        let ml_secret = c.lab.dir().join("metallb-memberlist");
        std::fs::create_dir_all(&ml_secret)?;
        std::fs::write(ml_secret.join("secretkey"), format!("{:032x}", rand::random::<u128>()))?;

        let nodes = c.nodes.len();
        let mut peers = Peers {
            bins,
            controller: None,
            speakers: vec![None; nodes],
            kube_vips: vec![None; nodes],
            controller_kubeconfig,
            speaker_kubeconfig,
            kube_vip_kubeconfig,
            ml_secret,
            kube_vip_timings: KubeVipTimings::DEFAULT,
        };
        peers.write_pods(c)?;
        peers.start_controller(c)?;
        for i in 0..nodes {
            peers.start(c, Implementation::MetalLb, i)?;
            peers.start(c, Implementation::KubeVip, i)?;
        }
        Ok(peers)
    }

    /// MetalLB's native BGP mode towards `router` (AS 64500; the nodes are AS 64512), for the IPv4 addresses
    /// `pool` (a range `a-b`): an IPAddressPool `routed`, a BGPAdvertisement and a BGPPeer, at their defaults.
    pub fn metallb_bgp(&self, c: &Cluster, router: &str, pool: &str) -> Result<()> {
        c.apply(&format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: routed\n  namespace: {METALLB_NAMESPACE}\n\
             spec:\n  addresses:\n  - {pool}\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  \
             name: routed\n  namespace: {METALLB_NAMESPACE}\nspec:\n  ipAddressPools: [routed]\n---\n\
             apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: router\n  namespace: {METALLB_NAMESPACE}\n\
             spec:\n  myASN: 64512\n  peerASN: 64500\n  peerAddress: {router}\n"
        ))
    }

    /// The versions compared (`metallb v0.15.2`, ...).
    pub fn versions(&self) -> &[String] {
        &self.bins.versions
    }

    /// What MetalLB's Deployment and DaemonSet would have made a kubelet write: the controller's Pod and one
    /// speaker Pod per node (host network: the node's address as pod IP), Running and Ready.
    fn write_pods(&self, c: &Cluster) -> Result<()> {
        let mut yaml = pod_yaml("controller-0", "controller", "controller", None);
        for node in &c.nodes {
            yaml.push_str("---\n");
            yaml.push_str(&pod_yaml(
                &format!("speaker-{}", node.name),
                "speaker",
                "speaker",
                Some(&node.name),
            ));
        }
        c.apply(&yaml)?;
        self.set_pod_ready(c, "controller-0", None, true)?;
        for i in 0..c.nodes.len() {
            self.set_pod_ready(c, &format!("speaker-{}", c.nodes[i].name), Some(i), true)?;
        }
        Ok(())
    }

    /// The kubelet stand-in: sets the status of MetalLB's Pod `pod` (on node `node`, 0-based) to Running and Ready,
    /// or to not Ready, as a kubelet does when its container dies or the node lifecycle controller when the node
    /// stops reporting.
    pub fn set_pod_ready(&self, c: &Cluster, pod: &str, node: Option<usize>, ready: bool) -> Result<()> {
        let ip = match node {
            Some(i) => format!("192.0.2.1{}", i + 1),
            None => "198.51.100.1".to_string(),
        };
        let status = if ready { "True" } else { "False" };
        let patch = format!(
            "{{\"status\":{{\"phase\":\"Running\",\"hostIP\":\"{ip}\",\"podIP\":\"{ip}\",\"podIPs\":[{{\"ip\":\"{ip}\"}}],\
             \"conditions\":[{{\"type\":\"Ready\",\"status\":\"{status}\"}},{{\"type\":\"ContainersReady\",\"status\":\"{status}\"}}]}}}}"
        );
        c.kubectl(&[
            "patch",
            "pod",
            pod,
            "-n",
            METALLB_NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])?;
        Ok(())
    }

    /// The kubelet stand-in for node `i` (0-based) as a whole: its Node's Ready condition (`Unknown` when false, as
    /// the node lifecycle controller writes it) and, for a peer, its speaker Pod.
    pub fn set_node_ready(&self, c: &Cluster, i: usize, ready: bool) -> Result<()> {
        let status = if ready { "True" } else { "Unknown" };
        c.kubectl(&[
            "patch",
            "node",
            &c.nodes[i].name,
            "--subresource=status",
            "--type=strategic",
            "-p",
            &format!("{{\"status\":{{\"conditions\":[{{\"type\":\"Ready\",\"status\":\"{status}\"}}]}}}}"),
        ])?;
        self.set_pod_ready(c, &format!("speaker-{}", c.nodes[i].name), Some(i), ready)
    }

    fn start_controller(&mut self, c: &mut Cluster) -> Result<()> {
        let kubeconfig = self.controller_kubeconfig.to_string_lossy().into_owned();
        let bin = self.bins.metallb_controller.to_string_lossy().into_owned();
        let cmd = [
            bin.as_str(),
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            METALLB_NAMESPACE,
            "--webhook-mode=disabled",
            "--port=0",
            "--log-level=info",
        ];
        let api = c.api.clone();
        self.controller = Some(c.lab.spawn(&api, "metallb-controller", &cmd)?);
        Ok(())
    }

    /// Starts `imp`'s speaker on node `i` (0-based), replacing a running one; Herald's agent through the cluster.
    pub fn start(&mut self, c: &mut Cluster, imp: Implementation, i: usize) -> Result<()> {
        if imp == Implementation::Herald {
            return c.start_agent(i);
        }
        if let Some(old) = self.process(c, imp, i) {
            c.lab.proc(old).kill_and_wait();
        }
        let node = c.nodes[i].name.clone();
        let ns = c.nodes[i].ns.clone();
        let addr = format!("192.0.2.1{}", i + 1);
        let idx = match imp {
            Implementation::MetalLb => {
                let kubeconfig = self.speaker_kubeconfig.to_string_lossy().into_owned();
                let bin = self.bins.metallb_speaker.to_string_lossy().into_owned();
                let pod = format!("speaker-{node}");
                let secret = self.ml_secret.to_string_lossy().into_owned();
                let cmd = [
                    bin.as_str(),
                    "--kubeconfig",
                    &kubeconfig,
                    "--namespace",
                    METALLB_NAMESPACE,
                    "--node-name",
                    &node,
                    "--pod-name",
                    &pod,
                    "--port=0",
                    "--log-level=info",
                ];
                let env = [
                    ("METALLB_NODE_NAME", node.as_str()),
                    ("METALLB_POD_NAME", pod.as_str()),
                    ("METALLB_HOST", addr.as_str()),
                    ("METALLB_ML_BIND_ADDR", addr.as_str()),
                    ("METALLB_ML_LABELS", "app=metallb,component=speaker"),
                    ("METALLB_ML_SECRET_KEY_PATH", secret.as_str()),
                ];
                c.lab.spawn_env(&ns, &format!("metallb-speaker-{node}"), &cmd, &env)?
            }
            Implementation::KubeVip => {
                let kubeconfig = self.kube_vip_kubeconfig.to_string_lossy().into_owned();
                let bin = self.bins.kube_vip.to_string_lossy().into_owned();
                let t = self.kube_vip_timings;
                let (lease, renew, retry) = (t.lease.to_string(), t.renew.to_string(), t.retry.to_string());
                // `kube-vip manifest daemonset --services --arp --interface eth0 --inCluster --servicesElection`,
                // with `lb_class_only` so that it leaves Herald's and MetalLB's Services alone, and a kubeconfig
                // instead of the in-cluster one.
                let env = [
                    ("vip_arp", "true"),
                    ("port", "6443"),
                    ("vip_nodename", node.as_str()),
                    ("vip_interface", "eth0"),
                    ("dns_mode", "first"),
                    ("dhcp_mode", "ipv4"),
                    ("svc_enable", "true"),
                    ("svc_leasename", "plndr-svcs-lock"),
                    ("svc_election", "true"),
                    ("cp_enable", "false"),
                    ("prometheus_server", ":2112"),
                    ("lb_class_only", "true"),
                    ("vip_leaseduration", lease.as_str()),
                    ("vip_renewdeadline", renew.as_str()),
                    ("vip_retryperiod", retry.as_str()),
                    ("k8s_config_file", kubeconfig.as_str()),
                ];
                c.lab
                    .spawn_env(&ns, &format!("kube-vip-{node}"), &[bin.as_str(), "manager"], &env)?
            }
            Implementation::Herald => unreachable!(),
        };
        match imp {
            Implementation::MetalLb => self.speakers[i] = Some(idx),
            _ => self.kube_vips[i] = Some(idx),
        }
        Ok(())
    }

    /// kube-vip puts a Service IP on the interface (`vip_interface`) and the kernel answers ARP/NDP for it; a
    /// kube-vip killed with SIGKILL leaves it there, and one started again that does not lead the Service's Lease does
    /// not take it away. What an operator would do: remove `ip` from every node but the Lease holder's
    /// (`kubevip-<svc>` in `default`). Returns the nodes it was removed from.
    pub fn remove_stale_kube_vip_address(&self, c: &Cluster, svc: &str, ip: IpAddr) -> Result<Vec<String>> {
        let holder = c.kubectl(&[
            "get",
            "lease",
            &format!("kubevip-{svc}"),
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        let len = if ip.is_ipv4() { 32 } else { 128 };
        let mut removed = Vec::new();
        for node in c.nodes.iter().filter(|n| n.name != holder.trim()) {
            let addr = format!("{ip}/{len}");
            if c.lab.ip(&node.ns, &["addr", "del", &addr, "dev", "eth0"]).is_ok() {
                removed.push(node.name.clone());
            }
        }
        Ok(removed)
    }

    /// The lab process of `imp`'s speaker on node `i`, if started.
    pub fn process(&self, c: &Cluster, imp: Implementation, i: usize) -> Option<usize> {
        match imp {
            Implementation::Herald => c.nodes[i].agent,
            Implementation::MetalLb => self.speakers[i],
            Implementation::KubeVip => self.kube_vips[i],
        }
    }

    /// Sends `sig` to `imp`'s speaker on node `i`.
    pub fn signal(&self, c: &mut Cluster, imp: Implementation, i: usize, sig: &str) -> Result<()> {
        let idx = self.process(c, imp, i).context("not started")?;
        c.lab.proc(idx).signal(sig)
    }

    /// Waits up to `timeout` for `imp`'s speaker on node `i` to exit.
    pub fn wait_exit(&self, c: &mut Cluster, imp: Implementation, i: usize, timeout: Duration) -> Option<i32> {
        let idx = self.process(c, imp, i)?;
        c.lab.proc(idx).wait_exit(timeout)
    }

    /// Memory and CPU time of `imp`'s speaker on node `i`.
    pub fn usage(&self, c: &Cluster, imp: Implementation, i: usize) -> Result<crate::ProcUsage> {
        let idx = self.process(c, imp, i).context("not started")?;
        crate::ProcUsage::read(c.lab.pid(idx))
    }

    /// The API requests of `imp`'s ServiceAccounts so far, by `(verb, resource)`.
    pub fn requests(
        &self,
        c: &Cluster,
        imp: Implementation,
    ) -> Result<std::collections::BTreeMap<(String, String), u64>> {
        let kube = c.apiserver.kube().context("the real kube-apiserver")?;
        Ok(kube.request_counts_of(imp.accounts()))
    }
}

/// A Pod of MetalLB's, as its Deployment (`node: None`) or DaemonSet would have created it.
fn pod_yaml(name: &str, component: &str, account: &str, node: Option<&str>) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {METALLB_NAMESPACE}\n  labels:\n    \
         app: metallb\n    component: {component}\nspec:\n  serviceAccountName: {account}\n  \
         automountServiceAccountToken: false\n"
    );
    if let Some(node) = node {
        let _ = write!(yaml, "  nodeName: {node}\n  hostNetwork: true\n");
    }
    let _ = write!(
        yaml,
        "  containers:\n  - name: {component}\n    image: quay.io/metallb/{component}:v0.15.2\n"
    );
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::EIP_ADDRESSES;

    #[test]
    fn each_implementation_has_addresses_of_its_own_on_the_lan() {
        let mut seen = std::collections::BTreeMap::new();
        for imp in Implementation::ALL {
            let count = match imp {
                Implementation::Herald => 127,
                Implementation::MetalLb | Implementation::KubeVip => 32,
            };
            for n in 0..count {
                let ip = imp.v4(n);
                assert!(ip.to_string().starts_with("192.0.2."), "{ip} is on the LAN");
                // Not the routers' (.1, .2), the nodes' (.11–.13) or the client's (.100).
                let last = ip.to_string().rsplit('.').next().unwrap().parse::<u8>().unwrap();
                assert!(last >= 32 && last != 100, "{ip} is taken");
                assert_eq!(seen.insert(ip, imp), None, "{ip} given to two implementations");
            }
            for n in [0, 0x2fff] {
                assert_eq!(seen.insert(imp.v6(n), imp), None);
            }
        }
        // Herald's share is exactly the cluster's Eip, whose ranges the kube-proxy stand-in redirects.
        assert_eq!(
            format!("{}-{}", Implementation::Herald.v4(0), Implementation::Herald.v4(126)),
            EIP_ADDRESSES[0]
        );
        assert_eq!(
            format!("{}-{}", Implementation::Herald.v6(0), Implementation::Herald.v6(0x2fff)),
            EIP_ADDRESSES[1]
        );
    }

    #[test]
    fn each_service_asks_for_its_ip_the_way_its_project_reads_it() {
        let ip: IpAddr = "192.0.2.33".parse().unwrap();
        let herald = Implementation::Herald.service("a", ip).yaml();
        assert!(
            herald.contains("loadBalancerClass: herald.dev/lb") && herald.contains("herald.dev/ips: \"192.0.2.33\"")
        );
        let metallb = Implementation::MetalLb.service("a", ip).yaml();
        assert!(
            !metallb.contains("loadBalancerClass"),
            "MetalLB at its defaults takes class-less Services"
        );
        assert!(metallb.contains("metallb.io/loadBalancerIPs: \"192.0.2.33\""));
        let kube_vip = Implementation::KubeVip.service("a", ip).yaml();
        assert!(kube_vip.contains("loadBalancerClass: kube-vip.io/kube-vip-class"));
        assert!(kube_vip.contains("kube-vip.io/loadbalancerIPs: \"192.0.2.33\""));
        let v6 = Implementation::KubeVip
            .service("b", Implementation::KubeVip.v6(1))
            .yaml();
        assert!(v6.contains("ipFamilies: [IPv6]") && v6.contains("2001:db8:1::8001"));
    }

    #[test]
    fn a_metallb_pod_is_the_one_its_daemonset_would_make() {
        let pod = pod_yaml("speaker-node1", "speaker", "speaker", Some("node1"));
        for want in [
            "name: speaker-node1",
            "namespace: metallb-system",
            "app: metallb",
            "component: speaker",
            "serviceAccountName: speaker",
            "nodeName: node1",
            "hostNetwork: true",
        ] {
            assert!(pod.contains(want), "{want} missing from:\n{pod}");
        }
        let controller = pod_yaml("controller-0", "controller", "controller", None);
        assert!(!controller.contains("nodeName") && !controller.contains("hostNetwork"));
    }
}
