//! The speaker's task shell against a scripted peer on loopback: diffs, route refresh, End-of-RIB, isolation of
//! peers, shutdown.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use herald_bgp::fsm::State;
use herald_bgp::packet::{
    Afi, Capability, DecodeContext, Message, Open, PathAttribute, RouteRefresh, Safi, Update, decode_frame,
};
use herald_bgp::{MalformedUpdates, PeerConfig, RoutePolicy, ShutdownMode, Speaker, SpeakerConfig};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A peer that completes the handshake and then reads what the speaker sends.
struct ScriptedPeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl ScriptedPeer {
    async fn accept(listener: &TcpListener, asn: u32) -> ScriptedPeer {
        let (stream, _) = timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("speaker connects")
            .unwrap();
        let mut peer = ScriptedPeer {
            stream,
            buf: Vec::new(),
        };
        let Message::Open(open) = peer.recv().await else {
            panic!("first message is not an OPEN")
        };
        assert_eq!(open.asn(), 64512);
        let ours = Open {
            version: 4,
            my_as: asn as u16,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                },
                Capability::RouteRefresh,
                Capability::FourOctetAs(asn),
            ],
        };
        peer.send(Message::Open(ours)).await;
        peer.send(Message::Keepalive).await;
        assert_eq!(peer.recv().await, Message::Keepalive);
        peer
    }

    async fn send(&mut self, msg: Message) {
        self.send_raw(&msg.encode(true)).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn recv(&mut self) -> Message {
        loop {
            if let Some((msg, n)) = decode_frame(
                &self.buf,
                DecodeContext {
                    four_octet_as: true,
                    internal: false,
                },
            )
            .expect("speaker sends valid messages")
            {
                self.buf.drain(..n);
                return msg;
            }
            let n = timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                .await
                .expect("speaker sends something")
                .unwrap();
            assert!(n > 0, "speaker closed the connection");
        }
    }

    /// The next UPDATE, skipping keepalives.
    async fn update(&mut self) -> Update {
        loop {
            match self.recv().await {
                Message::Update(u) => return u,
                Message::Keepalive => {}
                other => panic!("expected an UPDATE, got {other:?}"),
            }
        }
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nlri(u: &Update) -> Vec<String> {
    u.nlri.iter().map(ToString::to_string).collect()
}

async fn established(speaker: &Speaker, addr: IpAddr) {
    let mut status = speaker.watch_peer(addr).unwrap();
    timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.state == State::Established),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn announces_diffs_resends_on_refresh_and_ceases_on_shutdown() {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let mut speaker = speaker_as_64512();
    let policy = RoutePolicy {
        communities: vec![0xfc00_0064],
        ..RoutePolicy::default()
    };
    speaker.announce(
        [net("203.0.113.1/32"), net("203.0.113.2/32"), net("2001:db8::/64")],
        policy.clone(),
    );
    let mut config = PeerConfig::new(IpAddr::V4(LOCAL), 64500);
    config.port = listener.local_addr().unwrap().port();
    speaker.add_peer(config).unwrap();

    let mut peer = ScriptedPeer::accept(&listener, 64500).await;
    // The whole table in one UPDATE (the peer did not negotiate IPv6: that prefix is skipped), then End-of-RIB.
    let first = peer.update().await;
    assert_eq!(nlri(&first), ["203.0.113.1/32", "203.0.113.2/32"]);
    assert!(
        first.attributes.contains(&PathAttribute::NextHop(LOCAL)),
        "next hop is the session's source address"
    );
    assert!(
        first
            .attributes
            .contains(&PathAttribute::Communities(vec![0xfc00_0064]))
    );
    assert_eq!(peer.update().await.end_of_rib_family(), Some(Afi::IPV4));
    established(&speaker, IpAddr::V4(LOCAL)).await;

    // Only the difference goes out.
    speaker.announce([net("203.0.113.3/32")], policy.clone());
    assert_eq!(nlri(&peer.update().await), ["203.0.113.3/32"]);
    speaker.withdraw([net("203.0.113.1/32")]);
    let w = peer.update().await;
    assert_eq!(w.withdrawn, vec!["203.0.113.1/32".parse().unwrap()]);
    assert!(w.nlri.is_empty());

    // A changed policy re-announces with the new attributes.
    speaker.announce(
        [net("203.0.113.2/32")],
        RoutePolicy {
            med: Some(7),
            ..RoutePolicy::default()
        },
    );
    let changed = peer.update().await;
    assert_eq!(nlri(&changed), ["203.0.113.2/32"]);
    assert!(changed.attributes.contains(&PathAttribute::MultiExitDisc(7)));

    // RFC 2918: a route refresh brings every route again.
    peer.send(Message::RouteRefresh(RouteRefresh {
        afi: Afi::IPV4,
        safi: Safi::UNICAST,
    }))
    .await;
    let mut again = Vec::new();
    again.extend(nlri(&peer.update().await));
    again.extend(nlri(&peer.update().await));
    again.sort();
    assert_eq!(again, ["203.0.113.2/32", "203.0.113.3/32"]);

    let status = &speaker.peers()[0];
    assert_eq!(status.prefixes_sent, 2);
    assert_eq!(status.established_count, 1);
    assert!(status.updates_sent >= 6);
    assert!(status.uptime().is_some());

    // A clean stop withdraws every route first, then sends the Cease.
    speaker.shutdown(ShutdownMode::Withdraw).await;
    let mut withdrawn = Vec::new();
    loop {
        match peer.recv().await {
            Message::Keepalive => {}
            Message::Update(u) => {
                assert!(u.nlri.is_empty(), "only withdrawals: {u:?}");
                withdrawn.extend(u.withdrawn);
            }
            Message::Notification(n) => {
                assert_eq!((n.code, n.subcode), (6, 2));
                break;
            }
            other => panic!("expected withdrawals, then the Cease; got {other:?}"),
        }
    }
    withdrawn.sort();
    assert_eq!(
        withdrawn,
        ["203.0.113.2/32".parse().unwrap(), "203.0.113.3/32".parse().unwrap()],
        "every route withdrawn before the Cease"
    );
}

/// An UPDATE as the router would send it: header, withdrawn routes, path attributes and NLRI, all hex.
fn raw_update(attributes: &str, nlri: &str) -> Vec<u8> {
    let hex = |s: &str| -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    };
    let (attributes, nlri) = (hex(attributes), hex(nlri));
    let len = 19 + 4 + attributes.len() + nlri.len();
    let mut v = vec![0xff; 16];
    v.extend((len as u16).to_be_bytes());
    v.extend([2, 0, 0]);
    v.extend((attributes.len() as u16).to_be_bytes());
    v.extend(attributes);
    v.extend(nlri);
    v
}

/// RFC 7606: malformed UPDATEs that may be handled without a reset leave the session up and our routes announced,
/// and are counted per approach; the one that must reset the session (§5.2) still does.
#[tokio::test]
async fn malformed_updates_keep_the_session_where_rfc_7606_allows() {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let mut speaker = speaker_as_64512();
    speaker.announce([net("203.0.113.1/32")], RoutePolicy::default());
    let mut config = PeerConfig::new(IpAddr::V4(LOCAL), 64500);
    config.port = listener.local_addr().unwrap().port();
    speaker.add_peer(config).unwrap();
    let mut peer = ScriptedPeer::accept(&listener, 64500).await;
    assert_eq!(nlri(&peer.update().await), ["203.0.113.1/32"]);
    assert_eq!(peer.update().await.end_of_rib_family(), Some(Afi::IPV4));

    let mandatory = "40 01 01 00 40 02 06 02 01 00 00 fb f4 40 03 04 c0 00 02 01";
    // Treat-as-withdraw (§4): COMMUNITIES claims 8 bytes where 2 are left, and stray bytes after the last attribute.
    peer.send_raw(&raw_update(&format!("{mandatory} c0 08 08 00 00"), "18 c6 33 64"))
        .await;
    peer.send_raw(&raw_update(&format!("{mandatory} 00 00"), "18 c6 33 64"))
        .await;
    // Attribute discard (§7.6): ATOMIC_AGGREGATE of length 1.
    peer.send_raw(&raw_update(&format!("{mandatory} 40 06 01 00"), "18 c6 33 64"))
        .await;
    // AFI/SAFI disable (§7.11): MP_REACH_NLRI with a 5-byte IPv6 next hop.
    peer.send_raw(&raw_update(
        "40 01 01 00 40 02 00 90 0e 00 0a 00 02 01 05 20 01 0d b8 00 00",
        "",
    ))
    .await;
    // Still up and answering: a route refresh brings our route again.
    peer.send(Message::RouteRefresh(RouteRefresh {
        afi: Afi::IPV4,
        safi: Safi::UNICAST,
    }))
    .await;
    assert_eq!(nlri(&peer.update().await), ["203.0.113.1/32"]);
    let status = speaker.peers().remove(0);
    assert_eq!(status.state, State::Established);
    assert_eq!(status.established_count, 1, "the session never flapped");
    assert_eq!(status.notifications_sent, 0);
    assert_eq!(
        status.malformed_updates,
        MalformedUpdates {
            treat_as_withdraw: 2,
            attribute_discard: 1,
            afi_safi_disable: 1,
        }
    );
    assert_eq!(
        status.last_malformed_update.as_deref(),
        Some("AFI/SAFI disable (AFI 2, SAFI 1): malformed MP_REACH_NLRI: a next hop of 5 bytes for AFI 2 SAFI 1")
    );

    // §5.2: the same overrun in an UPDATE that announces nothing still resets, with Attribute Length Error.
    peer.send_raw(&raw_update("40 01 01 00 c0 08 08 00 00", "")).await;
    loop {
        match peer.recv().await {
            Message::Keepalive => {}
            Message::Notification(n) => {
                assert_eq!((n.code, n.subcode, n.data), (3, 5, vec![0xc0, 0x08, 0x08]));
                break;
            }
            other => panic!("expected the NOTIFICATION, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn changing_one_peer_leaves_the_other_session_alone() {
    let a = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let b = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).await.unwrap();
    let mut speaker = speaker_as_64512();
    speaker.announce([net("203.0.113.1/32")], RoutePolicy::default());
    let mut pa = PeerConfig::new(IpAddr::V4(LOCAL), 64500);
    pa.port = a.local_addr().unwrap().port();
    let mut pb = PeerConfig::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 64501);
    pb.port = b.local_addr().unwrap().port();
    speaker.add_peer(pa.clone()).unwrap();
    speaker.add_peer(pb.clone()).unwrap();
    let mut peer_a = ScriptedPeer::accept(&a, 64500).await;
    let mut peer_b = ScriptedPeer::accept(&b, 64501).await;
    peer_a.update().await;
    peer_b.update().await;

    // Re-applying the same configuration changes nothing; a new hold time restarts only peer b.
    speaker.set_peer(pa.clone()).await.unwrap();
    pb.hold_time = 30;
    speaker.set_peer(pb).await.unwrap();
    loop {
        match peer_b.recv().await {
            Message::Notification(n) => {
                assert_eq!((n.code, n.subcode), (6, 6), "Cease / Other Configuration Change");
                break;
            }
            _ => continue,
        }
    }
    let mut peer_b = ScriptedPeer::accept(&b, 64501).await;
    peer_b.update().await;
    established(&speaker, pa.address).await;
    let status = speaker.peers();
    assert_eq!(status[0].established_count, 1, "peer a never flapped");
    assert_eq!(status[0].state, State::Established);

    // Peer a saw nothing but keepalives meanwhile (its End-of-RIB was read above with the first UPDATE).
    peer_a.send(Message::Keepalive).await;
    speaker.remove_peer(pa.address).await.unwrap();
    loop {
        match peer_a.recv().await {
            Message::Keepalive => {}
            // Removal withdraws the routes, then closes.
            Message::Update(u) => {
                assert!(
                    u.end_of_rib_family().is_some() || (u.nlri.is_empty() && !u.withdrawn.is_empty()),
                    "unexpected UPDATE {u:?}"
                )
            }
            Message::Notification(n) => {
                assert_eq!((n.code, n.subcode), (6, 3), "Cease / Peer De-configured");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn invalid_peer_configuration_is_rejected_with_the_fix() {
    let mut speaker = speaker_as_64512();
    let mut p = PeerConfig::new("192.0.2.1".parse().unwrap(), 64500);
    p.hold_time = 2;
    let err = speaker.add_peer(p.clone()).unwrap_err().to_string();
    assert!(err.contains("use 0 or at least 3"), "{err}");
    p.hold_time = 90;
    p.password = Some(vec![b'x'; 81]);
    assert!(
        speaker
            .add_peer(p.clone())
            .unwrap_err()
            .to_string()
            .contains("1 to 80 bytes")
    );
    p.password = None;
    // BFD: timers that could never run, and a multihop session (BFD here is single hop).
    let ms = std::time::Duration::from_millis;
    for (timers, ttl, fix) in [
        ((ms(300), ms(300), 0), None, "use 1 to 255"),
        ((ms(0), ms(300), 3), None, "above 0"),
        ((ms(300), ms(300), 3), Some(3), "BFD runs single hop"),
    ] {
        let bad = PeerConfig {
            bfd: Some(herald_bfd::Timers {
                desired_min_tx: timers.0,
                required_min_rx: timers.1,
                detect_mult: timers.2,
            }),
            ttl,
            ..p.clone()
        };
        let err = speaker.add_peer(bad).unwrap_err().to_string();
        assert!(err.contains(fix), "{err}");
    }
    speaker.add_peer(p.clone()).unwrap();
    assert!(
        speaker
            .add_peer(p)
            .unwrap_err()
            .to_string()
            .contains("already configured")
    );
}

/// A port nothing listens on (bound once, then released).
async fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0)).await.unwrap().local_addr().unwrap().port()
}

/// The router's side of the handshake on `stream`: reads our OPEN, answers with `families`, returns our OPEN.
async fn handshake(stream: TcpStream, asn: u32, families: &[Afi]) -> (ScriptedPeer, Open) {
    let mut peer = ScriptedPeer {
        stream,
        buf: Vec::new(),
    };
    let Message::Open(theirs) = peer.recv().await else {
        panic!("first message is not an OPEN")
    };
    let mut capabilities: Vec<Capability> = families
        .iter()
        .map(|&afi| Capability::Multiprotocol {
            afi,
            safi: Safi::UNICAST,
        })
        .collect();
    capabilities.push(Capability::FourOctetAs(asn));
    let ours = Open {
        version: 4,
        my_as: asn as u16,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities,
    };
    peer.send(Message::Open(ours)).await;
    peer.send(Message::Keepalive).await;
    assert_eq!(peer.recv().await, Message::Keepalive);
    (peer, theirs)
}

#[tokio::test]
async fn passive_peer_connection_is_accepted_and_strangers_are_closed() {
    let mut speaker = speaker_as_64512();
    speaker.announce([net("203.0.113.1/32")], RoutePolicy::default());
    let mut config = PeerConfig::new(IpAddr::V4(LOCAL), 64500);
    // Our connects are refused: only the router's connection can carry the session.
    config.port = free_port(LOCAL).await;
    config.passive = true;
    config.listen_port = free_port(LOCAL).await;
    config.local_address = Some(IpAddr::V4(LOCAL));
    speaker.add_peer(config.clone()).unwrap();

    // An address that is not a peer gets its connection closed without a word.
    let stranger = tokio::net::TcpSocket::new_v4().unwrap();
    stranger.bind((Ipv4Addr::new(127, 0, 0, 2), 0).into()).unwrap();
    let mut stranger = stranger
        .connect((LOCAL, config.listen_port).into())
        .await
        .expect("the speaker listens");
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_secs(10), stranger.read(&mut byte))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a stranger's connection is closed: {read:?}"
    );

    let stream = TcpStream::connect((LOCAL, config.listen_port)).await.unwrap();
    let (mut peer, open) = handshake(stream, 64500, &[Afi::IPV4]).await;
    assert_eq!(open.asn(), 64512);
    assert_eq!(nlri(&peer.update().await), ["203.0.113.1/32"]);
    assert_eq!(peer.update().await.end_of_rib_family(), Some(Afi::IPV4));
    established(&speaker, config.address).await;

    // A second connection from the router while its first one is up is closed; the session stays.
    let mut second = TcpStream::connect((LOCAL, config.listen_port)).await.unwrap();
    let read = timeout(Duration::from_secs(10), second.read(&mut byte)).await.unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the second connection is closed: {read:?}"
    );
    speaker.announce([net("203.0.113.2/32")], RoutePolicy::default());
    assert_eq!(
        nlri(&peer.update().await),
        ["203.0.113.2/32"],
        "the first session is still up"
    );
    assert_eq!(speaker.peers()[0].established_count, 1);

    // Removing the last passive peer closes the listening socket.
    speaker.remove_peer(config.address).await.unwrap();
    let refused = timeout(Duration::from_secs(10), TcpStream::connect((LOCAL, config.listen_port)))
        .await
        .unwrap();
    assert!(refused.is_err(), "still listening after the peer was removed");
}

