//! Event scripts: each test feeds events and checks the actions and states that come out.

use super::*;
use crate::packet::wire::AS_TRANS;
use crate::packet::{Capability, CeaseSubcode, ErrorHandling, Malformed, Open, RouteRefresh, Update};

const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUT: Direction = Direction::Outgoing;
const IN: Direction = Direction::Incoming;

fn config() -> SessionConfig {
    SessionConfig {
        local_asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 11),
        peer_asn: 64500,
        hold_time: 90,
        keepalive_time: None,
        connect_retry_max: RETRY_MAX,
        graceful_restart: None,
        families: vec![Afi::IPV4, Afi::IPV6],
        md5: false,
        connect_timeout: Duration::from_secs(5),
        jitter_seed: 7,
    }
}

/// Keepalives every third of the negotiated hold time, or every configured interval when that is shorter (a longer
/// one would let the peer's hold timer expire); none with a hold time of 0.
#[test]
fn the_keepalive_interval_is_the_configured_one_capped_by_a_third_of_the_hold_time() {
    let negotiated = |hold_time: u16, keepalive_time: Option<u16>| Negotiated {
        peer_asn: 64500,
        peer_id: Ipv4Addr::new(192, 0, 2, 1),
        hold_time,
        keepalive_time,
        four_octet_as: true,
        families: vec![Afi::IPV4],
        route_refresh: true,
        peer_graceful_restart: false,
    };
    let secs = Duration::from_secs;
    assert_eq!(negotiated(90, None).keepalive_interval(), Some(secs(30)));
    assert_eq!(negotiated(90, Some(10)).keepalive_interval(), Some(secs(10)));
    assert_eq!(
        negotiated(9, Some(10)).keepalive_interval(),
        Some(secs(3)),
        "capped by hold/3"
    );
    assert_eq!(
        negotiated(90, Some(0)).keepalive_interval(),
        Some(secs(30)),
        "0 means the default"
    );
    assert_eq!(negotiated(0, Some(10)).keepalive_interval(), None);
}

/// Connection attempts back off from 1 s up to the configured longest pause (BgpPeer `connectRetryTime`).
#[test]
fn connect_retries_back_off_up_to_the_configured_pause() {
    let mut backoff = RetryBackoff::new(3, Duration::from_secs(5));
    let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
    assert!(delays[0] <= Duration::from_secs(1), "{delays:?}");
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)), "{delays:?}");
    assert!(
        delays[6] >= Duration::from_millis(3750),
        "reaches the cap (jitter 75-100 %): {delays:?}"
    );
}

fn peer_open(asn: u32, hold_time: u16) -> Open {
    Open {
        version: 4,
        my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
        hold_time,
        bgp_id: PEER_ID,
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
            Capability::FourOctetAs(asn),
        ],
    }
}

fn sent_notification(actions: &[Action]) -> Option<(u8, u8)> {
    actions.iter().find_map(|a| match a {
        Action::Send(_, Message::Notification(n)) => Some((n.code, n.subcode)),
        _ => None,
    })
}

fn retry_armed(actions: &[Action]) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::ArmTimer(Timer::ConnectRetry, d) => Some(*d),
        _ => None,
    })
}

/// Drives a fresh FSM to OpenSent.
fn open_sent(config: SessionConfig) -> SessionFsm {
    let mut fsm = SessionFsm::new(config);
    fsm.handle(Event::Start);
    fsm.handle(Event::TcpConnected);
    assert_eq!(fsm.state(), State::OpenSent);
    fsm
}

