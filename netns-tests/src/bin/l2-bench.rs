//! Layer 2 responder benchmark: ARP requests answered per second and reply latency, Herald (10,000 announced
//! addresses) next to the Linux kernel answering for an address configured on the same interface, in one run.
//!
//! Run as root: `cargo run --release -p herald-netns-tests --bin l2-bench` (after `cargo build --release --bin
//! herald`, or with `HERALD_BIN` set). Options: `--seconds N` per phase (default 5), `--window N` requests in
//! flight (default 32).
//!
//! Topology: the `L2Lab` of the netns tests (client and node on a bridge). The node's kernel owns 192.0.2.254/24 on
//! eth0; Herald answers on the same eth0 for 507 IPv4 addresses (198.51.100.2–254, 203.0.113.1–254) plus 9,493
//! IPv6 addresses in 2001:db8:1::/64, 10,000 in all (the IPv4 documentation ranges hold fewer than 10,000
//! addresses; every address shares one lookup table, so the IPv6 ones make the table as large as asked). The
//! client sends ARP requests from a packet socket, keeping `window` in flight (one per sender address
//! 192.0.2.1–window, so replies match requests), and times each reply.
//!
//! The binary re-runs itself inside the client namespace (`measure` mode) and prints a Markdown table.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use herald_netns_tests::l2::{L2Lab, arping, until_answered};
use herald_netns_tests::require;
use herald_sys::packet::{PacketSocket, SockFilter};

const KERNEL_IP: &str = "192.0.2.254";
const IPV6_ADDRESSES: usize = 9_493;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("measure") {
        return measure(&args[2..]);
    }
    let seconds = option(&args, "--seconds").unwrap_or(5);
    let window = option(&args, "--window").unwrap_or(32);
    if !require(&["ip", "arping"]) {
        bail!("l2-bench needs root, ip and arping");
    }
    orchestrate(seconds, window)
}

