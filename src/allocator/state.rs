//! The allocator controller's decision core: a snapshot of Services, Eips and Namespaces in, the writes and
//! Events that bring the cluster in line out. No I/O and no clock (the caller passes `now`), so every rule of the
//! Service contract is tested here without an API server.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use herald_api::conditions::{self, set_condition};
use herald_api::decode::Unreadable;
use herald_api::eip::{AddressProbes, FamilyUsage, IpAnnouncer, MAX_STATUS_ANNOUNCERS};
use herald_api::{Eip, EipSpec, EipStatus, Protocol};
use herald_ipam::{
    AllocError, Allocation, Allocator, Family, FamilyStats, Labels, Pool, PoolSpec, ServiceKey, ServiceRequest,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::adapter::{self as convert, service_key};
use crate::lease::HeldLease;
use crate::prober::core as prober;
use crate::service::ServiceView;

/// The allocation order of a Service: creation timestamp, uid, then namespace and name. Borrowed, so sorting
/// allocates nothing.
fn first_come(svc: &ServiceView) -> (i64, &str, &str, &str) {
    let uid = svc.uid.as_deref().unwrap_or_default();
    (svc.created, uid, svc.namespace.as_str(), svc.name.as_str())
}

/// What the controller sees: the reflectors' current state.
#[derive(Default, Clone)]
pub struct Snapshot {
    /// Every Service in the cluster.
    pub services: Vec<Arc<ServiceView>>,
    /// Every Eip.
    pub eips: Vec<Arc<Eip>>,
    /// Namespace labels by namespace name.
    pub namespaces: HashMap<String, Arc<Labels>>,
    /// The IP leases (`herald-ip-…`): which node holds each IP, for the Eips' `announcers`.
    pub ip_leases: Vec<Arc<HeldLease>>,
    /// Eips that could not be read as `Eip` (the store keeps a readable one's last readable version in `eips`).
    pub unreadable_eips: Vec<Unreadable>,
    /// Services that could not be read as `Service`.
    pub unreadable_services: Vec<Unreadable>,
}

/// A write to the API the controller must make.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Set `status.loadBalancer.ingress` to these IPs (`ipMode: VIP`); empty clears it.
    ServiceIngress { service: ServiceKey, ips: Vec<IpAddr> },
    /// Set (or, with `None`, remove) the `herald.dev/allocated-from` annotation.
    ServiceAllocatedFrom { service: ServiceKey, pool: Option<String> },
    /// Replace the allocator-owned part of an Eip's status.
    EipStatus { eip: String, status: Box<EipStatus> },
}

/// An Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it is about.
    pub target: Target,
    /// `Warning` (true) or `Normal`.
    pub warning: bool,
    /// CamelCase reason: `IPAllocated`, `AllocationFailed`, `IPReleased`, `InvalidEip`.
    pub reason: &'static str,
    /// The human-readable explanation.
    pub note: String,
}

impl Notice {
    /// Whether this Event tells of a change of the Service's status IPs (`IPAllocated`, `IPReleased`): it goes out
    /// with the write that makes the change, not again while that write is in flight.
    pub fn follows_status_write(&self) -> bool {
        matches!(self.reason, "IPAllocated" | "IPReleased")
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Service.
    Service(ServiceKey),
    /// An Eip.
    Eip(String),
}

/// What one pass decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// API writes, in the order to make them (Service writes first: users wait for those).
    pub writes: Vec<Write>,
    /// Events.
    pub notices: Vec<Notice>,
}

/// The allocator controller's memory between passes.
#[derive(Default)]
pub struct AllocatorState {
    alloc: Allocator,
    /// The last valid spec of each Eip, applied to the allocator. An invalid edit keeps the previous version, so
    /// a typo never takes addresses away from Services.
    applied: BTreeMap<String, PoolSpec>,
    /// Eips whose current spec is invalid, with the reason.
    invalid: BTreeMap<String, String>,
    /// Invalid Eips never seen valid (e.g. unreadable when the allocator started), applied as a disabled pool of
    /// exactly the addresses their Services hold, so those keep them until the Eip is fixed.
    frozen: BTreeSet<String>,
    /// The last failure reported per Service, so a Service that keeps failing is reported once per reason.
    reported: HashMap<ServiceKey, String>,
    /// Why a Service lost its addresses (pool shrunk, deleted, ...), for the Event that goes with the status write,
    /// with the addresses that write sets (known from the pass that evicted it). Kept while the controller may still
    /// make that write (it can leave a burst's writes for later passes): until the status shows the addresses, or
    /// the Service is given others (then the reason no longer explains the change).
    evicted: HashMap<ServiceKey, (String, Option<Vec<IpAddr>>)>,
    started: bool,
}

