//! Registrar and location service (RFC 3261 §10.3), sans-IO.
//!
//! The caller authenticates the REGISTER first (see [`crate::auth`]) and passes the authenticated
//! user, the request's source and `now`; [`Registrar::handle_register`] updates the bindings and
//! returns the response to send. The proxy asks [`Registrar::lookup`] where a user can be reached.
//!
//! # Timers
//! Bindings lapse on their own: [`Registrar::lookup`] never returns an expired one. To release their
//! memory and to learn which users went offline, the driver arms one timer at
//! [`Registrar::next_expiry`] and calls [`Registrar::expire`] when it fires (then re-arms).
//!
//! # Restart
//! [`Registrar::export`] and [`Registrar::import`] move bindings across a restart as remaining
//! lifetimes, since [`Instant`]s are relative to process start. [`BindingRecord::to_text`] and
//! [`BindingRecord::from_text`] give a line format for the file the daemon writes.
//!
//! # Memory
//! A [`Binding`] holds only owned strings and plain values, no rsip types: about 200 bytes inline
//! plus its strings, and with the map and expiry-index entries roughly 500 bytes per registration
//! with typical URIs, under the 1 KiB budget at 100 000 registrations.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use rsip::headers::UntypedHeader;

use crate::time::Instant;

/// The transport a REGISTER came over decides how to reach the binding: UDP to `source`, TCP/TLS
/// over the connection `conn_id` while it lives. It is the message layer's type, persisted by its
/// lower-case token.
pub use crate::message::Transport;

/// Where a REGISTER came from, as the transport layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceInfo {
    /// Remote address of the datagram or connection.
    pub addr: SocketAddr,
    /// Transport it arrived on.
    pub transport: Transport,
    /// Connection id for TCP/TLS, so requests to the binding can reuse the phone's connection.
    pub conn_id: Option<u64>,
}

/// One registered contact of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The user part of the address-of-record (the account name).
    pub aor_user: String,
    /// The Contact URI as the phone sent it, without angle brackets.
    pub contact_uri: String,
    /// The Contact header parameters other than `expires` and `q`, as sent (each with its leading
    /// `;`), e.g. `;+sip.instance="<urn:uuid:…>";reg-id=1`. Echoed back in the 200 OK.
    pub contact_params: String,
    /// When the binding lapses.
    pub expires_at: Instant,
    /// `q` in thousandths (`q=0.5` is 500), kept exact for persistence.
    pub q_milli: Option<u16>,
    /// Call-ID of the REGISTER that last refreshed the binding (RFC 3261 §10.3 step 7).
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// Where that REGISTER came from: the address to send to when the Contact is behind NAT.
    pub source: SocketAddr,
    /// Transport it came over.
    pub transport: Transport,
    /// Transport connection it came over (TCP/TLS); `None` for UDP and after a restart.
    pub conn_id: Option<u64>,
    /// `Path` header values of that REGISTER (RFC 3327), comma-joined, if any: requests to the
    /// binding must be routed through them.
    pub path: Option<String>,
}

impl Binding {
    /// This binding as a record, its lifetime measured from `now`.
    fn record(&self, now: Instant) -> BindingRecord {
        BindingRecord {
            aor_user: self.aor_user.clone(),
            contact_uri: self.contact_uri.clone(),
            contact_params: self.contact_params.clone(),
            expires_in: self.remaining(now),
            q_milli: self.q_milli,
            call_id: self.call_id.clone(),
            cseq: self.cseq,
            source: self.source,
            transport: self.transport,
            path: self.path.clone(),
        }
    }

    /// `q` as a number, if the phone gave one.
    pub fn q(&self) -> Option<f32> {
        self.q_milli.map(|q| f32::from(q) / 1000.0)
    }

    /// The `+sip.instance` value (RFC 5626), unquoted, if present.
    pub fn instance_id(&self) -> Option<&str> {
        param_value(&self.contact_params, "+sip.instance").map(|v| v.trim_matches('"'))
    }

    /// The `reg-id` value (RFC 5626), if present and numeric.
    pub fn reg_id(&self) -> Option<u32> {
        param_value(&self.contact_params, "reg-id").and_then(|v| v.parse().ok())
    }

    /// Remaining lifetime at `now` (zero once expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }

    /// The Contact header value listing this binding in a 200 OK.
    fn contact_value(&self, now: Instant) -> String {
        let mut v = String::with_capacity(self.contact_uri.len() + self.contact_params.len() + 24);
        v.push('<');
        v.push_str(&self.contact_uri);
        v.push('>');
        v.push_str(&self.contact_params);
        if let Some(q) = self.q_milli {
            let _ = write!(v, ";q={}", format_q(q));
        }
        let _ = write!(v, ";expires={}", self.remaining(now).as_secs());
        v
    }
}

/// Limits of the registrar; see RFC 3261 §10.2.1 and §10.3 step 7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Lifetime granted when the REGISTER names none.
    pub default_expires_s: u32,
    /// Shorter non-zero requests get 423 Interval Too Brief with this as `Min-Expires`.
    pub min_expires_s: u32,
    /// Longer requests are cut to this.
    pub max_expires_s: u32,
    /// Most bindings one user may hold. When exceeded, the bindings not refreshed by the current
    /// request and closest to lapsing are dropped: a phone that re-registers from a new port after
    /// a reboot must not be locked out by its own stale bindings.
    pub max_contacts_per_aor: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            default_expires_s: 3600,
            min_expires_s: 60,
            max_expires_s: 7200,
            max_contacts_per_aor: 10,
        }
    }
}

/// Why a REGISTER was refused. Each maps to one status code ([`RegisterError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The request is not a REGISTER (a routing bug in the caller).
    #[error("not a REGISTER request")]
    NotRegister,
    /// A header needed to process the request is missing or unparseable.
    #[error("missing or malformed {header} header")]
    BadHeader {
        /// Header name.
        header: &'static str,
    },
    /// `Contact: *` together with other contacts, or with a non-zero expiry.
    #[error("Contact: * needs Expires: 0 and no other contact")]
    BadWildcard,
    /// The To AOR is not the authenticated user's.
    #[error("To address-of-record does not belong to the authenticated user")]
    NotYourAor,
    /// A non-zero expiry below the configured minimum.
    #[error("expiry {requested_s} s below minimum {min_s} s")]
    IntervalTooBrief {
        /// What the phone asked for.
        requested_s: u64,
        /// The minimum, sent as `Min-Expires`.
        min_s: u32,
    },
    /// Same Call-ID with a CSeq not above the stored one: an old or reordered REGISTER.
    #[error("REGISTER out of order for an existing binding")]
    OutOfOrder,
}

impl RegisterError {
    /// The status code and reason phrase to answer with.
    pub const fn status(&self) -> (u16, &'static str) {
        match self {
            RegisterError::NotRegister => (405, "Method Not Allowed"),
            RegisterError::BadHeader { .. } | RegisterError::BadWildcard => (400, "Bad Request"),
            RegisterError::NotYourAor => (403, "Forbidden"),
            RegisterError::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            // RFC 3261 §10.3 step 7: "the update MUST be aborted and the request fails"; a failed
            // update is a 500 (same section, last paragraph).
            RegisterError::OutOfOrder => (500, "Server Internal Error"),
        }
    }
}

/// What [`Registrar::handle_register`] did.
#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    /// The response to send.
    pub response: rsip::Response,
    /// Why the request was refused, for logs and metrics; `None` on 200.
    pub error: Option<RegisterError>,
    /// Live bindings of the user before the request.
    pub bindings_before: usize,
    /// Live bindings of the user after it: `0` after `n > 0` means the user just went offline
    /// (tell the seat manager), `n > 0` after `0` that it came online.
    pub bindings_after: usize,
}

/// A parsed Contact list element.
#[derive(Debug, Clone, PartialEq)]
enum ContactSpec {
    Wildcard,
    Addr(ContactAddr),
}

#[derive(Debug, Clone, PartialEq)]
struct ContactAddr {
    uri: String,
    expires_s: Option<u64>,
    q_milli: Option<u16>,
    params: String,
}

