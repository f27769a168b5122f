//! The per-IP ownership protocol as a sans-IO decision core (`shared/design/l2-election.md`).
//!
//! Inputs: watch observations ([`OwnershipCore::observe`]), the desired IPs with their eligible nodes
//! ([`OwnershipCore::set_desired`]), results of the reads and writes it asked for ([`OwnershipCore::op_done`]),
//! on-wire conflicts ([`OwnershipCore::on_wire_conflict`]) and a graceful stop ([`OwnershipCore::begin_shutdown`]),
//! each with the current monotonic time. Output: [`OwnershipCore::poll`] returns [`Action`]s — lease operations to
//! perform, announce/withdraw decisions (withdrawals always come before any write in the same batch, so a release
//! can never overtake the withdrawal it follows) and ownership notifications. [`OwnershipCore::next_wakeup`] says
//! when to poll again if nothing else happens.
//!
//! Rules, for one IP X with lease `herald-ip-<slug>`:
//! - *Live*: node N is live for this agent iff its node lease's resourceVersion changed less than `T` ago on the
//!   local clock (the watch delivers the changes; remote timestamps are never read). This agent counts itself live
//!   iff its own last successful renew was sent less than `D` ago ("healthy").
//! - *Candidates*: eligible nodes (from [`IpDesire`]) that are live, ordered by [`crate::rank`]; rank `k` waits
//!   `k × step` after the moment X became free or its holder dead.
//! - *Free* lease (absent or no holder): candidates create / CAS-replace it, but only from `R` after this agent's first
//!   watch sync (so a cold start ranks against every live node, not first-come).
//! - *Held by a live holder*: untouched (no flaps when nodes join).
//! - *Held by a dead holder*: candidates GET the holder's node lease; only if it still shows the resourceVersion
//!   observed ≥ `T` ago (or still does not name the holder) is the IP lease CAS-replaced with the resourceVersion read
//!   before that check. The GET is per node, not per IP: one check in flight per node lease, and its answer serves
//!   every IP that waited on it for [`CHECK_FRESHNESS_STEPS`] stagger steps (see `NodeCheck`).
//! - *Held by this agent but no longer eligible/desired*: withdraw, then release (holder cleared).
//! - *Announce* X iff the lease names this instance and this instance wrote it (CAS) since its last liveness gap;
//!   with [`OutagePolicy::Hold`] IPs announced when a gap began stay announced through it.
//! - A *lost race* (409, AlreadyExists) is retried after `R`, by which time the watch has shown the winner; only if
//!   the view still shows what it showed when the race was lost is the lease read.
//!
//! Cost: a decision round visits only the IPs whose inputs changed or whose timer came due (`schedule.rs`); inputs
//! shared by every IP (health, epoch, node liveness, a takeover check's answer, a re-list) make every IP due. An IP held
//! by a live holder has no timer: the holder's death is a node event, which makes every IP due.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::time::Instant;

mod check;
mod decide;
mod node_lease;
mod observe;
mod schedule;

use check::{CheckVerdict, Expect, NodeCheck};
use schedule::Schedule;

use crate::identity::{Identity, holder_node};
use crate::lease::{LeaseRecord, StoreError, WatchEvent, rv_cmp};
use crate::naming;
use crate::node_set::NodeSet;
use crate::rank::rank_nodes;
use crate::timing::ElectionTiming;

/// Identifies one requested lease operation; echo it back in [`OwnershipCore::op_done`].
pub type OpId = u64;

/// After an on-wire yield, how many `T` to wait before re-asserting the IP (which, if the lease is still ours,
/// announces it again). Long enough that a foreign host squatting the IP is not fought at API-write speed.
pub const YIELD_HOLDOFF_FACTOR: u32 = 10;

/// How long, in stagger steps, the answer of a takeover check may serve decisions after it arrived. One step lets
/// the IPs this agent takes over at the next rank use the same answer (they become due one step after the first);
/// anything later reads the node lease again.
pub const CHECK_FRESHNESS_STEPS: u32 = 1;

/// What a holder does while it cannot renew its node lease (`--api-outage`; the agent's CLI parses the flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutagePolicy {
    /// Keep announcing what was announced when the gap began (no data-plane outage when the API server is down);
    /// overlap in a partial partition is ended by the on-wire yield.
    #[default]
    Hold,
    /// Stop announcing `D` after the last successful renew (strict client-go behaviour).
    Withdraw,
}

