//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the counters the event
//! loop keeps. Every counter is a plain integer incremented by the loop thread, which
//! owns it: nothing here locks or touches an atomic.

use std::fmt::Write;
use std::time::{Instant, SystemTime};

use super::{Server, StreamSlot, status};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request asked for (`muxcast_requests_total{class}`), by its route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestClass {
    Page = 0,
    Asset,
    Status,
    Metrics,
    Time,
    Live,
    Ingest,
    Playlist,
    Manifest,
    Init,
    Segment,
    Part,
    Redirect,
    Other,
}

const REQUEST_CLASSES: [&str; 14] = [
    "page", "asset", "status", "metrics", "time", "live", "ingest", "playlist", "manifest", "init",
    "segment", "part", "redirect", "other",
];

/// Why a client was refused or closed (`muxcast_rejections_total{cause}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 503 at accept: `max_clients` connections are open.
    TooManyClients = 0,
    /// 503 at accept: `max_clients_per_ip` connections from that address are open.
    PerAddressCap,
    /// 400: a malformed request head, or bad LL-HLS query parameters.
    BadRequest,
    /// 431: a request head over 16 KiB or with too many fields.
    HeaderTooLarge,
    /// 404: no such path, stream, rendition, segment or part.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 409: a second pusher.
    Conflict,
    /// 416.
    RangeNotSatisfiable,
    /// 503 to a held LL-HLS/LL-DASH request: too many held on the stream, or what it
    /// waited for did not come in time.
    Unavailable,
    /// Closed: a request head not complete within `header_timeout`.
    HeaderTimeout,
    /// Closed: a client that took nothing for `client_timeout`.
    ClientTimeout,
    /// 401: a protected stream asked of without its credentials (or its push key).
    Unauthorized,
    /// 403: a client outside the server's `allow` networks.
    Forbidden,
}

const REJECTIONS: [&str; 13] = [
    "too_many_clients",
    "per_address_cap",
    "bad_request",
    "header_too_large",
    "not_found",
    "method_not_allowed",
    "conflict",
    "range_not_satisfiable",
    "unavailable",
    "header_timeout",
    "client_timeout",
    "unauthorized",
    "forbidden",
];

impl Rejection {
    /// The cause of a refusal with this status, where the status alone tells it.
    pub fn of_status(status: u16) -> Option<Rejection> {
        Some(match status {
            400 => Rejection::BadRequest,
            401 => Rejection::Unauthorized,
            403 => Rejection::Forbidden,
            404 => Rejection::NotFound,
            405 => Rejection::MethodNotAllowed,
            409 => Rejection::Conflict,
            416 => Rejection::RangeNotSatisfiable,
            431 => Rejection::HeaderTooLarge,
            503 => Rejection::Unavailable,
            _ => return None,
        })
    }
}

/// HLS/DASH requests naming one stream (`muxcast_stream_requests_total{kind}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Playlist = 0,
    Manifest,
    Init,
    Segment,
    Part,
}

pub const MEDIA_KINDS: [&str; 5] = ["playlist", "manifest", "init", "segment", "part"];

/// Server-wide counters, kept by the loop.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: u64,
    pub bytes_out: u64,
    pub requests: [u64; REQUEST_CLASSES.len()],
    pub rejections: [u64; REJECTIONS.len()],
}

impl Counters {
    pub fn request(&mut self, class: RequestClass) {
        self.requests[class as usize] += 1;
    }

    pub fn reject(&mut self, cause: Rejection) {
        self.rejections[cause as usize] += 1;
    }
}

/// Every state a stream may report; the current one is 1, the others 0 (a state set, so
/// that `muxcast_stream_state{state="live"} == 0` finds a stream that is down).
const STATES: [&str; 7] = [
    "starting",
    "live",
    "waiting-for-pusher",
    "reconnecting",
    "idle",
    "ended",
    "failed",
];

/// One metric family at a time: HELP and TYPE, then its samples.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with one sample per stream.
    fn per_stream<V: std::fmt::Display>(
        &mut self,
        streams: &[&StreamSlot],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&StreamSlot) -> V,
    ) {
        self.family(name, kind, help);
        for s in streams {
            self.sample(name, &[("stream", &s.name)], value(s));
        }
    }
}

/// A label value: backslash, double quote and line feed escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

