//! The HTTP surface: status codes for bad requests, keep-alive, CORS, limits and timeouts,
//! against a real server on 127.0.0.1:0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use muxcast::ingest::source::Input;

fn server() -> TestServer {
    start(
        Setup::default(),
        vec![
            ("live", file_input("opus_only.webm", true)),
            ("cam", Input::Push),
        ],
    )
}

#[test]
fn unknown_paths_and_path_tricks_are_404() {
    let s = server();
    for path in [
        "/nope",
        "/live/nope.mkv",
        "/other/live.mkv",
        "/../live/live.mkv",
        "/%2e%2e/live/live.mkv",
        "/live%2flive.mkv",
        "/live/..%2flive.mkv",
        "/%00/live.mkv",
        "/live/live.mkv%00",
        "/./live.mkv",
        "//live.mkv",
    ] {
        let (status, _, _) = request(
            s.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 404, "{path}");
    }
}

#[test]
fn wrong_methods_are_405() {
    let s = server();
    let (status, _, _) = request(
        s.addr,
        b"POST /live/live.mkv HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 405);
    let (status, _, _) = request(s.addr, b"DELETE /status.json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _, _) = request(s.addr, b"GET /cam/ingest HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _, _) = request(
        s.addr,
        b"PUT /live/ingest HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 404, "live is not a push stream");
}

#[test]
fn malformed_requests_get_400_and_a_close() {
    let s = server();
    let mut c = send(
        s.addr,
        b"GET /status.json HTTP/1.1\r\nBad Header Line\r\n\r\n",
    );
    let (status, head, _) = read_head(&mut c);
    assert_eq!(status, 400);
    assert!(head.contains("Connection: close"));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let (status, _, _) = request(
        s.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    );
    assert_eq!(status, 400, "a TLS hello is not HTTP");
}

#[test]
fn oversized_headers_get_431() {
    let s = server();
    let mut req = b"GET /status.json HTTP/1.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 20 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before the whole request is written.
    let _ = c.write_all(&req);
    let (status, _, _) = read_head(&mut c);
    assert_eq!(status, 431);
    let mut many = b"GET /status.json HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (status, _, _) = request(s.addr, &many);
    assert_eq!(status, 431, "too many header fields");
}

#[test]
fn keep_alive_and_pipelining_on_finite_responses() {
    let s = server();
    let mut c = send(
        s.addr,
        b"GET /status.json HTTP/1.1\r\nHost: t\r\n\r\nHEAD /status.json HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(text.matches("HTTP/1.1 404").count(), 1, "{text}");
    // The HEAD answer announced a length but sent no body: exactly one JSON body precedes it.
    assert_eq!(text.matches("\"streams\"").count(), 1);
}

#[test]
fn cors_preflight_and_headers() {
    let s = server();
    let (status, head, body) = request(
        s.addr,
        b"OPTIONS /live/live.mkv HTTP/1.1\r\nHost: t\r\nOrigin: http://x\r\nAccess-Control-Request-Method: GET\r\n\r\n",
    );
    assert_eq!(status, 204);
    assert!(body.is_empty());
    assert!(head.contains("Access-Control-Allow-Origin: *"));
    assert!(head.contains("Access-Control-Allow-Methods: GET"));
    assert!(head.contains("Access-Control-Allow-Headers: Range"));
    let (_, head, _) = request(s.addr, b"GET /status.json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.contains("Access-Control-Allow-Origin: *"));
    assert!(head.contains("Content-Type: application/json"));
}

#[test]
fn one_client_over_the_limit_gets_503_with_retry_after() {
    let setup = Setup {
        max_clients: 2,
        ..Setup::default()
    };
    let s = start(setup, vec![("live", file_input("opus_only.webm", true))]);
    let _a = get(s.addr, "/live/live.mkv");
    let _b = get(s.addr, "/live/live.mkv");
    // No wait needed: both viewers are ahead of the next connection in the accept queue.
    let (status, head, _) = request(s.addr, b"GET /status.json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 503);
    assert!(head.contains("Retry-After:"), "{head}");
}

#[test]
fn one_address_over_its_limit_gets_503_and_its_slots_come_back() {
    let setup = Setup {
        max_clients_per_ip: 2,
        ..Setup::default()
    };
    let s = start(setup, vec![("live", file_input("opus_only.webm", true))]);
    let mut a = get(s.addr, "/live/live.mkv");
    let _b = get(s.addr, "/live/live.mkv");
    assert_eq!(read_head(&mut a).0, 200);
    let (status, head, body) = request(s.addr, b"GET /status.json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 503);
    assert!(head.contains("Retry-After:"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("from your address"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A viewer leaves: its slot is free again.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = request(s.addr, b"GET /status.json HTTP/1.1\r\nHost: t\r\n\r\n");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_incomplete_request_is_closed_after_the_header_timeout() {
    let setup = Setup {
        header_timeout: Duration::from_millis(300),
        ..Setup::default()
    };
    let s = start(setup, vec![("live", file_input("opus_only.webm", true))]);
    let mut c = send(s.addr, b"GET /status.json HTTP/1.1\r\nHost:");
    let start = Instant::now();
    let mut buf = Vec::new();
    let n = c
        .read_to_end(&mut buf)
        .expect("closed, not timed out on our side");
    assert_eq!(n, 0);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_client_that_hangs_up_mid_head_is_closed_at_once() {
    // Half a head and the FIN together: one edge-triggered readiness event carries both,
    // and the server must not take a short read for "nothing more" and wait for the
    // header timeout (the stress churn left 1665 of 10 000 such connections open).
    let setup = Setup {
        header_timeout: Duration::from_secs(60),
        ..Setup::default()
    };
    let s = start(setup, vec![("live", file_input("opus_only.webm", true))]);
    let head = b"GET /live/live.mkv HTTP/1.1\r\nHost: t\r\nUser-Agent: half";
    for i in 0..20 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(head).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let got = c.read_to_end(&mut rest);
        assert!(
            matches!(got, Ok(0)),
            "connection {i}: {got:?} (the server kept it open)"
        );
    }
    assert_eq!(status_json(s.addr)["server"]["connections"], 1);
}

#[test]
fn status_json_describes_streams_and_viewers() {
    let s = server();
    let doc = wait_for_stream(s.addr, "live", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    assert_eq!(doc["tracks"][0]["codec"], "opus");
    assert_eq!(doc["tracks"][0]["sample_rate"], 48000.0);
    let mut v = get(s.addr, "/live/live.mkv");
    let (status, _, _) = read_head(&mut v);
    assert_eq!(status, 200);
    let doc = wait_for_stream(s.addr, "live", Duration::from_secs(5), |s| {
        s["clients"] == 1
    });
    assert!(doc["gops_held"].as_u64().unwrap() >= 1);
    let cam = wait_for_stream(s.addr, "cam", Duration::from_secs(5), |s| {
        s["state"] == "waiting-for-pusher"
    });
    assert_eq!(cam["input"], "push");
}

#[test]
fn thousands_of_pipelined_requests_are_answered_in_order_without_recursion() {
    let s = server();
    let one = b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n";
    let n = 5000;
    let mut all = one.repeat(n);
    all.extend_from_slice(b"GET /cam/ingest HTTP/1.1\r\nHost: t\r\n\r\n");
    all.extend_from_slice(b"GET /status.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let mut c = c.try_clone().unwrap();
        std::thread::spawn(move || c.write_all(&all))
    };
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 404").count(), n);
    // A refused method on the ingest path keeps the connection usable.
    assert_eq!(text.matches("HTTP/1.1 405").count(), 1);
    assert!(text.trim_end().ends_with('}'), "status.json answered last");
}

// --- the web page ------------------------------------------------------------------------

/// The vendored hls.js, as npm ships it, and as embedded (gzip -9n of it).
fn vendored(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/hls.js")
            .join(name),
    )
    .unwrap()
}

/// CRC-32 (IEEE), as gzip's trailer holds it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The hls.js version the interop suite pins (tests/interop/browser/package-lock.json).
fn pinned_hls_js_version() -> String {
    let lock = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop/browser/package-lock.json"),
    )
    .unwrap();
    let lock: serde_json::Value = serde_json::from_slice(&lock).unwrap();
    lock["packages"]["node_modules/hls.js"]["version"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_page_lists_every_stream_and_loads_the_embedded_hls_js() {
    let s = start(
        Setup::default(),
        vec![
            ("live", file_input("h264_aac.mkv", true)),
            ("vp9", file_input("vp9_opus.webm", true)),
            ("cam", Input::Push),
        ],
    );
    let (status, head, body) = request(s.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8"),
        "{head}"
    );
    let html = String::from_utf8(body).unwrap();
    let version = pinned_hls_js_version();
    let script = format!("assets/hls-{version}.min.js");
    assert!(
        html.contains(&format!("<script src=\"{script}\"></script>")),
        "{html}"
    );
    for name in ["live", "vp9", "cam"] {
        assert!(
            html.contains(&format!("<section data-name=\"{name}\"")),
            "{name}"
        );
        assert!(
            html.contains(&format!("href=\"{name}/index.m3u8\"")),
            "{name}"
        );
    }
    // Nothing from elsewhere: every src and href is relative to the server.
    assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("//cdn"));

    // The script: the vendored bytes exactly, gzip-coded, immutable under a versioned URL.
    let gz = vendored("hls.min.js.gz");
    let (status, head, body) = request(
        s.addr,
        format!("GET /{script} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        body == gz,
        "served bytes differ from assets/hls.js/hls.min.js.gz"
    );
    for h in [
        "Content-Type: text/javascript; charset=utf-8",
        "Content-Encoding: gzip",
        "Vary: Accept-Encoding",
        "Cache-Control: public, max-age=31536000, immutable",
    ] {
        assert!(head.contains(h), "{h}: {head}");
    }
    // And the .gz is the npm file: gzip's trailer holds its CRC-32 and length.
    let js = vendored("hls.min.js");
    let trailer = &gz[gz.len() - 8..];
    assert_eq!(
        u32::from_le_bytes(trailer[..4].try_into().unwrap()),
        crc32(&js)
    );
    assert_eq!(
        u32::from_le_bytes(trailer[4..].try_into().unwrap()) as usize,
        js.len()
    );
    assert!(
        js.windows(version.len() + 2)
            .any(|w| w == format!("\"{version}\"").as_bytes()),
        "hls.min.js is not hls.js {version}"
    );
    assert!(
        String::from_utf8(vendored("LICENSE"))
            .unwrap()
            .contains("Apache License")
    );
    // HEAD: the length, no body; a client that refuses gzip gets 406; an old version 404.
    let mut c = send(
        s.addr,
        format!("HEAD /{script} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let (status, head, mut body) = read_head(&mut c);
    c.read_to_end(&mut body).unwrap();
    assert_eq!(status, 200);
    assert!(
        head.contains(&format!("Content-Length: {}", gz.len())),
        "{head}"
    );
    assert!(body.is_empty());
    let (status, _, _) = request(
        s.addr,
        format!("GET /{script} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: identity\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 406);
    let (status, _, _) = request(
        s.addr,
        b"GET /assets/hls-0.0.1.min.js HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(status, 404);

    // What the page's script reads: which players a stream allows.
    let live = wait_for_stream(s.addr, "live", Duration::from_secs(10), |s| {
        s["hls"] == true
    });
    assert_eq!(live["webm"], false, "H.264/AAC is not WebM");
    let vp9 = wait_for_stream(s.addr, "vp9", Duration::from_secs(10), |s| s["hls"] == true);
    assert_eq!(vp9["webm"], true);
    let cam = wait_for_stream(s.addr, "cam", Duration::from_secs(5), |_| true);
    assert_eq!(
        (cam["hls"].clone(), cam["webm"].clone()),
        (false.into(), false.into())
    );
}