fn established() -> SessionFsm {
    let mut fsm = open_sent(config());
    fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, 30))));
    fsm.handle(Event::Message(OUT, Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
    fsm
}

#[test]
fn happy_path_to_established() {
    let mut fsm = SessionFsm::new(config());
    let a = fsm.handle(Event::Start);
    assert_eq!(a[0], Action::Connect);
    assert_eq!(a[1], Action::ArmTimer(Timer::ConnectRetry, Duration::from_secs(5)));
    assert_eq!(fsm.state(), State::Connect);

    let a = fsm.handle(Event::TcpConnected);
    assert!(matches!(&a[1], Action::Send(OUT, Message::Open(o)) if o.hold_time == 90 && o.asn() == 64512));
    assert!(a.contains(&Action::ArmTimer(Timer::Hold, OPEN_HOLD_TIME)));
    assert_eq!(fsm.state(), State::OpenSent);

    // RFC 4271 §4.2: hold time is the smaller of both; keepalives every third of it.
    let a = fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, 30))));
    assert_eq!(a[0], Action::Send(OUT, Message::Keepalive));
    assert!(a.contains(&Action::ArmTimer(Timer::Hold, Duration::from_secs(30))));
    assert!(a.contains(&Action::ArmTimer(Timer::Keepalive, Duration::from_secs(10))));
    assert_eq!(fsm.state(), State::OpenConfirm);

    let a = fsm.handle(Event::Message(OUT, Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
    let Some(Action::Established(n)) = a.iter().find(|a| matches!(a, Action::Established(_))) else {
        panic!("no Established action: {a:?}")
    };
    assert_eq!(n.families, vec![Afi::IPV4, Afi::IPV6]);
    assert!(n.four_octet_as && n.route_refresh && !n.peer_graceful_restart);
    assert_eq!(n.hold_time, 30);
}

#[test]
fn hold_time_zero_means_no_timers() {
    let mut fsm = open_sent(config());
    let a = fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, 0))));
    assert!(a.contains(&Action::CancelTimer(Timer::Hold)));
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::ArmTimer(Timer::Keepalive | Timer::Hold, _)))
    );
    assert_eq!(fsm.negotiated().unwrap().hold_time, 0);
}

#[test]
fn unacceptable_hold_time() {
    for hold in [1, 2] {
        let mut fsm = open_sent(config());
        let a = fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, hold))));
        assert_eq!(sent_notification(&a), Some((2, 6)));
        assert!(a.contains(&Action::CloseTcp(OUT)));
        assert_eq!(fsm.state(), State::Idle);
        assert!(retry_armed(&a).is_some(), "a failed session is retried");
    }
}

#[test]
fn bad_peer_as() {
    let mut fsm = open_sent(config());
    let a = fsm.handle(Event::Message(OUT, Message::Open(peer_open(64999, 90))));
    assert_eq!(sent_notification(&a), Some((2, 2)));
    assert!(
        fsm.last_error()
            .unwrap()
            .contains("peer is AS 64999, configured peer ASN is 64500")
    );
}

#[test]
fn bad_bgp_identifier() {
    let mut open = peer_open(64500, 90);
    open.bgp_id = Ipv4Addr::UNSPECIFIED;
    let mut fsm = open_sent(config());
    assert_eq!(
        sent_notification(&fsm.handle(Event::Message(OUT, Message::Open(open)))),
        Some((2, 3))
    );

    // iBGP with our own identifier (RFC 6286 §2.2).
    let mut ibgp = config();
    ibgp.peer_asn = 64512;
    let mut open = peer_open(64512, 90);
    open.bgp_id = ibgp.router_id;
    let mut fsm = open_sent(ibgp);
    assert_eq!(
        sent_notification(&fsm.handle(Event::Message(OUT, Message::Open(open)))),
        Some((2, 3))
    );
}

#[test]
fn four_octet_peer_without_capability_is_unsupported_capability() {
    let mut c = config();
    c.peer_asn = 4_200_000_000;
    let mut open = peer_open(4_200_000_000, 90);
    open.capabilities.retain(|c| !matches!(c, Capability::FourOctetAs(_)));
    let mut fsm = open_sent(c);
    let a = fsm.handle(Event::Message(OUT, Message::Open(open)));
    assert_eq!(sent_notification(&a), Some((2, 7)));
    let data = a.iter().find_map(|a| match a {
        Action::Send(OUT, Message::Notification(n)) => Some(n.data.clone()),
        _ => None,
    });
    assert_eq!(
        data,
        Some(vec![65, 4, 0xfa, 0x56, 0xea, 0x00]),
        "data names the capability"
    );
}

#[test]
fn peer_without_mp_capabilities_gets_ipv4_only() {
    let mut open = peer_open(64500, 90);
    open.capabilities
        .retain(|c| !matches!(c, Capability::Multiprotocol { .. }));
    let mut fsm = open_sent(config());
    fsm.handle(Event::Message(OUT, Message::Open(open)));
    assert_eq!(fsm.negotiated().unwrap().families, vec![Afi::IPV4]);
}

