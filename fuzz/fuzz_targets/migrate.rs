//! `cargo fuzz run -s none -a migrate`: arbitrary bytes as the input of `herald migrate` (YAML or JSON documents),
//! converted from MetalLB and from OpenELB, rendered as YAML and as the report. Nothing may panic, and every Eip
//! written is one the allocator accepts.
#![no_main]

use herald::migrate::{self, Options, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(docs) = migrate::parse_documents("fuzz", text) else {
        return;
    };
    for source in [Source::Metallb, Source::Openelb] {
        let m = migrate::migrate(source, docs.clone(), &Options::default());
        for eip in &m.eips {
            let spec = herald::adapter::pool_spec(eip).expect("a migrated Eip reads as a pool");
            herald_ipam::Pool::parse(&spec).expect("a migrated Eip is a valid pool");
        }
        migrate::render_yaml(&m, source).expect("the output renders");
        let _ = migrate::render_report(&m, source);
    }
});
