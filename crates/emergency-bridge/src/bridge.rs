//! The compiled PSAP table: for each center and service, the full ordered failover list.
//!
//! Built once per config and plan (both reload on SIGHUP), then read-only: the lists are merged at
//! build time so that routing an emergency call is one index and no allocation.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use dialplan::{
    line_col, parse_sip_target, CompiledPlan, EmergencyService, PrefectureId, Transport,
};
use toml::Spanned;

use crate::config::{
    EmergencyConfig, DEFAULT_NO_PROVISIONAL_TIMEOUT_MS, MAX_NO_PROVISIONAL_TIMEOUT_MS,
    MIN_NO_PROVISIONAL_TIMEOUT_MS,
};
use crate::error::{Problem, ProblemKind, TargetProblem};
use crate::Errors;

/// The four services, in the order of the table's columns.
pub const SERVICES: [EmergencyService; 4] = [
    EmergencyService::Police,
    EmergencyService::Fire,
    EmergencyService::Ambulance,
    EmergencyService::Traffic,
];

fn column(service: EmergencyService) -> usize {
    match service {
        EmergencyService::Police => 0,
        EmergencyService::Fire => 1,
        EmergencyService::Ambulance => 2,
        EmergencyService::Traffic => 3,
    }
}

fn parse_service(s: &str) -> Option<EmergencyService> {
    SERVICES.into_iter().find(|svc| svc.to_string() == s)
}

/// The national short number of a service, which the PSAP sees as the Request-URI's user part
/// (`sip:110@psap`). Fixed rather than taken from the dialplan: a plan may add local aliases, but
/// the PSAP knows itself by the national number.
pub fn service_number(service: EmergencyService) -> &'static str {
    match service {
        EmergencyService::Police => "110",
        EmergencyService::Fire => "119",
        EmergencyService::Ambulance => "120",
        EmergencyService::Traffic => "122",
    }
}

/// Whether a final response from a PSAP target sends the call on to the next target.
///
/// For an emergency call, every failure does: any status from 300 up, not only 5xx and 408. A
/// 404 or 486 from one PSAP says nothing about the next one, and the rule is that an
/// emergency call never ends in a 404 or a busy tone while a target is left untried. A redirect
/// (3xx) is not followed, because its Contact would be an unchecked destination; the next
/// configured target is tried instead. Timeouts (408, and no provisional response within
/// [`EmergencyBridge::no_provisional_timeout`]) fail over too.
///
/// The one case to stop is a caller who hung up: the 487 that answers our own CANCEL. The caller's
/// transaction tells that, not the status, so this function does not try to.
pub fn fails_over(status: u16) -> bool {
    status >= 300
}

/// Whose PSAP a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PsapTier {
    /// The PSAP of the caller's prefecture.
    Prefecture,
    /// The provincial PSAP, tried after the prefecture's.
    Province,
}

/// One PSAP target, checked and resolved to a socket address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PsapTarget {
    /// The target as written in the config, e.g. `sip:127.0.1.1:5110`, for logs.
    pub uri: Box<str>,
    /// Where to send: the IP literal of the URI, and its port or the SIP default (5060, or 5061
    /// for `sips:`).
    pub addr: SocketAddr,
    /// The transport: the URI's `transport` parameter, else TLS for `sips:` and UDP for `sip:`.
    pub transport: Transport,
    /// `sips:` was used.
    pub secure: bool,
    /// Whether it is the prefecture's own PSAP or the provincial one.
    pub tier: PsapTier,
}

impl PsapTarget {
    /// The Request-URI for this target: the national service number at the target,
    /// `sip:110@127.0.1.1:5110` (with the target's parameters), as DESIGN.md §3 step 4 asks.
    pub fn request_uri(&self, service: EmergencyService) -> String {
        // Targets have no user part (validated), so the number goes right after the scheme.
        let scheme_end = self.uri.find(':').map_or(0, |i| i + 1);
        format!(
            "{}{}@{}",
            &self.uri[..scheme_end],
            service_number(service),
            &self.uri[scheme_end..]
        )
    }
}

