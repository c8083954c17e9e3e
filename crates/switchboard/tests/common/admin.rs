//! Helpers for the admin API, `ctl` and wallboard tests: a daemon with an `[admin]` section, and a
//! tiny HTTP client.

use std::io::{Read, Write};
use std::time::Duration;

use super::{metrics_port, Daemon, Settings};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const WALL_TOKEN: &str = "test-wall-token-0123456789";

/// Settings with the admin API on, the trunk at `trunk_ip` (instead of 127.0.0.2), and Haidong's
/// wrap-up shortened to 1 s so a queued caller is served soon after the call before it.
pub fn admin_settings(trunk_ip: &str) -> Settings {
    Settings {
        config_edits: vec![
            (
                "[log]".into(),
                format!(
                    "[admin]\ntoken = \"{ADMIN_TOKEN}\"\nwallboard_token = \"{WALL_TOKEN}\"\n\n[log]"
                ),
            ),
            (
                "sources = [\"127.0.0.2\"]".into(),
                format!("sources = [\"{trunk_ip}\"]"),
            ),
        ],
        seat_edits: vec![(
            "center = \"haidong\"\nring_timeout_s = 20\nmax_no_answer = 3\nwrap_up_s = 10".into(),
            "center = \"haidong\"\nring_timeout_s = 20\nmax_no_answer = 3\nwrap_up_s = 1".into(),
        )],
        ..Settings::default()
    }
}

/// The admin listener's base URL.
pub fn admin_url(d: &Daemon) -> String {
    format!("http://127.0.0.1:{}", metrics_port(d.port))
}

/// One HTTP request to the admin listener: (status, headers, body).
pub fn http(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    http_at(metrics_port(d.port), method, path, token, body)
}

/// One HTTP request to the admin listener on 127.0.0.1:`port` (a daemon whose metrics port is
/// not [`metrics_port`]'s, like the second node of an HA pair).
pub fn http_at(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin listener");
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, rest) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), rest.to_owned())
}

/// GET with the admin token; asserts 200 and parses the JSON.
pub fn get_json(d: &Daemon, path: &str) -> serde_json::Value {
    let (status, _, body) = http(d, "GET", path, Some(ADMIN_TOKEN), "");
    assert_eq!(status, 200, "GET {path}: {body}\n--- daemon\n{}", d.log());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Run `switchboard ctl -c <config> args…`: (success, stdout, stderr).
pub fn ctl(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("ctl")
        .arg("-c")
        .arg(&d.config)
        .args(args)
        .env_remove("SWITCHBOARD_TOKEN")
        .output()
        .expect("run switchboard ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
