//! The allocator: pools plus who holds which address, and the rules for handing addresses out.
//!
//! State is kept so that every operation costs O(log n) in the number of allocations (plus the number of
//! pools and of pool entries, which are small): allocated addresses of each family live in one
//! [`IntervalSet`], so "lowest free address of a pool" is one ordered-map lookup per pool entry, and nothing
//! is ever proportional to a pool's size.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::error::AllocError;
use crate::intervals::IntervalSet;
use crate::never_allocated::NeverAllocated;
use crate::pool::{FamilyStats, Overlap, Pool, PoolRefusal, PoolStats, find_overlaps, find_overlaps_of};
use crate::range::{Family, from_u128, to_u128};
use crate::request::{Allocation, IpFamilyPolicy, ServiceKey, ServiceRequest};
use crate::sharing::{self, SharingConflict};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// Pools and allocations. Pure: no I/O, no clock, no randomness; the same calls in the same order give the
/// same results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocator {
    pools: BTreeMap<String, PoolState>,
    /// Every held address, per family (index [`Family::index`]).
    used: [IntervalSet; 2],
    /// Who holds each address, and which pool it was allocated from.
    ips: BTreeMap<IpAddr, IpHolders>,
    /// Boxed so that B-tree nodes stay small: memory per Service is what it holds, not node slack.
    services: BTreeMap<ServiceKey, Box<Holding>>,
    /// Addresses held under each sharing key, to find a shareable address without scanning.
    shared: BTreeMap<String, BTreeSet<IpAddr>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PoolState {
    pool: Pool,
    /// The name, shared by every address allocated from the pool.
    name: Arc<str>,
    /// Addresses allocated from this pool, per family.
    used: [u128; 2],
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IpHolders {
    pool: Arc<str>,
    /// Sorted; usually one, a few when shared.
    holders: Vec<ServiceKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holding {
    allocation: Allocation,
    /// The request that produced (or, at rebuild, claimed) the allocation; sharing and pool rules are
    /// checked against it later.
    request: ServiceRequest,
}

/// A Service's current addresses as recorded on the Service (status + `herald.dev/allocated-from`), fed to
/// [`Allocator::rebuild`] at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingAssignment {
    /// The Service as it is now.
    pub request: ServiceRequest,
    /// `herald.dev/allocated-from`, if present.
    pub pool: Option<String>,
    /// `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<IpAddr>,
}

/// A Service that lost its addresses because its pool changed; the controller should allocate again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The Service.
    pub service: ServiceKey,
    /// What it held.
    pub allocation: Allocation,
    /// Why it lost it.
    pub reason: EvictionReason,
}

/// Why an allocation stopped being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionReason {
    /// The Eip was deleted.
    PoolRemoved,
    /// The Eip no longer contains this address.
    AddressRemoved {
        /// The address.
        ip: IpAddr,
    },
    /// The Eip no longer serves the Service (namespace or service selector changed).
    NotAllowed(PoolRefusal),
}

impl fmt::Display for Eviction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = &self.allocation.pool;
        write!(
            f,
            "{} loses {} from Eip '{pool}': ",
            self.service,
            list_ips(&self.allocation.ips)
        )?;
        match &self.reason {
            EvictionReason::PoolRemoved => write!(f, "the Eip was deleted"),
            EvictionReason::AddressRemoved { ip } => {
                write!(f, "{ip} is no longer in the Eip's addresses")
            }
            EvictionReason::NotAllowed(refusal) => write!(f, "{refusal}"),
        }
    }
}

/// A recorded assignment [`Allocator::rebuild`] could not keep; the Service must be allocated again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The Service.
    pub service: ServiceKey,
    /// The addresses it claimed.
    pub ips: Vec<IpAddr>,
    /// Why it cannot keep them.
    pub reason: ConflictReason,
}

