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

/// The types of the top-level boxes in a run of ISO BMFF boxes.
fn box_types(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let size = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(size >= 8 && size <= bytes.len(), "box size {size}");
        out.push(String::from_utf8_lossy(&bytes[4..8]).to_string());
        bytes = &bytes[size..];
    }
    out
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
        // The 12 s prefill is published within moments: wait for its segments.
        let start = std::time::Instant::now();
        let playlist = loop {
            let (_, p) = get_ok(server.addr, &format!("/live/{rendition}/index.m3u8"));
            let p = String::from_utf8(p).unwrap();
            if p.lines().filter(|l| l.starts_with("seg")).count() >= 4 {
                break p;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{p}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(playlist.starts_with("#EXTM3U\n"));
        assert!(playlist.contains("#EXT-X-TARGETDURATION:2\n"));
        // Init and segment names are unique across runs (named by msns that start at
        // the stream's start time), so caches may keep them for good.
        let map = playlist
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
            .and_then(|u| u.strip_suffix('"'))
            .expect("EXT-X-MAP");
        let first_seg = playlist.lines().find(|l| l.ends_with(".m4s")).unwrap();
        assert_eq!(
            map.trim_start_matches("init").trim_end_matches(".mp4"),
            first_seg.trim_start_matches("seg").trim_end_matches(".m4s"),
            "the first init is named by the first msn"
        );
        let msn: u64 = first_seg[3..first_seg.len() - 4].parse().unwrap();
        let now_ds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            / 100;
        assert!(
            (now_ds - 200..=now_ds).contains(&msn),
            "msn {msn} from the start time"
        );
        let segments: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".m4s")).collect();
        assert!(segments.len() >= 4, "{playlist}");
        let durations: Vec<f64> = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|d| d.trim_end_matches(',').parse().unwrap())
            .collect();
        let (head, init) = get_ok(server.addr, &format!("/live/{rendition}/{map}"));
        assert!(
            head.contains("Cache-Control: public, max-age=31536000, immutable"),
            "{head}"
        );
        assert_eq!(&init[4..8], b"ftyp");
        // The source's frames of this track, twice (the file loops), as one byte string.
        let one: Vec<u8> = src
            .iter()
            .filter(|f| f.track == track)
            .flat_map(|f| f.data.clone())
            .collect();
        let cyclic = [one.clone(), one].concat();
        for (i, (seg, duration)) in segments.iter().zip(&durations).enumerate() {
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
                // 50 frames of 40 ms; at the file's loop seam one frame is 26 ms longer
                // (the file's audio outlasts its video, see the live MKV tests).
                assert!(
                    (2.0..2.03).contains(duration),
                    "{rendition}/{seg}: {duration} s"
                );
            } else if i == 0 {
                // The first segment lacks the audio that came before the first keyframe
                // (ffmpeg interleaves audio ~60 ms ahead): 1.94 s here.
                assert!(
                    (1.9..2.03).contains(duration),
                    "{rendition}/{seg}: {duration} s"
                );
            } else {
                // Audio follows the video's cuts to within one AAC frame (21 ms), and
                // within two at the loop seam.
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

fn playlist(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    (status, String::from_utf8_lossy(&body).to_string())
}

/// The preload hint's (msn, part).
fn hint(p: &str) -> (u64, usize) {
    let uri = p
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part"))
        .expect("a preload hint");
    let (msn, rest) = uri.split_once('.').unwrap();
    let part = rest.split_once('.').unwrap().0;
    (msn.parse().unwrap(), part.parse().unwrap())
}

#[test]
fn low_latency_hls_blocks_on_the_next_part_and_the_preload_hint() {
    let server = start(
        Setup::default(),
        vec![("live", file_input("h264_aac.mkv", true))],
    );
    wait_for_stream(server.addr, "live", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    let start = std::time::Instant::now();
    let p = loop {
        let (status, p) = playlist(server.addr, "/live/v0/index.m3u8");
        if status == 200 && p.contains("#EXT-X-PART:") {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {p}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(p.contains("#EXT-X-VERSION:9\n"));
    assert!(p.contains(
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=12.0\n"
    ));
    assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.20000\n"));
    assert!(p.contains("#EXT-X-RENDITION-REPORT:URI=\"../a1/index.m3u8\",LAST-MSN="));
    let (msn, part) = hint(&p);
    // The hinted part is held until it exists, never a 404.
    let (status, head, body) = request(
        server.addr,
        format!("GET /live/v0/part{msn}.{part}.m4s HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
    // A part is one CMAF chunk: its producer reference time, then moof + mdat (the
    // first part of a segment opens with a styp).
    let boxes = box_types(&body);
    let chunk = if part == 0 { &boxes[1..] } else { &boxes[..] };
    assert_eq!(chunk, ["prft", "moof", "mdat"], "{boxes:?}");
    // Blocking reload for the part after it returns a playlist that lists it.
    let (status, p2) = playlist(
        server.addr,
        &format!("/live/v0/index.m3u8?_HLS_msn={msn}&_HLS_part={}", part + 1),
    );
    assert_eq!(status, 200);
    let listed = format!("part{msn}.{}.m4s", part + 1);
    let next_seg = format!("part{}.0.m4s", msn + 1);
    assert!(p2.contains(&listed) || p2.contains(&next_seg), "{p2}");
    // Bad directives are refused at once.
    assert_eq!(
        playlist(server.addr, "/live/v0/index.m3u8?_HLS_part=1").0,
        400
    );
    assert_eq!(
        playlist(
            server.addr,
            &format!("/live/v0/index.m3u8?_HLS_msn={}", msn + 3)
        )
        .0,
        400
    );
    assert_eq!(
        playlist(server.addr, "/live/v0/index.m3u8?_HLS_msn=x").0,
        400
    );
    // A part far behind the window, or far ahead, is not held.
    let (status, _, _) = request(
        server.addr,
        format!(
            "GET /live/v0/part{}.0.m4s HTTP/1.1\r\nHost: t\r\n\r\n",
            msn + 5
        )
        .as_bytes(),
    );
    assert_eq!(status, 404);
}

#[test]
fn a_blocked_reload_that_cannot_be_answered_gets_503_after_three_target_durations() {
    let server = start(
        Setup::default(),
        vec![("cam", muxcast::ingest::source::Input::Push)],
    );
    // One push of a 2 s file twice over (a complete first segment fixes the target
    // duration), then silence: nothing more will be published.
    let once = std::fs::read(testdata("h265_aac.mkv")).unwrap();
    let source = [once.clone(), once].concat();
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    use std::io::Write;
    write!(
        s,
        "PUT /cam/ingest HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        source.len()
    )
    .unwrap();
    s.write_all(&source).unwrap();
    assert_eq!(read_head(&mut s).0, 204);
    let start = std::time::Instant::now();
    let p = loop {
        let (status, p) = playlist(server.addr, "/cam/v0/index.m3u8");
        if status == 200 {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    };
    let (msn, _) = hint(&p);
    let (status, body) = playlist(
        server.addr,
        &format!("/cam/v0/index.m3u8?_HLS_msn={}", msn + 1),
    );
    assert_eq!(status, 503, "{body}");
}

#[test]
fn delta_updates_skip_the_old_segments() {
    let setup = Setup {
        prefill_s: 20.0,
        ..Setup::default()
    };
    let server = start(setup, vec![("live", file_input("h264_aac.mkv", true))]);
    let start = std::time::Instant::now();
    loop {
        let (status, p) = playlist(server.addr, "/live/v0/index.m3u8?_HLS_skip=YES");
        if status == 200 && p.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            let (_, full) = playlist(server.addr, "/live/v0/index.m3u8");
            assert!(p.len() < full.len());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {p}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dash_manifest_timeline_and_a_segment_streamed_while_it_is_written() {
    let setup = Setup {
        prefill_s: 6.0,
        ..Setup::default()
    };
    let server = start(setup, vec![("live", file_input("h264_aac.mkv", true))]);
    let video_times = |mpd: &str| -> Vec<u64> {
        let video = &mpd[..mpd.find("contentType=\"audio\"").unwrap_or(mpd.len())];
        let mut times = Vec::new();
        for s in video.lines().filter(|l| l.contains("<S t=")) {
            let attr = |name: &str| -> u64 {
                s.split(&format!(" {name}=\""))
                    .nth(1)
                    .map_or(0, |v| v.split('"').next().unwrap().parse().unwrap())
            };
            for k in 0..=attr("r") {
                times.push(attr("t") + k * attr("d"));
            }
        }
        times
    };
    let start = std::time::Instant::now();
    let mpd = loop {
        let (status, head, body) = request(
            server.addr,
            b"GET /live/manifest.mpd HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let text = String::from_utf8_lossy(&body).to_string();
        // (The 6 s prefill is published within moments: wait for its segments.)
        if status == 200 && video_times(&text).len() >= 3 {
            assert!(head.contains("Content-Type: application/dash+xml"));
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(mpd.contains(r#"type="dynamic""#));
    assert!(mpd.contains(r#"availabilityTimeComplete="false""#));
    // The clock is ours, named absolutely from the request's Host.
    assert!(mpd.contains(r#"value="http://t/time""#), "{mpd}");
    // Every complete segment listed is served at its $Time$; the timeline ends with the
    // segment being written and the one after it (two ahead when the last is complete).
    let times = video_times(&mpd);
    assert!(times.len() >= 3, "{mpd}");
    let (_, src) = oracle_file("h264_aac.mkv");
    let one: Vec<u8> = src
        .iter()
        .filter(|f| f.track == 0)
        .flat_map(|f| f.data.clone())
        .collect();
    let cyclic = [one.clone(), one].concat();
    for t in &times[..times.len() - 2] {
        let (_, body) = get_ok(server.addr, &format!("/live/v0/t{t}.m4s"));
        let payload = mdat_payloads(&body);
        let at = position(&cyclic, &payload[..64]).expect("a run of source frames");
        assert_eq!(&cyclic[at..at + payload.len()], &payload[..]);
    }
    // The last listed segment has not begun: the request is held until it does, then
    // the segment comes with chunked transfer, part by part, and ends when the segment
    // does. (Should it have completed before the request, it comes whole: take a fresh
    // MPD and try again.)
    let mut chunked = false;
    for _ in 0..5 {
        let (_, _, mpd) = request(
            server.addr,
            b"GET /live/manifest.mpd HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let mpd = String::from_utf8_lossy(&mpd).to_string();
        let next = *video_times(&mpd).last().unwrap();
        let mut c = send(
            server.addr,
            format!("GET /live/v0/t{next}.m4s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let (status, head, first) = read_head(&mut c);
        assert_eq!(status, 200, "{head}");
        let raw = read_body(&mut c, first, |_| false);
        let body = if head.contains("Transfer-Encoding: chunked") {
            chunked = true;
            // De-chunk with the crate's own reader.
            let mut body = Vec::new();
            use std::io::Read;
            muxcast::ingest::body::BodyReader::new(
                &raw[..],
                Vec::new(),
                muxcast::ingest::body::BodyFraming::Chunked,
                false,
            )
            .read_to_end(&mut body)
            .unwrap();
            body
        } else {
            raw
        };
        let payload = mdat_payloads(&body);
        assert!(payload.len() > 1000);
        let at = position(&cyclic, &payload[..64]).expect("a run of source frames");
        assert_eq!(&cyclic[at..at + payload.len()], &payload[..]);
        if chunked {
            break;
        }
    }
    assert!(chunked, "the segment in progress was never served chunked");
    // Far past anything listed, or before the window: 404 at once.
    let (_, _, mpd) = request(
        server.addr,
        b"GET /live/manifest.mpd HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let times = video_times(&String::from_utf8_lossy(&mpd));
    let last = *times.last().unwrap();
    for t in [last + 90_000 * 60, times[0] - 90_000 * 10] {
        let asked = std::time::Instant::now();
        let (status, _, _) = request(
            server.addr,
            format!("GET /live/v0/t{t}.m4s HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 404, "t={t}");
        assert!(asked.elapsed() < Duration::from_secs(1));
    }
    let (status, _, now) = request(server.addr, b"GET /time HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&now).ends_with('Z'));
}

#[test]
fn plain_hls_has_no_low_latency_tags_and_never_blocks() {
    let server = start_with(
        Setup::default(),
        |o| o.hls.low_latency = false,
        vec![("live", file_input("h264_aac.mkv", true))],
    );
    wait_for_stream(server.addr, "live", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    let start = std::time::Instant::now();
    loop {
        let (status, p) = playlist(server.addr, "/live/v0/index.m3u8?_HLS_msn=99999");
        if status == 200 && p.contains("#EXTINF") {
            for tag in [
                "#EXT-X-PART",
                "PRELOAD-HINT",
                "SERVER-CONTROL",
                "RENDITION-REPORT",
            ] {
                assert!(!p.contains(tag), "{tag} in {p}");
            }
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {p}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, _) = request(
        server.addr,
        b"GET /live/v0/part999.0.m4s HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(status, 404);
}

/// The source's tracks and its frames, each as the Matroska bytes our live writer makes
/// of it: a pusher that sends them one by one decides when each frame reaches the server.
fn frames_as_chunks(name: &str) -> (bytes::Bytes, Vec<bytes::Bytes>) {
    use muxcast::mux::mkv::{ClusterWriter, DocType, header};
    let (tracks, frames) = demux_testdata(name);
    let mut writer = ClusterWriter::new(&tracks, 2000);
    let chunks = frames
        .iter()
        .filter_map(|f| {
            writer
                .write(f.track, f.pts.div_euclid(1_000_000), f.keyframe, &f.data)
                .map(|w| w.bytes)
        })
        .collect();
    (header(&tracks, DocType::Matroska), chunks)
}

#[test]
fn a_blocking_request_returns_right_after_its_part_is_published() {
    use std::time::Instant;
    let server = start(
        Setup::default(),
        vec![("cam", muxcast::ingest::source::Input::Push)],
    );
    let (head, chunks) = frames_as_chunks("h264_aac.mkv");
    let mut pusher = BodyOut::push_chunked(server.addr, "cam");
    let mut send = |bytes: &[u8]| pusher.send(bytes).unwrap();
    send(&head);
    // 5 s at once: complete segments, a known target duration.
    let mut next = 0;
    let per_second = chunks.len() / 10;
    while next < per_second * 5 {
        send(&chunks[next]);
        next += 1;
    }
    let start = Instant::now();
    let p = loop {
        let (status, p) = playlist(server.addr, "/cam/v0/index.m3u8");
        if status == 200 && p.contains("#EXT-X-PRELOAD-HINT") {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {p}");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(p);
    // Each trial: a blocking reload for the hinted part, then frames one by one, 120 ms
    // apart. The publication is the send that completes the part; the reload must
    // return within 50 ms of it (a slower answer would land after the next send, or
    // well into the gap, and be measured as such).
    const GAP: Duration = Duration::from_millis(120);
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (_, p) = playlist(server.addr, "/cam/v0/index.m3u8");
        let (msn, part) = hint(&p);
        let addr = server.addr;
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let path = format!("/cam/v0/index.m3u8?_HLS_msn={msn}&_HLS_part={part}");
            let (status, body) = playlist(addr, &path);
            let _ = tx.send(Instant::now());
            (status, body)
        });
        // Let the request reach the server and be held.
        std::thread::sleep(GAP);
        let mut sent: Vec<Instant> = Vec::new();
        let answered = loop {
            if let Ok(at) = rx.try_recv() {
                break at;
            }
            assert!(next < chunks.len(), "ran out of frames");
            send(&chunks[next]);
            sent.push(Instant::now());
            next += 1;
            if let Ok(at) = rx.recv_timeout(GAP) {
                break at;
            }
        };
        let (status, body) = waiter.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("part{msn}.{part}.m4s")), "{body}");
        let published = sent
            .iter()
            .rev()
            .find(|&&s| s <= answered)
            .expect("answered after a frame was sent");
        latencies.push(answered.duration_since(*published));
    }
    latencies.sort();
    let ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    println!("blocking reload answered after the publishing frame: {ms:.1?} ms");
    assert!(
        latencies[latencies.len() / 2] <= Duration::from_millis(50),
        "median {:.1} ms",
        ms[ms.len() / 2]
    );
}

#[test]
fn a_blocking_reload_is_answered_with_the_playlist_of_the_moment_its_part_appears() {
    // hls.js without low-latency mode asks for the last part of the segment in progress
    // and gives up after 0.8 target durations; a playlist that answered the end of
    // segment N and already showed N+1 begun sends it into such a wait. When N's last
    // part and N+1's first arrive together, the reload is answered between the two.
    use std::io::Write;
    let server = start(
        Setup::default(),
        vec![("cam", muxcast::ingest::source::Input::Push)],
    );
    let (head, chunks) = frames_as_chunks("h264_aac.mkv");
    let mut pusher = BodyOut::push_chunked(server.addr, "cam");
    pusher.send(&head).unwrap();
    // 3 s at once (one complete segment: the target duration is known), then frame by
    // frame until segment N's last part is the one hinted.
    let per_second = chunks.len() / 10;
    let mut next = 0;
    while next < per_second * 3 {
        pusher.send(&chunks[next]).unwrap();
        next += 1;
    }
    let start = std::time::Instant::now();
    let (msn, part) = loop {
        // Every frame written so far published first: on a loaded machine the reader
        // thread lags, and a part hinted now could complete from frames already sent.
        loop {
            let doc = wait_for_stream(server.addr, "cam", Duration::from_secs(10), |_| true);
            if doc["frames"].as_u64() == Some(next as u64) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{doc}");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (status, p) = playlist(server.addr, "/cam/v0/index.m3u8");
        if status == 200 && p.contains("#EXT-X-PRELOAD-HINT") {
            let (msn, part) = hint(&p);
            if part == 9 {
                break (msn, part);
            }
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {p}");
        pusher.send(&chunks[next]).unwrap();
        next += 1;
        std::thread::sleep(Duration::from_millis(10));
    };
    let addr = server.addr;
    let waiter = std::thread::spawn(move || {
        playlist(
            addr,
            &format!("/cam/v0/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
        )
    });
    // Until the server holds it (on a loaded machine the request can take longer than
    // any fixed sleep to arrive, and would then find N+1 begun).
    let held = std::time::Instant::now();
    loop {
        let (_, metrics) = playlist(server.addr, "/metrics");
        if metrics.contains("muxcast_stream_held_requests{stream=\"cam\"} 1") {
            break;
        }
        assert!(
            held.elapsed() < Duration::from_secs(10),
            "never held: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The rest of segment N and half a second of N+1 in one write.
    let burst: Vec<u8> = chunks[next..next + per_second * 3 / 2]
        .iter()
        .flat_map(|c| http_chunk(c))
        .collect();
    pusher.s.write_all(&burst).unwrap();
    let (status, p) = waiter.join().unwrap();
    assert_eq!(status, 200, "{p}");
    assert!(p.contains(&format!("part{msn}.{part}.m4s")), "{p}");
    assert!(
        p.contains(&format!("seg{msn}.m4s")),
        "segment {msn} complete: {p}"
    );
    assert!(!p.contains(&format!("part{}.0.m4s\",", msn + 1)), "{p}");
    assert_eq!(hint(&p), (msn + 1, 0), "{p}");
    // The parts that came with it are there for the next reload.
    let start = std::time::Instant::now();
    loop {
        let (_, now) = playlist(server.addr, "/cam/v0/index.m3u8");
        if now.contains(&format!("part{}.1.m4s", msn + 1)) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{now}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
