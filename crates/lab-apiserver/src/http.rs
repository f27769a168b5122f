//! The HTTP shell: axum routes, URL parsing, content negotiation (JSON, Table, PartialObjectMetadata) and watch
//! streams. All state changes happen in `Store` under one mutex, held only for the in-memory operation.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::discovery;
use crate::metrics::Metrics;
use crate::patch::PatchKind;
use crate::protobuf;
use crate::registry::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::status::{self, ApiError, Target};
use crate::store::{self, Deleted, Event, EventKind, Preconditions, Store, Subresource};
use crate::table::{self, IncludeObject};

/// Longest watch a client can ask for (a week).
const MAX_WATCH_SECONDS: u64 = 7 * 24 * 3600;

/// Shared by every request.
pub struct AppState {
    pub store: Mutex<Store>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub server_address: String,
    /// Watch duration when the client gives no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// How often a quiet watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl AppState {
    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-written (every write commits last), so a
        // poisoned lock is still usable.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
        .route("/livez", get(ok))
        .route("/metrics", get(metrics))
        .route(
            "/version",
            get(|| async { json_response(StatusCode::OK, &discovery::version()) }),
        )
        .route("/openapi/v3", get(openapi_v3))
        .route("/openapi/v2", get(openapi_v2))
        .fallback(api)
        .with_state(state)
}

/// No OpenAPI v3 documents: kubectl then finds no server-side field validation and falls back to v2.
async fn openapi_v3() -> Response {
    json_response(StatusCode::OK, &json!({"paths": {}}))
}

/// An empty (valid) protobuf OpenAPI v2 document: kubectl's client-side validation finds no schema for any kind
/// and accepts the object, so `kubectl apply` works without `--validate=false`.
async fn openapi_v2() -> Response {
    let content_type = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
    ([(header::CONTENT_TYPE, content_type)], Bytes::new()).into_response()
}

async fn ok() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn error_response(error: &ApiError) -> Response {
    json_response(error.status_code(), &error.to_status())
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A request for a resource, parsed from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ApiPath {
    CoreVersions,
    GroupList,
    Group(String),
    GroupVersion(String, String),
    Resource(ResourcePath),
}

fn parse_path(path: &str) -> Option<ApiPath> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Some(ApiPath::CoreVersions),
        ["apis"] => return Some(ApiPath::GroupList),
        ["apis", group] => return Some(ApiPath::Group(group.to_string())),
        ["api", version, rest @ ..] => (String::new(), version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (group.to_string(), version.to_string(), rest),
        _ => return None,
    };
    let resource = |namespace: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
        Some(ApiPath::Resource(ResourcePath {
            group: group.clone(),
            version: version.clone(),
            namespace: namespace.map(str::to_string),
            plural: plural.to_string(),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        }))
    };
    match rest {
        [] => Some(ApiPath::GroupVersion(group.clone(), version.clone())),
        [plural] => resource(None, plural, None, None),
        // `namespaces/<name>/status` is the namespace's subresource, not a collection called "status".
        ["namespaces", name, sub @ ("status" | "finalize")] => resource(None, "namespaces", Some(name), Some(sub)),
        ["namespaces", ns, plural] => resource(Some(ns), plural, None, None),
        [plural, name] => resource(None, plural, Some(name), None),
        [plural, name, sub] => resource(None, plural, Some(name), Some(sub)),
        ["namespaces", ns, plural, name] => resource(Some(ns), plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => resource(Some(ns), plural, Some(name), Some(sub)),
        _ => None,
    }
}

/// How objects are rendered, from the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Representation {
    Full,
    Table(IncludeObject),
    Metadata,
}

impl Representation {
    fn from_request(headers: &HeaderMap, params: &HashMap<String, String>) -> Self {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if table::wants_table(accept) {
            Self::Table(IncludeObject::parse(params.get("includeObject").map(String::as_str)))
        } else if accept
            .split(',')
            .next()
            .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
        {
            Self::Metadata
        } else {
            Self::Full
        }
    }
}

fn partial_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

/// A request's Kubernetes audit verb, as counted in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
        }
    }
}

/// Everything a resource handler needs.
struct Call {
    def: ResourceDef,
    path: ResourcePath,
    params: HashMap<String, String>,
    representation: Representation,
}

impl Call {
    fn subresource(&self) -> Subresource {
        if self.path.subresource.is_some() {
            Subresource::Status
        } else {
            Subresource::Main
        }
    }

    fn namespace(&self) -> Option<&str> {
        self.path.namespace.as_deref()
    }

    fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or_default()
    }

    fn render(&self, object: Value, resource_version: u64) -> Value {
        let object = store::for_version(object, &self.def, &self.path.version);
        match self.representation {
            Representation::Full => object,
            Representation::Metadata => partial_metadata(&object),
            Representation::Table(include) => table::table(
                &self.def,
                &self.path.version,
                &[object],
                resource_version,
                include,
                Timestamp::now(),
            ),
        }
    }

    fn selectors(&self) -> Result<Selectors, ApiError> {
        let labels = LabelSelector::parse(self.params.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            self.params.get("fieldSelector").map_or("", String::as_str),
            &self.def.field_selectors,
            self.def.field_label_error,
        )
        .map_err(ApiError::bad_request)?;
        Ok(Selectors { labels, fields })
    }
}

/// Request bodies are JSON, or Kubernetes protobuf for the kinds kubectl's typed commands send (`protobuf`);
/// CBOR and YAML are refused with 415.
fn check_body_type(content_type: &str) -> Result<(), ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !protobuf::is_protobuf(media) && (media.contains("protobuf") || media.contains("cbor") || media.contains("yaml"))
    {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, \
             application/vnd.kubernetes.protobuf (lab-apiserver does not decode {media})"
        )));
    }
    Ok(())
}

fn parse_body(content_type: &str, body: &Bytes) -> Result<Value, ApiError> {
    if protobuf::is_protobuf(content_type) {
        return protobuf::decode(body).map_err(|error| match error {
            protobuf::Error::Malformed(why) => ApiError::bad_request(format!("error decoding request body: {why}")),
            protobuf::Error::Unsupported(what) => ApiError::unsupported_media_type(format!(
                "lab-apiserver decodes protobuf bodies of Namespaces, Services, ConfigMaps, Secrets and \
                 DeleteOptions, not {what}; send JSON"
            )),
        });
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

async fn api(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    match parse_path(&path) {
        None => page_not_found(),
        Some(ApiPath::Resource(resource_path)) => {
            resource_request(&state, &method, &uri, &headers, &body, resource_path)
        }
        Some(discovery_path) => discovery_request(&state, &method, &discovery_path),
    }
}

fn discovery_request(state: &AppState, method: &Method, which: &ApiPath) -> Response {
    if method != Method::GET {
        return error_response(&ApiError::method_not_allowed(format!(
            "{method} is not allowed on discovery documents"
        )));
    }
    let store = state.store();
    let registry = store.registry();
    let document = match which {
        ApiPath::CoreVersions => Some(discovery::api_versions(&state.server_address)),
        ApiPath::GroupList => Some(discovery::group_list(registry)),
        ApiPath::Group(group) => discovery::group(registry, group),
        ApiPath::GroupVersion(group, version) => discovery::resource_list(registry, group, version),
        ApiPath::Resource(_) => None,
    };
    match document {
        Some(document) => json_response(StatusCode::OK, &document),
        None => page_not_found(),
    }
}

/// The real server's answer for a path none of its handlers serves: its mux's plain-text page.
fn page_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// 404 for a resource path nothing serves: a Status under `/api` and built-in groups, the mux's page where no
/// built-in handler exists (unknown groups, groups of custom resources).
fn unknown_resource(state: &AppState, group: &str) -> Response {
    let builtin_group = group.is_empty() || state.store().registry().all().any(|d| d.group == group && !d.custom);
    if builtin_group {
        error_response(&ApiError::no_such_resource())
    } else {
        page_not_found()
    }
}

fn resource_request(
    state: &Arc<AppState>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    resource_path: ResourcePath,
) -> Response {
    let path = uri.path();
    let params = query_params(uri);
    let def = state
        .store()
        .registry()
        .lookup(&resource_path.group, &resource_path.version, &resource_path.plural)
        .cloned();
    let Some(def) = def else {
        return unknown_resource(state, &resource_path.group);
    };
    let scoped_wrong = (resource_path.namespace.is_some() && !def.namespaced)
        || (resource_path.name.is_some() && def.namespaced && resource_path.namespace.is_none());
    let bad_subresource = resource_path
        .subresource
        .as_deref()
        .is_some_and(|s| s != "status" || !def.status_subresource);
    if scoped_wrong || bad_subresource {
        return unknown_resource(state, &resource_path.group);
    }
    let metric_resource = match &resource_path.subresource {
        Some(sub) => format!("{}/{sub}", def.plural),
        None => def.plural.clone(),
    };
    let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (method, resource_path.name.is_some()) {
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if watching => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => {
            let error = ApiError::method_not_allowed(format!("{method} is not supported on {path}"));
            state.metrics.record(method.as_str(), &metric_resource, error.code);
            return error_response(&error);
        }
    };
    let call = Call {
        representation: Representation::from_request(headers, &params),
        def,
        path: resource_path,
        params,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let dry_run = call.params.get("dryRun").is_some_and(|v| !v.is_empty());
    let body_checked = match verb {
        Verb::Get | Verb::List | Verb::Watch => Ok(()),
        // Performing a dry-run write for real would be worse than refusing it.
        _ if dry_run => Err(ApiError::bad_request(
            "dryRun is not supported by lab-apiserver; use kubectl --dry-run=client",
        )),
        Verb::Create | Verb::Update => check_body_type(content_type),
        _ => Ok(()),
    };
    let result = body_checked.and_then(|()| match verb {
        Verb::Get => get_object(state, &call),
        Verb::List => list(state, &call),
        Verb::Watch => watch(state, &call),
        Verb::Create => create(state, &call, content_type, body),
        Verb::Update => update(state, &call, content_type, body),
        Verb::Patch => patch(state, &call, content_type, body),
        Verb::Delete => delete(state, &call, content_type, body),
        Verb::DeleteCollection => delete_collection(state, &call),
    });
    let response = result.unwrap_or_else(|error| error_response(&error));
    let code = response.status().as_u16();
    state.metrics.record(verb.as_str(), &metric_resource, code);
    tracing::debug!(verb = verb.as_str(), resource = %metric_resource, namespace = ?call.path.namespace, name = ?call.path.name, code, "request");
    response
}

fn get_object(state: &AppState, call: &Call) -> Result<Response, ApiError> {
    let store = state.store();
    let object = store.get(&call.def, call.namespace(), call.name())?;
    let rv = store.resource_version();
    drop(store);
    Ok(json_response(StatusCode::OK, &call.render(object, rv)))
}

fn list(state: &AppState, call: &Call) -> Result<Response, ApiError> {
    let selectors = call.selectors()?;
    let limit = match call.params.get("limit").filter(|l| !l.is_empty()) {
        Some(limit) => Some(
            limit
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit \"{limit}\"")))?,
        ),
        None => None,
    };
    let page = state.store().list(
        &call.def,
        call.namespace(),
        &selectors,
        limit,
        call.params.get("continue").map(String::as_str),
    )?;
    let version = &call.path.version;
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(|o| store::for_version(o, &call.def, version))
        .collect();
    let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    let list = match call.representation {
        Representation::Table(include) => {
            let mut table = table::table(
                &call.def,
                version,
                &items,
                page.resource_version,
                include,
                Timestamp::now(),
            );
            table["metadata"] = metadata;
            table
        }
        Representation::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
        Representation::Full => json!({
            "kind": call.def.list_kind,
            "apiVersion": call.def.api_version(version),
            "metadata": metadata,
            "items": items,
        }),
    };
    Ok(json_response(StatusCode::OK, &list))
}

