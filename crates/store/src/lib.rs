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
mod record;
pub mod schema;
mod sqlite;
mod writer;

use std::time::Duration;

pub use backend::{DeliveryEnd, PendingDelivery, StoreBackend};
pub use config::{ConfigErrors, ConfigProblem, OutboxConfig, StoreConfig};
pub use error::{StoreError, SubmitError};
pub use export::{write_csv, write_jsonl, CDR_COLUMNS};
pub use orders::{agent_order, work_orders, NewOrder};
pub use outbox::{Delivery, Outbox, OutboxError, OutboxScheduler};
pub use record::{
    Cdr, HistoryEntry, KvRow, KvSpace, LineMode, NewDelivery, Outcome, Record, Redacted, UnixMs,
    WorkOrder, WorkOrderIds, WorkOrderKind, WorkOrderStatus,
};
pub use sqlite::SqliteBackend;
pub use writer::{CommitNotify, Store, StoreStats, Ticket, WriterConfig, WriterHandle};

/// Opens the SQLite database of `config` (migrating it) and starts the writer on it.
pub fn open(
    config: &StoreConfig,
    notify: Option<CommitNotify>,
) -> Result<(Store, WriterHandle), StoreError> {
    let backend = open_reader(config)?;
    Store::spawn(backend, WriterConfig::from(config), notify)
}

/// Opens another connection to the database of `config`, for queries, exports or the outbox.
pub fn open_reader(config: &StoreConfig) -> Result<SqliteBackend, StoreError> {
    SqliteBackend::open(&config.path, Duration::from_millis(config.busy_timeout_ms))
}

/// Opens the outbox of the database of `config` on its own connection.
pub fn open_outbox(config: &StoreConfig) -> Result<Outbox<SqliteBackend>, StoreError> {
    Outbox::open(open_reader(config)?, config.outbox)
}
