//! Prompts: the clips shipped under `deploy/prompts/<lang>/`, decoded once at start and kept in
//! both G.711 flavours, and the playlist a waiting caller hears.
//!
//! Reading files is the shell's job: this module takes their bytes ([`Prompts::add_wav`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::g711;
use crate::sdp::Codec;

/// Prompt languages. Mandarin is always there; Tibetan is used where the config asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    /// Standard Mandarin (`cmn`).
    Mandarin,
    /// Tibetan (`bo`). Clips missing in `deploy/prompts/bo/` fall back to Mandarin
    /// (deploy/prompts/README.md: espeak-ng has no Tibetan voice, so no synthetic clips are shipped).
    Tibetan,
}

impl Lang {
    /// The folder name under `deploy/prompts/` (ISO 639-3 / 639-1).
    pub fn dir(self) -> &'static str {
        match self {
            Lang::Mandarin => "cmn",
            Lang::Tibetan => "bo",
        }
    }
}

/// The clips a playlist is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clip {
    /// "This number has joined the 12345 hotline" (played for merged lines).
    Joined,
    /// "You are number" … (before the spoken position).
    PositionBefore,
    /// … "in the queue, please hold" (after it).
    PositionAfter,
    /// A digit 0–9.
    Digit(u8),
    /// 十 (ten).
    Ten,
    /// 百 (hundred).
    Hundred,
    /// 千 (thousand).
    Thousand,
    /// 两 (the "two" said before 百 and 千).
    Liang,
    /// The comfort tone looped while waiting.
    Comfort,
}

impl Clip {
    /// Every clip, for loading and for the generator script's checklist.
    pub const ALL: [Clip; 18] = [
        Clip::Joined,
        Clip::PositionBefore,
        Clip::PositionAfter,
        Clip::Digit(0),
        Clip::Digit(1),
        Clip::Digit(2),
        Clip::Digit(3),
        Clip::Digit(4),
        Clip::Digit(5),
        Clip::Digit(6),
        Clip::Digit(7),
        Clip::Digit(8),
        Clip::Digit(9),
        Clip::Ten,
        Clip::Hundred,
        Clip::Thousand,
        Clip::Liang,
        Clip::Comfort,
    ];

    /// The file name (without `.wav`) under the language folder.
    pub fn file_stem(self) -> String {
        match self {
            Clip::Joined => "joined".into(),
            Clip::PositionBefore => "position_before".into(),
            Clip::PositionAfter => "position_after".into(),
            Clip::Digit(d) => format!("digit_{d}"),
            Clip::Ten => "ten".into(),
            Clip::Hundred => "hundred".into(),
            Clip::Thousand => "thousand".into(),
            Clip::Liang => "liang".into(),
            Clip::Comfort => "comfort".into(),
        }
    }
}

/// A number as Mandarin says it, in clips: 12 → 十二, 23 → 二十三, 105 → 一百零五, 110 → 一百一十,
/// 2000 → 两千, 1010 → 一千零一十. Above 9999 the digits are read one by one.
pub fn mandarin_number(n: u32) -> Vec<Clip> {
    if n > 9999 {
        return digits(n);
    }
    if n == 0 {
        return vec![Clip::Digit(0)];
    }
    if (10..20).contains(&n) {
        // 十, 十一 … 十九: no leading 一.
        let mut v = vec![Clip::Ten];
        if n > 10 {
            v.push(Clip::Digit((n - 10) as u8));
        }
        return v;
    }
    let places = [
        (n / 1000 % 10, Some(Clip::Thousand)),
        (n / 100 % 10, Some(Clip::Hundred)),
        (n / 10 % 10, Some(Clip::Ten)),
        (n % 10, None),
    ];
    let mut out = Vec::new();
    let mut zero_pending = false;
    let mut started = false;
    for (d, unit) in places {
        if d == 0 {
            if started {
                zero_pending = true;
            }
            continue;
        }
        if zero_pending {
            out.push(Clip::Digit(0));
            zero_pending = false;
        }
        let big = matches!(unit, Some(Clip::Thousand | Clip::Hundred));
        out.push(if d == 2 && big {
            Clip::Liang
        } else {
            Clip::Digit(d as u8)
        });
        if let Some(u) = unit {
            out.push(u);
        }
        started = true;
    }
    out
}

