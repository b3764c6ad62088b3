//! Codec configuration for the CMAF muxer and the HLS/DASH manifests: what a sample entry
//! needs (avcC, hvcC, AudioSpecificConfig, dOps, vpcC, av1C, dfLa), the RFC 6381 codec
//! string, picture size or sample rate and channels, and the B-frame reorder depth — read
//! from outside bytes (Matroska CodecPrivate, a first keyframe, RTSP parameter sets)
//! without ever panicking.
//!
//! [`cmaf_info`] is the one entry point a muxer needs; the per-codec modules are public for
//! the other places that see these records (RTSP's SDP parameter sets, status pages,
//! tests). Every parser reads with the bounds-checked readers of `bits`, and every one is
//! fed arbitrary bytes by the `codec_config` fuzz target.
//!
//! G.711 (A-law, µ-law) is carried transcoded: no browser plays it, so [`cmaf_info`]
//! describes it as the FLAC stream `mux::flac::G711ToFlac` makes of it (16-bit, the
//! track's rate and channels), and the CMAF pipeline re-encodes each frame. Live MKV keeps
//! the G.711.
//!
//! What is not carried: VP8, Vorbis, MP3 and PCM have no MP4 mapping that a browser's
//! Media Source Extensions accept, so [`cmaf_info`] answers [`CmafTrack::NotCarried`] for
//! them and the muxer leaves them out of HLS/DASH (live MKV still has them).

pub mod aac;
pub mod av1;
mod bits;
pub mod flac;
pub mod h264;
pub mod h265;
pub mod opus;
pub mod vp9;

#[cfg(test)]
mod tests;

use std::fmt;

use bytes::Bytes;

pub use bits::{is_annex_b, nal_to_rbsp, split_annex_b, split_length_prefixed};

use super::{Codec, Track};

/// Why codec configuration could not be read. Each message names the record and the field.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// A length-delimited record ends before what it declares.
    #[error("{what}: truncated {field} ({have} of {need} bytes)")]
    Truncated {
        what: &'static str,
        field: &'static str,
        have: usize,
        need: usize,
    },
    /// Bitstream syntax (SPS, headers) ran out of bits.
    #[error("{what}: ends inside {field} (needs {need} bits, has {have})")]
    OutOfBits {
        what: &'static str,
        field: &'static str,
        have: usize,
        need: usize,
    },
    #[error("{what}: {field} is {value}, expected {expected}")]
    BadValue {
        what: &'static str,
        field: &'static str,
        value: u64,
        expected: &'static str,
    },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// Nothing to read the configuration from.
    #[error("{codec}: needs {expected}")]
    Missing {
        codec: &'static str,
        expected: &'static str,
    },
}

/// What the muxer does with a track.
#[derive(Clone, Debug, PartialEq)]
pub enum CmafTrack {
    Carried(Box<CmafInfo>),
    /// No browser plays this codec from fMP4: leave the track out of HLS/DASH, log once.
    NotCarried(NotCarried),
}

/// A codec fMP4 does not carry for browsers, and why. Its `Display` is the warning line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotCarried {
    pub codec: Codec,
    pub reason: &'static str,
}

impl fmt::Display for NotCarried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not carried in fMP4 (HLS/DASH leave the track out; live MKV keeps it): {}",
            self.codec.name(),
            self.reason
        )
    }
}