#[test]
fn keepalive_timer_sends_keepalive_and_rearms() {
    let mut fsm = established();
    let a = fsm.handle(Event::TimerExpired(Timer::Keepalive));
    assert_eq!(
        a,
        vec![
            Action::Send(OUT, Message::Keepalive),
            Action::ArmTimer(Timer::Keepalive, Duration::from_secs(10))
        ]
    );
}

#[test]
fn messages_restart_the_hold_timer() {
    let mut fsm = established();
    for msg in [Message::Keepalive, Message::Update(Update::default())] {
        let a = fsm.handle(Event::Message(OUT, msg));
        assert!(a.contains(&Action::ArmTimer(Timer::Hold, Duration::from_secs(30))));
    }
}

#[test]
fn hold_timer_expiry_sends_notification_and_resets() {
    let mut fsm = established();
    let a = fsm.handle(Event::TimerExpired(Timer::Hold));
    assert_eq!(sent_notification(&a), Some((4, 0)));
    assert!(a.iter().any(|a| matches!(a, Action::SessionDown { .. })));
    assert!(a.contains(&Action::CancelTimer(Timer::Keepalive)));
    assert_eq!(fsm.state(), State::Idle);
    assert!(fsm.last_error().unwrap().contains("hold timer expired"));
    let retry = retry_armed(&a).expect("retry armed");
    assert!(retry >= Duration::from_millis(750) && retry <= Duration::from_secs(1));
    // The retry timer brings it back to Connect.
    assert_eq!(fsm.handle(Event::TimerExpired(Timer::ConnectRetry))[0], Action::Connect);
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn bfd_down_ends_the_session_with_cease_bfd_down_and_retries() {
    let mut fsm = established();
    let a = fsm.handle(Event::BfdDown("Control Detection Time Expired".into()));
    // Cease (6) / BFD Down (10), RFC 9384.
    assert_eq!(sent_notification(&a), Some((6, 10)));
    assert!(a.iter().any(|a| matches!(a, Action::SessionDown { .. })));
    assert_eq!(fsm.state(), State::Idle);
    let why = fsm.last_error().unwrap();
    assert!(why.contains("BFD went down (Control Detection Time Expired)"), "{why}");
    assert!(
        retry_armed(&a).is_some(),
        "the session must come back when the path does"
    );
    // Before a session is up there is nothing to take down.
    let mut idle = SessionFsm::new(config());
    idle.handle(Event::Start);
    assert!(idle.handle(Event::BfdDown("x".into())).is_empty());
    assert_eq!(idle.state(), State::Connect);
}

#[test]
fn hold_timer_in_open_sent() {
    let mut fsm = open_sent(config());
    assert_eq!(
        sent_notification(&fsm.handle(Event::TimerExpired(Timer::Hold))),
        Some((4, 0))
    );
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    // RFC 6608: subcode 1 in OpenSent, 2 in OpenConfirm, 3 in Established.
    let mut fsm = open_sent(config());
    assert_eq!(
        sent_notification(&fsm.handle(Event::Message(OUT, Message::Keepalive))),
        Some((5, 1))
    );

    let mut fsm = open_sent(config());
    fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, 90))));
    assert_eq!(fsm.state(), State::OpenConfirm);
    assert_eq!(
        sent_notification(&fsm.handle(Event::Message(OUT, Message::Update(Update::default())))),
        Some((5, 2))
    );

    let mut fsm = established();
    let a = fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, 90))));
    assert_eq!(sent_notification(&a), Some((5, 3)));
    assert!(a.iter().any(|a| matches!(a, Action::SessionDown { .. })));
}

#[test]
fn received_notification_closes_without_answer() {
    let mut fsm = established();
    let a = fsm.handle(Event::Message(
        OUT,
        Message::Notification(Notification::cease(CeaseSubcode::AdministrativeShutdown, "maintenance")),
    ));
    assert_eq!(sent_notification(&a), None, "never answer a NOTIFICATION with one");
    assert!(a.contains(&Action::CloseTcp(OUT)));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(
        fsm.last_error(),
        Some("peer sent NOTIFICATION Cease / Administrative Shutdown (6/2): maintenance")
    );
}

#[test]
fn decode_errors_send_their_notification() {
    let mut fsm = established();
    let err = crate::packet::decode_frame(&[0u8; 19], crate::packet::DecodeContext::default()).unwrap_err();
    let a = fsm.handle(Event::DecodeFailed(OUT, err));
    assert_eq!(sent_notification(&a), Some((1, 1)));
    assert!(fsm.last_error().unwrap().contains("marker"));
}

