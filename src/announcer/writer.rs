//! The announcer's API writes, made by a task of their own from a bounded queue: the announcer's loop never waits for
//! the API server. A full queue drops the write (logged and counted); what is lost is a Service annotation or an
//! Event, never an announcement.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_api::names;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::state::Write;
use crate::adapter;
use crate::events::{Event, EventPublisher, EventType};

/// Writes waiting at most; more are dropped.
const QUEUE: usize = 4096;

/// The sending side. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Write>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writing task; it ends when `cancel` fires or every `Writer` is dropped.
    pub fn spawn(client: Client, events: EventPublisher, node: String, cancel: CancellationToken) -> Self {
        let (queue, mut pending) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            loop {
                let write = tokio::select! {
                    _ = cancel.cancelled() => break,
                    next = pending.recv() => match next {
                        Some(w) => w,
                        None => break,
                    },
                };
                execute(&client, &events, &node, write).await;
            }
        });
        Self {
            queue,
            dropped: Arc::default(),
        }
    }

    /// Queues `write` without waiting.
    pub fn send(&self, write: Write) {
        if let Err(e) = self.queue.try_send(write) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Said for the first and then every 1000th: a stalled API server must not flood the log as well.
            if dropped == 1 || dropped.is_multiple_of(1000) {
                warn!(dropped, write = ?e.into_inner(), "the API writer is behind: dropping Service annotations and Events");
            }
        }
    }
}

async fn execute(client: &Client, events: &EventPublisher, node: &str, write: Write) {
    match write {
        Write::Announcing { service, ip, interface } => {
            let api: Api<Service> = Api::namespaced(client.clone(), &service.namespace);
            match record_announcer(&api, &service.name, ip, node).await {
                Ok(obj) => {
                    let event = Event {
                        type_: EventType::Normal,
                        reason: "Announcing".into(),
                        note: Some(format!("node {node} answers ARP/NDP for {ip} on {interface} (layer2)")),
                        action: "Announce".into(),
                        secondary: None,
                    };
                    events.publish(event, obj.object_ref(&()));
                }
                Err(e) => warn!(%service, error = %e, "cannot record the announcing node"),
            }
        }
        Write::Conflict { service, note } => {
            let api: Api<Service> = Api::namespaced(client.clone(), &service.namespace);
            match api.get(&service.name).await {
                Ok(obj) => {
                    let event = Event {
                        type_: EventType::Warning,
                        reason: "AddressConflict".into(),
                        note: Some(note),
                        action: "Probe".into(),
                        secondary: None,
                    };
                    events.publish(event, obj.object_ref(&()));
                }
                Err(e) => info!(%service, error = %e, "cannot record the address conflict on the Service"),
            }
        }
    }
}

/// Sets `ip=node` in the Service's `herald.dev/announced-by` annotation (`ip=node,ip=node`, one entry per Service
/// IP), keeping the entries other nodes wrote for its other IPs. A compare-and-swap on the resourceVersion, retried on
/// conflict, so two nodes recording different IPs of one dual-stack Service never lose each other's entry.
async fn record_announcer(api: &Api<Service>, name: &str, ip: IpAddr, node: &str) -> Result<Service, kube::Error> {
    let mut attempt = 0;
    loop {
        let svc = api.get(name).await?;
        let current_ips = adapter::status_ips(&svc);
        let existing = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::ANNOTATION_ANNOUNCED_BY));
        let value = adapter::announced_by(existing.map(String::as_str), &current_ips, ip, node);
        if existing == Some(&value) {
            return Ok(svc);
        }
        let patch = json!({"metadata": {
            "resourceVersion": svc.metadata.resource_version,
            "annotations": {names::ANNOTATION_ANNOUNCED_BY: value},
        }});
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => attempt += 1,
            other => return other,
        }
    }
}
