//! The announcer's decisions, without I/O: the cluster's desired announcements, this node's links, the engine's and
//! the election's news in; what to tell the election, what to write to the API, and whether to stop, out. The shell
//! ([`super::run`]) feeds it and executes its plans: election commands in order, API writes through a bounded writer
//! outside its loop (so a slow API server never holds up link or ownership handling).
//!
//! Tested like the allocator's core (`allocator/state.rs`): plain values in, plain values out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use herald_api::Protocol;
use herald_election::{IpDesire, OwnershipEvent};
use herald_ipam::ServiceKey;
use herald_l2::{EngineEvent, Event as L2Event};

use super::desired::Announcement;

/// What the election must be told, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionCommand {
    /// Take part in the election for `ip` (or update its desire).
    Set(IpAddr, IpDesire),
    /// No longer a Layer 2 Service IP.
    Remove(IpAddr),
    /// Another MAC claims `ip` on the wire while this node answers it: the election decides who yields.
    WireConflict(IpAddr),
}

/// An API write, for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// This node answers for `ip` on `interface`: its `herald.dev/announced-by` entry on the Service, and an
    /// `Announcing` Event naming the node, the IP and the interface.
    Announcing {
        service: ServiceKey,
        ip: IpAddr,
        interface: String,
    },
    /// An `AddressConflict` Warning Event on the Service.
    Conflict { service: ServiceKey, note: String },
    /// This node no longer answers for `ip` (another holder took it, it yielded on the wire, or it is no Service's
    /// Layer 2 IP any more): an `announced-by` entry for it that still waits is not written.
    Withdrawn { ip: IpAddr },
}

/// Something to log, decided by the core (the shell logs it with the node's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// No node may announce `ip`, and why (logged once per change).
    Unplaceable { ip: IpAddr, eip: String, why: String },
    /// This node answers for `ip` from now on.
    Announcing { ip: IpAddr, interface: String },
    /// Another host claims `ip` (`refused`: found by the probe, so Herald does not answer for it at all).
    Conflict {
        ip: IpAddr,
        mac: String,
        interface: String,
        refused: bool,
    },
    /// Another holder answers for `ip` now.
    NoLongerAnnouncing { ip: IpAddr, new_holder: String },
    /// This node withdrew `ip` because another MAC answers for it.
    WireYield { ip: IpAddr },
    /// This node cannot answer for `ip` (its interface cannot carry it), so it is not a candidate (once per change).
    CannotAnswer { ip: IpAddr, why: String },
}

/// What to do after one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Election commands, in order.
    pub election: Vec<ElectionCommand>,
    /// API writes (their order does not matter).
    pub writes: Vec<Write>,
    /// Log lines.
    pub notices: Vec<Notice>,
    /// The announcer must stop, and why (another process took this node over, or the election task ended).
    pub stop: Option<Stop>,
}

/// Why the announcer stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A newer agent process owns this node (rolling update): stop cleanly.
    Superseded { by: String },
    /// The election task ended on its own: this agent can no longer take part; stop with an error so that it is
    /// restarted (and `/readyz` fails at once).
    ElectionEnded,
}

/// Where this node would answer for a Layer 2 IP: the interface, and whether it can answer there now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The interface that carries the IP (`None`: none of this node's).
    pub interface: Option<String>,
    /// The interface is up and can carry ARP/NDP (the rule `L2Engine::attach` applies).
    pub usable: bool,
    /// Why it cannot, when that is worth saying.
    pub why: Option<String>,
}

/// The announcer's state. See the module docs.
#[derive(Debug)]
pub struct AnnouncerCore {
    node: String,
    /// What the election was told, per Layer 2 IP.
    sent: BTreeMap<IpAddr, IpDesire>,
    /// Why each IP has no eligible node, as last reported (absent: it has one).
    unplaceable: BTreeMap<IpAddr, String>,
    /// Why this node cannot answer for each IP, as last reported (absent: it can).
    cannot_answer: BTreeMap<IpAddr, String>,
    /// Every announced IP (both modes), from the last cluster input: who is behind an IP when it is answered.
    current: BTreeMap<IpAddr, Announcement>,
}

