//! When two Services may hold the same address. The rules follow MetalLB's so that users moving over keep
//! their behaviour: equal sharing keys, disjoint (port, protocol) pairs, and the same backends when
//! `externalTrafficPolicy: Local` (the announcing node must have endpoints of every sharer).

use std::fmt;

use crate::request::{ServiceKey, ServicePort, ServiceRequest};
use crate::selector::Labels;

/// Why a Service may not share an address with a Service that already holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharingConflict {
    /// The requesting Service sets no sharing key.
    OursUnshared {
        /// The holder.
        other: ServiceKey,
    },
    /// The holder sets no sharing key.
    TheirsUnshared {
        /// The holder.
        other: ServiceKey,
    },
    /// Both set a sharing key, but different ones.
    KeyMismatch {
        /// The holder.
        other: ServiceKey,
        /// The requester's key.
        ours: String,
        /// The holder's key.
        theirs: String,
    },
    /// Both expose the same (port, protocol).
    PortOverlap {
        /// The holder.
        other: ServiceKey,
        /// The first common pair.
        port: ServicePort,
    },
    /// `externalTrafficPolicy` or, for `Local`, the pod selector differs.
    BackendMismatch {
        /// The holder.
        other: ServiceKey,
        /// What differs.
        detail: String,
    },
    /// The address is attributed to another pool (only possible when pools overlap).
    OtherPool {
        /// The holder.
        other: ServiceKey,
        /// The pool the holder got the address from.
        pool: String,
    },
}

impl SharingConflict {
    /// The Service already holding the address.
    pub fn other(&self) -> &ServiceKey {
        match self {
            SharingConflict::OursUnshared { other }
            | SharingConflict::TheirsUnshared { other }
            | SharingConflict::KeyMismatch { other, .. }
            | SharingConflict::PortOverlap { other, .. }
            | SharingConflict::BackendMismatch { other, .. }
            | SharingConflict::OtherPool { other, .. } => other,
        }
    }
}

impl fmt::Display for SharingConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharingConflict::OursUnshared { other } => write!(
                f,
                "it is held by {other}; set the same herald.dev/sharing-key on both Services to share it"
            ),
            SharingConflict::TheirsUnshared { other } => write!(
                f,
                "{other} holds it without a herald.dev/sharing-key; add the same key to {other} to share it"
            ),
            SharingConflict::KeyMismatch { other, ours, theirs } => write!(
                f,
                "sharing key '{ours}' differs from '{theirs}' of {other}; use the same herald.dev/sharing-key"
            ),
            SharingConflict::PortOverlap { other, port } => {
                write!(f, "port {port} overlaps with {other}")
            }
            SharingConflict::BackendMismatch { other, detail } => {
                write!(f, "{detail} (shared with {other})")
            }
            SharingConflict::OtherPool { other, pool } => {
                write!(f, "{other} holds it from Eip '{pool}' (the Eips overlap)")
            }
        }
    }
}

/// Whether `ours` may hold an address `theirs` already holds.
pub(crate) fn check(ours: &ServiceRequest, theirs: &ServiceRequest) -> Result<(), SharingConflict> {
    let other = theirs.key.clone();
    match (&ours.sharing_key, &theirs.sharing_key) {
        (None, _) => return Err(SharingConflict::OursUnshared { other }),
        (Some(_), None) => return Err(SharingConflict::TheirsUnshared { other }),
        (Some(a), Some(b)) if a != b => {
            return Err(SharingConflict::KeyMismatch {
                other,
                ours: a.clone(),
                theirs: b.clone(),
            });
        }
        _ => {}
    }
    if let Some(port) = ours.ports.iter().find(|p| theirs.ports.contains(p)) {
        return Err(SharingConflict::PortOverlap { other, port: *port });
    }
    // Like MetalLB's backend key: empty for Cluster, the pod selector for Local. Local Services must agree
    // on their pods because the announcing node is chosen by where those pods run.
    let detail = match (ours.etp_local, theirs.etp_local) {
        (false, false) => return Ok(()),
        (true, true) if ours.pod_selector == theirs.pod_selector => return Ok(()),
        (true, true) => format!(
            "externalTrafficPolicy Local requires the same pod selector: this Service selects {{{}}}, {other} selects {{{}}}",
            fmt_labels(&ours.pod_selector),
            fmt_labels(&theirs.pod_selector)
        ),
        (ours_local, _) => format!(
            "externalTrafficPolicy differs: this Service uses {}, {other} uses {}; Services sharing an IP must use the same policy",
            policy(ours_local),
            policy(!ours_local)
        ),
    };
    Err(SharingConflict::BackendMismatch { other, detail })
}

fn policy(local: bool) -> &'static str {
    if local { "Local" } else { "Cluster" }
}

fn fmt_labels(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Protocol;

    fn svc(name: &str, key: Option<&str>, ports: &[(u16, Protocol)]) -> ServiceRequest {
        let mut r = ServiceRequest::new("ns", name);
        r.sharing_key = key.map(String::from);
        r.ports = ports.iter().map(|&(p, proto)| ServicePort::new(p, proto)).collect();
        r
    }

    #[test]
    fn same_key_and_disjoint_ports_share() {
        let a = svc("a", Some("k"), &[(80, Protocol::Tcp)]);
        let b = svc("b", Some("k"), &[(80, Protocol::Udp), (443, Protocol::Tcp)]);
        assert_eq!(check(&b, &a), Ok(()));
    }

    #[test]
    fn refusals_name_the_other_service_and_the_cause() {
        let a = svc("a", Some("k"), &[(80, Protocol::Tcp)]);
        let overlap = svc("b", Some("k"), &[(80, Protocol::Tcp)]);
        assert_eq!(
            check(&overlap, &a).unwrap_err().to_string(),
            "port 80/TCP overlaps with ns/a"
        );

        let other_key = svc("b", Some("j"), &[(81, Protocol::Tcp)]);
        assert_eq!(
            check(&other_key, &a).unwrap_err().to_string(),
            "sharing key 'j' differs from 'k' of ns/a; use the same herald.dev/sharing-key"
        );
        let no_key = svc("b", None, &[(81, Protocol::Tcp)]);
        assert!(matches!(check(&no_key, &a), Err(SharingConflict::OursUnshared { .. })));
        assert!(matches!(
            check(&a, &no_key),
            Err(SharingConflict::TheirsUnshared { .. })
        ));
    }

    #[test]
    fn local_traffic_policy_needs_the_same_pods() {
        let mut a = svc("a", Some("k"), &[(80, Protocol::Tcp)]);
        let mut b = svc("b", Some("k"), &[(81, Protocol::Tcp)]);
        a.etp_local = true;
        std::sync::Arc::make_mut(&mut a.pod_selector).insert("app".into(), "web".into());
        let err = check(&b, &a).unwrap_err().to_string();
        assert!(err.contains("this Service uses Cluster, ns/a uses Local"), "{err}");

        b.etp_local = true;
        std::sync::Arc::make_mut(&mut b.pod_selector).insert("app".into(), "api".into());
        let err = check(&b, &a).unwrap_err().to_string();
        assert!(
            err.contains("this Service selects {app=api}, ns/a selects {app=web}"),
            "{err}"
        );
        std::sync::Arc::make_mut(&mut b.pod_selector).insert("app".into(), "web".into());
        assert_eq!(check(&b, &a), Ok(()));
    }
}
