//! HLS answers: the multivariant playlist, media playlists and the CMAF resources, built
//! from a stream's renditions.

use std::fmt::Write;

use bytes::Bytes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::HlsOptions;
use super::http::{HlsResource, query_param};
use crate::stream::hls::{PlaylistSettings, RenditionReport, media_playlist};
use crate::stream::rendition::{Rendition, SegmentData, TimeMatch};
use crate::stream::segment_file::SegmentFile;

/// A finite answer: status, content type, cache policy, body buffers.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: Vec<Bytes>,
    /// The body is this whole memory file: it may go out by `sendfile`.
    pub file: Option<Arc<SegmentFile>>,
}

impl Answer {
    fn text(
        status: u16,
        content_type: &'static str,
        cache_control: &'static str,
        body: String,
    ) -> Self {
        Answer {
            status,
            content_type,
            cache_control,
            body: vec![Bytes::from(body)],
            file: None,
        }
    }

    fn error(status: u16, message: String) -> Self {
        Answer::text(
            status,
            "text/plain; charset=utf-8",
            "no-cache",
            format!("{status}: {message}\n"),
        )
    }

    pub fn error_for(status: u16, message: String) -> Self {
        Answer::error(status, message)
    }

    pub fn playlist(text: String) -> Self {
        Answer::text(200, PLAYLIST_TYPE, PLAYLIST_CACHE, text)
    }

    pub fn mpd(text: String) -> Self {
        Answer::text(200, "application/dash+xml", PLAYLIST_CACHE, text)
    }
}

pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Playlists and the MPD change with every part: a cache must ask again each time.
const PLAYLIST_CACHE: &str = "no-cache";
/// A blocking reload (`_HLS_msn`) answers one client's wait: never stored.
const BLOCKING_PLAYLIST_CACHE: &str = "no-store";
/// Segments, parts and init segments never change once they exist, and their names are
/// never reused, even by a later run (`stream::RunBases`): caches may keep them.
const MEDIA_CACHE: &str = "public, max-age=31536000, immutable";

/// The multivariant playlist: the video rendition(s) as variant streams, audio as an
/// EXT-X-MEDIA rendition group. None until the stream has renditions.
pub fn multivariant(renditions: &[Rendition], url_suffix: &str) -> Option<String> {
    if renditions.is_empty() {
        return None;
    }
    // No EXT-X-INDEPENDENT-SEGMENTS here: a media playlist says it while it is true (a
    // GOP longer than the target duration is cut without a keyframe).
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    let audio: Vec<&Rendition> = renditions.iter().filter(|r| !r.info.video).collect();
    let video: Vec<&Rendition> = renditions.iter().filter(|r| r.info.video).collect();
    for (i, a) in audio.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{}\",DEFAULT={},AUTOSELECT=YES,CHANNELS=\"{}\",URI=\"{}/index.m3u8{url_suffix}\"",
            a.info.id,
            if i == 0 { "YES" } else { "NO" },
            a.info.channels.max(1),
            a.info.id
        );
    }
    let audio_bw = audio.first().map_or(0, |a| bandwidth(a));
    let audio_codec = audio.first().map(|a| a.info.codec_string.clone());
    if video.is_empty() {
        // Audio only: the audio rendition is the variant.
        let a = audio.first()?;
        let _ = writeln!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"\n{}/index.m3u8{url_suffix}",
            audio_bw.max(1),
            a.info.codec_string,
            a.info.id
        );
        return Some(out);
    }
    for v in video {
        let codecs = match &audio_codec {
            Some(a) => format!("{},{a}", v.info.codec_string),
            None => v.info.codec_string.clone(),
        };
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{codecs}\",RESOLUTION={}x{}",
            (bandwidth(v) + audio_bw).max(1),
            v.info.width,
            v.info.height
        );
        if let Some(fps) = v.info.frame_rate {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        if audio_codec.is_some() {
            let _ = write!(out, ",AUDIO=\"audio\"");
        }
        let _ = writeln!(out, "\n{}/index.m3u8{url_suffix}", v.info.id);
    }
    Some(out)
}

