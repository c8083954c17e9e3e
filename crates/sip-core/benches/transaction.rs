//! Transaction lookup among N live transactions.
//!
//! - `key`: build the server-transaction key of a parsed INVITE (branch, sent-by, method) and look
//!   it up in a map of N keys: the matching step alone.
//! - `proxy absorbs retransmission`: the whole path of a retransmitted INVITE through
//!   [`Proxy::handle_message`] with N calls in progress (N server + N client transactions): parse,
//!   match, re-send the 100 Trying.
//!
//! `cargo bench -p sip-core --bench transaction`

use std::collections::HashMap;
use std::net::SocketAddr;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use sip_core::message::{parse, Message, Peer, Request, Transport};
use sip_core::proxy::{Event, FailurePolicy, Listener, Output, Proxy, ProxyConfig, Target};
use sip_core::time::Instant;
use sip_core::transaction::TxKey;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn invite(i: usize) -> String {
    let port = 10_000 + (i % 50_000);
    format!(
        "INVITE sip:12315@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.30.{}.{}:{port};branch=z9hG4bK-bench-{i:08x};rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:12315@127.0.0.1>\r\n\
From: <sip:1380013{:04}@10.30.0.7>;tag=f{i}\r\n\
Call-ID: bench-call-{i}@10.30.0.7\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:caller@10.30.0.7:{port}>\r\n\
Content-Length: 0\r\n\r\n",
        (i >> 8) & 0xff,
        i & 0xff,
        i % 10_000
    )
}

fn request(bytes: &[u8]) -> Request {
    match parse(bytes).expect("bench INVITE parses") {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn udp(a: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: a.parse::<SocketAddr>().unwrap(),
        conn: None,
    }
}

/// A proxy with `n` INVITEs received and forwarded (no answer yet): n server and n client
/// transactions live.
fn loaded_proxy(n: usize) -> Proxy {
    let cfg = ProxyConfig {
        listeners: vec![Listener {
            transport: Transport::Udp,
            addr: "127.0.0.1:5060".parse().unwrap(),
        }],
        rr_secret: [7; 32],
        ..ProxyConfig::default()
    };
    let mut p = Proxy::new(cfg, 42);
    let target = [Target {
        uri: "sip:8009@127.0.0.5:5070".into(),
        peer: udp("127.0.0.5:5070"),
    }];
    for i in 0..n {
        p.handle_message(Instant::ZERO, udp("10.30.0.7:5060"), invite(i).as_bytes());
        while let Some(o) = p.poll_output() {
            if let Output::Event(e) = o {
                if let Event::Request { id, .. } = *e {
                    p.forward(Instant::ZERO, id, &target, FailurePolicy::SendBest)
                        .expect("forward");
                }
            }
        }
        while p.poll_output().is_some() {}
    }
    assert_eq!(
        p.transaction_count(),
        (n, n),
        "live server/client transactions"
    );
    p
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("transaction lookup");
    for n in SIZES {
        let reqs: Vec<Request> = (0..n).map(|i| request(invite(i).as_bytes())).collect();
        let map: HashMap<TxKey, usize> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| (TxKey::server(r), i))
            .collect();
        assert_eq!(map.len(), n, "distinct keys");
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("key", n), &n, |b, &n| {
            b.iter(|| {
                i = (i + 7919) % n;
                let k = TxKey::server(black_box(&reqs[i]));
                *map.get(&k).unwrap()
            })
        });
    }
    for n in SIZES {
        let mut p = loaded_proxy(n);
        let retrans: Vec<String> = (0..1024).map(|k| invite(k * 7919 % n)).collect();
        // a retransmission is answered with the 100 Trying again and nothing else
        p.handle_message(Instant::ZERO, udp("10.30.0.7:5060"), retrans[0].as_bytes());
        match (p.poll_output(), p.poll_output()) {
            (Some(Output::Transmit(t)), None) => {
                assert!(t.bytes.starts_with(b"SIP/2.0 100 "), "100 re-sent")
            }
            other => panic!("unexpected outputs for a retransmission: {other:?}"),
        }
        let mut k = 0usize;
        g.bench_with_input(
            BenchmarkId::new("proxy absorbs retransmission", n),
            &n,
            |b, _| {
                b.iter(|| {
                    k = (k + 1) & 1023;
                    p.handle_message(
                        Instant::ZERO,
                        udp("10.30.0.7:5060"),
                        black_box(retrans[k].as_bytes()),
                    );
                    while let Some(o) = p.poll_output() {
                        black_box(o);
                    }
                })
            },
        );
        assert_eq!(p.transaction_count(), (n, n), "no transaction added");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
