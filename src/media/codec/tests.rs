//! The codec private data and first keyframes of the files in testdata/, read with the
//! crate's own demuxer, checked against what ffprobe and ffmpeg report for the same files.
//!
//! Figures come from (ffmpeg/ffprobe 5.1.9, Debian 12):
//!   ffprobe -v error -show_streams -show_data testdata/FILE
//! and the codec strings from ffmpeg's DASH muxer (its HLS muxer writes CODECS only from
//! Annex B extradata, see `ffmpeg_hls_codec_strings`):
//!   ffmpeg -i testdata/FILE -map 0 -c copy -f dash -dash_segment_type mp4 /tmp/x/m.mpd
//!   grep -o 'codecs="[^"]*"' /tmp/x/m.mpd

use std::path::Path;

use super::*;
use crate::ingest::mkv::{DemuxEvent, DemuxLimits, MkvDemuxer};

/// The tracks of a testdata file and each track's first keyframe.
fn load(name: &str) -> (Vec<Track>, Vec<Option<Bytes>>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    let data = std::fs::read(&path).unwrap();
    let mut d = MkvDemuxer::new(DemuxLimits::default());
    d.feed(&data);
    let mut tracks = Vec::new();
    let mut first = Vec::new();
    while let Some(ev) = d.next_event().unwrap() {
        match ev {
            DemuxEvent::Tracks(t) => {
                first = vec![None; t.len()];
                tracks = t;
            }
            DemuxEvent::Frame(f) if f.keyframe && first[f.track].is_none() => {
                first[f.track] = Some(f.data);
            }
            _ => {}
        }
        if !first.is_empty() && first.iter().all(Option::is_some) {
            break;
        }
    }
    (tracks, first)
}

fn carried(name: &str, index: usize) -> CmafInfo {
    let (tracks, first) = load(name);
    match cmaf_info(&tracks[index], first[index].as_deref()).unwrap() {
        CmafTrack::Carried(info) => *info,
        CmafTrack::NotCarried(n) => panic!("{name} track {index}: {n}"),
    }
}

fn video(info: &CmafInfo) -> &CmafVideo {
    info.video.as_ref().unwrap()
}

fn audio(info: &CmafInfo) -> &CmafAudio {
    info.audio.as_ref().unwrap()
}

#[test]
fn h264_aac_mkv() {
    // ffprobe: h264 High, 320x240, level=13, has_b_frames=2, r_frame_rate=25/1,
    // extradata_size=45 (an avcC ending fd f8 f8 00: the high-profile fields), nal_length_size=4.
    // ffmpeg DASH: codecs="avc1.64000d" and "mp4a.40.2".
    let v = carried("h264_aac.mkv", 0);
    assert_eq!(v.codec_string, "avc1.64000d");
    assert_eq!(v.sample_entry, "avc1");
    assert_eq!(v.timescale, 90_000);
    assert_eq!((video(&v).width, video(&v).height), (320, 240));
    assert_eq!(video(&v).frame_rate, Some((25, 1)));
    assert_eq!(video(&v).reorder_frames, 2, "ffprobe has_b_frames=2");
    assert_eq!(video(&v).sample_aspect_ratio, None);
    let CodecConfig::Avc { record, sps } = &v.config else {
        panic!("{:?}", v.config)
    };
    assert_eq!(record.nal_length_size, 4);
    assert_eq!((sps.profile_idc, sps.level_idc), (100, 13));
    assert_eq!(sps.chroma_format_idc, 1, "yuv420p");
    assert_eq!(sps.bit_depth_luma, 8, "bits_per_raw_sample=8");
    assert!(sps.frame_mbs_only, "field_order=progressive");
    let vui = sps.vui.as_ref().unwrap();
    assert_eq!(vui.max_num_reorder_frames, Some(2));
    // The avcC comes back byte for byte, and is what build_avcc makes of its SPS/PPS.
    let (tracks, _) = load("h264_aac.mkv");
    let private = tracks[0].codec_private.clone().unwrap();
    assert_eq!(private.len(), 45);
    assert_eq!(record.to_bytes(), private);
    assert_eq!(v.config.decoder_config(), private);
    assert_eq!(
        h264::build_avcc(&[&record.sps[0]], &[&record.pps[0]]).unwrap(),
        private
    );
    assert!(v.notes.is_empty(), "{:?}", v.notes);

    // ffprobe: aac LC, 48000 Hz, 2 channels, extradata 11 90 56 e5 00.
    let a = carried("h264_aac.mkv", 1);
    assert_eq!(a.codec_string, "mp4a.40.2");
    assert_eq!(a.sample_entry, "mp4a");
    assert_eq!((audio(&a).sample_rate, audio(&a).channels), (48000, 2));
    assert_eq!(a.timescale, 48000);
    let CodecConfig::Aac(asc) = &a.config else {
        panic!()
    };
    assert_eq!(&asc.raw[..], &[0x11, 0x90, 0x56, 0xE5, 0x00]);
    assert_eq!(asc.sbr, Some(false));
}

