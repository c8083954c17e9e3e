//! The dialplan loader on arbitrary text: it either compiles a plan or reports problems, never
//! panics; a plan it compiles answers routing questions without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match dialplan::load_str("fuzz.toml", text) {
        Ok(plan) => {
            for dialed in [
                "12345",
                "+8697112345",
                "tel:12315",
                "sip:12345@h",
                "110",
                "",
                "0971",
            ] {
                let _ = format!("{:?}", plan.route(dialed, "13800000000", Some("xining")));
            }
        }
        Err(errors) => {
            // Every problem renders as file:line:col: message, with a position inside the text.
            let _ = errors.to_string();
        }
    }
});
