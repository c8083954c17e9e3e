//! The compiled plan and the per-call lookups on it: number normalization, the caller's
//! prefecture, and the routing decision.
//!
//! A [`CompiledPlan`] is immutable. The daemon keeps it behind one atomically swapped pointer, and a
//! call holds the snapshot it started with. Lookups hash one `u64` per candidate form of the number
//! and borrow everything they return from the plan, so routing an INVITE never allocates.

use std::collections::HashMap;
use std::fmt;

use crate::number::{
    clean, number_key, number_key_with_zero, user_part, AreaCode, BuildKeyHasher, Digits,
    NumberError, MAX_DIGITS, MAX_KEY_DIGITS,
};
use crate::uri::SipTarget;

/// A center of the plan: the provincial one ([`PrefectureId::PROVINCE`]) or a prefecture's. A small
/// index, valid for the plan that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrefectureId(pub(crate) u16);

impl PrefectureId {
    /// The provincial center: answers when the caller's prefecture cannot be told.
    pub const PROVINCE: PrefectureId = PrefectureId(0);

    /// Position in [`CompiledPlan::centers`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A line of the plan: its position in [`CompiledPlan::lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineId(pub(crate) u32);

impl LineId {
    /// Position in [`CompiledPlan::lines`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) Box<str>);

        impl $name {
            /// The id as written in the plan.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// Id of a seat-manager queue (`"12345-xining"`, `"dept-12315"`).
    QueueId
);
name_type!(
    /// A topic that 12345 agents are skilled in (`"market-supervision"`).
    Skill
);
name_type!(
    /// Name of an announcement prompt played to a waiting caller (`"moved-to-12345"`).
    Prompt
);

/// How a legacy line is folded into 12345.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 整体并入: the number is retired; its calls land on 12345 agents with the line's skill.
    Merge,
    /// 双号并行: the department keeps its number and seats; its calls overflow to 12345.
    Dual,
    /// 设分中心: the ministry's platform answers; 12345 is the fallback and exchanges work orders.
    Subcenter,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Merge => "merge",
            Mode::Dual => "dual",
            Mode::Subcenter => "subcenter",
        })
    }
}

/// An emergency service; the emergency bridge picks its PSAP per prefecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmergencyService {
    /// 110.
    Police,
    /// 119.
    Fire,
    /// 120.
    Ambulance,
    /// 122, traffic accidents.
    Traffic,
}

impl EmergencyService {
    pub(crate) fn parse(s: &str) -> Option<EmergencyService> {
        Some(match s {
            "police" => EmergencyService::Police,
            "fire" => EmergencyService::Fire,
            "ambulance" => EmergencyService::Ambulance,
            "traffic" => EmergencyService::Traffic,
            _ => return None,
        })
    }
}

impl fmt::Display for EmergencyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmergencyService::Police => "police",
            EmergencyService::Fire => "fire",
            EmergencyService::Ambulance => "ambulance",
            EmergencyService::Traffic => "traffic",
        })
    }
}

/// When a dual line's call leaves the department queue for 12345.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Only when no department seat is logged in (then at once); otherwise the call waits for the
    /// department.
    WhenNoSeat,
    /// After this many seconds in the department queue, and at once when no department seat is
    /// logged in.
    AfterSeconds(u32),
}

/// An answering 12345 center.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Center {
    /// Its id in the plan (`"province"`, `"xining"`).
    pub id: Box<str>,
    /// Its name for people.
    pub name: Box<str>,
    /// The area codes that select it; empty for the provincial center.
    pub area_codes: Vec<AreaCode>,
    /// The queue of its 12345 agents.
    pub queue: QueueId,
}

