//! Live MKV end to end: a real server on 127.0.0.1:0, real sockets, and every received
//! frame checked against the source by an independent parser (matroska-demuxer).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use muxcast::ingest::source::Input;

/// Pushes `bytes` to /NAME/ingest with chunked transfer in uneven pieces; returns the
/// status the server answered with once the body ended.
fn push(addr: std::net::SocketAddr, name: &str, bytes: &[u8]) -> u16 {
    let mut pusher = BodyOut::push_chunked(addr, name);
    pusher
        .s
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = bytes;
    let mut size = 1000;
    while !rest.is_empty() {
        let n = size.min(rest.len());
        pusher.send(&rest[..n]).unwrap();
        rest = &rest[n..];
        size = size * 7 % 65_521 + 1;
    }
    pusher.finish().unwrap();
    read_head(&mut pusher.s).0
}

/// `bytes` followed by a stream with other tracks: the new header ends every viewer of
/// the old one cleanly, so a viewer can read to the end of its response instead of
/// guessing when the last frame has arrived.
fn then_new_tracks(bytes: &[u8]) -> Vec<u8> {
    let mut all = bytes.to_vec();
    all.extend_from_slice(&std::fs::read(testdata("opus_only.webm")).unwrap());
    all
}

/// Frames in file order from the first keyframe of track 0 (what a viewer that was there
/// from the start must get).
fn from_first_keyframe(frames: &[OFrame]) -> Vec<OFrame> {
    let first = frames
        .iter()
        .position(|f| f.track == 0 && f.keyframe == Some(true))
        .unwrap();
    frames[first..].to_vec()
}

#[test]
fn several_viewers_of_a_push_get_every_frame_byte_for_byte() {
    let server = start(Setup::default(), vec![("cam", Input::Push)]);
    // Viewers connect before anything is pushed: they wait for the header.
    let mut viewers: Vec<TcpStream> = (0..3).map(|_| get(server.addr, "/cam/live.mkv")).collect();
    wait_for_stream(server.addr, "cam", Duration::from_secs(5), |s| {
        s["clients"] == 3
    });
    let source = std::fs::read(testdata("h264_aac.mkv")).unwrap();
    assert_eq!(push(server.addr, "cam", &then_new_tracks(&source)), 204);
    let (codecs, src) = oracle(&source);
    let want = from_first_keyframe(&src);
    for v in viewers.iter_mut() {
        v.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (status, head, first) = read_head(v);
        assert_eq!(status, 200);
        assert!(head.contains("Content-Type: video/x-matroska"), "{head}");
        let body = read_body(v, first, |_| false);
        let (got_codecs, got) = oracle(&body);
        assert_eq!(got_codecs, codecs);
        assert_eq!(
            got.len(),
            want.len(),
            "every frame from the first keyframe arrives"
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!((g.track, &g.data), (w.track, &w.data), "frame {i}");
            // Timestamps keep their spacing (the output timeline is re-based to 0).
            let rel = |f: &OFrame, base: &OFrame| f.ts_ns - base.ts_ns;
            assert!(
                (rel(g, &got[0]) - rel(w, &want[0])).abs() <= 1_000_000,
                "frame {i} timestamp: got {:?} want {:?}",
                got[..=i]
                    .iter()
                    .map(|f| (f.track, f.ts_ns / 1_000_000))
                    .collect::<Vec<_>>(),
                want[..=i]
                    .iter()
                    .map(|f| (f.track, f.ts_ns / 1_000_000))
                    .collect::<Vec<_>>()
            );
        }
    }
    let s = wait_for_stream(server.addr, "cam", Duration::from_secs(2), |_| true);
    assert_eq!(s["state"], "waiting-for-pusher");
    drop(server);
}

