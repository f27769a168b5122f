//! RFC 7606 (with RFC 4760 §7, RFC 5065 §5, RFC 6793 §4.1/§6, RFC 8092 §6): every class of malformed UPDATE as a byte
//! vector, decoded and fed to an Established session, with what must come out: the session stays Established and the
//! UPDATE is handled by treat-as-withdraw, attribute discard or AFI/SAFI disable (no NOTIFICATION), or the session is
//! reset with exactly this NOTIFICATION.

use std::net::Ipv4Addr;
use std::time::Duration;

use herald_bgp::fsm::{Action, Direction, Event, SessionConfig, SessionFsm, State};
use herald_bgp::packet::{Afi, Capability, DecodeContext, ErrorHandling, Message, Open, Safi, decode_frame};

use super::{header, hex};

/// What the session does with the UPDATE.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// The session is reset with this NOTIFICATION: code, subcode, data (hex).
    Reset(u8, u8, String),
    /// The session stays Established; the UPDATE is handled this way (and logged and counted).
    Kept(ErrorHandling),
    /// Nothing wrong.
    Clean,
}

use ErrorHandling::{AttributeDiscard, TreatAsWithdraw};
use Outcome::{Clean, Kept, Reset};

fn reset(code: u8, subcode: u8, data: &str) -> Outcome {
    Reset(code, subcode, hex(data).iter().map(|b| format!("{b:02x}")).collect())
}

fn disable(afi: u16, safi: u8) -> Outcome {
    Kept(ErrorHandling::AfiSafiDisable(Afi(afi), Safi(safi)))
}

/// The session the UPDATE arrives on: we are AS 64512.
#[derive(Clone, Copy, Debug)]
enum Peer {
    /// AS 64500, 4-octet AS numbers.
    External,
    /// AS 64512, 4-octet AS numbers.
    Internal,
    /// AS 64500 without the 4-octet AS capability (RFC 6793 "OLD" speaker).
    TwoOctet,
}

impl Peer {
    fn asn(self) -> u32 {
        match self {
            Peer::Internal => 64512,
            Peer::External | Peer::TwoOctet => 64500,
        }
    }

    fn context(self) -> DecodeContext {
        DecodeContext {
            four_octet_as: !matches!(self, Peer::TwoOctet),
            internal: matches!(self, Peer::Internal),
        }
    }

    /// A session with this peer, Established.
    fn established(self) -> SessionFsm {
        let mut fsm = SessionFsm::new(SessionConfig {
            local_asn: 64512,
            router_id: Ipv4Addr::new(192, 0, 2, 11),
            peer_asn: self.asn(),
            hold_time: 90,
            keepalive_time: None,
            connect_retry_max: herald_bgp::fsm::RETRY_MAX,
            graceful_restart: None,
            families: vec![Afi::IPV4, Afi::IPV6],
            md5: false,
            connect_timeout: Duration::from_secs(5),
            jitter_seed: 1,
        });
        let mut capabilities = vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
        ];
        if !matches!(self, Peer::TwoOctet) {
            capabilities.push(Capability::FourOctetAs(self.asn()));
        }
        let open = Open {
            version: 4,
            my_as: self.asn() as u16,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities,
        };
        fsm.handle(Event::Start);
        fsm.handle(Event::TcpConnected);
        fsm.handle(Event::Message(Direction::Outgoing, Message::Open(open)));
        fsm.handle(Event::Message(Direction::Outgoing, Message::Keepalive));
        assert_eq!(fsm.state(), State::Established);
        assert_eq!(
            fsm.negotiated().map(|n| n.four_octet_as),
            Some(self.context().four_octet_as)
        );
        fsm
    }
}

/// One attribute, hex: flags, type, length (extended when the flags say so), value.
fn attr(flags: u8, type_code: u8, value: &str) -> String {
    let len = hex(value).len();
    if flags & 0x10 != 0 {
        format!(
            "{flags:02x} {type_code:02x} {:02x} {:02x} {value}",
            len >> 8,
            len & 0xff
        )
    } else {
        format!("{flags:02x} {type_code:02x} {len:02x} {value}")
    }
}

