use std::net::Ipv4Addr;

use herald_bgp::packet::update::{AsSegment, AsSegmentType, announce_updates, withdraw_updates};
use herald_bgp::packet::{
    Afi, Capability, CeaseSubcode, LargeCommunity, Message, Notification, Open, Origin, OutboundAttributes,
    PathAttribute, RouteRefresh, Safi, Update, decode_frame,
};
use ipnet::IpNet;

use herald_bgp::packet::DecodeContext;

use super::{EBGP, header, hex};

fn open_64512() -> Open {
    Open {
        version: 4,
        my_as: 64512,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 10),
        capabilities: vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(64512),
        ],
    }
}

const OPEN_64512: &str = "04 fc 00 00 5a c0 00 02 0a 16 02 14 \
    01 04 00 01 00 01  01 04 00 02 00 01  02 00  41 04 00 00 fc 00";

/// Encodes, compares with the vector, decodes back.
fn roundtrip(msg: &Message, ctx: DecodeContext, expected: &[u8]) {
    let bytes = msg.encode(ctx.four_octet_as);
    assert_eq!(bytes, expected, "encoding of {msg:?}");
    let (decoded, n) = decode_frame(&bytes, ctx).expect("decodes").expect("complete");
    assert_eq!(n, bytes.len());
    assert_eq!(&decoded, msg);
}

#[test]
fn open_with_capabilities() {
    let mut expected = header(51, 1);
    expected.extend(hex(OPEN_64512));
    roundtrip(&Message::Open(open_64512()), EBGP, &expected);
}

#[test]
fn open_with_graceful_restart_r_bit_and_as_trans() {
    let mut open = open_64512();
    open.my_as = 23456;
    open.capabilities[3] = Capability::FourOctetAs(4_200_000_000);
    open.capabilities.insert(
        3,
        Capability::GracefulRestart {
            restarting: true,
            restart_time: 120,
            families: vec![(Afi::IPV4, Safi::UNICAST, true), (Afi::IPV6, Safi::UNICAST, true)],
        },
    );
    let mut expected = header(63, 1);
    expected.extend(hex("04 5b a0 00 5a c0 00 02 0a 22 02 20 \
        01 04 00 01 00 01  01 04 00 02 00 01  02 00 \
        40 0a 80 78 00 01 01 80 00 02 01 80 \
        41 04 fa 56 ea 00"));
    roundtrip(&Message::Open(open.clone()), EBGP, &expected);
    assert_eq!(open.asn(), 4_200_000_000);
}

#[test]
fn keepalive_notification_route_refresh() {
    roundtrip(&Message::Keepalive, EBGP, &header(19, 4));
    let mut n = header(25, 3);
    n.extend(hex("06 02 03 62 79 65"));
    let cease = Notification::cease(CeaseSubcode::AdministrativeShutdown, "bye");
    roundtrip(&Message::Notification(cease.clone()), EBGP, &n);
    assert_eq!(cease.describe(), "Cease / Administrative Shutdown (6/2): bye");
    let mut rr = header(23, 5);
    rr.extend(hex("00 02 00 01"));
    roundtrip(
        &Message::RouteRefresh(RouteRefresh {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
        }),
        EBGP,
        &rr,
    );
}

fn ebgp_v4_attrs() -> OutboundAttributes {
    OutboundAttributes {
        origin: Origin::Igp,
        as_path: vec![64512],
        next_hop: "192.0.2.1".parse().unwrap(),
        med: None,
        local_pref: None,
        communities: vec![0xfc00_0064],
        large_communities: vec![],
    }
}

#[test]
fn ebgp_ipv4_update() {
    let prefixes: Vec<IpNet> = vec!["198.51.100.10/32".parse().unwrap()];
    let updates = announce_updates(&ebgp_v4_attrs(), &prefixes, true);
    assert_eq!(updates.len(), 1);
    let mut expected = header(55, 2);
    expected.extend(hex("00 00 00 1b \
        40 01 01 00 \
        40 02 06 02 01 00 00 fc 00 \
        40 03 04 c0 00 02 01 \
        c0 08 04 fc 00 00 64 \
        20 c6 33 64 0a"));
    roundtrip(&Message::Update(updates[0].clone()), EBGP, &expected);
}

#[test]
fn ebgp_ipv4_update_two_octet_as_path() {
    let mut attrs = ebgp_v4_attrs();
    attrs.communities.clear();
    attrs.as_path = vec![4_200_000_000];
    let updates = announce_updates(&attrs, &["198.51.100.0/24".parse().unwrap()], false);
    // AS_PATH carries AS_TRANS (5b a0), AS4_PATH the real ASN (RFC 6793 §4.2.2).
    let mut expected = header(54, 2);
    expected.extend(hex("00 00 00 1b \
        40 01 01 00 \
        40 02 04 02 01 5b a0 \
        40 03 04 c0 00 02 01 \
        c0 11 06 02 01 fa 56 ea 00 \
        18 c6 33 64"));
    let bytes = Message::Update(updates[0].clone()).encode(false);
    assert_eq!(bytes, expected);
    let Some((Message::Update(decoded), _)) = decode_frame(&bytes, DecodeContext::default()).unwrap() else {
        panic!("not an UPDATE")
    };
    assert_eq!(
        decoded.attributes[1],
        PathAttribute::AsPath(vec![AsSegment {
            kind: AsSegmentType::Sequence,
            asns: vec![23456]
        }])
    );
}

