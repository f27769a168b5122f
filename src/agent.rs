//! `herald agent`: the DaemonSet process. Runs the allocator while it holds the `herald-allocator` Lease, and
//! serves metrics and health.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use herald_election::timing::ElectionTiming;
use herald_election::{Identity, KubeLeaseStore, LeaderLock, LeaderLockConfig, LeaderTiming, OutagePolicy};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::allocator::{self, AllocatorConfig};
use crate::announcer::{self, AnnouncerConfig};
use crate::duration::parse_duration;
use crate::metrics::{self, Metrics};
use crate::watch::SharedStores;

/// Arguments of `herald agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// This node's name (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Namespace of Herald's Leases (and BGP password Secrets).
    #[arg(long, env = "POD_NAMESPACE", default_value = "herald-system")]
    pub namespace: String,
    /// Distinguishes this process from an earlier one on the same node (the pod UID); random when unset.
    #[arg(long, env = "POD_UID")]
    pub instance_id: Option<String>,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:7472")]
    pub metrics_addr: SocketAddr,
    /// Also handle LoadBalancer Services that have no spec.loadBalancerClass (`--default-class=false` to only
    /// handle class herald.dev/lb).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub default_class: bool,
    /// Allocator Lease: how long others wait for an unrenewed lease before taking it (default: --takeover-after).
    #[arg(long, value_parser = parse_duration)]
    pub allocator_lease_duration: Option<Duration>,
    /// Allocator Lease: the leader steps down when it could not renew for this long (default: --renew-deadline).
    #[arg(long, value_parser = parse_duration)]
    pub allocator_renew_deadline: Option<Duration>,
    /// Allocator Lease: how often the leader renews and others retry (default: --node-renew-period).
    #[arg(long, value_parser = parse_duration)]
    pub allocator_retry_period: Option<Duration>,
    /// Layer 2 election: how often this node renews its liveness Lease (the only periodic API write).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub node_renew_period: Duration,
    /// Layer 2 election: a node whose liveness Lease was seen unchanged this long loses its IPs to others.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub takeover_after: Duration,
    /// Layer 2 election: a node that could not renew for this long counts as having had a liveness gap (and with
    /// `--api-outage=withdraw` stops answering). Must leave a margin below --takeover-after.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// Layer 2 election: delay between successive candidates for a free IP.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub stagger_step: Duration,
    /// What a holder does when the API server is unreachable: `hold` keeps answering (no outage; a partial
    /// partition is ended on the wire), `withdraw` stops after --renew-deadline.
    #[arg(long, value_enum, default_value = "hold")]
    pub api_outage: ApiOutage,
    /// Gratuitous ARP / unsolicited NA refresh while announcing (0 = off).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub l2_refresh: Duration,
    /// Delete IP Leases of IPs no Service uses and node Leases of removed Nodes once they have been so for this
    /// long (0 = never delete). At least --takeover-after.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub lease_gc_after: Duration,
    /// Do not run the announcer (allocation only).
    #[arg(long)]
    pub no_announcer: bool,
}

