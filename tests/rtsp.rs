//! RTSP camera ingest end to end: a stand-in camera (tests/common/rtsp_server.rs: DESCRIBE,
//! SETUP, PLAY, interleaved RTP over TCP or RTP over UDP, testdata frames) feeds muxcast
//! through retina; live-MKV viewers and HLS segments are checked against the source frames
//! read by matroska-demuxer.

mod common;
#[path = "common/rtsp_server.rs"]
mod rtsp_server;

use std::collections::HashSet;
use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use muxcast::ingest::source::Input;
use rtsp_server::{
    Options, RtspServer, SdpParameterSets, avcc_parameter_sets, hvcc_parameter_sets, reserve_addr,
};

const OPUS_MEDIA: &str =
    "m=audio 0 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=control:trackID=9\r\n";

fn rtsp_input(url: &str) -> Input {
    Input::parse(url, false).expect("a valid rtsp URL")
}

/// A live-MKV viewer of `stream`, reading for `duration` (or until the server closes).
/// Returns the body and whether the connection was still open at the end.
fn watch(addr: SocketAddr, stream: &str, duration: Duration) -> (Vec<u8>, bool) {
    let mut s = get(addr, &format!("/{stream}/live.mkv"));
    let (status, _, mut body) = read_head(&mut s);
    assert_eq!(status, 200);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut chunk = vec![0u8; 64 * 1024];
    while start.elapsed() < duration {
        match s.read(&mut chunk) {
            Ok(0) => return (body, false),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("viewer read failed: {e}"),
        }
    }
    (body, true)
}

/// Waits until stream `name` is live.
fn wait_live(addr: SocketAddr, name: &str, limit: Duration) -> serde_json::Value {
    wait_for_stream(addr, name, limit, |s| s["state"] == "live")
}

fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The timestamps (ms) of one track's frames in a viewer's bytes.
fn timestamps(frames: &[OFrame], track: usize) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f.track == track)
        .map(|f| f.ts_ns / 1_000_000)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn h264_aac_camera_with_digest_auth_reaches_live_mkv_and_hls() {
    // The RTP clocks start just before the 32-bit wrap: video wraps after ~1.1 s, audio
    // after ~2.1 s. A 2 s session timeout makes the camera drop a client without
    // keepalives. The SDP also offers Opus, which retina cannot depacketize.
    let camera = RtspServer::start(
        &testdata("h264_aac.mkv"),
        Options {
            digest: Some(("cam".into(), "s3cr:t@x".into())),
            rtp_start: Some(u32::MAX - 100_000),
            session_timeout_s: 2,
            extra_media: vec![OPUS_MEDIA.into()],
            ..Options::default()
        },
    );
    let url = format!("rtsp://cam:s3cr%3At%40x@{}/stream", camera.addr);
    let server = start(Setup::default(), vec![("cam", rtsp_input(&url))]);
    let s = wait_live(server.addr, "cam", Duration::from_secs(15));
    let input = s["input"].as_str().unwrap();
    assert_eq!(input, format!("rtsp://cam@{}/stream", camera.addr));
    assert_eq!(s["tracks"][0]["codec"], "h264");
    assert_eq!(s["tracks"][1]["codec"], "aac");
    assert!(camera.stats.unauthorized.load(Ordering::SeqCst) >= 1);
    assert!(
        !camera
            .stats
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("trackID=9")),
        "the Opus stream must not be set up"
    );

    let (body, open) = watch(server.addr, "cam", Duration::from_secs(3));
    assert!(open, "the viewer's connection ended");
    let (codecs, got) = oracle(&body);
    assert_eq!(codecs, ["V_MPEG4/ISO/AVC", "A_AAC"]);
    let (_, src) = oracle_file("h264_aac.mkv");
    let checked = assert_contiguous_run(&src, &got, 2);
    assert!(checked > 100, "only {checked} frames in 3 s");
    // Across both RTP wraps the output timeline advances one frame at a time.
    let audio = timestamps(&got, 1);
    for w in audio.windows(2) {
        let d = w[1] - w[0];
        assert!((19..=23).contains(&d), "audio step {d} ms in {audio:?}");
    }
    let mut video = timestamps(&got, 0);
    video.sort();
    for w in video.windows(2) {
        assert!((39..=41).contains(&(w[1] - w[0])), "video steps {video:?}");
    }

    // HLS from the same frames.
    let start = Instant::now();
    let master = loop {
        let (status, _, body) = request(
            server.addr,
            b"GET /cam/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let text = String::from_utf8_lossy(&body).to_string();
        if status == 200 && text.contains("BANDWIDTH=") && !text.contains("BANDWIDTH=1,") {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no HLS: {text}");
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        master.contains("CODECS=\"avc1.64000d,mp4a.40.2\""),
        "{master}"
    );
    assert!(master.contains("RESOLUTION=320x240"), "{master}");
    for (rendition, track) in [("v0", 0usize), ("a1", 1)] {
        let playlist =
            String::from_utf8(get_ok(server.addr, &format!("/cam/{rendition}/index.m3u8")))
                .unwrap();
        let segment = playlist
            .lines()
            .find(|l| l.ends_with(".m4s"))
            .unwrap_or_else(|| panic!("no segment in {playlist}"));
        let payload = mdat_payloads(&get_ok(server.addr, &format!("/cam/{rendition}/{segment}")));
        let one: Vec<u8> = src
            .iter()
            .filter(|f| f.track == track)
            .flat_map(|f| f.data.clone())
            .collect();
        let cyclic = [one.clone(), one].concat();
        assert!(payload.len() > 1000, "{rendition}: empty segment");
        assert!(
            contains(&cyclic, &payload),
            "{rendition}: segment {segment} is not a run of source frames"
        );
    }

    // Keepalives kept the one session alive past its 2 s timeout.
    assert_eq!(camera.stats.plays.load(Ordering::SeqCst), 1);
    assert_eq!(camera.stats.expired.load(Ordering::SeqCst), 0);
    assert!(camera.stats.keepalives.load(Ordering::SeqCst) >= 2);
}

#[test]
fn g711_camera_over_udp_with_in_band_parameter_sets_only() {
    let camera = RtspServer::start(
        &testdata("h264_mulaw.mkv"),
        Options {
            sdp_parameter_sets: SdpParameterSets::Missing,
            in_band_parameter_sets: true,
            ..Options::default()
        },
    );
    let url = format!("{}?transport=udp", camera.url());
    let server = start(Setup::default(), vec![("cam", rtsp_input(&url))]);
    let s = wait_live(server.addr, "cam", Duration::from_secs(15));
    assert!(s["input"].as_str().unwrap().ends_with("(udp)"), "{s}");
    assert!(
        camera
            .stats
            .transports
            .lock()
            .unwrap()
            .iter()
            .all(|t| t.starts_with("RTP/AVP/UDP") || t.starts_with("RTP/AVP;")),
        "{:?}",
        camera.stats.transports.lock().unwrap()
    );
    let (body, _) = watch(server.addr, "cam", Duration::from_secs(3));
    let (codecs, got) = oracle(&body);
    assert_eq!(codecs, ["V_MPEG4/ISO/AVC", "A_MS/ACM"]);
    let (_, src) = oracle_file("h264_mulaw.mkv");
    let checked = assert_contiguous_run(&src, &got, 2);
    assert!(checked > 60, "only {checked} frames");
    assert!(got.iter().any(|f| f.track == 1), "no G.711 frames");

    // Codec private: the in-band SPS/PPS (the SDP had none) and ffmpeg's WAVEFORMATEX.
    let source = std::fs::read(testdata("h264_mulaw.mkv")).unwrap();
    let source = matroska_demuxer::MatroskaFile::open(Cursor::new(source)).unwrap();
    let viewer = matroska_demuxer::MatroskaFile::open(Cursor::new(body)).unwrap();
    let (sps, pps, _) = avcc_parameter_sets(source.tracks()[0].codec_private().unwrap());
    let (vsps, vpps, vlen) = avcc_parameter_sets(viewer.tracks()[0].codec_private().unwrap());
    assert_eq!((vsps, vpps, vlen), (sps, pps, 4));
    assert_eq!(
        viewer.tracks()[1].codec_private(),
        source.tracks()[1].codec_private()
    );
    assert_eq!(
        viewer.tracks()[1].audio().unwrap().sampling_frequency(),
        8000.0
    );
}

#[test]
fn in_band_parameter_sets_win_over_a_wrong_sdp() {
    // The SDP carries the 160x120 stream's SPS/PPS; the video is 320x240.
    let other = std::fs::read(testdata("h264_mulaw.mkv")).unwrap();
    let other = matroska_demuxer::MatroskaFile::open(Cursor::new(other)).unwrap();
    let (sps, pps, _) = avcc_parameter_sets(other.tracks()[0].codec_private().unwrap());
    let camera = RtspServer::start(
        &testdata("h264_aac.mkv"),
        Options {
            sdp_parameter_sets: SdpParameterSets::Wrong(sps, pps),
            in_band_parameter_sets: true,
            ..Options::default()
        },
    );
    let server = start(Setup::default(), vec![("cam", rtsp_input(&camera.url()))]);
    let s = wait_live(server.addr, "cam", Duration::from_secs(15));
    assert_eq!(s["tracks"][0]["width"], 320, "{s}");
    let (body, _) = watch(server.addr, "cam", Duration::from_millis(1500));
    let viewer = matroska_demuxer::MatroskaFile::open(Cursor::new(body.clone())).unwrap();
    assert_eq!(viewer.tracks()[0].video().unwrap().pixel_width().get(), 320);
    let (_, got) = oracle(&body);
    let (_, src) = oracle_file("h264_aac.mkv");
    assert!(assert_contiguous_run(&src, &got, 2) > 20);
}

#[test]
fn a_camera_that_is_off_at_start_is_retried_until_it_comes() {
    let addr = reserve_addr();
    let url = format!("rtsp://{addr}/stream");
    let server = start(Setup::default(), vec![("cam", rtsp_input(&url))]);
    let s = wait_for_stream(server.addr, "cam", Duration::from_secs(10), |s| {
        s["state"] == "reconnecting"
    });
    let detail = s["detail"].as_str().unwrap();
    assert!(detail.contains("attempt "), "{detail}");
    thread::sleep(Duration::from_millis(1500));
    let camera = RtspServer::start_at(addr, &testdata("h264_aac.mkv"), Options::default());
    wait_live(server.addr, "cam", Duration::from_secs(15));
    let (body, _) = watch(server.addr, "cam", Duration::from_secs(2));
    let (_, got) = oracle(&body);
    let (_, src) = oracle_file("h264_aac.mkv");
    assert!(assert_contiguous_run(&src, &got, 2) > 50);
    assert_eq!(camera.stats.plays.load(Ordering::SeqCst), 1);
}

#[test]
fn a_session_dropped_mid_stream_reconnects_and_viewers_stay() {
    let camera = RtspServer::start(&testdata("h264_aac.mkv"), Options::default());
    let server = start(Setup::default(), vec![("cam", rtsp_input(&camera.url()))]);
    wait_live(server.addr, "cam", Duration::from_secs(15));

    let viewer = {
        let addr = server.addr;
        thread::spawn(move || watch(addr, "cam", Duration::from_secs(7)))
    };
    thread::sleep(Duration::from_millis(2000));
    camera.drop_connections();
    let before = Instant::now();
    wait_until(Duration::from_secs(10), "a second PLAY", || {
        camera.stats.plays.load(Ordering::SeqCst) == 2
    });
    assert!(before.elapsed() >= Duration::from_millis(900), "no backoff");
    let (body, open) = viewer.join().unwrap();
    assert!(open, "the viewer was disconnected");
    let (codecs, got) = oracle(&body);
    assert_eq!(codecs.len(), 2);
    let (_, src) = oracle_file("h264_aac.mkv");
    let known: HashSet<&[u8]> = src.iter().map(|f| f.data.as_slice()).collect();
    assert!(got.iter().all(|f| known.contains(f.data.as_slice())));
    // The camera restarted its file: the video goes on from its first keyframe, later on
    // the same timeline.
    let video: Vec<&OFrame> = got.iter().filter(|f| f.track == 0).collect();
    let first_key = &src.iter().find(|f| f.track == 0).unwrap().data;
    let restarts: Vec<usize> = video
        .iter()
        .enumerate()
        .filter(|(i, f)| *i > 0 && f.data == *first_key)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(restarts.len(), 1, "one restart of the camera's file");
    let (old, new) = video.split_at(restarts[0]);
    let old_max = old.iter().map(|f| f.ts_ns).max().unwrap();
    assert!(new.iter().all(|f| f.ts_ns > old_max), "timeline went back");
    assert!(
        new.len() > 50,
        "only {} frames after the reconnect",
        new.len()
    );
    assert!(
        new.first().unwrap().ts_ns - old_max < 3_000_000_000,
        "the timeline jumped ahead"
    );

    // HLS marks the outage, and program date times stay on the wall clock across it:
    // the first segment after the discontinuity is dated the outage later than the
    // end of the last one before it.
    let body = get_ok(server.addr, "/cam/v0/index.m3u8");
    let Ok(m3u8_rs::Playlist::MediaPlaylist(media)) = m3u8_rs::parse_playlist_res(&body) else {
        panic!("{}", String::from_utf8_lossy(&body))
    };
    let at: Vec<usize> = (0..media.segments.len())
        .filter(|&i| media.segments[i].discontinuity)
        .collect();
    assert_eq!(at.len(), 1, "{}", String::from_utf8_lossy(&body));
    let date = |i: usize| {
        media.segments[i]
            .program_date_time
            .expect("PROGRAM-DATE-TIME")
            .timestamp_millis()
    };
    let before_end = date(at[0] - 1) + (media.segments[at[0] - 1].duration * 1000.0) as i64;
    let jump = date(at[0]) - before_end;
    assert!(
        (900..5000).contains(&jump),
        "dates jump {jump} ms at the discontinuity, not by the outage"
    );
    let last = media.segments.len() - 1;
    let newest_end = date(last) + (media.segments[last].duration * 1000.0) as i64;
    let lag = unix_ms() - newest_end;
    assert!(
        (-100..4000).contains(&lag),
        "the newest segment ends {lag} ms before now"
    );
    // DASH: a new Period from the reconnect on.
    let mpd = String::from_utf8(get_ok(server.addr, "/cam/manifest.mpd")).unwrap();
    assert_eq!(mpd.matches("<Period ").count(), 2, "{mpd}");
}

#[test]
fn a_silent_session_is_dropped_after_the_rtsp_timeout() {
    let camera = RtspServer::start(&testdata("h264_aac.mkv"), Options::default());
    let setup = Setup {
        rtsp_timeout: Duration::from_millis(1500),
        ..Setup::default()
    };
    let server = start(setup, vec![("cam", rtsp_input(&camera.url()))]);
    wait_live(server.addr, "cam", Duration::from_secs(15));
    camera.silence_current_sessions();
    let s = wait_for_stream(server.addr, "cam", Duration::from_secs(10), |s| {
        s["state"] == "reconnecting"
    });
    assert!(
        s["detail"].as_str().unwrap().contains("no media for 1.5 s"),
        "{s}"
    );
    wait_live(server.addr, "cam", Duration::from_secs(10));
    assert_eq!(camera.stats.plays.load(Ordering::SeqCst), 2);
    let (body, _) = watch(server.addr, "cam", Duration::from_millis(1500));
    assert!(oracle(&body).1.len() > 20);
}

#[test]
fn camera_clock_jumps_are_rebased_without_dropping_the_session() {
    // One camera's clock jumps an hour ahead, another's 30 s back, after ~1.5 s.
    let ahead = RtspServer::start(
        &testdata("h264_aac.mkv"),
        Options {
            clock_jump: Some((100, 3600.0)),
            ..Options::default()
        },
    );
    let back = RtspServer::start(
        &testdata("h264_aac.mkv"),
        Options {
            clock_jump: Some((100, -30.0)),
            ..Options::default()
        },
    );
    let server = start(
        Setup::default(),
        vec![
            ("ahead", rtsp_input(&ahead.url())),
            ("back", rtsp_input(&back.url())),
        ],
    );
    wait_live(server.addr, "ahead", Duration::from_secs(15));
    wait_live(server.addr, "back", Duration::from_secs(15));
    let viewers: Vec<_> = ["ahead", "back"]
        .into_iter()
        .map(|name| {
            let addr = server.addr;
            thread::spawn(move || watch(addr, name, Duration::from_secs(3)))
        })
        .collect();
    let (_, src) = oracle_file("h264_aac.mkv");
    for v in viewers {
        let (body, open) = v.join().unwrap();
        assert!(open);
        let (_, got) = oracle(&body);
        // The payloads never stopped: one contiguous run across the jump.
        assert!(assert_contiguous_run(&src, &got, 2) > 100);
        let mut video = timestamps(&got, 0);
        video.sort();
        let widest = video.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(widest < 500, "a gap of {widest} ms in the output timeline");
    }
    assert_eq!(ahead.stats.plays.load(Ordering::SeqCst), 1);
    assert_eq!(back.stats.plays.load(Ordering::SeqCst), 1);
}

/// Not a test: serves a testdata file for hand checks with ffprobe/ffplay/VLC.
/// `RTSP_SERVE_FILE=h264_aac.mkv RTSP_SERVE_SECS=60 \
///  cargo test --test rtsp serve -- --ignored --nocapture`, then
/// `ffprobe rtsp://127.0.0.1:PORT/stream`. `RTSP_SERVE_DIGEST=user:pass` asks for Digest.
#[test]
#[ignore]
fn serve_for_manual_checks() {
    let file = std::env::var("RTSP_SERVE_FILE").unwrap_or_else(|_| "h264_aac.mkv".into());
    let secs: u64 = std::env::var("RTSP_SERVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let digest = std::env::var("RTSP_SERVE_DIGEST").ok().and_then(|d| {
        d.split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))
    });
    let camera = RtspServer::start(
        &testdata(&file),
        Options {
            digest,
            ..Options::default()
        },
    );
    println!("serving {file} at {}", camera.url());
    thread::sleep(Duration::from_secs(secs));
    println!("requests: {:?}", camera.stats.requests.lock().unwrap());
}

