//! A deterministic simulation of one day (Monday, Asia/Shanghai) on a virtual clock: Poisson
//! arrivals against the demo roster (prefectures 08:00–20:00, covered by the province 7×24),
//! agents who answer, miss, decline, take breaks and go home at 20:00, callers who give up.
//!
//! After every step it checks the invariants, fairness (no agent who stayed idle through a step
//! was passed over for one idle a shorter time), the overflow bound (no caller waits in a queue
//! longer than its overflow time plus one ring), and at the end the KPI arithmetic against the
//! simulation's own books.

mod common;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seat_manager::*;

const DEMO: &str = include_str!("../examples/demo-seats.toml");
const PREFECTURES: [&str; 8] = [
    "xining", "haidong", "haibei", "huangnan", "hainan", "golog", "yushu", "haixi",
];
const DEPTS: [(&str, &str); 4] = [
    ("12315", "market-supervision"),
    ("12333", "human-resources-social-security"),
    ("12328", "transport"),
    ("12320", "health"),
];
const DAY_MS: u64 = 24 * 3600 * 1000;

/// The demo's centers and queues, staffed more heavily: 4 agents per prefecture (2 of them
/// Tibetan speakers in Golog and Yushu), 8 in the province (2 Tibetan), 2 per department.
fn sim_config() -> String {
    let mut t = DEMO[..DEMO.find("[[agents]]").unwrap()].to_owned();
    let mut n = 9000;
    let mut agent = |t: &mut String, center: &str, queue: &str, langs: &str| {
        n += 1;
        let _ = write!(
            t,
            "\n[[agents]]\nid = \"{n}\"\ncenter = \"{center}\"\nqueues = [\"{queue}\"]\nlanguages = {langs}\n"
        );
    };
    for p in PREFECTURES {
        for i in 0..4 {
            let bo = (p == "golog" || p == "yushu") && i < 2;
            let langs = if bo { "[\"zh\", \"bo\"]" } else { "[\"zh\"]" };
            agent(&mut t, p, &format!("12345-{p}"), langs);
        }
    }
    for i in 0..8 {
        let langs = if i < 2 {
            "[\"zh\", \"bo\"]"
        } else {
            "[\"zh\"]"
        };
        agent(&mut t, "province", "12345-province", langs);
    }
    for (d, _) in DEPTS {
        for _ in 0..2 {
            agent(
                &mut t,
                &format!("dept-{d}"),
                &format!("dept-{d}"),
                "[\"zh\"]",
            );
        }
    }
    t
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrival,
    Reply {
        call: u64,
        agent: Arc<str>,
        answer: bool,
        offer_no: u64,
    },
    Patience(u64),
    End(u64),
    Tick,
    Break(Arc<str>),
    Ready(Arc<str>),
    GoHome(Arc<str>),
    ComeIn(Arc<str>),
}

