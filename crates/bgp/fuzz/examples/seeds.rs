//! Writes the seed corpora of the `decode` and `fsm` targets, `seeds/<target>/`, from Herald's own encoders:
//! `cargo run --manifest-path crates/bgp/fuzz/Cargo.toml --example seeds`.
//!
//! `decode` gets one message of each type (OPEN, UPDATEs for IPv4 and IPv6, withdrawals, KEEPALIVE, NOTIFICATION,
//! ROUTE-REFRESH) and a stream of several. `fsm` gets event scripts in its encoding (a config byte, then one op byte
//! each, see `fuzz_targets/fsm.rs`) that reach Established and then go on: updates, keepalives, a hold timer expiry,
//! a NOTIFICATION, BFD down, a collision with the peer's connection. The scripts are checked here against the FSM.

use std::net::Ipv4Addr;
use std::path::Path;

use herald_bgp::fsm::State;
use herald_bgp::packet::update::{announce_updates, withdraw_updates};
use herald_bgp::packet::{
    Afi, CeaseSubcode, LargeCommunity, Message, Notification, Origin, OutboundAttributes,
    RouteRefresh, Safi,
};
use ipnet::IpNet;

#[path = "../common/peer_open.rs"]
mod peer_open;
use peer_open::peer_open;

fn updates(next_hop: &str, prefixes: &[&str], four_octet_as: bool) -> Vec<Vec<u8>> {
    let attrs = OutboundAttributes {
        origin: Origin::Igp,
        as_path: vec![64500],
        next_hop: next_hop.parse().unwrap(),
        med: Some(10),
        local_pref: None,
        communities: vec![0xfde8_0001],
        large_communities: vec![LargeCommunity(64500, 1, 2)],
    };
    let prefixes: Vec<IpNet> = prefixes.iter().map(|p| p.parse().unwrap()).collect();
    announce_updates(&attrs, &prefixes, four_octet_as)
        .into_iter()
        .map(|u| Message::Update(u).encode(four_octet_as))
        .collect()
}

/// The fsm target's ops (its `match op & 0x0f`; bit 7 picks the connection).
const START: u8 = 0;
const STOP: u8 = 1;
const TCP_CONNECTED: u8 = 2;
const TCP_ACCEPTED: u8 = 3;
const TCP_CLOSED: u8 = 5;
const CONNECT_RETRY_EXPIRED: u8 = 6;
const HOLD_EXPIRED: u8 = 7;
const KEEPALIVE_EXPIRED: u8 = 8;
const BFD_DOWN: u8 = 9;
/// The peer's OPEN with hold time 21 s (bits 4-7 give hold time / 3; 0xfa, on the peer's connection, 45 s).
const PEER_OPEN: u8 = 0x7a;
const PEER_KEEPALIVE: u8 = 11;
const FRAME: u8 = 12;
const INCOMING: u8 = 0x80;
/// The config byte: peer AS 64500 (eBGP), hold time 90, keepalive 30, no MD5.
const EBGP: u8 = 0x38;
/// The same with the peer in our AS (iBGP).
const IBGP: u8 = 0x39;

