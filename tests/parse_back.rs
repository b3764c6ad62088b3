//! What the server sends for HLS and DASH, parsed back by independent readers: playlists
//! by m3u8-rs, the MPD by dash-mpd-core, init segments and chunks box by box by mp4-atom.
//! The samples are matched to the source's frames (matroska-demuxer), so timing is
//! checked against the source, not against the server's own idea of it: with B-frames,
//! decode times are monotonic and never after presentation times, and every sample's
//! presentation time is the source frame's.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mp4_atom::{Any, Decode, Moof, Moov, Prft};

/// One sample read back from a chunk.
#[derive(Debug, Clone)]
struct Sample {
    dts: u64,
    pts: i64,
    duration: u32,
    data: Vec<u8>,
}

/// A segment read back box by box.
#[derive(Debug, Default)]
struct Segment {
    boxes: Vec<String>,
    samples: Vec<Sample>,
    /// (media_time, ntp) of every prft.
    prfts: Vec<(u64, u64)>,
    /// The earliest presentation time of the samples of the chunk each prft precedes.
    chunk_epts: Vec<i64>,
}

fn read_init(bytes: &[u8]) -> Moov {
    let mut buf = bytes;
    let mut moov = None;
    while !buf.is_empty() {
        match Any::decode(&mut buf).expect("init box decodes") {
            Any::Ftyp(_) => {}
            Any::Moov(m) => moov = Some(m),
            other => panic!("unexpected box in init: {other:?}"),
        }
    }
    moov.expect("a moov")
}

fn read_segment(bytes: &[u8], moov: &Moov) -> Segment {
    let trex = moov.mvex.as_ref().expect("mvex").trex[0].clone();
    let mut seg = Segment::default();
    let mut at = 0usize;
    let mut pending_moof: Option<(Moof, usize)> = None;
    while at < bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && at + size <= bytes.len(),
            "box size {size} at {at}"
        );
        let kind = String::from_utf8_lossy(&bytes[at + 4..at + 8]).to_string();
        let body = &bytes[at..at + size];
        match kind.as_str() {
            "styp" => {}
            "prft" => {
                let p = Prft::decode(&mut &body[..]).expect("prft decodes");
                seg.prfts.push((p.media_time, p.ntp_timestamp));
            }
            "moof" => {
                pending_moof = Some((Moof::decode(&mut &body[..]).expect("moof decodes"), at));
            }
            "mdat" => {
                let (moof, moof_at) = pending_moof.take().expect("a moof before the mdat");
                assert_eq!(moof.traf.len(), 1);
                let traf = &moof.traf[0];
                let trun = &traf.trun[0];
                let mut data_at = moof_at + trun.data_offset.unwrap() as usize;
                assert_eq!(data_at, at + 8, "data_offset lands after the mdat header");
                let mut dts = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
                let mut ept = i64::MAX;
                for e in &trun.samples {
                    let duration = e
                        .duration
                        .or(traf.tfhd.default_sample_duration)
                        .unwrap_or(trex.default_sample_duration);
                    let len = e
                        .size
                        .or(traf.tfhd.default_sample_size)
                        .unwrap_or(trex.default_sample_size) as usize;
                    let pts = dts as i64 + e.cts.unwrap_or(0);
                    ept = ept.min(pts);
                    seg.samples.push(Sample {
                        dts,
                        pts,
                        duration,
                        data: bytes[data_at..data_at + len].to_vec(),
                    });
                    data_at += len;
                    dts += u64::from(duration);
                }
                assert_eq!(data_at, at + size, "the mdat holds exactly the samples");
                seg.chunk_epts.push(ept);
            }
            other => panic!("unexpected box {other}"),
        }
        seg.boxes.push(kind);
        at += size;
    }
    seg
}

/// Index of the source frame of `track` whose payload is `data` (it must be unique).
fn source_index(src: &[OFrame], data: &[u8]) -> usize {
    let hits: Vec<usize> = src
        .iter()
        .enumerate()
        .filter(|(_, f)| f.data == data)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "a unique source frame");
    hits[0]
}

/// Every sample is the next source frame in storage (decode) order, and its presentation
/// time lies as far from the first sample's as the source frame's from the first's
/// (within the 1 ms of the source's timestamps). Samples past the end of the file (it
/// loops) are not compared.
fn assert_matches_source(samples: &[Sample], src: &[OFrame], timescale: u32) {
    let first = source_index(src, &samples[0].data);
    let pts0 = samples[0].pts;
    for (k, s) in samples.iter().enumerate() {
        let Some(f) = src.get(first + k) else { break };
        assert_eq!(s.data, f.data, "sample {k} is source frame {}", first + k);
        let ours_ns = (s.pts - pts0) as i128 * 1_000_000_000 / i128::from(timescale);
        let theirs_ns = i128::from(f.ts_ns - src[first].ts_ns);
        assert!(
            (ours_ns - theirs_ns).abs() <= 1_000_000,
            "sample {k}: presentation {ours_ns} ns after the first, source {theirs_ns} ns"
        );
    }
}

