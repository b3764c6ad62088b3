//! From what `media::codec` read out of a track's configuration to the sample entry the
//! init segment is written with.

use bytes::Bytes;

use super::{
    AudioParams, FlacParams, OpusMapping, OpusParams, SampleEntry, TrackConfig, VideoParams,
    Vp9Params,
};
use crate::media::codec::{CmafInfo, CodecConfig};

fn video_params(info: &CmafInfo) -> VideoParams {
    let Some(v) = &info.video else {
        return VideoParams::default();
    };
    // A non-square pixel aspect ratio becomes the display size (tkhd + pasp).
    let display_width = v
        .sample_aspect_ratio
        .filter(|&(n, d)| n != d && d != 0)
        .map(|(n, d)| (u64::from(v.width) * u64::from(n) / u64::from(d)) as u32);
    VideoParams {
        width: v.width,
        height: v.height,
        display_width,
        display_height: display_width.map(|_| v.height),
    }
}

fn audio_params(info: &CmafInfo) -> AudioParams {
    let (channels, sample_rate, bits) =
        info.audio.as_ref().map_or((2, info.timescale, None), |a| {
            (a.channels, a.sample_rate, a.bits_per_sample)
        });
    AudioParams {
        channels: u16::try_from(channels).unwrap_or(2),
        sample_rate,
        bits_per_sample: bits.and_then(|b| u16::try_from(b).ok()).unwrap_or(16),
    }
}

/// The init segment configuration of track `track_id` (1-based) from its codec info.
pub fn track_config(info: &CmafInfo, track_id: u32) -> TrackConfig {
    let sample_entry = match &info.config {
        CodecConfig::Avc { .. } => SampleEntry::H264 {
            avcc: info.config.decoder_config(),
            video: video_params(info),
        },
        CodecConfig::Hevc { .. } => SampleEntry::H265 {
            hvcc: info.config.decoder_config(),
            video: video_params(info),
        },
        CodecConfig::Av1 { .. } => SampleEntry::Av1 {
            av1c: info.config.decoder_config(),
            video: video_params(info),
        },
        CodecConfig::Vp9(c) => SampleEntry::Vp9 {
            vpcc: Vp9Params {
                profile: c.profile,
                level: c.level,
                bit_depth: c.bit_depth,
                chroma_subsampling: c.chroma_subsampling,
                full_range: c.full_range,
                colour_primaries: c.colour_primaries,
                transfer_characteristics: c.transfer_characteristics,
                matrix_coefficients: c.matrix_coefficients,
            },
            video: video_params(info),
        },
        CodecConfig::Aac(asc) => SampleEntry::Aac {
            asc: asc.raw.clone(),
            audio: audio_params(info),
        },
        CodecConfig::Opus(head) => SampleEntry::Opus(OpusParams {
            output_channel_count: head.channels,
            pre_skip: head.pre_skip,
            input_sample_rate: head.input_sample_rate,
            output_gain: head.output_gain,
            mapping: head.mapping.as_ref().map(|m| OpusMapping {
                family: head.mapping_family,
                stream_count: m.stream_count,
                coupled_count: m.coupled_count,
                channel_mapping: m.mapping.clone(),
            }),
        }),
        CodecConfig::Flac(c) => SampleEntry::Flac(FlacParams {
            streaminfo: c
                .blocks
                .first()
                .map(|b| b.data.clone())
                .unwrap_or_else(Bytes::new),
            audio: audio_params(info),
        }),
    };
    TrackConfig {
        track_id,
        timescale: info.timescale,
        language: None,
        sample_entry,
    }
}
