//! Tests: hand-built streams for each rule, the repo's testdata against an independent
//! parser (matroska-demuxer) and ffprobe's counts (testdata/expected.txt), and a
//! deterministic mutation loop.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use super::*;
use crate::media::Codec;

// ---------------------------------------------------------------------------------------
// Building streams by hand.

/// An element with an 8-byte size (any width is valid; 8 keeps the builder simple).
fn el(id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = id_bytes(id);
    v.push(0x01);
    v.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
    v.extend_from_slice(body);
    v
}

/// An element with a 1-byte size (body < 127 bytes).
fn el1(id: u32, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 127);
    let mut v = id_bytes(id);
    v.push(0x80 | body.len() as u8);
    v.extend_from_slice(body);
    v
}

fn id_bytes(id: u32) -> Vec<u8> {
    let b = id.to_be_bytes();
    let skip = b.iter().position(|&x| x != 0).unwrap_or(3);
    b[skip..].to_vec()
}

fn uint_el(id: u32, v: u64) -> Vec<u8> {
    el1(id, &v.to_be_bytes())
}

fn ebml_header(doc_type: &str) -> Vec<u8> {
    let body = [
        uint_el(0x4286, 1),
        uint_el(0x42F7, 1),
        uint_el(0x42F2, 4),
        uint_el(0x42F3, 8),
        el1(id::DOC_TYPE, doc_type.as_bytes()),
        uint_el(0x4287, 4),
        uint_el(0x4285, 2),
    ]
    .concat();
    el(id::EBML, &body)
}

const UNKNOWN_8: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// A master element of unknown size, written with the given all-ones size bytes.
fn open_unknown(id: u32, size: &[u8]) -> Vec<u8> {
    let mut v = id_bytes(id);
    v.extend_from_slice(size);
    v
}

fn info(scale: u64) -> Vec<u8> {
    el(id::INFO, &uint_el(id::TIMESTAMP_SCALE, scale))
}

fn video_entry(number: u64, codec: &str) -> Vec<u8> {
    el(
        id::TRACK_ENTRY,
        &[
            uint_el(id::TRACK_NUMBER, number),
            uint_el(id::TRACK_TYPE, 1),
            el1(id::CODEC_ID, codec.as_bytes()),
            el(
                id::VIDEO,
                &[
                    uint_el(id::PIXEL_WIDTH, 320),
                    uint_el(id::PIXEL_HEIGHT, 240),
                ]
                .concat(),
            ),
        ]
        .concat(),
    )
}

fn audio_entry(number: u64, codec: &str, default_duration: Option<u64>) -> Vec<u8> {
    let mut body = [
        uint_el(id::TRACK_NUMBER, number),
        uint_el(id::TRACK_TYPE, 2),
        el1(id::CODEC_ID, codec.as_bytes()),
        el(
            id::AUDIO,
            &[
                el1(id::SAMPLING_FREQUENCY, &48000f64.to_be_bytes()),
                uint_el(id::CHANNELS, 2),
            ]
            .concat(),
        ),
    ]
    .concat();
    if let Some(d) = default_duration {
        body.extend(uint_el(id::DEFAULT_DURATION, d));
    }
    el(id::TRACK_ENTRY, &body)
}

fn tracks(entries: &[Vec<u8>]) -> Vec<u8> {
    el(id::TRACKS, &entries.concat())
}

/// VP9 video as track 1, Opus audio (20 ms DefaultDuration) as track 2.
fn std_tracks() -> Vec<u8> {
    tracks(&[
        video_entry(1, "V_VP9"),
        audio_entry(2, "A_OPUS", Some(20_000_000)),
    ])
}

fn simple_block(track: u8, timecode: i16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x80 | track];
    body.extend_from_slice(&timecode.to_be_bytes());
    body.push(flags);
    body.extend_from_slice(payload);
    el(id::SIMPLE_BLOCK, &body)
}

fn cluster_body(ts: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut v = uint_el(id::TIMESTAMP, ts);
    for b in blocks {
        v.extend_from_slice(b);
    }
    v
}

fn cluster(ts: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    el(id::CLUSTER, &cluster_body(ts, blocks))
}

fn cluster_unknown(size: &[u8], ts: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut v = open_unknown(id::CLUSTER, size);
    v.extend(cluster_body(ts, blocks));
    v
}

/// EBML header + unknown-size Segment + Info + the given Tracks.
fn live_head(tracks_el: &[u8]) -> Vec<u8> {
    let mut v = ebml_header("webm");
    v.extend(open_unknown(id::SEGMENT, &UNKNOWN_8));
    v.extend(info(1_000_000));
    v.extend_from_slice(tracks_el);
    v
}

// ---------------------------------------------------------------------------------------
// Running the demuxer.

/// Feeds `data` in `chunk`-byte pieces, draining events after each, then finishes.
/// Checks after every drain that the buffer holds no more than one element plus one read.
fn run_with(
    data: &[u8],
    chunk: usize,
    limits: DemuxLimits,
) -> (Vec<DemuxEvent>, Option<DemuxError>) {
    let bound = limits.max_element_size.max(limits.max_header_size) + 64;
    let mut d = MkvDemuxer::new(limits);
    let mut events = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        d.feed(piece);
        loop {
            match d.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
        assert!(
            d.buf.len() <= bound + chunk,
            "buffered {} bytes with {chunk}-byte reads",
            d.buf.len()
        );
        assert!(d.buf.capacity() <= 2 * (bound + chunk) + 4096);
    }
    loop {
        match d.finish() {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => return (events, None),
            Err(e) => return (events, Some(e)),
        }
    }
}