/// Everything the fMP4 writer and the manifests need for one track.
#[derive(Clone, Debug, PartialEq)]
pub struct CmafInfo {
    pub codec: Codec,
    /// RFC 6381 string for HLS `CODECS=` and DASH `codecs=`.
    pub codec_string: String,
    /// The sample entry's four-character code: avc1, hvc1, mp4a, Opus, vp09, av01, fLaC.
    pub sample_entry: &'static str,
    /// Media timescale: 90000 for video, the sample rate for audio (48000 for Opus).
    pub timescale: u32,
    pub video: Option<CmafVideo>,
    pub audio: Option<CmafAudio>,
    pub config: CodecConfig,
    /// Things worth one log line that did not stop the track: a VUI that could not be
    /// read, a record that disagrees with its parameter sets, a fallback taken.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmafVideo {
    /// Picture size after cropping, in pixels.
    pub width: u32,
    pub height: u32,
    /// Pixel aspect ratio when the bitstream says it is not square.
    pub sample_aspect_ratio: Option<(u32, u32)>,
    /// Frames per second as a fraction, from the bitstream's timing info or the track's
    /// default duration. Informational (manifests' FRAME-RATE): never derive durations
    /// from it.
    pub frame_rate: Option<(u32, u32)>,
    /// How many frames B-frame reordering can hold back output (0 without B-frames): the
    /// window the muxer needs to reconstruct decode times from presentation times.
    pub reorder_frames: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmafAudio {
    /// The decoder's output rate.
    pub sample_rate: u32,
    pub channels: u32,
    pub bits_per_sample: Option<u32>,
}

/// The parsed configuration, one variant per sample entry.
#[derive(Clone, Debug, PartialEq)]
pub enum CodecConfig {
    Avc {
        record: h264::AvcDecoderConfig,
        sps: h264::AvcSps,
    },
    Hevc {
        record: h265::HevcDecoderConfig,
        sps: h265::HevcSps,
    },
    Aac(aac::AudioSpecificConfig),
    Opus(opus::OpusHead),
    Vp9(vp9::Vp9Config),
    Av1 {
        record: av1::Av1Config,
        sequence_header: Option<av1::SequenceHeader>,
    },
    Flac(flac::FlacConfig),
}

impl CodecConfig {
    /// The bytes of the codec configuration box body: the avcC, hvcC or av1C record; the
    /// AudioSpecificConfig (the DecoderSpecificInfo inside `esds`); the `dOps`, `vpcC` or
    /// `dfLa` body (the last two begin with their FullBox version and flags).
    pub fn decoder_config(&self) -> Bytes {
        match self {
            CodecConfig::Avc { record, .. } => record.to_bytes(),
            CodecConfig::Hevc { record, .. } => record.to_bytes(),
            CodecConfig::Aac(asc) => asc.raw.clone(),
            CodecConfig::Opus(head) => Bytes::from(head.dops_payload()),
            CodecConfig::Vp9(c) => Bytes::from(c.vpcc_payload()),
            CodecConfig::Av1 { record, .. } => record.to_bytes(),
            CodecConfig::Flac(c) => Bytes::from(c.dfla_payload()),
        }
    }

    /// Bytes in each NAL unit length prefix of the samples (H.264/H.265).
    pub fn nal_length_size(&self) -> Option<u8> {
        match self {
            CodecConfig::Avc { record, .. } => Some(record.nal_length_size),
            CodecConfig::Hevc { record, .. } => Some(record.nal_length_size),
            _ => None,
        }
    }
}

/// Video timescale: 90 kHz, the RTP clock, divisible by every common frame rate.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Reads a track's codec configuration for CMAF. `first_keyframe` is the payload of the
/// track's first keyframe when the caller has it: VP9 needs it (Matroska carries no VP9
/// configuration), and H.264/H.265/AV1 use it when the CodecPrivate lacks parameter sets.
pub fn cmaf_info(track: &Track, first_keyframe: Option<&[u8]>) -> Result<CmafTrack, CodecError> {
    let private = track.codec_private.as_deref().filter(|p| !p.is_empty());
    let info = match track.codec {
        Codec::H264 => avc_info(track, private, first_keyframe)?,
        Codec::H265 => hevc_info(track, private, first_keyframe)?,
        Codec::Aac => aac_info(track, private)?,
        Codec::Opus => opus_info(private)?,
        Codec::Vp9 => vp9_info(track, private, first_keyframe)?,
        Codec::Av1 => av1_info(track, private, first_keyframe)?,
        Codec::Flac => flac_info(private)?,
        Codec::Alaw | Codec::Mulaw => g711_info(track)?,
        codec => return Ok(CmafTrack::NotCarried(not_carried(codec))),
    };
    Ok(CmafTrack::Carried(Box::new(info)))
}

fn not_carried(codec: Codec) -> NotCarried {
    let reason = match codec {
        Codec::Vp8 => {
            "browsers play VP8 from WebM only; no Media Source implementation takes VP8 in MP4"
        }
        Codec::Vorbis => "no browser's Media Source takes Vorbis in MP4 (WebM only)",
        Codec::Mp3 => {
            "Chrome's Media Source takes MP3 only as an audio/mpeg stream, not in MP4, and \
             Firefox only as the bare \"mp3\" string (the RFC 6381 names would be mp4a.6B, or \
             mp4a.69 at 16-24 kHz; ffmpeg's HLS muxer writes mp4a.40.34, which Chrome rejects)"
        }
        Codec::Pcm => {
            "no browser's Media Source plays PCM from MP4; re-encode it (FLAC) to carry it"
        }
        Codec::Mjpeg => {
            "no browser's Media Source plays Motion JPEG (there is no MSE codec string for \
             it); re-encode it (H.264) to carry it"
        }
        _ => "no CMAF mapping",
    };
    NotCarried { codec, reason }
}

/// The RFC 6381 name of MP3 in MP4 for non-browser clients: `mp4a.6B` (MPEG-1 Layer III,
/// 32–48 kHz) or `mp4a.69` (MPEG-2 Layer III, 16–24 kHz; also what ffmpeg's DASH muxer
/// writes for every MP3).
pub fn mp3_codec_string(sample_rate: u32) -> &'static str {
    if sample_rate < 32_000 {
        "mp4a.69"
    } else {
        "mp4a.6B"
    }
}

