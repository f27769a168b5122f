//! A cluster for agent tests: an in-process lab-apiserver with Herald's CRDs and namespace, and real
//! `herald agent` processes pointed at it. Everything stops when the [`Cluster`] drops.

#![allow(dead_code)] // each test file uses a different part

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald_lab_apiserver::{Config, Running};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;

pub struct Cluster {
    pub lab: Running,
    pub client: kube::Client,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    agents: Vec<Option<Child>>,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with_crds(|_| true).await
    }

    /// A cluster with only the Herald CRDs `install` accepts (by plural name).
    pub async fn start_with_crds(install: impl Fn(&str) -> bool) -> Cluster {
        let lab = herald_lab_apiserver::start(Config::default())
            .await
            .expect("start lab-apiserver");
        let dir = std::env::temp_dir().join(format!("herald-test-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        lab.write_kubeconfig(&kubeconfig).unwrap();
        let client = lab.client().unwrap();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "herald-system"}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in herald_api::crds().into_iter().filter(|c| install(&c.spec.names.plural)) {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        Cluster {
            lab,
            client,
            dir,
            kubeconfig,
            agents: Vec::new(),
        }
    }

    /// Starts `herald agent` for `node` with fast allocator-lease timings (metrics on a random port unless `extra`
    /// names `--metrics-addr`); returns its index.
    pub fn agent(&mut self, node: &str, extra: &[&str]) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("agent-{node}-{}.log", self.agents.len()))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["agent", "--node-name", node])
            .args(if extra.contains(&"--metrics-addr") {
                &[][..]
            } else {
                &["--metrics-addr", "127.0.0.1:0"][..]
            })
            .args(["--allocator-lease-duration", "3s", "--allocator-renew-deadline", "1s"])
            .args(["--allocator-retry-period", "200ms"])
            .args(extra)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,herald=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn herald agent");
        self.agents.push(Some(child));
        self.agents.len() - 1
    }

    /// Sends a signal to agent `i` and waits for it to exit.
    pub fn stop(&mut self, i: usize, signal: &str) {
        if let Some(mut child) = self.agents[i].take() {
            Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .unwrap();
            child.wait().unwrap();
        }
    }

    /// Is agent `i` still running?
    pub fn alive(&mut self, i: usize) -> bool {
        self.agents[i].as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log(&self, i: usize, node: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("agent-{node}-{i}.log"))).unwrap_or_default()
    }

    pub async fn create_eip(&self, value: serde_json::Value) -> herald_api::Eip {
        let obj = serde_json::from_value(value).unwrap();
        Api::<herald_api::Eip>::all(self.client.clone())
            .create(&PostParams::default(), &obj)
            .await
            .unwrap()
    }

    pub async fn create_service(&self, value: serde_json::Value) -> Service {
        let obj: Service = serde_json::from_value(value).unwrap();
        let ns = obj.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        self.services(&ns).create(&PostParams::default(), &obj).await.unwrap()
    }

    /// Creates an object of kind `K` from raw JSON, as a user (or a server without schema checks) could store
    /// it, even when Herald's types cannot read it.
    pub async fn create_raw<K: kube::Resource<DynamicType = ()>>(&self, value: serde_json::Value) {
        let resource = kube::discovery::ApiResource::erase::<K>(&());
        let obj: kube::api::DynamicObject = serde_json::from_value(value).unwrap();
        let api: Api<kube::api::DynamicObject> = match &obj.metadata.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        api.create(&PostParams::default(), &obj).await.unwrap();
    }

    pub fn services(&self, ns: &str) -> Api<Service> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Herald's Leases (namespace `herald-system`).
    pub fn leases(&self) -> Api<k8s_openapi::api::coordination::v1::Lease> {
        Api::namespaced(self.client.clone(), "herald-system")
    }

    /// Creates a Lease labelled `herald.dev/lease=<kind>` (`ip` or `node`) as an agent would.
    pub async fn create_lease(
        &self,
        name: &str,
        kind: &str,
        holder: Option<&str>,
    ) -> k8s_openapi::api::coordination::v1::Lease {
        let lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "labels": {"herald.dev/lease": kind}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3}}))
        .unwrap();
        self.leases().create(&PostParams::default(), &lease).await.unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.agents.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("----- {} (last 30 lines) -----", entry.path().display());
                for l in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{l}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The IPs in a Service's status.
pub fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

pub fn lb_service(ns: &str, name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations},
           "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})
}

pub fn eip(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "herald.dev/v1alpha1", "kind": "Eip", "metadata": {"name": name}, "spec": spec})
}
