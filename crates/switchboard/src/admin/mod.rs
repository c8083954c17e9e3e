//! The admin HTTP listener: `/metrics`, the JSON admin API under `/api/v1/`, the event stream and
//! the wallboard page, on one socket (`[metrics] listen`, loopback by default).
//!
//! The handlers never touch SIP or seat state: they ask the core task over a bounded channel and
//! wait on a oneshot reply, which the core answers from its own state between messages. The event
//! stream and the wallboard read a snapshot the core publishes once a second on a watch channel.
//! Work orders are read from the store with a read-only connection, off the core.
//!
//! HA: on a standby the core task does not run yet, so every `/api/v1/` call but `GET
//! /api/v1/ha` gets 503 with the node's status at once (`/metrics` and the page are served).
//!
//! Auth: every `/api/v1/` call needs `Authorization: Bearer <token>` (the `[admin]` token; 401
//! otherwise). The event stream, which `EventSource` cannot send headers for, also accepts the
//! token as `?token=`, and accepts the read-only `wallboard_token` as well. `/metrics` and the
//! static wallboard page (which holds no data) need no token.

mod http;
mod types;
mod wallboard;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use sip_core::proxy::Transmit;
use sip_core::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

pub use types::*;

use crate::app::Switch;
use crate::config::Loaded;

/// Capacity of the channel from API handlers to the core: a burst of API calls waits here (or
/// gets 503), it never grows memory or slows SIP.
pub const REQUEST_QUEUE: usize = 64;

/// The `[admin]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding the admin token (first line; relative to the config file). Preferred:
    /// the config can then be world-readable.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The admin token inline (at least 16 characters of `A-Z a-z 0-9 . _ ~ -`).
    #[serde(default)]
    pub token: Option<String>,
    /// A read-only token for wall screens: it opens the event stream and nothing else.
    #[serde(default)]
    pub wallboard_token: Option<String>,
}

/// The tokens, hashed: compared in constant time, whatever their length.
#[derive(Clone)]
pub struct Tokens {
    admin: [u8; 32],
    wallboard: Option<[u8; 32]>,
}

/// What a presented token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    None,
    Wallboard,
    Admin,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Compares two digests without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn new(admin: &str, wallboard: Option<&str>) -> Tokens {
        Tokens {
            admin: digest(admin),
            wallboard: wallboard.map(digest),
        }
    }

    /// What `presented` grants.
    pub fn check(&self, presented: Option<&str>) -> Grant {
        let Some(p) = presented else {
            return Grant::None;
        };
        let d = digest(p);
        let admin = same(&d, &self.admin);
        let wall = self.wallboard.as_ref().is_some_and(|w| same(&d, w));
        if admin {
            Grant::Admin
        } else if wall {
            Grant::Wallboard
        } else {
            Grant::None
        }
    }
}

fn valid_token(t: &str) -> bool {
    t.len() >= 16
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

/// The admin token and the wallboard token of a config, read and checked. `Ok(None)` without an
/// `[admin]` section.
pub fn load_tokens(loaded: &Loaded) -> Result<Option<(String, Option<String>)>, String> {
    let Some(a) = &loaded.config.admin else {
        return Ok(None);
    };
    let file = loaded.path.display();
    let admin = match (&a.token, &a.token_file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{file}: [admin]: give `token` or `token_file`, not both"
            ))
        }
        (None, None) => {
            return Err(format!(
                "{file}: [admin]: `token_file` (or `token`) is required"
            ))
        }
        (Some(t), None) => t.clone(),
        (None, Some(p)) => {
            let p = loaded.resolve(p);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("{file}: [admin] token_file {}: {e}", p.display()))?;
            text.lines().next().unwrap_or("").trim().to_owned()
        }
    };
    if !valid_token(&admin) {
        return Err(format!(
            "{file}: [admin]: the token must be at least 16 characters of A-Z a-z 0-9 . _ ~ -"
        ));
    }
    if let Some(w) = &a.wallboard_token {
        if !valid_token(w) {
            return Err(format!(
                "{file}: [admin]: wallboard_token must be at least 16 characters of A-Z a-z 0-9 . _ ~ -"
            ));
        }
        if *w == admin {
            return Err(format!(
                "{file}: [admin]: wallboard_token must differ from the admin token"
            ));
        }
    }
    Ok(Some((admin, a.wallboard_token.clone())))
}

