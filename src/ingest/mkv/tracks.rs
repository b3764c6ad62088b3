//! The header elements: the EBML header, Info and Tracks, each buffered whole (bounded by
//! `DemuxLimits::max_header_size`) and read here.

use bytes::{Bytes, BytesMut};

use super::DemuxError;
use super::ebml::{self, id};
use crate::media::{AudioInfo, Codec, Track, TrackKind, VideoInfo};

/// Matroska's default TimestampScale: 1 ms in nanoseconds.
pub(super) const DEFAULT_TIMESTAMP_SCALE: u64 = 1_000_000;

/// A track as the demuxer needs it: the public description plus what frames need.
#[derive(Clone, Debug)]
pub(super) struct TrackState {
    /// The Matroska TrackNumber that blocks refer to.
    pub number: u64,
    pub track: Track,
    /// Header-stripping compression: bytes to put back in front of every frame.
    pub frame_prefix: Option<Bytes>,
}

/// Checks the EBML header: the document must be Matroska or WebM.
pub(super) fn parse_ebml_header(body: &[u8]) -> Result<(), DemuxError> {
    let bad = |why: String| DemuxError::NotMatroska(format!("EBML header: {why}"));
    let mut doc_type = None;
    for child in ebml::children(body) {
        let (cid, data) = child.map_err(bad)?;
        match cid {
            id::DOC_TYPE => doc_type = Some(ebml::string(data)),
            id::EBML_MAX_ID_LENGTH => {
                let v = ebml::uint(cid, data).map_err(bad)?;
                if v > 4 {
                    return Err(bad(format!("EBMLMaxIDLength {v} (Matroska allows 4)")));
                }
            }
            id::EBML_MAX_SIZE_LENGTH => {
                let v = ebml::uint(cid, data).map_err(bad)?;
                if v > 8 {
                    return Err(bad(format!("EBMLMaxSizeLength {v} (at most 8)")));
                }
            }
            _ => {}
        }
    }
    // The EBML default DocType is "matroska".
    match doc_type.as_deref() {
        None | Some("matroska") | Some("webm") => Ok(()),
        Some(other) => Err(DemuxError::NotMatroska(format!(
            "the EBML DocType is {other:?}, not \"matroska\" or \"webm\""
        ))),
    }
}

/// Reads the TimestampScale from an Info element.
pub(super) fn parse_info(body: &[u8]) -> Result<u64, DemuxError> {
    let bad = |why: String| DemuxError::InvalidHeader(format!("Info: {why}"));
    let mut scale = DEFAULT_TIMESTAMP_SCALE;
    for child in ebml::children(body) {
        let (cid, data) = child.map_err(bad)?;
        if cid == id::TIMESTAMP_SCALE {
            scale = ebml::uint(cid, data).map_err(bad)?;
            if scale == 0 {
                return Err(bad("TimestampScale is 0".into()));
            }
        }
    }
    Ok(scale)
}

/// Reads a Tracks element. Tracks that are neither audio nor video (subtitles, buttons,
/// metadata) are left out, so their blocks are skipped; an audio or video track with a
/// codec muxcast does not carry is an error.
pub(super) fn parse_tracks(body: &[u8], max_tracks: usize) -> Result<Vec<TrackState>, DemuxError> {
    let bad = |why: String| DemuxError::InvalidHeader(format!("Tracks: {why}"));
    let mut out: Vec<TrackState> = Vec::new();
    let mut entries = 0usize;
    for child in ebml::children(body) {
        let (cid, data) = child.map_err(bad)?;
        if cid != id::TRACK_ENTRY {
            continue;
        }
        entries += 1;
        if entries > max_tracks {
            return Err(DemuxError::TooManyTracks { limit: max_tracks });
        }
        let Some(state) = parse_track_entry(data)? else {
            continue;
        };
        if out.iter().any(|t| t.number == state.number) {
            return Err(bad(format!("track number {} appears twice", state.number)));
        }
        out.push(state);
    }
    if out.is_empty() {
        return Err(DemuxError::InvalidHeader(
            "Tracks: no audio or video track".into(),
        ));
    }
    Ok(out)
}

#[derive(Default)]
struct ContentEncoding {
    order: u64,
    scope: u64,
    kind: u64,
    /// Some(algo) when a ContentCompression element was present.
    comp_algo: Option<u64>,
    comp_settings: Vec<u8>,
    encrypted: bool,
}

