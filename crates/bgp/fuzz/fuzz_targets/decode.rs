//! `cargo +nightly fuzz run decode` (from crates/bgp): the decoder must never panic, whatever a peer sends, and
//! every frame it accepts must fit the bytes it was given.
#![no_main]

use herald_bgp::packet::decode_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for four_octet_as in [false, true] {
        let mut rest = data;
        while let Ok(Some((msg, n))) = decode_frame(rest, four_octet_as) {
            assert!((19..=4096).contains(&n) && n <= rest.len());
            // Whatever we decoded, we can encode again without panicking.
            let _ = msg.encode(four_octet_as);
            rest = &rest[n..];
        }
    }
});