#[tokio::test]
async fn families_and_local_asn_are_per_peer() {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let mut speaker = speaker_as_64512();
    speaker.announce(
        [net("203.0.113.1/32"), net("2001:db8:10::/64")],
        RoutePolicy {
            next_hop: None,
            ..RoutePolicy::default()
        },
    );
    let mut config = PeerConfig::new(IpAddr::V4(LOCAL), 64500);
    config.port = listener.local_addr().unwrap().port();
    config.families = vec![Afi::IPV4];
    config.local_asn = Some(65001);
    // An IPv6 next hop would let IPv6 prefixes go out on this IPv4 session, were IPv6 configured.
    config.next_hop_v6 = Some("2001:db8::11".parse().unwrap());
    speaker.add_peer(config).unwrap();

    let (stream, _) = timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (mut peer, open) = handshake(stream, 64500, &[Afi::IPV4, Afi::IPV6]).await;
    assert_eq!(open.asn(), 65001, "the peer's local ASN, not the speaker's");
    let offered: Vec<Afi> = open
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol { afi, .. } => Some(*afi),
            _ => None,
        })
        .collect();
    assert_eq!(offered, [Afi::IPV4]);
    let first = peer.update().await;
    assert_eq!(nlri(&first), ["203.0.113.1/32"]);
    assert!(
        first.attributes.iter().any(|a| matches!(
            a,
            PathAttribute::AsPath(segments) if segments.len() == 1 && segments[0].asns == [65001]
        )),
        "AS_PATH is the peer's local ASN: {:?}",
        first.attributes
    );
    assert_eq!(peer.update().await.end_of_rib_family(), Some(Afi::IPV4));
    established(&speaker, IpAddr::V4(LOCAL)).await;
    // Nothing IPv6 follows: the next message after a new IPv4 route is that route.
    speaker.announce([net("2001:db8:11::/64"), net("203.0.113.2/32")], RoutePolicy::default());
    let next = peer.update().await;
    assert_eq!(nlri(&next), ["203.0.113.2/32"]);
    assert!(
        !next
            .attributes
            .iter()
            .any(|a| matches!(a, PathAttribute::MpReach { .. })),
        "no IPv6 route: {next:?}"
    );
    assert_eq!(speaker.peers()[0].prefixes_sent, 2);
    speaker.shutdown(ShutdownMode::Withdraw).await;
}

