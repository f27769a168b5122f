//! One test per allocation rule, asserting the result and, for refusals, the reason a user sees.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::restore::{ConflictReason, ExistingAssignment};
use super::*;
use crate::pool::PoolSpec;
use crate::request::IpFamilyPolicy;
use crate::request::{CreationKey, Protocol, ServicePort};
use crate::selector::LabelSelector;
use crate::sharing::SharingConflict;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn pool(name: &str, addresses: &[&str]) -> Pool {
    Pool::parse(&PoolSpec::new(name, addresses)).unwrap()
}

fn pool_with(name: &str, addresses: &[&str], edit: impl FnOnce(&mut PoolSpec)) -> Pool {
    let mut spec = PoolSpec::new(name, addresses);
    edit(&mut spec);
    Pool::parse(&spec).unwrap()
}

fn alloc_with(pools: Vec<Pool>) -> Allocator {
    let mut a = Allocator::new();
    for p in pools {
        assert!(a.set_pool(p).is_empty());
    }
    a
}

fn svc(name: &str) -> ServiceRequest {
    ServiceRequest::new("ns", name)
}

fn shared(name: &str, key: &str, ports: &[(u16, Protocol)]) -> ServiceRequest {
    let mut r = svc(name);
    r.sharing_key = Some(key.into());
    r.ports = ports.iter().map(|&(p, proto)| ServicePort::new(p, proto)).collect();
    r
}

fn got(a: &mut Allocator, req: &ServiceRequest) -> Vec<IpAddr> {
    let out = a.allocate(req).unwrap_or_else(|e| panic!("{}: {e}", req.key)).ips;
    a.check_invariants().unwrap();
    out
}

fn refused(a: &mut Allocator, req: &ServiceRequest) -> AllocError {
    let err = a.allocate(req).expect_err("allocation should fail");
    a.check_invariants().unwrap();
    assert!(a.allocation(&req.key).is_none(), "a refused Service holds nothing");
    err
}

// ---- first free ----

#[test]
fn gives_the_lowest_free_address_and_reuses_released_ones() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    assert_eq!(got(&mut a, &svc("a")), ips(&["192.0.2.1"]), "network address skipped");
    assert_eq!(got(&mut a, &svc("b")), ips(&["192.0.2.2"]));
    assert_eq!(got(&mut a, &svc("c")), ips(&["192.0.2.3"]));
    assert_eq!(a.release(&ServiceKey::new("ns", "b")).unwrap().ips, ips(&["192.0.2.2"]));
    assert_eq!(
        got(&mut a, &svc("d")),
        ips(&["192.0.2.2"]),
        "lowest free, not next after last"
    );
    assert_eq!(got(&mut a, &svc("e")), ips(&["192.0.2.4"]));
}

#[test]
fn walks_entries_in_address_order_and_reports_exhaustion() {
    let mut a = alloc_with(vec![pool("p", &["198.51.100.9", "192.0.2.0/31"])]);
    assert_eq!(
        got(&mut a, &svc("a")),
        ips(&["192.0.2.0"]),
        "a /31 keeps both addresses"
    );
    assert_eq!(got(&mut a, &svc("b")), ips(&["192.0.2.1"]));
    assert_eq!(got(&mut a, &svc("c")), ips(&["198.51.100.9"]));
    assert_eq!(
        refused(&mut a, &svc("d")).to_string(),
        "Eip 'p' has no free IPv4 address for ns/d; add addresses to it or release Services"
    );
}

#[test]
fn large_pools_allocate_in_order_without_scanning() {
    let mut a = alloc_with(vec![pool("v6", &["2001:db8::/64"]), pool("v4", &["10.0.0.0/8"])]);
    let mut req = svc("x");
    req.pool = Some("v6".into());
    req.ip_families = vec![Family::V6];
    for i in 0..2_000u32 {
        req.key.name = format!("v6-{i}");
        let got = a.allocate(&req).unwrap().ips;
        assert_eq!(
            got,
            vec![IpAddr::V6(std::net::Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(i + 1)
            ))]
        );
    }
    req.pool = Some("v4".into());
    req.ip_families = vec![Family::V4];
    req.key.name = "v4".into();
    assert_eq!(a.allocate(&req).unwrap().ips, ips(&["10.0.0.1"]));
    let stats = a.pool_stats("v6").unwrap();
    assert_eq!(stats.ipv6.total, (1u128 << 64) - 2);
    assert_eq!(stats.ipv6.used, 2_000);
    assert_eq!(stats.ipv6.free, (1u128 << 64) - 2 - 2_000);
    assert_eq!(
        a.used[Family::V6.index()].runs(),
        1,
        "2000 consecutive addresses are one interval"
    );
    a.check_invariants().unwrap();
}

// ---- pool choice ----

#[test]
fn automatic_choice_prefers_the_lowest_priority_number_then_the_name() {
    let mut a = alloc_with(vec![
        pool_with("zeta", &["192.0.2.1"], |s| s.priority = 1),
        pool_with("beta", &["198.51.100.1"], |s| s.priority = 5),
        pool_with("alpha", &["203.0.113.1"], |s| s.priority = 5),
    ]);
    let first = a.allocate(&svc("a")).unwrap();
    assert_eq!((first.pool.as_str(), first.ips), ("zeta", ips(&["192.0.2.1"])));
    assert_eq!(a.allocate(&svc("b")).unwrap().pool, "alpha", "tie on priority: by name");
    assert_eq!(
        a.allocate(&svc("c")).unwrap().pool,
        "beta",
        "falls through exhausted pools"
    );
    let err = refused(&mut a, &svc("d"));
    assert_eq!(
        err.to_string(),
        "no Eip could give ns/d addresses: Eip 'zeta' has no free IPv4 address for ns/d; add addresses to it or release Services; \
Eip 'alpha' has no free IPv4 address for ns/d; add addresses to it or release Services; \
Eip 'beta' has no free IPv4 address for ns/d; add addresses to it or release Services"
    );
}

