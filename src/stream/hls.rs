//! HLS media playlists, Low-Latency HLS included (draft-pantos-hls-rfc8216bis): rendered
//! from the segment/part index a rendition keeps. A pure function of that index, so every
//! tag is tested without a server.
//!
//! Written by hand rather than with m3u8-rs: it has no LL-HLS tags (PART, PART-INF,
//! SERVER-CONTROL, PRELOAD-HINT, SKIP, RENDITION-REPORT), drops playlist-level unknown
//! tags, and cannot write anything after the last segment, where the parts of the
//! segment in progress and the preload hint go.

use std::fmt::Write;
use std::sync::Arc;

/// A part (CMAF chunk) as the playlist lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartInfo {
    pub duration_s: f64,
    /// Starts with a sync sample.
    pub independent: bool,
}

/// A segment as the playlist lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentInfo {
    pub msn: u64,
    pub parts: Vec<PartInfo>,
    /// Closed: its duration is final and it gets an EXTINF line.
    pub complete: bool,
    pub duration_s: f64,
    /// Wall-clock time of its first sample, milliseconds since the Unix epoch.
    pub program_date_time_ms: i64,
    /// A discontinuity (new init segment, new timeline) precedes it.
    pub discontinuity: bool,
    /// The init segment its samples need (changes at a discontinuity).
    pub init: u64,
}

/// Playlist-wide settings; they never change during a stream.
#[derive(Clone, Debug)]
pub struct PlaylistSettings {
    pub target_duration_s: u32,
    pub part_target_s: f64,
    pub low_latency: bool,
    /// Appended to every URI (a protected stream's `?token=`).
    pub url_suffix: Arc<str>,
}

/// Another rendition's latest segment and part, for EXT-X-RENDITION-REPORT.
#[derive(Clone, Debug)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: u64,
    pub last_part: Option<usize>,
}

pub fn segment_uri(msn: u64) -> String {
    format!("seg{msn}.m4s")
}

pub fn part_uri(msn: u64, part: usize) -> String {
    format!("part{msn}.{part}.m4s")
}

pub fn init_uri(init: u64) -> String {
    format!("init{init}.mp4")
}

/// CAN-SKIP-UNTIL: six target durations, the least the draft allows.
pub fn skip_until_s(settings: &PlaylistSettings) -> f64 {
    6.0 * f64::from(settings.target_duration_s)
}

/// A Unix time in seconds as a civil UTC date and time: (year, month, day, hour, minute,
/// second, weekday with 0 = Sunday). Days since the epoch to a civil date without a date
/// library (Howard Hinnant's algorithm).
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7);
    (year, month, d, h, m, s, weekday)
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let (year, month, d, h, m, s, _) = civil(ms.div_euclid(1000));
    let millis = ms.rem_euclid(1000);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// An HTTP date (RFC 9110 IMF-fixdate): `Fri, 27 Nov 2026 16:11:52 GMT`.
pub fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, d, h, m, s, weekday) = civil(secs);
    format!(
        "{}, {d:02} {} {year:04} {h:02}:{m:02}:{s:02} GMT",
        DAYS[weekday as usize],
        MONTHS[(month - 1) as usize]
    )
}

