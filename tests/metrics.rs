//! Observability: `/metrics` scraped from a real server on 127.0.0.1:0 and parsed strictly
//! as Prometheus text exposition 0.0.4 (every sample `name{labels} value`, every name
//! with one HELP and one TYPE before its samples, no duplicate series), its values moving
//! as clients come and go; and the binary's `--log-format json`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use muxcast::ingest::source::Input;

/// One scrape: series (name and sorted labels) to value.
struct Scrape {
    samples: HashMap<(String, BTreeMap<String, String>), f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// The value of the series `name{labels}`; panics when it is absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.try_get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }

    fn try_get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    /// Every series of `name`.
    fn series(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l, *v))
            .collect()
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads `{k="v",...}` at the start of `s`; returns the labels and the rest after `}`.
fn parse_labels<'a>(mut s: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    s = s.strip_prefix('{').unwrap();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return (labels, rest);
        }
        let (key, rest) = s
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without =\": {line}"));
        assert!(valid_name(key), "label name {key:?}: {line}");
        assert!(!key.starts_with("__"), "reserved label name: {line}");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars
                .next()
                .unwrap_or_else(|| panic!("unterminated label value: {line}"));
            match c {
                '"' => break i,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape \\{other:?}: {line}"),
                },
                '\n' => panic!("raw newline in a label value: {line}"),
                c => value.push(c),
            }
        };
        assert!(
            labels.insert(key.to_string(), value).is_none(),
            "label {key} twice: {line}"
        );
        s = &rest[end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
            assert!(!s.starts_with('}'), "trailing comma: {line}");
        } else {
            assert!(s.starts_with('}'), "labels not closed: {line}");
        }
    }
}

/// Parses an exposition strictly (see the module comment) and checks muxcast's own
/// conventions: names start `muxcast_`, counters end `_total`, values are finite.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the last line ends with a line feed");
    let mut helps = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    // The family whose samples may follow (its HELP and TYPE came last).
    let mut current: Option<String> = None;
    let mut finished = HashSet::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name), "{line}");
            assert!(!help.trim().is_empty(), "empty HELP: {line}");
            assert!(helps.insert(name.to_string()), "HELP twice for {name}");
            assert!(!types.contains_key(name), "HELP after TYPE for {name}");
            if let Some(previous) = current.take() {
                finished.insert(previous);
            }
            assert!(!finished.contains(name), "{name} is split in two blocks");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            assert!(helps.contains(name), "TYPE before HELP for {name}");
            assert!(
                ["counter", "gauge"].contains(&kind),
                "type {kind:?} for {name}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice for {name}"
            );
            assert!(name.starts_with("muxcast_"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "counters and only counters end in _total: {name}"
            );
            current = Some(name.to_string());
            continue;
        }
        assert!(
            !line.starts_with('#'),
            "a comment that is not HELP/TYPE: {line}"
        );
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(valid_name(name), "sample name {name:?}: {line}");
        assert_eq!(
            current.as_deref(),
            Some(name),
            "sample outside its family's block: {line}"
        );
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..], line)
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value: {line}"));
        assert!(
            !value.contains(' '),
            "a timestamp or junk after the value: {line}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value {value:?}: {line}"));
        assert!(value.is_finite() && value >= 0.0, "{line}");
        if types[name] == "counter" {
            assert_eq!(value.fract(), 0.0, "a counter is a whole number: {line}");
        }
        assert!(
            samples.insert((name.to_string(), labels), value).is_none(),
            "duplicate series: {line}"
        );
    }
    assert_eq!(helps.len(), types.len(), "a HELP without a TYPE");
    Scrape { samples, types }
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (status, head, body) = request(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    parse(std::str::from_utf8(&body).expect("UTF-8"))
}

