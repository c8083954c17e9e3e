//! Early media on the wire: SIPp callers whose SDP offers point at UDP sockets this test binds on
//! 127.0.3.x; the test reads the RTP the daemon sends there and checks every header field.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

/// The daemon's RTP address in these tests.
const RTP_IP: &str = "127.0.3.1";

/// The shipped prompts.
fn shipped_prompts() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prompts")
}

/// Callers of this file: the `media-test` trunk (prefecture Xining) sends from these.
const XINING_CALLERS: &str = "\"127.0.3.3\", \"127.0.3.7\", \"127.0.3.9\", \"127.0.3.11\", \"127.0.3.13\", \"127.0.3.15\", \"127.0.3.17\", \"127.0.3.21\", \"127.0.3.23\"";
/// The `media-yushu` trunk (prefecture Yushu, a Tibetan one in the tests that say so).
const YUSHU_CALLER: &str = "127.0.3.31";

/// A daemon with `[media]` on RTP_IP (the shipped prompts) and trunks for this file's callers.
fn daemon(ports: (u16, u16), extra: &[(&str, &str)]) -> Daemon {
    daemon_with(ports, &shipped_prompts(), &[], extra)
}

/// The same, with its prompts from `prompts` and `tibetan` as `tibetan_prefectures`.
fn daemon_with(
    ports: (u16, u16),
    prompts: &std::path::Path,
    tibetan: &[&str],
    extra: &[(&str, &str)],
) -> Daemon {
    let tibetan: Vec<String> = tibetan.iter().map(|t| format!("\"{t}\"")).collect();
    let media = format!(
        "[media]\nrtp_ports = \"{RTP_IP}:{}-{}\"\nprompts_dir = \"{}\"\nannounce_merged = true\nannounce_position = true\ntibetan_prefectures = [{}]\n\n[metrics]\n",
        ports.0,
        ports.1,
        prompts.display(),
        tibetan.join(", ")
    );
    let mut edits: Vec<(String, String)> = vec![
        ("[metrics]\n".into(), media),
        (
            "[[trunks]]\nname = \"demo-pbx\"".into(),
            format!("[[trunks]]\nname = \"media-test\"\nsources = [{XINING_CALLERS}]\nprefecture = \"xining\"\n\n\
             [[trunks]]\nname = \"media-yushu\"\nsources = [\"{YUSHU_CALLER}\"]\nprefecture = \"yushu\"\n\n\
             [[trunks]]\nname = \"demo-pbx\""),
        ),
    ];
    edits.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    Daemon::start_with(Settings {
        config_edits: edits,
        ..Settings::default()
    })
}

/// A range of `n` ports on RTP_IP that is free now (a random base, checked).
fn port_range(n: u16) -> (u16, u16) {
    for _ in 0..50 {
        let base = 30000 + (rand_u16() % 1500) * 20;
        let free = (base..base + n)
            .step_by(2)
            .all(|p| UdpSocket::bind((RTP_IP, p)).is_ok());
        if free {
            return (base, base + n - 1);
        }
    }
    panic!("no free RTP range on {RTP_IP}");
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (t.subsec_nanos() ^ std::process::id().wrapping_mul(2654435761)) as u16
}

/// An RTP header, read by hand (RFC 3550 §5.1), independent of the code under test.
#[derive(Debug, Clone, Copy)]
struct Rtp {
    version: u8,
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload_len: usize,
}

fn parse_rtp(b: &[u8]) -> Rtp {
    assert!(b.len() >= 12, "short RTP packet: {b:?}");
    Rtp {
        version: b[0] >> 6,
        marker: b[1] & 0x80 != 0,
        pt: b[1] & 0x7f,
        seq: u16::from_be_bytes([b[2], b[3]]),
        ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload_len: b.len() - 12 - usize::from(b[0] & 0x0f) * 4,
    }
}

/// Packets received on `sock` during `d` (or until `stop` says so), with their source.
fn receive(sock: &UdpSocket, d: Duration) -> Vec<(Instant, SocketAddr, Rtp)> {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let end = Instant::now() + d;
    let mut v = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            v.push((Instant::now(), from, parse_rtp(&buf[..n])));
        }
    }
    v
}

