//! Which addresses of a Layer 2 pool to check, which node checks them and when, and what a round of checks makes of
//! the Eip's `status.probes`. Pure: objects, a wall-clock time and results in, decisions out.
//!
//! One node per pool checks: the node that wrote the current record keeps doing it, every [`Timing::refresh`] and
//! at once when the allocator has used up its proven addresses. The others rank the pool's nodes (the election's
//! stable hash, keyed by the pool's first address) and take over when the record has gone stale for longer than
//! their place in the ranking allows: rank 0 after `refresh + stagger`, rank 1 after `refresh + 2·stagger`, … A node
//! without an interface on the pool's network never checks, and the next one takes over. Two nodes checking at
//! once see each other's probes: that round finds nothing (neither free nor taken), and the next round, by one
//! node, does.
//!
//! Times come from the record (another node's clock) and the local wall clock: nodes of a cluster keep their
//! clocks in sync (certificates and Leases need it too), and a skew only makes a check look older or younger by
//! the skew. A check older than [`Timing::valid`] is trusted by nobody.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use herald_api::eip::{AddressProbes, HostConflict, MAX_CONFLICTS, MAX_PROVEN_FREE, ProvenFree};
use herald_api::{Eip, Protocol};
use herald_ipam::{Family, Pool};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// How often and how far pools are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A check older than this proves nothing: the allocator no longer prefers the address and the announcer
    /// probes it itself.
    pub valid: Duration,
    /// The checking node checks its pool again when the newest check is this old.
    pub refresh: Duration,
    /// How much longer each further node in the ranking waits before it takes over a stale record.
    pub stagger: Duration,
    /// Next free addresses checked per family.
    pub per_family: usize,
    /// The least time between two rounds of one pool (a round started because its addresses were used up).
    pub min_gap: Duration,
}

/// The agent's timing: a proof lives 60 s and is renewed every 30 s; 2 addresses per family are kept ready.
pub const TIMING: Timing = Timing {
    valid: Duration::from_secs(60),
    refresh: Duration::from_secs(30),
    stagger: Duration::from_secs(10),
    per_family: 2,
    min_gap: Duration::from_secs(5),
};

/// How old a time written in a record is at `now` (a time ahead of `now`, from a clock ahead of ours, is new).
pub fn age(now: Timestamp, time: &Time) -> Duration {
    Duration::try_from(now.duration_since(time.0)).unwrap_or(Duration::ZERO)
}

/// The addresses of `eip` a check found free less than `valid` before `now`, lowest first.
pub fn proven_free(eip: &Eip, now: Timestamp, valid: Duration) -> BTreeSet<IpAddr> {
    probes(eip)
        .into_iter()
        .flat_map(|p| &p.free)
        .filter(|f| age(now, &f.time) < valid)
        .filter_map(|f| f.ip.parse().ok())
        .collect()
}

/// The addresses of `eip` another host answers for.
pub fn taken(eip: &Eip) -> BTreeSet<IpAddr> {
    probes(eip)
        .into_iter()
        .flat_map(|p| &p.conflicts)
        .filter_map(|c| c.ip.parse().ok())
        .collect()
}

/// Whether some Eip proves `ip` free at `now`: the announcer then announces it without its own probe.
pub fn is_proven_free<'a>(
    eips: impl IntoIterator<Item = &'a Eip>,
    ip: IpAddr,
    now: Timestamp,
    valid: Duration,
) -> bool {
    let text = ip.to_string();
    eips.into_iter().any(|eip| {
        probes(eip)
            .into_iter()
            .flat_map(|p| &p.free)
            .any(|f| f.ip == text && age(now, &f.time) < valid)
    })
}

fn probes(eip: &Eip) -> Option<&AddressProbes> {
    eip.status.as_ref().and_then(|s| s.probes.as_ref())
}

/// One pool as this node sees it.
pub struct PoolView<'a> {
    pub eip: &'a Eip,
    pub pool: &'a Pool,
    /// Addresses Services hold (any pool).
    pub used: &'a HashSet<IpAddr>,
    /// This node's place in the pool's ranking (`None`: it may not announce the pool).
    pub rank: Option<usize>,
    /// This node's usable interface on the pool's network, if it has one.
    pub interface: Option<String>,
    /// When this agent first saw the Eip without a record.
    pub seen_since: Timestamp,
    /// When this node's last round of this pool ended.
    pub last_round: Option<Timestamp>,
}

