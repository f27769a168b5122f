//! Server-side printing: `meta.k8s.io/v1` `Table` responses for `kubectl get`. Custom resources use their
//! CRD's `additionalPrinterColumns` (JSONPath subset below); built-ins use the columns a real cluster prints.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::registry::{Conversion, PrinterColumn, ResourceDef};
use crate::strategy;

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Whether an `Accept` header asks for a Table (`application/json;as=Table;v=v1;g=meta.k8s.io`).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`, the AGE format of kubectl.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    let y = d / 365;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{y}y")
    }
}

fn age(timestamp: &Value, now: Timestamp) -> Value {
    match timestamp.as_str().and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(t) => json!(human_duration(now.as_second() - t.as_second())),
        None => json!("<unknown>"),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.path=="value")]`
    Filter(Vec<String>, String),
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let path = path.trim();
    let path = path.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(path);
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            // A filter may contain ']' only inside its quoted value; find the closing ")]".
            let (inner, after) = if r.starts_with("?(") {
                let close = r.find(")]")?;
                (&r[..close + 1], &r[close + 2..])
            } else {
                (&r[..end], &r[end + 1..])
            };
            let step = if inner == "*" {
                Step::All
            } else if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, value) = filter.split_once("==")?;
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
                Step::Filter(field.trim().split('.').map(str::to_string).collect(), value)
            } else if let Ok(index) = inner.parse() {
                Step::Index(index)
            } else {
                Step::Field(inner.trim_matches(|c| c == '"' || c == '\'').to_string())
            };
            steps.push(step);
            rest = after;
        } else {
            return None;
        }
    }
    Some(steps)
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`.
pub fn eval(path: &str, object: &Value) -> Vec<Value> {
    let Some(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut current = vec![object.clone()];
    for step in steps {
        current = current
            .into_iter()
            .flat_map(|value| -> Vec<Value> {
                match &step {
                    Step::Field(name) => value.get(name).cloned().into_iter().collect(),
                    Step::Index(i) => value.get(*i).cloned().into_iter().collect(),
                    Step::All => match value {
                        Value::Array(items) => items,
                        Value::Object(map) => map.into_iter().map(|(_, v)| v).collect(),
                        _ => Vec::new(),
                    },
                    Step::Filter(field, want) => value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|item| {
                            let found = field.iter().try_fold(*item, |v, f| v.get(f));
                            match found {
                                Some(Value::String(s)) => s == want,
                                Some(other) => serde_json::from_str::<Value>(want).is_ok_and(|w| w == *other),
                                None => false,
                            }
                        })
                        .cloned()
                        .collect(),
                }
            })
            .collect();
    }
    current.retain(|v| !v.is_null());
    current
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A printer column cell, typed as the CRD says.
fn cell(column: &PrinterColumn, object: &Value, now: Timestamp) -> Value {
    let results = eval(&column.json_path, object);
    match (column.type_.as_str(), results.as_slice()) {
        (_, []) => Value::Null,
        ("date", [one]) => age(one, now),
        ("integer" | "number" | "boolean", [one]) if !one.is_string() => one.clone(),
        (_, [one]) => json!(text(one)),
        (_, many) => json!(many.iter().map(text).collect::<Vec<_>>().join(",")),
    }
}

type CellFn = fn(&Value, Timestamp) -> Value;

struct Column {
    name: &'static str,
    type_: &'static str,
    priority: i64,
    cell: CellFn,
}

fn name_cell(o: &Value, _: Timestamp) -> Value {
    o["metadata"]["name"].clone()
}

fn age_cell(o: &Value, now: Timestamp) -> Value {
    age(&o["metadata"]["creationTimestamp"], now)
}

fn or_none(value: &Value) -> Value {
    match value {
        Value::Null => json!("<none>"),
        Value::String(s) if s.is_empty() => json!("<none>"),
        other => json!(text(other)),
    }
}

fn service_external_ip(o: &Value, _: Timestamp) -> Value {
    let ingress: Vec<String> = o["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()).map(str::to_string))
        .collect();
    let mut ips: Vec<String> = o["spec"]["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_string))
        .collect();
    ips.extend(ingress);
    match (ips.is_empty(), o["spec"]["type"].as_str()) {
        (false, _) => json!(ips.join(",")),
        (true, Some("LoadBalancer")) => json!("<pending>"),
        (true, _) => json!("<none>"),
    }
}

fn service_ports(o: &Value, _: Timestamp) -> Value {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        json!("<none>")
    } else {
        json!(ports.join(","))
    }
}

fn node_status(o: &Value, _: Timestamp) -> Value {
    let ready = eval(".status.conditions[?(@.type==\"Ready\")].status", o);
    let mut status = match ready.first().and_then(Value::as_str) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o["spec"]["unschedulable"].as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    json!(status)
}

/// `listWithMoreString`: at most three, then `+ N more...`; `<unset>` when empty.
fn list_with_more(items: &[String]) -> String {
    match items.len() {
        0 => "<unset>".to_string(),
        n if n <= 3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

/// `findNodeRoles`: `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role`, sorted.
fn node_roles(o: &Value, _: Timestamp) -> Value {
    let mut roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role.to_string()),
            Some(_) => None,
            None if k == "kubernetes.io/role" => v.as_str().filter(|v| !v.is_empty()).map(str::to_string),
            None => None,
        })
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        json!("<none>")
    } else {
        json!(roles.join(","))
    }
}

fn node_address(o: &Value, kind: &str) -> Value {
    let found = o["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == kind)
        .and_then(|a| a["address"].as_str());
    json!(found.unwrap_or("<none>"))
}

fn unknown_if_empty(value: &Value) -> Value {
    match value.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<unknown>"),
    }
}

fn data_count(o: &Value, _: Timestamp) -> Value {
    let count = |f: &str| o[f].as_object().map_or(0, |m| m.len());
    json!(count("data") + count("binaryData"))
}

/// `metav1.ObjectMeta`'s description of `name`, which the real server gives every table's Name column.
const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although \
    some resources may allow a client to request the generation of an appropriate name automatically. Name is \
    primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: \
    https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

fn event_object(o: &Value, _: Timestamp) -> Value {
    let involved = &o["involvedObject"];
    let kind = involved["kind"].as_str().unwrap_or_default().to_lowercase();
    match involved["name"].as_str().unwrap_or_default() {
        "" => json!(kind),
        name => json!(format!("{kind}/{name}")),
    }
}

fn text_or_empty(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// `printEvent` (pkg/printers/internalversion): first seen falls back to eventTime, last seen to first seen, a
/// series overrides both last seen and count.
fn event_first_seen(o: &Value, now: Timestamp) -> Value {
    let first = &o["firstTimestamp"];
    if first.is_string() {
        age(first, now)
    } else {
        age(&o["eventTime"], now)
    }
}

fn event_last_seen(o: &Value, now: Timestamp) -> Value {
    if o["series"].is_object() {
        age(&o["series"]["lastObservedTime"], now)
    } else if o["lastTimestamp"].is_string() {
        age(&o["lastTimestamp"], now)
    } else {
        event_first_seen(o, now)
    }
}

fn event_count(o: &Value, _: Timestamp) -> Value {
    match (o["series"]["count"].as_i64(), o["count"].as_i64()) {
        (Some(series), _) => json!(series),
        (None, Some(count)) if count != 0 => json!(count),
        _ => json!(1),
    }
}

fn event_source(o: &Value, _: Timestamp) -> Value {
    let first = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { a.to_string() };
    let component = first(
        text_or_empty(&o["source"]["component"]),
        text_or_empty(&o["reportingComponent"]),
    );
    let instance = first(
        text_or_empty(&o["source"]["host"]),
        text_or_empty(&o["reportingInstance"]),
    );
    if instance.is_empty() {
        json!(component)
    } else {
        json!(format!("{component}, {instance}"))
    }
}

fn builtin_columns(def: &ResourceDef) -> Vec<Column> {
    let col = |name, type_, cell| Column {
        name,
        type_,
        priority: 0,
        cell,
    };
    let name = col("Name", "string", name_cell as CellFn);
    let age_column = col("Age", "string", age_cell as CellFn);
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "services") => vec![
            name,
            col("Type", "string", |o, _| o["spec"]["type"].clone()),
            col("Cluster-IP", "string", |o, _| or_none(&o["spec"]["clusterIP"])),
            col("External-IP", "string", service_external_ip),
            col("Port(s)", "string", service_ports),
            age_column,
            Column {
                name: "Selector",
                type_: "string",
                priority: 1,
                cell: |o, _| {
                    let selector = o["spec"]["selector"].as_object();
                    let pairs: Vec<String> = selector
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={}", text(v)))
                        .collect();
                    if pairs.is_empty() {
                        json!("<none>")
                    } else {
                        json!(pairs.join(","))
                    }
                },
            },
        ],
        ("", "nodes") => {
            let wide = |name, cell| Column {
                name,
                type_: "string",
                priority: 1,
                cell,
            };
            vec![
                name,
                col("Status", "string", node_status),
                col("Roles", "string", node_roles),
                age_column,
                col("Version", "string", |o, _| {
                    json!(text_or_empty(&o["status"]["nodeInfo"]["kubeletVersion"]))
                }),
                wide("Internal-IP", |o, _| node_address(o, "InternalIP")),
                wide("External-IP", |o, _| node_address(o, "ExternalIP")),
                wide("OS-Image", |o, _| unknown_if_empty(&o["status"]["nodeInfo"]["osImage"])),
                wide("Kernel-Version", |o, _| {
                    let info = &o["status"]["nodeInfo"];
                    let kernel = unknown_if_empty(&info["kernelVersion"]);
                    match text_or_empty(&info["architecture"]) {
                        "" => kernel,
                        arch => json!(format!("{} ({arch})", text_or_empty(&kernel))),
                    }
                }),
                wide("Container-Runtime", |o, _| {
                    unknown_if_empty(&o["status"]["nodeInfo"]["containerRuntimeVersion"])
                }),
            ]
        }
        ("", "namespaces") => vec![
            name,
            col("Status", "string", |o, _| o["status"]["phase"].clone()),
            age_column,
        ],
        ("", "configmaps") => vec![name, col("Data", "string", data_count), age_column],
        ("", "secrets") => vec![
            name,
            col("Type", "string", |o, _| o["type"].clone()),
            col("Data", "string", data_count),
            age_column,
        ],
        ("" | "events.k8s.io", "events") => {
            let wide = |name, cell| Column {
                name,
                type_: "string",
                priority: 1,
                cell,
            };
            vec![
                col("Last Seen", "string", event_last_seen),
                col("Type", "string", |o, _| json!(text_or_empty(&o["type"]))),
                col("Reason", "string", |o, _| json!(text_or_empty(&o["reason"]))),
                col("Object", "string", event_object),
                wide("Subobject", |o, _| {
                    json!(text_or_empty(&o["involvedObject"]["fieldPath"]))
                }),
                wide("Source", event_source),
                col("Message", "string", |o, _| json!(text_or_empty(&o["message"]).trim())),
                wide("First Seen", event_first_seen),
                wide("Count", event_count),
                wide("Name", name_cell),
            ]
        }
        ("coordination.k8s.io", "leases") => {
            vec![
                name,
                col("Holder", "string", |o, _| or_none(&o["spec"]["holderIdentity"])),
                age_column,
            ]
        }
        ("discovery.k8s.io", "endpointslices") => vec![
            name,
            col("AddressType", "string", |o, _| o["addressType"].clone()),
            col("Ports", "string", |o, _| {
                let ports: Vec<String> = o["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| match (&p["port"], p["name"].as_str()) {
                        (Value::Number(n), _) => n.to_string(),
                        (_, Some(name)) => name.to_string(),
                        _ => "*".to_string(),
                    })
                    .collect();
                json!(list_with_more(&ports))
            }),
            col("Endpoints", "string", |o, _| {
                let addresses: Vec<String> = eval(".endpoints[*].addresses[*]", o).iter().map(text).collect();
                json!(list_with_more(&addresses))
            }),
            age_column,
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![
                name,
                col("Created At", "date", |o, _| o["metadata"]["creationTimestamp"].clone()),
            ]
        }
        _ => vec![name, age_column],
    }
}

fn column_definition(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn row_object(object: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => object.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        }),
    }
}

/// A Table of `objects` (already converted to `version`).
pub fn table(
    def: &ResourceDef,
    version: &str,
    objects: &[Value],
    resource_version: u64,
    include: IncludeObject,
    now: Timestamp,
) -> Value {
    let (definitions, rows): (Vec<Value>, Vec<Value>) = if def.custom {
        let mut columns = def.columns.get(version).cloned().unwrap_or_default();
        if columns.is_empty() {
            columns.push(PrinterColumn {
                name: "Age".to_string(),
                type_: "date".to_string(),
                format: String::new(),
                description: String::new(),
                json_path: ".metadata.creationTimestamp".to_string(),
                priority: 0,
            });
        }
        let mut definitions = vec![column_definition("Name", "string", "name", NAME_DESCRIPTION, 0)];
        definitions.extend(columns.iter().map(|c| {
            let description = if c.description.is_empty() {
                format!(
                    "Custom resource definition column (in JSONPath format): {}",
                    c.json_path
                )
            } else {
                c.description.clone()
            };
            column_definition(&c.name, &c.type_, &c.format, &description, c.priority)
        }));
        let rows = objects
            .iter()
            .map(|o| {
                let mut cells = vec![o["metadata"]["name"].clone()];
                cells.extend(columns.iter().map(|c| cell(c, o, now)));
                json!({"cells": cells, "object": row_object(o, include)})
            })
            .collect();
        (definitions, rows)
    } else {
        let columns = builtin_columns(def);
        let definitions = columns
            .iter()
            .map(|c| {
                let name = c.name == "Name";
                column_definition(
                    c.name,
                    c.type_,
                    if name { "name" } else { "" },
                    if name { NAME_DESCRIPTION } else { "" },
                    c.priority,
                )
            })
            .collect();
        let rows = objects
            .iter()
            .map(|o| {
                // The printers read core/v1 fields; events.k8s.io Events are printed as the core ones they are.
                let core = match def.conversion {
                    Conversion::EventsV1 => strategy::event_to_core(o.clone()),
                    Conversion::None | Conversion::CoreEvents => o.clone(),
                };
                let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(&core, now)).collect();
                json!({"cells": cells, "object": row_object(o, include)})
            })
            .collect();
        (definitions, rows)
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(100 * 86400), "100d");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn jsonpath_subset() {
        let o = json!({
            "spec": {"addresses": ["192.0.2.0/24", "2001:db8::/64"]},
            "status": {"free": 3, "conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}
        });
        assert_eq!(eval(".status.free", &o), vec![json!(3)]);
        assert_eq!(eval("{.spec.addresses[1]}", &o), vec![json!("2001:db8::/64")]);
        assert_eq!(
            eval(".status.conditions[?(@.type==\"Ready\")].status", &o),
            vec![json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[*].type", &o),
            vec![json!("Synced"), json!("Ready")]
        );
        assert!(eval(".status.missing", &o).is_empty());
        assert!(eval("bad", &o).is_empty());
    }

    #[test]
    fn wants_table_reads_kubectl_accept() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
