//! What the real server's per-kind REST strategies, defaulting functions and conversions do to an object on its
//! way in and out, for the kinds served here: Namespaces (their name label), Services (defaults, IP families,
//! type-dependent fields, load-balancer status rules), Events (one storage for core/v1 and events.k8s.io/v1, the
//! events.k8s.io validation) and custom resources (structural pruning and defaulting from the CRD schema).
//! Pure functions of the objects; allocation of cluster IPs and node ports stays in `Store`, which owns the pools.

use serde_json::{Map, Value, json};

use crate::registry::{Conversion, ResourceDef};
use crate::status::{ApiError, FieldError, go_quote};
use crate::store::Subresource;

/// `kubernetes.io/metadata.name`: the real server labels every Namespace with its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Defaults and validation of a write, in storage form: `old` is `None` on create.
pub fn prepare(
    def: &ResourceDef,
    version: &str,
    old: Option<&Value>,
    new: &mut Value,
    sub: Subresource,
) -> Result<(), ApiError> {
    if def.custom {
        if let Some(schema) = def.schemas.get(version) {
            prune(new, schema, true);
            apply_defaults(new, schema);
        }
        return Ok(());
    }
    normalize_times(def, new).map_err(|why| {
        ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: {why}",
            kind = def.kind
        ))
    })?;
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "namespaces") => {
            namespace(new);
            // Spec finalizers change only through `/finalize` (not served), as the real namespace strategy keeps
            // them on update.
            if let Some(old) = old
                && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
            {
                match &old["spec"]["finalizers"] {
                    Value::Null => spec.remove("finalizers"),
                    kept => spec.insert("finalizers".to_string(), kept.clone()),
                };
            }
            Ok(())
        }
        ("", "services") => service(new, old, sub),
        (_, "events") => event(def, old, new),
        ("", "nodes") => {
            node_status_shape(new);
            Ok(())
        }
        ("", "secrets") => {
            // SetDefaults_Secret.
            if text(new, "type").is_empty() {
                new["type"] = json!("Opaque");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `NodeStatus` fields Go always writes: `daemonEndpoints` and `nodeInfo` are structs, not pointers.
fn node_status_shape(node: &mut Value) {
    if !node["status"].is_object() {
        node["status"] = json!({});
    }
    let status = &mut node["status"];
    if !status["daemonEndpoints"].is_object() {
        status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": 0}});
    }
    if !status["nodeInfo"].is_object() {
        status["nodeInfo"] = json!({});
    }
    if let Some(info) = status["nodeInfo"].as_object_mut() {
        for field in [
            "machineID",
            "systemUUID",
            "bootID",
            "kernelVersion",
            "osImage",
            "containerRuntimeVersion",
            "kubeletVersion",
            "kubeProxyVersion",
            "operatingSystem",
            "architecture",
        ] {
            info.entry(field.to_string()).or_insert_with(|| json!(""));
        }
    }
}

/// `metav1.Time` (seconds) or `metav1.MicroTime` (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeField {
    Seconds,
    Micro,
}

/// The time fields of the built-in kinds served here (in storage form), which the real server parses and writes
/// back in its own format (UTC, `Z`; microseconds always six digits).
fn time_fields(def: &ResourceDef) -> &'static [(&'static str, TimeField)] {
    use TimeField::{Micro, Seconds};
    match (def.group.as_str(), def.plural.as_str()) {
        ("coordination.k8s.io", "leases") => &[("spec.acquireTime", Micro), ("spec.renewTime", Micro)],
        (_, "events") => &[
            ("eventTime", Micro),
            ("series.lastObservedTime", Micro),
            ("firstTimestamp", Seconds),
            ("lastTimestamp", Seconds),
        ],
        ("", "nodes") => &[
            ("status.conditions[].lastHeartbeatTime", Seconds),
            ("status.conditions[].lastTransitionTime", Seconds),
        ],
        ("", "services" | "namespaces") => &[("status.conditions[].lastTransitionTime", Seconds)],
        _ => &[],
    }
}

