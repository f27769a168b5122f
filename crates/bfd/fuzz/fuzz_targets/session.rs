//! `cargo fuzz run -s none -a session` (from crates/bfd): one BFD session driven by arbitrary sequences of received
//! packets (arbitrary bytes through the decoder, or well-formed packets in any state with the session's own
//! discriminator), clock steps, polls, timer changes and administrative shutdown. It must never panic, and the time
//! of its next wakeup never lies in the past after a poll.
#![no_main]

use std::time::{Duration, Instant};

use herald_bfd::packet::{ControlPacket, Diag, State};
use herald_bfd::session::{Session, Timers};
use libfuzzer_sys::fuzz_target;

const LOCAL_DISCR: u32 = 0x0102_0304;

fn timers(byte: u8) -> Timers {
    Timers {
        desired_min_tx: Duration::from_millis(10 + u64::from(byte & 0x0f) * 50),
        required_min_rx: Duration::from_millis(10 + u64::from(byte >> 4) * 50),
        detect_mult: 2 + (byte % 5),
    }
}

fn packet(state: u8, flags: u8, rx: u8) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state: [State::AdminDown, State::Down, State::Init, State::Up][usize::from(state % 4)],
        poll: flags & 1 != 0,
        final_: flags & 2 != 0,
        control_plane_independent: false,
        demand: flags & 4 != 0,
        multipoint: false,
        detect_mult: 3,
        my_discriminator: 0x0a0b_0c0d,
        your_discriminator: if flags & 8 != 0 { 0 } else { LOCAL_DISCR },
        desired_min_tx: Duration::from_millis(10 + u64::from(rx) * 10),
        required_min_rx: Duration::from_millis(10 + u64::from(rx) * 10),
        required_min_echo_rx: Duration::ZERO,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut now = Instant::now();
    let mut session = Session::new(timers(first), LOCAL_DISCR, 42);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let arg = rest.first().copied().unwrap_or(0);
        match op % 6 {
            0 => {
                // Arbitrary bytes: a length, then that many.
                let body = rest.get(1..).unwrap_or_default();
                let n = usize::from(arg).min(body.len());
                if let Ok(p) = ControlPacket::decode(&body[..n]) {
                    let _ = session.received(now, &p);
                }
                rest = &body[n..];
            }
            1 => {
                let _ = session.received(now, &packet(arg, op >> 3, arg >> 2));
                rest = rest.get(1..).unwrap_or_default();
            }
            2 => {
                now += Duration::from_millis(u64::from(arg) * 7);
                rest = rest.get(1..).unwrap_or_default();
            }
            3 => {
                let _ = session.poll(now);
                if let Some(next) = session.next_wakeup() {
                    assert!(
                        next >= now || session.state() == State::AdminDown,
                        "next wakeup in the past"
                    );
                }
            }
            4 => {
                let _ = session.set_timers(now, timers(arg));
                rest = rest.get(1..).unwrap_or_default();
            }
            _ => {
                let _ = session.admin_down(now);
            }
        }
    }
});
