//! Delivery of work orders to sub-centers' HTTP endpoints: the scheduling and its persistence.
//! The daemon does the HTTP (it owns tokio and hyper); this module decides what to send when,
//! and remembers it across restarts.
//!
//! # Guarantees
//! - **Per-endpoint order.** Only the oldest pending item of an endpoint is ever handed out, and
//!   only one item per endpoint is in flight: a later item is never delivered before an earlier
//!   one, even while the earlier one is being retried.
//! - **At least once, exactly once per key.** An item is marked delivered only after the daemon
//!   reports success. A crash between the sub-center's 2xx and that mark redelivers the item
//!   with the same idempotency key, which the sub-center uses to keep one effect per key.
//! - **Retries with capped exponential backoff**, per item, persisted: a restart resumes the
//!   schedule rather than hammering an endpoint that was down.
//!
//! # Run loop contract
//! All time is input (unix ms): the outbox never reads a clock, so tests jump a virtual clock
//! over an hour-long outage in milliseconds.
//! ```text
//! let mut outbox = Outbox::open(SqliteBackend::open(path, busy)?, config.outbox)?;
//! loop {
//!     outbox.refresh()?;                          // after the writer commits (its notify), or
//!                                                 // on a slow tick: picks up new deliveries
//!     while let Some(d) = outbox.poll_delivery(now_ms) {
//!         spawn(post(d.endpoint, d.body, "Idempotency-Key: " + d.idempotency_key));
//!     }
//!     // as each POST finishes, exactly one of:
//!     outbox.on_success(id, now_ms)?;             // 2xx
//!     outbox.on_failure(id, now_ms, retry_after)?; // connect error, timeout, 5xx, 408, 429
//!     outbox.on_rejected(id, now_ms)?;            // other 4xx: set aside, not retried
//!     rearm_timer(outbox.poll_timeout());         // next due time of an idle endpoint
//!     gauge(BACKLOG, outbox.backlog());
//! }
//! ```
//! Every item handed out must be answered by one of the three calls, or its endpoint stalls;
//! the daemon's HTTP client therefore runs with a timeout and reports it as a failure.
//!
//! The outbox writes through its own connection. Its writes are one small transaction per
//! delivery attempt, off the hot path; SQLite serializes them with the writer's batches through
//! the busy timeout.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::backend::{DeliveryEnd, PendingDelivery, StoreBackend};
use crate::config::OutboxConfig;
use crate::error::StoreError;
use crate::record::UnixMs;

/// One POST to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Outbox id, to report the result with.
    pub id: i64,
    /// The sub-center endpoint.
    pub endpoint: String,
    /// The JSON body.
    pub body: String,
    /// The `Idempotency-Key` header value; the same on every attempt.
    pub idempotency_key: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
}

/// The in-memory schedule: which item of which endpoint is due when. Pure data, no I/O; the
/// [`Outbox`] persists each change before it applies it here.
#[derive(Debug, Clone)]
pub struct OutboxScheduler {
    config: OutboxConfig,
    /// Per endpoint, its pending items oldest first. A `BTreeMap` so that iteration order, and
    /// with it every test, is deterministic.
    endpoints: BTreeMap<String, EndpointQueue>,
    /// Which endpoint an id belongs to.
    index: HashMap<i64, String>,
    /// Highest id ever loaded, to load only newer ones.
    max_id: i64,
}

#[derive(Debug, Clone, Default)]
struct EndpointQueue {
    items: VecDeque<PendingDelivery>,
    in_flight: bool,
}

/// A result reported for an id that is not the one in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbox item {0} is not in flight")]
pub struct NotInFlight(pub i64);

impl OutboxScheduler {
    /// An empty schedule.
    pub fn new(config: OutboxConfig) -> OutboxScheduler {
        OutboxScheduler {
            config,
            endpoints: BTreeMap::new(),
            index: HashMap::new(),
            max_id: 0,
        }
    }

    /// Adds pending items (from the database, in id order). Items already known are skipped,
    /// so overlapping loads are harmless.
    pub fn load(&mut self, items: impl IntoIterator<Item = PendingDelivery>) {
        for item in items {
            if self.index.contains_key(&item.id) || item.id <= self.max_id {
                continue;
            }
            self.max_id = item.id;
            self.index.insert(item.id, item.endpoint.clone());
            self.endpoints
                .entry(item.endpoint.clone())
                .or_default()
                .items
                .push_back(item);
        }
    }

    /// The highest id loaded.
    pub fn max_id(&self) -> i64 {
        self.max_id
    }

    /// Pending items, in flight included.
    pub fn backlog(&self) -> usize {
        self.index.len()
    }

