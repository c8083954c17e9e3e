//! SIP message framing on byte streams (TCP, TLS): RFC 3261 §18.3.
//!
//! A datagram carries exactly one message, but a stream carries many back to back, so the receiver must
//! find where each ends: at the blank line that closes the headers plus `Content-Length` octets of body.
//! That is why `Content-Length` is mandatory on streams (§20.14) and a message without it cannot be
//! framed at all.
//!
//! [`StreamFramer`] is sans-IO: the shell [`push`](StreamFramer::push)es whatever a read returned, then
//! calls [`next_message`](StreamFramer::next_message) until it yields `Ok(None)`. It never reads a clock;
//! the shell runs the stall timer and asks [`has_partial_message`](StreamFramer::has_partial_message)
//! whether one is needed.
//!
//! Between messages, CRLFs are skipped (§7.5). A double CRLF there is an RFC 5626 §4.4.1 keep-alive
//! ping; [`take_ping`](StreamFramer::take_ping) tells the shell to answer it with [`KEEPALIVE_PONG`].
//!
//! Every framing error is fatal for the stream: once the framer has lost track of where messages end,
//! nothing after that point can be trusted, so the shell must close the connection. The framer stays
//! failed and keeps returning the same error.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Answer to an RFC 5626 double-CRLF keep-alive ping: a single CRLF.
pub const KEEPALIVE_PONG: &[u8] = b"\r\n";

/// Why a byte stream cannot be split into SIP messages. Each of these is fatal for the stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// The message would exceed the configured size bound: either its headers are not terminated within
    /// the bound, or headers plus the declared body are larger. Checked before buffering the body, so a
    /// peer cannot make us hold more than the bound.
    #[error("message of at least {at_least} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured bound, in bytes.
        limit: usize,
        /// How large the message is known to be when it was rejected (saturating).
        at_least: usize,
    },
    /// The headers carry no `Content-Length`, which a stream needs to find the end of the body.
    #[error("no Content-Length header: a message on a stream cannot be framed without one")]
    MissingContentLength,
    /// A `Content-Length` value that is not a plain run of decimal digits, or does not fit in `usize`.
    #[error("Content-Length is not a decimal number")]
    InvalidContentLength,
    /// A negative `Content-Length` (RFC 4475 `ncl`).
    #[error("Content-Length is negative")]
    NegativeContentLength,
    /// Two `Content-Length` headers that disagree (RFC 4475 `mcl01`): no way to know which
    /// one the sender meant.
    #[error("conflicting Content-Length headers: {first} and {second}")]
    ConflictingContentLength {
        /// The first value seen.
        first: usize,
        /// The first value that disagreed with it.
        second: usize,
    },
}

/// Splits a SIP byte stream into messages. One per connection.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_message_bytes: usize,
    /// Where the search for the end of the headers resumes, so that a message arriving a byte at a time
    /// is scanned once, not once per byte.
    scan_from: usize,
    /// Total length (headers + body) of the message at the front of `buf`, once its headers are parsed.
    pending_total: Option<usize>,
    /// Line feeds seen in the current run of CRLFs between messages; two make a ping.
    newlines_between: u8,
    ping_seen: bool,
    failed: Option<FramingError>,
}

