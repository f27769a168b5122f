//! The fixture itself: namespaces are created, connected, and gone after the lab drops.

use std::process::Command;

use herald_netns_tests::{Lab, require};

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn lab_connects_namespaces_and_cleans_up() {
    if !require(&["ip", "ping"]) {
        return;
    }
    let names;
    {
        let mut lab = Lab::new("fixture");
        let sw = lab.netns("sw");
        let a = lab.netns("a");
        let b = lab.netns("b");
        lab.bridge(&sw, "br0").unwrap();
        lab.attach(&sw, "br0", "pa", &a, "eth0").unwrap();
        lab.attach(&sw, "br0", "pb", &b, "eth0").unwrap();
        lab.addr(&a, "eth0", "192.0.2.1/24").unwrap();
        lab.addr(&b, "eth0", "192.0.2.2/24").unwrap();
        let out = lab.exec(&a, &["ping", "-c1", "-W2", "192.0.2.2"]).unwrap();
        assert!(out.status.success(), "ping across the bridge failed: {out:?}");
        let idx = lab.spawn(&b, "sleeper", &["sleep", "60"]).unwrap();
        assert!(lab.proc(idx).exited().is_none());
        names = [sw.name().to_string(), a.name().to_string(), b.name().to_string()];
        assert!(names.iter().all(|n| netns_exists(n)));
    }
    for n in &names {
        assert!(!netns_exists(n), "namespace {n} left behind");
    }
}
