//! Failed digest authentications, counted per account and per source, with lockout and backoff.
//! Sans-IO: `now` is passed in.
//!
//! `max_failures` failures within `window_s` lock the account (whatever source guessed) and the
//! source (whatever account it guessed) for `lock_s`, doubled at each further lockout up to
//! `max_lock_s`; a success clears the count and the backoff. Unknown accounts are counted exactly
//! like known ones, so lockouts reveal nothing about which accounts exist. While locked, requests
//! get the same challenge as a wrong password: the guesser cannot tell that guessing stopped
//! working.
//!
//! An account lockout does not hold against the address the account's phone is registered from
//! (the caller checks that), so a stranger hammering an agent's account cannot log the agent out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use sip_core::time::Instant;

use crate::security::LockoutConfig;

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
    /// Lockouts so far (the backoff exponent).
    strikes: u32,
    last: Instant,
}

/// What a failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// The account was locked for this long.
    Account(Duration),
    /// The source was locked for this long.
    Source(Duration),
}

/// Bound on each table: beyond it new keys are not tracked (the other table still is).
const MAX_ENTRIES: usize = 65_536;

/// The lockout tables.
#[derive(Debug)]
pub struct AuthGuard {
    cfg: LockoutConfig,
    accounts: HashMap<Box<str>, Record>,
    sources: HashMap<IpAddr, Record>,
    next_sweep: Instant,
}

impl AuthGuard {
    pub fn new(cfg: LockoutConfig) -> AuthGuard {
        AuthGuard {
            cfg,
            accounts: HashMap::new(),
            sources: HashMap::new(),
            next_sweep: Instant::ZERO,
        }
    }

    pub fn reconfigure(&mut self, cfg: LockoutConfig) {
        self.cfg = cfg;
    }

    /// Whether the account is locked at `now`.
    pub fn account_locked(&self, now: Instant, user: &str) -> bool {
        self.accounts
            .get(user)
            .and_then(|r| r.locked_until)
            .is_some_and(|t| now < t)
    }

    /// Whether the source is locked at `now`.
    pub fn source_locked(&self, now: Instant, ip: IpAddr) -> bool {
        self.sources
            .get(&ip)
            .and_then(|r| r.locked_until)
            .is_some_and(|t| now < t)
    }

    /// Count one failed authentication; returns the lockouts it started.
    pub fn failed(&mut self, now: Instant, user: Option<&str>, ip: IpAddr) -> Vec<Locked> {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        let mut out = Vec::new();
        if let Some(user) = user {
            let n = self.accounts.len();
            let rec = match self.accounts.get_mut(user) {
                Some(r) => Some(r),
                None if n < MAX_ENTRIES => Some(self.accounts.entry(user.into()).or_default()),
                None => None,
            };
            if let Some(d) = rec.and_then(|r| count(&self.cfg, r, now)) {
                out.push(Locked::Account(d));
            }
        }
        let n = self.sources.len();
        let rec = match self.sources.get_mut(&ip) {
            Some(r) => Some(r),
            None if n < MAX_ENTRIES => Some(self.sources.entry(ip).or_default()),
            None => None,
        };
        if let Some(d) = rec.and_then(|r| count(&self.cfg, r, now)) {
            out.push(Locked::Source(d));
        }
        out
    }

    /// A successful authentication: the account's and the source's counts and backoff are cleared.
    pub fn succeeded(&mut self, user: &str, ip: IpAddr) {
        self.accounts.remove(user);
        self.sources.remove(&ip);
    }

    /// Forget records with no lock and no recent failure.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + Duration::from_secs(30);
        // Strikes are forgotten once a source has been quiet for twice the longest lockout.
        let keep = Duration::from_secs(self.cfg.window_s.max(self.cfg.max_lock_s * 2));
        let live = |r: &mut Record| r.locked_until.is_some_and(|t| t > now) || now - r.last < keep;
        self.accounts.retain(|_, r| live(r));
        self.sources.retain(|_, r| live(r));
    }

    /// (accounts, sources) tracked (for a gauge and tests).
    pub fn tracked(&self) -> (usize, usize) {
        (self.accounts.len(), self.sources.len())
    }
}

/// Count a failure in `r`; `Some(duration)` when it starts a lockout.
fn count(cfg: &LockoutConfig, r: &mut Record, now: Instant) -> Option<Duration> {
    r.last = now;
    if r.locked_until.is_some_and(|t| now < t) {
        return None;
    }
    if r.failures == 0 || now - r.window_start > Duration::from_secs(cfg.window_s) {
        r.failures = 0;
        r.window_start = now;
    }
    r.failures += 1;
    if r.failures < cfg.max_failures {
        return None;
    }
    let secs = cfg
        .lock_s
        .saturating_mul(1u64 << r.strikes.min(20))
        .min(cfg.max_lock_s);
    let d = Duration::from_secs(secs);
    r.strikes += 1;
    r.failures = 0;
    r.locked_until = Some(now + d);
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_origin(Duration::from_secs(s))
    }

    fn cfg() -> LockoutConfig {
        LockoutConfig {
            max_failures: 3,
            window_s: 60,
            lock_s: 10,
            max_lock_s: 35,
        }
    }

    #[test]
    fn lockout_doubles_up_to_the_cap_and_success_clears_it() {
        let a: IpAddr = [127, 0, 6, 1].into();
        let b: IpAddr = [127, 0, 6, 2].into();
        let mut g = AuthGuard::new(cfg());
        assert!(g.failed(at(0), Some("8001"), a).is_empty());
        assert!(g.failed(at(1), Some("8001"), b).is_empty());
        // Third failure on the account (from another source): the account locks, not source `a`.
        let l = g.failed(at(2), Some("8001"), a);
        assert_eq!(l, vec![Locked::Account(Duration::from_secs(10))]);
        assert!(g.account_locked(at(11), "8001"));
        assert!(!g.account_locked(at(12), "8001"));
        // Next lockouts: 20 s, then capped at 35 s.
        for s in 12..15 {
            let _ = g.failed(at(s), Some("8001"), [10, 0, 0, s as u8].into());
        }
        assert!(g.account_locked(at(33), "8001") && !g.account_locked(at(34), "8001"));
        for s in 40..43 {
            let _ = g.failed(at(s), Some("8001"), [10, 0, 1, s as u8].into());
        }
        assert!(g.account_locked(at(76), "8001") && !g.account_locked(at(77), "8001"));
        g.succeeded("8001", a);
        for s in 80..83 {
            let _ = g.failed(at(s), Some("8001"), [10, 0, 2, s as u8].into());
        }
        assert!(!g.account_locked(at(92), "8001"), "backoff was reset");
    }

    #[test]
    fn a_source_guessing_many_accounts_is_locked_and_unknown_users_count_alike() {
        let a: IpAddr = [127, 0, 6, 3].into();
        let mut g = AuthGuard::new(cfg());
        let _ = g.failed(at(0), Some("nobody"), a);
        let _ = g.failed(at(0), Some("8002"), a);
        let l = g.failed(at(0), Some("8003"), a);
        assert_eq!(l, vec![Locked::Source(Duration::from_secs(10))]);
        assert!(g.source_locked(at(5), a));
        // Failures spread beyond the window do not add up.
        let mut g = AuthGuard::new(cfg());
        for s in [0, 70, 140, 210] {
            assert!(g.failed(at(s), Some("x"), a).is_empty());
        }
    }
}
