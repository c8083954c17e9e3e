//! The wallboard end to end: the daemon's page in headless Chromium (Debian's `chromium`, driven
//! over the DevTools protocol by tests/wallboard/watch.mjs under Node), before and after SIPp calls
//! arrive. The page is loaded once; its numbers must change by themselves (server-sent events),
//! in the DOM and on the screenshots. Roles on 127.0.5.x.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::admin::*;
use common::*;

const TRUNK: &str = "127.0.5.3";
const PHONE: &str = "127.0.5.13";
/// Xining's police PSAP, moved here for this test.
const PSAP: &str = "127.0.5.110";
const LIMIT: Duration = Duration::from_secs(40);

/// Node running watch.mjs, which runs Chromium. Closing its stdin ends both.
struct Watcher {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watcher {
    fn start(url: &str, out: &Path) -> Watcher {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("Chromium is not installed: apt-get install -y chromium nodejs (scripts/test.sh does this)");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wallboard/watch.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .args([chromium, url])
            .arg(out)
            .args(["120", "haidong"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is not installed: apt-get install -y nodejs (scripts/test.sh does this)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Wait for a state that satisfies `want`; returns it, the screenshot taken with it, and the
    /// screenshot of Haidong's card alone.
    fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> (serde_json::Value, PathBuf, PathBuf) {
        let end = Instant::now() + limit;
        let mut found: Option<serde_json::Value> = None;
        while Instant::now() < end {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            self.seen.push(line.clone());
            assert!(!line.starts_with("ERROR"), "watcher: {line}");
            if let Some(s) = line.strip_prefix("STATE ") {
                let v: serde_json::Value = serde_json::from_str(s).unwrap();
                if found.is_none() && want(&v) {
                    found = Some(v);
                }
            } else if let (Some(f), Some(shot)) = (&found, line.strip_prefix("SHOT ")) {
                let (full, card) = shot.split_once(' ').expect("SHOT full card");
                return (f.clone(), PathBuf::from(full), PathBuf::from(card));
            }
        }
        panic!(
            "the wallboard never showed {what}; it showed:\n{}",
            self.seen.join("\n")
        );
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing stdin makes the script close Chromium and exit.
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haidong<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v["centers"]["haidong"][k].as_str().unwrap_or("")
}

#[test]
fn the_wallboard_updates_itself_when_calls_arrive() {
    let psap_port = free_port(PSAP);
    let mut settings = admin_settings(TRUNK);
    settings.config_edits.push((
        "\"sip:127.0.1.1:5110\"".into(),
        format!("\"sip:{PSAP}:{psap_port}\""),
    ));
    let d = Daemon::start_with(settings);
    let shots = tempfile::tempdir().unwrap();
    // The wall screen's bookmark carries the read-only wallboard token.
    let url = format!("{}/wallboard?token={WALL_TOKEN}", admin_url(&d));
    let mut w = Watcher::start(&url, shots.path());

    let (before, before_shot, before_card) = w.wait_for("the first figures", LIMIT, |v| {
        v["status"] == "live" && !haidong(v, "waiting").is_empty()
    });
    assert_eq!(haidong(&before, "waiting"), "0", "{before}");
    assert_eq!(haidong(&before, "sl"), "–", "{before}");
    assert_eq!(haidong(&before, "agents_available"), "0", "{before}");
    assert_eq!(haidong(&before, "agents_logged_out"), "1", "{before}");
    assert_eq!(haidong(&before, "abandoned"), "0", "{before}");

    // The agent's phone registers: Haidong logs it in.
    let port = free_port(PHONE);
    register(&d, "8002", PHONE, port, "u1");
    let (avail, _, _) = w.wait_for("8002 available", LIMIT, |v| {
        haidong(v, "agents_available") == "1"
    });
    assert_eq!(haidong(&avail, "agents_logged_out"), "0", "{avail}");

    // A 4 s call, and a second caller who waits for the agent meanwhile.
    let phone = uas("phone 8002", "uas.xml", "8002", PHONE, port, 2);
    let first = uac(
        &d,
        "long call",
        "uac.xml",
        "097212331",
        TRUNK,
        &["-d", "4000"],
    );
    std::thread::sleep(Duration::from_millis(1000));
    let second = uac(&d, "queued call", "uac.xml", "097212331", TRUNK, &[]);
    let (queued, queued_shot, queued_card) = w.wait_for("a caller waiting", LIMIT, |v| {
        haidong(v, "waiting") == "1" && haidong(v, "agents_on_call") == "1"
    });
    let (ok1, d1) = first.finish(LIMIT);
    let (ok2, d2) = second.finish(LIMIT);
    let (okp, dp) = phone.finish(LIMIT);
    assert!(
        ok1 && ok2 && okp,
        "{d1}\n{d2}\n{dp}\n--- daemon\n{}",
        d.log()
    );
    // Both answered within 15 s: today's service level is 100 %, and nobody waits.
    let (after, after_shot, after_card) = w.wait_for("both calls answered", LIMIT, |v| {
        haidong(v, "sl") == "100%" && haidong(v, "waiting") == "0"
    });
    assert_eq!(haidong(&after, "abandoned"), "0", "{after}");
    assert_eq!(after["emergency"], "0", "{after}");

    // An emergency call from the trunk (Xining) to 110 reaches the police: today's hand-offs.
    let police = uas("police", "uas.xml", "110", PSAP, psap_port, 1);
    let (ok, diag) = uac(&d, "110 call", "uac.xml", "110", TRUNK, &[]).finish(LIMIT);
    let (pok, pdiag) = police.finish(LIMIT);
    assert!(ok && pok, "{diag}\n{pdiag}\n--- daemon\n{}", d.log());
    let (emergency, _, _) = w.wait_for("an emergency hand-off", LIMIT, |v| v["emergency"] == "1");

    // One page load all along: the numbers came over the event stream, not by reloading.
    for v in [&avail, &queued, &after, &emergency] {
        assert_eq!(v["load"], before["load"], "the page was reloaded: {v}");
        assert_eq!(v["navigations"], 1, "{v}");
    }
    // And the screen shows it: Haidong's card (cropped, so the page's clock does not count)
    // looks different after each change.
    let png = |p: &Path| std::fs::read(p).unwrap();
    let (b, q, a) = (png(&before_card), png(&queued_card), png(&after_card));
    for s in [&b, &q, &a] {
        assert!(
            s.starts_with(b"\x89PNG") && s.len() > 2_000,
            "not a screenshot"
        );
    }
    assert_ne!(b, q, "Haidong's card did not change when a caller queued");
    assert_ne!(
        q, a,
        "Haidong's card did not change when the calls were answered"
    );
    // Keep them for a person to look at, next to the test's other output.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wallboard");
    let _ = std::fs::create_dir_all(&keep);
    for (name, p) in [
        ("before.png", &before_shot),
        ("queued.png", &queued_shot),
        ("after.png", &after_shot),
        ("haidong-before.png", &before_card),
        ("haidong-queued.png", &queued_card),
        ("haidong-after.png", &after_card),
    ] {
        let _ = std::fs::copy(p, keep.join(name));
    }
}
