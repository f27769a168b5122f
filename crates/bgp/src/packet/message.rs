//! BGP messages (RFC 4271 §4): header framing, OPEN, KEEPALIVE and ROUTE-REFRESH. UPDATE lives in
//! [`super::update`], NOTIFICATION in [`super::notification`].

use std::net::Ipv4Addr;

use super::capability::Capability;
use super::error::DecodeError;
use super::notification::{HeaderSubcode, Notification, OpenSubcode, RouteRefreshSubcode};
use super::update::Update;
use super::wire::{Afi, DecodeContext, HEADER_LEN, MARKER, MAX_MESSAGE_LEN, MessageType, Safi};

/// A BGP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// OPEN (RFC 4271 §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field: AS_TRANS when the real ASN needs 4 octets.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The peer's ASN: the 4-octet capability when present (RFC 6793 §4.1), else My AS.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }
}

/// ROUTE-REFRESH (RFC 2918 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: Afi,
    pub safi: Safi,
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// The message type code.
    pub fn type_code(&self) -> u8 {
        self.message_type().into()
    }

    /// Encodes the message with its header. `four_octet_as` selects the AS_PATH encoding of UPDATEs (RFC 6793).
    /// UPDATEs longer than 4096 bytes are the caller's bug: [`super::update::announce_updates`] never builds them.
    pub fn encode(&self, four_octet_as: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend(MARKER);
        out.extend([0, 0, self.type_code()]);
        match self {
            Message::Open(open) => {
                out.push(open.version);
                out.extend(open.my_as.to_be_bytes());
                out.extend(open.hold_time.to_be_bytes());
                out.extend(open.bgp_id.octets());
                // RFC 5492 §4: one Capabilities parameter (type 2) holding every capability.
                let mut caps = Vec::new();
                for cap in &open.capabilities {
                    cap.encode(&mut caps);
                }
                if caps.is_empty() {
                    out.push(0);
                } else {
                    out.push(caps.len() as u8 + 2);
                    out.extend([2, caps.len() as u8]);
                    out.extend(caps);
                }
            }
            Message::Update(update) => update.encode_body(four_octet_as, &mut out),
            Message::Notification(n) => {
                out.extend([n.code, n.subcode]);
                out.extend(&n.data);
            }
            Message::Keepalive => {}
            Message::RouteRefresh(rr) => {
                out.extend(rr.afi.0.to_be_bytes());
                out.extend([0, rr.safi.0]);
            }
        }
        let len = out.len() as u16;
        out[16..18].copy_from_slice(&len.to_be_bytes());
        out
    }
}

/// Reads one message from the front of `buf`. `Ok(None)`: more bytes are needed. `Ok(Some((msg, n)))`: the message
/// took `n` bytes. `Err`: send the error's NOTIFICATION and close (RFC 4271 §6; for UPDATEs only where RFC 7606
/// asks for a session reset).
pub fn decode_frame(buf: &[u8], ctx: DecodeContext) -> Result<Option<(Message, usize)>, DecodeError> {
    if buf.len() < HEADER_LEN {
        // Check the marker early so garbage is rejected without waiting for 19 bytes.
        if buf.iter().take(MARKER.len()).any(|&b| b != 0xff) {
            return Err(not_synchronized());
        }
        return Ok(None);
    }
    if buf[..16] != MARKER {
        return Err(not_synchronized());
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let type_code = buf[18];
    let bad_length = || {
        DecodeError::new(
            HeaderSubcode::BadMessageLength,
            buf[16..18].to_vec(),
            format!("message length {len} is invalid for message type {type_code}"),
        )
    };
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_length());
    }
    let Some(ty) = MessageType::from_wire(type_code) else {
        return Err(DecodeError::new(
            HeaderSubcode::BadMessageType,
            vec![type_code],
            format!("unknown message type {type_code}"),
        ));
    };
    // RFC 4271 §6.1: per-type minimum (and for KEEPALIVE exact) lengths are header errors too.
    let length_ok = match ty {
        MessageType::Open => len >= 29,
        MessageType::Update => len >= 23,
        MessageType::Notification => len >= 21,
        MessageType::Keepalive => len == HEADER_LEN,
        MessageType::RouteRefresh => true, // RFC 7313 §5 makes a wrong length its own error, below.
    };
    if !length_ok {
        return Err(bad_length());
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..len];
    let msg = match ty {
        MessageType::Open => Message::Open(decode_open(body)?),
        MessageType::Update => Message::Update(Update::decode(body, ctx)?),
        // Any code and subcode, known or not, is kept as received.
        MessageType::Notification => Message::Notification(Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        }),
        MessageType::Keepalive => Message::Keepalive,
        MessageType::RouteRefresh => {
            if body.len() != 4 {
                return Err(DecodeError::new(
                    RouteRefreshSubcode::InvalidMessageLength,
                    buf[..len].to_vec(),
                    format!("ROUTE-REFRESH of {len} bytes, expected 23"),
                ));
            }
            Message::RouteRefresh(RouteRefresh {
                afi: Afi(u16::from_be_bytes([body[0], body[1]])),
                safi: Safi(body[3]),
            })
        }
    };
    Ok(Some((msg, len)))
}

fn not_synchronized() -> DecodeError {
    DecodeError::new(
        HeaderSubcode::ConnectionNotSynchronized,
        Vec::new(),
        "message marker is not all ones",
    )
}

/// RFC 4271 §6.2 structural checks; semantic checks (peer AS, hold time, identifier) are the FSM's, which knows
/// the configuration.
fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let version = body[0];
    if version != 4 {
        // Data: the largest supported version, as a 2-octet unsigned integer.
        return Err(DecodeError::new(
            OpenSubcode::UnsupportedVersionNumber,
            vec![0, 4],
            format!("peer speaks BGP version {version}, we speak 4"),
        ));
    }
    let my_as = u16::from_be_bytes([body[1], body[2]]);
    let hold_time = u16::from_be_bytes([body[3], body[4]]);
    let bgp_id = Ipv4Addr::new(body[5], body[6], body[7], body[8]);
    let opt_len = usize::from(body[9]);
    let params = &body[10..];
    if params.len() != opt_len {
        return Err(DecodeError::new(
            HeaderSubcode::BadMessageLength,
            ((body.len() + HEADER_LEN) as u16).to_be_bytes().to_vec(),
            format!(
                "OPEN optional parameters length {opt_len} does not match the {} bytes present",
                params.len()
            ),
        ));
    }
    let mut capabilities = Vec::new();
    let mut rest = params;
    while !rest.is_empty() {
        let malformed = || {
            DecodeError::new(
                OpenSubcode::Unspecific,
                Vec::new(),
                "OPEN optional parameter overruns the parameters field".to_string(),
            )
        };
        if rest.len() < 2 {
            return Err(malformed());
        }
        let (ptype, plen) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + plen).ok_or_else(malformed)?;
        rest = &rest[2 + plen..];
        if ptype != 2 {
            return Err(DecodeError::new(
                OpenSubcode::UnsupportedOptionalParameter,
                Vec::new(),
                format!("unsupported OPEN optional parameter type {ptype}"),
            ));
        }
        let mut caps = value;
        while !caps.is_empty() {
            if caps.len() < 2 || caps.len() < 2 + usize::from(caps[1]) {
                return Err(malformed());
            }
            let (code, clen) = (caps[0], usize::from(caps[1]));
            capabilities.push(Capability::decode(code, &caps[2..2 + clen]));
            caps = &caps[2 + clen..];
        }
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}
