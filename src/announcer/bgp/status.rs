//! BGP status written to the API by a task of its own ([`super::BgpAnnouncer::spawn_reporter`]): each node's session
//! entry in its `BgpPeer`s' status (with the `Listening` condition of passive peers), and the `Ready` condition of
//! every judged object. Written on change only, never periodically; failed writes back off.

use std::collections::BTreeMap;
use std::net::IpAddr;

use herald_api::decode::Lenient;
use herald_api::{BgpConf, BgpPeer};
use kube::Resource;
use tracing::{info, warn};

use super::plan::Verdict;
use crate::events::{Event, EventPublisher, EventType};

/// What the status reporter writes from: a snapshot of the last plan's outcome, and the sessions' live status.
#[derive(Clone, Default)]
pub struct ReportInput {
    pub(super) verdicts: BTreeMap<Judged, Verdict>,
    pub(super) names: BTreeMap<IpAddr, String>,
    pub(super) refused: BTreeMap<IpAddr, String>,
    pub(super) passive: std::collections::BTreeSet<IpAddr>,
    pub(super) peers: Vec<tokio::sync::watch::Receiver<herald_bgp::PeerStatus>>,
}

/// Writes BGP status to the API from [`ReportInput`]s, as a task of its own: the announcer's loop never waits for it.
#[derive(Default)]
pub(super) struct BgpReporter {
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
    pub(super) async fn report(
        &mut self,
        input: &ReportInput,
        client: &kube::Client,
        events: &EventPublisher,
        node: &str,
    ) {
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
                bfd: status.bfd.map(|b| b.state.to_string()),
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
                    info!(peer = %status.address, node, state = entry.state, listening = ?entry.listening, bfd = ?entry.bfd, "BGP session state");
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
pub(super) struct Retry(BTreeMap<String, (tokio::time::Instant, std::time::Duration)>);

impl Retry {
    const FIRST: std::time::Duration = std::time::Duration::from_secs(1);
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(300);

    /// May `key` be written at `now`?
    pub(super) fn due(&self, key: &str, now: tokio::time::Instant) -> bool {
        self.0.get(key).is_none_or(|(next, _)| now >= *next)
    }

    /// Records the outcome of a write of `key` at `now`.
    pub(super) fn record<T, E>(&mut self, key: String, now: tokio::time::Instant, outcome: &Result<T, E>) {
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
pub(super) enum Judged {
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

/// Sets the `Ready` condition of BGP object `name` from `verdict` (CAS on the resourceVersion, retried on conflict),
/// and records a Warning Event when this write is what turned it into a problem: every node judges alike, so the
/// first to write tells, and the others find it written.
pub(super) async fn write_ready<K>(
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

/// One node's entry in a BgpPeer's `status.sessions`, as this node last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SessionEntry {
    /// RFC 4271 state.
    pub(super) state: String,
    /// Why the session is down, or why its passive side cannot listen.
    pub(super) error: Option<String>,
    /// Passive peers: does this node accept the router's connections?
    pub(super) listening: Option<bool>,
    /// The BFD session's state, when BFD is on.
    pub(super) bfd: Option<String>,
}

/// The `Listening` condition of a passive BgpPeer from its sessions (`None`: no node reports a passive session, so
/// there is no such condition): `(status, reason, message)`.
pub(super) fn listening_condition(sessions: &[herald_api::bgp::PeerSession]) -> Option<(bool, &'static str, String)> {
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
pub(super) async fn write_session(
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
            bfd: entry.bfd.clone(),
        });
        status.sessions.sort_by(|a, b| a.node.cmp(&b.node));
        status.session_count = status.sessions.len() as u32;
        status.established = status.sessions.iter().filter(|s| s.state == "Established").count() as u32;
        status.bfd_up = status.sessions.iter().any(|s| s.bfd.is_some()).then(|| {
            status
                .sessions
                .iter()
                .filter(|s| s.bfd.as_deref() == Some("Up"))
                .count() as u32
        });
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
