//! The switchboard's policy over the proxy core: who may send what, and where calls go.
//!
//! Sans-IO like the core: the daemon shell feeds it bytes, timeouts and `now`, and sends what it
//! returns. It owns the proxy, the registrar and the authenticators, and answers each
//! [`Event::Request`] the proxy raises.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dialplan::{CompiledPlan, Decision, QueueRoute};
use emergency_bridge::{EmergencyBridge, EmergencyService};

use sip_core::auth::{
    Account, AuthConfig, AuthOutcome, Authenticator, ChallengeKind, CredentialStore,
    DigestAlgorithm,
};
use sip_core::message::{Method, Peer, Request, Transport};
use sip_core::proxy::{
    Event, FailurePolicy, Listener, Output, Proxy, ProxyConfig, RouteUri, RouteUriRef, ServerId,
    Target, Transmit,
};
use sip_core::registrar::{BindingRecord, Registrar, RegistrarConfig, SourceInfo};
use sip_core::table::IdMap;
use sip_core::time::Instant;
use sip_core::transaction::TimerConfig;
use tracing::{debug, info, warn};

use crate::config::{AlgorithmName, Loaded, TransportName, Trunk};
use crate::metrics as m;

mod admin;
mod agent_orders;
mod agent_state;
mod cdr;
mod early_media;
mod guard;
mod ha;
mod seats;
mod work_orders;
use crate::ratelimit::LogLimiter;
use crate::redact::Redacted;

/// At most one warning per kind of refused request in this interval: anyone can send those, so
/// logging each would let a flood fill the disk.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What the switchboard knows about where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A configured trunk, by source address.
    Trunk { name: String },
    /// An agent whose digest credentials checked out.
    Agent { user: String },
    /// A phone that registered from this address (emergency calls skip the digest challenge).
    Device,
    /// A PSAP (110/119/120/122) sending a non-emergency matter to 12345: it goes ahead of the queue.
    Psap { prefecture: String },
}

/// An answered seat call, until its BYE: what a hand-off by its agent needs to know.
#[derive(Debug, Clone)]
struct Established {
    call: seat_manager::CallId,
    agent: Arc<str>,
    /// The caller's number (personal data: never logged unredacted).
    caller: String,
    /// The trunk's prefecture, if the call came on one.
    trunk_prefecture: Option<String>,
}

/// The application state driven by the daemon's event loop.
pub struct Switch {
    pub proxy: Proxy,
    pub registrar: Registrar,
    credentials: CredentialStore,
    reg_auth: Authenticator,
    proxy_auth: Authenticator,
    trunks: Vec<Trunk>,
    /// The dialplan snapshot new calls are routed with; swapped whole on reload.
    plan: Arc<CompiledPlan>,
    /// The emergency bridge compiled against `plan` (swapped with it).
    bridge: Option<Arc<EmergencyBridge>>,
    /// Agents per queue id, in config order (the interim queue: ring them one after another).
    queue_members: HashMap<String, Vec<String>>,
    /// Calls being hunted: the steps still to try.
    calls: IdMap<ServerId, Call>,
    /// The seat manager (automatic call distribution); `None` without a seats file, when queues
    /// simply ring their agents in order.
    seats: Option<seat_manager::SeatManager>,
    /// The next seat-manager call id.
    next_call: u64,
    /// Calls in the seat manager's hands, until answered or gone.
    seat_calls: HashMap<seat_manager::CallId, ServerId>,
    /// Answered seat calls by SIP Call-ID, until their BYE (the agent then goes to wrap-up).
    established: HashMap<Box<str>, Established>,
    /// `182 Queued` refreshes: (due, call).
    refresh: BinaryHeap<Reverse<(Instant, ServerId)>>,
    queued_refresh: Duration,
    /// The store's writer (CDRs); `None` without a `[store]` section.
    cdrs: Option<store::Store>,
    /// CDR drafts of calls being placed.
    drafts: IdMap<ServerId, store::Cdr>,
    /// CDRs of answered calls, by SIP Call-ID, until their BYE.
    answered_cdrs: HashMap<Box<str>, store::Cdr>,
    /// HA: AORs whose bindings changed since they were last handed to the HA thread; `None`
    /// outside an HA pair.
    reg_changes: Option<std::collections::BTreeSet<String>>,
    /// HA: answered calls get an open row in the store, closed as `failover-lost` by the other
    /// node this long (ms) after their answer if it never sees their BYE.
    open_call_max_ms: Option<i64>,
    /// HA: answered calls taken over from the other node, by SIP Call-ID, until their BYE.
    inherited: HashMap<Box<str>, ha::Inherited>,
    /// Unix time (ms) of the core's time origin.
    unix_origin_ms: i64,
    /// Agent states last handed to the store, to save only changes.
    saved_agents: agent_state::Saved,
    /// Work-order ids, made in memory (never a database round trip).
    work_order_ids: store::WorkOrderIds,
    /// An abandoned call that waited this long (ms) gets a callback work order; 0: never.
    abandon_callback_ms: i64,
    /// Ring and trunk-failover timers: (deadline, call, step number, is trunk).
    timers: BinaryHeap<Reverse<(Instant, ServerId, u32, bool)>>,
    ring_timeout: Duration,
    trunk_failover: Duration,
    /// New calls are refused with 503 while the daemon drains for shutdown.
    draining: bool,
    /// HA: this node lost its database session (ha.rs): new non-emergency calls get 503.
    fenced: bool,
    /// Set when registrations changed and the state file should be rewritten.
    pub registrations_dirty: bool,
    /// Rate limits for the warnings any stranger can trigger.
    auth_failed_log: LogLimiter<Instant>,
    stranger_log: LogLimiter<Instant>,
    /// Per-source request budgets and bans (`flood.rs`).
    flood: crate::flood::FloodGuard,
    ban_s: u64,
    /// Failed-authentication lockouts (`lockout.rs`).
    auth_guard: crate::lockout::AuthGuard,
    /// Classes of service (`cos.rs`).
    classes: crate::cos::Classes,
    overload: crate::security::OverloadConfig,
    /// Security events (bans, lockouts, refused numbers), each kind at a bounded rate.
    ban_log: LogLimiter<Instant>,
    lockout_log: LogLimiter<Instant>,
    cos_log: LogLimiter<Instant>,
    overload_log: LogLimiter<Instant>,
    /// Early media (`[media]`); `None` without it.
    media: Option<early_media::EarlyMedia>,
    /// Emergency calls connected, failed and failed over, for the admin API and the wallboard.
    emergency_tally: crate::admin::EmergencyTally,
}

/// Counters the shell turns into metrics and logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub requests: u64,
    pub forwarded: u64,
    pub rejected: u64,
}