/// A question (or an order) for the core task.
#[derive(Debug)]
pub enum Request {
    Registrations(oneshot::Sender<Vec<RegistrationInfo>>),
    Agents(oneshot::Sender<Vec<AgentInfo>>),
    SetAgent {
        agent: String,
        action: seat_manager::AgentAction,
        reply: oneshot::Sender<Result<AgentStateChange, String>>,
    },
    Queues(oneshot::Sender<Vec<QueueInfo>>),
    Calls(oneshot::Sender<Vec<CallInfo>>),
    /// Reload config and dialplans, as SIGHUP does; answered when the reload is done.
    Reload(oneshot::Sender<ReloadResult>),
    /// A work order an agent creates: handed to the store's writer without waiting.
    CreateWorkOrder {
        order: NewWorkOrder,
        reply: oneshot::Sender<Result<WorkOrderCreated, WorkOrderRefusal>>,
    },
    /// A status change of an existing work order (the handler checked that it exists).
    WorkOrderStep {
        id: String,
        step: WorkOrderStep,
        reply: oneshot::Sender<Result<(), WorkOrderRefusal>>,
    },
}

/// The core's side: answers one request. Reloads are handed to the shell's reloader (`reload`
/// is called to ask for one) and their replies parked in `pending_reloads` until it reports.
pub fn answer(
    sw: &mut Switch,
    now: Instant,
    req: Request,
    out: &mut Vec<Transmit>,
    pending_reloads: &mut Vec<oneshot::Sender<ReloadResult>>,
    reload: impl FnOnce(),
) {
    match req {
        Request::Registrations(r) => {
            let _ = r.send(sw.admin_registrations(now));
        }
        Request::Agents(r) => {
            let _ = r.send(sw.admin_agents());
        }
        Request::SetAgent {
            agent,
            action,
            reply,
        } => {
            let _ = reply.send(sw.admin_set_agent(now, &agent, action, out));
        }
        Request::Queues(r) => {
            let _ = r.send(sw.admin_queues(now));
        }
        Request::Calls(r) => {
            let _ = r.send(sw.admin_calls(now));
        }
        Request::Reload(r) => {
            pending_reloads.push(r);
            reload();
        }
        Request::CreateWorkOrder { order, reply } => {
            let _ = reply.send(sw.admin_create_work_order(now, order));
        }
        Request::WorkOrderStep { id, step, reply } => {
            let _ = reply.send(sw.admin_work_order_step(now, &id, step));
        }
    }
}

/// Everything the listener needs.
pub struct Listener {
    pub addr: std::net::SocketAddr,
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// `None` without an `[admin]` section: only `/metrics` and the page are served.
    pub tokens: Option<Tokens>,
    pub core: mpsc::Sender<Request>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The running seat config (the roster check, queue-to-center mapping).
    pub seats: Option<Arc<seat_manager::SeatConfig>>,
    /// The store, for work orders (read-only connection per request).
    pub store: Option<store::StoreConfig>,
    /// The HA pair's view of this node; `None` for a single node.
    pub ha: Option<HaView>,
}

/// What the listener knows of the HA thread: a standby's core task is not running yet, so the
/// API answers from here instead of asking it.
#[derive(Clone)]
pub struct HaView {
    pub role: watch::Receiver<crate::ha::Role>,
    pub shared: Arc<crate::ha::HaShared>,
}

