//! The API server of a netns topology: lab-apiserver, or the real kube-apiserver with `HERALD_TEST_APISERVER=kube`
//! ([`super::kube`]), inside a namespace the test created and listening on one of its addresses. The test's own
//! `kubectl` runs in that namespace as cluster-admin; the agents, in their node namespaces, get
//! [`ApiServer::agent_kubeconfig`] (against the real server: the `herald-system/herald` ServiceAccount's token).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::kube::{ApiServerKind, KubeApiServer, repo_file, run_kubectl};
use crate::{Lab, Netns, lab_apiserver_bin, wait_for};

/// The chosen API server of one topology. Declare it before the [`Lab`] in a struct that holds both, so it stops
/// first (the real one's `down` then finds its processes and namespace as it left them).
pub struct ApiServer {
    kind: ApiServerKind,
    ns: Netns,
    listen: String,
    /// lab-apiserver's kubeconfig (also the agents': it has no authentication), or the real server's admin one.
    kubeconfig: PathBuf,
    /// `kubectl --cache-dir`: discovery of one server, never the user's `~/.kube/cache`.
    kube_cache: PathBuf,
    /// lab-apiserver: its process in the lab (`None` while stopped) and the state file that keeps its objects across
    /// a restart.
    lab_proc: Option<usize>,
    state_file: PathBuf,
    kube: Option<KubeApiServer>,
}

impl ApiServer {
    /// Starts the API server `HERALD_TEST_APISERVER` chooses in `ns`, on `ip:port` (an address of `ns`), and waits
    /// until it answers. Prints which one it is.
    pub fn start(lab: &mut Lab, ns: &Netns, ip: &str, port: u16) -> Result<ApiServer> {
        Self::start_kind(ApiServerKind::from_env(), lab, ns, ip, port)
    }

    /// [`ApiServer::start`] with the server chosen by the caller.
    pub fn start_kind(kind: ApiServerKind, lab: &mut Lab, ns: &Netns, ip: &str, port: u16) -> Result<ApiServer> {
        eprintln!(
            "API server: {} on {ip}:{port} in {ns} ({})",
            kind.describe(),
            kind.env_setting()
        );
        let mut server = ApiServer {
            kind,
            ns: ns.clone(),
            listen: format!("{ip}:{port}"),
            kubeconfig: lab.dir().join("kubeconfig"),
            kube_cache: lab.dir().join("kube-cache"),
            lab_proc: None,
            state_file: lab.dir().join("apiserver-state.json"),
            kube: None,
        };
        match kind {
            ApiServerKind::Lab => server.start_lab(lab)?,
            ApiServerKind::Kube => {
                let kube = KubeApiServer::start_in_netns(ns.name(), ip, port, &lab.dir().join("kube"))?;
                server.kubeconfig = kube.admin_kubeconfig().to_path_buf();
                server.kube = Some(kube);
            }
        }
        Ok(server)
    }

    fn start_lab(&mut self, lab: &mut Lab) -> Result<()> {
        let cmd: Vec<OsString> = vec![
            lab_apiserver_bin().into(),
            "--listen".into(),
            self.listen.clone().into(),
            "--kubeconfig-out".into(),
            self.kubeconfig.clone().into(),
            "--state-file".into(),
            self.state_file.clone().into(),
        ];
        // Every request is logged at debug: when a test fails, the log shows what the agents asked and got.
        let log =
            std::env::var("HERALD_TEST_APISERVER_LOG").unwrap_or_else(|_| "info,herald_lab_apiserver=debug".into());
        let env = [("NO_COLOR", "1"), ("RUST_LOG", log.as_str())];
        let idx = lab.spawn_env(&self.ns, "lab-apiserver", &cmd, &env)?;
        self.lab_proc = Some(idx);
        let p = lab.proc(idx);
        wait_for(Duration::from_secs(20), || {
            (!p.stdout().is_empty() || p.exited().is_some()).then_some(())
        });
        if let Some(code) = p.exited() {
            bail!("lab-apiserver exited with {code}: {}", p.stderr());
        }
        let kubeconfig = self.kubeconfig.clone();
        wait_for(Duration::from_secs(10), || kubeconfig.is_file().then_some(()))
            .context("lab-apiserver wrote no kubeconfig")?;
        wait_for(Duration::from_secs(20), || {
            self.kubectl(&["get", "--raw", "/healthz"]).ok()
        })
        .context("lab-apiserver does not answer")?;
        Ok(())
    }