impl Switch {
    /// Build from a validated config. `secret` keys nonces and Record-Route signatures.
    pub fn new(
        loaded: &Loaded,
        plan: Arc<CompiledPlan>,
        bridge: Option<Arc<EmergencyBridge>>,
        seats: Option<&seat_manager::SeatConfig>,
        cdrs: Option<store::Store>,
        secret: [u8; 32],
        salt: u64,
    ) -> Switch {
        let c = &loaded.config;
        let listeners = c
            .sip
            .listen
            .iter()
            .map(|l| {
                let l = l.get_ref();
                Listener {
                    transport: match l.transport {
                        TransportName::Udp => Transport::Udp,
                        TransportName::Tcp => Transport::Tcp,
                        TransportName::Tls => Transport::Tls,
                    },
                    addr: l.addr,
                }
            })
            .collect();
        let rr_secret = c
            .sip
            .rr_secret_hex
            .as_deref()
            .and_then(hex_to_32)
            .unwrap_or(secret);
        let proxy = Proxy::new(
            ProxyConfig {
                timers: TimerConfig {
                    t1: Duration::from_millis(c.timers.t1_ms),
                    t2: Duration::from_millis(c.timers.t2_ms),
                    t4: Duration::from_millis(c.timers.t4_ms),
                },
                timer_c: Duration::from_secs(c.timers.timer_c_s),
                listeners,
                aliases: c.sip.aliases.clone(),
                rr_secret,
                // New INVITEs are refused past this many transactions (app/guard.rs): sized for
                // it, the transaction tables do not grow (and stall a message) in service.
                expected_transactions: c.security.overload.max_transactions,
            },
            salt,
        );
        let registrar = Registrar::new(RegistrarConfig {
            default_expires_s: c.registrar.default_expires_s,
            min_expires_s: c.registrar.min_expires_s,
            max_expires_s: c.registrar.max_expires_s,
            ..RegistrarConfig::default()
        });
        let credentials = credential_store(loaded);
        let mut reg_cfg = AuthConfig::registrar(c.registrar.realm.clone());
        reg_cfg.nonce_lifetime = Duration::from_secs(c.registrar.nonce_lifetime_s);
        let mut proxy_cfg = reg_cfg.clone();
        proxy_cfg.kind = ChallengeKind::Proxy;
        let mut s2 = secret;
        s2[0] ^= 0x5a;
        Switch {
            proxy,
            registrar,
            credentials,
            reg_auth: Authenticator::new(reg_cfg, secret),
            proxy_auth: Authenticator::new(proxy_cfg, s2),
            trunks: loaded.trunks.clone(),
            plan,
            bridge,
            queue_members: queue_members(loaded),
            calls: IdMap::new(),
            seats: seats.and_then(|c| match seat_manager::SeatManager::new(c) {
                Ok(sm) => Some(sm),
                Err(e) => {
                    tracing::error!(%e, "seat manager config refused; queues ring their agents in order");
                    None
                }
            }),
            next_call: 1,
            seat_calls: HashMap::new(),
            established: HashMap::new(),
            refresh: BinaryHeap::new(),
            queued_refresh: Duration::from_secs(c.routing.queued_refresh_s.clamp(1, 60)),
            cdrs,
            drafts: IdMap::new(),
            answered_cdrs: HashMap::new(),
            reg_changes: None,
            open_call_max_ms: None,
            inherited: HashMap::new(),
            unix_origin_ms: 0,
            saved_agents: HashMap::new(),
            work_order_ids: store::WorkOrderIds::new(
                c.store.as_ref().map_or("a", |s| s.node.as_str()),
            ),
            abandon_callback_ms: c
                .store
                .as_ref()
                .map_or(0, |s| s.callback_after_abandon_s.saturating_mul(1000) as i64),
            timers: BinaryHeap::new(),
            ring_timeout: Duration::from_secs(c.routing.ring_timeout_s),
            trunk_failover: Duration::from_millis(c.routing.trunk_failover_ms),
            draining: false,
            fenced: false,
            registrations_dirty: false,
            auth_failed_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            stranger_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            flood: crate::flood::FloodGuard::new(c.security.flood.clone(), whitelist(loaded)),
            ban_s: c.security.flood.ban_s,
            auth_guard: crate::lockout::AuthGuard::new(c.security.lockout.clone()),
            classes: crate::cos::Classes::new(&c.classes, &c.agents),
            overload: c.security.overload.clone(),
            ban_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            lockout_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            cos_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            overload_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            media: None,
            emergency_tally: crate::admin::EmergencyTally::default(),
        }
    }

    /// Apply a reloaded config and dialplan. Calls in progress keep the steps they were given; new
    /// calls use the new plan. Listeners and timers need a restart.
    pub fn apply_reload(
        &mut self,
        loaded: &Loaded,
        plan: Arc<CompiledPlan>,
        bridge: Option<Arc<EmergencyBridge>>,
    ) {
        self.bridge = bridge;
        let c = &loaded.config;
        self.credentials = credential_store(loaded);
        self.trunks = loaded.trunks.clone();
        self.queue_members = queue_members(loaded);
        self.ring_timeout = Duration::from_secs(c.routing.ring_timeout_s);
        self.trunk_failover = Duration::from_millis(c.routing.trunk_failover_ms);
        self.plan = plan;
        self.flood
            .reconfigure(c.security.flood.clone(), whitelist(loaded));
        self.ban_s = c.security.flood.ban_s;
        self.auth_guard.reconfigure(c.security.lockout.clone());
        self.classes = crate::cos::Classes::new(&c.classes, &c.agents);
        self.overload = c.security.overload.clone();
    }

    /// The plan new calls use.
    pub fn plan(&self) -> &Arc<CompiledPlan> {
        &self.plan
    }

    /// HA fencing: while set, new non-emergency INVITEs get 503 (emergency calls still route).
    pub fn set_fenced(&mut self, fenced: bool) {
        self.fenced = fenced;
    }

    /// Stop taking new calls (graceful shutdown): new INVITEs get 503.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Restore registrations saved by an earlier run.
    pub fn restore_registrations(&mut self, now: Instant, records: Vec<BindingRecord>) -> usize {
        let users: std::collections::BTreeSet<String> =
            records.iter().map(|r| r.aor_user.clone()).collect();
        let n = self.registrar.import(now, records);
        // The restored phones are online: centers that log agents in on registration do so now.
        for u in users {
            if self.registrar.lookup(&u, now).next().is_some() {
                self.agent_presence(now, &u, true);
            }
        }
        n
    }

    /// Feed one inbound message.
    pub fn on_message(
        &mut self,
        now: Instant,
        source: Peer,
        bytes: &[u8],
        out: &mut Vec<Transmit>,
    ) {
        self.flush_media();
        if !self.admit(now, source, bytes) {
            return;
        }
        self.proxy.handle_message(now, source, bytes);
        self.pump(now, out);
    }

    /// The caller is about to feed several messages in a row (what its sockets hold): new
    /// INVITEs' 100 Trying wait for [`Switch::end_batch`], and are not sent at all for an INVITE
    /// answered meanwhile (see `sip_core::proxy::Proxy::start_batch`).
    pub fn start_batch(&mut self) {
        self.proxy.start_batch();
    }

