//! Phone numbers are personal data: logs show them redacted unless debugging numbers is switched on.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static SHOW_NUMBERS: AtomicBool = AtomicBool::new(false);

/// Let logs carry full numbers (only for debugging, by explicit config).
pub fn show_numbers(on: bool) {
    SHOW_NUMBERS.store(on, Ordering::Relaxed);
}

/// Displays a number with all but its first three and last two characters masked: `138******00`.
/// Short service numbers (12345, 110) are not personal data and are shown whole.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if SHOW_NUMBERS.load(Ordering::Relaxed) || s.chars().count() <= 6 {
            return f.write_str(s);
        }
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        for (i, c) in chars.iter().enumerate() {
            if i < 3 || i >= n - 2 {
                write!(f, "{c}")?;
            } else {
                f.write_str("*")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_numbers_are_masked_short_ones_are_not() {
        assert_eq!(Redacted("13800138000").to_string(), "138******00");
        assert_eq!(Redacted("12345").to_string(), "12345");
        assert_eq!(Redacted("8001").to_string(), "8001");
    }
}
