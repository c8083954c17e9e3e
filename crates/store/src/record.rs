//! The records the switchboard persists: call detail records, work orders, outbox deliveries and the
//! key/value snapshots (registrations, agent state) that let a restart keep agents logged in.
//!
//! Records are plain data built on the hot path and handed to [`Store::submit`](crate::Store::submit).
//! Every valid record can be written: the schema has no constraint that a record built through
//! these types could violate (no foreign keys, upserts where a key could repeat). That matters
//! because the writer retries a failed batch until it commits rather than dropping what it was
//! given, and a record that could never commit would stall it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Unix time in milliseconds. Wall time, not a monotonic instant: records outlive the process,
/// and exports, the outbox schedule and registrations' expiry are all compared across restarts.
pub type UnixMs = i64;

/// How the dialed line reaches 12345 (DESIGN.md §1). The dialplan has its own `Mode` for legacy
/// lines; this one adds the two kinds of call that are not a legacy line, so that every CDR can
/// say which it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineMode {
    /// 12345 dialed directly.
    Hotline,
    /// 整体并入: a retired number answered by 12345 agents.
    Merge,
    /// 双号并行: the department's seats first, overflow to 12345.
    Dual,
    /// 设分中心: the ministry's platform answers; 12345 is the fallback.
    Subcenter,
    /// 110/119/120/122, handed to a PSAP.
    Emergency,
}

impl LineMode {
    /// The stable text stored in the database and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            LineMode::Hotline => "hotline",
            LineMode::Merge => "merge",
            LineMode::Dual => "dual",
            LineMode::Subcenter => "subcenter",
            LineMode::Emergency => "emergency",
        }
    }

    /// Inverse of [`LineMode::as_str`].
    pub fn parse(s: &str) -> Option<LineMode> {
        Some(match s {
            "hotline" => LineMode::Hotline,
            "merge" => LineMode::Merge,
            "dual" => LineMode::Dual,
            "subcenter" => LineMode::Subcenter,
            "emergency" => LineMode::Emergency,
            _ => return None,
        })
    }
}

/// How a call ended, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Outcome {
    /// An agent (or department seat) took the call.
    Answered,
    /// The caller hung up before anyone answered.
    Abandoned,
    /// The call left its entry queue for another center and ended there unanswered by policy
    /// (for example the provincial overflow also timed out).
    Overflowed,
    /// An agent transferred the call (REFER) to a sub-center, a department seat or another queue.
    Transferred,
    /// The call went to a PSAP (110/119/120/122).
    EmergencyHandoff,
    /// The switchboard rejected or lost the call with this SIP status.
    Failed {
        /// The final SIP status sent to the caller (e.g. 503).
        status: u16,
    },
    /// An answered call inherited by the other node of an HA pair whose BYE never reached it
    /// within the longest call allowed (`[ha] max_call_s`): it ended at some unknown time after
    /// the failover. `ended_ms` is when the new node gave up on it.
    FailoverLost,
}

impl Outcome {
    /// The stable outcome name stored in the database and exports; a failure's status is stored
    /// beside it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Abandoned => "abandoned",
            Outcome::Overflowed => "overflowed",
            Outcome::Transferred => "transferred",
            Outcome::EmergencyHandoff => "emergency-handoff",
            Outcome::Failed { .. } => "failed",
            Outcome::FailoverLost => "failover-lost",
        }
    }

    /// The SIP status of a failure, `None` otherwise.
    pub fn status(self) -> Option<u16> {
        match self {
            Outcome::Failed { status } => Some(status),
            _ => None,
        }
    }

    /// Inverse of [`Outcome::as_str`] + [`Outcome::status`].
    pub fn parse(s: &str, status: Option<u16>) -> Option<Outcome> {
        Some(match s {
            "answered" => Outcome::Answered,
            "abandoned" => Outcome::Abandoned,
            "overflowed" => Outcome::Overflowed,
            "transferred" => Outcome::Transferred,
            "emergency-handoff" => Outcome::EmergencyHandoff,
            "failed" => Outcome::Failed { status: status? },
            "failover-lost" => Outcome::FailoverLost,
            _ => return None,
        })
    }
}

