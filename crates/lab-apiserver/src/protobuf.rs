//! kubectl's protobuf request bodies (`Content-Type: application/vnd.kubernetes.protobuf`): the 4-byte `k8s\0`
//! magic, then a `runtime.Unknown` envelope (apiVersion, kind, raw bytes of the object). Decoded with the prost
//! types kube-rs generates from the upstream `.proto` files (`k8s-pb`) and turned into the JSON the real server's
//! JSON encoding of the same Go object would give: Go writes every non-pointer field into protobuf, so empty
//! strings, zero numbers and `false` of such fields are "not set" (their JSON tags are `omitempty`), while pointer
//! fields (`Option` that Go only writes when non-nil) keep their value.
//!
//! The kinds are those kubectl's typed commands send for resources served here (`create namespace|service|
//! configmap|secret`), plus Nodes, Events and `DeleteOptions`. Responses stay JSON, which kubectl accepts (it asks
//! for `application/vnd.kubernetes.protobuf,application/json`).

use std::collections::BTreeMap;

use base64::Engine;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};

/// The prefix of every protobuf-encoded Kubernetes object.
const MAGIC: &[u8] = b"k8s\0";

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// A JSON object under construction, with Go's `omitempty` rules.
#[derive(Default)]
struct Object(Map<String, Value>);

