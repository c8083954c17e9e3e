//! The wallboard: per center, today's queue figures, agents by state and emergency hand-offs.
//!
//! A task turns the core's once-a-second [`Snapshot`] into the board's JSON. "Today" is the
//! Asia/Shanghai calendar day (as the rosters count it): the counters are taken since start, and at
//! the first snapshot of each new day the task records them as that day's baseline.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use super::{AgentCountsInfo, EmergencyTally, QueueInfo, Snapshot};

/// The page (HTML, CSS and JS in one file: no build step).
pub const PAGE: &str = include_str!("wallboard.html");

/// Set each queue's center from the seat config.
pub fn fill_centers(queues: &mut [QueueInfo], seats: Option<&seat_manager::SeatConfig>) {
    let Some(s) = seats else { return };
    for q in queues {
        q.center = s
            .queues
            .iter()
            .find(|c| c.id == q.id)
            .map(|c| c.center.clone());
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct Board {
    unix_ms: i64,
    /// The local date the "today" figures are for (YYYY-MM-DD).
    date: String,
    registrations: usize,
    calls: usize,
    centers: Vec<CenterBoard>,
    emergency_today: EmergencyTally,
}

#[derive(Debug, Clone, Default, Serialize)]
struct CenterBoard {
    id: String,
    /// The center's home queue.
    queue: String,
    waiting: u32,
    ringing: u32,
    longest_wait_s: f64,
    offered_today: u64,
    answered_today: u64,
    answered_within_15s_today: u64,
    /// `null` before the day's first answered call.
    service_level_today: Option<f64>,
    abandoned_today: u64,
    agents: AgentCountsInfo,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    offered: u64,
    answered: u64,
    within: u64,
    abandoned: u64,
}

impl Counts {
    fn of(q: &QueueInfo) -> Counts {
        Counts {
            offered: q.offered,
            answered: q.answered,
            within: q.answered_within_15s,
            // Short abandons (under 5 s) are misdials, kept apart as the metrics do.
            abandoned: q.abandoned,
        }
    }
}

struct Today {
    date: Option<seat_manager::Date>,
    queues: HashMap<String, Counts>,
    emergency: EmergencyTally,
}

pub(super) fn spawn(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    seats: Option<Arc<seat_manager::SeatConfig>>,
) -> watch::Receiver<Arc<str>> {
    let (tx, rx) = watch::channel::<Arc<str>>(Arc::from("{}"));
    tokio::spawn(async move {
        let mut today = Today {
            date: None,
            queues: HashMap::new(),
            emergency: EmergencyTally::default(),
        };
        loop {
            let snap = snapshots.borrow_and_update().clone();
            if snap.unix_ms > 0 {
                let board = build(&snap, seats.as_deref(), &mut today);
                let text = serde_json::to_string(&board).unwrap_or_else(|_| "{}".to_owned());
                tx.send_if_modified(|old| {
                    if **old == *text {
                        false
                    } else {
                        *old = Arc::from(text);
                        true
                    }
                });
            }
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

fn build(snap: &Snapshot, seats: Option<&seat_manager::SeatConfig>, today: &mut Today) -> Board {
    let date = seat_manager::WallClock {
        unix_seconds: snap.unix_ms.div_euclid(1000),
    }
    .local()
    .date;
    if today.date != Some(date) {
        // A new day: today starts from here (the first day starts from the daemon's start).
        let first = today.date.is_none();
        today.date = Some(date);
        today.queues = snap
            .queues
            .iter()
            .map(|q| {
                let c = if first {
                    Counts::default()
                } else {
                    Counts::of(q)
                };
                (q.id.clone(), c)
            })
            .collect();
        today.emergency = if first {
            EmergencyTally::default()
        } else {
            snap.emergency
        };
    }
    let mut queues = snap.queues.clone();
    fill_centers(&mut queues, seats);
    // Centers from the seat config, in its order; without one, each queue stands alone.
    let centers: Vec<(String, String)> = match seats {
        Some(s) => s
            .centers
            .iter()
            .map(|c| (c.id.clone(), c.queue.clone()))
            .collect(),
        None => queues
            .iter()
            .map(|q| (q.id.clone(), q.id.clone()))
            .collect(),
    };
    let centers = centers
        .into_iter()
        .map(|(id, home)| {
            let mut b = CenterBoard {
                id: id.clone(),
                queue: home.clone(),
                ..CenterBoard::default()
            };
            let mut within = 0;
            for q in queues
                .iter()
                .filter(|q| q.center.as_deref() == Some(id.as_str()) || q.id == home)
            {
                let base = today.queues.get(&q.id).copied().unwrap_or_default();
                let now = Counts::of(q);
                b.waiting += q.waiting_now;
                b.ringing += q.ringing_now;
                b.longest_wait_s = b.longest_wait_s.max(q.longest_wait_s.unwrap_or(0.0));
                b.offered_today += now.offered.saturating_sub(base.offered);
                b.answered_today += now.answered.saturating_sub(base.answered);
                within += now.within.saturating_sub(base.within);
                b.abandoned_today += now.abandoned.saturating_sub(base.abandoned);
                if q.id == home {
                    b.agents = q.agents;
                }
            }
            b.answered_within_15s_today = within;
            b.service_level_today =
                (b.answered_today > 0).then(|| within as f64 / b.answered_today as f64);
            b
        })
        .collect();
    let e = snap.emergency;
    let base = today.emergency;
    Board {
        unix_ms: snap.unix_ms,
        date: format!("{date}"),
        registrations: snap.registrations,
        calls: snap.calls,
        centers,
        emergency_today: EmergencyTally {
            connected: e.connected.saturating_sub(base.connected),
            failed: e.failed.saturating_sub(base.failed),
            failovers: e.failovers.saturating_sub(base.failovers),
        },
    }
}
