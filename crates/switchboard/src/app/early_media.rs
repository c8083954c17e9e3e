//! Early media in the core: a queued call whose INVITE offered G.711 gets `183 Session Progress`
//! with our SDP answer, and the media task streams announcements from a port of the `[media]`
//! range; the stream stops when the agent's 2xx goes to the caller, on CANCEL, or on any final
//! response, and its port goes back to the pool.
//!
//! The core owns the port pool, so the SDP answer can be written at once; the media task binds the
//! port when the Start command reaches it (commands are FIFO, so a port's Stop always precedes
//! its next Start). A Stop that finds the channel full waits here and is retried; its port stays
//! allocated until the Stop is on its way.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use media::{sdp, Lang, PlaylistRequest, PortPool};
use sip_core::proxy::ServerId;
use sip_core::time::Instant;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Switch;
use crate::media_task::{MediaCommand, MediaSettings};
use crate::metrics as m;

/// The core's side of early media.
#[derive(Debug)]
pub struct EarlyMedia {
    settings: MediaSettings,
    pool: PortPool,
    tx: mpsc::Sender<MediaCommand>,
    /// Streams by call: port, codec, language and the position last announced.
    streams: HashMap<ServerId, Playing>,
    /// Stops the channel had no room for, oldest first.
    pending_stops: VecDeque<u16>,
    /// SDP session ids (o= line), one per answer.
    next_session: u64,
}

impl EarlyMedia {
    pub fn new(settings: MediaSettings, tx: mpsc::Sender<MediaCommand>) -> EarlyMedia {
        let pool = PortPool::new(settings.ports.first, settings.ports.last);
        EarlyMedia {
            settings,
            pool,
            tx,
            streams: HashMap::new(),
            pending_stops: VecDeque::new(),
            next_session: 1,
        }
    }

    /// Ports allocated now (a stream, or a Stop still waiting for room).
    pub fn ports_in_use(&self) -> usize {
        self.pool.in_use()
    }

    fn flush_stops(&mut self) {
        while let Some(port) = self.pending_stops.front().copied() {
            if self.tx.try_send(MediaCommand::Stop { port }).is_err() {
                return;
            }
            self.pending_stops.pop_front();
            self.pool.release(port);
        }
    }
}

/// A call's stream.
#[derive(Debug, Clone, Copy)]
struct Playing {
    port: u16,
    codec: media::Codec,
    lang: Lang,
    position: Option<u32>,
}

/// What a call keeps for early media: the caller's offer and what the playlist needs.
#[derive(Debug, Clone, Default)]
pub(super) struct MediaInfo {
    /// The INVITE's SDP body, if it had one.
    pub offer: Option<Box<[u8]>>,
    /// The dialed number is a merged line (its notice may be played).
    pub merged: bool,
    /// The caller's prefecture (dialplan id), for the Tibetan variant.
    pub prefecture: Option<String>,
}

impl MediaInfo {
    /// From the INVITE: keep the body only when it is SDP.
    pub fn from_request(req: &sip_core::message::Request) -> MediaInfo {
        let sdp = req.header("Content-Type").is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/sdp")
        });
        MediaInfo {
            offer: (sdp && !req.body().is_empty()).then(|| req.body().into()),
            ..MediaInfo::default()
        }
    }
}

impl Switch {
    /// Attach the media task's channel: from now on queued calls with a usable offer get early
    /// media.
    pub fn enable_media(&mut self, settings: MediaSettings, tx: mpsc::Sender<MediaCommand>) {
        self.media = Some(EarlyMedia::new(settings, tx));
    }

    /// Ports of the `[media]` range in use (None without `[media]`).
    pub fn media_ports_in_use(&self) -> Option<usize> {
        self.media.as_ref().map(EarlyMedia::ports_in_use)
    }

