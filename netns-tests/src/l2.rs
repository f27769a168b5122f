//! Shared pieces of the Layer 2 netns tests and the `l2-bench` binary: a client and a node namespace on one
//! bridge, and wrappers around the real clients (`arping`, `ndisc6`) that return the MAC that answered.

use std::ffi::OsStr;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{Lab, Netns, herald_bin, wait_for};

/// A switch namespace with bridge `br0`, a client namespace and a node namespace, each with `eth0` on the bridge.
/// The client has 198.51.100.1/24 and 2001:db8::1/64; the node has no address (Herald answers for it).
pub struct L2Lab {
    pub lab: Lab,
    pub switch: Netns,
    pub client: Netns,
    pub node: Netns,
    /// MAC of the node's `eth0`.
    pub node_mac: String,
}

impl L2Lab {
    pub fn new(test: &str) -> Result<L2Lab> {
        let mut lab = Lab::new(test);
        let switch = lab.netns("sw");
        let client = lab.netns("client");
        let node = lab.netns("node");
        lab.bridge(&switch, "br0")?;
        lab.attach(&switch, "br0", "p-client", &client, "eth0")?;
        lab.attach(&switch, "br0", "p-node", &node, "eth0")?;
        lab.addr(&client, "eth0", "198.51.100.1/24")?;
        lab.addr(&client, "eth0", "2001:db8::1/64")?;
        let node_mac = lab.mac(&node, "eth0")?;
        Ok(L2Lab {
            lab,
            switch,
            client,
            node,
            node_mac,
        })
    }

    /// Starts `herald announce l2 --interface <iface> <args...>` in the node namespace; returns its process index.
    pub fn start_herald(&mut self, iface: &str, args: &[&str]) -> Result<usize> {
        self.start_herald_env(iface, args, &[("RUST_LOG", "info,herald_l2=debug")])
    }

    /// Like [`L2Lab::start_herald`] with the given environment (e.g. `RUST_LOG`).
    pub fn start_herald_env(&mut self, iface: &str, args: &[&str], env: &[(&str, &str)]) -> Result<usize> {
        let bin = herald_bin();
        let mut cmd: Vec<&OsStr> = vec![bin.as_os_str(), "announce".as_ref(), "l2".as_ref()];
        cmd.extend(["--interface", iface].into_iter().map(OsStr::new));
        cmd.extend(args.iter().map(OsStr::new));
        let node = self.node.clone();
        self.lab.spawn_env(&node, "herald", &cmd, env)
    }

    /// Waits until the herald process logged `needle` on stderr.
    pub fn wait_log(&mut self, proc: usize, needle: &str, timeout: Duration) -> bool {
        let p = self.lab.proc(proc);
        wait_for(timeout, || p.stderr().contains(needle).then_some(())).is_some()
    }
}

/// `arping` from `ns` on `iface` for `ip`: the MACs that answered (empty when nobody did).
pub fn arping(lab: &Lab, ns: &Netns, iface: &str, ip: &str, count: u32) -> Result<Vec<String>> {
    let count = count.to_string();
    let out = lab.exec(ns, &["arping", "-c", &count, "-w", "3", "-i", iface, ip])?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "42 bytes from 02:00:00:00:00:01 (198.51.100.10): index=0 time=9.885 usec"
    let mut macs: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(" from ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_lowercase)
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// `ndisc6 -m` from `ns` on `iface` for `ip`: the target link-layer addresses of every answer (empty when none).
pub fn ndisc6(lab: &Lab, ns: &Netns, iface: &str, ip: &str) -> Result<Vec<String>> {
    let out = lab.exec(ns, &["ndisc6", "-m", "-n", "-r", "3", "-w", "1000", ip, iface])?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Target link-layer address: 02:00:00:00:00:01"
    let mut macs: Vec<String> = text
        .lines()
        .filter_map(|l| l.split("Target link-layer address: ").nth(1))
        .map(|m| m.trim().to_lowercase())
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// Retries `probe` until it returns a non-empty list (the responder may still be probing), up to `tries` times.
pub fn until_answered(tries: u32, mut probe: impl FnMut() -> Result<Vec<String>>) -> Result<Vec<String>> {
    let mut last = Vec::new();
    for _ in 0..tries {
        last = probe()?;
        if !last.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(last)
}

/// Starts `tcpdump` in `ns` (line-buffered, immediate mode so frames show up at once, with link-level headers),
/// waits until it listens, and returns its process index.
pub fn tcpdump(lab: &mut Lab, ns: &Netns, iface: &str, filter: &str) -> Result<usize> {
    let cmd = ["tcpdump", "--immediate-mode", "-l", "-n", "-e", "-i", iface, filter];
    let idx = lab.spawn(ns, "tcpdump", &cmd)?;
    let p = lab.proc(idx);
    wait_for(Duration::from_secs(10), || {
        p.stderr().contains("listening on").then_some(())
    })
    .context("tcpdump did not start listening")?;
    Ok(idx)
}

/// Multicast addresses of `iface` in `ns` (`ip maddr show`).
pub fn maddr(lab: &Lab, ns: &Netns, iface: &str) -> Result<String> {
    lab.ip(ns, &["maddr", "show", "dev", iface])
}

/// Does the kernel support links of `kind` (`vlan`, `bond`, `dummy`)? Creates and deletes a probe link in `ns`.
/// Without the module (a minimal kernel or container, like the project's CI machine, which has no 8021q or bonding
/// and no way to load modules) the test skips that part, saying why — also in CI: unlike a missing package, a
/// kernel feature is not something CI can install.
pub fn kernel_supports(lab: &Lab, ns: &Netns, kind: &str, parent: Option<&str>) -> bool {
    let name = format!("probe-{kind}");
    let mut args = vec!["link", "add"];
    if let Some(parent) = parent {
        args.extend(["link", parent]);
    }
    args.extend(["name", name.as_str(), "type", kind]);
    if kind == "vlan" {
        args.extend(["id", "4000"]);
    }
    match lab.ip(ns, &args) {
        Ok(_) => {
            let _ = lab.ip(ns, &["link", "del", &name]);
            true
        }
        Err(e) => {
            let why = format!("kernel has no `{kind}` links here ({e})");
            eprintln!("SKIPPED (part): {why}");
            false
        }
    }
}