fn parse_track_entry(body: &[u8]) -> Result<Option<TrackState>, DemuxError> {
    let bad = |why: String| DemuxError::InvalidHeader(format!("TrackEntry: {why}"));
    let mut number = None;
    let mut track_type = None;
    let mut codec_id = None;
    let mut codec_private: Option<&[u8]> = None;
    let mut default_duration = None;
    let mut codec_delay = None;
    let mut seek_pre_roll = None;
    let mut language = None;
    let mut language_bcp47 = None;
    let mut video = None;
    let mut audio = None;
    let mut encodings = Vec::new();
    for child in ebml::children(body) {
        let (cid, data) = child.map_err(bad)?;
        match cid {
            id::TRACK_NUMBER => number = Some(ebml::uint(cid, data).map_err(bad)?),
            id::TRACK_TYPE => track_type = Some(ebml::uint(cid, data).map_err(bad)?),
            id::CODEC_ID => codec_id = Some(ebml::string(data)),
            id::CODEC_PRIVATE => codec_private = Some(data),
            id::DEFAULT_DURATION => {
                default_duration = Some(ebml::uint(cid, data).map_err(bad)?).filter(|&d| d > 0)
            }
            id::CODEC_DELAY => codec_delay = Some(ebml::uint(cid, data).map_err(bad)?),
            id::SEEK_PRE_ROLL => seek_pre_roll = Some(ebml::uint(cid, data).map_err(bad)?),
            id::LANGUAGE => language = Some(ebml::string(data)),
            id::LANGUAGE_BCP47 => language_bcp47 = Some(ebml::string(data)),
            id::VIDEO => video = Some(parse_video(data).map_err(bad)?),
            id::AUDIO => audio = Some(parse_audio(data).map_err(bad)?),
            id::CONTENT_ENCODINGS => encodings = parse_encodings(data).map_err(bad)?,
            _ => {}
        }
    }
    let number = number
        .filter(|&n| n > 0)
        .ok_or_else(|| bad("missing or zero TrackNumber".into()))?;
    let codec_id = codec_id.ok_or_else(|| bad(format!("track {number} has no CodecID")))?;

    // Track types 1 and 2 are video and audio; CodecIDs say the same with V_ and A_.
    let is_media = matches!(track_type, Some(1 | 2))
        || codec_id.starts_with("V_")
        || codec_id.starts_with("A_");
    if !is_media {
        log::info!("track {number}: ignoring {codec_id} (neither audio nor video)");
        return Ok(None);
    }

    // ContentEncodings: only header stripping is undone here.
    encodings.sort_by_key(|e| std::cmp::Reverse(e.order));
    let mut frame_prefix: Vec<u8> = Vec::new();
    let mut private_prefix: Vec<u8> = Vec::new();
    for enc in &encodings {
        if enc.kind == 1 || enc.encrypted {
            return Err(DemuxError::UnsupportedEncoding {
                track: number,
                what: "encryption (ContentEncryption)".into(),
            });
        }
        // ContentCompAlgo defaults to 0 (zlib).
        match enc.comp_algo.unwrap_or(0) {
            3 => {}
            algo => {
                let name = match algo {
                    0 => "zlib",
                    1 => "bzlib",
                    2 => "lzo1x",
                    _ => "unknown",
                };
                return Err(DemuxError::UnsupportedEncoding {
                    track: number,
                    what: format!("{name} compression (ContentCompAlgo {algo})"),
                });
            }
        }
        // Decoding goes from the highest order down; each step prepends its bytes.
        if enc.scope & 1 != 0 {
            let mut p = enc.comp_settings.clone();
            p.extend_from_slice(&frame_prefix);
            frame_prefix = p;
        }
        if enc.scope & 2 != 0 {
            let mut p = enc.comp_settings.clone();
            p.extend_from_slice(&private_prefix);
            private_prefix = p;
        }
    }
    let codec_private = match (codec_private, private_prefix.is_empty()) {
        (None, _) => None,
        (Some(p), true) => Some(Bytes::copy_from_slice(p)),
        (Some(p), false) => {
            let mut b = BytesMut::with_capacity(private_prefix.len() + p.len());
            b.extend_from_slice(&private_prefix);
            b.extend_from_slice(p);
            Some(b.freeze())
        }
    };

    let codec = Codec::from_matroska(&codec_id, codec_private.as_deref()).ok_or_else(|| {
        DemuxError::UnsupportedCodec {
            track: number,
            codec_id: codec_id.clone(),
        }
    })?;
    let (video, audio) = match codec.kind() {
        TrackKind::Video => (Some(video.unwrap_or_default()), None),
        TrackKind::Audio => (
            None,
            Some(audio.unwrap_or(AudioInfo {
                sample_rate: 8000.0,
                channels: 1,
                bit_depth: None,
            })),
        ),
    };
    Ok(Some(TrackState {
        number,
        track: Track {
            codec,
            codec_id,
            codec_private,
            video,
            audio,
            default_duration_ns: default_duration,
            codec_delay_ns: codec_delay,
            seek_pre_roll_ns: seek_pre_roll,
            language: language_bcp47.or(language).filter(|l| !l.is_empty()),
        },
        frame_prefix: (!frame_prefix.is_empty()).then(|| Bytes::from(frame_prefix)),
    }))
}

