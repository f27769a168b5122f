//! netgauze-bgp-pkt, an independent implementation, must decode everything Herald encodes, without ignored errors.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use herald_bgp::fsm::{GracefulRestart, SessionConfig, SessionFsm};
use herald_bgp::packet::update::{announce_updates, withdraw_updates};
use herald_bgp::packet::{
    Afi, CeaseSubcode, ErrorKind, LargeCommunity, Message, Notification, Origin, OutboundAttributes, RouteRefresh,
    Safi, Update,
};
use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::codec::BgpCodec;
use netgauze_bgp_pkt::path_attribute::{MpReach, PathAttributeValue};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingIgnoredErrors;
use tokio_util::codec::Decoder;

fn oracle(bytes: &[u8], four_octet_as: bool) -> BgpMessage {
    let mut codec = BgpCodec::new(four_octet_as);
    let mut buf = BytesMut::from(bytes);
    let (msg, ignored) = codec
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("netgauze rejects {bytes:02x?}: {e}"))
        .expect("complete message");
    assert_eq!(
        ignored,
        BgpParsingIgnoredErrors::default(),
        "netgauze ignored parts of {bytes:02x?}"
    );
    assert!(buf.is_empty(), "netgauze left {} bytes", buf.len());
    msg
}

fn session(gr: bool, asn: u32) -> SessionFsm {
    SessionFsm::new(SessionConfig {
        local_asn: asn,
        router_id: Ipv4Addr::new(192, 0, 2, 10),
        peer_asn: 64500,
        hold_time: 90,
        keepalive_time: None,
        connect_retry_max: herald_bgp::fsm::RETRY_MAX,
        graceful_restart: gr.then_some(GracefulRestart {
            restart_time: 120,
            restarting: true,
        }),
        families: vec![herald_bgp::packet::Afi::IPV4, herald_bgp::packet::Afi::IPV6],
        md5: false,
        connect_timeout: std::time::Duration::from_secs(5),
        jitter_seed: 1,
    })
}

#[test]
fn opens_we_send() {
    for (gr, asn) in [(false, 64512), (true, 64512), (true, 4_200_000_000)] {
        let open = session(gr, asn).open_message();
        let BgpMessage::Open(o) = oracle(&Message::Open(open).encode(true), true) else {
            panic!("not an OPEN")
        };
        assert_eq!(o.hold_time(), 90);
        assert_eq!(o.bgp_id(), Ipv4Addr::new(192, 0, 2, 10));
        let text = format!("{o:?}");
        assert!(text.contains("FourOctetAs"), "{text}");
        assert_eq!(text.contains("GracefulRestart"), gr, "{text}");
    }
}

#[test]
fn small_messages() {
    assert!(matches!(
        oracle(&Message::Keepalive.encode(true), true),
        BgpMessage::KeepAlive
    ));
    for n in [
        Notification::cease(CeaseSubcode::AdministrativeShutdown, "maintenance"),
        Notification::new(ErrorKind::HoldTimerExpired(0)),
        Notification {
            code: 2,
            subcode: 2,
            data: vec![0xfd, 0xe8],
        },
    ] {
        assert!(matches!(
            oracle(&Message::Notification(n).encode(true), true),
            BgpMessage::Notification(_)
        ));
    }
    let rr = Message::RouteRefresh(RouteRefresh {
        afi: Afi::IPV6,
        safi: Safi::UNICAST,
    });
    assert!(matches!(oracle(&rr.encode(true), true), BgpMessage::RouteRefresh(_)));
}

fn attrs(next_hop: &str, ebgp: bool) -> OutboundAttributes {
    OutboundAttributes {
        origin: Origin::Igp,
        as_path: if ebgp { vec![4_200_000_000] } else { vec![] },
        next_hop: next_hop.parse().unwrap(),
        med: Some(5),
        local_pref: (!ebgp).then_some(100),
        communities: vec![0xfc00_0001, 0xfc00_0002],
        large_communities: vec![LargeCommunity(64512, 7, 9)],
    }
}

#[test]
fn updates_we_send() {
    let v4: Vec<IpNet> = (0..768u32)
        .map(|i| {
            let base = [[192, 0, 2], [198, 51, 100], [203, 0, 113]][(i / 256) as usize];
            IpNet::new(Ipv4Addr::new(base[0], base[1], base[2], (i % 256) as u8).into(), 32).unwrap()
        })
        .collect();
    let v6: Vec<IpNet> = (0..2000u16)
        .map(|i| IpNet::new(Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0).into(), 64).unwrap())
        .collect();
    for four in [true, false] {
        for ebgp in [true, false] {
            let mut n4 = 0;
            for u in announce_updates(&attrs("192.0.2.1", ebgp), &v4, four) {
                let BgpMessage::Update(m) = oracle(&Message::Update(u).encode(four), four) else {
                    panic!()
                };
                n4 += m.nlri().len();
            }
            assert_eq!(n4, v4.len());
            let mut n6 = 0;
            for u in announce_updates(&attrs("2001:db8::1", ebgp), &v6, four) {
                let bytes = Message::Update(u).encode(four);
                let BgpMessage::Update(m) = oracle(&bytes, four) else {
                    panic!()
                };
                for a in m.path_attributes() {
                    if let PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                        next_hop_global, nlri, ..
                    }) = a.value()
                    {
                        assert_eq!(*next_hop_global, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
                        n6 += nlri.len();
                    }
                }
            }
            assert_eq!(n6, v6.len());
        }
    }
    let mut w4 = 0;
    for u in withdraw_updates(&v4) {
        let BgpMessage::Update(m) = oracle(&Message::Update(u).encode(true), true) else {
            panic!()
        };
        w4 += m.withdraw_routes().len();
    }
    assert_eq!(w4, v4.len());
    for u in withdraw_updates(&v6) {
        assert!(matches!(
            oracle(&Message::Update(u).encode(true), true),
            BgpMessage::Update(_)
        ));
    }
}

#[test]
fn end_of_rib() {
    for afi in [Afi::IPV4, Afi::IPV6] {
        let BgpMessage::Update(m) = oracle(&Message::Update(Update::end_of_rib(afi)).encode(true), true) else {
            panic!()
        };
        assert!(
            m.end_of_rib().is_some(),
            "netgauze does not see End-of-RIB for AFI {}",
            afi.0
        );
    }
}
