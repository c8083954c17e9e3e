//! The values that cross the seat manager's boundary: events in, commands out, the queue log and
//! the KPI snapshot.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Instant;

/// A call, as the daemon names it. The daemon assigns the number (one per INVITE server
/// transaction it hands over) and maps it back to its SIP state; the seat manager never sees SIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

/// Why an agent is on break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakReason {
    /// The agent asked for it (feature code or admin API), with a reason code the center defines
    /// (0: none given), e.g. `*13*2` for "meal".
    Requested(u16),
    /// `max_no_answer` offers in a row went unanswered: the agent is probably not at the desk.
    MissedCalls,
}

/// An agent's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentState {
    /// Not working; offered nothing.
    LoggedOut,
    /// Ready for a call. (Briefly not offered after a missed or refused offer, see
    /// `reoffer_delay_s`.)
    Available,
    /// A call is being offered: the phone rings, under the queue's ring timeout.
    Ringing,
    /// Talking to a caller (audited every `call_audit_s`).
    OnCall,
    /// After-call work, for the queue's `wrap_up_s`.
    WrapUp,
    /// On break, for at most `max_break_s`.
    Break(BreakReason),
}

impl AgentState {
    /// A short name for metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::LoggedOut => "logged_out",
            AgentState::Available => "available",
            AgentState::Ringing => "ringing",
            AgentState::OnCall => "on_call",
            AgentState::WrapUp => "wrap_up",
            AgentState::Break(_) => "break",
        }
    }
}

/// What an agent asks for, by feature code from the softphone (`*11` login, `*12` logout, `*13`
/// break, `*14` ready: the daemon's README has the table) or through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentAction {
    /// Start working: the agent becomes available. Needs a registered phone.
    Login,
    /// Stop working. On a call, takes effect when the call ends.
    Logout,
    /// Back from break or wrap-up; from logged out, the same as login.
    Ready,
    /// Take a break with a reason code. On a call, takes effect after the call's wrap-up.
    Break(u16),
}

/// How an offer ended, as the daemon saw it on the agent's INVITE branch. The ring timeout is not
/// here: the seat manager arms that timer itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OfferOutcome {
    /// 2xx from the agent's phone.
    Answered,
    /// 486 Busy Here (or 600 Busy Everywhere): the phone is in use.
    Busy,
    /// 603 Decline, or another refusal by the agent.
    Declined,
    /// The phone could not be reached: no contact, transport failure, 408, 480. Counts as a
    /// missed offer, like a ring timeout.
    Unreachable,
}

/// Why a call left a queue for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverflowReason {
    /// It waited the queue's `overflow_after_s` (or the dialplan's dual-line limit).
    Timeout,
    /// No agent (speaking the caller's language) is logged in to the queue.
    NoAgent,
    /// The queue's center is closed by its roster; the covering center takes the call.
    CenterClosed,
}

impl OverflowReason {
    /// A short name for metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowReason::Timeout => "timeout",
            OverflowReason::NoAgent => "no_agent",
            OverflowReason::CenterClosed => "center_closed",
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The queue already holds `max_waiting` callers. Answer 486 Busy Here (or 503 with
    /// Retry-After, as the daemon's shedding policy prefers).
    QueueFull,
}

/// Where a dual line's call goes when the department cannot take it: the dialplan's fallback
/// 12345 queue and its `Overflow` rule. It overrides the first queue's `overflow_to` and
/// `overflow_after_s`, for that first queue only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback<'a> {
    /// The 12345 queue to move to.
    pub queue: &'a str,
    /// Move after this long in the first queue. None: only when no department seat is logged in
    /// (or its center is closed).
    pub after: Option<Duration>,
}

