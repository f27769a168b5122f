//! Nothing a peer sends can panic the decoder or make it log much of what was sent: random bytes, and valid messages
//! with bytes flipped, cut or grown.

use herald_bgp::packet::update::announce_updates;
use herald_bgp::packet::{Message, Origin, OutboundAttributes, Update, decode_frame};
use ipnet::IpNet;
use proptest::prelude::*;

fn valid_messages() -> Vec<Vec<u8>> {
    let attrs = OutboundAttributes {
        origin: Origin::Igp,
        as_path: vec![64512],
        next_hop: "2001:db8::1".parse().unwrap(),
        med: Some(1),
        local_pref: Some(100),
        communities: vec![1, 2],
        large_communities: vec![],
    };
    let v6: Vec<IpNet> = ["2001:db8::/64", "2001:db8:1::/48", "2001:db8::5/128"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut v4 = attrs.clone();
    v4.next_hop = "192.0.2.1".parse().unwrap();
    let mut out: Vec<Vec<u8>> = announce_updates(&attrs, &v6, true)
        .into_iter()
        .map(|u| Message::Update(u).encode(true))
        .collect();
    out.extend(
        announce_updates(&v4, &["198.51.100.0/24".parse().unwrap()], true)
            .into_iter()
            .map(|u| Message::Update(u).encode(true)),
    );
    out.push(Message::Keepalive.encode(true));
    out
}

/// Feeds `bytes` the way the session does: frame after frame until an error or a short buffer. Whatever the input,
/// the reason that gets logged stays short: it never echoes more than a few numbers of what the peer sent.
fn decode_all(mut bytes: &[u8]) {
    loop {
        match decode_frame(bytes, super::EBGP) {
            Ok(Some((msg, n))) => {
                assert!(n >= 19 && n <= bytes.len());
                if let Message::Update(Update { malformed: Some(m), .. }) = msg {
                    assert!(m.reason.len() < 160, "{}", m.reason);
                }
                bytes = &bytes[n..];
            }
            Ok(None) => return,
            Err(e) => {
                assert!(e.reason.len() < 160, "{}", e.reason);
                return;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_all(&bytes);
    }

    #[test]
    fn random_bodies_after_a_valid_header(ty in 1u8..=5, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut v = vec![0xff; 16];
        v.extend(((19 + body.len()) as u16).to_be_bytes());
        v.push(ty);
        v.extend(body);
        decode_all(&v);
    }

    #[test]
    fn mutated_messages(which in 0usize..5, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let messages = valid_messages();
        let mut v = messages[which % messages.len()].clone();
        for (at, byte) in flips {
            let i = at.index(v.len());
            v[i] = byte;
        }
        let n = cut.index(v.len() + 1);
        decode_all(&v[..n]);
        decode_all(&v);
    }
}
