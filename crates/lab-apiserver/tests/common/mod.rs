//! Shared by the integration tests: a server per test, a small custom resource, raw HTTP helpers.
#![allow(dead_code)]

use std::time::Duration;

use herald_lab_apiserver::{Config, Running, start};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A namespaced test resource with a status subresource and printer columns.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lab.test",
    version = "v1",
    kind = "Counter",
    namespaced,
    status = "CounterStatus",
    shortname = "ctr",
    category = "lab",
    printcolumn = r#"{"name":"Value","type":"integer","jsonPath":".spec.value"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct CounterSpec {
    pub value: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CounterStatus {
    pub seen: i64,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

pub async fn server() -> (Running, Client) {
    server_with(Config::default()).await
}

pub async fn server_with(config: Config) -> (Running, Client) {
    let server = start(config).await.expect("start lab-apiserver");
    let client = server.client().expect("client");
    (server, client)
}

/// Creates the Counter CRD and waits until it is established, as a controller's setup would.
pub async fn install_counter_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Counter::crd())
        .await
        .expect("create CRD");
    let established = await_condition(crds, "counters.lab.test", conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(10), established)
        .await
        .expect("CRD established in time")
        .expect("wait");
}

pub fn counter(name: &str, value: i64) -> Counter {
    let mut c = Counter::new(name, CounterSpec { value });
    c.metadata.namespace = Some("default".to_string());
    c
}

/// `(code, reason)` of an API error.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A raw HTTP/1.1 request (no client-side checks, so malformed bodies reach the server), returning the status
/// code and the body parsed as JSON (or as a JSON string when it is not JSON).
pub async fn raw(server: &Running, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (code, value)
}

impl Counter {
    /// The Counter CRD, to modify into invalid variants.
    pub fn crd_for_test() -> CustomResourceDefinition {
        Counter::crd()
    }
}