#[test]
fn a_looping_file_keeps_one_timeline_and_a_burst_client_gets_history() {
    let setup = Setup {
        prefill_s: 25.0,
        burst_s: 30.0,
        client_queue: 64 << 20,
        ..Setup::default()
    };
    let server = start(setup, vec![("live", file_input("h264_aac.mkv", true))]);
    // 25 s of a 10 s file are published at once: two passes and a half.
    wait_for_stream(server.addr, "live", Duration::from_secs(10), |s| {
        s["gops_held"].as_u64() >= Some(20)
    });
    let mut v = get(server.addr, "/live/live.mkv");
    let (status, _, first) = read_head(&mut v);
    assert_eq!(status, 200);
    let body = read_body(&mut v, first, |b| b.len() > 600_000);
    let (_, got) = oracle(&body);
    let (_, src) = oracle_file("h264_aac.mkv");
    assert_eq!(got[0].keyframe, Some(true), "a viewer starts at a keyframe");
    let n = assert_contiguous_run(&src, &got, 2);
    assert!(n > 500, "checked {n} frames across loop boundaries");
    // Timestamps keep increasing across loop seams: video rises by one frame interval,
    // and at a seam by the amount the file's audio outlasts its video (each pass starts
    // after the longer track, so no track overlaps itself). Output is in whole ms.
    let span = |t: usize, frame_ns: i64| {
        let ts: Vec<i64> = src
            .iter()
            .filter(|f| f.track == t)
            .map(|f| f.ts_ns)
            .collect();
        ts.iter().max().unwrap() - ts.iter().min().unwrap() + frame_ns
    };
    let longer_audio = (span(1, 1024 * 1_000_000_000 / 48_000) - span(0, 40_000_000)).max(0);
    let video: Vec<i64> = got
        .iter()
        .filter(|f| f.track == 0)
        .map(|f| f.ts_ns)
        .collect();
    let mut sorted = video.clone();
    sorted.sort();
    // The read stopped mid-stream: B-frames that present before the last received frame
    // may still be missing. Look only up to a reorder depth before the end.
    let last = *sorted.last().unwrap();
    sorted.retain(|&t| t < last - 200_000_000);
    let mut seams = 0;
    for w in sorted.windows(2) {
        let step = w[1] - w[0];
        assert!(
            (40_000_000..=40_000_000 + longer_audio + 2_000_000).contains(&step),
            "video frame spacing {step} ns (audio outlasts video by {longer_audio} ns) at {}: {:?}",
            w[0] / 1_000_000,
            sorted
                .iter()
                .map(|t| t / 1_000_000)
                .filter(|t| (t - w[0] / 1_000_000).abs() < 300)
                .collect::<Vec<_>>()
        );
        seams += usize::from(step != 40_000_000);
    }
    assert!(seams >= 1 && seams <= n / 200, "{seams} seams");
    let audio: Vec<i64> = got
        .iter()
        .filter(|f| f.track == 1)
        .map(|f| f.ts_ns)
        .collect();
    assert!(
        audio.windows(2).all(|w| w[1] > w[0]),
        "audio timestamps increase"
    );
}

#[test]
fn a_late_viewer_starts_at_the_most_recent_keyframe() {
    let server = start(
        Setup::default(),
        vec![("live", file_input("h264_aac.mkv", true))],
    );
    wait_for_stream(server.addr, "live", Duration::from_secs(10), |s| {
        s["gops_held"].as_u64() >= Some(2)
    });
    let mut v = get(server.addr, "/live/mkv");
    let (status, _, first) = read_head(&mut v);
    assert_eq!(status, 200);
    let body = read_body(&mut v, first, |b| b.len() > 40_000);
    let (_, got) = oracle(&body);
    let (_, src) = oracle_file("h264_aac.mkv");
    let video0 = got.iter().find(|f| f.track == 0).unwrap();
    assert_eq!(video0.keyframe, Some(true));
    // With no burst it starts at the newest GOP: at most one GOP (1 s) old at connect.
    assert_contiguous_run(&src, &got, 2);
}

