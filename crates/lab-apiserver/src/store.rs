//! The object store: every object as JSON, one global monotonic `resourceVersion`, the write rules of the real
//! API server (preconditions, status subresource, generation, finalizers, CRD registration) and a bounded history
//! of watch events. Pure state and decisions: the HTTP shell in `http` holds it behind a mutex.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast};

use crate::patch::{self, PatchKind};
use crate::registry::{self, Conversion, NameRule, Registry, ResourceDef, ResourceId};
use crate::selector::Selectors;
use crate::status::{ApiError, FieldError, Target, go_quote};
use crate::strategy;

/// `ADDED`, `MODIFIED` or `DELETED`, as in a watch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One committed change. `previous` is the object before a modification, so a filtered watch can tell an object
/// entering its selection (ADDED) from one leaving it (DELETED).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub rv: u64,
    pub resource: ResourceId,
    pub namespace: String,
    pub object: Value,
    pub previous: Option<Value>,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// The object is gone; this is its last state.
    Removed(Value),
    /// The object has finalizers: it now has a `deletionTimestamp` and stays until they are removed.
    Pending(Value),
}

/// `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub resource_version: u64,
    /// Token for the next page (`namespace/name` of the last item), when `limit` cut the list.
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// The start of a watch: the events to send first, then the live feed.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// Namespaces every cluster has.
pub const INITIAL_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

type Key = (String, String);

pub struct Store {
    registry: Registry,
    objects: HashMap<ResourceId, BTreeMap<Key, Value>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Watches from a resourceVersion below this get 410 Gone: events after it are no longer all kept.
    compacted: u64,
    events: broadcast::Sender<Arc<Event>>,
    changed: Arc<Notify>,
    /// The cluster IPs of every stored Service, so allocating one is a lookup, not a scan of every Service.
    cluster_ips: HashSet<String>,
    next_cluster_ip: u32,
    next_cluster_ip6: u32,
    next_node_port: u16,
}

fn now_string(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn new_uid() -> String {
    let v: u128 = rand::random();
    // Version 4, variant 1 bits, as RFC 9562 §5.4 lays out.
    let v = (v & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The 5-character suffix `generateName` gets (same alphabet as the real server: no vowels, no confusables).
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn is_label(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && (if first_alpha {
            b[0].is_ascii_lowercase()
        } else {
            b[0].is_ascii_alphanumeric()
        })
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `RegexError` of k8s.io/apimachinery/pkg/util/validation.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{message} (e.g. {}regex used for validation is '{format}')",
        examples.join(" or ")
    )
}

const LABEL_1123: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

/// `IsDNS1123Subdomain`'s problems, joined as the real server lists them.
pub fn subdomain_problem(name: &str) -> Option<String> {
    let problems = name_problems(NameRule::Subdomain, name);
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// `IsDNS1123Subdomain`, `IsDNS1123Label`, `IsDNS1035Label`, with the real server's messages.
fn name_problems(rule: NameRule, name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let subdomain_ok = name.split('.').all(|part| is_label(part, false));
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                problems.push("must be no more than 253 characters".to_string());
            }
            if !subdomain_ok {
                problems.push(regex_error(
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
                     and must start and end with an alphanumeric character",
                    &format!("{LABEL_1123}(\\.{LABEL_1123})*"),
                    &["example.com"],
                ));
            }
        }
        NameRule::Label => {
            if name.len() > 63 {
                problems.push("must be no more than 63 characters".to_string());
            }
            if !is_label(name, false) {
                problems.push(if subdomain_ok {
                    "must not contain dots".to_string()
                } else {
                    regex_error(
                        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and \
                         must start and end with an alphanumeric character",
                        LABEL_1123,
                        &["my-name", "123-abc"],
                    )
                });
            }
        }
        NameRule::Label1035 => {
            if name.len() > 63 {
                problems.push("must be no more than 63 characters".to_string());
            }
            if !is_label(name, true) {
                problems.push(regex_error(
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an \
                     alphabetic character, and end with an alphanumeric character",
                    "[a-z]([-a-z0-9]*[a-z0-9])?",
                    &["my-name", "abc-123"],
                ));
            }
        }
    }
    problems
}

fn meta(object: &Value) -> &Value {
    &object["metadata"]
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        // Unreachable: metadata was made an object above, and `object` is an object (callers check).
        _ => unreachable!("metadata is an object"),
    }
}

