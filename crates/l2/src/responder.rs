//! The sans-IO responder of one interface: frames and time in, frames and [`Event`]s out.
//!
//! It owns the set of addresses handled on the interface (a `HashMap`, so a lookup per frame is O(1) whatever the
//! number of addresses) and, per address, where it is in its life:
//!
//! ```text
//!  announce(Probe) ──► Probing ──(no answer after `probe.count` probes)──► Bursting ──► Refreshing
//!  announce(Immediately) ─────────────────────────────────────────────────┘    (every `refresh`, if any)
//!          Probing ──(another host answers or claims it)──► refused (removed, Conflict { refused: true })
//!          Probing ──(another host probes it too)──► Probing from the first probe (ProbeRestarted), at most
//!                                                     PROBE_RESTARTS times; then refused
//!  Bursting/Refreshing ──(another host claims it)──► kept, Conflict { refused: false } and, with
//!                                                     ConflictPolicy::Defend, one announcement; at most once per
//!                                                     DEFEND_INTERVAL
//!  check ──► Checking ──(no answer after the check's probes and wait)──► removed, Checked { Free }
//!            Checking ──(another host answers or claims it)──► removed, Checked { Taken }
//!            Checking ──(announce or withdraw)──► Checked { Abandoned }, then as asked
//! ```
//!
//! A check probes an address the interface does not answer for, for someone who wants to know whether another host
//! uses it (Herald proves the next free addresses of a pool before they are handed out); it never answers for it.
//!
//! Time is passed in; [`Responder::next_deadline`] says when [`Responder::poll`] must run next. Nothing here
//! touches a socket or a clock, so every rule is tested with byte-exact frames.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::counters::Counters;
use crate::events::{CheckOutcome, Conflict, ConflictSignal, Event};
use crate::packet::ndp::{ALL_NODES, solicited_node};
use crate::packet::{
    ArpMessage, ArpOperation, EthernetHeader, MacAddr, NeighborAdvertisement, NeighborSolicitation, Packet, decode,
};

/// RFC 5227 §2.4 (DEFEND_INTERVAL): while announcing, a conflict on the same address is acted on (reported, and
/// defended under [`ConflictPolicy::Defend`]) at most this often.
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

/// How often an announcement's probe starts over because another host probed the same address at the same time;
/// one more such probe refuses the address (RFC 5227 §2.1.1).
///
/// RFC 5227 refuses at the first one: two hosts probing one address would otherwise both take it. A Herald address
/// is handed out by the allocator and announced by the one node its election chose, so another prober is a host that
/// only wants to know whether the address is free (Herald's own address checks, which run on the pool's next free
/// addresses and so meet the announcement of a Service that was just given one) or a host about to take it, which
/// gives up on seeing this node's probes if it follows the RFC, and announces the address if it does not (a conflict
/// then, during the new probes or after them). Four restarts outlast one check (three probes) and one host.
pub const PROBE_RESTARTS: u32 = 4;

/// Address Conflict Detection before the first announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Probes to send (0 probes nothing and announces at once).
    pub count: u32,
    /// Time between probes, and how long to wait for an answer after the last one.
    pub interval: Duration,
}

impl Default for ProbeConfig {
    /// RFC 5227 §2.1.1 sends 3 probes 1–2 s apart; a host on the same LAN answers within milliseconds, so Herald
    /// waits 500 ms per probe (1.5 s in all) to keep a new Service's first announcement quick.
    fn default() -> Self {
        ProbeConfig {
            count: 3,
            interval: Duration::from_millis(500),
        }
    }
}

/// How a check ([`Responder::check`]) probes: RFC 5227 §2.1.1 timing by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Probes to send (PROBE_NUM; at least 1).
    pub probes: u32,
    /// Time between probes (PROBE_MIN…PROBE_MAX).
    pub interval: Duration,
    /// How long to wait for an answer after the last probe (ANNOUNCE_WAIT).
    pub wait: Duration,
}

impl Default for CheckConfig {
    /// RFC 5227 §1.1: 3 probes 1–2 s apart, then 2 s: a check has no one waiting on it, so it takes the full time.
    fn default() -> Self {
        CheckConfig {
            probes: 3,
            interval: Duration::from_secs(1),
            wait: Duration::from_secs(2),
        }
    }
}

