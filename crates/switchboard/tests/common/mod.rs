//! Test harness: start the real daemon on loopback and drive it with SIPp.
//!
//! Every process started here is stopped by its own PID when its guard drops. Ports are picked free;
//! roles use distinct loopback addresses (trunk 127.0.0.2, agents 127.0.0.1x).
#![allow(dead_code)]

pub mod admin;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Folder of the SIPp scenarios.
pub fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sipp")
}

pub fn scenario(name: &str) -> String {
    scenarios().join(name).to_string_lossy().into_owned()
}

/// A port free on `ip` for both UDP and TCP right now.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let u = UdpSocket::bind((ip, 0)).expect("bind UDP on loopback");
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// The daemon under test.
pub struct Daemon {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

pub const REALM: &str = "12345.qh";

/// Knobs tests turn; everything else is the shipped default.
#[derive(Clone)]
pub struct Settings {
    pub t1_ms: u64,
    pub tcp_partial_timeout_s: u64,
    pub max_message_bytes: usize,
    pub ring_timeout_s: u64,
    pub trunk_failover_ms: u64,
    /// Text replacements applied to the shipped dialplans copied into the test folder.
    pub plan_edits: Vec<(String, String)>,
    /// Also listen on [::1] (UDP and TCP), same port.
    pub ipv6: bool,
    /// Text replacements applied to the config after the others.
    pub config_edits: Vec<(String, String)>,
    /// Text replacements applied to the shipped seats file (deploy/seats.toml).
    pub seat_edits: Vec<(String, String)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            t1_ms: 500,
            tcp_partial_timeout_s: 10,
            max_message_bytes: 65535,
            ring_timeout_s: 20,
            trunk_failover_ms: 2000,
            plan_edits: Vec::new(),
            ipv6: false,
            config_edits: Vec::new(),
            seat_edits: Vec::new(),
        }
    }
}

/// The shipped dialplans folder.
pub fn shipped_dialplans() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dialplans")
}

/// Copy the shipped dialplans into `dir/dialplans`, applying `edits`.
pub fn copy_dialplans(dir: &Path, edits: &[(String, String)]) {
    let to = dir.join("dialplans");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(shipped_dialplans()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let mut text = std::fs::read_to_string(&p).unwrap();
            for (a, b) in edits {
                text = text.replace(a.as_str(), b.as_str());
            }
            std::fs::write(to.join(p.file_name().unwrap()), text).unwrap();
        }
    }
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(Settings::default())
    }

    pub fn start_with(s: Settings) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port("127.0.0.1");
        let config = dir.path().join("switchboard.toml");
        std::fs::write(&config, config_text(port, &s)).unwrap();
        copy_dialplans(dir.path(), &s.plan_edits);
        let mut seats = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/seats.toml"),
        )
        .expect("deploy/seats.toml");
        for (a, b) in &s.seat_edits {
            seats = seats.replace(a.as_str(), b.as_str());
        }
        std::fs::write(dir.path().join("seats.toml"), seats).unwrap();
        Self::start_in(dir, config, port)
    }

    /// Start on `port` without waiting for it to answer (an HA standby binds nothing until it
    /// holds the lock); `ready` tells when it does.
    pub fn spawn_on(port: u16, s: Settings) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("switchboard.toml");
        std::fs::write(&config, config_text(port, &s)).unwrap();
        copy_dialplans(dir.path(), &s.plan_edits);
        let mut seats = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/seats.toml"),
        )
        .expect("deploy/seats.toml");
        for (a, b) in &s.seat_edits {
            seats = seats.replace(a.as_str(), b.as_str());
        }
        std::fs::write(dir.path().join("seats.toml"), seats).unwrap();
        let child = spawn(&dir, &config);
        Daemon {
            child,
            port,
            dir,
            config,
        }
    }

    /// Whether something answers OPTIONS on the daemon's SIP address within `limit` (probed every
    /// 20 ms, so a takeover is timed to about that).
    pub fn answers_within(&self, limit: Duration) -> bool {
        self.options_answered(limit, Duration::from_millis(20), "probe")
    }

    /// Sends OPTIONS every `every` until a 200 comes back or `limit` passes.
    fn options_answered(&self, limit: Duration, every: Duration, tag: &str) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(every)).unwrap();
        let end = Instant::now() + limit;
        let mut n = 0;
        while Instant::now() < end {
            n += 1;
            let msg = options(
                &self.target(),
                sock.local_addr().unwrap(),
                &format!("{tag}{n}"),
            );
            let _ = sock.send_to(msg.as_bytes(), self.addr());
            let mut buf = [0u8; 4096];
            if let Ok((len, _)) = sock.recv_from(&mut buf) {
                if buf[..len].starts_with(b"SIP/2.0 200") {
                    return true;
                }
            }
        }
        false
    }

    /// Start again on the same folder and config (restart tests). Waits up to 10 s for the old
    /// process to exit by itself (after a signal the test sent), then kills it.
    pub fn restart(&mut self) {
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            terminate(&mut self.child);
        }
        self.child = spawn(&self.dir, &self.config);
        self.wait_ready();
    }

    fn start_in(dir: tempfile::TempDir, config: PathBuf, port: u16) -> Daemon {
        let child = spawn(&dir, &config);
        let d = Daemon {
            child,
            port,
            dir,
            config,
        };
        d.wait_ready();
        d
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().map(|s| s.is_none()).unwrap_or(false)
    }

    /// Send a signal to the daemon.
    pub fn signal(&self, sig: &str) {
        kill_pid(self.child.id(), sig);
    }

    /// Wait for the daemon to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn wait_ready(&self) {
        if !self.options_answered(Duration::from_secs(10), Duration::from_millis(100), "ready") {
            panic!("daemon did not answer OPTIONS; log:\n{}", self.log());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn spawn(dir: &tempfile::TempDir, config: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("daemon.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["run", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start switchboard")
}

fn terminate(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        kill_pid(child.id(), "KILL");
        let _ = child.wait();
    }
}