/// A new call for a queue, from the dialplan's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival<'a> {
    /// The daemon's name for the call; must not be in use.
    pub call: CallId,
    /// The queue the dialplan chose.
    pub queue: &'a str,
    /// 0–9, higher first (values above 9 count as 9).
    pub priority: u8,
    /// The topic (dialplan skill, e.g. `market-supervision`); orders agents under `skill-level`.
    pub skill: Option<&'a str>,
    /// A language the agent must speak (`bo`); None: any agent.
    pub language: Option<&'a str>,
    /// The caller's prefecture, for the queue log (a bounded label, never the number).
    pub prefecture: Option<&'a str>,
    /// The dialplan's fallback for a dual line.
    pub fallback: Option<Fallback<'a>>,
}

/// What the daemon must do, from [`crate::SeatManager::poll_command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Ring the agent's registered contacts with this call (fork the INVITE). Under ring-all
    /// several `Offer`s for one call follow each other. The seat manager times the ring itself.
    Offer {
        /// The call.
        call: CallId,
        /// The agent (AOR user).
        agent: Arc<str>,
        /// The queue the call is in.
        queue: Arc<str>,
        /// How long the phone rings before the seat manager withdraws the offer.
        ring_timeout: Duration,
    },
    /// Stop ringing this agent for this call (CANCEL its branches): ring timeout, the caller left,
    /// another agent answered under ring-all, or the agent changed state.
    CancelOffer {
        /// The call.
        call: CallId,
        /// The agent.
        agent: Arc<str>,
    },
    /// The agent answered: the call is connected. For the CDR and the wallboard.
    Connected {
        /// The call.
        call: CallId,
        /// The agent.
        agent: Arc<str>,
        /// The queue that answered it.
        queue: Arc<str>,
        /// Time since the call arrived at the switchboard.
        waited: Duration,
    },
    /// The call waits for an agent: send `182 Queued` now (and keep refreshing it while it waits,
    /// within Timer C). Sent on arrival, on entering an overflow queue, and when a failed offer
    /// returns the call to its queue.
    Queued {
        /// The call.
        call: CallId,
        /// The queue.
        queue: Arc<str>,
        /// 1 for the next caller to be served.
        position: u32,
    },
    /// The call moved to another queue.
    Overflowed {
        /// The call.
        call: CallId,
        /// The queue left.
        from: Arc<str>,
        /// The queue entered.
        to: Arc<str>,
        /// Why.
        reason: OverflowReason,
    },
    /// The caller left before an agent answered (acknowledges the daemon's CANCEL; for the CDR).
    Abandoned {
        /// The call.
        call: CallId,
        /// The queue it was in.
        queue: Arc<str>,
        /// Time since it arrived.
        waited: Duration,
    },
    /// The call is refused; answer it with a final response and forget it.
    Rejected {
        /// The call.
        call: CallId,
        /// The queue that refused it.
        queue: Arc<str>,
        /// Why.
        reason: RejectReason,
    },
    /// Alarm: the call arrived and no agent is logged in anywhere along its overflow chain. Log it
    /// and count it; the call stays queued and is served by the first agent who logs in.
    NoAgentAnywhere {
        /// The call.
        call: CallId,
        /// The queue it waits in, the end of its chain.
        queue: Arc<str>,
    },
    /// An agent's state changed: update the wallboard, metrics and the persisted agent state.
    AgentStateChanged {
        /// The agent.
        agent: Arc<str>,
        /// The old state.
        from: AgentState,
        /// The new state.
        to: AgentState,
    },
    /// Confirm this connected call still exists: answer with
    /// [`crate::SeatManager::handle_call_alive`], or `handle_call_ended` if its dialog is gone.
    AuditCall {
        /// The call.
        call: CallId,
        /// Its agent.
        agent: Arc<str>,
    },
    /// An audit went unanswered: the seat manager has freed the agent. End both legs (BYE) if the
    /// call somehow still exists.
    ReleaseCall {
        /// The call.
        call: CallId,
        /// The agent freed.
        agent: Arc<str>,
    },
    /// This agent answered a call that is gone or went to another agent (a 200 OK that crossed a
    /// CANCEL). End the agent's leg (ACK then BYE); the agent's state is unchanged.
    HangUpAgentLeg {
        /// The call.
        call: CallId,
        /// The agent.
        agent: Arc<str>,
    },
}