fn option(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn herald_ipv4() -> Vec<Ipv4Addr> {
    let a = (2..=254).map(|i| Ipv4Addr::new(198, 51, 100, i));
    let b = (1..=254).map(|i| Ipv4Addr::new(203, 0, 113, i));
    a.chain(b).collect()
}

fn orchestrate(seconds: u64, window: u64) -> Result<()> {
    let mut l2 = L2Lab::new("l2-bench")?;
    let node = l2.node.clone();
    l2.lab.addr(&node, "eth0", &format!("{KERNEL_IP}/24"))?;
    let v4 = herald_ipv4();
    let mut ips: Vec<String> = v4.iter().map(ToString::to_string).collect();
    ips.extend((1..=IPV6_ADDRESSES).map(|i| format!("2001:db8:1::{:x}:{:x}", i >> 16, i & 0xffff)));
    let announced = ips.len();
    let mut args: Vec<&str> = vec!["--no-probe", "--refresh-interval", "0"];
    args.extend(ips.iter().map(String::as_str));
    eprintln!("starting herald with {announced} addresses ...");
    let herald = l2.start_herald_env("eth0", &args, &[("RUST_LOG", "warn")])?;
    let last = v4.last().map(ToString::to_string).unwrap_or_default();
    let (lab, client) = (&l2.lab, &l2.client);
    let up = until_answered(60, || arping(lab, client, "eth0", &last, 1))?;
    if up.is_empty() {
        bail!("herald never answered for {last}:\n{}", l2.lab.proc(herald).stderr());
    }
    // Let the takeover burst (5 rounds over 2 s for every address) end before measuring.
    std::thread::sleep(Duration::from_secs(4));

    let me = std::env::current_exe()?;
    let targets = v4.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let mut rows = Vec::new();
    for (label, targets) in [
        (format!("Herald ({announced} addresses)"), targets.as_str()),
        ("Linux kernel (1 address)".to_string(), KERNEL_IP),
    ] {
        eprintln!("measuring {label} for {seconds} s ...");
        let out = Command::new("ip")
            .args(["netns", "exec", client.name()])
            .arg(&me)
            .args([
                "measure",
                "eth0",
                &l2.node_mac,
                targets,
                &seconds.to_string(),
                &window.to_string(),
            ])
            .output()?;
        if !out.status.success() {
            bail!("measure failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        rows.push((label, String::from_utf8_lossy(&out.stdout).trim().to_string()));
    }
    if let Some(code) = l2.lab.proc(herald).exited() {
        bail!(
            "herald exited ({code}) during the benchmark:\n{}",
            l2.lab.proc(herald).stderr()
        );
    }
    let rate = |row: &str| {
        row.split('|')
            .nth(4)
            .and_then(|c| c.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    println!("| responder | requests sent | answered | answered/s | lost | p50 latency | p99 latency |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, row) in &rows {
        println!("| {label} {row}");
    }
    let (h, k) = (rate(&rows[0].1), rate(&rows[1].1));
    if k > 0.0 {
        println!(
            "\nHerald / kernel answered-per-second ratio: {:.2} (window {window}, {seconds} s per phase)",
            h / k
        );
    }
    Ok(())
}

/// `measure IFACE NODE_MAC TARGETS SECONDS WINDOW`: runs inside the client namespace; prints one table row tail.
fn measure(args: &[String]) -> Result<()> {
    let [iface, node_mac, targets, seconds, window] = args else {
        bail!("measure IFACE NODE_MAC TARGETS SECONDS WINDOW")
    };
    let node_mac = parse_mac(node_mac)?;
    let targets: Vec<Ipv4Addr> = targets.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let seconds: u64 = seconds.parse()?;
    let window: u8 = window.parse::<u8>().context("window must be 1..=250")?.clamp(1, 250);

    let ifindex = ifindex(iface)?;
    // Receive ARP replies only: ldh [12] == 0x0806 && ldh [20] == 2.
    let filter = [
        SockFilter::new(0x28, 0, 0, 12),
        SockFilter::new(0x15, 0, 3, 0x0806),
        SockFilter::new(0x28, 0, 0, 20),
        SockFilter::new(0x15, 0, 1, 2),
        SockFilter::new(0x06, 0, 0, 0x40000),
        SockFilter::new(0x06, 0, 0, 0),
    ];
    let socket = PacketSocket::open(ifindex, &filter, false)?;
    socket.set_read_timeout(Some(Duration::from_millis(5)))?;
    let our_mac = own_mac(iface)?;

    let timeout = Duration::from_millis(200);
    let mut in_flight: Vec<Option<Instant>> = vec![None; usize::from(window) + 1];
    let mut free: VecDeque<u8> = (1..=window).collect();
    let mut next_target = 0usize;
    let (mut sent, mut answered, mut lost) = (0u64, 0u64, 0u64);
    let mut latencies: Vec<Duration> = Vec::new();
    let mut buf = [0u8; 2048];
    let warmup = Duration::from_millis(500);
    let start = Instant::now();
    let end = start + warmup + Duration::from_secs(seconds);
    let mut measuring_since = None;
    while Instant::now() < end {
        if measuring_since.is_none() && start.elapsed() >= warmup {
            measuring_since = Some(Instant::now());
            (sent, answered, lost) = (0, 0, 0);
            latencies.clear();
        }
        while let Some(slot) = free.pop_front() {
            let target = targets[next_target % targets.len()];
            next_target += 1;
            let frame = arp_request(our_mac, Ipv4Addr::new(192, 0, 2, slot), target);
            socket.send(&frame)?;
            in_flight[usize::from(slot)] = Some(Instant::now());
            sent += 1;
        }
        match socket.recv(&mut buf) {
            Ok(len) if len >= 42 => {
                let now = Instant::now();
                // Reply from the node, to us (target MAC), for the request of slot `tpa` = 192.0.2.<slot>.
                let ours = buf[6..12] == node_mac && buf[32..38] == our_mac && buf[38..41] == [192, 0, 2];
                let slot = buf[41];
                if ours
                    && (1..=window).contains(&slot)
                    && let Some(at) = in_flight[usize::from(slot)].take()
                {
                    latencies.push(now - at);
                    answered += 1;
                    free.push_back(slot);
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        for slot in 1..=window {
            if in_flight[usize::from(slot)].is_some_and(|at| now - at > timeout) {
                in_flight[usize::from(slot)] = None;
                lost += 1;
                free.push_back(slot);
            }
        }
    }
    let elapsed = measuring_since
        .map_or(Duration::from_secs(seconds), |t| t.elapsed())
        .as_secs_f64();
    latencies.sort();
    let pct = |p: f64| -> String {
        if latencies.is_empty() {
            return "-".into();
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        format!("{:.0} µs", latencies[i].as_secs_f64() * 1e6)
    };
    println!(
        "| {sent} | {answered} | {:.0} | {lost} | {} | {} |",
        answered as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

/// A broadcast ARP request (RFC 826) for `target` from `sender`, padded to 60 bytes.
fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a MAC address"))
}

fn ifindex(iface: &str) -> Result<u32> {
    let facts = herald_sys::iface::interface(iface)?.with_context(|| format!("no interface {iface}"))?;
    Ok(facts.index)
}

fn own_mac(iface: &str) -> Result<[u8; 6]> {
    let facts = herald_sys::iface::interface(iface)?.with_context(|| format!("no interface {iface}"))?;
    facts.mac.with_context(|| format!("{iface} has no MAC"))
}