impl StreamFramer {
    /// A framer that rejects any message (headers + body) larger than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        StreamFramer {
            buf: BytesMut::new(),
            max_message_bytes,
            scan_from: 0,
            pending_total: None,
            newlines_between: 0,
            ping_seen: false,
            failed: None,
        }
    }

    /// The size bound this framer enforces, in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Appends bytes read from the stream. Call [`next_message`](Self::next_message) until it returns
    /// `Ok(None)` after every push: the size bound is checked there, so pushing without draining lets
    /// the buffer grow. Bytes pushed after a framing error are discarded.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete message (start line through body, without the CRLFs that preceded it), or
    /// `Ok(None)` if more bytes are needed. After an error the stream is unusable: close it.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.frame() {
            Ok(m) => Ok(m),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = BytesMut::new();
                Err(e)
            }
        }
    }

    /// Whether a double-CRLF keep-alive ping arrived since the last call. Several pings in one batch
    /// are answered with one pong: the peer only needs to learn that the flow is alive, and answering
    /// each would let it make us write as much as it sends.
    pub fn take_ping(&mut self) -> bool {
        std::mem::take(&mut self.ping_seen)
    }

    /// Whether part of a message is buffered. Valid after `next_message` returned `Ok(None)`; the shell
    /// arms its stall timer while this is true, so a peer cannot hold a connection open by sending half
    /// a message.
    pub fn has_partial_message(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes buffered and not yet returned as a message.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    fn frame(&mut self) -> Result<Option<Bytes>, FramingError> {
        let total = match self.pending_total {
            Some(total) => total,
            None => {
                self.skip_newlines_between_messages();
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let Some(head_len) = self.find_head_end()? else {
                    return Ok(None);
                };
                let body_len = content_length_of(&self.buf[..head_len])?
                    .ok_or(FramingError::MissingContentLength)?;
                let total = head_len.saturating_add(body_len);
                if total > self.max_message_bytes {
                    return Err(FramingError::TooLarge {
                        limit: self.max_message_bytes,
                        at_least: total,
                    });
                }
                self.pending_total = Some(total);
                total
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        self.pending_total = None;
        self.scan_from = 0;
        Ok(Some(self.buf.split_to(total).freeze()))
    }

    /// Drops the CRLFs that may precede a message (RFC 3261 §7.5) and notes keep-alive pings.
    fn skip_newlines_between_messages(&mut self) {
        let skip = self
            .buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.buf.len());
        if skip == 0 {
            if !self.buf.is_empty() {
                self.newlines_between = 0;
            }
            return;
        }
        for &b in &self.buf[..skip] {
            if b == b'\n' {
                self.newlines_between += 1;
                if self.newlines_between == 2 {
                    self.ping_seen = true;
                    self.newlines_between = 0;
                }
            }
        }
        let _ = self.buf.split_to(skip);
        if !self.buf.is_empty() {
            // A message starts here; a CRLF after it belongs to the next gap.
            self.newlines_between = 0;
        }
    }

    /// Length of the message head (through the blank line), if it is all buffered. Only the first
    /// `max_message_bytes` bytes are searched: a head that ends later is too large anyway.
    fn find_head_end(&mut self) -> Result<Option<usize>, FramingError> {
        let window = self.buf.len().min(self.max_message_bytes);
        if let Some(end) = find_blank_line(&self.buf[..window], self.scan_from) {
            return Ok(Some(end));
        }
        if self.buf.len() >= self.max_message_bytes {
            return Err(FramingError::TooLarge {
                limit: self.max_message_bytes,
                at_least: self.buf.len(),
            });
        }
        // A terminator may have started in the last two bytes: look at them again next time.
        self.scan_from = window.saturating_sub(2);
        Ok(None)
    }
}

/// End (exclusive) of the first blank line in `buf` at or after `from`: CRLFCRLF per the RFC, or LFLF
/// (and the mixed forms) from senders that use bare LF line ends.
fn find_blank_line(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i + off;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// The `Content-Length` of a message head (start line and headers; the blank line and anything after
/// it are ignored), matching the compact form `l` and any case, tolerating LWS around the colon and line
/// folding. `Ok(None)` if there is no such header — fine on UDP, where the datagram ends the body, fatal
/// on a stream. Repeated headers must agree.
pub fn content_length_of(headers: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut found: Option<usize> = None;
    // The value of the Content-Length field being read, if the current field is one: it may continue
    // on folded lines.
    let mut current: Option<ValueScan> = None;
    for raw in headers.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if let Some(scan) = &mut current {
                scan.feed(line)?;
            }
            continue;
        }
        if let Some(scan) = current.take() {
            record(&mut found, scan.finish()?)?;
        }
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim_lws(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let mut scan = ValueScan::default();
            scan.feed(&line[colon + 1..])?;
            current = Some(scan);
        }
    }
    if let Some(scan) = current {
        record(&mut found, scan.finish()?)?;
    }
    Ok(found)
}