fn frame(script: &mut Vec<u8>, bytes: &[u8]) {
    script.push(FRAME);
    script.push(u8::try_from(bytes.len()).expect("a frame of at most 255 bytes"));
    script.extend_from_slice(bytes);
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let four = true;
    let v4 = updates("192.0.2.11", &["198.51.100.10/32", "198.51.100.11/32"], four);
    let v6 = updates("2001:db8::11", &["2001:db8:100::10/128"], four);
    let withdraw = Message::Update(withdraw_updates(&["198.51.100.10/32".parse().unwrap()]).remove(0)).encode(four);
    let notification =
        Message::Notification(Notification::cease(CeaseSubcode::AdministrativeShutdown, "maintenance")).encode(four);
    let keepalive = Message::Keepalive.encode(four);
    let refresh = Message::RouteRefresh(RouteRefresh {
        afi: Afi::IPV6,
        safi: Safi::UNICAST,
    })
    .encode(four);

    let decode: Vec<(&str, Vec<u8>)> = vec![
        ("open", peer_open(64500, 90).encode(four)),
        ("open-as-trans", peer_open(4_200_000_000, 90).encode(four)),
        ("update-ipv4", v4[0].clone()),
        ("update-ipv6", v6[0].clone()),
        ("update-withdraw", withdraw.clone()),
        ("keepalive", keepalive.clone()),
        ("notification-shutdown", notification.clone()),
        ("route-refresh", refresh.clone()),
        (
            "stream",
            [keepalive.clone(), v4[0].clone(), v6[0].clone(), withdraw.clone()].concat(),
        ),
    ];

    // Up on our connection: Start, connected, the peer's OPEN and KEEPALIVE.
    let up = [START, TCP_CONNECTED, PEER_OPEN, PEER_KEEPALIVE];
    let mut established = vec![EBGP];
    established.extend(up);
    established.push(KEEPALIVE_EXPIRED);
    for u in v4.iter().chain(&v6) {
        frame(&mut established, u);
    }
    frame(&mut established, &keepalive);
    frame(&mut established, &refresh);
    frame(&mut established, &withdraw);
    let mut hold_expiry = established.clone();
    hold_expiry.extend([HOLD_EXPIRED, CONNECT_RETRY_EXPIRED, TCP_CONNECTED]);
    let mut notified = established.clone();
    frame(&mut notified, &notification);
    notified.extend([CONNECT_RETRY_EXPIRED, TCP_CONNECT_FAILED, CONNECT_RETRY_EXPIRED]);
    let mut bfd = established.clone();
    bfd.extend([BFD_DOWN, STOP, START]);
    let mut closed = vec![IBGP];
    closed.extend(up);
    frame(&mut closed, &v4[0]);
    closed.extend([TCP_CLOSED, STOP]);
    // The peer connects too while our OPEN is out: collision detection keeps one connection (RFC 4271 §6.8).
    let collision = vec![
        EBGP,
        START,
        TCP_CONNECTED,
        TCP_ACCEPTED,
        PEER_OPEN | INCOMING,
        PEER_OPEN,
        PEER_KEEPALIVE | INCOMING,
        PEER_KEEPALIVE,
    ];
    let fsm: Vec<(&str, Vec<u8>)> = vec![
        ("established", established),
        ("hold-timer-expires", hold_expiry),
        ("notification", notified),
        ("bfd-down", bfd),
        ("ibgp-tcp-closed", closed),
        ("collision", collision),
    ];
    for (name, script) in &fsm {
        let reached = replay(script);
        assert!(
            reached.contains(&State::Established),
            "{name} never reaches Established: {reached:?}"
        );
    }

    for (target, seeds) in [("decode", &decode), ("fsm", &fsm)] {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(target).join(name), bytes).unwrap();
        }
    }
}

const TCP_CONNECT_FAILED: u8 = 4;

/// The states a script passes through, replayed the way the fsm target replays it (for the ops used here).
fn replay(script: &[u8]) -> Vec<State> {
    use herald_bgp::fsm::{Direction, Event, SessionConfig, SessionFsm, Timer};
    use herald_bgp::packet::{DecodeContext, decode_frame};
    use std::time::Duration;

    let (&config, mut rest) = script.split_first().unwrap();
    let peer_asn = [64500, 64512, 4_200_000_000, 64500][usize::from(config % 4)];
    let mut fsm = SessionFsm::new(SessionConfig {
        local_asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 11),
        peer_asn,
        hold_time: 90,
        keepalive_time: Some(30),
        connect_retry_max: Duration::from_secs(60),
        graceful_restart: None,
        families: vec![Afi::IPV4, Afi::IPV6],
        md5: false,
        connect_timeout: Duration::from_secs(10),
        jitter_seed: 7,
    });
    let mut states = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let dir = if op & INCOMING == 0 {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        let event = match op & 0x0f {
            START => Event::Start,
            STOP => Event::Stop(Notification::cease(CeaseSubcode::AdministrativeShutdown, "fuzz")),
            TCP_CONNECTED => Event::TcpConnected,
            TCP_ACCEPTED => Event::TcpAccepted,
            TCP_CONNECT_FAILED => Event::TcpConnectFailed("refused".into()),
            TCP_CLOSED => Event::TcpClosed(dir, "reset".into()),
            CONNECT_RETRY_EXPIRED => Event::TimerExpired(Timer::ConnectRetry),
            HOLD_EXPIRED => Event::TimerExpired(Timer::Hold),
            KEEPALIVE_EXPIRED => Event::TimerExpired(Timer::Keepalive),
            BFD_DOWN => Event::BfdDown("control detection time expired".into()),
            10 => {
                let Message::Open(mut o) = peer_open(peer_asn, 90) else {
                    unreachable!()
                };
                o.hold_time = u16::from(op >> 4) * 3;
                Event::Message(dir, Message::Open(o))
            }
            PEER_KEEPALIVE => Event::Message(dir, Message::Keepalive),
            _ => {
                let (&len, tail) = rest.split_first().unwrap();
                let (bytes, tail) = tail.split_at(usize::from(len));
                rest = tail;
                let ctx = DecodeContext {
                    four_octet_as: fsm.negotiated().is_some_and(|n| n.four_octet_as),
                    internal: peer_asn == 64512,
                };
                let (msg, _) = decode_frame(bytes, ctx).unwrap().unwrap();
                Event::Message(dir, msg)
            }
        };
        fsm.handle(event);
        states.push(fsm.state());
    }
    states
}
