//! Codec and Adj-RIB-Out costs for a large table: 10,000 IPv6 /128s (documentation space).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv6Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use herald_bgp::packet::update::announce_updates;
use herald_bgp::packet::{Afi, DecodeContext, Message, Origin, OutboundAttributes, decode_frame};
use herald_bgp::rib::{AdjRibOut, RoutePolicy, Routes, SessionRouting};
use ipnet::IpNet;

fn prefixes(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| {
            IpNet::new(
                Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16).into(),
                128,
            )
            .unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let table = prefixes(10_000);
    let attrs = OutboundAttributes {
        origin: Origin::Igp,
        as_path: vec![64512],
        next_hop: "2001:db8::11".parse().unwrap(),
        med: None,
        local_pref: None,
        communities: vec![0xfc00_0064],
        large_communities: vec![],
    };
    c.bench_function("encode 10k IPv6 prefixes into UPDATEs", |b| {
        b.iter(|| {
            let bytes: usize = announce_updates(&attrs, black_box(&table), true)
                .into_iter()
                .map(|u| Message::Update(u).encode(true).len())
                .sum();
            black_box(bytes)
        })
    });
    let wire: Vec<u8> = announce_updates(&attrs, &table, true)
        .into_iter()
        .flat_map(|u| Message::Update(u).encode(true))
        .collect();
    c.bench_function("decode 10k IPv6 prefixes of UPDATEs", |b| {
        b.iter(|| {
            let mut rest = black_box(&wire[..]);
            while let Ok(Some((_, n))) = decode_frame(
                rest,
                DecodeContext {
                    four_octet_as: true,
                    internal: false,
                },
            ) {
                rest = &rest[n..];
            }
        })
    });
    let routes: BTreeMap<IpNet, RoutePolicy> = table.iter().map(|p| (*p, RoutePolicy::default())).collect();
    let session = SessionRouting {
        local_asn: 64512,
        peer_asn: 64500,
        next_hop_v4: None,
        next_hop_v6: Some("2001:db8::11".parse().unwrap()),
        families: vec![Afi::IPV4, Afi::IPV6],
        configured_families: vec![Afi::IPV4, Afi::IPV6],
    };
    let mut full = Routes::default();
    full.replace(routes);
    c.bench_function("Adj-RIB-Out: initial sync of 10k routes", |b| {
        b.iter(|| {
            let mut rib = AdjRibOut::default();
            black_box(rib.sync(&full, &session, true).updates.len())
        })
    });
    let mut rib = AdjRibOut::default();
    rib.sync(&full, &session, true);
    let extra: IpNet = "2001:db8:2::1/128".parse().unwrap();
    c.bench_function("Adj-RIB-Out: one change against 10k (announce, then withdraw)", |b| {
        b.iter(|| {
            // Alternate so that each iteration sends one announce and one withdraw, each from the change log.
            full.insert(extra, RoutePolicy::default());
            black_box(rib.sync(&full, &session, true).updates.len());
            full.remove(&extra);
            black_box(rib.sync(&full, &session, true).updates.len())
        })
    });
    c.bench_function(
        "Adj-RIB-Out: one change against 10k, whole-table diff (before the change log)",
        |b| {
            b.iter(|| {
                full.insert(extra, RoutePolicy::default());
                black_box(rib.sync_full(&full, &session, true).updates.len());
                full.remove(&extra);
                black_box(rib.sync_full(&full, &session, true).updates.len())
            })
        },
    );
    let table = full.table().clone();
    let mut one_more = table.clone();
    one_more.insert(extra, RoutePolicy::default());
    // The agent hands the speaker a whole new table per plan: one walk over both, shared by every session.
    let mut flip = false;
    c.bench_function("Routes: replace a table of 10k routes by one a route apart", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                if flip { one_more.clone() } else { table.clone() }
            },
            |next| black_box(full.replace(next)),
            criterion::BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
