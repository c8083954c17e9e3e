//! The embedded backend: one SQLite file in WAL mode.
//!
//! # Durability
//! `journal_mode = WAL` lets readers (admin API, exports, the outbox) run beside the writer
//! without blocking it. `synchronous = FULL` makes every commit fsync the WAL before it returns.
//! With `NORMAL`, a WAL commit survives a crash of the process but may be rolled back by a power
//! cut or kernel panic, and the promise is that *nothing acknowledged is lost*: a record is
//! acknowledged only after `commit` returns, so the commit must be durable against the machine
//! failing too. The cost is one fsync per transaction, and the writer batches up to
//! `max_batch` records into one, so under load it is one fsync per batch, not per call.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::backend::{DeliveryEnd, PendingDelivery, StoreBackend};
use crate::error::StoreError;
use crate::record::{
    Cdr, HistoryEntry, KvRow, KvSpace, LineMode, Outcome, Record, UnixMs, WorkOrder, WorkOrderKind,
    WorkOrderStatus,
};
use crate::schema;

/// One connection to the SQLite database.
pub struct SqliteBackend {
    conn: Connection,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.conn.path())
            .finish()
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path`, switches it to WAL with
    /// `synchronous = FULL`, and migrates it to the latest schema.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<SqliteBackend, StoreError> {
        Self::open_at_version(path, busy_timeout, schema::latest_version())
    }

    /// Like [`SqliteBackend::open`], stopping the migrations at `version`: for tests that build
    /// an old database and then upgrade it.
    pub fn open_at_version(
        path: &Path,
        busy_timeout: Duration,
        version: u32,
    ) -> Result<SqliteBackend, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal {
                path: path.display().to_string(),
                got: mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Statements are few and fixed; keep them all prepared.
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn, version)?;
        Ok(SqliteBackend { conn })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::current_version(&self.conn)
    }

    /// The connection, for tests and one-off maintenance (`VACUUM INTO` a backup).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn corrupt(table: &'static str, column: &'static str, value: &str) -> StoreError {
    StoreError::CorruptValue {
        table,
        column,
        value: value.to_owned(),
    }
}

fn json_err(table: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |source| StoreError::Json { table, source }
}

fn write(tx: &Transaction<'_>, record: &Record) -> Result<(), StoreError> {
    match record {
        Record::Cdr(c) => {
            tx.prepare_cached(
                "INSERT INTO cdr (call_id, caller, dialed, normalized, line, mode, prefecture,
                     entry_queue, answer_queue, agent, target, arrival_ms, queued_ms, offered_ms,
                     answered_ms, ended_ms, outcome, status, work_order)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19)",
            )?
            .execute(params![
                c.call_id,
                c.caller,
                c.dialed,
                c.normalized,
                c.line,
                c.mode.map(LineMode::as_str),
                c.prefecture,
                c.entry_queue,
                c.answer_queue,
                c.agent,
                c.target,
                c.arrival_ms,
                c.queued_ms,
                c.offered_ms,
                c.answered_ms,
                c.ended_ms,
                c.outcome.as_str(),
                c.outcome.status(),
                c.work_order,
            ])?;
        }
        Record::WorkOrder(w) => {
            let payload = serde_json::to_string(&w.payload).map_err(json_err("work_order"))?;
            // A resubmitted creation is a no-op: it must never rewrite a history that has grown.
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO work_order (id, kind, status, created_ms, updated_ms, call_id,
                         caller, prefecture, subcenter_endpoint, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    w.id,
                    w.kind.as_str(),
                    w.status.as_str(),
                    w.created_ms,
                    w.updated_ms,
                    w.call_id,
                    w.caller,
                    w.prefecture,
                    w.subcenter_endpoint,
                    payload,
                ])?;
            if inserted == 1 {
                for h in &w.history {
                    insert_history(tx, &w.id, h)?;
                }
            }
        }
        Record::WorkOrderUpdate { id, entry } => {
            tx.prepare_cached(
                "UPDATE work_order SET status = ?2, updated_ms = max(updated_ms, ?3) WHERE id = ?1",
            )?
            .execute(params![id, entry.status.as_str(), entry.at_ms])?;
            insert_history(tx, id, entry)?;
        }
        Record::Deliver(d) => {
            tx.prepare_cached(
                "INSERT INTO outbox (endpoint, body, idempotency_key, work_order, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )?
            .execute(params![
                d.endpoint,
                d.body,
                d.idempotency_key,
                d.work_order,
                d.created_ms
            ])?;
        }
        Record::Put(kv) => {
            let value = serde_json::to_string(&kv.value).map_err(json_err("kv"))?;
            tx.prepare_cached(
                "INSERT INTO kv (space, key, value, expires_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (space, key) DO UPDATE SET value = excluded.value,
                     expires_ms = excluded.expires_ms, updated_ms = excluded.updated_ms",
            )?
            .execute(params![
                kv.space.as_str(),
                kv.key,
                value,
                kv.expires_ms,
                kv.updated_ms
            ])?;
        }
        Record::Delete { space, key } => {
            tx.prepare_cached("DELETE FROM kv WHERE space = ?1 AND key = ?2")?
                .execute(params![space.as_str(), key])?;
        }
        Record::PurgeExpired { now_ms } => {
            tx.prepare_cached("DELETE FROM kv WHERE expires_ms IS NOT NULL AND expires_ms <= ?1")?
                .execute([now_ms])?;
        }
        Record::Group(records) => {
            for r in records {
                write(tx, r)?;
            }
        }
    }
    Ok(())
}

fn insert_history(tx: &Transaction<'_>, id: &str, h: &HistoryEntry) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO work_order_history (work_order, at_ms, status, actor, note)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, h.at_ms, h.status.as_str(), h.actor, h.note])?;
    Ok(())
}

const CDR_COLUMNS: &str = "call_id, caller, dialed, normalized, line, mode, prefecture,
    entry_queue, answer_queue, agent, target, arrival_ms, queued_ms, offered_ms, answered_ms,
    ended_ms, outcome, status, work_order";

/// Reads a CDR row; unknown enum text is reported after the row is read, since a row closure
/// can only return SQLite's own error type.
fn cdr_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Cdr, StoreError>> {
    let mode: Option<String> = r.get(5)?;
    let outcome: String = r.get(16)?;
    let status: Option<u16> = r.get(17)?;
    let mode = match mode {
        None => None,
        Some(m) => match LineMode::parse(&m) {
            Some(m) => Some(m),
            None => return Ok(Err(corrupt("cdr", "mode", &m))),
        },
    };
    let Some(outcome) = Outcome::parse(&outcome, status) else {
        return Ok(Err(corrupt("cdr", "outcome", &outcome)));
    };
    Ok(Ok(Cdr {
        call_id: r.get(0)?,
        caller: r.get(1)?,
        dialed: r.get(2)?,
        normalized: r.get(3)?,
        line: r.get(4)?,
        mode,
        prefecture: r.get(6)?,
        entry_queue: r.get(7)?,
        answer_queue: r.get(8)?,
        agent: r.get(9)?,
        target: r.get(10)?,
        arrival_ms: r.get(11)?,
        queued_ms: r.get(12)?,
        offered_ms: r.get(13)?,
        answered_ms: r.get(14)?,
        ended_ms: r.get(15)?,
        outcome,
        work_order: r.get(18)?,
    }))
}

struct WorkOrderRow {
    id: String,
    kind: String,
    status: String,
    created_ms: UnixMs,
    updated_ms: UnixMs,
    call_id: Option<String>,
    caller: Option<String>,
    prefecture: Option<String>,
    subcenter_endpoint: Option<String>,
    payload: String,
}

const WORK_ORDER_COLUMNS: &str =
    "id, kind, status, created_ms, updated_ms, call_id, caller, prefecture, subcenter_endpoint, payload";

fn work_order_row(r: &Row<'_>) -> rusqlite::Result<WorkOrderRow> {
    Ok(WorkOrderRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        status: r.get(2)?,
        created_ms: r.get(3)?,
        updated_ms: r.get(4)?,
        call_id: r.get(5)?,
        caller: r.get(6)?,
        prefecture: r.get(7)?,
        subcenter_endpoint: r.get(8)?,
        payload: r.get(9)?,
    })
}

impl SqliteBackend {
    fn finish_work_order(&self, row: WorkOrderRow) -> Result<WorkOrder, StoreError> {
        let kind = WorkOrderKind::parse(&row.kind)
            .ok_or_else(|| corrupt("work_order", "kind", &row.kind))?;
        let status = WorkOrderStatus::parse(&row.status)
            .ok_or_else(|| corrupt("work_order", "status", &row.status))?;
        let payload = serde_json::from_str(&row.payload).map_err(json_err("work_order"))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT at_ms, status, actor, note FROM work_order_history
             WHERE work_order = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([&row.id], |r| {
            Ok((
                r.get::<_, UnixMs>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut history = Vec::new();
        for h in rows {
            let (at_ms, s, actor, note) = h?;
            let status = WorkOrderStatus::parse(&s)
                .ok_or_else(|| corrupt("work_order_history", "status", &s))?;
            history.push(HistoryEntry {
                at_ms,
                status,
                actor,
                note,
            });
        }
        Ok(WorkOrder {
            id: row.id,
            kind,
            status,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            call_id: row.call_id,
            caller: row.caller,
            prefecture: row.prefecture,
            subcenter_endpoint: row.subcenter_endpoint,
            payload,
            history,
        })
    }
}

impl StoreBackend for SqliteBackend {
    fn commit(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock up front, so a busy database fails (or waits) before
        // any work is done rather than at the first write.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for r in batch {
            write(&tx, r)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn for_each_cdr_since(
        &mut self,
        since_ms: UnixMs,
        each: &mut dyn FnMut(Cdr) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CDR_COLUMNS} FROM cdr WHERE arrival_ms >= ?1 ORDER BY arrival_ms, seq"
        ))?;
        let rows = stmt.query_map([since_ms], cdr_from_row)?;
        for row in rows {
            each(row??)?;
        }
        Ok(())
    }

    fn cdrs_by_call_id(&mut self, call_id: &str) -> Result<Vec<Cdr>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CDR_COLUMNS} FROM cdr WHERE call_id = ?1 ORDER BY seq"
        ))?;
        let rows = stmt.query_map([call_id], cdr_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    fn work_order(&mut self, id: &str) -> Result<Option<WorkOrder>, StoreError> {
        let row = self
            .conn
            .prepare_cached(&format!(
                "SELECT {WORK_ORDER_COLUMNS} FROM work_order WHERE id = ?1"
            ))?
            .query_row([id], work_order_row)
            .optional()?;
        row.map(|r| self.finish_work_order(r)).transpose()
    }

    fn work_orders_since(
        &mut self,
        since_ms: UnixMs,
        limit: usize,
    ) -> Result<Vec<WorkOrder>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<WorkOrderRow> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {WORK_ORDER_COLUMNS} FROM work_order WHERE created_ms >= ?1
                 ORDER BY created_ms, id LIMIT ?2"
            ))?
            .query_map(params![since_ms, limit], work_order_row)?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|r| self.finish_work_order(r))
            .collect()
    }

    fn load_kv(&mut self, space: KvSpace, now_ms: UnixMs) -> Result<Vec<KvRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, value, expires_ms, updated_ms FROM kv
             WHERE space = ?1 AND (expires_ms IS NULL OR expires_ms > ?2) ORDER BY key",
        )?;
        let rows = stmt.query_map(params![space.as_str(), now_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<UnixMs>>(2)?,
                r.get::<_, UnixMs>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, value, expires_ms, updated_ms) = row?;
            out.push(KvRow {
                space,
                key,
                value: serde_json::from_str(&value).map_err(json_err("kv"))?,
                expires_ms,
                updated_ms,
            });
        }
        Ok(out)
    }

    fn outbox_pending(&mut self, after_id: i64) -> Result<Vec<PendingDelivery>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, endpoint, body, idempotency_key, work_order, attempts, next_attempt_ms
             FROM outbox WHERE state = 'pending' AND id > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([after_id], |r| {
            Ok(PendingDelivery {
                id: r.get(0)?,
                endpoint: r.get(1)?,
                body: r.get(2)?,
                idempotency_key: r.get(3)?,
                work_order: r.get(4)?,
                attempts: r.get(5)?,
                next_attempt_ms: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn outbox_retry_later(
        &mut self,
        id: i64,
        attempts: u32,
        now_ms: UnixMs,
        next_attempt_ms: UnixMs,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET attempts = ?2, last_attempt_ms = ?3, next_attempt_ms = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, attempts, now_ms, next_attempt_ms])?;
        Ok(())
    }

    fn outbox_finish(
        &mut self,
        id: i64,
        end: DeliveryEnd,
        attempts: u32,
        now_ms: UnixMs,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (state, note) = match end {
            DeliveryEnd::Delivered => ("delivered", "accepted by the sub-center"),
            DeliveryEnd::Rejected => ("rejected", "refused by the sub-center; not retried"),
        };
        let found: Option<(Option<String>, String)> = tx
            .prepare_cached(
                "UPDATE outbox SET state = ?2, attempts = ?3, last_attempt_ms = ?4, done_ms = ?4
                 WHERE id = ?1 AND state = 'pending' RETURNING work_order, endpoint",
            )?
            .query_row(params![id, state, attempts, now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((Some(order), endpoint)) = found {
            // Delivery moves an order forward only from the states before delivery; an order
            // an agent already closed keeps its status, but the history still says it arrived.
            let current: Option<String> = tx
                .prepare_cached("SELECT status FROM work_order WHERE id = ?1")?
                .query_row([&order], |r| r.get(0))
                .optional()?;
            let current = match current.as_deref() {
                None => None,
                Some(s) => Some(
                    WorkOrderStatus::parse(s).ok_or_else(|| corrupt("work_order", "status", s))?,
                ),
            };
            let status = match (current, end) {
                (None | Some(WorkOrderStatus::Open | WorkOrderStatus::Dispatched), end) => {
                    match end {
                        DeliveryEnd::Delivered => WorkOrderStatus::Delivered,
                        DeliveryEnd::Rejected => WorkOrderStatus::Open,
                    }
                }
                (Some(other), _) => other,
            };
            tx.prepare_cached(
                "UPDATE work_order SET status = ?2, updated_ms = max(updated_ms, ?3) WHERE id = ?1",
            )?
            .execute(params![order, status.as_str(), now_ms])?;
            insert_history(
                &tx,
                &order,
                &HistoryEntry {
                    at_ms: now_ms,
                    status,
                    actor: "outbox".to_owned(),
                    note: format!("{note}: {endpoint}"),
                },
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn outbox_backlog(&mut self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn check_integrity(&mut self) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let lines: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if lines.len() == 1 && lines[0] == "ok" {
            Ok(())
        } else {
            Err(StoreError::Integrity {
                report: lines.join("\n"),
            })
        }
    }
}
