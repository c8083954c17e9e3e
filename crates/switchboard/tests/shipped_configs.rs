//! Every config we ship loads, with the dialplans it names (hickory-dns's habit: test the examples).

use std::path::Path;

#[test]
fn every_shipped_config_and_its_dialplans_load() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut n = 0;
    for e in std::fs::read_dir(&deploy).unwrap() {
        let p = e.unwrap().path();
        // Daemon configs (they have a [sip] table); seats files are loaded through them.
        let is_config =
            std::fs::read_to_string(&p).is_ok_and(|t| t.lines().any(|l| l.trim() == "[sip]"));
        if p.extension().is_some_and(|x| x == "toml") && is_config {
            let setup =
                switchboard::setup::load(&p).unwrap_or_else(|e| panic!("{}:\n{e}", p.display()));
            assert!(
                !setup.plan.lines().is_empty(),
                "{} loads an empty plan",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 1, "no config found in {}", deploy.display());
}

#[test]
fn the_default_roster_answers_every_queue_of_the_plan() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/switchboard.toml");
    let setup = switchboard::setup::load(&p).unwrap();
    let answered: std::collections::HashSet<String> = setup
        .loaded
        .config
        .agents
        .iter()
        .flat_map(|a| a.queues.iter().map(|q| q.get_ref().clone()))
        .collect();
    for c in setup.plan.centers() {
        assert!(
            answered.contains(c.queue.as_str()),
            "no demo agent answers {}",
            c.queue
        );
    }
}

#[test]
fn a_bad_agent_queue_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/switchboard.toml");
    let text = std::fs::read_to_string(&shipped).unwrap().replace(
        "dialplans_dir = \"../dialplans\"",
        &format!(
            "dialplans_dir = {:?}",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dialplans")
        ),
    );
    let text = text.replacen(
        "queues = [\"12345-xining\"]",
        "queues = [\"12345-atlantis\"]",
        1,
    );
    let line = text
        .lines()
        .position(|l| l.contains("12345-atlantis"))
        .unwrap()
        + 1;
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, text).unwrap();
    let err = switchboard::setup::load(&cfg).unwrap_err().to_string();
    assert!(
        err.contains(&format!("bad.toml:{line}:")) && err.contains("12345-atlantis"),
        "{err}"
    );
}

/// The work-order endpoint lives on the dialplan's sub-center line: a config that still names one
/// on a trunk (`outbox_url`, read until the move) is refused at that line, and a line's URL the
/// outbox's HTTP client cannot use is refused at the line of the plan.
#[test]
fn work_order_endpoints_are_the_dialplans_and_a_trunk_outbox_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let plans = dir.path().join("dialplans");
    std::fs::create_dir(&plans).unwrap();
    let plan = std::fs::read_to_string(root.join("dialplans/qinghai.toml")).unwrap();
    std::fs::write(plans.join("qinghai.toml"), &plan).unwrap();
    let shipped = std::fs::read_to_string(root.join("deploy/switchboard.toml"))
        .unwrap()
        .replace(
            "dialplans_dir = \"../dialplans\"",
            "dialplans_dir = \"dialplans\"",
        )
        .replace(
            "prompts_dir = \"prompts\"",
            &format!("prompts_dir = {:?}", root.join("deploy/prompts")),
        )
        .replace("seats_file = \"seats.toml\"\n", "");
    let cfg = dir.path().join("switchboard.toml");
    std::fs::write(&cfg, &shipped).unwrap();
    let setup = switchboard::setup::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let urls: Vec<&str> = setup
        .plan
        .lines()
        .iter()
        .filter_map(|l| match &l.route {
            dialplan::LineRoute::Subcenter { workorder_url, .. } => Some(&**workorder_url),
            _ => None,
        })
        .collect();
    assert_eq!(urls.len(), 5);
    assert!(
        urls.iter().all(|u| u.starts_with("http://127.0.2.")),
        "{urls:?}"
    );

    let old = shipped.replacen(
        "sources = [\"127.0.2.1\"]",
        "sources = [\"127.0.2.1\"]\noutbox_url = \"http://127.0.2.1:8080/workorders\"",
        1,
    );
    let line = old
        .lines()
        .position(|l| l.starts_with("outbox_url"))
        .unwrap()
        + 1;
    std::fs::write(&cfg, &old).unwrap();
    let err = switchboard::setup::load(&cfg).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "switchboard.toml:{line}:14: `outbox_url` is no longer read; use `workorder_url`"
        )),
        "{err}"
    );

    std::fs::write(&cfg, &shipped).unwrap();
    let bad = plan.replacen(
        "http://127.0.2.1:8080/workorders",
        "http://127.0.2.1:8080/a<b",
        1,
    );
    let table = bad
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[lines]]")
        .map(|(i, _)| i + 1)
        .filter(|i| *i < bad.lines().position(|l| l.contains("a<b")).unwrap() + 1)
        .last()
        .unwrap();
    std::fs::write(plans.join("qinghai.toml"), bad).unwrap();
    let err = switchboard::setup::load(&cfg).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "qinghai.toml:{table}:1: line 12366: workorder_url: `http://127.0.2.1:8080/a<b`"
        )),
        "{err}"
    );
}

#[test]
fn roster_check_passes_the_demo_and_prints_the_gaps_of_a_broken_roster() {
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/switchboard.toml");
    let ok = std::process::Command::new(bin)
        .args(["roster", "check", "-c"])
        .arg(&shipped)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // Xining staffed only 08:00-20:00 and covered by nobody: every night is a gap.
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cfg = std::fs::read_to_string(&shipped)
        .unwrap()
        .replace(
            "dialplans_dir = \"../dialplans\"",
            &format!("dialplans_dir = {:?}", root.join("dialplans")),
        )
        .replace(
            "prompts_dir = \"prompts\"",
            &format!("prompts_dir = {:?}", root.join("deploy/prompts")),
        );
    std::fs::write(dir.path().join("switchboard.toml"), cfg).unwrap();
    let seats = std::fs::read_to_string(root.join("deploy/seats.toml")).unwrap();
    let xining = seats.find("id = \"xining\"").unwrap();
    let (head, tail) = seats.split_at(xining);
    let tail = tail
        .replacen("covered_by = \"province\"\n", "", 1)
        .replacen(
            "start = \"00:00\", end = \"24:00\"",
            "start = \"08:00\", end = \"20:00\"",
            1,
        );
    std::fs::write(dir.path().join("seats.toml"), format!("{head}{tail}")).unwrap();
    let out = std::process::Command::new(bin)
        .args(["roster", "check", "-c"])
        .arg(dir.path().join("switchboard.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("xining") && text.contains("gap"), "{text}");
}
