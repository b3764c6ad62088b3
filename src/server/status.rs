//! `GET /status.json`: what each stream is doing and who watches it.

use std::time::Instant;

use serde_json::{Value, json};

use super::StreamSlot;
use crate::media::TrackKind;

pub(super) fn render<'a>(
    streams: impl Iterator<Item = &'a StreamSlot>,
    started: Instant,
    connections: usize,
) -> String {
    let list: Vec<Value> = streams.map(stream_json).collect();
    let doc = json!({
        "server": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": started.elapsed().as_secs(),
            "connections": connections,
        },
        "streams": list,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

fn stream_json(s: &StreamSlot) -> Value {
    let tracks: Vec<Value> = s
        .log
        .headers
        .as_ref()
        .map(|h| {
            h.tracks
                .iter()
                .map(|t| match t.kind() {
                    TrackKind::Video => json!({
                        "kind": "video",
                        "codec": t.codec.name(),
                        "codec_id": t.codec_id,
                        "width": t.video.as_ref().map(|v| v.width),
                        "height": t.video.as_ref().map(|v| v.height),
                    }),
                    TrackKind::Audio => json!({
                        "kind": "audio",
                        "codec": t.codec.name(),
                        "codec_id": t.codec_id,
                        "sample_rate": t.audio.as_ref().map(|a| a.sample_rate),
                        "channels": t.audio.as_ref().map(|a| a.channels),
                    }),
                })
                .collect()
        })
        .unwrap_or_default();
    let state = state_label(s);
    let detail = match (&s.error, &s.state) {
        (Some(e), _) => Some(e.clone()),
        (None, crate::stream::InputState::Reconnecting(why)) => Some(why.clone()),
        _ => None,
    };
    json!({
        "name": s.name,
        "input": s.input,
        "state": state,
        "detail": detail,
        "tracks": tracks,
        "bitrate_bps": s.stats.ingest_bps(Instant::now()),
        "bytes_in": s.stats.bytes_in,
        "gops_held": s.log.gops_held(),
        "window_bytes": s.log.window_bytes(),
        "uptime_s": s.live_since.map(|t| t.elapsed().as_secs()),
        "clients": s.subscribers.len(),
        "clients_total": s.stats.clients_total,
        "bytes_sent": s.stats.bytes_sent,
        "gops_skipped": s.stats.gops_skipped,
        "frames": s.stats.frames,
        "reconnects": s.stats.reconnects,
        "segments": s.stats.segments.iter().map(|(_, n)| n).max().copied().unwrap_or(0),
        "http_requests": s.stats.requests.iter().sum::<u64>(),
        // Readers need credentials (`read_token` or Basic); pushers a key.
        "read_protected": s.access.read.is_some(),
        "push_protected": s.access.push_key.is_some(),
        // What the web page can play: HLS (and DASH) once renditions exist, live WebM
        // when every track is a WebM codec.
        "hls": !s.renditions.is_empty(),
        "webm": s.log.headers.as_ref().is_some_and(|h| h.webm.is_some()),
    })
}

/// The state shown for a stream: its input's, or how it ended.
pub(super) fn state_label(s: &StreamSlot) -> &'static str {
    if s.over {
        if s.error.is_some() { "failed" } else { "ended" }
    } else {
        s.state.label()
    }
}
