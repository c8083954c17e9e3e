//! What can be wrong with a dialplan, each problem with its `file:line:col`.
//!
//! Loading collects every problem it can find before giving up, so that ops fix a file in one pass
//! instead of one reload per typo.

use std::fmt;

use crate::plan::Mode;
use crate::uri::UriProblem;

/// Every problem found in a dialplan. Its `Display` is one `file:line:col: message` per line.
#[derive(Debug, thiserror::Error)]
pub struct Errors {
    /// The problems, in file order within each check.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// One problem and where it is.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{col}: {kind}")]
pub struct Problem {
    /// The file, as given to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters (not bytes), so that it matches what an editor shows next to
    /// Chinese department names.
    pub col: usize,
    /// What is wrong.
    #[source]
    pub kind: ProblemKind,
}

/// What is wrong, with the values involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The file or folder could not be read.
    #[error("cannot read: {source}")]
    Read {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A dialplan folder with no `*.toml` file in it.
    #[error("no *.toml dialplan in this folder")]
    NoPlan,
    /// A dialplan folder holds exactly one plan file, so that no two files can disagree.
    #[error("a dialplan folder holds exactly one *.toml file; this one also has `{other}`")]
    SeveralPlans {
        /// The other file's name.
        other: String,
    },
    /// Not TOML, or not the dialplan schema (an unknown key, a wrong type, a missing table).
    #[error("{message}")]
    Syntax {
        /// The TOML parser's own message.
        message: String,
    },
    /// A required line field is absent.
    #[error("this line needs `{field}`")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A mode's required field is absent.
    #[error("a {mode} line needs `{field}`")]
    MissingForMode {
        /// The field.
        field: &'static str,
        /// The line's mode.
        mode: Mode,
    },
    /// A field of another mode.
    #[error("`{field}` does not apply to a {mode} line")]
    NotForMode {
        /// The field.
        field: &'static str,
        /// The line's mode.
        mode: Mode,
    },
    /// `mode` is not one of the three.
    #[error("mode `{mode}` is not one of merge, dual, subcenter")]
    UnknownMode {
        /// What was written.
        mode: String,
    },
    /// A text field is empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// Not a number the switchboard can be dialed on.
    #[error("`{number}` is not a dialable number: 3 to 15 digits, not starting with 0")]
    BadNumber {
        /// What was written.
        number: String,
    },
    /// Two lines (or two emergency entries) with one number.
    #[error("number `{number}` is already used on line {first_line}")]
    DuplicateNumber {
        /// The number.
        number: String,
        /// Where it was first declared.
        first_line: usize,
    },
    /// A line that would steal calls from the hotline itself.
    #[error("number `{number}` is the hotline number")]
    HotlineCollision {
        /// The number.
        number: String,
    },
    /// A line that would steal calls from an emergency service.
    #[error("number `{number}` is the emergency number for {service}")]
    EmergencyCollision {
        /// The number.
        number: String,
        /// The service it belongs to.
        service: crate::plan::EmergencyService,
    },
    /// An area code that is not `0` and 2 or 3 digits.
    #[error("area code `{code}` must be 3 or 4 digits starting with 0")]
    BadAreaCode {
        /// What was written.
        code: String,
    },
    /// One area code, two prefectures.
    #[error("area code `{code}` is already claimed by prefecture `{first}`")]
    AreaCodeTwice {
        /// The code.
        code: String,
        /// The prefecture that claimed it first.
        first: String,
    },
    /// A code that starts another, so a dialed prefix could be read two ways.
    #[error("area code `{code}` is a prefix of area code `{other}`, so dialed numbers would be ambiguous")]
    AreaCodeNested {
        /// The shorter code.
        code: String,
        /// The longer one.
        other: String,
    },
    /// A prefecture without area codes could never be chosen from a number.
    #[error("prefecture `{id}` has no area code")]
    NoAreaCode {
        /// The prefecture.
        id: String,
    },
    /// The plan has no prefecture at all.
    #[error("the plan declares no prefecture center")]
    NoPrefectures,
    /// An id with characters other than lowercase letters, digits and `-`.
    #[error(
        "{what} `{id}` must be lowercase ASCII letters, digits and '-', starting with a letter"
    )]
    BadId {
        /// Which kind of id.
        what: &'static str,
        /// What was written.
        id: String,
    },
    /// Two centers with one id.
    #[error("center id `{id}` is already used")]
    DuplicateCenter {
        /// The id.
        id: String,
    },
    /// A reference to a center that the plan does not declare.
    #[error("no center has id `{id}`")]
    UnknownCenter {
        /// What was written.
        id: String,
    },
    /// Two centers or departments sharing a queue would mix their calls.
    #[error("queue `{queue}` is already used")]
    DuplicateQueue {
        /// The queue id.
        queue: String,
    },
    /// Two dual lines whose 12345-tagged calls would go to two different department queues.
    #[error("skill `{skill}` already belongs to the dual line on line {first_line}; a 12345 call with that skill could not tell which department queue to try")]
    SkillTwoDepartments {
        /// The skill.
        skill: String,
        /// The other dual line's position.
        first_line: usize,
    },
    /// A priority out of 0..=9.
    #[error("priority {value} is out of range 0..=9")]
    BadPriority {
        /// What was written.
        value: u8,
    },
    /// An overflow time out of 1..=300 s.
    #[error("overflow_after_s {value} is out of range 1..=300 (leave it out to overflow only when no department seat is logged in)")]
    BadOverflow {
        /// What was written.
        value: u32,
    },
    /// A prompt name with characters a file name should not carry.
    #[error("announcement `{name}` must be lowercase ASCII letters, digits, '-' and '_'")]
    BadPrompt {
        /// What was written.
        name: String,
    },
    /// A queue or skill id with unexpected characters.
    #[error("{what} `{id}` must be ASCII letters, digits, '-', '_' and '.'")]
    BadName {
        /// Which kind of name.
        what: &'static str,
        /// What was written.
        id: String,
    },
    /// A sub-center with nowhere to send calls.
    #[error("a subcenter trunk needs at least one SIP target")]
    EmptyTargets,
    /// A trunk target that is not a usable SIP URI.
    #[error("`{uri}` is not a SIP target: {problem}")]
    BadSipUri {
        /// What was written.
        uri: String,
        /// What is wrong with it.
        problem: UriProblem,
    },
    /// The same target twice in one trunk would just retry the same failure.
    #[error("`{uri}` is listed twice in this trunk")]
    DuplicateTarget {
        /// The target.
        uri: String,
    },
    /// A work-order endpoint that is not an `http://` URL.
    #[error("`{url}` is not a work-order URL: {problem}")]
    BadUrl {
        /// What was written.
        url: String,
        /// What is wrong with it.
        problem: UriProblem,
    },
    /// An emergency service name that is not one of the four.
    #[error("service `{service}` is not one of police, fire, ambulance, traffic")]
    UnknownService {
        /// What was written.
        service: String,
    },
}

/// Turns byte offsets of one file into [`Problem`]s.
pub(crate) struct Reporter<'a> {
    pub(crate) file: &'a str,
    pub(crate) text: &'a str,
    pub(crate) problems: Vec<Problem>,
}

impl Reporter<'_> {
    pub(crate) fn at(&mut self, span: std::ops::Range<usize>, kind: ProblemKind) {
        let (line, col) = line_col(self.text, span.start);
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line,
            col,
            kind,
        });
    }

    pub(crate) fn line_of(&self, span: &std::ops::Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }
}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        let t = "x = \"西宁\" y";
        assert_eq!(line_col(t, t.find('y').unwrap()), (1, 10));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
