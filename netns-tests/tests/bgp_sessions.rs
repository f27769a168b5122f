//! Session behaviour against real routers: TCP MD5, hold-timer expiry of a frozen speaker, graceful restart of the
//! speaker without route loss at the router, and passive mode (the router connects to the speaker; both connect and
//! RFC 4271 §6.8 collision detection keeps one connection).

use std::time::{Duration, Instant};

use herald_netns_tests::bgp::{BgpLab, RouterKind, RouterSpec, node_v4};
use herald_netns_tests::{require, wait_for};

const T: Duration = Duration::from_secs(20);
const PREFIX: &str = "203.0.113.20/32";

fn md5(kind: RouterKind) {
    if !require(kind.tools()) {
        return;
    }
    let mut bgp = BgpLab::new(&format!("bgp-md5-{kind:?}").to_lowercase(), 2).unwrap();
    let mut spec = RouterSpec::new(kind, 2);
    spec.md5 = Some("s3cret-key".into());
    bgp.start_router(spec).unwrap();
    let good = bgp.lab.dir().join("good.key");
    let bad = bgp.lab.dir().join("bad.key");
    std::fs::write(&good, "s3cret-key\n").unwrap();
    std::fs::write(&bad, "wrong-key\n").unwrap();
    let v4 = herald_netns_tests::bgp::ROUTER_V4;
    bgp.start_speaker_to(1, &[v4], &["--password-file", good.to_str().unwrap()], &[PREFIX])
        .unwrap();
    let mismatched = bgp
        .start_speaker_to(
            2,
            &[v4],
            &["--password-file", bad.to_str().unwrap()],
            &["203.0.113.21/32"],
        )
        .unwrap();

    bgp.router().wait_established(&node_v4(1), T).unwrap();
    bgp.router().wait_route(PREFIX, &[&node_v4(1)], T).unwrap();

    // The mismatched speaker's SYNs are dropped by the router's kernel: herald must say why it gets no answer.
    let reason = wait_for(T, || {
        let err = bgp.lab.proc(mismatched).stderr();
        err.contains("TCP MD5 key mismatch or peer not configured for MD5?")
            .then_some(())
    });
    assert!(
        reason.is_some(),
        "no MD5 hint in: {}",
        bgp.lab.proc(mismatched).stderr()
    );
    assert!(!bgp.router().established(&node_v4(2)));
    assert!(bgp.router().route("203.0.113.21/32").is_empty());
}

#[test]
fn bird_md5_match_and_mismatch() {
    md5(RouterKind::Bird);
}

#[test]
fn frr_md5_match_and_mismatch() {
    md5(RouterKind::Frr);
}

#[test]
fn gobgp_md5_match_and_mismatch() {
    md5(RouterKind::Gobgp);
}

fn hold_timer(kind: RouterKind) {
    if !require(kind.tools()) {
        return;
    }
    let mut bgp = BgpLab::new(&format!("bgp-hold-{kind:?}").to_lowercase(), 1).unwrap();
    let mut spec = RouterSpec::new(kind, 1);
    spec.hold_time = 3;
    bgp.start_router(spec).unwrap();
    let v4 = herald_netns_tests::bgp::ROUTER_V4;
    let herald = bgp
        .start_speaker_to(1, &[v4], &["--hold-time", "3"], &[PREFIX])
        .unwrap();
    bgp.router().wait_route(PREFIX, &[&node_v4(1)], T).unwrap();

    // A frozen speaker sends no keepalives: the router's 3 s hold timer expires and the route goes.
    bgp.lab.proc(herald).signal("STOP").unwrap();
    let frozen = Instant::now();
    bgp.router().wait_no_route(PREFIX, T).unwrap();
    assert!(!bgp.router().established(&node_v4(1)));
    eprintln!("route withdrawn {:?} after SIGSTOP", frozen.elapsed());

    // Thawed, it notices the dead session and comes back.
    bgp.lab.proc(herald).signal("CONT").unwrap();
    bgp.router()
        .wait_route(PREFIX, &[&node_v4(1)], Duration::from_secs(60))
        .unwrap();
    let log = bgp.lab.proc(herald).stderr();
    assert!(
        log.contains("Hold Timer Expired") || log.contains("connection closed") || log.contains("hold timer expired"),
        "herald did not report the dead session: {log}"
    );
}

