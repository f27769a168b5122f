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

/// v1alpha2 first; v1alpha1 when the cluster serves only that.
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
            // The legacy ConfigMap, when MetalLB is older than v0.13 (or was never converted).
            let maps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "metallb-system", &core("ConfigMap"));
            match maps.get_opt("config").await? {
                Some(map) => out.push(with_type(map, "v1", "ConfigMap")?),
                None => tracing::info!("no ConfigMap metallb-system/config"),
            }
        }
        Source::Openelb => {
            for versions in OPENELB {
                for kind in *versions {
                    if let Some(items) = list(&client, *kind).await? {
                        out.extend(items);
                        break;
                    }
                }
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
