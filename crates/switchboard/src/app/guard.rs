//! The switchboard's defences, as `Switch` methods: the flood guard in front of the parser, the
//! authentication lockout around the digest checks, overload control for new INVITEs and the class
//! of service of agents' calls. The tables themselves are sans-IO modules (`flood`, `lockout`,
//! `cos`); this file applies them and turns their verdicts into SIP answers, metrics and
//! rate-limited security log lines (SECURITY.md).

use std::net::IpAddr;

use dialplan::Decision;
use sip_core::auth::AuthOutcome;
use sip_core::message::{Peer, Request};
use sip_core::proxy::ServerId;
use sip_core::time::Instant;
use tracing::warn;

use super::Switch;
use crate::cos::Category;
use crate::flood::{Budget, Verdict};
use crate::lockout::Locked;
use crate::metrics as m;
use crate::redact::Redacted;

impl Switch {
    /// Whether a message from `source` may be parsed and handled at all. Runs before any parsing:
    /// a glance at the first bytes only. Responses pass (the proxy drops those matching nothing);
    /// trunks, PSAPs, whitelisted networks and emergency INVITEs from registered phones are exempt.
    pub(super) fn admit(&mut self, now: Instant, source: Peer, bytes: &[u8]) -> bool {
        if bytes.starts_with(b"SIP/2.0 ") {
            return true;
        }
        let ip = source.addr.ip();
        if self.trunk_for(ip).is_some()
            || self
                .bridge
                .as_ref()
                .is_some_and(|b| b.psap_source(ip).is_some())
        {
            return true;
        }
        // An emergency call from a phone never waits for a budget. A stranger's is counted like
        // anything else (it would be refused with 403 anyway), so "110" is no way around the limit.
        let known = self.registrar.has_source_ip(ip);
        if known && crate::lanes::looks_like_emergency(bytes) {
            return true;
        }
        // Hard bound on state: at twice the overload threshold, addresses without a registered
        // phone (strangers, and whitelisted networks too) are not served at all until the load
        // falls. Their transactions cannot hold more memory than that; UDP senders retransmit.
        if !known {
            let (s, c) = self.proxy.transaction_count();
            if s + c >= self.overload.max_transactions.saturating_mul(2) {
                metrics::counter!(m::FLOOD_DROPS, "reason" => "overload").increment(1);
                if let Some(suppressed) = self.overload_log.allow_at(now) {
                    warn!(
                        transactions = s + c,
                        suppressed, "overload: requests from unregistered addresses dropped"
                    );
                }
                return false;
            }
        }
        let (budget, bindings) = if bytes.starts_with(b"REGISTER ") {
            (Budget::Register, self.registrar.source_ip_bindings(ip))
        } else {
            (Budget::Requests, 0)
        };
        match self.flood.check(now, ip, budget, bindings) {
            Verdict::Pass | Verdict::Exempt => true,
            Verdict::Drop => {
                metrics::counter!(m::FLOOD_DROPS, "reason" => "rate").increment(1);
                false
            }
            Verdict::Banned => {
                metrics::counter!(m::FLOOD_DROPS, "reason" => "banned").increment(1);
                false
            }
            Verdict::Ban => {
                let which = match budget {
                    Budget::Register => "register",
                    Budget::Requests => "requests",
                };
                metrics::counter!(m::FLOOD_DROPS, "reason" => "rate").increment(1);
                metrics::counter!(m::FLOOD_BANS, "budget" => which).increment(1);
                if let Some(suppressed) = self.ban_log.allow_at(now) {
                    warn!(source = %ip, budget = which, ban_s = self.ban_s, suppressed, "SECURITY: source over its request budget banned");
                }
                false
            }
        }
    }

    /// Whether digest checking is skipped and the request simply challenged again: its source is
    /// locked out, or its account is (except from the address the account's phone registered from).
    pub(super) fn locked_out(&self, now: Instant, claimed: Option<&str>, ip: IpAddr) -> bool {
        if self.flood.whitelisted(ip) {
            return false;
        }
        self.auth_guard.source_locked(now, ip)
            || claimed.is_some_and(|u| {
                self.auth_guard.account_locked(now, u)
                    && !self.registrar.lookup(u, now).any(|b| b.source.ip() == ip)
            })
    }

