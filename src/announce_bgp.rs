//! `herald announce bgp`: open BGP sessions and announce prefixes, without Kubernetes.
//!
//! Session state changes go to stderr (tracing). SIGINT withdraws (Cease / Administrative Shutdown) and exits 0;
//! SIGTERM does the same unless `--graceful-restart` is set, in which case the sessions are closed without a
//! NOTIFICATION so the routers keep the routes for the restart time (what a rolling update of the agent does).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use herald_bgp::fsm::GracefulRestart;
use herald_bgp::neighbor::{DEFAULT_HOLD_TIME, DEFAULT_PORT, DEFAULT_RESTART_TIME};
use herald_bgp::packet::LargeCommunity;
use herald_bgp::rib::{parse_community, parse_large_community};
use herald_bgp::{PeerConfig, RoutePolicy, ShutdownMode, Speaker, SpeakerConfig};
use ipnet::IpNet;
use tokio::signal::unix::{SignalKind, signal};

/// Arguments of `herald announce bgp`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: herald announce bgp --local-asn 64512 --peer 192.0.2.1 --peer-asn 64500 192.0.2.10/32"
)]
pub struct AnnounceBgpArgs {
    /// Local AS number (1-4294967295).
    #[arg(long, value_parser = parse_asn)]
    pub local_asn: u32,
    /// Peer address; repeat for several peers, each paired in order with a --peer-asn.
    #[arg(long = "peer", required = true)]
    pub peers: Vec<IpAddr>,
    /// AS number of the peer given at the same position.
    #[arg(long = "peer-asn", required = true, value_parser = parse_asn)]
    pub peer_asns: Vec<u32>,
    /// TCP port of the peers.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub peer_port: u16,
    /// BGP identifier; default: the IPv4 source address towards the first IPv4 peer.
    #[arg(long)]
    pub router_id: Option<Ipv4Addr>,
    /// Next hop to announce instead of the session's source address (once per address family).
    #[arg(long = "next-hop")]
    pub next_hops: Vec<IpAddr>,
    /// Also accept connections from the peers (listening on --listen-port), not only connect out; when both sides
    /// connect, RFC 4271 §6.8 collision detection keeps one connection.
    #[arg(long)]
    pub passive: bool,
    /// Local port to listen on with --passive.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub listen_port: u16,
    /// Source address of the sessions (default: chosen by the kernel).
    #[arg(long)]
    pub local_address: Option<IpAddr>,
    /// File holding the TCP MD5 password (RFC 2385); a trailing newline is ignored.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Proposed hold time in seconds (0, or at least 3); keepalives go every third of it.
    #[arg(long, default_value_t = DEFAULT_HOLD_TIME)]
    pub hold_time: u16,
    /// Advertise graceful restart (RFC 4724) and keep routes at the routers across a restart on SIGTERM.
    #[arg(long)]
    pub graceful_restart: bool,
    /// Graceful-restart time in seconds advertised to the routers (at most 4095).
    #[arg(long, default_value_t = DEFAULT_RESTART_TIME, value_parser = clap::value_parser!(u16).range(1..=4095))]
    pub restart_time: u16,
    /// IP TTL / hop limit for eBGP multihop.
    #[arg(long)]
    pub ttl: Option<u8>,
    /// Run BFD to every peer (RFC 5880/5881, single hop; the router must run it too) and take a session down when
    /// its BFD session goes down. State changes are logged.
    #[arg(long)]
    pub bfd: bool,
    /// BFD transmit and receive interval in milliseconds (with --bfd).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(10..=60000))]
    pub bfd_interval: u32,
    /// BFD packets missed before the session counts as down (with --bfd).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..))]
    pub bfd_multiplier: u8,
    /// Community `ASN:VALUE` (RFC 1997) on every prefix; repeatable.
    #[arg(long = "community", value_parser = parse_community)]
    pub communities: Vec<u32>,
    /// Large community `GLOBAL:DATA1:DATA2` (RFC 8092) on every prefix; repeatable.
    #[arg(long = "large-community", value_parser = parse_large_community)]
    pub large_communities: Vec<LargeCommunity>,
    /// MULTI_EXIT_DISC on every prefix.
    #[arg(long)]
    pub med: Option<u32>,
    /// LOCAL_PREF on every prefix sent to iBGP peers (default 100); eBGP peers never get one.
    #[arg(long)]
    pub local_pref: Option<u32>,
    /// Prefixes to announce (IPv4 and IPv6; an address alone means a host route).
    #[arg(required = true, value_parser = parse_prefix)]
    pub prefixes: Vec<IpNet>,
}

fn parse_asn(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("AS number 0 is reserved (RFC 7607)".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not an AS number (1-4294967295)")),
    }
}

fn parse_prefix(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = IpNet::from_str(s) {
        return Ok(net.trunc());
    }
    IpAddr::from_str(s)
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is neither a prefix (192.0.2.0/24, 2001:db8::/64) nor an address"))
}

