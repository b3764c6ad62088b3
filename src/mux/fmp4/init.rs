//! The CMAF header: `ftyp` + `moov` describing one track, with empty sample tables and the
//! `mvex`/`trex` that announce fragments.

use bytes::Bytes;
use mp4_atom::{
    Audio, Av01, Av1c, Avc1, Avcc, BufMut, Codec, Dfla, Dinf, Dops, Dref, Encode, Esds, Flac,
    FourCC, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd, Mp4a, Mvex, Mvhd, Opus, OpusChannelMapping, Pasp, Smhd,
    Stbl, Stco, Stsd, Tkhd, Trex, Url, Visual, Vmhd, Vp09, VpcC,
};

use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor};

use super::Fmp4Error;

/// `ftyp` brands of every init segment.
///
/// - `iso6` (major and compatible): the ISO BMFF brand whose toolset covers everything
///   written here: `tfdt`, `trun` version 1 (signed composition offsets), `styp`, `prft`.
///   CMAF builds on it, and Apple's HLS fMP4 guidance asks for `iso6` or later.
/// - `cmfc`: the CMAF structural brand (ISO/IEC 23000-19 §7.1): one track, empty sample
///   tables, `mvex`, fragments with `tfdt` and default-base-is-moof, no edit lists.
///   Packagers and validators key CMAF handling on it. Not `cmf2`, the stricter structural
///   brand of CMAF's second edition: its extra constraints are not checked here.
/// - `mp41`: lets older MP4 readers (some smart TVs, QuickTime) accept the file at all.
///
/// No CMAF media-profile brand (`cfhd`, `chdf`, `caac`...): those promise codec
/// constraints (profile, level, frame size) that this writer does not check.
const FTYP_BRANDS: [&[u8; 4]; 3] = [b"iso6", b"cmfc", b"mp41"];

/// The movie timescale (`mvhd`): only `mvhd`/`tkhd` durations use it, and they are 0.
const MOVIE_TIMESCALE: u32 = 1000;

/// Coded and display size of a video track.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoParams {
    pub width: u32,
    pub height: u32,
    /// Display size when it differs from the coded size (anamorphic video): written as the
    /// `tkhd` size and as a `pasp` box in the sample entry.
    pub display_width: Option<u32>,
    pub display_height: Option<u32>,
}

/// Channel count, sample rate and sample size of an audio track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioParams {
    pub channels: u16,
    /// In Hz. The sample entry's field is 16.16 fixed point: rates above 65535 Hz are written
    /// as 0 there (the codec configuration and the timescale carry the real rate).
    pub sample_rate: u32,
    /// 16 for compressed audio; the real bit depth for FLAC.
    pub bits_per_sample: u16,
}

/// The vpcC fields (VP Codec ISO Media File Format Binding v1.0 §2.2), from the first
/// keyframe's uncompressed header (or the Matroska Colour element).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vp9Params {
    pub profile: u8,
    /// `level` × 10 (e.g. 31 for level 3.1); 0 when unknown.
    pub level: u8,
    pub bit_depth: u8,
    /// 0: 4:2:0 vertical, 1: 4:2:0 colocated with luma (0,0), 2: 4:2:2, 3: 4:4:4.
    pub chroma_subsampling: u8,
    pub full_range: bool,
    pub colour_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
}

impl Default for Vp9Params {
    /// Profile 0, 8-bit 4:2:0, BT.709 limited range: what a VP9 stream whose header says
    /// nothing else is.
    fn default() -> Self {
        Vp9Params {
            profile: 0,
            level: 0,
            bit_depth: 8,
            chroma_subsampling: 1,
            full_range: false,
            colour_primaries: 1,
            transfer_characteristics: 1,
            matrix_coefficients: 1,
        }
    }
}

/// The dOps fields (Opus in ISO BMFF §4.3.2): the OpusHead of Matroska's CodecPrivate
/// minus its magic and version, in big-endian.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusParams {
    pub output_channel_count: u8,
    /// Samples (at 48 kHz) to drop from the decoder's output at the start.
    pub pre_skip: u16,
    /// The original input's sample rate; informational (Opus always decodes at 48 kHz).
    pub input_sample_rate: u32,
    /// Q7.8 dB.
    pub output_gain: i16,
    /// `None` for channel mapping family 0 (mono or stereo).
    pub mapping: Option<OpusMapping>,
}

