//! G.711 A-law and µ-law to 16-bit linear PCM (ITU-T G.711, tables 1a/1b and 2a/2b).
//!
//! Decoding is a table lookup; the two 256-entry tables are computed at compile time from
//! the standard's segment/quantisation formulas, the same values as the ITU reference
//! code (G.191 `alaw_expand`/`ulaw_expand`, scaled to 16 bits) and ffmpeg's `pcm_alaw` /
//! `pcm_mulaw` decoders: A-law spans ±32256, µ-law ±32124.

use super::Codec;

/// The A-law byte → linear sample table.
pub const ALAW: [i16; 256] = alaw_table();

/// The µ-law byte → linear sample table.
pub const MULAW: [i16; 256] = mulaw_table();

const fn alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        // Even bits are inverted on the line (the 0x55 mask); bit 7 set means positive.
        let a = (i as u8) ^ 0x55;
        let mantissa = (a & 0x0F) as i32;
        let segment = ((a & 0x70) >> 4) as i32;
        // The middle of the quantisation interval: (2 × mantissa + 1) half steps, plus the
        // implicit leading one (32 half steps) above segment 0, scaled to 16 bits.
        let magnitude = if segment == 0 {
            (2 * mantissa + 1) << 3
        } else {
            (2 * mantissa + 1 + 32) << (segment + 2)
        };
        t[i] = if a & 0x80 != 0 {
            magnitude as i16
        } else {
            -magnitude as i16
        };
        i += 1;
    }
    t
}

const fn mulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        // All bits are inverted on the line; bit 7 set (after inversion) means negative.
        let u = !(i as u8);
        let mantissa = (u & 0x0F) as i32;
        let exponent = ((u & 0x70) >> 4) as i32;
        // Biased by 0x84 (33 × 4) so every segment is a power-of-two scaling.
        let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
        t[i] = if u & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        i += 1;
    }
    t
}

/// The decoding table of a G.711 codec, `None` for any other codec.
pub fn table(codec: Codec) -> Option<&'static [i16; 256]> {
    match codec {
        Codec::Alaw => Some(&ALAW),
        Codec::Mulaw => Some(&MULAW),
        _ => None,
    }
}

/// Appends the linear samples of `data` (one byte per sample, channels interleaved) to
/// `out`.
pub fn decode(table: &[i16; 256], data: &[u8], out: &mut Vec<i16>) {
    out.extend(data.iter().map(|&b| table[usize::from(b)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The linear value of a code as the ITU-T G.191 reference decoders compute it
    /// (`alaw_expand`, `ulaw_expand`: 13-bit and 14-bit results), scaled to 16 bits.
    fn g191_alaw(code: u8) -> i16 {
        let ix = i32::from(code ^ 0x55) & 0x7F;
        let iexp = ix >> 4;
        let mut mant = ix & 0x0F;
        if iexp > 0 {
            mant += 16;
        }
        mant = (mant << 4) + 0x08;
        if iexp > 1 {
            mant <<= iexp - 1;
        }
        let v = if code & 0x80 != 0 { mant } else { -mant };
        v as i16
    }

    fn g191_ulaw(code: u8) -> i16 {
        let sign = code < 0x80;
        let log = !code & 0x7F;
        let exponent = i32::from(log >> 4);
        let mantissa = i32::from(log & 0x0F);
        let step = 4 << (exponent + 1);
        let v = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
        (if sign { -v } else { v }) as i16
    }

    #[test]
    fn known_values() {
        // A-law (G.711 table 1a/2a): 0xD5/0x55 are the smallest magnitudes ±8 (±1 in
        // 13-bit units, half a step), 0xAA/0x2A the largest, ±32256 (±4032 × 8).
        assert_eq!(ALAW[0xD5], 8);
        assert_eq!(ALAW[0x55], -8);
        assert_eq!(ALAW[0xAA], 32256);
        assert_eq!(ALAW[0x2A], -32256);
        assert_eq!(ALAW[0x80], 5504); // ffmpeg's alaw2linear(0x80)
        assert_eq!(ALAW[0x00], -5504);
        // µ-law (table 2a/2b): 0xFF and 0x7F are ±0, 0x80/0x00 the largest, ±32124.
        assert_eq!(MULAW[0xFF], 0);
        assert_eq!(MULAW[0x7F], 0);
        assert_eq!(MULAW[0x80], 32124);
        assert_eq!(MULAW[0x00], -32124);
        assert_eq!(MULAW[0xFE], 8);
        assert_eq!(MULAW[0x7E], -8);
        assert_eq!(MULAW[0xF0], 120); // the top of segment 0
        assert_eq!(MULAW[0xEF], 132); // the bottom of segment 1
        // Every code against the reference formulas.
        for c in 0..=255u8 {
            assert_eq!(ALAW[usize::from(c)], g191_alaw(c), "A-law {c:#x}");
            assert_eq!(MULAW[usize::from(c)], g191_ulaw(c), "µ-law {c:#x}");
        }
    }

    #[test]
    fn tables_are_odd_symmetric_and_monotonic() {
        for c in 0..128usize {
            assert_eq!(ALAW[c | 0x80], -ALAW[c], "A-law {c:#x}");
            assert_eq!(MULAW[c | 0x80], -MULAW[c], "µ-law {c:#x}");
        }
        // Over the positive codes in magnitude order the values increase strictly.
        let mut alaw: Vec<i16> = (0x80..=0xFFu8)
            .map(|c| ALAW[usize::from(c ^ 0x55)])
            .collect();
        let mut mulaw: Vec<i16> = (0x80..=0xFFu8)
            .rev()
            .map(|c| MULAW[usize::from(c)])
            .collect();
        assert!(alaw.windows(2).all(|w| w[0] < w[1]), "{alaw:?}");
        assert!(mulaw.windows(2).all(|w| w[0] < w[1]), "{mulaw:?}");
        alaw.dedup();
        mulaw.dedup();
        assert_eq!((alaw.len(), mulaw.len()), (128, 128));
    }

    #[test]
    fn decode_interleaved() {
        let mut out = vec![1];
        decode(table(Codec::Mulaw).unwrap(), &[0xFF, 0x80, 0x00], &mut out);
        assert_eq!(out, [1, 0, 32124, -32124]);
        assert!(table(Codec::Aac).is_none());
    }
}
