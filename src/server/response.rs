//! Response heads and small bodies.

use bytes::Bytes;

const COMMON: &str =
    "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: Date\r\nServer: muxcast\r\n";

/// The headers every response carries: CORS, Server, and Date (HTTP requires it, and
/// DASH players fall back on it as a clock).
pub fn common_headers() -> String {
    let mut out = String::with_capacity(160);
    push_common_headers(&mut out);
    out
}

/// Appends [`common_headers`] to `out`. The date is formatted once a second.
pub fn push_common_headers(out: &mut String) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(i64, String)> = const { RefCell::new((-1, String::new())) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != now {
            *cached = (now, crate::stream::hls::http_date(now));
        }
        out.push_str(COMMON);
        out.push_str("Date: ");
        out.push_str(&cached.1);
        out.push_str("\r\n");
    })
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response with a text or JSON body. With `head_only`, the body is left out but
/// its length is still announced, as HEAD requires.
pub fn finite(
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
    extra: &str,
) -> Bytes {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\n{}Content-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: {}\r\n{extra}\r\n",
        reason(status),
        common_headers(),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    Bytes::from(out)
}

/// The head of a finite response whose body is sent separately; `extra` is more header
/// lines, each ending in CRLF.
pub fn head(
    status: u16,
    content_type: &str,
    len: usize,
    cache_control: &str,
    keep_alive: bool,
    extra: &str,
) -> Bytes {
    use std::fmt::Write;
    // One allocation per head: a head goes out with every request.
    let mut out = String::with_capacity(384 + extra.len());
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    push_common_headers(&mut out);
    let _ = write!(
        out,
        "Content-Type: {content_type}\r\nContent-Length: {len}\r\nCache-Control: {cache_control}\r\n{extra}Connection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" },
    );
    Bytes::from(out)
}

/// A plain-text error with the reason in the body.
pub fn error(status: u16, message: &str, keep_alive: bool, head_only: bool) -> Bytes {
    let body = format!("{status} {}: {message}\n", reason(status));
    finite(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        keep_alive,
        head_only,
        "",
    )
}

/// The head of an endless live body: no length; the end of the body is the end of the
/// connection, which every HTTP/1.x client and player understands.
pub fn live_head(content_type: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\n{}Content-Type: {content_type}\r\nCache-Control: no-cache, no-store\r\nConnection: close\r\n\r\n",
        common_headers()
    ))
}

/// The answer to a CORS preflight.
pub fn options(keep_alive: bool) -> Bytes {
    finite(
        204,
        "text/plain",
        b"",
        keep_alive,
        true,
        "Access-Control-Allow-Methods: GET, HEAD, OPTIONS, PUT, POST\r\nAccess-Control-Allow-Headers: Range, Content-Type, Authorization\r\nAccess-Control-Max-Age: 86400\r\n",
    )
}

/// What a `Range` header asks of a body of `len` bytes (RFC 9110 §14): one byte range.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable Range (absent, not bytes, several ranges, malformed): the whole body.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Nothing of the body is in it: 416.
    Unsatisfiable,
}

pub fn range_ask(header: Option<&str>, len: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        // Several ranges would need multipart/byteranges; the whole body is allowed.
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeAsk::Whole,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (a, b) => {
            let Some(start) = number(a) else {
                return RangeAsk::Whole;
            };
            let end = match b {
                "" => len.saturating_sub(1),
                b => match number(b) {
                    Some(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return RangeAsk::Whole,
                },
            };
            if start >= len {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part { start, end }
            }
        }
    }
}

/// Bytes `start..=end` of a body held as buffers, sharing their memory.
pub fn slice_buffers(buffers: &[Bytes], start: u64, end: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for b in buffers {
        let (from, to) = (at, at + b.len() as u64);
        at = to;
        if to <= start || from > end {
            continue;
        }
        let lo = (start.max(from) - from) as usize;
        let hi = ((end + 1).min(to) - from) as usize;
        out.push(b.slice(lo..hi));
    }
    out
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        use RangeAsk::*;
        assert_eq!(range_ask(None, 100), Whole);
        assert_eq!(range_ask(Some("bytes=0-9"), 100), Part { start: 0, end: 9 });
        assert_eq!(
            range_ask(Some("bytes=90-"), 100),
            Part { start: 90, end: 99 }
        );
        assert_eq!(
            range_ask(Some("bytes=90-500"), 100),
            Part { start: 90, end: 99 }
        );
        assert_eq!(
            range_ask(Some("bytes=-10"), 100),
            Part { start: 90, end: 99 }
        );
        assert_eq!(
            range_ask(Some("bytes=-500"), 100),
            Part { start: 0, end: 99 }
        );
        assert_eq!(range_ask(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(range_ask(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(range_ask(Some("bytes=0-1,5-6"), 100), Whole);
        assert_eq!(range_ask(Some("bytes=5-1"), 100), Whole);
        assert_eq!(range_ask(Some("bytes=x-1"), 100), Whole);
        assert_eq!(range_ask(Some("items=0-1"), 100), Whole);
        assert_eq!(range_ask(Some("bytes=99999999999999999999-"), 100), Whole);
    }

    #[test]
    fn slices_cross_buffers_without_copying() {
        let buffers = [
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defg"),
            Bytes::from_static(b"h"),
        ];
        let got: Vec<u8> = slice_buffers(&buffers, 2, 6).concat();
        assert_eq!(got, b"cdefg");
        assert_eq!(slice_buffers(&buffers, 7, 7).concat(), b"h");
        assert_eq!(slice_buffers(&buffers, 0, 7).concat(), b"abcdefgh");
    }
}
