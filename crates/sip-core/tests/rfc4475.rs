//! The 49 SIP torture messages of RFC 4475, each fed to `message::parse` and to a `Proxy` (over UDP),
//! with what the RFC expects of a proxy for that message written down in [`TABLE`].
//!
//! The messages are read from `shared/rfc4475/` in an ancestor of this crate (the checkout sits next to
//! a `shared/` folder); they are never copied into the repository.
//!
//! Decisions worth knowing:
//! - **Unknown methods get 501** (`intmeth`, `esc02`, `mismatch02`). RFC 3261 §21.5.2 says proxies
//!   forward requests regardless of method, and §16.3 has no method check. The switchboard is no
//!   general proxy: it relays no out-of-dialog request for a foreign domain, so for every request that
//!   reaches its policy it is the UAS, and a UAS that supports a method for no user answers 501
//!   (§8.2.1). RFC 4475 §3.1.2.18 calls 501 the better answer at proxies. The limit: an extension
//!   method sent in a dialog along our Record-Route also gets 501 instead of being forwarded (rsip's
//!   `Method` has no extension variant); our phones and trunks use only the methods it knows.
//! - **Missing Call-ID/From/To is dropped** (`insuf`, §3.3.1 says "ideally 400"). A response must
//!   copy those headers (§8.2.6.2); without them it is itself malformed and no client could match it
//!   to a dialog. Silence also gives a scanner nothing to reflect.
//! - `badaspec` (spaces inside `< >`) and `baddate` are accepted, as the RFC allows the liberal path;
//!   `baddn` has no empty line after its headers in the RFC's archive, which is refused first (a
//!   variant with the line is refused for its display name, below).
//! - `badbranch` (a bare `z9hG4bK`) is matched the RFC 2543 way rather than refused.

use std::path::PathBuf;

use sip_core::message::{parse, Message, ParseError, Peer, Transport};
use sip_core::proxy::{Event, Listener, Output, Proxy, ProxyConfig, Transmit};
use sip_core::time::Instant;
use sip_core::transaction::TxKey;

/// What a proxy does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A request that parses and goes to the application (`Event::Request`); an INVITE gets its 100.
    ToApplication,
    /// A request that parses and that the proxy itself answers in a server transaction (483, 420).
    ProxyAnswers(u16),
    /// A request that `parse` refuses with this status; the proxy sends that answer statelessly.
    Refused(u16),
    /// A response that parses; it matches no client transaction, so the proxy sends nothing.
    StrayResponse(u16),
    /// Nothing in it can be answered: `parse` drops it and the proxy sends nothing.
    Dropped,
}

use Expect::*;

