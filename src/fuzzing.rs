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
        max_skip_size: 16 << 20,
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
        let route = http::route(&req.path);
        let _ = route.stream();
        let _ = http::percent_decode(&req.query);
        for key in ["_HLS_msn", "_HLS_part", "_HLS_skip"] {
            let _ = http::query_param(&req.query, key).map(str::parse::<u64>);
        }
        // Credentials (query, Bearer, Basic) against a protected stream's rules.
        let secret = |s: &str| crate::server::access::Secret::new(s.into());
        let mut rules = crate::server::access::StreamAccess::reading(
            Some(secret("fuzz-read-token-0123")),
            Some(("fuzz", &secret("pass word"))),
            secret("fuzz-media-token-0123"),
        );
        rules.push_key = Some(secret("fuzz-push-key-01234"));
        let _ = rules.may_read(&req);
        let _ = rules.may_push(&req);
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

/// Parses a configuration file (its text as an operator might have mangled it). Never
/// panics; every error names a line of the text (0: the file as a whole); what is
/// accepted has servers, each with streams.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::config::parse(text, "fuzz.toml") {
        Ok(config) => {
            assert!(!config.servers.is_empty());
            for server in &config.servers {
                assert!(!server.streams.is_empty());
                let _ = server.server_options(false);
                for stream in &server.streams {
                    let _ = (stream.reader_options(), stream.publish_options());
                }
            }
            let _ = config.summary();
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty());
            let lines = 1 + text.bytes().filter(|&b| b == b'\n').count();
            for e in &errors.errors {
                assert!(e.line <= lines, "line {} of {lines}: {}", e.line, e.message);
            }
            let _ = errors.to_string();
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
    // The RTSP reader's scan of an H.265 access unit for an IRAP picture (camera bytes).
    let _ = crate::ingest::rtsp::h265_irap(rest);
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

/// Collects what a publisher sends, in order.
#[derive(Clone, Default)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<crate::stream::Update>>>);

impl crate::stream::Notify for Collect {
    fn send(&self, _stream: usize, update: crate::stream::Update) {
        if let Ok(mut v) = self.0.lock() {
            v.push(update);
        }
    }
}

/// Tracks of a real file (parameter sets the CMAF side accepts): H.264+AAC or H.265+AAC.
fn sample_tracks(h265: bool) -> Vec<crate::media::Track> {
    use std::sync::OnceLock;
    static TRACKS: OnceLock<[Vec<crate::media::Track>; 2]> = OnceLock::new();
    let all = TRACKS.get_or_init(|| {
        let read = |file: &[u8]| {
            let mut demux = MkvDemuxer::new(DemuxLimits::default());
            demux.feed(file);
            while let Ok(Some(e)) = demux.next_event() {
                if let DemuxEvent::Tracks(t) = e {
                    return t;
                }
            }
            Vec::new()
        };
        [
            read(include_bytes!("../testdata/live_ffmpeg.mkv")),
            read(include_bytes!("../testdata/h265_aac.mkv")),
        ]
    });
    all[usize::from(h265)].clone()
}

