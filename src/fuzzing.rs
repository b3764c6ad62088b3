//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay in
//! `cargo test`, so a crash found by the fuzzer is replayed by the same code path.

use std::io::Read;

use crate::ingest::body::{BodyFraming, BodyReader};
use crate::ingest::mkv::{DemuxEvent, DemuxLimits, MkvDemuxer};
use crate::server::http;

/// Feeds `data` to the demuxer, whole or in pieces whose sizes come from `seed`, and
/// drains every event. Returns the number of frames seen.
pub fn demux_all(data: &[u8], seed: Option<u8>) -> usize {
    let limits = DemuxLimits {
        max_element_size: 1 << 20,
        max_header_size: 256 << 10,
        max_tracks: 8,
    };
    let mut demux = MkvDemuxer::new(limits);
    let mut frames = 0;
    let mut rest = data;
    let mut state = u32::from(seed.unwrap_or(0)) | 1;
    let mut drain = |demux: &mut MkvDemuxer, eof: bool| -> bool {
        loop {
            let event = if eof {
                demux.finish()
            } else {
                demux.next_event()
            };
            match event {
                Ok(Some(DemuxEvent::Frame(_))) => frames += 1,
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    while !rest.is_empty() {
        let n = match seed {
            None => rest.len(),
            Some(_) => {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                1 + (state as usize % 4096).min(rest.len() - 1)
            }
        };
        demux.feed(&rest[..n]);
        rest = &rest[n..];
        if !drain(&mut demux, false) {
            return frames;
        }
    }
    drain(&mut demux, true);
    frames
}

/// Parses a request head and routes its path.
pub fn http_request(data: &[u8]) {
    if let Ok(Some(req)) = http::parse_request(data) {
        let _ = http::route(&req.path);
        let _ = http::percent_decode(&req.query);
        for key in ["_HLS_msn", "_HLS_part", "_HLS_skip"] {
            let _ = http::query_param(&req.query, key).map(str::parse::<u64>);
        }
    }
}

/// Reads a body framed by the first byte's choice (chunked, a length, until close).
pub fn http_body(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framing = match mode % 3 {
        0 => BodyFraming::Chunked,
        1 => BodyFraming::Length(u64::from(mode) * 37),
        _ => BodyFraming::None,
    };
    let split = rest.len() / 2;
    let mut r = BodyReader::new(&rest[split..], rest[..split].to_vec(), framing, true);
    let mut out = [0u8; 997];
    while let Ok(n) = r.read(&mut out) {
        if n == 0 {
            break;
        }
    }
}

/// Every codec configuration parser on arbitrary bytes; the first byte picks the parser.
/// Records that parse must survive a write and re-parse unchanged.
pub fn codec_config(data: &[u8]) {
    use crate::media::codec::{aac, av1, cmaf_info, flac, h264, h265, opus, vp9};
    use crate::media::{AudioInfo, Codec, Track, VideoInfo};

    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let half = rest.len() / 2;
    let third = rest.len() / 3;
    match pick % 15 {
        0 => {
            if let Ok(c) = h264::AvcDecoderConfig::parse(rest) {
                assert_eq!(
                    h264::AvcDecoderConfig::parse(&c.to_bytes()).as_ref(),
                    Ok(&c)
                );
                for s in &c.sps {
                    if let Ok(s) = h264::AvcSps::parse(s) {
                        let _ = (s.codec_string(), s.reorder_frames(), s.frame_rate());
                    }
                }
            }
        }
        1 => {
            if let Ok(s) = h264::AvcSps::parse(rest) {
                let _ = (s.codec_string(), s.reorder_frames(), s.frame_rate());
            }
        }
        2 => {
            if let Ok(b) = h264::build_avcc(&[&rest[..half]], &[&rest[half..]]) {
                assert!(h264::AvcDecoderConfig::parse(&b).is_ok());
            }
        }
        3 => {
            if let Ok(c) = h265::HevcDecoderConfig::parse(rest) {
                assert_eq!(
                    h265::HevcDecoderConfig::parse(&c.to_bytes()).as_ref(),
                    Ok(&c)
                );
                let _ = c.ptl.codec_string("hvc1");
                let _ = c.with_complete_parameter_sets().to_bytes();
            }
        }
        4 => {
            if let Ok(s) = h265::HevcSps::parse(rest) {
                let _ = s.ptl.codec_string("hvc1");
            }
        }
        5 => {
            let (a, b) = rest.split_at(third);
            let (b, c) = b.split_at(third);
            if let Ok(b) = h265::build_hvcc(&[a], &[b], &[c]) {
                assert!(h265::HevcDecoderConfig::parse(&b).is_ok());
            }
        }
        6 => {
            if let Ok(a) = aac::AudioSpecificConfig::parse(rest) {
                let _ = (a.codec_string(), a.channels(), a.output_sample_rate());
            }
        }
        7 => {
            if let [aot, r0, r1, r2, ch, ..] = *rest {
                let rate = u32::from_be_bytes([0, r0, r1, r2]);
                if let Ok(b) = aac::build_asc(aot, rate, u32::from(ch)) {
                    let a = aac::AudioSpecificConfig::parse(&b).expect("a built ASC parses");
                    assert_eq!((a.object_type, a.sample_rate), (aot, rate));
                }
            }
        }
        8 => {
            if let Ok(h) = opus::OpusHead::parse(rest) {
                let _ = h.dops_payload();
            }
        }
        9 => {
            if let Ok(k) = vp9::parse_keyframe(rest) {
                let level = vp9::level_for(k.width, k.height, Some((30, 1)));
                if let Ok(c) = vp9::Vp9Config::from_keyframe(&k, &Default::default(), level) {
                    let _ = (c.codec_string_long(), c.vpcc_payload());
                }
            }
        }
        10 => {
            let _ = vp9::Vp9CodecPrivate::parse(rest);
        }
        11 => {
            if let Ok(c) = av1::Av1Config::parse(rest) {
                assert_eq!(av1::Av1Config::parse(&c.to_bytes()).as_ref(), Ok(&c));
                if let Ok(Some((s, _))) = av1::find_sequence_header(&c.config_obus) {
                    let _ = c.codec_string_long(&s);
                }
            }
        }
        12 => {
            let _ = av1::find_sequence_header(rest);
        }
        13 => {
            if let Ok(c) = flac::FlacConfig::parse(rest) {
                let _ = c.dfla_payload();
            }
        }
        _ => {
            // The entry point: the next byte picks the codec (and, in its top bits,
            // whether there is a CodecPrivate and a keyframe), the one after it where the
            // rest splits between the CodecPrivate and the first keyframe.
            let [which, split, ref rest @ ..] = *rest else {
                return;
            };
            let codecs = [
                Codec::H264,
                Codec::H265,
                Codec::Vp9,
                Codec::Av1,
                Codec::Aac,
                Codec::Opus,
                Codec::Flac,
                Codec::Mp3,
            ];
            let codec = codecs[usize::from(which & 0x3F) % codecs.len()];
            let (private, keyframe) = rest.split_at(usize::from(split).min(rest.len()));
            let track = Track {
                codec,
                codec_id: String::new(),
                codec_private: (which & 0x80 == 0).then(|| bytes::Bytes::copy_from_slice(private)),
                video: Some(VideoInfo {
                    width: 320,
                    height: 240,
                    ..Default::default()
                }),
                audio: Some(AudioInfo {
                    sample_rate: 48000.0,
                    channels: 2,
                    bit_depth: None,
                }),
                default_duration_ns: Some(40_000_000),
                codec_delay_ns: None,
                seek_pre_roll_ns: None,
                language: None,
            };
            let keyframe = (which & 0x40 == 0).then_some(keyframe);
            if let Ok(crate::media::codec::CmafTrack::Carried(info)) = cmaf_info(&track, keyframe) {
                let _ = info.config.decoder_config();
            }
        }
    }
}
