//! Broken plans are refused with every problem at its `file:line:col`, in one run.

use std::path::PathBuf;

use dialplan::ProblemKind;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn broken_file_reports_every_problem_with_its_position() {
    let path = fixture("broken.toml");
    let errors = dialplan::load_file(&path).expect_err("the fixture is broken");
    let f = path.display().to_string();
    let expected = [
        "14:23: area code `097` is a prefix of area code `0971`, so dialed numbers would be ambiguous",
        "18:6: prefecture id `Haidong` must be lowercase ASCII letters, digits and '-', starting with a letter",
        "20:15: area code `0971` is already claimed by prefecture `xining`",
        "20:23: area code `972` must be 3 or 4 digits starting with 0",
        "21:9: queue `12345-xining` is already used",
        "23:1: a dual line needs `department_queue`",
        "28:16: `announcement` does not apply to a dual line",
        "31:10: number `12315` is already used on line 24",
        "35:10: no center has id `lhasa`",
        "38:10: number `110` is the emergency number for police",
        "44:10: number `12345` is the hotline number",
        "46:8: mode `teleport` is not one of merge, dual, subcenter",
        "54:9: a subcenter trunk needs at least one SIP target",
        "55:17: `ftp://x` is not a work-order URL: the scheme must be http:// (the outbox has no TLS client)",
        "57:1: a subcenter line needs `workorder_url`",
        "62:32: `127.0.2.3` is not a SIP target: the scheme must be sip: or sips:",
        "62:45: `sip:x@127.0.2.4` is not a SIP target: a target has no user part (the dialed number is kept as the user)",
        "62:64: `sip:127.0.2.2:5060` is listed twice in this trunk",
        "64:1: this line needs `number`",
        "64:1: this line needs `skill`",
        "64:1: this line needs `mode`",
    ]
    .map(|e| format!("{f}:{e}"));
    assert_eq!(errors.to_string(), expected.join("\n"));
}

#[test]
fn columns_count_characters_after_chinese_text() {
    let text = "[platform]\nhotline = \"12345\"\nprovince = \"青海省\"; x = 1\n";
    let e = dialplan::load_str("zh.toml", text).expect_err("junk after a value");
    let first = e.problems[0].to_string();
    // `;` is the 17th character of line 3 (but the 23rd byte).
    assert!(first.starts_with("zh.toml:3:17: "), "{first}");
}

#[test]
fn load_dir_wants_exactly_one_plan() {
    let dir = tempfile::tempdir().expect("temp dir");
    let e = dialplan::load_dir(dir.path()).expect_err("empty folder");
    assert!(matches!(e.problems[0].kind, ProblemKind::NoPlan));

    std::fs::copy(fixture("broken.toml"), dir.path().join("a.toml")).expect("copy");
    std::fs::write(dir.path().join("README.md"), "not a plan").expect("write");
    let e = dialplan::load_dir(dir.path()).expect_err("broken plan");
    assert!(e.problems.len() > 10);
    assert!(e.problems.iter().all(|p| p.file.ends_with("a.toml")));

    std::fs::write(dir.path().join("b.toml"), "").expect("write");
    let e = dialplan::load_dir(dir.path()).expect_err("two plans");
    assert_eq!(e.problems.len(), 1);
    assert!(
        matches!(&e.problems[0].kind, ProblemKind::SeveralPlans { other } if other == "b.toml")
    );

    let e = dialplan::load_dir(dir.path().join("missing")).expect_err("no folder");
    assert!(matches!(e.problems[0].kind, ProblemKind::Read { .. }));
    assert!(e.to_string().contains(":1:1: cannot read: "), "{e}");
}
