//! Every malformed input gets the NOTIFICATION RFC 4271 §6 (and RFC 7313) asks for. UPDATEs, which RFC 7606 mostly
//! keeps from resetting the session, are in `rfc7606.rs`.

use herald_bgp::packet::{Message, decode_frame};

use super::{EBGP, header, hex};

/// Decodes and returns (code, subcode, data) of the error.
fn error_of(bytes: &[u8]) -> (u8, u8, Vec<u8>) {
    let e = decode_frame(bytes, EBGP).expect_err("must be rejected");
    (e.notification.code, e.notification.subcode, e.notification.data)
}

fn codes(bytes: &[u8]) -> (u8, u8) {
    let (code, subcode, _) = error_of(bytes);
    (code, subcode)
}

fn with_body(ty: u8, body: &str) -> Vec<u8> {
    let body = hex(body);
    let mut v = header((19 + body.len()) as u16, ty);
    v.extend(body);
    v
}

#[test]
fn header_errors() {
    let mut bad_marker = header(19, 4);
    bad_marker[3] = 0;
    assert_eq!(error_of(&bad_marker), (1, 1, vec![]));
    // Garbage is rejected before 19 bytes arrive.
    assert_eq!(error_of(b"GET / HTTP/1.1").0, 1);
    assert_eq!(error_of(&header(18, 4)), (1, 2, vec![0, 18]));
    assert_eq!(error_of(&header(4097, 2)), (1, 2, vec![0x10, 0x01]));
    assert_eq!(error_of(&header(20, 4)), (1, 2, vec![0, 20]));
    assert_eq!(error_of(&header(28, 1)), (1, 2, vec![0, 28]));
    assert_eq!(error_of(&header(22, 2)), (1, 2, vec![0, 22]));
    assert_eq!(error_of(&header(20, 3)), (1, 2, vec![0, 20]));
    assert_eq!(error_of(&header(19, 9)), (1, 3, vec![9]));
}

#[test]
fn incomplete_input_waits() {
    let full = with_body(4, "");
    for n in 0..full.len() {
        assert_eq!(decode_frame(&full[..n], EBGP), Ok(None), "prefix of {n} bytes");
    }
    assert_eq!(decode_frame(&full, EBGP), Ok(Some((Message::Keepalive, 19))));
}

#[test]
fn open_errors() {
    assert_eq!(
        error_of(&with_body(1, "03 fc 00 00 5a c0 00 02 0a 00")),
        (2, 1, vec![0, 4])
    );
    // Optional parameter type 1 (authentication, deprecated).
    assert_eq!(codes(&with_body(1, "04 fc 00 00 5a c0 00 02 0a 03 01 01 00")), (2, 4));
    // Parameters length disagrees with the message.
    assert_eq!(error_of(&with_body(1, "04 fc 00 00 5a c0 00 02 0a 05 02 00")).0, 1);
    // A capability overrunning its parameter.
    assert_eq!(
        error_of(&with_body(1, "04 fc 00 00 5a c0 00 02 0a 04 02 02 41 04")).0,
        2
    );
}

#[test]
fn route_refresh_with_wrong_length() {
    assert_eq!(codes(&with_body(5, "00 01 00 01 00")), (7, 1));
}

#[test]
fn notification_descriptions() {
    let (msg, _) = decode_frame(&with_body(3, "04 00"), EBGP).unwrap().unwrap();
    let Message::Notification(n) = msg else { panic!() };
    assert_eq!(n.describe(), "Hold Timer Expired (4/0)");
    let (msg, _) = decode_frame(&with_body(3, "02 02 fd e8"), EBGP).unwrap().unwrap();
    let Message::Notification(n) = msg else { panic!() };
    assert_eq!(n.describe(), "OPEN Message Error / Bad Peer AS (2/2)");
}
