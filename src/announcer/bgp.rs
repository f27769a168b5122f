//! BGP mode: this node opens sessions to the `BgpPeer`s whose node selector matches it and announces every BGP-mode
//! Service IP it is eligible for, with itself as next hop; routers spread traffic over all announcing nodes (ECMP).
//!
//! [`plan`] is pure: cluster objects in, the speaker's identity, peers and routes out. [`BgpAnnouncer`] applies
//! plans as diffs: an unchanged peer keeps its session, a changed peer restarts only its own session, routes change
//! by UPDATE. Only a new node ASN or router id restarts the speaker (a BgpPeer's own `localAsn` restarts only its
//! session).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::events::{Event, EventPublisher, EventType};
use herald_api::bgp::AddressFamily;
use herald_api::decode::Lenient;
use herald_api::decode::Unreadable;
use herald_api::text;
use herald_api::{BgpConf, BgpPeer, Eip, Protocol};
use herald_bgp::fsm::GracefulRestart;
use herald_bgp::packet::Afi;
use herald_bgp::rib::{RouteTable, parse_community, parse_large_community};
use herald_bgp::{PeerConfig, RoutePolicy, ShutdownMode, Speaker, SpeakerConfig};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::desired::Announcement;
use crate::adapter as convert;

/// What BGP mode needs from the cluster.
pub struct BgpView<'a> {
    /// This node's name.
    pub node: &'a str,
    /// This node's Node object (labels for selectors, InternalIP for the router id).
    pub node_object: Option<&'a Node>,
    /// `BgpConf` objects (only `default` counts).
    pub confs: &'a [Arc<BgpConf>],
    /// Every `BgpPeer`.
    pub peers: &'a [Arc<BgpPeer>],
    /// Secrets in the agent's namespace (BGP passwords).
    pub secrets: &'a [Arc<Secret>],
    /// Every Eip (route attributes).
    pub eips: &'a [Arc<Eip>],
    /// Every IP to announce, from [`super::desired::desired`].
    pub announcements: &'a BTreeMap<IpAddr, Announcement>,
    /// `BgpConf`s, `BgpPeer`s and Secrets that could not be read.
    pub unreadable: Unreadables<'a>,
}

/// The BGP objects that could not be read.
#[derive(Default, Clone, Copy)]
pub struct Unreadables<'a> {
    /// `BgpConf`s.
    pub confs: &'a [Unreadable],
    /// `BgpPeer`s.
    pub peers: &'a [Unreadable],
    /// Secrets in the agent's namespace.
    pub secrets: &'a [Unreadable],
}

/// What the speaker should be doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BgpPlan {
    /// `None`: BGP mode is not configured for this node (no usable `BgpConf` named `default`, or no usable peer).
    pub speaker: Option<SpeakerConfig>,
    /// Peers by address.
    pub peers: BTreeMap<IpAddr, PeerConfig>,
    /// Host routes for the BGP-mode IPs this node is eligible for.
    pub routes: RouteTable,
    /// Problems of this node a user must fix (no router id), one line each.
    pub problems: Vec<String>,
    /// The `BgpPeer` object behind each peer address (for its status).
    pub names: BTreeMap<IpAddr, String>,
    /// Each `BgpPeer` this node peers with, or cannot tell whether it should: what is wrong with it (`None`:
    /// nothing). Depends on the object and the Secrets only, so every node that judges a peer judges it alike.
    pub verdicts: BTreeMap<String, Verdict>,
    /// The same for the `BgpConf` named `default`, when there is one.
    pub conf_verdict: Option<Verdict>,
}

/// What is wrong with an object: `None` when nothing is.
pub type Verdict = Option<Problem>;

/// Why an object cannot be used, for its `Ready` condition and a Warning Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason: `Unreadable`, `InvalidSpec`, `SecretNotFound`.
    pub reason: &'static str,
    /// What is wrong and what to change.
    pub message: String,
}

impl Problem {
    fn invalid(message: String) -> Self {
        Problem {
            reason: "InvalidSpec",
            message,
        }
    }
}

/// Does `selector` select `node`? An unreadable selector is an error naming the field.
fn selects(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    node: Option<&Node>,
    field: &str,
) -> Result<bool, Problem> {
    let Some(selector) = selector else { return Ok(true) };
    let labels = node.map(|n| n.labels().clone()).unwrap_or_default();
    convert::label_selector(selector)
        .map(|s| s.matches(&labels))
        .map_err(|e| Problem::invalid(format!("{field}: {e}")))
}

