//! The writer, the records and the queries, against a real SQLite file and, for everything
//! that is not SQLite-specific, a real PostgreSQL server too.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::{cdr, work_order, Db};
use rusqlite::Connection;
use store::{
    Cdr, HistoryEntry, KvRow, KvSpace, NewDelivery, Outcome, PendingDelivery, Record,
    SqliteBackend, Store, StoreBackend, StoreConfig, StoreError, SubmitError, WorkOrder,
    WorkOrderKind, WorkOrderStatus, WriterConfig,
};

const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &tempfile::TempDir) -> StoreConfig {
    StoreConfig::new(dir.path().join("store.db"))
}

fn count_sqlite(path: &std::path::Path, table: &str) -> i64 {
    let c = Connection::open(path).unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Rows in `table`, whichever backend `cfg` names.
fn count(cfg: &StoreConfig, table: &str) -> i64 {
    match &cfg.postgres_url {
        None => count_sqlite(&cfg.path, table),
        Some(url) => {
            let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
            c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .unwrap()
                .get(0)
        }
    }
}

#[test]
fn opens_in_wal_with_full_sync_at_the_latest_schema() {
    let dir = tempfile::tempdir().unwrap();
    let b = store::open_reader(&config(&dir)).unwrap();
    let c = b.connection();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "FULL");
    assert_eq!(b.schema_version().unwrap(), store::schema::latest_version());
}

