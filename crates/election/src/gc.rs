//! Garbage collection of the election's Leases: which IP and node Leases are due for deletion, and when to look
//! again. No I/O and no clock (the caller passes `now`, a `tokio::time::Instant`), so every rule is tested without an
//! API server; the deletions are made by the shell [`crate::tasks::UnusedLeases`].
//!
//! Nothing else ever deletes these Leases: an IP lease outlives its Service (the election only releases it) and a
//! removed node's liveness lease stays forever, so on a cluster with churn they would pile up in every agent's lease
//! watch. The allocator's leader (one agent at a time) runs the collector and says what is in use:
//!
//! - an **IP lease** once its IP is in use by no Service (neither in the allocator's state nor in any Service's
//!   status) and it has no live holder, both for the whole grace period;
//! - a **node lease** once no Node object of that name exists and the lease has not changed, both for the whole
//!   grace period.
//!
//! "For the whole grace period" is measured on the local monotonic clock from the moment this collector *saw* the
//! state (as the election judges liveness, `shared/design/l2-election.md` §Observation); `renewTime` and other remote
//! timestamps are never compared with the local clock. Observations can only be late, and late observations only
//! postpone a deletion. Every deletion carries the resourceVersion the collector judged
//! ([`Collect::resource_version`], sent as a `DeleteOptions` precondition), so a Lease written in the meantime (an
//! agent re-acquired the IP, a node renewed) is never deleted. An IP lease that names a holder is deleted only after
//! the same check a takeover makes ([`HolderCheck`]): a fresh read of the holder's node lease must show that it did
//! not renew.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::identity::holder_node;
use crate::lease::LeaseRecord;
use crate::naming;

/// Default of `--lease-gc-after`. A minute is 20 × the default `--takeover-after`: far beyond any liveness
/// judgement, long enough that a Service deleted and created again (a re-deploy) finds its IP's Lease still there,
/// and short enough that stale Leases never accumulate. Keeping one unused Lease for a minute costs nothing.
pub const DEFAULT_GC_AFTER: Duration = Duration::from_secs(60);

/// The longest `--lease-gc-after` accepted (longer ones would overflow the monotonic clock's arithmetic).
pub const MAX_GC_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks `--lease-gc-after` against `--takeover-after`. Zero turns collection off. A shorter grace than `T` is
/// refused: an IP lease must not be deleted before its holder could count as dead by the election's own rule.
pub fn validate_gc_after(gc_after: Duration, takeover_after: Duration) -> Result<(), String> {
    if gc_after > MAX_GC_AFTER {
        return Err(format!(
            "--lease-gc-after ({gc_after:?}) is longer than a week; use 0 to keep every Lease"
        ));
    }
    if gc_after.is_zero() || gc_after >= takeover_after {
        return Ok(());
    }
    Err(format!(
        "--lease-gc-after ({gc_after:?}) must be at least --takeover-after ({takeover_after:?}), or 0 to keep every \
         Lease: a Lease must not be collected before its holder could count as dead"
    ))
}

/// The Lease names (`herald-ip-…`) of `ips`.
pub fn lease_names(ips: impl IntoIterator<Item = IpAddr>) -> BTreeSet<String> {
    ips.into_iter()
        .filter_map(|ip| naming::ip_lease_name(ip).ok())
        .collect()
}

/// A Lease as the collector reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `herald-ip-…` or `herald-node-…`.
    pub name: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `spec.holderIdentity`, `None` when empty.
    pub holder: Option<String>,
}

impl From<&LeaseRecord> for LeaseView {
    fn from(record: &LeaseRecord) -> Self {
        Self {
            name: record.name.clone(),
            resource_version: record.rv().to_owned(),
            holder: record.holder().map(str::to_owned),
        }
    }
}

/// What one sweep looks at: the reflectors' state and the allocator's.
#[derive(Debug, Default, Clone)]
pub struct GcInput {
    /// Every Lease labelled `herald.dev/lease=ip`.
    pub ip_leases: Vec<LeaseView>,
    /// Every Lease labelled `herald.dev/lease=node`.
    pub node_leases: Vec<LeaseView>,
    /// Names of the Node objects that exist.
    pub nodes: BTreeSet<String>,
    /// Lease names (`herald-ip-…`) of the IPs in use: allocated by the allocator or shown in some Service's status.
    pub ips_in_use: BTreeSet<String>,
}

/// Which kind of Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseKind {
    /// A per-IP ownership Lease.
    Ip,
    /// A node-liveness Lease.
    Node,
}

