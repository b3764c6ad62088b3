//! The MPEG-DASH manifest: a dynamic MPD over the same CMAF renditions HLS serves, with
//! a SegmentTimeline (`$Time$`) of the real segment durations (and, at its end, the
//! segment being written and the next one, estimated) and the low-latency signalling
//! dash.js needs (availabilityTimeOffset, availabilityTimeComplete="false",
//! ServiceDescription, UTCTiming to our own `/time`).
//!
//! Rendered by hand: dash-mpd 0.21 is now a downloader (~220 crates even with default
//! features off) and no longer exports its MPD types; dash-mpd-core would add ~65 crates
//! for a document this small (../shared/CRATES.md).

use std::fmt::Write;

use super::hls::rfc3339_ms;
use super::rendition::Rendition;
use crate::mux::fmp4::timing::{ns_to_ticks, ticks_to_ns};

/// Manifest settings.
#[derive(Clone, Debug)]
pub struct DashSettings {
    pub segment_s: f64,
    pub part_s: f64,
    pub window: usize,
    /// Appended to the init and media templates (a protected stream's `?token=`).
    pub url_suffix: String,
}

fn duration(s: f64) -> String {
    format!("PT{s:.3}S")
}

fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

/// The MPD, or None before the stream has a segment. `utc_timing_url` is where players
/// get the server's clock (absolute when the request named its host: some players do
/// not resolve a relative one).
pub fn mpd(
    renditions: &[Rendition],
    settings: &DashSettings,
    now_ms: i64,
    utc_timing_url: &str,
) -> Option<String> {
    let lead = renditions.first()?;
    // availabilityStartTime is the wall clock of the stream's earliest presentation, the
    // first segment of whichever rendition starts first (audio may start a frame before
    // video): that media time is the first Period's start in every rendition, so no
    // segment starts before its Period (GStreamer's dashdemux2 computes segment starts
    // as unsigned times and wraps around on one that does).
    let (lead_ticks, lead_ms) = lead.origin?;
    let lead_ns = ticks_to_ns(
        i64::try_from(lead_ticks).unwrap_or(i64::MAX),
        lead.info.timescale,
    );
    let origin_ns = renditions
        .iter()
        .filter_map(|r| {
            let (t, _) = r.origin?;
            Some(ticks_to_ns(
                i64::try_from(t).unwrap_or(i64::MAX),
                r.info.timescale,
            ))
        })
        .min()?;
    let ast_ms = lead_ms - (lead_ns - origin_ns + 500_000) / 1_000_000;
    let latency_ms = (settings.part_s * 5000.0).max(1000.0) as u64;
    let mut out = String::with_capacity(2048);
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019" type="dynamic" availabilityStartTime="{}" publishTime="{}" minimumUpdatePeriod="{}" timeShiftBufferDepth="{}" suggestedPresentationDelay="{}" maxSegmentDuration="{}" minBufferTime="{}">"#,
        rfc3339_ms(ast_ms),
        rfc3339_ms(now_ms),
        // The timeline ends one segment past the one being written, with estimated
        // times: updates every part let players correct an estimate soon after the
        // segment's real start or end is known (dash.js refreshes at most once a
        // second whatever this says).
        duration(settings.part_s.max(0.1)),
        duration(settings.segment_s * settings.window as f64),
        duration(latency_ms as f64 / 1000.0),
        duration(settings.segment_s + 0.5),
        duration(settings.part_s.max(0.5)),
    );
    let _ = writeln!(
        out,
        r#"  <ServiceDescription id="0"><Latency referenceId="0" target="{latency_ms}" min="{}" max="{}"/><PlaybackRate min="0.96" max="1.04"/></ServiceDescription>"#,
        latency_ms / 2,
        latency_ms * 3,
    );
    // One Period per init segment in the window: a new init (new parameter sets, new
    // tracks) cannot continue a Period whose SegmentTemplate names the old one.
    let mut periods: Vec<u64> = Vec::new();
    for s in lead.segments() {
        if periods.last() != Some(&s.init) {
            periods.push(s.init);
        }
    }
    let mut listed = 0;
    for init in periods {
        // Media time runs on across Periods: a Period starts at the earliest presentation
        // time of its first segments, and presentationTimeOffset maps that media time to
        // the Period's start in every rendition.
        let Some(start_ns) = period_start_ns(renditions, init) else {
            // Not every rendition has begun it yet (at most a part behind the lead): its
            // start is not known for sure, and a Period's start must never change.
            break;
        };
        let start_ms = (start_ns - origin_ns).max(0) / 1_000_000;
        let _ = writeln!(
            out,
            r#"  <Period id="{init}" start="PT{}.{:03}S">"#,
            start_ms / 1000,
            start_ms % 1000
        );
        for (i, r) in renditions.iter().enumerate() {
            let pto = ns_to_ticks(origin_ns + start_ms * 1_000_000, r.info.timescale);
            adaptation_set(
                &mut out,
                i,
                r,
                settings,
                init,
                u64::try_from(pto).unwrap_or(0),
            );
        }
        let _ = writeln!(out, "  </Period>");
        listed += 1;
    }
    if listed == 0 {
        return None;
    }
    let _ = writeln!(
        out,
        r#"  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="{}"/>"#,
        xml_attr(utc_timing_url)
    );
    let _ = writeln!(out, "</MPD>");
    Some(out)
}

