//! `cargo fuzz run -s none -a decode` (from crates/bgp): the decoder must never panic, whatever a peer sends, and
//! every frame it accepts must fit the bytes it was given.
#![no_main]

use herald_bgp::packet::{DecodeContext, decode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (four_octet_as, internal) in [(false, false), (true, false), (false, true), (true, true)] {
        let ctx = DecodeContext { four_octet_as, internal };
        let mut rest = data;
        while let Ok(Some((msg, n))) = decode_frame(rest, ctx) {
            assert!((19..=4096).contains(&n) && n <= rest.len());
            // Whatever we decoded, we can encode again without panicking.
            let _ = msg.encode(four_octet_as);
            rest = &rest[n..];
        }
    }
});
