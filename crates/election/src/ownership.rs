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

    // ----- observation bookkeeping ----------------------------------------------------------------------------

    fn apply(&mut self, now: Instant, record: LeaseRecord, from_list: bool) {
        if let Some(node) = naming::node_of_lease(&record.name) {
            let node = node.to_owned();
            self.node_absent_since.remove(&node);
            let holder = record.holder().map(str::to_owned);
            let rv = record.rv().to_owned();
            if record.name == self.own_lease
                && holder.as_deref() == Some(self.holder.as_str())
                && self.own.record.as_ref().is_none_or(|r| is_newer(r.rv(), &rv))
            {
                self.own.record = Some(record.clone());
                self.own.absent = false;
            }
            let t = self.timing.takeover_after;
            match self.nodes.get_mut(&node) {
                Some(view) => {
                    if view.rv == rv || (!from_list && !is_newer(&view.rv, &rv)) {
                        return;
                    }
                    // A node renewing as before changes no decision; one coming back, or changing hands, may
                    // change every IP's candidates or takeover.
                    let was_live = view.holder.is_some() && now < view.rv_changed_at + t;
                    view.rv = rv;
                    view.rv_changed_at = now;
                    if view.holder != holder {
                        view.holder = holder;
                        view.holder_changed_at = now;
                        self.schedule.touch_all();
                    } else if !was_live {
                        self.schedule.touch_all();
                    }
                }
                None => {
                    self.schedule.touch_all();
                    self.nodes.insert(
                        node,
                        NodeView {
                            holder,
                            rv,
                            rv_changed_at: now,
                            holder_changed_at: now,
                        },
                    );
                }
            }
        } else if record.name.starts_with(naming::IP_LEASE_PREFIX) {
            let old_holder = match self.leases.get(&record.name) {
                Some(old) if old.rv() == record.rv() => return,
                Some(old) if !from_list && !is_newer(old.rv(), record.rv()) => return,
                Some(old) => old.holder().map(str::to_owned),
                None => None,
            };
            if old_holder.as_deref() != record.holder() {
                self.touch_ip(now, &record.name);
            }
            if let Some(state) = self.names.get(&record.name).and_then(|ip| self.ips.get_mut(ip))
                && state.lost_at_view.take().is_some()
            {
                // The watch showed what the lost race was about: decide on it now.
                state.retry_at = None;
            }
            self.touch_name(&record.name);
            self.leases.insert(record.name.clone(), Box::new(record));
        }
    }

    fn forget(&mut self, now: Instant, name: &str) {
        if let Some(node) = naming::node_of_lease(name) {
            if self.nodes.remove(node).is_some() {
                self.node_absent_since.insert(node.to_owned(), now);
                self.schedule.touch_all();
            }
            if name == self.own_lease {
                self.own.record = None;
                self.own.absent = true;
            }
        } else if self.leases.remove(name).is_some() {
            self.touch_ip(now, name);
            if let Some(state) = self.names.get(name).and_then(|ip| self.ips.get_mut(ip))
                && state.lost_at_view.take().is_some()
            {
                state.retry_at = None;
            }
        }
    }

    /// Starts every node's observation window afresh. Called when this agent's watch re-lists and when its own
    /// liveness gap ends: a node lease that did not change while *we* could not watch or write was not observed to
    /// be stale, and the cause (an API outage) may have hit its holder too. Without this, the node that reconnects
    /// first would take over from every node that simply has not renewed yet. Delays takeovers by at most `T` after
    /// such an event.
    fn restart_observation(&mut self, now: Instant) {
        for view in self.nodes.values_mut() {
            view.rv_changed_at = view.rv_changed_at.max(now);
            view.holder_changed_at = view.holder_changed_at.max(now);
        }
        for since in self.node_absent_since.values_mut() {
            *since = (*since).max(now);
        }
        if let Some(synced) = &mut self.synced_at {
            *synced = (*synced).max(now);
        }
        // Checks answered (or sent) before the restart must not serve decisions after it.
        self.checks.clear();
        self.schedule.touch_all();
    }

    /// The holder of the lease `name` changed: its IP's candidates start their stagger afresh.
    fn touch_ip(&mut self, now: Instant, name: &str) {
        if let Some(&ip) = self.names.get(name)
            && let Some(state) = self.ips.get_mut(&ip)
        {
            state.changed_at = now;
            self.schedule.touch(ip);
        }
    }

    /// Something about the lease `name` changed: its IP is decided again.
    fn touch_name(&mut self, name: &str) {
        if let Some(&ip) = self.names.get(name) {
            self.schedule.touch(ip);
        }
    }

    // ----- own node lease -------------------------------------------------------------------------------------

    fn node_get_done(&mut self, now: Instant, result: Result<LeaseRecord, StoreError>) {
        match result {
            Ok(rec) => {
                match rec.holder() {
                    Some(h) if h != self.holder && self.own.ever_held => {
                        self.superseded = Some(h.to_owned());
                    }
                    _ => {}
                }
                self.own.record = Some(rec);
                self.own.absent = false;
                self.own.next_at = Some(now);
            }
            Err(StoreError::NotFound { .. }) => {
                self.own.record = None;
                self.own.absent = true;
                self.own.next_at = Some(now);
            }
            Err(_) => self.own.next_at = Some(now + self.timing.renew_retry()),
        }
    }

    fn node_write_done(
        &mut self,
        now: Instant,
        sent_at: Instant,
        release: bool,
        result: Result<LeaseRecord, StoreError>,
    ) {
        match result {
            Ok(rec) => {
                self.own.record = Some(rec);
                self.own.absent = false;
                if release {
                    self.own.released = true;
                    return;
                }
                self.own.ever_held = true;
                let last = self.own.last_ok_sent;
                let gap_ended = last.is_none_or(|t| sent_at >= t + self.timing.renew_deadline);
                self.note_gap(sent_at);
                // An answer that arrives after the previous renew's deadline ends a gap too, even if no decision
                // round ran at the deadline itself (a busy task, or the answer and the timer ready at once).
                self.note_gap(now);
                // The gap ends here. Unless this renew took effect before anyone could have confirmed this node dead,
                // every IP must be re-asserted (a new epoch): one may have been taken over meanwhile.
                if let Some(last) = last
                    && now >= last + self.timing.renew_deadline
                {
                    if self.timing.gap_is_harmless(now - last) {
                        self.harmless_gaps += 1;
                    } else {
                        self.epoch += 1;
                        self.schedule.touch_all();
                    }
                }
                if gap_ended && self.own.last_ok_sent.is_some() {
                    self.restart_observation(now);
                }
                if self.own.last_ok_sent.is_none_or(|t| t < sent_at) {
                    self.own.last_ok_sent = Some(sent_at);
                }
                self.own.next_at = Some(sent_at + self.timing.node_renew_period);
            }
            Err(e) if e.is_lost_race() => {
                // Someone wrote our node lease: read it to learn whether that was us (a lost response) or another
                // instance of this node (then we are superseded).
                self.own.record = None;
                self.own.absent = false;
                self.own.next_at = Some(now);
                if release {
                    self.own.released = true;
                }
            }
            Err(_) => {
                if release {
                    // Best effort: a node lease we cannot release expires by observation anyway.
                    self.own.released = true;
                }
                self.own.next_at = Some(now + self.timing.renew_retry());
            }
        }
    }

    /// Counts a liveness gap that ended before `upto` (a renew sent later than `D` after the last successful one).
    fn note_gap(&mut self, upto: Instant) {
        if let Some(last) = self.own.last_ok_sent
            && upto >= last + self.timing.renew_deadline
            && self.gap_counted_for != Some(last)
        {
            self.start_gap(last);
        }
    }

    /// A gap begins: no IP counts as asserted while it lasts (the agent is not healthy); whether they must be
    /// asserted again after it is decided when it ends (`node_write_done`).
    fn start_gap(&mut self, last_ok: Instant) {
        self.gap_counted_for = Some(last_ok);
        self.schedule.touch_all();
        if self.policy == OutagePolicy::Hold {
            self.hold_set.clone_from(&self.announced);
        }
    }

    fn node_record(&self, release: bool) -> LeaseRecord {
        let prev = self.own.record.clone().unwrap_or_default();
        let mut record = LeaseRecord {
            name: self.own_lease.clone(),
            resource_version: prev.resource_version.clone(),
            labels: naming::node_lease_labels(self.me.node()).into(),
            holder: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration_seconds()),
            lease_transitions: prev.lease_transitions,
            acquire_time: prev.acquire_time,
            renew_time: None,
        };
        if prev.holder() != Some(self.holder.as_str()) {
            record.lease_transitions = Some(prev.lease_transitions.unwrap_or(0) + i32::from(prev.holder().is_some()));
            record.acquire_time = None;
        }
        if release {
            record.holder = None;
            record.lease_duration_seconds = Some(1);
        }
        record
    }

    fn poll_node_lease(&mut self, now: Instant, out: &mut Vec<Action>, release: bool) {
        if self.busy.contains(&self.own_lease) || self.own.released {
            return;
        }
        let due = self.own.next_at.unwrap_or(now);
        if now < due && !release {
            self.wake_at(due);
            return;
        }
        let op = self.next_op();
        if release {
            if self
                .own
                .record
                .as_ref()
                .is_none_or(|r| r.holder() != Some(self.holder.as_str()))
            {
                self.own.released = true;
                return;
            }
            let record = self.node_record(true);
            self.ops.insert(
                op,
                Pending::NodeWrite {
                    sent_at: now,
                    release: true,
                },
            );
            self.busy.insert(self.own_lease.clone());
            out.push(Action::Replace { op, record });
        } else if self.own.record.is_none() && !self.own.absent {
            self.ops.insert(op, Pending::NodeGet);
            self.busy.insert(self.own_lease.clone());
            out.push(Action::Get {
                op,
                name: self.own_lease.clone(),
            });
        } else {
            let record = self.node_record(false);
            self.ops.insert(
                op,
                Pending::NodeWrite {
                    sent_at: now,
                    release: false,
                },
            );
            self.busy.insert(self.own_lease.clone());
            if self.own.absent {
                out.push(Action::Create { op, record });
            } else {
                out.push(Action::Replace { op, record });
            }
        }
    }

    // ----- decisions ------------------------------------------------------------------------------------------

    fn next_op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    fn wake_at(&mut self, at: Instant) {
        if self.wake.is_none_or(|w| at < w) {
            self.wake = Some(at);
        }
    }

    fn node_live(&self, node: &str, now: Instant) -> bool {
        if node == self.me.node() {
            return self.is_healthy(now) && !self.stopping;
        }
        self.nodes
            .get(node)
            .is_some_and(|v| v.holder.is_some() && now < v.rv_changed_at + self.timing.takeover_after)
    }

    /// From when the holder counts as dead, by local observation. `None` before the first watch sync.
    fn holder_dead_from(&self, holder: &str) -> Option<Instant> {
        let node = holder_node(holder);
        let t = self.timing.takeover_after;
        match self.nodes.get(node) {
            Some(v) if v.holder.as_deref() == Some(holder) => Some(v.rv_changed_at + t),
            Some(v) => Some(v.holder_changed_at + t),
            None => Some(self.node_absent_since.get(node).copied().or(self.synced_at)? + t),
        }
    }

    fn expectation(&self, holder: &str) -> Expect {
        match self.nodes.get(holder_node(holder)) {
            Some(v) if v.holder.as_deref() == Some(holder) => Expect::SameRv(v.rv.clone()),
            _ => Expect::NotHeldBy(holder.to_owned()),
        }
    }

    /// This node's rank among the live eligible candidates for `ip`, if it is one.
    fn my_rank(&self, ip: IpAddr, desire: &IpDesire, now: Instant) -> Option<u32> {
        let live = desire
            .eligible_nodes
            .iter()
            .map(String::as_str)
            .filter(|n| self.node_live(n, now));
        let ranked = rank_nodes(ip, live);
        ranked
            .iter()
            .position(|n| *n == self.me.node())
            .and_then(|k| u32::try_from(k).ok())
    }

    /// The interface of a desired IP.
    fn interface_of(&self, ip: IpAddr) -> Option<String> {
        self.ips.get(&ip)?.desire.as_ref()?.interface.clone()
    }

    /// Starts announcing `ip` (which this agent holds): where, and whether it is a takeover. The lease counts
    /// holders from 1 (ours, if we were the first): more means another agent, or this one before a release, held it.
    fn announce(&mut self, ip: IpAddr) -> Announce {
        let interface = self.interface_of(ip);
        let transitions = self
            .ips
            .get(&ip)
            .and_then(|s| self.leases.get(&s.name))
            .and_then(|l| l.lease_transitions)
            .unwrap_or(0);
        let held_before = transitions > 1 || self.answered_before.contains(&ip);
        self.answered_before.insert(ip);
        self.announced_on.insert(ip, interface.clone());
        Announce {
            ip,
            interface,
            held_before,
        }
    }

    fn ip_record(&self, ip: IpAddr, desire: &IpDesire, prev: Option<&LeaseRecord>) -> crate::Result<LeaseRecord> {
        let name = naming::ip_lease_name(ip)?;
        let prev_holder = prev.and_then(|p| p.holder());
        let same_holder = prev_holder == Some(self.holder.as_str());
        let transitions = prev.and_then(|p| p.lease_transitions).unwrap_or(0);
        Ok(LeaseRecord {
            name,
            resource_version: prev.and_then(|p| p.resource_version.clone()),
            labels: naming::ip_lease_labels(ip, &desire.eip)?.into(),
            holder: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration_seconds()),
            lease_transitions: Some(if same_holder { transitions } else { transitions + 1 }),
            acquire_time: if same_holder {
                prev.and_then(|p| p.acquire_time)
            } else {
                None
            },
            renew_time: None,
        })
    }

    fn release_record(prev: &LeaseRecord) -> LeaseRecord {
        LeaseRecord {
            holder: None,
            acquire_time: None,
            renew_time: None,
            ..prev.clone()
        }
    }

    fn issue_ip_write(&mut self, out: &mut Vec<Action>, record: LeaseRecord, purpose: Purpose, create: bool) {
        let op = self.next_op();
        self.busy.insert(record.name.clone());
        self.ops.insert(
            op,
            Pending::IpWrite(IpWrite {
                name: record.name.clone(),
                sent_epoch: self.epoch,
                purpose,
                base_rv: record.resource_version.clone(),
            }),
        );
        out.push(if create {
            Action::Create { op, record }
        } else {
            Action::Replace { op, record }
        });
    }

    fn ip_write_done(&mut self, now: Instant, write: IpWrite, result: Result<LeaseRecord, StoreError>) {
        let IpWrite {
            name,
            sent_epoch,
            purpose,
            base_rv,
        } = write;
        let healthy = self.is_healthy(now);
        let epoch = self.epoch;
        let ip = self.names.get(&name).copied();
        match result {
            Ok(rec) => {
                if let Some(ip) = ip
                    && let Some(state) = self.ips.get_mut(&ip)
                {
                    state.retry_at = None;
                    if purpose == Purpose::Release {
                        state.asserted_epoch = None;
                    } else if sent_epoch == epoch && healthy {
                        state.asserted_epoch = Some(epoch);
                        state.yielded_until = None;
                        self.hold_set.remove(&ip);
                    }
                }
                self.apply(now, rec, false);
            }
            Err(e) => {
                let lost = e.is_lost_race() || matches!(e, StoreError::NotFound { .. });
                if let Some(ip) = ip
                    && let Some(state) = self.ips.get_mut(&ip)
                {
                    if lost && purpose == Purpose::Reassert {
                        // The lease moved while we could not renew: whoever wrote it owns it now.
                        state.asserted_epoch = None;
                        self.hold_set.remove(&ip);
                    }
                    let view = self.leases.get(&name).map(|l| l.rv().to_owned());
                    if lost && view != base_rv {
                        // The watch already showed what we lost to: decide on that at once.
                        state.retry_at = None;
                    } else if lost {
                        // The winner's write is on its way in the watch; if it is not there by the retry, read.
                        state.lost_at_view = Some(view);
                        state.retry_at = Some(now + self.timing.node_renew_period);
                    } else {
                        state.retry_at = Some(
                            now + match e {
                                StoreError::Rejected { .. } => self.timing.takeover_after,
                                _ => self.timing.renew_retry(),
                            },
                        );
                    }
                }
            }
        }
    }

    /// Computes decisions. Call after every input and when [`next_wakeup`](Self::next_wakeup) is reached.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.wake = None;
        if self.stopped {
            return out;
        }
        if let Some(by) = self.superseded.clone() {
            out.extend(self.announced.iter().map(|ip| Action::Withdraw(*ip)));
            self.announced.clear();
            self.announced_on.clear();
            self.stopped = true;
            out.push(Action::Superseded { by });
            out.push(Action::Stopped);
            return out;
        }

        // Liveness gap of this instance (its deadline passed without a successful renew).
        if let Some(last) = self.own.last_ok_sent {
            let deadline = last + self.timing.renew_deadline;
            if now >= deadline {
                if self.gap_counted_for != Some(last) {
                    self.start_gap(last);
                }
            } else {
                self.wake_at(deadline);
            }
        }
        let healthy = self.is_healthy(now);
        if self.last_healthy != Some(healthy) {
            self.last_healthy = Some(healthy);
            self.schedule.touch_all();
        }
        if self.decide_all {
            self.schedule.touch_all();
        }
        let synced = self.synced_at.is_some();
        // Answers older than both the freshness window and the retry delay serve nothing any more.
        let keep = (self.timing.node_renew_period).max(self.timing.stagger_step * CHECK_FRESHNESS_STEPS);
        let checks = self.checks.len();
        self.checks.retain(|_, c| c.alive(now, keep));
        // A node became dead (or its holder's death point passed) since the last round: candidate lists and
        // takeovers may change for every IP.
        if self.checks.len() != checks
            || self
                .last_poll
                .is_some_and(|last| self.node_expiries().any(|at| last < at && at <= now))
        {
            self.schedule.touch_all();
        }

        let mut withdraw = Vec::new();
        let mut announce = Vec::new();
        let mut writes = Vec::new();
        for ip in self.schedule.take_due(now, self.ips.keys().copied()) {
            if !self.ips.contains_key(&ip) {
                continue;
            }
            let want = self.decide(ip, now, healthy, synced, &mut writes);
            if let Some(change) = self.owner_change(ip) {
                out.push(change);
            }
            // An announced IP whose interface changed moves: withdrawn, then announced on the new one.
            let was = self.announced.contains(&ip);
            let moved = want && was && self.announced_on.get(&ip) != Some(&self.interface_of(ip));
            if was && (!want || moved) {
                withdraw.push(ip);
            }
            if want && (!was || moved) {
                announce.push(ip);
            }
            self.forget_if_done(ip);
        }
        // Withdrawals strictly before announcements and writes.
        for ip in withdraw {
            self.announced.remove(&ip);
            self.announced_on.remove(&ip);
            self.hold_set.remove(&ip);
            out.push(Action::Withdraw(ip));
        }
        for ip in announce {
            let announce = self.announce(ip);
            self.announced.insert(ip);
            out.push(Action::Announce(announce));
        }
        out.extend(writes);

        if self.stopping {
            self.poll_shutdown(now, &mut out);
        } else {
            self.poll_node_lease(now, &mut out, false);
        }
        // Liveness of other nodes expires on its own: wake up when a candidate list or a dead holder changes.
        let expiries: Vec<Instant> = self.node_expiries().filter(|at| *at > now).collect();
        for at in expiries {
            self.wake_at(at);
        }
        if let Some(at) = self.schedule.next_timer() {
            self.wake_at(at);
        }
        self.last_poll = Some(now);
        out
    }

    /// The moments at which a node's liveness, or the death of a holder on it, changes by itself (with no input).
    fn node_expiries(&self) -> impl Iterator<Item = Instant> + '_ {
        let t = self.timing.takeover_after;
        self.nodes
            .values()
            .flat_map(move |v| [v.rv_changed_at + t, v.holder_changed_at + t])
            .chain(self.node_absent_since.values().map(move |s| *s + t))
            .chain(self.synced_at.map(|s| s + t))
    }

    /// The ownership notification for `ip`, if its holder changed since the last one.
    fn owner_change(&mut self, ip: IpAddr) -> Option<Action> {
        let state = self.ips.get_mut(&ip)?;
        let holder = self.leases.get(&state.name).and_then(|l| l.holder());
        if state.notified_holder.as_ref().map(Option::as_deref) == Some(holder) {
            return None;
        }
        let holder = holder.map(str::to_owned);
        let was_self = matches!(&state.notified_holder, Some(Some(h)) if *h == self.holder);
        let is_self = holder.as_deref() == Some(self.holder.as_str());
        let notify = state.notified_holder.is_some() || holder.is_some();
        state.notified_holder = Some(holder.clone());
        notify.then_some(Action::OwnerChanged {
            ip,
            holder,
            is_self,
            was_self,
        })
    }

    /// Forgets `ip` once it is neither desired nor held by this instance, and no operation on it is in flight.
    fn forget_if_done(&mut self, ip: IpAddr) {
        let Some(state) = self.ips.get(&ip) else {
            return;
        };
        if state.desire.is_some()
            || self.busy.contains(&state.name)
            || self.leases.get(&state.name).and_then(|l| l.holder()) == Some(self.holder.as_str())
        {
            return;
        }
        self.names.remove(&state.name);
        self.ips.remove(&ip);
        self.answered_before.remove(&ip);
        self.schedule.forget(ip);
    }

    /// Decides one IP: sets its timer, pushes at most one lease operation, and returns whether it should be announced.
    fn decide(&mut self, ip: IpAddr, now: Instant, healthy: bool, synced: bool, writes: &mut Vec<Action>) -> bool {
        let verdict = self.judge(ip, now, healthy, synced);
        if let Some(at) = verdict.wake {
            self.schedule.set_timer(ip, at);
        }
        let (Some(step), Some(state)) = (verdict.step, self.ips.get(&ip)) else {
            return verdict.announce;
        };
        let name = state.name.clone();
        let lease = self.leases.get(&name).map(|l| &**l);
        let stale = state
            .lost_at_view
            .as_ref()
            .is_some_and(|seen| seen.as_deref() == lease.map(LeaseRecord::rv));
        match step {
            // A race was lost and the watch still shows what we based the write on: read before writing again.
            Step::Release | Step::Write { .. } if stale => {
                let op = self.next_op();
                self.busy.insert(name.clone());
                self.ops.insert(op, Pending::IpRefresh { name: name.clone() });
                writes.push(Action::Get { op, name });
            }
            Step::Release => {
                if let Some(lease) = lease {
                    let record = Self::release_record(lease);
                    self.issue_ip_write(writes, record, Purpose::Release, false);
                }
            }
            Step::Write { purpose, create } => {
                let Some(Ok(record)) = state.desire.as_ref().map(|d| self.ip_record(ip, d, lease)) else {
                    return verdict.announce;
                };
                if purpose == Purpose::Takeover
                    && let Some(h) = lease.and_then(|l| l.holder())
                    && let Some(check) = self.checks.get_mut(holder_node(h))
                {
                    check.covered.remove(&ip);
                }
                self.issue_ip_write(writes, record, purpose, create);
            }
            Step::Check { node } => self.issue_node_check(now, &node, writes),
        }
        verdict.announce
    }

    /// What `ip` needs now (see the module docs for the rules).
    fn judge(&self, ip: IpAddr, now: Instant, healthy: bool, synced: bool) -> Verdict {
        let mut verdict = Verdict::default();
        let Some(state) = self.ips.get(&ip) else {
            return verdict;
        };
        let lease = self.leases.get(&state.name).map(|l| &**l);
        let holder = lease.and_then(|l| l.holder());
        let desire = state.desire.as_ref();
        let eligible = !self.stopping && desire.is_some_and(|d| d.eligible_nodes.contains(self.me.node()));
        let busy = self.busy.contains(&state.name);
        let retry_ok = state.retry_at.is_none_or(|t| now >= t);
        if let Some(t) = state.retry_at.filter(|t| *t > now) {
            verdict.wake_at(t);
        }

        if holder == Some(self.holder.as_str()) {
            if !eligible {
                // Withdraw first (the verdict does not announce), then release in the same batch.
                if !busy && retry_ok {
                    verdict.step = Some(Step::Release);
                }
                return verdict;
            }
            if let Some(t) = state.yielded_until.filter(|t| now < *t) {
                verdict.wake_at(t);
                return verdict;
            }
            let asserted = state.asserted_epoch == Some(self.epoch);
            let held = self.policy == OutagePolicy::Hold && self.hold_set.contains(&ip) && self.announced.contains(&ip);
            if !healthy {
                verdict.announce = held;
                return verdict;
            }
            if !asserted && !busy && retry_ok {
                verdict.step = Some(Step::Write {
                    purpose: Purpose::Reassert,
                    create: false,
                });
            }
            verdict.announce = asserted || held;
            return verdict;
        }

        // Not ours: never announce. Maybe acquire or take over.
        let Some(desire) = desire else {
            return verdict;
        };
        if !eligible || !healthy || !synced || busy || !retry_ok {
            return verdict;
        }
        let Some(k) = self.my_rank(ip, desire, now) else {
            return verdict;
        };
        match (holder, lease) {
            (None, lease) => {
                // Warm-up: act on free IPs only once every live node had a renew period to show up in our watch,
                // so a cold start of the whole cluster ranks against the full candidate list, not first-come.
                let warm = self.synced_at.map_or(now, |s| s + self.timing.node_renew_period);
                let create = lease.is_none();
                // A lease nobody created yet is a new IP, which no holder is handing over: the lower ranks give the
                // first a renew period each, time for its create to reach their watch even under load, instead of
                // racing it (a lost create costs two requests). A released lease is a handover, taken at once.
                let step = if create {
                    self.timing.stagger_step.max(self.timing.node_renew_period)
                } else {
                    self.timing.stagger_step
                };
                let at = state.changed_at.max(warm) + step * k;
                if now < at {
                    verdict.wake_at(at);
                } else {
                    verdict.step = Some(Step::Write {
                        purpose: Purpose::Acquire,
                        create,
                    });
                }
            }
            (Some(h), Some(lease)) => {
                let Some(dead_from) = self.holder_dead_from(h) else {
                    return verdict;
                };
                // A live holder is left alone, with no timer: its death point is a node expiry, at which every IP
                // is decided again.
                if now < dead_from {
                    return verdict;
                }
                let at = dead_from.max(state.changed_at) + self.timing.stagger_step * k;
                if now < at {
                    verdict.wake_at(at);
                    return verdict;
                }
                let node = holder_node(h);
                let check = self.checks.get(node);
                match check.map_or(CheckVerdict::Read, |c| c.verdict(ip, h, lease.rv(), now, &self.timing)) {
                    CheckVerdict::Takeover => {
                        verdict.step = Some(Step::Write {
                            purpose: Purpose::Takeover,
                            create: false,
                        });
                    }
                    CheckVerdict::Wait(until) => {
                        if let Some(t) = until {
                            verdict.wake_at(t);
                        }
                    }
                    CheckVerdict::Read => verdict.step = Some(Step::Check { node: node.to_owned() }),
                }
            }
            (Some(_), None) => {}
        }
        verdict
    }

    /// Sends the one takeover check of `node`: a GET of its node lease covering every desired IP whose lease names a
    /// holder on `node` that is dead by now (see [`NodeCheck`]).
    fn issue_node_check(&mut self, now: Instant, node: &str, out: &mut Vec<Action>) {
        let mut covered = BTreeMap::new();
        let mut expect = BTreeMap::new();
        for (ip, state) in &self.ips {
            let Some(lease) = self.leases.get(&state.name) else {
                continue;
            };
            let Some(h) = lease.holder().filter(|h| holder_node(h) == node) else {
                continue;
            };
            if h == self.holder || self.holder_dead_from(h).is_none_or(|dead| now < dead) {
                continue;
            }
            if !expect.contains_key(h) {
                expect.insert(h.to_owned(), self.expectation(h));
            }
            covered.insert(*ip, (lease.rv().to_owned(), h.to_owned()));
        }
        let op = self.next_op();
        self.ops.insert(op, Pending::TakeoverCheck { node: node.to_owned() });
        self.checks
            .insert(node.to_owned(), NodeCheck::sent(op, covered, expect));
        out.push(Action::Get {
            op,
            name: naming::node_lease_name(node),
        });
    }

    fn poll_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        // Leases naming this instance without local state (never desired in this process) are released too.
        let orphans: Vec<LeaseRecord> = self
            .leases
            .values()
            .filter(|l| l.holder() == Some(self.holder.as_str()))
            .filter(|l| !self.busy.contains(&l.name) && !self.names.contains_key(&l.name))
            .map(|l| LeaseRecord::clone(l))
            .collect();
        for lease in orphans {
            self.issue_ip_write(out, Self::release_record(&lease), Purpose::Release, false);
        }
        let ip_work_left = self
            .ops
            .values()
            .any(|p| !matches!(p, Pending::NodeGet | Pending::NodeWrite { .. }))
            || self.leases.values().any(|l| l.holder() == Some(self.holder.as_str()));
        if ip_work_left {
            // Keep the node lease fresh while releasing so nobody treats our IPs as held by a dead node.
            self.poll_node_lease(now, out, false);
            return;
        }
        if !self.own.released {
            self.poll_node_lease(now, out, true);
        }
        if self.own.released && !self.busy.contains(&self.own_lease) {
            self.stopped = true;
            out.push(Action::Stopped);
        }
    }
}

/// Whether `candidate` is newer than `current` (unknown order counts as newer: the latest delivery wins).
fn is_newer(current: &str, candidate: &str) -> bool {
    rv_cmp(current, candidate).is_none_or(|o| o == std::cmp::Ordering::Less)
}

#[cfg(test)]
mod tests;
