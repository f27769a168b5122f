//! Codec tests: byte vectors next to the values they stand for, error cases with their NOTIFICATION, netgauze as
//! an independent decoder of everything we encode, and property tests over random and mutated input.

mod errors;
mod golden;
mod oracle;
mod prop;
mod rfc7606;

use herald_bgp::packet::DecodeContext;

/// A 4-octet AS eBGP session, what most tests decode for.
pub const EBGP: DecodeContext = DecodeContext {
    four_octet_as: true,
    internal: false,
};

/// `ff` × 16 followed by length and type.
pub fn header(len: u16, ty: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend(len.to_be_bytes());
    v.push(ty);
    v
}

/// Parses `"0a 0b ..."` into bytes.
pub fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}
