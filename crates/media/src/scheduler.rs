//! The stream scheduler: every announcement stream of the daemon, paced by one timer.
//!
//! Run loop contract (the shell): call [`Scheduler::poll_transmit`] with `now` when the one pacing
//! timer fires (every [`PTIME`], or at [`Scheduler::next_deadline`]); send each packet it hands
//! out. Streams are due on a common 20 ms grid from the scheduler's origin, so one wake-up serves
//! them all, whatever their number. A late wake-up sends what is due (at most
//! [`MAX_CATCH_UP`] packets per stream), then skips ahead: the timestamp keeps to the clock and the
//! sequence number stays continuous, as RFC 3550 wants after a gap.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

use crate::prompts::Playlist;

/// Packet duration: 20 ms of 8 kHz G.711.
pub const PTIME: Duration = Duration::from_millis(20);
/// Samples (and payload bytes) per packet.
pub const SAMPLES_PER_PACKET: usize = 160;
/// Most packets one stream sends in one wake-up when the timer was late.
pub const MAX_CATCH_UP: u32 = 3;
/// Largest packet built: 12 header bytes and the payload.
pub const MAX_PACKET: usize = 12 + SAMPLES_PER_PACKET;

/// The daemon's handle for one stream (the port number it was allocated works well).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// How to start a stream. The random parts (SSRC, first sequence number and timestamp, RFC 3550
/// §5.1) come from the caller: this crate has no randomness of its own.
#[derive(Debug, Clone)]
pub struct StreamParams {
    pub ssrc: u32,
    pub first_seq: u16,
    pub first_timestamp: u32,
    pub payload_type: u8,
    /// Where the offer said to send; replaced by the caller's RTP source once it arrives.
    pub remote: SocketAddr,
    pub playlist: Playlist,
}

#[derive(Debug)]
struct Stream {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    payload_type: u8,
    remote: SocketAddr,
    /// Learned from the caller's own RTP (symmetric RTP, RFC 4961).
    latched: bool,
    /// The next packet starts a talkspurt (RFC 3551 §4.1: marker bit).
    marker: bool,
    next_due: Instant,
    playlist: Playlist,
}

/// One packet to send.
#[derive(Debug)]
pub struct Transmit<'a> {
    pub stream: StreamId,
    pub dest: SocketAddr,
    pub bytes: &'a [u8],
}

/// All streams, paced together.
#[derive(Debug)]
pub struct Scheduler {
    origin: Instant,
    streams: HashMap<StreamId, Stream>,
    /// Packets sent since creation (for the bench and metrics).
    pub packets_sent: u64,
}

impl Scheduler {
    /// `origin` anchors the 20 ms grid all streams are due on.
    pub fn new(origin: Instant) -> Scheduler {
        Scheduler {
            origin,
            streams: HashMap::new(),
            packets_sent: 0,
        }
    }

    /// The first grid instant at or after `t`.
    fn grid_at_or_after(&self, t: Instant) -> Instant {
        let since = t.saturating_duration_since(self.origin).as_nanos();
        let p = PTIME.as_nanos();
        let k = since.div_ceil(p);
        self.origin + Duration::from_nanos((k * p) as u64)
    }

    /// Start (or restart) a stream: its first packet goes at the next grid instant.
    pub fn start(&mut self, now: Instant, id: StreamId, p: StreamParams) {
        let next_due = self.grid_at_or_after(now);
        self.streams.insert(
            id,
            Stream {
                ssrc: p.ssrc,
                seq: p.first_seq,
                timestamp: p.first_timestamp,
                payload_type: p.payload_type,
                remote: p.remote,
                latched: false,
                marker: true,
                next_due,
                playlist: p.playlist,
            },
        );
    }

    /// Play another playlist on a running stream from its next packet (the caller's place in the
    /// queue changed). Sequence, timestamp and SSRC go on: same stream, new words.
    pub fn set_playlist(&mut self, id: StreamId, playlist: Playlist) -> bool {
        match self.streams.get_mut(&id) {
            Some(s) => {
                s.playlist = playlist;
                true
            }
            None => false,
        }
    }

    /// Stop a stream; `false` if it was not running.
    pub fn stop(&mut self, id: StreamId) -> bool {
        self.streams.remove(&id).is_some()
    }

    /// Streams running.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Where a stream sends now.
    pub fn destination(&self, id: StreamId) -> Option<SocketAddr> {
        self.streams.get(&id).map(|s| s.remote)
    }

