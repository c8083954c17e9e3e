//! One test per rule of the seat manager, on virtual time.

mod common;

use std::time::Duration;

use common::*;
use seat_manager::*;

fn li() -> H {
    H::new(&small("longest-idle"))
}

#[test]
fn auto_login_on_register_and_logout_on_unregister() {
    let mut h = li();
    assert_eq!(h.state("x1"), AgentState::LoggedOut);
    h.register(&["x1"]);
    assert_eq!(h.state("x1"), AgentState::Available);
    let cmds = h.cmds();
    assert!(cmds.contains(&Command::AgentStateChanged {
        agent: "x1".into(),
        from: AgentState::LoggedOut,
        to: AgentState::Available
    }));
    // A refresh of a live registration changes nothing, even after an explicit logout.
    h.sm.handle_agent_action(h.now, "x1", AgentAction::Logout)
        .unwrap();
    h.register(&["x1"]);
    assert_eq!(h.state("x1"), AgentState::LoggedOut);
    h.sm.handle_agent_action(h.now, "x1", AgentAction::Login)
        .unwrap();
    h.sm.handle_agent_unregistered(h.now, "x1").unwrap();
    assert_eq!(h.state("x1"), AgentState::LoggedOut);
    assert_eq!(
        h.sm.handle_agent_action(h.now, "x1", AgentAction::Login),
        Err(SeatError::NotRegistered("x1".into()))
    );
    assert_eq!(
        h.sm.handle_agent_action(h.now, "nobody", AgentAction::Login),
        Err(SeatError::UnknownAgent("nobody".into()))
    );
    h.cmds();
}

#[test]
fn no_auto_login_when_the_center_does_not_ask_for_it() {
    let mut h = H::new(&small("longest-idle").replace("auto_login_on_register = true", ""));
    h.register(&["x1"]);
    assert_eq!(h.state("x1"), AgentState::LoggedOut);
    assert_eq!(
        h.sm.handle_agent_action(h.now, "x1", AgentAction::Login),
        Ok(AgentState::Available)
    );
    h.cmds();
}

#[test]
fn longest_idle_agent_gets_the_next_call() {
    let mut h = li();
    h.register(&["x2"]);
    h.advance_to(1);
    h.register(&["x1"]);
    h.advance_to(2);
    h.register(&["x3"]);
    h.cmds();
    h.arrive(1, "x");
    assert_eq!(offers(&h.cmds()), [(1, "x2".into())]);
    h.arrive(2, "x");
    assert_eq!(offers(&h.cmds()), [(2, "x1".into())]);
    h.answer(2, "x1");
    h.answer(1, "x2");
    h.advance_to(10);
    h.end(1);
    // x2 is in wrap-up until 15 s, then idle since 15 s: x3 (idle since 2 s) is next.
    h.advance_to(20);
    h.arrive(3, "x");
    assert_eq!(offers(&h.cmds()), [(3, "x3".into())]);
    h.arrive(4, "x");
    assert_eq!(offers(&h.cmds()), [(4, "x2".into())]);
    assert_eq!(
        h.sm.agent_view("x2").unwrap().idle_since,
        secs(15),
        "idle since the end of wrap-up"
    );
}

#[test]
fn callers_are_served_by_priority_then_arrival() {
    let mut h = li();
    h.arrive_with(1, "p", 5, None);
    h.arrive_with(2, "p", 5, None);
    h.arrive_with(3, "p", 9, None);
    h.arrive_with(4, "p", 0, None);
    let q = queued(&h.cmds());
    assert_eq!(
        q,
        [
            (1, "p".into(), 1),
            (2, "p".into(), 2),
            (3, "p".into(), 1),
            (4, "p".into(), 4)
        ]
    );
    h.register(&["p1"]);
    assert_eq!(offers(&h.cmds()), [(3, "p1".into())]);
    h.register(&["p2"]);
    assert_eq!(offers(&h.cmds()), [(1, "p2".into())]);
}