#[test]
fn stop_sends_admin_shutdown_and_stays_down() {
    let mut fsm = established();
    let a = fsm.handle(Event::Stop(Notification::cease(
        CeaseSubcode::AdministrativeShutdown,
        "bye",
    )));
    assert_eq!(sent_notification(&a), Some((6, 2)));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(retry_armed(&a), None, "an admin stop is not retried");
    assert!(fsm.handle(Event::TimerExpired(Timer::ConnectRetry)).is_empty());
}

#[test]
fn stop_while_connecting_sends_nothing() {
    let mut fsm = SessionFsm::new(config());
    fsm.handle(Event::Start);
    let a = fsm.handle(Event::Stop(Notification::cease(
        CeaseSubcode::AdministrativeShutdown,
        "",
    )));
    assert_eq!(sent_notification(&a), None);
    assert!(a.contains(&Action::CloseTcp(OUT)));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn connect_timeout_reason_mentions_md5_when_configured() {
    let mut c = config();
    c.md5 = true;
    let mut fsm = SessionFsm::new(c);
    fsm.handle(Event::Start);
    let a = fsm.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert!(a.contains(&Action::CloseTcp(OUT)));
    assert_eq!(fsm.state(), State::Active);
    assert_eq!(
        fsm.last_error(),
        Some("no answer: TCP MD5 key mismatch or peer not configured for MD5?")
    );

    let mut fsm = SessionFsm::new(config());
    fsm.handle(Event::Start);
    fsm.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert!(fsm.last_error().unwrap().starts_with("no answer: connect timed out"));
}

#[test]
fn connect_retry_backs_off_exponentially_with_jitter_up_to_a_minute() {
    let mut fsm = SessionFsm::new(config());
    fsm.handle(Event::Start);
    let mut delays = Vec::new();
    for _ in 0..9 {
        let a = fsm.handle(Event::TcpConnectFailed("connection refused".into()));
        assert_eq!(fsm.state(), State::Active);
        delays.push(retry_armed(&a).unwrap());
        assert_eq!(fsm.handle(Event::TimerExpired(Timer::ConnectRetry))[0], Action::Connect);
    }
    let bases = [1, 2, 4, 8, 16, 32, 60, 60, 60];
    for (d, base) in delays.iter().zip(bases) {
        let base = Duration::from_secs(base);
        assert!(
            *d <= base && *d >= base.mul_f64(0.75),
            "{d:?} not within jitter of {base:?}"
        );
    }
    assert!(
        delays[6..].windows(2).any(|w| w[0] != w[1]),
        "jitter varies the delays: {delays:?}"
    );
    assert_eq!(fsm.last_error(), Some("connect failed: connection refused"));

    // Established resets the backoff.
    fsm.handle(Event::TcpConnected);
    fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, 90))));
    fsm.handle(Event::Message(OUT, Message::Keepalive));
    assert_eq!(fsm.last_error(), None);
    let a = fsm.handle(Event::TcpClosed(OUT, "reset".into()));
    assert!(retry_armed(&a).unwrap() <= Duration::from_secs(1));
}

#[test]
fn route_refresh_resends_negotiated_families_only() {
    let mut fsm = established();
    let a = fsm.handle(Event::Message(
        OUT,
        Message::RouteRefresh(RouteRefresh {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
        }),
    ));
    assert!(a.contains(&Action::ResendRoutes(Afi::IPV6)));
    let a = fsm.handle(Event::Message(
        OUT,
        Message::RouteRefresh(RouteRefresh {
            afi: Afi(25),
            safi: Safi(65),
        }),
    ));
    assert!(!a.iter().any(|a| matches!(a, Action::ResendRoutes(_))));
}

#[test]
fn malformed_updates_handled_by_rfc_7606_keep_the_session() {
    for handling in [
        ErrorHandling::AttributeDiscard,
        ErrorHandling::TreatAsWithdraw,
        ErrorHandling::AfiSafiDisable(Afi::IPV6, Safi::UNICAST),
    ] {
        let mut fsm = established();
        let malformed = Malformed {
            handling,
            reason: "ORIGIN value 5 is undefined".into(),
        };
        let u = Update {
            malformed: Some(malformed.clone()),
            ..Update::default()
        };
        let a = fsm.handle(Event::Message(OUT, Message::Update(u)));
        assert_eq!(
            a,
            vec![
                Action::ArmTimer(Timer::Hold, Duration::from_secs(30)),
                Action::MalformedUpdate(malformed)
            ],
            "{handling}: nothing sent, nothing closed"
        );
        assert_eq!(fsm.state(), State::Established);
    }
}