/// name → (RFC 4475 section, what the RFC expects of a proxy, our outcome).
const TABLE: &[(&str, &str, Expect)] = &[
    // §3.1.1 valid messages: all must parse.
    ("wsinv", "3.1.1.1 short tortuous INVITE", ToApplication),
    (
        "intmeth",
        "3.1.1.2 wide range of valid characters (unknown method)",
        Refused(501),
    ),
    (
        "esc01",
        "3.1.1.3 valid use of the % escaping mechanism",
        ToApplication,
    ),
    ("escnull", "3.1.1.4 escaped nulls in URIs", ToApplication),
    (
        "esc02",
        "3.1.1.5 % when it is not an escape (unknown method)",
        Refused(501),
    ),
    (
        "lwsdisp",
        "3.1.1.6 no LWS between display name and <",
        ToApplication,
    ),
    (
        "longreq",
        "3.1.1.7 long values in header fields",
        ToApplication,
    ),
    (
        "dblreq",
        "3.1.1.8 extra trailing octets in a UDP datagram",
        ToApplication,
    ),
    (
        "semiuri",
        "3.1.1.9 semicolon-separated parameters in URI user part",
        ToApplication,
    ),
    (
        "transports",
        "3.1.1.10 varied and unknown transport types",
        ToApplication,
    ),
    ("mpart01", "3.1.1.11 multipart MIME message", ToApplication),
    (
        "unreason",
        "3.1.1.12 unusual reason phrase",
        StrayResponse(200),
    ),
    (
        "noreason",
        "3.1.1.13 empty reason phrase",
        StrayResponse(100),
    ),
    // §3.1.2 invalid messages: 400 (505 for the version, 501 for the unknown method), or dropped when
    // unanswerable; a response is dropped.
    (
        "badinv01",
        "3.1.2.1 extraneous header field separators",
        Refused(400),
    ),
    (
        "clerr",
        "3.1.2.2 Content-Length larger than message",
        Refused(400),
    ),
    ("ncl", "3.1.2.3 negative Content-Length", Refused(400)),
    (
        "scalar02",
        "3.1.2.4 request scalar fields with overlarge values",
        Refused(400),
    ),
    (
        "scalarlg",
        "3.1.2.5 response scalar fields with overlarge values",
        Dropped,
    ),
    (
        "quotbal",
        "3.1.2.6 unterminated quoted string in display name",
        Refused(400),
    ),
    ("ltgtruri", "3.1.2.7 <> enclosing Request-URI", Refused(400)),
    (
        "lwsruri",
        "3.1.2.8 malformed SIP Request-URI (embedded LWS)",
        Refused(400),
    ),
    (
        "lwsstart",
        "3.1.2.9 multiple SP separating Request-Line elements",
        Refused(400),
    ),
    (
        "trws",
        "3.1.2.10 SP characters at end of Request-Line",
        Refused(400),
    ),
    (
        "escruri",
        "3.1.2.11 escaped headers in SIP Request-URI",
        Refused(400),
    ),
    (
        "baddate",
        "3.1.2.12 invalid time zone in Date (a proxy ignores Date)",
        ToApplication,
    ),
    (
        "regbadct",
        "3.1.2.13 name-addr URI not in <> (Contact: policy's)",
        ToApplication,
    ),
    (
        "badaspec",
        "3.1.2.14 spaces within addr-spec (liberal: accepted)",
        ToApplication,
    ),
    (
        "baddn",
        "3.1.2.15 non-token characters in display name",
        Refused(400),
    ),
    ("badvers", "3.1.2.16 unknown protocol version", Refused(505)),
    (
        "mismatch01",
        "3.1.2.17 start line and CSeq method mismatch",
        Refused(400),
    ),
    (
        "mismatch02",
        "3.1.2.18 unknown method with CSeq method mismatch",
        Refused(501),
    ),
    ("bigcode", "3.1.2.19 overlarge response code", Dropped),
    // §3.2 transaction layer.
    (
        "badbranch",
        "3.2.1 missing transaction identifier (RFC 2543 matching)",
        ToApplication,
    ),
    // §3.3 application layer.
    ("insuf", "3.3.1 missing required header fields", Dropped),
    (
        "unkscm",
        "3.3.2 Request-URI with unknown scheme",
        Refused(416),
    ),
    (
        "novelsc",
        "3.3.3 Request-URI with known but atypical scheme",
        Refused(416),
    ),
    (
        "unksm2",
        "3.3.4 unknown URI schemes in header fields",
        ToApplication,
    ),
    (
        "bext01",
        "3.3.5 Proxy-Require and Require",
        ProxyAnswers(420),
    ),
    ("invut", "3.3.6 unknown Content-Type", ToApplication),
    (
        "regaut01",
        "3.3.7 unknown authorization scheme",
        ToApplication,
    ),
    (
        "multi01",
        "3.3.8 multiple values in single-value required fields",
        Refused(400),
    ),
    (
        "mcl01",
        "3.3.9 multiple Content-Length values",
        Refused(400),
    ),
    (
        "bcast",
        "3.3.10 200 OK with broadcast Via (proxies drop it)",
        StrayResponse(200),
    ),
    ("zeromf", "3.3.11 Max-Forwards of zero", ProxyAnswers(483)),
    (
        "cparam01",
        "3.3.12 REGISTER with a contact parameter",
        ToApplication,
    ),
    (
        "cparam02",
        "3.3.13 REGISTER with a url parameter",
        ToApplication,
    ),
    (
        "regescrt",
        "3.3.14 REGISTER with a URL-escaped header",
        ToApplication,
    ),
    (
        "sdp01",
        "3.3.15 unacceptable Accept offering",
        ToApplication,
    ),
    // §3.4 backward compatibility.
    (
        "inv2543",
        "3.4.1 INVITE with RFC 2543 syntax",
        ToApplication,
    ),
];

/// `shared/rfc4475` in the nearest ancestor of the crate that has one.
fn rfc4475_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("shared/rfc4475"))
        .find(|d| d.is_dir())
        .expect("shared/rfc4475 in an ancestor of the crate")
}

