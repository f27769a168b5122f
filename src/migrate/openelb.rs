//! OpenELB's configuration (network.kubesphere.io v1alpha1 and v1alpha2: Eip, BgpConf, BgpPeer) as Herald's.
//!
//! Herald's resources were modelled on OpenELB's, so most fields carry over by name; the differences are in the
//! report.

use std::collections::BTreeMap;

use herald_api::bgp::{AddressFamily, BgpConfOverride};
use herald_api::{BgpConf, BgpConfSpec, BgpPeer, BgpPeerSpec, Eip, EipSpec, Protocol};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::addresses;
use super::{
    Fields, Kind, Migration, Options, api_version, families_of, kind, name, password_secret, subject, unknown_fields,
};

/// The node label OpenELB's `asPerRack` keys refer to.
const RACK_LABEL: &str = "openelb.kubesphere.io/rack";

/// The annotation that makes an Eip OpenELB's default (its pool of last resort).
const DEFAULT_EIP: &str = "eip.openelb.kubesphere.io/is-default-eip";

pub(super) fn convert(objects: Vec<Value>, options: &Options, out: &mut Migration) {
    let mut defaults = Vec::new();
    let mut restart_times = Vec::new();
    for object in &objects {
        let subject = subject(object);
        let version = api_version(object);
        let read = if version.starts_with("network.kubesphere.io/") {
            let v2 = version.ends_with("/v1alpha2");
            match kind(object) {
                "Eip" => eip(object, &subject, v2, out).map(|e| {
                    if let Some((eip, default)) = e {
                        if default {
                            defaults.push(out.eips.len());
                        }
                        out.eips.push(eip);
                    }
                }),
                "BgpConf" => bgp_conf(object, &subject, v2, out),
                "BgpPeer" => peer(object, &subject, v2, options, out, &mut restart_times),
                other => Err(format!("{other} has no Herald equivalent")),
            }
        } else {
            Err(format!("{} ({version}) is not OpenELB configuration", kind(object)))
        };
        if let Err(e) = read {
            out.finding(&subject, Kind::Skipped, e);
        }
    }
    // Herald has one restart time, the BgpConf's (120 s when it sets none).
    let global = out
        .bgp_conf
        .as_ref()
        .and_then(|c| c.spec.graceful_restart.as_ref())
        .map_or(120, |g| g.restart_time);
    for (subject, t) in restart_times.into_iter().filter(|(_, t)| *t != u64::from(global)) {
        out.finding(
            &subject,
            Kind::Differs,
            format!(
                "gracefulRestart.restartTime {t}: Herald's restart time is the BgpConf's for every peer: {global} s"
            ),
        );
    }
    // The default Eip is OpenELB's pool of last resort: after every other.
    let last = out
        .eips
        .iter()
        .map(|e| e.spec.priority)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    for i in defaults {
        out.eips[i].spec.priority = last;
    }
    if !out.peers.is_empty() {
        if out.bgp_conf.is_none() {
            out.finding(
                "BgpPeers",
                Kind::Action,
                "no BgpConf in the input: write Herald's BgpConf `default` with the nodes' AS number (spec.asn)",
            );
        }
        out.finding(
            "BgpPeers",
            Kind::Differs,
            "OpenELB's speakers announce every node of their rack as a next hop (ADD-PATH); Herald, like MetalLB, \
             announces each node itself: every node that should receive traffic needs its own session (the \
             BgpPeers' nodeSelector), and the routers need ECMP (multipath) rather than ADD-PATH",
        );
    }
}

