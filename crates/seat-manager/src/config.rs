//! The seat configuration: centers with their rosters, queues, and agents.
//!
//! Parse with [`SeatConfig::from_toml_str`] (parse, then validate everything and report every
//! problem at once), or deserialize a [`SeatConfig`] as part of a larger file and call
//! [`SeatConfig::validate`]. `examples/demo-seats.toml` is the shipped example.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

use crate::clock::{parse_hhmm, Date, Weekday};

/// Highest call priority; callers with a higher value are served first (the dialplan's 0–9).
pub const MAX_PRIORITY: u8 = 9;

/// Most distinct languages a config may name: agents' languages are kept in a 64-bit mask so that
/// the eligibility test on the hot path is one AND.
pub const MAX_LANGUAGES: usize = 63;

/// The seat configuration of one switchboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatConfig {
    /// Answering centers: the province, the prefectures, department seat groups. Each has a roster.
    pub centers: Vec<CenterConfig>,
    /// Call queues: one per center, one per department of a dual line.
    pub queues: Vec<QueueConfig>,
    /// The agents (seats), by the user part of their registered AOR.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// How often a connected call is audited. A call whose BYE was lost would otherwise keep its
    /// agent "on call" for ever (mod_callcenter's stale members); an audit the daemon does not
    /// confirm within one more period frees the agent.
    #[serde(default = "default_call_audit_s")]
    pub call_audit_s: u32,
    /// Longest a break may last; then the agent is logged out. Without it a forgotten break would
    /// keep an agent counted as staffing a queue that nobody answers.
    #[serde(default = "default_max_break_s")]
    pub max_break_s: u32,
    /// Entries the queue log holds before the oldest are dropped (and counted), so a daemon that
    /// stops draining it cannot make the seat manager grow without limit.
    #[serde(default = "default_queue_log_capacity")]
    pub queue_log_capacity: usize,
}

/// An answering center and its roster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterConfig {
    /// Its id, as in the dialplan (`province`, `xining`) or a department's (`dept-12315`).
    pub id: String,
    /// The queue that takes calls this center covers for other centers.
    pub queue: String,
    /// Log agents in as soon as their phone registers (and out when it unregisters), so that a
    /// center without feature-code discipline, or a demo, works at once.
    #[serde(default)]
    pub auto_login_on_register: bool,
    /// The center that takes this center's calls while it is closed (outside its shifts or on a
    /// holiday). None: calls wait here even when closed, which `roster_check` reports as a gap.
    #[serde(default)]
    pub covered_by: Option<String>,
    /// When the center is staffed, in Asia/Shanghai local time. At least one shift.
    pub shifts: Vec<ShiftConfig>,
    /// Local dates on which the center is closed all day, as TOML dates (`2025-10-01`).
    #[serde(default)]
    pub holidays: Vec<toml::value::Datetime>,
}

/// A weekly shift.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    /// The days on which the shift starts (`["mon", "tue", …]`).
    pub days: Vec<Weekday>,
    /// Local start time, `HH:MM`.
    pub start: String,
    /// Local end time, `HH:MM`; `24:00` ends at midnight. An end at or before the start means the
    /// shift runs overnight into the next day. `00:00`–`24:00` is the whole day.
    pub end: String,
}

/// How a queue picks among its idle agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The agent idle longest: spreads work evenly, the fairness GB/T 33358 centers are audited on.
    #[default]
    LongestIdle,
    /// The next agent after the last one offered, in the queue's config order.
    RoundRobin,
    /// The agent with the fewest calls answered since logging in; ties go to the longest idle.
    FewestCalls,
    /// Every idle agent at once; the first to answer takes the call.
    RingAll,
    /// The highest level in the call's skill (department) first; ties, and calls without a skill,
    /// go to the longest idle.
    SkillLevel,
}

/// A call queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Its id, as the dialplan names it (`12345-xining`, `dept-12315`).
    pub id: String,
    /// The center whose roster opens and closes this queue.
    pub center: String,
    /// How an agent is chosen.
    #[serde(default)]
    pub strategy: Strategy,
    /// How long an offered agent's phone rings before the call moves to the next agent.
    #[serde(default = "default_ring_timeout_s")]
    pub ring_timeout_s: u32,
    /// Missed offers in a row (ring timeout or unreachable phone) that put an agent on break, as
    /// mod_callcenter's `max-no-answer` does: an absent agent must not keep eating ring timeouts.
    #[serde(default = "default_max_no_answer")]
    pub max_no_answer: u32,
    /// After-call work time following every answered call from this queue.
    #[serde(default = "default_wrap_up_s")]
    pub wrap_up_s: u32,
    /// After a missed, busy or declined offer, the agent is not offered another call for this long
    /// (mod_callcenter's `reject-delay-time`): without it a declining phone would be rung again at
    /// once whenever it is the only idle one.
    #[serde(default = "default_reoffer_delay_s")]
    pub reoffer_delay_s: u32,
    /// A waiting caller moves to `overflow_to` after this long in this queue. None: only when the
    /// queue has no agent logged in.
    #[serde(default)]
    pub overflow_after_s: Option<u32>,
    /// Where calls overflow to (the provincial queue for a prefecture). None: calls stay here.
    #[serde(default)]
    pub overflow_to: Option<String>,
    /// Callers that may wait here; a new arrival beyond it is rejected (the daemon answers 486 or
    /// 503). Calls overflowing in are admitted regardless: they have waited already.
    #[serde(default = "default_max_waiting")]
    pub max_waiting: u32,
}

