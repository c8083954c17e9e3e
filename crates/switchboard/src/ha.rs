//! The active/standby pair over PostgreSQL (DESIGN.md §4; README "High availability").
//!
//! # One active node
//! Leadership is a PostgreSQL session-level advisory lock (`pg_advisory_lock`, waited for one
//! heartbeat at a time under `lock_timeout`), held by a connection this module keeps open for
//! nothing else. The node holding it is *active*: only then
//! does the daemon bind its SIP listeners (the service address, the same on both nodes — the
//! address that keepalived/VRRP or DNS points at). The other node is *standby*: no SIP sockets at
//! all, and a warm copy of the active node's registrations and agent states in memory.
//!
//! When the active node dies, the kernel closes its connection, PostgreSQL ends the session and
//! releases the lock, and grants it at once to the standby, which is waiting for it; the standby
//! reads what changed since its last poll, and the daemon binds the service address (retrying
//! while the old holder's sockets are still closing). Takeover is a lock grant, one read and a
//! bind.
//!
//! # Fencing
//! An active node that loses its session (the database stopped, the network gone) may no longer
//! hold the lock: the other node may take it. So at the first failed heartbeat — or when no
//! heartbeat has succeeded for `fence_after_ms`, which catches a database that hangs instead of
//! failing — the daemon is *fenced*: new non-emergency INVITEs get 503 with Retry-After, while
//! emergency calls, which read nothing from the database, still route. If the lock is taken back,
//! the node is active again; if the other node holds it, this daemon exits (systemd restarts it as
//! a clean standby).
//!
//! # Shared registrations: one row per AOR, written when the REGISTER is accepted
//! After each turn of its event loop (so right *after* the 200 OK went out, never before), the
//! active daemon hands the AORs whose bindings changed to this thread ([`Ha::registrations`]):
//! one [`AorRow`] per AOR, its whole binding set. The thread merges whatever is queued and
//! upserts it into `ha_registration` in one transaction on the lock's own connection; each row
//! gets the next value of a sequence (`version`). A phone that got its 200 OK is therefore in the
//! database one commit later (`switchboard_ha_registration_lag_seconds` measures the gap). A
//! batch that fails to commit is kept and written first once the lock is held again; a full
//! channel leaves the AORs marked in the daemon, which hands them over on its next turn.
//!
//! # The warm standby
//! Every heartbeat, the standby reads the rows whose `version` is above the last one it saw (all
//! of them after connecting, marked `full` so that AORs gone from the table are dropped) and the
//! agent states (`kv`, space `agent-state`) that changed, and sends them to the daemon
//! ([`Ha::warm`]), which applies them to its registrar and seat manager at once. When it takes
//! the lock it reads once more — on the lock's connection, so nothing the dead node committed is
//! missed — plus the answered calls the dead node left open (`open-call` rows), then reports
//! [`Role::Active`]. Takeover only swaps in what the standby already holds.
//!
//! # Why the blocking `postgres` client
//! It is the blocking façade of `tokio-postgres` (same protocol code, same maintainers). This
//! module is one thread that owns one connection and waits on it; the daemon's tokio workers never
//! run a query (the store does the same with its writer thread, see `store::postgres`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::{Client, NoTls};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

/// The `[ha]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// The shared database (`postgresql://user@host:port/db`), usually the store's.
    pub postgres_url: String,
    /// This node's name, in logs, the registration table and `GET /api/v1/ha`.
    pub node: String,
    /// The advisory lock both nodes contend for; change it only to run two pairs on one database.
    #[serde(default = "default_lock_key")]
    pub lock_key: i64,
    /// How often the warm copy is refreshed between waits for the lock (standby), or the session
    /// checked (active).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// An active node with no successful heartbeat for this long fences itself.
    #[serde(default = "default_fence_after_ms")]
    pub fence_after_ms: u64,
    /// The longest call the pair expects. An answered call inherited from the other node whose
    /// BYE has not arrived this long after its answer is closed with the outcome
    /// `failover-lost`.
    #[serde(default = "default_max_call_s")]
    pub max_call_s: u64,
}

fn default_lock_key() -> i64 {
    0x3132_3334_3568_6121 // "12345ha!"
}
fn default_heartbeat_ms() -> u64 {
    500
}
fn default_fence_after_ms() -> u64 {
    2_000
}
fn default_max_call_s() -> u64 {
    4 * 3600
}