/// An Eip, and whether it is OpenELB's default Eip.
fn eip(object: &Value, subject: &str, v2: bool, out: &mut Migration) -> Result<Option<(Eip, bool)>, String> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let f = Fields::new(&spec, "spec.");
    let known: &[&str] = if v2 {
        &[
            "address",
            "protocol",
            "interface",
            "disable",
            "usingKnownIPs",
            "priority",
            "namespaces",
            "namespaceSelector",
        ]
    } else {
        &["address", "protocol", "disable", "usingKnownIPs"]
    };
    unknown_fields(&spec, known, "spec.", subject, "", out);
    let address = f.str("address")?.ok_or("spec.address is missing")?;
    let mut eip = EipSpec {
        disable: f.bool("disable")?.unwrap_or(false),
        ..Default::default()
    };
    // PorterLB v0.3 (v1alpha1) skipped the IPv4 addresses ending in .0 and .255 unless usingKnownIPs; the field has
    // done nothing since v0.4.
    let avoid_buggy = !v2 && !f.bool("usingKnownIPs")?.unwrap_or(false);
    match addresses::convert(&address, avoid_buggy) {
        Ok(entries) => eip.addresses = entries,
        Err(e) => return Err(format!("spec.address {e}")),
    }
    if eip.addresses.is_empty() {
        return Err(format!(
            "spec.address '{address}' holds no address once .0 and .255 are left out"
        ));
    }
    match f.str("protocol")?.as_deref().unwrap_or("") {
        // OpenELB's default.
        "bgp" | "" => eip.protocol = Protocol::Bgp,
        "layer2" => eip.protocol = Protocol::Layer2,
        "vip" => {
            eip.protocol = Protocol::Layer2;
            out.finding(
                subject,
                Kind::Differs,
                "protocol vip (keepalived VRRP): Herald announces it in Layer 2, one node per IP chosen by Lease \
                 election; OpenELB's keepalived is no longer needed",
            );
        }
        other => return Err(format!("spec.protocol: '{other}' is none of bgp, layer2, vip")),
    }
    if v2 && let Some(interface) = f.str("interface")?.filter(|i| !i.is_empty()) {
        if let Some(target) = interface.strip_prefix("can_reach:") {
            out.finding(
                subject,
                Kind::Differs,
                format!(
                    "spec.interface can_reach:{target}: Herald answers on the interface whose subnet holds the IP; \
                     left to that default"
                ),
            );
        } else if eip.protocol == Protocol::Layer2 {
            eip.interface = Some(interface);
        }
    }
    if let Some(p) = f.i64("priority")? {
        // Lower first, as in Herald.
        eip.priority = i32::try_from(p).unwrap_or(if p < 0 { i32::MIN } else { i32::MAX });
    }
    eip.namespaces = f.strings("namespaces")?;
    crate::adapter::namespace_names("spec.namespaces", &eip.namespaces)?;
    match f.get("namespaceSelector") {
        None => {}
        // v1alpha2 writes a plain map of labels.
        Some(Value::Object(map)) if !map.contains_key("matchLabels") && !map.contains_key("matchExpressions") => {
            let labels: BTreeMap<String, String> = serde_json::from_value(Value::Object(map.clone()))
                .map_err(|e| format!("spec.namespaceSelector: {e}"))?;
            eip.namespace_selector = Some(LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            });
        }
        Some(_) => eip.namespace_selector = f.selector("namespaceSelector")?,
    }
    let default = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_EIP))
        .and_then(Value::as_str)
        == Some("true");
    let bound = !eip.namespaces.is_empty() || eip.namespace_selector.is_some();
    // OpenELB v0.6 hands out an Eip's addresses unasked only in its namespaces, or from the default Eip.
    eip.auto_assign = !v2 || bound || default;
    if v2 && !eip.auto_assign {
        out.finding(
            subject,
            Kind::Differs,
            "neither bound to namespaces nor the default Eip: OpenELB v0.6 hands its addresses only to Services that \
             name it or ask for one of them, so autoAssign: false (v0.4 and v0.5 gave them to any Service: set \
             autoAssign: true if you ran those)",
        );
    }
    if bound {
        out.finding(
            subject,
            Kind::Differs,
            "OpenELB's namespaces limit only the addresses it hands out unasked; Herald's limit every use: a Service \
             of another namespace that names this Eip gets no address from it (the Services section names them)",
        );
    }
    Ok(Some((Eip::new(name(object), eip), default)))
}

/// A port field: 0 or absent means 179 (GoBGP's default); -1 means no listener.
fn listen_port(f: &Fields<'_>, key: &str) -> Result<Option<u16>, String> {
    match f.i64(key)? {
        None | Some(0) => Ok(Some(179)),
        Some(-1) => Ok(None),
        Some(p) => u16::try_from(p)
            .map(Some)
            .map_err(|_| format!("spec.{key}: {p} is not a port")),
    }
}

