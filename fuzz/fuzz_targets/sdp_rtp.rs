//! What a caller sends the media side: an SDP offer (the INVITE body) and datagrams on a stream's
//! RTP port. The offer must parse or fail without panicking, and an answer we write must parse
//! again with the chosen stream on our port; any datagram fed to a running stream must leave it
//! sending well-formed packets (symmetric RTP latches only on RTP).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use media::{sdp, Codec, Playlist, Scheduler, StreamId, StreamParams};

fuzz_target!(|data: &[u8]| {
    let (offer, datagram) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let local: SocketAddr = "127.0.0.1:20000".parse().unwrap();
    if let Ok(sd) = sdp::parse(offer) {
        if let Some(n) = sdp::answer(&sd, local, 1) {
            let back = sdp::parse(n.answer.as_bytes()).expect("our answer parses");
            assert_eq!(back.media.len(), sd.media.len(), "one answer line per offer line");
            assert!(back.media.iter().any(|m| m.port == 20000 && m.formats == [n.payload_type]));
        }
    }
    let t0 = Instant::now();
    let mut s = Scheduler::new(t0);
    let id = StreamId(1);
    s.start(
        t0,
        id,
        StreamParams {
            ssrc: 7,
            first_seq: 0,
            first_timestamp: 0,
            payload_type: 8,
            remote: "127.0.0.2:4000".parse().unwrap(),
            playlist: Playlist::new(vec![], 0, Codec::Pcma),
        },
    );
    let from: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let changed = s.handle_received(id, from, datagram);
    if changed {
        assert!(datagram.len() >= 12 && datagram[0] >> 6 == 2, "latched on non-RTP");
    }
    let mut n = 0;
    s.poll_transmit(t0 + Duration::from_millis(40), |t| {
        assert_eq!(t.bytes.len(), 172);
        assert_eq!(t.dest, if changed { from } else { "127.0.0.2:4000".parse().unwrap() });
        n += 1;
    });
    assert_eq!(n, 3);
});
