//! SIP over TLS against real peers on loopback.
//!
//! Debian's SIPp (3.6.1, `sip-tester`) is built without TLS, so the TLS peers are softphones:
//! **baresip** (Debian `baresip-core`, libre + OpenSSL) registers with digest auth, places a call to a
//! sub-center (a SIPp UAS over UDP) and takes a call from a trunk (SIPp UAC over UDP), auto-answering;
//! **linphonec** (Debian `linphone-cli`, belle-sip + mbedTLS) registers while verifying our certificate
//! against the test CA, and refuses a server its CA did not sign. A rustls client in the test checks
//! which certificate a handshake presents before and after SIGHUP. Both softphones run headless with
//! their own config folder in a temp dir, bind their own loopback address and are killed by PID.
//!
//! Certificates are made here with rcgen: one CA, leaf certificates for `localhost` and 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};

const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test CA that signs leaf certificates.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert: rcgen::Certificate,
}

/// A leaf certificate and its key, in PEM, and the certificate's DER (what a handshake presents).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            cert,
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 (linphonec checks the name, rustls the IP).
    fn leaf(&self, cn: &str) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// Files of the daemon's certificate, and the CA, in a folder the test owns.
struct CertFiles {
    dir: tempfile::TempDir,
}

impl CertFiles {
    fn new(ca: &Ca, leaf: &Leaf) -> CertFiles {
        let f = CertFiles {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(f.ca(), ca.pem()).unwrap();
        f.install(leaf);
        f
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    /// Put `leaf` in place, as ops would before a reload.
    fn install(&self, leaf: &Leaf) {
        std::fs::write(self.cert(), &leaf.cert_pem).unwrap();
        std::fs::write(self.key(), &leaf.key_pem).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon with a TLS listener

/// Settings for a daemon that also listens for TLS on 127.0.0.1:`tls_port` with `files`.
fn tls_settings(tls_port: u16, files: &CertFiles, mut base: Settings) -> Settings {
    base.config_edits.push((
        "listen = [\n".into(),
        format!("listen = [\n  {{ transport = \"tls\", addr = \"127.0.0.1:{tls_port}\" }},\n"),
    ));
    base.config_edits.push((
        "\n[metrics]\n".into(),
        format!(
            "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[metrics]\n",
            files.cert().display(),
            files.key().display()
        ),
    ));
    base
}

struct TlsDaemon {
    d: Daemon,
    tls_port: u16,
}

impl TlsDaemon {
    fn start(files: &CertFiles, base: Settings) -> TlsDaemon {
        let tls_port = free_port("127.0.0.1");
        let d = Daemon::start_with(tls_settings(tls_port, files, base));
        assert!(
            d.log().contains("listening on TLS"),
            "no TLS listener:\n{}",
            d.log()
        );
        TlsDaemon { d, tls_port }
    }

    fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls_port))
    }
}

/// Wait up to `limit` for `pred`, polling.
fn wait_for(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred()
}

// ---------------------------------------------------------------------------------------------
// baresip

/// A running baresip, headless: its own config folder, SIP trace to a file, commands over ctrl_tcp.
struct Baresip {
    child: Child,
    _dir: tempfile::TempDir,
    out: PathBuf,
    ctrl: SocketAddr,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start baresip on `ip` with one account: `user` registering at the daemon's TLS port with its demo
/// password, auto-answering calls.
fn baresip(d: &TlsDaemon, files: &CertFiles, ip: &str, user: &str) -> Baresip {
    let dir = tempfile::tempdir().unwrap();
    let ctrl_port = free_port(ip);
    // ausine only makes 48 kHz stereo; baresip resamples to the call's codec. No audio device:
    // the received audio goes nowhere (aufile has no player in 1.0), which baresip tolerates.
    let config = format!(
        "module_path\t/usr/lib/baresip/modules\n\
         poll_method\tepoll\n\
         sip_listen\t{ip}:0\n\
         sip_cafile\t{ca}\n\
         call_local_timeout\t120\n\
         audio_player\taufile,{dir}/received.wav\n\
         audio_alert\taufile,{dir}/received.wav\n\
         audio_source\tausine,440\n\
         ausrc_srate\t48000\n\
         ausrc_channels\t2\n\
         module\tg711.so\n\
         module\tausine.so\n\
         module\taufile.so\n\
         module_tmp\taccount.so\n\
         module_app\tmenu.so\n\
         module_app\tctrl_tcp.so\n\
         ctrl_tcp_listen\t{ip}:{ctrl_port}\n",
        ca = files.ca().display(),
        dir = dir.path().display(),
    );
    std::fs::write(dir.path().join("config"), config).unwrap();
    std::fs::write(
        dir.path().join("accounts"),
        format!(
            "<sip:{user}@127.0.0.1:{port};transport=tls>;auth_pass=demo-{user};answermode=auto;regint=60\n",
            port = d.tls_port
        ),
    )
    .unwrap();
    let out = dir.path().join("baresip.out");
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir.path())
        // -s: print every SIP message with its transport and addresses; -t: quit after 60 s even
        // if this test were to leak it.
        .args(["-s", "-t", "60"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start baresip ({e}): apt-get install -y baresip-core (scripts/test.sh does this)"
            )
        });
    Baresip {
        child,
        _dir: dir,
        out,
        ctrl: format!("{ip}:{ctrl_port}").parse().unwrap(),
    }
}

