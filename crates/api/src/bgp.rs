//! `BgpConf` (cluster-wide BGP settings) and `BgpPeer` (a router to peer with).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Cluster-wide BGP settings. Exactly one object, named `default`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "BgpConf",
    doc = "Cluster-wide BGP settings for Herald (one object, named `default`).",
    plural = "bgpconfs",
    category = "herald",
    status = "BgpConfStatus",
    validation = Rule::new("self.metadata.name == 'default'").message("the BgpConf must be named 'default'"),
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.asn"}"#,
    printcolumn = r#"{"name":"Router-ID","type":"string","jsonPath":".spec.routerId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BgpConfSpec {
    /// The nodes' AS number (RFC 6793 4-octet ASNs allowed).
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub asn: u32,
    /// BGP identifier. Default: each node's first IPv4 InternalIP. Set per rack in `overrides` if needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$"))]
    pub router_id: Option<String>,
    /// Graceful restart (RFC 4724) as the restarting speaker: routers keep Herald's routes across an agent restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestart>,
    /// Per-rack settings: the first override whose nodeSelector matches a node applies to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<BgpConfOverride>,
}

/// Graceful-restart settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GracefulRestart {
    /// Advertise the capability and set the restart bit after a restart.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds a router keeps our routes while we restart (RFC 4724 §3: 12 bits).
    #[serde(default = "default_restart_time")]
    #[schemars(range(min = 1, max = 4095))]
    pub restart_time: u16,
}

fn default_true() -> bool {
    true
}

fn default_restart_time() -> u16 {
    120
}

/// Settings for the nodes of one rack.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpConfOverride {
    /// Nodes this override applies to.
    pub node_selector: LabelSelector,
    /// AS number for these nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub asn: Option<u32>,
    /// BGP identifier for these nodes (only sensible with a selector matching one node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
}

/// Status of the BgpConf.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpConfStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A BGP router that the selected nodes peer with.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "BgpPeer",
    doc = "A BGP router that the selected nodes announce Service IPs to.",
    plural = "bgppeers",
    category = "herald",
    status = "BgpPeerStatus",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#,
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.asn"}"#,
    printcolumn = r#"{"name":"Established","type":"integer","jsonPath":".status.established"}"#,
    printcolumn = r#"{"name":"Sessions","type":"integer","jsonPath":".status.sessionCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerSpec {
    /// The router's address.
    #[schemars(length(min = 2, max = 45), regex(pattern = r"^[0-9A-Fa-f:.]+$"))]
    pub address: String,
    /// The router's AS number.
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub asn: u32,
    /// Our AS number towards this router; default: `BgpConf` `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub local_asn: Option<u32>,
    /// TCP port of the router.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Local address to connect from (and default next hop); default: the route's source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// Hold time in seconds: 0 (no keepalives) or at least 3 (RFC 4271 §4.2). Default 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 0 || self >= 3").message("holdTime must be 0 or at least 3 seconds (RFC 4271 §4.2)"))]
    #[schemars(range(max = 65535))]
    pub hold_time: Option<u32>,
    /// Keepalive interval in seconds; default hold time / 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 21845))]
    pub keepalive_time: Option<u32>,
    /// Longest pause between connection attempts in seconds (attempts back off from 1 s); default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub connect_retry_time: Option<u32>,
    /// TCP MD5 password (RFC 2385) from a Secret in the agent's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// TTL for eBGP sessions to routers more than one hop away (1 = directly connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub ebgp_multihop: Option<u8>,
    /// Address families to announce; default both.
    #[serde(default = "default_families")]
    pub families: Vec<AddressFamily>,
    /// Graceful restart towards this peer; default: `BgpConf` setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<bool>,
    /// Also accept connections from the router (listening on the port); default connect out only.
    #[serde(default)]
    pub passive: bool,
    /// Nodes that peer with this router (rack/leaf peering). Default: every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

fn default_port() -> u16 {
    179
}

fn default_families() -> Vec<AddressFamily> {
    vec![AddressFamily::Ipv4, AddressFamily::Ipv6]
}

/// A reference to one key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name (in the agent's namespace).
    pub name: String,
    /// Key in the Secret's data; default `password`.
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_string()
}

/// An address family a session announces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    /// IPv4 unicast.
    Ipv4,
    /// IPv6 unicast (RFC 4760 MP_REACH_NLRI).
    Ipv6,
}

/// Sessions of a BgpPeer, one per node. Written on state changes only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerStatus {
    /// Sessions in state Established.
    #[serde(default)]
    pub established: u32,
    /// Nodes that should have a session.
    #[serde(default)]
    pub session_count: u32,
    /// One entry per node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<PeerSession>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// One node's session to the peer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerSession {
    /// The node.
    pub node: String,
    /// RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Why the session is not established (NOTIFICATION, connect error, suspected MD5 mismatch, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
