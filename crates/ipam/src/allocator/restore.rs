//! Taking back the addresses recorded on Services (status and `herald.dev/allocated-from`) when the controller
//! starts or meets a Service it does not know, and the conflicts that make a record unusable.

use std::fmt;
use std::net::IpAddr;

use super::{Allocator, list_ips};
use crate::never_allocated::NeverAllocated;
use crate::pool::{Pool, PoolRefusal};
use crate::range::Family;
use crate::request::{Allocation, ServiceKey, ServiceRequest};
use crate::sharing::SharingConflict;

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

impl Allocator {
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
}
