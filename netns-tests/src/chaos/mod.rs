//! The chaos soak (issue #16): a 4-node cluster with Layer 2 and BGP Services, a client probing every Layer 2 IP
//! every 20 ms and a BGP router, under random events drawn from a seed, with invariants checked all along.
//! [`run`](run::run) is the shell (namespaces, processes, the API); this module holds what it decides with: the
//! events and how they are drawn, the client's lines, which nodes may answer for an IP, and the statistics. The
//! `chaos` binary (`netns-tests/src/bin/chaos.rs`) and `netns-tests/tests/chaos.rs` run it; docs/testing.md says
//! what it checks.

pub mod run;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

/// Nodes of the chaos cluster.
pub const NODES: usize = 4;

/// One random event. Events run one after the other; each ends by undoing its fault (a killed agent restarted, a
/// link up again, the API back).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `kill -9` of a node's agent, restarted after `down`.
    Kill { node: usize, down: Duration },
    /// SIGTERM (a clean stop), restarted after `down` (zero: a rolling restart).
    Term { node: usize, down: Duration },
    /// The node's LAN link down for `down`.
    LinkFlap { node: usize, down: Duration },
    /// The node cut off from the API server (both directions) for `down`.
    CutApi { node: usize, down: Duration },
    /// The API server stopped for `down`.
    ApiDown { down: Duration },
    /// The API server stopped and started again at once.
    ApiRestart,
    /// `node.kubernetes.io/exclude-from-external-load-balancers` set on the node, or removed when set.
    ExcludeNode { node: usize },
    /// An Eip edit that must move no Service: a spare range added to (or removed from) the Layer 2 Eip, or
    /// communities set on (or removed from) the BGP Eip.
    EipEdit { bgp: bool },
    /// A new Service.
    Create { spec: SvcSpec },
    /// A Service's port changed (its IPs must stay).
    Change { service: usize },
    /// A Service deleted.
    Delete { service: usize },
    /// The endpoints of an `externalTrafficPolicy: Local` Service moved to other nodes.
    MoveEndpoints { service: usize, nodes: Vec<usize> },
}

/// The kinds of [`Event`], for the per-kind statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Kill,
    Term,
    LinkFlap,
    CutApi,
    ApiDown,
    ApiRestart,
    ExcludeNode,
    EipEdit,
    Create,
    Change,
    Delete,
    MoveEndpoints,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 12] = [
        Kind::Kill,
        Kind::Term,
        Kind::LinkFlap,
        Kind::CutApi,
        Kind::ApiDown,
        Kind::ApiRestart,
        Kind::ExcludeNode,
        Kind::EipEdit,
        Kind::Create,
        Kind::Change,
        Kind::Delete,
        Kind::MoveEndpoints,
    ];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Kill => "kill -9 + restart",
            Kind::Term => "SIGTERM + restart",
            Kind::LinkFlap => "link down/up",
            Kind::CutApi => "node cut off from the API",
            Kind::ApiDown => "API server down",
            Kind::ApiRestart => "API server restart",
            Kind::ExcludeNode => "Node label change",
            Kind::EipEdit => "Eip edit",
            Kind::Create => "Service created",
            Kind::Change => "Service changed",
            Kind::Delete => "Service deleted",
            Kind::MoveEndpoints => "endpoints moved",
        })
    }
}

impl Event {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Event::Kill { .. } => Kind::Kill,
            Event::Term { .. } => Kind::Term,
            Event::LinkFlap { .. } => Kind::LinkFlap,
            Event::CutApi { .. } => Kind::CutApi,
            Event::ApiDown { .. } => Kind::ApiDown,
            Event::ApiRestart => Kind::ApiRestart,
            Event::ExcludeNode { .. } => Kind::ExcludeNode,
            Event::EipEdit { .. } => Kind::EipEdit,
            Event::Create { .. } => Kind::Create,
            Event::Change { .. } => Kind::Change,
            Event::Delete { .. } => Kind::Delete,
            Event::MoveEndpoints { .. } => Kind::MoveEndpoints,
        }
    }
}

