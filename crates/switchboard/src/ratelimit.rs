//! Logging at a bounded rate: a flood of junk must not become a flood of log lines.

use std::ops::Sub;
use std::time::Duration;

/// Allows one log line per interval and counts what it suppressed in between.
///
/// Generic over the clock: the shell's tasks use `std::time::Instant` through [`LogLimiter::allow`];
/// the sans-IO application passes its own `now` to [`LogLimiter::allow_at`] and never reads a clock.
#[derive(Debug)]
pub struct LogLimiter<T = std::time::Instant> {
    interval: Duration,
    last: Option<T>,
    suppressed: u64,
}

impl<T: Copy + Sub<T, Output = Duration>> LogLimiter<T> {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged at `now` (`n` lines were suppressed since the last one).
    pub fn allow_at(&mut self, now: T) -> Option<u64> {
        match self.last {
            Some(t) if now - t < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

impl LogLimiter {
    /// [`LogLimiter::allow_at`] with the wall clock's monotonic now.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(std::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_core::time::Instant;

    #[test]
    fn one_line_per_interval_with_the_count_of_suppressed_ones() {
        let mut l = LogLimiter::new(Duration::from_secs(1));
        let t = |ms| Instant::from_origin(Duration::from_millis(ms));
        assert_eq!(l.allow_at(t(0)), Some(0));
        assert_eq!(l.allow_at(t(10)), None);
        assert_eq!(l.allow_at(t(999)), None);
        assert_eq!(l.allow_at(t(1000)), Some(2));
        assert_eq!(l.allow_at(t(1500)), None);
        assert_eq!(l.allow_at(t(5000)), Some(1));
    }
}
