//! One API server as the conversation sees it: raw HTTP through kube's client, kube-rs' typed API, and the real
//! `kubectl` as a process. Plus the normalization that turns responses into comparable outcomes: values that
//! differ between any two runs (uids, timestamps, resourceVersions, allocated cluster IPs and node ports) are
//! masked, everything else is kept.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::http::Request;
use futures::{AsyncBufReadExt, StreamExt};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Map, Value, json};
use tokio::process::Command;

/// Media type of a `Table` request, as kubectl sends it.
pub const TABLE: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// A response: HTTP code and body (JSON, or the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
}

/// What a kubectl invocation did.
#[derive(Debug, Clone)]
pub struct Kubectl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub struct Target {
    pub client: Client,
    kubeconfig: PathBuf,
    /// kubectl's HOME (its discovery cache), private to this target.
    home: PathBuf,
    kubectl: PathBuf,
}

impl Target {
    pub async fn new(kubeconfig: &Path, home: &Path, kubectl: &Path) -> Self {
        let config = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .expect("kube config from kubeconfig");
        std::fs::create_dir_all(home).expect("kubectl home");
        Self {
            client: Client::try_from(config).expect("kube client"),
            kubeconfig: kubeconfig.to_path_buf(),
            home: home.to_path_buf(),
            kubectl: kubectl.to_path_buf(),
        }
    }

    /// A request through kube's client (`Client::send`), so errors come back as the Status the server wrote.
    pub async fn call(&self, method: &str, path: &str, content_type: &str, accept: &str, body: Vec<u8>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .header("accept", accept)
            .body(kube::client::Body::from(body))
            .expect("request");
        let response = match tokio::time::timeout(Duration::from_secs(30), self.client.send(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                return Reply {
                    code: 0,
                    body: json!(format!("transport error: {error}")),
                };
            }
            Err(_) => {
                return Reply {
                    code: 0,
                    body: json!("no response in 30 s"),
                };
            }
        };
        let code = response.status().as_u16();
        let bytes = response.into_body().collect_bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        Reply { code, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, "application/json", "application/json", Vec::new())
            .await
    }