#[test]
fn namespace_names_and_selectors_limit_automatic_choice() {
    let by_name = pool_with("team-a", &["192.0.2.1"], |s| {
        s.priority = -1;
        s.namespaces = vec!["a".into()];
    });
    let by_label = pool_with("labelled", &["198.51.100.1"], |s| {
        s.namespace_selector = Some(LabelSelector {
            match_labels: BTreeMap::from([("tier".into(), "gold".into())]),
            match_expressions: vec![],
        });
    });
    let mut a = alloc_with(vec![by_name, by_label]);

    assert_eq!(a.allocate(&ServiceRequest::new("a", "s")).unwrap().pool, "team-a");
    let mut gold = ServiceRequest::new("b", "s");
    std::sync::Arc::make_mut(&mut gold.namespace_labels).insert("tier".into(), "gold".into());
    assert_eq!(a.allocate(&gold).unwrap().pool, "labelled");

    let err = refused(&mut a, &ServiceRequest::new("c", "s"));
    assert_eq!(
        err.to_string(),
        "no Eip may serve c/s: Eip 'team-a': namespace 'c' is not in spec.namespaces [a]; \
Eip 'labelled': namespace 'c' does not match spec.namespaceSelector: label 'tier' is missing (want 'gold')"
    );
    assert!(matches!(err, AllocError::NoEligiblePool { rejected, .. } if rejected.len() == 2));
}

#[test]
fn service_selector_limits_choice() {
    let mut a = alloc_with(vec![pool_with("public", &["192.0.2.1"], |s| {
        s.service_selector = Some(LabelSelector {
            match_labels: BTreeMap::from([("exposure".into(), "public".into())]),
            match_expressions: vec![],
        });
    })]);
    let mut req = svc("web");
    req.pool = Some("public".into());
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "Eip 'public' does not serve ns/web: the Service's labels do not match spec.serviceSelector 'exposure=public': label 'exposure' is missing (want 'public')"
    );
    std::sync::Arc::make_mut(&mut req.service_labels).insert("exposure".into(), "public".into());
    assert_eq!(got(&mut a, &req), ips(&["192.0.2.1"]));
}

#[test]
fn explicit_pool_must_exist_and_be_enabled() {
    let mut a = alloc_with(vec![
        pool("open", &["192.0.2.1"]),
        pool_with("off", &["198.51.100.1"], |s| s.disabled = true),
    ]);
    let mut req = svc("s");
    req.pool = Some("missing".into());
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "ns/s asks for Eip 'missing' (herald.dev/eip), which does not exist; create it or fix the annotation"
    );
    req.pool = Some("off".into());
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "Eip 'off' is disabled (spec.disable) and gives no new addresses to ns/s; enable it or use another Eip"
    );
    req.pool = Some("open".into());
    assert_eq!(got(&mut a, &req), ips(&["192.0.2.1"]));
}

#[test]
fn auto_assign_false_pools_serve_only_explicit_requests() {
    let mut a = alloc_with(vec![pool_with("manual", &["192.0.2.1", "192.0.2.2"], |s| {
        s.auto_assign = false
    })]);
    let err = refused(&mut a, &svc("auto"));
    assert_eq!(
        err.to_string(),
        "no Eip may serve ns/auto: Eip 'manual': spec.autoAssign is false; name it with herald.dev/eip or request one of its IPs"
    );
    let mut by_name = svc("named");
    by_name.pool = Some("manual".into());
    assert_eq!(got(&mut a, &by_name), ips(&["192.0.2.1"]));
    let mut by_ip = svc("pinned");
    by_ip.requested_ips = ips(&["192.0.2.2"]);
    assert_eq!(got(&mut a, &by_ip), ips(&["192.0.2.2"]));
}

#[test]
fn disabled_pool_keeps_existing_allocations_but_gives_no_new_ones() {
    let mut a = alloc_with(vec![
        pool("p", &["192.0.2.0/29"]),
        pool_with("q", &["198.51.100.1"], |s| s.priority = 9),
    ]);
    let held = got(&mut a, &svc("old"));
    let evicted = a.set_pool(pool_with("p", &["192.0.2.0/29"], |s| s.disabled = true));
    assert!(evicted.is_empty(), "disabling evicts nobody");
    assert_eq!(got(&mut a, &svc("old")), held, "existing assignment stays valid");
    assert_eq!(
        a.allocate(&svc("new")).unwrap().pool,
        "q",
        "new Services skip the disabled pool"
    );
    assert_eq!(a.pool_stats("p").unwrap().ipv4.used, 1);
}

// ---- requested addresses ----

#[test]
fn requested_addresses_pick_their_pool() {
    let mut a = alloc_with(vec![pool("v4", &["192.0.2.0/24"]), pool("v6", &["2001:db8::/120"])]);
    let mut req = svc("s");
    req.requested_ips = ips(&["2001:db8::42"]);
    req.ip_families = vec![Family::V6];
    let out = a.allocate(&req).unwrap();
    assert_eq!((out.pool.as_str(), out.ips), ("v6", ips(&["2001:db8::42"])));
}

