//! Work orders (工单) the switchboard creates by itself: for a call handed to a sub-center, for a
//! sub-center call that fell back to 12345 (the sub-center must call back), for a caller who hung
//! up after waiting N seconds, and for an emergency hand-off (the linkage record).
//!
//! Ids are made in memory ([`store::WorkOrderIds`]): a finished call's order goes to the store in
//! one group with its outbox delivery and the CDR that names it; an emergency hand-off's order is
//! submitted at once, without waiting for anything, and its id rides in the PSAP's INVITE.

use std::net::IpAddr;

use sip_core::proxy::RouteUriRef;
use sip_core::time::Instant;
use store::{Cdr, LineMode, NewOrder, Outcome, Record, WorkOrderKind};
use tracing::{info, warn};

use super::Switch;
use crate::config::Trunk;

/// Where an emergency hand-off goes and what it hands over.
pub(super) struct Handoff<'a> {
    pub linked_call: &'a str,
    pub caller: &'a str,
    pub prefecture: Option<String>,
    pub service: &'a str,
    pub psap: Option<String>,
    pub agent: Option<String>,
}

impl Switch {
    fn trunk_by_ip(&self, ip: IpAddr) -> Option<&Trunk> {
        self.trunks
            .iter()
            .find(|t| t.nets.iter().any(|n| n.contains(&ip)))
    }

    /// The records a finished call adds to its CDR: the work order it calls for (with its outbox
    /// delivery), if any. Sets the CDR's `work_order`.
    pub(super) fn work_order_for(&mut self, cdr: &mut Cdr) -> Vec<Record> {
        if cdr.work_order.is_some() || self.cdrs.is_none() {
            return Vec::new();
        }
        // A sub-center line's orders go to its `workorder_url` (dialplan); its trunk in the
        // config, found by the targets' addresses, only names the sub-center in the payload.
        let mut subcenter: Option<(WorkOrderKind, Option<&Trunk>)> = None;
        let mut endpoint: Option<String> = None;
        if cdr.mode == Some(LineMode::Subcenter) {
            let mut targets: Vec<IpAddr> = Vec::new();
            if let Some(dialplan::LineRoute::Subcenter {
                trunk,
                workorder_url,
            }) = cdr
                .line
                .as_deref()
                .and_then(|n| self.plan.line_by_number(n))
                .map(|l| &l.route)
            {
                targets = trunk
                    .iter()
                    .filter_map(|t| {
                        t.host
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse()
                            .ok()
                    })
                    .collect();
                endpoint = Some(workorder_url.to_string());
            }
            let answered_by = cdr
                .target
                .as_deref()
                .and_then(RouteUriRef::parse)
                .and_then(|u| u.peer())
                .map(|p| p.addr.ip())
                .filter(|ip| targets.contains(ip));
            if let (Some(ip), Some(_)) = (answered_by, cdr.answered_ms) {
                subcenter = Some((WorkOrderKind::SubcenterTransfer, self.trunk_by_ip(ip)));
            } else if cdr.queued_ms.is_some()
                || cdr.answered_ms.is_some()
                || matches!(cdr.outcome, Outcome::Failed { .. })
            {
                // Every sub-center target failed and 12345 took (or tried to take) the call.
                let trunk = targets.first().and_then(|ip| self.trunk_by_ip(*ip));
                subcenter = Some((WorkOrderKind::SubcenterCallback, trunk));
            }
        }
        let waited = cdr.ended_ms - cdr.arrival_ms;
        let (kind, trunk, endpoint) = match subcenter {
            Some((kind, trunk)) => (kind, trunk, endpoint),
            // 12345's own call-back: it stays here, nothing is POSTed.
            None if cdr.outcome == Outcome::Abandoned
                && self.abandon_callback_ms > 0
                && waited >= self.abandon_callback_ms
                && cdr.mode != Some(LineMode::Emergency) =>
            {
                (WorkOrderKind::AbandonedCallback, None, None)
            }
            None => return Vec::new(),
        };
        let subcenter_name = trunk.map(|t| t.name.clone());
        let id = self.work_order_ids.next(cdr.ended_ms);
        let note = match kind {
            WorkOrderKind::SubcenterTransfer => "call handed to the sub-center",
            WorkOrderKind::SubcenterCallback => {
                "the sub-center did not take the call; it fell back to 12345: call back"
            }
            _ => "the caller hung up after waiting: call back",
        };
        metrics::counter!(crate::metrics::WORK_ORDERS, "kind" => kind.as_str()).increment(1);
        info!(work_order = %id, kind = kind.as_str(), call_id = %cdr.call_id, outbox = endpoint.is_some(), "work order created");
        cdr.work_order = Some(id.clone());
        store::orders::create(
            id,
            cdr.ended_ms,
            NewOrder {
                kind,
                call_id: Some(cdr.call_id.clone()),
                caller: Some(cdr.caller.clone()),
                prefecture: cdr.prefecture.clone(),
                endpoint,
                payload: serde_json::json!({
                    "line": cdr.line,
                    "dialed": cdr.dialed,
                    "subcenter": subcenter_name,
                    "target": cdr.target,
                    "agent": cdr.agent,
                    "outcome": cdr.outcome.as_str(),
                    "arrival_ms": cdr.arrival_ms,
                    "answered_ms": cdr.answered_ms,
                    "ended_ms": cdr.ended_ms,
                    "waited_ms": waited,
                }),
                actor: "switchboard".into(),
                note: note.into(),
            },
        )
    }

    /// An emergency hand-off from 12345: creates its linkage work order at once (the id is made in
    /// memory; the record is handed to the writer without waiting) and links the 12345 call's CDR
    /// to it. Returns the id for the linkage header; `None` without a store.
    pub(super) fn emergency_linkage(&mut self, now: Instant, h: Handoff<'_>) -> Option<String> {
        let store = self.cdrs.clone()?;
        let at = self.unix_ms(now);
        let id = self.work_order_ids.next(at);
        let records = store::orders::create(
            id.clone(),
            at,
            NewOrder {
                kind: WorkOrderKind::EmergencyLinkage,
                call_id: Some(h.linked_call.to_owned()),
                caller: Some(h.caller.to_owned()),
                prefecture: h.prefecture,
                endpoint: None,
                payload: serde_json::json!({
                    "service": h.service,
                    "psap": h.psap,
                    "agent": h.agent,
                    "linked_call": h.linked_call,
                }),
                actor: h.agent.clone().unwrap_or_else(|| "switchboard".into()),
                note: format!("handed off to {}", h.service),
            },
        );
        match store.submit(Record::Group(records)) {
            Ok(_) => {
                metrics::counter!(crate::metrics::WORK_ORDERS, "kind" => WorkOrderKind::EmergencyLinkage.as_str()).increment(1);
            }
            Err(e) => {
                // The hand-off goes on regardless: a life comes before a record.
                warn!(%e, work_order = %id, "emergency linkage work order not stored: the store's queue is full or closed");
            }
        }
        // The 12345 call being handed off (answered, until its BYE) names the order too.
        if let Some(c) = self.answered_cdrs.get_mut(h.linked_call) {
            if c.work_order.is_none() {
                c.work_order = Some(id.clone());
                // The HA open row carries it too, should the other node close the CDR.
                let c = c.clone();
                self.put_open_call(&c);
            }
        }
        Some(id)
    }
}
