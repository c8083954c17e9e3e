//! The active/standby pair over PostgreSQL (ha.rs): two daemons on one database, each on its own
//! temp folder and metrics port, both configured with the same service address (127.0.0.1:<port>),
//! which only the node holding the advisory lock binds. PostgreSQL is a throwaway server started
//! by the test (store::testing::PgServer). PSAPs: 127.0.1.1 police (takeover, a Xining caller),
//! 127.0.1.2 police (fenced, a Haidong caller). Agents' phones: 127.0.0.61–69 and 127.0.0.71–76.

mod common;

use std::time::{Duration, Instant};

use common::admin::{http_at, ADMIN_TOKEN};
use common::*;
use store::testing::PgServer;

const LIMIT: Duration = Duration::from_secs(40);
const RR_SECRET: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// Haidong's agent takes the next call at once (as in cdr_sigkill_load.rs).
fn no_wrap_up() -> (String, String) {
    (
        "center = \"haidong\"\nring_timeout_s = 20\nmax_no_answer = 3\nwrap_up_s = 10".to_owned(),
        "center = \"haidong\"\nring_timeout_s = 20\nmax_no_answer = 3\nwrap_up_s = 0".to_owned(),
    )
}

/// A node of the pair: HA on `url` (with `extra_ha` lines), CDRs in the same database under its
/// own work-order node name, the shared Record-Route secret, the admin API, and (for the second
/// node) its own metrics port.
fn node(name: &str, url: &str, metrics: Option<(u16, u16)>, extra_ha: &str) -> Settings {
    let mut edits = vec![
        (
            "max_message_bytes = 65535".to_owned(),
            format!("max_message_bytes = 65535\nrr_secret_hex = \"{RR_SECRET}\""),
        ),
        (
            "path = \"switchboard.db\"".to_owned(),
            format!("path = \"switchboard.db\"\npostgres_url = \"{url}\"\nnode = \"{name}\""),
        ),
        (
            "[log]".to_owned(),
            format!(
                "[ha]\npostgres_url = \"{url}\"\nnode = \"{name}\"\nheartbeat_ms = 200\nfence_after_ms = 1000\n{extra_ha}\n\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\n[log]"
            ),
        ),
    ];
    if let Some((from, to)) = metrics {
        edits.push((
            format!("listen = \"127.0.0.1:{from}\""),
            format!("listen = \"127.0.0.1:{to}\""),
        ));
    }
    Settings {
        config_edits: edits,
        ..Settings::default()
    }
}

/// Two nodes on one database: `a` active, `b` standby (on its own metrics port, `b_metrics`).
struct Pair {
    pg: PgServer,
    url: String,
    a: Daemon,
    b: Daemon,
    b_metrics: u16,
}

