//! Fixtures for the BGP interop tests: a router namespace running GoBGP, BIRD 2 or FRR, node namespaces running
//! `herald announce bgp`, and a client behind the router.
//!
//! ```text
//!   client ── 198.51.100.2/24 ─veth─ 198.51.100.1/24 ── router ── 192.0.2.1/24, 2001:db8::1/64 ── bridge
//!                                                                              │        │        │
//!                                                          nodes: 192.0.2.11, .12, .13 and 2001:db8::11, ::12, ::13
//! ```
//! The router is AS 64500, the nodes AS 64512 (eBGP), unless a test says otherwise.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Lab, Netns, herald_bin, wait_for};

pub const ROUTER_ASN: u32 = 64500;
pub const NODE_ASN: u32 = 64512;
pub const ROUTER_V4: &str = "192.0.2.1";
pub const ROUTER_V6: &str = "2001:db8::1";
pub const CLIENT_V4: &str = "198.51.100.2";

/// Address of node `i` (1-based).
pub fn node_v4(i: usize) -> String {
    format!("192.0.2.{}", 10 + i)
}

pub fn node_v6(i: usize) -> String {
    format!("2001:db8::{}", 10 + i)
}

/// Which daemon plays the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterKind {
    Gobgp,
    Bird,
    Frr,
}

impl RouterKind {
    /// Tools `require` must find.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            RouterKind::Gobgp => &["ip", "gobgpd", "gobgp"],
            RouterKind::Bird => &["ip", "bird", "birdc"],
            RouterKind::Frr => &["ip", "zebra", "bfdd", "bgpd", "vtysh"],
        }
    }
}

/// How the router is configured.
#[derive(Clone, Debug)]
pub struct RouterSpec {
    pub kind: RouterKind,
    /// Nodes (1-based indices) the router peers with, over IPv4 and IPv6.
    pub nodes: Vec<usize>,
    pub md5: Option<String>,
    /// Hold time the router proposes (seconds).
    pub hold_time: u16,
    pub graceful_restart: bool,
    /// The router accepts connections on port 179 (false: it only connects out; GoBGP only).
    pub listen: bool,
    /// Seconds between the router's connection attempts (its default otherwise).
    pub connect_retry: Option<u16>,
}

impl RouterSpec {
    pub fn new(kind: RouterKind, nodes: usize) -> Self {
        RouterSpec {
            kind,
            nodes: (1..=nodes).collect(),
            md5: None,
            hold_time: 90,
            graceful_restart: false,
            listen: true,
            connect_retry: None,
        }
    }
}

/// The namespaces of a BGP lab.
pub struct BgpLab {
    pub lab: Lab,
    pub router_ns: Netns,
    pub client: Netns,
    pub nodes: Vec<Netns>,
    pub router: Option<Router>,
}

impl BgpLab {
    /// Builds the topology with `nodes` node namespaces. Each node holds `service_ip` (if any) on `lo`.
    pub fn new(test: &str, nodes: usize) -> Result<BgpLab> {
        let mut lab = Lab::new(test);
        let sw = lab.netns("sw");
        let router_ns = lab.netns("rtr");
        let client = lab.netns("cli");
        lab.bridge(&sw, "br0")?;
        lab.attach(&sw, "br0", "prtr", &router_ns, "eth0")?;
        lab.addr(&router_ns, "eth0", &format!("{ROUTER_V4}/24"))?;
        lab.addr(&router_ns, "eth0", &format!("{ROUTER_V6}/64"))?;
        lab.veth(&router_ns, "eth1", &client, "eth0")?;
        lab.addr(&router_ns, "eth1", "198.51.100.1/24")?;
        lab.addr(&client, "eth0", &format!("{CLIENT_V4}/24"))?;
        lab.ip(&client, &["route", "add", "default", "via", "198.51.100.1"])?;
        lab.sh(
            &router_ns,
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
        )?;
        // Hash flows on ports so several client connections spread over the ECMP next hops.
        lab.sh(&router_ns, "sysctl -qw net.ipv4.fib_multipath_hash_policy=1")?;
        let mut node_ns = Vec::new();
        for i in 1..=nodes {
            let ns = lab.netns(&format!("n{i}"));
            lab.attach(&sw, "br0", &format!("pn{i}"), &ns, "eth0")?;
            lab.addr(&ns, "eth0", &format!("{}/24", node_v4(i)))?;
            lab.addr(&ns, "eth0", &format!("{}/64", node_v6(i)))?;
            lab.ip(&ns, &["route", "add", "default", "via", ROUTER_V4])?;
            node_ns.push(ns);
        }
        Ok(BgpLab {
            lab,
            router_ns,
            client,
            nodes: node_ns,
            router: None,
        })
    }

