//! HLS answers: the multivariant playlist, media playlists and the CMAF resources, built
//! from a stream's renditions.

use std::fmt::Write;

use bytes::Bytes;

use super::HlsOptions;
use super::http::HlsResource;
use crate::stream::hls::{PlaylistSettings, media_playlist};
use crate::stream::rendition::Rendition;

/// A finite answer: status, content type, cache policy, body buffers.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: Vec<Bytes>,
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
}

pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Playlists change with every part: a cache may hold one for a moment only.
const PLAYLIST_CACHE: &str = "max-age=1";
/// Segments, parts and init segments never change once they exist.
const MEDIA_CACHE: &str = "max-age=60";

/// The multivariant playlist: the video rendition(s) as variant streams, audio as an
/// EXT-X-MEDIA rendition group. None until the stream has renditions.
pub fn multivariant(renditions: &[Rendition]) -> Option<String> {
    if renditions.is_empty() {
        return None;
    }
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let audio: Vec<&Rendition> = renditions.iter().filter(|r| !r.info.video).collect();
    let video: Vec<&Rendition> = renditions.iter().filter(|r| r.info.video).collect();
    for (i, a) in audio.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{}\",DEFAULT={},AUTOSELECT=YES,CHANNELS=\"{}\",URI=\"{}/index.m3u8\"",
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
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"\n{}/index.m3u8",
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
        let _ = writeln!(out, "\n{}/index.m3u8", v.info.id);
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
        HlsResource::Playlist => {
            let settings = PlaylistSettings {
                target_duration_s: options.target_duration_s,
                part_target_s: options.part_target_s,
                // Blocking playlist reload is not served yet: no LL-HLS tags until it is.
                low_latency: false,
            };
            let body = media_playlist(
                &settings,
                &r.playlist_segments(),
                r.discontinuity_sequence,
                false,
                r.ended,
                &[],
            );
            Answer::text(200, PLAYLIST_TYPE, PLAYLIST_CACHE, body)
        }
        HlsResource::Init(n) => match r.inits.get(&n) {
            Some(b) => Answer {
                status: 200,
                content_type: "video/mp4",
                cache_control: MEDIA_CACHE,
                body: vec![b.clone()],
            },
            None => Answer::error(404, format!("no init segment {n}")),
        },
        HlsResource::Segment(msn) => match r.segment(msn).filter(|s| s.complete) {
            Some(s) => Answer {
                status: 200,
                content_type: "video/mp4",
                cache_control: MEDIA_CACHE,
                body: s.buffers(),
            },
            None => Answer::error(404, format!("no complete segment {msn}")),
        },
        HlsResource::Part(msn, part) => match r.part(msn, part) {
            Some(p) => Answer {
                status: 200,
                content_type: "video/mp4",
                cache_control: MEDIA_CACHE,
                body: p.buffers.clone(),
            },
            None => Answer::error(404, format!("no part {msn}.{part}")),
        },
    }
}
