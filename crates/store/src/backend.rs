//! The seam between the store's logic (the writer thread, the outbox scheduler, exports) and the
//! database. SQLite implements it now; the PostgreSQL backend of the HA pair (DESIGN.md §4) will
//! implement the same trait, so the daemon picks a backend at start-up and nothing else changes.

use crate::error::StoreError;
use crate::record::{Cdr, KvRow, KvSpace, Record, UnixMs, WorkOrder};

/// A delivery waiting in the outbox, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    /// Outbox id: increasing in commit order, never reused. Orders deliveries per endpoint.
    pub id: i64,
    /// The sub-center endpoint.
    pub endpoint: String,
    /// The JSON body.
    pub body: String,
    /// The idempotency key.
    pub idempotency_key: String,
    /// The work order delivered, if any.
    pub work_order: Option<String>,
    /// Attempts made so far (all failed).
    pub attempts: u32,
    /// Not before this time.
    pub next_attempt_ms: UnixMs,
}

/// How an outbox delivery ended for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryEnd {
    /// The endpoint accepted it (2xx).
    Delivered,
    /// The endpoint refused it in a way a retry cannot fix (a 4xx other than 408/429); it is
    /// set aside so later items to the same endpoint are not blocked behind it forever.
    Rejected,
}

/// A database that keeps the switchboard's records.
///
/// One instance is one connection: the writer thread owns one, the outbox another, and each
/// reader (admin API, export) its own. Methods take `&mut self` because a connection serves one
/// caller at a time.
pub trait StoreBackend: Send + 'static {
    /// Writes `batch` in one transaction, in order. Returns only once the transaction is
    /// durable: on `Ok`, the records survive a crash of the process *and* of the machine; on
    /// `Err`, none of them were written and the caller may retry the same batch.
    fn commit(&mut self, batch: &[Record]) -> Result<(), StoreError>;

    /// Calls `each` with every CDR of a call that arrived at or after `since_ms`, oldest
    /// arrival first. Streams, so exports of a year take constant memory.
    fn for_each_cdr_since(
        &mut self,
        since_ms: UnixMs,
        each: &mut dyn FnMut(Cdr) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The CDRs with this Call-ID (normally one).
    fn cdrs_by_call_id(&mut self, call_id: &str) -> Result<Vec<Cdr>, StoreError>;

    /// A work order with its full history.
    fn work_order(&mut self, id: &str) -> Result<Option<WorkOrder>, StoreError>;

    /// Work orders created at or after `since_ms`, oldest first, at most `limit`, with their
    /// histories.
    fn work_orders_since(
        &mut self,
        since_ms: UnixMs,
        limit: usize,
    ) -> Result<Vec<WorkOrder>, StoreError>;

    /// The snapshot rows of `space` still valid at `now_ms`, by key.
    fn load_kv(&mut self, space: KvSpace, now_ms: UnixMs) -> Result<Vec<KvRow>, StoreError>;

    /// Pending deliveries with an id above `after_id`, by id.
    fn outbox_pending(&mut self, after_id: i64) -> Result<Vec<PendingDelivery>, StoreError>;

    /// Records a failed attempt and when to try next.
    fn outbox_retry_later(
        &mut self,
        id: i64,
        attempts: u32,
        now_ms: UnixMs,
        next_attempt_ms: UnixMs,
    ) -> Result<(), StoreError>;

    /// Records the end of a delivery. When it delivers a work order, the order's history gets
    /// the step in the same transaction.
    fn outbox_finish(
        &mut self,
        id: i64,
        end: DeliveryEnd,
        attempts: u32,
        now_ms: UnixMs,
    ) -> Result<(), StoreError>;

    /// How many deliveries are pending.
    fn outbox_backlog(&mut self) -> Result<u64, StoreError>;

    /// Checks the database's own consistency (SQLite: `PRAGMA integrity_check`).
    fn check_integrity(&mut self) -> Result<(), StoreError>;
}
