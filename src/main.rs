//! `muxcast [OPTIONS] [NAME=]INPUT...`: the command line, then the server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use log::error;
use muxcast::app::spawn_stream;
use muxcast::ingest::mkv::DemuxLimits;
use muxcast::ingest::source::{Input, ReaderOptions};
use muxcast::server::http::valid_stream_name;
use muxcast::server::{HlsOptions, Server, ServerOptions};
use muxcast::stream::PublishOptions;
use muxcast::stream::cmaf::SegmenterOptions;
use muxcast::stream::live::WindowOptions;

const HELP: &str = "\
muxcast: a live media server. Matroska/WebM in; live MKV/WebM out over HTTP.

USAGE:
    muxcast [OPTIONS] [NAME=]INPUT...

INPUT (an unnamed input is the stream `live`):
    FILE               a Matroska/WebM file, played at real time
    -                  Matroska on stdin, not paced
    http://HOST/PATH   pulled over HTTP; reconnects when it ends
    rtsp://[USER:PASS@]HOST[:PORT]/PATH[?transport=tcp|udp]
                       an RTSP camera (H.264/H.265, AAC/G.711/L16); TCP unless
                       ?transport=udp; reconnects with backoff when it ends
    push               fed by PUT/POST of Matroska to /NAME/ingest

OUTPUT:
    GET /NAME/live.mkv    live Matroska (alias /NAME/mkv)
    GET /NAME/live.webm   live WebM, when every track is a WebM codec
    GET /NAME/index.m3u8  HLS (fMP4/CMAF); /NAME/hls redirects to it
    GET /status.json      streams, tracks, clients

OPTIONS:
    --listen ADDR:PORT      listen address [default: 0.0.0.0:8080]
    --loop                  repeat file inputs forever
    --prefill SECONDS       start files this far in the past [default: 2]
    --rtsp-timeout SECS     reconnect an RTSP camera that sends no media for this
                            long; also the limit for each RTSP request [default: 10]
    --burst SECONDS         history a new viewer gets at once [default: 0]
    --audio-cluster SECONDS cluster length for audio-only streams [default: 2]
    --client-queue BYTES    how far (beyond --burst) a viewer may fall behind
                            before it skips whole GOPs [default: 4194304]
    --client-timeout SECS   close a viewer that takes nothing for this long [default: 30]
    --header-timeout SECS   close a connection whose request is not complete
                            in this time, or idles this long between requests [default: 10]
    --max-clients N         connections beyond this get 503 [default: 1024]
    --segment-duration SECS HLS/DASH segment length; cut at the first keyframe
                            after it [default: 2]
    --part-duration SECS    LL-HLS part (CMAF chunk) length [default: 0.2]
    --window N              HLS/DASH segments kept per rendition [default: 10]
    --no-ll-hls             plain HLS: no LL-HLS tags, no blocking requests (for
                            caches that cannot hold requests)
    --no-hls                serve live MKV and no HLS/DASH
    --keep-running          keep serving after every input has ended
    -h, --help              print this help
    -V, --version           print the version

Logging: RUST_LOG=debug|info|warn|error [default: info]
";

struct Cli {
    listen: SocketAddr,
    looped: bool,
    prefill: f64,
    rtsp_timeout: f64,
    burst: f64,
    audio_cluster: f64,
    client_queue: usize,
    client_timeout: f64,
    header_timeout: f64,
    max_clients: usize,
    keep_running: bool,
    segment_duration: f64,
    part_duration: f64,
    window: usize,
    hls: bool,
    ll_hls: bool,
    inputs: Vec<(String, String)>,
}

/// The value of an option that takes a number of seconds.
fn seconds(parser: &mut lexopt::Parser, name: &str) -> Result<f64, String> {
    let value: f64 = number(parser, name)?;
    if value.is_finite() && (0.0..=86_400.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{name}: {value} is not a number of seconds between 0 and 86400"
        ))
    }
}

/// The value of an option that takes a number.
fn number<T: std::str::FromStr>(parser: &mut lexopt::Parser, name: &str) -> Result<T, String> {
    use lexopt::ValueExt;
    let text = parser
        .value()
        .map_err(|e| e.to_string())?
        .string()
        .map_err(|e| e.to_string())?;
    text.parse()
        .map_err(|_| format!("{name}: {text:?} is not a valid number"))
}

