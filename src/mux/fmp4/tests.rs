//! Tests: box layout byte by byte, a round trip of every testdata file through the crate's
//! demuxer, the writer and mp4-atom's decoder, DTS reconstruction on the real B-frame
//! stream, and a structure-aware random test of timing + fragments.
//!
//! The ffprobe/ffmpeg check of the same files is `tests/interop/fmp4_check.sh` (cargo test
//! runs no external program).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use mp4_atom::{Any, Codec as AtomCodec, Decode, Moof, Moov};

use super::timing::{
    AudioTimer, DtsReorder, MAX_REORDER_DEPTH, ReorderDepth, TimeMap, ns_to_ticks,
    opus_packet_samples, ticks_to_ns,
};
use super::*;
use crate::ingest::mkv::{DemuxEvent, DemuxLimits, MkvDemuxer};
use crate::media::{Codec, Frame, Track};

#[path = "testkit.rs"]
mod testkit;

// ---------------------------------------------------------------------------------------
// Helpers.

fn testdata(name: &str) -> Option<Vec<u8>> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(path).ok()
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The top-level boxes of a file: (offset, size, fourcc).
fn boxes(file: &[u8]) -> Vec<(usize, usize, [u8; 4])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= file.len() {
        let mut size = be32(file, pos) as u64;
        if size == 1 {
            size = u64::from_be_bytes(file[pos + 8..pos + 16].try_into().unwrap());
        }
        let size = size as usize;
        assert!(
            size >= 8 && pos + size <= file.len(),
            "box at {pos}: size {size}"
        );
        out.push((pos, size, file[pos + 4..pos + 8].try_into().unwrap()));
        pos += size;
    }
    assert_eq!(pos, file.len(), "trailing bytes");
    out
}

/// The byte offset of the first `fourcc` box inside `bytes` (its size field).
fn find_box(bytes: &[u8], fourcc: &[u8; 4]) -> Option<usize> {
    bytes.windows(4).position(|w| w == fourcc).map(|p| p - 4)
}

/// One sample as a reader sees it, with every default resolved.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    seq: u32,
    dts: u64,
    pts: i64,
    duration: u32,
    flags: u32,
    data: Bytes,
}

/// Reads an init segment + chunks back with mp4-atom: the moov, the styp/prft counts, and
/// every sample with its payload located through `data_offset`. Also checks what the
/// decoder does not: `tfdt` and `trun` are version 1, `data_offset` lands right after the
/// `mdat` header, the `mdat` holds exactly the samples.
fn read_back(file: &[u8]) -> (Moov, usize, usize, Vec<Read>) {
    let mut moov = None;
    let (mut styps, mut prfts) = (0, 0);
    let mut samples = Vec::new();
    let list = boxes(file);
    for (i, &(pos, size, kind)) in list.iter().enumerate() {
        let bytes = &file[pos..pos + size];
        match &kind {
            b"ftyp" => {}
            b"moov" => moov = Some(Moov::decode(&mut &bytes[..]).expect("moov decodes")),
            b"styp" => styps += 1,
            b"prft" => prfts += 1,
            b"mdat" => {}
            b"moof" => {
                let moof = Moof::decode(&mut &bytes[..]).expect("moof decodes");
                let tfdt_at = find_box(bytes, b"tfdt").unwrap();
                assert_eq!(bytes[tfdt_at + 8], 1, "tfdt version");
                let trun_at = find_box(bytes, b"trun").unwrap();
                assert_eq!(bytes[trun_at + 8], 1, "trun version");

                let trex = moov.as_ref().unwrap().mvex.as_ref().unwrap().trex[0].clone();
                assert_eq!(moof.traf.len(), 1);
                let traf = &moof.traf[0];
                assert_eq!(traf.tfhd.track_id, trex.track_id);
                assert!(traf.tfhd.default_base_is_moof);
                assert_eq!(traf.tfhd.base_data_offset, None);
                assert_eq!(traf.trun.len(), 1);
                let trun = &traf.trun[0];
                let (mdat_pos, mdat_size, mdat_kind) = list[i + 1];
                assert_eq!(&mdat_kind, b"mdat");
                let header = if be32(file, mdat_pos) == 1 { 16 } else { 8 };
                assert_eq!(
                    trun.data_offset,
                    Some((size + header) as i32),
                    "data_offset = moof size + mdat header"
                );
                let mut at = mdat_pos + header;
                let mut dts = traf.tfdt.as_ref().unwrap().base_media_decode_time;
                for e in trun.samples.iter() {
                    let duration = e
                        .duration
                        .or(traf.tfhd.default_sample_duration)
                        .unwrap_or(trex.default_sample_duration);
                    let len = e
                        .size
                        .or(traf.tfhd.default_sample_size)
                        .unwrap_or(trex.default_sample_size) as usize;
                    let flags = e
                        .flags
                        .or(traf.tfhd.default_sample_flags)
                        .unwrap_or(trex.default_sample_flags);
                    samples.push(Read {
                        seq: moof.mfhd.sequence_number,
                        dts,
                        pts: dts as i64 + e.cts.unwrap_or(0),
                        duration,
                        flags,
                        data: Bytes::copy_from_slice(&file[at..at + len]),
                    });
                    at += len;
                    dts += u64::from(duration);
                }
                assert_eq!(at, mdat_pos + mdat_size, "mdat holds exactly the samples");
            }
            other => panic!("unexpected box {:?}", String::from_utf8_lossy(other)),
        }
    }
    (moov.expect("a moov"), styps, prfts, samples)
}

fn sample(dts: u64, pts: u64, duration: u32, sync: bool, data: &[u8]) -> Sample {
    Sample {
        dts,
        pts,
        duration,
        sync,
        data: Bytes::copy_from_slice(data),
    }
}

fn avcc() -> Bytes {
    // High profile, level 1.3, 4-byte lengths, one SPS and one PPS, high-profile extension.
    Bytes::from_static(&[
        0x01, 0x64, 0x00, 0x0D, 0xFF, 0xE1, 0x00, 0x05, 0x67, 0x64, 0x00, 0x0D, 0xAC, 0x01, 0x00,
        0x03, 0x68, 0xEB, 0xE3, 0xFD, 0xF8, 0xF8, 0x00,
    ])
}

fn h264_config() -> TrackConfig {
    TrackConfig::new(SampleEntry::H264 {
        avcc: avcc(),
        video: VideoParams {
            width: 320,
            height: 240,
            ..Default::default()
        },
    })
}

// ---------------------------------------------------------------------------------------
// Fragments, byte by byte.

