//! Dial strings without allocation: pulling the user part out of a URI, dropping visual separators,
//! and packing digit strings into integer keys for the routing table.
//!
//! Everything here works on the stack, because it runs once or twice for every INVITE.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// Most digits a dial string may carry (with its `+86` and area code). E.164 allows 15; the rest is
/// slack for sloppy forms such as `+86 0971 …`.
pub const MAX_DIGITS: usize = 32;

/// Most digits of a number that the plan can hold (line numbers, area codes, emergency numbers):
/// E.164's limit, which also keeps [`number_key`] inside a `u64`.
pub(crate) const MAX_KEY_DIGITS: usize = 15;

/// Why a dial string could not be read as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Nothing was left once the scheme, host and parameters were taken off.
    #[error("no number in the dial string")]
    Empty,
    /// A character other than a digit, a leading `+` or a visual separator (`-`, `.`, `(`, `)`, space).
    #[error("the dial string holds characters that are not digits")]
    NotDigits,
    /// More than [`MAX_DIGITS`] digits.
    #[error("the dial string has more than {MAX_DIGITS} digits")]
    TooLong,
}

/// A digit string on the stack, optionally led by `+` (only for numbers outside China, which the
/// plan never routes but the caller may still want to see).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digits {
    buf: [u8; MAX_DIGITS + 1],
    len: u8,
}

impl Digits {
    pub(crate) fn from_slice(plus: bool, digits: &[u8]) -> Digits {
        debug_assert!(digits.len() <= MAX_DIGITS);
        let mut buf = [0u8; MAX_DIGITS + 1];
        let mut len = 0;
        if plus {
            buf[0] = b'+';
            len = 1;
        }
        buf[len..len + digits.len()].copy_from_slice(digits);
        Digits {
            buf,
            len: (len + digits.len()) as u8,
        }
    }

    /// The number as text, e.g. `"12315"`.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and '+' are ever stored.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }
}

