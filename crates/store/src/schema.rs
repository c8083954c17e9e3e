//! Versioned schema migrations. The list only grows: a released migration is never edited, a
//! change is a new entry. Each runs in its own immediate transaction together with its
//! `schema_version` row, so a crash mid-migration leaves the previous version intact, and two
//! processes opening the same file at once cannot both apply it.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::StoreError;

/// One step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version the database has after this step; versions start at 1 and have no gaps.
    pub version: u32,
    /// What the step is for.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "cdrs and work orders",
        sql: "
            CREATE TABLE cdr (
                seq          INTEGER PRIMARY KEY,
                call_id      TEXT NOT NULL,
                caller       TEXT NOT NULL,
                dialed       TEXT NOT NULL,
                normalized   TEXT NOT NULL,
                line         TEXT,
                mode         TEXT,
                prefecture   TEXT,
                entry_queue  TEXT,
                answer_queue TEXT,
                agent        TEXT,
                target       TEXT,
                arrival_ms   INTEGER NOT NULL,
                queued_ms    INTEGER,
                offered_ms   INTEGER,
                answered_ms  INTEGER,
                ended_ms     INTEGER NOT NULL,
                outcome      TEXT NOT NULL,
                status       INTEGER,
                work_order   TEXT
            );
            CREATE INDEX cdr_arrival ON cdr(arrival_ms);
            CREATE INDEX cdr_call_id ON cdr(call_id);
            CREATE TABLE work_order (
                id                 TEXT PRIMARY KEY,
                kind               TEXT NOT NULL,
                status             TEXT NOT NULL,
                created_ms         INTEGER NOT NULL,
                updated_ms         INTEGER NOT NULL,
                call_id            TEXT,
                caller             TEXT,
                prefecture         TEXT,
                subcenter_endpoint TEXT,
                payload            TEXT NOT NULL
            );
            CREATE INDEX work_order_created ON work_order(created_ms);
            CREATE TABLE work_order_history (
                seq        INTEGER PRIMARY KEY,
                work_order TEXT NOT NULL,
                at_ms      INTEGER NOT NULL,
                status     TEXT NOT NULL,
                actor      TEXT NOT NULL,
                note       TEXT NOT NULL
            );
            CREATE INDEX work_order_history_order ON work_order_history(work_order, seq);
        ",
    },
    Migration {
        version: 2,
        name: "outbox to sub-centers",
        // AUTOINCREMENT: ids are never reused even after rows are pruned, because the outbox
        // finds new rows by `id > last seen` and orders each endpoint's deliveries by id.
        sql: "
            CREATE TABLE outbox (
                id              INTEGER PRIMARY KEY AUTOINCREMENT,
                endpoint        TEXT NOT NULL,
                body            TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                work_order      TEXT,
                created_ms      INTEGER NOT NULL,
                state           TEXT NOT NULL DEFAULT 'pending',
                attempts        INTEGER NOT NULL DEFAULT 0,
                next_attempt_ms INTEGER NOT NULL DEFAULT 0,
                last_attempt_ms INTEGER,
                done_ms         INTEGER
            );
            CREATE UNIQUE INDEX outbox_key ON outbox(idempotency_key);
            CREATE INDEX outbox_state ON outbox(state, id);
        ",
    },
    Migration {
        version: 3,
        name: "registration and agent-state snapshots",
        sql: "
            CREATE TABLE kv (
                space      TEXT NOT NULL,
                key        TEXT NOT NULL,
                value      TEXT NOT NULL,
                expires_ms INTEGER,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (space, key)
            ) WITHOUT ROWID;
        ",
    },
];

/// The version a fully migrated database has.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The version the database is at (0 when new).
pub fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(0);
    }
    let v: Option<u32> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
    Ok(v.unwrap_or(0))
}

/// Applies the migrations after the database's version up to `target` (which is
/// [`latest_version`] except in tests of upgrades). Returns the version reached.
pub fn migrate(conn: &mut Connection, target: u32) -> Result<u32, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version INTEGER PRIMARY KEY,
             name    TEXT NOT NULL
         )",
    )?;
    let known = latest_version();
    let found = current_version(conn)?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version <= target) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read under the write lock: another process may have migrated since.
        if current_version(&tx)? >= m.version {
            continue;
        }
        let fail = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        tx.execute_batch(m.sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_version (version, name) VALUES (?1, ?2)",
            (m.version, m.name),
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    current_version(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_and_have_no_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut c, latest_version()).unwrap(), latest_version());
        assert_eq!(migrate(&mut c, latest_version()).unwrap(), latest_version());
        let rows: u32 = c
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, latest_version());
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c, latest_version()).unwrap();
        c.execute(
            "INSERT INTO schema_version (version, name) VALUES (?1, 'from the future')",
            [latest_version() + 1],
        )
        .unwrap();
        match migrate(&mut c, latest_version()) {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!((found, known), (latest_version() + 1, latest_version()));
            }
            other => panic!("{other:?}"),
        }
    }
}
