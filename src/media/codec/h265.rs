//! H.265: the hvcC record (HEVCDecoderConfigurationRecord, ISO/IEC 14496-15 §8.3.3.1),
//! the start of the sequence parameter set (ITU-T H.265 §7.3.2.2: profile_tier_level,
//! picture size and conformance window, bit depths, sub-layer ordering info), the codec
//! string of ISO/IEC 14496-15 Annex E.3, and an hvcC built from raw VPS/SPS/PPS.
//!
//! The SPS is read up to sps_max_latency_increase_plus1 and no further: what follows
//! (scaling lists, short-term reference picture sets, VUI) is not needed for the sample
//! entry or the codec string, and HEVC's VUI timing is rarely present in camera streams.

use std::fmt::Write as _;

use bytes::Bytes;

use super::CodecError;
use super::bits::{BitReader, ByteReader, nal_to_rbsp};
use super::h264::{put_nal_list, read_nal_list};

pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;
pub const NAL_PREFIX_SEI: u8 = 39;
pub const NAL_SUFFIX_SEI: u8 = 40;

const HVCC: &str = "H.265 hvcC";
const SPS: &str = "H.265 SPS";

/// The NAL unit type of an H.265 NAL unit (with its 2-byte header).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3F)
}

/// The general profile, tier and level, as in profile_tier_level() and the hvcC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProfileTierLevel {
    pub profile_space: u8,
    pub tier: bool,
    pub profile_idc: u8,
    /// general_profile_compatibility_flag[0..32], flag 0 in the most significant bit
    /// (bitstream order).
    pub compatibility_flags: u32,
    /// The 48 bits from general_progressive_source_flag on, in the low 48 bits.
    pub constraint_flags: u64,
    pub level_idc: u8,
}

impl ProfileTierLevel {
    /// The codec string `hvc1.<space><profile>.<compat>.<tier><level>[.<constraint>...]`
    /// (ISO/IEC 14496-15 E.3): the profile space as a letter (none for 0, A–C for 1–3),
    /// the compatibility flags bit-reversed in hex without leading zeros, L or H and the
    /// level in decimal, then each constraint byte in hex, trailing zero bytes dropped.
    /// Main profile, level 3.1, progressive: `hvc1.1.6.L93.B0`.
    pub fn codec_string(&self, sample_entry: &str) -> String {
        let mut s = String::with_capacity(32);
        s.push_str(sample_entry);
        s.push('.');
        if (1..=3).contains(&self.profile_space) {
            s.push(char::from(b'A' + self.profile_space - 1));
        }
        let _ = write!(
            s,
            "{}.{:X}.{}{}",
            self.profile_idc,
            self.compatibility_flags.reverse_bits(),
            if self.tier { 'H' } else { 'L' },
            self.level_idc
        );
        let bytes = self.constraint_flags.to_be_bytes();
        let constraint = &bytes[2..];
        let used = constraint
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        for b in &constraint[..used] {
            let _ = write!(s, ".{b:02X}");
        }
        s
    }
}

/// One NAL unit array of an hvcC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HevcNalArray {
    /// array_completeness: all NAL units of this type are in the record, none in-band.
    /// `hvc1` requires it for parameter sets; writers (ffmpeg's Matroska muxer among them)
    /// often leave it 0.
    pub complete: bool,
    pub nal_unit_type: u8,
    pub nalus: Vec<Bytes>,
}

/// A parsed hvcC. [`HevcDecoderConfig::to_bytes`] writes it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HevcDecoderConfig {
    pub ptl: ProfileTierLevel,
    pub min_spatial_segmentation_idc: u16,
    pub parallelism_type: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub avg_frame_rate: u16,
    pub constant_frame_rate: u8,
    pub num_temporal_layers: u8,
    pub temporal_id_nested: bool,
    /// Bytes in each NAL unit length prefix of the samples: 1, 2 or 4.
    pub nal_length_size: u8,
    pub arrays: Vec<HevcNalArray>,
}

