//! MetalLB's configuration (the metallb.io CRDs, or the legacy ConfigMap `config` of MetalLB before v0.13) as
//! Herald's.
//!
//! Both forms are read into one model first ([`Config`]); the conversion works on the model, so the two forms
//! convert alike and the report names the field as the user wrote it.

use std::collections::{BTreeMap, BTreeSet};

use herald_api::bgp::{BfdSpec, BgpConfOverride, SecretKeyRef};
use herald_api::eip::EipBgp;
use herald_api::{BgpConf, BgpConfSpec, BgpPeer, BgpPeerSpec, Eip, EipSpec, Protocol};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::addresses;
use super::{
    Fields, Kind, Migration, Options, api_version, kind, labels, matches, name, password_secret, subject,
    unknown_fields,
};

/// An IPAddressPool (or a ConfigMap `address-pools` entry).
#[derive(Debug, Default)]
struct Pool {
    subject: String,
    name: String,
    labels: BTreeMap<String, String>,
    addresses: Vec<String>,
    auto_assign: Option<bool>,
    avoid_buggy: bool,
    priority: Option<i64>,
    namespaces: Vec<String>,
    namespace_selectors: Vec<LabelSelector>,
    service_selectors: Vec<LabelSelector>,
}

/// An L2Advertisement or BGPAdvertisement (or a ConfigMap pool's `protocol` and `bgp-advertisements`).
#[derive(Debug, Default)]
struct Advertisement {
    subject: String,
    bgp: bool,
    pools: Vec<String>,
    pool_selectors: Vec<LabelSelector>,
    node_selectors: Vec<LabelSelector>,
    interfaces: Vec<String>,
    aggregation_length: Option<u64>,
    aggregation_length_v6: Option<u64>,
    local_pref: Option<u32>,
    communities: Vec<String>,
    peers: Vec<String>,
    /// Read from the legacy ConfigMap (for the report's field names).
    config_map: bool,
}

impl Advertisement {
    /// Whether it announces an aggregate (a prefix shorter than /32 or /128) rather than each IP.
    fn aggregates(&self) -> bool {
        self.aggregation_length.is_some_and(|l| l < 32) || self.aggregation_length_v6.is_some_and(|l| l < 128)
    }

    fn selects(&self, pool: &Pool) -> bool {
        (self.pools.is_empty() && self.pool_selectors.is_empty())
            || self.pools.contains(&pool.name)
            || self.pool_selectors.iter().any(|s| matches(s, &pool.labels))
    }
}

/// A BGPPeer (or a ConfigMap `peers` entry).
#[derive(Debug, Default)]
struct Peer {
    subject: String,
    name: String,
    my_asn: u32,
    peer_asn: u32,
    address: String,
    source_address: Option<String>,
    port: Option<u16>,
    hold_time: Option<u32>,
    keepalive_time: Option<u32>,
    connect_time: Option<u32>,
    router_id: Option<String>,
    node_selectors: Vec<LabelSelector>,
    password: Option<String>,
    password_secret: Option<(String, String)>,
    bfd_profile: Option<String>,
    ebgp_multihop: bool,
    graceful_restart: bool,
    /// `dualStackAddressFamily`: the session carries both families, not only the peer address's.
    dual_stack: bool,
}

/// A BFDProfile (or a ConfigMap `bfd-profiles` entry): the timers Herald has.
#[derive(Debug, Default, Clone)]
struct Bfd {
    receive: Option<u32>,
    transmit: Option<u32>,
    multiplier: Option<u32>,
}

#[derive(Debug, Default)]
struct Config {
    pools: Vec<Pool>,
    advertisements: Vec<Advertisement>,
    peers: Vec<Peer>,
    bfd: BTreeMap<String, Bfd>,
    /// Community names (Community objects, the ConfigMap's `bgp-communities`) to values.
    communities: BTreeMap<String, String>,
}

