//! The transaction-stateful proxy of RFC 3261 §16, sans IO.
//!
//! The proxy owns the transaction tables, the response contexts that tie a server transaction to its
//! client branches, and one timer queue. It does the mechanics the RFC prescribes (retransmission
//! absorption, Max-Forwards, loop detection, Route processing, Record-Route, Via, best-response
//! selection, CANCEL, Timer C) and leaves policy to the application:
//!
//! * every new out-of-dialog request becomes an [`Event::Request`]; the application answers it with
//!   [`Proxy::respond`] or sends it on with [`Proxy::forward`];
//! * in-dialog requests that carry our own Record-Route (signed, so we are no open relay) are forwarded
//!   by the proxy itself and reported with [`Event::InDialog`].
//!
//! Drive it like quinn-proto: feed [`Proxy::handle_message`] and [`Proxy::handle_timeout`], then drain
//! [`Proxy::poll_output`] and re-arm one timer at [`Proxy::poll_timeout`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::table::{IdMap, KeyIndex};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::message::{
    self, parse, response_destination, split_host_port, ConnId, Message, Method, ParseError, Peer,
    Request, Response, ResponseBuilder, Transport,
};
use crate::time::Instant;
use crate::transaction::{
    InviteClient, InviteClientState, InviteServer, NonInviteClient, NonInviteServer, TimerConfig,
    TxAction, TxKey,
};

/// One address the proxy listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Proxy settings. Timers follow Kamailio's tm names in the daemon's config.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub timers: TimerConfig,
    /// Timer C (§16.6 item 11): how long an INVITE branch may go without a provisional response.
    pub timer_c: Duration,
    pub listeners: Vec<Listener>,
    /// Host names that also mean this proxy in Route headers and Request-URIs.
    pub aliases: Vec<String>,
    /// Secret that signs our Record-Route entries, so only dialogs we set up are routed by Route.
    pub rr_secret: [u8; 32],
    /// How many server (and, separately, client) transactions the tables hold before they first
    /// grow. Growing a table of 100,000 transactions takes a message 1–2 ms (every slot moves to
    /// fresh memory), and the server table and its key index grow in the same message; sized to
    /// the load the daemon is set up for (its overload threshold), they never grow in service.
    pub expected_transactions: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            timers: TimerConfig::default(),
            timer_c: Duration::from_secs(180),
            listeners: Vec::new(),
            aliases: Vec::new(),
            rr_secret: [0; 32],
            expected_transactions: 0,
        }
    }
}

/// Identifies a server transaction (and its response context) towards the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ClientId(u64);

/// Where and how to send a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The new Request-URI.
    pub uri: String,
    /// The next hop.
    pub peer: Peer,
}

/// What the proxy hands to the application.
#[derive(Debug)]
pub enum Event {
    /// A new request that needs a decision: [`Proxy::respond`] or [`Proxy::forward`].
    Request {
        id: ServerId,
        request: Box<Request>,
        source: Peer,
    },
    /// The proxy forwarded an in-dialog request along our Record-Route (BYE, re-INVITE, ...).
    InDialog {
        method: Method,
        call_id: Box<str>,
        source: Peer,
    },
    /// A response from a branch reached the context (after the proxy forwarded it, or kept it as a
    /// candidate for the best response).
    BranchResponse {
        id: ServerId,
        status: u16,
        target: String,
    },
    /// Every branch failed and no 2xx was sent. With [`FailurePolicy::AskApplication`] the
    /// application now either forwards again or calls [`Proxy::send_best_response`].
    BranchesFailed { id: ServerId, best_status: u16 },
    /// The caller cancelled the INVITE (the proxy has answered the CANCEL and ended the branches).
    Cancelled { id: ServerId },
    /// The server transaction is finished: a final response went upstream with this status.
    Finished { id: ServerId, status: u16 },
}

/// What happens when every branch of a context has failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Send the best response upstream at once (§16.7 item 6).
    SendBest,
    /// Report [`Event::BranchesFailed`] and let the application try more targets.
    AskApplication,
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: Bytes,
}

/// Everything the proxy produces, in order.
#[derive(Debug)]
pub enum Output {
    Transmit(Transmit),
    Event(Box<Event>),
}

/// Errors of the application-facing calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no such server transaction (it ended, or the caller cancelled)")]
    UnknownTransaction,
    #[error("a final response was already sent")]
    AlreadyFinal,
    #[error("no target to forward to")]
    NoTarget,
}

enum ServerKind {
    Invite(InviteServer),
    NonInvite(NonInviteServer),
}

struct ServerEntry {
    key: TxKey,
    kind: ServerKind,
    /// Where responses go (§18.2.2, RFC 3581).
    peer: Peer,
    /// The request as received (after Route processing); dropped once a final response is sent,
    /// since retransmissions are answered from the transaction's stored response bytes: a
    /// completed transaction lingers 32 s (Timer J, RFC 6026) and must not keep a parsed message.
    request: Option<Request>,
    ctx: Option<Context>,
    /// The application was told about the request and may still answer it.
    with_app: bool,
}

enum ClientKind {
    Invite(Box<InviteClient>),
    NonInvite(NonInviteClient),
}

