//! From a parsed file to a [`CompiledPlan`]: every rule checked, every problem collected.
//!
//! The checks run to the end even after a problem, and a line is only built when its own fields
//! are sound, so one run reports everything that is wrong with a file.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use toml::Spanned;

use crate::error::{Problem, ProblemKind, Reporter};
use crate::number::{number_key, AreaCode, BuildKeyHasher, MAX_KEY_DIGITS};
use crate::plan::{
    Center, CompiledPlan, EmergencyNumber, EmergencyService, Line, LineId, LineRoute, Mode,
    Overflow, PrefectureId, Prompt, QueueId, Skill, Target,
};
use crate::schema::{self, PlanFile};
use crate::uri::{check_http_url, parse_sip_target};

/// Priority when neither the line nor the platform sets one: the middle of 0..=9.
const DEFAULT_PRIORITY: u8 = 5;
/// Longest overflow wait: beyond it callers hang up, and the 15 s answer target is long gone.
const MAX_OVERFLOW_S: u32 = 300;

/// The emergency numbers when the plan lists none (国办发〔2020〕53号 keeps these four apart).
const DEFAULT_EMERGENCY: [(&str, EmergencyService); 4] = [
    ("110", EmergencyService::Police),
    ("119", EmergencyService::Fire),
    ("120", EmergencyService::Ambulance),
    ("122", EmergencyService::Traffic),
];

/// 3 to 15 digits, not starting with 0 (a leading 0 reads as an area code).
fn dialable(s: &str) -> bool {
    (3..=MAX_KEY_DIGITS).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && !s.starts_with('0')
}

/// Center ids: lowercase ASCII letters, digits and `-`, starting with a letter.
fn good_id(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Queue and skill ids: they reach metrics labels and the seat manager, so plain ASCII only.
fn good_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Prompt names become file names under the prompts folder.
fn good_prompt(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

struct Checker<'a> {
    r: Reporter<'a>,
    /// Number key -> (what it is, line it was declared on).
    numbers: HashMap<u64, (Target, usize), BuildKeyHasher>,
    /// Queue ids in use, by centers and department queues alike.
    queues: HashSet<String>,
}

impl Checker<'_> {
    fn text(&mut self, field: &'static str, v: &Spanned<String>) -> Box<str> {
        if v.get_ref().trim().is_empty() {
            self.r.at(v.span(), ProblemKind::Empty { field });
        }
        v.get_ref().as_str().into()
    }

    fn id(&mut self, what: &'static str, v: &Spanned<String>) -> Box<str> {
        if !good_id(v.get_ref()) {
            self.r.at(
                v.span(),
                ProblemKind::BadId {
                    what,
                    id: v.get_ref().clone(),
                },
            );
        }
        v.get_ref().as_str().into()
    }

    fn name(&mut self, what: &'static str, v: &Spanned<String>) -> bool {
        let ok = good_name(v.get_ref());
        if !ok {
            self.r.at(
                v.span(),
                ProblemKind::BadName {
                    what,
                    id: v.get_ref().clone(),
                },
            );
        }
        ok
    }

    fn queue(&mut self, v: &Spanned<String>) -> QueueId {
        if self.name("queue", v) && !self.queues.insert(v.get_ref().clone()) {
            self.r.at(
                v.span(),
                ProblemKind::DuplicateQueue {
                    queue: v.get_ref().clone(),
                },
            );
        }
        QueueId(v.get_ref().as_str().into())
    }

    fn priority(&mut self, v: Option<&Spanned<u8>>, default: u8) -> u8 {
        match v {
            Some(p) if *p.get_ref() > 9 => {
                self.r.at(
                    p.span(),
                    ProblemKind::BadPriority {
                        value: *p.get_ref(),
                    },
                );
                default
            }
            Some(p) => *p.get_ref(),
            None => default,
        }
    }

    /// Claims a number in the table; reports a clash with whatever holds it.
    fn claim(&mut self, number: &Spanned<String>, target: Target) {
        if !dialable(number.get_ref()) {
            self.r.at(
                number.span(),
                ProblemKind::BadNumber {
                    number: number.get_ref().clone(),
                },
            );
            return;
        }
        let line = self.r.line_of(&number.span());
        match self.numbers.entry(number_key(number.get_ref().as_bytes())) {
            Entry::Vacant(v) => {
                v.insert((target, line));
            }
            Entry::Occupied(o) => {
                let n = number.get_ref().clone();
                let kind = match o.get().0 {
                    Target::Hotline => ProblemKind::HotlineCollision { number: n },
                    Target::Emergency(service) => {
                        ProblemKind::EmergencyCollision { number: n, service }
                    }
                    Target::Line(_) => ProblemKind::DuplicateNumber {
                        number: n,
                        first_line: o.get().1,
                    },
                };
                self.r.at(number.span(), kind);
            }
        }
    }
}

