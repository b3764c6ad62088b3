//! VP9: what a `vpcC` box (VP Codec ISO Media File Format Binding v1.0) and the `vp09`
//! codec string need, derived from the uncompressed header of a keyframe (VP9 bitstream
//! specification §6.2: frame marker, profile, show_existing_frame, frame_type, sync code
//! 49 83 42, color_config, frame_size, render_size) and from Matroska's optional VP9
//! CodecPrivate feature list (ID 1 profile, 2 level, 3 bit depth, 4 chroma subsampling).
//!
//! Matroska files usually carry no CodecPrivate for VP9, and the bitstream has no level,
//! so the level is computed the way ffmpeg's vpcC writer does: the lowest level of the
//! VP9 level table whose luma picture size and luma sample rate cover the stream. Level 0
//! ("undefined") would be simpler but Chrome refuses any `vp09` codec string whose level is
//! not one of 10, 11, 20, … 62.

use super::CodecError;
use super::bits::BitReader;

const HEADER: &str = "VP9 frame header";
const PRIVATE: &str = "VP9 CodecPrivate";

/// What a VP9 keyframe's uncompressed header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vp9KeyFrame {
    pub profile: u8,
    pub show_frame: bool,
    pub bit_depth: u8,
    /// color_space as coded: 0 unknown, 1 BT.601, 2 BT.709, 3 SMPTE-170, 4 SMPTE-240,
    /// 5 BT.2020, 6 reserved, 7 sRGB.
    pub color_space: u8,
    pub full_range: bool,
    pub subsampling_x: bool,
    pub subsampling_y: bool,
    pub width: u32,
    pub height: u32,
    pub render_width: u32,
    pub render_height: u32,
}

/// The frames of a VP9 block: one, or several when it ends with a superframe index.
pub fn frames(data: &[u8]) -> Vec<&[u8]> {
    let Some(&marker) = data.last() else {
        return Vec::new();
    };
    if marker & 0xE0 == 0xC0 {
        let n = usize::from(marker & 7) + 1;
        let mag = usize::from((marker >> 3) & 3) + 1;
        let index_len = 2 + mag * n;
        if data.len() >= index_len && data[data.len() - index_len] == marker {
            let index = &data[data.len() - index_len + 1..data.len() - 1];
            let mut out = Vec::with_capacity(n);
            let mut pos = 0usize;
            let body_end = data.len() - index_len;
            for size_bytes in index.chunks_exact(mag) {
                let size = size_bytes
                    .iter()
                    .rev()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                let end = pos.saturating_add(size);
                if end > body_end {
                    break;
                }
                out.push(&data[pos..end]);
                pos = end;
            }
            return out;
        }
    }
    vec![data]
}