/// BANDWIDTH: the peak of complete segments, or, before the first one completes, the
/// rate of what exists so far.
fn bandwidth(r: &Rendition) -> u64 {
    let peak = r.bandwidth_bps();
    if peak > 0 {
        return peak;
    }
    let (bytes, secs) = r.segments().fold((0u64, 0f64), |(b, s), seg| {
        (b + seg.len(), s + seg.duration_s())
    });
    if secs > 0.0 {
        (bytes as f64 * 8.0 / secs) as u64
    } else {
        0
    }
}

/// What a blocked LL-HLS request waits for.
#[derive(Clone, Debug)]
pub enum Want {
    /// A playlist that holds segment `msn` (complete) or its part `part`; without `msn`,
    /// any playlist (a request held only until the target duration is known).
    Playlist {
        msn: Option<u64>,
        part: Option<usize>,
        skip: bool,
    },
    /// A part that does not exist yet (the preload hint, or a client ahead of it).
    Part { msn: u64, part: usize },
    /// The multivariant playlist of a stream that has no renditions yet (its input is
    /// starting, or an on-demand camera is connecting for this very viewer).
    Multivariant,
}

/// How long a first viewer waits for a stream's first segment before a 503.
pub const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(15);

/// A request held in the event loop until a part is published or its deadline passes.
#[derive(Clone, Debug)]
pub struct Waiter {
    pub stream: usize,
    pub rendition: String,
    pub want: Want,
    pub deadline: Instant,
    pub keep_alive: bool,
    pub head_only: bool,
}

impl Waiter {
    /// A request for stream `stream`'s multivariant playlist made before its first
    /// segment: held until the segment exists (an on-demand camera connects for it).
    pub fn first_multivariant(
        stream: usize,
        now: Instant,
        keep_alive: bool,
        head_only: bool,
    ) -> Self {
        Waiter {
            stream,
            rendition: String::new(),
            want: Want::Multivariant,
            deadline: now + FIRST_SEGMENT_WAIT,
            keep_alive,
            head_only,
        }
    }
}

pub enum Outcome {
    Answer(Answer),
    Wait(Waiter),
    /// A DASH segment still being written: sent with chunked transfer, each part as it is
    /// produced, ending when the segment is complete.
    Stream(SegmentStream),
}

/// A segment streamed while it is written (low-latency DASH).
#[derive(Clone, Debug)]
pub struct SegmentStream {
    pub stream: usize,
    pub rendition: String,
    /// The `$Time$` requested, and the segment it turned out to name (see
    /// [`Rendition::resolve_time`]): unknown while that segment has not started.
    pub start_ticks: u64,
    pub msn: Option<u64>,
    /// Parts already queued.
    pub sent_parts: usize,
    /// Whether the response head went out.
    pub started: bool,
    pub deadline: Instant,
    pub keep_alive: bool,
}

/// What a streamed segment sends next.
pub enum StreamStep {
    /// Nothing new yet.
    Wait,
    /// Bytes to queue; `done` when the segment ended with them.
    Send { bytes: Vec<Bytes>, done: bool },
    /// It will not come: answer this (only before anything was sent).
    Fail(Answer),
}

/// Advances a streamed segment: the response head at first, then each new part as an
/// HTTP chunk, then the last chunk once the segment is complete.
pub fn stream_step(renditions: &[Rendition], st: &mut SegmentStream, now: Instant) -> StreamStep {
    let r = renditions.iter().find(|r| r.info.id == st.rendition);
    if st.msn.is_none() {
        match r.map_or(TimeMatch::Never, |r| r.resolve_time(st.start_ticks)) {
            TimeMatch::Segment(msn) => st.msn = Some(msn),
            TimeMatch::Later if now < st.deadline => return StreamStep::Wait,
            TimeMatch::Later => {
                return StreamStep::Fail(Answer::error(
                    503,
                    format!("segment t{} did not start in time", st.start_ticks),
                ));
            }
            TimeMatch::Never => {
                return StreamStep::Fail(Answer::error(
                    404,
                    format!("no segment at t={}", st.start_ticks),
                ));
            }
        }
    }
    let seg = r.zip(st.msn).and_then(|(r, msn)| r.segment(msn));
    let Some(seg) = seg else {
        if !st.started {
            return StreamStep::Fail(Answer::error(
                404,
                format!("segment t{} left the window", st.start_ticks),
            ));
        }
        // It left the window under us: end the body where it is.
        return StreamStep::Send {
            bytes: vec![Bytes::from_static(b"0\r\n\r\n")],
            done: true,
        };
    };
    let mut bytes = Vec::new();
    if !st.started {
        st.started = true;
        bytes.push(Bytes::from(format!(
            "HTTP/1.1 200 OK\r\n{}Content-Type: video/mp4\r\nCache-Control: {MEDIA_CACHE}\r\nTransfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
            super::response::common_headers(),
            if st.keep_alive { "keep-alive" } else { "close" }
        )));
    }
    for part in seg.parts.iter().skip(st.sent_parts) {
        bytes.push(Bytes::from(format!("{:x}\r\n", part.len)));
        bytes.extend(part.buffers.iter().cloned());
        bytes.push(Bytes::from_static(b"\r\n"));
        st.sent_parts += 1;
    }
    let done = seg.complete;
    if done {
        bytes.push(Bytes::from_static(b"0\r\n\r\n"));
    }
    if bytes.is_empty() {
        StreamStep::Wait
    } else {
        StreamStep::Send { bytes, done }
    }
}

