//! A whole-file remux to CMAF, shared by the unit tests (`tests.rs`) and the dev-only
//! `examples/fmp4_dump.rs` (which includes this file by path): Matroska bytes → the crate's
//! own demuxer → timing → init segment + chunks per track.
//!
//! The codec parameters that `media::codec` will provide (OpusHead, FLAC STREAMINFO, VP9
//! header fields, AAC frame length) are read here in the simplest way that fits the
//! testdata; this is test scaffolding, not the server's path.
//!
//! Names come from the including module: `Bytes`, the `fmp4` items, `timing`, `Track`,
//! `Frame`, `Codec` and the Matroska demuxer types.

use super::*;

/// The lead-in before a stream's first frame (see `TimeMap`): a whole second.
pub const LEAD_IN_NS: i64 = 1_000_000_000;

/// Demuxes a whole file: the first Tracks and every frame.
pub fn demux(bytes: &[u8]) -> (Vec<Track>, Vec<Frame>) {
    let mut demux = MkvDemuxer::new(DemuxLimits::default());
    demux.feed(bytes);
    let mut tracks = Vec::new();
    let mut frames = Vec::new();
    let mut finishing = false;
    loop {
        let event = if finishing {
            demux.finish()
        } else {
            demux.next_event()
        };
        match event {
            Ok(Some(DemuxEvent::Tracks(t))) => {
                if tracks.is_empty() {
                    tracks = t;
                }
            }
            Ok(Some(DemuxEvent::Frame(f))) => frames.push(f),
            Ok(Some(DemuxEvent::Resync { .. })) => {}
            Ok(None) if !finishing => finishing = true,
            Ok(None) | Err(_) => break,
        }
    }
    (tracks, frames)
}

fn video_params(track: &Track) -> VideoParams {
    let v = track.video.clone().unwrap_or_default();
    VideoParams {
        width: v.width,
        height: v.height,
        display_width: v.display_width,
        display_height: v.display_height,
    }
}

fn audio_params(track: &Track, bits: u16) -> AudioParams {
    let a = track.audio.clone().unwrap_or_default();
    AudioParams {
        channels: u16::try_from(a.channels).unwrap_or(2),
        sample_rate: a.sample_rate.round() as u32,
        bits_per_sample: bits,
    }
}

/// OpusHead (RFC 7845 §5.1, little-endian) → dOps fields.
fn opus_params(head: &[u8]) -> Option<OpusParams> {
    if head.len() < 19 || &head[..8] != b"OpusHead" {
        return None;
    }
    let channels = head[9];
    let family = head[18];
    let mapping = if family == 0 {
        None
    } else {
        let table = head.get(21..21 + usize::from(channels))?;
        Some(OpusMapping {
            family,
            stream_count: head[19],
            coupled_count: head[20],
            channel_mapping: table.to_vec(),
        })
    };
    Some(OpusParams {
        output_channel_count: channels,
        pre_skip: u16::from_le_bytes([head[10], head[11]]),
        input_sample_rate: u32::from_le_bytes([head[12], head[13], head[14], head[15]]),
        output_gain: i16::from_le_bytes([head[16], head[17]]),
        mapping,
    })
}

/// The CMAF track for a demuxed track, or `None` for codecs fMP4 does not carry here.
pub fn track_config(track: &Track) -> Option<TrackConfig> {
    let private = track.codec_private.clone().unwrap_or_default();
    let entry = match track.codec {
        Codec::H264 => SampleEntry::H264 {
            avcc: private,
            video: video_params(track),
        },
        Codec::H265 => SampleEntry::H265 {
            hvcc: private,
            video: video_params(track),
        },
        Codec::Av1 => SampleEntry::Av1 {
            av1c: private,
            video: video_params(track),
        },
        // The testdata's VP9 is profile 0, 8-bit 4:2:0.
        Codec::Vp9 => SampleEntry::Vp9 {
            vpcc: Vp9Params::default(),
            video: video_params(track),
        },
        Codec::Aac => SampleEntry::Aac {
            asc: private,
            audio: audio_params(track, 16),
        },
        Codec::Opus => SampleEntry::Opus(opus_params(&private)?),
        // "fLaC", a 4-byte block header, then the 34-byte STREAMINFO.
        Codec::Flac => {
            let bits = track.audio.as_ref().and_then(|a| a.bit_depth).unwrap_or(16);
            SampleEntry::Flac(FlacParams {
                streaminfo: private.get(8..42).map(Bytes::copy_from_slice)?,
                audio: audio_params(track, u16::try_from(bits).ok()?),
            })
        }
        _ => return None,
    };
    let mut config = TrackConfig::new(entry);
    config.language = track.language.clone();
    Some(config)
}

