//! `cargo fuzz run -s none -a fsm` (from crates/bgp): the session FSM driven by arbitrary event sequences, as the
//! speaker's tasks would feed it: connections opening, failing and closing, timers expiring, BFD going down, and
//! messages from the peer. Message bytes go through the decoder first, as on a real connection: a frame that decodes
//! is delivered as a message, one that does not as a decode failure. One op delivers a well-formed OPEN, so sessions
//! get past OpenSent without the fuzzer having to find one. The FSM must never panic, and an Established session
//! always has a connection and a negotiation result.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use herald_bgp::fsm::{Direction, Event, SessionConfig, SessionFsm, State, Timer};
use herald_bgp::packet::{Afi, CeaseSubcode, DecodeContext, Message, Notification, decode_frame};
use libfuzzer_sys::fuzz_target;

#[path = "../common/peer_open.rs"]
mod peer_open;
use peer_open::peer_open;

fn config(byte: u8) -> SessionConfig {
    SessionConfig {
        local_asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 11),
        // iBGP or eBGP, 2- or 4-octet.
        peer_asn: [64500, 64512, 4_200_000_000, 64500][usize::from(byte % 4)],
        hold_time: [0, 3, 90, 65535][usize::from((byte >> 2) % 4)],
        keepalive_time: [None, Some(0), Some(1), Some(30)][usize::from((byte >> 4) % 4)],
        connect_retry_max: Duration::from_secs(60),
        graceful_restart: None,
        families: vec![Afi::IPV4, Afi::IPV6],
        md5: byte & 0x40 != 0,
        connect_timeout: Duration::from_secs(10),
        jitter_seed: 7,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let config = config(first);
    let peer_asn = config.peer_asn;
    let internal = config.local_asn == config.peer_asn;
    let mut fsm = SessionFsm::new(config);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let dir = if op & 0x80 == 0 {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        let event = match op & 0x0f {
            0 => Event::Start,
            1 => Event::Stop(Notification::cease(CeaseSubcode::AdministrativeShutdown, "fuzz")),
            2 => Event::TcpConnected,
            3 => Event::TcpAccepted,
            4 => Event::TcpConnectFailed("refused".into()),
            5 => Event::TcpClosed(dir, "reset".into()),
            6 => Event::TimerExpired(Timer::ConnectRetry),
            7 => Event::TimerExpired(Timer::Hold),
            8 => Event::TimerExpired(Timer::Keepalive),
            9 => Event::BfdDown("control detection time expired".into()),
            10 => Event::Message(dir, peer_open(peer_asn, u16::from(op >> 4) * 3)),
            11 => Event::Message(dir, Message::Keepalive),
            _ => {
                // A frame from the peer: a length byte, then that many bytes through the decoder.
                let Some((&len, tail)) = rest.split_first() else { return };
                let n = usize::from(len).min(tail.len());
                let (bytes, tail) = tail.split_at(n);
                rest = tail;
                let four_octet_as = fsm.negotiated().is_some_and(|n| n.four_octet_as);
                match decode_frame(
                    bytes,
                    DecodeContext {
                        four_octet_as,
                        internal,
                    },
                ) {
                    Ok(Some((msg, _))) => Event::Message(dir, msg),
                    Ok(None) => continue,
                    Err(e) => Event::DecodeFailed(dir, e),
                }
            }
        };
        let _actions = fsm.handle(event);
        if fsm.state() == State::Established {
            assert!(fsm.connection().is_some(), "Established without a connection");
            assert!(fsm.negotiated().is_some(), "Established without a negotiation");
        }
    }
});
