//! Every malformed input gets the NOTIFICATION RFC 4271 §6 (and RFC 7606, RFC 7313) asks for.

use herald_bgp::packet::{Message, decode_frame};

use super::{header, hex};

/// Decodes and returns (code, subcode, data) of the error.
fn error_of(bytes: &[u8]) -> (u8, u8, Vec<u8>) {
    let e = decode_frame(bytes, true).expect_err("must be rejected");
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
        assert_eq!(decode_frame(&full[..n], true), Ok(None), "prefix of {n} bytes");
    }
    assert_eq!(decode_frame(&full, true), Ok(Some((Message::Keepalive, 19))));
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
fn update_errors_that_reset_the_session() {
    // Withdrawn routes length beyond the message.
    assert_eq!(error_of(&with_body(2, "00 09 00 00")), (3, 1, vec![]));
    // Total path attribute length beyond the message.
    assert_eq!(error_of(&with_body(2, "00 00 00 20 40 01 01 00")), (3, 1, vec![]));
    // An attribute whose length overruns the attribute list: data is the attribute header.
    assert_eq!(
        error_of(&with_body(2, "00 00 00 04 40 01 05 00")),
        (3, 5, hex("40 01 05"))
    );
    // NLRI prefix length 33.
    assert_eq!(codes(&with_body(2, "00 00 00 00 21 c0 00 02 01 01")), (3, 10));
    // Truncated NLRI.
    assert_eq!(codes(&with_body(2, "00 00 00 00 20 c0 00")), (3, 10));
    // Unrecognized well-known attribute (type 99, optional bit clear).
    assert_eq!(codes(&with_body(2, "00 00 00 04 40 63 01 00")), (3, 2));
    // MP_REACH_NLRI marked well-known.
    assert_eq!(codes(&with_body(2, "00 00 00 07 50 0e 00 03 00 02 01")), (3, 4));
    // MP_REACH_NLRI with a 5-byte IPv6 next hop.
    assert_eq!(
        codes(&with_body(2, "00 00 00 0d 90 0e 00 09 00 02 01 05 20 01 0d b8 00")),
        (3, 9)
    );
    // MP_UNREACH_NLRI twice.
    assert_eq!(
        error_of(&with_body(2, "00 00 00 0e 90 0f 00 03 00 02 01 90 0f 00 03 00 02 01")),
        (3, 1, vec![])
    );
}

fn treat_as_withdraw(body: &str) -> String {
    let (msg, _) = decode_frame(&with_body(2, body), true)
        .expect("no reset")
        .expect("complete");
    let Message::Update(u) = msg else {
        panic!("not an UPDATE")
    };
    u.treat_as_withdraw.expect("treat-as-withdraw")
}

#[test]
fn update_errors_that_only_discard_the_update() {
    // RFC 7606: bad ORIGIN value, attribute flags of a well-known attribute, missing NEXT_HOP, bad COMMUNITIES length.
    let nlri = "18 c6 33 64";
    assert!(
        treat_as_withdraw(&format!("00 00 00 0e 40 01 01 05 40 02 00 40 03 04 c0 00 02 01 {nlri}")).contains("ORIGIN")
    );
    assert!(
        treat_as_withdraw(&format!("00 00 00 0e c0 01 01 00 40 02 00 40 03 04 c0 00 02 01 {nlri}")).contains("flags")
    );
    assert!(treat_as_withdraw(&format!("00 00 00 07 40 01 01 00 40 02 00 {nlri}")).contains("NEXT_HOP"));
    assert!(
        treat_as_withdraw(&format!(
            "00 00 00 14 40 01 01 00 40 02 00 40 03 04 c0 00 02 01 c0 08 03 00 00 01 {nlri}"
        ))
        .contains("COMMUNITIES")
    );
    // Malformed AS_PATH (segment type 7).
    assert!(
        treat_as_withdraw(&format!(
            "00 00 00 12 40 01 01 00 40 02 04 07 01 fc 00 40 03 04 c0 00 02 01 {nlri}"
        ))
        .contains("AS_PATH")
    );
}

#[test]
fn route_refresh_with_wrong_length() {
    assert_eq!(codes(&with_body(5, "00 01 00 01 00")), (7, 1));
}

#[test]
fn notification_descriptions() {
    let (msg, _) = decode_frame(&with_body(3, "04 00"), true).unwrap().unwrap();
    let Message::Notification(n) = msg else { panic!() };
    assert_eq!(n.describe(), "Hold Timer Expired (4/0)");
    let (msg, _) = decode_frame(&with_body(3, "02 02 fd e8"), true).unwrap().unwrap();
    let Message::Notification(n) = msg else { panic!() };
    assert_eq!(n.describe(), "OPEN Message Error / Bad Peer AS (2/2)");
}
