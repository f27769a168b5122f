//! The allocator driven through its public API the way the allocator controller uses it: pools from Eips,
//! allocations from Services, Eip status from stats, and a restart rebuilt from what the Services recorded.

use std::collections::BTreeMap;
use std::net::IpAddr;

use herald_ipam::{
    AllocError, Allocator, CreationKey, ExistingAssignment, Family, IpFamilyPolicy, LabelOperator, LabelRequirement,
    LabelSelector, Pool, PoolSpec, Protocol, ServicePort, ServiceRequest,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn eips() -> Vec<Pool> {
    let mut public = PoolSpec::new("public", &["192.0.2.0/28", "2001:db8::/64"]);
    public.priority = 10;
    let mut team = PoolSpec::new("team", &["198.51.100.10-198.51.100.12"]);
    team.priority = 1;
    team.namespace_selector = Some(LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![LabelRequirement {
            key: "team".into(),
            operator: LabelOperator::Exists,
        }],
    });
    [public, team].iter().map(|s| Pool::parse(s).unwrap()).collect()
}

fn service(ns: &str, name: &str, created: i64) -> ServiceRequest {
    let mut r = ServiceRequest::new(ns, name);
    r.created = CreationKey {
        timestamp: created,
        uid: format!("{ns}-{name}").into(),
    };
    r.ports = vec![ServicePort::new(443, Protocol::Tcp)];
    r
}

#[test]
fn allocate_report_restart() {
    let mut alloc = Allocator::new();
    for pool in eips() {
        assert!(alloc.set_pool(pool).is_empty());
    }
    assert!(alloc.overlaps().is_empty());

    // A team namespace prefers its own pool (priority 1 before 10).
    let mut api = service("payments", "api", 100);
    std::sync::Arc::make_mut(&mut api.namespace_labels).insert("team".into(), "pay".into());
    let got = alloc.allocate(&api).unwrap();
    assert_eq!(
        (got.pool.as_str(), got.ips.as_slice()),
        ("team", &[ip("198.51.100.10")][..])
    );

    // Others get the public pool; dual-stack in ipFamilies order.
    let mut web = service("shop", "web", 200);
    web.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    web.ip_families = vec![Family::V6, Family::V4];
    let got = alloc.allocate(&web).unwrap();
    assert_eq!(got.pool, "public");
    assert_eq!(got.ips, [ip("2001:db8::1"), ip("192.0.2.1")]);

    // A second Service shares web's IPv4 address on another port.
    let mut metrics = service("shop", "metrics", 300);
    metrics.ports = vec![ServicePort::new(9100, Protocol::Tcp)];
    metrics.sharing_key = Some("shop".into());
    metrics.requested_ips = vec![ip("192.0.2.1")];
    let err = alloc.allocate(&metrics).unwrap_err();
    assert!(matches!(err, AllocError::SharingRefused { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "shop/metrics may not share 192.0.2.1: shop/web holds it without a herald.dev/sharing-key; add the same key to shop/web to share it"
    );
    web.sharing_key = Some("shop".into());
    alloc.allocate(&web).unwrap();
    assert_eq!(alloc.allocate(&metrics).unwrap().ips, [ip("192.0.2.1")]);

    // Eip status.
    let stats = alloc.pool_stats("public").unwrap();
    assert_eq!((stats.ipv4.total, stats.ipv4.used, stats.ipv4.free), (14, 1, 13));
    assert_eq!(stats.ipv6.total, (1u128 << 64) - 2);
    assert_eq!(stats.ipv6.used, 1);

    // Restart: records as read back from the Services rebuild the same state.
    let records: Vec<ExistingAssignment> = alloc.assignments();
    let mut restarted = Allocator::new();
    for pool in eips() {
        restarted.set_pool(pool);
    }
    assert!(restarted.rebuild(records).is_empty());
    assert_eq!(restarted, alloc);
    restarted.check_invariants().unwrap();
}
