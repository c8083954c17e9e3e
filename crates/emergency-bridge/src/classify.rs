//! Is this request an emergency call, and for which service?
//!
//! This runs before anything else looks at a request (digest challenge, rate limits, dialplan,
//! queues), so it must be cheap and must not fail closed: whatever it cannot read is simply not an
//! emergency, and the ordinary path then decides.

use dialplan::{CompiledPlan, Decision, EmergencyService, PrefectureId};

/// The service an emergency request asks for, or `None` for every other request.
///
/// `request_uri` is the Request-URI as received (sip-core's `Request::uri()`), or a `Refer-To`
/// value for a hand-off; `dialed_user` is its user part when the caller already has it
/// (`Request::uri_user()`), and `None` (or empty) lets the plan take it out of `request_uri`.
///
/// Two forms are emergency calls:
/// - a service URN of RFC 5031, `urn:service:sos` and its sub-services (see [`service_urn`]);
/// - one of the plan's emergency numbers ([`CompiledPlan::emergency_numbers`], by default 110,
///   119, 120 and 122), in any form the plan's normalization reads: bare, `sip:`/`sips:`/`tel:`,
///   with `+86`, `0086` or `86`, and with a carrier's area-code prefix (`0971110`,
///   `tel:+86-971-110`). The plan's own routing table decides, so the list cannot drift from what
///   the dialplan refuses to queue.
pub fn classify(
    request_uri: &str,
    dialed_user: Option<&str>,
    plan: &CompiledPlan,
) -> Option<EmergencyService> {
    if let Some(service) = service_urn(request_uri) {
        return Some(service);
    }
    let dialed = dialed_user
        .filter(|u| !u.trim().is_empty())
        .unwrap_or(request_uri);
    // The caller and trunk only pick the prefecture, which is not asked for here.
    match plan.route(dialed, "", None) {
        Decision::Emergency { service, .. } => Some(service),
        _ => None,
    }
}

/// The service of an RFC 5031 emergency service URN, or `None` when `uri` is not one.
///
/// Accepted as a bare URI or in angle brackets (`<urn:service:sos.fire>`, as in `Refer-To`); the
/// scheme, `service` and the service labels are matched without regard to case, as RFC 5031 §3
/// asks. Mapping:
/// - `sos.police` → police (110), `sos.fire` → fire (119), `sos.ambulance` → ambulance (120);
/// - the medical sub-services `sos.physician` and `sos.poison` → ambulance, since in China 120
///   dispatches both doctors and poison help;
/// - plain `sos`, and every other sub-service (`sos.marine`, `sos.mountain`, `sos.gas`,
///   `sos.animal-control`, or one registered after this was written) → police. 110 is China's
///   general emergency number and coordinates the others, and RFC 5222 (LoST) likewise falls back
///   to the parent service when it does not know a sub-service. A call must never be lost
///   because its URN is more specific than we know.
///
/// A deeper label (`sos.fire.forest`) maps like its first sub-service. RFC 5031 has no traffic
/// sub-service; a 122 call arrives as a number.
pub fn service_urn(uri: &str) -> Option<EmergencyService> {
    let mut s = uri.trim();
    if let Some(open) = s.find('<') {
        s = &s[open + 1..];
        if let Some(close) = s.find('>') {
            s = &s[..close];
        }
    }
    let rest = strip_prefix_ci(s.trim(), "urn:service:")?;
    let end = rest.find([';', '?']).unwrap_or(rest.len());
    let service = &rest[..end];
    if !service
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    let mut labels = service.split('.');
    if !labels.next()?.eq_ignore_ascii_case("sos") {
        return None;
    }
    let Some(sub) = labels.next() else {
        return Some(EmergencyService::Police);
    };
    let is = |name: &str| sub.eq_ignore_ascii_case(name);
    Some(if is("fire") {
        EmergencyService::Fire
    } else if is("ambulance") || is("physician") || is("poison") {
        EmergencyService::Ambulance
    } else {
        EmergencyService::Police
    })
}

