//! Routing with the shipped plan on fuzzer-chosen numbers: the dialed number comes from a
//! Request-URI and the caller from a From header, both written by whoever sends the INVITE.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static PLAN: OnceLock<dialplan::CompiledPlan> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let plan = PLAN.get_or_init(|| {
        dialplan::load_str("qinghai.toml", include_str!("../../dialplans/qinghai.toml"))
            .expect("the shipped plan loads")
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (dialed, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (caller, trunk) = rest.split_once('\n').unwrap_or((rest, ""));
    let trunk = (!trunk.is_empty()).then_some(trunk);
    let _ = format!("{:?}", plan.route(dialed, caller, trunk));
});