#[derive(Debug)]
struct SimCall {
    arrived: Instant,
    queue: Arc<str>,
    entered: Instant,
    language: Option<&'static str>,
    fallback: Option<(Arc<str>, Duration)>,
    connected: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Books {
    offered: u64,
    left: u64,
    answered: u64,
    within_sl: u64,
    abandoned: u64,
    abandoned_short: u64,
    rejected: u64,
    wait_total: Duration,
    wait_max: Duration,
}

struct Sim {
    sm: SeatManager,
    rng: StdRng,
    now: Instant,
    events: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    seq: u64,
    next_call: u64,
    calls: HashMap<u64, SimCall>,
    books: HashMap<Arc<str>, Books>,
    /// Per queue: (ring timeout, overflow after, strategy is longest-idle).
    queues: HashMap<Arc<str>, (Duration, Option<Duration>, bool)>,
    members: HashMap<Arc<str>, Vec<Arc<str>>>,
    speaks_bo: HashSet<Arc<str>>,
    /// Current offer number per (call, agent): replies to withdrawn offers are dropped, as a
    /// phone that got the CANCEL in time does not answer.
    offers: HashMap<(u64, Arc<str>), u64>,
    offer_seq: u64,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    arrivals: u64,
    offers: u64,
    fairness_checks: u64,
    overflows: u64,
    late_legs: u64,
    max_wait_in_overflowing_queue: Duration,
}

fn ms(t: Instant) -> u64 {
    t.since_origin().as_millis() as u64
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let text = sim_config();
        let config = SeatConfig::from_toml_str(&text).unwrap();
        assert!(roster_check(&config).is_empty());
        let mut queues = HashMap::new();
        for q in &config.queues {
            queues.insert(
                Arc::from(q.id.as_str()),
                (
                    Duration::from_secs(q.ring_timeout_s.into()),
                    q.overflow_after_s.map(|s| Duration::from_secs(s.into())),
                    q.strategy == Strategy::LongestIdle,
                ),
            );
        }
        let mut members: HashMap<Arc<str>, Vec<Arc<str>>> = HashMap::new();
        let mut speaks_bo = HashSet::new();
        for a in &config.agents {
            members
                .entry(a.queues[0].as_str().into())
                .or_default()
                .push(a.id.as_str().into());
            if a.languages.iter().any(|l| l == "bo") {
                speaks_bo.insert(Arc::from(a.id.as_str()));
            }
        }
        let sm = SeatManager::new(&config).unwrap();
        let mut sim = Sim {
            sm,
            rng: StdRng::seed_from_u64(seed),
            now: Instant::ZERO,
            events: BinaryHeap::new(),
            seq: 0,
            next_call: 1,
            calls: HashMap::new(),
            books: HashMap::new(),
            queues,
            members,
            speaks_bo,
            offers: HashMap::new(),
            offer_seq: 0,
            stats: Stats::default(),
        };
        sim.sm.handle_wall_clock(sim.now, sim.wall());
        // Province and departments at their desks at midnight; prefectures come in at 08:00.
        let agents: Vec<(Arc<str>, String)> = config
            .agents
            .iter()
            .map(|a| (Arc::from(a.id.as_str()), a.center.clone()))
            .collect();
        for (a, center) in agents {
            if PREFECTURES.contains(&center.as_str()) {
                let jitter = sim.rng.gen_range(0..300_000);
                sim.at(8 * 3_600_000 - 120_000 + jitter, Ev::ComeIn(a.clone()));
                let jitter = sim.rng.gen_range(0..600_000);
                sim.at(20 * 3_600_000 + jitter, Ev::GoHome(a));
            } else {
                sim.sm.handle_agent_registered(sim.now, &a).unwrap();
            }
        }
        sim.at(0, Ev::Tick);
        sim.after_exp(Duration::from_secs(30), Ev::Arrival);
        sim.after_step(&HashMap::new());
        sim
    }

    fn wall(&self) -> WallClock {
        WallClock {
            unix_seconds: common::MONDAY_MIDNIGHT_UNIX + (ms(self.now) / 1000) as i64,
        }
    }

    fn at(&mut self, at_ms: u64, ev: Ev) {
        self.seq += 1;
        let t = Instant::ZERO + Duration::from_millis(at_ms);
        self.events.push(Reverse((t, self.seq, ev)));
    }

    fn after(&mut self, d: Duration, ev: Ev) {
        let at = ms(self.now) + d.as_millis() as u64;
        self.at(at, ev);
    }

    fn exp(&mut self, mean: Duration) -> Duration {
        let u: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        Duration::from_millis((-u.ln() * mean.as_millis() as f64) as u64 + 1)
    }

    fn after_exp(&mut self, mean: Duration, ev: Ev) {
        let d = self.exp(mean);
        self.after(d, ev);
    }

    /// Mean time between arrivals: busy day, quiet night.
    fn interarrival(&self) -> Duration {
        let hour = ms(self.now) / 3_600_000;
        if (8..20).contains(&hour) {
            Duration::from_millis(6_000) // 600 calls/h
        } else {
            Duration::from_millis(30_000) // 120 calls/h
        }
    }

    fn run(&mut self) {
        loop {
            let next_ev = self.events.peek().map(|Reverse((t, _, _))| *t);
            let next_timer = self.sm.poll_timeout();
            let before = self.offerable();
            match (next_ev, next_timer) {
                (None, None) => break,
                (Some(e), t) if t.is_none_or(|t| e < t) => {
                    let Reverse((t, _, ev)) = self.events.pop().unwrap();
                    self.now = t;
                    self.event(ev);
                }
                (_, Some(t)) => {
                    self.now = t;
                    self.sm.handle_timeout(t);
                }
                _ => unreachable!(),
            }
            self.after_step(&before);
            if self.events.is_empty() && self.calls.is_empty() && ms(self.now) > DAY_MS {
                break;
            }
        }
    }

