//! H.264: the avcC record (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 §5.3.3.1),
//! the sequence parameter set (ITU-T H.264 §7.3.2.1.1 with the Annex E VUI), the RFC 6381
//! codec string, and an avcC built from raw parameter sets (what RTSP cameras give).
//!
//! The SPS parser reads everything up to and including the VUI's bitstream restriction:
//! high-profile chroma format and bit depths, scaling lists (skipped value by value, they
//! cannot be jumped over), picture order count type 1's offset cycle, frame cropping and
//! the VUI (aspect ratio, colour, timing, HRD parameters, reorder depth). It does not read
//! the SPS extension or subset SPS (SVC/MVC) NAL units.

use bytes::Bytes;

use super::CodecError;
use super::bits::{BitReader, ByteReader, nal_to_rbsp};

pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_SPS_EXT: u8 = 13;

const AVCC: &str = "H.264 avcC";
const SPS: &str = "H.264 SPS";

/// The NAL unit type of an H.264 NAL unit (with its header byte).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1F)
}

/// The high-profile tail of an avcC (profile_idc 100, 110, 122, 144).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcHighExtension {
    pub chroma_format: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub sps_ext: Vec<Bytes>,
}

/// A parsed avcC. [`AvcDecoderConfig::to_bytes`] writes it back byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcDecoderConfig {
    pub profile_indication: u8,
    pub profile_compatibility: u8,
    pub level_indication: u8,
    /// Bytes in each NAL unit length prefix of the samples: 1, 2 or 4.
    pub nal_length_size: u8,
    /// SPS NAL units, header byte included.
    pub sps: Vec<Bytes>,
    /// PPS NAL units, header byte included.
    pub pps: Vec<Bytes>,
    /// Present when the record carries the high-profile fields. Writers before 2010 left
    /// them out even for High profile, so their absence is accepted.
    pub high: Option<AvcHighExtension>,
}

fn profile_has_avcc_ext(profile_idc: u8) -> bool {
    matches!(profile_idc, 100 | 110 | 122 | 144)
}

