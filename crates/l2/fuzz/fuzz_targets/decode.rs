//! Any byte string is either decoded or rejected with an error; never a panic. Decoded frames re-encode to frames
//! that decode to the same message.
#![no_main]

use herald_l2::packet::{Packet, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = decode(data) {
        let again = match &packet {
            Packet::Arp(eth, arp) => decode(&arp.to_frame(eth.source, eth.destination)),
            Packet::NeighborSolicitation(eth, ns) => decode(&ns.to_frame(eth.source, eth.destination)),
            Packet::NeighborAdvertisement(eth, na) => decode(&na.to_frame(eth.source, eth.destination)),
        };
        assert_eq!(again.as_ref(), Ok(&packet));
    }
});