fn normalize_times(def: &ResourceDef, object: &mut Value) -> Result<(), String> {
    for (path, kind) in time_fields(def) {
        let mut targets: Vec<&mut Value> = vec![object];
        for segment in path.split('.') {
            let (key, each) = match segment.strip_suffix("[]") {
                Some(key) => (key, true),
                None => (segment, false),
            };
            targets = targets
                .into_iter()
                .filter_map(|t| t.get_mut(key))
                .flat_map(|v| {
                    if !each {
                        return vec![v];
                    }
                    match v {
                        Value::Array(items) => items.iter_mut().collect::<Vec<_>>(),
                        _ => Vec::new(),
                    }
                })
                .collect();
        }
        for target in targets {
            if let Value::String(text) = target {
                *text = parse_time(text, *kind)?;
            }
        }
    }
    Ok(())
}

/// Go's `time.Parse` of the layout the field's JSON decoding uses, far enough to give its error for the usual
/// mistakes (a missing or short fraction in a MicroTime, a bad zone), and the value written back.
fn parse_time(text: &str, kind: TimeField) -> Result<String, String> {
    let layout = match kind {
        TimeField::Seconds => "2006-01-02T15:04:05Z07:00",
        TimeField::Micro => "2006-01-02T15:04:05.000000Z07:00",
    };
    let error = |rest: &str, element: &str| {
        format!("parsing time {text:?} as {layout:?}: cannot parse {rest:?} as {element:?}")
    };
    // The date and time, element by element.
    let elements: [(&str, usize, bool); 11] = [
        ("2006", 4, true),
        ("-", 1, false),
        ("01", 2, true),
        ("-", 1, false),
        ("02", 2, true),
        ("T", 1, false),
        ("15", 2, true),
        (":", 1, false),
        ("04", 2, true),
        (":", 1, false),
        ("05", 2, true),
    ];
    let mut rest = text;
    for (element, width, digits) in elements {
        let chunk = rest.get(..width).unwrap_or(rest);
        let ok = chunk.len() == width
            && if digits {
                chunk.bytes().all(|b| b.is_ascii_digit())
            } else {
                chunk == element
            };
        if !ok {
            return Err(error(rest, element));
        }
        rest = &rest[width..];
    }
    if kind == TimeField::Micro {
        let fraction = rest
            .strip_prefix('.')
            .map(|f| f.bytes().take_while(u8::is_ascii_digit).count());
        if fraction != Some(6) {
            return Err(error(rest, ".000000"));
        }
        rest = &rest[7..];
    } else if let Some(fraction) = rest.strip_prefix('.') {
        // RFC 3339 accepts a fraction the layout does not name.
        rest = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let zone_ok = rest == "Z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':'
            && rest
                .bytes()
                .enumerate()
                .all(|(i, b)| matches!(i, 0 | 3) || b.is_ascii_digit()));
    if !zone_ok {
        return Err(error(rest, "Z07:00"));
    }
    let timestamp: jiff::Timestamp = text.parse().map_err(|_| error(text, layout))?;
    Ok(match kind {
        TimeField::Seconds => timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        TimeField::Micro => timestamp.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
    })
}

