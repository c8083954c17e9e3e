//! The dialplan file format, as ops write it. This module is the reference for `dialplans/*.toml`.
//!
//! A plan has four parts: `[platform]`, `[provincial_center]`, `[[prefectures]]` and `[[lines]]`, and
//! optionally `[[emergency]]`. Every table refuses unknown keys, so a typo is an error rather than a
//! silently ignored setting. Values are positioned ([`Spanned`]) so that validation can point at the
//! exact `file:line:col` of each problem.
//!
//! Line fields are all optional at this stage on purpose: a missing or misplaced field is reported
//! by validation together with every other problem, instead of stopping at the first one as the
//! TOML deserializer would. Numbers and area codes are strings because `0971` must keep its zero.

use serde::Deserialize;
use toml::Spanned;

/// One dialplan file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The hotline number and the province this plan serves.
    pub platform: Platform,
    /// The provincial 12345 center: it coordinates, and answers callers whose prefecture is unknown.
    pub provincial_center: ProvincialCenter,
    /// The prefecture-level (市州) 12345 centers, which answer most calls.
    #[serde(default)]
    pub prefectures: Vec<Prefecture>,
    /// The legacy department hotlines folded into 12345, each in one of the three modes.
    #[serde(default)]
    pub lines: Vec<Spanned<Line>>,
    /// Numbers that are never queued: they go to the emergency bridge. Leaving the key out means
    /// 110 police, 119 fire, 120 ambulance and 122 traffic accidents; writing it replaces that list.
    pub emergency: Option<Vec<EmergencyNumber>>,
}

/// The platform every line folds into.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// The unified hotline number, `"12345"`. A call to it goes to the 12345 queue of the caller's
    /// prefecture, with no skill: the agent finds the topic by talking, never through an IVR menu.
    pub hotline: Spanned<String>,
    /// The province, as people read it (`"青海省"`). A label for logs and the wallboard only.
    pub province: Spanned<String>,
    /// Queue priority, 0 to 9, higher answered first, of calls to the hotline itself and of lines
    /// that set no `priority`. 5 when left out.
    pub default_priority: Option<Spanned<u8>>,
}

/// The provincial 12345 center.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvincialCenter {
    /// Short id (lowercase letters, digits, `-`), used by trunks' `prefecture` setting and lines'
    /// `center`, e.g. `"province"`.
    pub id: Spanned<String>,
    /// Name for people (`"青海省12345热线中心"`).
    pub name: Spanned<String>,
    /// Id of the seat-manager queue its agents answer.
    pub queue: Spanned<String>,
}

/// A prefecture-level 12345 center and the area codes it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefecture {
    /// Short id (lowercase letters, digits, `-`), e.g. `"xining"`; trunks name their prefecture by it.
    pub id: Spanned<String>,
    /// Name for people (`"西宁市"`).
    pub name: Spanned<String>,
    /// Long-distance area codes with their leading `0` (`"0971"`), 3 or 4 digits. They tell the
    /// caller's prefecture from the carrier's prefix on the dialed number or from a fixed-line
    /// caller number. No code may belong to two prefectures or be a prefix of another.
    pub area_codes: Vec<Spanned<String>>,
    /// Id of the seat-manager queue of this center's 12345 agents.
    pub queue: Spanned<String>,
}

/// A legacy department hotline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The number people dial, national short form (`"12315"`): 3 to 15 digits, not starting with
    /// `0` (that would read as an area code). Required.
    pub number: Option<Spanned<String>>,
    /// The department that owns the line (`"青海省市场监督管理局"`). Required; a label.
    pub department: Option<Spanned<String>>,
    /// How the line is folded in: `"merge"` (整体并入: the number is retired and its calls land on
    /// 12345 agents), `"dual"` (双号并行: the department's seats first, then 12345) or
    /// `"subcenter"` (设分中心: forwarded to the ministry's platform, 12345 as fallback). Required.
    pub mode: Option<Spanned<String>>,
    /// The topic a 12345 agent needs for these calls (`"market-supervision"`): the seat manager
    /// matches it to agents' skills. Required in every mode, because dual and sub-center calls
    /// can fall back to 12345 agents too.
    pub skill: Option<Spanned<String>>,
    /// Queue priority, 0 to 9, higher answered first. `platform.default_priority` when left out.
    pub priority: Option<Spanned<u8>>,
    /// Id of one center that answers all of this line's 12345 calls, whatever the caller's
    /// prefecture; for topics whose trained agents sit in one place. Left out: the caller's
    /// prefecture center answers.
    pub center: Option<Spanned<String>>,
    /// merge only: name of a prompt played while the call waits, telling that the number has moved
    /// to 12345 (lowercase letters, digits, `-`, `_`). No announcement when left out.
    pub announcement: Option<Spanned<String>>,
    /// dual only, required: id of the department's own queue of professional seats (`"dept-12315"`).
    pub department_queue: Option<Spanned<String>>,
    /// dual only: seconds a call may wait in the department queue before it overflows to the 12345
    /// queue, 1 to 300. Left out, the call overflows only when no department seat is logged in,
    /// and otherwise waits for the department. With it, an empty department still overflows at once.
    pub overflow_after_s: Option<Spanned<u32>>,
    /// subcenter only, required: the sub-center's SIP targets (`"sip:host:port"`, optionally with
    /// `;transport=udp|tcp|tls`), tried in order. The dialed number is kept as the user part.
    pub trunk: Option<Spanned<Vec<Spanned<String>>>>,
    /// subcenter only, required: the sub-center's HTTP endpoint (`http://host[:port][/path]`) that
    /// takes this line's work orders, both for calls it took and for the callback opened when every
    /// trunk target failed. The daemon's outbox POSTs them there as JSON with an `Idempotency-Key`.
    pub workorder_url: Option<Spanned<String>>,
}

/// A number the emergency bridge takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyNumber {
    /// The short number, e.g. `"110"`.
    pub number: Spanned<String>,
    /// Which service answers it: `"police"`, `"fire"`, `"ambulance"` or `"traffic"`.
    pub service: Spanned<String>,
}
