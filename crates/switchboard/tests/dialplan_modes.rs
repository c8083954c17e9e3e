//! The dialplan on the wire: each mode of the Qinghai plan with SIPp peers, and SIGHUP reload.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

/// Start an agent's (or a sub-center's) SIPp phone that answers `calls` calls on ip:port.
fn phone(user: &str, ip: &str, port: u16, calls: u32) -> Sipp {
    uas(&format!("phone {user}"), "uas.xml", user, ip, port, calls)
}

/// Call `dialed` from the demo trunk (127.0.0.2); extra SIPp flags in `extra`.
fn call(d: &Daemon, dialed: &str, extra: &[&str]) -> (bool, String) {
    uac(
        d,
        &format!("call {dialed}"),
        "uac.xml",
        dialed,
        "127.0.0.2",
        extra,
    )
    .finish(LIMIT)
}

fn assert_answered(d: &Daemon, caller: (bool, String), phone: Sipp) -> String {
    let (uas_ok, uas_diag) = phone.finish(LIMIT);
    assert!(
        caller.0 && uas_ok,
        "{}\n{uas_diag}\n--- daemon\n{}",
        caller.1,
        d.log()
    );
    uas_diag
}

#[test]
fn merge_line_reaches_a_12345_agent_of_the_callers_prefecture() {
    let d = Daemon::start();
    // 8002 answers Haidong (0972). The trunk belongs to Xining, but the carrier's area-code prefix
    // on the dialed number says Haidong, and it comes first.
    let port = free_port("127.0.0.41");
    register(&d, "8002", "127.0.0.41", port, "u1");
    let agent = phone("8002", "127.0.0.41", port, 1);
    let uas = assert_answered(&d, call(&d, "097212331", &[]), agent);
    assert!(uas.contains("INVITE sip:8002@127.0.0.41"), "{uas}");
    assert!(d.log().contains("line 12331 (merge)"), "{}", d.log());
}

#[test]
fn dual_line_reaches_a_department_seat() {
    let d = Daemon::start();
    let port = free_port("127.0.0.42");
    register(&d, "8013", "127.0.0.42", port, "u1"); // the 12315 department seat
    let seat = phone("8013", "127.0.0.42", port, 1);
    let uas = assert_answered(&d, call(&d, "12315", &[]), seat);
    assert!(uas.contains("INVITE sip:8013@127.0.0.42"), "{uas}");
}

#[test]
fn dual_line_with_no_seat_logged_in_overflows_to_12345() {
    let d = Daemon::start();
    let port = free_port("127.0.0.43");
    register(&d, "8001", "127.0.0.43", port, "u1"); // Xining 12345 agent; the trunk is Xining's
    let agent = phone("8001", "127.0.0.43", port, 1);
    let uas = assert_answered(&d, call(&d, "12315", &[]), agent);
    assert!(uas.contains("INVITE sip:8001@127.0.0.43"), "{uas}");
}

#[test]
fn subcenter_line_reaches_the_subcenter_trunk() {
    let port = free_port("127.0.2.1");
    let d = Daemon::start_with(Settings {
        plan_edits: vec![("sip:127.0.2.1:5060".into(), format!("sip:127.0.2.1:{port}"))],
        ..Settings::default()
    });
    let platform = phone("12366", "127.0.2.1", port, 1);
    let uas = assert_answered(&d, call(&d, "12366", &[]), platform);
    assert!(
        uas.contains(&format!("INVITE sip:127.0.2.1:{port}")),
        "{uas}"
    );
}

#[test]
fn subcenter_down_falls_back_to_12345() {
    // Nothing listens on 127.0.2.2:<port>: the trunk stays silent, and after trunk_failover_ms the
    // call goes to the caller's 12345 queue.
    let dead = free_port("127.0.2.2");
    let d = Daemon::start_with(Settings {
        trunk_failover_ms: 500,
        plan_edits: vec![("sip:127.0.2.2:5060".into(), format!("sip:127.0.2.2:{dead}"))],
        ..Settings::default()
    });
    let port = free_port("127.0.0.44");
    register(&d, "8001", "127.0.0.44", port, "u1");
    let agent = phone("8001", "127.0.0.44", port, 1);
    let uas = assert_answered(&d, call(&d, "12360", &[]), agent);
    assert!(uas.contains("INVITE sip:8001@127.0.0.44"), "{uas}");
}

