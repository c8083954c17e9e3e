//! The daemon's config file: parse, then validate, and report every problem as `file:line:col: message`.
//!
//! Every struct refuses unknown fields, so a typo is an error rather than a silently ignored setting.
//! Units are in field names (`_ms`, `_s`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SIP listeners and limits.
    pub sip: SipConfig,
    /// RFC 3261 timer values.
    #[serde(default)]
    pub timers: TimersConfig,
    /// The registrar (REGISTER handling and digest authentication).
    pub registrar: RegistrarConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Where calls go: the dialplans and the hunting timers.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Durable records: a CDR for every call (SQLite in WAL mode). Without it no CDR is kept.
    #[serde(default)]
    pub store: Option<store::StoreConfig>,
    /// The HTTP listener for Prometheus metrics (`/metrics`).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The admin HTTP API and the wallboard, on the metrics listener (`crate::admin`). Without
    /// it, only `/metrics` is served.
    #[serde(default)]
    pub admin: Option<crate::admin::AdminConfig>,
    /// The emergency bridge: the PSAPs per prefecture and service (110/119/120/122). Without it,
    /// emergency calls are refused with 503 and an alarm: configure it.
    #[serde(default)]
    pub emergency: Option<emergency_bridge::EmergencyConfig>,
    /// Early media: announcements over RTP for callers who wait (`crate::media_task::MediaConfig`).
    /// Without it, a queued call hears only what its own phone plays on `182 Queued`.
    #[serde(default)]
    pub media: Option<crate::media_task::MediaConfig>,
    /// Named SIP peers (PBXs, carrier gateways) recognised by source address.
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    /// Agents allowed to register, with their digest credentials (HA1 hashes, never passwords).
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// The active/standby pair over PostgreSQL (`ha.rs`). Without it the daemon is a single node.
    #[serde(default)]
    pub ha: Option<crate::ha::HaConfig>,
    /// Flood limits, authentication lockout, overload control (SECURITY.md).
    #[serde(default)]
    pub security: crate::security::SecurityConfig,
    /// Classes of service: what agents may dial (toll fraud). Agents without `class` get `default`.
    #[serde(default)]
    pub classes: Vec<crate::security::ClassConfig>,
    /// SIP over TLS: the certificate and key the `transport = "tls"` listeners present
    /// (`crate::tls::TlsConfig`). Needed when a listener is TLS; re-read on SIGHUP.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
}

/// SIP transport settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Listening sockets, e.g. `{ transport = "udp", addr = "127.0.0.1:5060" }`; TLS (`sips:`) is
    /// `{ transport = "tls", addr = "0.0.0.0:5061" }` with a `[tls]` section.
    pub listen: Vec<Spanned<ListenConfig>>,
    /// Extra host names that mean this switchboard in Route headers and Request-URIs.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Largest SIP message accepted, in bytes; larger datagrams get 513, larger stream messages close
    /// the connection.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most simultaneous TCP connections (each TLS listener has the same limit of its own).
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: usize,
    /// A TCP connection with no traffic for this long is closed.
    #[serde(default = "default_tcp_idle_timeout_s")]
    pub tcp_idle_timeout_s: u64,
    /// A TCP peer that starts a message and does not finish it within this time is disconnected; a
    /// TLS handshake must finish within it too.
    #[serde(default = "default_tcp_partial_timeout_s")]
    pub tcp_partial_timeout_s: u64,
    /// Secret (hex, 64 digits) that signs Record-Route entries. Random at each start when absent; set
    /// it for in-dialog requests to survive a restart.
    #[serde(default)]
    pub rr_secret_hex: Option<String>,
    /// An INVITE may be handled before non-INVITE messages (ACK, BYE, REGISTER, ...) that arrived
    /// at most this many milliseconds before it; 0 keeps plain arrival order. Emergency INVITEs
    /// and responses to INVITEs go first whatever this says (`crate::lanes`). Reloadable.
    #[serde(default = "default_invite_overtake_ms")]
    pub invite_overtake_ms: Spanned<u64>,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// `udp`, `tcp` or `tls`.
    pub transport: TransportName,
    /// Address and port, IPv4 or `[IPv6]:port`.
    pub addr: SocketAddr,
}

