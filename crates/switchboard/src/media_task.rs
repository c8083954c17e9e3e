//! Early media on the wire: the `[media]` config, the prompt files, and the media task.
//!
//! The media task is a thin tokio shell around [`media::Scheduler`]: ONE task, ONE 20 ms interval,
//! one UDP socket per stream (its port is in the SDP answer). The core task starts and stops
//! streams with [`MediaCommand`]s over a bounded channel; the task never talks back. On each tick it
//! reads what arrived on the streams' sockets (non-blocking: tokio only tries a socket the reactor
//! saw readable), latches the caller's RTP source (symmetric RTP), and sends every due packet.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use media::{Clip, Codec, Lang, PlaylistRequest, Prompts, Scheduler, StreamId, StreamParams};
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{line_col, Loaded};

/// Capacity of the core → media channel. Full: a new stream is not started (the caller still
/// hears 182s); a stop waits in the core and is retried.
pub const MEDIA_QUEUE: usize = 4096;

/// `[media]`: early media (183 Session Progress with an SDP answer, then RTP announcements) for
/// callers who wait in a queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Local RTP address and port range, `"IP:FIRST-LAST"`, e.g. `"127.0.0.1:20000-20999"`. Even
    /// ports only are used (RTCP's odd neighbour is left free), so the range holds half as many
    /// simultaneous streams as ports.
    pub rtp_ports: toml::Spanned<String>,
    /// The address written in SDP answers (`c=`), when it differs from the bound one (NAT, or an
    /// `rtp_ports` address of 0.0.0.0).
    #[serde(default)]
    pub advertise_ip: Option<IpAddr>,
    /// Folder of the prompts (`cmn/`, `bo/`), relative to this file.
    #[serde(default = "default_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// Play "this number has joined 12345" to callers of a merged line.
    #[serde(default = "default_true")]
    pub announce_merged: bool,
    /// Play "you are number N in the queue" (with the seat manager, which knows N).
    #[serde(default = "default_true")]
    pub announce_position: bool,
    /// Prefectures (dialplan ids) whose callers hear the Tibetan variant. Clips missing in
    /// `bo/` are played in Mandarin (deploy/prompts/README.md).
    #[serde(default)]
    pub tibetan_prefectures: Vec<toml::Spanned<String>>,
}

fn default_prompts_dir() -> PathBuf {
    PathBuf::from("prompts")
}
fn default_true() -> bool {
    true
}

/// The parsed `rtp_ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub ip: IpAddr,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let (ip, range) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}`: expected IP:FIRST-LAST, e.g. 127.0.0.1:20000-20999"))?;
        let ip: IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("`{ip}` is not an IP address"))?;
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| format!("`{range}`: expected a port range FIRST-LAST"))?;
        let first: u16 = a.parse().map_err(|_| format!("`{a}` is not a port"))?;
        let last: u16 = b.parse().map_err(|_| format!("`{b}` is not a port"))?;
        if first < 1024 || last < first || last - first < 1 {
            return Err(format!(
                "`{range}`: need 1024 <= FIRST < LAST (two ports at least)"
            ));
        }
        Ok(PortRange { ip, first, last })
    }
}

/// Everything the core needs to answer offers, once validated.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub ports: PortRange,
    /// The address in SDP answers.
    pub advertise: IpAddr,
    pub announce_merged: bool,
    pub announce_position: bool,
    pub tibetan_prefectures: Vec<String>,
}