impl Object {
    fn set(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_string(), value);
        self
    }

    /// A non-pointer string: omitted when empty.
    fn string(self, key: &str, value: &Option<String>) -> Self {
        match value.as_deref() {
            Some(s) if !s.is_empty() => self.set(key, json!(s)),
            _ => self,
        }
    }

    /// A pointer field: present whenever it was sent.
    fn pointer<T: Into<Value> + Clone>(self, key: &str, value: &Option<T>) -> Self {
        match value {
            Some(v) => self.set(key, v.clone().into()),
            None => self,
        }
    }

    /// A non-pointer number: omitted when zero.
    fn number<T: Into<i64> + Copy>(self, key: &str, value: &Option<T>) -> Self {
        match value.map(Into::into) {
            Some(n) if n != 0 => self.set(key, json!(n)),
            _ => self,
        }
    }

    /// A non-pointer bool: omitted when false.
    fn flag(self, key: &str, value: &Option<bool>) -> Self {
        match value {
            Some(true) => self.set(key, json!(true)),
            _ => self,
        }
    }

    fn strings(self, key: &str, values: &[String]) -> Self {
        if values.is_empty() {
            self
        } else {
            self.set(key, json!(values))
        }
    }

    fn map(self, key: &str, values: &BTreeMap<String, String>) -> Self {
        if values.is_empty() {
            self
        } else {
            self.set(key, json!(values))
        }
    }

    fn list(self, key: &str, values: Vec<Value>) -> Self {
        if values.is_empty() {
            self
        } else {
            self.set(key, Value::Array(values))
        }
    }

    fn child(self, key: &str, value: Option<Value>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn time(value: &Option<meta::Time>) -> Option<Value> {
    let seconds = value.as_ref()?.seconds?;
    // Go's zero time (year 1) and the epoch both mean "not set" in a request body.
    if seconds <= 0 {
        return None;
    }
    let timestamp = jiff::Timestamp::from_second(seconds).ok()?;
    Some(json!(timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn bytes_map(values: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), base64::engine::general_purpose::STANDARD.encode(v)))
        .collect()
}

fn object_meta(m: &Option<meta::ObjectMeta>) -> Value {
    let Some(m) = m else {
        return json!({});
    };
    let owners: Vec<Value> = m
        .owner_references
        .iter()
        .map(|o| {
            Object::default()
                .string("apiVersion", &o.api_version)
                .string("kind", &o.kind)
                .string("name", &o.name)
                .string("uid", &o.uid)
                .pointer("controller", &o.controller)
                .pointer("blockOwnerDeletion", &o.block_owner_deletion)
                .done()
        })
        .collect();
    // managedFields are server-side apply bookkeeping, which lab-apiserver does not keep.
    Object::default()
        .string("name", &m.name)
        .string("generateName", &m.generate_name)
        .string("namespace", &m.namespace)
        .string("uid", &m.uid)
        .string("resourceVersion", &m.resource_version)
        .number("generation", &m.generation)
        .child("creationTimestamp", time(&m.creation_timestamp))
        .child("deletionTimestamp", time(&m.deletion_timestamp))
        .pointer("deletionGracePeriodSeconds", &m.deletion_grace_period_seconds)
        .map("labels", &m.labels)
        .map("annotations", &m.annotations)
        .list("ownerReferences", owners)
        .strings("finalizers", &m.finalizers)
        .done()
}

fn condition(c: &meta::Condition) -> Value {
    Object::default()
        .string("type", &c.r#type)
        .string("status", &c.status)
        .number("observedGeneration", &c.observed_generation)
        .set(
            "lastTransitionTime",
            time(&c.last_transition_time).unwrap_or(Value::Null),
        )
        .string("reason", &c.reason)
        .string("message", &c.message)
        .done()
}

fn int_or_string(value: &Option<IntOrString>) -> Option<Value> {
    let v = value.as_ref()?;
    match v.r#type {
        Some(1) => v.str_val.as_deref().filter(|s| !s.is_empty()).map(|s| json!(s)),
        _ => v.int_val.filter(|n| *n != 0).map(|n| json!(n)),
    }
}

fn namespace(ns: core::Namespace) -> Value {
    let spec = ns
        .spec
        .map(|s| Object::default().strings("finalizers", &s.finalizers).done());
    let status = ns.status.map(|s| {
        let conditions = s
            .conditions
            .iter()
            .map(|c| {
                Object::default()
                    .string("type", &c.r#type)
                    .string("status", &c.status)
                    .child("lastTransitionTime", time(&c.last_transition_time))
                    .string("reason", &c.reason)
                    .string("message", &c.message)
                    .done()
            })
            .collect();
        Object::default()
            .string("phase", &s.phase)
            .list("conditions", conditions)
            .done()
    });
    Object::default()
        .set("metadata", object_meta(&ns.metadata))
        .child("spec", spec)
        .child("status", status)
        .done()
}

fn service(svc: core::Service) -> Value {
    let spec = svc.spec.map(|s| {
        let ports = s
            .ports
            .iter()
            .map(|p| {
                Object::default()
                    .string("name", &p.name)
                    .string("protocol", &p.protocol)
                    .pointer("appProtocol", &p.app_protocol)
                    .number("port", &p.port)
                    .child("targetPort", int_or_string(&p.target_port))
                    .number("nodePort", &p.node_port)
                    .done()
            })
            .collect();
        let affinity = s.session_affinity_config.as_ref().map(|c| {
            let client_ip = c
                .client_ip
                .as_ref()
                .map(|ip| Object::default().pointer("timeoutSeconds", &ip.timeout_seconds).done());
            Object::default().child("clientIP", client_ip).done()
        });
        Object::default()
            .list("ports", ports)
            .map("selector", &s.selector)
            .string("clusterIP", &s.cluster_ip)
            .strings("clusterIPs", &s.cluster_ips)
            .string("type", &s.r#type)
            .strings("externalIPs", &s.external_ips)
            .string("sessionAffinity", &s.session_affinity)
            .string("loadBalancerIP", &s.load_balancer_ip)
            .strings("loadBalancerSourceRanges", &s.load_balancer_source_ranges)
            .string("externalName", &s.external_name)
            .string("externalTrafficPolicy", &s.external_traffic_policy)
            .number("healthCheckNodePort", &s.health_check_node_port)
            .flag("publishNotReadyAddresses", &s.publish_not_ready_addresses)
            .child("sessionAffinityConfig", affinity)
            .strings("ipFamilies", &s.ip_families)
            .pointer("ipFamilyPolicy", &s.ip_family_policy)
            .pointer("allocateLoadBalancerNodePorts", &s.allocate_load_balancer_node_ports)
            .pointer("loadBalancerClass", &s.load_balancer_class)
            .pointer("internalTrafficPolicy", &s.internal_traffic_policy)
            .pointer("trafficDistribution", &s.traffic_distribution)
            .done()
    });
    let status = svc.status.map(|s| {
        let ingress = s
            .load_balancer
            .iter()
            .flat_map(|lb| &lb.ingress)
            .map(|i| {
                let ports = i
                    .ports
                    .iter()
                    .map(|p| {
                        Object::default()
                            .number("port", &p.port)
                            .string("protocol", &p.protocol)
                            .pointer("error", &p.error)
                            .done()
                    })
                    .collect();
                Object::default()
                    .string("ip", &i.ip)
                    .string("hostname", &i.hostname)
                    .pointer("ipMode", &i.ip_mode)
                    .list("ports", ports)
                    .done()
            })
            .collect();
        Object::default()
            .set("loadBalancer", Object::default().list("ingress", ingress).done())
            .list("conditions", s.conditions.iter().map(condition).collect())
            .done()
    });
    Object::default()
        .set("metadata", object_meta(&svc.metadata))
        .child("spec", spec)
        .child("status", status)
        .done()
}

fn config_map(cm: core::ConfigMap) -> Value {
    Object::default()
        .set("metadata", object_meta(&cm.metadata))
        .pointer("immutable", &cm.immutable)
        .map("data", &cm.data)
        .map("binaryData", &bytes_map(&cm.binary_data))
        .done()
}

fn secret(s: core::Secret) -> Value {
    Object::default()
        .set("metadata", object_meta(&s.metadata))
        .pointer("immutable", &s.immutable)
        .map("data", &bytes_map(&s.data))
        .map("stringData", &s.string_data)
        .string("type", &s.r#type)
        .done()
}

fn delete_options(o: meta::DeleteOptions) -> Value {
    let preconditions = o.preconditions.map(|p| {
        Object::default()
            .pointer("uid", &p.uid)
            .pointer("resourceVersion", &p.resource_version)
            .done()
    });
    Object::default()
        .pointer("gracePeriodSeconds", &o.grace_period_seconds)
        .child("preconditions", preconditions)
        .pointer("orphanDependents", &o.orphan_dependents)
        .pointer("propagationPolicy", &o.propagation_policy)
        .strings("dryRun", &o.dry_run)
        .done()
}

/// Whether a `Content-Type` is Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim() == CONTENT_TYPE
}

/// The JSON object a protobuf body carries; `Err` is the message of a 400 (or 415 for kinds not decoded here).
pub fn decode(body: &[u8]) -> Result<Value, Error> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| Error::Malformed("the body does not start with the protobuf magic \"k8s\\x00\"".to_string()))?;
    let unknown = Unknown::decode(envelope).map_err(|e| Error::Malformed(format!("runtime.Unknown: {e}")))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let malformed = |e: prost::DecodeError| Error::Malformed(format!("{api_version} {kind}: {e}"));
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(core::Namespace::decode(raw.as_slice()).map_err(malformed)?),
        ("v1", "Service") => service(core::Service::decode(raw.as_slice()).map_err(malformed)?),
        ("v1", "ConfigMap") => config_map(core::ConfigMap::decode(raw.as_slice()).map_err(malformed)?),
        ("v1", "Secret") => secret(core::Secret::decode(raw.as_slice()).map_err(malformed)?),
        ("v1" | "meta.k8s.io/v1", "DeleteOptions") => {
            delete_options(meta::DeleteOptions::decode(raw.as_slice()).map_err(malformed)?)
        }
        _ => return Err(Error::Unsupported(format!("{api_version} {kind}"))),
    };
    let mut object = object;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

/// Why a protobuf body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Malformed(String),
    /// A kind this module does not decode (send JSON instead).
    Unsupported(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.to_string()),
                kind: Some(kind.to_string()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn empty_meta(name: &str) -> meta::ObjectMeta {
        // As Go writes it: every non-pointer field present, empty.
        meta::ObjectMeta {
            name: Some(name.to_string()),
            generate_name: Some(String::new()),
            namespace: Some(String::new()),
            self_link: Some(String::new()),
            uid: Some(String::new()),
            resource_version: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(meta::Time {
                seconds: Some(0),
                nanos: Some(0),
            }),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn service_as_kubectl_create_sends_it() {
        let svc = core::Service {
            metadata: Some(empty_meta("web")),
            spec: Some(core::ServiceSpec {
                ports: vec![core::ServicePort {
                    name: Some("80-80".to_string()),
                    protocol: Some("TCP".to_string()),
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(80),
                        str_val: Some(String::new()),
                    }),
                    node_port: Some(0),
                    ..Default::default()
                }],
                selector: [("app".to_string(), "web".to_string())].into(),
                cluster_ip: Some(String::new()),
                r#type: Some("LoadBalancer".to_string()),
                session_affinity: Some(String::new()),
                health_check_node_port: Some(0),
                publish_not_ready_addresses: Some(false),
                ..Default::default()
            }),
            status: Some(core::ServiceStatus {
                load_balancer: Some(core::LoadBalancerStatus::default()),
                conditions: vec![],
            }),
        };
        let object = decode(&envelope("v1", "Service", svc.encode_to_vec())).unwrap();
        assert_eq!(
            object,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"ports": [{"name": "80-80", "protocol": "TCP", "port": 80, "targetPort": 80}],
                         "selector": {"app": "web"}, "type": "LoadBalancer"},
                "status": {"loadBalancer": {}},
            })
        );
    }

    #[test]
    fn namespace_secret_and_configmap() {
        let ns = core::Namespace {
            metadata: Some(empty_meta("x")),
            spec: Some(core::NamespaceSpec::default()),
            status: Some(core::NamespaceStatus {
                phase: Some(String::new()),
                conditions: vec![],
            }),
        };
        let object = decode(&envelope("v1", "Namespace", ns.encode_to_vec())).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": {"app": "web"}},
                   "spec": {}, "status": {}})
        );
        let secret = core::Secret {
            metadata: Some(empty_meta("s")),
            data: [("a".to_string(), b"b".to_vec())].into(),
            r#type: Some("Opaque".to_string()),
            ..Default::default()
        };
        let object = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(object["data"], json!({"a": "Yg=="}));
        assert_eq!(object["type"], "Opaque");
        let cm = core::ConfigMap {
            metadata: Some(empty_meta("c")),
            immutable: Some(false),
            data: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let object = decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).unwrap();
        assert_eq!(object["data"], json!({"k": "v"}));
        assert_eq!(object["immutable"], json!(false));
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(decode(b"{}"), Err(Error::Malformed(_))));
        assert!(matches!(decode(b"k8s\0\xff\xff"), Err(Error::Malformed(_))));
        let pod = envelope("v1", "Pod", Vec::new());
        assert_eq!(decode(&pod), Err(Error::Unsupported("v1 Pod".to_string())));
    }
}
