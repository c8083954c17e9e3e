//! The "bad input" contract, proven against the real daemon on loopback:
//!
//! - a broken request that carries enough headers to answer gets a precise 4xx/5xx; one that does not
//!   gets nothing, and the daemon keeps answering;
//! - a flood of junk neither stops the daemon, nor loses a registration, nor floods the log;
//! - oversized input gets 513 (UDP) or a closed connection (TCP); a stalled TCP peer is cut off;
//! - SIGTERM drains (open transactions finish, new calls get 503, exit 0); SIGINT exits at once.
//!
//! Addresses: agents on 127.0.0.3x, junk senders on other 127.0.0.3x, the trunk on 127.0.0.2.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

/// How long to wait for an answer that must come.
const ANSWER: Duration = Duration::from_secs(2);

/// How long silence must last before "no answer" counts as proven.
const SILENCE: Duration = Duration::from_millis(700);

fn udp(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).expect("bind UDP on loopback");
    s.set_read_timeout(Some(ANSWER)).unwrap();
    s
}

/// A request with the five headers an answer needs; `head` is the request line's method and URI,
/// `cseq` the CSeq method, `extra` more header lines (each ending in CRLF).
fn request(
    head: &str,
    cseq: &str,
    from: SocketAddr,
    branch: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{head} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
To: <sip:8031@127.0.0.1>\r\nFrom: <sip:probe@{from}>;tag=f{branch}\r\nCall-ID: {branch}@bad\r\n\
CSeq: 1 {cseq}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The first final response on `sock`, or `None` if nothing final comes within `wait`.
fn recv_final(sock: &UdpSocket, wait: Duration) -> Option<String> {
    let end = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let s = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !s.starts_with("SIP/2.0 1") {
                    return Some(s);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("UDP receive: {e}"),
        }
    }
    None
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The daemon answers an OPTIONS to itself with 200 (it is alive and its core is not stuck).
fn assert_answers_options(d: &Daemon, sock: &UdpSocket, tag: &str) {
    let from = sock.local_addr().unwrap();
    sock.send_to(options(&d.target(), from, tag).as_bytes(), d.addr())
        .unwrap();
    let reply = recv_final(sock, ANSWER)
        .unwrap_or_else(|| panic!("no answer to OPTIONS {tag}; log:\n{}", d.log()));
    assert!(reply.starts_with("SIP/2.0 200 "), "OPTIONS {tag}: {reply}");
}

#[test]
fn malformed_requests_get_precise_answers_and_garbage_gets_none() {
    let mut d = Daemon::start();
    let sock = udp("127.0.0.31");
    let me = sock.local_addr().unwrap();
    let t = d.target();
    let cases = [
        (
            "bad Request-URI",
            request("INVITE <not a uri>", "INVITE", me, "m1", "", ""),
            "SIP/2.0 400 Malformed Request-URI",
            "m1",
        ),
        (
            "CSeq method mismatch",
            request(&format!("INVITE sip:8031@{t}"), "BYE", me, "m2", "", ""),
            "SIP/2.0 400 CSeq method does not match request method",
            "m2",
        ),
        (
            "Content-Length beyond the datagram",
            request(
                &format!("MESSAGE sip:8031@{t}"),
                "MESSAGE",
                me,
                "m3",
                "Content-Type: text/plain\r\n",
                "hello",
            )
            .replace("Content-Length: 5", "Content-Length: 500"),
            "SIP/2.0 400 Content-Length larger than message body",
            "m3",
        ),
        (
            "unknown method",
            request(&format!("FOOBAR sip:8031@{t}"), "FOOBAR", me, "m4", "", ""),
            "SIP/2.0 501 Not Implemented",
            "m4",
        ),
    ];
    for (what, msg, status_line, branch) in &cases {
        sock.send_to(msg.as_bytes(), d.addr()).unwrap();
        let reply = recv_final(&sock, ANSWER)
            .unwrap_or_else(|| panic!("{what}: no answer; log:\n{}", d.log()));
        assert_eq!(first_line(&reply), *status_line, "{what}:\n{reply}");
        // It answers this request: Via branch and Call-ID echoed, To tagged (§8.2.6.2).
        assert!(
            reply.contains(&format!("branch=z9hG4bK{branch}")),
            "{what}: Via not echoed:\n{reply}"
        );
        assert!(
            reply.contains(&format!("Call-ID: {branch}@bad")),
            "{what}: Call-ID not echoed:\n{reply}"
        );
        assert!(
            reply
                .lines()
                .any(|l| l.starts_with("To:") && l.contains("tag=")),
            "{what}: To without tag:\n{reply}"
        );
    }

    // Nothing to address an answer to: silence.
    let mut junk: Vec<(&str, Vec<u8>)> = vec![
        (
            "binary garbage",
            (0u8..=255).cycle().skip(7).step_by(13).take(300).collect(),
        ),
        ("text garbage", b"hello switchboard\r\n\r\n".to_vec()),
        ("empty datagram", Vec::new()),
        (
            "request line only",
            format!("INVITE sip:8031@{t} SIP/2.0\r\n\r\n").into_bytes(),
        ),
    ];
    let no_call_id = request(&format!("INVITE sip:8031@{t}"), "INVITE", me, "m5", "", "")
        .replace("Call-ID: m5@bad\r\n", "");
    junk.push(("no Call-ID", no_call_id.into_bytes()));
    let no_via = request("INVITE <not a uri>", "INVITE", me, "m6", "", "")
        .replace(&format!("Via: SIP/2.0/UDP {me};branch=z9hG4bKm6\r\n"), "");
    junk.push(("bad URI and no Via", no_via.into_bytes()));
    for (what, bytes) in &junk {
        sock.send_to(bytes, d.addr()).unwrap();
        if let Some(reply) = recv_final(&sock, SILENCE) {
            panic!("{what} was answered:\n{reply}");
        }
    }
    assert_answers_options(&d, &sock, "after-garbage");
    assert!(d.alive());
}

/// A small deterministic generator for junk (xorshift64*): no dependency, same junk every run.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One junk datagram number `i` from `from`: random bytes, a truncated INVITE, a stranger's MESSAGE
/// (policy junk: 403), or a REGISTER with a guessed password (401). Each has its own branch, so none
/// is absorbed as a retransmission.
fn junk_datagram(rng: &mut Junk, i: usize, from: SocketAddr, target: &str) -> Vec<u8> {
    let branch = format!("fl{}x{i}", from.port());
    match i % 10 {
        0..=4 => {
            let len = 1 + rng.below(1400);
            (0..len).map(|_| rng.next() as u8).collect()
        }
        5..=7 => {
            let full = format!(
                "INVITE sip:8012@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
To: <sip:8012@{target}>\r\nFrom: <sip:13800000000@{from}>;tag={branch}\r\nCall-ID: {branch}@flood\r\nCSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\nContent-Length: 40\r\n\r\nv=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
            );
            let cut = 1 + rng.below(full.len() - 1);
            full.as_bytes()[..cut].to_vec()
        }
        8 => request(&format!("MESSAGE sip:8012@{target}"), "MESSAGE", from, &branch, "", "").into_bytes(),
        _ => format!(
            "REGISTER sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
To: <sip:8012@{target}>\r\nFrom: <sip:8012@{target}>;tag={branch}\r\nCall-ID: {branch}@flood\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:8012@{from}>\r\nAuthorization: Digest username=\"8012\", realm=\"{REALM}\", nonce=\"guess{i}\", \
uri=\"sip:{target}\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c{i}\"\r\n\
Content-Length: 0\r\n\r\n"
        )
        .into_bytes(),
    }
}

#[test]
fn junk_flood_keeps_the_daemon_its_registrations_and_its_log_bounded() {
    let mut d = Daemon::start_with(Settings {
        t1_ms: 100,
        ..Settings::default()
    });
    let agent_port = free_port("127.0.0.32");
    register(&d, "8012", "127.0.0.32", agent_port, "u1");

    let probe = udp("127.0.0.35");
    let lines_before = d.log().lines().count();
    const PER_SENDER: usize = 10_000;
    let flood_limit = Duration::from_secs(10);
    let flood_start = Instant::now();
    let senders: Vec<_> = ["127.0.0.33", "127.0.0.34"]
        .into_iter()
        .enumerate()
        .map(|(k, ip)| {
            let dest = d.addr();
            let target = d.target();
            std::thread::spawn(move || {
                let sock = UdpSocket::bind((ip, 0)).unwrap();
                let from = sock.local_addr().unwrap();
                let mut rng = Junk(0x9e37_79b9_7f4a_7c15 ^ (k as u64 + 1));
                let start = Instant::now();
                let mut sent = 0;
                for i in 0..PER_SENDER {
                    if start.elapsed() > flood_limit {
                        break;
                    }
                    let bytes = junk_datagram(&mut rng, i, from, &target);
                    // Loopback may refuse a burst (ENOBUFS); junk lost on our side is fine.
                    if sock.send_to(&bytes, dest).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    let sent: usize = senders
        .into_iter()
        .map(|h| h.join().expect("flood thread"))
        .sum();
    assert!(
        sent >= PER_SENDER,
        "the flood hardly happened: {sent} datagrams sent"
    );

    // The core takes datagrams in order: once this is answered, the junk before it was handled.
    assert!(
        d.alive(),
        "the daemon died under the flood; log:\n{}",
        d.log()
    );
    // The probe itself may be dropped while the backlog drains (a full queue drops, the peer
    // retransmits): try a few times.
    let answered = (0..5).any(|n| {
        let from = probe.local_addr().unwrap();
        probe
            .send_to(
                options(&d.target(), from, &format!("after-flood{n}")).as_bytes(),
                d.addr(),
            )
            .unwrap();
        recv_final(&probe, ANSWER).is_some_and(|r| r.starts_with("SIP/2.0 200 "))
    });
    assert!(
        answered,
        "no answer to OPTIONS after the flood; log tail:\n{}",
        tail(&d.log())
    );
    let log = d.log();
    let junk_lines = log.lines().count() - lines_before;
    eprintln!(
        "flood: {sent} datagrams sent in {:?}; {junk_lines} log lines",
        flood_start.elapsed()
    );
    assert!(
        junk_lines <= 60,
        "{sent} junk datagrams produced {junk_lines} log lines (must be rate-limited); the last ones:\n{}",
        tail(&log)
    );

    // The registration survived: a trunk call still reaches the agent's phone, with no new REGISTER.
    let ap = agent_port.to_string();
    let uas = sipp(
        "agent phone",
        &[
            "-sf",
            &scenario("uas.xml"),
            "-s",
            "8012",
            "-i",
            "127.0.0.32",
            "-p",
            &ap,
            "-m",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let tp = free_port("127.0.0.2").to_string();
    let (uac_ok, uac_diag) = sipp(
        "trunk caller",
        &[
            &d.target(),
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "8012",
            "-i",
            "127.0.0.2",
            "-p",
            &tp,
            "-m",
            "1",
        ],
    )
    .finish(LIMIT);
    let (uas_ok, uas_diag) = uas.finish(LIMIT);
    assert!(
        uac_ok && uas_ok,
        "{uac_diag}\n{uas_diag}\n--- daemon\n{}",
        d.log()
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[test]
fn oversized_datagram_gets_513_and_oversized_tcp_message_closes_the_connection() {
    // The stall timeout stays at its 10 s default, so a prompt close can only be the size limit.
    let d = Daemon::start_with(Settings {
        max_message_bytes: 4096,
        ..Settings::default()
    });
    let sock = udp("127.0.0.36");
    let me = sock.local_addr().unwrap();
    let body = "x".repeat(6000);
    let big = request(
        &format!("MESSAGE sip:8036@{}", d.target()),
        "MESSAGE",
        me,
        "big1",
        "Content-Type: text/plain\r\n",
        &body,
    );
    sock.send_to(big.as_bytes(), d.addr()).unwrap();
    let reply = recv_final(&sock, ANSWER)
        .unwrap_or_else(|| panic!("no answer to an oversized datagram; log:\n{}", d.log()));
    assert_eq!(
        first_line(&reply),
        "SIP/2.0 513 Message Too Large",
        "{reply}"
    );
    assert!(reply.contains("Call-ID: big1@bad"), "{reply}");

    // Oversized and unanswerable: nothing.
    sock.send_to(&vec![b'z'; 6000], d.addr()).unwrap();
    assert_eq!(
        recv_final(&sock, SILENCE),
        None,
        "oversized garbage was answered"
    );

    // Over TCP: a head that declares a body beyond the limit closes the connection.
    let mut tcp = TcpStream::connect(d.addr()).expect("connect TCP");
    let head = request(
        &format!("MESSAGE sip:8036@{}", d.target()),
        "MESSAGE",
        me,
        "big2",
        "Content-Type: text/plain\r\n",
        "",
    )
    .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
    .replace("Content-Length: 0", "Content-Length: 100000");
    tcp.write_all(head.as_bytes()).unwrap();
    let closed = closed_within(&mut tcp, Duration::from_secs(3), true);
    assert!(
        closed.is_some(),
        "an oversized TCP message left the connection open"
    );

    assert_answers_options(&d, &sock, "after-oversized");
}

/// Reads until the peer closes, up to `limit`; returns how long that took. Stray bytes (a response
/// the daemon sent before closing) are skipped. `reset_ok`: a reset also counts as closed.
fn closed_within(tcp: &mut TcpStream, limit: Duration, reset_ok: bool) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        tcp.set_read_timeout(Some(
            limit
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match tcp.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) if reset_ok && e.kind() == ErrorKind::ConnectionReset => {
                return Some(start.elapsed())
            }
            Err(e) => panic!("TCP read: {e}"),
        }
    }
    None
}

#[test]
fn stalled_tcp_peer_is_cut_off_while_udp_is_still_answered() {
    let d = Daemon::start_with(Settings {
        tcp_partial_timeout_s: 1,
        ..Settings::default()
    });
    let mut tcp = TcpStream::connect(d.addr()).expect("connect TCP");
    let me = tcp.local_addr().unwrap();

    // A whole message first: the connection works, and the stall clock is not running between messages.
    let whole = options(&d.target(), me, "tcp1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    tcp.write_all(whole.as_bytes()).unwrap();
    tcp.set_read_timeout(Some(ANSWER)).unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).expect("an answer over TCP");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("SIP/2.0 200 "), "{reply}");

    // Half a message, then silence.
    let half = options(&d.target(), me, "tcp2").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    tcp.write_all(&half.as_bytes()[..half.len() / 2]).unwrap();
    let stalled_at = Instant::now();

    // Meanwhile UDP is served.
    let sock = udp("127.0.0.37");
    assert_answers_options(&d, &sock, "during-stall");

    let closed =
        closed_within(&mut tcp, Duration::from_secs(3), false).map(|_| stalled_at.elapsed());
    let Some(after) = closed else {
        panic!(
            "the stalled connection was still open after 3 s; log:\n{}",
            d.log()
        )
    };
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the 1 s partial-message timeout"
    );
    assert_answers_options(&d, &sock, "after-stall");
}

/// Wait until `cond` holds, polling up to `limit`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// An INVITE from the trunk to `user`.
fn trunk_invite(d: &Daemon, sock: &UdpSocket, user: &str, branch: &str) -> String {
    let from = sock.local_addr().unwrap();
    let t = d.target();
    format!(
        "INVITE sip:{user}@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
To: <sip:{user}@{t}>\r\nFrom: <sip:13800000000@{from}>;tag={branch}\r\nCall-ID: {branch}@trunk\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
}

/// What a drain truthfully guarantees: open transactions finish. An answered INVITE's transactions
/// stay in RFC 6026's Accepted state for 64·T1, so a BYE within that window is routed (this test's BYE
/// comes 0.2 s after the ACK). A BYE later than that is lost once the daemon has exited: it tracks no
/// dialogs yet, so it cannot wait for them. Media is end to end, so the call itself survives.
#[test]
fn sigterm_lets_a_ringing_call_finish_refuses_new_calls_and_exits_0() {
    // T1 = 100 ms: transactions linger 64·T1 = 6.4 s after their end, which bounds the drain here.
    let mut d = Daemon::start_with(Settings {
        t1_ms: 100,
        ..Settings::default()
    });
    let agent_port = free_port("127.0.0.38");
    register(&d, "8015", "127.0.0.38", agent_port, "u1");
    let ap = agent_port.to_string();
    let uas = sipp(
        "slow agent phone",
        &[
            "-sf",
            &scenario("uas_slow_answer.xml"),
            "-s",
            "8015",
            "-i",
            "127.0.0.38",
            "-p",
            &ap,
            "-m",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let tp = free_port("127.0.0.2").to_string();
    let uac = sipp(
        "trunk caller",
        &[
            &d.target(),
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "8015",
            "-i",
            "127.0.0.2",
            "-p",
            &tp,
            "-m",
            "1",
        ],
    );

    // SIGTERM while it rings: the agent has sent 180 and waits 1.5 s before answering.
    let ringing = wait_for(Duration::from_secs(5), || {
        uas.messages().contains("SIP/2.0 180 Ringing")
    });
    assert!(
        ringing,
        "the call never rang:\n{}\n--- daemon\n{}",
        uas.messages(),
        d.log()
    );
    d.signal("TERM");
    let term_at = Instant::now();
    assert!(
        wait_for(Duration::from_secs(2), || d
            .log()
            .contains("SIGTERM: draining")),
        "{}",
        d.log()
    );

    // A new call after SIGTERM is refused with 503 and a Retry-After.
    let trunk = udp("127.0.0.2");
    trunk
        .send_to(
            trunk_invite(&d, &trunk, "8015", "late1").as_bytes(),
            d.addr(),
        )
        .unwrap();
    let reply = recv_final(&trunk, ANSWER).unwrap_or_else(|| {
        panic!(
            "no answer to a new INVITE while draining; log:\n{}",
            d.log()
        )
    });
    assert_eq!(
        first_line(&reply),
        "SIP/2.0 503 Service Unavailable",
        "{reply}"
    );
    assert!(
        reply.lines().any(|l| l.starts_with("Retry-After:")),
        "{reply}"
    );

    // The ringing call is answered, acknowledged and hung up through the draining proxy.
    let (uac_ok, uac_diag) = uac.finish(LIMIT);
    let (uas_ok, uas_diag) = uas.finish(LIMIT);
    assert!(
        uac_ok && uas_ok,
        "{uac_diag}\n{uas_diag}\n--- daemon\n{}",
        d.log()
    );
    assert!(uac_diag.contains("SIP/2.0 200 OK"), "{uac_diag}");
    let bye_via = uas_diag
        .split("BYE sip:")
        .nth(1)
        .and_then(|m| m.lines().find(|l| l.starts_with("Via:")))
        .unwrap_or("");
    assert!(
        bye_via.contains("branch=z9hG4bKsb"),
        "BYE did not pass the proxy: {bye_via}"
    );

    // Then the daemon leaves by itself, cleanly, within the drain limit.
    let status = d.wait_exit(LIMIT + Duration::from_secs(5));
    let Some(status) = status else {
        panic!("still running {LIMIT:?} after SIGTERM; log:\n{}", d.log())
    };
    eprintln!("drained and exited {:?} after SIGTERM", term_at.elapsed());
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    assert!(d.log().contains("drained; exiting"), "{}", d.log());
}

#[test]
fn sigint_exits_at_once_even_with_open_transactions() {
    let mut d = Daemon::start();
    // A registered phone that is gone: an INVITE to it keeps a client transaction open (Timer B, 32 s).
    let agent_port = free_port("127.0.0.39");
    register(&d, "8016", "127.0.0.39", agent_port, "u1");
    let trunk = udp("127.0.0.2");
    trunk
        .send_to(
            trunk_invite(&d, &trunk, "8016", "open1").as_bytes(),
            d.addr(),
        )
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || d.log().contains("routing call")),
        "{}",
        d.log()
    );

    let start = Instant::now();
    d.signal("INT");
    let status = d.wait_exit(Duration::from_secs(2));
    let Some(status) = status else {
        panic!("still running 2 s after SIGINT; log:\n{}", d.log())
    };
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(d.log().contains("SIGINT: exiting now"), "{}", d.log());
    assert!(
        !d.log().contains("drained; exiting"),
        "SIGINT drained instead of exiting: {}",
        d.log()
    );
}

#[test]
fn sigterm_after_registrations_only_exits_within_a_few_seconds() {
    // Completed REGISTER transactions linger for Timer J (32 s) to absorb retransmissions; they
    // must not hold a graceful shutdown up.
    let mut d = Daemon::start();
    let port = free_port("127.0.0.39");
    register(&d, "8016", "127.0.0.39", port, "u1");
    let started = std::time::Instant::now();
    d.signal("TERM");
    let status = d
        .wait_exit(Duration::from_secs(8))
        .expect("the daemon did not exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
}
