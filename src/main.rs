//! `muxcast [OPTIONS] [NAME=]INPUT...` or `muxcast --config FILE`: a [`Config`], then
//! its servers, each in its own thread, all stopped by SIGINT/SIGTERM.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;

use log::{error, info, warn};
use muxcast::app::{self, ReloadPlan};
use muxcast::config::{
    self, Config, Formats, LogFormat, Seconds, ServerConfig, StreamConfig, StreamSettings,
};
use muxcast::ingest::source::Input;
use muxcast::server::access::Network;
use muxcast::server::http::valid_stream_name;
use muxcast::server::{ControlHandle, Server, ShutdownHandle};

const HELP: &str = "\
muxcast: a live media server. Matroska/WebM in; live MKV/WebM out over HTTP.

USAGE:
    muxcast [OPTIONS] [NAME=]INPUT...
    muxcast --config FILE         several servers and streams from a TOML file
    muxcast --check-config FILE   validate FILE, print a summary, serve nothing

INPUT (an unnamed input is the stream `live`):
    FILE               a Matroska/WebM file, played at real time
    -                  Matroska on stdin, not paced
    http://HOST/PATH   pulled over HTTP; reconnects when it ends
    rtsp://[USER:PASS@]HOST[:PORT]/PATH[?transport=tcp|udp]
                       an RTSP camera (H.264/H.265, AAC/G.711/L16); TCP unless
                       ?transport=udp; reconnects with backoff when it ends;
                       with #on-demand at the end, connected only while watched
    push               fed by PUT/POST of Matroska to /NAME/ingest

OUTPUT:
    GET /NAME/live.mkv    live Matroska (alias /NAME/mkv)
    GET /NAME/live.webm   live WebM, when every track is a WebM codec
    GET /NAME/index.m3u8  HLS (fMP4/CMAF); /NAME/hls redirects to it
    GET /NAME/manifest.mpd  DASH; /NAME/dash redirects to it
    GET /status.json      streams, tracks, clients
    GET /metrics          Prometheus metrics
    GET /                 a page with every stream and a player each