/// The desired state of one IP: the nodes that may announce it and the Eip it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpDesire {
    /// Nodes eligible for this IP (Eip nodeSelector, interface present and up, not excluded, ready local endpoint for
    /// `externalTrafficPolicy: Local`). Every agent must pass the same set for ranking to agree; a node whose own link
    /// is down leaves itself out (others cannot know, they just wait their stagger).
    pub eligible_nodes: NodeSet,
    /// The Eip the IP was allocated from (written as a label on the IP lease); shared by the IPs of one Eip.
    pub eip: Arc<str>,
    /// Where this node answers for the IP when it holds it (its interface; `None`: no interface of this node carries
    /// it). Local to this node and opaque to the election: it does not take part in ranking, and only travels to the
    /// sink in [`Announce`]. An IP announced while its interface changes is withdrawn and announced on the new one.
    pub interface: Option<String>,
}

/// What the sink needs to start answering for an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The IP.
    pub ip: IpAddr,
    /// Its interface, from the [`IpDesire`].
    pub interface: Option<String>,
    /// Some Herald agent held the IP before (its lease counts an earlier holder, or this agent announced it
    /// before): a takeover, to announce at once. `false` for an IP no agent ever held, which the sink probes first
    /// (RFC 5227) so that Herald never takes an address another host uses.
    pub held_before: bool,
}

/// A decision of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read a lease (linearizable); answer with [`OwnershipCore::op_done`].
    Get { op: OpId, name: String },
    /// Create a lease; answer with [`OwnershipCore::op_done`].
    Create { op: OpId, record: LeaseRecord },
    /// Compare-and-swap replace (precondition `record.resource_version`); answer with [`OwnershipCore::op_done`].
    Replace { op: OpId, record: LeaseRecord },
    /// Stop answering ARP/NDP for the IP. Must take effect before the next write of the batch is sent.
    Withdraw(IpAddr),
    /// Start answering ARP/NDP for the IP (with the takeover burst).
    Announce(Announce),
    /// The holder of a desired IP's lease changed as this agent sees it (`holder` = `<node>/<instance>`).
    OwnerChanged {
        ip: IpAddr,
        holder: Option<String>,
        is_self: bool,
        was_self: bool,
    },
    /// Another instance on this node took the node lease: this instance withdrew everything and stopped.
    Superseded { by: String },
    /// The core has finished (graceful stop complete, or superseded); nothing more will be asked.
    Stopped,
}

/// What one IP needs (see [`OwnershipCore::judge`]).
#[derive(Debug, Default)]
struct Verdict {
    /// Announce the IP.
    announce: bool,
    /// Decide it again then, if nothing else makes it due before.
    wake: Option<Instant>,
    /// The lease operation to send.
    step: Option<Step>,
}

impl Verdict {
    fn wake_at(&mut self, at: Instant) {
        if self.wake.is_none_or(|w| at < w) {
            self.wake = Some(at);
        }
    }
}