/// A transport name in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportName {
    Udp,
    Tcp,
    /// TLS over TCP (`SIP/2.0/TLS`, `sips:`); the certificate comes from `[tls]`.
    Tls,
}

/// RFC 3261 timers (Kamailio calls B/F `fr_timer` and C `fr_inv_timer`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersConfig {
    /// T1, the RTT estimate, in milliseconds (RFC default 500).
    #[serde(default = "default_t1_ms")]
    pub t1_ms: u64,
    /// T2, the longest retransmission interval, in milliseconds (RFC default 4000).
    #[serde(default = "default_t2_ms")]
    pub t2_ms: u64,
    /// T4, how long a message lives in the network, in milliseconds (RFC default 5000).
    #[serde(default = "default_t4_ms")]
    pub t4_ms: u64,
    /// Timer C, how long an INVITE branch may ring without a new provisional, in seconds (> 180).
    #[serde(default = "default_timer_c_s")]
    pub timer_c_s: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            t1_ms: default_t1_ms(),
            t2_ms: default_t2_ms(),
            t4_ms: default_t4_ms(),
            timer_c_s: default_timer_c_s(),
        }
    }
}

/// The registrar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarConfig {
    /// The digest realm; HA1 hashes are computed over it.
    pub realm: String,
    /// Shortest registration accepted (shorter ones get 423 with Min-Expires).
    #[serde(default = "default_min_expires_s")]
    pub min_expires_s: u32,
    /// Longest registration granted; longer requests are shortened to this.
    #[serde(default = "default_max_expires_s")]
    pub max_expires_s: u32,
    /// Registration time when the phone asks for none.
    #[serde(default = "default_default_expires_s")]
    pub default_expires_s: u32,
    /// How long a nonce is valid; an older one gets a new challenge with stale=true.
    #[serde(default = "default_nonce_lifetime_s")]
    pub nonce_lifetime_s: u64,
    /// Digest algorithms offered, in order, to accounts without their own list. Keep `MD5` first for
    /// old phones and SIPp (DESIGN.md §6).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<AlgorithmName>,
    /// File where registrations are kept across restarts (relative to the config file's folder).
    pub state_file: PathBuf,
}

/// A digest algorithm name in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AlgorithmName {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "SHA-256")]
    Sha256,
}

/// Prometheus metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the `/metrics` listener; loopback by default. Absent listener: `enabled = false`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
    /// Whether to serve metrics at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
            enabled: true,
        }
    }
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8060))
}
fn default_true() -> bool {
    true
}

/// Routing settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Folder of the dialplan TOML files (relative to the config file's folder).
    #[serde(default = "default_dialplans_dir")]
    pub dialplans_dir: PathBuf,
    /// How long one agent's phones ring before the call moves to the next agent.
    #[serde(default = "default_ring_timeout_s")]
    pub ring_timeout_s: u64,
    /// How long a trunk target (a sub-center) may stay silent, with no provisional response, before
    /// the next target is tried.
    #[serde(default = "default_trunk_failover_ms")]
    pub trunk_failover_ms: u64,
    /// The seat manager's file (agents' roles, queues, strategies, rosters), relative to this file.
    /// Without it, a queue simply rings its agents (`[[agents]] queues`) one after another.
    #[serde(default)]
    pub seats_file: Option<PathBuf>,
    /// How often `182 Queued` is re-sent to a waiting caller, so that neither Timer C nor an
    /// upstream proxy gives up (RFC 3261 §16.8). At most 60 s; shorten it only for tests.
    #[serde(default = "default_queued_refresh_s")]
    pub queued_refresh_s: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            dialplans_dir: default_dialplans_dir(),
            ring_timeout_s: default_ring_timeout_s(),
            trunk_failover_ms: default_trunk_failover_ms(),
            seats_file: None,
            queued_refresh_s: default_queued_refresh_s(),
        }
    }
}

