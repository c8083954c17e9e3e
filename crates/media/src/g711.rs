//! G.711 (ITU-T, 1972): 16-bit linear PCM to A-law and µ-law and back, as in the reference code
//! (Sun Microsystems' public-domain g711.c). Prompts are encoded once at load, never per packet.

/// Segment ends of the 13-bit A-law and 14-bit µ-law scales.
const SEG_AEND: [i16; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
const SEG_UEND: [i16; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];

fn segment(table: &[i16; 8], v: i16) -> usize {
    table.iter().position(|&e| v <= e).unwrap_or(8)
}

/// One linear sample to A-law (even bits inverted, as sent on the wire).
pub fn linear_to_alaw(pcm: i16) -> u8 {
    // A-law works on 13 bits.
    let mut v = pcm >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(&SEG_AEND, v);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut a = (seg as u8) << 4;
    a |= if seg < 2 {
        ((v >> 1) & 0x0F) as u8
    } else {
        ((v >> seg) & 0x0F) as u8
    };
    a ^ mask
}

/// One A-law byte back to linear.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = i16::from(a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t
    } else {
        -t
    }
}

const BIAS: i16 = 0x84;
const CLIP: i16 = 8159;

/// One linear sample to µ-law.
pub fn linear_to_ulaw(pcm: i16) -> u8 {
    // µ-law works on 14 bits.
    let mut v = pcm >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(CLIP) + (BIAS >> 2);
    let seg = segment(&SEG_UEND, v);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let u = ((seg as u8) << 4) | (((v >> (seg + 1)) & 0x0F) as u8);
    u ^ mask
}

/// One µ-law byte back to linear.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let mut t = (i16::from(u & 0x0F) << 3) + BIAS;
    t <<= (u & 0x70) >> 4;
    if u & 0x80 != 0 {
        BIAS - t
    } else {
        t - BIAS
    }
}

/// The A-law byte of silence (linear 0).
pub const ALAW_SILENCE: u8 = 0xD5;
/// The µ-law byte of silence (linear 0).
pub const ULAW_SILENCE: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Values from ITU-T G.711 tables / the reference implementation.
        assert_eq!(linear_to_alaw(0), ALAW_SILENCE);
        assert_eq!(linear_to_ulaw(0), ULAW_SILENCE);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(ulaw_to_linear(0xFF), 0);
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(b)), b, "A-law {b:#x}");
            // µ-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes as 0xFF.
            if b != 0x7F {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(b)), b, "µ-law {b:#x}");
            }
        }
    }

    #[test]
    fn quantization_error_is_bounded_and_monotonic() {
        let mut last_a = i16::MIN;
        let mut last_u = i16::MIN;
        for x in (i16::MIN..=i16::MAX).step_by(7) {
            let a = alaw_to_linear(linear_to_alaw(x));
            let u = ulaw_to_linear(linear_to_ulaw(x));
            // Logarithmic: the error grows with the level, about 1/16 of it at most.
            let tol = (i32::from(x).abs() / 16).max(16) + 8;
            assert!((i32::from(a) - i32::from(x)).abs() <= tol, "A {x} → {a}");
            assert!(
                (i32::from(u) - i32::from(x)).abs() <= tol * 2,
                "µ {x} → {u}"
            );
            assert!(a >= last_a && u >= last_u, "monotonic at {x}");
            last_a = a;
            last_u = u;
        }
    }
}