/// The location service: bindings per user, plus an index of each user's earliest expiry.
#[derive(Debug, Default)]
pub struct Registrar {
    config: RegistrarConfig,
    location: HashMap<String, Vec<Binding>>,
    /// `(earliest expires_at among the user's bindings, user)`, one entry per user.
    expiry_index: BTreeSet<(Instant, String)>,
    /// How many bindings were registered from each source IP: lets the proxy tell an agent's phone
    /// (challenge it) from a stranger (refuse it) in O(1).
    source_ips: HashMap<std::net::IpAddr, u32>,
}

impl Registrar {
    /// An empty registrar.
    pub fn new(config: RegistrarConfig) -> Self {
        Registrar {
            config,
            location: HashMap::new(),
            expiry_index: BTreeSet::new(),
            source_ips: HashMap::new(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// Replaces the limits (on reload). Existing bindings keep their lifetimes.
    pub fn set_config(&mut self, config: RegistrarConfig) {
        self.config = config;
    }

    /// Number of users with at least one binding (expired ones count until [`Registrar::expire`]).
    pub fn user_count(&self) -> usize {
        self.location.len()
    }

    /// Number of bindings (expired ones count until [`Registrar::expire`]).
    pub fn binding_count(&self) -> usize {
        self.location.values().map(Vec::len).sum()
    }

    /// The live bindings of `user`, in registration order.
    pub fn lookup<'a>(&'a self, user: &str, now: Instant) -> impl Iterator<Item = &'a Binding> {
        self.location
            .get(user)
            .into_iter()
            .flatten()
            .filter(move |b| b.expires_at > now)
    }

    /// When the next binding lapses: arm the timer for [`Registrar::expire`] here.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry_index.first().map(|(at, _)| *at)
    }

    /// Drops bindings that have lapsed at `now` and returns the users left with none, so the seat
    /// manager can log those agents out.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut offline = Vec::new();
        while let Some((at, _)) = self.expiry_index.first() {
            if *at > now {
                break;
            }
            let Some((_, user)) = self.expiry_index.pop_first() else {
                break;
            };
            let Some(list) = self.location.get_mut(&user) else {
                continue;
            };
            for b in list.iter().filter(|b| b.expires_at <= now) {
                uncount_ip(&mut self.source_ips, b.source.ip());
            }
            list.retain(|b| b.expires_at > now);
            match earliest(list) {
                Some(next) => {
                    self.expiry_index.insert((next, user));
                }
                None => {
                    self.location.remove(&user);
                    offline.push(user);
                }
            }
        }
        offline
    }

    /// Replaces `user`'s bindings, keeping the expiry index in step. An empty list removes the user.
    fn commit(&mut self, user: &str, list: Vec<Binding>) {
        if let Some(old) = self.location.get(user) {
            for b in old {
                uncount_ip(&mut self.source_ips, b.source.ip());
            }
        }
        for b in &list {
            *self.source_ips.entry(b.source.ip()).or_insert(0) += 1;
        }
        let old = self.location.get(user).and_then(|l| earliest(l));
        if let Some(old) = old {
            self.expiry_index.remove(&(old, user.to_owned()));
        }
        match earliest(&list) {
            Some(next) => {
                self.expiry_index.insert((next, user.to_owned()));
                self.location.insert(user.to_owned(), list);
            }
            None => {
                self.location.remove(user);
            }
        }
    }

    /// Whether any binding was registered from `ip`.
    pub fn has_source_ip(&self, ip: std::net::IpAddr) -> bool {
        self.source_ips.contains_key(&ip)
    }

    /// Number of bindings registered from `ip` (many phones behind one NAT address).
    pub fn source_ip_bindings(&self, ip: std::net::IpAddr) -> u32 {
        self.source_ips.get(&ip).copied().unwrap_or(0)
    }

    fn live_count(&self, user: &str, now: Instant) -> usize {
        self.lookup(user, now).count()
    }

    /// Processes a REGISTER from `authenticated_user` (RFC 3261 §10.3 steps 5–8). Either all
    /// contact changes apply or none do.
    pub fn handle_register(
        &mut self,
        now: Instant,
        req: &rsip::Request,
        authenticated_user: &str,
        source: SourceInfo,
    ) -> RegisterOutcome {
        let before = self.live_count(authenticated_user, now);
        let result = self.apply_register(now, req, authenticated_user, source);
        let after = self.live_count(authenticated_user, now);
        match result {
            Ok(()) => {
                let mut response = make_response(req, 200, "OK");
                for b in self.lookup(authenticated_user, now) {
                    response
                        .headers
                        .push(rsip::Header::Contact(rsip::headers::Contact::new(
                            b.contact_value(now),
                        )));
                }
                if supports_path(req) {
                    for p in path_values(req) {
                        response
                            .headers
                            .push(rsip::Header::Other("Path".into(), p.to_owned()));
                    }
                }
                RegisterOutcome {
                    response,
                    error: None,
                    bindings_before: before,
                    bindings_after: after,
                }
            }
            Err(error) => {
                let (code, reason) = error.status();
                let mut response = make_response(req, code, reason);
                if let RegisterError::IntervalTooBrief { min_s, .. } = error {
                    response
                        .headers
                        .push(rsip::Header::MinExpires(min_s.into()));
                }
                RegisterOutcome {
                    response,
                    error: Some(error),
                    bindings_before: before,
                    bindings_after: after,
                }
            }
        }
    }

    fn apply_register(
        &mut self,
        now: Instant,
        req: &rsip::Request,
        user: &str,
        source: SourceInfo,
    ) -> Result<(), RegisterError> {
        if req.method != rsip::Method::Register {
            return Err(RegisterError::NotRegister);
        }
        let to =
            header_value(req, HeaderKind::To).ok_or(RegisterError::BadHeader { header: "To" })?;
        let to_uri = name_addr_uri(to).ok_or(RegisterError::BadHeader { header: "To" })?;
        let aor = uri_user(to_uri).ok_or(RegisterError::BadHeader { header: "To" })?;
        if aor != user {
            return Err(RegisterError::NotYourAor);
        }
        let call_id = header_value(req, HeaderKind::CallId)
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(RegisterError::BadHeader { header: "Call-ID" })?;
        let cseq = header_value(req, HeaderKind::CSeq)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or(RegisterError::BadHeader { header: "CSeq" })?;
        let expires_header = match header_value(req, HeaderKind::Expires) {
            None => None,
            Some(v) => Some(
                parse_delta_seconds(v.trim())
                    .ok_or(RegisterError::BadHeader { header: "Expires" })?,
            ),
        };
        let mut contacts = Vec::new();
        for value in header_values(req, HeaderKind::Contact) {
            parse_contact_list(value, &mut contacts)
                .map_err(|()| RegisterError::BadHeader { header: "Contact" })?;
        }
        if contacts.is_empty() {
            return Ok(()); // A query: the 200 lists the current bindings.
        }

        let mut list: Vec<Binding> = self.location.get(user).cloned().unwrap_or_default();
        list.retain(|b| b.expires_at > now);

        if contacts.contains(&ContactSpec::Wildcard) {
            if contacts.len() > 1 || expires_header != Some(0) {
                return Err(RegisterError::BadWildcard);
            }
            if list.iter().any(|b| b.call_id == call_id && cseq <= b.cseq) {
                return Err(RegisterError::OutOfOrder);
            }
            self.commit(user, Vec::new());
            return Ok(());
        }

        // Check every expiry before touching anything, so a 423 changes nothing.
        let mut wanted = Vec::with_capacity(contacts.len());
        for c in contacts {
            let ContactSpec::Addr(c) = c else {
                continue;
            };
            let requested = c
                .expires_s
                .or(expires_header)
                .unwrap_or(u64::from(self.config.default_expires_s));
            if requested != 0 && requested < u64::from(self.config.min_expires_s) {
                return Err(RegisterError::IntervalTooBrief {
                    requested_s: requested,
                    min_s: self.config.min_expires_s,
                });
            }
            let granted = requested.min(u64::from(self.config.max_expires_s));
            wanted.push((c, granted));
        }

        let path = {
            let joined = path_values(req).collect::<Vec<_>>().join(", ");
            (!joined.is_empty()).then_some(joined)
        };
        // Bindings added or refreshed by this request; a contact listed twice must not trip the
        // CSeq check against itself.
        let mut touched = vec![false; list.len()];
        for (c, granted) in wanted {
            let found = list.iter().position(|b| same_binding(b, &c));
            if let Some(i) = found {
                if !touched[i] && list[i].call_id == call_id && cseq <= list[i].cseq {
                    return Err(RegisterError::OutOfOrder);
                }
            }
            match (found, granted) {
                (Some(i), 0) => {
                    list.remove(i);
                    touched.remove(i);
                }
                (None, 0) => {}
                (found, granted) => {
                    let binding = Binding {
                        aor_user: user.to_owned(),
                        contact_uri: c.uri,
                        contact_params: c.params,
                        expires_at: now + Duration::from_secs(granted),
                        q_milli: c.q_milli,
                        call_id: call_id.to_owned(),
                        cseq,
                        source: source.addr,
                        transport: source.transport,
                        conn_id: source.conn_id,
                        path: path.clone(),
                    };
                    match found {
                        Some(i) => {
                            list[i] = binding;
                            touched[i] = true;
                        }
                        None => {
                            list.push(binding);
                            touched.push(true);
                        }
                    }
                }
            }
        }
        enforce_limit(&mut list, &mut touched, self.config.max_contacts_per_aor);
        self.commit(user, list);
        Ok(())
    }

    /// The live bindings as records with their remaining lifetime, for the restart file.
    pub fn export(&self, now: Instant) -> Vec<BindingRecord> {
        let mut out = Vec::with_capacity(self.binding_count());
        for list in self.location.values() {
            out.extend(
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .map(|b| b.record(now)),
            );
        }
        out
    }

    /// The live bindings of one user, as [`Registrar::export`] writes them: what an HA pair
    /// shares after each accepted REGISTER (empty once the user has none).
    pub fn export_user(&self, user: &str, now: Instant) -> Vec<BindingRecord> {
        self.lookup(user, now).map(|b| b.record(now)).collect()
    }

    /// Makes `records` the whole set of `user`'s bindings (records of other users are ignored):
    /// the standby of an HA pair applies the active node's [`Registrar::export_user`] with it.
    /// An empty list removes the user. Returns how many bindings were restored.
    pub fn replace_user(
        &mut self,
        now: Instant,
        user: &str,
        records: impl IntoIterator<Item = BindingRecord>,
    ) -> usize {
        self.commit(user, Vec::new());
        self.import(now, records.into_iter().filter(|r| r.aor_user == user))
    }

    /// Restores records written by [`Registrar::export`] (in this or an earlier process),
    /// measuring their remaining lifetime from `now`. Lifetimes are cut to the current maximum, and
    /// a record replaces a binding of the same contact. Connection ids are not restored: the
    /// connections died with the old process. Returns how many bindings were restored.
    pub fn import(
        &mut self,
        now: Instant,
        records: impl IntoIterator<Item = BindingRecord>,
    ) -> usize {
        let max = Duration::from_secs(u64::from(self.config.max_expires_s));
        let mut per_user: HashMap<String, Vec<Binding>> = HashMap::new();
        let mut restored = 0;
        for r in records {
            if r.expires_in.is_zero() || r.aor_user.is_empty() {
                continue;
            }
            let list = per_user.entry(r.aor_user.clone()).or_insert_with(|| {
                let mut l = self.location.get(&r.aor_user).cloned().unwrap_or_default();
                l.retain(|b| b.expires_at > now);
                l
            });
            let spec = ContactAddr {
                uri: r.contact_uri,
                expires_s: None,
                q_milli: r.q_milli,
                params: r.contact_params,
            };
            let found = list.iter().position(|b| same_binding(b, &spec));
            let binding = Binding {
                aor_user: r.aor_user,
                contact_uri: spec.uri,
                contact_params: spec.params,
                expires_at: now + r.expires_in.min(max),
                q_milli: spec.q_milli,
                call_id: r.call_id,
                cseq: r.cseq,
                source: r.source,
                transport: r.transport,
                conn_id: None,
                path: r.path,
            };
            match found {
                Some(i) => list[i] = binding,
                None => list.push(binding),
            }
            restored += 1;
        }
        for (user, mut list) in per_user {
            let mut touched = vec![false; list.len()];
            enforce_limit(&mut list, &mut touched, self.config.max_contacts_per_aor);
            self.commit(&user, list);
        }
        restored
    }
}

