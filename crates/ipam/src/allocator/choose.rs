//! Choosing for a request: which pools to try, in which order, and which address of each family a pool gives.

use std::net::IpAddr;

use super::Allocator;
use crate::error::AllocError;
use crate::never_allocated::NeverAllocated;
use crate::pool::{Pool, PoolRefusal};
use crate::range::{Family, from_u128, to_u128};
use crate::request::{Allocation, IpFamilyPolicy, ServiceRequest};
use crate::sharing::{self, SharingConflict};

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
    /// Pools in the order automatic assignment tries them: lowest priority number first, then by name.
    pub(super) fn ordered_pools(&self) -> Vec<&Pool> {
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

    /// Plans the request's families, then tries the candidate pools in order; the first that satisfies every
    /// required family wins.
    pub(super) fn choose(
        &self,
        req: &ServiceRequest,
        previous: Option<&Allocation>,
    ) -> Result<(String, Vec<IpAddr>), AllocError> {
        let plan = FamilyPlan::new(req)?;
        let mut failures = Vec::new();
        for pool in self.candidates(req, &plan, previous)? {
            match self.pick(pool, req, &plan, previous) {
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
    pub(super) fn join_conflict(&self, req: &ServiceRequest, pool: &Pool, ip: IpAddr) -> Option<SharingConflict> {
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

    /// The address `pool` gives next in `family`: the lowest free one a check found free, else the lowest free one
    /// no check found taken. One interval lookup per pool entry, plus one per checked address.
    fn first_free(&self, pool: &Pool, family: Family) -> Option<IpAddr> {
        let used = &self.used[family.index()];
        let checks = self.pools.get(pool.name()).map(|s| &s.checks);
        let is_free = |ip: &IpAddr| Family::of(*ip) == family && !used.contains(to_u128(*ip));
        if let Some(ip) = checks.and_then(|c| c.free.iter().copied().find(is_free)) {
            return Some(ip);
        }
        let taken = checks.map(|c| &c.taken);
        pool.ranges(family).find_map(|r| {
            let mut lo = r.first_raw();
            // Each step passes one taken address: at most as many steps as there are.
            loop {
                let v = used.first_free(lo, r.last_raw())?;
                let ip = from_u128(family, v);
                if !taken.is_some_and(|t| t.contains(&ip)) {
                    return Some(ip);
                }
                lo = v.checked_add(1)?;
            }
        })
    }
}
