//! The switchboard's policy over the proxy core: who may send what, and where calls go.
//!
//! Sans-IO like the core: the daemon shell feeds it bytes, timeouts and `now`, and sends what it
//! returns. It owns the proxy, the registrar and the authenticators, and answers each
//! [`Event::Request`] the proxy raises.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sip_core::auth::{Account, AuthConfig, AuthOutcome, Authenticator, ChallengeKind, CredentialStore, DigestAlgorithm};
use sip_core::message::{Method, Peer, Request, Transport};
use sip_core::proxy::{Event, FailurePolicy, Listener, Output, Proxy, ProxyConfig, RouteUri, ServerId, Target, Transmit};
use sip_core::registrar::{BindingRecord, Registrar, RegistrarConfig, SourceInfo};
use sip_core::time::Instant;
use sip_core::transaction::TimerConfig;
use tracing::{debug, info, warn};

use crate::config::{AlgorithmName, Loaded, TransportName, Trunk};
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
}

/// The application state driven by the daemon's event loop.
pub struct Switch {
    pub proxy: Proxy,
    pub registrar: Registrar,
    credentials: CredentialStore,
    reg_auth: Authenticator,
    proxy_auth: Authenticator,
    trunks: Vec<Trunk>,
    /// New calls are refused with 503 while the daemon drains for shutdown.
    draining: bool,
    /// Set when registrations changed and the state file should be rewritten.
    pub registrations_dirty: bool,
    /// Rate limits for the warnings any stranger can trigger.
    auth_failed_log: LogLimiter<Instant>,
    stranger_log: LogLimiter<Instant>,
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
    pub fn new(loaded: &Loaded, secret: [u8; 32], salt: u64) -> Switch {
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
            draining: false,
            registrations_dirty: false,
            auth_failed_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            stranger_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
        }
    }

    /// Stop taking new calls (graceful shutdown): new INVITEs get 503.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Restore registrations saved by an earlier run.
    pub fn restore_registrations(&mut self, now: Instant, records: Vec<BindingRecord>) -> usize {
        self.registrar.import(now, records)
    }

    /// Feed one inbound message.
    pub fn on_message(&mut self, now: Instant, source: Peer, bytes: &[u8], out: &mut Vec<Transmit>) {
        self.proxy.handle_message(now, source, bytes);
        self.pump(now, out);
    }

    /// Fire due timers, including registration expiry.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.proxy.handle_timeout(now);
        if self.registrar.next_expiry().is_some_and(|t| t <= now) {
            let gone = self.registrar.expire(now);
            if !gone.is_empty() {
                self.registrations_dirty = true;
                for u in gone {
                    info!(user = %u, "registration expired");
                }
            }
        }
        self.pump(now, out);
    }

    /// The next time `on_timeout` is needed.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        [self.proxy.poll_timeout(), self.registrar.next_expiry()].into_iter().flatten().min()
    }

    /// Drain the proxy's outputs, answering its events, until it is quiet.
    fn pump(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        while let Some(o) = self.proxy.poll_output() {
            match o {
                Output::Transmit(t) => out.push(t),
                Output::Event(e) => self.on_event(now, e),
            }
        }
    }

    fn on_event(&mut self, now: Instant, e: Event) {
        match e {
            Event::Request { id, request, source } => self.on_request(now, id, request, source),
            Event::InDialog { method, source, .. } => debug!(%method, %source.addr, "in-dialog request routed"),
            Event::Cancelled { id } => debug!(?id, "caller cancelled"),
            Event::BranchResponse { .. } | Event::Finished { .. } => {}
            Event::BranchesFailed { id, .. } => {
                let _ = self.proxy.send_best_response(now, id);
            }
        }
    }

    fn on_request(&mut self, now: Instant, id: ServerId, req: Request, source: Peer) {
        match req.method() {
            Method::Register => self.on_register(now, id, &req, source),
            Method::Options if req.uri_user().is_none() => {
                self.reply(now, id, 200, "OK", &[("Allow", ALLOW), ("Accept", "application/sdp")]);
            }
            _ if req.meta.to_tag.is_some() => {
                // In dialog but not along our Record-Route: we hold no such dialog.
                self.reply(now, id, 481, "Call/Transaction Does Not Exist", &[]);
            }
            _ => self.on_initial(now, id, &req, source),
        }
    }

    fn on_register(&mut self, now: Instant, id: ServerId, req: &Request, source: Peer) {
        let creds = &self.credentials;
        let outcome = self.reg_auth.verify(now, req.rsip(), |u| creds.get(u));
        let user = match outcome {
            AuthOutcome::Authenticated { user, .. } => user,
            other => {
                if let AuthOutcome::Failed { reason } = &other {
                    if let Some(suppressed) = self.auth_failed_log.allow_at(now) {
                        warn!(source = %source.addr, ?reason, suppressed, "REGISTER authentication failed");
                    }
                }
                let claimed = self.reg_auth.claimed_username(req.rsip());
                let algs = self.credentials.algorithms_for(claimed.as_deref());
                let challenge = self.reg_auth.challenge(now, &algs, other.is_stale());
                self.reply_headers(now, id, 401, "Unauthorized", challenge);
                return;
            }
        };
        let info = SourceInfo {
            addr: source.addr,
            transport: match source.transport {
                Transport::Udp => sip_core::registrar::Transport::Udp,
                Transport::Tcp => sip_core::registrar::Transport::Tcp,
                Transport::Tls => sip_core::registrar::Transport::Tls,
            },
            conn_id: source.conn,
        };
        let result = self.registrar.handle_register(now, req.rsip(), &user, info);
        if result.error.is_none() {
            self.registrations_dirty = true;
            if result.bindings_before == 0 && result.bindings_after > 0 {
                info!(user = %user, source = %source.addr, "agent registered");
            } else if result.bindings_before > 0 && result.bindings_after == 0 {
                info!(user = %user, "agent unregistered");
            }
        }
        let bytes = rsip::SipMessage::from(result.response).to_string();
        let status = result.error.as_ref().map_or(200, |e| e.status().0);
        let _ = self.proxy.respond_bytes(now, id, status, bytes.into());
    }

    /// An out-of-dialog request: INVITE, MESSAGE, OPTIONS to a user, SUBSCRIBE ...
    fn on_initial(&mut self, now: Instant, id: ServerId, req: &Request, source: Peer) {
        let Some(origin) = self.identify(now, id, req, source) else { return };
        if self.draining && req.method() == Method::Invite {
            self.reply(now, id, 503, "Service Unavailable", &[("Retry-After", "30")]);
            return;
        }
        let dialed = req.uri_user().unwrap_or("");
        let targets: Vec<Target> = self
            .registrar
            .lookup(dialed, now)
            .filter_map(|b| {
                let uri = RouteUri::parse(&b.contact_uri)?;
                // Send to where the REGISTER came from (NAT), over the connection it used if alive.
                let transport = match b.transport {
                    sip_core::registrar::Transport::Udp => Transport::Udp,
                    sip_core::registrar::Transport::Tcp => Transport::Tcp,
                    sip_core::registrar::Transport::Tls => Transport::Tls,
                };
                Some(Target { uri: uri.uri, peer: Peer { transport, addr: b.source, conn: b.conn_id } })
            })
            .collect();
        if targets.is_empty() {
            debug!(dialed = %Redacted(dialed), ?origin, "no route");
            self.reply(now, id, 404, "Not Found (no such number)", &[]);
            return;
        }
        info!(dialed = %Redacted(dialed), ?origin, branches = targets.len(), "routing call");
        if self.proxy.forward(now, id, &targets, FailurePolicy::SendBest).is_err() {
            self.reply(now, id, 500, "Server Internal Error", &[]);
        }
    }

    /// Trunks are known by address; anyone else must be an agent with valid credentials. A stranger
    /// with no registered device and no credentials gets 403 and nothing is forwarded.
    fn identify(&mut self, now: Instant, id: ServerId, req: &Request, source: Peer) -> Option<Origin> {
        if let Some(t) = self.trunk_for(source.addr.ip()) {
            return Some(Origin::Trunk { name: t.name.clone() });
        }
        let creds = &self.credentials;
        let outcome = self.proxy_auth.verify(now, req.rsip(), |u| creds.get(u));
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
                let claimed = self.proxy_auth.claimed_username(req.rsip());
                let algs = self.credentials.algorithms_for(claimed.as_deref());
                let challenge = self.proxy_auth.challenge(now, &algs, other.is_stale());
                self.reply_headers(now, id, 407, "Proxy Authentication Required", challenge);
                None
            }
        }
    }

    fn trunk_for(&self, ip: IpAddr) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.nets.iter().any(|n| n.contains(&ip)))
    }

    /// Whether an agent's phone registered from this address (it may then be challenged).
    fn is_known_device(&self, addr: SocketAddr) -> bool {
        self.registrar.has_source_ip(addr.ip())
    }

    fn reply(&mut self, now: Instant, id: ServerId, status: u16, reason: &str, headers: &[(&str, &str)]) {
        if let Some(mut b) = self.proxy.response_for(id, status, reason) {
            for (n, v) in headers {
                b.push_header(n, v);
            }
            let _ = self.proxy.respond(now, id, b);
        }
    }

    fn reply_headers(&mut self, now: Instant, id: ServerId, status: u16, reason: &str, headers: Vec<rsip::Header>) {
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

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, REFER, INFO, UPDATE, MESSAGE, NOTIFY, SUBSCRIBE";

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
        let list = a.algorithms.as_deref().map(algs).unwrap_or_else(|| default.clone());
        let Ok(mut acct) = Account::new(c.registrar.realm.clone(), list) else { continue };
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

fn hex_to_32(h: &str) -> Option<[u8; 32]> {
    let v = hex::decode(h).ok()?;
    v.try_into().ok()
}