impl HevcDecoderConfig {
    /// Parses an hvcC. configurationVersion 0 (written by some early muxers) is accepted
    /// like 1; [`Self::to_bytes`] always writes 1.
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(data, HVCC);
        let version = r.u8("configurationVersion")?;
        if version > 1 {
            return Err(CodecError::BadValue {
                what: HVCC,
                field: "configurationVersion",
                value: u64::from(version),
                expected: "1",
            });
        }
        let b = r.u8("general_profile_idc")?;
        let compatibility_flags = r.u32("general_profile_compatibility_flags")?;
        let c = r.bytes(6, "general_constraint_indicator_flags")?;
        let constraint_flags = c.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
        let level_idc = r.u8("general_level_idc")?;
        let ptl = ProfileTierLevel {
            profile_space: b >> 6,
            tier: b & 0x20 != 0,
            profile_idc: b & 0x1F,
            compatibility_flags,
            constraint_flags,
            level_idc,
        };
        let min_spatial_segmentation_idc = r.u16("min_spatial_segmentation_idc")? & 0x0FFF;
        let parallelism_type = r.u8("parallelismType")? & 0x03;
        let chroma_format_idc = r.u8("chromaFormat")? & 0x03;
        let bit_depth_luma = (r.u8("bitDepthLumaMinus8")? & 0x07) + 8;
        let bit_depth_chroma = (r.u8("bitDepthChromaMinus8")? & 0x07) + 8;
        let avg_frame_rate = r.u16("avgFrameRate")?;
        let b = r.u8("lengthSizeMinusOne")?;
        let nal_length_size = (b & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(CodecError::BadValue {
                what: HVCC,
                field: "lengthSizeMinusOne",
                value: 2,
                expected: "0, 1 or 3",
            });
        }
        let n_arrays = r.u8("numOfArrays")?;
        let mut arrays = Vec::with_capacity(usize::from(n_arrays).min(r.remaining() / 3));
        for _ in 0..n_arrays {
            let t = r.u8("NAL_unit_type")?;
            let n = r.u16("numNalus")?;
            let nalus = read_nal_list(&mut r, usize::from(n), "nalUnitLength", "NAL unit")?;
            arrays.push(HevcNalArray {
                complete: t & 0x80 != 0,
                nal_unit_type: t & 0x3F,
                nalus,
            });
        }
        Ok(HevcDecoderConfig {
            ptl,
            min_spatial_segmentation_idc,
            parallelism_type,
            chroma_format_idc,
            bit_depth_luma,
            bit_depth_chroma,
            avg_frame_rate,
            constant_frame_rate: b >> 6,
            num_temporal_layers: (b >> 3) & 0x07,
            temporal_id_nested: b & 0x04 != 0,
            nal_length_size,
            arrays,
        })
    }

    /// NAL units of one type across the arrays.
    pub fn nalus(&self, nal_unit_type: u8) -> impl Iterator<Item = &Bytes> {
        self.arrays
            .iter()
            .filter(move |a| a.nal_unit_type == nal_unit_type)
            .flat_map(|a| a.nalus.iter())
    }

    /// An hvcC for raw VPS, SPS and PPS NAL units (2-byte header included; a leading
    /// Annex B start code is tolerated). The general profile/tier/level, chroma format,
    /// bit depths and temporal layering come from the first SPS; the arrays are marked
    /// complete, as `hvc1` requires; NAL unit lengths in the samples are 4 bytes.
    /// min_spatial_segmentation_idc and parallelismType are 0 ("unknown"), which every
    /// decoder accepts.
    pub fn from_parameter_sets(
        vps: &[&[u8]],
        sps: &[&[u8]],
        pps: &[&[u8]],
    ) -> Result<Self, CodecError> {
        let what = "H.265 parameter sets";
        let mut arrays = Vec::new();
        for (list, want, name) in [
            (vps, NAL_VPS, "VPS"),
            (sps, NAL_SPS, "SPS"),
            (pps, NAL_PPS, "PPS"),
        ] {
            if list.is_empty() {
                return Err(CodecError::Missing {
                    codec: "H.265",
                    expected: match want {
                        NAL_VPS => "at least one VPS",
                        NAL_SPS => "at least one SPS",
                        _ => "at least one PPS",
                    },
                });
            }
            let mut nalus = Vec::with_capacity(list.len());
            for n in list {
                let n = n
                    .strip_prefix(&[0, 0, 0, 1])
                    .or_else(|| n.strip_prefix(&[0, 0, 1]))
                    .unwrap_or(n);
                if nal_type(n) != Some(want) || n.len() < 2 {
                    return Err(CodecError::Invalid {
                        what,
                        reason: format!(
                            "the {name} given is NAL unit type {}, not {want}",
                            nal_type(n).unwrap_or(0)
                        ),
                    });
                }
                if n.len() > usize::from(u16::MAX) {
                    return Err(CodecError::Invalid {
                        what,
                        reason: format!("a {name} of {} bytes does not fit an hvcC", n.len()),
                    });
                }
                nalus.push(Bytes::copy_from_slice(n));
            }
            if nalus.len() > usize::from(u16::MAX) {
                return Err(CodecError::Invalid {
                    what,
                    reason: format!("{} {name} NAL units do not fit an hvcC", nalus.len()),
                });
            }
            arrays.push(HevcNalArray {
                complete: true,
                nal_unit_type: want,
                nalus,
            });
        }
        let first_sps = &arrays[1].nalus[0];
        let s = HevcSps::parse(first_sps)?;
        Ok(HevcDecoderConfig {
            ptl: s.ptl,
            min_spatial_segmentation_idc: 0,
            parallelism_type: 0,
            chroma_format_idc: s.chroma_format_idc as u8,
            bit_depth_luma: s.bit_depth_luma,
            bit_depth_chroma: s.bit_depth_chroma,
            avg_frame_rate: 0,
            constant_frame_rate: 0,
            num_temporal_layers: s.max_sub_layers,
            temporal_id_nested: s.temporal_id_nesting,
            nal_length_size: 4,
            arrays,
        })
    }

    /// The record's bytes (the body of an `hvcC` box).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(
            23 + self
                .arrays
                .iter()
                .flat_map(|a| a.nalus.iter().map(|n| n.len() + 2))
                .sum::<usize>()
                + self.arrays.len() * 3,
        );
        let p = &self.ptl;
        out.push(1);
        out.push((p.profile_space & 3) << 6 | u8::from(p.tier) << 5 | (p.profile_idc & 0x1F));
        out.extend_from_slice(&p.compatibility_flags.to_be_bytes());
        out.extend_from_slice(&p.constraint_flags.to_be_bytes()[2..]);
        out.push(p.level_idc);
        out.extend_from_slice(
            &(0xF000 | (self.min_spatial_segmentation_idc & 0x0FFF)).to_be_bytes(),
        );
        out.push(0xFC | (self.parallelism_type & 3));
        out.push(0xFC | (self.chroma_format_idc & 3));
        out.push(0xF8 | (self.bit_depth_luma.saturating_sub(8) & 7));
        out.push(0xF8 | (self.bit_depth_chroma.saturating_sub(8) & 7));
        out.extend_from_slice(&self.avg_frame_rate.to_be_bytes());
        out.push(
            (self.constant_frame_rate & 3) << 6
                | (self.num_temporal_layers & 7) << 3
                | u8::from(self.temporal_id_nested) << 2
                | (self.nal_length_size.clamp(1, 4) - 1),
        );
        out.push(self.arrays.len().min(255) as u8);
        for a in self.arrays.iter().take(255) {
            out.push(u8::from(a.complete) << 7 | (a.nal_unit_type & 0x3F));
            out.extend_from_slice(&(a.nalus.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
            put_nal_list(&mut out, a.nalus.iter().take(usize::from(u16::MAX)));
        }
        Bytes::from(out)
    }

    /// A copy with every parameter-set array (VPS, SPS, PPS) marked complete, for an `hvc1`
    /// sample entry.
    pub fn with_complete_parameter_sets(&self) -> Self {
        let mut c = self.clone();
        for a in &mut c.arrays {
            if matches!(a.nal_unit_type, NAL_VPS | NAL_SPS | NAL_PPS) {
                a.complete = true;
            }
        }
        c
    }
}