#[test]
fn h265_camera_reaches_live_mkv_and_hls() {
    let camera = RtspServer::start(&testdata("h265_aac.mkv"), Options::default());
    // An open-GOP camera: its keyframes are CRA pictures (retina flags only IDR ones).
    let cra = RtspServer::start(
        &testdata("h265_aac.mkv"),
        Options {
            h265_keyframes_as_cra: true,
            ..Options::default()
        },
    );
    // The same file as a file input: its HLS codec string is the reference.
    let server = start(
        Setup::default(),
        vec![
            ("cam", rtsp_input(&camera.url())),
            ("cra", rtsp_input(&cra.url())),
            ("file", file_input("h265_aac.mkv", true)),
        ],
    );
    let s = wait_live(server.addr, "cam", Duration::from_secs(15));
    assert_eq!(s["tracks"][0]["codec"], "h265", "{s}");
    let (body, _) = watch(server.addr, "cam", Duration::from_secs(3));
    let (codecs, got) = oracle(&body);
    assert_eq!(codecs, ["V_MPEGH/ISO/HEVC", "A_AAC"]);
    let (_, src) = oracle_file("h265_aac.mkv");
    assert!(assert_contiguous_run(&src, &got, 2) > 100);
    // retina's hvcC carries the file's parameter sets.
    let source = std::fs::read(testdata("h265_aac.mkv")).unwrap();
    let source = matroska_demuxer::MatroskaFile::open(Cursor::new(source)).unwrap();
    let viewer = matroska_demuxer::MatroskaFile::open(Cursor::new(body)).unwrap();
    let (vps, sps, pps, _) = hvcc_parameter_sets(source.tracks()[0].codec_private().unwrap());
    let (v2, s2, p2, len) = hvcc_parameter_sets(viewer.tracks()[0].codec_private().unwrap());
    assert_eq!((v2, s2, p2, len), (vps, sps, pps, 4));
    let codecs = |stream: &str| {
        let start = Instant::now();
        loop {
            let (status, _, body) = request(
                server.addr,
                format!("GET /{stream}/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
            );
            let text = String::from_utf8_lossy(&body).to_string();
            if let Some(i) = text.find("CODECS=\"")
                && status == 200
            {
                let rest = &text[i + 8..];
                break rest[..rest.find('"').unwrap()].to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no HLS: {text}");
            thread::sleep(Duration::from_millis(100));
        }
    };
    let from_camera = codecs("cam");
    assert!(from_camera.starts_with("hvc1."), "{from_camera}");
    assert_eq!(from_camera, codecs("file"));

    // CRA keyframes start GOPs (the file has one every second) and HLS segments.
    let s = wait_for_stream(server.addr, "cra", Duration::from_secs(10), |s| {
        s["gops_held"].as_u64().unwrap_or(0) >= 3
    });
    assert_eq!(s["state"], "live");
    let start = Instant::now();
    loop {
        let (status, _, body) = request(
            server.addr,
            b"GET /cra/v0/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        if status == 200 && String::from_utf8_lossy(&body).contains("#EXTINF:") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no HLS segment");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn l16_audio_arrives_as_big_endian_pcm() {
    let camera = RtspServer::start(&testdata("h264_pcm.mkv"), Options::default());
    // By host name: retina resolves it.
    let url = format!("rtsp://localhost:{}/stream", camera.addr.port());
    let server = start(Setup::default(), vec![("cam", rtsp_input(&url))]);
    let s = wait_live(server.addr, "cam", Duration::from_secs(15));
    assert_eq!(s["tracks"][1]["codec"], "pcm", "{s}");
    let (body, _) = watch(server.addr, "cam", Duration::from_secs(2));
    let (codecs, mut got) = oracle(&body);
    assert_eq!(codecs, ["V_MPEG4/ISO/AVC", "A_PCM/INT/BIG"]);
    for f in got.iter_mut().filter(|f| f.track == 1) {
        f.data = f.data.chunks(2).flat_map(|s| [s[1], s[0]]).collect();
    }
    let (_, src) = oracle_file("h264_pcm.mkv");
    assert!(assert_contiguous_run(&src, &got, 2) > 50);
    assert!(got.iter().filter(|f| f.track == 1).count() > 20);
    let viewer = matroska_demuxer::MatroskaFile::open(Cursor::new(body)).unwrap();
    let audio = viewer.tracks()[1].audio().unwrap();
    assert_eq!(audio.bit_depth().map(|b| b.get()), Some(16));
    assert_eq!(audio.sampling_frequency(), 48000.0);
}

#[test]
fn an_on_demand_camera_is_connected_only_while_someone_watches() {
    let camera = RtspServer::start(&testdata("h264_aac.mkv"), Options::default());
    let setup = Setup {
        idle_close: Duration::from_secs(1),
        ..Setup::default()
    };
    let input = rtsp_input(&format!("{}#on-demand", camera.url()));
    assert!(matches!(
        input,
        Input::Rtsp {
            on_demand: true,
            ..
        }
    ));
    let server = start(setup, vec![("cam", input)]);
    // Nobody watches: no session.
    wait_for_stream(server.addr, "cam", Duration::from_secs(5), |s| {
        s["state"] == "idle"
    });
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        camera.stats.plays.load(Ordering::SeqCst),
        0,
        "played unwatched"
    );

    // The first viewer's playlist request waits for the first segment: no 404.
    let asked = Instant::now();
    let master = String::from_utf8(get_ok(server.addr, "/cam/index.m3u8")).unwrap();
    assert!(master.contains("#EXT-X-STREAM-INF"), "{master}");
    println!("first playlist after {:?}", asked.elapsed());
    assert_eq!(camera.stats.plays.load(Ordering::SeqCst), 1);

    // A live-MKV viewer gets the camera's frames.
    let (body, open) = watch(server.addr, "cam", Duration::from_secs(2));
    assert!(open);
    let (_, got) = oracle(&body);
    let (_, src) = oracle_file("h264_aac.mkv");
    let known: HashSet<&[u8]> = src.iter().map(|f| f.data.as_slice()).collect();
    assert!(got.len() > 20, "{} frames", got.len());
    assert!(got.iter().all(|f| known.contains(f.data.as_slice())));

    // Everyone left: the session ends about --idle-close later, and the stream is idle
    // again, with nothing stale kept for the next viewer.
    let left = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the camera connection to close",
        || camera.stats.closed.load(Ordering::SeqCst) >= 1,
    );
    let after = left.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "hung up after {after:?}"
    );
    wait_for_stream(server.addr, "cam", Duration::from_secs(5), |s| {
        s["state"] == "idle"
    });
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        camera.stats.plays.load(Ordering::SeqCst),
        1,
        "reconnected unwatched"
    );

    // The next viewer brings it back.
    let (body, open) = watch(server.addr, "cam", Duration::from_secs(3));
    assert!(open);
    assert!(oracle(&body).1.len() > 10, "no frames after the reconnect");
    assert_eq!(camera.stats.plays.load(Ordering::SeqCst), 2);
}

