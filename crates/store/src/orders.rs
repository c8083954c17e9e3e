//! Making work orders: the one way the daemon (and the admin API) creates them, so that
//! every order starts with a history entry and, when it goes to a sub-center, carries its outbox
//! delivery in the same transaction.
//!
//! Ids come from [`WorkOrderIds`] in memory, never from the database, so the emergency path can
//! put an order's id in the PSAP's INVITE without waiting for a commit.

use crate::backend::StoreBackend;
use crate::error::StoreError;
use crate::record::{
    HistoryEntry, NewDelivery, Record, UnixMs, WorkOrder, WorkOrderIds, WorkOrderKind,
    WorkOrderStatus,
};

/// What a new order is about; everything but its id and time.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Why it exists.
    pub kind: WorkOrderKind,
    /// The call it came from.
    pub call_id: Option<String>,
    /// The caller to call back, in full.
    pub caller: Option<String>,
    /// The caller's prefecture.
    pub prefecture: Option<String>,
    /// The sub-center's HTTP endpoint: when set, the order is queued in the outbox for it.
    pub endpoint: Option<String>,
    /// Domain details (line, target, agent, summary ...).
    pub payload: serde_json::Value,
    /// Who created it: `"switchboard"` or an agent id.
    pub actor: String,
    /// The first history entry's text.
    pub note: String,
}

/// The records that create `order` with id `id` at `now_ms`: the [`WorkOrder`] (status `open`, or
/// `dispatched` when it has an endpoint) and, with an endpoint, its [`NewDelivery`] whose
/// idempotency key is the order id. Submit them together (a [`Record::Group`], with the CDR that
/// names the order when there is one).
pub fn create(id: String, now_ms: UnixMs, order: NewOrder) -> Vec<Record> {
    let status = if order.endpoint.is_some() {
        WorkOrderStatus::Dispatched
    } else {
        WorkOrderStatus::Open
    };
    let w = WorkOrder {
        id: id.clone(),
        kind: order.kind,
        status,
        created_ms: now_ms,
        updated_ms: now_ms,
        call_id: order.call_id,
        caller: order.caller,
        prefecture: order.prefecture,
        subcenter_endpoint: order.endpoint.clone(),
        payload: order.payload,
        history: vec![HistoryEntry {
            at_ms: now_ms,
            status,
            actor: order.actor,
            note: order.note,
        }],
    };
    let mut out = Vec::with_capacity(2);
    if let Some(endpoint) = order.endpoint {
        out.push(Record::Deliver(Box::new(NewDelivery {
            endpoint,
            body: delivery_body(&w),
            idempotency_key: id.clone(),
            work_order: Some(id),
            created_ms: now_ms,
        })));
    }
    out.insert(0, Record::WorkOrder(Box::new(w)));
    out
}

/// The JSON a sub-center receives: the order as created (id, kind, status, times, call, caller,
/// prefecture, payload, history).
pub fn delivery_body(w: &WorkOrder) -> String {
    serde_json::to_string(w).unwrap_or_else(|_| format!("{{\"id\":\"{}\"}}", w.id))
}

/// What an agent gives for a work order made by hand (the admin API's `POST /api/v1/work-orders`).
#[derive(Debug, Clone, Default)]
pub struct AgentOrder {
    /// The agent creating it (the history's actor).
    pub agent: String,
    /// The call it is about, if any.
    pub call_id: Option<String>,
    /// The caller to call back, in full.
    pub caller: Option<String>,
    /// The caller's prefecture.
    pub prefecture: Option<String>,
    /// What it is about: in the payload and the first history entry.
    pub summary: String,
    /// The department that should handle it, if named.
    pub department: Option<String>,
    /// A sub-center's HTTP endpoint: the order then goes to the outbox.
    pub endpoint: Option<String>,
}

/// A work order an agent creates by hand: `summary` (and `department`) go in the payload, the
/// summary in the first history entry too.
pub fn agent_order(
    ids: &mut WorkOrderIds,
    now_ms: UnixMs,
    order: AgentOrder,
) -> (String, Vec<Record>) {
    let id = ids.next(now_ms);
    let mut payload = serde_json::json!({ "summary": order.summary });
    if let Some(d) = &order.department {
        payload["department"] = serde_json::Value::String(d.clone());
    }
    let records = create(
        id.clone(),
        now_ms,
        NewOrder {
            kind: WorkOrderKind::AgentCreated,
            call_id: order.call_id,
            caller: order.caller,
            prefecture: order.prefecture,
            endpoint: order.endpoint,
            payload,
            actor: order.agent,
            note: order.summary,
        },
    );
    (id, records)
}

/// Work orders created at or after `since_ms`, oldest first, at most `limit`, with their histories
/// (the admin API's list).
pub fn work_orders<B: StoreBackend>(
    reader: &mut B,
    since_ms: UnixMs,
    limit: usize,
) -> Result<Vec<WorkOrder>, StoreError> {
    reader.work_orders_since(since_ms, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_with_an_endpoint_is_dispatched_with_its_delivery_keyed_by_its_id() {
        let mut ids = WorkOrderIds::new("a");
        let (id, recs) = agent_order(
            &mut ids,
            5,
            AgentOrder {
                agent: "8001".into(),
                call_id: Some("c1@h".into()),
                summary: "call back".into(),
                department: Some("tax".into()),
                endpoint: Some("http://h/w".into()),
                ..AgentOrder::default()
            },
        );
        assert_eq!(recs.len(), 2);
        match (&recs[0], &recs[1]) {
            (Record::WorkOrder(w), Record::Deliver(d)) => {
                assert_eq!(w.status, WorkOrderStatus::Dispatched);
                assert_eq!(d.idempotency_key, id);
                assert_eq!(d.work_order.as_deref(), Some(id.as_str()));
                let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
                assert_eq!(body["id"], id.as_str());
                assert_eq!(body["kind"], "agent-created");
                assert_eq!(body["call_id"], "c1@h");
                assert_eq!(body["payload"]["department"], "tax");
                assert_eq!(w.history[0].actor, "8001");
            }
            other => panic!("{other:?}"),
        }
        let (_, recs) = agent_order(
            &mut ids,
            6,
            AgentOrder {
                agent: "8001".into(),
                summary: "x".into(),
                ..AgentOrder::default()
            },
        );
        assert!(matches!(&recs[..], [Record::WorkOrder(w)] if w.status == WorkOrderStatus::Open));
    }
}