#[test]
fn requested_address_refusals_say_what_is_wrong() {
    let mut a = alloc_with(vec![pool("v4", &["192.0.2.0/24"]), pool("other", &["198.51.100.0/24"])]);
    let mut req = svc("s");
    req.ip_families = vec![Family::V4];

    req.requested_ips = ips(&["192.0.2.0"]);
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "ns/s requests 192.0.2.0, which is in no Eip (network and broadcast addresses of a CIDR are excluded); add it to an Eip or request another address"
    );

    req.requested_ips = ips(&["192.0.2.1", "192.0.2.2"]);
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "ns/s requests two IPv4 addresses (192.0.2.1 and 192.0.2.2); herald.dev/ips and spec.loadBalancerIP may name at most one per family"
    );

    req.requested_ips = ips(&["2001:db8::1"]);
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "ns/s requests 2001:db8::1, an IPv6 address, but its ipFamilyPolicy SingleStack with ipFamilies [IPv4] does not include IPv6; change herald.dev/ips or the Service's IP families"
    );

    req.requested_ips = ips(&["192.0.2.1"]);
    req.pool = Some("other".into());
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "ns/s requests 192.0.2.1, which is not in Eip 'other' named by herald.dev/eip; fix one of the two"
    );

    req.pool = None;
    assert_eq!(got(&mut a, &req), ips(&["192.0.2.1"]));
    let mut thief = svc("thief");
    thief.requested_ips = ips(&["192.0.2.1"]);
    assert_eq!(
        refused(&mut a, &thief),
        AllocError::IpInUse {
            service: ServiceKey::new("ns", "thief"),
            ip: ip("192.0.2.1"),
            by: ServiceKey::new("ns", "s"),
        }
    );
    assert!(
        refused(&mut a, &thief)
            .to_string()
            .contains("in use by ns/s; set the same herald.dev/sharing-key")
    );
}

#[test]
fn dual_stack_requests_must_come_from_one_pool() {
    let mut a = alloc_with(vec![pool("v4", &["192.0.2.0/24"]), pool("v6", &["2001:db8::/120"])]);
    let mut req = svc("s");
    req.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    req.requested_ips = ips(&["192.0.2.1", "2001:db8::1"]);
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "ns/s requests 192.0.2.1 and 2001:db8::1, which are not in one Eip; a Service's addresses come from a single Eip"
    );
}

#[test]
fn requested_address_outside_an_allowed_namespace_is_refused_with_the_pool_reason() {
    let mut a = alloc_with(vec![pool_with("p", &["192.0.2.0/24"], |s| {
        s.namespaces = vec!["prod".into()]
    })]);
    let mut req = svc("s");
    req.requested_ips = ips(&["192.0.2.7"]);
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "Eip 'p' does not serve ns/s: namespace 'ns' is not in spec.namespaces [prod]"
    );
}

// ---- sharing ----

#[test]
fn services_with_one_key_and_distinct_ports_share_the_lowest_shared_address() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    let dns_tcp = shared("dns-tcp", "dns", &[(53, Protocol::Tcp)]);
    let dns_udp = shared("dns-udp", "dns", &[(53, Protocol::Udp)]);
    assert_eq!(got(&mut a, &dns_tcp), ips(&["192.0.2.1"]));
    assert_eq!(got(&mut a, &svc("plain")), ips(&["192.0.2.2"]));
    assert_eq!(got(&mut a, &dns_udp), ips(&["192.0.2.1"]), "joins the shared address");
    assert_eq!(a.holders(ip("192.0.2.1")).count(), 2);
    assert_eq!(a.pool_stats("p").unwrap().ipv4.used, 2, "a shared address counts once");

    let clash = shared("dns-tcp-2", "dns", &[(53, Protocol::Tcp)]);
    assert_eq!(
        got(&mut a, &clash),
        ips(&["192.0.2.3"]),
        "port clash: takes a free address instead"
    );

    a.release(&dns_tcp.key);
    assert_eq!(
        a.holders(ip("192.0.2.1")).collect::<Vec<_>>(),
        [&dns_udp.key],
        "still held by the other"
    );
    a.release(&dns_udp.key);
    assert_eq!(a.holders(ip("192.0.2.1")).count(), 0);
    a.check_invariants().unwrap();
}

#[test]
fn sharing_refusals_name_the_other_service() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    let mut web = shared("web", "k", &[(80, Protocol::Tcp)]);
    web.requested_ips = ips(&["192.0.2.5"]);
    got(&mut a, &web);

    let mut overlap = shared("web2", "k", &[(443, Protocol::Tcp), (80, Protocol::Tcp)]);
    overlap.requested_ips = ips(&["192.0.2.5"]);
    assert_eq!(
        refused(&mut a, &overlap).to_string(),
        "ns/web2 may not share 192.0.2.5: port 80/TCP overlaps with ns/web"
    );

    let mut wrong_key = shared("other", "j", &[(81, Protocol::Tcp)]);
    wrong_key.requested_ips = ips(&["192.0.2.5"]);
    assert_eq!(
        refused(&mut a, &wrong_key).to_string(),
        "ns/other may not share 192.0.2.5: sharing key 'j' differs from 'k' of ns/web; use the same herald.dev/sharing-key"
    );

    let mut local = shared("local", "k", &[(81, Protocol::Tcp)]);
    local.requested_ips = ips(&["192.0.2.5"]);
    local.etp_local = true;
    assert!(matches!(
        refused(&mut a, &local),
        AllocError::SharingRefused { reason, .. } if matches!(*reason, SharingConflict::BackendMismatch { .. })
    ));

    let mut ok = shared("ok", "k", &[(81, Protocol::Tcp)]);
    ok.requested_ips = ips(&["192.0.2.5"]);
    assert_eq!(got(&mut a, &ok), ips(&["192.0.2.5"]));
}

