//! The shell over real UDP sockets on loopback: two BFD services in one namespace, each receiving on its own port.

use std::net::UdpSocket as StdUdpSocket;

use super::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Fast timers so that the tests take a fraction of a second.
fn fast() -> Timers {
    Timers {
        desired_min_tx: Duration::from_millis(20),
        required_min_rx: Duration::from_millis(20),
        detect_mult: 3,
    }
}

/// Two free UDP ports on loopback.
fn ports() -> (u16, u16) {
    let a = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let b = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// Waits until the status satisfies `f`; the state it settled in on timeout.
async fn wait_for(status: &mut watch::Receiver<SessionStatus>, f: impl Fn(&SessionStatus) -> bool) -> SessionStatus {
    let got = tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|s| *s));
    match got {
        Ok(Ok(s)) => s,
        _ => panic!("BFD status never matched; it is {:?}", *status.borrow()),
    }
}

#[tokio::test]
async fn two_services_bring_a_session_up_and_an_admin_down_is_no_failure() {
    let (pa, pb) = ports();
    let a = Bfd::with_ports(pa, pb);
    let b = Bfd::with_ports(pb, pa);
    let ha = a.add(LOOPBACK, Some(LOOPBACK), fast()).unwrap();
    let hb = b.add(LOOPBACK, None, fast()).unwrap();
    let mut sa = ha.status();
    let up = wait_for(&mut sa, |s| s.state == State::Up).await;
    wait_for(&mut hb.status(), |s| s.state == State::Up).await;
    // New timers on both sides (slower, then faster): a Poll sequence each, and no state change.
    for t in [40, 10] {
        let timers = Timers {
            desired_min_tx: Duration::from_millis(t),
            required_min_rx: Duration::from_millis(t),
            detect_mult: 3,
        };
        ha.set_timers(timers);
        hb.set_timers(timers);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A session that went down on the way would carry its reason (diag) even when Up again.
    let now = *sa.borrow();
    assert_eq!((now.state, now.diag), (State::Up, Diag::None), "the session stayed Up");
    // A second session to the same peer is refused.
    assert!(matches!(a.add(LOOPBACK, None, fast()), Err(Error::Exists(_))));
    // B's owner ends its session: A goes down, told so by B (AdminDown), which is not a failure.
    drop(hb);
    let down = wait_for(&mut sa, |s| s.state == State::Down).await;
    assert_eq!(down.remote_state, State::AdminDown, "{down:?}");
    assert_eq!(down.diag, Diag::NeighborSignaledSessionDown);
    assert!(
        !up.failed(&down),
        "an AdminDown peer must not take the client down (RFC 5882 §3.2)"
    );
    // B can start again, and the session comes back up.
    let hb = b.add(LOOPBACK, None, fast()).unwrap();
    wait_for(&mut sa, |s| s.state == State::Up).await;
    drop(hb);
}

#[test]
fn a_silent_peer_fails_the_session_after_the_detection_time() {
    let (pa, pb) = ports();
    let rt_a = tokio::runtime::Runtime::new().unwrap();
    let rt_b = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt_a.enter();
    let a = Bfd::with_ports(pa, pb);
    let ha = a.add(LOOPBACK, None, fast()).unwrap();
    let (b, hb) = {
        let _guard = rt_b.enter();
        let b = Bfd::with_ports(pb, pa);
        let hb = b.add(LOOPBACK, None, fast()).unwrap();
        (b, hb)
    };
    rt_a.block_on(async {
        let mut sa = ha.status();
        let up = wait_for(&mut sa, |s| s.state == State::Up).await;
        // Until B's first packet after the Poll sequence, A still expects B's slow rate (1 s × 3).
        tokio::time::sleep(Duration::from_millis(200)).await;
        // B's node dies: its tasks stop without a word.
        rt_b.shutdown_background();
        let started = Instant::now();
        let down = wait_for(&mut sa, |s| s.state != State::Up).await;
        let took = started.elapsed();
        assert_eq!(down.state, State::Down);
        assert_eq!(down.diag, Diag::ControlDetectionTimeExpired);
        assert!(up.failed(&down), "a silent peer is a failure the client acts on");
        // Detection time is 3 × 20 ms; a generous bound for a loaded machine, and it must not be the 1 s slow rate.
        assert!(took < Duration::from_millis(900), "took {took:?}");
    });
    drop((hb, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_with_a_ttl_below_255_are_dropped() {
    let (pa, pb) = ports();
    let a = Bfd::with_ports(pa, pb);
    let ha = a.add(LOOPBACK, None, fast()).unwrap();
    // A peer one hop away: its packets would bring the session up, but they arrive with TTL 254.
    let far = StdUdpSocket::bind(("127.0.0.1", pb)).unwrap();
    far.set_ttl(254).unwrap();
    far.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = far.recv(&mut buf).unwrap();
    let theirs = ControlPacket::decode(&buf[..n]).unwrap();
    let mut peer = Session::new(fast(), 99, 9);
    let now = std::time::Instant::now();
    for action in peer.received(now, &theirs).unwrap() {
        if let Action::Send(p) = action {
            far.send_to(&p.encode(), ("127.0.0.1", pa)).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ha.status().borrow().state,
        State::Down,
        "a routed packet moved the session"
    );
    // The same packet with TTL 255 is taken.
    far.set_ttl(255).unwrap();
    for action in peer.poll(now + Duration::from_secs(2)) {
        if let Action::Send(p) = action {
            far.send_to(&p.encode(), ("127.0.0.1", pa)).unwrap();
        }
    }
    wait_for(&mut ha.status(), |s| s.state != State::Down).await;
}

#[tokio::test]
async fn a_taken_port_names_the_other_daemon() {
    let taken = StdUdpSocket::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let a = Bfd::with_ports(port, port);
    let e = a.add(LOOPBACK, None, fast()).err().expect("the port is taken");
    let text = e.to_string();
    assert!(text.contains("another BFD daemon"), "{text}");
    assert!(text.contains(&port.to_string()), "{text}");
}

#[tokio::test]
async fn an_abandoned_session_goes_silent_and_the_peer_times_it_out() {
    let (pa, pb) = ports();
    let a = Bfd::with_ports(pa, pb);
    let b = Bfd::with_ports(pb, pa);
    let ha = a.add(LOOPBACK, None, fast()).unwrap();
    let hb = b.add(LOOPBACK, None, fast()).unwrap();
    let mut sa = ha.status();
    wait_for(&mut sa, |s| s.state == State::Up).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A graceful restart of B's speaker: no AdminDown, A finds out by its detection time.
    hb.abandon();
    let down = wait_for(&mut sa, |s| s.state != State::Up).await;
    assert_eq!(
        (down.state, down.diag, down.remote_state),
        (State::Down, Diag::ControlDetectionTimeExpired, State::Up),
        "A heard nothing more from B"
    );
    // B's address is free for a new session.
    let _again = b.add(LOOPBACK, None, fast()).unwrap();
}