impl AvcDecoderConfig {
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(data, AVCC);
        let version = r.u8("configurationVersion")?;
        if version != 1 {
            return Err(CodecError::BadValue {
                what: AVCC,
                field: "configurationVersion",
                value: u64::from(version),
                expected: "1",
            });
        }
        let profile_indication = r.u8("AVCProfileIndication")?;
        let profile_compatibility = r.u8("profile_compatibility")?;
        let level_indication = r.u8("AVCLevelIndication")?;
        let nal_length_size = (r.u8("lengthSizeMinusOne")? & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(CodecError::BadValue {
                what: AVCC,
                field: "lengthSizeMinusOne",
                value: 2,
                expected: "0, 1 or 3",
            });
        }
        let n_sps = r.u8("numOfSequenceParameterSets")? & 0x1F;
        let sps = read_nal_list(&mut r, usize::from(n_sps), "SPS length", "SPS")?;
        let n_pps = r.u8("numOfPictureParameterSets")?;
        let pps = read_nal_list(&mut r, usize::from(n_pps), "PPS length", "PPS")?;
        for (list, want, name) in [(&sps, NAL_SPS, "SPS"), (&pps, NAL_PPS, "PPS")] {
            if let Some(bad) = list.iter().find(|n| nal_type(n) != Some(want)) {
                return Err(CodecError::Invalid {
                    what: AVCC,
                    reason: format!(
                        "a {name} entry holds NAL unit type {} instead of {want}",
                        nal_type(bad).unwrap_or(0)
                    ),
                });
            }
        }
        // The high-profile fields are optional in practice; only read them when all four
        // fixed bytes are there.
        let high = if profile_has_avcc_ext(profile_indication) && r.remaining() >= 4 {
            let chroma_format = r.u8("chroma_format")? & 0x03;
            let bit_depth_luma = (r.u8("bit_depth_luma_minus8")? & 0x07) + 8;
            let bit_depth_chroma = (r.u8("bit_depth_chroma_minus8")? & 0x07) + 8;
            let n_ext = r.u8("numOfSequenceParameterSetExt")?;
            let sps_ext = read_nal_list(&mut r, usize::from(n_ext), "SPS ext length", "SPS ext")?;
            Some(AvcHighExtension {
                chroma_format,
                bit_depth_luma,
                bit_depth_chroma,
                sps_ext,
            })
        } else {
            None
        };
        Ok(AvcDecoderConfig {
            profile_indication,
            profile_compatibility,
            level_indication,
            nal_length_size,
            sps,
            pps,
            high,
        })
    }

    /// An avcC for raw SPS and PPS NAL units (header byte included; a leading Annex B start
    /// code is tolerated). Profile, compatibility and level come from the first SPS; the
    /// high-profile fields are filled from it when its profile needs them; NAL unit
    /// lengths in the samples are 4 bytes.
    pub fn from_parameter_sets(sps: &[&[u8]], pps: &[&[u8]]) -> Result<Self, CodecError> {
        let what = "H.264 parameter sets";
        let sps: Vec<Bytes> = sps
            .iter()
            .map(|n| Bytes::copy_from_slice(strip_start_code(n)))
            .collect();
        let pps: Vec<Bytes> = pps
            .iter()
            .map(|n| Bytes::copy_from_slice(strip_start_code(n)))
            .collect();
        let first = sps.first().ok_or(CodecError::Missing {
            codec: "H.264",
            expected: "at least one SPS",
        })?;
        if pps.is_empty() {
            return Err(CodecError::Missing {
                codec: "H.264",
                expected: "at least one PPS",
            });
        }
        if sps.len() > 31 || pps.len() > 255 {
            return Err(CodecError::Invalid {
                what,
                reason: format!(
                    "{} SPS and {} PPS; an avcC holds at most 31 and 255",
                    sps.len(),
                    pps.len()
                ),
            });
        }
        for (list, want, name) in [(&sps, NAL_SPS, "SPS"), (&pps, NAL_PPS, "PPS")] {
            for n in list.iter() {
                if nal_type(n) != Some(want) {
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
                        reason: format!("a {name} of {} bytes does not fit an avcC", n.len()),
                    });
                }
            }
        }
        let parsed = AvcSps::parse(first)?;
        let high = profile_has_avcc_ext(parsed.profile_idc).then(|| AvcHighExtension {
            chroma_format: parsed.chroma_format_idc as u8,
            bit_depth_luma: parsed.bit_depth_luma,
            bit_depth_chroma: parsed.bit_depth_chroma,
            sps_ext: Vec::new(),
        });
        Ok(AvcDecoderConfig {
            profile_indication: parsed.profile_idc,
            profile_compatibility: parsed.constraint_flags,
            level_indication: parsed.level_idc,
            nal_length_size: 4,
            sps,
            pps,
            high,
        })
    }

    /// The record's bytes (the body of an `avcC` box).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(
            16 + self
                .sps
                .iter()
                .chain(&self.pps)
                .map(|n| n.len() + 2)
                .sum::<usize>(),
        );
        out.extend_from_slice(&[
            1,
            self.profile_indication,
            self.profile_compatibility,
            self.level_indication,
            0xFC | (self.nal_length_size.clamp(1, 4) - 1),
            0xE0 | (self.sps.len().min(31) as u8),
        ]);
        put_nal_list(&mut out, self.sps.iter().take(31));
        out.push(self.pps.len().min(255) as u8);
        put_nal_list(&mut out, self.pps.iter().take(255));
        if let Some(h) = &self.high {
            out.push(0xFC | (h.chroma_format & 3));
            out.push(0xF8 | (h.bit_depth_luma.saturating_sub(8) & 7));
            out.push(0xF8 | (h.bit_depth_chroma.saturating_sub(8) & 7));
            out.push(h.sps_ext.len().min(255) as u8);
            put_nal_list(&mut out, h.sps_ext.iter().take(255));
        }
        Bytes::from(out)
    }
}

/// An avcC's bytes for raw SPS and PPS NAL units; see
/// [`AvcDecoderConfig::from_parameter_sets`].
pub fn build_avcc(sps: &[&[u8]], pps: &[&[u8]]) -> Result<Bytes, CodecError> {
    Ok(AvcDecoderConfig::from_parameter_sets(sps, pps)?.to_bytes())
}

fn strip_start_code(nal: &[u8]) -> &[u8] {
    nal.strip_prefix(&[0, 0, 0, 1])
        .or_else(|| nal.strip_prefix(&[0, 0, 1]))
        .unwrap_or(nal)
}

