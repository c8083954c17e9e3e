//! The foundation's proof against a real peer: SIPp drives the built daemon over loopback.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

#[test]
fn register_with_digest_gets_401_then_200() {
    let d = Daemon::start();
    // register.xml insists on a 401 challenge first, then a 200 with the credentials.
    register(&d, "8001", "127.0.0.11", free_port("127.0.0.11"), "u1");
    assert!(d.log().contains("agent registered"), "{}", d.log());
}

#[test]
fn wrong_password_never_gets_200() {
    let d = Daemon::start();
    let p = free_port("127.0.0.12").to_string();
    let (ok, diag) = sipp(
        "wrong password",
        &[
            &d.target(),
            "-sf",
            &scenario("register_wrong.xml"),
            "-s",
            "8002",
            "-au",
            "8002",
            "-ap",
            "not-the-password",
            "-i",
            "127.0.0.12",
            "-p",
            &p,
            "-m",
            "1",
        ],
    )
    .finish(LIMIT);
    assert!(ok, "{diag}");
    assert!(
        !diag.contains("SIP/2.0 200"),
        "a wrong password got 200:\n{diag}"
    );
    assert!(!d.log().contains("agent registered"));
}

/// Register an agent, start its SIPp phone, call it from the demo trunk; both scenarios must pass.
fn call_through(
    transport: &str,
    agent_ip: &str,
    user: &str,
    extra_uac: &[&str],
    extra_uas: &[&str],
    calls: u32,
) {
    // T1 stays at the RFC's 500 ms, as SIPp's does: with a shorter T1 our server transactions
    // would end (Timer J = 64·T1) while SIPp still retransmits a BYE whose 200 was lost, and the
    // late copy would be routed again as a new request.
    let d = Daemon::start();
    let agent_port = free_port(agent_ip);
    register(&d, user, agent_ip, agent_port, transport);
    let ap = agent_port.to_string();
    let n = calls.to_string();
    let mut uas_args = vec![
        "-sf",
        &*Box::leak(scenario("uas.xml").into_boxed_str()),
        "-s",
        user,
        "-i",
        agent_ip,
        "-p",
        &ap,
        "-m",
        &n,
        "-t",
        transport,
    ];
    uas_args.extend_from_slice(extra_uas);
    let uas = sipp("agent phone", &uas_args);
    std::thread::sleep(Duration::from_millis(300));
    let trunk_port = free_port("127.0.0.2").to_string();
    let target = d.target();
    let lossy = extra_uac.first() == Some(&"lossy");
    let uac_scn = scenario(if lossy { "uac_lossy.xml" } else { "uac.xml" });
    let extra_uac = if lossy { &extra_uac[1..] } else { extra_uac };
    let mut uac_args = vec![
        &*target,
        "-sf",
        &uac_scn,
        "-s",
        user,
        "-i",
        "127.0.0.2",
        "-p",
        &trunk_port,
        "-m",
        &n,
        "-t",
        transport,
        "-r",
        "5",
    ];
    uac_args.extend_from_slice(extra_uac);
    let (uac_ok, uac_diag) = sipp("trunk caller", &uac_args).finish(LIMIT);
    let (uas_ok, uas_diag) = uas.finish(LIMIT);
    assert!(
        uac_ok && uas_ok,
        "{uac_diag}\n{uas_diag}\n--- daemon\n{}",
        d.log()
    );
    // The agent's phone saw ACK and BYE come through the proxy: its Via is on top.
    assert!(uas_diag.contains("ACK sip:"), "{uas_diag}");
    let bye_via = uas_diag
        .split("BYE sip:")
        .nth(1)
        .and_then(|m| m.lines().find(|l| l.starts_with("Via:")))
        .unwrap_or("");
    assert!(
        bye_via.contains("branch=z9hG4bKsb"),
        "BYE did not pass the proxy: {bye_via}"
    );
}

#[test]
fn trunk_calls_agent_with_ack_and_bye_through_record_route() {
    call_through("u1", "127.0.0.13", "8003", &[], &[], 1);
}

#[test]
fn same_call_over_tcp() {
    call_through("t1", "127.0.0.14", "8004", &[], &[], 1);
}

#[test]
fn udp_loss_is_recovered_by_retransmissions() {
    // The trunk loses 10 % of the INVITEs and BYEs it sends (SIPp's per-message `lost`, see
    // tests/sipp/uac_lossy.xml); every call must still complete through the trunk's retransmissions,
    // the duplicates absorbed by our server transactions. SIPp's global `-lost 10` is not used: on
    // responses it makes SIPp 3.6 kill its own calls (a dropped 200 whose retransmissions it does
    // not re-ACK), and on the agent's side its UAS aborts on a retransmitted INVITE; both fail the
    // peer, not the proxy. Our own retransmissions (Timers A, E, G) are covered by sip-core's
    // virtual-clock tests.
    call_through("u1", "127.0.0.15", "8005", &["lossy"], &[], 30);
}

