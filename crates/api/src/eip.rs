//! `Eip`: a pool of addresses Services of `type: LoadBalancer` get their IPs from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::cel_rule;

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
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".status.addresses"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"IPv4 used","type":"string","jsonPath":".status.ipv4.summary"}"#,
    printcolumn = r#"{"name":"IPv6 used","type":"string","jsonPath":".status.ipv6.summary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Used","type":"integer","jsonPath":".status.used","priority":1}"#,
    printcolumn = r#"{"name":"Free","type":"string","jsonPath":".status.free","priority":1}"#,
    printcolumn = r#"{"name":"Total","type":"string","jsonPath":".status.total","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EipSpec {
    /// Addresses of the pool: CIDRs (`192.0.2.0/24`, `2001:db8::/120`), ranges (`192.0.2.10-192.0.2.20`) or single
    /// IPs; IPv4 and IPv6 may mix. CIDRs exclude their network and broadcast addresses, except /31, /32, /127, /128.
    #[schemars(schema_with = "addresses_schema")]
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
    #[schemars(inner(length(max = 63)))]
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

/// The most entries `spec.addresses` may list.
pub const MAX_ADDRESSES: usize = 1024;
/// The longest entry of `spec.addresses` (the longest IPv6 range is 79 characters).
pub const MAX_ADDRESS_ENTRY: usize = 128;

/// `spec.addresses`, with CEL rules on each entry: the API server refuses what `herald_ipam::parse_entry` refuses,
/// naming the entry (`spec.addresses[2]: Invalid value: "fish": ...`). Never stricter than `parse_entry`, except
/// for spellings CEL's `ip()`/`cidr()` refuse and no pool needs: IPv4-mapped IPv6 (`::ffff:192.0.2.1`, never
/// allocated anyway), leading zeros (`010.0.0.0/8`, `/08`) and spaces around the whole entry. One check stays with
/// the allocator: CEL cannot order IPv6 addresses, so a reversed IPv6 range is reported in the Eip's status.
fn addresses_schema(_: &mut SchemaGenerator) -> Schema {
    // An entry holding `-` and no `/` is a range `FIRST-LAST`; parse_entry splits at the first `-` and trims both ends.
    const FIRST: &str = "self.split('-', 2)[0].trim()";
    const LAST: &str = "self.split('-', 2)[1].trim()";
    let range = format!("!self.contains('/') && self.contains('-') && isIP({FIRST}) && isIP({LAST})");
    // An IPv4 address as a number, from its four decimal octets (isIP refuses leading zeros and values above 255).
    let ipv4_value = |addr: &str| {
        let octet = |i: usize| format!("int({addr}.split('.')[{i}])");
        format!(
            "{} * 16777216 + {} * 65536 + {} * 256 + {}",
            octet(0),
            octet(1),
            octet(2),
            octet(3)
        )
    };
    let rules = [
        cel_rule(
            format!(
                "self.contains('/') ? isCIDR(self) : self.contains('-') ? isIP({FIRST}) && isIP({LAST}) : isIP(self)"
            ),
            "not a CIDR, range or IP: write e.g. 192.0.2.0/24, 192.0.2.10-192.0.2.20 or 2001:db8::1",
        ),
        cel_rule(
            "!self.contains('/') || !isCIDR(self) || cidr(self) == cidr(self).masked()",
            "host bits are set past the prefix length: write the network address (192.0.2.0/24, not 192.0.2.5/24)",
        ),
        cel_rule(
            format!("!({range}) || ip({FIRST}).family() == ip({LAST}).family()"),
            "the range mixes IPv4 and IPv6: give each family its own entry",
        ),
        cel_rule(
            format!(
                "!({range}) || ip({FIRST}).family() != 4 || ip({LAST}).family() != 4 || {} <= {}",
                ipv4_value(FIRST),
                ipv4_value(LAST)
            ),
            "the range is reversed (first address above last): write it low-high, e.g. 192.0.2.10-192.0.2.20",
        ),
    ];
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_ADDRESSES,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ADDRESS_ENTRY,
            "x-kubernetes-validations": rules,
        },
    })
}

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
    #[schemars(schema_with = "communities_schema")]
    pub communities: Vec<String>,
    /// Large communities (RFC 8092), `GLOBAL:LOCAL1:LOCAL2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "large_communities_schema")]
    pub large_communities: Vec<String>,
    /// LOCAL_PREF for iBGP sessions (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
}

/// More communities than one UPDATE carries (4096 bytes, RFC 4271 §4; Herald does not negotiate RFC 8654): a bound
/// for the CEL cost of the rules on each entry that refuses no list that could be announced.
const MAX_COMMUNITIES: usize = 1024;

/// `spec.bgp.communities`: each entry as `herald_bgp::rib::parse_community` reads it (both parts 0-65535). The
/// announcer skips an entry it cannot read; the API server refuses it instead.
fn communities_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_COMMUNITIES,
        "items": {
            "type": "string",
            "maxLength": 11,
            "x-kubernetes-validations": [cel_rule(
                "self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && self.split(':').all(p, int(p) <= 65535)",
                "not a community: write ASN:VALUE with both parts 0-65535, e.g. 64512:100",
            )],
        },
    })
}