/// Frames per second from the track's default duration, as a reduced fraction.
fn track_frame_rate(track: &Track) -> Option<(u32, u32)> {
    let d = track.default_duration_ns.filter(|&d| d > 0)?;
    let g = h264::gcd(1_000_000_000, d);
    Some((
        u32::try_from(1_000_000_000 / g).ok()?,
        u32::try_from(d / g).ok()?,
    ))
}

fn check_track_size(track: &Track, width: u32, height: u32, notes: &mut Vec<String>) {
    if let Some(v) = &track.video
        && (v.width, v.height) != (width, height)
        && v.width != 0
    {
        notes.push(format!(
            "the container says {}x{}, the bitstream {width}x{height}; using the bitstream",
            v.width, v.height
        ));
    }
}

/// Parameter sets of the given types (in order) from a keyframe's NAL units.
fn parameter_sets_in<'a>(
    keyframe: &'a [u8],
    nal_length_size: u8,
    type_of: fn(&[u8]) -> Option<u8>,
    types: &[u8],
) -> Vec<Vec<&'a [u8]>> {
    let nals = if bits::is_annex_b(keyframe) {
        bits::split_annex_b(keyframe)
    } else {
        bits::split_length_prefixed(keyframe, nal_length_size)
    };
    types
        .iter()
        .map(|&t| {
            nals.iter()
                .copied()
                .filter(|n| type_of(n) == Some(t))
                .collect()
        })
        .collect()
}

