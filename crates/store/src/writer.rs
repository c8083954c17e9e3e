//! The single writer: a plain thread that owns the write connection, takes records from a
//! bounded channel, commits them in batched transactions and then acknowledges them.
//!
//! # Acknowledgement
//! Every accepted record gets a [`Ticket`] whose sequence number is its place in the one
//! submission order (1, 2, 3, …). The writer commits in that order, and after each durable
//! commit publishes the highest sequence committed: [`Store::committed_seq`]. A record is
//! acknowledged — guaranteed to survive a crash of the process or the machine — once
//! `committed_seq() >= ticket.seq()`. An optional callback hears each new value, so the daemon
//! can wake a task instead of polling.
//!
//! Sequence numbers are handed out under the same short lock that puts the record on the
//! channel. Without it two threads could take numbers in one order and enqueue in the other, and
//! a published `committed_seq` could cover a record still waiting. The lock is held for a
//! non-blocking `try_send` only; nothing under it waits for the disk.
//!
//! # Failure
//! A batch that fails to commit is kept and retried, with a backoff capped at a few seconds,
//! until it commits: records are never dropped once accepted. Meanwhile the queue fills and
//! `submit` reports [`SubmitError::Full`], which is the backpressure the daemon counts and
//! alarms on. Only at shutdown does the writer give up on a failing batch (after a few tries),
//! and then [`WriterHandle::shutdown`] says how many records were not written.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::StoreBackend;
use crate::error::{StoreError, SubmitError};
use crate::record::Record;

/// Proof that a record was accepted, and the number to compare with
/// [`Store::committed_seq`] to learn that it is durable. Sequence numbers belong to one
/// [`Store`] (one run of the daemon) and start again at 1 after a restart; what is durable
/// across restarts is the record itself, not its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// The record's place in the submission order, from 1.
    pub fn seq(self) -> u64 {
        self.0
    }
}

/// Batching limits of the writer, taken from [`StoreConfig`](crate::StoreConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Bound of the submit channel.
    pub queue_capacity: usize,
    /// Records per transaction at most (a group counts its members; a larger group still
    /// commits whole).
    pub max_batch: usize,
    /// How long to gather more records after the first.
    pub max_batch_wait: Duration,
}

impl From<&crate::StoreConfig> for WriterConfig {
    fn from(c: &crate::StoreConfig) -> Self {
        WriterConfig {
            queue_capacity: c.queue_capacity,
            max_batch: c.max_batch,
            max_batch_wait: Duration::from_millis(c.max_batch_wait_ms),
        }
    }
}

/// Counters for the daemon's metrics and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Highest sequence number durably committed.
    pub committed_seq: u64,
    /// Highest sequence number handed out.
    pub submitted_seq: u64,
    /// Records refused because the queue was full.
    pub rejected_full: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Commit attempts that failed (each is retried).
    pub commit_failures: u64,
    /// Whether the last commit attempt succeeded.
    pub healthy: bool,
    /// The last commit error, as text for the admin API.
    pub last_error: Option<String>,
}

/// Called on the writer thread after each durable commit with the new `committed_seq`. Keep it
/// short (wake a task, print a line): the next batch waits for it.
pub type CommitNotify = Box<dyn Fn(u64) + Send + 'static>;

enum Msg {
    Record(u64, Record),
    Shutdown,
}

struct SubmitSide {
    tx: Option<SyncSender<Msg>>,
    next_seq: u64,
}

struct Shared {
    submit: Mutex<SubmitSide>,
    committed: Mutex<u64>,
    committed_cv: Condvar,
    committed_fast: AtomicU64,
    rejected_full: AtomicU64,
    batches: AtomicU64,
    commit_failures: AtomicU64,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their data half-updated (plain integers
    // and options), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hot path's handle to the store: cheap to clone, never blocks, never touches the disk.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("committed_seq", &self.committed_seq())
            .finish()
    }
}

/// Owns the writer thread. Dropping it shuts the writer down (committing what was accepted);
/// call [`WriterHandle::shutdown`] to learn whether that worked.
pub struct WriterHandle {
    shared: Arc<Shared>,
    tx: Option<SyncSender<Msg>>,
    join: Option<JoinHandle<Result<(), StoreError>>>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle").finish_non_exhaustive()
    }
}