#[test]
fn local_traffic_policy_sharers_need_the_same_pod_selector() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    let mut first = shared("a", "k", &[(80, Protocol::Tcp)]);
    first.etp_local = true;
    std::sync::Arc::make_mut(&mut first.pod_selector).insert("app".into(), "web".into());
    got(&mut a, &first);

    let mut other_pods = shared("b", "k", &[(81, Protocol::Tcp)]);
    other_pods.etp_local = true;
    std::sync::Arc::make_mut(&mut other_pods.pod_selector).insert("app".into(), "api".into());
    other_pods.requested_ips = ips(&["192.0.2.1"]);
    assert_eq!(
        refused(&mut a, &other_pods).to_string(),
        "ns/b may not share 192.0.2.1: externalTrafficPolicy Local requires the same pod selector: this Service selects {app=api}, ns/a selects {app=web} (shared with ns/a)"
    );
    std::sync::Arc::make_mut(&mut other_pods.pod_selector).insert("app".into(), "web".into());
    assert_eq!(got(&mut a, &other_pods), ips(&["192.0.2.1"]));
}

// ---- dual-stack ----

fn dual() -> Pool {
    pool("dual", &["192.0.2.0/30", "2001:db8::/125"])
}

#[test]
fn prefer_dual_stack_gains_its_second_family_when_one_frees_up() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.1", "2001:db8::1"])]);
    let mut v6 = svc("v6");
    v6.ip_families = vec![Family::V6];
    assert_eq!(got(&mut a, &v6), ips(&["2001:db8::1"]));
    let mut prefer = svc("prefer");
    prefer.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    prefer.ip_families = vec![Family::V4, Family::V6];
    assert_eq!(got(&mut a, &prefer), ips(&["192.0.2.1"]), "no IPv6 left: one family");
    // The same request again, unchanged, while nothing freed up: the same allocation.
    assert_eq!(got(&mut a, &prefer), ips(&["192.0.2.1"]));
    a.release(&v6.key);
    // Unchanged request, but it holds fewer families than it prefers: chosen again, it gets the freed address.
    assert_eq!(got(&mut a, &prefer), ips(&["192.0.2.1", "2001:db8::1"]));
    a.check_invariants().unwrap();
}

#[test]
fn dual_stack_policies() {
    let mut a = alloc_with(vec![
        pool_with("v4only", &["198.51.100.1"], |s| s.priority = -1),
        dual(),
    ]);

    let mut prefer = svc("prefer");
    prefer.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    prefer.ip_families = vec![Family::V4, Family::V6];
    let out = a.allocate(&prefer).unwrap();
    assert_eq!(
        (out.pool.as_str(), out.ips),
        ("v4only", ips(&["198.51.100.1"])),
        "Prefer settles for one family"
    );

    let mut require = svc("require");
    require.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    require.ip_families = vec![Family::V6, Family::V4];
    let out = a.allocate(&require).unwrap();
    assert_eq!(out.pool, "dual", "Require skips the single-family pool");
    assert_eq!(out.ips, ips(&["2001:db8::1", "192.0.2.1"]), "in ipFamilies order");

    let mut v6 = svc("v6");
    v6.ip_families = vec![Family::V6];
    assert_eq!(got(&mut a, &v6), ips(&["2001:db8::2"]));

    let mut prefer2 = prefer.clone();
    prefer2.key.name = "prefer2".into();
    prefer2.pool = Some("dual".into());
    assert_eq!(
        got(&mut a, &prefer2),
        ips(&["192.0.2.2", "2001:db8::3"]),
        "Prefer gets both when the pool has both"
    );
}

#[test]
fn require_dual_stack_without_both_families_says_which_is_missing() {
    let mut a = alloc_with(vec![pool("v4only", &["198.51.100.1"])]);
    let mut req = svc("s");
    req.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    req.ip_families = vec![Family::V4, Family::V6];
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "Eip 'v4only' has no IPv6 addresses, which ns/s needs (RequireDualStack); add IPv6 addresses to the Eip or choose another"
    );
}

#[test]
fn prefer_dual_stack_takes_one_family_when_the_other_is_exhausted() {
    let mut a = alloc_with(vec![pool("dual", &["192.0.2.0/30", "2001:db8::5"])]);
    let mut v6 = svc("v6");
    v6.ip_families = vec![Family::V6];
    got(&mut a, &v6);
    let mut prefer = svc("prefer");
    prefer.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    prefer.ip_families = vec![Family::V4, Family::V6];
    assert_eq!(got(&mut a, &prefer), ips(&["192.0.2.1"]));
    a.release(&v6.key);
    assert_eq!(
        got(&mut a, &prefer),
        ips(&["192.0.2.1", "2001:db8::5"]),
        "the missing family is added later"
    );
}

// ---- idempotence and changes ----