    /// Starts the router daemon and returns once it answers its control socket.
    pub fn start_router(&mut self, spec: RouterSpec) -> Result<()> {
        let router = Router::start(&mut self.lab, &self.router_ns, spec)?;
        self.router = Some(router);
        Ok(())
    }

    /// Kills the router daemon (SIGKILL, no NOTIFICATION) and starts it again with the same configuration. Not for
    /// FRR, whose zebra would have to restart too.
    pub fn restart_router(&mut self) -> Result<()> {
        let router = self.router.take().expect("router started");
        if router.spec.kind == RouterKind::Frr {
            bail!("restart_router does not support FRR");
        }
        self.lab.proc(router.proc).signal("KILL")?;
        self.lab.proc(router.proc).wait_exit(Duration::from_secs(5));
        let spec = router.spec.clone();
        drop(router);
        self.start_router(spec)
    }

    pub fn router(&self) -> &Router {
        self.router.as_ref().expect("router started")
    }

    /// Starts `herald announce bgp` in node `i` towards the router (IPv4 and IPv6 sessions) with `extra` arguments
    /// before the prefixes. Returns the process index.
    pub fn start_speaker(&mut self, i: usize, extra: &[&str], prefixes: &[&str]) -> Result<usize> {
        self.start_speaker_to(i, &[ROUTER_V4, ROUTER_V6], extra, prefixes)
    }

    /// Like [`BgpLab::start_speaker`] with an explicit list of router addresses (all AS 64500).
    pub fn start_speaker_to(&mut self, i: usize, peers: &[&str], extra: &[&str], prefixes: &[&str]) -> Result<usize> {
        let ns = self.nodes[i - 1].clone();
        let mut cmd: Vec<String> = vec![
            herald_bin().display().to_string(),
            "--log-level".into(),
            "info,herald_bgp=debug".into(),
        ];
        cmd.extend(["announce", "bgp", "--local-asn"].map(String::from));
        cmd.push(NODE_ASN.to_string());
        for peer in peers {
            cmd.extend([
                "--peer".to_string(),
                peer.to_string(),
                "--peer-asn".to_string(),
                ROUTER_ASN.to_string(),
            ]);
        }
        cmd.extend(["--router-id".to_string(), node_v4(i)]);
        cmd.extend(extra.iter().map(|s| s.to_string()));
        cmd.extend(prefixes.iter().map(|s| s.to_string()));
        self.lab.spawn(&ns, &format!("herald-n{i}"), &cmd)
    }

    /// Puts `ip` on node `i`'s `lo` and starts a TCP responder on port 8080 that answers with the node's name.
    pub fn serve_on_node(&mut self, i: usize, ip: &str) -> Result<()> {
        let ns = self.nodes[i - 1].clone();
        self.lab.addr(&ns, "lo", &format!("{ip}/32"))?;
        serve_name(&mut self.lab, &ns, &format!("node{i}"), ip)
    }

    /// Connects from the client to `ip:8080` from many source ports; returns the set of node names that answered.
    pub fn client_reaches(&self, ip: &str, attempts: usize) -> Result<Vec<String>> {
        let script = format!(
            "import socket\n\
             seen = set()\n\
             for i in range({attempts}):\n\
             \x20   s = socket.create_connection(('{ip}', 8080), timeout=2)\n\
             \x20   seen.add(s.recv(64).decode().strip())\n\
             \x20   s.close()\n\
             print(' '.join(sorted(seen)))\n"
        );
        let out = self.lab.exec(&self.client, &["python3", "-c", &script])?;
        if !out.status.success() {
            bail!(
                "client connections to {ip} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect())
    }

    /// Established TCP connections of BGP (port 179) between node `i` and `router`, as `(local, remote)` address:port
    /// pairs seen from the node.
    pub fn bgp_connections(&self, i: usize, router: &str) -> Result<Vec<(String, String)>> {
        let out = self.lab.sh(
            &self.nodes[i - 1],
            "ss -Htn state established '( sport = :179 or dport = :179 )'",
        )?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // Recv-Q Send-Q Local Peer (with `state` given, ss leaves the state column out).
                let (local, remote) = (fields.get(2)?, fields.get(3)?);
                let remote_ip = remote.rsplit_once(':')?.0.trim_matches(['[', ']']);
                (remote_ip == router).then(|| (local.to_string(), remote.to_string()))
            })
            .collect())
    }

    /// Next hops of `prefix` in the router's kernel table.
    pub fn kernel_next_hops(&self, prefix: &str) -> Result<Vec<String>> {
        kernel_next_hops(&self.lab, &self.router_ns, prefix)
    }
}