#[test]
fn hls_and_dash_read_back_by_independent_parsers() {
    let setup = Setup {
        prefill_s: 12.0,
        ..Setup::default()
    };
    let started_ms = unix_ms();
    let server = start(setup, vec![("live", file_input("h264_aac.mkv", true))]);
    let addr = server.addr;
    wait_for_stream(addr, "live", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    let (_, src) = oracle_file("h264_aac.mkv");
    let video_src: Vec<OFrame> = src.iter().filter(|f| f.track == 0).cloned().collect();
    // B-frames: the source's presentation order differs from its storage order.
    assert!(video_src.windows(2).any(|w| w[1].ts_ns < w[0].ts_ns));

    // The multivariant playlist, as m3u8-rs reads it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let master = loop {
        let body = get_ok(addr, "/live/index.m3u8");
        match m3u8_rs::parse_playlist_res(&body) {
            Ok(m3u8_rs::Playlist::MasterPlaylist(m)) if m.variants[0].bandwidth > 1 => break m,
            Ok(_) => {}
            Err(e) => panic!("m3u8-rs: {e}: {}", String::from_utf8_lossy(&body)),
        }
        assert!(Instant::now() < deadline, "no measured BANDWIDTH");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(master.variants.len(), 1);
    let variant = &master.variants[0];
    assert_eq!(variant.codecs.as_deref(), Some("avc1.64000d,mp4a.40.2"));
    let res = variant.resolution.unwrap();
    assert_eq!((res.width, res.height), (320, 240));
    assert_eq!(variant.frame_rate, Some(25.0));
    assert_eq!(variant.uri, "v0/index.m3u8");
    let audio = &master.alternatives[0];
    assert_eq!(audio.media_type, m3u8_rs::AlternativeMediaType::Audio);
    assert_eq!(Some(&audio.group_id), variant.audio.as_ref());
    assert_eq!(audio.uri.as_deref(), Some("a1/index.m3u8"));

    // Video media playlist: every segment read back; decode times run on without a gap
    // from segment to segment, each EXTINF is its samples' duration.
    // (The 12 s prefill is published within moments: wait for its segments.)
    let media = loop {
        let body = get_ok(addr, "/live/v0/index.m3u8");
        let m3u8_rs::Playlist::MediaPlaylist(media) = m3u8_rs::parse_playlist_res(&body)
            .unwrap_or_else(|e| panic!("m3u8-rs: {e}: {}", String::from_utf8_lossy(&body)))
        else {
            panic!("a media playlist")
        };
        if media.segments.len() >= 4 {
            break media;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(media.target_duration, 2);
    assert!(media.independent_segments);
    let map = media.segments[0].map.as_ref().expect("EXT-X-MAP");
    let moov = read_init(&get_ok(addr, &format!("/live/v0/{}", map.uri)));
    let timescale = moov.trak[0].mdia.mdhd.timescale;
    // Finished resources honour byte ranges, from the same shared buffers.
    let init_path = format!("/live/v0/{}", map.uri);
    let init = get_ok(addr, &init_path);
    let ranged = |range: &str| {
        request(
            addr,
            format!("GET {init_path} HTTP/1.1\r\nHost: t\r\nRange: {range}\r\n\r\n").as_bytes(),
        )
    };
    let (status, head, body) = ranged("bytes=4-11");
    assert_eq!(status, 206, "{head}");
    assert_eq!(&body[..], &init[4..12]);
    assert!(
        head.contains(&format!("Content-Range: bytes 4-11/{}", init.len())),
        "{head}"
    );
    assert!(head.contains("Accept-Ranges: bytes"));
    let (status, _, body) = ranged("bytes=-5");
    assert_eq!((status, &body[..]), (206, &init[init.len() - 5..]));
    let (status, head, body) = ranged(&format!("bytes={}-", init.len()));
    assert_eq!(status, 416, "{head}");
    assert!(body.is_empty());
    assert!(head.contains(&format!("Content-Range: bytes */{}", init.len())));
    let (status, _, body) = ranged("bytes=0-1,4-5");
    assert_eq!(
        (status, body.len()),
        (200, init.len()),
        "several ranges: the whole body"
    );
    // HTTP requires a Date; DASH players may take it as the server's clock.
    let (_, head, _) = request(addr, b"GET /live/v0/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.contains("Cache-Control: no-cache"), "{head}");
    let date = head
        .lines()
        .find_map(|l| l.strip_prefix("Date: "))
        .expect("a Date header");
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    assert_eq!(timescale, 90_000);
    let mut next_dts: Option<u64> = None;
    let mut hls_segments = Vec::new();
    // Program date times are the wall clock: the first frame is dated when it was
    // published less the 12 s of prefill it came with.
    let first = media.segments[0]
        .program_date_time
        .unwrap()
        .timestamp_millis();
    let now = unix_ms();
    assert!(
        (started_ms - 12_000 - 50..=now - 12_000 + 50).contains(&first),
        "first segment dated {} ms before the server started",
        started_ms - first
    );
    for s in &media.segments {
        assert!(s.program_date_time.is_some(), "PDT on {}", s.uri);
        let seg = read_segment(&get_ok(addr, &format!("/live/v0/{}", s.uri)), &moov);
        assert_eq!(seg.boxes[0], "styp", "{:?}", seg.boxes);
        let ticks: u64 = seg.samples.iter().map(|x| u64::from(x.duration)).sum();
        assert!(
            (f64::from(s.duration) - ticks as f64 / 90_000.0).abs() < 0.001,
            "{}: EXTINF {} for {ticks} ticks",
            s.uri,
            s.duration
        );
        for w in seg.samples.windows(2) {
            assert_eq!(w[1].dts, w[0].dts + u64::from(w[0].duration));
        }
        for x in &seg.samples {
            assert!(x.dts as i64 <= x.pts, "DTS {} after PTS {}", x.dts, x.pts);
        }
        if let Some(n) = next_dts {
            assert_eq!(seg.samples[0].dts, n, "{}: decode times continue", s.uri);
        }
        next_dts = Some(
            seg.samples
                .last()
                .map(|x| x.dts + u64::from(x.duration))
                .unwrap(),
        );
        // A prft before every chunk, naming the chunk's earliest presentation time.
        assert_eq!(seg.prfts.len(), seg.chunk_epts.len());
        for ((media_time, ntp), ept) in seg.prfts.iter().zip(&seg.chunk_epts) {
            assert_eq!(*media_time as i64, *ept);
            assert!(*ntp > 0);
        }
        // B-frames: some samples have a positive composition offset.
        assert!(seg.samples.iter().any(|x| x.pts > x.dts as i64));
        assert_matches_source(&seg.samples, &video_src, timescale);
        hls_segments.push(seg);
    }

    // The MPD, as dash-mpd-core reads it: S@t is each segment's earliest presentation
    // time, S@d reaches the next one's, and $Time$ fetches the same bytes HLS serves.
    let (status, head, body) = request(addr, b"GET /live/manifest.mpd HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: application/dash+xml"),
        "{head}"
    );
    let xml = String::from_utf8(body).unwrap();
    let mpd = dash_mpd_core::parse(&xml).unwrap_or_else(|e| panic!("dash-mpd-core: {e}\n{xml}"));
    let problems = dash_mpd_core::check_conformity(&mpd);
    assert!(problems.is_empty(), "{problems:?}\n{xml}");
    assert_eq!(mpd.mpdtype.as_deref(), Some("dynamic"));
    assert!(mpd.availabilityStartTime.is_some());
    let period = &mpd.periods[0];
    assert_eq!(period.adaptations.len(), 2);
    let video = &period.adaptations[0];
    assert_eq!(video.contentType.as_deref(), Some("video"));
    let rep = &video.representations[0];
    assert_eq!(rep.codecs.as_deref(), Some("avc1.64000d"));
    let template = rep.SegmentTemplate.as_ref().expect("SegmentTemplate");
    assert_eq!(template.timescale, Some(90_000));
    let timeline = template.SegmentTimeline.as_ref().expect("SegmentTimeline");
    let mut times = Vec::new();
    let mut t = 0u64;
    for s in &timeline.segments {
        t = s.t.unwrap_or(t);
        for _ in 0..=s.r.unwrap_or(0) {
            times.push((t, s.d));
            t += s.d;
        }
    }
    assert!(times.len() >= 5, "{xml}");
    // No representation has a segment that starts before its Period (GStreamer's
    // dashdemux2 wraps such a start around).
    for a in &period.adaptations {
        let tpl = a.representations[0].SegmentTemplate.as_ref().unwrap();
        let first = tpl.SegmentTimeline.as_ref().unwrap().segments[0].t.unwrap();
        assert!(tpl.presentationTimeOffset.unwrap() <= first, "{xml}");
    }
    let media_template = template.media.as_deref().unwrap();
    let mut checked = 0;
    // The last two listed are the segment being written and the one after it (served
    // chunked, see tests/hls.rs).
    for (k, &(t, d)) in times[..times.len() - 2].iter().enumerate() {
        let path = media_template.replace("$Time$", &t.to_string());
        let seg = read_segment(&get_ok(addr, &format!("/live/{path}")), &moov);
        let ept = seg.samples.iter().map(|x| x.pts).min().unwrap();
        assert_eq!(
            ept as u64, t,
            "S@t is the earliest presentation time of {path}"
        );
        if let Some(&(next_t, _)) = times.get(k + 1) {
            assert_eq!(t + d, next_t, "the timeline has no gap");
        }
        // The same bytes as the HLS segment that starts with the same sample.
        if let Some(h) = hls_segments
            .iter()
            .find(|h| h.samples[0].dts == seg.samples[0].dts)
        {
            assert_eq!(h.samples.len(), seg.samples.len());
            checked += 1;
        }
    }
    assert!(checked >= 2, "HLS and DASH windows overlap");
    // The first presentation time is the keyframe's, later than its decode time.
    let first = &hls_segments[0].samples[0];
    assert!(first.pts > first.dts as i64);
}