fn namespace(ns: &mut Value) {
    let name = ns["metadata"]["name"].clone();
    if !ns["metadata"]["labels"].is_object() {
        ns["metadata"]["labels"] = json!({});
    }
    ns["metadata"]["labels"][NAMESPACE_NAME_LABEL] = name;
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

/// `SetDefaults_Service` (pkg/apis/core/v1/defaults.go), applied to every Service a request carries.
fn service_defaults(svc: &mut Value) {
    if !svc["spec"].is_object() {
        svc["spec"] = json!({});
    }
    let spec = &mut svc["spec"];
    if text(spec, "sessionAffinity").is_empty() {
        spec["sessionAffinity"] = json!("None");
    }
    if text(spec, "sessionAffinity") == "None"
        && let Some(map) = spec.as_object_mut()
    {
        map.remove("sessionAffinityConfig");
    }
    if text(spec, "sessionAffinity") == "ClientIP"
        && spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].is_null()
    {
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
    }
    if text(spec, "type").is_empty() {
        spec["type"] = json!("ClusterIP");
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        // Malformed entries are stored as given (no schema validation), never indexed into.
        for port in ports.iter_mut().filter(|p| p.is_object()) {
            if text(port, "protocol").is_empty() {
                port["protocol"] = json!("TCP");
            }
            if port["targetPort"].is_null() || port["targetPort"] == json!(0) || port["targetPort"] == json!("") {
                port["targetPort"] = port["port"].clone();
            }
        }
    }
    let kind = text(spec, "type").to_string();
    if externally_accessible(spec) && text(spec, "externalTrafficPolicy").is_empty() {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if spec["internalTrafficPolicy"].is_null() && matches!(kind.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if kind == "LoadBalancer" {
        if spec["allocateLoadBalancerNodePorts"].is_null() {
            spec["allocateLoadBalancerNodePorts"] = json!(true);
        }
        if let Some(ingress) = svc
            .pointer_mut("/status/loadBalancer/ingress")
            .and_then(Value::as_array_mut)
        {
            for entry in ingress.iter_mut().filter(|i| i.is_object()) {
                if !text(entry, "ip").is_empty() && entry["ipMode"].is_null() {
                    entry["ipMode"] = json!("VIP");
                }
            }
        }
    }
}

/// `ExternallyAccessible` (pkg/api/v1/service): NodePort, LoadBalancer, or ClusterIP with external IPs.
fn externally_accessible(spec: &Value) -> bool {
    match text(spec, "type") {
        "NodePort" | "LoadBalancer" => true,
        "ClusterIP" => spec["externalIPs"].as_array().is_some_and(|ips| !ips.is_empty()),
        _ => false,
    }
}

pub fn needs_node_ports(spec: &Value) -> bool {
    match text(spec, "type") {
        "NodePort" => true,
        "LoadBalancer" => spec["allocateLoadBalancerNodePorts"].as_bool() != Some(false),
        _ => false,
    }
}

fn service(svc: &mut Value, old: Option<&Value>, sub: Subresource) -> Result<(), ApiError> {
    service_defaults(svc);
    let Some(old) = old else {
        return ip_families(svc, None);
    };
    if sub == Subresource::Status {
        return load_balancer_status(svc);
    }
    drop_type_dependent_fields(svc, old);
    ip_families(svc, Some(old))
}

/// `dropTypeDependentFields` (pkg/registry/core/service/strategy.go): a type change wipes what the old type had
/// allocated or defaulted, when the client did not also change it, and the load-balancer status of a Service that
/// is no longer a LoadBalancer.
fn drop_type_dependent_fields(svc: &mut Value, old: &Value) {
    let (old_spec, spec) = (&old["spec"], &mut svc["spec"]);
    let same = |field: &str, spec: &Value| spec[field] == old_spec[field];
    if text(old_spec, "type") != "ExternalName" && text(spec, "type") == "ExternalName" {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if same(field, spec)
                && let Some(map) = spec.as_object_mut()
            {
                map.remove(field);
            }
        }
    }
    let node_ports = |s: &Value| -> Vec<Value> {
        s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["nodePort"].clone())
            .collect()
    };
    if needs_node_ports(old_spec) && !needs_node_ports(spec) && node_ports(spec) == node_ports(old_spec) {
        for port in spec["ports"].as_array_mut().into_iter().flatten() {
            if let Some(map) = port.as_object_mut() {
                map.remove("nodePort");
            }
        }
    }
    let was_lb = text(old_spec, "type") == "LoadBalancer";
    if was_lb && text(spec, "type") != "LoadBalancer" {
        for field in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
            if same(field, spec)
                && let Some(map) = spec.as_object_mut()
            {
                map.remove(field);
            }
        }
    }
    if externally_accessible(old_spec)
        && !externally_accessible(spec)
        && same("externalTrafficPolicy", spec)
        && let Some(map) = spec.as_object_mut()
    {
        map.remove("externalTrafficPolicy");
    }
    if text(spec, "type") != "LoadBalancer" {
        match svc.get_mut("status").and_then(Value::as_object_mut) {
            Some(status) => {
                status.insert("loadBalancer".to_string(), json!({}));
            }
            None => svc["status"] = json!({"loadBalancer": {}}),
        }
    }
}

