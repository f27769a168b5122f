//! Memory held by the allocator, measured as the growth of the process's resident set (VmRSS in
//! /proc/self/status) while building each state; the requests themselves are built before the first
//! reading, so what is counted is the allocator's own copy. Each scenario runs in a fresh child process so
//! that memory freed by one cannot be reused by the next. Linux only.
//!
//! cargo bench -p herald-ipam --bench memory

use std::net::{IpAddr, Ipv6Addr};
use std::process::Command;
use std::str::FromStr;

use herald_ipam::{Allocator, Family, Pool, PoolSpec, ServiceRequest};

/// (label, pool, family, allocations, request every other address instead of taking the lowest free)
const SCENARIOS: [(&str, &str, Family, usize, bool); 6] = [
    ("ipv6 /64, no allocations", "2001:db8::/64", Family::V6, 0, false),
    ("ipv4 /8, no allocations", "10.0.0.0/8", Family::V4, 0, false),
    (
        "ipv6 /64, 100k allocations",
        "2001:db8::/64",
        Family::V6,
        100_000,
        false,
    ),
    ("ipv4 /16, 65k allocations", "10.0.0.0/16", Family::V4, 65_000, false),
    ("ipv4 /8, 100k allocations", "10.0.0.0/8", Family::V4, 100_000, false),
    (
        "ipv6 /64, 100k at every other address",
        "2001:db8::/64",
        Family::V6,
        100_000,
        true,
    ),
];

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Builds one scenario and prints `held bytes`.
fn measure(index: usize) {
    let (_, cidr, family, n, spaced) = SCENARIOS[index];
    let base = u128::from(Ipv6Addr::from_str("2001:db8::").expect("literal"));
    let requests: Vec<ServiceRequest> = (0..n)
        .map(|i| {
            let mut r = ServiceRequest::new("bench", format!("svc-{i}"));
            r.ip_families = vec![family];
            if spaced {
                // One free address between any two held ones: as many intervals as allocations.
                r.requested_ips = vec![IpAddr::V6(Ipv6Addr::from(base + 1 + 2 * i as u128))];
            }
            r
        })
        .collect();
    let before = rss_kib();
    let mut a = Allocator::new();
    a.set_pool(Pool::parse(&PoolSpec::new("pool", &[cidr])).expect("valid pool"));
    for r in &requests {
        a.allocate(r).expect("free address");
    }
    let after = rss_kib();
    println!("{} {}", a.service_count(), after.saturating_sub(before) * 1024);
    drop(a);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--scenario") {
        let index = args.get(pos + 1).and_then(|s| s.parse().ok()).expect("scenario index");
        measure(index);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench` probes harness=false binaries with --list; nothing to list
    }
    let exe = std::env::current_exe().expect("own path");
    println!("| scenario | Services holding | RSS growth | per Service |");
    println!("|---|---:|---:|---:|");
    for (index, (label, ..)) in SCENARIOS.iter().enumerate() {
        let out = Command::new(&exe)
            .args(["--scenario", &index.to_string()])
            .output()
            .expect("run scenario");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
        let (held, bytes) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
        let per = bytes
            .checked_div(held)
            .map_or_else(|| "-".to_string(), |b| format!("{b} B"));
        println!(
            "| {label} | {held} | {:.1} MiB | {per} |",
            bytes as f64 / (1024.0 * 1024.0)
        );
    }
}