#[test]
fn cancel_before_answer_gives_487_and_agent_sees_cancel() {
    let d = Daemon::start();
    let agent_port = free_port("127.0.0.16");
    register(&d, "8006", "127.0.0.16", agent_port, "u1");
    let ap = agent_port.to_string();
    let uas = sipp(
        "agent phone",
        &[
            "-sf",
            &scenario("uas_cancel.xml"),
            "-s",
            "8006",
            "-i",
            "127.0.0.16",
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
            &scenario("uac_cancel.xml"),
            "-s",
            "8006",
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
    assert!(
        uac_diag.contains("SIP/2.0 487 Request Terminated"),
        "{uac_diag}"
    );
    assert!(uas_diag.contains("CANCEL sip:8006@"), "{uas_diag}");
}

#[test]
fn unknown_number_gets_404_and_stranger_gets_403() {
    let d = Daemon::start();
    let sock = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let from = sock.local_addr().unwrap();
    let invite = |branch: &str, user: &str, from: std::net::SocketAddr| {
        format!(
            "INVITE sip:{user}@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
To: <sip:{user}@{t}>\r\nFrom: <sip:13800000000@{from}>;tag=a\r\nCall-ID: {branch}@t\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            t = d.target()
        )
    };
    sock.send_to(invite("nf1", "99999", from).as_bytes(), d.addr())
        .unwrap();
    let reply = recv_final(&sock);
    assert!(reply.starts_with("SIP/2.0 404 "), "{reply}");

    let stranger = std::net::UdpSocket::bind("127.0.0.99:0").unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let from = stranger.local_addr().unwrap();
    stranger
        .send_to(invite("st1", "8001", from).as_bytes(), d.addr())
        .unwrap();
    let reply = recv_final(&stranger);
    assert!(reply.starts_with("SIP/2.0 403 "), "{reply}");
}

/// Read responses until a final one arrives.
fn recv_final(sock: &std::net::UdpSocket) -> String {
    let mut buf = [0u8; 8192];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("a response");
        let s = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !s.starts_with("SIP/2.0 1") {
            return s;
        }
    }
}

#[test]
fn registrations_survive_a_restart() {
    let mut d = Daemon::start();
    let agent_port = free_port("127.0.0.17");
    register(&d, "8007", "127.0.0.17", agent_port, "u1");
    d.signal("TERM");
    d.restart();
    assert!(d.log().contains("registrations restored"), "{}", d.log());
    // No new REGISTER: the call must still reach the phone.
    let ap = agent_port.to_string();
    let uas = sipp(
        "agent phone",
        &[
            "-sf",
            &scenario("uas.xml"),
            "-s",
            "8007",
            "-i",
            "127.0.0.17",
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
            "8007",
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

#[test]
fn register_and_call_over_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is not available on this machine");
    }
    let d = Daemon::start_with(Settings {
        ipv6: true,
        ..Settings::default()
    });
    let v6 = format!("[::1]:{}", d.port);
    let agent_port = free_port("::1").to_string();
    let (ok, diag) = sipp(
        "register v6",
        &[
            &v6,
            "-sf",
            &scenario("register.xml"),
            "-s",
            "8008",
            "-au",
            "8008",
            "-ap",
            "demo-8008",
            "-i",
            "::1",
            "-p",
            &agent_port,
            "-m",
            "1",
        ],
    )
    .finish(LIMIT);
    assert!(ok, "{diag}\n{}", d.log());
    let uas = sipp(
        "agent phone v6",
        &[
            "-sf",
            &scenario("uas.xml"),
            "-s",
            "8008",
            "-i",
            "::1",
            "-p",
            &agent_port,
            "-m",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    // The demo trunk calls from IPv4; the agent registered over IPv6: the proxy bridges families.
    let tp = free_port("127.0.0.2").to_string();
    let (uac_ok, uac_diag) = sipp(
        "trunk caller",
        &[
            &d.target(),
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "8008",
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
    assert!(uas_diag.contains("INVITE sip:8008@[::1]"), "{uas_diag}");
    // Double Record-Route across address families: the IPv6 side sees our IPv6 address on top.
    let rr = uas_diag
        .lines()
        .find(|l| l.starts_with("Record-Route:"))
        .unwrap_or("");
    assert!(rr.contains(&format!("<sip:[::1]:{};lr", d.port)), "{rr}");
}