/// Parses the uncompressed header of the first keyframe in a block (a plain frame or a
/// superframe). Errors when no frame of the block is a keyframe.
pub fn parse_keyframe(data: &[u8]) -> Result<Vp9KeyFrame, CodecError> {
    let mut last = None;
    for f in frames(data) {
        match parse_keyframe_header(f) {
            Ok(k) => return Ok(k),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(CodecError::Truncated {
        what: HEADER,
        field: "frame",
        have: 0,
        need: 1,
    }))
}

fn parse_keyframe_header(data: &[u8]) -> Result<Vp9KeyFrame, CodecError> {
    let mut r = BitReader::new(data, HEADER);
    r.field("uncompressed_header");
    let marker = r.bits(2)?;
    if marker != 2 {
        return Err(CodecError::BadValue {
            what: HEADER,
            field: "frame_marker",
            value: u64::from(marker),
            expected: "2",
        });
    }
    let low = r.bits(1)?;
    let high = r.bits(1)?;
    let profile = (high << 1 | low) as u8;
    if profile == 3 && r.bit()? {
        return Err(CodecError::Invalid {
            what: HEADER,
            reason: "reserved_zero after profile 3 is 1".into(),
        });
    }
    if r.bit()? {
        return Err(CodecError::Invalid {
            what: HEADER,
            reason: "show_existing_frame: a repeated frame, not a keyframe".into(),
        });
    }
    if r.bit()? {
        return Err(CodecError::Invalid {
            what: HEADER,
            reason: "frame_type 1: not a keyframe".into(),
        });
    }
    let show_frame = r.bit()?;
    let _error_resilient = r.bit()?;
    r.field("frame_sync_code");
    let sync = r.bits(24)?;
    if sync != 0x49_83_42 {
        return Err(CodecError::Invalid {
            what: HEADER,
            reason: format!("frame sync code {sync:06X}, not 498342"),
        });
    }
    r.field("color_config");
    let bit_depth = if profile >= 2 {
        if r.bit()? { 12 } else { 10 }
    } else {
        8
    };
    let color_space = r.bits(3)? as u8;
    let (full_range, subsampling_x, subsampling_y);
    if color_space != 7 {
        full_range = r.bit()?;
        if profile == 1 || profile == 3 {
            subsampling_x = r.bit()?;
            subsampling_y = r.bit()?;
            if r.bit()? {
                return Err(CodecError::Invalid {
                    what: HEADER,
                    reason: "reserved_zero in color_config is 1".into(),
                });
            }
        } else {
            subsampling_x = true;
            subsampling_y = true;
        }
    } else {
        full_range = true;
        if profile == 1 || profile == 3 {
            subsampling_x = false;
            subsampling_y = false;
            if r.bit()? {
                return Err(CodecError::Invalid {
                    what: HEADER,
                    reason: "reserved_zero in color_config is 1".into(),
                });
            }
        } else {
            return Err(CodecError::Invalid {
                what: HEADER,
                reason: format!("sRGB colour space in profile {profile} (needs 1 or 3)"),
            });
        }
    }
    r.field("frame_size");
    let width = r.bits(16)? + 1;
    let height = r.bits(16)? + 1;
    r.field("render_size");
    let (render_width, render_height) = if r.bit()? {
        (r.bits(16)? + 1, r.bits(16)? + 1)
    } else {
        (width, height)
    };
    Ok(Vp9KeyFrame {
        profile,
        show_frame,
        bit_depth,
        color_space,
        full_range,
        subsampling_x,
        subsampling_y,
        width,
        height,
        render_width,
        render_height,
    })
}

/// Matroska's VP9 CodecPrivate: a list of (ID, length, value) features, all optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vp9CodecPrivate {
    pub profile: Option<u8>,
    pub level: Option<u8>,
    pub bit_depth: Option<u8>,
    /// vpcC's values: 0 4:2:0 vertical, 1 4:2:0 colocated, 2 4:2:2, 3 4:4:4.
    pub chroma_subsampling: Option<u8>,
}

impl Vp9CodecPrivate {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut out = Vp9CodecPrivate::default();
        let mut rest = data;
        while !rest.is_empty() {
            let [id, len, ..] = *rest else {
                return Err(CodecError::Truncated {
                    what: PRIVATE,
                    field: "feature header",
                    have: rest.len(),
                    need: 2,
                });
            };
            let Some(value) = rest.get(2..2 + usize::from(len)) else {
                return Err(CodecError::Truncated {
                    what: PRIVATE,
                    field: "feature value",
                    have: rest.len() - 2,
                    need: usize::from(len),
                });
            };
            let byte = (len == 1).then(|| value[0]);
            match id {
                1 => out.profile = byte,
                2 => out.level = byte,
                3 => out.bit_depth = byte,
                4 => out.chroma_subsampling = byte,
                _ => {}
            }
            rest = &rest[2 + usize::from(len)..];
        }
        if let Some(p) = out.profile.filter(|&p| p > 3) {
            return Err(CodecError::BadValue {
                what: PRIVATE,
                field: "profile",
                value: u64::from(p),
                expected: "0..3",
            });
        }
        if let Some(b) = out.bit_depth.filter(|b| ![8, 10, 12].contains(b)) {
            return Err(CodecError::BadValue {
                what: PRIVATE,
                field: "bit depth",
                value: u64::from(b),
                expected: "8, 10 or 12",
            });
        }
        if let Some(c) = out.chroma_subsampling.filter(|&c| c > 3) {
            return Err(CodecError::BadValue {
                what: PRIVATE,
                field: "chroma subsampling",
                value: u64::from(c),
                expected: "0..3",
            });
        }
        Ok(out)
    }
}

/// The levels Chrome accepts in a `vp09` codec string.
pub const LEVELS: [u8; 14] = [10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 52, 60, 61, 62];

/// (level, max luma sample rate, max luma picture size) from the VP9 level table.
const LEVEL_LIMITS: [(u8, u64, u64); 14] = [
    (10, 829_440, 36_864),
    (11, 2_764_800, 73_728),
    (20, 4_608_000, 122_880),
    (21, 9_216_000, 245_760),
    (30, 20_736_000, 552_960),
    (31, 36_864_000, 983_040),
    (40, 83_558_400, 2_228_224),
    (41, 160_432_128, 2_228_224),
    (50, 311_951_360, 8_912_896),
    (51, 588_251_136, 8_912_896),
    (52, 1_176_502_272, 8_912_896),
    (60, 1_176_502_272, 35_651_584),
    (61, 2_353_004_544, 35_651_584),
    (62, 4_706_009_088, 35_651_584),
];