impl AnnouncerCore {
    /// A core for this node.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            sent: BTreeMap::new(),
            unplaceable: BTreeMap::new(),
            cannot_answer: BTreeMap::new(),
            current: BTreeMap::new(),
        }
    }

    /// The announcements of the last cluster input (BGP mode plans from them too).
    pub fn current(&self) -> &BTreeMap<IpAddr, Announcement> {
        &self.current
    }

    /// Layer 2 IPs the election takes part in.
    pub fn desired_l2(&self) -> usize {
        self.sent.len()
    }

    /// The interfaces this node would answer ARP/NDP on for some Layer 2 IP it takes part in the election for,
    /// whether or not it holds one (so their counters can be shown before the first IP is won).
    pub fn l2_interfaces(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for desire in self.sent.values() {
            if let Some(name) = &desire.interface
                && !names.contains(name)
                && desire.eligible_nodes.contains(&self.node)
            {
                names.insert(name.clone());
            }
        }
        names
    }

    /// Drops the announcements of the last cluster input, to be replaced at once by the next [`Self::cluster`] (so the
    /// two are never held together). Until then, engine news finds no Service behind an IP.
    pub fn forget_announcements(&mut self) {
        self.current = BTreeMap::new();
    }

    /// The cluster's desired announcements or this node's links changed. `place` says where this node would answer
    /// an IP (given the Eip's `spec.interface`): only this node can see its links, so a node whose link is down
    /// leaves itself out of the eligible set (the others just wait their stagger).
    pub fn cluster(
        &mut self,
        current: BTreeMap<IpAddr, Announcement>,
        place: impl Fn(IpAddr, Option<&str>) -> Placement,
    ) -> Plan {
        let mut plan = Plan::default();
        for (ip, a) in &current {
            if a.ineligible_reason.as_ref() != self.unplaceable.get(ip) {
                match &a.ineligible_reason {
                    Some(why) => {
                        plan.notices.push(Notice::Unplaceable {
                            ip: *ip,
                            eip: a.eip.to_string(),
                            why: why.clone(),
                        });
                        self.unplaceable.insert(*ip, why.clone());
                    }
                    None => {
                        self.unplaceable.remove(ip);
                    }
                }
            }
        }
        self.unplaceable.retain(|ip, _| current.contains_key(ip));
        // Runs after every batch of watch events over every IP: an IP whose desire did not change costs a lookup
        // and a comparison, no copies.
        let layer2 = |a: &Announcement| a.protocol == Protocol::Layer2;
        for ip in self.sent.keys().filter(|ip| !current.get(ip).is_some_and(layer2)) {
            plan.election.push(ElectionCommand::Remove(*ip));
            plan.writes.push(Write::Withdrawn { ip: *ip });
        }
        self.sent.retain(|ip, _| current.get(ip).is_some_and(layer2));
        for (ip, a) in current.iter().filter(|(_, a)| layer2(a)) {
            let placement = place(*ip, a.interface.as_deref());
            if self.cannot_answer.get(ip) != placement.why.as_ref() {
                match &placement.why {
                    Some(why) => {
                        plan.notices.push(Notice::CannotAnswer {
                            ip: *ip,
                            why: why.clone(),
                        });
                        self.cannot_answer.insert(*ip, why.clone());
                    }
                    None => {
                        self.cannot_answer.remove(ip);
                    }
                }
            }
            // A node whose link cannot carry the IP leaves itself out; otherwise the election shares the cluster's
            // set (one per pool, not one per IP).
            let eligible = if placement.usable || !a.eligible_nodes.contains(&self.node) {
                a.eligible_nodes.clone()
            } else {
                a.eligible_nodes.iter().filter(|n| **n != self.node).cloned().collect()
            };
            let unchanged = self.sent.get(ip).is_some_and(|sent| {
                sent.eip == a.eip && sent.interface == placement.interface && sent.eligible_nodes == eligible
            });
            if unchanged {
                continue;
            }
            let desire = IpDesire {
                eligible_nodes: eligible,
                eip: a.eip.clone(),
                interface: placement.interface,
            };
            plan.election.push(ElectionCommand::Set(*ip, desire.clone()));
            self.sent.insert(*ip, desire);
        }
        self.cannot_answer.retain(|ip, _| self.sent.contains_key(ip));
        self.current = current;
        plan
    }

    /// News from the ARP/NDP engine.
    pub fn engine(&mut self, ev: &EngineEvent) -> Plan {
        let mut plan = Plan::default();
        let services = |ip: &IpAddr| self.current.get(ip).map(|a| a.services.clone()).unwrap_or_default();
        match &ev.event {
            L2Event::Announced { ip, .. } => {
                plan.notices.push(Notice::Announcing {
                    ip: *ip,
                    interface: ev.interface.clone(),
                });
                plan.writes
                    .extend(services(ip).into_iter().map(|service| Write::Announcing {
                        service,
                        ip: *ip,
                        interface: ev.interface.clone(),
                    }));
            }
            L2Event::Conflict(c) => {
                plan.notices.push(Notice::Conflict {
                    ip: c.ip,
                    mac: c.mac.to_string(),
                    interface: ev.interface.clone(),
                    refused: c.refused,
                });
                if c.refused {
                    // The probe before the first announcement found the address in use: never fight a host that
                    // is not Herald. Say so on every Service of the IP.
                    let note = format!(
                        "{} is already used by host {} on {} of node {}; Herald does not answer for it. Remove the \
                         address from the Eip, or the host from the network",
                        c.ip, c.mac, ev.interface, self.node
                    );
                    plan.writes
                        .extend(services(&c.ip).into_iter().map(|service| Write::Conflict {
                            service,
                            note: note.clone(),
                        }));
                } else {
                    plan.election.push(ElectionCommand::WireConflict(c.ip));
                }
            }
            // Checks are answered to whoever asked (the address prober), restarts only logged: the engine never
            // sends them here.
            L2Event::Checked { .. } | L2Event::ProbeRestarted { .. } => {}
        }
        plan
    }

    /// News from the election.
    pub fn ownership(&mut self, ev: &OwnershipEvent) -> Plan {
        let mut plan = Plan::default();
        match ev {
            OwnershipEvent::Superseded { by } => plan.stop = Some(Stop::Superseded { by: by.clone() }),
            OwnershipEvent::OwnerChanged {
                ip,
                is_self: false,
                was_self: true,
                holder,
                ..
            } => {
                plan.notices.push(Notice::NoLongerAnnouncing {
                    ip: *ip,
                    new_holder: holder.clone().unwrap_or_default(),
                });
                plan.writes.push(Write::Withdrawn { ip: *ip });
            }
            // Answering is recorded when the engine says it answers (after the probe, or at once on a takeover).
            OwnershipEvent::OwnerChanged { .. } => {}
            OwnershipEvent::WireYield { ip } => {
                plan.notices.push(Notice::WireYield { ip: *ip });
                plan.writes.push(Write::Withdrawn { ip: *ip });
            }
        }
        plan
    }

    /// The election task ended without being asked to.
    pub fn election_ended(&mut self) -> Plan {
        Plan {
            stop: Some(Stop::ElectionEnded),
            ..Plan::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_election::NodeSet;
    use herald_l2::{Conflict, ConflictSignal, MacAddr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc(name: &str) -> ServiceKey {
        ServiceKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn l2(eip: &str, services: &[&str], nodes: &[&str]) -> Announcement {
        Announcement {
            eip: eip.into(),
            protocol: Protocol::Layer2,
            interface: None,
            services: services.iter().map(|s| svc(s)).collect(),
            eligible_nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ineligible_reason: None,
        }
    }

    fn on_eth0(_: IpAddr, _: Option<&str>) -> Placement {
        Placement {
            interface: Some("eth0".into()),
            usable: true,
            why: None,
        }
    }

    fn set(ip: IpAddr, nodes: &[&str], interface: Option<&str>) -> ElectionCommand {
        ElectionCommand::Set(
            ip,
            IpDesire {
                eligible_nodes: nodes.iter().map(|n| n.to_string()).collect::<NodeSet>(),
                eip: "lan".into(),
                interface: interface.map(str::to_string),
            },
        )
    }

    /// The IPs of one pool point at one node set, in the election too (a copy per IP was most of the announcer's
    /// memory at 10,000 IPs); a node whose link is down gets a set without itself.
    #[test]
    fn ips_with_the_same_nodes_share_one_set() {
        let mut core = AnnouncerCore::new("n1");
        let nodes: NodeSet = ["n1".to_string(), "n2".to_string()].into();
        let of_pool = |n: &str| Announcement {
            eligible_nodes: nodes.clone(),
            ..l2("lan", &[n], &[])
        };
        let (a, b) = (ip("192.0.2.10"), ip("192.0.2.11"));
        let current = BTreeMap::from([(a, of_pool("web")), (b, of_pool("api"))]);
        let desires: Vec<IpDesire> = core
            .cluster(current.clone(), on_eth0)
            .election
            .into_iter()
            .filter_map(|c| match c {
                ElectionCommand::Set(_, d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(desires.len(), 2);
        assert!(
            desires.iter().all(|d| d.eligible_nodes.same(&nodes)),
            "shared, not copied"
        );
        let down = |_: IpAddr, _: Option<&str>| Placement {
            interface: Some("eth0".into()),
            usable: false,
            why: Some("eth0 is down".into()),
        };
        let plan = core.cluster(current, down);
        let ElectionCommand::Set(_, d) = &plan.election[0] else {
            panic!("a new desire: {:?}", plan.election)
        };
        assert_eq!(*d.eligible_nodes, ["n2".to_string()].into());
    }

    #[test]
    fn the_election_hears_each_change_once_and_a_down_link_leaves_this_node_out() {
        let mut core = AnnouncerCore::new("n1");
        let a = ip("192.0.2.10");
        let current = BTreeMap::from([(a, l2("lan", &["web"], &["n1", "n2"]))]);
        let plan = core.cluster(current.clone(), on_eth0);
        assert_eq!(plan.election, [set(a, &["n1", "n2"], Some("eth0"))]);
        assert!(
            core.cluster(current.clone(), on_eth0).election.is_empty(),
            "no change, nothing to say"
        );

        let down = |_: IpAddr, _: Option<&str>| Placement {
            interface: Some("eth0".into()),
            usable: false,
            why: Some("eth0 is down".into()),
        };
        let plan = core.cluster(current.clone(), down);
        assert_eq!(plan.election, [set(a, &["n2"], Some("eth0"))]);
        assert_eq!(
            plan.notices,
            [Notice::CannotAnswer {
                ip: a,
                why: "eth0 is down".into()
            }]
        );
        assert!(
            core.cluster(current.clone(), down).notices.is_empty(),
            "said once per change"
        );

        // A BGP-mode IP is not the election's; a gone IP is removed.
        let mut bgp = l2("routed", &["api"], &["n1"]);
        bgp.protocol = Protocol::Bgp;
        let plan = core.cluster(BTreeMap::from([(ip("203.0.113.1"), bgp)]), on_eth0);
        assert_eq!(plan.election, [ElectionCommand::Remove(a)]);
        assert_eq!(
            plan.writes,
            [Write::Withdrawn { ip: a }],
            "a write still waiting for it is dropped"
        );
        assert_eq!(core.desired_l2(), 0);
        assert_eq!(core.current().len(), 1, "BGP mode plans from it");
    }

    /// The interfaces whose ARP/NDP counters are shown before any IP is won: those this node would answer on.
    #[test]
    fn l2_interfaces_are_those_this_node_takes_part_on() {
        let mut core = AnnouncerCore::new("n1");
        let on = |name: &'static str| {
            move |_: IpAddr, _: Option<&str>| Placement {
                interface: Some(name.into()),
                usable: true,
                why: None,
            }
        };
        assert!(core.l2_interfaces().is_empty());
        let mine = BTreeMap::from([(ip("192.0.2.10"), l2("lan", &["web"], &["n1", "n2"]))]);
        core.cluster(mine.clone(), on("eth0"));
        assert_eq!(core.l2_interfaces(), BTreeSet::from(["eth0".to_string()]));
        // An IP only other nodes may hold does not count; a link that cannot carry it leaves this node out.
        let others = BTreeMap::from([(ip("198.51.100.7"), l2("far", &["api"], &["n2"]))]);
        core.cluster(others, on("eth1"));
        assert!(core.l2_interfaces().is_empty());
        core.cluster(mine, |_: IpAddr, _: Option<&str>| Placement {
            interface: Some("eth0".into()),
            usable: false,
            why: Some("eth0 is down".into()),
        });
        assert!(core.l2_interfaces().is_empty());
    }

    #[test]
    fn an_unplaceable_ip_is_said_once_per_change() {
        let mut core = AnnouncerCore::new("n1");
        let a = ip("192.0.2.10");
        let mut nobody = l2("lan", &["web"], &[]);
        nobody.ineligible_reason = Some("no node matches the Eip's nodeSelector".into());
        let current = BTreeMap::from([(a, nobody)]);
        let plan = core.cluster(current.clone(), on_eth0);
        assert_eq!(
            plan.notices,
            [Notice::Unplaceable {
                ip: a,
                eip: "lan".into(),
                why: "no node matches the Eip's nodeSelector".into()
            }]
        );
        assert!(core.cluster(current, on_eth0).notices.is_empty());
    }

    fn event(event: L2Event) -> EngineEvent {
        EngineEvent {
            interface: "eth0".into(),
            event,
        }
    }

    #[test]
    fn an_answered_ip_is_recorded_on_each_of_its_services() {
        let mut core = AnnouncerCore::new("n1");
        let a = ip("192.0.2.10");
        core.cluster(BTreeMap::from([(a, l2("lan", &["web", "web-udp"], &["n1"]))]), on_eth0);
        let plan = core.engine(&event(L2Event::Announced { ip: a, probed: false }));
        assert_eq!(
            plan.writes,
            ["web", "web-udp"].map(|s| Write::Announcing {
                service: svc(s),
                ip: a,
                interface: "eth0".into()
            })
        );
        assert!(
            core.engine(&event(L2Event::Announced {
                ip: ip("192.0.2.99"),
                probed: true
            }))
            .writes
            .is_empty(),
            "an IP no Service has any more: nothing to record"
        );
    }

    #[test]
    fn a_conflict_found_by_the_probe_is_reported_and_one_while_answering_goes_to_the_election() {
        let mut core = AnnouncerCore::new("n1");
        let a = ip("192.0.2.10");
        core.cluster(BTreeMap::from([(a, l2("lan", &["web"], &["n1"]))]), on_eth0);
        let conflict = |refused| {
            event(L2Event::Conflict(Conflict {
                ip: a,
                mac: MacAddr([2, 0, 0, 0, 0, 0x99]),
                signal: ConflictSignal::ArpReply,
                refused,
            }))
        };
        let plan = core.engine(&conflict(true));
        assert!(plan.election.is_empty());
        assert_eq!(plan.writes.len(), 1);
        let Write::Conflict { service, note } = &plan.writes[0] else {
            panic!("{plan:?}")
        };
        assert_eq!(service, &svc("web"));
        assert!(
            note.starts_with("192.0.2.10 is already used by host 02:00:00:00:00:99 on eth0 of node n1"),
            "{note}"
        );
        let plan = core.engine(&conflict(false));
        assert_eq!(plan.election, [ElectionCommand::WireConflict(a)]);
        assert!(plan.writes.is_empty());
    }

    #[test]
    fn the_announcer_stops_when_superseded_or_when_the_election_ends() {
        let mut core = AnnouncerCore::new("n1");
        let plan = core.ownership(&OwnershipEvent::Superseded { by: "n1/2".into() });
        assert_eq!(plan.stop, Some(Stop::Superseded { by: "n1/2".into() }));
        assert_eq!(core.election_ended().stop, Some(Stop::ElectionEnded));
        let plan = core.ownership(&OwnershipEvent::OwnerChanged {
            ip: ip("192.0.2.10"),
            holder: Some("n2/1".into()),
            node: Some("n2".into()),
            is_self: false,
            was_self: true,
        });
        assert_eq!(plan.stop, None);
        assert_eq!(
            plan.notices,
            [Notice::NoLongerAnnouncing {
                ip: ip("192.0.2.10"),
                new_holder: "n2/1".into()
            }]
        );
        assert_eq!(
            plan.writes,
            [Write::Withdrawn { ip: ip("192.0.2.10") }],
            "its record, if it still waits, is not written"
        );
        let plan = core.ownership(&OwnershipEvent::WireYield { ip: ip("192.0.2.10") });
        assert_eq!(plan.writes, [Write::Withdrawn { ip: ip("192.0.2.10") }]);
    }

    /// Not a check, a measurement: `cargo nextest run -p herald --lib --run-ignored only cluster_timing
    /// --no-capture` (with `--release` for real numbers).
    #[test]
    #[ignore]
    fn cluster_timing_at_10k_ips() {
        let mut core = AnnouncerCore::new("n1");
        let current: BTreeMap<IpAddr, Announcement> = (0..10_000u32)
            .map(|i| {
                let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
                (ip, l2("lan", &[&format!("s{i}")], &["n1", "n2", "n3"]))
            })
            .collect();
        let start = std::time::Instant::now();
        let plan = core.cluster(current.clone(), on_eth0);
        println!(
            "cluster() first, 10,000 IPs: {:?} ({} commands)",
            start.elapsed(),
            plan.election.len()
        );
        let mut total = std::time::Duration::ZERO;
        for _ in 0..5 {
            let input = current.clone();
            let start = std::time::Instant::now();
            let plan = core.cluster(input, on_eth0);
            total += start.elapsed();
            assert!(plan.election.is_empty());
        }
        println!("cluster() unchanged, 10,000 IPs: {:?} each", total / 5);
    }
}
