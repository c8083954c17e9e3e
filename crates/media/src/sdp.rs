//! SDP (RFC 8866) just large enough for early-media offer/answer (RFC 3264): read the caller's offer,
//! pick G.711 from its first audio stream, and write an answer that sends announcements.
//!
//! The parser reads what offer/answer needs (`c=`, `m=`, `a=rtpmap`, direction attributes) and
//! skips every other line; it never panics on hostile text (the `sdp_rtp` fuzz target checks).

use std::net::{IpAddr, SocketAddr};

/// G.711 flavours, the only codecs announcements are played in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// A-law (PCMA, static payload type 8): the usual codec on Chinese networks, preferred.
    Pcma,
    /// µ-law (PCMU, static payload type 0).
    Pcmu,
}

impl Codec {
    /// The static payload type of RFC 3551.
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcma => 8,
            Codec::Pcmu => 0,
        }
    }

    /// The encoding name in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcma => "PCMA",
            Codec::Pcmu => "PCMU",
        }
    }
}

/// Media direction attributes (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One `m=` line of an offer with what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, ...
    pub media: String,
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub proto: String,
    /// The payload types in the offerer's order of preference.
    pub formats: Vec<u8>,
    /// `a=rtpmap` entries: (payload type, encoding name, clock rate).
    pub rtpmaps: Vec<(u8, String, u32)>,
    /// Media-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    pub direction: Direction,
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// Session-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    pub direction: Direction,
    pub media: Vec<MediaDescription>,
}

/// Why a session description could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("not UTF-8")]
    NotText,
    #[error("no v=0 line first")]
    NoVersion,
    #[error("line {line}: malformed {kind}= line")]
    Malformed { line: usize, kind: char },
}