fn finalizers(object: &Value) -> Vec<String> {
    meta(object)["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The part of an object whose change bumps `metadata.generation`: everything but metadata, and status for
/// resources with a status subresource.
fn generation_part(def: &ResourceDef, object: &Value) -> Value {
    let mut part = object.clone();
    if let Some(map) = part.as_object_mut() {
        for field in ["metadata", "apiVersion", "kind"] {
            map.remove(field);
        }
        if def.status_subresource {
            map.remove("status");
        }
    }
    part
}

/// A stored object as served at `version` (`apiVersion` and `kind`, and the conversion of resources stored as
/// another, events.k8s.io Events as core ones).
pub fn for_version(object: Value, def: &ResourceDef, version: &str) -> Value {
    match def.conversion {
        Conversion::None => stamp(object, def, version),
        Conversion::CoreEvents | Conversion::EventsV1 => strategy::event_for(def, object),
    }
}

fn stamp(mut object: Value, def: &ResourceDef, version: &str) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".to_string(), Value::String(def.api_version(version)));
        map.insert("kind".to_string(), Value::String(def.kind.clone()));
    }
    object
}

/// An object a client wrote at `version`, in the form it is stored in.
fn to_storage(object: Value, def: &ResourceDef, version: &str) -> Value {
    match def.conversion {
        Conversion::EventsV1 => strategy::event_to_core(object),
        Conversion::None | Conversion::CoreEvents => stamp(object, def, version),
    }
}

impl Store {
    /// A store with the initial namespaces, keeping `history_limit` events for watch resumption and
    /// buffering `channel_capacity` events per watcher.
    pub fn new(history_limit: usize, channel_capacity: usize, now: Timestamp) -> Self {
        let mut store = Self::empty(history_limit, channel_capacity);
        let namespaces = store.registry.lookup("", "v1", "namespaces").cloned();
        if let Some(def) = namespaces {
            for name in INITIAL_NAMESPACES {
                let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
                // Cannot fail: valid names in an empty store.
                let _ = store.create(&def, "v1", None, body, now);
            }
        }
        store
    }