/// The IPv4 source address the kernel would use towards `peer` (a UDP connect sends nothing).
fn source_towards(peer: IpAddr) -> Option<Ipv4Addr> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    sock.connect(SocketAddr::new(peer, DEFAULT_PORT)).ok()?;
    match sock.local_addr().ok()?.ip() {
        IpAddr::V4(a) if !a.is_unspecified() => Some(a),
        _ => None,
    }
}

fn peer_configs(args: &AnnounceBgpArgs) -> Result<Vec<PeerConfig>> {
    if args.router_id.is_some_and(|id| id.is_unspecified()) {
        bail!(
            "--router-id 0.0.0.0 is not a BGP identifier (RFC 6286: it must not be zero): give an IPv4 address of this host"
        );
    }
    if args.peers.len() != args.peer_asns.len() {
        bail!(
            "{} --peer but {} --peer-asn: give one --peer-asn per --peer, in the same order",
            args.peers.len(),
            args.peer_asns.len()
        );
    }
    let password = match &args.password_file {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("read the password file {}", path.display()))?;
            let key = text.strip_suffix(b"\n").unwrap_or(&text);
            let key = key.strip_suffix(b"\r").unwrap_or(key).to_vec();
            if key.is_empty() {
                bail!("the password file {} is empty", path.display());
            }
            Some(key)
        }
        None => None,
    };
    let mut next_hop_v4 = None;
    let mut next_hop_v6 = None;
    for nh in &args.next_hops {
        let slot_taken = match nh {
            IpAddr::V4(a) => next_hop_v4.replace(*a).is_some(),
            IpAddr::V6(a) => next_hop_v6.replace(*a).is_some(),
        };
        if slot_taken {
            bail!("--next-hop given twice for one address family: give at most one IPv4 and one IPv6 next hop");
        }
    }
    let mut configs = Vec::new();
    for (&address, &asn) in args.peers.iter().zip(&args.peer_asns) {
        if configs.iter().any(|c: &PeerConfig| c.address == address) {
            bail!("peer {address} is given twice");
        }
        let mut peer = PeerConfig::new(address, asn);
        peer.port = args.peer_port;
        peer.passive = args.passive;
        peer.listen_port = args.listen_port;
        peer.local_address = args.local_address.filter(|l| l.is_ipv4() == address.is_ipv4());
        peer.password = password.clone();
        peer.hold_time = args.hold_time;
        peer.ttl = args.ttl;
        peer.bfd = args.bfd.then(|| {
            let interval = std::time::Duration::from_millis(u64::from(args.bfd_interval));
            herald_bfd::Timers {
                desired_min_tx: interval,
                required_min_rx: interval,
                detect_mult: args.bfd_multiplier,
            }
        });
        peer.next_hop_v4 = next_hop_v4;
        peer.next_hop_v6 = next_hop_v6;
        peer.graceful_restart = args
            .graceful_restart
            // The R bit on every start: this command cannot know whether it restarted, and an R bit after a fresh
            // start only tells the router not to wait for our End-of-RIB before it sends its own (RFC 4724 §4.1).
            .then_some(GracefulRestart {
                restart_time: args.restart_time,
                restarting: true,
            });
        peer.validate()?;
        configs.push(peer);
    }
    Ok(configs)
}