/// Check `[media]` against the plan and load its prompts; problems as `file:line:col: message`.
pub fn load(
    loaded: &Loaded,
    config_text: &str,
    plan: &dialplan::CompiledPlan,
    problems: &mut Vec<String>,
) -> Option<(MediaSettings, Arc<Prompts>)> {
    let m = loaded.config.media.as_ref()?;
    let file = loaded.path.display();
    let at = |span: std::ops::Range<usize>| {
        let (l, c) = line_col(config_text, span.start);
        format!("{file}:{l}:{c}")
    };
    let before = problems.len();
    let ports = match PortRange::parse(m.rtp_ports.get_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(format!("{}: media.rtp_ports: {e}", at(m.rtp_ports.span())));
            None
        }
    };
    let advertise = match (m.advertise_ip, ports) {
        (Some(ip), _) => Some(ip),
        (None, Some(p)) if p.ip.is_unspecified() => {
            problems.push(format!(
                "{}: media.rtp_ports binds {}: set media.advertise_ip, the address callers send RTP to",
                at(m.rtp_ports.span()),
                p.ip
            ));
            None
        }
        (None, p) => p.map(|p| p.ip),
    };
    for t in &m.tibetan_prefectures {
        if plan.prefecture_by_id(t.get_ref()).is_none() {
            problems.push(format!(
                "{}: media.tibetan_prefectures: `{}` is not a prefecture of the dialplan",
                at(t.span()),
                t.get_ref()
            ));
        }
    }
    let dir = loaded.resolve(&m.prompts_dir);
    let mut prompts = Prompts::new();
    for lang in [Lang::Mandarin, Lang::Tibetan] {
        for clip in Clip::ALL {
            let f = dir
                .join(lang.dir())
                .join(format!("{}.wav", clip.file_stem()));
            match std::fs::read(&f) {
                Ok(bytes) => {
                    if let Err(e) = prompts.add_wav(lang, clip, &bytes) {
                        problems.push(format!("{}:1:1: prompt: {e}", f.display()));
                    }
                }
                Err(_) if lang == Lang::Tibetan => {} // falls back to Mandarin
                Err(e) => problems.push(format!(
                    "{}: media.prompts_dir: cannot read {}: {e}",
                    at(m.rtp_ports.span()),
                    f.display()
                )),
            }
        }
    }
    if problems.len() > before {
        return None;
    }
    Some((
        MediaSettings {
            ports: ports?,
            advertise: advertise?,
            announce_merged: m.announce_merged,
            announce_position: m.announce_position,
            tibetan_prefectures: m
                .tibetan_prefectures
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
        },
        Arc::new(prompts),
    ))
}

/// Log, once at start, how many Tibetan clips there are when some prefecture is to hear them
/// (the missing ones are played in Mandarin). Not in [`load`]: that runs before logging is set up.
pub fn log_tibetan_fallback(settings: &MediaSettings, prompts: &Prompts) {
    if settings.tibetan_prefectures.is_empty() {
        return;
    }
    let have = Clip::ALL
        .iter()
        .filter(|c| prompts.has(Lang::Tibetan, **c))
        .count();
    info!(
        tibetan_clips = have,
        of = Clip::ALL.len(),
        prefectures = ?settings.tibetan_prefectures,
        "Tibetan prompts: those missing in bo/ are played in Mandarin (deploy/prompts/README.md)"
    );
}

/// What the core task asks of the media task.
#[derive(Debug)]
pub enum MediaCommand {
    /// Bind `port` and stream the playlist to `remote` (until the caller's RTP shows another source).
    Start {
        port: u16,
        codec: Codec,
        payload_type: u8,
        remote: SocketAddr,
        playlist: PlaylistRequest,
    },
    /// The caller's place changed (back in the queue after an unanswered offer, or overflowed):
    /// play this instead, on the same stream.
    Announce {
        port: u16,
        codec: Codec,
        playlist: PlaylistRequest,
    },
    /// Stop the stream on `port` and close the socket.
    Stop { port: u16 },
}

/// The media task: runs until the core drops its sender.
pub async fn run(bind_ip: IpAddr, prompts: Arc<Prompts>, mut rx: mpsc::Receiver<MediaCommand>) {
    let mut sched = Scheduler::new(std::time::Instant::now());
    let mut sockets: HashMap<StreamId, UdpSocket> = HashMap::new();
    let mut tick = tokio::time::interval(media::PTIME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let now = std::time::Instant::now();
                apply(now, cmd, bind_ip, &prompts, &mut sched, &mut sockets);
                while let Ok(cmd) = rx.try_recv() {
                    apply(now, cmd, bind_ip, &prompts, &mut sched, &mut sockets);
                }
                metrics::gauge!(crate::metrics::MEDIA_STREAMS).set(sched.len() as f64);
            }
            _ = tick.tick() => {
                for (id, sock) in &sockets {
                    // Cheap when idle: tokio answers WouldBlock from its readiness cache, no syscall.
                    while let Ok((n, from)) = sock.try_recv_from(&mut buf) {
                        if sched.handle_received(*id, from, &buf[..n]) {
                            debug!(port = id.0, %from, "symmetric RTP: sending to the caller's source");
                        }
                    }
                }
                let now = std::time::Instant::now();
                sched.poll_transmit(now, |t| {
                    if let Some(s) = sockets.get(&t.stream) {
                        // A full socket buffer drops the packet: the next one is 20 ms away.
                        let _ = s.try_send_to(t.bytes, t.dest);
                    }
                });
            }
        }
    }
    metrics::gauge!(crate::metrics::MEDIA_STREAMS).set(0.0);
}

