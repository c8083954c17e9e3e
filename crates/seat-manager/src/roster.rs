//! Rosters: when each center is staffed, and the offline proof that every queue always has a
//! staffed path (`switchboard roster check`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::clock::{hhmm, parse_hhmm, Date, LocalTime, Weekday, MINUTES_PER_WEEK};
use crate::config::{holiday_date, CenterConfig, SeatConfig};

const WORDS: usize = MINUTES_PER_WEEK.div_ceil(64) as usize;

/// A center's staffed minutes: a bit per minute of the week, plus closed dates.
#[derive(Debug, Clone)]
pub(crate) struct Roster {
    week: [u64; WORDS],
    holidays: HashSet<Date>,
}

impl Roster {
    /// Compiles a validated center's shifts. Unparsable times (refused by validation) are skipped.
    pub(crate) fn new(c: &CenterConfig) -> Roster {
        let mut week = [0u64; WORDS];
        for s in &c.shifts {
            let (Some(start), Some(end)) = (parse_hhmm(&s.start), parse_hhmm(&s.end)) else {
                continue;
            };
            // An end at or before the start runs overnight into the next day.
            let len = if end > start {
                end - start
            } else {
                end + 1440 - start
            };
            for day in &s.days {
                let base = day.index() * 1440 + start;
                for m in base..base + len {
                    let m = m % MINUTES_PER_WEEK;
                    week[(m / 64) as usize] |= 1 << (m % 64);
                }
            }
        }
        Roster {
            week,
            holidays: c.holidays.iter().filter_map(holiday_date).collect(),
        }
    }

    /// Whether the center is staffed at this minute of the week on this date (None: an ordinary
    /// week, no holidays).
    pub(crate) fn open(&self, minute_of_week: u32, date: Option<Date>) -> bool {
        let m = minute_of_week % MINUTES_PER_WEEK;
        let shift = self.week[(m / 64) as usize] & (1 << (m % 64)) != 0;
        shift && !date.is_some_and(|d| self.holidays.contains(&d))
    }

    /// Whether the center is staffed at this local time.
    pub(crate) fn open_at(&self, t: LocalTime) -> bool {
        self.open(t.minute_of_week(), Some(t.date))
    }
}

/// Which day a [`Gap`] falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GapDay {
    /// This weekday in an ordinary week.
    Weekly(Weekday),
    /// This holiday date (some center's holiday).
    Holiday(Date),
}

impl fmt::Display for GapDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GapDay::Weekly(d) => write!(f, "every {d}"),
            GapDay::Holiday(d) => write!(f, "{d} ({}, holiday)", d.weekday()),
        }
    }
}

/// Why a queue's calls have no staffed path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GapReason {
    /// The path reaches this center while it is closed, and nobody covers it.
    ClosedUncovered {
        /// The closed center.
        center: String,
    },
    /// The path reaches this open queue, which has no agent configured and no overflow.
    NoAgents {
        /// The empty queue.
        queue: String,
    },
    /// Roster cover and overflow lead back to a queue already on the path.
    Loop {
        /// The queue met twice.
        queue: String,
    },
}

impl fmt::Display for GapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GapReason::ClosedUncovered { center } => {
                write!(f, "center `{center}` is closed and nobody covers it")
            }
            GapReason::NoAgents { queue } => {
                write!(f, "queue `{queue}` has no agents and no overflow_to")
            }
            GapReason::Loop { queue } => {
                write!(f, "cover and overflow loop back to queue `{queue}`")
            }
        }
    }
}

/// A stretch of time in which a queue's calls have no staffed path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gap {
    /// The queue whose callers would wait for nobody.
    pub queue: String,
    /// The day.
    pub day: GapDay,
    /// First minute of the gap, minutes since local midnight.
    pub start_minute: u32,
    /// Minute after the gap ends (1440 = midnight).
    pub end_minute: u32,
    /// Why.
    pub reason: GapReason,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {}–{}: {}",
            self.queue,
            self.day,
            hhmm(self.start_minute),
            hhmm(self.end_minute),
            self.reason
        )
    }
}

