//! What every message shares on the wire: the header's sizes, message types, AS_TRANS, address families, and what
//! decoding a peer's messages depends on. The lowest module of the codec: it imports none of the others.

/// RFC 4271 §4.1: sixteen ones.
pub const MARKER: [u8; 16] = [0xff; 16];
/// Header length (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4: the largest message without RFC 8654 extended messages, which Herald does not negotiate.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 4271 §1.1: the 2-octet placeholder for 4-octet ASNs (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3). A type outside these is a Message Header Error (RFC 4271 §6.1),
/// so unlike NOTIFICATION codes there is no `Unknown`: see [`MessageType::from_wire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

impl MessageType {
    /// The type of a header's type octet, `None` when no message has that type.
    pub fn from_wire(value: u8) -> Option<MessageType> {
        Some(match value {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }
}

impl From<MessageType> for u8 {
    fn from(ty: MessageType) -> u8 {
        ty as u8
    }
}

/// What decoding a peer's messages depends on, known once its session is established (before that, the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeContext {
    /// RFC 6793: both sides advertised 4-octet AS numbers, so AS_PATH and AGGREGATOR carry 4-octet ones.
    pub four_octet_as: bool,
    /// The peer is in our AS (iBGP): RFC 7606 §7.5, §7.9 and §7.10 judge LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST
    /// by it.
    pub internal: bool,
}

/// Address Family Identifier (IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier (IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    pub const UNICAST: Safi = Safi(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_round_trip_and_nothing_else_is_one() {
        for value in 0..=u8::MAX {
            match MessageType::from_wire(value) {
                Some(ty) => assert_eq!(u8::from(ty), value),
                None => assert!(value == 0 || value > 5, "type {value}"),
            }
        }
    }
}
