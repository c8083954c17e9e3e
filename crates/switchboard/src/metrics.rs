//! Metric names, in one place. Labels come only from bounded sets (never a Call-ID or a number).

/// Reloads of config and dialplans, labelled `result` = `ok` | `error`.
pub const CONFIG_RELOADS: &str = "switchboard_config_reloads_total";