/// Why some MetalLB settings have no Herald equivalent, for the report.
const HINTS: &[(&str, &str)] = &[
    ("vrf", ": Herald peers from the node's default routing table only"),
    ("dynamicASN", ": give the router's AS number (BgpPeer spec.asn)"),
    (
        "interface",
        ": Herald peers with an address (BGP unnumbered is not supported)",
    ),
    (
        "disableMP",
        ": Herald opens one session per peer carrying the families in spec.families",
    ),
    ("echoMode", ": Herald's BFD has no echo function (RFC 5880 §6.4)"),
    ("echoInterval", ": Herald's BFD has no echo function (RFC 5880 §6.4)"),
    ("echo-mode", ": Herald's BFD has no echo function (RFC 5880 §6.4)"),
    ("echo-interval", ": Herald's BFD has no echo function (RFC 5880 §6.4)"),
    ("passiveMode", ": Herald's BFD is always active (it sends first)"),
    ("passive-mode", ": Herald's BFD is always active (it sends first)"),
    ("minimumTtl", ": Herald's BFD is single-hop (RFC 5881: TTL 255 only)"),
    ("minimum-ttl", ": Herald's BFD is single-hop (RFC 5881: TTL 255 only)"),
];

fn hint(key: &str) -> &'static str {
    HINTS.iter().find(|(k, _)| *k == key).map_or("", |(_, h)| h)
}

pub(super) fn convert(objects: Vec<Value>, options: &Options, out: &mut Migration) {
    let mut config = Config::default();
    for object in &objects {
        let subject = subject(object);
        let read = match (api_version(object), kind(object)) {
            (v, k) if v.starts_with("metallb.io/") => read_crd(k, object, &subject, &mut config, out),
            ("v1", "ConfigMap") if object.pointer("/data/config").is_some() => {
                read_config_map(object, &subject, &mut config, out)
            }
            // The Secrets BGPPeers refer to: their content stays where it is (see `peer`).
            ("v1", "Secret") => Ok(()),
            (v, k) => Err(format!("{k} ({v}) is not MetalLB configuration")),
        };
        if let Err(e) = read {
            out.finding(&subject, Kind::Skipped, e);
        }
    }
    build(config, options, out);
}