#[test]
fn bird_hold_timer_expiry_when_speaker_frozen() {
    hold_timer(RouterKind::Bird);
}

#[test]
fn frr_hold_timer_expiry_when_speaker_frozen() {
    hold_timer(RouterKind::Frr);
}

#[test]
fn gobgp_hold_timer_expiry_when_speaker_frozen() {
    hold_timer(RouterKind::Gobgp);
}

fn graceful_restart(kind: RouterKind) {
    if !require(kind.tools()) {
        return;
    }
    let mut bgp = BgpLab::new(&format!("bgp-gr-{kind:?}").to_lowercase(), 1).unwrap();
    let mut spec = RouterSpec::new(kind, 1);
    spec.graceful_restart = true;
    bgp.start_router(spec).unwrap();
    let v4 = herald_netns_tests::bgp::ROUTER_V4;
    let args = ["--graceful-restart", "--restart-time", "60"];
    let first = bgp.start_speaker_to(1, &[v4], &args, &[PREFIX]).unwrap();
    bgp.router().wait_route(PREFIX, &[&node_v4(1)], T).unwrap();

    // SIGTERM with --graceful-restart closes the session without a NOTIFICATION: the router keeps the route.
    bgp.lab.proc(first).signal("TERM").unwrap();
    assert_eq!(bgp.lab.proc(first).wait_exit(T), Some(0));
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(2) {
        assert!(
            !bgp.router().route(PREFIX).is_empty(),
            "route lost {:?} after the speaker stopped",
            down.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = bgp.start_speaker_to(1, &[v4], &args, &[PREFIX]).unwrap();
    let established = Instant::now();
    let mut up = false;
    // Throughout the reconnect and for a while after End-of-RIB, the route never disappears.
    while established.elapsed() < Duration::from_secs(8) {
        assert!(!bgp.router().route(PREFIX).is_empty(), "route lost during the restart");
        up |= bgp.router().established(&node_v4(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "the restarted speaker never re-established");
    assert!(bgp.lab.proc(second).exited().is_none());
}

#[test]
fn bird_graceful_restart_keeps_routes() {
    graceful_restart(RouterKind::Bird);
}

#[test]
fn frr_graceful_restart_keeps_routes() {
    graceful_restart(RouterKind::Frr);
}

#[test]
fn gobgp_graceful_restart_keeps_routes() {
    graceful_restart(RouterKind::Gobgp);
}

fn router_restart(kind: RouterKind) {
    if !require(kind.tools()) {
        return;
    }
    let mut bgp = BgpLab::new(&format!("bgp-peer-restart-{kind:?}").to_lowercase(), 1).unwrap();
    bgp.start_router(RouterSpec::new(kind, 1)).unwrap();
    let herald = bgp.start_speaker(1, &[], &[PREFIX, "2001:db8:30::/64"]).unwrap();
    bgp.router().wait_route(PREFIX, &[&node_v4(1)], T).unwrap();

    // The router dies without a word and comes back empty: herald reconnects and announces everything again.
    bgp.restart_router().unwrap();
    bgp.router()
        .wait_route(PREFIX, &[&node_v4(1)], Duration::from_secs(40))
        .unwrap();
    bgp.router()
        .wait_route("2001:db8:30::/64", &[&herald_netns_tests::bgp::node_v6(1)], T)
        .unwrap();
    assert!(bgp.lab.proc(herald).exited().is_none());
}

#[test]
fn bird_restart_gets_routes_again() {
    router_restart(RouterKind::Bird);
}

#[test]
fn gobgp_restart_gets_routes_again() {
    router_restart(RouterKind::Gobgp);
}

/// The router reaches the speaker, the speaker cannot reach the router: the session runs on the router's connection.
fn passive(kind: RouterKind, md5: bool) {
    if !require(kind.tools()) {
        return;
    }
    let mut bgp = BgpLab::new(&format!("bgp-passive-{kind:?}").to_lowercase(), 1).unwrap();
    let mut spec = RouterSpec::new(kind, 1);
    spec.connect_retry = Some(1);
    spec.md5 = md5.then(|| "s3cret-key".to_string());
    let mut extra = vec!["--passive".to_string()];
    if kind == RouterKind::Gobgp {
        // GoBGP can run without a listening socket: it only connects out.
        spec.listen = false;
    } else {
        // The others listen on 179; the speaker knocks on a port where nothing listens.
        extra.extend(["--peer-port".into(), "1790".into()]);
    }
    if md5 {
        let key = bgp.lab.dir().join("md5.key");
        std::fs::write(&key, "s3cret-key\n").unwrap();
        extra.extend(["--password-file".into(), key.display().to_string()]);
    }
    bgp.start_router(spec).unwrap();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let herald = bgp.start_speaker(1, &extra, &[PREFIX, "2001:db8:40::/64"]).unwrap();

    bgp.router().wait_established(&node_v4(1), T).unwrap();
    bgp.router().wait_route(PREFIX, &[&node_v4(1)], T).unwrap();
    bgp.router()
        .wait_route("2001:db8:40::/64", &[&herald_netns_tests::bgp::node_v6(1)], T)
        .unwrap();
    let v4 = herald_netns_tests::bgp::ROUTER_V4;
    let conns = bgp.bgp_connections(1, v4).unwrap();
    assert_eq!(conns.len(), 1, "one connection: {conns:?}");
    assert!(
        conns[0].0.ends_with(":179"),
        "the session runs on the router's connection to the speaker's port 179: {conns:?}"
    );
    let log = bgp.lab.proc(herald).stderr();
    assert!(log.contains("connection from the peer accepted"), "{log}");

    // SIGINT still withdraws over the accepted connection.
    bgp.lab.proc(herald).signal("INT").unwrap();
    bgp.router().wait_no_route(PREFIX, T).unwrap();
}

#[test]
fn gobgp_connects_to_a_passive_speaker() {
    passive(RouterKind::Gobgp, false);
}

#[test]
fn frr_connects_to_a_passive_speaker_with_md5() {
    passive(RouterKind::Frr, true);
}

#[test]
fn bird_connects_to_a_passive_speaker() {
    passive(RouterKind::Bird, false);
}

/// Both sides connect (the router retries every second, the speaker connects out as it starts and listens):
/// exactly one connection remains, the session is up and the routes arrive, on each of three starts of the speaker.
/// Whether the two connections meet depends on timing (routers drop their own attempt once ours is in); the
/// collision rules themselves are tested deterministically in `crates/bgp` (FSM scripts and `tests/speaker.rs`).
fn passive_both_connect(kind: RouterKind) {
    if !require(kind.tools()) {
        return;
    }
    let mut bgp = BgpLab::new(&format!("bgp-both-{kind:?}").to_lowercase(), 1).unwrap();
    let mut spec = RouterSpec::new(kind, 1);
    spec.connect_retry = Some(1);
    bgp.start_router(spec).unwrap();
    let v4 = herald_netns_tests::bgp::ROUTER_V4;
    let mut collisions = 0;
    for round in 0..3 {
        let herald = bgp.start_speaker_to(1, &[v4], &["--passive"], &[PREFIX]).unwrap();
        bgp.router().wait_established(&node_v4(1), T).unwrap();
        bgp.router().wait_route(PREFIX, &[&node_v4(1)], T).unwrap();
        // Give a second connection time to appear and be resolved; then exactly one must remain.
        let settled = wait_for(T, || {
            std::thread::sleep(Duration::from_secs(2));
            let conns = bgp.bgp_connections(1, v4).ok()?;
            (conns.len() == 1 && bgp.router().established(&node_v4(1))).then_some(conns)
        });
        let log = bgp.lab.proc(herald).stderr();
        let conns = settled.unwrap_or_else(|| {
            panic!(
                "round {round}: not exactly one established connection: {:?}\n{log}",
                bgp.bgp_connections(1, v4),
            )
        });
        assert!(!bgp.router().route(PREFIX).is_empty());
        if log.contains("connection collision") || log.contains("Connection Collision Resolution") {
            collisions += 1;
        }
        eprintln!("round {round}: surviving connection {conns:?}");
        bgp.lab.proc(herald).signal("INT").unwrap();
        assert_eq!(bgp.lab.proc(herald).wait_exit(T), Some(0));
        bgp.router().wait_no_route(PREFIX, T).unwrap();
    }
    eprintln!("collisions resolved by the speaker: {collisions} of 3 rounds");
}

#[test]
fn bird_and_passive_speaker_both_connecting_keep_one_session() {
    passive_both_connect(RouterKind::Bird);
}

#[test]
fn frr_and_passive_speaker_both_connecting_keep_one_session() {
    passive_both_connect(RouterKind::Frr);
}