/// Layer 2 or BGP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    L2,
    Bgp,
}

/// Address families of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
    Dual,
}

/// A Service of the soak.
#[derive(Clone, Debug, PartialEq)]
pub struct SvcSpec {
    pub name: String,
    pub mode: Mode,
    pub fam: Fam,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Nodes with a ready endpoint (Local Services only).
    pub endpoints: Vec<usize>,
    /// `herald.dev/sharing-key`, when it shares its IP.
    pub sharing: Option<String>,
    pub port: u16,
    /// Made by an event (only those are changed or deleted: the others stay the whole run).
    pub churn: bool,
}

impl SvcSpec {
    /// A Service on port 80, sharing no IP; a Local one gets endpoints on two nodes drawn from `rng`.
    pub fn new(rng: &mut StdRng, name: String, mode: Mode, fam: Fam, local: bool, churn: bool) -> SvcSpec {
        SvcSpec {
            name,
            mode,
            fam,
            local,
            endpoints: if local { two_nodes(rng) } else { Vec::new() },
            sharing: None,
            port: 80,
            churn,
        }
    }
}

/// What the event draw needs to know of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Situation {
    /// Services by index: `Some((churn, local))`, `None` for deleted ones.
    pub services: Vec<Option<(bool, bool)>>,
    /// Services made so far (for the next name).
    pub created: usize,
    /// Nodes with `exclude-from-external-load-balancers`.
    pub excluded: BTreeSet<usize>,
    /// Nodes with a fault not undone yet (agent down, link down, cut off from the API).
    pub busy: BTreeSet<usize>,
    /// The API server is down (only faults of nodes can happen meanwhile: nothing can be written).
    pub api_down: bool,
}

/// The most nodes with a fault at once: with one more excluded, one of four nodes still serves.
pub const MAX_BUSY: usize = 2;

/// The most churn Services alive at once.
pub const MAX_CHURN: usize = 8;

/// Draws the next event. Events overlap (a fault lasts up to 10 s, the API outage up to 90 s, and the next event
/// comes 1–10 s after the last one began), but a node has one fault at a time, at most [`MAX_BUSY`] nodes have one,
/// and at most one node is excluded: some node can always serve. While the API server is down only nodes fail.
/// `None` when no event can happen now (the API server down and [`MAX_BUSY`] nodes busy): draw again later.
pub fn draw(rng: &mut StdRng, s: &Situation, api_down: (u64, u64)) -> Option<Event> {
    if s.api_down && s.busy.len() >= MAX_BUSY {
        return None;
    }
    let secs = |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo * 1000..=hi * 1000));
    let free: Vec<usize> = (0..NODES).filter(|n| !s.busy.contains(n)).collect();
    loop {
        let node = free[rng.random_range(0..free.len())];
        let node_fault = s.busy.len() < MAX_BUSY;
        let churn: Vec<usize> = s
            .services
            .iter()
            .enumerate()
            .filter_map(|(i, v)| matches!(v, Some((true, _))).then_some(i))
            .collect();
        let local: Vec<usize> = s
            .services
            .iter()
            .enumerate()
            .filter_map(|(i, v)| matches!(v, Some((_, true))).then_some(i))
            .collect();
        // Weights: faults most often, then Service churn, then configuration.
        let event = match rng.random_range(0..100) {
            0..44 if !node_fault => continue,
            // With the API down nothing can be written, and cutting a node off from it means nothing.
            38.. if s.api_down => continue,
            0..14 => Event::Kill {
                node,
                down: secs(rng, 1, 10),
            },
            14..26 => Event::Term {
                node,
                down: secs(rng, 0, 8),
            },
            26..38 => Event::LinkFlap {
                node,
                down: secs(rng, 1, 10),
            },
            38..44 => Event::CutApi {
                node,
                down: secs(rng, 5, 30),
            },
            44..48 => Event::ApiDown {
                down: secs(rng, api_down.0, api_down.1),
            },
            48..52 => Event::ApiRestart,
            52..58 => {
                // At most one node excluded: one more would leave two of four for a fault to halve.
                if let Some(&n) = s.excluded.iter().next() {
                    Event::ExcludeNode { node: n }
                } else {
                    Event::ExcludeNode { node }
                }
            }
            58..64 => Event::EipEdit { bgp: rng.random() },
            64..76 if churn.len() < MAX_CHURN => {
                let mode = if rng.random() { Mode::L2 } else { Mode::Bgp };
                let fam = [Fam::V4, Fam::V6, Fam::Dual][rng.random_range(0..3)];
                let local = rng.random_range(0..4) == 0;
                Event::Create {
                    spec: SvcSpec::new(rng, format!("churn-{}", s.created), mode, fam, local, true),
                }
            }
            76..84 if !churn.is_empty() => Event::Change {
                service: churn[rng.random_range(0..churn.len())],
            },
            84..92 if !churn.is_empty() => Event::Delete {
                service: churn[rng.random_range(0..churn.len())],
            },
            92..100 if !local.is_empty() => Event::MoveEndpoints {
                service: local[rng.random_range(0..local.len())],
                nodes: two_nodes(rng),
            },
            _ => continue,
        };
        return Some(event);
    }
}

