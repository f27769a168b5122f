//! BGP messages (RFC 4271 §4): header framing, OPEN, NOTIFICATION, KEEPALIVE and ROUTE-REFRESH. UPDATE lives in
//! [`super::update`].

use std::net::Ipv4Addr;

use super::capability::Capability;
use super::error::{DecodeError, code, subcode};
use super::update::Update;
use super::{Afi, DecodeContext, Safi};

/// RFC 4271 §4.1: sixteen ones.
pub const MARKER: [u8; 16] = [0xff; 16];
/// Header length (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4: the largest message without RFC 8654 extended messages, which Herald does not negotiate.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 4271 §1.1: the 2-octet placeholder for 4-octet ASNs (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3).
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

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

/// NOTIFICATION (RFC 4271 §4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// Cease with an RFC 9003 shutdown communication (for Administrative Shutdown/Reset).
    pub fn cease(subcode: u8, communication: &str) -> Self {
        let mut text = communication.as_bytes();
        // RFC 9003 §2: at most 255 octets of UTF-8; cut at a char boundary.
        let mut n = text.len().min(255);
        while !communication.is_char_boundary(n) {
            n -= 1;
        }
        text = &text[..n];
        let mut data = vec![text.len() as u8];
        data.extend(text);
        Notification {
            code: code::CEASE,
            subcode,
            data,
        }
    }

    /// A human description: `"Cease / Administrative Shutdown (6/2): maintenance"`.
    pub fn describe(&self) -> String {
        let name = match (self.code, self.subcode) {
            (code::MESSAGE_HEADER, subcode::CONNECTION_NOT_SYNCHRONIZED) => {
                "Message Header Error / Connection Not Synchronized"
            }
            (code::MESSAGE_HEADER, subcode::BAD_MESSAGE_LENGTH) => "Message Header Error / Bad Message Length",
            (code::MESSAGE_HEADER, subcode::BAD_MESSAGE_TYPE) => "Message Header Error / Bad Message Type",
            (code::MESSAGE_HEADER, _) => "Message Header Error",
            (code::OPEN_MESSAGE, subcode::UNSUPPORTED_VERSION) => "OPEN Message Error / Unsupported Version Number",
            (code::OPEN_MESSAGE, subcode::BAD_PEER_AS) => "OPEN Message Error / Bad Peer AS",
            (code::OPEN_MESSAGE, subcode::BAD_BGP_IDENTIFIER) => "OPEN Message Error / Bad BGP Identifier",
            (code::OPEN_MESSAGE, subcode::UNSUPPORTED_OPTIONAL_PARAMETER) => {
                "OPEN Message Error / Unsupported Optional Parameter"
            }
            (code::OPEN_MESSAGE, subcode::UNACCEPTABLE_HOLD_TIME) => "OPEN Message Error / Unacceptable Hold Time",
            (code::OPEN_MESSAGE, subcode::UNSUPPORTED_CAPABILITY) => "OPEN Message Error / Unsupported Capability",
            (code::OPEN_MESSAGE, _) => "OPEN Message Error",
            (code::UPDATE_MESSAGE, subcode::MALFORMED_ATTRIBUTE_LIST) => {
                "UPDATE Message Error / Malformed Attribute List"
            }
            (code::UPDATE_MESSAGE, subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE) => {
                "UPDATE Message Error / Unrecognized Well-known Attribute"
            }
            (code::UPDATE_MESSAGE, subcode::MISSING_WELL_KNOWN_ATTRIBUTE) => {
                "UPDATE Message Error / Missing Well-known Attribute"
            }
            (code::UPDATE_MESSAGE, subcode::ATTRIBUTE_FLAGS_ERROR) => "UPDATE Message Error / Attribute Flags Error",
            (code::UPDATE_MESSAGE, subcode::ATTRIBUTE_LENGTH_ERROR) => "UPDATE Message Error / Attribute Length Error",
            (code::UPDATE_MESSAGE, subcode::INVALID_ORIGIN_ATTRIBUTE) => {
                "UPDATE Message Error / Invalid ORIGIN Attribute"
            }
            (code::UPDATE_MESSAGE, subcode::INVALID_NEXT_HOP_ATTRIBUTE) => {
                "UPDATE Message Error / Invalid NEXT_HOP Attribute"
            }
            (code::UPDATE_MESSAGE, subcode::OPTIONAL_ATTRIBUTE_ERROR) => {
                "UPDATE Message Error / Optional Attribute Error"
            }
            (code::UPDATE_MESSAGE, subcode::INVALID_NETWORK_FIELD) => "UPDATE Message Error / Invalid Network Field",
            (code::UPDATE_MESSAGE, subcode::MALFORMED_AS_PATH) => "UPDATE Message Error / Malformed AS_PATH",
            (code::UPDATE_MESSAGE, _) => "UPDATE Message Error",
            (code::HOLD_TIMER_EXPIRED, _) => "Hold Timer Expired",
            (code::FSM, subcode::UNEXPECTED_IN_OPEN_SENT) => "FSM Error / Unexpected Message in OpenSent",
            (code::FSM, subcode::UNEXPECTED_IN_OPEN_CONFIRM) => "FSM Error / Unexpected Message in OpenConfirm",
            (code::FSM, subcode::UNEXPECTED_IN_ESTABLISHED) => "FSM Error / Unexpected Message in Established",
            (code::FSM, _) => "Finite State Machine Error",
            (code::CEASE, subcode::MAX_PREFIXES_REACHED) => "Cease / Maximum Number of Prefixes Reached",
            (code::CEASE, subcode::ADMINISTRATIVE_SHUTDOWN) => "Cease / Administrative Shutdown",
            (code::CEASE, subcode::PEER_DECONFIGURED) => "Cease / Peer De-configured",
            (code::CEASE, subcode::ADMINISTRATIVE_RESET) => "Cease / Administrative Reset",
            (code::CEASE, subcode::CONNECTION_REJECTED) => "Cease / Connection Rejected",
            (code::CEASE, subcode::OTHER_CONFIGURATION_CHANGE) => "Cease / Other Configuration Change",
            (code::CEASE, subcode::CONNECTION_COLLISION_RESOLUTION) => "Cease / Connection Collision Resolution",
            (code::CEASE, subcode::OUT_OF_RESOURCES) => "Cease / Out of Resources",
            (code::CEASE, subcode::HARD_RESET) => "Cease / Hard Reset",
            (code::CEASE, _) => "Cease",
            (code::ROUTE_REFRESH, _) => "ROUTE-REFRESH Message Error",
            _ => "Unknown error code",
        };
        let mut s = format!("{name} ({}/{})", self.code, self.subcode);
        if let Some(text) = self.shutdown_communication() {
            s.push_str(": ");
            s.push_str(&text);
        }
        s
    }

    /// RFC 9003 §2: the UTF-8 text in an Administrative Shutdown/Reset, if the data is one.
    pub fn shutdown_communication(&self) -> Option<String> {
        let is_shutdown = self.code == code::CEASE
            && matches!(
                self.subcode,
                subcode::ADMINISTRATIVE_SHUTDOWN | subcode::ADMINISTRATIVE_RESET
            );
        let (&len, text) = self.data.split_first()?;
        if !is_shutdown || len == 0 || usize::from(len) != text.len() {
            return None;
        }
        std::str::from_utf8(text).ok().map(str::to_owned)
    }
}

