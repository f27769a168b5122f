//! Reading objects one at a time. The API server sends a list as one document; decoded straight into Herald's
//! types, one object they cannot hold (an Eip with an unknown `protocol` after a rollback, a field of the wrong type
//! on a server that does not enforce the schema) fails the whole list, and a watch that cannot list never starts.
//! [`Lenient`] decodes each object on its own: the others are read, and the bad one is kept as [`Unreadable`] with
//! its metadata (to name it, point Events at it and write its status) and the reason.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::text;

/// An object as read from the API: Herald's type, or why it could not be read.
#[derive(Clone, Debug)]
pub enum Lenient<K> {
    /// The object, read.
    Read(K),
    /// The object could not be read as `K` (boxed: rare, and larger than most objects' handles).
    Unreadable(Box<Unreadable>),
}

/// An object that could not be read as Herald's type.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreadable {
    /// Its metadata (as much as could be read: at least the name when the server sent one).
    pub metadata: ObjectMeta,
    /// Where and why decoding failed, e.g. `spec.protocol: unknown variant `vxlan`, expected `layer2` or `bgp``
    /// (bounded: a quoted value is cut).
    pub reason: String,
    /// Its `status` as sent, for a controller that writes status only when it changes.
    pub status: Option<serde_json::Value>,
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(object) => Lenient::Read(object),
            Err(e) => Lenient::Unreadable(Box::new(Unreadable::new(&value, &e))),
        })
    }
}

impl Unreadable {
    fn new(value: &serde_json::Value, error: &serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = error.path().to_string();
        // serde's messages quote the offending value; quote at most a bounded part of the whole message.
        let message = text::excerpt(&error.inner().to_string(), 2 * text::QUOTE_CHARS).into_owned();
        let reason = if path == "." {
            message
        } else {
            format!("{}: {message}", text::quote(&path))
        };
        Self {
            metadata: metadata_of(value),
            reason,
            status: value.get("status").cloned(),
        }
    }

    /// `namespace/name`, or `name` for a cluster-scoped object.
    pub fn display_name(&self) -> String {
        let name = text::quote(self.metadata.name.as_deref().unwrap_or("<no name>")).into_owned();
        match &self.metadata.namespace {
            Some(ns) => format!("{}/{name}", text::quote(ns)),
            None => name,
        }
    }
}

/// The object's metadata; when even that cannot be read whole, the identifying strings that can.
fn metadata_of(value: &serde_json::Value) -> ObjectMeta {
    let Some(meta) = value.get("metadata") else {
        return ObjectMeta::default();
    };
    ObjectMeta::deserialize(meta).unwrap_or_else(|_| {
        let field = |k: &str| meta.get(k).and_then(|v| v.as_str()).map(str::to_string);
        ObjectMeta {
            name: field("name"),
            namespace: field("namespace"),
            uid: field("uid"),
            resource_version: field("resourceVersion"),
            generation: meta.get("generation").and_then(serde_json::Value::as_i64),
            ..Default::default()
        }
    })
}

impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Read(object) => object.meta(),
            Lenient::Unreadable(u) => &u.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Read(object) => object.meta_mut(),
            Lenient::Unreadable(u) => &mut u.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Eip;
    use serde_json::json;

    #[test]
    fn one_bad_object_does_not_fail_the_list() {
        let list: Vec<Lenient<Eip>> = serde_json::from_value(json!([
            {"apiVersion": "herald.dev/v1alpha1", "kind": "Eip", "metadata": {"name": "good"},
             "spec": {"addresses": ["192.0.2.0/24"]}},
            {"apiVersion": "herald.dev/v1alpha1", "kind": "Eip",
             "metadata": {"name": "rolled-back", "resourceVersion": "7", "generation": 3},
             "spec": {"addresses": ["198.51.100.0/24"], "protocol": "vxlan"}, "status": {"used": 2}},
        ]))
        .expect("the list decodes");
        assert!(matches!(&list[0], Lenient::Read(e) if e.metadata.name.as_deref() == Some("good")));
        let Lenient::Unreadable(bad) = &list[1] else {
            panic!("the bad Eip is kept as unreadable: {:?}", list[1])
        };
        assert_eq!(bad.display_name(), "rolled-back");
        assert_eq!(bad.metadata.generation, Some(3));
        assert!(
            bad.reason.starts_with("spec.protocol: unknown variant `vxlan`"),
            "{}",
            bad.reason
        );
        assert_eq!(bad.status, Some(json!({"used": 2})));
    }

    #[test]
    fn the_reason_is_bounded_and_metadata_survives_a_bad_label() {
        let huge = "v".repeat(100_000);
        let bad: Lenient<Eip> = serde_json::from_value(json!({
            "metadata": {"name": "x", "labels": {"a": 5}, "resourceVersion": "9"},
            "spec": {"addresses": ["192.0.2.1"], "protocol": huge}}))
        .unwrap();
        let Lenient::Unreadable(bad) = bad else {
            panic!("unreadable")
        };
        assert!(bad.reason.len() < 400, "{}", bad.reason.len());
        assert_eq!(bad.metadata.name.as_deref(), Some("x"));
        assert_eq!(bad.metadata.resource_version.as_deref(), Some("9"));
    }
}