#[test]
fn new_parameter_sets_mid_stream_end_mkv_viewers_cleanly_and_start_a_discontinuity() {
    // From 3 s on, the camera's keyframes carry another stream's SPS/PPS (160x120).
    let other = std::fs::read(testdata("h264_mulaw.mkv")).unwrap();
    let other = matroska_demuxer::MatroskaFile::open(Cursor::new(other)).unwrap();
    let (sps, pps, _) = avcc_parameter_sets(other.tracks()[0].codec_private().unwrap());
    let camera = RtspServer::start(
        &testdata("h264_aac.mkv"),
        Options {
            parameter_switch: Some((Duration::from_secs(3), sps.clone(), pps)),
            ..Options::default()
        },
    );
    let server = start(Setup::default(), vec![("cam", rtsp_input(&camera.url()))]);
    wait_live(server.addr, "cam", Duration::from_secs(15));
    // A viewer from before the change gets a clean end of stream (its player reconnects).
    let (body, open) = watch(server.addr, "cam", Duration::from_secs(8));
    assert!(!open, "the old viewer was not ended");
    let before = matroska_demuxer::MatroskaFile::open(Cursor::new(body)).unwrap();
    assert_eq!(before.tracks()[0].video().unwrap().pixel_width().get(), 320);
    // A new viewer gets the new parameters.
    let (body, _) = watch(server.addr, "cam", Duration::from_millis(1500));
    let after = matroska_demuxer::MatroskaFile::open(Cursor::new(body)).unwrap();
    let (new_sps, _, _) = avcc_parameter_sets(after.tracks()[0].codec_private().unwrap());
    assert_eq!(new_sps, sps);
    assert_eq!(after.tracks()[0].video().unwrap().pixel_width().get(), 160);

    // HLS: a discontinuity and a new init segment carrying the new SPS (once a segment
    // after it is complete: m3u8-rs lists complete segments only).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (media, text) = loop {
        let body = get_ok(server.addr, "/cam/v0/index.m3u8");
        let text = String::from_utf8_lossy(&body).to_string();
        let Ok(m3u8_rs::Playlist::MediaPlaylist(media)) = m3u8_rs::parse_playlist_res(&body) else {
            panic!("{text}")
        };
        if media.segments.iter().any(|s| s.discontinuity) {
            break (media, text);
        }
        assert!(Instant::now() < deadline, "no discontinuity: {text}");
        thread::sleep(Duration::from_millis(200));
    };
    let at: Vec<usize> = (0..media.segments.len())
        .filter(|&i| media.segments[i].discontinuity)
        .collect();
    assert_eq!(at.len(), 1, "{text}");
    let maps: Vec<String> = media
        .segments
        .iter()
        .filter_map(|s| s.map.as_ref().map(|m| m.uri.clone()))
        .collect();
    assert_eq!(maps.len(), 2, "{text}");
    assert_ne!(maps[0], maps[1]);
    let init = get_ok(server.addr, &format!("/cam/v0/{}", maps[1]));
    assert!(contains(&init, &sps), "the new init lacks the new SPS");
    // DASH: a Period per parameter set.
    let mpd = String::from_utf8(get_ok(server.addr, "/cam/manifest.mpd")).unwrap();
    assert_eq!(mpd.matches("<Period ").count(), 2, "{mpd}");
}

