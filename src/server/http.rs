//! HTTP/1.1 request parsing (with `httparse`) and routing: pure functions of bytes, so they
//! are tested and fuzzed without sockets.

pub use crate::ingest::body::BodyFraming;

use super::access::Secret;

/// Requests whose header block grows past this get 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Put,
    Post,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    pub query: String,
    /// Bytes of the request line and headers (the body starts after them).
    pub header_len: usize,
    pub keep_alive: bool,
    pub body: BodyFraming,
    pub expect_continue: bool,
    /// The Host header when it is a plausible host[:port] (used to build absolute URLs).
    pub host: Option<String>,
    /// The Range header, as sent.
    pub range: Option<String>,
    /// Whether a gzip-coded body is acceptable: Accept-Encoding names gzip (or `*`) with a
    /// non-zero weight, or is absent (no preference, RFC 9110 §12.5.3).
    pub accepts_gzip: bool,
    /// The Authorization header (kept as a secret: `Debug` does not show it).
    pub authorization: Option<Secret>,
}

/// Whether an Accept-Encoding value accepts gzip.
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut params = item.split(';');
        let coding = params.next().unwrap_or("").trim();
        let refused = params.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().map_or(true, |q| q <= 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// A Host header value safe to put into a URL and an XML attribute.
fn plausible_host(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// Why a request could not be parsed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request header block larger than {MAX_HEADER_BYTES} bytes")]
    TooLarge,
}

/// Parses a request head from `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooLarge),
        Err(e) => return Err(ParseError::Malformed(e.to_string())),
    };
    let header_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() > MAX_HEADER_BYTES => {
            return Err(ParseError::TooLarge);
        }
        httparse::Status::Partial => return Ok(None),
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(ParseError::TooLarge);
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("");
    let version = req.version.unwrap_or(0);
    let mut keep_alive = version >= 1;
    let mut body = BodyFraming::None;
    let mut expect_continue = false;
    let mut host = None;
    let mut range = None;
    let mut gzip = None;
    let mut authorization = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| ParseError::Malformed(format!("header {} is not text", h.name)))?
            .trim();
        if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| ParseError::Malformed(format!("bad Content-Length {value:?}")))?;
            if body == BodyFraming::Chunked {
                return Err(ParseError::Malformed(
                    "both Content-Length and chunked".into(),
                ));
            }
            if matches!(body, BodyFraming::Length(m) if m != n) {
                return Err(ParseError::Malformed("conflicting Content-Length".into()));
            }
            body = BodyFraming::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !value
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
            {
                return Err(ParseError::Malformed(format!(
                    "unsupported Transfer-Encoding {value:?}"
                )));
            }
            if matches!(body, BodyFraming::Length(_)) {
                return Err(ParseError::Malformed(
                    "both Content-Length and chunked".into(),
                ));
            }
            body = BodyFraming::Chunked;
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("host") {
            host = plausible_host(value).then(|| value.to_string());
        } else if h.name.eq_ignore_ascii_case("range") {
            range = Some(value.to_string());
        } else if h.name.eq_ignore_ascii_case("accept-encoding") {
            gzip = Some(gzip.unwrap_or(false) || accepts_gzip(value));
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(Secret::new(value.to_string()));
        }
    }
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    Ok(Some(Request {
        method,
        path: raw_path.to_string(),
        query: query.to_string(),
        header_len,
        keep_alive,
        body,
        expect_continue,
        host,
        range,
        accepts_gzip: gzip.unwrap_or(true),
        authorization,
    }))
}

/// Decodes %XX escapes; None for bad escapes, non-UTF-8 results or NUL bytes.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// What a stream name may look like: no separators, no dot-segments.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/`: the web page listing the streams, with a player each.
    Page,
    /// `/assets/hls-VERSION.min.js`: the embedded hls.js.
    HlsJs,
    /// `/metrics`: Prometheus text exposition.
    Metrics,
    Status,
    LiveMkv {
        stream: String,
        webm: bool,
    },
    Ingest {
        stream: String,
    },
    /// `/NAME/index.m3u8`: the multivariant playlist.
    HlsMultivariant {
        stream: String,
    },
    /// `/NAME/hls`: the seed's short form, redirected to the multivariant playlist.
    HlsRedirect {
        stream: String,
    },
    /// `/NAME/manifest.mpd`: the DASH manifest.
    DashManifest {
        stream: String,
    },
    /// `/NAME/dash`: the seed's short form, redirected to the manifest.
    DashRedirect {
        stream: String,
    },
    /// `/time`: the server's clock, for DASH players' UTCTiming.
    Time,
    /// `/NAME/R/...`: a rendition's media playlist, init segment, segment or part.
    HlsRendition {
        stream: String,
        rendition: String,
        resource: HlsResource,
    },
    NotFound,
}