#[test]
fn open_carries_graceful_restart_with_r_bit() {
    let mut c = config();
    c.graceful_restart = Some(GracefulRestart {
        restart_time: 120,
        restarting: true,
    });
    let open = SessionFsm::new(c).open_message();
    assert!(open.capabilities.iter().any(|c| matches!(
        c,
        Capability::GracefulRestart { restarting: true, restart_time: 120, families } if families.len() == 2
    )));
    // Without graceful restart configured, no capability.
    let open = SessionFsm::new(config()).open_message();
    assert!(
        !open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::GracefulRestart { .. }))
    );
}

#[test]
fn four_octet_local_asn_uses_as_trans() {
    let mut c = config();
    c.local_asn = 4_200_000_000;
    let open = SessionFsm::new(c).open_message();
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_000);
}

#[test]
fn peer_closing_the_connection_is_retried() {
    let mut fsm = established();
    let a = fsm.handle(Event::TcpClosed(OUT, "the peer closed the connection".into()));
    assert_eq!(fsm.state(), State::Idle);
    assert!(a.iter().any(|a| matches!(a, Action::SessionDown { .. })));
    assert!(retry_armed(&a).is_some());
}

// Passive mode and RFC 4271 §6.8 connection collisions.

fn peer_open_with_id(id: Ipv4Addr) -> Open {
    let mut open = peer_open(64500, 90);
    open.bgp_id = id;
    open
}

/// Our connection in OpenConfirm, and the peer's connection accepted (OPEN sent on it).
fn colliding(config: SessionConfig, peer_id: Ipv4Addr) -> SessionFsm {
    let mut fsm = open_sent(config);
    fsm.handle(Event::Message(OUT, Message::Open(peer_open_with_id(peer_id))));
    assert_eq!(fsm.state(), State::OpenConfirm);
    let a = fsm.handle(Event::TcpAccepted);
    assert!(
        matches!(&a[..], [Action::Send(IN, Message::Open(_))]),
        "the new connection gets our OPEN and nothing else changes: {a:?}"
    );
    fsm
}

fn closed(actions: &[Action], dir: Direction) -> bool {
    actions.contains(&Action::CloseTcp(dir))
}