/// Gratuitous announcements: a burst when an address is taken over, then a periodic refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Announcements in the takeover burst (at least 1: the first goes out at once).
    pub burst_count: u32,
    /// Time between the announcements of the burst.
    pub burst_interval: Duration,
    /// Announce again this often after the burst, so switch FDB ageing never blackholes an address. `None`: never.
    pub refresh: Option<Duration>,
    /// What the owner of the responder does when another host claims an announced address.
    pub on_conflict: ConflictPolicy,
}

impl Default for AnnounceConfig {
    /// At once and 4 more times over 2 s (most caches update on the first; the rest cover lost frames), then every
    /// 30 s (below the 300 s default FDB ageing of Linux bridges and most switches).
    fn default() -> Self {
        AnnounceConfig {
            burst_count: 5,
            burst_interval: Duration::from_millis(500),
            refresh: Some(Duration::from_secs(30)),
            on_conflict: ConflictPolicy::default(),
        }
    }
}

/// RFC 5227 §2.4: a host that sees another claim one of its addresses either gives it up at once (a) or keeps it
/// and defends it (b, c). Either way the conflict is reported as [`Event::Conflict`] with `refused: false`, at most
/// once per [`DEFEND_INTERVAL`] and address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// §2.4 (a): the owner withdraws the address as soon as it hears of the conflict (the election yields: the other
    /// claimant may be the node that took the address over). Nothing is sent: a defence would make that node yield
    /// too, and leave the address with nobody.
    #[default]
    Yield,
    /// §2.4 (c): the owner keeps the address whatever happens (`herald announce l2`). On a conflict the responder
    /// broadcasts one ARP Announcement (IPv4) or unsolicited Neighbor Advertisement (IPv6), at most once per
    /// [`DEFEND_INTERVAL`], so that caches point back at it.
    Defend,
}

/// How to start handling an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnounceMode {
    /// Probe first and refuse the address if another host answers (the first announcement ever of an address).
    Probe,
    /// Announce at once (a takeover from another Herald node: the old holder may still answer).
    Immediately,
}

/// Frames to send and events to report, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub frames: Vec<Vec<u8>>,
    pub events: Vec<Event>,
}

impl Output {
    fn extend(&mut self, other: Output) {
        self.frames.extend(other.frames);
        self.events.extend(other.events);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `restarts`: how often the probe started over ([`PROBE_RESTARTS`]).
    Probing {
        sent: u32,
        restarts: u32,
    },
    Checking {
        sent: u32,
        config: CheckConfig,
    },
    Bursting {
        sent: u32,
    },
    Refreshing,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    phase: Phase,
    /// When `poll` has to act on this address next (also a key of `Responder::timers`).
    due: Option<Instant>,
    /// RFC 5227 §2.4: when a conflict on this address was last acted on (reported, defended).
    last_conflict: Option<Instant>,
}

/// ARP/NDP responder for one interface.
#[derive(Debug)]
pub struct Responder {
    mac: MacAddr,
    probe: ProbeConfig,
    announce: AnnounceConfig,
    addresses: HashMap<IpAddr, Entry>,
    timers: BTreeSet<(Instant, IpAddr)>,
    counters: Arc<Counters>,
}

impl Responder {
    /// A responder answering with `mac`, the interface's address.
    pub fn new(mac: MacAddr, probe: ProbeConfig, announce: AnnounceConfig, counters: Arc<Counters>) -> Responder {
        let announce = AnnounceConfig {
            burst_count: announce.burst_count.max(1),
            ..announce
        };
        Responder {
            mac,
            probe,
            announce,
            addresses: HashMap::new(),
            timers: BTreeSet::new(),
            counters,
        }
    }

    /// The interface MAC the responder answers with.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Starts handling `ip`. Already handled addresses are left as they are (the call returns nothing).
    /// An address being checked ([`Responder::check`]) is handled from now on: the check ends
    /// ([`CheckOutcome::Abandoned`]).
    pub fn announce(&mut self, ip: IpAddr, mode: AnnounceMode, now: Instant) -> Output {
        let abandoned = self.end_check(ip);
        let mut out = self.start(ip, mode, now);
        out.events.splice(0..0, abandoned);
        out
    }