impl Baresip {
    /// Its SIP trace and log so far (colour codes and all).
    fn trace(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    /// Run a command over ctrl_tcp (netstring-framed JSON) and wait for its response.
    fn command(&self, command: &str, params: &str) {
        let mut s = None;
        // ctrl_tcp listens once baresip has loaded its modules.
        wait_for(Duration::from_secs(5), || {
            s = TcpStream::connect(self.ctrl).ok();
            s.is_some()
        });
        let mut s = s.expect("baresip's ctrl_tcp port");
        let json = format!(r#"{{"command":"{command}","params":"{params}","token":"t"}}"#);
        s.write_all(format!("{}:{json},", json.len()).as_bytes())
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && !String::from_utf8_lossy(&got).contains(r#""response":true"#)
        {
            let mut buf = [0u8; 2048];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        assert!(
            String::from_utf8_lossy(&got).contains(r#""ok":true"#),
            "baresip refused `{command} {params}`: {}",
            String::from_utf8_lossy(&got)
        );
    }
}

/// In a baresip trace, the `(from, to)` of each message whose first line starts with `start`
/// (baresip prints `TLS <from> -> <to>` on the line before each message).
fn legs(trace: &str, start: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = trace.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[1].starts_with(start))
        .filter_map(|w| {
            let rest = w[0].strip_prefix("TLS ")?;
            let (from, to) = rest.split_once(" -> ")?;
            Some((from.trim().to_owned(), to.trim().to_owned()))
        })
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn which(cmd: &str, package: &str) {
    if Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return;
    }
    panic!("{cmd} is not installed: apt-get install -y {package} (scripts/test.sh does this)");
}

/// Register `user` from baresip over TLS and wait for the daemon to say so.
fn registered_baresip(d: &TlsDaemon, files: &CertFiles, ip: &str, user: &str) -> Baresip {
    which("baresip", "baresip-core");
    let b = baresip(d, files, ip, user);
    let ok = wait_for(Duration::from_secs(10), || {
        d.d.log()
            .contains(&format!("agent registered user={user} source=127.0.0.1:"))
    });
    assert!(
        ok,
        "baresip did not register over TLS\n--- daemon\n{}\n--- baresip\n{}",
        d.d.log(),
        tail(&b.trace(), 80)
    );
    // baresip's output goes to a file: give its last lines a moment to land.
    wait_for(Duration::from_secs(3), || {
        b.trace().contains("{0/TLS/v4} 200 OK")
    });
    let trace = b.trace();
    // The 401 challenge, then the 200, both over TLS; baresip reports the binding as TLS.
    assert!(
        legs(&trace, "SIP/2.0 401").len() == 1 && !legs(&trace, "SIP/2.0 200").is_empty(),
        "{trace}"
    );
    assert!(trace.contains("{0/TLS/v4} 200 OK"), "{trace}");
    b
}

/// The answered CDR with `dialed`, once the daemon has written it.
fn answered_cdr(d: &Daemon, dialed: &str) -> serde_json::Value {
    let mut found = None;
    wait_for(Duration::from_secs(5), || {
        found = export_cdrs(d)
            .into_iter()
            .find(|c| c["dialed"] == dialed && c["outcome"] == "answered");
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no answered CDR for {dialed}: {:?}", export_cdrs(d)))
}

#[test]
fn tls_phone_registers_with_digest_and_calls_a_subcenter_on_udp() {
    let ca = Ca::new("12345 test CA");
    let files = CertFiles::new(&ca, &ca.leaf("switchboard"));
    let sub_port = free_port("127.0.2.1");
    let d = TlsDaemon::start(
        &files,
        Settings {
            plan_edits: vec![(
                "sip:127.0.2.1:5060".into(),
                format!("sip:127.0.2.1:{sub_port}"),
            )],
            ..Settings::default()
        },
    );
    let b = registered_baresip(&d, &files, "127.0.0.51", "8003");
    // The registration is kept as a TLS binding.
    assert!(
        wait_for(Duration::from_secs(3), || {
            std::fs::read_to_string(d.d.dir.path().join("registrations.tsv")).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.starts_with("8003\t") && l.contains("\ttls\t"))
            })
        }),
        "no TLS binding in the registration file"
    );
    // The tax sub-center answers, then hangs up: its BYE must reach the phone over TLS.
    let sub = uas(
        "sub-center 12366",
        "uas_hangup.xml",
        "12366",
        "127.0.2.1",
        sub_port,
        1,
    );
    b.command("dial", &format!("sip:12366@127.0.0.1:{}", d.tls_port));
    let (ok, diag) = sub.finish(LIMIT);
    wait_for(Duration::from_secs(3), || {
        legs(&b.trace(), "BYE sip:8003-").len() == 1
    });
    let trace = b.trace();
    assert!(
        ok,
        "{diag}\n--- daemon\n{}\n--- baresip\n{}",
        d.d.log(),
        tail(&trace, 120)
    );
    // Across the switchboard: the phone's Via says TLS and our Record-Route for its leg says tls,
    // so its ACK and BYE come back over TLS (they did: the sub-center's scenario passed).
    assert!(diag.contains("Via: SIP/2.0/TLS 127.0.0.51:"), "{diag}");
    // The phone's entry names its connection (`sbflow`), which requests towards it then ride.
    let rr = format!(
        "Record-Route: <sip:127.0.0.1:{};transport=tls;lr;sbrr=",
        d.tls_port
    );
    assert!(
        diag.lines()
            .any(|l| l.starts_with(&rr) && l.contains(";sbflow=")),
        "{diag}"
    );
    assert!(trace.contains("Call established"), "{}", tail(&trace, 80));
    // Everything rode the connection the phone registered over: the INVITE (digest-challenged
    // with 407, then sent again), its ACK, and the sub-center's BYE coming the other way.
    let register = legs(&trace, "REGISTER sip:");
    let invites = legs(&trace, "INVITE sip:12366@");
    let bye_in = legs(&trace, "BYE sip:8003-");
    assert!(
        !register.is_empty() && invites.len() == 2 && bye_in.len() == 1,
        "{}",
        tail(&trace, 120)
    );
    let phone_end = &register[0].0;
    assert!(
        invites.iter().all(|(from, _)| from == phone_end),
        "{invites:?} vs {phone_end}"
    );
    assert_eq!(
        &bye_in[0].1, phone_end,
        "the BYE came on another connection"
    );
    assert!(
        trace.contains("SIP/2.0 407"),
        "the INVITE was not challenged"
    );
    let cdr = answered_cdr(&d.d, "12366");
    assert_eq!(cdr["caller"], "8003", "{cdr}");
    assert_eq!(cdr["target"], format!("sip:127.0.2.1:{sub_port}"), "{cdr}");
}

#[test]
fn trunk_call_reaches_a_tls_phone_over_its_own_connection() {
    let ca = Ca::new("12345 test CA");
    let files = CertFiles::new(&ca, &ca.leaf("switchboard"));
    let d = TlsDaemon::start(&files, Settings::default());
    // 8001 answers Xining's 12345 queue; the demo trunk is Xining's.
    let b = registered_baresip(&d, &files, "127.0.0.52", "8001");
    let caller = uac(
        &d.d,
        "trunk caller",
        "uac.xml",
        "12345",
        "127.0.0.2",
        &["-d", "500"],
    );
    let (ok, diag) = caller.finish(LIMIT);
    wait_for(Duration::from_secs(3), || {
        legs(&b.trace(), "BYE sip:8001-").len() == 1
    });
    let trace = b.trace();
    assert!(
        ok,
        "{diag}\n--- daemon\n{}\n--- baresip\n{}",
        d.d.log(),
        tail(&trace, 120)
    );
    assert!(trace.contains("Call established"), "{}", tail(&trace, 80));
    // The INVITE, the trunk's ACK and BYE: all sent to the phone over the connection it
    // registered over (a TLS phone cannot be reached any other way: it has no certificate).
    let phone_end = legs(&trace, "REGISTER sip:")[0].0.clone();
    for start in ["INVITE sip:8001-", "ACK sip:8001-", "BYE sip:8001-"] {
        let got = legs(&trace, start);
        assert!(
            got.len() == 1 && got[0].1 == phone_end,
            "{start}: {got:?}, phone at {phone_end}\n{}",
            tail(&trace, 120)
        );
    }
    let cdr = answered_cdr(&d.d, "12345");
    assert_eq!(cdr["agent"], "8001", "{cdr}");
}

// ---------------------------------------------------------------------------------------------
// linphonec: a client that verifies the server certificate

struct Linphonec {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Linphonec {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// linphonec registering `user` at `localhost:<tls port>` over TLS, trusting only `root_ca`.
fn linphonec(d: &TlsDaemon, root_ca: &Path, ip: &str, user: &str) -> Linphonec {
    which("linphonec", "linphone-cli");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".local/share/linphone")).unwrap();
    let tls_port = free_port(ip);
    let rtp_port = free_port(ip);
    let rc = dir.path().join("linphonerc");
    // belle-sip needs a TLS listening point of its own to connect over TLS; UDP and TCP are off.
    // It checks the certificate chain against root_ca and the name `localhost` against the
    // certificate (mbedTLS matches DNS names, not IP addresses).
    std::fs::write(
        &rc,
        format!(
            "[sip]\nsip_port=-1\nsip_tcp_port=-1\nsip_tls_port={tls_port}\nbind_address={ip}\n\
default_proxy=0\nregister_only_when_network_is_up=0\nauto_net_state_mon=0\nping_with_options=0\n\
root_ca={ca}\nverify_server_certs=1\nverify_server_cn=1\n\n\
[rtp]\naudio_rtp_port={rtp_port}\n\n[video]\ncapture=0\ndisplay=0\nenabled=0\n\n\
[proxy_0]\nreg_proxy=<sip:localhost:{port};transport=tls>\nreg_identity=sip:{user}@localhost\n\
reg_expires=60\nreg_sendregister=1\npublish=0\n\n\
[auth_info_0]\nusername={user}\nuserid={user}\npasswd=demo-{user}\nrealm={REALM}\n",
            ca = root_ca.display(),
            port = d.tls_port,
        ),
    )
    .unwrap();
    let log = dir.path().join("linphonec.log");
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
        .expect("start linphonec");
    Linphonec {
        child,
        log,
        _dir: dir,
    }
}

impl Linphonec {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn linphonec_verifies_our_certificate_and_registers_over_tls() {
    let ca = Ca::new("12345 test CA");
    let files = CertFiles::new(&ca, &ca.leaf("switchboard"));
    let d = TlsDaemon::start(&files, Settings::default());

    // Trusting our CA: the handshake verifies and the phone registers.
    let lp = linphonec(&d, &files.ca(), "127.0.0.53", "8004");
    let ok = wait_for(Duration::from_secs(15), || {
        d.d.log().contains("agent registered user=8004")
    });
    let lp_log = lp.log();
    drop(lp);
    assert!(
        ok,
        "linphonec did not register over TLS\n--- daemon\n{}\n--- linphonec\n{}",
        d.d.log(),
        tail(&lp_log, 60)
    );
    assert!(
        lp_log.contains("SSL handshake finished"),
        "{}",
        tail(&lp_log, 60)
    );

    // Trusting another CA only: linphonec refuses our certificate and never registers.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other-ca.pem");
    std::fs::write(&other_ca, Ca::new("somebody else").pem()).unwrap();
    let lp = linphonec(&d, &other_ca, "127.0.0.54", "8005");
    let refused = wait_for(Duration::from_secs(15), || {
        lp.log().contains("SSL handshake failed")
    });
    let lp_log = lp.log();
    drop(lp);
    assert!(refused, "{}", tail(&lp_log, 60));
    assert!(
        !d.d.log().contains("agent registered user=8005"),
        "{}",
        d.d.log()
    );
    // The daemon saw that handshake fail (the client's alert) and counted it.
    let scrape = scrape(&d.d);
    assert!(
        sample(
            &scrape,
            "switchboard_tls_handshake_failures_total{side=\"accept\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
}

// ---------------------------------------------------------------------------------------------
// A rustls client in the test: which certificate does a handshake present?

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A verified TLS connection to `addr` and the leaf certificate it presented.
fn connect(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> (TlsStream, Vec<u8>) {
    let sock = TcpStream::connect(addr).expect("connect to the TLS port");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("TLS handshake with the daemon");
    }
    let leaf: &CertificateDer = &tls.conn.peer_certificates().expect("a certificate")[0];
    let der = leaf.to_vec();
    (tls, der)
}

/// OPTIONS over `tls`; the status line of the answer.
fn options_over(tls: &mut TlsStream, branch: &str) -> String {
    let me = tls.sock.local_addr().unwrap();
    let target = tls.sock.peer_addr().unwrap().to_string();
    let msg = options(&target, me, branch).replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    tls.write_all(msg.as_bytes()).unwrap();
    tls.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer over TLS: {e}"),
        }
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn sighup_serves_a_new_certificate_to_new_handshakes_and_keeps_it_when_the_next_is_broken() {
    let ca = Ca::new("12345 test CA");
    let first = ca.leaf("first");
    let files = CertFiles::new(&ca, &first);
    let d = TlsDaemon::start(&files, Settings::default());
    let cfg = client_config(&ca);

    let (mut old_conn, presented) = connect(d.tls_addr(), &cfg);
    assert!(
        presented == first.der,
        "the first certificate is in service"
    );
    assert_eq!(options_over(&mut old_conn, "c1"), "SIP/2.0 200 OK");

    // A renewed certificate and key, then SIGHUP: the next handshake presents it.
    let second = ca.leaf("second");
    files.install(&second);
    d.d.signal("HUP");
    let swapped = wait_for(Duration::from_secs(5), || {
        connect(d.tls_addr(), &cfg).1 == second.der
    });
    assert!(swapped, "still the old certificate\n{}", d.d.log());
    assert!(
        d.d.log().contains("reload: TLS certificate in service"),
        "{}",
        d.d.log()
    );
    // The connection made before the reload keeps working.
    assert_eq!(options_over(&mut old_conn, "c2"), "SIP/2.0 200 OK");

    // A broken certificate file: the reload is refused, naming the file, and the second
    // certificate stays in service.
    std::fs::write(
        files.cert(),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    )
    .unwrap();
    d.d.signal("HUP");
    let cert_name = files.cert().display().to_string();
    let refused = wait_for(Duration::from_secs(5), || {
        d.d.log()
            .lines()
            .any(|l| l.contains("reload refused") && l.contains(&cert_name))
    });
    assert!(refused, "{}", d.d.log());
    assert!(connect(d.tls_addr(), &cfg).1 == second.der);

    // A certificate whose key is another one's: refused too, naming both files.
    let third = ca.leaf("third");
    std::fs::write(files.cert(), &third.cert_pem).unwrap();
    std::fs::write(files.key(), &second.key_pem).unwrap();
    let before = d.d.log().matches("reload refused").count();
    d.d.signal("HUP");
    assert!(
        wait_for(Duration::from_secs(5), || d
            .d
            .log()
            .matches("reload refused")
            .count()
            > before),
        "{}",
        d.d.log()
    );
    assert!(d.d.log().contains("do not go together"), "{}", d.d.log());
    let (mut conn, presented) = connect(d.tls_addr(), &cfg);
    assert!(
        presented == second.der,
        "a refused reload changed the certificate"
    );
    assert_eq!(options_over(&mut conn, "c3"), "SIP/2.0 200 OK");
}

// ---------------------------------------------------------------------------------------------
// Hostile bytes on the TLS port

/// Whether the daemon closes `sock` within `limit` (any bytes it sends first, such as a TLS alert,
/// are read and ignored).
fn closed_within(sock: &mut TcpStream, limit: Duration) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true, // reset
        }
    }
    false
}

#[test]
fn plain_sip_and_junk_on_the_tls_port_are_closed_and_the_daemon_keeps_serving() {
    let ca = Ca::new("12345 test CA");
    let leaf = ca.leaf("switchboard");
    let files = CertFiles::new(&ca, &leaf);
    let d = TlsDaemon::start(
        &files,
        Settings {
            tcp_partial_timeout_s: 1,
            ..Settings::default()
        },
    );
    let started = Instant::now();

    // Plain SIP where TLS is expected: not a TLS record, the handshake fails at once.
    let mut plain = TcpStream::connect(d.tls_addr()).unwrap();
    let me = plain.local_addr().unwrap();
    plain
        .write_all(options(&d.d.target(), me, "plain").as_bytes())
        .unwrap();
    assert!(
        closed_within(&mut plain, Duration::from_secs(2)),
        "plain SIP left open"
    );

    // 40 connections of random bytes, one after another, bounded in count and time.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..40 {
        let mut junk = TcpStream::connect(d.tls_addr()).unwrap();
        let bytes: Vec<u8> = (0..1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = junk.write_all(&bytes);
        assert!(
            closed_within(&mut junk, Duration::from_secs(2)),
            "junk connection {i} left open"
        );
    }

    // A client that connects and says nothing holds its slot only until the handshake deadline.
    let mut silent = TcpStream::connect(d.tls_addr()).unwrap();
    let t = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(4)),
        "a silent connection stays"
    );
    let held = t.elapsed();
    assert!(
        held >= Duration::from_millis(900),
        "closed before the deadline: {held:?}"
    );

    // The daemon answers over TLS and UDP as before, and counted every failed handshake.
    let (mut tls, presented) = connect(d.tls_addr(), &client_config(&ca));
    assert!(presented == leaf.der);
    assert_eq!(options_over(&mut tls, "after"), "SIP/2.0 200 OK");
    assert!(d.d.answers_within(Duration::from_secs(2)));
    let scrape = scrape(&d.d);
    let failed = sample(
        &scrape,
        "switchboard_tls_handshake_failures_total{side=\"accept\"}",
    );
    assert!(failed.is_some_and(|n| n >= 42.0), "{failed:?}\n{scrape}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

// ---------------------------------------------------------------------------------------------
// `switchboard check`

/// A test folder with the shipped config (on `port`, TLS added with `tls`) and its dialplans and
/// seats; returns the config's path.
fn check_folder(dir: &Path, edits: Vec<(String, String)>) -> PathBuf {
    let config = dir.join("switchboard.toml");
    let s = Settings {
        config_edits: edits,
        ..Settings::default()
    };
    std::fs::write(&config, config_text(free_port("127.0.0.1"), &s)).unwrap();
    copy_dialplans(dir, &[]);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/seats.toml"),
        dir.join("seats.toml"),
    )
    .unwrap();
    config
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("check")
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_validates_the_tls_section_and_names_the_file_at_fault() {
    let ca = Ca::new("12345 test CA");
    let leaf = ca.leaf("switchboard");
    let dir = tempfile::tempdir().unwrap();
    // Paths relative to the config file.
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls/key.pem"), &leaf.key_pem).unwrap();
    let listener = (
        "listen = [\n".to_string(),
        "listen = [\n  { transport = \"tls\", addr = \"127.0.0.1:5061\" },\n".to_string(),
    );
    let section = |cert: &str, key: &str| {
        (
            "\n[metrics]\n".to_string(),
            format!("\n[tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\n[metrics]\n"),
        )
    };

    let config = check_folder(
        dir.path(),
        vec![listener.clone(), section("tls/cert.pem", "tls/key.pem")],
    );
    let (ok, out) = check(&config);
    assert!(ok && out.contains("ok (3 listeners"), "{out}");

    // A missing key file: the config's line of key_file, and the file as resolved.
    let config = check_folder(
        dir.path(),
        vec![listener.clone(), section("tls/cert.pem", "tls/missing.pem")],
    );
    let (ok, out) = check(&config);
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("key_file"))
        .unwrap()
        + 1;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("switchboard.toml:{line}:"))
            && out.contains("tls.key_file")
            && out.contains(&dir.path().join("tls/missing.pem").display().to_string()),
        "{out}"
    );