fn record(found: &mut Option<usize>, value: usize) -> Result<(), FramingError> {
    match *found {
        Some(first) if first != value => Err(FramingError::ConflictingContentLength {
            first,
            second: value,
        }),
        _ => {
            *found = Some(value);
            Ok(())
        }
    }
}

/// Accumulates a Content-Length value across folded lines: exactly one token of digits, surrounded by
/// any LWS.
#[derive(Default)]
struct ValueScan {
    value: Option<usize>,
}

impl ValueScan {
    fn feed(&mut self, piece: &[u8]) -> Result<(), FramingError> {
        let token = trim_lws(piece);
        if token.is_empty() {
            return Ok(());
        }
        if self.value.is_some() {
            // "1 50": folding does not join digits.
            return Err(FramingError::InvalidContentLength);
        }
        if let Some(digits) = token.strip_prefix(b"-") {
            if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::NegativeContentLength);
            }
            return Err(FramingError::InvalidContentLength);
        }
        let mut n: usize = 0;
        for &b in token {
            if !b.is_ascii_digit() {
                return Err(FramingError::InvalidContentLength);
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(b - b'0')))
                .ok_or(FramingError::InvalidContentLength)?;
        }
        self.value = Some(n);
        Ok(())
    }

    fn finish(self) -> Result<usize, FramingError> {
        self.value.ok_or(FramingError::InvalidContentLength)
    }
}

