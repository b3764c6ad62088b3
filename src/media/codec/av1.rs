//! AV1: the `av1C` record (AV1 Codec ISO Media File Format Binding §2.3.3), which is
//! Matroska's V_AV1 CodecPrivate, the sequence header OBU (AV1 specification §5.5) found
//! in its configOBUs or in a keyframe's temporal unit, and the `av01` codec string.
//!
//! The sequence header is read in full up to film_grain_params_present (timing and decoder
//! model info, every operating point, frame size bits, the tool flags, color_config), so
//! the av1C can be checked against it; when the two disagree the sequence header wins
//! (it is what decoders use) and the record is rewritten from it.

use bytes::Bytes;

use super::CodecError;
use super::bits::{BitReader, ByteReader};

const AV1C: &str = "AV1 av1C";
const SEQ: &str = "AV1 sequence header";

pub const OBU_SEQUENCE_HEADER: u8 = 1;
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;

/// A parsed av1C.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Av1Config {
    pub seq_profile: u8,
    pub seq_level_idx_0: u8,
    pub seq_tier_0: bool,
    pub high_bitdepth: bool,
    pub twelve_bit: bool,
    pub monochrome: bool,
    pub chroma_subsampling_x: bool,
    pub chroma_subsampling_y: bool,
    pub chroma_sample_position: u8,
    /// initial_presentation_delay_minus_one + 1, when present.
    pub initial_presentation_delay: Option<u8>,
    /// The configOBUs (usually one sequence header OBU).
    pub config_obus: Bytes,
}

impl Av1Config {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(data, AV1C);
        let b0 = r.u8("marker and version")?;
        if b0 != 0x81 {
            return Err(CodecError::Invalid {
                what: AV1C,
                reason: format!("first byte 0x{b0:02X}: marker 1 and version 1 (0x81) expected"),
            });
        }
        let b1 = r.u8("seq_profile")?;
        let b2 = r.u8("seq_tier_0")?;
        let b3 = r.u8("initial_presentation_delay")?;
        Ok(Av1Config {
            seq_profile: b1 >> 5,
            seq_level_idx_0: b1 & 0x1F,
            seq_tier_0: b2 & 0x80 != 0,
            high_bitdepth: b2 & 0x40 != 0,
            twelve_bit: b2 & 0x20 != 0,
            monochrome: b2 & 0x10 != 0,
            chroma_subsampling_x: b2 & 0x08 != 0,
            chroma_subsampling_y: b2 & 0x04 != 0,
            chroma_sample_position: b2 & 0x03,
            initial_presentation_delay: (b3 & 0x10 != 0).then_some((b3 & 0x0F) + 1),
            config_obus: Bytes::copy_from_slice(r.rest()),
        })
    }

    /// An av1C describing a sequence header, with that header's OBU as configOBUs.
    pub fn from_sequence_header(seq: &SequenceHeader, obu: &[u8]) -> Self {
        Av1Config {
            seq_profile: seq.seq_profile,
            seq_level_idx_0: seq.seq_level_idx_0,
            seq_tier_0: seq.seq_tier_0,
            high_bitdepth: seq.bit_depth > 8,
            twelve_bit: seq.bit_depth == 12,
            monochrome: seq.monochrome,
            chroma_subsampling_x: seq.subsampling_x,
            chroma_subsampling_y: seq.subsampling_y,
            chroma_sample_position: seq.chroma_sample_position,
            initial_presentation_delay: None,
            config_obus: Bytes::copy_from_slice(obu),
        }
    }

    pub fn bit_depth(&self) -> u8 {
        match (self.high_bitdepth, self.twelve_bit) {
            (true, true) => 12,
            (true, false) => 10,
            _ => 8,
        }
    }

    /// The record's bytes (the body of an `av1C` box).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(4 + self.config_obus.len());
        out.push(0x81);
        out.push((self.seq_profile & 7) << 5 | (self.seq_level_idx_0 & 0x1F));
        out.push(
            u8::from(self.seq_tier_0) << 7
                | u8::from(self.high_bitdepth) << 6
                | u8::from(self.twelve_bit) << 5
                | u8::from(self.monochrome) << 4
                | u8::from(self.chroma_subsampling_x) << 3
                | u8::from(self.chroma_subsampling_y) << 2
                | (self.chroma_sample_position & 3),
        );
        out.push(match self.initial_presentation_delay {
            Some(d) => 0x10 | (d.saturating_sub(1) & 0x0F),
            None => 0,
        });
        out.extend_from_slice(&self.config_obus);
        Bytes::from(out)
    }

    /// The short codec string `av01.P.LLT.DD` (profile, two-digit level, M or H tier,
    /// two-digit bit depth), as ffmpeg's DASH muxer writes.
    pub fn codec_string(&self) -> String {
        format!(
            "av01.{}.{:02}{}.{:02}",
            self.seq_profile,
            self.seq_level_idx_0,
            if self.seq_tier_0 { 'H' } else { 'M' },
            self.bit_depth()
        )
    }

    /// The long form `av01.P.LLT.DD.M.CCC.cp.tc.mc.F`, with the colour description from a
    /// sequence header.
    pub fn codec_string_long(&self, seq: &SequenceHeader) -> String {
        let c = seq.color.unwrap_or(ColorDescription {
            primaries: 1,
            transfer: 1,
            matrix: 1,
        });
        let position = if self.chroma_subsampling_x && self.chroma_subsampling_y {
            self.chroma_sample_position
        } else {
            0
        };
        format!(
            "{}.{}.{}{}{}.{:02}.{:02}.{:02}.{}",
            self.codec_string(),
            u8::from(self.monochrome),
            u8::from(self.chroma_subsampling_x),
            u8::from(self.chroma_subsampling_y),
            position,
            c.primaries,
            c.transfer,
            c.matrix,
            u8::from(seq.full_range)
        )
    }
}