/// The IP family of an address (`IPv4`/`IPv6`).
pub fn family_of(ip: &str) -> Option<&'static str> {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => Some("IPv4"),
        Ok(std::net::IpAddr::V6(_)) => Some("IPv6"),
        Err(_) => None,
    }
}

/// `initIPFamilyFields` (pkg/registry/core/service/storage/alloc.go) for a dual-stack cluster whose primary family
/// is IPv4: `ipFamilyPolicy` and `ipFamilies` defaults. Cluster IPs are then allocated per family by `Store`.
fn ip_families(svc: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = svc["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let spec = &mut svc["spec"];
    if text(spec, "type") == "ExternalName" {
        return Ok(());
    }
    let headless_selectorless =
        text(spec, "clusterIP") == "None" && spec["selector"].as_object().is_none_or(Map::is_empty);
    if spec["ipFamilyPolicy"].is_null() {
        spec["ipFamilyPolicy"] = match old.map(|o| &o["spec"]["ipFamilyPolicy"]) {
            Some(policy) if policy.is_string() => policy.clone(),
            _ if headless_selectorless => json!("RequireDualStack"),
            _ => json!("SingleStack"),
        };
    }
    let policy = text(spec, "ipFamilyPolicy").to_string();
    if policy == "SingleStack"
        && let Some(old) = old
    {
        for field in ["clusterIPs", "ipFamilies"] {
            if spec[field] == old["spec"][field]
                && let Some(list) = spec[field].as_array_mut()
            {
                list.truncate(1);
            }
        }
    }
    let mut errors = Vec::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    if policy == "SingleStack" {
        if strings(&spec["clusterIPs"]).len() == 2 {
            errors.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                &go_quote(&policy),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if strings(&spec["ipFamilies"]).len() == 2 {
            errors.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                &go_quote(&policy),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    if !matches!(policy.as_str(), "SingleStack" | "PreferDualStack" | "RequireDualStack") {
        errors.push(FieldError::unsupported(
            "spec.ipFamilyPolicy",
            &go_quote(&policy),
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        ));
    }
    let mut families = strings(&spec["ipFamilies"]);
    for (i, family) in families.iter().enumerate() {
        if family != "IPv4" && family != "IPv6" {
            errors.push(FieldError::unsupported(
                &format!("spec.ipFamilies[{i}]"),
                &go_quote(family),
                &["IPv4", "IPv6"],
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid("", "Service", &name, errors));
    }
    // Families of the cluster IPs a client chose.
    for (i, ip) in strings(&spec["clusterIPs"]).iter().enumerate() {
        if ip == "None" {
            break;
        }
        if i >= families.len()
            && let Some(family) = family_of(ip)
        {
            families.push(family.to_string());
        }
    }
    if families.is_empty() {
        families.push("IPv4".to_string());
    }
    if policy != "SingleStack" && families.len() == 1 {
        let other = if families[0] == "IPv4" { "IPv6" } else { "IPv4" };
        families.push(other.to_string());
    }
    spec["ipFamilies"] = json!(families);
    Ok(())
}

/// `ValidateLoadBalancerStatus`, checked on `/status` writes.
fn load_balancer_status(svc: &Value) -> Result<(), ApiError> {
    let ingress = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut errors = Vec::new();
    if text(&svc["spec"], "type") != "LoadBalancer" && !ingress.is_empty() {
        errors.push(FieldError::forbidden(
            "status.loadBalancer.ingress",
            "may only be used when `spec.type` is 'LoadBalancer'",
        ));
    } else {
        for (i, entry) in ingress.iter().enumerate() {
            let path = format!("status.loadBalancer.ingress[{i}]");
            let ip = text(entry, "ip");
            if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
                errors.push(FieldError::invalid(
                    &format!("{path}.ip"),
                    &go_quote(ip),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
            }
            match entry["ipMode"].as_str() {
                None if !ip.is_empty() => errors.push(FieldError::required(
                    &format!("{path}.ipMode"),
                    "must be specified when `ip` is set",
                )),
                None | Some("VIP" | "Proxy") => {}
                Some(other) => errors.push(FieldError::unsupported(
                    &format!("{path}.ipMode"),
                    &go_quote(other),
                    &["Proxy", "VIP"],
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        Err(ApiError::invalid("", "Service", name, errors))
    }
}

/// Fields an events.k8s.io/v1 Event has under another name in core/v1 (events.k8s.io name, core name).
const EVENT_RENAMES: [(&str, &str); 6] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
];

fn rename(object: Value, renames: &[(&str, &str)], api_version: &str) -> Value {
    let Value::Object(mut map) = object else {
        return object;
    };
    for (from, to) in renames {
        if let Some(value) = map.remove(*from) {
            map.insert(to.to_string(), value);
        }
    }
    map.insert("apiVersion".to_string(), json!(api_version));
    map.insert("kind".to_string(), json!("Event"));
    Value::Object(map)
}

/// An events.k8s.io/v1 Event as the core/v1 Event it is stored as (`Convert_v1_Event_To_core_Event`).
pub fn event_to_core(object: Value) -> Value {
    let mut renames: Vec<(&str, &str)> = EVENT_RENAMES.to_vec();
    renames.push(("deprecatedCount", "count"));
    rename(object, &renames, "v1")
}

/// A stored core/v1 Event as served by core/v1 or events.k8s.io/v1, with the fields Go's JSON encoding of each
/// type always writes (`null` times, empty structs) and without the empty ones it omits.
pub fn event_for(def: &ResourceDef, object: Value) -> Value {
    shape_event(def.conversion == Conversion::EventsV1, object)
}

/// A core/v1 Event in the one shape it is stored and compared in.
fn canonical_event(object: Value) -> Value {
    shape_event(false, object)
}

fn shape_event(events_v1: bool, object: Value) -> Value {
    let mut object = if events_v1 {
        let renames: Vec<(&str, &str)> = EVENT_RENAMES
            .iter()
            .map(|(a, b)| (*b, *a))
            .chain([("count", "deprecatedCount")])
            .collect();
        rename(object, &renames, "events.k8s.io/v1")
    } else {
        rename(object, &[], "v1")
    };
    let Some(map) = object.as_object_mut() else {
        return object;
    };
    let (always, objects, omit_empty, count): (&[&str], &[&str], &[&str], &str) = if events_v1 {
        (
            &["eventTime", "deprecatedFirstTimestamp", "deprecatedLastTimestamp"],
            &["regarding", "deprecatedSource"],
            &[
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "note",
                "type",
            ],
            "deprecatedCount",
        )
    } else {
        (
            &["firstTimestamp", "lastTimestamp", "eventTime"],
            &["involvedObject", "source"],
            &["reason", "message", "type", "action"],
            "count",
        )
    };
    for field in always {
        map.entry(field.to_string()).or_insert(Value::Null);
    }
    for field in objects {
        map.entry(field.to_string()).or_insert_with(|| json!({}));
    }
    if !events_v1 {
        for field in ["reportingComponent", "reportingInstance"] {
            map.entry(field.to_string()).or_insert_with(|| json!(""));
        }
    }
    for field in omit_empty {
        if map.get(*field).is_some_and(|v| v.is_null() || v == "") {
            map.remove(*field);
        }
    }
    if map.get(count).is_some_and(|v| v.is_null() || v == 0) {
        map.remove(count);
    }
    object
}

/// `ValidateEventCreate`/`ValidateEventUpdate` (pkg/apis/core/validation/events.go), on the core form: only the
/// legacy rules for core/v1 writes, the strict ones for events.k8s.io/v1.
fn event(def: &ResourceDef, old: Option<&Value>, event: &mut Value) -> Result<(), ApiError> {
    let strict = def.conversion == Conversion::EventsV1;
    *event = canonical_event(std::mem::take(event));
    let old = old.cloned().map(canonical_event);
    let old = old.as_ref();
    let mut errors = Vec::new();
    let s = |key: &str| event[key].as_str().unwrap_or_default().to_string();
    let namespace = event["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
    let involved_ns = event["involvedObject"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let controller_field = if strict {
        "reportingController"
    } else {
        "reportingComponent"
    };
    let note_field = if strict { "note" } else { "message" };
    let at_most = |n: usize| format!("can have at most {n} characters");
    if event["eventTime"].is_null() {
        let matches = if involved_ns.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved_ns
        };
        if !matches {
            errors.push(FieldError::invalid(
                "involvedObject.namespace",
                &go_quote(&involved_ns),
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            errors.push(FieldError::invalid(
                "involvedObject.namespace",
                &go_quote(&involved_ns),
                "does not match event.namespace",
            ));
        }
        let controller = s("reportingComponent");
        if controller.is_empty() {
            errors.push(FieldError::required(controller_field, ""));
        }
        for problem in crate::selector::qualified_name_problems(&controller) {
            errors.push(FieldError::invalid(controller_field, &go_quote(&controller), &problem));
        }
        for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let value = s(field);
            if value.is_empty() {
                errors.push(FieldError::required(field, ""));
            }
            if value.len() > limit {
                errors.push(FieldError::invalid(field, "\"\"", &at_most(limit)));
            }
        }
        if s("message").len() > 1024 {
            errors.push(FieldError::invalid(note_field, "\"\"", &at_most(1024)));
        }
    }
    if strict {
        let series_changed = old.is_none_or(|old| old["series"] != event["series"]);
        if series_changed && event["series"].is_object() {
            if event["series"]["count"].as_i64().unwrap_or(0) < 2 {
                errors.push(FieldError::invalid("series.count", "\"\"", "should be at least 2"));
            }
            if event["series"]["lastObservedTime"].is_null() {
                errors.push(FieldError::required("series.lastObservedTime", ""));
            }
        }
        match old {
            None => {
                if event["eventTime"].is_null() {
                    errors.push(FieldError::required("eventTime", ""));
                }
                let kind = s("type");
                if kind != "Normal" && kind != "Warning" {
                    errors.push(FieldError::invalid(
                        "type",
                        "\"\"",
                        &format!("has invalid value: {kind}"),
                    ));
                }
                for (field, set) in [
                    ("firstTimestamp", !event["firstTimestamp"].is_null()),
                    ("lastTimestamp", !event["lastTimestamp"].is_null()),
                    ("count", event["count"].as_i64().unwrap_or(0) != 0),
                    (
                        "source",
                        !s_of(&event["source"], "component").is_empty() || !s_of(&event["source"], "host").is_empty(),
                    ),
                ] {
                    if set {
                        errors.push(FieldError::invalid(field, "\"\"", "needs to be unset"));
                    }
                }
            }
            Some(old) => {
                for field in [
                    "involvedObject",
                    "reason",
                    "message",
                    "source",
                    "firstTimestamp",
                    "lastTimestamp",
                    "count",
                    "type",
                    "eventTime",
                    "action",
                    "related",
                    "reportingComponent",
                    "reportingInstance",
                ] {
                    if event[field] != old[field] {
                        errors.push(FieldError::invalid(
                            field,
                            &go_value(&event[field]),
                            "field is immutable",
                        ));
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        let name = event["metadata"]["name"].as_str().unwrap_or_default().to_string();
        Err(ApiError::invalid("", "Event", &name, errors))
    }
}

fn s_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

/// A field value in a message: strings quoted, other values as JSON.
fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        other => other.to_string(),
    }
}

/// Structural pruning (apiextensions-apiserver `pruning.Prune`): fields the schema does not specify are dropped,
/// unless `x-kubernetes-preserve-unknown-fields`; `apiVersion`, `kind` and `metadata` of the object (and of
/// embedded resources) stay.
fn prune(value: &mut Value, schema: &Value, root: bool) {
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            let embedded = root || schema["x-kubernetes-embedded-resource"] == true;
            map.retain(|key, v| {
                if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    return true;
                }
                if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    prune(v, sub, false);
                    true
                } else if additional.is_object() {
                    prune(v, additional, false);
                    true
                } else {
                    preserve || *additional == Value::Bool(true)
                }
            });
        }
        Value::Array(items) => {
            for item in items {
                prune(item, &schema["items"], false);
            }
        }
        _ => {}
    }
}

/// Structural defaulting (apiextensions-apiserver `defaulting.Default`): a missing property with a `default` gets
/// it; a `null` one that is not `nullable` gets the default or is dropped.
fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (key, sub) in properties {
                    let nullable = sub["nullable"] == true;
                    match map.get(key) {
                        None => {
                            if let Some(default) = sub.get("default") {
                                map.insert(key.clone(), default.clone());
                            }
                        }
                        Some(Value::Null) if !nullable => match sub.get("default") {
                            Some(default) => {
                                map.insert(key.clone(), default.clone());
                            }
                            None => {
                                map.remove(key);
                            }
                        },
                        Some(_) => {}
                    }
                    if let Some(v) = map.get_mut(key) {
                        apply_defaults(v, sub);
                    }
                }
            }
            let additional = &schema["additionalProperties"];
            if additional.is_object() {
                let known = schema["properties"].as_object();
                for (key, v) in map.iter_mut() {
                    if known.is_none_or(|k| !k.contains_key(key)) {
                        apply_defaults(v, additional);
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                apply_defaults(item, &schema["items"]);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_defaults_follow_set_defaults_service() {
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
                             "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        service_defaults(&mut svc);
        ip_families(&mut svc, None).unwrap();
        assert_eq!(
            svc["spec"],
            json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                   "sessionAffinity": "None", "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
                   "allocateLoadBalancerNodePorts": true, "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]})
        );
        assert_eq!(svc["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    }

    /// Found by `store::tests::properties`: malformed Services are stored as given, never indexed into.
    #[test]
    fn malformed_services_do_not_panic() {
        for body in [
            json!({"metadata": {"name": "s"}, "status": false}),
            json!({"metadata": {"name": "s"}, "spec": 1, "status": {"loadBalancer": 2}}),
            json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "ports": [1, null]},
                   "status": {"loadBalancer": {"ingress": [3, {"ip": 4}]}}}),
        ] {
            let old = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}});
            for (old, sub) in [
                (None, Subresource::Main),
                (Some(&old), Subresource::Main),
                (Some(&old), Subresource::Status),
            ] {
                let mut new = body.clone();
                let _ = service(&mut new, old, sub);
            }
        }
    }

    #[test]
    fn dual_stack_families() {
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"ipFamilyPolicy": "PreferDualStack"}});
        ip_families(&mut svc, None).unwrap();
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        let mut svc =
            json!({"metadata": {"name": "s"}, "spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}});
        ip_families(&mut svc, None).unwrap();
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv6"]));
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"ipFamilies": ["IPv4", "IPv6"]}});
        let err = ip_families(&mut svc, None).unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn leaving_load_balancer_drops_what_it_had() {
        let old = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30001}],
                                   "allocateLoadBalancerNodePorts": true, "externalTrafficPolicy": "Cluster"},
                         "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP"}]}}});
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        drop_type_dependent_fields(&mut new, &old);
        assert_eq!(new["spec"], json!({"type": "ClusterIP", "ports": [{"port": 80}]}));
        assert_eq!(new["status"], json!({"loadBalancer": {}}));
    }

    #[test]
    fn events_round_trip_between_versions() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
                        "regarding": {"kind": "Service", "name": "s"}, "note": "n", "reportingController": "c/d",
                        "reportingInstance": "i", "action": "A", "reason": "R", "type": "Normal",
                        "eventTime": "2026-01-01T00:00:00.000000Z"});
        let core = event_to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "s");
        assert_eq!(core["message"], "n");
        assert_eq!(core["reportingComponent"], "c/d");
        assert_eq!(core["apiVersion"], "v1");
        let mut events = crate::registry::Registry::default()
            .lookup("events.k8s.io", "v1", "events")
            .cloned()
            .unwrap();
        let back = event_for(&events, core.clone());
        let mut expected = v1;
        expected["deprecatedSource"] = json!({});
        expected["deprecatedFirstTimestamp"] = Value::Null;
        expected["deprecatedLastTimestamp"] = Value::Null;
        assert_eq!(back, expected);
        events.conversion = Conversion::CoreEvents;
        let served = event_for(&events, core);
        assert_eq!(served["source"], json!({}));
        assert_eq!(served["firstTimestamp"], Value::Null);
    }

    #[test]
    fn strict_event_validation() {
        let events = crate::registry::Registry::default()
            .lookup("events.k8s.io", "v1", "events")
            .cloned()
            .unwrap();
        let mut e = event_to_core(
            json!({"metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2026-01-01T00:00:00Z",
                                          "regarding": {"namespace": "ns"}, "reportingController": "herald.dev/x",
                                          "reportingInstance": "i", "reason": "R", "type": "Normal"}),
        );
        let err = event(&events, None, &mut e).unwrap_err();
        assert_eq!(err.message, "Event \"e\" is invalid: action: Required value");
        e["action"] = json!("A".repeat(129));
        let err = event(&events, None, &mut e).unwrap_err();
        assert_eq!(
            err.message,
            "Event \"e\" is invalid: action: Invalid value: \"\": can have at most 128 characters"
        );
    }

    #[test]
    fn times_as_the_real_server_reads_and_writes_them() {
        assert_eq!(
            parse_time("2026-01-01T01:00:00.123+01:00", TimeField::Seconds).unwrap(),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:05.000001Z", TimeField::Micro).unwrap(),
            "2026-01-01T00:00:05.000001Z"
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:05Z", TimeField::Micro).unwrap_err(),
            "parsing time \"2026-01-01T00:00:05Z\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"Z\" \
             as \".000000\""
        );
        assert_eq!(
            parse_time("2026-1-01T00:00:05Z", TimeField::Seconds).unwrap_err(),
            "parsing time \"2026-1-01T00:00:05Z\" as \"2006-01-02T15:04:05Z07:00\": cannot parse \
             \"1-01T00:00:05Z\" as \"01\""
        );
    }

    #[test]
    fn schema_prunes_and_defaults() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "a": {"type": "boolean", "default": true},
                "b": {"type": "string"},
                "m": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {"x": {"type": "integer", "default": 1}}
                }},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }},
            "status": {"type": "object", "nullable": true, "properties": {"used": {"type": "integer", "default": 0}}}
        }});
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
                           "spec": {"b": null, "bogus": 1, "m": {"k": {}}, "free": {"anything": 1}}, "other": 2});
        prune(&mut o, &schema, true);
        apply_defaults(&mut o, &schema);
        assert_eq!(
            o,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
                   "spec": {"a": true, "m": {"k": {"x": 1}}, "free": {"anything": 1}}})
        );
    }
}