    /// The end of a batch: the 100 Trying still held go out.
    pub fn end_batch(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.proxy.end_batch();
        self.pump(now, out);
    }

    /// Fire due timers, including registration expiry.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.flush_media();
        self.proxy.handle_timeout(now);
        self.pump(now, out);
        if let Some(sm) = self.seats.as_mut() {
            if sm.poll_timeout().is_some_and(|t| t <= now) {
                sm.handle_timeout(now);
            }
        }
        self.run_seat_commands(now);
        self.pump(now, out);
        while let Some(Reverse((t, id))) = self.refresh.peek().copied() {
            if t > now {
                break;
            }
            self.refresh.pop();
            self.on_refresh(now, id);
            self.pump(now, out);
        }
        while let Some(Reverse((t, id, seq, trunk))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            self.on_step_timer(now, id, seq, trunk);
            self.pump(now, out);
        }
        if self.registrar.next_expiry().is_some_and(|t| t <= now) {
            let gone = self.registrar.expire(now);
            if !gone.is_empty() {
                self.registrations_dirty = true;
                for u in gone {
                    info!(user = %u, "registration expired");
                    self.agent_presence(now, &u, false);
                }
            }
        }
        self.pump(now, out);
    }

    /// The next time `on_timeout` is needed.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop timers of calls that moved on, so a stale one does not wake the loop for nothing.
        while let Some(Reverse((_, id, seq, _))) = self.timers.peek() {
            if self.calls.get(id).is_some_and(|c| c.seq == *seq) {
                break;
            }
            self.timers.pop();
        }
        [
            self.proxy.poll_timeout(),
            self.registrar.next_expiry(),
            self.timers.peek().map(|Reverse((t, ..))| *t),
            self.seats.as_ref().and_then(|sm| sm.poll_timeout()),
            self.refresh.peek().map(|Reverse((t, _))| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drain the proxy's outputs, answering its events, until it is quiet.
    fn pump(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        while let Some(o) = self.proxy.poll_output() {
            match o {
                Output::Transmit(t) => out.push(t),
                Output::Event(e) => self.on_event(now, *e),
            }
        }
    }

    fn on_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::Request {
                id,
                request,
                source,
            } => self.on_request(now, id, *request, source),
            Event::InDialog {
                method,
                source,
                call_id,
            } => {
                debug!(%method, %source.addr, "in-dialog request routed");
                if method == Method::Bye {
                    self.dialog_ended(now, &call_id);
                    self.cdr_bye(now, &call_id);
                }
            }
            Event::Cancelled { id } => {
                debug!(?id, "caller cancelled");
                self.stop_early_media(id);
                self.caller_left(now, id);
                self.calls.remove(&id);
            }
            Event::BranchResponse { id, status, target } => {
                if (200..300).contains(&status) {
                    // The agent's 2xx is on its way to the caller, who now talks to the agent.
                    self.stop_early_media(id);
                    let user = RouteUriRef::parse(&target).and_then(|u| u.user.map(str::to_owned));
                    self.cdr_update(
                        id,
                        |c, _| {
                            c.target = Some(target.clone());
                            if c.agent.is_none() {
                                c.agent = user;
                            }
                        },
                        now,
                    );
                }
                let seat = self.calls.get(&id).is_some_and(|c| c.seat.is_some());
                if seat {
                    if (200..300).contains(&status) {
                        self.offer_answered(now, id);
                    }
                    return;
                }
                // A 2xx ends the hunt; so does a 6xx (global failure), except for an emergency
                // call, which tries every PSAP whatever they answer.
                let emergency = self.calls.get(&id).and_then(|c| c.emergency);
                if let (Some(service), true) = (emergency, (200..300).contains(&status)) {
                    metrics::counter!(m::EMERGENCY_CALLS, "service" => service.to_string(), "result" => "connected").increment(1);
                    self.emergency_tally.connected += 1;
                }
                let emergency = emergency.is_some();
                if (200..300).contains(&status) || (status >= 600 && !emergency) {
                    self.calls.remove(&id);
                }
            }
            Event::Finished { id, status } => {
                self.stop_early_media(id);
                self.cdr_final(now, id, status, status == 487);
                metrics::counter!(m::SIP_RESPONSES, "class" => status_class(status)).increment(1);
                // The caller's transaction is over: if the seat manager still holds the call (it
                // was answered elsewhere or refused), it is gone for it too.
                if self.calls.get(&id).is_some_and(|c| c.seat.is_some()) {
                    self.caller_left(now, id);
                }
                self.calls.remove(&id);
            }
            Event::BranchesFailed { id, best_status } => {
                if self.calls.get(&id).is_some_and(|c| c.seat.is_some()) {
                    self.offer_failed(now, id, best_status);
                } else if self.calls.contains_key(&id) {
                    self.next_step(now, id);
                } else {
                    let _ = self.proxy.send_best_response(now, id);
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, id: ServerId, req: Request, source: Peer) {
        metrics::counter!(m::SIP_REQUESTS, "method" => req.method().to_string()).increment(1);
        // The emergency bridge looks first: before digest, dialplan, queues and draining.
        if req.method() == Method::Invite && req.meta.to_tag.is_none() {
            if let Some(service) = emergency_bridge::classify(req.uri(), req.uri_user(), &self.plan)
            {
                self.on_emergency(now, id, &req, source, service);
                return;
            }
            // Overload: new calls are shed before any digest or routing work.
            if self.overloaded() {
                self.reject_overload(now, id, &req);
                return;
            }
        }
        match req.method() {
            Method::Register => self.on_register(now, id, &req, source),
            Method::Options if req.uri_user().is_none() => {
                self.reply(
                    now,
                    id,
                    200,
                    "OK",
                    &[("Allow", ALLOW), ("Accept", "application/sdp")],
                );
            }
            Method::Bye if req.meta.to_tag.is_some() => match self.early_dialog_invite(&req) {
                // The caller hangs up inside the early dialog our own 182/183 set up (RFC 3261
                // §15 lets a caller send BYE there instead of CANCEL): end the call as a CANCEL
                // would, so it does not stay queued for an agent to pick up a dead line.
                Some(invite) => {
                    self.reply(now, id, 200, "OK", &[]);
                    self.proxy.terminate(now, invite);
                }
                None => self.reply(now, id, 481, "Call/Transaction Does Not Exist", &[]),
            },
            _ if req.meta.to_tag.is_some() => {
                // In dialog but not along our Record-Route: we hold no such dialog.
                self.reply(now, id, 481, "Call/Transaction Does Not Exist", &[]);
            }
            _ => self.on_initial(now, id, &req, source),
        }
    }

    /// The unanswered INVITE whose early dialog with us `req` belongs to (see
    /// `Proxy::is_our_early_dialog`). A scan of the calls in progress: only in-dialog requests
    /// that did not come along our Record-Route get here, which no established call sends.
    fn early_dialog_invite(&self, req: &Request) -> Option<ServerId> {
        self.calls
            .iter()
            .find(|(id, c)| {
                *c.sip_call_id == *req.meta.call_id && self.proxy.is_our_early_dialog(**id, req)
            })
            .map(|(id, _)| *id)
    }

    fn on_register(&mut self, now: Instant, id: ServerId, req: &Request, source: Peer) {
        let ip = source.addr.ip();
        let claimed_user = self.reg_auth.claimed_username(req.rsip());
        let outcome = if self.locked_out(now, claimed_user.as_deref(), ip) {
            // Locked out: the same challenge as a wrong password, without checking the digest.
            AuthOutcome::Failed {
                reason: sip_core::auth::FailReason::BadResponse,
            }
        } else {
            let creds = &self.credentials;
            let o = self.reg_auth.verify_request(now, req, |u| creds.get(u));
            self.count_auth(now, &o, claimed_user.as_deref(), ip, "register");
            o
        };
        let user = match outcome {
            AuthOutcome::Authenticated { user, .. } => user,
            other => {
                if let AuthOutcome::Failed { reason } = &other {
                    if let Some(suppressed) = self.auth_failed_log.allow_at(now) {
                        warn!(source = %source.addr, ?reason, suppressed, "REGISTER authentication failed");
                    }
                }
                // No credentials yet: the account is the AOR being registered, so a phone whose
                // account offers only SHA-256 gets a SHA-256 challenge from the first 401. (An
                // account with its own list is thereby visible; accounts on the default list are not.)
                let claimed = self
                    .reg_auth
                    .claimed_username(req.rsip())
                    .or_else(|| header_user(req, "To"));
                let algs = self.credentials.algorithms_for(claimed.as_deref());
                let challenge = self.reg_auth.challenge(now, &algs, other.is_stale());
                self.reply_headers(now, id, 401, "Unauthorized", challenge);
                return;
            }
        };
        let info = SourceInfo {
            addr: source.addr,
            transport: source.transport,
            conn_id: source.conn,
        };
        let result = self.registrar.handle_register(now, req.rsip(), &user, info);
        if result.error.is_none() {
            self.registrations_dirty = true;
            self.registration_changed(&user);
            if result.bindings_before == 0 && result.bindings_after > 0 {
                info!(user = %user, source = %source.addr, "agent registered");
                self.agent_presence(now, &user, true);
            } else if result.bindings_before > 0 && result.bindings_after == 0 {
                info!(user = %user, "agent unregistered");
                self.agent_presence(now, &user, false);
            }
        }
        let bytes = rsip::SipMessage::from(result.response).to_string();
        let status = result.error.as_ref().map_or(200, |e| e.status().0);
        let _ = self.proxy.respond_bytes(now, id, status, bytes.into());
    }

    /// An emergency call: never challenged, queued, rate-limited or shed; routed at once to the PSAP
    /// of the caller's prefecture, failing over target by target, then to the province.
    fn on_emergency(
        &mut self,
        now: Instant,
        id: ServerId,
        req: &Request,
        source: Peer,
        service: EmergencyService,
    ) {
        let ip = source.addr.ip();
        let origin = if let Some(t) = self.trunk_for(ip) {
            Origin::Trunk {
                name: t.name.clone(),
            }
        } else if self.is_known_device(source.addr) {
            Origin::Device
        } else if let Some(p) = self.bridge.as_ref().and_then(|b| b.psap_source(ip)) {
            Origin::Psap {
                prefecture: self.plan.center(p).id.to_string(),
            }
        } else {
            // Still no open relay: a stranger's "110" is refused and logged as a security event.
            warn!(source = %source.addr, %service, "SECURITY: emergency call from an unknown source refused");
            self.reply(now, id, 403, "Forbidden", &[]);
            return;
        };
        let mut caller = caller_number(req);
        let mut trunk_prefecture = match &origin {
            Origin::Trunk { name } => self
                .trunks
                .iter()
                .find(|t| &t.name == name)
                .and_then(|t| t.prefecture.clone()),
            Origin::Psap { prefecture } => Some(prefecture.clone()),
            _ => None,
        };
        // An agent on a call dials the PSAP (a three-way call, then REFER with Replaces): the
        // PSAP is the caller's, and so is the identity it sees.
        // The 12345 call the hand-off belongs to: the agent's current call when the agent dials,
        // else this call itself (a REFER'd caller's PBX, a trunk, a PSAP).
        let mut linked_call: Box<str> = req.meta.call_id.clone();
        let mut handoff_agent: Option<String> = None;
        if matches!(origin, Origin::Device | Origin::Agent { .. }) {
            if let Some((call_id, e)) = self.current_call_of_device(source.addr.ip(), now) {
                linked_call = call_id;
                handoff_agent = Some(e.agent.to_string());
                info!(agent = %e.agent, %service, "emergency hand-off by an agent on a call: the caller's prefecture and identity");
                caller = e.caller.clone();
                trunk_prefecture = e.trunk_prefecture.clone();
                if !caller.is_empty() {
                    let _ = self.proxy.add_request_header(
                        id,
                        "P-Asserted-Identity",
                        format!("<tel:{caller}>"),
                    );
                }
            }
        }
        let dialed = req.uri_user().unwrap_or(req.uri());
        let prefecture = emergency_bridge::caller_prefecture(
            &self.plan,
            dialed,
            &caller,
            trunk_prefecture.as_deref(),
        );
        let Some(bridge) = self.bridge.clone() else {
            tracing::error!(%service, "ALARM: emergency call but no [emergency] section is configured");
            self.reply(
                now,
                id,
                503,
                "Service Unavailable (no PSAP configured)",
                &[],
            );
            return;
        };
        let steps: VecDeque<Step> = bridge
            .route(service, prefecture)
            .iter()
            .map(|t| {
                let transport = match t.transport {
                    dialplan::Transport::Udp => Transport::Udp,
                    dialplan::Transport::Tcp => Transport::Tcp,
                    dialplan::Transport::Tls => Transport::Tls,
                };
                Step::Trunk(Target {
                    uri: t.request_uri(service),
                    peer: Peer {
                        transport,
                        addr: t.addr,
                        conn: None,
                    },
                })
            })
            .collect();
        let _ = self.proxy.add_request_header(
            id,
            emergency_bridge::RESOURCE_PRIORITY,
            emergency_bridge::resource_priority(service).to_owned(),
        );
        let referred_by = req.header("Referred-By").map(|by| referrer(&by));
        if let Some(agent) = &referred_by {
            tracing::warn!(%service, agent = %agent, "emergency hand-off from 12345 (referred by agent)");
        }
        // A hand-off from 12345 (an agent on a call dials the PSAP, or a REFER'd caller arrives):
        // the linkage work order, made in memory and submitted without waiting.
        let handoff_agent = handoff_agent.or(referred_by);
        let work_order = if handoff_agent.is_some() {
            let psap = steps.iter().find_map(|st| match st {
                Step::Trunk(t) => Some(t.uri.clone()),
                _ => None,
            });
            self.emergency_linkage(
                now,
                work_orders::Handoff {
                    linked_call: &linked_call,
                    caller: &caller,
                    prefecture: Some(self.plan.center(prefecture).id.to_string()),
                    service: emergency_bridge::service_number(service),
                    psap,
                    agent: handoff_agent,
                },
            )
        } else {
            None
        };
        if let Ok(v) = emergency_bridge::linkage_value(&linked_call, work_order.as_deref()) {
            let _ = self
                .proxy
                .add_request_header(id, emergency_bridge::LINKAGE_HEADER, v);
        }
        tracing::warn!(
            %service,
            prefecture = %self.plan.center(prefecture).id,
            caller = %Redacted(&caller),
            ?origin,
            targets = steps.len(),
            "EMERGENCY call: handing to PSAP"
        );
        let first_target = steps.iter().find_map(|st| match st {
            Step::Trunk(t) => Some(t.uri.clone()),
            _ => None,
        });
        self.open_cdr(
            now,
            id,
            &req.meta.call_id,
            &caller,
            dialed,
            store::LineMode::Emergency,
            Some(emergency_bridge::service_number(service).to_owned()),
            Some(self.plan.center(prefecture).id.to_string()),
            None,
        );
        self.cdr_update(
            id,
            |c, _| {
                c.target = first_target;
                c.work_order = work_order;
            },
            now,
        );
        let mut call = Call::new(steps, &req.meta.call_id, bridge.no_provisional_timeout());
        call.emergency = Some(service);
        self.calls.insert(id, call);
        self.next_step(now, id);
        // The caller's 100 Trying right behind the INVITE to the PSAP, not at the end of a batch.
        self.proxy.send_trying_now(id);
    }

    /// An out-of-dialog request: INVITE, MESSAGE, OPTIONS to a user, SUBSCRIBE ...
    fn on_initial(&mut self, now: Instant, id: ServerId, req: &Request, source: Peer) {
        let Some(origin) = self.identify(now, id, req, source) else {
            return;
        };
        let dialed = req.uri_user().unwrap_or("");
        if let (Origin::Agent { user }, Some(action)) = (&origin, seats::feature_code(dialed)) {
            if req.method() == Method::Invite {
                let user = user.clone();
                self.feature(now, id, &user, action);
                return;
            }
        }
        let caller = caller_number(req);
        let trunk_prefecture = match &origin {
            Origin::Trunk { name } => self
                .trunks
                .iter()
                .find(|t| &t.name == name)
                .and_then(|t| t.prefecture.clone()),
            Origin::Psap { prefecture } => Some(prefecture.clone()),
            Origin::Agent { .. } | Origin::Device => None,
        };
        let plan = self.plan.clone();
        let decision = plan.route(dialed, &caller, trunk_prefecture.as_deref());
        if let Origin::Agent { user } = &origin {
            let user = user.clone();
            if !self.class_allows(now, id, &user, dialed, &decision) {
                return;
            }
        }
        if let Decision::Emergency {
            service,
            prefecture,
        } = decision
        {
            // The emergency bridge (issue 5) is not built: no PSAP is configured. Never silence: a
            // clear 503 and an alarm in the log.
            tracing::error!(%service, prefecture = %plan.center(prefecture).id, "ALARM: emergency call but no PSAP route is configured");
            self.reply(
                now,
                id,
                503,
                "Service Unavailable (no PSAP configured)",
                &[],
            );
            return;
        }
        if self.draining && req.method() == Method::Invite {
            self.reply(
                now,
                id,
                503,
                "Service Unavailable",
                &[("Retry-After", "30")],
            );
            return;
        }
        if self.fenced && req.method() == Method::Invite {
            self.reply(
                now,
                id,
                503,
                "Service Unavailable (database unreachable)",
                &[("Retry-After", "5")],
            );
            return;
        }
        // The caller's prefecture, for the Tibetan prompts.
        let media_prefecture = match &decision {
            Decision::Queue(q) => Some(plan.center(q.prefecture).id.to_string()),
            Decision::Dual { fallback, .. } | Decision::Subcenter { fallback, .. } => {
                Some(plan.center(fallback.prefecture).id.to_string())
            }
            _ => None,
        };
        let mode = match &decision {
            Decision::Queue(q) => q.line.map_or("hotline", |l| match l.mode() {
                dialplan::Mode::Merge => "merge",
                dialplan::Mode::Dual => "dual",
                dialplan::Mode::Subcenter => "subcenter",
            }),
            Decision::Dual { .. } => "dual",
            Decision::Subcenter { .. } => "subcenter",
            Decision::Emergency { .. } => "emergency",
            Decision::NotFound { .. } => "agent",
        };
        let (steps, what) = match decision {
            Decision::Queue(q) => (self.queue_steps(&plan, &q), describe_queue(&q)),
            Decision::Dual {
                department_queue,
                fallback,
                line,
                overflow,
            } => {
                let steps = if self.seats.is_some() {
                    // The department's seats first; the seat manager moves the call to 12345 after
                    // the line's overflow time, or at once without a seat logged in.
                    let after = match overflow {
                        dialplan::Overflow::AfterSeconds(n) => Some(Duration::from_secs(n.into())),
                        dialplan::Overflow::WhenNoSeat => None,
                    };
                    let mut entry = queue_entry(
                        &plan,
                        &fallback,
                        Some((fallback.queue.as_str().to_owned(), after)),
                    );
                    entry.queue = department_queue.as_str().to_owned();
                    vec![Step::Queue(entry)]
                } else {
                    let mut steps = self.agents_of(department_queue.as_str());
                    steps.extend(self.queue_steps(&plan, &fallback));
                    steps
                };
                (
                    steps,
                    format!(
                        "dual line {} → {} then {}",
                        line.number, department_queue, fallback.queue
                    ),
                )
            }
            Decision::Subcenter {
                targets,
                fallback,
                line,
                ..
            } => {
                let mut steps: Vec<Step> = targets
                    .iter()
                    .filter_map(|t| {
                        RouteUri::parse(&t.uri).and_then(|u| {
                            Some(Step::Trunk(Target {
                                peer: u.peer()?,
                                uri: u.uri,
                            }))
                        })
                    })
                    .collect();
                steps.extend(self.queue_steps(&plan, &fallback));
                (
                    steps,
                    format!(
                        "sub-center line {} → {} targets then {}",
                        line.number,
                        targets.len(),
                        fallback.queue
                    ),
                )
            }
            Decision::Emergency { .. } => return,
            Decision::NotFound { .. } => {
                // Not in the plan: an agent's own number stays dialable.
                let contacts = self.contacts_of(dialed, now);
                if contacts.is_empty() {
                    debug!(dialed = %Redacted(dialed), ?origin, "no route");
                    self.reply(now, id, 404, "Not Found (no such number)", &[]);
                    return;
                }
                (
                    vec![Step::Agent(dialed.to_owned())],
                    format!("agent {dialed}"),
                )
            }
        };
        let mut steps = steps;
        if let Origin::Psap { .. } = origin {
            // A matter handed over by 110/119/120: ahead of ordinary callers.
            for st in &mut steps {
                if let Step::Queue(entry) = st {
                    entry.priority = 9;
                }
            }
        }
        info!(dialed = %Redacted(dialed), caller = %Redacted(&caller), ?origin, route = %what, "routing call");
        metrics::counter!(m::CALLS, "mode" => mode).increment(1);
        let entry_queue = steps.iter().find_map(|st| match st {
            Step::Queue(e) => Some(e.queue.clone()),
            _ => None,
        });
        let line_mode = match mode {
            "merge" => Some(store::LineMode::Merge),
            "dual" => Some(store::LineMode::Dual),
            "subcenter" => Some(store::LineMode::Subcenter),
            "hotline" => Some(store::LineMode::Hotline),
            _ => None,
        };
        if let Some(line_mode) = line_mode {
            let line = plan
                .normalize(dialed)
                .ok()
                .and_then(|n| plan.line_by_number(n.number.as_str()))
                .map(|l| l.number.to_string());
            let prefecture = entry_prefecture(&steps);
            self.open_cdr(
                now,
                id,
                &req.meta.call_id,
                &caller,
                dialed,
                line_mode,
                line,
                prefecture,
                entry_queue,
            );
        }
        let queued_line = matches!(mode, "merge" | "dual" | "hotline");
        let mut call = Call::new(steps.into(), &req.meta.call_id, self.trunk_failover);
        call.caller = caller.clone();
        call.trunk_prefecture = trunk_prefecture.clone();
        call.requires_100rel = requires_100rel(req);
        if self.media.is_some() && req.method() == Method::Invite {
            call.media = early_media::MediaInfo::from_request(req);
            call.media.merged = mode == "merge";
            call.media.prefecture = media_prefecture;
        }
        self.calls.insert(id, call);
        self.next_step(now, id);
        // The interim queue (no seat manager) rings agents in turn: the caller hears the
        // announcements meanwhile. With the seat manager, `Queued` starts them.
        if self.seats.is_none() && queued_line && self.calls.contains_key(&id) {
            self.start_early_media(now, id, None);
        }
    }

    /// The agents of a queue, in config order, as hunting steps.
    fn agents_of(&self, queue: &str) -> Vec<Step> {
        self.queue_members
            .get(queue)
            .map(|v| v.iter().map(|u| Step::Agent(u.clone())).collect())
            .unwrap_or_default()
    }

    /// A 12345 queue: its agents, then the provincial center's (overflow).
    fn queue_steps(&self, plan: &CompiledPlan, q: &QueueRoute<'_>) -> Vec<Step> {
        if self.seats.is_some() {
            // The seat manager owns the queue, its overflow and its rosters.
            return vec![Step::Queue(queue_entry(plan, q, None))];
        }
        let mut steps = self.agents_of(q.queue.as_str());
        let province = dialplan::PrefectureId::PROVINCE;
        if plan.center(q.center).queue != plan.center(province).queue {
            steps.extend(self.agents_of(plan.center(province).queue.as_str()));
        }
        steps
    }

    /// Registered contacts of an agent, as proxy targets.
    fn contacts_of(&self, user: &str, now: Instant) -> Vec<Target> {
        self.registrar
            .lookup(user, now)
            .filter_map(|b| {
                let uri = RouteUriRef::parse(&b.contact_uri)?;
                let transport = b.transport;
                // UDP: the REGISTER's source address (NAT). TCP/TLS: the phone's connection while it
                // lives, else a new connection to its Contact address (a stream's source port is
                // ephemeral).
                let addr = match transport {
                    Transport::Udp => b.source,
                    _ => uri.peer().map_or(b.source, |p| p.addr),
                };
                Some(Target {
                    uri: uri.uri.to_owned(),
                    peer: Peer {
                        transport,
                        addr,
                        conn: b.conn_id,
                    },
                })
            })
            .collect()
    }

    /// Ring the next agent or trunk of a call; with none left, answer with the best failure.
    fn next_step(&mut self, now: Instant, id: ServerId) {
        loop {
            let Some(call) = self.calls.get_mut(&id) else {
                return;
            };
            let Some(step) = call.steps.pop_front() else {
                let tried = call.tried;
                let emergency = call.emergency;
                self.calls.remove(&id);
                if let Some(service) = emergency {
                    // Never silence: a clear 503, and an alarm.
                    tracing::error!(%service, ?id, "ALARM: emergency call failed: no PSAP target answered");
                    metrics::counter!(m::EMERGENCY_CALLS, "service" => service.to_string(), "result" => "failed").increment(1);
                    self.emergency_tally.failed += 1;
                    self.reply(now, id, 503, "Service Unavailable (no PSAP answered)", &[]);
                } else if tried == 0 {
                    self.reply(
                        now,
                        id,
                        480,
                        "Temporarily Unavailable (no agent available)",
                        &[],
                    );
                } else {
                    let _ = self.proxy.send_best_response(now, id);
                }
                return;
            };
            let call_trunk_timeout = call.trunk_timeout;
            if let (Some(service), true) = (call.emergency, call.tried > 0) {
                metrics::counter!(m::EMERGENCY_FAILOVERS, "service" => service.to_string())
                    .increment(1);
                self.emergency_tally.failovers += 1;
            }
            if let Step::Queue(entry) = &step {
                call.seq += 1;
                call.tried += 1;
                let entry = entry.clone();
                self.enter_queue(now, id, &entry);
                return;
            }
            let (targets, timeout) = match &step {
                Step::Agent(user) => (self.contacts_of(user, now), self.ring_timeout),
                Step::Trunk(t) => (vec![t.clone()], call_trunk_timeout),
                Step::Queue(_) => continue,
            };
            if targets.is_empty() {
                continue; // not registered: next
            }
            let Some(call) = self.calls.get_mut(&id) else {
                return;
            };
            call.seq += 1;
            call.tried += 1;
            let seq = call.seq;
            debug!(?id, ?step, "trying");
            if self
                .proxy
                .forward(now, id, &targets, FailurePolicy::AskApplication)
                .is_err()
            {
                self.calls.remove(&id);
                return;
            }
            self.timers.push(Reverse((
                now + timeout,
                id,
                seq,
                matches!(step, Step::Trunk(_)),
            )));
            return;
        }
    }

    /// A ring or trunk timer fired: give up on the current step's branches.
    fn on_step_timer(&mut self, now: Instant, id: ServerId, seq: u32, trunk: bool) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.seq != seq {
            return;
        }
        if trunk {
            // A sub-center that has not even said 100 Trying is down: fail over now.
            self.proxy.give_up_silent_branches(now, id);
        } else {
            // Ring timeout: CANCEL the ringing phones; the next agent follows.
            self.proxy.give_up_branches(now, id);
        }
    }

    /// Trunks are known by address; anyone else must be an agent with valid credentials. A stranger
    /// with no registered device and no credentials gets 403 and nothing is forwarded.
    fn identify(
        &mut self,
        now: Instant,
        id: ServerId,
        req: &Request,
        source: Peer,
    ) -> Option<Origin> {
        if let Some(t) = self.trunk_for(source.addr.ip()) {
            return Some(Origin::Trunk {
                name: t.name.clone(),
            });
        }
        if let Some(p) = self
            .bridge
            .as_ref()
            .and_then(|b| b.psap_source(source.addr.ip()))
        {
            return Some(Origin::Psap {
                prefecture: self.plan.center(p).id.to_string(),
            });
        }
        let ip = source.addr.ip();
        let claimed_user = self.proxy_auth.claimed_username(req.rsip());
        let outcome = if self.locked_out(now, claimed_user.as_deref(), ip) {
            // Locked out: challenged again (407) as after a wrong password, digest unchecked.
            AuthOutcome::Failed {
                reason: sip_core::auth::FailReason::BadResponse,
            }
        } else {
            let creds = &self.credentials;
            let o = self.proxy_auth.verify_request(now, req, |u| creds.get(u));
            self.count_auth(now, &o, claimed_user.as_deref(), ip, "proxy");
            o
        };
        match outcome {
            AuthOutcome::Authenticated { user, .. } => Some(Origin::Agent { user }),
            AuthOutcome::Missing if !self.is_known_device(source.addr) => {
                if let Some(suppressed) = self.stranger_log.allow_at(now) {
                    warn!(source = %source.addr, method = %req.method(), suppressed, "request from unknown source refused");
                }
                self.reply(now, id, 403, "Forbidden", &[]);
                None
            }
            other => {
                let claimed = self
                    .proxy_auth
                    .claimed_username(req.rsip())
                    .or_else(|| header_user(req, "From"));
                let algs = self.credentials.algorithms_for(claimed.as_deref());
                let challenge = self.proxy_auth.challenge(now, &algs, other.is_stale());
                self.reply_headers(now, id, 407, "Proxy Authentication Required", challenge);
                None
            }
        }
    }

    fn trunk_for(&self, ip: IpAddr) -> Option<&Trunk> {
        self.trunks
            .iter()
            .find(|t| t.nets.iter().any(|n| n.contains(&ip)))
    }

    /// The answered call of the agent whose phone registered from `ip`, if any.
    fn current_call_of_device(&self, ip: IpAddr, now: Instant) -> Option<(Box<str>, Established)> {
        self.established
            .iter()
            .find(|(_, e)| {
                self.registrar
                    .lookup(&e.agent, now)
                    .any(|b| b.source.ip() == ip)
            })
            .map(|(k, e)| (k.clone(), e.clone()))
    }

    /// Whether an agent's phone registered from this address (it may then be challenged).
    fn is_known_device(&self, addr: SocketAddr) -> bool {
        self.registrar.has_source_ip(addr.ip())
    }

    fn reply(
        &mut self,
        now: Instant,
        id: ServerId,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) {
        if let Some(mut b) = self.proxy.response_for(id, status, reason) {
            for (n, v) in headers {
                b.push_header(n, v);
            }
            let _ = self.proxy.respond(now, id, b);
        }
    }

    fn reply_headers(
        &mut self,
        now: Instant,
        id: ServerId,
        status: u16,
        reason: &str,
        headers: Vec<rsip::Header>,
    ) {
        if let Some(mut b) = self.proxy.response_for(id, status, reason) {
            for h in headers {
                let line = h.to_string();
                if let Some((n, v)) = line.split_once(':') {
                    b.push_header(n.trim(), v.trim());
                }
            }
            let _ = self.proxy.respond(now, id, b);
        }
    }
}

/// One hunting step of a call.
#[derive(Debug, Clone)]
enum Step {
    /// Ring this agent's registered phones.
    Agent(String),
    /// Try this trunk target (a sub-center).
    Trunk(Target),
    /// Hand the call to the seat manager's queue (the last step: it decides from there).
    Queue(QueueEntry),
}

/// A call the switchboard is still placing.
#[derive(Debug)]
struct Call {
    steps: VecDeque<Step>,
    /// Number of the step now ringing (timers carry it, so a stale timer is ignored).
    seq: u32,
    /// Steps actually tried (a step whose agent is not registered is skipped).
    tried: u32,
    /// Set for an emergency call: it ends in a 503 and an alarm, never in silence.
    emergency: Option<EmergencyService>,
    /// How long a trunk step may stay silent before the next one.
    trunk_timeout: Duration,
    /// The SIP Call-ID, to follow the dialog once answered.
    sip_call_id: Box<str>,
    /// The seat manager's id for the call while it holds it.
    seat: Option<seat_manager::CallId>,
    /// The agent being offered the call now.
    offered: Option<Arc<str>>,
    /// The seat manager withdrew the offer itself (ring timeout): its failure is not news to it.
    offer_withdrawn: bool,
    /// Waiting in a queue: `182 Queued` is refreshed.
    queued: bool,
    /// Its last known place in the queue.
    position: u32,
    /// The caller's number, kept for a hand-off by the agent who answers.
    caller: String,
    /// The trunk's prefecture, likewise.
    trunk_prefecture: Option<String>,
    /// The caller's SDP offer and what its announcements depend on.
    media: early_media::MediaInfo,
    /// The INVITE had `Require: 100rel`: every provisional response to it must be sent reliably
    /// (RFC 3262 §3), which the switchboard's own 182 and 183 are not (no PRACK here). So it
    /// sends that caller neither; the agent's own provisionals are relayed as they come.
    requires_100rel: bool,
}

impl Call {
    fn new(steps: VecDeque<Step>, sip_call_id: &str, trunk_timeout: Duration) -> Call {
        Call {
            steps,
            seq: 0,
            tried: 0,
            emergency: None,
            trunk_timeout,
            sip_call_id: sip_call_id.into(),
            seat: None,
            offered: None,
            offer_withdrawn: false,
            queued: false,
            position: 0,
            caller: String::new(),
            trunk_prefecture: None,
            media: early_media::MediaInfo::default(),
            requires_100rel: false,
        }
    }
}

/// A call handed to a seat-manager queue.
#[derive(Debug, Clone)]
struct QueueEntry {
    queue: String,
    priority: u8,
    skill: Option<String>,
    /// The caller's prefecture id (a bounded label, for the queue log).
    prefecture: String,
    /// A dual line's 12345 queue, and when to move there (None: only without department seats).
    fallback: Option<(String, Option<Duration>)>,
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "6xx",
    }
}

