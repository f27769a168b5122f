//! `Eip`: a pool of addresses Services of `type: LoadBalancer` get their IPs from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How many `status.announcers` entries an Eip shows at most; the rest are counted in `announcersOmitted`.
pub const MAX_STATUS_ANNOUNCERS: usize = 64;

/// A pool of IPv4 and/or IPv6 addresses that Herald hands out to LoadBalancer Services and announces.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "Eip",
    doc = "A pool of addresses Herald hands out to LoadBalancer Services (`kubectl get eip` shows its usage).",
    plural = "eips",
    category = "herald",
    status = "EipStatus",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"Used","type":"integer","jsonPath":".status.used"}"#,
    printcolumn = r#"{"name":"Free","type":"string","jsonPath":".status.free"}"#,
    printcolumn = r#"{"name":"Total","type":"string","jsonPath":".status.total"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EipSpec {
    /// Addresses of the pool: CIDRs (`192.0.2.0/24`, `2001:db8::/120`), ranges (`192.0.2.10-192.0.2.20`) or single
    /// IPs; IPv4 and IPv6 may mix. CIDRs exclude their network and broadcast addresses, except /31, /32, /127, /128.
    #[schemars(length(min = 1, max = 1024), inner(length(min = 1, max = 128), regex(pattern = ADDRESS_PATTERN)))]
    pub addresses: Vec<String>,
    /// How the addresses are announced: `layer2` (ARP/NDP from one node per IP) or `bgp` (every eligible node).
    #[serde(default)]
    pub protocol: Protocol,
    /// Layer 2: the interface to answer on. Default: the interface whose configured subnet contains the IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub interface: Option<String>,
    /// No new allocations from this pool; Services that already hold an address keep it.
    #[serde(default)]
    pub disable: bool,
    /// Whether Services without an explicit pool or IP may get an address from this pool.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Among pools that fit a Service, the lowest number is tried first (as in MetalLB); ties go by name.
    #[serde(default)]
    pub priority: i32,
    /// Namespaces whose Services may use this pool (with `namespaceSelector`: either matches). Empty and no selector:
    /// every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces (by label) whose Services may use this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Only Services with matching labels may use this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Nodes that may announce this pool's addresses. Default: every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// BGP attributes for this pool's routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<EipBgp>,
}

/// Accepts an IPv4/IPv6 address, CIDR or `A-B` range; the allocator gives the precise error for anything else.
pub const ADDRESS_PATTERN: &str = r"^[0-9A-Fa-f:.]+(/[0-9]{1,3}|-[0-9A-Fa-f:.]+)?$";

/// An empty pool with the defaults a user gets by leaving fields out.
impl Default for EipSpec {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            protocol: Protocol::default(),
            interface: None,
            disable: false,
            auto_assign: default_true(),
            priority: 0,
            namespaces: Vec::new(),
            namespace_selector: None,
            service_selector: None,
            node_selector: None,
            bgp: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// How an Eip's addresses are announced.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// One node per IP answers ARP (IPv4) and NDP (IPv6), chosen by Lease election.
    #[default]
    Layer2,
    /// Every eligible node announces the IP to its BGP peers with itself as next hop (ECMP at the router).
    Bgp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Layer2 => "layer2",
            Protocol::Bgp => "bgp",
        })
    }
}

/// BGP path attributes added to a pool's routes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EipBgp {
    /// Standard communities, `ASN:VALUE` (e.g. `64512:100`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[0-9]{1,5}:[0-9]{1,5}$")))]
    pub communities: Vec<String>,
    /// Large communities (RFC 8092), `GLOBAL:LOCAL1:LOCAL2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$")))]
    pub large_communities: Vec<String>,
    /// LOCAL_PREF for iBGP sessions (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
}

/// What the allocator and the announcers report about a pool. Bounded in size however many IPs are used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EipStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Addresses in use (both families).
    #[serde(default)]
    pub used: u64,
    /// Free addresses (both families), as a decimal string: an IPv6 pool can hold more than 2^63.
    #[serde(default)]
    pub free: String,
    /// All addresses of the pool (both families), as a decimal string.
    #[serde(default)]
    pub total: String,
    /// IPv4 usage, when the pool has IPv4 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<FamilyUsage>,
    /// IPv6 usage, when the pool has IPv6 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<FamilyUsage>,
    /// Which node announces which IP (Layer 2), at most 64 entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announcers: Vec<IpAnnouncer>,
    /// Announcers not listed because of the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub announcers_omitted: u64,
    /// `Ready`, `Overlapping`, `Exhausted`, `AddressConflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Address usage of one family.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FamilyUsage {
    /// Addresses in the pool, decimal.
    pub total: String,
    /// Addresses allocated.
    pub used: u64,
    /// Addresses free, decimal.
    pub free: String,
}

/// The node answering for one IP.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpAnnouncer {
    /// The Service IP.
    pub ip: String,
    /// The node announcing it.
    pub node: String,
}