fn bgp_conf(object: &Value, subject: &str, v2: bool, out: &mut Migration) -> Result<(), String> {
    if v2 && name(object) != "default" {
        return Err("OpenELB reads only the BgpConf named default: this one did nothing, and is not converted".into());
    }
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let f = Fields::new(&spec, "spec.");
    let (router_key, port_key) = if v2 {
        ("routerId", "listenPort")
    } else {
        ("routerID", "port")
    };
    let known: &[&str] = if v2 {
        &["as", "asPerRack", "routerId", "listenPort", "gracefulRestart"]
    } else {
        &["as", "routerID", "port"]
    };
    let hints = [
        (
            "policy",
            ": GoBGP policies have no Herald equivalent; communities and LOCAL_PREF go on the Eip (spec.bgp)",
        ),
        (
            "useMultiplePaths",
            ": each Herald node announces itself; the router's multipath spreads the traffic",
        ),
    ];
    if let Some(map) = spec.as_object() {
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            let hint = hints.iter().find(|(k, _)| k == key).map_or("", |(_, h)| *h);
            out.finding(
                subject,
                Kind::Dropped,
                format!("spec.{key} has no Herald equivalent{hint}"),
            );
        }
    }
    let mut conf = BgpConfSpec {
        asn: f.u32("as")?.ok_or("spec.as is missing")?,
        router_id: f.str(router_key)?.filter(|r| !r.is_empty()),
        graceful_restart: None,
        listen_port: listen_port(&f, port_key)?,
        overrides: Vec::new(),
    };
    if let Some(port) = conf.listen_port {
        out.finding(
            subject,
            Kind::Differs,
            format!(
                "OpenELB listened on port {port} for every router; Herald connects to each router, and listens (on \
                 listenPort {port}, kept) only for BgpPeers with passive: true"
            ),
        );
    }
    if let Some(racks) = f.get("asPerRack").and_then(Value::as_object) {
        for (rack, asn) in racks {
            let asn = asn
                .as_u64()
                .and_then(|a| u32::try_from(a).ok())
                .ok_or(format!("spec.asPerRack.{rack}: not an AS number"))?;
            conf.overrides.push(BgpConfOverride {
                node_selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(RACK_LABEL.to_string(), rack.clone())])),
                    match_expressions: None,
                },
                asn: Some(asn),
                router_id: None,
            });
        }
    }
    if let Some(id) = conf.router_id.take() {
        if conf.overrides.is_empty() {
            conf.router_id = Some(id.clone());
            out.finding(
                subject,
                Kind::Differs,
                format!(
                    "{router_key} {id} is every node's BGP identifier, as in OpenELB; Herald's default gives each \
                     node its own (its first IPv4 InternalIP): consider removing it"
                ),
            );
        } else {
            out.finding(
                subject,
                Kind::Differs,
                format!(
                    "{router_key} {id} left out: with asPerRack, OpenELB gave racked nodes their own IP as identifier, \
                     as Herald does by default"
                ),
            );
        }
    }
    if let Some(gr) = spec.get("gracefulRestart") {
        let g = Fields::new(gr, "spec.gracefulRestart.");
        unknown_fields(
            gr,
            &["enabled", "restartTime"],
            "spec.gracefulRestart.",
            subject,
            "",
            out,
        );
        conf.graceful_restart = Some(herald_api::bgp::GracefulRestart {
            enabled: g.bool("enabled")?.unwrap_or(false),
            restart_time: g.u64("restartTime")?.map_or(120, |t| t.clamp(1, 4095) as u16),
        });
    }
    if out.bgp_conf.is_some() {
        out.finding(
            subject,
            Kind::Differs,
            "a second BgpConf: Herald has one, named default; this one was kept",
        );
    }
    out.bgp_conf = Some(BgpConf::new("default", conf));
    Ok(())
}

