//! Checks for the two kinds of address a plan names: sub-center SIP targets and work-order URLs.
//!
//! Checked at load time so that a typo shows up on `switchboard check`, not as a failed transfer
//! in the middle of a call.

use std::fmt;
use std::net::Ipv6Addr;

/// What is wrong with a SIP target or a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriProblem {
    /// Not `sip:`/`sips:` (targets) or `http://` (work-order URLs).
    #[error("the scheme must be {expected}")]
    Scheme {
        /// The schemes allowed here.
        expected: &'static str,
    },
    /// A user part in a target: the switchboard puts the dialed number there itself.
    #[error("a target has no user part (the dialed number is kept as the user)")]
    UserPart,
    /// No host, or one with characters a host name cannot have.
    #[error("the host is missing or not an IP address or host name")]
    Host,
    /// A port that is not 1 to 65535.
    #[error("the port must be 1 to 65535")]
    Port,
    /// A URI parameter other than `transport=udp|tcp|tls`.
    #[error("the only parameter allowed is transport=udp, tcp or tls")]
    Parameter,
}

/// Transport a sub-center target asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `;transport=udp`
    Udp,
    /// `;transport=tcp`
    Tcp,
    /// `;transport=tls`
    Tls,
}

/// A sub-center SIP target, checked and split.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SipTarget {
    /// The target as written in the plan, e.g. `sip:127.0.2.1:5060`.
    pub uri: Box<str>,
    /// `sips:` was used.
    pub secure: bool,
    /// Host: an IPv4 address, a bracketed IPv6 address or a host name.
    pub host: Box<str>,
    /// The port, when given; otherwise the SIP default (RFC 3263) applies.
    pub port: Option<u16>,
    /// The `transport` parameter, when given.
    pub transport: Option<Transport>,
}

impl fmt::Display for SipTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`, not indexing: `s` comes from the wire and may have a UTF-8 character across the cut.
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

/// Splits `host[:port]` and checks both.
fn host_port(hp: &str) -> Result<(&str, Option<u16>), UriProblem> {
    let (host, port) = if let Some(rest) = hp.strip_prefix('[') {
        let close = rest.find(']').ok_or(UriProblem::Host)?;
        rest[..close]
            .parse::<Ipv6Addr>()
            .map_err(|_| UriProblem::Host)?;
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriProblem::Host),
        };
        (&hp[..close + 2], port)
    } else {
        match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    };
    if !host.starts_with('[') {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(UriProblem::Host);
        }
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(UriProblem::Port),
        },
    };
    Ok((host, port))
}

/// Reads a trunk target (a sub-center's, or a PSAP's for the emergency bridge): `sip:` or `sips:`,
/// a host, an optional port, an optional transport.
pub fn parse_sip_target(s: &str) -> Result<SipTarget, UriProblem> {
    const EXPECTED: UriProblem = UriProblem::Scheme {
        expected: "sip: or sips:",
    };
    let (secure, rest) = match strip_prefix_ci(s, "sips:") {
        Some(r) => (true, r),
        None => (false, strip_prefix_ci(s, "sip:").ok_or(EXPECTED)?),
    };
    if rest.contains('@') {
        return Err(UriProblem::UserPart);
    }
    let mut parts = rest.split(';');
    let (host, port) = host_port(parts.next().unwrap_or_default())?;
    let mut transport = None;
    for param in parts {
        let (name, value) = param.split_once('=').ok_or(UriProblem::Parameter)?;
        if !name.eq_ignore_ascii_case("transport") || transport.is_some() {
            return Err(UriProblem::Parameter);
        }
        transport = Some(match value.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => return Err(UriProblem::Parameter),
        });
    }
    Ok(SipTarget {
        uri: s.into(),
        secure,
        host: host.into(),
        port,
        transport,
    })
}

/// Checks a work-order endpoint: `http://`, a host, an optional port and path. Not `https://`:
/// the daemon's outbox, which POSTs to it, has no TLS client (put a TLS proxy on the sub-center's
/// network if the link needs one).
pub fn check_http_url(s: &str) -> Result<(), UriProblem> {
    let rest = strip_prefix_ci(s, "http://").ok_or(UriProblem::Scheme {
        expected: "http:// (the outbox has no TLS client)",
    })?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(UriProblem::UserPart);
    }
    host_port(authority)?;
    if rest[end..]
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(UriProblem::Host);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_scheme_is_refused_without_panic() {
        assert!(parse_sip_target("s\u{14f}s\u{14f}:1@h").is_err());
        assert!(parse_sip_target("\u{5f20}\u{4e09}").is_err());
    }

    #[test]
    fn sip_targets() {
        let t = parse_sip_target("sip:127.0.2.1:5060").unwrap();
        assert_eq!(
            (&*t.host, t.port, t.secure, t.transport),
            ("127.0.2.1", Some(5060), false, None)
        );
        let t = parse_sip_target("SIPS:gw.tax.example;transport=TLS").unwrap();
        assert_eq!(
            (&*t.host, t.port, t.secure, t.transport),
            ("gw.tax.example", None, true, Some(Transport::Tls))
        );
        let t = parse_sip_target("sip:[::1]:5062").unwrap();
        assert_eq!((&*t.host, t.port), ("[::1]", Some(5062)));
        assert_eq!(
            parse_sip_target("127.0.2.1:5060"),
            Err(UriProblem::Scheme {
                expected: "sip: or sips:"
            })
        );
        assert_eq!(
            parse_sip_target("http://x"),
            Err(UriProblem::Scheme {
                expected: "sip: or sips:"
            })
        );
        assert_eq!(
            parse_sip_target("sip:12366@127.0.2.1"),
            Err(UriProblem::UserPart)
        );
        assert_eq!(parse_sip_target("sip:"), Err(UriProblem::Host));
        assert_eq!(parse_sip_target("sip:bad host"), Err(UriProblem::Host));
        assert_eq!(parse_sip_target("sip:h:0"), Err(UriProblem::Port));
        assert_eq!(parse_sip_target("sip:h:70000"), Err(UriProblem::Port));
        assert_eq!(parse_sip_target("sip:h:+5"), Err(UriProblem::Port));
        assert_eq!(parse_sip_target("sip:h;lr"), Err(UriProblem::Parameter));
        assert_eq!(
            parse_sip_target("sip:h;transport=sctp"),
            Err(UriProblem::Parameter)
        );
        assert_eq!(parse_sip_target("sip:[::1"), Err(UriProblem::Host));
    }

    #[test]
    fn http_urls() {
        assert_eq!(check_http_url("http://127.0.2.1:8080/workorders"), Ok(()));
        assert_eq!(check_http_url("HTTP://wo.example.gov.cn"), Ok(()));
        for bad in ["ftp://x", "https://wo.example.gov.cn"] {
            assert_eq!(
                check_http_url(bad),
                Err(UriProblem::Scheme {
                    expected: "http:// (the outbox has no TLS client)"
                })
            );
        }
        assert_eq!(check_http_url("http:///path"), Err(UriProblem::Host));
        assert_eq!(check_http_url("http://u:p@h/"), Err(UriProblem::UserPart));
        assert_eq!(check_http_url("http://h:99999/"), Err(UriProblem::Port));
        assert_eq!(check_http_url("http://h/a b"), Err(UriProblem::Host));
    }
}