    /// Count the outcome of a digest check for the lockout.
    pub(super) fn count_auth(
        &mut self,
        now: Instant,
        outcome: &AuthOutcome,
        claimed: Option<&str>,
        ip: IpAddr,
        kind: &'static str,
    ) {
        match outcome {
            AuthOutcome::Authenticated { user, .. } => self.auth_guard.succeeded(user, ip),
            AuthOutcome::Failed { reason } => {
                metrics::counter!(m::AUTH_FAILURES, "kind" => kind).increment(1);
                if self.flood.whitelisted(ip) {
                    return;
                }
                for l in self.auth_guard.failed(now, claimed, ip) {
                    let (scope, secs) = match l {
                        Locked::Account(d) => ("account", d.as_secs()),
                        Locked::Source(d) => ("source", d.as_secs()),
                    };
                    metrics::counter!(m::AUTH_LOCKOUTS, "scope" => scope).increment(1);
                    if let Some(suppressed) = self.lockout_log.allow_at(now) {
                        warn!(source = %ip, account = %Redacted(claimed.unwrap_or("-")), scope, lock_s = secs, %reason, suppressed, "SECURITY: repeated authentication failures: locked out");
                    }
                }
            }
            AuthOutcome::Missing | AuthOutcome::Stale { .. } => {}
        }
    }

    /// Whether the core is beyond capacity for new calls.
    pub(super) fn overloaded(&self) -> bool {
        let (s, c) = self.proxy.transaction_count();
        s + c >= self.overload.max_transactions
    }

    /// 503 with Retry-After to a new INVITE while overloaded; RFC 7339 parameters in the top Via
    /// when the upstream announced support (`oc` in its Via).
    pub(super) fn reject_overload(&mut self, now: Instant, id: ServerId, req: &Request) {
        metrics::counter!(m::OVERLOAD_REJECTIONS).increment(1);
        if let Some(suppressed) = self.overload_log.allow_at(now) {
            let (s, c) = self.proxy.transaction_count();
            warn!(
                transactions = s + c,
                cap = self.overload.max_transactions,
                suppressed,
                "overload: new call refused with 503"
            );
        }
        let Some(mut b) = self
            .proxy
            .response_for(id, 503, "Service Unavailable (overload)")
        else {
            return;
        };
        b.push_header("Retry-After", self.overload.retry_after_s);
        if req.header("Via").is_some_and(|v| via_supports_oc(&v)) {
            let (s, c) = self.proxy.transaction_count();
            let load = (s + c).max(1) as u64;
            let cap = self.overload.max_transactions.max(1) as u64;
            // Loss algorithm: drop the share of requests that brings the load to 90 % of capacity.
            let oc = 100u64.saturating_sub(90 * cap / load).clamp(10, 100);
            let ms = self.unix_origin_ms.max(0) as u128 + now.since_origin().as_millis();
            b.append_top_via_params(&format!(
                ";oc={oc};oc-validity={};oc-seq={}.{:03};oc-algo=\"loss\"",
                self.overload.oc_validity_ms,
                ms / 1000,
                ms % 1000
            ));
        }
        let _ = self.proxy.respond(now, id, b);
    }

    /// Whether the agent's class of service allows `dialed` (routed as `decision`). A refusal is
    /// answered 403 here and logged as a security event.
    pub(super) fn class_allows(
        &mut self,
        now: Instant,
        id: ServerId,
        user: &str,
        dialed: &str,
        decision: &Decision<'_>,
    ) -> bool {
        let category = match decision {
            Decision::Queue(_) | Decision::Dual { .. } => Category::Hotline,
            Decision::Subcenter { .. } => Category::Subcenter,
            // Never refused: the emergency bridge answers these first.
            Decision::Emergency { .. } => return true,
            Decision::NotFound { .. } if self.credentials.get(dialed).is_some() => {
                Category::Internal
            }
            Decision::NotFound { .. } => Category::Other,
        };
        let (class, c) = self.classes.of(user);
        if c.allows(category, dialed) {
            return true;
        }
        metrics::counter!(m::COS_REFUSALS).increment(1);
        if let Some(suppressed) = self.cos_log.allow_at(now) {
            warn!(agent = %user, class, dialed = %Redacted(dialed), ?category, suppressed, "SECURITY: call refused by class of service");
        }
        self.reply(now, id, 403, "Forbidden (class of service)", &[]);
        false
    }
}

/// Whether the first value of a Via header carries the `oc` parameter (RFC 7339 §5.1).
fn via_supports_oc(via: &str) -> bool {
    let first = via.split(',').next().unwrap_or("");
    first.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("oc"))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn oc_is_found_only_in_the_top_via_as_a_parameter() {
        use super::via_supports_oc as f;
        assert!(f("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;oc"));
        assert!(f("SIP/2.0/UDP 10.0.0.1;oc=0;branch=z9hG4bKx"));
        assert!(!f("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKoc"));
        assert!(!f("SIP/2.0/UDP 10.0.0.1;branch=a, SIP/2.0/UDP 10.0.0.2;oc"));
    }
}