fn run(data: &[u8], chunk: usize) -> (Vec<DemuxEvent>, Option<DemuxError>) {
    run_with(data, chunk, DemuxLimits::default())
}

/// Runs with 1-, 7- and 64 KiB reads, checks they agree, and returns the events, which
/// must end without an error.
fn run_ok(data: &[u8]) -> Vec<DemuxEvent> {
    let (events, err) = run(data, 65536);
    assert_eq!(err, None, "events so far: {events:?}");
    for chunk in [1, 7] {
        let (other, err) = run(data, chunk);
        assert_eq!(err, None);
        assert_eq!(other, events, "{chunk}-byte reads differ from 64 KiB reads");
    }
    events
}

fn frames(events: &[DemuxEvent]) -> Vec<&Frame> {
    events
        .iter()
        .filter_map(|e| match e {
            DemuxEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn ms(x: i64) -> i64 {
    x * 1_000_000
}

// ---------------------------------------------------------------------------------------
// Hand-built streams.

#[test]
fn live_stream_with_both_unknown_size_encodings() {
    for size in [&[0xFFu8][..], &[0x7F, 0xFF], &UNKNOWN_8] {
        let mut s = ebml_header("webm");
        s.extend(open_unknown(id::SEGMENT, size));
        s.extend(info(1_000_000));
        s.extend(std_tracks());
        s.extend(cluster_unknown(
            size,
            0,
            &[
                simple_block(1, 0, 0x80, b"key"),
                simple_block(2, 0, 0x80, b"a0"),
                simple_block(1, 40, 0x00, b"delta"),
            ],
        ));
        s.extend(cluster_unknown(
            size,
            1000,
            &[simple_block(1, 0, 0x00, b"d2")],
        ));
        let events = run_ok(&s);
        let DemuxEvent::Tracks(t) = &events[0] else {
            panic!("first event {:?}", events[0]);
        };
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].codec, Codec::Vp9);
        assert_eq!(
            t[0].video.as_ref().map(|v| (v.width, v.height)),
            Some((320, 240))
        );
        assert_eq!(t[1].codec, Codec::Opus);
        assert_eq!(
            t[1].audio.as_ref().map(|a| (a.sample_rate, a.channels)),
            Some((48000.0, 2))
        );
        assert_eq!(t[1].default_duration_ns, Some(20_000_000));
        let f = frames(&events);
        let got: Vec<_> = f
            .iter()
            .map(|f| (f.track, f.pts, f.keyframe, &f.data[..]))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, true, &b"key"[..]),
                (1, 0, true, b"a0"),
                (0, ms(40), false, b"delta"),
                (0, ms(1000), false, b"d2"),
            ]
        );
        assert_eq!(f[1].duration, Some(20_000_000));
        assert_eq!(f[0].duration, None);
    }
}

#[test]
fn known_sizes_and_timestamp_scale() {
    let mut body = info(100_000);
    body.extend(std_tracks());
    body.extend(cluster(10, &[simple_block(1, 5, 0x80, b"x")]));
    let mut s = ebml_header("matroska");
    s.extend(el(id::SEGMENT, &body));
    let events = run_ok(&s);
    let f = frames(&events);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].pts, 15 * 100_000);
}

fn lacing_stream(flags: u8, lace_header: &[u8], payload: &[u8], dd: Option<u64>) -> Vec<u8> {
    let mut s = live_head(&tracks(&[audio_entry(1, "A_AAC", dd)]));
    let mut body = lace_header.to_vec();
    body.extend_from_slice(payload);
    s.extend(cluster_unknown(
        &[0xFF],
        100,
        &[simple_block(1, 0, 0x80 | flags, &body)],
    ));
    s
}

#[test]
fn each_lacing_type_with_and_without_default_duration() {
    let a = vec![1u8; 300];
    let b = vec![2u8; 20];
    let c = vec![3u8; 7];
    let payload = [a.clone(), b.clone(), c.clone()].concat();
    let xiph = [2u8, 255, 45, 20];
    // EBML: 300 (2-byte VINT 0x412C), then 20 - 300 = -280 as a 2-byte signed VINT
    // (bias 8191): 7911 = 0x1EE7 → 0x5EE7.
    let ebml = [2u8, 0x41, 0x2C, 0x5E, 0xE7];
    for (name, flags, header) in [("xiph", 0x02, &xiph[..]), ("ebml", 0x06, &ebml[..])] {
        for dd in [Some(21_333_333), None] {
            let events = run_ok(&lacing_stream(flags, header, &payload, dd));
            let f = frames(&events);
            let data: Vec<_> = f.iter().map(|f| f.data.to_vec()).collect();
            assert_eq!(data, vec![a.clone(), b.clone(), c.clone()], "{name}");
            let pts: Vec<_> = f.iter().map(|f| f.pts).collect();
            let step = dd.map_or(0, |d| d as i64);
            assert_eq!(
                pts,
                vec![ms(100), ms(100) + step, ms(100) + 2 * step],
                "{name}"
            );
            assert!(f.iter().all(|f| f.keyframe && f.duration == dd));
        }
    }
    let events = run_ok(&lacing_stream(
        0x04,
        &[3],
        &[[9u8; 5], [8; 5], [7; 5], [6; 5]].concat(),
        Some(10),
    ));
    let f = frames(&events);
    assert_eq!(f.len(), 4);
    assert_eq!(&f[3].data[..], &[6u8; 5]);
    assert_eq!(f[3].pts, ms(100) + 30);
}