#[test]
fn allocating_again_returns_the_same_addresses() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/28", "2001:db8::/120"])]);
    let mut req = svc("s");
    req.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    req.ip_families = vec![Family::V4, Family::V6];
    let first = a.allocate(&req).unwrap();
    let before = a.clone();
    assert_eq!(a.allocate(&req).unwrap(), first);
    assert_eq!(a, before, "state unchanged");

    // A higher-priority pool appearing later does not move the Service.
    a.set_pool(pool_with("better", &["198.51.100.0/24", "2001:db8:1::/120"], |s| {
        s.priority = -10
    }));
    assert_eq!(a.allocate(&req).unwrap(), first);
    assert_eq!(a.allocate(&svc("new")).unwrap().pool, "better");
}

#[test]
fn a_request_that_becomes_invalid_releases_the_old_addresses() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    let mut one = shared("one", "k", &[(80, Protocol::Tcp)]);
    one.requested_ips = ips(&["192.0.2.3"]);
    let mut two = shared("two", "k", &[(81, Protocol::Tcp)]);
    two.requested_ips = ips(&["192.0.2.3"]);
    got(&mut a, &one);
    got(&mut a, &two);
    two.ports = vec![ServicePort::new(80, Protocol::Tcp)];
    assert_eq!(
        refused(&mut a, &two).to_string(),
        "ns/two may not share 192.0.2.3: port 80/TCP overlaps with ns/one"
    );
    assert_eq!(a.holders(ip("192.0.2.3")).collect::<Vec<_>>(), [&one.key]);
}

#[test]
fn changing_the_requested_address_moves_the_service() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    let mut req = svc("s");
    assert_eq!(got(&mut a, &req), ips(&["192.0.2.1"]));
    req.requested_ips = ips(&["192.0.2.6"]);
    assert_eq!(got(&mut a, &req), ips(&["192.0.2.6"]));
    assert_eq!(a.holders(ip("192.0.2.1")).count(), 0, "old address freed");
}

// ---- pool changes ----

#[test]
fn pool_changes_evict_exactly_the_invalidated_services() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"]), pool("q", &["198.51.100.0/24"])]);
    got(&mut a, &svc("low"));
    got(&mut a, &ServiceRequest::new("other", "high"));
    let mut pinned = svc("pinned");
    pinned.requested_ips = ips(&["192.0.2.6"]);
    got(&mut a, &pinned);
    let mut in_q = svc("q");
    in_q.pool = Some("q".into());
    got(&mut a, &in_q);

    let evicted = a.set_pool(pool("p", &["192.0.2.0/30"]));
    assert_eq!(evicted.len(), 1);
    assert_eq!(
        evicted[0].to_string(),
        "ns/pinned loses 192.0.2.6 from Eip 'p': 192.0.2.6 is no longer in the Eip's addresses"
    );
    a.check_invariants().unwrap();

    let evicted = a.set_pool(pool_with("p", &["192.0.2.0/30"], |s| s.namespaces = vec!["ns".into()]));
    assert_eq!(evicted.len(), 1);
    assert_eq!(
        evicted[0].to_string(),
        "other/high loses 192.0.2.2 from Eip 'p': namespace 'other' is not in spec.namespaces [ns]"
    );

    let evicted = a.remove_pool("p");
    assert_eq!(
        evicted.iter().map(|e| e.service.name.as_str()).collect::<Vec<_>>(),
        ["low"]
    );
    assert_eq!(evicted[0].reason, EvictionReason::PoolRemoved);
    assert_eq!(a.allocation(&in_q.key).unwrap().pool, "q", "other pools untouched");
    assert!(a.pool_stats("p").is_none());
    a.check_invariants().unwrap();
}

#[test]
fn overlapping_pools_are_reported_and_never_double_allocate() {
    let mut a = alloc_with(vec![
        pool("a", &["192.0.2.1-192.0.2.2"]),
        pool("b", &["192.0.2.2-192.0.2.3"]),
    ]);
    assert_eq!(
        a.overlaps().iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        ["Eip 'a' (192.0.2.1-192.0.2.2) and Eip 'b' (192.0.2.2-192.0.2.3) overlap on 192.0.2.2"]
    );
    let mut in_a = svc("x");
    in_a.requested_ips = ips(&["192.0.2.2"]);
    assert_eq!(a.allocate(&in_a).unwrap().pool, "a");
    let mut from_b = svc("y");
    from_b.pool = Some("b".into());
    assert_eq!(
        got(&mut a, &from_b),
        ips(&["192.0.2.3"]),
        "b skips the address a handed out"
    );
}

// ---- rebuild ----

#[test]
fn rebuild_from_own_assignments_reproduces_the_state() {
    let mut a = alloc_with(vec![
        dual(),
        pool_with("manual", &["198.51.100.0/24"], |s| s.auto_assign = false),
    ]);
    let mut d = svc("dual");
    d.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    d.ip_families = vec![Family::V6, Family::V4];
    got(&mut a, &d);
    got(&mut a, &shared("s1", "k", &[(80, Protocol::Tcp)]));
    got(&mut a, &shared("s2", "k", &[(81, Protocol::Tcp)]));
    let mut m = svc("m");
    m.pool = Some("manual".into());
    got(&mut a, &m);

    let mut rebuilt = a.clone();
    let mut records = a.assignments();
    records.reverse(); // order of input does not matter
    assert!(rebuilt.rebuild(records).is_empty());
    assert_eq!(rebuilt, a);
}