OPTIONS:
    --config FILE           run the servers and streams of a TOML file (see
                            muxcast.example.toml); takes no other option or input
    --check-config FILE     validate FILE: exit 0 with a summary, or 2 with
                            FILE:LINE: errors
    --listen ADDR:PORT      listen address [default: 0.0.0.0:8080]
    --loop                  repeat file inputs forever
    --prefill SECONDS       start files this far in the past [default: 2]
    --rtsp-timeout SECS     reconnect an RTSP camera that sends no media for this
                            long; also the limit for each RTSP request [default: 10]
    --idle-close SECS       an on-demand camera (rtsp://...#on-demand) is connected
                            while someone watches, and disconnected this long after
                            the last viewer [default: 10]
    --burst SECONDS         history a new viewer gets at once [default: 0]
    --audio-cluster SECONDS cluster length for audio-only streams [default: 2]
    --client-queue BYTES    how far (beyond --burst) a viewer may fall behind
                            before it skips whole GOPs [default: 4194304]
    --client-timeout SECS   close a viewer that takes nothing for this long [default: 30]
    --header-timeout SECS   close a connection whose request is not complete
                            in this time, or idles this long between requests [default: 10]
    --max-clients N         connections beyond this get 503 [default: 1024]
    --max-clients-per-ip N  connections from one address beyond this get 503
                            [default: 256]
    --allow NET             only clients in these networks may connect, others
                            get 403 (repeat, or a comma list: 192.168.1.0/24,::1)
                            [default: everyone]
    --segment-duration SECS HLS/DASH segment length; cut at the first keyframe
                            after it [default: 2]
    --part-duration SECS    LL-HLS part (CMAF chunk) length [default: 0.2]
    --window N              HLS/DASH segments kept per rendition [default: 10]
    --no-ll-hls             plain HLS: no LL-HLS tags, no blocking requests (for
                            caches that cannot hold requests)
    --no-hls                serve live MKV and no HLS/DASH
    --keep-running          keep serving after every input has ended
    --log-format FORMAT     text, or json: one JSON object per line with ts, level,
                            target, msg [default: text]
    -h, --help              print this help
    -V, --version           print the version

Logging (stderr): RUST_LOG=debug|info|warn|error [default: info]
";

/// What the command line asks for.
enum Mode {
    /// Help or version was printed.
    Done,
    /// The quick mode: one server, its streams from the inputs.
    Serve(Config),
    /// `--config FILE`.
    Run(PathBuf),
    /// `--check-config FILE`.
    Check(PathBuf),
}

/// The value of an option that takes a number of seconds, checked as the file's keys are.
fn seconds(parser: &mut lexopt::Parser, name: &str, range: Seconds) -> Result<f64, String> {
    let value: f64 = number(parser, name)?;
    range.check(value).map_err(|e| format!("{name}: {e}"))
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

fn parse_cli() -> Result<Mode, String> {
    use lexopt::prelude::*;
    let mut server = ServerConfig::default();
    let mut settings = StreamSettings::default();
    let mut log_format = LogFormat::default();
    let mut inputs: Vec<(String, String)> = Vec::new();
    let mut file: Option<(&'static str, PathBuf)> = None;
    let mut other_arguments = false;
    let mut parser = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(err)? {
        if !matches!(arg, Long("config") | Long("check-config")) {
            other_arguments = true;
        }
        match arg {
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(Mode::Done);
            }
            Short('V') | Long("version") => {
                println!("muxcast {}", env!("CARGO_PKG_VERSION"));
                return Ok(Mode::Done);
            }
            Long(option @ ("config" | "check-config")) => {
                if let Some((previous, _)) = &file {
                    return Err(format!("--{option}: --{previous} was given already"));
                }
                let option = if option == "config" {
                    "config"
                } else {
                    "check-config"
                };
                file = Some((option, parser.value().map_err(err)?.into()));
            }
            Long("listen") => {
                let v: String = parser.value().map_err(err)?.string().map_err(err)?;
                server.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not ADDR:PORT (e.g. 0.0.0.0:8080)"))?;
            }
            Long("loop") => settings.looped = true,
            Long("keep-running") => server.keep_running = true,
            Long("prefill") => {
                settings.prefill = seconds(&mut parser, "--prefill", config::PREFILL)?
            }
            Long("rtsp-timeout") => {
                settings.rtsp_timeout =
                    seconds(&mut parser, "--rtsp-timeout", config::RTSP_TIMEOUT)?
            }
            Long("idle-close") => {
                settings.idle_close = seconds(&mut parser, "--idle-close", config::IDLE_CLOSE)?
            }
            Long("burst") => server.burst = seconds(&mut parser, "--burst", config::BURST)?,
            Long("audio-cluster") => {
                settings.audio_cluster =
                    seconds(&mut parser, "--audio-cluster", config::AUDIO_CLUSTER)?
            }
            Long("client-timeout") => {
                server.client_timeout =
                    seconds(&mut parser, "--client-timeout", config::CLIENT_TIMEOUT)?
            }
            Long("header-timeout") => {
                server.header_timeout =
                    seconds(&mut parser, "--header-timeout", config::HEADER_TIMEOUT)?
            }
            Long("client-queue") => server.client_queue = number(&mut parser, "--client-queue")?,
            Long("max-clients") => server.max_clients = number(&mut parser, "--max-clients")?,
            Long("max-clients-per-ip") => {
                server.max_clients_per_ip =
                    config::check_max_clients_per_ip(number(&mut parser, "--max-clients-per-ip")?)
                        .map_err(|e| format!("--max-clients-per-ip: {e}"))?
            }
            Long("allow") => {
                let list: String = parser.value().map_err(err)?.string().map_err(err)?;
                for net in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    server
                        .allow
                        .push(Network::parse(net).map_err(|e| format!("--allow: {e}"))?);
                }
            }
            Long("segment-duration") => {
                settings.segment_duration =
                    seconds(&mut parser, "--segment-duration", config::SEGMENT_DURATION)?
            }
            Long("part-duration") => {
                settings.part_duration =
                    seconds(&mut parser, "--part-duration", config::PART_DURATION)?
            }
            Long("window") => {
                server.window = config::check_window(number(&mut parser, "--window")?)
                    .map_err(|e| format!("--window: {e}"))?
            }
            Long("no-hls") => settings.formats = Formats::MKV_ONLY,
            Long("no-ll-hls") => server.ll_hls = false,
            Long("log-format") => {
                let v: String = parser.value().map_err(err)?.string().map_err(err)?;
                log_format = LogFormat::parse(&v).map_err(|e| format!("--log-format: {e}"))?;
            }
            Value(v) => {
                let v = v.string().map_err(err)?;
                let (name, spec) = match v.split_once('=') {
                    Some((n, s)) if valid_stream_name(n) => (n.to_string(), s.to_string()),
                    _ => ("live".to_string(), v),
                };
                if inputs.iter().any(|(n, _)| *n == name) {
                    return Err(format!(
                        "two inputs for the stream {name:?}: name them, e.g. cam2=INPUT"
                    ));
                }
                inputs.push((name, spec));
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if let Some((option, path)) = file {
        if other_arguments {
            return Err(format!(
                "--{option}: the file holds every setting; give no other option or input with it"
            ));
        }
        return Ok(if option == "config" {
            Mode::Run(path)
        } else {
            Mode::Check(path)
        });
    }
    if inputs.is_empty() {
        return Err(
            "no input given (try: muxcast testdata/h264_aac.mkv --loop; see --help)".into(),
        );
    }
    for (name, spec) in inputs {
        let input =
            Input::parse(&spec, settings.looped).map_err(|e| format!("stream {name}: {e}"))?;
        server.streams.push(StreamConfig {
            name,
            input,
            settings: settings.clone(),
            line: 0,
            input_line: 0,
            access: Default::default(),
        });
    }
    Ok(Mode::Serve(Config {
        servers: vec![server],
        log_format,
    }))
}

/// Logs to stderr, filtered by RUST_LOG (default: info), as `format` says.
fn init_logging(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => builder.format_timestamp(None),
        LogFormat::Json => builder.format(|buf, record| {
            use std::io::Write;
            let line = json_log_line(
                unix_ms(),
                record.level().as_str(),
                record.target(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        }),
    };
    builder.init();
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One log record as a JSON object on one line, `ts` first (serde_json escapes any
/// newline or quote in the strings).
fn json_log_line(ts_ms: i64, level: &str, target: &str, msg: &str) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(
        "{{\"ts\":\"{}\",\"level\":{},\"target\":{},\"msg\":{}}}",
        muxcast::stream::hls::rfc3339_ms(ts_ms),
        text(level),
        text(target),
        text(msg)
    )
}

fn main() -> ExitCode {
    let mode = parse_cli();
    // The file's log format is known once it is read; its errors are printed, not logged.
    let log_format = match &mode {
        Ok(Mode::Serve(config)) => config.log_format,
        _ => LogFormat::default(),
    };
    if !matches!(mode, Ok(Mode::Run(_))) {
        init_logging(log_format);
    }
    match mode {
        Ok(Mode::Done) => ExitCode::SUCCESS,
        Ok(Mode::Check(path)) => match config::load(&path) {
            Ok(config) => {
                print!("{}: OK, {}", path.display(), config.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Ok(Mode::Run(path)) => match config::load(&path) {
            Ok(config) => {
                init_logging(config.log_format);
                serve(config, Some(path))
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Ok(Mode::Serve(config)) => serve(config, None),
        Err(e) => {
            eprintln!("muxcast: {e}");
            ExitCode::from(2)
        }
    }
}

/// What a server thread tells the main thread.
enum Report {
    /// Listening, streams started: how to stop it and hand it work; or why it could not
    /// start.
    Ready(Result<(ShutdownHandle, ControlHandle), String>),
    /// `Server::run` returned.
    Done(io::Result<bool>),
}

/// The servers that are running, and whether they were all told to stop.
#[derive(Default)]
struct Running {
    handles: Vec<ShutdownHandle>,
    stopping: bool,
    /// Each server as configured now (by its configured `listen`), and, once it is
    /// ready, how to reach its loop: what a reload compares the file with.
    servers: Vec<(ServerConfig, Option<ControlHandle>)>,
}

impl Running {
    fn stop_all(&mut self) {
        self.stopping = true;
        for h in &self.handles {
            h.shutdown();
        }
    }

    /// SIGHUP: reads the file again; a file with errors is refused (the running
    /// configuration stays). Streams added start, removed ones stop, changed ones restart
    /// (all of a server's in one piece of work for its loop, so it never sees a moment
    /// without streams); unchanged ones are not touched. Servers added or removed, and
    /// changed server keys, need a restart: said, not done.
    fn reload(&mut self, path: &Path) {
        if self.stopping {
            return;
        }
        let new = match config::load(path) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    "reload: {} has errors; the running configuration stays:",
                    path.display()
                );
                for line in e.to_string().lines() {
                    error!("reload: {line}");
                }
                return;
            }
        };
        let (mut added, mut removed, mut restarted, mut unchanged) = (0, 0, 0, 0);
        for (old, control) in &mut self.servers {
            let Some(next) = new.servers.iter().find(|s| s.listen == old.listen) else {
                warn!(
                    "reload: server {} is not in the file any more: it runs until muxcast restarts",
                    old.listen
                );
                continue;
            };
            let Some(control) = control else {
                continue;
            };
            let plan = ReloadPlan::new(old, next);
            if !plan.needs_restart.is_empty() {
                warn!(
                    "reload: server {}: changed {} take effect at the next restart",
                    old.listen,
                    plan.needs_restart.join(", ")
                );
            }
            let listen = old.listen;
            for name in &plan.stdin_kept {
                warn!(
                    "reload: stream {name} reads standard input, which cannot be opened again: \
                     it keeps running as it was; its changes take effect at the next restart"
                );
            }
            // What runs after this reload: the file's streams, except those kept as they
            // were (compared with the file again at the next reload).
            let running: Vec<StreamConfig> = next
                .streams
                .iter()
                .map(|n| match old.streams.iter().find(|o| o.name == n.name) {
                    Some(o) if plan.stdin_kept.contains(&n.name) => o.clone(),
                    _ => n.clone(),
                })
                .collect();
            added += plan.added.len();
            removed += plan.removed.len();
            restarted += plan.changed.len();
            unchanged += plan.unchanged.len() + plan.stdin_kept.len();
            let work = move |server: &mut Server| {
                for name in plan
                    .removed
                    .iter()
                    .chain(plan.changed.iter().map(|s| &s.name))
                {
                    server.remove_stream(name);
                }
                for stream in plan.changed.iter().chain(&plan.added) {
                    match app::start_stream(server, stream) {
                        Ok(_) => info!(
                            "stream {}: started ({})",
                            stream.name,
                            stream.input.describe()
                        ),
                        Err(e) => {
                            error!("server {listen}: stream {}: cannot start: {e}", stream.name)
                        }
                    }
                }
            };
            if control.run(Box::new(work)) {
                old.streams = running;
            }
        }
        for s in &new.servers {
            if !self.servers.iter().any(|(o, _)| o.listen == s.listen) {
                warn!(
                    "reload: server {} is new: it starts when muxcast restarts",
                    s.listen
                );
            }
        }
        info!(
            "reload: {}: {added} stream(s) added, {removed} removed, {restarted} restarted, {unchanged} unchanged",
            path.display()
        );
    }
}

/// Runs every server of `config` in its own thread until all have ended. SIGINT/SIGTERM
/// stop them all (each finishes the frame it is writing to each viewer); a server that
/// cannot start or whose loop fails stops the others. Exit 0 when every server ended
/// cleanly, 1 otherwise (a bind failure, a failed stream, a failed loop).
fn serve(config: Config, path: Option<PathBuf>) -> ExitCode {
    // Installed before any server starts, so no signal finds the default action.
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("muxcast: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = Arc::new(Mutex::new(Running::default()));
    let on_signal = running.clone();
    let spawned = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let Ok(mut r) = on_signal.lock() else {
                    continue;
                };
                if sig == signal_hook::consts::SIGHUP {
                    match &path {
                        Some(path) => {
                            info!("signal {sig}: reloading {}", path.display());
                            r.reload(path);
                        }
                        None => warn!("signal {sig}: nothing to reload (started without --config)"),
                    }
                } else {
                    info!("signal {sig}: shutting down");
                    r.stop_all();
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("muxcast: cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    let (tx, rx) = channel();
    let mut threads = Vec::new();
    let mut ok = true;
    for (i, server) in config.servers.into_iter().enumerate() {
        let tx = tx.clone();
        let listen = server.listen;
        if let Ok(mut r) = running.lock() {
            r.servers.push((server.clone(), None));
        }
        match thread::Builder::new()
            .name(format!("server-{}", i + 1))
            .spawn(move || run_server(server, tx))
        {
            Ok(t) => threads.push((listen, t)),
            Err(e) => {
                error!("server {listen}: cannot start its thread: {e}");
                ok = false;
                break;
            }
        }
    }
    drop(tx);
    if !ok && let Ok(mut r) = running.lock() {
        r.stop_all();
    }
    // Ends when every server thread has gone (each drops its sender).
    for (listen, report) in rx {
        let Ok(mut r) = running.lock() else {
            break;
        };
        match report {
            Report::Ready(Ok((handle, control))) => {
                if r.stopping {
                    handle.shutdown();
                }
                r.handles.push(handle);
                if let Some((_, slot)) = r.servers.iter_mut().find(|(c, _)| c.listen == listen) {
                    *slot = Some(control);
                }
            }
            Report::Ready(Err(message)) => {
                eprintln!("muxcast: {message}");
                ok = false;
                r.stop_all();
            }
            Report::Done(Ok(clean)) => ok &= clean,
            Report::Done(Err(e)) => {
                error!("server {listen} failed: {e}");
                ok = false;
                r.stop_all();
            }
        }
    }
    for (listen, t) in threads {
        if t.join().is_err() {
            error!("server {listen}: its thread panicked");
            ok = false;
        }
    }
    // Reader threads are not joined (a blocked stdin read would hold the exit), but
    // cameras are told goodbye: otherwise they stream to no one until their timeout.
    muxcast::ingest::rtsp::hang_up_all();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One server's thread: bind, start its streams, report, run.
fn run_server(config: ServerConfig, tx: Sender<(std::net::SocketAddr, Report)>) {
    let listen = config.listen;
    let report = |r: Report| {
        let _ = tx.send((listen, r));
    };
    let mut server = match Server::bind(config.server_options(false)) {
        Ok(s) => s,
        Err(e) => {
            return report(Report::Ready(Err(format!(
                "cannot listen on {listen}: {e}"
            ))));
        }
    };
    for stream in &config.streams {
        if let Err(e) = app::start_stream(&mut server, stream) {
            let name = &stream.name;
            return report(Report::Ready(Err(format!(
                "stream {name}: cannot start its reader thread: {e}"
            ))));
        }
    }
    info!(
        "listening on http://{}/ ({} stream(s))",
        server.local_addr(),
        config.streams.len()
    );
    report(Report::Ready(Ok((
        server.shutdown_handle(),
        server.control_handle(),
    ))));
    report(Report::Done(server.run()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_log_lines() {
        let line = json_log_line(1_795_795_912_345, "WARN", "muxcast::server", "a \"b\"\nc");
        assert_eq!(
            line,
            r#"{"ts":"2026-11-27T16:11:52.345Z","level":"WARN","target":"muxcast::server","msg":"a \"b\"\nc"}"#
        );
    }
}