fn torture(name: &str) -> Vec<u8> {
    let path = rfc4475_dir().join(format!("{name}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SOURCE: &str = "192.0.2.1:5060";

fn udp(addr: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
        conn: None,
    }
}

fn proxy() -> Proxy {
    let cfg = ProxyConfig {
        listeners: vec![Listener {
            transport: Transport::Udp,
            addr: "127.0.0.1:5060".parse().unwrap(),
        }],
        rr_secret: [9; 32],
        ..ProxyConfig::default()
    };
    Proxy::new(cfg, 4475)
}

/// Feed one datagram to a fresh proxy; return what it sent and the events it raised.
fn through_proxy(bytes: &[u8]) -> (Vec<Transmit>, Vec<Event>) {
    let mut p = proxy();
    p.handle_message(Instant::ZERO, udp(SOURCE), bytes);
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    while let Some(o) = p.poll_output() {
        match o {
            Output::Transmit(t) => sent.push(t),
            Output::Event(e) => events.push(*e),
        }
    }
    (sent, events)
}

fn status_of(t: &Transmit) -> u16 {
    let line = t.bytes.split(|b| *b == b'\r').next().unwrap_or_default();
    std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix("SIP/2.0 "))
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {:?}", String::from_utf8_lossy(&t.bytes)))
}

#[test]
fn the_table_covers_every_message_once() {
    let mut on_disk: Vec<String> = std::fs::read_dir(rfc4475_dir())
        .expect("read shared/rfc4475")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "dat").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = TABLE.iter().map(|(n, _, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(listed.len(), 49, "RFC 4475 has 49 messages");
    assert_eq!(on_disk, listed);
}

#[test]
fn parse_gives_what_the_rfc_expects() {
    let mut wrong = Vec::new();
    for &(name, section, expect) in TABLE {
        let bytes = torture(name);
        let got = parse(&bytes);
        let ok = match (expect, &got) {
            (ToApplication | ProxyAnswers(_), Ok(Message::Request(_))) => true,
            (StrayResponse(s), Ok(Message::Response(r))) => r.status() == s,
            (Refused(s), Err(ParseError::Answer { status, .. })) => *status == s,
            (Dropped, Err(ParseError::Drop(_))) => true,
            _ => false,
        };
        if !ok {
            let got = match &got {
                Ok(Message::Request(r)) => format!("request {} {}", r.method(), r.uri()),
                Ok(Message::Response(r)) => format!("response {}", r.status()),
                Err(e) => e.to_string(),
            };
            wrong.push(format!(
                "{name} (§{section}): expected {expect:?}, got {got}"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn the_proxy_answers_or_drops_as_the_rfc_expects() {
    let mut wrong = Vec::new();
    for &(name, section, expect) in TABLE {
        let (sent, events) = through_proxy(&torture(name));
        let statuses: Vec<u16> = sent.iter().map(status_of).collect();
        let to_app = events.iter().any(|e| matches!(e, Event::Request { .. }));
        let ok = match expect {
            // Only a 100 Trying (for an INVITE) may precede the application's decision.
            ToApplication => to_app && statuses.iter().all(|s| *s == 100),
            ProxyAnswers(s) | Refused(s) => !to_app && statuses.last() == Some(&s),
            StrayResponse(_) | Dropped => !to_app && sent.is_empty(),
        };
        if !ok {
            wrong.push(format!(
                "{name} (§{section}): expected {expect:?}, sent {statuses:?}, to application: {to_app}"
            ));
        }
        // Every answer goes back where the request came from, to the Via's port (§18.2.2).
        for t in &sent {
            assert_eq!(t.peer.addr.ip(), udp(SOURCE).addr.ip(), "{name}");
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn refusals_are_well_formed_responses_to_the_request() {
    for &(name, _, expect) in TABLE {
        let (Refused(status) | ProxyAnswers(status)) = expect else {
            continue;
        };
        let (sent, _) = through_proxy(&torture(name));
        let last = sent.last().expect("an answer");
        let text = String::from_utf8_lossy(&last.bytes);
        let request_call_id = String::from_utf8_lossy(&torture(name))
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                ["call-id", "i"]
                    .contains(&n.trim().to_ascii_lowercase().as_str())
                    .then(|| v.trim().to_owned())
            })
            .expect("a Call-ID");
        // Checked as text: a refusal echoes what was wrong (a `;;` Via, a SIP/7.0 Via, an unknown
        // CSeq method), which our own parser rightly would not take back.
        assert!(
            text.starts_with(&format!("SIP/2.0 {status} ")),
            "{name}:\n{text}"
        );
        let has = |prefix: &str| text.lines().any(|l| l.starts_with(prefix));
        assert!(
            has(&format!("Call-ID: {request_call_id}")),
            "{name}:\n{text}"
        );
        assert!(has("Via: "), "{name}:\n{text}");
        assert!(has("CSeq: "), "{name}:\n{text}");
        assert!(has("From: "), "{name}:\n{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("To: ") && l.contains(";tag=")),
            "{name}: a final response tags To:\n{text}"
        );
        assert!(
            text.ends_with("Content-Length: 0\r\n\r\n"),
            "{name}:\n{text}"
        );
    }
}

fn request(name: &str) -> sip_core::message::Request {
    match parse(&torture(name)) {
        Ok(Message::Request(r)) => r,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn valid_messages_are_read_right() {
    // §3.1.1.1: folded lines, odd case and spacing, a leading-zero Max-Forwards, three Vias in two
    // headers, a Content-Length that stops before the datagram's end.
    let r = request("wsinv");
    assert_eq!(&*r.meta.call_id, "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(r.meta.cseq, 9);
    assert_eq!(r.meta.max_forwards, Some(68));
    assert_eq!(r.meta.via.branch.as_deref(), Some("390skdjuw"));
    assert_eq!(r.meta.via.sent_by(), ("192.0.2.2", 5060));
    assert_eq!(r.meta.via_count, 3);
    assert_eq!(r.meta.from_tag.as_deref(), Some("98asjd8"));
    assert_eq!(r.meta.to_tag.as_deref(), Some("1918181833n"));
    assert_eq!(r.body().len(), 150);
    assert_eq!(r.uri(), "sip:vivekg@chair-dnrc.example.com;unknownparam");

    // §3.1.1.3 and §3.1.1.9: the Request-URI is passed on exactly as received.
    assert_eq!(
        request("esc01").uri(),
        "sip:sips%3Auser%40example.com@example.net"
    );
    assert_eq!(
        request("semiuri").uri(),
        "sip:user;par=u%40example.net@example.com"
    );

    // §3.1.1.7: 34 Via headers in every spelling.
    assert_eq!(request("longreq").meta.via_count, 34);

    // §3.1.1.8: the INVITE after the REGISTER is trailing junk, not a body.
    let r = request("dblreq");
    assert_eq!(r.method(), sip_core::message::Method::Register);
    assert!(r.body().is_empty());

    // §3.1.1.11: a binary body survives byte for byte.
    let raw = torture("mpart01");
    let r = request("mpart01");
    let start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(r.body(), &raw[start..]);

    // §3.1.1.12–13: reason phrases are kept as sent, even when empty or not ASCII.
    let Ok(Message::Response(r)) = parse(&torture("noreason")) else {
        panic!()
    };
    assert_eq!(r.reason(), "");
    let Ok(Message::Response(r)) = parse(&torture("unreason")) else {
        panic!()
    };
    assert!(r.reason().starts_with("= 2**3 * 5**2 "), "{}", r.reason());
    assert!(!r.reason().is_ascii());

    // §3.4.1: no branch, no From tag, no Content-Length (the body is the rest of the datagram), no
    // Max-Forwards.
    let r = request("inv2543");
    assert_eq!(r.meta.via.branch, None);
    assert_eq!(r.meta.from_tag, None);
    assert_eq!(r.meta.max_forwards, None);
    assert!(String::from_utf8_lossy(r.body()).starts_with("v=0"));
}

#[test]
fn bare_magic_cookie_falls_back_to_rfc2543_matching() {
    // §3.2.1: `branch=z9hG4bK` identifies nothing; two such requests must not share a transaction.
    let r = request("badbranch");
    assert!(!r.meta.via.is_rfc3261());
    assert!(matches!(TxKey::server(&r), TxKey::Rfc2543 { .. }));
}

#[test]
fn bad_extension_names_what_is_unsupported() {
    // §3.3.5: the 420 carries Unsupported with the Proxy-Require option tags (a proxy's role).
    let (sent, _) = through_proxy(&torture("bext01"));
    let text = String::from_utf8_lossy(&sent.last().unwrap().bytes).into_owned();
    assert!(text.starts_with("SIP/2.0 420 "), "{text}");
    assert!(
        text.contains("Unsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n"),
        "{text}"
    );
}

#[test]
fn baddn_is_refused_for_its_display_name_too() {
    // The RFC's archive lacks baddn's empty line; with it, the display names are what is wrong.
    let mut bytes = torture("baddn");
    bytes.extend_from_slice(b"\r\n");
    match parse(&bytes) {
        Err(ParseError::Answer {
            status: 400,
            reason,
            ..
        }) => {
            assert_eq!(reason, "Malformed From header")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn version_not_supported_echoes_the_request() {
    // §3.1.2.16: the 505 goes back along the SIP/7.0 Via.
    let Err(ParseError::Answer { response, via, .. }) = parse(&torture("badvers")) else {
        panic!()
    };
    assert_eq!(via.sent_by(), ("c.example.com", 5060));
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("SIP/2.0 505 Version Not Supported\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Via: SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r\n"),
        "{text}"
    );
}

#[test]
fn every_message_also_survives_tcp_and_every_prefix() {
    // No panic on any message over a reliable transport, nor on any truncation of it.
    for &(name, _, _) in TABLE {
        let bytes = torture(name);
        let mut p = proxy();
        let tcp = Peer {
            transport: Transport::Tcp,
            conn: Some(1),
            ..udp(SOURCE)
        };
        p.handle_message(Instant::ZERO, tcp, &bytes);
        for cut in 0..bytes.len() {
            let _ = parse(&bytes[..cut]);
        }
        while p.poll_output().is_some() {}
    }
}