impl LeaseKind {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Node => "node",
        }
    }
}

/// The fresh read an IP lease held by `holder` must pass before it is deleted (the takeover check of the election).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderCheck {
    /// The holder's node lease, to GET.
    pub node_lease: String,
    /// The holder (`<node>/<instance>`) named by the IP lease.
    pub holder: String,
    /// The node lease's resourceVersion the collector saw unchanged for the grace period, if it named the holder.
    pub seen_rv: Option<String>,
}

impl HolderCheck {
    /// Whether the fresh read of the node lease (`None`: 404) shows the holder did not renew: the lease is gone,
    /// names someone else, or still has the resourceVersion seen a grace period ago.
    pub fn passes(&self, fresh: Option<&LeaseView>) -> bool {
        let Some(lease) = fresh else { return true };
        if lease.holder.as_deref() != Some(self.holder.as_str()) {
            return true;
        }
        self.seen_rv.as_deref() == Some(lease.resource_version.as_str())
    }
}

/// A Lease to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collect {
    /// IP or node lease.
    pub kind: LeaseKind,
    /// The Lease.
    pub name: String,
    /// Precondition of the delete: the version that was judged.
    pub resource_version: String,
    /// For an IP lease that still names a holder: the read to make first.
    pub holder_check: Option<HolderCheck>,
    /// Why, for the log.
    pub reason: String,
}

/// What this collector saw of one Lease.
#[derive(Debug, Clone)]
struct Seen {
    rv: String,
    /// The first sweep that saw the current resourceVersion: the Lease's last change as observed here.
    rv_since: Instant,
    /// Start of the current quiet window: `rv_since`, pushed forward while the Lease is not collectable (IP in use,
    /// Node present).
    quiet_since: Instant,
}

/// See the module documentation.
#[derive(Debug)]
pub struct LeaseCollector {
    grace: Duration,
    ip: HashMap<String, Seen>,
    node: HashMap<String, Seen>,
}