/// An hvcC's bytes for raw VPS, SPS and PPS NAL units; see
/// [`HevcDecoderConfig::from_parameter_sets`].
pub fn build_hvcc(vps: &[&[u8]], sps: &[&[u8]], pps: &[&[u8]]) -> Result<Bytes, CodecError> {
    Ok(HevcDecoderConfig::from_parameter_sets(vps, sps, pps)?.to_bytes())
}

/// What the start of an H.265 SPS says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HevcSps {
    pub vps_id: u8,
    /// sps_max_sub_layers_minus1 + 1.
    pub max_sub_layers: u8,
    pub temporal_id_nesting: bool,
    pub ptl: ProfileTierLevel,
    pub sps_id: u32,
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    /// Coded size in luma samples.
    pub pic_width: u32,
    pub pic_height: u32,
    /// Conformance window offsets as coded (in chroma sample units).
    pub conf_win: [u32; 4],
    /// Size after the conformance window, in luma samples.
    pub width: u32,
    pub height: u32,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// For the highest sub-layer: sps_max_dec_pic_buffering_minus1 + 1,
    /// sps_max_num_reorder_pics and sps_max_latency_increase_plus1.
    pub max_dec_pic_buffering: u32,
    pub max_num_reorder_pics: u32,
    pub max_latency_increase_plus1: u32,
}

