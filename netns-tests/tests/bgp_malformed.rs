//! A "router" that sends garbage gets the right NOTIFICATION from `herald announce bgp`, which then reconnects; one
//! that sends UPDATEs RFC 7606 lets the session survive keeps its session and our routes. The router is a small raw
//! TCP script in the router namespace.

use std::time::Duration;

use herald_netns_tests::bgp::{BgpLab, ROUTER_V4};
use herald_netns_tests::{require, wait_for};

/// Accepts herald's connection, optionally completes the handshake, sends `bad` (hex) and prints the first
/// NOTIFICATION herald answers with, in hex. With `refresh`, it then asks for a route refresh (RFC 2918) and prints
/// `announced <hex>` when herald's UPDATE with 203.0.113.30/32 comes back: the session is still up.
const RAW_ROUTER: &str = r#"
import socket, sys
bad = bytes.fromhex(sys.argv[1]); handshake = sys.argv[2] == "1"; refresh = sys.argv[3] == "1"
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("192.0.2.1", 179)); srv.listen(1)
c, _ = srv.accept(); c.settimeout(20)
def recv_exact(n):
    b = b""
    while len(b) < n:
        chunk = c.recv(n - len(b))
        if not chunk: raise SystemExit("closed")
        b += chunk
    return b
def recv_msg():
    h = recv_exact(19)
    return h + recv_exact(int.from_bytes(h[16:18], "big") - 19)
recv_msg()  # herald's OPEN
if handshake:
    caps = bytes.fromhex("010400010001" + "41040000fbf4")
    body = bytes.fromhex("04fbf4005ac0000201") + bytes([len(caps) + 2, 2, len(caps)]) + caps
    c.sendall(b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + b"\x01" + body)
    c.sendall(b"\xff" * 16 + b"\x00\x13\x04")
    while recv_msg()[18] != 2: pass  # wait for herald's first UPDATE: the session is Established
c.sendall(bad)
if refresh:
    c.sendall(b"\xff" * 16 + b"\x00\x17\x05" + bytes.fromhex("00010001"))
while True:
    m = recv_msg()
    if m[18] == 3:
        print(m.hex(), flush=True)
        break
    if refresh and m[18] == 2 and bytes.fromhex("20cb00711e") in m:
        print("announced " + m.hex(), flush=True)
        break
"#;

fn answer_to(test: &str, bad_hex: &str, handshake: bool, refresh: bool) -> (String, String) {
    let mut bgp = BgpLab::new(test, 1).unwrap();
    let ns = bgp.router_ns.clone();
    let router = bgp
        .lab
        .spawn(
            &ns,
            "raw-router",
            &[
                "python3",
                "-c",
                RAW_ROUTER,
                bad_hex,
                if handshake { "1" } else { "0" },
                if refresh { "1" } else { "0" },
            ],
        )
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        bgp.lab
            .sh(&ns, "ss -Hltn 'sport = :179'")
            .ok()
            .filter(|o| !o.is_empty())
    })
    .expect("raw router listens");
    let herald = bgp
        .start_speaker_to(1, &[ROUTER_V4], &[], &["203.0.113.30/32"])
        .unwrap();
    let reply = wait_for(Duration::from_secs(20), || {
        let out = bgp.lab.proc(router).stdout();
        (!out.trim().is_empty()).then(|| out.trim().to_string())
    })
    .unwrap_or_else(|| panic!("no answer; herald said: {}", bgp.lab.proc(herald).stderr()));
    // Herald survives and goes on retrying.
    assert!(bgp.lab.proc(herald).exited().is_none(), "herald exited");
    (reply, bgp.lab.proc(herald).stderr())
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

#[test]
fn garbage_instead_of_open_gets_connection_not_synchronized() {
    if !require(&["ip", "python3", "ss"]) {
        return;
    }
    let (reply, log) = answer_to(
        "bgp-garbage",
        &hex_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        false,
        false,
    );
    // NOTIFICATION, length 21, code 1 (Message Header Error), subcode 1 (Connection Not Synchronized).
    assert_eq!(reply, format!("{MARKER}0015030101"));
    assert!(log.contains("Connection Not Synchronized"), "{log}");
}

#[test]
fn open_with_unacceptable_hold_time_gets_open_error() {
    if !require(&["ip", "python3", "ss"]) {
        return;
    }
    let open = format!("{MARKER}001d0104fbf40001c000020100");
    let (reply, log) = answer_to("bgp-bad-open", &open, false, false);
    assert_eq!(
        reply,
        format!("{MARKER}0015030206"),
        "expected OPEN Message Error / Unacceptable Hold Time"
    );
    assert!(log.contains("Unacceptable Hold Time"), "{log}");
}

#[test]
fn update_with_overrunning_attribute_and_no_routes_gets_update_error() {
    if !require(&["ip", "python3", "ss"]) {
        return;
    }
    // Attribute ORIGIN claims 5 bytes of value where 1 is left, in an UPDATE that announces nothing: RFC 7606 §5.2
    // still asks for a session reset.
    let update = format!("{MARKER}001b02 0000 0004 40010500").replace(' ', "");
    let (reply, log) = answer_to("bgp-bad-update", &update, true, false);
    // Code 3 (UPDATE Message Error), subcode 5 (Attribute Length Error), data: the attribute header.
    assert_eq!(reply, format!("{MARKER}0018030305400105"));
    assert!(log.contains("Attribute Length Error"), "{log}");
}

#[test]
fn bad_message_length_gets_header_error() {
    if !require(&["ip", "python3", "ss"]) {
        return;
    }
    let (reply, _) = answer_to("bgp-bad-length", &format!("{MARKER}100104"), true, false);
    assert_eq!(reply, format!("{MARKER}00170301021001"));
}

#[test]
fn updates_rfc_7606_treats_as_withdraw_leave_the_session_and_routes_up() {
    if !require(&["ip", "python3", "ss"]) {
        return;
    }
    // Announcements of 198.51.100.0/24 from AS 64500 whose attribute list is malformed in the ways RFC 7606 §4 treats
    // as withdraw: COMMUNITIES claiming 8 bytes where 2 are left, and 2 stray bytes after the last attribute.
    let mandatory = "40010100 400206020100 00fbf4 400304c0000201";
    let bad = [
        update_hex(&format!("{mandatory} c0080800 00"), "18c63364"),
        update_hex(&format!("{mandatory} 0000"), "18c63364"),
    ]
    .concat();
    let (reply, log) = answer_to("bgp-taw-update", &bad, true, true);
    assert!(
        reply.starts_with("announced "),
        "expected our route again after the route refresh, got {reply}; herald said: {log}"
    );
    assert!(!log.contains("sending NOTIFICATION"), "{log}");
    assert!(log.contains("treat-as-withdraw"), "{log}");
    assert!(log.contains("overruns the path attributes"), "{log}");
}

/// An UPDATE in hex: header, empty withdrawn routes, the path attributes and NLRI given in hex.
fn update_hex(attributes: &str, nlri: &str) -> String {
    let (attributes, nlri) = (attributes.replace(' ', ""), nlri.replace(' ', ""));
    let len = 19 + 4 + (attributes.len() + nlri.len()) / 2;
    format!("{MARKER}{len:04x}020000{:04x}{attributes}{nlri}", attributes.len() / 2)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
