//! sip-core: the sans-IO SIP hot path of the 12345 switchboard.
//!
//! Bytes and time go in, bytes and timers come out. No sockets, no tokio, no clock.

pub mod auth;
pub mod framing;
pub mod message;
pub mod proxy;
pub mod registrar;
pub mod table;
pub mod time;
pub mod transaction;
