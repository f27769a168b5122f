//! `herald migrate` on the wire: a dual-stack Service that MetalLB left holding the network addresses of its pool's
//! CIDRs (MetalLB hands them out; a Herald CIDR would not), MetalLB's configuration migrated, Herald's agents started:
//! the client's ARP and NDP probes for the same two IPs are answered by a Herald node, in Layer 2 as MetalLB
//! announced them, and the Service's status never changes.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use herald_netns_tests::cluster::{Cluster, ClusterOptions, epoch_now};
use herald_netns_tests::{herald_bin, require, wait_for};

/// MetalLB's configuration, as its documentation writes it.
const METALLB: &str = "\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: metallb-system}
spec:
  addresses: [192.0.2.200/29, '2001:db8:1::200/125']
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: lan, namespace: metallb-system}
spec:
  ipAddressPools: [lan]
";

/// The Service as MetalLB left it: its pool annotation, no class, and the first address of each CIDR.
const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations: {metallb.io/address-pool: lan, metallb.io/ip-allocated-from-pool: lan}
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP}]
";

const IPS: [&str; 2] = ["192.0.2.200", "2001:db8:1::200"];

#[test]
fn a_service_metallb_left_is_answered_by_herald_on_the_same_ips() {
    if !require(&["ip", "arping", "ndisc6", "tcpdump", "kubectl", "python3", "nft"]) {
        return;
    }
    let mut c = Cluster::start("migrate", &ClusterOptions::default()).expect("start the cluster");
    // MetalLB's time: no Herald agent runs, and the Service gets its addresses from MetalLB's controller.
    for i in 0..c.nodes.len() {
        c.signal_agent(i, "TERM").unwrap();
        assert!(
            c.wait_agent_exit(i, Duration::from_secs(20)).is_some(),
            "agent {i} stops"
        );
    }
    c.kubectl(&["delete", "eip", "--all"]).unwrap();
    c.apply(SERVICE).unwrap();
    let status = format!(
        r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{}","ipMode":"VIP"}},{{"ip":"{}","ipMode":"VIP"}}]}}}}}}"#,
        IPS[0], IPS[1]
    );
    c.kubectl(&[
        "patch",
        "service",
        "web",
        "-n",
        "default",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])
    .unwrap();
    c.set_endpoints("web", &["node1", "node2", "node3"]).unwrap();

    // The move: convert, apply, start Herald.
    let input = c.lab.dir().join("metallb.yaml");
    std::fs::write(&input, METALLB).unwrap();
    let out = Command::new(herald_bin())
        .args(["migrate", "--from", "metallb"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("192.0.2.200-192.0.2.207"),
        "MetalLB's CIDR as the range it hands out:\n{yaml}"
    );
    c.apply(&yaml).unwrap();
    let probes: Vec<_> = IPS
        .iter()
        .map(|ip| c.probe(ip.parse().unwrap(), Duration::from_millis(50)).unwrap())
        .collect();
    let t = epoch_now();
    for i in 0..c.nodes.len() {
        c.start_agent(i).unwrap();
    }
    for probe in &probes {
        let mac = probe.wait_answer(t, Duration::from_secs(30), |_| true);
        let mac = mac.unwrap_or_else(|| panic!("{} never answered", probe.ip()));
        assert!(
            c.node_of_mac(&mac).is_some(),
            "{} answered by {mac}, not a node",
            probe.ip()
        );
    }
    // Herald took the Service over on its addresses, and they never changed.
    let taken = wait_for(Duration::from_secs(30), || {
        let svc = c.get_json(&["service", "web", "-n", "default"]).ok()?;
        (svc["metadata"]["annotations"]["herald.dev/allocated-from"] == "lan").then_some(svc)
    })
    .expect("herald.dev/allocated-from: lan");
    let ingress: Vec<IpAddr> = taken["status"]["loadBalancer"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ip"].as_str().unwrap().parse().unwrap())
        .collect();
    let expected: Vec<IpAddr> = IPS.iter().map(|ip| ip.parse().unwrap()).collect();
    assert_eq!(ingress, expected);
    let eip = c.get_json(&["eip", "lan"]).unwrap();
    assert_eq!(eip["spec"]["protocol"], "layer2");
}