pub(super) fn read_nal_list(
    r: &mut ByteReader<'_>,
    n: usize,
    len_field: &'static str,
    field: &'static str,
) -> Result<Vec<Bytes>, CodecError> {
    let mut out = Vec::with_capacity(n.min(r.remaining() / 2));
    for _ in 0..n {
        let len = r.u16(len_field)?;
        out.push(Bytes::copy_from_slice(r.bytes(usize::from(len), field)?));
    }
    Ok(out)
}

pub(super) fn put_nal_list<'a>(out: &mut Vec<u8>, nals: impl Iterator<Item = &'a Bytes>) {
    for n in nals {
        let n = &n[..n.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(n.len() as u16).to_be_bytes());
        out.extend_from_slice(n);
    }
}

/// Frame cropping offsets as coded, in crop units (2 luma samples for 4:2:0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crop {
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
}

/// colour_primaries, transfer_characteristics, matrix_coefficients (ITU-T H.273 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColourDescription {
    pub primaries: u8,
    pub transfer: u8,
    pub matrix: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub num_units_in_tick: u32,
    pub time_scale: u32,
    pub fixed_frame_rate: bool,
}

/// The parts of vui_parameters() a muxer or player uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AvcVui {
    /// Sample (pixel) aspect ratio, when signalled and not "unspecified".
    pub sample_aspect_ratio: Option<(u16, u16)>,
    pub video_full_range: Option<bool>,
    pub colour: Option<ColourDescription>,
    pub timing: Option<Timing>,
    /// From bitstream_restriction: how many frames may precede any frame in decoding
    /// order and follow it in output order — the B-frame delay a muxer must allow for.
    pub max_num_reorder_frames: Option<u32>,
    pub max_dec_frame_buffering: Option<u32>,
}

/// A parsed sequence parameter set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcSps {
    pub profile_idc: u8,
    /// constraint_set0..5 flags and the two reserved bits, as the byte after profile_idc.
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub seq_parameter_set_id: u32,
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub scaling_matrix_present: bool,
    pub pic_order_cnt_type: u32,
    pub max_num_ref_frames: u32,
    pub frame_mbs_only: bool,
    pub pic_width_in_mbs: u32,
    /// FrameHeightInMbs (already doubled for field coding).
    pub frame_height_in_mbs: u32,
    pub crop: Crop,
    /// Picture size after cropping, in luma samples.
    pub width: u32,
    pub height: u32,
    pub vui: Option<AvcVui>,
    /// Why a VUI that was signalled could not be read. The VUI is the last thing in the
    /// SPS and cameras send truncated ones; the picture size does not depend on it, so the
    /// SPS is still usable and the VUI counts as absent.
    pub vui_error: Option<CodecError>,
}

/// The largest picture dimension accepted, in luma samples (H.264 level 6.2 allows
/// 8192 × 4320; twice that leaves room without letting a corrupt SPS claim 2^32).
const MAX_DIMENSION: u64 = 16384;

