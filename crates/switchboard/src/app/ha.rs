//! The core's side of the HA pair (`crate::ha`).
//!
//! Active node: the AORs whose bindings an accepted REGISTER changed are marked here, and the
//! daemon hands their rows to the HA thread right after the turn that sent the 200 OKs. An
//! answered call gets an `open-call` row in the store (its CDR so far, through the store's
//! batching writer, never a wait), deleted in the same transaction as its CDR when the BYE comes.
//!
//! Standby: the rows the HA thread reads are applied here as they come, so the registrar and the
//! seat manager are warm when the lock is taken. At takeover the dead node's open calls are
//! inherited: the BYE of one closes its CDR; one whose BYE has not come within `[ha] max_call_s`
//! of its answer is closed as `failover-lost`.

use std::collections::BTreeSet;
use std::time::Duration;

use sip_core::registrar::BindingRecord;
use sip_core::time::Instant;
use store::{Cdr, KvRow, KvSpace, LineMode, Outcome, Record};
use tracing::{info, warn};

use super::Switch;
use crate::ha::AorRow;

/// An answered call inherited from the other node, until its BYE.
#[derive(Debug)]
pub(super) struct Inherited {
    cdr: Cdr,
    /// Wall-clock ms after which it is closed as `failover-lost`.
    expires_ms: i64,
}

impl Switch {
    /// Share registrations and answered calls with the other node of an HA pair; an inherited
    /// call whose BYE has not come `max_call_s` after its answer is closed as `failover-lost`.
    pub fn enable_ha(&mut self, max_call_s: u64) {
        self.reg_changes = Some(BTreeSet::new());
        self.open_call_max_ms =
            Some(i64::try_from(max_call_s.saturating_mul(1000)).unwrap_or(i64::MAX));
    }

    /// An accepted REGISTER changed (or refreshed) `user`'s bindings.
    pub(super) fn registration_changed(&mut self, user: &str) {
        if let Some(set) = &mut self.reg_changes {
            if !set.contains(user) {
                set.insert(user.to_owned());
            }
        }
    }

    /// The rows of the AORs changed since [`Switch::registrations_shared`] was last called, or
    /// `None` when there are none. `wall_ms` is the wall clock now.
    pub fn changed_registrations(&self, now: Instant, wall_ms: i64) -> Option<Vec<AorRow>> {
        let set = self.reg_changes.as_ref().filter(|s| !s.is_empty())?;
        Some(
            set.iter()
                .map(|aor| {
                    let records = self.registrar.export_user(aor, now);
                    let left = records
                        .iter()
                        .map(|r| r.expires_in)
                        .max()
                        .unwrap_or(Duration::ZERO);
                    AorRow {
                        aor: aor.clone(),
                        bindings: BindingRecord::to_text(&records),
                        written_ms: wall_ms,
                        expires_ms: wall_ms.saturating_add(left.as_millis() as i64),
                    }
                })
                .collect(),
        )
    }

    /// The rows of [`Switch::changed_registrations`] were handed over.
    pub fn registrations_shared(&mut self) {
        if let Some(set) = &mut self.reg_changes {
            set.clear();
        }
    }

    /// Standby: apply the active node's rows (see `crate::ha::Warm::Registrations`). Lifetimes
    /// count from when each row was written. Returns the bindings held afterwards.
    pub fn apply_shared_registrations(
        &mut self,
        now: Instant,
        wall_ms: i64,
        rows: Vec<AorRow>,
        full: bool,
    ) -> usize {
        let mut seen = BTreeSet::new();
        for row in rows {
            let records = match BindingRecord::from_text(&row.bindings) {
                Ok(r) => r,
                Err(e) => {
                    warn!(aor = %row.aor, %e, "HA: unreadable shared registration; ignored");
                    continue;
                }
            };
            let age = Duration::from_millis(u64::try_from(wall_ms - row.written_ms).unwrap_or(0));
            let records = records.into_iter().map(|mut r| {
                r.expires_in = r.expires_in.saturating_sub(age);
                r
            });
            self.replace_bindings(now, &row.aor, records);
            seen.insert(row.aor);
        }
        if full {
            let gone: BTreeSet<String> = self
                .registrar
                .export(now)
                .into_iter()
                .map(|r| r.aor_user)
                .filter(|u| !seen.contains(u))
                .collect();
            for u in gone {
                self.replace_bindings(now, &u, Vec::new());
            }
        }
        self.registrar.binding_count()
    }