    /// The next item to send at `now_ms`, if an endpoint is idle and its head is due; marks it
    /// in flight. Of several due endpoints, the one whose head has waited longest goes first.
    pub fn poll_delivery(&mut self, now_ms: UnixMs) -> Option<Delivery> {
        let (_, endpoint) = self
            .endpoints
            .iter()
            .filter(|(_, q)| !q.in_flight)
            .filter_map(|(e, q)| q.items.front().map(|h| ((h.next_attempt_ms, h.id), e)))
            .filter(|((due, _), _)| *due <= now_ms)
            .min()?;
        let endpoint = endpoint.clone();
        let q = self.endpoints.get_mut(&endpoint)?;
        q.in_flight = true;
        let head = q.items.front()?;
        Some(Delivery {
            id: head.id,
            endpoint,
            body: head.body.clone(),
            idempotency_key: head.idempotency_key.clone(),
            attempt: head.attempts + 1,
        })
    }

    /// When the next idle endpoint's head falls due (possibly already past); `None` when
    /// nothing waits except items in flight.
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        self.endpoints
            .values()
            .filter(|q| !q.in_flight)
            .filter_map(|q| q.items.front().map(|h| h.next_attempt_ms))
            .min()
    }

    fn in_flight_head(&mut self, id: i64) -> Result<&mut EndpointQueue, NotInFlight> {
        let endpoint = self.index.get(&id).ok_or(NotInFlight(id))?;
        let q = self.endpoints.get_mut(endpoint).ok_or(NotInFlight(id))?;
        match q.items.front() {
            Some(h) if q.in_flight && h.id == id => Ok(q),
            _ => Err(NotInFlight(id)),
        }
    }

    /// The attempt count `id` will have once the attempt in flight is counted.
    pub fn attempts_after(&self, id: i64) -> Option<u32> {
        let q = self.endpoints.get(self.index.get(&id)?)?;
        q.items
            .front()
            .filter(|h| h.id == id)
            .map(|h| h.attempts + 1)
    }

    /// The wait after the `attempts`-th failure: `initial · 2^(attempts-1)`, capped.
    pub fn backoff_ms(&self, attempts: u32) -> u64 {
        let shift = attempts.saturating_sub(1).min(32);
        self.config
            .initial_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(self.config.max_backoff_ms)
    }

    /// The in-flight item is done (delivered or rejected): its endpoint moves to the next item.
    pub fn finish(&mut self, id: i64) -> Result<(), NotInFlight> {
        let q = self.in_flight_head(id)?;
        q.items.pop_front();
        q.in_flight = false;
        self.index.remove(&id);
        Ok(())
    }

    /// The in-flight attempt failed; returns when the item is due again. A `Retry-After`
    /// from the endpoint lengthens the wait but does not shorten it.
    pub fn fail(
        &mut self,
        id: i64,
        now_ms: UnixMs,
        retry_after_ms: Option<u64>,
    ) -> Result<UnixMs, NotInFlight> {
        let attempts = self.attempts_after(id).ok_or(NotInFlight(id))?;
        let wait = self
            .backoff_ms(attempts)
            .max(retry_after_ms.unwrap_or(0).min(self.config.max_backoff_ms));
        let next = now_ms.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
        let q = self.in_flight_head(id)?;
        q.in_flight = false;
        if let Some(h) = q.items.front_mut() {
            h.attempts = attempts;
            h.next_attempt_ms = next;
        }
        Ok(next)
    }

    /// The attempt in flight could not even be recorded: hand the item out again on the next
    /// poll, without counting an attempt.
    pub fn release(&mut self, id: i64) -> Result<(), NotInFlight> {
        self.in_flight_head(id)?.in_flight = false;
        Ok(())
    }
}

/// Why an outbox call failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database refused the update; the item will be offered again (same key).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The daemon reported a result for an item it was not given (a bug in the caller).
    #[error(transparent)]
    NotInFlight(#[from] NotInFlight),
}

/// The durable outbox: the [`OutboxScheduler`] over a backend connection.
pub struct Outbox<B: StoreBackend> {
    backend: B,
    scheduler: OutboxScheduler,
}

impl<B: StoreBackend> std::fmt::Debug for Outbox<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("scheduler", &self.scheduler)
            .finish()
    }
}

impl<B: StoreBackend> Outbox<B> {
    /// Loads every pending delivery, with its persisted attempts and next due time.
    pub fn open(backend: B, config: OutboxConfig) -> Result<Outbox<B>, StoreError> {
        let mut outbox = Outbox {
            backend,
            scheduler: OutboxScheduler::new(config),
        };
        outbox.refresh()?;
        Ok(outbox)
    }

    /// Picks up deliveries committed since the last refresh; returns how many.
    pub fn refresh(&mut self) -> Result<usize, StoreError> {
        let before = self.scheduler.backlog();
        let items = self.backend.outbox_pending(self.scheduler.max_id())?;
        self.scheduler.load(items);
        Ok(self.scheduler.backlog() - before)
    }

    /// See [`OutboxScheduler::poll_delivery`].
    pub fn poll_delivery(&mut self, now_ms: UnixMs) -> Option<Delivery> {
        self.scheduler.poll_delivery(now_ms)
    }

