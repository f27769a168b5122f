//! Server-side printing: `meta.k8s.io/v1` `Table` responses for `kubectl get`. Custom resources use their
//! CRD's `additionalPrinterColumns` (JSONPath subset below); built-ins use the columns a real cluster prints.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::registry::{PrinterColumn, ResourceDef};

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

fn data_count(o: &Value, _: Timestamp) -> Value {
    let count = |f: &str| o[f].as_object().map_or(0, |m| m.len());
    json!(count("data") + count("binaryData"))
}

fn event_object(o: &Value, _: Timestamp) -> Value {
    let involved = &o["involvedObject"];
    json!(format!(
        "{}/{}",
        involved["kind"].as_str().unwrap_or_default().to_lowercase(),
        involved["name"].as_str().unwrap_or_default()
    ))
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
        ("", "nodes") => vec![
            name,
            col("Status", "string", node_status),
            col("Roles", "string", |_, _| json!("<none>")),
            age_column,
            col("Version", "string", |o, _| {
                or_none(&o["status"]["nodeInfo"]["kubeletVersion"])
            }),
        ],
        ("", "namespaces") => vec![
            name,
            col("Status", "string", |o, _| o["status"]["phase"].clone()),
            age_column,
        ],
        ("", "configmaps") => vec![name, col("Data", "integer", data_count), age_column],
        ("", "secrets") => vec![
            name,
            col("Type", "string", |o, _| o["type"].clone()),
            col("Data", "integer", data_count),
            age_column,
        ],
        ("", "events") => vec![
            col("Last Seen", "string", |o, now| {
                let seen = &o["lastTimestamp"];
                if seen.is_null() {
                    self::age(&o["eventTime"], now)
                } else {
                    self::age(seen, now)
                }
            }),
            col("Type", "string", |o, _| o["type"].clone()),
            col("Reason", "string", |o, _| o["reason"].clone()),
            col("Object", "string", event_object),
            col("Message", "string", |o, _| o["message"].clone()),
        ],
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
                let ports: Vec<String> = eval(".ports[*].port", o).iter().map(text).collect();
                if ports.is_empty() {
                    json!("<unset>")
                } else {
                    json!(ports.join(","))
                }
            }),
            col("Endpoints", "string", |o, _| {
                let addresses: Vec<String> = eval(".endpoints[*].addresses[*]", o).iter().map(text).collect();
                if addresses.is_empty() {
                    json!("<unset>")
                } else {
                    json!(addresses.join(","))
                }
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
        let mut definitions = vec![column_definition(
            "Name",
            "string",
            "name",
            "Name must be unique within a namespace.",
            0,
        )];
        definitions.extend(
            columns
                .iter()
                .map(|c| column_definition(&c.name, &c.type_, &c.format, &c.description, c.priority)),
        );
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
                column_definition(
                    c.name,
                    c.type_,
                    if c.name == "Name" { "name" } else { "" },
                    "",
                    c.priority,
                )
            })
            .collect();
        let rows = objects
            .iter()
            .map(|o| {
                let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(o, now)).collect();
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