fn trim_lws(s: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
    let start = s.iter().position(|b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ws(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const LIMIT: usize = 64 * 1024;

    const OPTIONS: &[u8] = b"OPTIONS sip:12345@hotline.example SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:12345@hotline.example>\r\n\
From: <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 63104 OPTIONS\r\n\
Content-Length: 0\r\n\
\r\n";

    const MESSAGE: &[u8] = b"MESSAGE sip:12345@hotline.example SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhdt\r\n\
Max-Forwards: 70\r\n\
To: <sip:12345@hotline.example>\r\n\
From: <sip:alice@example.com>;tag=1928301775\r\n\
Call-ID: a84b4c76e66711\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Type: text/plain\r\n\
l: 12\r\n\
\r\n\
Hello\r\nWorld";

    /// Pushes everything at once and drains.
    fn frame_all(
        input: &[u8],
        limit: usize,
    ) -> (Vec<Bytes>, Result<(), FramingError>, StreamFramer) {
        let mut f = StreamFramer::new(limit);
        f.push(input);
        let mut out = Vec::new();
        loop {
            match f.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return (out, Ok(()), f),
                Err(e) => return (out, Err(e), f),
            }
        }
    }

    /// Pushes `input` in chunks ending at `cuts` and drains after every push.
    fn frame_cut(
        input: &[u8],
        cuts: &[usize],
        limit: usize,
    ) -> (Vec<Bytes>, Result<(), FramingError>) {
        let mut f = StreamFramer::new(limit);
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            f.push(&input[start..end]);
            start = end;
            loop {
                match f.next_message() {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        (out, Ok(()))
    }

    /// Every split of `input` into two pushes, and one byte per push, frames as pushing it whole does.
    fn assert_split_invariant(input: &[u8], limit: usize) {
        let (whole, whole_end, _) = frame_all(input, limit);
        for cut in 0..=input.len() {
            let (parts, end) = frame_cut(input, &[cut], limit);
            assert_eq!(parts, whole, "split at byte {cut}");
            assert_eq!(end, whole_end, "split at byte {cut}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        let (bytewise, end) = frame_cut(input, &every, limit);
        assert_eq!(bytewise, whole, "one byte per push");
        assert_eq!(end, whole_end, "one byte per push");
    }

    #[test]
    fn single_message_without_body() {
        let (msgs, end, f) = frame_all(OPTIONS, LIMIT);
        assert_eq!(msgs, vec![Bytes::from_static(OPTIONS)]);
        assert_eq!(end, Ok(()));
        assert!(!f.has_partial_message());
    }

    #[test]
    fn body_is_taken_by_content_length_even_if_it_contains_crlf() {
        let (msgs, end, _) = frame_all(MESSAGE, LIMIT);
        assert_eq!(end, Ok(()));
        assert_eq!(msgs, vec![Bytes::from_static(MESSAGE)]);
        assert!(msgs[0].ends_with(b"Hello\r\nWorld"));
    }

    #[test]
    fn pipelined_messages_come_out_in_order() {
        let mut input = Vec::new();
        for _ in 0..3 {
            input.extend_from_slice(OPTIONS);
            input.extend_from_slice(MESSAGE);
        }
        let (msgs, end, f) = frame_all(&input, LIMIT);
        assert_eq!(end, Ok(()));
        assert_eq!(msgs.len(), 6);
        for pair in msgs.chunks(2) {
            assert_eq!(pair[0], OPTIONS);
            assert_eq!(pair[1], MESSAGE);
        }
        assert_eq!(f.buffered_len(), 0);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut input = b"\r\n\r\n".to_vec();
        input.extend_from_slice(OPTIONS);
        input.extend_from_slice(MESSAGE);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(OPTIONS);
        assert_split_invariant(&input, LIMIT);
        let (msgs, _, _) = frame_all(&input, LIMIT);
        assert_eq!(msgs.len(), 3);
    }

    #[test]
    fn every_three_way_split_of_a_body_message() {
        // Splits that land on both sides of the blank line and inside the body at once.
        let (whole, _, _) = frame_all(MESSAGE, LIMIT);
        for a in 0..=MESSAGE.len() {
            for b in a..=MESSAGE.len() {
                let (parts, end) = frame_cut(MESSAGE, &[a, b], LIMIT);
                assert_eq!(end, Ok(()));
                assert_eq!(parts, whole, "cuts at {a}, {b}");
            }
        }
    }

    #[test]
    fn partial_message_is_reported_until_complete() {
        let mut f = StreamFramer::new(LIMIT);
        f.push(&MESSAGE[..MESSAGE.len() - 3]);
        assert_eq!(f.next_message(), Ok(None));
        assert!(f.has_partial_message());
        f.push(&MESSAGE[MESSAGE.len() - 3..]);
        assert_eq!(f.next_message(), Ok(Some(Bytes::from_static(MESSAGE))));
        assert!(!f.has_partial_message());
    }

    #[test]
    fn double_crlf_between_messages_is_a_ping() {
        let mut f = StreamFramer::new(LIMIT);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_message(), Ok(None));
        assert!(f.take_ping());
        assert!(!f.take_ping(), "a ping is reported once");
        assert!(!f.has_partial_message(), "a ping is not half a message");
    }

    #[test]
    fn ping_split_across_pushes_is_still_a_ping() {
        let mut f = StreamFramer::new(LIMIT);
        for b in b"\r\n\r\n" {
            assert!(!f.take_ping());
            f.push(&[*b]);
            assert_eq!(f.next_message(), Ok(None));
        }
        assert!(f.take_ping());
    }

    #[test]
    fn single_crlf_is_skipped_but_is_not_a_ping() {
        let mut input = OPTIONS.to_vec();
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(OPTIONS);
        let (msgs, end, mut f) = frame_all(&input, LIMIT);
        assert_eq!(end, Ok(()));
        assert_eq!(msgs, vec![Bytes::from_static(OPTIONS); 2]);
        assert!(!f.take_ping());
    }

    #[test]
    fn ping_after_a_message_is_seen() {
        let mut input = OPTIONS.to_vec();
        input.extend_from_slice(b"\r\n\r\n");
        let (msgs, end, mut f) = frame_all(&input, LIMIT);
        assert_eq!(end, Ok(()));
        assert_eq!(msgs.len(), 1);
        assert!(f.take_ping());
    }

    #[test]
    fn crlf_inside_a_message_start_does_not_count_toward_a_ping() {
        // One CRLF before the message, one after: two separate gaps, no ping.
        let mut input = b"\r\n".to_vec();
        input.extend_from_slice(OPTIONS);
        input.extend_from_slice(b"\r\n");
        let (msgs, _, mut f) = frame_all(&input, LIMIT);
        assert_eq!(msgs.len(), 1);
        assert!(!f.take_ping());
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let input = b"OPTIONS sip:x@y SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nContent-Length: 4\n\nbodyNEXT";
        let (msgs, end, f) = frame_all(input, LIMIT);
        assert_eq!(end, Ok(()));
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].ends_with(b"\n\nbody"));
        assert!(f.has_partial_message(), "NEXT starts another message");
        assert_split_invariant(input, LIMIT);
    }

    #[test]
    fn mixed_line_ends_end_the_head() {
        for head_end in [&b"\r\n\n"[..], b"\n\r\n"] {
            let mut input = b"OPTIONS sip:x@y SIP/2.0\r\nl: 2".to_vec();
            input.extend_from_slice(head_end);
            input.extend_from_slice(b"ok");
            let (msgs, end, _) = frame_all(&input, LIMIT);
            assert_eq!(end, Ok(()));
            assert_eq!(msgs, vec![Bytes::from(input.clone())]);
        }
    }

    #[test]
    fn missing_content_length_cannot_be_framed() {
        let input = b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        let (_, end, _) = frame_all(input, LIMIT);
        assert_eq!(end, Err(FramingError::MissingContentLength));
    }

    #[test]
    fn errors_are_sticky_and_later_bytes_are_dropped() {
        let mut f = StreamFramer::new(LIMIT);
        f.push(b"OPTIONS sip:x@y SIP/2.0\r\nl: -1\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::NegativeContentLength));
        f.push(OPTIONS);
        assert_eq!(f.next_message(), Err(FramingError::NegativeContentLength));
        assert_eq!(f.buffered_len(), 0);
    }

    #[test]
    fn headers_without_terminator_beyond_the_limit_are_too_large() {
        let mut f = StreamFramer::new(256);
        f.push(b"INVITE sip:x@y SIP/2.0\r\n");
        assert_eq!(f.next_message(), Ok(None));
        let mut err = None;
        for _ in 0..20 {
            f.push(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
            if let Err(e) = f.next_message() {
                err = Some(e);
                break;
            }
        }
        assert!(
            matches!(err, Some(FramingError::TooLarge { limit: 256, at_least }) if at_least >= 256)
        );
    }

    #[test]
    fn declared_body_beyond_the_limit_is_rejected_before_it_arrives() {
        let head = b"MESSAGE sip:x@y SIP/2.0\r\nContent-Length: 1000\r\n\r\n";
        let mut f = StreamFramer::new(512);
        f.push(head);
        assert_eq!(
            f.next_message(),
            Err(FramingError::TooLarge {
                limit: 512,
                at_least: head.len() + 1000
            })
        );
    }

    #[test]
    fn message_exactly_at_the_limit_is_accepted() {
        let (msgs, end, _) = frame_all(MESSAGE, MESSAGE.len());
        assert_eq!(end, Ok(()));
        assert_eq!(msgs.len(), 1);
        let (_, end, _) = frame_all(MESSAGE, MESSAGE.len() - 1);
        assert!(matches!(end, Err(FramingError::TooLarge { .. })));
        let (msgs, end, _) = frame_all(OPTIONS, OPTIONS.len());
        assert_eq!((msgs.len(), end), (1, Ok(())));
        let (_, end, _) = frame_all(OPTIONS, OPTIONS.len() - 1);
        assert!(matches!(end, Err(FramingError::TooLarge { .. })));
    }

    #[test]
    fn limit_applies_per_message_not_per_buffer() {
        let mut input = Vec::new();
        for _ in 0..10 {
            input.extend_from_slice(OPTIONS);
        }
        let (msgs, end, _) = frame_all(&input, OPTIONS.len());
        assert_eq!(end, Ok(()));
        assert_eq!(msgs.len(), 10);
    }

    #[test]
    fn endless_crlfs_do_not_accumulate() {
        let mut f = StreamFramer::new(16);
        for _ in 0..1000 {
            f.push(b"\r\n\r\n\r\n");
            assert_eq!(f.next_message(), Ok(None));
        }
        assert_eq!(f.buffered_len(), 0);
    }

    #[test]
    fn content_length_forms() {
        type Case = (&'static [u8], Result<Option<usize>, FramingError>);
        let cases: &[Case] = &[
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 42\r\n",
                Ok(Some(42)),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\ncontent-length:42\r\n",
                Ok(Some(42)),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nCONTENT-LENGTH \t:\t 42 \t\r\n",
                Ok(Some(42)),
            ),
            (b"INVITE sip:x SIP/2.0\r\nl: 7\r\n", Ok(Some(7))),
            (b"INVITE sip:x SIP/2.0\r\nL:7\r\n", Ok(Some(7))),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 0042\r\n",
                Ok(Some(42)),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length:\r\n  42\r\n",
                Ok(Some(42)),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 42\n",
                Ok(Some(42)),
            ),
            (b"INVITE sip:x SIP/2.0\r\nContent-Length: 42", Ok(Some(42))),
            (b"INVITE sip:x SIP/2.0\r\nl: 3\r\nl: 3\r\n", Ok(Some(3))),
            (b"INVITE sip:x SIP/2.0\r\nContent-Type: a/b\r\n", Ok(None)),
            (b"INVITE sip:x SIP/2.0\r\nContent-Length-X: 5\r\n", Ok(None)),
            (b"INVITE sip:x SIP/2.0\r\nX-l: 5\r\n", Ok(None)),
            // The blank line ends the head; a body line that looks like a header is not one.
            (b"INVITE sip:x SIP/2.0\r\n\r\nl: 5\r\n", Ok(None)),
            (b"INVITE sip:x SIP/2.0\r\nl: 5\r\n\r\nl: 6\r\n", Ok(Some(5))),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n",
                Err(FramingError::NegativeContentLength),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 1x\r\n",
                Err(FramingError::InvalidContentLength),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: +1\r\n",
                Err(FramingError::InvalidContentLength),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 1 2\r\n",
                Err(FramingError::InvalidContentLength),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 1\r\n 2\r\n",
                Err(FramingError::InvalidContentLength),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length:\r\n",
                Err(FramingError::InvalidContentLength),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: -\r\n",
                Err(FramingError::InvalidContentLength),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999999999999999999999999\r\n",
                Err(FramingError::InvalidContentLength),
            ),
            (
                b"INVITE sip:x SIP/2.0\r\nContent-Length: 3\r\nl: 4\r\n",
                Err(FramingError::ConflictingContentLength {
                    first: 3,
                    second: 4,
                }),
            ),
        ];
        for (head, want) in cases {
            assert_eq!(
                &content_length_of(head),
                want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    /// The RFC 4475 torture messages, from the shared checkout. Looked up by walking up from the crate,
    /// since the crate may sit in a worktree at a different depth.
    fn rfc4475_dir() -> PathBuf {
        let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        start
            .ancestors()
            .map(|d| d.join("shared/rfc4475"))
            .find(|d| d.is_dir())
            .expect("shared/rfc4475 in an ancestor of the crate")
    }

    fn torture(name: &str) -> Vec<u8> {
        let path = rfc4475_dir().join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// What a stream does with each torture message. Those not listed frame as exactly one message: the
    /// whole file. Framing is not parsing: most invalid messages of §3.1.2 are well framed and are the
    /// parser's business.
    fn torture_expectation(name: &str) -> Option<(Vec<usize>, Result<(), FramingError>, bool)> {
        // (lengths of the messages framed, final result, partial message left over)
        Some(match name {
            // "Content Length Larger Than Message": on a stream we wait for the rest.
            "clerr.dat" => (vec![], Ok(()), true),
            // "Multiple Content-Length Values" that disagree.
            "mcl01.dat" => (
                vec![],
                Err(FramingError::ConflictingContentLength {
                    first: 13,
                    second: 5,
                }),
                false,
            ),
            // "Negative Content-Length".
            "ncl.dat" => (vec![], Err(FramingError::NegativeContentLength), false),
            // Archived without the blank line after its headers: the head never ends.
            "baddn.dat" => (vec![], Ok(()), true),
            // An RFC 2543 INVITE without Content-Length.
            "inv2543.dat" => (vec![], Err(FramingError::MissingContentLength), false),
            // "Extra Trailing Octets in a UDP Datagram": a REGISTER with Content-Length 0 whose
            // trailing octets are a second request.
            // On a stream that really is a second message, after one CRLF. Its SDP is 5 bytes longer
            // than its Content-Length says, so the stream then holds "C\r\n\r\n": a head without
            // Content-Length, and the stream is lost.
            "dblreq.dat" => (
                vec![300, 443],
                Err(FramingError::MissingContentLength),
                false,
            ),
            _ => return None,
        })
    }

    #[test]
    fn rfc4475_torture_messages() {
        let mut names: Vec<String> = std::fs::read_dir(rfc4475_dir())
            .expect("read rfc4475 dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".dat"))
            .collect();
        names.sort();
        assert_eq!(names.len(), 49, "the 49 messages of RFC 4475");
        for name in &names {
            let data = torture(name);
            let (msgs, end, f) = frame_all(&data, LIMIT);
            let lens: Vec<usize> = msgs.iter().map(Bytes::len).collect();
            match torture_expectation(name) {
                Some((want_lens, want_end, want_partial)) => {
                    assert_eq!(lens, want_lens, "{name}");
                    assert_eq!(end, want_end, "{name}");
                    assert_eq!(f.has_partial_message(), want_partial, "{name}");
                }
                None => {
                    assert_eq!(end, Ok(()), "{name}");
                    assert_eq!(msgs, vec![Bytes::from(data.clone())], "{name}");
                    assert!(!f.has_partial_message(), "{name}");
                }
            }
        }
    }

    #[test]
    fn rfc4475_torture_messages_split_at_every_byte() {
        for name in [
            "wsinv.dat",
            "dblreq.dat",
            "mpart01.dat",
            "escnull.dat",
            "mcl01.dat",
            "ncl.dat",
            "insuf.dat",
        ] {
            assert_split_invariant(&torture(name), LIMIT);
        }
    }

    #[test]
    fn rfc4475_wsinv_content_length_with_space_before_colon() {
        let data = torture("wsinv.dat");
        let head_end = find_blank_line(&data, 0).expect("wsinv has a blank line");
        assert_eq!(content_length_of(&data[..head_end]), Ok(Some(150)));
    }

    #[test]
    fn rfc4475_clerr_with_a_small_limit_is_too_large_at_once() {
        let data = torture("clerr.dat");
        let (_, end, _) = frame_all(&data, 4096);
        assert!(matches!(
            end,
            Err(FramingError::TooLarge { limit: 4096, .. })
        ));
    }

    #[test]
    fn rfc4475_longreq_respects_the_limit() {
        let data = torture("longreq.dat");
        let (msgs, end, _) = frame_all(&data, data.len());
        assert_eq!((msgs.len(), end), (1, Ok(())));
        let (_, end, _) = frame_all(&data, 1024);
        assert!(matches!(
            end,
            Err(FramingError::TooLarge { limit: 1024, .. })
        ));
    }

    #[test]
    fn all_torture_messages_pipelined_on_one_stream() {
        // The well-framed ones, back to back with keep-alive pings between some of them.
        let mut input = Vec::new();
        let mut want = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(rfc4475_dir())
            .expect("read rfc4475 dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".dat") && torture_expectation(n).is_none())
            .collect();
        names.sort();
        for (i, name) in names.iter().enumerate() {
            let data = torture(name);
            if i % 3 == 0 {
                input.extend_from_slice(b"\r\n\r\n");
            }
            input.extend_from_slice(&data);
            want.push(Bytes::from(data));
        }
        let (msgs, end, mut f) = frame_all(&input, LIMIT);
        assert_eq!(end, Ok(()));
        assert_eq!(msgs, want);
        assert!(f.take_ping());
        // And in odd-sized chunks.
        let cuts: Vec<usize> = (1..input.len()).step_by(97).collect();
        let (chunked, end) = frame_cut(&input, &cuts, LIMIT);
        assert_eq!(end, Ok(()));
        assert_eq!(chunked, want);
    }
}