/// One entry of the queue log: what happened, to whom, when. The daemon writes these out (file,
/// database) as Asterisk's `queue_log` or FreeSWITCH's call-center events are used: for audits and
/// reports beyond the live metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When.
    pub at: Instant,
    /// The queue concerned, if any.
    pub queue: Option<Arc<str>>,
    /// The call concerned, if any.
    pub call: Option<CallId>,
    /// The agent concerned, if any.
    pub agent: Option<Arc<str>>,
    /// What happened.
    pub event: LogEvent,
}

/// What a [`LogEntry`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// The call entered the queue (arrival or overflow).
    Enter {
        /// Its priority.
        priority: u8,
        /// The caller's prefecture label, if known.
        prefecture: Option<Arc<str>>,
    },
    /// The call was offered to the agent.
    Offer,
    /// The agent's phone rang out (or was unreachable).
    RingNoAnswer,
    /// The offer failed on the agent's side before the ring timeout (busy, declined,
    /// unreachable).
    Refused(OfferOutcome),
    /// The agent answered.
    Connect {
        /// Time since arrival.
        waited: Duration,
    },
    /// The caller hung up before an answer.
    Abandon {
        /// Time since arrival.
        waited: Duration,
    },
    /// The call left for another queue.
    Overflow {
        /// The queue entered.
        to: Arc<str>,
        /// Why.
        reason: OverflowReason,
    },
    /// The queue was full.
    Rejected,
    /// No agent logged in along the chain (the alarm).
    NoAgentAnywhere,
    /// No agent speaking the caller's language is logged in at the end of the chain; any agent
    /// may now take the call.
    LanguageRelaxed,
    /// The call ended after being answered.
    Complete {
        /// Time from answer to end.
        talk: Duration,
    },
    /// An unconfirmed audit freed the agent.
    Released,
    /// An agent answered too late (another agent had the call, or it was gone).
    LateAnswer,
    /// An agent changed state.
    AgentState {
        /// The old state.
        from: AgentState,
        /// The new state.
        to: AgentState,
    },
    /// A center opened by its roster.
    CenterOpened {
        /// The center.
        center: Arc<str>,
    },
    /// A center closed by its roster.
    CenterClosed {
        /// The center.
        center: Arc<str>,
    },
}

/// Agents of a queue by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentCounts {
    /// Logged out.
    pub logged_out: u32,
    /// Available (including those briefly held back after a missed offer).
    pub available: u32,
    /// Ringing.
    pub ringing: u32,
    /// On a call.
    pub on_call: u32,
    /// In wrap-up.
    pub wrap_up: u32,
    /// On break.
    pub on_break: u32,
}

/// A queue's KPIs (counters since start, plus the live picture), for metrics and the wallboard.
///
/// Each call entering the queue ends up in exactly one bucket, so
/// `offered = redirected + overflowed + answered + abandoned + abandoned_short + rejected
///  + waiting_now + ringing_now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKpis {
    /// The queue.
    pub queue: Arc<str>,
    /// Calls that entered the queue: arrivals and overflows in.
    pub offered: u64,
    /// Calls passed on at once (center closed, no agent logged in).
    pub redirected: u64,
    /// Calls that waited here, then left for another queue.
    pub overflowed: u64,
    /// Calls answered from this queue.
    pub answered: u64,
    /// Of those, answered within [`crate::SERVICE_LEVEL`] of arriving (GB/T 33358: 15 s).
    pub answered_within_sl: u64,
    /// Callers who hung up while here after waiting at least [`crate::SHORT_ABANDON`].
    pub abandoned: u64,
    /// Callers who hung up within [`crate::SHORT_ABANDON`] (misdials, counted apart so they do not
    /// spoil the abandon rate).
    pub abandoned_short: u64,
    /// Arrivals refused because the queue was full.
    pub rejected: u64,
    /// Sum of answered calls' waits (from arrival at the switchboard).
    pub wait_total: Duration,
    /// Longest wait of an answered call.
    pub wait_max: Duration,
    /// Callers waiting for an agent now.
    pub waiting_now: u32,
    /// Calls being offered (ringing) now.
    pub ringing_now: u32,
    /// How long the caller waiting longest now (waiting or ringing) has waited.
    pub longest_wait_now: Option<Duration>,
    /// The queue's agents by state.
    pub agents: AgentCounts,
}