/// Signal a process we started, by its PID (kill(1): no unsafe code in tests).
fn kill_pid(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// An OPTIONS request to the switchboard itself.
pub fn options(target: &str, from: SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n\
To: <sip:{target}>\r\nFrom: <sip:probe@{from}>;tag=p{branch}\r\nCall-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The metrics port of a daemon whose SIP port is `sip_port`: picked free when the daemon starts and
/// remembered, so a test can scrape it.
pub fn metrics_port(sip_port: u16) -> u16 {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static PORTS: Mutex<Option<HashMap<u16, u16>>> = Mutex::new(None);
    let mut g = PORTS.lock().unwrap();
    *g.get_or_insert_with(HashMap::new)
        .entry(sip_port)
        .or_insert_with(|| free_port("127.0.0.1"))
}

/// Fetch `/metrics` of the daemon.
pub fn scrape(d: &Daemon) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port(d.port)))
        .expect("metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of one sample line (`name{labels} value`) in a scrape, if present.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// The test config: the shipped default's shape on a free port, with a temp state file.
pub fn config_text(port: u16, s: &Settings) -> String {
    let mut text = config_text_v4(port, s);
    for (a, b) in &s.config_edits {
        text = text.replace(a.as_str(), b.as_str());
    }
    if !s.ipv6 {
        return text;
    }
    text.replacen(
        "listen = [\n",
        &format!("listen = [\n  {{ transport = \"udp\", addr = \"[::1]:{port}\" }},\n  {{ transport = \"tcp\", addr = \"[::1]:{port}\" }},\n"),
        1,
    )
}

fn config_text_v4(port: u16, s: &Settings) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/switchboard.toml"),
    )
    .expect("deploy/switchboard.toml");
    // The shipped [media] section (its RTP range and prompts path) is the deployment's; tests that
    // want early media add their own (tests/media.rs).
    let shipped = without_section(&shipped, "[media]");
    shipped
        .replace("127.0.0.1:5060", &format!("127.0.0.1:{port}"))
        .replace("t1_ms = 500", &format!("t1_ms = {}", s.t1_ms))
        .replace(
            "tcp_partial_timeout_s = 10",
            &format!("tcp_partial_timeout_s = {}", s.tcp_partial_timeout_s),
        )
        .replace(
            "max_message_bytes = 65535",
            &format!("max_message_bytes = {}", s.max_message_bytes),
        )
        .replace(
            "state_file = \"../var/registrations.tsv\"",
            "state_file = \"registrations.tsv\"",
        )
        .replace(
            "dialplans_dir = \"../dialplans\"",
            "dialplans_dir = \"dialplans\"",
        )
        .replace(
            "path = \"../var/switchboard.db\"",
            "path = \"switchboard.db\"",
        )
        .replace(
            "listen = \"127.0.0.1:8060\"",
            &format!("listen = \"127.0.0.1:{}\"", metrics_port(port)),
        )
        .replace(
            "ring_timeout_s = 20",
            &format!("ring_timeout_s = {}", s.ring_timeout_s),
        )
        .replace(
            "trunk_failover_ms = 2000",
            &format!("trunk_failover_ms = {}", s.trunk_failover_ms),
        )
}

