//! The resources the server serves: the built-in kinds Herald and kubectl use, plus the resources that
//! `CustomResourceDefinition` objects define, registered when the CRD is created and dropped when it is deleted.

use std::collections::BTreeMap;

use serde_json::Value;

/// `(group, plural)`: the storage identity of a resource. Every served version reads the same objects.
pub type ResourceId = (String, String);

pub const CRD_GROUP: &str = "apiextensions.k8s.io";
pub const CRD_PLURAL: &str = "customresourcedefinitions";

/// How `metadata.name` is validated (the real server uses different DNS rules per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most kinds.
    Subdomain,
    /// RFC 1123 label: namespaces.
    Label,
    /// RFC 1035 label: services.
    Label1035,
}

/// One `additionalPrinterColumns` entry of a CRD version.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub json_path: String,
    pub priority: i64,
}

/// How the real server words a field selector on a path the resource does not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldLabelError {
    /// `field label not supported: PATH` (kinds with their own field label conversion, custom resources).
    NotSupported,
    /// `"PATH" is not a known field selector: only "metadata.name", "metadata.namespace"` (the default conversion).
    NotKnown,
}

/// How objects of a resource are stored, when not as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Stored as served (only `apiVersion` follows the version asked for).
    None,
    /// core/v1 Events: stored as served, served with the fields Go always writes for an Event.
    CoreEvents,
    /// events.k8s.io/v1 Events, stored as core/v1 Events (one storage, as on the real server).
    EventsV1,
}

/// Everything the server needs to know to serve one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    pub group: String,
    /// Served versions, preferred first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource: status and the rest of the object are written separately.
    pub status_subresource: bool,
    /// Create drops `status` (Services and custom resources with a status subresource do; Nodes keep it).
    pub reset_status_on_create: bool,
    /// PUT without `metadata.resourceVersion` is accepted (true for built-ins, false for custom resources).
    pub unconditional_update: bool,
    /// Defined by a CRD: no strategic merge patch, delete returns the object.
    pub custom: bool,
    pub name_rule: NameRule,
    /// Field selectors: the label a client may use, and the path it reads in the stored object.
    pub field_selectors: Vec<(String, String)>,
    pub field_label_error: FieldLabelError,
    /// Printer columns per version (custom resources only; built-ins are printed by `table`).
    pub columns: BTreeMap<String, Vec<PrinterColumn>>,
    /// `metadata.generation` is set on create and bumped on spec changes (custom resources and CRDs; the
    /// built-ins served here have no generation on the real server).
    pub generation: bool,
    /// Where the objects live: `id()`, except for resources served from another one's storage.
    pub storage: ResourceId,
    pub conversion: Conversion,
    /// The structural schema per version (custom resources): unknown fields are pruned, defaults applied.
    pub schemas: BTreeMap<String, Value>,
    /// Served verbs besides get/list/watch/create/update/patch/delete (`deletecollection`, not for namespaces).
    pub delete_collection: bool,
}