impl Switch {
    /// Sample the gauges and the seat manager's KPIs into metrics (called about once a second).
    pub fn publish_metrics(&self, now: Instant) {
        let (servers, clients) = self.proxy.transaction_count();
        metrics::gauge!(m::TRANSACTIONS, "kind" => "server").set(servers as f64);
        metrics::gauge!(m::TRANSACTIONS, "kind" => "client").set(clients as f64);
        metrics::gauge!(m::REGISTRATIONS).set(self.registrar.binding_count() as f64);
        metrics::gauge!(m::FLOOD_SOURCES).set(self.flood.tracked() as f64);
        if let Some(n) = self.media_ports_in_use() {
            metrics::gauge!(m::MEDIA_PORTS_IN_USE).set(n as f64);
        }
        if let Some(s) = &self.cdrs {
            let st = s.stats();
            metrics::gauge!(m::STORE_BACKLOG)
                .set(st.submitted_seq.saturating_sub(st.committed_seq) as f64);
        }
        let Some(sm) = self.seats.as_ref() else {
            return;
        };
        for k in sm.kpis(now) {
            let q = k.queue.to_string();
            metrics::counter!(m::QUEUE_OFFERED, "queue" => q.clone()).absolute(k.offered);
            metrics::counter!(m::QUEUE_ANSWERED, "queue" => q.clone()).absolute(k.answered);
            metrics::counter!(m::QUEUE_ANSWERED_IN_SL, "queue" => q.clone())
                .absolute(k.answered_within_sl);
            metrics::counter!(m::QUEUE_ABANDONED, "queue" => q.clone()).absolute(k.abandoned);
            metrics::counter!(m::QUEUE_ABANDONED_SHORT, "queue" => q.clone())
                .absolute(k.abandoned_short);
            metrics::gauge!(m::QUEUE_WAITING, "queue" => q.clone()).set(f64::from(k.waiting_now));
            metrics::gauge!(m::QUEUE_LONGEST_WAIT, "queue" => q.clone())
                .set(k.longest_wait_now.map_or(0.0, |d| d.as_secs_f64()));
            let a = &k.agents;
            for (state, n) in [
                ("logged_out", a.logged_out),
                ("available", a.available),
                ("ringing", a.ringing),
                ("on_call", a.on_call),
                ("wrap_up", a.wrap_up),
                ("break", a.on_break),
            ] {
                metrics::gauge!(m::AGENTS, "queue" => q.clone(), "state" => state)
                    .set(f64::from(n));
            }
        }
    }
}