/// An Opus channel mapping table (family ≠ 0), RFC 7845 §5.1.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusMapping {
    pub family: u8,
    pub stream_count: u8,
    pub coupled_count: u8,
    /// One entry per output channel.
    pub channel_mapping: Vec<u8>,
}

/// The FLAC configuration: the STREAMINFO metadata block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlacParams {
    /// The 34-byte STREAMINFO block body (without its 4-byte block header), e.g. bytes
    /// 8..42 of Matroska's `fLaC…` CodecPrivate.
    pub streaminfo: Bytes,
    pub audio: AudioParams,
}

/// What the track carries and the codec configuration its sample entry needs.
///
/// Where the Matroska CodecPrivate already is the MP4 configuration record, it is passed as
/// is (and decoded with mp4-atom, so a malformed one is refused here, not by a player).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleEntry {
    /// H.264 as `avc1`: `avcc` is the AVCDecoderConfigurationRecord (Matroska CodecPrivate
    /// of `V_MPEG4/ISO/AVC`). Samples are length-prefixed NAL units.
    H264 { avcc: Bytes, video: VideoParams },
    /// H.265 as `hvc1` (what Safari requires): `hvcc` is the
    /// HEVCDecoderConfigurationRecord (CodecPrivate of `V_MPEGH/ISO/HEVC`). Its VPS, SPS and
    /// PPS arrays are marked complete, as `hvc1` demands.
    H265 { hvcc: Bytes, video: VideoParams },
    /// VP9 as `vp09` + `vpcC`.
    Vp9 { vpcc: Vp9Params, video: VideoParams },
    /// AV1 as `av01`: `av1c` is the AV1CodecConfigurationRecord (CodecPrivate of `V_AV1`).
    Av1 { av1c: Bytes, video: VideoParams },
    /// AAC as `mp4a` + `esds`: `asc` is the AudioSpecificConfig (CodecPrivate of `A_AAC`).
    Aac { asc: Bytes, audio: AudioParams },
    /// Opus as `Opus` + `dOps`; always 48 kHz.
    Opus(OpusParams),
    /// FLAC as `fLaC` + `dfLa`.
    Flac(FlacParams),
}

impl SampleEntry {
    pub fn is_video(&self) -> bool {
        matches!(
            self,
            SampleEntry::H264 { .. }
                | SampleEntry::H265 { .. }
                | SampleEntry::Vp9 { .. }
                | SampleEntry::Av1 { .. }
        )
    }

    /// The timescale a CMAF track of this codec uses: 90 kHz for video, the sample rate for
    /// audio (48 kHz for Opus), so audio durations are whole numbers of samples.
    pub fn default_timescale(&self) -> u32 {
        match self {
            SampleEntry::H264 { .. }
            | SampleEntry::H265 { .. }
            | SampleEntry::Vp9 { .. }
            | SampleEntry::Av1 { .. } => 90_000,
            SampleEntry::Aac { audio, .. } => audio.sample_rate,
            SampleEntry::Opus(_) => 48_000,
            SampleEntry::Flac(flac) => flac.audio.sample_rate,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            SampleEntry::H264 { .. } => "H.264",
            SampleEntry::H265 { .. } => "H.265",
            SampleEntry::Vp9 { .. } => "VP9",
            SampleEntry::Av1 { .. } => "AV1",
            SampleEntry::Aac { .. } => "AAC",
            SampleEntry::Opus(_) => "Opus",
            SampleEntry::Flac(_) => "FLAC",
        }
    }
}

/// One CMAF track: the init segment's only track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackConfig {
    /// The `track_ID` in `tkhd`, `trex` and every `tfhd`. 1 unless there is a reason.
    pub track_id: u32,
    /// Ticks per second of every time in this track's fragments.
    pub timescale: u32,
    /// ISO 639-2/T three-letter code; anything else is written as `und`.
    pub language: Option<String>,
    pub sample_entry: SampleEntry,
}