impl Route {
    /// The stream a request is for, and whether it pushes to it (else it reads).
    pub fn stream(&self) -> Option<(&str, bool)> {
        match self {
            Route::Ingest { stream } => Some((stream, true)),
            Route::LiveMkv { stream, .. }
            | Route::HlsMultivariant { stream }
            | Route::HlsRedirect { stream }
            | Route::DashManifest { stream }
            | Route::DashRedirect { stream }
            | Route::HlsRendition { stream, .. } => Some((stream, false)),
            Route::Page | Route::HlsJs | Route::Metrics | Route::Status | Route::Time => None,
            Route::NotFound => None,
        }
    }
}

/// A resource of one rendition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HlsResource {
    Playlist,
    Init(u64),
    Segment(u64),
    Part(u64, usize),
    /// A segment by its start time in the rendition's timescale (DASH `$Time$`).
    SegmentAt(u64),
}

impl HlsResource {
    fn parse(leaf: &str) -> Option<HlsResource> {
        if leaf == "index.m3u8" {
            return Some(HlsResource::Playlist);
        }
        if let Some(n) = leaf
            .strip_prefix("init")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            return digits(n).map(HlsResource::Init);
        }
        if let Some(n) = leaf
            .strip_prefix("seg")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            return digits(n).map(HlsResource::Segment);
        }
        if let Some(n) = leaf.strip_prefix('t').and_then(|r| r.strip_suffix(".m4s")) {
            return digits(n).map(HlsResource::SegmentAt);
        }
        let rest = leaf.strip_prefix("part")?.strip_suffix(".m4s")?;
        let (msn, part) = rest.split_once('.')?;
        Some(HlsResource::Part(digits(msn)?, digits(part)?))
    }
}