    fn start(&mut self, ip: IpAddr, mode: AnnounceMode, now: Instant) -> Output {
        if self.addresses.contains_key(&ip) {
            return Output::default();
        }
        if mode == AnnounceMode::Probe && self.probe.count > 0 {
            self.addresses.insert(
                ip,
                Entry {
                    phase: Phase::Probing { sent: 1, restarts: 0 },
                    due: None,
                    last_conflict: None,
                },
            );
            self.schedule(ip, now + self.probe.interval);
            Output {
                frames: vec![self.probe_frame(ip)],
                events: Vec::new(),
            }
        } else {
            self.addresses.insert(
                ip,
                Entry {
                    phase: Phase::Bursting { sent: 0 },
                    due: None,
                    last_conflict: None,
                },
            );
            let mut out = self.start_announcing(ip, now);
            // Answered from now on, as after a passed probe: one event for both ways, so the caller has one place to
            // learn that an address is answered.
            out.events.insert(0, Event::Announced { ip, probed: false });
            out
        }
    }

    /// Probes `ip`, which this interface does not handle, to learn whether another host uses it; never answers for
    /// it. The outcome comes as [`Event::Checked`] (at once, [`CheckOutcome::Abandoned`], when the interface handles
    /// the address itself; nothing when a check of it already runs).
    pub fn check(&mut self, ip: IpAddr, config: CheckConfig, now: Instant) -> Output {
        match self.addresses.get(&ip).map(|e| e.phase) {
            Some(Phase::Checking { .. }) => return Output::default(),
            Some(_) => {
                return Output {
                    frames: Vec::new(),
                    events: vec![Event::Checked {
                        ip,
                        outcome: CheckOutcome::Abandoned,
                    }],
                };
            }
            None => {}
        }
        self.addresses.insert(
            ip,
            Entry {
                phase: Phase::Checking { sent: 1, config },
                due: None,
                last_conflict: None,
            },
        );
        let next = if config.probes > 1 {
            config.interval
        } else {
            config.wait
        };
        self.schedule(ip, now + next);
        Output {
            frames: vec![self.probe_frame(ip)],
            events: Vec::new(),
        }
    }

    /// Ends a running check of `ip` as [`CheckOutcome::Abandoned`] (the event), if one runs.
    fn end_check(&mut self, ip: IpAddr) -> Option<Event> {
        if !matches!(self.addresses.get(&ip).map(|e| e.phase), Some(Phase::Checking { .. })) {
            return None;
        }
        self.withdraw(ip);
        Some(Event::Checked {
            ip,
            outcome: CheckOutcome::Abandoned,
        })
    }

    /// Stops handling `ip`: no more answers or announcements. Returns whether it was handled (a check of it ends
    /// without an event: the caller asked).
    pub fn withdraw(&mut self, ip: IpAddr) -> bool {
        let Some(entry) = self.addresses.remove(&ip) else {
            return false;
        };
        if let Some(due) = entry.due {
            self.timers.remove(&(due, ip));
        }
        true
    }

    /// Is `ip` handled (probing or announcing)?
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addresses.contains_key(&ip)
    }

    /// Is `ip` answered (past its probe)?
    pub fn is_answering(&self, ip: IpAddr) -> bool {
        self.addresses
            .get(&ip)
            .is_some_and(|e| matches!(e.phase, Phase::Bursting { .. } | Phase::Refreshing))
    }

    /// Is `ip` being checked ([`Responder::check`])?
    pub fn is_checking(&self, ip: IpAddr) -> bool {
        self.addresses
            .get(&ip)
            .is_some_and(|e| matches!(e.phase, Phase::Checking { .. }))
    }

