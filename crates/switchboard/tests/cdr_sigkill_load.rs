//! Nothing acknowledged is lost: SIGKILL under load (issue 7, point 4). Roles on 127.0.4.6x.
//!
//! A SIPp trunk places a bounded load of short calls (`-r 20 -m 400`) to a merge line answered
//! by one SIPp agent phone. While it runs, the test scrapes `/metrics` every 50 ms and keeps each
//! scrape's time and `switchboard_calls_ended_total` (summed over its labels). As soon as a scrape
//! shows `switchboard_store_backlog 0`, it SIGKILLs the daemon at once, and then asserts that the
//! CDR table holds at least N rows, where N is the calls-ended count of an *earlier* scrape (see
//! below), that the store opens cleanly (SQLite integrity check, `switchboard cdr export`), and
//! that the daemon starts again on it.
//!
//! The race, honestly: `switchboard_calls_ended_total` is incremented on the core task in the same
//! step that hands the CDR to the writer (`submit` is non-blocking), so a scrape counting N ended
//! calls was taken after N CDRs were submitted. The backlog gauge (submitted minus committed
//! sequence numbers) is *sampled* on the core task once a second, so a scrape showing 0 proves
//! that everything submitted before that sample — not before the scrape — was durably committed.
//! Pairing the 0 with the ended count of the same scrape would over-claim (calls ending between
//! the sample and the scrape are not covered). So N is taken from the latest scrape at least
//! `GAUGE_AGE` (2.5 s: the 1 s sampling period plus generous slack for a loaded core) before the
//! scrape showing 0: the sample it shows was taken after that earlier scrape, so every CDR that
//! scrape counted was committed before the kill. Calls that ended after it may or may not have
//! their CDR; the test asserts only the lower bound and prints both figures. A committed batch
//! survives a SIGKILL (the process dies; the kernel keeps what SQLite wrote to the WAL); surviving
//! power loss is what `synchronous = FULL` is for, and is not tested here.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TRUNK: &str = "127.0.4.60";
const PHONE: &str = "127.0.4.61";
/// How old a scrape must be for the backlog gauge seen later to cover it (see the module doc).
const GAUGE_AGE: Duration = Duration::from_millis(2500);
/// The kill waits until at least this many calls ended, so it really happens under load.
const MIN_ENDED: f64 = 60.0;

#[test]
fn sigkill_under_load_keeps_every_cdr_committed_before_the_last_acknowledged_commit() {
    let mut d = Daemon::start_with(Settings {
        config_edits: vec![(
            "sources = [\"127.0.0.2\"]".into(),
            format!("sources = [\"{TRUNK}\"]"),
        )],
        // The agent takes the next call at once.
        seat_edits: vec![(
            "center = \"haidong\"\nring_timeout_s = 20\nmax_no_answer = 3\nwrap_up_s = 10".into(),
            "center = \"haidong\"\nring_timeout_s = 20\nmax_no_answer = 3\nwrap_up_s = 0".into(),
        )],
        ..Settings::default()
    });
    let port = free_port(PHONE);
    register(&d, "8002", PHONE, port, "u1");
    let agent = uas("phone 8002", "uas.xml", "8002", PHONE, port, 400);
    let tp = free_port(TRUNK).to_string();
    // 400 calls at 20 a second, each held 50 ms once answered, at most 20 at a time.
    let load = sipp(
        "load",
        &[
            &d.target(),
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "097212331",
            "-i",
            TRUNK,
            "-p",
            &tp,
            "-r",
            "20",
            "-m",
            "400",
            "-l",
            "20",
            "-d",
            "50",
        ],
    );

    let start = Instant::now();
    let mut seen: Vec<(Instant, f64)> = Vec::new();
    let mut zeros = 0;
    let (acknowledged, ended_at_kill) = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no moment with backlog 0 after {MIN_ENDED} ended calls; scrapes {seen:?}\n--- daemon\n{}",
            d.log()
        );
        let at = Instant::now();
        let s = scrape(&d);
        let ended = ended_total(&s);
        let backlog = sample(&s, "switchboard_store_backlog");
        if backlog == Some(0.0) {
            zeros += 1;
            // The latest scrape old enough that this sample postdates it.
            if let Some(&(_, n)) = seen.iter().rev().find(|(t, _)| at - *t >= GAUGE_AGE) {
                if n >= MIN_ENDED {
                    d.signal("KILL");
                    break (n, ended);
                }
            }
        }
        seen.push((at, ended));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(d.wait_exit(Duration::from_secs(5)).is_some(), "SIGKILL");
    drop(load);
    drop(agent);
    assert!(
        ended_at_kill < 400.0,
        "the kill came after the load was over ({ended_at_kill} calls ended): not under load"
    );

    // The store opens cleanly, and holds every acknowledged CDR.
    let mut reader = store::open_reader(&store::StoreConfig::new(
        d.dir.path().join("switchboard.db"),
    ))
    .expect("the store opens after SIGKILL");
    store::StoreBackend::check_integrity(&mut reader).expect("integrity check after SIGKILL");
    drop(reader);
    let rows = export_cdrs(&d);
    // Real load: calls the agent answered, from the trunk, on the merge line.
    let answered = rows
        .iter()
        .filter(|c| {
            c["outcome"] == "answered" && c["agent"] == "8002" && c["dialed"] == "097212331"
        })
        .count();
    let rows = rows.len();
    eprintln!(
        "SIGKILL under load: {} ended at the kill, {} acknowledged (backlog 0 seen {} times), {} CDR rows after the kill ({} answered by the agent)",
        ended_at_kill, acknowledged, zeros, rows, answered
    );
    assert!(
        rows as f64 >= acknowledged,
        "{rows} CDRs, but {acknowledged} calls ended before an acknowledged commit\n--- daemon\n{}",
        d.log()
    );
    assert!(rows <= 400, "{rows} CDRs for at most 400 calls");
    assert!(
        answered as f64 >= acknowledged / 2.0,
        "only {answered} answered calls in {rows} CDRs"
    );

    // The daemon starts again on the same store, and the CDRs are still there.
    d.restart();
    assert!(d.alive(), "restart after SIGKILL\n{}", d.log());
    assert!(
        d.answers_within(Duration::from_secs(5)),
        "the restarted daemon answers\n{}",
        d.log()
    );
    assert!(
        export_cdrs(&d).len() >= rows,
        "rows lost across the restart"
    );
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
}