/// What a line does with its calls, per mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineRoute {
    /// Into the 12345 queue.
    Merge {
        /// Prompt telling the caller the number moved to 12345.
        announcement: Option<Prompt>,
    },
    /// Department seats first, 12345 after.
    Dual {
        /// The department's own queue.
        department_queue: QueueId,
        /// When to overflow to 12345.
        overflow: Overflow,
    },
    /// Forwarded to the ministry's platform.
    Subcenter {
        /// SIP targets, tried in order.
        trunk: Vec<SipTarget>,
        /// Where work orders for the sub-center go.
        workorder_url: Box<str>,
    },
}

/// A legacy department line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Line {
    /// Its position in the plan.
    pub id: LineId,
    /// The national short number (`"12315"`).
    pub number: Box<str>,
    /// The owning department, a label.
    pub department: Box<str>,
    /// The topic 12345 agents need for it.
    pub skill: Skill,
    /// Queue priority, 0 to 9, higher first.
    pub priority: u8,
    /// The one center that answers its 12345 calls, when pinned; otherwise the caller's.
    pub center: Option<PrefectureId>,
    /// The mode and its parameters.
    pub route: LineRoute,
    /// Line of the plan file that declares it, for logs that ops can follow back.
    pub source_line: usize,
}

impl Line {
    /// The line's mode.
    pub fn mode(&self) -> Mode {
        match self.route {
            LineRoute::Merge { .. } => Mode::Merge,
            LineRoute::Dual { .. } => Mode::Dual,
            LineRoute::Subcenter { .. } => Mode::Subcenter,
        }
    }
}

/// A number the emergency bridge takes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmergencyNumber {
    /// The short number (`"110"`).
    pub number: Box<str>,
    /// Its service.
    pub service: EmergencyService,
}

/// What a number in the table leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Hotline,
    Line(LineId),
    Emergency(EmergencyService),
}

/// A dial string read as a national number, with the carrier's area-code prefix split off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    /// The national short form (`"12315"`), or the whole number with its `+` when it belongs to
    /// another country.
    pub number: Digits,
    /// The area code that prefixed it, when the plan knows that code.
    pub area_code: Option<AreaCode>,
    /// The prefecture of that area code.
    pub prefecture: Option<PrefectureId>,
}

/// Why [`CompiledPlan::route`] found nothing. The daemon checks registered agents before routing,
/// so an unknown number is not necessarily an error there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotFoundReason {
    /// The dial string is not a number.
    #[error("unreadable number: {0}")]
    Unreadable(#[source] NumberError),
    /// An international number outside China.
    #[error("a number outside China")]
    Foreign,
    /// A number this plan does not serve.
    #[error("no line has this number")]
    UnknownNumber,
}

/// A call for a 12345 queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRoute<'p> {
    /// The queue of the answering center.
    pub queue: &'p QueueId,
    /// The topic the agent needs; none for calls to the hotline itself.
    pub skill: Option<&'p Skill>,
    /// Queue priority, 0 to 9, higher first.
    pub priority: u8,
    /// The caller's prefecture (the provincial center when unknown): work orders are handled there.
    pub prefecture: PrefectureId,
    /// The center whose queue this is: the caller's prefecture, or the line's pinned center.
    pub center: PrefectureId,
    /// Prompt for the waiting caller.
    pub announcement: Option<&'p Prompt>,
    /// The legacy line dialed; none for the hotline itself.
    pub line: Option<&'p Line>,
}

/// Where a call goes. Borrowed from the plan: keep the plan snapshot alive while using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'p> {
    /// A 12345 queue: the hotline itself, or a merged line.
    Queue(QueueRoute<'p>),
    /// A dual line: the department queue first.
    Dual {
        /// The department's seats.
        department_queue: &'p QueueId,
        /// When to leave it for 12345.
        overflow: Overflow,
        /// The 12345 queue to overflow to.
        fallback: QueueRoute<'p>,
        /// The line dialed.
        line: &'p Line,
    },
    /// A sub-center line: forward to its trunk.
    Subcenter {
        /// SIP targets, tried in order.
        targets: &'p [SipTarget],
        /// When every target fails: this 12345 queue, and a callback work order to the sub-center.
        fallback: QueueRoute<'p>,
        /// Where that work order goes.
        workorder_endpoint: &'p str,
        /// The line dialed.
        line: &'p Line,
    },
    /// An emergency number: hand it to the emergency bridge at once, never queue it.
    Emergency {
        /// Which service.
        service: EmergencyService,
        /// The caller's prefecture, which picks the PSAP.
        prefecture: PrefectureId,
    },
    /// Nothing in the plan.
    NotFound {
        /// Why.
        reason: NotFoundReason,
    },
}