    fn event(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Arrival => {
                if ms(now) < DAY_MS {
                    self.arrival();
                    let d = self.interarrival();
                    self.after_exp(d, Ev::Arrival);
                }
            }
            Ev::Reply {
                call,
                agent,
                answer,
                offer_no,
            } => {
                if self.offers.get(&(call, agent.clone())) == Some(&offer_no) {
                    self.offers.remove(&(call, agent.clone()));
                    let o = if answer {
                        OfferOutcome::Answered
                    } else {
                        OfferOutcome::Declined
                    };
                    self.sm
                        .handle_offer_outcome(now, CallId(call), &agent, o)
                        .unwrap();
                }
            }
            Ev::Patience(call) => {
                if self.calls.get(&call).is_some_and(|c| !c.connected) {
                    self.sm.handle_caller_abandoned(now, CallId(call));
                }
            }
            Ev::End(call) => self.sm.handle_call_ended(now, CallId(call)),
            Ev::Tick => {
                self.sm.handle_wall_clock(now, self.wall());
                if ms(now) < DAY_MS + 3_600_000 {
                    self.after(Duration::from_secs(60), Ev::Tick);
                }
                if ms(now) % 3_600_000 == 0 {
                    self.hourly_breaks();
                }
            }
            Ev::Break(a) => {
                // Only logged-in agents take breaks.
                if self.sm.agent_view(&a).unwrap().state != AgentState::LoggedOut {
                    self.sm
                        .handle_agent_action(now, &a, AgentAction::Break(1))
                        .unwrap();
                    self.after(Duration::from_secs(15 * 60), Ev::Ready(a));
                }
            }
            Ev::Ready(a) => {
                let v = self.sm.agent_view(&a).unwrap();
                if v.state != AgentState::LoggedOut {
                    self.sm
                        .handle_agent_action(now, &a, AgentAction::Ready)
                        .unwrap();
                }
            }
            Ev::GoHome(a) => self.sm.handle_agent_unregistered(now, &a).unwrap(),
            Ev::ComeIn(a) => self.sm.handle_agent_registered(now, &a).unwrap(),
        }
    }

    fn hourly_breaks(&mut self) {
        let ids: Vec<Arc<str>> = self.sm.agent_ids().cloned().collect();
        for a in ids {
            if self.rng.gen_bool(0.15) {
                let d = Duration::from_millis(self.rng.gen_range(0..3_000_000));
                self.after(d, Ev::Break(a));
            }
        }
    }

    fn arrival(&mut self) {
        let id = self.next_call;
        self.next_call += 1;
        self.stats.arrivals += 1;
        let r: f64 = self.rng.gen();
        let (queue, fallback, language): (String, Option<(Arc<str>, Duration)>, _) = if r < 0.1 {
            let (d, _) = DEPTS[self.rng.gen_range(0..DEPTS.len())];
            let p = PREFECTURES[self.rng.gen_range(0..PREFECTURES.len())];
            (
                format!("dept-{d}"),
                Some((format!("12345-{p}").into(), Duration::from_secs(20))),
                None,
            )
        } else if r < 0.15 {
            ("12345-province".into(), None, None)
        } else {
            let p = PREFECTURES[self.rng.gen_range(0..PREFECTURES.len())];
            let tibetan = (p == "golog" || p == "yushu") && self.rng.gen_bool(0.3);
            (format!("12345-{p}"), None, tibetan.then_some("bo"))
        };
        let priority = if self.rng.gen_bool(0.05) { 8 } else { 5 };
        let queue: Arc<str> = queue.into();
        self.calls.insert(
            id,
            SimCall {
                arrived: self.now,
                queue: queue.clone(),
                entered: self.now,
                language,
                fallback: fallback.clone(),
                connected: false,
            },
        );
        self.books.entry(queue.clone()).or_default().offered += 1;
        self.sm
            .handle_call_arrived(
                self.now,
                Arrival {
                    call: CallId(id),
                    queue: &queue,
                    priority,
                    skill: fallback.as_ref().map(|_| "market-supervision"),
                    language,
                    prefecture: None,
                    fallback: fallback.as_ref().map(|(q, after)| Fallback {
                        queue: q,
                        after: Some(*after),
                    }),
                },
            )
            .unwrap();
        self.after_exp(Duration::from_secs(150), Ev::Patience(id));
    }

    /// Agents who may be offered a call now, with their idle-since.
    fn offerable(&self) -> HashMap<Arc<str>, Instant> {
        self.sm
            .agent_ids()
            .filter_map(|a| {
                let v = self.sm.agent_view(a)?;
                v.offerable.then(|| (a.clone(), v.idle_since))
            })
            .collect()
    }

    fn after_step(&mut self, before: &HashMap<Arc<str>, Instant>) {
        if let Err(v) = self.sm.check_invariants() {
            panic!("at {} ms: {v}", ms(self.now));
        }
        for e in self.sm.drain_log() {
            if e.event == LogEvent::LanguageRelaxed {
                if let Some(c) = e.call.and_then(|c| self.calls.get_mut(&c.0)) {
                    c.language = None;
                }
            }
        }
        let cmds: Vec<Command> = std::iter::from_fn(|| self.sm.poll_command()).collect();
        let after = self.offerable();
        for cmd in &cmds {
            if let Command::Offer {
                call, agent, queue, ..
            } = cmd
            {
                self.check_fairness(call.0, agent, queue, before, &after);
            }
        }
        for cmd in cmds {
            self.command(cmd);
        }
        // Connected calls that ended leave the simulation's books.
        let sm = &self.sm;
        self.calls
            .retain(|id, c| !c.connected || sm.call_view(CallId(*id)).is_some());
        self.check_wait_bounds();
    }

    /// No agent idle (and able to take the call) both before and after this step was idle
    /// longer than the agent chosen.
    fn check_fairness(
        &mut self,
        call: u64,
        chosen: &Arc<str>,
        queue: &Arc<str>,
        before: &HashMap<Arc<str>, Instant>,
        after: &HashMap<Arc<str>, Instant>,
    ) {
        self.stats.offers += 1;
        if !self.queues[queue].2 {
            return;
        }
        let language = self.calls[&call].language;
        let chosen_since = self.sm.agent_view(chosen).unwrap().idle_since;
        for b in &self.members[queue] {
            if b == chosen || language == Some("bo") && !self.speaks_bo.contains(b) {
                continue;
            }
            if let (Some(&t0), Some(&t1)) = (before.get(b), after.get(b)) {
                assert_eq!(t0, t1);
                self.stats.fairness_checks += 1;
                assert!(
                    t1 >= chosen_since,
                    "at {} ms call {call} in {queue} went to {chosen} (idle since {:?}) while {b} \
                     was idle since {t1:?}",
                    ms(self.now),
                    chosen_since
                );
            }
        }
    }

    /// A caller never waits in a queue with an overflow longer than the overflow time plus one
    /// ring (the ring in progress is not cut short).
    fn check_wait_bounds(&mut self) {
        for (id, c) in &self.calls {
            if c.connected {
                continue;
            }
            let (ring, after, _) = self.queues[&c.queue];
            let limit = match &c.fallback {
                Some((_, a)) => Some(*a),
                None => after,
            };
            if let Some(limit) = limit {
                let waited = self.now - c.entered;
                self.stats.max_wait_in_overflowing_queue =
                    self.stats.max_wait_in_overflowing_queue.max(waited);
                assert!(
                    waited <= limit + ring,
                    "call {id} waited {waited:?} in {} (overflow {limit:?} + ring {ring:?})",
                    c.queue
                );
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now;
        match cmd {
            Command::Offer { call, agent, .. } => {
                self.offer_seq += 1;
                let offer_no = self.offer_seq;
                self.offers.insert((call.0, agent.clone()), offer_no);
                let r: f64 = self.rng.gen();
                if r < 0.85 {
                    let d = Duration::from_millis(self.rng.gen_range(1_000..8_000));
                    self.after(
                        d,
                        Ev::Reply {
                            call: call.0,
                            agent,
                            answer: true,
                            offer_no,
                        },
                    );
                } else if r < 0.9 {
                    self.after(
                        Duration::from_secs(2),
                        Ev::Reply {
                            call: call.0,
                            agent,
                            answer: false,
                            offer_no,
                        },
                    );
                }
                // else: nobody at the desk; the ring timeout fires.
            }
            Command::CancelOffer { call, agent } => {
                self.offers.remove(&(call.0, agent));
            }
            Command::Connected {
                call,
                queue,
                waited,
                ..
            } => {
                let c = self.calls.get_mut(&call.0).unwrap();
                assert_eq!(c.queue, queue);
                c.connected = true;
                let w = now - c.arrived;
                assert_eq!(w, waited);
                let b = self.books.entry(queue).or_default();
                b.answered += 1;
                b.wait_total += w;
                b.wait_max = b.wait_max.max(w);
                if w <= SERVICE_LEVEL {
                    b.within_sl += 1;
                }
                let talk = self.exp(Duration::from_secs(180));
                self.after(talk, Ev::End(call.0));
            }
            Command::Overflowed { call, from, to, .. } => {
                self.stats.overflows += 1;
                let c = self.calls.get_mut(&call.0).unwrap();
                assert_eq!(c.queue, from);
                c.queue = to.clone();
                c.entered = now;
                c.fallback = None;
                self.books.entry(from).or_default().left += 1;
                self.books.entry(to).or_default().offered += 1;
            }
            Command::Abandoned {
                call,
                queue,
                waited,
            } => {
                let c = self.calls.remove(&call.0).unwrap();
                assert_eq!(c.queue, queue);
                let w = now - c.arrived;
                assert_eq!(w, waited);
                let b = self.books.entry(queue).or_default();
                if w < SHORT_ABANDON {
                    b.abandoned_short += 1;
                } else {
                    b.abandoned += 1;
                }
            }
            Command::Rejected { call, queue, .. } => {
                self.calls.remove(&call.0);
                self.books.entry(queue).or_default().rejected += 1;
            }
            Command::HangUpAgentLeg { .. } => self.stats.late_legs += 1,
            Command::AgentStateChanged {
                agent,
                to: AgentState::Break(BreakReason::MissedCalls),
                ..
            } => {
                self.after(Duration::from_secs(120), Ev::Ready(agent));
            }
            Command::AuditCall { call, .. } => self.sm.handle_call_alive(now, call),
            Command::ReleaseCall { call, .. } => panic!("{call} released: the sim confirms audits"),
            Command::Queued { .. }
            | Command::NoAgentAnywhere { .. }
            | Command::AgentStateChanged { .. } => {}
        }
    }
}

#[test]
fn a_simulated_day_is_fair_bounded_and_adds_up() {
    for seed in [1, 2] {
        let mut sim = Sim::new(seed);
        sim.run();
        let s = &sim.stats;
        println!("seed {seed}: {s:?}");
        assert!(s.arrivals > 8_000, "a day of traffic: {}", s.arrivals);
        assert!(
            s.fairness_checks > 5_000,
            "fairness exercised: {}",
            s.fairness_checks
        );
        assert!(s.overflows > 100, "overflow exercised: {}", s.overflows);
        assert_eq!(sim.sm.call_count(), 0, "every call ended");
        for a in sim.sm.agent_ids().cloned().collect::<Vec<_>>() {
            let v = sim.sm.agent_view(&a).unwrap();
            assert!(v.offer.is_none() && v.call.is_none(), "{v:?}");
        }
        let kpis = sim.sm.kpis(sim.now);
        let mut total_answered = 0;
        let mut total_ended = 0;
        for k in &kpis {
            let b = sim.books.get(&k.queue).cloned().unwrap_or_default();
            let mine = Books {
                offered: k.offered,
                left: k.redirected + k.overflowed,
                answered: k.answered,
                within_sl: k.answered_within_sl,
                abandoned: k.abandoned,
                abandoned_short: k.abandoned_short,
                rejected: k.rejected,
                wait_total: k.wait_total,
                wait_max: k.wait_max,
            };
            assert_eq!(mine, b, "queue {}", k.queue);
            assert_eq!(
                (k.waiting_now, k.ringing_now, k.longest_wait_now),
                (0, 0, None)
            );
            assert_eq!(
                k.offered,
                k.redirected
                    + k.overflowed
                    + k.answered
                    + k.abandoned
                    + k.abandoned_short
                    + k.rejected
            );
            total_answered += k.answered;
            total_ended += k.answered + k.abandoned + k.abandoned_short + k.rejected;
            if let Some(sl) = k.service_level() {
                assert!((0.0..=1.0).contains(&sl));
            }
        }
        assert_eq!(
            total_ended, s.arrivals,
            "each arrival ends in exactly one bucket"
        );
        assert!(
            total_answered * 10 > s.arrivals * 8,
            "most calls answered: {total_answered}"
        );
        let prefecture_overflows: u64 = kpis
            .iter()
            .filter(|k| k.queue.starts_with("12345-") && &*k.queue != "12345-province")
            .map(|k| k.overflowed)
            .sum();
        assert!(prefecture_overflows > 0);
    }
}
