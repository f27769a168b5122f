//! The responder, holding IPv4 and IPv6 addresses in every phase, fed arbitrary frames: it never panics and only
//! ever sends well-formed frames.
#![no_main]

use std::sync::Arc;

use herald_l2::packet::{MIN_FRAME_LEN, MacAddr, decode};
use herald_l2::{AnnounceConfig, AnnounceMode, Counters, ProbeConfig, Responder};
use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let mut r = Responder::new(
        mac,
        ProbeConfig::default(),
        AnnounceConfig::default(),
        Arc::new(Counters::default()),
    );
    for (ip, mode) in [
        ("198.51.100.10", AnnounceMode::Immediately),
        ("198.51.100.11", AnnounceMode::Probe),
        ("2001:db8::10", AnnounceMode::Immediately),
        ("2001:db8::11", AnnounceMode::Probe),
    ] {
        r.announce(ip.parse().unwrap(), mode, now);
    }
    for frame in r.handle_frame(data, now).frames {
        assert!(frame.len() >= MIN_FRAME_LEN);
        assert!(decode(&frame).is_ok());
    }
});