/// A validated plan, ready for lookups. Built by [`crate::load_str`] and friends.
#[derive(Debug, Clone)]
pub struct CompiledPlan {
    pub(crate) name: Box<str>,
    pub(crate) hotline: Box<str>,
    pub(crate) province: Box<str>,
    pub(crate) default_priority: u8,
    /// Index 0 is the provincial center.
    pub(crate) centers: Vec<Center>,
    pub(crate) lines: Vec<Line>,
    pub(crate) emergency: Vec<EmergencyNumber>,
    pub(crate) numbers: HashMap<u64, Target, BuildKeyHasher>,
    pub(crate) area_codes: HashMap<u64, (PrefectureId, AreaCode), BuildKeyHasher>,
    pub(crate) dual_by_skill: HashMap<Skill, LineId>,
}

fn is_mobile(d: &[u8]) -> bool {
    d.len() == 11 && d[0] == b'1'
}

impl CompiledPlan {
    /// The file the plan came from, as given to the loader.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hotline number (`"12345"`).
    pub fn hotline(&self) -> &str {
        &self.hotline
    }

    /// The province, a label.
    pub fn province(&self) -> &str {
        &self.province
    }

    /// Priority of calls to the hotline itself.
    pub fn default_priority(&self) -> u8 {
        self.default_priority
    }

    /// All centers; index 0 is the provincial center, then the prefectures in plan order.
    pub fn centers(&self) -> &[Center] {
        &self.centers
    }

    /// One center. Panics on an id from another plan with more centers.
    pub fn center(&self, id: PrefectureId) -> &Center {
        &self.centers[id.index()]
    }

    /// A center by its plan id (`"haidong"`), e.g. to check a trunk's `prefecture` setting when
    /// the daemon's config loads.
    pub fn prefecture_by_id(&self, id: &str) -> Option<PrefectureId> {
        // A province has a handful of centers: a scan beats hashing the string.
        self.centers
            .iter()
            .position(|c| &*c.id == id)
            .map(|i| PrefectureId(i as u16))
    }

    /// The prefecture an area code (`"0979"`) belongs to.
    pub fn prefecture_by_area_code(&self, code: &str) -> Option<PrefectureId> {
        let code = AreaCode::parse(code)?;
        self.area_codes.get(&code.key()).map(|&(p, _)| p)
    }

    /// All lines, in plan order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// One line. Panics on an id from another plan with more lines.
    pub fn line(&self, id: LineId) -> &Line {
        &self.lines[id.index()]
    }

    /// The line with this exact national number.
    pub fn line_by_number(&self, number: &str) -> Option<&Line> {
        match self.lookup(number.as_bytes())? {
            Target::Line(id) => Some(self.line(id)),
            _ => None,
        }
    }

    /// The emergency numbers, in plan order.
    pub fn emergency_numbers(&self) -> &[EmergencyNumber] {
        &self.emergency
    }

