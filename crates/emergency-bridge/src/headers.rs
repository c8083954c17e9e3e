//! Headers the bridge adds to a call it hands to a PSAP: its priority, and its link back to the
//! 12345 call and work order.

use dialplan::EmergencyService;

/// Name of the RFC 4412 priority header.
pub const RESOURCE_PRIORITY: &str = "Resource-Priority";

/// The `Resource-Priority` value for a call to a PSAP, in RFC 7135's `esnet` namespace.
///
/// RFC 7135 gives `esnet` five levels, `esnet.0` (lowest) to `esnet.4` (highest), and leaves the
/// assignment to the emergency network's policy. Ours:
/// - `esnet.2` for police (110), fire (119) and ambulance (120): a life may be at stake, and these
///   must win over every other call when a PSAP link or the switchboard is congested;
/// - `esnet.1` for traffic accidents (122): still an emergency, but an injured person is reported
///   to 120 as well, so 122 yields to the three life-safety lines under congestion;
/// - `esnet.3` and `esnet.4` stay free for traffic between PSAPs and responders, which RFC 7135
///   also covers and which must be able to overtake calls from the public.
///
/// The header goes without `Require: resource-priority`: a PSAP that does not know the header must
/// ignore it and take the call, rather than refuse it with 420.
pub fn resource_priority(service: EmergencyService) -> &'static str {
    match service {
        EmergencyService::Police | EmergencyService::Fire | EmergencyService::Ambulance => {
            "esnet.2"
        }
        EmergencyService::Traffic => "esnet.1",
    }
}

/// Name of the header that links a PSAP call to the 12345 call and work order it came from:
/// `X-12345-Linkage: call=<12345 call id>;workorder=<work-order id>`.
///
/// A private header rather than RFC 7852's `Call-Info; purpose=emergency-CallId`: the PSAPs behind
/// 110/119/120 do not speak RFC 7852, and their integrators ask for one plain header to log and to
/// send back when a matter returns from 110 to 12345 (the linkage runs both ways, and
/// [`parse_linkage`] reads it on the way back). The `X-` prefix, which RFC 6648 discourages for
/// new standards, marks it plainly as this platform's own.
pub const LINKAGE_HEADER: &str = "X-12345-Linkage";

/// Longest id accepted in a linkage header: ours are far shorter, and a bound keeps a relayed
/// header from growing without limit.
pub const MAX_LINKAGE_ID_BYTES: usize = 256;

/// The ids a linkage header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linkage {
    /// The 12345 call id (the CDR's id, or the caller leg's Call-ID).
    pub call: String,
    /// The work order opened for the matter, when there is one yet.
    pub work_order: Option<String>,
}

/// Why a linkage value cannot be built or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkageError {
    /// An id that is empty.
    #[error("an empty id")]
    Empty,
    /// An id longer than [`MAX_LINKAGE_ID_BYTES`].
    #[error("an id longer than {MAX_LINKAGE_ID_BYTES} bytes")]
    TooLong,
    /// A control character (CR, LF ...): it would let an id end the header and inject another.
    #[error("a control character in an id")]
    Control,
    /// A value that is not `;`-separated `name=value` parameters.
    #[error("not a list of name=value parameters")]
    Syntax,
    /// No `call` parameter.
    #[error("no call parameter")]
    NoCall,
}

/// RFC 3261 `token` characters: these need no quotes in a parameter value.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn push_param(out: &mut String, name: &str, id: &str) -> Result<(), LinkageError> {
    if id.is_empty() {
        return Err(LinkageError::Empty);
    }
    if id.len() > MAX_LINKAGE_ID_BYTES {
        return Err(LinkageError::TooLong);
    }
    if id.chars().any(char::is_control) {
        return Err(LinkageError::Control);
    }
    if !out.is_empty() {
        out.push(';');
    }
    out.push_str(name);
    out.push('=');
    if id.bytes().all(is_token) {
        out.push_str(id);
    } else {
        // A Call-ID may hold `@`, `<`, `"` and more; a quoted-string carries them all.
        out.push('"');
        for c in id.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    Ok(())
}

/// The [`LINKAGE_HEADER`] value for a call and, when there is one, its work order:
/// `call=8f2c@10.0.0.1` is quoted (`call="8f2c@10.0.0.1"`) since `@` is not a token character.
pub fn linkage_value(call: &str, work_order: Option<&str>) -> Result<String, LinkageError> {
    let mut out = String::with_capacity(call.len() + work_order.map_or(0, str::len) + 24);
    push_param(&mut out, "call", call)?;
    if let Some(w) = work_order {
        push_param(&mut out, "workorder", w)?;
    }
    Ok(out)
}

