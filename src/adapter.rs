//! The one adapter between Kubernetes objects and Herald's domain types, for the allocator and the announcer alike:
//! which Services Herald handles, how their annotations and status are read (requests, Service keys, allocated
//! IPs, the Eip they came from), Eips as pools, label selectors, and the `herald.dev/announced-by` encoding. Pure
//! functions, tested without an API server.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use herald_api::eip::MAX_ADDRESS_ENTRY;
use herald_api::{Eip, names, text};
use herald_ipam::{
    CreationKey, ExistingAssignment, Family, IpFamilyPolicy, LabelOperator, LabelRequirement, LabelSelector, Labels,
    PoolSpec, Protocol, ServiceKey, ServicePort, ServiceRequest,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use kube::ResourceExt;

use crate::service::ServiceView;

/// `namespace/name` of a Service.
pub fn service_key(svc: &ServiceView) -> ServiceKey {
    ServiceKey::new(svc.namespace.clone(), svc.name.clone())
}

/// The new `herald.dev/announced-by` value (`ip=node,ip=node`, one entry per Service IP): `ip=node` set for each of
/// `announced` that the Service still has, entries for IPs it no longer has dropped, sorted.
pub fn announced_by(
    existing: Option<&str>,
    service_ips: &[IpAddr],
    announced: impl IntoIterator<Item = IpAddr>,
    node: &str,
) -> String {
    let mut entries: std::collections::BTreeMap<IpAddr, String> = existing
        .unwrap_or_default()
        .split(',')
        .filter_map(|e| {
            let (i, n) = e.trim().split_once('=')?;
            Some((i.parse().ok()?, n.to_string()))
        })
        .filter(|(i, _)| service_ips.contains(i))
        .collect();
    entries.extend(
        announced
            .into_iter()
            .filter(|ip| service_ips.contains(ip))
            .map(|ip| (ip, node.to_string())),
    );
    entries
        .iter()
        .map(|(i, n)| format!("{i}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Which Services this agent handles: `type: LoadBalancer` with class `herald.dev/lb`, or without a class when
/// `default_class` is on.
pub fn handles(svc: &ServiceView, default_class: bool) -> bool {
    if svc.type_.as_deref() != Some("LoadBalancer") || svc.deleting {
        return false;
    }
    match svc.load_balancer_class.as_deref() {
        Some(class) => class == names::LOAD_BALANCER_CLASS,
        None => default_class,
    }
}

/// The longest Kubernetes object name (a DNS subdomain, RFC 1123): a longer pool name or sharing key is refused
/// rather than carried into every message about the Service.
const MAX_NAME: usize = 253;
/// The longest namespace name (a DNS label, RFC 1123).
const MAX_NAMESPACE: usize = 63;

/// A Service's annotations or spec could not be read; the message says which field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(String);

fn annotation<'a>(svc: &'a ServiceView, keys: &[&str]) -> Option<(&'static str, &'a str)> {
    keys.iter().find_map(|k| {
        svc.annotation(k)
            .map(|v| (names_static(k), v.trim()))
            .filter(|(_, v)| !v.is_empty())
    })
}

// The keys passed to `annotation` are the constants from `herald_api::names`; map back to them so error messages
// can borrow a `'static` name.
fn names_static(key: &str) -> &'static str {
    [
        names::ANNOTATION_EIP,
        names::ANNOTATION_IPS,
        names::ANNOTATION_SHARING_KEY,
        names::METALLB_ANNOTATION_POOL,
        names::METALLB_ANNOTATION_IPS,
        names::METALLB_ANNOTATION_SHARING,
        names::METALLB_LEGACY_ANNOTATION_POOL,
        names::METALLB_LEGACY_ANNOTATION_IPS,
        names::METALLB_LEGACY_ANNOTATION_SHARING,
        names::OPENELB_ANNOTATION_EIP,
        names::OPENELB_ANNOTATION_IP,
    ]
    .into_iter()
    .find(|k| *k == key)
    .unwrap_or("annotation")
}

/// Builds the allocator's request for a Service. Herald's annotations win over the MetalLB and OpenELB ones that
/// are honoured for users migrating.
pub fn service_request(svc: &ServiceView, namespace_labels: &Arc<Labels>) -> Result<ServiceRequest, RequestError> {
    let mut req = ServiceRequest::new(svc.namespace.clone(), svc.name.clone());
    req.namespace_labels = Arc::clone(namespace_labels);
    req.service_labels = Arc::clone(&svc.labels);
    req.pool = annotation(
        svc,
        &[
            names::ANNOTATION_EIP,
            names::METALLB_ANNOTATION_POOL,
            names::METALLB_LEGACY_ANNOTATION_POOL,
            names::OPENELB_ANNOTATION_EIP,
        ],
    )
    .map(|(key, v)| bounded_name(key, v))
    .transpose()?;
    let ips_annotation = annotation(
        svc,
        &[
            names::ANNOTATION_IPS,
            names::METALLB_ANNOTATION_IPS,
            names::METALLB_LEGACY_ANNOTATION_IPS,
            names::OPENELB_ANNOTATION_IP,
        ],
    );
    // OpenELB's IP annotation replaces spec.loadBalancerIP (a stale one stays on Services it served).
    let openelb_ip = ips_annotation.is_some_and(|(key, _)| key == names::OPENELB_ANNOTATION_IP);
    if let Some((key, value)) = ips_annotation {
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let ip: IpAddr = part.parse().map_err(|_| {
                RequestError(format!(
                    "annotation {key}: '{}' is not an IP address (expected ip[,ip])",
                    text::quote(part)
                ))
            })?;
            req.requested_ips.push(ip);
        }
    }
    if let Some(ip) = svc
        .load_balancer_ip
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !openelb_ip)
    {
        let ip: IpAddr = ip.parse().map_err(|_| {
            RequestError(format!(
                "spec.loadBalancerIP: '{}' is not an IP address",
                text::quote(ip)
            ))
        })?;
        if !req.requested_ips.contains(&ip) {
            req.requested_ips.push(ip);
        }
    }
    req.sharing_key = annotation(
        svc,
        &[
            names::ANNOTATION_SHARING_KEY,
            names::METALLB_ANNOTATION_SHARING,
            names::METALLB_LEGACY_ANNOTATION_SHARING,
        ],
    )
    .map(|(key, v)| bounded_name(key, v))
    .transpose()?;
    req.ip_family_policy = match svc.ip_family_policy.as_deref() {
        None | Some("SingleStack") => IpFamilyPolicy::SingleStack,
        Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
        Some(other) => {
            return Err(RequestError(format!(
                "spec.ipFamilyPolicy: unknown policy '{}'",
                text::quote(other)
            )));
        }
    };
    for family in &svc.ip_families {
        req.ip_families.push(match &**family {
            "IPv4" => Family::V4,
            "IPv6" => Family::V6,
            other => {
                return Err(RequestError(format!(
                    "spec.ipFamilies: unknown family '{}'",
                    text::quote(other)
                )));
            }
        });
    }
    for (port, protocol) in &svc.ports {
        let protocol = match protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                return Err(RequestError(format!(
                    "spec.ports: unknown protocol '{}'",
                    text::quote(other)
                )));
            }
        };
        let number =
            u16::try_from(*port).map_err(|_| RequestError(format!("spec.ports: port {port} is out of range")))?;
        req.ports.push(ServicePort::new(number, protocol));
    }
    req.etp_local = svc.etp_local();
    req.pod_selector = Arc::clone(&svc.selector);
    req.created = creation_key(svc);
    Ok(req)
}