/// An agent (seat).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The user part of the agent's AOR (`8001`): what the phone registers and dials from.
    pub id: String,
    /// The center the agent works for; its `auto_login_on_register` applies.
    pub center: String,
    /// Queues the agent answers.
    pub queues: Vec<String>,
    /// Skill levels 1–9 per department skill, as the dialplan names skills
    /// (`market-supervision = 5`). Used by the `skill-level` strategy; any agent of a queue may
    /// still take a call whose skill it lacks, after the skilled ones.
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Languages the agent speaks (`zh` Mandarin, `bo` Tibetan). A call that asks for a language
    /// goes only to agents who speak it, until it reaches a queue where no speaker is logged in.
    #[serde(default = "default_languages")]
    pub languages: Vec<String>,
}

fn default_call_audit_s() -> u32 {
    600
}
fn default_max_break_s() -> u32 {
    4 * 3600
}
fn default_queue_log_capacity() -> usize {
    100_000
}
fn default_ring_timeout_s() -> u32 {
    20
}
fn default_max_no_answer() -> u32 {
    3
}
fn default_wrap_up_s() -> u32 {
    10
}
fn default_reoffer_delay_s() -> u32 {
    5
}
fn default_max_waiting() -> u32 {
    1_000
}
fn default_languages() -> Vec<String> {
    vec!["zh".to_owned()]
}