fn create(state: &AppState, call: &Call, content_type: &str, body: &Bytes) -> Result<Response, ApiError> {
    let object = parse_body(content_type, body)?;
    let mut store = state.store();
    let created = store.create(
        &call.def,
        &call.path.version,
        call.namespace(),
        object,
        Timestamp::now(),
    )?;
    let rv = store.resource_version();
    drop(store);
    Ok(json_response(StatusCode::CREATED, &call.render(created, rv)))
}

fn update(state: &AppState, call: &Call, content_type: &str, body: &Bytes) -> Result<Response, ApiError> {
    let object = parse_body(content_type, body)?;
    let mut store = state.store();
    let updated = store.update(
        &call.def,
        &call.path.version,
        call.namespace(),
        call.name(),
        call.subresource(),
        object,
        Timestamp::now(),
    )?;
    let rv = store.resource_version();
    drop(store);
    Ok(json_response(StatusCode::OK, &call.render(updated, rv)))
}

fn patch(state: &AppState, call: &Call, content_type: &str, body: &Bytes) -> Result<Response, ApiError> {
    let kind = PatchKind::from_content_type(content_type).map_err(ApiError::unsupported_media_type)?;
    let patch = parse_body("application/json", body)?;
    let mut store = state.store();
    let patched = store.patch(
        &call.def,
        &call.path.version,
        call.namespace(),
        call.name(),
        call.subresource(),
        kind,
        &patch,
        Timestamp::now(),
    )?;
    let rv = store.resource_version();
    drop(store);
    Ok(json_response(StatusCode::OK, &call.render(patched, rv)))
}