fn node_ipv4(node: Option<&Node>) -> Option<Ipv4Addr> {
    let addresses = node?.status.as_ref()?.addresses.as_ref()?;
    addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// RFC 7607: AS 0 names no AS and must not be configured or sent; RFC 6793 §2: AS_TRANS (23456) only stands in for
/// a 4-octet AS towards an old speaker, it is nobody's AS.
fn check_asn(field: &str, asn: u32) -> Result<(), Problem> {
    match asn {
        0 => Err(Problem::invalid(format!(
            "{field} 0 is reserved (RFC 7607) and cannot be used in a session: give the AS number"
        ))),
        23456 => Err(Problem::invalid(format!(
            "{field} 23456 is AS_TRANS (RFC 6793), a placeholder, not an AS: give the real 4-octet AS number"
        ))),
        _ => Ok(()),
    }
}

/// The node's BGP identity from `BgpConf` `default`, or why there is none.
fn speaker_config(conf: &BgpConf, view: &BgpView<'_>) -> Result<Result<SpeakerConfig, String>, Problem> {
    let spec = &conf.spec;
    check_asn("spec.asn", spec.asn)?;
    let mut rack = None;
    for (i, o) in spec.overrides.iter().enumerate() {
        let field = format!("spec.overrides[{i}]");
        if let Some(asn) = o.asn {
            check_asn(&format!("{field}.asn"), asn)?;
        }
        if let Some(r) = &o.router_id {
            r.parse::<Ipv4Addr>().map_err(|_| {
                Problem::invalid(format!("{field}.routerId '{}' is not an IPv4 address", text::quote(r)))
            })?;
        }
        if rack.is_none()
            && selects(
                Some(&o.node_selector),
                view.node_object,
                &format!("{field}.nodeSelector"),
            )?
        {
            rack = Some(o);
        }
    }
    let conf_router_id = match &spec.router_id {
        Some(r) => Some(
            r.parse::<Ipv4Addr>()
                .map_err(|_| Problem::invalid(format!("spec.routerId '{}' is not an IPv4 address", text::quote(r))))?,
        ),
        None => None,
    };
    let asn = rack.and_then(|o| o.asn).unwrap_or(spec.asn);
    let router_id = rack
        .and_then(|o| o.router_id.as_deref())
        .and_then(|r| r.parse().ok())
        .or(conf_router_id)
        .or_else(|| node_ipv4(view.node_object));
    Ok(match router_id {
        Some(router_id) => Ok(SpeakerConfig {
            local_asn: asn,
            router_id,
        }),
        None => Err(format!(
            "node {}: no BGP router id: set BgpConf.spec.routerId (or an override), or give the Node an IPv4 InternalIP",
            view.node
        )),
    })
}

/// The session to open for `peer`, `None` when this node does not peer with it, or what is wrong with it.
fn peer_config(
    peer: &BgpPeer,
    view: &BgpView<'_>,
    graceful: Option<&herald_api::bgp::GracefulRestart>,
    listen_port: Option<u16>,
) -> Result<Option<PeerConfig>, Problem> {
    let p = &peer.spec;
    if !selects(p.node_selector.as_ref(), view.node_object, "spec.nodeSelector")? {
        return Ok(None);
    }
    let address = p
        .address
        .parse::<IpAddr>()
        .ok()
        .filter(|a| !a.is_unspecified() && !a.is_multicast())
        .ok_or_else(|| {
            Problem::invalid(format!(
                "spec.address '{}' is not a router's IP address",
                text::quote(&p.address)
            ))
        })?;
    check_asn("spec.asn", p.asn)?;
    if let Some(local) = p.local_asn {
        check_asn("spec.localAsn", local)?;
    }
    let mut config = PeerConfig::new(address, p.asn);
    config.port = p.port;
    // Per-session local AS (OPEN, iBGP/eBGP, AS_PATH of this session only); the BgpConf's ASN otherwise.
    config.local_asn = p.local_asn;
    // Passive peers also get their connections accepted, on the BgpConf's listen port (179 by default) of the
    // session's source address (or any).
    config.passive = p.passive;
    if let Some(port) = listen_port.filter(|p| *p != 0) {
        config.listen_port = port;
    }
    config.families = families(&p.families);
    if config.families.is_empty() {
        return Err(Problem::invalid(
            "spec.families is empty, so there is nothing to announce; not connecting (list ipv4, ipv6 or both)".into(),
        ));
    }
    if let Some(h) = p.hold_time {
        config.hold_time = u16::try_from(h)
            .map_err(|_| Problem::invalid(format!("spec.holdTime {h} is above 65535 seconds (RFC 4271 §4.2)")))?;
    }
    config.ttl = p.ebgp_multihop;
    if let Some(source) = &p.source_address {
        config.local_address = Some(source.parse().map_err(|_| {
            Problem::invalid(format!(
                "spec.sourceAddress '{}' is not an IP address",
                text::quote(source)
            ))
        })?);
    }
    if p.graceful_restart.unwrap_or(graceful.is_some()) {
        config.graceful_restart = Some(GracefulRestart {
            restart_time: graceful.map_or(120, |g| g.restart_time),
            restarting: false,
        });
    }
    if let Some(secret_ref) = &p.password_secret_ref {
        config.password = Some(password(secret_ref, view)?);
    }
    config.validate().map_err(|e| Problem::invalid(e.to_string()))?;
    Ok(Some(config))
}

/// The TCP MD5 password a `passwordSecretRef` names.
fn password(secret_ref: &herald_api::bgp::SecretKeyRef, view: &BgpView<'_>) -> Result<Vec<u8>, Problem> {
    let (name, key) = (text::quote(&secret_ref.name), text::quote(&secret_ref.key));
    if let Some(u) = view
        .unreadable
        .secrets
        .iter()
        .find(|u| u.metadata.name.as_deref() == Some(secret_ref.name.as_str()))
    {
        return Err(Problem {
            reason: "SecretUnreadable",
            message: format!("Secret '{name}' cannot be read ({}); not connecting", u.reason),
        });
    }
    let Some(secret) = view.secrets.iter().find(|s| s.name_any() == secret_ref.name) else {
        return Err(Problem {
            reason: "SecretNotFound",
            message: format!(
                "Secret '{name}' (spec.passwordSecretRef) is not in the agent's namespace; not connecting until it is"
            ),
        });
    };
    match secret.data.as_ref().and_then(|d| d.get(&secret_ref.key)) {
        Some(bytes) => Ok(bytes.0.clone()),
        None => Err(Problem {
            reason: "SecretNotFound",
            message: format!("Secret '{name}' has no key '{key}' (spec.passwordSecretRef.key); not connecting"),
        }),
    }
}

/// Computes the plan for this node.
pub fn plan(view: &BgpView<'_>) -> BgpPlan {
    let mut out = BgpPlan::default();
    let conf = view.confs.iter().find(|c| c.name_any() == "default");
    let unreadable_conf = view
        .unreadable
        .confs
        .iter()
        .find(|u| u.metadata.name.as_deref() == Some("default"));
    // An unreadable BgpConf stops BGP mode, even where the store still has a version that could be read: which
    // settings the user meant is unknown.
    // Peers are judged (and their conditions written) even while BGP mode is not configured.
    let speaker = match (unreadable_conf, conf) {
        (Some(u), _) => Some(Err(Problem {
            reason: "Unreadable",
            message: format!("cannot be read: {}; BGP mode is off until it is fixed", u.reason),
        })),
        (None, Some(conf)) => Some(speaker_config(conf, view)),
        (None, None) => None,
    };
    out.conf_verdict = speaker.as_ref().map(|s| s.as_ref().err().cloned());
    let gr = conf
        .and_then(|c| c.spec.graceful_restart.as_ref())
        .filter(|g| g.enabled);
    let listen_port = conf.and_then(|c| c.spec.listen_port);
    for u in view.unreadable.peers {
        let Some(name) = &u.metadata.name else { continue };
        let message = format!("cannot be read: {}; no node peers with it until it is fixed", u.reason);
        out.verdicts.insert(
            name.clone(),
            Some(Problem {
                reason: "Unreadable",
                message,
            }),
        );
    }
    for peer in view.peers {
        let name = peer.name_any();
        if out.verdicts.contains_key(&name) {
            continue;
        }
        match peer_config(peer, view, gr, listen_port) {
            Ok(None) => {}
            Ok(Some(config)) => {
                out.verdicts.insert(name.clone(), None);
                out.names.insert(config.address, name);
                out.peers.insert(config.address, config);
            }
            Err(problem) => {
                out.verdicts.insert(name, Some(problem));
            }
        }
    }
    let config = match speaker {
        Some(Ok(Ok(config))) => config,
        not_configured => {
            if let Some(Ok(Err(node_problem))) = not_configured {
                out.problems.push(node_problem);
            }
            out.peers.clear();
            out.names.clear();
            return out;
        }
    };
    if out.peers.is_empty() {
        return out;
    }
    out.speaker = Some(config);
    let eips: BTreeMap<String, &Arc<Eip>> = view.eips.iter().map(|e| (e.name_any(), e)).collect();
    for (ip, a) in view.announcements {
        if a.protocol != Protocol::Bgp || !a.eligible_nodes.contains(view.node) {
            continue;
        }
        let policy = eips
            .get(&a.eip)
            .and_then(|e| e.spec.bgp.as_ref())
            .map(route_policy)
            .unwrap_or_default();
        out.routes.insert(IpNet::from(*ip), policy);
    }
    out
}

/// A BgpPeer's families as the speaker's, in a fixed order and without duplicates.
fn families(families: &[AddressFamily]) -> Vec<Afi> {
    [(AddressFamily::Ipv4, Afi::IPV4), (AddressFamily::Ipv6, Afi::IPV6)]
        .into_iter()
        .filter(|(f, _)| families.contains(f))
        .map(|(_, afi)| afi)
        .collect()
}

/// An Eip's `spec.bgp` as route attributes. The CRD's patterns keep malformed values out; any that get through are
/// skipped (the same parsers as `herald announce bgp`).
fn route_policy(bgp: &herald_api::eip::EipBgp) -> RoutePolicy {
    RoutePolicy {
        communities: bgp.communities.iter().filter_map(|c| parse_community(c).ok()).collect(),
        large_communities: bgp
            .large_communities
            .iter()
            .filter_map(|c| parse_large_community(c).ok())
            .collect(),
        ..Default::default()
    }
}

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

/// What the status reporter writes from: a snapshot of the last plan's outcome, and the sessions' live status.
#[derive(Clone, Default)]
pub struct ReportInput {
    verdicts: BTreeMap<Judged, Verdict>,
    names: BTreeMap<IpAddr, String>,
    refused: BTreeMap<IpAddr, String>,
    passive: std::collections::BTreeSet<IpAddr>,
    peers: Vec<tokio::sync::watch::Receiver<herald_bgp::PeerStatus>>,
}

/// Writes BGP status to the API from [`ReportInput`]s, as a task of its own: the announcer's loop never waits for it.
#[derive(Default)]
struct BgpReporter {
    /// The session entry last written to each `BgpPeer`'s status.
    reported: BTreeMap<IpAddr, SessionEntry>,
    /// The verdicts written into the objects' `Ready` conditions (or found there already).
    written: BTreeMap<Judged, Verdict>,
    /// Status writes that failed wait for their next try here.
    retry: Retry,
}

impl BgpReporter {
    /// Writes this node's session entry into each `BgpPeer`'s status when its state changed since the last write
    /// (never periodically). Other nodes' entries are kept: each write is a compare-and-swap on the resourceVersion.
    /// Also writes each judged object's `Ready` condition when the plan's verdict on it changed, with a Warning
    /// Event when it turned into a problem.
    async fn report(&mut self, input: &ReportInput, client: &kube::Client, events: &EventPublisher, node: &str) {
        self.written.retain(|o, _| input.verdicts.contains_key(o));
        let now = tokio::time::Instant::now();
        for (object, verdict) in &input.verdicts {
            if self.written.get(object) == Some(verdict) || !self.retry.due(&object.to_string(), now) {
                continue;
            }
            let written = match object {
                Judged::Conf => write_ready::<BgpConf>(client, events, "default", verdict).await,
                Judged::Peer(name) => write_ready::<BgpPeer>(client, events, name, verdict).await,
            };
            self.retry.record(object.to_string(), now, &written);
            match written {
                Ok(()) => {
                    self.written.insert(object.clone(), verdict.clone());
                }
                Err(e) => warn!(object = %object, error = %e, "cannot write the Ready condition"),
            }
        }
        for status in input.peers.iter().map(|p| p.borrow().clone()) {
            // A passive peer that cannot listen runs connecting out: its session may be up, but the status must say
            // that the router cannot connect to this node.
            let error = match (input.refused.get(&status.address), &status.last_error) {
                (Some(refused), Some(session)) => Some(format!("{refused}; session: {session}")),
                (refused, session) => refused.or(session.as_ref()).cloned(),
            };
            // A passive peer's listening socket is opened with its session: no refusal, it listens.
            let listening = input
                .passive
                .contains(&status.address)
                .then(|| !input.refused.contains_key(&status.address));
            let entry = SessionEntry {
                state: status.state.to_string(),
                error,
                listening,
            };
            let key = format!("session {}", status.address);
            if self.reported.get(&status.address) == Some(&entry) || !self.retry.due(&key, now) {
                continue;
            }
            let Some(name) = input.names.get(&status.address) else {
                continue;
            };
            let api: kube::Api<Lenient<BgpPeer>> = kube::Api::all(client.clone());
            let written = write_session(&api, name, node, &entry).await;
            self.retry.record(key, now, &written);
            match written {
                Ok(()) => {
                    info!(peer = %status.address, node, state = entry.state, listening = ?entry.listening, "BGP session state");
                    self.reported.insert(status.address, entry);
                }
                Err(e) => warn!(peer = %status.address, error = %e, "cannot write BgpPeer status"),
            }
        }
        self.reported.retain(|a, _| input.names.contains_key(a));
    }
}

/// Failed status writes wait before the next try, doubling from [`Retry::FIRST`] to [`Retry::LONGEST`]: a write the
/// API server keeps refusing (an old Role, a webhook) costs a request every few minutes, not two a second.
#[derive(Default, Debug)]
struct Retry(BTreeMap<String, (tokio::time::Instant, std::time::Duration)>);

impl Retry {
    const FIRST: std::time::Duration = std::time::Duration::from_secs(1);
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(300);

    /// May `key` be written at `now`?
    fn due(&self, key: &str, now: tokio::time::Instant) -> bool {
        self.0.get(key).is_none_or(|(next, _)| now >= *next)
    }

    /// Records the outcome of a write of `key` at `now`.
    fn record<T, E>(&mut self, key: String, now: tokio::time::Instant, outcome: &Result<T, E>) {
        if outcome.is_ok() {
            self.0.remove(&key);
            return;
        }
        let wait = self
            .0
            .get(&key)
            .map_or(Self::FIRST, |(_, last)| (*last * 2).min(Self::LONGEST));
        self.0.insert(key, (now + wait, wait));
    }
}

/// A BGP object judged by the plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Judged {
    /// The `BgpConf` named `default`.
    Conf,
    /// A `BgpPeer`, by name.
    Peer(String),
}

