//! The scale measurement of issue #19, shared by `failover-bench --only load` and the 2,000-IP test
//! (`tests/scale.rs`): grow a [`Cluster`] to N single-stack IPv6 Services, time until every IP has a holder and until
//! ownership stops changing, then measure the steady state over a window: the API requests per second and each
//! agent's memory and CPU.
//!
//! "Quiet" is a 5 s window in which no IP lease was written (created, taken over, released, deleted) and no Service
//! was written (no status, no `announced-by` patch): every one kept its resourceVersion. Node liveness and allocator
//! Lease renewals go on, as they always do.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Cluster, ServiceSpec, settle};
use crate::wait_for_every;

/// Length of the window without ownership change that counts as quiet.
pub const QUIET_WINDOW: Duration = Duration::from_secs(5);
/// How often the wait for "every IP held" lists the IP leases (a list of 10,000 must not be a load of its own).
const HELD_POLL: Duration = Duration::from_secs(1);

/// Bounds of one [`grow`] step and its steady-state window.
#[derive(Clone, Copy, Debug)]
pub struct ScaleLimits {
    /// From the end of creation until every IP must have a holder (after it, the rest is measured anyway).
    pub held: Duration,
    /// From the end of creation until ownership must be quiet (after it the steady state is measured anyway).
    pub quiet: Duration,
    /// The steady-state window.
    pub window: Duration,
}

impl ScaleLimits {
    /// Generous bounds for `n` Service IPs on a shared 2-core machine (these catch a hang, they are not goals): every
    /// IP held within 300 s or 60 ms per IP, whichever is longer, quiet 180 s or 30 ms per IP later.
    pub fn generous(n: usize, window: Duration) -> ScaleLimits {
        let held = Duration::from_secs(300).max(Duration::from_millis(60) * n as u32);
        let quiet = held + Duration::from_secs(180).max(Duration::from_millis(30) * n as u32);
        ScaleLimits { held, quiet, window }
    }
}

/// One agent over the steady-state window.
#[derive(Clone, Debug)]
pub struct AgentSteady {
    /// Its node.
    pub node: String,
    /// The largest resident set since it started (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Its resident set at the end of the window (VmRSS), MiB.
    pub rss_mib: f64,
    /// CPU time over the window (user + system) per wall-clock time, in percent of one core.
    pub cpu_percent: f64,
}

/// What [`grow`] measured.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    /// Service IPs in the cluster (all sizes so far).
    pub services: usize,
    /// Time to create this step's Services.
    pub created_in: Duration,
    /// IPs with a holder when every one had, or when [`ScaleLimits::held`] ran out.
    pub held: usize,
    /// From the end of creation until every IP had a holder; `None`: not within the limit.
    pub held_after: Option<Duration>,
    /// From the first create until every IP had a holder.
    pub held_after_first_create: Option<Duration>,
    /// From the end of creation until the end of the first quiet window; `None`: not quiet within the limit.
    pub quiet_after: Option<Duration>,
    /// The steady-state window.
    pub window: Duration,
    /// API writes (create, update, patch, delete) per second over the window, every client.
    pub writes_per_s: f64,
    /// API reads (get, list) per second over the window.
    pub reads_per_s: f64,
    /// Requests in the window by `verb resource`.
    pub requests: BTreeMap<String, u64>,
    /// Requests from the first create until quiet by `verb resource` (the bench's own creates and lists too; `get
    /// leases` are the agents' alone).
    pub startup_requests: BTreeMap<String, u64>,
    /// Each agent, in node order.
    pub agents: Vec<AgentSteady>,
    /// The node holding the allocator's Lease at the end of the window.
    pub allocator_leader: Option<String>,
}

impl ScaleReport {
    /// `peak/steady` MiB of each agent, `*` after the allocator's leader: `41/38*, 40/37, 45/40`.
    pub fn rss_column(&self) -> String {
        self.per_agent(|a| format!("{:.0}/{:.0}", a.peak_rss_mib, a.rss_mib))
    }

    /// CPU % of each agent over the window, `*` after the allocator's leader.
    pub fn cpu_column(&self) -> String {
        self.per_agent(|a| format!("{:.1}", a.cpu_percent))
    }