fn read_crd(kind: &str, object: &Value, subject: &str, c: &mut Config, out: &mut Migration) -> Result<(), String> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Object(Default::default()));
    let f = Fields::new(&spec, "spec.");
    let drop = |known: &[&str], out: &mut Migration| {
        if let Some(map) = spec.as_object() {
            for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
                out.finding(
                    subject,
                    Kind::Dropped,
                    format!("spec.{key} has no Herald equivalent{}", hint(key)),
                );
            }
        }
    };
    match kind {
        "IPAddressPool" => {
            drop(&["addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation"], out);
            let alloc = spec.get("serviceAllocation").cloned().unwrap_or(Value::Null);
            let a = Fields::new(&alloc, "spec.serviceAllocation.");
            unknown_fields(
                &alloc,
                &["priority", "namespaces", "namespaceSelectors", "serviceSelectors"],
                "spec.serviceAllocation.",
                subject,
                "",
                out,
            );
            c.pools.push(Pool {
                subject: subject.to_string(),
                name: name(object).to_string(),
                labels: labels(object),
                addresses: f.strings("addresses")?,
                auto_assign: f.bool("autoAssign")?,
                avoid_buggy: f.bool("avoidBuggyIPs")?.unwrap_or(false),
                priority: a.i64("priority")?,
                namespaces: a.strings("namespaces")?,
                namespace_selectors: a.selectors("namespaceSelectors")?,
                service_selectors: a.selectors("serviceSelectors")?,
            });
        }
        "L2Advertisement" => {
            drop(
                &[
                    "ipAddressPools",
                    "ipAddressPoolSelectors",
                    "nodeSelectors",
                    "interfaces",
                ],
                out,
            );
            c.advertisements.push(Advertisement {
                subject: subject.to_string(),
                bgp: false,
                pools: f.strings("ipAddressPools")?,
                pool_selectors: f.selectors("ipAddressPoolSelectors")?,
                node_selectors: f.selectors("nodeSelectors")?,
                interfaces: f.strings("interfaces")?,
                ..Default::default()
            });
        }
        "BGPAdvertisement" => {
            drop(
                &[
                    "ipAddressPools",
                    "ipAddressPoolSelectors",
                    "nodeSelectors",
                    "aggregationLength",
                    "aggregationLengthV6",
                    "localPref",
                    "communities",
                    "peers",
                ],
                out,
            );
            c.advertisements.push(Advertisement {
                subject: subject.to_string(),
                bgp: true,
                pools: f.strings("ipAddressPools")?,
                pool_selectors: f.selectors("ipAddressPoolSelectors")?,
                node_selectors: f.selectors("nodeSelectors")?,
                aggregation_length: f.u64("aggregationLength")?,
                aggregation_length_v6: f.u64("aggregationLengthV6")?,
                local_pref: f.u32("localPref")?,
                communities: f.strings("communities")?,
                peers: f.strings("peers")?,
                ..Default::default()
            });
        }
        "BGPPeer" => {
            drop(
                &[
                    "myASN",
                    "peerASN",
                    "peerAddress",
                    "sourceAddress",
                    "peerPort",
                    "holdTime",
                    "keepaliveTime",
                    "connectTime",
                    "routerID",
                    "nodeSelectors",
                    "password",
                    "passwordSecret",
                    "bfdProfile",
                    "ebgpMultiHop",
                    "enableGracefulRestart",
                    "dualStackAddressFamily",
                ],
                out,
            );
            let secret = match f.get("passwordSecret") {
                Some(s) => {
                    let s = Fields::new(s, "spec.passwordSecret.");
                    let ns = s
                        .str("namespace")?
                        .unwrap_or_else(|| super::namespace(object).to_string());
                    Some((ns, s.str("name")?.ok_or("spec.passwordSecret.name is missing")?))
                }
                None => None,
            };
            c.peers.push(Peer {
                subject: subject.to_string(),
                name: name(object).to_string(),
                my_asn: f.u32("myASN")?.ok_or("spec.myASN is missing")?,
                peer_asn: f
                    .u32("peerASN")?
                    .ok_or("spec.peerASN is missing (dynamicASN has no Herald equivalent)")?,
                address: f.str("peerAddress")?.ok_or("spec.peerAddress is missing")?,
                source_address: f.str("sourceAddress")?,
                port: port(&f, "peerPort")?,
                hold_time: f.seconds("holdTime")?,
                keepalive_time: f.seconds("keepaliveTime")?,
                connect_time: f.seconds("connectTime")?,
                router_id: f.str("routerID")?,
                node_selectors: f.selectors("nodeSelectors")?,
                password: f.str("password")?.filter(|p| !p.is_empty()),
                password_secret: secret,
                bfd_profile: f.str("bfdProfile")?.filter(|p| !p.is_empty()),
                ebgp_multihop: f.bool("ebgpMultiHop")?.unwrap_or(false),
                graceful_restart: f.bool("enableGracefulRestart")?.unwrap_or(false),
                dual_stack: f.bool("dualStackAddressFamily")?.unwrap_or(false),
            });
        }
        "BFDProfile" => {
            drop(&["receiveInterval", "transmitInterval", "detectMultiplier"], out);
            c.bfd.insert(
                name(object).to_string(),
                Bfd {
                    receive: f.u32("receiveInterval")?,
                    transmit: f.u32("transmitInterval")?,
                    multiplier: f.u32("detectMultiplier")?,
                },
            );
        }
        "Community" => {
            for (i, entry) in f
                .get("communities")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let e = Fields::new(entry, "spec.communities[].");
                match (e.str("name")?, e.str("value")?) {
                    (Some(n), Some(v)) => {
                        c.communities.insert(n, v);
                    }
                    _ => return Err(format!("spec.communities[{i}]: needs a name and a value")),
                }
            }
        }
        other => return Err(format!("{other} has no Herald equivalent")),
    }
    Ok(())
}

fn port(f: &Fields<'_>, key: &str) -> Result<Option<u16>, String> {
    f.u64(key)?
        .map(|p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(format!("{key}: {p} is not a TCP port"))
        })
        .transpose()
}

