//! The BFD control packet (RFC 5880 §4.1): 24 bytes, no authentication section (Herald configures none, and a packet
//! asking for one is discarded, §6.8.6). Decoding checks what §6.8.6 says to check before a packet may touch a
//! session; everything else a peer can send decodes or is refused with a reason, never a panic.

use std::fmt;
use std::time::Duration;

/// The length of a control packet without authentication.
pub const LEN: usize = 24;

/// RFC 5880 §4.1: session states as they travel in the `Sta` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(bits: u8) -> State {
        match bits & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// RFC 5880 §4.1: why the local system last changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diag {
    None = 0,
    ControlDetectionTimeExpired = 1,
    EchoFunctionFailed = 2,
    NeighborSignaledSessionDown = 3,
    ForwardingPlaneReset = 4,
    PathDown = 5,
    ConcatenatedPathDown = 6,
    AdministrativelyDown = 7,
    ReverseConcatenatedPathDown = 8,
    /// 9–31: reserved; kept as received.
    Reserved = 31,
}

impl Diag {
    fn from_bits(bits: u8) -> Diag {
        match bits & 0b1_1111 {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            _ => Diag::Reserved,
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Diag::None => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Reserved => "reserved diagnostic",
        })
    }
}

/// A control packet, as Herald sends it and as decoded (the Demand, Control Plane Independent and Multipoint bits
/// are sent clear; received ones are kept so the session can refuse what it does not do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    /// Poll: the sender asks for a Final (a parameter change, §6.5).
    pub poll: bool,
    /// Final: the answer to a Poll.
    pub final_: bool,
    pub control_plane_independent: bool,
    pub demand: bool,
    pub multipoint: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub required_min_echo_rx: Duration,
}

/// Why a received packet was discarded before reaching a session (RFC 5880 §6.8.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes: a BFD control packet has at least 24")]
    Short(usize),
    #[error("version {0}: only BFD version 1 is spoken")]
    Version(u8),
    #[error("length field {length} but {received} bytes received")]
    Length { length: u8, received: usize },
    #[error("authentication requested (A bit): Herald configures none")]
    Authentication,
    #[error("detect multiplier 0")]
    DetectMult,
    #[error("multipoint (M bit) set")]
    Multipoint,
    #[error("my discriminator 0")]
    MyDiscriminator,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl ControlPacket {
    /// The 24 bytes on the wire.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag as u8 & 0b1_1111);
        b[1] = ((self.state as u8) << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.control_plane_independent) << 3)
            | (u8::from(self.demand) << 1)
            | u8::from(self.multipoint);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        b[12..16].copy_from_slice(&micros(self.desired_min_tx).to_be_bytes());
        b[16..20].copy_from_slice(&micros(self.required_min_rx).to_be_bytes());
        b[20..24].copy_from_slice(&micros(self.required_min_echo_rx).to_be_bytes());
        b
    }

    /// Decodes a received datagram, with the checks of RFC 5880 §6.8.6 that need no session.
    pub fn decode(bytes: &[u8]) -> Result<ControlPacket, DecodeError> {
        if bytes.len() < LEN {
            return Err(DecodeError::Short(bytes.len()));
        }
        let version = bytes[0] >> 5;
        if version != 1 {
            return Err(DecodeError::Version(version));
        }
        let length = bytes[3];
        if usize::from(length) < LEN || usize::from(length) > bytes.len() {
            return Err(DecodeError::Length {
                length,
                received: bytes.len(),
            });
        }
        if bytes[1] & 0b100 != 0 {
            return Err(DecodeError::Authentication);
        }
        if bytes[2] == 0 {
            return Err(DecodeError::DetectMult);
        }
        if bytes[1] & 1 != 0 {
            return Err(DecodeError::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if word(4) == 0 {
            return Err(DecodeError::MyDiscriminator);
        }
        let flags = bytes[1];
        Ok(ControlPacket {
            diag: Diag::from_bits(bytes[0]),
            state: State::from_bits(flags >> 6),
            poll: flags & (1 << 5) != 0,
            final_: flags & (1 << 4) != 0,
            control_plane_independent: flags & (1 << 3) != 0,
            demand: flags & (1 << 1) != 0,
            multipoint: false,
            detect_mult: bytes[2],
            my_discriminator: word(4),
            your_discriminator: word(8),
            desired_min_tx: Duration::from_micros(u64::from(word(12))),
            required_min_rx: Duration::from_micros(u64::from(word(16))),
            required_min_echo_rx: Duration::from_micros(u64::from(word(20))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> ControlPacket {
        ControlPacket {
            diag: Diag::ControlDetectionTimeExpired,
            state: State::Up,
            poll: true,
            final_: false,
            control_plane_independent: false,
            demand: false,
            multipoint: false,
            detect_mult: 3,
            my_discriminator: 0x0102_0304,
            your_discriminator: 7,
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            required_min_echo_rx: Duration::ZERO,
        }
    }

    /// The bytes of RFC 5880 §4.1, field by field.
    #[test]
    fn encodes_the_rfc_layout_and_decodes_it_back() {
        let b = packet().encode();
        assert_eq!(b[0], 0x21, "version 1, diag 1");
        assert_eq!(b[1], 0xe0, "state Up (3 << 6), poll");
        assert_eq!(b[2..4], [3, 24]);
        assert_eq!(b[4..12], [1, 2, 3, 4, 0, 0, 0, 7]);
        assert_eq!(b[12..16], 300_000u32.to_be_bytes());
        assert_eq!(ControlPacket::decode(&b), Ok(packet()));
    }

    #[test]
    fn what_rfc_5880_says_to_discard_is_refused_with_a_reason() {
        let good = packet().encode();
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            ControlPacket::decode(&b)
        };
        assert_eq!(ControlPacket::decode(&good[..23]), Err(DecodeError::Short(23)));
        assert_eq!(with(0, 0x41), Err(DecodeError::Version(2)));
        assert_eq!(
            with(3, 23),
            Err(DecodeError::Length {
                length: 23,
                received: 24
            })
        );
        assert_eq!(
            with(3, 26),
            Err(DecodeError::Length {
                length: 26,
                received: 24
            })
        );
        assert_eq!(with(1, 0xe4), Err(DecodeError::Authentication));
        assert_eq!(with(2, 0), Err(DecodeError::DetectMult));
        assert_eq!(with(1, 0xe1), Err(DecodeError::Multipoint));
        let mut b = good;
        b[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(ControlPacket::decode(&b), Err(DecodeError::MyDiscriminator));
        // Longer datagrams (padding after the length) are fine.
        let mut long = good.to_vec();
        long.extend([0; 8]);
        assert_eq!(ControlPacket::decode(&long), Ok(packet()));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(p) = ControlPacket::decode(&bytes) {
                proptest::prop_assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
            }
        }
    }
}