/// The largest dimension accepted, in luma samples (level 6.2 allows 8444 × 8444 by the
/// 8 × sqrt(MaxLumaPs) rule; twice that still refuses a corrupt 2^32).
const MAX_DIMENSION: u32 = 16888;

impl HevcSps {
    /// Parses an SPS NAL unit (2-byte header included, emulation prevention as sent).
    pub fn parse(nal: &[u8]) -> Result<Self, CodecError> {
        let rbsp = nal_to_rbsp(nal);
        let mut r = BitReader::new(&rbsp, SPS);
        r.field("nal_unit_header");
        let header = r.bits(16)?;
        let t = ((header >> 9) & 0x3F) as u8;
        if header & 0x8000 != 0 || t != NAL_SPS {
            return Err(CodecError::Invalid {
                what: SPS,
                reason: format!("NAL header 0x{header:04X} is not an SPS (type 33)"),
            });
        }
        r.field("seq_parameter_set_rbsp");
        let vps_id = r.bits(4)? as u8;
        let max_sub_layers_minus1 = r.bits(3)? as u8;
        if max_sub_layers_minus1 > 6 {
            return Err(CodecError::BadValue {
                what: SPS,
                field: "sps_max_sub_layers_minus1",
                value: u64::from(max_sub_layers_minus1),
                expected: "at most 6",
            });
        }
        let temporal_id_nesting = r.bit()?;
        let ptl = parse_profile_tier_level(&mut r, max_sub_layers_minus1)?;
        r.field("seq_parameter_set_rbsp");
        let sps_id = r.ue_max("sps_seq_parameter_set_id", 15)?;
        let chroma_format_idc = r.ue_max("chroma_format_idc", 3)?;
        let separate_colour_plane = chroma_format_idc == 3 && r.bit()?;
        let pic_width = r.ue()?;
        let pic_height = r.ue()?;
        if pic_width == 0
            || pic_height == 0
            || pic_width > MAX_DIMENSION
            || pic_height > MAX_DIMENSION
        {
            return Err(CodecError::Invalid {
                what: SPS,
                reason: format!(
                    "picture size {pic_width}x{pic_height} is outside 1..={MAX_DIMENSION}"
                ),
            });
        }
        let mut conf_win = [0u32; 4];
        if r.bit()? {
            r.field("conformance_window");
            for v in &mut conf_win {
                *v = r.ue()?;
            }
            r.field("seq_parameter_set_rbsp");
        }
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (sub_w, sub_h): (u64, u64) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let cut_w = (u64::from(conf_win[0]) + u64::from(conf_win[1])) * sub_w;
        let cut_h = (u64::from(conf_win[2]) + u64::from(conf_win[3])) * sub_h;
        if cut_w >= u64::from(pic_width) || cut_h >= u64::from(pic_height) {
            return Err(CodecError::Invalid {
                what: SPS,
                reason: format!(
                    "the conformance window {conf_win:?} removes the whole {pic_width}x{pic_height} picture"
                ),
            });
        }
        let bit_depth_luma = r.ue_max("bit_depth_luma_minus8", 8)? as u8 + 8;
        let bit_depth_chroma = r.ue_max("bit_depth_chroma_minus8", 8)? as u8 + 8;
        r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
        r.field("sub_layer_ordering_info");
        let all_layers = r.bit()?;
        let first = if all_layers { 0 } else { max_sub_layers_minus1 };
        let (mut dpb, mut reorder, mut latency) = (0, 0, 0);
        for _ in first..=max_sub_layers_minus1 {
            dpb = r.ue_max("sps_max_dec_pic_buffering_minus1", 15)? + 1;
            reorder = r.ue_max("sps_max_num_reorder_pics", 15)?;
            latency = r.ue()?;
        }
        Ok(HevcSps {
            vps_id,
            max_sub_layers: max_sub_layers_minus1 + 1,
            temporal_id_nesting,
            ptl,
            sps_id,
            chroma_format_idc,
            separate_colour_plane,
            pic_width,
            pic_height,
            conf_win,
            // Bounded by pic_width/pic_height above.
            width: pic_width - cut_w as u32,
            height: pic_height - cut_h as u32,
            bit_depth_luma,
            bit_depth_chroma,
            max_dec_pic_buffering: dpb,
            max_num_reorder_pics: reorder,
            max_latency_increase_plus1: latency,
        })
    }
}