/// An UPDATE with consistent length fields.
fn update(withdrawn: &str, attributes: &str, nlri: &str) -> Vec<u8> {
    let (w, a, n) = (hex(withdrawn), hex(attributes), hex(nlri));
    let mut body = (w.len() as u16).to_be_bytes().to_vec();
    body.extend(w);
    body.extend((a.len() as u16).to_be_bytes());
    body.extend(a);
    body.extend(n);
    raw(&body)
}

/// An UPDATE with this body, whatever its length fields say.
fn raw(body: &[u8]) -> Vec<u8> {
    let mut v = header((19 + body.len()) as u16, 2);
    v.extend(body);
    v
}

const ORIGIN: &str = "40 01 01 00";
/// AS_SEQUENCE [64500], 4-octet.
const AS_PATH: &str = "40 02 06 02 01 00 00 fb f4";
/// AS_SEQUENCE [64500], 2-octet.
const AS_PATH_2: &str = "40 02 04 02 01 fb f4";
const NEXT_HOP: &str = "40 03 04 c0 00 02 01";
/// 198.51.100.0/24.
const NLRI: &str = "18 c6 33 64";
const V6_NEXT_HOP: &str = "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01";

fn mandatory() -> String {
    format!("{ORIGIN} {AS_PATH} {NEXT_HOP}")
}

/// An announcement of 198.51.100.0/24 with the mandatory attributes and `extra`.
fn announce(extra: &str) -> Vec<u8> {
    update("", &format!("{} {extra}", mandatory()), NLRI)
}

/// An announcement with the mandatory attributes, one of them replaced.
fn announce_with(replace: &str, with: &str) -> Vec<u8> {
    update("", &mandatory().replace(replace, with), NLRI)
}

/// MP_REACH_NLRI for IPv6 unicast announcing 2001:db8:1::/48, with these flags.
fn mp_reach_v6(flags: u8) -> String {
    attr(flags, 14, &format!("00 02 01 10 {V6_NEXT_HOP} 00 30 20 01 0d b8 00 01"))
}

struct Case {
    name: &'static str,
    rfc: &'static str,
    peer: Peer,
    bytes: Vec<u8>,
    expected: Outcome,
    /// A word the logged reason must contain.
    why: &'static str,
}

fn case(name: &'static str, rfc: &'static str, bytes: Vec<u8>, expected: Outcome, why: &'static str) -> Case {
    Case {
        name,
        rfc,
        peer: Peer::External,
        bytes,
        expected,
        why,
    }
}

fn on(peer: Peer, mut c: Case) -> Case {
    c.peer = peer;
    c
}

/// Feeds the UPDATE to an Established session; returns what happened and the reason given.
fn run(peer: Peer, bytes: &[u8]) -> (Outcome, String) {
    let mut fsm = peer.established();
    let event = match decode_frame(bytes, peer.context()) {
        Ok(Some((msg, n))) => {
            assert_eq!(n, bytes.len(), "the whole UPDATE is one frame");
            Event::Message(Direction::Outgoing, msg)
        }
        Ok(None) => panic!("incomplete message"),
        Err(e) => Event::DecodeFailed(Direction::Outgoing, e),
    };
    let actions = fsm.handle(event);
    let notification = actions.iter().find_map(|a| match a {
        Action::Send(_, Message::Notification(n)) => Some(n.clone()),
        _ => None,
    });
    if let Some(n) = notification {
        assert_ne!(fsm.state(), State::Established);
        let data = n.data.iter().map(|b| format!("{b:02x}")).collect();
        return (
            Reset(n.code, n.subcode, data),
            fsm.last_error().unwrap_or_default().to_string(),
        );
    }
    assert_eq!(
        fsm.state(),
        State::Established,
        "no NOTIFICATION, so the session stays up"
    );
    match actions.iter().find_map(|a| match a {
        Action::MalformedUpdate(m) => Some(m.clone()),
        _ => None,
    }) {
        Some(m) => (Kept(m.handling), m.reason),
        None => (Clean, String::new()),
    }
}