/// A call detail record: one per call, written when the call ends.
///
/// `caller` is kept in full, because callbacks and work orders need it; its `Debug` output is
/// redacted so that logging a CDR never leaks the number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    /// The SIP Call-ID of the caller's leg.
    pub call_id: String,
    /// The caller's number as received (From user part, or P-Asserted-Identity), in full.
    pub caller: String,
    /// The number as dialed (Request-URI user part, e.g. `097612345`).
    pub dialed: String,
    /// The dialed number after the dialplan stripped the carrier's area-code prefix (`12345`).
    pub normalized: String,
    /// The dialplan line that matched (`"12315"`), if any.
    pub line: Option<String>,
    /// How that line reaches 12345.
    pub mode: Option<LineMode>,
    /// The caller's prefecture as an area code (`"0976"`), if known.
    pub prefecture: Option<String>,
    /// The queue the call entered first.
    pub entry_queue: Option<String>,
    /// The queue the call was answered from (differs from `entry_queue` after an overflow).
    pub answer_queue: Option<String>,
    /// The agent who answered.
    pub agent: Option<String>,
    /// The PSAP or sub-center the call was handed to.
    pub target: Option<String>,
    /// When the INVITE arrived.
    pub arrival_ms: UnixMs,
    /// When the call was queued.
    pub queued_ms: Option<UnixMs>,
    /// When the call was first offered to an agent.
    pub offered_ms: Option<UnixMs>,
    /// When someone answered.
    pub answered_ms: Option<UnixMs>,
    /// When the call ended.
    pub ended_ms: UnixMs,
    /// How it ended.
    pub outcome: Outcome,
    /// The work order this call created or belongs to.
    pub work_order: Option<String>,
}

impl fmt::Debug for Cdr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cdr")
            .field("call_id", &self.call_id)
            .field("caller", &format_args!("{}", Redacted(&self.caller)))
            .field("dialed", &self.dialed)
            .field("normalized", &self.normalized)
            .field("line", &self.line)
            .field("mode", &self.mode)
            .field("prefecture", &self.prefecture)
            .field("entry_queue", &self.entry_queue)
            .field("answer_queue", &self.answer_queue)
            .field("agent", &self.agent)
            .field("target", &self.target)
            .field("arrival_ms", &self.arrival_ms)
            .field("queued_ms", &self.queued_ms)
            .field("offered_ms", &self.offered_ms)
            .field("answered_ms", &self.answered_ms)
            .field("ended_ms", &self.ended_ms)
            .field("outcome", &self.outcome)
            .field("work_order", &self.work_order)
            .finish()
    }
}

/// Masks a phone number for logs the way the daemon does (`138******00`); service numbers of six
/// characters or fewer are not personal data and stay whole.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.chars().count();
        if n <= 6 {
            return f.write_str(self.0);
        }
        for (i, c) in self.0.chars().enumerate() {
            if i < 3 || i >= n - 2 {
                write!(f, "{c}")?;
            } else {
                f.write_str("*")?;
            }
        }
        Ok(())
    }
}

/// Why a work order (工单) exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkOrderKind {
    /// An agent transferred the call to a sub-center; the order follows it over HTTP.
    SubcenterTransfer,
    /// A sub-center trunk failed and the caller fell back to 12345: someone must call back.
    SubcenterCallback,
    /// The caller hung up after waiting N seconds: someone must call back.
    AbandonedCallback,
    /// The linkage record of an emergency hand-off to 110/119/120/122.
    EmergencyLinkage,
    /// Created by an agent through the admin API.
    AgentCreated,
}

impl WorkOrderKind {
    /// The stable text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkOrderKind::SubcenterTransfer => "subcenter-transfer",
            WorkOrderKind::SubcenterCallback => "subcenter-callback",
            WorkOrderKind::AbandonedCallback => "abandoned-callback",
            WorkOrderKind::EmergencyLinkage => "emergency-linkage",
            WorkOrderKind::AgentCreated => "agent-created",
        }
    }

    /// Inverse of [`WorkOrderKind::as_str`].
    pub fn parse(s: &str) -> Option<WorkOrderKind> {
        Some(match s {
            "subcenter-transfer" => WorkOrderKind::SubcenterTransfer,
            "subcenter-callback" => WorkOrderKind::SubcenterCallback,
            "abandoned-callback" => WorkOrderKind::AbandonedCallback,
            "emergency-linkage" => WorkOrderKind::EmergencyLinkage,
            "agent-created" => WorkOrderKind::AgentCreated,
            _ => return None,
        })
    }
}

/// Where a work order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkOrderStatus {
    /// Created, nobody has acted on it yet.
    Open,
    /// Handed to the outbox for a sub-center; not yet accepted there.
    Dispatched,
    /// The sub-center's endpoint accepted it.
    Delivered,
    /// Someone is working on it (a callback is being made, the department is handling it).
    InProgress,
    /// Done.
    Closed,
    /// Withdrawn (duplicate, caller reached by other means).
    Cancelled,
}

