//! Properties over random sequences of requests, releases and pool changes on small, overlapping pools
//! (small so that exhaustion, sharing and conflicts happen often).

use std::net::IpAddr;

use proptest::prelude::*;

use super::restore::ExistingAssignment;
use super::*;
use crate::never_allocated::NeverAllocated;
use crate::never_allocated::std_says_never;
use crate::pool::PoolSpec;
use crate::pool::parse::PoolError;
use crate::range::AddrRange;
use crate::range::from_u128;
use crate::request::IpFamilyPolicy;
use crate::request::{CreationKey, Protocol, ServicePort};

const IPS: [&str; 8] = [
    "192.0.2.1",
    "192.0.2.6",
    "192.0.2.10",
    "198.51.100.1",
    "2001:db8::2",
    "2001:db8:1::1",
    "203.0.113.1", // in no pool
    "192.0.2.0",   // network address, excluded
];
const POOLS: [&str; 5] = ["a", "b", "c", "d", "missing"];
const PORTS: [(u16, Protocol); 3] = [(80, Protocol::Tcp), (81, Protocol::Tcp), (80, Protocol::Udp)];

fn pools(b_disabled: bool, b_open: bool) -> Vec<Pool> {
    let spec = |name: &str, addrs: &[&str], edit: &dyn Fn(&mut PoolSpec)| {
        let mut s = PoolSpec::new(name, addrs);
        edit(&mut s);
        Pool::parse(&s).unwrap()
    };
    vec![
        spec("a", &["192.0.2.0/29", "2001:db8::/125"], &|_| {}),
        spec("b", &["192.0.2.8-192.0.2.10", "198.51.100.1"], &|s| {
            s.priority = 1;
            s.disabled = b_disabled;
            if !b_open {
                s.namespaces = vec!["n0".into()];
            }
        }),
        spec("c", &["2001:db8:1::/127"], &|s| s.auto_assign = false),
        spec("d", &["192.0.2.10-192.0.2.12"], &|s| s.priority = -1),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(Box<ServiceRequest>),
    Release(usize),
    /// Service `i` asks again with the request its allocation was made for (what the controller does for every
    /// unchanged Service in every pass).
    Again(usize),
    ChangePoolB {
        disabled: bool,
        open: bool,
    },
}

/// Mostly no pinned address, sometimes one, rarely two (which may be of one family: refused).
fn requested_ips() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        4 => Just(Vec::new()),
        3 => proptest::collection::vec(0usize..IPS.len(), 1),
        1 => proptest::collection::vec(0usize..IPS.len(), 2),
    ]
}

fn request() -> impl Strategy<Value = ServiceRequest> {
    (
        (
            0usize..6,
            0usize..2,
            proptest::option::weighted(0.3, 0usize..POOLS.len()),
        ),
        (requested_ips(), 0usize..3, any::<bool>()),
        (
            proptest::option::weighted(0.7, 0usize..2),
            proptest::sample::subsequence(PORTS.to_vec(), 0..=2),
        ),
        (proptest::bool::weighted(0.2), 0usize..2, 0i64..4),
    )
        .prop_map(
            |((svc, ns, pool), (req_ips, policy, v6_first), (key, ports), (local, pods, ts))| {
                let mut r = ServiceRequest::new(format!("n{ns}"), format!("s{svc}"));
                r.pool = pool.map(|p| POOLS[p].to_string());
                r.requested_ips = req_ips.iter().map(|i| IPS[*i].parse().unwrap()).collect();
                r.ip_family_policy = [
                    IpFamilyPolicy::SingleStack,
                    IpFamilyPolicy::PreferDualStack,
                    IpFamilyPolicy::RequireDualStack,
                ][policy];
                r.ip_families = if v6_first {
                    vec![Family::V6, Family::V4]
                } else {
                    vec![Family::V4, Family::V6]
                };
                r.sharing_key = key.map(|k| format!("key{k}"));
                r.ports = ports.into_iter().map(|(p, proto)| ServicePort::new(p, proto)).collect();
                r.etp_local = local;
                std::sync::Arc::make_mut(&mut r.pod_selector).insert("app".into(), format!("app{pods}"));
                r.created = CreationKey {
                    timestamp: ts,
                    uid: format!("uid-{svc}-{ns}").into(),
                };
                r
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => request().prop_map(|r| Op::Allocate(Box::new(r))),
        2 => (0usize..6).prop_map(Op::Release),
        3 => (0usize..6).prop_map(Op::Again),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(disabled, open)| Op::ChangePoolB { disabled, open }),
    ]
}

