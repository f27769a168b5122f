use super::*;

const MS: Duration = Duration::from_millis(1);

/// Two sessions with default timers, discriminators 1 and 2.
fn pair() -> (Session, Session) {
    (
        Session::new(Timers::default(), 1, 1),
        Session::new(Timers::default(), 2, 2),
    )
}

/// The packets among `actions`.
fn sent(actions: &[Action]) -> Vec<ControlPacket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(p.clone()),
            Action::StateChanged { .. } => None,
        })
        .collect()
}

/// The state changes among `actions`.
fn changes(actions: &[Action]) -> Vec<(State, State, Diag)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StateChanged { from, to, diag } => Some((*from, *to, *diag)),
            Action::Send(_) => None,
        })
        .collect()
}

/// Two sessions on a lossless link with no delay: every packet one sends is handed to the other at once, until
/// neither has anything more to say; then time moves to the next wake-up. Runs until `until`; returns every action
/// of `a` and of `b`.
fn run(a: &mut Session, b: &mut Session, start: Instant, until: Instant) -> (Vec<Action>, Vec<Action>) {
    let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
    let mut now = start;
    let (mut to_b, mut to_a) = (sent(&a.poll(now)), sent(&b.poll(now)));
    while now < until {
        while !to_a.is_empty() || !to_b.is_empty() {
            for p in std::mem::take(&mut to_b) {
                let out = b.received(now, &p).unwrap_or_default();
                to_a.extend(sent(&out));
                all_b.extend(out);
            }
            for p in std::mem::take(&mut to_a) {
                let out = a.received(now, &p).unwrap_or_default();
                to_b.extend(sent(&out));
                all_a.extend(out);
            }
        }
        now = [a.next_wakeup(), b.next_wakeup()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until);
        let out = a.poll(now);
        to_b.extend(sent(&out));
        all_a.extend(out);
        let out = b.poll(now);
        to_a.extend(sent(&out));
        all_b.extend(out);
    }
    (all_a, all_b)
}

#[test]
fn two_sessions_come_up_by_the_three_way_handshake_then_send_at_the_configured_rate() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    let (acts_a, acts_b) = run(&mut a, &mut b, t0, t0 + 3 * SLOW_TX);
    // Both start at once: each hears the other's Down (→ Init), then the other's Init (→ Up).
    let handshake = [
        (State::Down, State::Init, Diag::None),
        (State::Init, State::Up, Diag::None),
    ];
    assert_eq!(changes(&acts_a), handshake);
    assert_eq!(changes(&acts_b), handshake);
    // Up, both announced 300 ms by a Poll sequence that the other ended with a Final.
    let packets = sent(&acts_a);
    assert!(
        packets.iter().any(|p| p.state == State::Up && p.poll),
        "A polls the new rate"
    );
    assert!(sent(&acts_b).iter().any(|p| p.final_), "B answers with a Final");
    assert!(packets.iter().all(|p| !(p.poll && p.final_)), "never P and F together");
    let last = packets.last().unwrap();
    assert_eq!(
        (last.desired_min_tx, last.your_discriminator, last.poll),
        (300 * MS, 2, false)
    );
    assert!(!a.polling && !b.polling, "the Poll sequences are over");
    assert_eq!(a.detection_time(), 900 * MS);
}

/// A side that starts later hears Init from the other and goes straight from Down to Up.
#[test]
fn a_late_side_goes_from_down_to_up_when_the_other_says_init() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    let hello = sent(&a.poll(t0));
    let reply = sent(&b.received(t0, &hello[0]).unwrap());
    assert_eq!(reply[0].state, State::Init);
    let out = a.received(t0, &reply[0]).unwrap();
    assert_eq!(changes(&out), [(State::Down, State::Up, Diag::None)]);
    let up = sent(&out);
    assert_eq!(
        changes(&b.received(t0, up.last().unwrap()).unwrap()),
        [(State::Init, State::Up, Diag::None)]
    );
}