    /// Every queue the plan names: each center's 12345 queue and each dual line's department queue.
    /// The daemon checks that agents answer only queues that exist.
    pub fn queue_ids(&self) -> impl Iterator<Item = &str> + '_ {
        let centers = self.centers.iter().map(|c| c.queue.as_str());
        let departments = self.lines.iter().filter_map(|l| match &l.route {
            LineRoute::Dual {
                department_queue, ..
            } => Some(department_queue.as_str()),
            _ => None,
        });
        centers.chain(departments)
    }

    /// The department queue, and its dual line, for a skill: a 12345 call tagged with a dual
    /// line's topic may be handed to the department's professional seats.
    pub fn department_queue_for_skill(&self, skill: &str) -> Option<(&QueueId, &Line)> {
        let line = self.line(*self.dual_by_skill.get(skill)?);
        match &line.route {
            LineRoute::Dual {
                department_queue, ..
            } => Some((department_queue, line)),
            _ => None,
        }
    }

    fn lookup(&self, d: &[u8]) -> Option<Target> {
        if d.is_empty() || d.len() > MAX_KEY_DIGITS || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.numbers.get(&number_key(d)).copied()
    }

    /// A known area code at the start of `d`, leaving at least `min_rest` digits after it, as
    /// (its length in `d`, the code, its prefecture). `without_zero`: the code is written without
    /// its trunk `0`, as after `+86`.
    fn area_prefix(
        &self,
        d: &[u8],
        without_zero: bool,
        min_rest: usize,
    ) -> Option<(usize, AreaCode, PrefectureId)> {
        // Codes are 3 or 4 digits with the zero; longest first, although validation already
        // forbids one code being a prefix of another.
        let lens: [usize; 2] = if without_zero { [3, 2] } else { [4, 3] };
        for len in lens {
            if d.len() < len + min_rest.max(1) {
                continue;
            }
            let key = if without_zero {
                number_key_with_zero(&d[..len])
            } else {
                number_key(&d[..len])
            };
            if let Some(&(p, code)) = self.area_codes.get(&key) {
                return Some((len, code, p));
            }
        }
        None
    }

    /// Reads a dialed number and finds what it leads to in one pass.
    fn resolve(&self, dialed: &str) -> Result<(Normalized, Option<Target>), NumberError> {
        let mut buf = [0u8; MAX_DIGITS];
        let (mut plus, len) = clean(user_part(dialed), &mut buf)?;
        let mut d = &buf[..len];
        // `00` is the international prefix; no Chinese area code starts with it.
        if !plus && d.starts_with(b"00") {
            plus = true;
            d = &d[2..];
        }
        let found = |n: &[u8], area: Option<(AreaCode, PrefectureId)>, t: Option<Target>| {
            let normalized = Normalized {
                number: Digits::from_slice(false, n),
                area_code: area.map(|a| a.0),
                prefecture: area.map(|a| a.1),
            };
            Ok((normalized, t))
        };
        let mut n = d;
        let mut international = false;
        if plus {
            match d.strip_prefix(b"86") {
                Some([]) => return Err(NumberError::Empty),
                Some(rest) => {
                    n = rest;
                    international = true;
                }
                None if d.is_empty() => return Err(NumberError::Empty),
                None => {
                    let normalized = Normalized {
                        number: Digits::from_slice(true, d),
                        area_code: None,
                        prefecture: None,
                    };
                    return Ok((normalized, None));
                }
            }
        }
        if let Some(t) = self.lookup(n) {
            return found(n, None, Some(t));
        }
        // Without `+`, a leading 86 is a country code only when what follows makes sense as a
        // national number; otherwise it may be a local number that happens to start with 86.
        if !plus {
            if let Some(rest) = n.strip_prefix(b"86") {
                let t = self.lookup(rest);
                if t.is_some() {
                    return found(rest, None, t);
                }
                if self.area_prefix(rest, true, 3).is_some() || is_mobile(rest) {
                    n = rest;
                    international = true;
                }
            }
        }
        // `+86 0971 …` is wrong but common: the trunk zero kept after the country code.
        if international && n.first() == Some(&b'0') {
            international = false;
        }
        if let Some((len, code, p)) = self.area_prefix(n, international, 1) {
            let rest = &n[len..];
            return found(rest, Some((code, p)), self.lookup(rest));
        }
        found(n, None, None)
    }

    /// Reads a dialed number (a bare user part, or a `sip:`/`sips:`/`tel:` URI, with or without
    /// parameters and visual separators) as its national short form. The forms `12315`,
    /// `+8612315`, `008612315`, `8612315`, `097212315`, `+8697212315` and `+86 0972 12315` all give
    /// `12315`; the last three also give area code `0972`. Only area codes the plan knows are split
    /// off, so a number from outside the province keeps its prefix.
    pub fn normalize(&self, user_or_uri: &str) -> Result<Normalized, NumberError> {
        self.resolve(user_or_uri).map(|(n, _)| n)
    }

    /// The prefecture of a fixed-line caller number (`09711234567`, `+869711234567`,
    /// `sip:0971-1234567@gw`). Mobile numbers (1xx) and numbers from outside the plan's area codes
    /// tell nothing and give `None`.
    pub fn caller_area(&self, caller: &str) -> Option<PrefectureId> {
        let mut buf = [0u8; MAX_DIGITS];
        let (mut plus, len) = clean(user_part(caller), &mut buf).ok()?;
        let mut d = &buf[..len];
        if !plus && d.starts_with(b"00") {
            plus = true;
            d = &d[2..];
        }
        let mut international = false;
        if plus {
            d = d.strip_prefix(b"86")?;
            international = true;
        } else if d.len() >= 12 {
            // 86 followed by a full national number (10 or 11 digits).
            if let Some(rest) = d.strip_prefix(b"86") {
                d = rest;
                international = true;
            }
        }
        if international && d.first() == Some(&b'0') {
            international = false;
        }
        // A subscriber number has 7 or 8 digits; 5 leaves room for short internal numbers while
        // refusing a bare area code.
        self.area_prefix(d, international, 5).map(|(_, _, p)| p)
    }

    /// The caller's prefecture, in this order: the area code prefixed to the dialed number; the
    /// area code of a fixed-line caller number; the trunk's configured prefecture (a center id;
    /// an unknown id is ignored); the provincial center.
    pub fn caller_prefecture(
        &self,
        dialed: &Normalized,
        caller: &str,
        trunk_prefecture: Option<&str>,
    ) -> PrefectureId {
        dialed
            .prefecture
            .or_else(|| self.caller_area(caller))
            .or_else(|| trunk_prefecture.and_then(|t| self.prefecture_by_id(t)))
            .unwrap_or(PrefectureId::PROVINCE)
    }

    fn queue_route<'p>(
        &'p self,
        line: Option<&'p Line>,
        prefecture: PrefectureId,
    ) -> QueueRoute<'p> {
        let center = line.and_then(|l| l.center).unwrap_or(prefecture);
        let announcement = match line.map(|l| &l.route) {
            Some(LineRoute::Merge { announcement }) => announcement.as_ref(),
            _ => None,
        };
        QueueRoute {
            queue: &self.centers[center.index()].queue,
            skill: line.map(|l| &l.skill),
            priority: line.map_or(self.default_priority, |l| l.priority),
            prefecture,
            center,
            announcement,
            line,
        }
    }

    /// Decides where a call goes from its dialed number (Request-URI or its user part), the caller
    /// (From or P-Asserted-Identity, URI or number) and the prefecture configured on the trunk it
    /// came from. Registered agents are not in the plan: check them first, because an agent's
    /// number gives [`Decision::NotFound`] here.
    pub fn route<'p>(
        &'p self,
        dialed: &str,
        caller: &str,
        trunk_prefecture: Option<&str>,
    ) -> Decision<'p> {
        let (normalized, target) = match self.resolve(dialed) {
            Ok(r) => r,
            Err(e) => {
                return Decision::NotFound {
                    reason: NotFoundReason::Unreadable(e),
                }
            }
        };
        let Some(target) = target else {
            let reason = if normalized.number.starts_with('+') {
                NotFoundReason::Foreign
            } else {
                NotFoundReason::UnknownNumber
            };
            return Decision::NotFound { reason };
        };
        let prefecture = self.caller_prefecture(&normalized, caller, trunk_prefecture);
        match target {
            Target::Emergency(service) => Decision::Emergency {
                service,
                prefecture,
            },
            Target::Hotline => Decision::Queue(self.queue_route(None, prefecture)),
            Target::Line(id) => {
                let line = self.line(id);
                let queue = self.queue_route(Some(line), prefecture);
                match &line.route {
                    LineRoute::Merge { .. } => Decision::Queue(queue),
                    LineRoute::Dual {
                        department_queue,
                        overflow,
                    } => Decision::Dual {
                        department_queue,
                        overflow: *overflow,
                        fallback: queue,
                        line,
                    },
                    LineRoute::Subcenter {
                        trunk,
                        workorder_url,
                    } => Decision::Subcenter {
                        targets: trunk,
                        fallback: queue,
                        workorder_endpoint: workorder_url,
                        line,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QINGHAI: &str = include_str!("../../../dialplans/qinghai.toml");

    fn qinghai() -> CompiledPlan {
        crate::load_str("qinghai.toml", QINGHAI).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pref(plan: &CompiledPlan, id: &str) -> PrefectureId {
        plan.prefecture_by_id(id)
            .unwrap_or_else(|| panic!("no {id}"))
    }

    #[test]
    fn normalize_forms_of_a_short_number() {
        let plan = qinghai();
        let haidong = pref(&plan, "haidong");
        for (input, area) in [
            ("12315", None),
            ("+8612315", None),
            ("8612315", None),
            ("008612315", None),
            ("sip:12315@10.0.0.1;user=phone", None),
            ("sips:+86-123-15@gw", None),
            ("tel:+86.12315", None),
            ("<sip:(123) 15@gw>", None),
            ("097212315", Some("0972")),
            ("0972-12315", Some("0972")),
            ("(0972) 123 15", Some("0972")),
            ("sip:097212315@gw;user=phone", Some("0972")),
            ("tel:+86-972-12315", Some("0972")),
            ("+8697212315", Some("0972")),
            ("+86 0972 12315", Some("0972")),
            ("8697212315", Some("0972")),
        ] {
            let n = plan
                .normalize(input)
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(n.number, "12315", "{input}");
            assert_eq!(n.area_code.as_ref().map(AreaCode::as_str), area, "{input}");
            assert_eq!(n.prefecture, area.map(|_| haidong), "{input}");
        }
    }

    #[test]
    fn normalize_golmud_and_haixi_codes() {
        let plan = qinghai();
        let haixi = pref(&plan, "haixi");
        for (input, code) in [
            ("097912345", "0979"),
            ("097712345", "0977"),
            ("+8697912345", "0979"),
        ] {
            let n = plan.normalize(input).unwrap();
            assert_eq!(
                (
                    n.number.as_str(),
                    n.area_code.unwrap().as_str(),
                    n.prefecture
                ),
                ("12345", code, Some(haixi))
            );
        }
    }

    #[test]
    fn normalize_keeps_unknown_prefixes_and_rejects_garbage() {
        let plan = qinghai();
        // Beijing's 010 is not in the plan: nothing is stripped.
        let n = plan.normalize("01012315").unwrap();
        assert_eq!((n.number.as_str(), n.area_code), ("01012315", None));
        // A foreign number keeps its +.
        assert_eq!(plan.normalize("+4412315").unwrap().number, "+4412315");
        assert_eq!(
            plan.normalize("sip:alice@example.com"),
            Err(NumberError::NotDigits)
        );
        assert_eq!(plan.normalize("sip:@gw"), Err(NumberError::Empty));
        assert_eq!(plan.normalize("+86"), Err(NumberError::Empty));
        assert_eq!(plan.normalize(&"1".repeat(40)), Err(NumberError::TooLong));
        // An area code alone is not split off into nothing.
        assert_eq!(plan.normalize("0971").unwrap().area_code, None);
        // A local number starting with 86 that is not followed by anything known stays whole.
        assert_eq!(plan.normalize("8654321").unwrap().number, "8654321");
    }

    #[test]
    fn caller_area_from_fixed_lines_only() {
        let plan = qinghai();
        let xining = pref(&plan, "xining");
        let haixi = pref(&plan, "haixi");
        assert_eq!(plan.caller_area("09711234567"), Some(xining));
        assert_eq!(plan.caller_area("+869711234567"), Some(xining));
        assert_eq!(plan.caller_area("869711234567"), Some(xining));
        assert_eq!(plan.caller_area("00869711234567"), Some(xining));
        assert_eq!(
            plan.caller_area("\"Li\" <sip:0979-8412345@gw;user=phone>"),
            Some(haixi)
        );
        assert_eq!(plan.caller_area("tel:+86-977-8212345"), Some(haixi));
        assert_eq!(plan.caller_area("13912345678"), None);
        assert_eq!(plan.caller_area("+8613912345678"), None);
        assert_eq!(plan.caller_area("01012345678"), None);
        assert_eq!(plan.caller_area("+14155550100"), None);
        assert_eq!(plan.caller_area("0971"), None);
        assert_eq!(plan.caller_area("anonymous"), None);
    }

    #[test]
    fn caller_prefecture_order() {
        let plan = qinghai();
        let [xining, haidong, yushu] = ["xining", "haidong", "yushu"].map(|id| pref(&plan, id));
        let prefixed = plan.normalize("097612315").unwrap();
        let bare = plan.normalize("12315").unwrap();
        // 1. The dialed prefix wins over everything.
        assert_eq!(
            plan.caller_prefecture(&prefixed, "09711234567", Some("haidong")),
            yushu
        );
        // 2. Then the caller's fixed-line area code.
        assert_eq!(
            plan.caller_prefecture(&bare, "09711234567", Some("haidong")),
            xining
        );
        // 3. Then the trunk's prefecture (mobile callers carry none).
        assert_eq!(
            plan.caller_prefecture(&bare, "13912345678", Some("haidong")),
            haidong
        );
        // 4. Then the provincial center; an unknown trunk id is ignored.
        assert_eq!(
            plan.caller_prefecture(&bare, "13912345678", Some("atlantis")),
            PrefectureId::PROVINCE
        );
        assert_eq!(
            plan.caller_prefecture(&bare, "13912345678", None),
            PrefectureId::PROVINCE
        );
    }

    #[test]
    fn route_hotline_to_the_callers_prefecture_queue() {
        let plan = qinghai();
        let yushu = pref(&plan, "yushu");
        let Decision::Queue(q) = plan.route("sip:097612345@gw;user=phone", "13912345678", None)
        else {
            panic!("not a queue")
        };
        assert_eq!(q.queue.as_str(), "12345-yushu");
        assert_eq!(
            (q.skill, q.line, q.announcement, q.prefecture, q.center),
            (None, None, None, yushu, yushu)
        );
        assert_eq!(q.priority, 5);
        let Decision::Queue(q) = plan.route("12345", "13912345678", None) else {
            panic!("not a queue")
        };
        assert_eq!(q.queue.as_str(), "12345-province");
    }

    #[test]
    fn route_merge_line_carries_skill_and_announcement() {
        let plan = qinghai();
        let Decision::Queue(q) = plan.route("+86 972 12331", "13912345678", Some("xining")) else {
            panic!("not a queue")
        };
        assert_eq!(q.queue.as_str(), "12345-haidong");
        assert_eq!(q.skill.map(Skill::as_str), Some("food-drug"));
        assert_eq!(q.announcement.map(Prompt::as_str), Some("moved-to-12345"));
        assert_eq!(q.line.map(|l| &*l.number), Some("12331"));
        assert_eq!(q.line.map(Line::mode), Some(Mode::Merge));
    }

    #[test]
    fn route_dual_line_to_department_then_12345() {
        let plan = qinghai();
        let Decision::Dual {
            department_queue,
            overflow,
            fallback,
            line,
        } = plan.route("sip:12315@gw", "09721234567", None)
        else {
            panic!("not dual")
        };
        assert_eq!(department_queue.as_str(), "dept-12315");
        assert_eq!(overflow, Overflow::AfterSeconds(20));
        assert_eq!(fallback.queue.as_str(), "12345-haidong");
        assert_eq!(
            fallback.skill.map(Skill::as_str),
            Some("market-supervision")
        );
        assert_eq!(&*line.department, "青海省市场监督管理局");
        let Decision::Dual { overflow, .. } = plan.route("12348", "", None) else {
            panic!("not dual")
        };
        assert_eq!(overflow, Overflow::WhenNoSeat);
        // A 12345 call tagged with the department's topic can reach its seats.
        let (q, l) = plan
            .department_queue_for_skill("market-supervision")
            .unwrap();
        assert_eq!((q.as_str(), &*l.number), ("dept-12315", "12315"));
        assert!(plan.department_queue_for_skill("food-drug").is_none());
    }

    #[test]
    fn route_subcenter_line_to_its_trunk() {
        let plan = qinghai();
        let Decision::Subcenter {
            targets,
            fallback,
            workorder_endpoint,
            line,
        } = plan.route("12366", "+869791234567", None)
        else {
            panic!("not a sub-center")
        };
        assert_eq!(
            targets.iter().map(|t| &*t.uri).collect::<Vec<_>>(),
            ["sip:127.0.2.1:5060"]
        );
        assert_eq!(workorder_endpoint, "http://127.0.2.1:8080/workorders");
        assert_eq!(fallback.queue.as_str(), "12345-haixi");
        assert_eq!(fallback.skill.map(Skill::as_str), Some("tax"));
        assert_eq!(&*line.number, "12366");
    }

    #[test]
    fn route_emergency_numbers_in_every_form() {
        let plan = qinghai();
        let golog = pref(&plan, "golog");
        for (dialed, service) in [
            ("110", EmergencyService::Police),
            ("sip:119@gw;user=phone", EmergencyService::Fire),
            ("+86120", EmergencyService::Ambulance),
            ("0975122", EmergencyService::Traffic),
            ("tel:+86-975-110", EmergencyService::Police),
        ] {
            let d = plan.route(dialed, "09751234567", None);
            assert_eq!(
                d,
                Decision::Emergency {
                    service,
                    prefecture: golog
                },
                "{dialed}"
            );
        }
        let d = plan.route("0971110", "09751234567", None);
        assert_eq!(
            d,
            Decision::Emergency {
                service: EmergencyService::Police,
                prefecture: pref(&plan, "xining")
            }
        );
    }

    #[test]
    fn route_not_found() {
        let plan = qinghai();
        let nf = |reason| Decision::NotFound { reason };
        assert_eq!(
            plan.route("sip:1001@gw", "", None),
            nf(NotFoundReason::UnknownNumber)
        );
        assert_eq!(
            plan.route("097199999", "", None),
            nf(NotFoundReason::UnknownNumber)
        );
        assert_eq!(
            plan.route("+4412315", "", None),
            nf(NotFoundReason::Foreign)
        );
        assert_eq!(
            plan.route("sip:agent-7@gw", "", None),
            nf(NotFoundReason::Unreadable(NumberError::NotDigits))
        );
    }

    #[test]
    fn pinned_center_answers_whatever_the_callers_prefecture() {
        let text = QINGHAI.replacen(
            "number = \"12336\"\n",
            "number = \"12336\"\ncenter = \"province\"\npriority = 7\n",
            1,
        );
        let plan = crate::load_str("pinned.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let Decision::Queue(q) = plan.route("097312336", "", None) else {
            panic!("not a queue")
        };
        assert_eq!(q.queue.as_str(), "12345-province");
        assert_eq!(
            (q.prefecture, q.center, q.priority),
            (pref(&plan, "huangnan"), PrefectureId::PROVINCE, 7)
        );
    }
}