fn parse_video(body: &[u8]) -> Result<VideoInfo, String> {
    let to_u32 = |v: u64| u32::try_from(v).map_err(|_| format!("video dimension {v} too large"));
    let mut info = VideoInfo::default();
    let (mut dw, mut dh, mut unit) = (None, None, 0);
    for child in ebml::children(body) {
        let (cid, data) = child?;
        match cid {
            id::PIXEL_WIDTH => info.width = to_u32(ebml::uint(cid, data)?)?,
            id::PIXEL_HEIGHT => info.height = to_u32(ebml::uint(cid, data)?)?,
            id::DISPLAY_WIDTH => dw = Some(to_u32(ebml::uint(cid, data)?)?),
            id::DISPLAY_HEIGHT => dh = Some(to_u32(ebml::uint(cid, data)?)?),
            id::DISPLAY_UNIT => unit = ebml::uint(cid, data)?,
            _ => {}
        }
    }
    match (unit, dw, dh) {
        // Pixels (the default); DisplayWidth/Height default to the pixel size.
        (0, _, _) => {
            let dw = dw.unwrap_or(info.width);
            let dh = dh.unwrap_or(info.height);
            if (dw, dh) != (info.width, info.height) {
                info.display_width = Some(dw);
                info.display_height = Some(dh);
            }
        }
        // Display aspect ratio: keep the height, widen or narrow the width.
        (3, Some(aw), Some(ah)) if aw > 0 && ah > 0 => {
            let w = u64::from(info.height) * u64::from(aw) / u64::from(ah);
            let w = u32::try_from(w).unwrap_or(u32::MAX);
            if w != info.width {
                info.display_width = Some(w);
                info.display_height = Some(info.height);
            }
        }
        // Centimetres or inches say nothing about the shape in pixels we can trust.
        _ => {}
    }
    Ok(info)
}

fn parse_audio(body: &[u8]) -> Result<AudioInfo, String> {
    // Matroska defaults: 8000 Hz, one channel.
    let mut info = AudioInfo {
        sample_rate: 8000.0,
        channels: 1,
        bit_depth: None,
    };
    for child in ebml::children(body) {
        let (cid, data) = child?;
        match cid {
            id::SAMPLING_FREQUENCY => {
                let f = ebml::float(cid, data)?;
                if !(f.is_finite() && f > 0.0) {
                    return Err(format!("SamplingFrequency {f}"));
                }
                info.sample_rate = f;
            }
            id::CHANNELS => {
                let c = ebml::uint(cid, data)?;
                info.channels = u32::try_from(c)
                    .ok()
                    .filter(|&c| c > 0)
                    .ok_or_else(|| format!("Channels {c}"))?;
            }
            id::BIT_DEPTH => {
                info.bit_depth = u32::try_from(ebml::uint(cid, data)?)
                    .ok()
                    .filter(|&b| b > 0)
            }
            _ => {}
        }
    }
    Ok(info)
}

fn parse_encodings(body: &[u8]) -> Result<Vec<ContentEncoding>, String> {
    let mut out = Vec::new();
    for child in ebml::children(body) {
        let (cid, data) = child?;
        if cid != id::CONTENT_ENCODING {
            continue;
        }
        // Defaults: order 0, scope 1 (frames), type 0 (compression).
        let mut enc = ContentEncoding {
            scope: 1,
            ..Default::default()
        };
        for child in ebml::children(data) {
            let (cid, data) = child?;
            match cid {
                id::CONTENT_ENCODING_ORDER => enc.order = ebml::uint(cid, data)?,
                id::CONTENT_ENCODING_SCOPE => enc.scope = ebml::uint(cid, data)?,
                id::CONTENT_ENCODING_TYPE => enc.kind = ebml::uint(cid, data)?,
                id::CONTENT_ENCRYPTION => enc.encrypted = true,
                id::CONTENT_COMPRESSION => {
                    enc.comp_algo = Some(0);
                    for child in ebml::children(data) {
                        let (cid, data) = child?;
                        match cid {
                            id::CONTENT_COMP_ALGO => enc.comp_algo = Some(ebml::uint(cid, data)?),
                            id::CONTENT_COMP_SETTINGS => enc.comp_settings = data.to_vec(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(enc);
    }
    Ok(out)
}
