//! `herald`: the bare-metal LoadBalancer agent and its tools.

use clap::{Parser, Subcommand};
use herald::{agent, logging};

mod announce_bgp;
mod announce_l2;
mod migrate_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version = herald::VERSION,
    about = "Bare-metal LoadBalancer for Kubernetes: IP allocation, Layer 2 (ARP/NDP) and BGP"
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node agent (the DaemonSet process): allocation while holding the allocator Lease, announcement.
    Agent(agent::AgentArgs),
    /// Announce addresses without Kubernetes, to try a network before installing Herald.
    Announce {
        #[command(subcommand)]
        mode: AnnounceMode,
    },
    /// Print the CustomResourceDefinitions (the content of deploy/crds/).
    Crds,
    /// Convert MetalLB's or OpenELB's configuration into Herald's Eips, BgpConf and BgpPeers, with a report.
    Migrate(migrate_cmd::MigrateArgs),
}

#[derive(Subcommand, Debug)]
enum AnnounceMode {
    /// Answer ARP (IPv4) and NDP (IPv6) for the addresses on one interface until SIGINT/SIGTERM.
    L2(announce_l2::AnnounceL2Args),
    /// Announce prefixes to BGP peers until SIGINT/SIGTERM.
    Bgp(announce_bgp::AnnounceBgpArgs),
}

/// Worker threads of the agent's runtime. Its work is a few event loops and API requests, not throughput: two threads
/// keep a slow task from stalling the election's renewals, and the count does not grow with the node's cores (tokio's
/// default), each of which costs a stack and, with glibc, a malloc arena of its own: resident memory an agent on a
/// 64-core node would otherwise pay for nothing.
const AGENT_WORKER_THREADS: usize = 2;

/// malloc arenas of the agent. glibc's default (up to eight per core) lets each thread's share of the cluster cache
/// fragment on its own; one arena, with the agent's periodic trim, measured 60 instead of 67 MiB at 10,000 Service IPs
/// in one run (docs/benchmarks.md), at the same CPU, and the agent's threads rarely allocate at the same moment.
const AGENT_MALLOC_ARENAS: u16 = 1;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.log)?;
    match cli.command {
        Command::Crds => {
            print!("{}", herald_api::crds_yaml()?);
            Ok(())
        }
        Command::Migrate(args) => migrate_cmd::run(args),
        Command::Agent(args) => {
            herald_sys::malloc::limit_arenas(AGENT_MALLOC_ARENAS);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(AGENT_WORKER_THREADS)
                .enable_all()
                .build()?;
            rt.block_on(agent::run(args))
        }
        Command::Announce { mode } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            match mode {
                AnnounceMode::L2(args) => rt.block_on(announce_l2::run(args)),
                AnnounceMode::Bgp(args) => rt.block_on(announce_bgp::run(args)),
            }
        }
    }
}
