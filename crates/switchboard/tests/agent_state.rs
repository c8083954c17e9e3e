//! A restart (SIGTERM) keeps agents reachable without re-registering and keeps their state: on
//! break stays on break, logged out stays logged out (even where `auto_login_on_register` would
//! log a registered phone in), logged in stays logged in.
//!
//! Addresses: agents at 127.0.4.7 (8001, Xining) and 127.0.4.8 (8002, Haidong).

mod common;

use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

/// Dial a feature code from agent `user`'s phone at ip:port (digest-authenticated, answered with
/// 603 and the new state); returns SIPp's trace.
fn feature(d: &Daemon, user: &str, ip: &str, port: u16, code: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let inf = dir.path().join("agent.csv");
    std::fs::write(&inf, format!("SEQUENTIAL\n{user};\n")).unwrap();
    let p = port.to_string();
    let pw = format!("demo-{user}");
    let auth_uri = format!("{code}@{}", d.target());
    let (ok, diag) = sipp(
        &format!("feature {code}"),
        &[
            &d.target(),
            "-sf",
            &scenario("uac_feature.xml"),
            "-s",
            code,
            "-inf",
            inf.to_str().unwrap(),
            "-au",
            user,
            "-ap",
            &pw,
            "-auth_uri",
            &auth_uri,
            "-i",
            ip,
            "-p",
            &p,
            "-m",
            "1",
        ],
    )
    .finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    diag
}

fn agents(d: &Daemon, queue: &str, state: &str) -> Option<f64> {
    sample(
        &scrape(d),
        &format!("switchboard_agents{{queue=\"{queue}\",state=\"{state}\"}}"),
    )
}

fn wait_for(d: &Daemon, queue: &str, state: &str, want: f64) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if agents(d, queue, state) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_restart_keeps_agents_registered_and_in_their_state() {
    let mut d = Daemon::start();
    let (ip1, ip2) = ("127.0.4.7", "127.0.4.8");
    let (p1, p2) = (free_port(ip1), free_port(ip2));
    // Both phones register; their centers log them in on registration.
    register(&d, "8001", ip1, p1, "u1");
    register(&d, "8002", ip2, p2, "u1");
    assert!(
        wait_for(&d, "12345-haidong", "available", 1.0),
        "{}",
        scrape(&d)
    );
    // 8001 takes a break with reason 5; 8002 logs out.
    let b = feature(&d, "8001", ip1, p1, "*1405");
    assert!(b.contains("603 Decline (8001 now break)"), "{b}");
    let o = feature(&d, "8002", ip2, p2, "*12");
    assert!(o.contains("603 Decline (8002 now logged_out)"), "{o}");
    assert!(wait_for(&d, "12345-xining", "break", 1.0), "{}", scrape(&d));
    assert!(wait_for(&d, "12345-haidong", "available", 0.0));
    // States are saved within a second of a change.
    std::thread::sleep(Duration::from_millis(1500));

    d.signal("TERM");
    d.restart();
    assert!(d.log().contains("agent states restored"), "{}", d.log());
    // 8001 is still on break, 8002 still logged out although its phone is registered and its
    // center logs registered phones in.
    assert!(
        wait_for(&d, "12345-xining", "break", 1.0),
        "{}\n--- daemon\n{}",
        scrape(&d),
        d.log()
    );
    assert!(
        wait_for(&d, "12345-haidong", "available", 0.0),
        "{}",
        scrape(&d)
    );
    assert_eq!(agents(&d, "12345-haidong", "break"), Some(0.0));

    // 8001 comes back from the break (no new REGISTER) and a Xining caller reaches its phone.
    let r = feature(&d, "8001", ip1, p1, "*13");
    assert!(r.contains("603 Decline (8001 now available)"), "{r}");
    let phone = uas("phone 8001", "uas.xml", "8001", ip1, p1, 1);
    let (ok, diag) = uac(
        &d,
        "Xining caller",
        "uac.xml",
        "097112345",
        "127.0.0.2",
        &[],
    )
    .finish(LIMIT);
    let (a_ok, a_diag) = phone.finish(LIMIT);
    assert!(ok && a_ok, "{diag}\n{a_diag}\n--- daemon\n{}", d.log());
}
