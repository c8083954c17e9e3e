//! The TCP stream framer: the same bytes pushed at once and pushed in fuzzer-chosen pieces must give
//! the same messages and the same error, no message may exceed the bound, and the framer must never
//! hand out more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::framing::{FramingError, StreamFramer};

/// Messages framed, then the error that ended the stream (if any).
fn frame(max: usize, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Option<FramingError>) {
    let mut f = StreamFramer::new(max);
    let mut out = Vec::new();
    for piece in pieces {
        f.push(piece);
        loop {
            match f.next_message() {
                Ok(Some(m)) => {
                    assert!(
                        m.len() <= max,
                        "{} bytes framed under a bound of {max}",
                        m.len()
                    );
                    out.push(m.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    // Failed for good: the same error again, whatever comes next.
                    f.push(b"INVITE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n");
                    assert_eq!(f.next_message(), Err(e.clone()));
                    return (out, Some(e));
                }
            }
        }
        let _ = f.take_ping();
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    // Bounds from tiny to the daemon's default.
    let max = [64, 200, 1024, 4096, 65535][usize::from(ctl % 5)];
    let step = usize::from(ctl / 5 % 17) + 1;
    let whole = frame(max, &[rest]);
    let pieces: Vec<&[u8]> = rest.chunks(step).collect();
    let split = frame(max, &pieces);
    // Compare kinds only: how large a too-large message is known to be depends on when it was seen.
    let kind = |e: &Option<FramingError>| e.as_ref().map(std::mem::discriminant);
    assert_eq!(whole.0, split.0, "messages differ with pieces of {step}");
    assert_eq!(
        kind(&whole.1),
        kind(&split.1),
        "errors differ with pieces of {step}"
    );
    let framed: usize = whole.0.iter().map(Vec::len).sum();
    assert!(framed <= rest.len());
});