/// `spec.bgp.largeCommunities`: each entry as `herald_bgp::rib::parse_large_community` reads it (three parts,
/// each 0-4294967295).
fn large_communities_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_COMMUNITIES,
        "items": {
            "type": "string",
            "maxLength": 32,
            "x-kubernetes-validations": [cel_rule(
                "self.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && self.split(':').all(p, int(p) <= 4294967295)",
                "not a large community (RFC 8092): write GLOBAL:DATA1:DATA2, each 0-4294967295, e.g. 64512:1:2",
            )],
        },
    })
}

/// What the allocator and the announcers report about a pool. Bounded in size however many IPs are used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EipStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `spec.addresses` as one line for `kubectl get eip` (`192.0.2.0/24, 2001:db8::/120`), at most
    /// [`MAX_ADDRESSES_SUMMARY`] characters (`..., +3 more`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addresses: String,
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
    /// Layer 2: the next free addresses, checked on the pool's network before they are handed out, and the
    /// addresses another host answers for. Written by the node that checks them, not by the allocator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<AddressProbes>,
    /// `Ready`, `Overlapping`, `Exhausted`, `AddressConflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// The most `status.probes.free` entries (per pool, both families).
pub const MAX_PROVEN_FREE: usize = 16;
/// The most `status.probes.conflicts` entries; further taken addresses are found by the announcer's own probe.
pub const MAX_CONFLICTS: usize = 32;

/// What the checks of a Layer 2 pool's addresses found (RFC 5227 ARP probes, IPv6 duplicate address detection).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressProbes {
    /// The node that checked.
    #[schemars(length(max = 253))]
    pub node: String,
    /// Its interface on the pool's network.
    #[schemars(length(max = 15))]
    pub interface: String,
    /// Free addresses nobody answered for: the allocator hands them out first, and the node that announces one
    /// skips its own probe while the check is recent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PROVEN_FREE))]
    pub free: Vec<ProvenFree>,
    /// Addresses another host answered for: never handed out while listed (they are checked again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONFLICTS))]
    pub conflicts: Vec<HostConflict>,
}

/// A free address nobody answered for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvenFree {
    #[schemars(length(max = 45))]
    pub ip: String,
    /// When the check ended.
    pub time: Time,
}

/// An address another host answers for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostConflict {
    #[schemars(length(max = 45))]
    pub ip: String,
    /// The other host's link-layer address.
    #[schemars(length(max = 17))]
    pub mac: String,
    /// When it last answered.
    pub time: Time,
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
    /// `USED/TOTAL` (`3/254`), the `IPv4 used` and `IPv6 used` columns of `kubectl get eip`.
    #[serde(default)]
    pub summary: String,
}

/// The longest [`EipStatus::addresses`].
pub const MAX_ADDRESSES_SUMMARY: usize = 64;

/// `addresses` as one line of at most [`MAX_ADDRESSES_SUMMARY`] characters: the entries that fit, then `+N more`.
pub fn addresses_summary(addresses: &[String]) -> String {
    let mut out = String::new();
    for (i, a) in addresses.iter().enumerate() {
        let sep = if out.is_empty() { "" } else { ", " };
        let rest = addresses.len() - i - 1;
        // Room for this entry, and for ", +N more" after it when entries remain.
        let tail = if rest > 0 { format!(", +{rest} more").len() } else { 0 };
        if out.len() + sep.len() + a.len() + tail > MAX_ADDRESSES_SUMMARY {
            let more = format!("+{} more", addresses.len() - i);
            return if out.is_empty() { more } else { format!("{out}, {more}") };
        }
        out.push_str(sep);
        out.push_str(a);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn addresses_summary_fits_a_column() {
        assert_eq!(addresses_summary(&owned(&["192.0.2.0/24"])), "192.0.2.0/24");
        assert_eq!(
            addresses_summary(&owned(&["192.0.2.0/24", "2001:db8::/120"])),
            "192.0.2.0/24, 2001:db8::/120"
        );
        let many: Vec<String> = (0..20).map(|i| format!("198.51.100.{i}")).collect();
        let s = addresses_summary(&many);
        assert!(s.len() <= MAX_ADDRESSES_SUMMARY, "{s}");
        assert!(
            s.starts_with("198.51.100.0, 198.51.100.1, ") && s.ends_with(" more"),
            "{s}"
        );
        let shown = s.matches(", ").count();
        assert!(s.ends_with(&format!("+{} more", 20 - shown)), "{s}");
        let long = "2001:db8:ffff:ffff:ffff:ffff:ffff:0-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".to_string();
        assert_eq!(addresses_summary(&[long.clone(), long]), "+2 more");
        assert_eq!(addresses_summary(&[]), "");
    }
}