#[test]
fn round_robin_follows_config_order_after_the_last_offered() {
    let mut h = H::new(&small("round-robin"));
    h.register(&["x3", "x2", "x1"]);
    h.cmds();
    let mut got = Vec::new();
    for call in 1..=3 {
        h.arrive(call, "x");
        got.extend(offers(&h.cmds()).into_iter().map(|o| o.1));
        h.answer(call, &got.last().unwrap().clone());
        h.end(call);
        h.sm.handle_agent_action(h.now, got.last().unwrap(), AgentAction::Ready)
            .unwrap();
    }
    assert_eq!(got, ["x1", "x2", "x3"]);
    h.arrive(4, "x");
    assert_eq!(offers(&h.cmds()), [(4, "x1".into())], "wraps around");
}

#[test]
fn fewest_calls_prefers_the_agent_with_fewer_answers() {
    let mut h = H::new(&small("fewest-calls"));
    h.register(&["x1", "x2"]);
    h.arrive(1, "x");
    assert_eq!(offers(&h.cmds()), [(1, "x1".into())]);
    h.answer(1, "x1");
    h.end(1);
    h.sm.handle_agent_action(h.now, "x1", AgentAction::Ready)
        .unwrap();
    h.advance_to(100);
    h.sm.handle_agent_action(h.now, "x2", AgentAction::Break(0))
        .unwrap();
    h.sm.handle_agent_action(h.now, "x2", AgentAction::Ready)
        .unwrap();
    h.cmds();
    // x1 has been idle longer, but has answered one call; x2 none.
    h.arrive(2, "x");
    assert_eq!(offers(&h.cmds()), [(2, "x2".into())]);
}

#[test]
fn skill_level_prefers_the_highest_level_in_the_calls_skill() {
    let mut h = H::new(&small("skill-level"));
    h.register(&["x1", "x3", "x2"]);
    h.cmds();
    h.sm.handle_call_arrived(
        h.now,
        Arrival {
            call: CallId(1),
            queue: "x",
            priority: 5,
            skill: Some("market-supervision"),
            language: None,
            prefecture: Some("xining"),
            fallback: None,
        },
    )
    .unwrap();
    assert_eq!(offers(&h.cmds()), [(1, "x2".into())]);
    // Without a skill: the longest idle.
    h.arrive(2, "x");
    assert_eq!(offers(&h.cmds()), [(2, "x1".into())]);
}

#[test]
fn ring_all_rings_every_idle_agent_and_cancels_the_rest_on_answer() {
    let mut h = H::new(&small("ring-all"));
    h.register(&["x1", "x2", "x3"]);
    h.cmds();
    h.arrive(1, "x");
    let cmds = h.cmds();
    assert_eq!(offers(&cmds).len(), 3);
    h.answer(1, "x2");
    let cmds = h.cmds();
    let mut c = cancels(&cmds);
    c.sort();
    assert_eq!(c, [(1, "x1".into()), (1, "x3".into())]);
    assert_eq!(h.state("x1"), AgentState::Available);
    assert_eq!(h.state("x2"), AgentState::OnCall);
    // A second 200 OK that crossed the CANCEL: that leg is hung up, x3 stays free.
    h.answer(1, "x3");
    let cmds = h.cmds();
    assert!(cmds.contains(&Command::HangUpAgentLeg {
        call: CallId(1),
        agent: "x3".into()
    }));
    assert_eq!(h.state("x3"), AgentState::Available);
    assert_eq!(h.kpi("x").answered, 1);
}

