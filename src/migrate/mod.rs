//! `herald migrate`: MetalLB's or OpenELB's configuration as Herald's Eips, BgpConf and BgpPeers, with a report of
//! what has no Herald equivalent, what the user must do, and which Services keep their IPs.
//!
//! The conversion is pure: objects in (as JSON values, from files or read through the API by [`cluster`]), objects
//! and findings out. Which Services keep their IPs is decided by Herald's own allocator ([`services`]), fed with the
//! migrated Eips exactly as an agent would be, so the report cannot promise what the agent would not do.

pub mod addresses;
pub mod cluster;
mod duration;
mod metallb;
mod openelb;
pub mod services;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use herald_api::{BgpConf, BgpPeer, Eip, text};
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

pub use services::{Outcome, ServiceCheck};

/// The project migrated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// MetalLB: its CRDs (metallb.io) or its legacy ConfigMap (`config` in `metallb-system`).
    Metallb,
    /// OpenELB (formerly PorterLB): network.kubesphere.io v1alpha1 and v1alpha2.
    Openelb,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Metallb => "metallb",
            Source::Openelb => "openelb",
        })
    }
}

/// What the conversion needs besides the objects.
#[derive(Debug, Clone)]
pub struct Options {
    /// Herald's namespace: where the Secrets its BgpPeers refer to must live.
    pub namespace: String,
    /// Whether the agents run with `--default-class` (they take Services without a `loadBalancerClass`).
    pub default_class: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: "herald-system".into(),
            default_class: true,
        }
    }
}

/// What a finding asks of the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Something to do before or after applying the output.
    Action,
    /// A setting Herald has no equivalent for: it is left out.
    Dropped,
    /// Converted, but Herald behaves differently.
    Differs,
    /// An input object that could not be read, or is not the source project's: skipped.
    Skipped,
}

impl Kind {
    fn heading(self) -> &'static str {
        match self {
            Kind::Action => "To do",
            Kind::Dropped => "Settings without a Herald equivalent (left out)",
            Kind::Differs => "Converted, with a difference in behaviour",
            Kind::Skipped => "Input skipped",
        }
    }
}

/// One thing the report says about an input object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is about, e.g. `IPAddressPool metallb-system/production` or `ConfigMap metallb-system/config:
    /// address-pools[0]`.
    pub subject: String,
    /// What it asks of the user.
    pub kind: Kind,
    /// The finding, naming the field.
    pub message: String,
}

/// The converted configuration and the report.
#[derive(Debug, Default)]
pub struct Migration {
    /// Pools, named as the source's pools (Services' pool annotations keep working).
    pub eips: Vec<Eip>,
    /// The cluster-wide BGP settings, when the source had BGP peers.
    pub bgp_conf: Option<BgpConf>,
    /// BGP routers.
    pub peers: Vec<BgpPeer>,
    /// Secrets holding passwords the source kept in plain text, in Herald's namespace.
    pub secrets: Vec<Secret>,
    /// Everything the user should know.
    pub findings: Vec<Finding>,
    /// Each LoadBalancer Service of the input: whether Herald keeps its IPs.
    pub services: Vec<ServiceCheck>,
    /// Objects read.
    pub read: usize,
}

/// The objects of `inputs` (YAML or JSON documents; `List` objects are flattened) converted from `source`.
pub fn migrate(source: Source, inputs: Vec<Value>, options: &Options) -> Migration {
    let objects = flatten(inputs);
    let mut out = Migration {
        read: objects.len(),
        ..Default::default()
    };
    let mut services = Vec::new();
    let mut namespaces = BTreeMap::new();
    let mut rest = Vec::new();
    for object in objects {
        match (api_version(&object), kind(&object)) {
            ("v1", "Service") => services.push(object),
            ("v1", "Namespace") => {
                namespaces.insert(name(&object).to_string(), labels(&object));
            }
            _ => rest.push(object),
        }
    }
    match source {
        Source::Metallb => metallb::convert(rest, options, &mut out),
        Source::Openelb => {
            openelb::convert(rest, options, &mut out);
            openelb::widen_bindings(&mut out, &services, &namespaces);
        }
    }
    // By name, whatever the order of the input (files, or the API's lists).
    out.eips.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out.peers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out.secrets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // An Eip Herald would refuse is reported and not written (one of multicast addresses only, say).
    let findings = &mut out.findings;
    out.eips.retain(|eip| match services::pool(eip) {
        Ok(_) => true,
        Err(e) => {
            findings.push(Finding {
                subject: format!("Eip {}", eip.metadata.name.as_deref().unwrap_or_default()),
                kind: Kind::Skipped,
                message: format!("Herald would refuse this Eip: {e}"),
            });
            false
        }
    });
    out.services = services::check(source, &services, &namespaces, &out.eips, options, &mut out.findings);
    out
}

