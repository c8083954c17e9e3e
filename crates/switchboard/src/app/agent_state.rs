//! Agent state across restarts: whether each agent is logged in, logged out or on break (with its
//! reason code) is kept in the store's key/value snapshot (`agent-state`), so a restart neither
//! logs out a working agent nor logs in (through `auto_login_on_register`) one who had logged out.
//!
//! Registrations themselves stay in the registrar's state file (see ARCHITECTURE.md): restored
//! first, they make the phones reachable; the saved states are applied on top.
//!
//! What is kept is the agent's choice, not the moment: ringing, on a call and wrap-up all come
//! back as logged in (the calls did not survive the restart). Changes are found by comparing with
//! the last saved value once a second, so every transition is caught, the seat manager's own
//! included (a break for missed calls), and nothing is written while nothing changes.

use std::collections::HashMap;
use std::sync::Arc;

use seat_manager::{AgentAction, AgentState, BreakReason};
use serde::{Deserialize, Serialize};
use sip_core::time::Instant;
use store::{KvRow, KvSpace, Record};
use tracing::{info, warn};

use super::Switch;

/// The part of an agent's state that outlives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum SavedAgent {
    LoggedOut,
    LoggedIn,
    /// On break; `code` 0 also stands for the seat manager's break after missed calls.
    Break {
        code: u16,
    },
}

impl SavedAgent {
    fn of(state: AgentState) -> SavedAgent {
        match state {
            AgentState::LoggedOut => SavedAgent::LoggedOut,
            AgentState::Break(BreakReason::Requested(code)) => SavedAgent::Break { code },
            AgentState::Break(BreakReason::MissedCalls) => SavedAgent::Break { code: 0 },
            AgentState::Available
            | AgentState::Ringing
            | AgentState::OnCall
            | AgentState::WrapUp => SavedAgent::LoggedIn,
        }
    }
}

/// The last saved states, by agent.
pub(super) type Saved = HashMap<Arc<str>, SavedAgent>;

impl Switch {
    /// Save the agents whose state changed since the last call (a non-blocking submit each).
    pub fn persist_agent_states(&mut self, now: Instant) {
        let (Some(sm), Some(store)) = (self.seats.as_ref(), self.cdrs.as_ref()) else {
            return;
        };
        let at = self.unix_ms(now);
        for id in sm.agent_ids() {
            let Some(v) = sm.agent_view(id) else { continue };
            let saved = SavedAgent::of(v.state);
            if self.saved_agents.get(id) == Some(&saved) {
                continue;
            }
            let row = KvRow {
                space: KvSpace::AgentState,
                key: id.to_string(),
                value: serde_json::to_value(saved).unwrap_or_default(),
                expires_ms: None,
                updated_ms: at,
            };
            match store.submit(Record::Put(Box::new(row))) {
                Ok(_) => {
                    self.saved_agents.insert(id.clone(), saved);
                }
                // Tried again on the next call.
                Err(e) => warn!(agent = %id, %e, "agent state not saved"),
            }
        }
    }

    /// Apply states saved by the previous run (or, on an HA standby, by the active node), after
    /// the registrations were restored. An agent whose phone is no longer registered stays logged
    /// out. Returns how many were applied.
    pub fn restore_agent_states(&mut self, now: Instant, rows: Vec<KvRow>) -> usize {
        let Some(sm) = self.seats.as_mut() else {
            return 0;
        };
        let mut n = 0;
        for row in rows {
            let Ok(saved) = serde_json::from_value::<SavedAgent>(row.value) else {
                warn!(agent = %row.key, "unreadable saved agent state; ignored");
                continue;
            };
            let Some(v) = sm.agent_view(&row.key) else {
                continue; // no longer in the roster
            };
            // From whatever state the agent is in now: after a restart that is logged out or
            // (auto-login) available; on an HA standby, whatever the last poll left.
            let actions: &[AgentAction] = match (saved, v.state) {
                (SavedAgent::LoggedOut, AgentState::LoggedOut) => &[],
                (SavedAgent::LoggedOut, _) => &[AgentAction::Logout],
                (SavedAgent::LoggedIn, AgentState::LoggedOut) => &[AgentAction::Login],
                (SavedAgent::LoggedIn, AgentState::Break(_)) => &[AgentAction::Ready],
                (SavedAgent::LoggedIn, _) => &[],
                (SavedAgent::Break { code }, AgentState::LoggedOut) => {
                    &[AgentAction::Login, AgentAction::Break(code)]
                }
                (SavedAgent::Break { code }, _) => &[AgentAction::Break(code)],
            };
            let mut ok = true;
            for a in actions {
                if let Err(e) = sm.handle_agent_action(now, &row.key, *a) {
                    info!(agent = %row.key, %e, "saved agent state not restored");
                    ok = false;
                    break;
                }
            }
            if ok {
                n += 1;
                self.saved_agents.insert(v.id.clone(), saved);
            }
        }
        self.run_seat_commands(now);
        n
    }
}