fn peer(
    object: &Value,
    subject: &str,
    v2: bool,
    options: &Options,
    out: &mut Migration,
    restart_times: &mut Vec<(String, u64)>,
) -> Result<(), String> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let conf_key = if v2 { "conf" } else { "config" };
    let known: &[&str] = if v2 {
        &[
            conf_key,
            "transport",
            "timers",
            "ebgpMultihop",
            "afiSafis",
            "nodeSelector",
            "gracefulRestart",
        ]
    } else {
        &[conf_key, "transport", "addPaths", "usingPortForward"]
    };
    unknown_fields(&spec, known, "spec.", subject, "", out);
    let conf = spec.get(conf_key).cloned().unwrap_or(Value::Null);
    let cpath = format!("spec.{conf_key}.");
    let c = Fields::new(&conf, &cpath);
    unknown_fields(
        &conf,
        &["peerAs", "neighborAddress", "authPassword", "localAs", "adminDown"],
        &cpath,
        subject,
        "",
        out,
    );
    if c.bool("adminDown")?.unwrap_or(false) {
        return Err(format!(
            "{cpath}adminDown: the session was shut down in OpenELB, and Herald's BgpPeer would bring it up: not \
             converted"
        ));
    }
    let address = c
        .str("neighborAddress")?
        .ok_or(format!("{cpath}neighborAddress is missing"))?;
    let mut peer = BgpPeerSpec {
        asn: c.u32("peerAs")?.ok_or(format!("{cpath}peerAs is missing"))?,
        local_asn: c.u32("localAs")?.filter(|a| *a > 0),
        port: 179,
        source_address: None,
        hold_time: None,
        keepalive_time: None,
        connect_retry_time: None,
        password_secret_ref: None,
        ebgp_multihop: None,
        // OpenELB's default: the neighbor address's family.
        families: families_of(&address, false),
        graceful_restart: None,
        passive: false,
        node_selector: None,
        bfd: None,
        address,
    };
    if let Some(transport) = spec.get("transport") {
        let t = Fields::new(transport, "spec.transport.");
        unknown_fields(
            transport,
            &["passiveMode", "remotePort"],
            "spec.transport.",
            subject,
            "",
            out,
        );
        if t.bool("passiveMode")?.unwrap_or(false) {
            peer.passive = true;
            out.finding(
                subject,
                Kind::Differs,
                "transport.passiveMode: OpenELB waited for the router to connect; Herald accepts the router's \
                 connection (passive: true) and also connects out",
            );
        }
        if let Some(p) = t.u64("remotePort")?.filter(|p| *p > 0) {
            peer.port = u16::try_from(p).map_err(|_| format!("spec.transport.remotePort: {p} is not a port"))?;
        }
    }
    if let Some(timers) = spec.pointer("/timers/config") {
        let t = Fields::new(timers, "spec.timers.config.");
        unknown_fields(
            timers,
            &["holdTime", "keepaliveInterval", "connectRetry"],
            "spec.timers.config.",
            subject,
            "",
            out,
        );
        // GoBGP reads 0 as its default (hold 90, keepalive a third of it, retry 120).
        peer.hold_time = t.u32("holdTime")?.filter(|t| *t > 0);
        peer.keepalive_time = t.u32("keepaliveInterval")?.filter(|t| *t > 0);
        peer.connect_retry_time = t.u32("connectRetry")?.filter(|t| *t > 0).map(|r| r.min(3600));
    }
    if let Some(hop) = spec
        .pointer("/ebgpMultihop/config")
        .or_else(|| spec.get("ebgpMultihop"))
    {
        let h = Fields::new(hop, "spec.ebgpMultihop.");
        if h.bool("enabled")?.unwrap_or(false) {
            // GoBGP: a TTL of 0 with multihop on is 255.
            let ttl = h.u64("multihopTtl")?.filter(|t| *t > 0).unwrap_or(255).min(255);
            peer.ebgp_multihop = Some(ttl as u8);
        }
    }
    if let Some(gr) = spec.get("gracefulRestart") {
        let g = Fields::new(gr, "spec.gracefulRestart.");
        peer.graceful_restart = g.bool("enabled")?;
        if let Some(t) = g.u64("restartTime")? {
            restart_times.push((subject.to_string(), t));
        }
    }
    if let Some(families) = spec.get("afiSafis").and_then(Value::as_array) {
        let mut list = Vec::new();
        for (i, entry) in families.iter().enumerate() {
            let afi = entry.pointer("/config/family/afi").and_then(Value::as_str);
            let safi = entry
                .pointer("/config/family/safi")
                .and_then(Value::as_str)
                .unwrap_or("SAFI_UNICAST");
            if entry.pointer("/config/enabled").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            match (afi, safi) {
                (Some("AFI_IP"), "SAFI_UNICAST") => list.push(AddressFamily::Ipv4),
                (Some("AFI_IP6"), "SAFI_UNICAST") => list.push(AddressFamily::Ipv6),
                // An entry without a family is the neighbor's.
                (None, _) => list.extend(families_of(&peer.address, false)),
                (Some(afi), safi) => out.finding(
                    subject,
                    Kind::Dropped,
                    format!("spec.afiSafis[{i}]: {afi}/{safi} is not a family Herald announces"),
                ),
            }
        }
        list.dedup();
        if !list.is_empty() {
            peer.families = list;
        }
        if families.iter().any(|e| e.get("addPaths").is_some()) {
            out.finding(
                subject,
                Kind::Dropped,
                "spec.afiSafis[].addPaths: Herald sends one path per prefix, the node's own",
            );
        }
    }
    if spec.get("addPaths").is_some() {
        out.finding(
            subject,
            Kind::Dropped,
            "spec.addPaths: Herald sends one path per prefix, the node's own",
        );
    }
    if spec.get("usingPortForward").and_then(Value::as_bool) == Some(true) {
        out.finding(
            subject,
            Kind::Differs,
            "spec.usingPortForward (routers connecting to port 179, forwarded to OpenELB's port): make the BgpPeer \
             passive with BgpConf listenPort 179 (the Helm chart's bgp.passive=true grants the capability)",
        );
    }
    let f = Fields::new(&spec, "spec.");
    peer.node_selector = f.selector("nodeSelector")?;
    let peer_name = name(object).to_string();
    if let Some(password) = c.str("authPassword")?.filter(|p| !p.is_empty()) {
        peer.password_secret_ref = Some(password_secret(out, options, &peer_name, subject, &password));
    }
    out.peers.push(BgpPeer::new(&peer_name, peer));
    Ok(())
}

