//! The configuration file: what it accepts, every kind of error with its exact
//! `FILE:LINE: message`, `--check-config` through the built binary, and the binary
//! serving two servers from one file.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use muxcast::config::{self, Config, Formats, ServerConfig, StreamSettings};
use muxcast::ingest::source::Input;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("muxcast.example.toml")
}

fn parse(text: &str) -> Config {
    config::parse(text, "muxcast.toml").unwrap_or_else(|e| panic!("refused:\n{e}"))
}

/// The error lines for `text`, as the binary prints them.
fn errors(text: &str) -> Vec<String> {
    match config::parse(text, "muxcast.toml") {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

/// The one error for `text`.
fn error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e[0].clone()
}

/// A fresh directory for files of one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("config-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run muxcast")
}

fn stream_ok(name: &str, input: &str) -> String {
    format!("[[server.stream]]\nname = \"{name}\"\ninput = \"{input}\"\n")
}

// --- what is accepted ---------------------------------------------------------------

#[test]
fn a_minimal_file_takes_the_command_line_defaults() {
    let c = parse("[[server]]\n[[server.stream]]\nname = \"live\"\ninput = \"push\"\n");
    assert_eq!(c.servers.len(), 1);
    let s = &c.servers[0];
    assert_eq!(s.listen, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(
        ServerConfig {
            streams: Vec::new(),
            line: 0,
            ..s.clone()
        },
        ServerConfig::default()
    );
    assert_eq!(s.streams[0].name, "live");
    assert_eq!(s.streams[0].input, Input::Push);
    assert_eq!(s.streams[0].settings, StreamSettings::default());
    let options = s.server_options(false);
    assert_eq!(options.max_clients, 1024);
    assert_eq!(options.client_timeout, Duration::from_secs(30));
    assert_eq!(options.header_timeout, Duration::from_secs(10));
    assert_eq!(options.window.client_queue_bytes, 4 << 20);
    assert_eq!(options.hls.window, 10);
    assert_eq!(options.hls.target_duration_s, 2);
    assert!(options.hls.low_latency && !options.keep_running && !options.handle_signals);
    let publish = s.streams[0].publish_options();
    assert_eq!(publish.audio_cluster_ms, 2000);
    let cmaf = publish.cmaf.expect("HLS/DASH on by default");
    assert_eq!(
        (cmaf.segment_ns, cmaf.part_ns),
        (2_000_000_000, 200_000_000)
    );
}

#[test]
fn every_key_reaches_the_server_and_stream_options() {
    let c = parse(
        r#"
[defaults]
formats = ["mkv"]
prefill = 0.5
rtsp_timeout = 5
audio_cluster = 1

[[server]]
listen = "127.0.0.1:8080"
max_clients = 5
client_timeout = 3
header_timeout = 1.5
keep_running = true
burst = 2
client_queue = 1000
window = 3
ll_hls = false
stream = [
  { name = "a", input = "push" },
  { name = "b", input = "rtsp://u:p@10.0.0.1/s?transport=udp", formats = ["dash", "mkv", "hls"], segment_duration = 4, part_duration = 0.5 },
]

[[server]]
listen = "[::1]:8080"
[[server.stream]]
name = "a"
input = "http://10.0.0.2:8080/a/live.mkv"
on_demand = false
[[server.stream]]
name = "f"
input = "x.mkv"
loop = true
"#,
    );
    assert_eq!(c.servers.len(), 2);
    let o = c.servers[0].server_options(true);
    assert_eq!(o.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(o.max_clients, 5);
    assert_eq!(o.client_timeout, Duration::from_secs(3));
    assert_eq!(o.header_timeout, Duration::from_millis(1500));
    assert!(o.keep_running && o.handle_signals && !o.hls.low_latency);
    assert_eq!(o.window.burst_ns, 2_000_000_000);
    assert_eq!(o.window.client_queue_bytes, 1000);
    assert_eq!(o.hls.window, 3);
    // Until a stream's first segment fixes its own, the longest configured one stands in.
    assert_eq!(o.hls.target_duration_s, 4);
    let [a, b] = &c.servers[0].streams[..] else {
        panic!("two streams")
    };
    assert_eq!(a.settings.formats, Formats::MKV_ONLY);
    assert!(a.publish_options().cmaf.is_none());
    assert_eq!(a.publish_options().audio_cluster_ms, 1000);
    assert_eq!(a.reader_options().prefill, Duration::from_millis(500));
    assert_eq!(b.settings.formats, Formats::ALL);
    assert_eq!(b.reader_options().rtsp_timeout, Duration::from_secs(5));
    let cmaf = b.publish_options().cmaf.unwrap();
    assert_eq!(
        (cmaf.segment_ns, cmaf.part_ns),
        (4_000_000_000, 500_000_000)
    );
    assert!(matches!(b.input, Input::Rtsp { .. }));
    assert_eq!(b.input.describe(), "rtsp://u@10.0.0.1/s (udp)");
    // The same stream name in another server is another stream.
    let second = &c.servers[1];
    assert_eq!(second.streams[0].name, "a");
    assert!(matches!(second.streams[0].input, Input::Http { .. }));
    assert_eq!(
        second.streams[1].input,
        Input::File {
            path: "x.mkv".into(),
            looped: true
        }
    );
    assert_eq!((second.line, second.streams[1].line), (23, 29));
}

#[test]
fn the_example_documents_every_key_with_its_default() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let c = config::load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    // [defaults] and the first server set every key to its default.
    let first = &c.servers[0];
    assert_eq!(
        ServerConfig {
            streams: Vec::new(),
            line: 0,
            ..first.clone()
        },
        ServerConfig::default()
    );
    let studio = &first.streams[1];
    assert_eq!(studio.input, Input::Push);
    assert_eq!(
        studio.settings,
        StreamSettings {
            formats: Formats::MKV_ONLY,
            ..StreamSettings::default()
        }
    );
    let keys = config::PROCESS_KEYS
        .iter()
        .chain(config::SERVER_KEYS)
        .chain(config::STREAM_ONLY_KEYS)
        .chain(config::SETTING_KEYS)
        // A table, not a key with a value.
        .filter(|&&k| k != "stream");
    for key in keys {
        assert!(
            text.lines().any(|l| l
                .trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} = "))),
            "the example does not show {key}"
        );
    }
    // Relative inputs are taken from the file's directory.
    assert_eq!(
        first.streams[0].input,
        Input::File {
            path: example_path()
                .parent()
                .unwrap()
                .join("testdata/h264_aac.mkv"),
            looped: true
        }
    );
}

#[test]
fn relative_inputs_resolve_against_the_file_and_must_exist() {
    let dir = scratch("relative");
    std::fs::create_dir_all(dir.join("media")).unwrap();
    std::fs::copy(testdata("opus_only.webm"), dir.join("media/a.webm")).unwrap();
    let text = format!(
        "[[server]]\n{}{}{}",
        stream_ok("a", "media/a.webm"),
        stream_ok("b", "media/missing.webm"),
        stream_ok("c", "media")
    );
    let path = write(&dir, "muxcast.toml", &text);
    let e = config::load(&path).unwrap_err().to_string();
    let file = path.display();
    let missing = dir.join("media/missing.webm");
    let media = dir.join("media");
    assert_eq!(
        e,
        format!(
            "{file}:7: stream \"b\": input file {}: No such file or directory (os error 2)\n\
             {file}:10: stream \"c\": input file {}: is a directory",
            missing.display(),
            media.display()
        )
    );
    let path = write(
        &dir,
        "ok.toml",
        &format!("[[server]]\n{}", stream_ok("a", "media/a.webm")),
    );
    let c = config::load(&path).unwrap();
    assert_eq!(
        c.servers[0].streams[0].input,
        Input::File {
            path: dir.join("media/a.webm"),
            looped: false
        }
    );
}

// --- every kind of error, with its line ------------------------------------------------

#[test]
fn the_issue_example_error() {
    let text = r#"# cameras
[[server]]
listen = "0.0.0.0:8080"
max_clients = 1024

[[server.stream]]
name = "lobby"
input = "push"

[[server.stream]]
name = "cam1"
formats = ["mkv", "hsl"]
input = "rtsp://user:pass@192.168.1.10/stream1"
"#;
    assert_eq!(
        error(text),
        r#"muxcast.toml:12: stream "cam1": unknown format "hsl" (expected mkv, hls, dash)"#
    );
}

#[test]
fn toml_syntax_errors_name_their_line() {
    assert_eq!(
        error("[[server]]\n[[server.stream]]\nname = \"a\"\ninput = push\n"),
        "muxcast.toml:4: invalid TOML: string values must be quoted, expected literal string"
    );
    assert_eq!(
        error("[[server]]\n[[server.stream]]\nname = \"a\"\nname = \"b\"\n"),
        "muxcast.toml:4: invalid TOML: duplicate key"
    );
}

#[test]
fn unknown_keys_name_the_valid_ones_and_the_likely_one() {
    assert_eq!(
        error(&format!(
            "servers = 1\n[[server]]\n{}",
            stream_ok("a", "push")
        )),
        "muxcast.toml:1: unknown key \"servers\" (did you mean \"server\"? valid keys: defaults, server, log_format)"
    );
    assert_eq!(
        error(&format!(
            "[[server]]\nwindw = 5\n{}",
            stream_ok("a", "push")
        )),
        "muxcast.toml:2: server 1: unknown key \"windw\" (did you mean \"window\"? valid keys: listen, max_clients, max_clients_per_ip, client_timeout, header_timeout, keep_running, burst, client_queue, window, ll_hls, allow, stream)"
    );
    assert_eq!(
        error(
            "[[server]]\n[[server.stream]]\nname = \"cam1\"\ninput = \"push\"\nsegment_duraton = 4\n"
        ),
        "muxcast.toml:5: stream \"cam1\": unknown key \"segment_duraton\" (did you mean \"segment_duration\"? valid keys: name, input, on_demand, read_token, read_user, read_password, push_key, formats, loop, prefill, rtsp_timeout, idle_close, audio_cluster, segment_duration, part_duration)"
    );
    assert_eq!(
        error(&format!(
            "[defaults]\ncolour = 1\n[[server]]\n{}",
            stream_ok("a", "push")
        )),
        "muxcast.toml:2: [defaults]: unknown key \"colour\" (valid keys: formats, loop, prefill, rtsp_timeout, idle_close, audio_cluster, segment_duration, part_duration)"
    );
}

#[test]
fn keys_in_the_wrong_table_say_where_they_belong() {
    let text = format!(
        "[defaults]\nname = \"x\"\nmax_clients = 3\n[[server]]\ninput = \"push\"\nprefill = 1\n{}window = 5\nlisten = \"1.2.3.4:5\"\n",
        stream_ok("a", "push")
    );
    assert_eq!(
        errors(&text),
        [
            "muxcast.toml:2: [defaults]: key \"name\" belongs in a [[server.stream]] table",
            "muxcast.toml:3: [defaults]: key \"max_clients\" belongs in a [[server]] table",
            "muxcast.toml:5: server 1: key \"input\" belongs in a [[server.stream]] table",
            "muxcast.toml:6: server 1: key \"prefill\" belongs in a [[server.stream]] table or in [defaults]",
            "muxcast.toml:10: stream \"a\": key \"window\" is set per server for now: put it in the [[server]] table",
            "muxcast.toml:11: stream \"a\": key \"listen\" is a server setting: put it in the [[server]] table",
        ]
    );
}

#[test]
fn values_of_the_wrong_type() {
    let text = format!(
        "[[server]]\nmax_clients = \"many\"\nstream = [{{ name = \"a\", input = \"push\" }}]\n[[server]]\nlisten = \"127.0.0.1:1\"\nclient_queue = -1\n\
         [[server.stream]]\nname = \"a\"\ninput = \"push\"\nprefill = \"2\"\n\
         [[server.stream]]\nname = \"b\"\ninput = 5\n[[server.stream]]\nname = \"c\"\ninput = \"push\"\nformats = \"mkv\"\n{}",
        "[[server]]\nlisten = \"127.0.0.1:2\"\nkeep_running = \"yes\"\nstream = [{ name = \"a\", input = \"push\" }]\n"
    );
    assert_eq!(
        errors(&text),
        [
            "muxcast.toml:2: server 1: max_clients: invalid type: string \"many\", expected a whole number (0 or more)",
            "muxcast.toml:6: server 2: client_queue: invalid value: integer `-1`, expected a whole number (0 or more)",
            "muxcast.toml:10: stream \"a\": prefill: invalid type: string \"2\", expected a number",
            "muxcast.toml:13: stream \"b\": input: invalid type: integer `5`, expected a string",
            "muxcast.toml:17: stream \"c\": formats: invalid type: string \"mkv\", expected a sequence",
            "muxcast.toml:20: server 3: keep_running: invalid type: string \"yes\", expected a boolean",
        ]
    );
}

#[test]
fn values_out_of_range_are_refused_as_on_the_command_line() {
    let text = "[[server]]\nlisten = \"127.0.0.1:8080\"\nclient_timeout = -1\nheader_timeout = 90000\nburst = nan\nwindow = 2\n\
        [[server.stream]]\nname = \"a\"\ninput = \"push\"\nprefill = 1e9\nrtsp_timeout = 0.5\naudio_cluster = 31\nsegment_duration = 0.4\npart_duration = 2.5\n";
    assert_eq!(
        errors(text),
        [
            "muxcast.toml:3: server 1: client_timeout: -1 is not a number of seconds between 0 and 86400",
            "muxcast.toml:4: server 1: header_timeout: 90000 is not a number of seconds between 0 and 86400",
            "muxcast.toml:5: server 1: burst: NaN is not a number of seconds between 0 and 86400",
            "muxcast.toml:6: server 1: window: must be between 3 and 1000 segments",
            "muxcast.toml:10: stream \"a\": prefill: 1000000000 is not a number of seconds between 0 and 86400",
            "muxcast.toml:11: stream \"a\": rtsp_timeout: must be between 1 and 3600 seconds",
            "muxcast.toml:12: stream \"a\": audio_cluster: must be between 0.1 and 30 seconds",
            "muxcast.toml:13: stream \"a\": segment_duration: must be between 0.5 and 30 seconds",
            "muxcast.toml:14: stream \"a\": part_duration: must be between 0.05 and 2 seconds",
        ]
    );
    // The command line says the same, through the same checks.
    let out = run(&["--window", "2", "push"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "muxcast: --window: must be between 3 and 1000 segments\n"
    );
    let out = run(&["--rtsp-timeout", "0.5", "push"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "muxcast: --rtsp-timeout: must be between 1 and 3600 seconds\n"
    );
}

#[test]
fn formats_that_do_not_work_yet_are_refused() {
    let with = |formats: &str| {
        error(&format!(
            "[[server]]\n[[server.stream]]\nname = \"a\"\ninput = \"push\"\nformats = {formats}\n"
        ))
    };
    assert_eq!(
        with(r#"["mkv", "hls"]"#),
        r#"muxcast.toml:5: stream "a": formats: HLS and DASH share their segments and come together for now: use ["mkv"] or ["mkv", "hls", "dash"]"#
    );
    assert_eq!(
        with(r#"["mkv", "dash"]"#),
        r#"muxcast.toml:5: stream "a": formats: HLS and DASH share their segments and come together for now: use ["mkv"] or ["mkv", "hls", "dash"]"#
    );
    assert_eq!(
        with(r#"["hls", "dash"]"#),
        r#"muxcast.toml:5: stream "a": formats: live MKV is always served for now: list "mkv""#
    );
    assert_eq!(
        with("[]"),
        r#"muxcast.toml:5: stream "a": formats: live MKV is always served for now: list "mkv""#
    );
    assert_eq!(
        with(r#"["mkv", "mkv"]"#),
        r#"muxcast.toml:5: stream "a": format "mkv" is listed twice"#
    );
    assert_eq!(
        parse("[[server]]\n[[server.stream]]\nname = \"a\"\ninput = \"push\"\nformats = [\"dash\", \"hls\", \"mkv\"]\n")
            .servers[0]
            .streams[0]
            .settings
            .formats,
        Formats::ALL
    );
}

#[test]
fn keys_for_other_inputs_and_weak_secrets_are_refused_not_ignored() {
    let text = "[[server]]\n[[server.stream]]\nname = \"a\"\ninput = \"push\"\non_demand = true\nread_token = \"s3cret\"\npush_key = \"k\"\n";
    assert_eq!(
        errors(text),
        [
            "muxcast.toml:5: stream \"a\": on_demand: only rtsp:// inputs can run on demand (input is \"push\")",
            "muxcast.toml:6: stream \"a\": read_token: must be 16 to 256 characters (it is 6): e.g. `openssl rand -hex 16`",
            "muxcast.toml:7: stream \"a\": push_key: must be 16 to 256 characters (it is 1): e.g. `openssl rand -hex 16`",
        ]
    );
    // A secret is never echoed.
    assert!(!errors(text).join("\n").contains("s3cret"));
    // They are still strings when given.
    assert_eq!(
        error("[[server]]\n[[server.stream]]\nname = \"a\"\ninput = \"push\"\nread_token = 1\n"),
        "muxcast.toml:5: stream \"a\": read_token: invalid type: integer `1`, expected a string"
    );
}

#[test]
fn names_and_inputs_are_checked() {
    let text = "[[server]]\n\
        [[server.stream]]\ninput = \"push\"\n\
        [[server.stream]]\nname = \"a\"\n\
        [[server.stream]]\nname = \"bad/name\"\ninput = \"push\"\n\
        [[server.stream]]\nname = \"c\"\ninput = \"rtsp://\"\n\
        [[server.stream]]\nname = \"d\"\ninput = \"https://example.com/x.mkv\"\n\
        [[server.stream]]\nname = \"e\"\ninput = \"push\"\nloop = true\n\
        [[server.stream]]\nname = \"f\"\ninput = \"\"\n";
    assert_eq!(
        errors(text),
        [
            "muxcast.toml:2: server 1, stream 1: missing key \"name\"",
            "muxcast.toml:4: stream \"a\": missing key \"input\"",
            "muxcast.toml:7: server 1, stream 3: name: \"bad/name\" is not a stream name (1 to 64 of A-Z a-z 0-9 - _ ., not \".\" or \"..\")",
            "muxcast.toml:11: stream \"c\": input: rtsp://: no host",
            "muxcast.toml:14: stream \"d\": input: \"https://example.com/x.mkv\": unsupported URL scheme (expected a file path, \"-\", \"push\", http:// or rtsp://)",
            "muxcast.toml:18: stream \"e\": loop: only file inputs can loop (input is \"push\")",
            "muxcast.toml:21: stream \"f\": input: empty",
        ]
    );
}

#[test]
fn duplicates_are_refused() {
    let text = format!(
        "[[server]]\nlisten = \"0.0.0.0:8080\"\n{}{}{}\
         [[server]]\nlisten = \"127.0.0.1:8080\"\n{}\
         [[server]]\nlisten = \"127.0.0.1:0\"\n{}\
         [[server]]\nlisten = \"127.0.0.1:0\"\n{}",
        stream_ok("cam1", "-"),
        stream_ok("cam2", "push"),
        stream_ok("cam1", "push"),
        stream_ok("cam1", "push"),
        stream_ok("x", "-"),
        stream_ok("y", "push"),
    );
    assert_eq!(
        errors(&text),
        [
            "muxcast.toml:9: stream \"cam1\": this server already has a stream of that name (line 3)",
            "muxcast.toml:12: server 2: listen 127.0.0.1:8080 collides with 0.0.0.0:8080 of the server at line 1",
            "muxcast.toml:21: stream \"x\": input \"-\": stdin is already the input of stream \"cam1\" (line 5)",
        ]
    );
}

#[test]
fn the_shape_of_the_file_is_checked() {
    assert_eq!(
        error("# nothing\n"),
        "muxcast.toml: no [[server]] table: nothing to serve"
    );
    assert_eq!(
        error("server = []\n"),
        "muxcast.toml:1: server: no [[server]] table: nothing to serve"
    );
    assert_eq!(
        error("[server]\nlisten = \"127.0.0.1:1\"\n"),
        "muxcast.toml:1: server: must be an array of tables: write [[server]], not [server]"
    );
    assert_eq!(
        error("[[server]]\nlisten = \"127.0.0.1:1\"\n"),
        "muxcast.toml:1: server 1: no streams: add a [[server.stream]] table after it"
    );
    assert_eq!(
        error("[[server]]\n[server.stream]\nname = \"a\"\n"),
        "muxcast.toml:2: server 1: stream: must be an array of tables: write [[server.stream]], not [server.stream]"
    );
    assert_eq!(
        error("defaults = 3\n[[server]]\n[[server.stream]]\nname = \"a\"\ninput = \"push\"\n"),
        "muxcast.toml:1: defaults: must be a table: write [defaults]"
    );
    assert_eq!(
        error("server = [1]\n"),
        "muxcast.toml:1: server 1: must be a table: write [[server]]"
    );
    assert_eq!(
        error(
            "[[server]]\nlisten = \"localhost:80\"\n[[server.stream]]\nname = \"a\"\ninput = \"push\"\n"
        ),
        "muxcast.toml:2: server 1: listen: \"localhost:80\" is not ADDR:PORT (e.g. 0.0.0.0:8080)"
    );
}

#[test]
fn the_fuzz_entry_point_takes_the_example_and_the_corpus() {
    let example = std::fs::read(example_path()).unwrap();
    muxcast::fuzzing::config(&example);
    // Truncations of the example: every prefix is valid or fails with a line inside it.
    for end in (0..example.len()).step_by(97) {
        muxcast::fuzzing::config(&example[..end]);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for kind in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(kind).join("config")) {
            for entry in entries.flatten() {
                muxcast::fuzzing::config(&std::fs::read(entry.path()).unwrap());
            }
        }
    }
}

// --- the binary --------------------------------------------------------------------------

#[test]
fn check_config_accepts_the_example_and_prints_a_summary() {
    let path = example_path();
    let out = run(&["--check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{}: OK, 2 server(s), 3 stream(s)\n\
             server 1: http://0.0.0.0:8080/\n  \
             live: {} (looped) [mkv, hls, dash]\n  \
             studio: push [mkv]\n\
             server 2: http://127.0.0.1:8081/\n  \
             cam1: rtsp://admin@192.168.1.10/stream1 [mkv, hls, dash]\n",
            path.display(),
            path.parent()
                .unwrap()
                .join("testdata/h264_aac.mkv")
                .display()
        )
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn check_config_prints_every_error_and_exits_2() {
    let dir = scratch("check");
    let path = write(
        &dir,
        "muxcast.toml",
        "[[server]]\nwindow = 1\n[[server.stream]]\nname = \"cam1\"\ninput = \"push\"\nformats = [\"hsl\"]\n",
    );
    let out = run(&["--check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let file = path.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{file}:2: server 1: window: must be between 3 and 1000 segments\n\
             {file}:6: stream \"cam1\": unknown format \"hsl\" (expected mkv, hls, dash)\n"
        )
    );
    assert!(out.stdout.is_empty());
    // --config refuses the same file the same way, before listening on anything.
    let out = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(&format!("{file}:2: server 1")));
    // A file that is not there.
    let missing = dir.join("nope.toml");
    let out = run(&["--check-config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}: cannot read it: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}

#[test]
fn config_takes_no_other_option_or_input() {
    let path = example_path();
    let path = path.to_str().unwrap();
    for args in [
        vec!["--config", path, "--loop"],
        vec!["x.mkv", "--config", path],
        vec!["--check-config", path, "--listen", "127.0.0.1:1"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the file holds every setting; give no other option or input with it"),
            "{err}"
        );
    }
    let out = run(&["--config", path, "--check-config", path]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "muxcast: --check-config: --config was given already\n"
    );
}

/// A live-MKV viewer's first bytes, checked frame by frame against the source file.
fn watch(addr: SocketAddr, stream: &str, source: &str) {
    let mut v = get(addr, &format!("/{stream}/live.mkv"));
    let (status, head, first) = read_head(&mut v);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: video/x-matroska"), "{head}");
    let body = read_body(&mut v, first, |b| b.len() > 60_000);
    let (_, got) = oracle(&body);
    let (_, src) = oracle_file(source);
    assert_eq!(got[0].keyframe, Some(true), "a viewer starts at a keyframe");
    let n = assert_contiguous_run(&src, &got, 2);
    assert!(n > 50, "{stream}: only {n} frames");
}

#[test]
fn two_servers_from_one_file_serve_and_stop_together_on_sigterm() {
    let dir = scratch("two-servers");
    let path = write(
        &dir,
        "muxcast.toml",
        &format!(
            "[defaults]\nloop = true\nprefill = 6\n\
             [[server]]\nlisten = \"127.0.0.1:0\"\nburst = 5\n\
             [[server.stream]]\nname = \"a\"\ninput = \"{}\"\n\
             [[server]]\nlisten = \"127.0.0.1:0\"\nburst = 5\n\
             [[server.stream]]\nname = \"b\"\ninput = \"{}\"\nformats = [\"mkv\"]\n",
            testdata("h264_aac.mkv").display(),
            testdata("vp9_opus.webm").display()
        ),
    );
    let mut m = Muxcast::start(&path);
    let addrs = m.listening(2);
    assert_ne!(addrs[0], addrs[1]);
    // Which server logged first is up to the threads: ask each for its stream.
    let has = |addr: SocketAddr, name: &str| {
        status_json(addr)["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name)
    };
    let (first, second) = if has(addrs[0], "a") {
        (addrs[0], addrs[1])
    } else {
        (addrs[1], addrs[0])
    };
    assert!(has(first, "a") && !has(first, "b"));
    assert!(has(second, "b") && !has(second, "a"));
    watch(first, "a", "h264_aac.mkv");
    watch(second, "b", "vp9_opus.webm");
    // Stream b is live MKV only: no HLS, no DASH; stream a has both.
    let (status, _, body) = request(
        second,
        b"GET /b/index.m3u8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = request(
            first,
            b"GET /a/manifest.mpd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no MPD for stream a");
        thread::sleep(Duration::from_millis(100));
    }
    // One SIGTERM stops both servers: exit 0, one line about the signal.
    m.terminate();
    let (code, log) = m.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log:#?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("signal 15: shutting down"))
            .count(),
        1,
        "{log:#?}"
    );
}

#[test]
fn the_process_exits_when_every_server_has_ended_with_1_if_a_stream_failed() {
    let dir = scratch("ending");
    // The whole file is published at once, so each stream ends at once.
    let config = |second: &str| {
        format!(
            "[defaults]\nprefill = 86400\n\
             [[server]]\nlisten = \"127.0.0.1:0\"\n{}\
             [[server]]\nlisten = \"127.0.0.1:0\"\n{}",
            stream_ok("a", &testdata("opus_only.webm").display().to_string()),
            stream_ok("b", &testdata(second).display().to_string()),
        )
    };
    let path = write(&dir, "ok.toml", &config("aac_only.mka"));
    let (code, log) = Muxcast::start(&path).wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{log:#?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("every stream has ended"))
            .count(),
        2,
        "{log:#?}"
    );
    let path = write(&dir, "failing.toml", &config("unsupported_codec.mkv"));
    let (code, log) = Muxcast::start(&path).wait(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{log:#?}");
}

#[test]
fn a_server_that_cannot_listen_stops_the_others_and_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = scratch("bind");
    let path = write(
        &dir,
        "muxcast.toml",
        &format!(
            "[[server]]\nlisten = \"127.0.0.1:0\"\n{}[[server]]\nlisten = \"127.0.0.1:{port}\"\n{}",
            stream_ok("a", "push"),
            stream_ok("b", "push"),
        ),
    );
    let (code, log) = Muxcast::start(&path).wait(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("muxcast: cannot listen on 127.0.0.1:{port}: "))),
        "{log:#?}"
    );
    drop(taken);
}

#[test]
fn on_demand_is_for_rtsp_inputs_by_key_or_by_url() {
    let config = parse(
        "[[server]]\n\
         [[server.stream]]\nname = \"a\"\ninput = \"rtsp://cam/x\"\non_demand = true\nidle_close = 30\n\
         [[server.stream]]\nname = \"b\"\ninput = \"rtsp://cam/y#on-demand\"\n\
         [[server.stream]]\nname = \"c\"\ninput = \"rtsp://cam/z\"\n",
    );
    let streams = &config.servers[0].streams;
    let on = |i: usize| {
        matches!(
            streams[i].input,
            Input::Rtsp {
                on_demand: true,
                ..
            }
        )
    };
    assert!(on(0) && on(1) && !on(2));
    assert_eq!(
        streams[0].reader_options().idle_close,
        Duration::from_secs(30)
    );
    assert_eq!(
        streams[1].reader_options().idle_close,
        Duration::from_secs(10)
    );
}

// --- log_format ----------------------------------------------------------------------------

#[test]
fn log_format_is_a_top_level_key_the_example_shows_at_its_default() {
    let c = config::load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.log_format, config::LogFormat::Text);
    let c = parse(&format!(
        "log_format = \"json\"\n[[server]]\n{}",
        stream_ok("a", "push")
    ));
    assert_eq!(c.log_format, config::LogFormat::Json);
    assert_eq!(
        error(&format!(
            "log_format = \"JSON\"\n[[server]]\n{}",
            stream_ok("a", "push")
        )),
        "muxcast.toml:1: log_format: unknown log format \"JSON\" (expected text, json)"
    );
    assert_eq!(
        error(&format!(
            "[defaults]\nlog_format = \"json\"\n[[server]]\n{}",
            stream_ok("a", "push")
        )),
        "muxcast.toml:2: [defaults]: key \"log_format\" is per process: put it at the top of the file, before any table"
    );
}

#[test]
fn a_file_with_log_format_json_logs_json_lines() {
    let dir = scratch("log-json");
    let path = write(
        &dir,
        "muxcast.toml",
        &format!(
            "log_format = \"json\"\n[[server]]\nlisten = \"127.0.0.1:0\"\n{}",
            stream_ok("a", "push")
        ),
    );
    let mut m = Muxcast::start(&path);
    let addr = m.listening(1)[0];
    assert_eq!(status_json(addr)["streams"][0]["name"], "a");
    m.terminate();
    let (code, log) = m.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{log:#?}");
    assert!(log.len() >= 2, "{log:#?}");
    for line in &log {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["ts", "level", "target", "msg"] {
            assert!(v[key].is_string(), "{key}: {line}");
        }
    }
    assert!(
        log.iter()
            .any(|l| l.contains("\"msg\":\"signal 15: shutting down\"")),
        "{log:#?}"
    );
}