/// profile_tier_level(1, max_sub_layers_minus1): the general part, sub-layers skipped.
fn parse_profile_tier_level(
    r: &mut BitReader<'_>,
    max_sub_layers_minus1: u8,
) -> Result<ProfileTierLevel, CodecError> {
    r.field("profile_tier_level");
    let profile_space = r.bits(2)? as u8;
    let tier = r.bit()?;
    let profile_idc = r.bits(5)? as u8;
    let compatibility_flags = r.bits(32)?;
    let constraint_flags = r.bits64(48)?;
    let level_idc = r.u8()?;
    let mut sub_profile = [false; 8];
    let mut sub_level = [false; 8];
    let n = usize::from(max_sub_layers_minus1);
    for i in 0..n {
        sub_profile[i] = r.bit()?;
        sub_level[i] = r.bit()?;
    }
    if n > 0 {
        r.skip(2 * (8 - n))?; // reserved_zero_2bits
    }
    for i in 0..n {
        if sub_profile[i] {
            r.skip(88)?;
        }
        if sub_level[i] {
            r.skip(8)?;
        }
    }
    Ok(ProfileTierLevel {
        profile_space,
        tier,
        profile_idc,
        compatibility_flags,
        constraint_flags,
        level_idc,
    })
}

#[cfg(test)]
mod tests {
    use super::super::bits::SpsWriter;
    use super::*;

    fn main_sps(sub_layers_minus1: u8, conf: Option<[u32; 4]>, w: u32, h: u32) -> Vec<u8> {
        let mut s = SpsWriter::default();
        s.u(16, 0x4201); // type 33
        s.u(4, 0).u(3, u32::from(sub_layers_minus1)).u(1, 1);
        // general PTL: Main, compat flags 1 and 2, progressive + frame only, level 3.1
        s.u(2, 0).u(1, 0).u(5, 1).u(32, 0x6000_0000);
        s.u(16, 0x9000).u(32, 0).u(8, 93);
        for i in 0..sub_layers_minus1 {
            s.u(1, u32::from(i == 0)).u(1, 1);
        }
        if sub_layers_minus1 > 0 {
            s.u(2 * (8 - u32::from(sub_layers_minus1)), 0);
        }
        for i in 0..sub_layers_minus1 {
            if i == 0 {
                s.u(32, 0x0160_0000).u(32, 0).u(24, 0);
            }
            s.u(8, 90);
        }
        s.ue(0).ue(1).ue(w).ue(h);
        match conf {
            Some([l, r, t, b]) => {
                s.u(1, 1).ue(l).ue(r).ue(t).ue(b);
            }
            None => {
                s.u(1, 0);
            }
        }
        s.ue(2).ue(2).ue(4); // 10-bit, poc lsb
        s.u(1, 1);
        for i in 0..=sub_layers_minus1 {
            s.ue(u32::from(i) + 2).ue(u32::from(i)).ue(0);
        }
        s.nal()
    }

