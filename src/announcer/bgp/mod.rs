//! BGP mode: this node opens sessions to the `BgpPeer`s whose node selector matches it and announces every BGP-mode
//! Service IP it is eligible for, with itself as next hop; routers spread traffic over all announcing nodes (ECMP).
//!
//! [`plan`] is pure: cluster objects in, the speaker's identity, peers and routes out. [`BgpAnnouncer`] applies
//! plans as diffs: an unchanged peer keeps its session, a changed peer restarts only its own session, routes change
//! by UPDATE. Only a new node ASN or router id restarts the speaker (a BgpPeer's own `localAsn` restarts only its
//! session).

mod plan;
mod status;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;

use herald_api::BgpPeer;
use herald_api::decode::Lenient;
use herald_bgp::{PeerConfig, ShutdownMode, Speaker, SpeakerConfig};
use tracing::{info, warn};

pub use plan::{BgpPlan, BgpView, Problem, Unreadables, Verdict, plan};
use status::{BgpReporter, Judged, ReportInput, SessionEntry, write_session};
#[cfg(test)]
use status::{Retry, listening_condition};

use crate::events::EventPublisher;

/// Applies plans to a speaker.
#[derive(Default)]
pub struct BgpAnnouncer {
    speaker: Option<(SpeakerConfig, Speaker)>,
    problems: Vec<String>,
    /// Some peer negotiates graceful restart: stop without Cease so routers keep the routes across a restart.
    graceful: bool,
    /// `BgpPeer` name per peer address, from the last plan.
    names: BTreeMap<IpAddr, String>,
    /// The passive peers of the last plan.
    passive: std::collections::BTreeSet<IpAddr>,
    /// Why each peer was last refused (or runs without its passive side), so a refusal is logged once, not on every
    /// wake.
    refused: BTreeMap<IpAddr, String>,
    /// Passive peers that could not listen and run connecting out only, by the configuration that failed: that
    /// configuration is not tried again (which would restart the running session on every wake) until it changes.
    active_only: BTreeMap<IpAddr, PeerConfig>,
    /// The last plan's verdicts on the BGP objects, for the `Ready` conditions.
    verdicts: BTreeMap<Judged, Verdict>,
    /// What the status reporter writes from, when one runs ([`BgpAnnouncer::spawn_reporter`]).
    report: Option<tokio::sync::watch::Sender<ReportInput>>,
}

impl BgpAnnouncer {
    /// Brings the speaker in line with `plan`, and hands the reporter the outcome (whether or not BGP mode runs: the
    /// verdicts on the objects are written either way).
    pub async fn apply(&mut self, plan: BgpPlan) {
        self.apply_plan(plan).await;
        self.publish();
    }

    async fn apply_plan(&mut self, plan: BgpPlan) {
        self.graceful = plan.peers.values().any(|p| p.graceful_restart.is_some());
        self.names = plan.names.clone();
        self.passive = plan.peers.values().filter(|p| p.passive).map(|p| p.address).collect();
        let verdicts: BTreeMap<Judged, Verdict> = plan
            .conf_verdict
            .iter()
            .map(|v| (Judged::Conf, v.clone()))
            .chain(plan.verdicts.iter().map(|(n, v)| (Judged::Peer(n.clone()), v.clone())))
            .collect();
        for (object, verdict) in &verdicts {
            if let Some(problem) = verdict
                && self.verdicts.get(object) != Some(verdict)
            {
                warn!(object = %object, reason = problem.reason, "{}", problem.message);
            }
        }
        self.verdicts = verdicts;
        if plan.problems != self.problems {
            for p in &plan.problems {
                warn!("{p}");
            }
            self.problems = plan.problems.clone();
        }
        let Some(config) = plan.speaker else {
            if let Some((_, speaker)) = self.speaker.take() {
                info!("BGP mode no longer configured for this node: withdrawing and closing sessions");
                speaker.shutdown(ShutdownMode::Withdraw).await;
            }
            return;
        };
        if self.speaker.as_ref().is_some_and(|(c, _)| *c != config)
            && let Some((_, old)) = self.speaker.take()
        {
            info!(asn = config.local_asn, router_id = %config.router_id, "BGP identity changed: restarting the speaker");
            old.shutdown(ShutdownMode::Withdraw).await;
        }
        let (_, speaker) = self.speaker.get_or_insert_with(|| {
            info!(asn = config.local_asn, router_id = %config.router_id, "starting the BGP speaker");
            (config.clone(), Speaker::new(config))
        });
        let current: Vec<IpAddr> = speaker.peers().iter().map(|p| p.address).collect();
        for address in current.into_iter().filter(|a| !plan.peers.contains_key(a)) {
            if let Err(e) = speaker.remove_peer(address).await {
                warn!(peer = %address, error = %e, "cannot remove BGP peer");
            }
        }
        let mut refused = BTreeMap::new();
        let mut active_only = BTreeMap::new();
        for peer in plan.peers.into_values() {
            let address = peer.address;
            let active = PeerConfig {
                passive: false,
                ..peer.clone()
            };
            let error = if self.active_only.get(&address) == Some(&peer) {
                // Still the configuration that could not listen: keep its session (connecting out) as it is.
                active_only.insert(address, peer);
                match speaker.set_peer(active).await {
                    Ok(()) => self.refused.get(&address).cloned().unwrap_or_default(),
                    Err(e) => e.to_string(),
                }
            } else {
                match speaker.set_peer(peer.clone()).await {
                    Ok(()) => continue,
                    // Passive means "also accept": without a listening socket the session still connects out.
                    Err(e @ (herald_bgp::Error::Listen { .. } | herald_bgp::Error::ListenConflict { .. })) => {
                        active_only.insert(address, peer);
                        match speaker.set_peer(active).await {
                            Ok(()) => format!("{e}; connecting out only{}", listen_advice(&e)),
                            Err(e) => e.to_string(),
                        }
                    }
                    // Without BFD the session still works, detecting failures by its hold time; each pass tries
                    // BFD again (no BGP reset: only BFD differs).
                    Err(e @ herald_bgp::Error::Bfd { .. }) => {
                        let without = PeerConfig { bfd: None, ..peer };
                        match speaker.set_peer(without).await {
                            Ok(()) => format!("{e}; running without BFD"),
                            Err(e) => e.to_string(),
                        }
                    }
                    Err(e) => e.to_string(),
                }
            };
            if self.refused.get(&address) != Some(&error) {
                warn!(peer = %address, error, "BGP peer refused");
            }
            refused.insert(address, error);
        }
        self.refused = refused;
        self.active_only = active_only;
        let routes = plan.routes.len();
        if speaker.set_routes(plan.routes) {
            info!(routes, "BGP routes changed");
        }
    }

