//! Which API server a test runs against, and how the real one is started, installed and stopped.
//!
//! `HERALD_TEST_APISERVER=lab` (the default) or `kube` chooses between lab-apiserver and the real kube-apiserver
//! (+ etcd) that `scripts/kube-apiserver.sh` builds and starts (docs/kube-apiserver.md, docs/testing.md). Against
//! the real one Herald is installed as a user installs it: `deploy/crds/herald.dev.yaml` and `deploy/herald.yaml`
//! applied unchanged with kubectl, and the agents get a kubeconfig holding a token of the `herald-system/herald`
//! ServiceAccount from the TokenRequest API, so every request they make is judged by the real RBAC authorizer
//! under the Roles of `deploy/`. A test that fails prints the requests the authorizer refused.
//!
//! Shared by the netns fixtures ([`super::apiserver`]) and the agent-level tests (`tests/common`, through
//! `#[path]`): it needs nothing but std, anyhow and serde_json.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The environment variable that chooses the API server.
pub const APISERVER_ENV: &str = "HERALD_TEST_APISERVER";
/// Herald's ServiceAccount (`deploy/herald.yaml`), which the agents run as against the real server.
pub const AGENT_SERVICE_ACCOUNT: &str = "herald-system/herald";
/// Where the agents' requests of each real server are written for the RBAC audit (see `rbac-audit`).
pub const RBAC_AUDIT_ENV: &str = "HERALD_RBAC_AUDIT_DIR";
/// Service cluster IPs of the real server: IPv4 and IPv6, so dual-stack and IPv6 Services can be created. Disjoint
/// from every pool, node and endpoint address the tests use (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/28 and
/// ranges in 2001:db8::/64 and 2001:db8:1::/64); large enough for the 100-Service test.
pub const SERVICE_CIDRS: &str = "203.0.113.128/25,2001:db8:ffff::/112";

/// Which API server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiServerKind {
    /// lab-apiserver (crates/lab-apiserver): in-memory, no authentication or authorization.
    Lab,
    /// The real kube-apiserver and etcd of `scripts/kube-apiserver.sh`, RBAC enforced.
    Kube,
}

impl ApiServerKind {
    /// From `HERALD_TEST_APISERVER` (unset or empty: lab). Any other value than `lab` or `kube` panics: a typo must
    /// not quietly test the other server.
    pub fn from_env() -> ApiServerKind {
        match std::env::var(APISERVER_ENV).as_deref().map(str::trim) {
            Err(_) | Ok("" | "lab") => ApiServerKind::Lab,
            Ok("kube") => ApiServerKind::Kube,
            Ok(other) => panic!("{APISERVER_ENV}={other}: use `lab` (the default) or `kube`"),
        }
    }

    /// How it was chosen, for the line a test prints: `HERALD_TEST_APISERVER=kube`, or that the variable is unset.
    pub fn env_setting(self) -> String {
        match std::env::var(APISERVER_ENV) {
            Ok(v) if !v.trim().is_empty() => format!("{APISERVER_ENV}={v}"),
            _ => format!("{APISERVER_ENV} unset"),
        }
    }

    /// What a test prints about its API server.
    pub fn describe(self) -> &'static str {
        match self {
            ApiServerKind::Lab => "lab-apiserver",
            ApiServerKind::Kube => "the real kube-apiserver (scripts/kube-apiserver.sh)",
        }
    }
}

/// `rel` (a path in the repository, e.g. `scripts/kube-apiserver.sh`), found from this crate's directory upwards:
/// the same code runs in the workspace root's tests and in `netns-tests`.
pub fn repo_file(rel: &str) -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join(rel);
        if candidate.exists() {
            return candidate;
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => panic!("{rel} not found above {}", env!("CARGO_MANIFEST_DIR")),
        }
    }
}

/// A kube-apiserver + etcd started with `scripts/kube-apiserver.sh up`; `down` when dropped (also on panic), or by a
/// watchdog when the test process is killed (a nextest timeout) and never drops it. DIR (certificates, logs, audit
/// log, etcd data) is kept: it lies in the test's own directory, which the test removes when it passes and keeps
/// when it fails.
pub struct KubeApiServer {
    dir: PathBuf,
    watchdog: Option<Child>,
    /// The namespace it runs in; `None`: this process's namespace (`up --host`, on loopback).
    netns: Option<String>,
    server: String,
    admin_kubeconfig: PathBuf,
    agent_kubeconfig: Option<PathBuf>,
}