impl fmt::Display for PsapTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// The emergency bridge's routing table, compiled against one dialplan.
///
/// [`PrefectureId`]s are indexes into that plan's centers: when the plan reloads, compile the
/// bridge again against the new plan and swap both together (see [`EmergencyBridge::plan_name`]).
#[derive(Debug, Clone)]
pub struct EmergencyBridge {
    plan_name: Box<str>,
    no_provisional_timeout: Duration,
    psap_trunks_as_sources: bool,
    /// Per center (plan order, province first), per service column: the merged failover list.
    routes: Vec<[Box<[PsapTarget]>; 4]>,
    /// Every PSAP address, with the center it serves (the province when it serves several).
    sources: Vec<(IpAddr, PrefectureId)>,
}

impl EmergencyBridge {
    /// The full ordered failover list for a call: the prefecture's own targets for the service,
    /// then the provincial PSAP's, without repeating a target (same address and transport).
    ///
    /// Never empty for a bridge built against the plan `prefecture` comes from: validation refuses
    /// a config where the province lacks a service. A `PrefectureId` this bridge does not know
    /// (from a newer plan with more centers) gets the provincial list rather than a panic on the
    /// emergency path.
    pub fn route(&self, service: EmergencyService, prefecture: PrefectureId) -> &[PsapTarget] {
        let row = self
            .routes
            .get(prefecture.index())
            .unwrap_or(&self.routes[PrefectureId::PROVINCE.index()]);
        &row[column(service)]
    }

    /// How long a target may stay silent, with no provisional response, before the next one is
    /// tried.
    pub fn no_provisional_timeout(&self) -> Duration {
        self.no_provisional_timeout
    }

    /// Whether PSAP addresses are also trusted as trunks (calls from 110 into 12345).
    pub fn psap_trunks_as_sources(&self) -> bool {
        self.psap_trunks_as_sources
    }

    /// The center a request from `ip` comes from when `ip` is a PSAP's and PSAPs are trusted as
    /// trunks; `None` otherwise. Give it to the dialplan as the trunk's prefecture, so a 110
    /// transfer lands in that prefecture's 12345 queue unless the caller's number tells better.
    /// An address that serves several prefectures gives the province.
    pub fn psap_source(&self, ip: IpAddr) -> Option<PrefectureId> {
        if !self.psap_trunks_as_sources {
            return None;
        }
        self.sources
            .iter()
            .find(|(a, _)| *a == ip)
            .map(|&(_, center)| center)
    }

    /// Every PSAP address with the center it serves, for building trunk entries (whatever
    /// [`EmergencyBridge::psap_trunks_as_sources`] says: the daemon decides).
    pub fn psap_addresses(&self) -> &[(IpAddr, PrefectureId)] {
        &self.sources
    }

    /// The dialplan this bridge was compiled against ([`CompiledPlan::name`]).
    pub fn plan_name(&self) -> &str {
        &self.plan_name
    }
}

/// Collects problems with positions.
struct Reporter<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Reporter<'_> {
    fn at(&mut self, span: Range<usize>, kind: ProblemKind) {
        let (line, col) = line_col(self.text, span.start);
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line,
            col,
            kind,
        });
    }
}

/// Reads one target, refusing what the bridge cannot reach with an address alone.
fn target(s: &str, tier: PsapTier) -> Result<PsapTarget, TargetProblem> {
    let t = parse_sip_target(s)?;
    let ip: IpAddr = match t.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| TargetProblem::HostName)?,
        None => t.host.parse().map_err(|_| TargetProblem::HostName)?,
    };
    let transport = match (t.secure, t.transport) {
        (true, None | Some(Transport::Tls)) => Transport::Tls,
        (true, Some(_)) => return Err(TargetProblem::SecureTransport),
        (false, Some(tr)) => tr,
        (false, None) => Transport::Udp,
    };
    let port = t.port.unwrap_or(if t.secure { 5061 } else { 5060 });
    Ok(PsapTarget {
        uri: t.uri,
        addr: SocketAddr::new(ip, port),
        transport,
        secure: t.secure,
        tier,
    })
}

/// An entry's checked targets, keyed by center and service column.
type Entries = HashMap<(PrefectureId, usize), Vec<PsapTarget>>;

