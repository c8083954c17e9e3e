//! The SIP parser on arbitrary bytes: `message::parse`, then what the proxy does with every message it
//! accepts (serialize, build a response, rewrite Via and Route). Nothing may panic, an error response
//! must be a response, and a request we accept must serialize into one we accept again, since that
//! is what we forward.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::message::{parse, too_large_response, Message, ParseError};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Message::Request(r)) => {
            let _ = r.uri_user();
            for name in ["Via", "Route", "Record-Route", "Contact", "Proxy-Require"] {
                let _ = r.header_values(name).count();
            }
            let _ = r.response(486, "Busy Here", Some("fz")).build().to_bytes();
            let bytes = r.to_bytes();
            match parse(&bytes) {
                Ok(Message::Request(again)) => {
                    assert_eq!(again.method(), r.method());
                    assert_eq!(again.uri(), r.uri());
                    assert_eq!(again.meta.call_id, r.meta.call_id);
                    assert_eq!(again.body(), r.body());
                }
                other => panic!(
                    "accepted request does not survive serialization: {other:?}\n{}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
            let mut fwd = r.clone();
            fwd.stamp_received("192.0.2.1:5060".parse().unwrap());
            fwd.push_via("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsbfuzz".into());
            let _ = fwd.pop_route();
            let _ = fwd.pop_last_route();
            fwd.set_max_forwards(69);
            let _ = fwd.to_bytes();
        }
        Ok(Message::Response(mut r)) => {
            let _ = r.pop_via();
            let _ = r.to_bytes();
        }
        Err(ParseError::Answer { response, .. }) => {
            assert!(response.starts_with(b"SIP/2.0 "), "{response:?}");
        }
        Err(ParseError::Drop(_)) => {}
    }
    if let Some(e) = too_large_response(data) {
        assert!(e.bytes.starts_with(b"SIP/2.0 513 "));
    }
});
