//! Memory under Service churn: the resident set of `herald agent` while LoadBalancer Services are created and
//! deleted in rounds, and over the idle minutes after. Several agent binaries (or environments) are measured in one
//! run, round by round in turn, each against its own lab-apiserver, so they see the same load on the same machine.
//!
//! No root and no namespaces are needed. Build first (`cargo build --release --bins`), then:
//!
//! ```text
//! cargo run --release -p herald-netns-tests --bin churn-bench -- \
//!     --variant old=/tmp/oldtarget/release/herald --variant new=target/release/herald \
//!     [--variant 'new-arena2=target/release/herald MALLOC_ARENA_MAX=2'] \
//!     [--rounds 10] [--services 500] [--idle-minutes 7] [--no-announcer]
//! ```
//!
//! A variant is `label=path` followed by `KEY=VALUE` environment settings for that agent. Each cluster has one Node
//! (`n1`) and one Layer 2 Eip pinned to an interface that does not exist, so the announcer and the per-IP election
//! run but nothing is sent on any network. With `--l2-link` (root) each cluster runs in a network namespace of its
//! own with a veth pair (no addresses, so no probe is ever answered) and the Eip is pinned to it: the agent wins every
//! election, answers ARP there, and records an `Announcing` Event and the `herald.dev/announced-by` annotation per
//! Service, which each round then waits for. A round creates `--services` Services with one `kubectl create`, waits
//! until every one has an IP, deletes them all with one deletecollection request, and waits until the Eip counts no
//! address in use. VmRSS and RssAnon are read from `/proc/<pid>/status` after each round and every `--sample-seconds`
//! while idle.
//! Prints Markdown tables. Set `LAB_APISERVER_BIN` to a release build (the default looks in target/debug first).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_netns_tests::cluster::kube::run_kubectl;
use herald_netns_tests::{ProcUsage, lab_apiserver_bin, wait_for};
use serde_json::{Value, json};

/// Eip addresses (documentation ranges only): 762 usable, so at most this many Services per round.
const EIP_ADDRESSES: [&str; 3] = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];
const MAX_SERVICES: usize = 750;
/// Pinned so that the announcer finds no usable link, whatever the host has.
const ABSENT_INTERFACE: &str = "hrdbench0";
const LABEL: &str = "herald-bench=churn";
const ROUND_TIMEOUT: Duration = Duration::from_secs(600);

/// Agent memory under Service churn (prints Markdown tables).
#[derive(clap::Parser, Debug)]
struct Args {
    /// `label=path [KEY=VALUE ...]`: an agent binary to measure, with extra environment. Repeat to compare.
    #[arg(long = "variant", required = true)]
    variants: Vec<String>,
    /// Create/delete rounds.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Services per round.
    #[arg(long, default_value_t = 500)]
    services: usize,
    /// Idle minutes measured after the last round.
    #[arg(long, default_value_t = 7)]
    idle_minutes: u64,
    /// Seconds between idle samples.
    #[arg(long, default_value_t = 60)]
    sample_seconds: u64,
    /// Run the agents with `--no-announcer` (allocator only).
    #[arg(long)]
    no_announcer: bool,
    /// Keep each cluster's directory (logs, kubeconfig) after the run.
    #[arg(long)]
    keep: bool,
    /// Run each cluster in a network namespace with a link for the Eip, so the announcer announces (root).
    #[arg(long)]
    l2_link: bool,
}

/// One agent binary with its environment.
struct Variant {
    label: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

fn parse_variant(spec: &str) -> Result<Variant> {
    let mut words = spec.split_whitespace();
    let (label, bin) = words
        .next()
        .and_then(|w| w.split_once('='))
        .with_context(|| format!("--variant '{spec}': expected label=path [KEY=VALUE ...]"))?;
    let env = words
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--variant '{spec}': '{w}' is not KEY=VALUE"))
        })
        .collect::<Result<_>>()?;
    let bin = PathBuf::from(bin);
    if !bin.is_file() {
        bail!("--variant '{spec}': {} is not a file", bin.display());
    }
    Ok(Variant {
        label: label.to_string(),
        bin,
        env,
    })
}

