//! Parsing, membership, overlaps and admission of pools.

use super::overlap::find_overlaps;
use super::parse::{EntryError, PoolError, parse_entry};
use super::*;
use crate::selector::{LabelOperator, LabelRequirement};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(s: &str) -> String {
    parse_entry(s).unwrap().to_string()
}

#[test]
fn cidrs_drop_network_and_broadcast_except_point_to_point() {
    assert_eq!(range("192.0.2.0/24"), "192.0.2.1-192.0.2.254");
    assert_eq!(range("192.0.2.0/30"), "192.0.2.1-192.0.2.2");
    assert_eq!(range("192.0.2.0/31"), "192.0.2.0-192.0.2.1");
    assert_eq!(range("192.0.2.9/32"), "192.0.2.9");
    assert_eq!(range("2001:db8::/64"), "2001:db8::1-2001:db8::ffff:ffff:ffff:fffe");
    assert_eq!(range("2001:db8::/126"), "2001:db8::1-2001:db8::2");
    assert_eq!(range("2001:db8::/127"), "2001:db8::-2001:db8::1");
    assert_eq!(range("2001:db8::5/128"), "2001:db8::5");
    assert_eq!(parse_entry("2001:db8::/64").unwrap().size(), (1u128 << 64) - 2);
}

#[test]
fn ranges_and_single_addresses() {
    assert_eq!(range(" 192.0.2.10 - 192.0.2.20 "), "192.0.2.10-192.0.2.20");
    assert_eq!(range("192.0.2.10-192.0.2.10"), "192.0.2.10");
    assert_eq!(range("2001:db8::1-2001:db8::ff"), "2001:db8::1-2001:db8::ff");
    assert_eq!(range("198.51.100.3"), "198.51.100.3");
    assert_eq!(range("2001:db8::3"), "2001:db8::3");
}

#[test]
fn bad_entries_are_rejected_with_the_reason() {
    assert_eq!(parse_entry("  "), Err(EntryError::Empty));
    assert_eq!(parse_entry("192.0.2.300"), Err(EntryError::Malformed));
    assert_eq!(parse_entry("192.0.2.0/33"), Err(EntryError::Malformed));
    assert_eq!(parse_entry("fish"), Err(EntryError::Malformed));
    assert_eq!(
        parse_entry("192.0.2.5/24"),
        Err(EntryError::HostBitsSet {
            network: "192.0.2.0/24".into()
        })
    );
    assert_eq!(parse_entry("192.0.2.9-192.0.2.1"), Err(EntryError::Reversed));
    assert_eq!(parse_entry("192.0.2.1-2001:db8::1"), Err(EntryError::MixedFamilies));
    assert_eq!(
        parse_entry("192.0.2.1-x"),
        Err(EntryError::BadRangeEnd { end: "x".into() })
    );
}