#[tokio::test]
async fn established_session_wins_over_the_peers_new_connection() {
    let router = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let mut speaker = speaker_as_64512();
    speaker.announce([net("203.0.113.1/32")], RoutePolicy::default());
    let mut config = PeerConfig::new(IpAddr::V4(LOCAL), 64500);
    config.port = router.local_addr().unwrap().port();
    config.passive = true;
    config.listen_port = free_port(LOCAL).await;
    speaker.add_peer(config.clone()).unwrap();
    let mut peer = ScriptedPeer::accept(&router, 64500).await;
    peer.update().await;
    assert_eq!(peer.update().await.end_of_rib_family(), Some(Afi::IPV4));
    established(&speaker, config.address).await;

    // RFC 4271 §6.8: the router connecting to us now gets Cease / Connection Collision Resolution.
    let mut late = ScriptedPeer {
        stream: TcpStream::connect((LOCAL, config.listen_port)).await.unwrap(),
        buf: Vec::new(),
    };
    match late.recv().await {
        Message::Notification(n) => assert_eq!((n.code, n.subcode), (6, 7)),
        other => panic!("expected Cease 6/7, got {other:?}"),
    }
    speaker.announce([net("203.0.113.2/32")], RoutePolicy::default());
    let update = peer.update().await;
    assert_eq!(nlri(&update), ["203.0.113.2/32"], "the session is untouched");
    assert_eq!(speaker.peers()[0].established_count, 1);
}