fn fresh() -> Allocator {
    let mut a = Allocator::new();
    for p in pools(false, true) {
        a.set_pool(p);
    }
    a
}

/// Applies the ops, checking the invariants and per-op properties after each; returns the results.
fn run(a: &mut Allocator, ops: &[Op]) -> Result<Vec<String>, TestCaseError> {
    let mut log = Vec::new();
    for op in ops {
        match op {
            Op::Allocate(req) => match a.allocate(req) {
                Ok(got) => {
                    let pool = a.pool(&got.pool).expect("allocated from a known pool");
                    for ip in &got.ips {
                        prop_assert!(pool.contains(*ip), "{ip} outside its pool {}", got.pool);
                    }
                    for ip in req.requested_ips.iter() {
                        prop_assert!(got.ips.contains(ip), "requested {ip} not given");
                    }
                    // Idempotence: the same request again changes nothing.
                    let before = a.clone();
                    prop_assert_eq!(a.allocate(req), Ok(got.clone()));
                    prop_assert_eq!(&*a, &before);
                    log.push(format!("{} -> {got:?}", req.key));
                }
                Err(e) => {
                    prop_assert!(a.allocation(&req.key).is_none());
                    log.push(format!("{} -> {e}", req.key));
                }
            },
            Op::Again(i) => {
                let key = ServiceKey::new(format!("n{}", i % 2), format!("s{i}"));
                let Some(req) = a.request(&key).cloned() else {
                    continue;
                };
                // The shortcut for an unchanged request decides exactly as the full path would.
                let mut full = a.clone();
                let expected = full.allocate_anew(&req);
                let got = a.allocate(&req);
                prop_assert_eq!(&got, &expected, "{}", key);
                prop_assert_eq!(&*a, &full);
                log.push(format!("{key} again -> {got:?}"));
            }
            Op::Release(i) => {
                let key = ServiceKey::new(format!("n{}", i % 2), format!("s{i}"));
                log.push(format!("release {key} -> {:?}", a.release(&key)));
            }
            Op::ChangePoolB { disabled, open } => {
                let b = pools(*disabled, *open).swap_remove(1);
                for e in a.set_pool(b) {
                    prop_assert!(a.allocation(&e.service).is_none());
                    log.push(e.to_string());
                }
            }
        }
        if let Err(violation) = a.check_invariants() {
            return Err(TestCaseError::fail(format!("after {op:?}: {violation}")));
        }
    }
    Ok(log)
}