/// A number read digit by digit (the Tibetan variant, and very long numbers).
pub fn digits(n: u32) -> Vec<Clip> {
    n.to_string()
        .bytes()
        .map(|b| Clip::Digit(b - b'0'))
        .collect()
}

/// Why a prompt file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF/WAVE file")]
    NotWave,
    #[error("no fmt or data chunk")]
    MissingChunk,
    #[error("unsupported format: {0} (want 8000 Hz mono 16-bit PCM, A-law or µ-law)")]
    Unsupported(String),
}

/// Decode a WAV file (8 kHz mono; 16-bit PCM, A-law or µ-law) to linear samples.
pub fn decode_wav(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut pos = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body = bytes
            .get(pos + 8..pos + 8 + len)
            .unwrap_or_else(|| bytes.get(pos + 8..).unwrap_or_default());
        match id {
            b"fmt " if body.len() >= 16 => {
                let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                fmt = Some((u16_at(0), u16_at(2), rate, u16_at(14)));
            }
            b"data" => {
                let (tag, channels, rate, bits) = fmt.ok_or(WavError::MissingChunk)?;
                if channels != 1 || rate != 8000 {
                    return Err(WavError::Unsupported(format!(
                        "{channels} channel(s) at {rate} Hz"
                    )));
                }
                return match (tag, bits) {
                    (1, 16) => Ok(body
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect()),
                    (6, 8) => Ok(body.iter().map(|b| g711::alaw_to_linear(*b)).collect()),
                    (7, 8) => Ok(body.iter().map(|b| g711::ulaw_to_linear(*b)).collect()),
                    _ => Err(WavError::Unsupported(format!(
                        "format tag {tag}, {bits} bits"
                    ))),
                };
            }
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    Err(WavError::MissingChunk)
}

/// One clip in both wire encodings.
#[derive(Debug, Clone)]
struct Encoded {
    alaw: Arc<[u8]>,
    ulaw: Arc<[u8]>,
}

/// Every loaded clip, per language. Immutable once built; shared by all streams.
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    clips: HashMap<(Lang, Clip), Encoded>,
}

impl Prompts {
    pub fn new() -> Prompts {
        Prompts::default()
    }

    /// Add a clip from linear samples (8 kHz).
    pub fn add_samples(&mut self, lang: Lang, clip: Clip, samples: &[i16]) {
        let alaw: Arc<[u8]> = samples.iter().map(|s| g711::linear_to_alaw(*s)).collect();
        let ulaw: Arc<[u8]> = samples.iter().map(|s| g711::linear_to_ulaw(*s)).collect();
        self.clips.insert((lang, clip), Encoded { alaw, ulaw });
    }

    /// Add a clip from a WAV file's bytes.
    pub fn add_wav(&mut self, lang: Lang, clip: Clip, wav: &[u8]) -> Result<(), WavError> {
        let s = decode_wav(wav)?;
        self.add_samples(lang, clip, &s);
        Ok(())
    }

    /// Whether `lang` has its own recording of `clip`.
    pub fn has(&self, lang: Lang, clip: Clip) -> bool {
        self.clips.contains_key(&(lang, clip))
    }

    /// The clip in `lang`, else in Mandarin; `None` if neither is loaded.
    fn get(&self, lang: Lang, clip: Clip, codec: Codec) -> Option<Arc<[u8]>> {
        let e = self
            .clips
            .get(&(lang, clip))
            .or_else(|| self.clips.get(&(Lang::Mandarin, clip)))?;
        Some(match codec {
            Codec::Pcma => e.alaw.clone(),
            Codec::Pcmu => e.ulaw.clone(),
        })
    }

