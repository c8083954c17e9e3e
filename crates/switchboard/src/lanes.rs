//! The three lanes from the receivers to the core, and the order the core takes them in.
//!
//! Every SIP message read, whatever its transport, gets a cheap look at its first bytes (no
//! parsing; [`classify`]) and is queued, with the time it was read, on one of three bounded lanes:
//!
//! - **reserved**: responses to INVITEs (they move calls being set up along) and emergency
//!   INVITEs. Junk, which is what a flood is made of, never looks like either, so nothing crowds
//!   an emergency call out of this lane. Always taken first.
//! - **setup**: every other INVITE. A caller is waiting on each one (post-dial delay).
//! - **bulk**: the rest: ACK, BYE, CANCEL, REGISTER, OPTIONS, responses to non-INVITE requests.
//!   Nobody hears a millisecond on these.
//!
//! Between setup and bulk the core keeps arrival order, except that an INVITE may go ahead of
//! bulk messages that arrived at most `overtake` before it (`[sip] invite_overtake_ms`, 10 ms by
//! default; 0 keeps plain arrival order). "Arrived" is when the intake read the message off its
//! socket: the core reads its UDP sockets between any two messages (`daemon::UdpPeek`), so that is
//! within one message's handling of the kernel's arrival. Trunks and SIPp send in ticks: a tick's BYEs, then its
//! INVITEs within a few hundred µs; without this the tick's first INVITE waited for every BYE (and
//! its 200) before it. The bound is on arrival times, not on queueing time, so under a backlog
//! that never drains the bulk lane still moves in arrival order with the INVITEs, held back by at
//! most `overtake`: calls in progress finish (their BYEs free the agents) however hard new calls
//! press. Re-ordering is safe: a CANCEL or an ACK is never taken before the INVITE it follows
//! (those are bulk and the INVITE is not), and UDP never promised order anyway.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::transport::Inbound;

/// Which lane a message takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Reserved,
    Setup,
    Bulk,
}

impl Lane {
    pub fn name(self) -> &'static str {
        match self {
            Lane::Reserved => "reserved",
            Lane::Setup => "setup",
            Lane::Bulk => "bulk",
        }
    }
}

/// The lane of a message, from its first bytes.
pub fn classify(bytes: &[u8]) -> Lane {
    if bytes.starts_with(b"INVITE ") {
        if looks_like_emergency(bytes) {
            Lane::Reserved
        } else {
            Lane::Setup
        }
    } else if is_invite_response(bytes) {
        Lane::Reserved
    } else {
        Lane::Bulk
    }
}

/// A cheap look at a message, before any parsing: is it an INVITE whose Request-URI names an
/// emergency service (110, 119, 120, 122, with an area-code or +86 prefix, or `urn:service:sos`)?
/// It only chooses the lane; the app classifies properly. A false positive costs nothing but a
/// place in the reserved lane.
pub fn looks_like_emergency(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"INVITE ") else {
        return false;
    };
    let end = rest
        .iter()
        .position(|b| *b == b' ' || *b == b'\r')
        .unwrap_or(rest.len())
        .min(128);
    let uri = &rest[..end];
    if uri
        .windows(15)
        .any(|w| w.eq_ignore_ascii_case(b"urn:service:sos"))
    {
        return true;
    }
    // The user part (sip:) or number (tel:): digits (and separators) ending in a service number.
    let Some(colon) = uri.iter().position(|b| *b == b':') else {
        return false;
    };
    let user = &uri[colon + 1..];
    let user_end = user
        .iter()
        .position(|b| *b == b'@' || *b == b';')
        .unwrap_or(user.len());
    let mut digits = [0u8; 9];
    let mut n = 0;
    for b in user[..user_end].iter().filter(|b| b.is_ascii_digit()) {
        if n == digits.len() {
            return false; // more than 9 digits: a subscriber number, not a service
        }
        digits[n] = *b;
        n += 1;
    }
    [b"110", b"119", b"120", b"122"]
        .iter()
        .any(|s| digits[..n].ends_with(*s))
}