/// The lowest VP9 level for a picture size and frame rate (`(num, den)` frames per
/// second). Without a frame rate only the picture size decides, as in ffmpeg. Beyond the
/// table: 62.
pub fn level_for(width: u32, height: u32, frame_rate: Option<(u32, u32)>) -> u8 {
    let pic = u64::from(width) * u64::from(height);
    let rate = match frame_rate {
        Some((n, d)) if d != 0 => pic.saturating_mul(u64::from(n)) / u64::from(d),
        _ => 0,
    };
    LEVEL_LIMITS
        .iter()
        .find(|&&(_, max_rate, max_pic)| rate <= max_rate && pic <= max_pic)
        .map_or(62, |&(l, _, _)| l)
}

/// Everything a `vpcC` box and a `vp09` codec string need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vp9Config {
    pub profile: u8,
    pub level: u8,
    pub bit_depth: u8,
    /// 0 4:2:0 vertical, 1 4:2:0 colocated with luma (0,0), 2 4:2:2, 3 4:4:4.
    pub chroma_subsampling: u8,
    pub full_range: bool,
    /// ITU-T H.273 code points; 2 ("unspecified") when unknown. VP9's bitstream only
    /// says the matrix.
    pub colour_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
}

/// matrix_coefficients for VP9's color_space, as ffmpeg maps it.
fn matrix_for(color_space: u8) -> u8 {
    match color_space {
        1 => 5,
        2 => 1,
        3 => 6,
        4 => 7,
        5 => 9,
        7 => 0,
        _ => 2,
    }
}

impl Vp9Config {
    /// From a keyframe header, with the CodecPrivate's level and 4:2:0 siting when it has
    /// them. `level` is used when neither the CodecPrivate nor the caller knows better.
    pub fn from_keyframe(
        k: &Vp9KeyFrame,
        private: &Vp9CodecPrivate,
        level: u8,
    ) -> Result<Self, CodecError> {
        let chroma_subsampling = match (k.subsampling_x, k.subsampling_y) {
            // VP9 does not say where 4:2:0 chroma sits; ffmpeg writes "colocated" unless
            // told otherwise, and so do we.
            (true, true) => private.chroma_subsampling.filter(|&c| c <= 1).unwrap_or(1),
            (true, false) => 2,
            (false, false) => 3,
            (false, true) => {
                return Err(CodecError::Invalid {
                    what: HEADER,
                    reason: "4:4:0 subsampling has no vpcC value".into(),
                });
            }
        };
        Ok(Vp9Config {
            profile: k.profile,
            level: private
                .level
                .filter(|l| LEVELS.contains(l))
                .unwrap_or(level),
            bit_depth: k.bit_depth,
            chroma_subsampling,
            full_range: k.full_range,
            colour_primaries: 2,
            transfer_characteristics: 2,
            matrix_coefficients: matrix_for(k.color_space),
        })
    }

    /// The short codec string `vp09.PP.LL.DD`, as ffmpeg's DASH muxer writes and every
    /// browser accepts.
    pub fn codec_string(&self) -> String {
        format!(
            "vp09.{:02}.{:02}.{:02}",
            self.profile, self.level, self.bit_depth
        )
    }

    /// The full form `vp09.PP.LL.DD.CC.cp.tc.mc.FF`.
    pub fn codec_string_long(&self) -> String {
        format!(
            "{}.{:02}.{:02}.{:02}.{:02}.{:02}",
            self.codec_string(),
            self.chroma_subsampling,
            self.colour_primaries,
            self.transfer_characteristics,
            self.matrix_coefficients,
            u8::from(self.full_range)
        )
    }