#[test]
fn fragment_layout_keyframe_then_non_keyframes() {
    // Two samples: a keyframe of 5 bytes and a non-keyframe of 3, both 3000 ticks long,
    // presented 6000 ticks after they are decoded.
    let samples = [
        sample(9000, 15000, 3000, true, b"AAAAA"),
        sample(12000, 18000, 3000, false, b"BBB"),
    ];
    let chunk = fragment(1, 7, &samples).unwrap();
    let expected_moof: Vec<u8> = [
        &[0, 0, 0, 116][..],
        b"moof",
        &[0, 0, 0, 16],
        b"mfhd",
        &[0, 0, 0, 0, 0, 0, 0, 7],
        &[0, 0, 0, 92],
        b"traf",
        // tfhd: default-base-is-moof | default-sample-flags | default-sample-duration.
        &[0, 0, 0, 24],
        b"tfhd",
        &[0, 0x02, 0x00, 0x28],
        &[0, 0, 0, 1],
        &[0, 0, 0x0B, 0xB8],
        &[0x01, 0x01, 0x00, 0x00],
        // tfdt version 1: 9000.
        &[0, 0, 0, 20],
        b"tfdt",
        &[1, 0, 0, 0],
        &[0, 0, 0, 0, 0, 0, 0x23, 0x28],
        // trun version 1: data-offset | first-sample-flags | size | composition offset.
        &[0, 0, 0, 40],
        b"trun",
        &[1, 0x00, 0x0A, 0x05],
        &[0, 0, 0, 2],
        &[0, 0, 0, 124],
        &[0x02, 0, 0, 0],
        &[0, 0, 0, 5],
        &[0, 0, 0x17, 0x70],
        &[0, 0, 0, 3],
        &[0, 0, 0x17, 0x70],
    ]
    .concat();
    assert_eq!(chunk.buffers.len(), 4);
    assert_eq!(&chunk.buffers[0][..], &expected_moof[..]);
    assert_eq!(
        &chunk.buffers[1][..],
        &[0, 0, 0, 16, b'm', b'd', b'a', b't']
    );
    assert_eq!(&chunk.buffers[2][..], b"AAAAA");
    assert_eq!(&chunk.buffers[3][..], b"BBB");
    assert_eq!(chunk.len, 116 + 16);
    assert_eq!(chunk.to_bytes().len() as u64, chunk.len);
    // The payloads are the callers' buffers, not copies.
    assert_eq!(chunk.buffers[2].as_ptr(), samples[0].data.as_ptr());
}

#[test]
fn fragment_layout_audio_uses_tfhd_defaults() {
    // All sync, same duration, different sizes, no reordering: only sizes per sample.
    let samples = [
        sample(0, 0, 1024, true, &[1; 10]),
        sample(1024, 1024, 1024, true, &[2; 12]),
        sample(2048, 2048, 1024, true, &[3; 11]),
    ];
    let moof = fragment(2, 1, &samples).unwrap().buffers[0].clone();
    let tfhd = find_box(&moof, b"tfhd").unwrap();
    assert_eq!(be32(&moof, tfhd), 24);
    assert_eq!(be32(&moof, tfhd + 8), 0x0002_0028);
    assert_eq!(be32(&moof, tfhd + 12), 2, "track id");
    assert_eq!(be32(&moof, tfhd + 16), 1024, "default duration");
    assert_eq!(be32(&moof, tfhd + 20), SYNC_SAMPLE_FLAGS, "default flags");
    let trun = find_box(&moof, b"trun").unwrap();
    assert_eq!(be32(&moof, trun), 8 + 4 + 8 + 3 * 4);
    assert_eq!(be32(&moof, trun + 8), 0x0100_0201, "v1, data offset, sizes");
    assert_eq!(be32(&moof, trun + 16) as usize, moof.len() + 8);
    assert_eq!(
        [
            be32(&moof, trun + 20),
            be32(&moof, trun + 24),
            be32(&moof, trun + 28)
        ],
        [10, 12, 11]
    );
}

#[test]
fn fragment_layout_mixed_flags_and_durations_per_sample() {
    let samples = [
        sample(100, 100, 10, true, b"a"),
        sample(110, 110, 20, false, b"b"),
        sample(130, 130, 10, true, b"c"),
    ];
    let moof = fragment(1, 3, &samples).unwrap().buffers[0].clone();
    let tfhd = find_box(&moof, b"tfhd").unwrap();
    // Same size everywhere: a default size; nothing else.
    assert_eq!(be32(&moof, tfhd + 8), 0x0002_0010);
    assert_eq!(be32(&moof, tfhd + 16), 1, "default size");
    let trun = find_box(&moof, b"trun").unwrap();
    assert_eq!(
        be32(&moof, trun + 8),
        0x0100_0501,
        "v1, data offset, durations, flags"
    );
    let per_sample: Vec<u32> = (0..6).map(|i| be32(&moof, trun + 20 + 4 * i)).collect();
    assert_eq!(
        per_sample,
        [
            10,
            SYNC_SAMPLE_FLAGS,
            20,
            NON_SYNC_SAMPLE_FLAGS,
            10,
            SYNC_SAMPLE_FLAGS
        ]
    );
}

#[test]
fn fragment_signed_composition_offsets() {
    // A caller may hand in pts < dts: version 1 writes it as a negative offset.
    let samples = [
        sample(1000, 900, 100, true, b"x"),
        sample(1100, 1300, 100, false, b"y"),
    ];
    let chunk = fragment(1, 1, &samples).unwrap();
    let moof = &chunk.buffers[0];
    let trun = find_box(moof, b"trun").unwrap();
    assert_eq!(moof[trun + 8], 1);
    let file = [
        init_segment(&h264_config()).unwrap().to_vec(),
        chunk.to_bytes().to_vec(),
    ]
    .concat();
    let (_, _, _, read) = read_back(&file);
    assert_eq!(read[0].pts, 900);
    assert_eq!(read[1].pts, 1300);
}

#[test]
fn fragment_refuses_bad_input() {
    assert!(matches!(fragment(1, 1, &[]), Err(Fmp4Error::NoSamples)));
    let gap = [
        sample(0, 0, 10, true, b"a"),
        sample(11, 11, 10, false, b"b"),
    ];
    assert!(matches!(
        fragment(1, 1, &gap),
        Err(Fmp4Error::DtsGap {
            index: 1,
            dts: 11,
            expected: 10
        })
    ));
    let far = [sample(0, 1 << 31, 10, true, b"a")];
    assert!(matches!(
        fragment(1, 1, &far),
        Err(Fmp4Error::CompositionOffset { index: 0, .. })
    ));
    let near = [sample(0, (1 << 31) - 1, 10, true, b"a")];
    assert!(fragment(1, 1, &near).is_ok());
}

#[test]
fn fragment_writer_numbers_chunks() {
    let mut w = FragmentWriter::new(1);
    assert_eq!(w.next_sequence(), 1);
    let c1 = w.write(&[sample(0, 0, 5, true, b"a")]).unwrap();
    assert!(w.write(&[]).is_err());
    let c2 = w.write(&[sample(5, 5, 5, false, b"b")]).unwrap();
    assert_eq!(be32(&c1.buffers[0], 20), 1);
    assert_eq!(be32(&c2.buffers[0], 20), 2);
    assert_eq!(w.next_dts(), Some(10));
    assert_eq!(w.next_sequence(), 3);
}

