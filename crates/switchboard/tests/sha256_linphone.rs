//! SHA-256 digest (RFC 8760) proven with a real SIP client: linphonec (Debian `linphone-cli`,
//! belle-sip), which answers a SHA-256 challenge (DESIGN.md §6; SIPp cannot).
//!
//! The registrar offers SHA-256 only; linphonec registers agent 8007 with the demo password, and does
//! not with a wrong one.
//!
//! The offer is the registrar's list, not a per-agent `algorithms` line: the first REGISTER carries no
//! credentials, so its 401 uses the registrar's list whatever the agent's own list says, and linphonec
//! (configured for SHA-256) gives up on an MD5 challenge. See `per_agent_sha256_only` below. linphonec runs with its own HOME and config in a temp folder, binds 127.0.0.1 only, and
//! is killed by its PID when its guard drops.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Daemon, Settings, REALM};

/// A running linphonec.
struct Linphonec {
    child: Child,
    log: PathBuf,
}

impl Drop for Linphonec {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Linphonec {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Start linphonec registering `user` with `password` at the daemon.
fn linphonec(dir: &Path, d: &Daemon, user: &str, password: &str) -> Linphonec {
    let home = dir.join("home");
    // linphonec keeps a database here; without the folder it logs an error (harmless).
    std::fs::create_dir_all(home.join(".local/share/linphone")).unwrap();
    let sip_port = free_port("127.0.0.1");
    let rtp_port = free_port("127.0.0.1");
    let rc = dir.join("linphonerc");
    std::fs::write(
        &rc,
        format!(
            "[sip]\nsip_port={sip_port}\nsip_tcp_port=-1\nsip_tls_port=-1\nbind_address=127.0.0.1\n\
default_proxy=0\nregister_only_when_network_is_up=0\nauto_net_state_mon=0\nping_with_options=0\n\n\
[rtp]\naudio_rtp_port={rtp_port}\n\n[video]\ncapture=0\ndisplay=0\nenabled=0\n\n\
[proxy_0]\nreg_proxy=<sip:{target};transport=udp>\nreg_identity=sip:{user}@127.0.0.1\n\
reg_expires=60\nreg_sendregister=1\npublish=0\n\n\
[auth_info_0]\nusername={user}\nuserid={user}\npasswd={password}\nrealm={REALM}\nalgorithm=SHA-256\n",
            target = d.target(),
        ),
    )
    .unwrap();
    let log = dir.join("linphonec.log");
    let child = Command::new("linphonec")
        .arg("-c")
        .arg(&rc)
        .args(["-d", "6", "-l"])
        .arg(&log)
        .env("HOME", &home)
        // linphonec quits on end of input: keep stdin open (a pipe nobody writes to).
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("start linphonec ({e}): apt-get install -y linphone-cli (scripts/test.sh does this)")
        });
    Linphonec { child, log }
}

/// Wait up to `limit` for `pred` on the daemon log.
fn wait_log(d: &Daemon, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if pred(&d.log()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred(&d.log())
}

/// The registrar offers SHA-256 only.
fn sha256_only() -> Settings {
    Settings {
        config_edits: vec![(
            "\nalgorithms = [\"MD5\"]\n".into(),
            "\nalgorithms = [\"SHA-256\"]\n".into(),
        )],
        ..Settings::default()
    }
}

/// Agent 8007 alone is offered SHA-256 only.
fn per_agent_sha256_only() -> Settings {
    Settings {
        config_edits: vec![(
            "user = \"8007\"\n".into(),
            "user = \"8007\"\nalgorithms = [\"SHA-256\"]\n".into(),
        )],
        ..Settings::default()
    }
}

#[test]
fn linphonec_registers_with_sha256_digest() {
    registers_with_sha256(sha256_only());
}

/// Only one account offers SHA-256 (the registrar's default stays MD5, for SIPp and old phones): the
/// first 401 must already carry that account's list, found from the AOR being registered.
#[test]
fn linphonec_registers_with_sha256_digest_per_agent() {
    registers_with_sha256(per_agent_sha256_only());
}

fn registers_with_sha256(settings: Settings) {
    let d = Daemon::start_with(settings);
    let dir = tempfile::tempdir().unwrap();
    let lp = linphonec(dir.path(), &d, "8007", "demo-8007");
    let ok = wait_log(&d, Duration::from_secs(10), |l| {
        l.contains("agent registered user=8007")
    });
    let lp_log = lp.log();
    drop(lp);
    assert!(
        ok,
        "linphonec did not register with SHA-256\ndaemon log:\n{}\nlinphonec log (tail):\n{}",
        d.log(),
        tail(&lp_log, 80)
    );
    // The answer really was SHA-256: the only challenge offered, and the algorithm linphonec used.
    assert!(
        lp_log.contains("algorithm=SHA-256") && !lp_log.contains("algorithm=MD5"),
        "{}",
        tail(&lp_log, 80)
    );
}

#[test]
fn linphonec_with_wrong_password_does_not_register() {
    let d = Daemon::start_with(sha256_only());
    let dir = tempfile::tempdir().unwrap();
    let lp = linphonec(dir.path(), &d, "8007", "not-the-password");
    // Wait until linphonec has answered the challenge (a second REGISTER reached the daemon and was
    // refused), then make sure nothing registered.
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && !answered_challenge(&lp.log()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let lp_log = lp.log();
    drop(lp);
    assert!(
        answered_challenge(&lp_log),
        "linphonec never answered the challenge:\n{}",
        tail(&lp_log, 80)
    );
    assert!(!d.log().contains("agent registered"), "{}", d.log());
}

/// Whether linphonec sent a REGISTER with SHA-256 credentials.
fn answered_challenge(lp_log: &str) -> bool {
    // belle-sip writes two spaces after the colon.
    lp_log.contains("Authorization:  Digest") && lp_log.contains("algorithm=SHA-256")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