/// The legacy ConfigMap: its `config` key is a YAML document of its own.
fn read_config_map(object: &Value, subject: &str, c: &mut Config, out: &mut Migration) -> Result<(), String> {
    let text = object
        .pointer("/data/config")
        .and_then(Value::as_str)
        .ok_or("data.config is not a string")?;
    let config: Value = serde_saphyr::from_str(text).map_err(|e| format!("data.config is not YAML: {e}"))?;
    unknown_fields(
        &config,
        &["peers", "address-pools", "bgp-communities", "bfd-profiles"],
        "data.config: ",
        subject,
        "",
        out,
    );
    let top = Fields::new(&config, "data.config: ");
    if let Some(communities) = top.get("bgp-communities").and_then(Value::as_object) {
        for (n, v) in communities {
            if let Some(v) = v.as_str() {
                c.communities.insert(n.clone(), v.to_string());
            }
        }
    }
    for (i, profile) in top
        .get("bfd-profiles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("bfd-profiles[{i}].");
        let f = Fields::new(profile, &path);
        let here = format!("{subject}: bfd-profiles[{i}]");
        for key in profile.as_object().into_iter().flat_map(|m| m.keys()) {
            if !["name", "receive-interval", "transmit-interval", "detect-multiplier"].contains(&key.as_str()) {
                out.finding(
                    &here,
                    Kind::Dropped,
                    format!("{key} has no Herald equivalent{}", hint(key)),
                );
            }
        }
        let profile_name = f.str("name")?.ok_or(format!("{path}name is missing"))?;
        c.bfd.insert(
            profile_name,
            Bfd {
                receive: f.u32("receive-interval")?,
                transmit: f.u32("transmit-interval")?,
                multiplier: f.u32("detect-multiplier")?,
            },
        );
    }
    for (i, peer) in top
        .get("peers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("peers[{i}].");
        let here = format!("{subject}: peers[{i}]");
        let f = Fields::new(peer, &path);
        unknown_fields(
            peer,
            &[
                "peer-address",
                "peer-asn",
                "my-asn",
                "peer-port",
                "hold-time",
                "keepalive-time",
                "router-id",
                "source-address",
                "password",
                "node-selectors",
                "bfd-profile",
                "ebgp-multihop",
            ],
            &path,
            &here,
            "",
            out,
        );
        let address = f.str("peer-address")?.ok_or(format!("{path}peer-address is missing"))?;
        c.peers.push(Peer {
            subject: here,
            name: format!("peer-{}", address.replace(['.', ':'], "-")),
            my_asn: f.u32("my-asn")?.ok_or(format!("{path}my-asn is missing"))?,
            peer_asn: f.u32("peer-asn")?.ok_or(format!("{path}peer-asn is missing"))?,
            address,
            source_address: f.str("source-address")?,
            port: port(&f, "peer-port")?,
            hold_time: f.seconds("hold-time")?,
            keepalive_time: f.seconds("keepalive-time")?,
            connect_time: None,
            router_id: f.str("router-id")?,
            node_selectors: f.selectors("node-selectors")?,
            password: f.str("password")?.filter(|p| !p.is_empty()),
            password_secret: None,
            bfd_profile: f.str("bfd-profile")?.filter(|p| !p.is_empty()),
            ebgp_multihop: f.bool("ebgp-multihop")?.unwrap_or(false),
            graceful_restart: false,
            dual_stack: false,
        });
    }
    for (i, pool) in top
        .get("address-pools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("address-pools[{i}].");
        let here = format!("{subject}: address-pools[{i}]");
        let f = Fields::new(pool, &path);
        unknown_fields(
            pool,
            &[
                "name",
                "protocol",
                "addresses",
                "auto-assign",
                "avoid-buggy-ips",
                "bgp-advertisements",
            ],
            &path,
            &here,
            "",
            out,
        );
        let written = f.str("name")?.ok_or(format!("{path}name is missing"))?;
        let pool_name = object_name(&written);
        if pool_name != written {
            out.finding(
                &here,
                Kind::Action,
                format!(
                    "pool '{written}' is not a valid object name: its Eip is named '{pool_name}'; change the pool \
                     annotations of its Services (metallb.universe.tf/address-pool: {written}) to {pool_name}"
                ),
            );
        }
        let protocol = f
            .str("protocol")?
            .ok_or(format!("{path}protocol is missing (layer2 or bgp)"))?;
        match protocol.as_str() {
            "layer2" => c.advertisements.push(Advertisement {
                subject: here.clone(),
                config_map: true,
                pools: vec![pool_name.clone()],
                ..Default::default()
            }),
            "bgp" => {
                let ads: Vec<Value> = f
                    .get("bgp-advertisements")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                // No bgp-advertisements: every IP as a /32 or /128 to every peer.
                let ads = if ads.is_empty() {
                    vec![Value::Object(Default::default())]
                } else {
                    ads
                };
                for (k, ad) in ads.iter().enumerate() {
                    let apath = format!("{path}bgp-advertisements[{k}].");
                    unknown_fields(
                        ad,
                        &[
                            "aggregation-length",
                            "aggregation-length-v6",
                            "localpref",
                            "communities",
                        ],
                        &apath,
                        &here,
                        "",
                        out,
                    );
                    let a = Fields::new(ad, &apath);
                    c.advertisements.push(Advertisement {
                        subject: here.clone(),
                        bgp: true,
                        config_map: true,
                        pools: vec![pool_name.clone()],
                        aggregation_length: a.u64("aggregation-length")?,
                        aggregation_length_v6: a.u64("aggregation-length-v6")?,
                        local_pref: a.u32("localpref")?,
                        communities: a.strings("communities")?,
                        ..Default::default()
                    });
                }
            }
            other => return Err(format!("{path}protocol: '{other}' is neither layer2 nor bgp")),
        }
        c.pools.push(Pool {
            subject: here,
            name: pool_name,
            addresses: f.strings("addresses")?,
            auto_assign: f.bool("auto-assign")?,
            avoid_buggy: f.bool("avoid-buggy-ips")?.unwrap_or(false),
            ..Default::default()
        });
    }
    Ok(())
}