#[test]
fn pool_errors_name_the_pool_entry_and_reason() {
    let err = Pool::parse(&PoolSpec::new("web", &["192.0.2.0/24", "192.0.2.9-192.0.2.1"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Eip 'web': address entry '192.0.2.9-192.0.2.1' is invalid: the range is reversed (first address above last); write it low-high"
    );
    let err = Pool::parse(&PoolSpec::new("web", &["192.0.2.5/24"])).unwrap_err();
    assert!(err.to_string().contains("did you mean 192.0.2.0/24?"), "{err}");
    let err = Pool::parse(&PoolSpec::new("web", &[])).unwrap_err();
    assert_eq!(err, PoolError::NoAddresses { pool: "web".into() });
    let err = Pool::parse(&PoolSpec::new("web", &["192.0.2.0/28", "192.0.2.10-192.0.2.20"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Eip 'web': entries '192.0.2.0/28' and '192.0.2.10-192.0.2.20' overlap on 192.0.2.10-192.0.2.14; remove one or split them"
    );
}

#[test]
fn mixed_pool_counts_each_family_and_tells_membership() {
    let pool = Pool::parse(&PoolSpec::new(
        "mixed",
        &["2001:db8::/64", "192.0.2.0/24", "198.51.100.7", "192.0.2.255"],
    ))
    .unwrap();
    assert_eq!(pool.total(Family::V4), 254 + 1 + 1);
    assert_eq!(pool.total(Family::V6), (1u128 << 64) - 2);
    assert!(
        pool.contains(ip("192.0.2.255")),
        "listed single address next to the CIDR"
    );
    assert!(!pool.contains(ip("192.0.2.0")), "network address excluded");
    assert!(pool.contains(ip("198.51.100.7")));
    assert!(!pool.contains(ip("198.51.100.8")));
    assert!(pool.contains(ip("2001:db8::ffff:0:0:1")));
    assert!(!pool.contains(ip("2001:db8:1::1")));
    let texts: Vec<_> = pool.entries().iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["192.0.2.0/24", "192.0.2.255", "198.51.100.7", "2001:db8::/64"]);
}

fn left_out(addresses: &[&str]) -> Vec<String> {
    let pool = Pool::parse(&PoolSpec::new("p", addresses)).unwrap();
    pool.left_out().iter().map(ToString::to_string).collect()
}

#[test]
fn never_allocated_blocks_are_taken_out_of_every_kind_of_entry() {
    let pool = Pool::parse(&PoolSpec::new("p", &["0.0.0.0/0", "::/0"])).unwrap();
    // The CIDR already leaves out 0.0.0.0 and 255.255.255.255 (network, broadcast), `::` and the last
    // address; then 0/8, 127/8, 169.254/16, 224/4 and ::/96, ::ffff:0:0/96, fe80::/10, ff00::/8 go.
    let v4 = (1u128 << 32) - 2 - ((1 << 24) - 1) - (1 << 24) - (1 << 16) - (1 << 28);
    assert_eq!(pool.total(Family::V4), v4);
    assert_eq!(v4, 3_992_911_871);
    let v6 = u128::MAX - 1 - ((1 << 32) - 1) - (1 << 32) - (1 << 118) - ((1 << 120) - 1);
    assert_eq!(pool.total(Family::V6), v6);
    assert_eq!(v6, 338_620_831_926_207_318_622_244_848_597_827_846_144);
    for never in [
        "0.0.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "224.0.0.1",
        "239.255.255.255",
        "::1",
        "::192.0.2.1",
        "::ffff:192.0.2.1",
        "fe80::1",
        "ff02::1",
    ] {
        assert!(!pool.contains(ip(never)), "{never}");
    }
    for host in [
        "1.0.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "223.255.255.255",
        "240.0.0.1",
        "255.255.255.254",
        "::1:0:0",
        "2001:db8::1",
        "fec0::1",
        "feff::1",
    ] {
        assert!(pool.contains(ip(host)), "{host}");
    }

    // Ranges and single addresses, not only CIDRs.
    let pool = Pool::parse(&PoolSpec::new(
        "p",
        &["126.255.255.254-128.0.0.1", "169.254.0.1", "ff02::1", "2001:db8::1"],
    ))
    .unwrap();
    let usable: Vec<String> = pool.usable().iter().map(ToString::to_string).collect();
    assert_eq!(
        usable,
        ["126.255.255.254-126.255.255.255", "128.0.0.0-128.0.0.1", "2001:db8::1"]
    );
    assert_eq!((pool.total(Family::V4), pool.total(Family::V6)), (4, 1));
    assert_eq!(pool.entries().len(), 4, "entries stay as written");
}

#[test]
fn left_out_names_only_the_blocks_the_entries_touch() {
    assert_eq!(
        left_out(&["0.0.0.0/0"]),
        [
            "0.0.0.0/8 'this network'",
            "127.0.0.0/8 loopback",
            "169.254.0.0/16 link-local",
            "224.0.0.0/4 multicast",
        ],
        "255.255.255.255 is already left out as the CIDR's broadcast address"
    );
    assert_eq!(
        left_out(&["255.255.0.0-255.255.255.255"]),
        ["255.255.255.255/32 limited broadcast"]
    );
    assert_eq!(
        left_out(&["::/0"]),
        [
            "::/96 IPv4-compatible (deprecated)",
            "::1/128 loopback",
            "::ffff:0:0/96 IPv4-mapped",
            "fe80::/10 link-local",
            "ff00::/8 multicast",
        ],
        "`::` itself is already left out as the CIDR's first address"
    );
    assert_eq!(
        left_out(&["10.0.0.0/8", "169.254.7.7", "2001:db8::/64"]),
        ["169.254.0.0/16 link-local"]
    );
    assert!(left_out(&["192.0.2.0/24", "240.0.0.0/5", "2001:db8::/32"]).is_empty());
}

#[test]
fn a_pool_of_only_never_allocated_addresses_is_invalid() {
    let err = Pool::parse(&PoolSpec::new("lo", &["127.0.0.0/8"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Eip 'lo': every address it lists is one Herald never allocates (127.0.0.0/8 loopback, RFC 1122 §3.2.1.3); list addresses a client can reach"
    );
    let err = Pool::parse(&PoolSpec::new("odd", &["::1", "224.0.0.0/24", "fe80::/64"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Eip 'odd': every address it lists is one Herald never allocates (224.0.0.0/4 multicast, RFC 5771; \
::/96 IPv4-compatible (deprecated), RFC 4291 §2.5.5.1; ::1/128 loopback, RFC 4291 §2.5.3; fe80::/10 link-local, RFC 4291 §2.5.6); \
list addresses a client can reach"
    );
    assert!(
        Pool::parse(&PoolSpec::new("lo", &["127.0.0.0/8", "192.0.2.1"])).is_ok(),
        "one usable address is enough"
    );
}

#[test]
fn pools_sharing_only_never_allocated_addresses_do_not_overlap() {
    let a = Pool::parse(&PoolSpec::new("a", &["0.0.0.0/0"])).unwrap();
    let b = Pool::parse(&PoolSpec::new("b", &["127.0.0.1", "192.0.2.1"])).unwrap();
    let c = Pool::parse(&PoolSpec::new("c", &["127.0.0.1", "198.51.100.1"])).unwrap();
    assert!(find_overlaps([&b, &c]).is_empty());
    let z = Pool::parse(&PoolSpec::new("z", &["0.0.0.0/0"])).unwrap();
    let found: Vec<String> = find_overlaps([&a, &z]).iter().map(|o| o.to_string()).collect();
    assert_eq!(
        found,
        ["Eip 'a' (0.0.0.0/0) and Eip 'z' (0.0.0.0/0) overlap on 1.0.0.0-255.255.255.254"]
    );
    let found: Vec<String> = find_overlaps([&a, &b]).iter().map(|o| o.to_string()).collect();
    assert_eq!(
        found,
        ["Eip 'a' (0.0.0.0/0) and Eip 'b' (192.0.2.1) overlap on 192.0.2.1"]
    );
}

#[test]
fn overlaps_between_pools_name_both_and_the_range() {
    let a = Pool::parse(&PoolSpec::new("a", &["192.0.2.0/24", "2001:db8::/120"])).unwrap();
    let b = Pool::parse(&PoolSpec::new("b", &["192.0.2.200-192.0.2.255", "198.51.100.0/24"])).unwrap();
    let c = Pool::parse(&PoolSpec::new("c", &["2001:db8::80"])).unwrap();
    let found: Vec<String> = find_overlaps([&a, &b, &c]).iter().map(|o| o.to_string()).collect();
    assert_eq!(
        found,
        [
            "Eip 'a' (192.0.2.0/24) and Eip 'b' (192.0.2.200-192.0.2.255) overlap on 192.0.2.200-192.0.2.254",
            "Eip 'a' (2001:db8::/120) and Eip 'c' (2001:db8::80) overlap on 2001:db8::80",
        ]
    );
    assert!(find_overlaps([&b, &c]).is_empty());
}

#[test]
fn permits_by_namespace_name_or_labels_and_service_labels() {
    let mut spec = PoolSpec::new("p", &["192.0.2.0/24"]);
    spec.namespaces = vec!["prod".into()];
    spec.namespace_selector = Some(LabelSelector {
        match_labels: [("team".to_string(), "web".to_string())].into(),
        match_expressions: vec![],
    });
    spec.service_selector = Some(LabelSelector {
        match_labels: Default::default(),
        match_expressions: vec![LabelRequirement {
            key: "expose".into(),
            operator: LabelOperator::Exists,
        }],
    });
    let pool = Pool::parse(&spec).unwrap();

    let mut req = ServiceRequest::new("prod", "s");
    std::sync::Arc::make_mut(&mut req.service_labels).insert("expose".into(), "yes".into());
    assert_eq!(pool.permits(&req), Ok(()), "listed by name");

    req.key.namespace = "other".into();
    std::sync::Arc::make_mut(&mut req.namespace_labels).insert("team".into(), "web".into());
    assert_eq!(pool.permits(&req), Ok(()), "selected by label");

    std::sync::Arc::make_mut(&mut req.namespace_labels).insert("team".into(), "db".into());
    assert_eq!(
        pool.permits(&req).unwrap_err().to_string(),
        "namespace 'other' is not in spec.namespaces [prod] and does not match spec.namespaceSelector: label 'team' is 'db', not 'web'"
    );

    req.key.namespace = "prod".into();
    std::sync::Arc::make_mut(&mut req.service_labels).clear();
    assert_eq!(
        pool.permits(&req).unwrap_err().to_string(),
        "the Service's labels do not match spec.serviceSelector 'expose': label 'expose' is missing"
    );
}

#[test]
fn addresses_come_in_allocation_order_lazily() {
    let pool = Pool::parse(&PoolSpec::new(
        "p",
        &["192.0.2.20-192.0.2.21", "192.0.2.5", "2001:db8::/64"],
    ))
    .unwrap();
    let v4: Vec<IpAddr> = pool.addresses(Family::V4).collect();
    assert_eq!(v4, [ip("192.0.2.5"), ip("192.0.2.20"), ip("192.0.2.21")]);
    let v6: Vec<IpAddr> = pool.addresses(Family::V6).take(2).collect();
    assert_eq!(v6, [ip("2001:db8::1"), ip("2001:db8::2")], "a /64 is not walked");
}
