//! Errors. Every message names the Eip or Service concerned and, where there is one, what to change.

use std::net::IpAddr;

use thiserror::Error;

use crate::never_allocated::NeverAllocated;
use crate::pool::PoolRefusal;
use crate::range::Family;
use crate::request::{IpFamilyPolicy, ServiceKey};
use crate::sharing::SharingConflict;

/// Why a Service got no addresses. The controller puts the message into an `AllocationFailed` Event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocError {
    /// Two different requested addresses of one family.
    #[error(
        "{service} requests two {family} addresses ({first} and {second}); herald.dev/ips and spec.loadBalancerIP may name at most one per family"
    )]
    TooManyRequestedIps {
        /// The Service.
        service: ServiceKey,
        /// The family.
        family: Family,
        /// One address.
        first: IpAddr,
        /// The other.
        second: IpAddr,
    },
    /// A requested address of a family the Service does not use.
    #[error(
        "{service} requests {ip}, an {family} address, but its ipFamilyPolicy {policy} with ipFamilies [{families}] does not include {family}; change herald.dev/ips or the Service's IP families"
    )]
    WrongFamily {
        /// The Service.
        service: ServiceKey,
        /// The requested address.
        ip: IpAddr,
        /// Its family.
        family: Family,
        /// The Service's policy.
        policy: IpFamilyPolicy,
        /// The Service's families, comma-separated.
        families: String,
    },
    /// `herald.dev/eip` names a pool that does not exist.
    #[error("{service} asks for Eip '{pool}' (herald.dev/eip), which does not exist; create it or fix the annotation")]
    PoolNotFound {
        /// The Service.
        service: ServiceKey,
        /// The pool asked for.
        pool: String,
    },
    /// The pool asked for (or holding the requested address) does not serve the Service.
    #[error("Eip '{pool}' does not serve {service}: {reason}")]
    PoolNotAllowed {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
        /// Why (boxed to keep the error small).
        reason: Box<PoolRefusal>,
    },
    /// The pool is disabled and the Service holds no address in it yet.
    #[error(
        "Eip '{pool}' is disabled (spec.disable) and gives no new addresses to {service}; enable it or use another Eip"
    )]
    PoolDisabled {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
    },
    /// No pool is allowed for the Service (namespace, selectors, autoAssign, disable).
    #[error("no Eip may serve {service}{}", list_rejections(.rejected))]
    NoEligiblePool {
        /// The Service.
        service: ServiceKey,
        /// Each pool and why it was passed over.
        rejected: Vec<(String, PoolRefusal)>,
    },
    /// The pool has no free address of the family.
    #[error("Eip '{pool}' has no free {family} address for {service}; add addresses to it or release Services")]
    PoolExhausted {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
        /// The family.
        family: Family,
    },
    /// The pool has no address of a family the Service needs.
    #[error(
        "Eip '{pool}' has no {family} addresses, which {service} needs ({policy}); add {family} addresses to the Eip or choose another"
    )]
    FamilyUnavailable {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
        /// The missing family.
        family: Family,
        /// The Service's policy.
        policy: IpFamilyPolicy,
    },
    /// A requested address is in a [`NeverAllocated`] block: no Eip gives it out, whatever it lists.
    #[error(
        "{service} requests {ip}, which is in {block} ({}) and never a Service's address, whatever an Eip lists; request another address in herald.dev/ips or spec.loadBalancerIP",
        .block.rfc()
    )]
    IpNeverAllocated {
        /// The Service.
        service: ServiceKey,
        /// The address.
        ip: IpAddr,
        /// The block it is in.
        block: &'static NeverAllocated,
    },
    /// A requested address belongs to no pool.
    #[error(
        "{service} requests {ip}, which is in no Eip (network and broadcast addresses of a CIDR are excluded); add it to an Eip or request another address"
    )]
    IpOutsidePools {
        /// The Service.
        service: ServiceKey,
        /// The address.
        ip: IpAddr,
    },
    /// A requested address is not in the pool the Service names.
    #[error("{service} requests {ip}, which is not in Eip '{pool}' named by herald.dev/eip; fix one of the two")]
    IpNotInPool {
        /// The Service.
        service: ServiceKey,
        /// The address.
        ip: IpAddr,
        /// The pool named.
        pool: String,
    },
    /// The requested addresses lie in different pools; a Service's addresses come from one pool.
    #[error("{service} requests {}, which are not in one Eip; a Service's addresses come from a single Eip", list_ips(.ips))]
    RequestedIpsSplit {
        /// The Service.
        service: ServiceKey,
        /// The requested addresses.
        ips: Vec<IpAddr>,
    },
    /// The address is held by a Service and the requester has no sharing key.
    #[error(
        "{service} requests {ip}, which is in use by {by}; set the same herald.dev/sharing-key on both to share it, or request another address"
    )]
    IpInUse {
        /// The Service.
        service: ServiceKey,
        /// The address.
        ip: IpAddr,
        /// The holder.
        by: ServiceKey,
    },
    /// The requester has a sharing key but may not share with a holder.
    #[error("{service} may not share {ip}: {reason}")]
    SharingRefused {
        /// The Service.
        service: ServiceKey,
        /// The address.
        ip: IpAddr,
        /// Why (boxed to keep the error small).
        reason: Box<SharingConflict>,
    },
    /// Several pools were allowed, and each failed.
    #[error("no Eip could give {service} addresses: {}", list_failures(.failures))]
    NoPoolCanServe {
        /// The Service.
        service: ServiceKey,
        /// Each pool tried, in order, and its failure.
        failures: Vec<(String, Box<AllocError>)>,
    },
}

fn list_rejections(rejected: &[(String, PoolRefusal)]) -> String {
    if rejected.is_empty() {
        return ": there is no Eip; create one".to_string();
    }
    let parts: Vec<String> = rejected.iter().map(|(p, r)| format!("Eip '{p}': {r}")).collect();
    format!(": {}", parts.join("; "))
}

fn list_failures(failures: &[(String, Box<AllocError>)]) -> String {
    failures
        .iter()
        .map(|(_, e)| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn list_ips(ips: &[IpAddr]) -> String {
    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(" and ")
}