/// The agent named in a Referred-By value (`<sip:8001@host>`, with or without a display name or
/// parameters); empty when it names none.
fn referrer(by: &str) -> String {
    let by = by.trim();
    if let Some(user) = RouteUriRef::parse(by).and_then(|u| u.user) {
        return user.to_owned();
    }
    let inner = by
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map_or(by, |(u, _)| u);
    inner
        .split_once(':')
        .and_then(|(_, r)| r.split_once('@'))
        .map(|(u, _)| u.to_owned())
        .unwrap_or_default()
}

/// The caller's prefecture as the queue step carries it.
fn entry_prefecture(steps: &[Step]) -> Option<String> {
    steps.iter().find_map(|st| match st {
        Step::Queue(e) => Some(e.prefecture.clone()),
        _ => None,
    })
}

/// A seat-manager queue entry from the dialplan's queue route.
fn queue_entry(
    plan: &CompiledPlan,
    q: &QueueRoute<'_>,
    fallback: Option<(String, Option<Duration>)>,
) -> QueueEntry {
    QueueEntry {
        queue: q.queue.as_str().to_owned(),
        priority: q.priority,
        skill: q.skill.map(|s| s.as_str().to_owned()),
        prefecture: plan.center(q.prefecture).id.to_string(),
        fallback,
    }
}