fn avc_info(
    track: &Track,
    private: Option<&[u8]>,
    keyframe: Option<&[u8]>,
) -> Result<CmafInfo, CodecError> {
    use h264::{AvcDecoderConfig, AvcSps, NAL_PPS, NAL_SPS};
    let mut notes = Vec::new();
    let mut record = match private {
        Some(p) if bits::is_annex_b(p) => {
            notes.push("the CodecPrivate holds Annex B parameter sets, not an avcC".to_string());
            let sets = parameter_sets_in(p, 4, h264::nal_type, &[NAL_SPS, NAL_PPS]);
            Some(AvcDecoderConfig::from_parameter_sets(&sets[0], &sets[1])?)
        }
        Some(p) => Some(AvcDecoderConfig::parse(p)?),
        None => None,
    };
    let complete = |r: &Option<AvcDecoderConfig>| {
        r.as_ref()
            .is_some_and(|r| !r.sps.is_empty() && !r.pps.is_empty())
    };
    if !complete(&record)
        && let Some(kf) = keyframe
    {
        let len_size = record.as_ref().map_or(4, |r| r.nal_length_size);
        let sets = parameter_sets_in(kf, len_size, h264::nal_type, &[NAL_SPS, NAL_PPS]);
        if !sets[0].is_empty() && !sets[1].is_empty() {
            let mut built = AvcDecoderConfig::from_parameter_sets(&sets[0], &sets[1])?;
            built.nal_length_size = len_size;
            record = Some(built);
            notes.push("SPS/PPS taken from the first keyframe".to_string());
        }
    }
    let record = record
        .filter(|r| !r.sps.is_empty() && !r.pps.is_empty())
        .ok_or(CodecError::Missing {
            codec: "H.264",
            expected: "an avcC with an SPS and a PPS, or both in the first keyframe",
        })?;
    let sps = AvcSps::parse(&record.sps[0])?;
    if (record.profile_indication, record.level_indication) != (sps.profile_idc, sps.level_idc) {
        notes.push(format!(
            "the avcC says profile {} level {}, its SPS profile {} level {}; the codec string \
             follows the SPS",
            record.profile_indication, record.level_indication, sps.profile_idc, sps.level_idc
        ));
    }
    if let Some(e) = &sps.vui_error {
        notes.push(format!("VUI ignored: {e}"));
    }
    check_track_size(track, sps.width, sps.height, &mut notes);
    let video = CmafVideo {
        width: sps.width,
        height: sps.height,
        sample_aspect_ratio: sps
            .vui
            .as_ref()
            .and_then(|v| v.sample_aspect_ratio)
            .filter(|&(w, h)| w != h)
            .map(|(w, h)| (u32::from(w), u32::from(h))),
        frame_rate: sps.frame_rate().or_else(|| track_frame_rate(track)),
        reorder_frames: sps.reorder_frames(),
    };
    Ok(CmafInfo {
        codec: Codec::H264,
        codec_string: sps.codec_string(),
        sample_entry: "avc1",
        timescale: VIDEO_TIMESCALE,
        video: Some(video),
        audio: None,
        config: CodecConfig::Avc { record, sps },
        notes,
    })
}

fn hevc_info(
    track: &Track,
    private: Option<&[u8]>,
    keyframe: Option<&[u8]>,
) -> Result<CmafInfo, CodecError> {
    use h265::{HevcDecoderConfig, HevcSps, NAL_PPS, NAL_SPS, NAL_VPS};
    let mut notes = Vec::new();
    let types = [NAL_VPS, NAL_SPS, NAL_PPS];
    let mut record = match private {
        Some(p) if bits::is_annex_b(p) => {
            notes.push("the CodecPrivate holds Annex B parameter sets, not an hvcC".to_string());
            let s = parameter_sets_in(p, 4, h265::nal_type, &types);
            Some(HevcDecoderConfig::from_parameter_sets(&s[0], &s[1], &s[2])?)
        }
        Some(p) => Some(HevcDecoderConfig::parse(p)?),
        None => None,
    };
    let complete = |r: &Option<HevcDecoderConfig>| {
        r.as_ref()
            .is_some_and(|r| types.iter().all(|&t| r.nalus(t).next().is_some()))
    };
    if !complete(&record)
        && let Some(kf) = keyframe
    {
        let len_size = record.as_ref().map_or(4, |r| r.nal_length_size);
        let s = parameter_sets_in(kf, len_size, h265::nal_type, &types);
        if s.iter().all(|l| !l.is_empty()) {
            let mut built = HevcDecoderConfig::from_parameter_sets(&s[0], &s[1], &s[2])?;
            built.nal_length_size = len_size;
            record = Some(built);
            notes.push("VPS/SPS/PPS taken from the first keyframe".to_string());
        }
    }
    let ok = complete(&record);
    let record = record.filter(|_| ok).ok_or(CodecError::Missing {
        codec: "H.265",
        expected: "an hvcC with a VPS, an SPS and a PPS, or all three in the first keyframe",
    })?;
    let sps_nal = record.nalus(NAL_SPS).next().cloned().unwrap_or_default();
    let sps = HevcSps::parse(&sps_nal)?;
    if sps.ptl != record.ptl {
        notes.push(
            "the hvcC's profile/tier/level differ from its SPS; the codec string follows the SPS"
                .to_string(),
        );
    }
    check_track_size(track, sps.width, sps.height, &mut notes);
    let video = CmafVideo {
        width: sps.width,
        height: sps.height,
        sample_aspect_ratio: None,
        frame_rate: track_frame_rate(track),
        reorder_frames: sps.max_num_reorder_pics,
    };
    Ok(CmafInfo {
        codec: Codec::H265,
        codec_string: sps.ptl.codec_string("hvc1"),
        sample_entry: "hvc1",
        timescale: VIDEO_TIMESCALE,
        video: Some(video),
        audio: None,
        config: CodecConfig::Hevc { record, sps },
        notes,
    })
}

