//! The `[security]` config section and the class-of-service tables (`[[classes]]`): what the flood
//! guard, the authentication lockout, overload control and toll-fraud checks are told.
//!
//! Parsed with the rest of the config (`deny_unknown_fields`, every problem as file:line:col);
//! SECURITY.md explains the threat model these knobs answer.

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// `[security]`: every field has a safe default, so the section may be left out.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Sources (IP or CIDR) ops trust: never rate-limited, banned or locked out (an office NAT, the
    /// monitoring host). Trunks and PSAPs are exempt anyway.
    #[serde(default)]
    pub whitelist: Vec<Spanned<String>>,
    /// Per-source request rate limits with temporary bans.
    #[serde(default)]
    pub flood: FloodConfig,
    /// Failed digest authentications: lockout with backoff.
    #[serde(default)]
    pub lockout: LockoutConfig,
    /// Overload control: beyond capacity new non-emergency INVITEs get 503.
    #[serde(default)]
    pub overload: OverloadConfig,
}

/// `[security.flood]`: a token bucket per source address (pike-like), REGISTER with its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloodConfig {
    /// Sustained requests per second per source (all methods except REGISTER).
    #[serde(default = "d_requests_per_s")]
    pub requests_per_s: u32,
    /// Requests a source may send at once above the sustained rate.
    #[serde(default = "d_requests_burst")]
    pub requests_burst: u32,
    /// Sustained REGISTERs per second per source.
    #[serde(default = "d_register_per_s")]
    pub register_per_s: u32,
    /// REGISTERs a source may send at once.
    #[serde(default = "d_register_burst")]
    pub register_burst: u32,
    /// Extra REGISTER burst per binding already registered from the source (many phones behind
    /// one NAT address re-registering after an outage).
    #[serde(default = "d_register_burst_per_binding")]
    pub register_burst_per_binding: u32,
    /// How long a source that kept sending over its budget is ignored, in seconds.
    #[serde(default = "d_ban_s")]
    pub ban_s: u64,
    /// Most sources tracked; beyond it new sources share one bucket (memory stays bounded).
    #[serde(default = "d_max_sources")]
    pub max_sources: usize,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            requests_per_s: d_requests_per_s(),
            requests_burst: d_requests_burst(),
            register_per_s: d_register_per_s(),
            register_burst: d_register_burst(),
            register_burst_per_binding: d_register_burst_per_binding(),
            ban_s: d_ban_s(),
            max_sources: d_max_sources(),
        }
    }
}

/// `[security.lockout]`: failed digest authentications per account and per source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {
    /// Failures (wrong password or unknown user) within `window_s` that lock the account or source.
    #[serde(default = "d_max_failures")]
    pub max_failures: u32,
    /// The window failures are counted in, in seconds.
    #[serde(default = "d_window_s")]
    pub window_s: u64,
    /// The first lockout, in seconds; each further one doubles it.
    #[serde(default = "d_lock_s")]
    pub lock_s: u64,
    /// The longest lockout, in seconds.
    #[serde(default = "d_max_lock_s")]
    pub max_lock_s: u64,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures: d_max_failures(),
            window_s: d_window_s(),
            lock_s: d_lock_s(),
            max_lock_s: d_max_lock_s(),
        }
    }
}

/// `[security.overload]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadConfig {
    /// Live SIP transactions (server + client) beyond which a new non-emergency INVITE gets 503.
    /// At twice this, requests from addresses without a registered phone are dropped unparsed
    /// (trunks, PSAPs and registered phones still pass): the hard bound on the core's state.
    #[serde(default = "d_max_transactions")]
    pub max_transactions: usize,
    /// `Retry-After` of that 503, in seconds.
    #[serde(default = "d_retry_after_s")]
    pub retry_after_s: u32,
    /// `oc-validity` (RFC 7339) sent to upstreams that support overload control, in milliseconds.
    #[serde(default = "d_oc_validity_ms")]
    pub oc_validity_ms: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            max_transactions: d_max_transactions(),
            retry_after_s: d_retry_after_s(),
            oc_validity_ms: d_oc_validity_ms(),
        }
    }
}

/// One class of service (`[[classes]]`): what an agent of this class may dial.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Name agents refer to (`class = "..."`). A class named `default` replaces the built-in one.
    pub name: Spanned<String>,
    /// Categories: `internal` (agents' numbers), `hotline` (12345 and the lines merged into it or
    /// dual lines: transfers), `subcenter` (sub-center lines). Emergency numbers are always allowed.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Further numbers, as digit patterns: `X` is any digit, a trailing `*` any rest
    /// (`0971XXXXXXX`, `400*`).
    #[serde(default)]
    pub outbound: Vec<Spanned<String>>,
}