impl std::fmt::Display for Judged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Judged::Conf => f.write_str("BgpConf default"),
            Judged::Peer(name) => write!(f, "BgpPeer {name}"),
        }
    }
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
        if *speaker.routes() != plan.routes {
            info!(routes = plan.routes.len(), "BGP routes changed");
            speaker.set_routes(plan.routes);
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
        speaker.routes().keys().map(|net| net.addr()).collect()
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

/// Sets the `Ready` condition of BGP object `name` from `verdict` (CAS on the resourceVersion, retried on conflict),
/// and records a Warning Event when this write is what turned it into a problem: every node judges alike, so the
/// first to write tells, and the others find it written.
async fn write_ready<K>(
    client: &kube::Client,
    events: &EventPublisher,
    name: &str,
    verdict: &Verdict,
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    use herald_api::conditions::{self, set_condition};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::api::{Patch, PatchParams};
    // Lenient: an object Herald cannot read is exactly the one whose condition must say so.
    let api: kube::Api<Lenient<K>> = kube::Api::all(client.clone());
    let mut attempt = 0;
    loop {
        // The object itself carries its status; `get` on the main resource is what the Role grants.
        let object = api.get(name).await?;
        let mut conds: Vec<Condition> = status_json(&object)
            .and_then(|s| serde_json::from_value(s.get("conditions")?.clone()).ok())
            .unwrap_or_default();
        let (ok, reason, message) = match verdict {
            None => (true, "Valid", "the spec is valid".to_string()),
            Some(p) => (false, p.reason, p.message.clone()),
        };
        let generation = object.meta().generation;
        let now = Time(jiff::Timestamp::now());
        if !set_condition(&mut conds, conditions::READY, ok, reason, &message, generation, now) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": object.meta().resource_version},
            "status": {"conditions": conds},
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => attempt += 1,
            Err(e) => return Err(e),
            Ok(_) => {
                if let Some(problem) = verdict {
                    let event = Event {
                        type_: EventType::Warning,
                        reason: problem.reason.into(),
                        note: Some(message),
                        action: "Validate".into(),
                        secondary: None,
                    };
                    events.publish(event, object.object_ref(&()));
                }
                return Ok(());
            }
        }
    }
}

