//! Writes the seed corpora of the `packet` and `session` targets, `seeds/<target>/`, from Herald's own encoder:
//! `cargo run --manifest-path crates/bfd/fuzz/Cargo.toml --example seeds`.
//!
//! `packet` gets control packets in each state, with Poll and Final, and with authentication present. `session` gets
//! scripts in its encoding (a timer byte, then ops, see `fuzz_targets/session.rs`): the three-way handshake to Up,
//! then a detection timeout, a timer change with its Poll sequence, the peer going AdminDown, our own
//! administrative shutdown. The scripts are checked here against the session.

use std::path::Path;
use std::time::{Duration, Instant};

use herald_bfd::packet::{ControlPacket, Diag, State};
use herald_bfd::session::{Session, Timers};

const LOCAL_DISCR: u32 = 0x0102_0304;

fn packet(state: State, your_discriminator: u32, poll: bool, final_: bool) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state,
        poll,
        final_,
        control_plane_independent: false,
        demand: false,
        multipoint: false,
        detect_mult: 3,
        my_discriminator: 0x0a0b_0c0d,
        your_discriminator,
        desired_min_tx: Duration::from_millis(100),
        required_min_rx: Duration::from_millis(100),
        required_min_echo_rx: Duration::ZERO,
    }
}

/// The session target's ops (`op % 6`; for RECEIVE, `op >> 3` holds the packet's flags, and its argument the state
/// in bits 0-1 and the interval in bits 2-7).
const RAW: u8 = 0;
const RECEIVE: u8 = 1;
const RECEIVE_POLL: u8 = 13;
const RECEIVE_FINAL: u8 = 19;
const RECEIVE_NO_DISCRIMINATOR: u8 = 67;
const ADVANCE: u8 = 2;
const POLL: u8 = 3;
const SET_TIMERS: u8 = 4;
const ADMIN_DOWN: u8 = 5;
/// A received packet's argument: the state, and an interval of 100 ms.
fn arg(state: State) -> u8 {
    9 << 2 | state as u8
}
/// The timer byte: 110 ms both ways, detection multiplier 6.
const TIMERS: u8 = 0x22;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut authenticated = packet(State::Up, LOCAL_DISCR, false, false).encode().to_vec();
    // RFC 5880 §4.1: the A bit, and a Simple Password section (type 1, length 7, key ID 1, "pwd").
    authenticated[1] |= 0x04;
    authenticated.extend([1, 7, 1, b'p', b'w', b'd']);
    authenticated[3] = u8::try_from(authenticated.len()).unwrap();
    let packets: Vec<(&str, Vec<u8>)> = vec![
        ("down-first", packet(State::Down, 0, false, false).encode().to_vec()),
        ("init", packet(State::Init, LOCAL_DISCR, false, false).encode().to_vec()),
        ("up", packet(State::Up, LOCAL_DISCR, false, false).encode().to_vec()),
        ("up-poll", packet(State::Up, LOCAL_DISCR, true, false).encode().to_vec()),
        (
            "up-final",
            packet(State::Up, LOCAL_DISCR, false, true).encode().to_vec(),
        ),
        (
            "admin-down",
            packet(State::AdminDown, LOCAL_DISCR, false, false).encode().to_vec(),
        ),
        ("authenticated", authenticated),
    ];

    let up = vec![
        TIMERS,
        POLL,
        RECEIVE_NO_DISCRIMINATOR,
        arg(State::Down),
        POLL,
        RECEIVE,
        arg(State::Up),
        ADVANCE,
        10,
        POLL,
    ];
    let mut timeout = up.clone();
    timeout.extend([ADVANCE, 255, POLL, RECEIVE, arg(State::Down), RECEIVE, arg(State::Up)]);
    let mut new_timers = up.clone();
    new_timers.extend([
        SET_TIMERS,
        0x11,
        POLL,
        RECEIVE_FINAL,
        arg(State::Up),
        RECEIVE_POLL,
        arg(State::Up),
        POLL,
    ]);
    let mut peer_down = up.clone();
    peer_down.extend([RECEIVE, arg(State::AdminDown), POLL, ADMIN_DOWN, POLL]);
    let mut raw = vec![TIMERS, RAW, 24];
    raw.extend(packet(State::Down, 0, false, false).encode());
    raw.extend([POLL, RAW, 24]);
    raw.extend(packet(State::Up, LOCAL_DISCR, false, false).encode());
    raw.push(POLL);
    let sessions: Vec<(&str, Vec<u8>)> = vec![
        ("up", up),
        ("detection-timeout", timeout),
        ("timer-change", new_timers),
        ("peer-admin-down", peer_down),
        ("raw-packets", raw),
    ];
    for (name, script) in &sessions {
        let reached = replay(script);
        assert!(reached.contains(&State::Up), "{name} never comes Up: {reached:?}");
    }

    for (target, seeds) in [("packet", &packets), ("session", &sessions)] {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        for (name, bytes) in seeds {
            // Herald configures no authentication, so that one is refused.
            if target == "packet" && *name != "authenticated" {
                ControlPacket::decode(bytes).unwrap_or_else(|e| panic!("seed {name}: {e}"));
            }
            std::fs::write(dir.join(target).join(name), bytes).unwrap();
        }
    }
}

/// The states a script passes through, replayed the way the session target replays it (for the ops used here).
fn replay(script: &[u8]) -> Vec<State> {
    let timers = |b: u8| Timers {
        desired_min_tx: Duration::from_millis(10 + u64::from(b & 0x0f) * 50),
        required_min_rx: Duration::from_millis(10 + u64::from(b >> 4) * 50),
        detect_mult: 2 + (b % 5),
    };
    let (&first, mut rest) = script.split_first().unwrap();
    let mut now = Instant::now();
    let mut session = Session::new(timers(first), LOCAL_DISCR, 42);
    let mut states = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let a = rest.first().copied().unwrap_or(0);
        match op % 6 {
            RAW => {
                let n = usize::from(a);
                let p = ControlPacket::decode(&rest[1..=n]).unwrap();
                let _ = session.received(now, &p);
                rest = &rest[1 + n..];
            }
            RECEIVE => {
                let flags = op >> 3;
                let state = [State::AdminDown, State::Down, State::Init, State::Up][usize::from(a % 4)];
                let mut p = packet(
                    state,
                    if flags & 8 != 0 { 0 } else { LOCAL_DISCR },
                    flags & 1 != 0,
                    flags & 2 != 0,
                );
                p.desired_min_tx = Duration::from_millis(10 + u64::from(a >> 2) * 10);
                p.required_min_rx = p.desired_min_tx;
                let _ = session.received(now, &p);
                rest = &rest[1..];
            }
            ADVANCE => {
                now += Duration::from_millis(u64::from(a) * 7);
                rest = &rest[1..];
            }
            POLL => {
                session.poll(now);
            }
            SET_TIMERS => {
                session.set_timers(now, timers(a));
                rest = &rest[1..];
            }
            _ => {
                session.admin_down(now);
            }
        }
        states.push(session.state());
    }
    states
}