    /// Hands the reporter what it writes from.
    fn publish(&self) {
        if let Some(report) = &self.report {
            report.send_replace(ReportInput {
                verdicts: self.verdicts.clone(),
                names: self.names.clone(),
                refused: self.refused.clone(),
                passive: self.passive.clone(),
                peers: self.peer_watches(),
            });
        }
    }

    /// Starts the task that writes this node's BGP status (sessions into `BgpPeer` status, `Ready` conditions) from
    /// every plan applied from now on, and from the sessions' changes (looked at every `every`), until `stop` fires.
    pub fn spawn_reporter(
        &mut self,
        client: kube::Client,
        events: EventPublisher,
        node: String,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = tokio::sync::watch::channel(ReportInput::default());
        self.report = Some(tx);
        self.publish();
        tokio::spawn(async move {
            let mut reporter = BgpReporter::default();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                    changed = rx.changed() => if changed.is_err() { break },
                }
                let input = rx.borrow_and_update().clone();
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = reporter.report(&input, &client, &events, &node) => {}
                }
            }
        })
    }

    /// The IPs whose routes this node offers its peers (for the metrics).
    pub fn announced_ips(&self) -> Vec<IpAddr> {
        let Some((_, speaker)) = &self.speaker else {
            return Vec::new();
        };
        speaker.prefixes().into_iter().map(|net| net.addr()).collect()
    }

    /// A receiver of every configured peer's live status (for the metrics; empty without a speaker).
    pub fn peer_watches(&self) -> Vec<tokio::sync::watch::Receiver<herald_bgp::PeerStatus>> {
        let Some((_, speaker)) = &self.speaker else {
            return Vec::new();
        };
        speaker
            .peers()
            .iter()
            .filter_map(|p| speaker.watch_peer(p.address))
            .collect()
    }

    /// Stops the speaker. With graceful restart negotiated, routers keep the routes for the restart time (an agent
    /// upgrade loses no traffic); otherwise the sessions close with Cease and routers withdraw at once.
    pub async fn shutdown(self, client: &kube::Client, node: &str) {
        if let Some((_, speaker)) = self.speaker {
            let api: kube::Api<Lenient<BgpPeer>> = kube::Api::all(client.clone());
            let stopped = SessionEntry {
                state: "Idle".into(),
                error: Some("agent stopped".into()),
                listening: None,
                bfd: None,
            };
            for name in self.names.values() {
                if let Err(e) = write_session(&api, name, node, &stopped).await {
                    warn!(peer = name, error = %e, "cannot write BgpPeer status");
                }
            }
            let mode = if self.graceful {
                ShutdownMode::GracefulRestart
            } else {
                ShutdownMode::Withdraw
            };
            info!(?mode, "stopping the BGP speaker");
            speaker.shutdown(mode).await;
        }
    }
}

/// Why a passive peer cannot listen, said in Herald's terms: what to change in the chart or the BgpConf.
fn listen_advice(e: &herald_bgp::Error) -> &'static str {
    match e {
        herald_bgp::Error::Listen { local, source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied && local.port() < 1024 =>
        {
            " (Helm chart: --set bgp.passive=true adds NET_BIND_SERVICE; or set spec.listenPort of BgpConf default to \
             1024 or more and let the router connect there)"
        }
        _ => "",
    }
}