/// Documents of `text` (YAML, several separated by `---`, or JSON), each a JSON value. `origin` names the input in
/// the error.
pub fn parse_documents(origin: &str, text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| format!("{origin}: not YAML or JSON: {e}"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The output as YAML documents, ready for `kubectl apply -f`, with the report's summary on top as comments.
pub fn render_yaml(m: &Migration, source: Source) -> Result<String, String> {
    let mut out = format!(
        "# Herald configuration migrated from {source} by `herald migrate` ({}).\n# Read the report before \
         applying: it lists what has no Herald equivalent and what to do.\n",
        m.summary()
    );
    let mut push = |value: Value| -> Result<(), String> {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&value).map_err(|e| format!("cannot render YAML: {e}"))?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        Ok(())
    };
    for secret in &m.secrets {
        push(to_value(secret)?)?;
    }
    if let Some(conf) = &m.bgp_conf {
        push(to_value(conf)?)?;
    }
    for peer in &m.peers {
        push(to_value(peer)?)?;
    }
    for eip in &m.eips {
        push(to_value(eip)?)?;
    }
    Ok(out)
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, String> {
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    Ok(value)
}

/// The report, as Markdown: findings by kind, then the Services.
pub fn render_report(m: &Migration, source: Source) -> String {
    let mut out = format!("# herald migrate --from {source}: {}\n", m.summary());
    let mut by_kind: BTreeMap<Kind, Vec<&Finding>> = BTreeMap::new();
    for f in &m.findings {
        by_kind.entry(f.kind).or_default().push(f);
    }
    for (kind, findings) in by_kind {
        out.push_str(&format!("\n## {}\n\n", kind.heading()));
        for f in findings {
            out.push_str(&format!("- {}: {}\n", f.subject, f.message));
        }
    }
    if !m.services.is_empty() {
        let keep = m
            .services
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Keeps { .. }))
            .count();
        out.push_str(&format!(
            "\n## Services ({keep} of {} keep their IPs under Herald)\n\n",
            m.services.len()
        ));
        for s in &m.services {
            out.push_str(&format!("- {s}\n"));
        }
    }
    out
}

impl Migration {
    fn summary(&self) -> String {
        let n = |count: usize, one: &str| format!("{count} {one}{}", if count == 1 { "" } else { "s" });
        format!(
            "{} read; {}, {}, {}, {}; {} in the report",
            n(self.read, "object"),
            n(self.eips.len(), "Eip"),
            n(usize::from(self.bgp_conf.is_some()), "BgpConf"),
            n(self.peers.len(), "BgpPeer"),
            n(self.secrets.len(), "Secret"),
            n(self.findings.len(), "finding")
        )
    }

    fn finding(&mut self, subject: &str, kind: Kind, message: impl Into<String>) {
        self.findings.push(Finding {
            subject: subject.to_string(),
            kind,
            message: message.into(),
        });
    }
}

