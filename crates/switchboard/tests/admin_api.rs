//! The admin API and `switchboard ctl` against the real daemon: token checks, and values that
//! follow SIPp-registered agents and SIPp calls really queued. Roles on 127.0.5.x.

mod common;

use std::time::Duration;

use common::admin::*;
use common::*;

const LIMIT: Duration = Duration::from_secs(40);
const TRUNK: &str = "127.0.5.2";
const PHONE: &str = "127.0.5.12";

#[test]
fn the_api_refuses_a_missing_or_wrong_token_and_answers_the_right_one() {
    let d = Daemon::start_with(admin_settings(TRUNK));
    for path in [
        "/api/v1/agents",
        "/api/v1/queues",
        "/api/v1/calls",
        "/api/v1/registrations",
        "/api/v1/roster-check",
        "/api/v1/work-orders",
    ] {
        let (s, head, body) = http(&d, "GET", path, None, "");
        assert_eq!(s, 401, "no token: {path}: {head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
        let (s, _, body) = http(&d, "GET", path, Some("test-admin-token-0123456780"), "");
        assert_eq!(s, 401, "wrong token: {path}: {body}");
        // The wall screen's token reads the event stream and nothing else.
        let (s, _, body) = http(&d, "GET", path, Some(WALL_TOKEN), "");
        assert_eq!(s, 401, "wallboard token: {path}: {body}");
        let (s, _, body) = http(&d, "GET", path, Some(ADMIN_TOKEN), "");
        assert_eq!(s, 200, "right token: {path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON: {e}: {body}"));
    }
    // Changes need the token too, and nothing changes without it.
    let (s, _, _) = http(&d, "POST", "/api/v1/reload", None, "");
    assert_eq!(s, 401);
    let (s, _, _) = http(
        &d,
        "POST",
        "/api/v1/agents/8002/state",
        Some(WALL_TOKEN),
        r#"{"state":"ready"}"#,
    );
    assert_eq!(s, 401);
    assert!(!d.log().contains("reloading"), "{}", d.log());
    // The event stream: no token or a wrong one in the query is refused.
    let (s, _, _) = http(&d, "GET", "/api/v1/events", None, "");
    assert_eq!(s, 401);
    let (s, _, _) = http(
        &d,
        "GET",
        "/api/v1/events?token=nope-nope-nope-nope",
        None,
        "",
    );
    assert_eq!(s, 401);
    // Prometheus and the static page need no token.
    let (s, _, body) = http(&d, "GET", "/metrics", None, "");
    assert_eq!(s, 200);
    assert!(body.contains("switchboard_build_info"), "{body}");
    let (s, _, body) = http(&d, "GET", "/wallboard", None, "");
    assert_eq!(s, 200);
    assert!(body.contains("EventSource"), "{body}");
    // ctl with a wrong token fails clearly; with the config's token it works.
    let (ok, _, err) = ctl(&d, &["--token", "test-admin-token-0123456780", "agents"]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) = ctl(&d, &["agents"]);
    assert!(ok, "{err}");
    assert!(out.contains("8002") && out.contains("logged_out"), "{out}");
}