/// Proves that every minute of an ordinary week, and of every listed holiday, has a staffed path
/// for every queue: the queue's center is open and the queue has agents, or roster cover
/// (`covered_by`) and overflow (`overflow_to`) lead to one that is. Returns the gaps, coalesced
/// into ranges; empty means 7×24 coverage.
///
/// "Staffed" here means "has agents configured": whether they log in is the daemon's alarm
/// (`NoAgentAnywhere`) at run time. Dialplan fallbacks of dual lines are not followed, so each
/// department queue should name its own `overflow_to` or cover.
pub fn roster_check(config: &SeatConfig) -> Vec<Gap> {
    let rosters: Vec<Roster> = config.centers.iter().map(Roster::new).collect();
    let center_ix: HashMap<&str, usize> = config
        .centers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let queue_ix: HashMap<&str, usize> = config
        .queues
        .iter()
        .enumerate()
        .map(|(i, q)| (q.id.as_str(), i))
        .collect();
    let mut agents = vec![0u32; config.queues.len()];
    for a in &config.agents {
        for q in &a.queues {
            if let Some(&i) = queue_ix.get(q.as_str()) {
                agents[i] += 1;
            }
        }
    }

    let path = |start: usize, minute_of_week: u32, date: Option<Date>| -> Result<(), GapReason> {
        let mut q = start;
        let mut seen = Vec::new();
        loop {
            if seen.contains(&q) {
                return Err(GapReason::Loop {
                    queue: config.queues[q].id.clone(),
                });
            }
            seen.push(q);
            let qc = &config.queues[q];
            let Some(&c) = center_ix.get(qc.center.as_str()) else {
                return Err(GapReason::ClosedUncovered {
                    center: qc.center.clone(),
                });
            };
            if !rosters[c].open(minute_of_week, date) {
                let cover = config.centers[c]
                    .covered_by
                    .as_deref()
                    .and_then(|cov| center_ix.get(cov))
                    .and_then(|&cc| queue_ix.get(config.centers[cc].queue.as_str()));
                match cover {
                    Some(&next) => q = next,
                    None => {
                        return Err(GapReason::ClosedUncovered {
                            center: config.centers[c].id.clone(),
                        })
                    }
                }
                continue;
            }
            if agents[q] > 0 {
                return Ok(());
            }
            match qc.overflow_to.as_deref().and_then(|to| queue_ix.get(to)) {
                Some(&next) => q = next,
                None => {
                    return Err(GapReason::NoAgents {
                        queue: qc.id.clone(),
                    })
                }
            }
        }
    };

    let mut days: Vec<(GapDay, Weekday, Option<Date>)> = Weekday::ALL
        .iter()
        .map(|&d| (GapDay::Weekly(d), d, None))
        .collect();
    let holidays: BTreeSet<Date> = config
        .centers
        .iter()
        .flat_map(|c| c.holidays.iter().filter_map(holiday_date))
        .collect();
    days.extend(
        holidays
            .into_iter()
            .map(|d| (GapDay::Holiday(d), d.weekday(), Some(d))),
    );

    let mut gaps = Vec::new();
    for (q, qc) in config.queues.iter().enumerate() {
        for &(day, weekday, date) in &days {
            let mut open: Option<(u32, GapReason)> = None;
            for minute in 0..=1440u32 {
                let result = if minute == 1440 {
                    Ok(())
                } else {
                    path(q, weekday.index() * 1440 + minute, date)
                };
                match (result, &open) {
                    (Err(reason), Some((_, r))) if *r == reason => {}
                    (result, _) => {
                        if let Some((start, reason)) = open.take() {
                            gaps.push(Gap {
                                queue: qc.id.clone(),
                                day,
                                start_minute: start,
                                end_minute: minute,
                                reason,
                            });
                        }
                        if let Err(reason) = result {
                            open = Some((minute, reason));
                        }
                    }
                }
            }
        }
    }
    gaps
}