fn parse_cli() -> Result<Option<Cli>, String> {
    use lexopt::prelude::*;
    let mut cli = Cli {
        listen: "0.0.0.0:8080".parse().map_err(|e| format!("{e}"))?,
        looped: false,
        prefill: 2.0,
        rtsp_timeout: 10.0,
        burst: 0.0,
        audio_cluster: 2.0,
        client_queue: 4 * 1024 * 1024,
        client_timeout: 30.0,
        header_timeout: 10.0,
        max_clients: 1024,
        keep_running: false,
        segment_duration: 2.0,
        part_duration: 0.2,
        window: 10,
        hls: true,
        ll_hls: true,
        inputs: Vec::new(),
    };
    let mut parser = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("muxcast {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Long("listen") => {
                let v: String = parser.value().map_err(err)?.string().map_err(err)?;
                cli.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not ADDR:PORT (e.g. 0.0.0.0:8080)"))?;
            }
            Long("loop") => cli.looped = true,
            Long("keep-running") => cli.keep_running = true,
            Long("prefill") => cli.prefill = seconds(&mut parser, "--prefill")?,
            Long("rtsp-timeout") => {
                cli.rtsp_timeout = seconds(&mut parser, "--rtsp-timeout")?;
                if !(1.0..=3600.0).contains(&cli.rtsp_timeout) {
                    return Err("--rtsp-timeout: must be between 1 and 3600 seconds".into());
                }
            }
            Long("burst") => cli.burst = seconds(&mut parser, "--burst")?,
            Long("audio-cluster") => {
                cli.audio_cluster = seconds(&mut parser, "--audio-cluster")?;
                if !(0.1..=30.0).contains(&cli.audio_cluster) {
                    return Err("--audio-cluster: must be between 0.1 and 30 seconds".into());
                }
            }
            Long("client-timeout") => {
                cli.client_timeout = seconds(&mut parser, "--client-timeout")?
            }
            Long("header-timeout") => {
                cli.header_timeout = seconds(&mut parser, "--header-timeout")?
            }
            Long("client-queue") => cli.client_queue = number(&mut parser, "--client-queue")?,
            Long("max-clients") => cli.max_clients = number(&mut parser, "--max-clients")?,
            Long("segment-duration") => {
                cli.segment_duration = seconds(&mut parser, "--segment-duration")?;
                if !(0.5..=30.0).contains(&cli.segment_duration) {
                    return Err("--segment-duration: must be between 0.5 and 30 seconds".into());
                }
            }
            Long("part-duration") => {
                cli.part_duration = seconds(&mut parser, "--part-duration")?;
                if !(0.05..=2.0).contains(&cli.part_duration) {
                    return Err("--part-duration: must be between 0.05 and 2 seconds".into());
                }
            }
            Long("window") => {
                cli.window = number(&mut parser, "--window")?;
                if !(3..=1000).contains(&cli.window) {
                    return Err("--window: must be between 3 and 1000 segments".into());
                }
            }
            Long("no-hls") => cli.hls = false,
            Long("no-ll-hls") => cli.ll_hls = false,
            Value(v) => {
                let v = v.string().map_err(err)?;
                let (name, spec) = match v.split_once('=') {
                    Some((n, s)) if valid_stream_name(n) => (n.to_string(), s.to_string()),
                    _ => ("live".to_string(), v),
                };
                if cli.inputs.iter().any(|(n, _)| *n == name) {
                    return Err(format!(
                        "two inputs for the stream {name:?}: name them, e.g. cam2=INPUT"
                    ));
                }
                cli.inputs.push((name, spec));
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if cli.inputs.is_empty() {
        return Err(
            "no input given (try: muxcast testdata/h264_aac.mkv --loop; see --help)".into(),
        );
    }
    Ok(Some(cli))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .init();
    let cli = match parse_cli() {
        Ok(Some(cli)) => cli,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("muxcast: {e}");
            return ExitCode::from(2);
        }
    };
    let options = ServerOptions {
        listen: cli.listen,
        max_clients: cli.max_clients,
        client_timeout: Duration::from_secs_f64(cli.client_timeout),
        header_timeout: Duration::from_secs_f64(cli.header_timeout),
        keep_running: cli.keep_running,
        window: WindowOptions {
            burst_ns: (cli.burst * 1e9) as i64,
            client_queue_bytes: cli.client_queue,
        },
        handle_signals: true,
        hls: HlsOptions {
            window: cli.window,
            target_duration_s: cli.segment_duration.ceil() as u32,
            target_known: false,
            part_target_s: cli.part_duration,
            low_latency: cli.ll_hls,
        },
    };
    let mut server = match Server::bind(options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("muxcast: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    let reader_options = ReaderOptions {
        prefill: Duration::from_secs_f64(cli.prefill),
        limits: DemuxLimits::default(),
        rtsp_timeout: Duration::from_secs_f64(cli.rtsp_timeout),
    };
    let publish_options = PublishOptions {
        audio_cluster_ms: (cli.audio_cluster * 1000.0) as u64,
        cmaf: cli.hls.then_some(SegmenterOptions {
            segment_ns: (cli.segment_duration * 1e9) as i64,
            part_ns: (cli.part_duration * 1e9) as i64,
        }),
    };
    for (name, spec) in &cli.inputs {
        let input = match Input::parse(spec, cli.looped) {
            Ok(input) => input,
            Err(e) => {
                eprintln!("muxcast: stream {name}: {e}");
                return ExitCode::from(2);
            }
        };
        let started = spawn_stream(
            &mut server,
            name,
            input,
            reader_options.clone(),
            publish_options.clone(),
        );
        if let Err(e) = started {
            error!("stream {name}: cannot start its reader thread: {e}");
            return ExitCode::FAILURE;
        }
    }
    log::info!(
        "listening on http://{}/ ({} stream(s))",
        server.local_addr(),
        cli.inputs.len()
    );
    match server.run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
