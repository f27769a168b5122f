//! `cargo fuzz run -s none -a k8s_eip`: arbitrary bytes as an Eip's JSON, read the way the allocator reads an Eip
//! (`adapter::pool_spec`, `Pool::parse`) and given to the allocator, which then allocates from it. A bad Eip is an
//! error naming the field; nothing panics, and the allocator's invariants hold.
#![no_main]

use herald::adapter;
use herald_api::Eip;
use herald_ipam::{Allocator, Pool, ServiceRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(eip) = serde_json::from_slice::<Eip>(data) else {
        return;
    };
    let Ok(spec) = adapter::pool_spec(&eip) else { return };
    let Ok(pool) = Pool::parse(&spec) else { return };
    let mut alloc = Allocator::new();
    alloc.set_pool(pool);
    let req = ServiceRequest::new("default", "web");
    let _ = alloc.allocate(&req);
    alloc.check_invariants().expect("allocator invariants");
    let _ = alloc.pool_stats(&spec.name);
});