fn earliest(list: &[Binding]) -> Option<Instant> {
    list.iter().map(|b| b.expires_at).min()
}

/// Drops bindings beyond `max`: first those this request did not touch, nearest to lapsing first.
fn enforce_limit(list: &mut Vec<Binding>, touched: &mut Vec<bool>, max: usize) {
    let max = max.max(1);
    while list.len() > max {
        let Some(victim) = (0..list.len()).min_by_key(|&i| (touched[i], list[i].expires_at)) else {
            break;
        };
        list.remove(victim);
        touched.remove(victim);
    }
}

/// Whether a Contact names an existing binding. With `+sip.instance` on both sides the instance
/// (and `reg-id`) decides, so a phone whose address changed replaces its old binding instead of
/// adding one; otherwise the URIs are compared (see [`uri_equivalent`]).
fn same_binding(b: &Binding, c: &ContactAddr) -> bool {
    let new_instance = param_value(&c.params, "+sip.instance").map(|v| v.trim_matches('"'));
    match (b.instance_id(), new_instance) {
        (Some(old), Some(new)) => {
            old == new
                && b.reg_id() == param_value(&c.params, "reg-id").and_then(|v| v.parse().ok())
        }
        _ => uri_equivalent(&b.contact_uri, &c.uri),
    }
}

/// A simplified RFC 3261 §19.1.4 comparison: scheme and host case-insensitive, user part exact,
/// URI parameters compared as a set with case-insensitive names and values, headers exact. It errs
/// towards "different", which at worst keeps a duplicate binding until it lapses.
fn uri_equivalent(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    fn split(u: &str) -> Option<(String, &str, String, Vec<String>, &str)> {
        let (scheme, rest) = u.split_once(':')?;
        let (rest, headers) = rest.split_once('?').unwrap_or((rest, ""));
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => ("", rest),
        };
        let mut parts = hostpart.split(';');
        let host = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut params: Vec<String> = parts
            .filter(|p| !p.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        params.sort_unstable();
        Some((scheme.to_ascii_lowercase(), userinfo, host, params, headers))
    }
    match (split(a), split(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Headers the registrar reads, including their RFC 3261 §7.3.3 compact forms, which rsip 0.4
/// leaves as `Other`.
#[derive(Debug, Clone, Copy)]
enum HeaderKind {
    To,
    From,
    CallId,
    CSeq,
    Via,
    Contact,
    Expires,
    Supported,
}

fn header_values(req: &rsip::Request, kind: HeaderKind) -> impl Iterator<Item = &str> {
    use rsip::Header as H;
    req.headers.iter().filter_map(move |h| match (kind, h) {
        (HeaderKind::To, H::To(v)) => Some(v.value()),
        (HeaderKind::From, H::From(v)) => Some(v.value()),
        (HeaderKind::CallId, H::CallId(v)) => Some(v.value()),
        (HeaderKind::CSeq, H::CSeq(v)) => Some(v.value()),
        (HeaderKind::Via, H::Via(v)) => Some(v.value()),
        (HeaderKind::Contact, H::Contact(v)) => Some(v.value()),
        (HeaderKind::Expires, H::Expires(v)) => Some(v.value()),
        (HeaderKind::Supported, H::Supported(v)) => Some(v.value()),
        (kind, H::Other(name, v)) => {
            let compact = match kind {
                HeaderKind::To => "t",
                HeaderKind::From => "f",
                HeaderKind::CallId => "i",
                HeaderKind::Via => "v",
                HeaderKind::Contact => "m",
                HeaderKind::Supported => "k",
                HeaderKind::CSeq | HeaderKind::Expires => return None,
            };
            name.eq_ignore_ascii_case(compact).then_some(v.as_str())
        }
        _ => None,
    })
}

fn header_value(req: &rsip::Request, kind: HeaderKind) -> Option<&str> {
    header_values(req, kind).next()
}

fn path_values(req: &rsip::Request) -> impl Iterator<Item = &str> {
    req.headers.iter().filter_map(|h| match h {
        rsip::Header::Other(name, v) if name.eq_ignore_ascii_case("Path") => Some(v.as_str()),
        _ => None,
    })
}

fn supports_path(req: &rsip::Request) -> bool {
    header_values(req, HeaderKind::Supported)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("path"))
}

/// `delta-seconds`: digits only; absurdly large values saturate (they are capped later anyway).
fn parse_delta_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

/// `qvalue` (RFC 3261 §25.1) in thousandths.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = match int {
        "0" => 0u16,
        "1" => 1,
        _ => return None,
    };
    let mut milli = int * 1000;
    let mut scale = 100;
    for d in frac.bytes() {
        milli += u16::from(d - b'0') * scale;
        scale /= 10;
    }
    (milli <= 1000).then_some(milli)
}