/// The Service's age, for the allocator's first-come order.
pub fn creation_key(svc: &ServiceView) -> CreationKey {
    CreationKey {
        timestamp: svc.created,
        uid: svc.uid.clone().unwrap_or_default(),
    }
}

/// An annotation value that names something (an Eip, a sharing key): at most [`MAX_NAME`] characters.
fn bounded_name(key: &str, value: &str) -> Result<String, RequestError> {
    if value.chars().count() > MAX_NAME {
        return Err(RequestError(format!(
            "annotation {key}: '{}' is longer than {MAX_NAME} characters",
            text::quote(value)
        )));
    }
    Ok(value.to_string())
}

/// The IPs a Service holds according to its status (in order, deduplicated, unparsable entries skipped).
pub fn status_ips(svc: &ServiceView) -> Vec<IpAddr> {
    svc.ingress_ips.clone()
}

/// The pool recorded in `herald.dev/allocated-from`.
pub fn allocated_from(svc: &ServiceView) -> Option<&str> {
    svc.annotation(names::ANNOTATION_ALLOCATED_FROM)
}

/// What the Service records about its allocation, for [`herald_ipam::Allocator::rebuild`] at start.
pub fn existing_assignment(svc: &ServiceView, request: ServiceRequest) -> Option<ExistingAssignment> {
    let ips = status_ips(svc);
    if ips.is_empty() {
        return None;
    }
    Some(ExistingAssignment {
        request,
        pool: allocated_from(svc).map(str::to_string),
        ips,
    })
}