impl TrackConfig {
    /// Track 1 with the codec's usual timescale ([`SampleEntry::default_timescale`]).
    pub fn new(sample_entry: SampleEntry) -> Self {
        TrackConfig {
            track_id: 1,
            timescale: sample_entry.default_timescale(),
            language: None,
            sample_entry,
        }
    }
}

fn invalid(entry: &SampleEntry, reason: impl Into<String>) -> Fmp4Error {
    Fmp4Error::InvalidConfig {
        codec: entry.name(),
        reason: reason.into(),
    }
}

/// The CMAF header of one track: `ftyp` + `moov` (`mvhd`, one `trak` with empty sample
/// tables and the codec's sample entry, `mvex`/`trex`).
pub fn init_segment(config: &TrackConfig) -> Result<Bytes, Fmp4Error> {
    let entry = &config.sample_entry;
    if config.timescale == 0 {
        return Err(invalid(entry, "timescale 0"));
    }
    if config.track_id == 0 {
        return Err(invalid(entry, "track_ID 0 is reserved"));
    }
    let codec = sample_entry(entry)?;
    let is_video = entry.is_video();

    let (tkhd_width, tkhd_height) = match entry {
        SampleEntry::H264 { video, .. }
        | SampleEntry::H265 { video, .. }
        | SampleEntry::Vp9 { video, .. }
        | SampleEntry::Av1 { video, .. } => {
            let (w, h) = display_size(video);
            (fixed_u16(entry, w)?, fixed_u16(entry, h)?)
        }
        _ => (0, 0),
    };

    let ftyp = Ftyp {
        major_brand: FourCC::new(FTYP_BRANDS[0]),
        minor_version: 0,
        compatible_brands: FTYP_BRANDS.iter().map(|b| FourCC::new(b)).collect(),
    };

    let (handler, handler_name) = if is_video {
        (b"vide", "VideoHandler")
    } else {
        (b"soun", "SoundHandler")
    };

    let mvhd = Mvhd {
        timescale: MOVIE_TIMESCALE,
        next_track_id: config.track_id.saturating_add(1),
        rate: 1u16.into(),
        volume: 1u8.into(),
        ..Default::default()
    };
    let tkhd = Tkhd {
        track_id: config.track_id,
        enabled: true,
        in_movie: true,
        volume: if is_video { 0u8.into() } else { 1u8.into() },
        width: tkhd_width.into(),
        height: tkhd_height.into(),
        ..Default::default()
    };
    let mdhd = Mdhd {
        timescale: config.timescale,
        language: language(config.language.as_deref()),
        ..Default::default()
    };
    let hdlr = Hdlr {
        handler: FourCC::new(handler),
        name: handler_name.into(),
    };
    let dinf = Dinf {
        dref: Dref {
            // An empty URL: the media data is in this same file.
            entries: vec![Url::default().into()],
        },
    };
    let stbl = Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        // Required by ISO/IEC 14496-12 even when empty (ffmpeg's reader and Apple's
        // validator look for it).
        stco: Some(Stco::default()),
        ..Default::default()
    };
    let mvex = Mvex {
        mehd: None,
        trex: vec![Trex {
            track_id: config.track_id,
            default_sample_description_index: 1,
            default_sample_duration: 0,
            default_sample_size: 0,
            default_sample_flags: 0,
        }],
    };

    // mp4-atom's Moov and Minf write their optional children first (mvex before trak,
    // vmhd after stbl). ISO/IEC 14496-12 §6.2.3 recommends the order of its Table 1, header
    // boxes first, and some players' parsers are stricter than the spec: the containers are
    // assembled here in that order, from mp4-atom's encodings of the leaf boxes.
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)?;
    out.encode_atom(FourCC::new(b"moov"), |b| {
        mvhd.encode(b)?;
        b.encode_atom(FourCC::new(b"trak"), |b| {
            tkhd.encode(b)?;
            b.encode_atom(FourCC::new(b"mdia"), |b| {
                mdhd.encode(b)?;
                hdlr.encode(b)?;
                b.encode_atom(FourCC::new(b"minf"), |b| {
                    if is_video {
                        Vmhd::default().encode(b)?;
                    } else {
                        Smhd::default().encode(b)?;
                    }
                    dinf.encode(b)?;
                    stbl.encode(b)
                })
            })
        })?;
        mvex.encode(b)
    })?;
    Ok(Bytes::from(out))
}

