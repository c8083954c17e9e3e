//! Durable records of the 12345 switchboard: call detail records, work orders (工单), the
//! registration and agent-state snapshots that let a restart keep agents logged in, and the
//! outbox that carries work orders to sub-centers over HTTP.
//!
//! # The promise: nothing acknowledged is lost
//! The hot path never touches the disk. It hands a [`Record`] to [`Store::submit`], which puts
//! it on a bounded channel and returns a [`Ticket`] at once — or [`SubmitError::Full`] when the
//! disk has fallen behind, which the daemon counts. One writer thread commits records in
//! batched transactions (up to `max_batch` records or `max_batch_wait_ms`), and only after a
//! commit is durable does it advance [`Store::committed_seq`]. A record is *acknowledged* when
//! `committed_seq() >= ticket.seq()`; from then on it survives SIGKILL and power loss
//! (`synchronous = FULL`, see [`SqliteBackend`]). `tests/crash.rs` SIGKILLs a writer under load
//! and checks exactly that.
//!
//! # Run loop contract
//! ```text
//! let config: StoreConfig = /* the [store] section */;
//! config.validate()?;
//! let (store, writer) = store::open(&config, Some(Box::new(move |seq| notify.wake(seq))))?;
//! // boot: restore state before taking calls
//! let mut reader = store::open_reader(&config)?;
//! let bindings = reader.load_kv(KvSpace::Registration, now_ms)?;
//! let agents = reader.load_kv(KvSpace::AgentState, now_ms)?;
//! // hot path, any thread:
//! match store.submit(Record::Cdr(Box::new(cdr))) {
//!     Ok(ticket) => {}                       // durable once store.committed_seq() >= ticket.seq()
//!     Err(SubmitError::Full(_)) => metrics::counter!(STORE_REJECTED).increment(1),
//!     Err(SubmitError::Closed(_)) => {}      // shutting down
//! }
//! // a work order, its delivery and its CDR go together, all or nothing:
//! store.submit(Record::Group(vec![Record::WorkOrder(..), Record::Deliver(..), Record::Cdr(..)]))?;
//! // outbox task: see the `outbox` module
//! // shutdown (SIGTERM): stop submitting, then
//! writer.shutdown()?;                         // commits everything accepted
//! ```
//!
//! # Backends
//! Everything that touches the database goes through [`StoreBackend`]. [`SqliteBackend`] is the
//! embedded default; a PostgreSQL backend for the HA pair (DESIGN.md §4) implements the same
//! trait. Each user holds its own backend instance — a connection: the writer thread one, the
//! outbox one, each reader one — so readers never wait for the writer (WAL).

mod backend;
mod config;
mod error;
mod export;
pub mod orders;
pub mod outbox;
pub mod postgres;
mod record;
pub mod schema;
mod sqlite;
pub mod testing;
mod writer;

use std::time::Duration;

pub use backend::{DeliveryEnd, PendingDelivery, StoreBackend};
pub use config::{ConfigErrors, ConfigProblem, OutboxConfig, StoreConfig};
pub use error::{StoreError, SubmitError};
pub use export::{write_csv, write_jsonl, CDR_COLUMNS};
pub use orders::{agent_order, work_orders, AgentOrder, NewOrder};
pub use outbox::{Delivery, Outbox, OutboxError, OutboxScheduler};
pub use postgres::PgBackend;
pub use record::{
    Cdr, HistoryEntry, KvRow, KvSpace, LineMode, NewDelivery, Outcome, Record, Redacted, UnixMs,
    WorkOrder, WorkOrderIds, WorkOrderKind, WorkOrderStatus,
};
pub use sqlite::SqliteBackend;
pub use writer::{
    background_priority, CommitNotify, Store, StoreStats, Ticket, WriterConfig, WriterHandle,
};

/// Opens the database of `config` (SQLite, or PostgreSQL when `postgres_url` is set),
/// migrating it, and starts the writer on it.
pub fn open(
    config: &StoreConfig,
    notify: Option<CommitNotify>,
) -> Result<(Store, WriterHandle), StoreError> {
    let backend = open_backend(config)?;
    Store::spawn(backend, WriterConfig::from(config), notify)
}

/// Opens another connection to the database of `config`, whichever backend it names.
pub fn open_backend(config: &StoreConfig) -> Result<AnyBackend, StoreError> {
    match &config.postgres_url {
        Some(url) => Ok(AnyBackend::Postgres(PgBackend::connect(url)?)),
        None => Ok(AnyBackend::Sqlite(open_reader(config)?)),
    }
}

/// Opens another connection to the database of `config`, for queries, exports or the outbox.
pub fn open_reader(config: &StoreConfig) -> Result<SqliteBackend, StoreError> {
    SqliteBackend::open(&config.path, Duration::from_millis(config.busy_timeout_ms))
}

/// Opens the outbox of the database of `config` on its own connection.
pub fn open_outbox(config: &StoreConfig) -> Result<Outbox<AnyBackend>, StoreError> {
    Outbox::open(open_backend(config)?, config.outbox)
}

/// The backend chosen in config: SQLite for a single node, PostgreSQL for the HA pair.
#[derive(Debug)]
pub enum AnyBackend {
    /// The embedded file.
    Sqlite(SqliteBackend),
    /// The shared database.
    Postgres(PgBackend),
}

macro_rules! each_backend {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            AnyBackend::Sqlite($b) => $e,
            AnyBackend::Postgres($b) => $e,
        }
    };
}

impl StoreBackend for AnyBackend {
    fn commit(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        each_backend!(self, b => b.commit(batch))
    }
    fn for_each_cdr_since(
        &mut self,
        since_ms: UnixMs,
        each: &mut dyn FnMut(Cdr) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        each_backend!(self, b => b.for_each_cdr_since(since_ms, each))
    }
    fn cdrs_by_call_id(&mut self, call_id: &str) -> Result<Vec<Cdr>, StoreError> {
        each_backend!(self, b => b.cdrs_by_call_id(call_id))
    }
    fn work_order(&mut self, id: &str) -> Result<Option<WorkOrder>, StoreError> {
        each_backend!(self, b => b.work_order(id))
    }
    fn work_orders_since(
        &mut self,
        since_ms: UnixMs,
        limit: usize,
    ) -> Result<Vec<WorkOrder>, StoreError> {
        each_backend!(self, b => b.work_orders_since(since_ms, limit))
    }
    fn load_kv(&mut self, space: KvSpace, now_ms: UnixMs) -> Result<Vec<KvRow>, StoreError> {
        each_backend!(self, b => b.load_kv(space, now_ms))
    }
    fn outbox_pending(&mut self, after_id: i64) -> Result<Vec<PendingDelivery>, StoreError> {
        each_backend!(self, b => b.outbox_pending(after_id))
    }
    fn outbox_retry_later(
        &mut self,
        id: i64,
        attempts: u32,
        now_ms: UnixMs,
        next_attempt_ms: UnixMs,
    ) -> Result<(), StoreError> {
        each_backend!(self, b => b.outbox_retry_later(id, attempts, now_ms, next_attempt_ms))
    }
    fn outbox_finish(
        &mut self,
        id: i64,
        end: DeliveryEnd,
        attempts: u32,
        now_ms: UnixMs,
    ) -> Result<(), StoreError> {
        each_backend!(self, b => b.outbox_finish(id, end, attempts, now_ms))
    }
    fn outbox_backlog(&mut self) -> Result<u64, StoreError> {
        each_backend!(self, b => b.outbox_backlog())
    }
    fn check_integrity(&mut self) -> Result<(), StoreError> {
        each_backend!(self, b => b.check_integrity())
    }
}
