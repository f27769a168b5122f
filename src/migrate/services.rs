//! Which Services keep their IPs under the migrated configuration: decided by Herald's allocator, given the
//! migrated Eips and the Services' recorded IPs exactly as an agent's allocator would be at its first start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use herald_api::{Eip, names};
use herald_ipam::{Allocator, Pool};
use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

use super::{Finding, Kind, Options, Source};
use crate::adapter;
use crate::service::ServiceView;

/// What happens to one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Herald keeps its IPs, from this Eip.
    Keeps {
        /// The Eip the IPs are in.
        eip: String,
    },
    /// Herald gives it other IPs (or none), and why.
    Loses {
        /// The allocator's reason.
        reason: String,
    },
    /// It holds no IP yet: Herald allocates one.
    Pending,
    /// Herald does not handle it (its class, or `--default-class=false`).
    NotHandled {
        /// Why.
        reason: String,
    },
}

/// One LoadBalancer Service of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCheck {
    /// `namespace/name`.
    pub service: String,
    /// The IPs in its status.
    pub ips: Vec<IpAddr>,
    /// What Herald does with them.
    pub outcome: Outcome,
    /// The old project's annotations on it, and whether Herald reads them.
    pub annotations: Vec<String>,
}

impl fmt::Display for ServiceCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ips: Vec<String> = self.ips.iter().map(IpAddr::to_string).collect();
        match &self.outcome {
            Outcome::Keeps { eip } => write!(f, "{}: keeps {} (Eip {eip})", self.service, ips.join(", "))?,
            Outcome::Loses { reason } => write!(f, "{}: LOSES {}: {reason}", self.service, ips.join(", "))?,
            Outcome::Pending => write!(f, "{}: holds no IP yet; Herald allocates one", self.service)?,
            Outcome::NotHandled { reason } => write!(f, "{}: not Herald's: {reason}", self.service)?,
        }
        for a in &self.annotations {
            write!(f, "; {a}")?;
        }
        Ok(())
    }
}

/// Annotations of the old projects Herald does not read, and what to write instead.
const NOT_READ: &[(&str, &str)] = &[
    ("eip.porter.kubesphere.io/v1alpha1", names::ANNOTATION_IPS),
    ("eip.porter.kubesphere.io/v1alpha2", names::ANNOTATION_EIP),
];

/// The finalizer OpenELB puts on every Service it serves.
const OPENELB_FINALIZER: &str = "finalizer.lb.kubesphere.io/v1alpha1";

/// Annotations of the old projects Herald reads as they are.
const READ: &[&str] = &[
    names::METALLB_ANNOTATION_IPS,
    names::METALLB_ANNOTATION_POOL,
    names::METALLB_ANNOTATION_SHARING,
    names::METALLB_LEGACY_ANNOTATION_IPS,
    names::METALLB_LEGACY_ANNOTATION_POOL,
    names::METALLB_LEGACY_ANNOTATION_SHARING,
    names::OPENELB_ANNOTATION_EIP,
    names::OPENELB_ANNOTATION_IP,
];

/// Annotations that only told the old project what to do, and mean nothing to Herald.
const OBSOLETE: &[&str] = &[
    names::OPENELB_ANNOTATION_LB,
    "protocol.openelb.kubesphere.io/v1alpha1",
    "layer2.openelb.kubesphere.io/v1alpha1",
    "lb.porter.kubesphere.io/v1alpha1",
    "protocol.porter.kubesphere.io/v1alpha1",
];

/// The Eip as the allocator's pool, or why Herald refuses it.
pub(super) fn pool(eip: &Eip) -> Result<Pool, String> {
    adapter::pool_spec(eip).and_then(|spec| Pool::parse(&spec).map_err(|e| e.to_string()))
}