/// Renders a media playlist. `segments` are oldest first; the last one may be in
/// progress (not complete). `skip` asks for a delta update (`_HLS_skip=YES`).
pub fn media_playlist(
    settings: &PlaylistSettings,
    segments: &[SegmentInfo],
    discontinuity_sequence: u64,
    skip: bool,
    ended: bool,
    reports: &[RenditionReport],
) -> String {
    let ll = settings.low_latency;
    let mut out = String::with_capacity(256 + segments.len() * 160);
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{}", if ll { 9 } else { 7 });
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", settings.target_duration_s);
    let first_msn = segments.first().map_or(0, |s| s.msn);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    if discontinuity_sequence > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}"
        );
    }
    let independent = segments
        .iter()
        .all(|s| s.parts.first().is_none_or(|p| p.independent));
    if independent {
        let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    }
    if ll {
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={:.1}",
            3.0 * settings.part_target_s,
            skip_until_s(settings)
        );
        let _ = writeln!(
            out,
            "#EXT-X-PART-INF:PART-TARGET={:.5}",
            settings.part_target_s
        );
    }

    // Delta update: complete segments that end more than CAN-SKIP-UNTIL before the end
    // of the playlist are replaced by one EXT-X-SKIP tag.
    let total: f64 = segments.iter().map(|s| s.duration_s).sum();
    let mut skipped = 0;
    if ll && skip && !ended {
        let mut start = 0.0;
        for s in segments {
            if !s.complete || total - (start + s.duration_s) < skip_until_s(settings) {
                break;
            }
            start += s.duration_s;
            skipped += 1;
        }
        // The first listed segment must be able to name its init segment: keep the MAP
        // right by not skipping past a discontinuity.
        if let Some(d) = segments[..skipped].iter().rposition(|s| s.discontinuity) {
            skipped = d;
        }
    }
    let listed = &segments[skipped..];
    let first_init = listed.first().map_or(0, |s| s.init);
    let q = &*settings.url_suffix;
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}{q}\"", init_uri(first_init));
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }

    // Parts are listed for the segments of the last three target durations.
    let parts_from = if ll {
        let horizon = 3.0 * f64::from(settings.target_duration_s);
        let mut acc = 0.0;
        let mut idx = listed.len();
        while idx > 0 && acc < horizon {
            idx -= 1;
            acc += listed[idx].duration_s;
        }
        idx
    } else {
        listed.len()
    };
    let mut current_init = first_init;
    for (i, s) in listed.iter().enumerate() {
        if !s.complete && !ll {
            break;
        }
        if s.discontinuity && i > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if s.init != current_init {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}{q}\"", init_uri(s.init));
            current_init = s.init;
        }
        let _ = writeln!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            rfc3339_ms(s.program_date_time_ms)
        );
        if ll && i >= parts_from {
            for (p, part) in s.parts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}{q}\"{}",
                    part.duration_s,
                    part_uri(s.msn, p),
                    if part.independent {
                        ",INDEPENDENT=YES"
                    } else {
                        ""
                    }
                );
            }
        }
        if s.complete {
            let _ = writeln!(out, "#EXTINF:{:.5},", s.duration_s);
            let _ = writeln!(out, "{}{q}", segment_uri(s.msn));
        }
    }
    if ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    } else if ll {
        let (msn, part) = match segments.last() {
            Some(s) if !s.complete => (s.msn, s.parts.len()),
            Some(s) => (s.msn + 1, 0),
            None => (0, 0),
        };
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}{q}\"",
            part_uri(msn, part)
        );
        for r in reports {
            let _ = write!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                r.uri, r.last_msn
            );
            if let Some(p) = r.last_part {
                let _ = write!(out, ",LAST-PART={p}");
            }
            let _ = writeln!(out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(msn: u64, parts: usize, complete: bool) -> SegmentInfo {
        SegmentInfo {
            msn,
            parts: (0..parts)
                .map(|i| PartInfo {
                    duration_s: 0.2,
                    independent: i == 0,
                })
                .collect(),
            complete,
            duration_s: 0.2 * parts as f64,
            program_date_time_ms: 1_700_000_000_000 + msn as i64 * 2000,
            discontinuity: false,
            init: 0,
        }
    }

    fn ll() -> PlaylistSettings {
        PlaylistSettings {
            target_duration_s: 2,
            part_target_s: 0.2,
            low_latency: true,
            url_suffix: Arc::from(""),
        }
    }

    #[test]
    fn program_date_time_is_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        // RFC 9110's own example, and a leap day.
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn a_low_latency_playlist_has_every_tag_in_place() {
        let segs = vec![seg(5, 10, true), seg(6, 10, true), seg(7, 3, false)];
        let reports = vec![RenditionReport {
            uri: "../a/index.m3u8".into(),
            last_msn: 7,
            last_part: Some(2),
        }];
        let p = media_playlist(&ll(), &segs, 0, false, false, &reports);
        let want = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:5
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.20000
#EXT-X-MAP:URI=\"init0.mp4\"
";
        assert!(p.starts_with(want), "{p}");
        // Segment 5 is older than three target durations before the end? 2+2+0.6 < 6:
        // every segment here lists its parts.
        assert!(p.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part5.0.m4s\",INDEPENDENT=YES\n"));
        assert!(p.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part5.1.m4s\"\n"));
        assert!(p.contains("#EXTINF:2.00000,\nseg6.m4s\n"));
        // The segment in progress: date and parts, no EXTINF.
        let tail = &p[p
            .find("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:34")
            .unwrap()..];
        assert!(!tail.contains("#EXTINF"));
        assert!(tail.contains("part7.2.m4s"));
        assert!(tail.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part7.3.m4s\"\n"));
        assert!(
            tail.ends_with(
                "#EXT-X-RENDITION-REPORT:URI=\"../a/index.m3u8\",LAST-MSN=7,LAST-PART=2\n"
            )
        );
    }

    #[test]
    fn parts_are_listed_only_for_the_last_three_target_durations() {
        let segs: Vec<SegmentInfo> = (0..6).map(|m| seg(m, 10, true)).collect();
        let p = media_playlist(&ll(), &segs, 0, false, false, &[]);
        assert!(!p.contains("part2.0.m4s"));
        assert!(p.contains("part3.0.m4s"));
        assert!(p.contains("#EXTINF:2.00000,\nseg0.m4s\n"));
        assert!(p.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part6.0.m4s\"\n"));
    }

    #[test]
    fn delta_updates_skip_old_segments() {
        let segs: Vec<SegmentInfo> = (0..10).map(|m| seg(m, 10, true)).collect();
        let p = media_playlist(&ll(), &segs, 0, true, false, &[]);
        // 20 s listed; segments ending more than 12 s before the end: 0..=3.
        assert!(p.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"), "{p}");
        assert!(!p.contains("seg3.m4s"));
        assert!(p.contains("seg4.m4s"));
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
    }

    #[test]
    fn every_uri_of_a_protected_stream_carries_its_token() {
        let settings = PlaylistSettings {
            url_suffix: Arc::from("?token=0123456789abcdef"),
            ..ll()
        };
        let segs = vec![seg(5, 10, true), seg(6, 10, true), seg(7, 3, false)];
        let reports = [RenditionReport {
            uri: "../a/index.m3u8?token=0123456789abcdef".into(),
            last_msn: 7,
            last_part: Some(2),
        }];
        let p = media_playlist(&settings, &segs, 0, false, false, &reports);
        let uris: Vec<&str> = p
            .lines()
            .filter_map(|l| match l.split_once("URI=\"") {
                Some((_, rest)) => rest.split('"').next(),
                None => (!l.starts_with('#') && !l.is_empty()).then_some(l),
            })
            .collect();
        assert!(uris.len() > 10, "{p}");
        for uri in uris {
            assert!(uri.ends_with("?token=0123456789abcdef"), "{uri} in\n{p}");
        }
        assert!(p.contains("#EXT-X-MAP:URI=\"init0.mp4?token=0123456789abcdef\"\n"));
        assert!(p.contains(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part7.3.m4s?token=0123456789abcdef\"\n"
        ));
    }

    #[test]
    fn plain_hls_has_no_low_latency_tags_and_no_segment_in_progress() {
        let settings = PlaylistSettings {
            low_latency: false,
            ..ll()
        };
        let segs = vec![seg(0, 10, true), seg(1, 4, false)];
        let p = media_playlist(&settings, &segs, 0, true, false, &[]);
        for tag in [
            "PART",
            "SERVER-CONTROL",
            "PRELOAD-HINT",
            "SKIP",
            "RENDITION-REPORT",
        ] {
            assert!(!p.contains(tag), "{tag} in {p}");
        }
        assert!(p.contains("#EXT-X-VERSION:7\n"));
        assert!(p.ends_with("#EXTINF:2.00000,\nseg0.m4s\n"), "{p}");
    }

    #[test]
    fn discontinuities_and_new_init_segments() {
        let mut segs = vec![seg(0, 10, true), seg(1, 10, true), seg(2, 10, true)];
        segs[1].discontinuity = true;
        segs[1].init = 1;
        segs[2].init = 1;
        let p = media_playlist(&ll(), &segs, 3, false, true, &[]);
        assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:3\n"));
        let d = p.find("#EXT-X-DISCONTINUITY\n").unwrap();
        let map = p.find("#EXT-X-MAP:URI=\"init1.mp4\"").unwrap();
        let date = p[d..].find("#EXT-X-PROGRAM-DATE-TIME").unwrap() + d;
        let part = p.find("part1.0.m4s").unwrap();
        assert!(
            d < map && map < date && date < part,
            "DISCONTINUITY, MAP, PDT before the first PART"
        );
        assert!(p.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!p.contains("PRELOAD-HINT"));
    }
}