#[test]
fn rebuild_gives_a_contested_address_to_the_older_service() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    let record = |name: &str, ts: i64, ip_: &str| ExistingAssignment {
        request: ServiceRequest {
            created: CreationKey {
                timestamp: ts,
                uid: format!("uid-{name}").into(),
            },
            ..svc(name)
        },
        pool: Some("p".into()),
        ips: ips(&[ip_]),
    };
    let conflicts = a.rebuild(vec![record("young", 200, "192.0.2.1"), record("old", 100, "192.0.2.1")]);
    assert_eq!(
        a.holders(ip("192.0.2.1")).collect::<Vec<_>>(),
        [&ServiceKey::new("ns", "old")]
    );
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        conflicts[0].to_string(),
        "ns/young cannot keep 192.0.2.1: 192.0.2.1 stays with the older Service ns/old: it is held by ns/old; set the same herald.dev/sharing-key on both Services to share it"
    );
    // Same timestamp: the uid decides, independent of input order.
    let mut b = a.clone();
    let c1 = b.rebuild(vec![record("x", 5, "192.0.2.2"), record("w", 5, "192.0.2.2")]);
    let mut c = a.clone();
    let c2 = c.rebuild(vec![record("w", 5, "192.0.2.2"), record("x", 5, "192.0.2.2")]);
    assert_eq!(b, c);
    assert_eq!(c1, c2);
    assert_eq!(c1[0].service.name, "x", "uid-w < uid-x");
}

#[test]
fn rebuild_drops_invalid_records_with_reasons() {
    let mut a = alloc_with(vec![
        pool_with("p", &["192.0.2.0/29"], |s| s.namespaces = vec!["ns".into()]),
        pool("q", &["2001:db8::/120"]),
    ]);
    let rec = |ns: &str, name: &str, list: &[&str]| ExistingAssignment {
        request: ServiceRequest::new(ns, name),
        pool: None,
        ips: ips(list),
    };
    let conflicts = a.rebuild(vec![
        rec("ns", "outside", &["203.0.113.9"]),
        rec("ns", "split", &["192.0.2.1", "2001:db8::1"]),
        rec("ns", "two", &["192.0.2.1", "192.0.2.2"]),
        rec("other", "ns-denied", &["192.0.2.3"]),
        rec("ns", "fine", &["192.0.2.4"]),
        rec("ns", "fine", &["192.0.2.5"]),
    ]);
    let reasons: BTreeMap<String, ConflictReason> = conflicts.into_iter().map(|c| (c.service.name, c.reason)).collect();
    assert_eq!(
        reasons["outside"],
        ConflictReason::OutsidePools { ip: ip("203.0.113.9") }
    );
    assert_eq!(reasons["split"], ConflictReason::SplitAcrossPools);
    assert_eq!(reasons["two"], ConflictReason::TooManyIps { family: Family::V4 });
    assert!(matches!(&reasons["ns-denied"], ConflictReason::NotAllowed { pool, .. } if pool == "p"));
    assert_eq!(reasons["fine"], ConflictReason::Duplicate);
    assert_eq!(
        a.allocation(&ServiceKey::new("ns", "fine")).unwrap().ips,
        ips(&["192.0.2.4"])
    );
    a.check_invariants().unwrap();
}

#[test]
fn rebuild_keeps_valid_shares() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    let rec = |r: ServiceRequest| ExistingAssignment {
        request: r,
        pool: Some("p".into()),
        ips: ips(&["192.0.2.2"]),
    };
    let conflicts = a.rebuild(vec![
        rec(shared("a", "k", &[(80, Protocol::Tcp)])),
        rec(shared("b", "k", &[(81, Protocol::Tcp)])),
        rec(shared("c", "k", &[(80, Protocol::Tcp)])),
    ]);
    assert_eq!(a.holders(ip("192.0.2.2")).count(), 2);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        conflicts[0].to_string(),
        "ns/c cannot keep 192.0.2.2: 192.0.2.2 stays with the older Service ns/a: port 80/TCP overlaps with ns/a"
    );
}

#[test]
fn assign_existing_adopts_valid_records_and_refuses_taken_addresses() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.0/29"])]);
    let record = |name: &str, list: &[&str]| ExistingAssignment {
        request: svc(name),
        pool: Some("p".into()),
        ips: ips(list),
    };
    let got = a.assign_existing(record("a", &["192.0.2.5"])).unwrap();
    assert_eq!(got.ips, ips(&["192.0.2.5"]));
    assert_eq!(got.pool, "p");
    assert_eq!(
        got_again(&mut a, "a"),
        ips(&["192.0.2.5"]),
        "allocate keeps the adopted address"
    );

    let refused = a.assign_existing(record("b", &["192.0.2.5"])).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "ns/b cannot keep 192.0.2.5: 192.0.2.5 stays with the older Service ns/a: it is held by ns/a; set the same herald.dev/sharing-key on both Services to share it"
    );
    assert!(a.allocation(&ServiceKey::new("ns", "b")).is_none());

    // A new record for a Service replaces what it held.
    a.assign_existing(record("a", &["192.0.2.6"])).unwrap();
    assert_eq!(a.holders(ip("192.0.2.5")).count(), 0);
    let empty = a.assign_existing(record("a", &[])).unwrap_err();
    assert_eq!(empty.reason, ConflictReason::NoAddresses);
    assert!(a.allocation(&ServiceKey::new("ns", "a")).is_none());
    a.check_invariants().unwrap();
}