/// The first packet on `sock` within `d`.
fn first_packet(sock: &UdpSocket, d: Duration) -> Option<(SocketAddr, Rtp)> {
    first_packet_with_payload(sock, d).map(|(a, r, _)| (a, r))
}

fn first_packet_with_payload(sock: &UdpSocket, d: Duration) -> Option<(SocketAddr, Rtp, Vec<u8>)> {
    sock.set_read_timeout(Some(d)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    Some((from, parse_rtp(&buf[..n]), buf[12..n].to_vec()))
}

/// The first 160 samples of a shipped prompt (A-law WAV: the data chunk is the wire bytes).
fn prompt_start(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/prompts/cmn")
        .join(name);
    let b = std::fs::read(&p).unwrap();
    let at = b.windows(4).position(|w| w == b"data").expect("data chunk") + 8;
    b[at..at + 160].to_vec()
}

/// Continuous: each packet's sequence number and timestamp follow the last one's.
fn assert_continuous(pkts: &[(Instant, SocketAddr, Rtp)], pt: u8) {
    let ssrc = pkts[0].2.ssrc;
    for w in pkts.windows(2) {
        let (a, b) = (w[0].2, w[1].2);
        assert_eq!(b.version, 2);
        assert_eq!(b.pt, pt, "payload type");
        assert_eq!(b.ssrc, ssrc, "SSRC constant");
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "sequence continuous: {a:?} → {b:?}"
        );
        assert_eq!(
            b.ts,
            a.ts.wrapping_add(160),
            "timestamp +160: {a:?} → {b:?}"
        );
        assert_eq!(b.payload_len, 160, "20 ms of G.711");
        assert!(
            !b.marker,
            "marker only on the first packet of the talkspurt"
        );
    }
}

/// The header block of the first message in a SIPp trace whose first line starts with `start`.
fn headers_of<'a>(trace: &'a str, start: &str) -> Option<&'a str> {
    let at = trace.find(start)?;
    let rest = &trace[at..];
    // Up to the first empty line (the trace keeps the CRLFs of the wire).
    let mut end = rest.len();
    let mut pos = 0;
    for l in rest.split_inclusive('\n') {
        if l.trim().is_empty() {
            end = pos;
            break;
        }
        pos += l.len();
    }
    Some(&rest[..end])
}