/// Two different nodes, sorted.
pub fn two_nodes(rng: &mut StdRng) -> Vec<usize> {
    let a = rng.random_range(0..NODES);
    let b = (a + rng.random_range(1..NODES)) % NODES;
    let mut v = vec![a, b];
    v.sort();
    v
}

/// A line of the probing client (`probe.py`).
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeLine {
    /// The IP is answered (again, or by another MAC).
    Answer { at: f64, ip: IpAddr, mac: String },
    /// No answer between `from` and `to`.
    Gap { ip: IpAddr, from: f64, to: f64 },
    /// No answer since `since` (0: never answered).
    Down { at: f64, ip: IpAddr, since: f64 },
    /// Two MACs or more answered, in two consecutive rounds (`sustained`) or in one.
    Multi {
        at: f64,
        ip: IpAddr,
        macs: Vec<String>,
        sustained: bool,
    },
}

impl ProbeLine {
    /// Parses one line; `None` for anything else.
    pub fn parse(line: &str) -> Option<ProbeLine> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let f = |i: usize| w.get(i).and_then(|s| s.parse::<f64>().ok());
        let ip = |i: usize| w.get(i).and_then(|s| s.parse::<IpAddr>().ok());
        match *w.first()? {
            "A" if w.len() == 4 => Some(ProbeLine::Answer {
                at: f(1)?,
                ip: ip(2)?,
                mac: w[3].to_string(),
            }),
            "G" if w.len() == 4 => Some(ProbeLine::Gap {
                ip: ip(1)?,
                from: f(2)?,
                to: f(3)?,
            }),
            "D" if w.len() == 4 => Some(ProbeLine::Down {
                at: f(1)?,
                ip: ip(2)?,
                since: f(3)?,
            }),
            k @ ("1" | "2") if w.len() >= 5 => Some(ProbeLine::Multi {
                at: f(1)?,
                ip: ip(2)?,
                macs: w[3..].iter().map(|s| s.to_string()).collect(),
                sustained: k == "2",
            }),
            _ => None,
        }
    }
}

/// What the harness knows of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// Its agent runs.
    pub running: bool,
    /// Its LAN link is up.
    pub link_up: bool,
    /// Labelled `exclude-from-external-load-balancers`.
    pub excluded: bool,
    /// Cut off from the API server.
    pub cut: bool,
}

impl Default for NodeFacts {
    fn default() -> Self {
        NodeFacts {
            running: true,
            link_up: true,
            excluded: false,
            cut: false,
        }
    }
}

/// The nodes that must announce (BGP) or may answer for (Layer 2) a Service's IPs once the cluster has settled:
/// running, link up, not excluded, and for a Local Service with a ready endpoint.
pub fn eligible(nodes: &[NodeFacts], local: bool, endpoints: &[usize]) -> BTreeSet<usize> {
    (0..nodes.len())
        .filter(|&i| {
            let n = nodes[i];
            n.running && n.link_up && !n.excluded && (!local || endpoints.contains(&i))
        })
        .collect()
}