/// `DeleteOptions.preconditions` from a DELETE body (an empty body is fine).
fn preconditions(content_type: &str, body: &Bytes) -> Result<Preconditions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Preconditions::default());
    }
    let options = parse_body(content_type, body)?;
    let text = |field: &str| options["preconditions"][field].as_str().map(str::to_string);
    Ok(Preconditions {
        uid: text("uid"),
        resource_version: text("resourceVersion"),
    })
}

fn delete(state: &AppState, call: &Call, content_type: &str, body: &Bytes) -> Result<Response, ApiError> {
    let preconditions = preconditions(content_type, body)?;
    let mut store = state.store();
    let outcome = store.delete(
        &call.def,
        call.namespace(),
        call.name(),
        &preconditions,
        Timestamp::now(),
    )?;
    let rv = store.resource_version();
    drop(store);
    Ok(match outcome {
        // A Success status (with the uid), as the real server answers for every resource served here; an object
        // kept by finalizers comes back as it is now.
        Deleted::Removed(object) => {
            let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
            let target = Target {
                group: &call.def.group,
                plural: &call.def.plural,
                name: call.name(),
            };
            json_response(StatusCode::OK, &status::success(target, uid))
        }
        Deleted::Pending(object) => json_response(StatusCode::OK, &call.render(object, rv)),
    })
}

