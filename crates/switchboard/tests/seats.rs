//! The seat manager on the wire (deploy/seats.toml with shortened timers), against SIPp agents.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

fn phone(user: &str, ip: &str, port: u16, scn: &str, calls: u32) -> Sipp {
    uas(&format!("phone {user}"), scn, user, ip, port, calls)
}

fn caller(d: &Daemon, dialed: &str, scn: &str) -> Sipp {
    uac(
        d,
        &format!("caller {dialed}"),
        scn,
        dialed,
        "127.0.0.2",
        &[],
    )
}

fn wait_for_log(d: &Daemon, needle: &str) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < end {
        if d.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn no_answer_moves_the_call_to_the_next_agent_and_the_missed_agent_goes_on_break() {
    // Ring 2 s; one missed call puts an agent on break.
    let d = Daemon::start_with(Settings {
        seat_edits: vec![
            ("ring_timeout_s = 20".into(), "ring_timeout_s = 2".into()),
            ("max_no_answer = 3".into(), "max_no_answer = 1".into()),
        ],
        ..Settings::default()
    });
    // No Xining agent is logged in, so a Xining call goes to the province at once. 8009 registers
    // first, so it has been idle longest and is offered first; its phone rings and never answers.
    let p9 = free_port("127.0.0.61");
    register(&d, "8009", "127.0.0.61", p9, "u1");
    std::thread::sleep(Duration::from_millis(50));
    let p10 = free_port("127.0.0.62");
    register(&d, "8010", "127.0.0.62", p10, "u1");
    let ringing = phone("8009", "127.0.0.61", p9, "uas_cancel.xml", 1);
    let answering = phone("8010", "127.0.0.62", p10, "uas.xml", 1);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, diag) = caller(&d, "12345", "uac.xml").finish(LIMIT);
    let (r_ok, r_diag) = ringing.finish(LIMIT);
    let (a_ok, a_diag) = answering.finish(LIMIT);
    assert!(
        ok && r_ok && a_ok,
        "{diag}\n{r_diag}\n{a_diag}\n--- daemon\n{}",
        d.log()
    );
    assert!(
        r_diag.contains("CANCEL sip:8009@"),
        "8009 was not cancelled:\n{r_diag}"
    );
    assert!(a_diag.contains("INVITE sip:8010@"), "{a_diag}");
    let log = d.log();
    assert!(
        log.contains("agent=8009") && log.contains("to=Break"),
        "8009 did not go on break:\n{log}"
    );
}

#[test]
fn a_busy_agent_keeps_the_call_waiting_until_it_overflows_to_the_province() {
    // Xining overflows to the province after 2 s. Xining's only agent is busy (486).
    let d = Daemon::start_with(Settings {
        seat_edits: vec![(
            "overflow_after_s = 60".into(),
            "overflow_after_s = 2".into(),
        )],
        ..Settings::default()
    });
    let p1 = free_port("127.0.0.63");
    register(&d, "8001", "127.0.0.63", p1, "u1");
    let p11 = free_port("127.0.0.64");
    register(&d, "8011", "127.0.0.64", p11, "u1");
    let busy = phone("8001", "127.0.0.63", p1, "uas_busy.xml", 1);
    let province = phone("8011", "127.0.0.64", p11, "uas.xml", 1);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, diag) = caller(&d, "12345", "uac.xml").finish(LIMIT);
    let (p_ok, p_diag) = province.finish(LIMIT);
    drop(busy);
    assert!(ok && p_ok, "{diag}\n{p_diag}\n--- daemon\n{}", d.log());
    assert!(p_diag.contains("INVITE sip:8011@"), "{p_diag}");
    assert!(
        d.log().contains("from=12345-xining to=12345-province"),
        "{}",
        d.log()
    );
}

#[test]
fn a_caller_who_hangs_up_in_the_queue_is_counted_as_abandoned() {
    let d = Daemon::start();
    // Nobody is logged in: the call waits (182 Queued) and the alarm fires; then the caller leaves.
    let (ok, diag) = caller(&d, "12345", "uac_abandon.xml").finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    assert!(diag.contains("SIP/2.0 182 Queued"), "{diag}");
    assert!(diag.contains("SIP/2.0 487"), "{diag}");
    let log = d.log();
    assert!(
        log.contains("ALARM: a call arrived and no agent is logged in"),
        "{log}"
    );
    assert!(wait_for_log(&d, "caller abandoned"), "{}", d.log());
}