impl AvcSps {
    /// Parses an SPS NAL unit (header byte included, emulation prevention bytes as sent).
    pub fn parse(nal: &[u8]) -> Result<Self, CodecError> {
        let rbsp = nal_to_rbsp(nal);
        let mut r = BitReader::new(&rbsp, SPS);
        r.field("nal_unit_header");
        let header = r.u8()?;
        if header & 0x80 != 0 || header & 0x1F != NAL_SPS {
            return Err(CodecError::Invalid {
                what: SPS,
                reason: format!("NAL header 0x{header:02X} is not an SPS (type 7)"),
            });
        }
        r.field("profile and level");
        let profile_idc = r.u8()?;
        let constraint_flags = r.u8()?;
        let level_idc = r.u8()?;
        r.field("seq_parameter_set_data");
        let seq_parameter_set_id = r.ue_max("seq_parameter_set_id", 31)?;
        let mut chroma_format_idc = 1;
        let mut separate_colour_plane = false;
        let mut bit_depth_luma = 8;
        let mut bit_depth_chroma = 8;
        let mut scaling_matrix_present = false;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue_max("chroma_format_idc", 3)?;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.bit()?;
            }
            bit_depth_luma = r.ue_max("bit_depth_luma_minus8", 6)? as u8 + 8;
            bit_depth_chroma = r.ue_max("bit_depth_chroma_minus8", 6)? as u8 + 8;
            let _qpprime_y_zero_transform_bypass = r.bit()?;
            scaling_matrix_present = r.bit()?;
            if scaling_matrix_present {
                r.field("seq_scaling_matrix");
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.bit()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
                r.field("seq_parameter_set_data");
            }
        }
        let _log2_max_frame_num_minus4 = r.ue_max("log2_max_frame_num_minus4", 12)?;
        let pic_order_cnt_type = r.ue_max("pic_order_cnt_type", 2)?;
        match pic_order_cnt_type {
            0 => {
                r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
            }
            1 => {
                let _delta_pic_order_always_zero = r.bit()?;
                r.se()?; // offset_for_non_ref_pic
                r.se()?; // offset_for_top_to_bottom_field
                let cycle = r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)?;
                for _ in 0..cycle {
                    r.se()?; // offset_for_ref_frame[i]
                }
            }
            _ => {}
        }
        let max_num_ref_frames = r.ue()?;
        let _gaps_in_frame_num_allowed = r.bit()?;
        let pic_width_in_mbs = u64::from(r.ue()?) + 1;
        let pic_height_in_map_units = u64::from(r.ue()?) + 1;
        let frame_mbs_only = r.bit()?;
        let frame_height_in_mbs = pic_height_in_map_units * if frame_mbs_only { 1 } else { 2 };
        let coded_w = pic_width_in_mbs * 16;
        let coded_h = frame_height_in_mbs * 16;
        if coded_w > MAX_DIMENSION || coded_h > MAX_DIMENSION {
            return Err(CodecError::Invalid {
                what: SPS,
                reason: format!(
                    "coded size {coded_w}x{coded_h} is larger than {MAX_DIMENSION} samples"
                ),
            });
        }
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = r.bit()?;
        }
        let _direct_8x8_inference = r.bit()?;
        let mut crop = Crop::default();
        if r.bit()? {
            r.field("frame_cropping");
            crop = Crop {
                left: r.ue()?,
                right: r.ue()?,
                top: r.ue()?,
                bottom: r.ue()?,
            };
        }
        r.field("vui_parameters_present_flag");
        let vui_present = r.bit()?;

        // Crop units (§7.4.2.1.1, Table 6-1).
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (sub_w, sub_h) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let crop_x = u64::from(crop.left) + u64::from(crop.right);
        let crop_y = u64::from(crop.top) + u64::from(crop.bottom);
        let cut_w = crop_x * sub_w;
        let cut_h = crop_y * sub_h * field_factor;
        if cut_w >= coded_w || cut_h >= coded_h {
            return Err(CodecError::Invalid {
                what: SPS,
                reason: format!(
                    "frame cropping ({} left, {} right, {} top, {} bottom) removes the whole \
                     {coded_w}x{coded_h} picture",
                    crop.left, crop.right, crop.top, crop.bottom
                ),
            });
        }

        let (vui, vui_error) = if vui_present {
            match parse_vui(&mut r) {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e)),
            }
        } else {
            (None, None)
        };
        Ok(AvcSps {
            profile_idc,
            constraint_flags,
            level_idc,
            seq_parameter_set_id,
            chroma_format_idc,
            separate_colour_plane,
            bit_depth_luma,
            bit_depth_chroma,
            scaling_matrix_present,
            pic_order_cnt_type,
            max_num_ref_frames,
            frame_mbs_only,
            // Both bounded by MAX_DIMENSION / 16 above.
            pic_width_in_mbs: pic_width_in_mbs as u32,
            frame_height_in_mbs: frame_height_in_mbs as u32,
            crop,
            width: (coded_w - cut_w) as u32,
            height: (coded_h - cut_h) as u32,
            vui,
            vui_error,
        })
    }

    /// The RFC 6381 codec string `avc1.PPCCLL`: profile_idc, the constraint flags byte and
    /// level_idc in hex. The two reserved bits of the flags byte are written as zero
    /// (the standard requires them to be; Chrome refuses a codec string where they are
    /// not, and no decoder reads them).
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc,
            self.constraint_flags & 0xFC,
            self.level_idc
        )
    }

    /// Frames per second as a fraction (time_scale / (2 × num_units_in_tick)), when the
    /// VUI has timing info.
    pub fn frame_rate(&self) -> Option<(u32, u32)> {
        let t = self.vui.as_ref()?.timing?;
        let den = u64::from(t.num_units_in_tick) * 2;
        if t.time_scale == 0 || den == 0 {
            return None;
        }
        let g = gcd(u64::from(t.time_scale), den);
        let (num, den) = (u64::from(t.time_scale) / g, den / g);
        Some((u32::try_from(num).ok()?, u32::try_from(den).ok()?))
    }

    /// MaxDpbFrames for this level and picture size (§A.3.1, Table A-1), at most 16.
    pub fn max_dpb_frames(&self) -> u32 {
        let level_1b = self.level_idc == 9
            || (self.level_idc == 11
                && self.constraint_flags & 0x10 != 0
                && matches!(self.profile_idc, 66 | 77 | 88));
        let max_dpb_mbs: u64 = if level_1b {
            396
        } else {
            match self.level_idc {
                0..=10 => 396,
                11 => 900,
                12 | 13 | 20 => 2376,
                21 => 4752,
                22 | 30 => 8100,
                31 => 18000,
                32 => 20480,
                40 | 41 => 32768,
                42 => 34816,
                50 => 110400,
                51 | 52 => 184320,
                _ => 696320,
            }
        };
        let frame_mbs = u64::from(self.pic_width_in_mbs) * u64::from(self.frame_height_in_mbs);
        (max_dpb_mbs / frame_mbs.max(1)).min(16) as u32
    }

    /// How many frames B-frame reordering can delay output: max_num_reorder_frames from
    /// the VUI when present, otherwise 0 when the stream cannot reorder (Baseline profile,
    /// picture order count type 2, intra-only profiles) and MaxDpbFrames otherwise — the
    /// inference §E.2.1 prescribes, which over-estimates for most encoders.
    pub fn reorder_frames(&self) -> u32 {
        if let Some(n) = self.vui.as_ref().and_then(|v| v.max_num_reorder_frames) {
            return n.min(16);
        }
        let intra_only = self.constraint_flags & 0x10 != 0
            && matches!(self.profile_idc, 44 | 86 | 100 | 110 | 122 | 244);
        if self.profile_idc == 66 || self.pic_order_cnt_type == 2 || intra_only {
            return 0;
        }
        self.max_dpb_frames()
    }
}