/// A lease operation one IP needs.
#[derive(Debug)]
enum Step {
    /// Release the lease (after the withdrawal, in the same batch).
    Release,
    /// Write the lease for this instance.
    Write { purpose: Purpose, create: bool },
    /// Read the node lease of a dead holder's node (a takeover check).
    Check { node: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Acquire,
    Takeover,
    Reassert,
    Release,
}

/// A write of an IP lease in flight.
#[derive(Debug)]
struct IpWrite {
    name: String,
    /// This agent's epoch when the write was sent.
    sent_epoch: u64,
    purpose: Purpose,
    /// The resourceVersion the write was based on (`None` for a create).
    base_rv: Option<String>,
}

#[derive(Debug)]
enum Pending {
    NodeGet,
    NodeWrite { sent_at: Instant, release: bool },
    IpWrite(IpWrite),
    TakeoverCheck { node: String },
    IpRefresh { name: String },
}

#[derive(Debug, Clone)]
struct NodeView {
    holder: Option<String>,
    rv: String,
    rv_changed_at: Instant,
    holder_changed_at: Instant,
}

#[derive(Debug, Default)]
struct OwnNode {
    /// Last record read or written; `None` with `absent` = known not to exist; `None` without = unknown.
    record: Option<LeaseRecord>,
    absent: bool,
    ever_held: bool,
    /// Send time of the last renew that succeeded.
    last_ok_sent: Option<Instant>,
    next_at: Option<Instant>,
    released: bool,
}

#[derive(Debug)]
struct IpState {
    name: String,
    desire: Option<IpDesire>,
    /// Last local change relevant to candidate timing (holder change, desire change).
    changed_at: Instant,
    asserted_epoch: Option<u64>,
    yielded_until: Option<Instant>,
    retry_at: Option<Instant>,
    /// After a lost race: the resourceVersion the view of the lease had then (`None`: no lease). If the view still
    /// shows it when the retry comes due, the watch is behind and the lease is read instead of written again.
    lost_at_view: Option<Option<String>>,
    notified_holder: Option<Option<String>>,
}

/// The ownership decision core of one agent instance. See the module docs.
#[derive(Debug)]
pub struct OwnershipCore {
    me: Identity,
    holder: String,
    own_lease: String,
    timing: ElectionTiming,
    policy: OutagePolicy,
    synced_at: Option<Instant>,
    next_op: OpId,
    ops: BTreeMap<OpId, Pending>,
    busy: BTreeSet<String>,
    own: OwnNode,
    nodes: BTreeMap<String, NodeView>,
    node_absent_since: BTreeMap<String, Instant>,
    /// Takeover checks by node name (see [`NodeCheck`]).
    checks: BTreeMap<String, NodeCheck>,
    /// Boxed for the same reason as `ips`.
    leases: BTreeMap<String, Box<LeaseRecord>>,
    /// Boxed: an `IpState` is about 190 bytes, and stored inline the B-tree nodes' unused slots cost more than the
    /// box (at 10,000 IPs, 3.9 MB of nodes before).
    ips: BTreeMap<IpAddr, Box<IpState>>,
    /// IP lease name → IP, for the IPs in `ips`.
    names: BTreeMap<String, IpAddr>,
    announced: BTreeSet<IpAddr>,
    /// The interface each announced IP was announced on.
    announced_on: BTreeMap<IpAddr, Option<String>>,
    /// Desired IPs this agent has announced at some point (forgotten with the IP).
    answered_before: BTreeSet<IpAddr>,
    hold_set: BTreeSet<IpAddr>,
    epoch: u64,
    gap_counted_for: Option<Instant>,
    stopping: bool,
    stopped: bool,
    superseded: Option<String>,
    wake: Option<Instant>,
    wire_yields: u64,
    /// Which IPs the next round decides.
    schedule: Schedule,
    /// When the last round ran (node expiry points passed since then make every IP due).
    last_poll: Option<Instant>,
    /// Health at the last round.
    last_healthy: Option<bool>,
    /// Every round decides every IP (see [`OwnershipCore::decide_every_ip`]).
    decide_all: bool,
    /// Liveness gaps that ended before anyone could have taken over (no re-assertion needed).
    harmless_gaps: u64,
}

impl OwnershipCore {
    /// A core for `me`. `timing` should have been validated ([`ElectionTiming::validate`]).
    pub fn new(me: Identity, timing: ElectionTiming, policy: OutagePolicy) -> Self {
        Self {
            holder: me.holder(),
            own_lease: me.node_lease_name(),
            me,
            timing,
            policy,
            synced_at: None,
            next_op: 1,
            ops: BTreeMap::new(),
            busy: BTreeSet::new(),
            own: OwnNode::default(),
            nodes: BTreeMap::new(),
            node_absent_since: BTreeMap::new(),
            checks: BTreeMap::new(),
            leases: BTreeMap::new(),
            ips: BTreeMap::new(),
            names: BTreeMap::new(),
            announced: BTreeSet::new(),
            announced_on: BTreeMap::new(),
            answered_before: BTreeSet::new(),
            hold_set: BTreeSet::new(),
            epoch: 0,
            gap_counted_for: None,
            stopping: false,
            stopped: false,
            superseded: None,
            wake: None,
            wire_yields: 0,
            schedule: Schedule::default(),
            last_poll: None,
            last_healthy: None,
            decide_all: false,
            harmless_gaps: 0,
        }
    }

    /// For tests: every decision round visits every IP, not only those due. The decisions must be the same; the
    /// simulations check that they are.
    #[doc(hidden)]
    pub fn decide_every_ip(&mut self) {
        self.decide_all = true;
    }

    /// This agent's identity.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// IPs currently announced (as decided by the last [`poll`](Self::poll)).
    pub fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.announced
    }

