//! Benchmark: sustained write throughput and watch fan-out latency of an in-process lab-apiserver.
//!
//! `cargo run --release -p herald-lab-apiserver --bin lab-apiserver-bench -- [--seconds 5] [--writers 8]
//! [--watchers 100] [--events 300] [--rate 100]`
//!
//! Prints a Markdown table. Writers patch their own ConfigMap in a loop (merge patch); fan-out writes one ConfigMap
//! `events` times at `rate` per second, stamping each write with its send time, while `watchers` kube-rs watches
//! record the delay from the write being sent to the event arriving.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use herald_lab_apiserver::{Config, start};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// Length of the write throughput phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent writers in the throughput phase.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Watchers in the fan-out phase.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Writes observed by every watcher in the fan-out phase.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Writes per second in the fan-out phase.
    #[arg(long, default_value_t = 100)]
    rate: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn throughput(api: &Api<ConfigMap>, writers: usize, seconds: u64) -> anyhow::Result<(u64, Vec<Duration>)> {
    for i in 0..writers {
        let cm = serde_json::from_value(json!({"metadata": {"name": format!("writer-{i}")}, "data": {"n": "0"}}))?;
        api.create(&PostParams::default(), &cm).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let patch = Patch::Merge(json!({"data": {"n": n.to_string()}}));
                    api.patch(&format!("writer-{i}"), &PatchParams::default(), &patch)
                        .await?;
                    latencies.push(started.elapsed());
                    n += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort();
    Ok((all.len() as u64, all))
}

async fn fan_out(api: &Api<ConfigMap>, watchers: usize, events: usize, rate: u64) -> anyhow::Result<Vec<Duration>> {
    let base = Instant::now();
    let cm = serde_json::from_value(json!({"metadata": {"name": "fanout"}, "data": {"sent": "0"}}))?;
    let created = api.create(&PostParams::default(), &cm).await?;
    let from = created.metadata.resource_version.context("resourceVersion")?;
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let stream = api
            .watch(&WatchParams::default().fields("metadata.name=fanout"), &from)
            .await?;
        tasks.push(tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            let mut latencies = Vec::with_capacity(events);
            while latencies.len() < events {
                match stream.next().await {
                    Some(Ok(WatchEvent::Modified(cm))) => {
                        let sent: u64 = cm
                            .data
                            .as_ref()
                            .and_then(|d| d.get("sent"))
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        latencies.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => anyhow::bail!("watch failed: {e}"),
                    None => anyhow::bail!("watch ended after {} events", latencies.len()),
                }
            }
            Ok(latencies)
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for _ in 0..events {
        tick.tick().await;
        let sent = base.elapsed().as_nanos().to_string();
        api.patch(
            "fanout",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"sent": sent}})),
        )
        .await?;
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort();
    Ok(all)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = start(Config::default()).await?;
    let client = server.client()?;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");

    let started = Instant::now();
    let (writes, latencies) = throughput(&api, args.writers, args.seconds).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let fan = fan_out(&api, args.watchers, args.events, args.rate).await?;

    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| sustained writes ({} writers, merge patch, {}s) | {:.0} writes/s |",
        args.writers,
        args.seconds,
        writes as f64 / elapsed
    );
    println!(
        "| write latency p50 / p99 | {} / {} |",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "| watch fan-out: {} watchers x {} writes at {}/s, delivered | {} events |",
        args.watchers,
        args.events,
        args.rate,
        fan.len()
    );
    println!(
        "| write-to-event latency p50 / p99 / max | {} / {} / {} |",
        ms(percentile(&fan, 0.5)),
        ms(percentile(&fan, 0.99)),
        ms(fan.last().copied().unwrap_or_default())
    );
    server.shutdown().await;
    Ok(())
}