/// The value of header `name` in a header block (full name only: the switchboard writes those).
fn header(block: &str, name: &str) -> Option<String> {
    block.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The port of the SDP answer in a SIPp trace (the 183's `m=audio` line), once it is there.
fn answer_port(caller: &Sipp) -> Option<u16> {
    let t = caller.messages();
    let at = t.find("SIP/2.0 183 Session Progress")?;
    let m = t[at..].find("m=audio ")? + at + 8;
    t[m..].split(' ').next()?.parse().ok()
}

fn wait_answer_port(caller: &Sipp) -> u16 {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Some(p) = answer_port(caller) {
            return p;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no 183 with an SDP answer:\n{}", caller.messages());
}

fn caller(d: &Daemon, scn: &str, ip: &str, rtp: SocketAddr, fmts: &str, extra: &[&str]) -> Sipp {
    caller_to(d, "12345", scn, ip, rtp, fmts, extra)
}

fn caller_to(
    d: &Daemon,
    dialed: &str,
    scn: &str,
    ip: &str,
    rtp: SocketAddr,
    fmts: &str,
    extra: &[&str],
) -> Sipp {
    let rtpip = rtp.ip().to_string();
    let rtpport = rtp.port().to_string();
    let mut args = vec![
        "-set", "rtpip", &rtpip, "-set", "rtpport", &rtpport, "-set", "fmts", fmts,
    ];
    args.extend_from_slice(extra);
    uac(d, &format!("caller {scn}"), scn, dialed, ip, &args)
}

fn gauge(d: &Daemon, name: &str) -> Option<f64> {
    sample(&scrape(d), name)
}

/// Wait until `name` reads `want` (gauges are published about once a second).
fn wait_gauge(d: &Daemon, name: &str, want: f64) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if gauge(d, name) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn a_queued_caller_hears_pcma_at_50_packets_a_second_until_the_agent_answers() {
    let d = daemon(port_range(100), &[]);
    let rtp = UdpSocket::bind("127.0.3.2:0").unwrap();
    // PCMU first in the offer: PCMA is still chosen (preferred in China).
    let waiting = caller(
        &d,
        "uac_media.xml",
        "127.0.3.3",
        rtp.local_addr().unwrap(),
        "0 8",
        &[],
    );
    let port = wait_answer_port(&waiting);
    let (from, hdr, payload) =
        first_packet_with_payload(&rtp, Duration::from_secs(3)).expect("RTP arrives");
    let first = (from, hdr);
    // 12345 is not a merged line: the announcement starts with "you are number …".
    assert_eq!(
        payload,
        prompt_start("position_before.wav"),
        "the prompt is played"
    );
    assert_eq!(
        first.0,
        SocketAddr::from(([127, 0, 3, 1], port)),
        "sent from the answered port"
    );
    assert!(first.1.marker, "the first packet starts a talkspurt");
    assert_eq!(first.1.pt, 8);
    let pkts = receive(&rtp, Duration::from_secs(2));
    let span = pkts.last().unwrap().0 - pkts[0].0;
    let rate = (pkts.len() - 1) as f64 / span.as_secs_f64();
    assert!((45.0..=55.0).contains(&rate), "{rate:.1} packets/s");
    assert_eq!(pkts[0].2.seq, first.1.seq.wrapping_add(1));
    assert_continuous(&pkts, 8);
    assert!(pkts.iter().all(|p| p.2.ssrc == first.1.ssrc));
    let trace = waiting.messages();
    let a183 = trace.find("SIP/2.0 183 Session Progress").unwrap();
    assert!(trace[a183..].contains("a=rtpmap:8 PCMA/8000"), "{trace}");
    assert!(
        trace.contains("SIP/2.0 182 Queued"),
        "still 182 Queued: {trace}"
    );
    // The 183 sets up an early dialog with the switchboard: our Contact (RFC 3261 §12.1.1). The
    // caller supports 100rel, but nothing is sent reliably: it never PRACKs, and the call goes on.
    let h183 = headers_of(&trace, "SIP/2.0 183 ").unwrap();
    assert_eq!(
        header(h183, "Contact").as_deref(),
        Some(format!("<sip:127.0.0.1:{}>", d.port).as_str()),
        "{h183}"
    );
    assert_eq!(header(h183, "Require"), None, "{h183}");
    assert_eq!(header(h183, "RSeq"), None, "{h183}");
    assert_eq!(gauge(&d, "switchboard_media_streams"), Some(1.0));

    // Symmetric RTP: the caller's own RTP comes from elsewhere (its NAT); the stream follows.
    let nat = UdpSocket::bind("127.0.3.4:0").unwrap();
    let mut pkt = vec![0x80, 8, 0, 1, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
    pkt.extend([0xd5; 160]);
    nat.send_to(&pkt, ("127.0.3.1", port)).unwrap();
    let moved = first_packet(&nat, Duration::from_secs(1)).expect("RTP follows the source");
    assert_eq!(moved.1.ssrc, first.1.ssrc);
    std::thread::sleep(Duration::from_millis(100));
    while rtp.recv_from(&mut [0u8; 2048]).is_ok() {} // drain what was in flight
    assert!(
        receive(&rtp, Duration::from_millis(300)).is_empty(),
        "nothing goes to the offer's address any more"
    );

    // An agent logs in (registers) and answers: the stream stops as the 200 goes to the caller.
    let p12 = free_port("127.0.3.5");
    register(&d, "8012", "127.0.3.5", p12, "u1");
    let agent = uas("agent 8012", "uas.xml", "8012", "127.0.3.5", p12, 1);
    let end = Instant::now() + Duration::from_secs(15);
    while !waiting.messages().contains("SIP/2.0 200 OK") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(150));
    nat.set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    while nat.recv_from(&mut [0u8; 2048]).is_ok() {}
    let after = receive(&nat, Duration::from_millis(500));
    assert!(after.is_empty(), "{} packets after the answer", after.len());
    let (ok, diag) = waiting.finish(LIMIT);
    let (a_ok, a_diag) = agent.finish(LIMIT);
    assert!(ok && a_ok, "{diag}\n{a_diag}\n--- daemon\n{}", d.log());
    assert!(wait_gauge(&d, "switchboard_media_streams", 0.0));
    assert!(wait_gauge(&d, "switchboard_media_ports_in_use", 0.0));
}

#[test]
fn cancel_stops_the_stream_and_pcmu_alone_is_answered_in_pcmu() {
    let d = daemon(port_range(20), &[]);
    let rtp = UdpSocket::bind("127.0.3.6:0").unwrap();
    let c = caller(
        &d,
        "uac_media_cancel.xml",
        "127.0.3.7",
        rtp.local_addr().unwrap(),
        "0",
        &["-d", "2000"],
    );
    let first = first_packet(&rtp, Duration::from_secs(5)).expect("RTP arrives");
    assert_eq!(first.1.pt, 0, "PCMU");
    let (ok, diag) = c.finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    assert!(diag.contains("SIP/2.0 183 Session Progress"), "{diag}");
    // SIPp is done (CANCEL answered, 487 acknowledged); give the stop 100 ms to land.
    std::thread::sleep(Duration::from_millis(100));
    rtp.set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut before = Vec::new();
    while let Ok((n, _)) = rtp.recv_from(&mut buf) {
        before.push(parse_rtp(&buf[..n]));
    }
    assert!(before.len() > 50, "about 2 s of RTP: {}", before.len());
    let after = receive(&rtp, Duration::from_millis(500));
    assert!(after.is_empty(), "{} packets after CANCEL", after.len());
    assert!(wait_gauge(&d, "switchboard_media_ports_in_use", 0.0));
}

#[test]
fn an_offer_without_g711_gets_182_and_no_early_media() {
    let d = daemon(port_range(20), &[]);
    let rtp = UdpSocket::bind("127.0.3.8:0").unwrap();
    // G.729 (18) and GSM (3) only.
    let c = caller(
        &d,
        "uac_media_cancel.xml",
        "127.0.3.9",
        rtp.local_addr().unwrap(),
        "18 3",
        &["-d", "1000"],
    );
    let got = receive(&rtp, Duration::from_millis(1500));
    let (ok, diag) = c.finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    assert!(diag.contains("SIP/2.0 182 Queued"), "{diag}");
    assert!(!diag.contains("SIP/2.0 183"), "{diag}");
    assert!(
        got.is_empty(),
        "{} RTP packets without a usable codec",
        got.len()
    );
    let s = scrape(&d);
    assert_eq!(
        sample(&s, "switchboard_media_offers_total{result=\"no_codec\"}"),
        Some(1.0),
        "{s}"
    );
}

/// RFC 3262: a caller whose INVITE says `Require: 100rel` may only get provisional responses sent
/// reliably, which the switchboard's own 182 Queued and 183 (early media) are not. It waits in
/// the queue without them (SIPp fails the call on an unexpected 182 or 183), hears no
/// announcement, and its CANCEL still finds the call waiting (200, then 487).
#[test]
fn a_caller_requiring_100rel_waits_without_182_or_183() {
    let d = daemon(port_range(20), &[]);
    let rtp = UdpSocket::bind("127.0.3.10:0").unwrap();
    let c = caller(
        &d,
        "uac_require_100rel.xml",
        "127.0.3.11",
        rtp.local_addr().unwrap(),
        "8 0",
        &["-d", "1500"],
    );
    let got = receive(&rtp, Duration::from_millis(1500));
    let (ok, diag) = c.finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    assert!(!diag.contains("SIP/2.0 182"), "{diag}");
    assert!(!diag.contains("SIP/2.0 183"), "{diag}");
    assert!(got.is_empty(), "{} RTP packets", got.len());
    let s = scrape(&d);
    assert_eq!(
        sample(
            &s,
            "switchboard_media_offers_total{result=\"requires_100rel\"}"
        ),
        Some(1.0),
        "the offer was seen and turned down for 100rel: {s}"
    );
}

#[test]
fn a_thousand_queued_calls_leak_no_port() {
    // 200 ports: 100 streams at most at once; 1000 calls at 100/s that each wait 300 ms need ~40.
    let d = daemon(port_range(200), &[]);
    let rtp = UdpSocket::bind("127.0.3.10:0").unwrap();
    // Drain the RTP of all the calls so the socket buffer never matters.
    let sink = rtp.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let drain = std::thread::spawn(move || {
        sink.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut n = 0u64;
        let mut buf = [0u8; 2048];
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if sink.recv_from(&mut buf).is_ok() {
                n += 1;
            }
        }
        n
    });
    let c = caller(
        &d,
        "uac_media_cancel.xml",
        "127.0.3.11",
        rtp.local_addr().unwrap(),
        "8",
        &["-d", "300", "-r", "100", "-m", "1000", "-l", "200"],
    );
    let (ok, diag) = c.finish(Duration::from_secs(90));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let packets = drain.join().unwrap();
    assert!(ok, "{}\n--- daemon (tail)\n{}", tail(&diag), tail(&d.log()));
    let s = scrape(&d);
    assert_eq!(
        sample(&s, "switchboard_media_offers_total{result=\"answered\"}"),
        Some(1000.0),
        "every call got early media: {s}"
    );
    assert!(packets > 1000, "only {packets} RTP packets for 1000 calls");
    assert!(
        wait_gauge(&d, "switchboard_media_ports_in_use", 0.0),
        "ports leaked: {}",
        scrape(&d)
    );
    assert!(
        wait_gauge(&d, "switchboard_media_streams", 0.0),
        "{}",
        scrape(&d)
    );
}

fn tail(s: &str) -> &str {
    let mut i = s.len().saturating_sub(6000);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

#[test]
fn a_merged_line_starts_with_its_notice() {
    let d = daemon(port_range(20), &[]);
    let rtp = UdpSocket::bind("127.0.3.12:0").unwrap();
    // 12336 (natural resources) is merged into 12345 in the shipped plan.
    let c = caller_to(
        &d,
        "12336",
        "uac_media_cancel.xml",
        "127.0.3.13",
        rtp.local_addr().unwrap(),
        "8",
        &["-d", "1000"],
    );
    let (_, hdr, payload) =
        first_packet_with_payload(&rtp, Duration::from_secs(5)).expect("RTP arrives");
    assert_eq!(hdr.pt, 8);
    assert_eq!(
        payload,
        prompt_start("joined.wav"),
        "the merged-line notice first"
    );
    let (ok, diag) = c.finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
}

#[test]
fn the_switchboards_own_183_and_182_carry_its_contact_on_the_callers_transport() {
    let d = daemon(port_range(20), &[]);
    for (transport, ip, param) in [
        ("u1", "127.0.3.15", ""),
        ("t1", "127.0.3.17", ";transport=tcp"),
    ] {
        let rtp = UdpSocket::bind((ip, 0)).unwrap();
        // The scenario itself fails the call if a 183 or 182 comes without a Contact (<ereg>).
        let c = caller(
            &d,
            "uac_media_cancel.xml",
            ip,
            rtp.local_addr().unwrap(),
            "8",
            &["-d", "500", "-t", transport],
        );
        let (ok, diag) = c.finish(LIMIT);
        assert!(ok, "{diag}\n--- daemon\n{}", d.log());
        let want = format!("<sip:127.0.0.1:{}{param}>", d.port);
        for status in ["SIP/2.0 183 ", "SIP/2.0 182 "] {
            let h = headers_of(&diag, status).unwrap_or_else(|| panic!("no {status}: {diag}"));
            assert_eq!(header(h, "Contact").as_deref(), Some(want.as_str()), "{h}");
            assert!(
                header(h, "To").is_some_and(|t| t.contains(";tag=")),
                "our tag: {h}"
            );
        }
        assert!(
            first_packet(&rtp, Duration::from_millis(1)).is_some(),
            "early media played over {transport}"
        );
    }
    assert!(wait_gauge(&d, "switchboard_media_ports_in_use", 0.0));
}

/// Packets on `sock` until `done` says the call was answered (checked between packets), bounded by
/// `limit`; then a short drain, so what was in flight when the 200 left is counted too.
fn receive_until(
    sock: &UdpSocket,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Vec<(Instant, SocketAddr, Rtp, Vec<u8>)> {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let end = Instant::now() + limit;
    let mut v = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end && !done() {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            v.push((
                Instant::now(),
                from,
                parse_rtp(&buf[..n]),
                buf[12..n].to_vec(),
            ));
        }
    }
    v
}

#[test]
fn without_a_seats_file_agents_ring_in_turn_while_the_caller_hears_the_merged_notice() {
    // No seat manager: the interim queue rings the [[agents]] of the Xining queue, then the
    // province's, in config order. 8001 (Xining) is busy, 8009 rings until the 2 s ring timeout,
    // 8010 rings 1.5 s and answers. The caller hears one unbroken stream meanwhile.
    let d = daemon(
        port_range(20),
        &[
            ("seats_file = \"seats.toml\"\n", ""),
            ("ring_timeout_s = 20", "ring_timeout_s = 2"),
        ],
    );
    let agents = [
        ("8001", "127.0.3.24", "uas_busy.xml"),
        ("8009", "127.0.3.25", "uas_cancel.xml"),
        ("8010", "127.0.3.26", "uas_slow_answer.xml"),
    ];
    let mut phones = Vec::new();
    for (user, ip, scn) in agents {
        let port = free_port(ip);
        register(&d, user, ip, port, "u1");
        phones.push(uas(&format!("agent {user}"), scn, user, ip, port, 1));
    }
    let rtp = UdpSocket::bind("127.0.3.20:0").unwrap();
    // 12336 (natural resources) is merged into 12345 in the shipped plan.
    let waiting = caller_to(
        &d,
        "12336",
        "uac_media.xml",
        "127.0.3.21",
        rtp.local_addr().unwrap(),
        "8",
        &[],
    );
    let port = wait_answer_port(&waiting);
    let answered = || waiting.messages().contains("SIP/2.0 200 OK");
    let pkts = receive_until(&rtp, Duration::from_secs(15), answered);
    assert!(answered(), "no agent answered\n--- daemon\n{}", d.log());
    assert!(pkts.len() > 100, "only {} packets", pkts.len());
    let (_, from, first, payload) = &pkts[0];
    assert_eq!(*from, SocketAddr::from(([127, 0, 3, 1], port)));
    assert!(first.marker, "the first packet starts a talkspurt");
    assert_eq!(first.pt, 8, "PCMA");
    assert_eq!(
        payload,
        &prompt_start("joined.wav"),
        "the merged-line notice first"
    );
    // One stream across the three agents: continuous sequence numbers and timestamps, ~50/s.
    let rtp_only: Vec<_> = pkts.iter().map(|(t, a, r, _)| (*t, *a, *r)).collect();
    assert_continuous(&rtp_only, 8);
    let span = pkts.last().unwrap().0 - pkts[0].0;
    let rate = (pkts.len() - 1) as f64 / span.as_secs_f64();
    assert!((45.0..=55.0).contains(&rate), "{rate:.1} packets/s");
    eprintln!(
        "interim queue: {} packets in {span:?} ({rate:.1}/s), seq {}..{}",
        pkts.len(),
        first.seq,
        pkts.last().unwrap().2.seq
    );
    assert!(
        span > Duration::from_secs(3),
        "streamed through the busy agent, the 2 s ring and the 1.5 s ring: {span:?}"
    );

    // The 200 went to the caller: the stream stops.
    std::thread::sleep(Duration::from_millis(100));
    rtp.set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    while rtp.recv_from(&mut [0u8; 2048]).is_ok() {}
    let after = receive(&rtp, Duration::from_millis(500));
    assert!(after.is_empty(), "{} packets after the answer", after.len());
    let (ok, diag) = waiting.finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    assert!(
        !diag.contains("SIP/2.0 182 "),
        "the interim queue, not the seat manager (which sends 182 Queued): {diag}"
    );
    let h183 = headers_of(&diag, "SIP/2.0 183 ").unwrap();
    assert_eq!(
        header(h183, "Contact").as_deref(),
        Some(format!("<sip:127.0.0.1:{}>", d.port).as_str()),
        "{h183}"
    );
    for p in phones {
        let (ok, diag) = p.finish(LIMIT);
        assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    }
    assert!(wait_gauge(&d, "switchboard_media_streams", 0.0));
    assert!(wait_gauge(&d, "switchboard_media_ports_in_use", 0.0));
}

/// A placeholder for a Tibetan recording: `packets` × 20 ms of a 1 kHz square tone, as an 8 kHz
/// A-law WAV (its data bytes are then exactly what PCMA carries). It proves which clip is chosen,
/// not any language: no Tibetan audio is made up here.
fn tone_wav(packets: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..packets * 160)
        .map(|i| if i % 8 < 4 { 0xAA } else { 0x2A })
        .collect();
    let mut v = b"RIFF".to_vec();
    v.extend((36 + data.len() as u32).to_le_bytes());
    v.extend(b"WAVEfmt ");
    v.extend(16u32.to_le_bytes());
    v.extend(6u16.to_le_bytes()); // A-law
    v.extend(1u16.to_le_bytes()); // mono
    v.extend(8000u32.to_le_bytes());
    v.extend(8000u32.to_le_bytes());
    v.extend(1u16.to_le_bytes());
    v.extend(8u16.to_le_bytes());
    v.extend(b"data");
    v.extend((data.len() as u32).to_le_bytes());
    v.extend(&data);
    (v, data)
}

/// A prompts folder for one test: the shipped Mandarin clips, and `bo/` with `bo_clips`.
fn prompts_dir(bo_clips: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cmn = dir.path().join("cmn");
    std::fs::create_dir(&cmn).unwrap();
    for e in std::fs::read_dir(shipped_prompts().join("cmn")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, cmn.join(p.file_name().unwrap())).unwrap();
    }
    let bo = dir.path().join("bo");
    std::fs::create_dir(&bo).unwrap();
    for (name, bytes) in bo_clips {
        std::fs::write(bo.join(name), bytes).unwrap();
    }
    dir
}

/// The first `n` packets of a call to the merged line 12336 from `ip`, with their payloads, in
/// sequence order (the caller waits 3 s, then CANCELs).
fn merged_call_payloads(d: &Daemon, ip: &str, rtp_ip: &str, n: usize) -> Vec<(Rtp, Vec<u8>)> {
    let rtp = UdpSocket::bind((rtp_ip, 0)).unwrap();
    let c = caller_to(
        d,
        "12336",
        "uac_media_cancel.xml",
        ip,
        rtp.local_addr().unwrap(),
        "8",
        &["-d", "3000"],
    );
    rtp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < n {
        let Ok((len, _)) = rtp.recv_from(&mut buf) else {
            break;
        };
        got.push((parse_rtp(&buf[..len]), buf[12..len].to_vec()));
    }
    let (ok, diag) = c.finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    assert_eq!(got.len(), n, "RTP packets received");
    let seq0 = got[0].0.seq;
    for (i, (h, _)) in got.iter().enumerate() {
        assert_eq!(h.seq, seq0.wrapping_add(i as u16), "in order, none lost");
        assert_eq!(h.pt, 8);
    }
    got
}

#[test]
fn a_tibetan_prefectures_caller_hears_a_bo_recording_where_one_exists_and_mandarin_elsewhere() {
    // bo/ holds one clip, joined.wav (0.4 s = 20 packets): the rest falls back clip by clip.
    let (wav, tone) = tone_wav(20);
    let prompts = prompts_dir(&[("joined.wav", &wav)]);
    let d = daemon_with(port_range(20), prompts.path(), &["yushu"], &[]);
    assert!(d.log().contains("tibetan_clips=1"), "{}", d.log());

    // A caller from Yushu (the trunk's prefecture): the bo/ notice, then "you are number …" in
    // Mandarin, since bo/ has no position_before.wav.
    let got = merged_call_payloads(&d, YUSHU_CALLER, "127.0.3.30", 21);
    for (i, (_, payload)) in got[..20].iter().enumerate() {
        assert_eq!(
            payload[..],
            tone[i * 160..(i + 1) * 160],
            "packet {i}: the bo/ recording"
        );
    }
    assert_eq!(
        got[20].1,
        prompt_start("position_before.wav"),
        "then the Mandarin clip bo/ lacks"
    );

    // A caller from Xining, same daemon: Mandarin from the first packet.
    let got = merged_call_payloads(&d, "127.0.3.23", "127.0.3.22", 1);
    assert_eq!(
        got[0].1,
        prompt_start("joined.wav"),
        "Xining is not Tibetan"
    );
}

#[test]
fn a_tibetan_prefectures_caller_hears_mandarin_while_bo_is_empty() {
    let prompts = prompts_dir(&[]);
    let d = daemon_with(port_range(20), prompts.path(), &["yushu"], &[]);
    assert!(d.log().contains("tibetan_clips=0"), "{}", d.log());
    let got = merged_call_payloads(&d, YUSHU_CALLER, "127.0.3.30", 1);
    assert_eq!(got[0].1, prompt_start("joined.wav"), "Mandarin for now");
}