/// The prefecture whose PSAP takes an emergency call, by the dialplan's rules: the area code the
/// carrier prefixed to the dialed number, then a fixed-line caller number's area code, then the
/// trunk's configured prefecture (a center id), then the province.
///
/// Unlike [`CompiledPlan::caller_prefecture`] this takes the dialed string as received, so that a
/// `urn:service:sos` call (which has no number to normalize) still gets the caller's and the
/// trunk's prefecture. For an agent's hand-off, pass the caller and trunk of the call being handed
/// off, not the agent's: the PSAP is the caller's.
pub fn caller_prefecture(
    plan: &CompiledPlan,
    dialed: &str,
    caller: &str,
    trunk_prefecture: Option<&str>,
) -> PrefectureId {
    match plan.normalize(dialed) {
        Ok(normalized) => plan.caller_prefecture(&normalized, caller, trunk_prefecture),
        Err(_) => plan
            .caller_area(caller)
            .or_else(|| trunk_prefecture.and_then(|t| plan.prefecture_by_id(t)))
            .unwrap_or(PrefectureId::PROVINCE),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
    .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_plan::qinghai;
    use EmergencyService::{Ambulance, Fire, Police, Traffic};

    #[test]
    fn numbers_in_every_form() {
        let plan = qinghai();
        for (uri, service) in [
            ("sip:110@127.0.0.1", Police),
            ("sip:119@127.0.0.1;user=phone", Fire),
            ("SIPS:120@gw.example", Ambulance),
            ("sip:122@[::1]:5060", Traffic),
            ("tel:110", Police),
            ("tel:+86110", Police),
            ("tel:+86-971-119;phone-context=+86", Fire),
            ("sip:+86120@gw", Ambulance),
            ("sip:0086122@gw", Traffic),
            ("sip:86110@gw", Police),
            ("sip:0971110@gw", Police),
            ("sip:0979-119@gw", Fire),
            ("sip:+860976120@gw", Ambulance),
            ("sip:+86976122@gw", Traffic),
            ("<sip:110@10.0.0.1>", Police),
            ("110", Police),
        ] {
            assert_eq!(classify(uri, None, &plan), Some(service), "{uri}");
        }
    }

    #[test]
    fn the_user_part_given_wins_over_the_uri() {
        let plan = qinghai();
        // sip-core hands over `uri_user()`; the URI itself is then only checked for a URN.
        assert_eq!(
            classify("tel:+86-972-110", Some("+86-972-110"), &plan),
            Some(Police)
        );
        assert_eq!(
            classify("sip:0972120@gw", Some("0972120"), &plan),
            Some(Ambulance)
        );
        // An empty user part falls back to the URI.
        assert_eq!(classify("sip:119@gw", Some(""), &plan), Some(Fire));
    }

    #[test]
    fn not_emergencies() {
        let plan = qinghai();
        for uri in [
            "sip:12345@127.0.0.1",
            "sip:097112345@gw",
            "sip:12315@gw",
            "sip:1100@gw",
            "sip:11@gw",
            "sip:01010110@gw",
            "sip:+44110@gw",
            "sip:alice@example.com",
            "sip:8001@127.0.0.1",
            "sip:gw.example",
            "tel:",
            "",
            "urn:service:counseling",
            "urn:service:sosx",
            "urn:nena:service:sos",
        ] {
            assert_eq!(classify(uri, None, &plan), None, "{uri}");
        }
    }

    #[test]
    fn service_urns() {
        for (uri, service) in [
            ("urn:service:sos", Police),
            ("URN:Service:SOS", Police),
            ("urn:service:sos.police", Police),
            ("urn:service:sos.fire", Fire),
            ("urn:service:sos.ambulance", Ambulance),
            ("urn:service:sos.physician", Ambulance),
            ("urn:service:sos.poison", Ambulance),
            ("urn:service:sos.Fire.forest", Fire),
            ("urn:service:sos.marine", Police),
            ("urn:service:sos.mountain", Police),
            ("urn:service:sos.gas", Police),
            ("urn:service:sos.animal-control", Police),
            ("urn:service:sos.something-new", Police),
            ("<urn:service:sos.ambulance>", Ambulance),
            ("\"Help\" <urn:service:sos.fire>;tag=1", Fire),
            ("urn:service:sos;x=1", Police),
        ] {
            assert_eq!(service_urn(uri), Some(service), "{uri}");
            assert_eq!(classify(uri, None, &qinghai()), Some(service), "{uri}");
        }
        for uri in [
            "urn:service:",
            "urn:service:counseling",
            "urn:service:counseling.children",
            "urn:service:sosa",
            "urn:service:sos fire",
            "urn:service:.sos",
            "sip:sos@gw",
            "urn:sos",
        ] {
            assert_eq!(service_urn(uri), None, "{uri}");
        }
    }

    #[test]
    fn prefecture_of_numbers_urns_and_hand_offs() {
        let plan = qinghai();
        let id = |p: PrefectureId| &*plan.center(p).id;
        // The carrier's prefix on the dialed number comes first.
        assert_eq!(
            id(caller_prefecture(
                &plan,
                "sip:0976110@gw",
                "09711234567",
                Some("haidong")
            )),
            "yushu"
        );
        // A URN has no number: the caller's fixed line, then the trunk, then the province.
        assert_eq!(
            id(caller_prefecture(
                &plan,
                "urn:service:sos",
                "09771234567",
                Some("haidong")
            )),
            "haixi"
        );
        assert_eq!(
            id(caller_prefecture(
                &plan,
                "urn:service:sos",
                "13912345678",
                Some("haidong")
            )),
            "haidong"
        );
        assert_eq!(
            caller_prefecture(&plan, "urn:service:sos", "13912345678", None),
            PrefectureId::PROVINCE
        );
        // A hand-off names the caller of the agent's call, whatever the agent is.
        assert_eq!(
            id(caller_prefecture(
                &plan,
                "sip:120@gw",
                "tel:+86-973-8123456",
                None
            )),
            "huangnan"
        );
    }
}