/// One problem found in a seat config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `queues[3] (12345-xining).overflow_to`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a seat config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, or not the schema (unknown field, wrong type); the message has line and
    /// column.
    #[error("seat config: {0}")]
    Parse(#[from] toml::de::Error),
    /// Well-formed but inconsistent; every problem found is listed.
    #[error("seat config has {} problem(s):\n{}", .0.len(), ProblemList(.0))]
    Invalid(Vec<Problem>),
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl SeatConfig {
    /// Parses and validates config text.
    pub fn from_toml_str(text: &str) -> Result<SeatConfig, ConfigError> {
        let config: SeatConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every cross-reference and range, collecting all problems.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut p = |path: String, message: String| problems.push(Problem { path, message });

        let centers = index_of(self.centers.iter().map(|c| c.id.as_str()));
        let queues = index_of(self.queues.iter().map(|q| q.id.as_str()));
        dupes("centers", self.centers.iter().map(|c| &c.id), &mut p);
        dupes("queues", self.queues.iter().map(|q| &q.id), &mut p);
        dupes("agents", self.agents.iter().map(|a| &a.id), &mut p);

        if self.call_audit_s == 0 {
            p("call_audit_s".into(), "must be at least 1".into());
        }
        if self.max_break_s == 0 {
            p("max_break_s".into(), "must be at least 1".into());
        }

        for (i, c) in self.centers.iter().enumerate() {
            let at = format!("centers[{i}] ({})", c.id);
            match queues.get(c.queue.as_str()) {
                None => p(
                    format!("{at}.queue"),
                    format!("unknown queue `{}`", c.queue),
                ),
                Some(&q) if self.queues[q].center != c.id => p(
                    format!("{at}.queue"),
                    format!(
                        "queue `{}` belongs to center `{}`, not this one",
                        c.queue, self.queues[q].center
                    ),
                ),
                Some(_) => {}
            }
            if let Some(cov) = &c.covered_by {
                if !centers.contains_key(cov.as_str()) {
                    p(
                        format!("{at}.covered_by"),
                        format!("unknown center `{cov}`"),
                    );
                } else if cov == &c.id {
                    p(
                        format!("{at}.covered_by"),
                        "a center cannot cover itself".into(),
                    );
                }
            }
            if c.shifts.is_empty() {
                p(
                    format!("{at}.shifts"),
                    "at least one shift (`00:00`–`24:00` on every day for 7×24)".into(),
                );
            }
            for (j, s) in c.shifts.iter().enumerate() {
                let sat = format!("{at}.shifts[{j}]");
                if s.days.is_empty() {
                    p(format!("{sat}.days"), "no days".into());
                }
                let start = parse_hhmm(&s.start);
                let end = parse_hhmm(&s.end);
                if start.is_none() || start == Some(1440) {
                    p(
                        format!("{sat}.start"),
                        format!("`{}` is not HH:MM", s.start),
                    );
                }
                if end.is_none() {
                    p(format!("{sat}.end"), format!("`{}` is not HH:MM", s.end));
                }
                if start.is_some() && start == end {
                    p(
                        sat.clone(),
                        "start equals end; write `00:00`–`24:00` for a whole day".into(),
                    );
                }
            }
            for (j, h) in c.holidays.iter().enumerate() {
                if holiday_date(h).is_none() {
                    p(
                        format!("{at}.holidays[{j}]"),
                        format!("`{h}` is not a plain date like 2025-10-01"),
                    );
                }
            }
        }
        // Self-cover is reported above; the cycle check looks for longer loops.
        if let Some(cycle) = first_cycle(self.centers.iter().enumerate().map(|(i, c)| {
            c.covered_by
                .as_deref()
                .and_then(|cov| centers.get(cov).copied())
                .filter(|&n| n != i)
        })) {
            p(
                format!("centers[{cycle}] ({})", self.centers[cycle].id),
                "covered_by chain loops back on itself".into(),
            );
        }

        for (i, q) in self.queues.iter().enumerate() {
            let at = format!("queues[{i}] ({})", q.id);
            if !centers.contains_key(q.center.as_str()) {
                p(
                    format!("{at}.center"),
                    format!("unknown center `{}`", q.center),
                );
            }
            if q.ring_timeout_s == 0 {
                p(format!("{at}.ring_timeout_s"), "must be at least 1".into());
            }
            if q.max_no_answer == 0 {
                p(format!("{at}.max_no_answer"), "must be at least 1".into());
            }
            match &q.overflow_to {
                Some(to) if !queues.contains_key(to.as_str()) => {
                    p(format!("{at}.overflow_to"), format!("unknown queue `{to}`"))
                }
                Some(to) if to == &q.id => p(
                    format!("{at}.overflow_to"),
                    "a queue cannot overflow to itself".into(),
                ),
                None if q.overflow_after_s.is_some() => p(
                    format!("{at}.overflow_after_s"),
                    "set, but there is no overflow_to".into(),
                ),
                _ => {}
            }
            if q.overflow_after_s == Some(0) {
                p(
                    format!("{at}.overflow_after_s"),
                    "0 would overflow every call; leave overflow_to without it to overflow only when no agent is logged in".into(),
                );
            }
        }
        if let Some(cycle) = first_cycle(self.queues.iter().enumerate().map(|(i, q)| {
            q.overflow_to
                .as_deref()
                .and_then(|to| queues.get(to).copied())
                .filter(|&n| n != i)
        })) {
            p(
                format!("queues[{cycle}] ({})", self.queues[cycle].id),
                "overflow_to chain loops back on itself".into(),
            );
        }

        let mut languages = HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            let at = format!("agents[{i}] ({})", a.id);
            if a.id.is_empty() {
                p(format!("{at}.id"), "empty".into());
            }
            if !centers.contains_key(a.center.as_str()) {
                p(
                    format!("{at}.center"),
                    format!("unknown center `{}`", a.center),
                );
            }
            if a.queues.is_empty() {
                p(format!("{at}.queues"), "in no queue".into());
            }
            let mut seen = HashSet::new();
            for q in &a.queues {
                if !queues.contains_key(q.as_str()) {
                    p(format!("{at}.queues"), format!("unknown queue `{q}`"));
                }
                if !seen.insert(q) {
                    p(format!("{at}.queues"), format!("`{q}` listed twice"));
                }
            }
            for (s, level) in &a.skills {
                if !(1..=9).contains(level) {
                    p(
                        format!("{at}.skills.{s}"),
                        format!("level {level} is not 1–9"),
                    );
                }
            }
            languages.extend(a.languages.iter().map(String::as_str));
        }
        if languages.len() > MAX_LANGUAGES {
            p(
                "agents".into(),
                format!(
                    "{} languages; at most {MAX_LANGUAGES} are supported",
                    languages.len()
                ),
            );
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// A TOML date with no time part, as a [`Date`].
pub(crate) fn holiday_date(d: &toml::value::Datetime) -> Option<Date> {
    if d.time.is_some() || d.offset.is_some() {
        return None;
    }
    let date = d.date?;
    Date::new(i32::from(date.year), date.month, date.day)
}

fn index_of<'a>(ids: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut map = HashMap::new();
    for (i, id) in ids.enumerate() {
        map.entry(id).or_insert(i);
    }
    map
}

fn dupes<'a>(
    what: &str,
    ids: impl Iterator<Item = &'a String>,
    p: &mut impl FnMut(String, String),
) {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id) {
            p(format!("{what}[{i}].id"), format!("duplicate id `{id}`"));
        }
    }
}

/// The first node of a functional graph (each node has at most one successor) that lies on a
/// cycle.
fn first_cycle(next: impl Iterator<Item = Option<usize>>) -> Option<usize> {
    let next: Vec<Option<usize>> = next.collect();
    (0..next.len()).find(|&start| {
        let mut at = next[start];
        for _ in 0..next.len() {
            match at {
                Some(n) if n == start => return true,
                Some(n) => at = next[n],
                None => return false,
            }
        }
        false
    })
}