/// An Eip as the allocator's pool spec. Selectors that cannot be read become an error naming the field.
pub fn pool_spec(eip: &Eip) -> Result<PoolSpec, String> {
    let spec = &eip.spec;
    // The CRD's limits, checked again for servers that do not enforce the schema: every message about the pool
    // quotes its entries.
    if let Some((i, long)) = spec
        .addresses
        .iter()
        .enumerate()
        .find(|(_, a)| a.chars().count() > MAX_ADDRESS_ENTRY)
    {
        return Err(format!(
            "spec.addresses[{i}]: '{}' is longer than {MAX_ADDRESS_ENTRY} characters",
            text::quote(long)
        ));
    }
    namespace_names("spec.namespaces", &spec.namespaces)?;
    Ok(PoolSpec {
        name: eip.name_any(),
        addresses: spec.addresses.clone(),
        disabled: spec.disable,
        auto_assign: spec.auto_assign,
        priority: spec.priority,
        namespaces: spec.namespaces.clone(),
        namespace_selector: spec
            .namespace_selector
            .as_ref()
            .map(label_selector)
            .transpose()
            .map_err(|e| format!("spec.namespaceSelector: {e}"))?,
        service_selector: spec
            .service_selector
            .as_ref()
            .map(label_selector)
            .transpose()
            .map_err(|e| format!("spec.serviceSelector: {e}"))?,
    })
}

/// Refuses the list of namespace names `field` when it holds one that no namespace can have (longer than a DNS
/// label): [`pool_spec`] refuses an Eip listing one, and `herald migrate` a pool it would write as such an Eip.
pub(crate) fn namespace_names(field: &str, namespaces: &[String]) -> Result<(), String> {
    match namespaces
        .iter()
        .enumerate()
        .find(|(_, n)| !is_namespace_name_possible(n))
    {
        Some((i, long)) => Err(format!(
            "{field}[{i}]: '{}' is longer than {MAX_NAMESPACE} characters, so no namespace has that name",
            text::quote(long)
        )),
        None => Ok(()),
    }
}

/// Whether a namespace may have this name, as far as Herald checks: at most [`MAX_NAMESPACE`] characters.
pub(crate) fn is_namespace_name_possible(name: &str) -> bool {
    name.chars().count() <= MAX_NAMESPACE
}