/// The frame length in ticks when the codec fixes it: AAC 1024 (960 with the
/// frameLengthFlag of an AAC-LC AudioSpecificConfig), Opus from the TOC byte.
pub fn audio_frame_len(track: &Track, frame: &Frame) -> Option<u32> {
    match track.codec {
        Codec::Aac => {
            let asc = track.codec_private.as_deref()?;
            let short = asc.get(1).is_some_and(|b| b & 0x04 != 0) && asc[0] >> 3 == 2;
            Some(if short { 960 } else { 1024 })
        }
        Codec::Opus => timing::opus_packet_samples(&frame.data),
        _ => None,
    }
}

/// The true reorder depth of a track's frames (what the SPS would declare at least).
pub fn reorder_depth(pts: &[i64]) -> usize {
    (0..pts.len())
        .map(|i| pts[..i].iter().filter(|&&p| p > pts[i]).count())
        .max()
        .unwrap_or(0)
}

/// One track remuxed: its config, init segment, samples and the bytes of each chunk with
/// whatever goes in front of it (styp, prft).
pub struct TrackOutput {
    pub index: usize,
    pub config: TrackConfig,
    pub init: Bytes,
    pub samples: Vec<Sample>,
    /// Each chunk: the samples it holds (a range into `samples`), and its bytes preceded by
    /// any styp/prft.
    pub chunks: Vec<(std::ops::Range<usize>, Vec<Bytes>)>,
    pub stats: timing::ReorderStats,
    pub origin_ns: i64,
}

impl TrackOutput {
    /// init + every chunk, as one file.
    pub fn file(&self) -> Vec<u8> {
        let mut out = self.init.to_vec();
        for (_, bufs) in &self.chunks {
            for b in bufs {
                out.extend_from_slice(b);
            }
        }
        out
    }
}

/// Remuxes every carried track of a Matroska file: video cut into a segment (styp + prft)
/// at each keyframe and parts of at most 5 frames; audio in chunks of 10 frames, a segment
/// every 5 chunks.
pub fn remux(bytes: &[u8]) -> Vec<TrackOutput> {
    let (tracks, frames) = demux(bytes);
    let origin_ns = frames.iter().map(|f| f.pts).min().unwrap_or(0) - LEAD_IN_NS;
    let mut out = Vec::new();
    for (index, track) in tracks.iter().enumerate() {
        let Some(config) = track_config(track) else {
            continue;
        };
        let Ok(init) = init_segment(&config) else {
            continue;
        };
        let map = timing::TimeMap::new(config.timescale, origin_ns);
        let mine: Vec<&Frame> = frames.iter().filter(|f| f.track == index).collect();
        let mut samples = Vec::with_capacity(mine.len());
        let mut stats = timing::ReorderStats::default();
        if config.sample_entry.is_video() {
            let pts: Vec<i64> = mine.iter().map(|f| map.ticks(f.pts)).collect();
            let depth = reorder_depth(&pts);
            let hint = track
                .default_duration_ns
                .and_then(|d| u32::try_from(timing::ns_to_ticks(d as i64, config.timescale)).ok());
            let mut r = timing::DtsReorder::new(timing::ReorderDepth::Fixed(depth))
                .with_frame_duration(hint);
            for f in &mine {
                r.push(map.ticks(f.pts), f.keyframe, f.data.clone());
                samples.extend(std::iter::from_fn(|| r.pop()));
            }
            let last = mine
                .last()
                .and_then(|f| f.duration)
                .and_then(|d| u32::try_from(timing::ns_to_ticks(d as i64, config.timescale)).ok());
            r.flush(last);
            samples.extend(std::iter::from_fn(|| r.pop()));
            stats = r.stats();
        } else {
            let mut a = timing::AudioTimer::new();
            for f in &mine {
                a.push(map.ticks(f.pts), audio_frame_len(track, f), f.data.clone());
                samples.extend(std::iter::from_fn(|| a.pop()));
            }
            a.flush(None);
            samples.extend(std::iter::from_fn(|| a.pop()));
        }

        let track_id = config.track_id;
        let mut writer = FragmentWriter::new(track_id);
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut audio_chunks = 0;
        while start < samples.len() {
            let (end, segment_start) = if config.sample_entry.is_video() {
                let mut end = start + 1;
                while end < samples.len() && end - start < 5 && !samples[end].sync {
                    end += 1;
                }
                (end, samples[start].sync)
            } else {
                audio_chunks += 1;
                ((start + 10).min(samples.len()), audio_chunks % 5 == 1)
            };
            let mut bufs = Vec::new();
            if segment_start {
                bufs.push(styp());
                // A fixed wall clock: the test only needs a well-formed box.
                let ntp = ntp_timestamp(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
                );
                bufs.push(prft(
                    track_id,
                    ntp,
                    samples[start].pts,
                    PrftSemantics::Input,
                ));
            }
            let Ok(chunk) = writer.write(&samples[start..end]) else {
                break;
            };
            bufs.extend(chunk.buffers);
            chunks.push((start..end, bufs));
            start = end;
        }
        out.push(TrackOutput {
            index,
            config,
            init,
            samples,
            chunks,
            stats,
            origin_ns,
        });
    }
    out
}