    /// Every handled address.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses.keys().copied()
    }

    /// When [`Responder::poll`] has work next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Does what is due at `now`: the next probes, the end of probing, burst and refresh announcements.
    pub fn poll(&mut self, now: Instant) -> Output {
        let mut out = Output::default();
        while let Some(&(at, ip)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(entry) = self.addresses.get_mut(&ip) else {
                continue;
            };
            entry.due = None;
            match entry.phase {
                Phase::Probing { sent, restarts } if sent < self.probe.count => {
                    entry.phase = Phase::Probing {
                        sent: sent + 1,
                        restarts,
                    };
                    out.frames.push(self.probe_frame(ip));
                    self.schedule(ip, now + self.probe.interval);
                }
                // RFC 5227 §2.1.1: no conflicting frame within the wait after the last probe: the address is ours.
                Phase::Probing { .. } => {
                    out.events.push(Event::Announced { ip, probed: true });
                    out.extend(self.start_announcing(ip, now));
                }
                Phase::Checking { sent, config } if sent < config.probes => {
                    entry.phase = Phase::Checking { sent: sent + 1, config };
                    out.frames.push(self.probe_frame(ip));
                    let next = if sent + 1 < config.probes {
                        config.interval
                    } else {
                        config.wait
                    };
                    self.schedule(ip, now + next);
                }
                // Nothing answered within the wait after the last probe.
                Phase::Checking { .. } => {
                    self.withdraw(ip);
                    out.events.push(Event::Checked {
                        ip,
                        outcome: CheckOutcome::Free,
                    });
                }
                Phase::Bursting { .. } | Phase::Refreshing => out.extend(self.announce_again(ip, now)),
            }
        }
        out
    }

    /// Handles one received frame: answers requests for announced addresses and reports conflicts. Malformed frames
    /// are counted and dropped.
    pub fn handle_frame(&mut self, frame: &[u8], now: Instant) -> Output {
        let packet = match decode(frame) {
            Ok(packet) => packet,
            Err(e) => {
                if e.is_malformed() {
                    self.counters.malformed();
                    tracing::trace!(error = %e, "dropped malformed frame");
                }
                return Output::default();
            }
        };
        let eth = match &packet {
            Packet::Arp(eth, _) | Packet::NeighborSolicitation(eth, _) | Packet::NeighborAdvertisement(eth, _) => *eth,
        };
        // Our own frames (another socket on this interface), and frames unicast to another host that a promiscuous
        // interface (a bridge) still delivers, are not ours to answer.
        if eth.source == self.mac || (!eth.destination.is_group() && eth.destination != self.mac) {
            return Output::default();
        }
        match packet {
            Packet::Arp(_, arp) => self.handle_arp(arp, now),
            Packet::NeighborSolicitation(eth, ns) => self.handle_solicitation(eth, ns, now),
            Packet::NeighborAdvertisement(eth, na) => {
                let mac = na.target_mac.unwrap_or(eth.source);
                let mut out = Output::default();
                if mac != self.mac {
                    self.conflict(
                        IpAddr::V6(na.target),
                        mac,
                        ConflictSignal::NeighborAdvertisement,
                        now,
                        &mut out,
                    );
                }
                out
            }
        }
    }

    /// RFC 826 and RFC 5227.
    fn handle_arp(&mut self, arp: ArpMessage, now: Instant) -> Output {
        let mut out = Output::default();
        if arp.sender_mac == self.mac {
            return out;
        }
        let signal = match arp.operation {
            ArpOperation::Request => ConflictSignal::ArpRequest,
            ArpOperation::Reply => ConflictSignal::ArpReply,
        };
        // Someone uses one of our addresses as its own (RFC 5227 §2.4), or answers our probe (§2.1.1).
        if !arp.sender_ip.is_unspecified() {
            self.conflict(IpAddr::V4(arp.sender_ip), arp.sender_mac, signal, now, &mut out);
        }
        if arp.operation != ArpOperation::Request {
            return out;
        }
        self.counters.request_seen();
        let target = IpAddr::V4(arp.target_ip);
        match self.addresses.get(&target).map(|e| e.phase) {
            // RFC 5227 §2.1.1: another host probing the address we are probing (see `conflict` for what we do).
            Some(Phase::Probing { .. } | Phase::Checking { .. }) if arp.is_probe() => {
                self.conflict(target, arp.sender_mac, ConflictSignal::ArpProbe, now, &mut out);
            }
            Some(Phase::Bursting { .. } | Phase::Refreshing) if !arp.is_gratuitous() => {
                // RFC 826: answer the requester directly; a probe (sender 0.0.0.0) is answered the same way, which
                // tells the prober the address is taken (RFC 5227 §2.1.1).
                let reply = ArpMessage {
                    operation: ArpOperation::Reply,
                    sender_mac: self.mac,
                    sender_ip: arp.target_ip,
                    target_mac: arp.sender_mac,
                    target_ip: arp.sender_ip,
                };
                out.frames.push(reply.to_frame(self.mac, arp.sender_mac));
                self.counters.request_answered();
            }
            _ => {}
        }
        out
    }

    /// RFC 4861 §7.2.3–§7.2.4 and RFC 4862 §5.4.3.
    fn handle_solicitation(&mut self, eth: EthernetHeader, ns: NeighborSolicitation, now: Instant) -> Output {
        let mut out = Output::default();
        self.counters.request_seen();
        let sender_mac = ns.source_mac.unwrap_or(eth.source);
        if !ns.is_dad() {
            self.conflict(
                IpAddr::V6(ns.source),
                sender_mac,
                ConflictSignal::NeighborSolicitation,
                now,
                &mut out,
            );
        }
        let target = IpAddr::V6(ns.target);
        match self.addresses.get(&target).map(|e| e.phase) {
            // RFC 4862 §5.4.3: a DAD probe for an address we probe too (see `conflict` for what we do).
            Some(Phase::Probing { .. } | Phase::Checking { .. }) if ns.is_dad() => {
                self.conflict(target, eth.source, ConflictSignal::DadProbe, now, &mut out);
            }
            Some(Phase::Bursting { .. } | Phase::Refreshing) => {
                if ns.is_dad() {
                    // RFC 4861 §7.2.4: the prober has no address yet, so the answer goes to all-nodes, unsolicited,
                    // and tells it the address is taken (RFC 4862 §5.4.3). The prober claims nothing: like an ARP
                    // probe (RFC 5227 §2.1.1) it is answered, not a conflict that would make the owner yield.
                    out.frames.push(self.unsolicited_advertisement(ns.target));
                } else {
                    // RFC 4861 §7.2.4: solicited, override, with our link-layer address, to the solicitation's
                    // source; its link-layer address comes from the SLLA option or, for a unicast NUD probe without
                    // one, from the frame (§7.2.3 allows both).
                    let na = NeighborAdvertisement {
                        source: ns.target,
                        destination: ns.source,
                        target: ns.target,
                        router: false,
                        solicited: true,
                        override_flag: true,
                        target_mac: Some(self.mac),
                    };
                    out.frames.push(na.to_frame(self.mac, sender_mac));
                }
                self.counters.request_answered();
            }
            _ => {}
        }
        out
    }

    /// Reports that `mac` claims `ip`, if `ip` is ours. A conflict found while probing refuses the address; one
    /// found while announcing is handled by the [`ConflictPolicy`].
    fn conflict(&mut self, ip: IpAddr, mac: MacAddr, signal: ConflictSignal, now: Instant, out: &mut Output) {
        let Some(entry) = self.addresses.get_mut(&ip) else {
            return;
        };
        // Not ours: the check only learns who uses it.
        if let Phase::Checking { .. } = entry.phase {
            self.withdraw(ip);
            out.events.push(Event::Checked {
                ip,
                outcome: CheckOutcome::Taken { mac, signal },
            });
            return;
        }
        // Another host probing too claims nothing yet: probe again from the first probe, up to a bound.
        if let Phase::Probing { restarts, .. } = entry.phase
            && matches!(signal, ConflictSignal::ArpProbe | ConflictSignal::DadProbe)
            && restarts < PROBE_RESTARTS
        {
            entry.phase = Phase::Probing {
                sent: 0,
                restarts: restarts + 1,
            };
            out.events.push(Event::ProbeRestarted { ip, mac, signal });
            return;
        }
        self.counters.conflict();
        if let Phase::Probing { .. } = entry.phase {
            self.withdraw(ip);
            out.events.push(Event::Conflict(Conflict {
                ip,
                mac,
                signal,
                refused: true,
            }));
            return;
        }
        // RFC 5227 §2.4 (b), (c): act on a conflict only if none was acted on within DEFEND_INTERVAL, and never send
        // a second defence within it (two defenders would otherwise flood the link).
        if entry
            .last_conflict
            .is_some_and(|at| now.saturating_duration_since(at) < DEFEND_INTERVAL)
        {
            return;
        }
        entry.last_conflict = Some(now);
        if self.announce.on_conflict == ConflictPolicy::Defend {
            out.frames.push(self.defence_frame(ip));
            self.counters.gratuitous_sent(1);
        }
        out.events.push(Event::Conflict(Conflict {
            ip,
            mac,
            signal,
            refused: false,
        }));
    }

    /// RFC 5227 §2.4 (b): "one single ARP Announcement, giving its own IP and hardware addresses as the sender
    /// addresses of the ARP, with the 'target IP address' set to its own IP address, and the 'target hardware
    /// address' set to all zeroes", broadcast. For IPv6 the same: an unsolicited, overriding NA to all-nodes
    /// (RFC 4861 §7.2.6).
    fn defence_frame(&self, ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(ip) => self.arp_announcement(ip),
            IpAddr::V6(ip) => self.unsolicited_advertisement(ip),
        }
    }

    fn start_announcing(&mut self, ip: IpAddr, now: Instant) -> Output {
        if let Some(entry) = self.addresses.get_mut(&ip) {
            entry.phase = Phase::Bursting { sent: 0 };
        }
        self.announce_again(ip, now)
    }

    /// Sends one announcement of `ip` and schedules the next one.
    fn announce_again(&mut self, ip: IpAddr, now: Instant) -> Output {
        let Some(entry) = self.addresses.get_mut(&ip) else {
            return Output::default();
        };
        let next = match entry.phase {
            Phase::Bursting { sent } if sent + 1 < self.announce.burst_count => {
                entry.phase = Phase::Bursting { sent: sent + 1 };
                Some(now + self.announce.burst_interval)
            }
            _ => {
                entry.phase = Phase::Refreshing;
                self.announce.refresh.map(|every| now + every)
            }
        };
        if let Some(at) = next {
            self.schedule(ip, at);
        }
        let frames = self.gratuitous_frames(ip);
        self.counters.gratuitous_sent(frames.len() as u64);
        Output {
            frames,
            events: Vec::new(),
        }
    }

    fn schedule(&mut self, ip: IpAddr, at: Instant) {
        let Some(entry) = self.addresses.get_mut(&ip) else {
            return;
        };
        if let Some(old) = entry.due.replace(at) {
            self.timers.remove(&(old, ip));
        }
        self.timers.insert((at, ip));
    }

    /// RFC 5227 §2.1.1 ARP probe / RFC 4862 §5.4.2 DAD solicitation.
    fn probe_frame(&self, ip: IpAddr) -> Vec<u8> {
        self.counters.probe_sent();
        match ip {
            IpAddr::V4(ip) => ArpMessage {
                operation: ArpOperation::Request,
                sender_mac: self.mac,
                sender_ip: Ipv4Addr::UNSPECIFIED,
                target_mac: MacAddr::ZERO,
                target_ip: ip,
            }
            .to_frame(self.mac, MacAddr::BROADCAST),
            IpAddr::V6(ip) => {
                let group = solicited_node(ip);
                NeighborSolicitation {
                    source: Ipv6Addr::UNSPECIFIED,
                    destination: group,
                    target: ip,
                    source_mac: None,
                }
                .to_frame(self.mac, MacAddr::ipv6_multicast(group))
            }
        }
    }

    /// Gratuitous ARP in request (RFC 5227 §2.3) and reply form, for peers that accept only one of them; unsolicited
    /// Neighbor Advertisement with the override flag to all-nodes (RFC 4861 §7.2.6).
    fn gratuitous_frames(&self, ip: IpAddr) -> Vec<Vec<u8>> {
        match ip {
            IpAddr::V4(ip) => {
                let reply = ArpMessage {
                    operation: ArpOperation::Reply,
                    sender_mac: self.mac,
                    sender_ip: ip,
                    target_mac: self.mac,
                    target_ip: ip,
                };
                vec![self.arp_announcement(ip), reply.to_frame(self.mac, MacAddr::BROADCAST)]
            }
            IpAddr::V6(ip) => vec![self.unsolicited_advertisement(ip)],
        }
    }

    /// RFC 5227 §2.3: an ARP Announcement, the probe with our address as sender and target IP, broadcast.
    fn arp_announcement(&self, ip: Ipv4Addr) -> Vec<u8> {
        ArpMessage {
            operation: ArpOperation::Request,
            sender_mac: self.mac,
            sender_ip: ip,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        }
        .to_frame(self.mac, MacAddr::BROADCAST)
    }

    fn unsolicited_advertisement(&self, ip: Ipv6Addr) -> Vec<u8> {
        NeighborAdvertisement {
            source: ip,
            destination: ALL_NODES,
            target: ip,
            router: false,
            solicited: false,
            override_flag: true,
            target_mac: Some(self.mac),
        }
        .to_frame(self.mac, MacAddr::ipv6_multicast(ALL_NODES))
    }
}

#[cfg(test)]
mod tests;