/// A password the source kept in plain text, as a Secret in Herald's namespace (added to the output); the
/// reference for the BgpPeer.
fn password_secret(
    out: &mut Migration,
    options: &Options,
    peer: &str,
    subject: &str,
    password: &str,
) -> herald_api::bgp::SecretKeyRef {
    let secret = format!("herald-bgp-{peer}");
    out.secrets.push(Secret {
        metadata: metav1::ObjectMeta {
            name: Some(secret.clone()),
            namespace: Some(options.namespace.clone()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/basic-auth".into()),
        string_data: Some(BTreeMap::from([("password".to_string(), password.to_string())])),
        ..Default::default()
    });
    out.finding(
        subject,
        Kind::Action,
        format!(
            "its password, in plain text there, is now in Secret {}/{secret} in the output: keep the output as \
             secret as the input",
            options.namespace
        ),
    );
    herald_api::bgp::SecretKeyRef {
        name: secret,
        key: "password".into(),
    }
}

/// The families of a session to `address`: its own, or both when the source carried both on it. An address that
/// cannot be read gets both (the API server refuses the BgpPeer anyway, naming the address).
fn families_of(address: &str, both: bool) -> Vec<herald_api::bgp::AddressFamily> {
    use herald_api::bgp::AddressFamily::{Ipv4, Ipv6};
    match address.trim().parse::<std::net::IpAddr>() {
        Ok(ip) if !both && ip.is_ipv4() => vec![Ipv4],
        Ok(_) if !both => vec![Ipv6],
        _ => vec![Ipv4, Ipv6],
    }
}

/// `List` objects (as `kubectl get -o yaml` writes them) replaced by their items.
fn flatten(inputs: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for value in inputs {
        if kind(&value).ends_with("List")
            && let Some(items) = value.get("items").and_then(Value::as_array)
        {
            out.extend(flatten(items.clone()));
        } else {
            out.push(value);
        }
    }
    out
}

fn api_version(object: &Value) -> &str {
    object.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

fn kind(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn name(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

fn namespace(object: &Value) -> &str {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `Kind namespace/name` (or `Kind name`), how the report names an object.
fn subject(object: &Value) -> String {
    match namespace(object) {
        "" => format!("{} {}", kind(object), name(object)),
        ns => format!("{} {ns}/{}", kind(object), name(object)),
    }
}

/// The fields of `map` not in `known`, each reported as dropped with `why`, under `path` (e.g. `spec.`).
fn unknown_fields(map: &Value, known: &[&str], path: &str, subject: &str, why: &str, out: &mut Migration) {
    let Some(map) = map.as_object() else { return };
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        out.finding(
            subject,
            Kind::Dropped,
            format!("{path}{} has no Herald equivalent{why}", text::quote(key)),
        );
    }
}

/// A field read from a JSON object, with the error naming it.
struct Fields<'a> {
    map: &'a Value,
    path: &'a str,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Value, path: &'a str) -> Self {
        Self { map, path }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            // YAML writes a bare number or boolean where a string was meant (`password: 1234`).
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!("{}{key}: not a string: {other}", self.path)),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.trim().to_string()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(format!("{}{key}[{i}]: not a string: {other}", self.path)),
                })
                .collect(),
            Some(Value::String(s)) => Ok(vec![s.trim().to_string()]),
            Some(other) => Err(format!("{}{key}: not a list: {other}", self.path)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => Err(format!("{}{key}: not true or false: {other}", self.path)),
        }
    }

    fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(other) => Err(format!("{}{key}: not a non-negative whole number: {other}", self.path)),
        }
    }

    fn i64(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(other) => Err(format!("{}{key}: not a whole number: {other}", self.path)),
        }
    }

    fn u32(&self, key: &str) -> Result<Option<u32>, String> {
        self.u64(key)?
            .map(|v| u32::try_from(v).map_err(|_| format!("{}{key}: {v} is above {}", self.path, u32::MAX)))
            .transpose()
    }

    /// Seconds of a Go duration (`90s`, `1m30s`) or a bare number of seconds.
    fn seconds(&self, key: &str) -> Result<Option<u32>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| format!("{}{key}: not a number of seconds: {n}", self.path)),
            Some(Value::String(s)) => duration::seconds(s)
                .map(Some)
                .map_err(|e| format!("{}{key}: {e}", self.path)),
            Some(other) => Err(format!("{}{key}: not a duration: {other}", self.path)),
        }
    }

    fn selector(&self, key: &str) -> Result<Option<metav1::LabelSelector>, String> {
        self.get(key)
            .map(|v| selector(v).map_err(|e| format!("{}{key}: {e}", self.path)))
            .transpose()
    }

    fn selectors(&self, key: &str) -> Result<Vec<metav1::LabelSelector>, String> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| selector(v).map_err(|e| format!("{}{key}[{i}]: {e}", self.path)))
                .collect(),
            Some(other) => Err(format!("{}{key}: not a list of selectors: {other}", self.path)),
        }
    }
}

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

/// A label selector, in the API's spelling (`matchLabels`) or the MetalLB ConfigMap's (`match-labels`); checked as
/// Herald's allocator reads selectors.
fn selector(value: &Value) -> Result<metav1::LabelSelector, String> {
    let mut map = value.clone();
    if let Some(obj) = map.as_object_mut() {
        for (from, to) in [
            ("match-labels", "matchLabels"),
            ("match-expressions", "matchExpressions"),
        ] {
            if let Some(v) = obj.remove(from) {
                obj.insert(to.to_string(), v);
            }
        }
    }
    let sel: metav1::LabelSelector = serde_json::from_value(map).map_err(|e| format!("not a label selector: {e}"))?;
    crate::adapter::label_selector(&sel)?;
    Ok(sel)
}

/// Whether `sel` matches `labels`.
fn matches(sel: &metav1::LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    crate::adapter::label_selector(sel).is_ok_and(|s| s.matches(labels))
}

fn labels(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}