#[test]
fn block_groups_reference_and_duration() {
    let mut s = live_head(&std_tracks());
    let block = |tc: i16, payload: &[u8]| {
        let mut b = vec![0x81];
        b.extend_from_slice(&tc.to_be_bytes());
        b.push(0);
        b.extend_from_slice(payload);
        el(id::BLOCK, &b)
    };
    let key = el(
        id::BLOCK_GROUP,
        &[block(0, b"I"), uint_el(id::BLOCK_DURATION, 80)].concat(),
    );
    let delta = el(
        id::BLOCK_GROUP,
        &[
            block(40, b"P"),
            el1(id::REFERENCE_BLOCK, &[0xD8]),
            el1(0x75A2, &[0x01]), // DiscardPadding: ignored
        ]
        .concat(),
    );
    let empty = el(id::BLOCK_GROUP, &uint_el(id::BLOCK_DURATION, 1));
    s.extend(cluster_unknown(&UNKNOWN_8, 0, &[key, delta, empty]));
    let events = run_ok(&s);
    let f = frames(&events);
    assert_eq!(f.len(), 2);
    assert_eq!(
        (f[0].keyframe, f[0].duration, &f[0].data[..]),
        (true, Some(ms(80) as u64), &b"I"[..])
    );
    assert_eq!(
        (f[1].keyframe, f[1].pts, &f[1].data[..]),
        (false, ms(40), &b"P"[..])
    );
}

#[test]
fn element_claiming_2_pow_56_bytes_is_refused_without_allocating() {
    // An EBML header claiming 2^56 - 2 bytes.
    let mut s = id_bytes(id::EBML);
    s.extend([0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]);
    s.extend([0u8; 64]);
    let mut d = MkvDemuxer::new(DemuxLimits::default());
    d.feed(&s);
    let err = d.next_event().unwrap_err();
    assert_eq!(
        err.to_string(),
        "element 0x1A45DFA3 at byte 0 claims 72057594037927934 bytes, more than the 1048576 allowed"
    );
    assert!(d.buf.capacity() < 4096);
    // The same size on a block after the Tracks: a Resync, and still no allocation.
    let mut s = live_head(&std_tracks());
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[simple_block(1, 0, 0x80, b"ok")],
    ));
    s.extend([0xA3, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]);
    s.extend([0x55; 100]);
    s.extend(cluster_unknown(
        &[0xFF],
        1,
        &[simple_block(1, 0, 0x80, b"after")],
    ));
    let events = run_ok(&s);
    let resync = events.iter().find_map(|e| match e {
        DemuxEvent::Resync { skipped, reason } => Some((*skipped, reason.clone())),
        _ => None,
    });
    let (skipped, reason) = resync.expect("a Resync");
    assert_eq!(skipped, 109);
    assert!(
        reason.contains("claims 72057594037927934 bytes"),
        "{reason}"
    );
    let data: Vec<_> = frames(&events).iter().map(|f| f.data.to_vec()).collect();
    assert_eq!(data, vec![b"ok".to_vec(), b"after".to_vec()]);
}

#[test]
fn unknown_size_is_refused_where_not_allowed() {
    let mut s = ebml_header("webm");
    s.extend(open_unknown(id::SEGMENT, &[0xFF]));
    s.extend(open_unknown(id::TRACKS, &[0xFF]));
    s.extend([0u8; 32]);
    let (_, err) = run(&s, 7);
    let err = err.expect("an error").to_string();
    assert!(
        err.contains("0x1654AE6B") && err.contains("unknown size"),
        "{err}"
    );
}

#[test]
fn truncated_input() {
    let mut s = live_head(&std_tracks());
    // Cut inside the Tracks: an error.
    let (events, err) = run(&s[..s.len() - 5], 7);
    assert!(events.is_empty());
    assert!(matches!(err, Some(DemuxError::Truncated { .. })), "{err:?}");
    // Nothing at all: an error too.
    assert!(matches!(
        run(&[], 7).1,
        Some(DemuxError::Truncated { offset: 0 })
    ));
    // Cut inside the last block: the frames before it come out, the partial block is
    // dropped, and finish ends cleanly.
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[
            simple_block(1, 0, 0x80, b"whole"),
            simple_block(1, 40, 0, b"cut off here"),
        ],
    ));
    for cut in 1..12 {
        let events = run_ok(&s[..s.len() - cut]);
        let f = frames(&events);
        assert_eq!(f.len(), 1);
        assert_eq!(&f[0].data[..], b"whole");
    }
}

#[test]
fn garbage_before_the_header_is_an_error() {
    let mut s = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    s.extend(live_head(&std_tracks()));
    for chunk in [1, 7, 4096] {
        let (events, err) = run(&s, chunk);
        assert!(events.is_empty());
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some(
                "not a Matroska stream: it starts with 48 54 54 50, not an EBML header (1A 45 DF A3)"
            )
        );
    }
    // Garbage between the EBML header and the Tracks is fatal too.
    let mut s = ebml_header("webm");
    s.extend(open_unknown(id::SEGMENT, &[0xFF]));
    s.extend([0x00, 0x01, 0x02]);
    let err = run(&s, 7).1.expect("an error");
    assert!(
        err.to_string().starts_with("not a Matroska stream"),
        "{err}"
    );
    // A DocType that is not Matroska.
    let err = run(&ebml_header("ogg"), 7).1.expect("an error");
    assert!(err.to_string().contains("DocType is \"ogg\""), "{err}");
}