/// The AAC object type an old-style Matroska CodecID names (A_AAC/MPEG4/LC, ...).
fn aac_object_type_from_codec_id(codec_id: &str) -> u8 {
    let profile = codec_id.rsplit('/').find(|s| *s != "SBR").unwrap_or("");
    match profile {
        "MAIN" => 1,
        "SSR" => 3,
        "LTP" => 4,
        _ => aac::AOT_AAC_LC,
    }
}

fn aac_info(track: &Track, private: Option<&[u8]>) -> Result<CmafInfo, CodecError> {
    let mut notes = Vec::new();
    let asc = match private {
        Some(p) => aac::AudioSpecificConfig::parse(p)?,
        None => {
            // The old profile-suffixed CodecIDs come without CodecPrivate; the track
            // header has the rest.
            let a = track.audio.as_ref().ok_or(CodecError::Missing {
                codec: "AAC",
                expected: "an AudioSpecificConfig CodecPrivate or the track's rate and channels",
            })?;
            let rate = a.sample_rate.round();
            if !(1.0..16_777_216.0).contains(&rate) {
                return Err(CodecError::Invalid {
                    what: "AAC track",
                    reason: format!("sampling frequency {} Hz", a.sample_rate),
                });
            }
            let aot = aac_object_type_from_codec_id(&track.codec_id);
            let raw = aac::build_asc(aot, rate as u32, a.channels)?;
            notes.push(format!(
                "no CodecPrivate: AudioSpecificConfig built from {} and the track header",
                track.codec_id
            ));
            aac::AudioSpecificConfig::parse(&raw)?
        }
    };
    let channels = match (asc.channels(), &track.audio) {
        (Some(c), _) => c,
        (None, Some(a)) if a.channels > 0 => {
            notes.push(format!(
                "channel configuration {} (program config element): {} channels from the \
                 track header",
                asc.channel_configuration, a.channels
            ));
            a.channels
        }
        _ => {
            return Err(CodecError::Invalid {
                what: "AAC AudioSpecificConfig",
                reason: format!(
                    "channel configuration {} leaves the channel count to a program config \
                     element, and the track gives none",
                    asc.channel_configuration
                ),
            });
        }
    };
    let sample_rate = asc.output_sample_rate();
    Ok(CmafInfo {
        codec: Codec::Aac,
        codec_string: asc.codec_string(),
        sample_entry: "mp4a",
        timescale: sample_rate,
        video: None,
        audio: Some(CmafAudio {
            sample_rate,
            channels,
            bits_per_sample: None,
        }),
        config: CodecConfig::Aac(asc),
        notes,
    })
}

fn opus_info(private: Option<&[u8]>) -> Result<CmafInfo, CodecError> {
    let head = opus::OpusHead::parse(private.ok_or(CodecError::Missing {
        codec: "Opus",
        expected: "an OpusHead CodecPrivate",
    })?)?;
    Ok(CmafInfo {
        codec: Codec::Opus,
        codec_string: head.codec_string().to_string(),
        sample_entry: "Opus",
        timescale: 48_000,
        video: None,
        audio: Some(CmafAudio {
            sample_rate: 48_000,
            channels: u32::from(head.channels),
            bits_per_sample: None,
        }),
        config: CodecConfig::Opus(head),
        notes: Vec::new(),
    })
}