#[tokio::test]
async fn passive_peer_that_cannot_listen_is_refused_with_the_reason() {
    let taken = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let mut speaker = speaker_as_64512();
    let mut config = PeerConfig::new(IpAddr::V4(LOCAL), 64500);
    config.passive = true;
    config.local_address = Some(IpAddr::V4(LOCAL));
    config.listen_port = taken.local_addr().unwrap().port();
    let err = speaker.add_peer(config).unwrap_err().to_string();
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(speaker.peers().is_empty());
}

/// A speaker in AS 64512 with router id 192.0.2.11 (the router side of these tests is AS 64500).
fn speaker_as_64512() -> Speaker {
    Speaker::new(SpeakerConfig {
        local_asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 11),
    })
}

fn passive_peer(address: Ipv4Addr, local: Option<Ipv4Addr>, port: u16) -> PeerConfig {
    let mut config = PeerConfig::new(IpAddr::V4(address), 64500);
    config.passive = true;
    config.local_address = local.map(IpAddr::V4);
    config.listen_port = port;
    config
}

#[tokio::test]
async fn passive_peers_needing_a_wildcard_and_a_specific_listener_are_refused_clearly() {
    let port = free_port(LOCAL).await;
    let mut speaker = speaker_as_64512();
    speaker
        .add_peer(passive_peer(Ipv4Addr::new(127, 0, 0, 2), None, port))
        .unwrap();
    let err = speaker
        .add_peer(passive_peer(Ipv4Addr::new(127, 0, 0, 3), Some(LOCAL), port))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already listen on 0.0.0.0:") && err.contains("same source address"),
        "{err}"
    );
    assert_eq!(speaker.peers().len(), 1, "the first peer is untouched");
}