#[test]
fn garbage_mid_cluster_resyncs_at_the_next_cluster() {
    let garbage: Vec<u8> = (0..500u32).map(|i| (i * 7 + 3) as u8).collect();
    for size in [&[0xFFu8][..], &UNKNOWN_8] {
        let mut s = live_head(&std_tracks());
        s.extend(cluster_unknown(
            size,
            0,
            &[simple_block(1, 0, 0x80, b"one")],
        ));
        let before = s.len();
        s.extend(&garbage);
        s.extend(cluster_unknown(
            size,
            2000,
            &[simple_block(1, 0, 0x80, b"two")],
        ));
        let events = run_ok(&s);
        let kinds: Vec<_> = events
            .iter()
            .map(|e| match e {
                DemuxEvent::Tracks(_) => "tracks".to_string(),
                DemuxEvent::Frame(f) => String::from_utf8_lossy(&f.data).into_owned(),
                DemuxEvent::Resync { skipped, .. } => format!("resync {skipped}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["tracks", "one", &format!("resync {}", garbage.len()), "two"]
        );
        assert_eq!(frames(&events)[1].pts, ms(2000));
        assert!(before > 0);
    }
}

#[test]
fn garbage_between_known_size_clusters_resyncs() {
    let mut s = live_head(&std_tracks());
    s.extend(cluster(0, &[simple_block(1, 0, 0x80, b"one")]));
    s.extend([0x00; 10]);
    s.extend(cluster(40, &[simple_block(1, 0, 0x80, b"two")]));
    let events = run_ok(&s);
    assert!(
        matches!(events[2], DemuxEvent::Resync { skipped: 10, .. }),
        "{:?}",
        events[2]
    );
    assert_eq!(frames(&events).len(), 2);
}

#[test]
fn corrupt_lacing_inside_a_block_resyncs() {
    let mut s = live_head(&std_tracks());
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[simple_block(2, 0, 0x82, &[5, 255, 255])], // 6 Xiph laces, sizes run out
    ));
    s.extend(cluster_unknown(
        &[0xFF],
        1,
        &[simple_block(2, 0, 0x80, b"ok")],
    ));
    let events = run_ok(&s);
    assert!(matches!(&events[1], DemuxEvent::Resync { reason, .. } if reason.contains("Xiph")));
    assert_eq!(frames(&events).len(), 1);
}

#[test]
fn second_ebml_header_starts_new_tracks() {
    let mut s = live_head(&std_tracks());
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[simple_block(1, 0, 0x80, b"first")],
    ));
    // A pusher reconnects: a whole new stream, with different tracks and timestamps.
    s.extend(live_head(&tracks(&[audio_entry(7, "A_AAC", None)])));
    s.extend(cluster_unknown(
        &[0xFF],
        5,
        &[simple_block(7, 0, 0x00, b"second")],
    ));
    let events = run_ok(&s);
    assert_eq!(events.len(), 4);
    assert!(
        matches!(&events[2], DemuxEvent::Tracks(t) if t.len() == 1 && t[0].codec == Codec::Aac)
    );
    let DemuxEvent::Frame(f) = &events[3] else {
        panic!("{:?}", events[3]);
    };
    assert_eq!((f.track, f.pts, f.keyframe), (0, ms(5), true));
    // The same after a known-size Segment.
    let mut body = std_tracks();
    body.extend(cluster(0, &[simple_block(1, 0, 0x80, b"first")]));
    let mut s = ebml_header("webm");
    s.extend(el(id::SEGMENT, &body));
    s.extend(live_head(&std_tracks()));
    let events = run_ok(&s);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, DemuxEvent::Tracks(_)))
            .count(),
        2
    );
}

#[test]
fn crc32_first_children_are_skipped() {
    let crc = el1(id::CRC32, &[1, 2, 3, 4]);
    let mut s = ebml_header("matroska");
    s.extend(open_unknown(id::SEGMENT, &UNKNOWN_8));
    s.extend(&crc);
    s.extend(info(1_000_000));
    s.extend(std_tracks());
    let mut blocks = vec![crc.clone()];
    blocks.push(simple_block(1, 0, 0x80, b"x"));
    s.extend(cluster_unknown(&[0xFF], 0, &blocks));
    let events = run_ok(&s);
    assert_eq!(frames(&events).len(), 1);
}

#[test]
fn large_elements_are_skipped_without_buffering() {
    let mut s = live_head(&std_tracks());
    s.extend(el(id::VOID, &vec![0u8; 20 << 20]));
    s.extend(el(id::ATTACHMENTS, &vec![0x42u8; 3 << 20]));
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[simple_block(1, 0, 0x80, b"x")],
    ));
    // run() asserts the buffer stays within one element plus one read, far below 20 MiB
    // with these limits.
    let limits = DemuxLimits {
        max_element_size: 1 << 20,
        ..DemuxLimits::default()
    };
    let (events, err) = run_with(&s, 65536, limits);
    assert_eq!(err, None);
    assert_eq!(frames(&events).len(), 1);
}

#[test]
fn unknown_segment_children_are_skipped_by_size() {
    let mut s = live_head(&std_tracks());
    // A 4-byte ID Matroska does not define, 2 MiB long: skipped without buffering.
    s.extend(el(0x1ABC_DEF0, &vec![0xA3; 2 << 20]));
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[simple_block(1, 0, 0x80, b"x")],
    ));
    let limits = DemuxLimits {
        max_element_size: 64 << 10,
        ..DemuxLimits::default()
    };
    let (events, err) = run_with(&s, 4096, limits);
    assert_eq!(err, None);
    assert_eq!(events.len(), 2);
    // A short unknown ID in a Segment is garbage.
    let mut s = live_head(&std_tracks());
    s.extend(el1(0x4321, b"??"));
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[simple_block(1, 0, 0x80, b"x")],
    ));
    let events = run_ok(&s);
    assert!(
        matches!(&events[1], DemuxEvent::Resync { skipped: 5, .. }),
        "{:?}",
        events[1]
    );
    assert_eq!(frames(&events).len(), 1);
}