impl AllocatorState {
    /// An allocator that has not seen the cluster yet; the first pass rebuilds from the Services.
    pub fn new() -> Self {
        Self::default()
    }

    /// The allocator (for metrics and tests).
    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    /// One reconcile pass over the whole snapshot. Cheap when nothing changed: every step compares with what the
    /// objects already say and emits only differences. Memory: nothing is built per Service but borrowed indexes
    /// (a request lives while its Service is handled), so a pass over 10,000 Services costs a few hundred KiB.
    pub fn reconcile(&mut self, snap: &Snapshot, default_class: bool, now: &Time) -> Plan {
        let mut plan = Plan::default();
        self.sync_pools(snap, &mut plan);
        self.sync_checks(snap, now);
        // Oldest first: allocation is first-come, and the order never depends on the watch's event order.
        let mut services: Vec<&Arc<ServiceView>> = snap.services.iter().collect();
        services.sort_by(|a, b| first_come(a).cmp(&first_come(b)));
        if !self.started {
            self.rebuild(snap, default_class, &mut plan);
            self.started = true;
        }
        // Deleted Services release first, so their addresses are free for the Services handled below.
        let seen: HashSet<(&str, &str)> = services
            .iter()
            .map(|s| (s.namespace.as_str(), s.name.as_str()))
            .collect();
        let gone: Vec<ServiceKey> = self
            .alloc
            .allocations()
            .map(|(k, _)| k)
            .filter(|k| !seen.contains(&(k.namespace.as_str(), k.name.as_str())))
            .cloned()
            .collect();
        for key in gone {
            self.forget(&key);
        }
        for svc in &services {
            let key = service_key(svc);
            if !convert::handles(svc, default_class) {
                self.forget(&key);
                self.evicted.remove(&key);
                // No longer ours (type changed): take back what Herald wrote.
                if convert::allocated_from(svc).is_some() {
                    if !convert::status_ips(svc).is_empty() {
                        plan.writes.push(Write::ServiceIngress {
                            service: key.clone(),
                            ips: vec![],
                        });
                    }
                    plan.writes.push(Write::ServiceAllocatedFrom {
                        service: key,
                        pool: None,
                    });
                }
                continue;
            }
            let labels = snap.namespaces.get(&svc.namespace).cloned().unwrap_or_default();
            match convert::service_request(svc, &labels) {
                Ok(req) => self.allocate(&req, &mut plan),
                // Unreadable input: keep whatever the Service holds.
                Err(e) => self.report(&mut plan, key.clone(), true, "AllocationFailed", e.to_string()),
            }
            self.write_service(svc, &key, &mut plan);
        }
        self.report_unreadable_services(snap, &mut plan);
        let unreadable: HashSet<(&str, &str)> = snap
            .unreadable_services
            .iter()
            .filter_map(|u| Some((u.metadata.namespace.as_deref()?, u.metadata.name.as_deref()?)))
            .collect();
        self.reported.retain(|k, _| {
            let k = (k.namespace.as_str(), k.name.as_str());
            seen.contains(&k) || unreadable.contains(&k)
        });
        self.evicted
            .retain(|k, _| seen.contains(&(k.namespace.as_str(), k.name.as_str())));
        let announcers = self.announcers(&snap.ip_leases);
        // An unreadable Eip's status is written from what the server has now, never from the last readable
        // version the store keeps (comparing with that would write again after every write).
        let unreadable: BTreeMap<String, Eip> = snap
            .unreadable_eips
            .iter()
            .filter_map(|u| Some((u.metadata.name.clone()?, status_view(u))))
            .collect();
        let readable = snap
            .eips
            .iter()
            .map(|e| &**e)
            .filter(|e| !unreadable.contains_key(&e.name_any()));
        for eip in readable.chain(unreadable.values()) {
            let (list, omitted) = announcers.get(eip.name_any().as_str()).cloned().unwrap_or_default();
            self.write_eip_status(eip, list, omitted, now, &mut plan);
        }
        plan
    }

