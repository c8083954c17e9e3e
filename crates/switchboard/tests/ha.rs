//! The active/standby pair over PostgreSQL (ha.rs): two daemons on one database, each on its own
//! temp folder and metrics port, both configured with the same service address (127.0.0.1:<port>),
//! which only the node holding the advisory lock binds. PostgreSQL is a throwaway server started
//! by the test (store::testing::PgServer). PSAPs: 127.0.1.1 police (takeover, a Xining caller),
//! 127.0.1.2 police (fenced, a Haidong caller).

mod common;

use std::time::{Duration, Instant};

use common::*;
use store::testing::PgServer;

const LIMIT: Duration = Duration::from_secs(40);
const RR_SECRET: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// A node of the pair: HA on `url`, CDRs in the same database, the shared Record-Route secret,
/// and (for the second node) its own metrics port.
fn node(name: &str, url: &str, metrics: Option<(u16, u16)>) -> Settings {
    let mut edits = vec![
        (
            "max_message_bytes = 65535".to_owned(),
            format!("max_message_bytes = 65535\nrr_secret_hex = \"{RR_SECRET}\""),
        ),
        (
            "path = \"switchboard.db\"".to_owned(),
            format!("path = \"switchboard.db\"\npostgres_url = \"{url}\""),
        ),
        (
            "[log]".to_owned(),
            format!(
                "[ha]\npostgres_url = \"{url}\"\nnode = \"{name}\"\nheartbeat_ms = 200\nfence_after_ms = 1000\n\n[log]"
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

#[test]
fn the_standby_takes_over_within_5_s_keeping_calls_registrations_and_110() {
    let pg = PgServer::start();
    let url = pg.create_db("ha");
    let port = free_port("127.0.0.1");
    let a = Daemon::spawn_on(port, node("a", &url, None));
    assert!(a.answers_within(Duration::from_secs(15)), "{}", a.log());
    let b = Daemon::spawn_on(
        port,
        node(
            "b",
            &url,
            Some((metrics_port(port), free_port("127.0.0.1"))),
        ),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(b.log().contains("standby"), "{}", b.log());
    assert!(!b.log().contains("listening on UDP"), "{}", b.log());

    // An agent registers through the service address (node a) and answers two calls.
    let ip = "127.0.0.61";
    let ap = free_port(ip);
    register(&a, "8001", ip, ap, "u1");
    let agent = uas("agent 8001", "uas.xml", "8001", ip, ap, 2);
    // The registration snapshot reaches the database within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let call = uac(
        &a,
        "call across the failover",
        "uac.xml",
        "12345",
        "127.0.0.2",
        &["-d", "6000"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    a.signal("KILL");
    let killed = Instant::now();
    assert!(
        b.answers_within(Duration::from_secs(5)),
        "no takeover within 5 s\n--- b\n{}",
        b.log()
    );
    let takeover = killed.elapsed();
    println!("takeover after SIGKILL: {} ms", takeover.as_millis());
    assert!(b.log().contains("registrations taken over"), "{}", b.log());
    // Agent states come from the shared store too, read after the lock is taken.
    assert!(b.log().contains("agent states restored"), "{}", b.log());

    // The call set up through node a ends with a BYE routed by node b.
    let (ok, diag) = call.finish(LIMIT);
    assert!(ok, "{diag}\n--- b\n{}", b.log());
    // A new call reaches the agent without it registering again.
    let (ok, diag) = uac(&b, "call after", "uac.xml", "12345", "127.0.0.2", &[]).finish(LIMIT);
    let (a_ok, a_diag) = agent.finish(LIMIT);
    assert!(ok && a_ok, "{diag}\n{a_diag}\n--- b\n{}", b.log());
    // And 110 routes on the new active node.
    let police = uas("police", "uas.xml", "psap", "127.0.1.1", 5110, 1);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, diag) = uac(&b, "110", "uac.xml", "110", "127.0.0.2", &[]).finish(LIMIT);
    let (p_ok, p_diag) = police.finish(LIMIT);
    assert!(ok && p_ok, "{diag}\n{p_diag}\n--- b\n{}", b.log());
    assert!(p_diag.contains("INVITE sip:110@127.0.1.1:5110"), "{p_diag}");

    // The answered calls' CDRs are in the shared database.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM cdr WHERE outcome = 'answered'", &[])
        .unwrap()
        .get(0);
    assert!(n >= 1, "CDRs in PostgreSQL: {n}");
}

#[test]
fn losing_the_database_fences_the_active_node_but_not_110() {
    let mut pg = PgServer::start();
    let url = pg.create_db("ha");
    let port = free_port("127.0.0.1");
    let a = Daemon::spawn_on(port, node("a", &url, None));
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
/// the load's later calls are answered through it, and every CDR the dead node had acknowledged is in PostgreSQL.
/// "Acknowledged" is read as in `cdr_sigkill_load.rs`: a scrape showing `switchboard_store_backlog 0`
/// covers the calls-ended count of a scrape at least 2.5 s older (the gauge is sampled once a second).
#[test]
fn sigkill_of_the_active_node_under_load_loses_no_acknowledged_cdr() {
    let pg = PgServer::start();
    let url = pg.create_db("ha");
    let port = free_port("127.0.0.1");
    // Haidong's agent takes the next call at once (as in cdr_sigkill_load.rs).
    let wrap = (
        "center = \"haidong\"\nring_timeout_s = 20\nmax_no_answer = 3\nwrap_up_s = 10".to_owned(),
        "center = \"haidong\"\nring_timeout_s = 20\nmax_no_answer = 3\nwrap_up_s = 0".to_owned(),
    );
    let mut sa = node("a", &url, None);
    sa.seat_edits = vec![wrap.clone()];
    let a = Daemon::spawn_on(port, sa);
    assert!(a.answers_within(Duration::from_secs(15)), "{}", a.log());
    let mut sb = node(
        "b",
        &url,
        Some((metrics_port(port), free_port("127.0.0.1"))),
    );
    sb.seat_edits = vec![wrap];
    let b = Daemon::spawn_on(port, sb);
    let ip = "127.0.0.62";
    let ap = free_port(ip);
    register(&a, "8002", ip, ap, "u1");
    let agent = uas("agent 8002", "uas.xml", "8002", ip, ap, 1000);
    std::thread::sleep(Duration::from_millis(1200));
    // Short calls to a Haidong merge line, answered by the Haidong agent.
    let tp = free_port("127.0.0.2").to_string();
    let target = a.target();
    let scn = scenario("uac.xml");
    let load = sipp(
        "load",
        &[
            &target,
            "-sf",
            &scn,
            "-s",
            "097212331",
            "-i",
            "127.0.0.2",
            "-p",
            &tp,
            "-r",
            "20",
            "-m",
            "200",
            "-l",
            "40",
            "-d",
            "100",
        ],
    );
    let start = Instant::now();
    let mut seen: Vec<(Instant, f64)> = Vec::new();
    let acknowledged = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no moment with backlog 0 after 60 ended calls: {seen:?}\n--- a\n{}",
            a.log()
        );
        let at = Instant::now();
        let s = scrape(&a);
        let ended = ended_total(&s);
        if sample(&s, "switchboard_store_backlog") == Some(0.0) {
            if let Some(&(_, n)) = seen
                .iter()
                .rev()
                .find(|(t, _)| at - *t >= Duration::from_millis(2500))
            {
                if n >= 60.0 {
                    a.signal("KILL");
                    break n;
                }
            }
        }
        seen.push((at, ended));
        std::thread::sleep(Duration::from_millis(50));
    };
    let killed = Instant::now();
    assert!(
        b.answers_within(Duration::from_secs(5)),
        "no takeover within 5 s\n--- b\n{}",
        b.log()
    );
    println!(
        "takeover under load: {} ms; {acknowledged} calls acknowledged before the kill",
        killed.elapsed().as_millis()
    );
    // The load goes on through the new active node (the calls in flight at the kill fail).
    let _ = load.finish(Duration::from_secs(60));
    assert!(
        b.log().contains("call answered"),
        "no call answered through the new node\n--- b\n{}",
        b.log()
    );
    drop(agent);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM cdr", &[]).unwrap().get(0);
    println!("CDRs in PostgreSQL: {rows}");
    assert!(
        rows as f64 >= acknowledged,
        "{rows} CDRs, but {acknowledged} were acknowledged before the kill"
    );
}