/// Scrapes until `pred` holds.
fn scrape_until(addr: SocketAddr, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape(addr);
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_parser_refuses_what_the_format_forbids() {
    let ok = "# HELP muxcast_x_total X.\n# TYPE muxcast_x_total counter\nmuxcast_x_total{a=\"q\\\"\\\\\\n\"} 3\n";
    let m = parse(ok);
    assert_eq!(m.get("muxcast_x_total", &[("a", "q\"\\\n")]), 3.0);
    for bad in [
        "muxcast_x_total 1\n",
        "# HELP muxcast_x_total X.\nmuxcast_x_total 1\n",
        "# HELP muxcast_x_total X.\n# TYPE muxcast_x_total counter\nmuxcast_x_total 1\nmuxcast_x_total 2\n",
        "# HELP muxcast_x_total X.\n# TYPE muxcast_x_total counter\nmuxcast_x_total{a=\"b\\t\"} 1\n",
        "# HELP muxcast_x_total X.\n# TYPE muxcast_x_total counter\nmuxcast_x_total{a=\"b\"} 1 123\n",
        "# HELP muxcast_x X.\n# TYPE muxcast_x counter\nmuxcast_x 1\n",
        "# HELP muxcast_x X.\n# TYPE muxcast_x gauge\nmuxcast_x 1",
    ] {
        let r = std::panic::catch_unwind(|| parse(bad));
        assert!(r.is_err(), "accepted: {bad:?}");
    }
}

#[test]
fn metrics_describe_streams_and_move_with_clients() {
    // A file path with a quote and a backslash: the input label must be escaped.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-odd");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let odd = dir.join("we\"ird\\name.webm");
    std::fs::copy(testdata("opus_only.webm"), &odd).unwrap();
    let odd_input = Input::File {
        path: odd.clone(),
        looped: true,
    };
    let pulled = Input::Http {
        url: format!("http://127.0.0.1:{}/gone/live.mkv", closed_port()),
    };
    let s = start(
        Setup::default(),
        vec![
            ("live", file_input("h264_aac.mkv", true)),
            ("cam", Input::Push),
            ("odd", odd_input.clone()),
            ("pulled", pulled),
        ],
    );
    wait_for_stream(s.addr, "live", Duration::from_secs(10), |s| {
        s["state"] == "live"
    });
    let m0 = scrape(s.addr);
    assert_eq!(m0.get("muxcast_connections", &[]), 1.0, "the scrape itself");
    assert_eq!(
        m0.get(
            "muxcast_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        m0.get(
            "muxcast_stream_info",
            &[("stream", "odd"), ("input", &odd_input.describe())]
        ),
        1.0
    );
    assert!(odd_input.describe().contains("we\"ird\\name"));
    // One state set per stream, exactly one state on.
    for stream in ["live", "cam", "odd", "pulled"] {
        let on: Vec<String> = m0
            .series("muxcast_stream_state")
            .into_iter()
            .filter(|(l, v)| l["stream"] == stream && *v == 1.0)
            .map(|(l, _)| l["state"].clone())
            .collect();
        assert_eq!(on.len(), 1, "{stream}: {on:?}");
    }
    assert_eq!(
        m0.get(
            "muxcast_stream_state",
            &[("stream", "live"), ("state", "live")]
        ),
        1.0
    );
    assert_eq!(
        m0.get(
            "muxcast_stream_state",
            &[("stream", "cam"), ("state", "waiting-for-pusher")]
        ),
        1.0
    );
    assert_eq!(m0.get("muxcast_stream_viewers", &[("stream", "live")]), 0.0);
    assert!(m0.get("muxcast_stream_frames_total", &[("stream", "live")]) > 0.0);
    assert_eq!(m0.types["muxcast_stream_viewers"], "gauge");

    // A live viewer: one more connection, one viewer, one live request.
    let mut viewer = get(s.addr, "/live/live.mkv");
    assert_eq!(read_head(&mut viewer).0, 200);
    let m1 = scrape_until(s.addr, "one viewer", |m| {
        m.get("muxcast_stream_viewers", &[("stream", "live")]) == 1.0
    });
    assert_eq!(m1.get("muxcast_connections", &[]), 2.0);
    assert_eq!(
        m1.get("muxcast_stream_viewers_total", &[("stream", "live")]),
        1.0
    );
    assert_eq!(
        m1.get("muxcast_requests_total", &[("class", "live")]),
        m0.get("muxcast_requests_total", &[("class", "live")]) + 1.0
    );
    assert_eq!(
        m1.get("muxcast_requests_total", &[("class", "metrics")]),
        m0.get("muxcast_requests_total", &[("class", "metrics")]) + 1.0
    );

    // A 404, a 400, a 405: each its cause, once.
    let not_found = |m: &Scrape| m.get("muxcast_rejections_total", &[("cause", "not_found")]);
    let bad = |m: &Scrape| m.get("muxcast_rejections_total", &[("cause", "bad_request")]);
    let method = |m: &Scrape| {
        m.get(
            "muxcast_rejections_total",
            &[("cause", "method_not_allowed")],
        )
    };
    let (status, _, _) = request(s.addr, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 404);
    let m2 = scrape(s.addr);
    assert_eq!(not_found(&m2), not_found(&m1) + 1.0);
    assert_eq!(
        m2.get("muxcast_requests_total", &[("class", "other")]),
        m1.get("muxcast_requests_total", &[("class", "other")]) + 1.0
    );
    assert_eq!(bad(&m2), bad(&m1));
    let (status, _, _) = request(s.addr, b"GET /x HTTP/1.1\r\nBad Header Line\r\n\r\n");
    assert_eq!(status, 400);
    let (status, _, _) = request(s.addr, b"DELETE /status.json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _, _) = request(s.addr, b"GET /other/live.mkv HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 404, "no such stream");
    let m3 = scrape(s.addr);
    assert_eq!(bad(&m3), bad(&m2) + 1.0);
    assert_eq!(method(&m3), method(&m2) + 1.0);
    assert_eq!(not_found(&m3), not_found(&m2) + 1.0);

    // HLS requests are counted per stream and kind; segments are published.
    let m4 = scrape_until(s.addr, "a published segment", |m| {
        m.try_get(
            "muxcast_stream_segments_total",
            &[("stream", "live"), ("rendition", "v0")],
        )
        .is_some_and(|n| n >= 1.0)
    });
    get_ok(s.addr, "/live/index.m3u8");
    get_ok(s.addr, "/live/v0/index.m3u8");
    let m5 = scrape(s.addr);
    let playlists = |m: &Scrape| {
        m.get(
            "muxcast_stream_requests_total",
            &[("stream", "live"), ("kind", "playlist")],
        )
    };
    assert_eq!(playlists(&m5), playlists(&m4) + 2.0);
    assert_eq!(
        m5.get(
            "muxcast_stream_requests_total",
            &[("stream", "cam"), ("kind", "playlist")]
        ),
        0.0
    );

    // Frames, bytes in and out grow; the ingest bitrate is measured.
    let m6 = scrape_until(s.addr, "an ingest bitrate", |m| {
        m.get(
            "muxcast_stream_ingest_bits_per_second",
            &[("stream", "live")],
        ) > 0.0
    });
    let frames = |m: &Scrape| m.get("muxcast_stream_frames_total", &[("stream", "live")]);
    assert!(frames(&m6) > frames(&m1), "frames grow");
    assert!(
        m6.get("muxcast_stream_ingest_bytes_total", &[("stream", "live")])
            > m1.get("muxcast_stream_ingest_bytes_total", &[("stream", "live")])
    );
    let sent = |m: &Scrape| m.get("muxcast_bytes_sent_total", &[]);
    assert!(sent(&m6) > sent(&m1));
    let mut buf = [0u8; 65536];
    viewer.read_exact(&mut buf).unwrap();
    let live_sent = |m: &Scrape| {
        m.get(
            "muxcast_stream_live_bytes_sent_total",
            &[("stream", "live")],
        )
    };
    let m7 = scrape(s.addr);
    assert!(live_sent(&m7) >= 65536.0, "{}", live_sent(&m7));
    assert!(sent(&m7) >= live_sent(&m7));

    // The pulled input cannot connect: reconnects are counted.
    let m8 = scrape_until(s.addr, "a reconnect", |m| {
        m.get("muxcast_stream_reconnects_total", &[("stream", "pulled")]) >= 1.0
    });
    assert_eq!(
        m8.get(
            "muxcast_stream_state",
            &[("stream", "pulled"), ("state", "reconnecting")]
        ),
        1.0
    );

    // The viewer leaves.
    drop(viewer);
    let m9 = scrape_until(s.addr, "no viewer", |m| {
        m.get("muxcast_stream_viewers", &[("stream", "live")]) == 0.0
    });
    assert_eq!(m9.get("muxcast_connections", &[]), 1.0);
}

#[test]
fn refusals_and_timeouts_are_counted_by_cause() {
    let setup = Setup {
        max_clients: 3,
        header_timeout: Duration::from_millis(300),
        ..Setup::default()
    };
    let s = start(setup, vec![("live", file_input("opus_only.webm", true))]);
    let timeouts = |m: &Scrape| m.get("muxcast_rejections_total", &[("cause", "header_timeout")]);
    // An incomplete head times out; an idle keep-alive connection is closed the same way
    // but is no rejection.
    let mut idle = send(s.addr, b"GET /time HTTP/1.1\r\nHost: t\r\n\r\n");
    read_head(&mut idle);
    let mut slow = send(s.addr, b"GET /status.json HTTP/1.1\r\nHost:");
    let mut rest = Vec::new();
    assert_eq!(slow.read_to_end(&mut rest).unwrap(), 0, "closed");
    assert_eq!(idle.read_to_end(&mut rest).unwrap(), 0, "closed");
    let m = scrape(s.addr);
    assert_eq!(timeouts(&m), 1.0);
    assert_eq!(
        m.get("muxcast_rejections_total", &[("cause", "too_many_clients")]),
        0.0
    );
    // Three viewers fill the server: the fourth connection is refused.
    let viewers: Vec<TcpStream> = (0..3).map(|_| get(s.addr, "/live/live.mkv")).collect();
    let (status, _, _) = request(s.addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 503);
    drop(viewers);
    // Until the server has seen them go, a scrape is refused (and counted) too.
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let (status, _, body) = request(
            s.addr,
            b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        if status == 200 {
            break parse(std::str::from_utf8(&body).unwrap());
        }
        assert!(Instant::now() < deadline, "no slot came back");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(m.get("muxcast_rejections_total", &[("cause", "too_many_clients")]) >= 1.0);
    assert_eq!(
        m.get("muxcast_rejections_total", &[("cause", "per_address_cap")]),
        0.0
    );
    assert_eq!(timeouts(&m), 1.0);
}

/// The binary with `args` and debug logs, its stderr lines in a channel.
fn spawn_binary(args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    spawn_muxcast(args, "info,muxcast=debug")
}

/// Lines up to and including the one containing `needle`.
fn lines_until(rx: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {needle:?}: {lines:#?}"));
        let done = line.contains(needle);
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// Checks one JSON log line: exactly ts (RFC 3339, UTC, milliseconds), level, target, msg.
fn json_line(line: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["level", "msg", "target", "ts"], "{line}");
    let ts = o["ts"].as_str().unwrap();
    let b = ts.as_bytes();
    assert_eq!(ts.len(), 24, "{ts}");
    for (i, &c) in b.iter().enumerate() {
        let want = match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        };
        assert!(want, "ts {ts:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    }
    let year: i32 = ts[..4].parse().unwrap();
    assert!((2024..2200).contains(&year), "{ts}");
    assert!(
        ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&o["level"].as_str().unwrap()),
        "{line}"
    );
    assert!(
        o["target"].as_str().unwrap().starts_with("muxcast"),
        "{line}"
    );
    assert!(o["msg"].is_string());
    v
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let input = testdata("opus_only.webm");
    let (mut child, rx) = spawn_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--loop",
        input.to_str().unwrap(),
    ]);
    let mut lines = lines_until(&rx, "listening on http://");
    let listening = json_line(lines.last().unwrap());
    assert_eq!(listening["level"], "INFO");
    let addr: SocketAddr = listening["msg"]
        .as_str()
        .unwrap()
        .split("listening on http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    // A debug line from the loop (a bad request), then SIGTERM.
    let (status, _, _) = request(addr, b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n");
    assert_eq!(status, 400);
    lines.extend(lines_until(&rx, "bad request"));
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    lines.extend(rx.iter());
    let values: Vec<serde_json::Value> = lines.iter().map(|l| json_line(l)).collect();
    assert!(
        values
            .iter()
            .any(|v| v["level"] == "DEBUG" && v["msg"].as_str().unwrap().contains("bad request")),
        "{lines:#?}"
    );
    assert!(
        values
            .iter()
            .any(|v| v["msg"] == "signal 15: shutting down"),
        "{lines:#?}"
    );
    // Timestamps do not go back.
    let ts: Vec<&str> = values.iter().map(|v| v["ts"].as_str().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
}

#[test]
fn text_logs_are_the_default_and_bad_formats_are_refused() {
    let input = testdata("opus_only.webm");
    let (mut child, rx) = spawn_binary(&["--listen", "127.0.0.1:0", input.to_str().unwrap()]);
    let lines = lines_until(&rx, "listening on http://");
    let _ = child.kill();
    let _ = child.wait();
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "{line}"
        );
    }
    assert!(lines.last().unwrap().starts_with("[INFO "), "{lines:#?}");
    let out = Command::new(BIN)
        .args(["--log-format", "xml", "x.mkv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "muxcast: --log-format: unknown log format \"xml\" (expected text, json)\n"
    );
}