/// Starts a TCP responder in `ns` on `bind`:8080 that answers every connection with `name` (which node a client
/// reached), and waits until it listens.
pub fn serve_name(lab: &mut Lab, ns: &Netns, name: &str, bind: &str) -> Result<()> {
    let script = format!(
        "import socketserver\n\
         class H(socketserver.BaseRequestHandler):\n\
         \x20   def handle(self):\n\
         \x20       self.request.sendall(b'{name}\\n')\n\
         socketserver.ThreadingTCPServer.allow_reuse_address = True\n\
         socketserver.ThreadingTCPServer(('{bind}', 8080), H).serve_forever()\n"
    );
    lab.spawn(ns, &format!("serve-{name}"), &["python3", "-c", &script])?;
    let listening = wait_for(Duration::from_secs(10), || {
        lab.sh(ns, "ss -Hltn 'sport = :8080'")
            .ok()
            .filter(|out| !out.trim().is_empty())
    });
    if listening.is_none() {
        bail!("the responder of {name} does not listen on port 8080");
    }
    Ok(())
}

/// Next hops of `prefix` in the kernel table of `ns` (sorted; one for a plain route, several for ECMP).
pub fn kernel_next_hops(lab: &Lab, ns: &Netns, prefix: &str) -> Result<Vec<String>> {
    let v6 = prefix.contains(':');
    let out = lab.ip(ns, &[if v6 { "-6" } else { "-4" }, "route", "show", prefix])?;
    let mut hops: Vec<String> = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops.dedup();
    Ok(hops)
}

/// A running router daemon and how to query it.
pub struct Router {
    pub spec: RouterSpec,
    ns: Netns,
    dir: PathBuf,
    /// Process index in the lab (the BGP daemon).
    pub proc: usize,
    name: String,
}

impl Router {
    fn start(lab: &mut Lab, ns: &Netns, spec: RouterSpec) -> Result<Router> {
        if !spec.listen && spec.kind != RouterKind::Gobgp {
            bail!("only GoBGP can be configured not to listen");
        }
        let config = match spec.kind {
            RouterKind::Bird => bird_config(&spec),
            RouterKind::Frr => frr_config(&spec),
            RouterKind::Gobgp => gobgp_config(&spec),
        };
        Router::start_configured(lab, ns, spec, "", &config)
    }

    /// Starts `kind` in `ns` with a configuration of the caller's (BIRD's `bird.conf`, FRR's `bgpd.conf`, GoBGP's
    /// TOML). `role` tells several routers of one lab apart (their directories, FRR's instance name); the FRR run
    /// directory `/var/run/frr/hrdt<lab id><role>` is the caller's to remove.
    pub fn start_with_config(lab: &mut Lab, ns: &Netns, kind: RouterKind, role: &str, config: &str) -> Result<Router> {
        Router::start_configured(lab, ns, RouterSpec::new(kind, 0), role, config)
    }