/// `name` as a Kubernetes object name (lower case; other characters than letters, digits, `-` and `.` as `-`), as
/// MetalLB's own ConfigMap converter writes pool names.
fn object_name(name: &str) -> String {
    let lower: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = lower.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "pool".into()
    } else {
        trimmed.chars().take(253).collect()
    }
}

fn build(c: Config, options: &Options, out: &mut Migration) {
    for pool in &c.pools {
        if let Some(eip) = eip(pool, &c, out) {
            out.eips.push(eip);
        }
    }
    peers(&c, options, out);
}

/// MetalLB's order of pools as Herald priorities (lowest first): pools with a `serviceAllocation` (pinned to
/// namespaces or Services) come first, by their priority (lowest first, 0 or none last), then every other pool.
/// Herald's default, 0, would put the unpinned pools first.
fn priority(pool: &Pool, c: &Config) -> i64 {
    let highest = c
        .pools
        .iter()
        .filter_map(|p| p.priority)
        .filter(|p| *p > 0)
        .max()
        .unwrap_or(0);
    let pinned = !pool.namespaces.is_empty()
        || !pool.namespace_selectors.is_empty()
        || !pool.service_selectors.is_empty()
        || pool.priority.is_some();
    match pool.priority.filter(|p| *p > 0) {
        Some(p) if pinned => p,
        _ if pinned => highest.saturating_add(1),
        _ => highest.saturating_add(2),
    }
}