impl HaConfig {
    /// Every problem with the values.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.node.is_empty() || !self.node.bytes().all(|b| b.is_ascii_alphanumeric()) {
            p.push(format!(
                "ha.node: `{}` must be a non-empty name of letters and digits",
                self.node
            ));
        }
        if self.heartbeat_ms < 50 {
            p.push("ha.heartbeat_ms: at least 50".to_owned());
        }
        if self.fence_after_ms <= self.heartbeat_ms {
            p.push("ha.fence_after_ms: must be longer than ha.heartbeat_ms".to_owned());
        }
        if self.max_call_s == 0 {
            p.push("ha.max_call_s: at least 1".to_owned());
        }
        p
    }
}

/// What this node may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Waiting for the lock: no SIP sockets.
    Standby,
    /// Holding the lock: serving.
    Active,
    /// Was active, lost the session: emergency calls only.
    Fenced,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Active => "active",
            Role::Fenced => "fenced",
        }
    }
}

/// One AOR's bindings as the active node shares them.
#[derive(Debug, Clone, PartialEq)]
pub struct AorRow {
    /// The AOR's user part.
    pub aor: String,
    /// `BindingRecord::to_text` of its live bindings (the header alone when it has none).
    pub bindings: String,
    /// Wall-clock ms when the bindings were exported: their lifetimes count from here.
    pub written_ms: i64,
    /// Wall-clock ms when the last of them lapses (`written_ms` when there are none).
    pub expires_ms: i64,
}

/// A batch of changed AORs, handed over right after the 200 OKs that caused it were sent.
#[derive(Debug)]
pub struct RegistrationBatch {
    pub rows: Vec<AorRow>,
    /// When the daemon handed it over: the commit's lag is measured from here.
    pub at: Instant,
}

/// What the standby learns from the database, in the order it must be applied.
#[derive(Debug)]
pub enum Warm {
    /// AORs whose rows changed. With `full`, these are all the rows there are: AORs the daemon
    /// holds that are not among them are gone.
    Registrations { rows: Vec<AorRow>, full: bool },
    /// Agent states (`kv` rows of space `agent-state`) that changed since the last poll.
    Agents(Vec<store::KvRow>),
    /// Answered calls the previous active node left open (read once, with the lock held).
    OpenCalls(Vec<store::KvRow>),
}

/// What `GET /api/v1/ha` and the metrics show about this node.
#[derive(Debug)]
pub struct HaShared {
    /// `[ha] node`.
    pub node: String,
    /// Unix ms of the last successful exchange with the database (a poll on the standby, a
    /// heartbeat or write on the active node); 0 before the first.
    pub last_ok_ms: AtomicI64,
    /// Registrations (bindings) this node holds in memory: the warm copy on a standby.
    pub bindings: AtomicU64,
    /// Answered calls inherited from the other node and not closed yet.
    pub inherited_calls: AtomicU64,
}

/// The daemon's handle on the HA thread.
pub struct Ha {
    /// The current role.
    pub role: watch::Receiver<Role>,
    /// The standby's warm copy, as it changes (nothing is sent once this node has been active).
    pub warm: mpsc::Receiver<Warm>,
    /// Changed AORs to write (active node).
    pub registrations: std::sync::mpsc::SyncSender<RegistrationBatch>,
    /// Status for the admin API.
    pub shared: Arc<HaShared>,
    fence_after_ms: i64,
    /// Disconnected when the thread ends.
    done: std::sync::mpsc::Receiver<()>,
}

/// Batches of changed AORs that may wait for the HA thread. A full channel is not a loss: the
/// daemon keeps the AORs marked and hands them over on its next turn.
const REGISTRATION_BATCHES: usize = 256;

/// Warm-copy messages that may wait for the daemon.
const WARM_QUEUE: usize = 64;

/// How often the active node deletes rows of AORs whose bindings lapsed a while ago.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Rows whose bindings lapsed this long ago are deleted (a standby that was away longer does a
/// full read when it reconnects, so it never misses a deletion that matters).
const PRUNE_AFTER_MS: i64 = 60_000;