    /// For each pool: the first [`MAX_STATUS_ANNOUNCERS`] of its allocated IPs that a node holds, in address
    /// order, with that node; and how many more there are.
    fn announcers(&self, ip_leases: &[Arc<HeldLease>]) -> HashMap<&str, (Vec<IpAnnouncer>, u64)> {
        let holders: HashMap<&str, &str> = ip_leases
            .iter()
            .filter_map(|l| {
                Some((
                    l.name.as_str(),
                    herald_election::identity::holder_node(l.holder.as_deref()?),
                ))
            })
            .collect();
        let mut announcers: HashMap<&str, (Vec<IpAnnouncer>, u64)> = HashMap::new();
        for (ip, pool) in self.alloc.addresses() {
            let Ok(lease) = herald_election::naming::ip_lease_name(ip) else {
                continue;
            };
            let Some(node) = holders.get(lease.as_str()) else {
                continue;
            };
            let (list, omitted) = announcers.entry(pool).or_default();
            if list.len() < MAX_STATUS_ANNOUNCERS {
                list.push(IpAnnouncer {
                    ip: ip.to_string(),
                    node: node.to_string(),
                });
            } else {
                *omitted += 1;
            }
        }
        announcers
    }

    /// Says once per reason that a Service cannot be read. The store keeps a Service's last readable version, so
    /// what it held stays allocated; one never read since the allocator started is unknown to it.
    fn report_unreadable_services(&mut self, snap: &Snapshot, plan: &mut Plan) {
        for u in &snap.unreadable_services {
            let (Some(ns), Some(name)) = (&u.metadata.namespace, &u.metadata.name) else {
                continue;
            };
            let note = format!(
                "Herald cannot read this Service ({}); it keeps the addresses it held, and changes to it are ignored \
                 until it is fixed",
                u.reason
            );
            self.report(
                plan,
                ServiceKey::new(ns.clone(), name.clone()),
                true,
                "UnreadableService",
                note,
            );
        }
    }

    fn forget(&mut self, key: &ServiceKey) {
        self.alloc.release(key);
    }

    /// What the address checks of each Layer 2 pool found (`status.probes`): proven-free addresses go first, and
    /// addresses another host answers for are never handed out.
    fn sync_checks(&mut self, snap: &Snapshot, now: &Time) {
        for eip in &snap.eips {
            let (free, taken) = if eip.spec.protocol == Protocol::Layer2 {
                (
                    prober::proven_free(eip, now.0, prober::TIMING.valid),
                    prober::taken(eip),
                )
            } else {
                Default::default()
            };
            self.alloc.set_checks(&eip.name_any(), free, taken);
        }
    }

    fn sync_pools(&mut self, snap: &Snapshot, plan: &mut Plan) {
        let mut evictions = Vec::new();
        let mut present = BTreeSet::new();
        // An unreadable Eip counts as invalid, whether or not the store still has a readable version of it.
        let unreadable: BTreeMap<String, String> = snap
            .unreadable_eips
            .iter()
            .filter_map(|u| Some((u.metadata.name.clone()?, format!("cannot be read: {}", u.reason))))
            .collect();
        let read = snap.eips.iter().map(|eip| {
            let name = eip.name_any();
            let parsed = match unreadable.get(&name) {
                Some(reason) => Err(reason.clone()),
                None => convert::pool_spec(eip)
                    .and_then(|spec| Pool::parse(&spec).map(|pool| (spec, pool)).map_err(|e| e.to_string())),
            };
            (name, parsed)
        });
        let unread = unreadable
            .iter()
            .filter(|(name, _)| !snap.eips.iter().any(|e| e.name_any() == **name))
            .map(|(name, reason)| (name.clone(), Err(reason.clone())));
        for (name, parsed) in read.chain(unread).collect::<Vec<_>>() {
            present.insert(name.clone());
            match parsed {
                Ok((spec, pool)) => {
                    self.invalid.remove(&name);
                    self.frozen.remove(&name);
                    if self.applied.get(&name) != Some(&spec) {
                        evictions.extend(self.alloc.set_pool(pool));
                        self.applied.insert(name, spec);
                    }
                }
                Err(reason) => {
                    if !self.applied.contains_key(&name)
                        && let Some((spec, pool)) = frozen_pool(&name, snap)
                    {
                        // Never seen valid: keep what its Services hold rather than move them elsewhere.
                        evictions.extend(self.alloc.set_pool(pool));
                        self.applied.insert(name.clone(), spec);
                        self.frozen.insert(name.clone());
                    }
                    if self.invalid.get(&name) != Some(&reason) {
                        let kept = if self.frozen.contains(&name) {
                            "; the addresses its Services hold stay in use, and it gives no new ones until it is fixed"
                        } else if self.applied.contains_key(&name) {
                            "; the previous addresses stay in use until it is fixed"
                        } else {
                            ""
                        };
                        plan.notices.push(Notice {
                            target: Target::Eip(name.clone()),
                            warning: true,
                            reason: "InvalidEip",
                            note: format!("{reason}{kept}"),
                        });
                    }
                    self.invalid.insert(name, reason);
                }
            }
        }
        let removed: Vec<String> = self.applied.keys().filter(|n| !present.contains(*n)).cloned().collect();
        for name in removed {
            self.applied.remove(&name);
            self.frozen.remove(&name);
            evictions.extend(self.alloc.remove_pool(&name));
        }
        self.invalid.retain(|n, _| present.contains(n));
        for e in evictions {
            self.evicted.insert(e.service.clone(), (e.to_string(), None));
        }
    }

