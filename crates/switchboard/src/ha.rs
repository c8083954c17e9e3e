//! The active/standby pair over PostgreSQL (DESIGN.md §4; README "High availability").
//!
//! # One active node
//! Leadership is a PostgreSQL session-level advisory lock (`pg_try_advisory_lock`), held by a
//! connection this module keeps open for nothing else. The node holding it is *active*: only then
//! does the daemon bind its SIP listeners (the service address, the same on both nodes — the
//! address that keepalived/VRRP or DNS points at). The other node is *standby*: no SIP sockets at
//! all, a warm copy of the active node's registrations in memory.
//!
//! When the active node dies, the kernel closes its connection, PostgreSQL ends the session and
//! releases the lock; the standby's next try (every `heartbeat_ms`) takes it, the daemon restores
//! the registrations and binds the service address (retrying while the old holder's sockets are
//! still closing). Takeover is heartbeat + bind, well under the 5 s the tests allow.
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
//! # Shared registrations
//! The active node writes its registration snapshot (the same text as the state file) into the
//! `ha_snapshot` table on the lock's connection, at most once a second; the standby polls it every
//! heartbeat and keeps the latest text, restored when it takes over. Phones need not re-register.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The `[ha]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// The shared database (`postgresql://user@host:port/db`), usually the store's.
    pub postgres_url: String,
    /// This node's name, in logs and the snapshot table.
    pub node: String,
    /// The advisory lock both nodes contend for; change it only to run two pairs on one database.
    #[serde(default = "default_lock_key")]
    pub lock_key: i64,
    /// How often the lock is tried (standby) or the session checked (active).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// An active node with no successful heartbeat for this long fences itself.
    #[serde(default = "default_fence_after_ms")]
    pub fence_after_ms: u64,
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

/// The daemon's handle on the HA thread.
pub struct Ha {
    /// The current role.
    pub role: watch::Receiver<Role>,
    /// The latest registration snapshot written by the active node (standby's warm copy).
    pub snapshot: watch::Receiver<Option<Arc<str>>>,
    /// Registration snapshots to write (active node).
    pub publish: std::sync::mpsc::SyncSender<String>,
    /// Unix ms of the last successful heartbeat while active.
    last_ok_ms: Arc<AtomicI64>,
    fence_after_ms: i64,
}

impl Ha {
    /// Starts the HA thread.
    pub fn start(cfg: HaConfig) -> std::io::Result<Ha> {
        let (role_tx, role) = watch::channel(Role::Standby);
        let (snap_tx, snapshot) = watch::channel(None);
        let (publish, publish_rx) = std::sync::mpsc::sync_channel(2);
        let last_ok_ms = Arc::new(AtomicI64::new(0));
        let fence_after_ms = i64::try_from(cfg.fence_after_ms).unwrap_or(i64::MAX);
        let last = last_ok_ms.clone();
        std::thread::Builder::new()
            .name("ha".into())
            .spawn(move || run(cfg, role_tx, snap_tx, publish_rx, last))?;
        Ok(Ha {
            role,
            snapshot,
            publish,
            last_ok_ms,
            fence_after_ms,
        })
    }

    /// True when an active node has gone too long without a successful heartbeat (the database
    /// hangs rather than fails): the daemon fences itself without waiting for the thread.
    pub fn heartbeat_stale(&self) -> bool {
        *self.role.borrow() == Role::Active
            && crate::daemon::unix_now_ms() - self.last_ok_ms.load(Ordering::Relaxed)
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
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS ha_snapshot (
             key        TEXT PRIMARY KEY,
             node       TEXT NOT NULL,
             value      TEXT NOT NULL,
             updated_ms BIGINT NOT NULL
         )",
    )?;
    Ok(c)
}

fn run(
    cfg: HaConfig,
    role_tx: watch::Sender<Role>,
    snap_tx: watch::Sender<Option<Arc<str>>>,
    publish: std::sync::mpsc::Receiver<String>,
    last_ok_ms: Arc<AtomicI64>,
) {
    let hb = Duration::from_millis(cfg.heartbeat_ms.max(50));
    let set = |r: Role| {
        if *role_tx.borrow() != r {
            match r {
                Role::Fenced => {
                    error!(node = %cfg.node, "ALARM: HA fenced: the database session is lost; refusing new calls (emergency calls still route)")
                }
                _ => info!(node = %cfg.node, role = r.as_str(), "HA role"),
            }
            let _ = role_tx.send(r);
        }
    };
    let mut logged_down = false;
    loop {
        let was_active = matches!(*role_tx.borrow(), Role::Active | Role::Fenced);
        let mut client = match connect(&cfg, hb) {
            Ok(c) => {
                logged_down = false;
                c
            }
            Err(e) => {
                if was_active {
                    set(Role::Fenced);
                }
                if !logged_down {
                    warn!(node = %cfg.node, %e, "HA: cannot reach the database; retrying");
                    logged_down = true;
                }
                std::thread::sleep(hb);
                continue;
            }
        };
        // Standby: try the lock; meanwhile keep the warm copy.
        let mut last_snapshot_ms = -1i64;
        let acquired = loop {
            match client.query_one("SELECT pg_try_advisory_lock($1)", &[&cfg.lock_key]) {
                Ok(row) if row.get::<_, bool>(0) => break true,
                Ok(_) => {
                    if was_active {
                        // The other node holds it now: this process must not serve any more.
                        set(Role::Standby);
                    }
                    if let Ok(Some(row)) = client.query_opt(
                        "SELECT value, updated_ms FROM ha_snapshot WHERE key = 'registrations'",
                        &[],
                    ) {
                        let at: i64 = row.get(1);
                        if at != last_snapshot_ms {
                            last_snapshot_ms = at;
                            let text: String = row.get(0);
                            let _ = snap_tx.send(Some(Arc::from(text)));
                        }
                    }
                    std::thread::sleep(hb);
                }
                Err(e) => {
                    warn!(node = %cfg.node, %e, "HA: lost the database while waiting for the lock");
                    break false;
                }
            }
        };
        if !acquired {
            if was_active {
                set(Role::Fenced);
            }
            std::thread::sleep(hb);
            continue;
        }
        // A snapshot may have landed since the last poll: read it before serving.
        if let Ok(Some(row)) = client.query_opt(
            "SELECT value FROM ha_snapshot WHERE key = 'registrations'",
            &[],
        ) {
            let text: String = row.get(0);
            let _ = snap_tx.send(Some(Arc::from(text)));
        }
        last_ok_ms.store(crate::daemon::unix_now_ms(), Ordering::Relaxed);
        set(Role::Active);
        // Active: heartbeat, and write snapshots on the lock's own session.
        let mut next_beat = Instant::now() + hb;
        loop {
            let wait = next_beat.saturating_duration_since(Instant::now());
            let result = match publish.recv_timeout(wait) {
                Ok(text) => client
                    .execute(
                        "INSERT INTO ha_snapshot (key, node, value, updated_ms)
                         VALUES ('registrations', $1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET node = excluded.node,
                             value = excluded.value, updated_ms = excluded.updated_ms",
                        &[&cfg.node, &text, &crate::daemon::unix_now_ms()],
                    )
                    .map(|_| ()),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    next_beat = Instant::now() + hb;
                    client.simple_query("SELECT 1").map(|_| ())
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match result {
                Ok(()) => last_ok_ms.store(crate::daemon::unix_now_ms(), Ordering::Relaxed),
                Err(e) => {
                    warn!(node = %cfg.node, %e, "HA: heartbeat failed");
                    set(Role::Fenced);
                    break;
                }
            }
        }
    }
}