fn settings(options: &HlsOptions) -> PlaylistSettings {
    PlaylistSettings {
        target_duration_s: options.target_duration_s,
        part_target_s: options.part_target_s,
        low_latency: options.low_latency,
        url_suffix: options.url_suffix.clone(),
    }
}

fn render(
    renditions: &[Rendition],
    r: &Rendition,
    skip: bool,
    blocking: bool,
    options: &HlsOptions,
) -> Answer {
    let playlist = r.cached_playlist(skip, || {
        let reports: Vec<RenditionReport> = renditions
            .iter()
            .filter(|o| o.info.id != r.info.id)
            .filter_map(|o| {
                let (msn, parts) = o.last_position()?;
                Some(RenditionReport {
                    uri: format!("../{}/index.m3u8{}", o.info.id, options.url_suffix),
                    last_msn: msn,
                    last_part: parts.checked_sub(1),
                })
            })
            .collect();
        media_playlist(
            &settings(options),
            &r.playlist_segments(),
            r.discontinuity_sequence,
            skip,
            r.ended,
            &reports,
        )
    });
    let cache = if blocking {
        BLOCKING_PLAYLIST_CACHE
    } else {
        PLAYLIST_CACHE
    };
    Answer {
        status: 200,
        content_type: PLAYLIST_TYPE,
        cache_control: cache,
        body: vec![playlist.bytes],
        file: playlist.file,
    }
}

fn media(body: Vec<Bytes>) -> Answer {
    Answer {
        status: 200,
        content_type: "video/mp4",
        cache_control: MEDIA_CACHE,
        body,
        file: None,
    }
}

/// A complete segment: its memory file when it has one.
fn segment_answer(segment: &SegmentData) -> Answer {
    Answer {
        file: segment.file.clone(),
        ..media(segment.buffers())
    }
}

/// How long a blocked request may wait: three target durations (then 503).
fn block_limit(options: &HlsOptions) -> Duration {
    Duration::from_secs(3 * u64::from(options.target_duration_s.max(1)))
}

/// The blocking-reload directives of a media playlist request: `_HLS_msn`, `_HLS_part`
/// (only with `_HLS_msn`) and `_HLS_skip`; a malformed one is a 400 answer.
fn directives(query: &str) -> Result<(Option<u64>, Option<usize>, bool), Answer> {
    let skip = matches!(query_param(query, "_HLS_skip"), Some("YES" | "v2"));
    let part = match query_param(query, "_HLS_part").map(str::parse::<usize>) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => return Err(Answer::error(400, "bad _HLS_part".into())),
    };
    match query_param(query, "_HLS_msn") {
        None if part.is_some() => Err(Answer::error(400, "_HLS_part without _HLS_msn".into())),
        None => Ok((None, None, skip)),
        Some(m) => match m.parse::<u64>() {
            Ok(m) => Ok((Some(m), part, skip)),
            Err(_) => Err(Answer::error(400, format!("bad _HLS_msn {m:?}"))),
        },
    }
}