impl QueueKpis {
    /// Average wait of answered calls.
    pub fn average_wait(&self) -> Option<Duration> {
        (self.answered > 0).then(|| self.wait_total / self.answered as u32)
    }

    /// The GB/T 33358 service level: share of answered calls answered within 15 s.
    pub fn service_level(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.answered_within_sl as f64 / self.answered as f64)
    }
}

/// An agent as the seat manager sees it (admin API, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    /// AOR user.
    pub id: Arc<str>,
    /// State.
    pub state: AgentState,
    /// Whether a phone is registered.
    pub registered: bool,
    /// When it last became available after work, login or break: the longest-idle order.
    pub idle_since: Instant,
    /// The call it is being offered.
    pub offer: Option<CallId>,
    /// The call it is on.
    pub call: Option<CallId>,
    /// Whether a new call may be offered to it right now.
    pub offerable: bool,
    /// When its current state times out.
    pub deadline: Option<Instant>,
    /// Missed offers in a row.
    pub missed_in_row: u32,
}

/// Where a call is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallPhase {
    /// Waiting for an agent.
    Waiting,
    /// Being offered to these agents.
    Ringing(Vec<Arc<str>>),
    /// Connected to this agent.
    Connected(Arc<str>),
}

/// A call as the seat manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    /// Its queue now.
    pub queue: Arc<str>,
    /// Where it is.
    pub phase: CallPhase,
    /// When it arrived at the switchboard.
    pub arrived: Instant,
    /// When it entered its current queue.
    pub entered_queue: Instant,
    /// Its priority.
    pub priority: u8,
}

/// An internal invariant that does not hold (see [`crate::SeatManager::check_invariants`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// An agent's state and its offer or call disagree, or it holds more than one.
    #[error("agent {agent}: state {state:?} does not match offer/call")]
    AgentMismatch {
        /// The agent.
        agent: Arc<str>,
        /// Its state.
        state: AgentState,
    },
    /// An agent is in a state that must time out, without a timer.
    #[error("agent {agent}: state {state:?} has no timeout")]
    NoTimeout {
        /// The agent.
        agent: Arc<str>,
        /// Its state.
        state: AgentState,
    },
    /// A call is offered to several agents outside ring-all, or to none.
    #[error("{call}: offered to {agents} agents in a queue that is not ring-all")]
    MultiOffer {
        /// The call.
        call: CallId,
        /// How many.
        agents: usize,
    },
    /// A call and an agent disagree about their offer or connection.
    #[error("{call} and agent {agent} disagree")]
    CallAgentMismatch {
        /// The call.
        call: CallId,
        /// The agent.
        agent: Arc<str>,
    },
    /// A caller waits while an eligible agent of its queue is idle.
    #[error("{call} waits in {queue} while agent {agent} is idle")]
    IdleWhileWaiting {
        /// The call.
        call: CallId,
        /// The queue.
        queue: Arc<str>,
        /// The idle agent.
        agent: Arc<str>,
    },
    /// An index (idle sets, waiting sets, timers, counters) disagrees with the records.
    #[error("index out of step: {0}")]
    Index(&'static str),
}
