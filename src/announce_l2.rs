//! `herald announce l2`: answer ARP/NDP for addresses on one interface, without Kubernetes, until SIGINT/SIGTERM.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use herald::duration::parse_duration;
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
    /// drops the addresses; `0` turns the refresh off. Units: ms, s, m, h (e.g. `1500ms`, `1.5s`, `30s`).
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
                            Event::Announced { .. } | Event::Conflict(_) | Event::ProbeRestarted { .. } | Event::Checked { .. } => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AnnounceL2Args,
    }

    #[test]
    fn durations_read_as_every_other_flag_reads_them() {
        let cli = Cli::try_parse_from(["l2", "-i", "eth0", "192.0.2.1", "--refresh-interval", "1.5s"]).unwrap();
        assert_eq!(cli.args.refresh_interval, Duration::from_millis(1500));
        let cli = Cli::try_parse_from(["l2", "-i", "eth0", "192.0.2.1", "--probe-interval", "0.25"]).unwrap();
        assert_eq!(cli.args.probe_interval, Duration::from_millis(250));
    }
}
