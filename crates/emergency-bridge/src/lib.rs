//! The emergency bridge of the 12345 switchboard: which requests are emergency calls, which PSAP
//! (public-safety answering point: 110 police, 119 fire, 120 ambulance, 122 traffic) takes each
//! one, in which failover order, and the headers the call carries there.
//!
//! 12345 is not an emergency line, but callers in danger dial it anyway, agents hand calls over to
//! 110, and some callers reach the switchboard by dialing 110 itself through a trunk. A life may
//! depend on those calls, so the bridge comes before every other route and every limit.
//!
//! # How the daemon uses it (DESIGN.md §3, step 4)
//! 1. For every out-of-dialog request, before any digest challenge, rate limit, overload check,
//!    dialplan or queue: [`classify`] the Request-URI. `None` means the ordinary path.
//! 2. On `Some(service)`: find the caller's prefecture with [`caller_prefecture`] (for an agent's
//!    hand-off, from the call being handed off), then forward to each target of
//!    [`EmergencyBridge::route`] in order, with `Request-URI` [`PsapTarget::request_uri`],
//!    [`RESOURCE_PRIORITY`]`: `[`resource_priority`], and [`LINKAGE_HEADER`]`: `[`linkage_value`]
//!    when the call came through 12345.
//! 3. Move to the next target on a final response for which [`fails_over`] holds, or when a target
//!    sends no provisional response within [`EmergencyBridge::no_provisional_timeout`]. When the
//!    list is exhausted, answer 503 and raise an alarm: never a queue, a 404 or silence.
//! 4. For requests into 12345, [`EmergencyBridge::psap_source`] tells a PSAP trunk and its
//!    prefecture.
//!
//! # Contract
//! - No I/O but [`load_file`]'s read, no clock, no tokio. The failover timer is the daemon's: the
//!   bridge only says how long it is.
//! - Loading parses, then validates everything against the dialplan, and either gives a bridge or
//!   every problem as `file:line:col: message` ([`Errors`]). A bridge's [`PrefectureId`]s belong
//!   to the plan it was compiled against: compile it again when the plan reloads.
//! - Lookups are `&self` and do not allocate; classification reuses the dialplan's normalization
//!   and its list of emergency numbers, so the two cannot disagree.
//!
//! The config format is described field by field in [`EmergencyConfig`];
//! `examples/demo-psaps.toml` is the demo table the default config ships.

mod bridge;
mod classify;
mod config;
mod error;
mod headers;

use std::path::Path;

pub use bridge::{fails_over, service_number, EmergencyBridge, PsapTarget, PsapTier, SERVICES};
pub use classify::{caller_prefecture, classify, service_urn};
pub use config::{
    EmergencyConfig, EmergencyFile, PsapEntry, DEFAULT_NO_PROVISIONAL_TIMEOUT_MS,
    MAX_NO_PROVISIONAL_TIMEOUT_MS, MIN_NO_PROVISIONAL_TIMEOUT_MS,
};
pub use dialplan::{EmergencyService, PrefectureId, Transport};
pub use error::{Errors, Problem, ProblemKind, TargetProblem};
pub use headers::{
    linkage_value, parse_linkage, resource_priority, Linkage, LinkageError, LINKAGE_HEADER,
    MAX_LINKAGE_ID_BYTES, RESOURCE_PRIORITY,
};

/// Parses a file holding an `[emergency]` table ([`EmergencyFile`]) and compiles it against the
/// dialplan. `file` is the name used in messages.
pub fn load_str(
    file: &str,
    text: &str,
    plan: &dialplan::CompiledPlan,
) -> Result<EmergencyBridge, Errors> {
    let parsed: EmergencyFile = toml::from_str(text).map_err(|e| {
        let (line, col) = dialplan::line_col(text, e.span().map_or(0, |s| s.start));
        one(
            file,
            line,
            col,
            ProblemKind::Syntax {
                message: e.message().trim().to_owned(),
            },
        )
    })?;
    parsed.emergency.compile(plan, file, text)
}

/// Reads, parses and compiles a file holding an `[emergency]` table.
pub fn load_file(
    path: impl AsRef<Path>,
    plan: &dialplan::CompiledPlan,
) -> Result<EmergencyBridge, Errors> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| one(&name, 1, 1, ProblemKind::Read { source }))?;
    load_str(&name, &text, plan)
}

fn one(file: &str, line: usize, col: usize, kind: ProblemKind) -> Errors {
    Errors {
        problems: vec![Problem {
            file: file.to_owned(),
            line,
            col,
            kind,
        }],
    }
}

#[cfg(test)]
mod test_plan {
    pub(crate) fn qinghai() -> dialplan::CompiledPlan {
        dialplan::load_str(
            "qinghai.toml",
            include_str!("../../../dialplans/qinghai.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }
}