/// An object's `status` as JSON, whether or not Herald could read the object.
fn status_json<K: serde::Serialize>(object: &Lenient<K>) -> Option<serde_json::Value> {
    match object {
        Lenient::Read(k) => serde_json::to_value(k).ok()?.get("status").cloned(),
        Lenient::Unreadable(u) => u.status.clone(),
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

/// One node's entry in a BgpPeer's `status.sessions`, as this node last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionEntry {
    /// RFC 4271 state.
    state: String,
    /// Why the session is down, or why its passive side cannot listen.
    error: Option<String>,
    /// Passive peers: does this node accept the router's connections?
    listening: Option<bool>,
}

/// The `Listening` condition of a passive BgpPeer from its sessions (`None`: no node reports a passive session, so
/// there is no such condition): `(status, reason, message)`.
fn listening_condition(sessions: &[herald_api::bgp::PeerSession]) -> Option<(bool, &'static str, String)> {
    let passive: Vec<_> = sessions.iter().filter(|s| s.listening.is_some()).collect();
    if passive.is_empty() {
        return None;
    }
    let deaf: Vec<_> = passive.iter().filter(|s| s.listening == Some(false)).collect();
    let Some(first) = deaf.first() else {
        let nodes: Vec<&str> = passive.iter().map(|s| s.node.as_str()).collect();
        return Some((
            true,
            "Listening",
            format!(
                "every node with a session accepts the router's connections: {}",
                nodes.join(", ")
            ),
        ));
    };
    let nodes: Vec<&str> = deaf.iter().map(|s| s.node.as_str()).collect();
    let why = first.last_error.as_deref().unwrap_or("no reason given");
    Some((
        false,
        "ListenFailed",
        format!(
            "{} of {} nodes cannot accept the router's connections and only connect out ({}); {}: {why}",
            deaf.len(),
            passive.len(),
            nodes.join(", "),
            first.node
        ),
    ))
}

/// Sets `node`'s entry in a BgpPeer's `status.sessions` and recomputes the counts and the `Listening` condition
/// (CAS, retried on conflict).
async fn write_session(
    api: &kube::Api<Lenient<BgpPeer>>,
    name: &str,
    node: &str,
    entry: &SessionEntry,
) -> Result<(), kube::Error> {
    use herald_api::bgp::{BgpPeerStatus, PeerSession};
    use herald_api::conditions::{self, set_condition};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::{Patch, PatchParams};
    let mut attempt = 0;
    loop {
        let peer = api.get(name).await?;
        let mut status: BgpPeerStatus = status_json(&peer)
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        status.sessions.retain(|s| s.node != node);
        let now = Time(jiff::Timestamp::now());
        status.sessions.push(PeerSession {
            node: node.to_string(),
            state: entry.state.clone(),
            last_transition_time: Some(now.clone()),
            last_error: entry.error.clone(),
            listening: entry.listening,
        });
        status.sessions.sort_by(|a, b| a.node.cmp(&b.node));
        status.session_count = status.sessions.len() as u32;
        status.established = status.sessions.iter().filter(|s| s.state == "Established").count() as u32;
        match listening_condition(&status.sessions) {
            Some((ok, reason, message)) => {
                let generation = peer.meta().generation;
                set_condition(
                    &mut status.conditions,
                    conditions::LISTENING,
                    ok,
                    reason,
                    message,
                    generation,
                    now,
                );
            }
            None => status.conditions.retain(|c| c.type_ != conditions::LISTENING),
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": peer.meta().resource_version},
            "status": status,
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => attempt += 1,
            other => return other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_bgp::packet::LargeCommunity;
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn node(labels: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels},
            "status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "198.51.100.11"}]}}))
        .unwrap()
    }

    fn announcement(eip: &str, protocol: Protocol, nodes: &[&str]) -> Announcement {
        Announcement {
            eip: eip.into(),
            protocol,
            interface: None,
            services: BTreeSet::new(),
            eligible_nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ineligible_reason: None,
        }
    }

    struct Fixture {
        node: Node,
        confs: Vec<Arc<BgpConf>>,
        peers: Vec<Arc<BgpPeer>>,
        secrets: Vec<Arc<Secret>>,
        eips: Vec<Arc<Eip>>,
        announcements: BTreeMap<IpAddr, Announcement>,
        unreadable_confs: Vec<Unreadable>,
        unreadable_peers: Vec<Unreadable>,
        unreadable_secrets: Vec<Unreadable>,
    }

    impl Fixture {
        fn new() -> Self {
            let mut announcements = BTreeMap::new();
            announcements.insert(
                "203.0.113.10".parse().unwrap(),
                announcement("routed", Protocol::Bgp, &["n1", "n2"]),
            );
            announcements.insert(
                "203.0.113.11".parse().unwrap(),
                announcement("routed", Protocol::Bgp, &["n2"]),
            );
            announcements.insert(
                "192.0.2.10".parse().unwrap(),
                announcement("lan", Protocol::Layer2, &["n1"]),
            );
            Fixture {
                node: node(json!({"rack": "a"})),
                confs: vec![obj(json!({"metadata": {"name": "default"}, "spec": {"asn": 64512,
                    "overrides": [{"nodeSelector": {"matchLabels": {"rack": "b"}}, "asn": 64513}]}}))],
                peers: vec![
                    obj(
                        json!({"metadata": {"name": "leaf-a"}, "spec": {"address": "198.51.100.1", "asn": 64500,
                        "nodeSelector": {"matchLabels": {"rack": "a"}}}}),
                    ),
                    obj(
                        json!({"metadata": {"name": "leaf-b"}, "spec": {"address": "198.51.100.2", "asn": 64501,
                        "nodeSelector": {"matchLabels": {"rack": "b"}}}}),
                    ),
                ],
                secrets: vec![],
                eips: vec![obj(
                    json!({"metadata": {"name": "routed"}, "spec": {"addresses": ["203.0.113.0/24"],
                    "protocol": "bgp", "bgp": {"communities": ["64512:100"], "largeCommunities": ["64512:1:2"]}}}),
                )],
                announcements,
                unreadable_confs: vec![],
                unreadable_peers: vec![],
                unreadable_secrets: vec![],
            }
        }

        fn plan(&self) -> BgpPlan {
            plan(&BgpView {
                node: "n1",
                node_object: Some(&self.node),
                confs: &self.confs,
                peers: &self.peers,
                secrets: &self.secrets,
                eips: &self.eips,
                announcements: &self.announcements,
                unreadable: Unreadables {
                    confs: &self.unreadable_confs,
                    peers: &self.unreadable_peers,
                    secrets: &self.unreadable_secrets,
                },
            })
        }

        /// The plan's verdict on BgpPeer `name`: `Ok(())` valid, `Err((reason, message))`.
        fn verdict(&self, name: &str) -> Result<(), (&'static str, String)> {
            match self.plan().verdicts.get(name).expect("the peer is judged") {
                None => Ok(()),
                Some(p) => Err((p.reason, p.message.clone())),
            }
        }
    }

    fn unreadable<K: serde::de::DeserializeOwned>(v: Value) -> Unreadable {
        match serde_json::from_value::<Lenient<K>>(v).unwrap() {
            Lenient::Unreadable(u) => *u,
            Lenient::Read(_) => panic!("expected an unreadable object"),
        }
    }

    #[test]
    fn rack_peer_router_id_and_eligible_bgp_routes() {
        let f = Fixture::new();
        let p = f.plan();
        let speaker = p.speaker.unwrap();
        assert_eq!(speaker.local_asn, 64512);
        assert_eq!(
            speaker.router_id,
            "198.51.100.11".parse::<Ipv4Addr>().unwrap(),
            "from the InternalIP"
        );
        assert_eq!(
            p.peers.keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["198.51.100.1"],
            "only its rack's leaf"
        );
        let routes: Vec<String> = p.routes.keys().map(ToString::to_string).collect();
        assert_eq!(
            routes,
            ["203.0.113.10/32"],
            "not the IP it is ineligible for, not the layer2 IP"
        );
        let policy = &p.routes.values().next().unwrap();
        assert_eq!(policy.communities, [64512 << 16 | 100]);
        assert_eq!(policy.large_communities, [LargeCommunity(64512, 1, 2)]);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn rack_override_and_no_conf_means_no_speaker() {
        let mut f = Fixture::new();
        f.node = node(json!({"rack": "b"}));
        let p = f.plan();
        assert_eq!(p.speaker.unwrap().local_asn, 64513);
        assert_eq!(p.peers.keys().next().unwrap().to_string(), "198.51.100.2");
        f.confs.clear();
        let p = f.plan();
        assert!(p.speaker.is_none() && p.peers.is_empty() && p.routes.is_empty());
        assert_eq!(p.conf_verdict, None);
        assert_eq!(
            p.verdicts.get("leaf-b"),
            Some(&None),
            "peers are judged without a BgpConf too"
        );
    }

    #[test]
    fn passive_families_and_local_asn_reach_the_peer_config() {
        let mut f = Fixture::new();
        f.peers = vec![obj(
            json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500,
            "passive": true, "families": ["ipv6", "ipv4", "ipv6"], "localAsn": 65001}}),
        )];
        let p = f.plan();
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let peer = p.peers.values().next().unwrap();
        assert!(peer.passive);
        assert_eq!(peer.listen_port, 179);
        assert_eq!(peer.families, [Afi::IPV4, Afi::IPV6]);
        assert_eq!(peer.local_asn, Some(65001));
        assert_eq!(p.speaker.unwrap().local_asn, 64512, "the speaker keeps the node's ASN");
        // The BgpConf's listen port (one that needs no NET_BIND_SERVICE); the router's own port is unchanged.
        f.confs = vec![obj(
            json!({"metadata": {"name": "default"}, "spec": {"asn": 64512, "listenPort": 1179}}),
        )];
        let p = f.plan();
        let peer = p.peers.values().next().unwrap();
        assert_eq!((peer.port, peer.listen_port), (179, 1179));
        assert_eq!(p.verdicts.get("leaf"), Some(&None));

        // Defaults: connect out only, both families, the node's ASN.
        f.peers = vec![obj(
            json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500,
            "families": ["ipv4"]}}),
        )];
        let p = f.plan();
        let peer = p.peers.values().next().unwrap();
        assert!(!peer.passive);
        assert_eq!(peer.families, [Afi::IPV4]);
        assert_eq!(peer.local_asn, None);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(
            Fixture::new().plan().peers.values().next().unwrap().families,
            [Afi::IPV4, Afi::IPV6]
        );
    }

    fn session(node: &str, listening: Option<bool>, error: Option<&str>) -> herald_api::bgp::PeerSession {
        herald_api::bgp::PeerSession {
            node: node.into(),
            state: "Established".into(),
            last_transition_time: None,
            last_error: error.map(str::to_string),
            listening,
        }
    }

    #[test]
    fn the_listening_condition_names_the_nodes_that_cannot_accept_the_routers_connections() {
        assert_eq!(listening_condition(&[]), None);
        assert_eq!(
            listening_condition(&[session("n1", None, None)]),
            None,
            "not passive: no condition"
        );
        let (ok, reason, message) =
            listening_condition(&[session("n1", Some(true), None), session("n2", Some(true), None)]).unwrap();
        assert!(ok);
        assert_eq!(reason, "Listening");
        assert_eq!(
            message,
            "every node with a session accepts the router's connections: n1, n2"
        );
        let denied = "BGP peer 198.51.100.1 is passive but Herald cannot listen on 0.0.0.0:179: Permission denied";
        let (ok, reason, message) = listening_condition(&[
            session("n1", Some(true), None),
            session("n2", Some(false), Some(denied)),
            session("n3", Some(false), Some("another")),
            session("n4", None, Some("agent stopped")),
        ])
        .unwrap();
        assert!(!ok, "a session that is up does not make a deaf node healthy");
        assert_eq!(reason, "ListenFailed");
        assert_eq!(
            message,
            format!("2 of 3 nodes cannot accept the router's connections and only connect out (n2, n3); n2: {denied}")
        );
    }

    #[test]
    fn a_refused_listen_on_a_low_port_says_what_to_change_in_herald() {
        let error = |kind, port| herald_bgp::Error::Listen {
            peer: "198.51.100.1".parse().unwrap(),
            local: std::net::SocketAddr::from(([0, 0, 0, 0], port)),
            source: std::io::Error::from(kind),
        };
        let advice = listen_advice(&error(std::io::ErrorKind::PermissionDenied, 179));
        assert!(
            advice.contains("bgp.passive=true") && advice.contains("spec.listenPort"),
            "{advice}"
        );
        assert_eq!(listen_advice(&error(std::io::ErrorKind::AddrInUse, 179)), "");
        assert_eq!(listen_advice(&error(std::io::ErrorKind::PermissionDenied, 1179)), "");
    }

    #[test]
    fn empty_families_is_a_problem_and_skips_the_peer() {
        let mut f = Fixture::new();
        f.peers = vec![obj(
            json!({"metadata": {"name": "leaf"}, "spec": {"address": "198.51.100.1", "asn": 64500,
            "families": []}}),
        )];
        let p = f.plan();
        assert!(p.peers.is_empty());
        let (reason, message) = f.verdict("leaf").unwrap_err();
        assert_eq!(reason, "InvalidSpec");
        assert!(message.contains("spec.families is empty"), "{message}");
    }

    #[test]
    fn missing_password_secret_is_a_problem_and_skips_the_peer() {
        let mut f = Fixture::new();
        f.peers = vec![obj(
            json!({"metadata": {"name": "md5"}, "spec": {"address": "198.51.100.1", "asn": 64500,
            "passwordSecretRef": {"name": "bgp-auth"}}}),
        )];
        let p = f.plan();
        assert!(p.peers.is_empty() && p.speaker.is_none());
        let (reason, message) = f.verdict("md5").unwrap_err();
        assert_eq!(reason, "SecretNotFound");
        assert!(message.contains("Secret 'bgp-auth'"), "{message}");
        f.secrets = vec![obj(
            json!({"metadata": {"name": "bgp-auth"}, "data": {"other": "czNjcmV0"}}),
        )];
        let (_, message) = f.verdict("md5").unwrap_err();
        assert!(message.contains("has no key 'password'"), "{message}");
        f.secrets = vec![obj(json!({"metadata": {"name": "bgp-auth"}, "data": {"password": ""}}))];
        let (_, message) = f.verdict("md5").unwrap_err();
        assert!(message.contains("password must be 1 to 80 bytes"), "{message}");
        f.secrets = vec![];
        f.unreadable_secrets = vec![unreadable::<Secret>(
            json!({"metadata": {"name": "bgp-auth"}, "data": {"password": "not base64!"}}),
        )];
        let (reason, _) = f.verdict("md5").unwrap_err();
        assert_eq!(reason, "SecretUnreadable");
        f.unreadable_secrets = vec![];
        f.secrets = vec![obj(
            json!({"metadata": {"name": "bgp-auth"}, "data": {"password": "czNjcmV0"}}),
        )];
        let p = f.plan();
        assert_eq!(
            p.peers.values().next().unwrap().password.as_deref(),
            Some(&b"s3cret"[..])
        );
        assert_eq!(f.verdict("md5"), Ok(()));
    }

    #[test]
    fn an_invalid_peer_is_explained_and_the_others_still_peer() {
        let mut f = Fixture::new();
        let peer = |name: &str, spec: Value| obj::<BgpPeer>(json!({"metadata": {"name": name}, "spec": spec}));
        f.peers = vec![
            peer("asn0", json!({"address": "198.51.100.1", "asn": 0})),
            peer(
                "trans",
                json!({"address": "198.51.100.2", "asn": 64500, "localAsn": 23456}),
            ),
            peer("hold", json!({"address": "198.51.100.3", "asn": 64500, "holdTime": 2})),
            peer(
                "source",
                json!({"address": "198.51.100.4", "asn": 64500, "sourceAddress": "eth0"}),
            ),
            peer("mcast", json!({"address": "224.0.0.5", "asn": 64500})),
            peer(
                "selector",
                json!({"address": "198.51.100.6", "asn": 64500,
                "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "Near"}]}}),
            ),
            peer("good", json!({"address": "198.51.100.7", "asn": 64500})),
        ];
        let p = f.plan();
        assert_eq!(
            p.peers.keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["198.51.100.7"]
        );
        assert!(p.speaker.is_some());
        let expect = [
            ("asn0", "spec.asn 0 is reserved (RFC 7607)"),
            ("trans", "spec.localAsn 23456 is AS_TRANS"),
            ("hold", "hold time 2s is not allowed"),
            ("source", "spec.sourceAddress 'eth0' is not an IP address"),
            ("mcast", "spec.address '224.0.0.5' is not a router's IP address"),
            ("selector", "spec.nodeSelector"),
        ];
        for (name, text) in expect {
            let (reason, message) = f.verdict(name).unwrap_err();
            assert_eq!(reason, "InvalidSpec", "{name}");
            assert!(message.contains(text), "{name}: {message}");
        }
        assert_eq!(f.verdict("good"), Ok(()));
    }

    #[test]
    fn unreadable_objects_are_judged_and_an_unreadable_conf_turns_bgp_off() {
        let mut f = Fixture::new();
        f.unreadable_peers = vec![unreadable::<BgpPeer>(
            json!({"metadata": {"name": "broken"}, "spec": {"address": "198.51.100.9", "asn": "many"}}),
        )];
        let (reason, message) = f.verdict("broken").unwrap_err();
        assert_eq!(reason, "Unreadable");
        assert!(message.contains("spec.asn"), "{message}");
        assert_eq!(f.plan().peers.len(), 1, "the readable peer still peers");

        f.unreadable_confs = vec![unreadable::<BgpConf>(
            json!({"metadata": {"name": "default"}, "spec": {"asn": 64512, "gracefulRestart": {"restartTime": "2m"}}}),
        )];
        let p = f.plan();
        assert!(
            p.speaker.is_none() && p.peers.is_empty(),
            "settings unknown: BGP mode is off"
        );
        let conf = p.conf_verdict.unwrap().unwrap();
        assert_eq!(conf.reason, "Unreadable");
        assert!(
            conf.message.contains("spec.gracefulRestart.restartTime"),
            "{}",
            conf.message
        );
    }

    #[test]
    fn failed_status_writes_back_off_and_a_success_resets() {
        let mut retry = Retry::default();
        let t0 = tokio::time::Instant::now();
        let s = std::time::Duration::from_secs;
        let refused: Result<(), ()> = Err(());
        assert!(retry.due("BgpPeer a", t0));
        retry.record("BgpPeer a".into(), t0, &refused);
        assert!(!retry.due("BgpPeer a", t0 + s(0)) && retry.due("BgpPeer a", t0 + s(1)));
        assert!(retry.due("BgpPeer b", t0), "other objects are not held up");
        let mut at = t0;
        for _ in 0..20 {
            retry.record("BgpPeer a".into(), at, &refused);
            at += s(1);
        }
        assert!(
            !retry.due("BgpPeer a", at + s(200)) && retry.due("BgpPeer a", at + s(300)),
            "at most 5 minutes"
        );
        retry.record("BgpPeer a".into(), at, &Ok::<(), ()>(()));
        assert!(retry.due("BgpPeer a", at));
    }

    #[test]
    fn an_invalid_conf_is_explained() {
        let mut f = Fixture::new();
        for (spec, text) in [
            (json!({"asn": 0}), "spec.asn 0 is reserved"),
            (
                json!({"asn": 64512, "routerId": "router-1"}),
                "spec.routerId 'router-1' is not an IPv4 address",
            ),
            (
                json!({"asn": 64512, "overrides": [{"nodeSelector": {}, "asn": 0}]}),
                "spec.overrides[0].asn 0",
            ),
        ] {
            f.confs = vec![obj(json!({"metadata": {"name": "default"}, "spec": spec}))];
            let p = f.plan();
            assert!(p.speaker.is_none());
            let problem = p.conf_verdict.unwrap().unwrap();
            assert!(problem.message.contains(text), "{}", problem.message);
        }
        f.confs = vec![obj(json!({"metadata": {"name": "default"}, "spec": {"asn": 64512}}))];
        assert_eq!(f.plan().conf_verdict, Some(None));
    }

    #[tokio::test]
    async fn a_passive_peer_that_cannot_listen_connects_out_and_is_not_restarted_on_every_wake() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = PeerConfig::new("127.0.0.2".parse().unwrap(), 64500);
        peer.passive = true;
        peer.local_address = Some("127.0.0.1".parse().unwrap());
        peer.listen_port = taken.local_addr().unwrap().port();
        let plan = |peer: &PeerConfig| BgpPlan {
            speaker: Some(SpeakerConfig {
                local_asn: 64512,
                router_id: Ipv4Addr::new(192, 0, 2, 11),
            }),
            peers: BTreeMap::from([(peer.address, peer.clone())]),
            ..Default::default()
        };
        let mut announcer = BgpAnnouncer::default();
        announcer.apply(plan(&peer)).await;
        let speaker = &announcer.speaker.as_ref().unwrap().1;
        assert_eq!(speaker.peers().len(), 1, "the session runs, connecting out");
        assert!(announcer.refused[&peer.address].contains("connecting out only"));
        let session = speaker.watch_peer(peer.address).unwrap();
        for _ in 0..3 {
            announcer.apply(plan(&peer)).await;
        }
        assert!(
            session.has_changed().is_ok(),
            "the same session: never restarted by a wake"
        );
        // A changed configuration is tried again (here: a free port, so it listens now).
        drop(taken);
        peer.hold_time = 30;
        announcer.apply(plan(&peer)).await;
        assert!(announcer.refused.is_empty(), "{:?}", announcer.refused);
        assert!(session.has_changed().is_err(), "the changed peer got a new session");
        announcer
            .speaker
            .take()
            .unwrap()
            .1
            .shutdown(ShutdownMode::Withdraw)
            .await;
    }
}
