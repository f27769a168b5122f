//! The RBAC audit: what the agents' ServiceAccount was granted (the Roles and bindings of a manifest such as
//! `deploy/herald.yaml`) against what it used (the real kube-apiserver's audit log of a test run, written per server
//! by `cluster::kube`). Nothing used may be missing, nothing granted may go unused. Pure: the `rbac-audit` binary
//! reads the files and prints the report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One permission: a verb on a resource (with its subresource, `services/status`) of an API group (`""`: core), in
/// one namespace or (`None`) in every namespace and at cluster scope, as a ClusterRoleBinding grants it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub namespace: Option<String>,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{} {} ({group})", self.verb, self.resource)?;
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " cluster-wide"),
        }
    }
}

/// One kind of request the ServiceAccount made, as the audit log records it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// Empty for cluster-scoped objects and requests across all namespaces.
    pub namespace: String,
    /// The authorizer's decision (`allow`, `forbid`).
    pub decision: String,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        let ns = if self.namespace.is_empty() {
            "-"
        } else {
            &self.namespace
        };
        write!(f, "{} {} ({group}) namespace={ns}", self.verb, self.resource)
    }
}

/// Everything a subject was granted by the manifest: the rules of each Role and ClusterRole bound to it.
pub fn granted(manifest: &[Value], subject_ns: &str, subject_name: &str) -> Result<BTreeSet<Permission>> {
    let binds_subject = |b: &Value| {
        b["subjects"].as_array().is_some_and(|subjects| {
            subjects
                .iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == subject_name && s["namespace"] == subject_ns)
        })
    };
    let mut out = BTreeSet::new();
    let bindings = of_kind(manifest, "ClusterRoleBinding")
        .map(|b| (b, None))
        .chain(of_kind(manifest, "RoleBinding").map(|b| (b, b["metadata"]["namespace"].as_str())));
    for (binding, namespace) in bindings.filter(|(b, _)| binds_subject(b)) {
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role = of_kind(manifest, role_kind)
            .find(|r| {
                r["metadata"]["name"] == role_name
                    && (role_kind == "ClusterRole" || r["metadata"]["namespace"].as_str() == namespace)
            })
            .with_context(|| {
                format!(
                    "{role_kind} {role_name} (bound by {}) is not in the manifest",
                    name(binding)
                )
            })?;
        for rule in role["rules"].as_array().into_iter().flatten() {
            if rule.get("resourceNames").is_some() || rule.get("nonResourceURLs").is_some() {
                bail!("{role_kind} {role_name}: resourceNames and nonResourceURLs are not audited yet");
            }
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        if [group, resource, verb].contains(&"*") {
                            bail!("{role_kind} {role_name} grants `*`: least privilege names every verb and resource");
                        }
                        out.insert(Permission {
                            group: group.to_string(),
                            resource: resource.to_string(),
                            verb: verb.to_string(),
                            namespace: namespace.map(str::to_string),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

fn of_kind<'a>(manifest: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    manifest.iter().filter(move |d| d["kind"] == kind)
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn name(doc: &Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The requests of one server's record (`{"server": DIR, "requests": [...]}`, see `KubeApiServer::agent_requests`),
/// with their counts. Requests without a resource (discovery, `/version`: every authenticated user may make them) are
/// left out.
pub fn requests(record: &Value) -> BTreeMap<Request, u64> {
    let mut out = BTreeMap::new();
    for r in record["requests"].as_array().into_iter().flatten() {
        let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        if text("resource").is_empty() {
            continue;
        }
        let resource = match text("subresource") {
            sub if sub.is_empty() => text("resource"),
            sub => format!("{}/{sub}", text("resource")),
        };
        let req = Request {
            verb: text("verb"),
            group: text("apiGroup"),
            resource,
            namespace: text("namespace"),
            decision: text("decision"),
        };
        *out.entry(req).or_default() += r["count"].as_u64().unwrap_or(1);
    }
    out
}

/// Whether `p` allows `r`.
fn allows(p: &Permission, r: &Request) -> bool {
    p.group == r.group
        && p.resource == r.resource
        && p.verb == r.verb
        && p.namespace.as_ref().is_none_or(|ns| *ns == r.namespace)
}

/// The audit's verdict.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests no grant allows, with their counts.
    pub missing: Vec<(Request, u64)>,
    /// Requests a grant allows that the authorizer refused all the same: a kube-apiserver that has just (re)started
    /// serves before its RBAC caches hold the roles (`clusterrole ... not found`), so an agent meets 403 on requests it
    /// is granted for a moment after every API server restart. Reported, not a finding: the agent must retry them.
    pub refused_granted: Vec<(Request, u64)>,
    /// Grants no request used.
    pub unused: Vec<Permission>,
    /// Every grant with the number of requests it allowed.
    pub used: Vec<(Permission, u64)>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unused.is_empty()
    }
}

/// Compares what was granted with what was used.
pub fn audit(granted: &BTreeSet<Permission>, used: &BTreeMap<Request, u64>) -> Report {
    let mut report = Report::default();
    let mut per_grant: BTreeMap<&Permission, u64> = granted.iter().map(|p| (p, 0)).collect();
    for (req, n) in used {
        let grants: Vec<&Permission> = granted.iter().filter(|p| allows(p, req)).collect();
        if grants.is_empty() {
            report.missing.push((req.clone(), *n));
        } else if req.decision == "forbid" {
            report.refused_granted.push((req.clone(), *n));
        }
        for p in grants {
            *per_grant.entry(p).or_default() += n;
        }
    }
    for (p, n) in per_grant {
        if n == 0 {
            report.unused.push(p.clone());
        }
        report.used.push((p.clone(), n));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest() -> Vec<Value> {
        let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: agent}
rules:
  - apiGroups: [""]
    resources: [services, services/status]
    verbs: [list, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: agent}
subjects: [{kind: ServiceAccount, name: herald, namespace: herald-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: agent, namespace: herald-system}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: agent, namespace: elsewhere}
rules:
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: agent, namespace: herald-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: agent}
subjects: [{kind: ServiceAccount, name: herald, namespace: herald-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: other, namespace: elsewhere}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: agent}
subjects: [{kind: ServiceAccount, name: someone-else, namespace: herald-system}]
"#;
        serde_saphyr::from_multiple(yaml).unwrap()
    }

    fn record(reqs: &[(&str, &str, &str, &str, &str, &str)]) -> Value {
        let requests: Vec<Value> = reqs
            .iter()
            .map(|(verb, group, resource, sub, ns, decision)| {
                json!({"verb": verb, "apiGroup": group, "resource": resource, "subresource": sub,
                       "namespace": ns, "path": "", "decision": decision, "count": 2})
            })
            .collect();
        json!({"server": "/tmp/x", "requests": requests})
    }

    #[test]
    fn grants_follow_the_bindings_of_the_subject_only() {
        let g = granted(&manifest(), "herald-system", "herald").unwrap();
        let text: Vec<String> = g.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "list services (core) cluster-wide",
                "patch services (core) cluster-wide",
                "list services/status (core) cluster-wide",
                "patch services/status (core) cluster-wide",
                "get leases (coordination.k8s.io) in namespace herald-system",
            ]
        );
    }

    #[test]
    fn clean_when_every_grant_is_used_and_every_use_granted() {
        let g = granted(&manifest(), "herald-system", "herald").unwrap();
        let used = requests(&record(&[
            ("list", "", "services", "", "", "allow"),
            ("patch", "", "services", "", "default", "allow"),
            ("list", "", "services", "status", "", "allow"),
            ("patch", "", "services", "status", "web", "allow"),
            ("get", "coordination.k8s.io", "leases", "", "herald-system", "allow"),
        ]));
        let report = audit(&g, &used);
        assert!(report.is_clean(), "{report:?}");
        assert!(report.used.iter().all(|(_, n)| *n == 2), "{report:?}");
    }

    #[test]
    fn a_request_outside_the_grants_or_refused_is_missing() {
        let g = granted(&manifest(), "herald-system", "herald").unwrap();
        let used = requests(&record(&[
            ("list", "", "services", "", "", "allow"),
            // a Lease outside the Role's namespace
            ("get", "coordination.k8s.io", "leases", "", "default", "forbid"),
            // granted, refused while the server's RBAC caches were empty
            ("list", "", "services", "", "", "forbid"),
            // a verb nobody granted, even if the decision field were missing
            ("delete", "", "services", "", "default", ""),
        ]));
        let report = audit(&g, &used);
        let missing: Vec<String> = report.missing.iter().map(|(r, _)| r.to_string()).collect();
        assert_eq!(
            missing,
            [
                "delete services (core) namespace=default",
                "get leases (coordination.k8s.io) namespace=default",
            ]
        );
        let refused: Vec<String> = report.refused_granted.iter().map(|(r, _)| r.to_string()).collect();
        assert_eq!(refused, ["list services (core) namespace=-"]);
        let unused: Vec<String> = report.unused.iter().map(ToString::to_string).collect();
        assert_eq!(unused.len(), 4, "{unused:?}");
        assert!(unused.contains(&"get leases (coordination.k8s.io) in namespace herald-system".to_string()));
    }

    #[test]
    fn discovery_requests_are_left_out_and_wildcards_refused() {
        let mut rec = record(&[("get", "", "", "", "", "allow")]);
        rec["requests"][0]["path"] = json!("/api");
        assert!(requests(&rec).is_empty());

        let mut m = manifest();
        m[0]["rules"][0]["verbs"] = json!(["*"]);
        let err = granted(&m, "herald-system", "herald").unwrap_err().to_string();
        assert!(err.contains("grants `*`"), "{err}");
    }
}