#[test]
fn peer_connection_is_taken_while_connecting_or_waiting() {
    let mut fsm = SessionFsm::new(config());
    fsm.handle(Event::Start);
    assert_eq!(fsm.state(), State::Connect);
    // RFC 4271 §8.2.2 Connect, event 17: our attempt in flight is dropped.
    let a = fsm.handle(Event::TcpAccepted);
    assert!(closed(&a, OUT));
    assert!(a.contains(&Action::CancelTimer(Timer::ConnectRetry)));
    assert!(a.iter().any(|a| matches!(a, Action::Send(IN, Message::Open(_)))));
    assert_eq!((fsm.state(), fsm.connection()), (State::OpenSent, Some(IN)));
    fsm.handle(Event::Message(IN, Message::Open(peer_open(64500, 90))));
    let a = fsm.handle(Event::Message(IN, Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
    assert!(a.iter().any(|a| matches!(a, Action::Established(_))));
    assert_eq!(
        fsm.handle(Event::TimerExpired(Timer::Keepalive))[0],
        Action::Send(IN, Message::Keepalive),
        "keepalives go on the peer's connection"
    );

    // Active (waiting to retry): the same, with no attempt to abort.
    let mut fsm = SessionFsm::new(config());
    fsm.handle(Event::Start);
    fsm.handle(Event::TcpConnectFailed("refused".into()));
    assert_eq!(fsm.state(), State::Active);
    let a = fsm.handle(Event::TcpAccepted);
    assert!(!closed(&a, OUT) && !closed(&a, IN));
    assert_eq!(fsm.state(), State::OpenSent);
    // A stopped session takes nothing.
    let mut fsm = SessionFsm::new(config());
    assert_eq!(fsm.handle(Event::TcpAccepted), vec![Action::CloseTcp(IN)]);
}

#[test]
fn collision_keeps_our_connection_when_our_identifier_is_higher() {
    // Ours 192.0.2.11 > the peer's 192.0.2.1: the connection we opened stays.
    let mut fsm = colliding(config(), PEER_ID);
    let a = fsm.handle(Event::Message(IN, Message::Open(peer_open_with_id(PEER_ID))));
    assert_eq!(
        sent_notification(&a),
        Some((6, 7)),
        "Cease / Connection Collision Resolution"
    );
    assert!(a.contains(&Action::Send(
        IN,
        Message::Notification(Notification::new(CeaseSubcode::ConnectionCollisionResolution))
    )));
    assert!(closed(&a, IN) && !closed(&a, OUT));
    assert!(!a.iter().any(|a| matches!(a, Action::SessionDown { .. })));
    assert_eq!((fsm.state(), fsm.connection()), (State::OpenConfirm, Some(OUT)));
    fsm.handle(Event::Message(OUT, Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn collision_keeps_the_peers_connection_when_its_identifier_is_higher() {
    let higher = Ipv4Addr::new(203, 0, 113, 1);
    let mut fsm = colliding(config(), higher);
    let a = fsm.handle(Event::Message(IN, Message::Open(peer_open_with_id(higher))));
    assert!(a.contains(&Action::Send(
        OUT,
        Message::Notification(Notification::new(CeaseSubcode::ConnectionCollisionResolution))
    )));
    assert!(closed(&a, OUT) && !closed(&a, IN));
    assert!(a.contains(&Action::Send(IN, Message::Keepalive)));
    assert!(a.contains(&Action::ArmTimer(Timer::Hold, Duration::from_secs(90))));
    assert_eq!((fsm.state(), fsm.connection()), (State::OpenConfirm, Some(IN)));
    let Some(Action::StateChanged { reason, .. }) = a.last() else {
        panic!("{a:?}")
    };
    assert!(reason.contains("keeping the connection from the peer"), "{reason}");
    // The closed connection's last words change nothing.
    assert!(
        fsm.handle(Event::TcpClosed(OUT, "reset".into())).is_empty(),
        "events of the closed connection are ignored"
    );
    let a = fsm.handle(Event::Message(IN, Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Established(n) if n.peer_id == higher))
    );
}

#[test]
fn collision_with_equal_identifiers_compares_as_numbers() {
    // RFC 6286 §2.3: equal identifiers between different ASes; the higher AS (ours, 64512 > 64500) wins.
    let ours = config().router_id;
    let mut fsm = colliding(config(), ours);
    let a = fsm.handle(Event::Message(IN, Message::Open(peer_open_with_id(ours))));
    assert!(closed(&a, IN) && !closed(&a, OUT));

    let mut c = config();
    c.local_asn = 64000;
    let mut fsm = colliding(c, ours);
    let a = fsm.handle(Event::Message(IN, Message::Open(peer_open_with_id(ours))));
    assert!(closed(&a, OUT) && !closed(&a, IN));
}

#[test]
fn collision_with_both_connections_in_open_sent() {
    let mut fsm = open_sent(config());
    fsm.handle(Event::TcpAccepted);
    // The peer's OPEN comes first on its own connection: that one carries on, ours waits for its OPEN.
    let a = fsm.handle(Event::Message(IN, Message::Open(peer_open(64500, 90))));
    assert!(a.contains(&Action::Send(IN, Message::Keepalive)));
    assert_eq!((fsm.state(), fsm.connection()), (State::OpenConfirm, Some(IN)));
    // Then its OPEN on our connection: now both are known, our identifier is higher, ours stays.
    let a = fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, 90))));
    assert!(closed(&a, IN) && !closed(&a, OUT));
    assert!(a.contains(&Action::Send(OUT, Message::Keepalive)));
    assert_eq!((fsm.state(), fsm.connection()), (State::OpenConfirm, Some(OUT)));
    fsm.handle(Event::Message(OUT, Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn established_session_wins_over_a_new_connection() {
    let mut fsm = established();
    let a = fsm.handle(Event::TcpAccepted);
    assert_eq!(
        a,
        vec![
            Action::Send(
                IN,
                Message::Notification(Notification::new(CeaseSubcode::ConnectionCollisionResolution))
            ),
            Action::CloseTcp(IN)
        ]
    );
    assert_eq!(fsm.state(), State::Established);

    // A second connection still waiting for its OPEN is closed when the session becomes Established.
    let mut fsm = colliding(config(), PEER_ID);
    let a = fsm.handle(Event::Message(OUT, Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
    assert!(a.contains(&Action::Send(
        IN,
        Message::Notification(Notification::new(CeaseSubcode::ConnectionCollisionResolution))
    )));
    assert!(closed(&a, IN));
}

#[test]
fn session_carries_on_over_the_second_connection_when_the_first_fails() {
    // The router resolved the collision before us and closed our connection with 6/7.
    let mut fsm = colliding(config(), PEER_ID);
    let a = fsm.handle(Event::Message(
        OUT,
        Message::Notification(Notification::new(CeaseSubcode::ConnectionCollisionResolution)),
    ));
    assert!(closed(&a, OUT));
    assert_eq!(retry_armed(&a), None, "no reconnect: the peer's connection is up");
    assert!(a.contains(&Action::ArmTimer(Timer::Hold, OPEN_HOLD_TIME)));
    assert_eq!((fsm.state(), fsm.connection()), (State::OpenSent, Some(IN)));
    fsm.handle(Event::Message(IN, Message::Open(peer_open(64500, 90))));
    fsm.handle(Event::Message(IN, Message::Keepalive));
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn errors_on_the_second_connection_close_only_it() {
    let mut fsm = colliding(config(), PEER_ID);
    let a = fsm.handle(Event::Message(IN, Message::Open(peer_open(64999, 90))));
    assert!(a.contains(&Action::Send(
        IN,
        Message::Notification(Notification {
            code: 2,
            subcode: 2,
            data: 64999u16.to_be_bytes().to_vec()
        })
    )));
    assert!(closed(&a, IN) && !closed(&a, OUT));
    assert_eq!((fsm.state(), fsm.connection()), (State::OpenConfirm, Some(OUT)));

    // An UPDATE before OPEN (RFC 6608: 5/1), and a plain close.
    let mut fsm = colliding(config(), PEER_ID);
    let a = fsm.handle(Event::Message(IN, Message::Update(Update::default())));
    assert_eq!(sent_notification(&a), Some((5, 1)));
    assert_eq!(fsm.state(), State::OpenConfirm);
    fsm.handle(Event::TcpAccepted);
    assert!(
        !closed(&fsm.handle(Event::TcpClosed(IN, "reset".into())), OUT),
        "the session's connection stays"
    );
    assert_eq!(fsm.state(), State::OpenConfirm);
}

#[test]
fn stop_ceases_both_connections() {
    let mut fsm = colliding(config(), PEER_ID);
    let a = fsm.handle(Event::Stop(Notification::cease(
        CeaseSubcode::AdministrativeShutdown,
        "",
    )));
    assert!(closed(&a, IN) && closed(&a, OUT));
    let ceased: Vec<Direction> = a
        .iter()
        .filter_map(|a| match a {
            Action::Send(d, Message::Notification(n)) if n.code == 6 => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(ceased, [IN, OUT]);
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn families_limit_the_capabilities_and_the_negotiation() {
    let mut c = config();
    c.families = vec![Afi::IPV4];
    c.graceful_restart = Some(GracefulRestart {
        restart_time: 120,
        restarting: false,
    });
    let open = SessionFsm::new(c.clone()).open_message();
    let mp: Vec<Afi> = open
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol { afi, .. } => Some(*afi),
            _ => None,
        })
        .collect();
    assert_eq!(mp, [Afi::IPV4]);
    assert!(open.capabilities.iter().any(|c| matches!(
        c,
        Capability::GracefulRestart { families, .. } if families == &[(Afi::IPV4, Safi::UNICAST, true)]
    )));
    // The peer offers both; only IPv4 is negotiated.
    let mut fsm = open_sent(c);
    fsm.handle(Event::Message(OUT, Message::Open(peer_open(64500, 90))));
    assert_eq!(fsm.negotiated().unwrap().families, vec![Afi::IPV4]);

    // IPv6 only with a peer that sends no multiprotocol capability (IPv4 implied): nothing in common.
    let mut c = config();
    c.families = vec![Afi::IPV6];
    let mut open = peer_open(64500, 90);
    open.capabilities
        .retain(|c| !matches!(c, Capability::Multiprotocol { .. }));
    let mut fsm = open_sent(c);
    fsm.handle(Event::Message(OUT, Message::Open(open)));
    assert!(fsm.negotiated().unwrap().families.is_empty());
}