fn describe_queue(q: &QueueRoute<'_>) -> String {
    match (q.line, q.skill) {
        (Some(line), Some(skill)) => format!(
            "line {} ({}) → queue {} skill {}",
            line.number,
            line.mode(),
            q.queue,
            skill
        ),
        _ => format!("hotline → queue {}", q.queue),
    }
}

/// Whether the request's Require header field names the `100rel` option tag (RFC 3262).
fn requires_100rel(req: &Request) -> bool {
    req.header_values("Require").any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("100rel"))
    })
}

/// The user part of the URI in header `name` (To, From).
fn header_user(req: &Request, name: &str) -> Option<String> {
    RouteUriRef::parse(&req.header(name)?)?
        .user
        .map(str::to_owned)
}

/// The caller's number: P-Asserted-Identity if the trunk sent one, else the From user.
fn caller_number(req: &Request) -> String {
    let v = req
        .header("P-Asserted-Identity")
        .or_else(|| req.header("From"))
        .unwrap_or_default();
    RouteUriRef::parse(&v)
        .and_then(|u| u.user.map(str::to_owned))
        .or_else(|| {
            // tel: URIs
            let start = v.find("tel:")? + 4;
            Some(v[start..].split(['>', ';']).next()?.to_owned())
        })
        .unwrap_or_default()
}