fn every_record_kind_round_trips(db: Db) {
    let cfg = db.cfg.clone();
    let (store, writer) = store::open(&cfg, None).unwrap();

    let mut failed = cdr(2, 2_000);
    failed.outcome = Outcome::Failed { status: 503 };
    failed.mode = None;
    failed.agent = None;
    let mut handoff = cdr(3, 3_000);
    handoff.outcome = Outcome::EmergencyHandoff;
    handoff.target = Some("sip:110@psap.xining".into());
    handoff.work_order = Some("WO-a-1".into());
    let order = work_order("WO-a-1", WorkOrderKind::EmergencyLinkage, 3_000, None);
    let update = HistoryEntry {
        at_ms: 4_000,
        status: WorkOrderStatus::Closed,
        actor: "8001".into(),
        note: "110 confirmed dispatch".into(),
    };
    store.submit(Record::Cdr(Box::new(cdr(1, 1_000)))).unwrap();
    store.submit(Record::Cdr(Box::new(failed.clone()))).unwrap();
    store
        .submit(Record::Group(vec![
            Record::WorkOrder(Box::new(order.clone())),
            Record::Cdr(Box::new(handoff.clone())),
        ]))
        .unwrap();
    // A resubmitted creation must not rewrite the history that has grown since.
    store
        .submit(Record::WorkOrderUpdate {
            id: "WO-a-1".into(),
            entry: update.clone(),
        })
        .unwrap();
    let last = store
        .submit(Record::WorkOrder(Box::new(order.clone())))
        .unwrap();
    assert!(store.wait_committed(last, WAIT));

    let mut r = store::open_backend(&cfg).unwrap();
    let mut all = Vec::new();
    r.for_each_cdr_since(0, &mut |c| {
        all.push(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(all, vec![cdr(1, 1_000), failed.clone(), handoff.clone()]);
    assert_eq!(r.cdrs_by_call_id(&failed.call_id).unwrap(), vec![failed]);

    let got = r.work_order("WO-a-1").unwrap().unwrap();
    let mut want = order.clone();
    want.status = WorkOrderStatus::Closed;
    want.updated_ms = 4_000;
    want.history.push(update);
    assert_eq!(got, want);
    assert_eq!(r.work_order("WO-none").unwrap(), None);
    assert_eq!(r.work_orders_since(3_000, 10).unwrap(), vec![want]);
    assert!(r.work_orders_since(3_001, 10).unwrap().is_empty());
    writer.shutdown().unwrap();
}
both!(every_record_kind_round_trips);

/// The HA pair's open-call rows: an answered call's CDR so far, kept until its BYE deletes it in
/// the same transaction as the finished CDR; the other node reads every row, expired or not, and
/// closes a call it never saw end as `failover-lost`.
fn open_calls_close_with_their_cdr_or_as_failover_lost(db: Db) {
    let cfg = db.cfg.clone();
    let (store, writer) = store::open(&cfg, None).unwrap();
    let open = |c: &store::Cdr, expires_ms| KvRow {
        space: KvSpace::OpenCall,
        key: c.call_id.clone(),
        value: serde_json::to_value(c).unwrap(),
        expires_ms: Some(expires_ms),
        updated_ms: c.answered_ms.unwrap(),
    };
    let (ended, lost) = (cdr(1, 1_000), cdr(2, 2_000));
    store
        .submit(Record::Put(Box::new(open(&ended, 9_000))))
        .unwrap();
    store
        .submit(Record::Put(Box::new(open(&lost, 3_000))))
        .unwrap();
    let t = store.submit(Record::Group(vec![
        Record::Cdr(Box::new(ended.clone())),
        Record::Delete {
            space: KvSpace::OpenCall,
            key: ended.call_id.clone(),
        },
    ]));
    assert!(store.wait_committed(t.unwrap(), WAIT));
    let mut r = store::open_backend(&cfg).unwrap();
    let rows = r.load_kv(KvSpace::OpenCall, i64::MIN).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].expires_ms, Some(3_000), "expired, still read");
    let mut back: store::Cdr = serde_json::from_value(rows[0].value.clone()).unwrap();
    assert_eq!(back, lost);
    back.outcome = Outcome::FailoverLost;
    back.ended_ms = 5_000;
    let t = store.submit(Record::Group(vec![
        Record::Cdr(Box::new(back.clone())),
        Record::Delete {
            space: KvSpace::OpenCall,
            key: back.call_id.clone(),
        },
    ]));
    assert!(store.wait_committed(t.unwrap(), WAIT));
    assert!(r.load_kv(KvSpace::OpenCall, i64::MIN).unwrap().is_empty());
    assert_eq!(r.cdrs_by_call_id(&back.call_id).unwrap(), vec![back]);
    writer.shutdown().unwrap();
}
both!(open_calls_close_with_their_cdr_or_as_failover_lost);

fn snapshots_keep_agents_and_bindings_across_a_restart(db: Db) {
    let cfg = db.cfg.clone();
    let row = |space, key: &str, expires_ms| KvRow {
        space,
        key: key.into(),
        value: serde_json::json!({ "key": key }),
        expires_ms,
        updated_ms: 1_000,
    };
    {
        let (store, writer) = store::open(&cfg, None).unwrap();
        for r in [
            row(
                KvSpace::Registration,
                "sip:8001@qh|sip:8001@10.0.0.5",
                Some(5_000),
            ),
            row(
                KvSpace::Registration,
                "sip:8002@qh|sip:8002@10.0.0.6",
                Some(9_000),
            ),
            row(
                KvSpace::Registration,
                "sip:8003@qh|sip:8003@10.0.0.7",
                Some(9_000),
            ),
            row(KvSpace::AgentState, "8001", None),
            row(KvSpace::AgentState, "8002", None),
        ] {
            store.submit(Record::Put(Box::new(r))).unwrap();
        }
        // Re-registration replaces the row.
        store
            .submit(Record::Put(Box::new(row(
                KvSpace::Registration,
                "sip:8002@qh|sip:8002@10.0.0.6",
                Some(20_000),
            ))))
            .unwrap();
        store
            .submit(Record::Delete {
                space: KvSpace::AgentState,
                key: "8002".into(),
            })
            .unwrap();
        store
            .submit(Record::Delete {
                space: KvSpace::Registration,
                key: "sip:8003@qh|sip:8003@10.0.0.7".into(),
            })
            .unwrap();
        writer.shutdown().unwrap();
    }
    let mut r = store::open_backend(&cfg).unwrap();
    let keys = |rows: Vec<KvRow>| rows.into_iter().map(|r| r.key).collect::<Vec<_>>();
    assert_eq!(
        keys(r.load_kv(KvSpace::Registration, 4_999).unwrap()),
        [
            "sip:8001@qh|sip:8001@10.0.0.5",
            "sip:8002@qh|sip:8002@10.0.0.6"
        ]
    );
    assert_eq!(
        keys(r.load_kv(KvSpace::Registration, 10_000).unwrap()),
        ["sip:8002@qh|sip:8002@10.0.0.6"],
        "expired bindings are not restored"
    );
    assert_eq!(
        keys(r.load_kv(KvSpace::AgentState, 10_000).unwrap()),
        ["8001"]
    );

    let (store, writer) = store::open(&cfg, None).unwrap();
    let t = store
        .submit(Record::PurgeExpired { now_ms: 10_000 })
        .unwrap();
    assert!(store.wait_committed(t, WAIT));
    writer.shutdown().unwrap();
    assert_eq!(count(&cfg, "kv"), 2);
}
both!(snapshots_keep_agents_and_bindings_across_a_restart);

fn concurrent_submitters_all_commit_in_batches_with_monotonic_acks(db: Db) {
    let cfg = db.cfg.clone();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let acks2 = acks.clone();
    let (store, writer) = store::open(
        &cfg,
        Some(Box::new(move |seq| acks2.lock().unwrap().push(seq))),
    )
    .unwrap();
    const THREADS: u64 = 4;
    const EACH: u64 = 2_500;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut last = None;
                for i in 0..EACH {
                    let mut rec = Record::Cdr(Box::new(cdr(t * EACH + i, (t * EACH + i) as i64)));
                    // Bounded: the default queue holds far more than this test submits, so a
                    // Full here would be a bug, not load.
                    let ticket = loop {
                        match store.submit(rec) {
                            Ok(t) => break t,
                            Err(SubmitError::Full(r)) => {
                                rec = *r;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    };
                    assert!(last < Some(ticket), "tickets increase per submitter");
                    last = Some(ticket);
                }
                last.unwrap()
            })
        })
        .collect();
    let lasts: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for t in lasts {
        assert!(store.wait_committed(t, WAIT));
    }
    let stats = store.stats();
    assert_eq!(stats.committed_seq, THREADS * EACH);
    assert_eq!(stats.submitted_seq, THREADS * EACH);
    assert!(stats.healthy);
    assert!(
        stats.batches < THREADS * EACH / 4,
        "records are batched: {} transactions",
        stats.batches
    );
    writer.shutdown().unwrap();
    let acks = acks.lock().unwrap();
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "acks increase");
    assert_eq!(acks.last(), Some(&(THREADS * EACH)));
    assert_eq!(count(&cfg, "cdr"), (THREADS * EACH) as i64);
}
both!(concurrent_submitters_all_commit_in_batches_with_monotonic_acks);