fn vp9_info(
    track: &Track,
    private: Option<&[u8]>,
    keyframe: Option<&[u8]>,
) -> Result<CmafInfo, CodecError> {
    let mut notes = Vec::new();
    let features = match private.map(vp9::Vp9CodecPrivate::parse).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            notes.push(format!("VP9 CodecPrivate ignored: {e}"));
            vp9::Vp9CodecPrivate::default()
        }
    };
    let frame_rate = track_frame_rate(track);
    let parsed = keyframe.map(vp9::parse_keyframe);
    let (config, width, height) = match parsed {
        Some(Ok(k)) => {
            let level = vp9::level_for(k.width, k.height, frame_rate);
            let c = vp9::Vp9Config::from_keyframe(&k, &features, level)?;
            check_track_size(track, k.width, k.height, &mut notes);
            if (k.render_width, k.render_height) != (k.width, k.height) {
                notes.push(format!(
                    "coded {}x{}, rendered {}x{}: the sample entry gets the coded size",
                    k.width, k.height, k.render_width, k.render_height
                ));
            }
            (c, k.width, k.height)
        }
        other => {
            let (Some(profile), Some(bit_depth)) = (features.profile, features.bit_depth) else {
                return Err(match other {
                    Some(Err(e)) => e,
                    _ => CodecError::Missing {
                        codec: "VP9",
                        expected: "its first keyframe (or a CodecPrivate with profile and bit depth)",
                    },
                });
            };
            if let Some(Err(e)) = other {
                notes.push(format!(
                    "keyframe header unreadable ({e}); using the CodecPrivate"
                ));
            }
            let v = track
                .video
                .as_ref()
                .filter(|v| v.width > 0 && v.height > 0)
                .ok_or(CodecError::Missing {
                    codec: "VP9",
                    expected: "a keyframe or the track's picture size",
                })?;
            let level = vp9::level_for(v.width, v.height, frame_rate);
            let c = vp9::Vp9Config {
                profile,
                level: features
                    .level
                    .filter(|l| vp9::LEVELS.contains(l))
                    .unwrap_or(level),
                bit_depth,
                chroma_subsampling: features.chroma_subsampling.unwrap_or(1),
                full_range: false,
                colour_primaries: 2,
                transfer_characteristics: 2,
                matrix_coefficients: 2,
            };
            (c, v.width, v.height)
        }
    };
    Ok(CmafInfo {
        codec: Codec::Vp9,
        codec_string: config.codec_string(),
        sample_entry: "vp09",
        timescale: VIDEO_TIMESCALE,
        video: Some(CmafVideo {
            width,
            height,
            sample_aspect_ratio: None,
            frame_rate,
            // VP9 has no B-frames: hidden alt-ref frames travel in superframes with the
            // frame that shows them, so presentation order is decoding order.
            reorder_frames: 0,
        }),
        audio: None,
        config: CodecConfig::Vp9(config),
        notes,
    })
}

fn av1_info(
    track: &Track,
    private: Option<&[u8]>,
    keyframe: Option<&[u8]>,
) -> Result<CmafInfo, CodecError> {
    let mut notes = Vec::new();
    let mut record = private.map(av1::Av1Config::parse).transpose()?;
    let mut seq = None;
    if let Some(r) = &record {
        match av1::find_sequence_header(&r.config_obus) {
            Ok(found) => seq = found.map(|(s, _)| s),
            Err(e) => notes.push(format!(
                "configOBUs unreadable ({e}); using the av1C fields"
            )),
        }
    }
    if seq.is_none()
        && let Some(kf) = keyframe
        && let Ok(Some((s, obu))) = av1::find_sequence_header(kf)
    {
        if record.is_none() {
            record = Some(av1::Av1Config::from_sequence_header(&s, obu));
            notes.push("av1C built from the first keyframe's sequence header".to_string());
        }
        seq = Some(s);
    }
    let mut record = record.ok_or(CodecError::Missing {
        codec: "AV1",
        expected: "an av1C CodecPrivate or a sequence header in the first keyframe",
    })?;
    if let Some(s) = &seq {
        let from_seq = av1::Av1Config::from_sequence_header(s, &[]);
        let mut fields = record.clone();
        fields.config_obus = Bytes::new();
        fields.initial_presentation_delay = None;
        if fields != from_seq {
            notes.push(
                "the av1C fields disagree with the sequence header; rewritten from the header"
                    .to_string(),
            );
            record = av1::Av1Config {
                config_obus: record.config_obus.clone(),
                initial_presentation_delay: record.initial_presentation_delay,
                ..from_seq
            };
        }
    }
    let (width, height) = match (&track.video, &seq) {
        (Some(v), _) if v.width > 0 && v.height > 0 => (v.width, v.height),
        (_, Some(s)) => (s.max_frame_width, s.max_frame_height),
        _ => {
            return Err(CodecError::Missing {
                codec: "AV1",
                expected: "the track's picture size or a sequence header",
            });
        }
    };
    let frame_rate = seq
        .as_ref()
        .and_then(|s| s.timing)
        .filter(|&(n, t)| n > 0 && t > 0)
        .map(|(n, t)| {
            let g = h264::gcd(u64::from(t), u64::from(n));
            ((u64::from(t) / g) as u32, (u64::from(n) / g) as u32)
        })
        .or_else(|| track_frame_rate(track));
    Ok(CmafInfo {
        codec: Codec::Av1,
        codec_string: record.codec_string(),
        sample_entry: "av01",
        timescale: VIDEO_TIMESCALE,
        video: Some(CmafVideo {
            width,
            height,
            sample_aspect_ratio: None,
            frame_rate,
            // AV1 temporal units are in presentation order (hidden frames ride along).
            reorder_frames: 0,
        }),
        audio: None,
        config: CodecConfig::Av1 {
            record,
            sequence_header: seq,
        },
        notes,
    })
}

