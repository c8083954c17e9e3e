//! The shipped demo config, validation, and the roster check.

mod common;

use seat_manager::*;

const DEMO: &str = include_str!("../examples/demo-seats.toml");

#[test]
fn demo_config_loads_and_matches_the_daemons_demo_roster() {
    let config = SeatConfig::from_toml_str(DEMO).expect("demo config is valid");
    let ids: Vec<&str> = config.agents.iter().map(|a| a.id.as_str()).collect();
    let want: Vec<String> = (8001..=8016).map(|n| n.to_string()).collect();
    assert_eq!(ids, want);
    let prefectures = [
        "xining", "haidong", "haibei", "huangnan", "hainan", "golog", "yushu", "haixi",
    ];
    for (i, p) in prefectures.iter().enumerate() {
        assert_eq!(config.agents[i].queues, [format!("12345-{p}")]);
    }
    for a in &config.agents[8..12] {
        assert_eq!(a.queues, ["12345-province"]);
    }
    for (a, d) in config.agents[12..]
        .iter()
        .zip(["12315", "12333", "12328", "12320"])
    {
        assert_eq!(a.queues, [format!("dept-{d}")]);
    }
    assert!(config.centers.iter().all(|c| c.auto_login_on_register));
    assert!(SeatManager::new(&config).is_ok());
}

#[test]
fn demo_roster_has_no_gaps() {
    let config = SeatConfig::from_toml_str(DEMO).unwrap();
    let gaps = roster_check(&config);
    assert!(gaps.is_empty(), "{gaps:#?}");
}

#[test]
fn demo_queue_ids_match_the_qinghai_dialplan() {
    let plan = include_str!("../../../dialplans/qinghai.toml");
    let config = SeatConfig::from_toml_str(DEMO).unwrap();
    for q in &config.queues {
        assert!(
            plan.contains(&format!("\"{}\"", q.id)),
            "queue {} is not in dialplans/qinghai.toml",
            q.id
        );
    }
}

#[test]
fn roster_check_reports_uncovered_hours_and_holidays() {
    // Xining without cover, and a province closed on National Day.
    let text = common::small("longest-idle")
        .replace("covered_by = \"province\"\n", "")
        .replace(
            "queue = \"p\"\nauto_login_on_register = true\n",
            "queue = \"p\"\nauto_login_on_register = true\nholidays = [2025-10-01]\n",
        );
    let config = SeatConfig::from_toml_str(&text).unwrap();
    let gaps = roster_check(&config);
    let shown: Vec<String> = gaps.iter().map(ToString::to_string).collect();
    assert!(
        shown.contains(
            &"x: every Mon 00:00–08:00: center `xining` is closed and nobody covers it".to_owned()
        ),
        "{shown:#?}"
    );
    assert!(shown.contains(
        &"x: every Sun 20:00–24:00: center `xining` is closed and nobody covers it".to_owned()
    ));
    assert!(shown.contains(&"p: 2025-10-01 (Wed, holiday) 00:00–24:00: center `province` is closed and nobody covers it".to_owned()));
    // `p` is closed only on the holiday; `x` before 08:00 and after 20:00 on each of 7 days.
    assert_eq!(gaps.iter().filter(|g| g.queue == "p").count(), 1);
    assert_eq!(
        gaps.iter()
            .filter(|g| g.queue == "x" && matches!(g.day, GapDay::Weekly(_)))
            .count(),
        14
    );
}

#[test]
fn roster_check_follows_overflow_from_a_queue_without_agents() {
    let text = common::small("longest-idle").replace(
        "[[agents]]\nid = \"p1\"\ncenter = \"province\"\nqueues = [\"p\"]\n",
        "",
    );
    let text = text.replace(
        "[[agents]]\nid = \"p2\"\ncenter = \"province\"\nqueues = [\"p\"]\nlanguages = [\"zh\", \"bo\"]\n",
        "",
    );
    let config = SeatConfig::from_toml_str(&text).unwrap();
    let gaps = roster_check(&config);
    // `p` has no agents at all; `x` is fine while open, and leads to empty `p` when closed.
    assert!(gaps.iter().any(|g| g.queue == "p"
        && g.start_minute == 0
        && g.end_minute == 1440
        && g.reason == GapReason::NoAgents { queue: "p".into() }));
    assert!(gaps
        .iter()
        .any(|g| g.queue == "x" && g.start_minute == 20 * 60 && g.end_minute == 1440));
}