/// Is this message a response to an INVITE (its CSeq method is INVITE)? Those move the setup of
/// calls in progress along (100, 180, 183, 200) and take the reserved lane. Responses to BYE and
/// other non-INVITE requests finish nothing a caller waits for: they are bulk (at the end of a SIPp
/// tick twelve 200s for BYEs used to go before the tick's second INVITE).
pub fn is_invite_response(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"SIP/2.0 ") {
        return false;
    }
    // Line starts found with memchr: this runs on every response read.
    for nl in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[nl + 1..];
        if line.starts_with(b"\r\n") || line.starts_with(b"\n") || line.is_empty() {
            break; // the end of the head
        }
        if line.len() > 4 && line[..4].eq_ignore_ascii_case(b"cseq") {
            let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(value) = line[4..].trim_ascii_start().strip_prefix(b":") {
                let mut tokens = value
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|t| !t.is_empty());
                return tokens.nth(1) == Some(b"INVITE".as_slice());
            }
        }
    }
    false
}

/// The receivers' end: where a message read goes.
#[derive(Debug, Clone)]
pub struct Lanes {
    reserved: mpsc::Sender<Inbound>,
    setup: mpsc::Sender<Inbound>,
    bulk: mpsc::Sender<Inbound>,
}

/// The lane was full (the message is dropped: a UDP sender retransmits) or the core is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub lane: Lane,
    pub closed: bool,
}

impl Lanes {
    fn lane(&self, lane: Lane) -> &mpsc::Sender<Inbound> {
        match lane {
            Lane::Reserved => &self.reserved,
            Lane::Setup => &self.setup,
            Lane::Bulk => &self.bulk,
        }
    }

    /// Queues `msg` on its lane without waiting (UDP: a full lane drops).
    pub fn try_send(&self, msg: Inbound) -> Result<Lane, Refused> {
        let lane = classify(&msg.bytes);
        match self.lane(lane).try_send(msg) {
            Ok(()) => Ok(lane),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Refused {
                lane,
                closed: false,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused { lane, closed: true }),
        }
    }

    /// Queues `msg` on its lane, waiting while it is full (TCP: backpressure on the connection).
    pub async fn send(&self, msg: Inbound) -> Result<Lane, Refused> {
        let lane = classify(&msg.bytes);
        self.lane(lane)
            .send(msg)
            .await
            .map(|()| lane)
            .map_err(|_| Refused { lane, closed: true })
    }
}

/// One channel for everything (tests of a transport alone): every lane is that channel.
impl From<mpsc::Sender<Inbound>> for Lanes {
    fn from(tx: mpsc::Sender<Inbound>) -> Lanes {
        Lanes {
            reserved: tx.clone(),
            setup: tx.clone(),
            bulk: tx,
        }
    }
}

/// The core's end.
#[derive(Debug)]
pub struct LaneRx {
    /// Taken first, always; a field of its own so the core's `select!` can wait on it beside
    /// the timers and [`Ordinary::recv`].
    pub reserved: mpsc::Receiver<Inbound>,
    pub ordinary: Ordinary,
}

/// The setup and bulk lanes, with the message at the head of each (taken off its channel to
/// compare arrival times).
#[derive(Debug)]
pub struct Ordinary {
    setup: mpsc::Receiver<Inbound>,
    bulk: mpsc::Receiver<Inbound>,
    setup_head: Option<Inbound>,
    bulk_head: Option<Inbound>,
    overtake: Duration,
}

/// Three lanes of these capacities, and how far an INVITE may overtake.
pub fn lanes(reserved: usize, setup: usize, bulk: usize, overtake: Duration) -> (Lanes, LaneRx) {
    let (rtx, rrx) = mpsc::channel(reserved);
    let (stx, srx) = mpsc::channel(setup);
    let (btx, brx) = mpsc::channel(bulk);
    (
        Lanes {
            reserved: rtx,
            setup: stx,
            bulk: btx,
        },
        LaneRx {
            reserved: rrx,
            ordinary: Ordinary {
                setup: srx,
                bulk: brx,
                setup_head: None,
                bulk_head: None,
                overtake,
            },
        },
    )
}

impl LaneRx {
    /// The next message to handle, without waiting.
    pub fn try_next(&mut self) -> Option<Inbound> {
        match self.reserved.try_recv() {
            Ok(m) => Some(m),
            Err(_) => self.ordinary.try_next(),
        }
    }
}

impl Ordinary {
    /// How far an INVITE may overtake (a reload may change it).
    pub fn set_overtake(&mut self, overtake: Duration) {
        self.overtake = overtake;
    }