/// Which mode each mode-specific field belongs to, for "does not apply" reports.
fn foreign_fields(line: &schema::Line, mode: Mode) -> Vec<(&'static str, Range<usize>)> {
    let mut out = Vec::new();
    let mut check = |name: &'static str, owner: Mode, span: Option<Range<usize>>| {
        if let Some(span) = span {
            if owner != mode {
                out.push((name, span));
            }
        }
    };
    check(
        "announcement",
        Mode::Merge,
        line.announcement.as_ref().map(Spanned::span),
    );
    check(
        "department_queue",
        Mode::Dual,
        line.department_queue.as_ref().map(Spanned::span),
    );
    check(
        "overflow_after_s",
        Mode::Dual,
        line.overflow_after_s.as_ref().map(Spanned::span),
    );
    check(
        "trunk",
        Mode::Subcenter,
        line.trunk.as_ref().map(Spanned::span),
    );
    check(
        "workorder_url",
        Mode::Subcenter,
        line.workorder_url.as_ref().map(Spanned::span),
    );
    out
}

/// Parses and validates one plan file. `file` is used in messages only.
pub(crate) fn compile(file: &str, text: &str) -> Result<CompiledPlan, Vec<Problem>> {
    let mut r = Reporter {
        file,
        text,
        problems: Vec::new(),
    };
    let plan: PlanFile = match toml::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            r.at(
                e.span().unwrap_or(0..0),
                ProblemKind::Syntax {
                    message: e.message().trim().to_owned(),
                },
            );
            return Err(r.problems);
        }
    };
    let mut c = Checker {
        r,
        numbers: HashMap::default(),
        queues: HashSet::new(),
    };

    // The platform and the numbers that no line may take.
    let platform = &plan.platform;
    let hotline = platform.hotline.get_ref().as_str().into();
    c.claim(&platform.hotline, Target::Hotline);
    let province = c.text("province", &platform.province);
    let default_priority = c.priority(platform.default_priority.as_ref(), DEFAULT_PRIORITY);

    let mut emergency = Vec::new();
    match &plan.emergency {
        None => {
            for (number, service) in DEFAULT_EMERGENCY {
                let key = number_key(number.as_bytes());
                if c.numbers
                    .insert(key, (Target::Emergency(service), 0))
                    .is_some()
                {
                    // Only the hotline can be there already.
                    c.r.at(
                        platform.hotline.span(),
                        ProblemKind::EmergencyCollision {
                            number: number.into(),
                            service,
                        },
                    );
                }
                emergency.push(EmergencyNumber {
                    number: number.into(),
                    service,
                });
            }
        }
        Some(list) => {
            for e in list {
                let Some(service) = EmergencyService::parse(e.service.get_ref()) else {
                    c.r.at(
                        e.service.span(),
                        ProblemKind::UnknownService {
                            service: e.service.get_ref().clone(),
                        },
                    );
                    continue;
                };
                c.claim(&e.number, Target::Emergency(service));
                emergency.push(EmergencyNumber {
                    number: e.number.get_ref().as_str().into(),
                    service,
                });
            }
        }
    }

    // Centers: the province first, so that PrefectureId(0) is always it.
    let mut centers = Vec::new();
    let mut center_ids: HashMap<String, PrefectureId> = HashMap::new();
    let mut area_codes = HashMap::default();
    let mut code_list: Vec<(AreaCode, Range<usize>, usize)> = Vec::new();
    let pc = &plan.provincial_center;
    let mut declare_center = |c: &mut Checker, id: &Spanned<String>, n: usize| {
        if center_ids
            .insert(id.get_ref().clone(), PrefectureId(n as u16))
            .is_some()
        {
            c.r.at(
                id.span(),
                ProblemKind::DuplicateCenter {
                    id: id.get_ref().clone(),
                },
            );
        }
    };
    declare_center(&mut c, &pc.id, 0);
    centers.push(Center {
        id: c.id("center id", &pc.id),
        name: c.text("name", &pc.name),
        area_codes: Vec::new(),
        queue: c.queue(&pc.queue),
    });
    if plan.prefectures.is_empty() {
        c.r.at(0..0, ProblemKind::NoPrefectures);
    }
    for (i, p) in plan.prefectures.iter().enumerate() {
        let n = i + 1;
        declare_center(&mut c, &p.id, n);
        let id = c.id("prefecture id", &p.id);
        let mut codes = Vec::new();
        for code in &p.area_codes {
            let Some(ac) = AreaCode::parse(code.get_ref()) else {
                c.r.at(
                    code.span(),
                    ProblemKind::BadAreaCode {
                        code: code.get_ref().clone(),
                    },
                );
                continue;
            };
            match area_codes.entry(ac.key()) {
                Entry::Occupied(o) => {
                    let (first, _): (PrefectureId, AreaCode) = *o.get();
                    let first = plan.prefectures[first.index() - 1].id.get_ref().clone();
                    c.r.at(
                        code.span(),
                        ProblemKind::AreaCodeTwice {
                            code: code.get_ref().clone(),
                            first,
                        },
                    );
                }
                Entry::Vacant(v) => {
                    v.insert((PrefectureId(n as u16), ac));
                    code_list.push((ac, code.span(), n));
                    codes.push(ac);
                }
            }
        }
        if p.area_codes.is_empty() {
            c.r.at(
                p.id.span(),
                ProblemKind::NoAreaCode {
                    id: p.id.get_ref().clone(),
                },
            );
        }
        centers.push(Center {
            id,
            name: c.text("name", &p.name),
            area_codes: codes,
            queue: c.queue(&p.queue),
        });
    }
    for (a, a_span, _) in &code_list {
        for (b, _, _) in &code_list {
            if a != b && b.as_str().starts_with(a.as_str()) {
                c.r.at(
                    a_span.clone(),
                    ProblemKind::AreaCodeNested {
                        code: a.to_string(),
                        other: b.to_string(),
                    },
                );
            }
        }
    }

    // Lines.
    let mut lines = Vec::new();
    let mut dual_by_skill: HashMap<Skill, (LineId, usize)> = HashMap::new();
    for spanned in &plan.lines {
        let raw = spanned.get_ref();
        let table = spanned.span();
        let before = c.r.problems.len();
        let id = LineId(lines.len() as u32);
        let missing = |c: &mut Checker, field: &'static str| {
            c.r.at(table.clone(), ProblemKind::Missing { field })
        };

        match &raw.number {
            Some(n) => c.claim(n, Target::Line(id)),
            None => missing(&mut c, "number"),
        }
        let department = match &raw.department {
            Some(d) => c.text("department", d),
            None => {
                missing(&mut c, "department");
                "".into()
            }
        };
        let skill = match &raw.skill {
            Some(s) => {
                c.name("skill", s);
                Skill(s.get_ref().as_str().into())
            }
            None => {
                missing(&mut c, "skill");
                Skill("".into())
            }
        };
        let priority = c.priority(raw.priority.as_ref(), default_priority);
        let center = raw.center.as_ref().and_then(|s| {
            let found = center_ids.get(s.get_ref()).copied();
            if found.is_none() {
                c.r.at(
                    s.span(),
                    ProblemKind::UnknownCenter {
                        id: s.get_ref().clone(),
                    },
                );
            }
            found
        });
        let mode = match &raw.mode {
            None => {
                missing(&mut c, "mode");
                None
            }
            Some(m) => match m.get_ref().as_str() {
                "merge" => Some(Mode::Merge),
                "dual" => Some(Mode::Dual),
                "subcenter" => Some(Mode::Subcenter),
                other => {
                    c.r.at(
                        m.span(),
                        ProblemKind::UnknownMode {
                            mode: other.to_owned(),
                        },
                    );
                    None
                }
            },
        };
        let Some(mode) = mode else { continue };
        for (field, span) in foreign_fields(raw, mode) {
            c.r.at(span, ProblemKind::NotForMode { field, mode });
        }
        let need = |c: &mut Checker, field: &'static str| {
            c.r.at(table.clone(), ProblemKind::MissingForMode { field, mode })
        };
        let route = match mode {
            Mode::Merge => {
                let announcement = raw.announcement.as_ref().map(|a| {
                    if !good_prompt(a.get_ref()) {
                        c.r.at(
                            a.span(),
                            ProblemKind::BadPrompt {
                                name: a.get_ref().clone(),
                            },
                        );
                    }
                    Prompt(a.get_ref().as_str().into())
                });
                LineRoute::Merge { announcement }
            }
            Mode::Dual => {
                let department_queue = match &raw.department_queue {
                    Some(q) => c.queue(q),
                    None => {
                        need(&mut c, "department_queue");
                        QueueId("".into())
                    }
                };
                let overflow = match &raw.overflow_after_s {
                    None => Overflow::WhenNoSeat,
                    Some(s) => {
                        let v = *s.get_ref();
                        if !(1..=MAX_OVERFLOW_S).contains(&v) {
                            c.r.at(s.span(), ProblemKind::BadOverflow { value: v });
                        }
                        Overflow::AfterSeconds(v)
                    }
                };
                if let Some(s) = &raw.skill {
                    let line_no = c.r.line_of(&s.span());
                    match dual_by_skill.entry(skill.clone()) {
                        Entry::Occupied(o) => c.r.at(
                            s.span(),
                            ProblemKind::SkillTwoDepartments {
                                skill: s.get_ref().clone(),
                                first_line: o.get().1,
                            },
                        ),
                        Entry::Vacant(v) => {
                            v.insert((id, line_no));
                        }
                    }
                }
                LineRoute::Dual {
                    department_queue,
                    overflow,
                }
            }
            Mode::Subcenter => {
                let mut trunk = Vec::new();
                match &raw.trunk {
                    None => need(&mut c, "trunk"),
                    Some(list) if list.get_ref().is_empty() => {
                        c.r.at(list.span(), ProblemKind::EmptyTargets)
                    }
                    Some(list) => {
                        for t in list.get_ref() {
                            match parse_sip_target(t.get_ref()) {
                                Err(problem) => c.r.at(
                                    t.span(),
                                    ProblemKind::BadSipUri {
                                        uri: t.get_ref().clone(),
                                        problem,
                                    },
                                ),
                                Ok(target) if trunk.contains(&target) => c.r.at(
                                    t.span(),
                                    ProblemKind::DuplicateTarget {
                                        uri: t.get_ref().clone(),
                                    },
                                ),
                                Ok(target) => trunk.push(target),
                            }
                        }
                    }
                }
                let workorder_url = match &raw.workorder_url {
                    None => {
                        need(&mut c, "workorder_url");
                        "".into()
                    }
                    Some(u) => {
                        if let Err(problem) = check_http_url(u.get_ref()) {
                            c.r.at(
                                u.span(),
                                ProblemKind::BadUrl {
                                    url: u.get_ref().clone(),
                                    problem,
                                },
                            );
                        }
                        u.get_ref().as_str().into()
                    }
                };
                LineRoute::Subcenter {
                    trunk,
                    workorder_url,
                }
            }
        };
        if c.r.problems.len() == before {
            let number = raw
                .number
                .as_ref()
                .map_or("", |n| n.get_ref().as_str())
                .into();
            let source_line = c.r.line_of(&table);
            lines.push(Line {
                id,
                number,
                department,
                skill,
                priority,
                center,
                route,
                source_line,
            });
        }
    }

    if !c.r.problems.is_empty() {
        // Report in file order, which is how people read and fix them.
        c.r.problems.sort_by_key(|p| (p.line, p.col));
        return Err(c.r.problems);
    }
    let numbers = c.numbers.into_iter().map(|(k, (t, _))| (k, t)).collect();
    Ok(CompiledPlan {
        name: file.into(),
        hotline,
        province,
        default_priority,
        centers,
        lines,
        emergency,
        numbers,
        area_codes,
        dual_by_skill: dual_by_skill
            .into_iter()
            .map(|(k, (id, _))| (k, id))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid plan; tests append to it or edit it.
    const BASE: &str = r#"# A test plan.
[platform]
hotline = "12345"
province = "test"

[provincial_center]
id = "province"
name = "p"
queue = "q-province"

[[prefectures]]
id = "xining"
name = "x"
area_codes = ["0971"]
queue = "q-xining"
"#;

    fn errors(text: &str) -> Vec<String> {
        match crate::load_str("t.toml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    fn with_line(fields: &str) -> Vec<String> {
        errors(&format!("{BASE}\n[[lines]]\n{fields}"))
    }

    #[test]
    fn base_plan_compiles_with_default_emergency_numbers() {
        let plan = crate::load_str("t.toml", BASE).unwrap();
        let numbers: Vec<_> = plan
            .emergency_numbers()
            .iter()
            .map(|e| (&*e.number, e.service))
            .collect();
        assert_eq!(numbers, DEFAULT_EMERGENCY.to_vec());
        assert_eq!(plan.default_priority(), 5);
        assert_eq!(plan.centers().len(), 2);
        assert_eq!(
            plan.center(PrefectureId::PROVINCE).queue.as_str(),
            "q-province"
        );
        assert_eq!(
            plan.prefecture_by_area_code("0971"),
            plan.prefecture_by_id("xining")
        );
    }

    #[test]
    fn syntax_errors_and_unknown_fields_have_positions() {
        assert_eq!(
            errors(&format!("{BASE}colour = \"red\"\n")),
            ["t.toml:16:1: unknown field `colour`, expected one of `id`, `name`, `area_codes`, `queue`"]
        );
        let e = with_line("number = \"12315\"\nmode = \"merge\"\nskil = \"x\"\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("t.toml:20:1: unknown field `skil`"),
            "{e:?}"
        );
        assert_eq!(
            errors("[platform\n"),
            ["t.toml:1:10: invalid table header\nexpected `.`, `]`"]
        );
        assert_eq!(
            errors("[platform]\nhotline = 12345\n")[0],
            "t.toml:2:11: invalid type: integer `12345`, expected a string"
        );
    }

    #[test]
    fn line_numbers_must_be_dialable_and_unique() {
        let line = |n: &str| {
            with_line(&format!(
                "number = \"{n}\"\ndepartment = \"d\"\nmode = \"merge\"\nskill = \"s\"\n"
            ))
        };
        assert_eq!(line("12315"), Vec::<String>::new());
        for bad in ["0971", "12", "1234567890123456", "12a45", ""] {
            assert_eq!(
                line(bad),
                [format!("t.toml:18:10: `{bad}` is not a dialable number: 3 to 15 digits, not starting with 0")]
            );
        }
        assert_eq!(
            line("12345"),
            ["t.toml:18:10: number `12345` is the hotline number"]
        );
        assert_eq!(
            line("119"),
            ["t.toml:18:10: number `119` is the emergency number for fire"]
        );
        let twice = errors(&format!(
            "{BASE}\n[[lines]]\nnumber = \"12315\"\ndepartment = \"d\"\nmode = \"merge\"\nskill = \"s\"\n\
             \n[[lines]]\nnumber = \"12315\"\ndepartment = \"d\"\nmode = \"merge\"\nskill = \"s\"\n"
        ));
        assert_eq!(
            twice,
            ["t.toml:24:10: number `12315` is already used on line 18"]
        );
    }

    #[test]
    fn mode_fields_are_checked() {
        assert_eq!(
            with_line("number = \"12315\"\ndepartment = \"d\"\nmode = \"dual\"\nskill = \"s\"\nannouncement = \"a\"\ntrunk = [\"sip:h\"]\n"),
            [
                "t.toml:17:1: a dual line needs `department_queue`",
                "t.toml:22:16: `announcement` does not apply to a dual line",
                "t.toml:23:9: `trunk` does not apply to a dual line",
            ]
        );
        assert_eq!(
            with_line("number = \"12315\"\ndepartment = \"d\"\nmode = \"merge\"\nskill = \"s\"\ndepartment_queue = \"q\"\noverflow_after_s = 5\nworkorder_url = \"http://h\"\n"),
            [
                "t.toml:22:20: `department_queue` does not apply to a merge line",
                "t.toml:23:20: `overflow_after_s` does not apply to a merge line",
                "t.toml:24:17: `workorder_url` does not apply to a merge line",
            ]
        );
        assert_eq!(
            with_line(
                "number = \"12366\"\ndepartment = \"d\"\nmode = \"subcenter\"\nskill = \"s\"\n"
            ),
            [
                "t.toml:17:1: a subcenter line needs `trunk`",
                "t.toml:17:1: a subcenter line needs `workorder_url`"
            ]
        );
        assert_eq!(
            with_line("number = \"12315\"\nmode = \"Merge\"\n"),
            [
                "t.toml:17:1: this line needs `department`",
                "t.toml:17:1: this line needs `skill`",
                "t.toml:19:8: mode `Merge` is not one of merge, dual, subcenter",
            ]
        );
    }

    #[test]
    fn value_ranges() {
        let dual = |extra: &str| {
            with_line(&format!(
                "number = \"12315\"\ndepartment = \"d\"\nmode = \"dual\"\nskill = \"s\"\ndepartment_queue = \"dept-12315\"\n{extra}"
            ))
        };
        assert_eq!(
            dual("overflow_after_s = 20\npriority = 9\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            dual("overflow_after_s = 0\n")[0],
            "t.toml:23:20: overflow_after_s 0 is out of range 1..=300 (leave it out to overflow only when no department seat is logged in)"
        );
        assert_eq!(dual("overflow_after_s = 301\n").len(), 1);
        assert_eq!(
            dual("priority = 10\n"),
            ["t.toml:23:12: priority 10 is out of range 0..=9"]
        );
        assert_eq!(
            dual("center = \"lhasa\"\n"),
            ["t.toml:23:10: no center has id `lhasa`"]
        );
        assert_eq!(
            dual("department_queue = \"q-xining\"\n")[0],
            "t.toml:23:1: duplicate key `department_queue` in table `lines`"
        );
        let merge = |extra: &str| {
            with_line(&format!("number = \"12331\"\ndepartment = \"\"\nmode = \"merge\"\nskill = \"food drug\"\n{extra}"))
        };
        assert_eq!(
            merge("announcement = \"Moved!\"\n"),
            [
                "t.toml:19:14: `department` must not be empty",
                "t.toml:21:9: skill `food drug` must be ASCII letters, digits, '-', '_' and '.'",
                "t.toml:22:16: announcement `Moved!` must be lowercase ASCII letters, digits, '-' and '_'",
            ]
        );
    }

    #[test]
    fn department_queues_and_skills_are_unambiguous() {
        let text = format!(
            "{BASE}\n[[lines]]\nnumber = \"12315\"\ndepartment = \"d\"\nmode = \"dual\"\nskill = \"s\"\ndepartment_queue = \"q-xining\"\n\
             \n[[lines]]\nnumber = \"12333\"\ndepartment = \"d\"\nmode = \"dual\"\nskill = \"s\"\ndepartment_queue = \"dept-12333\"\n"
        );
        assert_eq!(
            errors(&text),
            [
                "t.toml:22:20: queue `q-xining` is already used",
                "t.toml:28:9: skill `s` already belongs to the dual line on line 21; a 12345 call with that skill could not tell which department queue to try",
            ]
        );
    }

    #[test]
    fn subcenter_targets_and_urls() {
        let sub = |trunk: &str, url: &str| {
            with_line(&format!(
                "number = \"12366\"\ndepartment = \"d\"\nmode = \"subcenter\"\nskill = \"tax\"\ntrunk = {trunk}\nworkorder_url = \"{url}\"\n"
            ))
        };
        assert_eq!(
            sub(
                "[\"sip:127.0.2.1:5060\", \"sips:sub.example;transport=tls\"]",
                "http://h/wo"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            sub("[\"sip:h\"]", "https://h/wo"),
            ["t.toml:23:17: `https://h/wo` is not a work-order URL: the scheme must be http:// (the outbox has no TLS client)"]
        );
        assert_eq!(
            sub("[]", "http://h"),
            ["t.toml:22:9: a subcenter trunk needs at least one SIP target"]
        );
        assert_eq!(
            sub("[\"sip:127.0.2.1:99999\", \"sip:h;lr\"]", "http://"),
            [
                "t.toml:22:10: `sip:127.0.2.1:99999` is not a SIP target: the port must be 1 to 65535",
                "t.toml:22:33: `sip:h;lr` is not a SIP target: the only parameter allowed is transport=udp, tcp or tls",
                "t.toml:23:17: `http://` is not a work-order URL: the host is missing or not an IP address or host name",
            ]
        );
    }

    #[test]
    fn centers_and_area_codes() {
        let text = format!(
            "{BASE}\n[[prefectures]]\nid = \"xining\"\nname = \"x\"\narea_codes = []\nqueue = \"q2\"\n\
             \n[[prefectures]]\nid = \"haixi\"\nname = \"h\"\narea_codes = [\"0977\", \"0971\", \"097\", \"977\"]\nqueue = \"q3\"\n"
        );
        assert_eq!(
            errors(&text),
            [
                "t.toml:18:6: center id `xining` is already used",
                "t.toml:18:6: prefecture `xining` has no area code",
                "t.toml:26:23: area code `0971` is already claimed by prefecture `xining`",
                "t.toml:26:31: area code `097` is a prefix of area code `0971`, so dialed numbers would be ambiguous",
                "t.toml:26:31: area code `097` is a prefix of area code `0977`, so dialed numbers would be ambiguous",
                "t.toml:26:38: area code `977` must be 3 or 4 digits starting with 0",
            ]
        );
    }

    #[test]
    fn no_prefectures_is_an_error() {
        let text = BASE.split("[[prefectures]]").next().unwrap_or_default();
        assert_eq!(
            errors(text),
            ["t.toml:1:1: the plan declares no prefecture center"]
        );
    }

    #[test]
    fn emergency_list_is_configurable() {
        let text = format!(
            "{BASE}\n[[emergency]]\nnumber = \"110\"\nservice = \"police\"\n\n[[emergency]]\nnumber = \"999\"\nservice = \"ambulance\"\n"
        );
        let plan = crate::load_str("t.toml", &text).unwrap();
        assert_eq!(
            plan.route("999", "09711234567", None),
            crate::Decision::Emergency {
                service: EmergencyService::Ambulance,
                prefecture: PrefectureId(1)
            }
        );
        // 119 is no longer an emergency number in this plan.
        assert!(matches!(
            plan.route("119", "", None),
            crate::Decision::NotFound { .. }
        ));
        let bad = format!(
            "{BASE}\n[[emergency]]\nnumber = \"110\"\nservice = \"cops\"\n\n[[emergency]]\nnumber = \"12345\"\nservice = \"fire\"\n"
        );
        assert_eq!(
            errors(&bad),
            [
                "t.toml:19:11: service `cops` is not one of police, fire, ambulance, traffic",
                "t.toml:22:10: number `12345` is the hotline number",
            ]
        );
    }

    #[test]
    fn hotline_may_not_be_an_emergency_number() {
        let text = BASE.replace("hotline = \"12345\"", "hotline = \"110\"");
        assert_eq!(
            errors(&text),
            ["t.toml:3:11: number `110` is the emergency number for police"]
        );
    }
}
