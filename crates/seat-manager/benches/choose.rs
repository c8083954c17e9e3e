//! Cost of the seat manager's decisions at provincial scale: 2,000 agents and 10,000 waiting
//! callers. Each must take microseconds, independent of those numbers.
//!
//! Run: `cargo bench -p seat-manager --bench choose`.

use std::collections::VecDeque;
use std::fmt::Write;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use seat_manager::*;

const AGENTS: usize = 2_000;
const WAITING: u64 = 10_000;

/// One center, two queues: `busy` (its agents all on calls, callers waiting) and `free` (its
/// agents idle). No wrap-up, so an agent whose call ends takes the next caller at once.
fn config(busy_agents: usize, free_agents: usize) -> SeatConfig {
    let mut t = String::from(
        "[[centers]]\nid = \"province\"\nqueue = \"busy\"\nauto_login_on_register = true\n\
         shifts = [{ days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"], start = \"00:00\", end = \"24:00\" }]\n\
         [[queues]]\nid = \"busy\"\ncenter = \"province\"\nwrap_up_s = 0\nmax_waiting = 1000000\n\
         [[queues]]\nid = \"free\"\ncenter = \"province\"\nwrap_up_s = 0\n",
    );
    for i in 0..busy_agents {
        let _ = write!(
            t,
            "[[agents]]\nid = \"b{i}\"\ncenter = \"province\"\nqueues = [\"busy\"]\n"
        );
    }
    for i in 0..free_agents {
        let _ = write!(
            t,
            "[[agents]]\nid = \"f{i}\"\ncenter = \"province\"\nqueues = [\"free\"]\n"
        );
    }
    SeatConfig::from_toml_str(&t).expect("bench config")
}

fn drain(sm: &mut SeatManager) -> usize {
    let mut n = 0;
    while let Some(c) = sm.poll_command() {
        black_box(c);
        n += 1;
    }
    sm.drain_log().for_each(drop);
    n
}

fn arrival(call: u64, queue: &str) -> Arrival<'_> {
    Arrival {
        call: CallId(call),
        queue,
        priority: 5,
        skill: None,
        language: None,
        prefecture: None,
        fallback: None,
    }
}

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

/// All `busy` agents on a call, `WAITING` callers queued behind them.
fn saturated(busy: usize, free: usize) -> (SeatManager, VecDeque<(String, u64)>, u64) {
    let mut sm = SeatManager::new(&config(busy, free)).unwrap();
    let mut on_call = VecDeque::new();
    let mut call = 0;
    for i in 0..busy {
        let a = format!("b{i}");
        sm.handle_agent_registered(at(0), &a).unwrap();
        call += 1;
        sm.handle_call_arrived(at(0), arrival(call, "busy"))
            .unwrap();
        sm.handle_offer_outcome(at(0), CallId(call), &a, OfferOutcome::Answered)
            .unwrap();
        on_call.push_back((a, call));
    }
    for _ in 0..WAITING {
        call += 1;
        sm.handle_call_arrived(at(0), arrival(call, "busy"))
            .unwrap();
    }
    for i in 0..free {
        sm.handle_agent_registered(at(0), &format!("f{i}")).unwrap();
    }
    drain(&mut sm);
    (sm, on_call, call)
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("seat-manager");

    // A caller arrives and queues behind 10,000 others (position computed); an agent's call ends
    // and it is offered the head of the queue; it answers. 2,000 agents, all busy.
    {
        let (mut sm, mut on_call, mut call) = saturated(AGENTS, 0);
        let mut t = 1;
        g.bench_function(
            "queued arrival + assignment + answer + end (2,000 agents, 10,000 waiting)",
            |b| {
                b.iter(|| {
                    t += 1;
                    call += 1;
                    sm.handle_call_arrived(at(t), arrival(call, "busy"))
                        .unwrap();
                    let (agent, old) = on_call.pop_front().unwrap();
                    sm.handle_call_ended(at(t), CallId(old));
                    let offered = match sm.agent_view(&agent).unwrap().offer {
                        Some(c) => c,
                        None => panic!("{agent} took no call"),
                    };
                    sm.handle_offer_outcome(at(t), offered, &agent, OfferOutcome::Answered)
                        .unwrap();
                    on_call.push_back((agent, offered.0));
                    drain(&mut sm)
                })
            },
        );
        assert_eq!(sm.kpis(at(t))[0].waiting_now as u64, WAITING);
        sm.check_invariants().unwrap();
    }

    // A caller arrives where 2,000 agents are idle (10,000 callers wait in another queue): the
    // longest-idle agent is chosen and offered the call; it answers; the call ends.
    {
        let (mut sm, _, mut call) = saturated(16, AGENTS);
        let mut t = 1;
        g.bench_function(
            "arrival to longest-idle of 2,000 + answer + end (10,000 waiting elsewhere)",
            |b| {
                b.iter(|| {
                    t += 1;
                    call += 1;
                    sm.handle_call_arrived(at(t), arrival(call, "free"))
                        .unwrap();
                    let agent = std::iter::from_fn(|| sm.poll_command())
                        .find_map(|c| match c {
                            Command::Offer { agent, .. } => Some(agent),
                            _ => None,
                        })
                        .expect("an idle agent is offered the call");
                    sm.handle_offer_outcome(at(t), CallId(call), &agent, OfferOutcome::Answered)
                        .unwrap();
                    sm.handle_call_ended(at(t), CallId(call));
                    drain(&mut sm)
                })
            },
        );
        sm.check_invariants().unwrap();
    }

    // The arrival alone: queue behind 10,000 (then the caller hangs up, to keep the size).
    {
        let (mut sm, _, mut call) = saturated(AGENTS, 0);
        let mut t = 1;
        g.bench_function("queued arrival + abandon (10,000 waiting)", |b| {
            b.iter(|| {
                t += 1;
                call += 1;
                sm.handle_call_arrived(at(t), arrival(call, "busy"))
                    .unwrap();
                sm.handle_caller_abandoned(at(t), CallId(call));
                drain(&mut sm)
            })
        });
    }

    // The metrics scrape: KPIs of every queue (scans calls and agents).
    {
        let (sm, _, _) = saturated(AGENTS, 0);
        g.bench_function("kpi snapshot (2,000 agents, 12,000 calls)", |b| {
            b.iter(|| black_box(sm.kpis(at(1))))
        });
    }
    g.finish();
}

criterion_group!(choose, benches);
criterion_main!(choose);