/// Where the Period of init `init` starts (ns of media time): the earliest first
/// presentation of that init over the renditions. None while a rendition has not begun it
/// and the lead's first segment with it is still being written (a later part of that
/// rendition could still start earlier).
fn period_start_ns(renditions: &[Rendition], init: u64) -> Option<i64> {
    let lead = renditions.first()?;
    let settled = lead
        .segments()
        .find(|s| s.init == init)
        .is_some_and(|s| s.complete);
    let mut start: Option<i64> = None;
    for r in renditions {
        match r.init_starts.get(&init) {
            Some(&t) => {
                let ns = ticks_to_ns(i64::try_from(t).unwrap_or(i64::MAX), r.info.timescale);
                start = Some(start.map_or(ns, |s| s.min(ns)));
            }
            None if !settled => return None,
            None => {}
        }
    }
    start
}

/// One AdaptationSet (one rendition, one Representation) of Period `init`: its
/// segments with that init, then the segment being written and the one after it.
fn adaptation_set(
    out: &mut String,
    i: usize,
    r: &Rendition,
    settings: &DashSettings,
    init: u64,
    pto: u64,
) {
    let info = r.info_of(init);
    let kind = if info.video { "video" } else { "audio" };
    let _ = writeln!(
        out,
        r#"    <AdaptationSet id="{i}" contentType="{kind}" mimeType="{kind}/mp4" segmentAlignment="true" startWithSAP="1">"#
    );
    let mut rep = format!(
        r#"      <Representation id="{}" codecs="{}" bandwidth="{}""#,
        xml_attr(&info.id),
        xml_attr(&info.codec_string),
        r.bandwidth_bps().max(1)
    );
    if info.video {
        let _ = write!(rep, r#" width="{}" height="{}""#, info.width, info.height);
        if let Some(fps) = info.frame_rate {
            let _ = write!(rep, r#" frameRate="{}""#, (fps * 1000.0).round() / 1000.0);
        }
    } else {
        let _ = write!(rep, r#" audioSamplingRate="{}""#, info.sample_rate);
    }
    let _ = writeln!(out, "{rep}>");
    if !info.video {
        let _ = writeln!(
            out,
            r#"        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="{}"/>"#,
            info.channels.max(1)
        );
    }
    // A segment may be fetched this long before it is complete: dash.js then reads
    // its chunks as they are produced (chunked transfer).
    let offset = (settings.segment_s - settings.part_s).max(0.0);
    let _ = writeln!(
        out,
        r#"        <SegmentTemplate timescale="{}" presentationTimeOffset="{pto}" initialization="{}/init{init}.mp4{q}" media="{}/t$Time$.m4s{q}" availabilityTimeOffset="{offset:.3}" availabilityTimeComplete="false">"#,
        info.timescale,
        xml_attr(&info.id),
        xml_attr(&info.id),
        q = xml_attr(&settings.url_suffix),
    );
    let _ = writeln!(out, "          <SegmentTimeline>");
    let listed: Vec<_> = r
        .segments()
        .filter(|s| s.init == init && !s.parts.is_empty())
        .collect();
    let mut times: Vec<(u64, u64)> = Vec::with_capacity(listed.len() + 1);
    for (k, s) in listed.iter().enumerate() {
        // Presentation times: S@t is the segment's earliest presentation time, and
        // S@d reaches the next segment's, so the timeline has no gap or overlap even
        // when the reorder delay (PTS − DTS of the first frame) changed between them.
        let t = s.presentation_ticks();
        let d = match listed.get(k + 1) {
            Some(n) => n.presentation_ticks().saturating_sub(t),
            None if s.complete => s.duration_ticks(),
            // In progress: as long as the one before (a GOP structure repeats).
            None => k
                .checked_sub(1)
                .map(|p| listed[p].duration_ticks())
                .unwrap_or_else(|| (settings.segment_s * f64::from(info.timescale)) as u64),
        };
        times.push((t, if d == 0 { s.duration_ticks().max(1) } else { d }));
    }
    // The timeline always ends one segment after the one being written (or about to
    // be), with estimated times: a player learns of a segment at least one whole segment
    // before it starts, fetches it as soon as availabilityTimeOffset allows and reads its
    // chunks as they are made, whenever its (at most once a second) MPD refreshes fall.
    // The server maps an estimated time to the segment it turns out to be
    // (`Rendition::resolve_time`).
    if let Some(last) = listed.last()
        && !r.ended
        && init == r.current_init
    {
        let ahead = if last.complete { 2 } else { 1 };
        for _ in 0..ahead {
            if let Some(&(t, d)) = times.last() {
                times.push((t + d, d));
            }
        }
    }
    let mut prev: Option<(u64, u64, u32)> = None;
    let mut lines = Vec::new();
    for (t, d) in times {
        match &mut prev {
            Some((pt, pd, repeat)) if *pd == d && *pt + *pd * (u64::from(*repeat) + 1) == t => {
                *repeat += 1;
            }
            _ => {
                if let Some(p) = prev.take() {
                    lines.push(p);
                }
                prev = Some((t, d, 0));
            }
        }
    }
    lines.extend(prev);
    for (t, d, repeat) in lines {
        if repeat > 0 {
            let _ = writeln!(out, r#"            <S t="{t}" d="{d}" r="{repeat}"/>"#);
        } else {
            let _ = writeln!(out, r#"            <S t="{t}" d="{d}"/>"#);
        }
    }
    let _ = writeln!(out, "          </SegmentTimeline>");
    let _ = writeln!(out, "        </SegmentTemplate>");
    let _ = writeln!(out, "      </Representation>");
    let _ = writeln!(out, "    </AdaptationSet>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::rendition::{PartData, RenditionInfo};
    use bytes::Bytes;

    fn info() -> RenditionInfo {
        RenditionInfo {
            id: "v0".into(),
            video: true,
            codec_string: "avc1.64001f".into(),
            timescale: 90_000,
            width: 320,
            height: 240,
            frame_rate: Some(25.0),
            sample_rate: 0,
            channels: 0,
        }
    }

    /// Segments `msns` of 2 s (ten 200 ms parts), media time 1 s + 2 s × msn.
    fn push_segments(r: &mut Rendition, msns: std::ops::Range<u64>) {
        for msn in msns {
            for p in 0..10u64 {
                let start = msn * 180_000 + p * 18_000;
                r.push_part(
                    msn,
                    PartData {
                        buffers: vec![Bytes::from_static(b"x")],
                        len: 1,
                        duration_s: 0.2,
                        independent: p == 0,
                        start_ticks: start + 90_000,
                        duration_ticks: 18_000,
                        presentation_ticks: start + 90_000,
                    },
                    p == 0,
                    1_700_000_001_000 + (msn * 2000 + p * 200) as i64,
                );
            }
        }
    }

    fn rendition() -> Rendition {
        let mut r = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut r, 0..4);
        r
    }

    #[test]
    fn a_new_init_starts_a_new_period_at_its_first_segment() {
        let mut r = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut r, 0..3);
        let mut bigger = info();
        bigger.width = 640;
        bigger.height = 480;
        r.new_init(bigger, Bytes::from_static(b"init1"), 3);
        push_segments(&mut r, 3..6);
        let settings = DashSettings {
            segment_s: 2.0,
            part_s: 0.2,
            window: 10,
            url_suffix: String::new(),
        };
        let m = mpd(&[r], &settings, 1_700_000_012_000, "/time").unwrap();
        let parsed = dash_mpd_core::parse(&m).unwrap();
        assert!(dash_mpd_core::check_conformity(&parsed).is_empty());
        assert_eq!(parsed.periods.len(), 2, "{m}");
        // Period 0: the three segments of init 0, as they were (320x240).
        assert!(m.contains(r#"<Period id="0" start="PT0.000S">"#), "{m}");
        let (p0, p1) = m.split_once(r#"<Period id="3""#).unwrap();
        assert!(p0.contains(r#"initialization="v0/init0.mp4""#));
        assert!(p0.contains(r#"width="320" height="240""#));
        assert!(p0.contains(r#"<S t="90000" d="180000" r="2"/>"#), "{m}");
        // Period 1 starts at its first segment's presentation time (media 7 s, 6 s after
        // the first segment) and maps that media time to its start.
        assert!(p1.starts_with(r#" start="PT6.000S">"#), "{m}");
        assert!(p1.contains(r#"presentationTimeOffset="630000""#));
        assert!(p1.contains(r#"initialization="v0/init3.mp4""#));
        assert!(p1.contains(r#"width="640" height="480""#));
        // Two complete segments, the one in progress and the one after it.
        assert!(p1.contains(r#"<S t="630000" d="180000" r="3"/>"#), "{m}");
    }

    #[test]
    fn a_dynamic_low_latency_mpd_with_a_compact_timeline() {
        let r = [rendition()];
        let settings = DashSettings {
            segment_s: 2.0,
            part_s: 0.2,
            window: 10,
            url_suffix: String::new(),
        };
        let m = mpd(&r, &settings, 1_700_000_009_000, "http://h:1/time").unwrap();
        // The first segment (media time 90000, 1 s) began at wall 1_700_000_001_000:
        // that is availabilityStartTime, and its media time the presentationTimeOffset.
        assert!(
            m.contains(r#"availabilityStartTime="2023-11-14T22:13:21.000Z""#),
            "{m}"
        );
        assert!(m.contains(r#"<Period id="0" start="PT0.000S">"#), "{m}");
        assert!(m.contains(r#"presentationTimeOffset="90000""#), "{m}");
        assert!(m.contains(r#"type="dynamic""#));
        // New segments must be seen soon after they start: updates every part.
        assert!(m.contains(r#"minimumUpdatePeriod="PT0.200S""#));
        // Three complete segments, the one in progress and the one after it, both with
        // the duration of the last complete one.
        assert!(
            m.contains(r#"<S t="90000" d="180000" r="4"/>"#),
            "five segments: {m}"
        );
        assert!(m.contains(r#"availabilityTimeOffset="1.800" availabilityTimeComplete="false""#));
        assert!(m.contains(r#"media="v0/t$Time$.m4s""#));
        assert!(m.contains(
            r#"<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="http://h:1/time"/>"#
        ));
        assert!(m.contains(r#"<Latency referenceId="0" target="1000" min="500" max="3000"/>"#));
        assert!(
            m.contains(r#"codecs="avc1.64001f""#)
                && m.contains(r#"width="320" height="240" frameRate="25""#)
        );
        assert!(m.trim_end().ends_with("</MPD>"));
    }

    fn audio_info() -> RenditionInfo {
        RenditionInfo {
            id: "a1".into(),
            video: false,
            codec_string: "mp4a.40.2".into(),
            timescale: 48_000,
            width: 0,
            height: 0,
            frame_rate: None,
            sample_rate: 48_000,
            channels: 2,
        }
    }

    /// Audio segments replaying the video's cuts, each starting 1008 ticks (21 ms)
    /// before the video segment of the same msn, as AAC frames fall.
    fn push_audio(r: &mut Rendition, msns: std::ops::Range<u64>, last_parts: u64) {
        for msn in msns.clone() {
            let parts = if msn + 1 == msns.end { last_parts } else { 10 };
            for p in 0..parts {
                let start = 48_000 + msn * 96_000 + p * 9_600 - 1_008;
                r.push_part(
                    msn,
                    PartData {
                        buffers: vec![Bytes::from_static(b"a")],
                        len: 1,
                        duration_s: 0.2,
                        independent: true,
                        start_ticks: start,
                        duration_ticks: 9_600,
                        presentation_ticks: start,
                    },
                    p == 0,
                    1_700_000_001_000 - 21 + (msn * 2000 + p * 200) as i64,
                );
            }
        }
    }

    #[test]
    fn a_protected_stream_s_templates_carry_its_token() {
        let r = [rendition()];
        let settings = DashSettings {
            url_suffix: "?token=0123456789abcdef".into(),
            ..settings()
        };
        let m = mpd(&r, &settings, 1_700_000_009_000, "http://h:1/time").unwrap();
        assert!(
            m.contains(r#"initialization="v0/init0.mp4?token=0123456789abcdef""#),
            "{m}"
        );
        assert!(
            m.contains(r#"media="v0/t$Time$.m4s?token=0123456789abcdef""#),
            "{m}"
        );
        let parsed = dash_mpd_core::parse(&m).unwrap();
        assert!(dash_mpd_core::check_conformity(&parsed).is_empty());
    }

    fn settings() -> DashSettings {
        DashSettings {
            segment_s: 2.0,
            part_s: 0.2,
            window: 10,
            url_suffix: String::new(),
        }
    }

    /// `<S>` entries of the AdaptationSet of rendition `id` as (t, d, r).
    fn timeline(m: &str, id: &str) -> Vec<(u64, u64, u64)> {
        let rep = m
            .split("<Representation ")
            .find(|r| r.starts_with(&format!("id=\"{id}\"")))
            .unwrap();
        let rep = &rep[..rep.find("</Representation>").unwrap()];
        let attr = |s: &str, name: &str| -> u64 {
            s.split(&format!(" {name}=\""))
                .nth(1)
                .map_or(0, |v| v.split('"').next().unwrap().parse().unwrap())
        };
        rep.lines()
            .filter(|l| l.contains("<S t="))
            .map(|l| (attr(l, "t"), attr(l, "d"), attr(l, "r")))
            .collect()
    }

    fn pto(m: &str, id: &str) -> u64 {
        let rep = m
            .split("<Representation ")
            .find(|r| r.starts_with(&format!("id=\"{id}\"")))
            .unwrap();
        rep.split("presentationTimeOffset=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_origin_is_the_earliest_presentation_of_any_rendition() {
        let mut v = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        let mut a = Rendition::new(audio_info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut v, 0..3);
        push_audio(&mut a, 0..3, 10);
        let m = mpd(&[v, a], &settings(), 1_700_000_007_000, "/time").unwrap();
        // Audio starts 21 ms before video: that is the Period's start and the wall
        // clock of availabilityStartTime.
        assert!(
            m.contains(r#"availabilityStartTime="2023-11-14T22:13:20.979Z""#),
            "{m}"
        );
        assert_eq!(pto(&m, "a1"), 48_000 - 1_008, "{m}");
        // Video: the same instant in its timescale (21 ms = 1890 ticks before its first).
        assert_eq!(pto(&m, "v0"), 90_000 - 1_890, "{m}");
        // No segment starts before its Period.
        for id in ["v0", "a1"] {
            let first = timeline(&m, id)[0].0;
            assert!(first >= pto(&m, id), "{id}: {m}");
        }
        assert!(dash_mpd_core::check_conformity(&dash_mpd_core::parse(&m).unwrap()).is_empty());
    }

    #[test]
    fn no_mpd_until_every_rendition_has_begun_or_the_first_segment_is_complete() {
        let mut v = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        let a = Rendition::new(audio_info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut v, 0..1);
        let now = 1_700_000_003_000;
        // The video's first segment is being written and the audio has no part yet: an
        // audio part could still start earlier and move the origin.
        assert!(mpd(&[v, a], &settings(), now, "/time").is_none());
        let mut v = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        let mut a = Rendition::new(audio_info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut v, 0..1);
        push_audio(&mut a, 0..1, 1);
        assert!(mpd(&[v, a], &settings(), now, "/time").is_some());
        // A silent audio track does not hold the MPD back once a segment is complete.
        let mut v = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        let a = Rendition::new(audio_info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut v, 0..1);
        v.close_segment();
        let m = mpd(&[v, a], &settings(), now, "/time").unwrap();
        assert!(m.contains(r#"availabilityStartTime="2023-11-14T22:13:21.000Z""#));
    }

    #[test]
    fn the_timeline_ends_one_segment_after_the_one_being_written() {
        // In progress (the last audio segment has 4 of its parts): it and the next one.
        let mut v = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        let mut a = Rendition::new(audio_info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut v, 0..4);
        push_audio(&mut a, 0..4, 4);
        let m = mpd(&[v, a], &settings(), 1_700_000_009_000, "/time").unwrap();
        assert_eq!(timeline(&m, "a1"), vec![(48_000 - 1_008, 96_000, 4)], "{m}");
        // The last segment complete, the next not begun: the next and the one after it.
        let mut v = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut v, 0..3);
        v.close_segment();
        let m = mpd(&[v], &settings(), 1_700_000_009_000, "/time").unwrap();
        assert_eq!(timeline(&m, "v0"), vec![(90_000, 180_000, 4)], "{m}");
        // An ended stream lists what exists.
        let mut v = Rendition::new(info(), Bytes::from_static(b"init"), 0, 10);
        push_segments(&mut v, 0..3);
        v.end();
        let m = mpd(&[v], &settings(), 1_700_000_009_000, "/time").unwrap();
        assert_eq!(timeline(&m, "v0"), vec![(90_000, 180_000, 2)], "{m}");
    }
}
