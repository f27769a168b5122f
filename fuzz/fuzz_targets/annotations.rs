//! `cargo fuzz run -s none -a annotations`: arbitrary Service annotations through every parser Herald has for them:
//! the allocator's request (`herald.dev/eip`, `herald.dev/ips`, `herald.dev/sharing-key` and the MetalLB and OpenELB
//! keys read for migrating users, with `spec.loadBalancerIP`), `herald.dev/allocated-from` and
//! `herald.dev/announced-by`.
//!
//! The input is text, one `key=value` per line (split at the first `=`): an annotation, or `spec.loadBalancerIP`,
//! or `status` (one ingress IP per line). Nothing may panic; a request names the pool and the sharing key the
//! precedence rules pick, its IPs print and parse back to themselves, an error names its field and quotes no more
//! than an excerpt, and `announced-by` is rewritten to entries for the Service's IPs only, the same again when
//! nothing changed.
#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;

use herald::adapter;
use herald::service::ServiceView;
use herald_api::names;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use libfuzzer_sys::fuzz_target;

/// The keys of the pool name, the IPs and the sharing key, in the order of precedence `adapter` documents.
const POOL_KEYS: [&str; 4] = [
    names::ANNOTATION_EIP,
    names::METALLB_ANNOTATION_POOL,
    names::METALLB_LEGACY_ANNOTATION_POOL,
    names::OPENELB_ANNOTATION_EIP,
];
const IPS_KEYS: [&str; 4] = [
    names::ANNOTATION_IPS,
    names::METALLB_ANNOTATION_IPS,
    names::METALLB_LEGACY_ANNOTATION_IPS,
    names::OPENELB_ANNOTATION_IP,
];
const SHARING_KEYS: [&str; 3] = [
    names::ANNOTATION_SHARING_KEY,
    names::METALLB_ANNOTATION_SHARING,
    names::METALLB_LEGACY_ANNOTATION_SHARING,
];

/// The value a list of keys yields: the first one set to something other than blanks, trimmed.
fn first<'a>(annotations: &'a BTreeMap<String, String>, keys: &[&'static str]) -> Option<(&'static str, &'a str)> {
    keys.iter()
        .find_map(|k| Some((*k, annotations.get(*k)?.trim())).filter(|(_, v)| !v.is_empty()))
}

fn service(annotations: BTreeMap<String, String>, lb_ip: Option<String>, ingress: Vec<String>) -> ServiceView {
    ServiceView::from(Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_ip: lb_ip,
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    ingress
                        .into_iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some(ip),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut annotations = BTreeMap::new();
    let mut lb_ip = None;
    let mut ingress = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "spec.loadBalancerIP" => lb_ip = Some(value.to_string()),
            "status" => ingress.push(value.to_string()),
            _ => {
                annotations.insert(key.to_string(), value.to_string());
            }
        }
    }
    let svc = service(annotations.clone(), lb_ip.clone(), ingress);
    // The view keeps exactly the annotations Herald reads.
    for (key, value) in &annotations {
        if names::SERVICE_ANNOTATIONS.contains(&key.as_str()) {
            assert_eq!(svc.annotation(key), Some(value.as_str()));
        }
    }
    assert!(
        svc.annotations
            .iter()
            .all(|(k, _)| names::SERVICE_ANNOTATIONS.contains(&&**k))
    );
    assert_eq!(
        adapter::allocated_from(&svc),
        annotations.get(names::ANNOTATION_ALLOCATED_FROM).map(String::as_str)
    );

    match adapter::service_request(&svc, &Default::default()) {
        Ok(req) => {
            assert_eq!(req.pool.as_deref(), first(&annotations, &POOL_KEYS).map(|(_, v)| v));
            assert_eq!(
                req.sharing_key.as_deref(),
                first(&annotations, &SHARING_KEYS).map(|(_, v)| v)
            );
            // Every requested IP comes from the IPs annotation or spec.loadBalancerIP, and prints as text that
            // parses back to it.
            let ips = first(&annotations, &IPS_KEYS);
            let given: Vec<IpAddr> = ips
                .into_iter()
                .flat_map(|(_, v)| v.split(','))
                .chain(lb_ip.as_deref())
                .filter_map(|p| p.trim().parse().ok())
                .collect();
            for ip in &req.requested_ips {
                assert!(given.contains(ip), "{ip} was not asked for");
                assert_eq!(ip.to_string().parse::<IpAddr>().ok(), Some(*ip));
            }
            let written: Vec<String> = req.requested_ips.iter().map(IpAddr::to_string).collect();
            let mut again = BTreeMap::new();
            again.insert(names::ANNOTATION_IPS.to_string(), written.join(","));
            let reread = adapter::service_request(&service(again, None, Vec::new()), &Default::default())
                .expect("the IPs of a request, written as herald.dev/ips, read again");
            assert_eq!(reread.requested_ips, req.requested_ips);
        }
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.starts_with("annotation ") || e.starts_with("spec.loadBalancerIP: "),
                "{e}"
            );
            // Quotes are excerpts: 64 characters, each escaped to at most 10 bytes when it is a control character.
            assert!(e.len() < 64 * 10 + 200, "{} bytes", e.len());
        }
    }

    let status = adapter::status_ips(&svc);
    let announced: Vec<IpAddr> = status.iter().copied().step_by(2).collect();
    let existing = svc.annotation(names::ANNOTATION_ANNOUNCED_BY);
    let value = adapter::announced_by(existing, &status, announced.iter().copied(), "node-a");
    let mut seen = Vec::new();
    for entry in value.split(',').filter(|e| !e.is_empty()) {
        let (ip, node) = entry.split_once('=').expect("ip=node");
        let ip: IpAddr = ip.parse().expect("an IP");
        assert!(status.contains(&ip), "{ip} is not the Service's");
        assert!(!seen.contains(&ip), "{ip} twice");
        if announced.contains(&ip) {
            assert_eq!(node, "node-a");
        }
        seen.push(ip);
    }
    assert!(announced.iter().all(|ip| seen.contains(ip)));
    assert_eq!(adapter::announced_by(Some(&value), &status, [], "node-b"), value);
});
