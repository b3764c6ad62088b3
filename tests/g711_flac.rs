//! G.711 camera audio in HLS/DASH: a real server on 127.0.0.1:0 serving a G.711 µ-law
//! file; the audio rendition is FLAC (`fLaC` + `dfLa`), its segments decode (claxon, an
//! independent decoder) to exactly the PCM of the source's G.711 frames (read by
//! matroska-demuxer), one FLAC frame per G.711 frame. Live MKV still carries the G.711.

mod common;

use std::time::{Duration, Instant};

use common::*;
use muxcast::media::g711;

/// Every block claxon decodes from "fLaC" + `streaminfo` + `frames`, as 16-bit samples.
fn decode_flac(streaminfo: &[u8], frames: &[u8]) -> Vec<Vec<i16>> {
    let mut file = b"fLaC".to_vec();
    file.extend_from_slice(&[0x80, 0, 0, 34]);
    file.extend_from_slice(streaminfo);
    file.extend_from_slice(frames);
    let mut reader = claxon::FlacReader::new(std::io::Cursor::new(file)).expect("STREAMINFO");
    let si = reader.streaminfo();
    assert_eq!(
        (si.sample_rate, si.channels, si.bits_per_sample),
        (8000, 1, 16)
    );
    let mut blocks = Vec::new();
    let mut reader = reader.blocks();
    let mut buffer = Vec::new();
    while let Some(block) = reader.read_next_or_eof(buffer).expect("a valid FLAC frame") {
        blocks.push(
            block
                .channel(0)
                .iter()
                .map(|&v| i16::try_from(v).unwrap())
                .collect(),
        );
        buffer = block.into_buffer();
    }
    blocks
}

#[test]
fn g711_is_served_to_hls_and_dash_as_flac() {
    let setup = Setup {
        prefill_s: 8.0,
        ..Setup::default()
    };
    let server = start(setup, vec![("cam", file_input("h264_mulaw.mkv", true))]);
    let addr = server.addr;
    wait_for_stream(addr, "cam", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    // The source's G.711 frames, decoded with the table (checked against G.711 itself in
    // the unit tests).
    let (_, src) = oracle_file("h264_mulaw.mkv");
    let src_pcm: Vec<Vec<i16>> = src
        .iter()
        .filter(|f| f.track == 1)
        .map(|f| {
            let mut pcm = Vec::new();
            g711::decode(&g711::MULAW, &f.data, &mut pcm);
            pcm
        })
        .collect();
    assert!(src_pcm.len() > 10);

    // The multivariant playlist names the audio rendition's codec.
    let deadline = Instant::now() + Duration::from_secs(10);
    let master = loop {
        let text = String::from_utf8(get_ok(addr, "/cam/index.m3u8")).unwrap();
        if text.contains("BANDWIDTH=") && !text.contains("BANDWIDTH=1,") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no multivariant playlist: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let m3u8_rs::Playlist::MasterPlaylist(m) =
        m3u8_rs::parse_playlist_res(master.as_bytes()).unwrap_or_else(|e| panic!("{e}: {master}"))
    else {
        panic!("a multivariant playlist: {master}")
    };
    let codecs = m.variants[0].codecs.clone().unwrap_or_default();
    assert!(codecs.ends_with(",flac"), "{master}");
    let audio = m
        .alternatives
        .iter()
        .find(|a| a.media_type == m3u8_rs::AlternativeMediaType::Audio)
        .unwrap_or_else(|| panic!("an audio rendition: {master}"));
    let uri = audio.uri.clone().unwrap();
    let dir = uri.trim_end_matches("index.m3u8");
    assert_eq!(dir, "a1/");

    // Its media playlist, init segment and segments.
    let media = loop {
        let body = get_ok(addr, &format!("/cam/{uri}"));
        let m3u8_rs::Playlist::MediaPlaylist(media) = m3u8_rs::parse_playlist_res(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
        else {
            panic!("a media playlist")
        };
        if media.segments.len() >= 3 {
            break media;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let map = media.segments[0].map.as_ref().expect("EXT-X-MAP");
    let init = get_ok(addr, &format!("/cam/{dir}{}", map.uri));
    assert!(position(&init, b"fLaC").is_some(), "a fLaC sample entry");
    let dfla = position(&init, b"dfLa").expect("a dfLa box");
    // dfLa: size, type, version/flags, then STREAMINFO as the last metadata block.
    assert_eq!(&init[dfla - 4..dfla], &50u32.to_be_bytes());
    assert_eq!(&init[dfla + 4..dfla + 12], &[0, 0, 0, 0, 0x80, 0, 0, 34]);
    let streaminfo = &init[dfla + 12..dfla + 12 + 34];
    let mdhd = position(&init, b"mdhd").unwrap();
    // mdhd: version/flags, creation and modification times (32 or 64 bits), timescale.
    let at = mdhd + 4 + if init[mdhd + 4] == 1 { 20 } else { 12 };
    assert_eq!(&init[at..at + 4], &8000u32.to_be_bytes());

    let mut frames = Vec::new();
    for seg in &media.segments {
        frames.extend(mdat_payloads(&get_ok(
            addr,
            &format!("/cam/{dir}{}", seg.uri),
        )));
    }
    let blocks = decode_flac(streaminfo, &frames);
    assert!(blocks.len() >= 10, "{} FLAC frames", blocks.len());
    // FLAC frames of 20 ms at most (LL-HLS parts stay near PART-TARGET) whose samples,
    // in order, are the file's decoded G.711 over and over (it loops).
    assert!(blocks.iter().all(|b| b.len() <= 160), "20 ms at most");
    let one: Vec<i16> = src_pcm.iter().flatten().copied().collect();
    let cyclic: Vec<i16> = one.iter().chain(&one).chain(&one).copied().collect();
    let got: Vec<i16> = blocks.iter().flatten().copied().collect();
    let first = cyclic
        .windows(blocks[0].len())
        .position(|w| w == &blocks[0][..])
        .expect("the first FLAC frame's samples are in the source");
    assert!(got.len() <= cyclic.len() - first, "more than two loops");
    assert!(
        got == cyclic[first..first + got.len()],
        "the FLAC samples are not a contiguous run of the source's"
    );

    // DASH: the same rendition, codecs="flac" at 8 kHz.
    let mpd = String::from_utf8(get_ok(addr, "/cam/manifest.mpd")).unwrap();
    assert!(mpd.contains("codecs=\"flac\""), "{mpd}");
    assert!(mpd.contains("audioSamplingRate=\"8000\""), "{mpd}");

    // Live MKV keeps the G.711.
    let mut s = get(addr, "/cam/live.mkv");
    let (status, _, first_bytes) = read_head(&mut s);
    assert_eq!(status, 200);
    let body = read_body(&mut s, first_bytes, |b| position(b, b"A_MS/ACM").is_some());
    assert!(position(&body, b"A_MS/ACM").is_some());
    drop(s);
    server.stop().unwrap();
}