impl std::ops::Deref for Digits {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Digits {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Digits {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A Chinese long-distance area code with its trunk prefix `0`, 3 or 4 digits (`010`, `0971`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AreaCode {
    buf: [u8; 4],
    len: u8,
}

impl AreaCode {
    /// Reads `0` followed by 2 or 3 digits; anything else is not a Chinese area code.
    pub fn parse(s: &str) -> Option<AreaCode> {
        let b = s.as_bytes();
        if !(3..=4).contains(&b.len()) || b[0] != b'0' || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut buf = [0u8; 4];
        buf[..b.len()].copy_from_slice(b);
        Some(AreaCode {
            buf,
            len: b.len() as u8,
        })
    }

    /// The code with its leading `0`, e.g. `"0971"`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }

    pub(crate) fn key(&self) -> u64 {
        number_key(&self.buf[..self.len as usize])
    }
}

impl fmt::Debug for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Packs up to [`MAX_KEY_DIGITS`] ASCII digits into one integer: the value shifted left by 4, with
/// the length in the low 4 bits, so `"0110"` and `"110"` stay apart. Hashing one `u64` is what keeps a
/// lookup free of allocation and string hashing.
pub(crate) fn number_key(digits: &[u8]) -> u64 {
    debug_assert!(digits.len() <= MAX_KEY_DIGITS);
    let value = digits
        .iter()
        .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
    (value << 4) | digits.len() as u64
}

/// Like [`number_key`] for `"0"` followed by `digits`: an area code written without its trunk
/// prefix, as it appears after `+86`.
pub(crate) fn number_key_with_zero(digits: &[u8]) -> u64 {
    let value = digits
        .iter()
        .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
    (value << 4) | (digits.len() as u64 + 1)
}

/// Hasher for [`number_key`]s: one multiply, folded so that the high bits reach the bucket index.
/// The keys come from our own plan, so flooding resistance (SipHash's reason to exist) buys nothing.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = (self.0 ^ k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Builds [`KeyHasher`]s.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct BuildKeyHasher;

impl BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// The user part of a SIP/SIPS/TEL URI (or the input itself when it is a bare user part), without
/// URI parameters. `"Zhang" <sip:12315@gw;user=phone>` gives `12315`; `tel:+86-971-12345;phone-context=x`
/// gives `+86-971-12345`.
pub(crate) fn user_part(s: &str) -> &str {
    let mut s = s.trim();
    if let Some(open) = s.find('<') {
        s = &s[open + 1..];
        if let Some(close) = s.find('>') {
            s = &s[..close];
        }
    }
    let mut is_sip = false;
    for scheme in ["sips:", "sip:", "tel:"] {
        // `get`, not indexing: a caller's From may put a UTF-8 character across the cut.
        if s.get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
        {
            is_sip = scheme != "tel:";
            s = &s[scheme.len()..];
            break;
        }
    }
    if is_sip {
        if let Some(at) = s.find('@') {
            s = &s[..at];
        }
    }
    let end = s.find([';', '?']).unwrap_or(s.len());
    s[..end].trim()
}

/// Digits of a user part with visual separators dropped. Returns whether a leading `+` was present
/// (it may follow separators, as in `(+86) …`, but no digit).
pub(crate) fn clean(user: &str, out: &mut [u8; MAX_DIGITS]) -> Result<(bool, usize), NumberError> {
    let mut plus = false;
    let mut len = 0;
    for &b in user.as_bytes() {
        match b {
            b'0'..=b'9' => {
                if len == MAX_DIGITS {
                    return Err(NumberError::TooLong);
                }
                out[len] = b;
                len += 1;
            }
            b'+' if len == 0 && !plus => plus = true,
            b'-' | b'.' | b'(' | b')' | b' ' | b'\t' => {}
            _ => return Err(NumberError::NotDigits),
        }
    }
    if len == 0 {
        return Err(NumberError::Empty);
    }
    Ok((plus, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `dialplan_route` fuzz target: a UTF-8 character across the scheme check
    /// panicked. The caller comes from an INVITE's From header, so any stranger could send it.
    #[test]
    fn user_part_of_non_ascii_does_not_panic() {
        assert_eq!(
            user_part("s\u{14f}s\u{14f}:12309775879.qh.09en61\0 000"),
            "s\u{14f}s\u{14f}:12309775879.qh.09en61\0 000"
        );
        assert_eq!(
            user_part("<s\u{14f}s\u{14f}:1@h>;tag=1"),
            "s\u{14f}s\u{14f}:1@h"
        );
        assert_eq!(user_part("\u{5f20}:1"), "\u{5f20}:1");
    }

    #[test]
    fn user_part_of_uris() {
        assert_eq!(user_part("12315"), "12315");
        assert_eq!(user_part("sip:12315@10.0.0.1;user=phone"), "12315");
        assert_eq!(user_part("SIP:12315@gw:5060;user=phone"), "12315");
        assert_eq!(user_part("sips:+8612315@gw"), "+8612315");
        assert_eq!(
            user_part("tel:+86-971-12345;phone-context=example.com"),
            "+86-971-12345"
        );
        assert_eq!(
            user_part("\"Zhang\" <sip:0972-12315@gw;user=phone>;tag=1"),
            "0972-12315"
        );
        assert_eq!(user_part("sip:12315;user=phone"), "12315");
        assert_eq!(user_part("sip:12315;npdi@gw"), "12315");
    }

    #[test]
    fn clean_drops_separators_and_keeps_plus() {
        let mut b = [0; MAX_DIGITS];
        assert_eq!(clean("+86 (971) 123-45", &mut b), Ok((true, 10)));
        assert_eq!(&b[..10], b"8697112345");
        assert_eq!(clean("123.15", &mut b), Ok((false, 5)));
        assert_eq!(clean("12a15", &mut b), Err(NumberError::NotDigits));
        assert_eq!(clean("1+2", &mut b), Err(NumberError::NotDigits));
        assert_eq!(clean(" - ", &mut b), Err(NumberError::Empty));
        assert_eq!(clean(&"1".repeat(33), &mut b), Err(NumberError::TooLong));
    }

    #[test]
    fn keys_keep_leading_zeros_apart() {
        assert_ne!(number_key(b"110"), number_key(b"0110"));
        assert_eq!(number_key(b"0971"), number_key_with_zero(b"971"));
        assert_eq!(
            AreaCode::parse("0971").map(|a| a.key()),
            Some(number_key(b"0971"))
        );
        assert!(AreaCode::parse("971").is_none());
        assert!(AreaCode::parse("09711").is_none());
        assert!(AreaCode::parse("010").is_some());
    }
}
