//! What the controller tells the allocator about a Service, and what it gets back.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::range::Family;
use crate::selector::Labels;

/// A Service's identity: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
}

impl ServiceKey {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// One `(port, protocol)` pair a Service exposes; two Services may share an IP only when these are disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// The port number (`spec.ports[].port`).
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl ServicePort {
    /// `port/protocol`.
    pub fn new(port: u16, protocol: Protocol) -> Self {
        Self { port, protocol }
    }
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum IpFamilyPolicy {
    /// One address, of the first family in `ipFamilies`.
    #[default]
    SingleStack,
    /// Both families when the chosen pool can give both, else the first family only.
    PreferDualStack,
    /// Both families from one pool, or nothing.
    RequireDualStack,
}

impl fmt::Display for IpFamilyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamilyPolicy::SingleStack => "SingleStack",
            IpFamilyPolicy::PreferDualStack => "PreferDualStack",
            IpFamilyPolicy::RequireDualStack => "RequireDualStack",
        })
    }
}

/// Orders Services by age for conflict resolution at rebuild: the older Service keeps a contested address.
/// Compared by timestamp, then uid; the allocator breaks a remaining tie by `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CreationKey {
    /// `metadata.creationTimestamp` in seconds since the Unix epoch.
    pub timestamp: i64,
    /// `metadata.uid` (shared with the controller's cached Service).
    pub uid: Arc<str>,
}

/// Everything the allocator needs to know about one Service. The controller builds it from the Service, its
/// namespace and Herald's annotations; the allocator keeps a copy with each allocation so that it can check
/// sharing and pool rules later without asking again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    /// Which Service.
    pub key: ServiceKey,
    /// Labels of the Service's namespace (for `namespaceSelector`). Shared: every request of a namespace, and every
    /// copy of a request (the allocator keeps one with each allocation), points at one map.
    pub namespace_labels: Arc<Labels>,
    /// Labels of the Service (for `serviceSelector`), shared by the request's copies.
    pub service_labels: Arc<Labels>,
    /// Pool asked for by name (`herald.dev/eip`).
    pub pool: Option<String>,
    /// Addresses asked for (`herald.dev/ips`, `spec.loadBalancerIP`); at most one per family.
    pub requested_ips: Vec<IpAddr>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: IpFamilyPolicy,
    /// `spec.ipFamilies`, primary first. Empty: the families of `requested_ips`, else IPv4.
    pub ip_families: Vec<Family>,
    /// `herald.dev/sharing-key`.
    pub sharing_key: Option<String>,
    /// `spec.ports` as (port, protocol).
    pub ports: Vec<ServicePort>,
    /// `spec.externalTrafficPolicy: Local`.
    pub etp_local: bool,
    /// `spec.selector` (the pods behind the Service); compared between sharers when `etp_local`.
    pub pod_selector: Arc<Labels>,
    /// Age of the Service, for deterministic conflict resolution.
    pub created: CreationKey,
}

impl ServiceRequest {
    /// A SingleStack IPv4 request with no ports, labels, pool or sharing key; set the fields you need.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            key: ServiceKey::new(namespace, name),
            namespace_labels: Arc::default(),
            service_labels: Arc::default(),
            pool: None,
            requested_ips: Vec::new(),
            ip_family_policy: IpFamilyPolicy::SingleStack,
            ip_families: Vec::new(),
            sharing_key: None,
            ports: Vec::new(),
            etp_local: false,
            pod_selector: Arc::default(),
            created: CreationKey::default(),
        }
    }
}

/// The addresses a Service holds and the pool they come from (`herald.dev/allocated-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Name of the pool (Eip).
    pub pool: String,
    /// One address per family, in the Service's `ipFamilies` order.
    pub ips: Vec<IpAddr>,
}
