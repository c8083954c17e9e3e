//! Work orders (工单) the daemon creates, and their delivery to sub-centers over HTTP.
//!
//! Real peers: SIPp callers on the demo trunk (127.0.0.2), SIPp sub-center trunks and PSAPs on
//! 127.0.4.x, and `tests/subcenter_http.py` as the sub-center's work-order endpoint (it records
//! every POST with its Idempotency-Key and can answer 503; "down" is not running it). Work orders
//! are read back from the daemon's SQLite file through the store crate; CDRs through
//! `switchboard cdr export`.
//!
//! Addresses: 127.0.4.1 (transfer), 127.0.4.2 (outage), 127.0.4.3 (fallback), 127.0.4.4 (emergency
//! PSAPs: ambulance 5120, fire 5119), 127.0.4.5 and .9 (agents handing off).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use store::StoreBackend;

const LIMIT: Duration = Duration::from_secs(40);

/// The sub-center's HTTP endpoint (tests/subcenter_http.py), stopped by PID on drop.
struct Receiver {
    child: Child,
    log: PathBuf,
}

impl Receiver {
    fn start(ip: &str, port: u16, log: &Path, fail_flag: &Path) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/subcenter_http.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(ip)
            .arg(port.to_string())
            .arg(log)
            .arg("--fail-flag")
            .arg(fail_flag)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(Instant::now() < end, "the HTTP receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver {
            child,
            log: log.to_owned(),
        }
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }

    fn posts(&self) -> Vec<serde_json::Value> {
        posts(&self.log)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn posts(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn accepted(log: &Path) -> Vec<serde_json::Value> {
    posts(log)
        .into_iter()
        .filter(|p| p["status"] == 201)
        .collect()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The daemon's work orders, oldest first, read from its database.
fn work_orders(d: &Daemon) -> Vec<store::WorkOrder> {
    let mut r = store::open_reader(&store::StoreConfig::new(
        d.dir.path().join("switchboard.db"),
    ))
    .expect("open the store");
    r.work_orders_since(0, 1000).unwrap()
}

/// A daemon whose 12366 (tax) sub-center is a SIP peer at ip:sip_port with its work-order endpoint
/// (the line's `workorder_url` in the dialplan) at http://ip:http_port/workorders; `store_extra`
/// goes into `[store]`.
fn daemon_with_subcenter(ip: &str, sip_port: u16, http_port: u16, store_extra: &str) -> Daemon {
    Daemon::start_with(Settings {
        trunk_failover_ms: 1000,
        plan_edits: vec![
            (
                "trunk = [\"sip:127.0.2.1:5060\"]".into(),
                format!("trunk = [\"sip:{ip}:{sip_port}\"]"),
            ),
            (
                "workorder_url = \"http://127.0.2.1:8080/workorders\"".into(),
                format!("workorder_url = \"http://{ip}:{http_port}/workorders\""),
            ),
        ],
        config_edits: vec![
            (
                "sources = [\"127.0.2.1\"]".into(),
                format!("sources = [\"{ip}\"]"),
            ),
            (
                "callback_after_abandon_s = 30\n".into(),
                format!("callback_after_abandon_s = 30\n{store_extra}\n"),
            ),
        ],
        ..Settings::default()
    })
}

/// One answered call from the demo trunk to the tax sub-center line 12366.
fn subcenter_call(d: &Daemon, ip: &str, sip_port: u16) {
    let sub = uas("sub-center 12366", "uas.xml", "12366", ip, sip_port, 1);
    let (ok, diag) = uac(d, "caller to 12366", "uac.xml", "12366", "127.0.0.2", &[]).finish(LIMIT);
    let (s_ok, s_diag) = sub.finish(LIMIT);
    assert!(ok && s_ok, "{diag}\n{s_diag}\n--- daemon\n{}", d.log());
}

#[test]
fn a_call_handed_to_a_subcenter_makes_a_work_order_that_reaches_it_over_http() {
    let ip = "127.0.4.1";
    let (sip_port, http_port) = (free_port(ip), free_port(ip));
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(
        ip,
        http_port,
        &dir.path().join("posts.jsonl"),
        &dir.path().join("fail"),
    );
    let d = daemon_with_subcenter(ip, sip_port, http_port, "");
    subcenter_call(&d, ip, sip_port);

    assert!(
        wait_until(Duration::from_secs(10), || !rx.posts().is_empty()),
        "no POST reached the sub-center\n--- daemon\n{}",
        d.log()
    );
    let posts = rx.posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let p = &posts[0];
    assert_eq!(p["path"], "/workorders");
    assert_eq!(p["content_type"], "application/json");
    let key = p["key"].as_str().expect("an Idempotency-Key").to_owned();
    assert!(key.starts_with("WO-a-"), "{key}");
    assert_eq!(p["body"]["id"], key.as_str(), "the key is the order's id");
    assert_eq!(p["body"]["kind"], "subcenter-transfer");
    assert_eq!(p["body"]["caller"], "13800000000");
    assert_eq!(p["body"]["payload"]["line"], "12366");
    assert_eq!(p["body"]["payload"]["subcenter"], "subcenter-12366-tax");

    // The CDR names the order; the order's history records the delivery.
    let cdrs = export_cdrs(&d);
    let cdr = cdrs
        .iter()
        .find(|c| c["dialed"] == "12366")
        .expect("the call's CDR");
    assert_eq!(cdr["work_order"], key.as_str(), "{cdr}");
    assert_eq!(p["body"]["call_id"], cdr["call_id"]);
    assert!(wait_until(Duration::from_secs(5), || {
        work_orders(&d)
            .iter()
            .any(|w| w.id == key && w.status == store::WorkOrderStatus::Delivered)
    }));
    let w = work_orders(&d).into_iter().find(|w| w.id == key).unwrap();
    let steps: Vec<_> = w.history.iter().map(|h| h.status.as_str()).collect();
    assert_eq!(steps, ["dispatched", "delivered"], "{w:?}");
    assert_eq!(
        w.subcenter_endpoint.as_deref(),
        Some(format!("http://{ip}:{http_port}/workorders").as_str())
    );
    let s = scrape(&d);
    assert_eq!(sample(&s, "switchboard_outbox_backlog"), Some(0.0), "{s}");
    rx.stop();
}

/// The endpoint is the line's own: a sub-center with no [[trunks]] entry in the config (it never
/// calls 12345 back) still gets its orders.
#[test]
fn the_work_order_endpoint_is_the_dialplan_lines_even_without_a_trunk_entry() {
    let ip = "127.0.4.6";
    let (sip_port, http_port) = (free_port(ip), free_port(ip));
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(
        ip,
        http_port,
        &dir.path().join("posts.jsonl"),
        &dir.path().join("fail"),
    );
    let d = Daemon::start_with(Settings {
        plan_edits: vec![
            (
                "trunk = [\"sip:127.0.2.1:5060\"]".into(),
                format!("trunk = [\"sip:{ip}:{sip_port}\"]"),
            ),
            (
                "workorder_url = \"http://127.0.2.1:8080/workorders\"".into(),
                format!("workorder_url = \"http://{ip}:{http_port}/work-orders/tax\""),
            ),
        ],
        ..Settings::default()
    });
    assert!(!std::fs::read_to_string(&d.config).unwrap().contains(ip));
    subcenter_call(&d, ip, sip_port);
    assert!(
        wait_until(Duration::from_secs(10), || !rx.posts().is_empty()),
        "no POST reached the sub-center\n--- daemon\n{}",
        d.log()
    );
    let posts = rx.posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(posts[0]["path"], "/work-orders/tax");
    assert_eq!(posts[0]["body"]["kind"], "subcenter-transfer");
    assert_eq!(posts[0]["body"]["payload"]["line"], "12366");
    assert!(
        posts[0]["body"]["payload"]["subcenter"].is_null(),
        "no trunk to name it"
    );
    rx.stop();
}

#[test]
fn a_subcenter_down_for_a_while_then_up_gets_everything_in_order_once_per_key_across_a_restart() {
    // "An hour" of outage is simulated by a backoff capped at 500 ms: the outbox keeps retrying
    // on the same schedule shape (initial 100 ms, doubling, capped), just compressed.
    let ip = "127.0.4.2";
    let (sip_port, http_port) = (free_port(ip), free_port(ip));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("posts.jsonl");
    let fail = dir.path().join("fail");
    let mut d = daemon_with_subcenter(
        ip,
        sip_port,
        http_port,
        "[store.outbox]\ninitial_backoff_ms = 100\nmax_backoff_ms = 500",
    );
    // The sub-center's HTTP side is down: three calls queue three orders.
    for _ in 0..3 {
        subcenter_call(&d, ip, sip_port);
    }
    let backlog = |d: &Daemon| sample(&scrape(d), "switchboard_outbox_backlog");
    assert!(
        wait_until(Duration::from_secs(5), || backlog(&d) == Some(3.0)),
        "backlog {:?}\n{}",
        backlog(&d),
        d.log()
    );
    let ids: Vec<String> = work_orders(&d).into_iter().map(|w| w.id).collect();
    assert_eq!(ids.len(), 3);

    // Then it is up but failing (503): the outbox retries, the items stay pending.
    std::fs::write(&fail, "").unwrap();
    let rx = Receiver::start(ip, http_port, &log, &fail);
    assert!(wait_until(Duration::from_secs(5), || posts(&log).len() >= 2));
    rx.stop();
    let refused = posts(&log);
    assert!(refused.iter().all(|p| p["status"] == 503), "{refused:#?}");
    assert!(
        refused.iter().all(|p| p["key"] == ids[0].as_str()),
        "the head of the endpoint's queue blocks the rest: {refused:#?}"
    );

    // The daemon restarts (SIGTERM) while the sub-center is down: the backlog survives.
    d.signal("TERM");
    d.restart();
    assert!(
        wait_until(Duration::from_secs(5), || backlog(&d) == Some(3.0)),
        "backlog after restart {:?}\n{}",
        backlog(&d),
        d.log()
    );

    // Back up for good: everything arrives, in order, once per key.
    std::fs::remove_file(&fail).unwrap();
    let rx = Receiver::start(ip, http_port, &log, &fail);
    assert!(
        wait_until(Duration::from_secs(10), || accepted(&log).len() >= 3),
        "{:#?}\n{}",
        posts(&log),
        d.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<String> = accepted(&log)
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids, "in order, each key accepted once");
    let all = posts(&log);
    let duplicates = all.iter().filter(|p| p["status"] == 200).count();
    assert_eq!(
        duplicates, 0,
        "no key was POSTed again after its 2xx: {all:#?}"
    );
    assert!(wait_until(Duration::from_secs(5), || backlog(&d) == Some(0.0)));
    assert!(work_orders(&d)
        .iter()
        .all(|w| w.status == store::WorkOrderStatus::Delivered));
    rx.stop();
}

#[test]
fn a_subcenter_that_refuses_the_call_falls_back_to_12345_with_a_callback_order() {
    let ip = "127.0.4.3";
    let (sip_port, http_port) = (free_port(ip), free_port(ip));
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(
        ip,
        http_port,
        &dir.path().join("posts.jsonl"),
        &dir.path().join("fail"),
    );
    let d = daemon_with_subcenter(ip, sip_port, http_port, "");
    let sub = uas("sub-center 503", "uas_503.xml", "12366", ip, sip_port, 1);
    // The sub-center refuses; 12345 has nobody logged in; the caller gives up after 1.5 s.
    let (ok, diag) = uac(
        &d,
        "caller to 12366",
        "uac_abandon.xml",
        "12366",
        "127.0.0.2",
        &[],
    )
    .finish(LIMIT);
    let (s_ok, s_diag) = sub.finish(LIMIT);
    assert!(ok && s_ok, "{diag}\n{s_diag}\n--- daemon\n{}", d.log());
    assert!(
        wait_until(Duration::from_secs(10), || !rx.posts().is_empty()),
        "{}",
        d.log()
    );
    let p = &rx.posts()[0];
    assert_eq!(p["body"]["kind"], "subcenter-callback", "{p}");
    assert_eq!(p["body"]["caller"], "13800000000");
    let cdr = export_cdrs(&d)
        .into_iter()
        .find(|c| c["dialed"] == "12366")
        .expect("CDR");
    assert_eq!(cdr["work_order"], p["key"], "{cdr}");
    rx.stop();
}

#[test]
fn a_caller_who_hangs_up_after_n_seconds_gets_a_callback_order() {
    let d = Daemon::start_with(Settings {
        config_edits: vec![(
            "callback_after_abandon_s = 30\n".into(),
            "callback_after_abandon_s = 1\n".into(),
        )],
        ..Settings::default()
    });
    // Nobody answers Yushu; the caller hangs up after 1.5 s (uac_abandon.xml).
    let (ok, diag) = uac(
        &d,
        "abandoning caller",
        "uac_abandon.xml",
        "097612345",
        "127.0.0.2",
        &[],
    )
    .finish(LIMIT);
    assert!(ok, "{diag}\n--- daemon\n{}", d.log());
    assert!(wait_until(Duration::from_secs(5), || !work_orders(&d).is_empty()));
    let orders = work_orders(&d);
    assert_eq!(orders.len(), 1, "{orders:?}");
    let w = &orders[0];
    assert_eq!(w.kind, store::WorkOrderKind::AbandonedCallback);
    assert_eq!(w.status, store::WorkOrderStatus::Open);
    assert_eq!(w.caller.as_deref(), Some("13800000000"));
    assert!(
        w.payload["waited_ms"].as_i64().unwrap() >= 1000,
        "{}",
        w.payload
    );
    let cdr = export_cdrs(&d)
        .into_iter()
        .find(|c| c["dialed"] == "097612345")
        .expect("CDR");
    assert_eq!(cdr["outcome"], "abandoned");
    assert_eq!(cdr["work_order"], w.id.as_str());
    assert_eq!(cdr["call_id"].as_str(), w.call_id.as_deref());
}

#[test]
fn an_emergency_hand_off_has_a_linkage_order_named_in_the_psap_invite_and_the_cdrs() {
    // Haidong's ambulance PSAP moved to 127.0.4.4 for this test.
    let psap_ip = "127.0.4.4";
    let d = Daemon::start_with(Settings {
        config_edits: vec![(
            "targets = [\"sip:127.0.1.2:5120\"]".into(),
            format!("targets = [\"sip:{psap_ip}:5120\"]"),
        )],
        ..Settings::default()
    });
    let ip = "127.0.4.5";
    let port = free_port(ip);
    register(&d, "8010", ip, port, "u1");
    let agent_phone = uas("agent phone", "uas.xml", "8010", ip, port, 1);
    let caller = uac(
        &d,
        "Haidong caller",
        "uac_haidong.xml",
        "12345",
        "127.0.0.2",
        &["-d", "4000"],
    );
    let ambulance = uas("ambulance PSAP", "uas.xml", "psap", psap_ip, 5120, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, diag) = uac(&d, "agent dials 120", "uac.xml", "120", ip, &[]).finish(LIMIT);
    let (p_ok, p_diag) = ambulance.finish(LIMIT);
    let (c_ok, c_diag) = caller.finish(LIMIT);
    let (a_ok, a_diag) = agent_phone.finish(LIMIT);
    assert!(
        ok && p_ok && c_ok && a_ok,
        "{diag}\n{p_diag}\n{c_diag}\n{a_diag}\n--- daemon\n{}",
        d.log()
    );
    let linkage = p_diag
        .lines()
        .find(|l| l.starts_with("X-12345-Linkage:"))
        .unwrap_or("")
        .to_owned();
    assert!(wait_until(Duration::from_secs(5), || !work_orders(&d).is_empty()));
    let orders = work_orders(&d);
    assert_eq!(orders.len(), 1, "{orders:?}");
    let w = &orders[0];
    assert_eq!(w.kind, store::WorkOrderKind::EmergencyLinkage);
    assert!(
        linkage.contains(&format!("workorder={}", w.id)),
        "the PSAP sees the order id: {linkage}"
    );
    assert_eq!(w.caller.as_deref(), Some("09725551234"));
    assert_eq!(w.prefecture.as_deref(), Some("haidong"));
    assert_eq!(w.payload["service"], "120");
    assert_eq!(w.payload["agent"], "8010");
    assert!(
        w.payload["psap"].as_str().unwrap_or("").contains(psap_ip),
        "{}",
        w.payload
    );
    let linked = w.call_id.clone().unwrap();
    assert!(
        linked.contains("@127.0.0.2"),
        "the 12345 caller's call: {linked}"
    );
    // Both CDRs name it: the 12345 call handed off, and the agent's call to the PSAP.
    assert!(wait_until(Duration::from_secs(5), || export_cdrs(&d).len() >= 2));
    let cdrs = export_cdrs(&d);
    let handed = cdrs
        .iter()
        .find(|c| c["call_id"] == linked.as_str())
        .expect("the 12345 call's CDR");
    assert_eq!(handed["work_order"], w.id.as_str(), "{handed}");
    let to_psap = cdrs
        .iter()
        .find(|c| c["mode"] == "emergency")
        .expect("the emergency CDR");
    assert_eq!(to_psap["work_order"], w.id.as_str(), "{to_psap}");
}

#[test]
fn a_refer_hand_off_has_a_linkage_order_named_in_the_psap_invite_and_its_cdr() {
    // Haidong's fire PSAP moved to 127.0.4.4 for this test; agent 8001 at 127.0.4.9 REFERs the
    // caller (a Haidong landline on the demo trunk) to 119.
    let psap_ip = "127.0.4.4";
    let d = Daemon::start_with(Settings {
        config_edits: vec![(
            "targets = [\"sip:127.0.1.2:5119\"]".into(),
            format!("targets = [\"sip:{psap_ip}:5119\"]"),
        )],
        ..Settings::default()
    });
    let ip = "127.0.4.9";
    let port = free_port(ip);
    register(&d, "8001", ip, port, "u1");
    let agent = uas("agent transfers", "uas_refer.xml", "8001", ip, port, 1);
    let fire = uas("fire PSAP", "uas.xml", "psap", psap_ip, 5119, 1);
    let (ok, diag) = uac(&d, "caller", "uac_transfer.xml", "8001", "127.0.0.2", &[]).finish(LIMIT);
    let (a_ok, a_diag) = agent.finish(LIMIT);
    let (p_ok, p_diag) = fire.finish(LIMIT);
    assert!(
        ok && a_ok && p_ok,
        "{diag}\n{a_diag}\n{p_diag}\n--- daemon\n{}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(5), || !work_orders(&d).is_empty()));
    let orders = work_orders(&d);
    assert_eq!(orders.len(), 1, "{orders:?}");
    let w = &orders[0];
    assert_eq!(w.kind, store::WorkOrderKind::EmergencyLinkage);
    assert_eq!(w.payload["agent"], "8001", "the Referred-By agent");
    assert_eq!(w.payload["service"], "119");
    assert_eq!(w.caller.as_deref(), Some("09725551234"));
    let linkage = p_diag
        .lines()
        .find(|l| l.starts_with("X-12345-Linkage:"))
        .unwrap_or("");
    assert!(
        linkage.contains(&format!("workorder={}", w.id)),
        "{linkage}"
    );
    assert!(wait_until(Duration::from_secs(5), || export_cdrs(&d)
        .iter()
        .any(|c| c["mode"] == "emergency")));
    let to_psap = export_cdrs(&d)
        .into_iter()
        .find(|c| c["mode"] == "emergency")
        .unwrap();
    assert_eq!(to_psap["work_order"], w.id.as_str(), "{to_psap}");
}