    pub async fn get_as(&self, path: &str, accept: &str) -> Reply {
        self.call("GET", path, "application/json", accept, Vec::new()).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send_json("POST", path, "application/json", body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send_json("PUT", path, "application/json", body).await
    }

    /// PATCH with `kind` one of `merge`, `json`, `strategic`.
    pub async fn patch(&self, path: &str, kind: &str, body: &Value) -> Reply {
        let content_type = match kind {
            "json" => "application/json-patch+json",
            "strategic" => "application/strategic-merge-patch+json",
            _ => "application/merge-patch+json",
        };
        self.send_json("PATCH", path, content_type, body).await
    }

    pub async fn delete(&self, path: &str, options: Option<&Value>) -> Reply {
        let body = options.map(|o| o.to_string().into_bytes()).unwrap_or_default();
        self.call("DELETE", path, "application/json", "application/json", body)
            .await
    }

    async fn send_json(&self, method: &str, path: &str, content_type: &str, body: &Value) -> Reply {
        self.call(
            method,
            path,
            content_type,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    /// Opens a watch (`path` carries `watch=1` and the other parameters), runs `during` while it is open, then
    /// reads events until `done` says so, the stream ends, or `limit` passes. Returns the HTTP code (of an
    /// error response, or 200) and the events.
    pub async fn watch<F>(
        &self,
        path: &str,
        during: F,
        done: impl Fn(&[Value]) -> bool,
        limit: Duration,
    ) -> (u16, Vec<Value>)
    where
        F: std::future::Future<Output = ()>,
    {
        self.watch_with(path, "application/json", during, done, limit).await
    }

    /// A watch with another `Accept` (Tables), reading what the watch already holds.
    pub async fn watch_as(
        &self,
        path: &str,
        accept: &str,
        done: impl Fn(&[Value]) -> bool,
        limit: Duration,
    ) -> (u16, Vec<Value>) {
        self.watch_with(path, accept, async {}, done, limit).await
    }

    async fn watch_with<F>(
        &self,
        path: &str,
        accept: &str,
        during: F,
        done: impl Fn(&[Value]) -> bool,
        limit: Duration,
    ) -> (u16, Vec<Value>)
    where
        F: std::future::Future<Output = ()>,
    {
        let request = Request::builder()
            .uri(path)
            .header("accept", accept)
            .body(Vec::new())
            .expect("request");
        let stream = match self.client.request_stream(request).await {
            Ok(stream) => stream,
            Err(kube::Error::Api(status)) => {
                return (
                    status.code,
                    vec![json!({"status": status.status, "reason": status.reason})],
                );
            }
            Err(error) => return (0, vec![json!(format!("transport error: {error}"))]),
        };
        during.await;
        let mut lines = stream.lines();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&events) {
            match tokio::time::timeout_at(deadline, lines.next()).await {
                Ok(Some(Ok(line))) => events.push(serde_json::from_str(&line).unwrap_or_else(|_| json!(line))),
                Ok(Some(Err(error))) => {
                    events.push(json!(format!("read error: {error}")));
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        (200, events)
    }

    /// Runs `kubectl --kubeconfig K ARGS` with `input` on stdin.
    pub async fn kubectl_with_input(&self, args: &[&str], input: &str) -> Kubectl {
        use tokio::io::AsyncWriteExt;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kubectl");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
            Ok(Ok(output)) => Kubectl {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            },
            Ok(Err(error)) => Kubectl {
                code: -1,
                stdout: String::new(),
                stderr: error.to_string(),
            },
            Err(_) => Kubectl {
                code: -1,
                stdout: String::new(),
                stderr: "kubectl took over 60 s".to_string(),
            },
        }
    }

    pub async fn kubectl(&self, args: &[&str]) -> Kubectl {
        self.kubectl_with_input(args, "").await
    }
}

/// Keys whose values change from run to run; masked wherever they appear.
const TIME_KEYS: [&str; 11] = [
    "creationTimestamp",
    "deletionTimestamp",
    "lastTransitionTime",
    "eventTime",
    "firstTimestamp",
    "lastTimestamp",
    "lastObservedTime",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
    "renewTime",
    "acquireTime",
];

/// Masks run-specific values (see the module comment) and drops `managedFields` (server-side apply
/// bookkeeping, which lab-apiserver does not keep: docs/lab-apiserver.md).
pub fn mask(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, v) in map {
                let masked = match (key.as_str(), v) {
                    ("managedFields", _) => continue,
                    (_, Value::Null) => Value::Null,
                    ("uid", Value::String(s)) if !s.is_empty() => json!("<uid>"),
                    ("resourceVersion", Value::String(s)) if !s.is_empty() => json!("<rv>"),
                    ("continue", Value::String(s)) if !s.is_empty() => json!("<continue>"),
                    // The format stays visible (seconds or microseconds, `Z`), the value does not.
                    (k, Value::String(t)) if TIME_KEYS.contains(&k) => {
                        json!(
                            t.chars()
                                .map(|c| if c.is_ascii_digit() { '0' } else { c })
                                .collect::<String>()
                        )
                    }
                    ("clusterIP", Value::String(s)) if s != "None" && !s.is_empty() => json!("<cluster-ip>"),
                    ("clusterIPs", Value::Array(ips)) => Value::Array(
                        ips.iter()
                            .map(|ip| {
                                if ip == "None" {
                                    ip.clone()
                                } else {
                                    json!("<cluster-ip>")
                                }
                            })
                            .collect(),
                    ),
                    ("nodePort" | "healthCheckNodePort", Value::Number(n))
                        if n.as_u64().is_some_and(|p| (30000..=32767).contains(&p)) =>
                    {
                        json!("<node-port>")
                    }
                    _ => mask(v),
                };
                out.insert(key.clone(), masked);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(mask).collect()),
        other => other.clone(),
    }
}

/// The outcome of a request: the code, and the masked body (a Status or an object).
pub fn outcome(reply: &Reply) -> Value {
    json!({"code": reply.code, "body": mask(&reply.body)})
}

/// Only code and, for a Status, its `status` and `reason`: for errors whose message is the server's parser
/// talking (malformed JSON), which no client shows as more than an error.
pub fn outcome_class(reply: &Reply) -> Value {
    let body = &reply.body;
    json!({"code": reply.code, "kind": body["kind"], "status": body["status"], "reason": body["reason"]})
}

/// Selected fields of a reply's body (`a.b.c` paths), masked, with the HTTP code (a `code` path is that code).
pub fn fields(reply: &Reply, paths: &[&str]) -> Value {
    let mut out = Map::new();
    out.insert("code".to_string(), json!(reply.code));
    for path in paths.iter().filter(|p| **p != "code") {
        // Masked under its own key, so `metadata.creationTimestamp` is masked like `creationTimestamp`.
        let key = path.rsplit('.').next().unwrap_or(path);
        let masked = mask(&json!({key: at(&reply.body, path)}));
        out.insert(path.to_string(), masked[key].clone());
    }
    Value::Object(out)
}

/// The value at a dotted path (`metadata.labels`), or null.
pub fn at(value: &Value, path: &str) -> Value {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `metadata.name` of each item of a list reply (or the Status of a failed list).
pub fn names(reply: &Reply) -> Value {
    if reply.code != 200 {
        return outcome(reply);
    }
    let names: Vec<Value> = reply.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item["metadata"]["name"].clone())
        .collect();
    json!({"code": reply.code, "names": names})
}

fn is_age(cell: &str) -> bool {
    let rest = cell.trim_end_matches(|c: char| c.is_ascii_digit() || "smhdy".contains(c));
    (rest.is_empty() && cell.starts_with(|c: char| c.is_ascii_digit()) && cell.ends_with(|c: char| "smhdy".contains(c)))
        || matches!(cell, "<invalid>" | "<unknown>")
}

fn is_cluster_ip(cell: &str) -> bool {
    let octets: Vec<u32> = cell.split('.').filter_map(|o| o.parse().ok()).collect();
    cell.split('.').count() == 4
        && octets.len() == 4
        && match octets[..] {
            // lab-apiserver's 10.96.0.0/12, the real server's 203.0.113.224/28 (scripts/kube-apiserver.sh).
            [10, b, _, _] => (96..=111).contains(&b),
            [203, 0, 113, d] => (224..=239).contains(&d),
            _ => false,
        }
}

/// Masks node ports inside `80:31234/TCP`.
fn mask_node_ports(cell: &str) -> String {
    cell.split(',')
        .map(|port| match port.split_once(':') {
            Some((p, rest)) => {
                let (node, proto) = rest.split_once('/').unwrap_or((rest, ""));
                if node.parse::<u32>().is_ok_and(|n| (30000..=32767).contains(&n)) {
                    format!("{p}:<node-port>/{proto}")
                } else {
                    port.to_string()
                }
            }
            None => port.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn is_node_port(cell: &str) -> bool {
    cell.split_once('/').is_some_and(|(port, proto)| {
        port.parse::<u32>().is_ok_and(|p| (30000..=32767).contains(&p)) && matches!(proto, "TCP" | "UDP" | "SCTP")
    })
}

fn mask_cell(cell: &str) -> String {
    if is_node_port(cell) {
        "<node-port>".to_string()
    } else if is_age(cell) {
        "<age>".to_string()
    } else if is_cluster_ip(cell) {
        "<cluster-ip>".to_string()
    } else if cell.chars().all(|c| c == '-') && !cell.is_empty() {
        "---".to_string()
    } else if cell.contains(':') && cell.contains('/') {
        mask_node_ports(cell)
    } else {
        cell.to_string()
    }
}

/// kubectl's printed output as comparable lines: columns split where kubectl's tabwriter put two or more spaces
/// (column widths follow the content), run-specific cells masked.
pub fn text_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let indent = if line.starts_with(' ') { "  " } else { "" };
            let cells: Vec<String> = line
                .trim()
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|cell| {
                    // `Name:  value` pairs and plain cells alike.
                    cell.split(' ').map(mask_cell).collect::<Vec<_>>().join(" ")
                })
                .collect();
            format!("{indent}{}", cells.join(" | "))
        })
        .collect()
}

/// A kubectl run: exit code, printed lines and error lines, masked.
pub fn kubectl_outcome(run: &Kubectl) -> Value {
    json!({"exit": run.code, "stdout": text_lines(&run.stdout), "stderr": text_lines(&run.stderr)})
}

/// The column descriptions of a `Table` reply (recorded apart from the rest of the table: no client prints them).
pub fn table_descriptions(reply: &Reply) -> Value {
    let descriptions: Vec<Value> = reply.body["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!([c["name"], c["description"]]))
        .collect();
    json!(descriptions)
}

/// A `Table` reply: column definitions (without descriptions, see `table_descriptions`) and masked rows (date
/// columns as `<age>`).
pub fn table(reply: &Reply) -> Value {
    if reply.body["kind"] != "Table" {
        return outcome(reply);
    }
    let mut columns = reply.body["columnDefinitions"].as_array().cloned().unwrap_or_default();
    for column in &mut columns {
        if let Some(map) = column.as_object_mut() {
            map.remove("description");
        }
    }
    let rows: Vec<Value> = reply.body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let cells: Vec<Value> = row["cells"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(&columns)
                .map(|(cell, column)| match cell {
                    Value::String(s) if column["type"] == "date" => json!(if s.is_empty() { "" } else { "<age>" }),
                    Value::String(s) => json!(mask_cell(s)),
                    other => other.clone(),
                })
                .collect();
            json!({"cells": cells, "object": mask(&row["object"])})
        })
        .collect();
    json!({
        "code": reply.code,
        "kind": reply.body["kind"],
        "apiVersion": reply.body["apiVersion"],
        "columnDefinitions": columns,
        "rows": rows,
    })
}
