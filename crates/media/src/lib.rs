//! Early media for the switchboard: what a waiting caller hears before an agent answers.
//!
//! Sans-IO, like the other core crates: no sockets, no tasks, no clock, no randomness.
//! - [`sdp`]: read the caller's offer and answer it (RFC 3264), choosing PCMA or PCMU.
//! - [`g711`]: A-law and µ-law.
//! - [`prompts`]: the shipped clips (decoded from WAV bytes the shell reads) and the playlist of a
//!   waiting caller: the merged-line notice, "you are number N in the queue", the comfort tone.
//! - [`scheduler`]: every stream paced by one timer on a common 20 ms grid, RTP packets built with
//!   rtp-rs, symmetric RTP; and the pool of local RTP ports.
//!
//! Run loop (the daemon's media task): on each tick of its one 20 ms interval call
//! [`Scheduler::poll_transmit`]`(now, send)` and send each packet on the stream's socket; feed
//! datagrams that arrive on a stream's port to [`Scheduler::handle_received`]; start and stop
//! streams as the core task commands. `now` is whatever clock the shell keeps.

pub mod g711;
pub mod prompts;
pub mod scheduler;
pub mod sdp;

pub use prompts::{Clip, Lang, Playlist, PlaylistRequest, Prompts};
pub use scheduler::{PortPool, Scheduler, StreamId, StreamParams, Transmit, PTIME};
pub use sdp::{Codec, Negotiated};
