//! The deployment files in deploy/ checked offline: the systemd unit, the Containerfile, the
//! Prometheus alert rules and the Grafana dashboard. Every metric name they use must be one the
//! daemon exports (crates/switchboard/src/metrics.rs), so renaming a metric fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The metric names the daemon exports, read from the source: every `pub const X: &str =
/// "switchboard_…"` in metrics.rs, plus `_bucket`, `_sum` and `_count` for histograms.
fn exported_metrics() -> BTreeSet<String> {
    let src = read("crates/switchboard/src/metrics.rs");
    let mut consts = BTreeMap::new();
    for line in src.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let Some((ident, rest)) = rest.split_once(':') else {
            continue;
        };
        let Some(value) = rest.split('"').nth(1) else {
            continue;
        };
        if value.starts_with("switchboard_") {
            consts.insert(ident.trim().to_owned(), value.to_owned());
        }
    }
    assert!(consts.len() >= 10, "found only {consts:?} in metrics.rs");
    let mut names: BTreeSet<String> = consts.values().cloned().collect();
    for (ident, value) in &consts {
        if src.contains(&format!("describe_histogram!({ident}")) {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{value}{suffix}"));
            }
        }
    }
    names
}

/// Metric names in a PromQL expression: identifiers outside quotes and label matchers that are
/// not functions, aggregation keywords or label names in `by (...)`. Checks `switchboard_*`
/// names against the exported set; the only other metric allowed is `up`.
fn check_expr(expr: &str, exported: &BTreeSet<String>, whence: &str) {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        // Aggregation operators, which may be followed by `by (...)` before their parentheses.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let b = expr.as_bytes();
    let (mut i, mut braces, mut parens_after_by) = (0, 0usize, None::<usize>);
    let mut depth = 0usize;
    let mut metrics = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // Skip the string literal.
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' => {
                braces += 1;
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            b'[' => {
                // A range or subquery duration: skip it.
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i += 1;
            }
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                if parens_after_by == Some(depth) {
                    parens_after_by = None;
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'$' => {
                // A Grafana variable ($__rate_interval, ${queue}).
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_{}".contains(&b[i])) {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = expr[i..].trim_start();
                if braces > 0 || parens_after_by.is_some() {
                    continue; // a label name
                }
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&word)
                {
                    if next.starts_with('(') {
                        parens_after_by = Some(depth + 1);
                    }
                    continue;
                }
                if next.starts_with('(') || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    continue; // a function or keyword
                }
                if start > 0 && b[start - 1].is_ascii_digit() {
                    continue; // a duration or number suffix such as 1e3
                }
                metrics.push(word.to_owned());
            }
            _ => i += 1,
        }
    }
    assert!(!metrics.is_empty(), "{whence}: no metric found in `{expr}`");
    for m in metrics {
        assert!(
            m == "up" || exported.contains(&m),
            "{whence}: `{m}` is not exported by the daemon (metrics.rs); expression `{expr}`"
        );
    }
}

#[test]
fn the_metric_name_checker_catches_unknown_names() {
    let exported = exported_metrics();
    assert!(exported.contains("switchboard_queue_wait_seconds_bucket"));
    check_expr(
        r#"sum by (queue, le) (rate(switchboard_queue_wait_seconds_bucket{queue=~"$queue", x="switchboard_nope"}[$__rate_interval])) > 0.8 and up == 0"#,
        &exported,
        "ok",
    );
    let renamed = std::panic::catch_unwind(|| {
        check_expr(
            "sum(rate(switchboard_calls_renamed_total[5m]))",
            &exported,
            "bad",
        )
    });
    assert!(renamed.is_err(), "an unknown metric passed the check");
}

/// `Key=Value` lines of an INI-like unit file (comments and sections skipped); keys may repeat.
fn unit_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('[')
        })
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_systemd_unit_reloads_drains_and_is_hardened() {
    let text = read("deploy/switchboard.service");
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(text.lines().any(|l| l.trim() == section), "no {section}");
    }
    let entries = unit_entries(&text);
    let get = |k: &str| {
        entries
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .next_back()
            .unwrap_or_else(|| panic!("switchboard.service has no {k}="))
    };
    assert!(get("ExecStartPre").contains("switchboard check -c /etc/switchboard/switchboard.toml"));
    assert!(get("ExecStart").contains("switchboard run -c /etc/switchboard/switchboard.toml"));
    let reload = get("ExecReload");
    assert!(
        reload.contains("-HUP") && reload.contains("$MAINPID"),
        "{reload}"
    );
    assert_eq!(get("KillSignal"), "SIGTERM");
    // The daemon drains for at most 40 s (DRAIN_LIMIT); systemd must wait longer.
    let stop: u64 = get("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop >= 41,
        "TimeoutStopSec={stop} cuts the 40 s drain short"
    );
    let daemon = read("crates/switchboard/src/daemon.rs");
    assert!(
        daemon.contains("DRAIN_LIMIT: Duration = Duration::from_secs(40)"),
        "the drain limit changed: update TimeoutStopSec and this test"
    );
    assert_eq!(get("Restart"), "on-failure");
    get("RestartSec");
    assert_eq!(get("User"), "switchboard");
    assert_eq!(get("StateDirectory"), "switchboard");
    get("LimitNOFILE");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        // Ports 5060 and 8060 are above 1024: no capabilities at all.
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
    ] {
        assert_eq!(get(key), value, "{key}");
    }
}

