//! The 12345 switchboard daemon: the tokio shell around the sans-IO `sip-core`.

pub mod transport;