    fn start_configured(lab: &mut Lab, ns: &Netns, spec: RouterSpec, role: &str, config: &str) -> Result<Router> {
        let dir = lab.dir().join(format!("router-{:?}{role}", spec.kind).to_lowercase());
        fs::create_dir_all(&dir)?;
        let name = format!("hrdt{}{role}", lab.id());
        let proc = match spec.kind {
            RouterKind::Bird => {
                let conf = dir.join("bird.conf");
                fs::write(&conf, config)?;
                let sock = dir.join("bird.ctl");
                lab.spawn(ns, "bird", &["bird", "-f", "-c", &path(&conf), "-s", &path(&sock)])?
            }
            RouterKind::Frr => {
                let run = PathBuf::from("/var/run/frr").join(&name);
                fs::create_dir_all(&run)?;
                // The daemons drop privileges to the `frr` user (which must be in the `frrvty` group, as the
                // Debian package sets up): their run and log directories must be theirs.
                let chown = std::process::Command::new("chown")
                    .args(["frr:frr", &path(&run), &path(&dir)])
                    .status()?;
                if !chown.success() {
                    bail!("chown frr:frr {} failed", run.display());
                }
                let zconf = dir.join("zebra.conf");
                fs::write(&zconf, "hostname router\n")?;
                let bconf = dir.join("bgpd.conf");
                fs::write(&bconf, config)?;
                let common = |daemon: &str| -> Vec<String> {
                    vec![
                        format!("/usr/lib/frr/{daemon}"),
                        "-N".into(),
                        name.clone(),
                        "-i".into(),
                        path(&dir.join(format!("{daemon}.pid"))),
                        "--log".into(),
                        format!("file:{}", path(&dir.join(format!("{daemon}.log")))),
                    ]
                };
                let mut z = common("zebra");
                z.extend(["-f".into(), path(&zconf)]);
                lab.spawn(ns, "zebra", &z)?;
                let zsock = run.join("zserv.api");
                if wait_for(Duration::from_secs(10), || zsock.exists().then_some(())).is_none() {
                    bail!("zebra did not create {}", zsock.display());
                }
                // bfdd for the configurations that ask for BFD (`neighbor ... bfd`); bgpd reaches it through zebra.
                let fconf = dir.join("bfdd.conf");
                fs::write(&fconf, "")?;
                let mut f = common("bfdd");
                f.extend(["-f".into(), path(&fconf)]);
                lab.spawn(ns, "bfdd", &f)?;
                let mut b = common("bgpd");
                b.extend(["-f".into(), path(&bconf)]);
                lab.spawn(ns, "bgpd", &b)?
            }
            RouterKind::Gobgp => {
                let conf = dir.join("gobgpd.toml");
                fs::write(&conf, config)?;
                lab.spawn(
                    ns,
                    "gobgpd",
                    &["gobgpd", "-f", &path(&conf), "-t", "toml", "--log-level", "debug"],
                )?
            }
        };
        let router = Router {
            spec,
            ns: ns.clone(),
            dir,
            proc,
            name,
        };
        let ready = wait_for(Duration::from_secs(15), || router.query_ok().then_some(()));
        if ready.is_none() {
            bail!("{:?} did not answer its control socket", router.spec.kind);
        }
        Ok(router)
    }

    fn query_ok(&self) -> bool {
        match self.spec.kind {
            RouterKind::Bird => self.cli("show status").is_ok_and(|s| s.contains("Daemon is up")),
            RouterKind::Frr => self.cli("show bgp summary").is_ok_and(|s| !s.contains("not running")),
            RouterKind::Gobgp => self.cli("global").is_ok(),
        }
    }