/// Some phones hang up with BYE inside the early dialog our 182 Queued set up (RFC 3261 §15
/// allows it) instead of CANCEL. The BYE gets 200, the INVITE 487, and the call leaves the queue
/// (abandoned) instead of staying there for an agent to pick up a dead line. Before, the BYE
/// got 481 and the call stayed queued.
#[test]
fn a_caller_who_hangs_up_with_bye_in_the_queue_leaves_it() {
    let d = Daemon::start();
    let (ok, diag) = uac(
        &d,
        "caller bye",
        "uac_bye_early.xml",
        "12345",
        "127.0.0.2",
        &["-d", "500"],
    )
    .finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    assert!(diag.contains("SIP/2.0 182 Queued"), "{diag}");
    assert!(!diag.contains("SIP/2.0 481"), "{diag}");
    assert!(wait_for_log(&d, "caller abandoned"), "{}", d.log());
}

#[test]
fn queued_is_refreshed_while_waiting_and_the_first_agent_to_log_in_takes_the_call() {
    // A 4-minute wait with 60 s refreshes, shortened: 182 every second for about 4 seconds.
    let d = Daemon::start_with(Settings {
        config_edits: vec![(
            "queued_refresh_s = 60".into(),
            "queued_refresh_s = 1".into(),
        )],
        ..Settings::default()
    });
    let waiting = caller(&d, "12345", "uac.xml");
    std::thread::sleep(Duration::from_millis(4300));
    // An agent's phone registers (the center logs agents in on registration) and answers.
    let p12 = free_port("127.0.0.65");
    register(&d, "8012", "127.0.0.65", p12, "u1");
    // The offer may reach the port before SIPp listens; the INVITE is retransmitted (Timer A).
    let agent = phone("8012", "127.0.0.65", p12, "uas.xml", 1);
    let (ok, diag) = waiting.finish(LIMIT);
    let (a_ok, a_diag) = agent.finish(LIMIT);
    assert!(ok && a_ok, "{diag}\n{a_diag}\n--- daemon\n{}", d.log());
    let refreshes = diag.matches("SIP/2.0 182 Queued").count();
    assert!(
        refreshes >= 4,
        "only {refreshes} 182s in a 4 s wait:\n{diag}"
    );
}

/// Dial a feature code from agent `user`'s phone at ip:port; returns SIPp's trace.
fn feature(d: &Daemon, user: &str, ip: &str, port: u16, code: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let inf = dir.path().join("agent.csv");
    std::fs::write(&inf, format!("SEQUENTIAL\n{user};\n")).unwrap();
    let p = port.to_string();
    let pw = format!("demo-{user}");
    // SIPp puts remote_ip:remote_port in the digest uri unless told; the digest must name the
    // Request-URI.
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

#[test]
fn feature_codes_take_an_agent_on_break_and_back() {
    let d = Daemon::start();
    let ip = "127.0.0.66";
    let port = free_port(ip);
    register(&d, "8009", ip, port, "u1");
    let on_break = feature(&d, "8009", ip, port, "*14");
    assert!(
        on_break.contains("SIP/2.0 603 Decline (8009 now break"),
        "{on_break}"
    );
    // On break, a call waits (the province is the end of the chain; the alarm does not fire,
    // since an agent is logged in).
    let waiting = caller(&d, "12345", "uac.xml");
    std::thread::sleep(Duration::from_millis(500));
    let ready = feature(&d, "8009", ip, port, "*13");
    // Ready again: the waiting call is offered at once, so the phone is already ringing.
    assert!(
        ready.contains("SIP/2.0 603 Decline (8009 now ringing)"),
        "{ready}"
    );
    // Back and ready: the waiting call is offered to 8009 at once.
    let agent = phone("8009", ip, port, "uas.xml", 1);
    let (ok, diag) = waiting.finish(LIMIT);
    let (a_ok, a_diag) = agent.finish(LIMIT);
    assert!(ok && a_ok, "{diag}\n{a_diag}\n--- daemon\n{}", d.log());
}
