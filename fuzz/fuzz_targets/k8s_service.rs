//! `cargo fuzz run -s none -a k8s_service`: arbitrary bytes as a Service's JSON, read the way the agent reads a
//! Service (`ServiceView::from`), turned into the allocator's request (`adapter::service_request`) and allocated from
//! a dual-stack pool. Nothing may panic, a bad Service is an error, and the allocator's invariants hold afterwards.
#![no_main]

use std::sync::Arc;

use herald::adapter;
use herald::service::ServiceView;
use herald_ipam::{Allocator, Pool, PoolSpec};
use k8s_openapi::api::core::v1::Service;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(service) = serde_json::from_slice::<Service>(data) else {
        return;
    };
    let view = ServiceView::from(service);
    let _ = adapter::handles(&view, true);
    let _ = adapter::status_ips(&view);
    let Ok(req) = adapter::service_request(&view, &Arc::default()) else {
        return;
    };
    let mut alloc = Allocator::new();
    let spec = PoolSpec::new("lab", &["192.0.2.0/28", "2001:db8::/124"]);
    alloc.set_pool(Pool::parse(&spec).expect("a valid pool"));
    let _ = alloc.allocate(&req);
    // Twice: the same request again changes nothing, whatever it asked.
    let _ = alloc.allocate(&req);
    alloc.check_invariants().expect("allocator invariants");
    if let Some(existing) = adapter::existing_assignment(&view, req) {
        let _ = alloc.rebuild(vec![existing]);
        alloc.check_invariants().expect("allocator invariants after a rebuild");
    }
});