pub(super) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// scaling_list(): only the syntax, the values are not needed.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), CodecError> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(CodecError::Invalid {
                    what: r.what(),
                    reason: format!("delta_scale {delta} outside -128..127"),
                });
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Sample aspect ratios for aspect_ratio_idc 1..=16 (Table E-1).
const SAR_TABLE: [(u16, u16); 16] = [
    (1, 1),
    (12, 11),
    (10, 11),
    (16, 11),
    (40, 33),
    (24, 11),
    (20, 11),
    (32, 11),
    (80, 33),
    (18, 11),
    (15, 11),
    (64, 33),
    (160, 99),
    (4, 3),
    (3, 2),
    (2, 1),
];

fn parse_vui(r: &mut BitReader<'_>) -> Result<AvcVui, CodecError> {
    let mut vui = AvcVui::default();
    r.field("vui_parameters");
    if r.bit()? {
        let idc = r.u8()?;
        vui.sample_aspect_ratio = match idc {
            255 => {
                let w = r.bits(16)? as u16;
                let h = r.bits(16)? as u16;
                (w != 0 && h != 0).then_some((w, h))
            }
            1..=16 => Some(SAR_TABLE[usize::from(idc - 1)]),
            _ => None,
        };
    }
    if r.bit()? {
        let _overscan_appropriate = r.bit()?;
    }
    if r.bit()? {
        let _video_format = r.bits(3)?;
        vui.video_full_range = Some(r.bit()?);
        if r.bit()? {
            vui.colour = Some(ColourDescription {
                primaries: r.u8()?,
                transfer: r.u8()?,
                matrix: r.u8()?,
            });
        }
    }
    if r.bit()? {
        r.ue_max("chroma_sample_loc_type_top_field", 5)?;
        r.ue_max("chroma_sample_loc_type_bottom_field", 5)?;
    }
    if r.bit()? {
        r.field("timing_info");
        vui.timing = Some(Timing {
            num_units_in_tick: r.bits(32)?,
            time_scale: r.bits(32)?,
            fixed_frame_rate: r.bit()?,
        });
    }
    r.field("hrd_parameters");
    let nal_hrd = r.bit()?;
    if nal_hrd {
        skip_hrd_parameters(r)?;
    }
    let vcl_hrd = r.bit()?;
    if vcl_hrd {
        skip_hrd_parameters(r)?;
    }
    if nal_hrd || vcl_hrd {
        let _low_delay_hrd = r.bit()?;
    }
    r.field("vui_parameters");
    let _pic_struct_present = r.bit()?;
    if r.bit()? {
        r.field("bitstream_restriction");
        let _motion_vectors_over_pic_boundaries = r.bit()?;
        r.ue()?; // max_bytes_per_pic_denom
        r.ue()?; // max_bits_per_mb_denom
        r.ue()?; // log2_max_mv_length_horizontal
        r.ue()?; // log2_max_mv_length_vertical
        vui.max_num_reorder_frames = Some(r.ue_max("max_num_reorder_frames", 16)?);
        vui.max_dec_frame_buffering = Some(r.ue_max("max_dec_frame_buffering", 16)?);
    }
    Ok(vui)
}