    /// Which server this is.
    pub fn kind(&self) -> ApiServerKind {
        self.kind
    }

    /// The real server, when it is the one.
    pub fn kube(&self) -> Option<&KubeApiServer> {
        self.kube.as_ref()
    }

    /// The address it listens on (`IP:PORT`).
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// The kubeconfig of the test's own `kubectl` (cluster-admin on the real server).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig the agents run with: against the real server the ServiceAccount's, from
    /// [`ApiServer::install_herald`] (until then, and with lab-apiserver, the admin one).
    pub fn agent_kubeconfig(&self) -> &Path {
        self.kube
            .as_ref()
            .and_then(KubeApiServer::agent_kubeconfig)
            .unwrap_or(&self.kubeconfig)
    }

    /// `kubectl ARGS` in the server's namespace with the admin kubeconfig.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns.name(), "kubectl"])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.kube_cache)
            .args(args);
        cmd
    }

    /// Runs `kubectl ARGS`; returns stdout, or fails with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        run_kubectl(self.kubectl_cmd(args), args, None)
    }

    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        let args = ["apply", "-f", "-"];
        run_kubectl(self.kubectl_cmd(&args), &args, Some(yaml)).map(drop)
    }

    /// Installs Herald: the CRDs of `deploy/crds/herald.dev.yaml` and the `herald-system` namespace; against the
    /// real server all of `deploy/herald.yaml` (ServiceAccount, RBAC, DaemonSet) and the agents' ServiceAccount
    /// kubeconfig ([`KubeApiServer::install_herald`]).
    pub fn install_herald(&mut self) -> Result<()> {
        match &mut self.kube {
            Some(kube) => {
                kube.install_herald(|_| true)?;
            }
            None => {
                let crds = repo_file("deploy/crds/herald.dev.yaml");
                self.kubectl(&["apply", "-f", &crds.to_string_lossy()])?;
                self.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: herald-system\n")?;
            }
        }
        Ok(())
    }

    /// Stops the server, as an API outage: lab-apiserver saves its objects to its state file; the real one keeps
    /// etcd running.
    pub fn stop(&mut self, lab: &mut Lab) -> Result<()> {
        if let Some(kube) = &self.kube {
            return kube.stop_apiserver();
        }
        let idx = self.lab_proc.take().context("lab-apiserver is not running")?;
        let p = lab.proc(idx);
        p.signal("TERM")?;
        p.wait_exit(Duration::from_secs(10))
            .context("lab-apiserver did not stop on SIGTERM")?;
        Ok(())
    }

    /// Starts it again after [`ApiServer::stop`], with every object it had, and waits until it answers.
    pub fn restart(&mut self, lab: &mut Lab) -> Result<()> {
        match &self.kube {
            Some(kube) => kube.start_apiserver(),
            None => self.start_lab(lab),
        }
    }

    /// Requests on resources so far by `(audit verb, resource[/subresource])`: lab-apiserver's
    /// `lab_apiserver_requests_total`, or the real server's audit log (both count every client, `kubectl` too).
    pub fn request_counts(&self) -> Result<BTreeMap<(String, String), u64>> {
        if let Some(kube) = &self.kube {
            return Ok(kube.request_counts());
        }
        let text = self.kubectl(&["get", "--raw", "/metrics"])?;
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("lab_apiserver_requests_total{")) {
            let (labels, value) = line.rsplit_once(' ').context("metrics line without value")?;
            let label = |k: &str| {
                labels
                    .split(&format!("{k}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            out.insert(
                (label("verb"), label("resource")),
                value.trim().parse::<f64>().unwrap_or(0.0) as u64,
            );
        }
        Ok(out)
    }

    /// For a set-up that failed without a panic: what the real server refused, and the end of its log (lab-apiserver's
    /// log is one of the lab's processes, which the lab prints itself).
    pub fn print_failure_report(&self) {
        if let Some(kube) = &self.kube {
            kube.print_failure_report();
        }
    }
}