    /// Runs one CLI command against the daemon and returns its output.
    pub fn cli(&self, command: &str) -> Result<String> {
        let mut cmd: Vec<String> = vec!["ip".into(), "netns".into(), "exec".into(), self.ns.name().into()];
        match self.spec.kind {
            RouterKind::Bird => {
                cmd.extend(["birdc".into(), "-s".into(), path(&self.dir.join("bird.ctl"))]);
                cmd.extend(command.split_whitespace().map(String::from));
            }
            RouterKind::Frr => {
                cmd.extend([
                    "vtysh".into(),
                    "-N".into(),
                    self.name.clone(),
                    "-c".into(),
                    command.into(),
                ]);
            }
            RouterKind::Gobgp => {
                cmd.push("gobgp".into());
                cmd.extend(command.split_whitespace().map(String::from));
            }
        }
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .context("run router CLI")?;
        if !out.status.success() {
            bail!("{command}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Is the router's BFD session with `peer` Up? (BIRD and FRR; GoBGP has no BFD.)
    pub fn bfd_up(&self, peer: &str) -> bool {
        match self.spec.kind {
            RouterKind::Bird => self.cli("show bfd sessions").is_ok_and(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().next() == Some(peer) && l.contains(" Up "))
            }),
            RouterKind::Frr => self
                .cli(&format!("show bfd peer {peer} json"))
                .is_ok_and(|s| s.contains("\"status\":\"up\"")),
            RouterKind::Gobgp => false,
        }
    }

    /// Waits until the router's BFD session with `peer` is Up (or, with `up` false, is not).
    pub fn wait_bfd(&self, peer: &str, up: bool, timeout: Duration) -> Result<()> {
        if wait_for(timeout, || (self.bfd_up(peer) == up).then_some(())).is_none() {
            let what = if self.spec.kind == RouterKind::Bird {
                "show bfd sessions".to_string()
            } else {
                format!("show bfd peer {peer}")
            };
            bail!(
                "BFD session with {peer} not {} after {timeout:?}: {}",
                if up { "Up" } else { "down" },
                self.cli(&what).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Is the session with `peer` Established?
    pub fn established(&self, peer: &str) -> bool {
        match self.spec.kind {
            RouterKind::Bird => self
                .cli(&format!("show protocols {}", bird_name(peer)))
                .is_ok_and(|s| s.contains("Established")),
            RouterKind::Frr => self
                .cli(&format!("show bgp neighbor {peer} json"))
                .is_ok_and(|s| s.contains("\"bgpState\":\"Established\"")),
            RouterKind::Gobgp => self
                .cli(&format!("neighbor {peer}"))
                .is_ok_and(|s| s.to_lowercase().contains("bgp state = established")),
        }
    }

    /// The router's view of `prefix` in its BGP RIB (daemon-specific text; empty when absent).
    pub fn route(&self, prefix: &str) -> String {
        let v6 = prefix.contains(':');
        let out = match self.spec.kind {
            RouterKind::Bird => self.cli(&format!("show route for {prefix} all")),
            RouterKind::Frr => self.cli(&format!(
                "show bgp {} unicast {prefix} json",
                if v6 { "ipv6" } else { "ipv4" }
            )),
            RouterKind::Gobgp => self.cli(&format!(
                "global rib -a {} {prefix} -j",
                if v6 { "ipv6" } else { "ipv4" }
            )),
        };
        let out = out.unwrap_or_default();
        let present = match self.spec.kind {
            RouterKind::Bird => out.contains(prefix.split('/').next().unwrap_or(prefix)) && out.contains("BGP"),
            RouterKind::Frr => out.contains("\"paths\""),
            RouterKind::Gobgp => out.contains("nlri"),
        };
        if present { out } else { String::new() }
    }

    /// How the router prints community `asn:value` in [`Router::route`].
    pub fn community(&self, asn: u16, value: u16) -> String {
        match self.spec.kind {
            RouterKind::Bird => format!("({asn},{value})"),
            RouterKind::Frr => format!("{asn}:{value}"),
            RouterKind::Gobgp => ((u32::from(asn) << 16) | u32::from(value)).to_string(),
        }
    }

    /// How the router prints large community `g:a:b` in [`Router::route`].
    pub fn large_community(&self, g: u32, a: u32, b: u32) -> String {
        match self.spec.kind {
            RouterKind::Bird => format!("({g}, {a}, {b})"),
            RouterKind::Frr => format!("{g}:{a}:{b}"),
            RouterKind::Gobgp => format!("{{\"ASN\":{g},\"LocalData1\":{a},\"LocalData2\":{b}}}"),
        }
    }

    /// Waits until `prefix` is in the RIB with every string of `expect` (next hops, ASNs, communities).
    pub fn wait_route(&self, prefix: &str, expect: &[&str], timeout: Duration) -> Result<String> {
        wait_for(timeout, || {
            let r = self.route(prefix);
            (!r.is_empty() && expect.iter().all(|e| r.contains(e))).then_some(r)
        })
        .with_context(|| {
            format!(
                "{prefix} with {expect:?} never showed up; last view: {}",
                self.route(prefix)
            )
        })
    }

    /// Waits until `prefix` is gone from the RIB.
    pub fn wait_no_route(&self, prefix: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, || self.route(prefix).is_empty().then_some(()))
            .with_context(|| format!("{prefix} is still there: {}", self.route(prefix)))
    }

    pub fn wait_established(&self, peer: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, || self.established(peer).then_some(()))
            .with_context(|| format!("session with {peer} never reached Established"))
    }
}

impl Drop for BgpLab {
    fn drop(&mut self) {
        // FRR's per-lab run directory (sockets, pid files) lives outside the lab directory.
        let _ = fs::remove_dir_all(PathBuf::from("/var/run/frr").join(format!("hrdt{}", self.lab.id())));
    }
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// BIRD protocol name of a peer: `n192_0_2_11` / `n2001_db8__11`.
fn bird_name(peer: &str) -> String {
    format!("n{}", peer.replace(['.', ':'], "_"))
}

fn bird_config(spec: &RouterSpec) -> String {
    let mut c = format!(
        "router id {ROUTER_V4};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel k4 {{ ipv4 {{ export all; }}; merge paths on; }}\n\
         protocol kernel k6 {{ ipv6 {{ export all; }}; merge paths on; }}\n"
    );
    for &i in &spec.nodes {
        for (peer, family) in [(node_v4(i), "ipv4"), (node_v6(i), "ipv6")] {
            let _ = write!(
                c,
                "protocol bgp {name} {{\n  local as {ROUTER_ASN};\n  neighbor {peer} as {NODE_ASN};\n  hold time {hold};\n  \
                 error wait time 1, 5;\n  \
                 {family} {{ import all; export none; }};\n",
                name = bird_name(&peer),
                hold = spec.hold_time,
            );
            if spec.graceful_restart {
                c.push_str("  graceful restart on;\n");
            }
            if let Some(secs) = spec.connect_retry {
                let _ = writeln!(c, "  connect delay time {secs};\n  connect retry time {secs};");
            }
            if let Some(pw) = &spec.md5 {
                let _ = writeln!(c, "  password \"{pw}\";");
            }
            c.push_str("}\n");
        }
    }
    c
}

fn frr_config(spec: &RouterSpec) -> String {
    let mut c = format!(
        "frr defaults traditional\nhostname router\nlog timestamp precision 3\n!\nrouter bgp {ROUTER_ASN}\n \
         bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n \
         bgp bestpath as-path multipath-relax\n"
    );
    if spec.graceful_restart {
        c.push_str(" bgp graceful-restart\n");
    }
    for &i in &spec.nodes {
        for peer in [node_v4(i), node_v6(i)] {
            let _ = writeln!(c, " neighbor {peer} remote-as {NODE_ASN}");
            let _ = writeln!(
                c,
                " neighbor {peer} timers {} {}",
                spec.hold_time.div_ceil(3).max(1),
                spec.hold_time
            );
            if let Some(pw) = &spec.md5 {
                let _ = writeln!(c, " neighbor {peer} password {pw}");
            }
            if let Some(secs) = spec.connect_retry {
                let _ = writeln!(c, " neighbor {peer} timers connect {secs}");
            }
        }
    }
    for (family, peer_of) in [("ipv4", node_v4 as fn(usize) -> String), ("ipv6", node_v6)] {
        let _ = writeln!(c, " address-family {family} unicast");
        c.push_str("  maximum-paths 8\n");
        for &i in &spec.nodes {
            let _ = writeln!(c, "  neighbor {} activate", peer_of(i));
        }
        c.push_str(" exit-address-family\n");
    }
    c
}

fn gobgp_config(spec: &RouterSpec) -> String {
    let mut c = format!("[global.config]\n  as = {ROUTER_ASN}\n  router-id = \"{ROUTER_V4}\"\n");
    if !spec.listen {
        // GoBGP: a negative port means no listening socket; the router only connects out.
        c.push_str("  port = -1\n");
    }
    for &i in &spec.nodes {
        for (peer, family) in [(node_v4(i), "ipv4-unicast"), (node_v6(i), "ipv6-unicast")] {
            let _ = write!(
                c,
                "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{peer}\"\n    peer-as = {NODE_ASN}\n"
            );
            if let Some(pw) = &spec.md5 {
                let _ = writeln!(c, "    auth-password = \"{pw}\"");
            }
            let _ = write!(
                c,
                "  [neighbors.timers.config]\n    hold-time = {hold}\n    keepalive-interval = {ka}\n",
                hold = spec.hold_time,
                ka = spec.hold_time.div_ceil(3).max(1)
            );
            if let Some(secs) = spec.connect_retry {
                let _ = writeln!(c, "    connect-retry = {secs}");
            }
            if spec.graceful_restart {
                c.push_str("  [neighbors.graceful-restart.config]\n    enabled = true\n");
            }
            let _ = write!(
                c,
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n"
            );
            if spec.graceful_restart {
                c.push_str("    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n");
            }
        }
    }
    c
}