fn cases() -> Vec<Case> {
    let v6_unreach_eor = attr(0x90, 15, "00 02 01");
    vec![
        // Session reset: the NLRI cannot be located or parsed.
        case(
            "withdrawn routes length overruns the message",
            "7606 §3(b)",
            raw(&hex("00 09 00 00")),
            reset(3, 1, ""),
            "withdrawn routes length",
        ),
        case(
            "total attribute length overruns the message",
            "7606 §3(b)",
            raw(&hex("00 00 00 20 40 01 01 00")),
            reset(3, 1, ""),
            "total path attribute length",
        ),
        case(
            "NLRI prefix longer than 32",
            "7606 §5.3",
            update("", &mandatory(), "21 c6 33 64 01 01"),
            reset(3, 10, ""),
            "longer than 32",
        ),
        case(
            "NLRI prefix cut off",
            "7606 §5.3",
            update("", &mandatory(), "20 c6 33"),
            reset(3, 10, ""),
            "cut off",
        ),
        case(
            "withdrawn prefix longer than 32",
            "7606 §3(i), §5.3",
            update("21 c6 33 64 01 01", "", ""),
            reset(3, 10, ""),
            "withdrawn routes",
        ),
        case(
            "withdrawn prefix cut off",
            "7606 §3(i), §5.3",
            update("18 c6 33", "", ""),
            reset(3, 10, ""),
            "withdrawn routes",
        ),
        case(
            "MP_UNREACH_NLRI twice",
            "7606 §3(g)",
            update("", &format!("{v6_unreach_eor} {v6_unreach_eor}"), ""),
            reset(3, 1, ""),
            "more than once",
        ),
        case(
            "MP_REACH_NLRI twice",
            "7606 §3(g)",
            update(
                "",
                &format!("{ORIGIN} {AS_PATH} {} {}", mp_reach_v6(0x80), mp_reach_v6(0x80)),
                "",
            ),
            reset(3, 1, ""),
            "more than once",
        ),
        case(
            "unrecognized well-known attribute",
            "4271 §6.3",
            announce("40 63 01 00"),
            reset(3, 2, "40 63 01 00"),
            "unrecognized well-known attribute 99",
        ),
        case(
            "MP_REACH_NLRI too short to name its family",
            "7606 §5.3",
            update("", &attr(0x80, 14, "00 02"), ""),
            reset(3, 9, "80 0e 02 00 02"),
            "MP_REACH_NLRI",
        ),
        case(
            "MP_UNREACH_NLRI too short to name its family",
            "7606 §5.3",
            update("", &attr(0x80, 15, "00 02"), ""),
            reset(3, 9, "80 0f 02 00 02"),
            "MP_UNREACH_NLRI",
        ),
        case(
            "MP_UNREACH_NLRI with wrong flags, too short to name its family",
            "7606 §5.3",
            update("", &attr(0x40, 15, "00 02"), ""),
            reset(3, 4, "40 0f 02 00 02"),
            "flags",
        ),
        case(
            "MP_UNREACH_NLRI overrunning the attribute list",
            "7606 §4, §3(j)",
            update("", "90 0f 00 10 00 02 01", ""),
            reset(3, 5, "90 0f 00 10"),
            "overruns",
        ),
        case(
            "stray bytes that could start MP_REACH_NLRI",
            "7606 §4, §3(j)",
            announce("80 0e"),
            reset(3, 1, ""),
            "stray",
        ),
        case(
            "attribute overrunning the list, nothing announced",
            "7606 §4, §5.2",
            raw(&hex("00 00 00 04 40 01 05 00")),
            reset(3, 5, "40 01 05"),
            "§5.2",
        ),
        case(
            "stray bytes after the attributes, nothing announced",
            "7606 §4, §5.2",
            update("", "40 01 01 00 00", ""),
            reset(3, 1, ""),
            "§5.2",
        ),
        case(
            "invalid ORIGIN in a withdrawal",
            "7606 §7.1, §5.2",
            update(NLRI, "40 01 01 05", ""),
            reset(3, 6, "40 01 01 05"),
            "§5.2",
        ),
        case(
            "bad MULTI_EXIT_DISC next to MP_UNREACH_NLRI",
            "7606 §7.4, §5.2",
            update("", &format!("{v6_unreach_eor} 80 04 03 00 00 01"), ""),
            reset(3, 5, "80 04 03 00 00 01"),
            "§5.2",
        ),
        case(
            "malformed MP_UNREACH_NLRI next to another attribute",
            "7606 §5.3, §5.2",
            update("", &format!("{ORIGIN} {}", attr(0x80, 15, "00 02 01 81")), ""),
            reset(3, 9, "80 0f 04 00 02 01 81"),
            "§5.2",
        ),
        // Treat-as-withdraw.
        case(
            "attribute overrunning the list",
            "7606 §4",
            announce("c0 08 08 00 00"),
            Kept(TreatAsWithdraw),
            "COMMUNITIES of length 8 overruns",
        ),
        case(
            "stray bytes after the last attribute",
            "7606 §4",
            announce("00 00"),
            Kept(TreatAsWithdraw),
            "2 stray bytes",
        ),
        case(
            "stray bytes with the extended length flag",
            "7606 §4",
            announce("10 08 00"),
            Kept(TreatAsWithdraw),
            "3 stray bytes",
        ),
        case(
            "ORIGIN value undefined",
            "7606 §7.1",
            announce_with(ORIGIN, "40 01 01 05"),
            Kept(TreatAsWithdraw),
            "ORIGIN value 5",
        ),
        case(
            "ORIGIN of length 2",
            "7606 §7.1",
            announce_with(ORIGIN, "40 01 02 00 00"),
            Kept(TreatAsWithdraw),
            "ORIGIN of length 2",
        ),
        case(
            "ORIGIN of length 0",
            "7606 §4, §7.1",
            announce_with(ORIGIN, "40 01 00"),
            Kept(TreatAsWithdraw),
            "ORIGIN of length 0",
        ),
        case(
            "AS_PATH segment type undefined",
            "7606 §7.2",
            announce_with(AS_PATH, "40 02 06 07 01 00 00 fb f4"),
            Kept(TreatAsWithdraw),
            "segment type 7",
        ),
        case(
            "AS_PATH segment of length 0",
            "7606 §7.2",
            announce_with(AS_PATH, "40 02 02 02 00"),
            Kept(TreatAsWithdraw),
            "length 0",
        ),
        case(
            "AS_PATH segment overrun",
            "7606 §7.2",
            announce_with(AS_PATH, "40 02 06 02 02 00 00 fb f4"),
            Kept(TreatAsWithdraw),
            "overruns",
        ),
        case(
            "AS_PATH segment underrun",
            "7606 §7.2",
            announce_with(AS_PATH, "40 02 07 02 01 00 00 fb f4 02"),
            Kept(TreatAsWithdraw),
            "1 byte after",
        ),
        case(
            "AS_PATH with confederation segments from an external peer",
            "5065 §5, 7606 §3(e)",
            announce_with(AS_PATH, "40 02 06 03 01 00 00 fb f4"),
            Kept(TreatAsWithdraw),
            "confederation",
        ),
        case(
            "NEXT_HOP of length 5",
            "7606 §7.3",
            announce_with(NEXT_HOP, "40 03 05 c0 00 02 01 01"),
            Kept(TreatAsWithdraw),
            "NEXT_HOP of length 5",
        ),
        case(
            "MULTI_EXIT_DISC of length 3",
            "7606 §7.4",
            announce("80 04 03 00 00 01"),
            Kept(TreatAsWithdraw),
            "MULTI_EXIT_DISC of length 3",
        ),
        case(
            "MULTI_EXIT_DISC of length 0",
            "7606 §4, §7.4",
            announce("80 04 00"),
            Kept(TreatAsWithdraw),
            "MULTI_EXIT_DISC of length 0",
        ),
        on(
            Peer::Internal,
            case(
                "LOCAL_PREF of length 3 from an internal peer",
                "7606 §7.5",
                announce("40 05 03 00 00 64"),
                Kept(TreatAsWithdraw),
                "LOCAL_PREF of length 3",
            ),
        ),
        case(
            "COMMUNITIES of length 3",
            "7606 §7.8",
            announce("c0 08 03 00 00 01"),
            Kept(TreatAsWithdraw),
            "COMMUNITIES of length 3",
        ),
        case(
            "COMMUNITIES of length 0",
            "7606 §7.8",
            announce("c0 08 00"),
            Kept(TreatAsWithdraw),
            "COMMUNITIES of length 0",
        ),
        on(
            Peer::Internal,
            case(
                "ORIGINATOR_ID of length 3 from an internal peer",
                "7606 §7.9",
                announce("80 09 03 c0 00 02"),
                Kept(TreatAsWithdraw),
                "ORIGINATOR_ID of length 3",
            ),
        ),
        on(
            Peer::Internal,
            case(
                "CLUSTER_LIST of length 6 from an internal peer",
                "7606 §7.10",
                announce("80 0a 06 00 00 00 01 00 00"),
                Kept(TreatAsWithdraw),
                "CLUSTER_LIST of length 6",
            ),
        ),
        case(
            "EXTENDED_COMMUNITIES of length 4",
            "7606 §7.14",
            announce("c0 10 04 00 02 fc 00"),
            Kept(TreatAsWithdraw),
            "EXTENDED_COMMUNITIES of length 4",
        ),
        case(
            "IPv6 address specific extended communities of length 10",
            "7606 §7.15",
            announce(&attr(0xc0, 25, "00 02 20 01 0d b8 00 00 00 01")),
            Kept(TreatAsWithdraw),
            "length 10",
        ),
        case(
            "LARGE_COMMUNITY of length 8",
            "8092 §6",
            announce(&attr(0xc0, 32, "00 00 fc 00 00 00 00 01")),
            Kept(TreatAsWithdraw),
            "LARGE_COMMUNITY of length 8",
        ),
        case(
            "well-known ORIGIN flagged optional",
            "7606 §3(c)",
            announce_with(ORIGIN, "c0 01 01 00"),
            Kept(TreatAsWithdraw),
            "flags 0xc0",
        ),
        case(
            "optional transitive COMMUNITIES flagged non-transitive",
            "7606 §3(c)",
            announce("80 08 04 fc 00 00 64"),
            Kept(TreatAsWithdraw),
            "flags 0x80",
        ),
        case(
            "optional non-transitive MULTI_EXIT_DISC flagged transitive",
            "7606 §3(c)",
            announce("c0 04 04 00 00 00 01"),
            Kept(TreatAsWithdraw),
            "flags 0xc0",
        ),
        case(
            "optional AGGREGATOR flagged well-known",
            "7606 §3(c)",
            announce("40 07 08 00 00 fb f4 c0 00 02 01"),
            Kept(TreatAsWithdraw),
            "AGGREGATOR has attribute flags 0x40",
        ),
        case(
            "ORIGIN missing",
            "7606 §3(d)",
            announce_with(&format!("{ORIGIN} "), ""),
            Kept(TreatAsWithdraw),
            "ORIGIN is missing",
        ),
        case(
            "AS_PATH missing",
            "7606 §3(d)",
            announce_with(&format!("{AS_PATH} "), ""),
            Kept(TreatAsWithdraw),
            "AS_PATH is missing",
        ),
        case(
            "NEXT_HOP missing with NLRI",
            "7606 §3(d)",
            announce_with(&format!(" {NEXT_HOP}"), ""),
            Kept(TreatAsWithdraw),
            "NEXT_HOP is missing",
        ),
        case(
            "ORIGIN missing with MP_REACH_NLRI",
            "7606 §3(d)",
            update("", &format!("{AS_PATH} {}", mp_reach_v6(0x80)), ""),
            Kept(TreatAsWithdraw),
            "ORIGIN is missing",
        ),
        case(
            "attribute discard and treat-as-withdraw: the stronger wins",
            "7606 §3(h)",
            update(
                "",
                &format!("40 06 01 00 {}", mandatory().replace(ORIGIN, "40 01 01 09")),
                NLRI,
            ),
            Kept(TreatAsWithdraw),
            "ORIGIN value 9",
        ),
        // Attribute discard.
        case(
            "ATOMIC_AGGREGATE of length 1",
            "7606 §7.6",
            announce("40 06 01 00"),
            Kept(AttributeDiscard),
            "ATOMIC_AGGREGATE of length 1",
        ),
        case(
            "AGGREGATOR of length 6 from a 4-octet peer",
            "7606 §7.7",
            announce("c0 07 06 fb f4 c0 00 02 01"),
            Kept(AttributeDiscard),
            "AGGREGATOR of length 6",
        ),
        on(
            Peer::TwoOctet,
            case(
                "AGGREGATOR of length 8 from a 2-octet peer",
                "7606 §7.7",
                update(
                    "",
                    &format!("{ORIGIN} {AS_PATH_2} {NEXT_HOP} c0 07 08 00 00 fb f4 c0 00 02 01"),
                    NLRI,
                ),
                Kept(AttributeDiscard),
                "AGGREGATOR of length 8",
            ),
        ),
        case(
            "LOCAL_PREF from an external peer",
            "7606 §7.5",
            announce("40 05 04 00 00 00 64"),
            Kept(AttributeDiscard),
            "LOCAL_PREF from an external peer",
        ),
        case(
            "ORIGINATOR_ID from an external peer",
            "7606 §7.9",
            announce("80 09 04 c0 00 02 01"),
            Kept(AttributeDiscard),
            "ORIGINATOR_ID from an external peer",
        ),
        case(
            "CLUSTER_LIST from an external peer",
            "7606 §7.10",
            announce("80 0a 04 c0 00 02 01"),
            Kept(AttributeDiscard),
            "CLUSTER_LIST from an external peer",
        ),
        case(
            "AS4_PATH from a 4-octet peer",
            "6793 §4.1",
            announce("c0 11 06 02 01 fa 56 ea 00"),
            Kept(AttributeDiscard),
            "AS4_PATH from a 4-octet AS peer",
        ),
        case(
            "AS4_AGGREGATOR from a 4-octet peer",
            "6793 §4.1",
            announce("c0 12 08 fa 56 ea 00 c0 00 02 01"),
            Kept(AttributeDiscard),
            "AS4_AGGREGATOR from a 4-octet AS peer",
        ),
        on(
            Peer::TwoOctet,
            case(
                "AS4_PATH of length 5 from a 2-octet peer",
                "6793 §6",
                update(
                    "",
                    &format!("{ORIGIN} {AS_PATH_2} {NEXT_HOP} c0 11 05 02 01 fa 56 ea"),
                    NLRI,
                ),
                Kept(AttributeDiscard),
                "malformed AS4_PATH",
            ),
        ),
        on(
            Peer::TwoOctet,
            case(
                "AS4_PATH segment of length 0 from a 2-octet peer",
                "6793 §6",
                update(
                    "",
                    &format!("{ORIGIN} {AS_PATH_2} {NEXT_HOP} c0 11 06 02 00 fa 56 ea 00"),
                    NLRI,
                ),
                Kept(AttributeDiscard),
                "length 0",
            ),
        ),
        on(
            Peer::TwoOctet,
            case(
                "AS4_PATH with confederation segments from a 2-octet peer",
                "6793 §6",
                update(
                    "",
                    &format!(
                        "{ORIGIN} {AS_PATH_2} {NEXT_HOP} {}",
                        attr(0xc0, 17, "03 01 00 00 fd e9 02 01 fa 56 ea 00")
                    ),
                    NLRI,
                ),
                Kept(AttributeDiscard),
                "confederation segments",
            ),
        ),
        on(
            Peer::TwoOctet,
            case(
                "AS4_AGGREGATOR of length 6 from a 2-octet peer",
                "6793 §6",
                update(
                    "",
                    &format!("{ORIGIN} {AS_PATH_2} {NEXT_HOP} c0 12 06 fb f4 c0 00 02 01"),
                    NLRI,
                ),
                Kept(AttributeDiscard),
                "AS4_AGGREGATOR of length 6",
            ),
        ),
        case(
            "COMMUNITIES twice",
            "7606 §3(g)",
            announce("c0 08 04 fc 00 00 64 c0 08 04 fc 00 00 65"),
            Kept(AttributeDiscard),
            "more than once",
        ),
        case(
            "a malformed second ORIGIN",
            "7606 §3(g)",
            announce("40 01 01 07"),
            Kept(AttributeDiscard),
            "ORIGIN appears more than once",
        ),
        case(
            "ATOMIC_AGGREGATE of length 1 in a withdrawal",
            "7606 §7.6, §5.2",
            update(NLRI, "40 06 01 00", ""),
            Kept(AttributeDiscard),
            "ATOMIC_AGGREGATE",
        ),
        // AFI/SAFI disable.
        case(
            "MP_REACH_NLRI with a 5-byte IPv6 next hop",
            "7606 §7.11",
            update(
                "",
                &format!("{ORIGIN} {AS_PATH} {}", attr(0x90, 14, "00 02 01 05 20 01 0d b8 00 00")),
                "",
            ),
            disable(2, 1),
            "next hop of 5 bytes",
        ),
        case(
            "MP_REACH_NLRI flagged well-known",
            "7606 §5.3",
            update("", &format!("{ORIGIN} {AS_PATH} {}", mp_reach_v6(0x40)), ""),
            disable(2, 1),
            "flags 0x40",
        ),
        case(
            "MP_REACH_NLRI with an IPv6 prefix longer than 128",
            "7606 §5.3",
            update(
                "",
                &format!(
                    "{ORIGIN} {AS_PATH} {}",
                    attr(0x80, 14, &format!("00 02 01 10 {V6_NEXT_HOP} 00 81 20"))
                ),
                "",
            ),
            disable(2, 1),
            "longer than 128",
        ),
        case(
            "MP_REACH_NLRI with a prefix cut off",
            "7606 §5.3",
            update(
                "",
                &format!(
                    "{ORIGIN} {AS_PATH} {}",
                    attr(0x80, 14, &format!("00 02 01 10 {V6_NEXT_HOP} 00 30 20 01"))
                ),
                "",
            ),
            disable(2, 1),
            "cut off",
        ),
        case(
            "MP_REACH_NLRI of length 4",
            "7606 §5.3",
            update("", &format!("{ORIGIN} {AS_PATH} {}", attr(0x80, 14, "00 02 01 00")), ""),
            disable(2, 1),
            "length 4",
        ),
        case(
            "MP_REACH_NLRI next hop overrunning the attribute",
            "7606 §7.11",
            update(
                "",
                &format!("{ORIGIN} {AS_PATH} {}", attr(0x80, 14, "00 02 01 20 20 01")),
                "",
            ),
            disable(2, 1),
            "no room",
        ),
        case(
            "MP_REACH_NLRI for IPv4 with a 16-byte next hop",
            "7606 §7.11",
            update(
                "",
                &format!(
                    "{ORIGIN} {AS_PATH} {}",
                    attr(0x80, 14, &format!("00 01 01 10 {V6_NEXT_HOP} 00 {NLRI}"))
                ),
                "",
            ),
            disable(1, 1),
            "next hop of 16 bytes",
        ),
        case(
            "MP_UNREACH_NLRI with an IPv6 prefix longer than 128",
            "7606 §5.3",
            update("", &attr(0x80, 15, "00 02 01 81 20"), ""),
            disable(2, 1),
            "longer than 128",
        ),
        case(
            "MP_UNREACH_NLRI with an IPv4 prefix cut off",
            "7606 §5.3",
            update("", &attr(0x80, 15, "00 01 01 18 c6 33"), ""),
            disable(1, 1),
            "cut off",
        ),
        case(
            "malformed MP_REACH_NLRI and ORIGIN: the stronger wins",
            "7606 §3(h)",
            update(
                "",
                &format!(
                    "40 01 01 05 {AS_PATH} {}",
                    attr(0x80, 14, "00 02 01 05 20 01 0d b8 00 00")
                ),
                "",
            ),
            disable(2, 1),
            "MP_REACH_NLRI",
        ),
        // Nothing wrong.
        case(
            "every attribute Herald checks, well formed",
            "",
            announce(&format!(
                "80 04 04 00 00 00 01 40 06 00 c0 07 08 00 00 fb f4 c0 00 02 01 c0 08 04 fc 00 00 64 \
                 c0 10 08 00 02 fc 00 00 00 00 01 {} {}",
                attr(0xc0, 25, "00 02 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 00 01"),
                attr(0xc0, 32, "00 00 fc 00 00 00 00 01 00 00 00 02"),
            )),
            Clean,
            "",
        ),
        on(
            Peer::Internal,
            case(
                "iBGP attributes and confederation segments from an internal peer",
                "",
                update(
                    "",
                    &format!(
                        "{ORIGIN} 40 02 06 03 01 00 00 fb f4 {NEXT_HOP} 40 05 04 00 00 00 64 \
                         80 09 04 c0 00 02 01 80 0a 04 c0 00 02 01"
                    ),
                    NLRI,
                ),
                Clean,
                "",
            ),
        ),
        on(
            Peer::TwoOctet,
            case(
                "AS4_PATH and AS4_AGGREGATOR from a 2-octet peer",
                "",
                update(
                    "",
                    &format!(
                        "{ORIGIN} 40 02 04 02 01 5b a0 {NEXT_HOP} c0 07 06 5b a0 c0 00 02 01 \
                         c0 11 06 02 01 fa 56 ea 00 c0 12 08 fa 56 ea 00 c0 00 02 01"
                    ),
                    NLRI,
                ),
                Clean,
                "",
            ),
        ),
        case(
            "unrecognized optional attribute",
            "4271 §5",
            announce("c0 63 02 01 02"),
            Clean,
            "",
        ),
        case(
            "Partial bit on a well-known attribute",
            "7606 §3(c)",
            announce_with(ORIGIN, "60 01 01 00"),
            Clean,
            "",
        ),
        case(
            "extended length on a short attribute",
            "4271 §4.3",
            announce_with(ORIGIN, "50 01 00 01 00"),
            Clean,
            "",
        ),
        case(
            "IPv6 announcement without NEXT_HOP",
            "4760 §3",
            update("", &format!("{ORIGIN} {AS_PATH} {}", mp_reach_v6(0x90)), ""),
            Clean,
            "",
        ),
        case(
            "MP_REACH_NLRI and MP_UNREACH_NLRI of a family Herald never negotiates",
            "4760 §7",
            update(
                "",
                &format!(
                    "{ORIGIN} {AS_PATH} {} {}",
                    attr(0x80, 14, "00 19 46 04 c0 00 02 01 00 ff ff"),
                    attr(0x80, 15, "00 19 46 ff ff")
                ),
                "",
            ),
            Clean,
            "",
        ),
        case(
            "End-of-RIB for IPv6",
            "4724 §2",
            update("", &v6_unreach_eor, ""),
            Clean,
            "",
        ),
    ]
}

#[test]
fn every_malformation_gets_the_rfc_7606_outcome() {
    let mut wrong = Vec::new();
    for c in cases() {
        let (outcome, reason) = run(c.peer, &c.bytes);
        if outcome != c.expected || !reason.contains(c.why) {
            wrong.push(format!(
                "{} ({}, {:?}): expected {:?} with a reason containing {:?}, got {outcome:?}: {reason:?}",
                c.name, c.rfc, c.peer, c.expected, c.why
            ));
        }
        // Never more than a few numbers of what the peer sent in a log line.
        assert!(reason.len() < 300, "{}: reason too long: {reason}", c.name);
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases().len(),
        wrong.join("\n")
    );
}
