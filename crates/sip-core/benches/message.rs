//! Parse and serialize a realistic INVITE (with SDP, as a carrier trunk sends it) and its 200 OK.
//!
//! `cargo bench -p sip-core --bench message`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sip_core::message::{parse, Message};

const INVITE: &str = "INVITE sip:0971123150@10.20.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.30.0.7:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n\
Max-Forwards: 69\r\n\
Contact: <sip:13800138000@10.30.0.7:5060;transport=udp>\r\n\
To: <sip:0971123150@10.20.0.1>\r\n\
From: \"13800138000\" <sip:13800138000@10.30.0.7>;tag=8f1c2d3e\r\n\
Call-ID: 7d3c1e9a-4b2f-11ee-9a3c-0242ac120002@10.30.0.7\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n\
Supported: timer, replaces\r\n\
P-Asserted-Identity: <sip:13800138000@10.30.0.7>\r\n\
User-Agent: carrier-sbc/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 232\r\n\
\r\n\
v=0\r\n\
o=- 3906623417 3906623417 IN IP4 10.30.0.7\r\n\
s=-\r\n\
c=IN IP4 10.30.0.7\r\n\
t=0 0\r\n\
m=audio 20000 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

const OK200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 10.20.0.1:5060;branch=z9hG4bK-sb-1f2e3d4c5b6a7980;rport=5060\r\n\
Via: SIP/2.0/UDP 10.30.0.7:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport=5060;received=10.30.0.7\r\n\
Record-Route: <sip:10.20.0.1:5060;lr;sb=0a1b2c3d4e5f60718293a4b5c6d7e8f9>\r\n\
Contact: <sip:8009@10.40.0.9:5062>\r\n\
To: <sip:0971123150@10.20.0.1>;tag=as5f2a9c01\r\n\
From: \"13800138000\" <sip:13800138000@10.30.0.7>;tag=8f1c2d3e\r\n\
Call-ID: 7d3c1e9a-4b2f-11ee-9a3c-0242ac120002@10.30.0.7\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 151\r\n\
\r\n\
v=0\r\n\
o=- 12 12 IN IP4 10.40.0.9\r\n\
s=-\r\n\
c=IN IP4 10.40.0.9\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 8 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

fn bench(c: &mut Criterion) {
    // the samples must be well formed (Content-Length matches), or the benches measure error paths
    let invite = match parse(INVITE.as_bytes()).expect("INVITE parses") {
        Message::Request(r) => r,
        Message::Response(_) => panic!("INVITE parsed as a response"),
    };
    assert_eq!(invite.body().len(), 232, "INVITE Content-Length");
    let ok = match parse(OK200.as_bytes()).expect("200 parses") {
        Message::Response(r) => r,
        Message::Request(_) => panic!("200 parsed as a request"),
    };
    assert_eq!(ok.body().len(), 151, "200 Content-Length");
    assert_eq!(ok.meta.via_count, 2);

    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("parse INVITE", |b| {
        b.iter(|| parse(black_box(INVITE.as_bytes())).unwrap())
    });
    g.bench_function("serialize INVITE", |b| {
        b.iter(|| black_box(&invite).to_bytes())
    });
    g.throughput(Throughput::Bytes(OK200.len() as u64));
    g.bench_function("parse 200", |b| {
        b.iter(|| parse(black_box(OK200.as_bytes())).unwrap())
    });
    g.bench_function("serialize 200", |b| b.iter(|| black_box(&ok).to_bytes()));
    // what a proxy does with a 200 on its way upstream: parse, pop our Via, serialize
    g.bench_function("relay 200 (parse, pop Via, serialize)", |b| {
        b.iter(|| match parse(black_box(OK200.as_bytes())).unwrap() {
            Message::Response(mut r) => {
                r.pop_via();
                r.to_bytes()
            }
            Message::Request(_) => unreachable!(),
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
