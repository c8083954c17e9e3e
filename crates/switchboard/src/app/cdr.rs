//! A CDR for every call: a draft is opened when the call is routed, filled as it goes (queued,
//! offered, answered), and handed to the store's writer when the call ends. The hot path only
//! builds the record and puts it on a bounded channel; the writer thread does the disk.

use sip_core::proxy::ServerId;
use sip_core::time::Instant;
use store::{Cdr, LineMode, Outcome, Record};
use tracing::warn;

use super::Switch;

impl Switch {
    /// Unix time in ms for a core instant (the daemon tells the core where its time line starts).
    pub(super) fn unix_ms(&self, now: Instant) -> i64 {
        self.unix_origin_ms + now.since_origin().as_millis() as i64
    }

    /// Tell the core the Unix time of its time line's origin (for CDR timestamps).
    pub fn set_unix_origin_ms(&mut self, ms: i64) {
        self.unix_origin_ms = ms;
    }

    /// Open a CDR draft for a call being routed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_cdr(
        &mut self,
        now: Instant,
        id: ServerId,
        call_id: &str,
        caller: &str,
        dialed: &str,
        mode: LineMode,
        line: Option<String>,
        prefecture: Option<String>,
        entry_queue: Option<String>,
    ) {
        if self.cdrs.is_none() {
            return;
        }
        let normalized = self
            .plan
            .normalize(dialed)
            .map(|n| n.number.as_str().to_owned())
            .unwrap_or_default();
        let at = self.unix_ms(now);
        self.drafts.insert(
            id,
            Cdr {
                call_id: call_id.to_owned(),
                caller: caller.to_owned(),
                dialed: dialed.to_owned(),
                normalized,
                line,
                mode: Some(mode),
                prefecture,
                entry_queue,
                answer_queue: None,
                agent: None,
                target: None,
                arrival_ms: at,
                queued_ms: None,
                offered_ms: None,
                answered_ms: None,
                ended_ms: at,
                outcome: Outcome::Failed { status: 0 },
                work_order: None,
            },
        );
    }

    /// The call's final response went upstream: a 2xx keeps the draft until the BYE; a failure
    /// closes it now.
    pub(super) fn cdr_final(&mut self, now: Instant, id: ServerId, status: u16, cancelled: bool) {
        let Some(mut cdr) = self.drafts.remove(&id) else {
            return;
        };
        let at = self.unix_ms(now);
        if (200..300).contains(&status) {
            cdr.answered_ms = Some(at);
            self.put_open_call(&cdr);
            self.answered_cdrs.insert(cdr.call_id.clone().into(), cdr);
            return;
        }
        cdr.ended_ms = at;
        cdr.outcome = if cancelled {
            Outcome::Abandoned
        } else {
            Outcome::Failed { status }
        };
        self.submit_cdr(cdr, false);
    }

    /// A BYE ended an answered call (or one inherited from the other node of an HA pair).
    pub(super) fn cdr_bye(&mut self, now: Instant, call_id: &str) {
        if let Some(mut cdr) = self.answered_cdrs.remove(call_id) {
            cdr.ended_ms = self.unix_ms(now);
            cdr.outcome = if cdr.mode == Some(LineMode::Emergency) {
                Outcome::EmergencyHandoff
            } else {
                Outcome::Answered
            };
            let open = self.sharing_open_calls();
            self.submit_cdr(cdr, open);
        } else {
            self.close_inherited(now, call_id);
        }
    }

    /// Fill in a draft while the call is being placed.
    pub(super) fn cdr_update(&mut self, id: ServerId, f: impl FnOnce(&mut Cdr, i64), now: Instant) {
        let at = self.unix_ms(now);
        if let Some(cdr) = self.drafts.get_mut(&id) {
            f(cdr, at);
        }
    }

    /// Hands a finished call's records to the store; `open_row` deletes its HA open-call row in
    /// the same transaction.
    pub(super) fn submit_cdr(&mut self, mut cdr: Cdr, open_row: bool) {
        metrics::counter!(
            crate::metrics::CALLS_ENDED,
            "line" => cdr.line.clone().unwrap_or_default(),
            "mode" => cdr.mode.map_or("none", |m| m.as_str()),
            "outcome" => cdr.outcome.as_str()
        )
        .increment(1);
        if self.cdrs.is_none() {
            return;
        }
        // The work order the call calls for, its outbox delivery and the CDR naming it: one
        // transaction, so a crash never keeps one without the others.
        let mut records = self.work_order_for(&mut cdr);
        let call_id = open_row.then(|| cdr.call_id.clone());
        let record = if records.is_empty() && call_id.is_none() {
            Record::Cdr(Box::new(cdr))
        } else {
            records.push(Record::Cdr(Box::new(cdr)));
            if let Some(key) = call_id {
                records.push(Record::Delete {
                    space: store::KvSpace::OpenCall,
                    key,
                });
            }
            Record::Group(records)
        };
        let Some(store) = self.cdrs.as_ref() else {
            return;
        };
        if let Err(e) = store.submit(record) {
            // Never block the hot path: a full queue loses the record and says so.
            warn!(%e, "CDR not stored: the store's queue is full or closed");
            metrics::counter!(crate::metrics::CDRS_LOST).increment(1);
        }
    }
}