impl Ha {
    /// Starts the HA thread.
    pub fn start(cfg: HaConfig) -> std::io::Result<Ha> {
        let (role_tx, role) = watch::channel(Role::Standby);
        let (warm_tx, warm) = mpsc::channel(WARM_QUEUE);
        let (registrations, reg_rx) = std::sync::mpsc::sync_channel(REGISTRATION_BATCHES);
        let shared = Arc::new(HaShared {
            node: cfg.node.clone(),
            last_ok_ms: AtomicI64::new(0),
            bindings: AtomicU64::new(0),
            inherited_calls: AtomicU64::new(0),
        });
        let fence_after_ms = i64::try_from(cfg.fence_after_ms).unwrap_or(i64::MAX);
        let (done_tx, done) = std::sync::mpsc::channel();
        let thread = Thread {
            cfg,
            role_tx,
            warm_tx,
            registrations: reg_rx,
            shared: shared.clone(),
            pending: BTreeMap::new(),
            oldest: None,
        };
        std::thread::Builder::new()
            .name("ha".into())
            .spawn(move || {
                thread.run();
                drop(done_tx);
            })?;
        Ok(Ha {
            role,
            warm,
            registrations,
            shared,
            fence_after_ms,
            done,
        })
    }

    /// At shutdown: lets the thread write the registration rows it was handed, for at most
    /// `limit`, then returns (the process exit ends the lock session). Blocks: call it off the
    /// runtime's workers.
    pub fn finish(self, limit: Duration) {
        let Ha {
            registrations,
            done,
            ..
        } = self;
        drop(registrations);
        let _ = done.recv_timeout(limit);
    }

    /// True when an active node has gone too long without a successful heartbeat (the database
    /// hangs rather than fails): the daemon fences itself without waiting for the thread.
    pub fn heartbeat_stale(&self) -> bool {
        *self.role.borrow() == Role::Active
            && crate::daemon::unix_now_ms() - self.shared.last_ok_ms.load(Ordering::Relaxed)
                > self.fence_after_ms
    }
}