proptest! {
    /// No address is ever held by two Services that may not share it, every address lies in its pool, and
    /// the bookkeeping (used sets, counters, sharing index) agrees with the holdings. Same inputs, same
    /// outputs.
    #[test]
    fn invariants_hold_and_results_are_deterministic(ops in proptest::collection::vec(op(), 1..40)) {
        let mut a = fresh();
        let first = run(&mut a, &ops)?;
        let mut b = fresh();
        let second = run(&mut b, &ops)?;
        prop_assert_eq!(first, second);
        prop_assert_eq!(a, b);
    }

    /// Rebuilding from the allocator's own assignments, in any order, yields an equal state and no conflicts.
    #[test]
    fn rebuild_from_own_assignments_is_identity(ops in proptest::collection::vec(op(), 1..40), rotate in 0usize..8) {
        let mut a = fresh();
        run(&mut a, &ops)?;
        let mut records = a.assignments();
        let n = records.len().max(1);
        records.rotate_left(rotate % n);
        let mut rebuilt = a.clone();
        let conflicts = rebuilt.rebuild(records);
        prop_assert!(conflicts.is_empty(), "{conflicts:?}");
        prop_assert_eq!(&rebuilt, &a);
    }

    /// Rebuilding from arbitrary (possibly conflicting) records gives a consistent state, independent of
    /// record order, where every dropped record comes with a reason.
    #[test]
    fn rebuild_from_conflicting_records_is_consistent_and_order_independent(
        reqs in proptest::collection::vec(request(), 0..12),
        picks in proptest::collection::vec(proptest::collection::vec(0usize..IPS.len(), 1..3), 12),
    ) {
        let records: Vec<ExistingAssignment> = reqs
            .into_iter()
            .zip(picks)
            .map(|(request, pick)| ExistingAssignment {
                pool: request.pool.clone(),
                ips: pick.iter().map(|i| IPS[*i].parse::<IpAddr>().unwrap()).collect(),
                request,
            })
            .collect();
        // One record per Service, as the controller builds them (duplicates are a unit test of their own).
        let mut seen = std::collections::BTreeSet::new();
        let records: Vec<ExistingAssignment> =
            records.into_iter().filter(|r| seen.insert(r.request.key.clone())).collect();
        let mut a = fresh();
        let ca = a.rebuild(records.clone());
        a.check_invariants().map_err(TestCaseError::fail)?;
        let mut reversed = records.clone();
        reversed.reverse();
        let mut b = fresh();
        let cb = b.rebuild(reversed);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(ca.len(), cb.len());
        // Every record is either kept whole (one Service each) or dropped with a reason.
        prop_assert_eq!(a.service_count() + ca.len(), records.len());
        for r in &records {
            let kept = a.allocation(&r.request.key).is_some_and(|al| al.ips == r.ips);
            let dropped = ca.iter().any(|c| c.service == r.request.key && c.ips == r.ips);
            prop_assert!(kept || dropped, "record {:?} vanished", r.request.key);
        }
    }

    /// Releasing a Service and allocating its addresses again (pinned) restores the same allocations.
    #[test]
    fn release_and_reallocate_restores_allocations(ops in proptest::collection::vec(op(), 1..40)) {
        let mut a = fresh();
        run(&mut a, &ops)?;
        let snapshot: Vec<(ServiceKey, Allocation)> =
            a.allocations().map(|(k, al)| (k.clone(), al.clone())).collect();
        for (key, allocation) in &snapshot {
            if a.pool(&allocation.pool).is_some_and(Pool::disabled) {
                continue; // a disabled pool gives no new addresses, by design
            }
            let mut req = a.services.get(key).expect("held").request.clone();
            let mut b = a.clone();
            prop_assert_eq!(b.release(key), Some(allocation.clone()));
            b.check_invariants().map_err(TestCaseError::fail)?;
            req.pool = Some(allocation.pool.clone());
            req.requested_ips = allocation.ips.clone();
            req.ip_families = allocation.ips.iter().map(|ip| Family::of(*ip)).collect();
            req.ip_family_policy = if allocation.ips.len() == 2 {
                IpFamilyPolicy::RequireDualStack
            } else {
                IpFamilyPolicy::SingleStack
            };
            prop_assert_eq!(b.allocate(&req), Ok(allocation.clone()));
            b.check_invariants().map_err(TestCaseError::fail)?;
            let after: Vec<(ServiceKey, Allocation)> =
                b.allocations().map(|(k, al)| (k.clone(), al.clone())).collect();
            prop_assert_eq!(&after, &snapshot);
            prop_assert_eq!(&b.used, &a.used);
        }
    }
}