#[test]
fn ring_timeout_moves_the_call_on_and_missed_calls_put_an_agent_on_break() {
    let mut h = li();
    h.register(&["x1"]);
    h.advance_to(1);
    h.register(&["x2"]);
    h.advance_to(2);
    h.cmds();
    h.arrive(1, "x");
    assert_eq!(offers(&h.cmds()), [(1, "x1".into())]);
    h.advance_to(11);
    assert!(cancels(&h.cmds()).is_empty());
    h.advance_to(12);
    let cmds = h.cmds();
    assert_eq!(cancels(&cmds), [(1, "x1".into())]);
    assert_eq!(offers(&cmds), [(1, "x2".into())]);
    assert_eq!(h.sm.agent_view("x1").unwrap().missed_in_row, 1);
    // x1 is held back for reoffer_delay_s (3 s), then idle again.
    assert!(!h.sm.agent_view("x1").unwrap().offerable);
    h.advance_to(15);
    assert!(h.sm.agent_view("x1").unwrap().offerable);
    h.arrive(2, "x");
    assert_eq!(offers(&h.cmds()), [(2, "x1".into())]);
    h.advance_to(25);
    // Second miss in a row (max_no_answer = 2): break.
    assert_eq!(h.state("x1"), AgentState::Break(BreakReason::MissedCalls));
    let v = h.sm.agent_view("x1").unwrap();
    assert_eq!(v.deadline, Some(secs(25 + 3600)), "a break has a limit too");
    // Call 1 rang out at x2 at 22 s and waits again, first in line; call 2 queues behind it.
    // x2's hold-back ends at 25 s too, after x1's timer: it takes call 1.
    let cmds = h.cmds();
    assert!(queued(&cmds).contains(&(1, "x".into(), 1)));
    assert!(queued(&cmds).contains(&(2, "x".into(), 2)));
    assert!(offers(&cmds).contains(&(1, "x2".into())));
    h.sm.handle_caller_abandoned(h.now, CallId(1));
    h.sm.handle_caller_abandoned(h.now, CallId(2));
    // After max_break_s the agent is logged out.
    h.advance_to(25 + 3600);
    assert_eq!(h.state("x1"), AgentState::LoggedOut);
}

#[test]
fn busy_and_decline_try_the_next_agent_without_counting_a_miss() {
    let mut h = li();
    h.register(&["x1"]);
    h.advance_to(1);
    h.register(&["x2"]);
    h.cmds();
    h.arrive(1, "x");
    h.cmds();
    h.outcome(1, "x1", OfferOutcome::Busy);
    let cmds = h.cmds();
    assert!(cancels(&cmds).is_empty(), "the branch already ended");
    assert_eq!(offers(&cmds), [(1, "x2".into())]);
    h.outcome(1, "x2", OfferOutcome::Declined);
    let cmds = h.cmds();
    assert!(
        offers(&cmds).is_empty(),
        "both held back by reoffer_delay_s"
    );
    assert_eq!(queued(&cmds), [(1, "x".into(), 1)]);
    assert_eq!(h.sm.agent_view("x1").unwrap().missed_in_row, 0);
    h.advance_to(4);
    // x1 comes back first (its hold-back ends first) and is idle longest.
    assert_eq!(offers(&h.cmds()), [(1, "x1".into())]);
    // A stale refusal (for an offer already withdrawn) is ignored.
    h.outcome(1, "x2", OfferOutcome::Busy);
    assert!(h.cmds().is_empty());
}

#[test]
fn wrap_up_follows_every_call_and_ends_by_itself_or_by_ready() {
    let mut h = li();
    h.register(&["x1"]);
    h.arrive(1, "x");
    h.answer(1, "x1");
    h.advance_to(60);
    h.end(1);
    h.cmds();
    assert_eq!(h.state("x1"), AgentState::WrapUp);
    assert_eq!(h.sm.agent_view("x1").unwrap().deadline, Some(secs(65)));
    h.arrive(2, "x");
    assert!(offers(&h.cmds()).is_empty());
    h.advance_to(65);
    assert_eq!(offers(&h.cmds()), [(2, "x1".into())]);
    h.answer(2, "x1");
    h.end(2);
    h.sm.handle_agent_action(h.now, "x1", AgentAction::Ready)
        .unwrap();
    assert_eq!(h.state("x1"), AgentState::Available);
    h.cmds();
}