    /// The next setup or bulk message, without waiting.
    pub fn try_next(&mut self) -> Option<Inbound> {
        if self.setup_head.is_none() {
            self.setup_head = self.setup.try_recv().ok();
        }
        if self.bulk_head.is_none() {
            self.bulk_head = self.bulk.try_recv().ok();
        }
        let bulk_first = match (&self.setup_head, &self.bulk_head) {
            (Some(s), Some(b)) => s.received.saturating_duration_since(b.received) > self.overtake,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if bulk_first {
            self.bulk_head.take()
        } else {
            self.setup_head.take()
        }
    }

    /// Waits for the next setup or bulk message; `None` once every sender is gone and both lanes
    /// are empty. Cancel-safe (a message taken off a channel stays in its head slot).
    pub async fn recv(&mut self) -> Option<Inbound> {
        if let Some(m) = self.try_next() {
            return Some(m);
        }
        tokio::select! {
            biased;
            Some(m) = self.setup.recv() => Some(m),
            Some(m) = self.bulk.recv() => Some(m),
            else => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;
    use bytes::Bytes;
    use std::time::Instant;

    #[test]
    fn only_responses_to_invites_take_the_reserved_path() {
        for yes in [
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 INVITE\r\n\r\n",
            "SIP/2.0 200 OK\r\ncseq :  7  INVITE\r\nContent-Length: 0\r\n\r\n",
            "SIP/2.0 487 Request Terminated\r\nCSeq:2 INVITE\r\n\r\n",
            "SIP/2.0 183 Session Progress\nCSeq: 4 INVITE\n\n",
            "SIP/2.0 200 OK\r\nCSeq: 5 INVITE",
        ] {
            assert!(is_invite_response(yes.as_bytes()), "{yes}");
            assert_eq!(classify(yes.as_bytes()), Lane::Reserved, "{yes}");
        }
        for no in [
            "SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\n\r\n",
            "SIP/2.0 200 OK\r\nCSeq: 1 CANCEL\r\n\r\n",
            "SIP/2.0 200 OK\r\nCSeqX: 1 INVITE\r\nCSeq: 3 OPTIONS\r\n\r\n",
            // The head ends before a CSeq: the body does not count.
            "SIP/2.0 200 OK\r\nCall-ID: a\r\n\r\nCSeq: 1 INVITE\r\n",
            "SIP/2.0 200 OK\nCall-ID: a\n\nCSeq: 1 INVITE\n",
            "INVITE sip:a@h SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n",
        ] {
            assert!(!is_invite_response(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn emergency_invites_take_the_reserved_path() {
        for yes in [
            "INVITE sip:110@127.0.0.1 SIP/2.0",
            "INVITE sip:0971119@h SIP/2.0",
            "INVITE tel:+86-971-120 SIP/2.0",
            "INVITE urn:service:sos.fire SIP/2.0",
            "INVITE sip:122@h;user=phone SIP/2.0",
            "INVITE sip:123456110@h SIP/2.0",
        ] {
            assert!(looks_like_emergency(yes.as_bytes()), "{yes}");
            assert_eq!(classify(yes.as_bytes()), Lane::Reserved, "{yes}");
        }
        for no in [
            "INVITE sip:12345@h SIP/2.0",
            "BYE sip:110@h SIP/2.0",
            "INVITE sip:13800138110@h SIP/2.0",
            "INVITE sip:1234567110@h SIP/2.0",
        ] {
            assert!(!looks_like_emergency(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn other_invites_are_setup_and_the_rest_bulk() {
        assert_eq!(classify(b"INVITE sip:12331@h SIP/2.0\r\n"), Lane::Setup);
        for bulk in [
            "ACK sip:a@h SIP/2.0\r\n",
            "BYE sip:a@h SIP/2.0\r\n",
            "CANCEL sip:12331@h SIP/2.0\r\n",
            "REGISTER sip:h SIP/2.0\r\n",
            "OPTIONS sip:h SIP/2.0\r\n",
            "SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\n\r\n",
            "INVITEX sip:a@h SIP/2.0\r\n",
            "\r\n\r\n",
            "",
        ] {
            assert_eq!(classify(bulk.as_bytes()), Lane::Bulk, "{bulk:?}");
        }
    }

    fn msg(text: &'static str, received: Instant) -> Inbound {
        Inbound {
            transport: Transport::Udp,
            local: "127.0.0.1:5060".parse().unwrap(),
            peer: "127.0.0.2:5060".parse().unwrap(),
            conn: None,
            bytes: Bytes::from_static(text.as_bytes()),
            received,
        }
    }

    fn order(rx: &mut LaneRx) -> Vec<&'static str> {
        std::iter::from_fn(|| rx.try_next())
            .map(|m| match &m.bytes[..] {
                b"BYE 1" => "bye1",
                b"BYE 2" => "bye2",
                b"INVITE 1" => "inv1",
                b"INVITE 2" => "inv2",
                b"INVITE sip:110@h SIP/2.0" => "sos",
                b"SIP/2.0 180 x\r\nCSeq: 1 INVITE\r\n\r\n" => "180",
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn reserved_first_then_invites_ahead_of_recent_bulk() {
        let (tx, mut rx) = lanes(8, 8, 8, Duration::from_millis(10));
        let t = Instant::now();
        let ms = Duration::from_millis;
        for m in [
            msg("BYE 1", t),
            msg("BYE 2", t + ms(1)),
            msg("INVITE 1", t + ms(2)),
            msg("INVITE 2", t + ms(3)),
            msg("SIP/2.0 180 x\r\nCSeq: 1 INVITE\r\n\r\n", t + ms(4)),
            msg("INVITE sip:110@h SIP/2.0", t + ms(5)),
        ] {
            tx.try_send(m).unwrap();
        }
        assert_eq!(
            order(&mut rx),
            ["180", "sos", "inv1", "inv2", "bye1", "bye2"]
        );
    }

    #[test]
    fn an_invite_does_not_overtake_bulk_older_than_the_bound() {
        let (tx, mut rx) = lanes(8, 8, 8, Duration::from_millis(10));
        let t = Instant::now();
        let ms = Duration::from_millis;
        tx.try_send(msg("BYE 1", t)).unwrap();
        tx.try_send(msg("BYE 2", t + ms(15))).unwrap();
        tx.try_send(msg("INVITE 1", t + ms(20))).unwrap();
        tx.try_send(msg("INVITE 2", t + ms(40))).unwrap();
        // BYE 1 came 20 ms before INVITE 1: it goes first; BYE 2 only 5 ms before: overtaken.
        // INVITE 2 came 25 ms after BYE 2: BYE 2 goes before it.
        assert_eq!(order(&mut rx), ["bye1", "inv1", "bye2", "inv2"]);
    }

    #[test]
    fn no_overtaking_keeps_arrival_order() {
        let (tx, mut rx) = lanes(8, 8, 8, Duration::ZERO);
        let t = Instant::now();
        let us = Duration::from_micros;
        tx.try_send(msg("INVITE 1", t)).unwrap();
        tx.try_send(msg("BYE 1", t + us(1))).unwrap();
        tx.try_send(msg("INVITE 2", t + us(2))).unwrap();
        tx.try_send(msg("BYE 2", t + us(3))).unwrap();
        assert_eq!(order(&mut rx), ["inv1", "bye1", "inv2", "bye2"]);
    }

    #[test]
    fn a_full_lane_refuses_only_its_own_messages() {
        let (tx, mut rx) = lanes(1, 1, 1, Duration::from_millis(10));
        let t = Instant::now();
        assert_eq!(tx.try_send(msg("BYE 1", t)), Ok(Lane::Bulk));
        assert_eq!(
            tx.try_send(msg("BYE 2", t)),
            Err(Refused {
                lane: Lane::Bulk,
                closed: false
            })
        );
        assert_eq!(tx.try_send(msg("INVITE 1", t)), Ok(Lane::Setup));
        assert_eq!(order(&mut rx), ["inv1", "bye1"]);
    }

    #[tokio::test]
    async fn recv_waits_for_either_lane_and_ends_when_the_senders_are_gone() {
        let (tx, mut rx) = lanes(4, 4, 4, Duration::from_millis(10));
        let sender = tx.clone();
        let t = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sender.send(msg("BYE 1", Instant::now())).await.unwrap();
        });
        let got = rx.ordinary.recv().await.expect("a message");
        assert_eq!(&got.bytes[..], b"BYE 1");
        t.await.unwrap();
        tx.try_send(msg("INVITE 1", Instant::now())).unwrap();
        drop(tx);
        assert_eq!(&rx.ordinary.recv().await.unwrap().bytes[..], b"INVITE 1");
        assert!(rx.ordinary.recv().await.is_none());
    }

    #[test]
    fn one_channel_for_every_lane_keeps_its_order() {
        let (tx, mut rx) = mpsc::channel(8);
        let lanes: Lanes = tx.into();
        let t = Instant::now();
        lanes.try_send(msg("BYE 1", t)).unwrap();
        lanes.try_send(msg("INVITE 1", t)).unwrap();
        assert_eq!(&rx.try_recv().unwrap().bytes[..], b"BYE 1");
        assert_eq!(&rx.try_recv().unwrap().bytes[..], b"INVITE 1");
    }
}
