//! Work orders agents create through the admin API (`POST /api/v1/work-orders`) and the status
//! steps they add, against the real daemon: token checks, clear 400s, the order readable once the
//! writer commits it, and the row in the SQLite file. Roles on 127.0.4.5x.

mod common;

use std::time::{Duration, Instant};

use common::admin::*;
use common::*;

const TRUNK: &str = "127.0.4.50";

/// GET one work order until it is committed (the POST answers once the order is handed to the
/// writer, not once it is on disk).
fn poll_order(
    d: &Daemon,
    id: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < end {
        let (s, _, body) = http(
            d,
            "GET",
            &format!("/api/v1/work-orders/{id}"),
            Some(ADMIN_TOKEN),
            "",
        );
        if s == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if until(&v[0]) {
                return v[0].clone();
            }
        }
        last = format!("{s} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "work order {id} never showed as expected: last {last}\n--- daemon\n{}",
        d.log()
    );
}

#[test]
fn agents_create_work_orders_and_add_steps_through_the_api() {
    let d = Daemon::start_with(admin_settings(TRUNK));
    let good = r#"{"agent":"8002","call_id":"abc@127.0.4.50","caller":"13800000000","prefecture":"haidong","summary":"street light out on Pingan road","department":"urban-management"}"#;

    // No token, a wrong one, the wallboard's: 401, and nothing is created.
    for token in [None, Some("test-admin-token-0123456780"), Some(WALL_TOKEN)] {
        let (s, head, body) = http(&d, "POST", "/api/v1/work-orders", token, good);
        assert_eq!(s, 401, "{token:?}: {head}\n{body}");
    }
    // Bad input: 400 with a message that says what is wrong.
    for (body, why) in [
        ("{not json", "expected"),
        (r#"{"agent":"8002"}"#, "missing field `summary`"),
        (
            r#"{"agent":"8002","summary":"x","colour":"red"}"#,
            "unknown field `colour`",
        ),
        (r#"{"agent":"9999","summary":"x"}"#, "unknown agent `9999`"),
        (
            r#"{"agent":"8002","summary":"   "}"#,
            "summary: must not be empty",
        ),
        (
            r#"{"agent":"8002","summary":"x","caller":"138-0000"}"#,
            "caller: digits only",
        ),
    ] {
        let (s, _, reply) = http(&d, "POST", "/api/v1/work-orders", Some(ADMIN_TOKEN), body);
        assert_eq!(s, 400, "{body}: {reply}");
        let e: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert!(
            e["error"].as_str().unwrap_or("").contains(why),
            "{body}: wanted `{why}` in {reply}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let list = get_json(&d, "/api/v1/work-orders");
    assert_eq!(
        list,
        serde_json::json!([]),
        "refused requests created nothing"
    );

    // The right token: 201 with the new id, readable once committed.
    let (s, _, reply) = http(&d, "POST", "/api/v1/work-orders", Some(ADMIN_TOKEN), good);
    assert_eq!(s, 201, "{reply}\n--- daemon\n{}", d.log());
    let created: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["status"], "open");
    let w = poll_order(&d, &id, |_| true);
    assert_eq!(w["id"], id.as_str());
    assert_eq!(w["kind"], "agent-created", "{w}");
    assert_eq!(w["status"], "open");
    assert_eq!(w["call_id"], "abc@127.0.4.50");
    assert_eq!(w["prefecture"], "haidong");
    assert_eq!(w["payload"]["summary"], "street light out on Pingan road");
    assert_eq!(w["payload"]["department"], "urban-management");
    assert_ne!(
        w["caller"], "13800000000",
        "the API shows the caller redacted: {w}"
    );
    assert_eq!(w["history"][0]["actor"], "8002");
    assert_eq!(w["history"][0]["status"], "open");

    // A second order gets another id; both are in the list.
    let (s, _, reply) = http(
        &d,
        "POST",
        "/api/v1/work-orders",
        Some(ADMIN_TOKEN),
        r#"{"agent":"8001","summary":"call back about the bus timetable"}"#,
    );
    assert_eq!(s, 201, "{reply}");
    let id2 = serde_json::from_str::<serde_json::Value>(&reply).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, id2);
    poll_order(&d, &id2, |_| true);
    let list = get_json(&d, "/api/v1/work-orders");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&id2.as_str()),
        "{list}"
    );

    // A status step: token required, checked, then appended to the history.
    let path = format!("/api/v1/work-orders/{id}/status");
    let step = r#"{"agent":"8002","status":"in-progress","note":"called the caller back"}"#;
    let (s, _, _) = http(&d, "POST", &path, None, step);
    assert_eq!(s, 401);
    for (body, code, why) in [
        (
            r#"{"agent":"8002","status":"delivered"}"#,
            400,
            "unknown status `delivered`",
        ),
        (
            r#"{"agent":"9999","status":"closed"}"#,
            400,
            "unknown agent",
        ),
        ("[]", 400, "expected"),
    ] {
        let (s, _, reply) = http(&d, "POST", &path, Some(ADMIN_TOKEN), body);
        assert_eq!(s, code, "{body}: {reply}");
        assert!(reply.contains(why), "{body}: wanted `{why}` in {reply}");
    }
    let (s, _, reply) = http(
        &d,
        "POST",
        "/api/v1/work-orders/no-such-order/status",
        Some(ADMIN_TOKEN),
        step,
    );
    assert_eq!(s, 404, "{reply}");
    let (s, _, reply) = http(&d, "POST", &path, Some(ADMIN_TOKEN), step);
    assert_eq!(s, 202, "{reply}\n--- daemon\n{}", d.log());
    let w = poll_order(&d, &id, |w| w["status"] == "in-progress");
    let history = w["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{w}");
    assert_eq!(history[1]["actor"], "8002");
    assert_eq!(history[1]["note"], "called the caller back");

    // In the SQLite file: the order, the caller in full, and its history.
    let mut reader = store::open_reader(&store::StoreConfig::new(
        d.dir.path().join("switchboard.db"),
    ))
    .expect("the store opens");
    let row = store::StoreBackend::work_order(&mut reader, &id)
        .unwrap()
        .expect("the order is in the SQLite file");
    assert_eq!(row.kind, store::WorkOrderKind::AgentCreated);
    assert_eq!(row.status, store::WorkOrderStatus::InProgress);
    assert_eq!(row.caller.as_deref(), Some("13800000000"), "stored in full");
    assert_eq!(row.history.len(), 2);
    // The caller's number never reached the log.
    assert!(
        !d.log().contains("13800000000"),
        "a raw caller number in the log"
    );

    // `switchboard ctl work-order create` does the same from the command line.
    let (ok, out, err) = ctl(
        &d,
        &[
            "work-order",
            "create",
            "--agent",
            "8002",
            "--summary",
            "made by ctl",
            "--caller",
            "13900000000",
        ],
    );
    assert!(ok, "{out}\n{err}");
    let id3 = out.trim().to_owned();
    let w = poll_order(&d, &id3, |_| true);
    assert_eq!(w["payload"]["summary"], "made by ctl", "{w}");
    let (ok, out, err) = ctl(
        &d,
        &[
            "work-order",
            "status",
            &id3,
            "closed",
            "--agent",
            "8002",
            "--note",
            "done",
        ],
    );
    assert!(ok && out.contains("accepted"), "{out}\n{err}");
    let w = poll_order(&d, &id3, |w| w["status"] == "closed");
    assert_eq!(w["history"][1]["note"], "done", "{w}");
    let (ok, _, err) = ctl(
        &d,
        &["work-order", "create", "--agent", "9999", "--summary", "x"],
    );
    assert!(!ok);
    assert!(err.contains("unknown agent"), "{err}");
}

