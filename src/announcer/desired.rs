//! What should be announced, computed from the cluster: for every allocated Service IP, its mode, pool, the
//! Services behind it, and which nodes may announce it. Pure: the same objects give the same answer on every
//! agent, which the election relies on (every agent ranks the same candidate list).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use herald_api::{Eip, Protocol, names};
use herald_election::NodeSet;
use herald_ipam::{LabelSelector, Labels, ServiceKey};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::adapter as convert;
use crate::service::ServiceView;

/// One Service IP to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The Eip it was allocated from (one string per Eip, shared by its IPs).
    pub eip: Arc<str>,
    /// Layer 2 or BGP.
    pub protocol: Protocol,
    /// Layer 2: the interface named by the Eip (`None`: the one whose subnet holds the IP).
    pub interface: Option<String>,
    /// The Services holding this IP (several when shared), sorted, each once.
    pub services: Vec<ServiceKey>,
    /// Nodes that may announce it, by the cluster's state (selectors, exclusions, ETP=Local endpoints). Whether
    /// this node's interface is up is added by the agent, which alone can see it. IPs with equal sets share one.
    pub eligible_nodes: NodeSet,
    /// Why no node is eligible, when none is (for Events and logs).
    pub ineligible_reason: Option<String>,
}

/// The Services on one IP and where the IP may be announced from.
struct IpGroup<'a> {
    eip: &'a str,
    /// Sorted, each once.
    services: Vec<ServiceKey>,
    /// `None`: any node; `Some(nodes)`: only these (every Service on the IP is `externalTrafficPolicy: Local`).
    allowed: Option<BTreeSet<String>>,
}

/// The inputs, as the reflectors hold them.
#[derive(Default, Clone)]
pub struct ClusterView {
    /// Every Service.
    pub services: Vec<Arc<ServiceView>>,
    /// Every Eip.
    pub eips: Vec<Arc<Eip>>,
    /// Every Node.
    pub nodes: Vec<Arc<Node>>,
    /// Every EndpointSlice.
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
}

/// May this node announce anything at all? Nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`
/// or with `NetworkUnavailable=True` never announce.
pub fn node_usable(node: &Node) -> bool {
    if node.labels().contains_key(names::LABEL_EXCLUDE_FROM_LB) || node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    !conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
}

/// The EndpointSlices of each Service, by (namespace, `kubernetes.io/service-name`): built once per computation, so
/// that finding a Service's slices does not scan every slice of the cluster.
type SlicesByService<'a> = HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>;

fn slices_by_service(slices: &[Arc<EndpointSlice>]) -> SlicesByService<'_> {
    let mut index: SlicesByService<'_> = HashMap::new();
    for slice in slices {
        let (Some(namespace), Some(service)) = (
            slice.metadata.namespace.as_deref(),
            slice.labels().get(SERVICE_NAME_LABEL),
        ) else {
            continue;
        };
        index.entry((namespace, service.as_str())).or_default().push(slice);
    }
    index
}

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Nodes with a ready (or still serving) endpoint of the Service, and whether some ready endpoint had no node
/// name at all (then locality cannot be known).
fn local_endpoint_nodes(slices: &SlicesByService<'_>, svc: &ServiceKey) -> (BTreeSet<String>, bool) {
    let mut nodes = BTreeSet::new();
    let mut anonymous = false;
    let Some(slices) = slices.get(&(svc.namespace.as_str(), svc.name.as_str())) else {
        return (nodes, anonymous);
    };
    for slice in slices {
        for ep in slice.endpoints.iter().flatten() {
            let c = ep.conditions.as_ref();
            // Ready, or terminating but still serving (KEP-1669): traffic still reaches it.
            let usable = c.is_none_or(|c| c.ready.unwrap_or(true) || c.serving.unwrap_or(false));
            if !usable {
                continue;
            }
            match &ep.node_name {
                Some(n) => {
                    nodes.insert(n.clone());
                }
                None => anonymous = true,
            }
        }
    }
    (nodes, anonymous)
}

/// An object's name as `ResourceExt::name_any` gives it, borrowed.
fn name_of(meta: &ObjectMeta) -> &str {
    meta.name
        .as_deref()
        .or(meta.generate_name.as_deref())
        .unwrap_or_default()
}