#[test]
fn the_containerfile_builds_release_and_runs_unprivileged() {
    let text = read("deploy/Containerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
    assert!(text.contains("cargo build --release"));
    assert!(has("EXPOSE 5060/udp 5060/tcp 8060/tcp"));
    assert!(has("STOPSIGNAL SIGTERM"));
    assert!(has("HEALTHCHECK") && text.contains("http://127.0.0.1:8060/metrics"));
    let user = lines
        .iter()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(!["root", "0"].contains(&user.trim()), "runs as {user}");
}

/// The `expr:` values of a Prometheus rule file, single-line or block scalars (`expr: |`);
/// commented-out rules are skipped.
fn rule_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        i += 1;
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - trimmed.len();
            let mut block = String::new();
            while i < lines.len() {
                let l = lines[i];
                let ind = l.len() - l.trim_start().len();
                if !l.trim().is_empty() && ind <= indent {
                    break;
                }
                block.push_str(l.trim());
                block.push(' ');
                i += 1;
            }
            out.push(block.trim().to_owned());
        } else {
            out.push(value.to_owned());
        }
    }
    out
}

#[test]
fn the_alert_rules_use_only_exported_metrics() {
    let text = read("deploy/prometheus/alerts.yml");
    let exported = exported_metrics();
    assert!(!text.contains('\t'), "tabs are not YAML indentation");
    assert!(text.lines().any(|l| l == "groups:"), "no top-level groups:");
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .collect();
    let exprs = rule_exprs(&text);
    assert_eq!(alerts.len(), exprs.len(), "every alert needs one expr");
    assert!(alerts.len() >= 7, "alerts: {alerts:?}");
    for (alert, expr) in alerts.iter().zip(&exprs) {
        check_expr(expr, &exported, &format!("alerts.yml {}", alert.trim()));
    }
    for needed in [
        "switchboard_agents",
        "switchboard_emergency_failovers_total",
        "switchboard_emergency_calls_total",
        "switchboard_queue_answered_within_15s_total",
        "switchboard_no_agent_alarms_total",
        "switchboard_config_reloads_total",
        "up{",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needed)),
            "no alert on {needed}"
        );
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_parses_and_uses_only_exported_metrics() {
    let text = read("deploy/grafana/switchboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        if p["type"] != "row" {
            assert!(
                p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel {} has no query",
                p["title"]
            );
        }
    }
    let exported = exported_metrics();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    for e in &exprs {
        // label_values(metric{…}, label): the metric is the first argument.
        let e = e
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map_or(e.as_str(), |(m, _)| m);
        check_expr(e, &exported, "grafana/switchboard.json");
    }
    let used: BTreeSet<&str> = exported
        .iter()
        .filter(|m| exprs.iter().any(|e| e.contains(m.as_str())))
        .map(String::as_str)
        .collect();
    for m in [
        "switchboard_calls_total",
        "switchboard_queue_waiting",
        "switchboard_queue_longest_wait_seconds",
        "switchboard_queue_answered_within_15s_total",
        "switchboard_queue_abandoned_total",
        "switchboard_agents",
        "switchboard_emergency_calls_total",
        "switchboard_emergency_failovers_total",
        "switchboard_sip_responses_total",
        "switchboard_transactions",
        "switchboard_registrations",
    ] {
        assert!(used.contains(m), "the dashboard has no panel on {m}");
    }
}

#[test]
fn the_logging_guide_covers_journald_json_and_the_queue_log() {
    let text = read("deploy/LOGGING.md");
    for needed in [
        "journalctl -u switchboard",
        "format = \"json\"",
        "queue_log",
        "RUST_LOG",
        "logrotate",
        "redact",
    ] {
        assert!(
            text.contains(needed),
            "LOGGING.md does not mention {needed}"
        );
    }
}