#[test]
fn abandons_are_counted_with_short_ones_apart() {
    let mut h = li();
    h.arrive(1, "p");
    h.arrive(2, "p");
    h.advance_to(4);
    h.sm.handle_caller_abandoned(h.now, CallId(1));
    h.advance_to(40);
    h.sm.handle_caller_abandoned(h.now, CallId(2));
    let cmds = h.cmds();
    assert!(cmds.contains(&Command::Abandoned {
        call: CallId(2),
        queue: "p".into(),
        waited: Duration::from_secs(40)
    }));
    let k = h.kpi("p");
    assert_eq!((k.offered, k.abandoned, k.abandoned_short), (2, 1, 1));
    assert_eq!(k.waiting_now, 0);
    // A CANCEL for a call already gone is ignored.
    h.sm.handle_caller_abandoned(h.now, CallId(2));
    assert!(h.cmds().is_empty());
}

#[test]
fn caller_leaving_while_ringing_cancels_the_offer_without_penalty() {
    let mut h = li();
    h.register(&["x1"]);
    h.arrive(1, "x");
    h.cmds();
    h.advance_to(6);
    h.sm.handle_caller_abandoned(h.now, CallId(1));
    let cmds = h.cmds();
    assert_eq!(cancels(&cmds), [(1, "x1".into())]);
    let v = h.sm.agent_view("x1").unwrap();
    assert_eq!(v.state, AgentState::Available);
    assert!(v.offerable);
    assert_eq!(v.missed_in_row, 0);
    assert_eq!(v.idle_since, secs(0), "keeps its place in the idle order");
    // The 200 OK that crossed the CANCEL: hang that leg up.
    h.answer(1, "x1");
    assert!(h.cmds().contains(&Command::HangUpAgentLeg {
        call: CallId(1),
        agent: "x1".into()
    }));
    assert_eq!(h.state("x1"), AgentState::Available);
}

#[test]
fn prefecture_call_overflows_to_the_province_after_overflow_after_s() {
    let mut h = li();
    h.register(&["x1", "p1"]);
    h.arrive(1, "x");
    h.answer(1, "x1");
    h.arrive(2, "x");
    assert_eq!(queued(&h.cmds()), [(2, "x".into(), 1)]);
    h.advance_to(29);
    assert!(h.cmds().is_empty());
    h.advance_to(30);
    let cmds = h.cmds();
    assert_eq!(
        overflows(&cmds),
        [(2, "x".into(), "p".into(), OverflowReason::Timeout)]
    );
    assert_eq!(offers(&cmds), [(2, "p1".into())]);
    h.answer(2, "p1");
    assert_eq!(h.kpi("x").overflowed, 1);
    assert_eq!(h.kpi("p").answered, 1);
    assert_eq!(
        h.kpi("p").answered_within_sl,
        0,
        "waited 30 s since arrival"
    );
}

#[test]
fn overflow_time_reached_while_ringing_is_dropped_when_the_agent_answers() {
    let mut h = li();
    h.register(&["x1", "p1"]);
    h.arrive(1, "x");
    h.answer(1, "x1");
    h.arrive(2, "x");
    h.cmds();
    h.advance_to(25);
    h.register(&["x2"]);
    assert_eq!(offers(&h.cmds()), [(2, "x2".into())]);
    // The overflow time (30 s) passes while x2's phone rings: the offer is not pulled away.
    h.advance_to(32);
    assert!(overflows(&h.cmds()).is_empty());
    h.answer(2, "x2");
    assert_eq!(h.sm.call_view(CallId(2)).unwrap().queue.as_ref(), "x");
    h.advance_to(100);
    assert!(overflows(&h.cmds()).is_empty());
    assert_eq!(h.kpi("x").answered, 2);
    assert_eq!(h.kpi("x").overflowed, 0);
}