#[test]
fn a_silent_peer_is_down_after_the_detection_time_and_forgotten() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    run(&mut a, &mut b, t0, t0 + 3 * SLOW_TX);
    assert_eq!(a.state(), State::Up);
    // B goes silent. A polls on: it stays Up until 900 ms after the last packet, then goes Down at that moment.
    let last_rx = a.last_rx.unwrap();
    let mut down_at = None;
    let mut now = last_rx;
    while down_at.is_none() {
        now = a.next_wakeup().unwrap();
        assert!(
            now <= last_rx + 900 * MS,
            "A wakes up for the detection time at the latest"
        );
        if !changes(&a.poll(now)).is_empty() {
            down_at = Some(now);
        }
    }
    assert_eq!(down_at, Some(last_rx + 900 * MS));
    assert_eq!((a.state(), a.diag()), (State::Down, Diag::ControlDetectionTimeExpired));
    let next = sent(&a.poll(now + SLOW_TX));
    assert_eq!(next.len(), 1);
    assert_eq!(
        (
            next[0].state,
            next[0].your_discriminator,
            next[0].diag,
            next[0].desired_min_tx
        ),
        (State::Down, 0, Diag::ControlDetectionTimeExpired, SLOW_TX),
        "Down, the peer's discriminator forgotten, a packet a second again"
    );
}

#[test]
fn a_peer_that_goes_admin_down_takes_the_session_down_without_it_counting_as_a_timeout() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    let t = t0 + 3 * SLOW_TX;
    run(&mut a, &mut b, t0, t);
    let bye = sent(&b.admin_down(t));
    assert_eq!(bye.len(), 1);
    assert_eq!(
        (bye[0].state, bye[0].diag),
        (State::AdminDown, Diag::AdministrativelyDown)
    );
    let out = a.received(t, &bye[0]).unwrap();
    assert_eq!(
        changes(&out),
        [(State::Up, State::Down, Diag::NeighborSignaledSessionDown)]
    );
    // While B is administratively down, A stays Down (AdminDown never brings a session up).
    assert!(changes(&a.received(t + SLOW_TX, &bye[0]).unwrap()).is_empty());
    assert_eq!(
        b.received(t, &sent(&a.poll(t + 2 * SLOW_TX))[0]),
        Err(Ignored::AdminDown)
    );
}

#[test]
fn packets_for_another_session_are_ignored() {
    let t0 = Instant::now();
    let mut a = Session::new(Timers::default(), 1, 1);
    let mut p = sent(&Session::new(Timers::default(), 2, 2).poll(t0))[0].clone();
    p.your_discriminator = 9;
    assert_eq!(a.received(t0, &p), Err(Ignored::Discriminator { got: 9, ours: 1 }));
    p.your_discriminator = 0;
    p.state = State::Up;
    assert_eq!(a.received(t0, &p), Err(Ignored::NoDiscriminator(State::Up)));
    assert_eq!(a.state(), State::Down);
}

#[test]
fn a_poll_is_answered_with_a_final_at_once() {
    let t0 = Instant::now();
    let mut a = Session::new(Timers::default(), 1, 1);
    a.poll(t0);
    let mut p = sent(&Session::new(Timers::default(), 2, 2).poll(t0))[0].clone();
    p.poll = true;
    let answer = sent(&a.received(t0 + MS, &p).unwrap());
    assert!(answer.iter().any(|p| p.final_ && !p.poll), "{answer:?}");
}

#[test]
fn packets_go_out_at_75_to_100_percent_of_the_interval_and_once_a_second_while_not_up() {
    let t0 = Instant::now();
    let mut a = Session::new(Timers::default(), 1, 7);
    let mut times = Vec::new();
    let mut now = t0;
    for _ in 0..200 {
        if !sent(&a.poll(now)).is_empty() {
            times.push(now);
        }
        now = a.next_wakeup().unwrap();
    }
    for gap in times.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= 750 * MS && gap <= SLOW_TX,
            "not Up: about once a second ({gap:?})"
        );
    }
    // Detect multiplier 1: at most 90 % of the interval (§6.8.7).
    let one = Timers {
        detect_mult: 1,
        ..Timers::default()
    };
    let mut a = Session::new(one, 1, 7);
    let mut now = t0;
    let mut last = None;
    for _ in 0..200 {
        if !sent(&a.poll(now)).is_empty() {
            if let Some(l) = last {
                let gap: Duration = now - l;
                assert!(gap >= 750 * MS && gap <= 900 * MS, "{gap:?}");
            }
            last = Some(now);
        }
        now = a.next_wakeup().unwrap();
    }
}

