//! Response heads and small bodies.

use bytes::Bytes;

const COMMON: &str =
    "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: Date\r\nServer: muxcast\r\n";

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
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
        "HTTP/1.1 {status} {}\r\n{COMMON}Content-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: {}\r\n{extra}\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    Bytes::from(out)
}

/// The head of a finite response whose body is sent separately.
pub fn head(
    status: u16,
    content_type: &str,
    len: usize,
    cache_control: &str,
    keep_alive: bool,
) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 {status} {}\r\n{COMMON}Content-Type: {content_type}\r\nContent-Length: {len}\r\nCache-Control: {cache_control}\r\nConnection: {}\r\n\r\n",
        reason(status),
        if keep_alive { "keep-alive" } else { "close" },
    ))
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
        "HTTP/1.1 200 OK\r\n{COMMON}Content-Type: {content_type}\r\nCache-Control: no-cache, no-store\r\nConnection: close\r\n\r\n"
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
