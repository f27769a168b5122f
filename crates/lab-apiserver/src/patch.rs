//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.
//!
//! Strategic merge is approximated by field name instead of the Go struct tags: lists named below merge by
//! their key (`conditions` by `type`, service `ports` by `port`, `containers`/`env`/`volumes` by `name`, ...),
//! `finalizers` merge as a set, every other list is replaced. `$patch: delete|replace` and
//! `$deleteFromPrimitiveList/<field>` are honoured, `$setElementOrder/...` and `$retainKeys` are ignored.

use serde_json::{Map, Value};

/// A PATCH request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
}

impl PatchKind {
    /// The patch type of a `Content-Type`; `Err` carries the 415 message.
    pub fn from_content_type(content_type: &str) -> Result<Self, String> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Err(
                "server-side apply is not supported by lab-apiserver; use a merge, JSON or strategic merge patch \
                 (kubectl: client-side `kubectl apply`)"
                    .to_string(),
            ),
            other => Err(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/strategic-merge-patch+json (got \"{other}\")"
            )),
        }
    }
}

/// Applies `patch` to `object`; `Err` is the message for a 422 (JSON patch operation failed, bad patch shape).
pub fn apply(kind: PatchKind, object: &mut Value, patch: &Value) -> Result<(), String> {
    match kind {
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err("merge patch must be a JSON object".to_string());
            }
            json_patch::merge(object, patch);
            Ok(())
        }
        PatchKind::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(object, &ops).map_err(|e| format!("JSON patch failed: {e}"))
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err("strategic merge patch must be a JSON object".to_string());
            }
            strategic_merge(object, patch);
            Ok(())
        }
    }
}

/// How a list field merges under strategic merge patch.
enum ListStrategy {
    /// Merge elements whose `key` field is equal, append the others.
    ByKey(&'static str),
    /// Union of primitive values (`metadata.finalizers`).
    Set,
    Replace,
}

fn list_strategy(field: &str, items: &[Value]) -> ListStrategy {
    let by_key = |key: &'static str| {
        if items.iter().all(|item| item.get(key).is_some()) {
            ListStrategy::ByKey(key)
        } else {
            ListStrategy::Replace
        }
    };
    match field {
        "conditions" | "addresses" => by_key("type"),
        "ports" => match by_key("port") {
            ListStrategy::Replace => by_key("containerPort"),
            strategy => strategy,
        },
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => by_key("name"),
        "volumeMounts" => by_key("mountPath"),
        "taints" => by_key("key"),
        "ownerReferences" => by_key("uid"),
        "finalizers" => ListStrategy::Set,
        _ => ListStrategy::Replace,
    }
}

fn directive(value: &Value) -> Option<&str> {
    value.get("$patch").and_then(Value::as_str)
}

/// A patch value as a plain value: directives and `null`s (deletions of nothing) removed.
fn plain(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), plain(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(plain).collect()),
        other => other.clone(),
    }
}

fn strategic_merge(original: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *original = patch.clone();
        return;
    };
    if directive(patch) == Some("replace") {
        *original = plain(patch);
        return;
    }
    if !original.is_object() {
        *original = Value::Object(Map::new());
    }
    let Some(target) = original.as_object_mut() else {
        return;
    };
    let set_order = |field: &str| {
        patch_map
            .get(&format!("$setElementOrder/{field}"))
            .and_then(Value::as_array)
    };
    for (key, value) in patch_map {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            // Only the order of a list the patch does not otherwise touch.
            if !patch_map.contains_key(field)
                && let (Some(Value::Array(list)), Some(order)) = (target.get_mut(field), value.as_array())
            {
                let merge_key = list_key(field, list);
                let server_order = list.clone();
                *list = enforce_order(std::mem::take(list), order, &server_order, merge_key);
            }
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (target.get_mut(field), value.as_array()) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() || directive(value) == Some("delete") {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => strategic_merge(existing, value),
            (Some(Value::Array(existing)), Value::Array(items)) => merge_list(key, existing, items, set_order(key)),
            _ => {
                target.insert(key.clone(), plain(value));
            }
        }
    }
}

/// The merge key of a list field's elements (what `$setElementOrder` entries name), if it merges by key.
fn list_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match list_strategy(field, items) {
        ListStrategy::ByKey(key) => Some(key),
        ListStrategy::Set | ListStrategy::Replace => None,
    }
}

fn position_in(order: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    order.iter().position(|o| match key {
        Some(key) => item.get(key).is_some() && o.get(key) == item.get(key),
        None => o == item,
    })
}