/// Answers a rendition's resource at once, or says what to wait for.
pub fn request(
    renditions: &[Rendition],
    id: &str,
    resource: HlsResource,
    query: &str,
    options: &HlsOptions,
    now: Instant,
) -> Outcome {
    let Some(r) = renditions.iter().find(|r| r.info.id == id) else {
        return Outcome::Answer(Answer::error(404, format!("no rendition {id:?}")));
    };
    let waiter = |want| Waiter {
        stream: 0,
        rendition: id.to_string(),
        want,
        deadline: now + block_limit(options),
        keep_alive: false,
        head_only: false,
    };
    match resource {
        HlsResource::Playlist => {
            // Plain HLS: the directives are not offered, so they are ignored.
            let (msn, part, skip) = if options.low_latency {
                match directives(query) {
                    Ok(d) => d,
                    Err(e) => return Outcome::Answer(e),
                }
            } else {
                (None, None, false)
            };
            if !options.target_known && !r.ended {
                // The first segment (whole GOPs) chooses the target duration: until it
                // is cut, a playlist would state a target later segments might break.
                // The directives still apply once it is known.
                return Outcome::Wait(waiter(Want::Playlist { msn, part, skip }));
            }
            let Some(msn) = msn else {
                return Outcome::Answer(render(renditions, r, skip, false, options));
            };
            // With the stream over, the directives are ignored.
            if r.ended || r.has(msn, part) {
                return Outcome::Answer(render(renditions, r, skip, true, options));
            }
            let last = r.last_position().map_or(0, |(m, _)| m);
            // Advance limit: no further than two segments past the last one.
            if msn > last + 2 {
                return Outcome::Answer(Answer::error(
                    400,
                    format!("_HLS_msn={msn} is beyond the advance limit (last segment {last})"),
                ));
            }
            Outcome::Wait(waiter(Want::Playlist {
                msn: Some(msn),
                part,
                skip,
            }))
        }
        HlsResource::Part(msn, part) => {
            if let Some(p) = r.part(msn, part) {
                return Outcome::Answer(media(p.buffers.clone()));
            }
            // A part that can still come (the preload hint, or a little ahead of it) is
            // held until it exists: a hinted part is never a 404.
            let (last, parts) = r.last_position().unwrap_or((0, 0));
            let can_come = options.low_latency
                && !r.ended
                && (msn > last || (msn == last && part >= parts))
                && msn <= last + 2;
            if can_come {
                Outcome::Wait(waiter(Want::Part { msn, part }))
            } else {
                Outcome::Answer(Answer::error(404, format!("no part {msn}.{part}")))
            }
        }
        HlsResource::SegmentAt(t) => {
            // A complete segment at once; the one being written, or one the MPD lists
            // ahead of it, streamed part by part as it is written.
            let msn = match r.resolve_time(t) {
                TimeMatch::Segment(msn) => {
                    if let Some(seg) = r.segment(msn).filter(|s| s.complete) {
                        return Outcome::Answer(segment_answer(seg));
                    }
                    Some(msn)
                }
                TimeMatch::Later => None,
                TimeMatch::Never => {
                    return Outcome::Answer(Answer::error(404, format!("no segment at t={t}")));
                }
            };
            Outcome::Stream(SegmentStream {
                stream: 0,
                rendition: id.to_string(),
                start_ticks: t,
                msn,
                sent_parts: 0,
                started: false,
                deadline: now + block_limit(options),
                keep_alive: false,
            })
        }
        other => Outcome::Answer(rendition_resource(renditions, id, other, options)),
    }
}

/// The answer to a waiter if what it waits for now exists.
pub fn retry(
    renditions: &[Rendition],
    w: &Waiter,
    options: &HlsOptions,
    _now: Instant,
) -> Option<Answer> {
    if let Want::Multivariant = w.want {
        return multivariant(renditions, &options.url_suffix).map(Answer::playlist);
    }
    let Some(r) = renditions.iter().find(|r| r.info.id == w.rendition) else {
        return Some(Answer::error(
            404,
            format!("no rendition {:?}", w.rendition),
        ));
    };
    match w.want {
        Want::Playlist { msn, part, skip } => (r.ended
            || (options.target_known && msn.is_none_or(|m| r.has(m, part))))
        .then(|| render(renditions, r, skip, msn.is_some(), options)),
        Want::Multivariant => None,
        Want::Part { msn, part } => match r.part(msn, part) {
            Some(p) => Some(media(p.buffers.clone())),
            // Went past it: the segment closed with fewer parts, or the stream ended.
            None if r.ended
                || r.has(msn, None)
                || r.last_position().is_some_and(|(m, _)| m > msn) =>
            {
                Some(Answer::error(404, format!("no part {msn}.{part}")))
            }
            None => None,
        },
    }
}