/// A backend that holds its commits until the test lets them go, or fails them on demand:
/// the disk the hot path must never wait for.
struct Gate {
    inner: SqliteBackend,
    hold: Arc<Barrier>,
    held: bool,
    failures_left: Arc<AtomicU32>,
}

impl StoreBackend for Gate {
    fn commit(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        if self.held {
            self.held = false;
            self.hold.wait();
            self.hold.wait();
        }
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("disk full (simulated)".into()),
            )));
        }
        self.inner.commit(batch)
    }
    fn for_each_cdr_since(
        &mut self,
        since_ms: i64,
        each: &mut dyn FnMut(Cdr) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.inner.for_each_cdr_since(since_ms, each)
    }
    fn cdrs_by_call_id(&mut self, call_id: &str) -> Result<Vec<Cdr>, StoreError> {
        self.inner.cdrs_by_call_id(call_id)
    }
    fn work_order(&mut self, id: &str) -> Result<Option<WorkOrder>, StoreError> {
        self.inner.work_order(id)
    }
    fn work_orders_since(
        &mut self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<WorkOrder>, StoreError> {
        self.inner.work_orders_since(since_ms, limit)
    }
    fn load_kv(&mut self, space: KvSpace, now_ms: i64) -> Result<Vec<KvRow>, StoreError> {
        self.inner.load_kv(space, now_ms)
    }
    fn outbox_pending(&mut self, after_id: i64) -> Result<Vec<PendingDelivery>, StoreError> {
        self.inner.outbox_pending(after_id)
    }
    fn outbox_retry_later(
        &mut self,
        id: i64,
        attempts: u32,
        now_ms: i64,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .outbox_retry_later(id, attempts, now_ms, next_attempt_ms)
    }
    fn outbox_finish(
        &mut self,
        id: i64,
        end: store::DeliveryEnd,
        attempts: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner.outbox_finish(id, end, attempts, now_ms)
    }
    fn outbox_backlog(&mut self) -> Result<u64, StoreError> {
        self.inner.outbox_backlog()
    }
    fn check_integrity(&mut self) -> Result<(), StoreError> {
        self.inner.check_integrity()
    }
}