/// A round of checks to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    pub eip: String,
    pub interface: String,
    /// The next free addresses, per family in allocation order, then the recorded conflicts (checked again).
    pub addresses: Vec<IpAddr>,
}

/// The round this node should make of `view`'s pool at `now`, if any.
pub fn plan(view: &PoolView<'_>, me: &str, now: Timestamp, timing: &Timing) -> Option<Round> {
    let eip = view.eip;
    if eip.spec.protocol != Protocol::Layer2 || eip.spec.disable {
        return None;
    }
    let rank = view.rank?;
    let interface = view.interface.clone()?;
    if view.last_round.is_some_and(|t| age(now, &Time(t)) < timing.min_gap) {
        return None;
    }
    let record = probes(eip);
    let newest = record.and_then(|r| {
        r.free
            .iter()
            .map(|f| f.time.0)
            .chain(r.conflicts.iter().map(|c| c.time.0))
            .max()
    });
    let mine = record.is_some_and(|r| r.node == me);
    let taken = taken(eip);
    let candidates = next_free(view.pool, view.used, &taken, timing.per_family);
    let due = match (newest, mine) {
        (None, true) => true,
        (Some(t), true) => {
            // Used up: the allocator handed out proven addresses, so the next ones are checked now.
            let proven = proven_free(eip, now, timing.valid);
            age(now, &Time(t)) >= timing.refresh || candidates.iter().any(|ip| !proven.contains(ip))
        }
        (Some(t), false) => age(now, &Time(t)) >= timing.refresh + timing.stagger * (rank as u32 + 1),
        // Nobody has checked yet: rank 0 at once, the others in turn.
        (None, false) => age(now, &Time(view.seen_since)) >= timing.stagger * rank as u32,
    };
    let mut addresses = candidates;
    addresses.extend(taken.iter().copied().take(MAX_CONFLICTS));
    (due && !addresses.is_empty()).then(|| Round {
        eip: eip.name_any(),
        interface,
        addresses,
    })
}

/// The first `n` addresses of each family `pool` would hand out: free (no Service holds them) and not taken.
pub fn next_free(pool: &Pool, used: &HashSet<IpAddr>, taken: &BTreeSet<IpAddr>, n: usize) -> Vec<IpAddr> {
    [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|f| {
            pool.addresses(f)
                .filter(|ip| !used.contains(ip) && !taken.contains(ip))
                .take(n)
        })
        .collect()
}

/// What a check of one address found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nobody answered.
    Free,
    /// Another host answered, from this MAC.
    Taken(String),
    /// Nothing either way: another node probed at the same time, the address became a Service's, the check failed.
    Nothing,
}

/// The record after a round by `me` on `interface` that ended at `now`. Addresses a Service holds by now are left
/// out (a Herald node answering is no conflict). A listed conflict that was not settled either way stays as it
/// was.
pub fn record(
    previous: Option<&AddressProbes>,
    me: &str,
    interface: &str,
    results: &[(IpAddr, Found)],
    used: &HashSet<IpAddr>,
    now: Timestamp,
) -> AddressProbes {
    let mut free = Vec::new();
    let mut conflicts: Vec<HostConflict> = previous
        .into_iter()
        .flat_map(|p| &p.conflicts)
        .filter(|c| {
            let settled = results
                .iter()
                .any(|(ip, found)| ip.to_string() == c.ip && *found != Found::Nothing);
            !settled && c.ip.parse().is_ok_and(|ip: IpAddr| !used.contains(&ip))
        })
        .cloned()
        .collect();
    for (ip, found) in results {
        if used.contains(ip) {
            continue;
        }
        match found {
            Found::Free => free.push(ProvenFree {
                ip: ip.to_string(),
                time: Time(now),
            }),
            Found::Taken(mac) => conflicts.push(HostConflict {
                ip: ip.to_string(),
                mac: mac.clone(),
                time: Time(now),
            }),
            Found::Nothing => {}
        }
    }
    free.truncate(MAX_PROVEN_FREE);
    conflicts.sort_by_key(|c| c.ip.parse::<IpAddr>().ok());
    conflicts.dedup_by(|a, b| a.ip == b.ip);
    conflicts.truncate(MAX_CONFLICTS);
    AddressProbes {
        node: me.to_string(),
        interface: interface.to_string(),
        free,
        conflicts,
    }
}