fn queue_members(loaded: &Loaded) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for a in &loaded.config.agents {
        for q in &a.queues {
            m.entry(q.get_ref().clone())
                .or_default()
                .push(a.user.get_ref().clone());
        }
    }
    m
}

const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, REFER, INFO, UPDATE, MESSAGE, NOTIFY, SUBSCRIBE";

fn credential_store(loaded: &Loaded) -> CredentialStore {
    let c = &loaded.config;
    let algs = |v: &[AlgorithmName]| -> Vec<DigestAlgorithm> {
        v.iter()
            .map(|a| match a {
                AlgorithmName::Md5 => DigestAlgorithm::Md5,
                AlgorithmName::Sha256 => DigestAlgorithm::Sha256,
            })
            .collect()
    };
    let default = algs(&c.registrar.algorithms);
    // The list is validated non-empty in config::parse_str, so only an MD5 fallback remains.
    let mut store = CredentialStore::new(default.clone())
        .or_else(|_| CredentialStore::new(vec![DigestAlgorithm::Md5]))
        .expect("an MD5-only credential store always builds");
    for a in &c.agents {
        let list = a
            .algorithms
            .as_deref()
            .map(algs)
            .unwrap_or_else(|| default.clone());
        let Ok(mut acct) = Account::new(c.registrar.realm.clone(), list) else {
            continue;
        };
        if let Some(h) = &a.ha1_md5 {
            match acct.clone().with_ha1(DigestAlgorithm::Md5, h.get_ref()) {
                Ok(x) => acct = x,
                Err(e) => warn!(user = %a.user.get_ref(), %e, "bad MD5 HA1"),
            }
        }
        if let Some(h) = &a.ha1_sha256 {
            match acct.clone().with_ha1(DigestAlgorithm::Sha256, h.get_ref()) {
                Ok(x) => acct = x,
                Err(e) => warn!(user = %a.user.get_ref(), %e, "bad SHA-256 HA1"),
            }
        }
        store.insert(a.user.get_ref().clone(), acct);
    }
    store
}

/// The ops whitelist (validated in config).
fn whitelist(loaded: &Loaded) -> Vec<ipnet::IpNet> {
    loaded
        .config
        .security
        .whitelist
        .iter()
        .filter_map(|w| crate::security::parse_net(w.get_ref()))
        .collect()
}

fn hex_to_32(h: &str) -> Option<[u8; 32]> {
    let v = hex::decode(h).ok()?;
    v.try_into().ok()
}