#[test]
fn ibgp_ipv6_update_and_withdraw() {
    const IBGP: DecodeContext = DecodeContext {
        four_octet_as: true,
        internal: true,
    };
    let attrs = OutboundAttributes {
        origin: Origin::Igp,
        as_path: vec![],
        next_hop: "2001:db8::1".parse().unwrap(),
        med: None,
        local_pref: Some(100),
        communities: vec![],
        large_communities: vec![],
    };
    let prefixes: Vec<IpNet> = vec!["2001:db8:1::/48".parse().unwrap()];
    let updates = announce_updates(&attrs, &prefixes, true);
    let mut expected = header(69, 2);
    expected.extend(hex("00 00 00 2e \
        40 01 01 00 \
        40 02 00 \
        40 05 04 00 00 00 64 \
        90 0e 00 1c 00 02 01 10 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 00 30 20 01 0d b8 00 01"));
    roundtrip(&Message::Update(updates[0].clone()), IBGP, &expected);

    let withdraw = withdraw_updates(&prefixes);
    let mut expected = header(37, 2);
    expected.extend(hex("00 00 00 0e 90 0f 00 0a 00 02 01 30 20 01 0d b8 00 01"));
    roundtrip(&Message::Update(withdraw[0].clone()), IBGP, &expected);
}

#[test]
fn large_community_and_med() {
    let mut attrs = ebgp_v4_attrs();
    attrs.communities.clear();
    attrs.med = Some(10);
    attrs.large_communities = vec![LargeCommunity(64512, 1, 2)];
    let updates = announce_updates(&attrs, &["203.0.113.7/32".parse().unwrap()], true);
    let mut expected = header(70, 2);
    expected.extend(hex("00 00 00 2a \
        40 01 01 00 \
        40 02 06 02 01 00 00 fc 00 \
        40 03 04 c0 00 02 01 \
        80 04 04 00 00 00 0a \
        c0 20 0c 00 00 fc 00 00 00 00 01 00 00 00 02 \
        20 cb 00 71 07"));
    roundtrip(&Message::Update(updates[0].clone()), EBGP, &expected);
}

#[test]
fn end_of_rib_markers() {
    let mut v4 = header(23, 2);
    v4.extend(hex("00 00 00 00"));
    roundtrip(&Message::Update(Update::end_of_rib(Afi::IPV4)), EBGP, &v4);
    let mut v6 = header(30, 2);
    v6.extend(hex("00 00 00 07 90 0f 00 03 00 02 01"));
    roundtrip(&Message::Update(Update::end_of_rib(Afi::IPV6)), EBGP, &v6);
    assert_eq!(Update::end_of_rib(Afi::IPV6).end_of_rib_family(), Some(Afi::IPV6));
    assert_eq!(Update::end_of_rib(Afi::IPV4).end_of_rib_family(), Some(Afi::IPV4));
}

#[test]
fn many_prefixes_pack_into_few_full_messages() {
    // 10,000 IPv6 /128s inside 2001:db8::/32 (17 bytes each in NLRI).
    let prefixes: Vec<IpNet> = (0..10_000u32)
        .map(|i| {
            IpNet::new(
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16).into(),
                128,
            )
            .unwrap()
        })
        .collect();
    let mut attrs = ebgp_v4_attrs();
    attrs.next_hop = "2001:db8::1".parse().unwrap();
    let updates = announce_updates(&attrs, &prefixes, true);
    let mut total = 0;
    for u in &updates {
        let bytes = Message::Update(u.clone()).encode(true);
        assert!(bytes.len() <= 4096, "message of {} bytes", bytes.len());
        assert!(
            bytes.len() > 4096 - 17 || std::ptr::eq(u, updates.last().unwrap()),
            "underfilled message"
        );
        let (decoded, _) = decode_frame(&bytes, EBGP).unwrap().unwrap();
        let Message::Update(d) = decoded else {
            panic!("not an update")
        };
        let Some(PathAttribute::MpReach { nlri, .. }) =
            d.attributes.iter().find(|a| matches!(a, PathAttribute::MpReach { .. }))
        else {
            panic!("no MP_REACH")
        };
        total += nlri.len();
    }
    assert_eq!(total, 10_000);
    // Room for NLRI: 4096 - 19 (header) - 4 (lengths) - 20 (ORIGIN, AS_PATH, COMMUNITIES) - 25 (MP_REACH without
    // NLRI) = 4028 bytes, 236 /128s: 43 messages where one prefix per UPDATE would need 10,000.
    assert_eq!(updates.len(), 43);
}
