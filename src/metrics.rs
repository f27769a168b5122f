//! Prometheus metrics and the health endpoints (`/metrics`, `/healthz`, `/readyz`) of `herald agent`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Labels of write counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: `service_status`, `service_annotation`, `eip_status`, `event`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels naming an Eip.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EipLabels {
    /// The Eip.
    pub eip: String,
}

/// The allocator controller's metrics.
#[derive(Default)]
pub struct AllocatorMetrics {
    /// 1 while this agent holds the allocator Lease.
    pub leader: Gauge,
    /// Reconcile passes run.
    pub passes: Counter,
    /// API writes made, by kind and result.
    pub writes: Family<WriteLabels, Counter>,
    /// Services holding addresses.
    pub services_allocated: Gauge,
    /// Addresses in use per Eip.
    pub eip_used: Family<EipLabels, Gauge>,
}

/// Everything `/metrics` shows, and the readiness flag.
pub struct Metrics {
    registry: Registry,
    /// Allocator metrics.
    pub allocator: Arc<AllocatorMetrics>,
    ready: AtomicBool,
}

impl Metrics {
    /// A registry with every Herald metric registered under the `herald_` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("herald");
        let allocator = Arc::new(AllocatorMetrics::default());
        let a = registry.sub_registry_with_prefix("allocator");
        a.register("leader", "1 while this agent holds the allocator Lease", allocator.leader.clone());
        a.register("passes", "Reconcile passes", allocator.passes.clone());
        a.register("writes", "API writes by kind and result", allocator.writes.clone());
        a.register("services_allocated", "Services holding addresses", allocator.services_allocated.clone());
        a.register("eip_used_addresses", "Addresses in use per Eip", allocator.eip_used.clone());
        Arc::new(Self { registry, allocator, ready: AtomicBool::new(false) })
    }

    /// Marks the agent ready (`/readyz` answers 200).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The registry, for components that register their own metrics before the server starts.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.encode() {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `cancel` fires.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, cancel: CancellationToken) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-addr {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await?;
    Ok(())
}
