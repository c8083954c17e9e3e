//! Prometheus metrics scraped during a SIPp run show the right counts.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

#[test]
fn a_scrape_after_calls_shows_the_calls_the_queue_kpis_and_the_agents() {
    let d = Daemon::start();
    let port = free_port("127.0.0.71");
    register(&d, "8002", "127.0.0.71", port, "u1");
    let p = port.to_string();
    let agent = sipp(
        "phone 8002",
        &[
            "-sf",
            &scenario("uas.xml"),
            "-s",
            "8002",
            "-i",
            "127.0.0.71",
            "-p",
            &p,
            "-m",
            "2",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    // Two merge-line calls from Haidong (the carrier's 0972 prefix), answered by Haidong's agent.
    let tp = free_port("127.0.0.2").to_string();
    let (ok, diag) = sipp(
        "calls",
        &[
            &d.target(),
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "097212331",
            "-i",
            "127.0.0.2",
            "-p",
            &tp,
            "-m",
            "2",
            "-r",
            "1",
        ],
    )
    .finish(LIMIT);
    let (a_ok, a_diag) = agent.finish(LIMIT);
    assert!(ok && a_ok, "{diag}\n{a_diag}\n--- daemon\n{}", d.log());
    // Gauges and KPIs are published once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let m = scrape(&d);
    let q = "queue=\"12345-haidong\"";
    assert_eq!(
        sample(&m, "switchboard_calls_total{mode=\"merge\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("switchboard_queue_offered_total{{{q}}}")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("switchboard_queue_answered_total{{{q}}}")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("switchboard_queue_answered_within_15s_total{{{q}}}")
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("switchboard_queue_abandoned_total{{{q}}}")),
        Some(0.0),
        "{m}"
    );
    assert!(
        sample(&m, "switchboard_sip_requests_total{method=\"REGISTER\"}").unwrap_or(0.0) >= 2.0,
        "{m}"
    );
    assert_eq!(sample(&m, "switchboard_registrations"), Some(1.0), "{m}");
    // 8002 is in wrap-up (10 s) or available again: logged in either way.
    let wrap = sample(&m, &format!("switchboard_agents{{{q},state=\"wrap_up\"}}")).unwrap_or(0.0);
    let avail = sample(
        &m,
        &format!("switchboard_agents{{{q},state=\"available\"}}"),
    )
    .unwrap_or(0.0);
    assert_eq!(wrap + avail, 1.0, "{m}");
    assert!(m.contains("switchboard_queue_wait_seconds_bucket"), "{m}");
    // Both calls ended answered on their line, and the store has committed their CDRs.
    let ended: f64 = m
        .lines()
        .filter(|l| {
            l.starts_with("switchboard_calls_ended_total{")
                && l.contains("mode=\"merge\"")
                && l.contains("outcome=\"answered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(ended, 2.0, "{m}");
    assert_eq!(sample(&m, "switchboard_store_backlog"), Some(0.0), "{m}");
    // The core's busy time: some work done (two calls, registrations), far from a saturated second
    // per second of uptime.
    let busy = sample(&m, "switchboard_core_busy_microseconds_total").unwrap_or(0.0);
    assert!(busy > 0.0 && busy < 5e6, "busy {busy} µs\n{m}");
    // A reload (SIGHUP) is counted.
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(1500));
    let m = scrape(&d);
    assert_eq!(
        sample(&m, "switchboard_config_reloads_total{result=\"ok\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(m.contains("switchboard_build_info{version="), "{m}");
}