    fn per_agent(&self, value: impl Fn(&AgentSteady) -> String) -> String {
        self.agents
            .iter()
            .map(|a| {
                let leader = if self.allocator_leader.as_deref() == Some(a.node.as_str()) {
                    "*"
                } else {
                    ""
                };
                format!("{}{leader}", value(a))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The name of the `i`-th Service [`grow`] creates.
pub fn service_name(i: usize) -> String {
    format!("load{i:05}")
}

/// Grows `c` from `created` to `n` Services ([`service_name`], IPv6 single-stack), waits until every IP lease has a
/// holder and until ownership is quiet (each at most until its limit), then measures the steady state over
/// [`ScaleLimits::window`]. Progress goes to stderr. Fails only when the cluster does (creation, listing, an agent
/// gone).
pub fn grow(c: &Cluster, created: usize, n: usize, limits: &ScaleLimits) -> Result<ScaleReport> {
    let specs: Vec<ServiceSpec> = (created..n)
        .map(|i| ServiceSpec::v6(&service_name(i)).without_node_ports())
        .collect();
    let requests_before = c.api_requests()?;
    let first_create = Instant::now();
    c.create_many_services(&specs)?;
    let created_in = first_create.elapsed();
    eprintln!(
        "{} Services created in {:.1} s ({n} in all)",
        specs.len(),
        created_in.as_secs_f64()
    );
    let start = Instant::now();
    let mut held = 0;
    let all_held = wait_for_every(limits.held, HELD_POLL, || {
        let now = c.ip_leases().ok()?.values().filter(|h| h.is_some()).count();
        if now != held {
            eprintln!("  {:.0} s: {now} IPs held", start.elapsed().as_secs_f64());
            held = now;
        }
        (held >= n).then(|| (start.elapsed(), first_create.elapsed()))
    });
    match all_held {
        Some((after, since_first)) => eprintln!(
            "{n} IPs held after {:.1} s ({:.1} s after the first create); waiting for quiet",
            after.as_secs_f64(),
            since_first.as_secs_f64()
        ),
        None => eprintln!(
            "{n} IPs: only {held} held {:.0} s after creation; waiting for quiet",
            limits.held.as_secs_f64()
        ),
    }
    let quiet_after = wait_quiet(c, start, limits.quiet)?;
    match quiet_after {
        Some(t) => eprintln!("{n} IPs: quiet after {:.0} s", t.as_secs_f64()),
        None => eprintln!("{n} IPs: not quiet within {:.0} s", limits.quiet.as_secs_f64()),
    }
    let startup_requests = since(&requests_before, &c.api_requests()?);
    eprintln!("{n} IPs, requests until quiet: {startup_requests:?}");
    let steady = measure_steady(c, limits.window)?;
    eprintln!("{n} IPs, requests in {:?}: {:?}", limits.window, steady.requests);
    Ok(ScaleReport {
        services: n,
        created_in,
        held,
        held_after: all_held.map(|t| t.0),
        held_after_first_create: all_held.map(|t| t.1),
        quiet_after,
        window: limits.window,
        writes_per_s: steady.writes_per_s,
        reads_per_s: steady.reads_per_s,
        requests: steady.requests,
        startup_requests,
        agents: steady.agents,
        allocator_leader: c.allocator_leader().ok().flatten(),
    })
}

/// The resourceVersion of every IP lease and of every Service: unchanged, nothing of ownership was written.
struct Versions {
    leases: BTreeMap<String, String>,
    services: BTreeMap<String, String>,
}

impl Versions {
    fn read(c: &Cluster) -> Result<Versions> {
        Ok(Versions {
            leases: c
                .ip_lease_states()?
                .into_iter()
                .map(|(slug, lease)| (slug, lease.resource_version))
                .collect(),
            services: c
                .services()?
                .into_iter()
                .map(|(name, svc)| (name, svc.resource_version))
                .collect(),
        })
    }

    /// Objects written, created or deleted from `earlier` to `later` (name → resourceVersion).
    fn written(earlier: &BTreeMap<String, String>, later: &BTreeMap<String, String>) -> usize {
        later.iter().filter(|(k, v)| earlier.get(*k) != Some(v)).count()
            + earlier.keys().filter(|k| !later.contains_key(*k)).count()
    }
}

/// Waits until a [`QUIET_WINDOW`] passes without an IP lease or Service write, at most until `limit` after `start`;
/// returns the time from `start` to the end of that window.
fn wait_quiet(c: &Cluster, start: Instant, limit: Duration) -> Result<Option<Duration>> {
    let mut before = Versions::read(c)?;
    while start.elapsed() < limit {
        settle(QUIET_WINDOW);
        let after = Versions::read(c)?;
        let leases = Versions::written(&before.leases, &after.leases);
        let services = Versions::written(&before.services, &after.services);
        eprintln!(
            "  {:.0} s: {leases} IP leases and {services} Services written in {QUIET_WINDOW:?}",
            start.elapsed().as_secs_f64()
        );
        if leases == 0 && services == 0 {
            return Ok(Some(start.elapsed()));
        }
        before = after;
    }
    Ok(None)
}

/// Requests counted from `before` to `after`, by `verb resource`, the nonzero ones.
fn since(before: &BTreeMap<(String, String), u64>, after: &BTreeMap<(String, String), u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|((verb, resource), count)| {
            let before = before.get(&(verb.clone(), resource.clone())).copied().unwrap_or(0);
            (format!("{verb} {resource}"), count.saturating_sub(before))
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

struct Steady {
    writes_per_s: f64,
    reads_per_s: f64,
    requests: BTreeMap<String, u64>,
    agents: Vec<AgentSteady>,
}

/// API requests and each agent's CPU over `window`, and its memory at the end.
fn measure_steady(c: &Cluster, window: Duration) -> Result<Steady> {
    let agents = 0..c.nodes.len();
    let t = Instant::now();
    let cpu_before = agents
        .clone()
        .map(|i| Ok(c.agent_usage(i)?.cpu))
        .collect::<Result<Vec<_>>>()?;
    let requests_before = c.api_requests()?;
    settle(window);
    let requests_after = c.api_requests()?;
    let usage = agents.clone().map(|i| c.agent_usage(i)).collect::<Result<Vec<_>>>()?;
    // (Reading the counters and /proc takes milliseconds: the window is what was asked for, within noise.)
    let elapsed = t.elapsed().as_secs_f64();
    let requests = since(&requests_before, &requests_after);
    let per_s = |reads: bool| {
        requests
            .iter()
            .filter(|(key, _)| {
                let verb = key.split(' ').next().unwrap_or_default();
                if reads {
                    matches!(verb, "get" | "list")
                } else {
                    is_write(verb)
                }
            })
            .map(|(_, count)| *count)
            .sum::<u64>() as f64
            / elapsed
    };
    Ok(Steady {
        writes_per_s: per_s(false),
        reads_per_s: per_s(true),
        agents: agents
            .zip(usage.iter().zip(cpu_before))
            .map(|(i, (u, cpu_before))| AgentSteady {
                node: c.nodes[i].name.clone(),
                peak_rss_mib: u.peak_rss_mib,
                rss_mib: u.rss_mib,
                cpu_percent: (u.cpu.saturating_sub(cpu_before)).as_secs_f64() / elapsed * 100.0,
            })
            .collect(),
        requests,
    })
}