#[tokio::test]
async fn a_removed_passive_peer_frees_its_port() {
    let port = free_port(LOCAL).await;
    let mut speaker = speaker_as_64512();
    let peer = passive_peer(Ipv4Addr::new(127, 0, 0, 2), Some(LOCAL), port);
    for round in 0..20 {
        speaker
            .add_peer(peer.clone())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        speaker.remove_peer(peer.address).await.unwrap();
    }
}

fn router_open(id: Ipv4Addr) -> Message {
    Message::Open(Open {
        version: 4,
        my_as: 64500,
        hold_time: 90,
        bgp_id: id,
        capabilities: vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::FourOctetAs(64500),
        ],
    })
}

/// Both sides connect (RFC 4271 §6.8): the router answers the speaker's connection with its OPEN but no KEEPALIVE
/// (the speaker waits in OpenConfirm), then opens its own connection and sends its OPEN there. The speaker keeps the
/// connection opened by the side with the higher BGP identifier and ceases the other with 6/7.
#[tokio::test]
async fn collision_keeps_the_connection_opened_by_the_higher_identifier() {
    for (router_id, ours_kept) in [
        (Ipv4Addr::new(192, 0, 2, 1), true),
        (Ipv4Addr::new(203, 0, 113, 1), false),
    ] {
        let router = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let mut speaker = speaker_as_64512();
        speaker.announce([net("203.0.113.1/32")], RoutePolicy::default());
        let mut config = PeerConfig::new(IpAddr::V4(LOCAL), 64500);
        config.port = router.local_addr().unwrap().port();
        config.passive = true;
        config.listen_port = free_port(LOCAL).await;
        speaker.add_peer(config.clone()).unwrap();

        let (stream, _) = timeout(Duration::from_secs(10), router.accept())
            .await
            .unwrap()
            .unwrap();
        let mut ours = ScriptedPeer {
            stream,
            buf: Vec::new(),
        };
        assert!(matches!(ours.recv().await, Message::Open(_)));
        ours.send(router_open(router_id)).await;
        assert_eq!(ours.recv().await, Message::Keepalive, "the speaker is in OpenConfirm");

        let mut theirs = ScriptedPeer {
            stream: TcpStream::connect((LOCAL, config.listen_port)).await.unwrap(),
            buf: Vec::new(),
        };
        assert!(
            matches!(theirs.recv().await, Message::Open(_)),
            "the router's connection gets an OPEN too"
        );
        theirs.send(router_open(router_id)).await;

        let (mut kept, mut ceased) = if ours_kept { (ours, theirs) } else { (theirs, ours) };
        match ceased.recv().await {
            Message::Notification(n) => assert_eq!(
                (n.code, n.subcode),
                (6, 7),
                "router id {router_id}: Cease / Connection Collision Resolution"
            ),
            other => panic!("router id {router_id}: expected Cease 6/7 on the losing connection, got {other:?}"),
        }
        if !ours_kept {
            assert_eq!(
                kept.recv().await,
                Message::Keepalive,
                "OPEN answered on the kept connection"
            );
        }
        kept.send(Message::Keepalive).await;
        assert_eq!(nlri(&kept.update().await), ["203.0.113.1/32"]);
        established(&speaker, config.address).await;
        assert_eq!(speaker.peers()[0].established_count, 1);
        speaker.shutdown(ShutdownMode::Withdraw).await;
    }
}