    // Not a certificate at all.
    std::fs::write(dir.path().join("tls/junk.pem"), "hello\n").unwrap();
    let config = check_folder(
        dir.path(),
        vec![listener.clone(), section("tls/junk.pem", "tls/key.pem")],
    );
    let (ok, out) = check(&config);
    assert!(
        !ok && out.contains("junk.pem") && out.contains("no certificate"),
        "{out}"
    );

    // A TLS listener without [tls].
    let config = check_folder(dir.path(), vec![listener]);
    let (ok, out) = check(&config);
    assert!(!ok && out.contains("needs a [tls] section"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Connections the switchboard opens itself (a trunk or PSAP with transport=tls)

mod outbound {
    use super::*;
    use bytes::Bytes;
    use switchboard::tls::{
        client_config, read_certs, read_key, server_config, TlsHandle, TlsMaterial,
    };
    use switchboard::transport::{Inbound, SendError, TcpLimits, TcpTransport, Transport};
    use tokio::sync::mpsc;

    /// Material for `leaf`; with `trust`, connections we open verify servers against that CA.
    fn material(files: &CertFiles, trust: Option<&Path>) -> TlsMaterial {
        let certs = read_certs(&files.cert()).unwrap();
        let key = read_key(&files.key()).unwrap();
        let server = server_config(certs.clone(), key.clone_key(), None).unwrap();
        let client = trust.map(|ca| {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca).unwrap() {
                roots.add(c).unwrap();
            }
            Arc::new(client_config(roots, certs, key).unwrap())
        });
        TlsMaterial::from_configs(Arc::new(server), client)
    }

    async fn transport(m: TlsMaterial) -> (TcpTransport, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(16);
        let t = TcpTransport::bind_tls(
            "127.0.0.1:0".parse().unwrap(),
            TcpLimits::default(),
            TlsHandle::new(m),
            tx,
        )
        .await
        .unwrap();
        (t, rx)
    }

    fn message(call_id: &str) -> Bytes {
        Bytes::from(format!(
            "OPTIONS sip:psap@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK{call_id}\r\n\
Max-Forwards: 70\r\nTo: <sip:psap@127.0.0.1>\r\nFrom: <sip:sb@127.0.0.1>;tag=1\r\nCall-ID: {call_id}\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    #[tokio::test]
    async fn we_connect_over_tls_only_to_servers_our_ca_signed() {
        let ca = Ca::new("12345 test CA");
        let ours = CertFiles::new(&ca, &ca.leaf("switchboard"));
        let theirs = CertFiles::new(&ca, &ca.leaf("psap"));
        let (psap, mut psap_rx) = transport(material(&theirs, None)).await;

        // Trusting our CA: the message arrives over TLS, and the reply comes back on it.
        let (sb, mut sb_rx) = transport(material(&ours, Some(&ours.ca()))).await;
        sb.send(None, psap.local_addr(), message("out1")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), psap_rx.recv())
            .await
            .expect("the PSAP got the message in time")
            .unwrap();
        assert_eq!(got.transport, Transport::Tls);
        assert_eq!(got.bytes, message("out1"));
        psap.send(got.conn, got.peer, message("back")).unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), sb_rx.recv())
            .await
            .expect("the reply in time")
            .unwrap();
        assert_eq!(
            (back.transport, back.bytes),
            (Transport::Tls, message("back"))
        );
        assert_eq!(sb.connection_count(), 1);

        // Trusting another CA only: the handshake fails and nothing is delivered.
        let elsewhere = tempfile::tempdir().unwrap();
        let other_ca = elsewhere.path().join("ca.pem");
        std::fs::write(&other_ca, Ca::new("somebody else").pem()).unwrap();
        let (wary, _rx) = transport(material(&ours, Some(&other_ca))).await;
        wary.send(None, psap.local_addr(), message("out2")).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), psap_rx.recv())
                .await
                .is_err(),
            "a server we do not trust got the message"
        );
        let end = tokio::time::Instant::now() + Duration::from_secs(2);
        while wary.connection_count() > 0 && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            wary.connection_count(),
            0,
            "the failed connection holds its slot"
        );

        // No ca_file: no connection is opened at all.
        let (plain, _rx) = transport(material(&ours, None)).await;
        assert_eq!(
            plain.send(None, psap.local_addr(), message("out3")),
            Err(SendError::NoTlsClient {
                dest: psap.local_addr()
            })
        );
    }
}