/// A store that cannot keep up: the writer is stuck (another process holds SQLite's write lock)
/// and its queue holds one record, so an order beyond that gets 503 at once — the API never waits
/// for the disk — and the orders accepted before it are committed once the lock is released.
#[test]
fn a_full_store_queue_is_a_503_and_accepted_orders_commit_later() {
    let mut s = admin_settings("127.0.4.52");
    s.config_edits.push((
        "callback_after_abandon_s = 30\n".into(),
        "callback_after_abandon_s = 30\nqueue_capacity = 1\nbusy_timeout_ms = 100\n".into(),
    ));
    let d = Daemon::start_with(s);
    assert!(
        std::fs::read_to_string(&d.config)
            .unwrap()
            .contains("queue_capacity = 1"),
        "the config edit applied"
    );
    // Another process takes the write lock and keeps it while its stdin is open.
    let mut lock = std::process::Command::new("sqlite3")
        .arg(d.dir.path().join("switchboard.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 (apt-get install sqlite3)");
    {
        use std::io::Write;
        let stdin = lock.stdin.as_mut().unwrap();
        writeln!(stdin, "BEGIN EXCLUSIVE; SELECT 'locked';").unwrap();
        stdin.flush().unwrap();
    }
    // Wait until it holds the lock (it prints `locked`).
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(lock.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let body = r#"{"agent":"8002","summary":"queue test"}"#;
    let mut accepted = Vec::new();
    let mut busy = None;
    for _ in 0..10 {
        let t = Instant::now();
        let (s, _, reply) = http(&d, "POST", "/api/v1/work-orders", Some(ADMIN_TOKEN), body);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the API waited on the disk"
        );
        match s {
            201 => accepted.push(
                serde_json::from_str::<serde_json::Value>(&reply).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            503 => {
                busy = Some(reply);
                break;
            }
            other => panic!("{other}: {reply}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = busy.unwrap_or_else(|| panic!("no 503 with the writer stuck\n{}", d.log()));
    assert!(busy.contains("store is busy"), "{busy}");
    eprintln!(
        "writer stuck: {} accepted, then 503: {busy}",
        accepted.len()
    );
    assert!(!accepted.is_empty() && accepted.len() <= 3, "{accepted:?}");
    // Release the lock: the writer retries and commits what it accepted.
    drop(lock.stdin.take());
    let _ = lock.wait();
    for id in &accepted {
        poll_order(&d, id, |_| true);
    }
}
