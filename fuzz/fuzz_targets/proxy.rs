//! The transaction layer and the proxy fed message sequences. The input is a series of steps split on
//! `SEP`; the first byte of each step says what happens:
//!
//! - bits 0–1: the source (trunk over UDP, downstream phone over UDP, a TCP connection, a stranger);
//! - bits 2–3: deliver the rest as a message; answer the last request we forwarded with a status
//!   picked by the rest (so responses carry our real branches); advance virtual time; or deliver
//!   the rest and let the "application" act at once;
//! - bits 4–6: what the application does with new requests (answer, fork to one or two targets,
//!   hold, cancel the branches) and with failed branches.
//!
//! Time only moves forward. At the end the application answers everything it held and the clock
//! runs out: every transaction must then be gone (no leak a flood could grow).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sip_core::message::{parse, Message, Peer, Transport};
use sip_core::proxy::{
    Event, FailurePolicy, Listener, Output, Proxy, ProxyConfig, ServerId, Target,
};
use sip_core::time::Instant;

const SEP: &[u8] = b"\n--8<--\n";

fn peer(which: u8) -> Peer {
    let (transport, addr, conn) = match which & 3 {
        0 => (Transport::Udp, "127.0.0.2:5060", None),
        1 => (Transport::Udp, "127.0.0.5:5070", None),
        2 => (Transport::Tcp, "127.0.0.6:40000", Some(7)),
        _ => (Transport::Udp, "192.0.2.66:5060", None),
    };
    Peer {
        transport,
        addr: addr.parse().unwrap(),
        conn,
    }
}

struct Harness {
    proxy: Proxy,
    now: Instant,
    /// Requests the application holds, oldest first.
    held: Vec<ServerId>,
    /// The last requests the proxy sent downstream (bounded).
    forwarded: Vec<Vec<u8>>,
    app: u8,
}

impl Harness {
    fn drain(&mut self) {
        // Each pass handles what the last one queued; the proxy queues a bounded amount per call.
        for _ in 0..64 {
            let mut events = Vec::new();
            while let Some(o) = self.proxy.poll_output() {
                match o {
                    Output::Transmit(t) => {
                        if !t.bytes.starts_with(b"SIP/2.0 ") {
                            if self.forwarded.len() == 8 {
                                self.forwarded.remove(0);
                            }
                            self.forwarded.push(t.bytes.to_vec());
                        }
                    }
                    Output::Event(e) => events.push(*e),
                }
            }
            if events.is_empty() {
                return;
            }
            for e in events {
                self.on_event(e);
            }
        }
    }

    fn targets(&self, n: usize) -> Vec<Target> {
        (0..n)
            .map(|i| Target {
                uri: format!("sip:800{i}@127.0.0.5:5070"),
                peer: peer(1),
            })
            .collect()
    }

    fn on_event(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Request { id, .. } => match self.app >> 4 & 7 {
                0 => {
                    if let Some(b) = self.proxy.response_for(id, 486, "Busy Here") {
                        let _ = self.proxy.respond(now, id, b);
                    }
                }
                1 | 2 => {
                    let policy = if self.app & 0x80 == 0 {
                        FailurePolicy::SendBest
                    } else {
                        FailurePolicy::AskApplication
                    };
                    let n = usize::from(self.app >> 4 & 7);
                    let _ = self.proxy.forward(now, id, &self.targets(n), policy);
                    self.held.push(id);
                }
                3 => {
                    if let Some(b) = self.proxy.response_for(id, 200, "OK") {
                        let _ = self.proxy.respond(now, id, b);
                    }
                }
                _ => self.held.push(id),
            },
            Event::BranchesFailed { id, .. } => {
                if self.app & 1 == 0 {
                    let _ = self.proxy.send_best_response(now, id);
                } else {
                    let _ = self
                        .proxy
                        .forward(now, id, &self.targets(1), FailurePolicy::SendBest);
                }
            }
            Event::Finished { id, .. } => self.held.retain(|h| *h != id),
            Event::InDialog { .. } | Event::BranchResponse { .. } | Event::Cancelled { .. } => {}
        }
    }

    fn answer_forwarded(&mut self, pick: u8) {
        let Some(req) = self.forwarded.last() else {
            return;
        };
        let Ok(Message::Request(r)) = parse(req) else {
            return;
        };
        const STATUSES: [(u16, &str); 8] = [
            (100, "Trying"),
            (180, "Ringing"),
            (183, "Session Progress"),
            (200, "OK"),
            (404, "Not Found"),
            (486, "Busy Here"),
            (487, "Request Terminated"),
            (503, "Service Unavailable"),
        ];
        let (status, reason) = STATUSES[usize::from(pick % 8)];
        let resp = r.response(status, reason, Some("uas")).to_bytes();
        self.proxy.handle_message(self.now, peer(1), &resp);
    }
}

fn split<'a>(mut data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(sep.len()).position(|w| w == sep) {
        out.push(&data[..i]);
        data = &data[i + sep.len()..];
    }
    out.push(data);
    out
}

fuzz_target!(|data: &[u8]| {
    let cfg = ProxyConfig {
        listeners: vec![Listener {
            transport: Transport::Udp,
            addr: "127.0.0.1:5060".parse().unwrap(),
        }],
        rr_secret: [3; 32],
        ..ProxyConfig::default()
    };
    let mut h = Harness {
        proxy: Proxy::new(cfg, 1),
        now: Instant::ZERO,
        held: Vec::new(),
        forwarded: Vec::new(),
        app: 0,
    };
    for step in split(data, SEP).into_iter().take(64) {
        let Some((&ctl, rest)) = step.split_first() else {
            continue;
        };
        h.app = ctl;
        h.now += Duration::from_millis(u64::from(ctl) * 7);
        match ctl >> 2 & 3 {
            1 => h.answer_forwarded(rest.first().copied().unwrap_or(0)),
            2 => {
                let ms = rest
                    .iter()
                    .take(2)
                    .fold(0u64, |a, b| a << 8 | u64::from(*b));
                h.now += Duration::from_millis(ms * 10);
                h.proxy.handle_timeout(h.now);
            }
            _ => h.proxy.handle_message(h.now, peer(ctl), rest),
        }
        if ctl >> 2 & 3 == 3 {
            // The application gives up on what it holds: the best response, or its own 480.
            for id in std::mem::take(&mut h.held) {
                if h.proxy.send_best_response(h.now, id).is_err() {
                    if let Some(b) = h.proxy.response_for(id, 480, "Temporarily Unavailable") {
                        let _ = h.proxy.respond(h.now, id, b);
                    }
                }
            }
        }
        h.drain();
        h.proxy.handle_timeout(h.now);
        h.drain();
    }

    // The end: answer what is held, then let every timer fire.
    h.app = 0;
    for id in std::mem::take(&mut h.held) {
        h.proxy.cancel_branches(h.now, id);
        if let Some(b) = h.proxy.response_for(id, 480, "Temporarily Unavailable") {
            let _ = h.proxy.respond(h.now, id, b);
        }
    }
    h.drain();
    for _ in 0..10_000 {
        let Some(t) = h.proxy.poll_timeout() else {
            break;
        };
        h.now = h.now.max(t);
        h.proxy.handle_timeout(h.now);
        h.drain();
        for id in std::mem::take(&mut h.held) {
            if let Some(b) = h.proxy.response_for(id, 480, "Temporarily Unavailable") {
                let _ = h.proxy.respond(h.now, id, b);
            }
        }
    }
    assert_eq!(
        h.proxy.transaction_count(),
        (0, 0),
        "transactions left after every timer ran out"
    );
});