/// The nodes whose announcements are not decided while the API is away from them: a node cut off keeps what it
/// announced (`--api-outage=hold`) until it sees another node take over; with the whole API down, every node.
pub fn undecided(nodes: &[NodeFacts], api_down: bool) -> BTreeSet<usize> {
    (0..nodes.len()).filter(|&i| api_down || nodes[i].cut).collect()
}

/// Whether BGP next hops `have` are right: every eligible node that is decided announces, and nobody else but
/// undecided nodes does.
pub fn routes_ok(have: &BTreeSet<usize>, eligible: &BTreeSet<usize>, undecided: &BTreeSet<usize>) -> bool {
    eligible.iter().all(|n| have.contains(n) || undecided.contains(n))
        && have.iter().all(|n| eligible.contains(n) || undecided.contains(n))
}

/// p50, p99 and max of `values` (nearest rank), in the order given back.
pub fn p50_p99_max(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[(((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize).min(v.len()) - 1];
    Some((rank(50.0), rank(99.0), v[v.len() - 1]))
}

/// The longest gap of `gaps` (`(ip, from, to)`) that began in `[start, end)` (an event's: from its start to the next
/// event's), in seconds; 0 without one.
pub fn longest_gap(gaps: &[(IpAddr, f64, f64)], start: f64, end: f64) -> f64 {
    gaps.iter()
        .filter(|(_, from, _)| (start..end).contains(from))
        .map(|(_, from, to)| to - from)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn probe_lines_parse() {
        assert_eq!(
            ProbeLine::parse("A 1700000000.1234 192.0.2.130 02:00:00:00:00:11"),
            Some(ProbeLine::Answer {
                at: 1700000000.1234,
                ip: "192.0.2.130".parse().unwrap(),
                mac: "02:00:00:00:00:11".into()
            })
        );
        assert_eq!(
            ProbeLine::parse("G 2001:db8:1::1000 10.5 12.25"),
            Some(ProbeLine::Gap {
                ip: "2001:db8:1::1000".parse().unwrap(),
                from: 10.5,
                to: 12.25
            })
        );
        assert_eq!(
            ProbeLine::parse("2 5.0 192.0.2.1 02:00:00:00:00:11 02:00:00:00:00:12"),
            Some(ProbeLine::Multi {
                at: 5.0,
                ip: "192.0.2.1".parse().unwrap(),
                macs: vec!["02:00:00:00:00:11".into(), "02:00:00:00:00:12".into()],
                sustained: true
            })
        );
        assert!(matches!(
            ProbeLine::parse("1 5.0 192.0.2.1 a b"),
            Some(ProbeLine::Multi { sustained: false, .. })
        ));
        assert_eq!(
            ProbeLine::parse("D 3.0 192.0.2.1 2.5").map(|l| matches!(l, ProbeLine::Down { .. })),
            Some(true)
        );
        for bad in [
            "",
            "A 1 2",
            "A x 192.0.2.1 m",
            "G 192.0.2.1 1",
            "2 1 192.0.2.1 onlyone",
            "Z 1 2 3",
        ] {
            assert_eq!(ProbeLine::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_events() {
        let s = Situation {
            services: vec![Some((false, true)), Some((true, false))],
            created: 3,
            ..Default::default()
        };
        let draw_all = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..200)
                .map(|_| draw(&mut rng, &s, (30, 90)).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw_all(7), draw_all(7));
        assert_ne!(draw_all(7), draw_all(8));
        let events = draw_all(7);
        for kind in Kind::ALL {
            assert!(events.iter().any(|e| e.kind() == kind), "{kind} drawn in 200 events");
        }
        for e in &events {
            match e {
                Event::ApiDown { down } => assert!((30..=90).contains(&down.as_secs())),
                Event::MoveEndpoints { service, nodes } => {
                    assert_eq!(*service, 0, "only the Local Service");
                    assert_eq!(nodes.len(), 2);
                    assert_ne!(nodes[0], nodes[1]);
                }
                Event::Change { service } | Event::Delete { service } => assert_eq!(*service, 1, "only churn"),
                Event::Create { spec } => assert_eq!(spec.name, "churn-3"),
                _ => {}
            }
        }
    }

    #[test]
    fn faults_spare_busy_nodes_and_the_api_down() {
        let s = Situation {
            services: vec![Some((true, true))],
            busy: [0].into(),
            api_down: true,
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..300 {
            let e = draw(&mut rng, &s, (30, 90)).expect("node faults remain");
            match e {
                Event::Kill { node, .. } | Event::Term { node, .. } | Event::LinkFlap { node, .. } => {
                    assert_ne!(node, 0, "a node with a fault gets no other")
                }
                other => panic!("only node faults while the API is down: {other:?}"),
            }
        }
        let s = Situation {
            services: vec![Some((true, true))],
            busy: [0, 3].into(),
            ..Default::default()
        };
        for _ in 0..300 {
            let e = draw(&mut rng, &s, (30, 90)).expect("configuration events remain");
            assert!(
                e.kind() > Kind::CutApi,
                "{MAX_BUSY} nodes busy: no more node faults: {e:?}"
            );
        }
        let s = Situation {
            busy: [0, 3].into(),
            api_down: true,
            ..Default::default()
        };
        assert_eq!(
            draw(&mut rng, &s, (30, 90)),
            None,
            "nothing can happen: no endless draw"
        );
    }

    #[test]
    fn an_excluded_node_is_the_one_included_again() {
        let s = Situation {
            excluded: [2].into(),
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..300 {
            if let Some(Event::ExcludeNode { node }) = draw(&mut rng, &s, (1, 2)) {
                assert_eq!(node, 2);
            }
        }
    }

    #[test]
    fn eligibility_and_routes() {
        let mut nodes = [NodeFacts::default(); 4];
        assert_eq!(eligible(&nodes, false, &[]), [0, 1, 2, 3].into());
        nodes[1].running = false;
        nodes[2].link_up = false;
        nodes[3].excluded = true;
        assert_eq!(eligible(&nodes, false, &[]), [0].into());
        assert_eq!(eligible(&nodes, true, &[1, 3]), BTreeSet::new());
        let nodes = [NodeFacts::default(); 4];
        assert_eq!(eligible(&nodes, true, &[1, 3]), [1, 3].into());

        let none = BTreeSet::new();
        assert!(routes_ok(&[1, 3].into(), &[1, 3].into(), &none));
        assert!(!routes_ok(&[1].into(), &[1, 3].into(), &none), "a node missing");
        assert!(!routes_ok(&[0, 1, 3].into(), &[1, 3].into(), &none), "a node too many");
        assert!(
            routes_ok(&[1].into(), &[1, 3].into(), &[3].into()),
            "undecided may be missing"
        );
        assert!(routes_ok(&[0, 1, 3].into(), &[1, 3].into(), &[0].into()), "or there");
        let mut cut = [NodeFacts::default(); 4];
        cut[2].cut = true;
        assert_eq!(undecided(&cut, false), [2].into());
        assert_eq!(undecided(&cut, true), [0, 1, 2, 3].into());
        // A deleted Service's route (nobody eligible): wrong from a decided node, not yet from a cut-off one.
        assert!(!routes_ok(&[1].into(), &none, &undecided(&cut, false)));
        assert!(routes_ok(&[2].into(), &none, &undecided(&cut, false)));
    }

    #[test]
    fn statistics() {
        assert_eq!(p50_p99_max(&[]), None);
        assert_eq!(p50_p99_max(&[3.0, 1.0, 2.0]), Some((2.0, 3.0, 3.0)));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let gaps = [(ip, 1.0, 1.5), (ip, 4.0, 7.0), (ip, 9.0, 9.1)];
        assert_eq!(longest_gap(&gaps, 0.0, 2.0), 0.5);
        assert_eq!(longest_gap(&gaps, 3.0, 6.0), 3.0);
        assert_eq!(
            longest_gap(&gaps, 5.0, 6.0),
            0.0,
            "a gap that began before belongs to an earlier event"
        );
        assert_eq!(longest_gap(&gaps, 0.0, 10.0), 3.0);
    }
}