pub async fn run(args: AnnounceBgpArgs) -> Result<()> {
    let peers = peer_configs(&args)?;
    let router_id = match args.router_id {
        Some(id) => id,
        None => args
            .local_address
            .and_then(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .or_else(|| {
                args.peers
                    .iter()
                    .find_map(|p| p.is_ipv4().then(|| source_towards(*p)).flatten())
            })
            .context("cannot pick a BGP identifier (no IPv4 peer or local address): pass --router-id")?,
    };
    let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;

    let mut speaker = Speaker::new(SpeakerConfig {
        local_asn: args.local_asn,
        router_id,
    });
    let policy = RoutePolicy {
        communities: args.communities.clone(),
        large_communities: args.large_communities.clone(),
        med: args.med,
        local_pref: args.local_pref,
        next_hop: None,
    };
    speaker.announce(args.prefixes.iter().copied(), policy);
    for peer in peers {
        speaker.add_peer(peer)?;
    }
    tracing::info!(
        local_asn = args.local_asn,
        %router_id,
        prefixes = args.prefixes.len(),
        "announcing; SIGINT or SIGTERM withdraws and exits"
    );
    let mode = tokio::select! {
        _ = sigint.recv() => ShutdownMode::Withdraw,
        _ = sigterm.recv() => {
            if args.graceful_restart { ShutdownMode::GracefulRestart } else { ShutdownMode::Withdraw }
        }
    };
    tracing::info!(?mode, "signal received, stopping the sessions");
    speaker.shutdown(mode).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AnnounceBgpArgs,
    }

    fn parse(line: &str) -> Result<AnnounceBgpArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("announce-bgp").chain(line.split_whitespace())).map(|c| c.args)
    }

    #[test]
    fn peers_pair_with_asns_in_order() {
        let args = parse(
            "--local-asn 64512 --peer 192.0.2.1 --peer-asn 64500 --peer 2001:db8::1 --peer-asn 64501 \
             --next-hop 2001:db8::11 --graceful-restart 203.0.113.10 2001:db8:10::/64",
        )
        .unwrap();
        let peers = peer_configs(&args).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(
            (peers[1].address.to_string(), peers[1].asn),
            ("2001:db8::1".to_string(), 64501)
        );
        assert_eq!(peers[0].next_hop_v6, Some("2001:db8::11".parse().unwrap()));
        assert!(
            peers[0]
                .graceful_restart
                .is_some_and(|gr| gr.restarting && gr.restart_time == 120)
        );
        assert_eq!(args.prefixes, vec![net("203.0.113.10/32"), net("2001:db8:10::/64")]);
        assert!(!peers[0].passive, "connect out only by default");
    }

    #[test]
    fn passive_listens_on_the_listen_port() {
        let args = parse("--local-asn 64512 --peer 192.0.2.1 --peer-asn 64500 --passive 203.0.113.10").unwrap();
        let peers = peer_configs(&args).unwrap();
        assert!(peers[0].passive);
        assert_eq!((peers[0].port, peers[0].listen_port), (179, 179));
        let args = parse(
            "--local-asn 64512 --peer 192.0.2.1 --peer-asn 64500 --passive --listen-port 1179 --peer-port 1790 \
             203.0.113.10",
        )
        .unwrap();
        let peers = peer_configs(&args).unwrap();
        assert_eq!((peers[0].port, peers[0].listen_port), (1790, 1179));
        assert!(parse("--local-asn 1 --peer 192.0.2.1 --peer-asn 1 --passive --listen-port 0 192.0.2.0/24").is_err());
    }

    #[test]
    fn bfd_is_off_unless_asked_for_and_single_hop() {
        let args = parse("--local-asn 64512 --peer 192.0.2.1 --peer-asn 64500 203.0.113.10").unwrap();
        assert_eq!(peer_configs(&args).unwrap()[0].bfd, None);
        let args = parse(
            "--local-asn 64512 --peer 192.0.2.1 --peer-asn 64500 --bfd --bfd-interval 100 --bfd-multiplier 5 \
             203.0.113.10",
        )
        .unwrap();
        let t = peer_configs(&args).unwrap()[0].bfd.expect("BFD on");
        let ms = std::time::Duration::from_millis(100);
        assert_eq!((t.desired_min_tx, t.required_min_rx, t.detect_mult), (ms, ms, 5));
        let args = parse("--local-asn 64512 --peer 192.0.2.1 --peer-asn 64500 --bfd --ttl 3 203.0.113.10").unwrap();
        let e = peer_configs(&args).unwrap_err().to_string();
        assert!(e.contains("BFD runs single hop"), "{e}");
        assert!(parse("--local-asn 1 --peer 192.0.2.1 --peer-asn 1 --bfd --bfd-multiplier 1 192.0.2.0/24").is_err());
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn bad_input_is_explained() {
        let err = |line: &str| match parse(line) {
            Err(e) => e.to_string(),
            Ok(args) => peer_configs(&args).unwrap_err().to_string(),
        };
        assert!(err("--local-asn 0 --peer 192.0.2.1 --peer-asn 1 192.0.2.0/24").contains("reserved"));
        assert!(
            err("--local-asn 1 --peer 192.0.2.1 --peer-asn 1 --peer 192.0.2.2 192.0.2.0/24")
                .contains("give one --peer-asn per --peer")
        );
        assert!(err("--local-asn 1 --peer 192.0.2.1 --peer-asn 1 --hold-time 2 192.0.2.0/24").contains("at least 3"));
        assert!(err("--local-asn 1 --peer 192.0.2.1 --peer-asn 1 banana").contains("neither a prefix"));
        assert!(
            err("--local-asn 1 --peer 192.0.2.1 --peer-asn 1 --router-id 0.0.0.0 192.0.2.0/24")
                .contains("not a BGP identifier")
        );
        assert!(
            err("--local-asn 1 --peer 192.0.2.1 --peer-asn 1 --community 70000:1 192.0.2.0/24").contains("0-65535")
        );
        assert!(
            err("--local-asn 1 --peer 192.0.2.1 --peer-asn 1 --next-hop 192.0.2.5 --next-hop 192.0.2.6 192.0.2.0/24")
                .contains("at most one IPv4")
        );
    }

    #[test]
    fn communities_parse() {
        assert_eq!(parse_community("64512:100"), Ok((64512 << 16) | 100));
        assert_eq!(
            parse_large_community("4200000000:1:2"),
            Ok(LargeCommunity(4_200_000_000, 1, 2))
        );
        assert!(parse_large_community("1:2").is_err());
        assert_eq!(
            parse_prefix("192.0.2.77/24"),
            Ok(net("192.0.2.0/24")),
            "host bits are cleared"
        );
    }
}