/// A plain decimal number: no sign, no spaces, at most 19 digits.
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The value of `key` in a query string (`a=1&b=2`), undecoded.
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Routes a path as sent. It is split on `/` first and each segment decoded after, so an
/// encoded slash is data, never a separator. Anything that is not exactly one of ours is
/// NotFound: there is no file system behind these paths, so `..` or encoded tricks can
/// only miss. An undecodable path names nothing (404), it is not a bad request.
pub fn route(raw_path: &str) -> Route {
    let Some(rest) = raw_path.strip_prefix('/') else {
        return Route::NotFound;
    };
    let segments: Option<Vec<String>> = rest.split('/').map(percent_decode).collect();
    let Some(segments) = segments else {
        return Route::NotFound;
    };
    if segments.iter().any(|s| s.contains('/')) {
        return Route::NotFound;
    }
    let (name, leaf) = match segments.as_slice() {
        [only] if only.is_empty() => return Route::Page,
        [only] if only == "status.json" => return Route::Status,
        [only] if only == "metrics" => return Route::Metrics,
        [only] if only == "time" => return Route::Time,
        [dir, leaf] if dir == "assets" && leaf == super::page::HLS_JS_FILE => {
            return Route::HlsJs;
        }
        [name, leaf] => (name.as_str(), leaf.as_str()),
        [name, rendition, leaf] => {
            let ok = valid_stream_name(name)
                && valid_stream_name(rendition)
                && rendition.bytes().all(|b| b.is_ascii_alphanumeric());
            return match (ok, HlsResource::parse(leaf)) {
                (true, Some(resource)) => Route::HlsRendition {
                    stream: name.clone(),
                    rendition: rendition.clone(),
                    resource,
                },
                _ => Route::NotFound,
            };
        }
        _ => return Route::NotFound,
    };
    if !valid_stream_name(name) {
        return Route::NotFound;
    }
    let stream = name.to_string();
    match leaf {
        "live.mkv" | "mkv" => Route::LiveMkv {
            stream,
            webm: false,
        },
        "live.webm" | "webm" => Route::LiveMkv { stream, webm: true },
        "ingest" => Route::Ingest { stream },
        "index.m3u8" => Route::HlsMultivariant { stream },
        "hls" => Route::HlsRedirect { stream },
        "manifest.mpd" => Route::DashManifest { stream },
        "dash" => Route::DashRedirect { stream },
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_get_with_keep_alive_defaults() {
        let r = parse_request(b"GET /live/live.mkv?x=1 HTTP/1.1\r\nHost: a\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/live/live.mkv");
        assert_eq!(r.query, "x=1");
        assert!(r.keep_alive);
        assert_eq!(r.header_len, 44);
        let r = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn incomplete_then_too_large() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEADER_BYTES + 10, b'a');
        assert_eq!(parse_request(&big), Err(ParseError::TooLarge));
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert!(matches!(
            parse_request(b"\x00\x01garbage\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"PUT /a/ingest HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn body_framing() {
        let r = parse_request(
            b"PUT /a/ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, BodyFraming::Chunked);
        assert!(r.expect_continue);
        let r = parse_request(b"POST /a/ingest HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyFraming::Length(12));
    }

    #[test]
    fn hls_routes_and_query_parameters() {
        assert_eq!(
            route("/cam/v0/part12.3.m4s"),
            Route::HlsRendition {
                stream: "cam".into(),
                rendition: "v0".into(),
                resource: HlsResource::Part(12, 3)
            }
        );
        assert_eq!(
            route("/cam/a1/seg7.m4s"),
            Route::HlsRendition {
                stream: "cam".into(),
                rendition: "a1".into(),
                resource: HlsResource::Segment(7)
            }
        );
        assert_eq!(
            route("/cam/index.m3u8"),
            Route::HlsMultivariant {
                stream: "cam".into()
            }
        );
        assert_eq!(
            route("/cam/a1/t141200.m4s"),
            Route::HlsRendition {
                stream: "cam".into(),
                rendition: "a1".into(),
                resource: HlsResource::SegmentAt(141_200)
            }
        );
        assert_eq!(
            route("/cam/manifest.mpd"),
            Route::DashManifest {
                stream: "cam".into()
            }
        );
        assert_eq!(route("/time"), Route::Time);
        for bad in [
            "/cam/v0/seg-1.m4s",
            "/cam/v0/seg+1.m4s",
            "/cam/v0/part1.m4s",
            "/cam/../seg1.m4s",
            "/cam/v.0/seg1.m4s",
            "/cam/v0/seg99999999999999999999.m4s",
        ] {
            assert_eq!(route(bad), Route::NotFound, "{bad}");
        }
        assert_eq!(
            query_param("_HLS_msn=5&_HLS_part=2", "_HLS_part"),
            Some("2")
        );
        assert_eq!(query_param("_HLS_skip=YES", "_HLS_msn"), None);
    }

    #[test]
    fn page_metrics_and_asset_routes() {
        assert_eq!(route("/"), Route::Page);
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/assets/hls-1.7.4.min.js"), Route::HlsJs);
        assert_eq!(route("/assets/hls.min.js"), Route::NotFound);
        assert_eq!(route("/assets/../assets/hls-1.7.4.min.js"), Route::NotFound);
        // A stream may still be named like a page path.
        assert_eq!(
            route("/assets/live.mkv"),
            Route::LiveMkv {
                stream: "assets".into(),
                webm: false
            }
        );
        assert_eq!(
            route("/metrics/index.m3u8"),
            Route::HlsMultivariant {
                stream: "metrics".into()
            }
        );
    }

    #[test]
    fn accept_encoding() {
        let gz = |v: Option<&str>| {
            let head = match v {
                Some(v) => format!("GET / HTTP/1.1\r\nAccept-Encoding: {v}\r\n\r\n"),
                None => "GET / HTTP/1.1\r\n\r\n".to_string(),
            };
            parse_request(head.as_bytes())
                .unwrap()
                .unwrap()
                .accepts_gzip
        };
        assert!(gz(None));
        assert!(gz(Some("gzip, deflate, br, zstd")));
        assert!(gz(Some("br;q=1.0, GZIP;q=0.5")));
        assert!(gz(Some("*")));
        assert!(!gz(Some("identity")));
        assert!(!gz(Some("gzip;q=0")));
        assert!(!gz(Some("gzip;q=0.000, br")));
        assert!(!gz(Some("")));
    }

    #[test]
    fn routes_and_path_tricks() {
        assert_eq!(route("/status.json"), Route::Status);
        assert_eq!(
            route("/cam1/live.mkv"),
            Route::LiveMkv {
                stream: "cam1".into(),
                webm: false
            }
        );
        assert_eq!(
            route("/cam1/mkv"),
            Route::LiveMkv {
                stream: "cam1".into(),
                webm: false
            }
        );
        assert_eq!(
            route("/cam1/live.webm"),
            Route::LiveMkv {
                stream: "cam1".into(),
                webm: true
            }
        );
        for bad in [
            "/../etc/passwd",
            "/../live.mkv",
            "/./live.mkv",
            "/a/b/live.mkv",
            "/a/../a/live.mkv",
            "//live.mkv",
            "live/live.mkv",
            "/a\\b/live.mkv",
        ] {
            assert_eq!(route(bad), Route::NotFound, "{bad}");
        }
        for raw in [
            "/%2e%2e/live.mkv",
            "/a%2f..%2fb/live.mkv",
            "/live%2flive.mkv",
            "/live%2Flive.mkv",
            "/%zz/live.mkv",
        ] {
            assert_eq!(route(raw), Route::NotFound, "{raw}");
        }
        assert_eq!(
            route("/c%61m/live.mkv"),
            Route::LiveMkv {
                stream: "cam".into(),
                webm: false
            }
        );
        assert_eq!(route("/status%2ejson"), Route::Status);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%00"), None);
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
    }
}
