//! The four transaction state machines of RFC 3261 §17, with the RFC 6026 `Accepted` states.
//!
//! Each machine is a plain struct: events and `now` go in, [`TxAction`]s come out, and
//! `next_deadline()` says when it next needs `on_timer`. The owner (the proxy) keeps the table, the
//! destinations and one timer queue; the machines know nothing of sockets or of each other.
//!
//! Timers are named as in the RFC (A–K, plus L and M of RFC 6026). T1, T2 and T4 come from config.

use std::time::Duration;

use bytes::Bytes;

use crate::message::{Method, Request, Response};
use crate::time::Instant;

/// T1, T2, T4 (RFC 3261 §17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; the base of every retransmission interval.
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Maximum time a message remains in the network.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: timers B, F, H, J, L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction asks its owner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum TxAction {
    /// Send these bytes to the transaction's peer.
    Send(Bytes),
    /// Hand this response to the transaction user (client transactions only).
    Deliver(Box<Response>),
    /// Timer B/F fired: the request timed out. The TU treats it as a 408.
    Timeout,
    /// Timer H fired: no ACK arrived for a non-2xx final response.
    AckTimeout,
    /// The transaction is over; remove it.
    Terminated,
}

/// The transaction a message belongs to, as §17.1.3 and §17.2.3 match them.
///
/// Client transactions are ours, so their branch is unique: branch plus CSeq method (CANCEL shares the
/// INVITE's branch). Server transactions match on branch, sent-by and method (ACK matches the INVITE),
/// or, for RFC 2543 peers without the magic cookie, on the dialog-identifying fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxKey {
    Client {
        branch: Box<str>,
        method: MethodKey,
    },
    Server {
        branch: Box<str>,
        sent_by_host: Box<str>,
        sent_by_port: u16,
        method: MethodKey,
    },
    /// §17.2.3 fallback for requests whose branch lacks `z9hG4bK`.
    Rfc2543 {
        call_id: Box<str>,
        from_tag: Box<str>,
        cseq: u32,
        via: Box<str>,
        method: MethodKey,
    },
}

/// Method as transaction matching sees it: ACK belongs to the INVITE transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKey {
    Invite,
    Cancel,
    Other(MethodTag),
}

/// A hashable stand-in for [`Method`] (rsip's Method is not `Hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodTag(u8);

impl MethodKey {
    pub fn of(m: Method) -> MethodKey {
        match m {
            Method::Invite | Method::Ack => MethodKey::Invite,
            Method::Cancel => MethodKey::Cancel,
            other => MethodKey::Other(MethodTag(
                Method::all()
                    .iter()
                    .position(|x| *x == other)
                    .unwrap_or(255) as u8,
            )),
        }
    }
}

impl TxKey {
    /// The server transaction a request belongs to.
    pub fn server(req: &Request) -> TxKey {
        let m = &req.meta;
        let method = MethodKey::of(req.method());
        match &m.via.branch {
            Some(b) if m.via.is_rfc3261() => {
                let (h, p) = m.via.sent_by();
                TxKey::Server {
                    branch: b.clone(),
                    sent_by_host: h.to_ascii_lowercase().into(),
                    sent_by_port: p,
                    method,
                }
            }
            _ => TxKey::Rfc2543 {
                call_id: m.call_id.clone(),
                from_tag: m.from_tag.clone().unwrap_or_default(),
                cseq: m.cseq,
                via: format!(
                    "{}:{}:{}",
                    m.via.host,
                    m.via.port.unwrap_or(5060),
                    m.via.branch.as_deref().unwrap_or("")
                )
                .into(),
                method,
            },
        }
    }