    /// A datagram arrived on the stream's port from `source`. If it is RTP, the stream sends there
    /// from now on (symmetric RTP: the caller's NAT lets our packets back in along that path).
    /// Returns whether the destination changed.
    pub fn handle_received(&mut self, id: StreamId, source: SocketAddr, bytes: &[u8]) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return false;
        };
        let Ok(r) = RtpReader::new(bytes) else {
            return false; // junk
        };
        // RTCP's packet types (200–204) sit where marker + payload type 72–76 would (RFC 5761 §4).
        if r.version() != 2 || (192..=223).contains(&bytes[1]) {
            return false;
        }
        s.latched = true;
        if s.remote != source {
            s.remote = source;
            return true;
        }
        false
    }

    /// Whether the stream has learned the caller's RTP source.
    pub fn is_latched(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_some_and(|s| s.latched)
    }

    /// When the next packet is due (the pacing timer may simply tick every [`PTIME`] instead).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.streams.values().map(|s| s.next_due).min()
    }

    /// Build every packet due at `now`, handing each to `send`.
    pub fn poll_transmit(&mut self, now: Instant, mut send: impl FnMut(Transmit<'_>)) {
        let mut buf = [0u8; MAX_PACKET];
        let mut payload = [0u8; SAMPLES_PER_PACKET];
        let mut sent = 0u64;
        for (id, s) in self.streams.iter_mut() {
            let mut n = 0;
            while s.next_due <= now && n < MAX_CATCH_UP {
                s.playlist.fill(&mut payload);
                let len = RtpPacketBuilder::new()
                    .payload_type(s.payload_type)
                    .ssrc(s.ssrc)
                    .sequence(Seq::from(s.seq))
                    .timestamp(s.timestamp)
                    .marked(s.marker)
                    .payload(&payload)
                    .build_into(&mut buf)
                    .expect("a G.711 packet fits MAX_PACKET");
                send(Transmit {
                    stream: *id,
                    dest: s.remote,
                    bytes: &buf[..len],
                });
                s.marker = false;
                s.seq = s.seq.wrapping_add(1);
                s.timestamp = s.timestamp.wrapping_add(SAMPLES_PER_PACKET as u32);
                s.next_due += PTIME;
                n += 1;
                sent += 1;
            }
            if s.next_due <= now {
                // Still behind after the catch-up: skip the lost time. The timestamp follows the
                // clock (the receiver sees a gap, not slowed speech); the sequence stays continuous.
                let behind = now.duration_since(s.next_due).as_nanos() / PTIME.as_nanos() + 1;
                s.timestamp = s
                    .timestamp
                    .wrapping_add((behind as u32).wrapping_mul(SAMPLES_PER_PACKET as u32));
                s.next_due += PTIME * behind as u32;
                // After a gap, a new talkspurt.
                s.marker = true;
            }
        }
        self.packets_sent += sent;
    }
}

/// Local RTP ports, handed out least recently used first (a late packet of the last call on a
/// port does not reach the next one as easily). Even ports only: the odd one above is RTCP's by
/// convention (RFC 3550 §11).
#[derive(Debug, Clone)]
pub struct PortPool {
    free: VecDeque<u16>,
    in_use: std::collections::HashSet<u16>,
}

impl PortPool {
    /// Every even port in `first..=last`.
    pub fn new(first: u16, last: u16) -> PortPool {
        let start = first + (first & 1);
        PortPool {
            free: (start..=last).step_by(2).collect(),
            in_use: Default::default(),
        }
    }

    pub fn allocate(&mut self) -> Option<u16> {
        let p = self.free.pop_front()?;
        self.in_use.insert(p);
        Some(p)
    }