/// Why a recorded assignment was dropped at rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictReason {
    /// The record lists no address.
    NoAddresses,
    /// The same Service appeared twice; the first (older) record was kept.
    Duplicate,
    /// More than one address of a family.
    TooManyIps {
        /// The family.
        family: Family,
    },
    /// The address is in a [`NeverAllocated`] block (an earlier Herald handed such addresses out).
    NeverAllocated {
        /// The address.
        ip: IpAddr,
        /// The block it is in.
        block: &'static NeverAllocated,
    },
    /// The address is in no Eip.
    OutsidePools {
        /// The address.
        ip: IpAddr,
    },
    /// The addresses are not all in one Eip.
    SplitAcrossPools,
    /// The Eip does not serve the Service any more.
    NotAllowed {
        /// The Eip.
        pool: String,
        /// Why.
        reason: Box<PoolRefusal>,
    },
    /// An older Service holds the address and the two may not share it.
    Contested {
        /// The address.
        ip: IpAddr,
        /// Why they may not share (names the older Service).
        reason: Box<SharingConflict>,
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cannot keep {}: ", self.service, list_ips(&self.ips))?;
        match &self.reason {
            ConflictReason::NoAddresses => write!(f, "the record lists no address"),
            ConflictReason::Duplicate => write!(f, "the Service was listed twice"),
            ConflictReason::TooManyIps { family } => {
                write!(f, "it holds more than one {family} address")
            }
            ConflictReason::NeverAllocated { ip, block } => write!(
                f,
                "{ip} is in {block} ({}), which is never a Service's address",
                block.rfc()
            ),
            ConflictReason::OutsidePools { ip } => write!(f, "{ip} is in no Eip"),
            ConflictReason::SplitAcrossPools => write!(f, "the addresses are not in one Eip"),
            ConflictReason::NotAllowed { pool, reason } => {
                write!(f, "Eip '{pool}' does not serve it: {reason}")
            }
            ConflictReason::Contested { ip, reason } => {
                write!(f, "{ip} stays with the older Service {}: {reason}", reason.other())
            }
        }
    }
}