    /// See [`OutboxScheduler::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        self.scheduler.poll_timeout()
    }

    /// Pending deliveries (the backlog metric).
    pub fn backlog(&self) -> usize {
        self.scheduler.backlog()
    }

    /// The endpoint answered 2xx. Persisted before the next item of the endpoint is released,
    /// so a crash can repeat this item (same key) but never skip it.
    pub fn on_success(&mut self, id: i64, now_ms: UnixMs) -> Result<(), OutboxError> {
        self.end(id, now_ms, DeliveryEnd::Delivered)
    }

    /// The endpoint refused the item for good; it is set aside (state `rejected`, kept for an
    /// operator) so it does not block the endpoint's later items.
    pub fn on_rejected(&mut self, id: i64, now_ms: UnixMs) -> Result<(), OutboxError> {
        self.end(id, now_ms, DeliveryEnd::Rejected)
    }

    fn end(&mut self, id: i64, now_ms: UnixMs, end: DeliveryEnd) -> Result<(), OutboxError> {
        let attempts = self.scheduler.attempts_after(id).ok_or(NotInFlight(id))?;
        self.scheduler.in_flight_head(id)?;
        if let Err(e) = self.backend.outbox_finish(id, end, attempts, now_ms) {
            self.scheduler.release(id)?;
            return Err(e.into());
        }
        self.scheduler.finish(id)?;
        Ok(())
    }

    /// The attempt failed and may be retried (connection refused, timeout, 5xx, 408, 429);
    /// `retry_after_ms` is the endpoint's `Retry-After`, if it sent one.
    pub fn on_failure(
        &mut self,
        id: i64,
        now_ms: UnixMs,
        retry_after_ms: Option<u64>,
    ) -> Result<UnixMs, OutboxError> {
        let attempts = self.scheduler.attempts_after(id).ok_or(NotInFlight(id))?;
        self.scheduler.in_flight_head(id)?;
        let next = self.scheduler.fail(id, now_ms, retry_after_ms)?;
        // Memory first: if the database refuses, the schedule still backs off, and a restart
        // merely retries sooner than planned.
        self.backend
            .outbox_retry_later(id, attempts, now_ms, next)?;
        Ok(next)
    }

    /// The backend, for queries on the same connection.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, endpoint: &str) -> PendingDelivery {
        PendingDelivery {
            id,
            endpoint: endpoint.into(),
            body: format!("{{\"n\":{id}}}"),
            idempotency_key: format!("k{id}"),
            work_order: None,
            attempts: 0,
            next_attempt_ms: 0,
        }
    }

    fn config() -> OutboxConfig {
        OutboxConfig {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = OutboxScheduler::new(config());
        let waits: Vec<u64> = (1..=9).map(|a| s.backoff_ms(a)).collect();
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
        assert_eq!(s.backoff_ms(u32::MAX), 60_000);
    }

    #[test]
    fn one_item_per_endpoint_in_flight_heads_only() {
        let mut s = OutboxScheduler::new(config());
        s.load([item(1, "a"), item(2, "a"), item(3, "b")]);
        let d1 = s.poll_delivery(0).unwrap();
        let d3 = s.poll_delivery(0).unwrap();
        assert_eq!((d1.id, d3.id), (1, 3));
        assert_eq!(s.poll_delivery(0), None, "item 2 waits behind item 1");
        s.finish(1).unwrap();
        assert_eq!(s.poll_delivery(0).unwrap().id, 2);
        assert_eq!(s.finish(1), Err(NotInFlight(1)));
    }

    #[test]
    fn a_failing_head_blocks_its_endpoint_but_not_others() {
        let mut s = OutboxScheduler::new(config());
        s.load([item(1, "a"), item(2, "a"), item(3, "b"), item(4, "b")]);
        assert_eq!(s.poll_delivery(0).unwrap().id, 1);
        assert_eq!(s.fail(1, 0, None), Ok(1_000));
        assert_eq!(s.poll_delivery(0).unwrap().id, 3);
        s.finish(3).unwrap();
        assert_eq!(s.poll_delivery(0).unwrap().id, 4);
        assert_eq!(s.poll_delivery(0), None);
        assert_eq!(s.poll_timeout(), Some(1_000));
        let again = s.poll_delivery(1_000).unwrap();
        assert_eq!((again.id, again.attempt), (1, 2));
    }

    #[test]
    fn retry_after_lengthens_but_is_capped() {
        let mut s = OutboxScheduler::new(config());
        s.load([item(1, "a")]);
        s.poll_delivery(0).unwrap();
        assert_eq!(s.fail(1, 0, Some(30_000)), Ok(30_000));
        s.poll_delivery(30_000).unwrap();
        assert_eq!(s.fail(1, 30_000, Some(10_000_000)), Ok(90_000));
    }

    #[test]
    fn reloading_known_items_is_harmless() {
        let mut s = OutboxScheduler::new(config());
        s.load([item(1, "a"), item(2, "a")]);
        s.load([item(1, "a"), item(2, "a"), item(3, "a")]);
        assert_eq!(s.backlog(), 3);
        assert_eq!(s.max_id(), 3);
    }
}
