//! Allocation and release cost with 100,000 allocations held, in an IPv6 /64, an IPv4 /8 and (near full,
//! since a /16 has only 65,534 usable addresses) an IPv4 /16.
//!
//! cargo bench -p herald-ipam --bench alloc -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use herald_ipam::{Allocator, Family, Pool, PoolSpec, ServiceKey, ServiceRequest};

struct Scenario {
    name: &'static str,
    cidr: &'static str,
    family: Family,
    held: usize,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "ipv6 /64",
        cidr: "2001:db8::/64",
        family: Family::V6,
        held: 100_000,
    },
    Scenario {
        name: "ipv4 /16",
        cidr: "10.0.0.0/16",
        family: Family::V4,
        held: 65_000,
    },
    Scenario {
        name: "ipv4 /8",
        cidr: "10.0.0.0/8",
        family: Family::V4,
        held: 100_000,
    },
];

fn requests(family: Family, n: usize, prefix: &str) -> Vec<ServiceRequest> {
    (0..n)
        .map(|i| {
            let mut r = ServiceRequest::new("bench", format!("{prefix}{i}"));
            r.ip_families = vec![family];
            r
        })
        .collect()
}

fn empty(s: &Scenario) -> Allocator {
    let mut a = Allocator::new();
    a.set_pool(Pool::parse(&PoolSpec::new("pool", &[s.cidr])).expect("valid pool"));
    a
}

fn filled(s: &Scenario, reqs: &[ServiceRequest]) -> Allocator {
    let mut a = empty(s);
    for r in reqs {
        a.allocate(r).expect("pool large enough");
    }
    a
}

fn bench(c: &mut Criterion) {
    for s in &SCENARIOS {
        let reqs = requests(s.family, s.held, "svc-");
        let full = filled(s, &reqs);
        let mut group = c.benchmark_group(s.name);
        group.sample_size(10);

        group.throughput(Throughput::Elements(s.held as u64));
        group.bench_function(format!("allocate {} from empty", s.held), |b| {
            b.iter_batched(
                || empty(s),
                |mut a| {
                    for r in &reqs {
                        black_box(a.allocate(r).expect("free address"));
                    }
                    a
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("release all {}", s.held), |b| {
            b.iter_batched(
                || full.clone(),
                |mut a| {
                    for r in &reqs {
                        black_box(a.release(&r.key));
                    }
                    a
                },
                BatchSize::PerIteration,
            )
        });

        group.throughput(Throughput::Elements(1));
        let extra = requests(s.family, 1, "extra-").remove(0);
        let mut a = full.clone();
        group.bench_function(format!("allocate+release one, {} held", s.held), |b| {
            b.iter(|| {
                black_box(a.allocate(&extra).expect("free address"));
                black_box(a.release(&extra.key));
            })
        });

        // Every other address released: as many free gaps as allocations, the worst case for the interval
        // set. The lowest gap is found with one lookup all the same.
        let mut fragmented = full.clone();
        for r in reqs.iter().step_by(2) {
            fragmented.release(&r.key);
        }
        let victim = ServiceKey::new("bench", "svc-2");
        let reuse = reqs[2].clone();
        group.bench_function(format!("release+allocate one, {} held fragmented", s.held / 2), |b| {
            b.iter(|| {
                black_box(fragmented.release(&victim));
                black_box(fragmented.allocate(&reuse).expect("free address"));
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