    /// The client transaction a response belongs to (our own branch, and the CSeq method).
    pub fn client_for_response(resp: &Response) -> Option<TxKey> {
        Some(TxKey::Client {
            branch: resp.meta.via.branch.clone()?,
            method: MethodKey::of(resp.meta.cseq_method),
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// INVITE client transaction (§17.1.1, RFC 6026 §7.2)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// Sends an INVITE downstream and waits for its final response.
#[derive(Debug)]
pub struct InviteClient {
    state: InviteClientState,
    reliable: bool,
    cfg: TimerConfig,
    request: Bytes,
    /// The INVITE, kept to build the ACK for a non-2xx response and a CANCEL.
    invite: Request,
    ack: Option<Bytes>,
    /// Timer A: deadline and the current interval.
    timer_a: Option<(Instant, Duration)>,
    timer_b: Option<Instant>,
    timer_d: Option<Instant>,
    timer_m: Option<Instant>,
}

impl InviteClient {
    /// Start the transaction: the caller sends the returned bytes.
    pub fn start(
        now: Instant,
        invite: Request,
        reliable: bool,
        cfg: TimerConfig,
    ) -> (Self, Vec<TxAction>) {
        let request = invite.to_bytes();
        let tx = InviteClient {
            state: InviteClientState::Calling,
            reliable,
            cfg,
            request: request.clone(),
            invite,
            ack: None,
            timer_a: (!reliable).then(|| (now + cfg.t1, cfg.t1)),
            timer_b: Some(now + cfg.t1x64()),
            timer_d: None,
            timer_m: None,
        };
        (tx, vec![TxAction::Send(request)])
    }

    pub fn state(&self) -> InviteClientState {
        self.state
    }

    /// The INVITE this transaction sent.
    pub fn request(&self) -> &Request {
        &self.invite
    }

    pub fn on_response(&mut self, now: Instant, resp: Response) -> Vec<TxAction> {
        use InviteClientState::*;
        let status = resp.status();
        match self.state {
            Calling | Proceeding if status < 200 => {
                self.state = Proceeding;
                self.timer_a = None;
                self.timer_b = None;
                vec![TxAction::Deliver(Box::new(resp))]
            }
            Calling | Proceeding if status < 300 => {
                self.state = Accepted;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_m = Some(now + self.cfg.t1x64());
                vec![TxAction::Deliver(Box::new(resp))]
            }
            Calling | Proceeding => {
                self.state = Completed;
                self.timer_a = None;
                self.timer_b = None;
                let ack = build_ack(&self.invite, &resp);
                self.ack = Some(ack.clone());
                self.timer_d = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32)
                    },
                );
                vec![TxAction::Send(ack), TxAction::Deliver(Box::new(resp))]
            }
            // A retransmitted final response: re-ACK it, the TU has it already.
            Completed if status >= 300 => {
                self.ack.clone().map(TxAction::Send).into_iter().collect()
            }
            // RFC 6026: retransmitted 2xx responses go to the TU (the proxy forwards every 2xx).
            Accepted if (200..300).contains(&status) => vec![TxAction::Deliver(Box::new(resp))],
            _ => Vec::new(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.timer_a.map(|(d, _)| d),
            self.timer_b,
            self.timer_d,
            self.timer_m,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<TxAction> {
        let mut out = Vec::new();
        if let Some(b) = self.timer_b {
            if now >= b {
                self.state = InviteClientState::Terminated;
                self.clear();
                out.push(TxAction::Timeout);
                out.push(TxAction::Terminated);
                return out;
            }
        }
        if let Some((d, interval)) = self.timer_a {
            if now >= d {
                let next = interval * 2;
                self.timer_a = Some((now + next, next));
                out.push(TxAction::Send(self.request.clone()));
            }
        }
        let fired = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        if fired(self.timer_d) || fired(self.timer_m) {
            self.state = InviteClientState::Terminated;
            self.clear();
            out.push(TxAction::Terminated);
        }
        out
    }

    /// A CANCEL for this INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq number, Route and top
    /// Via. `None` unless a provisional response has arrived (§9.1: only then may CANCEL be sent).
    pub fn cancel_request(&self) -> Option<Request> {
        (self.state == InviteClientState::Proceeding).then(|| build_cancel(&self.invite))
    }

    fn clear(&mut self) {
        self.timer_a = None;
        self.timer_b = None;
        self.timer_d = None;
        self.timer_m = None;
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3).
pub fn build_ack(invite: &Request, resp: &Response) -> Bytes {
    let mut ack = derived_request(invite, Method::Ack);
    if let Some(to) = resp.header("To") {
        ack.remove_header("To");
        ack.push_header("To", to);
    }
    ack.to_bytes()
}

/// A CANCEL for `invite` (§9.1).
pub fn build_cancel(invite: &Request) -> Request {
    derived_request(invite, Method::Cancel)
}

/// ACK and CANCEL copy the INVITE's Request-URI, top Via, Call-ID, From, To, Route and CSeq number.
fn derived_request(invite: &Request, method: Method) -> Request {
    let mut raw = rsip::Request {
        method,
        uri: invite.raw.uri.clone(),
        version: rsip::Version::V2,
        headers: rsip::Headers::default(),
        body: Vec::new(),
    };
    let mut via_done = false;
    for h in invite.raw.headers.iter() {
        use rsip::Header as H;
        match h {
            H::Via(_) if !via_done => {
                // Only the top Via value.
                let v = invite.header("Via").unwrap_or_default();
                raw.headers.push(H::Via(rsip::headers::Via::from(v)));
                via_done = true;
            }
            H::From(_) | H::To(_) | H::CallId(_) | H::Route(_) | H::MaxForwards(_) => {
                raw.headers.push(h.clone())
            }
            _ => {}
        }
    }
    raw.headers
        .push(rsip::Header::CSeq(rsip::headers::CSeq::from(format!(
            "{} {}",
            invite.meta.cseq, method
        ))));
    let mut meta = invite.meta.clone();
    meta.cseq_method = method;
    Request {
        raw,
        meta,
        uri_text: invite.uri_text.clone(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Non-INVITE client transaction (§17.1.2)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// Sends a non-INVITE request (BYE, CANCEL, OPTIONS …) downstream.
#[derive(Debug)]
pub struct NonInviteClient {
    state: NonInviteClientState,
    reliable: bool,
    cfg: TimerConfig,
    request: Bytes,
    timer_e: Option<(Instant, Duration)>,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
}

impl NonInviteClient {
    pub fn start(
        now: Instant,
        request: Bytes,
        reliable: bool,
        cfg: TimerConfig,
    ) -> (Self, Vec<TxAction>) {
        let tx = NonInviteClient {
            state: NonInviteClientState::Trying,
            reliable,
            cfg,
            request: request.clone(),
            timer_e: (!reliable).then(|| (now + cfg.t1, cfg.t1)),
            timer_f: Some(now + cfg.t1x64()),
            timer_k: None,
        };
        (tx, vec![TxAction::Send(request)])
    }

    pub fn state(&self) -> NonInviteClientState {
        self.state
    }

    pub fn on_response(&mut self, now: Instant, resp: Response) -> Vec<TxAction> {
        use NonInviteClientState::*;
        match self.state {
            Trying | Proceeding if resp.is_provisional() => {
                self.state = Proceeding;
                vec![TxAction::Deliver(Box::new(resp))]
            }
            Trying | Proceeding => {
                self.state = Completed;
                self.timer_e = None;
                self.timer_f = None;
                self.timer_k = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        self.cfg.t4
                    },
                );
                vec![TxAction::Deliver(Box::new(resp))]
            }
            _ => Vec::new(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [self.timer_e.map(|(d, _)| d), self.timer_f, self.timer_k]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<TxAction> {
        let mut out = Vec::new();
        if self.timer_f.is_some_and(|f| now >= f) {
            self.state = NonInviteClientState::Terminated;
            self.timer_e = None;
            self.timer_f = None;
            return vec![TxAction::Timeout, TxAction::Terminated];
        }
        if let Some((d, interval)) = self.timer_e {
            if now >= d {
                // Trying doubles up to T2; Proceeding retransmits every T2 (§17.1.2.2).
                let next = match self.state {
                    NonInviteClientState::Proceeding => self.cfg.t2,
                    _ => (interval * 2).min(self.cfg.t2),
                };
                self.timer_e = Some((now + next, next));
                out.push(TxAction::Send(self.request.clone()));
            }
        }
        if self.timer_k.is_some_and(|k| now >= k) {
            self.state = NonInviteClientState::Terminated;
            self.timer_k = None;
            out.push(TxAction::Terminated);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------------
// INVITE server transaction (§17.2.1, RFC 6026 §7.1)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// Receives an INVITE from upstream and sends its responses, absorbing retransmissions.
#[derive(Debug)]
pub struct InviteServer {
    state: InviteServerState,
    reliable: bool,
    cfg: TimerConfig,
    last_response: Option<Bytes>,
    timer_g: Option<(Instant, Duration)>,
    timer_h: Option<Instant>,
    timer_i: Option<Instant>,
    timer_l: Option<Instant>,
}

impl InviteServer {
    pub fn new(reliable: bool, cfg: TimerConfig) -> Self {
        InviteServer {
            state: InviteServerState::Proceeding,
            reliable,
            cfg,
            last_response: None,
            timer_g: None,
            timer_h: None,
            timer_i: None,
            timer_l: None,
        }
    }

    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// Whether a final response has been sent.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, InviteServerState::Proceeding)
    }

    /// A retransmission of the INVITE arrived.
    pub fn on_invite_retransmit(&mut self) -> Vec<TxAction> {
        match self.state {
            InviteServerState::Proceeding | InviteServerState::Completed => self
                .last_response
                .clone()
                .map(TxAction::Send)
                .into_iter()
                .collect(),
            // Accepted: the 2xx is retransmitted by the UAS end to end, not by us (RFC 6026).
            _ => Vec::new(),
        }
    }

    /// The TU sends a response (status `status`, serialized as `bytes`).
    pub fn send_response(&mut self, now: Instant, status: u16, bytes: Bytes) -> Vec<TxAction> {
        use InviteServerState::*;
        match self.state {
            Proceeding if status < 200 => {
                self.last_response = Some(bytes.clone());
                vec![TxAction::Send(bytes)]
            }
            Proceeding if status < 300 => {
                self.state = Accepted;
                self.last_response = Some(bytes.clone());
                self.timer_l = Some(now + self.cfg.t1x64());
                vec![TxAction::Send(bytes)]
            }
            Proceeding => {
                self.state = Completed;
                self.last_response = Some(bytes.clone());
                self.timer_g = (!self.reliable).then(|| (now + self.cfg.t1, self.cfg.t1));
                self.timer_h = Some(now + self.cfg.t1x64());
                vec![TxAction::Send(bytes)]
            }
            // RFC 6026: further 2xx responses pass through the Accepted state.
            Accepted if (200..300).contains(&status) => vec![TxAction::Send(bytes)],
            _ => Vec::new(),
        }
    }

    /// An ACK matched this transaction (only non-2xx ACKs do: a 2xx ACK has its own branch).
    pub fn on_ack(&mut self, now: Instant) -> Vec<TxAction> {
        if self.state == InviteServerState::Completed {
            self.state = InviteServerState::Confirmed;
            self.timer_g = None;
            self.timer_h = None;
            self.timer_i = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.cfg.t4
                },
            );
        }
        Vec::new()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.timer_g.map(|(d, _)| d),
            self.timer_h,
            self.timer_i,
            self.timer_l,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<TxAction> {
        let mut out = Vec::new();
        if self.timer_h.is_some_and(|h| now >= h) {
            self.state = InviteServerState::Terminated;
            self.timer_g = None;
            self.timer_h = None;
            return vec![TxAction::AckTimeout, TxAction::Terminated];
        }
        if let Some((d, interval)) = self.timer_g {
            if now >= d {
                let next = (interval * 2).min(self.cfg.t2);
                self.timer_g = Some((now + next, next));
                out.extend(self.last_response.clone().map(TxAction::Send));
            }
        }
        let fired = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        if fired(self.timer_i) || fired(self.timer_l) {
            self.state = InviteServerState::Terminated;
            self.timer_i = None;
            self.timer_l = None;
            out.push(TxAction::Terminated);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------------
// Non-INVITE server transaction (§17.2.2)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// Receives a non-INVITE request and sends its responses, absorbing retransmissions.
#[derive(Debug)]
pub struct NonInviteServer {
    state: NonInviteServerState,
    reliable: bool,
    cfg: TimerConfig,
    last_response: Option<Bytes>,
    timer_j: Option<Instant>,
}

impl NonInviteServer {
    pub fn new(reliable: bool, cfg: TimerConfig) -> Self {
        NonInviteServer {
            state: NonInviteServerState::Trying,
            reliable,
            cfg,
            last_response: None,
            timer_j: None,
        }
    }

    pub fn state(&self) -> NonInviteServerState {
        self.state
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self.state,
            NonInviteServerState::Completed | NonInviteServerState::Terminated
        )
    }

    /// A retransmission of the request arrived: Trying absorbs it, later states resend the last
    /// response.
    pub fn on_retransmit(&mut self) -> Vec<TxAction> {
        match self.state {
            NonInviteServerState::Proceeding | NonInviteServerState::Completed => self
                .last_response
                .clone()
                .map(TxAction::Send)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn send_response(&mut self, now: Instant, status: u16, bytes: Bytes) -> Vec<TxAction> {
        use NonInviteServerState::*;
        match self.state {
            Trying | Proceeding if status < 200 => {
                self.state = Proceeding;
                self.last_response = Some(bytes.clone());
                vec![TxAction::Send(bytes)]
            }
            Trying | Proceeding => {
                self.state = Completed;
                self.last_response = Some(bytes.clone());
                self.timer_j = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        self.cfg.t1x64()
                    },
                );
                vec![TxAction::Send(bytes)]
            }
            _ => Vec::new(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timer_j
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<TxAction> {
        if self.timer_j.is_some_and(|j| now >= j) {
            self.state = NonInviteServerState::Terminated;
            self.timer_j = None;
            return vec![TxAction::Terminated];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, Message};

    const INVITE: &str = "INVITE sip:8001@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsbclient1\r\n\
Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKupstream;rport\r\n\
Route: <sip:127.0.0.9;lr>\r\n\
Max-Forwards: 69\r\n\
To: <sip:8001@127.0.0.1>\r\n\
From: <sip:13800000000@127.0.0.2>;tag=ft\r\n\
Call-ID: tx-test@pc\r\n\
CSeq: 7 INVITE\r\n\
Content-Length: 0\r\n\r\n";

    fn invite() -> Request {
        match parse(INVITE.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn response(status: u16) -> Response {
        invite().response(status, "X", Some("tt")).build()
    }

    fn sends(actions: &[TxAction]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, TxAction::Send(_)))
            .count()
    }

    /// Drive a machine to `until`, firing each deadline as it comes; returns (time, actions) pairs.
    fn run_until<T>(
        tx: &mut T,
        until: Instant,
        deadline: impl Fn(&T) -> Option<Instant>,
        fire: impl Fn(&mut T, Instant) -> Vec<TxAction>,
    ) -> Vec<(Duration, Vec<TxAction>)> {
        let mut log = Vec::new();
        while let Some(d) = deadline(tx) {
            if d > until {
                break;
            }
            let a = fire(tx, d);
            log.push((d.since_origin(), a));
        }
        log
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timer_a_ladder_then_timer_b_timeout() {
        let cfg = TimerConfig::default();
        let (mut tx, first) = InviteClient::start(Instant::ZERO, invite(), false, cfg);
        assert_eq!(sends(&first), 1);
        let log = run_until(
            &mut tx,
            Instant::ZERO + ms(40_000),
            |t| t.next_deadline(),
            |t, n| t.on_timer(n),
        );
        let retransmits: Vec<Duration> = log
            .iter()
            .filter(|(_, a)| sends(a) == 1)
            .map(|(t, _)| *t)
            .collect();
        // A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
        assert_eq!(
            retransmits,
            vec![ms(500), ms(1500), ms(3500), ms(7500), ms(15500), ms(31500)]
        );
        let (t, last) = log.last().unwrap();
        assert_eq!(*t, ms(32_000));
        assert_eq!(last, &vec![TxAction::Timeout, TxAction::Terminated]);
        assert_eq!(tx.state(), InviteClientState::Terminated);
    }

    #[test]
    fn reliable_invite_client_never_retransmits() {
        let (mut tx, _) =
            InviteClient::start(Instant::ZERO, invite(), true, TimerConfig::default());
        let log = run_until(
            &mut tx,
            Instant::ZERO + ms(40_000),
            |t| t.next_deadline(),
            |t, n| t.on_timer(n),
        );
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].0, ms(32_000));
    }

    #[test]
    fn lost_invite_recovered_by_retransmission_then_provisional_stops_timers() {
        let (mut tx, _) =
            InviteClient::start(Instant::ZERO, invite(), false, TimerConfig::default());
        // The first INVITE is lost; Timer A retransmits at 500 ms; the 180 arrives after it.
        assert_eq!(sends(&tx.on_timer(Instant::ZERO + ms(500))), 1);
        let a = tx.on_response(Instant::ZERO + ms(520), response(180));
        assert!(matches!(a.as_slice(), [TxAction::Deliver(_)]));
        assert_eq!(tx.state(), InviteClientState::Proceeding);
        assert_eq!(tx.next_deadline(), None, "A and B stop in Proceeding");
        assert!(tx.cancel_request().is_some());
    }

    #[test]
    fn non_2xx_final_is_acked_and_retransmits_reacked_until_timer_d() {
        let (mut tx, _) =
            InviteClient::start(Instant::ZERO, invite(), false, TimerConfig::default());
        let a = tx.on_response(Instant::ZERO + ms(100), response(486));
        assert_eq!(sends(&a), 1);
        let TxAction::Send(ack) = &a[0] else { panic!() };
        let ack = std::str::from_utf8(ack).unwrap();
        assert!(ack.starts_with("ACK sip:8001@127.0.0.1:5070 SIP/2.0\r\n"));
        assert!(ack.contains("CSeq: 7 ACK"));
        assert!(ack.contains("branch=z9hG4bKsbclient1"));
        assert!(!ack.contains("z9hG4bKupstream"), "only the top Via");
        assert!(ack.contains(";tag=tt"), "To carries the response's tag");
        assert!(ack.contains("Route: <sip:127.0.0.9;lr>"));
        // The 486 is lost upstream... the UAS retransmits it: we re-ACK, deliver nothing.
        let again = tx.on_response(Instant::ZERO + ms(600), response(486));
        assert_eq!(again.len(), 1);
        assert_eq!(sends(&again), 1);
        assert_eq!(
            tx.next_deadline(),
            Some(Instant::ZERO + ms(100) + Duration::from_secs(32))
        );
        let end = tx.on_timer(Instant::ZERO + ms(32_100));
        assert_eq!(end, vec![TxAction::Terminated]);
    }

    #[test]
    fn two_xx_moves_to_accepted_and_delivers_retransmissions() {
        let (mut tx, _) =
            InviteClient::start(Instant::ZERO, invite(), false, TimerConfig::default());
        assert_eq!(tx.on_response(Instant::ZERO, response(200)).len(), 1);
        assert_eq!(tx.state(), InviteClientState::Accepted);
        let a = tx.on_response(Instant::ZERO + ms(500), response(200));
        assert!(
            matches!(a.as_slice(), [TxAction::Deliver(_)]),
            "2xx retransmissions reach the TU"
        );
        assert!(
            tx.cancel_request().is_none(),
            "no CANCEL after a final response"
        );
        assert_eq!(
            tx.on_timer(Instant::ZERO + ms(32_000)),
            vec![TxAction::Terminated]
        );
    }

    #[test]
    fn timer_e_ladder_caps_at_t2_and_f_times_out() {
        let cfg = TimerConfig::default();
        let (mut tx, _) =
            NonInviteClient::start(Instant::ZERO, Bytes::from_static(b"BYE"), false, cfg);
        let log = run_until(
            &mut tx,
            Instant::ZERO + ms(40_000),
            |t| t.next_deadline(),
            |t, n| t.on_timer(n),
        );
        let times: Vec<Duration> = log
            .iter()
            .filter(|(_, a)| sends(a) == 1)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            times,
            vec![
                ms(500),
                ms(1500),
                ms(3500),
                ms(7500),
                ms(11500),
                ms(15500),
                ms(19500),
                ms(23500),
                ms(27500),
                ms(31500)
            ]
        );
        assert_eq!(
            log.last().unwrap().1,
            vec![TxAction::Timeout, TxAction::Terminated]
        );
    }

    #[test]
    fn non_invite_client_proceeding_retransmits_every_t2_then_k() {
        let cfg = TimerConfig::default();
        let (mut tx, _) =
            NonInviteClient::start(Instant::ZERO, Bytes::from_static(b"BYE"), false, cfg);
        tx.on_response(Instant::ZERO + ms(100), response(100));
        assert_eq!(tx.state(), NonInviteClientState::Proceeding);
        tx.on_timer(Instant::ZERO + ms(500));
        assert_eq!(tx.next_deadline(), Some(Instant::ZERO + ms(4500)));
        let a = tx.on_response(Instant::ZERO + ms(600), response(200));
        assert!(matches!(a.as_slice(), [TxAction::Deliver(_)]));
        assert!(
            tx.on_response(Instant::ZERO + ms(700), response(200))
                .is_empty(),
            "retransmitted final absorbed"
        );
        assert_eq!(
            tx.next_deadline(),
            Some(Instant::ZERO + ms(5600)),
            "Timer K = T4"
        );
        assert_eq!(
            tx.on_timer(Instant::ZERO + ms(5600)),
            vec![TxAction::Terminated]
        );
    }

    #[test]
    fn invite_server_absorbs_retransmits_and_resends_last_response() {
        let mut tx = InviteServer::new(false, TimerConfig::default());
        assert!(tx.on_invite_retransmit().is_empty(), "nothing sent yet");
        tx.send_response(Instant::ZERO, 100, Bytes::from_static(b"100"));
        assert_eq!(
            tx.on_invite_retransmit(),
            vec![TxAction::Send(Bytes::from_static(b"100"))]
        );
        tx.send_response(Instant::ZERO, 180, Bytes::from_static(b"180"));
        assert_eq!(
            tx.on_invite_retransmit(),
            vec![TxAction::Send(Bytes::from_static(b"180"))]
        );
    }

    #[test]
    fn timer_g_ladder_then_h_without_ack() {
        let mut tx = InviteServer::new(false, TimerConfig::default());
        tx.send_response(Instant::ZERO, 486, Bytes::from_static(b"486"));
        let log = run_until(
            &mut tx,
            Instant::ZERO + ms(40_000),
            |t| t.next_deadline(),
            |t, n| t.on_timer(n),
        );
        let times: Vec<Duration> = log
            .iter()
            .filter(|(_, a)| sends(a) == 1)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            times,
            vec![
                ms(500),
                ms(1500),
                ms(3500),
                ms(7500),
                ms(11500),
                ms(15500),
                ms(19500),
                ms(23500),
                ms(27500),
                ms(31500)
            ]
        );
        assert_eq!(
            log.last().unwrap(),
            &(ms(32_000), vec![TxAction::AckTimeout, TxAction::Terminated])
        );
    }

    #[test]
    fn ack_for_non_2xx_confirms_then_timer_i() {
        let mut tx = InviteServer::new(false, TimerConfig::default());
        tx.send_response(Instant::ZERO, 487, Bytes::from_static(b"487"));
        // Lost ACK: G retransmits, then the ACK arrives.
        assert_eq!(sends(&tx.on_timer(Instant::ZERO + ms(500))), 1);
        assert_eq!(
            tx.on_invite_retransmit().len(),
            1,
            "Completed resends the final response"
        );
        tx.on_ack(Instant::ZERO + ms(700));
        assert_eq!(tx.state(), InviteServerState::Confirmed);
        assert!(tx.on_invite_retransmit().is_empty());
        assert_eq!(
            tx.next_deadline(),
            Some(Instant::ZERO + ms(5700)),
            "Timer I = T4"
        );
        assert_eq!(
            tx.on_timer(Instant::ZERO + ms(5700)),
            vec![TxAction::Terminated]
        );
    }

    #[test]
    fn invite_server_2xx_accepted_then_timer_l() {
        let mut tx = InviteServer::new(true, TimerConfig::default());
        tx.send_response(Instant::ZERO, 200, Bytes::from_static(b"200"));
        assert_eq!(tx.state(), InviteServerState::Accepted);
        assert!(tx.on_invite_retransmit().is_empty());
        // A second 2xx (another fork) still passes.
        assert_eq!(
            sends(&tx.send_response(Instant::ZERO, 200, Bytes::from_static(b"200b"))),
            1
        );
        // But no non-2xx after a 2xx.
        assert!(tx
            .send_response(Instant::ZERO, 486, Bytes::from_static(b"486"))
            .is_empty());
        assert_eq!(
            tx.on_timer(Instant::ZERO + ms(32_000)),
            vec![TxAction::Terminated]
        );
    }

    #[test]
    fn non_invite_server_trying_absorbs_then_completed_resends_then_j() {
        let mut tx = NonInviteServer::new(false, TimerConfig::default());
        assert!(tx.on_retransmit().is_empty());
        tx.send_response(Instant::ZERO, 200, Bytes::from_static(b"200"));
        assert_eq!(
            tx.on_retransmit(),
            vec![TxAction::Send(Bytes::from_static(b"200"))]
        );
        assert!(tx
            .send_response(Instant::ZERO, 500, Bytes::from_static(b"500"))
            .is_empty());
        assert_eq!(
            tx.next_deadline(),
            Some(Instant::ZERO + ms(32_000)),
            "Timer J = 64·T1"
        );
        assert_eq!(
            tx.on_timer(Instant::ZERO + ms(32_000)),
            vec![TxAction::Terminated]
        );
        let mut tcp = NonInviteServer::new(true, TimerConfig::default());
        tcp.send_response(Instant::ZERO, 200, Bytes::from_static(b"200"));
        assert_eq!(
            tcp.next_deadline(),
            Some(Instant::ZERO),
            "J is zero on reliable transports"
        );
    }

    #[test]
    fn server_keys_follow_17_2_3() {
        let r = invite();
        let k = TxKey::server(&r);
        assert!(
            matches!(&k, TxKey::Server { branch, sent_by_port: 5060, method: MethodKey::Invite, .. } if &**branch == "z9hG4bKsbclient1")
        );
        let ack = match parse(&build_ack(&r, &response(486))).unwrap() {
            Message::Request(a) => a,
            _ => unreachable!(),
        };
        assert_eq!(
            TxKey::server(&ack),
            k,
            "the ACK for a non-2xx matches the INVITE"
        );
        let cancel = build_cancel(&r);
        assert_ne!(TxKey::server(&cancel), k, "CANCEL is its own transaction");
        let old = match parse(INVITE.replace("z9hG4bKsbclient1", "old2543").as_bytes()).unwrap() {
            Message::Request(a) => a,
            _ => unreachable!(),
        };
        assert!(matches!(TxKey::server(&old), TxKey::Rfc2543 { .. }));
    }

    #[test]
    fn configured_t1_scales_every_timer() {
        let cfg = TimerConfig {
            t1: ms(100),
            t2: ms(400),
            t4: ms(500),
        };
        let (mut tx, _) = InviteClient::start(Instant::ZERO, invite(), false, cfg);
        assert_eq!(tx.next_deadline(), Some(Instant::ZERO + ms(100)));
        let log = run_until(
            &mut tx,
            Instant::ZERO + ms(10_000),
            |t| t.next_deadline(),
            |t, n| t.on_timer(n),
        );
        assert_eq!(log.last().unwrap().0, ms(6_400), "Timer B = 64·T1");
    }
}