    /// `user`'s bindings become `records`; the seat manager hears if the phone came or went.
    fn replace_bindings(
        &mut self,
        now: Instant,
        user: &str,
        records: impl IntoIterator<Item = BindingRecord>,
    ) {
        let before = self.registrar.lookup(user, now).next().is_some();
        self.registrar.replace_user(now, user, records);
        let after = self.registrar.lookup(user, now).next().is_some();
        self.registrations_dirty = true;
        if before != after {
            self.agent_presence(now, user, after);
        }
    }

    /// On a 2xx to the caller: the call's open row, so the other node can close its CDR after a
    /// failover. A non-blocking submit; a full queue only loses the row.
    pub(super) fn put_open_call(&self, cdr: &Cdr) {
        let (Some(max), Some(store)) = (self.open_call_max_ms, self.cdrs.as_ref()) else {
            return;
        };
        let at = cdr.answered_ms.unwrap_or(cdr.ended_ms);
        let row = KvRow {
            space: KvSpace::OpenCall,
            key: cdr.call_id.clone(),
            value: serde_json::to_value(cdr).unwrap_or_default(),
            expires_ms: Some(at.saturating_add(max)),
            updated_ms: at,
        };
        if let Err(e) = store.submit(Record::Put(Box::new(row))) {
            warn!(%e, call_id = %cdr.call_id, "open call not shared: the store's queue is full or closed");
        }
    }

    /// Whether answered calls have open rows to delete with their CDR.
    pub(super) fn sharing_open_calls(&self) -> bool {
        self.open_call_max_ms.is_some()
    }

    /// At takeover: the calls the other node left open. Those past their bound are closed as
    /// `failover-lost` at once; the others wait for their BYE. Returns (waiting, closed).
    pub fn inherit_open_calls(&mut self, now: Instant, rows: Vec<KvRow>) -> (usize, usize) {
        let mut waiting: usize = 0;
        for row in rows {
            let Ok(cdr) = serde_json::from_value::<Cdr>(row.value) else {
                warn!(call_id = %row.key, "HA: unreadable open call; left in the store");
                continue;
            };
            let expires_ms = row.expires_ms.unwrap_or(i64::MAX);
            if self.answered_cdrs.contains_key(cdr.call_id.as_str()) {
                continue;
            }
            self.inherited
                .insert(cdr.call_id.clone().into(), Inherited { cdr, expires_ms });
            waiting += 1;
        }
        let closed = self.close_lost_calls(now);
        (waiting.saturating_sub(closed), closed)
    }

    /// Closes inherited calls past their bound as `failover-lost` (on takeover, then about once
    /// a second). Returns how many.
    pub fn close_lost_calls(&mut self, now: Instant) -> usize {
        let at = self.unix_ms(now);
        let lost: Vec<Box<str>> = self
            .inherited
            .iter()
            .filter(|(_, c)| c.expires_ms <= at)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &lost {
            if let Some(Inherited { mut cdr, .. }) = self.inherited.remove(k) {
                warn!(call_id = %cdr.call_id, "HA: no BYE for a call taken over from the other node within [ha] max_call_s: CDR closed as failover-lost");
                cdr.ended_ms = at;
                cdr.outcome = Outcome::FailoverLost;
                self.submit_cdr(cdr, true);
            }
        }
        metrics::gauge!(crate::metrics::HA_INHERITED_CALLS).set(self.inherited.len() as f64);
        lost.len()
    }

    /// Answered calls inherited from the other node, waiting for their BYE.
    pub fn inherited_calls(&self) -> usize {
        self.inherited.len()
    }

    /// A BYE for a call this node did not answer: if it was inherited, its CDR is closed now.
    pub(super) fn close_inherited(&mut self, now: Instant, call_id: &str) {
        let Some(Inherited { mut cdr, .. }) = self.inherited.remove(call_id) else {
            return;
        };
        cdr.ended_ms = self.unix_ms(now);
        cdr.outcome = if cdr.mode == Some(LineMode::Emergency) {
            Outcome::EmergencyHandoff
        } else {
            Outcome::Answered
        };
        info!(call_id = %cdr.call_id, "HA: BYE of a call answered before the failover: CDR closed");
        self.submit_cdr(cdr, true);
        metrics::gauge!(crate::metrics::HA_INHERITED_CALLS).set(self.inherited.len() as f64);
    }
}