#[test]
fn webm_is_served_for_webm_codecs_only() {
    let server = start(
        Setup::default(),
        vec![
            ("w", file_input("vp9_opus.webm", true)),
            ("m", file_input("h264_aac.mkv", true)),
        ],
    );
    wait_for_stream(server.addr, "w", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    wait_for_stream(server.addr, "m", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    let mut v = get(server.addr, "/w/live.webm");
    let (status, head, first) = read_head(&mut v);
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: video/webm"));
    let body = read_body(&mut v, first, |b| b.len() > 30_000);
    let mkv = matroska_demuxer::MatroskaFile::open(std::io::Cursor::new(&body)).unwrap();
    assert_eq!(mkv.ebml_header().doc_type(), "webm");
    let (codecs, got) = oracle(&body);
    assert_eq!(codecs, vec!["V_VP9", "A_OPUS"]);
    let (_, src) = oracle_file("vp9_opus.webm");
    assert_contiguous_run(&src, &got, 2);

    let (status, _, body) = request(server.addr, b"GET /m/live.webm HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 404);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("not WebM") && text.contains("h264"), "{text}");
}

#[test]
fn a_file_that_ends_closes_viewers_after_everything_and_the_server_exits() {
    let setup = Setup {
        prefill_s: 0.0,
        keep_running: false,
        ..Setup::default()
    };
    let server = start(setup, vec![("a", file_input("h265_aac.mkv", false))]);
    let mut v = get(server.addr, "/a/live.mkv");
    let (status, _, first) = read_head(&mut v);
    assert_eq!(status, 200);
    let body = read_body(&mut v, first, |_| false);
    let (_, got) = oracle(&body);
    let (_, src) = oracle_file("h265_aac.mkv");
    // The viewer joined within the first GOP's time; it gets all the rest to the end.
    let last = got.last().unwrap();
    assert_eq!(
        last.data,
        src.iter().rfind(|f| f.track == last.track).unwrap().data
    );
    assert!(
        server.wait(Duration::from_secs(10)).unwrap(),
        "exit status: success"
    );
}

#[test]
fn every_codec_of_the_matrix_passes_through() {
    for (file, codecs) in [
        ("h265_aac.mkv", vec!["V_MPEGH/ISO/HEVC", "A_AAC"]),
        ("av1_opus.mkv", vec!["V_AV1", "A_OPUS"]),
        ("vp8_vorbis.webm", vec!["V_VP8", "A_VORBIS"]),
        ("h264_flac.mkv", vec!["V_MPEG4/ISO/AVC", "A_FLAC"]),
        ("h264_mp3.mkv", vec!["V_MPEG4/ISO/AVC", "A_MPEG/L3"]),
        ("h264_pcm.mkv", vec!["V_MPEG4/ISO/AVC", "A_PCM/INT/LIT"]),
        ("h264_mulaw.mkv", vec!["V_MPEG4/ISO/AVC", "A_MS/ACM"]),
        ("h264_alaw.mkv", vec!["V_MPEG4/ISO/AVC", "A_MS/ACM"]),
        ("opus_only.webm", vec!["A_OPUS"]),
        ("laced_xiph.mka", vec!["A_AAC"]),
    ] {
        let setup = Setup {
            prefill_s: 3.0,
            burst_s: 10.0,
            ..Setup::default()
        };
        let server = start(setup, vec![("s", file_input(file, true))]);
        wait_for_stream(server.addr, "s", Duration::from_secs(10), |s| {
            s["gops_held"].as_u64() >= Some(1)
        });
        let mut v = get(server.addr, "/s/live.mkv");
        let (status, _, first) = read_head(&mut v);
        assert_eq!(status, 200, "{file}");
        let body = read_body(&mut v, first, |b| b.len() > 20_000);
        let (got_codecs, got) = oracle(&body);
        assert_eq!(got_codecs, codecs, "{file}");
        let (src_codecs, src) = oracle_file(file);
        assert_eq!(src_codecs.len(), got_codecs.len());
        let n = assert_contiguous_run(&src, &got, codecs.len());
        assert!(n > 10, "{file}: checked {n} frames");
    }
}

#[test]
fn an_unsupported_codec_refuses_the_stream_with_a_clear_reason() {
    let setup = Setup {
        keep_running: true,
        ..Setup::default()
    };
    let server = start(
        setup,
        vec![
            ("bad", file_input("unsupported_codec.mkv", true)),
            ("good", file_input("opus_only.webm", true)),
        ],
    );
    let s = wait_for_stream(server.addr, "bad", Duration::from_secs(10), |s| {
        s["state"] == "failed"
    });
    let detail = s["detail"].as_str().unwrap();
    assert!(detail.contains("V_MPEG2"), "{detail}");
    let (status, _, _) = request(
        server.addr,
        b"GET /bad/live.mkv HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(status, 404);
    // The other stream is not affected.
    wait_for_stream(server.addr, "good", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
}

#[test]
fn garbage_mid_push_is_skipped_and_viewers_resume_at_the_next_keyframe() {
    let server = start(Setup::default(), vec![("cam", Input::Push)]);
    let mut v = get(server.addr, "/cam/live.mkv");
    wait_for_stream(server.addr, "cam", Duration::from_secs(5), |s| {
        s["clients"] == 1
    });
    let source = std::fs::read(testdata("h264_aac.mkv")).unwrap();
    let mut damaged = source[..source.len() / 2].to_vec();
    damaged.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    damaged.extend_from_slice(&source[source.len() / 2..]);
    push(server.addr, "cam", &then_new_tracks(&damaged));
    let (_, src) = oracle_file("h264_aac.mkv");
    v.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (_, _, first) = read_head(&mut v);
    let body = read_body(&mut v, first, |_| false);
    let (_, got) = oracle(&body);
    // Everything received is source frames, in order; some in the middle are missing. The
    // block the garbage landed in cannot be told from a good one by the container (its
    // size field still holds): at most that one frame is foreign.
    assert!(
        got.len() < src.len() && got.len() > src.len() / 3,
        "{} of {}",
        got.len(),
        src.len()
    );
    let mut at = 0;
    let mut resumed_at_keyframe = true;
    let mut prev_video: Option<usize> = None;
    let mut foreign = 0;
    for g in &got {
        let Some(i) = (at..src.len()).find(|&i| src[i].track == g.track && src[i].data == g.data)
        else {
            foreign += 1;
            continue;
        };
        if g.track == 0 {
            if let Some(p) = prev_video {
                let gap = src[p + 1..i].iter().any(|f| f.track == 0);
                if gap && g.keyframe != Some(true) {
                    resumed_at_keyframe = false;
                }
            }
            prev_video = Some(i);
        }
        at = i + 1;
    }
    assert!(foreign <= 1, "{foreign} frames not from the source");
    assert!(
        resumed_at_keyframe,
        "after the garbage, video resumes at a keyframe"
    );
    // The stream survived: it takes the next pusher.
    assert_eq!(push(server.addr, "cam", &source), 204);
}

#[test]
fn a_second_pusher_gets_409_while_one_is_live() {
    let server = start(Setup::default(), vec![("cam", Input::Push)]);
    let mut first = BodyOut::push_chunked(server.addr, "cam");
    let source = std::fs::read(testdata("h264_aac.mkv")).unwrap();
    first.send(&source[..4096]).unwrap();
    wait_for_stream(server.addr, "cam", Duration::from_secs(5), |s| {
        s["state"] != "waiting-for-pusher"
    });
    let (status, _, body) = request(
        server.addr,
        b"PUT /cam/ingest HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    drop(first);
}

/// FNV-1a: enough to tell byte streams apart without keeping 200 copies of them.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn stalled_viewers_do_not_hold_back_the_reader_or_the_other_viewers() {
    let setup = Setup {
        client_queue: 256 << 20,
        ..Setup::default()
    };
    let server = start(setup, vec![("cam", Input::Push)]);
    // 50 viewers that never read a byte after their request.
    let stalled: Vec<TcpStream> = (0..50).map(|_| get(server.addr, "/cam/live.mkv")).collect();
    let addr = server.addr;
    let one = std::fs::read(testdata("h264_aac.mkv")).unwrap();
    let (_, src) = oracle(&one);
    let readers: Vec<_> = (0..200)
        .map(|i| {
            let mut s = get(addr, "/cam/live.mkv");
            thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let (status, _, first) = read_head(&mut s);
                assert_eq!(status, 200);
                let t = Instant::now();
                let body = read_body(&mut s, first, |_| false);
                eprintln!(
                    "reader {i} done after {:?} with {} bytes",
                    t.elapsed(),
                    body.len()
                );
                (body.len(), fnv(&body), (i == 0).then_some(body))
            })
        })
        .collect();
    wait_for_stream(server.addr, "cam", Duration::from_secs(10), |s| {
        s["clients"] == 250
    });
    // An unpaced input of 40 passes of the file, about 10 MB: more than the stalled
    // viewers' socket buffers can take. If the reader waited for them, this would not end.
    let passes = 40;
    let input: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * passes)
        .collect();
    let input = then_new_tracks(&input);
    let started = Instant::now();
    assert_eq!(push(server.addr, "cam", &input), 204);
    let push_time = started.elapsed();
    let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let full = results[0].2.as_ref().unwrap();
    let (_, got) = oracle(full);
    // Frames before the first keyframe have nothing to decode against: they are dropped.
    let lead = src
        .iter()
        .position(|f| f.track == 0 && f.keyframe == Some(true))
        .unwrap();
    assert_eq!(
        got.len(),
        src.len() * passes - lead,
        "a reading viewer gets every frame"
    );
    assert_contiguous_run(&src, &got, 2);
    // All reading viewers joined before the first frame, so they got identical bytes.
    for (len, hash, _) in &results {
        assert_eq!(
            (*len, *hash),
            (full.len(), fnv(full)),
            "every reading viewer got the same, complete stream"
        );
    }
    let s = wait_for_stream(server.addr, "cam", Duration::from_secs(2), |_| true);
    println!(
        "pushed {} bytes to 250 viewers (50 stalled) in {push_time:?}; gops skipped: {}",
        input.len(),
        s["gops_skipped"]
    );
    drop(stalled);
}

#[test]
fn a_viewer_that_takes_nothing_is_closed_after_the_client_timeout() {
    let setup = Setup {
        client_timeout: Duration::from_millis(500),
        client_queue: 256 << 20,
        ..Setup::default()
    };
    let server = start(setup, vec![("cam", Input::Push)]);
    let mut stalled = get(server.addr, "/cam/live.mkv");
    wait_for_stream(server.addr, "cam", Duration::from_secs(5), |s| {
        s["clients"] == 1
    });
    // 10 MB unpaced: more than loopback socket buffers hold, so the viewer's socket fills.
    let one = std::fs::read(testdata("h264_aac.mkv")).unwrap();
    let input: Vec<u8> = one.iter().copied().cycle().take(one.len() * 40).collect();
    assert_eq!(push(server.addr, "cam", &input), 204);
    let s = wait_for_stream(server.addr, "cam", Duration::from_secs(10), |s| {
        s["clients"] == 0
    });
    assert!(s["bytes_sent"].as_u64().unwrap() < s["bytes_in"].as_u64().unwrap());
    // The server closed it: reading drains what was buffered and then hits the end.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    stalled
        .read_to_end(&mut sink)
        .expect("the server closed the connection");
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("muxcast-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn garbage_and_hostile_files_fail_the_stream_with_a_reason_and_never_crash() {
    let mut huge = Vec::new();
    // EBML header element claiming 2^56 - 2 bytes.
    huge.extend_from_slice(&[
        0x1A, 0x45, 0xDF, 0xA3, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
    ]);
    huge.extend_from_slice(&[0u8; 64]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage.mkv",
            (0..100_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
        ("text.mkv", b"this is not a video\n".repeat(100)),
        ("huge.mkv", huge),
        ("empty.mkv", Vec::new()),
    ];
    let inputs: Vec<(String, Input)> = cases
        .iter()
        .map(|(name, bytes)| {
            let path = temp_file(name, bytes);
            (name.replace(".mkv", ""), Input::File { path, looped: true })
        })
        .collect();
    let server = start(
        Setup::default(),
        inputs
            .iter()
            .map(|(n, i)| (n.as_str(), i.clone()))
            .chain([("ok", file_input("opus_only.webm", true))])
            .collect(),
    );
    for (name, _) in &inputs {
        let s = wait_for_stream(server.addr, name, Duration::from_secs(10), |s| {
            s["state"] == "failed"
        });
        let detail = s["detail"].as_str().unwrap_or("");
        assert!(!detail.is_empty(), "{name}: a reason is given");
        println!("{name}: {detail}");
    }
    wait_for_stream(server.addr, "ok", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
}

#[test]
fn a_truncated_input_delivers_what_it_has_and_the_stream_goes_on() {
    let server = start(Setup::default(), vec![("t", Input::Push)]);
    let mut v = get(server.addr, "/t/live.mkv");
    wait_for_stream(server.addr, "t", Duration::from_secs(5), |s| {
        s["clients"] == 1
    });
    let source = std::fs::read(testdata("h264_aac.mkv")).unwrap();
    let cut = source.len() * 2 / 3 + 17;
    push(server.addr, "t", &source[..cut]);
    // When to stop reading (not what to expect): the last frame our demuxer finds before
    // the cut. The verdict below still comes from the independent parser.
    let mut demux = muxcast::ingest::mkv::MkvDemuxer::new(Default::default());
    demux.feed(&source[..cut]);
    let mut last = Vec::new();
    while let Ok(Some(e)) = demux.next_event().or_else(|_| demux.finish()) {
        if let muxcast::ingest::mkv::DemuxEvent::Frame(f) = e {
            last = f.data.to_vec();
        }
    }
    while let Ok(Some(e)) = demux.finish() {
        if let muxcast::ingest::mkv::DemuxEvent::Frame(f) = e {
            last = f.data.to_vec();
        }
    }
    v.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (status, _, first) = read_head(&mut v);
    assert_eq!(status, 200);
    let body = read_body(&mut v, first, |b| b.ends_with(&last));
    let (_, got) = oracle(&body);
    let (_, src) = oracle_file("h264_aac.mkv");
    assert_contiguous_run(&src, &got, 2);
    // Frames up to the cut arrive (the cut is at 2/3 of the bytes).
    assert!(
        got.len() * 100 >= src.len() * 60,
        "{} of {}",
        got.len(),
        src.len()
    );
    // The stream is still there for the next pusher.
    assert_eq!(push(server.addr, "t", &source), 204);
}