fn got_again(a: &mut Allocator, name: &str) -> Vec<IpAddr> {
    got(a, &svc(name))
}

// ---- never-allocated addresses ----

#[test]
fn whole_address_spaces_hand_out_host_addresses_only_and_count_exactly() {
    let mut a = alloc_with(vec![pool("all", &["0.0.0.0/0", "::/0"])]);
    assert_eq!(
        got(&mut a, &svc("v4")),
        ips(&["1.0.0.0"]),
        "0.0.0.0/8 'this network' is skipped"
    );
    let mut v6 = svc("v6");
    v6.ip_families = vec![Family::V6];
    assert_eq!(
        got(&mut a, &v6),
        ips(&["::1:0:0"]),
        "::1 and the rest of ::/96 are skipped"
    );
    let stats = a.pool_stats("all").unwrap();
    assert_eq!(stats.ipv4.total, 3_992_911_871);
    assert_eq!(stats.ipv4.free, 3_992_911_870);
    assert_eq!(stats.ipv6.total, 338_620_831_926_207_318_622_244_848_597_827_846_144);
    assert!(stats.ipv6.total < u128::MAX, "exact, not saturated");
    assert_eq!(stats.ipv6.free, stats.ipv6.total - 1);
}

#[test]
fn first_free_steps_over_never_allocated_blocks_inside_an_entry() {
    let mut a = alloc_with(vec![pool(
        "p",
        &[
            "126.255.255.254-128.0.0.1",
            "223.255.255.255-240.0.0.0",
            "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff-fec0::",
        ],
    )]);
    let handed: Vec<IpAddr> = (0..6).flat_map(|i| got(&mut a, &svc(&format!("s{i}")))).collect();
    assert_eq!(
        handed,
        ips(&[
            "126.255.255.254",
            "126.255.255.255",
            "128.0.0.0",
            "128.0.0.1",
            "223.255.255.255",
            "240.0.0.0"
        ])
    );
    assert!(matches!(
        refused(&mut a, &svc("more")),
        AllocError::PoolExhausted { .. }
    ));
    let mut v6 = svc("v6");
    v6.ip_families = vec![Family::V6];
    assert_eq!(got(&mut a, &v6), ips(&["fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]));
    v6.key.name = "v6b".into();
    assert_eq!(got(&mut a, &v6), ips(&["fec0::"]), "fe80::/10 is skipped");
    let stats = a.pool_stats("p").unwrap();
    assert_eq!((stats.ipv4.total, stats.ipv6.total), (6, 2));
}

#[test]
fn requests_for_never_allocated_addresses_are_refused_naming_why() {
    let mut a = alloc_with(vec![pool("all", &["0.0.0.0/0", "::/0"])]);
    let mut req = svc("s");
    req.requested_ips = ips(&["127.0.0.1"]);
    assert_eq!(
        refused(&mut a, &req).to_string(),
        "ns/s requests 127.0.0.1, which is in 127.0.0.0/8 loopback (RFC 1122 §3.2.1.3) and never a Service's address, whatever an Eip lists; request another address in herald.dev/ips or spec.loadBalancerIP"
    );
    for (addr, what) in [
        ("0.0.0.1", "'this network'"),
        ("169.254.10.10", "link-local"),
        ("224.0.0.251", "multicast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::10.0.0.1", "IPv4-compatible (deprecated)"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
    ] {
        req.requested_ips = ips(&[addr]);
        req.ip_families = vec![Family::of(ip(addr))];
        match refused(&mut a, &req) {
            AllocError::IpNeverAllocated { ip: got, block, .. } => {
                assert_eq!((got, block.what()), (ip(addr), what));
            }
            other => panic!("{addr}: {other}"),
        }
    }
    // Also when the Service names the Eip, and with a pool that lists the address itself.
    let mut a = alloc_with(vec![pool("lo", &["127.0.0.1", "192.0.2.1"])]);
    req.pool = Some("lo".into());
    req.requested_ips = ips(&["127.0.0.1"]);
    req.ip_families = vec![Family::V4];
    assert!(matches!(refused(&mut a, &req), AllocError::IpNeverAllocated { .. }));
    req.requested_ips.clear();
    assert_eq!(got(&mut a, &req), ips(&["192.0.2.1"]));
    assert_eq!(a.pool_stats("lo").unwrap().ipv4.total, 1);
}

#[test]
fn records_of_never_allocated_addresses_are_dropped_with_the_reason() {
    // What an older Herald handed out from 0.0.0.0/0 and ::/0.
    let mut a = alloc_with(vec![pool("all", &["0.0.0.0/0", "::/0"])]);
    let rec = |name: &str, list: &[&str]| ExistingAssignment {
        request: svc(name),
        pool: Some("all".into()),
        ips: ips(list),
    };
    let conflicts = a.rebuild(vec![
        rec("first", &["0.0.0.1"]),
        rec("loop6", &["192.0.2.7", "::1"]),
        rec("fine", &["192.0.2.8"]),
    ]);
    let shown: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "ns/first cannot keep 0.0.0.1: 0.0.0.1 is in 0.0.0.0/8 'this network' (RFC 1122 §3.2.1.3), which is never a Service's address",
            "ns/loop6 cannot keep 192.0.2.7, ::1: ::1 is in ::1/128 loopback (RFC 4291 §2.5.3), which is never a Service's address",
        ]
    );
    assert_eq!(a.allocation(&svc("fine").key).unwrap().ips, ips(&["192.0.2.8"]));
    assert_eq!(a.pool_stats("all").unwrap().ipv4.used, 1);
    let refused = a.assign_existing(rec("late", &["127.0.0.1"])).unwrap_err();
    assert!(
        matches!(refused.reason, ConflictReason::NeverAllocated { .. }),
        "{refused}"
    );
    a.check_invariants().unwrap();
    // Allocated again, they get host addresses.
    assert_eq!(got(&mut a, &svc("first")), ips(&["1.0.0.0"]));
}

#[test]
fn overlaps_of_one_pool_are_those_of_all_pools_that_name_it() {
    let a = alloc_with(vec![
        pool("a", &["0.0.0.0/0"]),
        pool("b", &["0.0.0.0/0", "::/0"]),
        pool("c", &["127.0.0.1", "192.0.2.1", "198.51.100.0/24"]),
        pool("d", &["2001:db8::/64", "203.0.113.5-203.0.113.9"]),
    ]);
    let all = a.overlaps();
    for name in ["a", "b", "c", "d", "missing"] {
        let want: Vec<&Overlap> = all.iter().filter(|o| o.first.0 == name || o.second.0 == name).collect();
        let (listed, total) = a.overlaps_of(name, usize::MAX);
        assert_eq!(listed.iter().collect::<Vec<_>>(), want, "{name}");
        assert_eq!(total, want.len());
        let (first_two, total) = a.overlaps_of(name, 2);
        assert_eq!(
            first_two.iter().collect::<Vec<_>>(),
            want[..want.len().min(2)],
            "{name}"
        );
        assert_eq!(total, want.len());
    }
    // c's 127.0.0.1 is in a's and b's 0.0.0.0/0 too, but none of them gives it out: no overlap.
    let (listed, total) = a.overlaps_of("c", 9);
    assert_eq!(total, 4);
    assert_eq!(
        listed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "Eip 'a' (0.0.0.0/0) and Eip 'c' (192.0.2.1) overlap on 192.0.2.1",
            "Eip 'a' (0.0.0.0/0) and Eip 'c' (198.51.100.0/24) overlap on 198.51.100.1-198.51.100.254",
            "Eip 'b' (0.0.0.0/0) and Eip 'c' (192.0.2.1) overlap on 192.0.2.1",
            "Eip 'b' (0.0.0.0/0) and Eip 'c' (198.51.100.0/24) overlap on 198.51.100.1-198.51.100.254",
        ]
    );
}

// ---- checks on the pool's network ----

#[test]
fn checked_free_addresses_go_first_and_taken_ones_never() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.10-192.0.2.20", "2001:db8::10-2001:db8::20"])]);
    // .10 and .11 are taken by hosts that are not Herald; .13 and .15 were found free.
    assert!(a.set_checks(
        "p",
        ips(&["192.0.2.15", "192.0.2.13", "2001:db8::12", "198.51.100.1"]),
        ips(&["192.0.2.10", "192.0.2.11"])
    ));
    assert!(
        !a.set_checks(
            "p",
            ips(&["192.0.2.13", "192.0.2.15", "2001:db8::12"]),
            ips(&["192.0.2.11", "192.0.2.10"])
        ),
        "the same facts (an address outside the pool is ignored) change nothing"
    );
    assert_eq!(got(&mut a, &svc("a")), ips(&["192.0.2.13"]), "the lowest checked free");
    assert_eq!(got(&mut a, &svc("b")), ips(&["192.0.2.15"]));
    assert_eq!(
        got(&mut a, &svc("c")),
        ips(&["192.0.2.12"]),
        "then the lowest not taken"
    );
    assert_eq!(got(&mut a, &svc("d")), ips(&["192.0.2.14"]));
    let mut v6 = svc("e");
    v6.ip_families = vec![Family::V6];
    assert_eq!(got(&mut a, &v6), ips(&["2001:db8::12"]));
    // A user asking for a taken address gets it: the announcer's own probe and the Eip's condition tell.
    let mut asked = svc("f");
    asked.requested_ips = ips(&["192.0.2.10"]);
    assert_eq!(got(&mut a, &asked), ips(&["192.0.2.10"]));
    // Facts replaced: .11 is free again.
    a.set_checks("p", [], []);
    assert_eq!(got(&mut a, &svc("g")), ips(&["192.0.2.11"]));
}

#[test]
fn a_pool_whose_free_addresses_are_all_taken_gives_none() {
    let mut a = alloc_with(vec![pool("p", &["192.0.2.10-192.0.2.12"])]);
    assert_eq!(got(&mut a, &svc("a")), ips(&["192.0.2.10"]));
    a.set_checks("p", [], ips(&["192.0.2.11", "192.0.2.12"]));
    assert!(matches!(refused(&mut a, &svc("b")), AllocError::PoolExhausted { .. }));
    // The checks survive a new version of the pool, less what it no longer contains.
    assert!(a.set_pool(pool("p", &["192.0.2.10-192.0.2.11"])).is_empty());
    assert!(matches!(refused(&mut a, &svc("b")), AllocError::PoolExhausted { .. }));
    // .12 left the pool, and its fact with it: back in the pool, it is as good as any until checked again.
    assert!(a.set_pool(pool("p", &["192.0.2.10-192.0.2.13"])).is_empty());
    assert_eq!(got(&mut a, &svc("b")), ips(&["192.0.2.12"]));
}