/// ROUTE-REFRESH (RFC 2918 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: Afi,
    pub safi: Safi,
}

impl Message {
    /// The message type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => msg_type::OPEN,
            Message::Update(_) => msg_type::UPDATE,
            Message::Notification(_) => msg_type::NOTIFICATION,
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(_) => msg_type::ROUTE_REFRESH,
        }
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
    let ty = buf[18];
    let bad_length = || {
        DecodeError::header(
            subcode::BAD_MESSAGE_LENGTH,
            buf[16..18].to_vec(),
            format!("message length {len} is invalid for message type {ty}"),
        )
    };
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_length());
    }
    // RFC 4271 §6.1: per-type minimum (and for KEEPALIVE exact) lengths are header errors too.
    let length_ok = match ty {
        msg_type::OPEN => len >= 29,
        msg_type::UPDATE => len >= 23,
        msg_type::NOTIFICATION => len >= 21,
        msg_type::KEEPALIVE => len == HEADER_LEN,
        msg_type::ROUTE_REFRESH => true, // RFC 7313 §5 makes a wrong length its own error, below.
        _ => {
            return Err(DecodeError::header(
                subcode::BAD_MESSAGE_TYPE,
                vec![ty],
                format!("unknown message type {ty}"),
            ));
        }
    };
    if !length_ok {
        return Err(bad_length());
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..len];
    let msg = match ty {
        msg_type::OPEN => Message::Open(decode_open(body)?),
        msg_type::UPDATE => Message::Update(Update::decode(body, ctx)?),
        msg_type::NOTIFICATION => Message::Notification(Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        }),
        msg_type::KEEPALIVE => Message::Keepalive,
        _ => {
            if body.len() != 4 {
                return Err(DecodeError::new(
                    code::ROUTE_REFRESH,
                    subcode::INVALID_MESSAGE_LENGTH,
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
    DecodeError::header(
        subcode::CONNECTION_NOT_SYNCHRONIZED,
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
        return Err(DecodeError::open(
            subcode::UNSUPPORTED_VERSION,
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
        return Err(DecodeError::header(
            subcode::BAD_MESSAGE_LENGTH,
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
            DecodeError::open(
                0,
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
            return Err(DecodeError::open(
                subcode::UNSUPPORTED_OPTIONAL_PARAMETER,
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