pub(super) fn check(
    source: Source,
    services: &[Value],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    eips: &[Eip],
    options: &Options,
    findings: &mut Vec<Finding>,
) -> Vec<ServiceCheck> {
    let mut alloc = Allocator::new();
    // `migrate` has left out the Eips Herald refuses.
    for pool in eips.iter().filter_map(|eip| pool(eip).ok()) {
        alloc.set_pool(pool);
    }
    let eip_names: Vec<&str> = eips.iter().filter_map(|e| e.metadata.name.as_deref()).collect();
    let namespace_labels: BTreeMap<&String, Arc<BTreeMap<String, String>>> =
        namespaces.iter().map(|(n, l)| (n, Arc::new(l.clone()))).collect();
    let no_labels = Arc::new(BTreeMap::new());
    let mut checks = Vec::new();
    let mut existing = Vec::new();
    // Each IP's holders and their sharing keys.
    let mut holders: BTreeMap<IpAddr, Vec<(String, Option<String>)>> = BTreeMap::new();
    for value in services {
        let service: Service = match serde_json::from_value(value.clone()) {
            Ok(s) => s,
            Err(e) => {
                findings.push(Finding {
                    subject: super::subject(value),
                    kind: Kind::Skipped,
                    message: format!("not a readable Service: {e}"),
                });
                continue;
            }
        };
        let raw_annotations = service.metadata.annotations.clone().unwrap_or_default();
        let finalizers = service.metadata.finalizers.clone().unwrap_or_default();
        let view = ServiceView::from(service);
        if view.type_.as_deref() != Some("LoadBalancer") {
            continue;
        }
        let key = format!("{}/{}", view.namespace, view.name);
        if finalizers.iter().any(|f| f == OPENELB_FINALIZER) {
            let rest: Vec<&String> = finalizers.iter().filter(|f| *f != OPENELB_FINALIZER).collect();
            findings.push(Finding {
                subject: format!("Service {key}"),
                kind: Kind::Action,
                message: format!(
                    "it carries OpenELB's finalizer {OPENELB_FINALIZER}: once OpenELB is removed, nothing removes it \
                     and deleting the Service hangs; remove it then with `kubectl patch service {} -n {} --type=merge \
                     -p '{{\"metadata\":{{\"finalizers\":{}}}}}'`",
                    view.name,
                    view.namespace,
                    serde_json::to_string(&rest).unwrap_or_default()
                ),
            });
        }
        let mut annotations = Vec::new();
        for (k, v) in &raw_annotations {
            if READ.contains(&k.as_str()) {
                annotations.push(format!("{k}: {v} (Herald reads it)"));
            } else if let Some((_, instead)) = NOT_READ.iter().find(|(old, _)| old == k) {
                annotations.push(format!("{k}: {v} (Herald does NOT read it: write {instead}: {v})"));
            } else if OBSOLETE.contains(&k.as_str()) {
                annotations.push(format!("{k} (no longer needed)"));
            }
        }
        if source == Source::Openelb
            && view.load_balancer_class.is_none()
            && !raw_annotations.contains_key(names::OPENELB_ANNOTATION_LB)
            && options.default_class
        {
            annotations.push(format!(
                "OpenELB left it alone (no {}: openelb), Herald takes it (a Service without a class); run the agents \
                 with --default-class=false and give Herald's Services spec.loadBalancerClass: {} to keep it so",
                names::OPENELB_ANNOTATION_LB,
                names::LOAD_BALANCER_CLASS
            ));
        }
        let ips = adapter::status_ips(&view);
        let outcome = if !adapter::handles(&view, options.default_class) {
            Some(Outcome::NotHandled {
                reason: match &view.load_balancer_class {
                    Some(class) => format!("its loadBalancerClass is {class}, not {}", names::LOAD_BALANCER_CLASS),
                    None => "it has no loadBalancerClass and the agents run with --default-class=false".into(),
                },
            })
        } else if ips.is_empty() {
            Some(Outcome::Pending)
        } else {
            let labels = namespace_labels.get(&view.namespace).unwrap_or(&no_labels);
            match adapter::service_request(&view, labels) {
                Ok(req) => {
                    if let Some(pool) = req.pool.as_deref().filter(|p| !eip_names.contains(p)) {
                        findings.push(Finding {
                            subject: format!("Service {key}"),
                            kind: Kind::Action,
                            message: format!(
                                "its annotation names pool '{pool}', which is not in the output: Herald keeps its IPs \
                                 when it starts, but refuses the Service's next change (no such Eip); name the Eip \
                                 that holds its IPs instead"
                            ),
                        });
                    }
                    let strays: Vec<String> = req
                        .requested_ips
                        .iter()
                        .filter(|ip| !ips.contains(ip))
                        .map(IpAddr::to_string)
                        .collect();
                    if !strays.is_empty() {
                        findings.push(Finding {
                            subject: format!("Service {key}"),
                            kind: Kind::Action,
                            message: format!(
                                "it asks for {} but holds {}: Herald would move it to what it asks for; correct the \
                                 request (annotation or spec.loadBalancerIP) first",
                                strays.join(", "),
                                ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                    for ip in &ips {
                        holders
                            .entry(*ip)
                            .or_default()
                            .push((key.clone(), req.sharing_key.clone()));
                    }
                    existing.extend(adapter::existing_assignment(&view, req));
                    None
                }
                Err(e) => Some(Outcome::Loses {
                    reason: format!("Herald cannot read its request ({e})"),
                }),
            }
        };
        checks.push((key, ips, outcome, annotations));
    }
    let mut unshared = std::collections::BTreeSet::new();
    for (ip, services) in &holders {
        let keys: std::collections::BTreeSet<&Option<String>> = services.iter().map(|(_, k)| k).collect();
        if services.len() < 2 || (keys.len() == 1 && keys.iter().all(|k| k.is_some())) {
            continue;
        }
        unshared.extend(services.iter().map(|(s, _)| s.clone()));
        let key = format!("shared-{ip}").replace(':', "-");
        let commands: Vec<String> = services
            .iter()
            .map(|(svc, _)| {
                let (ns, name) = svc.split_once('/').unwrap_or(("default", svc));
                format!(
                    "`kubectl annotate service {name} -n {ns} --overwrite {}={key}`",
                    names::ANNOTATION_SHARING_KEY
                )
            })
            .collect();
        findings.push(Finding {
            subject: services
                .iter()
                .map(|(s, _)| format!("Service {s}"))
                .collect::<Vec<_>>()
                .join(", "),
            kind: Kind::Action,
            message: format!(
                "they share {ip} without one sharing key; Herald shares an IP only between Services with the same \
                 key (and ports that do not overlap), else the oldest keeps it: before starting Herald, run {}",
                commands.join(" and ")
            ),
        });
    }
    let conflicts: BTreeMap<String, String> = alloc
        .rebuild(existing)
        .into_iter()
        .map(|c| (c.service.to_string(), c.to_string()))
        .collect();
    let allocated: BTreeMap<String, String> = alloc
        .allocations()
        .map(|(k, a)| (k.to_string(), a.pool.clone()))
        .collect();
    checks
        .into_iter()
        .map(|(service, ips, outcome, annotations)| {
            let outcome = outcome.unwrap_or_else(|| match (conflicts.get(&service), allocated.get(&service)) {
                (Some(reason), _) if unshared.contains(&service) => Outcome::Loses {
                    reason: format!("{reason} (unless the sharing-key commands under \"To do\" run first)"),
                },
                (Some(reason), _) => Outcome::Loses { reason: reason.clone() },
                (None, Some(eip)) => Outcome::Keeps { eip: eip.clone() },
                (None, None) => Outcome::Loses {
                    reason: "the allocator did not keep it".into(),
                },
            });
            ServiceCheck {
                service,
                ips,
                outcome,
                annotations,
            }
        })
        .collect()
}
