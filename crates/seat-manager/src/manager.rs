//! The state machine: agents, queues, offers, timers.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::WallClock;
use crate::config::{ConfigError, SeatConfig, Strategy, MAX_PRIORITY};
use crate::roster::Roster;
use crate::types::*;
use crate::{Instant, SERVICE_LEVEL, SHORT_ABANDON};

/// Errors of the event handlers. Each says which input was wrong; none leaves the state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatError {
    /// The AOR user is not a configured agent (the daemon should not have sent it).
    #[error("unknown agent `{0}`")]
    UnknownAgent(String),
    /// The queue id is not configured (dialplan and seat config disagree).
    #[error("unknown queue `{0}`")]
    UnknownQueue(String),
    /// The call id is already in use.
    #[error("{0} is already known")]
    DuplicateCall(CallId),
    /// A login needs a registered phone to ring.
    #[error("agent `{0}` has no registered phone")]
    NotRegistered(String),
    /// Break needs a logged-in agent.
    #[error("agent `{0}` is not logged in")]
    NotLoggedIn(String),
}

/// `(priority desc, arrival sequence, call)`: the order callers are served in.
type WaitKey = (Reverse<u8>, u64, CallId);
/// `(strategy key, tie-break, agent index)`: the order idle agents are chosen in.
type IdleKey = (u64, u64, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Agent(u32),
    Overflow(CallId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentTimer {
    Ring,
    WrapUp,
    Audit,
    Break,
    /// Held back after a missed or refused offer (`reoffer_delay_s`).
    Cooldown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Break(BreakReason),
    Logout,
}

#[derive(Debug)]
struct Membership {
    queue: u32,
    /// Index among the queue's agents in config order (round-robin, ring-all).
    position: u32,
    /// The key under which the agent sits in the queue's idle sets, while idle.
    key: (u64, u64),
}

#[derive(Debug)]
struct Agent {
    id: Arc<str>,
    center: u32,
    memberships: Vec<Membership>,
    /// Bit i: speaks language i.
    langs: u64,
    /// (skill, level), sorted by skill.
    skills: Vec<(u16, u8)>,
    state: AgentState,
    registered: bool,
    idle_since: Instant,
    offer: Option<CallId>,
    call: Option<CallId>,
    /// The queue of the current or last call (its wrap-up time applies).
    call_queue: u32,
    call_answered: Instant,
    timer: Option<(Instant, AgentTimer)>,
    missed: u32,
    answered_since_login: u64,
    pending: Pending,
    audit_unconfirmed: bool,
    /// In its queues' idle sets.
    idle: bool,
    /// Counted in its queues' logged-in numbers: logged in, and no logout pending. An agent who
    /// asked to log out during a call no longer staffs the queue, so its callers move on at once.
    counted: bool,
}

#[derive(Debug, Default, Clone)]
struct Counters {
    offered: u64,
    redirected: u64,
    overflowed: u64,
    answered: u64,
    answered_within_sl: u64,
    abandoned: u64,
    abandoned_short: u64,
    rejected: u64,
    wait_total: Duration,
    wait_max: Duration,
}

#[derive(Debug)]
struct Queue {
    id: Arc<str>,
    center: u32,
    strategy: Strategy,
    ring_timeout: Duration,
    max_no_answer: u32,
    wrap_up: Duration,
    reoffer_delay: Duration,
    overflow_after: Option<Duration>,
    overflow_to: Option<u32>,
    max_waiting: u32,
    /// Waiting callers per language class (0: any agent; 1 + i: speakers of language i).
    waiting: Vec<BTreeSet<WaitKey>>,
    waiting_len: u32,
    waiting_by_priority: [u32; MAX_PRIORITY as usize + 1],
    /// Highest arrival sequence ever queued here: a new key above it sits at its priority's tail.
    max_seq: u64,
    /// Idle agents per language class.
    idle: Vec<BTreeSet<IdleKey>>,
    /// Logged-in agents per language class.
    logged_in: Vec<u32>,
    /// Round-robin: position of the agent offered last.
    rr_cursor: u32,
    counters: Counters,
}

#[derive(Debug)]
struct Center {
    id: Arc<str>,
    queue: u32,
    auto_login: bool,
    covered_by: Option<u32>,
    roster: Roster,
    open: bool,
}

#[derive(Debug)]
enum Phase {
    Waiting,
    Offering(Vec<u32>),
    Connected(u32),
}

#[derive(Debug)]
struct Call {
    seq: u64,
    priority: u8,
    /// Language class (0: any agent).
    class: usize,
    skill: Option<u16>,
    prefecture: Option<Arc<str>>,
    arrived: Instant,
    queue: u32,
    entered: Instant,
    /// The dialplan's fallback, while the call is still in its first queue.
    fallback: Option<(u32, Option<Duration>)>,
    phase: Phase,
    overflow_at: Option<Instant>,
    /// The overflow time passed while the call was ringing: overflow when the offer fails.
    overflow_due: bool,
}

impl Call {
    fn key(&self) -> WaitKey {
        (Reverse(self.priority), self.seq, CallId(0))
    }
}

/// The seat manager: one per switchboard, owned by one task.
///
/// Every `handle_*` takes `now` and may queue commands; drain them with [`Self::poll_command`]
/// and re-arm the one timer at [`Self::poll_timeout`] after every call (see the crate docs).
#[derive(Debug)]
pub struct SeatManager {
    agents: Vec<Agent>,
    agent_ix: HashMap<Arc<str>, u32>,
    queues: Vec<Queue>,
    queue_ix: HashMap<Arc<str>, u32>,
    centers: Vec<Center>,
    languages: HashMap<Box<str>, usize>,
    skills: HashMap<Box<str>, u16>,
    calls: HashMap<CallId, Call>,
    timers: BTreeSet<(Instant, Timer)>,
    commands: VecDeque<Command>,
    log: VecDeque<LogEntry>,
    log_capacity: usize,
    log_dropped: u64,
    next_seq: u64,
    audit: Duration,
    max_break: Duration,
    /// (queue, language class) whose logged-in count fell to zero: their callers move on.
    sweeps: Vec<(u32, usize)>,
    scratch: Vec<u32>,
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn nanos(t: Instant) -> u64 {
    t.since_origin().as_nanos() as u64
}

/// Language classes of an agent: 0 (everyone) and one per language spoken.
fn classes(langs: u64) -> impl Iterator<Item = usize> {
    let mut bits = langs;
    std::iter::once(0).chain(std::iter::from_fn(move || {
        (bits != 0).then(|| {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            b + 1
        })
    }))
}

impl SeatManager {
    /// Builds the seat manager from a config, which it validates. Every agent starts logged out
    /// and unregistered; every center starts open until the first [`Self::handle_wall_clock`],
    /// which the daemon should call at once.
    pub fn new(config: &SeatConfig) -> Result<SeatManager, ConfigError> {
        config.validate()?;
        let mut languages: HashMap<Box<str>, usize> = HashMap::new();
        let mut skills: HashMap<Box<str>, u16> = HashMap::new();
        for a in &config.agents {
            for l in &a.languages {
                let n = languages.len();
                languages.entry(l.as_str().into()).or_insert(n);
            }
            for s in a.skills.keys() {
                let n = skills.len() as u16;
                skills.entry(s.as_str().into()).or_insert(n);
            }
        }
        let n_classes = languages.len() + 1;
        let queue_ix: HashMap<Arc<str>, u32> = config
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| (Arc::from(q.id.as_str()), i as u32))
            .collect();
        let center_ix: HashMap<&str, u32> = config
            .centers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i as u32))
            .collect();
        let queues = config
            .queues
            .iter()
            .map(|q| Queue {
                id: q.id.as_str().into(),
                center: center_ix[q.center.as_str()],
                strategy: q.strategy,
                ring_timeout: secs(q.ring_timeout_s),
                max_no_answer: q.max_no_answer,
                wrap_up: secs(q.wrap_up_s),
                reoffer_delay: secs(q.reoffer_delay_s),
                overflow_after: q.overflow_after_s.map(secs),
                overflow_to: q.overflow_to.as_deref().map(|t| queue_ix[t]),
                max_waiting: q.max_waiting,
                waiting: vec![BTreeSet::new(); n_classes],
                waiting_len: 0,
                waiting_by_priority: [0; MAX_PRIORITY as usize + 1],
                max_seq: 0,
                idle: vec![BTreeSet::new(); n_classes],
                logged_in: vec![0; n_classes],
                rr_cursor: u32::MAX,
                counters: Counters::default(),
            })
            .collect::<Vec<_>>();
        let centers = config
            .centers
            .iter()
            .map(|c| Center {
                id: c.id.as_str().into(),
                queue: queue_ix[c.queue.as_str()],
                auto_login: c.auto_login_on_register,
                covered_by: c.covered_by.as_deref().map(|cov| center_ix[cov]),
                roster: Roster::new(c),
                open: true,
            })
            .collect();
        let mut members = vec![0u32; queues.len()];
        let mut agents = Vec::with_capacity(config.agents.len());
        let mut agent_ix = HashMap::with_capacity(config.agents.len());
        for (i, a) in config.agents.iter().enumerate() {
            let id: Arc<str> = a.id.as_str().into();
            agent_ix.insert(id.clone(), i as u32);
            let memberships = a
                .queues
                .iter()
                .map(|q| {
                    let queue = queue_ix[q.as_str()];
                    let position = members[queue as usize];
                    members[queue as usize] += 1;
                    Membership {
                        queue,
                        position,
                        key: (0, 0),
                    }
                })
                .collect();
            let mut agent_skills: Vec<(u16, u8)> = a
                .skills
                .iter()
                .map(|(s, &l)| (skills[s.as_str()], l))
                .collect();
            agent_skills.sort_unstable();
            agents.push(Agent {
                id,
                center: center_ix[a.center.as_str()],
                memberships,
                langs: a
                    .languages
                    .iter()
                    .fold(0, |m, l| m | 1 << languages[l.as_str()]),
                skills: agent_skills,
                state: AgentState::LoggedOut,
                registered: false,
                idle_since: Instant::ZERO,
                offer: None,
                call: None,
                call_queue: 0,
                call_answered: Instant::ZERO,
                timer: None,
                missed: 0,
                answered_since_login: 0,
                pending: Pending::None,
                audit_unconfirmed: false,
                idle: false,
                counted: false,
            });
        }
        Ok(SeatManager {
            agents,
            agent_ix,
            queues,
            queue_ix,
            centers,
            languages,
            skills,
            calls: HashMap::new(),
            timers: BTreeSet::new(),
            commands: VecDeque::new(),
            log: VecDeque::new(),
            log_capacity: config.queue_log_capacity.max(1),
            log_dropped: 0,
            next_seq: 1,
            audit: secs(config.call_audit_s),
            max_break: secs(config.max_break_s),
            sweeps: Vec::new(),
            scratch: Vec::new(),
        })
    }

    // ----- outputs -------------------------------------------------------------------------

    /// The next command for the daemon, in the order decided.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// Takes the queue log written since the last call.
    pub fn drain_log(&mut self) -> impl Iterator<Item = LogEntry> + '_ {
        self.log.drain(..)
    }

    /// Log entries dropped because the log was full (`queue_log_capacity`).
    pub fn log_dropped(&self) -> u64 {
        self.log_dropped
    }

    // ----- inputs: agents ------------------------------------------------------------------

    /// The agent's phone registered. With its center's `auto_login_on_register`, a logged-out
    /// agent is logged in. Refreshes of a live registration are harmless.
    pub fn handle_agent_registered(&mut self, now: Instant, agent: &str) -> Result<(), SeatError> {
        let a = self.agent(agent)?;
        let ag = &mut self.agents[a as usize];
        if ag.registered {
            return Ok(());
        }
        ag.registered = true;
        if self.centers[ag.center as usize].auto_login && ag.state == AgentState::LoggedOut {
            self.login(now, a);
        }
        self.settle(now);
        Ok(())
    }

    /// The agent's last registration was removed or expired: the agent is logged out (at the end
    /// of a call in progress).
    pub fn handle_agent_unregistered(
        &mut self,
        now: Instant,
        agent: &str,
    ) -> Result<(), SeatError> {
        let a = self.agent(agent)?;
        self.agents[a as usize].registered = false;
        self.logout(now, a);
        self.settle(now);
        Ok(())
    }

    /// A feature code or admin request. Returns the agent's state afterwards (a logout or break
    /// asked for during a call is pending until it ends).
    pub fn handle_agent_action(
        &mut self,
        now: Instant,
        agent: &str,
        action: AgentAction,
    ) -> Result<AgentState, SeatError> {
        let a = self.agent(agent)?;
        let state = self.agents[a as usize].state;
        match action {
            AgentAction::Login | AgentAction::Ready if state == AgentState::LoggedOut => {
                if !self.agents[a as usize].registered {
                    return Err(SeatError::NotRegistered(agent.to_owned()));
                }
                self.login(now, a);
            }
            AgentAction::Login => {}
            AgentAction::Ready => self.ready(now, a),
            AgentAction::Logout => self.logout(now, a),
            AgentAction::Break(_) if state == AgentState::LoggedOut => {
                return Err(SeatError::NotLoggedIn(agent.to_owned()));
            }
            AgentAction::Break(code) => self.take_break(now, a, BreakReason::Requested(code)),
        }
        self.settle(now);
        Ok(self.agents[a as usize].state)
    }

    // ----- inputs: calls -------------------------------------------------------------------

    /// A call for a queue. It is offered at once if an agent is free, or queued (`Queued`), or
    /// moved on by roster cover and overflow, or refused when the queue is full.
    pub fn handle_call_arrived(
        &mut self,
        now: Instant,
        arrival: Arrival<'_>,
    ) -> Result<(), SeatError> {
        let q = self.queue(arrival.queue)?;
        let fallback = match arrival.fallback {
            Some(f) => Some((self.queue(f.queue)?, f.after)),
            None => None,
        };
        if self.calls.contains_key(&arrival.call) {
            return Err(SeatError::DuplicateCall(arrival.call));
        }
        // A language nobody is configured to speak cannot be honoured anywhere: any agent.
        let class = arrival
            .language
            .and_then(|l| self.languages.get(l))
            .map_or(0, |&i| i + 1);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.calls.insert(
            arrival.call,
            Call {
                seq,
                priority: arrival.priority.min(MAX_PRIORITY),
                class,
                skill: arrival.skill.and_then(|s| self.skills.get(s).copied()),
                prefecture: arrival.prefecture.map(Arc::from),
                arrived: now,
                queue: q,
                entered: now,
                fallback,
                phase: Phase::Offering(Vec::new()),
                overflow_at: None,
                overflow_due: false,
            },
        );
        self.enter(now, arrival.call, q, true);
        self.settle(now);
        Ok(())
    }

    /// How an offer ended on the agent's side. An answer from an agent whose offer was already
    /// withdrawn (the 200 OK crossed the CANCEL) still connects the call if the call is waiting
    /// or ringing elsewhere; if the call is gone or taken, `HangUpAgentLeg` tells the daemon to
    /// end that leg. Refusals for offers already withdrawn are ignored.
    pub fn handle_offer_outcome(
        &mut self,
        now: Instant,
        call: CallId,
        agent: &str,
        outcome: OfferOutcome,
    ) -> Result<(), SeatError> {
        let a = self.agent(agent)?;
        match outcome {
            OfferOutcome::Answered => self.answered(now, call, a),
            _ if self.agents[a as usize].offer == Some(call) => {
                self.offer_failed(now, call, a, outcome, false)
            }
            _ => {}
        }
        self.settle(now);
        Ok(())
    }

    /// The caller hung up (CANCEL) before being connected: the call leaves its queue, counted as
    /// abandoned, and ringing agents are cancelled. Unknown calls are ignored (a CANCEL racing a
    /// final response).
    pub fn handle_caller_abandoned(&mut self, now: Instant, call: CallId) {
        match self.calls.get(&call).map(|c| &c.phase) {
            Some(Phase::Connected(_)) => self.call_ended(now, call),
            Some(_) => self.abandon(now, call),
            None => {}
        }
        self.settle(now);
    }

    /// The call ended (BYE from either side, or the dialog failed). The agent goes to wrap-up.
    /// A call not yet connected counts as abandoned. Unknown calls are ignored.
    pub fn handle_call_ended(&mut self, now: Instant, call: CallId) {
        match self.calls.get(&call).map(|c| &c.phase) {
            Some(Phase::Connected(_)) => self.call_ended(now, call),
            Some(_) => self.abandon(now, call),
            None => {}
        }
        self.settle(now);
    }

    /// Answer to `AuditCall`: the call's dialog is still up.
    pub fn handle_call_alive(&mut self, _now: Instant, call: CallId) {
        if let Some(Phase::Connected(a)) = self.calls.get(&call).map(|c| &c.phase) {
            self.agents[*a as usize].audit_unconfirmed = false;
        }
    }

    /// The wall clock, at least once a minute: opens and closes centers by their rosters. Callers
    /// waiting at a center that closes move to the center covering it.
    pub fn handle_wall_clock(&mut self, now: Instant, wall: WallClock) {
        let local = wall.local();
        let mut closed = Vec::new();
        for c in 0..self.centers.len() {
            let center = &mut self.centers[c];
            let open = center.roster.open_at(local);
            if open == center.open {
                continue;
            }
            center.open = open;
            let id = center.id.clone();
            let event = if open {
                LogEvent::CenterOpened { center: id }
            } else {
                closed.push(c as u32);
                LogEvent::CenterClosed { center: id }
            };
            self.log(now, None, None, None, event);
        }
        for c in closed {
            for q in 0..self.queues.len() as u32 {
                if self.queues[q as usize].center != c {
                    continue;
                }
                for id in self.waiting_calls(q, 0) {
                    if let Some(to) = self.next_hop(id, q, OverflowReason::CenterClosed) {
                        self.move_on(now, id, to, OverflowReason::CenterClosed);
                    }
                }
            }
        }
        self.settle(now);
    }

    /// The timer from [`Self::poll_timeout`] fired: ring timeouts, wrap-up ends, overflows, audits,
    /// break limits and re-offer delays due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Agent(a) => {
                    if let Some((_, kind)) = self.agents[a as usize].timer.take() {
                        self.agent_timer(now, a, kind);
                    }
                }
                Timer::Overflow(id) => self.overflow_timer(now, id),
            }
            self.settle(now);
        }
    }

    // ----- views ---------------------------------------------------------------------------

    /// KPIs of every queue, in config order.
    pub fn kpis(&self, now: Instant) -> Vec<QueueKpis> {
        let mut live: Vec<(u32, Option<Duration>)> = vec![(0, None); self.queues.len()];
        for call in self.calls.values() {
            if matches!(call.phase, Phase::Connected(_)) {
                continue;
            }
            let l = &mut live[call.queue as usize];
            if matches!(call.phase, Phase::Offering(_)) {
                l.0 += 1;
            }
            let w = now - call.arrived;
            l.1 = Some(l.1.map_or(w, |m| m.max(w)));
        }
        let mut agents = vec![AgentCounts::default(); self.queues.len()];
        for a in &self.agents {
            for m in &a.memberships {
                let c = &mut agents[m.queue as usize];
                match a.state {
                    AgentState::LoggedOut => c.logged_out += 1,
                    AgentState::Available => c.available += 1,
                    AgentState::Ringing => c.ringing += 1,
                    AgentState::OnCall => c.on_call += 1,
                    AgentState::WrapUp => c.wrap_up += 1,
                    AgentState::Break(_) => c.on_break += 1,
                }
            }
        }
        self.queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let c = &q.counters;
                QueueKpis {
                    queue: q.id.clone(),
                    offered: c.offered,
                    redirected: c.redirected,
                    overflowed: c.overflowed,
                    answered: c.answered,
                    answered_within_sl: c.answered_within_sl,
                    abandoned: c.abandoned,
                    abandoned_short: c.abandoned_short,
                    rejected: c.rejected,
                    wait_total: c.wait_total,
                    wait_max: c.wait_max,
                    waiting_now: q.waiting_len,
                    ringing_now: live[i].0,
                    longest_wait_now: live[i].1,
                    agents: agents[i],
                }
            })
            .collect()
    }

    /// One agent, for the admin API and tests.
    pub fn agent_view(&self, agent: &str) -> Option<AgentView> {
        let a = &self.agents[*self.agent_ix.get(agent)? as usize];
        Some(AgentView {
            id: a.id.clone(),
            state: a.state,
            registered: a.registered,
            idle_since: a.idle_since,
            offer: a.offer,
            call: a.call,
            offerable: a.idle,
            deadline: a.timer.map(|(t, _)| t),
            missed_in_row: a.missed,
        })
    }

    /// One call, for the admin API and tests.
    pub fn call_view(&self, call: CallId) -> Option<CallView> {
        let c = self.calls.get(&call)?;
        let name = |a: &u32| self.agents[*a as usize].id.clone();
        Some(CallView {
            queue: self.queues[c.queue as usize].id.clone(),
            phase: match &c.phase {
                Phase::Waiting => CallPhase::Waiting,
                Phase::Offering(list) => CallPhase::Ringing(list.iter().map(name).collect()),
                Phase::Connected(a) => CallPhase::Connected(name(a)),
            },
            arrived: c.arrived,
            entered_queue: c.entered,
            priority: c.priority,
        })
    }

    /// Agent ids, in config order.
    pub fn agent_ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.agents.iter().map(|a| &a.id)
    }

    /// Whether a center is open by its roster (as of the last wall-clock tick).
    pub fn center_open(&self, center: &str) -> Option<bool> {
        self.centers
            .iter()
            .find(|c| &*c.id == center)
            .map(|c| c.open)
    }

    /// Calls the seat manager holds (waiting, ringing or connected).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Checks every invariant against every record: O(agents + calls), for tests and debug
    /// builds of the daemon, not the hot path.
    ///
    /// - no agent is offered two calls, nor offered one while on another;
    /// - no call is offered to two agents, except under ring-all;
    /// - no agent stays in a state without a timeout (ringing, on call, wrap-up, break);
    /// - no caller waits while an agent who may take it is idle;
    /// - the indexes (idle and waiting sets, timers, logged-in counts) match the records.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let mut timers = 0usize;
        let mut logged_in: Vec<Vec<u32>> = self
            .queues
            .iter()
            .map(|q| vec![0; q.logged_in.len()])
            .collect();
        for (i, a) in self.agents.iter().enumerate() {
            let mismatch = || Violation::AgentMismatch {
                agent: a.id.clone(),
                state: a.state,
            };
            let no_timeout = || Violation::NoTimeout {
                agent: a.id.clone(),
                state: a.state,
            };
            let kind = a.timer.map(|(_, k)| k);
            match a.state {
                AgentState::Ringing if a.offer.is_none() || a.call.is_some() => {
                    return Err(mismatch())
                }
                AgentState::OnCall if a.call.is_none() || a.offer.is_some() => {
                    return Err(mismatch())
                }
                AgentState::Ringing | AgentState::OnCall => {}
                _ if a.offer.is_some() || a.call.is_some() => return Err(mismatch()),
                _ => {}
            }
            let want = match a.state {
                AgentState::Ringing => Some(AgentTimer::Ring),
                AgentState::OnCall => Some(AgentTimer::Audit),
                AgentState::WrapUp => Some(AgentTimer::WrapUp),
                AgentState::Break(_) => Some(AgentTimer::Break),
                AgentState::Available | AgentState::LoggedOut => None,
            };
            if want.is_some() && kind != want {
                return Err(no_timeout());
            }
            let idle_ok = a.state == AgentState::Available
                && (kind.is_none() && a.idle || kind == Some(AgentTimer::Cooldown) && !a.idle);
            if a.state == AgentState::Available && !idle_ok
                || a.state != AgentState::Available && a.idle
                || a.state == AgentState::LoggedOut && a.timer.is_some()
            {
                return Err(Violation::Index("agent idle flag or cooldown"));
            }
            if let Some((t, _)) = a.timer {
                timers += 1;
                if !self.timers.contains(&(t, Timer::Agent(i as u32))) {
                    return Err(Violation::Index("agent timer missing from the timer set"));
                }
            }
            for m in &a.memberships {
                let q = &self.queues[m.queue as usize];
                for class in classes(a.langs) {
                    let present = q.idle[class].contains(&(m.key.0, m.key.1, i as u32));
                    if present != a.idle {
                        return Err(Violation::Index("idle set"));
                    }
                    if a.state != AgentState::LoggedOut && a.pending != Pending::Logout {
                        logged_in[m.queue as usize][class] += 1;
                    }
                }
            }
            if let Some(c) = a.offer {
                match self.calls.get(&c).map(|c| &c.phase) {
                    Some(Phase::Offering(list)) if list.contains(&(i as u32)) => {}
                    _ => {
                        return Err(Violation::CallAgentMismatch {
                            call: c,
                            agent: a.id.clone(),
                        })
                    }
                }
            }
        }
        for (qi, q) in self.queues.iter().enumerate() {
            if q.logged_in != logged_in[qi] {
                return Err(Violation::Index("logged-in counts"));
            }
            let idle_total: usize = q.idle[0].len();
            if idle_total > 0 {
                for class in 0..q.waiting.len() {
                    if let (Some(w), Some(idle)) = (q.waiting[class].first(), q.idle[class].first())
                    {
                        return Err(Violation::IdleWhileWaiting {
                            call: w.2,
                            queue: q.id.clone(),
                            agent: self.agents[idle.2 as usize].id.clone(),
                        });
                    }
                }
            }
            let n: usize = q.waiting.iter().map(BTreeSet::len).sum();
            if n != q.waiting_len as usize
                || q.waiting_by_priority.iter().sum::<u32>() != q.waiting_len
            {
                return Err(Violation::Index("waiting counts"));
            }
        }
        let mut waiting = 0usize;
        for (&id, c) in &self.calls {
            if let Some(t) = c.overflow_at {
                timers += 1;
                if !self.timers.contains(&(t, Timer::Overflow(id))) {
                    return Err(Violation::Index(
                        "overflow timer missing from the timer set",
                    ));
                }
            }
            match &c.phase {
                Phase::Waiting => {
                    waiting += 1;
                    let mut key = c.key();
                    key.2 = id;
                    if !self.queues[c.queue as usize].waiting[c.class].contains(&key) {
                        return Err(Violation::Index("waiting call missing from its set"));
                    }
                }
                Phase::Offering(list) => {
                    let ring_all = self.queues[c.queue as usize].strategy == Strategy::RingAll;
                    if list.is_empty() || list.len() > 1 && !ring_all {
                        return Err(Violation::MultiOffer {
                            call: id,
                            agents: list.len(),
                        });
                    }
                    for &a in list {
                        let ag = &self.agents[a as usize];
                        if ag.offer != Some(id) || ag.state != AgentState::Ringing {
                            return Err(Violation::CallAgentMismatch {
                                call: id,
                                agent: ag.id.clone(),
                            });
                        }
                    }
                }
                Phase::Connected(a) => {
                    let ag = &self.agents[*a as usize];
                    if ag.call != Some(id) {
                        return Err(Violation::CallAgentMismatch {
                            call: id,
                            agent: ag.id.clone(),
                        });
                    }
                }
            }
        }
        let queued: usize = self.queues.iter().map(|q| q.waiting_len as usize).sum();
        if waiting != queued {
            return Err(Violation::Index("waiting calls vs queue sets"));
        }
        if timers != self.timers.len() {
            return Err(Violation::Index("timer set has stale entries"));
        }
        Ok(())
    }

    // ----- internals: lookups and output ---------------------------------------------------

    fn agent(&self, id: &str) -> Result<u32, SeatError> {
        self.agent_ix
            .get(id)
            .copied()
            .ok_or_else(|| SeatError::UnknownAgent(id.to_owned()))
    }

    fn queue(&self, id: &str) -> Result<u32, SeatError> {
        self.queue_ix
            .get(id)
            .copied()
            .ok_or_else(|| SeatError::UnknownQueue(id.to_owned()))
    }

    fn emit(&mut self, c: Command) {
        self.commands.push_back(c);
    }

    fn log(
        &mut self,
        at: Instant,
        queue: Option<u32>,
        call: Option<CallId>,
        agent: Option<u32>,
        event: LogEvent,
    ) {
        if self.log.len() >= self.log_capacity {
            self.log.pop_front();
            self.log_dropped += 1;
        }
        self.log.push_back(LogEntry {
            at,
            queue: queue.map(|q| self.queues[q as usize].id.clone()),
            call,
            agent: agent.map(|a| self.agents[a as usize].id.clone()),
            event,
        });
    }

    // ----- internals: timers ---------------------------------------------------------------

    fn set_agent_timer(&mut self, a: u32, timer: Option<(Instant, AgentTimer)>) {
        let ag = &mut self.agents[a as usize];
        if let Some((old, _)) = ag.timer {
            self.timers.remove(&(old, Timer::Agent(a)));
        }
        ag.timer = timer;
        if let Some((at, _)) = timer {
            self.timers.insert((at, Timer::Agent(a)));
        }
    }

    fn set_overflow_timer(&mut self, id: CallId, at: Option<Instant>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(old) = call.overflow_at {
            self.timers.remove(&(old, Timer::Overflow(id)));
        }
        call.overflow_at = at;
        if let Some(at) = at {
            self.timers.insert((at, Timer::Overflow(id)));
        }
    }

    fn agent_timer(&mut self, now: Instant, a: u32, kind: AgentTimer) {
        match kind {
            AgentTimer::Ring => {
                if let Some(call) = self.agents[a as usize].offer {
                    self.offer_failed(now, call, a, OfferOutcome::Unreachable, true);
                }
            }
            AgentTimer::WrapUp => self.after_work(now, a),
            AgentTimer::Audit => {
                let Some(call) = self.agents[a as usize].call else {
                    return;
                };
                let id = self.agents[a as usize].id.clone();
                if self.agents[a as usize].audit_unconfirmed {
                    self.emit(Command::ReleaseCall { call, agent: id });
                    let q = self.agents[a as usize].call_queue;
                    self.log(now, Some(q), Some(call), Some(a), LogEvent::Released);
                    self.call_ended(now, call);
                } else {
                    self.agents[a as usize].audit_unconfirmed = true;
                    self.emit(Command::AuditCall { call, agent: id });
                    self.set_agent_timer(a, Some((now + self.audit, AgentTimer::Audit)));
                }
            }
            AgentTimer::Break => self.logout(now, a),
            AgentTimer::Cooldown => self.agent_free(now, a),
        }
    }

    fn overflow_timer(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.overflow_at = None;
        match call.phase {
            Phase::Waiting => {
                let q = call.queue;
                if let Some(to) = self.next_hop(id, q, OverflowReason::Timeout) {
                    self.move_on(now, id, to, OverflowReason::Timeout);
                }
            }
            Phase::Offering(_) => call.overflow_due = true,
            Phase::Connected(_) => {}
        }
    }

    // ----- internals: agent state ----------------------------------------------------------

    fn set_state(&mut self, now: Instant, a: u32, to: AgentState) {
        let ag = &mut self.agents[a as usize];
        let from = ag.state;
        if from == to {
            return;
        }
        ag.state = to;
        if from == AgentState::LoggedOut {
            self.set_counted(a, true);
        } else if to == AgentState::LoggedOut {
            self.set_counted(a, false);
        }
        let agent = self.agents[a as usize].id.clone();
        self.emit(Command::AgentStateChanged { agent, from, to });
        self.log(now, None, None, Some(a), LogEvent::AgentState { from, to });
    }

    /// Adds the agent to (or removes it from) its queues' logged-in counts; a queue class that
    /// loses its last agent is swept by [`Self::settle`].
    fn set_counted(&mut self, a: u32, counted: bool) {
        let ag = &mut self.agents[a as usize];
        if ag.counted == counted {
            return;
        }
        ag.counted = counted;
        for m in &ag.memberships {
            let q = &mut self.queues[m.queue as usize];
            for class in classes(ag.langs) {
                if counted {
                    q.logged_in[class] += 1;
                } else {
                    q.logged_in[class] -= 1;
                    if q.logged_in[class] == 0 {
                        self.sweeps.push((m.queue, class));
                    }
                }
            }
        }
    }

    fn login(&mut self, now: Instant, a: u32) {
        let ag = &mut self.agents[a as usize];
        ag.idle_since = now;
        ag.answered_since_login = 0;
        ag.missed = 0;
        ag.pending = Pending::None;
        self.set_state(now, a, AgentState::Available);
        self.agent_free(now, a);
    }

    fn logout(&mut self, now: Instant, a: u32) {
        match self.agents[a as usize].state {
            AgentState::LoggedOut => {}
            AgentState::OnCall => {
                self.agents[a as usize].pending = Pending::Logout;
                self.set_counted(a, false);
            }
            AgentState::Ringing => {
                let call = self.withdraw_offer(a, true);
                self.set_agent_timer(a, None);
                self.set_state(now, a, AgentState::LoggedOut);
                self.offer_gone(now, call, a);
            }
            _ => {
                self.remove_idle(a);
                self.set_agent_timer(a, None);
                self.agents[a as usize].pending = Pending::None;
                self.set_state(now, a, AgentState::LoggedOut);
            }
        }
    }

    fn ready(&mut self, now: Instant, a: u32) {
        match self.agents[a as usize].state {
            AgentState::Break(_) | AgentState::WrapUp => {
                self.set_agent_timer(a, None);
                let ag = &mut self.agents[a as usize];
                ag.idle_since = now;
                ag.missed = 0;
                ag.pending = Pending::None;
                self.set_state(now, a, AgentState::Available);
                self.agent_free(now, a);
            }
            // Cancels a break or logout asked for during the call.
            AgentState::OnCall => {
                self.agents[a as usize].pending = Pending::None;
                self.set_counted(a, true);
            }
            _ => {}
        }
    }

    fn take_break(&mut self, now: Instant, a: u32, reason: BreakReason) {
        match self.agents[a as usize].state {
            AgentState::LoggedOut => {}
            AgentState::OnCall => {
                self.agents[a as usize].pending = Pending::Break(reason);
                self.set_counted(a, true);
            }
            AgentState::Ringing => {
                let call = self.withdraw_offer(a, true);
                self.start_break(now, a, reason);
                self.offer_gone(now, call, a);
            }
            _ => {
                self.remove_idle(a);
                self.start_break(now, a, reason);
            }
        }
    }

    fn start_break(&mut self, now: Instant, a: u32, reason: BreakReason) {
        self.agents[a as usize].pending = Pending::None;
        self.set_agent_timer(a, Some((now + self.max_break, AgentTimer::Break)));
        self.set_state(now, a, AgentState::Break(reason));
    }

    /// End of wrap-up (or of a call without wrap-up): pending break, or available.
    fn after_work(&mut self, now: Instant, a: u32) {
        match self.agents[a as usize].pending {
            Pending::Break(r) => self.start_break(now, a, r),
            Pending::Logout => {
                self.set_agent_timer(a, None);
                self.agents[a as usize].pending = Pending::None;
                self.set_state(now, a, AgentState::LoggedOut);
            }
            Pending::None => {
                self.set_agent_timer(a, None);
                self.agents[a as usize].idle_since = now;
                self.set_state(now, a, AgentState::Available);
                self.agent_free(now, a);
            }
        }
    }

    /// An available agent with no hold-back: serve the best waiting caller it may take, or join
    /// the idle sets.
    fn agent_free(&mut self, now: Instant, a: u32) {
        let ag = &self.agents[a as usize];
        debug_assert_eq!(ag.state, AgentState::Available);
        let mut best: Option<(WaitKey, u32)> = None;
        for m in &ag.memberships {
            let q = &self.queues[m.queue as usize];
            if q.waiting_len == 0 {
                continue;
            }
            for class in classes(ag.langs) {
                if let Some(&k) = q.waiting[class].first() {
                    if best.is_none_or(|(b, _)| k < b) {
                        best = Some((k, m.queue));
                    }
                }
            }
        }
        match best {
            Some((key, _)) => {
                self.take_waiting(key.2);
                self.offer(now, key.2, &[a]);
            }
            None => self.insert_idle(a),
        }
    }

    fn insert_idle(&mut self, a: u32) {
        let ag = &mut self.agents[a as usize];
        if ag.idle {
            return;
        }
        ag.idle = true;
        let since = nanos(ag.idle_since);
        for m in &mut ag.memberships {
            let q = &mut self.queues[m.queue as usize];
            m.key = match q.strategy {
                Strategy::LongestIdle | Strategy::SkillLevel => (since, 0),
                Strategy::FewestCalls => (ag.answered_since_login, since),
                Strategy::RoundRobin | Strategy::RingAll => (u64::from(m.position), 0),
            };
            for class in classes(ag.langs) {
                q.idle[class].insert((m.key.0, m.key.1, a));
            }
        }
    }

    fn remove_idle(&mut self, a: u32) {
        let ag = &mut self.agents[a as usize];
        if !ag.idle {
            return;
        }
        ag.idle = false;
        for m in &ag.memberships {
            let q = &mut self.queues[m.queue as usize];
            for class in classes(ag.langs) {
                q.idle[class].remove(&(m.key.0, m.key.1, a));
            }
        }
    }

    // ----- internals: queues ---------------------------------------------------------------

    /// Where a call in queue `q` would go for `reason`, if anywhere. The dialplan's fallback
    /// applies while the call is in its first queue.
    fn next_hop(&self, id: CallId, q: u32, reason: OverflowReason) -> Option<u32> {
        let call = &self.calls[&id];
        let fallback = call.fallback.map(|(f, _)| f);
        match reason {
            OverflowReason::CenterClosed => {
                let c = &self.centers[self.queues[q as usize].center as usize];
                fallback.or(c.covered_by.map(|cov| self.centers[cov as usize].queue))
            }
            OverflowReason::NoAgent | OverflowReason::Timeout => {
                fallback.or(self.queues[q as usize].overflow_to)
            }
        }
    }

    /// Why a call entering `q` must move on at once, and where to.
    fn pass_on(&self, id: CallId, q: u32) -> Option<(u32, OverflowReason)> {
        let queue = &self.queues[q as usize];
        if !self.centers[queue.center as usize].open {
            if let Some(to) = self.next_hop(id, q, OverflowReason::CenterClosed) {
                return Some((to, OverflowReason::CenterClosed));
            }
        }
        if queue.logged_in[self.calls[&id].class] == 0 {
            if let Some(to) = self.next_hop(id, q, OverflowReason::NoAgent) {
                return Some((to, OverflowReason::NoAgent));
            }
        }
        None
    }

    /// The call enters queue `q` (an arrival, or the target of an overflow): it is passed on
    /// while the queue's center is closed or no agent is logged in, then waits or is offered.
    fn enter(&mut self, now: Instant, id: CallId, mut q: u32, arrival: bool) {
        let mut hops = 0;
        loop {
            self.queues[q as usize].counters.offered += 1;
            let call = self.calls.get_mut(&id).expect("entering call exists");
            call.queue = q;
            call.entered = now;
            let (priority, prefecture) = (call.priority, call.prefecture.clone());
            self.log(
                now,
                Some(q),
                Some(id),
                None,
                LogEvent::Enter {
                    priority,
                    prefecture,
                },
            );
            // The hop limit only guards against a cover/overflow mix that validation cannot see.
            match self.pass_on(id, q) {
                Some((to, reason)) if hops <= self.queues.len() => {
                    hops += 1;
                    self.queues[q as usize].counters.redirected += 1;
                    self.hop_out(now, id, q, to, reason);
                    q = to;
                }
                _ => break,
            }
        }
        let queue = &self.queues[q as usize];
        let call = self.calls.get_mut(&id).expect("entering call exists");
        if call.class != 0 && queue.logged_in[call.class] == 0 {
            call.class = 0;
            self.log(now, Some(q), Some(id), None, LogEvent::LanguageRelaxed);
        }
        let queue = &self.queues[q as usize];
        if arrival && queue.waiting_len >= queue.max_waiting {
            self.queues[q as usize].counters.rejected += 1;
            self.calls.remove(&id);
            let queue = self.queues[q as usize].id.clone();
            self.emit(Command::Rejected {
                call: id,
                queue,
                reason: RejectReason::QueueFull,
            });
            self.log(now, Some(q), Some(id), None, LogEvent::Rejected);
            return;
        }
        if arrival && queue.logged_in[0] == 0 {
            let queue = queue.id.clone();
            self.emit(Command::NoAgentAnywhere { call: id, queue });
            self.log(now, Some(q), Some(id), None, LogEvent::NoAgentAnywhere);
        }
        let call = &self.calls[&id];
        let after = match call.fallback {
            Some((_, after)) => after,
            None if self.queues[q as usize].overflow_to.is_some() => {
                self.queues[q as usize].overflow_after
            }
            None => None,
        };
        self.set_overflow_timer(id, after.map(|d| now + d));
        self.wait_or_offer(now, id);
    }

    /// Bookkeeping of a call leaving `from` for `to`; the caller then enters `to`.
    fn hop_out(&mut self, now: Instant, id: CallId, from: u32, to: u32, reason: OverflowReason) {
        if let Some(call) = self.calls.get_mut(&id) {
            call.fallback = None;
            call.overflow_due = false;
        }
        let (f, t) = (
            self.queues[from as usize].id.clone(),
            self.queues[to as usize].id.clone(),
        );
        self.emit(Command::Overflowed {
            call: id,
            from: f,
            to: t.clone(),
            reason,
        });
        self.log(
            now,
            Some(from),
            Some(id),
            None,
            LogEvent::Overflow { to: t, reason },
        );
    }

    /// A call that waited (or rang) in its queue moves to another.
    fn move_on(&mut self, now: Instant, id: CallId, to: u32, reason: OverflowReason) {
        if matches!(self.calls[&id].phase, Phase::Waiting) {
            self.take_waiting(id);
        }
        self.set_overflow_timer(id, None);
        let from = self.calls[&id].queue;
        self.queues[from as usize].counters.overflowed += 1;
        self.hop_out(now, id, from, to, reason);
        self.enter(now, id, to, false);
    }

    /// Puts a call (not in any set) into its queue's waiting set; offers it if an agent is idle,
    /// else tells the daemon it is queued.
    fn wait_or_offer(&mut self, now: Instant, id: CallId) {
        let call = self.calls.get_mut(&id).expect("call exists");
        call.phase = Phase::Waiting;
        let mut key = call.key();
        key.2 = id;
        let (q, class, priority) = (call.queue, call.class, call.priority);
        let queue = &mut self.queues[q as usize];
        queue.waiting[class].insert(key);
        queue.waiting_len += 1;
        queue.waiting_by_priority[priority as usize] += 1;
        if !queue.idle[class].is_empty() && self.try_assign(now, id) {
            return;
        }
        let queue = &mut self.queues[q as usize];
        let higher: u32 = queue.waiting_by_priority[priority as usize + 1..]
            .iter()
            .sum();
        let same_before = if key.1 > queue.max_seq {
            // The newest arrival of its priority: behind every other one.
            queue.waiting_by_priority[priority as usize] - 1
        } else {
            let from = (Reverse(priority), 0, CallId(0));
            queue
                .waiting
                .iter()
                .map(|set| set.range(from..key).count() as u32)
                .sum()
        };
        queue.max_seq = queue.max_seq.max(key.1);
        let queue = queue.id.clone();
        self.emit(Command::Queued {
            call: id,
            queue,
            position: higher + same_before + 1,
        });
    }

    /// Removes a waiting call from its queue's set.
    fn take_waiting(&mut self, id: CallId) {
        let call = self.calls.get_mut(&id).expect("call exists");
        let mut key = call.key();
        key.2 = id;
        call.phase = Phase::Offering(Vec::new());
        let queue = &mut self.queues[call.queue as usize];
        if queue.waiting[call.class].remove(&key) {
            queue.waiting_len -= 1;
            queue.waiting_by_priority[call.priority as usize] -= 1;
        }
    }

    /// Waiting calls of queue `q` in language class `class` (0: all classes), in serving order.
    fn waiting_calls(&self, q: u32, class: usize) -> Vec<CallId> {
        let queue = &self.queues[q as usize];
        let mut keys: Vec<WaitKey> = if class == 0 {
            queue.waiting.iter().flatten().copied().collect()
        } else {
            queue.waiting[class].iter().copied().collect()
        };
        keys.sort_unstable();
        keys.into_iter().map(|k| k.2).collect()
    }

    /// Picks the agent(s) for a waiting call by its queue's strategy and offers it.
    fn try_assign(&mut self, now: Instant, id: CallId) -> bool {
        let mut chosen = mem::take(&mut self.scratch);
        chosen.clear();
        let call = &self.calls[&id];
        let q = &self.queues[call.queue as usize];
        let idle = &q.idle[call.class];
        match q.strategy {
            Strategy::LongestIdle | Strategy::FewestCalls => {
                chosen.extend(idle.first().map(|k| k.2))
            }
            Strategy::RoundRobin => chosen.extend(
                idle.range((u64::from(q.rr_cursor).wrapping_add(1), 0, 0)..)
                    .next()
                    .or_else(|| idle.first())
                    .map(|k| k.2),
            ),
            Strategy::RingAll => chosen.extend(idle.iter().map(|k| k.2)),
            Strategy::SkillLevel => {
                // Idle agents in longest-idle order; the first with the highest level wins.
                let level = |a: u32| {
                    call.skill.map_or(0, |s| {
                        let skills = &self.agents[a as usize].skills;
                        skills
                            .binary_search_by_key(&s, |&(k, _)| k)
                            .map_or(0, |i| skills[i].1)
                    })
                };
                let mut best: Option<(u8, u32)> = None;
                for k in idle {
                    let l = level(k.2);
                    if best.is_none_or(|(b, _)| l > b) {
                        best = Some((l, k.2));
                        if l >= 9 || call.skill.is_none() {
                            break;
                        }
                    }
                }
                chosen.extend(best.map(|(_, a)| a));
            }
        }
        let found = !chosen.is_empty();
        if found {
            self.take_waiting(id);
            self.offer(now, id, &chosen);
        }
        self.scratch = chosen;
        found
    }

    /// Rings `agents` (idle, available) with call `id` (in no waiting set).
    fn offer(&mut self, now: Instant, id: CallId, agents: &[u32]) {
        let q = self.calls[&id].queue;
        let (ring, queue_id) = {
            let queue = &self.queues[q as usize];
            (queue.ring_timeout, queue.id.clone())
        };
        for &a in agents {
            self.remove_idle(a);
            self.agents[a as usize].offer = Some(id);
            self.set_agent_timer(a, Some((now + ring, AgentTimer::Ring)));
            self.set_state(now, a, AgentState::Ringing);
            if let Some(m) = self.agents[a as usize]
                .memberships
                .iter()
                .find(|m| m.queue == q)
            {
                self.queues[q as usize].rr_cursor = m.position;
            }
            let agent = self.agents[a as usize].id.clone();
            self.emit(Command::Offer {
                call: id,
                agent,
                queue: queue_id.clone(),
                ring_timeout: ring,
            });
            self.log(now, Some(q), Some(id), Some(a), LogEvent::Offer);
        }
        if let Some(call) = self.calls.get_mut(&id) {
            call.phase = Phase::Offering(agents.to_vec());
        }
    }

    /// Clears agent `a`'s offer; with `cancel`, tells the daemon to stop ringing. Returns the call.
    fn withdraw_offer(&mut self, a: u32, cancel: bool) -> CallId {
        let ag = &mut self.agents[a as usize];
        let call = ag.offer.take().expect("ringing agent has an offer");
        if cancel {
            let agent = ag.id.clone();
            self.emit(Command::CancelOffer { call, agent });
        }
        call
    }

    /// Agent `a` no longer rings for call `id`: when nobody rings for it any more, it waits again
    /// (keeping its place) or overflows if its time came while it rang.
    fn offer_gone(&mut self, now: Instant, id: CallId, a: u32) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Phase::Offering(list) = &mut call.phase else {
            return;
        };
        list.retain(|&b| b != a);
        if !list.is_empty() {
            return;
        }
        let q = call.queue;
        if call.overflow_due {
            call.overflow_due = false;
            if let Some(to) = self.next_hop(id, q, OverflowReason::Timeout) {
                self.move_on(now, id, to, OverflowReason::Timeout);
                return;
            }
        }
        self.wait_or_offer(now, id);
    }

    /// An offer ended without an answer. `timed_out`: the ring timer fired, so the phone still
    /// rings and must be cancelled; a refusal or an unreachable phone already ended its branch.
    fn offer_failed(
        &mut self,
        now: Instant,
        id: CallId,
        a: u32,
        outcome: OfferOutcome,
        timed_out: bool,
    ) {
        let call = self.withdraw_offer(a, timed_out);
        debug_assert_eq!(call, id);
        self.set_agent_timer(a, None);
        let q = self.calls.get(&call).map_or(0, |c| c.queue);
        let queue = &self.queues[q as usize];
        let (max_missed, delay) = (queue.max_no_answer, queue.reoffer_delay);
        if outcome == OfferOutcome::Unreachable {
            self.agents[a as usize].missed += 1;
        }
        let event = if timed_out {
            LogEvent::RingNoAnswer
        } else {
            LogEvent::Refused(outcome)
        };
        self.log(now, Some(q), Some(call), Some(a), event);
        let ag = &self.agents[a as usize];
        if ag.missed >= max_missed {
            self.start_break(now, a, BreakReason::MissedCalls);
            self.offer_gone(now, call, a);
            return;
        }
        self.set_state(now, a, AgentState::Available);
        if delay.is_zero() {
            self.offer_gone(now, call, a);
            self.agent_free(now, a);
        } else {
            self.set_agent_timer(a, Some((now + delay, AgentTimer::Cooldown)));
            self.offer_gone(now, call, a);
        }
    }

    fn answered(&mut self, now: Instant, id: CallId, a: u32) {
        let state = self.agents[a as usize].state;
        let call_open = self
            .calls
            .get(&id)
            .is_some_and(|c| !matches!(c.phase, Phase::Connected(_)));
        if !call_open || matches!(state, AgentState::LoggedOut | AgentState::OnCall) {
            let agent = self.agents[a as usize].id.clone();
            self.emit(Command::HangUpAgentLeg { call: id, agent });
            let q = self.calls.get(&id).map(|c| c.queue);
            self.log(now, q, Some(id), Some(a), LogEvent::LateAnswer);
            if self.agents[a as usize].offer == Some(id) {
                // Ring-all: the call went to another agent; this one is free again.
                self.withdraw_offer(a, false);
                self.set_agent_timer(a, None);
                self.set_state(now, a, AgentState::Available);
                self.agent_free(now, a);
            }
            return;
        }
        // The agent's phone took this call: whatever the agent was doing in our books yields.
        if let Some(other) = self.agents[a as usize].offer.filter(|&o| o != id) {
            self.withdraw_offer(a, true);
            self.set_agent_timer(a, None);
            self.set_state(now, a, AgentState::Available);
            self.offer_gone(now, other, a);
        }
        if let AgentState::Break(r) = state {
            self.agents[a as usize].pending = Pending::Break(r);
        }
        self.remove_idle(a);
        let others: Vec<u32> = match &self.calls[&id].phase {
            Phase::Waiting => {
                self.take_waiting(id);
                Vec::new()
            }
            Phase::Offering(list) => list.iter().copied().filter(|&b| b != a).collect(),
            Phase::Connected(_) => Vec::new(),
        };
        self.set_overflow_timer(id, None);
        let call = self.calls.get_mut(&id).expect("open call");
        call.phase = Phase::Connected(a);
        call.overflow_due = false;
        let (q, waited) = (call.queue, now - call.arrived);
        let ag = &mut self.agents[a as usize];
        ag.offer = None;
        ag.call = Some(id);
        ag.call_queue = q;
        ag.call_answered = now;
        ag.missed = 0;
        ag.answered_since_login += 1;
        ag.audit_unconfirmed = false;
        self.set_agent_timer(a, Some((now + self.audit, AgentTimer::Audit)));
        self.set_state(now, a, AgentState::OnCall);
        let c = &mut self.queues[q as usize].counters;
        c.answered += 1;
        c.wait_total += waited;
        c.wait_max = c.wait_max.max(waited);
        if waited <= SERVICE_LEVEL {
            c.answered_within_sl += 1;
        }
        let (agent, queue) = (
            self.agents[a as usize].id.clone(),
            self.queues[q as usize].id.clone(),
        );
        self.emit(Command::Connected {
            call: id,
            agent,
            queue,
            waited,
        });
        self.log(
            now,
            Some(q),
            Some(id),
            Some(a),
            LogEvent::Connect { waited },
        );
        for b in others {
            self.withdraw_offer(b, true);
            self.set_agent_timer(b, None);
            self.set_state(now, b, AgentState::Available);
            self.agent_free(now, b);
        }
    }

    fn abandon(&mut self, now: Instant, id: CallId) {
        let ringing: Vec<u32> = match &self.calls[&id].phase {
            Phase::Waiting => {
                self.take_waiting(id);
                Vec::new()
            }
            Phase::Offering(list) => list.clone(),
            Phase::Connected(_) => return,
        };
        self.set_overflow_timer(id, None);
        let call = self.calls.remove(&id).expect("abandoned call exists");
        let (q, waited) = (call.queue, now - call.arrived);
        let c = &mut self.queues[q as usize].counters;
        if waited < SHORT_ABANDON {
            c.abandoned_short += 1;
        } else {
            c.abandoned += 1;
        }
        let queue = self.queues[q as usize].id.clone();
        self.emit(Command::Abandoned {
            call: id,
            queue,
            waited,
        });
        self.log(now, Some(q), Some(id), None, LogEvent::Abandon { waited });
        for a in ringing {
            self.withdraw_offer(a, true);
            self.set_agent_timer(a, None);
            self.set_state(now, a, AgentState::Available);
            self.agent_free(now, a);
        }
    }

    fn call_ended(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        let Phase::Connected(a) = call.phase else {
            return;
        };
        let ag = &mut self.agents[a as usize];
        ag.call = None;
        ag.audit_unconfirmed = false;
        let talk = now - ag.call_answered;
        self.log(
            now,
            Some(call.queue),
            Some(id),
            Some(a),
            LogEvent::Complete { talk },
        );
        let ag = &self.agents[a as usize];
        let wrap_up = self.queues[ag.call_queue as usize].wrap_up;
        if ag.pending == Pending::Logout || !ag.registered {
            self.agents[a as usize].pending = Pending::Logout;
            self.after_work(now, a);
        } else if wrap_up.is_zero() {
            self.after_work(now, a);
        } else {
            self.set_agent_timer(a, Some((now + wrap_up, AgentTimer::WrapUp)));
            self.set_state(now, a, AgentState::WrapUp);
        }
    }

    /// Callers of queues whose last (language-matching) agent logged out move on, or, at the end
    /// of their chain, drop the language requirement.
    fn settle(&mut self, now: Instant) {
        while let Some((q, class)) = self.sweeps.pop() {
            if self.queues[q as usize].logged_in[class] != 0 {
                continue;
            }
            for id in self.waiting_calls(q, class) {
                if let Some(to) = self.next_hop(id, q, OverflowReason::NoAgent) {
                    self.move_on(now, id, to, OverflowReason::NoAgent);
                } else {
                    let call = &self.calls[&id];
                    if call.class != 0 && self.queues[q as usize].logged_in[call.class] == 0 {
                        self.take_waiting(id);
                        self.calls.get_mut(&id).expect("call exists").class = 0;
                        self.log(now, Some(q), Some(id), None, LogEvent::LanguageRelaxed);
                        self.wait_or_offer(now, id);
                    }
                }
            }
        }
    }
}