#[test]
fn other_h264_files() {
    // ffprobe: High, 160x120, level=11, has_b_frames=2 for each; ffmpeg DASH avc1.64000b.
    for (file, track) in [
        ("h264_flac.mkv", 0),
        ("h264_mp3.mkv", 0),
        ("h264_pcm.mkv", 0),
        ("h264_mulaw.mkv", 0),
        ("h264_alaw.mkv", 0),
        ("live_gst.mkv", 0),
        ("live_ffmpeg.mkv", 0),
        ("blockgroups.mkv", 0),
    ] {
        let v = carried(file, track);
        assert_eq!(v.codec_string, "avc1.64000b", "{file}");
        assert_eq!((video(&v).width, video(&v).height), (160, 120), "{file}");
        assert_eq!(video(&v).reorder_frames, 2, "{file}");
        assert!(v.notes.is_empty(), "{file}: {:?}", v.notes);
    }
    // GStreamer's x264enc (2 B-frames): ffprobe color_space/primaries/transfer=smpte170m,
    // color_range=tv, has_b_frames=2.
    let v = carried("live_gst.mkv", 0);
    let CodecConfig::Avc { sps, .. } = &v.config else {
        panic!()
    };
    let vui = sps.vui.as_ref().unwrap();
    assert_eq!(
        vui.colour,
        Some(h264::ColourDescription {
            primaries: 6,
            transfer: 6,
            matrix: 6
        })
    );
    assert_eq!(vui.video_full_range, Some(false));
}