    /// The body of a `vpcC` box after the 8-byte box header: version 1, flags 0, then the
    /// VPCodecConfigurationRecord with no codec initialization data.
    pub fn vpcc_payload(&self) -> Vec<u8> {
        vec![
            1,
            0,
            0,
            0,
            self.profile,
            self.level,
            (self.bit_depth & 0x0F) << 4
                | (self.chroma_subsampling & 7) << 1
                | u8::from(self.full_range),
            self.colour_primaries,
            self.transfer_characteristics,
            self.matrix_coefficients,
            0,
            0,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::bits::BitWriter;
    use super::*;

    fn keyframe(profile: u32, ten_or_twelve: u32, cs: u32, w: u32, h: u32) -> Vec<u8> {
        let mut b = BitWriter::default();
        b.put(2, 2);
        b.put(1, profile & 1);
        b.put(1, profile >> 1);
        if profile == 3 {
            b.put(1, 0);
        }
        b.put(1, 0); // show_existing_frame
        b.put(1, 0); // key frame
        b.put(1, 1); // show
        b.put(1, 0); // error resilient
        b.put(24, 0x49_83_42);
        if profile >= 2 {
            b.put(1, ten_or_twelve);
        }
        b.put(3, cs);
        if cs != 7 {
            b.put(1, 0);
            if profile & 1 == 1 {
                b.put(1, 1);
                b.put(1, 0);
                b.put(1, 0);
            }
        } else {
            b.put(1, 0);
        }
        b.put(16, w - 1);
        b.put(16, h - 1);
        b.put(1, 0);
        b.put(8, 0xAB); // the rest of the header, not read
        b.finish()
    }

    #[test]
    fn profile_0_and_2_keyframes() {
        let k = parse_keyframe(&keyframe(0, 0, 2, 320, 240)).unwrap();
        assert_eq!(
            (k.profile, k.bit_depth, k.width, k.height),
            (0, 8, 320, 240)
        );
        assert!(k.subsampling_x && k.subsampling_y);
        let c = Vp9Config::from_keyframe(&k, &Vp9CodecPrivate::default(), 20).unwrap();
        assert_eq!(c.codec_string(), "vp09.00.20.08");
        assert_eq!(c.codec_string_long(), "vp09.00.20.08.01.02.02.01.00");
        assert_eq!(c.vpcc_payload(), [1, 0, 0, 0, 0, 20, 0x82, 2, 2, 1, 0, 0]);
        let k = parse_keyframe(&keyframe(2, 1, 5, 3840, 2160)).unwrap();
        assert_eq!((k.profile, k.bit_depth), (2, 12));
        let k = parse_keyframe(&keyframe(1, 0, 1, 64, 64)).unwrap();
        assert!(k.subsampling_x && !k.subsampling_y);
        let c = Vp9Config::from_keyframe(&k, &Vp9CodecPrivate::default(), 10).unwrap();
        assert_eq!(c.chroma_subsampling, 2);
        let k = parse_keyframe(&keyframe(3, 0, 7, 64, 64)).unwrap();
        assert!(k.full_range && !k.subsampling_x);
    }

    #[test]
    fn non_keyframes_and_superframes() {
        let mut inter = keyframe(0, 0, 2, 320, 240);
        inter[0] |= 0x04; // frame_type 1
        let e = parse_keyframe(&inter).unwrap_err();
        assert!(e.to_string().contains("not a keyframe"), "{e}");
        // A superframe: an inter frame then the keyframe, sizes in 1-byte fields.
        let key = keyframe(0, 0, 2, 320, 240);
        let mut sf = inter.clone();
        sf.extend_from_slice(&key);
        let marker = 0xC0 | 1;
        sf.extend_from_slice(&[marker, inter.len() as u8, key.len() as u8, marker]);
        assert_eq!(frames(&sf).len(), 2);
        assert_eq!(parse_keyframe(&sf).unwrap().width, 320);
        // The header proper is 69 bits: every cut inside it is an error.
        for n in 0..9 {
            assert!(parse_keyframe(&key[..n]).is_err(), "{n}");
        }
        assert!(parse_keyframe(&[]).is_err());
    }

    #[test]
    fn codec_private_features() {
        let p =
            Vp9CodecPrivate::parse(&[1, 1, 2, 2, 1, 31, 3, 1, 10, 4, 1, 0, 9, 2, 0, 0]).unwrap();
        assert_eq!(p.profile, Some(2));
        assert_eq!(p.level, Some(31));
        assert_eq!(p.bit_depth, Some(10));
        assert_eq!(p.chroma_subsampling, Some(0));
        assert!(Vp9CodecPrivate::parse(&[1, 2, 0]).is_err());
        assert!(Vp9CodecPrivate::parse(&[1]).is_err());
        assert!(Vp9CodecPrivate::parse(&[3, 1, 9]).is_err());
        assert_eq!(
            Vp9CodecPrivate::parse(&[]).unwrap(),
            Vp9CodecPrivate::default()
        );
    }

    #[test]
    fn levels() {
        // ffmpeg's DASH muxer: vp09.00.20.08 for 320x240 at 25 fps.
        assert_eq!(level_for(320, 240, Some((25, 1))), 20);
        assert_eq!(level_for(160, 120, Some((25, 1))), 10);
        assert_eq!(level_for(1280, 720, Some((30, 1))), 31);
        assert_eq!(level_for(1920, 1080, Some((30, 1))), 40);
        assert_eq!(level_for(1920, 1080, Some((60, 1))), 41);
        assert_eq!(level_for(3840, 2160, Some((60, 1))), 51);
        assert_eq!(level_for(1920, 1080, None), 40);
        assert_eq!(level_for(65536, 65536, Some((240, 1))), 62);
        assert_eq!(level_for(320, 240, Some((25, 0))), 20);
    }
}