#[test]
fn a_stalled_disk_fills_the_queue_and_submit_says_full_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let hold = Arc::new(Barrier::new(2));
    let gate = Gate {
        inner: store::open_reader(&cfg).unwrap(),
        hold: hold.clone(),
        held: true,
        failures_left: Arc::new(AtomicU32::new(0)),
    };
    let (store, writer) = Store::spawn(
        gate,
        WriterConfig {
            queue_capacity: 8,
            max_batch: 4,
            max_batch_wait: Duration::ZERO,
        },
        None,
    )
    .unwrap();
    let first = store.submit(Record::Cdr(Box::new(cdr(0, 0)))).unwrap();
    hold.wait(); // the writer is inside its first commit, holding the disk
    let mut accepted = vec![first];
    let mut refused = Vec::new();
    for i in 1..=20 {
        match store.submit(Record::Cdr(Box::new(cdr(i, i as i64)))) {
            Ok(t) => accepted.push(t),
            Err(e) => refused.push((i, e)),
        }
    }
    let committed_while_stalled = store.committed_seq();
    // Let the disk come back before asserting: a failed assertion must not leave the writer
    // stuck at the barrier (the handle's drop joins it).
    hold.wait();
    assert_eq!(accepted.len(), 9, "one in the writer's hands, eight queued");
    assert_eq!(refused.len(), 12);
    for (i, e) in refused {
        match e {
            SubmitError::Full(r) => {
                assert!(matches!(*r, Record::Cdr(ref c) if c.call_id == cdr(i, 0).call_id));
            }
            e => panic!("{e}"),
        }
    }
    assert_eq!(store.stats().rejected_full, 12);
    assert_eq!(
        committed_while_stalled, 0,
        "nothing acknowledged before the commit"
    );
    assert!(store.wait_committed(*accepted.last().unwrap(), WAIT));
    assert_eq!(
        accepted.iter().map(|t| t.seq()).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>(),
        "refused records take no sequence number"
    );
    writer.shutdown().unwrap();
    assert_eq!(count_sqlite(&cfg.path, "cdr"), 9);
}

#[test]
fn a_failing_commit_is_retried_until_it_succeeds_and_is_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let failures = Arc::new(AtomicU32::new(3));
    let gate = Gate {
        inner: store::open_reader(&cfg).unwrap(),
        hold: Arc::new(Barrier::new(1)),
        held: false,
        failures_left: failures.clone(),
    };
    let (tx, rx) = mpsc::channel();
    let (store, writer) = Store::spawn(
        gate,
        WriterConfig::from(&cfg),
        Some(Box::new(move |seq| tx.send(seq).unwrap())),
    )
    .unwrap();
    let t = store.submit(Record::Cdr(Box::new(cdr(1, 1)))).unwrap();
    assert_eq!(rx.recv_timeout(WAIT), Ok(t.seq()));
    let stats = store.stats();
    assert_eq!(stats.commit_failures, 3);
    assert!(stats.healthy);
    assert!(stats.last_error.unwrap().contains("disk full"));
    writer.shutdown().unwrap();
    assert_eq!(count_sqlite(&cfg.path, "cdr"), 1);
}

