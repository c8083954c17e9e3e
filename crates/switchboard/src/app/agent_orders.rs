//! Work orders agents make through the admin API (`POST /api/v1/work-orders`) and the steps they
//! add (`POST /api/v1/work-orders/{id}/status`). Checked on the core task against the seat config,
//! then handed to the store's writer without waiting: the API answers with the id at once, and the
//! order is readable once the writer commits it (milliseconds).

use sip_core::time::Instant;
use store::{AgentOrder, HistoryEntry, Record, WorkOrderKind, WorkOrderStatus};
use tracing::{info, warn};

use super::Switch;
use crate::admin::{NewWorkOrder, WorkOrderCreated, WorkOrderRefusal, WorkOrderStep};

/// Longest summary or note accepted.
const MAX_TEXT: usize = 2000;
/// Longest identifier-like field (call id, prefecture, department).
const MAX_FIELD: usize = 256;

impl Switch {
    fn check_agent(&self, agent: &str) -> Result<(), WorkOrderRefusal> {
        let known = self
            .seats
            .as_ref()
            .is_some_and(|sm| sm.agent_view(agent).is_some());
        if known {
            Ok(())
        } else {
            Err(WorkOrderRefusal::Invalid(format!(
                "unknown agent `{}`: not in the seat config",
                agent.chars().take(64).collect::<String>()
            )))
        }
    }

    /// Create an agent's work order: checked, then submitted (never waits for the disk).
    pub fn admin_create_work_order(
        &mut self,
        now: Instant,
        o: NewWorkOrder,
    ) -> Result<WorkOrderCreated, WorkOrderRefusal> {
        let Some(store) = self.cdrs.clone() else {
            return Err(WorkOrderRefusal::NoStore);
        };
        self.check_agent(&o.agent)?;
        check_fields(&o)?;
        let at = self.unix_ms(now);
        let (id, records) = store::agent_order(
            &mut self.work_order_ids,
            at,
            AgentOrder {
                agent: o.agent.clone(),
                call_id: o.call_id,
                caller: o.caller,
                prefecture: o.prefecture,
                summary: o.summary,
                department: o.department,
                endpoint: None,
            },
        );
        let record = match <[Record; 1]>::try_from(records) {
            Ok([r]) => r,
            Err(rs) => Record::Group(rs),
        };
        match store.submit(record) {
            Ok(_) => {
                metrics::counter!(crate::metrics::WORK_ORDERS, "kind" => WorkOrderKind::AgentCreated.as_str()).increment(1);
                info!(work_order = %id, agent = %o.agent, "work order created by an agent (admin API)");
                Ok(WorkOrderCreated {
                    id,
                    status: WorkOrderStatus::Open.as_str().to_owned(),
                })
            }
            Err(e) => {
                warn!(%e, agent = %o.agent, "agent work order refused: the store's queue is full or closed");
                Err(WorkOrderRefusal::Busy(format!(
                    "the store is busy ({e}); try again"
                )))
            }
        }
    }

    /// Append a status change to an existing order's history.
    pub fn admin_work_order_step(
        &mut self,
        now: Instant,
        id: &str,
        step: WorkOrderStep,
    ) -> Result<(), WorkOrderRefusal> {
        let Some(store) = self.cdrs.clone() else {
            return Err(WorkOrderRefusal::NoStore);
        };
        self.check_agent(&step.agent)?;
        let status = parse_step_status(&step.status)?;
        if step.note.chars().count() > MAX_TEXT {
            return Err(WorkOrderRefusal::Invalid(format!(
                "note: at most {MAX_TEXT} characters"
            )));
        }
        let entry = HistoryEntry {
            at_ms: self.unix_ms(now),
            status,
            actor: step.agent.clone(),
            note: step.note,
        };
        match store.submit(Record::WorkOrderUpdate {
            id: id.to_owned(),
            entry,
        }) {
            Ok(_) => {
                info!(work_order = %id, agent = %step.agent, status = status.as_str(), "work order status set by an agent (admin API)");
                Ok(())
            }
            Err(e) => Err(WorkOrderRefusal::Busy(format!(
                "the store is busy ({e}); try again"
            ))),
        }
    }
}

/// The statuses an agent may set: the outbox owns `dispatched` and `delivered`.
pub(crate) fn parse_step_status(s: &str) -> Result<WorkOrderStatus, WorkOrderRefusal> {
    match WorkOrderStatus::parse(s) {
        Some(
            st @ (WorkOrderStatus::Open
            | WorkOrderStatus::InProgress
            | WorkOrderStatus::Closed
            | WorkOrderStatus::Cancelled),
        ) => Ok(st),
        _ => Err(WorkOrderRefusal::Invalid(format!(
            "unknown status `{}`: open, in-progress, closed or cancelled",
            s.chars().take(64).collect::<String>()
        ))),
    }
}

fn check_fields(o: &NewWorkOrder) -> Result<(), WorkOrderRefusal> {
    let bad = |m: String| Err(WorkOrderRefusal::Invalid(m));
    let summary = o.summary.trim();
    if summary.is_empty() {
        return bad("summary: must not be empty".into());
    }
    if o.summary.chars().count() > MAX_TEXT {
        return bad(format!("summary: at most {MAX_TEXT} characters"));
    }
    if let Some(c) = &o.caller {
        let digits = c.strip_prefix('+').unwrap_or(c);
        if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return bad("caller: digits only (an optional leading +), at most 32".into());
        }
    }
    for (name, v) in [
        ("call_id", &o.call_id),
        ("prefecture", &o.prefecture),
        ("department", &o.department),
    ] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                return bad(format!(
                    "{name}: 1 to {MAX_FIELD} bytes without control characters"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> NewWorkOrder {
        NewWorkOrder {
            agent: "8001".into(),
            call_id: None,
            caller: Some("+8613800000000".into()),
            prefecture: Some("xining".into()),
            summary: "street light out".into(),
            department: None,
        }
    }

    #[test]
    fn fields_are_checked() {
        assert!(check_fields(&order()).is_ok());
        let bad = |f: fn(&mut NewWorkOrder)| {
            let mut o = order();
            f(&mut o);
            match check_fields(&o) {
                Err(WorkOrderRefusal::Invalid(m)) => m,
                other => panic!("{other:?}"),
            }
        };
        assert!(bad(|o| o.summary = "  ".into()).starts_with("summary"));
        assert!(bad(|o| o.summary = "x".repeat(2001)).starts_with("summary"));
        assert!(bad(|o| o.caller = Some("138-0000".into())).starts_with("caller"));
        assert!(bad(|o| o.caller = Some("+".into())).starts_with("caller"));
        assert!(bad(|o| o.call_id = Some("a\nb".into())).starts_with("call_id"));
        assert!(bad(|o| o.department = Some(String::new())).starts_with("department"));
    }

    #[test]
    fn agents_may_not_set_the_outboxs_statuses() {
        assert_eq!(
            parse_step_status("in-progress"),
            Ok(WorkOrderStatus::InProgress)
        );
        assert_eq!(parse_step_status("closed"), Ok(WorkOrderStatus::Closed));
        assert!(parse_step_status("delivered").is_err());
        assert!(parse_step_status("dispatched").is_err());
        assert!(parse_step_status("done").is_err());
    }
}