impl LeaseCollector {
    /// A collector that deletes Leases found collectable for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            ip: HashMap::new(),
            node: HashMap::new(),
        }
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Observes `input` at `now` and returns the Leases due for deletion, node leases first, each in name order.
    pub fn sweep(&mut self, input: &GcInput, now: Instant) -> Vec<Collect> {
        // A node lease's changes are watched while its Node exists too: they tell whether its holder is alive.
        observe(&mut self.node, &input.node_leases, now, Track::All, |l| {
            !input.nodes.contains(node_of(l))
        });
        // An IP lease in use is not looked at: once its IP falls out of use, its window starts at that sweep, as it
        // would if it had been tracked (its window would have been started again at every sweep until then). So the
        // collector holds a record per unused IP, not one per IP of the cluster.
        observe(&mut self.ip, &input.ip_leases, now, Track::Collectable, |l| {
            !input.ips_in_use.contains(&l.name)
        });
        let mut due = Vec::new();
        for lease in &input.node_leases {
            if self.node_due_at(input, lease).is_some_and(|at| at <= now) {
                due.push(Collect {
                    kind: LeaseKind::Node,
                    name: lease.name.clone(),
                    resource_version: lease.resource_version.clone(),
                    holder_check: None,
                    reason: format!(
                        "no Node '{}' and the lease unchanged for {:?}",
                        node_of(lease),
                        self.grace
                    ),
                });
            }
        }
        let node_leases = by_name(&input.node_leases);
        for lease in &input.ip_leases {
            if self.ip_due_at(input, &node_leases, lease).is_none_or(|at| at > now) {
                continue;
            }
            let holder_check = lease.holder.as_ref().map(|holder| {
                let node_lease = naming::node_lease_name(holder_node(holder));
                let seen_rv = node_leases
                    .get(node_lease.as_str())
                    .filter(|l| l.holder.as_ref() == Some(holder))
                    .map(|l| l.resource_version.clone());
                HolderCheck {
                    node_lease,
                    holder: holder.clone(),
                    seen_rv,
                }
            });
            let reason = match &lease.holder {
                None => format!("IP in use by no Service and the lease released for {:?}", self.grace),
                Some(h) => format!(
                    "IP in use by no Service and its holder {h} not renewing for {:?}",
                    self.grace
                ),
            };
            due.push(Collect {
                kind: LeaseKind::Ip,
                name: lease.name.clone(),
                resource_version: lease.resource_version.clone(),
                holder_check,
                reason,
            });
        }
        due.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        due
    }

    /// The IP leases `freed` fell out of use at `now` (the allocator's pass just freed their IPs), each given with
    /// the resourceVersion the caller's watch shows now (`""`: no such Lease yet): their windows start at `now`,
    /// however long until the next sweep, unless the Lease changes before it.
    pub fn in_use_until<'a>(&mut self, freed: impl IntoIterator<Item = (&'a str, &'a str)>, now: Instant) {
        for (name, rv) in freed {
            match self.ip.get_mut(name) {
                Some(seen) => seen.quiet_since = seen.quiet_since.max(now),
                None => {
                    let seen = Seen {
                        rv: rv.to_string(),
                        rv_since: now,
                        quiet_since: now,
                    };
                    self.ip.insert(name.to_string(), seen);
                }
            }
        }
    }

    /// Starts `name`'s quiet window again at `now` (a holder check showed that our watch is behind).
    pub fn postpone(&mut self, name: &str, now: Instant) {
        for map in [&mut self.ip, &mut self.node] {
            if let Some(seen) = map.get_mut(name) {
                seen.quiet_since = now;
            }
        }
    }

    /// When the next Lease becomes due if nothing changes (for the loop's timer). Call after [`sweep`](Self::sweep)
    /// with the same input; a Lease that stays undeleted after it was due (a failed delete) counts as due now.
    pub fn next_due(&self, input: &GcInput) -> Option<Instant> {
        let node_leases = by_name(&input.node_leases);
        let nodes = input.node_leases.iter().filter_map(|l| self.node_due_at(input, l));
        let ips = input
            .ip_leases
            .iter()
            .filter_map(|l| self.ip_due_at(input, &node_leases, l));
        nodes.chain(ips).min()
    }

    /// When a node lease becomes due: `None` while its Node exists.
    fn node_due_at(&self, input: &GcInput, lease: &LeaseView) -> Option<Instant> {
        if input.nodes.contains(node_of(lease)) {
            return None;
        }
        Some(self.node.get(&lease.name)?.quiet_since + self.grace)
    }

    /// When an IP lease becomes due: `None` while its IP is in use. A holder whose node lease still names it counts
    /// as alive until that lease has not changed for the grace period.
    fn ip_due_at(
        &self,
        input: &GcInput,
        node_leases: &HashMap<&str, &LeaseView>,
        lease: &LeaseView,
    ) -> Option<Instant> {
        if input.ips_in_use.contains(&lease.name) {
            return None;
        }
        let mut quiet_since = self.ip.get(&lease.name)?.quiet_since;
        if let Some(holder) = &lease.holder {
            let node_lease = naming::node_lease_name(holder_node(holder));
            if let Some(l) = node_leases
                .get(node_lease.as_str())
                .filter(|l| l.holder.as_ref() == Some(holder))
                && let Some(seen) = self.node.get(&l.name)
            {
                quiet_since = quiet_since.max(seen.rv_since);
            }
        }
        Some(quiet_since + self.grace)
    }
}

/// The longest pause between sweeps while deletions keep failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// When to sweep next: when the next Lease falls due, but at least every half grace period (a Node deletion wakes
/// nothing) and never sooner than an eighth of it (a Lease that stays due because its deletion failed must not
/// busy-loop). After `failed_sweeps` failing sweeps in a row, not before 2^n eighths (at most [`MAX_BACKOFF`]), so
/// failing deletes (a Role without `delete`, an API server in trouble) never become steady load.
pub fn next_sweep(now: Instant, due: Option<Instant>, grace: Duration, failed_sweeps: u32) -> Instant {
    let pause = (grace / 8).max(Duration::from_millis(100));
    let (earliest, latest) = (now + pause, now + (grace / 2).max(pause));
    let next = due.unwrap_or(latest).clamp(earliest, latest);
    if failed_sweeps == 0 {
        return next;
    }
    let backoff = pause.saturating_mul(1 << failed_sweeps.min(16)).min(MAX_BACKOFF);
    next.max(now + backoff)
}

fn by_name(leases: &[LeaseView]) -> HashMap<&str, &LeaseView> {
    leases.iter().map(|l| (l.name.as_str(), l)).collect()
}

/// Which Leases [`observe`] keeps a record of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Track {
    /// Every Lease.
    All,
    /// Only collectable ones: a Lease that is not has no record (its window would be closed anyway).
    Collectable,
}

