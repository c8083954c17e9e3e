//! Every plan shipped in `dialplans/` compiles, and the Qinghai plan says what DESIGN.md says.

use std::path::PathBuf;

use dialplan::{LineRoute, Mode, Overflow};

fn dialplans_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dialplans")
}

#[test]
fn every_shipped_plan_compiles() {
    let mut seen = 0;
    for entry in std::fs::read_dir(dialplans_dir()).expect("dialplans/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = dialplan::load_file(&path) {
                panic!("{e}");
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no plan found in dialplans/");
    dialplan::load_dir(dialplans_dir()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn qinghai_plan_matches_the_design() {
    let plan =
        dialplan::load_file(dialplans_dir().join("qinghai.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.hotline(), "12345");
    assert_eq!(plan.province(), "青海省");

    let centers: Vec<_> = plan
        .centers()
        .iter()
        .map(|c| {
            (
                &*c.id,
                c.area_codes
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    assert_eq!(
        centers,
        [
            ("province", ""),
            ("xining", "0971"),
            ("haidong", "0972"),
            ("haibei", "0970"),
            ("huangnan", "0973"),
            ("hainan", "0974"),
            ("golog", "0975"),
            ("yushu", "0976"),
            ("haixi", "0977,0979"),
        ]
        .map(|(a, b)| (a, b.to_owned()))
    );

    let count = |m: Mode| plan.lines().iter().filter(|l| l.mode() == m).count();
    assert_eq!(plan.lines().len(), 29);
    assert_eq!(
        (
            count(Mode::Merge),
            count(Mode::Dual),
            count(Mode::Subcenter)
        ),
        (15, 9, 5)
    );

    let mut trunk_hosts = Vec::new();
    for line in plan.lines() {
        match &line.route {
            LineRoute::Dual {
                department_queue,
                overflow,
            } => {
                assert_eq!(department_queue.as_str(), format!("dept-{}", line.number));
                assert!(matches!(
                    overflow,
                    Overflow::WhenNoSeat | Overflow::AfterSeconds(1..=300)
                ));
            }
            LineRoute::Subcenter { trunk, .. } => {
                assert!(trunk.iter().all(|t| t.port == Some(5060)));
                trunk_hosts.extend(trunk.iter().map(|t| t.host.to_string()));
            }
            LineRoute::Merge { .. } => {}
        }
    }
    assert_eq!(
        trunk_hosts,
        [
            "127.0.2.1",
            "127.0.2.2",
            "127.0.2.3",
            "127.0.2.4",
            "127.0.2.5"
        ]
    );

    for n in ["12315", "12333", "12328", "12320"] {
        assert_eq!(
            plan.line_by_number(n).map(|l| l.mode()),
            Some(Mode::Dual),
            "{n}"
        );
    }
    for n in ["12366", "12360", "12367"] {
        assert_eq!(
            plan.line_by_number(n).map(|l| l.mode()),
            Some(Mode::Subcenter),
            "{n}"
        );
    }
    for n in ["12331", "12336", "12358", "12365"] {
        assert_eq!(
            plan.line_by_number(n).map(|l| l.mode()),
            Some(Mode::Merge),
            "{n}"
        );
    }
}