pub(super) fn render(server: &Server, now: Instant) -> String {
    // Removed streams (a configuration reload) are no longer reported.
    let streams: Vec<&StreamSlot> = server.active_streams().collect();
    let streams = &streams[..];
    let mut o = Out {
        text: String::with_capacity(4096 + streams.len() * 3072),
    };
    o.family(
        "muxcast_build_info",
        "gauge",
        "The muxcast version serving (always 1).",
    );
    o.sample(
        "muxcast_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        - now.duration_since(server.started).as_secs_f64();
    o.family(
        "muxcast_start_time_seconds",
        "gauge",
        "When this server started, in seconds since the Unix epoch.",
    );
    o.sample(
        "muxcast_start_time_seconds",
        &[],
        format!("{started_unix:.3}"),
    );
    o.family(
        "muxcast_connections",
        "gauge",
        "Client connections open now (the one asking for this included).",
    );
    o.sample("muxcast_connections", &[], server.conns.len());
    o.family(
        "muxcast_connections_accepted_total",
        "counter",
        "Client connections accepted (those refused at once are not).",
    );
    o.sample(
        "muxcast_connections_accepted_total",
        &[],
        server.counters.accepted,
    );
    o.family(
        "muxcast_bytes_sent_total",
        "counter",
        "Bytes written to clients: live MKV, HLS, DASH, pages and answers, heads included.",
    );
    o.sample("muxcast_bytes_sent_total", &[], server.counters.bytes_out);
    o.family(
        "muxcast_gops_skipped_total",
        "counter",
        "GOPs that slow live-MKV viewers skipped to stay within their queue (all streams).",
    );
    // Every stream's, removed ones too: a counter never goes back.
    let skipped: u64 = server.streams.iter().map(|s| s.stats.gops_skipped).sum();
    o.sample("muxcast_gops_skipped_total", &[], skipped);
    o.family(
        "muxcast_requests_total",
        "counter",
        "Requests whose head was read, by what they asked for.",
    );
    for (class, n) in REQUEST_CLASSES.iter().zip(server.counters.requests) {
        o.sample("muxcast_requests_total", &[("class", class)], n);
    }
    o.family(
        "muxcast_rejections_total",
        "counter",
        "Clients refused or closed, by cause: 503 at accept (too_many_clients, per_address_cap), \
         400, 431, 404, 405, 409, 416, 503 to a held LL-HLS/DASH request (unavailable), and \
         connections closed for the header or client timeout.",
    );
    for (cause, n) in REJECTIONS.iter().zip(server.counters.rejections) {
        o.sample("muxcast_rejections_total", &[("cause", cause)], n);
    }

    o.family(
        "muxcast_stream_info",
        "gauge",
        "A configured stream and its input (always 1).",
    );
    for s in streams {
        o.sample(
            "muxcast_stream_info",
            &[("stream", &s.name), ("input", &s.input)],
            1,
        );
    }
    o.family(
        "muxcast_stream_state",
        "gauge",
        "The input's state: 1 for the current one, 0 for the others.",
    );
    for s in streams {
        let current = status::state_label(s);
        for state in STATES {
            o.sample(
                "muxcast_stream_state",
                &[("stream", &s.name), ("state", state)],
                u8::from(state == current),
            );
        }
        if !STATES.contains(&current) {
            o.sample(
                "muxcast_stream_state",
                &[("stream", &s.name), ("state", current)],
                1,
            );
        }
    }
    o.per_stream(
        streams,
        "muxcast_stream_ingest_bits_per_second",
        "gauge",
        "Ingest bitrate (live-MKV bytes made of the input) over the last ~5 s; 0 after 10 s without input.",
        |s| s.stats.ingest_bps(now),
    );
    o.per_stream(
        streams,
        "muxcast_stream_ingest_bytes_total",
        "counter",
        "Live-MKV bytes made of the input's frames.",
        |s| s.stats.bytes_in,
    );
    o.per_stream(
        streams,
        "muxcast_stream_frames_total",
        "counter",
        "Frames received from the input (every track).",
        |s| s.stats.frames,
    );
    o.per_stream(
        streams,
        "muxcast_stream_reconnects_total",
        "counter",
        "Reconnects scheduled after the input (HTTP pull, RTSP) ended or failed to connect.",
        |s| s.stats.reconnects,
    );
    o.family(
        "muxcast_stream_segments_total",
        "counter",
        "HLS/DASH segments published, per rendition.",
    );
    for s in streams {
        for (rendition, n) in &s.stats.segments {
            o.sample(
                "muxcast_stream_segments_total",
                &[("stream", &s.name), ("rendition", rendition)],
                n,
            );
        }
    }
    o.per_stream(
        streams,
        "muxcast_stream_viewers",
        "gauge",
        "Live MKV/WebM viewers connected now.",
        |s| s.subscribers.len(),
    );
    o.per_stream(
        streams,
        "muxcast_stream_viewers_total",
        "counter",
        "Live MKV/WebM viewers that connected.",
        |s| s.stats.clients_total,
    );
    o.family(
        "muxcast_stream_requests_total",
        "counter",
        "HLS/DASH requests naming the stream, by resource.",
    );
    for s in streams {
        for (kind, n) in MEDIA_KINDS.iter().zip(s.stats.requests) {
            o.sample(
                "muxcast_stream_requests_total",
                &[("stream", &s.name), ("kind", kind)],
                n,
            );
        }
    }
    o.per_stream(
        streams,
        "muxcast_stream_held_requests",
        "gauge",
        "LL-HLS/LL-DASH requests held now until their part is published.",
        |s| s.waiters.len(),
    );
    o.per_stream(
        streams,
        "muxcast_stream_live_bytes_sent_total",
        "counter",
        "Bytes written to the stream's live MKV/WebM viewers.",
        |s| s.stats.bytes_sent,
    );
    o.per_stream(
        streams,
        "muxcast_stream_gops_skipped_total",
        "counter",
        "GOPs the stream's slow live-MKV viewers skipped.",
        |s| s.stats.gops_skipped,
    );
    o.per_stream(
        streams,
        "muxcast_stream_window_bytes",
        "gauge",
        "Bytes of live MKV held in the stream's window.",
        |s| s.log.window_bytes(),
    );
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn tables_match_their_enums() {
        assert_eq!(REQUEST_CLASSES[RequestClass::Other as usize], "other");
        assert_eq!(REQUEST_CLASSES[RequestClass::Part as usize], "part");
        assert_eq!(
            REJECTIONS[Rejection::ClientTimeout as usize],
            "client_timeout"
        );
        assert_eq!(REJECTIONS[Rejection::Unavailable as usize], "unavailable");
        assert_eq!(MEDIA_KINDS[MediaKind::Part as usize], "part");
        for state in [
            crate::stream::InputState::Starting,
            crate::stream::InputState::Live,
            crate::stream::InputState::WaitingForPusher,
            crate::stream::InputState::Reconnecting(String::new()),
            crate::stream::InputState::Idle,
        ] {
            assert!(STATES.contains(&state.label()), "{state:?}");
        }
    }
}