#[test]
fn api_and_ctl_show_registered_agents_queued_callers_and_calls() {
    let d = Daemon::start_with(admin_settings(TRUNK));
    let port = free_port(PHONE);
    // Before: 8002 is logged out, with no phone.
    let a = get_json(&d, "/api/v1/agents");
    let a8002 = a.as_array().unwrap().iter().find(|a| a["id"] == "8002");
    assert_eq!(a8002.unwrap()["state"], "logged_out", "{a}");
    assert_eq!(a8002.unwrap()["registered"], false, "{a}");

    register(&d, "8002", PHONE, port, "u1");
    let regs = get_json(&d, "/api/v1/registrations");
    let reg = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == "8002")
        .unwrap_or_else(|| panic!("8002 not in {regs}"));
    assert_eq!(reg["source"], format!("{PHONE}:{port}"), "{regs}");
    assert_eq!(reg["transport"], "udp", "{regs}");
    // Haidong logs agents in on registration.
    let a = get_json(&d, "/api/v1/agents/8002");
    assert_eq!(a["state"], "available", "{a}");
    assert_eq!(a["registered"], true, "{a}");

    // The phone answers two calls. The first lasts 6 s; the second arrives meanwhile and waits.
    let phone = uas("phone 8002", "uas.xml", "8002", PHONE, port, 2);
    let first = uac(
        &d,
        "long call",
        "uac.xml",
        "097212331",
        TRUNK,
        &["-d", "6000"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let second = uac(&d, "queued call", "uac.xml", "097212331", TRUNK, &[]);
    std::thread::sleep(Duration::from_millis(1500));

    let a = get_json(&d, "/api/v1/agents/8002");
    assert_eq!(a["state"], "on_call", "{a}");
    let queues = get_json(&d, "/api/v1/queues");
    let q = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == "12345-haidong")
        .unwrap_or_else(|| panic!("{queues}"))
        .clone();
    assert_eq!(q["center"], "haidong", "{q}");
    assert_eq!(q["offered"], 2, "{q}");
    assert_eq!(q["answered"], 1, "{q}");
    assert_eq!(q["waiting_now"], 1, "{q}");
    assert_eq!(q["agents"]["on_call"], 1, "{q}");
    let callers = q["callers"].as_array().unwrap();
    assert_eq!(callers.len(), 1, "{q}");
    assert_eq!(callers[0]["phase"], "waiting", "{q}");
    // The number is personal data: redacted.
    assert_eq!(callers[0]["caller"], "138******00", "{q}");
    let waited = callers[0]["waited_s"].as_f64().unwrap();
    assert!((1.0..5.0).contains(&waited), "{q}");
    let calls = get_json(&d, "/api/v1/calls");
    let states: Vec<&str> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 2, "{calls}");
    assert!(
        states.contains(&"connected") && states.contains(&"queued"),
        "{calls}"
    );
    let connected = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["state"] == "connected")
        .unwrap();
    assert_eq!(connected["agent"], "8002", "{calls}");
    assert_eq!(connected["queue"], "12345-haidong", "{calls}");

    // The same through ctl, as people read it.
    let (ok, out, err) = ctl(&d, &["agents"]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with("8002 ")).unwrap();
    assert!(line.contains("on_call") && line.contains("yes"), "{out}");
    let (ok, out, err) = ctl(&d, &["queues"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("12345-haidong "))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["haidong", "1"], "waiting 1: {out}");
    assert!(
        out.contains("138******00") && out.contains("waiting"),
        "{out}"
    );
    let (ok, out, err) = ctl(&d, &["calls"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("connected") && out.contains("queued") && out.contains("8002"),
        "{out}"
    );
    let (ok, out, _) = ctl(&d, &["calls", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{out}");
    let (ok, out, _) = ctl(&d, &["registrations"]);
    assert!(ok && out.contains("8002") && out.contains(PHONE), "{out}");

    let (ok1, d1) = first.finish(LIMIT);
    let (ok2, d2) = second.finish(LIMIT);
    let (okp, dp) = phone.finish(LIMIT);
    assert!(
        ok1 && ok2 && okp,
        "{d1}\n{d2}\n{dp}\n--- daemon\n{}",
        d.log()
    );

    let queues = get_json(&d, "/api/v1/queues");
    let q = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == "12345-haidong")
        .unwrap()
        .clone();
    assert_eq!(q["answered"], 2, "{q}");
    assert_eq!(q["waiting_now"], 0, "{q}");
    assert!(q["callers"].as_array().unwrap().is_empty(), "{q}");
    assert_eq!(get_json(&d, "/api/v1/calls").as_array().unwrap().len(), 0);

    // Set the agent's state: break with a reason, then ready again.
    std::thread::sleep(Duration::from_millis(1200)); // past the 1 s wrap-up
    let (ok, out, err) = ctl(&d, &["agent-state", "8002", "break", "--reason", "2"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "8002: break");
    let a = get_json(&d, "/api/v1/agents/8002");
    assert_eq!(a["state"], "break", "{a}");
    assert_eq!(a["break_reason"], 2, "{a}");
    let (ok, out, _) = ctl(&d, &["agents", "--json"]);
    assert!(ok && out.contains("\"break\""), "{out}");
    let (s, _, body) = http(
        &d,
        "POST",
        "/api/v1/agents/8002/state",
        Some(ADMIN_TOKEN),
        r#"{"state":"ready"}"#,
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        get_json(&d, "/api/v1/agents/8002")["state"],
        "available",
        "{body}"
    );
    // Bad input: an unknown agent, an unknown state.
    let (s, _, body) = http(
        &d,
        "POST",
        "/api/v1/agents/9999/state",
        Some(ADMIN_TOKEN),
        r#"{"state":"ready"}"#,
    );
    assert_eq!(s, 404, "{body}");
    let (s, _, body) = http(
        &d,
        "POST",
        "/api/v1/agents/8002/state",
        Some(ADMIN_TOKEN),
        r#"{"state":"asleep"}"#,
    );
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("unknown state"), "{body}");
    let (ok, _, err) = ctl(&d, &["agent-state", "8001", "ready"]);
    assert!(!ok && err.contains("no registered phone"), "{err}");
}

#[test]
fn ctl_reload_reports_success_and_refusal_and_roster_check_works() {
    let d = Daemon::start_with(admin_settings(TRUNK));
    let (ok, out, err) = ctl(&d, &["reload"]);
    assert!(ok, "{out}{err}\n{}", d.log());
    assert!(out.starts_with("reloaded: dialplan"), "{out}");
    assert!(d.log().contains("admin API: reloading"), "{}", d.log());
    // Break a dialplan: the reload is refused with the file:line, and ctl exits non-zero.
    let plan = d.dir.path().join("dialplans/qinghai.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    std::fs::write(&plan, format!("{text}\n[[nonsense\n")).unwrap();
    let (ok, out, _) = ctl(&d, &["reload"]);
    assert!(!ok, "{out}");
    assert!(out.contains("reload refused"), "{out}");
    assert!(out.contains("qinghai.toml:"), "{out}");
    let (s, _, body) = http(&d, "POST", "/api/v1/reload", Some(ADMIN_TOKEN), "");
    assert_eq!(s, 422, "{body}");
    std::fs::write(&plan, text).unwrap();
    let (ok, out, _) = ctl(&d, &["roster-check"]);
    assert!(ok, "{out}");
    assert!(out.contains("every queue has a staffed path"), "{out}");
    let (ok, out, err) = ctl(&d, &["work-orders"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ID"), "{out}");
}

#[test]
fn every_path_in_the_openapi_file_is_served() {
    let d = Daemon::start_with(admin_settings(TRUNK));
    let spec = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.yaml"),
    )
    .unwrap();
    let lines: Vec<&str> = spec.lines().collect();
    let mut checked = 0;
    for (i, l) in lines.iter().enumerate() {
        let Some(path) = l.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) else {
            continue;
        };
        let path = format!("/{path}").replace("{id}", "8002");
        if path == "/api/v1/events" {
            continue; // an endless stream: the wallboard test reads it
        }
        let method = lines[i + 1]
            .trim()
            .trim_end_matches(':')
            .to_ascii_uppercase();
        let body = if path.ends_with("/state") {
            r#"{"state":"logout"}"#
        } else {
            ""
        };
        let (s, _, out) = http(&d, &method, &path, Some(ADMIN_TOKEN), body);
        assert!(
            !out.contains("no such endpoint") && !out.contains("no such path") && s != 0,
            "{method} {path}: {s} {out}"
        );
        checked += 1;
    }
    assert!(
        checked >= 12,
        "only {checked} paths found in docs/openapi.yaml"
    );
}