/// Reads a [`LINKAGE_HEADER`] value, such as one a PSAP sends back with a call into 12345.
/// Parameter names are matched without regard to case; unknown parameters are skipped, so that
/// a PSAP may add its own incident id.
pub fn parse_linkage(value: &str) -> Result<Linkage, LinkageError> {
    let mut call = None;
    let mut work_order = None;
    let mut rest = value.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or(LinkageError::Syntax)?;
        let name = rest[..eq].trim();
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(LinkageError::Syntax);
        }
        let after = rest[eq + 1..].trim_start();
        let (id, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut id = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => id.push(chars.next().ok_or(LinkageError::Syntax)?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => id.push(c),
                }
            }
            (id, &quoted[end.ok_or(LinkageError::Syntax)?..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        if id.is_empty() {
            return Err(LinkageError::Empty);
        }
        if id.len() > MAX_LINKAGE_ID_BYTES {
            return Err(LinkageError::TooLong);
        }
        if id.chars().any(char::is_control) {
            return Err(LinkageError::Control);
        }
        if name.eq_ignore_ascii_case("call") {
            call = Some(id);
        } else if name.eq_ignore_ascii_case("workorder") {
            work_order = Some(id);
        }
        let tail = tail.trim_start();
        rest = match tail.strip_prefix(';') {
            Some(t) => t.trim_start(),
            None if tail.is_empty() => tail,
            None => return Err(LinkageError::Syntax),
        };
    }
    Ok(Linkage {
        call: call.ok_or(LinkageError::NoCall)?,
        work_order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_per_service() {
        assert_eq!(resource_priority(EmergencyService::Police), "esnet.2");
        assert_eq!(resource_priority(EmergencyService::Fire), "esnet.2");
        assert_eq!(resource_priority(EmergencyService::Ambulance), "esnet.2");
        assert_eq!(resource_priority(EmergencyService::Traffic), "esnet.1");
    }

    #[test]
    fn linkage_round_trips() {
        let v = linkage_value("cdr-20240501-000042", Some("QH-2024-000123")).unwrap();
        assert_eq!(v, "call=cdr-20240501-000042;workorder=QH-2024-000123");
        assert_eq!(
            parse_linkage(&v).unwrap(),
            Linkage {
                call: "cdr-20240501-000042".into(),
                work_order: Some("QH-2024-000123".into()),
            }
        );
        let v = linkage_value("a84b4c76e66710@pc33.example.com", None).unwrap();
        assert_eq!(v, "call=\"a84b4c76e66710@pc33.example.com\"");
        assert_eq!(
            parse_linkage(&v).unwrap().call,
            "a84b4c76e66710@pc33.example.com"
        );
        let odd = "x\"y\\z;w=1";
        let v = linkage_value(odd, Some("wo 1")).unwrap();
        assert_eq!(v, "call=\"x\\\"y\\\\z;w=1\";workorder=\"wo 1\"");
        let l = parse_linkage(&v).unwrap();
        assert_eq!(
            (l.call.as_str(), l.work_order.as_deref()),
            (odd, Some("wo 1"))
        );
    }

    #[test]
    fn linkage_refuses_injection_and_garbage() {
        assert_eq!(
            linkage_value("abc\r\nVia: evil", None),
            Err(LinkageError::Control)
        );
        assert_eq!(linkage_value("", None), Err(LinkageError::Empty));
        assert_eq!(linkage_value("c", Some("")), Err(LinkageError::Empty));
        assert_eq!(
            linkage_value(&"x".repeat(MAX_LINKAGE_ID_BYTES + 1), None),
            Err(LinkageError::TooLong)
        );
        assert_eq!(parse_linkage("workorder=1"), Err(LinkageError::NoCall));
        assert_eq!(parse_linkage("call"), Err(LinkageError::Syntax));
        assert_eq!(parse_linkage("call=\"open"), Err(LinkageError::Syntax));
        assert_eq!(parse_linkage("call=\"a\"b"), Err(LinkageError::Syntax));
        assert_eq!(parse_linkage("call="), Err(LinkageError::Empty));
        // Case, spaces and a PSAP's own parameters are tolerated.
        let l = parse_linkage(" CALL = c1 ; incident=110-77 ; WorkOrder=\"w 2\" ").unwrap();
        assert_eq!(
            (l.call.as_str(), l.work_order.as_deref()),
            ("c1", Some("w 2"))
        );
    }
}
