//! Snapshots of the switchboard's state for the admin API and the wallboard, and the one change
//! the API makes (an agent's state). Called on the core task between messages: they read the
//! state the core owns, so no lock is ever taken.

use seat_manager::{AgentAction, AgentState, BreakReason, CallPhase, QueueKpis};
use sip_core::proxy::Transmit;
use sip_core::time::Instant;
use tracing::info;

use super::Switch;
use crate::admin::{
    AgentCountsInfo, AgentInfo, AgentStateChange, CallInfo, QueueInfo, RegistrationInfo, Snapshot,
    WaitingCaller,
};
use crate::redact::Redacted;

impl Switch {
    /// Registered contacts.
    pub fn admin_registrations(&self, now: Instant) -> Vec<RegistrationInfo> {
        self.registrar
            .export(now)
            .into_iter()
            .map(|b| RegistrationInfo {
                user: b.aor_user,
                contact: b.contact_uri,
                source: b.source.to_string(),
                transport: b.transport.as_via_token().to_ascii_lowercase(),
                expires_in_s: b.expires_in.as_secs(),
            })
            .collect()
    }

    /// Every agent the seat manager knows, in config order.
    pub fn admin_agents(&self) -> Vec<AgentInfo> {
        let Some(sm) = self.seats.as_ref() else {
            return Vec::new();
        };
        sm.agent_ids()
            .filter_map(|id| sm.agent_view(id))
            .map(|v| AgentInfo {
                id: v.id.to_string(),
                state: v.state.as_str().to_owned(),
                break_reason: match v.state {
                    AgentState::Break(BreakReason::Requested(code)) => Some(code),
                    _ => None,
                },
                registered: v.registered,
                offerable: v.offerable,
                missed_in_row: v.missed_in_row,
                call: v.call.or(v.offer).map(|c| c.0),
            })
            .collect()
    }

    /// Every queue's counters and live picture, with its callers longest-waiting first.
    pub fn admin_queues(&self, now: Instant) -> Vec<QueueInfo> {
        let Some(sm) = self.seats.as_ref() else {
            return Vec::new();
        };
        let mut callers: Vec<(String, WaitingCaller)> = Vec::new();
        for (call, id) in &self.seat_calls {
            let Some(v) = sm.call_view(*call) else {
                continue;
            };
            let (phase, ringing) = match &v.phase {
                CallPhase::Waiting => ("waiting", Vec::new()),
                CallPhase::Ringing(a) => ("ringing", a.iter().map(|a| a.to_string()).collect()),
                CallPhase::Connected(_) => continue,
            };
            let caller = self
                .calls
                .get(id)
                .map(|c| Redacted(&c.caller).to_string())
                .unwrap_or_default();
            callers.push((
                v.queue.to_string(),
                WaitingCaller {
                    call: call.0,
                    caller,
                    phase: phase.to_owned(),
                    ringing,
                    waited_s: (now - v.arrived).as_secs_f64(),
                    priority: v.priority,
                },
            ));
        }
        callers.sort_by(|a, b| b.1.waited_s.total_cmp(&a.1.waited_s));
        sm.kpis(now)
            .into_iter()
            .map(|k| {
                let mine = callers
                    .iter()
                    .filter(|(q, _)| **q == *k.queue)
                    .map(|(_, c)| c.clone())
                    .collect();
                queue_info(&k, mine)
            })
            .collect()
    }

    /// Calls being placed, queued, ringing or connected.
    pub fn admin_calls(&self, now: Instant) -> Vec<CallInfo> {
        let sm = self.seats.as_ref();
        let mut out: Vec<CallInfo> = Vec::new();
        for c in self.calls.values() {
            let view = c.seat.and_then(|s| sm.and_then(|sm| sm.call_view(s)));
            let state = match (&view, c.queued) {
                (Some(v), _) if matches!(v.phase, CallPhase::Ringing(_)) => "ringing",
                (Some(_), _) | (None, true) => "queued",
                (None, false) => "routing",
            };
            out.push(CallInfo {
                sip_call_id: c.sip_call_id.to_string(),
                state: state.to_owned(),
                caller: Redacted(&c.caller).to_string(),
                queue: view.as_ref().map(|v| v.queue.to_string()),
                agent: c.offered.as_ref().map(|a| a.to_string()),
                emergency: c.emergency.map(|s| s.to_string()),
                age_s: view.as_ref().map(|v| (now - v.arrived).as_secs_f64()),
            });
        }
        for (sip_call_id, e) in &self.established {
            let view = sm.and_then(|sm| sm.call_view(e.call));
            out.push(CallInfo {
                sip_call_id: sip_call_id.to_string(),
                state: "connected".to_owned(),
                caller: Redacted(&e.caller).to_string(),
                queue: view.as_ref().map(|v| v.queue.to_string()),
                agent: Some(e.agent.to_string()),
                emergency: None,
                age_s: view.as_ref().map(|v| (now - v.arrived).as_secs_f64()),
            });
        }
        out.sort_by(|a, b| a.sip_call_id.cmp(&b.sip_call_id));
        out
    }

    /// What the wallboard and the event stream show, once a second.
    pub fn admin_snapshot(&self, now: Instant, unix_ms: i64) -> Snapshot {
        Snapshot {
            unix_ms,
            registrations: self.registrar.binding_count(),
            queues: self.admin_queues(now),
            calls: self.calls.len() + self.established.len(),
            emergency: self.emergency_tally,
        }
    }

    /// Change an agent's state, as the feature codes do. Offers that follow (a queued caller for an
    /// agent now ready) are put in `out`.
    pub fn admin_set_agent(
        &mut self,
        now: Instant,
        agent: &str,
        action: AgentAction,
        out: &mut Vec<Transmit>,
    ) -> Result<AgentStateChange, String> {
        let Some(sm) = self.seats.as_mut() else {
            return Err("no seat manager: [routing] seats_file is not set".to_owned());
        };
        let r = sm.handle_agent_action(now, agent, action);
        self.run_seat_commands(now);
        self.pump(now, out);
        let state = r.map_err(|e| e.to_string())?;
        info!(%agent, ?action, state = state.as_str(), "agent state set by the admin API");
        Ok(AgentStateChange {
            id: agent.to_owned(),
            state: state.as_str().to_owned(),
        })
    }
}

fn queue_info(k: &QueueKpis, callers: Vec<WaitingCaller>) -> QueueInfo {
    let a = &k.agents;
    QueueInfo {
        id: k.queue.to_string(),
        center: None,
        offered: k.offered,
        answered: k.answered,
        answered_within_15s: k.answered_within_sl,
        abandoned: k.abandoned,
        abandoned_short: k.abandoned_short,
        redirected: k.redirected,
        overflowed: k.overflowed,
        rejected: k.rejected,
        waiting_now: k.waiting_now,
        ringing_now: k.ringing_now,
        longest_wait_s: k.longest_wait_now.map(|d| d.as_secs_f64()),
        service_level: k.service_level(),
        agents: AgentCountsInfo {
            logged_out: a.logged_out,
            available: a.available,
            ringing: a.ringing,
            on_call: a.on_call,
            wrap_up: a.wrap_up,
            on_break: a.on_break,
        },
        callers,
    }
}