    /// First pass: the allocations recorded on the Services become the allocator's state, so a restart or a new
    /// leader never reshuffles an IP. Conflicting records (two Services on one IP that may not share) keep the
    /// older Service's claim; the others are allocated again in the same pass.
    fn rebuild(&mut self, snap: &Snapshot, default_class: bool, plan: &mut Plan) {
        let mut existing = Vec::new();
        for svc in snap.services.iter().filter(|s| convert::handles(s, default_class)) {
            let labels = snap.namespaces.get(&svc.namespace).cloned().unwrap_or_default();
            let req = convert::service_request(svc, &labels).unwrap_or_else(|_| {
                // Unreadable annotations: still keep what the Service holds.
                let mut r = ServiceRequest::new(svc.namespace.clone(), svc.name.clone());
                r.created = convert::creation_key(svc);
                r
            });
            if let Some(a) = convert::existing_assignment(svc, req) {
                existing.push(a);
            }
        }
        for conflict in self.alloc.rebuild(existing) {
            self.evicted
                .insert(conflict.service.clone(), (conflict.to_string(), None));
            self.report(plan, conflict.service.clone(), true, "IPConflict", conflict.to_string());
        }
    }

    fn allocate(&mut self, req: &ServiceRequest, plan: &mut Plan) {
        let key = &req.key;
        let before = self.alloc.allocation(key).cloned();
        // The request the Service's allocation was made for (the allocator keeps it with the allocation, and drops
        // both when an allocation fails).
        let previous_request = self.alloc.request(key).cloned();
        match self.alloc.allocate(req) {
            Ok(_) => {
                self.reported.remove(key);
            }
            Err(err) => {
                let kept = match (before, previous_request) {
                    // The Service's new request cannot be met; it keeps what it had (bad input loses nothing),
                    // unless keeping it would break sharing rules with its neighbours.
                    (Some(prev), Some(mut prev_req)) if !matches!(err, AllocError::SharingRefused { .. }) => {
                        prev_req.requested_ips = prev.ips.clone();
                        prev_req.pool = Some(prev.pool.clone());
                        self.alloc.allocate(&prev_req).ok()
                    }
                    _ => None,
                };
                match kept {
                    Some(a) => {
                        let note = format!("{err}; keeping {} from Eip '{}'", join(&a.ips), a.pool);
                        self.report(plan, key.clone(), true, "AllocationFailed", note);
                    }
                    None => {
                        self.report(plan, key.clone(), true, "AllocationFailed", err.to_string());
                    }
                }
            }
        }
    }