impl EmergencyConfig {
    /// Validates this section against the dialplan and builds the bridge, or reports every
    /// problem. `file` and `text` are the file the section was read from (the daemon's config, or
    /// a file of its own), used only to turn positions into `file:line:col`.
    pub fn compile(
        &self,
        plan: &CompiledPlan,
        file: &str,
        text: &str,
    ) -> Result<EmergencyBridge, Errors> {
        let mut r = Reporter {
            file,
            text,
            problems: Vec::new(),
        };
        let timeout_ms = match &self.no_provisional_timeout_ms {
            None => DEFAULT_NO_PROVISIONAL_TIMEOUT_MS,
            Some(v) => {
                let value = *v.get_ref();
                if !(MIN_NO_PROVISIONAL_TIMEOUT_MS..=MAX_NO_PROVISIONAL_TIMEOUT_MS).contains(&value)
                {
                    r.at(
                        v.span(),
                        ProblemKind::TimeoutRange {
                            value,
                            min: MIN_NO_PROVISIONAL_TIMEOUT_MS,
                            max: MAX_NO_PROVISIONAL_TIMEOUT_MS,
                        },
                    );
                }
                value
            }
        };

        let centers = plan.centers();
        let known = || {
            centers
                .iter()
                .map(|c| &*c.id)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut entries: Entries = HashMap::new();
        let mut first_line: HashMap<(PrefectureId, usize), usize> = HashMap::new();
        let empty = Vec::new();
        let psaps = self.psaps.as_ref().map_or(&empty, |p| p.get_ref());
        for entry in psaps {
            let e = entry.get_ref();
            let center = plan.prefecture_by_id(e.prefecture.get_ref());
            if center.is_none() {
                r.at(
                    e.prefecture.span(),
                    ProblemKind::UnknownPrefecture {
                        id: e.prefecture.get_ref().clone(),
                        plan: plan.name().to_owned(),
                        known: known(),
                    },
                );
            }
            let service = parse_service(e.service.get_ref());
            if service.is_none() {
                r.at(
                    e.service.span(),
                    ProblemKind::UnknownService {
                        service: e.service.get_ref().clone(),
                    },
                );
            }
            let tier = if center == Some(PrefectureId::PROVINCE) {
                PsapTier::Province
            } else {
                PsapTier::Prefecture
            };
            let targets = check_targets(&mut r, &e.targets, tier);
            let (Some(center), Some(service)) = (center, service) else {
                continue;
            };
            let key = (center, column(service));
            let line = line_col(text, entry.span().start).0;
            if let Some(&first) = first_line.get(&key) {
                r.at(
                    e.prefecture.span(),
                    ProblemKind::DuplicateEntry {
                        prefecture: e.prefecture.get_ref().clone(),
                        service,
                        first_line: first,
                    },
                );
                continue;
            }
            first_line.insert(key, line);
            entries.insert(key, targets);
        }

        // The province backs every prefecture up, so it alone decides whether a service has a
        // path everywhere.
        let province_id = &*centers[PrefectureId::PROVINCE.index()].id;
        let anchor = self.psaps.as_ref().map_or(0..0, Spanned::span);
        for service in SERVICES {
            let col = column(service);
            let has = |p: PrefectureId| entries.get(&(p, col)).is_some_and(|t| !t.is_empty());
            if has(PrefectureId::PROVINCE) {
                continue;
            }
            let without: Vec<&str> = centers
                .iter()
                .filter(|c| {
                    plan.prefecture_by_id(&c.id)
                        .is_none_or(|p| p == PrefectureId::PROVINCE || !has(p))
                })
                .map(|c| &*c.id)
                .collect();
            r.at(
                anchor.clone(),
                ProblemKind::NoPath {
                    service,
                    without: without.join(", "),
                    province: province_id.to_owned(),
                },
            );
        }
        if !r.problems.is_empty() {
            return Err(Errors {
                problems: r.problems,
            });
        }

        let province: [&[PsapTarget]; 4] = SERVICES.map(|s| {
            entries
                .get(&(PrefectureId::PROVINCE, column(s)))
                .map_or(&[][..], Vec::as_slice)
        });
        let mut routes = Vec::with_capacity(centers.len());
        let mut sources: Vec<(IpAddr, PrefectureId)> = Vec::new();
        for c in centers {
            let Some(p) = plan.prefecture_by_id(&c.id) else {
                continue;
            };
            let row = SERVICES.map(|s| {
                let own = entries.get(&(p, column(s))).map_or(&[][..], Vec::as_slice);
                let mut list: Vec<PsapTarget> = Vec::with_capacity(own.len() + 2);
                for t in own.iter().chain(if p == PrefectureId::PROVINCE {
                    &[][..]
                } else {
                    province[column(s)]
                }) {
                    if !list
                        .iter()
                        .any(|x| x.addr == t.addr && x.transport == t.transport)
                    {
                        list.push(t.clone());
                    }
                }
                list.into_boxed_slice()
            });
            for t in own_targets(&entries, p) {
                let ip = t.addr.ip();
                match sources.iter_mut().find(|(a, _)| *a == ip) {
                    Some((_, center)) if *center != p => *center = PrefectureId::PROVINCE,
                    Some(_) => {}
                    None => sources.push((ip, p)),
                }
            }
            routes.push(row);
        }
        Ok(EmergencyBridge {
            plan_name: plan.name().into(),
            no_provisional_timeout: Duration::from_millis(timeout_ms),
            psap_trunks_as_sources: self.psap_trunks_as_sources,
            routes,
            sources,
        })
    }
}

fn own_targets(entries: &Entries, p: PrefectureId) -> impl Iterator<Item = &PsapTarget> {
    SERVICES
        .into_iter()
        .filter_map(move |s| entries.get(&(p, column(s))))
        .flatten()
}

fn check_targets(
    r: &mut Reporter<'_>,
    targets: &Spanned<Vec<Spanned<String>>>,
    tier: PsapTier,
) -> Vec<PsapTarget> {
    if targets.get_ref().is_empty() {
        r.at(targets.span(), ProblemKind::NoTargets);
    }
    let mut out: Vec<PsapTarget> = Vec::new();
    for t in targets.get_ref() {
        match target(t.get_ref(), tier) {
            Ok(checked) => {
                if out
                    .iter()
                    .any(|x| x.addr == checked.addr && x.transport == checked.transport)
                {
                    r.at(
                        t.span(),
                        ProblemKind::DuplicateTarget {
                            uri: t.get_ref().clone(),
                        },
                    );
                } else {
                    out.push(checked);
                }
            }
            Err(problem) => r.at(
                t.span(),
                ProblemKind::BadTarget {
                    uri: t.get_ref().clone(),
                    problem,
                },
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_plan::qinghai;
    use EmergencyService::{Ambulance, Fire, Police, Traffic};

    const HEAD: &str = "[emergency]\n";

    fn entry(prefecture: &str, service: &str, targets: &[&str]) -> String {
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        format!(
            "[[emergency.psaps]]\nprefecture = \"{prefecture}\"\nservice = \"{service}\"\ntargets = [{}]\n",
            list.join(", ")
        )
    }

    /// The province with one target per service, so that coverage holds.
    fn province() -> String {
        [
            ("police", 5110),
            ("fire", 5119),
            ("ambulance", 5120),
            ("traffic", 5122),
        ]
        .map(|(s, port)| entry("province", s, &[&format!("sip:127.0.1.9:{port}")]))
        .concat()
    }

    fn load(text: &str) -> Result<EmergencyBridge, crate::Errors> {
        crate::load_str("psaps.toml", text, &qinghai())
    }

    fn uris(list: &[PsapTarget]) -> Vec<&str> {
        list.iter().map(|t| &*t.uri).collect()
    }

    #[test]
    fn prefecture_first_then_province_without_repeats() {
        let text = format!(
            "{HEAD}{}{}{}",
            entry(
                "haixi",
                "fire",
                &["sip:127.0.1.8:5119", "sip:10.8.0.2:5119;transport=tcp"]
            ),
            // The province's own target repeated in a prefecture is tried once, in the
            // prefecture's place.
            entry(
                "golog",
                "police",
                &["sip:127.0.1.9:5110", "sip:127.0.1.6:5110"]
            ),
            province()
        );
        let plan = qinghai();
        let b = crate::load_str("psaps.toml", &text, &plan).unwrap_or_else(|e| panic!("{e}"));
        let p = |id| plan.prefecture_by_id(id).unwrap();
        let fire = b.route(Fire, p("haixi"));
        assert_eq!(
            uris(fire),
            [
                "sip:127.0.1.8:5119",
                "sip:10.8.0.2:5119;transport=tcp",
                "sip:127.0.1.9:5119"
            ]
        );
        assert_eq!(
            fire.iter().map(|t| t.tier).collect::<Vec<_>>(),
            [
                PsapTier::Prefecture,
                PsapTier::Prefecture,
                PsapTier::Province
            ]
        );
        assert_eq!(fire[1].addr, "10.8.0.2:5119".parse().unwrap());
        assert_eq!(fire[1].transport, Transport::Tcp);
        assert_eq!(fire[0].transport, Transport::Udp);
        assert_eq!(
            uris(b.route(Police, p("golog"))),
            ["sip:127.0.1.9:5110", "sip:127.0.1.6:5110"]
        );
        // No entry of its own: the province's alone.
        assert_eq!(uris(b.route(Traffic, p("haixi"))), ["sip:127.0.1.9:5122"]);
        assert_eq!(
            uris(b.route(Ambulance, PrefectureId::PROVINCE)),
            ["sip:127.0.1.9:5120"]
        );
        assert_eq!(b.no_provisional_timeout(), Duration::from_millis(2000));
        assert_eq!(b.plan_name(), "qinghai.toml");
    }

    #[test]
    fn an_id_from_a_bigger_plan_gets_the_province() {
        let mut text = include_str!("../../../dialplans/qinghai.toml").to_owned();
        text.push_str("\n[[prefectures]]\nid = \"extra\"\nname = \"Extra\"\narea_codes = [\"0990\"]\nqueue = \"12345-extra\"\n");
        let bigger = dialplan::load_str("bigger.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let extra = bigger.prefecture_by_id("extra").unwrap();
        let b = load(&format!("{HEAD}{}", province())).unwrap();
        assert_eq!(uris(b.route(Police, extra)), ["sip:127.0.1.9:5110"]);
    }

    #[test]
    fn request_uri_carries_the_service_number() {
        let text = format!(
            "{HEAD}{}{}",
            entry(
                "xining",
                "police",
                &[
                    "sip:[::1]:5110",
                    "sips:127.0.1.1",
                    "sip:127.0.1.1:5110;transport=tcp"
                ]
            ),
            province()
        );
        let plan = qinghai();
        let b = crate::load_str("psaps.toml", &text, &plan).unwrap();
        let list = b.route(Police, plan.prefecture_by_id("xining").unwrap());
        assert_eq!(list[0].request_uri(Police), "sip:110@[::1]:5110");
        assert_eq!(list[0].addr, "[::1]:5110".parse().unwrap());
        assert_eq!(list[1].request_uri(Fire), "sips:119@127.0.1.1");
        assert_eq!(
            (list[1].addr.port(), list[1].transport, list[1].secure),
            (5061, Transport::Tls, true)
        );
        assert_eq!(
            list[2].request_uri(Traffic),
            "sip:122@127.0.1.1:5110;transport=tcp"
        );
    }

    #[test]
    fn psap_addresses_are_sources_when_allowed() {
        let text = format!(
            "{HEAD}{}{}{}{}",
            entry("xining", "police", &["sip:127.0.1.1:5110"]),
            entry("xining", "fire", &["sip:127.0.1.1:5119"]),
            // One PSAP serving two prefectures cannot tell which one a call is from.
            entry("haibei", "fire", &["sip:10.0.0.7:5119"]),
            entry("huangnan", "fire", &["sip:10.0.0.7:5119"]),
        ) + &province();
        let plan = qinghai();
        let b = crate::load_str("psaps.toml", &text, &plan).unwrap();
        assert!(b.psap_trunks_as_sources());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            b.psap_source(ip("127.0.1.1")),
            plan.prefecture_by_id("xining")
        );
        assert_eq!(b.psap_source(ip("127.0.1.9")), Some(PrefectureId::PROVINCE));
        assert_eq!(b.psap_source(ip("10.0.0.7")), Some(PrefectureId::PROVINCE));
        assert_eq!(b.psap_source(ip("127.0.0.1")), None);
        assert_eq!(b.psap_addresses().len(), 3);

        let off = text.replacen(HEAD, "[emergency]\npsap_trunks_as_sources = false\n", 1);
        let b = crate::load_str("psaps.toml", &off, &plan).unwrap();
        assert_eq!(b.psap_source(ip("127.0.1.1")), None);
        assert_eq!(b.psap_addresses().len(), 3);
    }

    #[test]
    fn every_failure_fails_over() {
        for status in [
            300, 302, 400, 403, 404, 408, 480, 486, 487, 500, 503, 504, 600, 603,
        ] {
            assert!(fails_over(status), "{status}");
        }
        for status in [100, 180, 183, 200, 202] {
            assert!(!fails_over(status), "{status}");
        }
    }

    fn problems(text: &str) -> Vec<String> {
        match load(text) {
            Ok(_) => panic!("loaded:\n{text}"),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_problem_with_its_position_in_one_run() {
        let text = format!(
            "{HEAD}no_provisional_timeout_ms = 100\n{}{}{}{}{}",
            // line 3
            entry("atlantis", "police", &["sip:127.0.1.1:5110"]),
            // line 7
            entry("xining", "coastguard", &["sip:127.0.1.1:5110"]),
            // line 11
            entry(
                "xining",
                "police",
                &[
                    "sip:psap.example:5110",
                    "sip:110@127.0.1.1",
                    "sips:127.0.1.1;transport=udp",
                    "sip:127.0.1.1:5110",
                    "sip:127.0.1.1:5110",
                    "http://127.0.1.1"
                ]
            ),
            // line 15
            entry("xining", "police", &["sip:127.0.1.2:5110"]),
            // line 19
            entry("haidong", "fire", &[]),
        ) + &province()
            .replace(&entry("province", "traffic", &["sip:127.0.1.9:5122"]), "");
        let got = problems(&text);
        let want = [
            "psaps.toml:2:29: no_provisional_timeout_ms 100 is out of range 500..=10000",
            "psaps.toml:4:14: no center `atlantis` in dialplan qinghai.toml (known: province, xining, haidong, haibei, huangnan, hainan, golog, yushu, haixi)",
            "psaps.toml:9:11: service `coastguard` is not one of police, fire, ambulance, traffic",
            "psaps.toml:14:12: `sip:psap.example:5110` is not a PSAP target: the host must be an IP address, not a name",
            "psaps.toml:14:37: `sip:110@127.0.1.1` is not a PSAP target: a target has no user part (the dialed number is kept as the user)",
            "psaps.toml:14:58: `sips:127.0.1.1;transport=udp` is not a PSAP target: a sips: target can only use transport=tls",
            "psaps.toml:14:112: `sip:127.0.1.1:5110` is listed twice in this entry",
            "psaps.toml:14:134: `http://127.0.1.1` is not a PSAP target: the scheme must be sip: or sips:",
            "psaps.toml:16:14: prefecture `xining` already has a police entry on line 11",
            "psaps.toml:22:11: a PSAP entry needs at least one target",
            "psaps.toml:3:1: no provincial traffic PSAP: calls from province, xining, haidong, haibei, huangnan, hainan, golog, yushu, haixi would have no path (add an entry with prefecture `province`)",
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn syntax_and_unknown_keys_are_positioned() {
        let got = problems("[emergency]\nno_provisional_timeout = 2000\n");
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("psaps.toml:2:1: unknown field `no_provisional_timeout`"),
            "{got:?}"
        );
        let got = problems(&format!(
            "{HEAD}{}",
            province().replacen(
                "service = \"police\"",
                "service = \"police\"\nweight = 1",
                1
            )
        ));
        assert!(
            got[0].starts_with("psaps.toml:5:1: unknown field `weight`"),
            "{got:?}"
        );
        let got = problems("[emergency\n");
        assert!(got[0].starts_with("psaps.toml:1:"), "{got:?}");
    }

    #[test]
    fn an_empty_table_has_no_path_for_any_service() {
        let got = problems("[emergency]\n");
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("psaps.toml:1:1: no provincial police PSAP"));
        assert!(got[3].contains("no provincial traffic PSAP"));
        // A prefecture with its own entry is not listed as lacking one.
        let got = problems(&format!(
            "{HEAD}{}",
            entry("yushu", "fire", &["sip:127.0.1.7:5119"])
        ));
        let fire = got.iter().find(|p| p.contains(" fire ")).unwrap();
        assert!(!fire.contains("yushu"), "{fire}");
        assert!(fire.contains("province, xining"), "{fire}");
    }

    #[test]
    fn load_file_reports_a_missing_file() {
        let e = crate::load_file("/nonexistent/psaps.toml", &qinghai()).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent/psaps.toml:1:1: cannot read:"));
    }
}