/// What a waiter gets when its deadline passes.
pub fn timeout_answer(w: &Waiter) -> Answer {
    Answer::error(
        503,
        format!("{:?} did not become available in time", w.want),
    )
}

/// A rendition's resource.
pub fn rendition_resource(
    renditions: &[Rendition],
    id: &str,
    resource: HlsResource,
    options: &HlsOptions,
) -> Answer {
    let Some(r) = renditions.iter().find(|r| r.info.id == id) else {
        return Answer::error(404, format!("no rendition {id:?}"));
    };
    match resource {
        HlsResource::Playlist => render(renditions, r, false, false, options),
        HlsResource::Init(n) => match r.inits.get(&n) {
            Some(b) => media(vec![b.clone()]),
            None => Answer::error(404, format!("no init segment {n}")),
        },
        HlsResource::Segment(msn) => match r.segment(msn).filter(|s| s.complete) {
            Some(s) => segment_answer(s),
            None => Answer::error(404, format!("no complete segment {msn}")),
        },
        HlsResource::Part(msn, part) => match r.part(msn, part) {
            Some(p) => media(p.buffers.clone()),
            None => Answer::error(404, format!("no part {msn}.{part}")),
        },
        HlsResource::SegmentAt(t) => match r.segment_at(t).filter(|s| s.complete) {
            Some(s) => segment_answer(s),
            None => Answer::error(404, format!("no complete segment at t={t}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::rendition::{PartData, RenditionInfo};

    fn rendition() -> Rendition {
        let info = RenditionInfo {
            id: "v0".into(),
            video: true,
            codec_string: "avc1.64001f".into(),
            timescale: 90_000,
            width: 320,
            height: 240,
            frame_rate: Some(25.0),
            sample_rate: 0,
            channels: 0,
        };
        Rendition::new(info, Bytes::from_static(b"init"), 0, 10)
    }

    /// Part `p` of segment `msn`: 200 ms, 10 parts a segment, segment 0 at 90000.
    fn push(r: &mut Rendition, msn: u64, p: u64) {
        let at = 90_000 + (msn - 1000) * 180_000 + p * 18_000;
        r.push_part(
            msn,
            PartData {
                buffers: vec![Bytes::from(format!("{msn}.{p}"))],
                len: 6,
                duration_s: 0.2,
                independent: p == 0,
                start_ticks: at,
                duration_ticks: 18_000,
                presentation_ticks: at,
            },
            p == 0,
            0,
        );
    }

    #[test]
    fn a_playlist_held_for_the_target_duration_keeps_its_directives() {
        let now = Instant::now();
        let mut rs = vec![rendition()];
        for p in 0..3 {
            push(&mut rs[0], 1000, p);
        }
        let unknown = HlsOptions {
            target_known: false,
            ..HlsOptions::default()
        };
        let query = "_HLS_msn=1001&_HLS_part=1&_HLS_skip=YES";
        let Outcome::Wait(w) = request(&rs, "v0", HlsResource::Playlist, query, &unknown, now)
        else {
            panic!("held until the target duration is known");
        };
        assert!(matches!(
            w.want,
            Want::Playlist {
                msn: Some(1001),
                part: Some(1),
                skip: true
            }
        ));
        // A malformed directive is refused at once, target or not.
        let bad = request(
            &rs,
            "v0",
            HlsResource::Playlist,
            "_HLS_part=1",
            &unknown,
            now,
        );
        assert!(matches!(bad, Outcome::Answer(a) if a.status == 400));
        // The target is known, but part 1001.1 does not exist yet: still held.
        let known = HlsOptions::default();
        for p in 3..10 {
            push(&mut rs[0], 1000, p);
        }
        rs[0].close_segment();
        assert!(retry(&rs, &w, &unknown, now).is_none());
        assert!(retry(&rs, &w, &known, now).is_none());
        push(&mut rs[0], 1001, 0);
        push(&mut rs[0], 1001, 1);
        let a = retry(&rs, &w, &known, now).expect("answered once part 1001.1 exists");
        let text = String::from_utf8_lossy(&a.body[0]).to_string();
        assert!(text.contains("part1001.1.m4s"), "{text}");
        assert_eq!(a.cache_control, BLOCKING_PLAYLIST_CACHE);
        // A plain request held for the target is answered as soon as it is known.
        let Outcome::Wait(plain) = request(&rs, "v0", HlsResource::Playlist, "", &unknown, now)
        else {
            panic!("held");
        };
        assert!(retry(&rs, &plain, &unknown, now).is_none());
        assert!(retry(&rs, &plain, &known, now).is_some());
    }

    /// Runs `stream_step` once and returns the bytes it sends, as text.
    fn step(rs: &[Rendition], st: &mut SegmentStream, now: Instant) -> Option<(String, bool)> {
        match stream_step(rs, st, now) {
            StreamStep::Wait => None,
            StreamStep::Send { bytes, done } => Some((
                bytes
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .collect(),
                done,
            )),
            StreamStep::Fail(a) => Some((format!("FAIL {}", a.status), true)),
        }
    }

    #[test]
    fn a_dash_segment_listed_ahead_is_held_until_it_starts_then_streamed() {
        let now = Instant::now();
        let options = HlsOptions::default();
        let mut rs = vec![rendition()];
        for p in 0..10 {
            push(&mut rs[0], 1000, p);
        }
        rs[0].close_segment();
        for p in 0..4 {
            push(&mut rs[0], 1001, p);
        }
        // The MPD lists 1002 at 1001's start + 1000's duration; it starts 2340 ticks
        // later than that (a longer GOP).
        let estimate = 90_000 + 2 * 180_000;
        let Outcome::Stream(mut st) = request(
            &rs,
            "v0",
            HlsResource::SegmentAt(estimate),
            "",
            &options,
            now,
        ) else {
            panic!("held, not answered");
        };
        assert_eq!(st.msn, None);
        assert!(
            step(&rs, &mut st, now).is_none(),
            "nothing before it starts"
        );
        for p in 4..10 {
            push(&mut rs[0], 1001, p);
        }
        rs[0].push_part(
            1001,
            PartData {
                buffers: vec![Bytes::from_static(b"1001.x")],
                len: 6,
                duration_s: 0.026,
                independent: false,
                start_ticks: estimate,
                duration_ticks: 2_340,
                presentation_ticks: estimate,
            },
            false,
            0,
        );
        rs[0].close_segment();
        assert!(
            step(&rs, &mut st, now).is_none(),
            "1001 is not what it asked for"
        );
        let at = estimate + 2_340;
        rs[0].push_part(
            1002,
            PartData {
                buffers: vec![Bytes::from_static(b"1002.0")],
                len: 6,
                duration_s: 0.2,
                independent: true,
                start_ticks: at,
                duration_ticks: 18_000,
                presentation_ticks: at,
            },
            true,
            0,
        );
        let (sent, done) = step(&rs, &mut st, now).expect("1002 began");
        assert_eq!(st.msn, Some(1002));
        assert!(sent.starts_with("HTTP/1.1 200 OK\r\n"), "{sent}");
        assert!(sent.contains("Transfer-Encoding: chunked"));
        assert!(sent.ends_with("6\r\n1002.0\r\n") && !done, "{sent}");
        rs[0].close_segment();
        let (sent, done) = step(&rs, &mut st, now).unwrap();
        assert_eq!(sent, "0\r\n\r\n");
        assert!(done);
        // Its real time is the same segment, whole; far ahead is 404 at once; a wait
        // that outlives its deadline is 503.
        let whole = request(&rs, "v0", HlsResource::SegmentAt(at), "", &options, now);
        assert!(matches!(whole, Outcome::Answer(a) if a.status == 200 && a.body.len() == 1));
        let far = request(
            &rs,
            "v0",
            HlsResource::SegmentAt(at + 90_000 * 60),
            "",
            &options,
            now,
        );
        assert!(matches!(far, Outcome::Answer(a) if a.status == 404));
        let Outcome::Stream(mut next) = request(
            &rs,
            "v0",
            HlsResource::SegmentAt(at + 180_000),
            "",
            &options,
            now,
        ) else {
            panic!("held");
        };
        assert!(step(&rs, &mut next, now).is_none());
        let late = next.deadline + Duration::from_millis(1);
        assert_eq!(step(&rs, &mut next, late).unwrap().0, "FAIL 503");
    }
}
