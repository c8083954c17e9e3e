//! The 49 RFC 4475 torture messages sent to the real daemon over UDP, each once, in the RFC's order:
//! the daemon answers or stays silent as the RFC expects, and still answers OPTIONS afterwards.
//!
//! What the core does with each message, and why, is in `crates/sip-core/tests/rfc4475.rs`. Here the
//! policy is on top: a request the core hands on comes from a stranger (127.0.0.7x is no trunk and
//! has no credentials), so the daemon answers it as a stranger: a REGISTER is challenged (401), a
//! request to a number or a foreign domain is refused (403), an OPTIONS to the switchboard itself is
//! answered 200.
//!
//! A response to a request without `rport` goes to the source address and the Via's port (§18.2.2),
//! so the sender binds the port its message's Via names: 5060, or 5050 for `quotbal`.

mod common;

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// How long to wait for an answer that must come.
const ANSWER: Duration = Duration::from_secs(2);

/// How long silence must last before "no answer" counts.
const SILENCE: Duration = Duration::from_millis(400);

/// name → the final status the daemon sends (None: it sends nothing final).
const EXPECTED: &[(&str, Option<u16>)] = &[
    // §3.1.1 valid messages.
    ("wsinv", Some(481)),   // its To has a tag: in a dialog we do not hold
    ("intmeth", Some(501)), // unknown method
    ("esc01", Some(403)),   //
    ("escnull", Some(401)), // REGISTER: challenged
    ("esc02", Some(501)),   // unknown method
    ("lwsdisp", Some(403)), //
    ("longreq", Some(403)), //
    ("dblreq", Some(401)),  // REGISTER: challenged, the trailing INVITE ignored
    ("semiuri", Some(403)), //
    ("transports", Some(403)),
    ("mpart01", Some(403)), // MESSAGE from a stranger
    ("unreason", None),     // a response matching nothing: dropped
    ("noreason", None),     //
    // §3.1.2 invalid messages.
    ("badinv01", Some(400)),
    ("clerr", Some(400)),
    ("ncl", Some(400)),
    ("scalar02", Some(400)),
    ("scalarlg", None), // a broken response: dropped
    ("quotbal", Some(400)),
    ("ltgtruri", Some(400)),
    ("lwsruri", Some(400)),
    ("lwsstart", Some(400)),
    ("trws", Some(400)),
    ("escruri", Some(400)),
    ("baddate", Some(403)),  // Date is ignored
    ("regbadct", Some(401)), // REGISTER: challenged before its Contact matters
    ("badaspec", Some(403)), // accepted (the RFC allows the liberal path)
    ("baddn", Some(400)),
    ("badvers", Some(505)),
    ("mismatch01", Some(400)),
    ("mismatch02", Some(501)),
    ("bigcode", None), // a broken response: dropped
    // §3.2–3.4.
    ("badbranch", Some(403)),
    ("insuf", None), // no Call-ID, From or To to answer with: dropped
    ("unkscm", Some(416)),
    ("novelsc", Some(416)),
    ("unksm2", Some(401)), // REGISTER: challenged before its To matters
    ("bext01", Some(420)),
    ("invut", Some(403)),
    ("regaut01", Some(401)), // unknown scheme: a new challenge in one we understand
    ("multi01", Some(400)),
    ("mcl01", Some(400)),
    ("bcast", None), // a 200 with a broadcast Via is never forwarded
    ("zeromf", Some(483)),
    ("cparam01", Some(401)),
    ("cparam02", Some(401)), // cparam01's 401 again: see ABSORBED
    ("regescrt", Some(401)), // escnull's 401 again: see ABSORBED
    ("sdp01", Some(403)),
    ("inv2543", Some(403)),
];

/// Messages that reuse an earlier message's branch, sent-by and method: the daemon takes them as
/// retransmissions of that transaction (§17.2.3) and repeats its last response, which carries the
/// earlier message's Call-ID. (Each torture message is meant to be tested alone; sent in one run,
/// these two meet the transaction layer.) name → the message whose answer comes back.
const ABSORBED: &[(&str, &str)] = &[("cparam02", "cparam01"), ("regescrt", "escnull")];

/// `shared/rfc4475` in the nearest ancestor of the crate that has one.
fn rfc4475_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("shared/rfc4475"))
        .find(|d| d.is_dir())
        .expect("shared/rfc4475 in an ancestor of the crate")
}

/// A UDP socket on `port` of the first free address among 127.0.0.71–79.
fn bind_port(port: u16) -> UdpSocket {
    (71..80)
        .find_map(|last| UdpSocket::bind(format!("127.0.0.{last}:{port}")).ok())
        .unwrap_or_else(|| panic!("no free 127.0.0.7x:{port}"))
}

/// The Call-ID of a message (long or compact form).
fn call_id(msg: &str) -> Option<&str> {
    msg.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim())
    })
}

/// The first final response on `sock` within `wait` (provisionals skipped) whose Call-ID is `cid`
/// (None: a response without one). Retransmissions of earlier answers (a final response to an
/// INVITE repeats until it is acknowledged) are skipped.
fn recv_final(sock: &UdpSocket, wait: Duration, cid: Option<&str>) -> Option<String> {
    let end = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let s = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !s.starts_with("SIP/2.0 1") && call_id(&s) == cid {
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

fn status_of(reply: &str) -> Option<u16> {
    reply.get(8..11)?.parse().ok()
}

#[test]
fn every_torture_message_is_answered_or_dropped_and_the_daemon_lives_on() {
    let mut d = Daemon::start();
    let s5060 = bind_port(5060);
    let s5050 = bind_port(5050);
    let dir = rfc4475_dir();
    let mut wrong = Vec::new();
    for &(name, expected) in EXPECTED {
        let bytes = std::fs::read(dir.join(format!("{name}.dat"))).expect("torture message");
        let sock = if name == "quotbal" { &s5050 } else { &s5060 };
        sock.send_to(&bytes, d.addr()).unwrap();
        let answered = ABSORBED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(name, |(_, first)| *first);
        let answered = std::fs::read(dir.join(format!("{answered}.dat"))).unwrap();
        let answered = String::from_utf8_lossy(&answered);
        let wait = if expected.is_some() { ANSWER } else { SILENCE };
        let reply = recv_final(sock, wait, call_id(&answered));
        let got = reply.as_deref().and_then(status_of);
        if got != expected {
            wrong.push(format!(
                "{name}: expected {expected:?}, got {got:?}: {}",
                reply
                    .as_deref()
                    .and_then(|r| r.lines().next())
                    .unwrap_or("")
            ));
        }
        assert!(d.alive(), "the daemon died on {name}; log:\n{}", d.log());
    }
    assert_eq!(EXPECTED.len(), 49);
    assert!(
        wrong.is_empty(),
        "\n{}\n--- daemon\n{}",
        wrong.join("\n"),
        d.log()
    );

    // Still serving: an OPTIONS to the switchboard itself gets its 200.
    let probe = UdpSocket::bind("127.0.0.70:0").unwrap();
    let from = probe.local_addr().unwrap();
    probe
        .send_to(
            options(&d.target(), from, "after-torture").as_bytes(),
            d.addr(),
        )
        .unwrap();
    let reply = recv_final(&probe, ANSWER, Some("after-torture@probe"))
        .unwrap_or_else(|| panic!("no answer to OPTIONS after the torture; log:\n{}", d.log()));
    assert!(reply.starts_with("SIP/2.0 200 "), "{reply}");
    assert!(d.alive());
}
