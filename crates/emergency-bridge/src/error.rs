//! What can be wrong with an emergency config, each problem with its `file:line:col`.
//!
//! Validation collects every problem before giving up: a PSAP table is edited rarely and under
//! pressure, and ops should fix it in one pass rather than one reload per typo.

use std::fmt;

use dialplan::{EmergencyService, UriProblem};

/// Every problem found in an emergency config. Its `Display` is one `file:line:col: message` per
/// line.
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
    /// 1-based column, in characters, as an editor shows it.
    pub col: usize,
    /// What is wrong.
    #[source]
    pub kind: ProblemKind,
}

/// What is wrong, with the values involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The file could not be read.
    #[error("cannot read: {source}")]
    Read {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the schema (an unknown key, a wrong type, a missing field).
    #[error("{message}")]
    Syntax {
        /// The TOML parser's own message.
        message: String,
    },
    /// The failover timeout is outside the range that keeps failover both safe and quick.
    #[error("no_provisional_timeout_ms {value} is out of range {min}..={max}")]
    TimeoutRange {
        /// What was written.
        value: u64,
        /// Lowest allowed value.
        min: u64,
        /// Highest allowed value.
        max: u64,
    },
    /// A prefecture the dialplan does not declare: its callers could never be routed here.
    #[error("no center `{id}` in dialplan {plan} (known: {known})")]
    UnknownPrefecture {
        /// What was written.
        id: String,
        /// The dialplan checked against.
        plan: String,
        /// The plan's center ids, comma-separated.
        known: String,
    },
    /// A service name that is not one of the four.
    #[error("service `{service}` is not one of police, fire, ambulance, traffic")]
    UnknownService {
        /// What was written.
        service: String,
    },
    /// Two entries for one prefecture and service: which list would be tried first is unclear.
    #[error("prefecture `{prefecture}` already has a {service} entry on line {first_line}")]
    DuplicateEntry {
        /// The prefecture id.
        prefecture: String,
        /// The service.
        service: EmergencyService,
        /// Where the first entry is.
        first_line: usize,
    },
    /// An entry with nowhere to send calls.
    #[error("a PSAP entry needs at least one target")]
    NoTargets,
    /// A target that cannot be reached without more than an IP address and port.
    #[error("`{uri}` is not a PSAP target: {problem}")]
    BadTarget {
        /// What was written.
        uri: String,
        /// What is wrong with it.
        problem: TargetProblem,
    },
    /// The same target twice in one entry would just retry the same failure.
    #[error("`{uri}` is listed twice in this entry")]
    DuplicateTarget {
        /// The target.
        uri: String,
    },
    /// A service the province has no PSAP for: callers whose prefecture is unknown, and those of
    /// the prefectures listed without their own entry, would have no path at all.
    #[error("no provincial {service} PSAP: calls from {without} would have no path (add an entry with prefecture `{province}`)")]
    NoPath {
        /// The service.
        service: EmergencyService,
        /// The centers left without a path, comma-separated.
        without: String,
        /// The provincial center's id.
        province: String,
    },
}

/// Why a PSAP target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetProblem {
    /// Not a SIP target (scheme, user part, host, port or parameter).
    #[error(transparent)]
    Uri(#[from] UriProblem),
    /// A host name: resolving it would put DNS, and its outages, between the caller and 110.
    #[error("the host must be an IP address, not a name")]
    HostName,
    /// `sips:` asks for TLS; another transport would contradict it.
    #[error("a sips: target can only use transport=tls")]
    SecureTransport,
}
