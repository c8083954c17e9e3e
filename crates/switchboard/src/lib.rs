//! The 12345 switchboard daemon: the tokio shell around the sans-IO `sip-core`.

pub mod admin;
pub mod app;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod metrics;
pub mod ratelimit;
pub mod redact;
pub mod setup;
pub mod transport;
