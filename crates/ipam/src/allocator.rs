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
use crate::pool::overlap::{Overlap, find_overlaps, find_overlaps_of};
use crate::pool::{FamilyStats, Pool, PoolRefusal, PoolStats};
use crate::range::{Family, to_u128};
use crate::request::{Allocation, IpFamilyPolicy, ServiceKey, ServiceRequest};
use crate::sharing;

mod choose;
mod holdings;
#[cfg(test)]
mod proptests;
pub(crate) mod restore;
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
    /// What each Service holds, by its key.
    services: holdings::Holdings,
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
    /// What checks on the pool's network found ([`Allocator::set_checks`]).
    checks: Checks,
}

/// Addresses of a pool checked on its network: `free` ones are handed out first, `taken` ones never.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checks {
    pub(crate) free: BTreeSet<IpAddr>,
    pub(crate) taken: BTreeSet<IpAddr>,
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

/// How many addresses a Service with this policy holds when it got every family it wants.
fn families_wanted(policy: IpFamilyPolicy) -> usize {
    match policy {
        IpFamilyPolicy::SingleStack => 1,
        IpFamilyPolicy::PreferDualStack | IpFamilyPolicy::RequireDualStack => 2,
    }
}

fn list_ips(ips: &[IpAddr]) -> String {
    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
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
        let (used, mut checks) = self
            .pools
            .get(&name)
            .map_or(([0, 0], Checks::default()), |s| (s.used, s.checks.clone()));
        checks.free.retain(|ip| pool.contains(*ip));
        checks.taken.retain(|ip| pool.contains(*ip));
        let state = PoolState {
            pool,
            name: Arc::from(name.as_str()),
            used,
            checks,
        };
        self.pools.insert(name.clone(), state);
        self.evict_invalid(&name)
    }

    /// Records what checks on pool `name`'s network found (Layer 2: RFC 5227 probes, the Eip's `status.probes`):
    /// among its free addresses, those in `free` are handed out first (lowest first), and those
    /// in `taken` (another host answers for them) never, until a later call leaves them out. Replaces what an
    /// earlier call said; addresses outside the pool are ignored. Requested addresses (`herald.dev/ips`) are given
    /// as asked: the user chose them. Returns whether anything changed. O(addresses listed · log).
    pub fn set_checks(
        &mut self,
        name: &str,
        free: impl IntoIterator<Item = IpAddr>,
        taken: impl IntoIterator<Item = IpAddr>,
    ) -> bool {
        let Some(state) = self.pools.get_mut(name) else {
            return false;
        };
        let pool = &state.pool;
        let checks = Checks {
            free: free.into_iter().filter(|ip| pool.contains(*ip)).collect(),
            taken: taken.into_iter().filter(|ip| pool.contains(*ip)).collect(),
        };
        if state.checks == checks {
            return false;
        }
        state.checks = checks;
        true
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
        // The very request the allocation was made for, and it got every family it wants: choosing again would
        // keep each address (a pool change that invalidates one has already evicted the Service), so nothing is
        // released and rebuilt. The controller asks again for every Service in every pass; this makes an unchanged
        // one cost a lookup and a comparison. Property-tested against the full path.
        if let Some(held) = self.services.get(&req.key)
            && held.request == *req
            && held.allocation.ips.len() == families_wanted(req.ip_family_policy)
        {
            return Ok(held.allocation.clone());
        }
        self.allocate_anew(req)
    }

    /// [`Allocator::allocate`] without the shortcut for an unchanged request: release, choose, commit.
    fn allocate_anew(&mut self, req: &ServiceRequest) -> Result<Allocation, AllocError> {
        let previous = self.release(&req.key);
        let (pool, ips) = self.choose(req, previous.as_ref())?;
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

    /// The request `key`'s allocation was made for (or, after a rebuild, claimed with).
    pub fn request(&self, key: &ServiceKey) -> Option<&ServiceRequest> {
        self.services.get(key).map(|h| &h.request)
    }

    /// The Services holding `ip`, by key.
    pub fn holders(&self, ip: IpAddr) -> impl Iterator<Item = &ServiceKey> + '_ {
        self.ips.get(&ip).into_iter().flat_map(|h| h.holders.iter())
    }

    /// Every held address with the pool it was allocated from, in address order (IPv4 first).
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, &str)> + '_ {
        self.ips.iter().map(|(ip, h)| (*ip, &*h.pool))
    }

    /// Every allocation, by Service key.
    pub fn allocations(&self) -> impl Iterator<Item = (&ServiceKey, &Allocation)> + '_ {
        self.services.iter().map(|(k, h)| (k, &h.allocation))
    }

    /// Number of Services holding addresses.
    pub fn service_count(&self) -> usize {
        self.services.len()
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
        self.services.insert(Box::new(Holding { allocation, request }));
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
        for (key, holding) in self.services.iter() {
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
                .map(|k| self.services.get(k).ok_or_else(|| format!("{ip}: holder {k} unknown")))
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