/// A Kubernetes label selector as the allocator's selector.
pub fn label_selector(sel: &metav1::LabelSelector) -> Result<LabelSelector, String> {
    let mut out = LabelSelector {
        match_labels: sel.match_labels.clone().unwrap_or_default(),
        ..Default::default()
    };
    for expr in sel.match_expressions.iter().flatten() {
        let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
        let operator = match expr.operator.as_str() {
            "In" if !values.is_empty() => LabelOperator::In(values),
            "NotIn" if !values.is_empty() => LabelOperator::NotIn(values),
            "Exists" if values.is_empty() => LabelOperator::Exists,
            "DoesNotExist" if values.is_empty() => LabelOperator::DoesNotExist,
            "In" | "NotIn" => {
                return Err(format!(
                    "operator {} on key '{}' needs values",
                    expr.operator,
                    text::quote(&expr.key)
                ));
            }
            "Exists" | "DoesNotExist" => {
                return Err(format!(
                    "operator {} on key '{}' takes no values",
                    expr.operator,
                    text::quote(&expr.key)
                ));
            }
            other => {
                return Err(format!(
                    "unknown operator '{}' on key '{}'",
                    text::quote(other),
                    text::quote(&expr.key)
                ));
            }
        };
        out.match_expressions.push(LabelRequirement {
            key: expr.key.clone(),
            operator,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(value: serde_json::Value) -> ServiceView {
        ServiceView::from_json(value)
    }

    fn lb(extra_spec: serde_json::Value, annotations: serde_json::Value) -> ServiceView {
        let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra_spec.as_object().unwrap().clone());
        svc(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "annotations": annotations,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec,
        }))
    }

    #[test]
    fn class_rules() {
        assert!(handles(&lb(json!({}), json!({})), true));
        assert!(
            !handles(&lb(json!({}), json!({})), false),
            "no class and --default-class=false"
        );
        assert!(handles(
            &lb(json!({"loadBalancerClass": "herald.dev/lb"}), json!({})),
            false
        ));
        assert!(!handles(
            &lb(json!({"loadBalancerClass": "other.io/lb"}), json!({})),
            true
        ));
        assert!(!handles(&lb(json!({"type": "ClusterIP"}), json!({})), true));
    }

    #[test]
    fn reads_annotations_and_spec() {
        let s = lb(
            json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"],
                   "externalTrafficPolicy": "Local", "selector": {"app": "web"}}),
            json!({"herald.dev/eip": "lan", "herald.dev/ips": "192.0.2.10, 2001:db8::10",
                   "herald.dev/sharing-key": "k"}),
        );
        let req = service_request(&s, &Default::default()).unwrap();
        assert_eq!(req.key.to_string(), "shop/web");
        assert_eq!(req.pool.as_deref(), Some("lan"));
        assert_eq!(
            req.requested_ips,
            ["192.0.2.10".parse::<IpAddr>().unwrap(), "2001:db8::10".parse().unwrap()]
        );
        assert_eq!(req.ip_family_policy, IpFamilyPolicy::PreferDualStack);
        assert_eq!(req.ip_families, [Family::V6, Family::V4]);
        assert_eq!(req.sharing_key.as_deref(), Some("k"));
        assert_eq!(req.ports, [ServicePort::new(80, Protocol::Tcp)]);
        assert!(req.etp_local);
        assert_eq!(req.pod_selector.get("app").map(String::as_str), Some("web"));
        assert_eq!(req.created.timestamp, 1_767_225_600);
    }

    #[test]
    fn migrating_users_annotations_are_honoured_but_herald_wins() {
        let s = lb(
            json!({}),
            json!({"metallb.io/address-pool": "old", "metallb.io/loadBalancerIPs": "192.0.2.7"}),
        );
        let req = service_request(&s, &Default::default()).unwrap();
        assert_eq!(req.pool.as_deref(), Some("old"));
        assert_eq!(req.requested_ips, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
        let s = lb(
            json!({}),
            json!({"metallb.io/address-pool": "old", "herald.dev/eip": "new"}),
        );
        assert_eq!(
            service_request(&s, &Default::default()).unwrap().pool.as_deref(),
            Some("new")
        );
    }

    #[test]
    fn older_metallb_and_openelb_annotations_are_honoured_after_the_current_ones() {
        let s = lb(
            json!({}),
            json!({
                "metallb.universe.tf/address-pool": "old",
                "metallb.universe.tf/loadBalancerIPs": "192.0.2.7",
                "metallb.universe.tf/allow-shared-ip": "dns",
            }),
        );
        let req = service_request(&s, &Default::default()).unwrap();
        assert_eq!(req.pool.as_deref(), Some("old"));
        assert_eq!(req.requested_ips, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(req.sharing_key.as_deref(), Some("dns"));
        let s = lb(
            json!({}),
            json!({"metallb.universe.tf/allow-shared-ip": "old", "metallb.io/allow-shared-ip": "new"}),
        );
        let req = service_request(&s, &Default::default()).unwrap();
        assert_eq!(req.sharing_key.as_deref(), Some("new"));
        // OpenELB's IP annotation wins over spec.loadBalancerIP there, and here.
        let s = lb(
            json!({"loadBalancerIP": "2001:db8::9"}),
            json!({"eip.openelb.kubesphere.io/v1alpha1": "2001:db8::7"}),
        );
        let req = service_request(&s, &Default::default()).unwrap();
        assert_eq!(req.requested_ips, ["2001:db8::7".parse::<IpAddr>().unwrap()]);
        let s = lb(json!({}), json!({"metallb.universe.tf/loadBalancerIPs": "fish"}));
        let err = service_request(&s, &Default::default()).unwrap_err().to_string();
        assert!(
            err.starts_with("annotation metallb.universe.tf/loadBalancerIPs: 'fish'"),
            "{err}"
        );
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        let s = lb(json!({}), json!({"herald.dev/ips": "192.0.2.300"}));
        let err = service_request(&s, &Default::default()).unwrap_err().to_string();
        assert_eq!(
            err,
            "annotation herald.dev/ips: '192.0.2.300' is not an IP address (expected ip[,ip])"
        );
        let s = lb(json!({"loadBalancerIP": "nope"}), json!({}));
        assert!(
            service_request(&s, &Default::default())
                .unwrap_err()
                .to_string()
                .contains("spec.loadBalancerIP")
        );
    }

    #[test]
    fn huge_values_are_never_echoed_whole() {
        let huge = "9".repeat(100_000);
        let label_key = "k".repeat(100_000);
        let cases = [
            lb(json!({}), json!({"herald.dev/ips": huge})),
            lb(
                json!({}),
                json!({"metallb.io/loadBalancerIPs": format!("192.0.2.1,{huge}")}),
            ),
            lb(json!({"loadBalancerIP": huge}), json!({})),
            lb(json!({}), json!({"herald.dev/eip": huge})),
            lb(json!({}), json!({"herald.dev/sharing-key": huge})),
            lb(json!({"ipFamilyPolicy": huge}), json!({})),
            lb(json!({"ipFamilies": [huge]}), json!({})),
            lb(json!({"ports": [{"port": 80, "protocol": huge}]}), json!({})),
        ];
        for svc in cases {
            let err = service_request(&svc, &Default::default()).unwrap_err().to_string();
            assert!(err.len() < 300, "{} bytes: {}", err.len(), &err[..300]);
        }
        let eips = [
            json!({"addresses": [huge]}),
            json!({"addresses": ["192.0.2.0/24"], "namespaces": [huge]}),
            json!({"addresses": ["192.0.2.0/24"], "namespaceSelector": {"matchExpressions": [{"key": label_key, "operator": "Near"}]}}),
            json!({"addresses": ["192.0.2.0/24"], "serviceSelector": {"matchExpressions": [{"key": "a", "operator": huge}]}}),
        ];
        for spec in eips {
            let eip: Eip = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap();
            let err = pool_spec(&eip).unwrap_err();
            assert!(err.len() < 300, "{} bytes: {}", err.len(), &err[..300]);
        }
    }

    #[test]
    fn selectors_convert_and_refuse_nonsense() {
        let sel: metav1::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"team": "a"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}, {"key": "x", "operator": "Exists"}]
        }))
        .unwrap();
        let s = label_selector(&sel).unwrap();
        let labels: Labels = [("team", "a"), ("env", "prod"), ("x", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(s.matches(&labels));
        let bad: metav1::LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "env", "operator": "Near"}]})).unwrap();
        assert_eq!(
            label_selector(&bad).unwrap_err(),
            "unknown operator 'Near' on key 'env'"
        );
    }

    #[test]
    fn announced_by_sets_this_nodes_ips_and_keeps_the_others_entries() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ips = [ip("192.0.2.1"), ip("2001:db8::1")];
        assert_eq!(announced_by(None, &ips, [ip("192.0.2.1")], "n1"), "192.0.2.1=n1");
        assert_eq!(
            announced_by(Some("2001:db8::1=n2,192.0.2.1=n2"), &ips, [ip("192.0.2.1")], "n1"),
            "192.0.2.1=n1,2001:db8::1=n2",
            "the other IP's entry stays"
        );
        assert_eq!(
            announced_by(Some("192.0.2.9=n2, junk,192.0.2.1=n2"), &ips, ips, "n1"),
            "192.0.2.1=n1,2001:db8::1=n1",
            "both IPs in one value; a gone IP and garbage are dropped"
        );
        assert_eq!(
            announced_by(Some("192.0.2.1=n2"), &ips[..1], [ip("2001:db8::1")], "n1"),
            "192.0.2.1=n2",
            "an IP the Service no longer has is not recorded"
        );
    }

    #[test]
    fn status_ips_skip_garbage_and_duplicates() {
        let s = svc(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.1"}, {"hostname": "x.example"}, {"ip": "bad"}, {"ip": "192.0.2.1"}]}}}));
        assert_eq!(status_ips(&s), ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    }
}