#[test]
fn overnight_shifts_run_into_the_next_day() {
    let text = common::small("longest-idle").replace(
        "start = \"08:00\", end = \"20:00\"",
        "start = \"08:00\", end = \"20:00\" }, { days = [\"sun\"], start = \"20:00\", end = \"08:00\"",
    );
    let config = SeatConfig::from_toml_str(&text).unwrap();
    let mut h = common::H::at_local_minute(&text, 2 * 60); // Monday 02:00
    assert_eq!(
        h.sm.center_open("xining"),
        Some(true),
        "Sunday's night shift"
    );
    h.advance_to(6 * 3600);
    let w = h.wall();
    h.sm.handle_wall_clock(h.now, w); // Monday 08:00
    assert_eq!(h.sm.center_open("xining"), Some(true));
    h.advance_to(18 * 3600 + 60);
    let w = h.wall();
    h.sm.handle_wall_clock(h.now, w); // Monday 20:01
    assert_eq!(h.sm.center_open("xining"), Some(false));
    drop(config);
}

#[test]
fn validation_lists_every_problem() {
    let text = common::small("longest-idle")
        .replace("overflow_to = \"p\"", "overflow_to = \"nowhere\"")
        .replace("covered_by = \"province\"", "covered_by = \"xining\"")
        .replace("ring_timeout_s = 10\nmax_no_answer = 2\nwrap_up_s = 5\nreoffer_delay_s = 3\n\n[[queues]]", "ring_timeout_s = 0\nmax_no_answer = 2\nwrap_up_s = 5\nreoffer_delay_s = 3\n\n[[queues]]")
        .replace("market-supervision = 7", "market-supervision = 12")
        .replace("start = \"08:00\"", "start = \"8:00\"");
    let Err(ConfigError::Invalid(problems)) = SeatConfig::from_toml_str(&text) else {
        panic!("must be refused");
    };
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |s: &str| text.iter().any(|p| p.contains(s));
    assert!(
        has("queues[1] (x).overflow_to: unknown queue `nowhere`"),
        "{text:#?}"
    );
    assert!(has(
        "centers[1] (xining).covered_by: a center cannot cover itself"
    ));
    assert!(has("queues[0] (p).ring_timeout_s: must be at least 1"));
    assert!(has(
        "agents[1] (x2).skills.market-supervision: level 12 is not 1–9"
    ));
    assert!(has("shifts[0].start: `8:00` is not HH:MM"));
    assert_eq!(problems.len(), 5, "{text:#?}");
}

#[test]
fn unknown_fields_and_cycles_are_refused() {
    let text =
        common::small("longest-idle").replace("max_waiting = 3", "max_waiting = 3\nmax_wait = 9");
    assert!(matches!(
        SeatConfig::from_toml_str(&text),
        Err(ConfigError::Parse(_))
    ));
    let text = common::small("longest-idle").replace(
        "id = \"p\"\ncenter = \"province\"\n",
        "id = \"p\"\ncenter = \"province\"\noverflow_to = \"x\"\n",
    );
    let Err(ConfigError::Invalid(problems)) = SeatConfig::from_toml_str(&text) else {
        panic!("a loop must be refused");
    };
    assert!(problems[0].message.contains("loops back"), "{problems:?}");
    let text = common::small("longest-idle")
        .replace("strategy = \"longest-idle\"", "strategy = \"random\"");
    assert!(matches!(
        SeatConfig::from_toml_str(&text),
        Err(ConfigError::Parse(_))
    ));
}