    /// The call waits: answer its offer with `183 Session Progress` and start the announcements.
    /// Without a usable offer (no SDP, no G.711, on hold), nothing happens: it waits with 182s.
    pub(super) fn start_early_media(&mut self, now: Instant, id: ServerId, position: Option<u32>) {
        let Some(em) = self.media.as_mut() else {
            return;
        };
        if let Some(p) = em.streams.get_mut(&id) {
            // Already playing: a new place in the queue is announced on the same stream.
            let position = position.filter(|_| em.settings.announce_position);
            if position.is_some() && position != p.position {
                let cmd = MediaCommand::Announce {
                    port: p.port,
                    codec: p.codec,
                    playlist: PlaylistRequest {
                        lang: p.lang,
                        merged_notice: false,
                        position,
                    },
                };
                if em.tx.try_send(cmd).is_ok() {
                    p.position = position;
                }
            }
            return;
        }
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let Some(body) = call.media.offer.as_deref() else {
            return;
        };
        if call.requires_100rel {
            // A 183 would have to be sent reliably (see `Call::requires_100rel`).
            debug!(?id, "Require: 100rel: no early media");
            metrics::counter!(m::MEDIA_OFFERS, "result" => "requires_100rel").increment(1);
            return;
        }
        let offer = match sdp::parse(body) {
            Ok(o) => o,
            Err(e) => {
                debug!(?id, %e, "unreadable SDP offer: no early media");
                metrics::counter!(m::MEDIA_OFFERS, "result" => "no_codec").increment(1);
                return;
            }
        };
        let Some(port) = em.pool.allocate() else {
            warn!(
                ?id,
                "RTP port range exhausted: no early media for this call"
            );
            metrics::counter!(m::MEDIA_OFFERS, "result" => "no_port").increment(1);
            return;
        };
        let local = SocketAddr::new(em.settings.advertise, port);
        let session = em.next_session;
        em.next_session += 1;
        let Some(neg) = sdp::answer(&offer, local, session) else {
            em.pool.release(port);
            debug!(
                ?id,
                "no usable codec in the offer: the call waits without early media"
            );
            metrics::counter!(m::MEDIA_OFFERS, "result" => "no_codec").increment(1);
            return;
        };
        let lang = match &call.media.prefecture {
            Some(p) if em.settings.tibetan_prefectures.iter().any(|t| t == p) => Lang::Tibetan,
            _ => Lang::Mandarin,
        };
        let position = position.filter(|_| em.settings.announce_position);
        let playlist = PlaylistRequest {
            lang,
            merged_notice: call.media.merged && em.settings.announce_merged,
            position,
        };
        let cmd = MediaCommand::Start {
            port,
            codec: neg.codec,
            payload_type: neg.payload_type,
            remote: neg.remote,
            playlist,
        };
        if em.tx.try_send(cmd).is_err() {
            em.pool.release(port);
            warn!(?id, "media task busy: no early media for this call");
            metrics::counter!(m::MEDIA_OFFERS, "result" => "busy").increment(1);
            return;
        }
        em.streams.insert(
            id,
            Playing {
                port,
                codec: neg.codec,
                lang,
                position,
            },
        );
        metrics::counter!(m::MEDIA_OFFERS, "result" => "answered").increment(1);
        info!(?id, port, codec = neg.codec.name(), ?lang, "early media");
        if let Some(b) = self.proxy.response_for(id, 183, "Session Progress") {
            let _ = self
                .proxy
                .respond(now, id, b.body("application/sdp", neg.answer.into_bytes()));
        }
    }

    /// The call no longer waits (answered, cancelled, finished): stop its stream, free its port.
    pub(super) fn stop_early_media(&mut self, id: ServerId) {
        let Some(em) = self.media.as_mut() else {
            return;
        };
        em.flush_stops();
        let Some(Playing { port, .. }) = em.streams.remove(&id) else {
            return;
        };
        debug!(?id, port, "early media stopped");
        if em.pending_stops.is_empty() && em.tx.try_send(MediaCommand::Stop { port }).is_ok() {
            em.pool.release(port);
        } else {
            em.pending_stops.push_back(port);
        }
    }

    /// Retry stops that found the channel full (called on every timeout).
    pub(super) fn flush_media(&mut self) {
        if let Some(em) = self.media.as_mut() {
            em.flush_stops();
        }
    }
}