    #[test]
    fn sps_with_sub_layers_and_window() {
        let nal = main_sps(2, Some([0, 0, 0, 4]), 1920, 1088);
        let sps = HevcSps::parse(&nal).unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.max_sub_layers, 3);
        assert_eq!(sps.bit_depth_luma, 10);
        assert_eq!(sps.max_num_reorder_pics, 2);
        assert_eq!(sps.max_dec_pic_buffering, 5);
        assert_eq!(sps.ptl.codec_string("hvc1"), "hvc1.1.6.L93.90");
        let sps0 = HevcSps::parse(&main_sps(0, None, 640, 360)).unwrap();
        assert_eq!((sps0.width, sps0.height), (640, 360));
        assert_eq!(sps0.ptl, sps.ptl);
    }

    #[test]
    fn codec_strings() {
        let mut p = ProfileTierLevel {
            profile_space: 0,
            tier: false,
            profile_idc: 1,
            compatibility_flags: 0x6000_0000,
            constraint_flags: 0xB000_0000_0000,
            level_idc: 93,
        };
        assert_eq!(p.codec_string("hvc1"), "hvc1.1.6.L93.B0");
        // Main 10, high tier, level 5.1, no constraint bits at all.
        p.profile_idc = 2;
        p.compatibility_flags = 0x2000_0000;
        p.tier = true;
        p.level_idc = 153;
        p.constraint_flags = 0;
        assert_eq!(p.codec_string("hvc1"), "hvc1.2.4.H153");
        // Profile space 1, a constraint byte in the middle, a leading-zero byte.
        p.profile_space = 1;
        p.constraint_flags = 0x0000_0800_0000;
        assert_eq!(p.codec_string("hev1"), "hev1.A2.4.H153.00.00.08");
    }

    #[test]
    fn hvcc_round_trip_and_truncation() {
        let vps = [0x40, 0x01, 0x0C, 0x01, 0xFF, 0xFF];
        let sps = main_sps(0, None, 160, 120);
        let pps = [0x44, 0x01, 0xC1, 0x72, 0xB4];
        let hvcc = build_hvcc(&[&vps], &[&sps], &[&pps]).unwrap();
        let c = HevcDecoderConfig::parse(&hvcc).unwrap();
        assert_eq!(c.ptl.level_idc, 93);
        assert_eq!(c.bit_depth_luma, 10);
        assert_eq!(c.nal_length_size, 4);
        assert!(c.arrays.iter().all(|a| a.complete));
        assert_eq!(c.nalus(NAL_SPS).next().map(|b| &b[..]), Some(&sps[..]));
        assert_eq!(c.to_bytes(), hvcc);
        for n in 0..hvcc.len() {
            assert!(HevcDecoderConfig::parse(&hvcc[..n]).is_err(), "{n}");
        }
        assert!(build_hvcc(&[], &[&sps], &[&pps]).is_err());
        assert!(build_hvcc(&[&vps], &[&pps], &[&pps]).is_err());
    }

    #[test]
    fn sps_truncated_at_every_length() {
        let sps = main_sps(3, Some([1, 1, 1, 1]), 1280, 720);
        assert!(HevcSps::parse(&sps).is_ok());
        for n in 0..sps.len() - 1 {
            assert!(HevcSps::parse(&sps[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn bad_sps_values() {
        let e = HevcSps::parse(&main_sps(0, Some([100, 0, 0, 0]), 160, 120)).unwrap_err();
        assert!(e.to_string().contains("removes the whole"), "{e}");
        let e = HevcSps::parse(&main_sps(0, None, 0, 120)).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        let e = HevcSps::parse(&[0x40, 0x01, 0x0C]).unwrap_err();
        assert!(e.to_string().contains("not an SPS"), "{e}");
    }
}