impl KubeApiServer {
    /// Starts it in the existing namespace `netns` (a test topology's API namespace), listening on `addr:port`
    /// (an address of that namespace, or one `up` puts on its loopback). `dir` must not exist yet.
    pub fn start_in_netns(netns: &str, addr: &str, port: u16, dir: &Path) -> Result<KubeApiServer> {
        let port = port.to_string();
        let args = ["--netns", netns, "--addr", addr, "--port", &port];
        Self::up(&args, dir, Some(netns.to_string()))
    }

    /// Starts it in this process's network namespace on 127.0.0.1, on free ports (no root needed). `dir` must not
    /// exist yet.
    pub fn start_on_host(dir: &Path) -> Result<KubeApiServer> {
        // Two runs picking the same free port at the same moment is unlikely, not impossible: then try again (in a
        // new DIR: a failed `up` keeps its logs).
        let mut attempt = 0;
        loop {
            let dir_n = match attempt {
                0 => dir.to_path_buf(),
                n => dir.with_extension(format!("retry{n}")),
            };
            match Self::up(&["--host"], &dir_n, None) {
                Err(e) if attempt < 2 && format!("{e:#}").contains("address already in use") => attempt += 1,
                result => return result,
            }
        }
    }

    fn up(args: &[&str], dir: &Path, netns: Option<String>) -> Result<KubeApiServer> {
        let script = repo_file("scripts/kube-apiserver.sh");
        let out = Command::new(&script)
            .arg("up")
            .args(args)
            .arg("--dir")
            .arg(dir)
            .args(["--service-cidr", SERVICE_CIDRS])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let vars: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
        let (Some(server), Some(kubeconfig), true) =
            (vars.get("HRDK_SERVER"), vars.get("KUBECONFIG"), out.status.success())
        else {
            bail!(
                "scripts/kube-apiserver.sh up {} failed ({}); logs in {}:\n{}",
                args.join(" "),
                out.status,
                dir.display(),
                tail(&stderr, 30)
            );
        };
        // In its own session, so a terminal's Ctrl-C to the test does not end it before it has cleaned up.
        let watch = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; exec \"$0\" down --dir \"$1\" --keep-dir --now",
            std::process::id()
        );
        let watchdog = Command::new("setsid")
            .args(["sh", "-c", &watch])
            .arg(&script)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Ok(KubeApiServer {
            dir: dir.to_path_buf(),
            watchdog,
            netns,
            server: server.to_string(),
            admin_kubeconfig: PathBuf::from(kubeconfig),
            agent_kubeconfig: None,
        })
    }

    /// `https://ADDR:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Where its certificates, logs and audit log are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kubeconfig of `system:masters` (cluster-admin), for the test's own requests.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The agents' kubeconfig (the ServiceAccount's token), once [`KubeApiServer::install_herald`] ran.
    pub fn agent_kubeconfig(&self) -> Option<&Path> {
        self.agent_kubeconfig.as_deref()
    }

    /// `kubectl` with the admin kubeconfig, in the server's namespace.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "kubectl"]);
                c
            }
            None => Command::new("kubectl"),
        };
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args);
        cmd
    }

    /// Runs `kubectl ARGS` (with `stdin` as its input); returns stdout, or fails with stderr.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        run_kubectl(self.kubectl_cmd(args), args, stdin)
    }

    /// Waits until every CustomResourceDefinition on the server is `Established`. Not `kubectl wait --for
    /// condition=established crd --all`: that fails at once ("`.status.conditions` accessor error: <nil>") on a CRD
    /// the server has stored but not yet given any condition, which a CRD just applied can be.
    pub fn wait_crds_established(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // JSON, not a jsonpath filter: kubectl's filter fails on a CRD with no conditions yet.
            let out = self.kubectl(&["get", "crd", "-o", "json"], None)?;
            let list: serde_json::Value = serde_json::from_str(&out).context("kubectl get crd -o json")?;
            let pending: Vec<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|crd| {
                    !crd["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                })
                .map(|crd| crd["metadata"]["name"].as_str().unwrap_or_default().to_string())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("CRDs not established after {timeout:?}: {}", pending.join(", "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Installs Herald as a user does: the CRDs whose plural `install_crd` accepts (all of them: the file as it is)
    /// and `deploy/herald.yaml` with kubectl, then a bound token of [`AGENT_SERVICE_ACCOUNT`] from the TokenRequest
    /// API, written into a kubeconfig for the agents. Returns that kubeconfig. Waits until the CRDs are
    /// established and the authorizer knows the ServiceAccount's bindings, so an agent started next is not refused
    /// while RBAC's caches catch up.
    pub fn install_herald(&mut self, install_crd: impl Fn(&str) -> bool) -> Result<PathBuf> {
        let crds = repo_file("deploy/crds/herald.dev.yaml");
        let text = std::fs::read_to_string(&crds).with_context(|| format!("read {}", crds.display()))?;
        let docs = yaml_documents(&text);
        let chosen: Vec<&str> = docs
            .iter()
            .copied()
            .filter(|doc| crd_plural(doc).is_some_and(&install_crd))
            .collect();
        if chosen.len() == docs.len() {
            self.kubectl(&["apply", "-f", &crds.to_string_lossy()], None)?;
        } else if !chosen.is_empty() {
            self.kubectl(&["apply", "-f", "-"], Some(&chosen.join("\n---\n")))?;
        }
        if !chosen.is_empty() {
            self.wait_crds_established(Duration::from_secs(60))?;
        }
        self.kubectl(
            &["apply", "-f", &repo_file("deploy/herald.yaml").to_string_lossy()],
            None,
        )?;

        let kubeconfig = self.sa_kubeconfig(AGENT_SERVICE_ACCOUNT)?;

        let (ns, name) = AGENT_SERVICE_ACCOUNT.split_once('/').expect("namespace/name");
        let user = format!("system:serviceaccount:{ns}:{name}");
        let deadline = Instant::now() + Duration::from_secs(20);
        for (verb, resource, namespace) in [("watch", "services", "default"), ("update", "leases", ns)] {
            while self
                .kubectl(&["auth", "can-i", verb, resource, "-n", namespace, "--as", &user], None)
                .is_err()
            {
                if Instant::now() > deadline {
                    bail!(
                        "RBAC never allowed {user} to {verb} {resource} in {namespace}: is deploy/herald.yaml applied?"
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.agent_kubeconfig = Some(kubeconfig.clone());
        Ok(kubeconfig)
    }

    /// A kubeconfig holding a bound token (one day) of the ServiceAccount `sa` (`namespace/name`), from the
    /// TokenRequest API, as a pod of that ServiceAccount gets.
    pub fn sa_kubeconfig(&self, sa: &str) -> Result<PathBuf> {
        let out = Command::new(repo_file("scripts/kube-apiserver.sh"))
            .arg("sa-kubeconfig")
            .arg("--dir")
            .arg(&self.dir)
            .arg(sa)
            .stdin(Stdio::null())
            .output()
            .context("scripts/kube-apiserver.sh sa-kubeconfig")?;
        if !out.status.success() {
            bail!(
                "sa-kubeconfig {sa} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    /// A kubeconfig for an agent whose credentials can be revoked: a token of [`AGENT_SERVICE_ACCOUNT`] bound to
    /// the Secret `secret` (created in its namespace if missing), in a token file the client reads anew about once a
    /// minute, as a pod's projected token. Deleting the Secret revokes the token;
    /// [`KubeApiServer::write_bound_token`] puts a fresh one into the file.
    pub fn bound_token_kubeconfig(&self, secret: &str) -> Result<PathBuf> {
        let (ns, _) = AGENT_SERVICE_ACCOUNT.split_once('/').expect("namespace/name");
        let token_file = self.dir.join(format!("token-{secret}"));
        self.write_bound_token(secret, &token_file)?;
        let ca = self.dir.join("pki/ca.crt");
        let kubeconfig = self.dir.join(format!("bound-{secret}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: herald-kube\n  cluster:\n    server: {server}\n    \
             certificate-authority: {ca}\nusers:\n- name: agent\n  user:\n    tokenFile: {token}\ncontexts:\n- name: \
             herald-kube\n  context:\n    cluster: herald-kube\n    user: agent\n    namespace: {ns}\n\
             current-context: herald-kube\n",
            server = self.server,
            ca = ca.display(),
            token = token_file.display(),
        );
        std::fs::write(&kubeconfig, text).with_context(|| format!("write {}", kubeconfig.display()))?;
        Ok(kubeconfig)
    }

    /// Writes into `file` a new token of [`AGENT_SERVICE_ACCOUNT`] bound to the Secret `secret` (created if missing).
    pub fn write_bound_token(&self, secret: &str, file: &Path) -> Result<()> {
        let (ns, name) = AGENT_SERVICE_ACCOUNT.split_once('/').expect("namespace/name");
        if self.kubectl(&["get", "secret", secret, "-n", ns], None).is_err() {
            self.kubectl(&["create", "secret", "generic", secret, "-n", ns], None)?;
        }
        let token = self.kubectl(
            &[
                "create",
                "token",
                name,
                "-n",
                ns,
                "--bound-object-kind",
                "Secret",
                "--bound-object-name",
                secret,
                "--duration",
                "1h",
            ],
            None,
        )?;
        std::fs::write(file, token.trim()).with_context(|| format!("write {}", file.display()))
    }

    /// An API outage: kills kube-apiserver, every connection breaking at once as when lab-apiserver stops (etcd and
    /// every object stay). (A SIGTERM would keep the agents' watches open for up to 10 s.)
    pub fn stop_apiserver(&self) -> Result<()> {
        self.script(&["stop-apiserver"], &["--now"])
    }

    /// Ends the outage: kube-apiserver again with the same flags, waiting until it is ready.
    pub fn start_apiserver(&self) -> Result<()> {
        self.script(&["start-apiserver"], &[])
    }

    fn script(&self, cmd: &[&str], flags: &[&str]) -> Result<()> {
        let out = Command::new(repo_file("scripts/kube-apiserver.sh"))
            .args(cmd)
            .arg("--dir")
            .arg(&self.dir)
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("scripts/kube-apiserver.sh {}", cmd.join(" ")))?;
        if !out.status.success() {
            bail!(
                "scripts/kube-apiserver.sh {} failed: {}",
                cmd.join(" "),
                tail(&String::from_utf8_lossy(&out.stderr), 20)
            );
        }
        Ok(())
    }

    /// Every request of the audit log (`DIR/audit.log`, one JSON event per request).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The agents' requests on resources by `(audit verb, resource[/subresource])`, the keys lab-apiserver's
    /// `lab_apiserver_requests_total` uses. Only the agents' ServiceAccount's: kube-apiserver's own loopback
    /// requests (its identity Lease, bootstrap controllers) and the test's are left out, so the counts compare with
    /// lab-apiserver's, where the agents are the only clients while a benchmark samples.
    pub fn request_counts(&self) -> BTreeMap<(String, String), u64> {
        self.request_counts_of(&[AGENT_SERVICE_ACCOUNT])
    }

    /// [`KubeApiServer::request_counts`] of the ServiceAccounts `accounts` (`namespace/name`) together.
    pub fn request_counts_of(&self, accounts: &[&str]) -> BTreeMap<(String, String), u64> {
        let users: Vec<String> = accounts
            .iter()
            .map(|sa| format!("system:serviceaccount:{}", sa.replacen('/', ":", 1)))
            .collect();
        let mut out = BTreeMap::new();
        for e in self.audit_events().into_iter().filter(|e| {
            e["user"]["username"]
                .as_str()
                .is_some_and(|u| users.iter().any(|w| w == u))
        }) {
            let (Some(verb), Some(resource)) = (e["verb"].as_str(), e["objectRef"]["resource"].as_str()) else {
                continue;
            };
            let resource = match e["objectRef"]["subresource"].as_str() {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_string(),
            };
            *out.entry((verb.to_string(), resource)).or_default() += 1;
        }
        out
    }

    /// The requests the authorizer refused to `user` (all users: `None`), one line each with verb, resource,
    /// namespace and name: what a missing RBAC rule looks like.
    pub fn forbidden(&self, user: Option<&str>) -> Vec<String> {
        let mut lines = Vec::new();
        for e in self.audit_events() {
            let decision = e["annotations"]["authorization.k8s.io/decision"].as_str();
            let who = e["user"]["username"].as_str().unwrap_or("?");
            if decision != Some("forbid") || user.is_some_and(|u| u != who) {
                continue;
            }
            let r = &e["objectRef"];
            let what = match (r["resource"].as_str(), r["subresource"].as_str()) {
                (Some(res), Some(sub)) => format!("{res}/{sub}"),
                (Some(res), None) => res.to_string(),
                _ => e["requestURI"].as_str().unwrap_or("?").to_string(),
            };
            let group = r["apiGroup"].as_str().filter(|g| !g.is_empty()).unwrap_or("core");
            lines.push(format!(
                "{} {who}: {} {what} ({group}) namespace={} name={} -> {} {}",
                e["requestReceivedTimestamp"].as_str().unwrap_or("?"),
                e["verb"].as_str().unwrap_or("?"),
                r["namespace"].as_str().unwrap_or("-"),
                r["name"].as_str().unwrap_or("-"),
                e["responseStatus"]["code"],
                e["annotations"]["authorization.k8s.io/reason"].as_str().unwrap_or("")
            ));
        }
        lines
    }

    /// The requests of the agents' ServiceAccount as the RBAC audit (`rbac-audit`, docs/testing.md) reads them: one
    /// JSON object per distinct (verb, apiGroup, resource, subresource, namespace, decision) with its count.
    /// Requests without a resource (discovery, `/version`) are kept too, under their path.
    pub fn agent_requests(&self) -> Vec<serde_json::Value> {
        let (ns, name) = AGENT_SERVICE_ACCOUNT.split_once('/').expect("namespace/name");
        let user = format!("system:serviceaccount:{ns}:{name}");
        let mut counts: BTreeMap<Vec<String>, u64> = BTreeMap::new();
        for e in self.audit_events() {
            if e["user"]["username"] != user.as_str() {
                continue;
            }
            let r = &e["objectRef"];
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let path = if r["resource"].is_string() {
                String::new()
            } else {
                let uri = text(&e["requestURI"]);
                uri.split('?').next().unwrap_or_default().to_string()
            };
            let key = vec![
                text(&e["verb"]),
                text(&r["apiGroup"]),
                text(&r["resource"]),
                text(&r["subresource"]),
                text(&r["namespace"]),
                path,
                text(&e["annotations"]["authorization.k8s.io/decision"]),
                // Why a request was refused (empty when allowed: the reasons of allowed requests name bindings).
                match e["annotations"]["authorization.k8s.io/decision"].as_str() {
                    Some("allow") => String::new(),
                    _ => text(&e["annotations"]["authorization.k8s.io/reason"]),
                },
                e["responseStatus"]["code"].to_string(),
            ];
            *counts.entry(key).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(k, n)| {
                serde_json::json!({
                    "verb": k[0], "apiGroup": k[1], "resource": k[2], "subresource": k[3],
                    "namespace": k[4], "path": k[5], "decision": k[6], "reason": k[7], "code": k[8], "count": n,
                })
            })
            .collect()
    }

    /// With `HERALD_RBAC_AUDIT_DIR` set (scripts/test.sh's kube-apiserver pass), writes [`Self::agent_requests`]
    /// into a file of its own there, for the RBAC audit at the end of the run.
    fn record_agent_requests(&self) {
        let Some(dir) = std::env::var_os(RBAC_AUDIT_ENV).filter(|d| !d.is_empty()) else {
            return;
        };
        let requests = self.agent_requests();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let file = Path::new(&dir).join(format!("{}-{nanos}.json", std::process::id()));
        let body = serde_json::json!({ "server": self.dir, "requests": requests });
        if let Err(e) = std::fs::write(&file, body.to_string()) {
            eprintln!("RBAC audit: cannot write {}: {e}", file.display());
        }
    }

    /// Prints how many requests the agents' ServiceAccount made and every one the authorizer refused to it: a
    /// refusal is a missing RBAC rule (or a request the agent should not make) even when the test passed.
    pub fn print_summary(&self) {
        let (ns, name) = AGENT_SERVICE_ACCOUNT.split_once('/').expect("namespace/name");
        let user = format!("system:serviceaccount:{ns}:{name}");
        let events = self.audit_events();
        let by_agents = events.iter().filter(|e| e["user"]["username"] == user.as_str()).count();
        let forbidden = self.forbidden(Some(&user));
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "kube-apiserver: {} requests, {by_agents} of them by {user}, {} refused to it",
            events.len(),
            forbidden.len()
        );
        for line in forbidden.iter().take(50) {
            let _ = writeln!(err, "  refused: {line}");
        }
    }

    /// Prints what a failed test needs to know about the server: refused requests and the end of its log.
    pub fn print_failure_report(&self) {
        let mut err = std::io::stderr().lock();
        let forbidden = self.forbidden(None);
        let _ = writeln!(
            err,
            "----- kube-apiserver: {} request(s) refused by the authorizer (audit log {}) -----",
            forbidden.len(),
            self.dir.join("audit.log").display()
        );
        for line in forbidden.iter().take(50) {
            let _ = writeln!(err, "{line}");
        }
        let log = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        let _ = writeln!(
            err,
            "----- kube-apiserver.log (last 15 lines) -----\n{}",
            tail(&log, 15)
        );
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.record_agent_requests();
        if std::thread::panicking() {
            self.print_failure_report();
        } else {
            self.print_summary();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // --now: the test is over; a graceful stop would wait up to 10 s for agents' watches that may still be open.
        let _ = Command::new(repo_file("scripts/kube-apiserver.sh"))
            .arg("down")
            .arg("--dir")
            .arg(&self.dir)
            .args(["--keep-dir", "--now"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `cmd` (a kubectl command line whose own arguments are `args`, for the message), with `stdin` as its input;
/// returns stdout, or fails with kubectl's stderr. The one kubectl runner of the fixtures and benchmarks.
pub fn run_kubectl(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run kubectl")?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `helm template` of the chart `deploy/helm/herald` with `sets` (`key=value`), through scripts/manifest.sh's pinned
/// helm, for the Kubernetes release the real-server tests run.
pub fn helm_template(sets: &[&str]) -> Result<String> {
    let mut cmd = Command::new(repo_file("scripts/manifest.sh"));
    cmd.args(["helm", "template", "herald"])
        .arg(repo_file("deploy/helm/herald"))
        .args(["--namespace", "herald-system", "--kube-version", "1.37.2"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().context("run scripts/manifest.sh helm")?;
    if !out.status.success() {
        bail!("helm template {sets:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The agent container's `securityContext` as a rendered manifest gives it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSecurity {
    /// `runAsUser`.
    pub run_as_user: Option<u32>,
    /// `allowPrivilegeEscalation`.
    pub allow_privilege_escalation: Option<bool>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: Option<bool>,
    /// `capabilities.drop`.
    pub drop: Vec<String>,
    /// `capabilities.add`.
    pub add: Vec<String>,
}

impl ContainerSecurity {
    /// The `securityContext` of the (only) container of the DaemonSet in `manifest`: the keys the chart writes, in
    /// the chart's layout (flow lists for capabilities). Errors when there is none, or a list is written otherwise.
    pub fn of_daemonset(manifest: &str) -> Result<ContainerSecurity> {
        let doc = yaml_documents(manifest)
            .into_iter()
            .find(|d| d.lines().any(|l| l.trim() == "kind: DaemonSet"))
            .context("no DaemonSet in the manifest")?;
        let mut lines = doc
            .lines()
            .skip_while(|l| l.trim() != "securityContext:" || !l.starts_with("          "));
        let head = lines
            .next()
            .context("the DaemonSet's container has no securityContext")?;
        let indent = head.len() - head.trim_start().len();
        let mut out = ContainerSecurity::default();
        for line in lines {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if line.len() - line.trim_start().len() <= indent {
                break;
            }
            let Some((key, value)) = trimmed.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let list = || -> Result<Vec<String>> {
                let inner = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .with_context(|| format!("securityContext {key}: not a flow list: {value:?}"))?;
                Ok(inner
                    .split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect())
            };
            match key {
                "runAsUser" => out.run_as_user = Some(value.parse()?),
                "allowPrivilegeEscalation" => out.allow_privilege_escalation = Some(value.parse()?),
                "readOnlyRootFilesystem" => out.read_only_root_filesystem = Some(value.parse()?),
                "drop" => out.drop = list()?,
                "add" => out.add = list()?,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The documents of a multi-document YAML file.
fn yaml_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| d.contains("kind:")).collect()
}

/// `spec.names.plural` of a CRD document.
fn crd_plural(doc: &str) -> Option<&str> {
    doc.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("plural:"))
        .map(|p| p.trim().trim_matches('"'))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
