//! HLS end to end: a real server on 127.0.0.1:0; playlists fetched and parsed, segments
//! fetched and their media payloads compared with the source frames (read by
//! matroska-demuxer, an independent parser).

mod common;

use std::time::Duration;

use common::*;

fn get_ok(addr: std::net::SocketAddr, path: &str) -> (String, Vec<u8>) {
    let (status, head, body) = request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    (head, body)
}

/// The payloads of every `mdat` in a run of ISO BMFF boxes.
fn mdat_payloads(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let size = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(size >= 8 && size <= bytes.len(), "box size {size}");
        if &bytes[4..8] == b"mdat" {
            out.extend_from_slice(&bytes[8..size]);
        }
        bytes = &bytes[size..];
    }
    assert!(bytes.is_empty(), "trailing bytes after the last box");
    out
}

fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn hls_playlists_and_segments_carry_the_source_frames() {
    let setup = Setup {
        prefill_s: 12.0,
        ..Setup::default()
    };
    let server = start(setup, vec![("live", file_input("h264_aac.mkv", true))]);
    // 12 s published at once: five complete 2 s segments.
    let s = wait_for_stream(server.addr, "live", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    assert_eq!(s["state"], "live");
    let start = std::time::Instant::now();
    let (head, master) = loop {
        let (status, head, body) = request(
            server.addr,
            b"GET /live/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let text = String::from_utf8_lossy(&body).to_string();
        if status == 200 && text.contains("BANDWIDTH=") && !text.contains("BANDWIDTH=1,") {
            break (head, text);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no multivariant playlist: {status} {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        head.contains("Content-Type: application/vnd.apple.mpegurl"),
        "{head}"
    );
    assert!(
        master.contains("CODECS=\"avc1.64000d,mp4a.40.2\""),
        "{master}"
    );
    assert!(master.contains("RESOLUTION=320x240"), "{master}");
    assert!(
        master.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\""),
        "{master}"
    );

    let (_, src) = oracle_file("h264_aac.mkv");
    for (rendition, track) in [("v0", 0usize), ("a1", 1)] {
        let (_, playlist) = get_ok(server.addr, &format!("/live/{rendition}/index.m3u8"));
        let playlist = String::from_utf8(playlist).unwrap();
        assert!(playlist.starts_with("#EXTM3U\n"));
        assert!(playlist.contains("#EXT-X-TARGETDURATION:2\n"));
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init0.mp4\"\n"));
        let segments: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".m4s")).collect();
        assert!(segments.len() >= 4, "{playlist}");
        let durations: Vec<f64> = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|d| d.trim_end_matches(',').parse().unwrap())
            .collect();
        let (_, init) = get_ok(server.addr, &format!("/live/{rendition}/init0.mp4"));
        assert_eq!(&init[4..8], b"ftyp");
        // The source's frames of this track, twice (the file loops), as one byte string.
        let one: Vec<u8> = src
            .iter()
            .filter(|f| f.track == track)
            .flat_map(|f| f.data.clone())
            .collect();
        let cyclic = [one.clone(), one].concat();
        for (seg, duration) in segments.iter().zip(&durations) {
            let (head, body) = get_ok(server.addr, &format!("/live/{rendition}/{seg}"));
            assert!(head.contains("Content-Type: video/mp4"));
            let payload = mdat_payloads(&body);
            // Each segment's samples are a contiguous run of the source's frames.
            let at = position(&cyclic, &payload[..64.min(payload.len())])
                .expect("segment starts at a source frame");
            assert_eq!(
                &cyclic[at..at + payload.len()],
                &payload[..],
                "{rendition}/{seg}"
            );
            if track == 0 {
                assert!(
                    (duration - 2.0).abs() < 1e-6,
                    "{rendition}/{seg}: {duration} s"
                );
            } else {
                // Audio follows the video's cuts to within one or two AAC frames (21 ms):
                // the first segment lacks the audio before the first keyframe.
                assert!(
                    (duration - 2.0).abs() < 0.05,
                    "{rendition}/{seg}: {duration} s"
                );
            }
        }
    }
    let (status, _, _) = request(
        server.addr,
        b"GET /live/v0/seg999999.m4s HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(status, 404);
    let (status, head, _) = request(server.addr, b"GET /live/hls HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 302);
    assert!(head.contains("Location: /live/index.m3u8"));
}