impl Store {
    /// Starts the writer thread on `backend`.
    pub fn spawn<B: StoreBackend>(
        backend: B,
        config: WriterConfig,
        notify: Option<CommitNotify>,
    ) -> Result<(Store, WriterHandle), StoreError> {
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            submit: Mutex::new(SubmitSide {
                tx: Some(tx.clone()),
                next_seq: 1,
            }),
            committed: Mutex::new(0),
            committed_cv: Condvar::new(),
            committed_fast: AtomicU64::new(0),
            rejected_full: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
        });
        let writer = Writer {
            backend,
            rx,
            shared: shared.clone(),
            config,
            notify,
        };
        let join = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                background_priority();
                writer.run()
            })
            .map_err(StoreError::Spawn)?;
        Ok((
            Store {
                shared: shared.clone(),
            },
            WriterHandle {
                shared,
                tx: Some(tx),
                join: Some(join),
            },
        ))
    }

    /// Hands a record to the writer. Never blocks and never touches the disk: when the queue is
    /// full the record comes back in [`SubmitError::Full`].
    pub fn submit(&self, record: Record) -> Result<Ticket, SubmitError> {
        let mut side = lock(&self.shared.submit);
        let seq = side.next_seq;
        let Some(tx) = side.tx.as_ref() else {
            return Err(SubmitError::Closed(Box::new(record)));
        };
        match tx.try_send(Msg::Record(seq, record)) {
            Ok(()) => {
                side.next_seq += 1;
                Ok(Ticket(seq))
            }
            Err(TrySendError::Full(Msg::Record(_, r))) => {
                drop(side);
                self.shared.rejected_full.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Full(Box::new(r)))
            }
            Err(TrySendError::Disconnected(Msg::Record(_, r))) => {
                Err(SubmitError::Closed(Box::new(r)))
            }
            Err(TrySendError::Full(Msg::Shutdown) | TrySendError::Disconnected(Msg::Shutdown)) => {
                unreachable!("submit only sends records")
            }
        }
    }

    /// The highest sequence number durably committed: every ticket at or below it is safe.
    pub fn committed_seq(&self) -> u64 {
        self.shared.committed_fast.load(Ordering::Acquire)
    }

    /// Whether this ticket's record is durably committed.
    pub fn is_committed(&self, ticket: Ticket) -> bool {
        self.committed_seq() >= ticket.0
    }

    /// Blocks until `ticket` is committed or `timeout` passes; returns whether it was. For the
    /// CLI, tests and shutdown paths — never the hot path.
    pub fn wait_committed(&self, ticket: Ticket, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut committed = lock(&self.shared.committed);
        while *committed < ticket.0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            committed = self
                .shared
                .committed_cv
                .wait_timeout(committed, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StoreStats {
        let submitted_seq = lock(&self.shared.submit).next_seq - 1;
        StoreStats {
            committed_seq: self.committed_seq(),
            submitted_seq,
            rejected_full: self.shared.rejected_full.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            commit_failures: self.shared.commit_failures.load(Ordering::Relaxed),
            healthy: self.shared.healthy.load(Ordering::Relaxed),
            last_error: lock(&self.shared.last_error).clone(),
        }
    }
}

impl WriterHandle {
    /// Stops taking records, commits everything already accepted, and stops the writer.
    /// `Err` says the writer could not write some accepted records (they were never
    /// acknowledged) or that it panicked.
    pub fn shutdown(mut self) -> Result<(), StoreError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), StoreError> {
        // Close the submit side first, under its lock, so no record can slip in behind the
        // shutdown message and be silently left in the channel.
        lock(&self.shared.submit).tx = None;
        if let Some(tx) = self.tx.take() {
            // Blocking is fine here: this is shutdown, and the writer is draining.
            let _ = tx.send(Msg::Shutdown);
        }
        match self.join.take() {
            Some(j) => j.join().map_err(|_| StoreError::WriterPanicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "store writer stopped with an error");
        }
    }
}

/// Retry delays after a failed commit: short first (a transient `SQLITE_BUSY`), then at most
/// a few seconds (a full disk being cleaned up).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Commit attempts for the last batch at shutdown before giving up on it.
const SHUTDOWN_TRIES: u32 = 3;

struct Writer<B> {
    backend: B,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    config: WriterConfig,
    notify: Option<CommitNotify>,
}