#[test]
fn a_ring_that_outlasts_the_overflow_time_overflows_when_it_fails() {
    let mut h = li();
    h.register(&["x1", "p1"]);
    h.arrive(1, "x");
    h.answer(1, "x1");
    h.advance_to(25);
    h.arrive(2, "x");
    h.cmds();
    h.advance_to(50);
    h.register(&["x2"]);
    assert_eq!(offers(&h.cmds()), [(2, "x2".into())]);
    h.advance_to(55);
    assert!(overflows(&h.cmds()).is_empty(), "ringing: not pulled away");
    h.advance_to(60);
    let cmds = h.cmds();
    assert_eq!(cancels(&cmds), [(2, "x2".into())]);
    assert_eq!(
        overflows(&cmds),
        [(2, "x".into(), "p".into(), OverflowReason::Timeout)]
    );
    assert_eq!(offers(&cmds), [(2, "p1".into())]);
}

#[test]
fn overflow_at_once_when_the_queue_has_no_agent_logged_in() {
    let mut h = li();
    h.register(&["p1"]);
    h.cmds();
    h.arrive(1, "x");
    let cmds = h.cmds();
    assert_eq!(
        overflows(&cmds),
        [(1, "x".into(), "p".into(), OverflowReason::NoAgent)]
    );
    assert_eq!(offers(&cmds), [(1, "p1".into())]);
    assert_eq!(h.kpi("x").redirected, 1);
    // Callers waiting when the last agent logs out move on too.
    h.register(&["x1"]);
    h.arrive(2, "x");
    h.answer(2, "x1");
    h.arrive(3, "x");
    h.cmds();
    h.sm.handle_agent_action(h.now, "x1", AgentAction::Logout)
        .unwrap();
    let cmds = h.cmds();
    assert_eq!(
        overflows(&cmds),
        [(3, "x".into(), "p".into(), OverflowReason::NoAgent)]
    );
    assert_eq!(
        h.state("x1"),
        AgentState::OnCall,
        "logout waits for the call"
    );
    h.end(2);
    assert_eq!(h.state("x1"), AgentState::LoggedOut);
}

#[test]
fn no_agent_anywhere_raises_the_alarm_and_the_call_waits_for_the_first_login() {
    let mut h = li();
    h.arrive(1, "x");
    let cmds = h.cmds();
    assert!(cmds.contains(&Command::NoAgentAnywhere {
        call: CallId(1),
        queue: "p".into()
    }));
    h.register(&["p2"]);
    assert_eq!(offers(&h.cmds()), [(1, "p2".into())]);
}

#[test]
fn outside_staffed_hours_calls_go_to_the_covering_center() {
    // 21:00: Xining (08:00–20:00) is closed.
    let mut h = H::at_local_minute(&small("longest-idle"), 21 * 60);
    assert_eq!(h.sm.center_open("xining"), Some(false));
    h.register(&["x1", "p1"]);
    h.cmds();
    h.arrive(1, "x");
    let cmds = h.cmds();
    assert_eq!(
        overflows(&cmds),
        [(1, "x".into(), "p".into(), OverflowReason::CenterClosed)]
    );
    assert_eq!(offers(&cmds), [(1, "p1".into())]);
}

#[test]
fn callers_waiting_when_a_center_closes_move_to_its_cover() {
    // 19:59:00; Xining closes at 20:00.
    let mut h = H::at_local_minute(&small("longest-idle"), 20 * 60 - 1);
    h.register(&["x1"]);
    h.arrive(1, "x");
    h.answer(1, "x1");
    h.advance_to(40);
    h.arrive(2, "x");
    h.cmds();
    h.advance_to(59);
    let w = h.wall();
    h.sm.handle_wall_clock(h.now, w);
    assert!(overflows(&h.cmds()).is_empty(), "19:59:59: still open");
    h.advance_to(60);
    let w = h.wall();
    h.sm.handle_wall_clock(h.now, w);
    assert_eq!(h.sm.center_open("xining"), Some(false));
    assert_eq!(
        overflows(&h.cmds()),
        [(2, "x".into(), "p".into(), OverflowReason::CenterClosed)]
    );
    assert!(h.sm.drain_log().any(|e| e.event
        == LogEvent::CenterClosed {
            center: "xining".into()
        }));
}

