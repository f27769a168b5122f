//! `lab-apiserver`: an in-memory Kubernetes API server for the subset of the API that Herald (kube-rs) and
//! `kubectl` use, with the real server's semantics (see `docs/lab-apiserver.md`).
//!
//! Start one per test on a free loopback port:
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_lab_apiserver::Error> {
//! let server = herald_lab_apiserver::start(herald_lab_apiserver::Config::default()).await?;
//! let client = server.client()?; // a kube::Client pointing at it
//! # let _ = client;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod discovery;
mod http;
mod metrics;
mod patch;
mod persist;
mod protobuf;
mod registry;
mod selector;
mod status;
mod store;
mod strategy;
mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use metrics::MetricsSnapshot;

/// Errors starting or talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read state file {path}: {source}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not a lab-apiserver state ({reason}); move it away to start empty")]
    StateFormat { path: PathBuf, reason: String },
    #[error("cannot write kubeconfig {path}: {source}")]
    WriteKubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build a kube client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Keep objects here across restarts (written atomically, shortly after changes, and at shutdown).
    pub state_file: Option<PathBuf>,
    /// Watch events kept for resuming watches; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// Events buffered per watcher; a watcher further behind has its watch closed (it resumes).
    pub watch_buffer: usize,
    /// Watch duration when the client sends no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Interval of BOOKMARK events on quiet watches that allow them.
    pub bookmark_interval: Duration,
    /// Delay between a change and the state file write that includes it (changes in between are batched).
    pub state_write_delay: Duration,
    /// Least time between two state file writes while changes continue (each write serializes the whole store).
    pub state_write_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_file: None,
            watch_history: 10_000,
            watch_buffer: 4096,
            default_watch_timeout: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(60),
            state_write_delay: Duration::from_millis(100),
            state_write_interval: Duration::from_secs(5),
        }
    }
}

/// A running server. Dropping it stops the server; `shutdown` also waits for the last state file write.
pub struct Running {
    addr: SocketAddr,
    state: Arc<http::AppState>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    persister: Option<JoinHandle<()>>,
}

/// Starts a server: binds, loads the state file if there is one, and serves until shut down or dropped.
pub async fn start(config: Config) -> Result<Running> {
    let now = jiff::Timestamp::now();
    let store = match &config.state_file {
        Some(path) => persist::load(path, &config, now)?,
        None => store::Store::new(config.watch_history, config.watch_buffer, now),
    };
    let listener = TcpListener::bind(config.listen).await.map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let shutdown = CancellationToken::new();
    let changed = store.changed();
    let state = Arc::new(http::AppState {
        store: Mutex::new(store),
        metrics: Arc::default(),
        shutdown: shutdown.clone(),
        server_address: addr.to_string(),
        default_watch_timeout: config.default_watch_timeout,
        bookmark_interval: config.bookmark_interval,
    });
    let persister = config.state_file.clone().map(|path| {
        tokio::spawn(persist::run(
            state.clone(),
            changed,
            path,
            config.state_write_delay,
            config.state_write_interval,
            shutdown.clone(),
        ))
    });
    let app = http::router(state.clone());
    let token = shutdown.clone();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await });
        if let Err(error) = serve.await {
            tracing::error!(%error, "lab-apiserver stopped serving");
        }
    });
    tracing::info!(%addr, "lab-apiserver listening");
    Ok(Running {
        addr,
        state,
        shutdown,
        server: Some(server),
        persister,
    })
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (context `lab`, namespace `default`, no credentials) for kubectl and `Client::try_default`.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.base_url())
    }

    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| Error::WriteKubeconfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A `kube::Config` for this server (default namespace `default`), without a kubeconfig file.
    pub fn kube_config(&self) -> kube::Config {
        // The URL is built from a socket address, so it always parses.
        let url = self
            .base_url()
            .parse()
            .unwrap_or_else(|_| unreachable!("socket address URL"));
        kube::Config::new(url)
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.kube_config()).map_err(|source| Error::Client {
            url: self.base_url(),
            source,
        })
    }

    /// Request counters and open watches so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.state.metrics.snapshot()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resource_version()
    }

    /// Stops serving (open watches end), writes the state file a last time and waits for both.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(5), server).await.is_err()
        {
            tracing::warn!("lab-apiserver connections did not close within 5s");
        }
        if let Some(persister) = self.persister.take() {
            let _ = persister.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A kubeconfig for a server at `url`.
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: {url}
contexts:
- name: lab
  context:
    cluster: lab
    user: lab
    namespace: default
current-context: lab
users:
- name: lab
  user: {{}}
"
    )
}
