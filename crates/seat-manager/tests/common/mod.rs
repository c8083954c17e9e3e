//! A deterministic harness: virtual time that jumps from deadline to deadline, commands drained
//! and invariants checked after every step.

#![allow(dead_code)]

use std::time::Duration;

use seat_manager::*;

/// Monday 2025-06-02 00:00 Asia/Shanghai (2025-06-01T16:00:00Z).
pub const MONDAY_MIDNIGHT_UNIX: i64 = 1_748_793_600;

pub struct H {
    pub sm: SeatManager,
    pub now: Instant,
    /// Wall clock at `now == 0`.
    pub wall0: i64,
}

pub fn secs(s: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(s)
}

impl H {
    /// A seat manager at virtual time 0, Monday 10:00 local.
    pub fn new(config: &str) -> H {
        Self::at_local_minute(config, 10 * 60)
    }

    pub fn at_local_minute(config: &str, minute: i64) -> H {
        let config = SeatConfig::from_toml_str(config).expect("test config is valid");
        let mut sm = SeatManager::new(&config).expect("valid");
        let wall0 = MONDAY_MIDNIGHT_UNIX + minute * 60;
        sm.handle_wall_clock(
            Instant::ZERO,
            WallClock {
                unix_seconds: wall0,
            },
        );
        let mut h = H {
            sm,
            now: Instant::ZERO,
            wall0,
        };
        h.cmds();
        h
    }

    pub fn wall(&self) -> WallClock {
        WallClock {
            unix_seconds: self.wall0 + self.now.since_origin().as_secs() as i64,
        }
    }

    /// Jumps virtual time to `to` seconds, firing every deadline on the way.
    pub fn advance_to(&mut self, to: u64) {
        let target = secs(to);
        while let Some(t) = self.sm.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.sm.handle_timeout(self.now);
            self.check();
        }
        self.now = target;
    }

    pub fn check(&self) {
        if let Err(v) = self.sm.check_invariants() {
            panic!("invariant broken at {:?}: {v}", self.now);
        }
    }

    /// Drains the commands, after checking the invariants.
    pub fn cmds(&mut self) -> Vec<Command> {
        self.check();
        std::iter::from_fn(|| self.sm.poll_command()).collect()
    }

    pub fn register(&mut self, agents: &[&str]) {
        for a in agents {
            self.sm.handle_agent_registered(self.now, a).unwrap();
        }
    }

    pub fn arrive(&mut self, call: u64, queue: &str) {
        self.arrive_with(call, queue, 5, None);
    }

    pub fn arrive_with(&mut self, call: u64, queue: &str, priority: u8, language: Option<&str>) {
        self.sm
            .handle_call_arrived(
                self.now,
                Arrival {
                    call: CallId(call),
                    queue,
                    priority,
                    skill: None,
                    language,
                    prefecture: None,
                    fallback: None,
                },
            )
            .unwrap();
    }

    pub fn outcome(&mut self, call: u64, agent: &str, o: OfferOutcome) {
        self.sm
            .handle_offer_outcome(self.now, CallId(call), agent, o)
            .unwrap();
    }

    pub fn answer(&mut self, call: u64, agent: &str) {
        self.outcome(call, agent, OfferOutcome::Answered);
    }

    pub fn end(&mut self, call: u64) {
        self.sm.handle_call_ended(self.now, CallId(call));
    }

    pub fn state(&self, agent: &str) -> AgentState {
        self.sm.agent_view(agent).unwrap().state
    }

    pub fn kpi(&self, queue: &str) -> QueueKpis {
        self.sm
            .kpis(self.now)
            .into_iter()
            .find(|k| &*k.queue == queue)
            .unwrap()
    }
}

/// The (call, agent) pairs offered.
pub fn offers(cmds: &[Command]) -> Vec<(u64, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Offer { call, agent, .. } => Some((call.0, agent.to_string())),
            _ => None,
        })
        .collect()
}

/// The (call, agent) pairs cancelled.
pub fn cancels(cmds: &[Command]) -> Vec<(u64, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::CancelOffer { call, agent } => Some((call.0, agent.to_string())),
            _ => None,
        })
        .collect()
}

pub fn queued(cmds: &[Command]) -> Vec<(u64, String, u32)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Queued {
                call,
                queue,
                position,
            } => Some((call.0, queue.to_string(), *position)),
            _ => None,
        })
        .collect()
}

pub fn overflows(cmds: &[Command]) -> Vec<(u64, String, String, OverflowReason)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Overflowed {
                call,
                from,
                to,
                reason,
            } => Some((call.0, from.to_string(), to.to_string(), *reason)),
            _ => None,
        })
        .collect()
}

/// A small plan: the province (`p`, 7×24) covering Xining (`x`, 08:00–20:00). `{X_STRATEGY}` and
/// `{P_STRATEGY}` are replaced by the test.
pub const SMALL: &str = r#"
call_audit_s = 300
max_break_s = 3600

[[centers]]
id = "province"
queue = "p"
auto_login_on_register = true
shifts = [{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "00:00", end = "24:00" }]

[[centers]]
id = "xining"
queue = "x"
auto_login_on_register = true
covered_by = "province"
shifts = [{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "08:00", end = "20:00" }]

[[queues]]
id = "p"
center = "province"
strategy = "{P_STRATEGY}"
ring_timeout_s = 10
max_no_answer = 2
wrap_up_s = 5
reoffer_delay_s = 3

[[queues]]
id = "x"
center = "xining"
strategy = "{X_STRATEGY}"
ring_timeout_s = 10
max_no_answer = 2
wrap_up_s = 5
reoffer_delay_s = 3
overflow_after_s = 30
overflow_to = "p"
max_waiting = 3

[[agents]]
id = "x1"
center = "xining"
queues = ["x"]
skills = { market-supervision = 2 }

[[agents]]
id = "x2"
center = "xining"
queues = ["x"]
skills = { market-supervision = 7 }

[[agents]]
id = "x3"
center = "xining"
queues = ["x"]

[[agents]]
id = "p1"
center = "province"
queues = ["p"]

[[agents]]
id = "p2"
center = "province"
queues = ["p"]
languages = ["zh", "bo"]
"#;

pub fn small(x_strategy: &str) -> String {
    SMALL
        .replace("{X_STRATEGY}", x_strategy)
        .replace("{P_STRATEGY}", "longest-idle")
}