fn connect(cfg: &HaConfig, hb: Duration) -> Result<Client, postgres::Error> {
    let mut pc: postgres::Config = cfg.postgres_url.parse()?;
    pc.connect_timeout(Duration::from_secs(2))
        .tcp_user_timeout(hb * 4)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .application_name(&format!("switchboard-ha-{}", cfg.node));
    let mut c = pc.connect(NoTls)?;
    // Both nodes may start at once: a transaction-scoped lock keeps their DDL apart.
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
    tx.batch_execute(
        "CREATE SEQUENCE IF NOT EXISTS ha_registration_version;
         CREATE TABLE IF NOT EXISTS ha_registration (
             aor        TEXT PRIMARY KEY,
             node       TEXT NOT NULL,
             bindings   TEXT NOT NULL,
             written_ms BIGINT NOT NULL,
             expires_ms BIGINT NOT NULL,
             version    BIGINT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS ha_registration_by_version ON ha_registration(version);",
    )?;
    tx.commit()?;
    Ok(c)
}

/// Serializes the HA tables' creation across nodes ("12345ddl").
const DDL_LOCK: i64 = 0x3132_3334_3564_646c;

/// What the standby has seen so far.
#[derive(Default)]
struct Cursor {
    /// The highest registration row version read.
    version: i64,
    /// The next registration read is a full one.
    full: bool,
    /// Agent states as last read (the JSON text), to send only changes.
    agents: HashMap<String, String>,
}

struct Thread {
    cfg: HaConfig,
    role_tx: watch::Sender<Role>,
    warm_tx: mpsc::Sender<Warm>,
    registrations: std::sync::mpsc::Receiver<RegistrationBatch>,
    shared: Arc<HaShared>,
    /// Rows handed over and not yet committed, by AOR (the newest wins).
    pending: BTreeMap<String, AorRow>,
    /// When the oldest pending row was handed over.
    oldest: Option<Instant>,
}

impl Thread {
    fn set(&self, r: Role) {
        if *self.role_tx.borrow() != r {
            match r {
                Role::Fenced => {
                    error!(node = %self.cfg.node, "ALARM: HA fenced: the database session is lost; refusing new calls (emergency calls still route)")
                }
                _ => info!(node = %self.cfg.node, role = r.as_str(), "HA role"),
            }
            let _ = self.role_tx.send(r);
        }
    }

    fn ok_now(&self) {
        self.shared
            .last_ok_ms
            .store(crate::daemon::unix_now_ms(), Ordering::Relaxed);
    }

    fn run(mut self) {
        let hb = Duration::from_millis(self.cfg.heartbeat_ms.max(50));
        let mut logged_down = false;
        let mut cursor = Cursor::default();
        loop {
            let was_active = matches!(*self.role_tx.borrow(), Role::Active | Role::Fenced);
            let mut client = match connect(&self.cfg, hb) {
                Ok(c) => {
                    logged_down = false;
                    c
                }
                Err(e) => {
                    if was_active {
                        self.set(Role::Fenced);
                    }
                    if !logged_down {
                        warn!(node = %self.cfg.node, %e, "HA: cannot reach the database; retrying");
                        logged_down = true;
                    }
                    std::thread::sleep(hb);
                    continue;
                }
            };
            // A new session may have missed deletions: read everything again.
            cursor.full = true;
            // Standby: wait for the lock one heartbeat at a time (PostgreSQL grants it the moment
            // the holder's session ends); between two waits, refresh the warm copy.
            let wait = client.batch_execute(&format!("SET lock_timeout = {}", hb.as_millis()));
            let acquired = wait.is_ok()
                && loop {
                    match client.execute("SELECT pg_advisory_lock($1)", &[&self.cfg.lock_key]) {
                        Ok(_) => break client.batch_execute("SET lock_timeout = 0").is_ok(),
                        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                            if was_active {
                                // The other node holds it now: this process must not serve
                                // any more.
                                self.set(Role::Standby);
                            } else if let Err(e) = self.poll_warm(&mut client, &mut cursor) {
                                warn!(node = %self.cfg.node, %e, "HA: lost the database while keeping the warm copy");
                                break false;
                            }
                        }
                        Err(e) => {
                            warn!(node = %self.cfg.node, %e, "HA: lost the database while waiting for the lock");
                            break false;
                        }
                    }
                };
            if !acquired {
                if was_active {
                    self.set(Role::Fenced);
                }
                std::thread::sleep(hb);
                continue;
            }
            if !was_active {
                // With the lock held, read what the dead node committed since the last poll, and
                // the calls it left open: the daemon applies it all before it binds.
                let took = Instant::now();
                if let Err(e) = self.poll_warm(&mut client, &mut cursor) {
                    warn!(node = %self.cfg.node, %e, "HA: the last warm read failed; serving with the copy held");
                }
                let open = open_calls(&mut client);
                let n = open.len();
                if !open.is_empty() {
                    let _ = self.warm_tx.blocking_send(Warm::OpenCalls(open));
                }
                debug!(
                    open_calls = n,
                    ms = took.elapsed().as_secs_f64() * 1e3,
                    "HA: caught up after taking the lock"
                );
            }
            self.ok_now();
            self.set(Role::Active);
            if !self.active(&mut client, hb) {
                return;
            }
        }
    }

    /// Reads the registration rows and agent states that changed, and sends them to the daemon.
    fn poll_warm(&mut self, c: &mut Client, cur: &mut Cursor) -> Result<(), postgres::Error> {
        let rows = c.query(
            "SELECT aor, bindings, written_ms, expires_ms, version FROM ha_registration
             WHERE version > $1 ORDER BY version",
            &[&if cur.full { 0 } else { cur.version }],
        )?;
        let full = std::mem::take(&mut cur.full);
        if full || !rows.is_empty() {
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                cur.version = cur.version.max(r.try_get(4)?);
                out.push(AorRow {
                    aor: r.try_get(0)?,
                    bindings: r.try_get(1)?,
                    written_ms: r.try_get(2)?,
                    expires_ms: r.try_get(3)?,
                });
            }
            let _ = self
                .warm_tx
                .blocking_send(Warm::Registrations { rows: out, full });
        }
        // The store's table: absent until the store has migrated (an error here is not the
        // session's: the next lock query finds out if the connection is gone).
        if let Ok(rows) = c.query(
            "SELECT key, value, updated_ms FROM kv WHERE space = $1",
            &[&store::KvSpace::AgentState.as_str()],
        ) {
            let mut changed = Vec::new();
            for r in &rows {
                let (Ok(key), Ok(value), Ok(updated_ms)) = (
                    r.try_get::<_, String>(0),
                    r.try_get::<_, String>(1),
                    r.try_get::<_, i64>(2),
                ) else {
                    continue;
                };
                if cur.agents.get(&key) == Some(&value) {
                    continue;
                }
                let Ok(json) = serde_json::from_str(&value) else {
                    continue;
                };
                cur.agents.insert(key.clone(), value);
                changed.push(store::KvRow {
                    space: store::KvSpace::AgentState,
                    key,
                    value: json,
                    expires_ms: None,
                    updated_ms,
                });
            }
            if !changed.is_empty() {
                let _ = self.warm_tx.blocking_send(Warm::Agents(changed));
            }
        }
        self.ok_now();
        Ok(())
    }

    /// Serves as the active node: heartbeats and registration writes on the lock's session.
    /// Returns false when the daemon is gone (the thread ends), true to reconnect.
    fn active(&mut self, client: &mut Client, hb: Duration) -> bool {
        let mut next_beat = Instant::now() + hb;
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        loop {
            let result = if !self.pending.is_empty() {
                // Left over from a failed session: written first.
                self.write(client)
            } else if Instant::now() >= next_prune {
                next_prune = Instant::now() + PRUNE_EVERY;
                client
                    .execute(
                        "DELETE FROM ha_registration WHERE expires_ms < $1",
                        &[&(crate::daemon::unix_now_ms() - PRUNE_AFTER_MS)],
                    )
                    .map(|_| ())
            } else {
                let wait = next_beat.saturating_duration_since(Instant::now());
                match self.registrations.recv_timeout(wait) {
                    Ok(batch) => {
                        self.take(batch);
                        self.write(client)
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        next_beat = Instant::now() + hb;
                        client.simple_query("SELECT 1").map(|_| ())
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
                }
            };
            match result {
                Ok(()) => self.ok_now(),
                Err(e) => {
                    warn!(node = %self.cfg.node, %e, "HA: heartbeat failed");
                    self.set(Role::Fenced);
                    return true;
                }
            }
        }
    }

    /// Adds a batch, and any others already queued, to the pending rows.
    fn take(&mut self, batch: RegistrationBatch) {
        let mut next = Some(batch);
        while let Some(b) = next {
            self.oldest = Some(self.oldest.map_or(b.at, |o| o.min(b.at)));
            for row in b.rows {
                self.pending.insert(row.aor.clone(), row);
            }
            next = self.registrations.try_recv().ok();
        }
    }

    /// Upserts the pending rows in one transaction; they stay pending if it fails.
    fn write(&mut self, client: &mut Client) -> Result<(), postgres::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self.pending.len();
        let mut aors = Vec::with_capacity(n);
        let mut bindings = Vec::with_capacity(n);
        let mut written = Vec::with_capacity(n);
        let mut expires = Vec::with_capacity(n);
        for r in self.pending.values() {
            aors.push(r.aor.as_str());
            bindings.push(r.bindings.as_str());
            written.push(r.written_ms);
            expires.push(r.expires_ms);
        }
        client.execute(
            "INSERT INTO ha_registration (aor, node, bindings, written_ms, expires_ms, version)
             SELECT t.aor, $1, t.bindings, t.written_ms, t.expires_ms,
                    nextval('ha_registration_version')
             FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[])
                  AS t(aor, bindings, written_ms, expires_ms)
             ON CONFLICT (aor) DO UPDATE SET node = excluded.node, bindings = excluded.bindings,
                 written_ms = excluded.written_ms, expires_ms = excluded.expires_ms,
                 version = excluded.version",
            &[&self.cfg.node, &aors, &bindings, &written, &expires],
        )?;
        if let Some(at) = self.oldest.take() {
            metrics::histogram!(crate::metrics::HA_REGISTRATION_LAG)
                .record(at.elapsed().as_secs_f64());
        }
        self.pending.clear();
        Ok(())
    }
}

/// The answered calls left open in the shared store (none when it has no `kv` table yet).
fn open_calls(c: &mut Client) -> Vec<store::KvRow> {
    let rows = match c.query(
        "SELECT key, value, expires_ms, updated_ms FROM kv WHERE space = $1",
        &[&store::KvSpace::OpenCall.as_str()],
    ) {
        Ok(r) => r,
        Err(e) => {
            warn!(%e, "HA: cannot read the calls the other node left open");
            return Vec::new();
        }
    };
    rows.iter()
        .filter_map(|r| {
            let value: String = r.try_get(1).ok()?;
            Some(store::KvRow {
                space: store::KvSpace::OpenCall,
                key: r.try_get(0).ok()?,
                value: serde_json::from_str(&value).ok()?,
                expires_ms: r.try_get(2).ok()?,
                updated_ms: r.try_get(3).ok()?,
            })
        })
        .collect()
}