/// One OBU: its type and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Obu<'a> {
    pub obu_type: u8,
    /// The whole OBU, header included.
    pub bytes: &'a [u8],
    pub payload: &'a [u8],
}

/// Splits a sequence of OBUs (low-overhead format: each with obu_has_size_field, except
/// possibly the last, which then runs to the end).
pub fn obus(data: &[u8]) -> Result<Vec<Obu<'_>>, CodecError> {
    let what = "AV1 OBU";
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let mut r = ByteReader::new(&data[pos..], what);
        let h = r.u8("obu_header")?;
        if h & 0x80 != 0 {
            return Err(CodecError::Invalid {
                what,
                reason: "obu_forbidden_bit is 1".into(),
            });
        }
        let obu_type = (h >> 3) & 0x0F;
        if h & 0x04 != 0 {
            r.u8("obu_extension_header")?;
        }
        let size = if h & 0x02 != 0 {
            leb128(&mut r)?
        } else {
            r.remaining() as u64
        };
        let header_len = r.position();
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let payload = r.bytes(size, "OBU payload")?;
        let end = pos + header_len + payload.len();
        out.push(Obu {
            obu_type,
            bytes: &data[pos..end],
            payload,
        });
        pos = end;
    }
    Ok(out)
}

fn leb128(r: &mut ByteReader<'_>) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for i in 0..8 {
        let b = r.u8("obu_size")?;
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::Invalid {
        what: "AV1 OBU",
        reason: "obu_size leb128 longer than 8 bytes".into(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColorDescription {
    pub primaries: u8,
    pub transfer: u8,
    pub matrix: u8,
}

/// What a sequence header says (the parts a sample entry and codec string use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceHeader {
    pub seq_profile: u8,
    pub still_picture: bool,
    pub reduced_still_picture_header: bool,
    /// num_units_in_display_tick, time_scale, when timing_info is present.
    pub timing: Option<(u32, u32)>,
    pub operating_points: u8,
    pub seq_level_idx_0: u8,
    pub seq_tier_0: bool,
    pub max_frame_width: u32,
    pub max_frame_height: u32,
    pub bit_depth: u8,
    pub monochrome: bool,
    pub color: Option<ColorDescription>,
    pub full_range: bool,
    pub subsampling_x: bool,
    pub subsampling_y: bool,
    pub chroma_sample_position: u8,
    pub film_grain_params_present: bool,
}

impl SequenceHeader {
    /// Parses a sequence header OBU's payload.
    pub fn parse(payload: &[u8]) -> Result<Self, CodecError> {
        let mut r = BitReader::new(payload, SEQ);
        let seq_profile = r.bits(3)? as u8;
        if seq_profile > 2 {
            return Err(CodecError::BadValue {
                what: SEQ,
                field: "seq_profile",
                value: u64::from(seq_profile),
                expected: "0..2",
            });
        }
        let still_picture = r.bit()?;
        let reduced = r.bit()?;
        let mut timing = None;
        let seq_level_idx_0;
        let mut seq_tier_0 = false;
        let mut operating_points = 1;
        if reduced {
            seq_level_idx_0 = r.bits(5)? as u8;
        } else {
            r.field("timing_info");
            let timing_present = r.bit()?;
            let mut decoder_model_present = false;
            let mut buffer_delay_length = 0;
            if timing_present {
                let num_units = r.bits(32)?;
                let time_scale = r.bits(32)?;
                timing = Some((num_units, time_scale));
                if r.bit()? {
                    uvlc(&mut r)?; // num_ticks_per_picture_minus_1
                }
                r.field("decoder_model_info");
                decoder_model_present = r.bit()?;
                if decoder_model_present {
                    buffer_delay_length = r.bits(5)? + 1;
                    r.bits(32)?; // num_units_in_decoding_tick
                    r.bits(10)?; // two 5-bit lengths
                }
            }
            r.field("operating_points");
            let initial_display_delay_present = r.bit()?;
            operating_points = r.bits(5)? as u8 + 1;
            let mut first = None;
            for _ in 0..operating_points {
                r.bits(12)?; // operating_point_idc
                let level = r.bits(5)? as u8;
                let tier = level > 7 && r.bit()?;
                if decoder_model_present && r.bit()? {
                    r.skip(2 * buffer_delay_length as usize + 1)?;
                }
                if initial_display_delay_present && r.bit()? {
                    r.bits(4)?;
                }
                first.get_or_insert((level, tier));
            }
            // operating_points ≥ 1, so the first is set.
            let (l, t) = first.unwrap_or((0, false));
            seq_level_idx_0 = l;
            seq_tier_0 = t;
        }
        r.field("frame size");
        let w_bits = r.bits(4)? + 1;
        let h_bits = r.bits(4)? + 1;
        let max_frame_width = r.bits(w_bits)? + 1;
        let max_frame_height = r.bits(h_bits)? + 1;
        r.field("sequence tools");
        if !reduced && r.bit()? {
            r.bits(4)?; // delta_frame_id_length_minus_2
            r.bits(3)?; // additional_frame_id_length_minus_1
        }
        r.bits(3)?; // 128x128 superblock, filter intra, intra edge filter
        if !reduced {
            r.bits(4)?; // interintra, masked compound, warped motion, dual filter
            let order_hint = r.bit()?;
            if order_hint {
                r.bits(2)?; // jnt_comp, ref_frame_mvs
            }
            let force_screen_content_tools = if r.bit()? { 2 } else { r.bits(1)? };
            if force_screen_content_tools > 0 && !r.bit()? {
                r.bit()?; // seq_force_integer_mv
            }
            if order_hint {
                r.bits(3)?; // order_hint_bits_minus_1
            }
        }
        r.bits(3)?; // superres, cdef, restoration
        r.field("color_config");
        let high_bitdepth = r.bit()?;
        let bit_depth = if seq_profile == 2 && high_bitdepth {
            if r.bit()? { 12 } else { 10 }
        } else if high_bitdepth {
            10
        } else {
            8
        };
        let monochrome = seq_profile != 1 && r.bit()?;
        let color = if r.bit()? {
            Some(ColorDescription {
                primaries: r.u8()?,
                transfer: r.u8()?,
                matrix: r.u8()?,
            })
        } else {
            None
        };
        let (full_range, subsampling_x, subsampling_y, chroma_sample_position);
        if monochrome {
            full_range = r.bit()?;
            (subsampling_x, subsampling_y, chroma_sample_position) = (true, true, 0);
        } else if color
            == Some(ColorDescription {
                primaries: 1,
                transfer: 13,
                matrix: 0,
            })
        {
            full_range = true;
            (subsampling_x, subsampling_y, chroma_sample_position) = (false, false, 0);
        } else {
            full_range = r.bit()?;
            let (sx, sy) = match seq_profile {
                0 => (true, true),
                1 => (false, false),
                _ if bit_depth == 12 => {
                    let sx = r.bit()?;
                    let sy = sx && r.bit()?;
                    (sx, sy)
                }
                _ => (true, false),
            };
            subsampling_x = sx;
            subsampling_y = sy;
            chroma_sample_position = if sx && sy { r.bits(2)? as u8 } else { 0 };
        }
        if !monochrome {
            r.bit()?; // separate_uv_delta_q
        }
        let film_grain_params_present = r.bit()?;
        Ok(SequenceHeader {
            seq_profile,
            still_picture,
            reduced_still_picture_header: reduced,
            timing,
            operating_points,
            seq_level_idx_0,
            seq_tier_0,
            max_frame_width,
            max_frame_height,
            bit_depth,
            monochrome,
            color,
            full_range,
            subsampling_x,
            subsampling_y,
            chroma_sample_position,
            film_grain_params_present,
        })
    }
}

/// uvlc(): up to 32 leading zeros; more means the maximum value.
fn uvlc(r: &mut BitReader<'_>) -> Result<u64, CodecError> {
    let mut zeros = 0u32;
    while !r.bit()? {
        zeros += 1;
        if zeros >= 32 {
            return Ok(u64::from(u32::MAX));
        }
    }
    Ok(r.bits64(zeros)? + (1u64 << zeros) - 1)
}

/// The first sequence header OBU in a run of OBUs, parsed, with the OBU's bytes.
pub fn find_sequence_header(data: &[u8]) -> Result<Option<(SequenceHeader, &[u8])>, CodecError> {
    for obu in obus(data)? {
        if obu.obu_type == OBU_SEQUENCE_HEADER {
            return Ok(Some((SequenceHeader::parse(obu.payload)?, obu.bytes)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libaom's av1C from testdata/av1_opus.mkv (ffprobe -show_data).
    const AV1C: [u8; 16] = [
        0x81, 0x00, 0x0C, 0x00, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x03, 0xB4, 0xFF, 0x73, 0x6B, 0xE4,
        0x01,
    ];

    #[test]
    fn libaom_record() {
        let c = Av1Config::parse(&AV1C).unwrap();
        assert_eq!(c.seq_profile, 0);
        assert_eq!(c.seq_level_idx_0, 0);
        assert!(!c.seq_tier_0);
        assert_eq!(c.bit_depth(), 8);
        assert!(c.chroma_subsampling_x && c.chroma_subsampling_y);
        assert_eq!(c.codec_string(), "av01.0.00M.08");
        assert_eq!(c.to_bytes(), &AV1C[..]);
        let (seq, obu) = find_sequence_header(&c.config_obus).unwrap().unwrap();
        assert_eq!(obu.len(), 12);
        assert_eq!((seq.max_frame_width, seq.max_frame_height), (160, 120));
        assert_eq!(seq.bit_depth, 8);
        assert_eq!(seq.seq_level_idx_0, 0);
        assert!(!seq.full_range);
        assert_eq!(c.codec_string_long(&seq), "av01.0.00M.08.0.110.01.01.01.0");
        assert_eq!(Av1Config::from_sequence_header(&seq, obu), c);
    }

    #[test]
    fn truncations_and_refusals() {
        for n in 0..4 {
            assert!(Av1Config::parse(&AV1C[..n]).is_err());
        }
        let payload = &AV1C[6..];
        for n in 0..payload.len() {
            assert!(SequenceHeader::parse(&payload[..n]).is_err(), "{n}");
        }
        let mut bad = AV1C;
        bad[0] = 0x01;
        assert!(Av1Config::parse(&bad).is_err());
        // OBU size past the end.
        assert!(obus(&[0x0A, 0x20, 0]).is_err());
        // A size field with the continuation bit forever.
        assert!(obus(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        // OBU without a size field runs to the end.
        let o = obus(&[0x10, 0x00]).unwrap();
        assert_eq!(
            (o[0].obu_type, o[0].payload),
            (OBU_TEMPORAL_DELIMITER, &[0u8][..])
        );
    }
}