#[test]
fn mdat_header_switches_to_largesize() {
    assert_eq!(
        &fragment::mdat_header(100)[..],
        &[0, 0, 0, 108, b'm', b'd', b'a', b't']
    );
    let big = fragment::mdat_header(u64::from(u32::MAX));
    assert_eq!(big.len(), 16);
    assert_eq!(be32(&big, 0), 1);
    assert_eq!(&big[4..8], b"mdat");
    assert_eq!(
        u64::from_be_bytes(big[8..16].try_into().unwrap()),
        u64::from(u32::MAX) + 16
    );
}

#[test]
fn styp_and_prft_bytes() {
    assert_eq!(
        &styp()[..],
        &[
            &[0u8, 0, 0, 24][..],
            b"styp",
            b"msdh",
            &[0, 0, 0, 0],
            b"msdh",
            b"cmfs"
        ]
        .concat()[..]
    );
    let ntp = ntp_timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1500));
    assert_eq!(ntp, ((2_208_988_800u64 + 1) << 32) | 0x8000_0000);
    let p = prft(1, ntp, 90_000, PrftSemantics::Input);
    assert_eq!(
        &p[..],
        &[
            &[0u8, 0, 0, 28][..],
            b"prft",
            &[0, 0, 0, 0],
            &[0, 0, 0, 1],
            &ntp.to_be_bytes(),
            &90_000u32.to_be_bytes(),
        ]
        .concat()[..]
    );
    // A media time past 32 bits needs version 1.
    let p = prft(1, ntp, 1 << 33, PrftSemantics::Input);
    assert_eq!(p.len(), 32);
    assert_eq!(p[8], 1);
    match Any::decode(&mut &p[..]).unwrap() {
        Any::Prft(d) => assert_eq!((d.ntp_timestamp, d.media_time), (ntp, 1 << 33)),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Init segments.

#[test]
fn init_segment_layout() {
    let init = init_segment(&h264_config()).unwrap();
    let list = boxes(&init);
    assert_eq!(
        list.iter().map(|b| b.2).collect::<Vec<_>>(),
        [*b"ftyp", *b"moov"]
    );
    assert_eq!(
        &init[..28],
        &[
            &[0u8, 0, 0, 28][..],
            b"ftyp",
            b"iso6",
            &[0, 0, 0, 0],
            b"iso6",
            b"cmfc",
            b"mp41"
        ]
        .concat()[..]
    );
    // The boxes in the order ISO/IEC 14496-12 gives.
    let order: Vec<usize> = [
        b"mvhd", b"trak", b"tkhd", b"mdia", b"mdhd", b"hdlr", b"minf", b"vmhd", b"dinf", b"dref",
        b"stbl", b"stsd", b"avc1", b"avcC", b"stts", b"stsc", b"stsz", b"stco", b"mvex", b"trex",
    ]
    .iter()
    .map(|k| find_box(&init, k).unwrap_or_else(|| panic!("{:?}", std::str::from_utf8(*k))))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    // Empty sample tables.
    for k in [b"stts", b"stsc", b"stco"] {
        let at = find_box(&init, k).unwrap();
        assert_eq!(be32(&init, at), 16);
        assert_eq!(be32(&init, at + 12), 0, "entry count");
    }
    let stsz = find_box(&init, b"stsz").unwrap();
    assert_eq!((be32(&init, stsz), be32(&init, stsz + 16)), (20, 0));
    // The avcC is the CodecPrivate, byte for byte.
    let at = find_box(&init, b"avcC").unwrap();
    let avcc_box = &init[at..at + be32(&init, at) as usize];
    assert_eq!(&avcc_box[8..], &avcc()[..]);
    // trex: track 1, sample description 1, no other defaults.
    let trex = find_box(&init, b"trex").unwrap();
    assert_eq!(be32(&init, trex), 32);
    assert_eq!(
        (1..6)
            .map(|i| be32(&init, trex + 8 + 4 * i))
            .collect::<Vec<_>>(),
        [1, 1, 0, 0, 0]
    );
    // mdhd: the track timescale.
    let mdhd = find_box(&init, b"mdhd").unwrap();
    assert_eq!(init[mdhd + 8], 1, "mdhd version 1");
    assert_eq!(be32(&init, mdhd + 28), 90_000);
    // No edit list.
    assert!(find_box(&init, b"elst").is_none());

    let (moov, ..) = read_back(&init);
    let trak = &moov.trak[0];
    assert_eq!(trak.tkhd.track_id, 1);
    assert_eq!(
        (trak.tkhd.width.integer(), trak.tkhd.height.integer()),
        (320, 240)
    );
    assert_eq!(trak.mdia.mdhd.language, "und");
    assert_eq!(trak.mdia.hdlr.handler, mp4_atom::FourCC::new(b"vide"));
    match &trak.mdia.minf.stbl.stsd.codecs[..] {
        [AtomCodec::Avc1(avc1)] => {
            assert_eq!((avc1.visual.width, avc1.visual.height), (320, 240));
            assert_eq!(avc1.visual.data_reference_index, 1);
            assert!(avc1.pasp.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn init_segment_anamorphic_and_language() {
    let mut config = h264_config();
    if let SampleEntry::H264 { video, .. } = &mut config.sample_entry {
        video.display_width = Some(426);
    }
    config.language = Some("eng".into());
    let (moov, ..) = read_back(&init_segment(&config).unwrap());
    let trak = &moov.trak[0];
    assert_eq!(trak.tkhd.width.integer(), 426);
    assert_eq!(trak.mdia.mdhd.language, "eng");
    match &trak.mdia.minf.stbl.stsd.codecs[..] {
        [AtomCodec::Avc1(avc1)] => {
            let pasp = avc1.pasp.as_ref().unwrap();
            // 426×240 shown from 320×240: 213:160.
            assert_eq!((pasp.h_spacing, pasp.v_spacing), (213, 160));
        }
        other => panic!("{other:?}"),
    }
    config.language = Some("en-US".into());
    let (moov, ..) = read_back(&init_segment(&config).unwrap());
    assert_eq!(moov.trak[0].mdia.mdhd.language, "und");
}

#[test]
fn init_segment_audio_entries() {
    let aac = TrackConfig::new(SampleEntry::Aac {
        asc: Bytes::from_static(&[0x11, 0x90]),
        audio: AudioParams {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
        },
    });
    assert_eq!(aac.timescale, 48_000);
    let init = init_segment(&aac).unwrap();
    let (moov, ..) = read_back(&init);
    let trak = &moov.trak[0];
    assert_eq!(trak.mdia.hdlr.handler, mp4_atom::FourCC::new(b"soun"));
    assert!(trak.mdia.minf.smhd.is_some() && trak.mdia.minf.vmhd.is_none());
    assert_eq!(trak.mdia.mdhd.timescale, 48_000);
    match &trak.mdia.minf.stbl.stsd.codecs[..] {
        [AtomCodec::Mp4a(mp4a)] => {
            assert_eq!(mp4a.audio.channel_count, 2);
            assert_eq!(mp4a.audio.sample_rate.integer(), 48_000);
            let dc = &mp4a.esds.es_desc.dec_config;
            assert_eq!((dc.object_type_indication, dc.stream_type), (0x40, 5));
            assert_eq!(dc.dec_specific.as_ref().unwrap().raw, [0x11, 0x90]);
        }
        other => panic!("{other:?}"),
    }

    let opus = TrackConfig::new(SampleEntry::Opus(OpusParams {
        output_channel_count: 2,
        pre_skip: 312,
        input_sample_rate: 44_100,
        output_gain: -2,
        mapping: None,
    }));
    assert_eq!(opus.timescale, 48_000);
    let init = init_segment(&opus).unwrap();
    let dops = find_box(&init, b"dOps").unwrap();
    assert_eq!(
        &init[dops..dops + 19],
        &[
            0, 0, 0, 19, b'd', b'O', b'p', b's', 0, 2, 0x01, 0x38, 0, 0, 0xAC, 0x44, 0xFF, 0xFE, 0
        ]
    );
    assert!(find_box(&init, b"Opus").is_some());

    // Surround Opus needs its table; FLAC needs 34 bytes of STREAMINFO.
    let mut bad = opus.clone();
    if let SampleEntry::Opus(p) = &mut bad.sample_entry {
        p.output_channel_count = 6;
    }
    assert!(init_segment(&bad).is_err());
    let flac = TrackConfig::new(SampleEntry::Flac(FlacParams {
        streaminfo: Bytes::from_static(&[0; 10]),
        audio: AudioParams {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
        },
    }));
    assert!(init_segment(&flac).is_err());
}

#[test]
fn init_segment_refuses_bad_configs() {
    let video = VideoParams {
        width: 320,
        height: 240,
        ..Default::default()
    };
    let cases = [
        SampleEntry::H264 {
            avcc: Bytes::new(),
            video: video.clone(),
        },
        SampleEntry::H264 {
            avcc: Bytes::from_static(&[1, 0x64, 0, 0x0D, 0xFF, 0xE0, 0]),
            video: video.clone(),
        },
        SampleEntry::H265 {
            hvcc: Bytes::from_static(&[1, 2, 3]),
            video: video.clone(),
        },
        SampleEntry::Av1 {
            av1c: Bytes::from_static(&[0x80, 0, 0, 0]),
            video: video.clone(),
        },
        SampleEntry::Vp9 {
            vpcc: Vp9Params::default(),
            video: VideoParams::default(),
        },
        SampleEntry::Vp9 {
            vpcc: Vp9Params::default(),
            video: VideoParams {
                width: 70_000,
                height: 10,
                ..Default::default()
            },
        },
        SampleEntry::Aac {
            asc: Bytes::from_static(&[0x11]),
            audio: AudioParams {
                channels: 2,
                sample_rate: 48_000,
                bits_per_sample: 16,
            },
        },
    ];
    for entry in cases {
        let r = init_segment(&TrackConfig::new(entry.clone()));
        assert!(
            matches!(r, Err(Fmp4Error::InvalidConfig { .. })),
            "{entry:?}: {r:?}"
        );
    }
}

/// Untrusted CodecPrivate bytes (a pusher's) must never panic the writer.
#[test]
fn init_segment_survives_random_codec_private() {
    let mut rng = Rng(0x5eed);
    let video = VideoParams {
        width: 64,
        height: 64,
        ..Default::default()
    };
    let real = avcc();
    for i in 0..6_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            // Mutations of a valid record.
            let mut b = real.to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = rng.next() as u8;
            }
            b.truncate(rng.below(b.len() as u64 + 1) as usize);
            b
        };
        let bytes = Bytes::from(bytes);
        for entry in [
            SampleEntry::H264 {
                avcc: bytes.clone(),
                video: video.clone(),
            },
            SampleEntry::H265 {
                hvcc: bytes.clone(),
                video: video.clone(),
            },
            SampleEntry::Av1 {
                av1c: bytes.clone(),
                video: video.clone(),
            },
            SampleEntry::Aac {
                asc: bytes.clone(),
                audio: AudioParams {
                    channels: 1,
                    sample_rate: 8000,
                    bits_per_sample: 16,
                },
            },
            SampleEntry::Flac(FlacParams {
                streaminfo: bytes.clone(),
                audio: AudioParams {
                    channels: 1,
                    sample_rate: 8000,
                    bits_per_sample: 16,
                },
            }),
        ] {
            if let Ok(init) = init_segment(&TrackConfig::new(entry)) {
                // Whatever was accepted reads back.
                read_back(&init);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Time conversion.

#[test]
fn ns_to_ticks_rounds_exactly() {
    assert_eq!(ns_to_ticks(0, 90_000), 0);
    assert_eq!(ns_to_ticks(1_000_000_000, 90_000), 90_000);
    // 21 ms at 48 kHz is 1008 samples exactly; 21.333 ms (one AAC frame) is 1024.
    assert_eq!(ns_to_ticks(21_000_000, 48_000), 1008);
    assert_eq!(ns_to_ticks(21_333_333, 48_000), 1024);
    // Halves round up, for negative times too (monotonic).
    assert_eq!(ns_to_ticks(5_555, 90_000), 0); // 0.49995 ticks
    assert_eq!(ns_to_ticks(5_556, 90_000), 1); // 0.50004
    assert_eq!(ns_to_ticks(-5_555, 90_000), 0);
    assert_eq!(ns_to_ticks(-5_556, 90_000), -1);
    assert_eq!(ns_to_ticks(-1_000_000_000, 48_000), -48_000);
    // Saturates instead of overflowing.
    assert_eq!(ns_to_ticks(i64::MAX, u32::MAX), i64::MAX);
    assert_eq!(ns_to_ticks(i64::MIN, u32::MAX), i64::MIN);
    // Every 90 kHz tick survives a trip through nanoseconds (RTP → Frame → fMP4).
    for t in (-200_000i64..200_000).step_by(7).chain([1 << 40, 13 << 33]) {
        assert_eq!(ns_to_ticks(ticks_to_ns(t, 90_000), 90_000), t);
        assert_eq!(ns_to_ticks(ticks_to_ns(t, 44_100), 44_100), t);
    }
    // Monotonic over a dense range of nanoseconds.
    let mut last = i64::MIN;
    for ns in -100_000..100_000 {
        let t = ns_to_ticks(ns, 44_100);
        assert!(t >= last);
        last = t;
    }
    let map = TimeMap::new(90_000, 5_000_000_000);
    assert_eq!(map.ticks(6_000_000_000), 90_000);
    assert_eq!(map.ns(90_000), 6_000_000_000);
}

// ---------------------------------------------------------------------------------------
// DTS reconstruction.

fn drain(r: &mut DtsReorder) -> Vec<Sample> {
    std::iter::from_fn(|| r.pop()).collect()
}

/// The output invariants: dts ≥ 0 (u64), strictly increasing, dts ≤ pts, durations are the
/// dts deltas, payloads in input order.
fn check_invariants(out: &[Sample], inputs: &[Bytes]) {
    assert_eq!(out.len(), inputs.len());
    for (i, s) in out.iter().enumerate() {
        assert!(s.dts <= s.pts, "sample {i}: dts {} > pts {}", s.dts, s.pts);
        assert!(s.duration >= 1, "sample {i}: duration 0");
        assert_eq!(s.data, inputs[i], "sample {i}: payload order");
        if let Some(next) = out.get(i + 1) {
            assert!(next.dts > s.dts, "sample {i}: dts not increasing");
            assert_eq!(
                s.dts + u64::from(s.duration),
                next.dts,
                "sample {i}: duration"
            );
        }
    }
}

#[test]
fn dts_reorder_ipbb_with_known_depth() {
    // Presentation I0 B1 B2 P3 B4 B5 P6, 3000 ticks apart, stored in decode order
    // I0 P3 B1 B2 P6 B4 B5 (depth 1), starting at 9000 (room for the first decode times).
    let t = 3000;
    let order = [0, 3, 1, 2, 6, 4, 5];
    let pts: Vec<i64> = order.iter().map(|&k| 9000 + k * t).collect();
    let inputs: Vec<Bytes> = (0..7).map(|i| Bytes::from(vec![i as u8])).collect();
    let run = |r: &mut DtsReorder| {
        let mut out = Vec::new();
        let mut came_out = Vec::new();
        for (i, &p) in pts.iter().enumerate() {
            r.push(p, i == 0, inputs[i].clone());
            let got = drain(r);
            came_out.push(got.len());
            out.extend(got);
        }
        r.flush(None);
        out.extend(drain(r));
        check_invariants(&out, &inputs);
        assert_eq!(r.stats().pts_raised, 0);
        let dts: Vec<u64> = out.iter().map(|s| s.dts).collect();
        let cts: Vec<u64> = out.iter().map(|s| s.pts - s.dts).collect();
        (dts, cts, came_out)
    };

    // The declared depth and the frame interval: decode starts one frame early.
    let mut r = DtsReorder::new(ReorderDepth::Fixed(1)).with_frame_duration(Some(3000));
    let (dts, cts, came_out) = run(&mut r);
    assert_eq!(dts, [6000, 9000, 12000, 15000, 18000, 21000, 24000]);
    assert_eq!(cts, [3000, 9000, 0, 0, 9000, 0, 0]);
    // Latency: nothing until depth + 1 frames are in, then one frame behind.
    assert_eq!(came_out, [0, 1, 1, 1, 1, 1, 1]);

    // Deeper than needed: decode starts two frames early; without a frame interval the
    // first decode times are spaced by the smallest pts gap seen (here the right one).
    let mut r = DtsReorder::new(ReorderDepth::Fixed(2));
    let (dts, cts, came_out) = run(&mut r);
    assert_eq!(dts, [3000, 6000, 9000, 12000, 15000, 18000, 21000]);
    assert_eq!(cts, [6000, 12000, 3000, 3000, 12000, 3000, 3000]);
    assert_eq!(came_out, [0, 0, 2, 1, 1, 1, 1]);

    // Without the interval and with only I and P among the first frames, the gap is 3
    // frames: valid, but the first sample lasts 3 intervals.
    let mut r = DtsReorder::new(ReorderDepth::Fixed(1));
    let (dts, _, _) = run(&mut r);
    assert_eq!(dts, [0, 9000, 12000, 15000, 18000, 21000, 24000]);
}

#[test]
fn dts_reorder_depth_zero_is_pts() {
    let mut r = DtsReorder::new(ReorderDepth::Fixed(0));
    let mut out = Vec::new();
    for (i, p) in [0i64, 3000, 6100, 9000].into_iter().enumerate() {
        r.push(p, true, Bytes::new());
        out.extend(drain(&mut r));
        assert_eq!(out.len(), i, "one frame of latency");
    }
    r.flush(Some(2500));
    out.extend(drain(&mut r));
    let got: Vec<(u64, u64, u32)> = out.iter().map(|s| (s.dts, s.pts, s.duration)).collect();
    assert_eq!(
        got,
        [
            (0, 0, 3000),
            (3000, 3000, 3100),
            (6100, 6100, 2900),
            (9000, 9000, 2500)
        ]
    );
}

#[test]
fn dts_reorder_without_room_squeezes_then_raises() {
    // The first frame at pts 0 leaves no room before it: the first decode times are
    // squeezed in just above 0 (1 tick apart) and the cadence resumes after them.
    let order = [0i64, 3, 1, 2];
    let inputs: Vec<Bytes> = (0..4).map(|i| Bytes::from(vec![i])).collect();
    let mut r = DtsReorder::new(ReorderDepth::Fixed(2)).with_frame_duration(Some(3000));
    for (i, k) in order.iter().enumerate() {
        r.push(k * 3000, i == 0, inputs[i].clone());
    }
    r.flush(None);
    let out = drain(&mut r);
    check_invariants(&out, &inputs);
    assert_eq!(
        out.iter().map(|s| s.dts).collect::<Vec<_>>(),
        [0, 1, 2, 3000]
    );
    assert_eq!(r.stats().pts_raised, 0);

    // Duplicate presentation times: the second cannot be decoded by then: raised 1 tick.
    let mut r = DtsReorder::new(ReorderDepth::Fixed(0));
    for (i, p) in [0i64, 3000, 3000, 6000].into_iter().enumerate() {
        r.push(p, i == 0, inputs[i].clone());
    }
    r.flush(None);
    let out = drain(&mut r);
    check_invariants(&out, &inputs);
    assert_eq!(
        out.iter().map(|s| s.pts).collect::<Vec<_>>(),
        [0, 3000, 3001, 6000]
    );
    assert_eq!(r.stats().pts_raised, 1);

    // A frame before the origin (negative ticks) is raised to 0.
    let mut r = DtsReorder::new(ReorderDepth::Fixed(0));
    r.push(-10, true, inputs[0].clone());
    r.flush(None);
    assert_eq!(drain(&mut r)[0].pts, 0);
    assert_eq!(r.stats().pts_raised, 1);
}

#[test]
fn dts_reorder_adaptive_measures_then_deepens() {
    let t = 3000i64;
    // Depth 1 in the first GOP, depth 2 later.
    let order = [0i64, 2, 1, 4, 3, 6, 5, 10, 8, 7, 9, 14, 12, 11, 13];
    let pts: Vec<i64> = order.iter().map(|k| 30_000 + k * t).collect();
    let inputs: Vec<Bytes> = (0..pts.len()).map(|i| Bytes::from(vec![i as u8])).collect();

    // Probing everything: the measured depth is exact, nothing is raised.
    let mut r = DtsReorder::new(ReorderDepth::Adaptive {
        initial: 0,
        probe: pts.len(),
    });
    for (i, &p) in pts.iter().enumerate() {
        r.push(p, i == 0, inputs[i].clone());
    }
    r.flush(None);
    check_invariants(&drain(&mut r), &inputs);
    assert_eq!((r.stats().depth, r.stats().pts_raised), (2, 0));

    // Probing 4 frames finds depth 1; the deeper reordering later costs one raised pts.
    let mut r = DtsReorder::new(ReorderDepth::Adaptive {
        initial: 0,
        probe: 4,
    });
    for (i, &p) in pts.iter().enumerate() {
        r.push(p, i == 0, inputs[i].clone());
    }
    r.flush(None);
    let out = drain(&mut r);
    check_invariants(&out, &inputs);
    assert_eq!(r.stats().depth, 2);
    assert_eq!(r.stats().pts_raised, 1);
    // Every other frame keeps its pts.
    let kept = out
        .iter()
        .zip(&pts)
        .filter(|(s, p)| s.pts as i64 == **p)
        .count();
    assert_eq!(kept, pts.len() - 1);

    // Fixed at 1: invariants still hold, at the cost of raised pts.
    let mut r = DtsReorder::new(ReorderDepth::Fixed(1));
    for (i, &p) in pts.iter().enumerate() {
        r.push(p, i == 0, inputs[i].clone());
    }
    r.flush(None);
    check_invariants(&drain(&mut r), &inputs);
    assert!(r.stats().pts_raised > 0);
    assert_eq!(r.stats().depth, 1);
}

#[test]
fn dts_reorder_flush_starts_a_new_timeline() {
    let mut r = DtsReorder::new(ReorderDepth::Fixed(1));
    r.push(1000, true, Bytes::new());
    r.flush(Some(40));
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    assert!(out[0].dts < 1000 && out[0].duration == 40);
    assert_eq!(r.pending(), 0);
    // After a flush, earlier times are fine again (e.g. a file looping).
    r.push(0, true, Bytes::new());
    r.push(3000, false, Bytes::new());
    r.flush(None);
    let out = drain(&mut r);
    assert_eq!(out.len(), 2);
    assert_eq!(r.stats().pts_raised, 0);
}

// ---------------------------------------------------------------------------------------
// Audio timing.

#[test]
fn audio_timer_snaps_rounded_timestamps_to_frame_lengths() {
    // AAC at 48 kHz muxed with millisecond timestamps: 0, 21, 43, 64, 85 ms.
    let map = TimeMap::new(48_000, 0);
    let mut a = AudioTimer::new();
    let mut out = Vec::new();
    for ms in [0i64, 21, 43, 64, 85] {
        a.push(map.ticks(ms * 1_000_000), Some(1024), Bytes::new());
        out.extend(std::iter::from_fn(|| a.pop()));
    }
    a.flush(None);
    out.extend(std::iter::from_fn(|| a.pop()));
    let got: Vec<(u64, u32)> = out.iter().map(|s| (s.dts, s.duration)).collect();
    assert_eq!(
        got,
        [
            (0, 1024),
            (1024, 1024),
            (2048, 1024),
            (3072, 1024),
            (4096, 1024)
        ]
    );
    assert!(out.iter().all(|s| s.sync && s.pts == s.dts));
    assert_eq!(a.stats().resyncs, 0);

    // A 100 ms gap: the timeline follows the pts, the frame before it lasts until then.
    let mut a = AudioTimer::new();
    for ms in [0i64, 21, 143] {
        a.push(map.ticks(ms * 1_000_000), Some(1024), Bytes::new());
    }
    a.flush(None);
    let got: Vec<(u64, u32)> = std::iter::from_fn(|| a.pop())
        .map(|s| (s.dts, s.duration))
        .collect();
    assert_eq!(got, [(0, 1024), (1024, 5840), (6864, 1024)]);
    assert_eq!(a.stats().resyncs, 1);

    // Without frame lengths: durations are pts deltas, the last one the previous duration.
    let mut a = AudioTimer::new();
    for t in [0i64, 960, 1930] {
        a.push(t, None, Bytes::new());
    }
    a.flush(None);
    let got: Vec<u32> = std::iter::from_fn(|| a.pop()).map(|s| s.duration).collect();
    assert_eq!(got, [960, 970, 970]);

    // Going backwards or below zero never breaks the order.
    let mut a = AudioTimer::new();
    for t in [-50i64, 100, 100, 40] {
        a.push(t, Some(10), Bytes::new());
    }
    a.flush(None);
    let out: Vec<Sample> = std::iter::from_fn(|| a.pop()).collect();
    // -50 → 0; 100; the second 100 is a whole frame before where the previous one ends
    // (110): an overlap, so the timeline follows it, just after 100; 40 → after that.
    assert_eq!(
        out.iter().map(|s| s.dts).collect::<Vec<_>>(),
        [0, 100, 101, 102]
    );
    assert_eq!(a.stats().pts_raised, 3);
}

#[test]
fn opus_toc_durations() {
    // config 31 (CELT 20 ms), one frame.
    assert_eq!(opus_packet_samples(&[31 << 3]), Some(960));
    // config 1 (SILK 20 ms), two frames (code 1).
    assert_eq!(opus_packet_samples(&[(1 << 3) | 1]), Some(1920));
    // config 16 (CELT 2.5 ms), code 3 with 6 frames.
    assert_eq!(opus_packet_samples(&[(16 << 3) | 3, 6]), Some(720));
    // config 3 (SILK 60 ms) × 3 = 180 ms: not a valid packet.
    assert_eq!(opus_packet_samples(&[(3 << 3) | 3, 3]), None);
    assert_eq!(opus_packet_samples(&[(16 << 3) | 3, 0]), None);
    assert_eq!(opus_packet_samples(&[(16 << 3) | 3]), None);
    assert_eq!(opus_packet_samples(&[]), None);
    // Hybrid 10 ms.
    assert_eq!(opus_packet_samples(&[12 << 3]), Some(480));
}

// ---------------------------------------------------------------------------------------
// The testdata, end to end.

/// Writes every carried track of `name` and reads it back with mp4-atom: same number of
/// samples as demuxed frames, same payloads, sync flags, sizes; tfdt = first dts of each
/// chunk and contiguous; composition offsets ≥ 0; pts = the source's (video exactly, audio
/// within half a frame).
fn round_trip(name: &str, expect: &[(Codec, &str)]) {
    let Some(bytes) = testdata(name) else {
        eprintln!("no testdata/{name}: skipped");
        return;
    };
    let (tracks, frames) = testkit::demux(&bytes);
    let outputs = testkit::remux(&bytes);
    assert_eq!(outputs.len(), expect.len(), "{name}: tracks written");
    for (out, &(codec, fourcc)) in outputs.iter().zip(expect) {
        let track: &Track = &tracks[out.index];
        assert_eq!(track.codec, codec);
        let mine: Vec<&Frame> = frames.iter().filter(|f| f.track == out.index).collect();
        let map = TimeMap::new(out.config.timescale, out.origin_ns);

        let file = out.file();
        let (moov, styps, prfts, read) = read_back(&file);
        let entry = &moov.trak[0].mdia.minf.stbl.stsd.codecs;
        assert_eq!(entry.len(), 1);
        assert!(
            find_box(&out.init, fourcc.as_bytes().try_into().unwrap()).is_some(),
            "{name}: {fourcc}"
        );
        assert_eq!(moov.trak[0].mdia.mdhd.timescale, out.config.timescale);
        assert!(
            styps >= 1 && prfts == styps,
            "{name}: {styps} styp, {prfts} prft"
        );

        assert_eq!(read.len(), mine.len(), "{name} {fourcc}: sample count");
        let mut last_seq = 0;
        for (i, (r, f)) in read.iter().zip(&mine).enumerate() {
            assert_eq!(r.data, f.data, "{name} {fourcc} sample {i}: payload");
            let expect_flags = if f.keyframe {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            };
            assert_eq!(r.flags, expect_flags, "{name} {fourcc} sample {i}: flags");
            assert!(r.pts >= r.dts as i64, "{name} {fourcc} sample {i}: cts < 0");
            assert!(r.seq >= last_seq);
            last_seq = r.seq;
            let src = map.ticks(f.pts);
            if track.codec.kind() == crate::media::TrackKind::Video {
                assert_eq!(r.pts, src, "{name} {fourcc} sample {i}: pts");
            } else {
                let half = (out.samples[i].duration / 2) as i64;
                assert!(
                    (r.pts - src).abs() <= half,
                    "{name} {fourcc} sample {i}: pts {} vs {src}",
                    r.pts
                );
            }
            if let Some(next) = read.get(i + 1) {
                assert!(next.dts > r.dts);
                assert_eq!(
                    r.dts + u64::from(r.duration),
                    next.dts,
                    "{name}: contiguous"
                );
            }
            // What was read is what was written.
            let w = &out.samples[i];
            assert_eq!(
                (r.dts, r.pts, r.duration),
                (w.dts, w.pts as i64, w.duration)
            );
        }
        // Sequence numbers count the chunks.
        assert_eq!(last_seq as usize, out.chunks.len());
        assert_eq!(out.stats.pts_raised, 0, "{name} {fourcc}");
    }
}

#[test]
fn testdata_h264_aac() {
    round_trip(
        "h264_aac.mkv",
        &[(Codec::H264, "avc1"), (Codec::Aac, "mp4a")],
    );
}

#[test]
fn testdata_vp9_opus() {
    round_trip(
        "vp9_opus.webm",
        &[(Codec::Vp9, "vp09"), (Codec::Opus, "Opus")],
    );
}

#[test]
fn testdata_h265_aac() {
    round_trip(
        "h265_aac.mkv",
        &[(Codec::H265, "hvc1"), (Codec::Aac, "mp4a")],
    );
}

#[test]
fn testdata_av1_opus() {
    round_trip(
        "av1_opus.mkv",
        &[(Codec::Av1, "av01"), (Codec::Opus, "Opus")],
    );
}

#[test]
fn testdata_h264_flac() {
    round_trip(
        "h264_flac.mkv",
        &[(Codec::H264, "avc1"), (Codec::Flac, "fLaC")],
    );
}

/// The configuration records pass through unchanged (hvcC only gains its completeness
/// bits).
#[test]
fn testdata_configuration_records_pass_through() {
    for (name, fourcc) in [
        ("h264_aac.mkv", b"avcC"),
        ("h265_aac.mkv", b"hvcC"),
        ("av1_opus.mkv", b"av1C"),
    ] {
        let Some(bytes) = testdata(name) else {
            continue;
        };
        let (tracks, _) = testkit::demux(&bytes);
        let out = &testkit::remux(&bytes)[0];
        let private = tracks[0].codec_private.clone().unwrap();
        let at = find_box(&out.init, fourcc).unwrap();
        let body = &out.init[at + 8..at + be32(&out.init, at) as usize];
        if fourcc == b"hvcC" {
            assert_eq!(body.len(), private.len());
            // The arrays start at byte 23: each array's first byte may gain bit 7.
            assert_eq!(&body[..23], &private[..23]);
        } else {
            assert_eq!(body, &private[..], "{name}");
        }
    }
}

/// The real B-frame stream (x264, 3 B-frames, b-pyramid): with the depth an SPS would
/// declare, and with adaptive depth, DTS is strictly increasing, ≤ PTS, and no pts moves.
#[test]
fn testdata_h264_b_frames_dts() {
    let Some(bytes) = testdata("h264_aac.mkv") else {
        return;
    };
    let (_, frames) = testkit::demux(&bytes);
    let map = TimeMap::new(90_000, frames[0].pts - testkit::LEAD_IN_NS);
    let video: Vec<&Frame> = frames.iter().filter(|f| f.track == 0).collect();
    let pts: Vec<i64> = video.iter().map(|f| map.ticks(f.pts)).collect();
    let depth = testkit::reorder_depth(&pts);
    assert!(depth >= 1, "the sample has B-frames");
    let inputs: Vec<Bytes> = video.iter().map(|f| f.data.clone()).collect();

    // DefaultDuration: 40 ms.
    let interval = Some(3600);
    let run = |mode: ReorderDepth| {
        let mut r = DtsReorder::new(mode).with_frame_duration(interval);
        let mut out = Vec::new();
        let mut max_pending = 0;
        for f in &video {
            r.push(map.ticks(f.pts), f.keyframe, f.data.clone());
            max_pending = max_pending.max(r.pending());
            out.extend(drain(&mut r));
        }
        r.flush(None);
        out.extend(drain(&mut r));
        (out, r.stats(), max_pending)
    };
    let (fixed, stats, max_pending) = run(ReorderDepth::Fixed(depth));
    check_invariants(&fixed, &inputs);
    assert_eq!(stats.pts_raised, 0);
    assert_eq!(max_pending, depth + 1, "latency: depth frames");
    assert!(fixed.iter().zip(&pts).all(|(s, &p)| s.pts as i64 == p));
    // Constant frame rate in, constant durations out.
    assert!(
        fixed.iter().all(|s| s.duration == 3600),
        "25 fps = 3600 ticks"
    );
    // Decode runs `depth` frames ahead: the B-frames presented right after they are decoded
    // get offset 0, a P frame its mini-GOP (3 B-frames) plus the depth.
    let cts: Vec<u64> = fixed.iter().map(|s| s.pts - s.dts).collect();
    assert_eq!(cts.iter().min(), Some(&0));
    assert_eq!(cts.iter().max(), Some(&((3 + depth as u64) * 3600)));

    let (adaptive, stats, _) = run(ReorderDepth::Adaptive {
        initial: 0,
        probe: 8,
    });
    assert_eq!(stats.pts_raised, 0);
    assert_eq!(stats.depth, depth);
    assert_eq!(adaptive, fixed);

    // Declared too shallow: still valid output.
    let (shallow, stats, _) = run(ReorderDepth::Fixed(depth - 1));
    check_invariants(&shallow, &inputs);
    assert!(stats.pts_raised > 0);
}

// ---------------------------------------------------------------------------------------
// Random frame sequences through timing and fragments.

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// A random stream in decode order: presentation slots permuted within mini-GOPs, jitter,
/// duplicates, jumps, and random sizes and sync flags.
fn random_stream(rng: &mut Rng) -> Vec<(i64, bool, Bytes)> {
    let n = 1 + rng.below(120) as usize;
    let step = 1 + rng.below(4000) as i64;
    let reorder = rng.below(5) as usize;
    let base = rng.below(200_000) as i64 - 20_000;
    let jitter = if rng.below(3) == 0 {
        rng.below(step as u64) as i64
    } else {
        0
    };
    let mut slots: Vec<i64> = (0..n as i64).collect();
    // Reorder: reverse or rotate small windows (B-frame pyramids).
    let mut i = 1;
    while i < n && reorder > 0 {
        let w = 1 + rng.below(reorder as u64 + 1) as usize;
        let end = (i + w).min(n);
        if rng.below(2) == 0 {
            slots[i..end].reverse();
        } else {
            slots[i..end].rotate_right(1);
        }
        i = end;
    }
    (0..n)
        .map(|i| {
            let mut pts = base + slots[i] * step;
            if jitter > 0 {
                pts += rng.below(2 * jitter as u64 + 1) as i64 - jitter;
            }
            match rng.below(40) {
                0 => pts -= step * rng.below(50) as i64, // a jump back
                1 => pts += step * rng.below(50) as i64, // a jump ahead
                _ => {}
            }
            let size = match rng.below(40) {
                0..=3 => 0,
                4 => 1 + rng.below(100_000) as usize,
                _ => 1 + rng.below(300) as usize,
            };
            let mut data = vec![rng.next() as u8; size];
            // Make every payload unique, so the order check means something.
            data.extend_from_slice(&(i as u32).to_be_bytes());
            (pts, i == 0 || rng.below(8) == 0, Bytes::from(data))
        })
        .collect()
}

#[test]
fn random_streams_keep_the_invariants() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let stream = random_stream(&mut rng);
        let inputs: Vec<Bytes> = stream.iter().map(|s| s.2.clone()).collect();
        let pts: Vec<i64> = stream.iter().map(|s| s.0).collect();
        let true_depth = testkit::reorder_depth(&pts);
        let mode = match rng.below(4) {
            0 => ReorderDepth::Fixed(true_depth),
            1 => ReorderDepth::Fixed(rng.below(MAX_REORDER_DEPTH as u64 + 4) as usize),
            2 => ReorderDepth::Adaptive {
                initial: 0,
                probe: stream.len(),
            },
            _ => ReorderDepth::Adaptive {
                initial: rng.below(3) as usize,
                probe: rng.below(10) as usize,
            },
        };

        let audio = rng.below(5) == 0;
        let mut out = Vec::new();
        let raised = if audio {
            let mut a = AudioTimer::new();
            let len = (rng.below(3) > 0).then(|| 1 + rng.below(3000) as u32);
            for (p, _, d) in &stream {
                a.push(*p, len, d.clone());
                out.extend(std::iter::from_fn(|| a.pop()));
            }
            a.flush(None);
            out.extend(std::iter::from_fn(|| a.pop()));
            a.stats().pts_raised
        } else {
            let mut r = DtsReorder::new(mode);
            for (p, s, d) in &stream {
                r.push(*p, *s, d.clone());
                out.extend(drain(&mut r));
            }
            r.flush(if rng.below(2) == 0 {
                None
            } else {
                Some(rng.below(5000) as u32)
            });
            out.extend(drain(&mut r));
            r.stats().pts_raised
        };
        check_invariants(&out, &inputs);
        assert!(out.iter().zip(&stream).all(|(o, s)| o.sync == s.1 || audio));

        // Room before the first frame, distinct pts and a sufficient depth: nothing moves.
        let mut sorted = pts.clone();
        sorted.sort_unstable();
        let distinct = sorted.windows(2).all(|w| w[0] < w[1]);
        let enough = match mode {
            ReorderDepth::Fixed(d) => d.min(MAX_REORDER_DEPTH) >= true_depth,
            ReorderDepth::Adaptive { probe, .. } => {
                probe >= stream.len() && true_depth <= MAX_REORDER_DEPTH
            }
        };
        if !audio && distinct && enough && sorted[0] >= true_depth.max(MAX_REORDER_DEPTH) as i64 {
            assert_eq!(raised, 0, "round {round}: {mode:?}");
            assert!(out.iter().zip(&pts).all(|(o, &p)| o.pts as i64 == p));
        }

        // Fragments of random lengths, read back.
        let mut writer = FragmentWriter::new(1);
        let mut file = init_segment(&h264_config()).unwrap().to_vec();
        let mut start = 0;
        while start < out.len() {
            let end = (start + 1 + rng.below(12) as usize).min(out.len());
            if rng.below(4) == 0 {
                file.extend_from_slice(&styp());
            }
            let chunk = writer.write(&out[start..end]).unwrap();
            assert_eq!(
                chunk.len,
                chunk.buffers.iter().map(|b| b.len() as u64).sum::<u64>()
            );
            file.extend_from_slice(&chunk.to_bytes());
            start = end;
        }
        let (_, _, _, read) = read_back(&file);
        assert_eq!(read.len(), out.len());
        for (r, o) in read.iter().zip(&out) {
            assert_eq!(
                (r.dts, r.pts, r.duration),
                (o.dts, o.pts as i64, o.duration)
            );
            assert_eq!(r.data, o.data);
            assert_eq!(r.flags == SYNC_SAMPLE_FLAGS, o.sync);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server's path: media::codec's parse → track_config.

mod from_codec {
    use super::testkit;
    use crate::media::codec::{CmafTrack, cmaf_info};
    use crate::mux::fmp4::{SampleEntry, init_segment, track_config};

    /// The init segment built from `media::codec`'s parse equals the one the fmp4 tests
    /// build from the raw CodecPrivate by hand: two derivations of the same boxes.
    #[test]
    fn init_segments_agree_with_the_hand_built_ones() {
        let mut checked = 0;
        for file in [
            "h264_aac.mkv",
            "h265_aac.mkv",
            "av1_opus.mkv",
            "h264_flac.mkv",
            "vp9_opus.webm",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata")
                .join(file);
            let (tracks, frames) = testkit::demux(&std::fs::read(path).unwrap());
            for (i, track) in tracks.iter().enumerate() {
                let key = frames
                    .iter()
                    .find(|f| f.track == i && f.keyframe)
                    .map(|f| &f.data[..]);
                let CmafTrack::Carried(info) = cmaf_info(track, key).unwrap() else {
                    panic!("{file} track {i} is carried");
                };
                let ours = track_config(&info, 1);
                let mut theirs = testkit::track_config(track).unwrap();
                if let (SampleEntry::Vp9 { vpcc: a, .. }, SampleEntry::Vp9 { vpcc: b, .. }) =
                    (&ours.sample_entry, &mut theirs.sample_entry)
                {
                    // The hand-built one assumes BT.709 and derives no level; the stream
                    // declares no colour space (VP9 CS_UNKNOWN), which vpcC says as 2,
                    // "unspecified".
                    b.level = a.level;
                    b.colour_primaries = a.colour_primaries;
                    b.transfer_characteristics = a.transfer_characteristics;
                    b.matrix_coefficients = a.matrix_coefficients;
                }
                theirs.language = None;
                assert_eq!(ours, theirs, "{file} track {i}");
                assert_eq!(init_segment(&ours).unwrap(), init_segment(&theirs).unwrap());
                checked += 1;
            }
        }
        assert_eq!(checked, 10);
    }
}