#[test]
fn agent_logging_out_while_ringing_cancels_and_the_caller_keeps_its_place() {
    let mut h = li();
    h.register(&["x1"]);
    h.arrive(1, "x");
    h.cmds();
    h.arrive(2, "x");
    h.cmds();
    h.register(&["x2"]);
    h.cmds();
    h.advance_to(2);
    h.register(&["x3"]);
    h.cmds();
    h.sm.handle_agent_action(h.now, "x1", AgentAction::Break(7))
        .unwrap();
    let cmds = h.cmds();
    assert_eq!(cancels(&cmds), [(1, "x1".into())]);
    // Call 1 is still first in line: offered to the idle x3 at once.
    assert_eq!(offers(&cmds), [(1, "x3".into())]);
    assert_eq!(h.state("x1"), AgentState::Break(BreakReason::Requested(7)));
    // Unregistering while ringing: the same.
    h.sm.handle_agent_unregistered(h.now, "x3").unwrap();
    let cmds = h.cmds();
    assert_eq!(cancels(&cmds), [(1, "x3".into())]);
    assert_eq!(queued(&cmds), [(1, "x".into(), 1)]);
    assert_eq!(h.state("x3"), AgentState::LoggedOut);
}

#[test]
fn break_asked_during_a_call_starts_after_wrap_up() {
    let mut h = li();
    h.register(&["x1"]);
    h.arrive(1, "x");
    h.answer(1, "x1");
    assert_eq!(
        h.sm.handle_agent_action(h.now, "x1", AgentAction::Break(2)),
        Ok(AgentState::OnCall)
    );
    h.end(1);
    assert_eq!(h.state("x1"), AgentState::WrapUp);
    h.advance_to(5);
    assert_eq!(h.state("x1"), AgentState::Break(BreakReason::Requested(2)));
    assert_eq!(
        h.sm.handle_agent_action(h.now, "x1", AgentAction::Ready),
        Ok(AgentState::Available)
    );
    h.sm.handle_agent_action(h.now, "x1", AgentAction::Logout)
        .unwrap();
    assert_eq!(
        h.sm.handle_agent_action(h.now, "x1", AgentAction::Break(0)),
        Err(SeatError::NotLoggedIn("x1".into()))
    );
    h.cmds();
}

#[test]
fn late_answer_after_the_ring_timeout_still_connects_a_waiting_call() {
    let mut h = li();
    h.register(&["x1"]);
    h.advance_to(1);
    h.register(&["x2"]);
    h.arrive(1, "x");
    h.cmds();
    h.advance_to(11);
    // x1 timed out; call 1 now rings x2. x1's 200 OK crossed our CANCEL.
    assert_eq!(offers(&h.cmds()), [(1, "x2".into())]);
    h.answer(1, "x1");
    let cmds = h.cmds();
    assert_eq!(cancels(&cmds), [(1, "x2".into())]);
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Connected { agent, .. } if &**agent == "x1")));
    assert_eq!(h.state("x2"), AgentState::Available);
    assert_eq!(h.sm.agent_view("x1").unwrap().missed_in_row, 0);
}