/// The muxers on an arbitrary frame sequence (structure-aware: the bytes are decoded into
/// frames of real tracks, with arbitrary payloads, keyframe flags and timestamps, loop
/// seams and resyncs). What comes out must parse back: the live Matroska (header plus
/// every chunk) demuxes into exactly the frames that were written, in order; every CMAF
/// track file decodes box by box with decode times running on without a gap, never after
/// presentation times, and each `mdat` holding exactly its samples. Returns how many
/// frames were written and how many CMAF samples were read back.
pub fn mux_round_trip(data: &[u8]) -> (usize, usize) {
    use crate::stream::cmaf::{CmafUpdate, SegmenterOptions};
    use crate::stream::{PublishOptions, Publisher, Update};
    use bytes::Bytes;

    let Some((&setup, mut rest)) = data.split_first() else {
        return (0, 0);
    };
    let tracks = sample_tracks(setup & 1 == 1);
    if tracks.is_empty() {
        return (0, 0);
    }
    let collect = Collect::default();
    let mut publisher = Publisher::new(
        0,
        Box::new(collect.clone()),
        PublishOptions {
            audio_cluster_ms: 500,
            cmaf: Some(SegmenterOptions {
                segment_ns: 1_000_000_000,
                part_ns: 200_000_000,
            }),
        },
    );
    publisher.tracks(tracks.clone());
    let count = |c: &Collect| c.0.lock().map_or(0, |v| v.len());
    let mut written: Vec<(usize, bool, Vec<u8>)> = Vec::new();
    let mut pts_ms = [0i64; 2];
    while rest.len() >= 4 {
        let (head, tail) = rest.split_at(4);
        rest = tail;
        match head[0] {
            0xFF => publisher.begin_segment(),
            0xFE => publisher.resync(),
            b => {
                let track = usize::from(b & 0x7F) % tracks.len();
                let keyframe = b & 0x80 != 0;
                let delta = i64::from(i16::from_le_bytes([head[1], head[2]]));
                pts_ms[track.min(1)] += delta;
                let len = usize::from(head[3]).min(rest.len());
                let (payload, tail) = rest.split_at(len);
                rest = tail;
                let before = count(&collect);
                publisher.frame(crate::media::Frame {
                    track,
                    pts: pts_ms[track.min(1)] * 1_000_000,
                    duration: None,
                    keyframe,
                    data: Bytes::copy_from_slice(payload),
                });
                let chunked = collect.0.lock().is_ok_and(|v| {
                    v[before..]
                        .iter()
                        .any(|u| matches!(u, Update::Chunk { .. }))
                });
                if chunked {
                    written.push((track, keyframe, payload.to_vec()));
                }
            }
        }
    }
    publisher.end(None);
    let updates = std::mem::take(&mut *collect.0.lock().unwrap());

    // Live Matroska: header + every chunk, read back by the demuxer.
    let mut mkv = Vec::new();
    let mut chunks = 0;
    for u in &updates {
        match u {
            Update::Headers(h) => mkv.extend_from_slice(&h.mkv),
            Update::Chunk { bytes, .. } => {
                mkv.extend_from_slice(bytes);
                chunks += 1;
            }
            _ => {}
        }
    }
    assert_eq!(chunks, written.len(), "one chunk per written frame");
    let mut demux = MkvDemuxer::new(DemuxLimits::default());
    demux.feed(&mkv);
    let mut read = Vec::new();
    loop {
        match demux.next_event().or_else(|_| demux.finish()) {
            Ok(Some(DemuxEvent::Frame(f))) => read.push((f.track, f.data.to_vec())),
            Ok(Some(_)) => {}
            Ok(None) => match demux.finish() {
                Ok(Some(DemuxEvent::Frame(f))) => read.push((f.track, f.data.to_vec())),
                Ok(Some(_)) => {}
                _ => break,
            },
            Err(e) => panic!("our own live Matroska does not parse back: {e}"),
        }
    }
    let expected: Vec<(usize, Vec<u8>)> = written.iter().map(|(t, _, d)| (*t, d.clone())).collect();
    assert_eq!(read.len(), expected.len(), "frames read back");
    assert!(
        read == expected,
        "frames read back differ from those written"
    );

    // CMAF: each rendition's init + parts, box by box.
    let mut files: Vec<Vec<u8>> = Vec::new();
    for u in updates {
        if let Update::Cmaf(c) = u {
            match c {
                CmafUpdate::Renditions { list, .. } => {
                    files = list.into_iter().map(|(_, init)| init.to_vec()).collect();
                }
                CmafUpdate::Part {
                    rendition, part, ..
                } => {
                    if let Some(f) = files.get_mut(rendition) {
                        for b in &part.buffers {
                            f.extend_from_slice(b);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let samples = files.iter().map(|f| check_track_file(f)).sum();
    (written.len(), samples)
}

/// One CMAF track file (init + chunks) decoded box by box with mp4-atom.
fn check_track_file(file: &[u8]) -> usize {
    use mp4_atom::{Decode, Moof, Moov};
    let mut at = 0usize;
    let mut moov: Option<Moov> = None;
    let mut moof: Option<(Moof, usize)> = None;
    let mut next_dts: Option<u64> = None;
    let mut samples = 0;
    while at < file.len() {
        assert!(file.len() - at >= 8, "a truncated box header");
        let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && at + size <= file.len(),
            "box size {size} at {at}"
        );
        let body = &file[at..at + size];
        match &body[4..8] {
            b"ftyp" | b"styp" | b"prft" => {}
            b"moov" => moov = Some(Moov::decode(&mut &body[..]).expect("moov decodes")),
            b"moof" => moof = Some((Moof::decode(&mut &body[..]).expect("moof decodes"), at)),
            b"mdat" => {
                let (m, moof_at) = moof.take().expect("a moof before each mdat");
                let trex = moov
                    .as_ref()
                    .expect("moov first")
                    .mvex
                    .as_ref()
                    .expect("mvex")
                    .trex[0]
                    .clone();
                let traf = &m.traf[0];
                let trun = &traf.trun[0];
                let mut dts = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
                if let Some(n) = next_dts {
                    assert_eq!(dts, n, "decode times run on");
                }
                let mut len = 0usize;
                for e in &trun.samples {
                    let size = e
                        .size
                        .or(traf.tfhd.default_sample_size)
                        .unwrap_or(trex.default_sample_size);
                    let duration = e
                        .duration
                        .or(traf.tfhd.default_sample_duration)
                        .unwrap_or(trex.default_sample_duration);
                    assert!(e.cts.unwrap_or(0) >= 0, "DTS after PTS");
                    len += size as usize;
                    dts += u64::from(duration);
                    samples += 1;
                }
                next_dts = Some(dts);
                assert_eq!(
                    moof_at + trun.data_offset.unwrap_or(0) as usize,
                    at + 8,
                    "data_offset"
                );
                assert_eq!(len, size - 8, "the mdat holds exactly its samples");
            }
            other => panic!("unexpected box {other:?}"),
        }
        at += size;
    }
    samples
}