impl HaView {
    /// The status as `GET /api/v1/ha` shows it.
    pub fn status(&self) -> HaStatus {
        use std::sync::atomic::Ordering::Relaxed;
        HaStatus {
            node: self.shared.node.clone(),
            role: self.role.borrow().as_str().to_owned(),
            last_db_ok_ms: self.shared.last_ok_ms.load(Relaxed),
            registrations: self.shared.bindings.load(Relaxed),
            inherited_calls: self.shared.inherited_calls.load(Relaxed),
            error: None,
        }
    }
}

/// Bind and serve in the background.
pub async fn spawn(l: Listener) -> std::io::Result<()> {
    let sock = tokio::net::TcpListener::bind(l.addr).await?;
    let prom = l.prometheus.clone();
    // The exporter's upkeep (histogram maintenance), which its own listener used to run.
    tokio::spawn(async move {
        let mut t = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            t.tick().await;
            prom.run_upkeep();
        }
    });
    let board = wallboard::spawn(l.snapshots.clone(), l.seats.clone());
    let state = Arc::new(http::State {
        prometheus: l.prometheus,
        tokens: l.tokens,
        core: l.core,
        board,
        seats: l.seats,
        store: l.store,
        ha: l.ha,
    });
    tokio::spawn(http::serve(sock, state));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_what_they_should() {
        let t = Tokens::new("admin-token-0123456789", Some("wall-token-0123456789"));
        assert_eq!(t.check(None), Grant::None);
        assert_eq!(t.check(Some("")), Grant::None);
        assert_eq!(t.check(Some("admin-token-012345678")), Grant::None);
        assert_eq!(t.check(Some("admin-token-0123456789")), Grant::Admin);
        assert_eq!(t.check(Some("wall-token-0123456789")), Grant::Wallboard);
        assert!(!valid_token("short"));
        assert!(!valid_token("has space in it 0123456789"));
        assert!(valid_token("abcdefghijklmnop"));
    }

    fn load_with(
        admin: &str,
        files: &[(&str, &str)],
    ) -> Result<Option<(String, Option<String>)>, String> {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/switchboard.toml"),
        )
        .unwrap();
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, format!("{shipped}\n{admin}")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let loaded = crate::config::load(&path).map_err(|e| e.to_string())?;
        load_tokens(&loaded)
    }

    #[test]
    fn tokens_load_from_a_file_or_inline_and_bad_ones_are_refused() {
        assert_eq!(load_with("", &[]), Ok(None));
        let (t, w) = load_with(
            "[admin]\ntoken_file = \"admin.token\"\n",
            &[("admin.token", "from-the-file-0123456789\n")],
        )
        .unwrap()
        .unwrap();
        assert_eq!((t.as_str(), w), ("from-the-file-0123456789", None));
        let (t, w) = load_with(
            "[admin]\ntoken = \"inline-token-0123456789\"\nwallboard_token = \"wall-token-0123456789\"\n",
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t, "inline-token-0123456789");
        assert_eq!(w.as_deref(), Some("wall-token-0123456789"));
        for (admin, why) in [
            ("[admin]\n", "is required"),
            ("[admin]\ntoken = \"short\"\n", "at least 16"),
            ("[admin]\ntoken_file = \"missing.token\"\n", "missing.token"),
            (
                "[admin]\ntoken = \"inline-token-0123456789\"\ntoken_file = \"x\"\n",
                "not both",
            ),
            (
                "[admin]\ntoken = \"inline-token-0123456789\"\nwallboard_token = \"inline-token-0123456789\"\n",
                "must differ",
            ),
        ] {
            let e = load_with(admin, &[]).unwrap_err();
            assert!(e.contains(why), "{admin}: {e}");
        }
        let e = load_with("[admin]\ntokn = \"x\"\n", &[]).unwrap_err();
        assert!(
            e.contains("switchboard.toml:"),
            "unknown key with its line: {e}"
        );
    }
}
