//! Candidate ranking: a stable hash of (node, IP) that every agent, of every Herald version, computes identically.
//!
//! `key(node, ip) = mix64(fnv1a64(node_bytes ‖ 0x00 ‖ family ‖ ip_octets))`, where `family` is the byte 4 or 6,
//! `ip_octets` are the 4 or 16 network-order bytes, FNV-1a uses the 64-bit offset basis `0xcbf29ce484222325` and prime
//! `0x100000001b3`, and `mix64` is the SplitMix64 finaliser (`x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27;
//! x *= 0x94d049bb133111eb; x ^= x >> 31`) so that the ordering depends on every input bit. Candidates are sorted by
//! `(key, node)` ascending; rank 0 acts first. Never change this: agents of different versions must agree.
//! Rust's `RandomState` is deliberately not used (it is randomly keyed per process).

use std::net::IpAddr;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The rank key of `node` for `ip` (lower acts first).
pub fn rank_key(node: &str, ip: IpAddr) -> u64 {
    let h = match ip {
        IpAddr::V4(v4) => fnv1a64(&[node.as_bytes(), &[0, 4], &v4.octets()]),
        IpAddr::V6(v6) => fnv1a64(&[node.as_bytes(), &[0, 6], &v6.octets()]),
    };
    mix64(h)
}

/// Orders `nodes` by rank for `ip` (rank 0 first).
pub fn rank_nodes<'a>(ip: IpAddr, nodes: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<(u64, &str)> = nodes.into_iter().map(|n| (rank_key(n, ip), n)).collect();
    v.sort_unstable();
    v.dedup_by(|a, b| a.1 == b.1);
    v.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(&[b""]), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x85944171f73967e8);
    }

    #[test]
    fn keys_are_pinned_forever() {
        // Golden values (also computed by an independent Python implementation of the documented formula): if this
        // test fails, agents of different versions would rank
        // differently. Do not update them; fix the code.
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        assert_eq!(rank_key("node-a", v4), GOLDEN_A_V4);
        assert_eq!(rank_key("node-b", v6), GOLDEN_B_V6);
    }
    const GOLDEN_A_V4: u64 = 0x9eab_56e9_cbb0_84fa;
    const GOLDEN_B_V6: u64 = 0x1e7c_8c5d_04fa_4567;

    #[test]
    fn rank_spreads_first_place_evenly() {
        let nodes = ["node-a", "node-b", "node-c"];
        let mut firsts = [0usize; 3];
        for i in 0..=255u8 {
            for j in [1u8, 2, 3] {
                let ip = IpAddr::from([198, 51, 100 + j - 1, i]);
                let first = rank_nodes(ip, nodes)[0];
                firsts[nodes.iter().position(|n| *n == first).unwrap()] += 1;
            }
        }
        let total: usize = firsts.iter().sum();
        for f in firsts {
            // 768 IPs over 3 nodes: expect 256 each; allow ±20 %.
            assert!((205..=307).contains(&f), "uneven first ranks: {firsts:?} of {total}");
        }
    }

    #[test]
    fn ranking_is_independent_of_input_order() {
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let a = rank_nodes(ip, ["n1", "n2", "n3", "n4"]);
        let b = rank_nodes(ip, ["n4", "n3", "n2", "n1", "n2"]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
    }
}