/// Records `leases` at `now`: a new Lease or a new resourceVersion starts a quiet window; a Lease that is not
/// `collectable` keeps its window closed (starts it again at `now`, or with [`Track::Collectable`] has no record).
/// Forgets Leases that are gone.
fn observe(
    seen: &mut HashMap<String, Seen>,
    leases: &[LeaseView],
    now: Instant,
    track: Track,
    collectable: impl Fn(&LeaseView) -> bool,
) {
    let present: BTreeSet<&str> = leases.iter().map(|l| l.name.as_str()).collect();
    seen.retain(|name, _| present.contains(name.as_str()));
    for lease in leases {
        if track == Track::Collectable && !collectable(lease) {
            seen.remove(&lease.name);
            continue;
        }
        let entry = seen.entry(lease.name.clone()).or_insert_with(|| Seen {
            rv: lease.resource_version.clone(),
            rv_since: now,
            quiet_since: now,
        });
        if entry.rv != lease.resource_version {
            entry.rv.clone_from(&lease.resource_version);
            entry.rv_since = now;
            entry.quiet_since = now;
        }
        if !collectable(lease) {
            entry.quiet_since = now;
        }
    }
}

/// The node a node lease belongs to (`""` for a malformed name, which then matches no Node).
fn node_of(lease: &LeaseView) -> &str {
    naming::node_of_lease(&lease.name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn lease(name: &str, rv: &str, holder: Option<&str>) -> LeaseView {
        LeaseView {
            name: name.into(),
            resource_version: rv.into(),
            holder: holder.map(Into::into),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    fn names(due: &[Collect]) -> Vec<&str> {
        due.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_released_lease_of_an_unused_ip_is_due_after_the_grace_period_with_its_version() {
        let mut gc = LeaseCollector::new(GRACE);
        let t0 = Instant::now();
        let input = GcInput {
            ip_leases: vec![lease("herald-ip-192-0-2-1", "7", None)],
            ..Default::default()
        };
        assert!(gc.sweep(&input, t0).is_empty(), "first sight starts the window");
        assert_eq!(gc.next_due(&input), Some(secs(t0, 60)));
        assert!(gc.sweep(&input, secs(t0, 59)).is_empty());
        let due = gc.sweep(&input, secs(t0, 60));
        assert_eq!(
            due,
            [Collect {
                kind: LeaseKind::Ip,
                name: "herald-ip-192-0-2-1".into(),
                resource_version: "7".into(),
                holder_check: None,
                reason: "IP in use by no Service and the lease released for 60s".into(),
            }]
        );
    }

    /// In use, an IP lease is never collected and the collector keeps no record of it (one record per unused IP,
    /// not per IP of the cluster). Unless the caller said when it fell out of use (next test), its window starts at
    /// the first sweep that finds it unused.
    #[test]
    fn an_ip_in_use_is_never_collected_and_has_no_record() {
        let mut gc = LeaseCollector::new(GRACE);
        let t0 = Instant::now();
        let mut input = GcInput {
            ip_leases: vec![lease("herald-ip-192-0-2-1", "7", None)],
            ips_in_use: ["herald-ip-192-0-2-1".to_string()].into(),
            ..Default::default()
        };
        for s in [0, 60, 600] {
            assert!(gc.sweep(&input, secs(t0, s)).is_empty());
        }
        assert!(gc.ip.is_empty(), "no record while in use");
        assert_eq!(gc.next_due(&input), None, "nothing to wait for");
        input.ips_in_use.clear();
        assert!(gc.sweep(&input, secs(t0, 601)).is_empty(), "the window starts now");
        assert_eq!(gc.ip.len(), 1);
        assert!(gc.sweep(&input, secs(t0, 660)).is_empty());
        assert_eq!(names(&gc.sweep(&input, secs(t0, 661))), ["herald-ip-192-0-2-1"]);
    }

    #[test]
    fn the_window_starts_when_a_pass_frees_the_ip_not_at_the_sweep_before() {
        let mut gc = LeaseCollector::new(GRACE);
        let t0 = Instant::now();
        let mut input = GcInput {
            ip_leases: vec![lease("herald-ip-192-0-2-1", "7", None)],
            ips_in_use: ["herald-ip-192-0-2-1".to_string()].into(),
            ..Default::default()
        };
        gc.sweep(&input, t0);
        // A pass at 50 s finds the IP unused; the next sweep is only at 100 s.
        gc.in_use_until([("herald-ip-192-0-2-1", "7")], secs(t0, 50));
        input.ips_in_use.clear();
        assert!(gc.sweep(&input, secs(t0, 100)).is_empty());
        assert_eq!(gc.next_due(&input), Some(secs(t0, 110)));
        assert_eq!(names(&gc.sweep(&input, secs(t0, 110))), ["herald-ip-192-0-2-1"]);
        // Freed at 200 while the watch showed version 7; the holder released it (version 8) before the next sweep:
        // that change starts the window again, at the sweep that sees it.
        input.ips_in_use.insert("herald-ip-192-0-2-1".to_string());
        gc.sweep(&input, secs(t0, 150));
        gc.in_use_until([("herald-ip-192-0-2-1", "7")], secs(t0, 200));
        input.ips_in_use.clear();
        input.ip_leases = vec![lease("herald-ip-192-0-2-1", "8", None)];
        assert!(gc.sweep(&input, secs(t0, 250)).is_empty());
        assert_eq!(gc.next_due(&input), Some(secs(t0, 310)));
    }

    #[test]
    fn a_lease_written_in_the_meantime_starts_a_new_window() {
        let mut gc = LeaseCollector::new(GRACE);
        let t0 = Instant::now();
        let mut input = GcInput {
            ip_leases: vec![lease("herald-ip-192-0-2-1", "7", None)],
            ..Default::default()
        };
        gc.sweep(&input, t0);
        // Acquired and released again (a re-allocation that came and went): a new version.
        input.ip_leases[0].resource_version = "9".into();
        assert!(gc.sweep(&input, secs(t0, 30)).is_empty());
        assert!(gc.sweep(&input, secs(t0, 89)).is_empty());
        let due = gc.sweep(&input, secs(t0, 90));
        assert_eq!(due[0].resource_version, "9");
    }

    #[test]
    fn a_live_holder_keeps_its_lease_and_a_silent_one_loses_it_after_a_checked_read() {
        let mut gc = LeaseCollector::new(GRACE);
        let t0 = Instant::now();
        let mut input = GcInput {
            ip_leases: vec![lease("herald-ip-192-0-2-1", "7", Some("n1/a"))],
            node_leases: vec![lease("herald-node-n1", "100", Some("n1/a"))],
            nodes: ["n1".to_string()].into(),
            ..Default::default()
        };
        // n1 renews every 10 s for two minutes.
        for (i, s) in (0..=120).step_by(10).enumerate() {
            input.node_leases[0].resource_version = (100 + i).to_string();
            assert!(gc.sweep(&input, secs(t0, s)).is_empty(), "renewing at {s}s");
        }
        // Then it stops: the last change was seen at 120 s.
        assert_eq!(gc.next_due(&input), Some(secs(t0, 180)));
        assert!(gc.sweep(&input, secs(t0, 179)).is_empty());
        let due = gc.sweep(&input, secs(t0, 180));
        let check = due[0].holder_check.clone().expect("a held lease is checked first");
        assert_eq!(
            check,
            HolderCheck {
                node_lease: "herald-node-n1".into(),
                holder: "n1/a".into(),
                seen_rv: Some("112".into()),
            }
        );
        assert!(due[0].reason.contains("holder n1/a not renewing"), "{}", due[0].reason);
        // The fresh read decides: unchanged, gone or taken by another instance passes; a renew does not.
        assert!(check.passes(Some(&lease("herald-node-n1", "112", Some("n1/a")))));
        assert!(check.passes(None));
        assert!(check.passes(Some(&lease("herald-node-n1", "113", Some("n1/b")))));
        assert!(check.passes(Some(&lease("herald-node-n1", "113", None))));
        assert!(!check.passes(Some(&lease("herald-node-n1", "113", Some("n1/a")))));
        // A failed check starts the window again.
        gc.postpone("herald-ip-192-0-2-1", secs(t0, 181));
        assert!(gc.sweep(&input, secs(t0, 200)).is_empty());
        assert_eq!(names(&gc.sweep(&input, secs(t0, 241))), ["herald-ip-192-0-2-1"]);
    }

    #[test]
    fn a_holder_without_its_node_lease_is_judged_by_the_ip_lease_alone() {
        let mut gc = LeaseCollector::new(GRACE);
        let t0 = Instant::now();
        let input = GcInput {
            ip_leases: vec![lease("herald-ip-192-0-2-1", "7", Some("n1/a"))],
            // A restarted agent on n1 holds its node lease now; n2's lease does not matter.
            node_leases: vec![
                lease("herald-node-n1", "100", Some("n1/b")),
                lease("herald-node-n2", "5", Some("n2/x")),
            ],
            nodes: ["n1".to_string(), "n2".to_string()].into(),
            ..Default::default()
        };
        gc.sweep(&input, t0);
        let due = gc.sweep(&input, secs(t0, 60));
        assert_eq!(names(&due), ["herald-ip-192-0-2-1"]);
        assert_eq!(due[0].holder_check.as_ref().unwrap().seen_rv, None);
    }

    #[test]
    fn a_node_lease_is_collected_only_without_its_node_and_without_renews() {
        let mut gc = LeaseCollector::new(GRACE);
        let t0 = Instant::now();
        let mut input = GcInput {
            node_leases: vec![
                lease("herald-node-gone", "1", Some("gone/a")),
                lease("herald-node-kept", "2", None),
                lease("herald-node-busy", "3", Some("busy/a")),
            ],
            nodes: ["gone".to_string(), "kept".to_string()].into(),
            ..Default::default()
        };
        // 'busy' never had a Node, but its agent keeps renewing.
        for (i, s) in (0..=600).step_by(10).enumerate() {
            input.node_leases[2].resource_version = (3 + i).to_string();
            // A Node that exists keeps its lease however old (a stopped agent, a node rebooting).
            assert!(gc.sweep(&input, secs(t0, s)).is_empty(), "{s}");
        }
        // Node 'gone' is removed at 600 s.
        input.nodes.remove("gone");
        for (i, s) in (601..=700).step_by(5).enumerate() {
            input.node_leases[2].resource_version = (1000 + i).to_string();
            let due = gc.sweep(&input, secs(t0, s as u64));
            if s < 660 {
                assert!(due.is_empty(), "{s}: {due:?}");
            } else {
                assert_eq!(names(&due), ["herald-node-gone"], "{s}");
                assert_eq!(due[0].resource_version, "1");
                assert_eq!(due[0].kind, LeaseKind::Node);
            }
        }
    }

    #[test]
    fn deleted_leases_are_forgotten_and_a_recreated_one_waits_again() {
        let mut gc = LeaseCollector::new(GRACE);
        let t0 = Instant::now();
        let mut input = GcInput {
            ip_leases: vec![lease("herald-ip-192-0-2-1", "7", None)],
            ..Default::default()
        };
        gc.sweep(&input, t0);
        let kept = input.ip_leases.pop().unwrap();
        gc.sweep(&input, secs(t0, 30));
        assert!(gc.ip.is_empty(), "state is bounded by the Leases that exist");
        input.ip_leases.push(kept);
        assert!(gc.sweep(&input, secs(t0, 60)).is_empty(), "seen again: a new window");
        assert_eq!(gc.next_due(&input), Some(secs(t0, 120)));
    }

    #[test]
    fn the_grace_period_is_at_least_the_takeover_time_or_zero() {
        let t = Duration::from_secs(3);
        assert!(validate_gc_after(DEFAULT_GC_AFTER, t).is_ok());
        assert!(validate_gc_after(Duration::ZERO, t).is_ok(), "0 turns collection off");
        assert!(validate_gc_after(t, t).is_ok());
        assert!(validate_gc_after(MAX_GC_AFTER, t).is_ok());
        assert!(
            validate_gc_after(Duration::from_secs(10_000_000_000_000), t).is_err(),
            "no overflow later"
        );
        let err = validate_gc_after(Duration::from_secs(2), t).unwrap_err();
        assert!(
            err.contains("--lease-gc-after") && err.contains("--takeover-after"),
            "{err}"
        );
    }

    #[test]
    fn sweeps_back_off_while_deletions_fail() {
        let (now, grace) = (Instant::now(), Duration::from_secs(60));
        let pause = |failed| next_sweep(now, Some(now), grace, failed) - now;
        assert_eq!(
            pause(0),
            Duration::from_millis(7500),
            "a due Lease: one eighth of the grace period"
        );
        assert_eq!(
            next_sweep(now, None, grace, 0) - now,
            Duration::from_secs(30),
            "nothing due: half"
        );
        assert_eq!(pause(1), Duration::from_secs(15));
        assert_eq!(pause(2), Duration::from_secs(30));
        assert_eq!(pause(3), Duration::from_secs(60));
        assert_eq!(pause(10), MAX_BACKOFF);
        assert_eq!(pause(u32::MAX), MAX_BACKOFF, "no overflow");
    }

    #[test]
    fn a_view_reads_an_empty_holder_as_none() {
        let record = LeaseRecord {
            name: "herald-ip-192-0-2-1".into(),
            resource_version: Some("4".into()),
            holder: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(LeaseView::from(&record), lease("herald-ip-192-0-2-1", "4", None));
    }
}