/// Parse an IP or CIDR.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// Whether `p` is a valid outbound pattern.
pub fn valid_pattern(p: &str) -> bool {
    let body = p.strip_suffix('*').unwrap_or(p);
    !p.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'X' || b == b'+')
}

/// Every problem in the security section and the classes, as (span, message).
pub fn validate(
    sec: &SecurityConfig,
    classes: &[ClassConfig],
    agents: &[crate::config::AgentConfig],
) -> Vec<(std::ops::Range<usize>, String)> {
    let mut p = Vec::new();
    for w in &sec.whitelist {
        if parse_net(w.get_ref()).is_none() {
            p.push((
                w.span(),
                format!("`{}` is not an IP address or CIDR", w.get_ref()),
            ));
        }
    }
    let f = &sec.flood;
    if f.requests_per_s == 0 || f.requests_burst == 0 || f.register_per_s == 0 {
        p.push((
            0..0,
            "security.flood: rates and bursts must be above 0".into(),
        ));
    }
    if sec.lockout.max_failures == 0 || sec.lockout.lock_s > sec.lockout.max_lock_s {
        p.push((
            0..0,
            "security.lockout: need max_failures > 0 and lock_s <= max_lock_s".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for c in classes {
        if !names.insert(c.name.get_ref().as_str()) {
            p.push((
                c.name.span(),
                format!("duplicate class `{}`", c.name.get_ref()),
            ));
        }
        for a in &c.allow {
            if !["internal", "hotline", "subcenter"].contains(&a.get_ref().as_str()) {
                p.push((
                    a.span(),
                    format!(
                        "unknown category `{}` (internal, hotline, subcenter; emergency is always allowed)",
                        a.get_ref()
                    ),
                ));
            }
        }
        for o in &c.outbound {
            if !valid_pattern(o.get_ref()) {
                p.push((
                    o.span(),
                    format!(
                        "`{}` is not a number pattern (digits, X, a trailing *)",
                        o.get_ref()
                    ),
                ));
            }
        }
    }
    for a in agents {
        if let Some(c) = &a.class {
            if c.get_ref() != "default" && !names.contains(c.get_ref().as_str()) {
                p.push((
                    c.span(),
                    format!("no class `{}` in [[classes]]", c.get_ref()),
                ));
            }
        }
    }
    p
}

fn d_requests_per_s() -> u32 {
    50
}
fn d_requests_burst() -> u32 {
    200
}
fn d_register_per_s() -> u32 {
    5
}
fn d_register_burst() -> u32 {
    40
}
fn d_register_burst_per_binding() -> u32 {
    4
}
fn d_ban_s() -> u64 {
    300
}
fn d_max_sources() -> usize {
    65_536
}
fn d_max_failures() -> u32 {
    5
}
fn d_window_s() -> u64 {
    300
}
fn d_lock_s() -> u64 {
    60
}
fn d_max_lock_s() -> u64 {
    3600
}
fn d_max_transactions() -> usize {
    20_000
}
fn d_retry_after_s() -> u32 {
    10
}
fn d_oc_validity_ms() -> u32 {
    5000
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const MIN: &str = r#"
[sip]
listen = [{ transport = "udp", addr = "127.0.0.1:5060" }]
[registrar]
realm = "r"
state_file = "x"
"#;

    #[test]
    fn security_problems_are_reported_with_their_place() {
        let text = format!(
            "{MIN}[security]\nwhitelist = [\"10.0.0.0/33\"]\n[[classes]]\nname = \"c\"\nallow = [\"international\"]\noutbound = [\"09a*\"]\n[[agents]]\nuser = \"8001\"\nha1_md5 = \"bbb2941e17dff7e05ca8a7fd2cfbf3a4\"\nclass = \"nosuch\"\n"
        );
        let e = crate::config::parse_str(Path::new("t.toml"), &text).unwrap_err();
        let lines: Vec<usize> = e.0.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![8, 11, 12, 16], "{e}");
        assert!(e.to_string().contains("no class `nosuch`"), "{e}");
        let ok = format!(
            "{MIN}[security]\nwhitelist = [\"10.0.0.0/8\", \"192.0.2.1\"]\n[security.flood]\nban_s = 60\n[[classes]]\nname = \"c\"\nallow = [\"hotline\"]\noutbound = [\"0971XXXXXXX\", \"400*\"]\n"
        );
        let l = crate::config::parse_str(Path::new("t.toml"), &ok).unwrap();
        assert_eq!(l.config.security.flood.ban_s, 60);
        assert_eq!(l.config.security.flood.requests_per_s, 50);
    }
}