    fn write_service(&mut self, svc: &ServiceView, key: &ServiceKey, plan: &mut Plan) {
        let desired = self.alloc.allocation(key).cloned();
        let current_ips = convert::status_ips(svc);
        let current_pool = convert::allocated_from(svc);
        let (ips, pool) = match &desired {
            Some(Allocation { pool, ips }) => (ips.clone(), Some(pool.clone())),
            None => (vec![], None),
        };
        let ips_changed = current_ips != ips;
        if ips_changed {
            plan.writes.push(Write::ServiceIngress {
                service: key.clone(),
                ips: ips.clone(),
            });
        }
        if current_pool != pool.as_deref() {
            plan.writes.push(Write::ServiceAllocatedFrom {
                service: key.clone(),
                pool: pool.clone(),
            });
        }
        if !ips_changed {
            self.evicted.remove(key);
            return;
        }
        let why = match self.evicted.get_mut(key) {
            Some((reason, for_ips)) => {
                if for_ips.get_or_insert_with(|| ips.clone()) == &ips {
                    format!(" ({reason})")
                } else {
                    self.evicted.remove(key);
                    String::new()
                }
            }
            None => String::new(),
        };
        match (&desired, current_ips.is_empty()) {
            (Some(a), _) => plan.notices.push(Notice {
                target: Target::Service(key.clone()),
                warning: false,
                reason: "IPAllocated",
                note: format!("allocated {} from Eip '{}'{why}", join(&a.ips), a.pool),
            }),
            (None, false) => plan.notices.push(Notice {
                target: Target::Service(key.clone()),
                warning: true,
                reason: "IPReleased",
                note: format!("released {}{why}", join(&current_ips)),
            }),
            (None, true) => {}
        }
    }

    fn report(&mut self, plan: &mut Plan, key: ServiceKey, warning: bool, reason: &'static str, note: String) {
        if self.reported.get(&key) == Some(&note) {
            return;
        }
        self.reported.insert(key.clone(), note.clone());
        plan.notices.push(Notice {
            target: Target::Service(key),
            warning,
            reason,
            note,
        });
    }

