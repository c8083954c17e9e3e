//! The emergency section of the switchboard's config, as ops write it.
//!
//! ```toml
//! [emergency]
//! no_provisional_timeout_ms = 2000
//! psap_trunks_as_sources = true
//!
//! [[emergency.psaps]]
//! prefecture = "xining"
//! service = "police"
//! targets = ["sip:127.0.1.1:5110", "sip:10.9.0.1:5110;transport=tcp"]
//! ```
//!
//! [`EmergencyConfig`] is the `[emergency]` table itself, so the daemon's config struct can hold it
//! as a field; [`EmergencyFile`] is a file with only that table (`examples/demo-psaps.toml`). Every
//! table refuses unknown keys, and values are positioned ([`Spanned`]) so that validation can point
//! at the exact `file:line:col` of each problem. Prefectures and services are strings here, not
//! enums, so that a typo is reported with every other problem instead of stopping the parse.

use serde::Deserialize;
use toml::Spanned;

/// Failover timeout when `no_provisional_timeout_ms` is left out: long enough for a healthy PSAP's
/// 100 Trying after one lost INVITE (retransmitted at T1 = 500 ms), short enough that a caller
/// reporting a fire is not left in silence.
pub const DEFAULT_NO_PROVISIONAL_TIMEOUT_MS: u64 = 2000;

/// Shortest allowed failover timeout. Below one T1 a live PSAP whose first INVITE was lost would
/// be skipped before the retransmission could reach it.
pub const MIN_NO_PROVISIONAL_TIMEOUT_MS: u64 = 500;

/// Longest allowed failover timeout. Every target adds up to this much silence before the next
/// one rings; ten seconds per dead PSAP is already a long time for a caller in danger.
pub const MAX_NO_PROVISIONAL_TIMEOUT_MS: u64 = 10_000;

/// A file holding only the emergency section, such as `examples/demo-psaps.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyFile {
    /// The `[emergency]` table.
    pub emergency: EmergencyConfig,
}

/// The `[emergency]` table: where each prefecture's emergency calls go, and when to fail over.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyConfig {
    /// How long a PSAP target may stay silent, with no provisional response (not even 100 Trying),
    /// before the next target is tried. 500 to 10000; 2000 when left out.
    pub no_provisional_timeout_ms: Option<Spanned<u64>>,
    /// Whether the PSAPs' addresses are also trusted as trunks, so that 110/119/120 can transfer a
    /// non-emergency matter into 12345 without a trunk entry of their own. Such a call enters the
    /// queue of the PSAP's prefecture (or the caller's, when the number tells) ahead of ordinary
    /// callers. `true` when left out.
    #[serde(default = "default_true")]
    pub psap_trunks_as_sources: bool,
    /// One entry per prefecture and service. A prefecture without its own entry for a service
    /// uses the province's; the province needs an entry for every service.
    pub psaps: Option<Spanned<Vec<Spanned<PsapEntry>>>>,
}

/// The PSAP targets of one service in one prefecture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsapEntry {
    /// A center id of the dialplan (`"xining"`, `"haixi"`), or the provincial center's id
    /// (`"province"` in the Qinghai plan) for the PSAPs that back every prefecture up.
    pub prefecture: Spanned<String>,
    /// `"police"` (110), `"fire"` (119), `"ambulance"` (120) or `"traffic"` (122).
    pub service: Spanned<String>,
    /// SIP targets tried in order, then the province's for the same service:
    /// `sip:` or `sips:`, an IP address (IPv6 in brackets) and an optional port, with an optional
    /// `;transport=udp|tcp|tls`, and no user part (the switchboard puts the service number there).
    /// Host names are refused: resolving one would put DNS, and its outages, in front of 110.
    pub targets: Spanned<Vec<Spanned<String>>>,
}

fn default_true() -> bool {
    true
}