#[test]
fn extreme_relative_timestamps() {
    let mut s = live_head(&std_tracks());
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[
            simple_block(1, -32768, 0x80, b"a"),
            simple_block(1, 32767, 0, b"b"),
        ],
    ));
    s.extend(cluster_unknown(
        &[0xFF],
        40_000,
        &[simple_block(1, -32768, 0, b"c")],
    ));
    s.extend(cluster_unknown(
        &[0xFF],
        u64::MAX,
        &[simple_block(1, 32767, 0, b"d")],
    ));
    let events = run_ok(&s);
    let pts: Vec<_> = frames(&events).iter().map(|f| f.pts).collect();
    assert_eq!(
        pts,
        vec![ms(-32768), ms(32767), ms(40_000 - 32768), i64::MAX]
    );
    assert_eq!(timestamp_ns(0, i16::MIN, u64::MAX), i64::MIN);
    assert_eq!(timestamp_ns(u64::MAX, i16::MAX, u64::MAX), i64::MAX);
}

#[test]
fn unsupported_codec_names_track_and_codec() {
    let s = live_head(&tracks(&[
        video_entry(1, "V_VP9"),
        video_entry(2, "V_MPEG2"),
    ]));
    let err = run(&s, 7).1.expect("an error");
    assert_eq!(
        err,
        DemuxError::UnsupportedCodec {
            track: 2,
            codec_id: "V_MPEG2".into()
        }
    );
    assert!(
        err.to_string()
            .starts_with("track 2: unsupported codec V_MPEG2 (muxcast carries")
    );
}

#[test]
fn non_av_tracks_and_unknown_track_numbers_are_skipped() {
    let subtitles = el(
        id::TRACK_ENTRY,
        &[
            uint_el(id::TRACK_NUMBER, 3),
            uint_el(id::TRACK_TYPE, 0x11),
            el1(id::CODEC_ID, b"S_TEXT/UTF8"),
        ]
        .concat(),
    );
    let mut s = live_head(&tracks(&[video_entry(1, "V_VP9"), subtitles]));
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[
            simple_block(3, 0, 0x80, b"subtitle"),
            simple_block(9, 0, 0x80, b"undeclared"),
            simple_block(1, 0, 0x80, b"video"),
        ],
    ));
    let events = run_ok(&s);
    assert!(matches!(&events[0], DemuxEvent::Tracks(t) if t.len() == 1));
    let f = frames(&events);
    assert_eq!(f.len(), 1);
    assert_eq!(&f[0].data[..], b"video");
}

fn encoded_track(encoding: &[u8]) -> Vec<u8> {
    el(
        id::TRACK_ENTRY,
        &[
            uint_el(id::TRACK_NUMBER, 1),
            el1(id::CODEC_ID, b"V_MPEG4/ISO/AVC"),
            el1(id::CODEC_PRIVATE, &[1, 0x64, 0, 0x1F]),
            el(id::CONTENT_ENCODINGS, &el(id::CONTENT_ENCODING, encoding)),
        ]
        .concat(),
    )
}

#[test]
fn header_stripping_is_undone_and_other_encodings_refused() {
    let strip = [
        uint_el(id::CONTENT_ENCODING_TYPE, 0),
        el(
            id::CONTENT_COMPRESSION,
            &[
                uint_el(id::CONTENT_COMP_ALGO, 3),
                el1(id::CONTENT_COMP_SETTINGS, &[0, 0, 0]),
            ]
            .concat(),
        ),
    ]
    .concat();
    let mut s = live_head(&tracks(&[encoded_track(&strip)]));
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[
            simple_block(1, 0, 0x80, &[0x05, 0x65, 0x88]),
            simple_block(1, 1, 0, &[0x02, 0x41, 0x9A]),
        ],
    ));
    let events = run_ok(&s);
    let DemuxEvent::Tracks(t) = &events[0] else {
        panic!();
    };
    assert_eq!(t[0].codec, Codec::H264);
    assert_eq!(
        t[0].codec_private.as_deref(),
        Some(&[1u8, 0x64, 0, 0x1F][..])
    );
    let data: Vec<_> = frames(&events).iter().map(|f| f.data.to_vec()).collect();
    assert_eq!(
        data,
        vec![vec![0, 0, 0, 5, 0x65, 0x88], vec![0, 0, 0, 2, 0x41, 0x9A]]
    );

    // zlib: ContentCompAlgo absent means 0.
    let zlib = [el(id::CONTENT_COMPRESSION, &[])].concat();
    let err = run(&live_head(&tracks(&[encoded_track(&zlib)])), 7).1;
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("track 1: zlib compression (ContentCompAlgo 0) is not supported")
    );
    let encrypted = [
        uint_el(id::CONTENT_ENCODING_TYPE, 1),
        el(id::CONTENT_ENCRYPTION, &[]),
    ]
    .concat();
    let err = run(&live_head(&tracks(&[encoded_track(&encrypted)])), 7).1;
    assert!(
        matches!(err, Some(DemuxError::UnsupportedEncoding { track: 1, .. })),
        "{err:?}"
    );
}

#[test]
fn too_many_tracks_and_too_large_header() {
    let entries: Vec<_> = (1..=33).map(|n| audio_entry(n, "A_OPUS", None)).collect();
    let err = run(&live_head(&tracks(&entries)), 4096).1;
    assert_eq!(err, Some(DemuxError::TooManyTracks { limit: 32 }));
    let limits = DemuxLimits {
        max_header_size: 100,
        ..DemuxLimits::default()
    };
    let err = run_with(&live_head(&std_tracks()), 7, limits).1;
    assert!(
        matches!(err, Some(DemuxError::TooLarge { id: id::TRACKS, .. })),
        "{err:?}"
    );
}

