//! Per-source request-rate limits with temporary bans: the idea of Kamailio's `pike`, sans-IO.
//!
//! The core calls [`FloodGuard::check`] for every inbound request before it is parsed, with `now`
//! passed in. Each source address has two token buckets: one for REGISTER, one for everything
//! else. A request that finds its bucket empty is dropped silently (UDP senders retransmit, a
//! well-behaved phone recovers); a source that keeps sending into an empty bucket — as many drops
//! as its burst before the bucket could refill — is banned for `ban_s` and ignored entirely.
//!
//! Policy for offices (SECURITY.md): budgets are per *address*, never per subnet, so an office
//! whose phones all re-register at once is many sources with a budget each; many accounts behind
//! one NAT address get `register_burst_per_binding` extra REGISTER burst per binding already
//! registered from it; and ops can whitelist a network outright. Trunks, PSAPs and emergency
//! INVITEs are exempt before this is asked (app.rs).
//!
//! Memory is bounded: at most `max_sources` addresses are tracked (idle ones are swept); beyond that,
//! new addresses share one bucket that drops but never bans. No allocation per packet once the
//! table has grown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use sip_core::time::Instant;

use crate::security::FloodConfig;

/// Which budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// REGISTER.
    Register,
    /// Every other request (and junk).
    Requests,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget: handle it.
    Pass,
    /// Whitelisted: not counted at all.
    Exempt,
    /// Over budget: drop it silently.
    Drop,
    /// Over budget again and again: this request started a ban (log it). Drop it.
    Ban,
    /// The source is banned: drop it.
    Banned,
}

impl Verdict {
    /// Whether the request goes on to be handled.
    pub fn passes(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::Exempt)
    }
}

/// Tokens are counted in thousandths, refilled per elapsed millisecond.
const MILLI: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    requests: u64,
    register: u64,
    last: Instant,
    /// Drops since the bucket was last full.
    over: u32,
    banned_until: Option<Instant>,
}

/// The per-source limiter. One per switchboard, owned by the core task.
#[derive(Debug)]
pub struct FloodGuard {
    cfg: FloodConfig,
    whitelist: Vec<IpNet>,
    table: HashMap<IpAddr, Entry>,
    /// The bucket shared by sources that did not fit in the table.
    shared: Entry,
    next_sweep: Instant,
    /// An entry idle this long has refilled both buckets and can be forgotten.
    idle_full: Duration,
}

