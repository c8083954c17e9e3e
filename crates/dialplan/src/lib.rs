//! Dialplans of the 12345 switchboard: the TOML format ops edit, its validation, and the compiled
//! table that routes each call.
//!
//! A province folds its department hotlines into 12345, each line in one of three modes (merge,
//! dual, sub-center; see [`Mode`]). There is no IVR menu in front of the agents, so the dialed number
//! and the caller's location do all the routing: [`CompiledPlan::route`] maps a dialed number, a
//! caller number and the trunk's prefecture to a [`Decision`].
//!
//! # Contract
//! - Loading ([`load_dir`], [`load_file`], [`load_str`]) parses, then validates everything, and
//!   either gives a plan or every problem found as `file:line:col: message` ([`Errors`]). The
//!   daemon swaps the plan in only on success, so a bad edit keeps the old plan running.
//! - A [`CompiledPlan`] never changes. Lookups are `&self`, do not allocate, and cost one or a few
//!   hash probes of a `u64` plus a pass over the dial string.
//! - No I/O but the loaders' file reads, no clock, no tokio: the daemon owns all of that.
//!
//! The file format is described field by field in [`schema`]; `dialplans/qinghai.toml` is the
//! shipped example.

mod compile;
mod error;
mod number;
mod plan;
pub mod schema;
mod uri;

use std::path::Path;

pub use error::{line_col, Errors, Problem, ProblemKind};
pub use number::{AreaCode, Digits, NumberError, MAX_DIGITS};
pub use plan::{
    Center, CompiledPlan, Decision, EmergencyNumber, EmergencyService, Line, LineId, LineRoute,
    Mode, Normalized, NotFoundReason, Overflow, PrefectureId, Prompt, QueueId, QueueRoute, Skill,
};
pub use uri::{parse_sip_target, SipTarget, Transport, UriProblem};

/// Parses and validates plan text. `name` is the file name used in messages (and
/// [`CompiledPlan::name`]).
pub fn load_str(name: &str, text: &str) -> Result<CompiledPlan, Errors> {
    compile::compile(name, text).map_err(|problems| Errors { problems })
}

/// Reads, parses and validates one plan file.
pub fn load_file(path: impl AsRef<Path>) -> Result<CompiledPlan, Errors> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| one(&name, ProblemKind::Read { source }))?;
    load_str(&name, &text)
}

/// Loads the plan of a dialplan folder, which holds exactly one `*.toml` file (other files, such
/// as a README, are ignored). One file per folder, rather than a plan split over several, keeps
/// every cross-reference (numbers, area codes, centers) checkable within one file and makes it
/// plain which file a reload takes.
pub fn load_dir(path: impl AsRef<Path>) -> Result<CompiledPlan, Errors> {
    let dir = path.as_ref();
    let name = dir.display().to_string();
    let entries =
        std::fs::read_dir(dir).map_err(|source| one(&name, ProblemKind::Read { source }))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| one(&name, ProblemKind::Read { source }))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    match files.as_slice() {
        [] => Err(one(&name, ProblemKind::NoPlan)),
        [file] => load_file(file),
        [first, second, ..] => Err(one(
            &first.display().to_string(),
            ProblemKind::SeveralPlans {
                other: second
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            },
        )),
    }
}

fn one(file: &str, kind: ProblemKind) -> Errors {
    Errors {
        problems: vec![Problem {
            file: file.to_owned(),
            line: 1,
            col: 1,
            kind,
        }],
    }
}
