//! A cluster for agent tests: an API server with Herald's CRDs and namespace, and real `herald agent` processes
//! pointed at it. Everything stops when the [`Cluster`] drops.
//!
//! The API server is an in-process lab-apiserver on loopback, or with `HERALD_TEST_APISERVER=kube` the real
//! kube-apiserver (+ etcd) of `scripts/kube-apiserver.sh up --host`, one per test, on 127.0.0.1 and free ports:
//! then Herald is installed from `deploy/` with kubectl and the agents run as the `herald-system/herald`
//! ServiceAccount (a TokenRequest token), under the real RBAC authorizer; the test itself is cluster-admin.

#![allow(dead_code)] // each test file uses a different part

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald_lab_apiserver::{Config, Running};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceValidation, JSONSchemaProps,
};
use kube::api::{Api, PostParams};
use serde_json::json;

// The same driver of scripts/kube-apiserver.sh as the netns tests' (std, anyhow and serde_json only).
#[path = "../../netns-tests/src/cluster/kube.rs"]
mod kube_apiserver;

use kube_apiserver::{ApiServerKind, KubeApiServer};

pub struct Cluster {
    /// The in-process lab-apiserver; `None` against the real kube-apiserver.
    pub lab: Option<Running>,
    /// Cluster-admin (lab-apiserver has no authorization at all).
    pub client: kube::Client,
    pub dir: PathBuf,
    /// The agents' kubeconfig: against the real server, the `herald-system/herald` ServiceAccount's.
    pub kubeconfig: PathBuf,
    kube: Option<KubeApiServer>,
    agents: Vec<Option<Child>>,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with_crds(|_| true).await
    }

    /// A cluster with only the Herald CRDs `install` accepts (by plural name).
    pub async fn start_with_crds(install: impl Fn(&str) -> bool) -> Cluster {
        let dir = std::env::temp_dir().join(format!("herald-test-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        match ApiServerKind::from_env() {
            ApiServerKind::Lab => Self::start_lab(dir, install).await,
            ApiServerKind::Kube => Self::start_kube(dir, install).await,
        }
    }

    async fn start_lab(dir: PathBuf, install: impl Fn(&str) -> bool) -> Cluster {
        let lab = herald_lab_apiserver::start(Config::default())
            .await
            .expect("start lab-apiserver");
        eprintln!(
            "API server: lab-apiserver, in process, at {} ({})",
            lab.base_url(),
            ApiServerKind::Lab.env_setting()
        );
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
            lab: Some(lab),
            client,
            dir,
            kubeconfig,
            kube: None,
            agents: Vec::new(),
        }
    }

    /// The real server on this machine's loopback (kubectl and the agents run right here), Herald installed from
    /// `deploy/`. Blocks the runtime for the few seconds it takes: nothing else runs on it yet.
    async fn start_kube(dir: PathBuf, install: impl Fn(&str) -> bool) -> Cluster {
        let mut kube = KubeApiServer::start_on_host(&dir.join("kube")).expect("start kube-apiserver");
        eprintln!(
            "API server: the real kube-apiserver (scripts/kube-apiserver.sh up --host) at {}, logs in {} ({})",
            kube.server(),
            kube.dir().display(),
            ApiServerKind::Kube.env_setting()
        );
        let kubeconfig = kube.install_herald(install).expect("install Herald from deploy/");
        let admin = kube::config::Kubeconfig::read_from(kube.admin_kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(admin, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        Cluster {
            lab: None,
            client,
            dir,
            kubeconfig,
            kube: Some(kube),
            agents: Vec::new(),
        }
    }

    /// Starts `herald agent` for `node` with fast allocator-lease timings (metrics on a random port unless `extra`
    /// names `--metrics-addr`); returns its index.
    pub fn agent(&mut self, node: &str, extra: &[&str]) -> usize {
        self.agent_with_env(node, extra, &[])
    }

    /// [`Self::agent`] with extra environment variables.
    pub fn agent_with_env(&mut self, node: &str, extra: &[&str], env: &[(&str, &str)]) -> usize {
        let fast = ["--allocator-lease-duration", "3s", "--allocator-renew-deadline", "1s"];
        let fast = [&fast[..], &["--allocator-retry-period", "200ms"]].concat();
        self.spawn_agent(node, &[&fast[..], extra].concat(), env)
    }

    /// Starts `herald agent` for `node` with the default timings of every lease (as a user runs it).
    pub fn agent_at_default_timing(&mut self, node: &str, extra: &[&str]) -> usize {
        self.spawn_agent(node, extra, &[])
    }

    fn spawn_agent(&mut self, node: &str, extra: &[&str], env: &[(&str, &str)]) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("agent-{node}-{}.log", self.agents.len()))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["agent", "--node-name", node])
            .args(if extra.contains(&"--metrics-addr") {
                &[][..]
            } else {
                &["--metrics-addr", "127.0.0.1:0"][..]
            })
            .args(extra)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,herald=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn herald agent");
        self.agents.push(Some(child));
        self.agents.len() - 1
    }

    /// The real kube-apiserver, when the test runs against it (`HERALD_TEST_APISERVER=kube`).
    pub fn kube(&self) -> Option<&KubeApiServer> {
        self.kube.as_ref()
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

    /// How agent `i` exited, if it has.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.agents[i].as_mut().and_then(|c| c.try_wait().unwrap())
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
    ///
    /// The real server checks every write against the CRD's schema: there the object is created the way such an
    /// object gets into a real cluster, under an older, looser schema. The CRD's schema is opened (any object), the
    /// object created, and the schema put back; the object stays stored as it was written.
    pub async fn create_raw<K: kube::Resource<DynamicType = ()>>(&self, value: serde_json::Value) {
        let resource = kube::discovery::ApiResource::erase::<K>(&());
        let obj: kube::api::DynamicObject = serde_json::from_value(value).unwrap();
        let api: Api<kube::api::DynamicObject> = match &obj.metadata.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        if self.kube.is_none() {
            api.create(&PostParams::default(), &obj).await.unwrap();
            return;
        }
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let name = format!("{}.{}", resource.plural, resource.group);
        let strict = crds.get(&name).await.unwrap();
        let mut open = strict.clone();
        for version in &mut open.spec.versions {
            version.schema = Some(CustomResourceValidation {
                open_api_v3_schema: Some(JSONSchemaProps {
                    type_: Some("object".into()),
                    x_kubernetes_preserve_unknown_fields: Some(true),
                    ..Default::default()
                }),
            });
        }
        crds.replace(&name, &PostParams::default(), &open).await.unwrap();
        // The server switches to the new schema a moment after the CRD is written.
        let created = eventually(Duration::from_secs(20), || async {
            api.create(&PostParams::default(), &obj).await.ok()
        })
        .await;
        let mut current = crds.get(&name).await.unwrap();
        current.spec.versions = strict.spec.versions;
        crds.replace(&name, &PostParams::default(), &current).await.unwrap();
        assert!(created.is_some(), "{name}: not accepted even without a schema: {obj:?}");
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
        // `down` before its directory goes (on a panic it also prints what the authorizer refused).
        drop(self.kube.take());
        if std::thread::panicking() {
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if !entry.path().is_file() {
                    continue;
                }
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("----- {} (last 30 lines) -----", entry.path().display());
                for l in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{l}");
                }
            }
            // The agents' logs, and the real server's logs and audit log.
            eprintln!("logs kept in {}", self.dir.display());
            return;
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
/// The Service once Herald has taken it over: it records the Eip its IPs come from (`herald.dev/allocated-from`),
/// written after the status (a moment later on a busy real server). `None` after `timeout`.
pub async fn taken_over(c: &Cluster, ns: &str, name: &str, timeout: Duration) -> Option<Service> {
    eventually(timeout, || async {
        let svc = c.services(ns).get(name).await.ok()?;
        svc.metadata
            .annotations
            .as_ref()?
            .contains_key("herald.dev/allocated-from")
            .then_some(svc)
    })
    .await
}

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
