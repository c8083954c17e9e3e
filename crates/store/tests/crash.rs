//! Nothing acknowledged is lost: a child process writes records as fast as it can and prints
//! each acknowledged commit sequence; the test SIGKILLs it by its PID mid-run, then reopens the
//! store and finds every acknowledged record, in a database that passes `integrity_check`.
//!
//! The child is this test binary re-executed with `STORE_CRASH_DB` set, running only
//! `crash_child`; without the variable that test returns at once.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use store::{NewDelivery, Record, StoreBackend, StoreConfig, SubmitError, WorkOrderKind};

const ENV: &str = "STORE_CRASH_DB";
/// The child stops by itself after this many records, so a test whose kill never came still
/// ends.
const CHILD_MAX_RECORDS: u64 = 2_000_000;

/// Record `n` (also its sequence number): a CDR, and every tenth a work order with its
/// delivery and CDR as one group.
fn record(n: u64) -> Record {
    let mut cdr = common::cdr(n, n as i64);
    cdr.call_id = format!("crash-{n}");
    if n % 10 != 0 {
        return Record::Cdr(Box::new(cdr));
    }
    let id = format!("WO-crash-{n}");
    cdr.work_order = Some(id.clone());
    Record::Group(vec![
        Record::WorkOrder(Box::new(common::work_order(
            &id,
            WorkOrderKind::AbandonedCallback,
            n as i64,
            Some("http://127.0.0.1:9/wo"),
        ))),
        Record::Deliver(Box::new(NewDelivery {
            endpoint: "http://127.0.0.1:9/wo".into(),
            body: "{}".into(),
            idempotency_key: id.clone(),
            work_order: Some(id),
            created_ms: n as i64,
        })),
        Record::Cdr(Box::new(cdr)),
    ])
}

#[test]
fn crash_child() {
    let Ok(path) = std::env::var(ENV) else {
        return;
    };
    let cfg = StoreConfig::new(path);
    let (store, _writer) = store::open(
        &cfg,
        Some(Box::new(|seq| {
            let mut out = std::io::stdout().lock();
            // The parent is reading; if it has gone, there is nobody left to tell.
            let _ = writeln!(out, "ACK {seq}");
            let _ = out.flush();
        })),
    )
    .unwrap();
    let started = Instant::now();
    for n in 1..=CHILD_MAX_RECORDS {
        let mut r = record(n);
        loop {
            match store.submit(r) {
                Ok(t) => {
                    assert_eq!(t.seq(), n, "sequence numbers follow submission order");
                    break;
                }
                Err(SubmitError::Full(back)) => {
                    r = *back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child runs bounded"
            );
        }
    }
}

/// Runs one child, kills it once it has acknowledged `kill_after`, and returns the highest
/// sequence it acknowledged.
fn run_and_kill(db: &std::path::Path, kill_after: u64, then: Duration) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(seq) = line
                .strip_prefix("ACK ")
                .and_then(|s| s.parse::<u64>().ok())
            {
                if tx.send(seq).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut max_ack = 0;
    while max_ack < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(seq) => max_ack = max_ack.max(seq),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {pid} acknowledged only {max_ack} before {e:?}");
            }
        }
    }
    // Let the child run on a little, so the kill lands inside a batch or a commit rather than
    // right after an acknowledgement.
    std::thread::sleep(then);
    // SIGKILL, by PID (std's kill on Unix): no destructor, no flush, no shutdown.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    // Acknowledgements printed before the kill still count.
    for seq in rx.try_iter() {
        max_ack = max_ack.max(seq);
    }
    assert!(
        !status.success(),
        "the child was killed mid-run, not finished: {status}"
    );
    max_ack
}

#[test]
fn every_acknowledged_record_survives_sigkill() {
    for (kill_after, then) in [(300, 0), (5_000, 7), (2_000, 23)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crash.db");
        let acked = run_and_kill(&db, kill_after, Duration::from_millis(then));
        assert!(acked >= kill_after);

        let mut b = store::open_reader(&StoreConfig::new(&db)).unwrap();
        b.check_integrity().unwrap();
        let mut present = HashSet::new();
        b.for_each_cdr_since(0, &mut |c| {
            present.insert(c.call_id);
            Ok(())
        })
        .unwrap();
        let missing: Vec<u64> = (1..=acked)
            .filter(|n| !present.contains(&format!("crash-{n}")))
            .collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
        for n in (10..=acked).step_by(10) {
            let id = format!("WO-crash-{n}");
            assert!(b.work_order(&id).unwrap().is_some(), "{id} lost");
        }
        // Groups are all or nothing, even the one the kill cut through.
        let orders: i64 = b
            .connection()
            .query_row("SELECT count(*) FROM work_order", [], |r| r.get(0))
            .unwrap();
        let deliveries = b.outbox_backlog().unwrap();
        assert_eq!(orders as u64, deliveries);
        eprintln!(
            "killed after {acked} acknowledged; {} records on disk",
            present.len()
        );
    }
}