/// `text` without the TOML table `header` (up to the next table).
pub fn without_section(text: &str, header: &str) -> String {
    let Some(start) = text.find(&format!("\n{header}\n")) else {
        return text.to_owned();
    };
    let rest = &text[start + 1..];
    let end = rest[1..].find("\n[").map_or(rest.len(), |i| i + 2);
    format!("{}{}", &text[..start + 1], &rest[end..])
}

/// A running SIPp process.
pub struct Sipp {
    child: Child,
    pub name: String,
    pub trace: PathBuf,
    _dir: tempfile::TempDir,
}

/// Start SIPp with `args` (the common flags are added). It ends by itself: `-timeout` bounds it
/// to 30 s.
pub fn sipp(name: &str, args: &[&str]) -> Sipp {
    sipp_for(name, args, 30)
}

/// [`sipp`] bounded by `timeout_s` instead of 30 s (a phone that must outlive a long load).
pub fn sipp_for(name: &str, args: &[&str], timeout_s: u32) -> Sipp {
    which_sipp();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("messages.log");
    let child = Command::new("sipp")
        .args(args)
        .args(["-nostdin", "-timeout", &timeout_s.to_string()])
        .args(["-trace_msg", "-message_file"])
        .arg(&trace)
        .arg("-trace_err")
        .arg("-error_file")
        .arg(dir.path().join("errors.log"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp");
    Sipp {
        child,
        name: name.to_owned(),
        trace,
        _dir: dir,
    }
}

fn which_sipp() {
    if Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!("SIPp is not installed: apt-get install -y sip-tester (the README's test command does this)");
    }
}

impl Sipp {
    /// Wait for SIPp to finish; returns whether it exited 0, and its diagnostics.
    pub fn finish(mut self, limit: Duration) -> (bool, String) {
        let end = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break Some(s);
            }
            if Instant::now() >= end {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if status.is_none() {
            kill_pid(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
        let mut out = String::new();
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut out);
        }
        let trace = std::fs::read_to_string(&self.trace).unwrap_or_default();
        let errors =
            std::fs::read_to_string(self._dir.path().join("errors.log")).unwrap_or_default();
        let ok = status.is_some_and(|s| s.success());
        (
            ok,
            format!(
                "--- sipp {} status {:?}\n{}\n--- errors\n{}\n--- messages\n{}",
                self.name, status, out, errors, trace
            ),
        )
    }

    /// The message trace so far.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(&self.trace).unwrap_or_default()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill_pid(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

/// Register agent `user` from `ip:port` with its demo password; asserts success.
pub fn register(d: &Daemon, user: &str, ip: &str, port: u16, transport: &str) {
    let p = port.to_string();
    let pw = format!("demo-{user}");
    let (ok, diag) = sipp(
        "register",
        &[
            &d.target(),
            "-sf",
            &scenario("register.xml"),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            &pw,
            "-i",
            ip,
            "-p",
            &p,
            "-m",
            "1",
            "-t",
            transport,
        ],
    )
    .finish(Duration::from_secs(20));
    assert!(
        ok,
        "registration of {user} failed\n{diag}\n--- daemon\n{}",
        d.log()
    );
}

/// A SIPp UAS (an agent's phone, a PSAP, a sub-center) answering `calls` calls with `scn` on
/// ip:port, given a moment to bind.
pub fn uas(name: &str, scn: &str, user: &str, ip: &str, port: u16, calls: u32) -> Sipp {
    let p = port.to_string();
    let n = calls.to_string();
    let s = sipp(
        name,
        &[
            "-sf",
            &scenario(scn),
            "-s",
            user,
            "-i",
            ip,
            "-p",
            &p,
            "-m",
            &n,
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    s
}

/// One SIPp UAC call to `dialed` from `ip` (a free port there) with `scn`; `extra` adds flags.
pub fn uac(d: &Daemon, name: &str, scn: &str, dialed: &str, ip: &str, extra: &[&str]) -> Sipp {
    let p = free_port(ip).to_string();
    let target = d.target();
    let scn = scenario(scn);
    let mut args = vec![
        &*target, "-sf", &scn, "-s", dialed, "-i", ip, "-p", &p, "-m", "1",
    ];
    args.extend_from_slice(extra);
    sipp(name, &args)
}

/// `switchboard_calls_ended_total` summed over its labels, from a scrape.
pub fn ended_total(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| {
            l.starts_with("switchboard_calls_ended_total{")
                || l.starts_with("switchboard_calls_ended_total ")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every CDR of the daemon's store, through `switchboard cdr export --format jsonl` (the operator's
/// own command, so the tests read what ops would).
pub fn export_cdrs(d: &Daemon) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["cdr", "export", "--format", "jsonl", "-c"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cdr export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