fn apply(
    now: std::time::Instant,
    cmd: MediaCommand,
    bind_ip: IpAddr,
    prompts: &Prompts,
    sched: &mut Scheduler,
    sockets: &mut HashMap<StreamId, UdpSocket>,
) {
    match cmd {
        MediaCommand::Start {
            port,
            codec,
            payload_type,
            remote,
            playlist,
        } => {
            let id = StreamId(port.into());
            let sock = match bind(SocketAddr::new(bind_ip, port)) {
                Ok(s) => s,
                Err(e) => {
                    warn!(port, %e, "cannot bind the RTP port: this caller gets no announcement");
                    metrics::counter!(crate::metrics::MEDIA_BIND_FAILURES).increment(1);
                    return;
                }
            };
            sched.start(
                now,
                id,
                StreamParams {
                    ssrc: rand::random(),
                    first_seq: rand::random(),
                    first_timestamp: rand::random(),
                    payload_type,
                    remote,
                    playlist: prompts.playlist(&playlist, codec),
                },
            );
            sockets.insert(id, sock);
        }
        MediaCommand::Announce {
            port,
            codec,
            playlist,
        } => {
            sched.set_playlist(StreamId(port.into()), prompts.playlist(&playlist, codec));
        }
        MediaCommand::Stop { port } => {
            let id = StreamId(port.into());
            sched.stop(id);
            sockets.remove(&id);
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MIN: &str = r#"
[sip]
listen = [{ transport = "udp", addr = "127.0.0.1:5060" }]
[registrar]
realm = "r"
state_file = "x"
"#;

    fn plan() -> dialplan::CompiledPlan {
        dialplan::load_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dialplans")).unwrap()
    }

    fn prompts() -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/prompts")
            .display()
            .to_string()
    }

    fn check(media: &str) -> Result<(MediaSettings, Arc<Prompts>), Vec<String>> {
        let text = format!("{MIN}[media]\n{media}");
        let loaded = crate::config::parse_str(Path::new("t.toml"), &text)
            .map_err(|e| e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
        let mut problems = Vec::new();
        let r = load(&loaded, &text, &plan(), &mut problems);
        match r {
            Some(x) if problems.is_empty() => Ok(x),
            _ => Err(problems),
        }
    }

    #[test]
    fn port_ranges() {
        let r = PortRange::parse("127.0.0.1:20000-20999").unwrap();
        assert_eq!((r.first, r.last), (20000, 20999));
        assert_eq!(
            PortRange::parse("[::1]:30000-30001").unwrap().ip,
            "::1".parse::<IpAddr>().unwrap()
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:20000",
            "x:1-2",
            "127.0.0.1:20999-20000",
            "127.0.0.1:80-90",
            "127.0.0.1:20000-70000",
        ] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shipped_prompts_load_with_tibetan_falling_back() {
        let (s, p) = check(&format!(
            "rtp_ports = \"127.0.0.1:20000-20999\"\nprompts_dir = \"{}\"\ntibetan_prefectures = [\"yushu\"]\n",
            prompts()
        ))
        .unwrap();
        assert_eq!(s.advertise, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(s.tibetan_prefectures, ["yushu"]);
        for c in Clip::ALL {
            assert!(p.has(Lang::Mandarin, c), "{c:?}");
            assert!(!p.has(Lang::Tibetan, c), "{c:?}: bo/ ships empty");
        }
    }

    #[test]
    fn problems_carry_file_and_line() {
        let e = check(&format!(
            "rtp_ports = \"0.0.0.0:20000-20999\"\nprompts_dir = \"{}\"\ntibetan_prefectures = [\"lhasa\"]\n",
            prompts()
        ))
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("t.toml:8:13: ") && e[0].contains("advertise_ip"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("t.toml:10:") && e[1].contains("`lhasa`"),
            "{e:?}"
        );
        let e =
            check("rtp_ports = \"127.0.0.1:2-1\"\nprompts_dir = \"/nonexistent\"\n").unwrap_err();
        assert!(e[0].starts_with("t.toml:8:13: media.rtp_ports"), "{e:?}");
        assert!(e.iter().any(|p| p.contains("cannot read")), "{e:?}");
        let e = check("rtp_ports = \"127.0.0.1:20000-20001\"\nrtp_port = 1\n").unwrap_err();
        assert!(
            e[0].starts_with("t.toml:9:1: ") && e[0].contains("unknown field"),
            "{e:?}"
        );
    }
}