#[test]
fn errors_are_sticky_and_feeding_after_finish_is_harmless() {
    let mut d = MkvDemuxer::new(DemuxLimits::default());
    d.feed(b"garbage!");
    let e1 = d.next_event().unwrap_err();
    d.feed(&live_head(&std_tracks()));
    assert_eq!(d.next_event().unwrap_err(), e1);
    assert_eq!(d.finish().unwrap_err(), e1);

    let mut d = MkvDemuxer::new(DemuxLimits::default());
    d.feed(&live_head(&std_tracks()));
    assert!(matches!(d.finish(), Ok(Some(DemuxEvent::Tracks(_)))));
    assert_eq!(d.finish(), Ok(None));
    d.feed(b"more");
    assert_eq!(d.next_event(), Ok(None));
    assert_eq!(d.finish(), Ok(None));
}

#[test]
fn scanning_to_the_end_reports_the_dropped_tail() {
    let mut s = live_head(&std_tracks());
    s.extend(cluster_unknown(
        &[0xFF],
        0,
        &[simple_block(1, 0, 0x80, b"x")],
    ));
    s.extend([0x00; 1000]);
    let events = run_ok(&s);
    assert!(
        matches!(
            events.last(),
            Some(DemuxEvent::Resync { skipped: 1000, .. })
        ),
        "{:?}",
        events.last()
    );
}

// ---------------------------------------------------------------------------------------
// The repo's test files.

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn media_files() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(testdata())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("mkv" | "webm" | "mka")
        ) && !p.ends_with("unsupported_codec.mkv")
    });
    files.sort();
    files
}

/// One frame as both parsers can describe it.
#[derive(Debug, PartialEq)]
struct Seen {
    track: usize,
    pts: i64,
    keyframe: Option<bool>,
    data: Vec<u8>,
}

/// Frames by matroska-demuxer, with our lacing rule applied: the k-th frame of a lace
/// gets + k × DefaultDuration (matroska-demuxer gives every frame the block timestamp).
fn oracle(bytes: &[u8]) -> Result<Vec<Seen>, String> {
    use matroska_demuxer::{Frame as MdFrame, MatroskaFile, TrackType};
    let mut file = MatroskaFile::open(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let scale = file.info().timestamp_scale().get() as i64;
    // Our track order: audio and video tracks in TrackEntry order.
    let mut index = HashMap::new();
    let mut info = HashMap::new();
    for t in file.tracks() {
        if matches!(t.track_type(), TrackType::Video | TrackType::Audio) {
            let i = index.len();
            index.insert(t.track_number().get(), i);
            info.insert(
                i,
                (
                    t.track_type() == TrackType::Audio,
                    t.default_duration().map(|d| d.get() as i64),
                ),
            );
        }
    }
    let mut out: Vec<Seen> = Vec::new();
    let mut frame = MdFrame::default();
    let mut prev: Option<(u64, u64)> = None;
    let mut k = 0;
    while file.next_frame(&mut frame).map_err(|e| e.to_string())? {
        if prev == Some((frame.track, frame.timestamp)) {
            k += 1;
        } else {
            k = 0;
        }
        prev = Some((frame.track, frame.timestamp));
        let Some(&track) = index.get(&frame.track) else {
            continue;
        };
        let (audio, dd) = info[&track];
        out.push(Seen {
            track,
            pts: frame.timestamp as i64 * scale + k * dd.unwrap_or(0),
            keyframe: if audio { Some(true) } else { frame.is_keyframe },
            data: frame.data.clone(),
        });
    }
    Ok(out)
}

fn ours(bytes: &[u8], chunk: usize) -> (Vec<Track>, Vec<Frame>) {
    let (events, err) = run(bytes, chunk);
    assert_eq!(err, None);
    let mut tracks = Vec::new();
    let mut frames = Vec::new();
    for e in events {
        match e {
            DemuxEvent::Tracks(t) => tracks = t,
            DemuxEvent::Frame(f) => frames.push(f),
            DemuxEvent::Resync { skipped, reason } => {
                panic!("Resync in a good file: {skipped} bytes, {reason}")
            }
        }
    }
    (tracks, frames)
}

/// Files whose 8-byte unknown sizes matroska-demuxer reads as real sizes: compared with
/// `live_1byte.mkv` (the same stream rewritten) and with expected.txt instead.
const ORACLE_CANNOT_READ: [&str; 3] = ["live_ffmpeg.mkv", "live_gst.mkv", "live_mixed.mkv"];

#[test]
fn testdata_matches_matroska_demuxer() {
    let files = media_files();
    if files.is_empty() {
        eprintln!("no testdata: skipped");
        return;
    }
    let mut compared = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(path).unwrap();
        let (_, reference) = ours(&bytes, 65536);
        assert!(!reference.is_empty(), "{name}: no frames");
        for chunk in [1, 7] {
            let (_, other) = ours(&bytes, chunk);
            assert!(other == reference, "{name}: {chunk}-byte reads differ");
        }
        if ORACLE_CANNOT_READ.contains(&name.as_str()) {
            continue;
        }
        let expected = oracle(&bytes).unwrap_or_else(|e| panic!("{name}: oracle: {e}"));
        let got: Vec<Seen> = reference
            .iter()
            .map(|f| Seen {
                track: f.track,
                pts: f.pts,
                // matroska-demuxer knows keyframes only from SimpleBlock flags.
                keyframe: None,
                data: f.data.to_vec(),
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "{name}: frame count");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                (g.track, g.pts, g.data.len()),
                (e.track, e.pts, e.data.len()),
                "{name}: frame {i}"
            );
            assert!(g.data == e.data, "{name}: frame {i} payload");
            if let Some(k) = e.keyframe {
                assert_eq!(reference[i].keyframe, k, "{name}: frame {i} keyframe");
            }
        }
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} files compared");

    // The live rewrites carry the same frames as live_1byte.mkv.
    let read = |n: &str| std::fs::read(testdata().join(n)).ok();
    if let Some(base) = read("live_1byte.mkv") {
        let (_, base) = ours(&base, 65536);
        for n in ["live_ffmpeg.mkv", "live_mixed.mkv"] {
            if let Some(b) = read(n) {
                assert!(ours(&b, 4096).1 == base, "{n} differs from live_1byte.mkv");
            }
        }
    }
}