#[test]
fn a_peer_asking_for_no_packets_gets_none() {
    let t0 = Instant::now();
    let mut a = Session::new(Timers::default(), 1, 1);
    let mut p = sent(&Session::new(Timers::default(), 2, 2).poll(t0))[0].clone();
    p.required_min_rx = Duration::ZERO;
    let out = a.received(t0, &p).unwrap();
    assert!(sent(&a.poll(t0 + 10 * SLOW_TX)).is_empty(), "{out:?}");
}

#[test]
fn new_timers_take_effect_by_a_poll_sequence_without_a_state_change() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    run(&mut a, &mut b, t0, t0 + 3 * SLOW_TX);
    assert_eq!((a.state(), b.state()), (State::Up, State::Up));
    assert_eq!(b.detection_time(), 3 * Duration::from_millis(300));
    // A goes to 50 ms: its next packet polls with the new interval at once.
    let fast = Timers {
        desired_min_tx: 50 * MS,
        required_min_rx: 50 * MS,
        detect_mult: 3,
    };
    let now = t0 + 3 * SLOW_TX;
    let out = sent(&a.set_timers(now, fast));
    assert_eq!(out.len(), 1);
    assert!(out[0].poll, "the change is announced by a Poll: {:?}", out[0]);
    assert_eq!(out[0].desired_min_tx, 50 * MS);
    assert_eq!(out[0].required_min_rx, 50 * MS);
    // Until B's Final, A still times B out by the old receive interval.
    assert_eq!(a.detection_time(), 3 * Duration::from_millis(300));
    let (acts_a, acts_b) = run(&mut a, &mut b, now, now + SLOW_TX);
    assert!(changes(&acts_a).is_empty() && changes(&acts_b).is_empty(), "no flap");
    assert_eq!(
        a.detection_time(),
        3 * Duration::from_millis(300),
        "B still sends at 300 ms"
    );
    // B knows A's new rate; its own receive interval (300 ms) still bounds it.
    assert_eq!(b.detection_time(), 3 * Duration::from_millis(300));
    let last = sent(&acts_a).pop().unwrap();
    assert!(!last.poll, "the Poll sequence ended");
    assert_eq!(last.desired_min_tx, 50 * MS);
    // Setting the same timers again does nothing.
    assert!(a.set_timers(now + SLOW_TX, fast).is_empty());
}

#[test]
fn a_peer_that_accepts_packets_faster_gets_the_next_one_by_the_new_interval() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair();
    run(&mut a, &mut b, t0, t0 + 3 * SLOW_TX);
    assert_eq!(a.state(), State::Up);
    let from_b = b.packet(false, false);
    // B accepts packets only once a second: A's next periodic packet after `last` is due 0.75–1 s later.
    let now = t0 + 3 * SLOW_TX;
    a.received(
        now,
        &ControlPacket {
            required_min_rx: SLOW_TX,
            ..from_b.clone()
        },
    )
    .unwrap();
    let mut last = now;
    while sent(&a.poll(last)).is_empty() {
        last = a.next_wakeup().unwrap();
    }
    // B now accepts 300 ms (its Poll sequence after a change): A's next packet is due 300 ms after its last, not
    // up to a second, or B would time A out.
    a.received(
        last + 10 * MS,
        &ControlPacket {
            required_min_rx: 300 * MS,
            ..from_b
        },
    )
    .unwrap();
    assert!(
        !sent(&a.poll(last + 300 * MS)).is_empty(),
        "no packet 300 ms after the last; next at {:?}",
        a.next_wakeup().map(|t| t - last)
    );
}