fn default_dialplans_dir() -> PathBuf {
    PathBuf::from("../dialplans")
}
fn default_ring_timeout_s() -> u64 {
    20
}
fn default_trunk_failover_ms() -> u64 {
    2000
}
fn default_queued_refresh_s() -> u64 {
    60
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers.
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `switchboard=debug`. RUST_LOG overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A trunk: a SIP peer trusted by its source address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// Source addresses (IP or CIDR) the trunk sends from.
    pub sources: Vec<Spanned<String>>,
    /// The prefecture the trunk serves, if it serves one (e.g. `xining`).
    #[serde(default)]
    pub prefecture: Option<String>,
    /// No longer read: a sub-center's work-order endpoint is its line's `workorder_url` in the
    /// dialplan. Kept only to refuse it with its line rather than accept a config that would
    /// silently stop delivering.
    #[serde(default)]
    pub outbox_url: Option<Spanned<String>>,
}

/// An agent account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The SIP user name, which is also the agent's number (e.g. `8001`).
    pub user: Spanned<String>,
    /// MD5(user:realm:password), hex.
    #[serde(default)]
    pub ha1_md5: Option<Spanned<String>>,
    /// SHA-256(user:realm:password), hex.
    #[serde(default)]
    pub ha1_sha256: Option<Spanned<String>>,
    /// Algorithms offered to this account, in order; the registrar's list when absent.
    #[serde(default)]
    pub algorithms: Option<Vec<AlgorithmName>>,
    /// Whether the password is a published demo password (a warning is logged off loopback).
    #[serde(default)]
    pub demo: bool,
    /// Queues this agent answers, by the dialplan's queue ids (`12345-xining`, `dept-12315`). Until
    /// the seat manager lands, a queue rings its registered agents in this file's order.
    #[serde(default)]
    pub queues: Vec<Spanned<String>>,
    /// The agent's class of service (`[[classes]]` name); `default` when absent.
    #[serde(default)]
    pub class: Option<Spanned<String>>,
}

fn default_max_message_bytes() -> usize {
    65_535
}
fn default_tcp_max_connections() -> usize {
    4096
}
fn default_tcp_idle_timeout_s() -> u64 {
    600
}
fn default_tcp_partial_timeout_s() -> u64 {
    10
}
fn default_invite_overtake_ms() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

fn default_t1_ms() -> u64 {
    500
}
fn default_t2_ms() -> u64 {
    4000
}
fn default_t4_ms() -> u64 {
    5000
}
fn default_timer_c_s() -> u64 {
    180
}
fn default_min_expires_s() -> u32 {
    60
}
fn default_max_expires_s() -> u32 {
    3600
}
fn default_default_expires_s() -> u32 {
    3600
}
fn default_nonce_lifetime_s() -> u64 {
    300
}
fn default_algorithms() -> Vec<AlgorithmName> {
    vec![AlgorithmName::Md5]
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}
fn default_log_level() -> String {
    "info".into()
}

/// One problem found in a config file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Every problem found in one run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A config that parsed and validated, with the trunk networks compiled.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    pub trunks: Vec<Trunk>,
}

/// A trunk, ready for lookups.
#[derive(Debug, Clone)]
pub struct Trunk {
    pub name: String,
    pub nets: Vec<IpNet>,
    pub prefecture: Option<String>,
}

impl Loaded {
    /// A path from the config, resolved against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![Problem {
            file: path.to_owned(),
            line: 1,
            col: 1,
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse_str(path, &text)
}