/// Per-stream facts from ffprobe in testdata/expected.txt: frame count, keyframe count,
/// payload bytes, and first/min/max pts.
#[test]
fn testdata_matches_ffprobe_counts() {
    let Ok(text) = std::fs::read_to_string(testdata().join("expected.txt")) else {
        eprintln!("no expected.txt: skipped");
        return;
    };
    // mkvmerge's files lace AAC; ffmpeg spreads lace timestamps its own way.
    let laced = [
        "laced_xiph.mka",
        "laced_ebml.mka",
        "laced_fixed.mka",
        "blockgroups.mkv",
        "tscale.mkv",
        "with_subtitles.mkv",
    ];
    let mut checked = 0;
    let mut cache: HashMap<String, (Vec<Track>, Vec<Frame>)> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("stream ")) {
        let mut parts = line.split_whitespace().skip(1);
        let file = parts.next().unwrap().to_string();
        let kv: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        if kv["type"] == "subtitle" || file == "unsupported_codec.mkv" {
            continue;
        }
        let Ok(bytes) = std::fs::read(testdata().join(&file)) else {
            continue;
        };
        let (tracks, frames) = cache
            .entry(file.clone())
            .or_insert_with(|| ours(&bytes, 65536));
        let index: usize = kv["index"].parse().unwrap();
        let mine: Vec<&Frame> = frames.iter().filter(|f| f.track == index).collect();
        let ctx = format!("{file} stream {index}");
        assert_eq!(
            mine.len(),
            kv["packets"].parse::<usize>().unwrap(),
            "{ctx}: packets"
        );
        assert_eq!(
            mine.iter().filter(|f| f.keyframe).count(),
            kv["keyframes"].parse::<usize>().unwrap(),
            "{ctx}: keyframes"
        );
        assert_eq!(
            mine.iter().map(|f| f.data.len()).sum::<usize>(),
            kv["bytes"].parse::<usize>().unwrap(),
            "{ctx}: bytes"
        );
        // Opus: ffprobe subtracts CodecDelay, we report raw block timestamps.
        if kv["codec"] != "opus" {
            let (num, den) = kv["tb"].split_once('/').unwrap();
            let (num, den): (i128, i128) = (num.parse().unwrap(), den.parse().unwrap());
            let ns = |key: &str| -> i64 {
                let v: i128 = kv[key].parse().unwrap();
                (v * num * 1_000_000_000 / den) as i64
            };
            assert_eq!(mine[0].pts, ns("first_pts"), "{ctx}: first pts");
            if !(laced.contains(&file.as_str()) && kv["type"] == "audio") {
                assert_eq!(
                    mine.iter().map(|f| f.pts).min(),
                    Some(ns("min_pts")),
                    "{ctx}: min"
                );
                assert_eq!(
                    mine.iter().map(|f| f.pts).max(),
                    Some(ns("max_pts")),
                    "{ctx}: max"
                );
            }
        }
        let t = &tracks[index];
        match kv["type"] {
            "video" => {
                let v = t.video.as_ref().unwrap();
                assert_eq!(v.width.to_string(), kv["width"], "{ctx}");
                assert_eq!(v.height.to_string(), kv["height"], "{ctx}");
            }
            _ => {
                let a = t.audio.as_ref().unwrap();
                assert_eq!((a.sample_rate as u64).to_string(), kv["rate"], "{ctx}");
                assert_eq!(a.channels.to_string(), kv["channels"], "{ctx}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} streams checked");
}

#[test]
fn testdata_unsupported_codec_is_refused() {
    let Ok(bytes) = std::fs::read(testdata().join("unsupported_codec.mkv")) else {
        return;
    };
    let err = run(&bytes, 4096).1.expect("an error");
    assert_eq!(
        err,
        DemuxError::UnsupportedCodec {
            track: 1,
            codec_id: "V_MPEG2".into()
        }
    );
}

#[test]
fn testdata_track_details() {
    let read = |n: &str| std::fs::read(testdata().join(n)).ok();
    if let Some(b) = read("vp9_opus.webm") {
        let (t, _) = ours(&b, 65536);
        assert_eq!(t[1].codec, Codec::Opus);
        assert_eq!(t[1].codec_delay_ns, Some(6_500_000));
        assert_eq!(t[1].seek_pre_roll_ns, Some(80_000_000));
        assert!(
            t[1].codec_private
                .as_deref()
                .is_some_and(|p| p.starts_with(b"OpusHead"))
        );
    }
    if let Some(b) = read("h264_aac.mkv") {
        let (t, _) = ours(&b, 65536);
        assert_eq!(t[0].codec, Codec::H264);
        assert_eq!(t[1].codec, Codec::Aac);
        assert_eq!(t[0].codec_private.as_deref().map(|p| p[0]), Some(1));
    }
    if let Some(b) = read("h264_mulaw.mkv") {
        assert_eq!(ours(&b, 65536).0[1].codec, Codec::Mulaw);
    }
    if let Some(b) = read("h264_alaw.mkv") {
        assert_eq!(ours(&b, 65536).0[1].codec, Codec::Alaw);
    }
    if let Some(b) = read("with_subtitles.mkv") {
        assert_eq!(ours(&b, 65536).0.len(), 2);
    }
}

// ---------------------------------------------------------------------------------------
// Mutations.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs the demuxer to the end on untrusted bytes: it must not panic, must stay within one
/// element plus one read (checked in `run_with`), and must make progress (events are
/// bounded by the input size).
fn survive(data: &[u8], chunk: usize, limits: DemuxLimits) {
    let (events, _) = run_with(data, chunk, limits);
    assert!(events.len() <= data.len() + 1);
}

#[test]
fn random_and_mutated_input_never_panics() {
    let limits = DemuxLimits {
        max_element_size: 256 << 10,
        max_header_size: 64 << 10,
        max_tracks: 8,
        max_skip_size: 1 << 20,
    };
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);

    // Pure random bytes, with and without a valid head in front.
    let head = live_head(&std_tracks());
    for i in 0..500 {
        let n = rng.below(4096);
        let mut data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 {
            data.splice(0..0, head.iter().copied());
        }
        survive(&data, 1 + rng.below(300), limits.clone());
    }

    // Mutated real files (or a hand-built stream when there is no testdata).
    let mut seeds: Vec<Vec<u8>> = media_files()
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter(|b| b.len() <= 100_000)
        .collect();
    let mut built = head.clone();
    built.extend(cluster_unknown(
        &[0xFF],
        0,
        &[
            simple_block(1, 0, 0x80, &[1; 100]),
            simple_block(
                2,
                0,
                0x82,
                &[
                    2, 10, 20, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                ],
            ),
            simple_block(2, 5, 0x86, &[1, 0x81, 1, 2]),
        ],
    ));
    seeds.push(built);
    // MKV_MUTATIONS=1000000 for a longer run.
    let rounds = std::env::var("MKV_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    for i in 0..rounds {
        let seed = &seeds[i % seeds.len()];
        let mut data = seed.clone();
        match rng.below(4) {
            // Flip bytes.
            0 | 1 => {
                for _ in 0..1 + rng.below(16) {
                    let at = rng.below(data.len());
                    data[at] = rng.next() as u8;
                }
            }
            // Cut a piece out.
            2 => {
                let at = rng.below(data.len());
                let len = rng.below(2000).min(data.len() - at);
                data.drain(at..at + len);
            }
            // Insert random bytes.
            _ => {
                let at = rng.below(data.len());
                let junk: Vec<u8> = (0..rng.below(500)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, junk);
            }
        }
        survive(&data, [1, 7, 4096, 65536][rng.below(4)], limits.clone());
    }
}

// ---------------------------------------------------------------------------------------
// Throughput: a figure to read, not a verdict.
// `cargo test --release --lib mkv::tests::throughput -- --ignored --nocapture`

#[test]
#[ignore]
fn throughput() {
    fn measure(label: &str, data: &[u8], chunk: usize) {
        let start = std::time::Instant::now();
        let rounds = (200_000_000 / data.len()).max(1);
        let mut frames = 0usize;
        for _ in 0..rounds {
            let mut d = MkvDemuxer::new(DemuxLimits::default());
            for piece in data.chunks(chunk) {
                d.feed(piece);
                while let Some(e) = d.next_event().expect("good input") {
                    if let DemuxEvent::Frame(f) = e {
                        frames += 1;
                        std::hint::black_box(&f.data);
                    }
                }
            }
            while d.finish().expect("good input").is_some() {}
        }
        let secs = start.elapsed().as_secs_f64();
        let mb = (data.len() * rounds) as f64 / 1e6;
        println!(
            "{label}, {} KiB reads: {:.0} MB/s, {:.2} M frames/s",
            chunk / 1024,
            mb / secs,
            frames as f64 / secs / 1e6
        );
    }

    // Big frames: 1 MiB video blocks.
    let mut big = live_head(&std_tracks());
    for c in 0..10u64 {
        let blocks: Vec<_> = (0..10)
            .map(|i| simple_block(1, i * 40, 0x80, &vec![0x5A; 1 << 20]))
            .collect();
        big.extend(cluster_unknown(&[0xFF], c * 400, &blocks));
    }
    for chunk in [4096, 65536] {
        measure("1 MiB frames", &big, chunk);
    }

    // The testdata, each file demuxed in turn (small frames: ~1 KB video, ~100 B audio).
    let files: Vec<Vec<u8>> = media_files()
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    let all: Vec<u8> = files.concat();
    if !all.is_empty() {
        for chunk in [4096, 65536] {
            measure("testdata concatenated", &all, chunk);
        }
    }
}

#[test]
fn an_absurd_size_at_segment_level_is_corruption_not_a_skip() {
    // A Void claiming 2^50 bytes after the Tracks: skipping it would swallow the rest of
    // a live input; the demuxer resynchronises at the next Cluster instead.
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/live_ffmpeg.mkv"
    ))
    .unwrap();
    let first_cluster = file
        .windows(4)
        .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .unwrap();
    let mut s = file[..first_cluster].to_vec();
    s.extend_from_slice(&[0xEC, 0x01, 0x04, 0, 0, 0, 0, 0, 0]);
    s.extend_from_slice(&file[first_cluster..]);
    let (whole, err) = run_with(&file, 65536, DemuxLimits::default());
    let (events, err2) = run_with(&s, 65536, DemuxLimits::default());
    assert_eq!((err, err2), (None, None));
    let frames = |ev: &[DemuxEvent]| {
        ev.iter()
            .filter(|e| matches!(e, DemuxEvent::Frame(_)))
            .count()
    };
    assert_eq!(frames(&events), frames(&whole));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DemuxEvent::Resync { reason, .. } if reason.contains("claims"))),
        "{events:?}"
    );
}
