//! `BgpConf` (cluster-wide BGP settings) and `BgpPeer` (a router to peer with).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The API server refuses what the announcer refuses (src/announcer/bgp.rs), and nothing more. AS_TRANS (23456,
// RFC 6793) is left to the agent: a CEL rule on a field fails every write of an object stored with another type there
// (while the CRD had no schema), status writes included, so with one on `asn` the agent could not report
// `asn: "sixty-four thousand"` as unreadable (tests/agent.rs).

/// A BGP identifier is an IPv4 address (RFC 6286 §2.1: a 32-bit value, written as one).
const IPV4: &str = "isIP(self) && ip(self).family() == 4";
const ROUTER_ID_MESSAGE: &str = "not an IPv4 address: the BGP identifier is written as one, e.g. 192.0.2.11";
/// The longest IPv4 address (`255.255.255.255`); bounds the CEL cost of the rule.
const IPV4_MAX_LEN: u32 = 15;
/// The longest IP address (an IPv6 address ending in an IPv4 one: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const IP_MAX_LEN: u32 = 45;
/// One override per node of the largest cluster Kubernetes supports; bounds the CEL cost of the rules on each.
const MAX_OVERRIDES: u32 = 5000;

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
    #[schemars(length(max = IPV4_MAX_LEN))]
    #[x_kube(validation = Rule::new(IPV4).message(ROUTER_ID_MESSAGE))]
    pub router_id: Option<String>,
    /// Graceful restart (RFC 4724) as the restarting speaker: routers keep Herald's routes across an agent restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestart>,
    /// TCP port on which the nodes accept the connections of passive BgpPeers (`passive: true`). Default 179,
    /// which needs the capability NET_BIND_SERVICE (the Helm chart's `bgp.passive=true`); a port of 1024 or more
    /// needs none, and the routers then connect to that port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub listen_port: Option<u16>,
    /// Per-rack settings: the first override whose nodeSelector matches a node applies to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_OVERRIDES))]
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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
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
    #[schemars(length(max = IPV4_MAX_LEN))]
    #[x_kube(validation = Rule::new(IPV4).message(ROUTER_ID_MESSAGE))]
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
    printcolumn = r#"{"name":"BFD-Up","type":"integer","jsonPath":".status.bfdUp"}"#,
    printcolumn = r#"{"name":"Listening","type":"string","jsonPath":".status.conditions[?(@.type==\"Listening\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
// herald_bgp's PeerConfig::validate: the session's local address is of the router's family. A rule on the spec, as
// it reads two fields; the error names sourceAddress without quoting a value, so the message quotes both.
#[x_kube(validation = Rule::new(
    "!has(self.sourceAddress) || !isIP(self.address) || !isIP(self.sourceAddress) \
     || ip(self.sourceAddress).family() == ip(self.address).family()"
)
.message(Message::Expression(concat!(
    r#""sourceAddress " + self.sourceAddress + " and address " + self.address"#,
    r#" + " are of different IP families: give a source address of the router's family, or leave it out""#
).into()))
.field_path(".sourceAddress"))]
pub struct BgpPeerSpec {
    /// The router's address.
    #[schemars(length(min = 2, max = IP_MAX_LEN))]
    #[x_kube(
        validation = Rule::new("isIP(self)")
            .message("not an IP address: give the router's address, e.g. 192.0.2.1 or 2001:db8::1"),
        validation = Rule::new(
            "!isIP(self) || !(ip(self).isUnspecified() || cidr('224.0.0.0/4').containsIP(self) \
             || cidr('ff00::/8').containsIP(self))"
        )
        .message("the unspecified address or a multicast address, not a router's: give the router's unicast address")
    )]
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
    #[schemars(length(max = IP_MAX_LEN))]
    #[x_kube(validation = Rule::new("isIP(self)").message(
        "not an IP address: give an address of the node to connect from, e.g. 192.0.2.11, or leave it out"
    ))]
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
    #[schemars(length(min = 1))]
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
    /// BFD to this router (RFC 5880, single hop as RFC 5881): when it goes down, so does the BGP session, and the
    /// router withdraws the node's routes within detectMultiplier × interval instead of the hold time. Off when
    /// absent, as the router must be configured for it too; `bfd: {}` turns it on with 300 ms × 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSpec>,
}

/// BFD timers (the names of MetalLB's BFDProfile). Changing them never resets the BGP session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdSpec {
    /// The fastest this node accepts BFD packets from the router, in milliseconds; default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<u32>,
    /// How often this node wants to send BFD packets once the session is up, in milliseconds; default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<u32>,
    /// Packets missed before the session counts as down; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<u8>,
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
    /// Sessions whose BFD session is Up (absent when no node runs BFD to this peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_up: Option<u32>,
    /// One entry per node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<PeerSession>,
    /// `Ready` (the spec can be used); for a passive peer also `Listening` (every node with a session accepts the
    /// router's connections; False names the nodes that cannot, and why).
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
    /// Why the session is not established (NOTIFICATION, connect error, suspected MD5 mismatch, ...), or why a
    /// passive peer's connections cannot be accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// For a passive peer: whether this node accepts the router's connections (it listens). Absent for a peer
    /// that is not passive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listening: Option<bool>,
    /// The BFD session's state (AdminDown, Down, Init, Up) when BFD is on for this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
}
