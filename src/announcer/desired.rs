//! What should be announced, computed from the cluster: for every allocated Service IP, its mode, pool, the
//! Services behind it, and which nodes may announce it. Pure: the same objects give the same answer on every
//! agent, which the election relies on (every agent ranks the same candidate list).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use herald_api::{Eip, Protocol, names};
use herald_ipam::{LabelSelector, Labels, ServiceKey};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::adapter as convert;

/// One Service IP to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The Eip it was allocated from.
    pub eip: String,
    /// Layer 2 or BGP.
    pub protocol: Protocol,
    /// Layer 2: the interface named by the Eip (`None`: the one whose subnet holds the IP).
    pub interface: Option<String>,
    /// The Services holding this IP (several when shared).
    pub services: BTreeSet<ServiceKey>,
    /// Nodes that may announce it, by the cluster's state (selectors, exclusions, ETP=Local endpoints). Whether
    /// this node's interface is up is added by the agent, which alone can see it.
    pub eligible_nodes: BTreeSet<String>,
    /// Why no node is eligible, when none is (for Events and logs).
    pub ineligible_reason: Option<String>,
}

/// The Services on one IP and where the IP may be announced from.
struct IpGroup {
    eip: String,
    services: BTreeSet<ServiceKey>,
    /// `None`: any node; `Some(nodes)`: only these (every Service on the IP is `externalTrafficPolicy: Local`).
    allowed: Option<BTreeSet<String>>,
}

/// The inputs, as the reflectors hold them.
#[derive(Default, Clone)]
pub struct ClusterView {
    /// Every Service.
    pub services: Vec<Arc<Service>>,
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

/// Nodes with a ready (or still serving) endpoint of the Service, and whether some ready endpoint had no node
/// name at all (then locality cannot be known).
fn local_endpoint_nodes(slices: &[Arc<EndpointSlice>], svc: &ServiceKey) -> (BTreeSet<String>, bool) {
    let mut nodes = BTreeSet::new();
    let mut anonymous = false;
    for slice in slices {
        let owner = slice.labels().get("kubernetes.io/service-name");
        if slice.namespace().as_deref() != Some(svc.namespace.as_str()) || owner != Some(&svc.name) {
            continue;
        }
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

/// Every IP to announce, with its eligible nodes.
pub fn desired(view: &ClusterView, default_class: bool) -> BTreeMap<IpAddr, Announcement> {
    let eips: BTreeMap<String, &Arc<Eip>> = view.eips.iter().map(|e| (e.name_any(), e)).collect();
    let usable_nodes: Vec<&Arc<Node>> = view.nodes.iter().filter(|n| node_usable(n)).collect();
    let mut by_ip: BTreeMap<IpAddr, IpGroup> = BTreeMap::new();
    for svc in view.services.iter().filter(|s| convert::handles(s, default_class)) {
        let Some(pool) = convert::allocated_from(svc) else {
            continue;
        };
        let key = convert::service_key(svc);
        let local = svc.spec.as_ref().and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let allowed = if local {
            let (nodes, anonymous) = local_endpoint_nodes(&view.endpoint_slices, &key);
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
                        eip: pool.clone(),
                        services: BTreeSet::from([key.clone()]),
                        allowed: allowed.clone(),
                    };
                    by_ip.insert(ip, group);
                }
                Some(IpGroup {
                    services, allowed: acc, ..
                }) => {
                    services.insert(key.clone());
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
        let Some(eip) = eips.get(&pool) else { continue };
        let selector = eip.spec.node_selector.as_ref().map(convert::label_selector);
        let selector: Option<LabelSelector> = match selector {
            Some(Ok(s)) => Some(s),
            // An unreadable selector selects nothing (the allocator reports the Eip as invalid).
            Some(Err(_)) => Some(LabelSelector {
                match_expressions: vec![herald_ipam::LabelRequirement {
                    key: "herald.dev/invalid-node-selector".into(),
                    operator: herald_ipam::LabelOperator::Exists,
                }],
                ..Default::default()
            }),
            None => None,
        };
        let mut eligible = BTreeSet::new();
        for node in &usable_nodes {
            let labels: Labels = node.labels().clone();
            if selector.as_ref().is_some_and(|s| !s.matches(&labels)) {
                continue;
            }
            if local_nodes.as_ref().is_some_and(|l| !l.contains(&node.name_any())) {
                continue;
            }
            eligible.insert(node.name_any());
        }
        let ineligible_reason = eligible.is_empty().then(|| match &local_nodes {
            Some(l) if l.is_empty() => "externalTrafficPolicy: Local and no ready endpoint on any node".to_string(),
            Some(_) => "no node with a ready local endpoint matches the Eip's nodeSelector or is usable".to_string(),
            None => "no usable node matches the Eip's nodeSelector".to_string(),
        });
        out.insert(
            ip,
            Announcement {
                eip: pool,
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

    fn svc(name: &str, ip: &str, etp: &str, pool: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "annotations": {"herald.dev/allocated-from": pool}},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp},
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}))
            .unwrap(),
        )
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

    fn set(names: &[&str]) -> BTreeSet<String> {
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

    #[test]
    fn unallocated_or_foreign_services_are_not_announced() {
        let mut v = view();
        let mut s = (*svc("web", "192.0.2.1", "Cluster", "lan")).clone();
        s.metadata.annotations = None;
        v.services.push(Arc::new(s));
        v.services.push(svc("gone", "192.0.2.2", "Cluster", "deleted-pool"));
        assert!(desired(&v, true).is_empty());
    }
}
