//! The 12345 switchboard daemon: the tokio shell around the sans-IO `sip-core`.

pub mod admin;
pub mod app;
pub mod config;
pub mod cos;
pub mod ctl;
pub mod daemon;
pub mod flood;
pub mod ha;
pub mod lanes;
pub mod lockout;
pub mod media_task;
pub mod metrics;
pub mod outbox;
pub mod ratelimit;
pub mod redact;
pub mod security;
pub mod setup;
pub mod tls;
pub mod transport;