/// What one Eip contributes to each of its IPs: the usable nodes its `nodeSelector` picks, computed once per Eip
/// rather than once per IP.
struct EipNodes<'a> {
    eip: &'a Eip,
    /// Its name, made once and shared by the announcements of its IPs.
    name: Arc<str>,
    selected: BTreeSet<&'a str>,
    /// `selected` as a [`NodeSet`], made once and shared by every IP of the Eip that any node may announce.
    all: NodeSet,
}

impl<'a> EipNodes<'a> {
    fn new(eip: &'a Eip, usable_nodes: &[(&'a str, &'a Labels)]) -> Self {
        let selected = selected_nodes(eip, usable_nodes);
        let all = selected.iter().map(|n| n.to_string()).collect();
        Self {
            eip,
            name: Arc::from(eip.name_any()),
            selected,
            all,
        }
    }

    /// The selected nodes that `local` allows (`None`: all of them). Equal sets come out as one shared [`NodeSet`]
    /// (`interned` holds those made so far).
    fn eligible(&self, local: Option<&BTreeSet<String>>, interned: &mut HashSet<NodeSet>) -> NodeSet {
        let set: BTreeSet<String> = match local {
            None => return self.all.clone(),
            // Walk the smaller set: an IP of an `externalTrafficPolicy: Local` Service usually has few.
            Some(local) if local.len() < self.selected.len() => local
                .iter()
                .filter(|n| self.selected.contains(n.as_str()))
                .cloned()
                .collect(),
            Some(local) => self
                .selected
                .iter()
                .filter(|n| local.contains(**n))
                .map(|n| n.to_string())
                .collect(),
        };
        if let Some(shared) = interned.get(&set) {
            return shared.clone();
        }
        let set = NodeSet::from(set);
        interned.insert(set.clone());
        set
    }
}

/// The nodes that may announce `eip`'s addresses: those of `usable_nodes` (name, labels) its `nodeSelector` picks,
/// all of them without one, none when the selector cannot be read (the allocator reports the Eip as invalid). The
/// one place that says so, for the announcer and the address prober.
pub fn selected_nodes<'a>(eip: &Eip, usable_nodes: &[(&'a str, &Labels)]) -> BTreeSet<&'a str> {
    let selector: Option<LabelSelector> = match eip.spec.node_selector.as_ref().map(convert::label_selector) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return BTreeSet::new(),
        None => None,
    };
    usable_nodes
        .iter()
        .filter(|(_, labels)| selector.as_ref().is_none_or(|s| s.matches(labels)))
        .map(|(name, _)| *name)
        .collect()
}

/// The usable nodes (see [`node_usable`]) of `nodes`, by name with their labels.
pub fn usable_nodes(nodes: &[Arc<Node>]) -> Vec<(&str, &Labels)> {
    nodes
        .iter()
        .filter(|n| node_usable(n))
        .map(|n| (name_of(&n.metadata), n.labels()))
        .collect()
}