fn flac_info(private: Option<&[u8]>) -> Result<CmafInfo, CodecError> {
    let c = flac::FlacConfig::parse(private.ok_or(CodecError::Missing {
        codec: "FLAC",
        expected: "a \"fLaC\" + metadata blocks CodecPrivate",
    })?)?;
    let si = &c.stream_info;
    let mut notes = Vec::new();
    if si.sample_rate > 65_535 {
        notes.push(format!(
            "{} Hz does not fit the 16.16 sample rate of an MP4 audio sample entry",
            si.sample_rate
        ));
    }
    let audio = CmafAudio {
        sample_rate: si.sample_rate,
        channels: u32::from(si.channels),
        bits_per_sample: Some(u32::from(si.bits_per_sample)),
    };
    Ok(CmafInfo {
        codec: Codec::Flac,
        codec_string: c.codec_string().to_string(),
        sample_entry: "fLaC",
        timescale: audio.sample_rate,
        video: None,
        audio: Some(audio),
        config: CodecConfig::Flac(c),
        notes,
    })
}

/// G.711 as the FLAC stream the CMAF pipeline transcodes it to: 16-bit PCM at the track's
/// rate and channel count (`mux::flac::G711ToFlac` writes frames that agree with this
/// STREAMINFO).
fn g711_info(track: &Track) -> Result<CmafInfo, CodecError> {
    const WHAT: &str = "G.711 track";
    let a = track.audio.as_ref().ok_or(CodecError::Missing {
        codec: "G.711",
        expected: "the track's sample rate and channel count",
    })?;
    let rate = a.sample_rate;
    if !(rate >= 1.0 && rate <= f64::from(flac::MAX_SAMPLE_RATE) && rate.fract() == 0.0) {
        return Err(CodecError::Invalid {
            what: WHAT,
            reason: format!("sample rate {rate} Hz is not a whole number FLAC can code"),
        });
    }
    let rate = rate as u32;
    if !(1..=8).contains(&a.channels) {
        return Err(CodecError::BadValue {
            what: WHAT,
            field: "channels",
            value: u64::from(a.channels),
            expected: "1..8 (FLAC)",
        });
    }
    let si = flac::StreamInfo::live(rate, a.channels as u8, 16);
    let config = flac::FlacConfig::from_stream_info(&si);
    let mut notes = vec![format!(
        "{} decoded to 16-bit PCM and carried as FLAC",
        track.codec.name()
    )];
    if rate > 65_535 {
        notes.push(format!(
            "{rate} Hz does not fit the 16.16 sample rate of an MP4 audio sample entry"
        ));
    }
    Ok(CmafInfo {
        codec: Codec::Flac,
        codec_string: config.codec_string().to_string(),
        sample_entry: "fLaC",
        timescale: rate,
        video: None,
        audio: Some(CmafAudio {
            sample_rate: rate,
            channels: a.channels,
            bits_per_sample: Some(16),
        }),
        config: CodecConfig::Flac(config),
        notes,
    })
}
