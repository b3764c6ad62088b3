//! SIGHUP reloads the configuration file: streams added start, removed ones stop, changed
//! ones restart, unchanged ones are not disturbed; a file with errors is refused and the
//! running configuration stays.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn write_config(path: &Path, streams: &[(&str, &str)]) {
    let mut text = String::from("[[server]]\nlisten = \"127.0.0.1:0\"\n");
    for (name, file) in streams {
        let media = testdata(file);
        text.push_str(&format!(
            "\n[[server.stream]]\nname = \"{name}\"\ninput = \"{}\"\nloop = true\n",
            media.display()
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn config_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reload");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("muxcast.toml")
}

fn names(addr: SocketAddr) -> Vec<String> {
    status_json(addr)["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// A live-MKV viewer's first bytes: its status and what it read.
fn watch(addr: SocketAddr, stream: &str, bytes: usize) -> (std::net::TcpStream, Vec<u8>) {
    let mut s = get(addr, &format!("/{stream}/live.mkv"));
    let (status, head, first) = read_head(&mut s);
    assert_eq!(status, 200, "/{stream}/live.mkv: {head}");
    let body = read_body(&mut s, first, |b| b.len() >= bytes);
    (s, body)
}

#[test]
fn sighup_starts_stops_and_restarts_streams_and_leaves_the_others_alone() {
    let path = config_path();
    write_config(
        &path,
        &[
            ("a", "h264_aac.mkv"),
            ("b", "vp9_opus.webm"),
            ("c", "vp9_opus.webm"),
        ],
    );
    let mut mux = Muxcast::start(&path);
    let addr = mux.listening(1)[0];
    for name in ["a", "b", "c"] {
        wait_for_stream(addr, name, Duration::from_secs(10), |s| {
            s["state"] == "live"
        });
    }
    // Viewers of the stream that stays, and of the one that will change.
    let (mut a_viewer, mut a_body) = watch(addr, "a", 20_000);
    let (mut c_viewer, c_first) = watch(addr, "c", 1_000);
    assert!(position(&c_first, b"V_VP9").is_some());

    // b goes, d comes, c changes its input, a moves down the file (not a change).
    write_config(
        &path,
        &[
            ("d", "h264_aac.mkv"),
            ("c", "h264_aac.mkv"),
            ("a", "h264_aac.mkv"),
        ],
    );
    mux.hangup();
    let line = mux.line_with("reload: ");
    assert!(
        line.contains("1 stream(s) added, 1 removed, 1 restarted, 1 unchanged"),
        "{line}"
    );
    wait_for_stream(addr, "d", Duration::from_secs(10), |s| s["state"] == "live");
    let mut listed = names(addr);
    listed.sort();
    assert_eq!(listed, ["a", "c", "d"]);
    let (status, _, _) = request(
        addr,
        b"GET /b/live.mkv HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404, "a removed stream is gone");
    // The changed stream's viewer got the end of the old stream, not more of it.
    c_viewer
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    c_viewer
        .read_to_end(&mut rest)
        .expect("the old stream's viewer is closed at its end");
    // The restarted stream serves its new input.
    let (_, c_new) = watch(addr, "c", 1_000);
    assert!(position(&c_new, b"V_MPEG4/ISO/AVC").is_some());
    let (_, d_body) = watch(addr, "d", 1_000);
    assert!(position(&d_body, b"V_MPEG4/ISO/AVC").is_some());

    // A file with errors: refused, nothing changes.
    std::fs::write(&path, "[[server]]\nlisten = \"127.0.0.1:0\"\nwindw = 3\n").unwrap();
    mux.hangup();
    mux.line_with("has errors; the running configuration stays");
    // Every error, each on its own line.
    mux.line_with("reload: ");
    mux.line_with("unknown key \"windw\"");
    let mut listed = names(addr);
    listed.sort();
    assert_eq!(listed, ["a", "c", "d"]);

    // All along, a's viewer got a's frames without a break.
    let before = a_body.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 65536];
    while a_body.len() < before + 100_000 && Instant::now() < deadline {
        let n = a_viewer
            .read(&mut chunk)
            .expect("a's viewer is still served");
        assert!(n > 0, "a's viewer was closed by the reload");
        a_body.extend_from_slice(&chunk[..n]);
    }
    let (_, got) = oracle(&a_body);
    let (_, src) = oracle_file("h264_aac.mkv");
    let n = assert_contiguous_run(&src, &got, 2);
    assert!(n > 100, "only {n} contiguous frames");

    mux.terminate();
    let (code, log) = mux.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log:#?}");
}
