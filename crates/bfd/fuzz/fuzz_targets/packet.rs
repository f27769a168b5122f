//! `cargo fuzz run -s none -a packet` (from crates/bfd): the control-packet decoder never panics, whatever arrives on
//! UDP port 3784, and a packet it accepts encodes to bytes that decode to the same packet.
#![no_main]

use herald_bfd::packet::ControlPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ControlPacket::decode(data) {
        let again = ControlPacket::decode(&p.encode()).expect("an encoded packet decodes");
        assert_eq!(again, p);
    }
});