impl WorkOrderStatus {
    /// The stable text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkOrderStatus::Open => "open",
            WorkOrderStatus::Dispatched => "dispatched",
            WorkOrderStatus::Delivered => "delivered",
            WorkOrderStatus::InProgress => "in-progress",
            WorkOrderStatus::Closed => "closed",
            WorkOrderStatus::Cancelled => "cancelled",
        }
    }

    /// Inverse of [`WorkOrderStatus::as_str`].
    pub fn parse(s: &str) -> Option<WorkOrderStatus> {
        Some(match s {
            "open" => WorkOrderStatus::Open,
            "dispatched" => WorkOrderStatus::Dispatched,
            "delivered" => WorkOrderStatus::Delivered,
            "in-progress" => WorkOrderStatus::InProgress,
            "closed" => WorkOrderStatus::Closed,
            "cancelled" => WorkOrderStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One step in a work order's life: who moved it to which status, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened.
    pub at_ms: UnixMs,
    /// The status the order has after this step.
    pub status: WorkOrderStatus,
    /// Who acted: an agent id, `"switchboard"`, `"outbox"`, or a sub-center name.
    pub actor: String,
    /// Free text for the humans reading the history.
    pub note: String,
}

/// A work order (工单), as created. Later changes are [`Record::WorkOrderUpdate`]s that append to
/// its history, so the history is never rewritten.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrder {
    /// Unique id, chosen by the creator before submission (see [`WorkOrderIds`]) so that the CDR
    /// written in the same breath can refer to it.
    pub id: String,
    /// Why it exists.
    pub kind: WorkOrderKind,
    /// The current status (the status of the last history entry).
    pub status: WorkOrderStatus,
    /// When it was created.
    pub created_ms: UnixMs,
    /// When it last changed.
    pub updated_ms: UnixMs,
    /// The call it came from, if any.
    pub call_id: Option<String>,
    /// The caller to call back, in full (redacted in `Debug`).
    pub caller: Option<String>,
    /// The caller's prefecture (area code), which decides who handles it.
    pub prefecture: Option<String>,
    /// The sub-center HTTP endpoint the order is delivered to, if any.
    pub subcenter_endpoint: Option<String>,
    /// Domain details (department, summary, linkage data), as the daemon and admin API define them.
    pub payload: serde_json::Value,
    /// Every step so far, oldest first. Filled by queries; on creation, usually one entry.
    pub history: Vec<HistoryEntry>,
}

impl fmt::Debug for WorkOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkOrder")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("created_ms", &self.created_ms)
            .field("updated_ms", &self.updated_ms)
            .field("call_id", &self.call_id)
            .field(
                "caller",
                &self.caller.as_deref().map(|c| Redacted(c).to_string()),
            )
            .field("prefecture", &self.prefecture)
            .field("subcenter_endpoint", &self.subcenter_endpoint)
            .field("payload", &"…")
            .field("history", &self.history)
            .finish()
    }
}

/// Makes work-order ids on the hot path without asking the database, so a CDR and its work order
/// can be submitted together. Ids sort by creation time and stay unique across restarts as long as
/// the clock does not step back by more than the process's uptime and `node` differs between the
/// two nodes of an HA pair.
#[derive(Debug, Clone)]
pub struct WorkOrderIds {
    node: String,
    last_ms: UnixMs,
    counter: u32,
}

impl WorkOrderIds {
    /// `node` names this switchboard (`"a"`, `"b"` in an HA pair).
    pub fn new(node: impl Into<String>) -> WorkOrderIds {
        WorkOrderIds {
            node: node.into(),
            last_ms: 0,
            counter: 0,
        }
    }

    /// The next id, `WO-<node>-<unix ms, 13 digits>-<counter, 4 digits>`. A clock that steps
    /// back keeps the last time seen, so ids never repeat within one process.
    pub fn next(&mut self, now_ms: UnixMs) -> String {
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.counter = 0;
        } else {
            self.counter += 1;
            if self.counter > 9999 {
                self.last_ms += 1;
                self.counter = 0;
            }
        }
        format!("WO-{}-{:013}-{:04}", self.node, self.last_ms, self.counter)
    }
}

/// A work order to deliver to a sub-center's HTTP endpoint through the [`Outbox`](crate::Outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    /// The sub-center endpoint (an URL). Deliveries to one endpoint happen in submission order.
    pub endpoint: String,
    /// The JSON body to POST.
    pub body: String,
    /// Sent as the `Idempotency-Key` header; the sub-center keeps one effect per key, which
    /// makes our at-least-once retries exactly-once there.
    pub idempotency_key: String,
    /// The work order this delivers, if any; on success the outbox records it as delivered.
    pub work_order: Option<String>,
    /// When it was queued (for the audit trail; deliveries are due at once).
    pub created_ms: UnixMs,
}

/// Which key/value snapshot a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvSpace {
    /// Registrar bindings, keyed by AOR + contact; they carry their expiry.
    Registration,
    /// Seat-manager agent state (logged in, break, skills in force), keyed by agent id.
    AgentState,
    /// An answered call of an HA pair, keyed by SIP Call-ID, until its BYE: the CDR so far, so
    /// that the other node can close it after a failover. Expires at the longest call allowed.
    OpenCall,
}