/// `--api-outage`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiOutage {
    /// Keep announcing while the API server is unreachable.
    Hold,
    /// Stop announcing --renew-deadline after the last successful renew.
    Withdraw,
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let election_timing = ElectionTiming {
        node_renew_period: args.node_renew_period,
        takeover_after: args.takeover_after,
        renew_deadline: args.renew_deadline,
        stagger_step: args.stagger_step,
    }
    .validate()
    .context("invalid election timing")?;
    herald_election::gc::validate_gc_after(args.lease_gc_after, args.takeover_after).map_err(anyhow::Error::msg)?;
    let instance = args.instance_id.clone().unwrap_or_else(Identity::random_instance_id);
    let identity = Identity::new(&args.node_name, &instance).context("invalid --node-name or --instance-id")?;
    let metrics = Metrics::new();
    let config = kube::Config::infer()
        .await
        .context("cannot build a Kubernetes client: run in a cluster, or set KUBECONFIG")?;
    // Every response's status goes to `metrics.credentials`: a rejected token shows on /readyz and in the log.
    let client = metrics
        .credentials
        .client(config)
        .context("cannot build a Kubernetes client")?;
    let cancel = CancellationToken::new();
    // Served from the start: /healthz answers (no restart loop) and /readyz says not ready while the API server is
    // unreachable or refuses this agent.
    let server = tokio::spawn(metrics::serve(args.metrics_addr, metrics.clone(), cancel.clone()));
    let version = tokio::select! {
        version = first_contact(&client) => version,
        _ = shutdown_signal() => {
            info!("stopping before the API server answered");
            cancel.cancel();
            let _ = server.await;
            return Ok(());
        }
    };
    info!(
        node = %args.node_name,
        instance,
        version = crate::VERSION,
        api = %version.git_version,
        "herald agent starting"
    );
    // Every Lease lives in this namespace; without it nothing can be elected, so say so instead of idling.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    match namespaces.get_opt(&args.namespace).await {
        Ok(Some(_)) => {}
        Ok(None) => anyhow::bail!(
            "namespace '{}' (--namespace / POD_NAMESPACE) does not exist: create it (deploy/herald.yaml does)",
            args.namespace
        ),
        Err(e) => warn!(namespace = %args.namespace, error = %e, "cannot check the Lease namespace; continuing"),
    }

    let shared = SharedStores::start(&client, &cancel);
    tokio::spawn(return_free_memory(cancel.clone()));

    // The allocator's lock is judged like a node lease (a crashed leader is replaced in about --takeover-after, as a
    // crashed Layer 2 holder is); each --allocator-* flag overrides one value.
    let follow = LeaderTiming::from(election_timing);
    let timing = LeaderTiming {
        lease_duration: args.allocator_lease_duration.unwrap_or(follow.lease_duration),
        renew_deadline: args.allocator_renew_deadline.unwrap_or(follow.renew_deadline),
        retry_period: args.allocator_retry_period.unwrap_or(follow.retry_period),
    };
    let store = KubeLeaseStore::new(client.clone(), &args.namespace, timing.renew_deadline / 2);
    let config = LeaderLockConfig {
        timing,
        ..LeaderLockConfig::allocator(identity.holder())
    };
    let mut lock = LeaderLock::spawn(store, config, &cancel.child_token())
        .context("invalid allocator lease timing (--allocator-*)")?;
    let alloc_config = AllocatorConfig {
        default_class: args.default_class,
        instance: identity.holder(),
        namespace: args.namespace.clone(),
        lease_gc_after: args.lease_gc_after,
    };
    let alloc_metrics = metrics.allocator.clone();
    let alloc_client = client.clone();
    let alloc_shared = shared.clone();
    let allocator = tokio::spawn(async move {
        lock.run_while_leader(|term| {
            let (client, config, metrics) = (alloc_client.clone(), alloc_config.clone(), alloc_metrics.clone());
            let shared = alloc_shared.clone();
            async move {
                metrics.leader.set(1);
                if let Err(e) = allocator::run(client, shared, config, metrics.clone(), term).await {
                    warn!(error = %e, "allocator stopped with an error");
                }
                metrics.leader.set(0);
            }
        })
        .await;
        if let Err(e) = lock.shutdown().await {
            warn!(error = %e, "allocator lease task failed");
        }
    });
    let announcer = (!args.no_announcer).then(|| {
        let config = AnnouncerConfig {
            identity: identity.clone(),
            namespace: args.namespace.clone(),
            default_class: args.default_class,
            timing: election_timing,
            outage: match args.api_outage {
                ApiOutage::Hold => OutagePolicy::Hold,
                ApiOutage::Withdraw => OutagePolicy::Withdraw,
            },
            l2: herald_l2::EngineConfig {
                announce: herald_l2::AnnounceConfig {
                    refresh: (!args.l2_refresh.is_zero()).then_some(args.l2_refresh),
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        let (started, ready) = tokio::sync::oneshot::channel();
        let readiness = metrics.clone();
        tokio::spawn(async move {
            // Ready once the announcer has listed everything it reads: until then this node answers for nothing.
            if ready.await.is_ok() {
                readiness.set_ready(true);
            }
        });
        let (client, cancel) = (client.clone(), cancel.clone());
        let (announcer_metrics, prober_metrics) = (metrics.announcer.clone(), metrics.prober.clone());
        let shared = shared.clone();
        tokio::spawn(announcer::run(
            client,
            shared,
            config,
            announcer_metrics,
            prober_metrics,
            started,
            cancel,
        ))
    });
    if announcer.is_none() {
        metrics.set_ready(true);
    }

    // The announcer ends on its own only when it cannot go on (its election task ended): then this agent is not
    // ready any more and exits with an error, to be restarted, instead of running on and answering for nothing.
    let mut announcer = announcer;
    let announcer_ended = async {
        match announcer.as_mut() {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let failed = tokio::select! {
        _ = shutdown_signal() => {
            info!("stopping: withdrawing, then releasing leases");
            None
        }
        _ = cancel.cancelled() => {
            info!("stopping: superseded by another agent process on this node");
            None
        }
        ended = announcer_ended => {
            announcer = None;
            match ended {
                // Superseded: the announcer stopped the agent itself.
                Ok(Ok(())) if cancel.is_cancelled() => None,
                Ok(Ok(())) => Some(anyhow::anyhow!("the announcer stopped on its own")),
                Ok(Err(e)) => Some(e),
                Err(e) => Some(anyhow::Error::new(e).context("the announcer task failed")),
            }
        }
    };
    metrics.set_ready(false);
    cancel.cancel();
    if let Some(a) = announcer {
        match a.await {
            Ok(Err(e)) => warn!(error = format!("{e:#}"), "announcer stopped with an error"),
            Err(e) => warn!(error = %e, "announcer task failed"),
            Ok(Ok(())) => {}
        }
    }
    let _ = allocator.await;
    let _ = server.await;
    if let Some(e) = failed {
        error!(error = format!("{e:#}"), "stopped: the agent cannot go on");
        return Err(e);
    }
    info!("stopped");
    Ok(())
}

/// The API server's version, asked until it answers: an agent whose API server is down, or refuses its credentials,
/// at start waits for it (not ready) instead of exiting into a restart loop. Backs off from 1 s to
/// [`FIRST_CONTACT_MAX_DELAY`].
async fn first_contact(client: &kube::Client) -> k8s_openapi::apimachinery::pkg::version::Info {
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1u32;
    loop {
        match client.apiserver_version().await {
            Ok(version) => {
                if attempt > 1 {
                    info!(attempts = attempt, "the API server answers");
                }
                return version;
            }
            Err(e) => warn!(
                error = %e,
                attempt,
                retry_in = ?delay,
                "the Kubernetes API server does not answer this agent yet (down, unreachable, or refusing its \
                 credentials); retrying"
            ),
        }
        tokio::time::sleep(delay).await;
        delay = next_first_contact_delay(delay);
        attempt += 1;
    }
}

/// The longest wait between two first-contact attempts. An agent started during an API outage (a node rebooted
/// while the control plane is down) starts at most this long after the API server is back. The chaos soak found
/// 30 s too long: an agent restarted in a 60 s outage missed the 14 s the API was up before the next one. A refused
/// connection costs the server nothing, and one GET every 5 s per node is little while it answers but refuses us.
pub const FIRST_CONTACT_MAX_DELAY: Duration = Duration::from_secs(5);

/// The wait after `delay`: doubled, at most [`FIRST_CONTACT_MAX_DELAY`].
fn next_first_contact_delay(delay: Duration) -> Duration {
    (delay * 2).min(FIRST_CONTACT_MAX_DELAY)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How often the agent gives malloc's free pages back to the kernel.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Now and then, returns the pages malloc holds free to the kernel ([`herald_sys::malloc::trim`]): the first list of
/// a large cluster and a burst of changes leave freed memory behind that would otherwise stay resident.
async fn return_free_memory(cancel: CancellationToken) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if tokio::task::spawn_blocking(herald_sys::malloc::trim).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_contact_backs_off_to_five_seconds() {
        let mut delay = Duration::from_secs(1);
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(delay.as_secs());
            delay = next_first_contact_delay(delay);
        }
        assert_eq!(waits, [1, 2, 4, 5, 5, 5]);
    }
}
