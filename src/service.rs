//! A Service as the agent's cache keeps it: the fields Herald reads, in Herald's own small type.
//!
//! A cluster's Services are the largest cache an agent holds (one entry per Service, on every node). As a
//! `k8s_openapi` `Service` an entry costs about 2 KiB even with everything Herald does not read removed: 840 bytes of
//! mostly empty optional fields, a B-tree node of half a KiB for the annotations, a string per enum-like value. This
//! type keeps what the allocator, the announcer and the `announced-by` writer read, and nothing else; the watch
//! decodes the full object and [`ServiceView::from`] projects it before it enters the store.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use herald_api::names;
use herald_ipam::Labels;
use k8s_openapi::api::core::v1::{ObjectReference, Service};

/// One Service, as cached. See the module docs for what is kept.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid` (the allocator's tie-break between Services created in the same second; Events).
    pub uid: Option<Arc<str>>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `metadata.creationTimestamp` in seconds since the Unix epoch (0: not set).
    pub created: i64,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `metadata.labels` (an Eip's `serviceSelector`); empty when there are none.
    pub labels: Arc<Labels>,
    /// The annotations Herald reads ([`names::SERVICE_ANNOTATIONS`]), sorted by key (each key the shared text of
    /// that list).
    pub annotations: Vec<(Known, String)>,
    /// `spec.type`.
    pub type_: Option<Known>,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// `spec.loadBalancerIP`.
    pub load_balancer_ip: Option<String>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: Option<Known>,
    /// `spec.ipFamilies`.
    pub ip_families: Vec<Known>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: Option<Known>,
    /// `spec.ports` as (port, protocol).
    pub ports: Vec<(i32, Option<Known>)>,
    /// `spec.selector`, kept only for `externalTrafficPolicy: Local` (the one rule that compares the pods of IP
    /// sharers); empty otherwise.
    pub selector: Arc<Labels>,
    /// The IPs of `status.loadBalancer.ingress`, in order, each once (entries that are not IPs are left out).
    pub ingress_ips: Vec<IpAddr>,
}

/// The text of a field with a few well-known values (`spec.type`, `spec.ipFamilyPolicy`, a port's protocol, ...): a
/// known value is shared static text, any other is kept as given. Every cached Service has five or so of these; as
/// strings of their own they were a tenth of the Service cache.
pub type Known = Cow<'static, str>;

/// `value` as [`Known`] text: one of `known`, shared, or the value itself.
fn known(value: String, known: &[&'static str]) -> Known {
    match known.iter().find(|k| **k == value) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(value),
    }
}

const TYPES: &[&str] = &["LoadBalancer", "ClusterIP", "NodePort", "ExternalName"];
const FAMILY_POLICIES: &[&str] = &["SingleStack", "PreferDualStack", "RequireDualStack"];
const FAMILIES: &[&str] = &["IPv4", "IPv6"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// The label map of every Service without labels (or without a kept selector): one, shared.
static NO_LABELS: LazyLock<Arc<Labels>> = LazyLock::new(Arc::default);

impl ServiceView {
    /// The annotation `key`, if set. Only the keys of [`names::SERVICE_ANNOTATIONS`] are kept: a reader of another
    /// one must add it there (debug builds check).
    pub fn annotation(&self, key: &str) -> Option<&str> {
        debug_assert!(
            names::SERVICE_ANNOTATIONS.contains(&key),
            "annotation {key} is not kept: add it to names::SERVICE_ANNOTATIONS"
        );
        self.annotations
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| self.annotations[i].1.as_str())
    }

    /// The view of a Service given as JSON (tests).
    #[cfg(test)]
    pub(crate) fn from_json(value: serde_json::Value) -> Self {
        ServiceView::from(serde_json::from_value::<Service>(value).expect("a Service"))
    }

    /// Sets (or with `None` removes) the annotation `key`, as a write to the Service would.
    pub fn set_annotation(&mut self, key: &str, value: Option<&str>) {
        let at = self.annotations.binary_search_by(|(k, _)| (**k).cmp(key));
        match (at, value) {
            (Ok(i), Some(v)) => self.annotations[i].1 = v.to_string(),
            (Ok(i), None) => {
                self.annotations.remove(i);
            }
            (Err(i), Some(v)) => self
                .annotations
                .insert(i, (known(key.to_string(), &names::SERVICE_ANNOTATIONS), v.to_string())),
            (Err(_), None) => {}
        }
    }

    /// A reference to the Service (for Events).
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: self.uid.as_deref().map(Into::into),
            resource_version: self.resource_version.clone(),
            ..Default::default()
        }
    }

    /// `externalTrafficPolicy: Local`.
    pub fn etp_local(&self) -> bool {
        self.external_traffic_policy.as_deref() == Some("Local")
    }
}