fn pair(extra_ha: &str, seat_edits: Vec<(String, String)>) -> Pair {
    let pg = PgServer::start();
    let url = pg.create_db("ha");
    let port = free_port("127.0.0.1");
    let mut sa = node("a", &url, None, extra_ha);
    sa.seat_edits = seat_edits.clone();
    let a = Daemon::spawn_on(port, sa);
    assert!(a.answers_within(Duration::from_secs(15)), "{}", a.log());
    let b_metrics = free_port("127.0.0.1");
    let mut sb = node("b", &url, Some((metrics_port(port), b_metrics)), extra_ha);
    sb.seat_edits = seat_edits;
    let b = Daemon::spawn_on(port, sb);
    let end = Instant::now() + Duration::from_secs(15);
    while !b.log().contains("HA: standby until") {
        assert!(Instant::now() < end, "b did not start\n{}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    Pair {
        pg,
        url,
        a,
        b,
        b_metrics,
    }
}

impl Pair {
    /// `GET /api/v1/ha` on b, parsed.
    fn b_ha(&self) -> serde_json::Value {
        let (status, _, body) = http_at(self.b_metrics, "GET", "/api/v1/ha", Some(ADMIN_TOKEN), "");
        assert_eq!(status, 200, "{body}\n--- b\n{}", self.b.log());
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until b's warm copy holds at least `n` registrations.
    fn b_warm(&self, n: u64) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.b_ha();
            if v["registrations"].as_u64() >= Some(n) {
                return;
            }
            assert!(
                Instant::now() < end,
                "b holds {v} after 5 s, expected {n} registrations\n--- b\n{}",
                self.b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL a; asserts b answers within 5 s and returns (SIGKILL → b answers OPTIONS, the
    /// lock → serving part as b measured it).
    fn kill_a(&self) -> (Duration, String) {
        self.a.signal("KILL");
        let killed = Instant::now();
        assert!(
            self.b.answers_within(Duration::from_secs(5)),
            "no takeover within 5 s\n--- b\n{}",
            self.b.log()
        );
        let took = killed.elapsed();
        let log = self.b.log();
        let serving = log
            .lines()
            .find(|l| l.contains("HA: serving, this long after taking the lock"))
            .and_then(|l| l.split("ms=").nth(1))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("no lock → serving line\n{log}"));
        (took, serving)
    }

    fn sql_count(&self, sql: &str) -> i64 {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        c.query_one(sql, &[]).unwrap().get(0)
    }

    /// Waits up to `limit` for `sql` (a count) to reach `n`.
    fn wait_count(&self, sql: &str, n: i64, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let got = self.sql_count(sql);
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < end,
                "{sql}: {got} after {limit:?}, expected {n}\n--- a\n{}\n--- b\n{}",
                self.a.log(),
                self.b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_standby_takes_over_within_5_s_keeping_calls_registrations_and_110() {
    let p = pair("", Vec::new());
    assert!(!p.b.log().contains("listening on UDP"), "{}", p.b.log());

    // An agent registers through the service address (node a) and answers two calls.
    let ip = "127.0.0.61";
    let ap = free_port(ip);
    register(&p.a, "8001", ip, ap, "u1");
    let agent = uas("agent 8001", "uas.xml", "8001", ip, ap, 2);
    // The standby holds the registration before anything fails.
    p.b_warm(1);
    let call = uac(
        &p.a,
        "call across the failover",
        "uac.xml",
        "12345",
        "127.0.0.2",
        &["-d", "6000"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (took, serving) = p.kill_a();
    println!(
        "takeover after SIGKILL: {} ms; lock → serving: {serving} ms",
        took.as_millis()
    );
    assert!(
        p.b.log().contains("taken over from the warm copy"),
        "{}",
        p.b.log()
    );

    // The call set up through node a ends with a BYE routed by node b.
    let (ok, diag) = call.finish(LIMIT);
    assert!(ok, "{diag}\n--- b\n{}", p.b.log());
    // A new call reaches the agent without it registering again.
    let (ok, diag) = uac(&p.b, "call after", "uac.xml", "12345", "127.0.0.2", &[]).finish(LIMIT);
    let (a_ok, a_diag) = agent.finish(LIMIT);
    assert!(ok && a_ok, "{diag}\n{a_diag}\n--- b\n{}", p.b.log());
    // And 110 routes on the new active node.
    let police = uas("police", "uas.xml", "psap", "127.0.1.1", 5110, 1);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, diag) = uac(&p.b, "110", "uac.xml", "110", "127.0.0.2", &[]).finish(LIMIT);
    let (p_ok, p_diag) = police.finish(LIMIT);
    assert!(ok && p_ok, "{diag}\n{p_diag}\n--- b\n{}", p.b.log());
    assert!(p_diag.contains("INVITE sip:110@127.0.1.1:5110"), "{p_diag}");

    // The answered calls' CDRs are in the shared database.
    let n = p.sql_count("SELECT count(*) FROM cdr WHERE outcome = 'answered'");
    assert!(n >= 2, "answered CDRs in PostgreSQL: {n}");
}

/// "No registration is lost": six agents register one after another and node a is killed the
/// moment the last 200 OK is in. Each binding is written when its REGISTER is accepted (right
/// after the 200 OK, one commit later), so every agent is reachable through node b.
#[test]
fn registrations_made_just_before_the_kill_are_all_reachable_on_the_new_node() {
    let p = pair("", Vec::new());
    let agents: Vec<(String, String, u16)> = (3..=8)
        .map(|i| {
            let ip = format!("127.0.0.7{i}");
            let port = free_port(&ip);
            (format!("800{i}"), ip, port)
        })
        .collect();
    let (last, first) = agents.split_last().unwrap();
    for (user, ip, port) in first {
        register(&p.a, user, ip, *port, "u1");
    }
    // The gap between a 200 OK and the commit of its binding, as node a measured it so far.
    let s = scrape(&p.a);
    let count = sample(&s, "switchboard_ha_registration_lag_seconds_count").unwrap_or(0.0);
    let sum = sample(&s, "switchboard_ha_registration_lag_seconds_sum").unwrap_or(0.0);
    assert!(count >= 1.0, "no registration write measured:\n{s}");
    println!(
        "200 OK → committed in PostgreSQL: {count} batches, mean {:.2} ms",
        sum / count * 1e3
    );
    register(&p.a, &last.0, &last.1, last.2, "u1");
    let (took, serving) = p.kill_a();
    println!(
        "takeover after SIGKILL: {} ms; lock → serving: {serving} ms",
        took.as_millis()
    );
    let log = p.b.log();
    assert!(log.contains("registrations=6"), "{log}");

    // Each agent's own number rings its phone through node b.
    let phones: Vec<Sipp> = agents
        .iter()
        .map(|(user, ip, port)| uas(&format!("agent {user}"), "uas.xml", user, ip, *port, 1))
        .collect();
    for (user, _, _) in &agents {
        let (ok, diag) = uac(
            &p.b,
            &format!("call {user}"),
            "uac.xml",
            user,
            "127.0.0.2",
            &[],
        )
        .finish(LIMIT);
        assert!(
            ok,
            "agent {user} not reachable after the failover\n{diag}\n--- b\n{}",
            p.b.log()
        );
    }
    for phone in phones {
        let (ok, diag) = phone.finish(LIMIT);
        assert!(ok, "{diag}");
    }
}

/// An answered call's CDR survives the death of the node that answered it: its open row is in
/// PostgreSQL, and the new node closes it when the BYE comes through it. A call whose BYE never
/// comes within `[ha] max_call_s` of its answer is closed as failover-lost.
#[test]
fn a_call_answered_before_the_failover_keeps_its_cdr() {
    let p = pair("max_call_s = 6", Vec::new());
    let (ip1, ip2) = ("127.0.0.63", "127.0.0.64");
    let (p1, p2) = (free_port(ip1), free_port(ip2));
    register(&p.a, "8001", ip1, p1, "u1");
    register(&p.a, "8002", ip2, p2, "u1");
    let xining = uas("agent 8001", "uas.xml", "8001", ip1, p1, 1);
    let haidong = uas("agent 8002", "uas.xml", "8002", ip2, p2, 1);
    p.b_warm(2);
    const OPEN: &str = "SELECT count(*) FROM kv WHERE space = 'open-call'";
    // A long call to Haidong (it outlives max_call_s), then a short one to Xining.
    let long = uac(
        &p.a,
        "long call",
        "uac.xml",
        "097212331",
        "127.0.0.2",
        &["-d", "25000"],
    );
    p.wait_count(OPEN, 1, Duration::from_secs(10));
    let short = uac(
        &p.a,
        "short call",
        "uac.xml",
        "12345",
        "127.0.0.2",
        &["-d", "3000"],
    );
    p.wait_count(OPEN, 2, Duration::from_secs(10));
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        p.sql_count("SELECT count(*) FROM cdr"),
        0,
        "no call has ended before the kill"
    );
    let (took, _) = p.kill_a();
    println!("takeover after SIGKILL: {} ms", took.as_millis());
    assert!(p.b.log().contains("waiting=2"), "{}", p.b.log());

    // The short call's BYE goes through node b, which closes its CDR.
    let (ok, diag) = short.finish(LIMIT);
    assert!(ok, "{diag}\n--- b\n{}", p.b.log());
    let (ok, diag) = xining.finish(LIMIT);
    assert!(ok, "{diag}");
    p.wait_count(
        "SELECT count(*) FROM cdr WHERE agent = '8001'",
        1,
        Duration::from_secs(5),
    );
    let mut c = postgres::Client::connect(&p.url, postgres::NoTls).unwrap();
    let row = c
        .query_one(
            "SELECT outcome, answered_ms, ended_ms, arrival_ms, dialed FROM cdr WHERE agent = '8001'",
            &[],
        )
        .unwrap();
    let (outcome, answered, ended, arrival, dialed): (String, Option<i64>, i64, i64, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    println!(
        "short call's CDR: {outcome}, answered {answered:?}, ended {ended}, killed {killed_ms}"
    );
    assert_eq!((outcome.as_str(), dialed.as_str()), ("answered", "12345"));
    let answered = answered.expect("answer time kept from node a");
    assert!(
        arrival <= answered && answered < killed_ms,
        "answered {answered} before the kill {killed_ms}"
    );
    assert!(
        ended > killed_ms,
        "ended {ended} after the kill {killed_ms}: the BYE came through b"
    );
    assert!(
        ended - answered >= 2_500,
        "the call lasted its 3 s: answered {answered}, ended {ended}"
    );

    // The long call is closed as failover-lost once max_call_s has passed since its answer.
    p.wait_count(
        "SELECT count(*) FROM cdr WHERE outcome = 'failover-lost'",
        1,
        Duration::from_secs(15),
    );
    let row = c
        .query_one(
            "SELECT dialed, answered_ms, ended_ms FROM cdr WHERE outcome = 'failover-lost'",
            &[],
        )
        .unwrap();
    let (dialed, answered, ended): (String, Option<i64>, i64) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(dialed, "097212331");
    let answered = answered.expect("answer time kept");
    assert!(
        ended >= answered + 6_000,
        "closed after max_call_s: {answered} → {ended}"
    );
    assert_eq!(p.sql_count(OPEN), 0, "both open rows closed");
    assert!(p.b.log().contains("failover-lost"), "{}", p.b.log());
    drop(long);
    drop(haidong);
}

/// A standby's admin API answers at once: `GET /api/v1/ha` with its role and warm copy, 503 with
/// a JSON body for everything else (its core task is not running). After the takeover it serves
/// the agent states it kept warm.
#[test]
fn a_standby_answers_its_admin_api_at_once() {
    let p = pair("", Vec::new());
    let ip = "127.0.0.65";
    register(&p.a, "8001", ip, free_port(ip), "u1");
    // The agent takes a break on node a; the standby learns it from the shared store.
    let (status, _, body) = http_at(
        metrics_port(p.a.port),
        "POST",
        "/api/v1/agents/8001/state",
        Some(ADMIN_TOKEN),
        r#"{"state": "break", "reason": 3}"#,
    );
    assert_eq!(status, 200, "{body}");
    p.b_warm(1);

    let v = p.b_ha();
    assert_eq!(
        (v["node"].as_str(), v["role"].as_str()),
        (Some("b"), Some("standby")),
        "{v}"
    );
    assert!(v["last_db_ok_ms"].as_i64() > Some(0), "{v}");
    for (method, path) in [
        ("GET", "/api/v1/agents"),
        ("GET", "/api/v1/calls"),
        ("POST", "/api/v1/reload"),
        ("GET", "/api/v1/events"),
    ] {
        let t = Instant::now();
        let (status, head, body) = http_at(p.b_metrics, method, path, Some(ADMIN_TOKEN), "");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{method} {path} took {:?}",
            t.elapsed()
        );
        assert_eq!(status, 503, "{method} {path}: {body}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 5"),
            "{head}"
        );
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            e["error"].as_str().is_some_and(|m| m.contains("standby")),
            "{e}"
        );
        assert_eq!(e["role"], "standby", "{e}");
    }
    // `ctl` says the same.
    let (ok, out, err) = common::admin::ctl(&p.b, &["ha"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("b ") && l.contains(" standby ")),
        "{out}{err}"
    );
    let (ok, _, err) = common::admin::ctl(&p.b, &["agents"]);
    assert!(!ok && err.contains("HTTP 503: standby"), "{err}");
    // Still no answer without the token, and /metrics is served.
    let (status, _, _) = http_at(p.b_metrics, "GET", "/api/v1/ha", None, "");
    assert_eq!(status, 401);
    let (status, _, body) = http_at(p.b_metrics, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    assert!(body.contains("switchboard_ha_active 0"), "{body}");

    // The break taken on node a before it died holds on node b.
    std::thread::sleep(Duration::from_millis(1500));
    p.kill_a();
    let v = p.b_ha();
    assert_eq!(v["role"], "active", "{v}");
    let (status, _, body) = http_at(
        p.b_metrics,
        "GET",
        "/api/v1/agents/8001",
        Some(ADMIN_TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let agent: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            agent["state"].as_str(),
            agent["break_reason"].as_u64(),
            agent["registered"].as_bool()
        ),
        (Some("break"), Some(3), Some(true)),
        "{agent}"
    );
}

#[test]
fn losing_the_database_fences_the_active_node_but_not_110() {
    let mut pg = PgServer::start();
    let url = pg.create_db("ha");
    let port = free_port("127.0.0.1");
    let a = Daemon::spawn_on(port, node("a", &url, None, ""));
    assert!(a.answers_within(Duration::from_secs(15)), "{}", a.log());
    let stopped = Instant::now();
    pg.stop();
    // Fenced within fence_after_ms (1 s here) plus a heartbeat.
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, diag) = uac(&a, "fenced", "uac.xml", "12345", "127.0.0.2", &[]).finish(LIMIT);
    assert!(!ok, "an ordinary call must be refused while fenced: {diag}");
    assert!(
        diag.contains("SIP/2.0 503 Service Unavailable (database unreachable)"),
        "{diag}\n--- daemon\n{}",
        a.log()
    );
    assert!(diag.contains("Retry-After: 5"), "{diag}");
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "the refusal did not hang"
    );
    assert!(a.log().contains("HA fenced"), "{}", a.log());
    // Emergency calls read nothing from the database: they still route.
    let police = uas("police", "uas.xml", "psap", "127.0.1.2", 5110, 1);
    std::thread::sleep(Duration::from_millis(300));
    // A Haidong landline: Haidong's police (127.0.1.2), not the other test's Xining PSAP.
    let (ok, diag) = uac(
        &a,
        "110 while fenced",
        "uac_haidong.xml",
        "110",
        "127.0.0.2",
        &[],
    )
    .finish(LIMIT);
    let (p_ok, p_diag) = police.finish(LIMIT);
    assert!(ok && p_ok, "{diag}\n{p_diag}\n--- daemon\n{}", a.log());
}

/// SIGKILL of the active node in the middle of a SIPp load: the standby takes over within 5 s,
/// the load's later calls are answered through it, and every CDR the dead node had acknowledged
/// is in PostgreSQL. "Acknowledged" is read as in `cdr_sigkill_load.rs`: a scrape showing
/// `switchboard_store_backlog 0` covers the calls-ended count of a scrape at least 2.5 s older
/// (the gauge is sampled once a second). Then a second load runs through the new node alone, and
/// every one of its calls is answered.
///
/// Calls waiting in node a's queue at the kill had their 182 from it and are never answered (the
/// new node does not know them): the first load aborts those with `-recv_timeout` rather than
/// waiting for a 200 that cannot come. The agent's phone lives through both loads (a SIPp that
/// quit after the default 30 s left the second load of an earlier version of this test ringing a
/// phone that was gone).
#[test]
fn sigkill_of_the_active_node_under_load_loses_no_acknowledged_cdr() {
    let p = pair("", vec![no_wrap_up()]);
    let a = &p.a;
    let ip = "127.0.0.62";
    let ap = free_port(ip);
    register(a, "8002", ip, ap, "u1");
    let ap_s = ap.to_string();
    let agent = sipp_for(
        "agent 8002",
        &[
            "-sf",
            &scenario("uas.xml"),
            "-s",
            "8002",
            "-i",
            ip,
            "-p",
            &ap_s,
            "-m",
            "1000",
        ],
        150,
    );
    p.b_warm(1);
    // Short calls to a Haidong merge line, answered by the Haidong agent.
    let target = a.target();
    let scn = scenario("uac.xml");
    let load_args = |port: &str, rate: &str, calls: &str| -> Vec<String> {
        [
            target.as_str(),
            "-sf",
            &scn,
            "-s",
            "097212331",
            "-i",
            "127.0.0.2",
            "-p",
            port,
            "-r",
            rate,
            "-m",
            calls,
            "-l",
            "40",
            "-d",
            "100",
            "-recv_timeout",
            "15000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let tp = free_port("127.0.0.2").to_string();
    let args = load_args(&tp, "20", "200");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let load = sipp_for("load", &args, 90);
    let start = Instant::now();
    let mut seen: Vec<(Instant, f64)> = Vec::new();
    let acknowledged = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no moment with backlog 0 after 60 ended calls: {seen:?}\n--- a\n{}",
            a.log()
        );
        let at = Instant::now();
        let s = scrape(a);
        let ended = ended_total(&s);
        if sample(&s, "switchboard_store_backlog") == Some(0.0) {
            if let Some(&(_, n)) = seen
                .iter()
                .rev()
                .find(|(t, _)| at - *t >= Duration::from_millis(2500))
            {
                if n >= 60.0 {
                    break n;
                }
            }
        }
        seen.push((at, ended));
        std::thread::sleep(Duration::from_millis(50));
    };
    let (took, serving) = p.kill_a();
    println!(
        "takeover under load: {} ms (lock → serving {serving} ms); {acknowledged} calls acknowledged before the kill",
        took.as_millis()
    );
    // The load goes on through the new active node (the calls in flight at the kill fail).
    let t = Instant::now();
    let _ = load.finish(Duration::from_secs(90));
    println!(
        "first load ended {} ms after the kill",
        t.elapsed().as_millis()
    );
    assert!(
        p.b.log().contains("call answered"),
        "no call answered through the new node\n--- b\n{}",
        p.b.log()
    );
    let rows = p.sql_count("SELECT count(*) FROM cdr");
    println!("CDRs in PostgreSQL: {rows}");
    assert!(
        rows as f64 >= acknowledged,
        "{rows} CDRs, but {acknowledged} were acknowledged before the kill"
    );

    // A second load through the new node alone: every call answered.
    let tp = free_port("127.0.0.2").to_string();
    let args = load_args(&tp, "5", "50");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = p.sql_count("SELECT count(*) FROM cdr WHERE outcome = 'answered'");
    let t = Instant::now();
    let (ok, diag) = sipp_for("second load", &args, 60).finish(Duration::from_secs(60));
    println!(
        "second load through node b: ok={ok} in {} ms",
        t.elapsed().as_millis()
    );
    assert!(
        ok,
        "{}\n--- b\n{}",
        &diag[..diag.len().min(4000)],
        p.b.log()
    );
    p.wait_count(
        "SELECT count(*) FROM cdr WHERE outcome = 'answered'",
        before + 50,
        Duration::from_secs(5),
    );
    drop(agent);
    let _ = &p.pg;
}