#[test]
fn unanswered_audit_frees_an_agent_whose_bye_was_lost() {
    let mut h = li();
    h.register(&["x1", "x2"]);
    h.arrive(1, "x");
    h.arrive(2, "x");
    h.answer(1, "x1");
    h.answer(2, "x2");
    h.cmds();
    h.advance_to(300);
    let cmds = h.cmds();
    assert!(cmds.contains(&Command::AuditCall {
        call: CallId(1),
        agent: "x1".into()
    }));
    h.sm.handle_call_alive(h.now, CallId(2));
    h.advance_to(600);
    let cmds = h.cmds();
    assert!(cmds.contains(&Command::ReleaseCall {
        call: CallId(1),
        agent: "x1".into()
    }));
    assert_eq!(h.state("x1"), AgentState::WrapUp);
    assert_eq!(h.state("x2"), AgentState::OnCall);
    assert!(h.sm.call_view(CallId(1)).is_none());
}

#[test]
fn a_full_queue_rejects_new_arrivals() {
    let mut h = li();
    h.register(&["x1"]);
    h.arrive(1, "x");
    h.answer(1, "x1");
    for c in 2..=5 {
        h.arrive(c, "x");
    }
    let cmds = h.cmds();
    assert!(cmds.contains(&Command::Rejected {
        call: CallId(5),
        queue: "x".into(),
        reason: RejectReason::QueueFull
    }));
    assert_eq!(h.kpi("x").rejected, 1);
    assert_eq!(
        h.sm.handle_call_arrived(
            h.now,
            Arrival {
                call: CallId(2),
                queue: "x",
                priority: 5,
                skill: None,
                language: None,
                prefecture: None,
                fallback: None
            }
        ),
        Err(SeatError::DuplicateCall(CallId(2)))
    );
}

#[test]
fn tibetan_callers_get_tibetan_speakers_and_overflow_when_none_is_logged_in() {
    let mut h = li();
    h.register(&["x1", "p1"]);
    h.advance_to(1);
    h.register(&["p2"]);
    h.cmds();
    // No Tibetan speaker in Xining: to the province at once, and there to p2 although p1 is
    // idle longer.
    h.arrive_with(1, "x", 5, Some("bo"));
    let cmds = h.cmds();
    assert_eq!(
        overflows(&cmds),
        [(1, "x".into(), "p".into(), OverflowReason::NoAgent)]
    );
    assert_eq!(offers(&cmds), [(1, "p2".into())]);
    // A second Tibetan caller waits for p2 while p1 stays idle.
    h.arrive_with(2, "p", 5, Some("bo"));
    assert!(offers(&h.cmds()).is_empty());
    assert!(h.sm.agent_view("p1").unwrap().offerable);
    // p2 logs out: no speaker left at the end of the chain, so anyone may take it.
    h.sm.handle_agent_unregistered(h.now, "p2").unwrap();
    let cmds = h.cmds();
    assert_eq!(cancels(&cmds), [(1, "p2".into())]);
    assert_eq!(offers(&cmds), [(1, "p1".into())]);
    assert!(h
        .sm
        .drain_log()
        .any(|e| e.call == Some(CallId(2)) && e.event == LogEvent::LanguageRelaxed));
}

#[test]
fn dual_line_fallback_overrides_the_first_queues_overflow() {
    let mut h = li();
    h.register(&["x1", "x2"]);
    h.arrive(1, "x");
    h.answer(1, "x1");
    h.arrive(2, "x");
    h.answer(2, "x2");
    h.cmds();
    // A dual-line call waiting in `x` with the dialplan's fallback to `p` after 20 s.
    h.sm.handle_call_arrived(
        h.now,
        Arrival {
            call: CallId(3),
            queue: "x",
            priority: 5,
            skill: Some("market-supervision"),
            language: None,
            prefecture: Some("haidong"),
            fallback: Some(Fallback {
                queue: "p",
                after: Some(Duration::from_secs(20)),
            }),
        },
    )
    .unwrap();
    h.advance_to(20);
    assert_eq!(
        overflows(&h.cmds()),
        [(3, "x".into(), "p".into(), OverflowReason::Timeout)]
    );
    assert!(matches!(
        h.sm.handle_call_arrived(
            h.now,
            Arrival {
                call: CallId(4),
                queue: "x",
                priority: 5,
                skill: None,
                language: None,
                prefecture: None,
                fallback: Some(Fallback {
                    queue: "nowhere",
                    after: None
                }),
            }
        ),
        Err(SeatError::UnknownQueue(_))
    ));
}