    /// Give a port back; `false` if it was not allocated (a double free is harmless).
    pub fn release(&mut self, port: u16) -> bool {
        if self.in_use.remove(&port) {
            self.free.push_back(port);
            true
        } else {
            false
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    pub fn capacity(&self) -> usize {
        self.in_use.len() + self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::Playlist;
    use crate::sdp::Codec;
    use std::sync::Arc;

    fn params(remote: &str) -> StreamParams {
        let clip: Arc<[u8]> = (0..=255u8).collect::<Vec<_>>().into();
        StreamParams {
            ssrc: 0xdead_beef,
            first_seq: 65534,
            first_timestamp: u32::MAX - 100,
            payload_type: 8,
            remote: remote.parse().unwrap(),
            playlist: Playlist::new(vec![clip], 0, Codec::Pcma),
        }
    }

    fn collect(s: &mut Scheduler, now: Instant) -> Vec<(StreamId, SocketAddr, Vec<u8>)> {
        let mut v = Vec::new();
        s.poll_transmit(now, |t| v.push((t.stream, t.dest, t.bytes.to_vec())));
        v
    }

    #[test]
    fn fifty_packets_a_second_continuous_with_wraparound() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0);
        s.start(t0, StreamId(1), params("127.0.0.1:4000"));
        let mut pkts = Vec::new();
        // One simulated second, the timer ticking every 20 ms.
        for i in 0..50 {
            pkts.extend(collect(&mut s, t0 + PTIME * i));
        }
        assert_eq!(pkts.len(), 50);
        let mut expect_payload = (0..=255u8).cycle();
        for (i, (_, dest, b)) in pkts.iter().enumerate() {
            let r = RtpReader::new(b).unwrap();
            assert_eq!(*dest, "127.0.0.1:4000".parse().unwrap());
            assert_eq!(r.payload_type(), 8);
            assert_eq!(r.ssrc(), 0xdead_beef);
            assert_eq!(
                u16::from(r.sequence_number()),
                65534u16.wrapping_add(i as u16)
            );
            assert_eq!(r.timestamp(), (u32::MAX - 100).wrapping_add(160 * i as u32));
            assert_eq!(r.mark(), i == 0, "marker only on the first packet");
            assert_eq!(r.payload().len(), 160);
            assert!(r
                .payload()
                .iter()
                .all(|b| Some(*b) == expect_payload.next()));
        }
        assert_eq!(s.next_deadline(), Some(t0 + PTIME * 50));
    }

    #[test]
    fn one_wake_up_serves_streams_started_at_any_time() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0);
        for i in 0..100u64 {
            // Starts spread over 20 ms all land on the same grid instant.
            s.start(
                t0 + Duration::from_micros(1 + i * 199),
                StreamId(i),
                params("127.0.0.1:4000"),
            );
        }
        assert_eq!(s.next_deadline(), Some(t0 + PTIME));
        assert!(collect(&mut s, t0 + PTIME - Duration::from_nanos(1)).is_empty());
        assert_eq!(collect(&mut s, t0 + PTIME).len(), 100);
        assert_eq!(s.next_deadline(), Some(t0 + PTIME * 2));
    }

    #[test]
    fn late_timer_catches_up_then_skips_keeping_seq_continuous() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0);
        s.start(t0, StreamId(1), params("127.0.0.1:4000"));
        collect(&mut s, t0); // packet 0
                             // The timer is 200 ms late: 3 packets now, then the lost time is skipped.
        let late = collect(&mut s, t0 + Duration::from_millis(200));
        assert_eq!(late.len(), MAX_CATCH_UP as usize);
        let next = collect(&mut s, t0 + Duration::from_millis(220));
        assert_eq!(next.len(), 1);
        let r = RtpReader::new(&next[0].2).unwrap();
        assert_eq!(u16::from(r.sequence_number()), 65534u16.wrapping_add(4));
        // The timestamp of the packet due at 220 ms: 11 packets after the first.
        assert_eq!(r.timestamp(), (u32::MAX - 100).wrapping_add(160 * 11));
        assert!(r.mark(), "a new talkspurt after the gap");
    }

    #[test]
    fn symmetric_rtp_latches_on_rtp_only() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0);
        let id = StreamId(7);
        s.start(t0, id, params("10.0.0.1:4000"));
        let nat: SocketAddr = "192.0.2.9:33333".parse().unwrap();
        assert!(!s.handle_received(id, nat, b"hello, not rtp"));
        // RTCP (PT 200) does not count.
        let rtcp = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(!s.handle_received(id, nat, &rtcp));
        assert!(!s.is_latched(id));
        let rtp = RtpPacketBuilder::new()
            .payload_type(0)
            .ssrc(1)
            .payload(&[0xff; 160])
            .build()
            .unwrap();
        assert!(s.handle_received(id, nat, &rtp));
        assert!(s.is_latched(id));
        assert!(!s.handle_received(id, nat, &rtp), "same source: no change");
        let p = collect(&mut s, t0);
        assert_eq!(p[0].1, nat);
        assert!(!s.handle_received(StreamId(99), nat, &rtp));
    }

    #[test]
    fn a_new_playlist_continues_the_same_stream() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0);
        s.start(t0, StreamId(1), params("127.0.0.1:4000"));
        let a = collect(&mut s, t0);
        let other: Arc<[u8]> = vec![0x42; 160].into();
        assert!(s.set_playlist(StreamId(1), Playlist::new(vec![other], 0, Codec::Pcma)));
        assert!(!s.set_playlist(StreamId(9), Playlist::new(vec![], 0, Codec::Pcma)));
        let b = collect(&mut s, t0 + PTIME);
        let (ra, rb) = (
            RtpReader::new(&a[0].2).unwrap(),
            RtpReader::new(&b[0].2).unwrap(),
        );
        assert!(rb.payload().iter().all(|x| *x == 0x42));
        assert_eq!(rb.ssrc(), ra.ssrc());
        assert!(ra.sequence_number().precedes(rb.sequence_number()));
        assert_eq!(rb.timestamp(), ra.timestamp().wrapping_add(160));
    }

    #[test]
    fn stop_ends_the_stream() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(t0);
        s.start(t0, StreamId(1), params("127.0.0.1:4000"));
        s.start(t0, StreamId(2), params("127.0.0.1:4002"));
        assert!(s.stop(StreamId(1)));
        assert!(!s.stop(StreamId(1)));
        let p = collect(&mut s, t0);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, StreamId(2));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn port_pool_even_lru_no_double_free() {
        let mut p = PortPool::new(20001, 20008);
        assert_eq!(p.capacity(), 4); // 20002 20004 20006 20008
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_eq!((a, b), (20002, 20004));
        assert!(p.release(a));
        assert!(!p.release(a));
        assert_eq!(p.allocate(), Some(20006));
        assert_eq!(p.allocate(), Some(20008));
        assert_eq!(p.allocate(), Some(20002), "least recently used first");
        assert_eq!(p.allocate(), None);
        assert_eq!(p.in_use(), 4);
    }
}