fn shutdown_commits_everything_accepted_and_then_refuses(db: Db) {
    let cfg = db.cfg.clone();
    let (store, writer) = store::open(&cfg, None).unwrap();
    for i in 0..1_000 {
        store
            .submit(Record::Cdr(Box::new(cdr(i, i as i64))))
            .unwrap();
    }
    writer.shutdown().unwrap();
    assert_eq!(store.committed_seq(), 1_000);
    assert!(matches!(
        store.submit(Record::Cdr(Box::new(cdr(0, 0)))),
        Err(SubmitError::Closed(_))
    ));
    assert_eq!(count(&cfg, "cdr"), 1_000);
}
both!(shutdown_commits_everything_accepted_and_then_refuses);

fn readers_see_commits_while_the_writer_writes(db: Db) {
    let cfg = db.cfg.clone();
    let (store, writer) = store::open(&cfg, None).unwrap();
    let mut reader = store::open_backend(&cfg).unwrap();
    let mut last_seen = 0;
    for round in 0..20u64 {
        let mut t = None;
        for i in 0..50 {
            let n = round * 50 + i;
            t = Some(
                store
                    .submit(Record::Cdr(Box::new(cdr(n, n as i64))))
                    .unwrap(),
            );
        }
        assert!(store.wait_committed(t.unwrap(), WAIT));
        let mut seen = 0;
        reader
            .for_each_cdr_since(0, &mut |_| {
                seen += 1;
                Ok(())
            })
            .unwrap();
        assert!(seen >= (round + 1) * 50 && seen >= last_seen);
        last_seen = seen;
    }
    writer.shutdown().unwrap();
}
both!(readers_see_commits_while_the_writer_writes);

#[test]
fn a_version_1_database_upgrades_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    {
        let v1 = SqliteBackend::open_at_version(&cfg.path, Duration::from_secs(5), 1).unwrap();
        assert_eq!(v1.schema_version().unwrap(), 1);
        // Written as a v1 build would have: no outbox, no kv tables yet.
        v1.connection()
            .execute(
                "INSERT INTO cdr (call_id, caller, dialed, normalized, arrival_ms, ended_ms, outcome)
                 VALUES ('old@1', '13900000000', '12345', '12345', 5, 9, 'abandoned')",
                [],
            )
            .unwrap();
        v1.connection()
            .execute(
                "INSERT INTO work_order (id, kind, status, created_ms, updated_ms, payload)
                 VALUES ('WO-old', 'abandoned-callback', 'open', 5, 5, '{}')",
                [],
            )
            .unwrap();
        let has_outbox: i64 = v1
            .connection()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'outbox'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has_outbox, 0);
    }
    let (store, writer) = store::open(&cfg, None).unwrap();
    let t = store
        .submit(Record::Group(vec![
            Record::WorkOrderUpdate {
                id: "WO-old".into(),
                entry: HistoryEntry {
                    at_ms: 10,
                    status: WorkOrderStatus::Dispatched,
                    actor: "switchboard".into(),
                    note: "sent".into(),
                },
            },
            Record::Deliver(Box::new(NewDelivery {
                endpoint: "http://127.0.0.1:9/tax".into(),
                body: "{}".into(),
                idempotency_key: "WO-old/1".into(),
                work_order: Some("WO-old".into()),
                created_ms: 10,
            })),
        ]))
        .unwrap();
    assert!(store.wait_committed(t, WAIT));
    writer.shutdown().unwrap();

    let mut r = store::open_reader(&cfg).unwrap();
    assert_eq!(r.schema_version().unwrap(), store::schema::latest_version());
    let old = r.cdrs_by_call_id("old@1").unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].outcome, Outcome::Abandoned);
    assert_eq!(old[0].caller, "13900000000");
    let wo = r.work_order("WO-old").unwrap().unwrap();
    assert_eq!(wo.status, WorkOrderStatus::Dispatched);
    assert_eq!(wo.history.len(), 1);
    assert_eq!(r.outbox_backlog().unwrap(), 1);
    r.check_integrity().unwrap();
}