fn format_q(q: u16) -> String {
    let text = format!("{}.{:03}", q / 1000, q % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Splits `s` on `sep` where it is outside quoted strings and angle brackets.
fn split_top_level(s: &str, sep: u8) -> Result<Vec<&str>, ()> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let (mut in_quote, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_quote {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quote = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_quote = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            _ if b == sep && !in_angle => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quote || in_angle {
        return Err(());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// Splits a name-addr / addr-spec header value into the URI and the header-parameter text that
/// follows it (starting at its first `;`, or empty).
fn split_name_addr(value: &str) -> Option<(&str, &str)> {
    let value = value.trim();
    // Find a `<` outside a quoted display name.
    let mut in_quote = false;
    let mut escaped = false;
    for (i, b) in value.bytes().enumerate() {
        if in_quote {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quote = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_quote = true,
            b'<' => {
                let close = value[i..].find('>')? + i;
                let uri = value[i + 1..close].trim();
                let rest = value[close + 1..].trim();
                if !(rest.is_empty() || rest.starts_with(';')) {
                    return None;
                }
                return (!uri.is_empty()).then_some((uri, rest));
            }
            _ => {}
        }
    }
    if in_quote || value.contains(char::is_whitespace) {
        return None; // A display name needs <...>.
    }
    // addr-spec: parameters after the first `;` are header parameters (RFC 3261 §20.10).
    let (uri, rest) = match value.find(';') {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    (!uri.is_empty()).then_some((uri, rest))
}

fn name_addr_uri(value: &str) -> Option<&str> {
    split_name_addr(value).map(|(uri, _)| uri)
}

/// The value of parameter `name` in `;a=b;c` text, case-insensitive name; `Some("")` for a flag.
fn param_value<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    split_top_level(params, b';')
        .ok()?
        .into_iter()
        .find_map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// The user part of a `sip:`/`sips:` URI, percent-decoded.
fn uri_user(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return None;
    }
    let at = rest.rfind('@')?;
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let decoded = percent_decode(user)?;
    (!decoded.is_empty()).then_some(decoded)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses one Contact header value (possibly a comma-separated list) into `out`.
fn parse_contact_list(value: &str, out: &mut Vec<ContactSpec>) -> Result<(), ()> {
    for element in split_top_level(value, b',')? {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        if element == "*" {
            out.push(ContactSpec::Wildcard);
            continue;
        }
        let (uri, param_text) = split_name_addr(element).ok_or(())?;
        let mut addr = ContactAddr {
            uri: uri.to_owned(),
            expires_s: None,
            q_milli: None,
            params: String::new(),
        };
        for p in split_top_level(param_text, b';')?.into_iter().skip(1) {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let (name, v) = p
                .split_once('=')
                .map_or((p, ""), |(n, v)| (n.trim(), v.trim()));
            if name.eq_ignore_ascii_case("expires") {
                addr.expires_s = Some(parse_delta_seconds(v).ok_or(())?);
            } else if name.eq_ignore_ascii_case("q") {
                addr.q_milli = Some(parse_q(v).ok_or(())?);
            } else {
                addr.params.push(';');
                addr.params.push_str(p);
            }
        }
        out.push(ContactSpec::Addr(addr));
    }
    Ok(())
}

/// Builds a response to `req` carrying its Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2),
/// with a To tag added when the request had none, and `Content-Length: 0` (replace it if you add
/// a body).
///
/// The status is built as `StatusCode::Other(code, reason)` so the reason phrase is the one given
/// (rsip's named variants would print e.g. `IntervalTooBrief`); compare responses with
/// `status_code.code()`. Meant to move to a shared response module when the message layer lands.
pub fn make_response(req: &rsip::Request, code: u16, reason: &str) -> rsip::Response {
    use rsip::headers as h;
    let mut headers = rsip::Headers::default();
    for v in header_values(req, HeaderKind::Via) {
        headers.push(rsip::Header::Via(h::Via::new(v)));
    }
    if let Some(v) = header_value(req, HeaderKind::From) {
        headers.push(rsip::Header::From(h::From::new(v)));
    }
    if let Some(v) = header_value(req, HeaderKind::To) {
        let has_tag = split_name_addr(v)
            .and_then(|(_, params)| param_value(params, "tag"))
            .is_some();
        let value = if has_tag {
            v.to_owned()
        } else {
            format!("{v};tag={}", to_tag(req))
        };
        headers.push(rsip::Header::To(h::To::new(value)));
    }
    if let Some(v) = header_value(req, HeaderKind::CallId) {
        headers.push(rsip::Header::CallId(h::CallId::new(v)));
    }
    if let Some(v) = header_value(req, HeaderKind::CSeq) {
        headers.push(rsip::Header::CSeq(h::CSeq::new(v)));
    }
    headers.push(rsip::Header::ContentLength(h::ContentLength::from(0)));
    rsip::Response {
        status_code: rsip::StatusCode::Other(code, reason.to_owned()),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// A To tag derived from the request, so a retransmitted request gets the same tag.
fn to_tag(req: &rsip::Request) -> String {
    let mut h = DefaultHasher::new();
    header_value(req, HeaderKind::CallId).hash(&mut h);
    header_value(req, HeaderKind::CSeq).hash(&mut h);
    header_value(req, HeaderKind::From).hash(&mut h);
    header_value(req, HeaderKind::Via).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A binding as stored across restarts: times are remaining lifetimes, not [`Instant`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRecord {
    /// See [`Binding::aor_user`].
    pub aor_user: String,
    /// See [`Binding::contact_uri`].
    pub contact_uri: String,
    /// See [`Binding::contact_params`].
    pub contact_params: String,
    /// Lifetime left when exported.
    pub expires_in: Duration,
    /// See [`Binding::q_milli`].
    pub q_milli: Option<u16>,
    /// See [`Binding::call_id`].
    pub call_id: String,
    /// See [`Binding::cseq`].
    pub cseq: u32,
    /// See [`Binding::source`].
    pub source: SocketAddr,
    /// See [`Binding::transport`].
    pub transport: Transport,
    /// See [`Binding::path`].
    pub path: Option<String>,
}

/// First line of the persistence format; bump the version when fields change.
pub const RECORDS_HEADER: &str = "#switchboard-bindings v1";
const RECORD_FIELDS: usize = 10;

/// Why a bindings file could not be read. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// The first line is not a bindings header at all.
    #[error("line 1: not a bindings file (expected {RECORDS_HEADER:?})")]
    NotBindings,
    /// The header names another version.
    #[error("line 1: unsupported bindings file version")]
    UnsupportedVersion,
    /// A line does not have the expected number of tab-separated fields.
    #[error("line {line}: expected {RECORD_FIELDS} fields, found {found}")]
    FieldCount {
        /// Line number.
        line: usize,
        /// Fields found.
        found: usize,
    },
    /// A field does not parse.
    #[error("line {line}: bad {field}")]
    BadField {
        /// Line number.
        line: usize,
        /// Field name.
        field: &'static str,
    },
    /// A backslash escape other than `\\`, `\t`, `\n`, `\r`.
    #[error("line {line}: bad escape")]
    BadEscape {
        /// Line number.
        line: usize,
    },
}

impl BindingRecord {
    /// Writes records in the line format: a header line, then one record per line with the
    /// tab-separated fields user, contact URI, contact params, remaining ms, q (thousandths or
    /// empty), Call-ID, CSeq, source, transport, Path (or empty). Backslash, tab, CR and LF in
    /// fields are escaped.
    pub fn to_text(records: &[BindingRecord]) -> String {
        let mut out = String::with_capacity(64 + records.len() * 200);
        out.push_str(RECORDS_HEADER);
        out.push('\n');
        for r in records {
            r.write_line(&mut out);
        }
        out
    }

    fn write_line(&self, out: &mut String) {
        let expires_ms = u64::try_from(self.expires_in.as_millis()).unwrap_or(u64::MAX);
        let q = self.q_milli.map(|q| q.to_string()).unwrap_or_default();
        let fields: [&str; RECORD_FIELDS] = [
            &self.aor_user,
            &self.contact_uri,
            &self.contact_params,
            &expires_ms.to_string(),
            &q,
            &self.call_id,
            &self.cseq.to_string(),
            &self.source.to_string(),
            self.transport.as_token(),
            self.path.as_deref().unwrap_or(""),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            escape_into(out, f);
        }
        out.push('\n');
    }

    /// Reads [`BindingRecord::to_text`]'s format. Blank lines are skipped; any error names its line.
    pub fn from_text(text: &str) -> Result<Vec<BindingRecord>, RecordsError> {
        let mut lines = text.lines();
        match lines.next() {
            Some(h) if h == RECORDS_HEADER => {}
            Some(h) if h.starts_with("#switchboard-bindings ") => {
                return Err(RecordsError::UnsupportedVersion)
            }
            _ => return Err(RecordsError::NotBindings),
        }
        let mut records = Vec::new();
        for (idx, raw) in lines.enumerate() {
            let line = idx + 2;
            if raw.trim().is_empty() {
                continue;
            }
            let fields: Vec<String> = raw
                .split('\t')
                .map(|f| unescape(f).ok_or(RecordsError::BadEscape { line }))
                .collect::<Result<_, _>>()?;
            if fields.len() != RECORD_FIELDS {
                return Err(RecordsError::FieldCount {
                    line,
                    found: fields.len(),
                });
            }
            let bad = |field| RecordsError::BadField { line, field };
            let [user, uri, params, expires, q, call_id, cseq, source, transport, path] =
                <[String; RECORD_FIELDS]>::try_from(fields).map_err(|_| bad("record"))?;
            if user.is_empty() {
                return Err(bad("user"));
            }
            if uri.is_empty() {
                return Err(bad("contact"));
            }
            records.push(BindingRecord {
                aor_user: user,
                contact_uri: uri,
                contact_params: params,
                expires_in: Duration::from_millis(
                    expires.parse().map_err(|_| bad("expires_in_ms"))?,
                ),
                q_milli: if q.is_empty() {
                    None
                } else {
                    Some(q.parse().ok().filter(|q| *q <= 1000).ok_or(bad("q"))?)
                },
                call_id,
                cseq: cseq.parse().map_err(|_| bad("cseq"))?,
                source: source.parse().map_err(|_| bad("source"))?,
                transport: Transport::from_token(&transport).ok_or(bad("transport"))?,
                path: (!path.is_empty()).then_some(path),
            });
        }
        Ok(records)
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

fn uncount_ip(map: &mut HashMap<std::net::IpAddr, u32>, ip: std::net::IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "12345.qh.gov.cn";

    fn at(secs: u64) -> Instant {
        Instant::from_origin(Duration::from_secs(secs))
    }

    fn udp(addr: &str) -> SourceInfo {
        SourceInfo {
            addr: addr.parse().unwrap(),
            transport: Transport::Udp,
            conn_id: None,
        }
    }

    fn src() -> SourceInfo {
        udp("10.0.0.5:5060")
    }

    /// A REGISTER for `user` with the given Call-ID, CSeq and extra header lines.
    fn register(user: &str, call_id: &str, cseq: u32, extra: &[&str]) -> rsip::Request {
        let mut raw = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK{cseq}\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKouter\r\n\
             From: \"Agent\" <sip:{user}@{DOMAIN}>;tag=ft\r\n\
             To: \"Agent\" <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n"
        );
        for line in extra {
            raw.push_str(line);
            raw.push_str("\r\n");
        }
        raw.push_str("Content-Length: 0\r\n\r\n");
        rsip::Request::try_from(raw.as_str()).unwrap()
    }

    fn code(o: &RegisterOutcome) -> u16 {
        o.response.status_code.code()
    }

    fn contacts(resp: &rsip::Response) -> Vec<String> {
        resp.headers
            .iter()
            .filter_map(|h| match h {
                rsip::Header::Contact(c) => Some(c.value().to_owned()),
                _ => None,
            })
            .collect()
    }

    fn uris(r: &Registrar, user: &str, now: Instant) -> Vec<String> {
        r.lookup(user, now).map(|b| b.contact_uri.clone()).collect()
    }

    #[test]
    fn register_then_query() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let req = register(
            "1001",
            "c1",
            1,
            &["Contact: <sip:1001@10.0.0.5:5060;transport=udp>"],
        );
        let o = r.handle_register(at(0), &req, "1001", src());
        assert_eq!(code(&o), 200, "{:?}", o.error);
        assert_eq!((o.bindings_before, o.bindings_after), (0, 1));
        assert_eq!(
            contacts(&o.response),
            vec!["<sip:1001@10.0.0.5:5060;transport=udp>;expires=3600"]
        );
        let text = o.response.to_string();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        // Both Vias in order, From, To with a tag, Call-ID, CSeq.
        let vias: Vec<_> = text.lines().filter(|l| l.starts_with("Via:")).collect();
        assert_eq!(vias.len(), 2);
        assert!(vias[0].contains("branch=z9hG4bK1"));
        assert!(text.contains("From: \"Agent\" <sip:1001@12345.qh.gov.cn>;tag=ft"));
        assert!(text.contains("To: \"Agent\" <sip:1001@12345.qh.gov.cn>;tag="));
        assert!(text.contains("Call-ID: c1"));
        assert!(text.contains("CSeq: 1 REGISTER"));
        assert!(text.contains("Content-Length: 0"));

        let b = r.lookup("1001", at(10)).next().unwrap();
        assert_eq!(b.aor_user, "1001");
        assert_eq!(b.expires_at, at(3600));
        assert_eq!(b.source, "10.0.0.5:5060".parse().unwrap());
        assert_eq!(b.transport, Transport::Udp);

        // A query 100 s later shows the remaining time and changes nothing.
        let q = r.handle_register(at(100), &register("1001", "c9", 1, &[]), "1001", src());
        assert_eq!(code(&q), 200);
        assert_eq!(
            contacts(&q.response),
            vec!["<sip:1001@10.0.0.5:5060;transport=udp>;expires=3500"]
        );
        assert_eq!(r.binding_count(), 1);
    }

    #[test]
    fn to_must_be_the_authenticated_user() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let req = register("1002", "c1", 1, &["Contact: <sip:x@10.0.0.5>"]);
        let o = r.handle_register(at(0), &req, "1001", src());
        assert_eq!(code(&o), 403);
        assert_eq!(o.error, Some(RegisterError::NotYourAor));
        assert_eq!(r.binding_count(), 0);
        // Percent-encoding in the AOR user is decoded before comparing.
        let req = register("10%301", "c1", 1, &["Contact: <sip:x@10.0.0.5>"]);
        assert_eq!(code(&r.handle_register(at(0), &req, "1001", src())), 200);
    }

    #[test]
    fn several_contacts_in_headers_and_lists() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let req = register(
            "1001",
            "c1",
            1,
            &[
                "Expires: 1800",
                "Contact: \"Desk, left\" <sip:1001@10.0.0.5:5060>;q=0.7, <sip:1001@10.0.0.6>;expires=600",
                "Contact: sip:1001@10.0.0.7;expires=900;+sip.instance=\"<urn:uuid:a,b>\"",
            ],
        );
        let o = r.handle_register(at(0), &req, "1001", src());
        assert_eq!(code(&o), 200, "{:?}", o.error);
        assert_eq!(
            contacts(&o.response),
            vec![
                "<sip:1001@10.0.0.5:5060>;q=0.7;expires=1800",
                "<sip:1001@10.0.0.6>;expires=600",
                "<sip:1001@10.0.0.7>;+sip.instance=\"<urn:uuid:a,b>\";expires=900",
            ]
        );
        let bs: Vec<_> = r.lookup("1001", at(0)).collect();
        assert_eq!(bs[0].q(), Some(0.7));
        assert_eq!(bs[2].instance_id(), Some("<urn:uuid:a,b>"));
        assert_eq!(r.next_expiry(), Some(at(600)));
    }

    #[test]
    fn compact_header_forms() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let raw = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             v: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKc\r\n\
             f: <sip:1001@{DOMAIN}>;tag=1\r\n\
             t: <sip:1001@{DOMAIN}>\r\n\
             i: compact-1\r\n\
             CSeq: 3 REGISTER\r\n\
             m: <sip:1001@10.0.0.5:5060;transport=tcp>\r\n\
             l: 0\r\n\r\n"
        );
        let req = rsip::Request::try_from(raw.as_str()).unwrap();
        let source = SourceInfo {
            addr: "10.0.0.5:40000".parse().unwrap(),
            transport: Transport::Tcp,
            conn_id: Some(42),
        };
        let o = r.handle_register(at(0), &req, "1001", source);
        assert_eq!(code(&o), 200, "{:?}", o.error);
        let text = o.response.to_string();
        assert!(text.contains("Via: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKc"));
        assert!(text.contains("Call-ID: compact-1"));
        assert!(text.contains(";tag="));
        let b = r.lookup("1001", at(1)).next().unwrap();
        assert_eq!(b.call_id, "compact-1");
        assert_eq!(b.conn_id, Some(42));
        assert_eq!(b.transport, Transport::Tcp);
    }

    #[test]
    fn expires_zero_removes_one_contact() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let req = register(
            "1001",
            "c1",
            1,
            &["Contact: <sip:1001@10.0.0.5>, <sip:1001@10.0.0.6>"],
        );
        r.handle_register(at(0), &req, "1001", src());
        // Header Expires: 0 applies, but a contact's own expires wins.
        let req = register(
            "1001",
            "c1",
            2,
            &[
                "Expires: 0",
                "Contact: <sip:1001@10.0.0.5>",
                "Contact: <sip:1001@10.0.0.6>;expires=120",
            ],
        );
        let o = r.handle_register(at(10), &req, "1001", src());
        assert_eq!(code(&o), 200, "{:?}", o.error);
        assert_eq!(uris(&r, "1001", at(10)), vec!["sip:1001@10.0.0.6"]);
        assert_eq!(
            contacts(&o.response),
            vec!["<sip:1001@10.0.0.6>;expires=120"]
        );
        // Removing the last one: the user goes offline.
        let req = register("1001", "c1", 3, &["Contact: <sip:1001@10.0.0.6>;expires=0"]);
        let o = r.handle_register(at(20), &req, "1001", src());
        assert_eq!(code(&o), 200);
        assert_eq!((o.bindings_before, o.bindings_after), (1, 0));
        assert!(contacts(&o.response).is_empty());
        assert_eq!(r.user_count(), 0);
        assert_eq!(r.next_expiry(), None);
        // Removing a contact that is not there is fine.
        let req = register("1001", "c1", 4, &["Contact: <sip:1001@10.0.0.9>;expires=0"]);
        assert_eq!(code(&r.handle_register(at(20), &req, "1001", src())), 200);
    }

    #[test]
    fn wildcard_rules() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let add = register(
            "1001",
            "c1",
            5,
            &["Contact: <sip:1001@10.0.0.5>, <sip:1001@10.0.0.6>"],
        );
        r.handle_register(at(0), &add, "1001", src());

        for extra in [
            &["Contact: *"][..],
            &["Expires: 60", "Contact: *"][..],
            &["Expires: 0", "Contact: *, <sip:1001@10.0.0.7>"][..],
            &["Expires: 0", "Contact: *", "Contact: <sip:1001@10.0.0.7>"][..],
        ] {
            let o = r.handle_register(at(1), &register("1001", "c2", 1, extra), "1001", src());
            assert_eq!(code(&o), 400, "{extra:?}");
            assert_eq!(o.error, Some(RegisterError::BadWildcard));
        }
        assert_eq!(r.lookup("1001", at(1)).count(), 2);

        // Same Call-ID, old CSeq: refused, nothing removed.
        let old = register("1001", "c1", 5, &["Expires: 0", "Contact: *"]);
        let o = r.handle_register(at(1), &old, "1001", src());
        assert_eq!(code(&o), 500);
        assert_eq!(r.lookup("1001", at(1)).count(), 2);

        let ok = register("1001", "c1", 6, &["Expires: 0", "Contact: *"]);
        let o = r.handle_register(at(1), &ok, "1001", src());
        assert_eq!(code(&o), 200);
        assert_eq!((o.bindings_before, o.bindings_after), (2, 0));
        assert_eq!(r.user_count(), 0);
    }

    #[test]
    fn call_id_and_cseq_ordering() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let c = "Contact: <sip:1001@10.0.0.5>";
        r.handle_register(at(0), &register("1001", "c1", 10, &[c]), "1001", src());
        // Same Call-ID, equal or lower CSeq: 500, binding unchanged.
        for cseq in [10, 9] {
            let req = register("1001", "c1", cseq, &["Expires: 0", c]);
            let o = r.handle_register(at(5), &req, "1001", src());
            assert_eq!(code(&o), 500);
            assert_eq!(o.error, Some(RegisterError::OutOfOrder));
            assert_eq!(r.lookup("1001", at(5)).count(), 1);
        }
        // Different Call-ID (phone rebooted): any CSeq updates.
        let req = register("1001", "c2", 1, &["Expires: 300", c]);
        assert_eq!(code(&r.handle_register(at(5), &req, "1001", src())), 200);
        let b = r.lookup("1001", at(5)).next().unwrap();
        assert_eq!(
            (b.call_id.as_str(), b.cseq, b.expires_at),
            ("c2", 1, at(305))
        );
        // A contact listed twice in one request is not out of order with itself.
        let req = register(
            "1001",
            "c2",
            2,
            &[c, "Contact: <sip:1001@10.0.0.5>;expires=200"],
        );
        let o = r.handle_register(at(6), &req, "1001", src());
        assert_eq!(code(&o), 200, "{:?}", o.error);
        assert_eq!(
            contacts(&o.response),
            vec!["<sip:1001@10.0.0.5>;expires=200"]
        );
    }

    #[test]
    fn interval_too_brief_and_cap() {
        let mut r = Registrar::new(RegistrarConfig {
            min_expires_s: 60,
            max_expires_s: 3600,
            ..RegistrarConfig::default()
        });
        let ok = register(
            "1001",
            "c1",
            1,
            &["Contact: <sip:1001@10.0.0.5>;expires=99999999999"],
        );
        let o = r.handle_register(at(0), &ok, "1001", src());
        assert_eq!(
            contacts(&o.response),
            vec!["<sip:1001@10.0.0.5>;expires=3600"]
        );

        // One brief contact spoils the whole request.
        let brief = register(
            "1001",
            "c1",
            2,
            &["Contact: <sip:1001@10.0.0.6>, <sip:1001@10.0.0.5>;expires=30"],
        );
        let o = r.handle_register(at(1), &brief, "1001", src());
        assert_eq!(code(&o), 423);
        assert_eq!(
            o.error,
            Some(RegisterError::IntervalTooBrief {
                requested_s: 30,
                min_s: 60
            })
        );
        let text = o.response.to_string();
        assert!(text.starts_with("SIP/2.0 423 Interval Too Brief"), "{text}");
        assert!(text.contains("Min-Expires: 60"));
        assert_eq!(uris(&r, "1001", at(1)), vec!["sip:1001@10.0.0.5"]);
        // Expires header too.
        let o = r.handle_register(
            at(1),
            &register(
                "1001",
                "c1",
                3,
                &["Expires: 1", "Contact: <sip:1001@10.0.0.6>"],
            ),
            "1001",
            src(),
        );
        assert_eq!(code(&o), 423);
    }

    #[test]
    fn malformed_requests_get_400() {
        let mut r = Registrar::new(RegistrarConfig::default());
        for extra in [
            &["Expires: soon", "Contact: <sip:1001@10.0.0.5>"][..],
            &["Contact: <sip:1001@10.0.0.5>;expires=-1"][..],
            &["Contact: <sip:1001@10.0.0.5>;q=1.5"][..],
            &["Contact: <sip:1001@10.0.0.5"][..],
            &["Contact: Display Name sip:1001@10.0.0.5"][..],
        ] {
            let o = r.handle_register(at(0), &register("1001", "c1", 1, extra), "1001", src());
            assert_eq!(code(&o), 400, "{extra:?}");
            assert!(matches!(o.error, Some(RegisterError::BadHeader { .. })));
        }
        let invite = rsip::Request::try_from(
            "INVITE sip:1001@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:1001@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
        )
        .unwrap();
        assert_eq!(code(&r.handle_register(at(0), &invite, "1001", src())), 405);
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn instance_id_replaces_binding_from_new_address() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
        let first = register(
            "1001",
            "boot1",
            1,
            &[&format!("Contact: <sip:1001@10.0.0.5:5060>;{inst}")],
        );
        r.handle_register(at(0), &first, "1001", src());
        // After a reboot the phone has a new port and Call-ID but the same instance.
        let second = register(
            "1001",
            "boot2",
            1,
            &[&format!("Contact: <sip:1001@10.0.0.5:5070>;{inst}")],
        );
        let o = r.handle_register(at(10), &second, "1001", udp("10.0.0.5:5070"));
        assert_eq!(code(&o), 200);
        assert_eq!(uris(&r, "1001", at(10)), vec!["sip:1001@10.0.0.5:5070"]);
        assert_eq!(r.lookup("1001", at(10)).next().unwrap().source.port(), 5070);
        // Without instance ids, a different URI is a second binding.
        let third = register("1001", "boot2", 2, &["Contact: <sip:1001@10.0.0.5:5080>"]);
        r.handle_register(at(11), &third, "1001", src());
        assert_eq!(r.lookup("1001", at(11)).count(), 2);
    }

    #[test]
    fn contact_limit_drops_stale_bindings_first() {
        let mut r = Registrar::new(RegistrarConfig {
            max_contacts_per_aor: 2,
            ..RegistrarConfig::default()
        });
        let reg = |r: &mut Registrar, now, port: u16, cseq, expires: u32| {
            let c = format!("Contact: <sip:1001@10.0.0.5:{port}>;expires={expires}");
            r.handle_register(at(now), &register("1001", "c", cseq, &[&c]), "1001", src())
        };
        reg(&mut r, 0, 5001, 1, 600);
        reg(&mut r, 1, 5002, 2, 300);
        let o = reg(&mut r, 2, 5003, 3, 900);
        assert_eq!(code(&o), 200);
        // 5002 lapses first, so it goes.
        assert_eq!(
            uris(&r, "1001", at(2)),
            vec!["sip:1001@10.0.0.5:5001", "sip:1001@10.0.0.5:5003"]
        );
        // Even a short new registration is kept over older ones.
        reg(&mut r, 3, 5004, 4, 60);
        assert_eq!(
            uris(&r, "1001", at(3)),
            vec!["sip:1001@10.0.0.5:5003", "sip:1001@10.0.0.5:5004"]
        );
    }

    #[test]
    fn lookup_expire_and_next_expiry() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let reg = |r: &mut Registrar, user: &str, now, contact: &str| {
            let c = format!("Contact: {contact}");
            let o = r.handle_register(
                at(now),
                &register(user, "c", now as u32 + 1, &[&c]),
                user,
                src(),
            );
            assert_eq!(code(&o), 200);
        };
        reg(&mut r, "1001", 0, "<sip:1001@10.0.0.5>;expires=100");
        reg(&mut r, "1001", 0, "<sip:1001@10.0.0.6>;expires=300");
        reg(&mut r, "1002", 50, "<sip:1002@10.0.0.7>;expires=100");
        assert_eq!(r.next_expiry(), Some(at(100)));
        // Lapsed bindings are hidden even before expire() runs.
        assert_eq!(uris(&r, "1001", at(100)), vec!["sip:1001@10.0.0.6"]);
        assert!(r.expire(at(99)).is_empty());
        assert!(r.expire(at(100)).is_empty(), "1001 still has a binding");
        assert_eq!(r.binding_count(), 2);
        assert_eq!(r.next_expiry(), Some(at(150)));
        assert_eq!(r.expire(at(150)), vec!["1002".to_owned()]);
        assert_eq!(r.next_expiry(), Some(at(300)));
        // A refresh moves the deadline.
        reg(&mut r, "1001", 200, "<sip:1001@10.0.0.6>;expires=600");
        assert_eq!(r.next_expiry(), Some(at(800)));
        assert!(r.expire(at(300)).is_empty());
        assert_eq!(r.expire(at(10_000)), vec!["1001".to_owned()]);
        assert_eq!(r.user_count(), 0);
        assert_eq!(r.next_expiry(), None);
        assert_eq!(r.lookup("nobody", at(0)).count(), 0);
    }

    #[test]
    fn path_is_stored_and_echoed_when_supported() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let req = register(
            "1001",
            "c1",
            1,
            &[
                "Supported: outbound, path",
                "Path: <sip:edge1.example.org;lr>",
                "Path: <sip:edge2.example.org;lr>",
                "Contact: <sip:1001@10.0.0.5>",
            ],
        );
        let o = r.handle_register(at(0), &req, "1001", src());
        let text = o.response.to_string();
        assert!(text.contains("Path: <sip:edge1.example.org;lr>"), "{text}");
        assert_eq!(
            r.lookup("1001", at(0)).next().unwrap().path.as_deref(),
            Some("<sip:edge1.example.org;lr>, <sip:edge2.example.org;lr>")
        );
        let req = register(
            "1001",
            "c1",
            2,
            &["Path: <sip:edge1;lr>", "Contact: <sip:1001@10.0.0.5>"],
        );
        let o = r.handle_register(at(0), &req, "1001", src());
        assert!(!o.response.to_string().contains("Path:"));
    }

    #[test]
    fn make_response_keeps_existing_tag_and_is_deterministic() {
        let req = register("1001", "c1", 1, &[]);
        let a = make_response(&req, 401, "Unauthorized");
        let b = make_response(&req, 401, "Unauthorized");
        assert_eq!(a, b, "a retransmission gets the same To tag");
        assert!(a.to_string().starts_with("SIP/2.0 401 Unauthorized\r\n"));
        let other = make_response(&register("1001", "c2", 1, &[]), 200, "OK");
        let tag = |r: &rsip::Response| {
            r.to_string()
                .lines()
                .find(|l| l.starts_with("To:"))
                .unwrap()
                .to_owned()
        };
        assert_ne!(tag(&a), tag(&other));

        let raw = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\n\
                   From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;Tag=keep\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let resp = make_response(&rsip::Request::try_from(raw).unwrap(), 200, "OK");
        assert!(resp.to_string().contains("To: <sip:b@x>;Tag=keep\r\n"));
    }

    #[test]
    fn export_import_across_a_restart() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let req = register(
            "1001",
            "call\tid\\with\nodd bytes",
            7,
            &[
                "Path: <sip:edge;lr>",
                "Contact: <sip:1001@10.0.0.5>;q=0.25;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=600",
            ],
        );
        let tcp = SourceInfo {
            addr: "[2001:db8::5]:5061".parse().unwrap(),
            transport: Transport::Tls,
            conn_id: Some(9),
        };
        assert_eq!(code(&r.handle_register(at(1000), &req, "1001", tcp)), 200);
        let req2 = register(
            "1002",
            "c2",
            1,
            &["Contact: <sip:1002@10.0.0.6>;expires=60"],
        );
        r.handle_register(at(1000), &req2, "1002", src());

        let records = r.export(at(1100));
        assert_eq!(records.len(), 1, "1002 lapsed at 1060 and is not exported");
        assert_eq!(records[0].expires_in, Duration::from_secs(500));
        let text = BindingRecord::to_text(&records);
        assert!(text.starts_with("#switchboard-bindings v1\n"));
        assert_eq!(text.lines().count(), 2, "escaped newline stays on one line");
        let back = BindingRecord::from_text(&text).unwrap();
        assert_eq!(back, records);

        // The new process's time line starts again at zero.
        let mut fresh = Registrar::new(RegistrarConfig::default());
        assert_eq!(fresh.import(at(5), back), 1);
        let b = fresh.lookup("1001", at(5)).next().unwrap();
        assert_eq!(b.expires_at, at(505));
        assert_eq!(b.call_id, "call\tid\\with\nodd bytes");
        assert_eq!(b.q_milli, Some(250));
        assert_eq!(b.reg_id(), Some(1));
        assert_eq!(b.transport, Transport::Tls);
        assert_eq!(b.conn_id, None);
        assert_eq!(b.source, "[2001:db8::5]:5061".parse().unwrap());
        assert_eq!(b.path.as_deref(), Some("<sip:edge;lr>"));
        assert_eq!(fresh.next_expiry(), Some(at(505)));
        // The phone's next refresh, same Call-ID and higher CSeq, is accepted.
        let refresh = register(
            "1001",
            "call\tid\\with\nodd bytes",
            8,
            &["Contact: <sip:1001@10.0.0.5>;+sip.instance=\"<urn:uuid:1>\";reg-id=1"],
        );
        assert_eq!(
            code(&fresh.handle_register(at(6), &refresh, "1001", src())),
            200
        );
        assert_eq!(fresh.binding_count(), 1);
    }

    #[test]
    fn export_user_and_replace_user_carry_one_aor_whole() {
        let mut active = Registrar::new(RegistrarConfig::default());
        let two = register(
            "1001",
            "c1",
            1,
            &["Contact: <sip:1001@10.0.0.5>;expires=600, <sip:1001@10.0.0.7>;expires=300"],
        );
        assert_eq!(
            code(&active.handle_register(at(0), &two, "1001", src())),
            200
        );
        let other = register("1002", "c2", 1, &["Contact: <sip:1002@10.0.0.6>"]);
        active.handle_register(at(0), &other, "1002", src());

        let mut standby = Registrar::new(RegistrarConfig::default());
        let rows = active.export_user("1001", at(100));
        assert_eq!(rows.len(), 2);
        assert_eq!(standby.replace_user(at(0), "1001", rows), 2);
        assert_eq!(standby.binding_count(), 2);
        // Lifetimes are those left at export, measured from the standby's clock.
        assert_eq!(standby.next_expiry(), Some(at(200)));
        // A record of another user in the list is not this user's to replace.
        let stray = active.export_user("1002", at(100));
        assert_eq!(standby.replace_user(at(0), "1001", stray), 0);
        assert_eq!(standby.binding_count(), 0, "1001 now has no binding");
        assert_eq!(standby.next_expiry(), None);

        // One contact removed on the active node: the standby drops it too, not just adds.
        standby.replace_user(at(0), "1001", active.export_user("1001", at(0)));
        let drop_one = register("1001", "c1", 2, &["Contact: <sip:1001@10.0.0.7>;expires=0"]);
        assert_eq!(
            code(&active.handle_register(at(1), &drop_one, "1001", src())),
            200
        );
        standby.replace_user(at(1), "1001", active.export_user("1001", at(1)));
        assert_eq!(uris(&standby, "1001", at(1)), vec!["sip:1001@10.0.0.5"]);
        assert!(!standby.has_source_ip("10.0.0.6".parse().unwrap()));
        // Unregistered: an empty export removes the user.
        let gone = register("1001", "c1", 3, &["Contact: *", "Expires: 0"]);
        assert_eq!(
            code(&active.handle_register(at(2), &gone, "1001", src())),
            200
        );
        assert!(active.export_user("1001", at(2)).is_empty());
        standby.replace_user(at(2), "1001", Vec::new());
        assert_eq!(standby.user_count(), 0);
        assert!(!standby.has_source_ip("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn import_caps_lifetimes_and_skips_empty_ones() {
        let mut r = Registrar::new(RegistrarConfig {
            max_expires_s: 100,
            ..RegistrarConfig::default()
        });
        let rec = |uri: &str, secs| BindingRecord {
            aor_user: "1001".into(),
            contact_uri: uri.into(),
            contact_params: String::new(),
            expires_in: Duration::from_secs(secs),
            q_milli: None,
            call_id: "c".into(),
            cseq: 1,
            source: "10.0.0.5:5060".parse().unwrap(),
            transport: Transport::Udp,
            path: None,
        };
        let n = r.import(
            at(0),
            vec![rec("sip:a@h", 1000), rec("sip:b@h", 0), rec("sip:a@h", 50)],
        );
        assert_eq!(n, 2);
        // The later record for the same contact wins.
        let bs: Vec<_> = r.lookup("1001", at(0)).collect();
        assert_eq!(bs.len(), 1);
        assert_eq!(bs[0].expires_at, at(50));
    }

    #[test]
    fn records_text_errors_name_the_line() {
        assert_eq!(BindingRecord::from_text(""), Err(RecordsError::NotBindings));
        assert_eq!(
            BindingRecord::from_text("#switchboard-bindings v2\n"),
            Err(RecordsError::UnsupportedVersion)
        );
        let good = "1001\tsip:a@h\t\t1000\t\tc\t1\t10.0.0.5:5060\tudp\t";
        let ok = format!("{RECORDS_HEADER}\n\n{good}\n");
        assert_eq!(BindingRecord::from_text(&ok).unwrap().len(), 1);
        let cases = [
            (
                good.replace("\tudp", "\tsctp"),
                RecordsError::BadField {
                    line: 3,
                    field: "transport",
                },
            ),
            (
                good.replace("\t1000\t", "\tlots\t"),
                RecordsError::BadField {
                    line: 3,
                    field: "expires_in_ms",
                },
            ),
            (
                good.replace("10.0.0.5:5060", "nowhere"),
                RecordsError::BadField {
                    line: 3,
                    field: "source",
                },
            ),
            (
                good.replace("\t\tc\t", "\t1001\tc\t"),
                RecordsError::BadField {
                    line: 3,
                    field: "q",
                },
            ),
            (
                good.replace("\tc\t", "\tc\\x\t"),
                RecordsError::BadEscape { line: 3 },
            ),
            (
                good.replace("\tudp\t", "\tudp"),
                RecordsError::FieldCount { line: 3, found: 9 },
            ),
        ];
        for (line, expected) in cases {
            let text = format!("{RECORDS_HEADER}\n{good}\n{line}\n");
            assert_eq!(BindingRecord::from_text(&text), Err(expected.clone()));
            assert!(expected.to_string().starts_with("line 3:"));
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1.001"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q(".5"), None);
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(1000), "1");
        assert_eq!(format_q(0), "0");
        assert_eq!(format_q(125), "0.125");

        assert!(uri_equivalent(
            "sip:1001@HOST.example:5060",
            "SIP:1001@host.example:5060"
        ));
        assert!(uri_equivalent(
            "sip:a@h;transport=UDP;lr",
            "sip:a@h;lr;transport=udp"
        ));
        assert!(!uri_equivalent("sip:A@h", "sip:a@h"));
        assert!(!uri_equivalent("sip:a@h:5060", "sip:a@h"));
        assert!(!uri_equivalent("sip:a@h;transport=tcp", "sip:a@h"));

        assert_eq!(uri_user("sip:1001@h"), Some("1001".into()));
        assert_eq!(uri_user("sips:1001:pw@h;x=y"), Some("1001".into()));
        assert_eq!(uri_user("tel:+8697112345"), None);
        assert_eq!(uri_user("sip:h"), None);
        assert_eq!(uri_user("sip:%zz@h"), None);

        assert_eq!(
            parse_delta_seconds("99999999999999999999999"),
            Some(u64::MAX)
        );
        assert_eq!(parse_delta_seconds(" 5"), None);
    }

    #[test]
    fn binding_stays_lean() {
        // Inline size only; strings add their lengths. Guards against storing rsip types.
        assert!(
            std::mem::size_of::<Binding>() <= 224,
            "{}",
            std::mem::size_of::<Binding>()
        );
    }
}
