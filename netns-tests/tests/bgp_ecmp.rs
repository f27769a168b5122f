//! Three nodes announce one /32: the router installs an ECMP route over all three and a client behind it reaches
//! every node; a node that dies drops out of the route.

use std::time::Duration;

use herald_netns_tests::bgp::{BgpLab, RouterKind, RouterSpec, node_v4};
use herald_netns_tests::{require, wait_for};

const SERVICE: &str = "203.0.113.10";
const T: Duration = Duration::from_secs(20);

fn ecmp(kind: RouterKind) {
    let mut tools = kind.tools().to_vec();
    tools.push("python3");
    if !require(&tools) {
        return;
    }
    let mut bgp = BgpLab::new(&format!("bgp-ecmp-{kind:?}").to_lowercase(), 3).unwrap();
    bgp.start_router(RouterSpec::new(kind, 3)).unwrap();
    let mut speakers = Vec::new();
    for i in 1..=3 {
        bgp.serve_on_node(i, SERVICE).unwrap();
        speakers.push(bgp.start_speaker(i, &[], &[&format!("{SERVICE}/32")]).unwrap());
    }
    let all: Vec<String> = (1..=3).map(node_v4).collect();
    let hops = wait_for(T, || bgp.kernel_next_hops(SERVICE).ok().filter(|h| *h == all));
    assert_eq!(
        hops,
        Some(all.clone()),
        "kernel route: {:?}",
        bgp.kernel_next_hops(SERVICE)
    );

    // Flows hash on ports: enough connections reach every node.
    let reached = bgp.client_reaches(SERVICE, 60).unwrap();
    assert_eq!(reached, vec!["node1", "node2", "node3"]);

    bgp.lab.proc(speakers[2]).signal("KILL").unwrap();
    let two = all[..2].to_vec();
    let hops = wait_for(T, || bgp.kernel_next_hops(SERVICE).ok().filter(|h| *h == two));
    assert_eq!(
        hops,
        Some(two),
        "after killing node 3: {:?}",
        bgp.kernel_next_hops(SERVICE)
    );
    let reached = bgp.client_reaches(SERVICE, 30).unwrap();
    assert_eq!(reached, vec!["node1", "node2"]);
}

#[test]
fn bird_ecmp_across_three_nodes() {
    ecmp(RouterKind::Bird);
}

#[test]
fn frr_ecmp_across_three_nodes() {
    ecmp(RouterKind::Frr);
}