#[test]
fn unknown_number_is_404_and_agents_stay_dialable() {
    let d = Daemon::start();
    let (ok, diag) = call(&d, "12399", &[]);
    assert!(!ok && diag.contains("SIP/2.0 404"), "{diag}");
    let port = free_port("127.0.0.46");
    register(&d, "8010", "127.0.0.46", port, "u1");
    let agent = phone("8010", "127.0.0.46", port, 1);
    assert_answered(&d, call(&d, "8010", &[]), agent);
}

/// The plan file inside the daemon's test folder.
fn plan_path(d: &Daemon) -> std::path::PathBuf {
    d.dir.path().join("dialplans/qinghai.toml")
}

#[test]
fn reload_during_50_calls_drops_none_and_the_next_call_follows_the_new_plan() {
    let d = Daemon::start_with(Settings {
        t1_ms: 200,
        ..Settings::default()
    });
    let xining = free_port("127.0.0.45");
    register(&d, "8001", "127.0.0.45", xining, "u1");
    let province = free_port("127.0.0.47");
    register(&d, "8009", "127.0.0.47", province, "u1");
    let agent = phone("8001", "127.0.0.45", xining, 50);
    // 50 calls in progress, 3 s each, at 25 calls/s. They dial agent 8001's own number: the seat
    // manager offers one call at a time to an agent, and a test phone can hold 50.
    let tp = free_port("127.0.0.2").to_string();
    let target = d.target();
    let scn = scenario("uac.xml");
    let calls = sipp(
        "50 calls",
        &[
            &target,
            "-sf",
            &scn,
            "-s",
            "8001",
            "-i",
            "127.0.0.2",
            "-p",
            &tp,
            "-m",
            "50",
            "-r",
            "25",
            "-d",
            "3000",
            "-l",
            "60",
        ],
    );
    std::thread::sleep(Duration::from_millis(2500));
    // While they talk: the new plan pins 12331 to the provincial center.
    let text = std::fs::read_to_string(plan_path(&d)).unwrap();
    let edited = text.replacen(
        "skill = \"food-drug\"",
        "skill = \"food-drug\"\ncenter = \"province\"",
        1,
    );
    assert_ne!(text, edited);
    std::fs::write(plan_path(&d), edited).unwrap();
    d.signal("HUP");
    let (ok, diag) = calls.finish(LIMIT);
    let (agent_ok, agent_diag) = agent.finish(LIMIT);
    assert!(
        ok && agent_ok,
        "{diag}\n{agent_diag}\n--- daemon\n{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("reload: new config and dialplan in service"),
        "{}",
        d.log()
    );
    // The next call follows the new plan: the provincial agent answers.
    let prov = phone("8009", "127.0.0.47", province, 1);
    let uas = assert_answered(&d, call(&d, "12331", &[]), prov);
    assert!(uas.contains("INVITE sip:8009@127.0.0.47"), "{uas}");
}

#[test]
fn broken_plan_is_refused_with_its_line_and_the_old_plan_keeps_serving() {
    let d = Daemon::start();
    let port = free_port("127.0.0.48");
    register(&d, "8001", "127.0.0.48", port, "u1");
    let text = std::fs::read_to_string(plan_path(&d)).unwrap();
    let lines_before = text.lines().count();
    // A line whose mode does not exist, appended at the end.
    let broken = format!("{text}\n[[lines]]\nnumber = \"12399\"\ndepartment = \"x\"\nmode = \"teleport\"\nskill = \"x\"\n");
    std::fs::write(plan_path(&d), &broken).unwrap();
    d.signal("HUP");
    let bad_line = lines_before + 5;
    let want = format!("qinghai.toml:{bad_line}:");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !d.log().contains("reload refused;") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = d.log();
    assert!(
        log.contains("reload refused") && log.contains(&want),
        "want {want}\n{log}"
    );
    // `switchboard check` gives the same verdict offline.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["check", "-c"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&want),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old plan still routes 12331 to Xining's agent.
    let agent = phone("8001", "127.0.0.48", port, 1);
    assert_answered(&d, call(&d, "12331", &[]), agent);
}
