//! `herald announce bgp` against real routers: GoBGP, BIRD 2 and FRR.

use std::time::Duration;

use herald_netns_tests::bgp::{BgpLab, ROUTER_V4, ROUTER_V6, RouterKind, RouterSpec, node_v4, node_v6};
use herald_netns_tests::require;

const T: Duration = Duration::from_secs(20);

fn announce_and_withdraw(kind: RouterKind) {
    if !require(kind.tools()) {
        return;
    }
    let mut bgp = BgpLab::new(&format!("bgp-basic-{kind:?}").to_lowercase(), 1).unwrap();
    bgp.start_router(RouterSpec::new(kind, 1)).unwrap();
    let herald = bgp
        .start_speaker(
            1,
            &["--community", "64512:100", "--large-community", "64512:1:2"],
            &[
                "203.0.113.10/32",
                "198.51.100.128/25",
                "2001:db8:10::/64",
                "2001:db8:20::5",
            ],
        )
        .unwrap();
    let router = bgp.router();
    router.wait_established(&node_v4(1), T).unwrap();
    router.wait_established(&node_v6(1), T).unwrap();
    let community = router.community(64512, 100);
    let large = router.large_community(64512, 1, 2);
    // eBGP: AS_PATH is the node's ASN, next hop the node's address, communities as given.
    router
        .wait_route("203.0.113.10/32", &[&node_v4(1), "64512", &community, &large], T)
        .unwrap();
    router.wait_route("198.51.100.128/25", &[&node_v4(1)], T).unwrap();
    router.wait_route("2001:db8:10::/64", &[&node_v6(1)], T).unwrap();
    router.wait_route("2001:db8:20::5/128", &[&node_v6(1)], T).unwrap();

    bgp.lab.proc(herald).signal("INT").unwrap();
    assert_eq!(bgp.lab.proc(herald).wait_exit(T), Some(0), "herald exits 0 on SIGINT");
    let router = bgp.router();
    router.wait_no_route("203.0.113.10/32", T).unwrap();
    router.wait_no_route("2001:db8:10::/64", T).unwrap();
    let _ = (ROUTER_V4, ROUTER_V6);
}

#[test]
fn bird_announce_and_withdraw() {
    announce_and_withdraw(RouterKind::Bird);
}

#[test]
fn frr_announce_and_withdraw() {
    announce_and_withdraw(RouterKind::Frr);
}

#[test]
fn gobgp_announce_and_withdraw() {
    announce_and_withdraw(RouterKind::Gobgp);
}
