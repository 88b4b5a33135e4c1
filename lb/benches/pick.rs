//! Cost of one pick (issue 5, acceptance 5): `pick` + guard dropped, and
//! `pick` + `finish` (what a request pays in total), for each balancer at
//! 3, 30 and 300 endpoints. Single-threaded on a virtual clock; every pool
//! has healthy endpoints and failure detection on, as in production.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use edge_lb::{Balance, EndpointSpec, Nanos, Outcome, PickRequest, Pool, PoolConfig, WyRand};

const SIZES: [usize; 3] = [3, 30, 300];

fn balancers() -> [(&'static str, Balance); 5] {
    [
        ("p2c", Balance::P2c),
        ("ewma", Balance::Ewma),
        ("round-robin", Balance::RoundRobin),
        ("hash", Balance::Hash { bounded_load: None }),
        ("hash-bounded", Balance::hash_bounded()),
    ]
}

fn pool(balance: Balance, n: usize) -> Pool {
    let specs: Vec<_> = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080));
            EndpointSpec::weighted(addr, 1 + (i % 3) as u32)
        })
        .collect();
    let config = PoolConfig {
        balance,
        ..PoolConfig::default()
    };
    Pool::new(config, &specs, Nanos::ZERO)
}

fn bench(c: &mut Criterion) {
    for (phase, finish) in [("pick", false), ("pick+finish", true)] {
        let mut group = c.benchmark_group(phase);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        for (name, balance) in balancers() {
            for n in SIZES {
                let pool = pool(balance, n);
                let mut rng = WyRand::new(7);
                let mut tick = 0u64;
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                    b.iter(|| {
                        tick += 1;
                        let now = Nanos::from_nanos(tick * 1_000);
                        // A different cache key per request, as a CDN sees.
                        let key = tick.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        let guard = pool.pick(&PickRequest::keyed(key), now, &mut rng).unwrap();
                        if finish {
                            guard.finish(Outcome::Success, now + Duration::from_millis(1));
                        } else {
                            black_box(guard.addr());
                            drop(guard);
                        }
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