    /// The playlist for a waiting caller: the merged-line notice (if asked), the queue position
    /// (if known), then the comfort tone looped.
    pub fn playlist(&self, req: &PlaylistRequest, codec: Codec) -> Playlist {
        let mut clips: Vec<Clip> = Vec::new();
        if req.merged_notice {
            clips.push(Clip::Joined);
        }
        if let Some(n) = req.position {
            clips.push(Clip::PositionBefore);
            // Tibetan recordings, when present, are read digit by digit: its counting words differ
            // from Mandarin's and are not composed here.
            let words = if req.lang == Lang::Tibetan && self.has(Lang::Tibetan, Clip::Digit(0)) {
                digits(n)
            } else {
                mandarin_number(n)
            };
            clips.extend(words);
            clips.push(Clip::PositionAfter);
        }
        let mut items: Vec<Arc<[u8]>> = clips
            .into_iter()
            .filter_map(|c| self.get(req.lang, c, codec))
            .collect();
        let loop_from = items.len();
        if let Some(c) = self.get(req.lang, Clip::Comfort, codec) {
            items.push(c);
        }
        Playlist::new(items, loop_from, codec)
    }
}

/// What a waiting caller should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistRequest {
    pub lang: Lang,
    /// The dialed line was merged into 12345 and its notice is enabled.
    pub merged_notice: bool,
    /// Place in the queue, when the seat manager knows it.
    pub position: Option<u32>,
}

/// Encoded clips played in order; the items from `loop_from` on repeat for ever. Silence when
/// there is nothing (left) to play.
#[derive(Debug, Clone)]
pub struct Playlist {
    items: Vec<Arc<[u8]>>,
    loop_from: usize,
    idx: usize,
    off: usize,
    silence: u8,
    loop_len: usize,
}

impl Playlist {
    pub fn new(items: Vec<Arc<[u8]>>, loop_from: usize, codec: Codec) -> Playlist {
        let loop_len = items
            .get(loop_from..)
            .map_or(0, |l| l.iter().map(|c| c.len()).sum());
        Playlist {
            items,
            loop_from,
            idx: 0,
            off: 0,
            silence: match codec {
                Codec::Pcma => g711::ALAW_SILENCE,
                Codec::Pcmu => g711::ULAW_SILENCE,
            },
            loop_len,
        }
    }