fn delete_collection(state: &AppState, call: &Call) -> Result<Response, ApiError> {
    let selectors = call.selectors()?;
    let mut store = state.store();
    let page = store.list(&call.def, call.namespace(), &selectors, None, None)?;
    let mut items = Vec::new();
    for object in page.items {
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match store.delete(
            &call.def,
            namespace.as_deref(),
            &name,
            &Preconditions::default(),
            Timestamp::now(),
        )? {
            Deleted::Removed(o) | Deleted::Pending(o) => {
                items.push(store::for_version(o, &call.def, &call.path.version))
            }
        }
    }
    let rv = store.resource_version();
    drop(store);
    let list = json!({
        "kind": call.def.list_kind,
        "apiVersion": call.def.api_version(&call.path.version),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// Decrements the open-watch gauge when a watch stream ends, however it ends.
struct WatchGuard(Arc<Metrics>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watch_closed();
    }
}

/// One watch connection's state, driven by `futures::stream::unfold`: dropped (and so cancelled) with the
/// response body when the client goes away.
struct WatchStream {
    def: ResourceDef,
    version: String,
    namespace: Option<String>,
    selectors: Selectors,
    representation: Representation,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    /// Highest resourceVersion sent or skipped: the position a bookmark reports.
    position: u64,
    /// BOOKMARK that ends the initial events of a `sendInitialEvents=true` watch.
    initial_events_end: bool,
    bookmark_interval: Duration,
    /// When the next BOOKMARK is due (`allowWatchBookmarks=true` only).
    next_bookmark: Option<Instant>,
    deadline: Instant,
    shutdown: CancellationToken,
    _guard: WatchGuard,
}

impl WatchStream {
    /// The event type this watcher sees, if any: selector transitions turn modifications into ADDED/DELETED.
    fn visible(&self, event: &Event) -> Option<&'static str> {
        if event.resource != self.def.storage || self.namespace.as_ref().is_some_and(|ns| *ns != event.namespace) {
            return None;
        }
        let now = self.selectors.matches(&event.object);
        let before = event.previous.as_ref().is_some_and(|p| self.selectors.matches(p));
        match (event.kind, before, now) {
            (EventKind::Added, _, true) => Some("ADDED"),
            (EventKind::Deleted, _, true) => Some("DELETED"),
            (EventKind::Modified, true, true) => Some("MODIFIED"),
            (EventKind::Modified, false, true) => Some("ADDED"),
            (EventKind::Modified, true, false) => Some("DELETED"),
            _ => None,
        }
    }

    fn line(kind: &str, object: Value) -> Bytes {
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    fn render(&self, event: &Event) -> Option<Bytes> {
        let kind = self.visible(event)?;
        let object = store::for_version(event.object.clone(), &self.def, &self.version);
        let object = match self.representation {
            Representation::Full => object,
            Representation::Metadata => partial_metadata(&object),
            Representation::Table(include) => {
                table::table(&self.def, &self.version, &[object], event.rv, include, Timestamp::now())
            }
        };
        Some(Self::line(kind, object))
    }

    fn bookmark(&self, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": self.position.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        Self::line(
            "BOOKMARK",
            json!({"kind": self.def.kind, "apiVersion": self.def.api_version(&self.version), "metadata": metadata}),
        )
    }

    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                if let Some(line) = self.render(&event) {
                    return Some(line);
                }
                continue;
            }
            if self.initial_events_end {
                self.initial_events_end = false;
                return Some(self.bookmark(true));
            }
            let next_bookmark = self.next_bookmark;
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = sleep_until(self.deadline) => return None,
                () = sleep_until(next_bookmark.unwrap_or(self.deadline)), if next_bookmark.is_some() => {
                    self.next_bookmark = next_bookmark_time(Instant::now(), self.bookmark_interval, self.deadline);
                    return Some(self.bookmark(false));
                }
                received = self.live.recv() => match received {
                    Ok(event) => {
                        self.position = self.position.max(event.rv);
                        if let Some(line) = self.render(&event) {
                            return Some(line);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Never block writers for a slow reader: end this watch; the client resumes from its last
                        // resourceVersion (replayed from history) or re-lists after a 410.
                        tracing::warn!(resource = %self.def.plural, missed, "watcher fell behind; closing its watch");
                        return None;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    }
}

/// When a watch allowing bookmarks gets its next one: every `interval`, and 2 s before its deadline so that a
/// client resumes from a recent resourceVersion (the cacher's `nextBookmarkTime` in k8s.io/apiserver); none once
/// that moment has passed.
fn next_bookmark_time(now: Instant, interval: Duration, deadline: Instant) -> Option<Instant> {
    let heartbeat = now + interval;
    let next = match deadline.checked_sub(Duration::from_secs(2)) {
        Some(before_deadline) if before_deadline < heartbeat => before_deadline,
        _ => heartbeat,
    };
    (next > now).then_some(next)
}

fn watch(state: &Arc<AppState>, call: &Call) -> Result<Response, ApiError> {
    let selectors = call.selectors()?;
    let from = match call.params.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion \"{rv}\"")))?,
        ),
    };
    let send_initial = call.params.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = match call.params.get("timeoutSeconds") {
        // Capped so that `now + timeout` cannot overflow.
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds \"{t}\"")))?
                .min(MAX_WATCH_SECONDS),
        ),
        None => state.default_watch_timeout,
    };
    let bookmarks = call
        .params
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let store = state.store();
    let position = store.resource_version();
    let start = store.watch(&call.def, call.namespace(), if send_initial { None } else { from });
    drop(store);
    let (backlog, live) = match start {
        Ok(start) => start,
        Err(gone) => {
            // The real server answers a too-old watch with 200 and a single ERROR event carrying 410 Gone.
            let line = WatchStream::line("ERROR", gone.to_status());
            return Ok(watch_response(Body::from(line)));
        }
    };
    state.metrics.watch_opened();
    let now = Instant::now();
    let next_bookmark = bookmarks
        .then(|| next_bookmark_time(now, state.bookmark_interval, now + timeout))
        .flatten();
    let stream = WatchStream {
        def: call.def.clone(),
        version: call.path.version.clone(),
        namespace: call.path.namespace.clone(),
        selectors,
        representation: call.representation,
        backlog: backlog.into(),
        live,
        position,
        initial_events_end: send_initial,
        bookmark_interval: state.bookmark_interval,
        next_bookmark,
        deadline: now + timeout,
        shutdown: state.shutdown.clone(),
        _guard: WatchGuard(state.metrics.clone()),
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let line = stream.next_line().await?;
        Some((Ok::<_, std::convert::Infallible>(line), stream))
    });
    Ok(watch_response(Body::from_stream(body)))
}

fn watch_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(ns: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>) -> Option<ApiPath> {
        Some(ApiPath::Resource(ResourcePath {
            group: String::new(),
            version: "v1".to_string(),
            namespace: ns.map(str::to_string),
            plural: plural.to_string(),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        }))
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/api"), Some(ApiPath::CoreVersions));
        assert_eq!(
            parse_path("/apis/herald.dev/v1"),
            Some(ApiPath::GroupVersion("herald.dev".into(), "v1".into()))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces"),
            resource(None, "namespaces", None, None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/default"),
            resource(None, "namespaces", Some("default"), None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x/status"),
            resource(None, "namespaces", Some("x"), Some("status"))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x/services"),
            resource(Some("x"), "services", None, None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x/services/s/status"),
            resource(Some("x"), "services", Some("s"), Some("status"))
        );
        assert_eq!(
            parse_path("/api/v1/nodes/n/status"),
            resource(None, "nodes", Some("n"), Some("status"))
        );
        assert_eq!(parse_path("/nope"), None);
    }

    #[test]
    fn query_decoding() {
        assert_eq!(decode("app%3Dweb%2Ctier+in+%28a%29"), "app=web,tier in (a)");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
