//! Cost of the flood guard on the hot path: one `check` per inbound request, before parsing.
//! A known source within budget, a banned source, and a stream of distinct sources filling the
//! bounded table. None of these may allocate once the table has grown.
//!
//! Run: `cargo bench -p switchboard --bench flood`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sip_core::time::Instant;
use switchboard::flood::{Budget, FloodGuard};
use switchboard::security::FloodConfig;

fn bench(c: &mut Criterion) {
    let cfg = FloodConfig {
        max_sources: 65_536,
        ..FloodConfig::default()
    };
    let mut g = FloodGuard::new(cfg.clone(), Vec::new());
    let ip: IpAddr = [10, 0, 0, 1].into();
    let mut t = Duration::ZERO;
    c.bench_function("flood check: known source within budget", |b| {
        b.iter(|| {
            // 1 ms apart: 1000/s against 50/s would ban; keep it within budget by jumping 20 ms.
            t += Duration::from_millis(20);
            black_box(g.check(Instant::from_origin(t), black_box(ip), Budget::Requests, 0))
        })
    });
    let mut g = FloodGuard::new(cfg.clone(), Vec::new());
    let now = Instant::from_origin(Duration::from_secs(1));
    for _ in 0..1000 {
        let _ = g.check(now, ip, Budget::Requests, 0);
    }
    c.bench_function("flood check: banned source", |b| {
        b.iter(|| black_box(g.check(now, black_box(ip), Budget::Requests, 0)))
    });
    let mut g = FloodGuard::new(cfg, Vec::new());
    let mut n: u32 = 0;
    c.bench_function(
        "flood check: distinct sources (table bounded at 65536)",
        |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let ip: IpAddr = std::net::Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)).into();
                black_box(g.check(now, ip, Budget::Requests, 0))
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