    fn empty(history_limit: usize, channel_capacity: usize) -> Self {
        let (events, _) = broadcast::channel(channel_capacity.max(1));
        Self {
            registry: Registry::default(),
            objects: HashMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 1,
            events,
            changed: Arc::new(Notify::new()),
            cluster_ips: HashSet::new(),
            next_cluster_ip: 1,
            next_cluster_ip6: 1,
            next_node_port: 30000,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Notified after every committed change (for the state file writer).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    fn commit(&mut self, kind: EventKind, def: &ResourceDef, mut object: Value, previous: Option<Value>) -> Value {
        self.rv += 1;
        meta_mut(&mut object).insert("resourceVersion".to_string(), Value::String(self.rv.to_string()));
        let namespace = meta_str(&object, "namespace").to_string();
        let key = (namespace.clone(), meta_str(&object, "name").to_string());
        if is_services(def) {
            for ip in previous.iter().flat_map(cluster_ips) {
                self.cluster_ips.remove(ip);
            }
            if kind != EventKind::Deleted {
                self.cluster_ips.extend(cluster_ips(&object).map(str::to_string));
            }
        }
        let objects = self.objects.entry(def.storage.clone()).or_default();
        if kind == EventKind::Deleted {
            objects.remove(&key);
        } else {
            objects.insert(key, object.clone());
        }
        let event = Arc::new(Event {
            kind,
            rv: self.rv,
            resource: def.storage.clone(),
            namespace,
            object: object.clone(),
            previous,
        });
        if self.history.len() >= self.history_limit
            && let Some(dropped) = self.history.pop_front()
        {
            self.compacted = dropped.rv;
        }
        self.history.push_back(event.clone());
        // No receivers is fine; a lagging receiver notices on its next recv.
        let _ = self.events.send(event);
        self.changed.notify_one();
        object
    }

    fn target<'a>(def: &'a ResourceDef, name: &'a str) -> Target<'a> {
        Target {
            group: &def.group,
            plural: &def.plural,
            name,
        }
    }

    fn lookup(&self, def: &ResourceDef, namespace: &str, name: &str) -> Result<&Value, ApiError> {
        self.objects
            .get(&def.storage)
            .and_then(|objects| objects.get(&(namespace.to_string(), name.to_string())))
            .ok_or_else(|| ApiError::not_found(Self::target(def, name)))
    }

    pub fn get(&self, def: &ResourceDef, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.lookup(def, namespace.unwrap_or_default(), name).cloned()
    }

    /// Objects of `def` (in `namespace`, or all), sorted by namespace and name, from after `continue_token`.
    pub fn list(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        selectors: &Selectors,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let after = match continue_token {
            None | Some("") => None,
            Some(token) => Some(
                token
                    .split_once('/')
                    .map(|(ns, name)| (ns.to_string(), name.to_string()))
                    .ok_or_else(|| ApiError::bad_request(format!("invalid continue token \"{token}\"")))?,
            ),
        };
        let mut matching = self
            .objects
            .get(&def.storage)
            .into_iter()
            .flatten()
            .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
            .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
            .filter(|(_, object)| selectors.matches(object));
        let mut items = Vec::new();
        let mut last_key = None;
        let mut cut = false;
        for (key, object) in matching.by_ref() {
            if limit.is_some_and(|limit| limit > 0 && items.len() == limit) {
                cut = true;
                break;
            }
            items.push(object.clone());
            last_key = Some(key);
        }
        let (continue_token, remaining) = match (cut, last_key) {
            // The loop consumed one matching object past the page before it stopped.
            // The real server counts the rest only when no selector filters it.
            (true, Some((ns, name))) => (
                Some(format!("{ns}/{name}")),
                selectors.is_empty().then(|| matching.count() + 1),
            ),
            _ => (None, None),
        };
        Ok(ListPage {
            items,
            resource_version: self.rv,
            continue_token,
            remaining,
        })
    }

    fn check_type(def: &ResourceDef, version: &str, object: &mut Value) -> Result<(), ApiError> {
        let Some(map) = object.as_object_mut() else {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        };
        let expected = def.api_version(version);
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {}
            Some(v) if v == expected => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({other}) does not match the expected API version ({expected})"
                )));
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {}
            Some(k) if k == def.kind => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({other}) does not match the expected kind ({})",
                    def.kind
                )));
            }
        }
        if map.get("metadata").is_some_and(|m| !m.is_object() && !m.is_null()) {
            return Err(ApiError::bad_request("metadata must be a JSON object"));
        }
        Ok(())
    }

    /// POST: creates the object in `namespace` (for namespaced resources).
    pub fn create(
        &mut self,
        def: &ResourceDef,
        version: &str,
        namespace: Option<&str>,
        mut object: Value,
        now: Timestamp,
    ) -> Result<Value, ApiError> {
        Self::check_type(def, version, &mut object)?;
        object = to_storage(object, def, version);
        let meta = meta_mut(&mut object);
        let mut name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty()
            && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
            && !prefix.is_empty()
        {
            name = format!("{prefix}{}", name_suffix());
            meta.insert("name".to_string(), Value::String(name.clone()));
        }
        let target = Self::target(def, &name);
        if name.is_empty() {
            return Err(ApiError::invalid(
                "",
                &def.kind,
                "",
                vec![FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        let problems = name_problems(def.name_rule, &name);
        if !problems.is_empty() {
            let errors = problems
                .iter()
                .map(|p| FieldError::invalid("metadata.name", &go_quote(&name), p))
                .collect();
            return Err(ApiError::invalid(&def.group, &def.kind, &name, errors));
        }
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let namespace = if def.namespaced {
            let path_ns = namespace.unwrap_or_default();
            if !body_ns.is_empty() && body_ns != path_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".to_string(), Value::String(path_ns.to_string()));
            path_ns.to_string()
        } else {
            meta.remove("namespace");
            String::new()
        };
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.insert("uid".to_string(), Value::String(new_uid()));
        meta.insert("creationTimestamp".to_string(), Value::String(now_string(now)));
        if def.generation {
            meta.insert("generation".to_string(), json!(1));
        } else {
            meta.remove("generation");
        }
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(field);
        }
        if def.namespaced {
            let namespaces = self.registry.lookup("", "v1", "namespaces").cloned();
            if let Some(ns_def) = namespaces {
                self.lookup(&ns_def, "", &namespace)?;
            }
        }
        if self.lookup(def, &namespace, &name).is_ok() {
            return Err(ApiError::already_exists(target));
        }
        if def.reset_status_on_create
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        self.create_defaults(def, &mut object);
        strategy::prepare(def, version, None, &mut object, Subresource::Main)?;
        self.allocate(def, &mut object);
        if def.is_crd() {
            let resource = self.crd_resource(&object, None)?;
            set_crd_status(&mut object, &resource, now);
            self.registry.register_crd(resource);
        }
        Ok(self.commit(EventKind::Added, def, object, None))
    }

    /// What the real server's create strategies set whatever the client sent.
    fn create_defaults(&mut self, def: &ResourceDef, object: &mut Value) {
        match (def.group.as_str(), def.plural.as_str()) {
            ("", "namespaces") => {
                if !object["spec"].is_object() {
                    object["spec"] = json!({});
                }
                object["spec"]["finalizers"] = json!(["kubernetes"]);
                object["status"] = json!({"phase": "Active"});
            }
            ("", "services") if object["status"].is_null() => {
                object["status"] = json!({"loadBalancer": {}});
            }
            _ => {}
        }
    }

    /// Cluster IPs (one per `ipFamilies` entry) and node ports a Service needs and has not got, from the lab's
    /// dual-stack service CIDRs (10.96.0.0/12, fd00:10:96::/108) and the 30000-32767 node port range.
    fn allocate(&mut self, def: &ResourceDef, object: &mut Value) {
        if !is_services(def) {
            return;
        }
        let spec = &object["spec"];
        if spec["type"] != "ExternalName" && spec["clusterIP"] != "None" {
            let families: Vec<String> = spec["ipFamilies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            let mut ips: Vec<Value> = spec["clusterIPs"].as_array().cloned().unwrap_or_default();
            if ips.is_empty()
                && let Some(ip) = spec["clusterIP"].as_str().filter(|ip| !ip.is_empty())
            {
                ips.push(json!(ip));
            }
            for family in families.iter().skip(ips.len()) {
                ips.push(json!(self.allocate_cluster_ip(family == "IPv6")));
            }
            if let Some(first) = ips.first().cloned() {
                object["spec"]["clusterIP"] = first;
                object["spec"]["clusterIPs"] = json!(ips);
            }
        } else if object["spec"]["clusterIP"] == "None" {
            object["spec"]["clusterIPs"] = json!(["None"]);
        }
        if strategy::needs_node_ports(&object["spec"]) {
            let used = self.used_node_ports(def);
            for port in object["spec"]["ports"].as_array_mut().into_iter().flatten() {
                if port.is_object() && port["nodePort"].is_null() {
                    port["nodePort"] = json!(self.next_free_node_port(&used));
                }
            }
        }
    }

    fn used_node_ports(&self, services: &ResourceDef) -> Vec<u64> {
        self.objects
            .get(&services.storage)
            .into_iter()
            .flatten()
            .flat_map(|(_, svc)| svc["spec"]["ports"].as_array().into_iter().flatten())
            .filter_map(|p| p["nodePort"].as_u64())
            .collect()
    }

    fn next_free_node_port(&mut self, used: &[u64]) -> u16 {
        for _ in 0..=(32767 - 30000) {
            let port = self.next_node_port;
            self.next_node_port = if port >= 32767 { 30000 } else { port + 1 };
            if !used.contains(&u64::from(port)) {
                return port;
            }
        }
        // Every port is taken: the real server would refuse; the lab reuses rather than fail a test setup.
        self.next_node_port
    }

    /// The next free address of 10.96.0.0/12 (or fd00:10:96::/108), the lab's service CIDRs.
    fn allocate_cluster_ip(&mut self, ipv6: bool) -> String {
        loop {
            let next = if ipv6 {
                &mut self.next_cluster_ip6
            } else {
                &mut self.next_cluster_ip
            };
            let n = *next % (1 << 20);
            *next = next.wrapping_add(1);
            if n == 0 {
                continue;
            }
            let ip = if ipv6 {
                format!("fd00:10:96::{:x}:{:x}", n >> 16, n & 0xffff)
            } else {
                format!("10.{}.{}.{}", 96 + (n >> 16), (n >> 8) & 0xff, n & 0xff)
            };
            if !self.cluster_ips.contains(&ip) {
                return ip;
            }
        }
    }

    /// Checks a CRD object; `previous` is the resource it defined before an update.
    fn crd_resource(&self, crd: &Value, previous: Option<&ResourceDef>) -> Result<ResourceDef, ApiError> {
        let name = meta_str(crd, "name");
        let invalid =
            |errors: Vec<FieldError>| ApiError::invalid(registry::CRD_GROUP, "CustomResourceDefinition", name, errors);
        let resource = registry::crd_resource(crd)
            .map_err(|errors| invalid(errors.iter().map(|e| FieldError::from_text(e)).collect()))?;
        if let Some(previous) = previous {
            if previous.id() != resource.id() {
                return Err(invalid(vec![FieldError::from_text(
                    "spec.group, spec.names.plural: Invalid value: field is immutable",
                )]));
            }
        } else if self.registry.by_id(&resource.id()).is_some() {
            return Err(invalid(vec![FieldError::from_text(
                "spec.names.plural: Invalid value: the resource is already served",
            )]));
        }
        Ok(resource)
    }

    /// PUT: replaces the object (or only its status, for `Subresource::Status`).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        def: &ResourceDef,
        version: &str,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
        mut object: Value,
        now: Timestamp,
    ) -> Result<Value, ApiError> {
        Self::check_type(def, version, &mut object)?;
        let target = Self::target(def, name);
        let namespace = namespace.unwrap_or_default();
        let body_name = meta_str(&object, "name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&object, "namespace");
        if def.namespaced && !body_ns.is_empty() && body_ns != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old = self.lookup(def, namespace, name)?.clone();
        match meta_str(&object, "resourceVersion") {
            "" if !def.unconditional_update => {
                // The generic registry names the resource here, not the kind.
                return Err(ApiError::invalid(
                    &def.group,
                    &def.plural,
                    name,
                    vec![FieldError::invalid(
                        "metadata.resourceVersion",
                        "0",
                        "must be specified for an update",
                    )],
                ));
            }
            "" => {}
            rv if rv == meta_str(&old, "resourceVersion") => {}
            rv if rv.parse::<u64>().is_err() => {
                return Err(ApiError::bad_request(format!("invalid resourceVersion \"{rv}\"")));
            }
            _ => return Err(ApiError::conflict(target)),
        }
        let object = to_storage(object, def, version);
        self.write_update(def, version, old, object, sub, now)
    }

    /// PATCH: applies the patch to the current object, then writes it as an update. A `resourceVersion` in the
    /// patched result that differs from the current one is a conflict, as on the real server.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &ResourceDef,
        version: &str,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
        kind: PatchKind,
        patch: &Value,
        now: Timestamp,
    ) -> Result<Value, ApiError> {
        let target = Self::target(def, name);
        if kind == PatchKind::Strategic && def.custom {
            return Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let old = self.lookup(def, namespace.unwrap_or_default(), name)?.clone();
        let mut patched = for_version(old.clone(), def, version);
        patch::apply(kind, &mut patched, patch).map_err(ApiError::unprocessable)?;
        if !patched.is_object() {
            return Err(ApiError::unprocessable("the patched object is not a JSON object"));
        }
        Self::check_type(def, version, &mut patched)?;
        let old_rv = meta_str(&old, "resourceVersion").to_string();
        match meta_str(&patched, "resourceVersion") {
            "" => {}
            rv if rv == old_rv => {}
            _ => return Err(ApiError::conflict(target)),
        }
        if meta_str(&patched, "name") != name {
            return Err(ApiError::bad_request("metadata.name cannot be changed by a patch"));
        }
        let patched = to_storage(patched, def, version);
        self.write_update(def, version, old, patched, sub, now)
    }

    fn write_update(
        &mut self,
        def: &ResourceDef,
        version: &str,
        old: Value,
        body: Value,
        sub: Subresource,
        now: Timestamp,
    ) -> Result<Value, ApiError> {
        let name = meta_str(&old, "name").to_string();
        // `body` is in storage form (`to_storage`); so is `old`, with the apiVersion it was last written with, which
        // a write through another version changes without changing anything else.
        let old_stamped = match def.conversion {
            Conversion::None => stamp(old.clone(), def, version),
            Conversion::CoreEvents | Conversion::EventsV1 => old.clone(),
        };
        let mut new = match sub {
            Subresource::Main => {
                let mut new = body;
                if def.status_subresource
                    && let Some(map) = new.as_object_mut()
                {
                    match old.get("status") {
                        Some(status) => map.insert("status".to_string(), status.clone()),
                        None => map.remove("status"),
                    };
                }
                // Fields the server owns.
                let old_meta = meta(&old).clone();
                let meta = meta_mut(&mut new);
                for field in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "resourceVersion",
                ] {
                    match old_meta.get(field) {
                        Some(v) => meta.insert(field.to_string(), v.clone()),
                        None => meta.remove(field),
                    };
                }
                for field in ["managedFields", "selfLink"] {
                    meta.remove(field);
                }
                new
            }
            Subresource::Status => {
                // Only status changes; metadata and spec stay as stored.
                let mut new = old_stamped.clone();
                if let Some(map) = new.as_object_mut() {
                    match body.get("status") {
                        Some(status) if !status.is_null() => map.insert("status".to_string(), status.clone()),
                        _ => map.remove("status"),
                    };
                }
                new
            }
        };
        let deleting = !meta(&old)["deletionTimestamp"].is_null();
        if deleting {
            let before = finalizers(&old);
            let added: Vec<String> = finalizers(&new).into_iter().filter(|f| !before.contains(f)).collect();
            if !added.is_empty() {
                // Go's `%#v` of the []string.
                let quoted: Vec<String> = added.iter().map(|f| go_quote(f)).collect();
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    &name,
                    vec![FieldError::forbidden(
                        "metadata.finalizers",
                        &format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers \
                             []string{{{}}}",
                            quoted.join(", ")
                        ),
                    )],
                ));
            }
        }
        strategy::prepare(def, version, Some(&old), &mut new, sub)?;
        self.allocate(def, &mut new);
        if def.generation && generation_part(def, &old) != generation_part(def, &new) {
            let generation = meta(&old)["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut new).insert("generation".to_string(), json!(generation));
        }
        if def.is_crd() && sub == Subresource::Main {
            let previous = registry::crd_resource(&old).ok();
            let resource = self.crd_resource(&new, previous.as_ref())?;
            set_crd_status(&mut new, &resource, now);
            self.registry.register_crd(resource);
        }
        if new == old_stamped {
            // No-op writes do not bump the resourceVersion or produce events.
            return Ok(old);
        }
        let written = self.commit(EventKind::Modified, def, new, Some(old));
        if deleting && finalizers(&written).is_empty() {
            self.remove(def, written.clone());
        }
        Ok(written)
    }

    fn remove(&mut self, def: &ResourceDef, object: Value) -> Value {
        if def.is_crd()
            && let Ok(resource) = registry::crd_resource(&object)
        {
            self.drop_custom_resource(&resource.id());
        }
        self.commit(EventKind::Deleted, def, object.clone(), Some(object))
    }

    /// Deletes every object of a custom resource whose CRD is gone, and stops serving it.
    fn drop_custom_resource(&mut self, id: &ResourceId) {
        let Some(resource) = self.registry.unregister(id) else {
            return;
        };
        let objects: Vec<Value> = self
            .objects
            .remove(id)
            .into_iter()
            .flat_map(BTreeMap::into_values)
            .collect();
        for object in objects {
            self.commit(EventKind::Deleted, &resource, object.clone(), Some(object));
        }
        self.objects.remove(id);
    }

    /// DELETE: removes the object, or marks it for deletion if it has finalizers.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
        preconditions: &Preconditions,
        now: Timestamp,
    ) -> Result<Deleted, ApiError> {
        let old = self.lookup(def, namespace.unwrap_or_default(), name)?.clone();
        if let Some(uid) = &preconditions.uid
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::precondition_failed(
                &def.group,
                &def.kind,
                name,
                &format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might \
                     have been deleted and then recreated",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = &preconditions.resource_version
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::precondition_failed(
                &def.group,
                &def.kind,
                name,
                &format!(
                    "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record \
                     ({}). The object might have been modified",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
        if finalizers(&old).is_empty() {
            return Ok(Deleted::Removed(self.remove(def, old)));
        }
        if !meta(&old)["deletionTimestamp"].is_null() {
            return Ok(Deleted::Pending(old));
        }
        let mut new = old.clone();
        let meta = meta_mut(&mut new);
        meta.insert("deletionTimestamp".to_string(), Value::String(now_string(now)));
        meta.insert("deletionGracePeriodSeconds".to_string(), json!(0));
        Ok(Deleted::Pending(self.commit(EventKind::Modified, def, new, Some(old))))
    }

    /// Where a watch starts: the events after `from` (410 Gone if they are no longer all kept), or with no
    /// `from` synthetic ADDED events for the current objects; plus the live feed, subscribed atomically with it.
    pub fn watch(&self, def: &ResourceDef, namespace: Option<&str>, from: Option<u64>) -> Result<WatchStart, ApiError> {
        let id = def.storage.clone();
        let in_scope = |event: &Event| event.resource == id && namespace.is_none_or(|ns| ns == event.namespace);
        let backlog = match from {
            Some(rv) if rv < self.compacted => return Err(ApiError::gone(rv, self.compacted)),
            Some(rv) => self
                .history
                .iter()
                .filter(|e| e.rv > rv && in_scope(e))
                .cloned()
                .collect(),
            None => self
                .objects
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                .map(|((ns, _), object)| {
                    Arc::new(Event {
                        kind: EventKind::Added,
                        rv: meta_str(object, "resourceVersion").parse().unwrap_or(0),
                        resource: id.clone(),
                        namespace: ns.clone(),
                        object: object.clone(),
                        previous: None,
                    })
                })
                .collect(),
        };
        Ok((backlog, self.events.subscribe()))
    }

    /// Everything needed to restore the store: the resourceVersion and every object with its resource.
    pub fn snapshot(&self) -> Value {
        // CRDs first, so a restore registers their resources before their objects arrive.
        let mut entries: Vec<(&ResourceId, &Value)> = self
            .objects
            .iter()
            .flat_map(|(id, objects)| objects.values().map(move |o| (id, o)))
            .collect();
        entries.sort_by_key(|(id, _)| !(id.0 == registry::CRD_GROUP && id.1 == registry::CRD_PLURAL));
        let objects: Vec<Value> = entries
            .into_iter()
            .map(|(id, object)| json!({"group": id.0, "resource": id.1, "object": object}))
            .collect();
        json!({"resourceVersion": self.rv, "objects": objects})
    }

    /// A store holding a snapshot's objects, continuing its resourceVersion. Events before the restore are gone:
    /// watches from older versions get 410.
    pub fn restore(snapshot: &Value, history_limit: usize, channel_capacity: usize) -> Result<Self, String> {
        let mut store = Self::empty(history_limit, channel_capacity);
        store.rv = snapshot["resourceVersion"]
            .as_u64()
            .ok_or("state file has no resourceVersion")?;
        store.compacted = store.rv;
        for entry in snapshot["objects"].as_array().ok_or("state file has no objects list")? {
            let group = entry["group"].as_str().ok_or("state entry without group")?.to_string();
            let resource = entry["resource"]
                .as_str()
                .ok_or("state entry without resource")?
                .to_string();
            let mut object = entry["object"].clone();
            let id = (group, resource);
            let Some(def) = store.registry.by_id(&id).cloned() else {
                return Err(format!(
                    "state file has objects of {}.{}, which is not served",
                    id.1, id.0
                ));
            };
            // State files written before events.k8s.io Events shared the core storage hold them apart.
            if def.storage != id {
                let version = def.versions.first().cloned().unwrap_or_default();
                object = to_storage(object, &def, &version);
            }
            if id.0 == registry::CRD_GROUP && id.1 == registry::CRD_PLURAL {
                let resource = registry::crd_resource(&object).map_err(|e| e.join(", "))?;
                store.registry.register_crd(resource);
            }
            let key = (
                meta_str(&object, "namespace").to_string(),
                meta_str(&object, "name").to_string(),
            );
            if is_services(&def) {
                store.cluster_ips.extend(cluster_ips(&object).map(str::to_string));
            }
            store.objects.entry(def.storage).or_default().insert(key, object);
        }
        Ok(store)
    }
}

fn is_services(def: &ResourceDef) -> bool {
    (def.group.as_str(), def.plural.as_str()) == ("", "services")
}

/// A Service's `spec.clusterIPs`.
fn cluster_ips(service: &Value) -> impl Iterator<Item = &str> {
    service["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// What the CRD controllers of a real cluster write into a CRD's status, at once.
fn set_crd_status(crd: &mut Value, resource: &ResourceDef, now: Timestamp) {
    let mut accepted = crd["spec"]["names"].clone();
    accepted["singular"] = json!(resource.singular);
    accepted["listKind"] = json!(resource.list_kind);
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    let since = crd["status"]["conditions"][0]["lastTransitionTime"]
        .as_str()
        .map(str::to_string);
    let at = since.unwrap_or_else(|| now_string(now));
    crd["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": at},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": at},
        ],
        "acceptedNames": accepted,
        "storedVersions": storage,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(100, 16, Timestamp::UNIX_EPOCH)
    }

    fn def(store: &Store, group: &str, plural: &str) -> ResourceDef {
        store.registry().lookup(group, "v1", plural).cloned().unwrap()
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
    }

    #[test]
    fn uid_is_a_v4_uuid() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert!(matches!(&uid[19..20], "8" | "9" | "a" | "b"), "{uid}");
    }

    #[test]
    fn resource_version_is_global_and_monotonic() {
        let mut s = store();
        let d = def(&s, "", "configmaps");
        let a = s
            .create(&d, "v1", Some("default"), cm("a"), Timestamp::UNIX_EPOCH)
            .unwrap();
        let b = s
            .create(&d, "v1", Some("default"), cm("b"), Timestamp::UNIX_EPOCH)
            .unwrap();
        let ra: u64 = meta_str(&a, "resourceVersion").parse().unwrap();
        let rb: u64 = meta_str(&b, "resourceVersion").parse().unwrap();
        assert_eq!(rb, ra + 1);
        assert_eq!(s.resource_version(), rb);
    }

    #[test]
    fn create_needs_existing_namespace_and_unique_name() {
        let mut s = store();
        let d = def(&s, "", "configmaps");
        let err = s
            .create(&d, "v1", Some("nope"), cm("a"), Timestamp::UNIX_EPOCH)
            .unwrap_err();
        assert_eq!((err.code, err.reason), (404, "NotFound"));
        s.create(&d, "v1", Some("default"), cm("a"), Timestamp::UNIX_EPOCH)
            .unwrap();
        let err = s
            .create(&d, "v1", Some("default"), cm("a"), Timestamp::UNIX_EPOCH)
            .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
    }

    fn svc(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"ports": [{"port": 80}], "ipFamilies": ["IPv6"]}})
    }

    fn cluster_ip(service: &Value) -> String {
        service["spec"]["clusterIP"].as_str().unwrap().to_string()
    }

    #[test]
    fn cluster_ips_are_never_shared_also_after_a_delete_and_a_restore() {
        let mut s = store();
        let d = def(&s, "", "services");
        let a = s
            .create(&d, "v1", Some("default"), svc("a"), Timestamp::UNIX_EPOCH)
            .unwrap();
        let b = s
            .create(&d, "v1", Some("default"), svc("b"), Timestamp::UNIX_EPOCH)
            .unwrap();
        assert_ne!(cluster_ip(&a), cluster_ip(&b));
        // A deleted Service's IP is free again, and after a restore the allocation restarts from the first IP: the
        // ones in use are skipped.
        s.delete(
            &d,
            Some("default"),
            "a",
            &Preconditions::default(),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        let mut restored = Store::restore(&s.snapshot(), 100, 16).unwrap();
        let c = restored
            .create(&d, "v1", Some("default"), svc("c"), Timestamp::UNIX_EPOCH)
            .unwrap();
        assert_eq!(cluster_ip(&c), cluster_ip(&a));
        let e = restored
            .create(&d, "v1", Some("default"), svc("e"), Timestamp::UNIX_EPOCH)
            .unwrap();
        assert!(![cluster_ip(&b), cluster_ip(&c)].contains(&cluster_ip(&e)), "{e}");
    }

    #[test]
    fn noop_update_does_not_bump() {
        let mut s = store();
        let d = def(&s, "", "configmaps");
        let a = s
            .create(&d, "v1", Some("default"), cm("a"), Timestamp::UNIX_EPOCH)
            .unwrap();
        let rv = s.resource_version();
        let b = s
            .update(
                &d,
                "v1",
                Some("default"),
                "a",
                Subresource::Main,
                a.clone(),
                Timestamp::UNIX_EPOCH,
            )
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(rv, s.resource_version());
    }

    #[test]
    fn watch_before_history_is_gone() {
        let mut s = Store::new(2, 16, Timestamp::UNIX_EPOCH);
        let d = def(&s, "", "configmaps");
        for name in ["a", "b", "c"] {
            s.create(&d, "v1", Some("default"), cm(name), Timestamp::UNIX_EPOCH)
                .unwrap();
        }
        let err = s.watch(&d, None, Some(2)).unwrap_err();
        assert_eq!(err.code, 410);
        let (backlog, _) = s.watch(&d, None, Some(s.resource_version() - 1)).unwrap();
        assert_eq!(backlog.len(), 1);
    }

    #[test]
    fn list_pages_with_continue() {
        let mut s = store();
        let d = def(&s, "", "configmaps");
        for name in ["a", "b", "c"] {
            s.create(&d, "v1", Some("default"), cm(name), Timestamp::UNIX_EPOCH)
                .unwrap();
        }
        let first = s.list(&d, None, &Selectors::default(), Some(2), None).unwrap();
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, Some(1));
        let second = s
            .list(
                &d,
                None,
                &Selectors::default(),
                Some(2),
                first.continue_token.as_deref(),
            )
            .unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(meta_str(&second.items[0], "name"), "c");
        assert_eq!(second.continue_token, None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn key() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "metadata",
                "spec",
                "status",
                "name",
                "namespace",
                "generateName",
                "resourceVersion",
                "finalizers",
                "labels",
                "ports",
                "port",
                "type",
                "conditions",
                "group",
                "names",
                "plural",
                "kind",
                "scope",
                "versions",
                "served",
                "storage",
                "$patch",
                "apiVersion",
            ])
            .prop_map(str::to_string)
        }

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                "[a-z0-9.-]{0,6}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 48, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(key(), inner, 0..5)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Malformed input gets an error, never a panic, and never leaves an object without name or version.
            #[test]
            fn arbitrary_bodies_never_panic(bodies in prop::collection::vec(json(), 1..6), patch_kind in 0..3usize) {
                let mut s = store();
                let now = Timestamp::UNIX_EPOCH;
                let kinds = [PatchKind::Merge, PatchKind::Json, PatchKind::Strategic];
                for (group, plural) in [("", "configmaps"), ("", "services"), ("", "namespaces"), ("", "nodes"),
                                        (registry::CRD_GROUP, registry::CRD_PLURAL)] {
                    let d = def(&s, group, plural);
                    let ns = d.namespaced.then_some("default");
                    for body in &bodies {
                        let _ = s.create(&d, "v1", ns, body.clone(), now);
                        let mut named = body.clone();
                        if let Some(map) = named.as_object_mut() {
                            map.insert("metadata".into(), json!({"name": "x"}));
                        }
                        let _ = s.create(&d, "v1", ns, named.clone(), now);
                        let _ = s.update(&d, "v1", ns, "x", Subresource::Main, body.clone(), now);
                        let _ = s.update(&d, "v1", ns, "x", Subresource::Status, named, now);
                        let _ = s.patch(&d, "v1", ns, "x", Subresource::Main, kinds[patch_kind], body, now);
                        let _ = s.patch(&d, "v1", ns, "x", Subresource::Status, kinds[patch_kind], body, now);
                    }
                    let _ = s.delete(&d, ns, "x", &Preconditions::default(), now);
                }
                for objects in s.objects.values() {
                    for object in objects.values() {
                        prop_assert!(!meta_str(object, "name").is_empty());
                        let rv: u64 = meta_str(object, "resourceVersion").parse().unwrap();
                        prop_assert!(rv <= s.resource_version());
                    }
                }
            }
        }
    }
}
