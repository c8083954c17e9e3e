//! The seat manager on the wire: queue entries become `Arrival`s; its commands become INVITE forks,
//! CANCELs and `182 Queued`; the proxy's events and the registrar's changes become its inputs.
//!
//! The seat manager decides who answers; this module only translates. A call is known to it by a
//! `CallId` (a counter), to the proxy by its `ServerId`, and after answer by its SIP Call-ID (the
//! BYE is an in-dialog request the proxy routes by itself).

use std::sync::Arc;
use std::time::Duration;

use seat_manager::{
    AgentAction, Arrival, CallId, Command, Fallback, OfferOutcome, RejectReason, WallClock,
};
use sip_core::proxy::{FailurePolicy, ServerId};
use sip_core::time::Instant;
use tracing::{debug, error, info, warn};

use super::{QueueEntry, Switch};

/// A feature code dialed from an agent's phone, and what it does.
pub(super) fn feature_code(dialed: &str) -> Option<AgentAction> {
    match dialed {
        "*11" => Some(AgentAction::Login),
        "*12" => Some(AgentAction::Logout),
        "*13" => Some(AgentAction::Ready),
        // *14 takes a break with the default reason; *14NN with reason code NN.
        _ => dialed
            .strip_prefix("*14")
            .map(|r| AgentAction::Break(r.parse().unwrap_or(0))),
    }
}

impl Switch {
    /// Hand a call to the seat manager's queue.
    pub(super) fn enter_queue(&mut self, now: Instant, id: ServerId, q: &QueueEntry) {
        let Some(sm) = self.seats.as_mut() else {
            return;
        };
        let call = CallId(self.next_call);
        self.next_call += 1;
        let arrival = Arrival {
            call,
            queue: &q.queue,
            priority: q.priority,
            skill: q.skill.as_deref(),
            language: None,
            prefecture: Some(&q.prefecture),
            fallback: q.fallback.as_ref().map(|(queue, after)| Fallback {
                queue,
                after: *after,
            }),
        };
        if let Err(e) = sm.handle_call_arrived(now, arrival) {
            error!(%e, queue = %q.queue, "seat manager refused the call");
            self.calls.remove(&id);
            self.reply(now, id, 500, "Server Internal Error (queue)", &[]);
            return;
        }
        self.seat_calls.insert(call, id);
        if let Some(c) = self.calls.get_mut(&id) {
            c.seat = Some(call);
        }
        self.run_seat_commands(now);
    }