fn eip(pool: &Pool, c: &Config, out: &mut Migration) -> Option<Eip> {
    let here = pool.subject.as_str();
    // Herald refuses an Eip listing a namespace name that cannot exist; so does the migration, for the user to correct
    // (left out, the name would open the pool to every namespace when it was the only one).
    if let Err(e) = crate::adapter::namespace_names("spec.serviceAllocation.namespaces", &pool.namespaces) {
        out.finding(here, Kind::Skipped, format!("{e}: no Eip written"));
        return None;
    }
    let mut spec = EipSpec {
        auto_assign: pool.auto_assign.unwrap_or(true),
        namespaces: pool.namespaces.clone(),
        ..Default::default()
    };
    for entry in &pool.addresses {
        match addresses::convert(entry, pool.avoid_buggy) {
            Ok(entries) => spec.addresses.extend(entries),
            Err(e) => out.finding(here, Kind::Skipped, format!("address {e}: left out of the Eip")),
        }
    }
    if spec.addresses.is_empty() {
        out.finding(here, Kind::Skipped, "no address left: no Eip written");
        return None;
    }
    if spec.addresses.len() > herald_api::eip::MAX_ADDRESSES {
        out.finding(
            here,
            Kind::Skipped,
            format!(
                "{} address entries, more than an Eip takes ({}): no Eip written",
                spec.addresses.len(),
                herald_api::eip::MAX_ADDRESSES
            ),
        );
        return None;
    }
    let priority = priority(pool, c);
    spec.priority = i32::try_from(priority).unwrap_or(if priority < 0 { i32::MIN } else { i32::MAX });
    spec.namespace_selector = one_selector(&pool.namespace_selectors, here, "namespaceSelectors", out);
    spec.service_selector = one_selector(&pool.service_selectors, here, "serviceSelectors", out);

    let ads: Vec<&Advertisement> = c.advertisements.iter().filter(|a| a.selects(pool)).collect();
    let l2: Vec<&&Advertisement> = ads.iter().filter(|a| !a.bgp).collect();
    let (aggregates, bgp): (Vec<&&Advertisement>, Vec<&&Advertisement>) =
        ads.iter().filter(|a| a.bgp).partition(|a| a.aggregates());
    // An aggregate route has no Herald equivalent: it is reported and shapes nothing else.
    for ad in &aggregates {
        let (v4, v6) = if ad.config_map {
            ("aggregation-length", "aggregation-length-v6")
        } else {
            ("aggregationLength", "aggregationLengthV6")
        };
        let lengths: Vec<String> = [(v4, ad.aggregation_length, 32), (v6, ad.aggregation_length_v6, 128)]
            .into_iter()
            .filter_map(|(field, len, full)| len.filter(|l| *l < full).map(|l| format!("{field} {l}")))
            .collect();
        out.finding(
            &ad.subject,
            Kind::Dropped,
            format!(
                "{}: the aggregate route for pool {} is not converted; Herald announces each Service IP as its own \
                 route (with the pool's other advertisements' attributes)",
                lengths.join(", "),
                pool.name
            ),
        );
    }
    let chosen: Vec<&&Advertisement> = match (l2.is_empty(), bgp.is_empty() && aggregates.is_empty()) {
        (true, true) => {
            out.finding(
                here,
                Kind::Differs,
                "no L2Advertisement or BGPAdvertisement selects this pool: MetalLB hands its addresses out without \
                 announcing them; Herald announces every Eip, here in Layer 2 (set spec.protocol: bgp for BGP, or \
                 spec.disable: true to stop new allocations)",
            );
            Vec::new()
        }
        (false, true) => l2,
        (true, false) => {
            spec.protocol = Protocol::Bgp;
            if bgp.is_empty() {
                out.finding(
                    here,
                    Kind::Differs,
                    "only aggregate routes announced it in MetalLB: Herald announces each of its IPs, from every node",
                );
            }
            bgp
        }
        (false, false) => {
            out.finding(
                here,
                Kind::Differs,
                format!(
                    "announced both in Layer 2 ({}) and BGP ({}); a Herald Eip is announced one way: this one in \
                     BGP. For both, split the addresses into two Eips",
                    subjects(&l2),
                    subjects(&bgp)
                ),
            );
            spec.protocol = Protocol::Bgp;
            bgp
        }
    };
    spec.node_selector = node_selector(&chosen, here, out);
    if spec.protocol == Protocol::Layer2 {
        let interfaces: BTreeSet<&String> = chosen.iter().flat_map(|a| &a.interfaces).collect();
        if chosen.iter().all(|a| !a.interfaces.is_empty()) && !interfaces.is_empty() {
            if interfaces.len() == 1 {
                spec.interface = interfaces.into_iter().next().cloned();
            } else {
                out.finding(
                    here,
                    Kind::Differs,
                    format!(
                        "announced on interfaces {}; a Herald Eip names one interface or none: none, so each node \
                         answers on the interface whose subnet holds the IP",
                        interfaces.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
    } else {
        spec.bgp = bgp_attributes(&chosen, c, here, out);
    }
    Some(Eip::new(&pool.name, spec))
}

fn subjects(ads: &[&&Advertisement]) -> String {
    ads.iter().map(|a| a.subject.as_str()).collect::<Vec<_>>().join(", ")
}

/// One Herald selector from MetalLB's list (any of which may match).
fn one_selector(list: &[LabelSelector], here: &str, field: &str, out: &mut Migration) -> Option<LabelSelector> {
    match list {
        [] => None,
        [one] => Some(one.clone()),
        many => match merge(many) {
            Some(merged) => Some(merged),
            None => {
                out.finding(
                    here,
                    Kind::Differs,
                    format!(
                        "{field} lists {} selectors, any of which may match; Herald takes one: the first. Give the \
                         objects a common label and select on it",
                        many.len()
                    ),
                );
                Some(many[0].clone())
            }
        },
    }
}

/// Selectors that each match one value of the same label key, as one `key In (values)` selector.
fn merge(list: &[LabelSelector]) -> Option<LabelSelector> {
    let mut key = None;
    let mut values = BTreeSet::new();
    for sel in list {
        let labels = sel.match_labels.as_ref().filter(|l| l.len() == 1)?;
        if sel.match_expressions.as_ref().is_some_and(|e| !e.is_empty()) {
            return None;
        }
        let (k, v) = labels.iter().next()?;
        if key.get_or_insert(k.clone()) != k {
            return None;
        }
        values.insert(v.clone());
    }
    Some(LabelSelector {
        match_expressions: Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: key?,
                operator: "In".into(),
                values: Some(values.into_iter().collect()),
            },
        ]),
        match_labels: None,
    })
}

/// The nodes that announce: every node when an advertisement has no node selector.
fn node_selector(ads: &[&&Advertisement], here: &str, out: &mut Migration) -> Option<LabelSelector> {
    if ads.is_empty() || ads.iter().any(|a| a.node_selectors.is_empty()) {
        return None;
    }
    let mut all: Vec<LabelSelector> = Vec::new();
    for sel in ads.iter().flat_map(|a| &a.node_selectors) {
        if !all.contains(sel) {
            all.push(sel.clone());
        }
    }
    one_selector(&all, here, "nodeSelectors (of its advertisements)", out)
}

fn bgp_attributes(ads: &[&&Advertisement], c: &Config, here: &str, out: &mut Migration) -> Option<EipBgp> {
    let mut bgp = EipBgp::default();
    for ad in ads {
        if !ad.peers.is_empty() {
            out.finding(
                &ad.subject,
                Kind::Differs,
                format!(
                    "peers {} only: Herald announces every BGP Eip to every BgpPeer of the node (choose the nodes \
                     with the BgpPeers' and the Eip's nodeSelector)",
                    ad.peers.join(", ")
                ),
            );
        }
        if let Some(pref) = ad.local_pref {
            if bgp.local_pref.is_some_and(|p| p != pref) {
                out.finding(
                    here,
                    Kind::Differs,
                    format!(
                        "its advertisements set different localPref values; the Eip takes {}",
                        bgp.local_pref.unwrap_or_default()
                    ),
                );
            } else {
                bgp.local_pref = Some(pref);
            }
        }
        for community in &ad.communities {
            let value = c.communities.get(community).map_or(community.as_str(), String::as_str);
            match value.strip_prefix("large:") {
                Some(large) if !bgp.large_communities.iter().any(|l| l == large) => {
                    bgp.large_communities.push(large.to_string())
                }
                Some(_) => {}
                None if value.split(':').count() == 2 => {
                    if !bgp.communities.iter().any(|l| l == value) {
                        bgp.communities.push(value.to_string());
                    }
                }
                None if value.split(':').count() == 3 => {
                    if !bgp.large_communities.iter().any(|l| l == value) {
                        bgp.large_communities.push(value.to_string());
                    }
                }
                None => out.finding(
                    &ad.subject,
                    Kind::Skipped,
                    format!("community '{community}' is neither ASN:VALUE nor large:A:B:C, nor a Community's name"),
                ),
            }
        }
    }
    (bgp != EipBgp::default()).then_some(bgp)
}

fn peers(c: &Config, options: &Options, out: &mut Migration) {
    if c.peers.is_empty() {
        return;
    }
    // The nodes' AS: the one most peers use; the others become the peer's localAsn.
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for p in &c.peers {
        *counts.entry(p.my_asn).or_default() += 1;
    }
    let asn = counts
        .iter()
        .max_by_key(|(asn, n)| (**n, std::cmp::Reverse(**asn)))
        .map(|(a, _)| *a)
        .unwrap_or(0);
    let mut conf = BgpConfSpec {
        asn,
        router_id: None,
        graceful_restart: None,
        listen_port: None,
        overrides: Vec::new(),
    };
    let router_ids: BTreeSet<&String> = c.peers.iter().filter_map(|p| p.router_id.as_ref()).collect();
    for p in &c.peers {
        let Some(id) = &p.router_id else { continue };
        match p.node_selectors.as_slice() {
            [] if router_ids.len() == 1 => conf.router_id = Some(id.clone()),
            [] => out.finding(
                &p.subject,
                Kind::Differs,
                format!(
                    "routerID {id} for every node, while other peers set {}; Herald has one identifier per node: \
                     left out (each node uses its first IPv4 InternalIP; set BgpConf spec.overrides per node)",
                    router_ids
                        .iter()
                        .filter(|r| **r != id)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            selectors => {
                for sel in selectors {
                    conf.overrides.push(BgpConfOverride {
                        node_selector: sel.clone(),
                        asn: None,
                        router_id: Some(id.clone()),
                    });
                }
            }
        }
    }
    if c.peers.iter().any(|p| p.graceful_restart) {
        conf.graceful_restart = Some(herald_api::bgp::GracefulRestart {
            enabled: false,
            restart_time: 120,
        });
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    for p in &c.peers {
        // Per-node sessions to one router (the ConfigMap's peers are named by address) get distinct names.
        let mut peer_name = p.name.clone();
        let mut n = 1;
        while !names.insert(peer_name.clone()) {
            n += 1;
            peer_name = format!("{}-{n}", p.name);
        }
        let mut spec = BgpPeerSpec {
            address: p.address.clone(),
            asn: p.peer_asn,
            local_asn: (p.my_asn != asn).then_some(p.my_asn),
            port: p.port.unwrap_or(179),
            source_address: p.source_address.clone(),
            // MetalLB derives the hold time from a keepalive time given alone (three times it).
            hold_time: p.hold_time.or(p.keepalive_time.map(|k| k.saturating_mul(3).min(65535))),
            keepalive_time: p.keepalive_time,
            connect_retry_time: p.connect_time.filter(|t| *t >= 1).map(|t| t.min(3600)),
            password_secret_ref: None,
            ebgp_multihop: p.ebgp_multihop.then_some(255),
            families: super::families_of(&p.address, p.dual_stack),
            graceful_restart: p.graceful_restart.then_some(true),
            passive: false,
            node_selector: one_selector(&p.node_selectors, &p.subject, "nodeSelectors", out),
            bfd: None,
        };
        if let Some(profile) = &p.bfd_profile {
            match c.bfd.get(profile) {
                Some(b) => {
                    spec.bfd = Some(BfdSpec {
                        receive_interval: b.receive,
                        transmit_interval: b.transmit,
                        detect_multiplier: b.multiplier.map(|m| m.clamp(2, 255) as u8),
                    })
                }
                None => out.finding(
                    &p.subject,
                    Kind::Action,
                    format!("bfdProfile '{profile}' is not in the input: BFD left off; add spec.bfd to the BgpPeer"),
                ),
            }
        }
        if let Some(password) = &p.password {
            spec.password_secret_ref = Some(password_secret(out, options, &peer_name, &p.subject, password));
        }
        if let Some((ns, secret)) = &p.password_secret {
            spec.password_secret_ref = Some(SecretKeyRef {
                name: secret.clone(),
                key: "password".into(),
            });
            if *ns != options.namespace {
                out.finding(
                    &p.subject,
                    Kind::Action,
                    format!(
                        "its password is in Secret {ns}/{secret}; Herald reads Secrets in its own namespace: copy it \
                         with `kubectl create secret generic {secret} -n {herald} --from-literal=password=\"$(kubectl \
                         get secret {secret} -n {ns} -o jsonpath='{{.data.password}}' | base64 -d)\"`",
                        herald = options.namespace
                    ),
                );
            }
        }
        if let Some(source) = &p.source_address {
            out.finding(
                &p.subject,
                Kind::Differs,
                format!(
                    "source address {source}: MetalLB used it only on the node that has it; Herald's BgpPeer uses it \
                     on every node it selects: give the peer a nodeSelector for that node"
                ),
            );
        }
        if let Some(t) = p.connect_time {
            out.finding(
                &p.subject,
                Kind::Differs,
                format!(
                    "connectTime {t} s: MetalLB retries at that fixed interval; Herald backs off from 1 s up to it \
                     (connectRetryTime, at most 3600 s)"
                ),
            );
        }
        if spec.hold_time.is_some_and(|h| h != 0 && h < 3) {
            out.finding(
                &p.subject,
                Kind::Differs,
                "holdTime below 3 s: raised to 3 s (RFC 4271 §4.2)",
            );
            spec.hold_time = Some(3);
        }
        out.peers.push(BgpPeer::new(&peer_name, spec));
    }
    if c.peers.iter().any(|p| p.my_asn == p.peer_asn)
        && out
            .eips
            .iter()
            .any(|e| e.spec.protocol == Protocol::Bgp && e.spec.bgp.as_ref().is_none_or(|b| b.local_pref.is_none()))
    {
        out.finding(
            "iBGP peers",
            Kind::Differs,
            "Eips without localPref: Herald sends LOCAL_PREF 100 on iBGP sessions, MetalLB's native mode sent 0; set \
             spec.bgp.localPref on the Eip to keep what the routers saw",
        );
    }
    out.bgp_conf = Some(BgpConf::new("default", conf));
}
