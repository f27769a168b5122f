//! A deterministic discrete-event simulation of several agents running [`OwnershipCore`] against one
//! [`MemoryLeaseStore`]: request/reply latencies, per-agent watch delays (stale observations), partitions, crashes,
//! restarts, graceful stops, per-agent clock rates and the on-wire yield. After every event it checks that no IP is
//! announced by two live agents at once (or, where a test allows it, records how long such an overlap lasted).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use herald_election::lease::{LeaseRecord, StoreError, WatchEvent};
use herald_election::naming::{self, LEASE_KIND_LABEL};
use herald_election::{
    Action, ElectionTiming, Identity, IpDesire, MemoryLeaseStore, OpId, OutagePolicy, OwnershipCore,
};
use tokio::time::Instant;

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub timing: ElectionTiming,
    pub policy: OutagePolicy,
    /// Client → store.
    pub request_latency: Duration,
    /// Store → client.
    pub reply_latency: Duration,
    /// How long a partitioned client waits before its request fails.
    pub unavailable_after: Duration,
    /// Whether announcing sends a gratuitous ARP that other announcers see (on-wire yield).
    pub wire_yield: bool,
    pub wire_delay: Duration,
    /// Fail the test as soon as two agents announce the same IP.
    pub strict: bool,
    /// Every decision round of every agent visits every IP ([`OwnershipCore::decide_every_ip`]).
    pub decide_every_ip: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            timing: ElectionTiming::default(),
            policy: OutagePolicy::Withdraw,
            request_latency: ms(3),
            reply_latency: ms(3),
            unavailable_after: ms(500),
            wire_yield: true,
            wire_delay: ms(5),
            strict: true,
            decide_every_ip: false,
        }
    }
}

#[derive(Debug, Clone)]
enum StoreOp {
    Get(String),
    Create(LeaseRecord),
    Replace(LeaseRecord),
}

#[derive(Debug, Clone)]
enum Ev {
    Wake,
    Apply {
        op: OpId,
        store_op: StoreOp,
    },
    Reply {
        op: OpId,
        result: Result<LeaseRecord, StoreError>,
    },
    Watch(WatchEvent),
    WireConflict(IpAddr),
}

pub struct Agent {
    pub node: String,
    pub core: OwnershipCore,
    pub alive: bool,
    pub stopped: bool,
    pub announced: BTreeSet<IpAddr>,
    pub watch_delay: Duration,
    /// Local clock rate relative to simulated real time.
    pub rate: f64,
    incarnation: u64,
    next_wake: Option<Duration>,
    pub superseded: bool,
    pub restarts: u32,
    /// The watch connection hangs: no events arrive (requests still work).
    pub watch_stalled: bool,
}

/// One read an agent asked for (`Action::Get`), for assertions on API load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub at: Duration,
    pub agent: usize,
    pub name: String,
}

/// One announce/withdraw decision, for assertions on ordering and timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub at: Duration,
    pub agent: usize,
    pub ip: IpAddr,
    pub announce: bool,
}