/// Parse a session description (the body of an INVITE with `Content-Type: application/sdp`).
pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, "v=0")) => {}
        _ => return Err(SdpError::NoVersion),
    }
    let mut sd = SessionDescription {
        connection: None,
        direction: Direction::SendRecv,
        media: Vec::new(),
    };
    for (i, line) in lines {
        let line_no = i + 1;
        let bad = |kind| SdpError::Malformed {
            line: line_no,
            kind,
        };
        let Some((kind, value)) = line.split_once('=') else {
            return Err(bad('?'));
        };
        let mut k = kind.chars();
        let (Some(kind), None) = (k.next(), k.next()) else {
            return Err(bad('?'));
        };
        match kind {
            'c' => {
                let addr = parse_connection(value).ok_or(bad('c'))?;
                match sd.media.last_mut() {
                    Some(m) => m.connection = Some(addr),
                    None => sd.connection = Some(addr),
                }
            }
            'm' => sd.media.push(parse_media(value).ok_or(bad('m'))?),
            'a' => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                let dir = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (dir, sd.media.last_mut()) {
                    (Some(d), Some(m)) => m.direction = d,
                    (Some(d), None) => {
                        sd.direction = d;
                    }
                    (None, Some(m)) if name == "rtpmap" => {
                        if let Some(map) = parse_rtpmap(arg) {
                            m.rtpmaps.push(map);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // A session-level direction applies to streams that do not set their own (RFC 8866 §6.7).
    if sd.direction != Direction::SendRecv {
        for m in &mut sd.media {
            if m.direction == Direction::SendRecv {
                m.direction = sd.direction;
            }
        }
    }
    Ok(sd)
}

fn parse_connection(v: &str) -> Option<IpAddr> {
    let mut f = v.split_ascii_whitespace();
    let (net, family, addr) = (f.next()?, f.next()?, f.next()?);
    if net != "IN" || !matches!(family, "IP4" | "IP6") {
        return None;
    }
    // Multicast forms carry /ttl: not for a phone call, but readable.
    addr.split('/').next()?.parse().ok()
}

fn parse_media(v: &str) -> Option<MediaDescription> {
    let mut f = v.split_ascii_whitespace();
    let media = f.next()?.to_owned();
    let port = f.next()?.split('/').next()?.parse().ok()?;
    let proto = f.next()?.to_owned();
    // Non-RTP formats (e.g. `m=application 9 UDP/BFCP *`) are not numbers: kept out, not an error.
    let formats = f.filter_map(|x| x.parse().ok()).collect();
    Some(MediaDescription {
        media,
        port,
        proto,
        formats,
        rtpmaps: Vec::new(),
        connection: None,
        direction: Direction::SendRecv,
    })
}

fn parse_rtpmap(arg: &str) -> Option<(u8, String, u32)> {
    let (pt, rest) = arg.split_once(' ')?;
    let mut enc = rest.trim().split('/');
    let name = enc.next()?.to_owned();
    let rate = enc.next()?.parse().ok()?;
    Some((pt.trim().parse().ok()?, name, rate))
}

impl MediaDescription {
    /// The encoding of payload type `pt`: its rtpmap, else the static assignment of RFC 3551.
    fn codec_of(&self, pt: u8) -> Option<Codec> {
        if let Some((_, name, rate)) = self.rtpmaps.iter().find(|(p, ..)| *p == pt) {
            return match (name.to_ascii_uppercase().as_str(), rate) {
                ("PCMA", 8000) => Some(Codec::Pcma),
                ("PCMU", 8000) => Some(Codec::Pcmu),
                _ => None,
            };
        }
        match pt {
            8 => Some(Codec::Pcma),
            0 => Some(Codec::Pcmu),
            _ => None,
        }
    }
}

/// What the switchboard settled on for one call's early media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// The payload type to send with (the offerer's number for the codec, RFC 3264 §6.1).
    pub payload_type: u8,
    /// Where the offer asks for media: sent there until the caller's own RTP shows where it is.
    pub remote: SocketAddr,
    /// The answer's body.
    pub answer: String,
}

/// Answer an offer for announcements sent from `local` (RFC 3264 §6).
///
/// The first audio stream over RTP/AVP that offers PCMA (preferred) or PCMU, and that the caller
/// will receive, is accepted `sendonly` with that one codec; every other stream is refused with
/// port 0, as the answer must list them all. `None` when there is nothing usable: then no early
/// media, and the call simply waits with `182 Queued`.
pub fn answer(
    offer: &SessionDescription,
    local: SocketAddr,
    session_id: u64,
) -> Option<Negotiated> {
    let mut chosen: Option<(usize, Codec, u8, SocketAddr)> = None;
    for (i, m) in offer.media.iter().enumerate() {
        if m.media != "audio" || m.proto != "RTP/AVP" || m.port == 0 {
            continue;
        }
        if matches!(m.direction, Direction::SendOnly | Direction::Inactive) {
            continue; // the caller will not listen
        }
        let Some(ip) = m.connection.or(offer.connection) else {
            continue;
        };
        if ip.is_unspecified() {
            continue; // on hold (RFC 3264 §8.4): nowhere to send
        }
        let pick = [Codec::Pcma, Codec::Pcmu].into_iter().find_map(|want| {
            m.formats
                .iter()
                .find(|pt| m.codec_of(**pt) == Some(want))
                .map(|pt| (want, *pt))
        });
        if let Some((codec, pt)) = pick {
            chosen = Some((i, codec, pt, SocketAddr::new(ip, m.port)));
            break;
        }
    }
    let (index, codec, payload_type, remote) = chosen?;
    let family = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let mut a = format!(
        "v=0\r\no=switchboard {session_id} {session_id} IN {family} {ip}\r\ns=switchboard\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    for (i, m) in offer.media.iter().enumerate() {
        if i == index {
            a.push_str(&format!(
                "m=audio {} RTP/AVP {payload_type}\r\na=rtpmap:{payload_type} {}/8000\r\na=ptime:20\r\na=sendonly\r\n",
                local.port(),
                codec.name()
            ));
        } else {
            // Refused (RFC 3264 §6): same media and transport, port 0, at least one format.
            let fmt = m
                .formats
                .first()
                .map_or_else(|| "0".to_owned(), |f| f.to_string());
            a.push_str(&format!("m={} 0 {} {fmt}\r\n", m.media, m.proto));
        }
    }
    Some(Negotiated {
        codec,
        payload_type,
        remote,
        answer: a,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.3.1\r\ns=-\r\nc=IN IP4 127.0.3.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    fn local() -> SocketAddr {
        "127.0.0.1:20000".parse().unwrap()
    }

    #[test]
    fn sipp_style_offer_gets_pcmu() {
        let o = parse(SIPP_OFFER.as_bytes()).unwrap();
        let n = answer(&o, local(), 7).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.remote, "127.0.3.1:6000".parse().unwrap());
        assert!(
            n.answer.contains("m=audio 20000 RTP/AVP 0\r\n"),
            "{}",
            n.answer
        );
        assert!(n.answer.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(n.answer.contains("a=sendonly"));
        // The answer is itself a description we can read back.
        let back = parse(n.answer.as_bytes()).unwrap();
        assert_eq!(back.media[0].direction, Direction::SendOnly);
        assert_eq!(back.media[0].port, 20000);
    }

    #[test]
    fn pcma_preferred_whatever_the_offerer_order() {
        let o = SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 0 8 101");
        let n = answer(&parse(o.as_bytes()).unwrap(), local(), 1).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.payload_type, 8);
        assert!(n
            .answer
            .contains("m=audio 20000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000"));
    }

    #[test]
    fn dynamic_payload_type_by_rtpmap_is_echoed() {
        let o = SIPP_OFFER
            .replace("RTP/AVP 0", "RTP/AVP 96")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:96 pcma/8000");
        let n = answer(&parse(o.as_bytes()).unwrap(), local(), 1).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 96));
    }

    #[test]
    fn rtpmap_overrides_a_static_number() {
        // PT 8 remapped to something else is not PCMA.
        let o = SIPP_OFFER
            .replace("RTP/AVP 0", "RTP/AVP 8")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 opus/48000/2");
        assert!(answer(&parse(o.as_bytes()).unwrap(), local(), 1).is_none());
    }

    #[test]
    fn no_g711_means_no_early_media() {
        let o = SIPP_OFFER
            .replace("RTP/AVP 0", "RTP/AVP 18 111")
            .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:111 opus/48000/2");
        assert!(answer(&parse(o.as_bytes()).unwrap(), local(), 1).is_none());
    }

    #[test]
    fn hold_sendonly_inactive_and_srtp_are_unusable() {
        for (from, to) in [
            ("c=IN IP4 127.0.3.1", "c=IN IP4 0.0.0.0"),
            ("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\r\na=sendonly"),
            ("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\r\na=inactive"),
            ("RTP/AVP 0", "RTP/SAVP 0"),
            ("m=audio 6000", "m=audio 0"),
            ("c=IN IP4 127.0.3.1\r\n", ""),
        ] {
            let o = SIPP_OFFER.replace(from, to);
            assert!(
                answer(&parse(o.as_bytes()).unwrap(), local(), 1).is_none(),
                "{to}"
            );
        }
    }

    #[test]
    fn session_level_sendonly_applies_to_streams() {
        let o = SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
        assert!(answer(&parse(o.as_bytes()).unwrap(), local(), 1).is_none());
    }

    #[test]
    fn other_streams_are_refused_with_port_zero_in_order() {
        let o = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.1\r\nm=audio 6000 RTP/AVP 0 8\r\nc=IN IP4 10.0.0.2\r\n";
        let n = answer(&parse(o.as_bytes()).unwrap(), local(), 1).unwrap();
        assert_eq!(n.remote, "10.0.0.2:6000".parse().unwrap());
        let back = parse(n.answer.as_bytes()).unwrap();
        assert_eq!(back.media.len(), 2);
        assert_eq!(
            (back.media[0].media.as_str(), back.media[0].port),
            ("video", 0)
        );
        assert_eq!(back.media[1].port, 20000);
    }

    #[test]
    fn ipv6_and_lf_only_lines() {
        let o = "v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 ::1\nt=0 0\nm=audio 7000 RTP/AVP 8\n";
        let n = answer(
            &parse(o.as_bytes()).unwrap(),
            "[::1]:20002".parse().unwrap(),
            1,
        )
        .unwrap();
        assert_eq!(n.remote, "[::1]:7000".parse().unwrap());
        assert!(n.answer.contains("c=IN IP6 ::1"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(parse(b"hello"), Err(SdpError::NoVersion));
        assert_eq!(parse(&[0xff, 0xfe]), Err(SdpError::NotText));
        assert!(matches!(
            parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::Malformed { kind: 'm', .. })
        ));
        assert!(matches!(
            parse(b"v=0\r\nc=IN IP4 999.1.1.1\r\n"),
            Err(SdpError::Malformed { kind: 'c', .. })
        ));
        assert!(parse(b"v=0\r\nbogus\r\n").is_err());
        assert!(parse(b"v=0\r\na=rtpmap:\r\nm=audio 1 RTP/AVP\r\na=rtpmap:x y\r\n").is_ok());
    }
}