/// Up to 40 addresses either side of one edge of a [`NeverAllocated`] block, clipped to the family.
fn straddling_range() -> impl Strategy<Value = AddrRange> {
    (0usize..NeverAllocated::ALL.len(), any::<bool>(), 0u128..40, 0u128..40).prop_map(|(i, upper, below, above)| {
        let block = NeverAllocated::ALL[i].range();
        let family = block.family();
        let edge = if upper { block.last_raw() } else { block.first_raw() };
        let max = match family {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        };
        AddrRange::from_raw(family, edge.saturating_sub(below), edge.saturating_add(above).min(max))
    })
}

/// Every address of the ranges, in order (they are small).
fn addresses(ranges: &[AddrRange]) -> Vec<IpAddr> {
    ranges
        .iter()
        .flat_map(|r| (r.first_raw()..=r.last_raw()).map(|v| from_u128(r.family(), v)))
        .collect()
}

fn single_stack(name: String, family: Family) -> ServiceRequest {
    let mut r = ServiceRequest::new("n", name);
    r.ip_families = vec![family];
    r
}

proptest! {
    /// Pools whose entries (ranges and single addresses) straddle the edges of never-allocated blocks: the
    /// pool counts, contains and hands out exactly the addresses std does not call loopback, multicast,
    /// link-local, unspecified, "this network", broadcast, IPv4-mapped or IPv4-compatible; requests for the
    /// others are refused; a pool with nothing else is invalid.
    #[test]
    fn straddling_pools_hand_out_host_addresses_only(
        candidates in proptest::collection::vec(straddling_range(), 1..5),
        pins in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
    ) {
        let mut ranges: Vec<AddrRange> = Vec::new();
        for r in candidates {
            if ranges.iter().all(|k| k.intersection(&r).is_none()) {
                ranges.push(r);
            }
        }
        let texts: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        let spec = PoolSpec::new("p", &texts.iter().map(String::as_str).collect::<Vec<_>>());
        let listed = addresses(&ranges);
        let hosts: Vec<IpAddr> = listed.iter().copied().filter(|ip| !std_says_never(*ip)).collect();
        let pool = match Pool::parse(&spec) {
            Ok(pool) => pool,
            Err(e) => {
                prop_assert!(hosts.is_empty(), "{e}");
                prop_assert!(matches!(e, PoolError::OnlyNeverAllocated { .. }), "{e}");
                return Ok(());
            }
        };
        prop_assert!(!hosts.is_empty(), "{texts:?} parsed though it lists no host address");
        for family in Family::ALL {
            let want = hosts.iter().filter(|ip| Family::of(**ip) == family).count() as u128;
            prop_assert_eq!(pool.total(family), want, "{} total of {:?}", family, texts);
        }
        for ip in &listed {
            prop_assert_eq!(pool.contains(*ip), !std_says_never(*ip), "{}", ip);
        }
        let mut a = Allocator::new();
        a.set_pool(pool);
        for (i, pin) in pins.iter().enumerate() {
            let ip = listed[pin.index(listed.len())];
            let mut req = single_stack(format!("pin{i}"), Family::of(ip));
            req.requested_ips = vec![ip];
            match a.allocate(&req) {
                Ok(got) => {
                    prop_assert!(!std_says_never(ip), "{} handed out on request", ip);
                    prop_assert_eq!(got.ips, vec![ip]);
                }
                Err(AllocError::IpNeverAllocated { .. }) => prop_assert!(std_says_never(ip), "{} refused", ip),
                Err(AllocError::IpInUse { .. }) => {}
                Err(e) => prop_assert!(false, "{ip}: {e}"),
            }
        }
        for family in Family::ALL {
            for i in 0.. {
                match a.allocate(&single_stack(format!("{family}-{i}"), family)) {
                    Ok(got) => {
                        prop_assert!(!std_says_never(got.ips[0]), "{} handed out", got.ips[0]);
                    }
                    Err(AllocError::PoolExhausted { .. } | AllocError::FamilyUnavailable { .. }) => break,
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            let stats = a.pool_stats("p").unwrap().family(family);
            prop_assert_eq!((stats.used, stats.free), (stats.total, 0), "{} fills up exactly", family);
        }
        a.check_invariants().map_err(TestCaseError::fail)?;
    }

    /// `0.0.0.0/0` and `::/0` with addresses pinned around every block edge: never-allocated ones are refused,
    /// automatic ones are host addresses, and the counts stay exact (no saturation, no overflow).
    #[test]
    fn whole_spaces_never_hand_out_never_allocated_addresses(
        pins in proptest::collection::vec((straddling_range(), any::<proptest::sample::Index>()), 0..20),
        autos in proptest::collection::vec(any::<bool>(), 0..20),
    ) {
        let mut a = Allocator::new();
        a.set_pool(Pool::parse(&PoolSpec::new("all", &["0.0.0.0/0", "::/0"])).unwrap());
        let mut held = std::collections::BTreeSet::new();
        for (i, (range, pick)) in pins.iter().enumerate() {
            let listed = addresses(std::slice::from_ref(range));
            let ip = listed[pick.index(listed.len())];
            let mut req = single_stack(format!("pin{i}"), Family::of(ip));
            req.requested_ips = vec![ip];
            match a.allocate(&req) {
                Ok(_) => {
                    prop_assert!(!std_says_never(ip), "{} handed out on request", ip);
                    held.insert(ip);
                }
                Err(AllocError::IpNeverAllocated { .. }) => prop_assert!(std_says_never(ip), "{} refused", ip),
                Err(AllocError::IpInUse { .. }) => prop_assert!(held.contains(&ip)),
                Err(e) => prop_assert!(false, "{ip}: {e}"),
            }
        }
        for (i, v6) in autos.iter().enumerate() {
            let family = if *v6 { Family::V6 } else { Family::V4 };
            let got = a.allocate(&single_stack(format!("auto{i}"), family)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!std_says_never(got.ips[0]), "{} handed out", got.ips[0]);
            prop_assert!(held.insert(got.ips[0]));
        }
        a.check_invariants().map_err(TestCaseError::fail)?;
        let stats = a.pool_stats("all").unwrap();
        prop_assert_eq!(stats.ipv4.total, 3_992_911_871);
        prop_assert_eq!(stats.ipv6.total, 338_620_831_926_207_318_622_244_848_597_827_846_144);
        for family in Family::ALL {
            let used = held.iter().filter(|ip| Family::of(**ip) == family).count() as u128;
            let s = stats.family(family);
            prop_assert_eq!((s.used, s.free), (used, s.total - used));
        }
    }
}

proptest! {
    /// One pool's overlaps, as the Eip status asks for them, are exactly the pairs of all pools that name it,
    /// in the same order, whatever the limit.
    #[test]
    fn overlaps_of_one_pool_agree_with_all_overlaps(
        specs in proptest::collection::vec(proptest::collection::vec(straddling_range(), 1..4), 2..5),
        limit in 0usize..6,
    ) {
        let mut a = Allocator::new();
        for (i, ranges) in specs.iter().enumerate() {
            let mut kept: Vec<AddrRange> = Vec::new();
            for r in ranges {
                if kept.iter().all(|k| k.intersection(r).is_none()) {
                    kept.push(*r);
                }
            }
            let texts: Vec<String> = kept.iter().map(ToString::to_string).collect();
            let spec = PoolSpec::new(format!("p{i}"), &texts.iter().map(String::as_str).collect::<Vec<_>>());
            if let Ok(pool) = Pool::parse(&spec) {
                a.set_pool(pool);
            }
        }
        let all = a.overlaps();
        for pool in a.pools() {
            let name = pool.name();
            let want: Vec<&Overlap> = all.iter().filter(|o| o.first.0 == name || o.second.0 == name).collect();
            let (listed, total) = a.overlaps_of(name, limit);
            prop_assert_eq!(total, want.len());
            prop_assert_eq!(listed.iter().collect::<Vec<_>>(), want[..want.len().min(limit)].to_vec());
            for o in &listed {
                prop_assert!(!std_says_never(o.range.first()) && !std_says_never(o.range.last()), "{}", o);
            }
        }
    }
}