impl ResourceDef {
    pub fn id(&self) -> ResourceId {
        (self.group.clone(), self.plural.clone())
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    pub fn is_crd(&self) -> bool {
        self.group == CRD_GROUP && self.plural == CRD_PLURAL
    }
}

/// `metadata.name` and `metadata.namespace` (namespaced resources), then `extra`, all read where they are named.
fn selectable(namespaced: bool, extra: &[&str]) -> Vec<(String, String)> {
    let meta: &[&str] = if namespaced {
        &["metadata.name", "metadata.namespace"]
    } else {
        &["metadata.name"]
    };
    meta.iter()
        .chain(extra)
        .map(|f| (f.to_string(), f.to_string()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    status_subresource: bool,
    reset_status_on_create: bool,
    field_selectors: &[&str],
) -> ResourceDef {
    // Kinds with extra selectable fields have their own field label conversion on the real server; the others
    // take the default one, which accepts both metadata fields, for any scope.
    let (field_selectors, field_label_error) = if field_selectors.is_empty() {
        (selectable(true, &[]), FieldLabelError::NotKnown)
    } else {
        (selectable(namespaced, field_selectors), FieldLabelError::NotSupported)
    };
    ResourceDef {
        group: group.to_string(),
        versions: vec!["v1".to_string()],
        plural: plural.to_string(),
        singular: kind.to_lowercase(),
        kind: kind.to_string(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status_subresource,
        reset_status_on_create,
        unconditional_update: true,
        custom: false,
        name_rule: NameRule::Subdomain,
        field_selectors,
        field_label_error,
        columns: BTreeMap::new(),
        generation: false,
        storage: (group.to_string(), plural.to_string()),
        conversion: Conversion::None,
        schemas: BTreeMap::new(),
        delete_collection: true,
    }
}

/// The built-in resources of `testing.md` ("lab-apiserver: what faithful means").
fn builtins() -> Vec<ResourceDef> {
    let mut namespaces = builtin(
        "",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        true,
        false,
        &["status.phase"],
    );
    namespaces.name_rule = NameRule::Label;
    namespaces.delete_collection = false;
    let mut services = builtin(
        "",
        "services",
        "Service",
        true,
        &["svc"],
        true,
        true,
        &["spec.clusterIP", "spec.type"],
    );
    services.name_rule = NameRule::Label1035;
    services.categories = vec!["all".to_string()];
    let mut crds = builtin(
        CRD_GROUP,
        CRD_PLURAL,
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        false,
        &[],
    );
    crds.categories = vec!["api-extensions".to_string()];
    crds.generation = true;
    let core_event_fields = [
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];
    // EndpointSlices are the one built-in served here whose strategy keeps a generation.
    let mut endpoint_slices = builtin(
        "discovery.k8s.io",
        "endpointslices",
        "EndpointSlice",
        true,
        &[],
        false,
        false,
        &[],
    );
    endpoint_slices.generation = true;
    let mut core_events = builtin("", "events", "Event", true, &["ev"], false, false, &core_event_fields);
    core_events.conversion = Conversion::CoreEvents;
    for (label, path) in &mut core_events.field_selectors {
        // The real server's field set: `source` is the source's component, `reportingComponent` its own field.
        if label == "source" {
            *path = "source.component".to_string();
        }
    }
    // events.k8s.io/v1 Events are core Events in storage (the real server converts between the two); field
    // selectors name the events.k8s.io fields and read the core ones.
    let mut events = builtin(
        "events.k8s.io",
        "events",
        "Event",
        true,
        &["ev"],
        false,
        false,
        &["reason"],
    );
    events.storage = (String::new(), "events".to_string());
    events.conversion = Conversion::EventsV1;
    events.field_selectors = [
        ("metadata.name", "metadata.name"),
        ("metadata.namespace", "metadata.namespace"),
        ("reason", "reason"),
        ("type", "type"),
        ("reportingController", "reportingComponent"),
        ("regarding.kind", "involvedObject.kind"),
        ("regarding.namespace", "involvedObject.namespace"),
        ("regarding.name", "involvedObject.name"),
        ("regarding.uid", "involvedObject.uid"),
        ("regarding.apiVersion", "involvedObject.apiVersion"),
        ("regarding.resourceVersion", "involvedObject.resourceVersion"),
        ("regarding.fieldPath", "involvedObject.fieldPath"),
    ]
    .iter()
    .map(|(l, p)| (l.to_string(), p.to_string()))
    .collect();
    vec![
        namespaces,
        builtin(
            "",
            "nodes",
            "Node",
            false,
            &["no"],
            true,
            false,
            &["spec.unschedulable"],
        ),
        services,
        core_events,
        builtin("", "secrets", "Secret", true, &[], false, false, &["type"]),
        builtin("", "configmaps", "ConfigMap", true, &["cm"], false, false, &[]),
        builtin("", "endpoints", "Endpoints", true, &["ep"], false, false, &[]),
        endpoint_slices,
        builtin("coordination.k8s.io", "leases", "Lease", true, &[], false, false, &[]),
        events,
        crds,
    ]
}

/// The set of served resources.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: BTreeMap<ResourceId, ResourceDef>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            resources: builtins().into_iter().map(|def| (def.id(), def)).collect(),
        }
    }
}

impl Registry {
    /// The resource served at `/apis/<group>/<version>/<plural>` (or `/api/v1/<plural>`).
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .filter(|def| def.serves(version))
    }

    pub fn by_id(&self, id: &ResourceId) -> Option<&ResourceDef> {
        self.resources.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceDef> {
        self.resources.values()
    }

    /// Served groups, each with its versions in preference order (core group `""` included).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for def in self.resources.values() {
            let versions = groups.entry(def.group.clone()).or_default();
            for version in &def.versions {
                if !versions.contains(version) {
                    versions.push(version.clone());
                }
            }
        }
        for versions in groups.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        groups
    }

    /// Registers (or re-registers, after an update) the resource a CRD defines.
    pub fn register_crd(&mut self, def: ResourceDef) {
        self.resources.insert(def.id(), def);
    }

    pub fn unregister(&mut self, id: &ResourceId) -> Option<ResourceDef> {
        self.resources.remove(id)
    }
}

/// Kubernetes version priority (`v2` > `v1` > `v1beta2` > `v1beta1` > `v1alpha1` > anything else), as used to pick
/// the preferred version of a group.
pub fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    let (stability, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        return (0, 0, 0);
    };
    (stability, major, minor)
}