#[test]
fn mjpeg_camera_reaches_live_mkv_and_hls_dash_answer_404_at_once() {
    // RTP/JPEG (RFC 2435) from testdata/mjpeg.mkv: 320x240 at 10 fps, every frame already
    // in the header layout an RTP/JPEG receiver rebuilds (testdata/make_mjpeg.sh), so
    // what viewers get must be the source JPEGs byte for byte. On demand, so that the
    // first playlist request arrives before the camera's first frame and is held.
    let camera = RtspServer::start(&testdata("mjpeg.mkv"), Options::default());
    let input = rtsp_input(&format!("{}#on-demand", camera.url()));
    let server = start(Setup::default(), vec![("cam", input)]);
    wait_for_stream(server.addr, "cam", Duration::from_secs(5), |s| {
        s["state"] == "idle"
    });

    // HLS cannot carry MJPEG: the held multivariant request is answered 404 as soon as
    // the first frame shows there will be no rendition (not 503 after its 15 s hold).
    let asked = Instant::now();
    let (status, _, body) = request(
        server.addr,
        b"GET /cam/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let waited = asked.elapsed();
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    assert_eq!(camera.stats.plays.load(Ordering::SeqCst), 1);
    // It was held until the camera's first frame, not refused before it.
    let s = wait_live(server.addr, "cam", Duration::from_millis(1));
    assert_eq!(s["tracks"][0]["codec"], "mjpeg", "{s}");
    assert_eq!(s["tracks"][0]["width"], 320, "{s}");
    assert_eq!(s["tracks"].as_array().map(Vec::len), Some(1), "{s}");

    // Live MKV: V_MJPEG, each JPEG a keyframe, identical to the source frames.
    let (body, open) = watch(server.addr, "cam", Duration::from_secs(3));
    assert!(open, "the viewer's connection ended");
    let viewer = matroska_demuxer::MatroskaFile::open(Cursor::new(body.clone())).unwrap();
    let video = viewer.tracks()[0].video().unwrap();
    assert_eq!(
        (video.pixel_width().get(), video.pixel_height().get()),
        (320, 240)
    );
    assert_eq!(viewer.tracks()[0].codec_private(), None);
    let (codecs, got) = oracle(&body);
    assert_eq!(codecs, ["V_MJPEG"]);
    let (_, src) = oracle_file("mjpeg.mkv");
    assert_eq!(src.len(), 20);
    let checked = assert_contiguous_run(&src, &got, 1);
    assert!(checked >= 20, "only {checked} frames in 3 s");
    assert!(
        got.iter().all(|f| f.keyframe == Some(true)),
        "a frame not a keyframe"
    );
    let steps: Vec<i64> = timestamps(&got, 0)
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(steps.iter().all(|d| (99..=101).contains(d)), "{steps:?}");

    // With the tracks known, every HLS/DASH request is a 404 at once (LL-HLS blocking
    // requests too).
    for path in [
        "/cam/index.m3u8",
        "/cam/manifest.mpd",
        "/cam/v0/index.m3u8",
        "/cam/v0/index.m3u8?_HLS_msn=3",
    ] {
        let asked = Instant::now();
        let (status, _, body) = request(
            server.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 404, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{path}: answered after {:?}",
            asked.elapsed()
        );
    }
}

#[test]
fn a_stream_removed_by_a_reload_hangs_its_camera_up() {
    let camera = RtspServer::start(&testdata("h264_aac.mkv"), Options::default());
    let server = start(
        Setup::default(),
        vec![
            ("cam", rtsp_input(&camera.url())),
            ("file", file_input("h264_aac.mkv", true)),
        ],
    );
    wait_for_stream(server.addr, "cam", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    assert_eq!(camera.stats.closed.load(Ordering::SeqCst), 0);
    // What a SIGHUP whose file no longer has "cam" sends to the loop.
    let (tx, rx) = std::sync::mpsc::channel();
    assert!(server.control.run(Box::new(move |s| {
        tx.send(s.remove_stream("cam")).unwrap();
    })));
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        "cam was there"
    );
    wait_until(
        Duration::from_secs(5),
        "the camera connection to close",
        || camera.stats.closed.load(Ordering::SeqCst) >= 1,
    );
    let requests = camera.stats.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.starts_with("TEARDOWN")),
        "{requests:?}"
    );
    let listed: Vec<String> = status_json(server.addr)["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ["file"]);
    let (status, _, _) = request(
        server.addr,
        b"GET /cam/index.m3u8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404);
    // No new session: the reader stopped, it does not reconnect.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(camera.stats.plays.load(Ordering::SeqCst), 1);
}