impl From<Service> for ServiceView {
    fn from(svc: Service) -> Self {
        let meta = svc.metadata;
        let spec = svc.spec.unwrap_or_default();
        let mut annotations: Vec<(Known, String)> = meta
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| names::SERVICE_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (known(k, &names::SERVICE_ANNOTATIONS), v))
            .collect();
        annotations.shrink_to_fit();
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let mut ingress_ips: Vec<IpAddr> = Vec::new();
        let ingress = svc.status.and_then(|s| s.load_balancer).and_then(|lb| lb.ingress);
        for ip in ingress.into_iter().flatten().filter_map(|i| i.ip?.parse().ok()) {
            if !ingress_ips.contains(&ip) {
                ingress_ips.push(ip);
            }
        }
        let shared = |labels: Option<Labels>| {
            labels
                .filter(|l| !l.is_empty())
                .map(Arc::new)
                .unwrap_or_else(|| NO_LABELS.clone())
        };
        ServiceView {
            name: meta.name.unwrap_or_default(),
            namespace: meta.namespace.unwrap_or_default(),
            uid: meta.uid.map(Arc::from),
            resource_version: meta.resource_version,
            created: meta.creation_timestamp.map_or(0, |t| t.0.as_second()),
            deleting: meta.deletion_timestamp.is_some(),
            labels: shared(meta.labels),
            annotations,
            type_: spec.type_.map(|t| known(t, TYPES)),
            load_balancer_class: spec.load_balancer_class,
            load_balancer_ip: spec.load_balancer_ip,
            ip_family_policy: spec.ip_family_policy.map(|p| known(p, FAMILY_POLICIES)),
            ip_families: spec
                .ip_families
                .unwrap_or_default()
                .into_iter()
                .map(|f| known(f, FAMILIES))
                .collect(),
            external_traffic_policy: spec.external_traffic_policy.map(|p| known(p, TRAFFIC_POLICIES)),
            ports: spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.port, p.protocol.map(|p| known(p, PROTOCOLS))))
                .collect(),
            selector: if local {
                shared(spec.selector)
            } else {
                NO_LABELS.clone()
            },
            ingress_ips,
        }
    }
}

crate::watch::cached_as!(
    ServiceView,
    kind = "Service",
    group = "",
    version = "v1",
    plural = "services"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: serde_json::Value) -> ServiceView {
        ServiceView::from(serde_json::from_value::<Service>(json).unwrap())
    }

    #[test]
    fn unknown_values_are_kept_as_given_and_services_without_labels_share_one_map() {
        let a = view(serde_json::json!({"metadata": {"name": "a", "namespace": "n"},
            "spec": {"type": "Weird", "ipFamilies": ["IPv7"], "ports": [{"port": 1, "protocol": "QUIC"}]}}));
        let b =
            view(serde_json::json!({"metadata": {"name": "b", "namespace": "n"}, "spec": {"type": "LoadBalancer"}}));
        assert_eq!(a.type_.as_deref(), Some("Weird"));
        assert_eq!(a.ip_families, [Known::from("IPv7")]);
        assert_eq!(a.ports[0].1.as_deref(), Some("QUIC"));
        assert!(matches!(b.type_, Some(Cow::Borrowed("LoadBalancer"))));
        assert!(Arc::ptr_eq(&a.labels, &b.labels) && Arc::ptr_eq(&a.selector, &b.labels));
        assert!(a.labels.is_empty());
    }

    #[test]
    fn keeps_what_herald_reads_and_nothing_else() {
        let v = view(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"team": "a"},
                "annotations": {"herald.dev/eip": "lan", "prometheus.io/scrape": "true",
                    "herald.dev/announced-by": "192.0.2.1=n1"}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "protocol": "UDP", "targetPort": 8080}],
                "clusterIP": "10.96.0.1"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "x"}, {"ip": "192.0.2.1"},
                {"ip": "2001:db8::1"}]}}}));
        assert_eq!(
            (v.name.as_str(), v.namespace.as_str(), v.created),
            ("web", "shop", 1_767_225_600)
        );
        assert_eq!(v.annotation("herald.dev/eip"), Some("lan"));
        let kept: Vec<&str> = v.annotations.iter().map(|(k, _)| &**k).collect();
        assert_eq!(
            kept,
            ["herald.dev/announced-by", "herald.dev/eip"],
            "only the annotations Herald reads"
        );
        assert_eq!(v.ports, [(80, Some(Known::from("UDP")))]);
        assert!(
            matches!(&v.ports[0].1, Some(Cow::Borrowed(_))),
            "a known value is shared static text"
        );
        assert!(v.annotations.iter().all(|(k, _)| matches!(k, Cow::Borrowed(_))));
        assert_eq!(v.selector.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            v.ingress_ips,
            ["192.0.2.1".parse::<IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]
        );
        assert!(v.etp_local() && !v.deleting);
        let cluster = view(serde_json::json!({
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "api"}}}));
        assert!(
            cluster.selector.is_empty(),
            "externalTrafficPolicy: Cluster needs no pod selector"
        );
        assert!(cluster.labels.is_empty() && cluster.ingress_ips.is_empty());
    }
}
