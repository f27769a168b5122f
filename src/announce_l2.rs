//! `herald announce l2`: answer ARP/NDP for addresses on one interface, without Kubernetes, until SIGINT/SIGTERM.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use herald_l2::{AnnounceConfig, AnnounceMode, ConflictPolicy, EngineConfig, Event, L2Engine, ProbeConfig};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Arguments of `herald announce l2`.
#[derive(clap::Args, Debug)]
pub struct AnnounceL2Args {
    /// Interface to answer on (Ethernet: physical, VLAN sub-interface, bridge or bond; not a bond slave).
    #[arg(long, short = 'i')]
    pub interface: String,
    /// IPv4/IPv6 addresses to answer for.
    #[arg(required = true)]
    pub ips: Vec<IpAddr>,
    /// Re-announce (gratuitous ARP / unsolicited NA) this often after the takeover burst, so switch FDB ageing never
    /// drops the addresses; `0` turns the refresh off. Units: ms, s, m (e.g. `1500ms`, `30s`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub refresh_interval: Duration,
    /// Announce at once without first checking that no other host uses the addresses.
    #[arg(long)]
    pub no_probe: bool,
    /// Time between conflict-detection probes (3 are sent), and the wait for an answer after the last one.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub probe_interval: Duration,
}

pub async fn run(args: AnnounceL2Args) -> anyhow::Result<()> {
    let ips: BTreeSet<IpAddr> = args.ips.iter().copied().collect();
    let config = EngineConfig {
        probe: ProbeConfig {
            count: if args.no_probe { 0 } else { 3 },
            interval: args.probe_interval,
        },
        announce: AnnounceConfig {
            refresh: (!args.refresh_interval.is_zero()).then_some(args.refresh_interval),
            // No election here: the addresses are kept whatever the wire says, so a conflict is defended with one
            // announcement per DEFEND_INTERVAL (RFC 5227 §2.4 (c)) instead of yielded.
            on_conflict: ConflictPolicy::Defend,
            ..AnnounceConfig::default()
        },
        // Room for an event per address (probe outcome) while they are all handed over, before any is read.
        event_capacity: (ips.len() * 2).max(EngineConfig::default().event_capacity),
    };
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;

    let (engine, mut events) = L2Engine::new(config);
    let mode = if args.no_probe {
        AnnounceMode::Immediately
    } else {
        AnnounceMode::Probe
    };
    let result = announce(&engine, &args.interface, &ips, mode).await;
    let outcome = match result {
        Err(e) => Err(e),
        Ok(handle) => {
            let mut refused = BTreeSet::new();
            loop {
                tokio::select! {
                    _ = terminate.recv() => { info!("SIGTERM: withdrawing"); break Ok(()) }
                    _ = interrupt.recv() => { info!("SIGINT: withdrawing"); break Ok(()) }
                    event = events.recv() => match event {
                        Some(e) => match e.event {
                            // The engine already logged it; here only the outcome for the whole command matters.
                            Event::Conflict(c) if c.refused => {
                                refused.insert(c.ip);
                                if refused.len() == ips.len() {
                                    break Err(anyhow::anyhow!(
                                        "every address is already used by another host on {}: {} (refused; \
                                         nothing announced)",
                                        args.interface,
                                        join(&refused)
                                    ));
                                }
                            }
                            Event::Announced { .. } | Event::Conflict(_) => {}
                        },
                        None => break Ok(()),
                    },
                }
            }
            .inspect(|()| info!(counters = ?handle.counters(), "done"))
        }
    };
    engine.shutdown().await;
    outcome
}

/// Attaches the interface and hands every address to the engine.
async fn announce(
    engine: &L2Engine,
    interface: &str,
    ips: &BTreeSet<IpAddr>,
    mode: AnnounceMode,
) -> anyhow::Result<herald_l2::InterfaceHandle> {
    let handle = engine.attach(interface)?;
    for ip in ips {
        handle.announce(*ip, mode).await?;
    }
    if mode == AnnounceMode::Probe {
        info!(interface, addresses = %join(ips), "probing for other owners before announcing");
    }
    Ok(handle)
}

fn join(ips: &BTreeSet<IpAddr>) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// `0`, `250ms`, `30s`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 30s, 2m, 0)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("`{text}`: unknown unit `{unit}` (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
