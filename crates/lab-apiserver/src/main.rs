//! `lab-apiserver --listen ADDR [--kubeconfig-out FILE] [--state-file FILE]`

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use herald_lab_apiserver::{Config, start};

/// In-memory Kubernetes API server for Herald's tests and single-machine lab.
#[derive(Debug, Parser)]
#[command(name = "lab-apiserver", version)]
struct Args {
    /// Address to listen on (plain HTTP); port 0 picks a free port. The bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the server here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Keep objects in this file across restarts.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Watch events kept for resuming watches (older resourceVersions get 410 Gone).
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config {
        listen: args.listen,
        state_file: args.state_file,
        watch_history: args.watch_history,
        ..Config::default()
    };
    let server = start(config).await.context("starting lab-apiserver")?;
    if let Some(path) = &args.kubeconfig_out {
        server
            .write_kubeconfig(path)
            .with_context(|| format!("writing kubeconfig {}", path.display()))?;
    }
    // Printed last: once a script has read the address, the kubeconfig is in place.
    println!("{}", server.addr());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}