/// Every IP to announce, with its eligible nodes.
///
/// Runs on every batch of watch events over the whole cluster, so each input is read once: the slices are indexed by
/// Service, and each Eip's selected nodes are found once, not per IP.
pub fn desired(view: &ClusterView, default_class: bool) -> BTreeMap<IpAddr, Announcement> {
    let eips: HashMap<&str, &Eip> = view.eips.iter().map(|e| (name_of(&e.metadata), &**e)).collect();
    let usable_nodes = usable_nodes(&view.nodes);
    let mut slices: Option<SlicesByService<'_>> = None;
    let mut by_ip: BTreeMap<IpAddr, IpGroup<'_>> = BTreeMap::new();
    for svc in view.services.iter().filter(|s| convert::handles(s, default_class)) {
        let Some(pool) = convert::allocated_from(svc) else {
            continue;
        };
        let key = convert::service_key(svc);
        let local = svc.etp_local();
        let allowed = if local {
            let slices = slices.get_or_insert_with(|| slices_by_service(&view.endpoint_slices));
            let (nodes, anonymous) = local_endpoint_nodes(slices, &key);
            // Endpoints without a node name (hand-made slices, some CNIs) cannot be placed: rather than announce
            // from nowhere, let every node announce and kube-proxy route.
            if nodes.is_empty() && anonymous {
                None
            } else {
                Some(nodes)
            }
        } else {
            None
        };
        for ip in convert::status_ips(svc) {
            match by_ip.get_mut(&ip) {
                None => {
                    let group = IpGroup {
                        eip: pool,
                        services: vec![key.clone()],
                        allowed: allowed.clone(),
                    };
                    by_ip.insert(ip, group);
                }
                Some(IpGroup {
                    services, allowed: acc, ..
                }) => {
                    if let Err(at) = services.binary_search(&key) {
                        services.insert(at, key.clone());
                    }
                    // Any Service that may be reached through every node makes every node useful; otherwise
                    // every node with a local endpoint of some sharer is.
                    *acc = match (acc.take(), &allowed) {
                        (Some(mut a), Some(b)) => {
                            a.extend(b.iter().cloned());
                            Some(a)
                        }
                        _ => None,
                    };
                }
            }
        }
    }
    let mut per_eip: HashMap<&str, EipNodes<'_>> = HashMap::new();
    let mut interned = HashSet::new();
    let mut out = BTreeMap::new();
    for (
        ip,
        IpGroup {
            eip: pool,
            services,
            allowed: local_nodes,
        },
    ) in by_ip
    {
        let eip_nodes = match per_eip.entry(pool) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let Some(eip) = eips.get(pool) else { continue };
                e.insert(EipNodes::new(eip, &usable_nodes))
            }
        };
        let eligible = eip_nodes.eligible(local_nodes.as_ref(), &mut interned);
        let ineligible_reason = eligible.is_empty().then(|| match &local_nodes {
            Some(l) if l.is_empty() => "externalTrafficPolicy: Local and no ready endpoint on any node".to_string(),
            Some(_) => "no node with a ready local endpoint matches the Eip's nodeSelector or is usable".to_string(),
            None => "no usable node matches the Eip's nodeSelector".to_string(),
        });
        let eip = eip_nodes.eip;
        out.insert(
            ip,
            Announcement {
                eip: Arc::clone(&eip_nodes.name),
                protocol: eip.spec.protocol,
                interface: eip.spec.interface.clone(),
                services,
                eligible_nodes: eligible,
                ineligible_reason,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, labels: Value, conditions: Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                "status": {"conditions": conditions}}))
            .unwrap(),
        )
    }

    fn svc(name: &str, ip: &str, etp: &str, pool: &str) -> Arc<ServiceView> {
        Arc::new(ServiceView::from_json(json!({
            "metadata": {"name": name, "namespace": "ns", "annotations": {"herald.dev/allocated-from": pool}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})))
    }

    fn eip(name: &str, spec: Value) -> Arc<Eip> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap())
    }

    fn slice(svc: &str, endpoints: Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": format!("{svc}-x"), "namespace": "ns",
                "labels": {"kubernetes.io/service-name": svc}}, "addressType": "IPv4", "endpoints": endpoints}))
            .unwrap(),
        )
    }

    fn view() -> ClusterView {
        ClusterView {
            eips: vec![eip("lan", json!({"addresses": ["192.0.2.0/24"]}))],
            nodes: vec![
                node("a", json!({"rack": "1"}), json!([])),
                node("b", json!({"rack": "2"}), json!([])),
                node(
                    "c",
                    json!({"node.kubernetes.io/exclude-from-external-load-balancers": ""}),
                    json!([]),
                ),
                node(
                    "d",
                    json!({}),
                    json!([{"type": "NetworkUnavailable", "status": "True"}]),
                ),
            ],
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(names: &[&str]) -> NodeSet {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn excluded_and_unavailable_nodes_never_announce() {
        let mut v = view();
        v.services.push(svc("web", "192.0.2.1", "Cluster", "lan"));
        let d = desired(&v, true);
        assert_eq!(d[&ip("192.0.2.1")].eligible_nodes, set(&["a", "b"]));
        assert_eq!(d[&ip("192.0.2.1")].protocol, Protocol::Layer2);
    }

    #[test]
    fn node_selector_limits_candidates() {
        let mut v = view();
        v.eips = vec![eip(
            "lan",
            json!({"addresses": ["192.0.2.0/24"], "nodeSelector": {"matchLabels": {"rack": "2"}}}),
        )];
        v.services.push(svc("web", "192.0.2.1", "Cluster", "lan"));
        assert_eq!(desired(&v, true)[&ip("192.0.2.1")].eligible_nodes, set(&["b"]));
    }

    #[test]
    fn local_policy_follows_ready_or_serving_endpoints() {
        let mut v = view();
        v.services.push(svc("web", "192.0.2.1", "Local", "lan"));
        let d = desired(&v, true);
        assert!(d[&ip("192.0.2.1")].eligible_nodes.is_empty());
        assert!(
            d[&ip("192.0.2.1")]
                .ineligible_reason
                .as_ref()
                .unwrap()
                .contains("no ready endpoint")
        );
        v.endpoint_slices.push(slice(
            "web",
            json!([
                {"addresses": ["10.0.0.1"], "nodeName": "b", "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "nodeName": "a", "conditions": {"ready": false, "serving": false}},
            ]),
        ));
        assert_eq!(desired(&v, true)[&ip("192.0.2.1")].eligible_nodes, set(&["b"]));
        // The pod on b terminates but still serves; the one on a becomes ready.
        v.endpoint_slices = vec![slice(
            "web",
            json!([
                {"addresses": ["10.0.0.1"], "nodeName": "b", "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.2"], "nodeName": "a", "conditions": {"ready": true}},
            ]),
        )];
        assert_eq!(desired(&v, true)[&ip("192.0.2.1")].eligible_nodes, set(&["a", "b"]));
    }

    #[test]
    fn endpoints_without_node_names_fall_back_to_every_node() {
        let mut v = view();
        v.services.push(svc("web", "192.0.2.1", "Local", "lan"));
        v.endpoint_slices.push(slice(
            "web",
            json!([{"addresses": ["198.51.100.7"], "conditions": {"ready": true}}]),
        ));
        assert_eq!(desired(&v, true)[&ip("192.0.2.1")].eligible_nodes, set(&["a", "b"]));
    }

    #[test]
    fn shared_ip_with_a_cluster_policy_service_is_eligible_everywhere() {
        let mut v = view();
        v.services.push(svc("local", "192.0.2.1", "Local", "lan"));
        v.services.push(svc("cluster", "192.0.2.1", "Cluster", "lan"));
        let d = desired(&v, true);
        let a = &d[&ip("192.0.2.1")];
        assert_eq!(a.services.len(), 2);
        assert_eq!(a.eligible_nodes, set(&["a", "b"]));
    }

    /// One node set per pool (and per distinct set of local endpoint nodes), shared by every IP that has it; one Eip
    /// name per pool.
    #[test]
    fn ips_with_the_same_nodes_share_one_set() {
        let mut v = view();
        v.services.push(svc("web", "192.0.2.1", "Cluster", "lan"));
        v.services.push(svc("api", "192.0.2.2", "Cluster", "lan"));
        let d = desired(&v, true);
        let (one, two) = (&d[&ip("192.0.2.1")], &d[&ip("192.0.2.2")]);
        assert_eq!(one.eligible_nodes, set(&["a", "b"]));
        assert!(one.eligible_nodes.same(&two.eligible_nodes), "shared, not copied");
        assert_eq!(&*one.eip, "lan");
        assert!(Arc::ptr_eq(&one.eip, &two.eip), "one Eip name per Eip, not per IP");
    }

    #[test]
    fn unallocated_or_foreign_services_are_not_announced() {
        let mut v = view();
        let mut s = (*svc("web", "192.0.2.1", "Cluster", "lan")).clone();
        s.annotations.clear();
        v.services.push(Arc::new(s));
        v.services.push(svc("gone", "192.0.2.2", "Cluster", "deleted-pool"));
        assert!(desired(&v, true).is_empty());
    }

    /// Several Eips with different selectors, sharing and `externalTrafficPolicy: Local` with slices in several
    /// namespaces: the per-Eip and per-Service shortcuts must not mix them up.
    #[test]
    fn selectors_and_local_endpoints_stay_apart_across_eips_and_namespaces() {
        let mut v = view();
        v.eips = vec![
            eip("any", json!({"addresses": ["192.0.2.0/24"]})),
            eip(
                "rack1",
                json!({"addresses": ["198.51.100.0/24"], "nodeSelector": {"matchLabels": {"rack": "1"}}}),
            ),
            eip(
                "broken",
                json!({"addresses": ["203.0.113.0/24"], "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "Near"}]}}),
            ),
        ];
        let in_ns = |ns: &str, s: Arc<ServiceView>| {
            let mut s = (*s).clone();
            s.namespace = ns.into();
            Arc::new(s)
        };
        let slice_in = |ns: &str, s: Arc<EndpointSlice>| {
            let mut s = (*s).clone();
            s.metadata.namespace = Some(ns.into());
            Arc::new(s)
        };
        v.services = vec![
            in_ns("one", svc("web", "192.0.2.1", "Local", "any")),
            in_ns("two", svc("web", "198.51.100.1", "Local", "rack1")),
            in_ns("two", svc("api", "192.0.2.2", "Cluster", "any")),
            in_ns("two", svc("db", "203.0.113.1", "Cluster", "broken")),
        ];
        let on = |node: &str| json!([{"addresses": ["10.0.0.1"], "nodeName": node, "conditions": {"ready": true}}]);
        v.endpoint_slices = vec![
            slice_in("one", slice("web", on("b"))),
            slice_in("two", slice("web", on("a"))),
            slice_in("three", slice("web", on("a"))),
        ];
        let d = desired(&v, true);
        assert_eq!(
            d[&ip("192.0.2.1")].eligible_nodes,
            set(&["b"]),
            "one/web: its own slice"
        );
        assert_eq!(
            d[&ip("198.51.100.1")].eligible_nodes,
            set(&["a"]),
            "two/web: rack 1 and local"
        );
        assert_eq!(d[&ip("192.0.2.2")].eligible_nodes, set(&["a", "b"]));
        assert!(
            d[&ip("203.0.113.1")].eligible_nodes.is_empty(),
            "an unreadable selector selects nothing"
        );
        // The endpoint of two/web moves to b, which rack1 does not select.
        v.endpoint_slices[1] = slice_in("two", slice("web", on("b")));
        let d = desired(&v, true);
        assert!(d[&ip("198.51.100.1")].eligible_nodes.is_empty());
        assert_eq!(
            d[&ip("198.51.100.1")].ineligible_reason.as_deref(),
            Some("no node with a ready local endpoint matches the Eip's nodeSelector or is usable")
        );
        assert_eq!(desired(&v, true), reference(&v, true));
    }

    /// `desired` as first written: every IP visits every node, every Local Service every slice. Slow and plain, it
    /// is what the indexed version must agree with.
    fn reference(view: &ClusterView, default_class: bool) -> BTreeMap<IpAddr, Announcement> {
        let eips: BTreeMap<String, &Arc<Eip>> = view.eips.iter().map(|e| (e.name_any(), e)).collect();
        let usable_nodes: Vec<&Arc<Node>> = view.nodes.iter().filter(|n| node_usable(n)).collect();
        type Group = (String, BTreeSet<ServiceKey>, Option<BTreeSet<String>>);
        let mut by_ip: BTreeMap<IpAddr, Group> = BTreeMap::new();
        for svc in view.services.iter().filter(|s| convert::handles(s, default_class)) {
            let Some(pool) = convert::allocated_from(svc) else {
                continue;
            };
            let key = convert::service_key(svc);
            let local = svc.etp_local();
            let allowed = local
                .then(|| {
                    let (mut nodes, mut anonymous) = (BTreeSet::new(), false);
                    for slice in &view.endpoint_slices {
                        let owner = slice.labels().get("kubernetes.io/service-name");
                        if slice.namespace().as_deref() != Some(key.namespace.as_str()) || owner != Some(&key.name) {
                            continue;
                        }
                        for ep in slice.endpoints.iter().flatten() {
                            let c = ep.conditions.as_ref();
                            if !c.is_none_or(|c| c.ready.unwrap_or(true) || c.serving.unwrap_or(false)) {
                                continue;
                            }
                            match &ep.node_name {
                                Some(n) => {
                                    nodes.insert(n.clone());
                                }
                                None => anonymous = true,
                            }
                        }
                    }
                    (!(nodes.is_empty() && anonymous)).then_some(nodes)
                })
                .flatten();
            for ip in convert::status_ips(svc) {
                let group = by_ip
                    .entry(ip)
                    .or_insert_with(|| (pool.to_string(), BTreeSet::new(), allowed.clone()));
                if !group.1.is_empty() {
                    group.2 = match (group.2.take(), &allowed) {
                        (Some(mut a), Some(b)) => {
                            a.extend(b.iter().cloned());
                            Some(a)
                        }
                        _ => None,
                    };
                }
                group.1.insert(key.clone());
            }
        }
        let mut out = BTreeMap::new();
        for (ip, (pool, services, local_nodes)) in by_ip {
            let Some(eip) = eips.get(&pool) else { continue };
            let selector = match eip.spec.node_selector.as_ref().map(convert::label_selector) {
                Some(Ok(s)) => Some(Some(s)),
                Some(Err(_)) => None,
                None => Some(None),
            };
            let mut eligible = BTreeSet::new();
            for node in &usable_nodes {
                let Some(selector) = &selector else { break };
                if selector.as_ref().is_some_and(|s| !s.matches(&node.labels().clone())) {
                    continue;
                }
                if local_nodes.as_ref().is_some_and(|l| !l.contains(&node.name_any())) {
                    continue;
                }
                eligible.insert(node.name_any());
            }
            let ineligible_reason = eligible.is_empty().then(|| match &local_nodes {
                Some(l) if l.is_empty() => "externalTrafficPolicy: Local and no ready endpoint on any node".to_string(),
                Some(_) => {
                    "no node with a ready local endpoint matches the Eip's nodeSelector or is usable".to_string()
                }
                None => "no usable node matches the Eip's nodeSelector".to_string(),
            });
            let a = Announcement {
                eip: pool.into(),
                protocol: eip.spec.protocol,
                interface: eip.spec.interface.clone(),
                services: services.into_iter().collect(),
                eligible_nodes: eligible.into(),
                ineligible_reason,
            };
            out.insert(ip, a);
        }
        out
    }

    /// A random cluster: nodes with rack/zone labels (some excluded or unavailable), Eips with and without
    /// selectors (one unreadable, one BGP), Services of every kind Herald meets, sharing IPs from a small range,
    /// and slices in the right and wrong namespaces with endpoints in every condition.
    fn random_view(rng: &mut rand::rngs::StdRng, services: usize) -> ClusterView {
        use rand::Rng;
        let pick = |rng: &mut rand::rngs::StdRng, options: &[&'static str]| options[rng.random_range(0..options.len())];
        let mut v = ClusterView::default();
        for i in 0..rng.random_range(0..8) {
            let mut labels = serde_json::Map::new();
            labels.insert("rack".into(), json!(pick(rng, &["1", "2", "3"])));
            if rng.random_bool(0.5) {
                labels.insert("zone".into(), json!(pick(rng, &["a", "b"])));
            }
            if rng.random_bool(0.1) {
                labels.insert(
                    "node.kubernetes.io/exclude-from-external-load-balancers".into(),
                    json!(""),
                );
            }
            let conditions = if rng.random_bool(0.1) {
                json!([{"type": "NetworkUnavailable", "status": "True"}])
            } else {
                json!([{"type": "NetworkUnavailable", "status": "False"}])
            };
            v.nodes.push(node(&format!("n{i}"), Value::Object(labels), conditions));
        }
        v.eips = vec![
            eip("e0", json!({"addresses": ["192.0.2.0/24"]})),
            eip(
                "e1",
                json!({"addresses": ["192.0.2.0/24"], "nodeSelector": {"matchLabels": {"rack": "1"}}}),
            ),
            eip(
                "e2",
                json!({"addresses": ["192.0.2.0/24"], "protocol": "bgp",
                    "nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}),
            ),
            eip(
                "e3",
                json!({"addresses": ["192.0.2.0/24"], "nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "Near"}]}}),
            ),
            eip(
                "e4",
                json!({"addresses": ["192.0.2.0/24"], "interface": "eth1",
                    "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["3"]}]}}),
            ),
        ];
        let namespaces = ["ns0", "ns1", "ns2"];
        for i in 0..services {
            let name = format!("s{}", rng.random_range(0..services.max(1)));
            let ns = pick(rng, &namespaces);
            let pool = pick(rng, &["e0", "e1", "e2", "e3", "e4", "gone"]);
            let etp = pick(rng, &["Local", "Cluster"]);
            let ips: Vec<Value> = (0..rng.random_range(0..3))
                .map(|_| json!({"ip": format!("192.0.2.{}", rng.random_range(0..services.max(1) as u32))}))
                .collect();
            let mut annotations = serde_json::Map::new();
            if rng.random_bool(0.9) {
                annotations.insert("herald.dev/allocated-from".into(), json!(pool));
            }
            let mut spec = json!({"type": "LoadBalancer", "externalTrafficPolicy": etp});
            match rng.random_range(0..10) {
                0 => spec["type"] = json!("ClusterIP"),
                1 => spec["loadBalancerClass"] = json!("other.io/lb"),
                2 => spec["loadBalancerClass"] = json!("herald.dev/lb"),
                _ => {}
            }
            v.services.push(Arc::new(ServiceView::from_json(json!({
                "metadata": {"name": name, "namespace": ns, "uid": format!("u{i}"), "annotations": annotations},
                "spec": spec,
                "status": {"loadBalancer": {"ingress": ips}}}))));
            for _ in 0..rng.random_range(0..3) {
                let endpoints: Vec<Value> = (0..rng.random_range(0..4))
                    .map(|_| {
                        let mut ep = json!({"addresses": ["10.0.0.1"]});
                        if rng.random_bool(0.9) {
                            ep["nodeName"] = json!(format!("n{}", rng.random_range(0..10)));
                        }
                        match rng.random_range(0..4) {
                            0 => {}
                            1 => ep["conditions"] = json!({"ready": true}),
                            2 => ep["conditions"] = json!({"ready": false, "serving": rng.random_bool(0.5)}),
                            _ => ep["conditions"] = json!({}),
                        }
                        ep
                    })
                    .collect();
                let slice_ns = if rng.random_bool(0.8) {
                    ns
                } else {
                    pick(rng, &namespaces)
                };
                v.endpoint_slices.push(Arc::new(
                    serde_json::from_value(json!({"metadata": {"name": format!("{name}-{i}"), "namespace": slice_ns,
                        "labels": {"kubernetes.io/service-name": name}}, "addressType": "IPv4", "endpoints": endpoints}))
                    .unwrap(),
                ));
            }
        }
        v
    }

    #[test]
    fn the_indexed_computation_agrees_with_the_plain_one_on_random_clusters() {
        use rand::SeedableRng;
        // Every kind of answer must come up, or the comparison proves little.
        let mut reasons = BTreeSet::new();
        let (mut shared, mut some_nodes) = (0, 0);
        for seed in 0..300 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let services = [0, 1, 5, 20, 60][seed as usize % 5];
            let v = random_view(&mut rng, services);
            for default_class in [true, false] {
                let d = desired(&v, default_class);
                assert_eq!(
                    d,
                    reference(&v, default_class),
                    "seed {seed}, default_class {default_class}"
                );
                for a in d.values() {
                    reasons.insert(a.ineligible_reason.clone());
                    shared += usize::from(a.services.len() > 1);
                    some_nodes += usize::from(!a.eligible_nodes.is_empty());
                }
            }
        }
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(
            shared > 50 && some_nodes > 500,
            "{shared} shared IPs, {some_nodes} with eligible nodes"
        );
    }

    /// Not a check, a measurement: `cargo nextest run -p herald --lib --run-ignored only desired_timing
    /// --no-capture` (with `--release` for real numbers).
    #[test]
    #[ignore]
    fn desired_timing_at_10k_services() {
        let mut v = view();
        v.nodes = (0..3)
            .map(|i| node(&format!("n{i}"), json!({"rack": "1"}), json!([])))
            .collect();
        for i in 0..10_000u32 {
            let name = format!("s{i}");
            let etp = if i % 2 == 0 { "Local" } else { "Cluster" };
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let mut s = (*svc(&name, &ip, etp, "lan")).clone();
            s.namespace = format!("ns{}", i % 10);
            v.services.push(Arc::new(s));
            let mut slice = (*slice(
                &name,
                json!([{"addresses": ["10.0.0.1"], "nodeName": format!("n{}", i % 3), "conditions": {"ready": true}}]),
            ))
            .clone();
            slice.metadata.namespace = Some(format!("ns{}", i % 10));
            v.endpoint_slices.push(Arc::new(slice));
        }
        v.eips = vec![eip("lan", json!({"addresses": ["10.0.0.0/8"]}))];
        let time = |f: &dyn Fn() -> BTreeMap<IpAddr, Announcement>| {
            let start = std::time::Instant::now();
            let n = f().len();
            (start.elapsed(), n)
        };
        let (new, n) = time(&|| desired(&v, true));
        println!("desired() at {n} IPs (10,000 Services, half Local, 10,000 slices, 3 nodes): {new:?}");
        let (new, _) = time(&|| desired(&v, true));
        println!("desired() again: {new:?}");
        let (old, _) = time(&|| reference(&v, true));
        println!("the former computation: {old:?}");
    }
}