/// OpenELB's namespace binding limits only the addresses it hands out unasked: a Service of any namespace may name
/// the Eip or ask for one of its IPs. Herald's limits every use, so the namespaces of the Services holding an Eip's
/// addresses are added to its `namespaces` (else they would lose them).
pub(super) fn widen_bindings(
    out: &mut Migration,
    services: &[Value],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) {
    let mut added: Vec<(String, String)> = Vec::new();
    for eip in &mut out.eips {
        let spec = &mut eip.spec;
        if spec.namespaces.is_empty() && spec.namespace_selector.is_none() {
            continue;
        }
        let ranges: Vec<herald_ipam::AddrRange> = spec
            .addresses
            .iter()
            .filter_map(|a| herald_ipam::parse_entry(a).ok())
            .collect();
        for svc in services {
            let ns = svc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            // Not a Service of any cluster: its namespace cannot exist, and an Eip listing it would be refused.
            if !crate::adapter::is_namespace_name_possible(ns) {
                continue;
            }
            let holds = svc
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| i.get("ip")?.as_str()?.parse::<std::net::IpAddr>().ok())
                .any(|ip| ranges.iter().any(|r| r.contains(ip)));
            let labels = namespaces.get(ns).cloned().unwrap_or_default();
            let selected = spec
                .namespace_selector
                .as_ref()
                .is_some_and(|s| super::matches(s, &labels));
            if holds && !selected && !spec.namespaces.iter().any(|n| n == ns) {
                spec.namespaces.push(ns.to_string());
                added.push((eip.metadata.name.clone().unwrap_or_default(), ns.to_string()));
            }
        }
    }
    for (eip, ns) in added {
        out.finding(
            &format!("Eip {eip}"),
            Kind::Differs,
            format!(
                "namespace {ns} added to spec.namespaces: its Services hold addresses of this Eip (OpenELB lets any \
                 namespace name an Eip or ask for its IPs; Herald's namespaces limit every use). New Services of {ns} \
                 may now get its addresses unasked too"
            ),
        );
    }
}