fn list_ips(ips: &[IpAddr]) -> String {
    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

/// Which families a request needs, in order, and the addresses it pins.
struct FamilyPlan {
    /// (family, required) in the Service's `ipFamilies` order.
    wants: Vec<(Family, bool)>,
    requested: [Option<IpAddr>; 2],
}

impl FamilyPlan {
    fn new(req: &ServiceRequest) -> Result<Self, AllocError> {
        let mut requested: [Option<IpAddr>; 2] = [None, None];
        for &ip in &req.requested_ips {
            // Said before any pool is looked at: no pool could give it, whatever it lists.
            if let Some(block) = NeverAllocated::containing(ip) {
                return Err(AllocError::IpNeverAllocated {
                    service: req.key.clone(),
                    ip,
                    block,
                });
            }
            let family = Family::of(ip);
            match requested[family.index()] {
                Some(first) if first != ip => {
                    return Err(AllocError::TooManyRequestedIps {
                        service: req.key.clone(),
                        family,
                        first,
                        second: ip,
                    });
                }
                _ => requested[family.index()] = Some(ip),
            }
        }
        // The primary family: the first of ipFamilies, else of the requested addresses, else IPv4.
        let primary = req
            .ip_families
            .iter()
            .copied()
            .chain(req.requested_ips.iter().map(|ip| Family::of(*ip)))
            .next()
            .unwrap_or(Family::V4);
        let secondary = primary.other();
        let wants = match req.ip_family_policy {
            IpFamilyPolicy::SingleStack => vec![(primary, true)],
            IpFamilyPolicy::PreferDualStack => vec![(primary, true), (secondary, false)],
            IpFamilyPolicy::RequireDualStack => vec![(primary, true), (secondary, true)],
        };
        for ip in requested.iter().flatten() {
            let family = Family::of(*ip);
            if !wants.iter().any(|(f, _)| *f == family) {
                return Err(AllocError::WrongFamily {
                    service: req.key.clone(),
                    ip: *ip,
                    family,
                    policy: req.ip_family_policy,
                    families: wants.iter().map(|(f, _)| f.to_string()).collect::<Vec<_>>().join(","),
                });
            }
        }
        Ok(Self { wants, requested })
    }
}

impl Allocator {
    /// No pools, no allocations.
    pub fn new() -> Self {
        Self::default()
    }

    // ---- pools ----

    /// Adds or replaces a pool. Services holding addresses from it that the new version no longer contains or
    /// no longer serves (namespace/service selector) are released and returned, so the controller can
    /// allocate them again. Disabling a pool or clearing `autoAssign` keeps existing allocations.
    /// O(number of allocations).
    pub fn set_pool(&mut self, pool: Pool) -> Vec<Eviction> {
        let name = pool.name().to_string();
        let used = self.pools.get(&name).map_or([0, 0], |s| s.used);
        let state = PoolState {
            pool,
            name: Arc::from(name.as_str()),
            used,
        };
        self.pools.insert(name.clone(), state);
        self.evict_invalid(&name)
    }

    /// Removes a pool; every Service holding addresses from it is released and returned.
    pub fn remove_pool(&mut self, name: &str) -> Vec<Eviction> {
        self.pools.remove(name);
        self.evict_invalid(name)
    }

    /// A pool by name.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name).map(|s| &s.pool)
    }

    /// All pools, by name.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> + '_ {
        self.pools.values().map(|s| &s.pool)
    }

    /// Pairs of pools sharing addresses (see [`Overlap`]).
    pub fn overlaps(&self) -> Vec<Overlap> {
        find_overlaps(self.pools())
    }

    /// The pairs of [`Allocator::overlaps`] that involve pool `name`, in the same order: the first `limit`, and
    /// how many there are in all. For one Eip's status: it neither finds nor builds every pair of every pool.
    pub fn overlaps_of(&self, name: &str, limit: usize) -> (Vec<Overlap>, usize) {
        match self.pool(name) {
            Some(pool) => find_overlaps_of(pool, self.pools(), limit),
            None => (Vec::new(), 0),
        }
    }

    /// Per-family counts for the pool's status. An address shared by several Services counts once; an address
    /// in two overlapping pools counts in the pool it was allocated from.
    pub fn pool_stats(&self, name: &str) -> Option<PoolStats> {
        let state = self.pools.get(name)?;
        let family = |f: Family| {
            let total = state.pool.total(f);
            let used = state.used[f.index()];
            FamilyStats {
                total,
                used,
                free: total.saturating_sub(used),
            }
        };
        Some(PoolStats {
            ipv4: family(Family::V4),
            ipv6: family(Family::V6),
        })
    }

    // ---- allocations ----

    /// Gives the Service its addresses, or says precisely why not.
    ///
    /// A Service that already holds addresses keeps them as long as they still satisfy the request (same
    /// pool allowed, requested addresses unchanged, sharing still valid): calling this again returns the
    /// same allocation. Otherwise the old allocation is released and a new one made, reusing each old
    /// address that still fits. **After an error the Service holds nothing**, so that a Service whose
    /// request became invalid (e.g. a port now overlapping a sharer's) never keeps an invalid address.
    ///
    /// Pool choice: the pool named by `req.pool`; else the pool containing the requested addresses; else the
    /// pools serving the Service with `autoAssign` and not disabled, lowest `priority` first, ties by name
    /// (the pool the Service already uses goes first). In the chosen pool each family gets the requested
    /// address, else the Service's previous one, else (with a sharing key) the lowest address already
    /// shared under that key that it may join, else the lowest free address.
    pub fn allocate(&mut self, req: &ServiceRequest) -> Result<Allocation, AllocError> {
        let previous = self.release(&req.key);
        let plan = FamilyPlan::new(req)?;
        let (pool, ips) = self.choose(req, &plan, previous.as_ref())?;
        let allocation = Allocation { pool, ips };
        self.commit(req.clone(), allocation.clone());
        Ok(allocation)
    }

    /// Releases everything the Service holds; returns what it held. A shared address stays allocated while
    /// another Service holds it.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Allocation> {
        let holding = self.services.remove(key)?;
        for &ip in &holding.allocation.ips {
            let Some(entry) = self.ips.get_mut(&ip) else {
                continue;
            };
            entry.holders.retain(|k| k != key);
            if !entry.holders.is_empty() {
                continue;
            }
            let pool = Arc::clone(&entry.pool);
            self.ips.remove(&ip);
            let family = Family::of(ip);
            self.used[family.index()].remove(to_u128(ip));
            if let Some(state) = self.pools.get_mut(&*pool) {
                state.used[family.index()] = state.used[family.index()].saturating_sub(1);
            }
            if let Some(k) = &holding.request.sharing_key
                && let Some(set) = self.shared.get_mut(k)
            {
                set.remove(&ip);
                if set.is_empty() {
                    self.shared.remove(k);
                }
            }
        }
        Some(holding.allocation)
    }

    /// What the Service holds.
    pub fn allocation(&self, key: &ServiceKey) -> Option<&Allocation> {
        self.services.get(key).map(|h| &h.allocation)
    }

    /// The Services holding `ip`, by key.
    pub fn holders(&self, ip: IpAddr) -> impl Iterator<Item = &ServiceKey> + '_ {
        self.ips.get(&ip).into_iter().flat_map(|h| h.holders.iter())
    }

    /// Every allocation, by Service key.
    pub fn allocations(&self) -> impl Iterator<Item = (&ServiceKey, &Allocation)> + '_ {
        self.services.iter().map(|(k, h)| (k, &h.allocation))
    }

    /// Number of Services holding addresses.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The current allocations in the form [`Allocator::rebuild`] takes; rebuilding from them gives an
    /// equal allocator.
    pub fn assignments(&self) -> Vec<ExistingAssignment> {
        self.services
            .values()
            .map(|h| ExistingAssignment {
                request: h.request.clone(),
                pool: Some(h.allocation.pool.clone()),
                ips: h.allocation.ips.clone(),
            })
            .collect()
    }

    /// Replaces all allocations with the recorded ones (pools stay). Records are taken oldest first
    /// (creation timestamp, then uid, then namespace/name), so when two Services claim one address and may
    /// not share it, the older keeps it. A record is kept whole or not at all; the dropped ones are returned
    /// with the reason, and the controller allocates those Services again. Requests are not re-evaluated
    /// here beyond what makes an assignment valid (address in a pool serving the Service, one per family,
    /// sharing rules); the controller's next [`Allocator::allocate`] brings each Service in line with its
    /// current spec.
    pub fn rebuild(&mut self, mut existing: Vec<ExistingAssignment>) -> Vec<Conflict> {
        self.used = Default::default();
        self.ips.clear();
        self.services.clear();
        self.shared.clear();
        for state in self.pools.values_mut() {
            state.used = [0, 0];
        }
        // The addresses and pool only break ties between records of one Service (which should not happen),
        // so that the result never depends on input order.
        existing.sort_by(|a, b| {
            (&a.request.created, &a.request.key, &a.ips, &a.pool).cmp(&(
                &b.request.created,
                &b.request.key,
                &b.ips,
                &b.pool,
            ))
        });
        let mut conflicts = Vec::new();
        for record in existing {
            if record.ips.is_empty() {
                continue;
            }
            match self.claim(&record) {
                Ok(pool) => self.commit(record.request, Allocation { pool, ips: record.ips }),
                Err(reason) => conflicts.push(Conflict {
                    service: record.request.key,
                    ips: record.ips,
                    reason,
                }),
            }
        }
        conflicts
    }

    /// Adopts one recorded assignment, as [`Allocator::rebuild`] does for many: for a Service that shows up
    /// with addresses the allocator does not know yet (e.g. written by a previous allocator). Whatever the
    /// Service held before is replaced. Unlike at rebuild, the record is not weighed by age: a valid holder
    /// keeps its address and the record is refused.
    pub fn assign_existing(&mut self, record: ExistingAssignment) -> Result<Allocation, Conflict> {
        self.release(&record.request.key);
        if record.ips.is_empty() {
            return Err(Conflict {
                service: record.request.key,
                ips: record.ips,
                reason: ConflictReason::NoAddresses,
            });
        }
        match self.claim(&record) {
            Ok(pool) => {
                let allocation = Allocation { pool, ips: record.ips };
                self.commit(record.request, allocation.clone());
                Ok(allocation)
            }
            Err(reason) => Err(Conflict {
                service: record.request.key,
                ips: record.ips,
                reason,
            }),
        }
    }

    // ---- internals ----

    /// Pools in the order automatic assignment tries them: lowest priority number first, then by name.
    fn ordered_pools(&self) -> Vec<&Pool> {
        let mut pools: Vec<&Pool> = self.pools().collect();
        pools.sort_by(|a, b| (a.priority(), a.name()).cmp(&(b.priority(), b.name())));
        pools
    }

    /// The pools to try, in order (never empty on success).
    fn candidates(
        &self,
        req: &ServiceRequest,
        plan: &FamilyPlan,
        previous: Option<&Allocation>,
    ) -> Result<Vec<&Pool>, AllocError> {
        if let Some(name) = &req.pool {
            return self.named_pool(req, name).map(|p| vec![p]);
        }
        let requested: Vec<IpAddr> = plan.requested.iter().flatten().copied().collect();
        if !requested.is_empty() {
            return self.pools_containing(req, requested);
        }
        self.automatic_pools(req, previous)
    }

    /// `herald.dev/eip`: that pool, if it exists and serves the Service.
    fn named_pool(&self, req: &ServiceRequest, name: &str) -> Result<&Pool, AllocError> {
        let pool = self.pool(name).ok_or_else(|| AllocError::PoolNotFound {
            service: req.key.clone(),
            pool: name.to_string(),
        })?;
        pool.permits(req).map_err(|reason| AllocError::PoolNotAllowed {
            service: req.key.clone(),
            pool: name.to_string(),
            reason: Box::new(reason),
        })?;
        Ok(pool)
    }

    /// Requested addresses: the pools holding all of them that serve the Service, in priority order.
    fn pools_containing(&self, req: &ServiceRequest, requested: Vec<IpAddr>) -> Result<Vec<&Pool>, AllocError> {
        let mut containing: Vec<&Pool> = self
            .ordered_pools()
            .into_iter()
            .filter(|p| requested.iter().all(|ip| p.contains(*ip)))
            .collect();
        if containing.is_empty() {
            if let Some(&ip) = requested.iter().find(|ip| !self.pools().any(|p| p.contains(**ip))) {
                return Err(AllocError::IpOutsidePools {
                    service: req.key.clone(),
                    ip,
                });
            }
            return Err(AllocError::RequestedIpsSplit {
                service: req.key.clone(),
                ips: requested,
            });
        }
        // An address already held belongs to the pool it was allocated from: try that pool first.
        if let Some(held) = requested.iter().find_map(|ip| self.ips.get(ip)) {
            containing.sort_by_key(|p| p.name() != &*held.pool);
        }
        let mut refusal = None;
        containing.retain(|p| match p.permits(req) {
            Ok(()) => true,
            Err(reason) => {
                refusal.get_or_insert_with(|| (p.name().to_string(), reason));
                false
            }
        });
        match (containing.is_empty(), refusal) {
            (true, Some((pool, reason))) => Err(AllocError::PoolNotAllowed {
                service: req.key.clone(),
                pool,
                reason: Box::new(reason),
            }),
            _ => Ok(containing),
        }
    }

    /// Automatic choice: the Service's current pool while it still serves it, then every pool serving the
    /// Service with `autoAssign` and not disabled, in priority order.
    fn automatic_pools(&self, req: &ServiceRequest, previous: Option<&Allocation>) -> Result<Vec<&Pool>, AllocError> {
        let current = previous
            .and_then(|a| self.pool(&a.pool))
            .filter(|p| p.permits(req).is_ok());
        let mut out: Vec<&Pool> = current.into_iter().collect();
        let mut rejected = Vec::new();
        for pool in self.ordered_pools() {
            if current.is_some_and(|c| c.name() == pool.name()) {
                continue;
            }
            let refusal = match pool.permits(req) {
                Err(reason) => Some(reason),
                Ok(()) if !pool.auto_assign() => Some(PoolRefusal::NotAutoAssign),
                Ok(()) if pool.disabled() => Some(PoolRefusal::Disabled),
                Ok(()) => None,
            };
            match refusal {
                Some(reason) => rejected.push((pool.name().to_string(), reason)),
                None => out.push(pool),
            }
        }
        if out.is_empty() {
            return Err(AllocError::NoEligiblePool {
                service: req.key.clone(),
                rejected,
            });
        }
        Ok(out)
    }

    /// Tries the candidate pools in order; the first that satisfies every required family wins.
    fn choose(
        &self,
        req: &ServiceRequest,
        plan: &FamilyPlan,
        previous: Option<&Allocation>,
    ) -> Result<(String, Vec<IpAddr>), AllocError> {
        let mut failures = Vec::new();
        for pool in self.candidates(req, plan, previous)? {
            match self.pick(pool, req, plan, previous) {
                Ok(ips) => return Ok((pool.name().to_string(), ips)),
                Err(e) => failures.push((pool.name().to_string(), Box::new(e))),
            }
        }
        if failures.len() == 1
            && let Some((_, only)) = failures.pop()
        {
            return Err(*only);
        }
        Err(AllocError::NoPoolCanServe {
            service: req.key.clone(),
            failures,
        })
    }

    /// The addresses `pool` gives the request, one per wanted family.
    fn pick(
        &self,
        pool: &Pool,
        req: &ServiceRequest,
        plan: &FamilyPlan,
        previous: Option<&Allocation>,
    ) -> Result<Vec<IpAddr>, AllocError> {
        let previous: &[IpAddr] = previous.filter(|a| a.pool == pool.name()).map_or(&[], |a| &a.ips);
        let mut picked = Vec::with_capacity(plan.wants.len());
        for &(family, required) in &plan.wants {
            if let Some(ip) = self.pick_family(pool, req, family, required, plan, previous)? {
                picked.push(ip);
            }
        }
        Ok(picked)
    }

    /// One family's address from `pool`: the requested one, else the Service's previous one, else a
    /// shareable one, else the lowest free one. `Ok(None)` when an optional family is unavailable.
    fn pick_family(
        &self,
        pool: &Pool,
        req: &ServiceRequest,
        family: Family,
        required: bool,
        plan: &FamilyPlan,
        previous: &[IpAddr],
    ) -> Result<Option<IpAddr>, AllocError> {
        let service = || req.key.clone();
        if let Some(ip) = plan.requested[family.index()] {
            if !pool.contains(ip) {
                return Err(AllocError::IpNotInPool {
                    service: service(),
                    ip,
                    pool: pool.name().to_string(),
                });
            }
            if pool.disabled() && !previous.contains(&ip) {
                return Err(AllocError::PoolDisabled {
                    service: service(),
                    pool: pool.name().to_string(),
                });
            }
            return match self.join_conflict(req, pool, ip) {
                None => Ok(Some(ip)),
                Some(SharingConflict::OursUnshared { other }) => Err(AllocError::IpInUse {
                    service: service(),
                    ip,
                    by: other,
                }),
                Some(reason) => Err(AllocError::SharingRefused {
                    service: service(),
                    ip,
                    reason: Box::new(reason),
                }),
            };
        }
        let kept = previous
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family && pool.contains(*ip) && self.join_conflict(req, pool, *ip).is_none());
        if kept.is_some() {
            return Ok(kept);
        }
        let failure = if pool.disabled() {
            AllocError::PoolDisabled {
                service: service(),
                pool: pool.name().to_string(),
            }
        } else if pool.total(family) == 0 {
            AllocError::FamilyUnavailable {
                service: service(),
                pool: pool.name().to_string(),
                family,
                policy: req.ip_family_policy,
            }
        } else if let Some(ip) = self
            .shareable(req, pool, family)
            .or_else(|| self.first_free(pool, family))
        {
            return Ok(Some(ip));
        } else {
            AllocError::PoolExhausted {
                service: service(),
                pool: pool.name().to_string(),
                family,
            }
        };
        if required { Err(failure) } else { Ok(None) }
    }

    /// Why `req` may not hold `ip` from `pool` given its current holders, if it may not.
    fn join_conflict(&self, req: &ServiceRequest, pool: &Pool, ip: IpAddr) -> Option<SharingConflict> {
        let entry = self.ips.get(&ip)?;
        for other in entry.holders.iter().filter(|k| **k != req.key) {
            if &*entry.pool != pool.name() {
                return Some(SharingConflict::OtherPool {
                    other: other.clone(),
                    pool: entry.pool.to_string(),
                });
            }
            if let Some(theirs) = self.services.get(other)
                && let Err(conflict) = sharing::check(req, &theirs.request)
            {
                return Some(conflict);
            }
        }
        None
    }

    /// The lowest address of `pool` already shared under the request's key that it may join.
    /// O(addresses under that key).
    fn shareable(&self, req: &ServiceRequest, pool: &Pool, family: Family) -> Option<IpAddr> {
        let key = req.sharing_key.as_ref()?;
        self.shared.get(key)?.iter().copied().find(|ip| {
            Family::of(*ip) == family
                && self.ips.get(ip).is_some_and(|h| &*h.pool == pool.name())
                && self.join_conflict(req, pool, *ip).is_none()
        })
    }

    /// The lowest free address of `pool`: one interval lookup per pool entry.
    fn first_free(&self, pool: &Pool, family: Family) -> Option<IpAddr> {
        let used = &self.used[family.index()];
        pool.ranges(family)
            .find_map(|r| used.first_free(r.first_raw(), r.last_raw()))
            .map(|v| from_u128(family, v))
    }

    /// Records an allocation that the rules already accepted.
    fn commit(&mut self, request: ServiceRequest, allocation: Allocation) {
        for &ip in &allocation.ips {
            let family = Family::of(ip);
            let entry = self.ips.entry(ip).or_insert_with(|| {
                self.used[family.index()].insert(to_u128(ip));
                let pool = match self.pools.get_mut(&allocation.pool) {
                    Some(state) => {
                        state.used[family.index()] += 1;
                        Arc::clone(&state.name)
                    }
                    None => Arc::from(allocation.pool.as_str()),
                };
                IpHolders {
                    pool,
                    holders: Vec::with_capacity(1),
                }
            });
            if let Err(at) = entry.holders.binary_search(&request.key) {
                entry.holders.insert(at, request.key.clone());
            }
            if let Some(k) = &request.sharing_key {
                self.shared.entry(k.clone()).or_default().insert(ip);
            }
        }
        self.services
            .insert(request.key.clone(), Box::new(Holding { allocation, request }));
    }

    /// Whether a recorded assignment is valid against the current state; the pool to attribute it to.
    fn claim(&self, record: &ExistingAssignment) -> Result<String, ConflictReason> {
        if self.services.contains_key(&record.request.key) {
            return Err(ConflictReason::Duplicate);
        }
        let mut seen = [false, false];
        for ip in &record.ips {
            let family = Family::of(*ip);
            if std::mem::replace(&mut seen[family.index()], true) {
                return Err(ConflictReason::TooManyIps { family });
            }
        }
        // Pools never contain these, but "in no Eip" would hide why.
        if let Some((ip, block)) = record
            .ips
            .iter()
            .find_map(|ip| NeverAllocated::containing(*ip).map(|b| (*ip, b)))
        {
            return Err(ConflictReason::NeverAllocated { ip, block });
        }
        let holds_all = |p: &Pool| record.ips.iter().all(|ip| p.contains(*ip));
        // An address someone already holds keeps the pool it was allocated from; else the recorded pool;
        // else the first pool (in assignment order) containing every address.
        let pinned = record
            .ips
            .iter()
            .find_map(|ip| self.ips.get(ip))
            .and_then(|h| self.pool(&h.pool));
        let named = record
            .pool
            .as_deref()
            .and_then(|n| self.pool(n))
            .filter(|p| holds_all(p));
        let pool = match pinned.or(named) {
            Some(p) => Some(p),
            None => self.ordered_pools().into_iter().find(|p| holds_all(p)),
        };
        let Some(pool) = pool.filter(|p| holds_all(p)) else {
            return Err(
                match record.ips.iter().find(|ip| !self.pools().any(|p| p.contains(**ip))) {
                    Some(&ip) => ConflictReason::OutsidePools { ip },
                    None => ConflictReason::SplitAcrossPools,
                },
            );
        };
        pool.permits(&record.request)
            .map_err(|reason| ConflictReason::NotAllowed {
                pool: pool.name().to_string(),
                reason: Box::new(reason),
            })?;
        for &ip in &record.ips {
            if let Some(reason) = self.join_conflict(&record.request, pool, ip) {
                return Err(ConflictReason::Contested {
                    ip,
                    reason: Box::new(reason),
                });
            }
        }
        Ok(pool.name().to_string())
    }

    /// Releases the Services holding addresses from pool `name` that the pool (or its absence) no longer
    /// allows.
    fn evict_invalid(&mut self, name: &str) -> Vec<Eviction> {
        let pool = self.pool(name);
        let victims: Vec<(ServiceKey, EvictionReason)> = self
            .services
            .iter()
            .filter(|(_, h)| h.allocation.pool == name)
            .filter_map(|(key, h)| {
                let reason = match pool {
                    None => Some(EvictionReason::PoolRemoved),
                    Some(p) => match h.allocation.ips.iter().find(|ip| !p.contains(**ip)) {
                        Some(&ip) => Some(EvictionReason::AddressRemoved { ip }),
                        None => p.permits(&h.request).err().map(EvictionReason::NotAllowed),
                    },
                };
                reason.map(|r| (key.clone(), r))
            })
            .collect();
        victims
            .into_iter()
            .filter_map(|(service, reason)| {
                let allocation = self.release(&service)?;
                Some(Eviction {
                    service,
                    allocation,
                    reason,
                })
            })
            .collect()
    }

    /// Checks every internal invariant by walking the whole state (O(n)); for tests and debugging.
    /// Returns the first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut counted: BTreeMap<&str, [u128; 2]> = BTreeMap::new();
        for (key, holding) in &self.services {
            if &holding.request.key != key {
                return Err(format!("{key}: stored under the wrong key"));
            }
            let pool = self
                .pool(&holding.allocation.pool)
                .ok_or_else(|| format!("{key}: pool '{}' missing", holding.allocation.pool))?;
            let mut seen = [false, false];
            for &ip in &holding.allocation.ips {
                if std::mem::replace(&mut seen[Family::of(ip).index()], true) {
                    return Err(format!("{key}: two addresses of one family"));
                }
                if !pool.contains(ip) {
                    return Err(format!("{key}: {ip} is not in its pool '{}'", pool.name()));
                }
                let entry = self.ips.get(&ip).ok_or_else(|| format!("{key}: {ip} not indexed"))?;
                if !entry.holders.contains(key) || &*entry.pool != pool.name() {
                    return Err(format!("{key}: {ip} index disagrees"));
                }
            }
        }
        for (ip, entry) in &self.ips {
            let family = Family::of(*ip);
            if entry.holders.is_empty() {
                return Err(format!("{ip}: indexed without holders"));
            }
            if !self.used[family.index()].contains(to_u128(*ip)) {
                return Err(format!("{ip}: missing from the used set"));
            }
            if !entry.holders.is_sorted() || entry.holders.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("{ip}: holder list not sorted and unique"));
            }
            counted.entry(&*entry.pool).or_default()[family.index()] += 1;
            let holders: Vec<&Holding> = entry
                .holders
                .iter()
                .map(|k| {
                    self.services
                        .get(k)
                        .map(|h| &**h)
                        .ok_or_else(|| format!("{ip}: holder {k} unknown"))
                })
                .collect::<Result<_, _>>()?;
            for a in &holders {
                if !a.allocation.ips.contains(ip) {
                    return Err(format!("{ip}: {} listed but does not hold it", a.request.key));
                }
                if let Some(k) = &a.request.sharing_key
                    && !self.shared.get(k).is_some_and(|s| s.contains(ip))
                {
                    return Err(format!("{ip}: missing from the sharing index of '{k}'"));
                }
                for b in &holders {
                    if a.request.key != b.request.key
                        && let Err(c) = sharing::check(&a.request, &b.request)
                    {
                        return Err(format!(
                            "{ip}: {} and {} may not share: {c}",
                            a.request.key, b.request.key
                        ));
                    }
                }
            }
        }
        for family in Family::ALL {
            let indexed = self.ips.keys().filter(|ip| Family::of(**ip) == family).count() as u128;
            if self.used[family.index()].len() != indexed {
                return Err(format!(
                    "{family}: used set holds {} addresses, index {indexed}",
                    self.used[family.index()].len()
                ));
            }
        }
        for (name, state) in &self.pools {
            let want = counted.get(name.as_str()).copied().unwrap_or([0, 0]);
            if state.used != want {
                return Err(format!("pool '{name}': counters {:?}, actual {want:?}", state.used));
            }
        }
        for (k, set) in &self.shared {
            for ip in set {
                let ok = self.ips.get(ip).is_some_and(|e| {
                    e.holders.iter().all(|h| {
                        self.services
                            .get(h)
                            .is_some_and(|s| s.request.sharing_key.as_ref() == Some(k))
                    })
                });
                if !ok {
                    return Err(format!("sharing index '{k}' lists {ip} wrongly"));
                }
            }
        }
        Ok(())
    }
}