    /// Fill `out` with the next samples.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.idx >= self.items.len() {
                if self.loop_len == 0 {
                    out[done..].fill(self.silence);
                    return;
                }
                self.idx = self.loop_from;
                self.off = 0;
            }
            let clip = &self.items[self.idx];
            let take = (clip.len() - self.off).min(out.len() - done);
            out[done..done + take].copy_from_slice(&clip[self.off..self.off + take]);
            done += take;
            self.off += take;
            if self.off >= clip.len() {
                self.idx += 1;
                self.off = 0;
            }
        }
    }

    /// Whether the announcement part is over (only the loop is left).
    pub fn in_loop(&self) -> bool {
        self.idx >= self.loop_from
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Clip::*;

    #[test]
    fn mandarin_numbers() {
        let d = Digit;
        assert_eq!(mandarin_number(0), vec![d(0)]);
        assert_eq!(mandarin_number(7), vec![d(7)]);
        assert_eq!(mandarin_number(10), vec![Ten]);
        assert_eq!(mandarin_number(12), vec![Ten, d(2)]);
        assert_eq!(mandarin_number(20), vec![d(2), Ten]);
        assert_eq!(mandarin_number(23), vec![d(2), Ten, d(3)]);
        assert_eq!(mandarin_number(100), vec![d(1), Hundred]);
        assert_eq!(mandarin_number(105), vec![d(1), Hundred, d(0), d(5)]);
        assert_eq!(mandarin_number(110), vec![d(1), Hundred, d(1), Ten]);
        assert_eq!(mandarin_number(200), vec![Liang, Hundred]);
        assert_eq!(mandarin_number(222), vec![Liang, Hundred, d(2), Ten, d(2)]);
        assert_eq!(mandarin_number(2000), vec![Liang, Thousand]);
        assert_eq!(mandarin_number(1010), vec![d(1), Thousand, d(0), d(1), Ten]);
        assert_eq!(mandarin_number(1001), vec![d(1), Thousand, d(0), d(1)]);
        assert_eq!(mandarin_number(12345), vec![d(1), d(2), d(3), d(4), d(5)]);
    }

    fn wav(tag: u16, bits: u16, rate: u32, data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        v.extend(16u32.to_le_bytes());
        v.extend(tag.to_le_bytes());
        v.extend(1u16.to_le_bytes());
        v.extend(rate.to_le_bytes());
        v.extend((rate * u32::from(bits) / 8).to_le_bytes());
        v.extend((bits / 8).to_le_bytes());
        v.extend(bits.to_le_bytes());
        v.extend(b"LIST\x04\0\0\0abcd");
        v.extend(b"data");
        v.extend((data.len() as u32).to_le_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn wav_flavours() {
        let pcm: Vec<u8> = [1000i16, -1000]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(
            decode_wav(&wav(1, 16, 8000, &pcm)).unwrap(),
            vec![1000, -1000]
        );
        let a = decode_wav(&wav(6, 8, 8000, &[0xD5, 0x55])).unwrap();
        assert_eq!(a, vec![8, -8]);
        assert_eq!(decode_wav(&wav(7, 8, 8000, &[0xFF])).unwrap(), vec![0]);
        assert!(matches!(
            decode_wav(&wav(1, 16, 16000, &pcm)),
            Err(WavError::Unsupported(_))
        ));
        assert_eq!(decode_wav(b"RIFFxxxxWAVE"), Err(WavError::MissingChunk));
        assert_eq!(decode_wav(b"nope"), Err(WavError::NotWave));
    }

    fn prompts() -> Prompts {
        let mut p = Prompts::new();
        // Each clip is a distinct constant level, so the order can be read back from the bytes.
        for (i, c) in Clip::ALL.iter().enumerate() {
            p.add_samples(Lang::Mandarin, *c, &[(i as i16 + 1) * 500; 100]);
        }
        p
    }

    fn clip_byte(p: &Prompts, c: Clip) -> u8 {
        p.get(Lang::Mandarin, c, Codec::Pcma).unwrap()[0]
    }

    #[test]
    fn playlist_order_then_loop() {
        let p = prompts();
        let req = PlaylistRequest {
            lang: Lang::Mandarin,
            merged_notice: true,
            position: Some(12),
        };
        let mut pl = p.playlist(&req, Codec::Pcma);
        let mut heard = Vec::new();
        let mut buf = [0u8; 160];
        for _ in 0..10 {
            pl.fill(&mut buf);
            heard.extend_from_slice(&buf);
        }
        let want: Vec<u8> = [Joined, PositionBefore, Ten, Digit(2), PositionAfter]
            .iter()
            .chain(std::iter::repeat_n(&Comfort, 5))
            .flat_map(|c| vec![clip_byte(&p, *c); 100])
            .collect();
        assert_eq!(&heard[..1000], &want[..1000]);
        assert!(pl.in_loop());
    }

    #[test]
    fn tibetan_falls_back_to_mandarin_clip_by_clip() {
        let mut p = prompts();
        p.add_samples(Lang::Tibetan, Joined, &[9000; 50]);
        let req = PlaylistRequest {
            lang: Lang::Tibetan,
            merged_notice: true,
            position: Some(3),
        };
        let mut pl = p.playlist(&req, Codec::Pcmu);
        let mut buf = [0u8; 50];
        pl.fill(&mut buf);
        assert!(buf.iter().all(|b| *b == g711::linear_to_ulaw(9000)));
        pl.fill(&mut buf);
        let before = p.get(Lang::Mandarin, PositionBefore, Codec::Pcmu).unwrap()[0];
        assert_eq!(buf[0], before);
    }

    #[test]
    fn nothing_loaded_is_silence() {
        let p = Prompts::new();
        let req = PlaylistRequest {
            lang: Lang::Mandarin,
            merged_notice: true,
            position: Some(1),
        };
        let mut pl = p.playlist(&req, Codec::Pcma);
        let mut buf = [0u8; 160];
        pl.fill(&mut buf);
        assert!(buf.iter().all(|b| *b == g711::ALAW_SILENCE));
    }
}