/// The link the Eip is pinned to in `--l2-link` mode.
const LINK: &str = "veth0";

/// A network namespace of this benchmark, deleted on drop. Not the tests' `hrdt-` prefix: their clean-ups must not
/// take a benchmark's namespace away in the middle of a run.
struct BenchNetns(String);

impl BenchNetns {
    /// A namespace with `lo` up and a veth pair ([`LINK`] and its peer), both up and without addresses.
    fn create() -> Result<BenchNetns> {
        let ns = BenchNetns(format!("hrdc-{:06x}", rand::random::<u32>() >> 8));
        ip(&["netns", "add", &ns.0])?;
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &ns.0, "link", "add", LINK, "type", "veth", "peer", "name", "veth1",
        ])?;
        for dev in [LINK, "veth1"] {
            ip(&["-n", &ns.0, "link", "set", dev, "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A lab-apiserver with one agent.
struct Bench {
    label: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    apiserver: Child,
    agent: Child,
    keep: bool,
    /// `--l2-link`: the namespace everything runs in (dropped after the processes are killed).
    netns: Option<BenchNetns>,
}

/// `program`, run inside `netns` when there is one.
fn command(netns: &Option<BenchNetns>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            // `ip netns exec` execs the program: the child's pid is the program's.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.0]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Bench {
    fn start(v: &Variant, announcer: bool, keep: bool, l2_link: bool) -> Result<Bench> {
        let dir = std::env::temp_dir().join(format!("herald-churn-{:06x}-{}", rand::random::<u32>() >> 8, v.label));
        fs::create_dir_all(&dir)?;
        let netns = l2_link.then(BenchNetns::create).transpose()?;
        let kubeconfig = dir.join("kubeconfig");
        let apiserver = command(&netns, lab_apiserver_bin())
            .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("lab-apiserver.log"))?)
            .spawn()
            .context("start lab-apiserver")?;
        // Started with a placeholder agent so that Drop cleans up whatever fails below.
        let placeholder = Command::new("true").spawn()?;
        let mut bench = Bench {
            label: v.label.clone(),
            dir,
            kubeconfig,
            apiserver,
            agent: placeholder,
            keep,
            netns,
        };
        wait_for(Duration::from_secs(20), || bench.kubeconfig.is_file().then_some(()))
            .context("lab-apiserver wrote no kubeconfig")?;
        wait_for(Duration::from_secs(20), || {
            bench.kubectl(&["get", "--raw", "/healthz"]).ok()
        })
        .context("lab-apiserver does not answer")?;
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/herald.dev.yaml");
        bench.kubectl(&["apply", "-f", &crds.to_string_lossy()])?;
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "herald-system"}},
            {"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
             "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.250"}],
                        "conditions": [{"type": "Ready", "status": "True"}]}},
            {"apiVersion": "herald.dev/v1alpha1", "kind": "Eip", "metadata": {"name": "churn"},
             "spec": {"protocol": "layer2", "interface": if l2_link { LINK } else { ABSENT_INTERFACE },
                      "addresses": EIP_ADDRESSES}},
        ]});
        bench.create(&objects)?;
        let mut agent = command(&bench.netns, &v.bin);
        agent
            .args(["agent", "--node-name", "n1", "--metrics-addr", "127.0.0.1:0"])
            .args(if announcer { &[][..] } else { &["--no-announcer"][..] })
            .env("KUBECONFIG", &bench.kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(v.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(bench.dir.join("agent.log"))?);
        bench.agent = agent.spawn().with_context(|| format!("start {}", v.bin.display()))?;
        let wanted: &[&str] = if announcer {
            &["allocator started", "announcer started"]
        } else {
            &["allocator started"]
        };
        wait_for(Duration::from_secs(60), || {
            let log = bench.log();
            wanted.iter().all(|w| log.contains(w)).then_some(())
        })
        .with_context(|| format!("{}: agent not started:\n{}", v.label, bench.log_tail()))?;
        Ok(bench)
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = command(&self.netns, "kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args);
        run_kubectl(cmd, args, None)
    }

    fn get_json(&self, args: &[&str]) -> Result<Value> {
        let text = self.kubectl(&[&["get"], args, &["-o", "json"]].concat())?;
        serde_json::from_str(&text).context("kubectl printed invalid JSON")
    }

    /// `kubectl create -f -` with `objects`.
    fn create(&self, objects: &Value) -> Result<()> {
        let mut child = command(&self.netns, "kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(["create", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("run kubectl create")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(objects.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kubectl create failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// One round: `n` Services until each has an IP, then deleted until the Eip holds none. Returns the seconds
    /// until every Service had its IP.
    fn round(&mut self, n: usize) -> Result<f64> {
        let services: Vec<Value> = (0..n)
            .map(|i| {
                json!({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": format!("churn-{i}"), "namespace": "default",
                                    "labels": {"herald-bench": "churn"}},
                       "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})
            })
            .collect();
        let start = Instant::now();
        self.create(&json!({"apiVersion": "v1", "kind": "List", "items": services}))?;
        self.until(|b| {
            let list = b.get_json(&["svc", "-n", "default", "-l", LABEL])?;
            let items = list["items"].as_array().map_or(&[][..], Vec::as_slice);
            let with_ip = items
                .iter()
                .filter(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
                .count();
            Ok(with_ip == n)
        })
        .context("Services without an IP")?;
        let allocated = start.elapsed().as_secs_f64();
        if self.netns.is_some() {
            let mut announced = 0;
            self.until(|b| {
                let list = b.get_json(&["svc", "-n", "default", "-l", LABEL])?;
                let items = list["items"].as_array().map_or(&[][..], Vec::as_slice);
                announced = items
                    .iter()
                    .filter(|s| s["metadata"]["annotations"]["herald.dev/announced-by"].is_string())
                    .count();
                Ok(announced == n)
            })
            .with_context(|| format!("only {announced} of {n} Services got herald.dev/announced-by"))?;
        }
        // One deletecollection request (kubectl deletes one by one, rate-limited: minutes for 500).
        let collection = format!(
            "/api/v1/namespaces/default/services?labelSelector={}",
            LABEL.replace('=', "%3D")
        );
        self.kubectl(&["delete", "--raw", &collection])?;
        self.until(|b| Ok(b.get_json(&["eip", "churn"])?["status"]["used"].as_u64() == Some(0)))
            .context("the Eip still counts addresses in use")?;
        Ok(allocated)
    }

    /// Polls `check` every 200 ms until it holds; fails when the agent exits or after [`ROUND_TIMEOUT`].
    fn until(&mut self, mut check: impl FnMut(&Bench) -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + ROUND_TIMEOUT;
        loop {
            if let Some(status) = self.agent.try_wait()? {
                bail!("{}: agent exited ({status}):\n{}", self.label, self.log_tail());
            }
            if check(self)? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: timed out after {ROUND_TIMEOUT:?}:\n{}",
                    self.label,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The agent's resident set in MiB: all of it (VmRSS), and its anonymous part (RssAnon: the heap and stacks,
    /// without the binary's own pages, which the page cache shares).
    fn rss_mib(&self) -> Result<(f64, f64)> {
        let usage = ProcUsage::read(self.agent.id()).with_context(|| format!("{} (agent gone?)", self.label))?;
        Ok((usage.rss_mib, usage.rss_anon_mib))
    }

    /// events.k8s.io Events in the cluster, and the highest series count among them.
    fn events(&self) -> Result<(usize, i64)> {
        let list = self.get_json(&["events.v1.events.k8s.io", "-A"])?;
        let items = list["items"].as_array().map_or(&[][..], Vec::as_slice);
        let max_series = items
            .iter()
            .filter_map(|e| e["series"]["count"].as_i64())
            .max()
            .unwrap_or(1);
        Ok((items.len(), max_series))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for child in [&mut self.agent, &mut self.apiserver] {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.keep {
            eprintln!("{}: logs in {}", self.label, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    if args.services > MAX_SERVICES {
        bail!(
            "--services {} exceeds the Eip's {MAX_SERVICES} addresses",
            args.services
        );
    }
    if args.l2_link && (args.no_announcer || !herald_netns_tests::require(&["ip"])) {
        bail!("--l2-link needs the announcer, root and `ip`");
    }
    let variants: Vec<Variant> = args.variants.iter().map(|s| parse_variant(s)).collect::<Result<_>>()?;
    let mut benches = Vec::new();
    for v in &variants {
        eprintln!("{}: starting lab-apiserver and {}", v.label, v.bin.display());
        benches.push(Bench::start(v, !args.no_announcer, args.keep, args.l2_link)?);
    }
    // Let start-up (first lists, leases, the first pass) settle before the first sample.
    std::thread::sleep(Duration::from_secs(5));
    let mut rss: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let sample = |benches: &[Bench]| benches.iter().map(Bench::rss_mib).collect::<Result<Vec<_>>>();
    rss.push(("start".into(), sample(&benches)?));
    let mut times: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for round in 1..=args.rounds {
        let mut row = Vec::new();
        for b in &mut benches {
            let seconds = b.round(args.services)?;
            eprintln!("round {round}: {}: {} IPs in {seconds:.1} s", b.label, args.services);
            times.entry(round).or_default().push(seconds);
            // Read right after this agent's own round, before it idles through the others'.
            std::thread::sleep(Duration::from_secs(2));
            row.push(b.rss_mib()?);
        }
        rss.push((format!("after round {round}"), row));
    }
    let idle_start = Instant::now();
    let idle = Duration::from_secs(args.idle_minutes * 60);
    let every = Duration::from_secs(args.sample_seconds.max(1));
    let mut next = every;
    while next <= idle {
        std::thread::sleep(next.saturating_sub(idle_start.elapsed()));
        rss.push((format!("idle {}s", next.as_secs()), sample(&benches)?));
        next += every;
    }

    let labels: Vec<&str> = benches.iter().map(|b| b.label.as_str()).collect();
    let mode = match (args.no_announcer, args.l2_link) {
        (true, _) => "allocator only",
        (false, false) => "allocator + announcer, no usable link",
        (false, true) => "allocator + announcer answering ARP on a veth",
    };
    println!(
        "# Agent memory under churn ({} rounds of {} Services, {mode})\n",
        args.rounds, args.services
    );
    println!(
        "| phase | {} |",
        labels
            .iter()
            .map(|l| format!("{l} VmRSS / RssAnon MiB"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---:|".repeat(labels.len()));
    for (phase, row) in &rss {
        let cells: Vec<String> = row.iter().map(|(all, anon)| format!("{all:.1} / {anon:.1}")).collect();
        println!("| {phase} | {} |", cells.join(" | "));
    }
    println!(
        "\n| round | {} |",
        labels
            .iter()
            .map(|l| format!("{l} s to all IPs"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---:|".repeat(labels.len()));
    for (round, row) in &times {
        let cells: Vec<String> = row.iter().map(|s| format!("{s:.1}")).collect();
        println!("| {round} | {} |", cells.join(" | "));
    }
    println!("\n| variant | Events in the API | highest series count |");
    println!("|---|---:|---:|");
    for b in &benches {
        let (count, series) = b.events()?;
        println!("| {} | {count} | {series} |", b.label);
    }
    Ok(())
}