struct ClientEntry {
    key: TxKey,
    kind: ClientKind,
    peer: Peer,
    /// The server transaction and branch index this client transaction works for; None for the
    /// CANCELs we send.
    owner: Option<(ServerId, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchState {
    Trying,
    Proceeding,
    Done(u16),
}

struct Branch {
    client: Option<ClientId>,
    state: BranchState,
    final_response: Option<Response>,
    timer_c: Option<Instant>,
    /// CANCEL requested before any provisional arrived (§9.1: send it once one does).
    cancel_pending: bool,
    /// Timer C cancelled this branch: its 487 counts as a 408 upstream (§16.8).
    timed_out: bool,
    /// We sent a CANCEL; `timer_c` now holds the 64·T1 after which the branch is over even without
    /// a final response (§9.1), so a peer that rings and then falls silent cannot pin it forever.
    cancel_sent: bool,
    uri: String,
}

struct Context {
    branches: Vec<Branch>,
    answered: bool,
    cancelled: bool,
    policy: FailurePolicy,
    failure_reported: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(ServerId),
    Client(ClientId),
    TimerC(ServerId, usize),
    /// The end of a ringing INVITE branch whose server transaction is gone (see `remove_server`).
    Orphan(ClientId),
}

/// The proxy core. One per worker; it is not shared.
pub struct Proxy {
    cfg: ProxyConfig,
    // Growing these never stalls a message (crate::table): entries boxed, keys' hashes kept.
    servers: IdMap<ServerId, ServerEntry>,
    server_keys: KeyIndex<ServerId>,
    clients: IdMap<ClientId, ClientEntry>,
    client_keys: KeyIndex<ClientId>,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    out: VecDeque<Output>,
    /// New INVITEs' 100 Trying, held until the core is idle (see [`Proxy::poll_output`] and
    /// [`Proxy::start_batch`]); dropped when a response of the same transaction goes first.
    trying: Vec<(ServerId, Transmit)>,
    /// Inside a batch ([`Proxy::start_batch`]): held 100s wait for [`Proxy::end_batch`].
    batching: bool,
    next_id: u64,
    /// Salt mixed into branches and tags, so two proxies never collide.
    salt: u64,
    /// Each listener's `host:port` as it goes into Via, Record-Route and Contact, formatted once.
    sent_by: Vec<String>,
    /// Each listener's IP address as text; empty for one that [`Proxy::may_name_us`] cannot tell
    /// by text (the unspecified address, IPv6).
    local_ips: Vec<String>,
}

impl Proxy {
    pub fn new(cfg: ProxyConfig, salt: u64) -> Self {
        let sent_by = cfg.listeners.iter().map(|l| fmt_addr(l.addr)).collect();
        let local_ips = cfg
            .listeners
            .iter()
            .map(|l| match l.addr.ip() {
                IpAddr::V4(ip) if !ip.is_unspecified() => ip.to_string(),
                _ => String::new(),
            })
            .collect();
        // Presized up to 4 M transactions (a config asking for more grows past that as needed,
        // rather than reserving memory it may never use, or more than can be addressed).
        let n = cfg.expected_transactions.min(1 << 22);
        Proxy {
            cfg,
            sent_by,
            local_ips,
            servers: IdMap::with_capacity(n),
            server_keys: KeyIndex::with_capacity(n),
            clients: IdMap::with_capacity(n),
            client_keys: KeyIndex::with_capacity(n),
            // About two live timers per transaction (stale entries are skipped when they fire).
            timers: BinaryHeap::with_capacity(n.saturating_mul(4)),
            out: VecDeque::new(),
            trying: Vec::new(),
            batching: false,
            next_id: 1,
            salt,
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// Number of live server and client transactions.
    pub fn transaction_count(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// Transactions still waiting for an answer: server transactions without a final response and
    /// client transactions without one. A graceful shutdown waits for these; transactions that only
    /// linger to absorb retransmissions (Timers D, I, J, K, L, M) need not hold it up.
    pub fn pending_count(&self) -> usize {
        let servers = self
            .servers
            .values()
            .filter(|e| !server_is_final(e))
            .count();
        let clients = self
            .clients
            .values()
            .filter(|c| match &c.kind {
                ClientKind::Invite(tx) => matches!(
                    tx.state(),
                    InviteClientState::Calling | InviteClientState::Proceeding
                ),
                ClientKind::NonInvite(tx) => matches!(
                    tx.state(),
                    crate::transaction::NonInviteClientState::Trying
                        | crate::transaction::NonInviteClientState::Proceeding
                ),
            })
            .count();
        servers + clients
    }

    /// The next output to act on.
    ///
    /// A new INVITE's 100 Trying comes once everything else is out (the application has decided
    /// by then: it answers the INVITE's event while draining) and, inside a batch, only at its
    /// end. A response of the INVITE's own that goes first (a 180 relayed, a 486, a 404) makes the
    /// 100 unnecessary, and it is dropped: RFC 3261 §17.2.1 asks for a 100 only when the TU may
    /// take 200 ms or more to answer, and that answer quenches retransmissions just as well.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        if self.batching || self.trying.is_empty() {
            return None;
        }
        Some(Output::Transmit(self.trying.remove(0).1))
    }

    /// The caller handles several messages in a row (a burst read off the sockets): until
    /// [`Proxy::end_batch`], new INVITEs' 100 Trying wait, so each INVITE of the burst costs one
    /// `sendto` (its forward), and a 100 whose INVITE is answered meanwhile (its 180 relayed) is
    /// never sent. Held 100s leave within the batch, well inside §17.2.1's 200 ms.
    pub fn start_batch(&mut self) {
        self.batching = true;
    }

    /// The end of a batch: the 100s still held come out of [`Proxy::poll_output`] (in the order
    /// their INVITEs came).
    pub fn end_batch(&mut self) {
        self.batching = false;
    }

    /// Sends transaction `id`'s held 100 Trying now (the application does this for an emergency
    /// INVITE: nothing about an emergency call waits for the end of a batch).
    pub fn send_trying_now(&mut self, id: ServerId) {
        if let Some(i) = self.trying.iter().position(|(s, _)| *s == id) {
            let (_, t) = self.trying.remove(i);
            self.out.push_back(Output::Transmit(t));
        }
    }

    /// When [`Proxy::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Feed one datagram or one framed stream message.
    pub fn handle_message(&mut self, now: Instant, source: Peer, bytes: &[u8]) {
        match parse(bytes) {
            Ok(Message::Request(r)) => self.handle_request(now, source, r),
            Ok(Message::Response(r)) => self.handle_response(now, r),
            Err(ParseError::Answer { response, via, .. }) => {
                let peer = response_destination(&via, source);
                self.transmit(peer, response);
            }
            Err(ParseError::Drop(_)) => {}
        }
    }

    /// Fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, r))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match r {
                TimerRef::Server(id) => self.fire_server(now, id),
                TimerRef::Client(id) => self.fire_client(now, id),
                TimerRef::TimerC(id, b) => self.fire_timer_c(now, id, b, t),
                TimerRef::Orphan(id) => self.fire_orphan(id),
            }
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Application calls

    /// Answer a request the application was given.
    pub fn respond(
        &mut self,
        now: Instant,
        id: ServerId,
        response: ResponseBuilder,
    ) -> Result<(), ProxyError> {
        let entry = self
            .servers
            .get(&id)
            .ok_or(ProxyError::UnknownTransaction)?;
        if server_is_final(entry) {
            return Err(ProxyError::AlreadyFinal);
        }
        let status = response.status();
        let bytes = response.to_bytes();
        self.send_on_server(now, id, status, bytes);
        Ok(())
    }

    /// Answer with a response serialized elsewhere (the registrar builds its own).
    pub fn respond_bytes(
        &mut self,
        now: Instant,
        id: ServerId,
        status: u16,
        bytes: Bytes,
    ) -> Result<(), ProxyError> {
        let entry = self
            .servers
            .get(&id)
            .ok_or(ProxyError::UnknownTransaction)?;
        if server_is_final(entry) {
            return Err(ProxyError::AlreadyFinal);
        }
        self.send_on_server(now, id, status, bytes);
        Ok(())
    }

    /// Add a header to the request of `id` before it is forwarded (Resource-Priority on an emergency
    /// call, a linkage header).
    pub fn add_request_header(
        &mut self,
        id: ServerId,
        name: &str,
        value: String,
    ) -> Result<(), ProxyError> {
        let entry = self
            .servers
            .get_mut(&id)
            .ok_or(ProxyError::UnknownTransaction)?;
        let request = entry.request.as_mut().ok_or(ProxyError::AlreadyFinal)?;
        request.remove_header(name);
        request.push_header(name, value);
        Ok(())
    }

    /// A response builder for the request of `id`, with Via, From, To (tagged), Call-ID and CSeq copied.
    ///
    /// A 101–299 to an INVITE that we send ourselves (182 Queued, 183 Session Progress) carries our
    /// To tag and so creates a dialog, early or confirmed, with us as its UAS: RFC 3261 §12.1.1 then
    /// requires a Contact, which is the listener the INVITE came in on (the transport and address
    /// family of its source, as for Via and Record-Route).
    pub fn response_for(&self, id: ServerId, status: u16, reason: &str) -> Option<ResponseBuilder> {
        let e = self.servers.get(&id)?;
        let req = e.request.as_ref()?;
        let mut b = req.response(status, reason, Some(&self.tag(id.0)));
        if req.method() == Method::Invite && (101..300).contains(&status) {
            if let Some(l) = self.listener_for(e.peer.transport, e.peer.addr) {
                b.push_header("Contact", contact_value(l.transport, self.sent_by(l)));
            }
        }
        Some(b)
    }

    /// Send the request of `id` to `targets` in parallel (§16.5–16.6).
    pub fn forward(
        &mut self,
        now: Instant,
        id: ServerId,
        targets: &[Target],
        policy: FailurePolicy,
    ) -> Result<(), ProxyError> {
        if targets.is_empty() {
            return Err(ProxyError::NoTarget);
        }
        let entry = self
            .servers
            .get_mut(&id)
            .ok_or(ProxyError::UnknownTransaction)?;
        if server_is_final(entry) {
            return Err(ProxyError::AlreadyFinal);
        }
        entry.with_app = true;
        let ctx = entry.ctx.get_or_insert_with(|| Context {
            branches: Vec::new(),
            answered: false,
            cancelled: false,
            policy,
            failure_reported: false,
        });
        if ctx.cancelled {
            return Err(ProxyError::UnknownTransaction);
        }
        ctx.policy = policy;
        ctx.failure_reported = false;
        if entry.request.is_none() {
            return Err(ProxyError::AlreadyFinal);
        }
        let inbound = entry.peer;
        for t in targets {
            // One copy per target (the transaction keeps its own for the responses).
            let Some(mut req) = self.servers.get(&id).and_then(|e| e.request.clone()) else {
                break;
            };
            if req.set_uri(&t.uri).is_err() {
                continue;
            }
            self.start_branch(now, id, req, t.peer, inbound, true);
        }
        Ok(())
    }

    /// Send the best final response collected so far (after [`Event::BranchesFailed`]).
    pub fn send_best_response(&mut self, now: Instant, id: ServerId) -> Result<(), ProxyError> {
        let entry = self
            .servers
            .get_mut(&id)
            .ok_or(ProxyError::UnknownTransaction)?;
        let ctx = entry.ctx.as_mut().ok_or(ProxyError::UnknownTransaction)?;
        let cancelled = ctx.cancelled;
        match best_response(ctx) {
            Some(mut resp) => {
                resp.pop_via();
                let status = resp.status();
                self.send_on_server(now, id, status, resp.to_bytes());
                Ok(())
            }
            None => {
                let (status, reason) = if cancelled {
                    (487, "Request Terminated")
                } else {
                    (408, "Request Timeout")
                };
                let b = self
                    .response_for(id, status, reason)
                    .ok_or(ProxyError::UnknownTransaction)?;
                self.respond(now, id, b)
            }
        }
    }

    /// CANCEL every pending branch of `id` (ring timeout, queue reassignment).
    pub fn cancel_branches(&mut self, now: Instant, id: ServerId) {
        let n = self
            .servers
            .get(&id)
            .and_then(|e| e.ctx.as_ref())
            .map_or(0, |c| c.branches.len());
        for b in 0..n {
            self.cancel_branch(now, id, b);
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Requests

    fn handle_request(&mut self, now: Instant, source: Peer, mut req: Request) {
        // RFC 3581 / §18.2.1: record where it really came from in the top Via.
        req.stamp_received(source.addr);
        let key = TxKey::server(&req);
        let method = req.method();
        if method == Method::Ack {
            if let Some(id) = self.server_by_key(&key) {
                if let Some(ServerEntry {
                    kind: ServerKind::Invite(tx),
                    ..
                }) = self.servers.get_mut(&id)
                {
                    let a = tx.on_ack(now);
                    self.apply_server_actions(now, id, a);
                    self.schedule(TimerRef::Server(id), self.server_deadline(id));
                    return;
                }
            }
            // The ACK for a 2xx is end to end: route it statelessly along our Record-Route.
            self.forward_stateless_ack(source, req);
            return;
        }
        if let Some(id) = self.server_by_key(&key) {
            let a = match self.servers.get_mut(&id).map(|e| &mut e.kind) {
                Some(ServerKind::Invite(tx)) => tx.on_invite_retransmit(),
                Some(ServerKind::NonInvite(tx)) => tx.on_retransmit(),
                None => Vec::new(),
            };
            self.apply_server_actions(now, id, a);
            return;
        }
        let peer = response_destination(&req.meta.via, source);
        let reliable = source.transport.is_reliable();
        let id = ServerId(self.alloc());
        let kind = if method == Method::Invite {
            ServerKind::Invite(InviteServer::new(reliable, self.cfg.timers))
        } else {
            ServerKind::NonInvite(NonInviteServer::new(reliable, self.cfg.timers))
        };
        self.servers.insert(
            id,
            ServerEntry {
                key,
                kind,
                peer,
                // Kept once routing is done (below); an early answer (CANCEL, 4xx) keeps it first.
                request: None,
                ctx: None,
                with_app: false,
            },
        );
        self.index_server(id);

        if method == Method::Invite {
            // §16.2: a 100 so the upstream stops retransmitting; it is held back behind the
            // INVITE we forward, until the core is idle (see `poll_output`).
            let trying = req.response(100, "Trying", None).to_bytes();
            let queued = self.out.len();
            self.send_on_server(now, id, 100, trying);
            if self.out.len() == queued + 1 {
                if let Some(Output::Transmit(t)) = self.out.pop_back() {
                    self.trying.push((id, t));
                }
            }
        }
        if method == Method::Cancel {
            self.keep_request(id, &req);
            self.handle_cancel(now, id, &req);
            return;
        }
        if let Some((status, reason)) = self.validate(&req) {
            self.keep_request(id, &req);
            if let Some(mut b) = self.response_for(id, status, reason) {
                if status == 420 {
                    // §16.3 item 5: a 420 lists what is not supported (RFC 4475 §3.3.5).
                    let refused: Vec<String> = req.header_values("Proxy-Require").collect();
                    b.push_header("Unsupported", refused.join(", "));
                }
                let _ = self.respond(now, id, b);
            }
            return;
        }
        match self.route_processing(&mut req) {
            RouteResult::NotOurs => {}
            RouteResult::BadSignature => {
                self.keep_request(id, &req);
                self.reply(now, id, 403, "Forbidden (Route not issued by this proxy)");
                return;
            }
            RouteResult::InDialog(flow) => {
                let next = next_hop(&req).map(|p| flow.apply(p));
                match next {
                    Some(peer) => {
                        if let Some(e) = self.servers.get_mut(&id) {
                            e.request = Some(req.clone());
                            e.ctx = Some(Context {
                                branches: Vec::new(),
                                answered: false,
                                cancelled: false,
                                policy: FailurePolicy::SendBest,
                                failure_reported: false,
                            });
                        }
                        self.out.push_back(Output::Event(Box::new(Event::InDialog {
                            method,
                            call_id: req.meta.call_id.clone(),
                            source,
                        })));
                        self.start_branch(now, id, req, peer, source, false);
                    }
                    None => {
                        self.keep_request(id, &req);
                        self.reply(now, id, 502, "Bad Gateway (next hop is not an IP address)")
                    }
                }
                return;
            }
        }
        if let Some(e) = self.servers.get_mut(&id) {
            e.request = Some(req.clone());
            e.with_app = true;
        }
        self.out.push_back(Output::Event(Box::new(Event::Request {
            id,
            request: Box::new(req),
            source,
        })));
    }

    /// Keeps a copy of the request in server transaction `id`: responses are built from it.
    fn keep_request(&mut self, id: ServerId, req: &Request) {
        if let Some(e) = self.servers.get_mut(&id) {
            e.request = Some(req.clone());
        }
    }

    /// §16.3 request validation. Returns the error response, if any.
    fn validate(&self, req: &Request) -> Option<(u16, &'static str)> {
        if req.meta.max_forwards == Some(0) {
            return Some((483, "Too Many Hops"));
        }
        if self.is_loop(req) {
            return Some((482, "Loop Detected"));
        }
        if req.header("Proxy-Require").is_some() {
            return Some((420, "Bad Extension"));
        }
        None
    }

    /// §16.3 item 4: a Via of ours whose loop-detection hash equals this request's is a loop; a
    /// different hash is a legitimate spiral.
    /// The hash is computed only when a Via of ours is there (a request that has not been through
    /// us, nearly all of them, costs one scan of its Vias).
    fn is_loop(&self, req: &Request) -> bool {
        let mut hash = None;
        req.header_values("Via").any(|v| {
            if !v.contains("z9hG4bKsb") {
                return false; // not a branch of ours: no need to parse it
            }
            let Some(via) = message::parse_via(&v) else {
                return false;
            };
            let Some(ours) = via
                .branch
                .as_deref()
                .and_then(|b| b.strip_prefix("z9hG4bKsb"))
                .and_then(|b| b.split('.').next())
            else {
                return false;
            };
            let (h, p) = via.sent_by();
            self.is_local(h, Some(p), Transport::from_token(&via.transport))
                && ours
                    == hash
                        .get_or_insert_with(|| {
                            let mut hex = String::with_capacity(12);
                            push_hex_fixed(&mut hex, self.loop_hash(req), 12);
                            hex
                        })
                        .as_str()
        })
    }

    /// §16.6 item 8: a hash of what makes a request the same request again (Request-URI, Call-ID,
    /// tags, CSeq, Proxy-Require, Proxy-Authorization). It only tells a loop from a spiral, so it
    /// need not be cryptographic: SipHash-1-3 with fixed keys (the same on both nodes of an HA pair
    /// running one build), 48 bits.
    fn loop_hash(&self, req: &Request) -> u64 {
        use std::hash::Hasher as _;
        let mut h = std::hash::DefaultHasher::new();
        h.write(req.uri().as_bytes());
        h.write_u8(0);
        h.write(req.meta.call_id.as_bytes());
        h.write_u8(0);
        h.write(req.meta.from_tag.as_deref().unwrap_or("").as_bytes());
        h.write_u8(0);
        h.write(req.meta.to_tag.as_deref().unwrap_or("").as_bytes());
        h.write_u32(req.meta.cseq);
        for n in ["Proxy-Require", "Proxy-Authorization"] {
            for v in req.header_values(n) {
                h.write_u8(0);
                h.write(v.as_bytes());
            }
        }
        h.finish() & 0xffff_ffff_ffff
    }

    /// §16.4 Route information preprocessing.
    /// Consumes the Route entries naming us (checking their signatures). For a request along our
    /// Record-Route, also returns the flow of the last entry consumed: the one facing the next hop.
    fn route_processing(&self, req: &mut Request) -> RouteResult {
        // A strict router before us put our address in the Request-URI: restore the real target.
        // (Only a request with a Route can be one: most new requests carry none. A URI that does
        // not even contain our address, the phone's Contact of nearly every ACK and BYE, needs no
        // parsing.)
        if req.top_route().is_some() && self.may_name_us(req.uri()) {
            let uri = req.uri().to_owned();
            if let Some(u) = RouteUri::parse(&uri) {
                if self.is_local(&u.host, u.port, u.transport) {
                    if let Some(last) = req.pop_last_route() {
                        if let Some(inner) = RouteUri::parse(&last) {
                            let _ = req.set_uri(&inner.uri);
                        }
                    }
                }
            }
        }
        let mut popped_ours = false;
        let mut flow = Flow::NONE;
        while let Some(top) = req.top_route() {
            let Some(r) = RouteUriRef::parse(&top) else {
                break;
            };
            if !self.is_local(r.host, r.port, r.transport) {
                break;
            }
            let conn = match r.param("sbflow") {
                None => None,
                Some(v) => match v.parse::<ConnId>() {
                    Ok(c) => Some(c),
                    Err(_) => return RouteResult::BadSignature,
                },
            };
            if r.param("sbrr") != Some(self.rr_token(&req.meta.call_id, conn).as_str()) {
                return RouteResult::BadSignature;
            }
            req.pop_route();
            popped_ours = true;
            flow = Flow {
                transport: r.transport.unwrap_or(Transport::Udp),
                conn,
            };
        }
        if popped_ours && req.meta.to_tag.is_some() {
            RouteResult::InDialog(flow)
        } else {
            RouteResult::NotOurs
        }
    }

    fn handle_cancel(&mut self, now: Instant, cancel_id: ServerId, cancel: &Request) {
        // §9.2: the CANCEL matches the INVITE transaction with the same key but method INVITE.
        let mut key = TxKey::server(cancel);
        match &mut key {
            TxKey::Server { method, .. } | TxKey::Rfc2543 { method, .. } => {
                *method = crate::transaction::MethodKey::Invite
            }
            TxKey::Client { .. } => {}
        }
        let Some(invite_id) = self.server_by_key(&key) else {
            self.reply(now, cancel_id, 481, "Call/Transaction Does Not Exist");
            return;
        };
        self.reply(now, cancel_id, 200, "OK");
        self.terminate(now, invite_id);
    }

    /// Whether `req` belongs to the early dialog our own provisional responses (the app's 182,
    /// 183: our To tag and Contact) set up on INVITE `id`, still unanswered: the INVITE's Call-ID
    /// and From tag, and our To tag.
    pub fn is_our_early_dialog(&self, id: ServerId, req: &Request) -> bool {
        let Some(e) = self.servers.get(&id) else {
            return false;
        };
        let Some(invite) = e.request.as_ref() else {
            return false;
        };
        invite.method() == Method::Invite
            && !server_is_final(e)
            && invite.meta.call_id == req.meta.call_id
            && invite.meta.from_tag == req.meta.from_tag
            && req.meta.to_tag.as_deref() == Some(self.tag(id.0).as_str())
    }

    /// End INVITE `id` as a CANCEL does: its ringing branches are cancelled (their 487 goes
    /// upstream as the best response), or, not forwarded (held by the application, e.g.
    /// queued), it is answered 487 here; then `Event::Cancelled`. Nothing for an answered one.
    pub fn terminate(&mut self, now: Instant, invite_id: ServerId) {
        let Some(entry) = self.servers.get_mut(&invite_id) else {
            return;
        };
        if server_is_final(entry) {
            return;
        }
        match entry.ctx.as_mut() {
            Some(ctx)
                if ctx
                    .branches
                    .iter()
                    .any(|b| !matches!(b.state, BranchState::Done(_))) =>
            {
                ctx.cancelled = true;
                self.cancel_branches(now, invite_id);
            }
            _ => {
                // Not forwarded yet (the application holds it, e.g. queued): end it here.
                if let Some(ctx) = entry.ctx.as_mut() {
                    ctx.cancelled = true;
                }
                self.reply(now, invite_id, 487, "Request Terminated");
            }
        }
        self.out
            .push_back(Output::Event(Box::new(Event::Cancelled { id: invite_id })));
    }

    /// The ACK for a 2xx travels end to end; it matches no transaction here.
    fn forward_stateless_ack(&mut self, source: Peer, mut req: Request) {
        let RouteResult::InDialog(flow) = self.route_processing(&mut req) else {
            // An ACK for a response we did not route, or not for us at all: absorb it.
            return;
        };
        let Some(peer) = next_hop(&req).map(|p| flow.apply(p)) else {
            return;
        };
        let Some(listener) = self.listener_for(peer.transport, peer.addr) else {
            return;
        };
        // Stateless forwarding: the branch is a function of the incoming one (§16.11).
        let branch = {
            use std::hash::Hasher as _;
            let mut h = std::hash::DefaultHasher::new();
            h.write(req.meta.via.branch.as_deref().unwrap_or("").as_bytes());
            h.write_u64(self.salt);
            let mut b = String::with_capacity(26);
            b.push_str("z9hG4bKsbA");
            push_hex_fixed(&mut b, h.finish(), 16);
            b
        };
        req.push_via(via_value(
            listener.transport,
            self.sent_by(listener),
            &branch,
        ));
        if let Some(mf) = req.meta.max_forwards {
            req.set_max_forwards(mf.saturating_sub(1));
        }
        self.out.push_back(Output::Event(Box::new(Event::InDialog {
            method: Method::Ack,
            call_id: req.meta.call_id.clone(),
            source,
        })));
        self.transmit(peer, req.to_bytes());
    }

    /// Prepare a copy of the request for one target and start its client transaction (§16.6).
    fn start_branch(
        &mut self,
        now: Instant,
        id: ServerId,
        mut req: Request,
        peer: Peer,
        inbound: Peer,
        initial: bool,
    ) {
        let Some(listener) = self.listener_for(peer.transport, peer.addr) else {
            return;
        };
        let method = req.method();
        let mf = req.meta.max_forwards.map_or(70, |m| m.saturating_sub(1));
        req.set_max_forwards(mf);
        if initial && matches!(method, Method::Invite | Method::Subscribe | Method::Refer) {
            // Record-Route so in-dialog requests come back through us; two entries when the transport
            // or the address family changes (RFC 5658 double record-routing), or when either side is
            // a stream connection: each entry then names the connection of its side (`sbflow`), so a
            // request towards a phone rides the connection the phone opened (RFC 5626 §5.3: a flow
            // token in Record-Route) rather than a new one to its Contact, which a phone behind NAT
            // or without a TLS certificate could not accept.
            let flow_in = inbound.conn.filter(|_| inbound.transport.is_reliable());
            let flow_out = peer.conn.filter(|_| peer.transport.is_reliable());
            let call_id = req.meta.call_id.clone();
            if let Some(l_in) = self.listener_for(inbound.transport, inbound.addr) {
                if l_in != listener || flow_in.is_some() || flow_out.is_some() {
                    let token = self.rr_token(&call_id, flow_in);
                    let rr = rr_value(l_in.transport, self.sent_by(l_in), &token, flow_in);
                    req.prepend_header("Record-Route", rr);
                }
            }
            let token = self.rr_token(&call_id, flow_out);
            let rr = rr_value(listener.transport, self.sent_by(listener), &token, flow_out);
            req.prepend_header("Record-Route", rr);
        }
        let cid = ClientId(self.alloc());
        // z9hG4bKsb<loop hash>.<salt><client id>, in hex
        let mut branch = String::with_capacity(48);
        branch.push_str("z9hG4bKsb");
        self.loop_hash_for_forward(&mut branch, id);
        branch.push('.');
        push_hex(&mut branch, self.salt & 0xffff);
        push_hex(&mut branch, cid.0);
        req.push_via(via_value(
            listener.transport,
            self.sent_by(listener),
            &branch,
        ));
        let key = TxKey::Client {
            branch: branch.into(),
            method: crate::transaction::MethodKey::of(method),
        };
        let reliable = peer.transport.is_reliable();
        let Some(entry) = self.servers.get_mut(&id) else {
            return;
        };
        let Some(ctx) = entry.ctx.as_mut() else {
            return;
        };
        let bidx = ctx.branches.len();
        let uri = req.uri().to_owned();
        let (kind, actions) = if method == Method::Invite {
            let (tx, a) = InviteClient::start(now, req, reliable, self.cfg.timers);
            (ClientKind::Invite(Box::new(tx)), a)
        } else {
            let (tx, a) = NonInviteClient::start(now, req.to_bytes(), reliable, self.cfg.timers);
            (ClientKind::NonInvite(tx), a)
        };
        let timer_c = (method == Method::Invite).then(|| now + self.cfg.timer_c);
        ctx.branches.push(Branch {
            client: Some(cid),
            state: BranchState::Trying,
            final_response: None,
            timer_c,
            cancel_pending: false,
            timed_out: false,
            cancel_sent: false,
            uri,
        });
        self.clients.insert(
            cid,
            ClientEntry {
                key,
                kind,
                peer,
                owner: Some((id, bidx)),
            },
        );
        self.index_client(cid);
        if let Some(t) = timer_c {
            self.schedule(TimerRef::TimerC(id, bidx), Some(t));
        }
        self.apply_client_actions(now, cid, actions);
    }

    /// The loop-detection part of a branch is computed on the request as we received it.
    /// Appends the loop-detection hash of server transaction `id`'s request ("0" without one).
    fn loop_hash_for_forward(&self, out: &mut String, id: ServerId) {
        match self.servers.get(&id).and_then(|e| e.request.as_ref()) {
            Some(r) => push_hex_fixed(out, self.loop_hash(r), 12),
            None => out.push('0'),
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Responses

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let cid = TxKey::client_for_response(&resp).and_then(|k| self.client_by_key(&k));
        let Some(cid) = cid else {
            self.forward_stateless_response(resp);
            return;
        };
        let actions = match self.clients.get_mut(&cid).map(|c| &mut c.kind) {
            Some(ClientKind::Invite(tx)) => tx.on_response(now, resp),
            Some(ClientKind::NonInvite(tx)) => tx.on_response(now, resp),
            None => return,
        };
        self.apply_client_actions(now, cid, actions);
    }

    /// §16.11-style forwarding of a response that matches no transaction (a late 2xx retransmission):
    /// pop our Via and send it to the next one.
    fn forward_stateless_response(&mut self, mut resp: Response) {
        let (h, p) = resp.meta.via.sent_by();
        if !self.is_local(h, Some(p), Transport::from_token(&resp.meta.via.transport))
            || resp.meta.via_count < 2
        {
            return;
        }
        resp.pop_via();
        let via = &resp.meta.via;
        let Some(transport) = Transport::from_token(&via.transport) else {
            return;
        };
        let host = via.received.as_deref().unwrap_or(&via.host);
        let Ok(ip) = host.parse::<IpAddr>() else {
            return;
        };
        let port = match via.rport {
            Some(Some(p)) => p,
            _ => via.port.unwrap_or(5060),
        };
        self.transmit(
            Peer {
                transport,
                addr: SocketAddr::new(ip, port),
                conn: None,
            },
            resp.to_bytes(),
        );
    }

    /// A branch's client transaction delivered a response: §16.7.
    fn on_branch_response(&mut self, now: Instant, id: ServerId, b: usize, mut resp: Response) {
        let status = resp.status();
        let timer_c = self.cfg.timer_c;
        let Some(branch) = self.branch_mut(id, b) else {
            return;
        };
        let target = branch.uri.clone();
        let done_already = matches!(branch.state, BranchState::Done(_));
        if status < 200 {
            if matches!(branch.state, BranchState::Trying) {
                branch.state = BranchState::Proceeding;
            }
            // Timer C restarts on every provisional (§16.7 item 2), but not the CANCEL's deadline.
            let rearm = branch.timer_c.is_some() && !branch.cancel_sent;
            if rearm {
                branch.timer_c = Some(now + timer_c);
            }
            let pending_cancel = std::mem::take(&mut branch.cancel_pending);
            if rearm {
                self.schedule(TimerRef::TimerC(id, b), Some(now + timer_c));
            }
            if pending_cancel {
                self.cancel_branch(now, id, b);
            }
            if status == 100 || done_already {
                return;
            }
            self.out
                .push_back(Output::Event(Box::new(Event::BranchResponse {
                    id,
                    status,
                    target,
                })));
            if !server_is_final_id(&self.servers, id) {
                resp.pop_via();
                self.send_on_server(now, id, status, resp.to_bytes());
            }
            return;
        }
        branch.timer_c = None;
        let first_final = !matches!(branch.state, BranchState::Done(_));
        branch.state = BranchState::Done(status);
        self.out
            .push_back(Output::Event(Box::new(Event::BranchResponse {
                id,
                status,
                target,
            })));
        let n = self
            .servers
            .get(&id)
            .and_then(|e| e.ctx.as_ref())
            .map_or(0, |c| c.branches.len());
        if (200..300).contains(&status) {
            // Every 2xx goes upstream at once (§16.7 item 5), and the other branches are cancelled.
            if let Some(ctx) = self.servers.get_mut(&id).and_then(|e| e.ctx.as_mut()) {
                ctx.answered = true;
            }
            resp.pop_via();
            self.send_on_server(now, id, status, resp.to_bytes());
            for other in (0..n).filter(|o| *o != b) {
                self.cancel_branch(now, id, other);
            }
            return;
        }
        if !first_final {
            return;
        }
        if let Some(branch) = self.branch_mut(id, b) {
            if branch.timed_out && status == 487 {
                resp.set_status(408, "Request Timeout");
            }
            branch.final_response = Some(resp);
        }
        if status >= 600 {
            for other in (0..n).filter(|o| *o != b) {
                self.cancel_branch(now, id, other);
            }
        }
        self.check_all_done(now, id);
    }

    fn branch_mut(&mut self, id: ServerId, b: usize) -> Option<&mut Branch> {
        self.servers.get_mut(&id)?.ctx.as_mut()?.branches.get_mut(b)
    }

    fn check_all_done(&mut self, now: Instant, id: ServerId) {
        let Some(entry) = self.servers.get_mut(&id) else {
            return;
        };
        if server_is_final(entry) {
            return;
        }
        let Some(ctx) = entry.ctx.as_mut() else {
            return;
        };
        if ctx.answered
            || ctx
                .branches
                .iter()
                .any(|b| !matches!(b.state, BranchState::Done(_)))
        {
            return;
        }
        let best_status = best_response(ctx).map_or(408, |r| r.status());
        let ask = ctx.policy == FailurePolicy::AskApplication && !ctx.cancelled;
        if ask {
            if !ctx.failure_reported {
                ctx.failure_reported = true;
                self.out
                    .push_back(Output::Event(Box::new(Event::BranchesFailed {
                        id,
                        best_status,
                    })));
            }
        } else {
            let _ = self.send_best_response(now, id);
        }
    }

    /// CANCEL a branch (§16.10): at once if its INVITE client transaction has a provisional, else as
    /// soon as one arrives (§9.1).
    fn cancel_branch(&mut self, now: Instant, id: ServerId, b: usize) {
        let Some(ctx) = self.servers.get_mut(&id).and_then(|e| e.ctx.as_mut()) else {
            return;
        };
        let Some(branch) = ctx.branches.get_mut(b) else {
            return;
        };
        let Some(cid) = branch.client else { return };
        let Some(ClientEntry {
            kind: ClientKind::Invite(tx),
            ..
        }) = self.clients.get(&cid)
        else {
            return;
        };
        match tx.state() {
            InviteClientState::Calling => {
                branch.cancel_pending = true;
                return;
            }
            InviteClientState::Proceeding => {}
            _ => return,
        }
        if !self.send_cancel(now, cid) {
            return;
        }
        let deadline = now + 64 * self.cfg.timers.t1;
        if let Some(branch) = self.branch_mut(id, b) {
            branch.cancel_sent = true;
            branch.timer_c = Some(deadline);
        }
        self.schedule(TimerRef::TimerC(id, b), Some(deadline));
    }

    /// Start a CANCEL client transaction for the INVITE client transaction `cid`. False if there is
    /// nothing to cancel or the CANCEL is already on its way.
    fn send_cancel(&mut self, now: Instant, cid: ClientId) -> bool {
        let Some(ClientEntry {
            kind: ClientKind::Invite(tx),
            peer,
            ..
        }) = self.clients.get(&cid)
        else {
            return false;
        };
        let Some(cancel) = tx.cancel_request() else {
            return false;
        };
        let peer = *peer;
        let key = TxKey::Client {
            branch: cancel.meta.via.branch.clone().unwrap_or_default(),
            method: crate::transaction::MethodKey::Cancel,
        };
        if self.client_by_key(&key).is_some() {
            return false;
        }
        let (tx, actions) = NonInviteClient::start(
            now,
            cancel.to_bytes(),
            peer.transport.is_reliable(),
            self.cfg.timers,
        );
        let ccid = ClientId(self.alloc());
        self.clients.insert(
            ccid,
            ClientEntry {
                key,
                kind: ClientKind::NonInvite(tx),
                peer,
                owner: None,
            },
        );
        self.index_client(ccid);
        self.apply_client_actions(now, ccid, actions);
        true
    }

    /// Give up on every unanswered branch of `id` (ring timeout): ringing ones are CANCELled, silent
    /// ones are CANCELled as soon as they answer provisionally. Each counts as a 408, and when no
    /// branch is left the context reports [`Event::BranchesFailed`] (or sends its best response).
    pub fn give_up_branches(&mut self, now: Instant, id: ServerId) {
        self.give_up(now, id, true);
    }

    /// Give up only on branches that have sent nothing at all (a trunk that is down), so that the
    /// next target can be tried without waiting for Timer B.
    pub fn give_up_silent_branches(&mut self, now: Instant, id: ServerId) {
        self.give_up(now, id, false);
    }

    fn give_up(&mut self, now: Instant, id: ServerId, ringing_too: bool) {
        let n = self
            .servers
            .get(&id)
            .and_then(|e| e.ctx.as_ref())
            .map_or(0, |c| c.branches.len());
        let mut changed = false;
        for b in 0..n {
            let state = match self.branch_mut(id, b) {
                Some(br) => br.state,
                None => continue,
            };
            let give_up = match state {
                BranchState::Trying => true,
                BranchState::Proceeding => ringing_too,
                BranchState::Done(_) => false,
            };
            if !give_up {
                continue;
            }
            self.cancel_branch(now, id, b);
            if let Some(br) = self.branch_mut(id, b) {
                br.state = BranchState::Done(408);
                br.timer_c = None;
                let target = br.uri.clone();
                self.out
                    .push_back(Output::Event(Box::new(Event::BranchResponse {
                        id,
                        status: 408,
                        target,
                    })));
                changed = true;
            }
        }
        if changed {
            self.check_all_done(now, id);
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Timers

    fn fire_server(&mut self, now: Instant, id: ServerId) {
        let due = self.server_deadline(id).is_some_and(|d| d <= now);
        if !due {
            return;
        }
        let a = match self.servers.get_mut(&id).map(|e| &mut e.kind) {
            Some(ServerKind::Invite(tx)) => tx.on_timer(now),
            Some(ServerKind::NonInvite(tx)) => tx.on_timer(now),
            None => return,
        };
        self.apply_server_actions(now, id, a);
        self.schedule(TimerRef::Server(id), self.server_deadline(id));
    }

    fn fire_client(&mut self, now: Instant, id: ClientId) {
        let due = self.client_deadline(id).is_some_and(|d| d <= now);
        if !due {
            return;
        }
        let a = match self.clients.get_mut(&id).map(|c| &mut c.kind) {
            Some(ClientKind::Invite(tx)) => tx.on_timer(now),
            Some(ClientKind::NonInvite(tx)) => tx.on_timer(now),
            None => return,
        };
        self.apply_client_actions(now, id, a);
    }

    /// Timer C (§16.8): CANCEL a branch that rang too long; a branch that never answered is a 408.
    fn fire_timer_c(&mut self, now: Instant, id: ServerId, b: usize, at: Instant) {
        let Some(ctx) = self.servers.get_mut(&id).and_then(|e| e.ctx.as_mut()) else {
            return;
        };
        let Some(branch) = ctx.branches.get_mut(b) else {
            return;
        };
        if branch.timer_c != Some(at) {
            return; // re-armed by a provisional since
        }
        branch.timer_c = None;
        match branch.state {
            BranchState::Proceeding if branch.cancel_sent => {
                // §9.1: no final response 64·T1 after our CANCEL; the branch is over.
                branch.state = BranchState::Done(if branch.timed_out { 408 } else { 487 });
                if let Some(cid) = branch.client.take() {
                    self.remove_client(cid);
                }
                self.check_all_done(now, id);
            }
            BranchState::Proceeding => {
                branch.timed_out = true;
                self.cancel_branch(now, id, b);
            }
            BranchState::Trying => {
                branch.state = BranchState::Done(408);
                if let Some(cid) = branch.client.take() {
                    self.remove_client(cid);
                }
                self.check_all_done(now, id);
            }
            BranchState::Done(_) => {}
        }
    }

    fn server_deadline(&self, id: ServerId) -> Option<Instant> {
        match self.servers.get(&id).map(|e| &e.kind) {
            Some(ServerKind::Invite(tx)) => tx.next_deadline(),
            Some(ServerKind::NonInvite(tx)) => tx.next_deadline(),
            None => None,
        }
    }

    fn client_deadline(&self, id: ClientId) -> Option<Instant> {
        match self.clients.get(&id).map(|c| &c.kind) {
            Some(ClientKind::Invite(tx)) => tx.next_deadline(),
            Some(ClientKind::NonInvite(tx)) => tx.next_deadline(),
            None => None,
        }
    }

    fn schedule(&mut self, r: TimerRef, at: Option<Instant>) {
        if let Some(at) = at {
            self.timers.push(Reverse((at, r)));
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Plumbing

    fn reply(&mut self, now: Instant, id: ServerId, status: u16, reason: &str) {
        if let Some(b) = self.response_for(id, status, reason) {
            let _ = self.respond(now, id, b);
        }
    }

    fn send_on_server(&mut self, now: Instant, id: ServerId, status: u16, bytes: Bytes) {
        let a = match self.servers.get_mut(&id).map(|e| &mut e.kind) {
            Some(ServerKind::Invite(tx)) => tx.send_response(now, status, bytes),
            Some(ServerKind::NonInvite(tx)) => tx.send_response(now, status, bytes),
            None => return,
        };
        let was_final = status >= 200 && !a.is_empty();
        if was_final {
            if let Some(e) = self.servers.get_mut(&id) {
                e.request = None;
            }
        }
        self.apply_server_actions(now, id, a);
        self.schedule(TimerRef::Server(id), self.server_deadline(id));
        if was_final {
            let with_app = self.servers.get(&id).is_some_and(|e| e.with_app);
            if with_app {
                self.out
                    .push_back(Output::Event(Box::new(Event::Finished { id, status })));
            }
        }
    }

    fn apply_server_actions(&mut self, now: Instant, id: ServerId, actions: Vec<TxAction>) {
        for a in actions {
            match a {
                TxAction::Send(bytes) => {
                    if let Some(e) = self.servers.get(&id) {
                        let peer = e.peer;
                        // This transaction's own response goes first: its held 100 is moot (and
                        // must never follow it).
                        self.drop_trying(id);
                        self.transmit(peer, bytes);
                    }
                }
                TxAction::Terminated => self.remove_server(now, id),
                TxAction::AckTimeout | TxAction::Timeout | TxAction::Deliver(_) => {}
            }
        }
    }

    fn apply_client_actions(&mut self, now: Instant, id: ClientId, actions: Vec<TxAction>) {
        for a in actions {
            match a {
                TxAction::Send(bytes) => {
                    if let Some(c) = self.clients.get(&id) {
                        let peer = c.peer;
                        self.transmit(peer, bytes);
                    }
                }
                TxAction::Deliver(resp) => {
                    if let Some((sid, b)) = self.clients.get(&id).and_then(|c| c.owner) {
                        self.on_branch_response(now, sid, b, *resp);
                    }
                }
                TxAction::Timeout => {
                    // Timer B/F: the branch behaves as if it got a 408 (§16.8).
                    if let Some((sid, b)) = self.clients.get(&id).and_then(|c| c.owner) {
                        if let Some(branch) = self
                            .servers
                            .get_mut(&sid)
                            .and_then(|e| e.ctx.as_mut())
                            .and_then(|c| c.branches.get_mut(b))
                        {
                            if !matches!(branch.state, BranchState::Done(_)) {
                                branch.state = BranchState::Done(408);
                                branch.timer_c = None;
                                self.out.push_back(Output::Event(Box::new(
                                    Event::BranchResponse {
                                        id: sid,
                                        status: 408,
                                        target: branch.uri.clone(),
                                    },
                                )));
                            }
                        }
                        self.check_all_done(now, sid);
                    }
                }
                TxAction::Terminated => self.remove_client(id),
                TxAction::AckTimeout => {}
            }
        }
        self.schedule(TimerRef::Client(id), self.client_deadline(id));
    }

    fn server_by_key(&self, key: &TxKey) -> Option<ServerId> {
        find_by_key(&self.server_keys, &self.servers, key)
    }

    fn client_by_key(&self, key: &TxKey) -> Option<ClientId> {
        find_by_key(&self.client_keys, &self.clients, key)
    }

    /// Files a server transaction just stored under its key (replacing an older one's).
    fn index_server(&mut self, id: ServerId) {
        file_by_key(&mut self.server_keys, &self.servers, id);
    }

    /// Files a client transaction just stored under its key (replacing an older one's).
    fn index_client(&mut self, id: ClientId) {
        file_by_key(&mut self.client_keys, &self.clients, id);
    }

    fn remove_server(&mut self, now: Instant, id: ServerId) {
        let Some(e) = self.servers.remove(&id) else {
            return;
        };
        self.server_keys.remove(self.server_keys.hash(&e.key), id);
        // Branches still running keep their client transactions; they just lose their owner. A
        // ringing INVITE branch has no timer of its own (Proceeding waits for a final response) and
        // its Timer C went with the context: CANCEL it if that is not done yet, and end it 64·T1
        // later whatever the phone does (§9.1), so a silent phone cannot pin it forever.
        for b in e.ctx.into_iter().flat_map(|ctx| ctx.branches) {
            let Some(cid) = b.client else { continue };
            if let Some(c) = self.clients.get_mut(&cid) {
                c.owner = None;
            }
            if b.state == BranchState::Proceeding {
                if !b.cancel_sent {
                    self.send_cancel(now, cid);
                }
                self.schedule(TimerRef::Orphan(cid), Some(now + 64 * self.cfg.timers.t1));
            }
        }
    }

    fn fire_orphan(&mut self, id: ClientId) {
        let ringing = matches!(
            self.clients.get(&id),
            Some(ClientEntry { kind: ClientKind::Invite(tx), owner: None, .. })
                if tx.state() == InviteClientState::Proceeding
        );
        if ringing {
            self.remove_client(id);
        }
    }

    fn remove_client(&mut self, id: ClientId) {
        if let Some(c) = self.clients.remove(&id) {
            self.client_keys.remove(self.client_keys.hash(&c.key), id);
        }
    }

    /// Forgets transaction `id`'s held 100 Trying (a response of its own is about to be sent).
    fn drop_trying(&mut self, id: ServerId) {
        if !self.trying.is_empty() {
            self.trying.retain(|(s, _)| *s != id);
        }
    }

    fn transmit(&mut self, peer: Peer, bytes: Bytes) {
        self.out
            .push_back(Output::Transmit(Transmit { peer, bytes }));
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The To tag of our own responses on server transaction `n` (a function of it: every
    /// response of one transaction carries the same tag).
    fn tag(&self, n: u64) -> String {
        let mut t = String::with_capacity(26);
        t.push_str("sb");
        push_hex(&mut t, self.salt & 0xffff_ffff);
        push_hex(&mut t, n);
        t
    }

    /// The signature of a Record-Route entry: over the Call-ID and, for an entry naming a
    /// connection, that connection (so nobody can point a dialog at another phone's connection).
    fn rr_token(&self, call_id: &str, flow: Option<ConnId>) -> String {
        let mut h = Sha256::new();
        h.update(self.cfg.rr_secret);
        h.update(call_id.as_bytes());
        if let Some(conn) = flow {
            h.update(b"\0flow");
            h.update(conn.to_le_bytes());
        }
        hex::encode(&h.finalize()[..6])
    }

    /// Our listener for sending to `to` over `t`: same transport and address family.
    fn listener_for(&self, t: Transport, to: SocketAddr) -> Option<Local> {
        let ls = &self.cfg.listeners;
        ls.iter()
            .position(|l| l.transport == t && l.addr.is_ipv4() == to.is_ipv4())
            .or_else(|| ls.iter().position(|l| l.transport == t))
            .map(|i| Local {
                index: i,
                transport: t,
            })
    }

    /// `host:port` of a listener, as it goes into our headers.
    fn sent_by(&self, l: Local) -> &str {
        &self.sent_by[l.index]
    }

    /// False when `uri` cannot name this proxy: it contains none of our listeners' IP addresses
    /// or aliases as text (any case). True when unsure (an IPv6 literal, which has several
    /// spellings, or a listener on the unspecified address): the caller then parses it.
    fn may_name_us(&self, uri: &str) -> bool {
        let contains = |needle: &str| {
            !needle.is_empty()
                && uri
                    .as_bytes()
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
        };
        uri.contains('[')
            || self
                .local_ips
                .iter()
                .any(|ip| ip.is_empty() || contains(ip))
            || self.cfg.aliases.iter().any(|a| contains(a))
    }

    /// Whether `host:port` names this proxy.
    pub fn is_local(&self, host: &str, port: Option<u16>, transport: Option<Transport>) -> bool {
        let default_port = if transport == Some(Transport::Tls) {
            5061
        } else {
            5060
        };
        let port = port.unwrap_or(default_port);
        let host_ip: Option<IpAddr> = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        let name_match = self
            .cfg
            .aliases
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host));
        self.cfg.listeners.iter().any(|l| {
            l.addr.port() == port
                && (name_match
                    || host_ip
                        .is_some_and(|ip| ip == l.addr.ip() || (l.addr.ip().is_unspecified())))
        })
    }
}

enum RouteResult {
    NotOurs,
    InDialog(Flow),
    BadSignature,
}

/// The connection named by the last of our Route entries a request consumed (`sbflow`), if any.
#[derive(Debug, Clone, Copy)]
struct Flow {
    transport: Transport,
    conn: Option<ConnId>,
}

impl Flow {
    const NONE: Flow = Flow {
        transport: Transport::Udp,
        conn: None,
    };

    /// The next hop, over the flow's connection when it goes out over the flow's transport.
    fn apply(self, mut peer: Peer) -> Peer {
        if self.conn.is_some() && peer.transport == self.transport {
            peer.conn = self.conn;
        }
        peer
    }
}

fn server_is_final(e: &ServerEntry) -> bool {
    match &e.kind {
        ServerKind::Invite(tx) => tx.is_final(),
        ServerKind::NonInvite(tx) => tx.is_final(),
    }
}

/// A transaction entry, filed in a `KeyIndex` under its key (which only the entry holds).
trait Keyed {
    fn key(&self) -> &TxKey;
}

impl Keyed for ServerEntry {
    fn key(&self) -> &TxKey {
        &self.key
    }
}

impl Keyed for ClientEntry {
    fn key(&self) -> &TxKey {
        &self.key
    }
}

fn find_by_key<I: Copy + Eq + std::hash::Hash, E: Keyed>(
    index: &KeyIndex<I>,
    entries: &IdMap<I, E>,
    key: &TxKey,
) -> Option<I> {
    index.find(index.hash(key), |id| {
        entries.get(&id).is_some_and(|e| e.key() == key)
    })
}

fn file_by_key<I: Copy + Eq + std::hash::Hash, E: Keyed>(
    index: &mut KeyIndex<I>,
    entries: &IdMap<I, E>,
    id: I,
) {
    let Some(e) = entries.get(&id) else {
        return;
    };
    let h = index.hash(e.key());
    index.insert(h, id, |o| {
        entries.get(&o).is_some_and(|x| x.key() == e.key())
    });
}

fn server_is_final_id(servers: &IdMap<ServerId, ServerEntry>, id: ServerId) -> bool {
    servers.get(&id).is_none_or(server_is_final)
}

/// §16.7 item 6: a 6xx wins; else the lowest class; 503 becomes 500 upstream... (kept as-is here,
/// see below); 401/407 challenges are preferred over other 4xx.
fn best_response(ctx: &Context) -> Option<Response> {
    let finals = ctx
        .branches
        .iter()
        .filter_map(|b| b.final_response.as_ref());
    let rank = |r: &Response| -> (u16, u16) {
        let s = r.status();
        let class = if s >= 600 { 0 } else { s / 100 };
        let within = if s == 401 || s == 407 {
            0
        } else if s == 503 {
            999
        } else {
            s
        };
        (class, within)
    };
    let best = finals.min_by_key(|r| rank(r))?.clone();
    if best.status() == 503 {
        // §16.7 item 6: a 503 is not passed upstream as is; the proxy says 500 instead.
        let mut r = best;
        r.set_status(500, "Server Internal Error");
        return Some(r);
    }
    Some(best)
}

/// Next hop of an in-dialog request: the top Route if any, else the Request-URI.
fn next_hop(req: &Request) -> Option<Peer> {
    match req.top_route() {
        Some(r) => RouteUriRef::parse(&r)?.peer(),
        None => RouteUriRef::parse(req.uri())?.peer(),
    }
}

/// One of our listeners, by its place in the config (see [`Proxy::listener_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Local {
    index: usize,
    transport: Transport,
}

/// The `;transport=` URI parameter naming `t` in our own URIs (none for UDP, the default).
fn transport_param(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
    }
}

/// `SIP/2.0/UDP host:port;branch=…;rport`. Hot path: built with pushes, not `format!`.
fn via_value(t: Transport, sent_by: &str, branch: &str) -> String {
    let mut v = String::with_capacity(32 + sent_by.len() + branch.len());
    v.push_str("SIP/2.0/");
    v.push_str(t.as_via_token());
    v.push(' ');
    v.push_str(sent_by);
    v.push_str(";branch=");
    v.push_str(branch);
    v.push_str(";rport");
    v
}

/// `<sip:host:port;lr;sbrr=…>` (and `;sbflow=` naming a stream connection).
fn rr_value(t: Transport, sent_by: &str, token: &str, flow: Option<ConnId>) -> String {
    let mut v = String::with_capacity(48 + sent_by.len() + token.len());
    v.push_str("<sip:");
    v.push_str(sent_by);
    v.push_str(transport_param(t));
    v.push_str(";lr;sbrr=");
    v.push_str(token);
    if let Some(conn) = flow {
        use std::fmt::Write as _;
        let _ = write!(v, ";sbflow={conn}");
    }
    v.push('>');
    v
}

/// Our Contact (RFC 3261 §8.1.1.8) on a listener: where requests inside a dialog we hold as
/// UAS are sent.
fn contact_value(t: Transport, sent_by: &str) -> String {
    format!("<sip:{sent_by}{}>", transport_param(t))
}

/// Lower-case hex of `v`, no leading zeros (as `{:x}`), appended to `out`.
fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    // Hex digits are ASCII.
    out.extend(buf[i..].iter().map(|&b| b as char));
}

/// Lower-case hex of `v` in exactly `width` digits (as `{:0width$x}` for a value that fits).
fn push_hex_fixed(out: &mut String, v: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for k in (0..width).rev() {
        out.push(DIGITS[((v >> (4 * k)) & 0xf) as usize] as char);
    }
}

fn fmt_addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// The parts of a SIP URI that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUri {
    /// The URI without angle brackets or header-field parameters.
    pub uri: String,
    pub sips: bool,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    /// Where the URI parameters (`;lr;transport=tcp…`, before any `?headers`) sit in `uri`: they
    /// are read on demand by [`RouteUri::param`], so parsing allocates nothing for them.
    params: std::ops::Range<usize>,
}

impl RouteUri {
    /// Parse `<sip:user@host:port;params>` or a bare `sip:` URI.
    pub fn parse(value: &str) -> Option<RouteUri> {
        RouteUriRef::parse(value).map(|r| r.to_owned())
    }

    /// The value of a URI parameter (the first one of that name; names are case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.uri[self.params.clone()], name)
    }

    /// The next-hop address, when the host is an IP literal (the core does no DNS).
    pub fn peer(&self) -> Option<Peer> {
        peer_of(&self.host, self.port, self.transport)
    }
}

/// [`RouteUri`] borrowed from the text it was parsed from: the hot paths (Route processing, the
/// next hop, the user part of a Contact) read a URI without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUriRef<'a> {
    /// The URI without angle brackets or header-field parameters.
    pub uri: &'a str,
    pub sips: bool,
    /// The user part, without a password (`user:password@`).
    pub user: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    params: std::ops::Range<usize>,
}

impl<'a> RouteUriRef<'a> {
    /// Parse `<sip:user@host:port;params>` or a bare `sip:` URI.
    pub fn parse(value: &'a str) -> Option<RouteUriRef<'a>> {
        let v = value.trim();
        let uri = match (v.find('<'), v.find('>')) {
            (Some(a), Some(b)) if a < b => &v[a + 1..b],
            // Up to the first whitespace (ASCII only: `trim` took any other off the ends, and a
            // URI has none inside).
            _ => {
                &v[..v
                    .bytes()
                    .position(|b| b.is_ascii_whitespace())
                    .unwrap_or(v.len())]
            }
        };
        let (sips, rest) = if let Some(r) = strip_prefix_ci(uri, "sips:") {
            (true, r)
        } else {
            (false, strip_prefix_ci(uri, "sip:")?)
        };
        let rest_at = uri.len() - rest.len();
        let rest = &rest[..rest.find('?').unwrap_or(rest.len())];
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let host_at = rest_at + (rest.len() - hostpart.len());
        let (hp, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], host_at + i + 1..host_at + hostpart.len()),
            None => (hostpart, 0..0),
        };
        let (host, port) = split_host_port(hp)?;
        let mut transport = None;
        for (k, val) in param_pairs(&uri[params.clone()]) {
            if k.eq_ignore_ascii_case("transport") {
                // The last one wins, as it always did.
                transport = val.and_then(Transport::from_token);
            }
        }
        if sips && transport.is_none() {
            transport = Some(Transport::Tls);
        }
        Some(RouteUriRef {
            uri,
            sips,
            user: userinfo.map(|u| u.split(':').next().unwrap_or(u)),
            host,
            port,
            transport,
            params,
        })
    }

    /// The value of a URI parameter (the first one of that name; names are case-insensitive).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        find_param(&self.uri[self.params.clone()], name)
    }

    /// The next-hop address, when the host is an IP literal (the core does no DNS).
    pub fn peer(&self) -> Option<Peer> {
        peer_of(self.host, self.port, self.transport)
    }

    /// An owned copy.
    pub fn to_owned(&self) -> RouteUri {
        RouteUri {
            uri: self.uri.to_owned(),
            sips: self.sips,
            user: self.user.map(str::to_owned),
            host: self.host.to_owned(),
            port: self.port,
            transport: self.transport,
            params: self.params.clone(),
        }
    }
}

fn find_param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    param_pairs(params)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v)
}