#[test]
fn h265_aac_mkv() {
    // ffprobe: hevc Main, 160x120, level=30, has_b_frames=2, color_range=tv,
    // extradata_size=2429 (VPS, SPS, PPS and x265's SEI).
    // hvcC: profile space 0, tier 0, idc 1, compat 60000000, constraint 90 00 00 00 00 00.
    // ffmpeg DASH writes just "hvc1"; its HLS muxer writes "hvc1.1.4.L30.B01", with the
    // compatibility flags (4) and constraint bytes (B01) hard-coded in hlsenc.c: wrong
    // for this stream, whose flags reverse to 6 and whose constraint byte is 90.
    let v = carried("h265_aac.mkv", 0);
    assert_eq!(v.codec_string, "hvc1.1.6.L30.90");
    assert_eq!(v.sample_entry, "hvc1");
    assert_eq!((video(&v).width, video(&v).height), (160, 120));
    assert_eq!(video(&v).reorder_frames, 2, "ffprobe has_b_frames=2");
    assert_eq!(video(&v).frame_rate, Some((25, 1)), "r_frame_rate=25/1");
    let CodecConfig::Hevc { record, sps } = &v.config else {
        panic!()
    };
    assert_eq!(sps.ptl, record.ptl);
    assert_eq!((sps.bit_depth_luma, sps.chroma_format_idc), (8, 1));
    assert_eq!(record.nal_length_size, 4);
    assert_eq!(
        record
            .arrays
            .iter()
            .map(|a| a.nal_unit_type)
            .collect::<Vec<_>>(),
        [32, 33, 34, 39]
    );
    let (tracks, _) = load("h265_aac.mkv");
    let private = tracks[0].codec_private.clone().unwrap();
    assert_eq!(private.len(), 2429);
    assert_eq!(record.to_bytes(), private);
    assert!(v.notes.is_empty(), "{:?}", v.notes);
    // Built from its own parameter sets, the hvcC has the same general fields.
    let one = |t| record.nalus(t).next().unwrap().clone();
    let built = h265::HevcDecoderConfig::parse(
        &h265::build_hvcc(
            &[&one(h265::NAL_VPS)],
            &[&one(h265::NAL_SPS)],
            &[&one(h265::NAL_PPS)],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(built.ptl, record.ptl);
    assert_eq!(built.num_temporal_layers, record.num_temporal_layers);
    assert_eq!(built.temporal_id_nested, record.temporal_id_nested);

    let a = carried("h265_aac.mkv", 1);
    assert_eq!(a.codec_string, "mp4a.40.2");
}

#[test]
fn vp9_opus_webm() {
    // ffprobe: vp9 "Profile 0", 320x240, yuv420p, color_range=tv, no extradata (WebM has
    // no VP9 CodecPrivate). ffmpeg DASH: codecs="vp09.00.20.08" (level 2.0: 76800 luma
    // samples per picture is above level 1.1's 73728).
    let v = carried("vp9_opus.webm", 0);
    assert_eq!(v.codec_string, "vp09.00.20.08");
    assert_eq!(v.sample_entry, "vp09");
    assert_eq!((video(&v).width, video(&v).height), (320, 240));
    let CodecConfig::Vp9(c) = &v.config else {
        panic!()
    };
    assert_eq!((c.profile, c.bit_depth, c.full_range), (0, 8, false));
    assert_eq!(c.chroma_subsampling, 1);
    assert_eq!(c.codec_string_long(), "vp09.00.20.08.01.02.02.02.00");
    // Without the keyframe there is nothing to read the profile from.
    let (tracks, _) = load("vp9_opus.webm");
    assert!(matches!(
        cmaf_info(&tracks[0], None),
        Err(CodecError::Missing { codec: "VP9", .. })
    ));

    // ffprobe: opus, 48000 Hz, 2 channels, extradata OpusHead 01 02 38 01 80 bb 00 00 00 00 00
    // (pre-skip 312); ffmpeg DASH: codecs="opus".
    let a = carried("vp9_opus.webm", 1);
    assert_eq!(a.codec_string, "opus");
    assert_eq!(a.sample_entry, "Opus");
    assert_eq!(a.timescale, 48000);
    assert_eq!((audio(&a).sample_rate, audio(&a).channels), (48000, 2));
    let CodecConfig::Opus(head) = &a.config else {
        panic!()
    };
    assert_eq!(
        (head.pre_skip, head.input_sample_rate, head.mapping_family),
        (312, 48000, 0)
    );
    assert_eq!(
        &a.config.decoder_config()[..],
        &[0, 2, 0x01, 0x38, 0, 0, 0xBB, 0x80, 0, 0, 0]
    );
}

#[test]
fn av1_opus_mkv() {
    // ffprobe: av1 Main, 160x120, level=0, yuv420p, color_range=tv, extradata (av1C)
    // 81 00 0c 00 0a 0a 00 00 00 03 b4 ff 73 6b e4 01. ffmpeg DASH: av01.0.00M.08.
    let v = carried("av1_opus.mkv", 0);
    assert_eq!(v.codec_string, "av01.0.00M.08");
    assert_eq!(v.sample_entry, "av01");
    assert_eq!((video(&v).width, video(&v).height), (160, 120));
    let CodecConfig::Av1 {
        record,
        sequence_header,
    } = &v.config
    else {
        panic!()
    };
    let seq = sequence_header.as_ref().unwrap();
    assert_eq!((seq.max_frame_width, seq.max_frame_height), (160, 120));
    assert_eq!((seq.bit_depth, seq.full_range), (8, false));
    assert_eq!((record.seq_profile, record.seq_level_idx_0), (0, 0));
    let (tracks, first) = load("av1_opus.mkv");
    assert_eq!(record.to_bytes(), tracks[0].codec_private.clone().unwrap());
    assert!(v.notes.is_empty(), "{:?}", v.notes);
    // The keyframe carries the same sequence header: with no CodecPrivate the av1C is
    // rebuilt from it, identical to libaom's.
    let mut bare = tracks[0].clone();
    bare.codec_private = None;
    let CmafTrack::Carried(rebuilt) = cmaf_info(&bare, first[0].as_deref()).unwrap() else {
        panic!()
    };
    assert_eq!(rebuilt.codec_string, "av01.0.00M.08");
    assert_eq!(rebuilt.config.decoder_config(), record.to_bytes());

    let a = carried("av1_opus.mkv", 1);
    assert_eq!((a.codec_string.as_str(), audio(&a).channels), ("opus", 2));
}

#[test]
fn h264_flac_mkv() {
    // ffprobe: flac, 48000 Hz, 2 channels, sample_fmt=s16, bits_per_raw_sample=16,
    // extradata_size=34 (ffmpeg keeps STREAMINFO only). ffmpeg DASH: codecs="flac".
    let a = carried("h264_flac.mkv", 1);
    assert_eq!(a.codec_string, "flac");
    assert_eq!(a.sample_entry, "fLaC");
    assert_eq!(
        (
            audio(&a).sample_rate,
            audio(&a).channels,
            audio(&a).bits_per_sample
        ),
        (48000, 2, Some(16))
    );
    assert_eq!(a.timescale, 48000);
    let CodecConfig::Flac(c) = &a.config else {
        panic!()
    };
    assert_eq!(c.stream_info.total_samples, 96000, "2 s at 48 kHz");
    let dfla = a.config.decoder_config();
    assert_eq!(&dfla[..8], &[0, 0, 0, 0, 0x80, 0, 0, 34]);
}

#[test]
fn audio_only_files() {
    // ffprobe: aac LC 48000 Hz stereo; opus 48000 Hz stereo.
    for file in ["aac_only.mka", "laced_xiph.mka", "laced_ebml.mka"] {
        let a = carried(file, 0);
        assert_eq!(a.codec_string, "mp4a.40.2", "{file}");
        assert_eq!(
            (audio(&a).sample_rate, audio(&a).channels),
            (48000, 2),
            "{file}"
        );
    }
    for file in ["opus_only.webm", "laced_fixed.mka"] {
        let a = carried(file, 0);
        assert_eq!(a.codec_string, "opus", "{file}");
        assert_eq!(audio(&a).channels, 2, "{file}");
    }
}

#[test]
fn not_carried() {
    // ffmpeg's DASH muxer writes codecs="vp8"/"vorbis" into an MP4 MPD and "mp4a.69" for
    // MP3; its HLS muxer "mp4a.40.34" for MP3 and refuses Vorbis in fMP4. No browser MSE
    // takes any of them in MP4.
    for (file, index, codec) in [
        ("vp8_vorbis.webm", 0, Codec::Vp8),
        ("vp8_vorbis.webm", 1, Codec::Vorbis),
        ("h264_mp3.mkv", 1, Codec::Mp3),
        ("h264_pcm.mkv", 1, Codec::Pcm),
    ] {
        let (tracks, first) = load(file);
        match cmaf_info(&tracks[index], first[index].as_deref()).unwrap() {
            CmafTrack::NotCarried(n) => {
                assert_eq!(n.codec, codec);
                assert!(n.to_string().contains("not carried in fMP4"), "{n}");
            }
            CmafTrack::Carried(i) => panic!("{file}: {i:?}"),
        }
    }
    assert_eq!(mp3_codec_string(48000), "mp4a.6B");
    assert_eq!(mp3_codec_string(24000), "mp4a.69");
}

#[test]
fn g711_is_carried_as_flac() {
    for file in ["h264_mulaw.mkv", "h264_alaw.mkv"] {
        let a = carried(file, 1);
        assert_eq!(a.codec, Codec::Flac, "{file}");
        assert_eq!((a.codec_string.as_str(), a.sample_entry), ("flac", "fLaC"));
        assert_eq!(a.timescale, 8000);
        assert_eq!(
            audio(&a),
            &CmafAudio {
                sample_rate: 8000,
                channels: 1,
                bits_per_sample: Some(16)
            }
        );
        let CodecConfig::Flac(c) = &a.config else {
            panic!("{file}: {:?}", a.config);
        };
        assert_eq!(c.stream_info, flac::StreamInfo::live(8000, 1, 16));
        // dfLa: version/flags, last-block STREAMINFO header, the block.
        let dfla = a.config.decoder_config();
        assert_eq!(&dfla[..8], &[0, 0, 0, 0, 0x80, 0, 0, 34]);
        assert_eq!(flac::FlacConfig::parse(&dfla[8..]).unwrap(), *c);
    }
    let (tracks, _) = load("h264_mulaw.mkv");
    let mut bad = tracks[1].clone();
    for (rate, channels) in [(0.0, 1), (8000.5, 1), (2e6, 1), (8000.0, 0), (8000.0, 9)] {
        bad.audio = Some(crate::media::AudioInfo {
            sample_rate: rate,
            channels,
            bit_depth: Some(8),
        });
        assert!(cmaf_info(&bad, None).is_err(), "{rate} {channels}");
    }
    bad.audio = None;
    assert!(cmaf_info(&bad, None).is_err());
}

/// ffmpeg's HLS muxer (hlsenc.c) only writes CODECS when H.264 extradata is Annex B, so
/// for Matroska input it writes none at all unless the bitstream filter runs first:
///   ffmpeg -i testdata/h264_aac.mkv -map 0 -c copy -bsf:v h264_mp4toannexb -b:v 1M -b:a 64k \
///     -f hls -hls_segment_type fmp4 -master_pl_name master.m3u8 -var_stream_map v:0,a:0 p%v.m3u8
/// gives CODECS="avc1.64000d,mp4a.40.2"; h264_mp3.mkv gives "avc1.64000b,mp4a.40.34" and
/// h265_aac.mkv (with hevc_mp4toannexb, -tag:v hvc1) "hvc1.1.4.L30.B01,mp4a.40.2".
#[test]
fn ffmpeg_hls_codec_strings() {
    assert_eq!(carried("h264_aac.mkv", 0).codec_string, "avc1.64000d");
    assert_eq!(carried("h264_mp3.mkv", 0).codec_string, "avc1.64000b");
    // Where ffmpeg is wrong (see h265_aac_mkv) we differ on purpose.
    assert_ne!(carried("h265_aac.mkv", 0).codec_string, "hvc1.1.4.L30.B01");
}

#[test]
fn parameter_sets_from_the_keyframe() {
    // An avcC without parameter sets (avc3-style input): the first keyframe has them? x264
    // in Matroska puts them only in the avcC, so build a keyframe that carries them.
    let (tracks, first) = load("h264_aac.mkv");
    let record =
        h264::AvcDecoderConfig::parse(tracks[0].codec_private.as_deref().unwrap()).unwrap();
    let mut kf = Vec::new();
    for n in record.sps.iter().chain(&record.pps) {
        kf.extend_from_slice(&(n.len() as u32).to_be_bytes());
        kf.extend_from_slice(n);
    }
    kf.extend_from_slice(first[0].as_deref().unwrap());
    let mut bare = tracks[0].clone();
    bare.codec_private = None;
    let CmafTrack::Carried(info) = cmaf_info(&bare, Some(&kf)).unwrap() else {
        panic!()
    };
    assert_eq!(info.codec_string, "avc1.64000d");
    assert_eq!(
        info.config.decoder_config(),
        tracks[0].codec_private.clone().unwrap()
    );
    assert_eq!(info.notes, ["SPS/PPS taken from the first keyframe"]);
    // The real first keyframe has none: a clear error.
    let e = cmaf_info(&bare, first[0].as_deref()).unwrap_err();
    assert!(e.to_string().starts_with("H.264: needs an avcC"), "{e}");
    // An Annex B CodecPrivate is accepted too.
    let mut annex_b = bare.clone();
    let mut cp = Vec::new();
    for n in record.sps.iter().chain(&record.pps) {
        cp.extend_from_slice(&[0, 0, 0, 1]);
        cp.extend_from_slice(n);
    }
    annex_b.codec_private = Some(Bytes::from(cp));
    let CmafTrack::Carried(info) = cmaf_info(&annex_b, None).unwrap() else {
        panic!()
    };
    assert_eq!(info.codec_string, "avc1.64000d");
}

#[test]
fn every_truncation_of_every_testdata_record() {
    // Cut each real CodecPrivate and keyframe at every length: errors, never panics.
    for file in [
        "h264_aac.mkv",
        "h265_aac.mkv",
        "vp9_opus.webm",
        "av1_opus.mkv",
        "h264_flac.mkv",
    ] {
        let (tracks, first) = load(file);
        for (t, kf) in tracks.iter().zip(&first) {
            let private = t.codec_private.clone().unwrap_or_default();
            let step = (private.len() / 300).max(1);
            for n in (0..private.len()).step_by(step) {
                let mut cut = t.clone();
                cut.codec_private = Some(private.slice(..n));
                let _ = cmaf_info(&cut, kf.as_deref());
            }
            if let Some(kf) = kf {
                for n in 0..kf.len().min(64) {
                    let _ = cmaf_info(t, Some(&kf[..n]));
                }
            }
        }
    }
}

#[test]
fn aac_without_codec_private() {
    let (tracks, _) = load("aac_only.mka");
    let mut t = tracks[0].clone();
    t.codec_private = None;
    t.codec_id = "A_AAC/MPEG4/LC".into();
    let CmafTrack::Carried(info) = cmaf_info(&t, None).unwrap() else {
        panic!()
    };
    assert_eq!(info.codec_string, "mp4a.40.2");
    assert_eq!(&info.config.decoder_config()[..], &[0x11, 0x90]);
    assert_eq!(info.notes.len(), 1);
    assert_eq!(aac_object_type_from_codec_id("A_AAC/MPEG2/MAIN"), 1);
    assert_eq!(aac_object_type_from_codec_id("A_AAC/MPEG4/LC/SBR"), 2);
}

/// Inputs the `codec_config` fuzz target found, replayed through the same entry point.
/// Each comment says what was wrong.
#[test]
fn fuzz_regressions() {
    let cases: &[&[u8]] = &[
        // build_asc(5, ...) wrote an HE-AAC object type without the extension fields it
        // announces, so the record did not parse back.
        &[0x07, 0x05, 0xBB, 0x02, 0x01, 0x01, 0x23, 0x01],
        // build_asc(31, ...): 31 is the escape code; writing it as 31 - 32 overflowed.
        &[0x07, 0x1F, 0xFF, 0xFF, 0xFF, 0x08],
    ];
    for case in cases {
        crate::fuzzing::codec_config(case);
    }
}

/// The testdata records through every parser of the fuzz target (a smoke run of the same
/// code the fuzzer drives, with the real bytes as inputs).
#[test]
fn testdata_through_the_fuzz_entry_point() {
    for file in [
        "h264_aac.mkv",
        "h265_aac.mkv",
        "vp9_opus.webm",
        "av1_opus.mkv",
        "h264_flac.mkv",
    ] {
        let (tracks, first) = load(file);
        for (t, kf) in tracks.iter().zip(&first) {
            for input in [t.codec_private.as_deref(), kf.as_deref()]
                .into_iter()
                .flatten()
            {
                for pick in 0..15u8 {
                    let mut d = vec![pick];
                    d.extend_from_slice(&input[..input.len().min(4096)]);
                    crate::fuzzing::codec_config(&d);
                }
            }
        }
    }
}