/// The element order of a merged list, as `normalizeElementOrder` (k8s.io/apimachinery strategicpatch) makes it:
/// the elements the patch names in the patch's order (`$setElementOrder`, else the patch list), the others in
/// their old order, interleaved where the old order allows.
fn enforce_order(merged: Vec<Value>, patch_order: &[Value], server_order: &[Value], key: Option<&str>) -> Vec<Value> {
    let (mut named, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position_in(patch_order, item, key).is_some());
    named.sort_by_key(|item| position_in(patch_order, item, key));
    server_only.sort_by_key(|item| position_in(server_order, item, key).unwrap_or(usize::MAX));
    // `mergeSortedSlice`: a server-only element goes before a named one only if the old order says so.
    let mut out = Vec::with_capacity(named.len() + server_only.len());
    let (mut left, mut right) = (server_only.into_iter().peekable(), named.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position_in(server_order, l, key), position_in(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

fn merge_list(field: &str, existing: &mut Vec<Value>, items: &[Value], set_order: Option<&Vec<Value>>) {
    if items.iter().any(|item| directive(item) == Some("replace")) {
        *existing = items
            .iter()
            .filter(|item| directive(item).is_none())
            .map(plain)
            .collect();
        return;
    }
    let strategy = list_strategy(field, items);
    let key = match strategy {
        ListStrategy::Replace => {
            *existing = items.iter().map(plain).collect();
            return;
        }
        ListStrategy::Set => {
            for item in items {
                if !existing.contains(item) {
                    existing.push(item.clone());
                }
            }
            None
        }
        ListStrategy::ByKey(key) => {
            for item in items.iter().filter(|i| directive(i) == Some("delete")) {
                existing.retain(|e| e.get(key) != item.get(key));
            }
            Some(key)
        }
    };
    let server_order = existing.clone();
    if let Some(key) = key {
        for item in items.iter().filter(|i| directive(i).is_none()) {
            match existing.iter().position(|e| e.get(key) == item.get(key)) {
                Some(i) => strategic_merge(&mut existing[i], item),
                None => existing.push(plain(item)),
            }
        }
    }
    let patch_order: Vec<Value> = match set_order {
        Some(order) => order.clone(),
        None => items.iter().filter(|i| directive(i).is_none()).cloned().collect(),
    };
    *existing = enforce_order(std::mem::take(existing), &patch_order, &server_order, key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json"),
            Ok(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("application/json-patch+json; charset=utf-8"),
            Ok(PatchKind::Json)
        );
        assert!(
            PatchKind::from_content_type("application/apply-patch+yaml")
                .unwrap_err()
                .contains("server-side")
        );
        assert!(PatchKind::from_content_type("text/plain").is_err());
    }

    #[test]
    fn merge_patch_deletes_with_null_and_replaces_lists() {
        let mut o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"list": [1, 2]}});
        apply(
            PatchKind::Merge,
            &mut o,
            &json!({"metadata": {"labels": {"a": null}}, "spec": {"list": [3]}}),
        )
        .unwrap();
        assert_eq!(o, json!({"metadata": {"labels": {"b": "2"}}, "spec": {"list": [3]}}));
    }

    #[test]
    fn json_patch_test_failure_is_an_error() {
        let mut o = json!({"spec": {"n": 1}});
        apply(
            PatchKind::Json,
            &mut o,
            &json!([{"op": "replace", "path": "/spec/n", "value": 2}]),
        )
        .unwrap();
        assert_eq!(o["spec"]["n"], 2);
        assert!(
            apply(
                PatchKind::Json,
                &mut o,
                &json!([{"op": "test", "path": "/spec/n", "value": 1}])
            )
            .is_err()
        );
        assert!(apply(PatchKind::Json, &mut o, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_merges_conditions_by_type_and_ports_by_port() {
        let mut o = json!({
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 443}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Synced", "status": "True"}]}
        });
        let patch = json!({
            "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 8080}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "$patch": "delete"}]}
        });
        apply(PatchKind::Strategic, &mut o, &patch).unwrap();
        assert_eq!(
            o,
            json!({
                "spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}, {"port": 8080}, {"port": 443}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            })
        );
    }

    #[test]
    fn strategic_finalizers_are_a_set() {
        let mut o = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"other": [1, 2]}});
        apply(
            PatchKind::Strategic,
            &mut o,
            &json!({"metadata": {"finalizers": ["b", "c"]}, "spec": {"other": [3]}}),
        )
        .unwrap();
        assert_eq!(
            o,
            json!({"metadata": {"finalizers": ["a", "b", "c"]}, "spec": {"other": [3]}})
        );
        apply(
            PatchKind::Strategic,
            &mut o,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(o["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn strategic_list_order_follows_the_patch() {
        let mut o = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        apply(
            PatchKind::Strategic,
            &mut o,
            &json!({"spec": {"ports": [{"port": 443}]}}),
        )
        .unwrap();
        assert_eq!(o["spec"]["ports"], json!([{"port": 443}, {"port": 80}, {"port": 81}]));
        let patch = json!({"spec": {"$setElementOrder/ports": [{"port": 81}, {"port": 443}, {"port": 80}],
                                    "ports": [{"port": 443, "name": "https"}]}});
        apply(PatchKind::Strategic, &mut o, &patch).unwrap();
        assert_eq!(
            o["spec"]["ports"],
            json!([{"port": 81}, {"port": 443, "name": "https"}, {"port": 80}])
        );
    }

    #[test]
    fn strategic_replace_directive() {
        let mut o = json!({"spec": {"selector": {"a": "1", "b": "2"}}});
        apply(
            PatchKind::Strategic,
            &mut o,
            &json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(o, json!({"spec": {"selector": {"c": "3"}}}));
    }
}
