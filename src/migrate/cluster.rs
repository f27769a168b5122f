//! `herald migrate --from-cluster`: the old project's configuration, the Services and the namespaces read through
//! the API (the kubeconfig `kubectl` would use), as the objects [`super::migrate`] takes. Read only.

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

use super::Source;

/// A kind to read: group, version, kind, plural.
type Kind = (&'static str, &'static str, &'static str, &'static str);

const METALLB: &[Kind] = &[
    ("metallb.io", "v1beta1", "IPAddressPool", "ipaddresspools"),
    ("metallb.io", "v1beta1", "L2Advertisement", "l2advertisements"),
    ("metallb.io", "v1beta1", "BGPAdvertisement", "bgpadvertisements"),
    ("metallb.io", "v1beta2", "BGPPeer", "bgppeers"),
    ("metallb.io", "v1beta1", "BFDProfile", "bfdprofiles"),
    ("metallb.io", "v1beta1", "Community", "communities"),
];

/// Each kind in v1alpha2, then v1alpha1 (see [`pick_versions`]).
const OPENELB: &[&[Kind]] = &[
    &[
        ("network.kubesphere.io", "v1alpha2", "Eip", "eips"),
        ("network.kubesphere.io", "v1alpha1", "Eip", "eips"),
    ],
    &[
        ("network.kubesphere.io", "v1alpha2", "BgpConf", "bgpconfs"),
        ("network.kubesphere.io", "v1alpha1", "BgpConf", "bgpconfs"),
    ],
    &[
        ("network.kubesphere.io", "v1alpha2", "BgpPeer", "bgppeers"),
        ("network.kubesphere.io", "v1alpha1", "BgpPeer", "bgppeers"),
    ],
];

/// Everything `herald migrate` needs from the cluster; a kind the cluster does not serve is skipped (logged).
pub async fn read(client: kube::Client, source: Source) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    match source {
        Source::Metallb => {
            for kind in METALLB {
                if let Some(items) = list(&client, *kind).await? {
                    out.extend(items);
                }
            }
            // The legacy ConfigMap, when MetalLB is older than v0.13 (or was never converted): `config` from the
            // manifests, `metallb` from the Helm chart.
            let maps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "metallb-system", &core("ConfigMap"));
            for name in LEGACY_CONFIG_MAPS {
                match maps.get_opt(name).await? {
                    Some(map) if map.data.pointer("/data/config").is_some() => {
                        out.push(with_type(map, "v1", "ConfigMap")?)
                    }
                    _ => tracing::info!("no MetalLB configuration in ConfigMap metallb-system/{name}"),
                }
            }
        }
        Source::Openelb => {
            for versions in OPENELB {
                // Both versions are served with no conversion: an object stored as one is read as the other with
                // that one's fields pruned. Each object is taken in the version whose fields it has.
                let newer = list(&client, versions[0]).await?;
                let older = list(&client, versions[1]).await?;
                out.extend(pick_versions(newer.unwrap_or_default(), older.unwrap_or_default()));
            }
        }
    }
    for kind in ["Service", "Namespace"] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &core(kind));
        for item in api.list(&ListParams::default()).await?.items {
            out.push(with_type(item, "v1", kind)?);
        }
    }
    Ok(out)
}

/// Where MetalLB before v0.13 kept its configuration (key `config`).
const LEGACY_CONFIG_MAPS: [&str; 2] = ["config", "metallb"];

/// Each object once: its v1alpha2 view when that has the v1alpha2 fields, else its v1alpha1 view when that has
/// the v1alpha1 ones (`config` for a BgpPeer, `routerID` or `port` for a BgpConf), else the v1alpha2 view.
fn pick_versions(newer: Vec<Value>, older: Vec<Value>) -> Vec<Value> {
    let name = |v: &Value| {
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let has = |v: &Value, keys: &[&str]| keys.iter().any(|k| v.pointer(&format!("/spec/{k}")).is_some());
    let mut out = Vec::new();
    for new in &newer {
        let old = older.iter().find(|o| name(o) == name(new));
        let stored_old = match new.get("kind").and_then(Value::as_str) {
            Some("BgpPeer") => !has(new, &["conf"]) && old.is_some_and(|o| has(o, &["config"])),
            Some("BgpConf") => old.is_some_and(|o| has(o, &["routerID", "port"])),
            _ => false,
        };
        out.push(if stored_old {
            old.cloned().unwrap_or_default()
        } else {
            new.clone()
        });
    }
    // Served only in v1alpha1 (PorterLB v0.3).
    if newer.is_empty() {
        out.extend(older);
    }
    out
}

fn core(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind))
}

/// Every object of one kind, or `None` when the cluster does not serve it.
async fn list(client: &kube::Client, (group, version, kind, plural): Kind) -> anyhow::Result<Option<Vec<Value>>> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            let api_version = format!("{group}/{version}");
            let items = list.items.into_iter().map(|o| with_type(o, &api_version, kind));
            Ok(Some(items.collect::<anyhow::Result<_>>()?))
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::info!("{kind}.{group}/{version} is not served by this cluster: skipped");
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("listing {kind}.{group}/{version}: {e}")),
    }
}

/// A listed object with its `apiVersion` and `kind` (list items of built-in kinds come without them).
fn with_type(object: DynamicObject, api_version: &str, kind: &str) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(object)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), kind.into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::pick_versions;

    fn peer(name: &str, version: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": format!("network.kubesphere.io/{version}"), "kind": "BgpPeer",
               "metadata": {"name": name}, "spec": spec})
    }

    #[test]
    fn each_object_is_read_in_the_version_it_was_stored_in() {
        // `a` stored as v1alpha2 (its v1alpha1 view pruned to nothing), `b` as v1alpha1 (the reverse).
        let newer = vec![
            peer("a", "v1alpha2", json!({"conf": {"peerAs": 1}})),
            peer("b", "v1alpha2", json!({})),
        ];
        let older = vec![
            peer("a", "v1alpha1", json!({})),
            peer("b", "v1alpha1", json!({"config": {"peerAs": 2}})),
        ];
        let picked = pick_versions(newer, older.clone());
        assert_eq!(picked[0]["spec"]["conf"]["peerAs"], 1);
        assert_eq!(picked[1]["spec"]["config"]["peerAs"], 2);
        // A cluster of PorterLB v0.3 serves v1alpha1 only.
        assert_eq!(pick_versions(Vec::new(), older.clone()), older);
    }
}