    /// Carry out everything the seat manager asked for.
    pub(super) fn run_seat_commands(&mut self, now: Instant) {
        // The queue log (Asterisk's queue_log, FreeSWITCH's call-center events): one line per
        // event under the `queue_log` target, which the log config can send to its own file.
        if let Some(sm) = self.seats.as_mut() {
            for e in sm.drain_log() {
                info!(target: "queue_log", queue = ?e.queue, call = ?e.call, agent = ?e.agent, event = ?e.event);
            }
        }
        loop {
            let Some(cmd) = self.seats.as_mut().and_then(|sm| sm.poll_command()) else {
                return;
            };
            match cmd {
                Command::Offer {
                    call,
                    agent,
                    queue,
                    ring_timeout,
                } => self.offer(now, call, &agent, &queue, ring_timeout),
                Command::CancelOffer { call, agent } => {
                    let Some(&id) = self.seat_calls.get(&call) else {
                        continue;
                    };
                    debug!(%call, %agent, "offer withdrawn");
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.offer_withdrawn = true;
                    }
                    self.proxy.give_up_branches(now, id);
                }
                Command::Connected {
                    call,
                    agent,
                    queue,
                    waited,
                } => {
                    info!(%call, %agent, %queue, waited_ms = waited.as_millis() as u64, "call answered");
                    metrics::histogram!(crate::metrics::QUEUE_WAIT, "queue" => queue.to_string())
                        .record(waited.as_secs_f64());
                }
                Command::Queued {
                    call,
                    queue,
                    position,
                } => {
                    let Some(&id) = self.seat_calls.get(&call) else {
                        continue;
                    };
                    info!(%call, %queue, position, "call queued");
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.queued = true;
                        c.position = position;
                    }
                    self.cdr_update(
                        id,
                        |c, at| {
                            c.queued_ms.get_or_insert(at);
                        },
                        now,
                    );
                    // 183 with the SDP answer first (once), then 182 as always.
                    self.start_early_media(now, id, Some(position));
                    self.send_queued(now, id, position);
                }
                Command::Overflowed {
                    call,
                    from,
                    to,
                    reason,
                } => {
                    info!(%call, %from, %to, ?reason, "call overflowed");
                }
                Command::Abandoned {
                    call,
                    queue,
                    waited,
                } => {
                    info!(%call, %queue, waited_ms = waited.as_millis() as u64, "caller abandoned");
                    metrics::histogram!(crate::metrics::QUEUE_WAIT, "queue" => queue.to_string())
                        .record(waited.as_secs_f64());
                    self.forget_seat_call(call);
                }
                Command::Rejected {
                    call,
                    queue,
                    reason,
                } => {
                    let Some(id) = self.forget_seat_call(call) else {
                        continue;
                    };
                    self.calls.remove(&id);
                    warn!(%call, %queue, ?reason, "call refused by its queue");
                    let why = match reason {
                        RejectReason::QueueFull => "Service Unavailable (queue full)",
                    };
                    self.reply(now, id, 503, why, &[("Retry-After", "30")]);
                }
                Command::NoAgentAnywhere { call, queue } => {
                    error!(%call, %queue, "ALARM: a call arrived and no agent is logged in anywhere along its overflow chain");
                    metrics::counter!(crate::metrics::NO_AGENT_ALARMS).increment(1);
                }
                Command::AgentStateChanged { agent, from, to } => {
                    info!(%agent, ?from, ?to, "agent state");
                }
                Command::AuditCall { call, .. } => {
                    let alive = self.established.values().any(|e| e.call == call);
                    if let Some(sm) = self.seats.as_mut() {
                        if alive {
                            sm.handle_call_alive(now, call);
                        } else {
                            sm.handle_call_ended(now, call);
                        }
                    }
                }
                Command::ReleaseCall { call, agent } => {
                    warn!(%call, %agent, "call released after unanswered audits");
                    let gone: Vec<Box<str>> = self
                        .established
                        .iter()
                        .filter(|(_, e)| e.call == call)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in gone {
                        self.established.remove(&k);
                        // Its BYE never came: close its CDR now rather than keep it for ever.
                        self.cdr_bye(now, &k);
                    }
                }
                Command::HangUpAgentLeg { call, agent } => {
                    // The proxy passes every 2xx upstream (RFC 3261 §16.7); the caller's side ends
                    // the extra dialog. Logged so an operator can see it happened.
                    warn!(%call, %agent, "an agent answered a call that was already gone");
                }
            }
        }
    }

    /// Ring one agent's registered phones with the call.
    fn offer(
        &mut self,
        now: Instant,
        call: CallId,
        agent: &Arc<str>,
        queue: &str,
        _ring: Duration,
    ) {
        let Some(&id) = self.seat_calls.get(&call) else {
            // The call is gone (the caller left between two commands).
            if let Some(sm) = self.seats.as_mut() {
                sm.handle_caller_abandoned(now, call);
            }
            return;
        };
        let targets = self.contacts_of(agent, now);
        if targets.is_empty() {
            if let Some(sm) = self.seats.as_mut() {
                let _ = sm.handle_offer_outcome(now, call, agent, OfferOutcome::Unreachable);
            }
            return;
        }
        if let Some(c) = self.calls.get_mut(&id) {
            c.offered = Some(agent.clone());
            c.offer_withdrawn = false;
            c.queued = false;
        }
        info!(%call, %agent, %queue, "offering call");
        let a = agent.to_string();
        let q = queue.to_owned();
        // The last offer's queue is the one that answers, if the agent picks up.
        self.cdr_update(
            id,
            |c, at| {
                c.offered_ms.get_or_insert(at);
                c.agent = Some(a);
                c.answer_queue = Some(q);
            },
            now,
        );
        if self
            .proxy
            .forward(now, id, &targets, FailurePolicy::AskApplication)
            .is_err()
        {
            if let Some(sm) = self.seats.as_mut() {
                sm.handle_caller_abandoned(now, call);
            }
            self.forget_seat_call(call);
        }
    }

    /// The agent's branches all failed. Tell the seat manager how, unless it withdrew the offer.
    pub(super) fn offer_failed(&mut self, now: Instant, id: ServerId, best_status: u16) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let (Some(call), Some(agent)) = (c.seat, c.offered.take()) else {
            return;
        };
        if std::mem::take(&mut c.offer_withdrawn) {
            return; // the ring timeout or a state change: the seat manager knows already
        }
        let outcome = match best_status {
            486 | 600 => OfferOutcome::Busy,
            603 => OfferOutcome::Declined,
            408 | 480 | 500..=599 => OfferOutcome::Unreachable,
            _ => OfferOutcome::Declined,
        };
        if let Some(sm) = self.seats.as_mut() {
            let _ = sm.handle_offer_outcome(now, call, &agent, outcome);
        }
        self.run_seat_commands(now);
    }

    /// The agent answered (a 2xx came back on the offer).
    pub(super) fn offer_answered(&mut self, now: Instant, id: ServerId) {
        let Some(c) = self.calls.remove(&id) else {
            return;
        };
        let (Some(call), Some(agent)) = (c.seat, c.offered) else {
            return;
        };
        self.seat_calls.remove(&call);
        self.established.insert(
            c.sip_call_id.clone(),
            super::Established {
                call,
                agent: agent.clone(),
                caller: c.caller.clone(),
                trunk_prefecture: c.trunk_prefecture.clone(),
            },
        );
        if let Some(sm) = self.seats.as_mut() {
            let _ = sm.handle_offer_outcome(now, call, &agent, OfferOutcome::Answered);
        }
        self.run_seat_commands(now);
    }

    /// The caller hung up before an agent answered.
    pub(super) fn caller_left(&mut self, now: Instant, id: ServerId) {
        let Some(c) = self.calls.remove(&id) else {
            return;
        };
        if let Some(call) = c.seat {
            self.seat_calls.remove(&call);
            if let Some(sm) = self.seats.as_mut() {
                sm.handle_caller_abandoned(now, call);
            }
            self.run_seat_commands(now);
        }
    }

    /// A BYE passed through for an answered call: the agent goes to wrap-up.
    pub(super) fn dialog_ended(&mut self, now: Instant, sip_call_id: &str) {
        if let Some(e) = self.established.remove(sip_call_id) {
            if let Some(sm) = self.seats.as_mut() {
                sm.handle_call_ended(now, e.call);
            }
            self.run_seat_commands(now);
        }
    }

    /// An agent's phone registered (first binding) or lost its last binding.
    pub(super) fn agent_presence(&mut self, now: Instant, user: &str, online: bool) {
        let Some(sm) = self.seats.as_mut() else {
            return;
        };
        let r = if online {
            sm.handle_agent_registered(now, user)
        } else {
            sm.handle_agent_unregistered(now, user)
        };
        if let Err(e) = r {
            debug!(%user, %e, "not a seat");
        }
        self.run_seat_commands(now);
    }

    /// A feature code from an agent's phone. Answered with 603 and the new state as the reason
    /// phrase, which phones show: there is no media to play a prompt with yet.
    pub(super) fn feature(&mut self, now: Instant, id: ServerId, agent: &str, action: AgentAction) {
        let Some(sm) = self.seats.as_mut() else {
            self.reply(now, id, 404, "Not Found (no seat manager)", &[]);
            return;
        };
        match sm.handle_agent_action(now, agent, action) {
            Ok(state) => {
                info!(%agent, ?action, ?state, "feature code");
                let reason = format!("Decline ({agent} now {})", state.as_str());
                self.reply(now, id, 603, &reason, &[]);
            }
            Err(e) => {
                warn!(%agent, ?action, %e, "feature code refused");
                let reason = format!("Decline ({e})");
                self.reply(now, id, 603, &reason, &[]);
            }
        }
        self.run_seat_commands(now);
    }

    /// Tell the rosters what time it is in the world.
    pub fn on_wall_clock(&mut self, now: Instant, unix_seconds: i64) {
        if let Some(sm) = self.seats.as_mut() {
            sm.handle_wall_clock(now, WallClock { unix_seconds });
        }
        self.run_seat_commands(now);
    }

    /// `182 Queued` now, and again every `queued_refresh` while the call waits.
    fn send_queued(&mut self, now: Instant, id: ServerId, position: u32) {
        if self.calls.get(&id).is_some_and(|c| c.requires_100rel) {
            return; // it may only get reliable provisionals (see `Call::requires_100rel`)
        }
        if let Some(mut b) = self.proxy.response_for(id, 182, "Queued") {
            b.push_header("X-Queue-Position", position);
            let _ = self.proxy.respond(now, id, b);
        }
        self.refresh
            .push(std::cmp::Reverse((now + self.queued_refresh, id)));
    }

    /// A 182 refresh is due: re-send it if the call still waits.
    pub(super) fn on_refresh(&mut self, now: Instant, id: ServerId) {
        let waiting = self.calls.get(&id).is_some_and(|c| c.queued);
        if !waiting {
            return;
        }
        let position = self.calls.get(&id).map_or(0, |c| c.position);
        self.send_queued(now, id, position);
    }

    fn forget_seat_call(&mut self, call: CallId) -> Option<ServerId> {
        let id = self.seat_calls.remove(&call)?;
        if let Some(c) = self.calls.get_mut(&id) {
            c.seat = None;
        }
        Some(id)
    }
}
