//! `herald announce l2`: answer ARP/NDP for addresses on one interface, without Kubernetes.

/// Arguments of `herald announce l2`.
#[derive(clap::Args, Debug)]
pub struct AnnounceL2Args {
    /// Interface to answer on.
    #[arg(long)]
    pub interface: String,
    /// IPv4/IPv6 addresses to answer for.
    #[arg(required = true)]
    pub ips: Vec<std::net::IpAddr>,
}

pub async fn run(args: AnnounceL2Args) -> anyhow::Result<()> {
    anyhow::bail!("announce l2 is not implemented yet ({args:?})")
}