/// Reads a CRD object into the resource it defines, or the list of validation errors (`field: problem`).
pub fn crd_resource(crd: &Value) -> Result<ResourceDef, Vec<String>> {
    let mut errors = Vec::new();
    let spec = &crd["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let group = text(&spec["group"]);
    let names = &spec["names"];
    let plural = text(&names["plural"]);
    let kind = text(&names["kind"]);
    if group.is_empty() || !group.contains('.') {
        errors.push("spec.group: Invalid value: should be a domain with at least one dot".to_string());
    }
    if plural.is_empty() {
        errors.push("spec.names.plural: Required value".to_string());
    }
    if kind.is_empty() {
        errors.push("spec.names.kind: Required value".to_string());
    }
    let name = text(&crd["metadata"]["name"]);
    if name != format!("{plural}.{group}") {
        errors.push(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            errors.push(format!(
                "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ));
            false
        }
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_versions = versions.iter().filter(|v| v["storage"].as_bool() == Some(true)).count();
    if storage_versions != 1 {
        errors
            .push("spec.versions: Invalid value: must have exactly one version marked as storage version".to_string());
    }
    let mut served = Vec::new();
    let mut columns = BTreeMap::new();
    let mut status_subresource = false;
    let mut field_selectors = selectable(true, &[]);
    let mut schemas = BTreeMap::new();
    for (i, version) in versions.iter().enumerate() {
        let vname = text(&version["name"]);
        if vname.is_empty() {
            errors.push(format!("spec.versions[{i}].name: Required value"));
            continue;
        }
        if version["served"].as_bool() != Some(true) {
            continue;
        }
        status_subresource |= version["subresources"]["status"].is_object();
        let cols = version["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let cols = cols
            .iter()
            .map(|c| PrinterColumn {
                name: text(&c["name"]),
                type_: text(&c["type"]),
                format: text(&c["format"]),
                description: text(&c["description"]),
                json_path: text(&c["jsonPath"]),
                priority: c["priority"].as_i64().unwrap_or(0),
            })
            .collect();
        columns.insert(vname.clone(), cols);
        if version["schema"]["openAPIV3Schema"].is_object() {
            schemas.insert(vname.clone(), version["schema"]["openAPIV3Schema"].clone());
        }
        for field in version["selectableFields"].as_array().into_iter().flatten() {
            if let Some(path) = field["jsonPath"].as_str() {
                let path = path.trim_start_matches('.').to_string();
                field_selectors.push((path.clone(), path));
            }
        }
        served.push(vname);
    }
    if served.is_empty() && !versions.is_empty() {
        errors.push("spec.versions: Invalid value: must have at least one served version".to_string());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    served.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    let storage = (group.clone(), plural.clone());
    Ok(ResourceDef {
        group,
        versions: served,
        singular: names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        list_kind: names["listKind"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{kind}List")),
        plural,
        kind,
        namespaced,
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        status_subresource,
        reset_status_on_create: status_subresource,
        unconditional_update: false,
        custom: true,
        name_rule: NameRule::Subdomain,
        field_selectors,
        field_label_error: FieldLabelError::NotSupported,
        columns,
        generation: true,
        storage,
        conversion: Conversion::None,
        schemas,
        delete_collection: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_priority_orders_like_kubernetes() {
        let mut versions = vec!["v1alpha1", "v1", "v1beta1", "v2", "v1beta2", "foo"];
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(versions, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }

    #[test]
    fn crd_resource_reads_names_scope_status_and_columns() {
        let crd = json!({
            "metadata": {"name": "eips.herald.dev"},
            "spec": {
                "group": "herald.dev",
                "scope": "Cluster",
                "names": {"plural": "eips", "kind": "Eip", "shortNames": ["eip"], "categories": ["herald"]},
                "versions": [{
                    "name": "v1alpha1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Free", "type": "integer", "jsonPath": ".status.free"}]
                }]
            }
        });
        let def = crd_resource(&crd).unwrap();
        assert_eq!(def.id(), ("herald.dev".to_string(), "eips".to_string()));
        assert!(!def.namespaced && def.status_subresource && def.custom);
        assert_eq!(def.list_kind, "EipList");
        assert_eq!(def.singular, "eip");
        assert_eq!(def.columns["v1alpha1"][0].json_path, ".status.free");
    }

    #[test]
    fn crd_resource_rejects_bad_name_and_storage() {
        let crd = json!({
            "metadata": {"name": "wrong"},
            "spec": {"group": "herald.dev", "scope": "Cluster", "names": {"plural": "eips", "kind": "Eip"},
                     "versions": [{"name": "v1", "served": true, "storage": false}]}
        });
        let errors = crd_resource(&crd).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
