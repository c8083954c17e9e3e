//! The seat manager of the 12345 switchboard: which human answers, and the guarantee that a human
//! is always there (7×24). Agents with skills and languages, queues with strategies, ring
//! timeouts, wrap-up, overflow from the prefectures to the province, rosters, and the KPIs of
//! GB/T 33358.
//!
//! # Sans-IO
//! A [`SeatManager`] is a plain struct owned by one task. It never reads a clock, touches a socket
//! or spawns anything: events and `now` go in, commands and the next deadline come out. The same
//! run loop drives it in the daemon and in tests, where virtual time jumps from deadline to
//! deadline and a simulated day runs in milliseconds.
//!
//! # Run loop contract
//! ```text
//! let mut sm = SeatManager::new(&config)?;
//! sm.handle_wall_clock(now, wall);                // rosters, then at least once a minute
//! loop {
//!     // one of:
//!     sm.handle_agent_registered(now, "8001")?;   // registrar events
//!     sm.handle_agent_action(now, "8001", AgentAction::Break(2))?;  // feature codes
//!     sm.handle_call_arrived(now, Arrival { .. })?; // after the dialplan decided a queue
//!     sm.handle_offer_outcome(now, call, "8001", OfferOutcome::Answered)?;
//!     sm.handle_caller_abandoned(now, call);      // CANCEL from the caller
//!     sm.handle_call_ended(now, call);            // BYE
//!     sm.handle_timeout(now);                     // when poll_timeout() is reached
//!     // then, every time:
//!     while let Some(cmd) = sm.poll_command() { /* fork INVITE, CANCEL, 182, alarm, … */ }
//!     rearm_timer(sm.poll_timeout());             // one timer, moved only when it changes
//!     write_out(sm.drain_log());                  // the queue log, now or in batches
//! }
//! ```
//! `now` is [`Instant`], the same monotonic time line sip-core uses; the daemon passes the value it
//! passes to the proxy. Rosters use a separate [`WallClock`] (Asia/Shanghai, UTC+8, no DST) so
//! that a wall-clock step never stretches or fires a ring timer.
//!
//! # Invariants ([`SeatManager::check_invariants`] tests them)
//! - No agent is offered two calls at once; an agent on a call is offered none.
//! - No call is offered to two agents, except under ring-all.
//! - No agent stays in any state without a timeout: ringing has the ring timeout, wrap-up its
//!   length, a break `max_break_s`, a call the audit; available lasts as long as the registration
//!   (its expiry logs the agent out).
//! - No caller waits while an agent who may take it is idle.
//!
//! The mod_callcenter races are handled as events, not prevented by locks: an agent who logs out,
//! takes a break or unregisters while ringing has the offer cancelled and the caller keeps its
//! place; a caller who leaves while ringing cancels the ringing agents; an answer that crosses a
//! CANCEL still connects if the call waits, or is hung up (`HangUpAgentLeg`) if it went elsewhere;
//! a connected call whose BYE was lost is found by the audit.
//!
//! # Cost
//! Callers wait in `BTreeSet`s keyed `(priority desc, arrival)` and idle agents in `BTreeSet`s
//! keyed by the strategy (`idle_since` for longest-idle), per queue and per language. An arrival,
//! an assignment or an agent becoming free is a few O(log n) set operations, independent of the
//! number of agents and callers (`benches/choose.rs`: 2,000 agents, 10,000 callers). The
//! exceptions are rare events: a queue emptied of agents or a center closing moves its callers
//! (O(callers)), `skill-level` scans idle agents for the best level, and a `Queued` position for a
//! caller who overflowed in (with an older arrival) counts the callers ahead of it.

mod clock;
mod config;
mod manager;
mod roster;
mod types;

use std::time::Duration;

pub use clock::{Date, LocalTime, WallClock, Weekday, MINUTES_PER_WEEK, SHANGHAI_OFFSET_S};
pub use config::{
    AgentConfig, CenterConfig, ConfigError, Problem, QueueConfig, SeatConfig, ShiftConfig,
    Strategy, MAX_LANGUAGES, MAX_PRIORITY,
};
pub use manager::{SeatError, SeatManager};
pub use roster::{roster_check, Gap, GapDay, GapReason};
/// The monotonic time line shared with sip-core.
pub use sip_core::time::Instant;
pub use types::{
    AgentAction, AgentCounts, AgentState, AgentView, Arrival, BreakReason, CallId, CallPhase,
    CallView, Command, Fallback, LogEntry, LogEvent, OfferOutcome, OverflowReason, QueueKpis,
    RejectReason, Violation,
};

/// GB/T 33358-2016: a call counts as answered in time within 15 s of arriving.
pub const SERVICE_LEVEL: Duration = Duration::from_secs(15);

/// Abandons within this long of arriving are counted apart (misdials, immediate hang-ups).
pub const SHORT_ABANDON: Duration = Duration::from_secs(5);