    fn write_eip_status(&self, eip: &Eip, announcers: Vec<IpAnnouncer>, omitted: u64, now: &Time, plan: &mut Plan) {
        let name = eip.name_any();
        let current = eip.status.clone().unwrap_or_default();
        let mut status = EipStatus {
            observed_generation: eip.metadata.generation,
            addresses: herald_api::eip::addresses_summary(&eip.spec.addresses),
            announcers,
            announcers_omitted: omitted,
            conditions: current.conditions.clone(),
            // Written by the prober, never by the allocator (`Write::EipStatus` leaves it out); kept so that the
            // comparison below sees only the allocator's fields.
            probes: current.probes.clone(),
            ..Default::default()
        };
        let generation = eip.metadata.generation;
        if let Some(stats) = self.alloc.pool_stats(&name) {
            let v4 = stats.family(Family::V4);
            let v6 = stats.family(Family::V6);
            status.used = u64::try_from(v4.used + v6.used).unwrap_or(u64::MAX);
            // Cannot saturate: never-allocated blocks keep an IPv6 total far below u128::MAX.
            status.free = v4.free.saturating_add(v6.free).to_string();
            status.total = v4.total.saturating_add(v6.total).to_string();
            status.ipv4 = (v4.total > 0).then(|| usage(v4));
            status.ipv6 = (v6.total > 0).then(|| usage(v6));
            let exhausted: Vec<&str> = [("IPv4", v4), ("IPv6", v6)]
                .into_iter()
                .filter(|(_, s)| s.total > 0 && s.free == 0)
                .map(|(f, _)| f)
                .collect();
            let (reason, message) = if exhausted.is_empty() {
                ("HasFreeAddresses", "addresses are free".to_string())
            } else {
                ("Exhausted", format!("no free {} address left", exhausted.join(" or ")))
            };
            let conds = &mut status.conditions;
            set_condition(
                conds,
                conditions::EXHAUSTED,
                !exhausted.is_empty(),
                reason,
                message,
                generation,
                now.clone(),
            );
        } else {
            status.free = "0".into();
            status.total = "0".into();
        }
        // A handful is enough to act on, and the message is cut at 1 KiB anyway; finding only this Eip's pairs
        // keeps a pass cheap when hundreds of Eips overlap each other (all of them `0.0.0.0/0`, say).
        const LISTED_OVERLAPS: usize = 5;
        let (listed, all) = self.alloc.overlaps_of(&name, LISTED_OVERLAPS);
        let mut overlaps: Vec<String> = listed.iter().map(ToString::to_string).collect();
        if all > listed.len() {
            overlaps.push(format!("and {} more", all - listed.len()));
        }
        let (reason, message) = if overlaps.is_empty() {
            ("NoOverlap", "no address is in another Eip".to_string())
        } else {
            ("OverlapsOtherEip", overlaps.join("; "))
        };
        set_condition(
            &mut status.conditions,
            conditions::OVERLAPPING,
            !overlaps.is_empty(),
            reason,
            message,
            generation,
            now.clone(),
        );
        // Only the never-allocated blocks the Eip's entries touch, e.g. " (left out: 127.0.0.0/8 loopback)".
        let left_out: Vec<String> = self
            .alloc
            .pool(&name)
            .map(|p| p.left_out().iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let left_out = if left_out.is_empty() {
            String::new()
        } else {
            format!(" (left out: {})", left_out.join(", "))
        };
        let (ready, reason, message) = match (self.invalid.get(&name), self.applied.contains_key(&name)) {
            (Some(err), true) => (
                false,
                "InvalidSpec",
                if self.frozen.contains(&name) {
                    format!("{err}; its Services keep the addresses they hold, and it gives no new ones")
                } else {
                    format!("{err}; still serving the previous addresses")
                },
            ),
            (Some(err), false) => (false, "InvalidSpec", err.clone()),
            (None, _) if eip.spec.disable => (
                true,
                "Disabled",
                format!("gives no new addresses (spec.disable){left_out}"),
            ),
            (None, _) => (true, "Valid", format!("{} addresses{left_out}", status.total)),
        };
        if eip.spec.protocol == Protocol::Layer2 {
            let (conflict, reason, message) = address_conflict(current.probes.as_ref());
            set_condition(
                &mut status.conditions,
                conditions::CONFLICT,
                conflict,
                reason,
                message,
                generation,
                now.clone(),
            );
        }
        set_condition(
            &mut status.conditions,
            conditions::READY,
            ready,
            reason,
            message,
            generation,
            now.clone(),
        );
        if status != current {
            plan.writes.push(Write::EipStatus {
                eip: name,
                status: Box::new(status),
            });
        }
    }
}

/// The `AddressConflict` condition of a Layer 2 Eip, from its address checks.
fn address_conflict(probes: Option<&AddressProbes>) -> (bool, &'static str, String) {
    let Some(p) = probes else {
        return (
            false,
            "NotChecked",
            "no node has checked this pool's free addresses yet".to_string(),
        );
    };
    if p.conflicts.is_empty() {
        return (
            false,
            "NoConflict",
            format!(
                "no other host answers for the free addresses node {} checked on {}",
                p.node, p.interface
            ),
        );
    }
    let listed: Vec<String> = p
        .conflicts
        .iter()
        .map(|c| format!("{} (host {})", c.ip, c.mac))
        .collect();
    (
        true,
        "HostAnswers",
        format!(
            "other hosts answer for {} (checked by node {} on {}); Herald does not hand these addresses out. Remove them              from the Eip, or the hosts from the network",
            listed.join(", "),
            p.node,
            p.interface
        ),
    )
}

fn usage(s: FamilyStats) -> FamilyUsage {
    FamilyUsage {
        total: s.total.to_string(),
        used: u64::try_from(s.used).unwrap_or(u64::MAX),
        free: s.free.to_string(),
        summary: format!("{}/{}", s.used, s.total),
    }
}

/// The pool that stands in for an Eip that was never valid (unreadable or invalid since the allocator started):
/// disabled, with exactly the addresses Services record as allocated from it. `None` when no Service holds one.
fn frozen_pool(name: &str, snap: &Snapshot) -> Option<(PoolSpec, Pool)> {
    let held: BTreeSet<IpAddr> = snap
        .services
        .iter()
        .filter(|s| convert::allocated_from(s) == Some(name))
        .flat_map(|s| convert::status_ips(s))
        .collect();
    if held.is_empty() {
        return None;
    }
    let spec = PoolSpec {
        addresses: held.iter().map(ToString::to_string).collect(),
        disabled: true,
        auto_assign: false,
        ..PoolSpec::new(name, &[])
    };
    let pool = Pool::parse(&spec).ok()?;
    Some((spec, pool))
}

/// An unreadable Eip as far as its status goes: its name, generation and the status the server has now.
fn status_view(u: &Unreadable) -> Eip {
    let mut eip = Eip::new(u.metadata.name.as_deref().unwrap_or_default(), EipSpec::default());
    eip.metadata = u.metadata.clone();
    eip.status = u.status.clone().and_then(|s| serde_json::from_value(s).ok());
    eip
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