    /// Whether this instance renewed its node lease less than `D` ago.
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.superseded.is_none()
            && self
                .own
                .last_ok_sent
                .is_some_and(|t| now < t + self.timing.renew_deadline)
    }

    /// Whether the core has stopped (see [`Action::Stopped`]).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The holder of an IP's lease as this agent last saw it.
    pub fn holder_of(&self, ip: IpAddr) -> Option<&str> {
        let name = naming::ip_lease_name(ip).ok()?;
        self.leases.get(&name)?.holder()
    }

    /// How many liveness gaps ended before anyone could have taken over an IP of this instance (its IPs stayed
    /// asserted; see [`ElectionTiming::gap_is_harmless`]).
    pub fn harmless_gaps(&self) -> u64 {
        self.harmless_gaps
    }

    /// How many on-wire yields this instance performed.
    pub fn wire_yields(&self) -> u64 {
        self.wire_yields
    }

    /// When to poll next if no input arrives (computed by the last [`poll`](Self::poll)).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.wake
    }

    // ----- inputs ---------------------------------------------------------------------------------------------

    /// Declares (or updates) an IP this agent should take part in. Errors for IPs that cannot be named as a lease.
    pub fn set_desired(&mut self, now: Instant, ip: IpAddr, desire: IpDesire) -> crate::Result<()> {
        let name = naming::ip_lease_name(ip)?;
        self.names.insert(name.clone(), ip);
        let state = self.ips.entry(ip).or_insert_with(|| {
            Box::new(IpState {
                name,
                desire: None,
                changed_at: now,
                asserted_epoch: None,
                yielded_until: None,
                retry_at: None,
                lost_at_view: None,
                notified_holder: None,
            })
        });
        if state.desire.as_ref() != Some(&desire) {
            state.desire = Some(desire);
            state.changed_at = now;
            self.schedule.touch(ip);
        }
        Ok(())
    }

    /// The IP is no longer wanted (Service deleted, IP changed). If this instance holds it, it is withdrawn and
    /// released; the state is forgotten once that is done.
    pub fn remove_desired(&mut self, now: Instant, ip: IpAddr) {
        if let Some(state) = self.ips.get_mut(&ip) {
            state.desire = None;
            state.changed_at = now;
            self.schedule.touch(ip);
        }
    }

    /// The L2 engine saw another MAC claim `ip` while this instance announced it: withdraw at once, re-assert only
    /// after `YIELD_HOLDOFF_FACTOR × T`.
    pub fn on_wire_conflict(&mut self, now: Instant, ip: IpAddr) {
        let holdoff = self.timing.takeover_after * YIELD_HOLDOFF_FACTOR;
        if let Some(state) = self.ips.get_mut(&ip)
            && self.announced.contains(&ip)
        {
            state.yielded_until = Some(now + holdoff);
            state.asserted_epoch = None;
            self.hold_set.remove(&ip);
            self.wire_yields += 1;
            self.schedule.touch(ip);
        }
    }

    /// Starts the graceful stop: withdraw everything, release every IP lease, then the node lease.
    pub fn begin_shutdown(&mut self, _now: Instant) {
        self.stopping = true;
        self.schedule.touch_all();
    }

    /// A watch observation.
    pub fn observe(&mut self, now: Instant, event: WatchEvent) {
        match event {
            WatchEvent::Applied(record) => self.apply(now, record, false),
            WatchEvent::Deleted { name } => self.forget(now, &name),
            WatchEvent::Resynced(records) => {
                let present: BTreeSet<String> = records.iter().map(|r| r.name.clone()).collect();
                let gone: Vec<String> = self
                    .nodes
                    .keys()
                    .map(|n| naming::node_lease_name(n))
                    .chain(self.leases.keys().cloned())
                    .filter(|n| !present.contains(n))
                    .collect();
                for name in gone {
                    self.forget(now, &name);
                }
                for record in records {
                    self.apply(now, record, true);
                }
                self.synced_at.get_or_insert(now);
                // The watch was broken: what we did not see, we did not observe.
                self.restart_observation(now);
            }
            WatchEvent::Error(_) => {}
        }
    }

    /// The result of the operation `op`.
    pub fn op_done(&mut self, now: Instant, op: OpId, result: Result<LeaseRecord, StoreError>) {
        let Some(pending) = self.ops.remove(&op) else {
            return;
        };
        match pending {
            Pending::NodeGet => {
                self.busy.remove(&self.own_lease);
                self.node_get_done(now, result);
            }
            Pending::NodeWrite { sent_at, release } => {
                self.busy.remove(&self.own_lease);
                self.node_write_done(now, sent_at, release, result);
            }
            Pending::IpWrite(write) => {
                self.busy.remove(&write.name);
                self.touch_name(&write.name);
                self.ip_write_done(now, write, result);
            }
            Pending::TakeoverCheck { node } => {
                if let Some(check) = self.checks.get_mut(&node)
                    && check.op == Some(op)
                {
                    check.answered(now, &result);
                    // Every IP waiting on this node (covered or not) decides again.
                    self.schedule.touch_all();
                }
                // A newer resourceVersion (our watch is behind) makes the holder live again right here.
                if let Ok(rec) = result {
                    self.apply(now, rec, false);
                }
            }
            Pending::IpRefresh { name } => {
                self.busy.remove(&name);
                if let Some(state) = self.names.get(&name).and_then(|ip| self.ips.get_mut(ip)) {
                    state.lost_at_view = None;
                }
                self.touch_name(&name);
                match result {
                    Ok(rec) => self.apply(now, rec, false),
                    Err(StoreError::NotFound { .. }) => self.forget(now, &name),
                    Err(_) => {}
                }
            }
        }
    }
}

/// Whether `candidate` is newer than `current` (unknown order counts as newer: the latest delivery wins).
fn is_newer(current: &str, candidate: &str) -> bool {
    rv_cmp(current, candidate).is_none_or(|o| o == std::cmp::Ordering::Less)
}

#[cfg(test)]
mod tests;