/// The `tkhd` size: the display size when there is one, the coded size otherwise.
fn display_size(video: &VideoParams) -> (u32, u32) {
    (
        video.display_width.unwrap_or(video.width),
        video.display_height.unwrap_or(video.height),
    )
}

fn fixed_u16(entry: &SampleEntry, v: u32) -> Result<u16, Fmp4Error> {
    u16::try_from(v).map_err(|_| invalid(entry, format!("size {v} does not fit 16 bits")))
}

fn language(lang: Option<&str>) -> String {
    match lang {
        Some(l) if l.len() == 3 && l.bytes().all(|b| b.is_ascii_lowercase()) => l.to_string(),
        _ => "und".to_string(),
    }
}

fn visual(entry: &SampleEntry, video: &VideoParams) -> Result<Visual, Fmp4Error> {
    if video.width == 0 || video.height == 0 {
        return Err(invalid(entry, "video size is 0"));
    }
    Ok(Visual {
        data_reference_index: 1,
        width: fixed_u16(entry, video.width)?,
        height: fixed_u16(entry, video.height)?,
        ..Default::default()
    })
}

/// A `pasp` box when the display aspect differs from the coded one: the pixel aspect
/// ratio h:v = (display_w × coded_h) : (display_h × coded_w), reduced.
fn pasp(video: &VideoParams) -> Option<Pasp> {
    let (dw, dh) = display_size(video);
    let h = u64::from(dw) * u64::from(video.height);
    let v = u64::from(dh) * u64::from(video.width);
    if h == v || h == 0 || v == 0 {
        return None;
    }
    let g = gcd(h, v);
    Some(Pasp {
        h_spacing: u32::try_from(h / g).ok()?,
        v_spacing: u32::try_from(v / g).ok()?,
    })
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn audio(entry: &SampleEntry, params: &AudioParams) -> Result<Audio, Fmp4Error> {
    if params.channels == 0 {
        return Err(invalid(entry, "0 channels"));
    }
    if params.sample_rate == 0 {
        return Err(invalid(entry, "sample rate 0"));
    }
    Ok(Audio {
        data_reference_index: 1,
        channel_count: params.channels,
        sample_size: params.bits_per_sample,
        // 16.16 fixed point: a rate that does not fit is written as 0, as ffmpeg does.
        sample_rate: u16::try_from(params.sample_rate).unwrap_or(0).into(),
    })
}

/// Decodes a configuration record with mp4-atom's own parser: refuses what a player would.
fn record<T: mp4_atom::Atom>(entry: &SampleEntry, bytes: &[u8]) -> Result<T, Fmp4Error> {
    let mut buf = bytes;
    let record = T::decode_body(&mut buf).map_err(|e| invalid(entry, e.to_string()))?;
    if !buf.is_empty() {
        return Err(invalid(
            entry,
            format!(
                "{} trailing bytes after the configuration record",
                buf.len()
            ),
        ));
    }
    Ok(record)
}

fn sample_entry(entry: &SampleEntry) -> Result<Codec, Fmp4Error> {
    Ok(match entry {
        SampleEntry::H264 { avcc, video } => {
            let avcc: Avcc = record(entry, avcc)?;
            if avcc.sequence_parameter_sets.is_empty() || avcc.picture_parameter_sets.is_empty() {
                return Err(invalid(entry, "avcC without SPS or PPS"));
            }
            Avc1 {
                visual: visual(entry, video)?,
                avcc,
                pasp: pasp(video),
                ..Default::default()
            }
            .into()
        }
        SampleEntry::H265 { hvcc, video } => {
            let mut hvcc: Hvcc = record(entry, hvcc)?;
            // hvc1: every VPS/SPS/PPS is in the sample entry (ISO/IEC 14496-15 §8.4.1).
            for array in &mut hvcc.arrays {
                array.completeness = matches!(array.nal_unit_type, 32..=34);
            }
            if !hvcc.arrays.iter().any(|a| a.nal_unit_type == 33) {
                return Err(invalid(entry, "hvcC without SPS"));
            }
            Hvc1 {
                visual: visual(entry, video)?,
                hvcc,
                pasp: pasp(video),
                ..Default::default()
            }
            .into()
        }
        SampleEntry::Vp9 { vpcc, video } => Vp09 {
            visual: visual(entry, video)?,
            vpcc: VpcC {
                profile: vpcc.profile,
                level: vpcc.level,
                bit_depth: vpcc.bit_depth,
                chroma_subsampling: vpcc.chroma_subsampling,
                video_full_range_flag: vpcc.full_range,
                color_primaries: vpcc.colour_primaries,
                transfer_characteristics: vpcc.transfer_characteristics,
                matrix_coefficients: vpcc.matrix_coefficients,
                codec_initialization_data: Vec::new(),
            },
            pasp: pasp(video),
            ..Default::default()
        }
        .into(),
        SampleEntry::Av1 { av1c, video } => Av01 {
            visual: visual(entry, video)?,
            av1c: record::<Av1c>(entry, av1c)?,
            pasp: pasp(video),
            ..Default::default()
        }
        .into(),
        SampleEntry::Aac { asc, audio: params } => {
            if asc.len() < 2 {
                return Err(invalid(entry, "AudioSpecificConfig shorter than 2 bytes"));
            }
            let esds = Esds {
                es_desc: EsDescriptor {
                    // ISO/IEC 14496-14 §3.1.2: ES_ID is 0 in a stored file.
                    es_id: 0,
                    dec_config: DecoderConfig {
                        // ISO/IEC 14496-3 audio, AudioStream.
                        object_type_indication: 0x40,
                        stream_type: 0x05,
                        dec_specific: Some(DecoderSpecific {
                            raw: asc.to_vec(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            };
            Mp4a {
                audio: audio(entry, params)?,
                esds,
                btrt: None,
                taic: None,
            }
            .into()
        }
        SampleEntry::Opus(p) => {
            if p.output_channel_count == 0 {
                return Err(invalid(entry, "0 channels"));
            }
            if p.mapping.is_none() && p.output_channel_count > 2 {
                return Err(invalid(
                    entry,
                    "more than 2 channels need a channel mapping table",
                ));
            }
            Opus {
                audio: audio(
                    entry,
                    &AudioParams {
                        channels: p.output_channel_count.into(),
                        sample_rate: 48_000,
                        bits_per_sample: 16,
                    },
                )?,
                dops: Dops {
                    output_channel_count: p.output_channel_count,
                    pre_skip: p.pre_skip,
                    input_sample_rate: p.input_sample_rate,
                    output_gain: p.output_gain,
                    channel_mapping: p.mapping.as_ref().map(|m| OpusChannelMapping {
                        family: m.family,
                        stream_count: m.stream_count,
                        coupled_count: m.coupled_count,
                        channel_mapping: m.channel_mapping.clone(),
                    }),
                },
                btrt: None,
            }
            .into()
        }
        SampleEntry::Flac(p) => {
            if p.streaminfo.len() != 34 {
                return Err(invalid(
                    entry,
                    format!("STREAMINFO is {} bytes, not 34", p.streaminfo.len()),
                ));
            }
            // A dfLa box holding STREAMINFO as the last metadata block, read back with
            // mp4-atom's parser so its fields are the ones it will write.
            let mut dfla = Vec::with_capacity(50);
            dfla.extend_from_slice(&50u32.to_be_bytes());
            dfla.extend_from_slice(b"dfLa");
            dfla.extend_from_slice(&[0, 0, 0, 0, 0x80, 0, 0, 34]);
            dfla.extend_from_slice(&p.streaminfo);
            let dfla = <Dfla as mp4_atom::Decode>::decode(&mut dfla.as_slice())
                .map_err(|e| invalid(entry, e.to_string()))?;
            Flac {
                audio: audio(entry, &p.audio)?,
                dfla,
            }
            .into()
        }
    })
}