pub struct Sim {
    pub cfg: SimConfig,
    pub base: Instant,
    pub now: Duration,
    pub store: MemoryLeaseStore,
    pub agents: Vec<Agent>,
    queue: BTreeMap<(Duration, u64), (usize, u64, Ev)>,
    seq: u64,
    pub desired: BTreeMap<IpAddr, IpDesire>,
    pub decisions: Vec<Decision>,
    /// Every read issued by any agent, in order.
    pub reads: Vec<Read>,
    /// Reads not answered yet, by (agent, op): the simulation fails if an agent reads a lease it is already reading
    /// (takeover checks are coalesced per node lease).
    reads_in_flight: BTreeMap<(usize, OpId), String>,
    /// Start of the current overlap per IP, and the longest overlap seen.
    overlap_since: BTreeMap<IpAddr, Duration>,
    pub max_overlap: Duration,
    pub overlaps: u32,
    next_instance: u32,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        Self {
            cfg,
            base: Instant::now(),
            now: Duration::ZERO,
            store: MemoryLeaseStore::new(),
            agents: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            desired: BTreeMap::new(),
            decisions: Vec::new(),
            reads: Vec::new(),
            reads_in_flight: BTreeMap::new(),
            overlap_since: BTreeMap::new(),
            max_overlap: Duration::ZERO,
            overlaps: 0,
            next_instance: 0,
        }
    }

    fn local(&self, i: usize) -> Instant {
        self.base + self.now.mul_f64(self.agents[i].rate)
    }

    fn global_of(&self, i: usize, local: Instant) -> Duration {
        let d = local.saturating_duration_since(self.base);
        // Round up so a wake-up never lands before the local deadline it was asked for.
        d.div_f64(self.agents[i].rate) + Duration::from_micros(1)
    }

    fn push(&mut self, at: Duration, agent: usize, ev: Ev) {
        let inc = self.agents[agent].incarnation;
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), (agent, inc, ev));
    }

    /// Every process gets a fresh instance id, as with pod UIDs or random ids.
    fn new_core(&mut self, node: &str) -> OwnershipCore {
        self.next_instance += 1;
        let id = Identity::new(node, format!("i{}", self.next_instance)).expect("identity");
        let mut core = OwnershipCore::new(id, self.cfg.timing, self.cfg.policy);
        if self.cfg.decide_every_ip {
            core.decide_every_ip();
        }
        core
    }

    /// Adds and starts an agent; returns its index.
    pub fn add_agent(&mut self, node: &str) -> usize {
        self.add_agent_with(node, Duration::ZERO, 1.0)
    }

    pub fn add_agent_with(&mut self, node: &str, watch_delay: Duration, rate: f64) -> usize {
        let core = self.new_core(node);
        self.agents.push(Agent {
            node: node.to_owned(),
            core,
            alive: true,
            stopped: false,
            announced: BTreeSet::new(),
            watch_delay,
            rate,
            incarnation: 0,
            next_wake: None,
            superseded: false,
            restarts: 0,
            watch_stalled: false,
        });
        let i = self.agents.len() - 1;
        self.boot(i);
        i
    }

    fn boot(&mut self, i: usize) {
        let local = self.local(i);
        for (ip, d) in self.desired.clone() {
            self.agents[i].core.set_desired(local, ip, d).expect("desired");
        }
        if self.store.is_reachable(&self.agents[i].node) {
            let snapshot = self.labelled();
            let delay = self.agents[i].watch_delay;
            self.push(self.now + delay, i, Ev::Watch(WatchEvent::Resynced(snapshot)));
        }
        self.poll(i);
    }

    fn labelled(&self) -> Vec<LeaseRecord> {
        self.store
            .snapshot()
            .into_iter()
            .filter(|l| l.labels.contains_key(LEASE_KIND_LABEL))
            .collect()
    }

    /// Sets the desired state of an IP on every live agent (all agents see the same cluster state).
    pub fn set_desired(&mut self, ip: IpAddr, nodes: &[&str]) {
        let desire = IpDesire {
            eligible_nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            eip: "pool".into(),
            interface: None,
        };
        self.desired.insert(ip, desire.clone());
        for i in 0..self.agents.len() {
            if self.agents[i].alive {
                let local = self.local(i);
                self.agents[i]
                    .core
                    .set_desired(local, ip, desire.clone())
                    .expect("desired");
                self.poll(i);
            }
        }
    }

    /// Sets the desired state of an IP on one agent only (a local fact such as its own link going down).
    pub fn set_desired_on(&mut self, i: usize, ip: IpAddr, nodes: &[&str]) {
        let desire = IpDesire {
            eligible_nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            eip: "pool".into(),
            interface: None,
        };
        let local = self.local(i);
        self.agents[i].core.set_desired(local, ip, desire).expect("desired");
        self.poll(i);
    }

    pub fn remove_desired(&mut self, ip: IpAddr) {
        self.desired.remove(&ip);
        for i in 0..self.agents.len() {
            if self.agents[i].alive {
                let local = self.local(i);
                self.agents[i].core.remove_desired(local, ip);
                self.poll(i);
            }
        }
    }

    /// kill -9: the process and its answers are gone at once; requests already on the wire still land.
    pub fn crash(&mut self, i: usize) {
        self.reads_in_flight.retain(|(a, _), _| *a != i);
        let a = &mut self.agents[i];
        a.alive = false;
        a.incarnation += 1;
        for ip in std::mem::take(&mut a.announced) {
            self.decisions.push(Decision {
                at: self.now,
                agent: i,
                ip,
                announce: false,
            });
        }
        self.check();
    }

    /// A new process (new instance id) on the same node.
    pub fn restart(&mut self, i: usize) {
        if self.agents[i].alive {
            self.crash(i);
        }
        self.agents[i].restarts += 1;
        self.reads_in_flight.retain(|(a, _), _| *a != i);
        let node = self.agents[i].node.clone();
        let core = self.new_core(&node);
        let a = &mut self.agents[i];
        a.core = core;
        a.alive = true;
        a.stopped = false;
        a.superseded = false;
        a.incarnation += 1;
        a.next_wake = None;
        self.boot(i);
    }

    /// SIGTERM.
    pub fn stop(&mut self, i: usize) {
        if self.agents[i].alive {
            let local = self.local(i);
            self.agents[i].core.begin_shutdown(local);
            self.poll(i);
        }
    }

    pub fn partition(&mut self, i: usize) {
        let node = self.agents[i].node.clone();
        self.store.set_reachable(&node, false);
    }

    pub fn heal(&mut self, i: usize) {
        let node = self.agents[i].node.clone();
        if !self.store.is_reachable(&node) {
            self.store.set_reachable(&node, true);
            let snapshot = self.labelled();
            let delay = self.agents[i].watch_delay;
            self.push(self.now + delay, i, Ev::Watch(WatchEvent::Resynced(snapshot)));
        }
    }

    /// The agent's watch hangs silently (no events, no error) while its requests still work.
    pub fn stall_watch(&mut self, i: usize) {
        self.agents[i].watch_stalled = true;
    }

    /// The hung watch is noticed and re-established with a re-list.
    pub fn resume_watch(&mut self, i: usize) {
        self.agents[i].watch_stalled = false;
        let snapshot = self.labelled();
        let delay = self.agents[i].watch_delay;
        self.push(self.now + delay, i, Ev::Watch(WatchEvent::Resynced(snapshot)));
    }

    pub fn wire_conflict(&mut self, i: usize, ip: IpAddr) {
        let local = self.local(i);
        self.agents[i].core.on_wire_conflict(local, ip);
        self.poll(i);
    }

    fn poll(&mut self, i: usize) {
        if !self.agents[i].alive {
            return;
        }
        let local = self.local(i);
        let actions = self.agents[i].core.poll(local);
        for action in actions {
            self.act(i, action);
        }
        if let Some(w) = self.agents[i].core.next_wakeup() {
            let at = self.global_of(i, w);
            if self.agents[i].next_wake != Some(at) {
                self.agents[i].next_wake = Some(at);
                self.push(at, i, Ev::Wake);
            }
        }
        self.check();
    }

    fn act(&mut self, i: usize, action: Action) {
        let node = self.agents[i].node.clone();
        let reachable = self.store.is_reachable(&node);
        let (op, store_op) = match action {
            Action::Announce(announce) => {
                let ip = announce.ip;
                self.agents[i].announced.insert(ip);
                self.decisions.push(Decision {
                    at: self.now,
                    agent: i,
                    ip,
                    announce: true,
                });
                if self.cfg.wire_yield {
                    for j in 0..self.agents.len() {
                        if j != i && self.agents[j].alive && self.agents[j].announced.contains(&ip) {
                            self.push(self.now + self.cfg.wire_delay, j, Ev::WireConflict(ip));
                        }
                    }
                }
                return;
            }
            Action::Withdraw(ip) => {
                self.agents[i].announced.remove(&ip);
                self.decisions.push(Decision {
                    at: self.now,
                    agent: i,
                    ip,
                    announce: false,
                });
                return;
            }
            Action::Stopped => {
                self.reads_in_flight.retain(|(a, _), _| *a != i);
                self.agents[i].stopped = true;
                self.agents[i].alive = false;
                self.agents[i].incarnation += 1;
                assert!(self.agents[i].announced.is_empty(), "stopped while announcing");
                return;
            }
            Action::Superseded { .. } => {
                self.agents[i].superseded = true;
                return;
            }
            Action::OwnerChanged { .. } => return,
            Action::Get { op, name } => {
                assert!(
                    !self.reads_in_flight.iter().any(|((a, _), n)| *a == i && *n == name),
                    "{} reads {name} while a read of it is in flight, at {:?}",
                    self.agents[i].node,
                    self.now
                );
                self.reads_in_flight.insert((i, op), name.clone());
                self.reads.push(Read {
                    at: self.now,
                    agent: i,
                    name: name.clone(),
                });
                (op, StoreOp::Get(name))
            }
            Action::Create { op, record } => (op, StoreOp::Create(record)),
            Action::Replace { op, record } => (op, StoreOp::Replace(record)),
        };
        if reachable {
            self.push(self.now + self.cfg.request_latency, i, Ev::Apply { op, store_op });
        } else {
            let result = Err(StoreError::Unavailable {
                reason: "partitioned".into(),
            });
            self.push(self.now + self.cfg.unavailable_after, i, Ev::Reply { op, result });
        }
    }

    /// Processes events up to `self.now + d`.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some((&(at, seq), _)) = self.queue.first_key_value() {
            if at > until {
                break;
            }
            let (agent, inc, ev) = self.queue.remove(&(at, seq)).expect("first");
            self.now = at;
            self.handle(agent, inc, ev);
        }
        self.now = until;
        self.check();
    }

    fn handle(&mut self, i: usize, inc: u64, ev: Ev) {
        let current = self.agents[i].alive && self.agents[i].incarnation == inc;
        match ev {
            Ev::Apply { op, store_op } => {
                // Requests on the wire land even if the sender crashed meanwhile.
                let client = self.store.client(&self.agents[i].node);
                let result = match &store_op {
                    StoreOp::Get(name) => client.get_now(name),
                    StoreOp::Create(r) => client.create_now(r),
                    StoreOp::Replace(r) => client.replace_now(r),
                };
                if let (Ok(rec), StoreOp::Create(_) | StoreOp::Replace(_)) = (&result, &store_op) {
                    self.broadcast(WatchEvent::Applied(rec.clone()));
                }
                if self.agents[i].incarnation == inc {
                    self.push(self.now + self.cfg.reply_latency, i, Ev::Reply { op, result });
                }
            }
            _ if !current => {}
            Ev::Reply { op, result } => {
                self.reads_in_flight.remove(&(i, op));
                let local = self.local(i);
                self.agents[i].core.op_done(local, op, result);
                self.poll(i);
            }
            Ev::Watch(event) => {
                if self.store.is_reachable(&self.agents[i].node) && !self.agents[i].watch_stalled {
                    let local = self.local(i);
                    self.agents[i].core.observe(local, event);
                }
                self.poll(i);
            }
            Ev::WireConflict(ip) => {
                let local = self.local(i);
                self.agents[i].core.on_wire_conflict(local, ip);
                self.poll(i);
            }
            Ev::Wake => {
                self.agents[i].next_wake = None;
                self.poll(i);
            }
        }
    }

    fn broadcast(&mut self, event: WatchEvent) {
        for j in 0..self.agents.len() {
            if self.store.is_reachable(&self.agents[j].node) {
                let delay = self.agents[j].watch_delay;
                self.push(self.now + delay, j, Ev::Watch(event.clone()));
            }
        }
    }

    /// The invariant: at most one live agent announces each IP.
    fn check(&mut self) {
        let mut count: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, a) in self.agents.iter().enumerate() {
            if a.alive {
                for ip in &a.announced {
                    count.entry(*ip).or_default().push(i);
                }
            }
        }
        for (ip, who) in &count {
            if who.len() > 1 {
                assert!(
                    !self.cfg.strict,
                    "two agents announce {ip} at {:?}: {:?}",
                    self.now,
                    who.iter().map(|i| &self.agents[*i].node).collect::<Vec<_>>()
                );
                if !self.overlap_since.contains_key(ip) {
                    self.overlaps += 1;
                    self.overlap_since.insert(*ip, self.now);
                }
            }
        }
        let now = self.now;
        let ended: Vec<IpAddr> = self
            .overlap_since
            .keys()
            .filter(|ip| count.get(ip).is_none_or(|w| w.len() < 2))
            .copied()
            .collect();
        for ip in ended {
            let since = self.overlap_since.remove(&ip).expect("present");
            self.max_overlap = self.max_overlap.max(now - since);
        }
        for since in self.overlap_since.values() {
            self.max_overlap = self.max_overlap.max(now - *since);
        }
    }

    /// How many reads of lease `name` agent `i` issued at or after `from`.
    pub fn reads_of(&self, i: usize, name: &str, from: Duration) -> usize {
        self.reads
            .iter()
            .filter(|r| r.agent == i && r.name == name && r.at >= from)
            .count()
    }

    /// Which live agents announce `ip`.
    pub fn announcers(&self, ip: IpAddr) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|i| self.agents[*i].alive && self.agents[*i].announced.contains(&ip))
            .collect()
    }

    /// The node holding `ip`'s lease in the store.
    pub fn lease_holder_node(&self, ip: IpAddr) -> Option<String> {
        let rec = self.store.peek(&naming::ip_lease_name(ip).ok()?)?;
        rec.holder()
            .map(|h| herald_election::identity::holder_node(h).to_owned())
    }

    pub fn lease(&self, ip: IpAddr) -> Option<LeaseRecord> {
        self.store.peek(&naming::ip_lease_name(ip).ok()?)
    }

    /// First time after `from` at which `ip` was announced by an agent other than `not`.
    pub fn first_announce_after(&self, ip: IpAddr, from: Duration, not: Option<usize>) -> Option<Duration> {
        self.decisions
            .iter()
            .find(|d| d.announce && d.ip == ip && d.at >= from && Some(d.agent) != not)
            .map(|d| d.at)
    }

    /// Liveness: every desired IP with a live eligible agent is announced by exactly one agent, which holds its
    /// lease.
    pub fn assert_settled(&self) {
        for (ip, desire) in &self.desired {
            let eligible_alive = self
                .agents
                .iter()
                .any(|a| a.alive && desire.eligible_nodes.contains(&a.node));
            let who = self.announcers(*ip);
            if !eligible_alive {
                assert!(who.is_empty(), "{ip} announced without an eligible live node");
                continue;
            }
            assert_eq!(
                who.len(),
                1,
                "{ip} should have exactly one announcer at {:?}, has {who:?}",
                self.now
            );
            let holder = self.lease_holder_node(*ip);
            assert_eq!(
                holder.as_deref(),
                Some(self.agents[who[0]].node.as_str()),
                "{ip}: announcer is the holder"
            );
        }
    }
}
