//! The JSON the admin API speaks (docs/openapi.yaml describes the same shapes). `ctl` reads them
//! back with the same types, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// Emergency calls since start, counted by the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyTally {
    /// Emergency calls a PSAP answered.
    pub connected: u64,
    /// Emergency calls no PSAP answered (503 and an alarm).
    pub failed: u64,
    /// PSAP targets skipped for the next one.
    pub failovers: u64,
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationInfo {
    pub user: String,
    pub contact: String,
    pub source: String,
    pub transport: String,
    pub expires_in_s: u64,
}

/// One agent, as the seat manager sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    /// `logged_out`, `available`, `ringing`, `on_call`, `wrap_up` or `break`.
    pub state: String,
    /// The break's reason code (`missed_calls` breaks have none).
    pub break_reason: Option<u16>,
    pub registered: bool,
    /// Whether a new call may be offered right now.
    pub offerable: bool,
    /// Missed offers in a row.
    pub missed_in_row: u32,
    /// The seat-manager call it is being offered or is on.
    pub call: Option<u64>,
}

/// Agents of a queue by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCountsInfo {
    pub logged_out: u32,
    pub available: u32,
    pub ringing: u32,
    pub on_call: u32,
    pub wrap_up: u32,
    pub on_break: u32,
}

/// A caller in a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingCaller {
    /// The seat manager's call number.
    pub call: u64,
    /// The caller's number, redacted (`138******00`).
    pub caller: String,
    /// `waiting` or `ringing`.
    pub phase: String,
    /// Agents being rung.
    pub ringing: Vec<String>,
    /// Seconds since the call reached the switchboard.
    pub waited_s: f64,
    pub priority: u8,
}

/// A queue: counters since the daemon started, and the live picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub id: String,
    /// The center the queue belongs to (seat config).
    pub center: Option<String>,
    pub offered: u64,
    pub answered: u64,
    pub answered_within_15s: u64,
    pub abandoned: u64,
    pub abandoned_short: u64,
    pub redirected: u64,
    pub overflowed: u64,
    pub rejected: u64,
    pub waiting_now: u32,
    pub ringing_now: u32,
    pub longest_wait_s: Option<f64>,
    /// Answered within 15 s / answered (GB/T 33358), since start; `null` before the first answer.
    pub service_level: Option<f64>,
    pub agents: AgentCountsInfo,
    /// Callers waiting or ringing, longest first.
    pub callers: Vec<WaitingCaller>,
}

/// A call the switchboard is handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallInfo {
    pub sip_call_id: String,
    /// `routing` (being placed), `queued`, `ringing` (offered to an agent) or `connected`.
    pub state: String,
    /// The caller's number, redacted.
    pub caller: String,
    pub queue: Option<String>,
    pub agent: Option<String>,
    /// The emergency service (110, 119, 120, 122) of an emergency call.
    pub emergency: Option<String>,
    /// Seconds since the call reached the switchboard (seat calls only).
    pub age_s: Option<f64>,
}

/// What the core publishes every second for the wallboard and the event stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Unix time of the snapshot, ms.
    pub unix_ms: i64,
    pub registrations: usize,
    pub queues: Vec<QueueInfo>,
    pub calls: usize,
    pub emergency: EmergencyTally,
}

/// The answer to an agent-state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStateChange {
    pub id: String,
    pub state: String,
}

/// The answer to a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResult {
    pub ok: bool,
    /// The dialplan now in service (`ok`), or every problem found (`file:line:col: message`).
    pub plan: Option<String>,
    pub errors: Vec<String>,
}

/// An error, as every non-2xx answer carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `GET /api/v1/ha`: this node of the HA pair. Also the body of the 503 a standby answers every
/// other API call with (`error` set then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaStatus {
    /// `[ha] node`.
    pub node: String,
    /// `standby` (holds no lock, serves nothing), `active` or `fenced` (lost the database:
    /// emergency calls only).
    pub role: String,
    /// Unix ms of the last successful exchange with the database (0: none yet).
    pub last_db_ok_ms: i64,
    /// Registrations held in memory: on a standby, the warm copy it will serve with.
    pub registrations: u64,
    /// Answered calls taken over from the other node, waiting for their BYE.
    pub inherited_calls: u64,
    /// Why the request was not served (a standby's 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of `POST /api/v1/work-orders`: a work order an agent creates by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkOrder {
    /// The agent creating it: an agent of the seat config.
    pub agent: String,
    /// The SIP Call-ID of the call it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The caller to call back (digits, optional leading `+`); stored in full, shown redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The caller's prefecture (a center of the seat config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefecture: Option<String>,
    /// What it is about (required, at most 2000 characters).
    pub summary: String,
    /// The department that should handle it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

/// The answer to `POST /api/v1/work-orders`: the order was handed to the store's writer (it is
/// readable by `GET /api/v1/work-orders/{id}` once committed, normally within milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderCreated {
    pub id: String,
    /// `open`.
    pub status: String,
}

/// The body of `POST /api/v1/work-orders/{id}/status`: a step in an order's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrderStep {
    /// The agent acting.
    pub agent: String,
    /// `open`, `in-progress`, `closed` or `cancelled`.
    pub status: String,
    /// Free text for the history.
    #[serde(default)]
    pub note: String,
}

/// Why the core refused a work-order request.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkOrderRefusal {
    /// Bad input (400).
    Invalid(String),
    /// No store (404).
    NoStore,
    /// The store's queue is full or closed (503).
    Busy(String),
}