fn exports_stream_the_same_rows_as_csv_and_jsonl(db: Db) {
    let cfg = db.cfg.clone();
    let (store, writer) = store::open(&cfg, None).unwrap();
    let mut odd = cdr(7, 2_000);
    odd.line = Some("a,\"quoted\"\nline".into());
    odd.outcome = Outcome::Failed { status: 486 };
    odd.answered_ms = None;
    store.submit(Record::Cdr(Box::new(cdr(1, 1_000)))).unwrap();
    store.submit(Record::Cdr(Box::new(odd))).unwrap();
    let t = store.submit(Record::Cdr(Box::new(cdr(9, 3_000)))).unwrap();
    assert!(store.wait_committed(t, WAIT));
    writer.shutdown().unwrap();

    let mut r = store::open_backend(&cfg).unwrap();
    let mut csv = Vec::new();
    assert_eq!(store::write_csv(&mut r, 2_000, &mut csv).unwrap(), 2);
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines[0], store::CDR_COLUMNS.join(","));
    assert_eq!(
        lines[1],
        "call-7@10.0.0.1,13800130007,097212315,12315,\"a,\"\"quoted\"\"\nline\",merge,0972,\
         12345-haidong,12345-province,8001,,2000,2010,2020,,62000,failed,486,"
    );
    assert!(lines[2].starts_with("call-9@10.0.0.1,13800130009,"));
    assert!(lines[2].ends_with(",63000,answered,,"));
    assert_eq!(lines[3], "");

    let mut jsonl = Vec::new();
    assert_eq!(store::write_jsonl(&mut r, 0, &mut jsonl).unwrap(), 3);
    let rows: Vec<serde_json::Value> = String::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["outcome"], "failed");
    assert_eq!(rows[1]["status"], 486);
    assert_eq!(rows[1]["answered_ms"], serde_json::Value::Null);
    assert_eq!(rows[1]["line"], "a,\"quoted\"\nline");
    assert_eq!(rows[0]["caller"], "13800130001");
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    let mut want: Vec<&str> = store::CDR_COLUMNS.to_vec();
    want.sort_unstable();
    let mut keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, want, "both formats carry the same columns");
}
both!(exports_stream_the_same_rows_as_csv_and_jsonl);

/// The policy (field 41) and nice value (field 19) of the calling process's thread named `name`,
/// from /proc/self/task/*/stat.
fn thread_policy_and_nice(name: &str) -> Option<(u32, i32)> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the command, which is in parentheses and may hold spaces.
        let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
        // `rest[0]` is field 3 (state).
        return Some((rest[41 - 3].parse().ok()?, rest[19 - 3].parse().ok()?));
    }
    None
}

/// A daemon started under a real-time policy (`chrt -f`, systemd `CPUSchedulingPolicy=fifo`)
/// hands it to every thread it starts; the writer must not keep it (a SCHED_FIFO writer would run
/// its SQLite batches to the end ahead of the SIP thread). Needs CAP_SYS_NICE (root) to put the
/// test's own thread under SCHED_FIFO first.
#[test]
fn a_writer_started_under_a_real_time_policy_runs_in_the_background() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    // A thread of our own, so the test harness's thread keeps its policy.
    let (policy, nice) = std::thread::spawn(move || {
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .expect("SCHED_FIFO for the test thread (run as root or with CAP_SYS_NICE)");
        let (store, writer) = store::open(&cfg, None).unwrap();
        // The writer sets its priority first thing; a record through it proves it is running.
        let t = store
            .submit(Record::Cdr(Box::new(common::cdr(1, 1_000))))
            .unwrap();
        assert!(store.wait_committed(t, WAIT), "the CDR was not committed");
        let seen = thread_policy_and_nice("store-writer").expect("a thread named store-writer");
        writer.shutdown().unwrap();
        seen
    })
    .join()
    .unwrap();
    assert_eq!(
        policy, 0,
        "the writer's policy (0 = SCHED_OTHER, 1 = SCHED_FIFO)"
    );
    assert_eq!(nice, 10, "the writer's nice value");
}