/// Parse and validate config text (`path` is only for messages and relative paths).
pub fn parse_str(path: &Path, text: &str) -> Result<Loaded, ConfigErrors> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigErrors(vec![Problem {
            file: path.to_owned(),
            line,
            col,
            message: e.message().trim().to_owned(),
        }])
    })?;
    let mut problems = Vec::new();
    let at = |span: std::ops::Range<usize>, message: String| {
        let (line, col) = line_col(text, span.start);
        Problem {
            file: path.to_owned(),
            line,
            col,
            message,
        }
    };

    if config.sip.listen.is_empty() {
        problems.push(at(
            0..0,
            "sip.listen: at least one listener is needed".into(),
        ));
    }
    if config.tls.is_none() {
        for l in &config.sip.listen {
            if l.get_ref().transport == TransportName::Tls {
                problems.push(at(
                    l.span(),
                    format!(
                        "sip.listen: the TLS listener {} needs a [tls] section with cert_file and key_file",
                        l.get_ref().addr
                    ),
                ));
            }
        }
    }
    let overtake = &config.sip.invite_overtake_ms;
    if *overtake.get_ref() > 1000 {
        problems.push(at(
            overtake.span(),
            format!(
                "sip.invite_overtake_ms = {}: at most 1000 (ACKs and BYEs would wait that long behind INVITEs)",
                overtake.get_ref()
            ),
        ));
    }
    let t = &config.timers;
    if t.t1_ms == 0 || t.t2_ms < t.t1_ms || t.t4_ms == 0 {
        problems.push(at(
            0..0,
            "timers: need t1_ms > 0, t2_ms >= t1_ms and t4_ms > 0".into(),
        ));
    }
    let r = &config.registrar;
    if r.min_expires_s > r.max_expires_s
        || r.default_expires_s < r.min_expires_s
        || r.default_expires_s > r.max_expires_s
    {
        problems.push(at(
            0..0,
            "registrar: need min_expires_s <= default_expires_s <= max_expires_s".into(),
        ));
    }
    if r.algorithms.is_empty() {
        problems.push(at(
            0..0,
            "registrar.algorithms: offer at least one algorithm".into(),
        ));
    }
    if let Some(hex) = &config.sip.rr_secret_hex {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(at(0..0, "sip.rr_secret_hex: must be 64 hex digits".into()));
        }
    }

    if let Some(sc) = &config.store {
        if let Err(e) = sc.validate() {
            let start = text.find("[store]").unwrap_or(0);
            problems.push(at(start..start, e.to_string()));
        }
    }

    if let Some(h) = &config.ha {
        let start = text.find("[ha]").unwrap_or(0);
        for m in h.problems() {
            problems.push(at(start..start, m));
        }
        if config
            .store
            .as_ref()
            .and_then(|s| s.postgres_url.as_ref())
            .is_none()
        {
            problems.push(at(
                start..start,
                "[ha] needs [store] postgres_url: the pair keeps its CDRs, agent states and open calls in the shared database".into(),
            ));
        }
    }

    let mut trunks = Vec::new();
    let mut names = std::collections::HashSet::new();
    for tc in &config.trunks {
        if !names.insert(tc.name.get_ref().clone()) {
            problems.push(at(
                tc.name.span(),
                format!("duplicate trunk name `{}`", tc.name.get_ref()),
            ));
        }
        let mut nets = Vec::new();
        for s in &tc.sources {
            match parse_net(s.get_ref()) {
                Some(n) => nets.push(n),
                None => problems.push(at(
                    s.span(),
                    format!("`{}` is not an IP address or CIDR", s.get_ref()),
                )),
            }
        }
        if tc.sources.is_empty() {
            problems.push(at(
                tc.name.span(),
                format!("trunk `{}` has no sources", tc.name.get_ref()),
            ));
        }
        if let Some(u) = &tc.outbox_url {
            problems.push(at(
                u.span(),
                "`outbox_url` is no longer read; use `workorder_url` on the sub-center's [[lines]] \
                 entry in the dialplan (its work orders are POSTed there)"
                    .into(),
            ));
        }
        trunks.push(Trunk {
            name: tc.name.get_ref().clone(),
            nets,
            prefecture: tc.prefecture.clone(),
        });
    }

    let mut users = std::collections::HashSet::new();
    for a in &config.agents {
        let u = a.user.get_ref();
        if u.is_empty()
            || !u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            problems.push(at(
                a.user.span(),
                format!("agent user `{u}` must be letters, digits, - _ ."),
            ));
        }
        if !users.insert(u.clone()) {
            problems.push(at(a.user.span(), format!("duplicate agent `{u}`")));
        }
        if a.ha1_md5.is_none() && a.ha1_sha256.is_none() {
            problems.push(at(
                a.user.span(),
                format!("agent `{u}` needs ha1_md5 or ha1_sha256"),
            ));
        }
        for (h, len) in [(&a.ha1_md5, 32), (&a.ha1_sha256, 64)] {
            if let Some(h) = h {
                if h.get_ref().len() != len || !h.get_ref().bytes().all(|b| b.is_ascii_hexdigit()) {
                    problems.push(at(h.span(), format!("HA1 must be {len} hex digits")));
                }
            }
        }
        let algs = a
            .algorithms
            .as_ref()
            .unwrap_or(&config.registrar.algorithms);
        for alg in algs {
            let has = match alg {
                AlgorithmName::Md5 => a.ha1_md5.is_some(),
                AlgorithmName::Sha256 => a.ha1_sha256.is_some(),
            };
            if !has {
                problems.push(at(
                    a.user.span(),
                    format!("agent `{u}` is offered {alg:?} but has no HA1 for it"),
                ));
            }
        }
    }

    for (span, message) in
        crate::security::validate(&config.security, &config.classes, &config.agents)
    {
        problems.push(at(span, message));
    }

    if problems.is_empty() {
        Ok(Loaded {
            config,
            path: path.to_owned(),
            trunks,
        })
    } else {
        Err(ConfigErrors(problems))
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// 1-based line and column of byte offset `pos`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(pos, |i| pos - i - 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[sip]
listen = [{ transport = "udp", addr = "127.0.0.1:5060" }]
[registrar]
realm = "r"
state_file = "x"
"#;

    #[test]
    fn minimal_config_parses() {
        let l = parse_str(Path::new("t.toml"), MIN).unwrap();
        assert_eq!(l.config.timers.t1_ms, 500);
        assert_eq!(l.config.registrar.algorithms, vec![AlgorithmName::Md5]);
    }

    #[test]
    fn invite_overtake_defaults_to_10_ms_and_is_bounded_with_its_line() {
        let l = parse_str(Path::new("t.toml"), MIN).unwrap();
        assert_eq!(*l.config.sip.invite_overtake_ms.get_ref(), 10);
        let at = MIN.find("[sip]\n").expect("MIN has [sip]") + "[sip]\n".len();
        let text = format!("{}invite_overtake_ms = 5000\n{}", &MIN[..at], &MIN[at..]);
        let e = parse_str(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        let line = MIN[..at].lines().count() + 1;
        assert_eq!(e.0[0].line, line, "{e}");
        assert!(e.0[0].message.contains("invite_overtake_ms = 5000"), "{e}");
        let text = format!("{}invite_overtake_ms = 0\n{}", &MIN[..at], &MIN[at..]);
        let l = parse_str(Path::new("t.toml"), &text).unwrap();
        assert_eq!(*l.config.sip.invite_overtake_ms.get_ref(), 0);
    }

    #[test]
    fn unknown_field_is_refused_with_line_and_column() {
        let text = MIN.replace("realm = \"r\"", "realm = \"r\"\nrelam = 1");
        let e = parse_str(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!((e.0[0].line, e.0[0].col), (6, 1));
        assert!(
            e.0[0].message.contains("unknown field `relam`"),
            "{}",
            e.0[0].message
        );
        assert!(e.to_string().starts_with("t.toml:6:1: "));
    }

    #[test]
    fn every_semantic_problem_is_reported_in_one_run() {
        let text = format!(
            "{MIN}\n[[trunks]]\nname = \"a\"\nsources = [\"not-an-ip\"]\n[[agents]]\nuser = \"8001\"\nha1_md5 = \"abc\"\n"
        );
        let e = parse_str(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert_eq!(e.0[0].line, 10);
        assert!(e.0[0].message.contains("not-an-ip"));
        assert_eq!(e.0[1].line, 13);
    }

    #[test]
    fn a_bad_ha_section_is_refused_with_its_line_and_every_problem() {
        let text = format!(
            "{MIN}[store]\npath = \"db\"\n[ha]\npostgres_url = \"postgresql://u@127.0.0.1/x\"\nnode = \"b-1\"\nheartbeat_ms = 10\nfence_after_ms = 5\nmax_call_s = 0\n"
        );
        let e = parse_str(Path::new("t.toml"), &text).unwrap_err();
        let msgs: Vec<&str> = e.0.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(e.0.len(), 5, "{e}");
        assert!(e.0.iter().all(|p| p.line == 9), "{e}");
        for key in [
            "ha.node",
            "ha.heartbeat_ms",
            "ha.fence_after_ms",
            "ha.max_call_s",
            "postgres_url",
        ] {
            assert!(msgs.iter().any(|m| m.contains(key)), "{key}: {e}");
        }
        let ok = format!(
            "{MIN}[store]\npostgres_url = \"postgresql://u@127.0.0.1/x\"\n[ha]\npostgres_url = \"postgresql://u@127.0.0.1/x\"\nnode = \"b\"\n"
        );
        let l = parse_str(Path::new("t.toml"), &ok).unwrap();
        assert_eq!(l.config.ha.map(|h| h.max_call_s), Some(4 * 3600));
    }

    #[test]
    fn a_trunk_outbox_url_and_a_bad_store_section_are_refused_with_their_line() {
        // The work-order endpoint moved to the dialplan's sub-center line (`workorder_url`): an
        // old config is refused with the line to change, not run with deliveries silently off.
        let text = format!(
            "{MIN}[store]\npath = \"db\"\nnode = \"a-b\"\n[[trunks]]\nname = \"s\"\nsources = [\"127.0.2.1\"]\noutbox_url = \"http://127.0.2.1:8080/workorders\"\n"
        );
        let e = parse_str(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert_eq!(e.0[0].line, 7, "{e}");
        assert!(e.0[0].message.contains("store.node"), "{e}");
        assert_eq!(e.0[1].to_string(), "t.toml:13:14: `outbox_url` is no longer read; use `workorder_url` on the sub-center's [[lines]] entry in the dialplan (its work orders are POSTed there)");
        let text = format!(
            "{MIN}[[trunks]]\nname = \"s\"\nsources = [\"127.0.2.1\"]\noutbox_ur = \"x\"\n"
        );
        let e = parse_str(Path::new("t.toml"), &text).unwrap_err();
        assert!(e.to_string().starts_with("t.toml:10:1: "), "{e}");
        let ok = format!("{MIN}[[trunks]]\nname = \"s\"\nsources = [\"127.0.2.1\"]\n");
        assert!(parse_str(Path::new("t.toml"), &ok).is_ok());
    }

    #[test]
    fn a_tls_listener_needs_a_tls_section() {
        let text = MIN.replace(
            "listen = [{ transport = \"udp\", addr = \"127.0.0.1:5060\" }]",
            "listen = [{ transport = \"udp\", addr = \"127.0.0.1:5060\" },\n  { transport = \"tls\", addr = \"127.0.0.1:5061\" }]",
        );
        let e = parse_str(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].line, e.0[0].col), (4, 3), "{e}");
        assert!(e.0[0].message.contains("[tls]"), "{e}");
        let with = format!("{text}[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n");
        let l = parse_str(Path::new("t.toml"), &with).unwrap();
        assert_eq!(
            l.config.sip.listen[1].get_ref().transport,
            TransportName::Tls
        );
        let tls = l.config.tls.expect("[tls]");
        assert!(!tls.verify_clients && tls.ca_file.is_none());
        let typo = format!("{with}cert_fil = \"x\"\n");
        assert!(parse_str(Path::new("t.toml"), &typo).is_err());
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