#[test]
fn kpis_add_up_and_measure_the_service_level() {
    let mut h = li();
    h.register(&["p1"]);
    h.arrive(1, "p"); // answered after 3 s
    h.arrive(2, "p"); // waits; answered at 40 s
    h.advance_to(3);
    h.answer(1, "p1");
    h.advance_to(30);
    h.end(1);
    h.advance_to(35);
    h.cmds();
    h.advance_to(38);
    h.answer(2, "p1");
    h.arrive(3, "p"); // still waiting
    h.advance_to(50);
    let k = h.kpi("p");
    assert_eq!(k.offered, 3);
    assert_eq!(k.answered, 2);
    assert_eq!(k.answered_within_sl, 1);
    assert_eq!(k.wait_total, Duration::from_secs(3 + 38));
    assert_eq!(k.wait_max, Duration::from_secs(38));
    assert_eq!(k.average_wait(), Some(Duration::from_millis(20_500)));
    assert_eq!(k.service_level(), Some(0.5));
    assert_eq!(k.waiting_now, 1);
    assert_eq!(k.longest_wait_now, Some(Duration::from_secs(12)));
    assert_eq!(
        k.agents,
        AgentCounts {
            on_call: 1,
            logged_out: 1,
            ..AgentCounts::default()
        }
    );
    assert_eq!(
        k.offered,
        k.redirected
            + k.overflowed
            + k.answered
            + k.abandoned
            + k.abandoned_short
            + k.rejected
            + u64::from(k.waiting_now + k.ringing_now)
    );
}

#[test]
fn the_queue_log_records_a_calls_life_and_is_bounded() {
    let mut h = H::new(&small("longest-idle").replace(
        "max_break_s = 3600",
        "max_break_s = 3600\nqueue_log_capacity = 8",
    ));
    h.register(&["x1"]);
    h.sm.drain_log().for_each(drop);
    h.arrive(1, "x");
    h.answer(1, "x1");
    h.end(1);
    let log: Vec<LogEntry> = h.sm.drain_log().collect();
    let kinds: Vec<&LogEvent> = log.iter().map(|e| &e.event).collect();
    assert!(matches!(kinds[0], LogEvent::Enter { priority: 5, .. }));
    assert!(kinds.contains(&&LogEvent::Offer));
    assert!(kinds.contains(&&LogEvent::Connect {
        waited: Duration::ZERO
    }));
    assert!(kinds.iter().any(|k| matches!(k, LogEvent::Complete { .. })));
    for c in 2..20 {
        h.arrive(c, "p");
    }
    assert_eq!(h.sm.drain_log().count(), 8);
    assert!(h.sm.log_dropped() > 0);
}

#[test]
fn nothing_is_left_stale_after_every_call_ends() {
    let mut h = li();
    h.register(&["x1", "x2", "x3", "p1", "p2"]);
    for c in 1..=8 {
        h.arrive(c, if c % 2 == 0 { "x" } else { "p" });
    }
    for step in 0..200 {
        h.advance_to(step * 3);
        for cmd in h.cmds() {
            if let Command::Offer { call, agent, .. } = cmd {
                if call.0 % 3 != 0 {
                    h.answer(call.0, &agent);
                }
            }
        }
        if step % 5 == 0 {
            for c in 1..=8 {
                h.end(c);
            }
        }
    }
    assert_eq!(h.sm.call_count(), 0);
    for a in ["x1", "x2", "x3", "p1", "p2"] {
        let v = h.sm.agent_view(a).unwrap();
        assert!(v.offer.is_none() && v.call.is_none(), "{a}: {v:?}");
    }
}