impl<B: StoreBackend> Writer<B> {
    fn run(mut self) -> Result<(), StoreError> {
        let mut batch: Vec<Record> = Vec::with_capacity(self.config.max_batch);
        // The last batch filled up: more is probably queued, so the next one takes it at once.
        let mut was_full = false;
        loop {
            let mut last_seq = 0;
            let mut weight = 0;
            let mut closing = false;
            // Wait for the first record; then let the batch gather for the wait, asleep, and take
            // what is queued. (Blocking in `recv_timeout` instead woke this thread for every
            // record: a context switch per CDR for the SIP thread when the two share a CPU, 10 %
            // of its time at 3,500 calls/s.) A shutdown is seen at the end of the wait.
            match self.rx.recv() {
                Ok(Msg::Record(seq, r)) => {
                    weight += r.weight();
                    last_seq = seq;
                    batch.push(r);
                }
                Ok(Msg::Shutdown) | Err(_) => closing = true,
            }
            if !closing && !was_full && weight < self.config.max_batch {
                std::thread::sleep(self.config.max_batch_wait);
            }
            while !closing && weight < self.config.max_batch {
                match self.rx.try_recv() {
                    Ok(Msg::Record(seq, r)) => {
                        weight += r.weight();
                        last_seq = seq;
                        batch.push(r);
                    }
                    Ok(Msg::Shutdown) | Err(TryRecvError::Disconnected) => closing = true,
                    Err(TryRecvError::Empty) => break,
                }
            }
            was_full = weight >= self.config.max_batch;
            if closing {
                // Nothing can be submitted any more; take what is left.
                while let Ok(Msg::Record(seq, r)) = self.rx.try_recv() {
                    last_seq = seq;
                    batch.push(r);
                }
            }
            if !batch.is_empty() {
                self.commit_until_done(&batch, last_seq, closing)?;
                batch.clear();
            }
            if closing {
                return Ok(());
            }
        }
    }

    fn commit_until_done(
        &mut self,
        batch: &[Record],
        last_seq: u64,
        closing: bool,
    ) -> Result<(), StoreError> {
        let mut delay = RETRY_FIRST;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.backend.commit(batch) {
                Ok(()) => {
                    self.shared.batches.fetch_add(1, Ordering::Relaxed);
                    self.shared.healthy.store(true, Ordering::Relaxed);
                    {
                        let mut c = lock(&self.shared.committed);
                        *c = last_seq;
                        self.shared
                            .committed_fast
                            .store(last_seq, Ordering::Release);
                    }
                    self.shared.committed_cv.notify_all();
                    if let Some(n) = &self.notify {
                        n(last_seq);
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.shared.commit_failures.fetch_add(1, Ordering::Relaxed);
                    self.shared.healthy.store(false, Ordering::Relaxed);
                    *lock(&self.shared.last_error) = Some(e.to_string());
                    tracing::warn!(error = %e, records = batch.len(), retry_in = ?delay, "store commit failed");
                    if closing && tries >= SHUTDOWN_TRIES {
                        return Err(StoreError::Unflushed {
                            records: batch.len(),
                            source: Box::new(e),
                        });
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// Makes the calling thread a background one: SCHED_OTHER at nice 10 (the writer's, and the
/// daemon's outbox thread's).
///
/// The writer is throughput work; the thread that hands it records (the daemon's SIP thread) is
/// latency work. On a shared CPU the scheduler gave the writer slices of its own while calls
/// waited (a batch of CDRs is ~1–2 ms of SQLite): at nice 10 the SIP thread preempts it when it
/// wakes, and the writer still gets ~10 % of a CPU that both want (far more than 3,500 CDRs a
/// second need). Linux: the nice value is per thread, and 0 means the calling one.
///
/// A daemon started under a real-time policy (`chrt -f`, systemd `CPUSchedulingPolicy=fifo`) hands
/// it to every thread it starts: a SCHED_FIFO writer would run its SQLite batches to the end ahead
/// of the SIP thread (FIFO threads of one priority never preempt each other). So the writer first
/// goes back to SCHED_OTHER (always permitted), then to nice 10.
pub fn background_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    // Failures only leave the policy or priority as they were.
    let _ = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
    );
    let _ = rustix::process::setpriority_process(None, 10);
}