const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl FloodGuard {
    pub fn new(cfg: FloodConfig, whitelist: Vec<IpNet>) -> FloodGuard {
        let table = HashMap::with_capacity(cfg.max_sources.min(4096));
        let mut g = FloodGuard {
            shared: Entry {
                requests: 0,
                register: 0,
                last: Instant::ZERO,
                over: 0,
                banned_until: None,
            },
            cfg,
            whitelist,
            table,
            next_sweep: Instant::ZERO,
            idle_full: Duration::ZERO,
        };
        g.derive();
        g.shared = g.fresh(Instant::ZERO);
        g
    }

    /// Apply reloaded limits; tracked sources and bans are kept.
    pub fn reconfigure(&mut self, cfg: FloodConfig, whitelist: Vec<IpNet>) {
        self.cfg = cfg;
        self.whitelist = whitelist;
        self.derive();
    }

    fn derive(&mut self) {
        let c = &self.cfg;
        let secs = |burst: u32, rate: u32| u64::from(burst) / u64::from(rate.max(1)) + 1;
        let register_max = c.register_burst + c.register_burst_per_binding.saturating_mul(64);
        self.idle_full = Duration::from_secs(
            secs(c.requests_burst, c.requests_per_s).max(secs(register_max, c.register_per_s)),
        );
    }

    fn fresh(&self, now: Instant) -> Entry {
        Entry {
            requests: u64::from(self.cfg.requests_burst) * MILLI,
            register: u64::from(self.cfg.register_burst) * MILLI,
            last: now,
            over: 0,
            banned_until: None,
        }
    }

    /// Whether ops whitelisted this address.
    pub fn whitelisted(&self, ip: IpAddr) -> bool {
        self.whitelist.iter().any(|n| n.contains(&ip))
    }

    /// Sources tracked now (for a gauge).
    pub fn tracked(&self) -> usize {
        self.table.len()
    }

    /// Account one request from `ip` at `now`. `bindings` is the number of registrations from `ip`
    /// (it widens the REGISTER burst; pass 0 for other budgets).
    pub fn check(&mut self, now: Instant, ip: IpAddr, budget: Budget, bindings: u32) -> Verdict {
        if self.whitelisted(ip) {
            return Verdict::Exempt;
        }
        if now >= self.next_sweep {
            self.sweep(now);
        }
        let cfg = &self.cfg;
        // A source seen for the first time (or again after it went idle) starts with full buckets;
        // the REGISTER one as wide as its bindings allow.
        let fresh = Entry {
            requests: u64::from(cfg.requests_burst) * MILLI,
            register: u64::from(
                cfg.register_burst
                    .saturating_add(cfg.register_burst_per_binding.saturating_mul(bindings)),
            ) * MILLI,
            last: now,
            over: 0,
            banned_until: None,
        };
        let (e, shared) = if let Some(e) = self.table.get_mut(&ip) {
            (e, false)
        } else if self.table.len() < cfg.max_sources {
            (self.table.entry(ip).or_insert(fresh), false)
        } else {
            (&mut self.shared, true)
        };
        if let Some(until) = e.banned_until {
            if now < until {
                return Verdict::Banned;
            }
            *e = fresh;
        }
        let elapsed_ms = (now - e.last).as_millis().min(u128::from(u32::MAX)) as u64;
        e.last = now;
        let (tokens, rate, burst) = match budget {
            Budget::Requests => (&mut e.requests, cfg.requests_per_s, cfg.requests_burst),
            Budget::Register => (
                &mut e.register,
                cfg.register_per_s,
                cfg.register_burst
                    .saturating_add(cfg.register_burst_per_binding.saturating_mul(bindings)),
            ),
        };
        let cap = u64::from(burst) * MILLI;
        // `rate` per second is `rate` thousandths per millisecond.
        *tokens = (*tokens + elapsed_ms * u64::from(rate)).min(cap);
        if *tokens == cap {
            e.over = 0;
        }
        if *tokens >= MILLI {
            *tokens -= MILLI;
            return Verdict::Pass;
        }
        e.over += 1;
        if !shared && e.over >= burst.max(1) {
            e.over = 0;
            e.banned_until = Some(now + Duration::from_secs(cfg.ban_s));
            return Verdict::Ban;
        }
        Verdict::Drop
    }

    /// Forget sources idle long enough to be full again (and expired bans).
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + SWEEP_EVERY;
        let idle = self.idle_full;
        self.table.retain(|_, e| match e.banned_until {
            Some(until) => until > now,
            None => now - e.last < idle,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    fn cfg() -> FloodConfig {
        FloodConfig {
            requests_per_s: 10,
            requests_burst: 20,
            register_per_s: 2,
            register_burst: 5,
            register_burst_per_binding: 2,
            ban_s: 60,
            max_sources: 4,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 7, n])
    }

    #[test]
    fn burst_then_rate_then_ban_then_release() {
        let mut g = FloodGuard::new(cfg(), vec![]);
        for _ in 0..20 {
            assert_eq!(g.check(at(0), ip(1), Budget::Requests, 0), Verdict::Pass);
        }
        // Empty: drops, and after as many drops as the burst, a ban.
        for _ in 0..19 {
            assert_eq!(g.check(at(0), ip(1), Budget::Requests, 0), Verdict::Drop);
        }
        assert_eq!(g.check(at(0), ip(1), Budget::Requests, 0), Verdict::Ban);
        assert_eq!(
            g.check(at(59_000), ip(1), Budget::Requests, 0),
            Verdict::Banned
        );
        // Another source is untouched.
        assert_eq!(g.check(at(100), ip(2), Budget::Requests, 0), Verdict::Pass);
        // After the ban, a full budget again.
        assert_eq!(
            g.check(at(60_000), ip(1), Budget::Requests, 0),
            Verdict::Pass
        );
    }

    #[test]
    fn sustained_rate_within_budget_is_never_dropped() {
        let mut g = FloodGuard::new(cfg(), vec![]);
        // 10/s for a minute: exactly the rate.
        for i in 0..600 {
            assert!(g.check(at(i * 100), ip(1), Budget::Requests, 0).passes());
        }
    }

    #[test]
    fn twice_the_rate_is_banned_not_just_thinned() {
        let mut g = FloodGuard::new(cfg(), vec![]);
        let mut banned = false;
        for i in 0..2000 {
            if g.check(at(i * 50), ip(1), Budget::Requests, 0) == Verdict::Ban {
                banned = true;
                break;
            }
        }
        assert!(banned);
    }

    #[test]
    fn register_has_its_own_budget_widened_by_bindings() {
        let mut g = FloodGuard::new(cfg(), vec![]);
        for _ in 0..5 {
            assert_eq!(g.check(at(0), ip(1), Budget::Register, 0), Verdict::Pass);
        }
        assert_eq!(g.check(at(0), ip(1), Budget::Register, 0), Verdict::Drop);
        // Other requests still have their budget.
        assert_eq!(g.check(at(0), ip(1), Budget::Requests, 0), Verdict::Pass);
        // A NAT address with 10 phones registered: 5 + 2·10 burst, refilled over time.
        let mut g = FloodGuard::new(cfg(), vec![]);
        let mut passed = 0;
        for _ in 0..25 {
            if g.check(at(20_000), ip(3), Budget::Register, 10).passes() {
                passed += 1;
            }
        }
        assert_eq!(passed, 25, "5 + 2 per binding");
        for _ in 0..30 {
            if g.check(at(40_000), ip(3), Budget::Register, 10).passes() {
                passed += 1;
            }
        }
        assert_eq!(passed, 50, "refilled up to the widened burst");
    }

    #[test]
    fn whitelist_is_exempt_and_table_is_bounded() {
        let net: IpNet = "127.0.7.0/28".parse().unwrap();
        let mut g = FloodGuard::new(cfg(), vec![net]);
        for _ in 0..1000 {
            assert_eq!(g.check(at(0), ip(1), Budget::Requests, 0), Verdict::Exempt);
        }
        let mut g = FloodGuard::new(cfg(), vec![]);
        for n in 0..=255 {
            let _ = g.check(at(0), ip(n), Budget::Requests, 0);
        }
        assert_eq!(g.tracked(), 4);
        // The shared bucket drops but never bans.
        for _ in 0..100 {
            assert_ne!(g.check(at(0), ip(200), Budget::Requests, 0), Verdict::Ban);
        }
        // Idle sources are swept.
        let _ = g.check(at(120_000), ip(9), Budget::Requests, 0);
        assert_eq!(g.tracked(), 1);
    }
}
