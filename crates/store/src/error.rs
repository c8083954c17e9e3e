//! Errors of the store API. They say which side failed: the database (retry may help once the
//! disk or the other node is back), the data found in it (a bug or tampering: retrying will not
//! help), or the caller's submission (the queue is full: count it and carry on).

use crate::record::Record;

/// An error from the database side of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation (I/O error, disk full, locked past the busy timeout).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused an operation, or the connection to it is gone (the HA pair's shared
    /// store: the other node may be taking over, or the database is down).
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// A PostgreSQL migration failed; the database stays at the previous version.
    #[error("migration {version} ({name}) failed: {source}")]
    PgMigration {
        /// The version being applied.
        version: u32,
        /// Its name.
        name: &'static str,
        /// What PostgreSQL said.
        source: postgres::Error,
    },
    /// The database would not switch to WAL journal mode (an in-memory database, or a file
    /// system without shared memory support); without WAL, readers would block the writer.
    #[error("{path}: journal mode is {got:?}, not WAL")]
    NotWal {
        /// The database file.
        path: String,
        /// The journal mode SQLite reported.
        got: String,
    },
    /// The database was written by a newer build; running an older one on it could lose data.
    #[error("database schema version {found} is newer than this build's {known}")]
    SchemaTooNew {
        /// The version found in `schema_version`.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// A migration failed; the database stays at the previous version.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// The version being applied.
        version: u32,
        /// Its name.
        name: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A stored value is not one this build can read (an unknown enum text, say).
    #[error("table {table}, column {column}: unreadable value {value:?}")]
    CorruptValue {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// The offending text.
        value: String,
    },
    /// A stored JSON payload does not parse, or a value would not serialize.
    #[error("table {table}: JSON: {source}")]
    Json {
        /// The table.
        table: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// `PRAGMA integrity_check` found damage; the report is SQLite's own text.
    #[error("integrity check failed: {report}")]
    Integrity {
        /// SQLite's report, one problem a line.
        report: String,
    },
    /// Writing an export failed (the output pipe closed, the disk filled).
    #[error("export: {0}")]
    Export(#[from] std::io::Error),
    /// The writer thread could not be started.
    #[error("starting the writer thread: {0}")]
    Spawn(std::io::Error),
    /// The writer thread panicked; what was not acknowledged was not committed.
    #[error("the writer thread panicked")]
    WriterPanicked,
    /// The writer gave up on a batch at shutdown because the database kept failing; that batch
    /// was never acknowledged.
    #[error("writer stopped with {records} records uncommitted: {source}")]
    Unflushed {
        /// How many records were dropped.
        records: usize,
        /// The last commit error.
        source: Box<StoreError>,
    },
}

/// Why [`Store::submit`](crate::Store::submit) did not take a record. The record comes back so
/// the caller may keep it, count it, or log its Call-ID.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The bounded queue to the writer is full: the disk is slower than the calls. The hot path
    /// must not wait, so the caller counts this (and may answer new calls 503).
    #[error("store queue full")]
    Full(Box<Record>),
    /// The writer has shut down.
    #[error("store closed")]
    Closed(Box<Record>),
}

impl SubmitError {
    /// The record that was not taken.
    pub fn into_record(self) -> Record {
        match self {
            SubmitError::Full(r) | SubmitError::Closed(r) => *r,
        }
    }
}
