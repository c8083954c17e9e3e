//! The core's lanes on the wire (`switchboard::lanes`): an INVITE goes ahead of ACKs, BYEs,
//! OPTIONS... that arrived shortly before it (`[sip] invite_overtake_ms`), and with the knob at 0
//! arrival order is kept.
//!
//! The daemon is frozen (SIGSTOP) while a trunk (127.0.0.2) sends a burst of OPTIONS and then one
//! INVITE to a number no plan knows, so all of it waits in the socket; resumed, the daemon reads
//! the lot within a few messages and answers each at once (200 for an OPTIONS, 404 for the
//! INVITE). Everything goes from one socket and every answer comes back to it, so the order the
//! socket sees is the order the daemon handled them in.

mod common;

use std::time::Duration;

use common::*;

const BURST: usize = 500;

/// How many OPTIONS were answered before the INVITE and after it, with `overtake_ms` in the config.
fn options_answered_around_the_invite(overtake_ms: u64) -> (usize, usize) {
    let d = Daemon::start_with(Settings {
        config_edits: vec![(
            "invite_overtake_ms = 10".into(),
            format!("invite_overtake_ms = {overtake_ms}"),
        )],
        ..Settings::default()
    });
    let text = std::fs::read_to_string(&d.config).unwrap();
    assert!(
        text.contains(&format!("invite_overtake_ms = {overtake_ms}\n")),
        "the config edit did not apply"
    );
    let s = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    let me = s.local_addr().unwrap();
    // Room for every answer should the reader fall behind (capped by net.core.rmem_max).
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let target = d.target();
    let reader = {
        let s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 65535];
            while let Ok(n) = s.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let cseq = text
                    .lines()
                    .find_map(|l| l.strip_prefix("CSeq: "))
                    .unwrap_or("?")
                    .to_owned();
                let status = text.get(8..11).unwrap_or("?").to_owned();
                seen.push((cseq, status));
            }
            seen
        })
    };
    d.signal("STOP");
    for k in 0..BURST {
        s.send_to(
            options(&target, me, &format!("opt{k}")).as_bytes(),
            d.addr(),
        )
        .unwrap();
    }
    let invite = format!(
        "INVITE sip:99999999@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKlanes1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:09711234567@127.0.0.2>;tag=b\r\nTo: <sip:99999999@127.0.0.1>\r\n\
         Call-ID: lanes1\r\nCSeq: 1 INVITE\r\nContact: <sip:09711234567@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(invite.as_bytes(), d.addr()).unwrap();
    d.signal("CONT");
    let seen = reader.join().unwrap();
    let options_ok = seen
        .iter()
        .filter(|(c, st)| c.ends_with("OPTIONS") && st == "200")
        .count();
    // A few answers may be lost to the reader's socket buffer on a busy machine; the order of
    // the rest still tells.
    assert!(
        options_ok >= BURST * 9 / 10,
        "{options_ok} of {BURST} OPTIONS answered 200: {:?}\n{}",
        &seen[..seen.len().min(20)],
        d.log()
    );
    let at = seen
        .iter()
        .position(|(c, st)| c.ends_with("INVITE") && st != "100")
        .unwrap_or_else(|| panic!("no final answer to the INVITE\n{}", d.log()));
    assert_eq!(
        seen[at].1, "404",
        "the INVITE to an unknown number: {seen:?}"
    );
    // Refused within the batch it came in, it gets no 100 Trying at all (ARCHITECTURE.md,
    // Threads: a held 100 is dropped when the INVITE's own answer goes first).
    assert!(
        !seen
            .iter()
            .any(|(c, st)| c.ends_with("INVITE") && st == "100"),
        "a 100 Trying for an INVITE answered at once: {seen:?}"
    );
    let options =
        |part: &[(String, String)]| part.iter().filter(|(c, _)| c.ends_with("OPTIONS")).count();
    eprintln!(
        "overtake {overtake_ms} ms: {} OPTIONS answered before the INVITE, {} after",
        options(&seen[..at]),
        options(&seen[at..])
    );
    (options(&seen[..at]), options(&seen[at..]))
}

/// Both settings in one test, one after the other: a second daemon frozen and flooded in
/// parallel would only blur the order the first one shows.
#[test]
fn an_invite_goes_ahead_of_options_that_came_just_before_it_unless_told_not_to() {
    let (before, after) = options_answered_around_the_invite(1000);
    // The core takes the INVITE as soon as it is in its lane: after the message it resumed in and
    // the few it handled before its intake had read the socket to the INVITE.
    assert!(
        before <= 64 && after >= BURST * 9 / 10 - 64,
        "the INVITE waited for {before} of the {BURST} OPTIONS that came before it ({after} after it)"
    );
    let (before, after) = options_answered_around_the_invite(0);
    assert_eq!(
        after, 0,
        "with invite_overtake_ms = 0 the INVITE is answered after every OPTIONS sent before it ({before} were answered before it)"
    );
}