impl KvSpace {
    /// The stable text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            KvSpace::Registration => "registration",
            KvSpace::AgentState => "agent-state",
            KvSpace::OpenCall => "open-call",
        }
    }
}

/// One key/value row of a snapshot. The value's shape belongs to the daemon (sip-core's binding,
/// the seat manager's agent); the store only keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvRow {
    /// Which snapshot.
    pub space: KvSpace,
    /// The key within it.
    pub key: String,
    /// The state.
    pub value: serde_json::Value,
    /// When the row stops being valid (a registration's expiry); `None` keeps it until deleted.
    pub expires_ms: Option<UnixMs>,
    /// When it was written.
    pub updated_ms: UnixMs,
}

/// Something to persist. Submitted in order; committed in that order.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A finished call.
    Cdr(Box<Cdr>),
    /// A new work order (an existing id is replaced, history included, so a resubmission after a
    /// `Full` is harmless).
    WorkOrder(Box<WorkOrder>),
    /// A step in an existing order: appends to its history and sets its status.
    WorkOrderUpdate {
        /// The order.
        id: String,
        /// The step.
        entry: HistoryEntry,
    },
    /// Queue a delivery in the outbox.
    Deliver(Box<NewDelivery>),
    /// Insert or replace a snapshot row.
    Put(Box<KvRow>),
    /// Delete a snapshot row (unregister, agent removed from the roster).
    Delete {
        /// Which snapshot.
        space: KvSpace,
        /// The key.
        key: String,
    },
    /// Drop snapshot rows whose expiry is at or before this time.
    PurgeExpired {
        /// The cut-off.
        now_ms: UnixMs,
    },
    /// Several records committed in one transaction: all or none. A work order, its outbox
    /// delivery and the CDR that names it go together so a crash never leaves one without the
    /// others.
    Group(Vec<Record>),
}

impl Record {
    /// How many leaf records this is (a group counts its members), for batch sizing.
    pub fn weight(&self) -> usize {
        match self {
            Record::Group(rs) => rs.iter().map(Record::weight).sum::<usize>().max(1),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_personal_numbers_only() {
        assert_eq!(Redacted("13800138000").to_string(), "138******00");
        assert_eq!(Redacted("12345").to_string(), "12345");
        assert_eq!(Redacted("110").to_string(), "110");
    }

    #[test]
    fn enums_round_trip_through_their_stored_text() {
        for m in [
            LineMode::Hotline,
            LineMode::Merge,
            LineMode::Dual,
            LineMode::Subcenter,
            LineMode::Emergency,
        ] {
            assert_eq!(LineMode::parse(m.as_str()), Some(m));
        }
        for o in [
            Outcome::Answered,
            Outcome::Abandoned,
            Outcome::Overflowed,
            Outcome::Transferred,
            Outcome::EmergencyHandoff,
            Outcome::Failed { status: 503 },
            Outcome::FailoverLost,
        ] {
            assert_eq!(Outcome::parse(o.as_str(), o.status()), Some(o));
        }
        assert_eq!(Outcome::parse("failed", None), None);
        for k in [
            WorkOrderKind::SubcenterTransfer,
            WorkOrderKind::SubcenterCallback,
            WorkOrderKind::AbandonedCallback,
            WorkOrderKind::EmergencyLinkage,
            WorkOrderKind::AgentCreated,
        ] {
            assert_eq!(WorkOrderKind::parse(k.as_str()), Some(k));
        }
        for s in [
            WorkOrderStatus::Open,
            WorkOrderStatus::Dispatched,
            WorkOrderStatus::Delivered,
            WorkOrderStatus::InProgress,
            WorkOrderStatus::Closed,
            WorkOrderStatus::Cancelled,
        ] {
            assert_eq!(WorkOrderStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn work_order_ids_are_unique_and_sorted_even_when_the_clock_steps_back() {
        let mut ids = WorkOrderIds::new("a");
        let mut seen = Vec::new();
        for now in [1_000, 1_000, 999, 2_000, 1_500, 2_000] {
            seen.push(ids.next(now));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, seen);
        assert_eq!(seen[0], "WO-a-0000000001000-0000");
    }

    #[test]
    fn debug_of_a_cdr_never_shows_the_full_caller() {
        let cdr = Cdr {
            call_id: "c1".into(),
            caller: "13800138000".into(),
            dialed: "097212315".into(),
            normalized: "12315".into(),
            line: None,
            mode: None,
            prefecture: None,
            entry_queue: None,
            answer_queue: None,
            agent: None,
            target: None,
            arrival_ms: 0,
            queued_ms: None,
            offered_ms: None,
            answered_ms: None,
            ended_ms: 0,
            outcome: Outcome::Abandoned,
            work_order: None,
        };
        let s = format!("{cdr:?}");
        assert!(!s.contains("13800138000"), "{s}");
        assert!(s.contains("138******00"), "{s}");
    }
}