fn skip_hrd_parameters(r: &mut BitReader<'_>) -> Result<(), CodecError> {
    let cpb_cnt = r.ue_max("cpb_cnt_minus1", 31)? + 1;
    r.bits(4)?; // bit_rate_scale
    r.bits(4)?; // cpb_size_scale
    for _ in 0..cpb_cnt {
        r.ue()?; // bit_rate_value_minus1
        r.ue()?; // cpb_size_value_minus1
        r.bit()?; // cbr_flag
    }
    r.bits(20)?; // four 5-bit lengths
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::bits::SpsWriter;
    use super::*;

    /// A High-profile SPS: 4:2:0 8-bit, poc type 0, the given size in macroblocks,
    /// optional cropping and a tail of VUI bits.
    fn high_sps(
        w_mbs: u32,
        h_mbs: u32,
        crop: Option<[u32; 4]>,
        scaling: bool,
        vui: impl FnOnce(&mut SpsWriter),
    ) -> Vec<u8> {
        let mut w = SpsWriter::default();
        w.u(8, 0x67).u(8, 100).u(8, 0).u(8, 40);
        w.ue(0); // sps id
        w.ue(1).ue(0).ue(0).u(1, 0); // chroma 4:2:0, 8-bit, no bypass
        w.u(1, scaling as u32);
        if scaling {
            // list 0 present with deltas that make nextScale 0 early (stops reading);
            // list 6 (8x8) present with 64 explicit deltas of 0 except the first.
            w.u(1, 1).se(-8);
            for i in 1..8 {
                w.u(1, (i == 6) as u32);
                if i == 6 {
                    w.se(8);
                    for _ in 1..64 {
                        w.se(0);
                    }
                }
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(0).ue(2); // poc type 0, lsb minus4 = 2
        w.ue(4).u(1, 0); // max refs, gaps
        w.ue(w_mbs - 1).ue(h_mbs - 1);
        w.u(1, 1).u(1, 1); // frame_mbs_only, direct_8x8
        match crop {
            Some([l, r, t, b]) => {
                w.u(1, 1).ue(l).ue(r).ue(t).ue(b);
            }
            None => {
                w.u(1, 0);
            }
        }
        vui(&mut w);
        w.nal()
    }

    #[test]
    fn cropping_1080p() {
        // 1920x1088 coded, 8 lines cropped at the bottom (4 crop units of 2).
        let nal = high_sps(120, 68, Some([0, 0, 0, 4]), false, |w| {
            w.u(1, 0);
        });
        let sps = AvcSps::parse(&nal).unwrap();
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.codec_string(), "avc1.640028");
        assert!(sps.vui.is_none());
        // No VUI: High profile level 4.0 at 1080p infers MaxDpbFrames = 32768/8160 = 4.
        assert_eq!(sps.reorder_frames(), 4);
    }

    #[test]
    fn scaling_lists_are_skipped() {
        let nal = high_sps(20, 15, None, true, |w| {
            w.u(1, 0);
        });
        let sps = AvcSps::parse(&nal).unwrap();
        assert!(sps.scaling_matrix_present);
        assert_eq!((sps.width, sps.height), (320, 240));
    }

    #[test]
    fn vui_timing_and_reorder() {
        let nal = high_sps(20, 15, None, false, |w| {
            w.u(1, 1); // vui present
            w.u(1, 1).u(8, 255).u(16, 4).u(16, 3); // extended SAR 4:3
            w.u(1, 0); // overscan
            w.u(1, 1).u(3, 5).u(1, 1).u(1, 1).u(8, 1).u(8, 1).u(8, 1); // full range, bt709
            w.u(1, 0); // chroma loc
            w.u(1, 1).u(32, 1001).u(32, 60000).u(1, 1); // 29.97 fps
            w.u(1, 1); // nal hrd
            w.ue(1).u(4, 0).u(4, 0); // two cpbs
            w.ue(100).ue(200).u(1, 0).ue(300).ue(400).u(1, 1);
            w.u(20, 0);
            w.u(1, 0); // vcl hrd
            w.u(1, 0); // low delay
            w.u(1, 0); // pic struct
            w.u(1, 1).u(1, 1).ue(2).ue(1).ue(16).ue(16).ue(2).ue(4);
        });
        let sps = AvcSps::parse(&nal).unwrap();
        let vui = sps.vui.as_ref().unwrap();
        assert_eq!(vui.sample_aspect_ratio, Some((4, 3)));
        assert_eq!(vui.video_full_range, Some(true));
        assert_eq!(
            vui.colour,
            Some(ColourDescription {
                primaries: 1,
                transfer: 1,
                matrix: 1
            })
        );
        assert_eq!(sps.frame_rate(), Some((30000, 1001)));
        assert_eq!(vui.max_num_reorder_frames, Some(2));
        assert_eq!(vui.max_dec_frame_buffering, Some(4));
        assert_eq!(sps.reorder_frames(), 2);
    }

    #[test]
    fn truncated_vui_keeps_the_picture_size() {
        let nal = high_sps(20, 15, None, false, |w| {
            w.u(1, 1).u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(1, 1).u(16, 0);
        });
        let sps = AvcSps::parse(&nal).unwrap();
        assert_eq!((sps.width, sps.height), (320, 240));
        assert!(sps.vui.is_none());
        let e = sps.vui_error.unwrap().to_string();
        assert!(e.contains("timing_info"), "{e}");
    }

    #[test]
    fn emulation_prevention_in_sps() {
        // profile_idc 0, flags 0, level 1 is 00 00 01 on the wire: the writer escapes it
        // to 00 00 03 01 and the parser must see the original bits.
        let mut w = SpsWriter::default();
        w.u(8, 0x67).u(8, 0).u(8, 0).u(8, 1);
        w.ue(0).ue(0).ue(2).ue(1).u(1, 0); // sps id, frame num, poc type 2, refs, gaps
        w.ue(10).ue(7).u(1, 1).u(1, 1).u(1, 0).u(1, 0);
        let nal = w.nal();
        assert_eq!(&nal[..5], &[0x67, 0, 0, 3, 1]);
        let sps = AvcSps::parse(&nal).unwrap();
        assert_eq!((sps.width, sps.height), (176, 128));
        assert_eq!(sps.codec_string(), "avc1.000001");
        assert_eq!(
            sps.reorder_frames(),
            0,
            "poc type 2 outputs in decoding order"
        );
    }

    #[test]
    fn interlaced_and_4_2_2_cropping() {
        // High 4:2:2 (122), field coding: crop units are 2 wide, 2 high (1 × 2 fields).
        let mut w = SpsWriter::default();
        w.u(8, 0x67).u(8, 122).u(8, 0).u(8, 40);
        w.ue(0).ue(2).ue(2).ue(2).u(1, 0).u(1, 0);
        w.ue(0).ue(0).ue(0).ue(4).u(1, 0);
        w.ue(119).ue(33); // 120 MBs wide, 34 map units → 68 MBs high
        w.u(1, 0).u(1, 0).u(1, 1); // frame_mbs_only 0, mbaff 0, direct 1
        w.u(1, 1).ue(0).ue(0).ue(0).ue(4);
        w.u(1, 0);
        let sps = AvcSps::parse(&w.nal()).unwrap();
        assert_eq!(sps.bit_depth_luma, 10);
        assert_eq!((sps.width, sps.height), (1920, 1080));
    }

    #[test]
    fn bad_sps_values_are_errors() {
        // Cropping more than the picture.
        let nal = high_sps(2, 2, Some([8, 8, 0, 0]), false, |w| {
            w.u(1, 0);
        });
        let e = AvcSps::parse(&nal).unwrap_err().to_string();
        assert!(e.contains("removes the whole"), "{e}");
        // Not an SPS.
        let e = AvcSps::parse(&[0x68, 0xCE]).unwrap_err().to_string();
        assert!(e.contains("not an SPS"), "{e}");
        // Absurd size.
        let mut w = SpsWriter::default();
        w.u(8, 0x67).u(8, 66).u(8, 0).u(8, 30);
        w.ue(0)
            .ue(0)
            .ue(0)
            .ue(0)
            .ue(1)
            .u(1, 0)
            .ue(100_000)
            .ue(10)
            .u(1, 1);
        let e = AvcSps::parse(&w.nal()).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn build_and_parse_avcc() {
        let sps = high_sps(20, 15, None, false, |w| {
            w.u(1, 0);
        });
        let pps = [0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0];
        let mut with_start_code = vec![0, 0, 0, 1];
        with_start_code.extend_from_slice(&sps);
        let avcc = build_avcc(&[&with_start_code], &[&pps]).unwrap();
        let parsed = AvcDecoderConfig::parse(&avcc).unwrap();
        assert_eq!(parsed.profile_indication, 100);
        assert_eq!(parsed.level_indication, 40);
        assert_eq!(parsed.nal_length_size, 4);
        assert_eq!(&parsed.sps[0][..], &sps[..]);
        assert_eq!(&parsed.pps[0][..], &pps[..]);
        assert_eq!(
            parsed.high,
            Some(AvcHighExtension {
                chroma_format: 1,
                bit_depth_luma: 8,
                bit_depth_chroma: 8,
                sps_ext: vec![]
            })
        );
        assert_eq!(parsed.to_bytes(), avcc);
        assert!(build_avcc(&[], &[&pps]).is_err());
        assert!(build_avcc(&[&sps], &[]).is_err());
        assert!(build_avcc(&[&pps], &[&sps]).is_err());
    }

    #[test]
    fn avcc_errors() {
        let e = AvcDecoderConfig::parse(&[1, 0x64, 0, 0x28, 0xFF, 0xE1, 0, 12, 0x67, 0x64, 0])
            .unwrap_err();
        assert_eq!(e.to_string(), "H.264 avcC: truncated SPS (3 of 12 bytes)");
        let e = AvcDecoderConfig::parse(&[0, 0, 0, 1, 0x67]).unwrap_err();
        assert!(e.to_string().contains("configurationVersion is 0"), "{e}");
        let e = AvcDecoderConfig::parse(&[1, 0x42, 0, 0x1E, 0xFE, 0xE0, 0]).unwrap_err();
        assert!(e.to_string().contains("lengthSizeMinusOne"), "{e}");
        // Every truncation of a valid record is an error, never a panic.
        let sps = high_sps(20, 15, None, false, |w| {
            w.u(1, 0);
        });
        let avcc = build_avcc(&[&sps], &[&[0x68, 0xEB]]).unwrap();
        for n in 0..avcc.len() - 4 {
            assert!(AvcDecoderConfig::parse(&avcc[..n]).is_err(), "{n}");
        }
        // Without the 4 high-profile bytes it is the pre-2010 form: accepted.
        assert!(
            AvcDecoderConfig::parse(&avcc[..avcc.len() - 4])
                .unwrap()
                .high
                .is_none()
        );
    }

    #[test]
    fn truncated_sps_at_every_length() {
        let sps = high_sps(20, 15, None, true, |w| {
            w.u(1, 1).u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(1, 1);
            w.u(32, 1).u(32, 50).u(1, 1).u(1, 0).u(1, 0).u(1, 0).u(1, 0);
        });
        assert!(AvcSps::parse(&sps).unwrap().vui.is_some());
        for n in 0..sps.len() {
            // Either an error or (once the size is read) a usable SPS; never a panic.
            if let Ok(s) = AvcSps::parse(&sps[..n]) {
                assert_eq!((s.width, s.height), (320, 240));
            }
        }
    }
}
