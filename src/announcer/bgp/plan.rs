//! BGP mode's pure part: cluster objects in (this node, BgpConf, BgpPeers, Secrets, Eips, the announcements), the
//! speaker's identity, peers and routes out, with a verdict on every BGP object this node judges.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use herald_api::bgp::AddressFamily;
use herald_api::decode::Unreadable;
use herald_api::text;
use herald_api::{BgpConf, BgpPeer, Eip, Protocol};
use herald_bgp::fsm::GracefulRestart;
use herald_bgp::packet::Afi;
use herald_bgp::rib::{RouteTable, parse_community, parse_large_community};
use herald_bgp::{PeerConfig, RoutePolicy, SpeakerConfig};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::ResourceExt;

use crate::adapter as convert;
use crate::announcer::desired::Announcement;

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
            router_id(&format!("{field}.routerId"), r)?;
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
        Some(r) => Some(router_id("spec.routerId", r)?),
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

/// A configured BGP identifier: an IPv4 address other than 0.0.0.0 (RFC 6286 §2.1: the identifier is a non-zero
/// 32-bit number; routers refuse an OPEN with 0, RFC 4271 §6.2).
fn router_id(field: &str, value: &str) -> Result<Ipv4Addr, Problem> {
    match value.parse::<Ipv4Addr>() {
        Ok(id) if id.is_unspecified() => Err(Problem::invalid(format!(
            "{field} 0.0.0.0 is not a BGP identifier (RFC 6286: it must not be zero): give one of the node's IPv4 \
             addresses, or leave it out to use the Node's InternalIP"
        ))),
        Ok(id) => Ok(id),
        Err(_) => Err(Problem::invalid(format!(
            "{field} '{}' is not an IPv4 address",
            text::quote(value)
        ))),
    }
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
    if let Some(k) = p.keepalive_time {
        // The CRD bounds it (at most 21845 s, a third of the longest hold time); 0 means the default.
        config.keepalive_time = u16::try_from(k).ok().filter(|k| *k > 0);
    }
    if let Some(r) = p.connect_retry_time {
        config.connect_retry_max = std::time::Duration::from_secs(u64::from(r.max(1)));
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
    config.bfd = p.bfd.as_ref().map(bfd_timers);
    config.validate().map_err(|e| Problem::invalid(e.to_string()))?;
    Ok(Some(config))
}

/// The BFD timers of a `spec.bfd` (the CRD bounds them; out-of-range values are clamped, never refused).
fn bfd_timers(b: &herald_api::bgp::BfdSpec) -> herald_bfd::Timers {
    let ms = |v: Option<u32>, default: std::time::Duration| {
        v.map_or(default, |v| {
            std::time::Duration::from_millis(u64::from(v.clamp(10, 60_000)))
        })
    };
    let d = herald_bfd::Timers::default();
    herald_bfd::Timers {
        desired_min_tx: ms(b.transmit_interval, d.desired_min_tx),
        required_min_rx: ms(b.receive_interval, d.required_min_rx),
        detect_mult: b.detect_multiplier.map_or(d.detect_mult, |m| m.max(1)),
    }
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
    // Each Eip's route attributes, parsed once rather than once per IP.
    let policies: BTreeMap<String, RoutePolicy> = view
        .eips
        .iter()
        .map(|e| (e.name_any(), e.spec.bgp.as_ref().map(route_policy).unwrap_or_default()))
        .collect();
    for (ip, a) in view.announcements {
        if a.protocol != Protocol::Bgp || !a.eligible_nodes.contains(view.node) {
            continue;
        }
        let policy = policies.get(&*a.eip).cloned().unwrap_or_default();
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
        local_pref: bgp.local_pref,
        ..Default::default()
    }
}