fn peer_of(host: &str, port: Option<u16>, transport: Option<Transport>) -> Option<Peer> {
    let ip: IpAddr = host.parse().ok()?;
    let transport = transport.unwrap_or(Transport::Udp);
    let port = port.unwrap_or(if transport == Transport::Tls {
        5061
    } else {
        5060
    });
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, port),
        conn: None,
    })
}

/// `name[=value]` pairs of a `;`-separated parameter list (without its leading `;`), trimmed.
fn param_pairs(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    params
        .split(';')
        .filter(|p| !params.is_empty() || !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (p.trim(), None),
        })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`, not indexing: `s` comes from the wire and may have a UTF-8 character across the cut.
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &str = "127.0.0.2:5060";
    const DOWN: &str = "127.0.0.5:5070";

    fn proxy() -> Proxy {
        let cfg = ProxyConfig {
            listeners: vec![Listener {
                transport: Transport::Udp,
                addr: "127.0.0.1:5060".parse().unwrap(),
            }],
            rr_secret: [7; 32],
            ..ProxyConfig::default()
        };
        Proxy::new(cfg, 42)
    }

    fn udp(a: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: a.parse().unwrap(),
            conn: None,
        }
    }

    fn invite(branch: &str, mf: u32) -> String {
        format!(
            "INVITE sip:8001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch={branch}\r\nMax-Forwards: {mf}\r\n\
To: <sip:8001@127.0.0.1>\r\nFrom: <sip:13800000000@127.0.0.2>;tag=ft\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:caller@127.0.0.2:5060>\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// Drain outputs: (transmits, events).
    fn drain(p: &mut Proxy) -> (Vec<Transmit>, Vec<Event>) {
        let (mut t, mut e) = (Vec::new(), Vec::new());
        while let Some(o) = p.poll_output() {
            match o {
                Output::Transmit(x) => t.push(x),
                Output::Event(x) => e.push(*x),
            }
        }
        (t, e)
    }

    fn text(t: &Transmit) -> &str {
        std::str::from_utf8(&t.bytes).unwrap()
    }

    /// A response from the downstream UAS to the request it received.
    fn answer(received: &str, status: u16, reason: &str) -> Vec<u8> {
        let req = match parse(received.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => panic!(),
        };
        let mut b = req.response(status, reason, Some("uas"));
        if (200..300).contains(&status) {
            // Record-Route is copied into 2xx responses; a Contact says where the UAS is.
            for rr in req.header_values("Record-Route") {
                b.push_header("Record-Route", rr);
            }
            b.push_header("Contact", "<sip:8001@127.0.0.5:5070>");
        }
        b.to_bytes().to_vec()
    }

    /// Start a call: upstream INVITE, application forwards to DOWN. Returns the forwarded INVITE.
    fn start_call(p: &mut Proxy, now: Instant) -> (ServerId, String) {
        p.handle_message(now, udp(UP), invite("z9hG4bKup1", 70).as_bytes());
        let (t, e) = drain(p);
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("SIP/2.0 100 Trying"));
        let id = match &e[..] {
            [Event::Request { id, request, .. }] => {
                assert_eq!(request.uri_user(), Some("8001"));
                *id
            }
            other => panic!("{other:?}"),
        };
        p.forward(
            now,
            id,
            &[Target {
                uri: "sip:8001@127.0.0.5:5070".into(),
                peer: udp(DOWN),
            }],
            FailurePolicy::SendBest,
        )
        .unwrap();
        let (t, _) = drain(p);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].peer.addr, DOWN.parse().unwrap());
        (id, text(&t[0]).to_owned())
    }

    /// Drain outputs the way the application does: each INVITE's event is answered as it comes
    /// out (forwarded to DOWN, or refused with `refuse`), so decisions land in the same drain.
    fn pump_deciding(p: &mut Proxy, now: Instant, refuse: Option<u16>) -> Vec<String> {
        let mut sent = Vec::new();
        while let Some(o) = p.poll_output() {
            match o {
                Output::Transmit(x) => sent.push(text(&x).to_owned()),
                Output::Event(e) => {
                    if let Event::Request { id, .. } = *e {
                        match refuse {
                            Some(status) => {
                                let b = p.response_for(id, status, "Busy Here").unwrap();
                                p.respond(now, id, b).unwrap()
                            }
                            None => p
                                .forward(
                                    now,
                                    id,
                                    &[Target {
                                        uri: "sip:8001@127.0.0.5:5070".into(),
                                        peer: udp(DOWN),
                                    }],
                                    FailurePolicy::SendBest,
                                )
                                .unwrap(),
                        }
                    }
                }
            }
        }
        sent
    }

    #[test]
    fn the_100_trying_leaves_after_the_forwarded_invite_and_before_any_response() {
        let mut p = proxy();
        p.handle_message(Instant::ZERO, udp(UP), invite("z9hG4bKo1", 70).as_bytes());
        let sent = pump_deciding(&mut p, Instant::ZERO, None);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(
            sent[0].starts_with("INVITE sip:8001@127.0.0.5:5070 "),
            "{sent:?}"
        );
        assert!(sent[1].starts_with("SIP/2.0 100 Trying"), "{sent:?}");

        // Refused at once: the final response answers the INVITE; a 100 before it is moot.
        let mut p = proxy();
        p.handle_message(Instant::ZERO, udp(UP), invite("z9hG4bKo2", 70).as_bytes());
        let sent = pump_deciding(&mut p, Instant::ZERO, Some(486));
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].starts_with("SIP/2.0 486 "), "{sent:?}");

        // Refused by the proxy itself (Max-Forwards 0): the 483 alone.
        let mut p = proxy();
        p.handle_message(Instant::ZERO, udp(UP), invite("z9hG4bKo3", 0).as_bytes());
        let sent = pump_deciding(&mut p, Instant::ZERO, None);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].starts_with("SIP/2.0 483 "), "{sent:?}");
    }

    #[test]
    fn in_a_batch_100s_wait_for_its_end_and_an_answer_first_drops_them() {
        let mut p = proxy();
        p.start_batch();
        // Three INVITEs of a burst, each forwarded at once, no 100 yet.
        let mut fwds = Vec::new();
        for b in ["z9hG4bKb1", "z9hG4bKb2", "z9hG4bKb3"] {
            let inv = invite(b, 70).replace("call-1", b);
            p.handle_message(Instant::ZERO, udp(UP), inv.as_bytes());
            let sent = pump_deciding(&mut p, Instant::ZERO, None);
            assert_eq!(sent.len(), 1, "{sent:?}");
            assert!(sent[0].starts_with("INVITE "), "{sent:?}");
            fwds.push(sent[0].clone());
        }
        // The first one rings within the batch: its 180 goes up, its 100 never will.
        p.handle_message(Instant::ZERO, udp(DOWN), &answer(&fwds[0], 180, "Ringing"));
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("SIP/2.0 180 Ringing"));
        // The second one's upstream retransmits: it gets the 100 at once, and only once.
        let again = invite("z9hG4bKb2", 70).replace("call-1", "z9hG4bKb2");
        p.handle_message(Instant::ZERO, udp(UP), again.as_bytes());
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("SIP/2.0 100 Trying"));
        assert!(text(&t[0]).contains("z9hG4bKb2"));
        p.end_batch();
        // At the end: the third one's 100 alone.
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1, "{:?}", t.iter().map(text).collect::<Vec<_>>());
        assert!(text(&t[0]).starts_with("SIP/2.0 100 Trying"));
        assert!(text(&t[0]).contains("z9hG4bKb3"));
        assert_eq!(t[0].peer.addr, UP.parse().unwrap());
    }

    #[test]
    fn send_trying_now_releases_one_held_100_inside_a_batch() {
        let mut p = proxy();
        p.start_batch();
        p.handle_message(Instant::ZERO, udp(UP), invite("z9hG4bKsos", 70).as_bytes());
        let id = match drain(&mut p).1.as_slice() {
            [Event::Request { id, .. }] => *id,
            other => panic!("{other:?}"),
        };
        p.send_trying_now(id);
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("SIP/2.0 100 Trying"));
        p.end_batch();
        assert!(drain(&mut p).0.is_empty(), "sent once");
    }

    #[test]
    fn forwards_invite_with_via_record_route_and_max_forwards() {
        let mut p = proxy();
        let (_, fwd) = start_call(&mut p, Instant::ZERO);
        assert!(fwd.starts_with("INVITE sip:8001@127.0.0.5:5070 SIP/2.0\r\n"));
        let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via:")).collect();
        assert_eq!(vias.len(), 2);
        assert!(vias[0].contains("127.0.0.1:5060;branch=z9hG4bKsb"));
        assert!(vias[1].contains("z9hG4bKup1"));
        assert!(fwd.contains("Max-Forwards: 69"));
        assert!(fwd.contains("Record-Route: <sip:127.0.0.1:5060;lr;sbrr="));
    }

    #[test]
    fn full_call_with_ack_and_bye_through_record_route() {
        let mut p = proxy();
        let mut now = Instant::ZERO;
        let (_, fwd) = start_call(&mut p, now);
        now += Duration::from_millis(10);
        p.handle_message(now, udp(DOWN), &answer(&fwd, 180, "Ringing"));
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("SIP/2.0 180 Ringing"));
        assert_eq!(t[0].peer.addr, UP.parse().unwrap());
        assert!(!text(&t[0]).contains("z9hG4bKsb"), "our Via is popped");
        p.handle_message(now, udp(DOWN), &answer(&fwd, 200, "OK"));
        let (t, e) = drain(&mut p);
        assert!(text(&t[0]).starts_with("SIP/2.0 200 OK"));
        assert!(e
            .iter()
            .any(|e| matches!(e, Event::Finished { status: 200, .. })));
        let rr = text(&t[0])
            .lines()
            .find(|l| l.starts_with("Record-Route:"))
            .unwrap()
            .trim_start_matches("Record-Route: ")
            .to_owned();
        // The caller ACKs the 2xx along the route set, to the callee's Contact.
        let ack = format!(
            "ACK sip:8001@127.0.0.5:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKack1\r\nRoute: {rr}\r\nMax-Forwards: 70\r\n\
To: <sip:8001@127.0.0.1>;tag=uas\r\nFrom: <sip:13800000000@127.0.0.2>;tag=ft\r\nCall-ID: call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        p.handle_message(now, udp(UP), ack.as_bytes());
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].peer.addr, DOWN.parse().unwrap());
        assert!(!text(&t[0]).contains("Route:"), "our Route is consumed");
        // The callee hangs up: BYE to the caller's Contact, through us.
        let bye = format!(
            "BYE sip:caller@127.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.5:5070;branch=z9hG4bKbye1\r\nRoute: {rr}\r\nMax-Forwards: 70\r\n\
From: <sip:8001@127.0.0.1>;tag=uas\r\nTo: <sip:13800000000@127.0.0.2>;tag=ft\r\nCall-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        p.handle_message(now, udp(DOWN), bye.as_bytes());
        let (t, e) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].peer.addr, UP.parse().unwrap());
        assert!(matches!(
            e[..],
            [Event::InDialog {
                method: Method::Bye,
                ..
            }]
        ));
        let fwd_bye = text(&t[0]).to_owned();
        p.handle_message(now, udp(UP), &answer(&fwd_bye, 200, "OK"));
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("SIP/2.0 200 OK"));
        assert_eq!(t[0].peer.addr, "127.0.0.5:5070".parse().unwrap());
    }

    /// A proxy listening on UDP and TLS, as the daemon with a TLS listener.
    fn proxy_with_tls() -> Proxy {
        let cfg = ProxyConfig {
            listeners: vec![
                Listener {
                    transport: Transport::Udp,
                    addr: "127.0.0.1:5060".parse().unwrap(),
                },
                Listener {
                    transport: Transport::Tls,
                    addr: "127.0.0.1:5061".parse().unwrap(),
                },
            ],
            rr_secret: [7; 32],
            ..ProxyConfig::default()
        };
        Proxy::new(cfg, 42)
    }

    fn tls(a: &str, conn: ConnId) -> Peer {
        Peer {
            transport: Transport::Tls,
            addr: a.parse().unwrap(),
            conn: Some(conn),
        }
    }

    /// The Record-Route values of a message, top first.
    fn record_routes(msg: &str) -> Vec<String> {
        msg.lines()
            .filter_map(|l| l.strip_prefix("Record-Route: "))
            .map(str::to_owned)
            .collect()
    }

    /// An in-dialog request of call `call_id` along `routes` (top first) to `uri`.
    fn in_dialog(method: &str, uri: &str, routes: &[String], via: &str, call_id: &str) -> String {
        let route: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        format!(
            "{method} {uri} SIP/2.0\r\nVia: {via}\r\n{route}Max-Forwards: 70\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn requests_towards_a_tls_phone_ride_its_connection_named_in_record_route() {
        // A TLS phone on connection 5 calls a UDP trunk.
        let mut p = proxy_with_tls();
        let now = Instant::ZERO;
        let phone = "127.0.0.1:40000";
        let inv = invite("z9hG4bKph1", 70)
            .replace(
                "Via: SIP/2.0/UDP 127.0.0.2:5060",
                "Via: SIP/2.0/TLS 127.0.0.30:41000",
            )
            .replace("call-1", "flow-1");
        p.handle_message(now, tls(phone, 5), inv.as_bytes());
        let (t, e) = drain(&mut p);
        assert_eq!(
            t[0].peer,
            tls(phone, 5),
            "100 Trying on the phone's connection"
        );
        let [Event::Request { id, .. }] = &e[..] else {
            panic!("{e:?}")
        };
        let target = Target {
            uri: "sip:12366@127.0.2.1:5060".into(),
            peer: udp("127.0.2.1:5060"),
        };
        p.forward(now, *id, &[target], FailurePolicy::SendBest)
            .unwrap();
        let (t, _) = drain(&mut p);
        let rr = record_routes(text(&t[0]));
        assert_eq!(rr.len(), 2, "{rr:?}");
        assert!(rr[0].starts_with("<sip:127.0.0.1:5060;lr;sbrr=") && !rr[0].contains("sbflow"));
        assert!(
            rr[1].starts_with("<sip:127.0.0.1:5061;transport=tls;lr;sbrr=")
                && rr[1].ends_with(";sbflow=5>"),
            "{rr:?}"
        );
        // The trunk hangs up: its BYE goes to the phone's Contact over connection 5.
        let via = "SIP/2.0/UDP 127.0.2.1:5060;branch=z9hG4bKtb1";
        let contact = "sip:8001@127.0.0.30:41000;transport=tls";
        let bye = in_dialog("BYE", contact, &rr, via, "flow-1");
        p.handle_message(now, udp("127.0.2.1:5060"), bye.as_bytes());
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("BYE sip:8001@127.0.0.30:41000"));
        assert_eq!(t[0].peer, tls("127.0.0.30:41000", 5));
        assert!(text(&t[0]).contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"));

        // The phone's own in-dialog request goes to the trunk, on no connection of the phone's.
        let rev: Vec<String> = rr.iter().rev().cloned().collect();
        let via = "SIP/2.0/TLS 127.0.0.30:41000;branch=z9hG4bKpb1";
        let bye = in_dialog("BYE", "sip:12366@127.0.2.1:5060", &rev, via, "flow-1");
        p.handle_message(now, tls(phone, 5), bye.as_bytes());
        let (t, _) = drain(&mut p);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].peer, udp("127.0.2.1:5060"));

        // The connection is signed with the Call-ID: pointing the entry at another connection,
        // or moving it to another call, gets 403.
        let forged: Vec<String> = rr
            .iter()
            .map(|r| r.replace("sbflow=5", "sbflow=6"))
            .collect();
        let via = "SIP/2.0/UDP 127.0.2.1:5060;branch=z9hG4bKtb2";
        let bye = in_dialog("BYE", contact, &forged, via, "flow-1");
        p.handle_message(now, udp("127.0.2.1:5060"), bye.as_bytes());
        let (t, _) = drain(&mut p);
        assert!(text(&t[0]).starts_with("SIP/2.0 403"), "{}", text(&t[0]));
        let via = "SIP/2.0/UDP 127.0.2.1:5060;branch=z9hG4bKtb3";
        let bye = in_dialog("BYE", contact, &rr, via, "another-call");
        p.handle_message(now, udp("127.0.2.1:5060"), bye.as_bytes());
        let (t, _) = drain(&mut p);
        assert!(text(&t[0]).starts_with("SIP/2.0 403"), "{}", text(&t[0]));
    }

    #[test]
    fn a_call_between_two_tls_phones_names_each_side_s_connection() {
        let mut p = proxy_with_tls();
        let now = Instant::ZERO;
        let inv = invite("z9hG4bKab1", 70)
            .replace(
                "Via: SIP/2.0/UDP 127.0.0.2:5060",
                "Via: SIP/2.0/TLS 127.0.0.31:41000",
            )
            .replace("call-1", "flow-2");
        p.handle_message(now, tls("127.0.0.1:40001", 5), inv.as_bytes());
        let (_, e) = drain(&mut p);
        let [Event::Request { id, .. }] = &e[..] else {
            panic!("{e:?}")
        };
        let target = Target {
            uri: "sip:8002@127.0.0.32:42000;transport=tls".into(),
            peer: tls("127.0.0.32:42000", 9),
        };
        p.forward(now, *id, &[target], FailurePolicy::SendBest)
            .unwrap();
        let (t, _) = drain(&mut p);
        assert_eq!(
            t[0].peer,
            tls("127.0.0.32:42000", 9),
            "the INVITE on B's connection"
        );
        let rr = record_routes(text(&t[0]));
        assert_eq!(rr.len(), 2, "one entry per side: {rr:?}");
        assert!(
            rr[0].ends_with(";sbflow=9>") && rr[1].ends_with(";sbflow=5>"),
            "{rr:?}"
        );
        // B (the callee) uses the route set as received; its BYE reaches A on connection 5.
        let via = "SIP/2.0/TLS 127.0.0.32:42000;branch=z9hG4bKbb1";
        let bye = in_dialog(
            "BYE",
            "sip:a@127.0.0.31:41000;transport=tls",
            &rr,
            via,
            "flow-2",
        );
        p.handle_message(now, tls("127.0.0.1:40002", 9), bye.as_bytes());
        let (t, _) = drain(&mut p);
        assert_eq!(t[0].peer, tls("127.0.0.31:41000", 5));
        // A (the caller) reverses it; its BYE reaches B on connection 9.
        let rev: Vec<String> = rr.iter().rev().cloned().collect();
        let via = "SIP/2.0/TLS 127.0.0.31:41000;branch=z9hG4bKab2";
        let bye = in_dialog(
            "BYE",
            "sip:8002@127.0.0.32:42000;transport=tls",
            &rev,
            via,
            "flow-2",
        );
        p.handle_message(now, tls("127.0.0.1:40001", 5), bye.as_bytes());
        let (t, _) = drain(&mut p);
        assert_eq!(t[0].peer, tls("127.0.0.32:42000", 9));
    }

    #[test]
    fn forged_route_is_refused() {
        let mut p = proxy();
        let bye = "BYE sip:x@10.9.9.9 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.66:5060;branch=z9hG4bKevil\r\nRoute: <sip:127.0.0.1:5060;lr;sbrr=000000000000>\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: evil\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
        p.handle_message(Instant::ZERO, udp("127.0.0.66:5060"), bye.as_bytes());
        let (t, e) = drain(&mut p);
        assert!(e.is_empty());
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("SIP/2.0 403"));
    }

    #[test]
    fn retransmitted_invite_is_absorbed_and_gets_last_response() {
        let mut p = proxy();
        let (_, fwd) = start_call(&mut p, Instant::ZERO);
        p.handle_message(Instant::ZERO, udp(DOWN), &answer(&fwd, 180, "Ringing"));
        drain(&mut p);
        p.handle_message(Instant::ZERO, udp(UP), invite("z9hG4bKup1", 70).as_bytes());
        let (t, e) = drain(&mut p);
        assert!(e.is_empty(), "no second routing decision");
        assert_eq!(t.len(), 1);
        assert!(text(&t[0]).starts_with("SIP/2.0 180"));
    }

    /// Route values come from the wire: a UTF-8 character across the scheme check panicked
    /// (`dialplan_route` found the pattern; this copy was reachable with one Route header).
    #[test]
    fn non_ascii_route_does_not_panic() {
        assert_eq!(RouteUri::parse("<s\u{14f}s\u{14f}:127.0.0.1;lr>"), None);
        let mut p = proxy();
        let req = invite("z9hG4bKnr", 70).replacen(
            "Content-Length: 0",
            "Route: <s\u{14f}s\u{14f}:127.0.0.1;lr>\r\nContent-Length: 0",
            1,
        );
        p.handle_message(Instant::ZERO, udp(UP), req.as_bytes());
        drain(&mut p);
    }

    #[test]
    fn proxy_require_gets_420_listing_the_unsupported_options() {
        let mut p = proxy();
        let req = invite("z9hG4bKpr", 70).replacen(
            "Content-Length: 0",
            "Proxy-Require: foo, bar\r\nProxy-Require: baz\r\nContent-Length: 0",
            1,
        );
        p.handle_message(Instant::ZERO, udp(UP), req.as_bytes());
        let (t, e) = drain(&mut p);
        assert!(e.is_empty());
        let reply = text(t.last().unwrap());
        assert!(
            reply.starts_with("SIP/2.0 420 Bad Extension\r\n"),
            "{reply}"
        );
        assert!(
            reply.contains("\r\nUnsupported: foo, bar, baz\r\n"),
            "{reply}"
        );
    }

    #[test]
    fn max_forwards_zero_gets_483_and_loop_gets_482() {
        let mut p = proxy();
        p.handle_message(Instant::ZERO, udp(UP), invite("z9hG4bKmf", 0).as_bytes());
        let (t, e) = drain(&mut p);
        assert!(e.is_empty());
        assert_eq!(
            t.len(),
            1,
            "the 483 answers at once: no 100 Trying before it"
        );
        assert!(text(&t[0]).starts_with("SIP/2.0 483 Too Many Hops"));
        // Send our own forwarded INVITE back to us unchanged: a loop.
        let mut p = proxy();
        let (_, fwd) = start_call(&mut p, Instant::ZERO);
        let looped = fwd.replacen(
            "INVITE sip:8001@127.0.0.5:5070",
            "INVITE sip:8001@127.0.0.1",
            1,
        );
        p.handle_message(Instant::ZERO, udp("127.0.0.1:5060"), looped.as_bytes());
        let (t, _) = drain(&mut p);
        assert!(
            t.iter()
                .any(|t| text(t).starts_with("SIP/2.0 482 Loop Detected")),
            "{:?}",
            t
        );
    }

    #[test]
    fn a_strict_routers_request_gets_its_real_target_back() {
        // §16.4: a strict router before us put our address in the Request-URI and the real target
        // in the last Route; the proxy puts it back before the application sees the request.
        let mut p = proxy();
        let strict = invite("z9hG4bKstrict", 70)
            .replacen(
                "INVITE sip:8001@127.0.0.1 ",
                "INVITE sip:127.0.0.1:5060;lr ",
                1,
            )
            .replacen(
                "Content-Length: 0",
                "Route: <sip:8001@127.0.0.5:5070>\r\nContent-Length: 0",
                1,
            );
        p.handle_message(Instant::ZERO, udp(UP), strict.as_bytes());
        let (_, e) = drain(&mut p);
        match &e[..] {
            [Event::Request { request, .. }] => {
                assert_eq!(request.uri(), "sip:8001@127.0.0.5:5070");
                assert_eq!(request.top_route(), None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_uri_that_may_name_us_is_parsed_for_the_strict_router_check() {
        let p = proxy();
        assert!(!p.may_name_us("sip:8001@127.0.0.5:5070"));
        assert!(p.may_name_us("sip:127.0.0.1:5060;lr"));
        assert!(p.may_name_us("sip:[::1]:5060"), "IPv6 literals are parsed");
        let mut cfg = p.config().clone();
        cfg.aliases = vec!["sb.Example".into()];
        let aliased = Proxy::new(cfg.clone(), 1);
        assert!(aliased.may_name_us("sip:SB.example;lr"));
        assert!(!aliased.may_name_us("sip:8001@pbx.example"));
        cfg.listeners[0].addr = "0.0.0.0:5060".parse().unwrap();
        assert!(
            Proxy::new(cfg, 1).may_name_us("sip:8001@10.1.1.1"),
            "any address may be ours"
        );
    }

    #[test]
    fn a_spiral_through_us_with_a_new_request_uri_is_not_a_loop() {
        // §16.3 item 4: our own forwarded INVITE comes back with another Request-URI (retargeted
        // downstream): a spiral, handed to the application like any new INVITE.
        let mut p = proxy();
        let (_, fwd) = start_call(&mut p, Instant::ZERO);
        let spiral = fwd.replacen(
            "INVITE sip:8001@127.0.0.5:5070",
            "INVITE sip:9001@127.0.0.1",
            1,
        );
        p.handle_message(Instant::ZERO, udp("127.0.0.1:5060"), spiral.as_bytes());
        let (t, e) = drain(&mut p);
        assert!(
            !t.iter().any(|t| text(t).starts_with("SIP/2.0 482")),
            "{t:?}"
        );
        assert!(
            matches!(&e[..], [Event::Request { request, .. }] if request.uri_user() == Some("9001")),
            "{e:?}"
        );
    }

    #[test]
    fn cancel_before_answer_cancels_branch_and_caller_gets_487() {
        let mut p = proxy();
        let (id, fwd) = start_call(&mut p, Instant::ZERO);
        p.handle_message(Instant::ZERO, udp(DOWN), &answer(&fwd, 180, "Ringing"));
        drain(&mut p);
        let cancel = invite("z9hG4bKup1", 70)
            .replace("INVITE sip:", "CANCEL sip:")
            .replace("1 INVITE", "1 CANCEL");
        p.handle_message(Instant::ZERO, udp(UP), cancel.as_bytes());
        let (t, e) = drain(&mut p);
        assert!(text(&t[0]).starts_with("SIP/2.0 200 OK"), "CANCEL answered");
        let down_cancel = t
            .iter()
            .find(|t| text(t).starts_with("CANCEL "))
            .expect("CANCEL sent downstream");
        assert_eq!(down_cancel.peer.addr, DOWN.parse().unwrap());
        assert!(matches!(e[..], [Event::Cancelled { id: x }] if x == id));
        // The UAS answers 487 to the INVITE: it goes upstream; the proxy ACKs it downstream.
        p.handle_message(
            Instant::ZERO,
            udp(DOWN),
            &answer(&fwd, 487, "Request Terminated"),
        );
        let (t, _) = drain(&mut p);
        assert!(t
            .iter()
            .any(|t| text(t).starts_with("ACK ") && t.peer.addr == DOWN.parse().unwrap()));
        assert!(t
            .iter()
            .any(|t| text(t).starts_with("SIP/2.0 487") && t.peer.addr == UP.parse().unwrap()));
    }

    /// Found by the `proxy` fuzz target: a phone that rings, gets our CANCEL and then falls silent
    /// kept its INVITE client transaction (Proceeding has no timer) and the caller's transaction
    /// forever. §9.1: 64·T1 after the CANCEL the branch is over.
    #[test]
    fn silent_branch_after_cancel_ends_after_64_t1() {
        let mut p = proxy();
        let (_, fwd) = start_call(&mut p, Instant::ZERO);
        p.handle_message(Instant::ZERO, udp(DOWN), &answer(&fwd, 180, "Ringing"));
        drain(&mut p);
        let cancel = invite("z9hG4bKup1", 70)
            .replace("INVITE sip:", "CANCEL sip:")
            .replace("1 INVITE", "1 CANCEL");
        p.handle_message(Instant::ZERO, udp(UP), cancel.as_bytes());
        drain(&mut p);
        // A late provisional does not postpone the end.
        let late = Instant::ZERO + Duration::from_secs(20);
        p.handle_message(late, udp(DOWN), &answer(&fwd, 180, "Ringing"));
        drain(&mut p);
        let mut caller_got = None;
        for _ in 0..1000 {
            let Some(t) = p.poll_timeout() else { break };
            p.handle_timeout(t);
            let (tx, _) = drain(&mut p);
            if let Some(r) = tx.iter().find(|t| t.peer.addr == UP.parse().unwrap()) {
                caller_got.get_or_insert((text(r).lines().next().unwrap().to_owned(), t));
            }
        }
        let (line, at) = caller_got.expect("the caller gets a final response");
        assert_eq!(line, "SIP/2.0 487 Request Terminated");
        assert_eq!(at, Instant::ZERO + 64 * TimerConfig::default().t1);
        assert_eq!(p.transaction_count(), (0, 0));
    }

    /// Found by the `proxy` fuzz target: the application answered the caller while a branch was
    /// ringing; when the server transaction ended, the ringing INVITE client transaction lost its
    /// Timer C with the context and stayed forever. Now it is CANCELled and ended 64·T1 later.
    #[test]
    fn ringing_branch_of_a_finished_request_is_cancelled_and_ends() {
        let mut p = proxy();
        let (id, fwd) = start_call(&mut p, Instant::ZERO);
        p.handle_message(Instant::ZERO, udp(DOWN), &answer(&fwd, 180, "Ringing"));
        drain(&mut p);
        let b = p.response_for(id, 480, "Temporarily Unavailable").unwrap();
        p.respond(Instant::ZERO, id, b).unwrap();
        drain(&mut p);
        let mut cancelled = false;
        for _ in 0..1000 {
            let Some(t) = p.poll_timeout() else { break };
            p.handle_timeout(t);
            let (tx, _) = drain(&mut p);
            cancelled |= tx
                .iter()
                .any(|t| text(t).starts_with("CANCEL ") && t.peer.addr == DOWN.parse().unwrap());
        }
        assert!(cancelled, "the ringing branch was not CANCELled");
        assert_eq!(p.transaction_count(), (0, 0));
    }

    #[test]
    fn cancel_of_held_request_is_answered_487_here() {
        let mut p = proxy();
        p.handle_message(Instant::ZERO, udp(UP), invite("z9hG4bKq", 70).as_bytes());
        drain(&mut p);
        let cancel = invite("z9hG4bKq", 70)
            .replace("INVITE sip:", "CANCEL sip:")
            .replace("1 INVITE", "1 CANCEL");
        p.handle_message(Instant::ZERO, udp(UP), cancel.as_bytes());
        let (t, e) = drain(&mut p);
        assert!(t.iter().any(|t| text(t).starts_with("SIP/2.0 487")));
        assert!(e.iter().any(|e| matches!(e, Event::Cancelled { .. })));
    }

    #[test]
    fn unanswered_branch_times_out_with_408_and_ringing_branch_is_cancelled_by_timer_c() {
        let mut p = proxy();
        let (_, _) = start_call(&mut p, Instant::ZERO);
        // Nothing answers: Timer A retransmits, Timer B ends the branch, the caller gets 408.
        let mut retransmits = 0;
        while let Some(t) = p.poll_timeout() {
            if t > Instant::ZERO + Duration::from_secs(40) {
                break;
            }
            p.handle_timeout(t);
            let (tx, _) = drain(&mut p);
            retransmits += tx.iter().filter(|t| text(t).starts_with("INVITE")).count();
            if let Some(r) = tx.iter().find(|t| text(t).starts_with("SIP/2.0 408")) {
                assert_eq!(r.peer.addr, UP.parse().unwrap());
                assert_eq!(retransmits, 6);
                // Timer C: a branch that keeps ringing is cancelled after 180 s.
                let mut p = proxy();
                let (_, fwd) = start_call(&mut p, Instant::ZERO);
                p.handle_message(Instant::ZERO, udp(DOWN), &answer(&fwd, 180, "Ringing"));
                drain(&mut p);
                let c = Instant::ZERO + Duration::from_secs(180);
                p.handle_timeout(c);
                let (tx, _) = drain(&mut p);
                assert!(tx.iter().any(|t| text(t).starts_with("CANCEL ")));
                // The phone answers the INVITE with 487; the caller gets 408 (Timer C, §16.8).
                p.handle_message(c, udp(DOWN), &answer(&fwd, 487, "Request Terminated"));
                let (tx, _) = drain(&mut p);
                assert!(tx
                    .iter()
                    .any(|t| text(t).starts_with("SIP/2.0 408")
                        && t.peer.addr == UP.parse().unwrap()));
                return;
            }
        }
        panic!("no 408");
    }

    #[test]
    fn best_response_prefers_6xx_and_maps_503_to_500() {
        let mut p = proxy();
        let (_, fwd) = start_call(&mut p, Instant::ZERO);
        p.handle_message(
            Instant::ZERO,
            udp(DOWN),
            &answer(&fwd, 503, "Service Unavailable"),
        );
        let (t, _) = drain(&mut p);
        assert!(t.iter().any(|t| text(t).starts_with("SIP/2.0 500")));
    }

    /// Our own 18x creates an early dialog (it carries our To tag): it needs our Contact, on the
    /// transport the INVITE came over. 100 Trying and final failures do not.
    #[test]
    fn own_provisionals_to_an_invite_carry_our_contact() {
        let mut p = Proxy::new(
            ProxyConfig {
                listeners: vec![
                    Listener {
                        transport: Transport::Udp,
                        addr: "127.0.0.1:5060".parse().unwrap(),
                    },
                    Listener {
                        transport: Transport::Tcp,
                        addr: "127.0.0.1:5062".parse().unwrap(),
                    },
                    Listener {
                        transport: Transport::Udp,
                        addr: "[::1]:5060".parse().unwrap(),
                    },
                ],
                ..ProxyConfig::default()
            },
            1,
        );
        let mut ids = Vec::new();
        let sources = [
            udp(UP),
            Peer {
                transport: Transport::Tcp,
                addr: UP.parse().unwrap(),
                conn: None,
            },
            udp("[::1]:5090"),
        ];
        for (i, src) in sources.into_iter().enumerate() {
            let msg = invite(&format!("z9hG4bKc{i}"), 70).replace("call-1", &format!("call-c{i}"));
            let msg = if src.transport == Transport::Tcp {
                msg.replace("SIP/2.0/UDP", "SIP/2.0/TCP")
            } else {
                msg
            };
            p.handle_message(Instant::ZERO, src, msg.as_bytes());
            let (_, e) = drain(&mut p);
            match &e[..] {
                [Event::Request { id, .. }] => ids.push(*id),
                other => panic!("{other:?}"),
            }
        }
        let contact = |p: &Proxy, id, status| {
            let b = p.response_for(id, status, "x").unwrap();
            let t = String::from_utf8(b.to_bytes().to_vec()).unwrap();
            t.lines()
                .find_map(|l| l.strip_prefix("Contact: ").map(str::to_owned))
        };
        assert_eq!(
            contact(&p, ids[0], 183).as_deref(),
            Some("<sip:127.0.0.1:5060>")
        );
        assert_eq!(
            contact(&p, ids[0], 182).as_deref(),
            Some("<sip:127.0.0.1:5060>")
        );
        assert_eq!(
            contact(&p, ids[1], 183).as_deref(),
            Some("<sip:127.0.0.1:5062;transport=tcp>")
        );
        assert_eq!(
            contact(&p, ids[2], 183).as_deref(),
            Some("<sip:[::1]:5060>")
        );
        assert_eq!(contact(&p, ids[0], 100), None);
        assert_eq!(contact(&p, ids[0], 480), None);
        // The 183 as sent: tagged To and the Contact, so the caller can set up the early dialog.
        let b = p.response_for(ids[0], 183, "Session Progress").unwrap();
        p.respond(Instant::ZERO, ids[0], b).unwrap();
        let (t, _) = drain(&mut p);
        let sent = text(&t[0]);
        assert!(
            sent.starts_with("SIP/2.0 183 Session Progress\r\n"),
            "{sent}"
        );
        assert!(
            sent.contains("\r\nContact: <sip:127.0.0.1:5060>\r\n"),
            "{sent}"
        );
        let to = sent.lines().find(|l| l.starts_with("To:")).unwrap();
        assert!(to.contains(";tag="), "{to}");
    }

    #[test]
    fn route_uri_parsing() {
        let r = RouteUri::parse("<sip:10.0.0.1:5070;transport=TCP;lr;sbrr=ab>").unwrap();
        assert_eq!(
            r.peer().unwrap(),
            Peer {
                transport: Transport::Tcp,
                addr: "10.0.0.1:5070".parse().unwrap(),
                conn: None
            }
        );
        assert_eq!(r.param("sbrr"), Some("ab"));
        let u = RouteUri::parse("sip:8001@[::1]:5062").unwrap();
        assert_eq!(u.user.as_deref(), Some("8001"));
        assert_eq!(u.peer().unwrap().addr, "[::1]:5062".parse().unwrap());
        assert!(RouteUri::parse("<tel:+8612345>").is_none());
    }

    #[test]
    fn hex_digits_match_the_formatter() {
        for v in [
            0u64,
            1,
            0xf,
            0x10,
            0xabc,
            0xffff,
            1 << 47,
            u64::MAX,
            0x0123_4567_89ab_cdef,
        ] {
            let (mut a, mut b) = (String::new(), String::new());
            push_hex(&mut a, v);
            push_hex_fixed(&mut b, v & 0xffff_ffff_ffff, 12);
            assert_eq!(a, format!("{v:x}"));
            assert_eq!(b, format!("{:012x}", v & 0xffff_ffff_ffff));
        }
    }

    #[test]
    fn route_uri_parameters_are_read_from_the_uri_text() {
        let r = RouteUri::parse(
            "<sip:u:pw@h.example;LR; SBRR = x1 ;sbrr=x2;transport=tcp;transport=tls?a=b>",
        )
        .unwrap();
        assert_eq!(r.param("lr"), None, "a flag has no value");
        assert_eq!(
            r.param("sbrr"),
            Some("x1"),
            "names are case-insensitive, the first wins"
        );
        assert_eq!(r.param("a"), None, "header fields are not parameters");
        assert_eq!(r.transport, Some(Transport::Tls), "the last transport wins");
        assert_eq!(r.user.as_deref(), Some("u"));
        assert_eq!(r.host, "h.example");
        let bare = RouteUri::parse("sips:10.0.0.9").unwrap();
        assert_eq!(bare.param("transport"), None);
        assert_eq!(bare.transport, Some(Transport::Tls));
        assert_eq!(bare.uri, "sips:10.0.0.9");
        let v6 = RouteUri::parse("<sip:[2001:db8::1]:5070;sbflow=7>").unwrap();
        assert_eq!((v6.port, v6.param("sbflow")), (Some(5070), Some("7")));
    }
}
